//! The noisy-neighbour guard: `max_concurrent_ops` on a database of a shared pool.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mongodb::bson::doc;
use polymongo::{DbConfig, Error, Model, PolyMongo};
use serde::{Deserialize, Serialize};

use common::server;

#[derive(Debug, Serialize, Deserialize)]
struct Row {
    n: i64,
}
impl Model for Row {
    const COLLECTION: &'static str = "rows";
}

#[tokio::test]
async fn no_more_than_the_cap_run_at_once_and_the_rest_complete_after() {
    let server = server().await;
    let poly = PolyMongo::builder()
        .uri(server.uri())
        .max_pool_size(10)
        .db("noisy", DbConfig::new().max_concurrent_ops(2))
        .build()
        .await
        .unwrap();
    let rows = poly.model::<Row>();
    rows.db("noisy")
        .unwrap()
        .insert_many((0..200).map(|n| Row { n }))
        .await
        .unwrap();

    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (rows, running, peak) = (rows.clone(), Arc::clone(&running), Arc::clone(&peak));
        tasks.spawn(async move {
            let h = rows.acquire("noisy").await?;
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            // A real, slowish aggregation over the whole collection while holding the slot.
            let mut total = 0;
            for _ in 0..5 {
                let mut cursor = h
                    .aggregate([doc! { "$group": { "_id": null, "s": { "$sum": "$n" } } }])
                    .await?;
                while cursor.advance().await? {
                    total += 1;
                }
            }
            running.fetch_sub(1, Ordering::SeqCst);
            drop(h);
            Ok::<_, Error>(total)
        });
    }
    let mut done = 0;
    while let Some(r) = tasks.join_next().await {
        assert_eq!(r.unwrap().unwrap(), 5);
        done += 1;
    }
    assert_eq!(done, 8, "every waiting operation completed");
    assert_eq!(
        peak.load(Ordering::SeqCst),
        2,
        "the cap was reached and never passed"
    );
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_saturated_database_refuses_or_times_out_while_others_go_on() {
    let server = server().await;
    let poly = PolyMongo::builder()
        .uri(server.uri())
        .db(
            "capped",
            DbConfig::new()
                .max_concurrent_ops(2)
                .queue_timeout(Duration::from_millis(50)),
        )
        .build()
        .await
        .unwrap();
    let rows = poly.model::<Row>();
    let first = rows.db("capped").unwrap();
    let second = rows.acquire("capped").await.unwrap();
    let shared = second.clone(); // a clone shares its original's slot

    match rows.db("capped") {
        Err(Error::Saturated {
            database,
            limit,
            waited,
        }) => {
            assert_eq!(
                (database.as_str(), limit, waited),
                ("capped", 2, Duration::ZERO)
            );
        }
        other => panic!("expected Saturated, got {other:?}"),
    }
    let err = rows.acquire("capped").await.unwrap_err();
    assert!(
        matches!(&err, Error::Saturated { waited, .. } if *waited >= Duration::from_millis(50)),
        "{err:?}"
    );
    assert!(err.is_retryable());

    // Other databases of the same pool are not held back.
    rows.db("uncapped")
        .unwrap()
        .insert_one(Row { n: 1 })
        .await
        .unwrap();

    drop(second);
    assert!(rows.db("capped").is_err(), "the clone still holds the slot");
    drop(shared);
    let third = rows.acquire("capped").await.unwrap();
    third.insert_one(Row { n: 2 }).await.unwrap();
    drop((first, third));
    poly.close_all(Duration::from_secs(5)).await;
}
