//! Per-database configuration: separate clusters, dedicated pools, handle options, the scale
//! API, and config errors — checked on two real servers through raw clients.

mod common;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mongodb::bson::{doc, Document};
use mongodb::options::{Acknowledgment, ReadConcern, ReadPreference, WriteConcern};
use polymongo::{DbConfig, Error, ErrorKind, Model, PolyMongo};
use serde::{Deserialize, Serialize};

use common::{connections, eventually, raw, server, MONITOR_CONNECTIONS};

#[derive(Debug, Serialize, Deserialize)]
struct Event {
    n: i64,
}
impl Model for Event {
    const COLLECTION: &'static str = "events";
}

async fn count(client: &mongodb::Client, db: &str) -> u64 {
    client
        .database(db)
        .collection::<Document>("events")
        .count_documents(doc! {})
        .await
        .unwrap()
}

#[tokio::test]
async fn a_database_on_another_cluster_lands_only_there() {
    let (a, b) = (server().await, server().await);
    let poly = PolyMongo::builder()
        .uri(a.uri())
        .db("analytics", DbConfig::new().uri(b.uri()))
        .build()
        .await
        .unwrap();
    let events = poly.model::<Event>();
    for (db, n) in [("analytics", 3), ("main", 2), ("tenant_1", 1)] {
        for i in 0..n {
            events
                .db(db)
                .unwrap()
                .insert_one(Event { n: i })
                .await
                .unwrap();
        }
    }
    let (ra, rb) = (raw(&a).await, raw(&b).await);
    assert_eq!(count(&rb, "analytics").await, 3);
    assert_eq!(count(&ra, "analytics").await, 0);
    for (db, n) in [("main", 2), ("tenant_1", 1)] {
        assert_eq!(count(&ra, db).await, n, "{db} on A");
        assert_eq!(count(&rb, db).await, 0, "{db} not on B");
    }
    assert_eq!(poly.live_clients(), 2, "main cluster + analytics cluster");
    ra.shutdown().await;
    rb.shutdown().await;
    poly.close_all(Duration::from_secs(5)).await;
    assert_eq!(poly.live_clients(), 0);
}

#[tokio::test]
async fn databases_routed_to_the_same_other_cluster_share_its_pool() {
    let (a, b) = (server().await, server().await);
    let baseline_b = connections(&b).await;
    let poly = common::manager(&a, 3).await;
    poly.scale()
        .set_db(
            &["logs_1", "logs_2", "logs_3"],
            DbConfig::new().uri(b.uri()),
        )
        .await
        .unwrap();
    let events = poly.model::<Event>();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..60 {
        let events = events.clone();
        tasks.spawn(async move {
            let db = format!("logs_{}", i % 3 + 1);
            events.db(&db)?.insert_one(Event { n: i }).await?;
            Ok::<_, Error>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
    assert_eq!(
        poly.live_clients(),
        1,
        "one client for cluster B, main never used"
    );
    let used = connections(&b).await - baseline_b;
    assert!(
        used <= 3 + MONITOR_CONNECTIONS,
        "{used} connections on B for three databases"
    );
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_dedicated_pool_of_three_never_opens_more_than_three_connections() {
    let (a, b) = (server().await, server().await);
    let baseline_b = connections(&b).await;
    let poly = PolyMongo::builder()
        .uri(a.uri())
        .max_pool_size(20)
        .db("heavy", DbConfig::new().uri(b.uri()).max_connections(3))
        .build()
        .await
        .unwrap();
    let events = poly.model::<Event>();

    // Sample B's connection count while 100 operations run at once.
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicI64::new(0));
    let sampler = {
        let (done, peak, port) = (Arc::clone(&done), Arc::clone(&peak), b.uri().to_owned());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                let n = polymongo_testkit::connection_count(&port).await.unwrap();
                peak.fetch_max(n, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        })
    };
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100 {
        let events = events.clone();
        tasks.spawn(async move {
            let h = events.db("heavy")?;
            h.insert_one(Event { n: i }).await?;
            h.count_documents(doc! { "n": { "$lte": i } }).await?;
            Ok::<_, Error>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    let peak = peak.load(Ordering::Relaxed) - baseline_b;
    assert!(peak >= 1, "the sampler saw the load ({peak})");
    assert!(
        peak <= 3 + MONITOR_CONNECTIONS,
        "peak of {peak} connections on the dedicated pool's server"
    );
    assert_eq!(count(&raw(&b).await, "heavy").await, 100);
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_dedicated_pool_on_the_main_cluster_is_a_second_client() {
    let a = server().await;
    let poly = PolyMongo::builder()
        .uri(a.uri())
        .db("cache", DbConfig::new().max_connections(2))
        .build()
        .await
        .unwrap();
    let events = poly.model::<Event>();
    events
        .db("shared_one")
        .unwrap()
        .insert_one(Event { n: 1 })
        .await
        .unwrap();
    assert_eq!(poly.live_clients(), 1);
    events
        .db("cache")
        .unwrap()
        .insert_one(Event { n: 2 })
        .await
        .unwrap();
    assert_eq!(poly.live_clients(), 2);
    let report = poly.close_all(Duration::from_secs(5)).await;
    assert_eq!(report.pools_closed, 2);
    assert_eq!(poly.live_clients(), 0);
}

#[tokio::test]
async fn handle_options_follow_the_database_configuration() {
    let a = server().await;
    let poly = PolyMongo::builder()
        .uri(a.uri())
        .db(
            "reports",
            DbConfig::new()
                .read_preference(ReadPreference::SecondaryPreferred {
                    options: Default::default(),
                })
                .read_concern(ReadConcern::local())
                .write_concern(WriteConcern::builder().w(Acknowledgment::Majority).build()),
        )
        .build()
        .await
        .unwrap();
    let events = poly.model::<Event>();
    let reports = events.db("reports").unwrap();
    assert!(
        matches!(
            reports.selection_criteria(),
            Some(mongodb::options::SelectionCriteria::ReadPreference(
                ReadPreference::SecondaryPreferred { .. }
            ))
        ),
        "{:?}",
        reports.selection_criteria()
    );
    assert_eq!(reports.read_concern(), Some(&ReadConcern::local()));
    assert_eq!(
        reports.write_concern().and_then(|w| w.w.clone()),
        Some(Acknowledgment::Majority)
    );
    // Options cost no pool: still the one shared client.
    reports.find_one(doc! {}).await.unwrap();
    events.db("other").unwrap().find_one(doc! {}).await.unwrap();
    assert_eq!(poly.live_clients(), 1);
    let plain = events.db("other").unwrap();
    assert!(plain.selection_criteria().is_none());
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn set_db_after_first_use_moves_the_next_handles() {
    let (a, b) = (server().await, server().await);
    let poly = common::manager(&a, 3).await;
    let events = poly.model::<Event>();
    let before = events.db("moving").unwrap();
    before.insert_one(Event { n: 1 }).await.unwrap();

    poly.scale()
        .set_db(&["moving"], DbConfig::new().uri(b.uri()))
        .await
        .unwrap();
    events
        .db("moving")
        .unwrap()
        .insert_one(Event { n: 2 })
        .await
        .unwrap();
    // A handle taken before keeps working on the pool it was made from.
    before.insert_one(Event { n: 3 }).await.unwrap();

    let (ra, rb) = (raw(&a).await, raw(&b).await);
    assert_eq!(count(&ra, "moving").await, 2);
    assert_eq!(count(&rb, "moving").await, 1);
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn cold_start_false_connects_when_configured() {
    let (a, b) = (server().await, server().await);
    let baseline_b = connections(&b).await;
    let poly = PolyMongo::builder()
        .uri(a.uri())
        .db(
            "eager",
            DbConfig::new()
                .uri(b.uri())
                .max_connections(2)
                .cold_start(false),
        )
        .build()
        .await
        .unwrap();
    assert!(
        connections(&b).await > baseline_b,
        "eager pool connected at build"
    );
    assert_eq!(poly.live_clients(), 1, "the main pool stays cold");
    poly.close_all(Duration::from_secs(5)).await;
    eventually(
        "B's connections to close",
        Duration::from_secs(10),
        || async { (connections(&b).await == baseline_b).then_some(()) },
    )
    .await;
}

/// A URI's `minPoolSize` keeps that many connections open: the option's default of 0
/// (`min_free_connections`) used to replace it without a word.
#[tokio::test]
async fn a_uri_min_pool_size_keeps_its_connections_open() {
    let s = server().await;
    let baseline = connections(&s).await;
    let separator = if s.uri().contains('?') { '&' } else { '?' };
    let poly = PolyMongo::builder()
        .uri(format!("{}{separator}minPoolSize=3", s.uri()))
        .cold_start(false)
        .build()
        .await
        .unwrap();
    // At least one monitor connection besides the three idle ones; without the URI's
    // minimum the pool holds only the connection of the build's ping.
    eventually(
        "the pool to hold the URI's three idle connections",
        Duration::from_secs(10),
        || async { (connections(&s).await >= baseline + 1 + 3).then_some(()) },
    )
    .await;
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn connect_db_surfaces_connection_errors_now() {
    let a = server().await;
    let poly = PolyMongo::builder()
        .uri(a.uri())
        .retry(1, Duration::ZERO)
        .build()
        .await
        .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead =
        format!("mongodb://127.0.0.1:{port}/?directConnection=true&serverSelectionTimeoutMS=200");
    let err = poly
        .scale()
        .connect_db(
            &["unreachable"],
            DbConfig::new().uri(&dead).max_connections(2),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection, "{err}");
    assert!(err.is_retryable());

    poly.scale()
        .connect_db(&["reachable"], DbConfig::new().max_connections(2))
        .await
        .unwrap();
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn bad_database_configuration_is_refused_naming_database_and_field() {
    let a = server().await;
    let err = PolyMongo::builder()
        .uri(a.uri())
        .db("twice", DbConfig::new().uri("mongodb://127.0.0.1:1"))
        .db("twice", DbConfig::new().uri("mongodb://127.0.0.1:2"))
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::DbConfig { database, field: "uri", .. } if database == "twice"),
        "{err:?}"
    );
    let err = PolyMongo::builder()
        .uri(a.uri())
        .db(
            "pool",
            DbConfig::new().max_connections(1).min_connections(2),
        )
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::DbConfig {
                field: "min_connections",
                ..
            }
        ),
        "{err:?}"
    );

    let poly = common::manager(&a, 2).await;
    let cases = [
        (DbConfig::new().uri("mysql://h/"), "uri"),
        (DbConfig::new().max_connections(0), "max_connections"),
        (DbConfig::new().auto_close(Duration::ZERO), "ttl"),
    ];
    for (config, field) in cases {
        let shown = format!("{config:?}");
        let err = poly
            .scale()
            .set_db(&["ok_name", "bad"], config)
            .await
            .unwrap_err();
        match err {
            Error::DbConfig {
                database, field: f, ..
            } => {
                assert_eq!((database.as_str(), f), ("ok_name", field), "{shown}");
            }
            other => panic!("{shown}: {other:?}"),
        }
    }
    // Nothing was applied: every name is checked first.
    let err = poly
        .scale()
        .set_db(&["fine", "not.fine"], DbConfig::new().max_connections(2))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidName);
    poly.model::<Event>()
        .db("fine")
        .unwrap()
        .find_one(doc! {})
        .await
        .unwrap();
    assert_eq!(
        poly.live_clients(),
        1,
        "`fine` was not given a dedicated pool"
    );
    // A password in a per-database URI stays hidden.
    let err = poly
        .scale()
        .set_db(
            &["secret"],
            DbConfig::new().uri("mongodb://u:topsecret@h:notaport/"),
        )
        .await
        .unwrap_err();
    assert!(!format!("{err} {err:?}").contains("topsecret"), "{err}");
    poly.close_all(Duration::from_secs(5)).await;
}
