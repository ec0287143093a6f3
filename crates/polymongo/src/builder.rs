//! Making a manager from code.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::features::hooks::{ErrorEvent, PendingHook, PoolEvent};
use crate::features::migrate::Migrations;
use crate::floor::config::{Options, RetryOptions};
use crate::floor::db_config::DbConfig;
use crate::floor::error::{Error, Result};
use crate::poly::PolyMongo;

/// Builds a [`PolyMongo`]. Every setter says its default; [`build`](Self::build) validates them
/// all and names the first wrong field.
#[derive(Clone, Default)]
#[must_use = "a builder does nothing until `build` is awaited"]
pub struct PolyMongoBuilder {
    options: Options,
    /// A database configured twice with different URIs, reported by `build`.
    conflict: Option<String>,
    hooks: Vec<PendingHook>,
    first_use: Option<Migrations>,
}

impl fmt::Debug for PolyMongoBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolyMongoBuilder")
            .field("options", &self.options)
            .field("hooks", &self.hooks.len())
            .finish()
    }
}

impl PolyMongoBuilder {
    /// A builder from [`Options`] (for example read from a file).
    pub fn from_options(options: Options) -> Self {
        Self {
            options,
            conflict: None,
            hooks: Vec::new(),
            first_use: None,
        }
    }

    /// Connection string of the main cluster. Required.
    pub fn uri(mut self, uri: impl Into<String>) -> Self {
        self.options.uri = uri.into();
        self
    }

    /// Database used by [`ModelHandle::default_db`](crate::ModelHandle::default_db). Default:
    /// the database in the URI's path, else `"test"`.
    pub fn default_db(mut self, name: impl Into<String>) -> Self {
        self.options.default_db = Some(name.into());
        self
    }

    /// Most connections of each pool. Default: the URI's `maxPoolSize`, else 10. At least 1.
    pub fn max_pool_size(mut self, size: u32) -> Self {
        self.options.max_pool_size = Some(size);
        self
    }

    /// Connections each pool keeps open while idle. Default 0. At most `max_pool_size`.
    pub fn min_free_connections(mut self, count: u32) -> Self {
        self.options.min_free_connections = count;
        self
    }

    /// Idle connections older than this are closed. Default: never.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.options.idle_timeout = Some(timeout);
        self
    }

    /// `true` (default): connect on first use. `false`: `build` connects the main pool, with
    /// [`retry`](Self::retry), and fails if the cluster does not answer.
    pub fn cold_start(mut self, cold: bool) -> Self {
        self.options.cold_start = cold;
        self
    }

    /// Application name sent to the server. Default: the URI's `appName`, else none. At most
    /// 128 bytes.
    pub fn app_name(mut self, name: impl Into<String>) -> Self {
        self.options.app_name = Some(name.into());
        self
    }

    /// Connect retry: `attempts` in all (at least 1), `interval` after the first failure,
    /// doubling after each further one (at most 30 s). Default 3 attempts from 1 s.
    pub fn retry(mut self, attempts: u32, interval: Duration) -> Self {
        self.options.retry = RetryOptions::new(attempts, interval);
        self
    }

    /// How often clients check their servers; see [`Options::heartbeat_frequency`].
    pub fn heartbeat_frequency(mut self, every: Duration) -> Self {
        self.options.heartbeat_frequency = Some(every);
        self
    }

    /// Connect retry with every setting: see [`RetryOptions`].
    pub fn retry_options(mut self, retry: RetryOptions) -> Self {
        self.options.retry = retry;
        self
    }

    /// How long an operation waits for a suitable server. Default: the driver's 30 s.
    pub fn server_selection_timeout(mut self, timeout: Duration) -> Self {
        self.options.server_selection_timeout = Some(timeout);
        self
    }

    /// How long opening one connection may take. Default: the driver's 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.options.connect_timeout = Some(timeout);
        self
    }

    /// Configures one database (the npm package's `dbSpecific` entry): a dedicated pool, another
    /// cluster, handle options. See [`DbConfig`] for the routing rule. Configuring the same
    /// database again replaces its configuration, unless the URIs differ, which `build`
    /// reports as an error.
    pub fn db(mut self, name: impl Into<String>, config: DbConfig) -> Self {
        let name = name.into();
        if let Some(old) = self.options.databases.get(&name) {
            if old.uri != config.uri && self.conflict.is_none() {
                self.conflict = Some(name.clone());
            }
        }
        self.options.databases.insert(name, config);
        self
    }

    /// Most dedicated pools open at once; past it the least recently used idle one is closed.
    /// Default 64. At least 1.
    pub fn max_dedicated_pools(mut self, max: usize) -> Self {
        self.options.max_dedicated_pools = max;
        self
    }

    /// Where per-database usage figures come from (default: operations run through
    /// [`DbHandle::run`](crate::DbHandle::run)); see [`Options::usage_analytics`] for the cost
    /// of each.
    pub fn usage_analytics(mut self, source: crate::UsageAnalytics) -> Self {
        self.options.usage_analytics = source;
        self
    }

    /// Bound on waiting for a busy pool's connection in [`DbHandle::run`](crate::DbHandle::run);
    /// see [`Options::wait_queue_timeout`].
    pub fn wait_queue_timeout(mut self, timeout: Duration) -> Self {
        self.options.wait_queue_timeout = Some(timeout);
        self
    }

    /// Most databases ranked by [`Stats::top_databases`](crate::Stats::top_databases)
    /// (default 1 000); see [`Options::max_tracked_databases`].
    pub fn max_tracked_databases(mut self, max: usize) -> Self {
        self.options.max_tracked_databases = max;
        self
    }

    /// How long a database nothing uses stays cached (default 5 minutes); see
    /// [`Options::database_idle_timeout`].
    pub fn database_idle_timeout(mut self, timeout: Duration) -> Self {
        self.options.database_idle_timeout = timeout;
        self
    }

    /// Most databases cached at once (default 100 000); see
    /// [`Options::max_cached_databases`].
    pub fn max_cached_databases(mut self, max: usize) -> Self {
        self.options.max_cached_databases = max;
        self
    }

    /// How long a pool closed for idleness lets work the library cannot see finish (default
    /// 30 s); see [`Options::idle_close_grace`].
    pub fn idle_close_grace(mut self, grace: Duration) -> Self {
        self.options.idle_close_grace = grace;
        self
    }

    /// Registers an [`on_db_connect`](PolyMongo::on_db_connect) hook before anything can
    /// connect, so it also sees the connections `build` makes (`cold_start(false)`,
    /// `DbConfig::cold_start(false)`). Builder hooks stay for the manager's life.
    pub fn on_db_connect(mut self, hook: impl Fn(&PoolEvent) + Send + Sync + 'static) -> Self {
        self.hooks.push(PendingHook::Pool {
            connect: true,
            only: None,
            hook: Arc::new(hook),
        });
        self
    }

    /// [`on_db_disconnect`](PolyMongo::on_db_disconnect), registered at build.
    pub fn on_db_disconnect(mut self, hook: impl Fn(&PoolEvent) + Send + Sync + 'static) -> Self {
        self.hooks.push(PendingHook::Pool {
            connect: false,
            only: None,
            hook: Arc::new(hook),
        });
        self
    }

    /// [`on_these_db_connect`](PolyMongo::on_these_db_connect), registered at build.
    pub fn on_these_db_connect<S: AsRef<str>>(
        mut self,
        names: &[S],
        hook: impl Fn(&PoolEvent) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.push(PendingHook::Pool {
            connect: true,
            only: Some(names.iter().map(|n| n.as_ref().to_owned()).collect()),
            hook: Arc::new(hook),
        });
        self
    }

    /// [`on_error`](PolyMongo::on_error), registered at build (sees `build`'s own failures).
    pub fn on_error(mut self, hook: impl Fn(&ErrorEvent) + Send + Sync + 'static) -> Self {
        self.hooks.push(PendingHook::Error(Arc::new(hook)));
        self
    }

    /// [`on_tenant_change`](PolyMongo::on_tenant_change), registered at build.
    pub fn on_tenant_change(
        mut self,
        hook: impl Fn(&crate::hooks::TenantEvent) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.push(PendingHook::Tenant(Arc::new(hook)));
        self
    }

    /// A named cluster tenants can be placed on (see [`tenants`](crate::tenants)).
    pub fn cluster(mut self, name: impl Into<String>, config: crate::ClusterConfig) -> Self {
        self.options.clusters.insert(name.into(), config);
        self
    }

    /// The tenant directory (see [`tenants`](crate::tenants)).
    pub fn directory(mut self, config: crate::DirectoryConfig) -> Self {
        self.options.directory = Some(config);
        self
    }

    /// Lazy migrations: the first [`acquire`](crate::ModelHandle::acquire) of each database
    /// (per registry entry) brings it to the latest version of `migrations` before handing
    /// out its handle. An up-to-date database costs one read of its ledger on its first
    /// acquire and nothing on later ones; concurrent first users wait for one run, runners
    /// of other processes for the database's lock (up to
    /// [`DEFAULT_LOCK_WAIT`](crate::migrate::DEFAULT_LOCK_WAIT)). A failing step fails the acquire with
    /// [`MigrationError::Failed`](crate::migrate::MigrationError::Failed); the next first use
    /// tries again. [`db`](crate::ModelHandle::db), which never does I/O, does not migrate.
    /// See [`migrate`](crate::migrate).
    pub fn migrate_on_first_use(mut self, migrations: Migrations) -> Self {
        self.first_use = Some(migrations);
        self
    }

    /// The options as set so far.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Validates the options and makes the manager.
    ///
    /// Async because a `mongodb+srv://` URI is resolved here (DNS only). With `cold_start`
    /// (the default) no connection to MongoDB is opened; otherwise the main pool is connected
    /// and pinged, with retries.
    ///
    /// # Errors
    /// [`Error::Config`](crate::Error::Config) naming the wrong field,
    /// [`Error::NoRuntime`](crate::Error::NoRuntime) outside tokio, and with `cold_start(false)`
    /// the connection error of the last attempt.
    pub async fn build(self) -> Result<PolyMongo> {
        if let Some(database) = self.conflict {
            return Err(Error::DbConfig {
                database,
                field: "uri",
                message: "is configured twice with different URIs".into(),
            });
        }
        PolyMongo::from_options(self.options, self.hooks, self.first_use).await
    }
}
