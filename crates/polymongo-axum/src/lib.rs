//! Tenant routing for axum services on polymongo.
//!
//! A service with one MongoDB database per tenant resolves each request's tenant — from a
//! header, the subdomain of its host, a path parameter or its own rule — checks it, maps it to
//! a database name, and works on that database. This crate does that as an axum extractor,
//! [`Tenant<T>`], which hands the handler polymongo's typed handle on the tenant's database:
//! every tenant shares the cluster's one connection pool, so a thousand tenants cost a
//! thousand map entries, not a thousand pools.
//!
//! Tenant isolation is a security property, so the policy ([`Tenancy`]) is strict by default:
//! - **one rule for every source**: a value that is present but invalid is refused, never
//!   skipped for the next source;
//! - **one case rule**: tenant names are lower-case (a host is read lower-cased, being
//!   case-insensitive; any other source's upper-case name is refused);
//! - names are ASCII letters, digits, `_` and `-`; the database name made from them must pass
//!   MongoDB's rules; `admin`, `local` and `config` are never reachable (whatever the
//!   mapping);
//! - **an allow policy is required** (a list, a function, an async lookup, or polymongo's
//!   tenant directory): unknown tenants are refused before the manager makes any state for
//!   them, so anonymous requests cannot grow the service's memory or create databases.
//!
//! **Tenant directory** ([`TenancyBuilder::directory`]): with polymongo's tenant directory
//! configured, the extractor routes the tenant through it — a cache lookup once warm, no
//! round trip per request — and hands the handler model handles on the cluster the directory
//! placed the tenant on. Its answers join the table: 404 unknown, 403 `suspended_tenant`, 410
//! `tenant_gone` (archiving, archived, deleting), 503 `tenant_not_ready` without
//! `Retry-After` (creating, restoring), 500 `invalid_tenant_record`. Example:
//! `examples/tenant-directory.rs`.
//!
//! **One deadline model** ([`RequestLimits`]): the extractor takes the request's place in its
//! tenant's pool before the handler runs, waiting at most the queue timeout (past it: 503
//! `busy` with `Retry-After`, nothing sent), and [`Tenancy::layer`] ends every request at its
//! deadline (past it while the handler ran: 504 `timeout`, outcome unknown). That holds however
//! the handler calls the database — through the driver's own API (`Deref`) included.
//!
//! **One answer table** ([`Answer`]): every refusal is a small JSON body ([`ErrorBody`]) —
//! axum's own rejections too, rewritten by the layer — and a 503 with `Retry-After` is sent
//! only when nothing of the request was applied. A write that may have been applied is never
//! presented as safe to retry.
//!
//! ```no_run
//! use axum::{http::HeaderName, routing::get, Json, Router};
//! use polymongo::mongodb::bson::doc;
//! use polymongo_axum::{DbError, Tenancy, Tenant};
//! use serde::{Deserialize, Serialize};
//! use std::time::Duration;
//!
//! #[derive(Serialize, Deserialize)]
//! struct Note {
//!     text: String,
//! }
//!
//! impl polymongo::Model for Note {
//!     const COLLECTION: &'static str = "notes";
//! }
//!
//! async fn list(notes: Tenant<Note>) -> Result<Json<Vec<Note>>, DbError> {
//!     use futures_util::TryStreamExt;
//!     let cursor = notes.find(doc! {}).limit(20).await?;
//!     Ok(Json(cursor.try_collect().await?))
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let poly = polymongo::PolyMongo::builder()
//!     .uri("mongodb://127.0.0.1:27017")
//!     .max_pool_size(10)
//!     .build()
//!     .await?;
//! let tenancy = Tenancy::builder(poly.clone())
//!     .header(HeaderName::from_static("x-tenant")) // first: the X-Tenant header
//!     .subdomain("notes.example.com")               // else: acme.notes.example.com
//!     .prefix("tenant_")                            // acme → database tenant_acme
//!     .allow_list(["acme", "globex"])               // required: who may be served
//!     .queue_timeout(Duration::from_millis(500))    // a place in the pool, or 503
//!     .request_timeout(Duration::from_secs(5))      // the whole request, or 504
//!     .build()?;
//! let app = Router::new()
//!     .route("/notes", get(list))
//!     .route("/healthz", polymongo_axum::health(poly.clone()))
//!     .route("/metrics", polymongo_axum::metrics(poly.clone()))
//!     .route("/figures", polymongo_axum::figures(poly.clone())) // for `polymongo top --app`
//!     .layer(tenancy.layer())                       // required: deadline + JSON refusals
//!     .with_state(tenancy);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! // Stops accepting on SIGTERM / Ctrl-C, finishes requests in flight, then closes the pools.
//! polymongo_axum::serve(listener, app, poly, polymongo_axum::shutdown_signal(), Default::default())
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! The state must give a [`Tenancy`]: make it the state, or a field of the state with an
//! [`axum::extract::FromRef`] implementation.
//!
//! Operational routes: [`health`] (a ping and each pool's state), [`figures`] (the instance's
//! pools and busiest, erroring and slowest tenants as a small JSON document, which
//! `polymongo top --app URL` polls across instances), and with the `metrics` feature
//! [`metrics`].
//!
//! Features: `metrics` (default) adds the [`metrics`] route (polymongo's Prometheus text).
#![deny(missing_docs, missing_debug_implementations)]
#![forbid(unsafe_code)]

mod allow;
mod answer;
mod db_error;
mod deadline;
mod directory;
mod error;
mod extract;
mod host;
mod layer;
mod routes;
mod serve;
mod source;
mod tenancy;
mod uniform;

pub use answer::{Answer, ErrorBody};
pub use db_error::DbError;
pub use deadline::{RequestLimits, DEFAULT_QUEUE_TIMEOUT, DEFAULT_REQUEST_TIMEOUT};
pub use error::{ConfigError, NameProblem, TenantError};
pub use extract::{Tenant, TenantDb};
pub use layer::{TenancyLayer, TenancyService};
#[cfg(feature = "metrics")]
pub use routes::metrics;
pub use routes::{figures, health, HealthBody, PoolHealth, HEALTH_PING_TIMEOUT};
pub use serve::{serve, shutdown_signal, ServeReport, ShutdownDeadlines};
pub use source::TenantSource;
pub use tenancy::{ResolvedTenant, Tenancy, TenancyBuilder, RESERVED_DATABASES};

pub use axum;
pub use polymongo;
