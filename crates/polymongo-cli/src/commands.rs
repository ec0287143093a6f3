//! The commands. Each returns the process's exit code; messages go to stderr, results to
//! stdout (JSON with `--json`), both through [`out`](crate::out).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use polymongo::bulk::{ExportOptions, ImportOptions, ImportReport, OnError, WriteMode};
use polymongo::mongodb::bson::Bson;
use polymongo::{DbConfig, Error, Options, PolyMongo, UsageAnalytics};

use crate::config::{self, Overrides};
use crate::exit;
use crate::failures::Failures;
use crate::out::{self, Outcome, Stop};
use crate::progress::Progress;
use crate::{Cli, Command, ConfigCommand, Global};

/// Longest a graceful close of the tool's own pools may take on exit.
pub const CLOSE_DEADLINE: Duration = Duration::from_secs(5);

pub async fn run(cli: Cli) -> i32 {
    let g = cli.global;
    let outcome = match cli.command {
        Command::Config(ConfigCommand::Check { file }) => config_check(&g, &file),
        Command::Completions { .. } => Ok(exit::OK),
        Command::Migrate(tool) => {
            let Some(dir) = tool.dir else {
                // `main` refuses a missing --dir before the runtime starts.
                return exit::CONFIG;
            };
            Ok(crate::migrate::tool(&g, &dir, &tool.command).await)
        }
        Command::Clusters => Ok(crate::tenants::clusters(&g).await),
        // Running applications' figures: no cluster to connect to.
        Command::Top {
            app,
            interval,
            once,
        } if !app.is_empty() => crate::top_apps::top(app, g.json, interval, once).await,
        Command::Tenants(command) => Ok(crate::tenants::tool(&g, command).await),
        command => {
            let poly = match connect(&g, &command).await {
                Ok(poly) => poly,
                Err(code) => return code,
            };
            let outcome = dispatch(&g, &poly, command).await;
            poly.close_all(CLOSE_DEADLINE).await;
            outcome
        }
    };
    outcome.unwrap_or_else(|Stop(code)| code)
}

/// The manager's options from the file, the environment and the flags; `Err` is the exit
/// code, reported.
pub fn options(g: &Global) -> Result<Options, i32> {
    let overrides = Overrides {
        uri: g.uri.clone(),
        default_db: g.default_db.clone(),
        max_pool_size: g.max_pool_size,
    };
    let mut options = config::load(g.config.as_deref(), &overrides).map_err(|message| {
        out::note(format_args!("polymongo: {message}"));
        exit::CONFIG
    })?;
    // Every command the tool sends is counted, so `metrics` has usage series to show.
    options.usage_analytics = UsageAnalytics::Commands;
    Ok(options)
}

/// Builds the manager; `Err` is the exit code, reported.
pub async fn build(options: Options) -> Result<PolyMongo, i32> {
    polymongo::PolyMongoBuilder::from_options(options)
        .build()
        .await
        .map_err(|e| fail(&e))
}

/// Builds the manager from the file, the environment and the flags.
async fn connect(g: &Global, command: &Command) -> Result<PolyMongo, i32> {
    let mut options = options(g)?;
    if let Command::Copy {
        dst,
        to_uri: Some(uri),
        ..
    } = command
    {
        options
            .databases
            .insert(dst.clone(), DbConfig::new().uri(uri.clone()));
    }
    build(options).await
}

/// Reports `e` on stderr and returns its exit code.
pub fn fail(e: &Error) -> i32 {
    let (code, message) = exit::of(e);
    out::note(format_args!("polymongo: {message}"));
    code
}

/// Checks, before a command's work, that the clusters of `databases` answer (and accept the
/// credentials): an unreachable cluster then exits 4 with a clear message, rather than in the
/// middle of the work as a partial result or a driver error.
pub async fn reachable(poly: &PolyMongo, databases: &[&str]) -> Result<(), Stop> {
    for db in databases {
        if let Err(e) = poly.ping(db).await {
            return Err(Stop(fail(&e)));
        }
    }
    Ok(())
}

async fn dispatch(g: &Global, poly: &PolyMongo, command: Command) -> Outcome {
    match command {
        Command::Ping { db } => ping(g, poly, db).await,
        Command::Dbs => {
            reachable(poly, &[poly.default_db_name()]).await?;
            dbs(g, poly).await
        }
        Command::Stats { db } => stats(g, poly, db).await,
        Command::Top { interval, once, .. } => {
            reachable(poly, &[poly.default_db_name()]).await?;
            crate::top::top(poly, g.json, interval, once).await
        }
        Command::Export {
            db,
            output,
            gzip,
            batch_size,
        } => {
            reachable(poly, &[&db]).await?;
            let mut options = ExportOptions::default().gzip(gzip);
            if let Some(n) = batch_size {
                options = options.batch_size(n);
            }
            export(g, poly, &db, output, options).await
        }
        Command::Import {
            db,
            input,
            upsert,
            continue_on_error,
            drop,
            batch_size,
            report,
        } => {
            reachable(poly, &[&db]).await?;
            let options = ImportOptions::default()
                .batch_size(batch_size)
                .mode(if upsert {
                    WriteMode::Upsert
                } else {
                    WriteMode::Insert
                })
                .on_error(if continue_on_error {
                    OnError::Continue
                } else {
                    OnError::Stop
                })
                .drop_target_first(drop);
            import(g, poly, &db, input, options, report.as_deref()).await
        }
        Command::Copy {
            src,
            dst,
            drop,
            report,
            ..
        } => {
            reachable(poly, &[&src, &dst]).await?;
            copy(g, poly, &src, &dst, drop, report.as_deref()).await
        }
        Command::Drop { db, yes } => drop_database(poly, &db, yes).await,
        Command::Watch { db, collection } => {
            reachable(poly, &[&db]).await?;
            watch(poly, &db, collection).await
        }
        Command::Metrics { listen } => metrics(poly, listen).await,
        Command::Config(_)
        | Command::Completions { .. }
        | Command::Migrate(_)
        | Command::Clusters
        | Command::Tenants(_) => Ok(exit::OK),
    }
}

fn config_check(g: &Global, file: &Path) -> Outcome {
    match config::check(file) {
        Err(message) => {
            out::note(format_args!("polymongo: {message}"));
            Ok(exit::CONFIG)
        }
        Ok(problems) if g.json => {
            let code = if problems.is_empty() {
                exit::OK
            } else {
                exit::CONFIG
            };
            out::json(&serde_json::json!({ "file": file, "problems": problems }))?;
            Ok(code)
        }
        Ok(problems) if problems.is_empty() => {
            out::line(format_args!("{}: valid", file.display()))?;
            Ok(exit::OK)
        }
        Ok(problems) => {
            for p in &problems {
                match p.line {
                    Some(line) => {
                        out::line(format_args!("{}:{line}: {}", file.display(), p.message))?
                    }
                    None => out::line(format_args!("{}: {}", file.display(), p.message))?,
                }
            }
            Ok(exit::CONFIG)
        }
    }
}

async fn ping(g: &Global, poly: &PolyMongo, db: Option<String>) -> Outcome {
    let db = db.unwrap_or_else(|| poly.default_db_name().to_owned());
    match poly.ping(&db).await {
        Ok(rtt) if g.json => {
            out::json(&serde_json::json!({ "database": db, "rtt_us": rtt.as_micros() as u64 }))?;
            Ok(exit::OK)
        }
        Ok(rtt) => {
            out::line(format_args!("{db}: {:.2} ms", rtt.as_secs_f64() * 1e3))?;
            Ok(exit::OK)
        }
        Err(e) => Ok(fail(&e)),
    }
}

async fn dbs(g: &Global, poly: &PolyMongo) -> Outcome {
    let list = match poly.stats().list_databases().await {
        Ok(list) => list,
        Err(e) => return Ok(fail(&e)),
    };
    if g.json {
        out::json(&list)?;
        return Ok(exit::OK);
    }
    let width = list.iter().map(|d| d.name.len()).max().unwrap_or(8).max(8);
    out::line(format_args!(
        "{:width$}  {:>14}",
        "database", "size on disk"
    ))?;
    for d in &list {
        out::line(format_args!(
            "{:width$}  {:>14}",
            d.name,
            human_bytes(d.size_on_disk)
        ))?;
    }
    Ok(exit::OK)
}

async fn stats(g: &Global, poly: &PolyMongo, db: Option<String>) -> Outcome {
    let Some(db) = db else {
        reachable(poly, &[poly.default_db_name()]).await?;
        return cluster_stats(g, poly).await;
    };
    reachable(poly, &[&db]).await?;
    match poly.stats().db(&db).await {
        Ok(s) if g.json => {
            out::json(&s)?;
            Ok(exit::OK)
        }
        Ok(s) => {
            out::line(format_args!("database     {}", s.name))?;
            out::line(format_args!("data size    {}", human_bytes(s.data_size)))?;
            out::line(format_args!("storage size {}", human_bytes(s.storage_size)))?;
            out::line(format_args!(
                "pool         {:?} on {}",
                s.pool_kind, s.cluster
            ))?;
            out::line(format_args!("collections  {}", s.collections.len()))?;
            for c in &s.collections {
                out::line(format_args!(
                    "  {:30} {:>12} docs {:>12}",
                    c.name,
                    c.documents,
                    human_bytes(c.size)
                ))?;
            }
            Ok(exit::OK)
        }
        Err(e) => Ok(fail(&e)),
    }
}

/// `stats` without a database: each configured cluster as its server reports it.
async fn cluster_stats(g: &Global, poly: &PolyMongo) -> Outcome {
    let clusters = match crate::cluster::overview(poly).await {
        Ok(c) => c,
        Err(e) => return Ok(fail(&e)),
    };
    if g.json {
        out::json(&clusters)?;
        return Ok(exit::OK);
    }
    for c in &clusters {
        out::line(format_args!("cluster            {}", c.cluster))?;
        out::line(format_args!("routed here        {}", c.routed.join(", ")))?;
        out::line(format_args!("server             {}", c.server))?;
        out::line(format_args!(
            "server connections {} open, {} available, {} created since start",
            c.connections_current, c.connections_available, c.connections_total_created
        ))?;
        out::line(format_args!(
            "databases          {} ({} on disk)",
            c.databases,
            human_bytes(c.size_on_disk)
        ))?;
        for (name, size) in &c.largest {
            out::line(format_args!("  {name:40} {:>12}", human_bytes(*size)))?;
        }
        out::line("")?;
    }
    Ok(exit::OK)
}

pub fn human_bytes(n: i64) -> String {
    indicatif::HumanBytes(u64::try_from(n).unwrap_or(0)).to_string()
}

/// Documents in `db`, for the progress bar's total (best effort).
async fn estimate(poly: &PolyMongo, db: &str) -> Option<u64> {
    let stats = poly.stats().db(db).await.ok()?;
    Some(
        stats
            .collections
            .iter()
            .map(|c| c.documents.max(0) as u64)
            .fold(0u64, u64::saturating_add),
    )
}

async fn export(
    g: &Global,
    poly: &PolyMongo,
    db: &str,
    output: Option<PathBuf>,
    options: ExportOptions,
) -> Outcome {
    let progress = Progress::new("export", estimate(poly, db).await, g.quiet);
    let options = options.progress(progress.callback());
    let bulk = poly.bulk();
    let result = match &output {
        Some(path) => {
            let file = match tokio::fs::File::create(path).await {
                Ok(f) => f,
                Err(e) => {
                    out::note(format_args!(
                        "polymongo: cannot create {}: {e}",
                        path.display()
                    ));
                    return Ok(exit::OTHER);
                }
            };
            interruptible(bulk.export_stream(db, tokio::io::BufWriter::new(file), options)).await
        }
        None => interruptible(bulk.export_stream(db, tokio::io::stdout(), options)).await,
    };
    progress.finish();
    match result {
        None => {
            out::note(format_args!(
                "polymongo: interrupted; {} documents were exported, and the dump is incomplete (no end record)",
                progress.documents()
            ));
            Ok(exit::INTERRUPTED)
        }
        Some(Ok(report)) => {
            if !g.quiet {
                out::note(format_args!(
                    "exported {} documents from {} collections of {db} ({} of dump)",
                    report.documents,
                    report.collections.len(),
                    indicatif::HumanBytes(report.bytes)
                ));
            }
            if g.json && output.is_some() {
                out::json(&report)?;
            }
            Ok(exit::OK)
        }
        // The dump went to standard output and its reader went away: the same quiet end as
        // any other write there.
        Some(Err(Error::Io { source, .. })) if output.is_none() => Err(out::stopped(&source)),
        Some(Err(e)) => Ok(fail(&e)),
    }
}

/// Runs `work` until it ends or Ctrl-C; `None` when interrupted.
pub(crate) async fn interruptible<T>(work: impl std::future::Future<Output = T>) -> Option<T> {
    tokio::select! {
        done = work => Some(done),
        _ = tokio::signal::ctrl_c() => None,
    }
}

async fn import(
    g: &Global,
    poly: &PolyMongo,
    db: &str,
    input: Option<PathBuf>,
    options: ImportOptions,
    report_file: Option<&Path>,
) -> Outcome {
    let failures = Failures::new(report_file)?;
    // A file of known size gives a bar with an ETA (by bytes; a gzip file's bytes are
    // compressed, so its bar is a document count instead).
    let size = match &input {
        Some(path) => tokio::fs::metadata(path).await.ok().map(|m| m.len()),
        None => None,
    };
    let gzipped = input.as_ref().is_some_and(|p| {
        use std::io::Read;
        let mut magic = [0u8; 2];
        std::fs::File::open(p)
            .and_then(|mut f| f.read_exact(&mut magic))
            .is_ok_and(|()| magic == [0x1f, 0x8b])
    });
    let progress = match size {
        Some(total) if !gzipped => Progress::bytes("import", total, g.quiet),
        _ => Progress::new("import", None, g.quiet),
    };
    let options = options
        .progress(progress.callback())
        .on_failure(failures.callback());
    let bulk = poly.bulk();
    let result = match &input {
        Some(path) => {
            let file = match tokio::fs::File::open(path).await {
                Ok(f) => f,
                Err(e) => {
                    out::note(format_args!(
                        "polymongo: cannot open {}: {e}",
                        path.display()
                    ));
                    return Ok(exit::OTHER);
                }
            };
            interruptible(bulk.import_stream(db, file, options)).await
        }
        None => interruptible(bulk.import_stream(db, tokio::io::stdin(), options)).await,
    };
    progress.finish();
    match result {
        None => {
            out::note(format_args!(
                "polymongo: interrupted; {} documents were written to {db} (acknowledged by the server)",
                progress.documents()
            ));
            Ok(exit::INTERRUPTED)
        }
        Some(Ok(report)) => failures.report(&report, g.json, report_file),
        Some(Err(Error::Import(report))) => failures.report(&report, g.json, report_file),
        Some(Err(e)) => Ok(fail(&e)),
    }
}

/// Exit 5 when an import or copy skipped anything or stopped.
pub fn import_code(report: &ImportReport) -> i32 {
    if report.is_clean() {
        exit::OK
    } else {
        exit::PARTIAL
    }
}

async fn copy(
    g: &Global,
    poly: &PolyMongo,
    src: &str,
    dst: &str,
    drop: bool,
    report_file: Option<&Path>,
) -> Outcome {
    let failures = Failures::new(report_file)?;
    let progress = Progress::new("copy", estimate(poly, src).await, g.quiet);
    let options = ImportOptions::default()
        .drop_target_first(drop)
        .progress(progress.callback())
        .on_failure(failures.callback());
    let result = interruptible(poly.bulk().copy_database(src, dst, options)).await;
    progress.finish();
    match result {
        None => {
            out::note(format_args!(
                "polymongo: interrupted; {} documents were copied to {dst}",
                progress.documents()
            ));
            Ok(exit::INTERRUPTED)
        }
        Some(Ok(report)) => {
            if g.json {
                out::json(&report)?;
                return Ok(import_code(&report.written));
            }
            if !g.quiet {
                out::note(format_args!("{} ({:?})", report.written, report.paths));
            }
            if report.written.is_clean() {
                return Ok(exit::OK);
            }
            failures.report(&report.written, false, report_file)
        }
        Some(Err(Error::Import(report))) => failures.report(&report, g.json, report_file),
        Some(Err(e)) => Ok(fail(&e)),
    }
}

async fn drop_database(poly: &PolyMongo, db: &str, yes: bool) -> Outcome {
    if !yes {
        if !std::io::stdin().is_terminal() {
            out::note(format_args!(
                "polymongo: refusing to drop {db} without --yes (no terminal to ask on)"
            ));
            return Ok(exit::REFUSED);
        }
        out::prompt(format_args!(
            "Drop database {db} and everything in it? Type its name to confirm: "
        ));
        let mut answer = String::new();
        if std::io::stdin().read_line(&mut answer).is_err() || answer.trim() != db {
            out::note("polymongo: not confirmed; nothing dropped");
            return Ok(exit::REFUSED);
        }
    }
    reachable(poly, &[db]).await?;
    match poly.bulk().drop_database(db).await {
        Ok(()) => {
            out::note(format_args!("dropped {db}"));
            Ok(exit::OK)
        }
        Err(e) => Ok(fail(&e)),
    }
}

async fn watch(poly: &PolyMongo, db: &str, collection: Option<String>) -> Outcome {
    let stream = match &collection {
        Some(coll) => poly.watch_collection(db, coll, [], None).await,
        None => poly.watch_database(db, [], None).await,
    };
    let mut stream = match stream {
        Ok(s) => s,
        Err(e) => return Ok(fail(&e)),
    };
    out::note(format_args!(
        "watching {db}{}; Ctrl-C to stop",
        collection.map(|c| format!(".{c}")).unwrap_or_default()
    ));
    loop {
        let next = tokio::select! {
            next = stream.next() => next,
            _ = tokio::signal::ctrl_c() => return Ok(exit::OK),
        };
        match next {
            None => return Ok(exit::OK),
            Some(Err(e)) => return Ok(fail(&e)),
            Some(Ok(event)) => match polymongo::mongodb::bson::to_document(&event) {
                Ok(d) => out::line(Bson::Document(d).into_relaxed_extjson())?,
                Err(e) => {
                    out::note(format_args!("polymongo: cannot encode an event: {e}"));
                    return Ok(exit::OTHER);
                }
            },
        }
    }
}

async fn metrics(poly: &PolyMongo, listen: std::net::SocketAddr) -> Outcome {
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match crate::metrics_server::serve(poly.clone(), listen, stop).await {
        Ok(()) => Ok(exit::OK),
        Err(e) => {
            out::note(format_args!(
                "polymongo: cannot serve metrics on {listen}: {e}"
            ));
            Ok(exit::OTHER)
        }
    }
}
