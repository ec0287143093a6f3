//! Mountable operational routes: health (a ping of the default database and the state of each
//! pool), Prometheus metrics, and the figures document `polymongo top --app` reads.

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::Json;
use polymongo::{ConnectionState, PolyMongo, PoolInfo, PoolKind};
use serde::Serialize;

/// How long the health route waits for the ping before answering 503.
pub const HEALTH_PING_TIMEOUT: Duration = Duration::from_secs(2);

/// The health route's body.
#[derive(Debug, Clone, Serialize)]
pub struct HealthBody {
    /// `ok` (200) or `unavailable` (503).
    pub status: String,
    /// Why it is unavailable: `closed`, `timeout` or `ping_failed`. Absent when ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The database pinged (the manager's default database).
    pub database: String,
    /// The ping's round trip in milliseconds, when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ping_ms: Option<f64>,
    /// Databases routed now.
    pub databases_in_use: usize,
    /// Every pool: the main one first, then other clusters, then dedicated pools.
    pub pools: Vec<PoolHealth>,
}

/// One pool in [`HealthBody`].
#[derive(Debug, Clone, Serialize)]
pub struct PoolHealth {
    /// The cluster (password redacted; dedicated pools add their database).
    pub cluster: String,
    /// Shared or dedicated.
    pub kind: PoolKind,
    /// Connection state.
    pub state: ConnectionState,
    /// Pooled connections open now.
    pub connections: i64,
    /// Of those, checked out now.
    pub in_use: i64,
    /// The pool's size limit.
    pub max_size: u32,
    /// Databases using the pool now.
    pub databases: usize,
}

impl From<&PoolInfo> for PoolHealth {
    fn from(p: &PoolInfo) -> Self {
        PoolHealth {
            cluster: p.cluster.clone(),
            kind: p.kind,
            state: p.state,
            connections: p.stats.total,
            in_use: p.stats.in_use,
            max_size: p.stats.max_size,
            databases: p.database_count,
        }
    }
}

/// The health route: `GET` pings the default database (bounded by [`HEALTH_PING_TIMEOUT`]) and
/// lists each pool's state. 200 `{"status": "ok", ...}` when the ping answered, else 503
/// `{"status": "unavailable", "reason": ...}`. The body names no error text.
///
/// ```
/// # fn f(poly: polymongo::PolyMongo) {
/// let app: axum::Router = axum::Router::new().route("/healthz", polymongo_axum::health(poly));
/// # }
/// ```
pub fn health<S>(poly: PolyMongo) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    get(health_handler).with_state(poly)
}

async fn health_handler(axum::extract::State(poly): axum::extract::State<PolyMongo>) -> Response {
    let database = poly.default_db_name().to_owned();
    let (reason, ping_ms) = if poly.is_closed() {
        (Some("closed"), None)
    } else {
        match tokio::time::timeout(HEALTH_PING_TIMEOUT, poly.ping(&database)).await {
            Ok(Ok(rtt)) => (None, Some(rtt.as_secs_f64() * 1000.0)),
            Ok(Err(e)) if e.kind() == polymongo::ErrorKind::Closed => (Some("closed"), None),
            Ok(Err(e)) => {
                tracing::warn!(error = %e.redacted(), "health ping failed");
                (Some("ping_failed"), None)
            }
            Err(_) => (Some("timeout"), None),
        }
    };
    let general = poly.stats().general();
    let pools = std::iter::once(&general.primary)
        .chain(&general.other_clusters)
        .chain(&general.dedicated)
        .map(PoolHealth::from)
        .collect();
    let body = HealthBody {
        status: if reason.is_none() {
            "ok"
        } else {
            "unavailable"
        }
        .to_owned(),
        reason: reason.map(str::to_owned),
        database,
        ping_ms,
        databases_in_use: general.databases_in_use,
        pools,
    };
    let status = if reason.is_none() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// The Prometheus metrics route: `GET` answers [`polymongo::metrics::render`] with its content
/// type. No I/O: the figures are the manager's snapshots.
///
/// ```
/// # fn f(poly: polymongo::PolyMongo) {
/// let app: axum::Router = axum::Router::new().route("/metrics", polymongo_axum::metrics(poly));
/// # }
/// ```
#[cfg(feature = "metrics")]
pub fn metrics<S>(poly: PolyMongo) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    get(metrics_handler).with_state(poly)
}

#[cfg(feature = "metrics")]
async fn metrics_handler(axum::extract::State(poly): axum::extract::State<PolyMongo>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            polymongo::metrics::CONTENT_TYPE,
        )],
        polymongo::metrics::render(&poly),
    )
        .into_response()
}

/// The figures route: `GET` answers [`polymongo::Figures::take`] as JSON — the instance's
/// pools and its busiest, most erroring and slowest databases now, the document
/// `polymongo top --app URL` polls and aggregates across instances.
///
/// No I/O (the manager's snapshots), bounded size whatever the number of databases (every
/// pool and at most [`polymongo::FIGURES_MAX_TENANTS`] databases), no secrets (pool labels
/// have their passwords redacted; no configuration or error text), and
/// `Cache-Control: no-store`. The schema is versioned ([`polymongo::FIGURES_VERSION`]) and
/// read back with the same type:
///
/// ```json
/// {"version": 1, "instance": "orders-api", "pid": 4242, "taken_at_ms": 1764522000000,
///  "pools": [{"cluster": "mongodb://app:***@db1:27017/", "kind": "shared", "state": "connected",
///             "connections": 4, "in_use": 1, "wait_queue": 0, "max_size": 10, "checkouts": 812,
///             "checkout_failures": 0, "checkout_wait_max_us": 950, "pool_clears": 0,
///             "databases": 3}],
///  "tenants": [{"database": "tenant_acme", "ranked": ["operations"], "operations": 700,
///               "errors": 0, "in_flight": 1, "total_time_us": 350000, "recent_operations": 700,
///               "recent_time_us": 350000, "p50_us": 512, "p95_us": 1024, "p99_us": 2048,
///               "last_used_ms": 1764521999990,
///               "latency": {"counts": [0, 0, 0, 0, 0, 0, 0, 0, 0, 410, 280, 9, 0, ...],
///                           "sum_us": 350000}}],
///  "general": {"total_active_pools": 1, "total_connections": 4, "databases_in_use": 3,
///              "change_streams": 0, "usage_analytics": true, "usage": {"database": "(all databases)", ...}}}
/// ```
///
/// Usage figures come from the manager's usage analytics: operations run through
/// [`Tenant::run`](crate::Tenant) (or every command, with
/// [`UsageAnalytics::Commands`](polymongo::UsageAnalytics::Commands)).
///
/// ```
/// # fn f(poly: polymongo::PolyMongo) {
/// let app: axum::Router = axum::Router::new().route("/figures", polymongo_axum::figures(poly));
/// # }
/// ```
pub fn figures<S>(poly: PolyMongo) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    get(figures_handler).with_state(poly)
}

async fn figures_handler(axum::extract::State(poly): axum::extract::State<PolyMongo>) -> Response {
    (
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        Json(polymongo::Figures::take(&poly)),
    )
        .into_response()
}
