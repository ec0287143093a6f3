//! Hardening (issue 15), through a server: errors that tell the truth about retries, dumps
//! whose collection options cannot be turned against the server, end records that cannot be
//! forged, bounded memory whatever the input, documents refused alone, size-aware upserts,
//! and copies that never destroy target data. Effects are checked with a raw client.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use mongodb::bson::{doc, Document};
use mongodb::Client;
use polymongo::bulk::{CopyPath, ImportOptions, ImportReport, OnError, Stage, WriteMode};
use polymongo::{Error, Model, PolyMongo};
use polymongo_testkit::FaultProxy;
use serde::{Deserialize, Serialize};

use common::{raw, server};

const HEADER: &str = r#"{"polymongo_dump":{"version":1,"database":"d","created":"2026-11-25T00:00:00Z","producer":"test"}}"#;

fn collection(name: &str, options: &str) -> String {
    format!(
        r#"{{"collection":{{"name":"{name}","type":"collection","options":{options},"indexes":[]}}}}"#
    )
}

fn doc_line(id: i32) -> String {
    format!(r#"{{"document":{{"_id":{{"$numberInt":"{id}"}},"v":"x"}}}}"#)
}

fn end(collections: u64, documents: u64) -> String {
    format!(r#"{{"end":{{"collections":{collections},"documents":{documents}}}}}"#)
}

fn file(lines: &[String]) -> Vec<u8> {
    (lines.join("\n") + "\n").into_bytes()
}

async fn collections(client: &Client, db: &str) -> Vec<String> {
    let mut names = client.database(db).list_collection_names().await.unwrap();
    names.sort();
    names
}

async fn ids(client: &Client, db: &str, coll: &str) -> Vec<i32> {
    let mut ids: Vec<i32> = client
        .database(db)
        .collection::<Document>(coll)
        .find(doc! {})
        .await
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .iter()
        .filter_map(|d| d.get_i32("_id").ok())
        .collect();
    ids.sort_unstable();
    ids
}

fn stopped(result: Result<ImportReport, Error>) -> ImportReport {
    match result {
        Err(Error::Import(report)) => *report,
        other => panic!("expected the import to stop, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Retry truth
// ---------------------------------------------------------------------------------------

#[derive(Debug, Serialize, Deserialize)]
struct Item {
    n: i64,
}
impl Model for Item {
    const COLLECTION: &'static str = "items";
}

#[tokio::test]
async fn a_write_broken_in_flight_is_not_retryable_and_a_read_is() {
    let server = server().await;
    raw(&server)
        .await
        .database("retry")
        .collection::<Document>("items")
        .insert_one(doc! { "n": 1_i64 })
        .await
        .unwrap();
    let port = server.port().expect("a local server");
    let proxy = FaultProxy::start(&format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    let mut uri = proxy.uri_for(server.uri());
    // The driver's own retry of reads would hide the break from this test.
    uri.push_str(if uri.contains('?') { "&" } else { "/?" });
    uri.push_str("retryReads=false");
    let poly = PolyMongo::builder().uri(uri).build().await.unwrap();
    let items = poly.model::<Item>();
    let handle = items.db("retry").unwrap();
    handle.run(|c| c.find_one(doc! {})).await.unwrap();
    proxy.set_latency(Duration::from_millis(400));

    // `update_many` is never retried by the driver: when its connection breaks, whether it
    // was applied is unknown.
    let write = {
        let h = items.db("retry").unwrap();
        tokio::spawn(async move {
            h.run(|c| c.update_many(doc! {}, doc! { "$inc": { "n": 1_i64 } }))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    proxy.drop_all();
    let err = write.await.unwrap().expect_err("the write broke");
    assert!(
        matches!(
            err,
            Error::Connection {
                outcome_unknown: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains("may have been applied"), "{err}");

    // A connection established again (through the slow proxy) before the read starts.
    handle.run(|c| c.find_one(doc! {})).await.unwrap();
    let read = {
        let h = items.db("retry").unwrap();
        tokio::spawn(async move { h.run(|c| c.find_one(doc! {})).await })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    proxy.drop_all();
    let err = read.await.unwrap().expect_err("the read broke");
    assert!(err.is_retryable(), "a read changes nothing: {err:?}");
    proxy.pass_through();
    poly.close_all(Duration::from_secs(5)).await;
}

// ---------------------------------------------------------------------------------------
// Collection options are untrusted
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn collection_options_cannot_rename_or_redirect_the_create() {
    let server = server().await;
    let client = raw(&server).await;
    let poly = common::manager(&server, 4).await;
    for (db, options) in [
        ("opt_create", r#"{"create":"other"}"#),
        ("opt_db", r#"{"$db":"admin"}"#),
        ("opt_wc", r#"{"writeConcern":{"w":0}}"#),
        ("opt_type", r#"{"capped":"yes"}"#),
    ] {
        let dump = file(&[
            HEADER.into(),
            collection("c", options),
            doc_line(1),
            end(1, 1),
        ]);
        let report = stopped(
            poly.bulk()
                .import_stream(db, &dump[..], ImportOptions::default())
                .await,
        );
        let stop = report.stopped.expect("stopped");
        assert_eq!(stop.line, Some(2), "{options}: {stop:?}");
        assert_eq!(stop.stage, Stage::Create, "{options}: {stop:?}");
        assert!(
            stop.message.contains("invalid collection specification"),
            "{options}: {}",
            stop.message
        );
        // Nothing was created, under any name, in this database or in `admin`.
        assert!(collections(&client, db).await.is_empty(), "{options}");
        assert!(!collections(&client, "admin")
            .await
            .iter()
            .any(|c| c == "c" || c == "other"));
    }
    // In continue mode, the refused collection's documents are skipped and listed; the
    // next collection is imported.
    let dump = file(&[
        HEADER.into(),
        collection("bad", r#"{"create":"other"}"#),
        doc_line(1),
        collection("good", "{}"),
        doc_line(2),
        end(2, 2),
    ]);
    let report = poly
        .bulk()
        .import_stream(
            "opt_continue",
            &dump[..],
            ImportOptions::default().on_error(OnError::Continue),
        )
        .await
        .unwrap();
    assert_eq!(report.documents, 1, "{report:?}");
    assert_eq!(collections(&client, "opt_continue").await, vec!["good"]);
    assert_eq!(ids(&client, "opt_continue", "good").await, vec![2]);
    assert!(
        report.failures.iter().any(|f| f.line == Some(2)),
        "{report:?}"
    );
    poly.close_all(Duration::from_secs(5)).await;
}

// ---------------------------------------------------------------------------------------
// End records
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn huge_end_counts_are_a_mismatch_not_a_panic() {
    let server = server().await;
    let poly = common::manager(&server, 4).await;
    let dump = file(&[
        HEADER.into(),
        collection("c", "{}"),
        doc_line(1),
        "{broken".into(),
        end(u64::MAX, u64::MAX),
    ]);
    let report = stopped(
        poly.bulk()
            .import_stream(
                "end_huge",
                &dump[..],
                ImportOptions::default().on_error(OnError::Continue),
            )
            .await,
    );
    let stop = report.stopped.expect("stopped");
    assert!(stop.message.contains("count"), "{stop:?}");
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_missing_collection_cannot_hide_behind_a_skipped_document() {
    let server = server().await;
    let poly = common::manager(&server, 4).await;
    // One collection, two document lines of which one is broken; the end record claims a
    // second collection and only the one document that was read.
    let dump = file(&[
        HEADER.into(),
        collection("c", "{}"),
        doc_line(1),
        r#"{"document":{"_id":"#.into(),
        end(2, 1),
    ]);
    let report = stopped(
        poly.bulk()
            .import_stream(
                "end_hide",
                &dump[..],
                ImportOptions::default().on_error(OnError::Continue),
            )
            .await,
    );
    assert!(report.stopped.is_some(), "{report:?}");
    // The same file with honest counts imports.
    let dump = file(&[
        HEADER.into(),
        collection("c", "{}"),
        doc_line(1),
        r#"{"document":{"_id":"#.into(),
        end(1, 2),
    ]);
    let report = poly
        .bulk()
        .import_stream(
            "end_honest",
            &dump[..],
            ImportOptions::default().on_error(OnError::Continue),
        )
        .await
        .unwrap();
    assert_eq!(report.documents, 1);
    assert_eq!(report.skipped, 1);
    poly.close_all(Duration::from_secs(5)).await;
}

// ---------------------------------------------------------------------------------------
// Bounded memory
// ---------------------------------------------------------------------------------------

/// A gzip stream: a header, a collection, then `n` empty lines (a few hundred bytes that
/// inflate to `n` failures).
fn gzip_bomb(n: usize) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    writeln!(gz, "{HEADER}").unwrap();
    writeln!(gz, "{}", collection("c", "{}")).unwrap();
    writeln!(gz, "{}", doc_line(1)).unwrap();
    let newlines = vec![b'\n'; 1 << 16];
    let mut left = n;
    while left > 0 {
        let k = left.min(newlines.len());
        gz.write_all(&newlines[..k]).unwrap();
        left -= k;
    }
    gz.finish().unwrap()
}

#[tokio::test]
async fn a_gzip_bomb_of_newlines_keeps_bounded_failures_in_every_mode() {
    let server = server().await;
    let poly = common::manager(&server, 4).await;
    let lines = 200_000;
    let bomb = gzip_bomb(lines);
    assert!(bomb.len() < 4096, "{} bytes", bomb.len());
    for (on_error, mode) in [
        (OnError::Continue, WriteMode::Insert),
        (OnError::Continue, WriteMode::Upsert),
        (OnError::Stop, WriteMode::Insert),
        (OnError::Stop, WriteMode::Upsert),
    ] {
        let seen = Arc::new(AtomicU64::new(0));
        let counter = seen.clone();
        let options = ImportOptions::default()
            .on_error(on_error)
            .mode(mode)
            .drop_target_first(true)
            .max_failures(50)
            .on_failure(move |_| {
                counter.fetch_add(1, Ordering::Relaxed);
            });
        let report = stopped(poly.bulk().import_stream("bomb", &bomb[..], options).await);
        assert!(report.failures.len() <= 50, "{on_error:?} {mode:?}");
        let total = report.failures.len() as u64 + report.failures_dropped;
        assert_eq!(seen.load(Ordering::Relaxed), total, "{on_error:?} {mode:?}");
        match on_error {
            // Every empty line is a failure; the file then has no end record.
            OnError::Continue => assert!(total >= lines as u64, "{total}"),
            _ => assert_eq!(total, 1, "{report:?}"),
        }
        // The document before the newlines was written whatever the mode.
        assert_eq!(ids(&raw(&server).await, "bomb", "c").await, vec![1]);
    }
    poly.close_all(Duration::from_secs(5)).await;
}

// ---------------------------------------------------------------------------------------
// Documents refused by the client
// ---------------------------------------------------------------------------------------

fn nul_key_line(id: i32) -> String {
    format!(r#"{{"document":{{"_id":{{"$numberInt":"{id}"}},"a\u0000b":1}}}}"#)
}

fn huge_line(id: i32) -> String {
    format!(
        r#"{{"document":{{"_id":{{"$numberInt":"{id}"}},"s":"{}"}}}}"#,
        "x".repeat(17 * 1024 * 1024)
    )
}

#[tokio::test]
async fn a_document_the_client_refuses_is_refused_alone_with_its_line() {
    let server = server().await;
    let client = raw(&server).await;
    let poly = common::manager(&server, 4).await;
    let dump = file(&[
        HEADER.into(),
        collection("c", "{}"),
        doc_line(1),
        nul_key_line(2),
        doc_line(3),
        huge_line(4),
        doc_line(5),
        end(1, 5),
    ]);
    for (db, batch) in [("refuse_1", 1), ("refuse_10", 10)] {
        let report = poly
            .bulk()
            .import_stream(
                db,
                &dump[..],
                ImportOptions::default()
                    .on_error(OnError::Continue)
                    .batch_size(batch),
            )
            .await
            .unwrap();
        assert_eq!(ids(&client, db, "c").await, vec![1, 3, 5], "{report:?}");
        assert_eq!(report.documents, 3);
        let lines: Vec<_> = report.failures.iter().map(|f| f.line).collect();
        assert_eq!(lines, vec![Some(4), Some(6)], "{report:?}");
        for f in &report.failures {
            assert!(!f.message.contains("may have been written"), "{f:?}");
            assert!(f.lines.is_none(), "{f:?}");
        }
    }
    // In stop mode the import stops at the document, after writing what came before.
    let report = stopped(
        poly.bulk()
            .import_stream("refuse_stop", &dump[..], ImportOptions::default())
            .await,
    );
    let stop = report.stopped.clone().expect("stopped");
    assert_eq!(stop.line, Some(4), "{report:?}");
    assert!(!stop.message.contains("may have been written"), "{stop:?}");
    assert_eq!(ids(&client, "refuse_stop", "c").await, vec![1]);
    poly.close_all(Duration::from_secs(5)).await;
}

// ---------------------------------------------------------------------------------------
// Size-aware upserts
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn upserts_are_split_by_size() {
    let server = server().await;
    let client = raw(&server).await;
    let poly = common::manager(&server, 4).await;
    let payload = "y".repeat(20 * 1024);
    let mut lines = vec![HEADER.to_owned(), collection("c", "{}")];
    for id in 0..1000 {
        lines.push(format!(
            r#"{{"document":{{"_id":{{"$numberInt":"{id}"}},"p":"{payload}"}}}}"#
        ));
    }
    lines.push(end(1, 1000));
    let dump = file(&lines);
    let report = poly
        .bulk()
        .import_stream(
            "upsert_big",
            &dump[..],
            ImportOptions::default().mode(WriteMode::Upsert),
        )
        .await
        .unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.documents, 1000);
    let n = client
        .database("upsert_big")
        .collection::<Document>("c")
        .count_documents(doc! {})
        .await
        .unwrap();
    assert_eq!(n, 1000);
    poly.close_all(Duration::from_secs(5)).await;
}

// ---------------------------------------------------------------------------------------
// Copies never destroy target data
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_copy_merges_into_a_non_empty_target_on_every_path() {
    let server = server().await;
    let client = raw(&server).await;
    let src = client.database("copy_src").collection::<Document>("c");
    src.insert_many((1..=5).map(|i| doc! { "_id": i, "v": "src" }))
        .await
        .unwrap();
    let dst = client.database("copy_dst").collection::<Document>("c");
    dst.insert_one(doc! { "_id": 100, "v": "keep" })
        .await
        .unwrap();
    let poly = common::manager(&server, 4).await;
    let report = poly
        .bulk()
        .copy_database("copy_src", "copy_dst", ImportOptions::default())
        .await
        .unwrap();
    assert_eq!(report.written.documents, 5, "{report:?}");
    // `$out` would replace the non-empty target: the server-side path is not taken.
    assert_eq!(
        report.paths.get("c"),
        Some(&CopyPath::Streamed),
        "{report:?}"
    );
    assert_eq!(
        ids(&client, "copy_dst", "c").await,
        vec![1, 2, 3, 4, 5, 100],
        "{report:?}"
    );
    // Only when asked is the target replaced.
    poly.bulk()
        .copy_database(
            "copy_src",
            "copy_dst",
            ImportOptions::default().drop_target_first(true),
        )
        .await
        .unwrap();
    assert_eq!(ids(&client, "copy_dst", "c").await, vec![1, 2, 3, 4, 5]);
    poly.close_all(Duration::from_secs(5)).await;
}
