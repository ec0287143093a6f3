//! The commands: checks that need no server, then status, plan, apply and rollback over the
//! resolved targets.

use polymongo::migrate::{
    Canary, FleetOptions, FleetReport, FleetStatus, FleetStop, MigrationError, Migrations, Targets,
    MAX_CONCURRENCY,
};
use polymongo::{Error, PolyMongo};

use super::report::{self, Action};
use super::{targets, MigrateCommand, Output, RunArgs, TargetArgs};
use crate::commands::{fail, reachable};
use crate::exit;
use crate::out::{self, Outcome, Stop};
use crate::progress::FleetBar;

/// Databases the command works on at once (for the pool size).
pub fn concurrency(command: &MigrateCommand) -> usize {
    match command {
        MigrateCommand::Status(a) => a.concurrency,
        MigrateCommand::Plan(a) => a.concurrency,
        MigrateCommand::Apply(a) => a.run.concurrency,
        MigrateCommand::Rollback(a) => a.run.concurrency,
    }
}

/// Refuses, before anything connects, what is invalid whatever the databases hold: a canary
/// count of 0, a rollback past a version the definitions give no down steps.
pub fn check(migrations: &Migrations, command: &MigrateCommand) -> Result<(), Stop> {
    let run = match command {
        MigrateCommand::Apply(a) => Some(&a.run),
        MigrateCommand::Rollback(a) => Some(&a.run),
        _ => None,
    };
    let refuse = |message: &str| {
        out::note(format_args!("polymongo: {message}"));
        Err(Stop(exit::CONFIG))
    };
    let concurrency = concurrency(command);
    if !(1..=MAX_CONCURRENCY).contains(&concurrency) {
        return refuse(&format!(
            "--concurrency {concurrency} is out of range: 1 to {MAX_CONCURRENCY}"
        ));
    }
    if run.is_some_and(|r| r.canary == Some(0)) {
        return refuse("--canary must be at least 1 (without canaries, leave it out)");
    }
    if run.is_some_and(|r| r.max_failures == Some(0)) {
        return refuse("--max-failures must be at least 1 (without a budget, leave it out)");
    }
    let to = match command {
        MigrateCommand::Rollback(a) => Some(a.to),
        MigrateCommand::Plan(a) => a.rollback_to,
        _ => None,
    };
    if let Some(to) = to {
        let passed: Vec<u64> = migrations
            .iter()
            .filter(|m| m.version() > to && m.down_steps().is_empty())
            .map(|m| m.version())
            .collect();
        if !passed.is_empty() {
            out::note(format_args!(
                "polymongo: cannot roll back to version {to}: {} no down steps; nothing was \
                 rolled back",
                match passed.as_slice() {
                    [one] => format!("migration {one} has"),
                    many => format!(
                        "migrations {} have",
                        many.iter()
                            .map(u64::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }
            ));
            return Err(Stop(exit::CONFIG));
        }
    }
    Ok(())
}

/// Runs `command`: the checks, the targets, a ping of their cluster, the work.
pub async fn execute(
    poly: &PolyMongo,
    migrations: &Migrations,
    command: &MigrateCommand,
    output: Output,
) -> Outcome {
    check(migrations, command)?;
    let targets_args = match command {
        MigrateCommand::Status(a) => &a.targets,
        MigrateCommand::Plan(a) => &a.targets,
        MigrateCommand::Apply(a) => &a.targets,
        MigrateCommand::Rollback(a) => &a.targets,
    };
    let names = start(poly, targets_args, output).await?;
    match command {
        MigrateCommand::Status(a) => status(poly, migrations, &names, a.concurrency, output).await,
        MigrateCommand::Plan(a) => {
            plan(
                poly,
                migrations,
                &names,
                a.concurrency,
                a.rollback_to,
                output,
            )
            .await
        }
        MigrateCommand::Apply(a) if a.dry_run => {
            plan(poly, migrations, &names, a.run.concurrency, None, output).await
        }
        MigrateCommand::Apply(a) => {
            run(poly, migrations, &names, Action::Apply, &a.run, output).await
        }
        MigrateCommand::Rollback(a) => {
            run(
                poly,
                migrations,
                &names,
                Action::Rollback(a.to),
                &a.run,
                output,
            )
            .await
        }
    }
}

/// The targets, after checking that their cluster answers.
async fn start(poly: &PolyMongo, args: &TargetArgs, output: Output) -> Result<Vec<String>, Stop> {
    // A list is checked before anything is sent; a prefix is listed on the clusters, whose
    // failure to answer is then the error.
    if args.prefix.is_none() {
        let names = targets::resolve(poly, args).await?;
        if let Some(first) = names.first() {
            reachable(poly, &[first]).await?;
        }
        return Ok(names);
    }
    reachable(poly, &[poly.default_db_name()]).await?;
    let names = targets::resolve(poly, args).await?;
    if names.is_empty() && !output.quiet {
        out::note(format_args!(
            "polymongo: no database name starts with {:?}",
            args.prefix.as_deref().unwrap_or_default()
        ));
    }
    Ok(names)
}

/// Every target's ledger, read (one round trip each, `concurrency` at a time).
async fn read_status(
    poly: &PolyMongo,
    migrations: &Migrations,
    names: &[String],
    concurrency: usize,
) -> Result<FleetStatus, Stop> {
    poly.fleet()
        .status(&Targets::databases(names.to_vec()), migrations, concurrency)
        .await
        .map_err(|e| Stop(flag_error(&e)))
}

/// `status` and `plan` report what they found; only a database they could not read makes
/// them partial.
fn read_exit(status: &FleetStatus) -> i32 {
    if status.unreadable.is_empty() {
        exit::OK
    } else {
        exit::PARTIAL
    }
}

async fn status(
    poly: &PolyMongo,
    migrations: &Migrations,
    names: &[String],
    concurrency: usize,
    output: Output,
) -> Outcome {
    let status = read_status(poly, migrations, names, concurrency).await?;
    report::status(&status, migrations, output)?;
    Ok(read_exit(&status))
}

async fn plan(
    poly: &PolyMongo,
    migrations: &Migrations,
    names: &[String],
    concurrency: usize,
    rollback_to: Option<u64>,
    output: Output,
) -> Outcome {
    let status = read_status(poly, migrations, names, concurrency).await?;
    report::plan(&status, migrations, rollback_to, output)?;
    Ok(read_exit(&status))
}

async fn run(
    poly: &PolyMongo,
    migrations: &Migrations,
    names: &[String],
    action: Action,
    args: &RunArgs,
    output: Output,
) -> Outcome {
    let canary = match (args.canary, args.canary_db.is_empty()) {
        (Some(n), _) => Canary::First(n),
        (None, false) => Canary::Databases(args.canary_db.clone()),
        (None, true) => Canary::None,
    };
    let bar = FleetBar::new(action.verb(), names.len(), output.quiet);
    let stop = FleetStop::new();
    let mut options = FleetOptions::new()
        .concurrency(args.concurrency)
        .canary(canary)
        .on_progress(bar.callback())
        .stop_signal(stop.clone());
    if let Some(n) = args.max_failures {
        options = options.max_failures(n);
    }
    let watcher = tokio::spawn(interrupt(stop, bar.clone()));
    let fleet = poly
        .fleet()
        .lock_wait(args.lock_wait)
        .lock_ttl(args.lock_ttl);
    let targets = Targets::databases(names.to_vec());
    let result = match action {
        Action::Apply => fleet.migrate(&targets, migrations, &options).await,
        Action::Rollback(to) => fleet.rollback_to(&targets, migrations, to, &options).await,
    };
    watcher.abort();
    bar.finish();
    let report = match result {
        Ok(r) => r,
        Err(e) => return Err(Stop(flag_error(&e))),
    };
    report::run(&report, migrations, action, output)?;
    Ok(run_code(&report))
}

/// The exit code of a run: 130 when stopped by Ctrl-C, 3 when a database refused a rollback
/// for a version without down steps (the request, not the database, is at fault; nothing
/// was undone there), 0 complete, 5 otherwise.
fn run_code(report: &FleetReport) -> i32 {
    if matches!(report.stopped, Some(polymongo::migrate::Stopped::Requested)) {
        return exit::INTERRUPTED;
    }
    if report.is_complete() {
        return exit::OK;
    }
    let no_down = report.failed().any(|o| {
        matches!(&o.result, Err(Error::Migration(m)) if matches!(**m, MigrationError::NoDownSteps { .. }))
    });
    if no_down {
        exit::CONFIG
    } else {
        exit::PARTIAL
    }
}

/// Ctrl-C: the first requests the stop (no new database; those in flight finish and the
/// report is printed), the second quits at once.
async fn interrupt(stop: FleetStop, bar: FleetBar) {
    if tokio::signal::ctrl_c().await.is_err() {
        return;
    }
    stop.stop();
    bar.note(
        "polymongo: stopping: no new database is started, those in flight finish (Ctrl-C again \
         to quit now; their locks then expire and the next run finishes their work)",
    );
    if tokio::signal::ctrl_c().await.is_ok() {
        bar.finish();
        out::note("polymongo: quit; databases in flight keep their locks until they expire");
        std::process::exit(exit::INTERRUPTED);
    }
}

/// Reports an error that stopped a command before its work, naming the flag when an option
/// was refused; returns its exit code.
fn flag_error(e: &Error) -> i32 {
    let flag = match e {
        Error::Config { field, message } => match *field {
            "concurrency" => Some(("--concurrency", message)),
            "max_failures" => Some(("--max-failures", message)),
            "canary" => Some(("--canary-db", message)),
            _ => None,
        },
        _ => None,
    };
    match flag {
        Some((flag, message)) => {
            out::note(format_args!("polymongo: {flag}: {message}"));
            exit::CONFIG
        }
        None => fail(e),
    }
}
