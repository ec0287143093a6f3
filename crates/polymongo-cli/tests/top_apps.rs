//! `polymongo top --app`: the figures of two running instances of the tenant-service example
//! (in this process, on a real test-kit server), under the example's load generator that
//! sends most requests to one tenant — merged by the built binary, as JSON lines and in a
//! real terminal (tmux).

#[allow(dead_code)] // the tests run the service, not every helper of the example
#[path = "../../polymongo-axum/examples/tenant-service/app.rs"]
mod app;
mod common;
#[path = "../../polymongo-axum/examples/tenant-service/load.rs"]
mod load;

use std::collections::BTreeMap;
use std::time::Duration;

use common::tmux::{tmux_available, Tmux};
use common::{free_port, run, spawn, BIN, HANG};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use polymongo::{Figures, PolyMongo};
use polymongo_testkit::TestServer;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

/// The tenant the load generator favours: not the first of the list, so it is not busiest by
/// accident of order.
const HOT: &str = "globex";

fn tenants() -> Vec<String> {
    app::DEFAULT_TENANTS.map(str::to_owned).to_vec()
}

/// One instance of the example service on a free local port: its base URL and manager.
struct Service {
    url: String,
    poly: PolyMongo,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Service {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn service(server: &TestServer) -> Service {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let poly = PolyMongo::builder()
        .uri(server.uri())
        .default_db(format!("{}default", app::DB_PREFIX))
        .max_pool_size(4)
        .app_name(format!("tenant-service@{addr}"))
        .build()
        .await
        .expect("manager builds");
    let tenancy = app::tenancy(&poly, "localhost", &tenants()).unwrap();
    let router = app::router(app::Backend::Poly(tenancy), Some(&poly));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Service {
        url: format!("http://{addr}"),
        poly,
        task,
    }
}

/// The load generator on `services`, until the returned sender is dropped or sent to.
fn load_on(
    services: &[&Service],
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<load::LoadReport>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let settings = load::LoadSettings {
        targets: services.iter().map(|s| s.url.clone()).collect(),
        tenants: tenants(),
        hot: HOT.to_owned(),
        hot_percent: 80,
        concurrency: 4,
        pause: Duration::from_millis(5),
    };
    let task = tokio::spawn(load::run(settings, async move {
        let _ = stopped.await;
    }));
    (stop, task)
}

/// An instance's own figures document.
async fn figures(url: &str) -> Figures {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let response = client
        .get(format!("{url}/figures").parse().unwrap())
        .await
        .expect("figures answered");
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).expect("a figures document")
}

fn tenant<'a>(snapshot: &'a Value, database: &str) -> &'a Value {
    snapshot["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .find(|t| t["database"] == database)
        .unwrap_or_else(|| panic!("{database} not in {snapshot}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_snapshots_merge_two_instances_and_count_a_down_one() {
    let server = TestServer::start().await.expect("server");
    let (a, b) = (service(&server).await, service(&server).await);
    let down = format!("http://127.0.0.1:{}", free_port());
    let apps = format!("{},{},{down}", a.url, b.url);
    let (stop, load) = load_on(&[&a, &b]);
    // Every tenant busy before the first poll (a tenant an instance did not list in the
    // previous poll has no rate yet).
    tokio::time::sleep(Duration::from_millis(500)).await;

    // While the load runs: JSON lines, one per poll; the second has rates.
    let mut child = spawn(&["top", "--app", &apps, "--json", "--interval", "1"]);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut snapshots = Vec::new();
    while snapshots.len() < 2 {
        let line = tokio::time::timeout(HANG, lines.next_line())
            .await
            .expect("a snapshot in time")
            .unwrap()
            .expect("a line");
        snapshots.push(serde_json::from_str::<Value>(&line).expect("JSON"));
    }
    drop(child);
    let first = &snapshots[0];
    assert_eq!(
        first["interval_s"],
        Value::Null,
        "no rates on the first poll"
    );
    let second = &snapshots[1];
    assert!(second["interval_s"].as_f64().unwrap() > 0.5, "{second}");
    assert_eq!(second["up"], 2, "{second}");
    assert_eq!(second["down"], 1, "{second}");
    assert_eq!(second["busiest"][0], format!("tenant_{HOT}"), "{second}");
    let hot_rate = tenant(second, &format!("tenant_{HOT}"))["ops_per_s"]
        .as_f64()
        .expect("a rate on the second poll");
    for other in tenants().iter().filter(|t| *t != HOT) {
        let rate = tenant(second, &format!("tenant_{other}"))["ops_per_s"]
            .as_f64()
            .unwrap_or(0.0);
        assert!(hot_rate > rate, "{HOT} {hot_rate}/s, {other} {rate}/s");
    }

    // Load stopped: each instance's own figures, then one merged snapshot of the three.
    stop.send(()).unwrap();
    let report = load.await.unwrap();
    assert!(report.ok > 20 && report.failed == 0, "{report:?}");
    let own = [figures(&a.url).await, figures(&b.url).await];
    let (code, stdout, stderr) = run(&["top", "--app", &apps, "--json", "--once"]).await;
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one snapshot: {stdout}");
    let snapshot: Value = serde_json::from_str(lines[0]).unwrap();
    eprintln!("snapshot: {snapshot}");

    // The down instance is shown and counted, the others merged.
    assert_eq!(snapshot["up"], 2);
    assert_eq!(snapshot["down"], 1);
    let instances = snapshot["instances"].as_array().unwrap();
    assert_eq!(instances[2]["url"], down);
    assert_eq!(instances[2]["status"], "down");
    assert!(
        instances[2]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{snapshot}"
    );
    for (view, figures) in instances.iter().zip(&own) {
        assert_eq!(view["status"], "up");
        assert_eq!(view["instance"], figures.instance.as_str());
        let total = figures.general.usage.as_ref().unwrap().operations;
        assert!(total > 0, "the load reached both instances");
        assert_eq!(view["operations"], total);
    }
    // Tenants: operations and errors summed across the instances, as each reports them.
    // The 99th percentile: of the two instances' histograms added up.
    let mut expected: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    let mut latency: BTreeMap<&str, polymongo::DurationHistogram> = BTreeMap::new();
    for figures in &own {
        for t in &figures.tenants {
            let e = expected.entry(t.database.as_str()).or_default();
            e.0 += t.operations;
            e.1 += t.errors;
            latency
                .entry(t.database.as_str())
                .or_default()
                .add(&t.latency);
        }
    }
    assert_eq!(expected.len(), tenants().len(), "{expected:?}");
    for (database, (operations, errors)) in &expected {
        let t = tenant(&snapshot, database);
        assert_eq!(t["operations"], *operations, "{database}: {snapshot}");
        assert_eq!(t["errors"], *errors, "{database}");
        assert_eq!(t["instances"], 2, "{database}");
        let histogram = &latency[database];
        assert_eq!(
            histogram.count(),
            *operations - t["in_flight"].as_u64().unwrap()
        );
        assert_eq!(
            t["p99_us"],
            histogram.quantile_us(0.99),
            "{database}: {histogram:?}"
        );
    }
    // The second poll's percentile is of the operations between the two polls.
    assert!(
        tenant(second, &format!("tenant_{HOT}"))["p99_now_us"]
            .as_u64()
            .is_some_and(|us| us > 0),
        "{second}"
    );
    // The busiest is the one the load favoured.
    assert_eq!(
        snapshot["busiest"][0],
        format!("tenant_{HOT}"),
        "{snapshot}"
    );
    let hot = expected[format!("tenant_{HOT}").as_str()].0;
    assert!(
        expected.values().all(|(ops, _)| *ops <= hot),
        "{expected:?}"
    );
    // Pools: one per instance, summed into one cluster row.
    let pools = snapshot["pools"].as_array().unwrap();
    assert_eq!(pools.len(), 1, "{snapshot}");
    assert_eq!(pools[0]["instances"], 2);
    assert_eq!(pools[0]["max_size"], 8, "two pools of 4");

    // Nothing answers: exit 4, still one snapshot.
    let (code, stdout, stderr) = run(&["top", "--app", &down, "--json", "--once"]).await;
    assert_eq!(code, 4, "{stdout} {stderr}");
    assert!(stderr.contains("no instance answered"), "{stderr}");
    let snapshot: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(snapshot["down"], 1);
    for s in [a, b] {
        s.poly.close_all(Duration::from_secs(5)).await;
    }
}

#[tokio::test]
async fn an_https_or_malformed_app_url_is_a_usage_error() {
    let (code, _, stderr) = run(&["top", "--app", "https://svc:3000", "--once"]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("https is not supported"), "{stderr}");
    let (code, _, stderr) = run(&["top", "--app", "http://", "--once"]).await;
    assert_eq!(code, 2, "{stderr}");
}

#[tokio::test]
async fn json_lines_end_quietly_when_their_reader_goes() {
    // Nothing answers (a view of down instances goes on): the reader takes one line and goes.
    let down = format!("127.0.0.1:{}", free_port());
    let mut child = spawn(&["top", "--app", &down, "--json", "--interval", "1"]);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(HANG, lines.next_line())
        .await
        .expect("a snapshot in time")
        .unwrap()
        .expect("a line");
    assert!(line.contains(r#""down":1"#), "{line}");
    drop(lines);
    let status = tokio::time::timeout(HANG, child.wait())
        .await
        .expect("it ends")
        .unwrap();
    assert_eq!(status.code(), Some(141));
}

/// The rows of the "Busiest now" table (the left one of the three tenant tables): each
/// tenant and its ops/s, in order.
fn busiest_rows(screen: &str) -> Vec<(String, f64)> {
    let mut lines = screen.lines();
    if lines
        .find(|l| l.contains("ops/s") && l.contains("mean now"))
        .is_none()
    {
        return Vec::new();
    }
    lines
        .map_while(|row| {
            let mut words = row.split('│').nth(1)?.split_whitespace();
            let name = words.next()?.to_owned();
            let rate = words.next()?.parse().ok()?;
            Some((name, rate))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_terminal_view_shows_the_busiest_tenant_and_q_restores_the_terminal() {
    if !tmux_available() {
        polymongo_testkit::record_skip(
            "tmux is not installed, so there is no terminal to render in",
        );
        return;
    }
    let server = TestServer::start().await.expect("server");
    let (a, b) = (service(&server).await, service(&server).await);
    let (stop, load) = load_on(&[&a, &b]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // After the view: its exit status, and whether the terminal is back in canonical mode.
    let tmux = Tmux::start(&format!(
        "{BIN} top --app {},{} --interval 1; echo exit=$?; stty -a | tr ' ;' '\\n\\n' | grep -x -- '-\\?icanon'; sleep 30",
        a.url, b.url
    ));
    // The second poll on: every tenant with its rate, the favoured one first.
    let screen = tmux
        .wait_for(|s| busiest_rows(s).len() == tenants().len())
        .await;
    eprintln!("captured:\n{screen}");
    let rows = busiest_rows(&screen);
    assert_eq!(rows[0].0, format!("tenant_{HOT}"), "{screen}");
    assert!(rows[0].1 > rows[1].1 && rows[1].1 >= rows[2].1, "{screen}");
    assert!(screen.contains("2 apps: 2 up, 0 down"), "{screen}");
    assert!(
        screen.contains(&a.url) && screen.contains(&b.url),
        "{screen}"
    );
    assert!(
        screen.contains("Pools (summed over applications)"),
        "{screen}"
    );
    assert_eq!(tmux.tmux(&["display", "-p", "#{alternate_on}"]).trim(), "1");

    tmux.tmux(&["send-keys", "q"]);
    let screen = tmux.wait_for(|s| s.contains("exit=")).await;
    eprintln!("after q:\n{screen}");
    assert!(screen.contains("exit=0"), "{screen}");
    assert!(
        !screen.contains("Busiest now"),
        "the view is gone:\n{screen}"
    );
    // Raw mode undone (canonical input again) and the main screen back.
    let screen = tmux
        .wait_for(|s| {
            s.lines()
                .any(|l| l.trim() == "icanon" || l.trim() == "-icanon")
        })
        .await;
    assert!(screen.lines().any(|l| l.trim() == "icanon"), "{screen}");
    assert_eq!(tmux.tmux(&["display", "-p", "#{alternate_on}"]).trim(), "0");
    assert_eq!(tmux.tmux(&["display", "-p", "#{cursor_flag}"]).trim(), "1");

    stop.send(()).unwrap();
    let report = load.await.unwrap();
    assert_eq!(report.failed, 0, "{report:?}");
    for s in [a, b] {
        s.poly.close_all(Duration::from_secs(5)).await;
    }
}

#[tokio::test]
async fn an_instance_that_accepts_and_never_answers_is_down_within_the_poll_timeout() {
    // A black hole: connections are accepted and held, nothing is ever sent back.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", hole.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut kept = Vec::new();
        while let Ok((socket, _)) = hole.accept().await {
            kept.push(socket);
        }
    });
    // `--interval 1`: each poll waits at most max(1 s, min(interval, 5 s)) = 1 s per instance.
    let started = std::time::Instant::now();
    let (code, stdout, stderr) =
        run(&["top", "--app", &url, "--json", "--once", "--interval", "1"]).await;
    let took = started.elapsed();
    assert_eq!(code, 4, "no instance answered: {stdout} {stderr}");
    let snapshot: Value = serde_json::from_str(stdout.trim()).expect("one JSON snapshot");
    assert_eq!(snapshot["down"], 1, "{snapshot}");
    let error = snapshot["instances"][0]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(error.contains("no answer within 1000 ms"), "{snapshot}");
    eprintln!("black-holed instance reported down after {took:?}");
    // The bound is the poll timeout; the process start and exit are on top of it.
    assert!(took >= Duration::from_secs(1), "{took:?}");
    held.abort();
}

/// Answers every request with `body` as a figures route would: (its URL, the server task).
async fn serve(body: String) -> (String, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let served = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut request = vec![0u8; 4096];
                let _ = socket.read(&mut request).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n",
                    body.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(body.as_bytes()).await;
            });
        }
    });
    (url, served)
}

/// A real figures document with one counted tenant (`t1`), as JSON to edit; the manager and
/// its server, to close at the end.
async fn counted_figures() -> (Value, PolyMongo, TestServer) {
    use polymongo::mongodb::bson::doc;

    let server = TestServer::start().await.expect("server");
    let poly = PolyMongo::builder()
        .uri(server.uri())
        .build()
        .await
        .unwrap();
    poly.model::<app::Note>()
        .db("t1")
        .unwrap()
        .run(|c| c.find_one(doc! {}))
        .await
        .unwrap();
    let figures = serde_json::to_value(Figures::take(&poly)).unwrap();
    (figures, poly, server)
}

#[tokio::test]
async fn control_characters_an_instance_sends_never_reach_the_terminal() {
    // A real figures document with one counted tenant…
    let (mut figures, poly, _server) = counted_figures().await;
    // …whose strings a hostile instance filled with escape sequences.
    figures["instance"] = Value::from("app\u{1b}]0;owned\u{7}");
    figures["tenants"][0]["database"] = Value::from("t1\u{1b}[2J\u{1b}[31m");
    figures["pools"][0]["cluster"] = Value::from("mongodb://h\u{1b}[1A/");
    let (url, served) = serve(figures.to_string()).await;
    for args in [
        &["top", "--app", &url, "--once"][..],
        &["top", "--app", &url, "--once", "--json"][..],
    ] {
        let (code, stdout, stderr) = run(args).await;
        assert_eq!(code, 0, "{args:?}: {stdout} {stderr}");
        assert!(
            !stdout.contains(['\u{1b}', '\u{7}']) && !stderr.contains(['\u{1b}', '\u{7}']),
            "{args:?}: {stdout:?}"
        );
        // Shown, with the control characters replaced.
        assert!(stdout.contains("t1\u{fffd}[2J"), "{args:?}: {stdout}");
        assert!(stdout.contains("app\u{fffd}]0;owned"), "{args:?}: {stdout}");
    }
    served.abort();
    poly.close_all(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn an_app_given_twice_is_a_usage_error() {
    let app = format!("127.0.0.1:{}", free_port());
    let spelled = format!("http://{app}/figures");
    for apps in [format!("{app},{app}"), format!("{app},{spelled}")] {
        let (code, _, stderr) = run(&["top", "--app", &apps, "--once"]).await;
        assert_eq!(code, 2, "{apps}: {stderr}");
        assert!(stderr.contains("--app"), "{apps}: {stderr}");
        assert!(
            stderr.contains("give each instance once"),
            "{apps}: {stderr}"
        );
    }
    // Repeated flags are one list.
    let (code, _, stderr) = run(&["top", "--app", &app, "--app", &app, "--once"]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!("{app} is given twice")),
        "{stderr}"
    );
}

#[tokio::test]
async fn two_instances_sending_the_largest_counters_are_summed_without_overflow() {
    let (mut figures, poly, _server) = counted_figures().await;
    for (field, max) in [
        ("connections", Value::from(i64::MAX)),
        ("in_use", Value::from(i64::MAX)),
        ("wait_queue", Value::from(i64::MAX)),
        ("checkout_failures", Value::from(u64::MAX)),
    ] {
        figures["pools"][0][field] = max;
    }
    for field in [
        "operations",
        "errors",
        "in_flight",
        "recent_operations",
        "recent_time_us",
    ] {
        figures["tenants"][0][field] = Value::from(u64::MAX);
    }
    // Two instances (two URLs) sending the same figures.
    let (first, served_first) = serve(figures.to_string()).await;
    let (second, served_second) = serve(figures.to_string()).await;
    let apps = format!("{first},{second}");
    let (code, stdout, stderr) = run(&["top", "--app", &apps, "--once", "--json"]).await;
    assert_eq!(code, 0, "{stdout} {stderr}");
    let snapshot: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(snapshot["up"], 2, "{snapshot}");
    let pool = &snapshot["pools"][0];
    assert_eq!(pool["instances"], 2, "{pool}");
    assert_eq!(pool["connections"], i64::MAX, "{pool}");
    assert_eq!(pool["checkout_failures"], u64::MAX, "{pool}");
    let t1 = tenant(&snapshot, "t1");
    assert_eq!(t1["operations"], u64::MAX, "{t1}");
    assert_eq!(t1["recent_operations"], u64::MAX, "{t1}");
    // The plain-text view of the same figures.
    let (code, stdout, stderr) = run(&["top", "--app", &apps, "--once"]).await;
    assert_eq!(code, 0, "{stdout} {stderr}");
    assert!(stdout.contains(&i64::MAX.to_string()), "{stdout}");
    served_first.abort();
    served_second.abort();
    poly.close_all(Duration::from_secs(5)).await;
}
