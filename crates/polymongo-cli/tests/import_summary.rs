//! A failed import is summarised on the terminal — counts by reason and the first few — with
//! every failure in `--report FILE` and the counts in `--json`, however many there are.

mod common;

use common::run;
use polymongo::mongodb::bson::{doc, Document};
use polymongo_testkit::TestServer;

const DOCS: i32 = 1_000;

#[tokio::test]
async fn a_thousand_duplicate_keys_make_a_summary_not_a_thousand_lines() {
    let server = TestServer::start().await.expect("server");
    let raw = polymongo::mongodb::Client::with_uri_str(server.uri())
        .await
        .unwrap();
    raw.database("dups")
        .collection::<Document>("items")
        .insert_many((0..DOCS).map(|i| doc! { "_id": i, "v": i }))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("dump.ndjson");
    let dump = dump.to_str().unwrap();
    let (code, _, err) = run(&["--uri", server.uri(), "export", "dups", "-o", dump]).await;
    assert_eq!(code, 0, "{err}");

    // Into the same database again: every document collides on `_id`.
    let report = dir.path().join("failures.jsonl");
    let report = report.to_str().unwrap();
    let (code, out, err) = run(&[
        "--uri",
        server.uri(),
        "import",
        "dups",
        "-i",
        dump,
        "--continue-on-error",
        "--report",
        report,
    ])
    .await;
    assert_eq!(code, 5, "{err}");
    assert!(out.is_empty(), "{out}");
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines.len() < 20,
        "a summary, not a list: {} lines\n{err}",
        lines.len()
    );
    assert!(err.contains("failures by reason"), "{err}");
    assert!(
        err.lines()
            .any(|l| l.contains(&DOCS.to_string()) && l.contains("11000")),
        "{err}"
    );
    assert!(err.contains(&format!("first 5 of {DOCS}")), "{err}");
    assert!(err.contains(report), "{err}");
    // The file has every failure, one JSON line each.
    let text = std::fs::read_to_string(report).unwrap();
    assert_eq!(text.lines().count(), DOCS as usize);
    for line in text.lines() {
        let f: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(f["stage"], "write", "{line}");
        assert!(f["line"].is_u64(), "{line}");
    }

    // --json: the report with the counts by reason.
    let (code, out, _) = run(&[
        "--uri",
        server.uri(),
        "--json",
        "import",
        "dups",
        "-i",
        dump,
        "--continue-on-error",
    ])
    .await;
    assert_eq!(code, 5);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let by_reason = json["failures_by_reason"].as_object().expect("counts");
    assert_eq!(
        by_reason.values().filter_map(|v| v.as_u64()).sum::<u64>(),
        DOCS as u64,
        "{by_reason:?}"
    );
    assert_eq!(
        json["failures"].as_array().map(Vec::len),
        Some(DOCS as usize)
    );
    // Nothing was written twice.
    let stored = raw
        .database("dups")
        .collection::<Document>("items")
        .count_documents(doc! {})
        .await
        .unwrap();
    assert_eq!(stored, DOCS as u64);
}
