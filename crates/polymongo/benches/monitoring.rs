//! The client-side cost of polymongo's monitoring, counted in CPU instructions.
//!
//! Wall-clock comparisons against the test server drown a few microseconds in the server's own
//! noise (see `docs/benchmarks.md`), so this bench counts the instructions the *client process*
//! executes, with valgrind's callgrind (repeatable whatever else the machine does; the server
//! runs in its own process and is not counted). For each mode it runs the workload with 0 and
//! with N operations and reports instructions per operation:
//!
//! - `raw`: the driver alone, no event handlers;
//! - `off`: polymongo with usage analytics off (SDAM and CMAP handlers only);
//! - `operations`: the default, both operations through `DbHandle::run`, counted and timed;
//! - `commands`: usage analytics from command events (the driver's command-event handler).
//!
//! ```text
//! cargo bench -p polymongo --bench monitoring          # needs valgrind on PATH
//! ```

use std::process::Command;
use std::time::Duration;

use mongodb::bson::{doc, Document};
use mongodb::{Client, Collection};
use polymongo::{DbHandle, Model, PolyMongo, UsageAnalytics};
use polymongo_testkit::TestServer;

const ROUNDS: u64 = 200;

#[derive(serde::Deserialize)]
struct User {}
impl Model for User {
    const COLLECTION: &'static str = "users";
}

/// One round: a `find_one` by `_id` and a 20-document `find`.
async fn round(coll: &Collection<User>) {
    coll.find_one(doc! { "_id": 1 }).await.expect("find_one");
    let mut cursor = coll
        .find(doc! { "_id": { "$lte": 20 } })
        .await
        .expect("find");
    while cursor.advance().await.expect("next") {}
}

/// The same round, each operation through `DbHandle::run`.
async fn counted_round(h: &DbHandle<User>) {
    h.run(|c| c.find_one(doc! { "_id": 1 }))
        .await
        .expect("find_one");
    let mut cursor = h
        .run(|c| c.find(doc! { "_id": { "$lte": 20 } }))
        .await
        .expect("find");
    while cursor.advance().await.expect("next") {}
}

fn child(mode: &str, rounds: u64, uri: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        if mode == "raw" {
            let client = Client::with_uri_str(uri).await.expect("client");
            let coll = client.database("bench").collection::<User>("users");
            coll.find_one(doc! {}).await.expect("warm");
            for _ in 0..rounds {
                round(&coll).await;
            }
            client.shutdown().await;
        } else {
            let source = match mode {
                "operations" => UsageAnalytics::Operations,
                "commands" => UsageAnalytics::Commands,
                _ => UsageAnalytics::Off,
            };
            let poly = PolyMongo::builder()
                .uri(uri)
                .usage_analytics(source)
                .build()
                .await
                .expect("build");
            let users = poly.model::<User>();
            users
                .db("bench")
                .expect("db")
                .find_one(doc! {})
                .await
                .expect("warm");
            for _ in 0..rounds {
                let h = users.db("bench").expect("db");
                if source == UsageAnalytics::Operations {
                    counted_round(&h).await;
                } else {
                    round(&h).await;
                }
            }
            poly.close_all(Duration::from_secs(5)).await;
        }
    });
}

fn instructions(mode: &str, rounds: u64, uri: &str) -> Option<u64> {
    let exe = std::env::current_exe().ok()?;
    let out = Command::new("valgrind")
        .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
        .arg(exe)
        .args(["child", mode, &rounds.to_string(), uri])
        .output()
        .ok()?;
    let err = String::from_utf8_lossy(&out.stderr);
    err.lines()
        .find_map(|l| l.split("Collected :").nth(1))
        .and_then(|n| n.trim().parse().ok())
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.first().map(String::as_str) == Some("child") {
        let rounds = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(0);
        child(&args[1], rounds, &args[3]);
        return;
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server = rt.block_on(async {
        let server = TestServer::start().await.expect("test server");
        let client = Client::with_uri_str(server.uri()).await.expect("client");
        let coll: Collection<Document> = client.database("bench").collection("users");
        coll.insert_many(
            (1..=100)
                .map(|i| doc! { "_id": i, "name": format!("user {i}"), "pad": "x".repeat(200) }),
        )
        .await
        .expect("seed");
        client.shutdown().await;
        server
    });
    let uri = server.uri().to_owned();
    println!("| mode | instructions per round (find_one + 20-doc find) | vs raw |");
    println!("|---|---:|---:|");
    let mut raw = None;
    for mode in ["raw", "off", "operations", "commands"] {
        let (Some(base), Some(full)) = (
            instructions(mode, 0, &uri),
            instructions(mode, ROUNDS, &uri),
        ) else {
            println!("| {mode} | valgrind not available or the run failed | |");
            continue;
        };
        let per = full.saturating_sub(base) / ROUNDS;
        let raw_per = *raw.get_or_insert(per);
        println!("| {mode} | {per} | {:.3} |", per as f64 / raw_per as f64);
    }
    drop(server);
}
