//! Lazy mode: a database is brought to the latest version by the first
//! [`acquire`](crate::ModelHandle::acquire) that uses it
//! ([`PolyMongoBuilder::migrate_on_first_use`](crate::PolyMongoBuilder::migrate_on_first_use)).
//!
//! The first acquire of a database (per registry entry) reads its ledger once; an
//! up-to-date database costs that one round trip, and nothing on later acquires. A database
//! behind is migrated under its lock as [`Migrator::apply`](super::Migrator::apply) would;
//! concurrent first users of it wait for that one run, and runners in other processes wait
//! on the lock.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::counters::Counters;

use super::run::{is_up_to_date, run_on, Goal, Settings};
use super::set::Migrations;
use crate::floor::error::Result;
use crate::floor::migration_error::MigrationError;
use crate::registry::first_use::FirstUse;
use crate::registry::DbLease;

/// The registry's first-use work when lazy migrations are configured.
pub(crate) struct OnFirstUse {
    migrations: Migrations,
    settings: Settings,
    counters: Arc<Counters>,
}

impl OnFirstUse {
    pub(crate) fn new(migrations: Migrations, settings: Settings, counters: Arc<Counters>) -> Self {
        Self {
            migrations,
            settings,
            counters,
        }
    }
}

impl FirstUse for OnFirstUse {
    fn prepare<'a>(&'a self, lease: &'a DbLease) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if is_up_to_date(&lease.entry.database, &self.migrations).await? {
                return Ok(());
            }
            let report = run_on(
                lease.clone(),
                &self.migrations,
                Goal::Latest,
                self.settings,
                &self.counters,
            )
            .await?;
            match report.failed {
                None => Ok(()),
                Some(f) => Err(MigrationError::Failed {
                    database: report.database,
                    version: f.version,
                    name: f.name,
                    step: f.step,
                    message: f.error.to_string(),
                }
                .into()),
            }
        })
    }
}
