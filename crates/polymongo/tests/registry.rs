//! One life per database: registry entries forgotten when idle or past the cache bound (with
//! everything they hold), declared indexes ensured again after every kind of drop or re-route,
//! closed streams no longer counted, dedicated pools opened only under their bound, and the
//! busiest databases ranked however late they appear.

mod common;

use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use mongodb::bson::{doc, Document};
use mongodb::options::IndexOptions;
use mongodb::IndexModel;
use polymongo::bulk::{CollectionDump, Dump, ImportOptions};
use polymongo::{DbConfig, Model, PolyMongo, TopBy};
use serde::{Deserialize, Serialize};

use common::{eventually, raw, server};

#[derive(Debug, Serialize, Deserialize)]
struct Account {
    email: String,
}
impl Model for Account {
    const COLLECTION: &'static str = "accounts";

    fn indexes() -> Vec<IndexModel> {
        vec![IndexModel::builder()
            .keys(doc! { "email": 1 })
            .options(IndexOptions::builder().unique(true).build())
            .build()]
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Note {
    n: i64,
}
impl Model for Note {
    const COLLECTION: &'static str = "notes";
}

const WAIT: Duration = Duration::from_secs(20);

/// Whether `accounts` in `db` has an index on `email`, as the server reports it (nx-27017
/// renames indexes, so only the fields are compared).
async fn has_email_index(client: &mongodb::Client, db: &str) -> bool {
    let Ok(cursor) = client
        .database(db)
        .collection::<Document>("accounts")
        .list_indexes()
        .await
    else {
        return false;
    };
    let keys: Vec<Document> = cursor.map_ok(|m| m.keys).try_collect().await.unwrap();
    keys.iter().any(|k| k.contains_key("email"))
}

#[tokio::test]
async fn a_hundred_thousand_databases_are_forgotten_once_idle() {
    const D: usize = 100_000;
    let server = server().await;
    let poly = PolyMongo::builder()
        .uri(server.uri())
        .database_idle_timeout(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let (notes, accounts) = (poly.model::<Note>(), poly.model::<Account>());
    // One database stays in use throughout: it must survive every sweep.
    let held = notes.db("held").unwrap();
    let mut peak = 0;
    for i in 0..D {
        let name = format!("tenant_{i:06}");
        notes.db(&name).unwrap();
        accounts.db(&name).unwrap();
        if i % 10_000 == 0 {
            peak = peak.max(poly.cached_databases());
        }
    }
    // A few counted operations, so usage counters exist too.
    for i in 0..5 {
        let h = notes.db(&format!("tenant_{i:06}")).unwrap();
        h.run(|c| c.insert_one(Note { n: i })).await.unwrap();
    }
    assert!(peak > 1, "databases were cached while in use: {peak}");

    eventually("every idle database to be forgotten", WAIT, || async {
        (poly.cached_databases() == 1).then_some(())
    })
    .await;
    let general = poly.stats().general();
    assert_eq!(general.databases_in_use, 1);
    assert_eq!(general.primary.database_count, 1);
    assert_eq!(general.primary.databases, ["held"]);
    for i in 0..5 {
        assert!(poly.stats().usage(&format!("tenant_{i:06}")).is_none());
    }
    // The forgotten databases' figures are not lost: they are summed.
    let other = poly.stats().usage(polymongo::OTHER_DATABASES).unwrap();
    assert_eq!(other.operations, 5);

    // The held database works, and is forgotten once given back.
    held.run(|c| c.insert_one(Note { n: 1 })).await.unwrap();
    drop(held);
    eventually("the last database to be forgotten", WAIT, || async {
        (poly.cached_databases() == 0).then_some(())
    })
    .await;
    assert_eq!(poly.stats().general().primary.database_count, 0);
    // A later use rebuilds the entry from configuration.
    let again = notes.db("tenant_000000").unwrap();
    assert_eq!(again.count_documents(doc! {}).await.unwrap(), 1);
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn past_the_cache_bound_the_least_recently_used_are_forgotten() {
    let server = server().await;
    let poly = PolyMongo::builder()
        .uri(server.uri())
        .max_cached_databases(1_000)
        .database_idle_timeout(Duration::from_secs(3600))
        .build()
        .await
        .unwrap();
    let notes = poly.model::<Note>();
    let first = notes.db("lru_00000").unwrap();
    first.run(|c| c.insert_one(Note { n: 0 })).await.unwrap();
    drop(first);
    for i in 1..5_000 {
        notes.db(&format!("lru_{i:05}")).unwrap();
    }
    let last = notes.db("lru_04999").unwrap();
    last.run(|c| c.insert_one(Note { n: 1 })).await.unwrap();
    drop(last);
    eventually("the cache to shrink to its bound", WAIT, || async {
        (poly.cached_databases() <= 1_000).then_some(())
    })
    .await;
    assert!(
        poly.stats().usage("lru_00000").is_none(),
        "the least recently used database was forgotten"
    );
    assert!(
        poly.stats().usage("lru_04999").is_some(),
        "the most recent one is still cached"
    );
    assert!(poly.stats().general().primary.database_count <= 1_000);
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn declared_indexes_exist_again_after_each_kind_of_drop_and_re_route() {
    let server = server().await;
    let poly = common::manager(&server, 4).await;
    let check = raw(&server).await;
    let accounts = poly.model::<Account>();
    let db = "reindexed";
    let ensure = || async {
        let h = accounts.acquire(db).await.unwrap();
        h.insert_one(Account {
            email: format!("{}@x", rand_suffix()),
        })
        .await
        .unwrap();
    };

    ensure().await;
    assert!(has_email_index(&check, db).await, "first use");

    // 1. drop_database.
    poly.bulk().drop_database(db).await.unwrap();
    assert!(!has_email_index(&check, db).await, "the drop took it");
    ensure().await;
    assert!(has_email_index(&check, db).await, "after drop_database");

    // 2. A drop-first import (of a dump without the index).
    let dump = Dump::new(
        db,
        vec![CollectionDump::new(
            "accounts",
            vec![doc! { "_id": 1, "email": "imported@x" }],
        )],
    );
    poly.bulk()
        .import(db, &dump, ImportOptions::default().drop_target_first(true))
        .await
        .unwrap();
    assert!(!has_email_index(&check, db).await, "the import replaced it");
    ensure().await;
    assert!(
        has_email_index(&check, db).await,
        "after a drop-first import"
    );

    // 3. A copy onto it (drop-first, from a database without the index).
    check
        .database("source")
        .collection::<Document>("accounts")
        .insert_one(doc! { "email": "copied@x" })
        .await
        .unwrap();
    poly.bulk()
        .copy_database(
            "source",
            db,
            ImportOptions::default().drop_target_first(true),
        )
        .await
        .unwrap();
    assert!(!has_email_index(&check, db).await, "the copy replaced it");
    ensure().await;
    assert!(has_email_index(&check, db).await, "after a copy");

    // 4. A re-route: the database is dropped behind the library's back, then configured
    // anew; its new route starts with a fresh entry, so the indexes are ensured again.
    check.database(db).drop().await.unwrap();
    poly.scale()
        .set_db(&[db], DbConfig::new().max_connections(2))
        .await
        .unwrap();
    ensure().await;
    assert!(has_email_index(&check, db).await, "after a re-route");

    // The unique index works again: a duplicate is refused.
    let h = accounts.acquire(db).await.unwrap();
    h.insert_one(Account {
        email: "dup@x".into(),
    })
    .await
    .unwrap();
    let dup = h
        .insert_one(Account {
            email: "dup@x".into(),
        })
        .await;
    assert!(dup.is_err(), "the unique index refuses a duplicate");
    poly.close_all(Duration::from_secs(5)).await;
    check.shutdown().await;
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[tokio::test]
async fn a_busy_newcomer_reaches_the_top_after_thousands_of_databases() {
    let server = server().await;
    let poly = common::manager(&server, 8).await;
    let notes = poly.model::<Note>();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..3_000 {
        let notes = notes.clone();
        tasks.spawn(async move {
            let h = notes.db(&format!("early_{i:04}")).unwrap();
            h.run(|c| c.find_one(doc! {})).await.unwrap();
        });
        if tasks.len() >= 32 {
            tasks.join_next().await.unwrap().unwrap();
        }
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let h = notes.db("newcomer").unwrap();
    for n in 0..5 {
        h.run(|c| c.insert_one(Note { n })).await.unwrap();
    }
    let top = poly.stats().top_databases(3, TopBy::Operations);
    assert_eq!(top[0].database, "newcomer", "{top:?}");
    assert_eq!(top[0].recent_operations, 5);
    let by_time = poly.stats().top_databases(1_000_000, TopBy::Time);
    assert!(by_time.iter().any(|u| u.database == "newcomer"));
    assert!(by_time.len() <= polymongo::DEFAULT_MAX_TRACKED_DATABASES);
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_slow_cursor_across_several_ttls_completes() {
    let server = server().await;
    let ttl = Duration::from_millis(100);
    let poly = PolyMongo::builder()
        .uri(server.uri())
        .db("slow", DbConfig::new().max_connections(2).auto_close(ttl))
        .build()
        .await
        .unwrap();
    let notes = poly.model::<Note>();
    notes
        .db("slow")
        .unwrap()
        .insert_many((0..8).map(|n| Note { n }))
        .await
        .unwrap();
    // The README's pattern: the handle is dropped at the end of the statement.
    let mut cursor = notes
        .db("slow")
        .unwrap()
        .find(doc! {})
        .batch_size(1)
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut closes_seen = 0;
    while let Some(note) = cursor.try_next().await.unwrap() {
        seen.push(note.n);
        // Read slower than the pool's TTL: the pool closes for idleness in between, and the
        // closing client keeps serving the cursor within its grace.
        let closed = eventually("an idle close between reads", WAIT, || async {
            (poly.open_dedicated_pools() == 0).then_some(())
        });
        closed.await;
        closes_seen += 1;
    }
    assert_eq!(seen, (0..8).collect::<Vec<_>>());
    assert!(closes_seen >= 7, "the pool closed between reads");
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_short_grace_cuts_a_cursor_the_library_cannot_see() {
    let server = server().await;
    let poly = PolyMongo::builder()
        .uri(server.uri())
        .idle_close_grace(Duration::from_millis(50))
        .db(
            "graceless",
            DbConfig::new()
                .max_connections(2)
                .auto_close(Duration::from_millis(50)),
        )
        .build()
        .await
        .unwrap();
    let notes = poly.model::<Note>();
    notes
        .db("graceless")
        .unwrap()
        .insert_many((0..8).map(|n| Note { n }))
        .await
        .unwrap();
    let mut cursor = notes
        .db("graceless")
        .unwrap()
        .find(doc! {})
        .batch_size(1)
        .await
        .unwrap();
    cursor.try_next().await.unwrap();
    // The pool closes for idleness, and its client is shut down once the grace is over.
    eventually("the idle close and its grace", WAIT, || async {
        (poly.open_dedicated_pools() == 0 && poly.live_clients() == 0).then_some(())
    })
    .await;
    let mut outcome = Ok(None);
    for _ in 0..8 {
        outcome = cursor.try_next().await;
        if outcome.is_err() {
            break;
        }
    }
    assert!(
        outcome.is_err(),
        "the documented cut: work the library cannot see gets only the grace"
    );
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_closed_stream_is_no_longer_counted_and_frees_its_pool() {
    // Counts a managed change stream.
    let Some(server) =
        polymongo_testkit::server_for(&[polymongo_testkit::Capability::ChangeStreams]).await
    else {
        return;
    };
    let poly = PolyMongo::builder()
        .uri(server.uri())
        .db(
            "watched",
            DbConfig::new()
                .max_connections(2)
                .auto_close(Duration::from_millis(100)),
        )
        .build()
        .await
        .unwrap();
    let notes = poly.model::<Note>();
    let mut stream = notes.db("watched").unwrap().watch().await.unwrap();
    assert_eq!(poly.open_change_streams(), 1);
    assert_eq!(poly.stats().general().change_streams, 1);
    assert_eq!(poly.close_db_streams("watched"), 1);
    // The consumer still holds its stream, but it is closed: not counted, and its lease on
    // the pool is given back, so the pool closes for idleness.
    assert_eq!(poly.open_change_streams(), 0);
    assert_eq!(poly.stats().general().change_streams, 0);
    eventually("the stream's pool to close for idleness", WAIT, || async {
        (poly.open_dedicated_pools() == 0).then_some(())
    })
    .await;
    assert!(stream.next().await.is_none());
    assert!(stream.is_closed());
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn every_lease_path_keeps_the_dedicated_pool_bound() {
    let server = server().await;
    let poly = PolyMongo::builder()
        .uri(server.uri())
        .max_dedicated_pools(1)
        .db("first", DbConfig::new().max_connections(2))
        .db("second", DbConfig::new().max_connections(2))
        .build()
        .await
        .unwrap();
    // Each path that touches a database goes through the registry's lease and opens a
    // dedicated pool only under the bound. A pool whose connection is still being checked
    // back in counts as in use, so the bound may be passed for a moment; the housekeeper then
    // brings it back.
    let at_bound = || async {
        eventually(
            "the dedicated pools back under their bound",
            WAIT,
            || async { (poly.open_dedicated_pools() <= 1).then_some(()) },
        )
        .await
    };
    poly.client_for("first").unwrap();
    poly.client_for("second").unwrap();
    assert_eq!(
        poly.open_dedicated_pools(),
        1,
        "no connection was ever checked out"
    );
    poly.ping("first").await.unwrap();
    at_bound().await;
    poly.stats().db("second").await.unwrap();
    at_bound().await;
    poly.database("first").unwrap();
    at_bound().await;
    poly.bulk().export("second").await.unwrap();
    at_bound().await;

    // Metric series exist for open pools only, however many are configured.
    #[cfg(feature = "metrics")]
    {
        let text = polymongo::metrics::render(&poly);
        let dedicated_series = text
            .lines()
            .filter(|l| l.starts_with("polymongo_pool_max_size{") && l.contains("dedicated"))
            .count();
        assert_eq!(dedicated_series, 1, "{text}");
    }
    poly.close_all(Duration::from_secs(5)).await;
}

/// Only the first model used on a database keeps its collection handle in the entry; every
/// other model makes its own. Each must still get its own collection, warm or cold, in
/// whichever order the models come, and write where the server says it wrote.
#[tokio::test]
async fn every_model_on_a_database_gets_its_own_collection() {
    let server = server().await;
    let poly = PolyMongo::builder()
        .uri(server.uri())
        .default_db("main")
        .build()
        .await
        .unwrap();
    let accounts = poly.model::<Account>();
    let notes = poly.model::<Note>();
    for (i, db) in ["first_notes", "first_accounts"].into_iter().enumerate() {
        for round in 0..3i64 {
            // Alternate which model comes first on each database.
            let (a, n) = if i == 0 {
                let n = notes.db(db).unwrap();
                (accounts.db(db).unwrap(), n)
            } else {
                let a = accounts.db(db).unwrap();
                (a, notes.db(db).unwrap())
            };
            assert_eq!(a.namespace().to_string(), format!("{db}.accounts"));
            assert_eq!(n.namespace().to_string(), format!("{db}.notes"));
            a.run(|c| {
                c.insert_one(Account {
                    email: format!("{round}@x"),
                })
            })
            .await
            .unwrap();
            n.run(|c| c.insert_one(Note { n: round })).await.unwrap();
        }
        let client = raw(&server).await;
        for coll in ["accounts", "notes"] {
            let count = client
                .database(db)
                .collection::<Document>(coll)
                .count_documents(doc! {})
                .await
                .unwrap();
            assert_eq!(count, 3, "{db}.{coll}");
        }
    }
    poly.close_all(Duration::from_secs(5)).await;
}
