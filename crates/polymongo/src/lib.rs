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

mod builder;
pub mod bulk;
mod change_stream;
mod config;
mod db_config;
mod error;
pub mod hooks;
#[cfg(feature = "logging")]
pub mod logging;
#[cfg(feature = "metrics")]
pub mod metrics;
mod model;
mod name;
mod poly;
mod pool;
mod pool_stats;
mod reaper;
mod redact;
mod routing;
mod scale;
#[cfg(unix)]
mod shutdown;
mod stats;
mod transaction;
mod usage;

pub use builder::PolyMongoBuilder;
pub use change_stream::ManagedStream;
pub use config::{
    Options, RetryOptions, DEFAULT_MAX_DEDICATED_POOLS, DEFAULT_MAX_POOL_SIZE, FALLBACK_DEFAULT_DB,
};
pub use db_config::{DbConfig, DEFAULT_QUEUE_TIMEOUT};
pub use error::{Error, ErrorKind, Result};
pub use hooks::{ErrorEvent, HookHandle, PoolEvent};
pub use model::{DbHandle, Model, ModelHandle};
pub use name::{
    validate_collection_name, validate_database_name, NameRule, MAX_DATABASE_NAME_BYTES,
};
pub use poly::{CloseReport, PolyMongo};
pub use pool::{ConnectionState, PoolKind};
pub use pool_stats::PoolStats;
pub use reaper::IDLE_CLOSE_GRACE;
pub use redact::redact_uri;
pub use routing::QueueStats;
pub use scale::Scale;
#[cfg(unix)]
pub use shutdown::{ShutdownSignal, SignalShutdown};
pub use stats::{
    CollectionStats, DatabaseSize, DbConfigView, DbStats, GeneralStats, PoolInfo, Stats,
    MAX_LISTED_DATABASES,
};
pub use transaction::{Transaction, DEFAULT_TRANSACTION_TIMEOUT};
pub use usage::{
    TopBy, UsageAnalytics, UsageStats, DEFAULT_MAX_TRACKED_DATABASES, OTHER_DATABASES,
};

pub use mongodb;
