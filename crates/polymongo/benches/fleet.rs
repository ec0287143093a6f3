//! Fleet migrations: `poly.fleet().migrate` over D databases at concurrency 1, 4 and 16,
//! against a plain sequential loop with the raw driver doing the same work (the steps, no
//! ledger and no lock), side by side in one run on one test-kit server; and the lazy mode's
//! cost on the first acquire of an up-to-date database and on a warm one.
//!
//! The work per database is two versions: an index (`createIndexes`) and a data change
//! (`update` with `$set`, upsert). Each configuration runs on a fresh server (the emulators
//! slow down as databases accumulate), so each does the real work once on equal terms. Also
//! measured: the raw loop with the ledger's round trips done by hand (how much of the
//! overhead is the server's), and a rerun of an up-to-date fleet (what a resume costs). Reported: databases per second, and the ledger's overhead per
//! database (fleet at concurrency 1 minus the raw loop, per database: lock, ledger read,
//! progress marks, ledger writes, release).
//!
//! ```text
//! cargo bench -p polymongo --bench fleet                 # D = 1 000 and 10 000
//! cargo bench -p polymongo --bench fleet -- 1000         # chosen D
//! ```

use std::time::{Duration, Instant};

use futures_util::StreamExt;

use mongodb::bson::{doc, Document};
use mongodb::{Client, Database};
use polymongo::migrate::{FleetOptions, Migration, Migrations, Step, Targets};
use polymongo::{Model, PolyMongo};
use polymongo_testkit::TestServer;

#[derive(serde::Deserialize)]
struct Item {}
impl Model for Item {
    const COLLECTION: &'static str = "items";
}

fn index_command() -> Document {
    doc! { "createIndexes": "users", "indexes": [{ "key": { "email": 1 }, "name": "email_1" }] }
}

fn update_command() -> Document {
    doc! {
        "update": "settings",
        "updates": [{ "q": { "_id": "plan" }, "u": { "$set": { "value": "free" } }, "upsert": true }],
    }
}

fn migrations() -> Migrations {
    Migrations::new(vec![
        Migration::new(1, "users-email-index", vec![Step::command(index_command())]),
        Migration::new(2, "default-plan", vec![Step::command(update_command())]),
    ])
    .expect("valid migrations")
}

fn names(prefix: &str, d: usize) -> Vec<String> {
    (0..d).map(|i| format!("{prefix}_{i:05}")).collect()
}

/// The same steps with the raw driver, one database after the other.
async fn raw_loop(client: &Client, names: &[String]) -> Duration {
    let start = Instant::now();
    for name in names {
        let db: Database = client.database(name);
        db.run_command(index_command())
            .await
            .expect("createIndexes");
        db.run_command(update_command()).await.expect("update");
    }
    start.elapsed()
}

/// The same steps with the raw driver, `concurrency` databases at a time: what the server
/// itself gives to concurrency.
async fn raw_concurrent(client: &Client, names: &[String], concurrency: usize) -> Duration {
    let start = Instant::now();
    futures_util::stream::iter(names)
        .for_each_concurrent(concurrency, |name| async move {
            let db: Database = client.database(name);
            db.run_command(index_command())
                .await
                .expect("createIndexes");
            db.run_command(update_command()).await.expect("update");
        })
        .await;
    start.elapsed()
}

/// The raw loop plus the ledger's round trips done by hand (lock upsert, ledger read, one
/// record per version, release): how much of the fleet's overhead is the server's cost of
/// those round trips.
async fn raw_with_ledger(client: &Client, names: &[String]) -> (Duration, [Duration; 4]) {
    let start = Instant::now();
    let mut parts = [Duration::ZERO; 4];
    for name in names {
        let db: Database = client.database(name);
        let ledger = db.collection::<Document>("__polymongo_migrations");
        let t = Instant::now();
        ledger
            .find_one_and_update(
                doc! { "_id": "lock" },
                doc! { "$set": { "owner": "bench", "expires_at_ms": 1_i64 }, "$inc": { "holders": 1 } },
            )
            .upsert(true)
            .await
            .expect("lock");
        parts[0] += t.elapsed();
        let t = Instant::now();
        let _: Vec<Document> =
            futures_util::TryStreamExt::try_collect(ledger.find(doc! {}).await.expect("read"))
                .await
                .expect("read");
        parts[1] += t.elapsed();
        for (v, command) in [(1_i64, index_command()), (2, update_command())] {
            db.run_command(command).await.expect("step");
            let t = Instant::now();
            ledger
                .insert_one(doc! { "_id": v, "checksum": "x" })
                .await
                .expect("record");
            parts[2] += t.elapsed();
        }
        let t = Instant::now();
        ledger
            .delete_one(doc! { "_id": "lock" })
            .await
            .expect("release");
        parts[3] += t.elapsed();
    }
    (start.elapsed(), parts)
}

async fn fleet(poly: &PolyMongo, names: &[String], concurrency: usize) -> Duration {
    let start = Instant::now();
    let report = poly
        .fleet()
        .migrate(
            &Targets::databases(names.iter().cloned()),
            &migrations(),
            &FleetOptions::new().concurrency(concurrency),
        )
        .await
        .expect("fleet run");
    assert!(report.is_complete(), "fleet run incomplete");
    start.elapsed()
}

fn per_db_us(t: Duration, d: usize) -> f64 {
    t.as_secs_f64() * 1e6 / d as f64
}

/// Mean time of one `acquire` per database, in µs.
async fn acquire_all(poly: &PolyMongo, names: &[String]) -> f64 {
    let model = poly.model::<Item>();
    let start = Instant::now();
    for name in names {
        model.acquire(name).await.expect("acquire");
    }
    per_db_us(start.elapsed(), names.len())
}

/// A fresh server for one configuration, so that no configuration pays for the databases
/// of another (the emulators slow down as databases accumulate).
async fn fresh() -> (TestServer, Client, PolyMongo) {
    let server = TestServer::start().await.expect("test server");
    let client = Client::with_uri_str(server.uri())
        .await
        .expect("raw client");
    let poly = PolyMongo::builder()
        .uri(server.uri())
        .max_pool_size(32)
        .build()
        .await
        .expect("manager");
    (server, client, poly)
}

fn row(d: usize, what: &str, t: Duration, raw_rate: f64) {
    let rate = d as f64 / t.as_secs_f64();
    println!(
        "{d:>6} {what:>18} {:>10.2} {rate:>12.0} {:>10.2}",
        t.as_secs_f64(),
        rate / raw_rate
    );
}

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1_000, 10_000]
    } else {
        sizes
    };
    println!("server: {} (a fresh one per row)", fresh().await.0.kind());
    println!(
        "{:>6} {:>18} {:>10} {:>12} {:>10}",
        "D", "run", "seconds", "dbs/second", "vs raw"
    );
    for &d in &sizes {
        let list = names("t", d);
        let raw = {
            let (_server, client, _) = fresh().await;
            raw_loop(&client, &list).await
        };
        let raw_rate = d as f64 / raw.as_secs_f64();
        row(d, "raw sequential", raw, raw_rate);
        {
            let (_server, client, _) = fresh().await;
            row(
                d,
                "raw conc 16",
                raw_concurrent(&client, &list, 16).await,
                raw_rate,
            );
        }
        {
            let (_server, client, _) = fresh().await;
            let (t, parts) = raw_with_ledger(&client, &list).await;
            row(d, "raw + ledger ops", t, raw_rate);
            println!(
                "{d:>6}   per database: lock {:.0} us, read {:.0} us, 2 records {:.0} us, release {:.0} us",
                per_db_us(parts[0], d),
                per_db_us(parts[1], d),
                per_db_us(parts[2], d),
                per_db_us(parts[3], d)
            );
        }
        let mut at_one = Duration::ZERO;
        for c in [1, 4, 16] {
            let (_server, _, poly) = fresh().await;
            let t = fleet(&poly, &list, c).await;
            if c == 1 {
                at_one = t;
            }
            row(d, &format!("fleet conc {c}"), t, raw_rate);
            // The rerun of a fleet that is up to date: what a resume costs per database.
            if c == 16 {
                row(d, "rerun, conc 16", fleet(&poly, &list, c).await, raw_rate);
            }
            poly.close_all(Duration::from_secs(5)).await;
        }
        println!(
            "{d:>6} ledger overhead per database at concurrency 1: {:.0} us ({:.0} us raw work)",
            per_db_us(at_one.saturating_sub(raw), d),
            per_db_us(raw, d)
        );
    }

    // Lazy mode: first acquire of up-to-date databases on fresh managers, then warm.
    let d = sizes[0].min(1_000);
    let (server, _, poly) = fresh().await;
    let migrated = names("lazy", d);
    fleet(&poly, &migrated, 16).await;
    let plain = PolyMongo::builder()
        .uri(server.uri())
        .max_pool_size(32)
        .build()
        .await
        .expect("manager");
    let lazy = PolyMongo::builder()
        .uri(server.uri())
        .max_pool_size(32)
        .migrate_on_first_use(migrations())
        .build()
        .await
        .expect("manager");
    let plain_first = acquire_all(&plain, &migrated).await;
    let lazy_first = acquire_all(&lazy, &migrated).await;
    let plain_warm = acquire_all(&plain, &migrated).await;
    let lazy_warm = acquire_all(&lazy, &migrated).await;
    println!("lazy mode, {d} up-to-date databases, mean acquire per database:");
    println!("  first use: {lazy_first:.1} us with lazy migrations, {plain_first:.1} us without");
    println!("  warm:      {lazy_warm:.2} us with lazy migrations, {plain_warm:.2} us without");
    for p in [&poly, &plain, &lazy] {
        p.close_all(Duration::from_secs(5)).await;
    }
}
