//! The scale API: configuring databases at run time (the npm package's `scale.setDB` and
//! `scale.connectDB`), and the one place a [`DbConfig`] becomes a route.

use std::sync::Arc;

use crate::features::ping::ping;
use crate::floor::config::Options;
use crate::floor::db_config::DbConfig;
use crate::floor::error::{Error, Result};
use crate::pool::cluster::{ClusterPool, PoolEnv, PoolKind};
use crate::registry::routes::Route;
use crate::registry::Registry;

/// Run-time configuration of databases: [`PolyMongo::scale`](crate::PolyMongo::scale).
#[derive(Debug, Clone, Copy)]
pub struct Scale<'a> {
    registry: &'a Registry,
    options: &'a Options,
    env: &'a PoolEnv,
}

impl<'a> Scale<'a> {
    pub(crate) fn new(registry: &'a Registry, options: &'a Options, env: &'a PoolEnv) -> Self {
        Self {
            registry,
            options,
            env,
        }
    }

    /// Configures each database in `names` with `config`, before or after its first use.
    ///
    /// Every name and the configuration are checked before anything changes. Handles taken
    /// earlier keep working on the pool they were made from; the next `.db(name)` uses the new
    /// configuration, with a fresh registry entry (so declared indexes are ensured again on
    /// the new route). Managed change streams of a re-configured database end (their consumers
    /// see the end and can watch again on the new route). A dedicated pool that stays
    /// dedicated on the same cluster keeps its client when its size is unchanged; a new size
    /// closes the open client (gracefully, in the background) and the next use opens one of
    /// the new size.
    /// With `cold_start(false)` the databases' pools are connected and pinged now.
    ///
    /// Async because a `mongodb+srv://` URI is resolved here.
    ///
    /// # Errors
    /// [`Error::DbConfig`] naming the database and field, [`Error::InvalidName`],
    /// [`Error::Closed`], and with `cold_start(false)` the connection error.
    pub async fn set_db<S: AsRef<str>>(&self, names: &[S], config: DbConfig) -> Result<()> {
        for name in names {
            config.validate(name.as_ref())?;
        }
        for name in names {
            self.apply(name.as_ref(), &config).await?;
        }
        if config.cold_start == Some(false) {
            self.connect(names).await?;
        }
        Ok(())
    }

    /// [`set_db`](Self::set_db), then connects each database's pool and pings it (with the
    /// manager's retry), so connection problems surface now. The configuration stays applied
    /// when the connection fails: the next use tries again.
    ///
    /// # Errors
    /// As `set_db`, plus [`Error::Connection`] for a cluster that does not answer.
    pub async fn connect_db<S: AsRef<str>>(&self, names: &[S], config: DbConfig) -> Result<()> {
        self.set_db(names, config.cold_start(true)).await?;
        self.connect(names).await
    }

    async fn connect<S: AsRef<str>>(&self, names: &[S]) -> Result<()> {
        for name in names {
            ping(self.registry, self.options.retry, name.as_ref()).await?;
        }
        Ok(())
    }

    /// Turns `config` into the route of `name`: picks or makes its pool by the routing rule
    /// (see [`DbConfig`]) and installs it.
    pub(crate) async fn apply(&self, name: &str, config: &DbConfig) -> Result<()> {
        config.validate(name)?;
        let registry = self.registry;
        if registry.is_closed() {
            return Err(Error::Closed);
        }
        let router = registry.routes();
        let options = self.options;
        let cluster_uri = config.uri.as_deref().unwrap_or(&options.uri);
        let db_err = |(field, message): (&'static str, String)| Error::DbConfig {
            database: name.to_owned(),
            field,
            message,
        };
        let pool = match config.dedicated_size() {
            Some(size) => {
                let client_options = options
                    .client_options(cluster_uri, Some(size))
                    .await
                    .map_err(db_err)?;
                match router.route(name) {
                    Some(old)
                        if old.pool.kind() == PoolKind::Dedicated
                            && old.config.uri.as_deref().unwrap_or(&options.uri) == cluster_uri =>
                    {
                        if let Some(client) =
                            old.pool.reconfigure(client_options, config.idle_ttl())
                        {
                            router.retire(&old.pool, client);
                        }
                        Arc::clone(&old.pool)
                    }
                    _ => Arc::new(ClusterPool::new(
                        format!("{} (database {name})", router.cluster_label(cluster_uri)),
                        PoolKind::Dedicated,
                        client_options,
                        self.env,
                        config.idle_ttl(),
                    )),
                }
            }
            None => match router.shared_pool(cluster_uri) {
                Some(pool) => pool,
                None => {
                    let client_options = options
                        .client_options(cluster_uri, None)
                        .await
                        .map_err(db_err)?;
                    let pool = ClusterPool::new(
                        router.cluster_label(cluster_uri),
                        PoolKind::Shared,
                        client_options,
                        self.env,
                        None,
                    );
                    router.add_shared_pool(cluster_uri, Arc::new(pool))
                }
            },
        };
        let ended = registry.install(name, Route::new(pool, config.clone()));
        if ended > 0 {
            tracing::debug!(
                database = name,
                streams = ended,
                "re-routed database's change streams ended"
            );
        }
        Ok(())
    }
}
