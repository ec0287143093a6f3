//! Usage analytics: exact counts after a scripted workload (from `run` and from command
//! events), ranking, bounds, cancellation, tracing spans.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use mongodb::bson::doc;
use polymongo::{Model, PolyMongo, TopBy, UsageAnalytics, OTHER_DATABASES};
use serde::{Deserialize, Serialize};

use common::server;

#[derive(Debug, Serialize, Deserialize)]
struct Event {
    n: i64,
}
impl Model for Event {
    const COLLECTION: &'static str = "events";
}

/// Runs the workload through `DbHandle::run` (counted with the default source) or directly
/// on the collection (counted only from command events).
async fn workload(
    poly: &PolyMongo,
    db: &str,
    inserts: i64,
    finds: i64,
    updates: i64,
    deletes: i64,
) {
    let h = poly.model::<Event>().db(db).unwrap();
    let via_run = poly.options().usage_analytics == UsageAnalytics::Operations;
    for n in 0..inserts {
        if via_run {
            h.run(|c| c.insert_one(Event { n })).await.unwrap();
        } else {
            h.insert_one(Event { n }).await.unwrap();
        }
    }
    for n in 0..finds {
        if via_run {
            h.run(|c| c.find_one(doc! { "n": n })).await.unwrap();
        } else {
            h.find_one(doc! { "n": n }).await.unwrap();
        }
    }
    for n in 0..updates {
        let (filter, update) = (doc! { "n": n }, doc! { "$set": { "seen": true } });
        if via_run {
            h.run(|c| c.update_one(filter, update)).await.unwrap();
        } else {
            h.update_one(filter, update).await.unwrap();
        }
    }
    for n in 0..deletes {
        if via_run {
            h.run(|c| c.delete_one(doc! { "n": n })).await.unwrap();
        } else {
            h.delete_one(doc! { "n": n }).await.unwrap();
        }
    }
}

fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

#[tokio::test]
async fn operation_counts_after_a_scripted_workload_are_exact() {
    scripted_workload(UsageAnalytics::Operations).await;
}

#[tokio::test]
async fn command_counts_after_a_scripted_workload_are_exact() {
    scripted_workload(UsageAnalytics::Commands).await;
}

async fn scripted_workload(source: UsageAnalytics) {
    let server = server().await;
    let poly = PolyMongo::builder()
        .uri(server.uri())
        .max_pool_size(4)
        .usage_analytics(source)
        .build()
        .await
        .unwrap();
    let started = SystemTime::now();
    workload(&poly, "usage_a", 7, 3, 2, 1).await;
    workload(&poly, "usage_b", 2, 8, 0, 0).await;
    workload(&poly, "usage_c", 1, 0, 0, 0).await;
    // A command the server refuses counts as an error of its database.
    let c = poly.model::<Event>().db("usage_c").unwrap();
    let pipeline = [doc! { "$noSuchStage": {} }];
    let bad = match source {
        UsageAnalytics::Operations => c.run(|c| c.aggregate(pipeline)).await.err(),
        _ => c.aggregate(pipeline).await.err().map(Into::into),
    };
    assert!(
        matches!(bad, Some(polymongo::Error::Driver { .. })),
        "{bad:?}"
    );

    let stats = poly.stats();
    let a = stats.usage("usage_a").unwrap();
    assert_eq!(
        a.by_command,
        counts(&[("insert", 7), ("find", 3), ("update", 2), ("delete", 1)])
    );
    assert_eq!((a.operations, a.errors, a.in_flight), (13, 0, 0));
    assert!(
        a.p50_us > 0 && a.p50_us <= a.p95_us && a.p95_us <= a.p99_us,
        "{a:?}"
    );
    assert!(a.total_time_us > 0);
    assert!(a.last_used.unwrap() >= started - Duration::from_secs(1));

    let b = stats.usage("usage_b").unwrap();
    assert_eq!(b.by_command, counts(&[("insert", 2), ("find", 8)]));
    let c = stats.usage("usage_c").unwrap();
    assert_eq!(c.by_command, counts(&[("insert", 1), ("aggregate", 1)]));
    assert_eq!(c.errors, 1);
    assert!(stats.usage("never_used").is_none());

    let top: Vec<String> = stats
        .top_databases(2, TopBy::Operations)
        .into_iter()
        .map(|u| u.database)
        .collect();
    assert_eq!(top, ["usage_a", "usage_b"]);
    assert_eq!(stats.top_databases(10, TopBy::Time).len(), 3);

    // `stats().db()` carries the same usage, last use included.
    let db = stats.db("usage_a").await.unwrap().usage.unwrap();
    assert_eq!(db.by_command.get("insert"), Some(&7));
    assert!(db.last_used.is_some());
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn the_ranking_is_bounded_and_forgotten_databases_are_counted_together() {
    let server = server().await;
    let poly = PolyMongo::builder()
        .uri(server.uri())
        .max_tracked_databases(3)
        .database_idle_timeout(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    for i in 0..6 {
        workload(&poly, &format!("bounded_{i}"), 2, 1, 0, 0).await;
    }
    let stats = poly.stats();
    // Every cached database keeps its own figures; only the ranking is bounded.
    for i in 0..6 {
        assert_eq!(stats.usage(&format!("bounded_{i}")).unwrap().operations, 3);
    }
    assert_eq!(stats.top_databases(10, TopBy::Operations).len(), 3);
    // A database busier now than the ranked ones displaces the quietest.
    workload(&poly, "busy", 8, 2, 0, 0).await;
    let top = stats.top_databases(10, TopBy::Operations);
    assert_eq!(top.len(), 3);
    assert_eq!(top[0].database, "busy", "{top:?}");
    assert_eq!(top[0].recent_operations, 10);

    // Unused past the idle timeout, every database is forgotten with its figures, which move
    // to the aggregate: nothing is lost from the totals.
    common::eventually(
        "the idle databases to be forgotten",
        Duration::from_secs(10),
        || async { (poly.cached_databases() == 0).then_some(()) },
    )
    .await;
    for i in 0..6 {
        assert!(stats.usage(&format!("bounded_{i}")).is_none());
    }
    assert!(stats.top_databases(10, TopBy::Operations).is_empty());
    let other = stats.usage(OTHER_DATABASES).unwrap();
    assert_eq!(other.by_command, counts(&[("insert", 20), ("find", 8)]));
    assert_eq!(stats.total_usage().unwrap().operations, 28);
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn direct_calls_are_counted_only_from_command_events() {
    let server = server().await;
    let poly = common::manager(&server, 2).await;
    assert_eq!(poly.options().usage_analytics, UsageAnalytics::Operations);
    let h = poly.model::<Event>().db("direct").unwrap();
    h.insert_one(Event { n: 1 }).await.unwrap();
    h.find_one(doc! {}).await.unwrap();
    assert!(poly.stats().usage("direct").is_none());
    h.run(|c| c.find_one(doc! {})).await.unwrap();
    let u = poly.stats().usage("direct").unwrap();
    assert_eq!(u.by_command, counts(&[("find", 1)]));
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn off_counts_nothing() {
    let server = server().await;
    let poly = PolyMongo::builder()
        .uri(server.uri())
        .usage_analytics(UsageAnalytics::Off)
        .build()
        .await
        .unwrap();
    let h = poly.model::<Event>().db("quiet").unwrap();
    h.run(|c| c.insert_one(Event { n: 1 })).await.unwrap();
    h.find_one(doc! {}).await.unwrap();
    assert!(poly.stats().usage("quiet").is_none());
    assert!(poly.stats().top_databases(5, TopBy::Operations).is_empty());
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_cancelled_operation_is_finished_not_failed() {
    let server = server().await;
    let poly = common::manager(&server, 2).await;
    let h = poly.model::<Event>().db("cancelled").unwrap();
    let mut never = Box::pin(h.run(|_| std::future::pending::<mongodb::error::Result<()>>()));
    assert!(futures_util::FutureExt::now_or_never(never.as_mut()).is_none());
    let during = poly.stats().usage("cancelled").unwrap();
    assert_eq!((during.operations, during.in_flight), (1, 1));
    drop(never);
    let after = poly.stats().usage("cancelled").unwrap();
    assert_eq!((after.operations, after.in_flight, after.errors), (1, 0, 0));
    assert_eq!(after.by_command, counts(&[("other", 1)]));
    poly.close_all(Duration::from_secs(5)).await;
}
