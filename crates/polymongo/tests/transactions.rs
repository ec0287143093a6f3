//! Transactions: commit, abort, panic, retry on transient errors, routing checks; effects
//! checked with a raw client.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use mongodb::bson::{doc, Document};
use mongodb::Client;
use polymongo::{DbConfig, Error, ErrorKind, Model, PolyMongo};
use polymongo_testkit::Capability;
use serde::{Deserialize, Serialize};

use common::{raw, server};

#[derive(Debug, Serialize, Deserialize)]
struct Order {
    total: i64,
}
impl Model for Order {
    const COLLECTION: &'static str = "orders";
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    credit: i64,
}
impl Model for Entry {
    const COLLECTION: &'static str = "entries";
}

/// Documents in `db.coll`, by a raw client. nx-27017 refuses `count` on a collection that does
/// not exist ("no such table", no code), so a missing collection counts 0 here.
async fn count(raw: &Client, db: &str, coll: &str) -> u64 {
    let db = raw.database(db);
    let names = db
        .list_collection_names()
        .await
        .expect("raw listCollections");
    if !names.iter().any(|n| n == coll) {
        return 0;
    }
    db.collection::<Document>(coll)
        .count_documents(doc! {})
        .await
        .expect("raw count")
}

#[derive(Debug)]
struct InsufficientFunds;

#[tokio::test]
async fn commits_across_two_collections_of_one_database() {
    let server = server().await;
    let poly = common::manager(&server, 4).await;
    let (orders, entries) = (poly.model::<Order>(), poly.model::<Entry>());
    let run = poly.transaction(["txn_commit"]).run(async move |s| {
        let id = orders
            .db("txn_commit")?
            .insert_one(Order { total: 40 })
            .session(&mut *s)
            .await?
            .inserted_id;
        entries
            .db("txn_commit")?
            .insert_one(Entry { credit: 40 })
            .session(&mut *s)
            .await?;
        Ok(id)
    });
    // Web handlers and spawned tasks need the transaction's future to be `Send`: it is, when
    // the closure owns what it captures (`async move`, model handles moved in). Borrowing
    // captures also run (the other tests) but hit rustc's higher-ranked `Send` limitation.
    fn assert_send<T: Send>(_: &T) {}
    assert_send(&run);
    let id = run.await.unwrap();
    let raw = raw(&server).await;
    let stored = raw
        .database("txn_commit")
        .collection::<Document>("orders")
        .find_one(doc! { "_id": id })
        .await
        .unwrap();
    // nx-27017 stores small Int64 values as Int32: compare the number, not the type.
    let total = stored.unwrap().get("total").cloned();
    assert!(
        matches!(
            total,
            Some(mongodb::bson::Bson::Int32(40) | mongodb::bson::Bson::Int64(40))
        ),
        "{total:?}"
    );
    assert_eq!(count(&raw, "txn_commit", "entries").await, 1);
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn an_error_aborts_and_leaves_nothing() {
    let server = server().await;
    let poly = common::manager(&server, 4).await;
    let (orders, entries) = (poly.model::<Order>(), poly.model::<Entry>());
    let calls = AtomicU32::new(0);
    let err = poly
        .transaction(["txn_abort"])
        .run(async |s| {
            calls.fetch_add(1, Ordering::SeqCst);
            orders
                .db("txn_abort")?
                .insert_one(Order { total: 10 })
                .session(&mut *s)
                .await?;
            entries
                .db("txn_abort")?
                .insert_one(Entry { credit: 10 })
                .session(&mut *s)
                .await?;
            Err::<(), _>(mongodb::error::Error::custom(InsufficientFunds))
        })
        .await
        .unwrap_err();
    // The application's reason comes back, and the closure ran once (not transient).
    let reason = err
        .driver_error()
        .and_then(|e| e.get_custom::<InsufficientFunds>());
    assert!(reason.is_some(), "{err:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let raw = raw(&server).await;
    assert_eq!(count(&raw, "txn_abort", "orders").await, 0);
    assert_eq!(count(&raw, "txn_abort", "entries").await, 0);

    // A polymongo error returned with `?` inside comes back as it was.
    let err = poly
        .transaction(["txn_abort"])
        .run(async |_| {
            orders.db("no/slash")?;
            Ok(())
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidName { .. }), "{err:?}");
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_panic_aborts_and_the_manager_keeps_working() {
    let server = server().await;
    let poly = common::manager(&server, 4).await;
    let orders = poly.model::<Order>();
    let run = poly.transaction(["txn_panic"]).run(async |s| {
        orders
            .db("txn_panic")?
            .insert_one(Order { total: 1 })
            .session(&mut *s)
            .await?;
        if std::hint::black_box(true) {
            panic!("bug in the closure");
        }
        Ok(())
    });
    let panic = std::panic::AssertUnwindSafe(run).catch_unwind().await;
    let payload = panic.expect_err("the panic continues from run");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"bug in the closure"));
    let raw = raw(&server).await;
    assert_eq!(count(&raw, "txn_panic", "orders").await, 0);
    // The next transaction and a plain operation go through.
    poly.transaction(["txn_panic"])
        .run(async |s| {
            orders
                .db("txn_panic")?
                .insert_one(Order { total: 2 })
                .session(&mut *s)
                .await?;
            Ok(())
        })
        .await
        .unwrap();
    orders
        .db("txn_panic")
        .unwrap()
        .insert_one(Order { total: 3 })
        .await
        .unwrap();
    assert_eq!(count(&raw, "txn_panic", "orders").await, 2);
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn databases_on_different_pools_are_refused_before_anything_is_sent() {
    let (a, b) = (server().await, server().await);
    let poly = PolyMongo::builder()
        .uri(a.uri())
        .default_db("main")
        .db(
            "elsewhere",
            DbConfig::new().uri(b.uri().replacen("mongodb://", "mongodb://u:Tx5ecret@", 1)),
        )
        .db("dedicated", DbConfig::new().max_connections(2))
        .build()
        .await
        .unwrap();
    let ran = AtomicU32::new(0);
    for (list, first, second) in [
        (&["main", "also_main", "elsewhere"][..], "main", "elsewhere"),
        (&["main", "dedicated"][..], "main", "dedicated"),
        (&["dedicated", "also_main"][..], "dedicated", "also_main"),
    ] {
        let err = poly
            .transaction(list.iter().copied())
            .run(async |_| {
                ran.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
            .await
            .unwrap_err();
        match &err {
            Error::CrossPool {
                first: f,
                second: s,
                ..
            } => assert_eq!((f.as_str(), s.as_str()), (first, second)),
            other => panic!("expected CrossPool, got {other:?}"),
        }
        assert_eq!(err.kind(), ErrorKind::Transaction);
        assert!(err.to_string().contains(first) && err.to_string().contains(second));
        assert!(!format!("{err} {err:?}").contains("Tx5ecret"), "{err:?}");
    }
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    // Nothing was sent: neither server saw a connection from the manager.
    assert_eq!(poly.live_clients(), 0, "no client was even created");
    assert_eq!(common::connections(&a).await, 0);
    assert_eq!(common::connections(&b).await, 0);
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_transient_error_reruns_the_closure_and_commits_once() {
    // The closure's first attempt fails with an error the driver labels
    // `TransientTransactionError`: a network error inside a transaction. It is provoked
    // honestly, by restarting the server between two operations of the first attempt.
    let Some(mut server) =
        polymongo_testkit::server_for(&[Capability::RestartKeepsData, Capability::Transactions])
            .await
    else {
        return;
    };
    let poly = common::manager(&server, 2).await;
    let orders = poly.model::<Order>();
    // A first, ordinary write creates the database and warms the pool.
    orders
        .db("txn_retry")
        .unwrap()
        .insert_one(Order { total: 0 })
        .await
        .unwrap();
    let attempts = Arc::new(AtomicU32::new(0));
    let restart = tokio::sync::Mutex::new(Some(&mut server));
    let committed = poly
        .transaction(["txn_retry"])
        .run(async |s| {
            let attempt = attempts.fetch_add(1, Ordering::SeqCst) + 1;
            if let Some(server) = restart.lock().await.take() {
                server.kill().await.expect("kill");
                server.restart().await.expect("restart");
            }
            orders
                .db("txn_retry")?
                .insert_one(Order { total: 1 })
                .session(&mut *s)
                .await?;
            Ok(attempt)
        })
        .await;
    let raw = raw(&server).await;
    let ones = raw
        .database("txn_retry")
        .collection::<Document>("orders")
        .count_documents(doc! { "total": 1 })
        .await
        .unwrap();
    assert_eq!(ones, 1, "committed exactly once: {committed:?}");
    assert!(committed.unwrap() >= 2, "the closure ran again");
    poly.close_all(Duration::from_secs(5)).await;
}

/// A server with isolated transactions that may span databases (a replica set, mongos or
/// mongoeco), or `None` when there is none here (reported as a skip).
async fn cross_database_server() -> Option<polymongo_testkit::TestServer> {
    polymongo_testkit::server_for(&[
        Capability::CrossDatabaseTransactions,
        Capability::TransactionIsolation,
    ])
    .await
}

#[tokio::test]
async fn two_databases_commit_together_unseen_until_the_commit() {
    let Some(server) = cross_database_server().await else {
        return;
    };
    let poly = common::manager(&server, 4).await;
    let (orders, entries) = (poly.model::<Order>(), poly.model::<Entry>());
    let observer = raw(&server).await;
    let seen_inside = poly
        .transaction(["txn_shop", "txn_ledger"])
        .run(async |s| {
            orders
                .db("txn_shop")?
                .insert_one(Order { total: 5 })
                .session(&mut *s)
                .await?;
            entries
                .db("txn_ledger")?
                .insert_one(Entry { credit: 5 })
                .session(&mut *s)
                .await?;
            // A second client, outside the transaction, sees neither write yet.
            Ok((
                count(&observer, "txn_shop", "orders").await,
                count(&observer, "txn_ledger", "entries").await,
            ))
        })
        .await
        .unwrap();
    assert_eq!(seen_inside, (0, 0), "uncommitted writes were visible");
    assert_eq!(count(&observer, "txn_shop", "orders").await, 1);
    assert_eq!(count(&observer, "txn_ledger", "entries").await, 1);
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn two_databases_abort_together_and_leave_nothing() {
    let Some(server) = cross_database_server().await else {
        return;
    };
    let observer = raw(&server).await;
    // Both collections exist with one document each, so an abort must leave exactly that.
    for (db, coll) in [("txn_abort_a", "orders"), ("txn_abort_b", "entries")] {
        observer
            .database(db)
            .collection::<Document>(coll)
            .insert_one(doc! { "before": true })
            .await
            .unwrap();
    }
    let poly = common::manager(&server, 4).await;
    let (orders, entries) = (poly.model::<Order>(), poly.model::<Entry>());
    let err = poly
        .transaction(["txn_abort_a", "txn_abort_b"])
        .run(async |s| {
            orders
                .db("txn_abort_a")?
                .insert_one(Order { total: 7 })
                .session(&mut *s)
                .await?;
            entries
                .db("txn_abort_b")?
                .insert_one(Entry { credit: 7 })
                .session(&mut *s)
                .await?;
            Err::<(), _>(mongodb::error::Error::custom(InsufficientFunds))
        })
        .await
        .unwrap_err();
    assert!(
        err.driver_error()
            .and_then(|e| e.get_custom::<InsufficientFunds>())
            .is_some(),
        "{err:?}"
    );
    assert_eq!(count(&observer, "txn_abort_a", "orders").await, 1);
    assert_eq!(count(&observer, "txn_abort_b", "entries").await, 1);
    poly.close_all(Duration::from_secs(5)).await;
}

/// Arms `failCommand` once on `server` for `commands`, with `code` and `labels`.
async fn fail_once(
    server: &polymongo_testkit::TestServer,
    commands: &[&str],
    code: i32,
    labels: &[&str],
) {
    raw(server)
        .await
        .database("admin")
        .run_command(doc! {
            "configureFailPoint": "failCommand",
            "mode": { "times": 1 },
            "data": { "failCommands": commands, "errorCode": code, "errorLabels": labels },
        })
        .await
        .expect("configureFailPoint");
}

#[tokio::test]
async fn a_transient_error_label_from_the_server_reruns_the_closure_once() {
    let Some(server) =
        polymongo_testkit::server_for(&[Capability::FailPoints, Capability::Transactions]).await
    else {
        return;
    };
    let poly = common::manager(&server, 2).await;
    let orders = poly.model::<Order>();
    orders
        .db("txn_transient")
        .unwrap()
        .insert_one(Order { total: 0 })
        .await
        .unwrap();
    // The insert inside the transaction fails once as a write conflict would on MongoDB.
    fail_once(&server, &["insert"], 112, &["TransientTransactionError"]).await;
    let attempts = AtomicU32::new(0);
    let committed = poly
        .transaction(["txn_transient"])
        .run(async |s| {
            let attempt = attempts.fetch_add(1, Ordering::SeqCst) + 1;
            orders
                .db("txn_transient")?
                .insert_one(Order { total: 1 })
                .session(&mut *s)
                .await?;
            Ok(attempt)
        })
        .await
        .unwrap();
    assert_eq!(
        committed, 2,
        "the closure ran again after the transient error"
    );
    let raw = raw(&server).await;
    let ones = raw
        .database("txn_transient")
        .collection::<Document>("orders")
        .count_documents(doc! { "total": 1 })
        .await
        .unwrap();
    assert_eq!(ones, 1, "committed exactly once");
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn an_unknown_commit_result_retries_the_commit_not_the_closure() {
    let Some(server) =
        polymongo_testkit::server_for(&[Capability::FailPoints, Capability::Transactions]).await
    else {
        return;
    };
    let poly = common::manager(&server, 2).await;
    let orders = poly.model::<Order>();
    orders
        .db("txn_commit_retry")
        .unwrap()
        .insert_one(Order { total: 0 })
        .await
        .unwrap();
    // The commit fails once with the label a primary step-down gives it.
    fail_once(
        &server,
        &["commitTransaction"],
        91,
        &["UnknownTransactionCommitResult"],
    )
    .await;
    let attempts = AtomicU32::new(0);
    poly.transaction(["txn_commit_retry"])
        .run(async |s| {
            attempts.fetch_add(1, Ordering::SeqCst);
            orders
                .db("txn_commit_retry")?
                .insert_one(Order { total: 1 })
                .session(&mut *s)
                .await?;
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(attempts.load(Ordering::SeqCst), 1, "the closure ran once");
    let raw = raw(&server).await;
    let ones = raw
        .database("txn_commit_retry")
        .collection::<Document>("orders")
        .count_documents(doc! { "total": 1 })
        .await
        .unwrap();
    assert_eq!(ones, 1, "committed exactly once");
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn the_deadline_abandons_and_aborts_a_slow_transaction() {
    let server = server().await;
    let poly = common::manager(&server, 4).await;
    let orders = poly.model::<Order>();
    let started = tokio::time::Instant::now();
    let err = poly
        .transaction(["txn_deadline"])
        .timeout(Duration::from_millis(300))
        .run(async |s| {
            orders
                .db("txn_deadline")?
                .insert_one(Order { total: 9 })
                .session(&mut *s)
                .await?;
            // Work that outlives the deadline.
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(())
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Timeout { after, .. } if after == Duration::from_millis(300)),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    // The driver aborts the abandoned transaction when its session is dropped.
    let raw = raw(&server).await;
    common::eventually(
        "the abandoned insert to be rolled back",
        Duration::from_secs(10),
        || async { (count(&raw, "txn_deadline", "orders").await == 0).then_some(()) },
    )
    .await;
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn transaction_options_reach_the_driver() {
    let server = server().await;
    let poly = common::manager(&server, 4).await;
    let orders = poly.model::<Order>();
    // MongoDB runs transactions on the primary only: the driver refuses another read
    // preference at the first operation, which shows the option was applied.
    let err = poly
        .transaction(["txn_options"])
        .read_preference(mongodb::options::ReadPreference::Secondary {
            options: Default::default(),
        })
        .max_commit_time(Duration::from_secs(5))
        .run(async |s| {
            orders
                .db("txn_options")?
                .find_one(doc! {})
                .session(&mut *s)
                .await?;
            Ok(())
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("primary"), "{err}");
    poly.close_all(Duration::from_secs(5)).await;
}
