//! Faults injected by the server itself (`configureFailPoint` with `failCommand`): error labels
//! checked against the library's retry classification, and a connection blocked on the server
//! against `wait_queue_timeout`. These run where fail points exist — a `mongod` with test
//! commands, an external server that has them, or mongoeco — and are reported as skipped
//! elsewhere. Transient errors inside transactions are in `transactions.rs`.
//!
//! The fail points are scoped with `appName` (MongoDB honours it, so tests sharing an external
//! server do not see each other's faults), and the clients turn the driver's own retries off,
//! so that what comes back is the server's error, as the library classifies it.

mod common;

use std::time::{Duration, Instant};

use mongodb::bson::{doc, Bson, Document};
use polymongo::{Error, Model, PolyMongo};
use polymongo_testkit::{server_for, Capability, TestServer};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Item {
    n: i64,
}
impl Model for Item {
    const COLLECTION: &'static str = "items";
}

const APP: &str = "polymongo-fail-points";

/// The server's URI with this file's app name and the driver's retries off.
fn uri(server: &TestServer) -> String {
    let options = format!("appName={APP}&retryWrites=false&retryReads=false");
    let base = server.uri();
    if base.contains('?') {
        format!("{base}&{options}")
    } else if base.ends_with('/') {
        format!("{base}?{options}")
    } else {
        format!("{base}/?{options}")
    }
}

async fn manager(server: &TestServer) -> PolyMongo {
    PolyMongo::builder()
        .uri(uri(server))
        .default_db("main")
        .build()
        .await
        .expect("manager builds")
}

/// Arms `failCommand` for this file's clients.
async fn fail_point(server: &TestServer, mode: Bson, mut data: Document) {
    data.insert("appName", APP);
    common::raw(server)
        .await
        .database("admin")
        .run_command(doc! { "configureFailPoint": "failCommand", "mode": mode, "data": data })
        .await
        .expect("configureFailPoint");
}

fn once() -> Bson {
    Bson::Document(doc! { "times": 1 })
}

fn command_code(err: &Error) -> Option<i32> {
    match &*err.driver_error()?.kind {
        mongodb::error::ErrorKind::Command(c) => Some(c.code),
        _ => None,
    }
}

async fn items_in(server: &TestServer, db: &str) -> u64 {
    common::raw(server)
        .await
        .database(db)
        .collection::<Document>("items")
        .count_documents(doc! {})
        .await
        .expect("count")
}

#[tokio::test]
async fn a_write_the_server_labels_retryable_is_retryable() {
    let Some(server) = server_for(&[Capability::FailPoints]).await else {
        return;
    };
    let poly = manager(&server).await;
    let h = poly.model::<Item>().db("fp_labelled").unwrap();
    h.run(|c| c.insert_one(Item { n: 0 })).await.unwrap();

    fail_point(
        &server,
        once(),
        doc! { "failCommands": ["insert"], "errorCode": 91, "errorLabels": ["RetryableWriteError"] },
    )
    .await;
    let err = h.run(|c| c.insert_one(Item { n: 1 })).await.unwrap_err();
    assert_eq!(command_code(&err), Some(91), "{err:?}");
    assert!(
        err.driver_error()
            .is_some_and(|e| e.contains_label("RetryableWriteError")),
        "{err:?}"
    );
    assert!(err.is_retryable(), "{err:?}");
    // The fail point refused the command before it ran: retrying is safe, and needed.
    assert_eq!(items_in(&server, "fp_labelled").await, 1);
    h.run(|c| c.insert_one(Item { n: 1 })).await.unwrap();
    assert_eq!(items_in(&server, "fp_labelled").await, 2);
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_write_refused_without_a_label_is_not_retryable() {
    let Some(server) = server_for(&[Capability::FailPoints]).await else {
        return;
    };
    let poly = manager(&server).await;
    let h = poly.model::<Item>().db("fp_unlabelled").unwrap();
    h.run(|c| c.insert_one(Item { n: 0 })).await.unwrap();

    // BadValue: the same write would be refused again.
    fail_point(
        &server,
        once(),
        doc! { "failCommands": ["insert"], "errorCode": 2 },
    )
    .await;
    let err = h.run(|c| c.insert_one(Item { n: 1 })).await.unwrap_err();
    assert_eq!(command_code(&err), Some(2), "{err:?}");
    assert!(!err.is_retryable(), "{err:?}");
    poly.close_all(Duration::from_secs(5)).await;
}

/// On servers from 4.4 on (wire version 9+) the server's `RetryableWriteError` label, not the
/// error code, says whether a write may be retried (the drivers' retryable-writes
/// specification); a write refused with ShutdownInProgress (91) and no label is therefore
/// not retryable, while a read refused the same way is (retryable reads go by code).
#[tokio::test]
async fn a_write_with_a_retryable_code_but_no_label_is_not_retryable() {
    let Some(server) = server_for(&[Capability::FailPoints]).await else {
        return;
    };
    let poly = manager(&server).await;
    let h = poly.model::<Item>().db("fp_code_only").unwrap();
    h.run(|c| c.insert_one(Item { n: 0 })).await.unwrap();
    fail_point(
        &server,
        once(),
        doc! { "failCommands": ["insert"], "errorCode": 91 },
    )
    .await;
    let err = h.run(|c| c.insert_one(Item { n: 1 })).await.unwrap_err();
    assert!(matches!(err, Error::WriteInterrupted { .. }), "{err:?}");
    assert_eq!(command_code(&err), Some(91), "{err:?}");
    assert!(!err.is_retryable(), "{err:?}");
    assert!(err.is_outcome_unknown(), "{err:?}");
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_read_refused_with_a_retryable_code_is_retryable() {
    let Some(server) = server_for(&[Capability::FailPoints]).await else {
        return;
    };
    let poly = manager(&server).await;
    let h = poly.model::<Item>().db("fp_read").unwrap();
    h.run(|c| c.insert_one(Item { n: 0 })).await.unwrap();
    fail_point(
        &server,
        once(),
        doc! { "failCommands": ["find"], "errorCode": 91 },
    )
    .await;
    let err = h.run(|c| c.find_one(doc! {})).await.unwrap_err();
    assert_eq!(command_code(&err), Some(91), "{err:?}");
    assert!(err.is_retryable(), "{err:?}");
    assert_eq!(
        h.run(|c| c.find_one(doc! {})).await.unwrap().map(|i| i.n),
        Some(0)
    );
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_connection_blocked_on_the_server_ends_other_waits_at_the_wait_queue_timeout() {
    let Some(server) = server_for(&[Capability::FailPoints]).await else {
        return;
    };
    let wait = Duration::from_millis(300);
    let block = Duration::from_millis(2000);
    let poly = PolyMongo::builder()
        .uri(uri(&server))
        .default_db("main")
        .max_pool_size(1)
        .wait_queue_timeout(wait)
        .build()
        .await
        .unwrap();
    let items = poly.model::<Item>();
    let h = items.db("fp_block").unwrap();
    h.run(|c| c.insert_one(Item { n: 7 })).await.unwrap();

    fail_point(
        &server,
        once(),
        doc! {
            "failCommands": ["find"],
            "blockConnection": true,
            "blockTimeMS": i32::try_from(block.as_millis()).unwrap(),
        },
    )
    .await;
    // The only connection goes to a find the server holds for `block`.
    let blocked_started = Instant::now();
    let held = items.db("fp_block").unwrap();
    let blocked = tokio::spawn(async move {
        let result = held.run(|c| c.find_one(doc! {})).await;
        (result, blocked_started.elapsed())
    });
    common::eventually(
        "the blocked find to hold the only connection",
        Duration::from_secs(5),
        || async { (poly.stats().general().primary.stats.in_use >= 1).then_some(()) },
    )
    .await;

    // Another operation waits for the connection and gives up at the bound, long before the
    // server lets the first one go.
    let started = Instant::now();
    let err = h.run(|c| c.find_one(doc! {})).await.unwrap_err();
    let gave_up = started.elapsed();
    match &err {
        Error::PoolExhausted {
            max_pool_size,
            waited,
            ..
        } => {
            assert_eq!(*max_pool_size, 1);
            assert!(*waited >= wait, "gave up after {waited:?}, before {wait:?}");
        }
        other => panic!("expected PoolExhausted, got {other:?}"),
    }
    assert!(
        gave_up < block - Duration::from_millis(500),
        "waited {gave_up:?}: the wait queue did not end at its timeout"
    );
    assert!(err.is_retryable(), "nothing was sent: {err:?}");

    // The blocked find really was held by the server (MongoDB then runs it; mongoeco fails it
    // with failCommand's default error: either is the server's answer, not the pool's).
    let (result, took) = blocked.await.unwrap();
    assert!(took >= block - Duration::from_millis(100), "{took:?}");
    match result {
        Ok(found) => assert_eq!(found.map(|i| i.n), Some(7)),
        Err(e) => assert!(command_code(&e).is_some(), "{e:?}"),
    }
    // And the pool is usable again at once.
    assert_eq!(
        h.run(|c| c.find_one(doc! {})).await.unwrap().map(|i| i.n),
        Some(7)
    );
    poly.close_all(Duration::from_secs(5)).await;
}
