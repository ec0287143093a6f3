//! What the migration commands print: a summary in text, or one JSON document with the same
//! information.

use std::collections::BTreeMap;
use std::time::Duration;

use polymongo::migrate::{
    AppliedVersion, DbOutcome, FleetReport, FleetStatus, MigrationStatus, Migrations, Stopped,
};
use polymongo::mongodb::bson::DateTime;
use serde::Serialize;

use super::Output;
use crate::out::{self, Stop};

/// Databases listed by name in text output before "and N more" (`--json` lists all).
const LISTED: usize = 50;

/// What a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Every version applied.
    Apply,
    /// Every version above this one rolled back.
    Rollback(u64),
}

impl Action {
    pub fn verb(self) -> &'static str {
        match self {
            Action::Apply => "apply",
            Action::Rollback(_) => "rollback",
        }
    }

    fn to(self) -> Option<u64> {
        match self {
            Action::Apply => None,
            Action::Rollback(v) => Some(v),
        }
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn time(t: DateTime) -> String {
    t.try_to_rfc3339_string()
        .unwrap_or_else(|_| t.timestamp_millis().to_string())
}

// ---- apply and rollback ----

#[derive(Serialize)]
struct RunJson<'a> {
    action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<u64>,
    latest: u64,
    complete: bool,
    total: usize,
    succeeded: usize,
    failed: usize,
    not_started: &'a [String],
    stopped: Option<StoppedJson<'a>>,
    versions_done: usize,
    resumed: usize,
    duration_ms: u64,
    databases: Vec<DbJson<'a>>,
}

#[derive(Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
enum StoppedJson<'a> {
    CanaryFailed { database: &'a str },
    FailureBudget { failures: usize },
    Requested,
    Closed,
    Other,
}

#[derive(Serialize)]
struct DbJson<'a> {
    database: &'a str,
    canary: bool,
    ok: bool,
    /// Absent when the run could not start there (`error`).
    #[serde(skip_serializing_if = "Option::is_none")]
    current_version: Option<u64>,
    applied: Vec<VersionJson<'a>>,
    rolled_back: Vec<VersionJson<'a>>,
    skipped: &'a [u64],
    resumed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_ms: Option<u64>,
    /// The version whose step failed.
    failure: Option<FailureJson<'a>>,
    /// Why the run could not work on this database (lock held, ledger refused, network…).
    error: Option<String>,
}

#[derive(Serialize)]
struct VersionJson<'a> {
    version: u64,
    name: &'a str,
    duration_ms: u64,
}

#[derive(Serialize)]
struct FailureJson<'a> {
    version: u64,
    name: &'a str,
    step: usize,
    rolling_back: bool,
    error: String,
}

fn versions(list: &[AppliedVersion]) -> Vec<VersionJson<'_>> {
    list.iter()
        .map(|v| VersionJson {
            version: v.version,
            name: &v.name,
            duration_ms: ms(v.duration),
        })
        .collect()
}

fn db_json(o: &DbOutcome) -> DbJson<'_> {
    let mut db = DbJson {
        database: &o.database,
        canary: o.canary,
        ok: o.is_ok(),
        current_version: None,
        applied: Vec::new(),
        rolled_back: Vec::new(),
        skipped: &[],
        resumed: None,
        duration_ms: None,
        failure: None,
        error: None,
    };
    match &o.result {
        Err(e) => db.error = Some(e.to_string()),
        Ok(r) => {
            db.current_version = Some(r.current_version);
            db.applied = versions(&r.applied);
            db.rolled_back = versions(&r.rolled_back);
            db.skipped = &r.skipped;
            db.resumed = r.resumed;
            db.duration_ms = Some(ms(r.duration));
            db.failure = r.failed.as_ref().map(|f| FailureJson {
                version: f.version,
                name: &f.name,
                step: f.step,
                rolling_back: f.rolling_back,
                error: f.error.to_string(),
            });
        }
    }
    db
}

fn resumed(report: &FleetReport) -> usize {
    report
        .outcomes
        .iter()
        .filter(|o| o.result.as_ref().is_ok_and(|r| r.resumed.is_some()))
        .count()
}

/// The report of an apply or rollback run.
pub fn run(
    report: &FleetReport,
    migrations: &Migrations,
    action: Action,
    output: Output,
) -> Result<(), Stop> {
    let stopped = report.stopped.as_ref().map(|s| match s {
        Stopped::CanaryFailed { database } => StoppedJson::CanaryFailed { database },
        Stopped::FailureBudget { failures } => StoppedJson::FailureBudget {
            failures: *failures,
        },
        Stopped::Requested => StoppedJson::Requested,
        Stopped::Closed => StoppedJson::Closed,
        _ => StoppedJson::Other,
    });
    if output.json {
        let mut outcomes: Vec<&DbOutcome> = report.outcomes.iter().collect();
        outcomes.sort_by(|a, b| a.database.cmp(&b.database));
        return out::json(&RunJson {
            action: action.verb(),
            to: action.to(),
            latest: migrations.latest(),
            complete: report.is_complete(),
            total: report.total,
            succeeded: report.succeeded(),
            failed: report.failed().count(),
            not_started: &report.not_started,
            stopped,
            versions_done: report.versions_done(),
            resumed: resumed(report),
            duration_ms: ms(report.duration),
            databases: outcomes.into_iter().map(db_json).collect(),
        });
    }
    let heading = match action {
        Action::Apply => format!("apply (latest version {})", migrations.latest()),
        Action::Rollback(v) => format!("rollback to version {v}"),
    };
    out::line(format_args!(
        "{heading}: {} of {} databases done, {} failed, {} not started; {} versions {} in {:.1} s",
        report.succeeded(),
        report.total,
        report.failed().count(),
        report.not_started.len(),
        report.versions_done(),
        if action == Action::Apply {
            "applied"
        } else {
            "rolled back"
        },
        report.duration.as_secs_f64()
    ))?;
    let resumed = resumed(report);
    if resumed > 0 {
        out::line(format_args!(
            "finished the interrupted work of an earlier runner on {resumed} databases"
        ))?;
    }
    match &report.stopped {
        Some(Stopped::CanaryFailed { database }) => out::line(format_args!(
            "stopped: canary {database} failed; no other database was touched"
        ))?,
        Some(Stopped::FailureBudget { failures }) => out::line(format_args!(
            "stopped: {failures} databases failed (--max-failures); no new database was started"
        ))?,
        Some(Stopped::Requested) => out::line(
            "stopped: interrupted; no new database was started, those in flight finished",
        )?,
        Some(Stopped::Closed) => out::line(
            "stopped: the manager closed; no new database was started, those in flight finished",
        )?,
        Some(other) => out::line(format_args!("stopped: {other:?}"))?,
        None => {}
    }
    let mut failed: Vec<&DbOutcome> = report.failed().collect();
    failed.sort_by(|a, b| a.database.cmp(&b.database));
    if !failed.is_empty() {
        out::line("failed:")?;
        for o in failed.iter().take(LISTED) {
            out::line(format_args!(
                "  {}: {}",
                o.database,
                o.problem().unwrap_or_default()
            ))?;
        }
        more(failed.len())?;
    }
    if !report.not_started.is_empty() {
        let shown: Vec<&str> = report
            .not_started
            .iter()
            .take(LISTED)
            .map(String::as_str)
            .collect();
        out::line(format_args!(
            "not started ({}): {}{}",
            report.not_started.len(),
            shown.join(", "),
            if report.not_started.len() > LISTED {
                ", …"
            } else {
                ""
            }
        ))?;
    }
    Ok(())
}

fn more(n: usize) -> Result<(), Stop> {
    if n > LISTED {
        out::line(format_args!(
            "  … and {} more (--json lists all)",
            n - LISTED
        ))?;
    }
    Ok(())
}

// ---- status and plan ----

#[derive(Serialize)]
struct StatusJson<'a> {
    total: usize,
    latest: u64,
    up_to_date: usize,
    at_version: &'a BTreeMap<u64, usize>,
    pending: &'a BTreeMap<u64, usize>,
    failed: Vec<FailedJson<'a>>,
    locked: Vec<LockedJson<'a>>,
    refused: Vec<Named<'a>>,
    unreadable: Vec<Named<'a>>,
    databases: Vec<DbStatusJson<'a>>,
}

#[derive(Serialize)]
struct FailedJson<'a> {
    database: &'a str,
    version: u64,
    step: u64,
    rolling_back: bool,
    error: &'a str,
    at: String,
    by: &'a str,
}

#[derive(Serialize)]
struct LockedJson<'a> {
    database: &'a str,
    owner: &'a str,
    expires_at: String,
}

#[derive(Serialize)]
struct Named<'a> {
    database: &'a str,
    reason: String,
}

#[derive(Serialize)]
struct DbStatusJson<'a> {
    database: &'a str,
    current_version: u64,
    applied: Vec<u64>,
    pending: &'a [u64],
    changed: &'a [u64],
    unknown: &'a [u64],
}

fn failed_json(s: &FleetStatus) -> Vec<FailedJson<'_>> {
    s.failed
        .iter()
        .map(|(db, f)| FailedJson {
            database: db,
            version: f.version,
            step: f.step,
            rolling_back: f.rolling_back,
            error: &f.error,
            at: time(f.at),
            by: &f.by,
        })
        .collect()
}

fn locked_json(s: &FleetStatus) -> Vec<LockedJson<'_>> {
    s.locked
        .iter()
        .map(|(db, l)| LockedJson {
            database: db,
            owner: &l.owner,
            expires_at: time(l.expires_at),
        })
        .collect()
}

fn refused_json(s: &FleetStatus) -> Vec<Named<'_>> {
    s.refused
        .iter()
        .map(|(db, why)| Named {
            database: db,
            reason: why.clone(),
        })
        .collect()
}

fn unreadable_json(s: &FleetStatus) -> Vec<Named<'_>> {
    s.unreadable
        .iter()
        .map(|(db, e)| Named {
            database: db,
            reason: crate::exit::of(e).1,
        })
        .collect()
}

fn db_status_json(s: &MigrationStatus) -> DbStatusJson<'_> {
    DbStatusJson {
        database: &s.database,
        current_version: s.current_version,
        applied: s.applied.iter().map(|e| e.version).collect(),
        pending: &s.pending,
        changed: &s.changed,
        unknown: &s.unknown,
    }
}

/// `migrate status`.
pub fn status(s: &FleetStatus, migrations: &Migrations, output: Output) -> Result<(), Stop> {
    if output.json {
        return out::json(&StatusJson {
            total: s.total,
            latest: migrations.latest(),
            up_to_date: s.up_to_date,
            at_version: &s.at_version,
            pending: &s.pending,
            failed: failed_json(s),
            locked: locked_json(s),
            refused: refused_json(s),
            unreadable: unreadable_json(s),
            databases: s.databases.iter().map(db_status_json).collect(),
        });
    }
    out::line(format_args!(
        "{} databases, latest version {}: {} up to date",
        s.total,
        migrations.latest(),
        s.up_to_date
    ))?;
    if !s.at_version.is_empty() {
        out::line("by version:")?;
        for (v, n) in s.at_version.iter().rev() {
            out::line(format_args!("  version {v:<6} {n} databases"))?;
        }
    }
    pending_lines("pending (what apply would do):", &s.pending)?;
    if !s.failed.is_empty() {
        out::line("failed (the last run's error, kept until a run completes):")?;
        for f in failed_json(s).iter().take(LISTED) {
            out::line(format_args!(
                "  {}: migration {} {}step {}: {} ({}, {})",
                f.database,
                f.version,
                if f.rolling_back { "down " } else { "" },
                f.step,
                f.error,
                f.at,
                f.by
            ))?;
        }
        more(s.failed.len())?;
    }
    locked_lines(s)?;
    named_lines("refused (a run would not touch them):", &refused_json(s))?;
    named_lines("unreadable:", &unreadable_json(s))?;
    Ok(())
}

fn pending_lines(title: &str, plan: &BTreeMap<u64, usize>) -> Result<(), Stop> {
    if plan.is_empty() {
        return Ok(());
    }
    out::line(title)?;
    for (v, n) in plan {
        out::line(format_args!("  version {v:<6} {n} databases"))?;
    }
    Ok(())
}

fn locked_lines(s: &FleetStatus) -> Result<(), Stop> {
    if s.locked.is_empty() {
        return Ok(());
    }
    out::line("locked (a run waits for these, up to --lock-wait):")?;
    for l in locked_json(s).iter().take(LISTED) {
        out::line(format_args!(
            "  {}: by {} until {}",
            l.database, l.owner, l.expires_at
        ))?;
    }
    more(s.locked.len())
}

fn named_lines(title: &str, list: &[Named<'_>]) -> Result<(), Stop> {
    if list.is_empty() {
        return Ok(());
    }
    out::line(title)?;
    for n in list.iter().take(LISTED) {
        out::line(format_args!("  {}: {}", n.database, n.reason))?;
    }
    more(list.len())
}

#[derive(Serialize)]
struct PlanJson<'a> {
    action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<u64>,
    latest: u64,
    total: usize,
    /// Version → databases a run would apply (or roll back) it on.
    plan: BTreeMap<u64, usize>,
    /// Databases a run would work on.
    with_work: usize,
    /// Databases with nothing to do.
    nothing_to_do: usize,
    refused: Vec<Named<'a>>,
    locked: Vec<LockedJson<'a>>,
    unreadable: Vec<Named<'a>>,
}

fn is_refused(d: &MigrationStatus) -> bool {
    !d.changed.is_empty() || !d.unknown.is_empty()
}

/// `migrate plan` (and `apply --dry-run`): what a run would do, from the fleet's status.
pub fn plan(
    s: &FleetStatus,
    migrations: &Migrations,
    rollback_to: Option<u64>,
    output: Output,
) -> Result<(), Stop> {
    let mut plan = BTreeMap::new();
    let mut with_work = 0;
    for d in s.databases.iter().filter(|d| !is_refused(d)) {
        let versions: Vec<u64> = match rollback_to {
            None => d.pending.clone(),
            Some(to) => d
                .applied
                .iter()
                .map(|e| e.version)
                .filter(|v| *v > to)
                .collect(),
        };
        if !versions.is_empty() {
            with_work += 1;
        }
        for v in versions {
            *plan.entry(v).or_insert(0) += 1;
        }
    }
    let nothing_to_do = s
        .databases
        .len()
        .saturating_sub(s.refused.len() + with_work);
    let action = match rollback_to {
        None => Action::Apply,
        Some(v) => Action::Rollback(v),
    };
    if output.json {
        return out::json(&PlanJson {
            action: action.verb(),
            to: rollback_to,
            latest: migrations.latest(),
            total: s.total,
            plan,
            with_work,
            nothing_to_do,
            refused: refused_json(s),
            locked: locked_json(s),
            unreadable: unreadable_json(s),
        });
    }
    let target = match rollback_to {
        None => format!("apply (to version {})", migrations.latest()),
        Some(v) => format!("rollback to version {v}"),
    };
    if plan.is_empty() {
        out::line(format_args!(
            "{target}: nothing to do on {nothing_to_do} of {} databases",
            s.total
        ))?;
    } else {
        out::line(format_args!(
            "{target}: would work on {with_work} of {} databases ({nothing_to_do} with nothing to do)",
            s.total
        ))?;
        let rows: Vec<(&u64, &usize)> = match rollback_to {
            None => plan.iter().collect(),
            Some(_) => plan.iter().rev().collect(),
        };
        for (v, n) in rows {
            out::line(format_args!("  version {v:<6} {n} databases"))?;
        }
    }
    locked_lines(s)?;
    named_lines("refused (a run would fail there):", &refused_json(s))?;
    named_lines("unreadable:", &unreadable_json(s))?;
    Ok(())
}
