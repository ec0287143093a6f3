//! Named clusters and the tenant directory, as options (code or TOML).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use mongodb::options::ConnectionString;
use serde::{Deserialize, Serialize};

use crate::floor::config::{redacted_name, within_max_duration};
use crate::floor::error::{Error, Result};
use crate::floor::name::validate_database_name;
use crate::floor::redact::redact_uri;

/// The name that stands for the main cluster (the `uri` option) wherever a cluster is named.
pub const MAIN_CLUSTER: &str = "main";

/// Default database of the directory on its cluster.
pub const DEFAULT_DIRECTORY_DATABASE: &str = "polymongo_directory";

/// Default time between two reads of the directory's changes (see
/// [`DirectoryConfig::refresh`]).
pub const DEFAULT_DIRECTORY_REFRESH: Duration = Duration::from_secs(1);

/// Shortest directory refresh accepted.
pub const MIN_DIRECTORY_REFRESH: Duration = Duration::from_millis(10);

/// Default longest time an instance serves cached tenants without a successful read of the
/// directory's changes (see [`DirectoryConfig::max_staleness`]).
pub const DEFAULT_MAX_STALENESS: Duration = Duration::from_secs(60);

/// A named cluster tenants can be placed on.
#[derive(Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Its connection string. Required.
    pub uri: String,
    /// Most tenants placed on it; `None`: no bound. At least 1.
    pub capacity: Option<u64>,
    /// Relative share of new tenants under
    /// [`Placement::Weighted`](crate::tenants::Placement::Weighted); default 1.
    pub weight: Option<u32>,
    /// Its pool's size: at most this many connections (default: the `max_pool_size`
    /// option). Applies when the cluster makes its own pool; a cluster whose URI is the
    /// main one's (or an earlier cluster's) shares that pool and its size.
    pub max_connections: Option<u32>,
    /// Connections its pool keeps open (default 0), at most `max_connections`.
    pub min_connections: Option<u32>,
}

impl ClusterConfig {
    /// A cluster at `uri`, without capacity bound.
    pub fn new(uri: impl Into<String>) -> Self {
        Self {
            uri: uri.into(),
            ..Self::default()
        }
    }

    /// Most tenants placed on it.
    pub fn capacity(mut self, tenants: u64) -> Self {
        self.capacity = Some(tenants);
        self
    }

    /// Its weight for weighted placement.
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = Some(weight);
        self
    }

    /// Its pool's size bounds.
    pub fn connections(mut self, min: u32, max: u32) -> Self {
        self.min_connections = Some(min);
        self.max_connections = Some(max);
        self
    }
}

impl fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("uri", &redact_uri(&self.uri))
            .field("capacity", &self.capacity)
            .field("weight", &self.weight)
            .field("max_connections", &self.max_connections)
            .field("min_connections", &self.min_connections)
            .finish()
    }
}

/// Where the tenant directory lives and how each instance keeps its copy current.
///
/// `Debug` shows the names with any credentials redacted (a URI given for `cluster` by
/// mistake keeps its password hidden).
#[derive(Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct DirectoryConfig {
    /// The cluster holding it: a name of the `clusters` option, or `"main"`.
    pub cluster: String,
    /// Its database there. Default [`DEFAULT_DIRECTORY_DATABASE`].
    pub database: String,
    /// Put in front of a tenant id to make its database name (`""`: the id is the name).
    pub database_prefix: String,
    /// Time between two reads of the directory's changes: a change made by one instance
    /// reaches the others within this plus one read (see [`tenants`](crate::tenants)).
    /// Default 1 s; at least 10 ms.
    #[serde(with = "humantime_serde")]
    pub refresh: Duration,
    /// Also watch the directory with a change stream where the control cluster has them, so
    /// changes arrive without waiting for the next refresh. Default `true`; `false`:
    /// polling only.
    pub watch: bool,
    /// Longest an instance routes tenants by its cached entries when it cannot read the
    /// directory's changes (the control cluster unreachable, slow, partitioned): past it,
    /// a cached tenant is refused with [`TenantError::Stale`](crate::tenants::TenantError::Stale)
    /// until a read succeeds, so a change made meanwhile (a suspension) is never ignored
    /// for longer. `None`: serve cached tenants for as long as the directory is unreachable
    /// (availability first; changes wait for it to answer). Default 60 s; at least twice
    /// `refresh`.
    #[serde(with = "humantime_serde")]
    pub max_staleness: Option<Duration>,
}

impl fmt::Debug for DirectoryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirectoryConfig")
            .field("cluster", &redact_uri(&self.cluster))
            .field("database", &redact_uri(&self.database))
            .field("database_prefix", &redact_uri(&self.database_prefix))
            .field("refresh", &self.refresh)
            .field("watch", &self.watch)
            .field("max_staleness", &self.max_staleness)
            .finish()
    }
}

impl Default for DirectoryConfig {
    fn default() -> Self {
        Self {
            cluster: MAIN_CLUSTER.to_owned(),
            database: DEFAULT_DIRECTORY_DATABASE.to_owned(),
            database_prefix: String::new(),
            refresh: DEFAULT_DIRECTORY_REFRESH,
            watch: true,
            max_staleness: Some(DEFAULT_MAX_STALENESS),
        }
    }
}

impl DirectoryConfig {
    /// A directory on cluster `cluster` (a name of the `clusters` option, or `"main"`).
    pub fn on(cluster: impl Into<String>) -> Self {
        Self {
            cluster: cluster.into(),
            ..Self::default()
        }
    }

    /// Its database.
    pub fn database(mut self, name: impl Into<String>) -> Self {
        self.database = name.into();
        self
    }

    /// The prefix of tenant database names.
    pub fn database_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.database_prefix = prefix.into();
        self
    }

    /// The refresh interval.
    pub fn refresh(mut self, every: Duration) -> Self {
        self.refresh = every;
        self
    }

    /// Whether to watch the directory with a change stream as well as polling it.
    pub fn watch(mut self, watch: bool) -> Self {
        self.watch = watch;
        self
    }

    /// The longest cached tenants are served without a successful read of the changes
    /// (`None`: no bound).
    pub fn max_staleness(mut self, bound: Option<Duration>) -> Self {
        self.max_staleness = bound;
        self
    }
}

fn config(field: &'static str, message: impl Into<String>) -> Error {
    Error::Config {
        field,
        message: message.into(),
    }
}

/// Checks the clusters and the directory. Errors name the field and the cluster.
pub(crate) fn validate(
    clusters: &BTreeMap<String, ClusterConfig>,
    directory: Option<&DirectoryConfig>,
) -> Result<()> {
    for (name, c) in clusters {
        if name == MAIN_CLUSTER {
            return Err(config(
                "clusters",
                format!("{MAIN_CLUSTER:?} names the main cluster (the `uri` option); choose another name"),
            ));
        }
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(config(
                "clusters",
                format!(
                    "cluster name {:?}: use letters, digits, '_' and '-'",
                    redact_uri(name)
                ),
            ));
        }
        ConnectionString::parse(&c.uri).map_err(|_| {
            config(
                "clusters",
                format!(
                    "cluster {name:?}: uri {} is not a connection string",
                    redact_uri(&c.uri)
                ),
            )
        })?;
        if c.capacity == Some(0) {
            return Err(config(
                "clusters",
                format!("cluster {name:?}: capacity must be at least 1"),
            ));
        }
        if c.max_connections == Some(0) {
            return Err(config(
                "clusters",
                format!("cluster {name:?}: max_connections must be at least 1"),
            ));
        }
        if let (Some(min), Some(max)) = (c.min_connections, c.max_connections) {
            if min > max {
                return Err(config(
                    "clusters",
                    format!("cluster {name:?}: min_connections {min} is more than max_connections {max}"),
                ));
            }
        }
        if c.weight == Some(0) {
            return Err(config(
                "clusters",
                format!("cluster {name:?}: weight must be at least 1"),
            ));
        }
    }
    let Some(d) = directory else {
        return Ok(());
    };
    if d.cluster != MAIN_CLUSTER && !clusters.contains_key(&d.cluster) {
        return Err(config(
            "directory.cluster",
            format!(
                "{:?} is not a cluster of the `clusters` option (nor \"main\")",
                redact_uri(&d.cluster)
            ),
        ));
    }
    validate_database_name(&d.database)
        .map_err(|e| config("directory.database", redacted_name(e).to_string()))?;
    if !d.database_prefix.is_empty() {
        validate_database_name(&d.database_prefix)
            .map_err(|e| config("directory.database_prefix", redacted_name(e).to_string()))?;
    }
    within_max_duration(d.refresh, |m| config("directory.refresh", m))?;
    if d.refresh < MIN_DIRECTORY_REFRESH {
        return Err(config(
            "directory.refresh",
            format!("must be at least {MIN_DIRECTORY_REFRESH:?}"),
        ));
    }
    if let Some(bound) = d.max_staleness {
        within_max_duration(bound, |m| config("directory.max_staleness", m))?;
        if bound < d.refresh.saturating_mul(2) {
            return Err(config(
                "directory.max_staleness",
                format!(
                    "{bound:?} is less than twice the refresh ({:?}): every instance would \
                     refuse its tenants between two reads",
                    d.refresh
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::floor::config::Options;

    #[test]
    fn clusters_and_the_directory_come_from_toml_and_are_checked() {
        let options: Options = toml::from_str(
            r#"
            uri = "mongodb://control:27017"
            [clusters.cell_a]
            uri = "mongodb://a:27017"
            capacity = 5000
            [clusters.cell_b]
            uri = "mongodb://b:27017"
            weight = 2
            max_connections = 40
            min_connections = 2
            [directory]
            cluster = "main"
            database_prefix = "t_"
            refresh = "500ms"
            max_staleness = "30s"
            "#,
        )
        .expect("valid TOML");
        assert_eq!(options.clusters["cell_a"].capacity, Some(5000));
        let d = options.directory.as_ref().expect("directory");
        assert_eq!(d.refresh, std::time::Duration::from_millis(500));
        assert_eq!(d.database, super::DEFAULT_DIRECTORY_DATABASE);
        assert_eq!(d.max_staleness, Some(std::time::Duration::from_secs(30)));
        assert_eq!(
            (
                options.clusters["cell_b"].min_connections,
                options.clusters["cell_b"].max_connections
            ),
            (Some(2), Some(40))
        );
        assert!(options.validate().is_ok());

        for (edit, named) in [
            (
                (|o: &mut Options| {
                    if let Some(c) = o.clusters.get_mut("cell_b") {
                        c.min_connections = Some(41);
                    }
                }) as fn(&mut Options),
                "min_connections 41 is more than max_connections 40",
            ),
            (
                |o: &mut Options| {
                    if let Some(c) = o.clusters.get_mut("cell_a") {
                        c.max_connections = Some(0);
                    }
                },
                "max_connections must be at least 1",
            ),
            (
                |o: &mut Options| {
                    if let Some(d) = o.directory.as_mut() {
                        d.max_staleness = Some(std::time::Duration::from_millis(900));
                    }
                },
                "less than twice the refresh",
            ),
        ] {
            let mut bad = options.clone();
            edit(&mut bad);
            let e = bad.validate().unwrap_err().to_string();
            assert!(e.contains(named), "{e}");
        }

        let mut bad = options.clone();
        if let Some(d) = bad.directory.as_mut() {
            d.cluster = "cell_z".into();
        }
        assert!(bad.validate().unwrap_err().to_string().contains("cell_z"));
        let mut bad = options.clone();
        if let Some(c) = bad.clusters.get_mut("cell_b") {
            c.capacity = Some(0);
        }
        assert!(bad.validate().unwrap_err().to_string().contains("cell_b"));
        let typo: Result<Options, _> = toml::from_str(
            "uri = \"mongodb://x\"\n[clusters.a]\nuri = \"mongodb://a\"\ncapacty = 3\n",
        );
        assert!(typo.is_err(), "unknown fields are refused");
    }
}
