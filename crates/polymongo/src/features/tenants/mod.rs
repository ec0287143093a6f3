//! The tenant directory: which cluster each tenant's database is on, and in which state,
//! shared by every application instance.
//!
//! ```no_run
//! # async fn demo() -> polymongo::Result<()> {
//! use polymongo::tenants::{CreateTenant, Placement};
//! use polymongo::{ClusterConfig, DirectoryConfig, PolyMongo};
//!
//! let poly = PolyMongo::builder()
//!     .uri("mongodb://control:27017")
//!     .cluster("cell_a", ClusterConfig::new("mongodb://cell-a:27017").capacity(5_000))
//!     .cluster("cell_b", ClusterConfig::new("mongodb://cell-b:27017").capacity(5_000))
//!     .directory(DirectoryConfig::on("main").database_prefix("t_"))
//!     .build()
//!     .await?;
//! let tenants = poly.tenants()?;
//! tenants.create("acme", CreateTenant::new().placement(Placement::LeastTenants)).await?;
//! # #[derive(serde::Deserialize, serde::Serialize)] struct User { email: String }
//! # impl polymongo::Model for User { const COLLECTION: &'static str = "users"; }
//! let users = poly.model::<User>(); // keep it: cheap to clone
//! let acme_users = users.tenant("acme").await?; // on acme's cluster
//! let acme = poly.tenant("acme").await?; // the tenant itself: its record, any model
//! let same = acme.model::<User>()?;
//! tenants.suspend("acme").await?; // every instance refuses it within `refresh`
//! # Ok(()) }
//! ```
//!
//! **The directory** is three collections in the control database (`directory.database` on
//! `directory.cluster`): `tenants`, one document per tenant (`_id` the tenant id, `database`,
//! `cluster`, `state`, `version`, `seq`, `labels`, times), with a unique index on
//! `(cluster, database)`; `counters`, the change sequence; `clusters`, each cluster's tenant
//! count, taken atomically against its capacity.
//!
//! **Routing**: [`ModelHandle::tenant`](crate::ModelHandle::tenant) (a model's collection
//! in the tenant's database, as `.db(name)` gives it for a database name) and
//! [`PolyMongo::tenant`](crate::PolyMongo::tenant) (the routed tenant: its record, any model,
//! connection slots) resolve tenant → database → cluster pool. The record is kept in the
//! database's registry entry, so a warm call is a cache lookup: no round trip, ready at its
//! first poll, the registry's one look-up plus the record's checks — about 1.4× a warm
//! `.db(name)` in instructions, some 50 ns more, and under the raw driver's
//! `client.database(n).collection(c)` (docs/benchmarks.md). A cold one is one read by `_id`,
//! shared by concurrent first uses of the same tenant. Suspended tenants are cached too (a fast refusal); unknown ids are
//! not (they would be unbounded state), so each costs a read.
//!
//! **Every instance agrees within `directory.refresh` plus one read**: every change writes
//! the entry's next `version` and a new `seq` from the directory's sequence. Each instance
//! reads the entries changed since the last sequence it saw every `refresh` (default 1 s)
//! and forgets its cached entry of any tenant whose version moved. So after a change is
//! written, another instance may still route the tenant by its old entry for at most
//! `refresh` plus the duration of one such read; its operations already under way finish on
//! the old entry. Where the control cluster has change streams, each instance also watches
//! the directory and reads the changes as soon as an event arrives (typically milliseconds;
//! [`DirectoryStats::stream_open`] says whether the stream is up); the polling bound holds
//! whatever the stream does. When the changes cannot be read (the control cluster
//! unreachable or partitioned away), an instance goes on routing by its cached entries for
//! at most `directory.max_staleness` (default 60 s) after the last successful read began;
//! past it, a cached tenant is refused with [`TenantError::Stale`] (nothing is sent to its
//! database) until a read succeeds — so no change is ignored for longer than that bound.
//! `max_staleness: None` chooses availability instead: cached tenants are served through
//! any directory outage. A writer that took a sequence number and died before writing
//! leaves a gap; readers wait for it up to 30 s (re-reading what follows it), then go on.
//! With a directory, the control cluster is connected from the first refresh (the manager's
//! `cold_start` applies to the other clusters).
//!
//! **Creating** is resumable: the tenant is recorded first in state `creating` (placed, its
//! capacity taken, its `(cluster, database)` unique), then its database is prepared
//! (migrated to the latest version when lazy migrations are configured), then it becomes
//! `active`. A crash in between leaves a `creating` tenant, which is not served and which
//! the next `create` of the same id finishes.
//!
//! **A tenant database's own configuration** (a [`DbConfig`](crate::DbConfig) given for its
//! database name) holds on the entry the directory places: read preference, concerns,
//! `max_concurrent_ops` and `queue_timeout`. The directory alone chooses the cluster: a
//! configuration that would choose the pool (`uri`, a dedicated pool) is refused with
//! [`Error::DbConfig`] naming the database and the field.
//!
//! **Archive, restore, delete** ([`Tenants::archive`], [`Tenants::restore`],
//! [`Tenants::delete`]) record each step in the directory before taking the next, so each
//! is idempotent and finished by calling it again after a crash; the database is dropped
//! only once its archive was read back whole and matched it. **Listing**:
//! [`Tenants::list`] (pages by id) and [`Tenants::census`] (per cluster).

mod lifecycle;
mod listing;
mod placement;
mod record;
mod store;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use futures_util::StreamExt;
use mongodb::bson::Document;
use mongodb::Database;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::sync::{watch, Notify, OnceCell};

pub use lifecycle::{ArchiveTenant, DeleteTenant, Deleted, RestoreTenant};
pub use listing::{ClusterCensus, ListTenants, TenantPage, MAX_PAGE};
pub use placement::{ClusterLoad, PlaceFn, Placement};
pub use record::{ArchiveRecord, TenantInfo, TenantState};

pub use crate::floor::tenant_config::{
    ClusterConfig, DirectoryConfig, DEFAULT_DIRECTORY_DATABASE, DEFAULT_DIRECTORY_REFRESH,
    MAIN_CLUSTER,
};
pub use crate::floor::tenant_error::TenantError;
pub use crate::handle::tenant_route::ModelRoute;

use crate::features::migrate::counters::Counters;
use crate::features::migrate::{Migrations, Migrator};
use crate::floor::config::Options;
use crate::floor::error::{Error, Result};
use crate::floor::name::validate_database_name;
use crate::floor::striped::StripedCounter;
use crate::handle::model::{DbHandle, Model};
use crate::handle::slot::ConnectionSlot;
use crate::handle::tenant_route::{ColdLease, TenantRouter, WarmLease};
use crate::pool::cluster::{ClusterPool, PoolEnv, PoolKind};
use crate::registry::{DbLease, Registry};
use store::Store;

/// How long a gap in the change sequence is waited for before readers go on.
const GAP_WAIT: Duration = Duration::from_secs(30);

/// One named cluster, ready.
struct Cluster {
    pool: Arc<ClusterPool>,
    capacity: Option<u64>,
    weight: u32,
    figures: Arc<ClusterFigures>,
}

/// Routing figures of one cluster (see [`ClusterRouting`]).
#[derive(Default)]
struct ClusterFigures {
    /// Counted by every warm route on every core: striped, so cores do not contend for it.
    hits: StripedCounter,
    reads: AtomicU64,
    invalidations: AtomicU64,
}

/// Routing through the directory to one cluster, on this instance:
/// [`Tenants::cluster_stats`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ClusterRouting {
    /// The cluster.
    pub cluster: String,
    /// Routes to it served from the cache.
    pub cache_hits: u64,
    /// Reads of the directory that routed a tenant to it.
    pub cache_misses: u64,
    /// Cached entries of its tenants forgotten because the directory changed them.
    pub invalidations: u64,
}

/// A registry entry's tag: the record it was placed with, and its cluster's figures (so a
/// warm route counts its hit without a lookup).
pub(crate) struct Routed {
    info: TenantInfo,
    figures: Arc<ClusterFigures>,
    /// For [`Tenant::acquire`]: a routed tenant carries no strong reference to the registry,
    /// so a warm route counts no reference every core shares.
    registry: Weak<Registry>,
}

/// The directory of one manager: its clusters, its control store, its shared cold reads.
pub(crate) struct Directory {
    config: DirectoryConfig,
    clusters: BTreeMap<String, Cluster>,
    /// The registry the directory places entries in, for the records it puts there (a
    /// `Weak`: the registry holds the records).
    registry: Weak<Registry>,
    /// Cold reads in flight, by tenant: concurrent first uses wait for one read. An entry
    /// lives while a caller waits on it (see [`InFlight`]).
    reading: DashMap<Box<str>, Arc<OnceCell<Arc<Routed>>>>,
    indexes: OnceCell<()>,
    /// Woken by the change stream on the directory: read the changes now.
    changed: Notify,
    figures: Figures,
    /// When the directory was built: the origin of `fresh_at_ms`.
    epoch: Instant,
    /// When the last successful read of the changes began, ms after `epoch`: cached
    /// entries are as fresh as that (see `max_staleness`).
    fresh_at_ms: AtomicU64,
    /// Set by the change reader's task once the staleness passes half of `max_staleness`:
    /// only then does a warm route read the clock to compare it with the bound. Half the
    /// bound (at least one refresh) is the slack the task has to set it in time.
    watch_clock: AtomicBool,
    /// The way to `on_tenant_change` hooks, set when the manager's hooks exist.
    events: std::sync::OnceLock<crate::features::hooks::TenantEvents>,
}

/// The directory's counters (see [`DirectoryStats`]).
#[derive(Default)]
struct Figures {
    reads: AtomicU64,
    invalidations: AtomicU64,
    stream_events: AtomicU64,
    stream_up: AtomicBool,
    change_reads: AtomicU64,
}

/// What this instance's directory cache did since the manager was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DirectoryStats {
    /// Routes served from the cache (no round trip).
    pub cache_hits: u64,
    /// Routes that read the directory (cold, or after an invalidation).
    pub cache_misses: u64,
    /// Cached entries forgotten because the directory changed them.
    pub invalidations: u64,
    /// Change events received from the directory's change stream.
    pub stream_events: u64,
    /// Whether the change stream is open now (else changes arrive by polling only).
    pub stream_open: bool,
    /// Cold reads going on now.
    pub reads_in_flight: usize,
    /// Successful reads of the directory's changes (every `refresh`, and on stream events).
    pub change_reads: u64,
    /// `on_tenant_change` events dropped because the hooks were behind (see
    /// [`TENANT_EVENT_QUEUE`](crate::hooks::TENANT_EVENT_QUEUE)).
    pub hook_events_dropped: u64,
    /// Time since the last successful read of the directory's changes began: cached
    /// entries are at least this fresh. Past `directory.max_staleness`, cached tenants are
    /// refused ([`TenantError::Stale`]).
    #[serde(with = "humantime_serde")]
    pub changes_read_ago: Duration,
}

impl Directory {
    /// The clusters' pools (made now, opened on first use) and the directory, if configured.
    pub(crate) async fn build(
        options: &Options,
        env: &PoolEnv,
        registry: &Arc<Registry>,
    ) -> Result<Option<Arc<Directory>>> {
        let Some(config) = options.directory.clone() else {
            return Ok(None);
        };
        let routes = registry.routes();
        let mut clusters = BTreeMap::new();
        clusters.insert(
            MAIN_CLUSTER.to_owned(),
            Cluster {
                pool: Arc::clone(routes.main_pool()),
                capacity: None,
                weight: 1,
                figures: Arc::default(),
            },
        );
        for (name, c) in &options.clusters {
            let pool =
                match routes.shared_pool(&c.uri) {
                    Some(pool) => pool,
                    None => {
                        let size = (c.max_connections.is_some() || c.min_connections.is_some())
                            .then(|| crate::floor::config::DedicatedSize {
                                max: c.max_connections,
                                min: c.min_connections.unwrap_or(0),
                            });
                        let client_options = options.client_options(&c.uri, size).await.map_err(
                            |(_, message)| Error::Config {
                                field: "clusters",
                                message: format!("cluster {name:?}: {message}"),
                            },
                        )?;
                        let pool = ClusterPool::new(
                            routes.cluster_label(&c.uri),
                            PoolKind::Shared,
                            client_options,
                            env,
                            None,
                        );
                        routes.add_shared_pool(&c.uri, Arc::new(pool))
                    }
                };
            clusters.insert(
                name.clone(),
                Cluster {
                    pool,
                    capacity: c.capacity,
                    weight: c.weight.unwrap_or(1),
                    figures: Arc::default(),
                },
            );
        }
        Ok(Some(Arc::new(Directory {
            config,
            clusters,
            registry: Arc::downgrade(registry),
            reading: DashMap::new(),
            indexes: OnceCell::new(),
            changed: Notify::new(),
            figures: Figures::default(),
            epoch: Instant::now(),
            fresh_at_ms: AtomicU64::new(0),
            watch_clock: AtomicBool::new(false),
            events: std::sync::OnceLock::new(),
        })))
    }

    /// Connects the directory's change reader to the manager's `on_tenant_change` hooks.
    pub(crate) fn set_events(&self, events: crate::features::hooks::TenantEvents) {
        let _ = self.events.set(events);
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Time since the last successful read of the changes began.
    fn staleness(&self) -> Duration {
        Duration::from_millis(
            self.now_ms()
                .saturating_sub(self.fresh_at_ms.load(Ordering::Relaxed)),
        )
    }

    /// The staleness, when it is past `max_staleness`. Reads the clock only once the
    /// change reader found the staleness past half the bound.
    #[inline]
    fn too_stale(&self) -> Option<Duration> {
        if !self.watch_clock.load(Ordering::Relaxed) {
            return None;
        }
        let bound = self.config.max_staleness?;
        let since = self.staleness();
        (since > bound).then_some(since)
    }

    /// What the change reader's task does after each read (or failed read): tell warm
    /// routes whether to watch the clock.
    fn note_staleness(&self) {
        if let Some(bound) = self.config.max_staleness {
            self.watch_clock
                .store(self.staleness() > bound / 2, Ordering::Relaxed);
        }
    }

    /// How long the change reader may wait or read before it must look at the staleness
    /// again: never past half the bound while the clock is not watched.
    fn next_look(&self, at_most: Duration) -> Duration {
        match self.config.max_staleness {
            Some(bound) => {
                let since = self.staleness();
                let before = if since > bound / 2 { bound } else { bound / 2 };
                at_most
                    .min(before.saturating_sub(since))
                    .max(Duration::from_millis(1))
            }
            None => at_most,
        }
    }

    fn placeable(&self) -> Vec<&str> {
        // With named clusters, tenants go there; the main cluster holds them only when it
        // is the only one.
        let named: Vec<&str> = self
            .clusters
            .keys()
            .map(String::as_str)
            .filter(|n| *n != MAIN_CLUSTER)
            .collect();
        if named.is_empty() {
            vec![MAIN_CLUSTER]
        } else {
            named
        }
    }

    async fn store(&self, registry: &Registry) -> Result<Store> {
        let cluster =
            self.clusters
                .get(&self.config.cluster)
                .ok_or_else(|| TenantError::UnknownCluster {
                    cluster: self.config.cluster.clone(),
                })?;
        let (client, _) = registry.routes().client_of(&cluster.pool)?;
        let store = Store::new(&client.database(&self.config.database));
        self.indexes
            .get_or_try_init(|| async { store.ensure_indexes().await })
            .await?;
        Ok(store)
    }

    /// The database name of tenant `id`, checked.
    fn database_of(&self, id: &str) -> Result<String> {
        let invalid = |problem: String| TenantError::InvalidId {
            tenant: id.to_owned(),
            problem,
        };
        if id.is_empty() {
            return Err(invalid("empty".into()).into());
        }
        let name = format!("{}{id}", self.config.database_prefix);
        validate_database_name(&name).map_err(|e| invalid(e.to_string()))?;
        if matches!(name.as_str(), "admin" | "local" | "config") || name == self.config.database {
            return Err(invalid(format!("database {name:?} is reserved")).into());
        }
        Ok(name)
    }

    fn pool_of(&self, cluster: &str) -> Result<&Arc<ClusterPool>> {
        Ok(&self
            .clusters
            .get(cluster)
            .ok_or_else(|| TenantError::UnknownCluster {
                cluster: cluster.to_owned(),
            })?
            .pool)
    }

    fn decode(&self, d: &Document) -> std::result::Result<TenantInfo, TenantError> {
        TenantInfo::from_document(d, |c| self.clusters.contains_key(c))
    }

    /// `info` as a registry tag, with its cluster's figures.
    fn routed(&self, info: TenantInfo) -> Arc<Routed> {
        let figures = self
            .clusters
            .get(&info.cluster)
            .map(|c| Arc::clone(&c.figures))
            .unwrap_or_default();
        Arc::new(Routed {
            info,
            figures,
            registry: Weak::clone(&self.registry),
        })
    }
}

/// The record an entry was placed with, as its registry tag.
fn record_of(lease: &DbLease) -> Option<Arc<Routed>> {
    lease
        .entry
        .tag()
        .and_then(|t| Arc::clone(t).downcast::<Routed>().ok())
}

/// A waiter on a shared cold read: the last one to go removes the read's entry, whether it
/// finished or was dropped, so no entry outlives its callers.
struct InFlight<'d> {
    map: &'d DashMap<Box<str>, Arc<OnceCell<Arc<Routed>>>>,
    id: &'d str,
    cell: Arc<OnceCell<Arc<Routed>>>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        // The map's reference and ours: nobody else waits.
        self.map.remove_if(self.id, |_, c| {
            Arc::ptr_eq(c, &self.cell) && Arc::strong_count(c) <= 2
        });
    }
}

/// A tenant routed by the directory: its database on its cluster.
#[derive(Clone)]
pub struct Tenant {
    lease: DbLease,
    routed: Arc<Routed>,
}

impl std::fmt::Debug for Tenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenant")
            .field("info", &self.routed.info)
            .finish()
    }
}

impl Tenant {
    /// The directory's record as this instance has it.
    pub fn info(&self) -> &TenantInfo {
        &self.routed.info
    }

    /// Model `T`'s collection in the tenant's database. No I/O. As
    /// [`ModelHandle::db`](crate::ModelHandle::db) does, a database configured with
    /// `max_concurrent_ops` gives the handle one of its slots if one is free now.
    ///
    /// # Errors
    /// [`Error::InvalidName`] for an invalid [`Model::COLLECTION`],
    /// [`Error::Saturated`] when the database's slots are all taken.
    pub fn model<T: Model>(&self) -> Result<DbHandle<T>> {
        use crate::handle::model::ModelHandle;
        ModelHandle::<T>::enter_now(ModelHandle::<T>::on_lease(self.lease.clone())?)
    }

    /// Model `T`'s collection in the tenant's database, ready for work, as
    /// [`ModelHandle::acquire`](crate::ModelHandle::acquire) makes it: lazy migrations run
    /// on first use, the model's indexes exist, a slot of a database with
    /// `max_concurrent_ops` is held — all on the entry this route holds, so on the
    /// tenant's cluster whatever the directory does meanwhile.
    ///
    /// # Errors
    /// As [`ModelHandle::acquire`](crate::ModelHandle::acquire), and [`Error::Closed`] once
    /// the manager that routed the tenant is dropped.
    pub async fn acquire<T: Model>(&self) -> Result<DbHandle<T>> {
        let registry = self.routed.registry.upgrade().ok_or(Error::Closed)?;
        let handle = crate::handle::model::ModelHandle::<T>::on_lease(self.lease.clone())?;
        crate::handle::model::ModelHandle::<T>::ready(&registry, handle).await
    }

    /// A place in the tenant's cluster pool, waited for up to `wait`, as
    /// [`PolyMongo::reserve_connection`](crate::PolyMongo::reserve_connection) gives one, on
    /// this route's pool.
    ///
    /// # Errors
    /// As [`PolyMongo::reserve_connection`](crate::PolyMongo::reserve_connection).
    pub async fn reserve_connection(&self, wait: Duration) -> Result<ConnectionSlot> {
        ConnectionSlot::reserve(self.lease.clone(), wait).await
    }

    /// The driver's handle on the tenant's database.
    pub fn database(&self) -> &Database {
        &self.lease.entry.database
    }
}

/// Options of [`Tenants::create`].
#[derive(Debug, Clone, Default)]
pub struct CreateTenant {
    placement: Placement,
    labels: Document,
}

impl CreateTenant {
    /// Default: [`Placement::LeastTenants`], no labels.
    pub fn new() -> Self {
        Self::default()
    }

    /// How the cluster is chosen.
    pub fn placement(mut self, placement: Placement) -> Self {
        self.placement = placement;
        self
    }

    /// The application's labels, stored with the tenant.
    pub fn labels(mut self, labels: Document) -> Self {
        self.labels = labels;
        self
    }
}

/// The directory's operations. Made by [`PolyMongo::tenants`](crate::PolyMongo::tenants);
/// cheap to clone.
#[derive(Clone)]
pub struct Tenants {
    dir: Arc<Directory>,
    registry: Arc<Registry>,
    counters: Arc<Counters>,
    migrations: Option<Migrations>,
}

impl std::fmt::Debug for Tenants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenants")
            .field("directory", &self.dir.config)
            .finish()
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Tenants {
    pub(crate) fn new(
        dir: Arc<Directory>,
        registry: Arc<Registry>,
        counters: Arc<Counters>,
        migrations: Option<Migrations>,
    ) -> Self {
        Self {
            dir,
            registry,
            counters,
            migrations,
        }
    }

    /// Cold reads of the directory going on now (each shared by the callers routing the
    /// same tenant). Per-tenant state that lives only while someone waits on it.
    pub fn reads_in_flight(&self) -> usize {
        self.dir.reading.len()
    }

    /// This instance's directory figures: cache hits and misses, invalidations received,
    /// change-stream events. Synchronous, no round trip.
    pub fn stats(&self) -> DirectoryStats {
        let f = &self.dir.figures;
        DirectoryStats {
            cache_hits: self
                .dir
                .clusters
                .values()
                .map(|c| c.figures.hits.get())
                .sum(),
            cache_misses: f.reads.load(Ordering::Relaxed),
            invalidations: f.invalidations.load(Ordering::Relaxed),
            stream_events: f.stream_events.load(Ordering::Relaxed),
            stream_open: f.stream_up.load(Ordering::Relaxed),
            reads_in_flight: self.dir.reading.len(),
            change_reads: f.change_reads.load(Ordering::Relaxed),
            changes_read_ago: self.dir.staleness(),
            hook_events_dropped: self.dir.events.get().map_or(0, |e| e.dropped()),
        }
    }

    /// Routing figures per cluster on this instance (every configured cluster, `"main"`
    /// included): cache hits, directory reads, invalidations. Synchronous, no round trip.
    pub fn cluster_stats(&self) -> Vec<ClusterRouting> {
        self.dir
            .clusters
            .iter()
            .map(|(name, c)| ClusterRouting {
                cluster: name.clone(),
                cache_hits: c.figures.hits.get(),
                cache_misses: c.figures.reads.load(Ordering::Relaxed),
                invalidations: c.figures.invalidations.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Every placeable cluster with its tenants (places taken), capacity and weight: one
    /// read of the directory.
    ///
    /// # Errors
    /// Driver errors.
    pub async fn clusters(&self) -> Result<Vec<ClusterLoad>> {
        let counts = self.dir.store(&self.registry).await?.counts().await?;
        Ok(self
            .dir
            .placeable()
            .into_iter()
            .filter_map(|name| {
                let c = self.dir.clusters.get(name)?;
                Some(ClusterLoad {
                    name: name.to_owned(),
                    tenants: counts.get(name).copied().unwrap_or(0),
                    capacity: c.capacity,
                    weight: c.weight,
                    data_bytes: None,
                })
            })
            .collect())
    }

    /// Tenant `id` as the directory has it now (one read; no cache).
    ///
    /// # Errors
    /// [`TenantError::InvalidId`], [`TenantError::Unknown`], [`TenantError::InvalidRecord`],
    /// driver errors.
    pub async fn get(&self, id: &str) -> Result<TenantInfo> {
        self.dir.database_of(id)?;
        let store = self.dir.store(&self.registry).await?;
        match store.get(id).await? {
            Some(d) => Ok(self.dir.decode(&d)?),
            None => Err(TenantError::Unknown {
                tenant: id.to_owned(),
            }
            .into()),
        }
    }

    /// Routes tenant `id`: its database on its cluster's pool, from this instance's cache
    /// when it has the entry (no round trip: the cached route is looked up when `route` is
    /// called, and the future hands it over), else from one read of the directory shared
    /// by concurrent callers.
    ///
    /// # Errors
    /// [`TenantError::InvalidId`], [`TenantError::Unknown`], [`TenantError::Suspended`],
    /// [`TenantError::NotServing`] (being created, archived…), [`TenantError::Stale`] (the
    /// directory's changes unread past `max_staleness`), [`TenantError::InvalidRecord`],
    /// [`Error::DbConfig`] when the database's configuration chooses a pool,
    /// [`Error::Closed`], driver errors reading the directory.
    pub fn route<'a>(&'a self, id: &'a str) -> TenantRoute<'a> {
        // Warm, the route is found here, before the future is polled: the future only
        // hands it over. Cold, it is a read of the directory.
        match self.warm_lease(id) {
            WarmLease::Hit(lease) => match record_of(&lease) {
                Some(routed) => TenantRoute(RouteState::Warm(Some(Tenant { lease, routed }))),
                // `warm_lease` hits only tagged entries: not reached.
                None => self.route_cold_boxed(id),
            },
            WarmLease::Refused(e) => TenantRoute(RouteState::Refused(Some(e))),
            WarmLease::Miss => self.route_cold_boxed(id),
        }
    }

    // Boxed (on the cold path only): its state, a read of the directory, would otherwise
    // make every warm call's future that large, and moving it costly.
    #[cold]
    fn route_cold_boxed<'a>(&'a self, id: &'a str) -> TenantRoute<'a> {
        TenantRoute(RouteState::Cold(Box::pin(async move {
            let database = self.dir.database_of(id)?;
            self.route_cold(id, &database).await
        })))
    }

    /// The cached route, if this instance has one: a map lookup, as for `.db(name)`, then
    /// the record's checks. The name is not checked (an entry exists only for a checked one)
    /// and, with a prefix, is put together on the stack (two `&str` joined: no UTF-8 check
    /// needed). Takes no reference count beyond the lease's: a route made into a model
    /// handle costs what `.db(name)` does, plus the record's checks and one hit counted.
    #[inline]
    fn warm_lease(&self, id: &str) -> WarmLease {
        let prefix = self.dir.config.database_prefix.as_str();
        let mut joined = arrayvec::ArrayString::<WARM_NAME_BYTES>::new();
        let name = if prefix.is_empty() {
            id
        } else {
            // Too long for a database name: the cold path says why.
            if joined.try_push_str(prefix).is_err() || joined.try_push_str(id).is_err() {
                return WarmLease::Miss;
            }
            joined.as_str()
        };
        let Some(lease) = self.registry.lease_cached(name) else {
            return WarmLease::Miss;
        };
        // Only a route places a tagged entry, and only for the tenant whose database the
        // name is (the cold path refuses a record naming another database): the tag is
        // this tenant's record.
        let Some(record) = lease
            .entry
            .tag()
            .and_then(|tag| tag.downcast_ref::<Routed>())
        else {
            return WarmLease::Miss;
        };
        debug_assert_eq!(record.info.id, id);
        if let Some(since) = self.dir.too_stale() {
            return WarmLease::Refused(Box::new(
                TenantError::Stale {
                    tenant: id.to_owned(),
                    since,
                }
                .into(),
            ));
        }
        // One counter per route: the directory-wide hits are the clusters' sum.
        record.figures.hits.add(1);
        if record.info.state != TenantState::Active {
            return WarmLease::Refused(Box::new(refusal(&record.info)));
        }
        WarmLease::Hit(lease)
    }

    async fn route_cold(&self, id: &str, database: &str) -> Result<Tenant> {
        let cell = Arc::clone(
            self.dir
                .reading
                .entry(id.into())
                .or_insert_with(|| Arc::new(OnceCell::new()))
                .value(),
        );
        let waiter = InFlight {
            map: &self.dir.reading,
            id,
            cell,
        };
        let routed = waiter
            .cell
            .get_or_try_init(|| async {
                self.dir.figures.reads.fetch_add(1, Ordering::Relaxed);
                let store = self.dir.store(&self.registry).await?;
                let doc = store.get(id).await?.ok_or_else(|| TenantError::Unknown {
                    tenant: id.to_owned(),
                })?;
                let info = self.dir.decode(&doc)?;
                if info.database != database {
                    return Err(Error::from(TenantError::InvalidRecord {
                        tenant: id.to_owned(),
                        field: "database".into(),
                        problem: format!(
                            "{:?} is not the tenant's database name {database:?}",
                            info.database
                        ),
                    }));
                }
                let routed = self.dir.routed(info);
                routed.figures.reads.fetch_add(1, Ordering::Relaxed);
                Ok(routed)
            })
            .await?;
        let routed = Arc::clone(routed);
        drop(waiter);
        // Another caller may have placed it from the same read already.
        if let Some(lease) = self.registry.lease_cached(database) {
            if let Some(cached) = record_of(&lease) {
                if cached.info.version >= routed.info.version && cached.info.id == id {
                    return serving(Tenant {
                        lease,
                        routed: cached,
                    });
                }
            }
        }
        let pool = self.dir.pool_of(&routed.info.cluster)?;
        let tag: Arc<dyn std::any::Any + Send + Sync> = Arc::clone(&routed) as _;
        let lease = self.registry.place(database, pool, tag)?;
        serving(Tenant { lease, routed })
    }

    /// Creates tenant `id`: chooses its cluster by the placement (capacities respected),
    /// records it as `creating`, prepares its database (migrated to the latest version when
    /// lazy migrations are configured), then makes it `active`. Resumes a `creating` tenant
    /// left by a crash. A tenant that exists and is not `creating` is refused.
    ///
    /// # Errors
    /// [`TenantError::InvalidId`], [`TenantError::AlreadyExists`],
    /// [`TenantError::UnknownCluster`] (an explicit placement), [`TenantError::FleetFull`],
    /// a failed migration ([`Error::Migration`]; the tenant stays `creating`),
    /// [`Error::DbConfig`] when the database's configuration chooses a pool (before anything
    /// is written), driver errors.
    ///
    /// The work is a task of its own: dropping this future does not cut it between taking a
    /// cluster's place and recording the tenant (which would leak the place); the create
    /// goes on to its end.
    pub async fn create(&self, id: &str, options: CreateTenant) -> Result<TenantInfo> {
        let this = self.clone();
        let id = id.to_owned();
        match tokio::spawn(async move { this.create_now(&id, options).await }).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(Error::Closed),
        }
    }

    async fn create_now(&self, id: &str, options: CreateTenant) -> Result<TenantInfo> {
        let database = self.dir.database_of(id)?;
        if let Placement::On(name) = &options.placement {
            self.dir.pool_of(name)?;
        }
        // Refused before anything is written: a configuration that chooses the pool.
        self.registry.placeable(&database, "its cluster")?;
        let store = self.dir.store(&self.registry).await?;
        let info = match store.get(id).await? {
            Some(d) => self.dir.decode(&d)?,
            None => self.record_new(&store, id, &database, &options).await?,
        };
        if info.state != TenantState::Creating {
            return Err(TenantError::AlreadyExists {
                tenant: id.to_owned(),
                state: info.state.as_str().to_owned(),
            }
            .into());
        }
        self.prepare(&info).await?;
        let seq = store.next_seq().await?;
        let done = store
            .set_state(id, &["creating"], "active", seq, now_ms())
            .await?;
        match done {
            Some(d) => Ok(self.dir.decode(&d)?),
            // Another instance finished the same create meanwhile.
            None => self.get(id).await,
        }
    }

    /// Places a new tenant and records it as `creating`; a concurrent create of the same id
    /// by another instance wins or loses on the directory's unique `_id`.
    async fn record_new(
        &self,
        store: &Store,
        id: &str,
        database: &str,
        options: &CreateTenant,
    ) -> Result<TenantInfo> {
        let cluster = self.take_place(store, &options.placement).await?;
        let now = now_ms();
        let info = TenantInfo {
            id: id.to_owned(),
            database: database.to_owned(),
            cluster: cluster.clone(),
            state: TenantState::Creating,
            version: 1,
            seq: store.next_seq().await?,
            labels: options.labels.clone(),
            created_at_ms: now,
            updated_at_ms: now,
            archive: None,
        };
        if store.insert(info.to_document()).await? {
            return Ok(info);
        }
        // Taken meanwhile: give the place back, and go on with what is recorded.
        store.release(&cluster).await?;
        match store.get(id).await? {
            Some(d) => Ok(self.dir.decode(&d)?),
            None => Err(TenantError::AlreadyExists {
                tenant: id.to_owned(),
                state: format!("database {database:?} taken on {cluster}"),
            }
            .into()),
        }
    }

    /// Chooses a cluster by `placement` and takes one of its places (capacities
    /// respected, atomically); the cluster's name.
    async fn take_place(&self, store: &Store, placement: &Placement) -> Result<String> {
        if let Placement::On(name) = placement {
            if !self.dir.clusters.contains_key(name) {
                return Err(TenantError::UnknownCluster {
                    cluster: name.clone(),
                }
                .into());
            }
        }
        let counts = store.counts().await?;
        let loads: BTreeMap<String, ClusterLoad> = self
            .dir
            .placeable()
            .into_iter()
            .chain(match placement {
                Placement::On(name) => Some(name.as_str()),
                _ => None,
            })
            .filter_map(|name| {
                let c = self.dir.clusters.get(name)?;
                Some((
                    name.to_owned(),
                    ClusterLoad {
                        name: name.to_owned(),
                        tenants: counts.get(name).copied().unwrap_or(0),
                        capacity: c.capacity,
                        weight: c.weight,
                        data_bytes: None,
                    },
                ))
            })
            .collect();
        let mut loads = loads;
        if matches!(placement, Placement::LeastData) {
            for load in loads.values_mut() {
                load.data_bytes = self.data_bytes(&load.name).await?;
            }
        }
        for name in placement.order(&loads) {
            let capacity = self.dir.clusters.get(&name).and_then(|c| c.capacity);
            if store.reserve(&name, capacity).await? {
                return Ok(name);
            }
        }
        Err(TenantError::FleetFull {
            clusters: loads.into_keys().collect(),
        }
        .into())
    }

    /// The tenant's database made ready on its cluster: migrated when migrations are
    /// configured (resumable through the ledger), else created with a first write.
    async fn prepare(&self, info: &TenantInfo) -> Result<()> {
        let pool = self.dir.pool_of(&info.cluster)?;
        let tag: Arc<dyn std::any::Any + Send + Sync> = self.dir.routed(info.clone());
        let lease = self.registry.place(&info.database, pool, tag)?;
        match &self.migrations {
            Some(migrations) => {
                let report = Migrator::new(&self.registry, &self.counters)
                    .apply_on(lease.clone(), migrations)
                    .await?;
                if let Some(f) = report.failed {
                    return Err(crate::floor::migration_error::MigrationError::Failed {
                        database: info.database.clone(),
                        version: f.version,
                        name: f.name,
                        step: f.step,
                        message: f.error.to_string(),
                    }
                    .into());
                }
            }
            None => {
                // MongoDB creates a database with its first collection.
                let _ = lease
                    .entry
                    .database
                    .create_collection(crate::features::migrate::MIGRATIONS_COLLECTION)
                    .await;
            }
        }
        // The `creating` record must not stay cached as this instance's route.
        self.registry.forget(&info.database);
        Ok(())
    }

    /// Suspends tenant `id`: every instance refuses it ([`TenantError::Suspended`]) within
    /// the directory's refresh bound; this one at once.
    ///
    /// # Errors
    /// [`TenantError::WrongState`] unless it is active, [`TenantError::Unknown`], driver
    /// errors.
    pub async fn suspend(&self, id: &str) -> Result<TenantInfo> {
        self.change(id, "active", "suspended", "suspend").await
    }

    /// Resumes a suspended tenant.
    ///
    /// # Errors
    /// As [`suspend`](Self::suspend), unless it is suspended.
    pub async fn resume(&self, id: &str) -> Result<TenantInfo> {
        self.change(id, "suspended", "active", "resume").await
    }

    async fn change(
        &self,
        id: &str,
        from: &str,
        to: &str,
        wanted: &'static str,
    ) -> Result<TenantInfo> {
        let database = self.dir.database_of(id)?;
        let store = self.dir.store(&self.registry).await?;
        // Checked first, so that a change refused for its state takes no sequence number:
        // an unused number is a gap readers wait for (see `ChangeReader`).
        let before = self.get(id).await?;
        if before.state.as_str() != from {
            return Err(TenantError::WrongState {
                tenant: id.to_owned(),
                state: before.state.as_str().to_owned(),
                wanted,
            }
            .into());
        }
        let seq = store.next_seq().await?;
        match store.set_state(id, &[from], to, seq, now_ms()).await? {
            Some(d) => {
                self.registry.forget(&database);
                Ok(self.dir.decode(&d)?)
            }
            None => {
                let now = self.get(id).await?;
                Err(TenantError::WrongState {
                    tenant: id.to_owned(),
                    state: now.state.as_str().to_owned(),
                    wanted,
                }
                .into())
            }
        }
    }
}

// The directory, seen from model handles: `model.tenant(id)`.
impl TenantRouter for Tenants {
    #[inline]
    fn warm(&self, id: &str) -> WarmLease {
        self.warm_lease(id)
    }

    fn cold<'a>(&'a self, id: &'a str) -> ColdLease<'a> {
        Box::pin(async move {
            let database = self.dir.database_of(id)?;
            Ok(self.route_cold(id, &database).await?.lease)
        })
    }
}

/// The routed tenant, or why it is not served.
fn serving(t: Tenant) -> Result<Tenant> {
    match t.routed.info.state {
        TenantState::Active => Ok(t),
        _ => Err(refusal(&t.routed.info)),
    }
}

/// Why a tenant that is not active is not served.
#[cold]
fn refusal(info: &TenantInfo) -> Error {
    match info.state {
        TenantState::Suspended => TenantError::Suspended {
            tenant: info.id.clone(),
        }
        .into(),
        other => TenantError::NotServing {
            tenant: info.id.clone(),
            state: other.as_str().to_owned(),
        }
        .into(),
    }
}

/// The longest database name a warm route puts together: longer ones are never cached.
const WARM_NAME_BYTES: usize = crate::floor::name::MAX_DATABASE_NAME_BYTES;

/// The future of [`Tenants::route`] and [`PolyMongo::tenant`](crate::PolyMongo::tenant).
///
/// When this instance has the tenant's route cached, the route was found when the future was
/// made: the first poll hands it over. Otherwise it reads the directory (boxed, so a warm
/// route's future stays small). Dropping it at any point is safe: a read shared with other
/// callers goes on for them, and nothing is left behind for this one.
#[must_use = "futures do nothing unless awaited"]
pub struct TenantRoute<'a>(RouteState<'a>);

// The warm states hold the tenant (or a boxed refusal) rather than a `Result<Tenant>`: the
// crate's error is large, and a warm route's future is made, moved and polled on every call.
enum RouteState<'a> {
    Warm(Option<Tenant>),
    Refused(Option<Box<Error>>),
    Cold(std::pin::Pin<Box<dyn std::future::Future<Output = Result<Tenant>> + Send + 'a>>),
}

impl TenantRoute<'_> {
    #[cold]
    pub(crate) fn refused(e: Error) -> Self {
        TenantRoute(RouteState::Refused(Some(Box::new(e))))
    }
}

const POLLED_AGAIN: &str = "`TenantRoute` polled after completion";

impl std::future::Future for TenantRoute<'_> {
    type Output = Result<Tenant>;

    #[inline]
    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<Tenant>> {
        // Polling again after `Ready` breaks the `Future` contract: it panics, as
        // `std::future::Ready` does.
        match &mut self.get_mut().0 {
            RouteState::Warm(tenant) => {
                std::task::Poll::Ready(Ok(tenant.take().expect(POLLED_AGAIN)))
            }
            RouteState::Refused(e) => std::task::Poll::Ready(Err(*e.take().expect(POLLED_AGAIN))),
            RouteState::Cold(read) => read.as_mut().poll(cx),
        }
    }
}

impl std::fmt::Debug for TenantRoute<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.0 {
            RouteState::Warm(_) | RouteState::Refused(_) => "cached",
            RouteState::Cold(_) => "reading the directory",
        };
        f.debug_tuple("TenantRoute").field(&state).finish()
    }
}

/// Keeps this instance's cached entries in step with the directory: every `refresh`, reads
/// the entries changed since the last sequence seen and forgets the cached entries whose
/// version moved. Ends when the manager closes or is dropped.
pub(crate) fn spawn_refresher(
    runtime: &tokio::runtime::Handle,
    dir: Arc<Directory>,
    registry: std::sync::Weak<Registry>,
    mut stop: watch::Receiver<bool>,
) {
    runtime.spawn(async move {
        let mut reader = ChangeReader::default();
        // Where the hooks' story begins: the changes made from now on.
        // Given up as a read of the changes is (see below); the first read then stands in.
        if let Some(registry) = registry.upgrade() {
            let start = async {
                let store = dir.store(&registry).await?;
                store.current_seq().await
            };
            let limit = dir.next_look(dir.config.refresh);
            if let Ok(Ok(seq)) = tokio::time::timeout(limit, start).await {
                reader.tell_above = Some(seq);
            }
        }
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                () = tokio::time::sleep(dir.next_look(dir.config.refresh)) => {}
                () = dir.changed.notified() => {}
            }
            if *stop.borrow() {
                return;
            }
            let Some(registry) = registry.upgrade() else {
                return;
            };
            // A read that hangs (a black-holed network) is given up at the staleness bound:
            // the next one starts on a fresh connection attempt.
            let started = dir.now_ms();
            let limit = dir.next_look(Duration::from_secs(60));
            match tokio::time::timeout(limit, reader.poll(&dir, &registry)).await {
                Ok(Ok(())) => {
                    dir.fresh_at_ms.fetch_max(started, Ordering::Relaxed);
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e.redacted(), "directory refresh failed; next one retries");
                }
                Err(_) => {
                    tracing::debug!(?limit, "directory refresh took too long; next one retries");
                }
            }
            dir.note_staleness();
        }
    });
}

/// Watches the directory's `tenants` collection where the server has change streams: each
/// event wakes the change reader at once, so a change reaches this instance in about one
/// event delivery and one read instead of up to `refresh`. Where streams are missing or
/// break, polling goes on alone; the stream is tried again with a growing pause (up to a
/// minute).
pub(crate) fn spawn_watcher(
    runtime: &tokio::runtime::Handle,
    dir: Arc<Directory>,
    registry: std::sync::Weak<Registry>,
    mut stop: watch::Receiver<bool>,
) {
    runtime.spawn(async move {
        let mut pause = dir.config.refresh;
        loop {
            let Some(reg) = registry.upgrade() else {
                return;
            };
            let stream = match dir.store(&reg).await {
                Ok(store) => store.watch().await,
                Err(e) => Err(e),
            };
            drop(reg);
            match stream {
                Ok(mut stream) => {
                    dir.figures.stream_up.store(true, Ordering::Relaxed);
                    pause = dir.config.refresh;
                    loop {
                        tokio::select! {
                            _ = stop.changed() => return,
                            event = stream.next() => match event {
                                Some(Ok(_)) => {
                                    dir.figures.stream_events.fetch_add(1, Ordering::Relaxed);
                                    dir.changed.notify_one();
                                }
                                Some(Err(e)) => {
                                    tracing::debug!(error = %crate::floor::redacted_error::driver(&e), "directory change stream broke; polling meanwhile");
                                    break;
                                }
                                None => break,
                            }
                        }
                    }
                    dir.figures.stream_up.store(false, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::debug!(error = %e.redacted(), "no change stream on the directory; polling only");
                }
            }
            tokio::select! {
                _ = stop.changed() => return,
                () = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_secs(60));
        }
    });
}

/// The change sequence read so far: everything up to `floor` was seen; above it, what was
/// seen while a gap (a sequence number taken by a writer not written yet) is waited for.
#[derive(Default)]
struct ChangeReader {
    floor: u64,
    gap_since: Option<(u64, Instant)>,
    /// Changes with a sequence number above this are told to `on_tenant_change` hooks: the
    /// sequence's value when the reader started (the manager's build). `None` until read.
    tell_above: Option<u64>,
    /// Sequence numbers above `floor` already told to the hooks: changes past a gap are
    /// read again until the gap closes, and told once.
    told: HashSet<u64>,
}

impl ChangeReader {
    async fn poll(&mut self, dir: &Directory, registry: &Registry) -> Result<()> {
        let store = dir.store(registry).await?;
        let changed = store.changes_since(self.floor).await?;
        let mut seen = HashSet::new();
        for d in &changed {
            let Ok(info) = dir.decode(d) else {
                // An invalid entry is refused where it is routed; here only its version
                // matters, and without one the cached entry (if any) is dropped anyway.
                if let Ok(db) = d.get_str("database") {
                    registry.forget(db);
                }
                continue;
            };
            seen.insert(info.seq);
            let mut invalidated = false;
            if let Some(entry) = registry.peek(&info.database) {
                let cached = entry.tag().and_then(|t| t.downcast_ref::<Routed>());
                let stale = cached.is_none_or(|c| c.info.version < info.version);
                if stale && registry.forget(&info.database) {
                    invalidated = true;
                    dir.figures.invalidations.fetch_add(1, Ordering::Relaxed);
                    if let Some(c) = cached {
                        c.figures.invalidations.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            let fresh = self.told.insert(info.seq);
            if let Some(events) = dir
                .events
                .get()
                .filter(|e| fresh && self.tell_above.is_some_and(|t| info.seq > t) && e.wanted())
            {
                events.send(crate::features::hooks::TenantEvent {
                    tenant: info.id.clone(),
                    cluster: info.cluster.clone(),
                    state: info.state.as_str().to_owned(),
                    version: info.version,
                    invalidated,
                    at: SystemTime::now(),
                });
            }
        }
        // Move the floor over every sequence number seen without a gap; wait for a gap
        // up to GAP_WAIT, then go past it.
        let top = seen.iter().copied().max().unwrap_or(self.floor);
        while self.floor < top {
            let next = self.floor + 1;
            if seen.contains(&next) {
                self.floor = next;
                self.gap_since = None;
                continue;
            }
            match self.gap_since {
                Some((at, since)) if at == next && since.elapsed() >= GAP_WAIT => {
                    self.floor = next;
                    self.gap_since = None;
                }
                Some((at, _)) if at == next => break,
                _ => {
                    self.gap_since = Some((next, Instant::now()));
                    break;
                }
            }
        }
        let floor = self.floor;
        self.told.retain(|seq| *seq > floor);
        // Could not be read at the start: from now on, then.
        if self.tell_above.is_none() {
            self.tell_above = Some(top);
        }
        dir.figures.change_reads.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}
