//! The tenant extractor resolving through polymongo's tenant directory, over a fleet of three
//! test-kit servers (a control cluster holding the directory, and two cells holding the
//! tenants' databases): data lands on the tenant's cluster only, every directory answer has its
//! status and JSON body, warm requests make no round trip to the directory (counted by the
//! directory's own figures and, independently, by the control server's `opcounters`), a
//! suspension made through another instance is refused within the directory's bound, and
//! requests cut at growing delays leave nothing behind. Effects checked with raw clients.

mod common;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, Request, StatusCode};
use axum::routing::post;
use axum::Router;
use mongodb::bson::{doc, Document};
use mongodb::{Client, IndexModel};
use polymongo::tenants::{CreateTenant, Placement};
use polymongo::{ClusterConfig, DirectoryConfig, Model, PolyMongo};
use polymongo_axum::{ConfigError, DbError, Tenancy, Tenant, TenantError};
use polymongo_testkit::{ServerKind, ServerOptions, TestServer};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tower::ServiceExt;

use common::{assert_refused, eventually, listen, raw, raw_texts, send, server, Req};

struct Fleet {
    control: TestServer,
    a: TestServer,
    b: TestServer,
}

async fn fleet() -> Fleet {
    Fleet {
        control: server().await,
        a: server().await,
        b: server().await,
    }
}

/// A manager on the fleet (the control server reached at `control_uri`): directory on the
/// control (main) cluster with prefix `t_`, tenants on cells a and b.
async fn instance(f: &Fleet, control_uri: &str, refresh: Duration, watch: bool) -> PolyMongo {
    PolyMongo::builder()
        .uri(control_uri)
        .max_pool_size(8)
        .cluster("cell_a", ClusterConfig::new(f.a.uri()))
        .cluster("cell_b", ClusterConfig::new(f.b.uri()))
        .directory(
            DirectoryConfig::on("main")
                .database_prefix("t_")
                .refresh(refresh)
                .watch(watch)
                // A refresh of an hour stands for "no polling" in some measurements.
                .max_staleness(Some((refresh * 2).max(Duration::from_secs(60)))),
        )
        .build()
        .await
        .expect("manager")
}

/// The tenancy of these tests: `X-Tenant`, else the path parameter `tenant`, resolved through
/// the directory.
fn directory_tenancy(poly: PolyMongo) -> Tenancy {
    Tenancy::builder(poly)
        .header(HeaderName::from_static("x-tenant"))
        .path_param("tenant")
        .directory()
        .build()
        .expect("tenancy")
}

/// A model with a declared index: the extractor ensures it, on the tenant's cluster.
#[derive(Debug, Serialize, Deserialize)]
struct Tag {
    name: String,
}

impl Model for Tag {
    const COLLECTION: &'static str = "tags";

    fn indexes() -> Vec<IndexModel> {
        vec![IndexModel::builder().keys(doc! { "name": 1 }).build()]
    }
}

async fn add_tag(
    tags: Tenant<Tag>,
    axum::Json(tag): axum::Json<Tag>,
) -> Result<StatusCode, DbError> {
    tags.run(|c| c.insert_one(&tag)).await?;
    Ok(StatusCode::CREATED)
}

/// The notes app of the other tests, plus `POST /tags` (a model with an index).
fn app(tenancy: Tenancy) -> Router {
    common::notes_app(tenancy.clone()).merge(
        Router::new()
            .route("/tags", post(add_tag))
            .layer(tenancy.layer())
            .with_state(tenancy),
    )
}

/// Sends `req` and returns the status, the headers and the JSON body.
async fn call(app: &Router, req: Request<Body>) -> (StatusCode, HeaderMap, serde_json::Value) {
    let response = app.clone().oneshot(req).await.expect("infallible");
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.expect("body");
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (parts.status, parts.headers, json)
}

fn get_as(tenant: &str) -> Request<Body> {
    Request::get("/notes")
        .header("x-tenant", tenant)
        .body(Body::empty())
        .expect("request")
}

async fn tenant_databases(client: &Client) -> Vec<String> {
    client
        .list_database_names()
        .await
        .expect("list databases")
        .into_iter()
        .filter(|n| n.starts_with("t_"))
        .collect()
}

/// A directory entry written by hand, as a crash or an operator's tool would leave it.
async fn raw_entry(f: &Fleet, id: &str, state: &str) {
    raw(&f.control)
        .await
        .database("polymongo_directory")
        .collection::<Document>("tenants")
        .insert_one(doc! {
            "_id": id, "database": format!("t_{id}"), "cluster": "cell_b", "state": state,
            "version": 1_i64, "seq": 0_i64, "labels": {}, "created_at_ms": 0_i64,
            "updated_at_ms": 0_i64,
        })
        .await
        .expect("raw entry");
}

#[tokio::test]
async fn data_written_through_a_handler_lands_only_on_the_tenants_cluster() {
    let f = fleet().await;
    let poly = instance(&f, f.control.uri(), Duration::from_secs(1), true).await;
    let tenants = poly.tenants().unwrap();
    for (id, cell) in [("acme", "cell_a"), ("globex", "cell_b")] {
        let info = tenants
            .create(
                id,
                CreateTenant::new().placement(Placement::On(cell.into())),
            )
            .await
            .unwrap();
        assert_eq!(info.cluster, cell);
    }
    let app = app(directory_tenancy(poly.clone()));
    // Through both sources: the header and the path.
    for (tenant, text) in [("acme", "a1"), ("globex", "g1")] {
        let by_header =
            Req::post("/notes", json!({ "text": format!("{text}-h") })).header("x-tenant", tenant);
        let by_path = Req::post(
            format!("/t/{tenant}/notes"),
            json!({ "text": format!("{text}-p") }),
        );
        for req in [by_header, by_path] {
            let (status, body) = send(&app, req).await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
        }
        let req = Request::post("/tags")
            .header("x-tenant", tenant)
            .header("content-type", "application/json")
            .body(Body::from(json!({ "name": text }).to_string()))
            .unwrap();
        assert_eq!(call(&app, req).await.0, StatusCode::CREATED);
    }
    // Each tenant reads its own notes only.
    let (status, body) = send(&app, Req::get("/notes").header("x-tenant", "acme")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.as_array().map(Vec::len), Some(2), "{body}");

    // What the servers hold, seen by clients that know nothing of polymongo.
    // Databases first: on nx-27017 any command on a database makes it, a probe's included.
    let (control, a, b) = (raw(&f.control).await, raw(&f.a).await, raw(&f.b).await);
    let (on_control, on_a, on_b) = (
        tenant_databases(&control).await,
        tenant_databases(&a).await,
        tenant_databases(&b).await,
    );
    assert_eq!(on_a, ["t_acme"]);
    assert_eq!(on_b, ["t_globex"]);
    assert!(
        on_control.is_empty(),
        "nothing of a tenant on the control cluster: {on_control:?}"
    );
    assert_eq!(raw_texts(&a, "t_acme").await, ["a1-h", "a1-p"]);
    assert_eq!(raw_texts(&b, "t_globex").await, ["g1-h", "g1-p"]);
    // The declared index was made on the tenant's cluster.
    let index_names = a
        .database("t_acme")
        .collection::<Document>("tags")
        .list_index_names()
        .await
        .unwrap();
    assert!(
        index_names.iter().any(|n| n.contains("name")),
        "{index_names:?}"
    );
    println!(
        "acme on cell_a: {on_a:?}; globex on cell_b: {on_b:?}; control: {on_control:?}; \
         acme's indexes on cell_a: {index_names:?}"
    );
}

#[tokio::test]
async fn each_directory_answer_has_its_status_and_a_json_body() {
    let f = fleet().await;
    let poly = instance(&f, f.control.uri(), Duration::from_secs(1), true).await;
    let tenants = poly.tenants().unwrap();
    tenants.create("acme", CreateTenant::new()).await.unwrap();
    tenants.create("paused", CreateTenant::new()).await.unwrap();
    tenants.suspend("paused").await.unwrap();
    for (id, state) in [
        ("fresh", "creating"),
        ("back", "restoring"),
        ("leaving", "archiving"),
        ("stored", "archived"),
        ("going", "deleting"),
        ("edited", "paused"), // not a state: an invalid entry
    ] {
        raw_entry(&f, id, state).await;
    }
    let app = app(directory_tenancy(poly.clone()));
    let cases = [
        ("acme", StatusCode::OK, "", false),
        ("ghost", StatusCode::NOT_FOUND, "unknown_tenant", false),
        ("paused", StatusCode::FORBIDDEN, "suspended_tenant", false),
        (
            "fresh",
            StatusCode::SERVICE_UNAVAILABLE,
            "tenant_not_ready",
            false,
        ),
        (
            "back",
            StatusCode::SERVICE_UNAVAILABLE,
            "tenant_not_ready",
            false,
        ),
        ("leaving", StatusCode::GONE, "tenant_gone", false),
        ("stored", StatusCode::GONE, "tenant_gone", false),
        ("going", StatusCode::GONE, "tenant_gone", false),
        (
            "edited",
            StatusCode::INTERNAL_SERVER_ERROR,
            "invalid_tenant_record",
            false,
        ),
        ("a.b", StatusCode::BAD_REQUEST, "invalid_tenant", false),
        ("Acme", StatusCode::BAD_REQUEST, "invalid_tenant", false),
        (
            &"x".repeat(70),
            StatusCode::BAD_REQUEST,
            "invalid_tenant",
            false,
        ),
    ];
    for (tenant, status, code, retry_after) in cases {
        let (got, headers, body) = call(&app, get_as(tenant)).await;
        if status == StatusCode::OK {
            assert_eq!(got, status, "{tenant}: {body}");
            continue;
        }
        assert_refused(&(got, body.clone()), status, code, tenant);
        assert_eq!(
            headers.contains_key(header::RETRY_AFTER),
            retry_after,
            "{tenant}: Retry-After"
        );
        println!("{tenant}: {} {body}", got.as_u16());
    }
    // The invalid entry's body names the tenant and nothing of the entry.
    let (_, _, body) = call(&app, get_as("edited")).await;
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("\"edited\""), "{message}");
    for leak in [
        "paused",
        "state",
        "cell_b",
        "t_edited",
        "polymongo_directory",
    ] {
        assert!(!message.contains(leak), "{message} names {leak}");
    }
    // An unknown tenant makes no state: no registry entry, no read left in flight. (The
    // tenants the directory has are cached whatever their state: a fast refusal.)
    let cached_before = poly.cached_databases();
    for i in 0..20 {
        assert_eq!(
            call(&app, get_as(&format!("nobody{i}"))).await.0,
            StatusCode::NOT_FOUND
        );
    }
    assert_eq!(tenants.reads_in_flight(), 0);
    assert!(
        poly.cached_databases() <= cached_before,
        "unknown tenants left registry entries: {} > {cached_before}",
        poly.cached_databases()
    );
    assert!(
        !raw(&f.b)
            .await
            .list_database_names()
            .await
            .unwrap()
            .iter()
            .any(|d| d == "t_ghost"),
        "no database made for an unknown tenant"
    );
}

#[tokio::test]
async fn an_unreachable_directory_is_answered_as_the_database_error_it_is() {
    let f = fleet().await;
    let proxy = polymongo_testkit::FaultProxy::start(&format!(
        "127.0.0.1:{}",
        f.control.port().expect("a local server")
    ))
    .await
    .expect("proxy");
    let through = proxy.uri_for(f.control.uri());
    let sep = if through.contains('?') { '&' } else { '?' };
    let uri = format!("{through}{sep}serverSelectionTimeoutMS=500");
    let poly = instance(&f, &uri, Duration::from_secs(3600), false).await;
    let app = app(directory_tenancy(poly.clone()));
    // Nothing reaches the control cluster.
    proxy.refuse_new(true);
    proxy.drop_all();
    let (status, headers, body) = call(&app, get_as("acme")).await;
    // A read that could not be sent: nothing applied, so the client may come back.
    assert_refused(
        &(status, body.clone()),
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "unreachable directory",
    );
    assert!(headers.contains_key(header::RETRY_AFTER));
    assert_eq!(poly.tenants().unwrap().reads_in_flight(), 0);
    println!("unreachable directory: {} {body}", status.as_u16());
}

/// The control server's `opcounters` (`query`, `command`), if it reports them.
async fn opcounters(client: &Client) -> Option<(i64, i64)> {
    let status = client
        .database("admin")
        .run_command(doc! { "serverStatus": 1 })
        .await
        .expect("serverStatus");
    let counters = status.get_document("opcounters").ok()?;
    let read = |k: &str| -> Option<i64> {
        let v = counters.get(k)?;
        v.as_i64().or_else(|| v.as_i32().map(i64::from))
    };
    Some((read("query")?, read("command")?))
}

#[tokio::test]
async fn warm_requests_make_no_round_trip_to_the_directory() {
    // The control server must count operations: nx-27017 reports no `opcounters`, mongod and
    // mongoeco do.
    let first = server().await;
    let control = if opcounters(&raw(&first).await).await.is_some() {
        first
    } else {
        TestServer::start_with(ServerOptions::new().kind(ServerKind::MongoEco))
            .await
            .expect("a control server with opcounters (mongoeco)")
    };
    let f = Fleet {
        control,
        a: server().await,
        b: server().await,
    };
    // Refresh once an hour, no stream: only the requests themselves could read the directory
    // during the measurement.
    let poly = instance(&f, f.control.uri(), Duration::from_secs(3600), false).await;
    let tenants = poly.tenants().unwrap();
    tenants.create("warm", CreateTenant::new()).await.unwrap();
    // Another instance: its cache is cold for "warm".
    let service = instance(&f, f.control.uri(), Duration::from_secs(3600), false).await;
    let app = app(directory_tenancy(service.clone()));
    let probe = raw(&f.control).await;

    // The cold request reads the directory once: the counter sees directory reads.
    let before_cold = opcounters(&probe).await.unwrap();
    let stats_cold = service.tenants().unwrap().stats();
    assert_eq!(call(&app, get_as("warm")).await.0, StatusCode::OK);
    let after_cold = opcounters(&probe).await.unwrap();
    let stats_warm = service.tenants().unwrap().stats();
    assert_eq!(stats_warm.cache_misses - stats_cold.cache_misses, 1);
    assert!(
        after_cold.0 > before_cold.0,
        "the cold request's directory read is counted: {before_cold:?} → {after_cold:?}"
    );

    const N: u64 = 200;
    let before = opcounters(&probe).await.unwrap();
    let started = Instant::now();
    let requests = (0..N).map(|_| call(&app, get_as("warm")));
    for (status, _, body) in futures_util::future::join_all(requests).await {
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let took = started.elapsed();
    let after = opcounters(&probe).await.unwrap();
    let stats = service.tenants().unwrap().stats();
    let (hits, misses) = (
        stats.cache_hits - stats_warm.cache_hits,
        stats.cache_misses - stats_warm.cache_misses,
    );
    let (queries, commands) = (after.0 - before.0, after.1 - before.1);
    println!(
        "{N} warm requests in {took:?}: directory cache hits +{hits}, misses +{misses}; \
         control opcounters query +{queries}, command +{commands} \
         (cold request: query +{})",
        after_cold.0 - before_cold.0
    );
    assert_eq!((hits, misses), (N, 0), "one cache hit per request, no read");
    assert_eq!(queries, 0, "no query on the control cluster");
    // The commands counted are the probe's own `serverStatus` and at most a monitoring check or
    // two of the drivers (every 10 s), not one per request.
    assert!(commands <= 3, "{commands} commands for {N} requests");
}

#[tokio::test]
async fn a_suspension_through_another_instance_is_refused_within_the_bound() {
    let f = fleet().await;
    let refresh = Duration::from_millis(200);
    // Polling only: the documented bound is the refresh plus one read of the directory.
    let admin = instance(&f, f.control.uri(), refresh, false).await;
    let service = instance(&f, f.control.uri(), refresh, false).await;
    admin
        .tenants()
        .unwrap()
        .create("acme", CreateTenant::new())
        .await
        .unwrap();
    let app = app(directory_tenancy(service.clone()));
    // Served, and from now on cached by the service's instance.
    assert_eq!(call(&app, get_as("acme")).await.0, StatusCode::OK);
    let suspended_at = Instant::now();
    admin.tenants().unwrap().suspend("acme").await.unwrap();
    // A generous second for the one read on a loaded machine.
    let bound = refresh + Duration::from_secs(1);
    let refused_after = eventually(
        "the service refuses the suspended tenant",
        bound * 5,
        || {
            let app = app.clone();
            async move {
                let (status, _, body) = call(&app, get_as("acme")).await;
                match status {
                    StatusCode::OK => None,
                    StatusCode::FORBIDDEN => {
                        assert_eq!(body["error"], "suspended_tenant", "{body}");
                        Some(suspended_at.elapsed())
                    }
                    other => panic!("{other}: {body}"),
                }
            }
        },
    )
    .await;
    println!("suspended through another instance: refused (403) after {refused_after:?}, bound {bound:?}");
    assert!(
        refused_after <= bound,
        "refused after {refused_after:?}, bound {bound:?}"
    );
    // And served again once resumed, within the same bound.
    let resumed_at = Instant::now();
    admin.tenants().unwrap().resume("acme").await.unwrap();
    let served_after = eventually("the service serves the resumed tenant", bound * 5, || {
        let app = app.clone();
        async move {
            (call(&app, get_as("acme")).await.0 == StatusCode::OK).then(|| resumed_at.elapsed())
        }
    })
    .await;
    println!("resumed: served again after {served_after:?}");
    assert!(served_after <= bound, "served after {served_after:?}");
}

/// Sends a GET for `tenant` over a real connection and gives up after `after`, closing the
/// connection. Whether the answer came first.
async fn get_cut(addr: std::net::SocketAddr, tenant: &str, after: Duration) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "GET /notes HTTP/1.1\r\nHost: svc\r\nX-Tenant: {tenant}\r\nConnection: close\r\n\r\n"
    );
    conn.write_all(request.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    let done = tokio::time::timeout(after, conn.read_to_end(&mut answer))
        .await
        .is_ok();
    drop(conn);
    done
}

#[tokio::test]
async fn requests_cut_at_growing_delays_leave_no_state_behind() {
    let f = fleet().await;
    // Directory reads of the service cross a slow network, so the cuts land during them.
    let proxy = polymongo_testkit::FaultProxy::start(&format!(
        "127.0.0.1:{}",
        f.control.port().expect("a local server")
    ))
    .await
    .expect("proxy");
    let admin = instance(&f, f.control.uri(), Duration::from_secs(1), true).await;
    let delays = [0_u64, 1, 2, 5, 10, 20, 40, 80, 160, 320, 640];
    for i in 0..delays.len() {
        admin
            .tenants()
            .unwrap()
            .create(&format!("cut{i}"), CreateTenant::new())
            .await
            .unwrap();
    }
    let service = instance(
        &f,
        &proxy.uri_for(f.control.uri()),
        Duration::from_secs(1),
        true,
    )
    .await;
    let (addr, server_task) = listen(app(directory_tenancy(service.clone()))).await;
    // Warm the service's connection to the control cluster, then slow it down.
    assert_eq!(
        service.tenants().unwrap().get("cut0").await.unwrap().id,
        "cut0"
    );
    proxy.set_latency(Duration::from_millis(40));
    let tenants = service.tenants().unwrap();
    let cached_before = service.cached_databases();
    let mut answered = 0;
    for (i, ms) in delays.iter().enumerate() {
        // A known tenant (cold on the service) and an unknown one, each cut at `ms`.
        for tenant in [format!("cut{i}"), format!("nobody{i}")] {
            if get_cut(addr, &tenant, Duration::from_millis(*ms)).await {
                answered += 1;
            }
            eventually(
                &format!("no read in flight after a cut at {ms} ms ({tenant})"),
                Duration::from_secs(5),
                || {
                    let n = tenants.reads_in_flight();
                    async move { (n == 0).then_some(()) }
                },
            )
            .await;
        }
    }
    // At most one registry entry per known tenant; none for the unknown ones.
    let grown = service.cached_databases() - cached_before;
    println!(
        "{} cuts at {delays:?} ms: {answered} answered before the cut; reads in flight 0; \
         registry entries +{grown} (at most {} known tenants)",
        delays.len() * 2,
        delays.len()
    );
    assert!(
        grown <= delays.len(),
        "{grown} entries for {} tenants",
        delays.len()
    );
    assert!(
        answered < delays.len() * 2,
        "every request finished before its cut: nothing was cut"
    );
    // Every tenant is still served, whatever the cut left.
    proxy.pass_through();
    let app = app(directory_tenancy(service.clone()));
    for i in 0..delays.len() {
        let (status, _, body) = call(&app, get_as(&format!("cut{i}"))).await;
        assert_eq!(status, StatusCode::OK, "cut{i}: {body}");
    }
    assert_eq!(tenants.reads_in_flight(), 0);
    server_task.abort();
}

#[tokio::test]
async fn a_directory_tenancy_is_checked_when_built() {
    // No server needed: nothing is sent before the first request.
    let silent = "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=200";
    let without = PolyMongo::builder().uri(silent).build().await.unwrap();
    let header = HeaderName::from_static("x-tenant");
    assert_eq!(
        Tenancy::builder(without)
            .header(header.clone())
            .directory()
            .build()
            .unwrap_err(),
        ConfigError::NoDirectory
    );
    let with = PolyMongo::builder()
        .uri(silent)
        .directory(DirectoryConfig::on("main"))
        .build()
        .await
        .unwrap();
    assert_eq!(
        Tenancy::builder(with.clone())
            .header(header.clone())
            .prefix("tenant_")
            .directory()
            .build()
            .unwrap_err(),
        ConfigError::MappingWithDirectory
    );
    // The directory is the allow policy: none needed.
    let tenancy = Tenancy::builder(with)
        .header(header)
        .directory()
        .build()
        .unwrap();
    assert!(tenancy.uses_directory());
    // Reserved databases, and the directory's own, are refused before the directory is asked
    // (which, silent here, would take the server selection timeout).
    for id in ["admin", "config", "polymongo_directory"] {
        let started = Instant::now();
        assert_eq!(
            tenancy.database_for(id).await,
            Err(TenantError::Reserved),
            "{id}"
        );
        assert!(
            started.elapsed() < Duration::from_millis(150),
            "{id}: asked the directory"
        );
    }
}
