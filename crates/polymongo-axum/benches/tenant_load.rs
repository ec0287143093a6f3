//! HTTP load on the tenant-service example: polymongo (one pool) against the naive service (one
//! driver `Client` per tenant, created on demand), side by side in one run.
//!
//! ```sh
//! cargo bench -p polymongo-axum --bench tenant_load
//! TENANT_LOAD_TENANTS=10,100,1000 TENANT_LOAD_SECS=15 TENANT_LOAD_CONCURRENCY=32 \
//!     TENANT_LOAD_POOL=10 cargo bench -p polymongo-axum --bench tenant_load
//! ```
//!
//! For each tenant count and each service: a fresh test-kit server; the service started as a
//! child process (this same binary, `--service`, running the example's code); a built-in load
//! generator (`CONCURRENCY` keep-alive HTTP/1.1 connections, each sending its next request as
//! soon as the previous answer is read) for `SECS` seconds, the tenant drawn uniformly per
//! request and sent as `X-Tenant`, 90 % `GET /notes?limit=10` and 10 % `POST /notes`. Sampled
//! every 250 ms: the server's connection count (`serverStatus`, the test kit's probe) and the
//! service's RSS (`/proc/<pid>/status` `VmRSS`).

#[allow(dead_code)] // the bench uses the service, not every helper of the example
#[path = "../examples/tenant-service/app.rs"]
mod app;

use std::process::Stdio;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use polymongo_testkit::TestServer;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// polymongo's pool size unless `TENANT_LOAD_POOL` says otherwise.
const DEFAULT_POOL_SIZE: u32 = 10;

fn pool_size() -> u32 {
    env_or("TENANT_LOAD_POOL", DEFAULT_POOL_SIZE)
}

/// The name of tenant number `n`, the same in the load generator and the service's allow list.
fn tenant_name(n: u32) -> String {
    format!("t{n}")
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    if args.get(1).map(String::as_str) == Some("--service") {
        let (Some(uri), Some(mode), Some(Ok(tenants))) = (
            args.get(2),
            args.get(3),
            args.get(4).map(|n| n.parse::<u32>()),
        ) else {
            eprintln!("usage: tenant_load --service URI poly|naive TENANTS");
            std::process::exit(2);
        };
        let settings = app::Settings {
            uri: uri.clone(),
            addr: "127.0.0.1:0".into(),
            naive: mode == "naive",
            pool_size: pool_size(),
            domain: "localhost".into(),
            tenants: (0..tenants).map(tenant_name).collect(),
        };
        if let Err(e) = runtime.block_on(app::run(settings)) {
            eprintln!("service: {e}");
            std::process::exit(1);
        }
        return;
    }
    runtime.block_on(orchestrate());
}

struct Figures {
    service: &'static str,
    tenants: u32,
    requests: u64,
    errors: u64,
    secs: f64,
    p50_ms: f64,
    p99_ms: f64,
    conns_peak: i64,
    conns_end: i64,
    rss_peak_mib: f64,
    rss_end_mib: f64,
}

async fn orchestrate() {
    let secs: u64 = env_or("TENANT_LOAD_SECS", 15);
    let concurrency: usize = env_or("TENANT_LOAD_CONCURRENCY", 32);
    let tenant_counts: Vec<u32> = std::env::var("TENANT_LOAD_TENANTS")
        .unwrap_or_else(|_| "10,100,1000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    eprintln!(
        "tenant_load: {secs} s per run, {concurrency} connections, tenants {tenant_counts:?}, \
         polymongo pool size {}",
        pool_size()
    );
    let mut rows = Vec::new();
    for &tenants in &tenant_counts {
        for service in ["polymongo", "naive"] {
            let figures = one_run(service, tenants, secs, concurrency).await;
            eprintln!(
                "  {service:>9} {tenants:>5} tenants: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, \
                 {} errors, server conns peak {}, RSS peak {:.1} MiB",
                figures.requests as f64 / figures.secs,
                figures.p50_ms,
                figures.p99_ms,
                figures.errors,
                figures.conns_peak,
                figures.rss_peak_mib
            );
            rows.push(figures);
        }
    }
    println!();
    println!("| tenants | service | requests/s | p50 ms | p99 ms | errors | server conns peak / end | service RSS peak / end (MiB) |");
    println!("|---:|---|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {} | {} / {} | {:.1} / {:.1} |",
            r.tenants,
            r.service,
            r.requests as f64 / r.secs,
            r.p50_ms,
            r.p99_ms,
            r.errors,
            r.conns_peak,
            r.conns_end,
            r.rss_peak_mib,
            r.rss_end_mib
        );
    }
}

async fn one_run(service: &'static str, tenants: u32, secs: u64, concurrency: usize) -> Figures {
    let server = TestServer::start().await.expect("test server starts");
    let mode = if service == "naive" { "naive" } else { "poly" };
    let exe = std::env::current_exe().expect("own executable");
    let mut child = Command::new(exe)
        .args(["--service", server.uri(), mode, &tenants.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("service starts");
    let pid = child.id().expect("service pid");
    let addr = read_addr(&mut child).await;

    let server = Arc::new(server);
    let conns_peak = Arc::new(AtomicI64::new(0));
    let rss_peak = Arc::new(AtomicI64::new(0));
    let stop_sampling = Arc::new(tokio::sync::Notify::new());
    let sampler = {
        let (server, conns_peak, rss_peak, stop) = (
            Arc::clone(&server),
            Arc::clone(&conns_peak),
            Arc::clone(&rss_peak),
            Arc::clone(&stop_sampling),
        );
        tokio::spawn(async move {
            loop {
                if let Ok(n) = server.connection_count().await {
                    conns_peak.fetch_max(n, Ordering::Relaxed);
                }
                rss_peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(250)) => {}
                    () = stop.notified() => return,
                }
            }
        })
    };

    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let workers: Vec<_> = (0..concurrency)
        .map(|w| tokio::spawn(worker(addr.clone(), tenants, deadline, w as u64 + 1)))
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (lat, err) = w.await.expect("worker");
        latencies.extend(lat);
        errors += err;
    }
    let elapsed = started.elapsed().as_secs_f64();
    stop_sampling.notify_one();
    let _ = sampler.await;
    let conns_end = server.connection_count().await.unwrap_or(-1);
    let rss_end = rss_kib(pid);

    // SIGTERM: the services shut down gracefully.
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    if tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }

    latencies.sort_unstable();
    let pct = |p: usize| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = (latencies.len() * p / 100).min(latencies.len() - 1);
        latencies[i] as f64 / 1000.0
    };
    Figures {
        service,
        tenants,
        requests: latencies.len() as u64,
        errors,
        secs: elapsed,
        p50_ms: pct(50),
        p99_ms: pct(99),
        conns_peak: conns_peak.load(Ordering::Relaxed).max(conns_end),
        conns_end,
        rss_peak_mib: rss_peak.load(Ordering::Relaxed).max(rss_end) as f64 / 1024.0,
        rss_end_mib: rss_end as f64 / 1024.0,
    }
}

async fn read_addr(child: &mut Child) -> String {
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("service announces its address in time")
        .expect("service stdout")
        .expect("a line");
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    // Keep reading (and discarding) so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    addr
}

/// The process's resident set in KiB (0 once it is gone).
fn rss_kib(pid: u32) -> i64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// One keep-alive connection sending requests back to back until `deadline`. Returns the
/// latency of every answered request in microseconds, and the count of non-2xx answers and
/// failed requests.
async fn worker(addr: String, tenants: u32, deadline: Instant, seed: u64) -> (Vec<u64>, u64) {
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut latencies = Vec::with_capacity(16 * 1024);
    let mut errors = 0;
    'connect: while Instant::now() < deadline {
        let Ok(stream) = TcpStream::connect(&addr).await else {
            errors += 1;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let Ok((mut sender, conn)) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await
        else {
            errors += 1;
            continue;
        };
        tokio::spawn(conn);
        while Instant::now() < deadline {
            // xorshift64: cheap, deterministic per worker.
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let tenant = tenant_name((rng % u64::from(tenants)) as u32);
            let write = (rng >> 32).is_multiple_of(10);
            let builder = hyper::Request::builder()
                .header("host", "localhost")
                .header("x-tenant", tenant);
            let req = if write {
                builder
                    .method("POST")
                    .uri("/notes")
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from_static(
                        br#"{"text":"a note written under load"}"#,
                    )))
            } else {
                builder
                    .method("GET")
                    .uri("/notes?limit=10")
                    .body(Full::new(Bytes::new()))
            }
            .expect("request");
            let sent = Instant::now();
            let Ok(response) = sender.send_request(req).await else {
                errors += 1;
                continue 'connect;
            };
            let ok = response.status().is_success();
            if response.into_body().collect().await.is_err() {
                errors += 1;
                continue 'connect;
            }
            latencies.push(sent.elapsed().as_micros() as u64);
            if !ok {
                errors += 1;
            }
        }
    }
    (latencies, errors)
}
