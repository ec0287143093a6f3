//! The per-database rows of the usage metrics, kept counters: no series ever goes down
//! between two scrapes.
//!
//! The metrics show the busiest databases of the moment, each in its own series, and sum the
//! rest under [`OTHER_DATABASES`]. Done naively (each row the database's totals, the rest the
//! manager's total minus them), a database entering the busiest would take its totals out of
//! the rest at once: the rest's counters would drop, and Prometheus reads a counter that
//! drops as a restart from zero, so `rate()` over the rest (and any sum of rates over the
//! family) would count that database's history a second time.
//!
//! So a database's series counts from the moment it is first shown: its totals then are its
//! baseline, and stay in the rest (at the first scrape there is no rest shown yet, and the
//! databases shown then count their whole totals). While it stays shown, its series is its
//! totals minus that baseline; when it leaves, what its series counted goes back into the
//! rest. Both only ever
//! add to the rest. One baseline per shown database, replaced at every scrape: at most as
//! many as the rows shown. The rest is also never shown below what it was last shown, so two
//! counters read a moment apart (a database's and the manager's, by an operation finishing
//! between them) cannot make it dip.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::registry::usage::{UsageStats, OTHER_DATABASES};

/// The baselines of the databases shown at the last scrape, and the rest as it was shown.
#[derive(Default)]
pub(crate) struct MetricRows {
    state: Mutex<Shown>,
}

#[derive(Default)]
struct Shown {
    baselines: HashMap<String, UsageStats>,
    rest: Option<UsageStats>,
}

impl MetricRows {
    /// The rows to show: `busiest` (each database's totals now) counted from when each was
    /// first shown, then the rest of `total` under [`OTHER_DATABASES`] (when anything is in
    /// it). Every row's counters are at least what they were at the previous call, unless
    /// the database's own totals started again (it was forgotten and came back: its series
    /// starts again too).
    pub(crate) fn rows(&self, busiest: Vec<UsageStats>, total: UsageStats) -> Vec<UsageStats> {
        let mut shown = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut baselines = HashMap::with_capacity(busiest.len());
        let mut rows = Vec::with_capacity(busiest.len() + 1);
        // In place, and each baseline under the key it had: a scrape allocates for the
        // databases first shown, not for every row.
        for mut now in busiest {
            let (name, base) = match shown.baselines.remove_entry(&now.database) {
                Some((name, base)) if !went_back(&now, &base) => (name, base),
                // Its totals started again: its earlier ones are in the total's rest.
                Some((name, _)) => (name, zero(&now)),
                // First shown at the first scrape: there is no rest shown yet to keep from
                // going down, so the whole of its totals.
                None if shown.rest.is_none() => (now.database.clone(), zero(&now)),
                // First shown later: what it counted until now stays in the rest.
                None => (now.database.clone(), now.clone()),
            };
            subtract(&mut now, &base);
            baselines.insert(name, base);
            rows.push(now);
        }
        let mut rest = UsageStats {
            database: OTHER_DATABASES.to_owned(),
            ..total
        };
        for row in &rows {
            subtract(&mut rest, row);
        }
        if let Some(before) = &shown.rest {
            at_least(&mut rest, before);
        }
        shown.baselines = baselines;
        shown.rest = Some(rest.clone());
        if rest.operations > 0 {
            rows.push(rest);
        }
        rows
    }
}

/// Whether the database's totals started again since `base`: other counters (it was
/// forgotten and counted again), or one of them below `base`'s.
fn went_back(now: &UsageStats, base: &UsageStats) -> bool {
    now.generation != base.generation
        || now.operations < base.operations
        || now.errors < base.errors
        || now.total_time_us < base.total_time_us
        || now.latency.count() < base.latency.count()
}

/// The figures of `now`'s counters before their first operation (a baseline: no name).
fn zero(now: &UsageStats) -> UsageStats {
    UsageStats {
        generation: now.generation,
        ..UsageStats::default()
    }
}

/// Takes `b`'s counters off `a`'s (the exported ones: operations by command, errors, time,
/// latency); `a`'s other fields stay.
fn subtract(a: &mut UsageStats, b: &UsageStats) {
    a.operations = a.operations.saturating_sub(b.operations);
    a.errors = a.errors.saturating_sub(b.errors);
    a.total_time_us = a.total_time_us.saturating_sub(b.total_time_us);
    a.latency = a.latency.saturating_sub(&b.latency);
    for (command, n) in &mut a.by_command {
        *n = n.saturating_sub(b.by_command.get(command).copied().unwrap_or(0));
    }
    a.by_command.retain(|_, n| *n > 0);
}

/// Raises each exported counter of `rest` to `floor`'s where it is below.
fn at_least(rest: &mut UsageStats, floor: &UsageStats) {
    rest.operations = rest.operations.max(floor.operations);
    rest.errors = rest.errors.max(floor.errors);
    rest.total_time_us = rest.total_time_us.max(floor.total_time_us);
    rest.latency = rest.latency.max_with(&floor.latency);
    for (command, n) in &floor.by_command {
        let mine = rest.by_command.entry(command.clone()).or_insert(0);
        *mine = (*mine).max(*n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(database: &str, operations: u64) -> UsageStats {
        let mut u = UsageStats {
            database: database.to_owned(),
            ..UsageStats::default()
        };
        u.operations = operations;
        u.by_command.insert("find".into(), operations);
        u.total_time_us = operations * 10;
        u.latency.counts[4] = operations;
        u.latency.sum_us = operations * 10;
        u
    }

    fn of_generation(database: &str, operations: u64, generation: u64) -> UsageStats {
        UsageStats {
            generation,
            ..usage(database, operations)
        }
    }

    fn ops(rows: &[UsageStats], database: &str) -> Option<u64> {
        rows.iter()
            .find(|r| r.database == database)
            .map(|r| r.operations)
    }

    #[test]
    fn a_database_entering_the_busiest_takes_nothing_from_the_rest() {
        let rows = MetricRows::default();
        // The first scrape: a (100) is shown whole; b (40) is in the rest.
        let first = rows.rows(vec![usage("a", 100)], usage("total", 140));
        assert_eq!(ops(&first, "a"), Some(100));
        assert_eq!(ops(&first, OTHER_DATABASES), Some(40));
        // b becomes busy and is shown, from zero: the rest keeps its 60; a goes on.
        let second = rows.rows(vec![usage("b", 60), usage("a", 110)], usage("total", 170));
        assert_eq!(ops(&second, "b"), Some(0));
        assert_eq!(ops(&second, "a"), Some(110));
        assert_eq!(ops(&second, OTHER_DATABASES), Some(60));
        // a leaves: what its series counted goes back into the rest.
        let third = rows.rows(vec![usage("b", 80)], usage("total", 200));
        assert_eq!(ops(&third, "b"), Some(20));
        assert_eq!(ops(&third, OTHER_DATABASES), Some(180));
        // a comes back: its series starts again from zero.
        let fourth = rows.rows(vec![usage("b", 90), usage("a", 125)], usage("total", 215));
        assert_eq!(ops(&fourth, "a"), Some(0));
        assert_eq!(ops(&fourth, OTHER_DATABASES), Some(185));
    }

    #[test]
    fn a_database_whose_totals_started_again_counts_from_zero() {
        let rows = MetricRows::default();
        rows.rows(vec![usage("a", 100)], usage("total", 100));
        // Forgotten and cached again: its totals restarted at 0 (the 100 are in the total).
        let after = rows.rows(vec![usage("a", 5)], usage("total", 105));
        assert_eq!(ops(&after, "a"), Some(5));
        assert_eq!(ops(&after, OTHER_DATABASES), Some(100));
        // Forgotten again, and past its old baseline by the next scrape: new counters, so
        // its series starts again all the same.
        rows.rows(vec![of_generation("a", 10, 1)], usage("total", 110));
        let past = rows.rows(vec![of_generation("a", 30, 2)], usage("total", 140));
        assert_eq!(ops(&past, "a"), Some(30));
        assert_eq!(ops(&past, OTHER_DATABASES), Some(110));
    }

    #[test]
    fn the_rest_never_dips_when_the_total_is_read_behind_a_database() {
        let rows = MetricRows::default();
        rows.rows(vec![usage("a", 10)], usage("total", 50));
        // a counted 5 more, the total read a moment before did not yet.
        let after = rows.rows(vec![usage("a", 15)], usage("total", 52));
        assert_eq!(ops(&after, "a"), Some(15));
        assert_eq!(ops(&after, OTHER_DATABASES), Some(40));
        let rest = after
            .iter()
            .find(|r| r.database == OTHER_DATABASES)
            .unwrap();
        assert_eq!(rest.latency.count(), 40);
        assert_eq!(rest.by_command.get("find"), Some(&40));
        assert_eq!(rest.total_time_us, 400);
    }

    #[test]
    fn a_hundred_thousand_names_through_the_rows_leave_only_the_last_ones_shown() {
        let rows = MetricRows::default();
        let mut total = 0;
        // 2 000 scrapes of 50 databases never shown before: 100 000 names.
        for scrape in 0..2_000u64 {
            total += 50;
            let busiest = (0..50)
                .map(|i| usage(&format!("db_{scrape}_{i}"), 1))
                .collect();
            rows.rows(busiest, usage("total", total));
            let shown = rows.state.lock().unwrap();
            assert!(shown.baselines.len() <= 50, "{}", shown.baselines.len());
        }
        let shown = rows.state.lock().unwrap();
        assert_eq!(shown.baselines.len(), 50);
        assert!(shown
            .baselines
            .keys()
            .all(|name| name.starts_with("db_1999_")));
    }

    /// One scrape of the model: the databases shown (by index) and what happened before it.
    #[derive(Debug, Clone)]
    struct Step {
        adds: Vec<u64>,
        restart: Option<usize>,
        shown: Vec<usize>,
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        (
            proptest::collection::vec(0u64..20, 6),
            proptest::option::weighted(0.1, 0usize..6),
            proptest::sample::subsequence((0..6).collect::<Vec<usize>>(), 0..=3),
        )
            .prop_map(|(adds, restart, shown)| Step {
                adds,
                restart,
                shown,
            })
    }

    proptest::proptest! {
        /// Whatever the scrapes show, in any order, with databases restarting their totals:
        /// the rows add up to the total, the rest never goes down, and a database's series
        /// never goes down between two scrapes that show it, unless it got new counters: then
        /// its series is their totals.
        #[test]
        fn every_series_is_a_counter_and_the_rows_add_up(
            steps in proptest::collection::vec(step(), 1..40)
        ) {
            let rows = MetricRows::default();
            let mut current = [0u64; 6];
            let mut generation = [0u64; 6];
            let mut forgotten = 0u64;
            let mut last_rest = 0u64;
            let mut last_shown: HashMap<usize, u64> = HashMap::new();
            for s in steps {
                let mut restarted = None;
                if let Some(i) = s.restart {
                    forgotten += current[i];
                    current[i] = 0;
                    generation[i] += 1;
                    restarted = Some(i);
                }
                for (c, a) in current.iter_mut().zip(&s.adds) {
                    *c += a;
                }
                let total = current.iter().sum::<u64>() + forgotten;
                let busiest = s
                    .shown
                    .iter()
                    .map(|&i| of_generation(&format!("db{i}"), current[i], generation[i]))
                    .collect();
                let out = rows.rows(busiest, usage("total", total));
                proptest::prop_assert_eq!(out.iter().map(|r| r.operations).sum::<u64>(), total);
                let rest = ops(&out, OTHER_DATABASES).unwrap_or(0);
                proptest::prop_assert!(rest >= last_rest, "rest {} after {}", rest, last_rest);
                last_rest = rest;
                let mut next = HashMap::new();
                for &i in &s.shown {
                    let now = ops(&out, &format!("db{i}")).unwrap();
                    if let Some(&before) = last_shown.get(&i) {
                        if restarted == Some(i) {
                            // New counters: the series starts again, from them.
                            proptest::prop_assert_eq!(now, current[i]);
                        } else {
                            proptest::prop_assert!(now >= before, "db{} {} after {}", i, now, before);
                        }
                    }
                    next.insert(i, now);
                }
                last_shown = next;
            }
        }
    }
}
