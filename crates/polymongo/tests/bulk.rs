//! Bulk tasks through a server: export/import round trips (byte-compared with a raw client),
//! gzip, bad input with stop and continue, interrupted imports, upserts, copy within and
//! across clusters, drop, and interoperability with pymongo's `bson.json_util`.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{doc, Binary, Bson, DateTime, Document, RawDocumentBuf};
use mongodb::Client;
use polymongo::bulk::{
    CopyPath, ExportOptions, ImportOptions, ImportReport, OnError, Stage, WriteMode,
};
use polymongo::{DbConfig, Error, PolyMongo};
use polymongo_testkit::Capability;

use common::{raw, server};

/// Every document of `db.coll` as raw BSON bytes, sorted by those bytes' `_id`.
async fn raw_docs(client: &Client, db: &str, coll: &str) -> Vec<Vec<u8>> {
    let mut docs: Vec<(String, Vec<u8>)> = client
        .database(db)
        .collection::<RawDocumentBuf>(coll)
        .find(doc! {})
        .await
        .expect("raw find")
        .try_collect::<Vec<_>>()
        .await
        .expect("raw docs")
        .into_iter()
        .map(|d| {
            let id = format!("{:?}", d.get("_id").ok().flatten());
            (id, d.into_bytes())
        })
        .collect();
    docs.sort();
    docs.into_iter().map(|(_, d)| d).collect()
}

/// Index names and key field names as the server reports them (nx-27017 renames indexes and
/// drops key directions, so names of fields are what can be compared through it).
async fn index_keys(client: &Client, db: &str, coll: &str) -> BTreeSet<Vec<String>> {
    let mut cursor = client
        .database(db)
        .run_cursor_command(doc! { "listIndexes": coll })
        .await
        .expect("raw listIndexes");
    let mut keys = BTreeSet::new();
    while let Some(index) = cursor.try_next().await.expect("index") {
        let key = index.get_document("key").expect("key");
        keys.insert(key.keys().cloned().collect());
    }
    keys
}

/// Documents of every type nx-27017 keeps byte for byte (DESIGN §5).
fn kept_types(i: i32) -> Document {
    doc! {
        "_id": ObjectId::new(),
        "n": i,
        "ratio": f64::from(i) / 7.0,
        "when": DateTime::from_millis(1_700_000_000_000 + i64::from(i)),
        "blob": Binary { subtype: BinarySubtype::Generic, bytes: vec![0, 1, 2, 255] },
        "nested": { "a": { "b": [1, "two", { "c": true }] }, "none": null },
        "flag": i % 2 == 0,
        "tags": ["x", "y"],
        "name": format!("user {i}"),
    }
}

/// `listCollections` options per collection, as the server reports them.
async fn collection_options(client: &Client, db: &str) -> Vec<(String, Document)> {
    let mut cursor = client
        .database(db)
        .run_cursor_command(doc! { "listCollections": 1 })
        .await
        .expect("raw listCollections");
    let mut out = Vec::new();
    while let Some(c) = cursor.try_next().await.expect("collection") {
        let name = c.get_str("name").unwrap_or_default().to_owned();
        out.push((name, c.get_document("options").cloned().unwrap_or_default()));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

async fn seed(client: &Client, db: &str) {
    // A collection created with options, so that they have something to carry.
    client
        .database(db)
        .run_command(doc! {
            "create": "users",
            "validator": { "name": { "$type": "string" } },
            "collation": { "locale": "en", "strength": 2 },
        })
        .await
        .expect("create users");
    let users = client.database(db).collection::<Document>("users");
    users
        .insert_many((0..200).map(kept_types))
        .await
        .expect("seed users");
    users
        .create_index(
            mongodb::IndexModel::builder()
                .keys(doc! { "name": 1, "when": -1 })
                .options(
                    mongodb::options::IndexOptions::builder()
                        .unique(true)
                        .build(),
                )
                .build(),
        )
        .await
        .expect("index");
    let events = client.database(db).collection::<Document>("events");
    events
        .insert_many((0..50).map(|i| doc! { "_id": i, "kind": "click" }))
        .await
        .expect("seed events");
}

/// Every BSON type, for servers that keep them all (capability `ExactBsonTypes`: a real
/// `mongod`, mongoeco; nx-27017 refuses Decimal128, regular expressions, timestamps and
/// Min/MaxKey, and changes Int64 `_id`s, UUIDs and code — DESIGN §5).
fn full_types() -> Document {
    use std::str::FromStr;
    doc! {
        "_id": 1_i64,
        "decimal": mongodb::bson::Decimal128::from_str("-12.345E-3").unwrap(),
        "regex": mongodb::bson::Regex { pattern: "^a".into(), options: "i".into() },
        "ts": mongodb::bson::Timestamp { time: 1, increment: 2 },
        "min": Bson::MinKey,
        "max": Bson::MaxKey,
        "uuid": Binary { subtype: BinarySubtype::Uuid, bytes: vec![1; 16] },
        "code": Bson::JavaScriptCode("f()".into()),
        "code_w_s": Bson::JavaScriptCodeWithScope(mongodb::bson::JavaScriptCodeWithScope {
            code: "g(x)".into(),
            scope: doc! { "x": 1 },
        }),
        "neg_zero": -0.0_f64,
        "i64": i64::MAX,
        "small_i64": 40_i64,
        "order": { "z": 1, "a": 2 },
    }
}

#[tokio::test]
async fn every_bson_type_survives_export_and_import_through_a_server() {
    let Some(server) = polymongo_testkit::server_for(&[Capability::ExactBsonTypes]).await else {
        return;
    };
    let raw = raw(&server).await;
    let src = raw
        .database("types_src")
        .collection::<Document>("all_types");
    src.insert_one(full_types()).await.unwrap();
    src.insert_many((0..20).map(kept_types)).await.unwrap();
    let poly = common::manager(&server, 4).await;
    for gzip in [false, true] {
        let target = if gzip { "types_dst_gz" } else { "types_dst" };
        let mut file = Vec::new();
        let exported = poly
            .bulk()
            .export_stream("types_src", &mut file, ExportOptions::default().gzip(gzip))
            .await
            .unwrap();
        assert_eq!(exported.documents, 21);
        let imported = poly
            .bulk()
            .import_stream(target, &file[..], ImportOptions::default())
            .await
            .unwrap();
        assert!(imported.is_clean(), "{imported:?}");
        let (before, after) = (
            raw_docs(&raw, "types_src", "all_types").await,
            raw_docs(&raw, target, "all_types").await,
        );
        assert_eq!(after.len(), 21);
        assert_eq!(
            after, before,
            "documents differ after the round trip (gzip {gzip})"
        );
    }
    // The server itself kept them: the first document reads back as written.
    let one = raw
        .database("types_dst")
        .collection::<RawDocumentBuf>("all_types")
        .find_one(doc! { "_id": 1_i64 })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        one.as_bytes(),
        RawDocumentBuf::from_document(&full_types())
            .unwrap()
            .as_bytes()
    );
    poly.close_all(Duration::from_secs(5)).await;
}

/// Every index of `db.coll` as the server reports it: name → (key with directions, unique).
async fn index_specs(
    client: &Client,
    db: &str,
    coll: &str,
) -> std::collections::BTreeMap<String, (Document, bool)> {
    let mut cursor = client
        .database(db)
        .run_cursor_command(doc! { "listIndexes": coll })
        .await
        .expect("raw listIndexes");
    let mut specs = std::collections::BTreeMap::new();
    while let Some(index) = cursor.try_next().await.expect("index") {
        specs.insert(
            index.get_str("name").expect("name").to_owned(),
            (
                index.get_document("key").expect("key").clone(),
                index.get_bool("unique").unwrap_or(false),
            ),
        );
    }
    specs
}

#[tokio::test]
async fn index_names_and_directions_survive_export_and_import_through_a_server() {
    let Some(server) = polymongo_testkit::server_for(&[Capability::IndexDirection]).await else {
        return;
    };
    let raw = raw(&server).await;
    let users = raw.database("idx_src").collection::<Document>("users");
    users.insert_many((0..20).map(kept_types)).await.unwrap();
    for (keys, name, unique) in [
        (doc! { "name": 1, "when": -1 }, "by_name_then_newest", true),
        (doc! { "when": -1 }, "newest_first", false),
        (doc! { "nested.a.b": 1, "n": -1 }, "nested_mixed", false),
    ] {
        users
            .create_index(
                mongodb::IndexModel::builder()
                    .keys(keys)
                    .options(
                        mongodb::options::IndexOptions::builder()
                            .name(name.to_owned())
                            .unique(unique)
                            .build(),
                    )
                    .build(),
            )
            .await
            .unwrap();
    }
    let source = index_specs(&raw, "idx_src", "users").await;
    assert_eq!(source.len(), 4, "{source:?}");
    assert_eq!(source["newest_first"].0, doc! { "when": -1 });

    let poly = common::manager(&server, 4).await;
    let dump = poly.bulk().export("idx_src").await.unwrap();
    let report = poly
        .bulk()
        .import("idx_dst", &dump, ImportOptions::default())
        .await
        .unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(index_specs(&raw, "idx_dst", "users").await, source);
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn export_then_import_reproduces_every_document_and_index() {
    let server = server().await;
    let raw = raw(&server).await;
    seed(&raw, "bulk_src").await;
    let poly = common::manager(&server, 4).await;
    let bulk = poly.bulk();

    for gzip in [false, true] {
        let target = if gzip { "bulk_dst_gz" } else { "bulk_dst" };
        let progress = Arc::new(AtomicU64::new(0));
        let seen = Arc::clone(&progress);
        let mut file = Vec::new();
        let exported = bulk
            .export_stream(
                "bulk_src",
                &mut file,
                ExportOptions::default()
                    .gzip(gzip)
                    .batch_size(64)
                    .progress(move |p| seen.store(p.documents, Ordering::SeqCst)),
            )
            .await
            .unwrap();
        let expected = 250;
        assert_eq!(exported.documents, expected);
        assert_eq!(progress.load(Ordering::SeqCst), expected);
        assert_eq!(file.starts_with(&[0x1f, 0x8b]), gzip);
        let imported = bulk
            .import_stream(target, &file[..], ImportOptions::default().batch_size(37))
            .await
            .unwrap();
        assert!(imported.is_clean(), "{imported:?}");
        assert_eq!(imported.documents, expected);
        for coll in ["users", "events"] {
            assert_eq!(
                raw_docs(&raw, target, coll).await,
                raw_docs(&raw, "bulk_src", coll).await,
                "{coll} differs after the round trip (gzip {gzip})"
            );
            assert_eq!(
                index_keys(&raw, target, coll).await,
                index_keys(&raw, "bulk_src", coll).await
            );
        }
        assert_eq!(
            collection_options(&raw, target).await,
            collection_options(&raw, "bulk_src").await
        );
    }
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_hundred_thousand_documents_round_trip() {
    let Some(server) = polymongo_testkit::server_for(&[Capability::LargeCollections]).await else {
        return;
    };
    let raw = raw(&server).await;
    let coll = raw.database("bulk_big").collection::<Document>("items");
    for chunk in 0..10 {
        coll.insert_many((0..10_000).map(|i| {
            let n = chunk * 10_000 + i;
            doc! { "_id": n, "v": format!("value {n}"), "f": f64::from(n) * 0.5 }
        }))
        .await
        .unwrap();
    }
    coll.create_index(mongodb::IndexModel::builder().keys(doc! { "v": 1 }).build())
        .await
        .unwrap();
    let poly = common::manager(&server, 4).await;
    let mut file = Vec::new();
    let exported = poly
        .bulk()
        .export_stream("bulk_big", &mut file, ExportOptions::default())
        .await
        .unwrap();
    assert_eq!(exported.documents, 100_000);
    let imported = poly
        .bulk()
        .import_stream("bulk_big_copy", &file[..], ImportOptions::default())
        .await
        .unwrap();
    assert_eq!(imported.documents, 100_000);
    assert_eq!(
        raw_docs(&raw, "bulk_big_copy", "items").await,
        raw_docs(&raw, "bulk_big", "items").await
    );
    assert_eq!(
        index_keys(&raw, "bulk_big_copy", "items").await,
        index_keys(&raw, "bulk_big", "items").await
    );
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn in_memory_dumps_round_trip() {
    let server = server().await;
    let raw = raw(&server).await;
    seed(&raw, "mem_src").await;
    let poly = common::manager(&server, 4).await;
    let dump = poly.bulk().export("mem_src").await.unwrap();
    assert_eq!(dump.database, "mem_src");
    let names: Vec<&str> = dump.collections.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["events", "users"]);
    let report = poly
        .bulk()
        .import("mem_dst", &dump, ImportOptions::default())
        .await
        .unwrap();
    assert_eq!(report.documents, 250);
    assert_eq!(
        raw_docs(&raw, "mem_dst", "users").await,
        raw_docs(&raw, "mem_src", "users").await
    );
    poly.close_all(Duration::from_secs(5)).await;
}

const HEADER: &str = r#"{"polymongo_dump":{"version":1,"database":"d","created":"2026-11-25T00:00:00Z","producer":"test"}}"#;
const COLLECTION: &str =
    r#"{"collection":{"name":"c","type":"collection","options":{},"indexes":[]}}"#;

fn doc_line(id: i32) -> String {
    format!(r#"{{"document":{{"_id":{{"$numberInt":"{id}"}},"v":"x"}}}}"#)
}

/// Lines 1 and 2: header, collection; documents `_id` 1..=10 on lines 3..=12 with lines 7
/// and 10 broken in three ways; the end record on line 13.
fn file_with_bad_records() -> String {
    let mut lines = vec![HEADER.to_owned(), COLLECTION.to_owned()];
    for id in 1..=10 {
        lines.push(match id {
            5 => r#"{"document":{"_id":"#.to_owned(),
            8 => r#"{"comment":"not a record"}"#.to_owned(),
            _ => doc_line(id),
        });
    }
    lines.push(r#"{"end":{"collections":1,"documents":10}}"#.to_owned());
    lines.join("\n") + "\n"
}

async fn ids(client: &Client, db: &str) -> Vec<i32> {
    let mut ids: Vec<i32> = client
        .database(db)
        .collection::<Document>("c")
        .find(doc! {})
        .await
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .iter()
        .map(|d| d.get_i32("_id").unwrap())
        .collect();
    ids.sort_unstable();
    ids
}

#[tokio::test]
async fn bad_records_are_listed_with_their_lines_when_continuing() {
    let server = server().await;
    let raw = raw(&server).await;
    let poly = common::manager(&server, 4).await;
    let file = file_with_bad_records();
    // Continue: the two bad records are skipped and listed; the end record's counts agree
    // once they are accounted for, so the import completes.
    let report = poly
        .bulk()
        .import_stream(
            "bad_continue",
            file.as_bytes(),
            ImportOptions::default()
                .on_error(OnError::Continue)
                .batch_size(3),
        )
        .await
        .unwrap();
    let lines: Vec<(Option<u64>, Stage)> =
        report.failures.iter().map(|f| (f.line, f.stage)).collect();
    assert_eq!(lines, [(Some(7), Stage::Read), (Some(10), Stage::Read)]);
    assert!(
        report.failures[0].message.contains("invalid JSON"),
        "{report:?}"
    );
    assert!(report.failures[1].message.contains("comment"), "{report:?}");
    assert_eq!((report.documents, report.skipped), (8, 2));
    assert!(report.stopped.is_none() && !report.is_clean());
    assert_eq!(ids(&raw, "bad_continue").await, [1, 2, 3, 4, 6, 7, 9, 10]);
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn stopping_at_a_bad_record_writes_exactly_what_came_before() {
    let server = server().await;
    let raw = raw(&server).await;
    let poly = common::manager(&server, 4).await;
    let err = poly
        .bulk()
        .import_stream(
            "bad_stop",
            file_with_bad_records().as_bytes(),
            ImportOptions::default().batch_size(3),
        )
        .await
        .unwrap_err();
    let Error::Import(report) = err else {
        panic!("expected an import error, got {err:?}")
    };
    let stopped = report.stopped.clone().unwrap();
    assert_eq!((stopped.line, stopped.stage), (Some(7), Stage::Read));
    assert_eq!(report.documents, 4);
    assert_eq!(ids(&raw, "bad_stop").await, [1, 2, 3, 4]);
    assert!(
        err_text(&report).contains("line 7"),
        "{}",
        err_text(&report)
    );
    poly.close_all(Duration::from_secs(5)).await;
}

fn err_text(report: &ImportReport) -> String {
    Error::Import(Box::new(report.clone())).to_string()
}

#[tokio::test]
async fn an_import_cut_short_reports_what_was_written() {
    let server = server().await;
    let raw = raw(&server).await;
    let poly = common::manager(&server, 4).await;
    let mut file = vec![HEADER.to_owned(), COLLECTION.to_owned()];
    file.extend((1..=6).map(doc_line));
    let mut text = file.join("\n") + "\n";
    // The transfer broke in the middle of the seventh document.
    text.push_str(&doc_line(7)[..20]);
    let err = poly
        .bulk()
        .import_stream(
            "cut_short",
            text.as_bytes(),
            ImportOptions::default().batch_size(4),
        )
        .await
        .unwrap_err();
    let Error::Import(report) = err else {
        panic!("expected an import error, got {err:?}")
    };
    let stopped = report.stopped.clone().unwrap();
    assert_eq!(stopped.line, Some(9));
    assert!(stopped.message.contains("truncated"), "{stopped:?}");
    assert_eq!(report.documents, 6);
    assert_eq!(ids(&raw, "cut_short").await, [1, 2, 3, 4, 5, 6]);

    // A complete file without its end record is cut short too.
    let no_end = format!("{HEADER}\n{COLLECTION}\n{}\n", doc_line(1));
    let err = poly
        .bulk()
        .import_stream("cut_short_2", no_end.as_bytes(), ImportOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("without its end record"), "{err}");
    assert_eq!(ids(&raw, "cut_short_2").await, [1]);
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn insert_reports_duplicates_by_line_and_upsert_replaces() {
    let server = server().await;
    let raw = raw(&server).await;
    raw.database("upserts")
        .collection::<Document>("c")
        .insert_one(doc! { "_id": 2, "v": "old" })
        .await
        .unwrap();
    let poly = common::manager(&server, 4).await;
    let mut lines = vec![HEADER.to_owned(), COLLECTION.to_owned()];
    lines.extend((1..=3).map(doc_line));
    lines.push(r#"{"end":{"collections":1,"documents":3}}"#.to_owned());
    let file = lines.join("\n") + "\n";

    let report = poly
        .bulk()
        .import_stream(
            "upserts",
            file.as_bytes(),
            ImportOptions::default().on_error(OnError::Continue),
        )
        .await
        .unwrap();
    assert_eq!((report.documents, report.skipped), (2, 1));
    let failure = &report.failures[0];
    assert_eq!((failure.line, failure.stage), (Some(4), Stage::Write));
    assert!(failure.message.contains("11000"), "{failure:?}");

    let report = poly
        .bulk()
        .import_stream(
            "upserts",
            file.as_bytes(),
            ImportOptions::default().mode(WriteMode::Upsert),
        )
        .await
        .unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.documents, 3);
    let two = raw
        .database("upserts")
        .collection::<Document>("c")
        .find_one(doc! { "_id": 2 })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(two.get_str("v").unwrap(), "x");
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn drop_target_first_leaves_only_the_dump() {
    let server = server().await;
    let raw = raw(&server).await;
    raw.database("replaced")
        .collection::<Document>("stale")
        .insert_one(doc! { "old": true })
        .await
        .unwrap();
    let poly = common::manager(&server, 4).await;
    let file = format!(
        "{HEADER}\n{COLLECTION}\n{}\n{}\n",
        doc_line(1),
        r#"{"end":{"collections":1,"documents":1}}"#
    );
    poly.bulk()
        .import_stream(
            "replaced",
            file.as_bytes(),
            ImportOptions::default().drop_target_first(true),
        )
        .await
        .unwrap();
    let names = raw
        .database("replaced")
        .list_collection_names()
        .await
        .unwrap();
    assert_eq!(names, ["c"]);
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn copy_within_a_cluster_and_across_clusters() {
    let (a, b) = (server().await, server().await);
    let (raw_a, raw_b) = (raw(&a).await, raw(&b).await);
    seed(&raw_a, "copy_src").await;
    let poly = PolyMongo::builder()
        .uri(a.uri())
        .db("copy_remote", DbConfig::new().uri(b.uri()))
        .build()
        .await
        .unwrap();
    let local = poly
        .bulk()
        .copy_database(
            "copy_src",
            "copy_local",
            ImportOptions::default().batch_size(50),
        )
        .await
        .unwrap();
    let remote = poly
        .bulk()
        .copy_database("copy_src", "copy_remote", ImportOptions::default())
        .await
        .unwrap();
    for (report, raw, target) in [
        (&local, &raw_a, "copy_local"),
        (&remote, &raw_b, "copy_remote"),
    ] {
        assert_eq!(report.written.documents, 250, "{report:?}");
        assert!(report.written.is_clean(), "{report:?}");
        for coll in ["users", "events"] {
            assert_eq!(
                raw_docs(raw, target, coll).await,
                raw_docs(&raw_a, "copy_src", coll).await
            );
            assert_eq!(
                index_keys(raw, target, coll).await,
                index_keys(&raw_a, "copy_src", coll).await
            );
        }
    }
    // Across clusters there is no server-side path; within one, nx-27017 refuses `$out` into
    // another database, so both stream here (a real mongod takes the server-side path).
    assert!(remote.paths.values().all(|p| *p == CopyPath::Streamed));
    if a.kind() == polymongo_testkit::ServerKind::Nx27017 {
        assert!(local.paths.values().all(|p| *p == CopyPath::Streamed));
    }
    let refused = poly
        .bulk()
        .copy_database("copy_src", "copy_src", ImportOptions::default())
        .await;
    assert!(
        matches!(
            refused,
            Err(Error::Config {
                field: "target",
                ..
            })
        ),
        "{refused:?}"
    );

    poly.bulk().drop_database("copy_local").await.unwrap();
    let names = raw_a.list_database_names().await.unwrap();
    assert!(!names.iter().any(|n| n == "copy_local"), "{names:?}");
    assert!(names.iter().any(|n| n == "copy_src"));
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn dumps_interoperate_with_pymongo_json_util() {
    let python = polymongo_testkit::pymongo_python()
        .await
        .expect("the kit's python");
    let dir = tempfile::tempdir().unwrap();
    // pymongo writes a dump: documents in canonical Extended JSON from bson.json_util.
    let theirs = dir.path().join("theirs.ndjson");
    let script = r#"
import sys, datetime
from bson import json_util, ObjectId, Int64, Decimal128, Binary, Regex, Timestamp, MinKey, MaxKey, Code
from bson.json_util import CANONICAL_JSON_OPTIONS
docs = [
    {"_id": ObjectId("5f0c3d8b9e1a4b2c3d4e5f60"), "i32": 7, "i64": Int64(7), "d": 1.5,
     "dec": Decimal128("1.10"), "when": datetime.datetime(2020, 1, 2, 3, 4, 5, 678000, tzinfo=datetime.timezone.utc),
     "bin": Binary(b"\x00\x01", 0), "uuid": Binary(b"0123456789abcdef", 4), "re": Regex("^a", "i"),
     "ts": Timestamp(1, 2), "min": MinKey(), "max": MaxKey(), "code": Code("f()"),
     "nested": {"a": [1, Int64(2), {"b": None}]}},
]
with open(sys.argv[1], "w") as f:
    f.write('{"polymongo_dump":{"version":1,"database":"py","created":"2026-11-25T00:00:00Z","producer":"pymongo"}}\n')
    f.write('{"collection":{"name":"c","type":"collection","options":{},"indexes":[]}}\n')
    for d in docs:
        f.write('{"document":' + json_util.dumps(d, json_options=CANONICAL_JSON_OPTIONS) + '}\n')
    f.write('{"end":{"collections":1,"documents":%d}}\n' % len(docs))
"#;
    let status = std::process::Command::new(&python)
        .args(["-c", script])
        .arg(&theirs)
        .status()
        .unwrap();
    assert!(status.success());
    let dump = polymongo::bulk::Dump::read_from(std::io::BufReader::new(
        std::fs::File::open(&theirs).unwrap(),
    ))
    .unwrap();
    let d = &dump.collections[0].documents[0];
    assert!(matches!(d.get("i32"), Some(Bson::Int32(7))));
    assert!(matches!(d.get("i64"), Some(Bson::Int64(7))));
    assert!(matches!(d.get("dec"), Some(Bson::Decimal128(_))));
    assert_eq!(d.get("dec").unwrap().to_string(), "1.10");
    assert!(matches!(d.get("uuid"), Some(Bson::Binary(b)) if b.subtype == BinarySubtype::Uuid));
    assert!(matches!(d.get("ts"), Some(Bson::Timestamp(t)) if t.time == 1 && t.increment == 2));
    assert_eq!(
        d.get_datetime("when").unwrap().timestamp_millis(),
        1_577_934_245_678
    );

    // Our dump parses there, with the same values: pymongo re-encodes each document to BSON
    // and prints its hex, which must equal our own BSON bytes.
    let ours = dir.path().join("ours.ndjson");
    std::fs::write(&ours, dump.to_bytes()).unwrap();
    let check = r#"
import sys, json
from bson import json_util, encode
from bson.json_util import CANONICAL_JSON_OPTIONS
for line in open(sys.argv[1]):
    rec = json.loads(line)
    if "document" in rec:
        d = json_util.loads(json.dumps(rec["document"]), json_options=CANONICAL_JSON_OPTIONS)
        print(encode(d).hex())
"#;
    let out = std::process::Command::new(&python)
        .args(["-c", check])
        .arg(&ours)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hex = String::from_utf8(out.stdout).unwrap();
    let ours_hex: String = mongodb::bson::to_vec(d)
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(hex.trim(), ours_hex);
}

#[tokio::test]
async fn a_server_lost_mid_import_reports_exactly_what_was_acknowledged() {
    let mut server = polymongo_testkit::TestServer::start_with(
        polymongo_testkit::ServerOptions::new()
            .persistent(true)
            .managed(true),
    )
    .await
    .expect("server");
    let pid = server.pid().expect("a process the kit started");
    let poly = PolyMongo::builder()
        .uri(server.uri())
        .server_selection_timeout(Duration::from_millis(500))
        .build()
        .await
        .unwrap();
    let documents: Vec<Document> = (0..5_000).map(|i| doc! { "_id": i, "v": "x" }).collect();
    let dump = polymongo::bulk::Dump::new(
        "lost",
        vec![polymongo::bulk::CollectionDump::new("c", documents)],
    );
    // The server dies right after the first batch is acknowledged, before the second is sent.
    let killed = std::sync::atomic::AtomicBool::new(false);
    let options = ImportOptions::default().batch_size(500).progress(move |_| {
        if !killed.swap(true, Ordering::SeqCst) {
            let status = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status()
                .expect("kill");
            assert!(status.success());
        }
    });
    let err = poly
        .bulk()
        .import("lost", &dump, options)
        .await
        .unwrap_err();
    let Error::Import(report) = err else {
        panic!("expected an import error, got {err:?}")
    };
    let stopped = report.stopped.clone().unwrap();
    assert_eq!(stopped.stage, Stage::Write);
    // Header on line 1, collection on line 2, the second batch on lines 503..=1002.
    assert_eq!(stopped.lines, Some((503, 1002)), "{report:?}");
    assert_eq!(report.documents, 500);

    server.kill().await.unwrap();
    server.restart().await.unwrap();
    let raw = raw(&server).await;
    assert_eq!(ids(&raw, "lost").await, (0..500).collect::<Vec<_>>());
    poly.close_all(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn every_bad_input_stops_with_exactly_the_records_before_it_written() {
    let server = server().await;
    let raw = raw(&server).await;
    let poly = common::manager(&server, 4).await;
    let end = r#"{"end":{"collections":1,"documents":5}}"#;
    let body = |bad: &str| {
        format!(
            "{HEADER}\n{COLLECTION}\n{}\n{}\n{}\n{bad}\n{}\n{}\n{end}\n",
            doc_line(1),
            doc_line(2),
            doc_line(3),
            doc_line(5),
            doc_line(6)
        )
    };
    let future = HEADER.replace("\"version\":1", "\"version\":9");
    let cases: Vec<(&str, String, u64, Vec<i32>)> = vec![
        ("invalid JSON", body(r#"{"document":"#), 6, vec![1, 2, 3]),
        ("unknown record", body(r#"{"index":{}}"#), 6, vec![1, 2, 3]),
        (
            "invalid Extended JSON",
            body(r#"{"document":{"_id":{"$numberInt":"x"}}}"#),
            6,
            vec![1, 2, 3],
        ),
        ("a second header", body(HEADER), 6, vec![1, 2, 3]),
        (
            "a document before its collection",
            format!(
                "{HEADER}\n{}\n{COLLECTION}\n{}\n{end}\n",
                doc_line(1),
                doc_line(2)
            ),
            2,
            vec![],
        ),
        (
            "a version from the future",
            format!("{future}\n{COLLECTION}\n{}\n", doc_line(1)),
            1,
            vec![],
        ),
        (
            "a truncated line",
            format!(
                "{HEADER}\n{COLLECTION}\n{}\n{}",
                doc_line(1),
                &doc_line(2)[..9]
            ),
            4,
            vec![1],
        ),
    ];
    for (i, (what, file, line, written)) in cases.into_iter().enumerate() {
        let db = format!("bad_case_{i}");
        let err = poly
            .bulk()
            .import_stream(&db, file.as_bytes(), ImportOptions::default().batch_size(2))
            .await
            .unwrap_err();
        let Error::Import(report) = err else {
            panic!("{what}: expected an import error, got {err:?}")
        };
        let stopped = report.stopped.clone().unwrap();
        assert_eq!(stopped.line, Some(line), "{what}: {report:?}");
        assert_eq!(report.documents, written.len() as u64, "{what}: {report:?}");
        if written.is_empty() {
            let names = raw.database(&db).list_collection_names().await.unwrap();
            assert!(
                !names.contains(&"c".to_owned()) || ids(&raw, &db).await.is_empty(),
                "{what}"
            );
        } else {
            assert_eq!(ids(&raw, &db).await, written, "{what}");
        }
    }
    poly.close_all(Duration::from_secs(5)).await;
}
