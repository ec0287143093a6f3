//! Declarative migrations loaded from a folder of JSON files ([`Migrations::from_dir`]), one
//! file per migration. The user guide is `docs/migrations.md`.
//!
//! - **Name**: `<version>_<name>.json`. The version is decimal digits (leading zeros
//!   allowed: `0003_add-plan.json` is version 3), at least 1, at most `u64::MAX`. The name is
//!   the rest before `.json`: 1 to 100 characters from `A-Z a-z 0-9 _ . -`.
//! - **Content**: UTF-8, at most 1 MiB, one JSON object in MongoDB Extended JSON (relaxed or
//!   canonical) with `"up"`, a non-empty array of command documents, and optionally
//!   `"down"`, an array of command documents. No other field. Each command is checked
//!   against the allow-list ([`ALLOWED_COMMANDS`](super::ALLOWED_COMMANDS)) and the "own
//!   database only" rule, as [`Step::command`] is.
//! - **Folder**: files whose name starts with `.`, `README*` and `*.md` files are ignored.
//!   Any other file, a subfolder, a symbolic link, or two files with the same version is an
//!   error naming the file: a typo such as `0004_x.jsn` is not skipped silently.
//!
//! Every error is a [`MigrationError::File`] naming the file and the field at fault
//! (`up[2]`, `down[0].renameCollection`, `up[0].updates[0].u[0].$merge`), except a gap in the
//! versions, which [`Migrations::new`] reports as [`MigrationError::VersionGap`].
//!
//! A migration read from a file has the same checksum as the same migration built in code
//! with [`Migration::new`] and [`Step::command`]: `{"email": 1}` is an `Int32` either way,
//! and field order is kept. A team can move a migration between the two.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::Path;

use mongodb::bson::{Bson, Document};
use serde_json::Value;

use super::command;
use super::set::Migrations;
use super::step::{Migration, Step};
use crate::floor::error::Result;
use crate::floor::migration_error::MigrationError;

/// The largest migration file read, in bytes (1 MiB).
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// The longest migration name, in characters.
const MAX_NAME_CHARS: usize = 100;

impl Migrations {
    /// Reads every migration file in folder `dir`, checks them and orders them by version,
    /// as [`Migrations::new`] does for migrations built in code.
    ///
    /// One file per migration, named `<version>_<name>.json` (`0003_add-plan.json` is
    /// version 3, name `add-plan`), holding one Extended JSON object: `"up"`, a non-empty
    /// array of command documents, and optionally `"down"`, another (see [`parse_file`] and
    /// the guide, `docs/migrations.md`). Files whose name starts with `.`, `README*` and
    /// `*.md` files are ignored; an empty folder gives an empty set. Read once,
    /// synchronously: call it at startup.
    ///
    /// ```no_run
    /// # fn demo() -> polymongo::Result<()> {
    /// let migrations = polymongo::migrate::Migrations::from_dir("migrations")?;
    /// println!("latest version: {}", migrations.latest());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Migration`](crate::Error::Migration) with a [`MigrationError::File`] naming
    /// the file (and the field, when the fault is inside it): the folder missing or
    /// unreadable, a file name not of the form `<version>_<name>.json`, a subfolder, a
    /// symbolic link, a file over 1 MiB, not UTF-8 or not a valid migration, two files with
    /// the same version. [`MigrationError::VersionGap`] when the versions are not
    /// consecutive.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Migrations> {
        let dir = dir.as_ref();
        let shown_dir = dir.display().to_string();
        let folder_error = |problem: String| MigrationError::File {
            file: shown_dir.clone(),
            field: String::new(),
            problem,
        };
        let mut entries = Vec::new();
        let listing = fs::read_dir(dir)
            .map_err(|e| folder_error(format!("cannot read the migrations folder: {e}")))?;
        for entry in listing {
            let entry = entry
                .map_err(|e| folder_error(format!("cannot read the migrations folder: {e}")))?;
            let kind = entry.file_type().map_err(|e| {
                whole_file(
                    &entry.path().display().to_string(),
                    format!("cannot read: {e}"),
                )
            })?;
            entries.push((entry.file_name(), kind));
        }
        // Sorted, so that the first error reported does not depend on the folder's order.
        entries.sort_by(|a, b| a.0.cmp(&b.0));

        let mut by_version: BTreeMap<u64, (String, Migration)> = BTreeMap::new();
        for (os_name, kind) in entries {
            let path = dir.join(&os_name);
            let shown = path.display().to_string();
            let Some(name) = os_name.to_str() else {
                return Err(whole_file(&shown, "the file name is not UTF-8".into()).into());
            };
            if name.starts_with('.') {
                continue;
            }
            if kind.is_symlink() {
                return Err(whole_file(
                    &shown,
                    "is a symbolic link; migration files must be regular files".into(),
                )
                .into());
            }
            if kind.is_dir() {
                return Err(whole_file(
                    &shown,
                    "is a folder; the migrations folder holds only <version>_<name>.json \
                     files (and README*, *.md and dot files, which are ignored)"
                        .into(),
                )
                .into());
            }
            if !kind.is_file() {
                return Err(whole_file(&shown, "is not a regular file".into()).into());
            }
            if name.starts_with("README") || name.ends_with(".md") {
                continue;
            }
            let (version, migration_name) =
                parse_name(name).map_err(|problem| whole_file(&shown, problem))?;
            if let Some((other, _)) = by_version.get(&version) {
                return Err(whole_file(
                    &shown,
                    format!("version {version} is also defined by {other}"),
                )
                .into());
            }
            let text = read_limited(&path, &shown)?;
            let migration = parse_content(&shown, version, migration_name, &text)?;
            by_version.insert(version, (shown, migration));
        }
        Migrations::new(by_version.into_values().map(|(_, m)| m).collect())
    }
}

/// Parses one migration file: `file_name` is its name or a path ending in it, `text` its
/// content.
///
/// - The name is `<version>_<name>.json`: the version in decimal digits (leading zeros
///   allowed), at least 1; the name 1 to 100 characters from `A-Z a-z 0-9 _ . -`.
/// - The content is one JSON object in MongoDB Extended JSON (relaxed or canonical) with
///   `"up"`, a non-empty array of command documents, and optionally `"down"`, an array of
///   command documents; no other field. Each command is checked as [`Step::command`]'s
///   are: on the allow-list, within the tenant's database.
///
/// The migration has the same checksum as the same one built in code with
/// [`Migration::new`]. The versions of a set are checked by [`Migrations::new`] (or
/// [`Migrations::from_dir`]).
///
/// ```
/// use polymongo::migrate::parse_file;
///
/// let m = parse_file(
///     "0001_users-email-index.json",
///     r#"{"up": [{"createIndexes": "users", "indexes": [{"key": {"email": 1}, "name": "email_1"}]}],
///         "down": [{"dropIndexes": "users", "index": "email_1"}]}"#,
/// )?;
/// assert_eq!((m.version(), m.name()), (1, "users-email-index"));
/// assert_eq!(m.down_steps().len(), 1);
/// # Ok::<(), polymongo::migrate::MigrationError>(())
/// ```
///
/// # Errors
/// [`MigrationError::File`] naming `file_name` as given and the field at fault.
pub fn parse_file(file_name: &str, text: &str) -> Result<Migration, MigrationError> {
    let base = Path::new(file_name)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("");
    let (version, name) = parse_name(base).map_err(|problem| whole_file(file_name, problem))?;
    parse_content(file_name, version, name, text)
}

/// A file error about the file as a whole.
fn whole_file(file: &str, problem: String) -> MigrationError {
    MigrationError::File {
        file: file.to_owned(),
        field: String::new(),
        problem,
    }
}

/// The version and the name in `<version>_<name>.json`, or what is wrong with it.
fn parse_name(base: &str) -> Result<(u64, &str), String> {
    const FORM: &str = "a migration file is named <version>_<name>.json";
    let Some(stem) = base.strip_suffix(".json") else {
        return Err(format!(
            "not a migration file: {FORM} (README*, *.md and dot files are ignored)"
        ));
    };
    let Some((digits, name)) = stem.split_once('_') else {
        return Err(format!("no `_` after the version: {FORM}"));
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "the version {digits:?} is not decimal digits: {FORM}"
        ));
    }
    let version: u64 = digits
        .parse()
        .map_err(|_| format!("the version {digits} is larger than {}", u64::MAX))?;
    if version == 0 {
        return Err("version 0 is reserved for \"nothing applied\"; versions start at 1".into());
    }
    if name.is_empty() || name.len() > MAX_NAME_CHARS {
        return Err(format!(
            "the name after the version must be 1 to {MAX_NAME_CHARS} characters long"
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(format!(
            "the name {name:?} may only use the characters A-Z a-z 0-9 _ . -"
        ));
    }
    Ok((version, name))
}

/// Reads a regular file of at most [`MAX_FILE_BYTES`] as UTF-8.
fn read_limited(path: &Path, shown: &str) -> Result<String, MigrationError> {
    let io = |e: std::io::Error| whole_file(shown, format!("cannot read: {e}"));
    let too_big = || {
        whole_file(
            shown,
            format!("larger than {MAX_FILE_BYTES} bytes (1 MiB), the limit for a migration file"),
        )
    };
    let file = fs::File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(whole_file(shown, "is not a regular file".into()));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(too_big());
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_big());
    }
    String::from_utf8(bytes).map_err(|e| whole_file(shown, format!("not UTF-8 text: {e}")))
}

/// The migration in `text`, errors naming `file`.
fn parse_content(
    file: &str,
    version: u64,
    name: &str,
    text: &str,
) -> Result<Migration, MigrationError> {
    let error = |field: &str, problem: String| MigrationError::File {
        file: file.to_owned(),
        field: field.to_owned(),
        problem,
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let value: Value =
        serde_json::from_str(text).map_err(|e| error("", format!("not a JSON document: {e}")))?;
    let Value::Object(top) = value else {
        return Err(error(
            "",
            format!(
                "expected one JSON object with \"up\" (and \"down\"), found {}",
                json_kind(&value)
            ),
        ));
    };
    let (mut up, mut down) = (None, None);
    for (key, value) in top {
        match key.as_str() {
            "up" => up = Some(value),
            "down" => down = Some(value),
            _ => {
                return Err(error(
                    &key,
                    format!("unknown field {key:?}; a migration file has only \"up\" and \"down\""),
                ))
            }
        }
    }
    let Some(up) = up else {
        return Err(error(
            "up",
            "missing: a migration file needs \"up\", an array of command documents".into(),
        ));
    };
    let steps = commands(version, "up", up, &error)?;
    if steps.is_empty() {
        return Err(error(
            "up",
            "empty: a migration needs at least one command".into(),
        ));
    }
    let down = match down {
        Some(down) => commands(version, "down", down, &error)?,
        None => Vec::new(),
    };
    Ok(Migration::new(version, name, steps).down(down))
}

/// The commands of array `list` (`up` or `down`), each checked.
fn commands(
    version: u64,
    list: &str,
    value: Value,
    error: &impl Fn(&str, String) -> MigrationError,
) -> Result<Vec<Step>, MigrationError> {
    let Value::Array(items) = value else {
        return Err(error(
            list,
            format!(
                "expected an array of command documents, found {}",
                json_kind(&value)
            ),
        ));
    };
    let mut steps = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let at = format!("{list}[{i}]");
        let command = match Bson::try_from(item) {
            Ok(Bson::Document(command)) => command,
            Ok(other) => {
                return Err(error(
                    &at,
                    format!(
                        "expected a command document, found {:?}",
                        other.element_type()
                    ),
                ))
            }
            Err(e) => return Err(error(&at, format!("not valid Extended JSON: {e}"))),
        };
        if let Err(e) = command::check(version, &command) {
            let field = match &e {
                MigrationError::CrossDatabase { field, .. } => {
                    let path = path_to(&command, field).unwrap_or_else(|| field.clone());
                    format!("{at}.{path}")
                }
                _ => at,
            };
            return Err(error(&field, e.to_string()));
        }
        steps.push(Step::command(command));
    }
    Ok(steps)
}

/// Where in `command` the checker found `field` (a key, `key.db` for a namespace
/// document, the command's name or `to` for a collection name): a path such as
/// `updates[0].u[0].$merge`. Walks in the checker's order, so it finds the same field.
fn path_to(command: &Document, field: &str) -> Option<String> {
    let name = command.keys().next()?;
    if field == name || field == "to" {
        return Some(field.to_owned());
    }
    path_in_doc(command, field)
}

fn path_in_doc(doc: &Document, field: &str) -> Option<String> {
    for (key, value) in doc {
        if key == field {
            return Some(key.clone());
        }
        if field.strip_suffix(".db") == Some(key.as_str()) {
            if let Bson::Document(d) = value {
                if d.contains_key("db") {
                    return Some(field.to_owned());
                }
            }
        }
        if let Some(below) = path_in_value(value, field) {
            return Some(if below.starts_with('[') {
                format!("{key}{below}")
            } else {
                format!("{key}.{below}")
            });
        }
    }
    None
}

fn path_in_value(value: &Bson, field: &str) -> Option<String> {
    match value {
        Bson::Document(d) => path_in_doc(d, field),
        Bson::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
            path_in_value(item, field).map(|below| {
                if below.starts_with('[') {
                    format!("[{i}]{below}")
                } else {
                    format!("[{i}].{below}")
                }
            })
        }),
        _ => None,
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::doc;

    const INDEX: &str =
        r#"{"up": [{"createIndexes": "users", "indexes": [{"key": {"email": 1}, "name": "e"}]}]}"#;

    /// The field and the problem of a file error naming `file`.
    fn fault(file: &str, text: &str) -> (String, String) {
        match parse_file(file, text) {
            Err(MigrationError::File {
                file: named,
                field,
                problem,
            }) => {
                assert_eq!(named, file);
                (field, problem)
            }
            other => panic!("{file}: expected a file error, got {other:?}"),
        }
    }

    #[test]
    fn a_good_file_gives_version_name_and_steps() {
        let m = parse_file(
            "0003_add-plan.v2.json",
            r#"{"up": [{"drop": "a"}, {"drop": "b"}], "down": [{"create": "a"}]}"#,
        )
        .unwrap();
        assert_eq!((m.version(), m.name()), (3, "add-plan.v2"));
        assert_eq!(m.steps().len(), 2);
        assert_eq!(m.down_steps().len(), 1);
    }

    #[test]
    fn a_path_is_accepted_and_named_as_given() {
        let m = parse_file("migrations/0001_x.json", INDEX).unwrap();
        assert_eq!(m.version(), 1);
        let (field, _) = fault("migrations/0001_x.json", "[]");
        assert_eq!(field, "");
    }

    #[test]
    fn bad_file_names_are_refused_before_the_content() {
        for name in [
            "abc.json",
            "0_x.json",
            "000_x.json",
            "1_.json",
            "1_a b.json",
            "1_é.json",
            "99999999999999999999999_x.json",
            "_x.json",
            "1x.json",
            "0004_x.jsn",
            "1_x.JSON",
            "",
        ] {
            let (field, problem) = fault(name, INDEX);
            assert_eq!(field, "", "{name}: {problem}");
        }
        let long = format!("1_{}.json", "a".repeat(101));
        assert_eq!(fault(&long, INDEX).0, "");
        let longest = format!("1_{}.json", "a".repeat(100));
        assert!(parse_file(&longest, INDEX).is_ok());
        assert!(parse_file("18446744073709551615_max.json", INDEX).is_ok());
    }

    #[test]
    fn every_bad_content_names_its_field() {
        let cases = [
            ("not json", ""),
            ("[1]", ""),
            ("", ""),
            (r#"{"down": []}"#, "up"),
            (r#"{"up": []}"#, "up"),
            (r#"{"up": {"drop": "a"}}"#, "up"),
            (r#"{"up": [{"drop": "a"}, 3]}"#, "up[1]"),
            (r#"{"up": [{"$numberInt": "1"}]}"#, "up[0]"),
            (
                r#"{"up": [{"drop": "a", "x": {"$numberInt": "z"}}]}"#,
                "up[0]",
            ),
            (r#"{"up": [{"dropDatabase": 1}]}"#, "up[0]"),
            (r#"{"up": [{}]}"#, "up[0]"),
            (
                r#"{"up": [{"drop": "a"}], "down": [{"dropDatabase": 1}]}"#,
                "down[0]",
            ),
            (r#"{"up": [{"drop": "a"}], "down": "x"}"#, "down"),
            (r#"{"up": [{"drop": "a", "$db": "admin"}]}"#, "up[0].$db"),
            (
                r#"{"up": [{"drop": "a"}, {"update": "u", "updates": [{"q": {}, "u": [{"$set": {}}, {"$out": "x"}]}]}]}"#,
                "up[1].updates[0].u[1].$out",
            ),
            (
                r#"{"up": [{"create": "v", "viewOn": "u", "pipeline": [{"$lookup": {"from": {"db": "x", "coll": "y"}}}]}]}"#,
                "up[0].pipeline[0].$lookup.from.db",
            ),
            (
                r#"{"up": [{"drop": "a"}], "down": [{"renameCollection": 1, "to": "b"}]}"#,
                "down[0].renameCollection",
            ),
            (
                r#"{"up": [{"renameCollection": "a", "to": {"db": "x"}}]}"#,
                "up[0].to",
            ),
            (
                r#"{"up": [{"drop": "a"}], "description": "x"}"#,
                "description",
            ),
        ];
        for (text, expected) in cases {
            let (field, problem) = fault("0007_case.json", text);
            assert_eq!(field, expected, "{text}: {problem}");
        }
    }

    #[test]
    fn allow_list_errors_keep_the_checkers_words() {
        let (_, problem) = fault("0007_case.json", r#"{"up": [{"dropDatabase": 1}]}"#);
        assert!(problem.contains("dropDatabase"), "{problem}");
    }

    #[test]
    fn extended_json_gives_the_same_command_as_code() {
        let canonical = r#"{"up": [{"update": "u", "updates": [{"q": {"n": {"$numberInt": "1"}},
            "u": {"$set": {"at": {"$date": {"$numberLong": "0"}}, "big": {"$numberLong": "5"}}}}]}]}"#;
        let relaxed = r#"{"up": [{"update": "u", "updates": [{"q": {"n": 1},
            "u": {"$set": {"at": {"$date": "1970-01-01T00:00:00Z"}, "big": {"$numberLong": "5"}}}}]}]}"#;
        let code = doc! { "update": "u", "updates": [{ "q": { "n": 1 },
        "u": { "$set": { "at": mongodb::bson::DateTime::from_millis(0), "big": 5_i64 } } }] };
        for text in [canonical, relaxed] {
            let m = parse_file("1_x.json", text).unwrap();
            assert!(
                matches!(&m.steps()[0], Step::Command(c) if *c == code),
                "{text}"
            );
        }
    }

    #[test]
    fn a_file_has_the_checksum_of_the_same_migration_in_code() {
        let file = parse_file(
            "0001_users-email-index.json",
            r#"{"up": [{"createIndexes": "users",
                "indexes": [{"key": {"email": 1}, "name": "email_1", "unique": true}]}],
                "down": [{"dropIndexes": "users", "index": "email_1"}]}"#,
        )
        .unwrap();
        let code = Migration::new(
            1,
            "users-email-index",
            vec![Step::command(doc! {
                "createIndexes": "users",
                "indexes": [{ "key": { "email": 1 }, "name": "email_1", "unique": true }],
            })],
        );
        let from_file = Migrations::new(vec![file]).unwrap();
        let from_code = Migrations::new(vec![code]).unwrap();
        assert_eq!(from_file.checksum(1), from_code.checksum(1));
        assert!(from_file.checksum(1).is_some());
    }

    #[test]
    fn a_folder_loads_names_and_down_steps_in_version_order() {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in [
            ("0002_default-plan.json", r#"{"up": [{"drop": "b"}]}"#),
            (
                "0001_users-email-index.json",
                r#"{"up": [{"drop": "a"}], "down": [{"create": "a"}, {"drop": "z"}]}"#,
            ),
            ("README.md", "notes"),
        ] {
            fs::write(dir.path().join(name), text).unwrap();
        }
        let set = Migrations::from_dir(dir.path()).unwrap();
        let found: Vec<_> = set
            .list
            .iter()
            .map(|c| {
                let m = &c.migration;
                (m.version(), m.name().to_owned(), m.down_steps().len())
            })
            .collect();
        assert_eq!(
            found,
            [
                (1, "users-email-index".to_owned(), 2),
                (2, "default-plan".to_owned(), 0)
            ]
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(fault("1_x.json", &deep).0, "");
        let inner = format!("{}1{}", r#"{"a":"#.repeat(120), "}".repeat(120));
        let text = format!(r#"{{"up": [{{"drop": "a", "x": {inner}}}]}}"#);
        assert!(parse_file("1_x.json", &text).is_ok());
    }

    #[test]
    fn a_byte_order_mark_is_allowed() {
        assert!(parse_file("1_x.json", &format!("\u{feff}{INDEX}")).is_ok());
    }
}
