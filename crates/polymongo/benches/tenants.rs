//! N tenant databases, each touched with a small read: polymongo's shared pool against the
//! naive one-`Client`-per-database approach, side by side.
//!
//! For each approach and N, a child process (so memory figures are its own) starts a test-kit
//! server, makes the handles, reads one document per database twice (first touch, then warm)
//! and reports: server-side connections, heap bytes held per database (counted by this
//! binary's allocator), RSS growth, and latency median / p95 of both passes.
//!
//! ```text
//! cargo bench -p polymongo --bench tenants                 # N = 10, 100, 1 000, 10 000
//! cargo bench -p polymongo --bench tenants -- 10 100       # chosen N
//! ```

use std::process::Command;
use std::time::{Duration, Instant};

use mongodb::bson::{doc, Document};
use mongodb::{Client, Collection};
use polymongo::{Model, PolyMongo};
use polymongo_testkit::TestServer;

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

#[global_allocator]
static ALLOC: counting_alloc::Counting = counting_alloc::Counting;

#[derive(serde::Deserialize)]
struct Item {}
impl Model for Item {
    const COLLECTION: &'static str = "items";
}

fn rss_kb() -> i64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(-1)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

struct Run {
    connections: i64,
    heap_per_db: f64,
    rss_kb_per_db: f64,
    first: Vec<Duration>,
    warm: Vec<Duration>,
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("tenant_{i:05}")).collect()
}

async fn timed_pass<F, Fut>(n: usize, mut touch: F) -> Result<Vec<Duration>, String>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        touch(i).await?;
        times.push(t.elapsed());
    }
    times.sort_unstable();
    Ok(times)
}

async fn polymongo_run(server: &TestServer, n: usize) -> Result<Run, String> {
    let names = names(n);
    // Operations go through `run`, so each database's usage entry is in the figures.
    let poly = PolyMongo::builder()
        .uri(server.uri())
        .max_pool_size(10)
        .build()
        .await
        .map_err(|e| e.to_string())?;
    let items = poly.model::<Item>();
    // Warm the pool and the allocator's caches with one database not counted below.
    items
        .db("warmup")
        .map_err(|e| e.to_string())?
        .find_one(doc! {})
        .await
        .map_err(|e| e.to_string())?;
    // Captures only shared references, so the closure is `Copy` and serves both passes.
    let touch = |i: usize| {
        let h = items.db(&names[i]);
        async move {
            h.map_err(|e| e.to_string())?
                .run(|c| c.find_one(doc! {}))
                .await
                .map_err(|e| e.to_string())?;
            Ok(())
        }
    };
    let (heap0, rss0) = (counting_alloc::live(), rss_kb());
    let first = timed_pass(n, touch).await?;
    let (heap1, rss1) = (counting_alloc::live(), rss_kb());
    let warm = timed_pass(n, touch).await?;
    let connections = server.connection_count().await.map_err(|e| e.to_string())?;
    poly.close_all(Duration::from_secs(5)).await;
    Ok(Run {
        connections,
        heap_per_db: (heap1 - heap0) as f64 / n as f64,
        rss_kb_per_db: (rss1 - rss0) as f64 / n as f64,
        first,
        warm,
    })
}

async fn naive_run(server: &TestServer, n: usize) -> Result<Run, String> {
    let names = names(n);
    let warmup = Client::with_uri_str(server.uri())
        .await
        .map_err(|e| e.to_string())?;
    warmup
        .database("warmup")
        .collection::<Document>("items")
        .find_one(doc! {})
        .await
        .map_err(|e| e.to_string())?;
    let (heap0, rss0) = (counting_alloc::live(), rss_kb());
    // One client per database, kept for the warm pass, as a per-tenant pool cache would.
    let mut colls: Vec<Collection<Document>> = Vec::with_capacity(n);
    let mut clients = Vec::with_capacity(n);
    let mut first = Vec::with_capacity(n);
    for name in &names {
        let t = Instant::now();
        let client = Client::with_uri_str(server.uri())
            .await
            .map_err(|e| e.to_string())?;
        let coll = client.database(name).collection::<Document>("items");
        coll.find_one(doc! {})
            .await
            .map_err(|e| format!("after {} clients: {e}", clients.len()))?;
        first.push(t.elapsed());
        colls.push(coll);
        clients.push(client);
    }
    first.sort_unstable();
    let (heap1, rss1) = (counting_alloc::live(), rss_kb());
    let warm = timed_pass(n, |i| {
        let c = colls[i].clone();
        async move {
            c.find_one(doc! {}).await.map_err(|e| e.to_string())?;
            Ok(())
        }
    })
    .await?;
    let connections = server.connection_count().await.map_err(|e| e.to_string())?;
    for c in clients {
        c.shutdown().immediate(true).await;
    }
    warmup.shutdown().await;
    Ok(Run {
        connections,
        heap_per_db: (heap1 - heap0) as f64 / n as f64,
        rss_kb_per_db: (rss1 - rss0) as f64 / n as f64,
        first,
        warm,
    })
}

fn child(approach: &str, n: usize) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let result = rt.block_on(async {
        let server = TestServer::start().await.map_err(|e| e.to_string())?;
        let run = match approach {
            "polymongo" => polymongo_run(&server, n).await,
            _ => naive_run(&server, n).await,
        };
        drop(server);
        run
    });
    match result {
        Ok(r) => println!(
            "RESULT\t{}\t{:.0}\t{:.2}\t{:.1}\t{:.1}\t{:.1}\t{:.1}",
            r.connections,
            r.heap_per_db,
            r.rss_kb_per_db,
            percentile(&r.first, 0.5),
            percentile(&r.first, 0.95),
            percentile(&r.warm, 0.5),
            percentile(&r.warm, 0.95),
        ),
        Err(e) => println!("FAILED\t{e}"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.first().map(String::as_str) == Some("child") {
        let n = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
        child(&args[1], n);
        return;
    }
    let ns: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let ns = if ns.is_empty() {
        vec![10, 100, 1_000, 10_000]
    } else {
        ns
    };
    let exe = std::env::current_exe().expect("own path");
    println!(
        "| N | approach | server connections | heap B / db | RSS KB / db | first touch p50 / p95 (µs) | warm p50 / p95 (µs) |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|");
    let mut naive_broke = false;
    for &n in &ns {
        for approach in ["polymongo", "naive"] {
            if approach == "naive" && naive_broke {
                println!("| {n} | naive | not run: it failed at a smaller N | | | | |");
                continue;
            }
            let out = Command::new(&exe)
                .args(["child", approach, &n.to_string()])
                .output()
                .expect("child process");
            let stdout = String::from_utf8_lossy(&out.stdout);
            match stdout
                .lines()
                .find(|l| l.starts_with("RESULT") || l.starts_with("FAILED"))
            {
                Some(line) if line.starts_with("RESULT") => {
                    let f: Vec<&str> = line.split('\t').collect();
                    println!(
                        "| {n} | {approach} | {} | {} | {} | {} / {} | {} / {} |",
                        f[1], f[2], f[3], f[4], f[5], f[6], f[7]
                    );
                }
                Some(line) => {
                    if approach == "naive" {
                        naive_broke = true;
                    }
                    println!("| {n} | {approach} | failed: {} | | | | |", &line[7..]);
                }
                None => {
                    if approach == "naive" {
                        naive_broke = true;
                    }
                    let err = String::from_utf8_lossy(&out.stderr);
                    let last = err.lines().last().unwrap_or("no output");
                    println!("| {n} | {approach} | failed: {last} | | | | |");
                }
            }
        }
    }
}
