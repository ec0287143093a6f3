//! A proptest-driven fuzz harness for the dump reader and the import path, and the
//! regression corpus of issue 15 (`tests/corpus/*.dump`).
//!
//! Why proptest and not cargo-fuzz: it runs in the CI's own `cargo test` on stable Rust with
//! no extra toolchain (cargo-fuzz needs nightly and libFuzzer), for a bounded number of cases
//! (so a bounded time), against a real server through the test kit, and it shrinks a
//! failure to a small dump and saves its seed. The generator is structure-aware — records of
//! every kind, evil collection options, forged end counts, junk lines — and then mutates
//! bytes, which is where a coverage-guided fuzzer would spend most of its time anyway.
//!
//! Properties, for every input and every mode (stop/continue, insert/upsert, batch sizes):
//! no panic, no hang; the report's figures add up; what the report says was written is what
//! a raw client finds (unless a batch's outcome was reported unknown); no collection is
//! created under a name the dump did not give, nor in another database; the report keeps at
//! most `max_failures` failures.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use mongodb::bson::{doc, Document};
use mongodb::Client;
use polymongo::bulk::{Dump, ImportOptions, ImportReport, OnError, WriteMode};
use polymongo::{Error, PolyMongo};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const HEADER: &str = r#"{"polymongo_dump":{"version":1,"database":"d","created":"2026-11-25T00:00:00Z","producer":"fuzz"}}"#;

const NAMES: [&str; 6] = ["c", "d", "other", "system.x", "a$b", ""];

const OPTIONS: [&str; 10] = [
    "{}",
    r#"{"capped":true,"size":4096}"#,
    r#"{"validator":{"v":{"$exists":true}}}"#,
    r#"{"create":"other"}"#,
    r#"{"$db":"admin"}"#,
    r#"{"writeConcern":{"w":0}}"#,
    r#"{"capped":"yes"}"#,
    r#"{"viewOn":"c","pipeline":[]}"#,
    r#"{"collation":{"locale":"en"}}"#,
    r#"[1,2]"#,
];

fn record() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (0..40i32, proptest::option::of("[a-z\\\\\"\u{0}]{0,6}")).prop_map(|(id, extra)| match extra {
            Some(k) => format!(
                r#"{{"document":{{"_id":{{"$numberInt":"{id}"}},{}:1}}}}"#,
                serde_json::to_string(&k).unwrap()
            ),
            None => format!(r#"{{"document":{{"_id":{{"$numberInt":"{id}"}},"v":"x"}}}}"#),
        }),
        2 => (
            proptest::sample::select(NAMES.to_vec()),
            proptest::sample::select(vec!["collection", "view", "timeseries", "weird"]),
            proptest::sample::select(OPTIONS.to_vec()),
        )
            .prop_map(|(name, kind, options)| format!(
                r#"{{"collection":{{"name":"{name}","type":"{kind}","options":{options},"indexes":[]}}}}"#
            )),
        1 => proptest::sample::select(vec![
            String::new(),
            "{".into(),
            r#"{"document":{"_id":"#.into(),
            r#"{"comment":1}"#.into(),
            r#"{"document":1,"collection":2}"#.into(),
            HEADER.into(),
            r#"{"end":{"collections":1,"documents":1}}"#.into(),
        ]),
        1 => "[ -~]{0,30}",
    ]
}

fn end_counts() -> impl Strategy<Value = Option<(u64, u64)>> {
    proptest::option::weighted(
        0.9,
        prop_oneof![
            Just((u64::MAX, u64::MAX)),
            (0..6u64, 0..40u64),
            (any::<u64>(), any::<u64>()),
        ],
    )
}

/// A dump: header, generated records, an end record whose counts are honest or forged,
/// then a few byte mutations.
fn dump() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<bool>(),
        proptest::collection::vec(record(), 0..24),
        end_counts(),
        any::<bool>(),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
    )
        .prop_map(|(header, records, counts, honest, mutations)| {
            let mut lines = Vec::new();
            if header {
                lines.push(HEADER.to_owned());
            }
            let collections = records
                .iter()
                .filter(|r| r.starts_with(r#"{"collection""#))
                .count() as u64;
            let documents = records
                .iter()
                .filter(|r| r.starts_with(r#"{"document""#))
                .count() as u64;
            lines.extend(records);
            match counts {
                Some(_) if honest => lines.push(format!(
                    r#"{{"end":{{"collections":{collections},"documents":{documents}}}}}"#
                )),
                Some((c, d)) => lines.push(format!(
                    r#"{{"end":{{"collections":{c},"documents":{d}}}}}"#
                )),
                None => {}
            }
            let mut bytes = (lines.join("\n") + "\n").into_bytes();
            for (at, byte) in mutations {
                if !bytes.is_empty() {
                    let i = at.index(bytes.len());
                    bytes[i] = byte;
                }
            }
            bytes
        })
}

fn import_options() -> impl Strategy<Value = ImportOptions> {
    (any::<bool>(), any::<bool>(), 1..5usize).prop_map(|(cont, upsert, batch)| {
        ImportOptions::default()
            .on_error(if cont {
                OnError::Continue
            } else {
                OnError::Stop
            })
            .mode(if upsert {
                WriteMode::Upsert
            } else {
                WriteMode::Insert
            })
            .batch_size(batch)
            .drop_target_first(true)
            .max_failures(8)
    })
}

/// Documents in the plain collections of `db`, by name (views left out).
async fn stored(client: &Client, db: &str) -> Vec<(String, u64)> {
    let db = client.database(db);
    let mut out = Vec::new();
    for spec in db
        .list_collection_names()
        .filter(doc! { "type": "collection" })
        .await
        .unwrap()
    {
        let n = db
            .collection::<Document>(&spec)
            .count_documents(doc! {})
            .await
            .unwrap();
        out.push((spec, n));
    }
    out
}

/// Collection names a dump gives, read loosely (what a mutated line may still name).
fn named(bytes: &[u8]) -> BTreeSet<String> {
    String::from_utf8_lossy(bytes)
        .split("\"name\":\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .map(str::to_owned)
        .collect()
}

async fn check_import(poly: &PolyMongo, client: &Client, bytes: &[u8], options: ImportOptions) {
    let upsert = options.mode == WriteMode::Upsert;
    // A dump without a header never reaches `drop_target_first`: start from nothing here.
    client.database("fuzz").drop().await.unwrap();
    let before_admin = stored(client, "admin").await;
    let result = tokio::time::timeout(
        Duration::from_secs(60),
        poly.bulk().import_stream("fuzz", bytes, options),
    )
    .await
    .expect("an import hung");
    let report: ImportReport = match result {
        Ok(report) => report,
        Err(Error::Import(report)) => *report,
        Err(Error::Dump { .. }) => return,
        Err(other) => panic!("unexpected error {other:?}"),
    };
    assert!(report.failures.len() <= 8, "{report:?}");
    let per_collection: u64 = report.collections.iter().map(|c| c.documents).sum();
    assert_eq!(per_collection, report.documents, "{report:?}");
    let unknown = report.failures.iter().any(|f| f.lines.is_some());
    let found = stored(client, "fuzz").await;
    let names = named(bytes);
    for (name, _) in &found {
        assert!(
            names.contains(name),
            "collection {name:?} not named by the dump: {report:?}"
        );
    }
    if !unknown {
        let total: u64 = found.iter().map(|(_, n)| n).sum();
        if upsert {
            // Two documents with one `_id`: both written, the second replacing the first.
            assert!(
                total <= report.documents,
                "raw client disagrees: {found:?} {report:?}"
            );
        } else {
            assert_eq!(
                total, report.documents,
                "raw client disagrees: {found:?} {report:?}"
            );
        }
    }
    assert_eq!(stored(client, "admin").await, before_admin, "admin changed");
}

#[test]
fn the_dump_reader_never_panics() {
    let mut runner = TestRunner::new(Config {
        cases: 4000,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&dump(), |bytes| {
            let _ = Dump::read_from(&bytes[..]);
            Ok(())
        })
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_import_path_keeps_its_promises_on_fuzzed_dumps() {
    let server = common::server().await;
    let client = common::raw(&server).await;
    let poly = common::manager(&server, 4).await;
    let handle = tokio::runtime::Handle::current();
    let cases = std::env::var("POLYMONGO_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(256);
    let (poly, client) = (&poly, &client);
    tokio::task::block_in_place(|| {
        let mut runner = TestRunner::new(Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&(dump(), import_options()), |(bytes, options)| {
                handle.block_on(check_import(poly, client, &bytes, options));
                Ok(())
            })
            .unwrap();
    });
    poly.close_all(Duration::from_secs(5)).await;
}

/// Every file of the regression corpus, through the reader and the import in every mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_regression_corpus_imports_safely_in_every_mode() {
    let server = common::server().await;
    let client = common::raw(&server).await;
    let poly = common::manager(&server, 4).await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 10, "{files:?}");
    for path in files {
        let bytes = std::fs::read(&path).unwrap();
        let _ = Dump::read_from(&bytes[..]);
        for cont in [false, true] {
            for upsert in [false, true] {
                for batch in [1, 1000] {
                    let options = ImportOptions::default()
                        .on_error(if cont {
                            OnError::Continue
                        } else {
                            OnError::Stop
                        })
                        .mode(if upsert {
                            WriteMode::Upsert
                        } else {
                            WriteMode::Insert
                        })
                        .batch_size(batch)
                        .drop_target_first(true)
                        .max_failures(8);
                    check_import(&poly, &client, &bytes, options).await;
                }
            }
        }
    }
    poly.close_all(Duration::from_secs(5)).await;
}
