//! polymongo manages MongoDB connections for applications that use many databases.
//!
//! A MongoDB connection is not bound to a database, so one connection pool per *cluster* can
//! serve any number of databases. [`PolyMongo`] keeps one driver [`Client`](mongodb::Client)
//! per cluster, routes every database name to it, and hands out typed handles that are the
//! driver's own [`Collection`](mongodb::Collection): switching database is a map lookup, never
//! a new connection.
//!
//! ```no_run
//! use mongodb::bson::doc;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Serialize, Deserialize)]
//! struct User {
//!     name: String,
//!     role: String,
//! }
//!
//! impl polymongo::Model for User {
//!     const COLLECTION: &'static str = "users";
//! }
//!
//! # async fn run() -> polymongo::Result<()> {
//! let poly = polymongo::PolyMongo::builder()
//!     .uri("mongodb://127.0.0.1:27017")
//!     .default_db("production")
//!     .max_pool_size(10)
//!     .build()
//!     .await?; // cold start: nothing is connected yet
//!
//! let users = poly.model::<User>();
//! users.default_db()?.insert_one(User { name: "Ada".into(), role: "admin".into() }).await?;
//! let admins = users.db("tenant_1")?.count_documents(doc! { "role": "admin" }).await?;
//! println!("{admins} admins in tenant_1, same pool as production");
//! poly.close_all(std::time::Duration::from_secs(5)).await;
//! # Ok(()) }
//! ```
//!
//! See `docs/architecture.md` in the repository for how the pieces fit.
#![deny(missing_docs, missing_debug_implementations)]
#![forbid(unsafe_code)]

// The layers, bottom to top; each imports only the ones before it (see
// `docs/architecture.md`).
mod builder;
mod features;
mod floor;
mod handle;
mod poly;
mod pool;
mod registry;

pub use features::bulk;
pub use features::hooks;
#[cfg(feature = "logging")]
pub use features::logging;
pub use features::migrate;
pub use features::tenants;

/// Prometheus exposition of pool and usage figures (feature `metrics`): [`render`](metrics::render)
/// for a standalone `/metrics` route, and with feature `prometheus-client` a collector
/// (`metrics::collector`) for an application's own `prometheus_client` registry.
///
/// Rendered from the same snapshots as [`Stats`] at scrape time, so there is no second set of
/// counters to keep in step, and a render costs O(pools + the usage board), whatever the
/// number of databases. Label cardinality is bounded: pool series exist only for pools with
/// an open client (the main pool always), the manager-wide gauges sum every pool, and
/// per-database usage series exist only for the [`MAX_METRIC_DATABASES`](metrics::MAX_METRIC_DATABASES)
/// busiest databases of the last minute or two; everything else is summed under
/// [`OTHER_DATABASES`].
///
/// Latency (`polymongo_db_command_duration_seconds{database}`) and pool waits
/// (`polymongo_pool_wait_duration_seconds{cluster,kind}`) are histograms with the fixed
/// bounds of [`DurationHistogram`] (`le` = 2^i µs in seconds, i = 0..=26, then `+Inf`:
/// [`HISTOGRAM_SERIES`](metrics::HISTOGRAM_SERIES) series per database row or pool), the same
/// in every instance, so a fleet's buckets add up and its quantiles can be computed.
#[cfg(feature = "metrics")]
pub mod metrics {
    #[cfg(feature = "prometheus-client")]
    pub use crate::features::metrics::PrometheusCollector;
    pub use crate::features::metrics::{CONTENT_TYPE, HISTOGRAM_SERIES, MAX_METRIC_DATABASES};

    /// The manager's figures in Prometheus text format (text format 0.0.4): pools, usage,
    /// migrations ([`PolyMongo::migration_stats`](crate::PolyMongo::migration_stats)), and
    /// with a tenant directory its routing figures per cluster
    /// ([`Tenants::cluster_stats`](crate::tenants::Tenants::cluster_stats)).
    pub fn render(poly: &crate::PolyMongo) -> String {
        crate::features::metrics::render(poly)
    }

    /// A `prometheus_client` collector of `poly`'s figures (feature `prometheus-client`):
    /// the families of [`render`], encoded at each scrape of the registry it is registered
    /// with, beside the application's own.
    ///
    /// ```no_run
    /// # fn run(poly: &polymongo::PolyMongo) -> std::fmt::Result {
    /// use prometheus_client::registry::Registry;
    ///
    /// let mut registry = Registry::default();
    /// registry.register_collector(Box::new(polymongo::metrics::collector(poly)));
    /// let mut text = String::new();
    /// prometheus_client::encoding::text::encode(&mut text, &registry)?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "prometheus-client")]
    pub fn collector(poly: &crate::PolyMongo) -> PrometheusCollector {
        PrometheusCollector::new(poly)
    }

    #[cfg(feature = "prometheus-client")]
    impl PrometheusCollector {
        /// A collector of `poly`'s figures: [`collector`].
        pub fn new(poly: &crate::PolyMongo) -> Self {
            Self::of(std::sync::Arc::new(poly.clone()))
        }
    }
}

pub use builder::PolyMongoBuilder;
pub use features::closing::CloseReport;
pub use features::figures::{
    Figures, FiguresGeneral, FiguresPool, FiguresTenant, FIGURES_CANDIDATES, FIGURES_MAX_TENANTS,
    FIGURES_TOP, FIGURES_VERSION,
};
pub use features::hooks::{ErrorEvent, HookHandle, PoolEvent};
pub use features::scale::Scale;
#[cfg(unix)]
pub use features::shutdown::{ShutdownSignal, SignalShutdown};
pub use features::stats::{
    CollectionStats, DatabaseSize, DbConfigView, DbStats, GeneralStats, PoolInfo, Stats,
};
pub use features::txn::{Transaction, DEFAULT_TRANSACTION_TIMEOUT};
pub use features::watch::ManagedStream;
pub use floor::config::{
    Options, RetryOptions, UsageAnalytics, DEFAULT_DATABASE_IDLE_TIMEOUT,
    DEFAULT_MAX_CACHED_DATABASES, DEFAULT_MAX_DEDICATED_POOLS, DEFAULT_MAX_POOL_SIZE,
    DEFAULT_MAX_TRACKED_DATABASES, FALLBACK_DEFAULT_DB, IDLE_CLOSE_GRACE, MAX_DURATION,
    MAX_TRACKED_LIMIT,
};
pub use floor::db_config::{DbConfig, DEFAULT_QUEUE_TIMEOUT};
pub use floor::error::{Error, ErrorKind, Result};
pub use floor::name::{
    validate_collection_name, validate_database_name, NameRule, MAX_DATABASE_NAME_BYTES,
    RESERVED_COLLECTION_PREFIX,
};
pub use floor::redact::{redact_config_error, redact_uri};
pub use floor::redacted_error::RedactedError;
pub use floor::tenant_config::{ClusterConfig, DirectoryConfig};
pub use handle::model::{DbHandle, Model, ModelHandle};
pub use handle::slot::ConnectionSlot;
pub use handle::tenant_route::ModelRoute;
pub use poly::PolyMongo;
pub use pool::cluster::{ConnectionState, PoolKind, MAX_LISTED_DATABASES};
pub use pool::cmap::PoolStats;
pub use pool::histogram::{DurationHistogram, DURATION_BUCKETS};
pub use registry::gate::QueueStats;
pub use registry::usage::{TopBy, UsageStats, OTHER_DATABASES, RECENT_WINDOW};

pub use mongodb;
