//! Configuration: a TOML file with the library's options, then the environment, then flags.
//!
//! `polymongo config check` reports every problem it can find with the line it is on.

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

/// Reads the options: the file if any, then the overrides.
pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Options, String> {
    let mut options = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
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
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
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
