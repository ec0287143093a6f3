//! Mountable operational routes: health (a ping of the default database and the state of each
//! pool) and Prometheus metrics.

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
                tracing::warn!(error = %e, "health ping failed");
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
