//! The manager's options as plain data, so they can come from code, a file or the environment,
//! and one validation that turns every mistake into an [`Error::Config`] naming the field.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use mongodb::options::{ClientOptions, ConnectionString};
use serde::{Deserialize, Serialize};

use crate::floor::db_config::DbConfig;
use crate::floor::error::{Error, Result};
use crate::floor::name::validate_database_name;
use crate::floor::redact::{redact_uri, scrub};
use crate::floor::tenant_config::{self, ClusterConfig, DirectoryConfig};

/// Default size of each connection pool, as in the npm package.
pub const DEFAULT_MAX_POOL_SIZE: u32 = 10;
/// Default bound on dedicated pools open at once.
pub const DEFAULT_MAX_DEDICATED_POOLS: usize = 64;
/// Database used when neither the options nor the URI name one (the driver's convention).
pub const FALLBACK_DEFAULT_DB: &str = "test";
/// MongoDB truncates application names longer than this in the handshake; we refuse them.
pub const MAX_APP_NAME_BYTES: usize = 128;

/// Options of a [`PolyMongo`](crate::PolyMongo) manager.
///
/// Built with [`PolyMongo::builder`](crate::PolyMongo::builder), or deserialised (every field
/// has a default; unknown fields are refused so a typo does not pass silently):
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let options: polymongo::Options = serde_json::from_str(r#"{
///     "uri": "mongodb://127.0.0.1:27017",
///     "default_db": "main",
///     "max_pool_size": 20,
///     "idle_timeout": "5m",
///     "retry": { "attempts": 5, "interval": "500ms" }
/// }"#)?;
/// assert_eq!(options.max_pool_size, Some(20));
/// # Ok(()) }
/// ```
///
/// [`validate`](Self::validate) (run by `build`) refuses, naming the key: zero where zero
/// means nothing, any duration above [`MAX_DURATION`] (about 100 years), an empty
/// `app_name`, a URI whose `maxPoolSize=0` would be the pool's size, and an invalid
/// `databases` section.
///
/// `Debug` shows the URI with its password replaced by `***`, and names (`default_db`, map
/// keys, the directory's) with any credentials a URI put there by mistake would carry.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    /// Connection string of the main cluster (`mongodb://` or `mongodb+srv://`). Required.
    pub uri: String,
    /// Database used by [`ModelHandle::default_db`](crate::ModelHandle::default_db). Default:
    /// the database in the URI's path, else `"test"`.
    pub default_db: Option<String>,
    /// Most connections each pool opens. Default: the URI's `maxPoolSize`, else 10.
    pub max_pool_size: Option<u32>,
    /// Connections each pool keeps open even when idle (the driver's `minPoolSize`). Default 0;
    /// a URI's `minPoolSize` larger than this is kept.
    pub min_free_connections: u32,
    /// Idle connections older than this are closed by the driver (`maxIdleTimeMS`). Default: never.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Option<Duration>,
    /// `true` (the default): no connection is opened until a database is first used.
    /// `false`: [`build`](crate::PolyMongoBuilder::build) connects the main pool and checks it.
    pub cold_start: bool,
    /// Name sent to the server in the handshake (shown in its logs and `currentOp`).
    /// Default: the URI's `appName`, else none. Not empty; at most 128 bytes.
    pub app_name: Option<String>,
    /// How [`PolyMongo::connect`](crate::PolyMongo::connect) retries a cluster that does not answer.
    pub retry: RetryOptions,
    /// How long the driver looks for a suitable server before an operation fails
    /// (`serverSelectionTimeoutMS`). Default: the URI's value, else the driver's 30 s.
    #[serde(with = "humantime_serde")]
    pub server_selection_timeout: Option<Duration>,
    /// How long opening one connection may take (`connectTimeoutMS`). Default: the URI's
    /// value, else the driver's 10 s.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Option<Duration>,
    /// How often each client checks its servers (`heartbeatFrequencyMS`, at least 500 ms).
    /// The driver has no socket timeout: a connection whose peer stops answering is given up
    /// when a check fails, after about this plus `connect_timeout`. Default: the URI's value,
    /// else the driver's 10 s.
    #[serde(with = "humantime_serde")]
    pub heartbeat_frequency: Option<Duration>,
    /// Per-database configuration (the npm package's `dbSpecific`), by database name.
    pub databases: BTreeMap<String, DbConfig>,
    /// Named clusters tenants can be placed on, besides the main one (named `"main"`).
    pub clusters: BTreeMap<String, ClusterConfig>,
    /// The tenant directory (see [`tenants`](crate::tenants)); `None`: no directory.
    pub directory: Option<DirectoryConfig>,
    /// Most dedicated pools open at once. When one more must open, the least recently used
    /// one that no handle uses is closed first (it reopens on its next use). Default 64.
    pub max_dedicated_pools: usize,
    /// Where per-database usage figures ([`Stats::usage`](crate::Stats::usage): operations,
    /// errors, latency percentiles) come from. Default
    /// [`Operations`](UsageAnalytics::Operations): what runs through
    /// [`DbHandle::run`](crate::DbHandle::run), at about 1 % of the driver's client CPU.
    /// [`Commands`](UsageAnalytics::Commands) sees every command but doubles the
    /// client-side CPU per operation (measured in `benches/monitoring.rs`).
    pub usage_analytics: UsageAnalytics,
    /// Most databases ranked by [`Stats::top_databases`](crate::Stats::top_databases) (and
    /// given their own series in the metrics): the busiest of the last minute or two, a newly
    /// busy database displacing a quiet one. Every cached database keeps its own figures
    /// ([`Stats::usage`](crate::Stats::usage)) whatever this bound. Default 1 000.
    pub max_tracked_databases: usize,
    /// A database that nothing uses (no handle, stream, transaction or bulk task) and that
    /// was not used for this long is forgotten: its cached handles, its index-ensured marks,
    /// its usage figures and its concurrency guard are dropped at once, and the next use
    /// rebuilds them from configuration. Default 5 minutes.
    #[serde(with = "humantime_serde")]
    pub database_idle_timeout: Duration,
    /// Most databases cached at once. Past it, the housekeeper forgets the least recently
    /// used databases that nothing uses (as by `database_idle_timeout`) down to nine tenths of
    /// the bound. It runs in the background, woken by the first database past the bound, so a
    /// burst of new databases can pass the bound by what arrives during one pass (a pass
    /// reads every cached entry once: milliseconds per 100 000); databases in use are never
    /// forgotten, so the bound can also be exceeded by those. Default 100 000.
    pub max_cached_databases: usize,
    /// How long a dedicated pool closed for idleness (or by the `max_dedicated_pools` bound,
    /// or a resize) lets work the library cannot see — cursors and sessions made directly on
    /// the driver's handles — finish before its client is shut down without waiting. Work the
    /// library sees (handles, operations, streams, transactions, bulk tasks, connections
    /// checked out) keeps a pool from closing at all. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub idle_close_grace: Duration,
    /// Bound on how long an operation run through [`DbHandle::run`](crate::DbHandle::run)
    /// waits for a connection of its pool when every connection is busy. Past it the
    /// operation fails with [`Error::PoolExhausted`](crate::Error::PoolExhausted) instead of
    /// waiting on (the driver has no wait-queue timeout of its own). Default: no bound.
    #[serde(with = "humantime_serde")]
    pub wait_queue_timeout: Option<Duration>,
}

/// Where per-database usage figures come from: [`Options::usage_analytics`](crate::Options::usage_analytics).
///
/// In configuration files: `"off"`, `"operations"` or `"commands"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageAnalytics {
    /// Nothing is counted; [`DbHandle::run`](crate::DbHandle::run) only opens its tracing span.
    Off,
    /// Operations run through [`DbHandle::run`](crate::DbHandle::run) are counted, by kind
    /// (`find`, `insert`, …), with their errors and latency as the caller sees it (pool
    /// checkout included). Operations called directly on the collection are not seen. About
    /// 1 % of the driver's client-side instructions (`benches/monitoring.rs`).
    #[default]
    Operations,
    /// Every command every client of the manager sends is counted, from the driver's command
    /// events: `getMore`s, raw [`database`](crate::PolyMongo::database) access and direct
    /// collection calls included. The driver then copies each command and reply into an event,
    /// which doubled the client-side instructions per operation in `benches/monitoring.rs`.
    Commands,
}

/// Default of [`Options::max_tracked_databases`]: databases ranked by
/// [`Stats::top_databases`](crate::Stats::top_databases).
pub const DEFAULT_MAX_TRACKED_DATABASES: usize = 1_000;

/// Largest accepted [`Options::max_tracked_databases`]: the ranking is kept in one list that a
/// newly busy database scans to displace the quietest.
pub const MAX_TRACKED_LIMIT: usize = 100_000;

/// Default of [`Options::database_idle_timeout`].
pub const DEFAULT_DATABASE_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Default of [`Options::idle_close_grace`]: how long a client closed for idleness may keep
/// serving cursors and sessions the library cannot see before it is shut down without
/// waiting.
pub const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(30);

/// Default of [`Options::max_cached_databases`].
pub const DEFAULT_MAX_CACHED_DATABASES: usize = 100_000;

/// Longest duration any option accepts (about a hundred years): anything longer is a typo
/// or meant "never", and this bound keeps every deadline and product the library and the
/// driver make of a duration (`now + d`, twice the refresh, milliseconds in a `u64`) far
/// from overflowing, where a bigger value would panic or wrap to a short one.
pub const MAX_DURATION: Duration =
    Duration::from_secs(100 * 365 * 24 * 60 * 60 + 25 * 24 * 60 * 60);

/// Refuses a duration longer than [`MAX_DURATION`], naming `field`.
pub(crate) fn within_max_duration(
    duration: Duration,
    error: impl FnOnce(String) -> Error,
) -> Result<()> {
    if duration > MAX_DURATION {
        return Err(error(format!(
            "{duration:?} is too long: must be at most {MAX_DURATION:?} (100 years)"
        )));
    }
    Ok(())
}

/// A name error whose name is shown with any credentials redacted: a URI put where a name
/// belongs is a common slip, and the error must not carry its password.
pub(crate) fn redacted_name(error: Error) -> Error {
    match error {
        Error::InvalidName { what, name, rule } => Error::InvalidName {
            what,
            name: redact_uri(&name),
            rule,
        },
        other => other,
    }
}

/// The driver's reason for refusing a connection string, without the `Kind: …, labels: …`
/// dump of its `Display`, and with every secret of `uri` removed.
pub(crate) fn uri_problem(error: &mongodb::error::Error, uri: &str) -> String {
    let reason = match &*error.kind {
        mongodb::error::ErrorKind::InvalidArgument { message, .. } => message.clone(),
        other => other.to_string(),
    };
    format!("{}: {}", redact_uri(uri), scrub(&reason, uri))
}

/// A map's `Debug` with each key redacted, for maps keyed by names a user may have filled
/// with a URI.
pub(crate) struct RedactedKeys<'a, V>(pub(crate) &'a BTreeMap<String, V>);

impl<V: fmt::Debug> fmt::Debug for RedactedKeys<'_, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| (redact_uri(k), v)))
            .finish()
    }
}

/// The shortest `heartbeat_frequency` the driver accepts.
const MIN_HEARTBEAT_FREQUENCY: Duration = Duration::from_millis(500);

/// Retry of the first connection (`connect`, `ping`), as the npm package's `retry` option,
/// with back-off: the pause after attempt *k* is `interval × backoff^(k-1)`, at most
/// `max_interval`. Each failed attempt is logged and reported to the `on_error` hooks.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RetryOptions {
    /// Attempts in all, the first included. At least 1. Default 3.
    pub attempts: u32,
    /// Pause after the first failed attempt. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Factor the pause grows by after each further failure; 1 keeps it fixed (the npm
    /// package's behaviour). At least 1. Default 2.
    pub backoff: u32,
    /// Longest pause. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub max_interval: Duration,
}

impl Default for RetryOptions {
    fn default() -> Self {
        Self {
            attempts: 3,
            interval: Duration::from_secs(1),
            backoff: 2,
            max_interval: Duration::from_secs(30),
        }
    }
}

impl RetryOptions {
    /// `attempts` in all with `interval` after the first failure, the other settings default.
    pub fn new(attempts: u32, interval: Duration) -> Self {
        Self {
            attempts,
            interval,
            ..Self::default()
        }
    }

    /// With this back-off factor (1: a fixed interval).
    pub fn backoff(mut self, factor: u32) -> Self {
        self.backoff = factor;
        self
    }

    /// With this longest pause.
    pub fn max_interval(mut self, max: Duration) -> Self {
        self.max_interval = max;
        self
    }

    /// The pause after failed attempt `attempt` (1-based).
    pub(crate) fn pause_after(&self, attempt: u32) -> Duration {
        let factor = self
            .backoff
            .max(1)
            .checked_pow(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.interval
            .checked_mul(factor)
            .unwrap_or(self.max_interval)
            .min(self.max_interval)
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            uri: String::new(),
            default_db: None,
            max_pool_size: None,
            min_free_connections: 0,
            idle_timeout: None,
            cold_start: true,
            app_name: None,
            retry: RetryOptions::default(),
            server_selection_timeout: None,
            connect_timeout: None,
            heartbeat_frequency: None,
            databases: BTreeMap::new(),
            clusters: BTreeMap::new(),
            directory: None,
            max_dedicated_pools: DEFAULT_MAX_DEDICATED_POOLS,
            usage_analytics: UsageAnalytics::default(),
            max_tracked_databases: DEFAULT_MAX_TRACKED_DATABASES,
            database_idle_timeout: DEFAULT_DATABASE_IDLE_TIMEOUT,
            max_cached_databases: DEFAULT_MAX_CACHED_DATABASES,
            idle_close_grace: IDLE_CLOSE_GRACE,
            wait_queue_timeout: None,
        }
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("uri", &redact_uri(&self.uri))
            // Names and the application name are redacted too: a URI put there by mistake
            // must not show its password.
            .field("default_db", &self.default_db.as_deref().map(redact_uri))
            .field("max_pool_size", &self.max_pool_size)
            .field("min_free_connections", &self.min_free_connections)
            .field("idle_timeout", &self.idle_timeout)
            .field("cold_start", &self.cold_start)
            .field("app_name", &self.app_name.as_deref().map(redact_uri))
            .field("retry", &self.retry)
            .field("server_selection_timeout", &self.server_selection_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("heartbeat_frequency", &self.heartbeat_frequency)
            .field("databases", &RedactedKeys(&self.databases))
            .field("clusters", &RedactedKeys(&self.clusters))
            .field("directory", &self.directory)
            .field("max_dedicated_pools", &self.max_dedicated_pools)
            .field("usage_analytics", &self.usage_analytics)
            .field("max_tracked_databases", &self.max_tracked_databases)
            .field("database_idle_timeout", &self.database_idle_timeout)
            .field("max_cached_databases", &self.max_cached_databases)
            .field("idle_close_grace", &self.idle_close_grace)
            .field("wait_queue_timeout", &self.wait_queue_timeout)
            .finish()
    }
}

fn config(field: &'static str, message: impl Into<String>) -> Error {
    Error::Config {
        field,
        message: message.into(),
    }
}

/// Why a URI's `maxPoolSize=0` is refused.
const ZERO_POOL: &str = "maxPoolSize=0 would let the pool open no connection, so every \
                         operation would wait forever; give at least 1 (or set max_pool_size)";

/// Size of a dedicated pool: its own maximum (else the global one) and minimum (default 0).
#[derive(Debug, Clone, Copy)]
pub(crate) struct DedicatedSize {
    pub(crate) max: Option<u32>,
    pub(crate) min: u32,
}

/// Options after validation, with the driver's options resolved.
pub(crate) struct Resolved {
    pub(crate) default_db: String,
    pub(crate) client_options: ClientOptions,
    pub(crate) cluster_label: String,
}

impl Options {
    /// Checks every field that can be checked without I/O, the `databases` sections
    /// included. Errors name the field (for a database section: the database and its field).
    pub fn validate(&self) -> Result<()> {
        let conn = self.connection_string()?;
        if let Some(db) = &self.default_db {
            validate_database_name(db)
                .map_err(|e| config("default_db", redacted_name(e).to_string()))?;
        }
        if self.max_pool_size == Some(0) {
            return Err(config("max_pool_size", "must be at least 1"));
        }
        if let (None, Some(db)) = (&self.default_db, &conn.default_database) {
            validate_database_name(db).map_err(|e| config("uri", redacted_name(e).to_string()))?;
        }
        if self.max_pool_size.is_none() && conn.max_pool_size == Some(0) {
            return Err(config(
                "uri",
                format!("{}: {ZERO_POOL}", redact_uri(&self.uri)),
            ));
        }
        let max = self.max_pool_size.unwrap_or(DEFAULT_MAX_POOL_SIZE);
        if self.min_free_connections > max {
            return Err(config(
                "min_free_connections",
                format!(
                    "{} is more than max_pool_size ({max})",
                    self.min_free_connections
                ),
            ));
        }
        for (field, value) in [
            ("idle_timeout", self.idle_timeout),
            ("server_selection_timeout", self.server_selection_timeout),
            ("connect_timeout", self.connect_timeout),
        ] {
            if value == Some(Duration::ZERO) {
                return Err(config(field, "must be longer than zero"));
            }
        }
        for (field, value) in [
            ("idle_timeout", self.idle_timeout),
            ("server_selection_timeout", self.server_selection_timeout),
            ("connect_timeout", self.connect_timeout),
            ("heartbeat_frequency", self.heartbeat_frequency),
            ("wait_queue_timeout", self.wait_queue_timeout),
            ("database_idle_timeout", Some(self.database_idle_timeout)),
            ("idle_close_grace", Some(self.idle_close_grace)),
            ("retry.interval", Some(self.retry.interval)),
            ("retry.max_interval", Some(self.retry.max_interval)),
        ] {
            if let Some(value) = value {
                within_max_duration(value, |m| config(field, m))?;
            }
        }
        if self
            .heartbeat_frequency
            .is_some_and(|f| f < MIN_HEARTBEAT_FREQUENCY)
        {
            return Err(config(
                "heartbeat_frequency",
                "must be at least 500ms (the driver's minimum)",
            ));
        }
        if let Some(name) = &self.app_name {
            if name.is_empty() {
                return Err(config(
                    "app_name",
                    "is empty: give a name, or leave the option out",
                ));
            }
            if name.len() > MAX_APP_NAME_BYTES {
                return Err(config(
                    "app_name",
                    format!(
                        "is {} bytes long; MongoDB accepts at most {MAX_APP_NAME_BYTES}",
                        name.len()
                    ),
                ));
            }
        }
        if self.wait_queue_timeout == Some(Duration::ZERO) {
            return Err(config("wait_queue_timeout", "must be more than zero"));
        }
        if self.max_tracked_databases == 0 {
            return Err(config("max_tracked_databases", "must be at least 1"));
        }
        if self.max_tracked_databases > MAX_TRACKED_LIMIT {
            return Err(config(
                "max_tracked_databases",
                format!("must be at most {MAX_TRACKED_LIMIT}"),
            ));
        }
        if self.max_cached_databases == 0 {
            return Err(config("max_cached_databases", "must be at least 1"));
        }
        if self.database_idle_timeout.is_zero() {
            return Err(config("database_idle_timeout", "must be more than zero"));
        }
        if self.max_dedicated_pools == 0 {
            return Err(config("max_dedicated_pools", "must be at least 1"));
        }
        if self.retry.attempts == 0 {
            return Err(config("retry.attempts", "must be at least 1"));
        }
        if self.retry.backoff == 0 {
            return Err(config("retry.backoff", "must be at least 1"));
        }
        tenant_config::validate(&self.clusters, self.directory.as_ref())?;
        for (name, db) in &self.databases {
            db.validate(name)?;
        }
        Ok(())
    }

    fn connection_string(&self) -> Result<ConnectionString> {
        if self.uri.trim().is_empty() {
            return Err(config(
                "uri",
                "is required (a mongodb:// or mongodb+srv:// connection string)",
            ));
        }
        ConnectionString::parse(&self.uri).map_err(|e| config("uri", uri_problem(&e, &self.uri)))
    }

    /// Validates, then resolves the main URI into driver options (SRV and TXT lookups for
    /// `mongodb+srv://`, which is why building is async).
    pub(crate) async fn resolve(&self) -> Result<Resolved> {
        self.validate()?;
        let opts = self
            .client_options(&self.uri, None)
            .await
            .map_err(|(field, message)| config(field, message))?;
        let default_db = match (&self.default_db, &opts.default_database) {
            (Some(db), _) => db.clone(),
            (None, Some(db)) => {
                validate_database_name(db).map_err(|e| config("uri", e.to_string()))?;
                db.clone()
            }
            (None, None) => FALLBACK_DEFAULT_DB.to_owned(),
        };
        Ok(Resolved {
            default_db,
            client_options: opts,
            cluster_label: redact_uri(&self.uri),
        })
    }

    /// Driver options for a client on `uri`: the URI's own options, then this manager's
    /// settings, with the pool sized by `dedicated` when given, else by the global options.
    /// Errors are `(field, message)` so the caller can say which database the field belongs
    /// to; messages never contain the password.
    pub(crate) async fn client_options(
        &self,
        uri: &str,
        dedicated: Option<DedicatedSize>,
    ) -> std::result::Result<ClientOptions, (&'static str, String)> {
        let conn = ConnectionString::parse(uri).map_err(|e| ("uri", uri_problem(&e, uri)))?;
        let mut opts = ClientOptions::parse(conn)
            .await
            .map_err(|e| ("uri", uri_problem(&e, uri)))?;
        let max = dedicated
            .and_then(|d| d.max)
            .or(self.max_pool_size)
            .or(opts.max_pool_size)
            .unwrap_or(DEFAULT_MAX_POOL_SIZE);
        let (min, field) = match dedicated {
            Some(d) => (d.min, "min_connections"),
            None => (self.min_free_connections, "min_free_connections"),
        };
        // A URI's `minPoolSize` is the user's too: the option's default of 0 must not erase
        // it. The larger of the two is kept.
        let (min, field) = match opts.min_pool_size {
            Some(from_uri) if from_uri > min => (from_uri, "uri"),
            _ => (min, field),
        };
        if max == 0 {
            // Only the URI's `maxPoolSize` can be 0 here: the options refuse it.
            return Err(("uri", format!("{}: {ZERO_POOL}", redact_uri(uri))));
        }
        if min > max {
            return Err((field, format!("{min} is more than the pool size ({max})")));
        }
        opts.max_pool_size = Some(max);
        opts.min_pool_size = Some(min);
        if self.idle_timeout.is_some() {
            opts.max_idle_time = self.idle_timeout;
        }
        if self.app_name.is_some() {
            opts.app_name.clone_from(&self.app_name);
        }
        if self.server_selection_timeout.is_some() {
            opts.server_selection_timeout = self.server_selection_timeout;
        }
        if self.heartbeat_frequency.is_some() {
            opts.heartbeat_freq = self.heartbeat_frequency;
        }
        if self.connect_timeout.is_some() {
            opts.connect_timeout = self.connect_timeout;
        }
        Ok(opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(uri: &str) -> Options {
        Options {
            uri: uri.to_owned(),
            ..Options::default()
        }
    }

    fn field_of(e: Error) -> &'static str {
        match e {
            Error::Config { field, .. } => field,
            other => panic!("expected a config error, got {other}"),
        }
    }

    #[test]
    fn defaults_validate_once_a_uri_is_given() {
        assert_eq!(field_of(Options::default().validate().unwrap_err()), "uri");
        opts("mongodb://127.0.0.1:27017").validate().unwrap();
    }

    #[test]
    fn each_bad_field_is_named() {
        let base = opts("mongodb://h");
        let cases: Vec<(Options, &str)> = vec![
            (opts("http://h"), "uri"),
            (opts("mongodb://h:notaport"), "uri"),
            (
                Options {
                    default_db: Some("a/b".into()),
                    ..base.clone()
                },
                "default_db",
            ),
            (
                Options {
                    max_pool_size: Some(0),
                    ..base.clone()
                },
                "max_pool_size",
            ),
            (
                Options {
                    min_free_connections: 11,
                    ..base.clone()
                },
                "min_free_connections",
            ),
            (
                Options {
                    idle_timeout: Some(Duration::ZERO),
                    ..base.clone()
                },
                "idle_timeout",
            ),
            (
                Options {
                    app_name: Some("x".repeat(129)),
                    ..base.clone()
                },
                "app_name",
            ),
            (
                Options {
                    retry: RetryOptions::new(0, Duration::ZERO),
                    ..base.clone()
                },
                "retry.attempts",
            ),
        ];
        for (o, want) in cases {
            assert_eq!(field_of(o.validate().unwrap_err()), want, "{o:?}");
        }
    }

    #[test]
    fn password_never_shown() {
        let o = opts("mongodb://admin:hunter2@h:notaport/");
        let e = o.validate().unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(!format!("{e:?}").contains("hunter2"));
        assert!(!format!("{o:?}").contains("hunter2"));
    }

    #[test]
    fn deserialises_with_human_durations_and_refuses_unknown_fields() {
        let o: Options = toml::from_str(
            "uri = \"mongodb://h\"\nidle_timeout = \"2m\"\n[retry]\nattempts = 5\ninterval = \"250ms\"\n",
        )
        .unwrap();
        assert_eq!(o.idle_timeout, Some(Duration::from_secs(120)));
        assert_eq!(o.retry.attempts, 5);
        assert_eq!(o.retry.interval, Duration::from_millis(250));
        assert!(o.cold_start);
        let err = toml::from_str::<Options>("uri = \"mongodb://h\"\nmax_pool = 3\n").unwrap_err();
        assert!(err.to_string().contains("max_pool"), "{err}");
    }

    #[test]
    fn heartbeat_frequency_below_the_drivers_minimum_is_refused() {
        let o = Options {
            heartbeat_frequency: Some(Duration::from_millis(100)),
            ..opts("mongodb://h")
        };
        let e = o.validate().unwrap_err();
        assert!(e.to_string().contains("heartbeat_frequency"), "{e}");
    }

    #[test]
    fn retry_pauses_grow_by_the_backoff_up_to_the_cap() {
        let r = RetryOptions::new(6, Duration::from_millis(100))
            .max_interval(Duration::from_millis(500));
        let pauses: Vec<u128> = (1..=5).map(|a| r.pause_after(a).as_millis()).collect();
        assert_eq!(pauses, [100, 200, 400, 500, 500]);
        let fixed = r.backoff(1);
        assert_eq!(fixed.pause_after(4), Duration::from_millis(100));
        assert_eq!(r.pause_after(u32::MAX), Duration::from_millis(500));
    }

    #[test]
    fn usage_source_is_named_in_lower_case() {
        assert_eq!(
            Options::default().usage_analytics,
            UsageAnalytics::Operations
        );
        let o: Options = toml::from_str("usage_analytics = \"commands\"\n").unwrap();
        assert_eq!(o.usage_analytics, UsageAnalytics::Commands);
        let err = toml::from_str::<Options>("usage_analytics = true\n").unwrap_err();
        assert!(err.to_string().contains("usage_analytics"), "{err}");
    }
}
