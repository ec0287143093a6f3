//! Declarative migrations read from a folder of files (`Migrations::from_dir`, `parse_file`):
//! the example folder, every refused folder and file naming the file and the field, the
//! checksum shared with migrations built in code, and property tests (arbitrary input never
//! panics and is refused as a file error; generated migrations round-trip).

use std::fs;
use std::path::Path;

use mongodb::bson::oid::ObjectId;
use mongodb::bson::{doc, Bson, DateTime, Document};
use polymongo::migrate::{parse_file, Migration, MigrationError, Migrations, Step};
use polymongo::Error;
use proptest::prelude::*;
use tempfile::TempDir;

const DROP: &str = r#"{"up": [{"drop": "a"}]}"#;

/// A folder holding `files` (name, content).
fn folder(files: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, text) in files {
        fs::write(dir.path().join(name), text).expect("write");
    }
    dir
}

/// The migration error `from_dir` gives for `dir`.
fn load_error(dir: &Path) -> MigrationError {
    match Migrations::from_dir(dir) {
        Err(Error::Migration(e)) => *e,
        Err(other) => panic!("expected a migration error, got {other:?}"),
        Ok(m) => panic!(
            "expected an error, loaded {:?}",
            m.versions().collect::<Vec<_>>()
        ),
    }
}

/// The field and the problem of the file error `from_dir` gives, which must name `file` in
/// `dir`.
fn file_error(dir: &Path, file: &str) -> (String, String) {
    match load_error(dir) {
        MigrationError::File {
            file: named,
            field,
            problem,
        } => {
            assert_eq!(
                named,
                dir.join(file).display().to_string(),
                "{field}: {problem}"
            );
            (field, problem)
        }
        other => panic!("expected a file error naming {file}, got {other:?}"),
    }
}

#[test]
fn the_example_folder_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/migrations");
    let migrations = Migrations::from_dir(&dir).expect("the example folder is valid");
    assert_eq!(migrations.versions().collect::<Vec<_>>(), [1, 2, 3]);
    let index = Migration::new(
        1,
        "users-email-index",
        vec![Step::command(doc! {
            "createIndexes": "users",
            "indexes": [{ "key": { "email": 1 }, "name": "email_1", "unique": true }],
        })],
    );
    let built = Migrations::new(vec![index]).expect("valid");
    assert_eq!(migrations.checksum(1), built.checksum(1));
    for entry in fs::read_dir(&dir).expect("example folder") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = fs::read_to_string(&path).expect("read");
            let m = parse_file(&path.display().to_string(), &text).expect("valid file");
            assert!(
                !m.down_steps().is_empty(),
                "{}: has down steps",
                path.display()
            );
        }
    }
}

#[test]
fn a_good_folder_loads_in_version_order_and_skips_notes() {
    let dir = folder(&[
        ("0002_second.json", r#"{"up": [{"drop": "b"}]}"#),
        ("1_first.json", DROP),
        (
            "0003_third.json",
            r#"{"up": [{"drop": "c"}], "down": [{"create": "c"}]}"#,
        ),
        ("README", "notes"),
        ("README.txt", "notes"),
        ("notes.md", "notes"),
        (".gitkeep", ""),
        (".0004_draft.json", "not even json"),
    ]);
    fs::create_dir(dir.path().join(".git")).expect("mkdir");
    let loaded = Migrations::from_dir(dir.path()).expect("loads");
    assert_eq!(loaded.versions().collect::<Vec<_>>(), [1, 2, 3]);
    let built = Migrations::new(vec![
        Migration::new(1, "first", vec![Step::command(doc! { "drop": "a" })]),
        Migration::new(2, "second", vec![Step::command(doc! { "drop": "b" })]),
        Migration::new(3, "third", vec![Step::command(doc! { "drop": "c" })])
            .down(vec![Step::command(doc! { "create": "c" })]),
    ])
    .expect("valid");
    for v in 1..=3 {
        assert_eq!(loaded.checksum(v), built.checksum(v), "version {v}");
    }
}

#[test]
fn an_empty_folder_gives_an_empty_set() {
    let dir = folder(&[("README.md", "# none yet")]);
    let loaded = Migrations::from_dir(dir.path()).expect("loads");
    assert_eq!(loaded.latest(), 0);
}

#[test]
fn a_missing_folder_is_named_with_the_io_error() {
    let dir = folder(&[]);
    let missing = dir.path().join("nope");
    match load_error(&missing) {
        MigrationError::File { file, problem, .. } => {
            assert_eq!(file, missing.display().to_string());
            assert!(problem.contains("cannot read"), "{problem}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_bad_file_name_is_named() {
    for name in [
        "abc.json",
        "0_x.json",
        "1_.json",
        "1_a b.json",
        "99999999999999999999999_x.json",
    ] {
        let dir = folder(&[("1_ok.json", DROP), (name, DROP)]);
        let (field, problem) = file_error(dir.path(), name);
        assert_eq!(field, "", "{name}: {problem}");
    }
}

#[test]
fn a_stray_file_is_not_skipped() {
    let dir = folder(&[("0001_a.json", DROP), ("0002_b.jsn", DROP)]);
    let (_, problem) = file_error(dir.path(), "0002_b.jsn");
    assert!(problem.contains("<version>_<name>.json"), "{problem}");
}

#[test]
fn a_subfolder_is_refused() {
    let dir = folder(&[("0001_a.json", DROP)]);
    fs::create_dir(dir.path().join("old")).expect("mkdir");
    let (_, problem) = file_error(dir.path(), "old");
    assert!(problem.contains("folder"), "{problem}");
}

#[cfg(unix)]
#[test]
fn a_symlink_is_refused() {
    let dir = folder(&[("0001_a.json", DROP)]);
    std::os::unix::fs::symlink(
        dir.path().join("0001_a.json"),
        dir.path().join("0002_b.json"),
    )
    .expect("symlink");
    let (_, problem) = file_error(dir.path(), "0002_b.json");
    assert!(problem.contains("symbolic link"), "{problem}");
}

#[test]
fn an_oversize_file_is_refused() {
    let padding = " ".repeat(1024 * 1024);
    let dir = folder(&[("0001_a.json", format!("{DROP}{padding}").as_str())]);
    let (_, problem) = file_error(dir.path(), "0001_a.json");
    assert!(problem.contains("1 MiB"), "{problem}");
    let just_fits = format!("{DROP}{}", " ".repeat(1024 * 1024 - DROP.len()));
    let dir = folder(&[("0001_a.json", just_fits.as_str())]);
    assert!(Migrations::from_dir(dir.path()).is_ok());
}

#[test]
fn a_file_that_is_not_utf8_is_refused() {
    let dir = folder(&[]);
    fs::write(dir.path().join("0001_a.json"), b"{\"up\": [\xff]}").expect("write");
    let (field, problem) = file_error(dir.path(), "0001_a.json");
    assert_eq!(field, "");
    assert!(problem.contains("UTF-8"), "{problem}");
}

#[test]
fn bad_content_names_the_file_and_the_field() {
    let cases = [
        ("{", ""),
        ("\"up\"", ""),
        (r#"{"down": []}"#, "up"),
        (r#"{"up": []}"#, "up"),
        (r#"{"up": "drop"}"#, "up"),
        (r#"{"up": [{"drop": "a"}, ["drop", "b"]]}"#, "up[1]"),
        (r#"{"up": [{"dropDatabase": 1}]}"#, "up[0]"),
        (
            r#"{"up": [{"update": "u", "updates": [{"q": {}, "u": [{"$out": "x"}]}]}]}"#,
            "up[0].updates[0].u[0].$out",
        ),
        (r#"{"up": [{"drop": "a", "$db": "admin"}]}"#, "up[0].$db"),
        (
            r#"{"up": [{"drop": "a"}], "down": [{"renameCollection": {"db": "x"}, "to": "b"}]}"#,
            "down[0].renameCollection",
        ),
        (
            r#"{"up": [{"drop": "a"}], "description": "x"}"#,
            "description",
        ),
    ];
    for (text, expected) in cases {
        let dir = folder(&[("0001_a.json", DROP), ("0002_b.json", text)]);
        let (field, problem) = file_error(dir.path(), "0002_b.json");
        assert_eq!(field, expected, "{text}: {problem}");
    }
}

#[test]
fn a_gap_in_the_versions_is_refused() {
    let dir = folder(&[("0001_a.json", DROP), ("0003_c.json", DROP)]);
    assert_eq!(
        load_error(dir.path()),
        MigrationError::VersionGap { after: 1, next: 3 }
    );
}

#[test]
fn a_version_given_twice_names_both_files() {
    let dir = folder(&[
        ("0002_a.json", DROP),
        ("2_b.json", DROP),
        ("1_c.json", DROP),
    ]);
    let (_, problem) = file_error(dir.path(), "2_b.json");
    let other = dir.path().join("0002_a.json").display().to_string();
    assert!(problem.contains(&other), "{problem}");
}

// --- Property tests ------------------------------------------------------------------------

/// File names: mostly well formed, some arbitrary.
fn file_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,22}_[A-Za-z0-9_.-]{0,102}\\.json",
        "[0-9a-z_. /-]{0,30}(\\.json)?",
        any::<String>(),
    ]
}

/// A valid file, cut or spliced at random: the fuzz corpus.
fn mutated_text() -> impl Strategy<Value = String> {
    let seeds = prop_oneof![
        Just(DROP.to_owned()),
        Just(
            r#"{"up": [{"update": "u", "updates": [{"q": {"n": {"$numberLong": "1"}}, "u": [{"$set": {"at": {"$date": {"$numberLong": "0"}}}}]}]}], "down": [{"drop": "x"}]}"#
                .to_owned()
        ),
        Just(
            r#"{"up": [{"insert": "u", "documents": [{"_id": {"$oid": "6566a1f0c3d8b9e1a4b2c3d4"}, "d": {"$numberDecimal": "1.10"}, "b": {"$binary": {"base64": "AA==", "subType": "00"}}, "r": {"$regularExpression": {"pattern": "a", "options": "i"}}, "t": {"$timestamp": {"t": 1, "i": 2}}}]}]}"#
                .to_owned()
        ),
    ];
    (
        seeds,
        proptest::collection::vec((any::<prop::sample::Index>(), 0..3u8, ".{0,4}"), 0..6),
    )
        .prop_map(|(seed, edits)| {
            let mut text: Vec<char> = seed.chars().collect();
            for (at, kind, insert) in edits {
                let i = at.index(text.len() + 1);
                match kind {
                    0 => text.truncate(i),
                    1 => {
                        let tail = text.split_off(i);
                        text.extend(insert.chars());
                        text.extend(tail);
                    }
                    _ => {
                        if i < text.len() {
                            text.remove(i);
                        }
                    }
                }
            }
            text.into_iter().collect()
        })
}

/// Any JSON: arbitrary nesting, `$` keys of Extended JSON, numbers out of every range.
fn json_text() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        ".{0,8}".prop_map(serde_json::Value::from),
    ];
    let key = prop_oneof![
        Just("up".to_owned()),
        Just("down".to_owned()),
        Just("drop".to_owned()),
        Just("renameCollection".to_owned()),
        Just("to".to_owned()),
        Just("$numberInt".to_owned()),
        Just("$numberLong".to_owned()),
        Just("$numberDouble".to_owned()),
        Just("$numberDecimal".to_owned()),
        Just("$date".to_owned()),
        Just("$oid".to_owned()),
        Just("$binary".to_owned()),
        Just("$timestamp".to_owned()),
        Just("$regularExpression".to_owned()),
        Just("$db".to_owned()),
        "[a-z$]{0,6}",
    ];
    leaf.prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            proptest::collection::vec((key.clone(), inner), 0..6)
                .prop_map(|pairs| serde_json::Value::Object(pairs.into_iter().collect())),
        ]
    })
    .prop_map(|v| v.to_string())
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        proptest::collection::vec(any::<u8>(), 0..200)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        mutated_text(),
        json_text(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Whatever the name and content, `parse_file` returns; an error is a file error naming
    /// the file as given.
    #[test]
    fn parse_file_never_panics_and_names_the_file(name in file_name(), text in any_text()) {
        if let Err(e) = parse_file(&name, &text) {
            match e {
                MigrationError::File { file, .. } => prop_assert_eq!(file, name),
                other => prop_assert!(false, "not a file error: {other:?}"),
            }
        }
    }
}

/// A collection name.
fn coll() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_]{0,12}"
}

/// A value for a document field, of the types a file can hold exactly.
fn value() -> impl Strategy<Value = Bson> {
    prop_oneof![
        any::<i32>().prop_map(Bson::Int32),
        any::<i64>().prop_map(Bson::Int64),
        any::<f64>().prop_map(Bson::Double),
        any::<bool>().prop_map(Bson::Boolean),
        ".{0,10}".prop_map(Bson::String),
        any::<i64>().prop_map(|ms| Bson::DateTime(DateTime::from_millis(ms))),
        any::<[u8; 12]>().prop_map(|b| Bson::ObjectId(ObjectId::from_bytes(b))),
        Just(Bson::Null),
    ]
}

fn field() -> impl Strategy<Value = String> {
    "[a-z][a-zA-Z0-9]{0,8}"
}

/// A command on the allow-list, within the tenant's database.
fn command() -> impl Strategy<Value = Document> {
    prop_oneof![
        (coll(), field(), prop_oneof![Just(1), Just(-1)], any::<bool>()).prop_map(
            |(c, f, dir, unique)| doc! {
                "createIndexes": c,
                "indexes": [{ "key": { f.clone(): dir }, "name": format!("{f}_{dir}"), "unique": unique }],
            }
        ),
        (coll(), field()).prop_map(|(c, f)| doc! { "dropIndexes": c, "index": format!("{f}_1") }),
        (coll(), field(), value(), value(), any::<bool>()).prop_map(|(c, f, q, v, pipeline)| {
            let u = if pipeline {
                Bson::Array(vec![Bson::Document(doc! { "$set": { f.clone(): v } })])
            } else {
                Bson::Document(doc! { "$set": { f.clone(): v } })
            };
            doc! { "update": c, "updates": [{ "q": { f: q }, "u": u, "multi": true }] }
        }),
        (coll(), field(), value()).prop_map(
            |(c, f, q)| doc! { "delete": c, "deletes": [{ "q": { f: q }, "limit": 0 }] }
        ),
        (coll(), proptest::collection::vec((field(), value()), 0..4)).prop_map(|(c, fields)| {
            let d: Document = fields.into_iter().collect();
            doc! { "insert": c, "documents": [d] }
        }),
        (coll(), field()).prop_map(
            |(c, f)| doc! { "collMod": c, "validator": { f: { "$exists": true } } }
        ),
        coll().prop_map(|c| doc! { "create": c }),
        coll().prop_map(|c| doc! { "drop": c }),
        (coll(), coll()).prop_map(|(a, b)| doc! { "renameCollection": a, "to": b }),
    ]
}

/// A migration's name, its up and its down commands, and how many zeros lead its version.
type Spec = (String, Vec<Document>, Vec<Document>, usize, bool);

fn spec() -> impl Strategy<Value = Spec> {
    (
        "[A-Za-z0-9_.-]{1,100}",
        proptest::collection::vec(command(), 1..4),
        proptest::collection::vec(command(), 0..3),
        0..4usize,
        any::<bool>(),
    )
}

fn canonical(commands: &[Document]) -> serde_json::Value {
    serde_json::Value::Array(
        commands
            .iter()
            .map(|c| Bson::Document(c.clone()).into_canonical_extjson())
            .collect(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Migrations written as files and loaded have the versions and checksums of the same
    /// migrations built in code.
    #[test]
    fn generated_migrations_round_trip(specs in proptest::collection::vec(spec(), 0..6)) {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut built = Vec::new();
        for (i, (name, up, down, zeros, pretty)) in specs.iter().enumerate() {
            let version = i as u64 + 1;
            let mut file = serde_json::Map::new();
            file.insert("up".into(), canonical(up));
            if !down.is_empty() {
                file.insert("down".into(), canonical(down));
            }
            let file = serde_json::Value::Object(file);
            let text = if *pretty {
                serde_json::to_string_pretty(&file).expect("json")
            } else {
                file.to_string()
            };
            let file_name = format!("{}{version}_{name}.json", "0".repeat(*zeros));
            fs::write(dir.path().join(file_name), text).expect("write");
            let steps = up.iter().cloned().map(Step::command).collect();
            let down = down.iter().cloned().map(Step::command).collect();
            built.push(Migration::new(version, name.clone(), steps).down(down));
        }
        fs::write(dir.path().join("README.md"), "notes").expect("write");
        let loaded = Migrations::from_dir(dir.path()).expect("generated folder loads");
        let built = Migrations::new(built).expect("generated migrations are valid");
        prop_assert_eq!(loaded.versions().collect::<Vec<_>>(), built.versions().collect::<Vec<_>>());
        for v in built.versions() {
            prop_assert_eq!(loaded.checksum(v), built.checksum(v));
        }
    }
}
