//! The notes service: routes, handlers and the two ways of reaching a tenant's database
//! (polymongo's shared pool, or the naive client per tenant the benchmark compares with).
//!
//! Shared by `main.rs` and by `benches/tenant_load.rs`, which runs this same code as a child
//! process.

use std::collections::{HashMap, HashSet};
use std::future::IntoFuture;
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::TryStreamExt;
use polymongo::mongodb::bson::{doc, oid::ObjectId};
use polymongo::mongodb::{Client, Collection};
use polymongo::{Model, PolyMongo};
use polymongo_axum::{DbError, Tenancy, Tenant, TenantError};
use serde::{Deserialize, Serialize};

/// Largest page a client may ask for.
pub const MAX_PAGE: i64 = 100;
/// Longest note accepted, in bytes.
pub const MAX_TEXT: usize = 10_000;
/// Every tenant's database is `tenant_<name>`: no request can name `admin` and the like.
pub const DB_PREFIX: &str = "tenant_";
/// How long a request waits for a place in the pool before 503 `busy` (nothing sent).
pub const QUEUE_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a request may take in all before 504 `timeout`.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The tenants served when none are given.
pub const DEFAULT_TENANTS: [&str; 3] = ["acme", "globex", "demo"];

/// A note as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Note {
    #[serde(rename = "_id")]
    pub id: ObjectId,
    pub text: String,
    pub created_ms: i64,
}

impl Model for Note {
    const COLLECTION: &'static str = "notes";
}

/// A note as answered.
#[derive(Debug, Serialize)]
pub struct NoteOut {
    pub id: String,
    pub text: String,
    pub created_ms: i64,
}

impl From<Note> for NoteOut {
    fn from(n: Note) -> Self {
        NoteOut {
            id: n.id.to_hex(),
            text: n.text,
            created_ms: n.created_ms,
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct NewNote {
    pub text: String,
}

#[derive(Debug, Deserialize)]
pub struct Page {
    pub limit: Option<i64>,
    /// The `next` of the previous page.
    pub after: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct PageOut {
    pub notes: Vec<NoteOut>,
    /// Pass as `after` for the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// How the service reaches tenant databases.
#[derive(Clone)]
pub enum Backend {
    /// polymongo: one pool for every tenant.
    Poly(Tenancy),
    /// The naive way: one driver `Client` per tenant, created on its first request.
    Naive(Arc<NaiveClients>),
}

/// The naive service's clients, by tenant.
pub struct NaiveClients {
    uri: String,
    tenants: HashSet<String>,
    clients: Mutex<HashMap<String, Client>>,
}

impl NaiveClients {
    pub fn new(uri: String, tenants: &[String]) -> Self {
        NaiveClients {
            uri,
            tenants: tenants.iter().cloned().collect(),
            clients: Mutex::new(HashMap::new()),
        }
    }

    pub fn len(&self) -> usize {
        self.clients.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    async fn collection(&self, parts: &Parts) -> Result<Collection<Note>, ApiError> {
        let tenant = parts
            .headers
            .get("x-tenant")
            .and_then(|v| v.to_str().ok())
            .ok_or(TenantError::Missing)?;
        // The same name rule and allow list as the polymongo backend, so both do the same
        // work.
        let database = format!("{DB_PREFIX}{tenant}");
        let strict = !tenant.is_empty()
            && tenant.starts_with(|c: char| c.is_ascii_alphanumeric())
            && tenant
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !strict || polymongo::validate_database_name(&database).is_err() {
            return Err(ApiError::Client {
                status: StatusCode::BAD_REQUEST,
                code: "invalid_tenant",
                message: "invalid tenant name",
            });
        }
        if !self.tenants.contains(tenant) {
            return Err(TenantError::Unknown.into());
        }
        let cached = self
            .clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(tenant)
            .cloned();
        let client = match cached {
            Some(c) => c,
            None => {
                let created = Client::with_uri_str(&self.uri).await?;
                self.clients
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(tenant.to_owned())
                    .or_insert(created)
                    .clone()
            }
        };
        Ok(client.database(&database).collection(Note::COLLECTION))
    }
}

/// The request's tenant's notes collection, through either backend.
pub enum TenantNotes {
    Poly(Tenant<Note>),
    Naive(Collection<Note>),
}

impl Deref for TenantNotes {
    type Target = Collection<Note>;

    fn deref(&self) -> &Collection<Note> {
        match self {
            TenantNotes::Poly(t) => t,
            TenantNotes::Naive(c) => c,
        }
    }
}

impl TenantNotes {
    /// Runs `op` on the collection. Through polymongo it is counted in the usage analytics
    /// (operations, errors, latency per tenant: what `/figures` and `/metrics` report); the
    /// naive backend just runs it.
    async fn run<'a, A, R>(
        &'a self,
        op: impl FnOnce(&'a Collection<Note>) -> A,
    ) -> Result<R, ApiError>
    where
        A: IntoFuture<Output = polymongo::mongodb::error::Result<R>>,
    {
        match self {
            TenantNotes::Poly(t) => t
                .run(op)
                .await
                .map_err(|e| ApiError::Db(Box::new(DbError::from(e)))),
            TenantNotes::Naive(c) => Ok(op(c).await?),
        }
    }
}

impl FromRequestParts<Backend> for TenantNotes {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Backend) -> Result<Self, Response> {
        match state {
            Backend::Poly(tenancy) => Tenant::<Note>::from_request_parts(parts, tenancy)
                .await
                .map(TenantNotes::Poly)
                .map_err(IntoResponse::into_response),
            Backend::Naive(clients) => clients
                .collection(parts)
                .await
                .map(TenantNotes::Naive)
                .map_err(IntoResponse::into_response),
        }
    }
}

/// Why a request failed, answered as a JSON error body.
pub enum ApiError {
    /// The request is at fault.
    Client {
        status: StatusCode,
        code: &'static str,
        message: &'static str,
    },
    /// The tenant was refused.
    Tenant(TenantError),
    /// The database failed (boxed: a driver error is large).
    Db(Box<DbError>),
}

impl From<polymongo::mongodb::error::Error> for ApiError {
    fn from(e: polymongo::mongodb::error::Error) -> Self {
        ApiError::Db(Box::new(DbError::from(e)))
    }
}

impl From<TenantError> for ApiError {
    fn from(e: TenantError) -> Self {
        ApiError::Tenant(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Client {
                status,
                code,
                message,
            } => (
                status,
                Json(polymongo_axum::ErrorBody {
                    error: code.to_owned(),
                    message: message.to_owned(),
                }),
            )
                .into_response(),
            ApiError::Tenant(e) => e.into_response(),
            ApiError::Db(e) => e.into_response(),
        }
    }
}

const NOT_FOUND: ApiError = ApiError::Client {
    status: StatusCode::NOT_FOUND,
    code: "not_found",
    message: "no such note",
};

fn parse_id(id: &str) -> Result<ObjectId, ApiError> {
    ObjectId::parse_str(id).map_err(|_| ApiError::Client {
        status: StatusCode::BAD_REQUEST,
        code: "invalid_id",
        message: "a note id is 24 hex digits",
    })
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

async fn create(notes: TenantNotes, Json(new): Json<NewNote>) -> Result<Response, ApiError> {
    if new.text.is_empty() || new.text.len() > MAX_TEXT {
        return Err(ApiError::Client {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid_note",
            message: "text must be 1 to 10 000 bytes",
        });
    }
    let note = Note {
        id: ObjectId::new(),
        text: new.text,
        created_ms: now_ms(),
    };
    notes.run(|c| c.insert_one(&note)).await?;
    Ok((StatusCode::CREATED, Json(NoteOut::from(note))).into_response())
}

async fn list(notes: TenantNotes, Query(page): Query<Page>) -> Result<Json<PageOut>, ApiError> {
    let limit = page.limit.unwrap_or(20).clamp(1, MAX_PAGE);
    let filter = match &page.after {
        Some(after) => doc! { "_id": { "$gt": parse_id(after)? } },
        None => doc! {},
    };
    // Keyset paging on `_id`: stable under inserts, no skip cost on deep pages.
    let found: Vec<Note> = notes
        .run(|c| c.find(filter).sort(doc! { "_id": 1 }).limit(limit))
        .await?
        .try_collect()
        .await?;
    let next = (found.len() as i64 == limit)
        .then(|| found.last().map(|n| n.id.to_hex()))
        .flatten();
    Ok(Json(PageOut {
        notes: found.into_iter().map(NoteOut::from).collect(),
        next,
    }))
}

async fn get_one(notes: TenantNotes, Path(id): Path<String>) -> Result<Json<NoteOut>, ApiError> {
    let id = parse_id(&id)?;
    match notes.run(|c| c.find_one(doc! { "_id": id })).await? {
        Some(n) => Ok(Json(n.into())),
        None => Err(NOT_FOUND),
    }
}

async fn delete_one(notes: TenantNotes, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    let deleted = notes.run(|c| c.delete_one(doc! { "_id": id })).await?;
    if deleted.deleted_count == 0 {
        return Err(NOT_FOUND);
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn naive_health(State(_): State<Backend>) -> StatusCode {
    StatusCode::OK
}

/// The service's routes on `backend`. The polymongo backend adds its tenancy's layer: each
/// request's deadline, and one JSON body for every refusal (axum's own included).
pub fn router(backend: Backend, poly: Option<&PolyMongo>) -> Router {
    let mut app = Router::new()
        .route("/notes", get(list).post(create))
        .route("/notes/{id}", get(get_one).delete(delete_one));
    app = match poly {
        Some(poly) => app
            .route("/healthz", polymongo_axum::health(poly.clone()))
            .route("/metrics", polymongo_axum::metrics(poly.clone()))
            .route("/figures", polymongo_axum::figures(poly.clone())),
        None => app.route("/healthz", get(naive_health)),
    };
    if let Backend::Poly(tenancy) = &backend {
        app = app.layer(tenancy.layer());
    }
    app.with_state(backend)
}

/// The polymongo service's tenancy: `X-Tenant`, else the subdomain of `domain`; databases
/// `tenant_<name>`; only `tenants` served; the example's time limits.
pub fn tenancy(
    poly: &PolyMongo,
    domain: &str,
    tenants: &[String],
) -> Result<Tenancy, polymongo_axum::ConfigError> {
    Tenancy::builder(poly.clone())
        .header(HeaderName::from_static("x-tenant"))
        .subdomain(domain)
        .prefix(DB_PREFIX)
        .allow_list(tenants.iter().cloned())
        .queue_timeout(QUEUE_TIMEOUT)
        .request_timeout(REQUEST_TIMEOUT)
        .build()
}

/// Settings of one run of the service.
#[derive(Debug, Clone)]
pub struct Settings {
    pub uri: String,
    pub addr: String,
    pub naive: bool,
    pub pool_size: u32,
    /// Tenants may also be named by subdomains of this domain (`acme.<domain>`).
    pub domain: String,
    /// The tenants served; any other is answered 404 before anything is made for it.
    pub tenants: Vec<String>,
}

/// Runs the service until SIGINT/SIGTERM. Prints `listening on http://ADDR` once ready.
pub async fn run(settings: Settings) -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind(&settings.addr).await?;
    let addr = listener.local_addr()?;
    if settings.naive {
        let clients = Arc::new(NaiveClients::new(settings.uri.clone(), &settings.tenants));
        let app = router(Backend::Naive(Arc::clone(&clients)), None);
        println!("listening on http://{addr} (naive: one client per tenant)");
        axum::serve(listener, app)
            .with_graceful_shutdown(polymongo_axum::shutdown_signal())
            .await?;
        eprintln!("naive service stopped with {} clients", clients.len());
        return Ok(());
    }
    // The instance's name in `/figures` (and `polymongo top --app`), and the driver's app name.
    let name = format!("tenant-service@{addr}");
    let poly = PolyMongo::builder()
        .uri(&settings.uri)
        .default_db(format!("{DB_PREFIX}default"))
        .max_pool_size(settings.pool_size)
        .app_name(name)
        .build()
        .await?;
    let tenancy = tenancy(&poly, &settings.domain, &settings.tenants)?;
    let app = router(Backend::Poly(tenancy), Some(&poly));
    println!(
        "listening on http://{addr} (polymongo, pool size {})",
        settings.pool_size
    );
    let report = polymongo_axum::serve(
        listener,
        app,
        poly,
        polymongo_axum::shutdown_signal(),
        // The drain outlasts the request timeout: every request meets its own deadline
        // before the pools close.
        polymongo_axum::ShutdownDeadlines {
            drain: REQUEST_TIMEOUT + Duration::from_secs(1),
            close: Duration::from_secs(5),
        },
    )
    .await?;
    eprintln!("stopped: {report:?}");
    Ok(())
}
