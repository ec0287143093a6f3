//! Shared set-up of the request-level tests: a test-kit server per test, a notes app on it,
//! requests through `oneshot`, and an independent raw client to check effects.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::future::Future;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Query;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::TryStreamExt;
use mongodb::bson::{doc, Document};
use mongodb::Client;
use polymongo::{Model, PolyMongo};
use polymongo_axum::{DbError, Tenancy, Tenant};
use polymongo_testkit::TestServer;
use serde::{Deserialize, Serialize};
use tower::ServiceExt;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Note {
    /// Set by a test that wants a fixed `_id`; lists leave `_id` out.
    #[serde(rename = "_id", default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub text: String,
}

impl Model for Note {
    const COLLECTION: &'static str = "notes";
}

/// What a verified token's middleware would put in the request: the tenant claim.
#[derive(Debug, Clone)]
pub struct Claims {
    pub tenant: String,
}

pub async fn server() -> TestServer {
    match TestServer::start().await {
        Ok(s) => s,
        Err(e) => panic!("test server did not start: {e}"),
    }
}

pub async fn manager(server: &TestServer) -> PolyMongo {
    PolyMongo::builder()
        .uri(server.uri())
        .default_db("main")
        .max_pool_size(4)
        .build()
        .await
        .expect("manager builds")
}

pub async fn raw(server: &TestServer) -> Client {
    Client::with_uri_str(server.uri())
        .await
        .expect("raw client")
}

/// Every source, in the order header, subdomain of `example.test`, path parameter `tenant`,
/// token claim — and an allow policy that accepts every valid name (the tests of the policy
/// itself set their own).
pub fn all_sources(poly: PolyMongo) -> polymongo_axum::TenancyBuilder {
    sources_only(poly).allow(|_| true)
}

/// Every source, as [`all_sources`], with no allow policy: for tests that set their own.
pub fn sources_only(poly: PolyMongo) -> polymongo_axum::TenancyBuilder {
    Tenancy::builder(poly)
        .header(axum::http::HeaderName::from_static("x-tenant"))
        .subdomain("example.test")
        .path_param("tenant")
        .custom(|parts| parts.extensions.get::<Claims>().map(|c| c.tenant.clone()))
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<i64>,
}

async fn list(notes: Tenant<Note>, Query(q): Query<ListQuery>) -> Result<Json<Vec<Note>>, DbError> {
    let cursor = notes
        .run(|c| {
            c.find(doc! {})
                .projection(doc! { "_id": 0 })
                .limit(q.limit.unwrap_or(100))
        })
        .await?;
    Ok(Json(cursor.try_collect().await?))
}

async fn create(notes: Tenant<Note>, Json(note): Json<Note>) -> Result<StatusCode, DbError> {
    notes.run(|c| c.insert_one(&note)).await?;
    Ok(StatusCode::CREATED)
}

/// The notes app, reachable as `/notes` (header, subdomain, claim) and `/t/{tenant}/notes`,
/// behind its tenancy's layer.
pub fn notes_app(tenancy: Tenancy) -> Router {
    Router::new()
        .route("/notes", get(list).post(create))
        .route("/t/{tenant}/notes", get(list).post(create))
        .layer(tenancy.layer())
        .with_state(tenancy)
}

/// Serves `app` on a free local port until the returned task is aborted.
pub async fn listen(app: Router) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    (addr, task)
}

/// Sends `request` (raw HTTP/1.1 bytes, e.g. with two `Host` headers or an absolute-form
/// target, which hyper's client cannot make) and returns the status and the body as JSON.
pub async fn raw_http(
    addr: std::net::SocketAddr,
    request: &[u8],
) -> (StatusCode, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    conn.write_all(request).await.expect("send");
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    let json = if body.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(body).unwrap_or_else(|_| panic!("body is not JSON: {body:?}"))
    };
    (status, json)
}

/// A request as a test builds it.
pub struct Req {
    pub method: &'static str,
    pub path: String,
    pub headers: Vec<(&'static str, axum::http::HeaderValue)>,
    pub claims: Option<Claims>,
    pub body: Option<serde_json::Value>,
    /// A body sent as it is, with only the headers the test set (no content type added).
    pub raw_body: Option<String>,
}

impl Req {
    pub fn get(path: impl Into<String>) -> Self {
        Req {
            method: "GET",
            path: path.into(),
            headers: Vec::new(),
            claims: None,
            body: None,
            raw_body: None,
        }
    }

    pub fn post(path: impl Into<String>, body: serde_json::Value) -> Self {
        Req {
            method: "POST",
            body: Some(body),
            ..Req::get(path)
        }
    }

    pub fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((
            name,
            axum::http::HeaderValue::from_str(value).expect("header value"),
        ));
        self
    }

    pub fn header_bytes(mut self, name: &'static str, value: &[u8]) -> Self {
        self.headers.push((
            name,
            axum::http::HeaderValue::from_bytes(value).expect("header bytes"),
        ));
        self
    }

    pub fn claims(mut self, tenant: &str) -> Self {
        self.claims = Some(Claims {
            tenant: tenant.to_owned(),
        });
        self
    }
}

/// Sends `req` through `app` and returns the status and the body parsed as JSON (`Null` for
/// an empty body).
pub async fn send(app: &Router, req: Req) -> (StatusCode, serde_json::Value) {
    let mut builder = Request::builder().method(req.method).uri(&req.path);
    for (name, value) in req.headers {
        builder = builder.header(name, value);
    }
    let body = match (req.body, req.raw_body) {
        (Some(b), _) => {
            builder = builder.header("content-type", "application/json");
            Body::from(b.to_string())
        }
        (None, Some(raw)) => Body::from(raw),
        (None, None) => Body::empty(),
    };
    let mut request = builder.body(body).expect("request");
    if let Some(c) = req.claims {
        request.extensions_mut().insert(c);
    }
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    let json = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("body is not JSON: {}", String::from_utf8_lossy(&bytes)))
    };
    (status, json)
}

/// The texts of the notes in `db` as read by a raw client (empty when the collection does not
/// exist: `find`, not `count`, which the test server refuses on a missing collection).
pub async fn raw_texts(client: &Client, db: &str) -> Vec<String> {
    let docs: Vec<Document> = client
        .database(db)
        .collection::<Document>("notes")
        .find(doc! {})
        .await
        .expect("raw find")
        .try_collect()
        .await
        .expect("raw cursor");
    let mut texts: Vec<String> = docs
        .iter()
        .filter_map(|d| d.get_str("text").ok().map(str::to_owned))
        .collect();
    texts.sort();
    texts
}

/// Asserts a refusal: its status, its code, and a body with nothing but `error` and `message`,
/// free of driver or server wording.
pub fn assert_refused(
    (status, body): &(StatusCode, serde_json::Value),
    want: StatusCode,
    code: &str,
    case: &str,
) {
    assert_eq!(*status, want, "{case}: {body}");
    assert_eq!(body["error"], code, "{case}: {body}");
    let obj = body.as_object().expect("object body");
    assert_eq!(obj.len(), 2, "{case}: only error and message: {body}");
    let message = body["message"].as_str().expect("message").to_lowercase();
    for leak in [
        "errmsg",
        "127.0.0.1",
        "kind:",
        "invalid reply",
        "e11000",
        "code:",
    ] {
        assert!(
            !message.contains(leak),
            "{case}: {message:?} contains {leak:?}"
        );
    }
}

/// A fault proxy in front of `server`, and a manager with a pool of `pool` through it.
pub async fn proxied_manager(
    server: &TestServer,
    pool: u32,
) -> (polymongo_testkit::FaultProxy, PolyMongo) {
    let proxy = polymongo_testkit::FaultProxy::start(&format!(
        "127.0.0.1:{}",
        server.port().expect("a local server")
    ))
    .await
    .expect("proxy");
    let poly = PolyMongo::builder()
        .uri(proxy.uri_for(server.uri()))
        .default_db("main")
        .max_pool_size(pool)
        .build()
        .await
        .expect("manager builds");
    (proxy, poly)
}

/// Polls `probe` until it returns `Some`, failing the test after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
