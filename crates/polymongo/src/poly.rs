//! The facade: one value that owns the layers, starts them and ends them.
//!
//! [`PolyMongo`] builds the pools layer (the main cluster's pool), the registry over it, the
//! housekeeper and the hook dispatcher, and hands out model handles on the registry. Its
//! methods are thin: each feature lives in its own module of `features/`.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use mongodb::bson::Document;
use mongodb::change_stream::event::ChangeStreamEvent;
use mongodb::options::ChangeStreamOptions;
use mongodb::{Client, Database};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};

use crate::builder::PolyMongoBuilder;
use crate::features::bulk::Bulk;
use crate::features::closing::{CloseReport, Closer};
use crate::features::hooks::{self, ErrorEvent, HookHandle, Hooks, PendingHook, PoolEvent};
use crate::features::migrate::counters::Counters;
use crate::features::migrate::{
    DbMigrationReport, Fleet, MigrationStats, MigrationStatus, Migrations, Migrator, OnFirstUse,
};
use crate::features::ping;
use crate::features::scale::Scale;
use crate::features::stats::Stats;
use crate::features::tenants::{self, Directory, TenantRoute, Tenants};
use crate::features::txn::Transaction;
use crate::features::watch::{self as streams, ManagedStream};
use crate::floor::config::Options;
use crate::floor::error::{Error, Result};
use crate::handle::model::{Model, ModelHandle};
use crate::handle::slot::ConnectionSlot;
use crate::handle::tenant_route::TenantRouter;
use crate::pool::cluster::{ClusterPool, ConnectionState, PoolEnv, PoolKind};
use crate::pool::retiring::Retiring;
use crate::registry::routes::Routes;
use crate::registry::usage::{Usage, UsageAnalytics};
use crate::registry::{eviction, Limits, Registry};

/// Manages MongoDB connections for an application that uses many databases.
///
/// One connection pool per cluster is shared by every database routed to it, so using a new
/// database costs a registry entry, not a connection. Cheap to clone (an `Arc`); clones share
/// everything.
///
/// Bound to the tokio runtime it was built on, like the driver's `Client`.
#[derive(Clone)]
pub struct PolyMongo {
    inner: Arc<Inner>,
}

struct Inner {
    options: Options,
    default_db: Arc<str>,
    registry: Arc<Registry>,
    env: PoolEnv,
    hooks: Arc<Hooks>,
    closer: Arc<Closer>,
    stop_housekeeper: watch::Sender<bool>,
    migrations: Arc<Counters>,
    /// The directory's operations, when one is configured (made once: routing a tenant
    /// clones nothing).
    tenants: Option<Tenants>,
    /// The same directory as model handles see it (`model.tenant(id)`), made once.
    router: Option<Arc<dyn TenantRouter>>,
}

impl fmt::Debug for PolyMongo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolyMongo")
            .field("cluster", &self.inner.registry.routes().main_pool().label())
            .field("default_db", &self.inner.default_db)
            .field("state", &self.connection_state())
            .field("databases", &self.inner.registry.len())
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl PolyMongo {
    /// Starts a [`PolyMongoBuilder`].
    pub fn builder() -> PolyMongoBuilder {
        PolyMongoBuilder::default()
    }

    pub(crate) async fn from_options(
        options: Options,
        hooks: Vec<PendingHook>,
        first_use: Option<Migrations>,
    ) -> Result<Self> {
        let runtime = Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let resolved = options.resolve().await?;
        for (name, config) in &options.databases {
            config.validate(name)?;
        }
        let usage = (options.usage_analytics != UsageAnalytics::Off).then(|| {
            Arc::new(Usage::new(
                options.max_tracked_databases,
                options.usage_analytics,
            ))
        });
        // The command handler is given to every client the pools make, and the pools exist
        // before the registry it reports to: it finds the registry through this cell.
        let registry_cell: Arc<OnceLock<std::sync::Weak<Registry>>> = Arc::default();
        let observer = usage
            .as_ref()
            .and_then(|u| Registry::command_observer(u, Arc::clone(&registry_cell)));
        let (command_handler, connection_returned) = match observer {
            Some((h, r)) => (Some(h), Some(r)),
            None => (None, None),
        };
        let (signals, signal_rx) = mpsc::unbounded_channel();
        let env = PoolEnv {
            runtime: runtime.clone(),
            live_clients: Arc::new(AtomicUsize::new(0)),
            signals,
            wait_queue_timeout: options.wait_queue_timeout,
            idle_close_grace: options.idle_close_grace,
            command_handler,
            connection_returned,
        };
        let main = Arc::new(ClusterPool::new(
            resolved.cluster_label,
            PoolKind::Shared,
            resolved.client_options,
            &env,
            None,
        ));
        let routes = Routes::new(
            main,
            options.uri.clone(),
            options.max_dedicated_pools,
            Arc::new(Retiring::new(runtime.clone())),
        );
        let limits = Limits {
            idle_timeout: options.database_idle_timeout,
            max_cached: options.max_cached_databases,
        };
        let registry = Arc::new(Registry::new(routes, limits, usage));
        let _ = registry_cell.set(Arc::downgrade(&registry));
        let migration_counters = Arc::new(Counters::default());
        let directory = Directory::build(&options, &env, &registry).await?;
        if let Some(migrations) = first_use.clone() {
            let settings = Migrator::new(&registry, &migration_counters).settings();
            registry.set_first_use(Arc::new(OnFirstUse::new(
                migrations,
                settings,
                Arc::clone(&migration_counters),
            )));
        }
        let (stop_housekeeper, stop) = watch::channel(false);
        if let Some(dir) = &directory {
            tenants::spawn_refresher(
                &runtime,
                Arc::clone(dir),
                Arc::downgrade(&registry),
                stop_housekeeper.subscribe(),
            );
            if options.directory.as_ref().is_some_and(|d| d.watch) {
                tenants::spawn_watcher(
                    &runtime,
                    Arc::clone(dir),
                    Arc::downgrade(&registry),
                    stop_housekeeper.subscribe(),
                );
            }
        }
        eviction::spawn(
            &runtime,
            Arc::downgrade(&registry),
            limits.idle_timeout,
            stop,
        );
        let hook_registry = Arc::new(Hooks::default());
        hook_registry.add_pending(hooks);
        if let Some(dir) = &directory {
            dir.set_events(crate::features::hooks::spawn_tenant_events(
                &runtime,
                &hook_registry,
            ));
        }
        hooks::spawn(
            &runtime,
            Arc::clone(&hook_registry),
            Arc::downgrade(&registry),
            signal_rx,
        );
        let tenants = directory.map(|dir| {
            Tenants::new(
                dir,
                Arc::clone(&registry),
                Arc::clone(&migration_counters),
                first_use,
            )
        });
        let router = tenants
            .clone()
            .map(|t| Arc::new(t) as Arc<dyn TenantRouter>);
        let poly = PolyMongo {
            inner: Arc::new(Inner {
                default_db: resolved.default_db.into(),
                registry,
                env,
                hooks: hook_registry,
                closer: Arc::new(Closer::new()),
                stop_housekeeper,
                migrations: migration_counters,
                tenants,
                router,
                options,
            }),
        };
        for (name, config) in &poly.inner.options.databases {
            poly.scale().apply(name, config).await?;
        }
        if !poly.inner.options.cold_start {
            poly.connect().await?;
        }
        for (name, config) in &poly.inner.options.databases {
            if config.cold_start == Some(false) {
                poly.ping(name).await?;
            }
        }
        Ok(poly)
    }

    /// Run-time configuration of databases: dedicated pools, other clusters, handle options.
    pub fn scale(&self) -> Scale<'_> {
        Scale::new(&self.inner.registry, &self.inner.options, &self.inner.env)
    }

    /// Calls `hook` each time a pool connects (its first usable server is seen after being
    /// closed or unreachable). See [`hooks`](crate::hooks) for how hooks run. Register hooks
    /// before the first use; to see the connections `build` itself makes (`cold_start(false)`),
    /// register on the builder instead ([`PolyMongoBuilder::on_db_connect`]).
    pub fn on_db_connect(&self, hook: impl Fn(&PoolEvent) + Send + Sync + 'static) -> HookHandle {
        self.inner.hooks.add_pool_hook(true, None, Arc::new(hook))
    }

    /// Calls `hook` each time a pool disconnects (closed, or its last server lost).
    pub fn on_db_disconnect(
        &self,
        hook: impl Fn(&PoolEvent) + Send + Sync + 'static,
    ) -> HookHandle {
        self.inner.hooks.add_pool_hook(false, None, Arc::new(hook))
    }

    /// Like [`on_db_connect`](Self::on_db_connect), only for pools serving one of `names`;
    /// the event lists those of `names` the pool serves.
    pub fn on_these_db_connect<S: AsRef<str>>(
        &self,
        names: &[S],
        hook: impl Fn(&PoolEvent) + Send + Sync + 'static,
    ) -> HookHandle {
        let only = names.iter().map(|n| n.as_ref().to_owned()).collect();
        self.inner
            .hooks
            .add_pool_hook(true, Some(only), Arc::new(hook))
    }

    /// Like [`on_db_disconnect`](Self::on_db_disconnect), only for pools serving one of
    /// `names`.
    pub fn on_these_db_disconnect<S: AsRef<str>>(
        &self,
        names: &[S],
        hook: impl Fn(&PoolEvent) + Send + Sync + 'static,
    ) -> HookHandle {
        let only = names.iter().map(|n| n.as_ref().to_owned()).collect();
        self.inner
            .hooks
            .add_pool_hook(false, Some(only), Arc::new(hook))
    }

    /// Calls `hook` when a server of a pool becomes unreachable and when `connect`/`ping` fail.
    pub fn on_error(&self, hook: impl Fn(&ErrorEvent) + Send + Sync + 'static) -> HookHandle {
        self.inner.hooks.add_error_hook(Arc::new(hook))
    }

    /// Calls `hook` with each change of a tenant's directory entry this instance reads
    /// (suspensions, archives, moves made by any instance), after its first read of the
    /// directory; [`TenantEvent::invalidated`](crate::hooks::TenantEvent::invalidated) says
    /// whether it had the tenant cached. Hooks run on a task of their own, in the order
    /// the changes were read, never holding up the reads; see
    /// [`TENANT_EVENT_QUEUE`](crate::hooks::TENANT_EVENT_QUEUE) for a hook that falls behind.
    /// Without a directory the hook is registered and never called.
    pub fn on_tenant_change(
        &self,
        hook: impl Fn(&crate::hooks::TenantEvent) + Send + Sync + 'static,
    ) -> HookHandle {
        self.inner.hooks.add_tenant_hook(Arc::new(hook))
    }

    /// Pool figures and database statistics.
    pub fn stats(&self) -> Stats<'_> {
        Stats::new(
            &self.inner.registry,
            self.live_clients(),
            &self.inner.default_db,
        )
    }

    /// Driver clients (pools) of this manager that are open or still shutting down.
    pub fn live_clients(&self) -> usize {
        self.inner.env.live_clients.load(Ordering::Acquire)
    }

    /// Dedicated pools with a client open now (at most `max_dedicated_pools`, unless every one
    /// of them was in use when another had to open).
    pub fn open_dedicated_pools(&self) -> usize {
        self.inner.registry.routes().open_dedicated()
    }

    /// Databases cached now (each with its registry entry).
    pub fn cached_databases(&self) -> usize {
        self.inner.registry.len()
    }

    /// The options the manager was built with (`Debug` redacts the password).
    pub fn options(&self) -> &Options {
        &self.inner.options
    }

    /// Name of the default database.
    pub fn default_db_name(&self) -> &str {
        &self.inner.default_db
    }

    /// A typed model on every database. Cheap: a model's state on a database (its collection
    /// handle, its indexes ensured) lives in that database's registry entry.
    pub fn model<T: Model>(&self) -> ModelHandle<T> {
        ModelHandle::new(
            Arc::clone(&self.inner.registry),
            Arc::clone(&self.inner.default_db),
            self.inner.router.clone(),
        )
    }

    /// The npm package's name for [`model`](Self::model).
    pub fn wrap_model<T: Model>(&self) -> ModelHandle<T> {
        self.model::<T>()
    }

    /// The driver's `Database` handle for `name`, on the pool it is routed to.
    ///
    /// A raw handle is not counted as use of a dedicated `auto_close` pool: that pool may close
    /// for idleness while the handle is kept, and the handle then fails. Model handles
    /// ([`model`](Self::model)) are counted.
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::Closed`].
    pub fn database(&self, name: &str) -> Result<Database> {
        Ok(self.inner.registry.lease(name)?.entry.database.clone())
    }

    /// A [`Migrator`]: applies versioned migrations to one database at a time under its
    /// ledger and lock, with the lock's time to live and wait as options.
    pub fn migrator(&self) -> Migrator<'_> {
        Migrator::new(&self.inner.registry, &self.inner.migrations)
    }

    /// Migration figures since the manager was built: versions applied, rolled back and
    /// failed (per version and in total), fleet runs in progress and the databases they
    /// finished. Synchronous, no round trip.
    pub fn migration_stats(&self) -> MigrationStats {
        self.inner.migrations.snapshot()
    }

    /// The tenant directory's operations: create, get, suspend, resume, route.
    ///
    /// # Errors
    /// [`TenantError::NoDirectory`](crate::tenants::TenantError::NoDirectory) without the
    /// `directory` option.
    pub fn tenants(&self) -> Result<Tenants> {
        Ok(self
            .inner
            .tenants
            .clone()
            .ok_or(crate::tenants::TenantError::NoDirectory)?)
    }

    /// Tenant `id` routed through the directory (see [`Tenants::route`]): a cache lookup
    /// when this instance has its entry, one read of the directory otherwise.
    ///
    /// # Errors
    /// As [`Tenants::route`], and without a directory.
    pub fn tenant<'a>(&'a self, id: &'a str) -> TenantRoute<'a> {
        match self.inner.tenants.as_ref() {
            Some(tenants) => tenants.route(id),
            None => TenantRoute::refused(crate::tenants::TenantError::NoDirectory.into()),
        }
    }

    /// A [`Fleet`]: migrations applied to, rolled back on or read from many databases, with
    /// bounded concurrency, a canary set, a failure budget and progress events.
    pub fn fleet(&self) -> Fleet<'_> {
        Fleet::new(self.migrator())
    }

    /// Brings database `name` to the latest version of `migrations`, with the default lock
    /// options: [`Migrator::apply`].
    ///
    /// # Errors
    /// As [`Migrator::apply`].
    pub async fn migrate_database(
        &self,
        name: &str,
        migrations: &Migrations,
    ) -> Result<DbMigrationReport> {
        self.migrator().apply(name, migrations).await
    }

    /// Database `name`'s migration state, read only: [`Migrator::status`].
    ///
    /// # Errors
    /// As [`Migrator::status`].
    pub async fn migration_status(
        &self,
        name: &str,
        migrations: &Migrations,
    ) -> Result<MigrationStatus> {
        self.migrator().status(name, migrations).await
    }

    /// The driver's `Client` (the pool) that serves database `name`. Not counted as use, as
    /// [`database`](Self::database).
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::Closed`].
    pub fn client_for(&self, name: &str) -> Result<Client> {
        Ok(self
            .inner
            .registry
            .lease(name)?
            .entry
            .database
            .client()
            .clone())
    }

    /// Takes one of the connection slots of the pool database `name` is routed to, waiting at
    /// most `wait` in the pool's wait queue (the one [`DbHandle::run`](crate::DbHandle::run)
    /// waits in), and holds it until the last clone of the returned slot is dropped. Nothing
    /// is sent: a caller refused here has done nothing yet, so it can safely be told to come
    /// back later. Give the slot to the handles that do the work with
    /// [`DbHandle::with_connection_slot`](crate::DbHandle::with_connection_slot).
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::Closed`] (also once the pool began closing),
    /// [`Error::PoolExhausted`] when no slot came free within `wait`.
    pub async fn reserve_connection(&self, name: &str, wait: Duration) -> Result<ConnectionSlot> {
        ConnectionSlot::reserve(self.inner.registry.lease(name)?, wait).await
    }

    /// Opens the main pool now and checks that its cluster answers, retrying as the `retry`
    /// option says. Retries only errors that may pass (unreachable, timeouts); an
    /// authentication failure, say, is returned at once.
    ///
    /// # Errors
    /// [`Error::Connection`] (or another kind) from the last attempt, [`Error::Closed`].
    pub async fn connect(&self) -> Result<()> {
        let default_db = self.inner.default_db.clone();
        self.ping(&default_db).await.map(|_| ())
    }

    /// Sends `ping` to the cluster of database `name` and returns the round-trip time, retrying
    /// as the `retry` option says.
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::Closed`], [`Error::Connection`] when the cluster does
    /// not answer within the server selection timeout on any attempt.
    pub async fn ping(&self, name: &str) -> Result<Duration> {
        ping::ping(&self.inner.registry, self.inner.options.retry, name).await
    }

    /// State of the main pool.
    pub fn connection_state(&self) -> ConnectionState {
        self.inner.registry.routes().main_pool().state()
    }

    /// Whether the main pool is [`ConnectionState::Connected`].
    pub fn is_connected(&self) -> bool {
        self.connection_state() == ConnectionState::Connected
    }

    /// Whether [`close_all`](Self::close_all) has been called.
    pub fn is_closed(&self) -> bool {
        self.inner.registry.is_closed()
    }

    /// Export, import, copy and drop of whole databases.
    pub fn bulk(&self) -> Bulk<'_> {
        Bulk::new(&self.inner.registry)
    }

    /// A transaction over `databases`, which must all be served by one pool (the same cluster,
    /// and not split between a dedicated pool and another). With no database named, the
    /// default database's pool is used.
    ///
    /// Nothing is sent until [`Transaction::run`].
    pub fn transaction<I, S>(&self, databases: I) -> Transaction<'_>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Transaction::new(
            &self.inner.registry,
            &self.inner.default_db,
            databases.into_iter().map(Into::into).collect(),
        )
    }

    /// A managed change stream on every collection of database `name`, on the pool `name` is
    /// routed to. `pipeline` filters or reshapes events (`$match`, `$project`…); `options`
    /// carries `resume_after` / `start_after` (a [`ManagedStream::resume_token`]),
    /// `full_document` and the rest of the driver's change-stream options.
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::Closed`] (also when a close begins while the stream
    /// opens), or the driver's error when the server refuses the stream (a standalone `mongod`
    /// has no change streams).
    pub async fn watch_database(
        &self,
        name: &str,
        pipeline: impl IntoIterator<Item = Document>,
        options: impl Into<Option<ChangeStreamOptions>>,
    ) -> Result<ManagedStream<ChangeStreamEvent<Document>>> {
        streams::watch_database(&self.inner.registry, name, pipeline, options).await
    }

    /// A managed change stream on collection `collection` of database `db`, without a model
    /// (events carry documents); registered under `db` like
    /// [`DbHandle::watch`](crate::DbHandle::watch).
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::Closed`], or the driver's error.
    pub async fn watch_collection(
        &self,
        db: &str,
        collection: &str,
        pipeline: impl IntoIterator<Item = Document>,
        options: impl Into<Option<ChangeStreamOptions>>,
    ) -> Result<ManagedStream<ChangeStreamEvent<Document>>> {
        streams::watch_collection(&self.inner.registry, db, collection, pipeline, options).await
    }

    /// A managed change stream on every database of the main cluster (the `uri` option).
    /// Not closed by [`close_db_streams`](Self::close_db_streams); closed by
    /// [`close_all_watches`](Self::close_all_watches) and [`close_all`](Self::close_all).
    ///
    /// # Errors
    /// [`Error::Closed`], or the driver's error when the server refuses the stream.
    pub async fn watch_cluster(
        &self,
        pipeline: impl IntoIterator<Item = Document>,
        options: impl Into<Option<ChangeStreamOptions>>,
    ) -> Result<ManagedStream<ChangeStreamEvent<Document>>> {
        streams::watch_cluster(&self.inner.registry, pipeline, options).await
    }

    /// Closes every managed stream on database `name` (its collections' and its own); returns
    /// how many. Their consumers see the end of the stream; their server cursors are killed.
    pub fn close_db_streams(&self, name: &str) -> usize {
        streams::close_db_streams(&self.inner.registry, name)
    }

    /// Closes every managed stream of this manager; returns how many.
    pub fn close_all_watches(&self) -> usize {
        streams::close_all_watches(&self.inner.registry)
    }

    /// Managed change streams open now (closed ones are not counted). Costs one read per
    /// pool, whatever the number of databases.
    pub fn open_change_streams(&self) -> usize {
        streams::open_change_streams(&self.inner.registry)
    }

    /// Closes the manager gracefully when the process receives SIGINT, SIGTERM or SIGUSR2:
    /// new work is refused at once, work in flight gets up to `deadline`, then everything is
    /// shut down (as [`close_all`](Self::close_all)).
    ///
    /// The handlers are installed before this returns; the returned task completes once the
    /// manager is closed, with the signal and the report, and does not exit the process:
    ///
    /// ```no_run
    /// # async fn f(poly: polymongo::PolyMongo) -> polymongo::Result<()> {
    /// let shutdown = poly.close_on_signals(std::time::Duration::from_secs(10))?;
    /// // … serve requests …
    /// if let Ok(done) = shutdown.await {
    ///     eprintln!("{}: {:?}", done.signal, done.report);
    ///     std::process::exit(done.signal.exit_code());
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// Once installed, tokio's handlers stay for the life of the process: these signals no
    /// longer end it by themselves, so the application must exit (as above).
    ///
    /// # Errors
    /// [`Error::Io`] when a handler cannot be installed.
    #[cfg(unix)]
    pub fn close_on_signals(
        &self,
        deadline: Duration,
    ) -> Result<tokio::task::JoinHandle<crate::features::shutdown::SignalShutdown>> {
        let poly = self.clone();
        crate::features::shutdown::on_signals(
            &self.inner.env.runtime,
            deadline,
            move || async move { poly.close_all(deadline).await },
        )
    }

    /// Closes every pool now, without waiting for operations, cursors or sessions in use
    /// (they fail). A graceful [`close_all`](Self::close_all) already running stops waiting
    /// at once and reports the pools it cut as `pools_forced`; this call then reports
    /// `already_closed`. Idempotent and safe to race with `close_all`.
    ///
    /// Returns promptly whatever the network does (the clients' own shutdown, which talks to
    /// the servers, goes on in the background; [`live_clients`](Self::live_clients) falls to
    /// zero when it is done). Dropping the returned future does not stop the close.
    pub async fn force_close_all(&self) -> CloseReport {
        self.inner.closer.force();
        self.close_all(Duration::ZERO).await
    }

    /// Closes every pool, gracefully: new work is refused at once with [`Error::Closed`]
    /// (handles, `run`, change streams, transactions), managed change streams end, operations
    /// in flight through `run` and the driver's cursors and sessions get up to `deadline` to
    /// finish, then the pools still busy are shut down without waiting.
    ///
    /// The close is carried out by a task the manager owns: dropping this future (a
    /// `timeout` around it, a cancelled request) does not stop or corrupt it, and every call,
    /// concurrent or later, waits for that one close and reports its figures (with
    /// `already_closed` unless it started it). Returns within `deadline` plus a few
    /// milliseconds whatever the network does; clients shut down without waiting finish in the
    /// background.
    pub async fn close_all(&self, deadline: Duration) -> CloseReport {
        let inner = &self.inner;
        inner
            .closer
            .close(
                &inner.registry,
                &inner.env.runtime,
                &inner.stop_housekeeper,
                deadline,
            )
            .await
    }
}

/// The manager as the metrics exposition reads it (the features layer does not import the
/// facade).
#[cfg(feature = "metrics")]
impl crate::features::metrics::Source for PolyMongo {
    fn stats(&self) -> Stats<'_> {
        PolyMongo::stats(self)
    }

    fn migration_stats(&self) -> MigrationStats {
        PolyMongo::migration_stats(self)
    }

    fn tenants(&self) -> Option<Tenants> {
        self.inner.tenants.clone()
    }
}

impl crate::features::figures::Figures {
    /// The figures of `poly` now. Synchronous, no round trip; costs O(pools +
    /// [`FIGURES_CANDIDATES`](crate::FIGURES_CANDIDATES)) whatever the number of databases.
    pub fn take(poly: &PolyMongo) -> Self {
        Self::of(&poly.stats(), poly.inner.options.app_name.as_deref())
    }
}
