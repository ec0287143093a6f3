//! Dedicated pools closed when idle (TTL), reopened on use, bounded in number (LRU), and never
//! closed under a handle or a cursor — checked against the server's own connection count.

mod common;

use std::time::Duration;

use futures_util::TryStreamExt;
use mongodb::bson::{doc, Document};
use polymongo::{DbConfig, Model, PolyMongo};
use serde::{Deserialize, Serialize};

use common::{connections, eventually, raw, server};

#[derive(Debug, Serialize, Deserialize)]
struct Item {
    n: i64,
}
impl Model for Item {
    const COLLECTION: &'static str = "items";
}

const TTL: Duration = Duration::from_millis(100);

#[tokio::test]
async fn an_idle_dedicated_pool_closes_after_its_ttl_and_reopens_on_use() {
    let (a, b) = (server().await, server().await);
    let baseline_b = connections(&b).await;
    let poly = PolyMongo::builder()
        .uri(a.uri())
        .db(
            "cache",
            DbConfig::new()
                .uri(b.uri())
                .max_connections(2)
                .auto_close(TTL),
        )
        .build()
        .await
        .unwrap();
    let items = poly.model::<Item>();
    items
        .db("cache")
        .unwrap()
        .insert_one(Item { n: 1 })
        .await
        .unwrap();
    assert!(connections(&b).await > baseline_b);
    assert_eq!(poly.open_dedicated_pools(), 1);

    // Idle: the reaper closes it and the server sees its connections go.
    eventually(
        "the idle pool to close",
        Duration::from_secs(10),
        || async {
            (poly.open_dedicated_pools() == 0 && connections(&b).await == baseline_b).then_some(())
        },
    )
    .await;
    eventually(
        "the closed client to be shut down",
        Duration::from_secs(10),
        || async { (poly.live_clients() == 0).then_some(()) },
    )
    .await;

    // Next use reopens it, transparently.
    let n = items
        .db("cache")
        .unwrap()
        .count_documents(doc! {})
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(poly.open_dedicated_pools(), 1);
    assert!(connections(&b).await > baseline_b);
    poly.close_all(Duration::from_secs(5)).await;
    assert_eq!(poly.live_clients(), 0);
}

#[tokio::test]
async fn a_live_handle_keeps_its_pool_open_past_the_ttl() {
    let a = server().await;
    let poly = PolyMongo::builder()
        .uri(a.uri())
        .db(
            "busy",
            DbConfig::new()
                .max_connections(2)
                .auto_close(Duration::from_millis(20)),
        )
        .build()
        .await
        .unwrap();
    let handle = poly.model::<Item>().db("busy").unwrap();
    handle.insert_one(Item { n: 1 }).await.unwrap();
    // The condition under test is "nothing happens during many TTLs", so time has to pass.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(poly.open_dedicated_pools(), 1, "closed under a live handle");
    }
    handle.insert_one(Item { n: 2 }).await.unwrap();
    drop(handle);
    eventually(
        "the pool to close once the handle is gone",
        Duration::from_secs(10),
        || async { (poly.open_dedicated_pools() == 0).then_some(()) },
    )
    .await;
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_cursor_outlives_the_idle_close_of_its_pool() {
    let a = server().await;
    let poly = PolyMongo::builder()
        .uri(a.uri())
        .db(
            "cursor",
            DbConfig::new()
                .max_connections(2)
                .auto_close(Duration::from_millis(30)),
        )
        .build()
        .await
        .unwrap();
    let handle = poly.model::<Item>().db("cursor").unwrap();
    handle
        .insert_many((0..10).map(|n| Item { n }))
        .await
        .unwrap();
    let mut cursor = handle.find(doc! {}).batch_size(2).await.unwrap();
    let first = cursor.try_next().await.unwrap().unwrap();
    drop(handle);
    eventually(
        "the pool to close for idleness",
        Duration::from_secs(10),
        || async { (poly.open_dedicated_pools() == 0).then_some(()) },
    )
    .await;
    // The closing client waits for the cursor: every document still arrives.
    let mut seen = vec![first.n];
    while let Some(item) = cursor.try_next().await.unwrap() {
        seen.push(item.n);
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..10).collect::<Vec<_>>());
    drop(cursor);
    eventually(
        "the retired client to finish",
        Duration::from_secs(10),
        || async { (poly.live_clients() == 0).then_some(()) },
    )
    .await;
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_thousand_operations_racing_a_20ms_ttl_see_no_error_and_leave_no_client() {
    let a = server().await;
    let poly = PolyMongo::builder().uri(a.uri()).build().await.unwrap();
    let names: Vec<String> = (0..20).map(|i| format!("race_ttl_{i:02}")).collect();
    poly.scale()
        .set_db(
            &names,
            DbConfig::new()
                .max_connections(2)
                .auto_close(Duration::from_millis(20)),
        )
        .await
        .unwrap();
    let items = poly.model::<Item>();
    let mut errors = Vec::new();
    // Ten waves of 100 operations with pauses longer than the TTL between them, so every pool
    // closes and reopens again and again; within a wave, start times spread over 36 ms, so
    // closes also race operations starting on the same database.
    for wave in 0..10i64 {
        let mut tasks = tokio::task::JoinSet::new();
        for j in 0..100i64 {
            let i = wave * 100 + j;
            let (items, db) = (items.clone(), names[i as usize % 20].clone());
            tasks.spawn(async move {
                tokio::time::sleep(Duration::from_millis((j % 10) as u64 * 4)).await;
                let h = items.db(&db)?;
                h.insert_one(Item { n: i }).await?;
                h.find_one(doc! { "n": i }).await?;
                Ok::<_, polymongo::Error>(())
            });
        }
        while let Some(r) = tasks.join_next().await {
            if let Err(e) = r.unwrap() {
                errors.push(e.to_string());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        errors.is_empty(),
        "{} errors, first: {:?}",
        errors.len(),
        errors.first()
    );
    let check = raw(&a).await;
    let mut total = 0;
    for db in &names {
        total += check
            .database(db)
            .collection::<Document>("items")
            .count_documents(doc! {})
            .await
            .unwrap();
    }
    assert_eq!(total, 1000, "every acknowledged write is there");
    check.shutdown().await;
    poly.close_all(Duration::from_secs(5)).await;
    assert_eq!(poly.live_clients(), 0, "a client outlived close_all");
}

#[tokio::test]
async fn no_more_than_max_dedicated_pools_are_open_at_once() {
    let a = server().await;
    let poly = PolyMongo::builder()
        .uri(a.uri())
        .max_dedicated_pools(3)
        .build()
        .await
        .unwrap();
    let names: Vec<String> = (0..10).map(|i| format!("lru_{i}")).collect();
    poly.scale()
        .set_db(&names, DbConfig::new().max_connections(1))
        .await
        .unwrap();
    let items = poly.model::<Item>();
    let mut peak = 0;
    for round in 0..5 {
        for db in &names {
            items
                .db(db)
                .unwrap()
                .insert_one(Item { n: round })
                .await
                .unwrap();
            peak = peak.max(poly.open_dedicated_pools());
        }
    }
    assert_eq!(peak, 3, "10 databases round-robin under a bound of 3");
    let check = raw(&a).await;
    for db in &names {
        let n = check
            .database(db)
            .collection::<Document>("items")
            .count_documents(doc! {})
            .await
            .unwrap();
        assert_eq!(n, 5, "{db}");
    }
    check.shutdown().await;
    poly.close_all(Duration::from_secs(5)).await;
    assert_eq!(poly.live_clients(), 0);
}

/// Highest server-side connection count on `server` while `work` runs.
async fn peak_connections<F: std::future::Future<Output = ()>>(
    server: &polymongo_testkit::TestServer,
    work: F,
) -> i64 {
    let uri = server.uri().to_owned();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = std::sync::Arc::clone(&done);
        tokio::spawn(async move {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(polymongo_testkit::connection_count(&uri).await.unwrap());
                tokio::task::yield_now().await;
            }
            peak
        })
    };
    work.await;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    sampler.await.unwrap()
}

async fn load(items: &polymongo::ModelHandle<Item>, db: &str) {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let h = items.db(db).unwrap();
        tasks.spawn(async move {
            h.insert_one(Item { n: i }).await.unwrap();
            h.count_documents(doc! {}).await.unwrap();
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
}

#[tokio::test]
async fn a_resized_pool_reopens_at_its_new_size_and_reports_it() {
    let (a, b) = (server().await, server().await);
    let ttl = Duration::from_secs(60);
    let poly = PolyMongo::builder()
        .uri(a.uri())
        .db(
            "resized",
            DbConfig::new()
                .uri(b.uri())
                .max_connections(1)
                .auto_close(ttl),
        )
        .build()
        .await
        .unwrap();
    let items = poly.model::<Item>();
    let keep = items.db("resized").unwrap();
    let one = peak_connections(&b, load(&items, "resized")).await;
    assert!(
        one <= 1 + common::MONITOR_CONNECTIONS,
        "pool of 1 used {one}"
    );
    assert_eq!(poly.stats().general().dedicated[0].stats.max_size, 1);

    // Resized while open (a handle is alive): the open client of 1 is closed (gracefully, in
    // the background) and the next use opens a client of 4; the pool never reports a size it
    // does not have.
    poly.scale()
        .set_db(
            &["resized"],
            DbConfig::new()
                .uri(b.uri())
                .max_connections(4)
                .auto_close(ttl),
        )
        .await
        .unwrap();
    assert_eq!(poly.stats().general().dedicated[0].stats.max_size, 4);
    eventually(
        "the resized pool's old client to shut down",
        Duration::from_secs(10),
        || async { (poly.live_clients() == 0).then_some(()) },
    )
    .await;
    drop(keep);
    let four = peak_connections(&b, load(&items, "resized")).await;
    assert!(
        four <= 4 + common::MONITOR_CONNECTIONS,
        "pool of 4 used {four}"
    );
    assert!(four > one, "the reopened pool is larger: {four} vs {one}");
    assert_eq!(poly.stats().general().dedicated[0].stats.max_size, 4);
    assert_eq!(poly.live_clients(), 1, "one client, of the new size");
    poly.close_all(Duration::from_secs(5)).await;
}

#[test]
fn the_reaper_and_the_hook_dispatcher_stop_with_the_manager() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = server().await;
        let before = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        // Cold start: no client, so the manager's only tasks are its housekeeper and its hook
        // dispatcher.
        let poly = common::manager(&server, 2).await;
        let metrics = tokio::runtime::Handle::current().metrics();
        assert_eq!(
            metrics.num_alive_tasks(),
            before + 2,
            "reaper and dispatcher run"
        );
        drop(poly);
        eventually("both tasks to end", Duration::from_secs(10), || async {
            (metrics.num_alive_tasks() == before).then_some(())
        })
        .await;
    });
}
