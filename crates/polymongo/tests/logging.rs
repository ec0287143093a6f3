//! Debug logging to rotated files never shows a password (feature `logging`).
#![cfg(feature = "logging")]

mod common;

use std::time::Duration;

use polymongo::logging::{init, LogOptions, LOG_FILE_NAME};
use polymongo::{DbConfig, Model, PolyMongo};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Item {
    n: i64,
}
impl Model for Item {
    const COLLECTION: &'static str = "items";
}

const SECRET: &str = "Pa55w0rd-in-logs";

#[tokio::test]
async fn debug_logs_errors_stats_and_debug_strings_never_show_the_password() {
    let dir = tempfile::tempdir().unwrap();
    init(LogOptions {
        debug: true,
        log_dir: Some(dir.path().to_path_buf()),
        max_file_bytes: 4096, // small, so rotation happens during the test
        console: false,
        ..LogOptions::default()
    })
    .unwrap();

    let server = common::server().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = format!("mongodb://admin:{SECRET}@127.0.0.1:{port}/?serverSelectionTimeoutMS=100");
    let mut shown = Vec::new();
    let poly = PolyMongo::builder()
        .uri(&dead)
        .retry(2, Duration::from_millis(10))
        .db("dedicated", DbConfig::new().uri(&dead).max_connections(1))
        .db("good", DbConfig::new().uri(server.uri()))
        .build()
        .await
        .unwrap();
    for _ in 0..20 {
        let err = poly.ping("main").await.unwrap_err();
        shown.push(format!("{err} {err:?}"));
        let err = poly.ping("dedicated").await.unwrap_err();
        shown.push(format!("{err} {err:?}"));
    }
    let items = poly.model::<Item>();
    for n in 0..50 {
        items
            .db("good")
            .unwrap()
            .insert_one(Item { n })
            .await
            .unwrap();
    }
    shown.push(serde_json::to_string(&poly.stats().general()).unwrap());
    shown.push(format!("{:?} {poly:?}", poly.stats().general()));
    poly.close_all(Duration::from_secs(5)).await;

    let mut logged = String::new();
    let mut files = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        assert!(path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(LOG_FILE_NAME));
        logged.push_str(&std::fs::read_to_string(&path).unwrap());
        files += 1;
    }
    assert!(files > 1, "the small size limit rotated the log");
    assert!(
        logged.contains("admin:***@"),
        "the redacted cluster is logged"
    );
    assert!(logged.contains("ping failed"), "errors are logged");
    assert!(logged.contains("pool opened"), "lifecycle is logged");
    assert!(!logged.contains(SECRET), "password in the log files");
    for s in &shown {
        assert!(!s.contains(SECRET), "password shown: {s}");
    }
}
