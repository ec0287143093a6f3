//! `polymongo`: the command-line tool for operators of many-database MongoDB deployments, and
//! the migration runner applications embed in their own binaries ([`migrate`]).
//!
//! ```text
//! polymongo --uri mongodb://127.0.0.1:27017 dbs
//! polymongo -c polymongo.toml export shop -o shop.ndjson.gz --gzip
//! polymongo -c polymongo.toml import shop_copy -i shop.ndjson.gz --continue-on-error
//! polymongo config check polymongo.toml
//! polymongo migrate apply --dir migrations --prefix tenant_ --canary 3
//! polymongo -c polymongo.toml clusters
//! polymongo -c polymongo.toml tenants create acme --cluster cell_a --label plan=pro
//! polymongo -c polymongo.toml tenants ls --state suspended --all --json
//! polymongo top --app http://10.0.0.5:3000,http://10.0.0.6:3000
//! ```
//!
//! The binary is a thin `main` over [`main`]. Exit codes: see `src/exit.rs` (and `--help`).
//! Everything the tool prints goes through one output path (`src/out.rs`), which ends a
//! command quietly when its reader closes the pipe; the lints below keep it the only path.
#![deny(clippy::print_stdout, clippy::print_stderr)]
#![deny(missing_docs, missing_debug_implementations)]

mod cluster;
mod commands;
mod config;
mod exit;
mod failures;
mod metrics_server;
pub mod migrate;
mod out;
mod progress;
mod tenants;
mod top;
mod top_apps;

use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand};

/// Largest `top --interval`, in seconds: a day. Longer is no live view, and bounding it keeps
/// every deadline computed from it (`now + interval`, the idle timeout `3 × interval`) finite.
const MAX_INTERVAL_SECS: u64 = 86_400;

/// Largest `export --batch-size`: the driver refuses a batch size that does not fit in the
/// server's signed 32-bit field.
const MAX_EXPORT_BATCH: i64 = i32::MAX as i64;

/// Largest `import --batch-size`: the server's largest write batch (`maxWriteBatchSize`);
/// the driver would split a larger one anyway.
const MAX_IMPORT_BATCH: u64 = 100_000;

/// Operate MongoDB deployments with many databases: inspect pools and databases, export,
/// import, copy and drop whole databases, watch changes, serve metrics.
///
/// The cluster comes from a configuration file (`--config`, the same options as the
/// library's builder, per-database sections included), overridden by the environment
/// (`MONGODB_URI`, `POLYMONGO_*`) and then by flags.
#[derive(Debug, Parser)]
#[command(name = "polymongo", version, propagate_version = true, after_help = exit::HELP)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
struct Global {
    /// Configuration file (TOML): uri, default_db, max_pool_size, [retry], [databases.NAME],
    /// [clusters.NAME], [directory]…
    #[arg(short, long, env = "POLYMONGO_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Connection string of the main cluster (overrides the file). Passwords are never shown.
    #[arg(long, env = "MONGODB_URI", global = true, hide_env_values = true)]
    uri: Option<String>,
    /// Database used when a command needs one and none is given.
    #[arg(long, env = "POLYMONGO_DEFAULT_DB", global = true)]
    default_db: Option<String>,
    /// Connections per pool.
    #[arg(long, env = "POLYMONGO_MAX_POOL_SIZE", global = true)]
    max_pool_size: Option<u32>,
    /// Machine-readable output: JSON (one document, or JSON lines for streams).
    #[arg(long, global = true)]
    json: bool,
    /// No progress bars or notes on stderr.
    #[arg(short, long, global = true)]
    quiet: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Round-trip time to the cluster of a database.
    Ping {
        /// The database (default: the default database).
        db: Option<String>,
    },
    /// Databases of the main cluster with their sizes.
    Dbs,
    /// One database's size, collections and pool; without one, each configured cluster as
    /// its server reports it (connections, databases by size).
    Stats {
        /// A database.
        db: Option<String>,
    },
    /// Live view of the cluster (connections, operations per second, databases by size), or
    /// with --app of running applications (their pools, and the busiest, slowest and most
    /// erroring tenants now, merged across instances).
    Top {
        /// Seconds between refreshes, 1 to 86400 (a day).
        #[arg(
            long,
            value_name = "SECS",
            default_value_t = 2,
            value_parser = clap::value_parser!(u64).range(1..=MAX_INTERVAL_SECS)
        )]
        interval: u64,
        /// Print one snapshot and exit (what a pipe gets anyway, unless --json).
        #[arg(long)]
        once: bool,
        /// Applications' figures routes to poll instead of the cluster: http://HOST:PORT
        /// (the route /figures) or a full URL, comma-separated or repeated. An instance that
        /// does not answer is shown as down; the view goes on.
        #[arg(
            long,
            value_name = "URL",
            value_delimiter = ',',
            value_parser = top_apps::parse_app_url
        )]
        app: Vec<top_apps::AppUrl>,
    },
    /// Write a whole database to a dump file (NDJSON, canonical Extended JSON).
    Export {
        /// The database.
        db: String,
        /// Output file (default: standard output).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Compress with gzip.
        #[arg(long)]
        gzip: bool,
        /// Documents per cursor batch, 1 to 2147483647 (default: the server's).
        #[arg(
            long,
            value_name = "N",
            value_parser = clap::value_parser!(u32).range(1..=MAX_EXPORT_BATCH)
        )]
        batch_size: Option<u32>,
    },
    /// Read a dump (plain or gzip) into a database.
    Import {
        /// The target database.
        db: String,
        /// Input file (default: standard input).
        #[arg(short, long)]
        input: Option<PathBuf>,
        /// Replace documents with the same `_id` instead of failing on them.
        #[arg(long)]
        upsert: bool,
        /// Skip bad records and refused documents, list them, and go on.
        #[arg(long)]
        continue_on_error: bool,
        /// Drop the target database first.
        #[arg(long)]
        drop: bool,
        /// Documents per write batch, 1 to 100000 (a batch also ends at 8 MiB of documents).
        #[arg(
            long,
            value_name = "N",
            default_value_t = polymongo::bulk::DEFAULT_BATCH_SIZE,
            value_parser = clap::builder::RangedU64ValueParser::<usize>::new()
                .range(1..=MAX_IMPORT_BATCH)
        )]
        batch_size: usize,
        /// Write every failure to FILE, one JSON line each (the terminal gets a summary).
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
    },
    /// Copy a whole database, within the cluster or to another one.
    Copy {
        /// The source database.
        src: String,
        /// The target database.
        dst: String,
        /// Cluster of the target (default: the target's routing, usually the main cluster).
        #[arg(long)]
        to_uri: Option<String>,
        /// Drop the target database first.
        #[arg(long)]
        drop: bool,
        /// Write every failure to FILE, one JSON line each (the terminal gets a summary).
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
    },
    /// Drop a database. Asks for its name unless --yes.
    Drop {
        /// The database.
        db: String,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
    },
    /// Print change events of a database or collection as JSON lines until Ctrl-C.
    Watch {
        /// The database.
        db: String,
        /// A collection of it (default: the whole database).
        collection: Option<String>,
    },
    /// Serve Prometheus metrics over HTTP until Ctrl-C.
    Metrics {
        /// Address to listen on (port 0: any free port, printed on start).
        #[arg(long, default_value = "127.0.0.1:9464")]
        listen: std::net::SocketAddr,
    },
    /// Versioned migrations over many databases, from a folder of migration files:
    /// status, plan, apply, rollback.
    Migrate(MigrateTool),
    /// The clusters of the tenant directory: places taken of each one's capacity, tenants
    /// by state, the size of their databases. Needs a [directory] section in the
    /// configuration file.
    #[command(after_help = tenants::HELP)]
    Clusters,
    /// The tenant directory: ls, show, create, suspend, resume. Needs a [directory] section
    /// in the configuration file.
    #[command(subcommand)]
    Tenants(tenants::TenantsCommand),
    /// Configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Shell completion script, for bash, zsh, fish, elvish or powershell.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `polymongo migrate`: the embeddable runner's commands over a folder of migration files.
#[derive(Debug, Args)]
struct MigrateTool {
    /// The folder of migration files (`<version>_<name>.json`; see docs/migrations.md).
    /// Required.
    #[arg(
        long,
        env = "POLYMONGO_MIGRATIONS_DIR",
        global = true,
        value_name = "DIR"
    )]
    dir: Option<PathBuf>,
    #[command(subcommand)]
    command: migrate::MigrateCommand,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate a file: every problem with its line. Exit 0 when valid, 3 otherwise.
    Check {
        /// The file.
        file: PathBuf,
    },
}

/// The `polymongo` tool: parses the process's arguments, runs the command and exits with its
/// code (see `--help`). Never returns.
pub fn main() {
    let cli = Cli::parse();
    if let Command::Migrate(MigrateTool { dir: None, .. }) = cli.command {
        // `--dir` is global (it may follow the subcommand), and clap does not let a global
        // argument be required: checked here, reported as clap reports a missing argument.
        usage_error(
            "migrate",
            clap::error::ErrorKind::MissingRequiredArgument,
            "the migrations folder is required: --dir DIR (or POLYMONGO_MIGRATIONS_DIR)",
        );
    }
    if let Command::Top { app, .. } = &cli.command {
        // A value parser sees one value at a time: a repeated URL is found here.
        if let Some(message) = top_apps::repeated(app) {
            usage_error("top", clap::error::ErrorKind::ArgumentConflict, &message);
        }
    }
    if let Command::Completions { shell } = cli.command {
        // Generated whole, then written through the one output path (clap_complete panics
        // on a closed pipe when it writes itself).
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "polymongo", &mut script);
        let code = match out::bytes(&script) {
            Ok(()) => exit::OK,
            Err(out::Stop(code)) => code,
        };
        std::process::exit(code);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            out::note(format_args!("polymongo: cannot start the runtime: {e}"));
            std::process::exit(exit::OTHER);
        }
    };
    let code = runtime.block_on(commands::run(cli));
    std::process::exit(code);
}

/// Ends the process as clap ends it for a bad command line (exit 2, the usage of
/// `subcommand`), for what clap's own checks cannot see.
fn usage_error(subcommand: &str, kind: clap::error::ErrorKind, message: &str) -> ! {
    let mut command = Cli::command();
    command.build();
    match command.find_subcommand_mut(subcommand) {
        Some(sub) => sub.error(kind, message),
        None => command.error(kind, message),
    }
    .exit()
}
