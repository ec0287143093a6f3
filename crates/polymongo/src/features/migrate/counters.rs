//! Migration figures of one manager: versions applied, rolled back and failed, per version;
//! databases finished by fleet runs; fleet runs in progress. Read with
//! [`PolyMongo::migration_stats`](crate::PolyMongo::migration_stats) and rendered by
//! [`metrics::render`](crate::metrics::render) (feature `metrics`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;

/// Versions with figures of their own; beyond, figures are not kept per version (the
/// totals still count them). Bounds the label cardinality of the metrics.
pub const MAX_COUNTED_VERSIONS: usize = 256;

/// One version's figures since the manager was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct VersionCounts {
    /// The version.
    pub version: u64,
    /// Databases it was applied to.
    pub applied: u64,
    /// Databases it was rolled back on.
    pub rolled_back: u64,
    /// Failed runs of it (up or down).
    pub failed: u64,
}

/// A manager's migration figures (see
/// [`PolyMongo::migration_stats`](crate::PolyMongo::migration_stats)).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MigrationStats {
    /// Per version, ascending, at most [`MAX_COUNTED_VERSIONS`].
    pub versions: Vec<VersionCounts>,
    /// Versions applied, all versions together.
    pub applied_total: u64,
    /// Versions rolled back.
    pub rolled_back_total: u64,
    /// Failed versions.
    pub failed_total: u64,
    /// Fleet runs going now.
    pub fleet_runs_active: u64,
    /// Databases the fleet runs going now have yet to finish (not started or in flight).
    pub fleet_databases_pending: u64,
    /// Databases fleet runs finished and that reached their goal.
    pub fleet_databases_ok: u64,
    /// Databases fleet runs finished and that failed.
    pub fleet_databases_failed: u64,
}

/// The counters behind [`MigrationStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    versions: Mutex<BTreeMap<u64, VersionCounts>>,
    applied: AtomicU64,
    rolled_back: AtomicU64,
    failed: AtomicU64,
    runs_active: AtomicU64,
    pending: AtomicU64,
    fleet_ok: AtomicU64,
    fleet_failed: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum VersionEvent {
    Applied,
    RolledBack,
    Failed,
}

impl Counters {
    pub(crate) fn version(&self, version: u64, event: VersionEvent) {
        let total = match event {
            VersionEvent::Applied => &self.applied,
            VersionEvent::RolledBack => &self.rolled_back,
            VersionEvent::Failed => &self.failed,
        };
        total.fetch_add(1, Ordering::Relaxed);
        let mut versions = self.versions.lock().unwrap_or_else(|p| p.into_inner());
        if versions.len() >= MAX_COUNTED_VERSIONS && !versions.contains_key(&version) {
            return;
        }
        let counts = versions.entry(version).or_insert(VersionCounts {
            version,
            ..VersionCounts::default()
        });
        match event {
            VersionEvent::Applied => counts.applied += 1,
            VersionEvent::RolledBack => counts.rolled_back += 1,
            VersionEvent::Failed => counts.failed += 1,
        }
    }

    /// A fleet run of `databases` starts; [`FleetRunGauge`] ends it.
    pub(crate) fn fleet_run(&self, databases: usize) -> FleetRunGauge<'_> {
        let databases = databases as u64;
        self.runs_active.fetch_add(1, Ordering::Relaxed);
        self.pending.fetch_add(databases, Ordering::Relaxed);
        FleetRunGauge {
            counters: self,
            left: AtomicU64::new(databases),
        }
    }

    pub(crate) fn snapshot(&self) -> MigrationStats {
        MigrationStats {
            versions: self
                .versions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .values()
                .copied()
                .collect(),
            applied_total: self.applied.load(Ordering::Relaxed),
            rolled_back_total: self.rolled_back.load(Ordering::Relaxed),
            failed_total: self.failed.load(Ordering::Relaxed),
            fleet_runs_active: self.runs_active.load(Ordering::Relaxed),
            fleet_databases_pending: self.pending.load(Ordering::Relaxed),
            fleet_databases_ok: self.fleet_ok.load(Ordering::Relaxed),
            fleet_databases_failed: self.fleet_failed.load(Ordering::Relaxed),
        }
    }
}

/// One fleet run in the gauges; dropping it (the run ended, or its future was dropped)
/// takes what it had left out of the pending count.
pub(crate) struct FleetRunGauge<'c> {
    counters: &'c Counters,
    left: AtomicU64,
}

impl FleetRunGauge<'_> {
    pub(crate) fn finished(&self, ok: bool) {
        let c = self.counters;
        if ok { &c.fleet_ok } else { &c.fleet_failed }.fetch_add(1, Ordering::Relaxed);
        // Never below zero, even if called more often than planned.
        if self
            .left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| l.checked_sub(1))
            .is_ok()
        {
            c.pending.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for FleetRunGauge<'_> {
    fn drop(&mut self) {
        let c = self.counters;
        c.pending.fetch_sub(*self.left.get_mut(), Ordering::Relaxed);
        c.runs_active.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_version_figures_are_bounded_and_totals_are_not() {
        let c = Counters::default();
        for v in 1..=100_000 {
            c.version(v, VersionEvent::Applied);
        }
        c.version(1, VersionEvent::Failed);
        let s = c.snapshot();
        assert_eq!(s.versions.len(), MAX_COUNTED_VERSIONS);
        assert_eq!(s.applied_total, 100_000);
        assert_eq!((s.versions[0].applied, s.versions[0].failed), (1, 1));
    }

    #[test]
    fn a_fleet_run_leaves_the_gauges_whether_it_ends_or_is_dropped() {
        let c = Counters::default();
        {
            let run = c.fleet_run(10);
            run.finished(true);
            run.finished(false);
            let s = c.snapshot();
            assert_eq!((s.fleet_runs_active, s.fleet_databases_pending), (1, 8));
        }
        let s = c.snapshot();
        assert_eq!((s.fleet_runs_active, s.fleet_databases_pending), (0, 0));
        assert_eq!((s.fleet_databases_ok, s.fleet_databases_failed), (1, 1));
    }
}
