//! Configuration: a TOML file with the library's options, then the environment, then flags.
//!
//! `polymongo config check` reports every problem it can find with the line it is on.
//!
//! The file is untrusted input: it must be a regular file or a FIFO (what a shell's process
//! substitution gives, `-c <(vault read …)`: a way to pass secrets without writing them to
//! disk; like `cat`, reading one waits for its writer), of at most [`MAX_CONFIG_BYTES`], in
//! UTF-8. A directory, a device (which may never end) or a socket is refused with a sentence
//! saying which, before any parsing.

use std::io::Read;
use std::path::Path;

use polymongo::{Error, Options};

/// Where a setting came from, lowest precedence first: the file, then `MONGODB_URI` /
/// `POLYMONGO_*` variables, then flags.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub uri: Option<String>,
    pub default_db: Option<String>,
    pub max_pool_size: Option<u32>,
}

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// 1-based line, when the problem can be placed.
    pub line: Option<usize>,
    pub message: String,
}

/// Largest configuration file read: far above any real one (a section for each of tens of
/// thousands of databases), and small enough that a wrong path (a disk image, a log) is
/// refused at once instead of being read whole into memory.
pub const MAX_CONFIG_BYTES: u64 = 16 * 1024 * 1024;

/// Whether `meta` is a FIFO's: process substitution, read to its end within the bound.
#[cfg(unix)]
fn is_fifo(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    meta.file_type().is_fifo()
}

#[cfg(not(unix))]
fn is_fifo(_meta: &std::fs::Metadata) -> bool {
    false
}

/// The text of the configuration file at `path`, or why it cannot be used.
fn read(path: &Path) -> Result<String, String> {
    let shown = path.display();
    let cannot = |e: std::io::Error| format!("cannot read {shown}: {e}");
    // `metadata` does not open the file: opening a device or socket is never tried.
    let meta = std::fs::metadata(path).map_err(cannot)?;
    if meta.is_dir() {
        return Err(format!(
            "{shown} is a directory; give the path of a TOML configuration file"
        ));
    }
    if !meta.is_file() && !is_fifo(&meta) {
        return Err(format!(
            "{shown} is not a regular file (a socket or device); give the path of a TOML \
             configuration file"
        ));
    }
    let too_big = |len: u64| {
        format!("{shown} is {len} bytes; a configuration file is at most {MAX_CONFIG_BYTES} bytes")
    };
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(too_big(meta.len()));
    }
    let mut bytes = Vec::new();
    // Bounded again while reading: the file may have grown since `metadata`.
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes))
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(too_big(bytes.len() as u64));
    }
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..at].iter().filter(|b| **b == b'\n').count() + 1;
        format!(
            "{shown}:{line}: not UTF-8 text (byte {at} is not valid UTF-8); TOML files are UTF-8"
        )
    })
}

/// Reads the options: the file if any, then the overrides.
pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Options, String> {
    let mut options = match file {
        Some(path) => {
            let text = read(path)?;
            match toml::from_str::<Options>(&text) {
                Ok(o) => o,
                Err(e) => {
                    let line = e.span().map(|s| line_of(&text, s.start));
                    return Err(format!(
                        "{}{}: {}",
                        path.display(),
                        line.map(|l| format!(":{l}")).unwrap_or_default(),
                        // The offending value may be a URI with its password: not quoted.
                        polymongo::redact_config_error(e.message())
                    ));
                }
            }
        }
        None => Options::default(),
    };
    if let Some(uri) = &overrides.uri {
        options.uri.clone_from(uri);
    }
    if let Some(db) = &overrides.default_db {
        options.default_db = Some(db.clone());
    }
    if let Some(n) = overrides.max_pool_size {
        options.max_pool_size = Some(n);
    }
    if options.uri.is_empty() {
        return Err(
            "no cluster given: set `uri` in the configuration file, MONGODB_URI, or --uri".into(),
        );
    }
    Ok(options)
}

/// Every problem of the file at `path`: a syntax or type error (with its line), then each
/// invalid option and each invalid database section.
pub fn check(path: &Path) -> Result<Vec<Problem>, String> {
    let text = read(path)?;
    let options = match toml::from_str::<Options>(&text) {
        Ok(o) => o,
        Err(e) => {
            return Ok(vec![Problem {
                line: e.span().map(|s| line_of(&text, s.start)),
                // The offending value may be a URI with its password: not quoted.
                message: polymongo::redact_config_error(e.message()),
            }]);
        }
    };
    let mut problems = Vec::new();
    // Each database section on its own, so one bad section does not hide the next.
    for (name, config) in &options.databases {
        if let Err(e) = config.validate(name) {
            let field = match &e {
                Error::DbConfig { field, .. } => Some(*field),
                _ => None,
            };
            problems.push(Problem {
                line: field.and_then(|f| key_line(&text, &[&format!("databases.{name}")], f)),
                message: e.to_string(),
            });
        }
    }
    let without_databases = Options {
        databases: Default::default(),
        ..options.clone()
    };
    if let Err(e) = without_databases.validate() {
        let line = match &e {
            Error::Config { field, .. } => field_line(&text, field),
            _ => None,
        };
        problems.push(Problem {
            line,
            message: e.to_string(),
        });
    }
    problems.sort_by_key(|p| p.line);
    Ok(problems)
}

/// 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The line of option `field` (`max_pool_size`, `retry.attempts`).
fn field_line(text: &str, field: &str) -> Option<usize> {
    match field.rsplit_once('.') {
        Some((table, key)) => key_line(text, &[table], key),
        None => key_line(text, &[], field),
    }
}

/// The line of `key` in the first of `tables` (dotted names, `[]` for the top level) that has
/// it, also matching `table.key = …` written inline at the top level.
fn key_line(text: &str, tables: &[&str], key: &str) -> Option<usize> {
    let mut current = String::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = header.trim().replace(['"', ' '], "");
            continue;
        }
        let Some((lhs, _)) = line.split_once('=') else {
            continue;
        };
        let lhs = lhs.trim().replace(['"', ' '], "");
        let here = if tables.is_empty() {
            current.is_empty() && lhs == key
        } else {
            tables.iter().any(|t| {
                (current == *t && lhs == key) || (current.is_empty() && lhs == format!("{t}.{key}"))
            })
        };
        if here {
            return Some(i + 1);
        }
    }
    // The key is missing (a required setting): point at the section instead.
    tables.iter().find_map(|t| {
        text.lines()
            .position(|l| l.trim().replace(['"', ' '], "") == format!("[{t}]"))
            .map(|i| i + 1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_type_error_does_not_quote_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("poly.toml");
        std::fs::write(
            &path,
            "uri = \"mongodb://h\"\nmax_pool_size = \"mongodb://ops:S3cr3tPw@h\"\n",
        )
        .unwrap();
        let problems = check(&path).unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].line, Some(2));
        assert!(!problems[0].message.contains("S3cr3tPw"), "{problems:?}");
        let err = load(Some(&path), &Overrides::default()).unwrap_err();
        assert!(!err.contains("S3cr3tPw"), "{err}");
        assert!(err.contains(":2"), "{err}");
    }

    /// Pieces of TOML, right and broken, multi-byte characters and a URI with a password:
    /// whatever order they come in, `check` and `load` answer without a panic, every line
    /// they name is in the file, and the password is never shown.
    fn fragments() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let piece = prop_oneof![
            Just("uri = ".to_owned()),
            Just("\"mongodb://ops:S3cr3tPw@h\"".to_owned()),
            Just("'mongodb://ops:S3cr3tPw@h:bad'".to_owned()),
            Just("[databases.".to_owned()),
            Just("[databases.\"mongodb://ops:S3cr3tPw@h\"]".to_owned()),
            Just("[clusters.\"mongodb://ops:S3cr3tPw@h\"]".to_owned()),
            Just("[retry]".to_owned()),
            Just("[directory]".to_owned()),
            Just("cluster = ".to_owned()),
            Just("max_pool_size".to_owned()),
            Just("max_connections = ".to_owned()),
            Just("ttl = \"18446744073709551615s\"".to_owned()),
            Just("attempts".to_owned()),
            Just(" = ".to_owned()),
            Just("0".to_owned()),
            Just("-1".to_owned()),
            Just("9223372036854775808".to_owned()),
            Just("nan".to_owned()),
            Just("]".to_owned()),
            Just("\n".to_owned()),
            Just("\r\n".to_owned()),
            Just("\"".to_owned()),
            Just("'''".to_owned()),
            Just("é".to_owned()),
            Just("😀".to_owned()),
            Just("\u{0}".to_owned()),
            Just("\u{7f}".to_owned()),
            any::<char>().prop_map(String::from),
        ];
        proptest::collection::vec(piece, 0..40).prop_map(|p| p.concat())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 256, ..proptest::prelude::ProptestConfig::default()
        })]

        #[test]
        fn generated_files_are_checked_without_a_panic_or_a_secret(text in fragments()) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("poly.toml");
            std::fs::write(&path, &text).unwrap();
            let lines = text.split('\n').count();
            match check(&path) {
                Ok(problems) => {
                    for p in problems {
                        proptest::prop_assert!(!p.message.contains("S3cr3tPw"), "{p:?}\n{text}");
                        proptest::prop_assert!(
                            p.line.is_none_or(|l| (1..=lines).contains(&l)),
                            "{p:?}"
                        );
                    }
                }
                Err(message) => proptest::prop_assert!(!message.contains("S3cr3tPw"), "{message}"),
            }
            if let Err(message) = load(Some(&path), &Overrides::default()) {
                proptest::prop_assert!(!message.contains("S3cr3tPw"), "{message}\n{text}");
            }
        }
    }

    #[test]
    fn keys_are_found_in_their_tables() {
        let text = "uri = \"mongodb://h\"\nmax_pool_size = 0\n\n[retry]\nattempts = 0\n\n[databases.\"shop\"]\nmax_connections = 0\n";
        assert_eq!(field_line(text, "max_pool_size"), Some(2));
        assert_eq!(field_line(text, "retry.attempts"), Some(5));
        assert_eq!(
            key_line(text, &["databases.shop"], "max_connections"),
            Some(8)
        );
        assert_eq!(key_line(text, &["databases.shop"], "ttl"), Some(7));
        assert_eq!(line_of(text, 0), 1);
    }
}
