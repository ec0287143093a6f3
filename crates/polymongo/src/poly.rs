//! The manager: one value that owns the pools, routes databases and hands out model handles.

use std::any::TypeId;
use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use mongodb::bson::doc;
use mongodb::options::ClientOptions;
use mongodb::{Client, Database};
use serde::Serialize;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::builder::PolyMongoBuilder;
use crate::change_stream::Watches;
use crate::config::Options;
use crate::error::{Error, Result};
use crate::hooks::{self, Directory, ErrorEvent, HookHandle, PendingHook, PoolEvent, Registry};
use crate::model::{AnyModelCache, Model, ModelCache, ModelHandle};
use crate::pool::{ClusterPool, ConnectionState, PoolEnv, PoolKind, Shutdown};
use crate::reaper::{self, Reapable, Retiring};
use crate::routing::Router;
use crate::scale::{self, Scale};
use crate::stats::Stats;
use crate::usage::{Usage, UsageAnalytics};

/// Manages MongoDB connections for an application that uses many databases.
///
/// One connection pool per cluster is shared by every database routed to it, so using a new
/// database costs a map entry, not a connection. Cheap to clone (an `Arc`); clones share
/// everything.
///
/// Bound to the tokio runtime it was built on, like the driver's `Client`.
#[derive(Clone)]
pub struct PolyMongo {
    inner: Arc<Inner>,
}

struct Inner {
    options: Options,
    default_db: String,
    router: Router,
    models: DashMap<TypeId, Arc<dyn AnyModelCache>>,
    closing: tokio::sync::Mutex<()>,
    /// Set by `force_close_all`: every graceful wait of a close in progress ends now.
    force: watch::Sender<bool>,
    env: PoolEnv,
    hooks: Arc<Registry>,
    stop_reaper: watch::Sender<bool>,
    reaper: Mutex<Option<JoinHandle<()>>>,
}

impl Directory for Inner {
    fn served(&self, pool: u64, only: Option<&HashSet<String>>) -> Vec<String> {
        self.router.served(pool, only)
    }
}

impl Reapable for Inner {
    fn reap(&self) -> Option<Duration> {
        self.router.reap()
    }
}

/// What [`PolyMongo::close_all`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct CloseReport {
    /// Pools that had a client and were shut down by this call.
    pub pools_closed: usize,
    /// Of those, pools still busy (cursors or sessions open) at the deadline and closed without
    /// waiting for them.
    pub pools_forced: usize,
    /// Clients of pools closed earlier for idleness, still finishing their cursors and
    /// sessions, that this call shut down without waiting.
    pub idle_clients_cut: usize,
    /// Managed change streams this call ended.
    pub change_streams_closed: usize,
    /// The manager had already been closed by an earlier call; this one did nothing.
    pub already_closed: bool,
}

impl fmt::Debug for PolyMongo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolyMongo")
            .field("cluster", &self.inner.router.main_pool().label())
            .field("default_db", &self.inner.default_db)
            .field("state", &self.connection_state())
            .field("databases", &self.inner.router.len())
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl PolyMongo {
    /// Starts a [`PolyMongoBuilder`].
    pub fn builder() -> PolyMongoBuilder {
        PolyMongoBuilder::default()
    }

    pub(crate) async fn from_options(options: Options, hooks: Vec<PendingHook>) -> Result<Self> {
        let runtime = Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let resolved = options.resolve().await?;
        for (name, config) in &options.databases {
            config.validate(name)?;
        }
        let (signals, signal_rx) = mpsc::unbounded_channel();
        let env = PoolEnv {
            runtime: runtime.clone(),
            live_clients: Arc::new(AtomicUsize::new(0)),
            signals,
            watches: Arc::default(),
            wait_queue_timeout: options.wait_queue_timeout,
            usage: (options.usage_analytics != UsageAnalytics::Off).then(|| {
                Arc::new(Usage::new(
                    options.max_tracked_databases,
                    options.usage_analytics,
                ))
            }),
        };
        let main = Arc::new(ClusterPool::new(
            resolved.cluster_label,
            PoolKind::Shared,
            resolved.client_options,
            &env,
            None,
        ));
        let retiring = Arc::new(Retiring::new(runtime.clone()));
        let router = Router::new(
            main,
            options.uri.clone(),
            options.max_dedicated_pools,
            retiring,
        );
        let (stop_reaper, stop) = watch::channel(false);
        let inner = Arc::new(Inner {
            default_db: resolved.default_db,
            router,
            models: DashMap::new(),
            closing: tokio::sync::Mutex::new(()),
            force: watch::channel(false).0,
            env,
            hooks: {
                let registry = Arc::new(Registry::default());
                registry.add_pending(hooks);
                registry
            },
            stop_reaper,
            reaper: Mutex::new(None),
            options,
        });
        let handle = reaper::spawn(&runtime, Arc::downgrade(&inner), stop);
        hooks::spawn(
            &runtime,
            Arc::clone(&inner.hooks),
            Arc::downgrade(&inner),
            signal_rx,
        );
        *inner.reaper.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        let poly = PolyMongo { inner };
        for (name, config) in &poly.inner.options.databases {
            scale::apply(&poly, name, config).await?;
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

    pub(crate) fn new_pool(
        &self,
        label: String,
        kind: PoolKind,
        options: ClientOptions,
        ttl: Option<Duration>,
    ) -> ClusterPool {
        ClusterPool::new(label, kind, options, &self.inner.env, ttl)
    }

    /// Run-time configuration of databases: dedicated pools, other clusters, handle options.
    pub fn scale(&self) -> Scale<'_> {
        Scale::new(self)
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

    /// Pool figures and database statistics.
    pub fn stats(&self) -> Stats<'_> {
        Stats::new(self)
    }

    /// Driver clients (pools) of this manager that are open or still shutting down.
    pub fn live_clients(&self) -> usize {
        self.inner.env.live_clients.load(Ordering::Acquire)
    }

    /// Dedicated pools with a client open now (at most `max_dedicated_pools`, unless every one
    /// of them was in use when another had to open).
    pub fn open_dedicated_pools(&self) -> usize {
        self.inner.router.open_dedicated()
    }

    pub(crate) fn usage(&self) -> Option<&Arc<Usage>> {
        self.inner.env.usage.as_ref()
    }

    /// The runtime the manager was built on.
    pub(crate) fn runtime(&self) -> &Handle {
        &self.inner.env.runtime
    }

    pub(crate) fn watches(&self) -> &Arc<Watches> {
        &self.inner.env.watches
    }

    pub(crate) fn router(&self) -> &Router {
        &self.inner.router
    }

    /// The options the manager was built with (`Debug` redacts the password).
    pub fn options(&self) -> &Options {
        &self.inner.options
    }

    /// Name of the default database.
    pub fn default_db_name(&self) -> &str {
        &self.inner.default_db
    }

    /// A typed model on every database. Cheap; handles of the same type share one cache.
    pub fn model<T: Model>(&self) -> ModelHandle<T> {
        let key = TypeId::of::<T>();
        // A read lock on the common path (the model was used before); the write lock of
        // `entry` only for a model's first handle.
        let erased = match self.inner.models.get(&key) {
            Some(cache) => Arc::clone(&cache),
            None => Arc::clone(
                &self
                    .inner
                    .models
                    .entry(key)
                    .or_insert_with(|| Arc::new(ModelCache::<T>::new())),
            ),
        };
        let cache = erased
            .into_any()
            .downcast::<ModelCache<T>>()
            .unwrap_or_else(|_| unreachable!("the model map is keyed by the cache's own TypeId"));
        ModelHandle::new(self.clone(), cache)
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
        Ok(self.inner.router.resolve(name)?.database.clone())
    }

    /// The driver's `Client` (the pool) that serves database `name`. Not counted as use, as
    /// [`database`](Self::database).
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::Closed`].
    pub fn client_for(&self, name: &str) -> Result<Client> {
        Ok(self.inner.router.resolve(name)?.pool.client()?.0)
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
        let slot = self.inner.router.resolve(name)?;
        let retry = self.inner.options.retry;
        let mut attempt = 1;
        loop {
            let started = Instant::now();
            match slot.database.run_command(doc! { "ping": 1 }).await {
                Ok(_) => {
                    tracing::debug!(database = name, cluster = %slot.pool.label(), attempt, "ping answered");
                    return Ok(started.elapsed());
                }
                Err(e) => {
                    let err = Error::from_driver(e, slot.pool.label());
                    if attempt >= retry.attempts || !err.is_retryable() {
                        tracing::warn!(database = name, error = %err, attempt, "ping failed");
                        slot.pool.report_error(Some(name), err.to_string());
                        return Err(err);
                    }
                    let pause = retry.pause_after(attempt);
                    tracing::warn!(database = name, error = %err, attempt, of = retry.attempts, ?pause, "ping failed; retrying");
                    slot.pool.report_error(
                        Some(name),
                        format!(
                            "attempt {attempt} of {} failed, retrying in {pause:?}: {err}",
                            retry.attempts
                        ),
                    );
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
            }
        }
    }

    /// State of the main pool.
    pub fn connection_state(&self) -> ConnectionState {
        self.inner.router.main_pool().state()
    }

    /// Whether the main pool is [`ConnectionState::Connected`].
    pub fn is_connected(&self) -> bool {
        self.connection_state() == ConnectionState::Connected
    }

    /// Whether [`close_all`](Self::close_all) has been called.
    pub fn is_closed(&self) -> bool {
        self.inner.router.is_closed()
    }

    /// Closes every pool now, without waiting for operations, cursors or sessions in use
    /// (they fail). A graceful [`close_all`](Self::close_all) already running stops waiting
    /// at once and reports the pools it cut as `pools_forced`; this call then reports
    /// `already_closed`. Idempotent and safe to race with `close_all`.
    pub async fn force_close_all(&self) -> CloseReport {
        self.inner.force.send_replace(true);
        self.close_all(Duration::ZERO).await
    }

    /// Closes every pool, gracefully: new work is refused at once with [`Error::Closed`],
    /// cursors and sessions in use get up to `deadline` to finish, then the pools are shut
    /// down without waiting. Idempotent and safe to call concurrently: the first call does the
    /// work, later ones wait for it and report `already_closed`.
    pub async fn close_all(&self, deadline: Duration) -> CloseReport {
        let _one_at_a_time = self.inner.closing.lock().await;
        if self.inner.router.close() {
            return CloseReport {
                already_closed: true,
                ..CloseReport::default()
            };
        }
        // Change streams end first: their consumers see the end rather than an error, and
        // their cursors no longer hold the pools open.
        let streams = self.close_all_watches();
        // The reaper stops first, so it closes nothing under our feet.
        self.inner.stop_reaper.send_replace(true);
        let reaper = self
            .inner
            .reaper
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(reaper) = reaper {
            // It stops between passes; a pass never waits on the network.
            let _ = reaper.await;
        }
        // Every pool refuses new work before any waits, then the routing entries and cached
        // handles (all stale now) are dropped.
        let taken: Vec<_> = self
            .inner
            .router
            .pools()
            .into_iter()
            .map(|pool| {
                let client = pool.begin_close();
                (pool, client)
            })
            .collect();
        self.inner.router.clear();
        for cache in self.inner.models.iter() {
            cache.clear();
        }
        let mut report = CloseReport {
            change_streams_closed: streams,
            ..CloseReport::default()
        };
        // All pools wait at once, so the whole close takes at most `deadline`.
        let outcomes = futures_util::future::join_all(taken.into_iter().map(|(pool, client)| {
            let force = self.inner.force.subscribe();
            async move { pool.finish_close(client, deadline, force).await }
        }))
        .await;
        for outcome in outcomes {
            match outcome {
                Shutdown::NotOpen => {}
                Shutdown::Graceful => report.pools_closed += 1,
                Shutdown::Forced => {
                    report.pools_closed += 1;
                    report.pools_forced += 1;
                }
            }
        }
        report.idle_clients_cut = self.inner.router.retiring().force_all().await;
        tracing::info!(?report, "polymongo closed");
        report
    }
}
