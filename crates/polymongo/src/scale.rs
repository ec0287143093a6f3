//! The scale API: configuring databases at run time (the npm package's `scale.setDB` and
//! `scale.connectDB`), and the one place a [`DbConfig`] becomes a route.

use std::sync::Arc;

use crate::db_config::DbConfig;
use crate::error::{Error, Result};
use crate::poly::PolyMongo;
use crate::pool::PoolKind;
use crate::redact::redact_uri;
use crate::routing::Route;

/// Run-time configuration of databases: [`PolyMongo::scale`].
#[derive(Debug, Clone, Copy)]
pub struct Scale<'a> {
    poly: &'a PolyMongo,
}

impl<'a> Scale<'a> {
    pub(crate) fn new(poly: &'a PolyMongo) -> Self {
        Self { poly }
    }

    /// Configures each database in `names` with `config`, before or after its first use.
    ///
    /// Every name and the configuration are checked before anything changes. Handles taken
    /// earlier keep working on the pool they were made from; the next `.db(name)` uses the new
    /// configuration. A dedicated pool that stays dedicated on the same cluster keeps its open
    /// client, and the new pool settings apply when it next opens (after an idle close).
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
            apply(self.poly, name.as_ref(), &config).await?;
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
            self.poly.ping(name.as_ref()).await?;
        }
        Ok(())
    }
}

/// Turns `config` into the route of `name`: picks or makes its pool by the routing rule (see
/// [`DbConfig`]) and installs it.
pub(crate) async fn apply(poly: &PolyMongo, name: &str, config: &DbConfig) -> Result<()> {
    config.validate(name)?;
    if poly.is_closed() {
        return Err(Error::Closed);
    }
    let router = poly.router();
    let options = poly.options();
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
                    old.pool.reconfigure(client_options, config.idle_ttl());
                    Arc::clone(&old.pool)
                }
                _ => Arc::new(poly.new_pool(
                    format!("{} (database {name})", redact_uri(cluster_uri)),
                    PoolKind::Dedicated,
                    client_options,
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
                let pool = poly.new_pool(
                    redact_uri(cluster_uri),
                    PoolKind::Shared,
                    client_options,
                    None,
                );
                router.add_shared_pool(cluster_uri, Arc::new(pool))
            }
        },
    };
    router.install(name, Route::new(pool, config.clone()));
    Ok(())
}
