//! Versioned migrations on every tenant database: a checksummed ledger and an expiring lock
//! in each database, fleet runs with a canary, a failure budget and progress, status and
//! plans, rollbacks, and a lazy mode that migrates a database on its first use. The guide is
//! `docs/migrations.md`.
//!
//! ```no_run
//! # async fn demo(poly: polymongo::PolyMongo) -> polymongo::Result<()> {
//! use polymongo::migrate::{Canary, FleetOptions, Migration, Migrations, Step, Targets};
//! use polymongo::mongodb::bson::{doc, Document};
//!
//! let migrations = Migrations::new(vec![
//!     Migration::new(1, "users-email-index", vec![Step::command(doc! {
//!         "createIndexes": "users",
//!         "indexes": [{ "key": { "email": 1 }, "name": "email_1", "unique": true }],
//!     })])
//!     .down(vec![Step::command(doc! { "dropIndexes": "users", "index": "email_1" })]),
//!     Migration::new(2, "default-plan", vec![Step::code(|db| async move {
//!         db.collection::<Document>("users")
//!             .update_many(doc! { "plan": null }, doc! { "$set": { "plan": "free" } })
//!             .await?;
//!         Ok(())
//!     })])
//!     .code_version("2026-11-30"),
//! ])?;
//! // One database:
//! let report = poly.migrate_database("tenant_42", &migrations).await?;
//! assert!(report.is_complete());
//! // Every tenant database, 8 at a time, 3 canaries first:
//! let fleet = poly
//!     .fleet()
//!     .migrate(
//!         &Targets::prefix("tenant_"),
//!         &migrations,
//!         &FleetOptions::new().concurrency(8).canary(Canary::First(3)).max_failures(5),
//!     )
//!     .await?;
//! for failed in fleet.failed() {
//!     eprintln!("{}: {}", failed.database, failed.problem().unwrap_or_default());
//! }
//! # Ok(()) }
//! ```
//!
//! - **Ledger**: one document per applied version in the tenant database's
//!   [`MIGRATIONS_COLLECTION`], written after the version's steps succeeded, with the
//!   checksum of its definition. A ledger version defined differently, or not defined at all,
//!   refuses the run before anything is applied. The last failure is kept there too.
//! - **Lock**: one document in the same collection, taken with an atomic upsert, with an
//!   expiry renewed while steps run ([`DEFAULT_LOCK_TTL`]); it also records the step in
//!   progress, so the runner that takes over a dead runner's lock finishes its version from
//!   the step that was cut ([`Migrator::apply`] says exactly what runs again).
//! - **Cancellation**: each database's run is a task; a dropped caller lets the version in
//!   progress finish and be recorded, then the lock is released. A fleet run can also be
//!   stopped with a [`FleetStop`] and still return its report.
//! - **Fleets** ([`Fleet`]), **lazy mode**
//!   ([`PolyMongoBuilder::migrate_on_first_use`](crate::PolyMongoBuilder::migrate_on_first_use)),
//!   **files** ([`Migrations::from_dir`]), **figures**
//!   ([`PolyMongo::migration_stats`](crate::PolyMongo::migration_stats)).

mod command;
pub(crate) mod counters;
mod files;
mod fleet;
mod lazy;
mod ledger;
mod lock;
mod run;
mod set;
mod step;

pub use command::ALLOWED_COMMANDS;
pub use counters::{MigrationStats, VersionCounts, MAX_COUNTED_VERSIONS};
pub use files::parse_file;
pub use fleet::{
    Canary, DbOutcome, Fleet, FleetOptions, FleetProgress, FleetReport, FleetStatus, FleetStop,
    Phase, ProgressFn, Stopped, Targets, DEFAULT_CONCURRENCY, MAX_CONCURRENCY,
};
pub(crate) use lazy::OnFirstUse;
pub use ledger::{FailureRecord, LedgerEntry, MIGRATIONS_COLLECTION};
pub use lock::LockInfo;
pub use run::{
    AppliedVersion, DbMigrationReport, MigrationFailure, MigrationStatus, Migrator,
    DEFAULT_LOCK_TTL, DEFAULT_LOCK_WAIT,
};
pub use set::Migrations;
pub use step::{IndexSync, Migration, Step, StepError};

pub use crate::floor::migration_error::MigrationError;
