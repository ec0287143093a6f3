//! The commands. Each returns the process's exit code; messages go to stderr, results to
//! stdout (JSON with `--json`).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use polymongo::bulk::{ExportOptions, ImportOptions, ImportReport, OnError, WriteMode};
use polymongo::mongodb::bson::{doc, Bson, Document};
use polymongo::{DbConfig, Error, PolyMongo, UsageAnalytics};
use serde::Serialize;

use crate::config::{self, Overrides};
use crate::exit;
use crate::progress::Progress;
use crate::{Cli, Command, ConfigCommand, Global};

/// Longest a graceful close of the tool's own pools may take on exit.
const CLOSE_DEADLINE: Duration = Duration::from_secs(5);

pub async fn run(cli: Cli) -> i32 {
    let g = cli.global;
    match cli.command {
        Command::Config(ConfigCommand::Check { file }) => config_check(&g, &file),
        Command::Completions { .. } => exit::OK,
        command => {
            let poly = match connect(&g, &command).await {
                Ok(poly) => poly,
                Err(code) => return code,
            };
            let code = dispatch(&g, &poly, command).await;
            poly.close_all(CLOSE_DEADLINE).await;
            code
        }
    }
}

/// Builds the manager from the file, the environment and the flags.
async fn connect(g: &Global, command: &Command) -> Result<PolyMongo, i32> {
    let overrides = Overrides {
        uri: g.uri.clone(),
        default_db: g.default_db.clone(),
        max_pool_size: g.max_pool_size,
    };
    let mut options = config::load(g.config.as_deref(), &overrides).map_err(|message| {
        eprintln!("polymongo: {message}");
        exit::CONFIG
    })?;
    // Every command the tool sends is counted, so `metrics` has usage series to show.
    options.usage_analytics = UsageAnalytics::Commands;
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
    polymongo::PolyMongoBuilder::from_options(options)
        .build()
        .await
        .map_err(|e| fail(&e))
}

/// Reports `e` on stderr and returns its exit code.
fn fail(e: &Error) -> i32 {
    eprintln!("polymongo: {e}");
    exit::of(e)
}

fn print_json<T: Serialize>(value: &T) -> i32 {
    match serde_json::to_string_pretty(value) {
        Ok(text) => {
            println!("{text}");
            exit::OK
        }
        Err(e) => {
            eprintln!("polymongo: cannot encode the result as JSON: {e}");
            exit::OTHER
        }
    }
}

async fn dispatch(g: &Global, poly: &PolyMongo, command: Command) -> i32 {
    match command {
        Command::Ping { db } => ping(g, poly, db).await,
        Command::Dbs => dbs(g, poly).await,
        Command::Stats { db } => stats(g, poly, db).await,
        Command::Top { interval, once } => top(g, poly, interval, once).await,
        Command::Export {
            db,
            output,
            gzip,
            batch_size,
        } => {
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
        } => {
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
            import(g, poly, &db, input, options).await
        }
        Command::Copy { src, dst, drop, .. } => copy(g, poly, &src, &dst, drop).await,
        Command::Drop { db, yes } => drop_database(poly, &db, yes).await,
        Command::Watch { db, collection } => watch(poly, &db, collection).await,
        Command::Metrics { listen } => metrics(poly, listen).await,
        Command::Config(_) | Command::Completions { .. } => exit::OK,
    }
}

fn config_check(g: &Global, file: &std::path::Path) -> i32 {
    match config::check(file) {
        Err(message) => {
            eprintln!("polymongo: {message}");
            exit::CONFIG
        }
        Ok(problems) if g.json => {
            let code = if problems.is_empty() {
                exit::OK
            } else {
                exit::CONFIG
            };
            print_json(&serde_json::json!({ "file": file, "problems": problems }));
            code
        }
        Ok(problems) if problems.is_empty() => {
            println!("{}: valid", file.display());
            exit::OK
        }
        Ok(problems) => {
            for p in &problems {
                match p.line {
                    Some(line) => println!("{}:{line}: {}", file.display(), p.message),
                    None => println!("{}: {}", file.display(), p.message),
                }
            }
            exit::CONFIG
        }
    }
}

async fn ping(g: &Global, poly: &PolyMongo, db: Option<String>) -> i32 {
    let db = db.unwrap_or_else(|| poly.default_db_name().to_owned());
    match poly.ping(&db).await {
        Ok(rtt) if g.json => {
            print_json(&serde_json::json!({ "database": db, "rtt_us": rtt.as_micros() as u64 }))
        }
        Ok(rtt) => {
            println!("{db}: {:.2} ms", rtt.as_secs_f64() * 1e3);
            exit::OK
        }
        Err(e) => fail(&e),
    }
}

async fn dbs(g: &Global, poly: &PolyMongo) -> i32 {
    let list = match poly.stats().list_databases().await {
        Ok(list) => list,
        Err(e) => return fail(&e),
    };
    if g.json {
        return print_json(&list);
    }
    let width = list.iter().map(|d| d.name.len()).max().unwrap_or(8).max(8);
    println!("{:width$}  {:>14}", "database", "size on disk");
    for d in &list {
        println!("{:width$}  {:>14}", d.name, human_bytes(d.size_on_disk));
    }
    exit::OK
}

async fn stats(g: &Global, poly: &PolyMongo, db: Option<String>) -> i32 {
    let Some(db) = db else {
        let general = poly.stats().general();
        if g.json {
            return print_json(&general);
        }
        println!("active pools       {}", general.total_active_pools);
        println!(
            "pooled connections {}",
            general.total_connections_across_pools
        );
        println!("live clients       {}", general.live_clients);
        println!("databases in use   {}", general.databases_in_use);
        println!(
            "primary pool       {} ({:?}): {} open, {} in use, max {}",
            general.primary.cluster,
            general.primary.state,
            general.primary.stats.total,
            general.primary.stats.in_use,
            general.primary.stats.max_size
        );
        return exit::OK;
    };
    match poly.stats().db(&db).await {
        Ok(s) if g.json => print_json(&s),
        Ok(s) => {
            println!("database     {}", s.name);
            println!("data size    {}", human_bytes(s.data_size));
            println!("storage size {}", human_bytes(s.storage_size));
            println!("pool         {:?} on {}", s.pool_kind, s.cluster);
            println!("collections  {}", s.collections.len());
            for c in &s.collections {
                println!(
                    "  {:30} {:>12} docs {:>12}",
                    c.name,
                    c.documents,
                    human_bytes(c.size)
                );
            }
            exit::OK
        }
        Err(e) => fail(&e),
    }
}

fn human_bytes(n: i64) -> String {
    indicatif::HumanBytes(u64::try_from(n).unwrap_or(0)).to_string()
}

/// One `top` snapshot, from the server's own figures.
#[derive(Debug, Serialize)]
struct TopSnapshot {
    connections: i64,
    /// `None` when the server reports no `opcounters`.
    operations_per_second: Option<Vec<(String, f64)>>,
    databases: Vec<(String, i64)>,
}

fn number(d: &Document, key: &str) -> i64 {
    match d.get(key) {
        Some(Bson::Int32(n)) => i64::from(*n),
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Double(f)) => *f as i64,
        _ => 0,
    }
}

async fn top(g: &Global, poly: &PolyMongo, interval: u64, once: bool) -> i32 {
    let admin = match poly.database("admin") {
        Ok(db) => db,
        Err(e) => return fail(&e),
    };
    let live = !once && std::io::stdout().is_terminal();
    let interval = Duration::from_secs(interval.max(1));
    let mut previous: Option<(Instant, Document)> = None;
    loop {
        let status = match admin.run_command(doc! { "serverStatus": 1 }).await {
            Ok(s) => s,
            Err(e) => return fail(&Error::from(e)),
        };
        let counters = status.get_document("opcounters").ok().cloned();
        let rates = match (&counters, &previous) {
            (None, _) => None,
            (Some(now), Some((at, before))) => {
                let secs = at.elapsed().as_secs_f64().max(1e-3);
                Some(
                    now.keys()
                        .map(|k| {
                            (
                                k.clone(),
                                (number(now, k) - number(before, k)) as f64 / secs,
                            )
                        })
                        .collect(),
                )
            }
            (Some(_), None) => Some(Vec::new()),
        };
        if let Some(counters) = counters {
            previous = Some((Instant::now(), counters));
        }
        let mut databases: Vec<(String, i64)> = match poly.stats().list_databases().await {
            Ok(list) => list.into_iter().map(|d| (d.name, d.size_on_disk)).collect(),
            Err(e) => return fail(&e),
        };
        databases.sort_by_key(|d| std::cmp::Reverse(d.1));
        databases.truncate(20);
        let snapshot = TopSnapshot {
            connections: status
                .get_document("connections")
                .map(|c| number(c, "current"))
                .unwrap_or(0),
            operations_per_second: rates,
            databases,
        };
        if g.json {
            match serde_json::to_string(&snapshot) {
                Ok(line) => println!("{line}"),
                Err(e) => {
                    eprintln!("polymongo: {e}");
                    return exit::OTHER;
                }
            }
        } else {
            render_top(&snapshot, live);
        }
        // A terminal refreshes; JSON lines go on unless --once; anything else prints once.
        let again = live || (g.json && !once);
        if !again {
            return exit::OK;
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = tokio::signal::ctrl_c() => return exit::OK,
        }
    }
}

fn render_top(s: &TopSnapshot, live: bool) {
    let mut out = String::new();
    if live {
        // Clear the screen and go home, so the table refreshes in place.
        out.push_str("\x1b[2J\x1b[H");
    }
    out.push_str(&format!(
        "polymongo top — server connections: {}\n\n",
        s.connections
    ));
    match &s.operations_per_second {
        None => out.push_str("operations/s: n/a (the server reports no opcounters)\n"),
        Some(rates) if rates.is_empty() => out.push_str("operations/s: (measuring…)\n"),
        Some(rates) => {
            out.push_str("operations/s:");
            for (name, rate) in rates {
                out.push_str(&format!("  {name} {rate:.1}"));
            }
            out.push('\n');
        }
    }
    out.push_str(&format!("\n{:40} {:>12}\n", "database", "size"));
    for (name, size) in &s.databases {
        out.push_str(&format!("{name:40} {:>12}\n", human_bytes(*size)));
    }
    if live {
        out.push_str("\nCtrl-C to quit\n");
    }
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
}

/// Documents in `db`, for the progress bar's total (best effort).
async fn estimate(poly: &PolyMongo, db: &str) -> Option<u64> {
    let stats = poly.stats().db(db).await.ok()?;
    Some(
        stats
            .collections
            .iter()
            .map(|c| c.documents.max(0) as u64)
            .sum(),
    )
}

async fn export(
    g: &Global,
    poly: &PolyMongo,
    db: &str,
    output: Option<std::path::PathBuf>,
    options: ExportOptions,
) -> i32 {
    let progress = Progress::new("export", estimate(poly, db).await, g.quiet);
    let options = options.progress(progress.callback());
    let bulk = poly.bulk();
    let result = match &output {
        Some(path) => {
            let file = match tokio::fs::File::create(path).await {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("polymongo: cannot create {}: {e}", path.display());
                    return exit::OTHER;
                }
            };
            interruptible(bulk.export_stream(db, tokio::io::BufWriter::new(file), options)).await
        }
        None => interruptible(bulk.export_stream(db, tokio::io::stdout(), options)).await,
    };
    progress.finish();
    match result {
        None => {
            eprintln!(
                "polymongo: interrupted; {} documents were exported, and the dump is incomplete (no end record)",
                progress.documents()
            );
            exit::INTERRUPTED
        }
        Some(Ok(report)) => {
            if !g.quiet {
                eprintln!(
                    "exported {} documents from {} collections of {db} ({} of dump)",
                    report.documents,
                    report.collections.len(),
                    indicatif::HumanBytes(report.bytes)
                );
            }
            if g.json && output.is_some() {
                return print_json(&report);
            }
            exit::OK
        }
        Some(Err(e)) => fail(&e),
    }
}

/// Runs `work` until it ends or Ctrl-C; `None` when interrupted.
async fn interruptible<T>(work: impl std::future::Future<Output = T>) -> Option<T> {
    tokio::select! {
        done = work => Some(done),
        _ = tokio::signal::ctrl_c() => None,
    }
}

async fn import(
    g: &Global,
    poly: &PolyMongo,
    db: &str,
    input: Option<std::path::PathBuf>,
    options: ImportOptions,
) -> i32 {
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
    let options = options.progress(progress.callback());
    let bulk = poly.bulk();
    let result = match &input {
        Some(path) => {
            let file = match tokio::fs::File::open(path).await {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("polymongo: cannot open {}: {e}", path.display());
                    return exit::OTHER;
                }
            };
            interruptible(bulk.import_stream(db, file, options)).await
        }
        None => interruptible(bulk.import_stream(db, tokio::io::stdin(), options)).await,
    };
    progress.finish();
    match result {
        None => {
            eprintln!(
                "polymongo: interrupted; {} documents were written to {db} (acknowledged by the server)",
                progress.documents()
            );
            exit::INTERRUPTED
        }
        Some(Ok(report)) => report_import(g, &report),
        Some(Err(Error::Import(report))) => report_import(g, &report),
        Some(Err(e)) => fail(&e),
    }
}

/// Prints an import or copy report; exit 5 when anything was skipped or it stopped.
fn report_import(g: &Global, report: &ImportReport) -> i32 {
    let code = if report.is_clean() {
        exit::OK
    } else {
        exit::PARTIAL
    };
    if g.json {
        print_json(report);
        return code;
    }
    eprintln!("{report}");
    for f in &report.failures {
        let place = match (f.line, f.lines) {
            (Some(line), _) => format!("line {line}"),
            (None, Some((a, b))) => format!("lines {a}-{b}"),
            _ => "-".to_owned(),
        };
        eprintln!(
            "  {place}: {:?} {}: {}",
            f.stage,
            f.collection.as_deref().unwrap_or("-"),
            f.message
        );
    }
    code
}

async fn copy(g: &Global, poly: &PolyMongo, src: &str, dst: &str, drop: bool) -> i32 {
    let progress = Progress::new("copy", estimate(poly, src).await, g.quiet);
    let options = ImportOptions::default()
        .drop_target_first(drop)
        .progress(progress.callback());
    let result = interruptible(poly.bulk().copy_database(src, dst, options)).await;
    progress.finish();
    match result {
        None => {
            eprintln!(
                "polymongo: interrupted; {} documents were copied to {dst}",
                progress.documents()
            );
            exit::INTERRUPTED
        }
        Some(Ok(report)) => {
            if g.json {
                return print_json(&report);
            }
            if !g.quiet {
                eprintln!("{} ({:?})", report.written, report.paths);
            }
            report_import_code(&report.written)
        }
        Some(Err(Error::Import(report))) => report_import(g, &report),
        Some(Err(e)) => fail(&e),
    }
}

fn report_import_code(report: &ImportReport) -> i32 {
    if report.is_clean() {
        exit::OK
    } else {
        exit::PARTIAL
    }
}

async fn drop_database(poly: &PolyMongo, db: &str, yes: bool) -> i32 {
    if !yes {
        if !std::io::stdin().is_terminal() {
            eprintln!("polymongo: refusing to drop {db} without --yes (no terminal to ask on)");
            return exit::REFUSED;
        }
        eprint!("Drop database {db} and everything in it? Type its name to confirm: ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        if std::io::stdin().read_line(&mut answer).is_err() || answer.trim() != db {
            eprintln!("polymongo: not confirmed; nothing dropped");
            return exit::REFUSED;
        }
    }
    match poly.bulk().drop_database(db).await {
        Ok(()) => {
            eprintln!("dropped {db}");
            exit::OK
        }
        Err(e) => fail(&e),
    }
}

async fn watch(poly: &PolyMongo, db: &str, collection: Option<String>) -> i32 {
    let stream = match &collection {
        Some(coll) => poly.watch_collection(db, coll, [], None).await,
        None => poly.watch_database(db, [], None).await,
    };
    let mut stream = match stream {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    eprintln!(
        "watching {db}{}; Ctrl-C to stop",
        collection.map(|c| format!(".{c}")).unwrap_or_default()
    );
    loop {
        let next = tokio::select! {
            next = stream.next() => next,
            _ = tokio::signal::ctrl_c() => return exit::OK,
        };
        match next {
            None => return exit::OK,
            Some(Err(e)) => return fail(&e),
            Some(Ok(event)) => {
                let line = polymongo::mongodb::bson::to_document(&event)
                    .map(|d| Bson::Document(d).into_relaxed_extjson().to_string());
                match line {
                    Ok(line) => {
                        let mut out = std::io::stdout().lock();
                        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                            // The reader went away (a closed pipe): stop quietly.
                            return exit::OK;
                        }
                    }
                    Err(e) => {
                        eprintln!("polymongo: cannot encode an event: {e}");
                        return exit::OTHER;
                    }
                }
            }
        }
    }
}

async fn metrics(poly: &PolyMongo, listen: std::net::SocketAddr) -> i32 {
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match crate::metrics_server::serve(poly.clone(), listen, stop).await {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("polymongo: cannot serve metrics on {listen}: {e}");
            exit::OTHER
        }
    }
}
