//! A small load generator for the notes service: requests spread over one or more instances,
//! one tenant (the hot one) getting most of them, so `polymongo top --app` has a busiest
//! tenant to show.
//!
//! Shared by `main.rs` (`tenant-service load …`) and by the command-line tool's tests, which
//! run it against two instances in the test process.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// What to send, where.
#[derive(Debug, Clone)]
pub struct LoadSettings {
    /// Base URLs of the instances (`http://127.0.0.1:3000`), used in turn.
    pub targets: Vec<String>,
    /// Every tenant that gets requests.
    pub tenants: Vec<String>,
    /// The tenant that gets `hot_percent` % of the requests (the others share the rest).
    pub hot: String,
    /// Share of the requests for `hot`, in percent.
    pub hot_percent: u32,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Pause of each worker between two requests (keeps a shared machine usable).
    pub pause: Duration,
}

impl Default for LoadSettings {
    fn default() -> Self {
        LoadSettings {
            targets: vec!["http://127.0.0.1:3000".to_owned()],
            tenants: crate::app::DEFAULT_TENANTS.map(str::to_owned).to_vec(),
            hot: crate::app::DEFAULT_TENANTS[0].to_owned(),
            hot_percent: 80,
            concurrency: 4,
            pause: Duration::from_millis(5),
        }
    }
}

/// What was sent.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Requests answered 2xx.
    pub ok: u64,
    /// Requests answered otherwise, or not answered.
    pub failed: u64,
    /// Requests sent, by tenant.
    pub by_tenant: BTreeMap<String, u64>,
}

/// The tenant of the `n`th request: `hot` for `hot_percent` of every 100, the others in turn.
fn tenant_of(settings: &LoadSettings, n: u64) -> &str {
    let others: Vec<&String> = settings
        .tenants
        .iter()
        .filter(|t| **t != settings.hot)
        .collect();
    if others.is_empty() || (n % 100) < u64::from(settings.hot_percent) {
        &settings.hot
    } else {
        others[(n as usize / 100 + n as usize) % others.len()]
    }
}

/// Sends requests (a note created, then a page listed, in turn) until `stop` completes.
pub async fn run(settings: LoadSettings, stop: impl Future<Output = ()>) -> LoadReport {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let report = Arc::new(Mutex::new(LoadReport::default()));
    let done = Arc::new(AtomicBool::new(false));
    let settings = Arc::new(settings);
    let mut workers = Vec::new();
    for worker in 0..settings.concurrency.max(1) {
        let (client, report, done, settings) = (
            client.clone(),
            Arc::clone(&report),
            Arc::clone(&done),
            Arc::clone(&settings),
        );
        workers.push(tokio::spawn(async move {
            let mut n = worker as u64;
            while !done.load(Ordering::Relaxed) {
                let tenant = tenant_of(&settings, n).to_owned();
                let target = &settings.targets[n as usize % settings.targets.len()];
                let request = if n.is_multiple_of(2) {
                    Request::builder()
                        .method(Method::POST)
                        .uri(format!("{target}/notes"))
                        .header("content-type", "application/json")
                        .header("x-tenant", &tenant)
                        .body(Full::new(Bytes::from(format!(r#"{{"text":"load {n}"}}"#))))
                } else {
                    Request::builder()
                        .uri(format!("{target}/notes?limit=5"))
                        .header("x-tenant", &tenant)
                        .body(Full::new(Bytes::new()))
                };
                let ok = match request {
                    Ok(request) => match client.request(request).await {
                        Ok(response) => {
                            let ok = response.status().is_success();
                            // Read to the end, so the connection is reused.
                            let _ = response.into_body().collect().await;
                            ok
                        }
                        Err(_) => false,
                    },
                    Err(_) => false,
                };
                {
                    let mut r = report.lock().unwrap_or_else(|p| p.into_inner());
                    if ok {
                        r.ok += 1;
                    } else {
                        r.failed += 1;
                    }
                    *r.by_tenant.entry(tenant).or_default() += 1;
                }
                n += settings.concurrency.max(1) as u64;
                tokio::time::sleep(settings.pause).await;
            }
        }));
    }
    stop.await;
    done.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    let report = report.lock().unwrap_or_else(|p| p.into_inner()).clone();
    report
}
