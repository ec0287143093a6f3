//! The example service under load on a pool of 2 behind a slow network: every request is
//! answered within the service's bound — refused with 503 and `Retry-After` once no place in
//! the pool comes free within its queue timeout — and no write is both stored and answered 503.

#[allow(dead_code)] // the test drives the service, not every helper of the example
#[path = "../examples/tenant-service/app.rs"]
mod app;
mod common;

use std::time::{Duration, Instant};

use http_body_util::BodyExt;

/// Requests sent at once, as in the measurement (24 waited up to 39 s before).
const REQUESTS: usize = 48;
/// One way, per chunk: a round trip through the proxy takes at least twice this.
const LATENCY: Duration = Duration::from_millis(150);
/// Scheduling on a loaded machine, on top of the service's own bound.
const SLACK: Duration = Duration::from_secs(2);

struct Answer {
    text: String,
    status: u16,
    retry_after: bool,
    took: Duration,
}

async fn post(addr: std::net::SocketAddr, text: String) -> Answer {
    let started = Instant::now();
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let body = serde_json::json!({ "text": text }).to_string();
    let request = hyper::Request::post("/notes")
        .header("host", "localhost")
        .header("x-tenant", "acme")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(axum::body::Bytes::from(body)))
        .expect("request");
    let response = sender.send_request(request).await.expect("answer");
    let status = response.status().as_u16();
    let retry_after = response.headers().contains_key("retry-after");
    let _ = response.into_body().collect().await;
    Answer {
        text,
        status,
        retry_after,
        took: started.elapsed(),
    }
}

#[tokio::test]
async fn a_pool_of_two_on_a_slow_network_answers_every_request_within_its_bound() {
    let server = common::server().await;
    let (proxy, poly) = common::proxied_manager(&server, 2).await;
    let tenants = vec!["acme".to_owned()];
    let tenancy = app::tenancy(&poly, "localhost", &tenants).unwrap();
    let bound = tenancy.limits().request;
    let (addr, serving) =
        common::listen(app::router(app::Backend::Poly(tenancy), Some(&poly))).await;
    // One pooled connection exists before the network slows.
    poly.ping("tenant_acme").await.unwrap();
    proxy.set_latency(LATENCY);

    let started = Instant::now();
    let requests: Vec<_> = (0..REQUESTS)
        .map(|i| tokio::spawn(post(addr, format!("note {i}"))))
        .collect();
    let mut answers = Vec::new();
    for r in requests {
        answers.push(r.await.expect("request task"));
    }
    let wall = started.elapsed();
    proxy.pass_through();

    let raw = common::raw(&server).await;
    let stored = common::raw_texts(&raw, "tenant_acme").await;
    let (mut created, mut refused, mut timed_out) = (0, 0, 0);
    let mut slowest = Duration::ZERO;
    for a in &answers {
        slowest = slowest.max(a.took);
        assert!(
            a.took <= bound + SLACK,
            "{} answered after {:?}, past the bound {bound:?}",
            a.text,
            a.took
        );
        match a.status {
            201 => {
                created += 1;
                assert!(
                    stored.contains(&a.text),
                    "{} answered 201, not stored",
                    a.text
                );
            }
            503 => {
                refused += 1;
                assert!(a.retry_after, "{}: 503 without Retry-After", a.text);
                assert!(
                    !stored.contains(&a.text),
                    "{} was stored and answered 503: a retry would duplicate it",
                    a.text
                );
            }
            504 => {
                timed_out += 1;
                assert!(!a.retry_after, "{}: a timeout must not say retry", a.text);
            }
            other => panic!("{}: unexpected status {other}", a.text),
        }
    }
    eprintln!(
        "load: {REQUESTS} requests, pool 2, {LATENCY:?} each way: {created} created, \
         {refused} refused 503, {timed_out} timed out 504; slowest {slowest:?} (bound {bound:?}); \
         all answered in {wall:?}"
    );
    assert!(created >= 2, "the pool served some: {created}");
    assert!(refused > 0, "a full pool refused some: {refused}");
    serving.abort();
    poly.close_all(Duration::from_secs(5)).await;
}
