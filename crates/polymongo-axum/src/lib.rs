//! Tenant routing for axum services on polymongo.
//!
//! A service with one MongoDB database per tenant resolves each request's tenant — from a
//! header, the subdomain of `Host`, a path parameter or its own rule — checks it, maps it to a
//! database name, and works on that database. This crate does that as an axum extractor,
//! [`Tenant<T>`], which hands the handler polymongo's typed handle on the tenant's database:
//! every tenant shares the cluster's one connection pool, so a thousand tenants cost a
//! thousand map entries, not a thousand pools.
//!
//! Tenant isolation is a security property, so the policy ([`Tenancy`]) is strict by default:
//! tenant names are ASCII letters, digits, `_` and `-`; the database name made from them must
//! pass MongoDB's rules; `admin`, `local` and `config` are never reachable (whatever the
//! mapping); an optional allow-list refuses unknown tenants. Refusals are 400 or 404 with a
//! small JSON body ([`ErrorBody`]), 503 when the database side cannot take the request — never
//! a 500, and never a driver message.
//!
//! ```no_run
//! use axum::{http::HeaderName, routing::get, Json, Router};
//! use polymongo::mongodb::bson::doc;
//! use polymongo_axum::{DbError, Tenancy, Tenant};
//! use serde::{Deserialize, Serialize};
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
//!     .build()?;
//! let app = Router::new()
//!     .route("/notes", get(list))
//!     .route("/healthz", polymongo_axum::health(poly.clone()))
//!     .route("/metrics", polymongo_axum::metrics(poly.clone()))
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
//! Features: `metrics` (default) adds the [`metrics`] route (polymongo's Prometheus text).
#![deny(missing_docs, missing_debug_implementations)]
#![forbid(unsafe_code)]

mod error;
mod extract;
mod routes;
mod serve;
mod source;
mod tenancy;

pub use error::{ConfigError, DbError, ErrorBody, NameProblem, TenantError};
pub use extract::{Tenant, TenantDb};
#[cfg(feature = "metrics")]
pub use routes::metrics;
pub use routes::{health, HealthBody, PoolHealth, HEALTH_PING_TIMEOUT};
pub use serve::{serve, shutdown_signal, ServeReport, ShutdownDeadlines};
pub use source::TenantSource;
pub use tenancy::{ResolvedTenant, Tenancy, TenancyBuilder, RESERVED_DATABASES};

pub use axum;
pub use polymongo;
