//! The stats API against the server's own figures.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mongodb::bson::{doc, Document};
use polymongo::{DbConfig, Model, PolyMongo, PoolKind, MAX_LISTED_DATABASES};
use serde::{Deserialize, Serialize};

use common::{connections, eventually, manager, raw, server};

#[derive(Debug, Serialize, Deserialize)]
struct Doc {
    n: i64,
}
impl Model for Doc {
    const COLLECTION: &'static str = "docs";
}

/// Server connections not in any pool: one or two monitors per live client.
fn monitors_ok(server_count: i64, pooled: i64, live_clients: usize) -> bool {
    let extra = server_count - pooled;
    (live_clients as i64..=2 * live_clients as i64).contains(&extra)
}

#[tokio::test]
async fn general_totals_agree_with_the_server_at_rest_and_under_load() {
    const POOL: u32 = 5;
    let server = server().await;
    let baseline = connections(&server).await;
    let poly = manager(&server, POOL).await;
    let docs = poly.model::<Doc>();
    docs.db("load")
        .unwrap()
        .insert_many((0..50).map(|n| Doc { n }))
        .await
        .unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..50 {
        let (docs, done) = (docs.clone(), Arc::clone(&done));
        tasks.spawn(async move {
            while !done.load(Ordering::Relaxed) {
                docs.db("load")
                    .unwrap()
                    .find_one(doc! { "n": t })
                    .await
                    .unwrap();
            }
        });
    }
    // Under load: the pool is full and busy, and its figures match the server's count.
    eventually(
        "a full, busy pool matching the server",
        Duration::from_secs(20),
        || async {
            let before = connections(&server).await - baseline;
            let g = poly.stats().general();
            let after = connections(&server).await - baseline;
            let p = &g.primary.stats;
            (before == after
                && p.total == POOL as i64
                && p.in_use + p.wait_queue > 0
                && g.total_connections_across_pools == p.total
                && monitors_ok(after, p.total, g.live_clients))
            .then_some(())
        },
    )
    .await;
    done.store(true, Ordering::Relaxed);
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }

    // At rest.
    let g = poly.stats().general();
    let p = &g.primary.stats;
    assert_eq!((p.in_use, p.wait_queue), (0, 0), "{p:?}");
    assert_eq!(p.available, p.total);
    assert_eq!((p.max_size, p.min_size), (POOL, 0));
    assert!(p.checkouts > 50 && p.checkout_failures == 0, "{p:?}");
    let at_rest = connections(&server).await - baseline;
    assert!(
        monitors_ok(at_rest, p.total, g.live_clients),
        "server {at_rest}, pooled {}",
        p.total
    );
    assert_eq!(g.total_active_pools, 1);
    assert_eq!(g.primary.databases, ["load"]);

    // Closed: no connections left, and the server agrees.
    poly.close_all(Duration::from_secs(5)).await;
    let g = poly.stats().general();
    assert_eq!(
        (
            g.total_connections_across_pools,
            g.total_active_pools,
            g.live_clients
        ),
        (0, 0, 0)
    );
    eventually(
        "the server to see every connection closed",
        Duration::from_secs(10),
        || async { (connections(&server).await == baseline).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn checkouts_count_operations_exactly() {
    let server = server().await;
    let poly = manager(&server, 2).await;
    let h = poly.model::<Doc>().db("exact").unwrap();
    for n in 0..25 {
        h.insert_one(Doc { n }).await.unwrap();
    }
    let before = poly.stats().general().primary.stats.checkouts;
    for n in 0..10 {
        h.find_one(doc! { "n": n }).await.unwrap();
    }
    let after = poly.stats().general().primary.stats.checkouts;
    assert_eq!(after - before, 10);
    assert!(before >= 25);
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn general_lists_clusters_dedicated_pools_and_databases() {
    let (a, b) = (server().await, server().await);
    let poly = PolyMongo::builder()
        .uri(a.uri())
        .db("reports", DbConfig::new().uri(b.uri()))
        .db(
            "cache",
            DbConfig::new()
                .max_connections(3)
                .auto_close(Duration::from_secs(60)),
        )
        .build()
        .await
        .unwrap();
    let docs = poly.model::<Doc>();
    for i in 0..(MAX_LISTED_DATABASES + 20) {
        docs.db(&format!("t_{i:03}"))
            .unwrap()
            .insert_one(Doc { n: 1 })
            .await
            .unwrap();
    }
    docs.db("reports")
        .unwrap()
        .insert_one(Doc { n: 2 })
        .await
        .unwrap();
    let cache = docs.db("cache").unwrap();
    cache.insert_one(Doc { n: 3 }).await.unwrap();

    let g = poly.stats().general();
    assert_eq!(g.primary.database_count, MAX_LISTED_DATABASES + 20);
    assert_eq!(g.primary.databases.len(), MAX_LISTED_DATABASES);
    assert_eq!(g.primary.databases[0], "t_000");
    assert_eq!(g.other_clusters.len(), 1);
    assert_eq!(g.other_clusters[0].databases, ["reports"]);
    assert_eq!(g.dedicated.len(), 1);
    let d = &g.dedicated[0];
    assert_eq!(d.kind, PoolKind::Dedicated);
    assert_eq!(d.databases, ["cache"]);
    assert_eq!(d.stats.max_size, 3);
    assert!(d.idle_ms.is_some());
    let config = d.config.as_ref().unwrap();
    assert_eq!(
        (config.max_connections, config.auto_close, config.ttl_ms),
        (Some(3), true, Some(60_000))
    );
    assert_eq!(g.total_active_pools, 3);
    assert_eq!(g.live_clients, 3);
    assert_eq!(
        g.total_connections_across_pools,
        g.primary.stats.total + g.other_clusters[0].stats.total + d.stats.total
    );
    let json = serde_json::to_string(&g).unwrap();
    assert!(json.contains("\"dedicated\""), "{json}");
    drop(cache);
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn db_stats_and_database_list_match_what_the_server_reports() {
    let server = server().await;
    let poly = manager(&server, 2).await;
    let docs = poly.model::<Doc>();
    docs.db("sized")
        .unwrap()
        .insert_many((0..30).map(|n| Doc { n }))
        .await
        .unwrap();
    poly.database("sized")
        .unwrap()
        .collection::<Document>("other")
        .insert_many((0..7).map(|n| doc! { "k": n, "pad": "x".repeat(100) }))
        .await
        .unwrap();
    docs.db("listed")
        .unwrap()
        .insert_one(Doc { n: 1 })
        .await
        .unwrap();

    let s = poly.stats().db("sized").await.unwrap();
    let check = raw(&server).await;
    let theirs = check
        .database("sized")
        .run_command(doc! { "dbStats": 1 })
        .await
        .unwrap();
    let their_size = theirs
        .get_i64("dataSize")
        .or_else(|_| theirs.get_i32("dataSize").map(i64::from))
        .unwrap_or(0);
    assert_eq!(s.data_size, their_size);
    let names: Vec<_> = s
        .collections
        .iter()
        .map(|c| (c.name.as_str(), c.documents))
        .collect();
    assert_eq!(names, [("docs", 30), ("other", 7)]);
    assert!(s.collections[1].size > 0);
    assert_eq!(s.pool_kind, PoolKind::Shared);
    assert!(s.config.is_none());

    let mine: Vec<String> = poly
        .stats()
        .list_databases()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    let mut theirs = check.list_database_names().await.unwrap();
    theirs.sort();
    assert_eq!(mine, theirs);
    assert!(mine.contains(&"listed".to_owned()));
    check.shutdown().await;
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn stats_never_show_a_password() {
    let server = server().await;
    let poly = manager(&server, 2).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    poly.scale()
        .set_db(
            &["secretive"],
            DbConfig::new()
                .uri(format!("mongodb://admin:Sup3rS3cret@127.0.0.1:{port}/"))
                .max_connections(1),
        )
        .await
        .unwrap();
    let shown = format!(
        "{}\n{:?}",
        serde_json::to_string(&poly.stats().general()).unwrap(),
        poly.stats().general()
    );
    assert!(!shown.contains("Sup3rS3cret"), "{shown}");
    assert!(shown.contains("admin:***@"), "{shown}");
    poly.close_all(Duration::from_secs(5)).await;
}
