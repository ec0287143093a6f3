//! Routing through the tenant directory, in three parts, each on test-kit servers (a control
//! cluster holding the directory and two cells holding the tenants' databases):
//!
//! 1. **warm routing**: the cost per call, no I/O, over `--tenants` tenants already routed
//!    once, side by side in one process: the raw driver's `client.database(n).collection(c)`,
//!    today's `model.db(name)`, then through the directory `model.tenant(id)` and
//!    `poly.tenant(id)` followed by `.model::<T>()` (each with the database prefix `t_`, and
//!    without a prefix on a second directory), plus the route alone and the route through a
//!    kept `Tenants`, so the parts can be told apart. A route's future is polled as an
//!    `.await` in a running task polls it (with the task's context). Median ns per
//!    call over `--batches` batches of one pass over every tenant, the variants interleaved.
//!    Where valgrind is on `PATH`, also instructions per call: each variant runs in a child
//!    process under `valgrind --tool=callgrind --toggle-collect=...`, which counts only the
//!    instructions inside the measured loop (warm-up and set-up are not counted).
//! 2. **cold burst**: `--tenants` tenants created, then a fresh manager receives
//!    `--tenants × --per-tenant` first requests, all spawned at once in a random order (each
//!    routes its tenant and does a `find_one`): directory reads issued (the manager's
//!    `cache_misses`, and independently the control server's `serverStatus.opcounters.query`
//!    where the server reports it), latency percentiles of the route and of route + find, and
//!    wall time; against the same burst through `model.db(name)` on a manager without a
//!    directory whose databases are routed to the same cells by `DbConfig::uri`. Each row on
//!    fresh servers.
//! 3. **invalidation delay**: instance A suspends a tenant; instance B, which routes it every
//!    millisecond, sees `Suspended` after some delay. `--samples` samples (a fresh tenant each,
//!    after a random pause so the change falls anywhere in B's refresh period), with the
//!    change stream (where the control server has change streams) and by polling only
//!    (`refresh` 1 s and 100 ms).
//!
//! ```text
//! cargo bench -p polymongo --bench directory                         # all parts, defaults
//! cargo bench -p polymongo --bench directory -- warm                 # one part (warm | burst | invalidation)
//! cargo bench -p polymongo --bench directory -- --tenants 200 --per-tenant 5 --samples 10
//! POLYMONGO_TEST_SERVER=mongoeco cargo bench -p polymongo --bench directory
//! ```
//!
//! Defaults: `--tenants 1000 --per-tenant 10 --samples 20 --batches 300 --calls 100000`
//! (`--calls`: calls counted per variant under callgrind; `--no-callgrind` skips it).
//! Managers here use `watch(false)` unless the row says otherwise: on nx-27017 an open change
//! stream makes the server answer `getMore` without pause (QUIRKS.md), which would load the
//! control server under every other figure.

use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::Client;
use polymongo::tenants::{CreateTenant, TenantError, TenantInfo};
use polymongo::{ClusterConfig, DbConfig, DirectoryConfig, Error, Model, ModelHandle, PolyMongo};
use polymongo_testkit::{Capability, TestServer};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Note {
    tenant: String,
}

impl Model for Note {
    const COLLECTION: &'static str = "notes";
}

/// Pool size of every manager here (the driver's default, said explicitly).
const POOL: u32 = 10;
/// Concurrency of the set-up's creates and seeds.
const SETUP_CONCURRENCY: usize = 16;
/// The second directory of part 1, read without a database prefix.
const BARE_DIRECTORY: &str = "polymongo_directory_bare";
/// Refresh of managers whose figures must not include the refresher's reads.
const QUIET_REFRESH: Duration = Duration::from_secs(3600);

struct Args {
    parts: Vec<String>,
    tenants: usize,
    per_tenant: usize,
    samples: usize,
    batches: usize,
    calls: usize,
    callgrind: bool,
}

fn parse_args(raw: &[String]) -> Args {
    let mut a = Args {
        parts: Vec::new(),
        tenants: 1_000,
        per_tenant: 10,
        samples: 20,
        batches: 300,
        calls: 100_000,
        callgrind: true,
    };
    let mut it = raw.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| -> usize {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} needs a number"))
        };
        match arg.as_str() {
            "--tenants" => a.tenants = value("--tenants").max(1),
            "--per-tenant" => a.per_tenant = value("--per-tenant").max(1),
            "--samples" => a.samples = value("--samples").max(1),
            "--batches" => a.batches = value("--batches").max(1),
            "--calls" => a.calls = value("--calls").max(1),
            "--no-callgrind" => a.callgrind = false,
            "warm" | "burst" | "invalidation" => a.parts.push(arg.clone()),
            other => panic!("unknown argument {other:?} (see the bench's doc comment)"),
        }
    }
    if a.parts.is_empty() {
        a.parts = vec!["warm".into(), "burst".into(), "invalidation".into()];
    }
    a
}

/// splitmix64: a seeded, repeatable order without another dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

struct Fleet {
    control: TestServer,
    a: TestServer,
    b: TestServer,
}

async fn server() -> TestServer {
    TestServer::start().await.expect("test server")
}

async fn fleet() -> Fleet {
    Fleet {
        control: server().await,
        a: server().await,
        b: server().await,
    }
}

/// The fleet's addresses: control, cell a, cell b.
#[derive(Clone)]
struct Uris {
    control: String,
    a: String,
    b: String,
}

impl Fleet {
    fn uris(&self) -> Uris {
        Uris {
            control: self.control.uri().to_owned(),
            a: self.a.uri().to_owned(),
            b: self.b.uri().to_owned(),
        }
    }
}

/// A manager on the fleet: directory `directory` on the control (main) cluster, tenants on
/// cells a and b.
async fn instance(
    u: &Uris,
    directory: &str,
    prefix: &str,
    refresh: Duration,
    watch: bool,
) -> PolyMongo {
    PolyMongo::builder()
        .uri(&u.control)
        .max_pool_size(POOL)
        .cluster("cell_a", ClusterConfig::new(&u.a))
        .cluster("cell_b", ClusterConfig::new(&u.b))
        .directory(
            DirectoryConfig::on("main")
                .database(directory)
                .database_prefix(prefix)
                .refresh(refresh)
                .watch(watch)
                // A refresh of an hour stands for "no polling" in some measurements.
                .max_staleness(Some((refresh * 2).max(Duration::from_secs(60)))),
        )
        .build()
        .await
        .expect("manager")
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:05}")).collect()
}

/// Creates every tenant (16 at a time); their records, in `ids` order.
async fn create_all(poly: &PolyMongo, ids: &[String]) -> Vec<TenantInfo> {
    let tenants = poly.tenants().expect("directory");
    futures_util::stream::iter(ids)
        .map(|id| {
            let tenants = tenants.clone();
            async move { tenants.create(id, CreateTenant::new()).await }
        })
        .buffered(SETUP_CONCURRENCY)
        .map(|r| r.expect("create"))
        .collect()
        .await
}

/// Routes every tenant once (cold reads), so that the manager has them all cached.
async fn warm_all(poly: &PolyMongo, ids: &[String]) {
    futures_util::stream::iter(ids)
        .for_each_concurrent(SETUP_CONCURRENCY, |id| async move {
            // The model's collection too, as `.db(name)`'s row is warmed with its own.
            let t = poly.tenant(id).await.expect("route");
            t.model::<Note>().expect("model");
        })
        .await;
}

fn median(v: &mut [f64]) -> f64 {
    percentile(v, 0.5)
}

/// Nearest-rank percentile (sorts `v`).
fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NAN, f64::max)
}

// ---------------------------------------------------------------------------------------------
// Part 1: warm routing.

/// What part 1 routes with: everything warm.
struct Warm {
    ids: Vec<String>,
    bare_ids: Vec<String>,
    names: Vec<String>,
    raw: Client,
    notes: ModelHandle<Note>,
    dir_notes: ModelHandle<Note>,
    bare_notes: ModelHandle<Note>,
    plain: PolyMongo,
    dir: PolyMongo,
    bare: PolyMongo,
    tenants: polymongo::tenants::Tenants,
}

/// The variants of part 1, by index (a `match` on an integer, so choosing one costs the same
/// few instructions for all).
const VARIANTS: [&str; 9] = [
    "raw",
    "db",
    "model_tenant",
    "model_tenant_bare",
    "tenant_model",
    "tenant_model_bare",
    "route_only",
    "kept_tenants_model",
    "loop",
];

fn variant_label(v: usize) -> &'static str {
    match v {
        0 => "raw driver: `client.database(n).collection(c)`",
        1 => "`model.db(name)` (no directory)",
        2 => "`model.tenant(id)`, prefix `t_`",
        3 => "`model.tenant(id)`, no prefix",
        4 => "`poly.tenant(id)` + `.model::<T>()`, prefix `t_`",
        5 => "`poly.tenant(id)` + `.model::<T>()`, no prefix",
        6 => "`poly.tenant(id)` alone, prefix `t_`",
        7 => "kept `Tenants`: `tenants.route(id)` + `.model::<T>()`, prefix `t_`",
        _ => "the loop alone (`black_box` of the name): the floor under every row",
    }
}

/// A warm route, polled once, as an `.await` in a running task polls it (the task's context
/// is already there): the warm path has no await point, so it is ready at once.
#[inline(always)]
fn ready<T>(f: impl Future<Output = polymongo::Result<T>>) -> T {
    let mut f = std::pin::pin!(f);
    match f
        .as_mut()
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    {
        std::task::Poll::Ready(r) => r.expect("warm route"),
        std::task::Poll::Pending => panic!("a warm route is ready at the first poll"),
    }
}

impl Warm {
    async fn build(u: &Uris, n: usize) -> Warm {
        let ids = ids("w", n);
        let bare_ids: Vec<String> = ids.iter().map(|i| format!("bare_{i}")).collect();
        let names: Vec<String> = ids.iter().map(|i| format!("t_{i}")).collect();
        let raw = Client::with_uri_str(&u.a).await.expect("raw client");
        let plain = PolyMongo::builder()
            .uri(&u.a)
            .max_pool_size(POOL)
            .build()
            .await
            .expect("manager");
        let notes = plain.model::<Note>();
        for name in &names {
            notes.db(name).expect("warm .db");
        }
        let dir = instance(u, "polymongo_directory", "t_", QUIET_REFRESH, false).await;
        let bare = instance(u, BARE_DIRECTORY, "", QUIET_REFRESH, false).await;
        warm_all(&dir, &ids).await;
        warm_all(&bare, &bare_ids).await;
        let tenants = dir.tenants().expect("directory");
        let dir_notes = dir.model::<Note>();
        let bare_notes = bare.model::<Note>();
        Warm {
            ids,
            bare_ids,
            names,
            raw,
            notes,
            dir_notes,
            bare_notes,
            plain,
            dir,
            bare,
            tenants,
        }
    }

    /// One call of variant `v` on tenant `i`.
    #[inline(always)]
    fn call(&self, v: usize, i: usize) {
        match v {
            0 => {
                black_box(
                    self.raw
                        .database(&self.names[i])
                        .collection::<Note>(Note::COLLECTION),
                );
            }
            1 => {
                black_box(self.notes.db(&self.names[i]).expect("warm"));
            }
            2 => {
                black_box(ready(self.dir_notes.tenant(&self.ids[i])));
            }
            3 => {
                black_box(ready(self.bare_notes.tenant(&self.bare_ids[i])));
            }
            4 => {
                let t = ready(self.dir.tenant(&self.ids[i]));
                black_box(t.model::<Note>().expect("model"));
            }
            5 => {
                let t = ready(self.bare.tenant(&self.bare_ids[i]));
                black_box(t.model::<Note>().expect("model"));
            }
            6 => {
                black_box(ready(self.dir.tenant(&self.ids[i])));
            }
            7 => {
                let t = ready(self.tenants.route(&self.ids[i]));
                black_box(t.model::<Note>().expect("model"));
            }
            _ => {
                black_box(&self.names[i]);
            }
        }
    }

    /// Median ns per call of each variant over `batches` passes over every tenant, the
    /// variants interleaved (rotated each batch).
    fn time(&self, batches: usize) -> Vec<(usize, f64, f64, f64)> {
        let n = self.ids.len();
        let mut per: Vec<Vec<f64>> = vec![Vec::with_capacity(batches); VARIANTS.len()];
        for b in 0..batches {
            for k in 0..VARIANTS.len() {
                let v = (b + k) % VARIANTS.len();
                let t = Instant::now();
                for i in 0..n {
                    self.call(v, i);
                }
                per[v].push(t.elapsed().as_nanos() as f64 / n as f64);
            }
        }
        per.iter_mut()
            .enumerate()
            .map(|(v, s)| (v, median(s), percentile(s, 0.1), percentile(s, 0.9)))
            .collect()
    }
}

impl Warm {
    /// Median ns per call of variant `v` with `threads` OS threads calling at once, each over
    /// its own share of the tenants (no two threads on one tenant): what shared state costs
    /// when several cores route together (a counter or a lock every call touches).
    fn time_threads(&self, v: usize, threads: usize, batches: usize) -> f64 {
        let n = self.ids.len();
        let mut per = Vec::with_capacity(batches);
        for _ in 0..batches {
            let start = std::sync::Barrier::new(threads);
            let took: Vec<Duration> = std::thread::scope(|s| {
                let workers: Vec<_> = (0..threads)
                    .map(|k| {
                        let start = &start;
                        s.spawn(move || {
                            start.wait();
                            let t = Instant::now();
                            for i in (k..n).step_by(threads) {
                                self.call(v, i);
                            }
                            t.elapsed()
                        })
                    })
                    .collect();
                workers
                    .into_iter()
                    .map(|w| w.join().expect("worker"))
                    .collect()
            });
            let slowest = took.iter().max().copied().unwrap_or_default();
            per.push(slowest.as_nanos() as f64 / (n / threads) as f64);
        }
        median(&mut per)
    }
}

/// The loop callgrind counts (`--toggle-collect`): `calls` calls of one variant.
#[inline(never)]
fn callgrind_measured_loop(w: &Warm, v: usize, calls: usize) {
    let n = w.ids.len();
    let mut i = 0;
    for _ in 0..calls {
        w.call(v, i);
        i += 1;
        if i == n {
            i = 0;
        }
    }
}

/// Child process for callgrind: builds the warm managers on the parent's fleet and runs one
/// variant's loop.
fn callgrind_child(args: &[String]) {
    let (v, calls, n) = (
        args[0].parse().expect("variant"),
        args[1].parse().expect("calls"),
        args[2].parse().expect("tenants"),
    );
    let u = Uris {
        control: args[3].clone(),
        a: args[4].clone(),
        b: args[5].clone(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let w = rt.block_on(Warm::build(&u, n));
    let _in_rt = rt.enter();
    callgrind_measured_loop(&w, v, calls);
    println!("DONE");
    // The managers and clients are not closed: the counted part is over, and dropping a
    // driver `Client` outside its runtime panics.
    std::process::exit(0);
}

fn valgrind_available() -> bool {
    Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Instructions per call of variant `v` under callgrind, counted inside the measured loop.
fn instructions_per_call(u: &Uris, v: usize, calls: usize, n: usize) -> Result<f64, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    // POLYMONGO_CALLGRIND_DIR keeps each child's profile there (`callgrind.<variant>.out`),
    // for `callgrind_annotate`.
    let out_file = std::env::var("POLYMONGO_CALLGRIND_DIR").map_or_else(
        |_| "/dev/null".to_owned(),
        |dir| format!("{dir}/callgrind.{v}.out"),
    );
    let out = Command::new("valgrind")
        .args([
            "--tool=callgrind",
            &format!("--callgrind-out-file={out_file}"),
            "--toggle-collect=*callgrind_measured_loop*",
        ])
        .arg(exe)
        .args([
            "callgrind-child",
            &v.to_string(),
            &calls.to_string(),
            &n.to_string(),
        ])
        .args([&u.control, &u.a, &u.b])
        .output()
        .map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !stdout.contains("DONE") {
        return Err(stderr.lines().last().unwrap_or("no output").to_owned());
    }
    let collected: f64 = stderr
        .lines()
        .find_map(|l| l.split("Collected :").nth(1))
        .and_then(|s| s.trim().parse().ok())
        .ok_or("no `Collected` line from callgrind")?;
    Ok(collected / calls as f64)
}

async fn part_warm(a: &Args) {
    let n = a.tenants;
    println!("\n## Part 1: warm routing, {n} tenants cached, no I/O");
    let f = fleet().await;
    let u = f.uris();
    let t = Instant::now();
    let admin = instance(&u, "polymongo_directory", "t_", QUIET_REFRESH, false).await;
    create_all(&admin, &ids("w", n)).await;
    let admin_bare = instance(&u, BARE_DIRECTORY, "", QUIET_REFRESH, false).await;
    let bare: Vec<String> = ids("w", n).iter().map(|i| format!("bare_{i}")).collect();
    create_all(&admin_bare, &bare).await;
    println!(
        "set-up: {} tenants created in two directories in {:.1} s",
        2 * n,
        t.elapsed().as_secs_f64()
    );
    admin.close_all(Duration::from_secs(5)).await;
    admin_bare.close_all(Duration::from_secs(5)).await;

    let w = Warm::build(&u, n).await;
    let before = w.dir.tenants().expect("directory").stats();
    // A warm-up pass of every variant, then the measured batches.
    w.time(3);
    let timed = w.time(a.batches);
    let after = w.dir.tenants().expect("directory").stats();
    let raw_ns = timed[0].1;
    let db_ns = timed[1].1;
    println!(
        "wall clock: median ns per call over {} batches of {n} calls (one per tenant), p10–p90 across batches",
        a.batches
    );
    println!("| variant | ns / call (median) | p10 – p90 | vs raw | vs `.db(name)` |");
    println!("|---|---:|---:|---:|---:|");
    for (v, med, p10, p90) in &timed {
        println!(
            "| {} | {med:.1} | {p10:.1} – {p90:.1} | {:.2} | {:.2} |",
            variant_label(*v),
            med / raw_ns,
            med / db_ns
        );
    }
    println!(
        "directory figures of the measured manager during the timing: cache hits +{}, misses +{}",
        after.cache_hits - before.cache_hits,
        after.cache_misses - before.cache_misses
    );
    let threads = std::thread::available_parallelism().map_or(2, |p| p.get().max(2));
    println!(
        "{threads} threads at once, each over its own share of the tenants: median ns per call per thread over {} batches",
        a.batches
    );
    println!("| variant | ns / call, 1 thread | ns / call, {threads} threads | ratio |");
    println!("|---|---:|---:|---:|");
    for v in [1, 2, 4] {
        let together = w.time_threads(v, threads, a.batches);
        let alone = timed[v].1;
        println!(
            "| {} | {alone:.1} | {together:.1} | {:.2} |",
            variant_label(v),
            together / alone
        );
    }

    if !a.callgrind {
        println!("callgrind: skipped (--no-callgrind)");
    } else if !valgrind_available() {
        println!(
            "callgrind: valgrind is not installed on this machine; instruction counts not measured"
        );
    } else {
        println!(
            "callgrind: instructions per call inside the measured loop ({} calls per variant, a child process each)",
            a.calls
        );
        println!("| variant | instructions / call | vs raw | vs `.db(name)` |");
        println!("|---|---:|---:|---:|");
        let mut counts = Vec::new();
        for v in 0..VARIANTS.len() {
            counts.push((v, instructions_per_call(&u, v, a.calls, n)));
        }
        let raw_i = counts[0].1.as_ref().ok().copied();
        let db_i = counts[1].1.as_ref().ok().copied();
        for (v, c) in counts {
            match c {
                Ok(i) => println!(
                    "| {} | {i:.0} | {} | {} |",
                    variant_label(v),
                    raw_i.map_or("".into(), |r| format!("{:.2}", i / r)),
                    db_i.map_or("".into(), |d| format!("{:.2}", i / d)),
                ),
                Err(e) => println!("| {} | failed: {e} | | |", variant_label(v)),
            }
        }
    }
    w.dir.close_all(Duration::from_secs(5)).await;
    w.plain.close_all(Duration::from_secs(5)).await;
    w.bare.close_all(Duration::from_secs(5)).await;
    w.raw.shutdown().immediate(true).await;
    drop(f);
}

// ---------------------------------------------------------------------------------------------
// Part 2: cold burst.

type BoxFut = Pin<Box<dyn Future<Output = Result<(Duration, Duration), String>> + Send>>;

/// One request: routes tenant `k` and does a `find_one`; (route time, route + find time).
trait Router: Send + Sync + 'static {
    fn request(self: Arc<Self>, k: usize) -> BoxFut;
}

struct ByDirectory {
    poly: PolyMongo,
    ids: Vec<String>,
}

impl Router for ByDirectory {
    fn request(self: Arc<Self>, k: usize) -> BoxFut {
        Box::pin(async move {
            let t = Instant::now();
            let tenant = self
                .poly
                .tenant(&self.ids[k])
                .await
                .map_err(|e| e.to_string())?;
            let route = t.elapsed();
            tenant
                .model::<Note>()
                .map_err(|e| e.to_string())?
                .find_one(doc! {})
                .await
                .map_err(|e| e.to_string())?;
            Ok((route, t.elapsed()))
        })
    }
}

struct ByDb {
    notes: ModelHandle<Note>,
    names: Vec<String>,
}

impl Router for ByDb {
    fn request(self: Arc<Self>, k: usize) -> BoxFut {
        Box::pin(async move {
            let t = Instant::now();
            let h = self.notes.db(&self.names[k]).map_err(|e| e.to_string())?;
            let route = t.elapsed();
            h.find_one(doc! {}).await.map_err(|e| e.to_string())?;
            Ok((route, t.elapsed()))
        })
    }
}

struct Burst {
    wall: Duration,
    route: Vec<f64>,
    total: Vec<f64>,
    errors: Vec<String>,
}

/// Every request spawned at once, in `order`; waits for all.
async fn burst(router: Arc<dyn Router>, order: &[usize]) -> Burst {
    let start = Instant::now();
    let handles: Vec<_> = order
        .iter()
        .map(|&k| tokio::spawn(Arc::clone(&router).request(k)))
        .collect();
    let mut b = Burst {
        wall: Duration::ZERO,
        route: Vec::with_capacity(order.len()),
        total: Vec::with_capacity(order.len()),
        errors: Vec::new(),
    };
    for h in handles {
        match h.await.expect("request task") {
            Ok((r, t)) => {
                b.route.push(r.as_secs_f64() * 1e3);
                b.total.push(t.as_secs_f64() * 1e3);
            }
            Err(e) => b.errors.push(e),
        }
    }
    b.wall = start.elapsed();
    b
}

/// `serverStatus.opcounters`, where the server reports them.
async fn opcounters(client: &Client) -> Option<Document> {
    let status = client
        .database("admin")
        .run_command(doc! { "serverStatus": 1 })
        .await
        .ok()?;
    status.get_document("opcounters").ok().cloned()
}

fn counter(d: &Document, key: &str) -> i64 {
    match d.get(key) {
        Some(Bson::Int32(i)) => i64::from(*i),
        Some(Bson::Int64(i)) => *i,
        Some(Bson::Double(f)) => *f as i64,
        _ => 0,
    }
}

fn burst_row(what: &str, b: &mut Burst, reads: &str, ops: &str) {
    let n = b.route.len();
    println!(
        "| {what} | {n} | {} | {reads} | {ops} | {:.1} / {:.1} / {:.1} | {:.2} / {:.2} / {:.2} | {:.2} |",
        b.errors.len(),
        percentile(&mut b.route, 0.5) * 1e3,
        percentile(&mut b.route, 0.99) * 1e3,
        max(&b.route) * 1e3,
        percentile(&mut b.total, 0.5),
        percentile(&mut b.total, 0.99),
        max(&b.total),
        b.wall.as_secs_f64()
    );
    if let Some(e) = b.errors.first() {
        println!("  first error: {e}");
    }
}

async fn part_burst(a: &Args) {
    let n = a.tenants;
    let requests = n * a.per_tenant;
    println!(
        "\n## Part 2: cold burst, {n} tenants, {requests} first requests ({} per tenant) spawned at once in a random order",
        a.per_tenant
    );
    let mut order: Vec<usize> = (0..n).flat_map(|k| [k].repeat(a.per_tenant)).collect();
    Rng(0x5EED).shuffle(&mut order);
    let tenant_ids = ids("b", n);
    let names: Vec<String> = tenant_ids.iter().map(|i| format!("t_{i}")).collect();

    // Row 1: through the directory.
    let f = fleet().await;
    let u = f.uris();
    let t = Instant::now();
    let admin = instance(&u, "polymongo_directory", "t_", QUIET_REFRESH, false).await;
    let infos = create_all(&admin, &tenant_ids).await;
    futures_util::stream::iter(&tenant_ids)
        .for_each_concurrent(SETUP_CONCURRENCY, |id| {
            let admin = &admin;
            async move {
                admin
                    .tenant(id)
                    .await
                    .expect("route")
                    .model::<Note>()
                    .expect("model")
                    .insert_one(Note { tenant: id.clone() })
                    .await
                    .expect("seed");
            }
        })
        .await;
    admin.close_all(Duration::from_secs(5)).await;
    println!(
        "set-up: {n} tenants created and seeded with one note each in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let on_a = infos.iter().filter(|i| i.cluster == "cell_a").count();
    println!("placement: {on_a} on cell_a, {} on cell_b", n - on_a);
    let control = Client::with_uri_str(&u.control).await.expect("raw client");
    let poly = instance(&u, "polymongo_directory", "t_", QUIET_REFRESH, false).await;
    // What one read by `_id` (the directory's cold read) adds to the opcounters, by the raw
    // client: the unit for reading the burst's figures.
    let c0 = opcounters(&control).await;
    control
        .database("polymongo_directory")
        .collection::<Document>("tenants")
        .find_one(doc! { "_id": "no such tenant" })
        .await
        .expect("raw read");
    let c1 = opcounters(&control).await;
    if let (Some(x), Some(y)) = (&c0, &c1) {
        println!(
            "one raw `find_one` by `_id` on the control server adds {} queries and {} commands to its opcounters (the `serverStatus` between included)",
            counter(y, "query") - counter(x, "query"),
            counter(y, "command") - counter(x, "command")
        );
    }
    let ops0 = opcounters(&control).await;
    let router = Arc::new(ByDirectory {
        poly: poly.clone(),
        ids: tenant_ids.clone(),
    });
    let mut dir_burst = burst(router, &order).await;
    let ops1 = opcounters(&control).await;
    let stats = poly.tenants().expect("directory").stats();
    let queries = match (&ops0, &ops1) {
        (Some(x), Some(y)) => format!(
            "{} queries, {} commands",
            counter(y, "query") - counter(x, "query"),
            counter(y, "command") - counter(x, "command")
        ),
        _ => "not reported by this server".into(),
    };
    println!("manager with a directory, refresh 1 h (no refresher read during the burst), watch off, pool {POOL} per cluster");
    println!("| routing | requests | errors | directory reads (`cache_misses`) | control server opcounters during the burst | route µs p50 / p99 / max | route + find_one ms p50 / p99 / max | wall s |");
    println!("|---|---:|---:|---:|---|---:|---:|---:|");
    // A request that neither hit the cache nor read waited on another's read.
    let joined =
        (dir_burst.route.len() as u64).saturating_sub(stats.cache_hits + stats.cache_misses);
    burst_row(
        "`poly.tenant(id)` (directory)",
        &mut dir_burst,
        &format!(
            "{} (cache hits {}, joined a read in flight {joined})",
            stats.cache_misses, stats.cache_hits
        ),
        &queries,
    );
    poly.close_all(Duration::from_secs(5)).await;
    control.shutdown().immediate(true).await;
    drop(f);

    // Row 2: the same burst through `.db(name)`, the same placement given as `DbConfig::uri`.
    let f = fleet().await;
    let u = f.uris();
    let cells = [
        Client::with_uri_str(&u.a).await.expect("raw client"),
        Client::with_uri_str(&u.b).await.expect("raw client"),
    ];
    futures_util::stream::iter(infos.iter().zip(&tenant_ids))
        .for_each_concurrent(SETUP_CONCURRENCY, |(info, id)| {
            let cell = &cells[usize::from(info.cluster != "cell_a")];
            async move {
                cell.database(&info.database)
                    .collection::<Note>(Note::COLLECTION)
                    .insert_one(Note { tenant: id.clone() })
                    .await
                    .expect("seed");
            }
        })
        .await;
    let control = Client::with_uri_str(&u.control).await.expect("raw client");
    let mut builder = PolyMongo::builder().uri(&u.control).max_pool_size(POOL);
    for info in &infos {
        let uri = if info.cluster == "cell_a" { &u.a } else { &u.b };
        builder = builder.db(&info.database, DbConfig::new().uri(uri));
    }
    let plain = builder.build().await.expect("manager");
    let ops0 = opcounters(&control).await;
    let router = Arc::new(ByDb {
        notes: plain.model::<Note>(),
        names,
    });
    let mut db_burst = burst(router, &order).await;
    let ops1 = opcounters(&control).await;
    let queries = match (&ops0, &ops1) {
        (Some(x), Some(y)) => format!(
            "{} queries, {} commands",
            counter(y, "query") - counter(x, "query"),
            counter(y, "command") - counter(x, "command")
        ),
        _ => "not reported by this server".into(),
    };
    burst_row(
        "`model.db(name)` (no directory; `DbConfig::uri` per database)",
        &mut db_burst,
        "none",
        &queries,
    );
    println!(
        "ratios directory / `.db`: route+find p50 {:.2}, p99 {:.2}; wall {:.2}",
        percentile(&mut dir_burst.total, 0.5) / percentile(&mut db_burst.total, 0.5),
        percentile(&mut dir_burst.total, 0.99) / percentile(&mut db_burst.total, 0.99),
        dir_burst.wall.as_secs_f64() / db_burst.wall.as_secs_f64()
    );
    plain.close_all(Duration::from_secs(5)).await;
    for c in cells {
        c.shutdown().immediate(true).await;
    }
    control.shutdown().immediate(true).await;
    drop(f);
}

// ---------------------------------------------------------------------------------------------
// Part 3: invalidation delay.

fn is_suspended(e: &Error) -> bool {
    matches!(e, Error::Tenant(t) if matches!(**t, TenantError::Suspended { .. }))
}

/// Routes `id` on `b` every millisecond until it is refused as suspended; when.
async fn watch_for_suspension(b: PolyMongo, id: String) -> Result<Instant, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match b.tenant(&id).await {
            Err(e) if is_suspended(&e) => return Ok(Instant::now()),
            Err(e) => return Err(e.to_string()),
            Ok(_) => {}
        }
        if Instant::now() > deadline {
            return Err("not seen within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn part_invalidation(a: &Args) {
    let s = a.samples;
    println!("\n## Part 3: invalidation delay, {s} samples per row");
    let f = fleet().await;
    let u = f.uris();
    let streams = f.control.has(Capability::ChangeStreams);
    let admin = instance(
        &u,
        "polymongo_directory",
        "t_",
        Duration::from_secs(1),
        false,
    )
    .await;
    let mut rows: Vec<(&str, Duration, bool)> = Vec::new();
    if streams {
        rows.push((
            "change stream (`watch(true)`, refresh 1 s)",
            Duration::from_secs(1),
            true,
        ));
    } else {
        println!(
            "change stream row not run: the {} server has no change streams",
            f.control.kind()
        );
    }
    rows.push(("polling only, refresh 1 s", Duration::from_secs(1), false));
    rows.push((
        "polling only, refresh 100 ms",
        Duration::from_millis(100),
        false,
    ));
    println!("A suspends (its own manager, watch off); B routes the tenant every 1 ms (resolution about 1 ms). Delay: from A's `suspend` returning to B's first refusal (negative: B refused before A had the reply)");
    println!("| B's configuration | samples | `suspend` call ms p50 | delay ms median | p90 | max | min | B invalidations / stream events |");
    println!("|---|---:|---:|---:|---:|---:|---:|---|");
    let mut rng = Rng(0xD1CE);
    for (r, (what, refresh, watch)) in rows.into_iter().enumerate() {
        let row_ids = ids(&format!("i{r}_"), s);
        create_all(&admin, &row_ids).await;
        let b = instance(&u, "polymongo_directory", "t_", refresh, watch).await;
        if watch {
            let until = Instant::now() + Duration::from_secs(20);
            while !b.tenants().expect("directory").stats().stream_open {
                assert!(Instant::now() < until, "B's change stream did not open");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let mut delays = Vec::with_capacity(s);
        let mut calls = Vec::with_capacity(s);
        let mut failures = Vec::new();
        for id in &row_ids {
            b.tenant(id).await.expect("B routes the tenant");
            // A random phase in B's refresh period (the stream needs none; 0–100 ms).
            let spread = if watch {
                Duration::from_millis(100)
            } else {
                refresh
            };
            let pause = spread.mul_f64(rng.below(1_000) as f64 / 1_000.0);
            tokio::time::sleep(pause).await;
            let watcher = tokio::spawn(watch_for_suspension(b.clone(), id.clone()));
            let t0 = Instant::now();
            admin
                .tenants()
                .expect("directory")
                .suspend(id)
                .await
                .expect("suspend");
            let t1 = Instant::now();
            match watcher.await.expect("watcher task") {
                Ok(seen) => {
                    let ms = if seen >= t1 {
                        (seen - t1).as_secs_f64() * 1e3
                    } else {
                        -((t1 - seen).as_secs_f64() * 1e3)
                    };
                    delays.push(ms);
                    calls.push((t1 - t0).as_secs_f64() * 1e3);
                }
                Err(e) => failures.push(e),
            }
        }
        let st = b.tenants().expect("directory").stats();
        println!(
            "| {what} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} / {} |",
            delays.len(),
            median(&mut calls),
            median(&mut delays),
            percentile(&mut delays, 0.9),
            max(&delays),
            delays.first().copied().unwrap_or(f64::NAN),
            st.invalidations,
            st.stream_events
        );
        if let Some(e) = failures.first() {
            println!("  {} samples failed; first: {e}", failures.len());
        }
        b.close_all(Duration::from_secs(5)).await;
    }
    admin.close_all(Duration::from_secs(5)).await;
    drop(f);
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.first().map(String::as_str) == Some("callgrind-child") {
        callgrind_child(&args[1..]);
        return;
    }
    let a = parse_args(&args);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let kind = server().await.kind();
        println!(
            "server: {kind} (fresh servers per part and per burst row); tenants {}, requests per tenant {}, samples {}",
            a.tenants, a.per_tenant, a.samples
        );
        for part in &a.parts {
            let t = Instant::now();
            match part.as_str() {
                "warm" => part_warm(&a).await,
                "burst" => part_burst(&a).await,
                _ => part_invalidation(&a).await,
            }
            println!("({part}: {:.0} s)", t.elapsed().as_secs_f64());
        }
    });
}
