//! The migration runner: `status`, `plan`, `apply` and `rollback` over many databases, as
//! the `polymongo migrate` commands and embedded in an application's own binary.
//!
//! `polymongo migrate` reads declarative migrations from a folder (`--dir`). An application
//! whose migrations include code steps builds its [`Migrations`] in code and gets the same
//! commands, flags, output and exit codes from its own binary, the way sqlx's `migrate!`
//! serves applications:
//!
//! ```no_run
//! use polymongo::migrate::{Migration, Migrations, Step};
//! use polymongo::mongodb::bson::{doc, Document};
//!
//! fn main() {
//!     let migrations = Migrations::new(vec![
//!         Migration::new(1, "users-email-index", vec![Step::command(doc! {
//!             "createIndexes": "users",
//!             "indexes": [{ "key": { "email": 1 }, "name": "email_1" }],
//!         })]),
//!         Migration::new(2, "default-plan", vec![Step::code(|db| async move {
//!             db.collection::<Document>("users")
//!                 .update_many(doc! { "plan": null }, doc! { "$set": { "plan": "free" } })
//!                 .await?;
//!             Ok(())
//!         })])
//!         .code_version("1"),
//!     ])
//!     .expect("valid migrations");
//!     // myapp-migrate --uri mongodb://… apply --prefix tenant_ --canary 3
//!     std::process::exit(polymongo_cli::migrate::run_embedded(migrations));
//! }
//! ```
//!
//! - [`run_embedded`]: the whole binary in one call (parses the process's arguments as
//!   [`MigrateCli`], connects with `--uri` / `MONGODB_URI` or `--config`, runs, closes).
//! - [`MigrateCli::run`]: the same from an application that is already async.
//! - [`MigrateCommand`] and [`run`]: for an application with its own command line (flatten
//!   [`MigrateCommand`] as a subcommand) and its own [`PolyMongo`].
//!
//! Targets are database names, `--prefix P` or `--databases-from FILE`, exactly one of them.
//! `apply` and `rollback` take `--concurrency N` (default 4), `--canary N` or
//! `--canary-db NAME`…, `--max-failures N` and `--lock-wait SECS` (default 60), draw a
//! progress bar on a terminal, and stop on Ctrl-C: no new database is started, those in
//! flight finish, the report is printed (a second Ctrl-C quits at once; the locks of the
//! databases in flight then expire and the next run finishes their work).
//!
//! Exit codes: 0 complete; 3 invalid migrations, targets or flags (a database name that is
//! not valid, a rollback past a version without down steps), nothing run; 4 the cluster
//! could not be reached; 5 partial (a database failed or was not started; `status`/`plan`:
//! a database could not be read); 130 interrupted; 1 any other failure.

mod report;
mod runner;
mod targets;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use polymongo::migrate::{Migrations, DEFAULT_CONCURRENCY};
use polymongo::PolyMongo;

use crate::out::{self, Stop};
use crate::{commands, config, exit};

/// The `--help` footer of the migration commands.
const HELP: &str = "\
Exit codes: 0 complete, 1 other failure, 2 bad usage, 3 invalid migrations, targets or flags \
(nothing was run), 4 cluster unreachable, 5 partial (a database failed or was not started; \
status/plan: a database could not be read), 130 interrupted by Ctrl-C.";

/// Databases read at once by `status` and `plan` unless told otherwise.
const STATUS_CONCURRENCY: usize = 16;

/// The migration commands. Flatten into an application's command line as a subcommand
/// (`#[command(subcommand)] Migrate(MigrateCommand)`) and hand to [`run`].
#[derive(Debug, Clone, Subcommand)]
pub enum MigrateCommand {
    /// Each target's migration state: databases by version, up to date, pending work, the
    /// last failures, locks held, databases a run would refuse or could not read. Changes
    /// nothing.
    #[command(after_help = HELP)]
    Status(StatusArgs),
    /// What `apply` (or `--rollback-to VERSION`) would do: per version, the databases it
    /// would run on, and the databases it would refuse. Changes nothing.
    #[command(after_help = HELP)]
    Plan(PlanArgs),
    /// Brings every target to the latest version: canaries first, then the rest,
    /// `--concurrency` at a time. Safe to run again: each database's ledger says what is
    /// left.
    #[command(after_help = HELP)]
    Apply(ApplyArgs),
    /// Rolls every target back to `--to VERSION` with the migrations' down steps, newest
    /// version first.
    #[command(after_help = HELP)]
    Rollback(RollbackArgs),
}

/// The databases a command covers: names, a prefix or a file, exactly one of them.
#[derive(Debug, Clone, Args)]
#[group(id = "targets", required = true, multiple = false)]
pub struct TargetArgs {
    /// Target databases, by name.
    #[arg(value_name = "DATABASE")]
    databases: Vec<String>,
    /// Every database whose name starts with P, on every cluster the configuration routes to
    /// (never admin, local or config).
    #[arg(long, value_name = "P", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    prefix: Option<String>,
    /// The databases listed in FILE, one name per line; blank lines and `#` comments are
    /// ignored.
    #[arg(long, value_name = "FILE")]
    databases_from: Option<PathBuf>,
}

/// `status`: targets and read concurrency.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    targets: TargetArgs,
    /// Databases read at once.
    #[arg(long, value_name = "N", default_value_t = STATUS_CONCURRENCY)]
    concurrency: usize,
}

/// `plan`: targets, read concurrency, and a rollback target to plan instead of an apply.
#[derive(Debug, Clone, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    targets: TargetArgs,
    /// Databases read at once.
    #[arg(long, value_name = "N", default_value_t = STATUS_CONCURRENCY)]
    concurrency: usize,
    /// Plan a rollback to VERSION instead of an apply.
    #[arg(long, value_name = "VERSION")]
    rollback_to: Option<u64>,
}

/// How `apply` and `rollback` run.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Databases worked on at once, 1 to 1024.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CONCURRENCY)]
    concurrency: usize,
    /// Run the first N targets first, as canaries: if one fails, no other database is
    /// touched.
    #[arg(long, value_name = "N", conflicts_with = "canary_db")]
    canary: Option<usize>,
    /// Run this database first, as a canary (repeatable; each must be among the targets).
    #[arg(long = "canary-db", value_name = "NAME")]
    canary_db: Vec<String>,
    /// Start no new database once N have failed (those in flight finish).
    #[arg(long, value_name = "N")]
    max_failures: Option<usize>,
    /// Seconds each database waits for another runner's lock, 0 to 86400 (a day; a dead
    /// runner's lock expires within a minute).
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = lock_wait)]
    lock_wait: Duration,
    /// Seconds this runner's locks last without renewal, 0.001 to 86400 (tests of dead
    /// runners).
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = lock_ttl, hide = true)]
    lock_ttl: Duration,
}

/// `apply`: targets, run options, `--dry-run`.
#[derive(Debug, Clone, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    targets: TargetArgs,
    #[command(flatten)]
    run: RunArgs,
    /// Show the plan and change nothing (as `plan`).
    #[arg(long)]
    dry_run: bool,
}

/// `rollback`: the version to roll back to, targets, run options.
#[derive(Debug, Clone, Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    targets: TargetArgs,
    /// The version to roll back to: every applied version above it is undone (0: all).
    #[arg(long, value_name = "VERSION")]
    to: u64,
    #[command(flatten)]
    run: RunArgs,
}

/// How results are shown: `--json` and `--quiet`, which an application's command line
/// usually has already.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Output {
    /// One JSON document on standard output instead of text.
    pub json: bool,
    /// No progress bar or notes on standard error (errors are still reported).
    pub quiet: bool,
}

/// A migration binary's whole command line: connection flags, output flags and a
/// [`MigrateCommand`]. Parsed by [`run_embedded`]; parse it yourself (`MigrateCli::parse()`)
/// and call [`MigrateCli::run`] from an async `main`.
#[derive(Debug, Clone, Parser)]
#[command(
    about = "Versioned migrations of this application's databases: status, plan, apply, \
             rollback.",
    after_help = HELP
)]
pub struct MigrateCli {
    /// Connection string of the main cluster (overrides the configuration file). Passwords
    /// are never shown.
    #[arg(long, env = "MONGODB_URI", global = true, hide_env_values = true)]
    uri: Option<String>,
    /// Configuration file (TOML, the library's options; per-database sections route
    /// databases to other clusters).
    #[arg(short, long, env = "POLYMONGO_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Machine-readable output: one JSON document.
    #[arg(long, global = true)]
    json: bool,
    /// No progress bar or notes on stderr.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: MigrateCommand,
}

impl MigrateCli {
    /// Connects (`--uri` / `MONGODB_URI`, `--config`), runs the command with `migrations`,
    /// closes the connections and returns the exit code.
    pub async fn run(self, migrations: &Migrations) -> i32 {
        let overrides = config::Overrides {
            uri: self.uri,
            ..config::Overrides::default()
        };
        let options = match config::load(self.config.as_deref(), &overrides) {
            Ok(o) => o,
            Err(message) => {
                out::note(format_args!("polymongo: {message}"));
                return exit::CONFIG;
            }
        };
        let output = Output {
            json: self.json,
            quiet: self.quiet,
        };
        connected(options, migrations, &self.command, output).await
    }
}

/// The whole migration binary of an application: parses the process's arguments
/// ([`MigrateCli`]: `status | plan | apply | rollback` with `--uri` / `MONGODB_URI` and the
/// flags of `polymongo migrate`, no `--dir`), runs the command with `migrations` (code steps
/// included) on a runtime of its own, and returns the exit code for `std::process::exit`.
/// Call it from a plain `fn main`; an async `main` calls [`MigrateCli::run`] instead.
pub fn run_embedded(migrations: Migrations) -> i32 {
    let cli = MigrateCli::parse();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(cli.run(&migrations)),
        Err(e) => {
            out::note(format_args!("polymongo: cannot start the runtime: {e}"));
            exit::OTHER
        }
    }
}

/// Runs `command` with `migrations` on the databases of `poly` and returns the exit code;
/// the results go to standard output, notes and the progress bar to standard error.
/// `poly` is left open.
///
/// A rollback past a version without down steps is refused by each database that holds
/// it, before anything is undone there (exit 3); `polymongo migrate`, which reads the
/// definitions from files, refuses it before any database is touched.
pub async fn run(
    poly: &PolyMongo,
    migrations: &Migrations,
    command: &MigrateCommand,
    output: Output,
) -> i32 {
    runner::execute(poly, migrations, command, output)
        .await
        .unwrap_or_else(|Stop(code)| code)
}

/// `polymongo migrate`: the migrations of folder `dir`, the cluster of the tool's options.
pub(crate) async fn tool(g: &crate::Global, dir: &Path, command: &MigrateCommand) -> i32 {
    let migrations = match Migrations::from_dir(dir) {
        Ok(m) => m,
        Err(e) => {
            let (_, message) = exit::of(&e);
            out::note(format_args!(
                "polymongo: {message}{}",
                targets::gap_files(dir, &e)
            ));
            return exit::CONFIG;
        }
    };
    let options = match commands::options(g) {
        Ok(o) => o,
        Err(code) => return code,
    };
    let output = Output {
        json: g.json,
        quiet: g.quiet,
    };
    connected(options, &migrations, command, output).await
}

/// Builds a manager sized for the command's concurrency (unless the pool size was given),
/// runs the command and closes the manager.
async fn connected(
    mut options: polymongo::Options,
    migrations: &Migrations,
    command: &MigrateCommand,
    output: Output,
) -> i32 {
    // Refused before connecting: nothing to reach when the request itself is invalid.
    if let Err(Stop(code)) = runner::check(migrations, command) {
        return code;
    }
    if options.max_pool_size.is_none() {
        let wanted =
            u32::try_from(runner::concurrency(command).saturating_add(2)).unwrap_or(u32::MAX);
        options.max_pool_size = Some(wanted.max(polymongo::DEFAULT_MAX_POOL_SIZE));
    }
    let poly = match commands::build(options).await {
        Ok(poly) => poly,
        Err(code) => return code,
    };
    let code = runner::execute(&poly, migrations, command, output)
        .await
        .unwrap_or_else(|Stop(code)| code);
    poly.close_all(commands::CLOSE_DEADLINE).await;
    code
}

/// Longest `--lock-wait` and `--lock-ttl`, in seconds: a day. A lock held or waited for
/// longer than a day is a typing mistake, not a setting, and is refused before any database
/// is touched.
const MAX_LOCK_SECS: f64 = 86_400.0;

/// Shortest `--lock-ttl`, in seconds: the library's own floor (1 ms), refused rather than
/// raised silently.
const MIN_LOCK_TTL_SECS: f64 = 0.001;

/// `--lock-wait`: seconds (fractions allowed), 0 to a day.
fn lock_wait(text: &str) -> Result<Duration, String> {
    seconds_within(text, 0.0, MAX_LOCK_SECS)
}

/// `--lock-ttl`: seconds (fractions allowed), 1 ms to a day.
fn lock_ttl(text: &str) -> Result<Duration, String> {
    seconds_within(text, MIN_LOCK_TTL_SECS, MAX_LOCK_SECS)
}

/// A number of seconds (fractions allowed) within `min..=max`, as a duration.
fn seconds_within(text: &str, min: f64, max: f64) -> Result<Duration, String> {
    let secs: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    // NaN fails both comparisons, so it is refused here too.
    if !(secs >= min && secs <= max) {
        return Err(format!("{text} is not in {min}..={max} seconds"));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{text} is not a duration in seconds"))
}
