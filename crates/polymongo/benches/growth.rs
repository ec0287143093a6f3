//! A long-lived service that meets many databases: does the manager give the memory back, and
//! do its figures stay cheap, however many databases it has seen?
//!
//! For each D, a child process (so heap and RSS figures are its own) starts a test-kit server
//! (or uses `MONGODB_URI`), builds a manager with usage analytics on (the default) and a short
//! `database_idle_timeout`, and:
//!
//! 1. touches D distinct databases once each through two models (`.db(name)`, handle dropped
//!    at once; no I/O), with one counted `find_one` through `run` on every 1 000th of them, so
//!    usage counters exist;
//! 2. while all D are cached (past `max_cached_databases`, once the housekeeper has forgotten
//!    the overflow: the count held still for 150 ms, waited for up to 10 s): heap bytes per
//!    database (counted by this binary's allocator),
//!    RSS, and the median time of `stats().general()`, `metrics::render` (feature `metrics`)
//!    and `stats().top_databases(10, ..)`; then the warm `.db(name)` cost against the raw
//!    driver's `client.database(n).collection(c)` (median per call over 1 000 batches of 1 000);
//! 3. waits (polling, with a deadline) until every database is forgotten for idleness, and
//!    measures heap, RSS (also after `malloc_trim`, which tells pages the allocator keeps from
//!    memory still held), and the same figures again.
//!
//! The parent compares each run's RSS after eviction with the D = 1 000 run's (or the smallest
//! D's). Targets (reported, not asserted): RSS back within 10 MB of the D = 1 000 figure;
//! `general()` and `render` under 100 µs at every D; at most 1 KB per cached database; warm
//! `.db()` no slower than raw.
//!
//! ```text
//! cargo bench -p polymongo --features metrics --bench growth              # D = 1e3 .. 1e6
//! cargo bench -p polymongo --features metrics --bench growth -- 1000 10000
//! cargo bench -p polymongo --bench growth -- --idle-ms 5000 100000        # other idle timeout
//! ```
//!
//! The idle timeout is 2 s (not the default 5 min) so a run is short; it grows with D
//! (`D × 20 µs` plus 3 ms per counted operation, once that is longer) so that all D databases
//! are still cached while they are measured, since touching a million databases takes seconds.
//!
//! `--max-cached N` sets `max_cached_databases` (default 100 000: with a larger D only that
//! many stay cached, the least recently used being forgotten as the run goes, and heap per
//! database is per cached database). `--sample-every N` runs the counted operation on every
//! N-th database (default 1 000): with `1`, every database has usage counters, as in a service
//! where each database gets traffic, and the usage board (`max_tracked_databases`) fills up.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::process::Command;
use std::time::{Duration, Instant};

use mongodb::bson::doc;
use mongodb::Client;
use polymongo::{Model, PolyMongo, TopBy, OTHER_DATABASES};

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

#[global_allocator]
static ALLOC: counting_alloc::Counting = counting_alloc::Counting;

#[derive(serde::Deserialize)]
struct Account {}
impl Model for Account {
    const COLLECTION: &'static str = "accounts";
}

#[derive(serde::Deserialize)]
struct Order {}
impl Model for Order {
    const COLLECTION: &'static str = "orders";
}

/// Every how many databases one counted operation runs (a server round trip), unless chosen
/// with `--sample-every`.
const SAMPLE_EVERY: usize = 1_000;
/// Calls per median of the stats figures.
const STAT_CALLS: usize = 200;
/// Batches × calls per batch for the warm-handle figures.
const BATCHES: usize = 1_000;
const PER_BATCH: usize = 1_000;
const DEFAULT_IDLE: Duration = Duration::from_secs(2);

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

fn mib(kb: i64) -> f64 {
    kb as f64 / 1024.0
}

fn heap() -> isize {
    counting_alloc::live()
}

/// Gives the allocator's free pages back to the system (glibc); `false` where unavailable.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() -> bool {
    extern "C" {
        fn malloc_trim(pad: usize) -> i32;
    }
    // SAFETY: glibc's `malloc_trim` takes a byte count and touches only the allocator's state.
    unsafe { malloc_trim(0) };
    true
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> bool {
    false
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median time of one call of `f`, in µs, over `STAT_CALLS` calls timed one by one.
fn median_us<R>(mut f: impl FnMut() -> R) -> f64 {
    black_box(f());
    median(
        (0..STAT_CALLS)
            .map(|_| {
                let t = Instant::now();
                black_box(f());
                t.elapsed().as_secs_f64() * 1e6
            })
            .collect(),
    )
}

/// Median time of one call of `f`, in ns, over `BATCHES` batches of `PER_BATCH` calls.
fn median_ns(mut f: impl FnMut()) -> f64 {
    for _ in 0..PER_BATCH {
        f();
    }
    median(
        (0..BATCHES)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..PER_BATCH {
                    f();
                }
                t.elapsed().as_nanos() as f64 / PER_BATCH as f64
            })
            .collect(),
    )
}

#[cfg(feature = "metrics")]
fn render_us(poly: &PolyMongo) -> f64 {
    median_us(|| polymongo::metrics::render(poly))
}

/// `NaN` (shown as `n/a`) without the `metrics` feature.
#[cfg(not(feature = "metrics"))]
fn render_us(_poly: &PolyMongo) -> f64 {
    f64::NAN
}

fn db_name(i: usize) -> String {
    format!("tenant_{i:07}")
}

/// Per database, how much longer than 2 s the idle timeout is made for a large D.
const IDLE_PER_DB: Duration = Duration::from_micros(20);

/// Per counted operation (a round trip to the test server, about 1 ms), the same.
const IDLE_PER_ROUND_TRIP: Duration = Duration::from_millis(3);

/// The idle timeout of a run over `d` databases: 2 s, or `d × 20 µs` plus 3 ms per counted
/// operation if longer (touching a database takes about 5 µs, a round trip about 1 ms; the
/// rest is margin on a shared machine), unless chosen.
fn idle_for(d: usize, sample_every: usize, chosen: Option<Duration>) -> Duration {
    let needed = IDLE_PER_DB * d as u32 + IDLE_PER_ROUND_TRIP * d.div_ceil(sample_every) as u32;
    chosen.unwrap_or_else(|| DEFAULT_IDLE.max(needed))
}

/// Heap bytes the driver's own objects for one database take: a `Database` and two
/// `Collection`s, as each registry entry holds (a floor for the bytes per database).
fn driver_bytes_per_db(client: &Client) -> f64 {
    const N: usize = 1_000;
    let mut held = Vec::with_capacity(N);
    let before = heap();
    for i in 0..N {
        let db = client.database(&db_name(i));
        let a = db.collection::<Account>(Account::COLLECTION);
        let b = db.collection::<Order>(Order::COLLECTION);
        held.push((db, a, b));
    }
    let bytes = (heap() - before) as f64 / N as f64;
    drop(held);
    bytes
}

/// The figures the stats and metrics give, timed.
struct Snapshot {
    heap: isize,
    rss_kb: i64,
    cached: usize,
    general_us: f64,
    render_us: f64,
    top_us: f64,
}

fn snapshot(poly: &PolyMongo) -> Snapshot {
    Snapshot {
        heap: heap(),
        rss_kb: rss_kb(),
        cached: poly.cached_databases(),
        general_us: median_us(|| poly.stats().general()),
        render_us: render_us(poly),
        top_us: median_us(|| poly.stats().top_databases(10, TopBy::Operations)),
    }
}

/// What a child run is asked to do.
#[derive(Clone, Copy)]
struct Setup {
    idle: Option<Duration>,
    sample_every: usize,
    max_cached: Option<usize>,
}

async fn run(uri: &str, d: usize, setup: Setup) -> Result<Vec<(&'static str, String)>, String> {
    let err = |e: polymongo::Error| e.to_string();
    let idle = idle_for(d, setup.sample_every, setup.idle);
    let sample_every = setup.sample_every;
    let mut builder = PolyMongo::builder().uri(uri).database_idle_timeout(idle);
    if let Some(max) = setup.max_cached {
        builder = builder.max_cached_databases(max);
    }
    let max_cached = builder.options().max_cached_databases;
    let poly = builder.build().await.map_err(err)?;
    let accounts = poly.model::<Account>();
    let orders = poly.model::<Order>();
    // Warm the pool, the usage board and the allocator's caches; this database is forgotten
    // with the others.
    accounts
        .db("warmup")
        .map_err(err)?
        .run(|c| c.find_one(doc! {}))
        .await
        .map_err(err)?;
    drop(orders.db("warmup").map_err(err)?);
    let _ = snapshot(&poly);
    let raw = Client::with_uri_str(uri).await.map_err(|e| e.to_string())?;
    let driver_bytes = driver_bytes_per_db(&raw);

    let (heap0, rss0) = (heap(), rss_kb());
    let start = Instant::now();
    let mut counted = 0u64;
    for i in 0..d {
        let name = db_name(i);
        drop(accounts.db(&name).map_err(err)?);
        drop(orders.db(&name).map_err(err)?);
        if i % sample_every == 0 {
            accounts
                .db(&name)
                .map_err(err)?
                .run(|c| c.find_one(doc! {}))
                .await
                .map_err(err)?;
            counted += 1;
        }
    }
    let touch = start.elapsed();
    // Past the bound the housekeeper is still forgetting the overflow (down to nine tenths of
    // it): measure once the count holds still, so the figures are the cost of the calls, not
    // of sharing two cores with that work.
    if d > max_cached {
        let settle = Instant::now();
        let mut last = poly.cached_databases();
        let mut still = 0;
        while still < 3 && settle.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = poly.cached_databases();
            still = if now == last { still + 1 } else { 0 };
            last = now;
        }
    }
    let cached = snapshot(&poly);
    let t_cached = start.elapsed();
    let general = poly.stats().general();
    let primary_count_cached = general.primary.database_count;

    // The hot path, on a cached database, against the driver alone.
    let name = db_name(d / 2);
    let warm_ns = median_ns(|| {
        black_box(accounts.db(black_box(&name)).ok());
    });
    let raw_ns = median_ns(|| {
        black_box(
            raw.database(black_box(&name))
                .collection::<Account>(Account::COLLECTION),
        );
    });
    raw.shutdown().await;
    let still_cached = poly.cached_databases();
    let t_warm = start.elapsed();

    // Idle past the timeout: everything is forgotten.
    let t = Instant::now();
    let deadline = idle * 2 + Duration::from_secs(60) + Duration::from_micros(20 * d as u64);
    while poly.cached_databases() > 0 && t.elapsed() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let evicted_after = t.elapsed();
    // Let the housekeeper's last pass and the driver's background work settle.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = snapshot(&poly);
    let general = poly.stats().general();
    let other_ops = poly
        .stats()
        .usage(OTHER_DATABASES)
        .map_or(-1, |u| u.operations as i64);
    let top_after = poly.stats().top_databases(10, TopBy::Operations).len();
    let trimmed = trim();
    let rss_trim = rss_kb();

    let f1 = |x: f64| format!("{x:.1}");
    let f2 = |x: f64| format!("{x:.2}");
    let out = vec![
        ("d", d.to_string()),
        ("idle_ms", idle.as_millis().to_string()),
        ("max_cached", max_cached.to_string()),
        ("touch_us_per_db", f2(touch.as_secs_f64() * 1e6 / d as f64)),
        ("t_cached_s", f2(t_cached.as_secs_f64())),
        ("t_warm_s", f2(t_warm.as_secs_f64())),
        ("sample_every", sample_every.to_string()),
        ("counted", counted.to_string()),
        ("cached", cached.cached.to_string()),
        ("cached_after_warm", still_cached.to_string()),
        ("primary_count_cached", primary_count_cached.to_string()),
        // Per database cached (all D of them unless the cache bound is below D).
        (
            "heap_per_db",
            format!(
                "{:.0}",
                (cached.heap - heap0) as f64 / cached.cached.clamp(1, d) as f64
            ),
        ),
        ("driver_bytes_per_db", format!("{driver_bytes:.0}")),
        (
            "heap_cached_mib",
            f1((cached.heap - heap0) as f64 / 1048576.0),
        ),
        ("rss0_mib", f1(mib(rss0))),
        ("rss_cached_mib", f1(mib(cached.rss_kb))),
        ("general_cached_us", f2(cached.general_us)),
        ("render_cached_us", f2(cached.render_us)),
        ("top_cached_us", f2(cached.top_us)),
        ("warm_ns", f1(warm_ns)),
        ("raw_ns", f1(raw_ns)),
        ("evicted", (after.cached == 0).to_string()),
        ("evicted_after_s", f1(evicted_after.as_secs_f64())),
        ("cached_after", after.cached.to_string()),
        ("in_use_after", general.databases_in_use.to_string()),
        (
            "primary_count_after",
            general.primary.database_count.to_string(),
        ),
        (
            "primary_listed_after",
            general.primary.databases.len().to_string(),
        ),
        ("other_ops", other_ops.to_string()),
        ("top_after", top_after.to_string()),
        (
            "heap_residual_mib",
            f1((after.heap - heap0) as f64 / 1048576.0),
        ),
        ("rss_after_mib", f1(mib(after.rss_kb))),
        (
            "rss_trim_mib",
            if trimmed {
                f1(mib(rss_trim))
            } else {
                "n/a".into()
            },
        ),
        ("general_after_us", f2(after.general_us)),
        ("render_after_us", f2(after.render_us)),
        ("top_after_us", f2(after.top_us)),
    ];
    poly.close_all(Duration::from_secs(5)).await;
    Ok(out)
}

fn child(d: usize, setup: Setup) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let result = rt.block_on(async {
        let (uri, server) = polymongo_testkit::uri_from_env_or_start()
            .await
            .map_err(|e| e.to_string())?;
        let out = run(&uri, d, setup).await;
        drop(server);
        out
    });
    match result {
        Ok(fields) => {
            let line: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!("RESULT\t{}", line.join("\t"));
        }
        Err(e) => println!("FAILED\t{e}"),
    }
}

fn show(v: Option<&String>) -> &str {
    match v.map(String::as_str) {
        Some("NaN") => "n/a",
        Some(s) => s,
        None => "?",
    }
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let mut ds = Vec::new();
    let mut idle = None;
    let mut child_d = None;
    let mut sample_every = SAMPLE_EVERY;
    let mut max_cached = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "child" => child_d = args.next().and_then(|s| s.parse().ok()),
            "--idle-ms" => {
                idle = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .map(Duration::from_millis)
            }
            "--sample-every" => {
                sample_every = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .filter(|&n| n > 0)
                    .unwrap_or(SAMPLE_EVERY)
            }
            "--max-cached" => max_cached = args.next().and_then(|s| s.parse().ok()),
            _ => ds.extend(a.parse::<usize>().ok()),
        }
    }
    if let Some(d) = child_d {
        child(
            d,
            Setup {
                idle,
                sample_every,
                max_cached,
            },
        );
        return;
    }
    if ds.is_empty() {
        ds = vec![1_000, 10_000, 100_000, 1_000_000];
    }
    let exe = std::env::current_exe().expect("own path");
    println!(
        "database_idle_timeout: {} (default 5 min; shortened so a run is short{})",
        idle.map_or_else(
            || format!("{DEFAULT_IDLE:?}"),
            |i: Duration| format!("{i:?}")
        ),
        if idle.is_none() {
            ", or D × 20 µs + 3 ms per counted operation when longer, so all D are still \
             cached while measured"
        } else {
            ""
        }
    );
    println!(
        "one counted operation (a round trip) every {sample_every} databases \
         (--sample-every N); the usage board ranks at most max_tracked_databases (1 000) of them"
    );
    println!(
        "max_cached_databases: {} (--max-cached N); past it the least recently used are \
         forgotten, so a larger D keeps only that many cached",
        max_cached.map_or_else(
            || format!("{} (default)", polymongo::DEFAULT_MAX_CACHED_DATABASES),
            |m| m.to_string()
        )
    );
    if cfg!(not(feature = "metrics")) {
        println!("render: n/a (build with --features metrics)");
    }
    let baseline_d = if ds.contains(&1_000) {
        1_000
    } else {
        *ds.iter().min().expect("at least one D")
    };
    // The baseline runs first, so every other run can be compared with it as it ends.
    ds.sort_unstable_by_key(|&d| (d != baseline_d, d));
    ds.dedup();
    let mut baseline: Option<f64> = None;
    let mut rows = Vec::new();
    for &d in &ds {
        let mut cmd = Command::new(&exe);
        cmd.args(["child", &d.to_string()]);
        cmd.args(["--sample-every", &sample_every.to_string()]);
        if let Some(max) = max_cached {
            cmd.args(["--max-cached", &max.to_string()]);
        }
        if let Some(i) = idle {
            cmd.args(["--idle-ms", &i.as_millis().to_string()]);
        }
        let out = cmd.output().expect("child process");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .find(|l| l.starts_with("RESULT") || l.starts_with("FAILED"));
        let Some(line) = line.filter(|l| l.starts_with("RESULT")) else {
            let why = line.map(str::to_owned).unwrap_or_else(|| {
                let err = String::from_utf8_lossy(&out.stderr);
                err.lines().last().unwrap_or("no output").to_owned()
            });
            println!("D={d}: failed: {why}");
            rows.push(format!("| {d} | failed: {why} | | | | | | | | |"));
            continue;
        };
        let f: BTreeMap<String, String> = line
            .split('\t')
            .skip(1)
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let get = |k: &str| show(f.get(k)).to_owned();
        let rss_after: f64 = f
            .get("rss_after_mib")
            .and_then(|s| s.parse().ok())
            .unwrap_or(f64::NAN);
        if d == baseline_d {
            baseline = Some(rss_after);
        }
        let growth =
            baseline.map_or_else(|| "n/a".to_owned(), |b| format!("{:+.1}", rss_after - b));
        println!("D={d}\tgrowth_vs_{baseline_d}_mib={growth}\t{}", &line[7..]);
        let mut flags = Vec::new();
        let cached: usize = f.get("cached").and_then(|s| s.parse().ok()).unwrap_or(0);
        if cached < d {
            flags.push(format!(
                "{cached} of {d} cached when measured (max_cached {})",
                get("max_cached")
            ));
        }
        if get("evicted") != "true" {
            flags.push(format!(
                "NOT evicted: {} still cached after {} s",
                get("cached_after"),
                get("evicted_after_s")
            ));
        }
        let dcell = if cached < d {
            format!("{d} ({cached} cached)")
        } else {
            d.to_string()
        };
        rows.push(format!(
            "| {dcell} | {} | {} | {} / {} | {} | {} / {} | {} / {} | {} / {} | {} / {} | {}s{} |",
            get("heap_per_db"),
            get("rss_cached_mib"),
            get("rss_after_mib"),
            get("rss_trim_mib"),
            growth,
            get("general_cached_us"),
            get("general_after_us"),
            get("render_cached_us"),
            get("render_after_us"),
            get("top_cached_us"),
            get("top_after_us"),
            get("warm_ns"),
            get("raw_ns"),
            get("evicted_after_s"),
            if flags.is_empty() {
                String::new()
            } else {
                format!("; {}", flags.join("; "))
            },
        ));
    }
    println!();
    println!(
        "| D | heap B / db cached | RSS MiB cached | RSS MiB after eviction / after trim | RSS growth vs D={baseline_d} (MiB) | general() µs cached / after | render µs cached / after | top_databases µs cached / after | warm db() / raw ns | evicted after |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!("{r}");
    }
}
