//! Opt-in logging set-up matching the npm package's `debug` and `logPath` (feature `logging`):
//! the library's `tracing` events to the console and, optionally, to size-rotated files
//! (5 MB × 5 by default, as the npm package's Winston set-up).
//!
//! The library itself only emits `tracing` events (lifecycle, pools, errors; URIs always with
//! their password redacted, errors as [`Error::redacted`](crate::Error::redacted) prints them,
//! without the document values a server quotes); applications with their own subscriber need
//! none of this.
//!
//! ```no_run
//! polymongo::logging::init(polymongo::logging::LogOptions {
//!     debug: true,
//!     log_dir: Some("./logs".into()),
//!     ..Default::default()
//! })?;
//! # Ok::<(), polymongo::Error>(())
//! ```

use std::fs;
use std::path::PathBuf;
use std::sync::Mutex;

use file_rotate::compression::Compression;
use file_rotate::suffix::AppendCount;
use file_rotate::{ContentLimit, FileRotate};
use tracing_subscriber::filter::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::floor::error::{Error, Result};

/// Size at which a log file is rotated, as the npm package.
pub const DEFAULT_MAX_FILE_BYTES: usize = 5 * 1024 * 1024;
/// Rotated files kept besides the current one, as the npm package.
pub const DEFAULT_MAX_FILES: usize = 5;
/// Name of the current log file in `log_dir`; rotated ones get `.1`, `.2`… appended.
pub const LOG_FILE_NAME: &str = "polymongo.log";

/// What [`init`] sets up.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// `true`: polymongo's debug events too (`polymongo=debug`); `false`: `info` and up. The
    /// `RUST_LOG` environment variable, when set, takes precedence.
    pub debug: bool,
    /// Write to `<log_dir>/polymongo.log` as well, rotated by size. Default: console only.
    pub log_dir: Option<PathBuf>,
    /// Rotate a file once it passes this many bytes. Default 5 MB.
    pub max_file_bytes: usize,
    /// Rotated files to keep. Default 5.
    pub max_files: usize,
    /// Also log to standard error. Default `true`.
    pub console: bool,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            debug: false,
            log_dir: None,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            max_files: DEFAULT_MAX_FILES,
            console: true,
        }
    }
}

fn config(field: &'static str, message: String) -> Error {
    Error::Config { field, message }
}

/// Installs a global `tracing` subscriber as `options` say.
///
/// # Errors
/// [`Error::Config`] naming `log_dir` when the directory cannot be created,
/// `max_file_bytes` / `max_files` when zero, and `logging` when a global subscriber is
/// already installed.
pub fn init(options: LogOptions) -> Result<()> {
    if options.max_file_bytes == 0 {
        return Err(config("max_file_bytes", "must be at least 1".into()));
    }
    if options.max_files == 0 {
        return Err(config("max_files", "must be at least 1".into()));
    }
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(if options.debug {
            "info,polymongo=debug"
        } else {
            "info"
        })
    });
    let file = match &options.log_dir {
        Some(dir) => {
            fs::create_dir_all(dir)
                .map_err(|e| config("log_dir", format!("{}: {e}", dir.display())))?;
            let writer = FileRotate::new(
                dir.join(LOG_FILE_NAME),
                AppendCount::new(options.max_files),
                ContentLimit::BytesSurpassed(options.max_file_bytes),
                Compression::None,
                None,
            );
            Some(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(Mutex::new(writer)),
            )
        }
        None => None,
    };
    let console = options
        .console
        .then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stderr));
    tracing_subscriber::registry()
        .with(filter)
        .with(console)
        .with(file)
        .try_init()
        .map_err(|e| {
            config(
                "logging",
                format!("a global subscriber is already set: {e}"),
            )
        })
}
