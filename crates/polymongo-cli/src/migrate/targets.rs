//! The databases a command covers, from names, a prefix or a file; and the files around a
//! gap in the versions of a migration folder.

use std::path::Path;

use polymongo::migrate::{MigrationError, Targets};
use polymongo::{Error, PolyMongo};

use super::TargetArgs;
use crate::commands::fail;
use crate::exit;
use crate::out::{self, Stop};

/// The target databases, checked and in run order (a prefix: sorted by name). An invalid
/// name or an unreadable file ends the command with exit 3, a cluster that cannot list its
/// databases with its own code (4 when unreachable).
pub async fn resolve(poly: &PolyMongo, args: &TargetArgs) -> Result<Vec<String>, Stop> {
    let targets = if let Some(prefix) = &args.prefix {
        Targets::prefix(prefix.clone())
    } else if let Some(file) = &args.databases_from {
        Targets::databases(read_file(file)?)
    } else {
        Targets::databases(args.databases.clone())
    };
    poly.fleet()
        .databases(&targets)
        .await
        .map_err(|e| Stop(fail(&e)))
}

/// The names in a `--databases-from` file: one per line, blank lines and `#` comments
/// (whole lines, or after a name and a space) ignored. Each is checked here, so an invalid
/// one is reported with its line.
fn read_file(path: &Path) -> Result<Vec<String>, Stop> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        out::note(format_args!(
            "polymongo: cannot read the list of databases {}: {e}",
            path.display()
        ));
        Stop(exit::CONFIG)
    })?;
    let mut names = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let name = strip_comment(line).trim();
        if name.is_empty() {
            continue;
        }
        if let Err(e) = polymongo::validate_database_name(name) {
            let (code, message) = exit::of(&e);
            out::note(format_args!(
                "polymongo: {}:{}: {message}",
                path.display(),
                i + 1
            ));
            return Err(Stop(code));
        }
        names.push(name.to_owned());
    }
    Ok(names)
}

/// `line` without its comment: from a `#` that starts the line (after blanks) or follows a
/// blank. A `#` inside a name is kept (MongoDB allows it; blanks it does not).
fn strip_comment(line: &str) -> &str {
    let trimmed = line.trim_start();
    if trimmed.starts_with('#') {
        return "";
    }
    let bytes = line.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'#' && i > 0 && bytes[i - 1].is_ascii_whitespace() {
            return &line[..i];
        }
    }
    line
}

/// For a gap in the versions of folder `dir`, the files on either side of it
/// (` (0001_a.json, then 0003_c.json)`); empty for any other error.
pub fn gap_files(dir: &Path, error: &Error) -> String {
    let Error::Migration(m) = error else {
        return String::new();
    };
    let MigrationError::VersionGap { after, next } = **m else {
        return String::new();
    };
    let Ok(listing) = std::fs::read_dir(dir) else {
        return String::new();
    };
    let mut before_gap = None;
    let mut after_gap = None;
    for entry in listing.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let version = name
            .strip_suffix(".json")
            .and_then(|stem| stem.split_once('_'))
            .and_then(|(digits, _)| digits.parse::<u64>().ok());
        if version == Some(after) {
            before_gap = Some(name);
        } else if version == Some(next) {
            after_gap = Some(name);
        }
    }
    match (before_gap, after_gap) {
        (Some(a), Some(b)) => format!(" ({a}, then {b} in {}: is a file missing?)", dir.display()),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::strip_comment;

    #[test]
    fn comments_are_stripped_and_hashes_inside_names_kept() {
        assert_eq!(strip_comment("# all of them"), "");
        assert_eq!(strip_comment("   # indented"), "");
        assert_eq!(strip_comment("tenant_1  # the first"), "tenant_1  ");
        assert_eq!(strip_comment("a#b"), "a#b");
        assert_eq!(strip_comment(""), "");
    }
}
