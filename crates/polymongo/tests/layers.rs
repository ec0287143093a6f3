//! The library's modules form layers with no import from a lower layer to a higher one, as
//! `docs/architecture.md` says: floor → pool → registry → handle → features → facade. This
//! test reads every source file and checks each `crate::…` path in its code (comments and doc
//! links aside) against the layer of the file it is in.

use std::path::{Path, PathBuf};

/// The layers, bottom first, by the top-level module (folder or file) that holds them.
const LAYERS: [(&str, &[&str]); 6] = [
    ("floor", &["floor"]),
    ("pool", &["pool"]),
    ("registry", &["registry"]),
    ("handle", &["handle"]),
    ("features", &["features"]),
    ("facade", &["poly", "builder", "lib"]),
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, mods)| mods.contains(&module))
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("source folder") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file: comments (and so doc links) removed, line by line.
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter_map(|(i, line)| {
        let code = line.split("//").next().unwrap_or("");
        (!code.trim().is_empty()).then_some((i + 1, code))
    })
}

#[test]
fn no_module_imports_a_higher_layer() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    assert!(files.len() > 20, "found the sources: {}", files.len());
    let mut upward = Vec::new();
    let mut checked = 0;
    for file in &files {
        let relative = file.strip_prefix(&root).expect("under src");
        let top = relative
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .expect("a top-level module")
            .trim_end_matches(".rs");
        let own = layer_of(top).unwrap_or_else(|| panic!("{top} belongs to no layer"));
        let text = std::fs::read_to_string(file).expect("readable source");
        for (line, code) in code_lines(&text) {
            for (at, _) in code.match_indices("crate::") {
                let module: String = code[at + "crate::".len()..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                // A path through the crate root's re-exports (`crate::Error`) is the facade's.
                let target = layer_of(&module).unwrap_or(LAYERS.len() - 1);
                checked += 1;
                if target > own {
                    upward.push(format!(
                        "{}:{line}: {} imports crate::{module} ({})",
                        relative.display(),
                        LAYERS[own].0,
                        LAYERS[target].0
                    ));
                }
            }
        }
    }
    assert!(checked > 100, "paths were checked: {checked}");
    assert!(
        upward.is_empty(),
        "imports from a lower layer to a higher one:\n{}",
        upward.join("\n")
    );
}
