//! Per-database configuration (the npm package's `dbSpecific`), and the routing rule it implies.
//!
//! The rule, in one place:
//! - a database with **pool settings** (`max_connections`, `min_connections` or `auto_close`)
//!   gets a **dedicated** driver `Client`, on its own `uri` if it has one, else on the main
//!   cluster;
//! - a database with only a `uri` shares **that cluster's** pool with every other database
//!   routed there;
//! - every other database shares the main cluster's pool;
//! - read preference, read concern and write concern apply to the database handle, whatever
//!   pool it uses: they never cost a pool.

use std::fmt;
use std::time::Duration;

use mongodb::options::{
    Acknowledgment, ConnectionString, DatabaseOptions, ReadConcern, ReadConcernLevel,
    ReadPreference, SelectionCriteria, WriteConcern,
};
use serde::{Deserialize, Deserializer};

use crate::floor::config::{redacted_name, uri_problem, within_max_duration, DedicatedSize};
use crate::floor::error::{Error, Result};
use crate::floor::redact::redact_uri;

/// Configuration of one database. Every field is optional; [`DbConfig::new`] is "share the main
/// pool, no special options".
///
/// ```
/// use std::time::Duration;
/// use polymongo::DbConfig;
///
/// // Its own pool of 5, closed after 2 minutes without use.
/// let cache = DbConfig::new().max_connections(5).auto_close(Duration::from_secs(120));
/// // Another cluster, shared with every database routed there, reading from secondaries.
/// let analytics = DbConfig::new()
///     .uri("mongodb://analytics.internal:27017")
///     .read_preference(polymongo::mongodb::options::ReadPreference::SecondaryPreferred {
///         options: Default::default(),
///     });
/// # let _ = (cache, analytics);
/// ```
///
/// From a file (`Options::databases`), with the npm package's field names in snake_case:
///
/// ```toml
/// [databases.cache]
/// max_connections = 5
/// auto_close = true
/// ttl = "2m"
/// ```
#[derive(Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct DbConfig {
    /// Connection string of the cluster this database lives on. Default: the main cluster.
    pub uri: Option<String>,
    /// Most connections of the database's own pool. Setting it makes the pool dedicated.
    pub max_connections: Option<u32>,
    /// Connections the dedicated pool keeps open while idle. Setting it makes the pool
    /// dedicated. Default 0.
    pub min_connections: Option<u32>,
    /// Close the dedicated pool after [`ttl`](Self::ttl) without use; the next use reopens it.
    /// Setting it makes the pool dedicated.
    pub auto_close: bool,
    /// Idle time after which an `auto_close` pool is closed. Required with `auto_close`.
    #[serde(with = "humantime_serde")]
    pub ttl: Option<Duration>,
    /// `Some(false)`: connect when configured, not at first use. Default: cold start.
    pub cold_start: Option<bool>,
    /// Read preference of the database's handles (for example secondaries for analytics).
    pub read_preference: Option<ReadPreference>,
    /// Read concern of the database's handles: `{ level = "majority" }`.
    #[serde(deserialize_with = "strict_read_concern")]
    pub read_concern: Option<ReadConcern>,
    /// Write concern of the database's handles: `{ w = "majority", j = true, wtimeout = 5000 }`
    /// (`journal` and `wtimeoutMS`, in milliseconds, are accepted for `j` and `wtimeout`).
    #[serde(deserialize_with = "strict_write_concern")]
    pub write_concern: Option<WriteConcern>,
    /// Most handles of this database alive at once — the noisy-neighbour guard for a database
    /// on a shared pool. [`ModelHandle::acquire`](crate::ModelHandle::acquire) waits for a
    /// free slot (up to `queue_timeout`); [`ModelHandle::db`](crate::ModelHandle::db) takes
    /// one only if it is free now. Does not make the pool dedicated.
    pub max_concurrent_ops: Option<u32>,
    /// How long `acquire` waits for a slot under `max_concurrent_ops`. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub queue_timeout: Option<Duration>,
}

/// The driver's concerns ignore keys they do not know, so a misspelt `journal` or
/// `wtimeout` would be dropped without a word: these read the same keys and refuse others.
fn strict_read_concern<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Option<ReadConcern>, D::Error> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Strict {
        level: ReadConcernLevel,
    }
    Ok(Option::<Strict>::deserialize(deserializer)?.map(|s| s.level.into()))
}

fn strict_write_concern<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Option<WriteConcern>, D::Error> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Strict {
        w: Option<Acknowledgment>,
        #[serde(alias = "wtimeoutMS")]
        wtimeout: Option<u64>,
        #[serde(alias = "journal")]
        j: Option<bool>,
    }
    Ok(Option::<Strict>::deserialize(deserializer)?.map(|s| {
        WriteConcern::builder()
            .w(s.w)
            .w_timeout(s.wtimeout.map(Duration::from_millis))
            .journal(s.j)
            .build()
    }))
}

/// Default wait for a slot of a database with `max_concurrent_ops`.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(30);

impl fmt::Debug for DbConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbConfig")
            .field("uri", &self.uri.as_deref().map(redact_uri))
            .field("max_connections", &self.max_connections)
            .field("min_connections", &self.min_connections)
            .field("auto_close", &self.auto_close)
            .field("ttl", &self.ttl)
            .field("cold_start", &self.cold_start)
            .field("read_preference", &self.read_preference)
            .field("read_concern", &self.read_concern)
            .field("write_concern", &self.write_concern)
            .field("max_concurrent_ops", &self.max_concurrent_ops)
            .field("queue_timeout", &self.queue_timeout)
            .finish()
    }
}

impl DbConfig {
    /// A configuration that changes nothing: shared main pool, driver defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts the database on another cluster.
    pub fn uri(mut self, uri: impl Into<String>) -> Self {
        self.uri = Some(uri.into());
        self
    }

    /// Gives the database its own pool of at most `max` connections.
    pub fn max_connections(mut self, max: u32) -> Self {
        self.max_connections = Some(max);
        self
    }

    /// Gives the database its own pool keeping `min` connections open.
    pub fn min_connections(mut self, min: u32) -> Self {
        self.min_connections = Some(min);
        self
    }

    /// Gives the database its own pool, closed after `ttl` without use.
    pub fn auto_close(mut self, ttl: Duration) -> Self {
        self.auto_close = true;
        self.ttl = Some(ttl);
        self
    }

    /// `false`: connect when the configuration is applied instead of at first use.
    pub fn cold_start(mut self, cold: bool) -> Self {
        self.cold_start = Some(cold);
        self
    }

    /// Read preference of the database's handles.
    pub fn read_preference(mut self, pref: ReadPreference) -> Self {
        self.read_preference = Some(pref);
        self
    }

    /// Read concern of the database's handles.
    pub fn read_concern(mut self, concern: ReadConcern) -> Self {
        self.read_concern = Some(concern);
        self
    }

    /// Write concern of the database's handles.
    pub fn write_concern(mut self, concern: WriteConcern) -> Self {
        self.write_concern = Some(concern);
        self
    }

    /// Caps the handles of this database alive at once (see the field).
    pub fn max_concurrent_ops(mut self, max: u32) -> Self {
        self.max_concurrent_ops = Some(max);
        self
    }

    /// How long `acquire` waits for a slot under `max_concurrent_ops`.
    pub fn queue_timeout(mut self, timeout: Duration) -> Self {
        self.queue_timeout = Some(timeout);
        self
    }

    /// Whether this database gets a pool of its own.
    pub fn is_dedicated(&self) -> bool {
        self.max_connections.is_some() || self.min_connections.is_some() || self.auto_close
    }

    pub(crate) fn dedicated_size(&self) -> Option<DedicatedSize> {
        self.is_dedicated().then(|| DedicatedSize {
            max: self.max_connections,
            min: self.min_connections.unwrap_or(0),
        })
    }

    /// The idle time after which the pool is closed, for `auto_close` pools.
    pub(crate) fn idle_ttl(&self) -> Option<Duration> {
        self.auto_close.then_some(self.ttl).flatten()
    }

    pub(crate) fn database_options(&self) -> DatabaseOptions {
        let mut options = DatabaseOptions::default();
        options.selection_criteria = self
            .read_preference
            .clone()
            .map(SelectionCriteria::ReadPreference);
        options.read_concern.clone_from(&self.read_concern);
        options.write_concern.clone_from(&self.write_concern);
        options
    }

    /// Checks everything that can be checked without I/O; errors name `database` and the field.
    pub fn validate(&self, database: &str) -> Result<()> {
        let err = |field: &'static str, message: String| Error::DbConfig {
            database: database.to_owned(),
            field,
            message,
        };
        crate::floor::name::validate_database_name(database).map_err(redacted_name)?;
        if let Some(uri) = &self.uri {
            if uri.trim().is_empty() {
                return Err(err("uri", "is empty".into()));
            }
            ConnectionString::parse(uri).map_err(|e| err("uri", uri_problem(&e, uri)))?;
        }
        for (field, value) in [("ttl", self.ttl), ("queue_timeout", self.queue_timeout)] {
            if let Some(value) = value {
                within_max_duration(value, |m| err(field, m))?;
            }
        }
        if self.max_connections == Some(0) {
            return Err(err("max_connections", "must be at least 1".into()));
        }
        if let (Some(min), Some(max)) = (self.min_connections, self.max_connections) {
            if min > max {
                return Err(err(
                    "min_connections",
                    format!("{min} is more than max_connections ({max})"),
                ));
            }
        }
        if self.max_concurrent_ops == Some(0) {
            return Err(err("max_concurrent_ops", "must be at least 1".into()));
        }
        match (self.max_concurrent_ops, self.queue_timeout) {
            (_, Some(Duration::ZERO)) => {
                return Err(err("queue_timeout", "must be longer than zero".into()))
            }
            (None, Some(_)) => {
                return Err(err(
                    "queue_timeout",
                    "has no effect without max_concurrent_ops".into(),
                ))
            }
            _ => {}
        }
        match (self.auto_close, self.ttl) {
            (true, None) => return Err(err("ttl", "auto_close needs a ttl".into())),
            (_, Some(Duration::ZERO)) => return Err(err("ttl", "must be longer than zero".into())),
            (false, Some(_)) => {
                return Err(err("ttl", "has no effect without auto_close = true".into()))
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(cfg: DbConfig) -> &'static str {
        match cfg.validate("tenant") {
            Err(Error::DbConfig {
                field, database, ..
            }) => {
                assert_eq!(database, "tenant");
                field
            }
            other => panic!("expected a DbConfig error, got {other:?}"),
        }
    }

    #[test]
    fn conflicting_settings_name_the_field() {
        assert_eq!(field(DbConfig::new().uri("redis://x")), "uri");
        assert_eq!(field(DbConfig::new().uri("")), "uri");
        assert_eq!(field(DbConfig::new().max_connections(0)), "max_connections");
        assert_eq!(
            field(DbConfig::new().max_connections(2).min_connections(3)),
            "min_connections"
        );
        assert_eq!(field(DbConfig::new().auto_close(Duration::ZERO)), "ttl");
        let mut no_ttl = DbConfig::new();
        no_ttl.auto_close = true;
        assert_eq!(field(no_ttl), "ttl");
        let mut ttl_alone = DbConfig::new();
        ttl_alone.ttl = Some(Duration::from_secs(1));
        assert_eq!(field(ttl_alone), "ttl");
        assert_eq!(
            field(DbConfig::new().max_concurrent_ops(0)),
            "max_concurrent_ops"
        );
        assert_eq!(
            field(DbConfig::new().queue_timeout(Duration::from_secs(1))),
            "queue_timeout"
        );
        assert_eq!(
            field(
                DbConfig::new()
                    .max_concurrent_ops(2)
                    .queue_timeout(Duration::ZERO)
            ),
            "queue_timeout"
        );
    }

    #[test]
    fn pool_settings_make_a_pool_dedicated_and_a_uri_alone_does_not() {
        assert!(!DbConfig::new().is_dedicated());
        assert!(!DbConfig::new().uri("mongodb://other").is_dedicated());
        assert!(DbConfig::new().max_connections(3).is_dedicated());
        assert!(DbConfig::new().min_connections(1).is_dedicated());
        assert!(DbConfig::new()
            .auto_close(Duration::from_secs(5))
            .is_dedicated());
    }

    #[test]
    fn deserialises_the_npm_shape() {
        let cfg: DbConfig = toml::from_str(
            r#"
uri = "mongodb://a:pw@h/"
max_connections = 50
auto_close = true
ttl = "5m"
read_concern = { level = "majority" }
"#,
        )
        .unwrap();
        assert_eq!(cfg.max_connections, Some(50));
        assert!(cfg.auto_close);
        assert_eq!(cfg.ttl, Some(Duration::from_secs(300)));
        assert_eq!(cfg.read_concern, Some(ReadConcern::majority()));
        cfg.validate("analytics").unwrap();
        assert!(!format!("{cfg:?}").contains("pw"));
    }
}
