//! Versioned migrations applied to one tenant database, with a ledger and a lock (issue 17,
//! first slice).
//!
//! ```no_run
//! # async fn demo(poly: polymongo::PolyMongo) -> polymongo::Result<()> {
//! use polymongo::migrate::{Migration, Migrations, Step};
//! use polymongo::mongodb::bson::{doc, Document};
//!
//! let migrations = Migrations::new(vec![
//!     Migration::new(1, "users-email-index", vec![Step::command(doc! {
//!         "createIndexes": "users",
//!         "indexes": [{ "key": { "email": 1 }, "name": "email_1", "unique": true }],
//!     })]),
//!     Migration::new(2, "default-plan", vec![Step::code(|db| async move {
//!         db.collection::<Document>("users")
//!             .update_many(doc! { "plan": null }, doc! { "$set": { "plan": "free" } })
//!             .await?;
//!         Ok(())
//!     })])
//!     .code_version("2026-11-30"),
//! ])?;
//! let report = poly.migrate_database("tenant_42", &migrations).await?;
//! assert!(report.is_complete());
//! # Ok(()) }
//! ```
//!
//! - **Ledger**: one document per applied version in the tenant database's
//!   [`MIGRATIONS_COLLECTION`], written after the version's steps succeeded, with the
//!   checksum of its definition. A ledger version defined differently, or not defined at all,
//!   refuses the run before anything is applied.
//! - **Lock**: one document in the same collection, taken with an atomic upsert, with an
//!   expiry renewed while steps run ([`DEFAULT_LOCK_TTL`]).
//! - **Cancellation**: the run is a task; a dropped caller lets the version in progress
//!   finish and be recorded, then the lock is released.

mod command;
mod files;
mod fleet;
mod lazy;
mod ledger;
mod lock;
mod run;
mod set;
mod step;

pub use command::ALLOWED_COMMANDS;
pub use files::parse_file;
pub use fleet::{
    Canary, DbOutcome, Fleet, FleetOptions, FleetProgress, FleetReport, FleetStatus, Phase,
    ProgressFn, Stopped, Targets, DEFAULT_CONCURRENCY, MAX_CONCURRENCY,
};
pub(crate) use lazy::OnFirstUse;
pub use ledger::{FailureRecord, LedgerEntry, MIGRATIONS_COLLECTION};
pub use lock::LockInfo;
pub use run::{
    AppliedVersion, DbMigrationReport, MigrationFailure, MigrationStatus, Migrator,
    DEFAULT_LOCK_TTL, DEFAULT_LOCK_WAIT,
};
pub use set::Migrations;
pub use step::{Migration, Step, StepError};

pub use crate::floor::migration_error::MigrationError;
