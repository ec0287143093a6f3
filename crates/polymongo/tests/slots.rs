//! Connection slots reserved before any work is sent (`PolyMongo::reserve_connection`): the
//! bound on the pool's wait queue, the slot used by `run` instead of queueing again, and the
//! refusals.

mod common;

use std::time::Duration;

use mongodb::bson::{doc, Document};
use polymongo::{DbConfig, Error, Model, PolyMongo};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Item {
    n: i32,
}

impl Model for Item {
    const COLLECTION: &'static str = "items";
}

const SHORT: Duration = Duration::from_millis(100);

async fn manager(server: &polymongo_testkit::TestServer) -> PolyMongo {
    PolyMongo::builder()
        .uri(server.uri())
        .default_db("main")
        .max_pool_size(2)
        .wait_queue_timeout(SHORT)
        .db("solo", DbConfig::new().max_connections(1))
        .build()
        .await
        .expect("manager builds")
}

#[tokio::test]
async fn a_full_pool_refuses_a_reservation_after_the_wait_and_counts_it_in_the_queue() {
    let server = common::server().await;
    let poly = manager(&server).await;
    let first = poly.reserve_connection("a", SHORT).await.unwrap();
    let _second = poly.reserve_connection("b", SHORT).await.unwrap();
    assert_eq!(first.database_name(), "a");

    let queued = {
        let poly = poly.clone();
        tokio::spawn(async move { poly.reserve_connection("c", Duration::from_secs(30)).await })
    };
    common::eventually(
        "the third reservation to queue",
        Duration::from_secs(10),
        || async { (poly.stats().general().primary.stats.wait_queue == 1).then_some(()) },
    )
    .await;
    match poly.reserve_connection("d", SHORT).await {
        Err(Error::PoolExhausted {
            max_pool_size,
            waited,
            ..
        }) => {
            assert_eq!(max_pool_size, 2);
            assert!(waited >= SHORT, "{waited:?}");
        }
        other => panic!("expected PoolExhausted, got {other:?}"),
    }
    // A slot given back goes to the one waiting.
    drop(first);
    let third = queued.await.unwrap().unwrap();
    assert_eq!(third.database_name(), "c");
    assert_eq!(poly.stats().general().primary.stats.wait_queue, 0);
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn run_uses_the_slot_its_handle_holds_instead_of_queueing_behind_it() {
    let server = common::server().await;
    let poly = manager(&server).await;
    let raw = common::raw(&server).await;
    let held = poly.reserve_connection("work", SHORT).await.unwrap();
    let _other = poly.reserve_connection("work", SHORT).await.unwrap();
    let items = poly.model::<Item>();

    // Without the slot the pool is full: `run` gives up after the wait-queue timeout.
    let plain = items.db("work").unwrap();
    let refused = plain.run(|c| c.insert_one(Item { n: 0 })).await;
    assert!(
        matches!(refused, Err(Error::PoolExhausted { .. })),
        "{refused:?}"
    );

    // With it, the work runs in the slot it already holds, clones included.
    let holding = items.db("work").unwrap().with_connection_slot(&held);
    holding.run(|c| c.insert_one(Item { n: 1 })).await.unwrap();
    let clone = holding.clone();
    drop(holding);
    clone.run(|c| c.insert_one(Item { n: 2 })).await.unwrap();

    let stored: Vec<i32> = {
        use futures_util::TryStreamExt;
        let docs: Vec<Document> = raw
            .database("work")
            .collection::<Document>("items")
            .find(doc! {})
            .sort(doc! { "n": 1 })
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        docs.iter().map(|d| d.get_i32("n").unwrap()).collect()
    };
    assert_eq!(stored, vec![1, 2], "the refused insert was never sent");
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_slot_of_another_pool_is_not_taken() {
    let server = common::server().await;
    let poly = manager(&server).await;
    // `solo` has a dedicated pool of one connection; hold it.
    let _solo = poly.reserve_connection("solo", SHORT).await.unwrap();
    let main = poly.reserve_connection("main", SHORT).await.unwrap();
    let handle = poly
        .model::<Item>()
        .db("solo")
        .unwrap()
        .with_connection_slot(&main);
    let refused = handle.run(|c| c.find_one(doc! {})).await;
    assert!(
        matches!(
            refused,
            Err(Error::PoolExhausted {
                max_pool_size: 1,
                ..
            })
        ),
        "the main pool's slot does not stand for the dedicated pool's: {refused:?}"
    );
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_closed_manager_or_a_bad_name_refuses_a_reservation() {
    let server = common::server().await;
    let poly = manager(&server).await;
    assert!(matches!(
        poly.reserve_connection("a.b", SHORT).await,
        Err(Error::InvalidName { .. })
    ));
    poly.close_all(Duration::from_secs(5)).await;
    assert!(matches!(
        poly.reserve_connection("a", SHORT).await,
        Err(Error::Closed)
    ));
}

/// A reservation dropped at any point of its wait (cut by `timeout` at growing delays) leaves
/// the wait queue at once and takes no slot with it: afterwards the gauge is back at 0 and
/// both slots can be taken without waiting.
#[tokio::test]
async fn a_reservation_dropped_while_it_waits_leaves_the_queue_and_takes_nothing() {
    let server = common::server().await;
    let poly = manager(&server).await;
    let held = (
        poly.reserve_connection("a", SHORT).await.unwrap(),
        poly.reserve_connection("b", SHORT).await.unwrap(),
    );
    for delay_ms in [0u64, 1, 2, 5, 10, 20, 50] {
        let cut = tokio::time::timeout(
            Duration::from_millis(delay_ms),
            poly.reserve_connection("c", Duration::from_secs(30)),
        )
        .await;
        assert!(
            cut.is_err(),
            "the pool is full: the wait cannot end by itself"
        );
        assert_eq!(
            poly.stats().general().primary.stats.wait_queue,
            0,
            "after a cut at {delay_ms} ms"
        );
    }
    drop(held);
    // Both slots are free again: a reservation that may not wait at all gets each.
    let again = (
        poly.reserve_connection("a", Duration::ZERO).await.unwrap(),
        poly.reserve_connection("b", Duration::ZERO).await.unwrap(),
    );
    drop(again);
    poly.close_all(Duration::from_secs(5)).await;
}
