//! Database name → pool: the lookup every `.db(name)` goes through on a cache miss.
//!
//! A [`Route`] is what configuration says about a database (its pool and handle options); a
//! [`DbSlot`] is a database in use: its name, its pool, and a driver `Database` handle on that
//! pool's client. Slots are made once per database (after the name is validated) and live in a
//! concurrent map. A slot remembers the epoch of the client it was made from; once its pool
//! closes (and the epoch moves on) or the database is reconfigured (the slot is retired), the
//! slot is stale, which tells every cache holding it to resolve again.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use mongodb::options::DatabaseOptions;
use mongodb::Database;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::db_config::{DbConfig, DEFAULT_QUEUE_TIMEOUT};
use crate::error::{Error, Result};
use crate::name::validate_database_name;
use crate::pool::{ClusterPool, PoolKind};
use crate::reaper::Retiring;

/// The configured routing of one database.
pub(crate) struct Route {
    pub(crate) pool: Arc<ClusterPool>,
    pub(crate) config: DbConfig,
    database_options: DatabaseOptions,
    gate: Option<Arc<Gate>>,
}

impl Route {
    pub(crate) fn new(pool: Arc<ClusterPool>, config: DbConfig) -> Self {
        Self {
            database_options: config.database_options(),
            gate: config.max_concurrent_ops.map(|limit| {
                Arc::new(Gate {
                    slots: Arc::new(Semaphore::new(limit as usize)),
                    limit,
                    wait: config.queue_timeout.unwrap_or(DEFAULT_QUEUE_TIMEOUT),
                    entered: AtomicU64::new(0),
                    waited: AtomicU64::new(0),
                    waited_us: AtomicU64::new(0),
                    refused: AtomicU64::new(0),
                })
            }),
            pool,
            config,
        }
    }
}

/// The `max_concurrent_ops` guard of a database, as [`Stats::db`](crate::Stats::db) shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct QueueStats {
    /// The database's `max_concurrent_ops`.
    pub max_concurrent_ops: u32,
    /// Slots held by handles now.
    pub in_use: u32,
    /// Slots taken since the guard was configured.
    pub entered: u64,
    /// `acquire` calls that found no free slot and waited.
    pub waited: u64,
    /// Time those calls waited in all, in microseconds.
    pub waited_total_us: u64,
    /// Calls refused with `Error::Saturated`.
    pub refused: u64,
}

/// The `max_concurrent_ops` guard of one database: a semaphore whose permits live in handles.
pub(crate) struct Gate {
    slots: Arc<Semaphore>,
    limit: u32,
    wait: Duration,
    /// Slots taken, by `db` and `acquire`.
    entered: AtomicU64,
    /// `acquire` calls that had to wait, and for how long in all (µs).
    waited: AtomicU64,
    waited_us: AtomicU64,
    /// Calls refused with `Saturated`.
    refused: AtomicU64,
}

impl Gate {
    /// A slot if one is free now.
    pub(crate) fn try_enter(&self, database: &str) -> Result<OwnedSemaphorePermit> {
        match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(permit) => {
                self.entered.fetch_add(1, Ordering::Relaxed);
                Ok(permit)
            }
            Err(_) => Err(self.saturated(database, Duration::ZERO)),
        }
    }

    /// A slot, waiting up to the database's `queue_timeout`.
    pub(crate) async fn enter(&self, database: &str) -> Result<OwnedSemaphorePermit> {
        if let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() {
            self.entered.fetch_add(1, Ordering::Relaxed);
            return Ok(permit);
        }
        let started = Instant::now();
        let outcome =
            tokio::time::timeout(self.wait, Arc::clone(&self.slots).acquire_owned()).await;
        let waited = started.elapsed();
        self.waited.fetch_add(1, Ordering::Relaxed);
        self.waited_us
            .fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
        match outcome {
            Ok(Ok(permit)) => {
                self.entered.fetch_add(1, Ordering::Relaxed);
                Ok(permit)
            }
            // The semaphore is never closed; a closed one would mean no slot ever again.
            Ok(Err(_)) | Err(_) => Err(self.saturated(database, waited)),
        }
    }

    /// The guard's figures now.
    pub(crate) fn stats(&self) -> QueueStats {
        QueueStats {
            max_concurrent_ops: self.limit,
            in_use: self
                .limit
                .saturating_sub(self.slots.available_permits() as u32),
            entered: self.entered.load(Ordering::Relaxed),
            waited: self.waited.load(Ordering::Relaxed),
            waited_total_us: self.waited_us.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }

    fn saturated(&self, database: &str, waited: Duration) -> Error {
        self.refused.fetch_add(1, Ordering::Relaxed);
        Error::Saturated {
            database: database.to_owned(),
            limit: self.limit,
            waited,
        }
    }
}

/// A database in use.
// The fields a warm `.db(name)` reads come first, so they share one cache line.
#[repr(C)]
pub(crate) struct DbSlot {
    retired: AtomicBool,
    epoch: u64,
    pub(crate) pool: Arc<ClusterPool>,
    pub(crate) gate: Option<Arc<Gate>>,
    pub(crate) database: Database,
}

impl DbSlot {
    /// `false` once the slot's pool was closed or the database reconfigured; holders must
    /// resolve the name again.
    #[inline]
    pub(crate) fn is_live(&self) -> bool {
        !self.retired.load(Ordering::Acquire) && self.pool.is_current(self.epoch)
    }

    pub(crate) fn name(&self) -> &str {
        self.database.name()
    }
}

impl fmt::Debug for DbSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbSlot")
            .field("database", &self.name())
            .field("cluster", &self.pool.label())
            .field("live", &self.is_live())
            .finish()
    }
}

/// Routes database names to pools.
pub(crate) struct Router {
    main: Arc<ClusterPool>,
    main_uri: String,
    /// Shared pools of the other clusters, by connection string.
    shared: DashMap<String, Arc<ClusterPool>>,
    routes: DashMap<Box<str>, Arc<Route>>,
    slots: DashMap<Box<str>, Arc<DbSlot>>,
    /// Dedicated pools no database is routed to any more, still to be closed.
    draining: Mutex<Vec<Arc<ClusterPool>>>,
    /// Most dedicated pools open at once (the least recently used idle one is closed first).
    max_dedicated: usize,
    /// Serialises the opening of dedicated pools, so the bound holds under concurrency.
    opening: Mutex<()>,
    retiring: Arc<Retiring>,
    closed: AtomicBool,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("main", &self.main)
            .field("routes", &self.routes.len())
            .field("databases", &self.slots.len())
            .finish()
    }
}

impl Router {
    pub(crate) fn new(
        main: Arc<ClusterPool>,
        main_uri: String,
        max_dedicated: usize,
        retiring: Arc<Retiring>,
    ) -> Self {
        Self {
            main,
            main_uri,
            shared: DashMap::new(),
            routes: DashMap::new(),
            slots: DashMap::new(),
            draining: Mutex::new(Vec::new()),
            max_dedicated,
            opening: Mutex::new(()),
            retiring,
            closed: AtomicBool::new(false),
        }
    }

    /// Marks the router closed; `true` if it already was.
    pub(crate) fn close(&self) -> bool {
        self.closed.swap(true, Ordering::AcqRel)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn draining(&self) -> std::sync::MutexGuard<'_, Vec<Arc<ClusterPool>>> {
        self.draining.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The pool of the main cluster (the `uri` option).
    pub(crate) fn main_pool(&self) -> &Arc<ClusterPool> {
        &self.main
    }

    /// The shared pool of the cluster at `uri`, if one exists (the main one included).
    pub(crate) fn shared_pool(&self, uri: &str) -> Option<Arc<ClusterPool>> {
        if uri == self.main_uri {
            return Some(Arc::clone(&self.main));
        }
        self.shared.get(uri).map(|p| Arc::clone(&p))
    }

    /// Registers the shared pool of `uri`, or returns the one registered first.
    pub(crate) fn add_shared_pool(&self, uri: &str, pool: Arc<ClusterPool>) -> Arc<ClusterPool> {
        Arc::clone(self.shared.entry(uri.to_owned()).or_insert(pool).value())
    }

    /// The concurrency guard of `name`'s route, if it has one.
    pub(crate) fn gate(&self, name: &str) -> Option<Arc<Gate>> {
        self.routes.get(name).and_then(|r| r.gate.clone())
    }

    /// The configured route of `name`, if any.
    pub(crate) fn route(&self, name: &str) -> Option<Arc<Route>> {
        self.routes.get(name).map(|r| Arc::clone(&r))
    }

    /// The pool `name` is routed to, without opening it. Checks the name.
    pub(crate) fn pool_of(&self, name: &str) -> Result<Arc<ClusterPool>> {
        validate_database_name(name)?;
        if self.is_closed() {
            return Err(Error::Closed);
        }
        Ok(self
            .route(name)
            .map_or_else(|| Arc::clone(&self.main), |r| Arc::clone(&r.pool)))
    }

    /// Routes `name` by `route` from now on. A slot made under the old route is retired (so
    /// cached handles resolve again); a dedicated pool left without its database is kept for
    /// closing.
    pub(crate) fn install(&self, name: &str, route: Route) {
        let new_pool = Arc::clone(&route.pool);
        let old = self.routes.insert(name.into(), Arc::new(route));
        // After the route: a resolve holding the slot's entry lock either read the new route,
        // or made its slot before this removal, which retires it.
        if let Some((_, slot)) = self.slots.remove(name) {
            slot.retired.store(true, Ordering::Release);
        }
        if let Some(old) = old {
            if old.pool.kind() == PoolKind::Dedicated && !Arc::ptr_eq(&old.pool, &new_pool) {
                self.draining().push(Arc::clone(&old.pool));
            }
        }
        tracing::debug!(database = name, cluster = %new_pool.label(), kind = ?new_pool.kind(), "database configured");
    }

    /// Every pool the router knows, each once.
    pub(crate) fn pools(&self) -> Vec<Arc<ClusterPool>> {
        let mut all = vec![Arc::clone(&self.main)];
        all.extend(self.shared.iter().map(|p| Arc::clone(&p)));
        all.extend(
            self.routes
                .iter()
                .filter(|r| r.pool.kind() == PoolKind::Dedicated)
                .map(|r| Arc::clone(&r.pool)),
        );
        all.extend(self.draining().iter().cloned());
        dedup(&mut all);
        all
    }

    /// Dedicated pools, routed or draining, each once.
    fn dedicated_pools(&self) -> Vec<Arc<ClusterPool>> {
        let mut all: Vec<_> = self
            .routes
            .iter()
            .filter(|r| r.pool.kind() == PoolKind::Dedicated)
            .map(|r| Arc::clone(&r.pool))
            .collect();
        all.extend(self.draining().iter().cloned());
        dedup(&mut all);
        all
    }

    /// Dedicated pools with a client open now.
    pub(crate) fn open_dedicated(&self) -> usize {
        self.dedicated_pools()
            .iter()
            .filter(|p| p.is_open())
            .count()
    }

    /// One reaper pass: closes routed pools idle past their `ttl` and draining pools no handle
    /// uses. Returns the shortest `ttl` among the pools still open.
    pub(crate) fn reap(&self) -> Option<Duration> {
        for pool in self.dedicated_pools() {
            if pool.idle_expired() {
                self.close_idle(&pool);
            }
        }
        self.draining().retain(|pool| {
            if pool.is_open() {
                if let Some(client) = pool.begin_idle_close() {
                    self.retiring.retire(pool, client);
                }
            }
            pool.is_open()
        });
        self.dedicated_pools()
            .iter()
            .filter(|p| p.is_open())
            .filter_map(|p| p.ttl())
            .min()
    }

    fn close_idle(&self, pool: &Arc<ClusterPool>) -> bool {
        match pool.begin_idle_close() {
            Some(client) => {
                self.retiring.retire(pool, client);
                true
            }
            None => false,
        }
    }

    /// Before `opening` opens: while `max_dedicated` dedicated pools are open, closes the
    /// least recently used one that no handle uses. If every open pool is in use the bound is
    /// exceeded rather than a request refused, and a warning says so.
    fn make_room(&self, opening: &Arc<ClusterPool>) {
        let mut open: Vec<_> = self
            .dedicated_pools()
            .into_iter()
            .filter(|p| p.is_open() && !Arc::ptr_eq(p, opening))
            .collect();
        // Least recently used last, so `pop` takes it.
        open.sort_by_cached_key(|p| p.idle_ms());
        let mut excess = (open.len() + 1).saturating_sub(self.max_dedicated);
        while excess > 0 {
            let Some(pool) = open.pop() else { break };
            if self.close_idle(&pool) {
                tracing::debug!(cluster = %pool.label(), "least recently used dedicated pool closed");
                excess -= 1;
            }
        }
        if excess > 0 {
            tracing::warn!(
                max_dedicated_pools = self.max_dedicated,
                "every open dedicated pool is in use; opening one more than the bound"
            );
        }
    }

    /// The slot of `name`, made on first use. Validates the name only then: a name found in
    /// the map was valid when it was put there.
    pub(crate) fn resolve(&self, name: &str) -> Result<Arc<DbSlot>> {
        if let Some(slot) = self.slots.get(name) {
            if slot.is_live() {
                return Ok(Arc::clone(&slot));
            }
        }
        validate_database_name(name)?;
        // The route is read under the slot's entry lock: see `install`.
        match self.slots.entry(name.into()) {
            Entry::Occupied(e) if e.get().is_live() => Ok(Arc::clone(e.get())),
            Entry::Occupied(mut e) => {
                let slot = self.new_slot(name)?;
                e.insert(Arc::clone(&slot));
                Ok(slot)
            }
            Entry::Vacant(e) => {
                let slot = self.new_slot(name)?;
                Ok(Arc::clone(e.insert(slot).value()))
            }
        }
    }

    fn new_slot(&self, name: &str) -> Result<Arc<DbSlot>> {
        // A pool configured while `close_all` ran was not closed by it: refuse here too.
        if self.is_closed() {
            return Err(Error::Closed);
        }
        let route = self.route(name);
        let pool = route.as_ref().map_or(&self.main, |r| &r.pool);
        let (client, epoch) = if pool.kind() == PoolKind::Dedicated && !pool.is_open() {
            let _one_opening = self.opening.lock().unwrap_or_else(|p| p.into_inner());
            if !pool.is_open() {
                self.make_room(pool);
            }
            pool.client()?
        } else {
            pool.client()?
        };
        let database = match &route {
            Some(r) => client.database_with_options(name, r.database_options.clone()),
            None => client.database(name),
        };
        tracing::debug!(database = name, cluster = %pool.label(), "database routed");
        Ok(Arc::new(DbSlot {
            database,
            pool: Arc::clone(pool),
            gate: route.as_ref().and_then(|r| r.gate.clone()),
            epoch,
            retired: AtomicBool::new(false),
        }))
    }

    /// Each database in use with its pool.
    pub(crate) fn databases(&self) -> Vec<(String, Arc<ClusterPool>)> {
        self.slots
            .iter()
            .filter(|s| s.is_live())
            .map(|s| (s.key().to_string(), Arc::clone(&s.pool)))
            .collect()
    }

    /// Databases served by pool `id`, sorted, at most `MAX_LISTED_DATABASES`; with `only`,
    /// those of `only` routed to it (a database without a route is on the main pool).
    pub(crate) fn served(
        &self,
        id: u64,
        only: Option<&std::collections::HashSet<String>>,
    ) -> Vec<String> {
        let mut names: Vec<String> = match only {
            Some(only) => only
                .iter()
                .filter(|name| {
                    self.route(name)
                        .map_or(self.main.id() == id, |r| r.pool.id() == id)
                })
                .cloned()
                .collect(),
            None => {
                let mut all: Vec<String> = self
                    .routes
                    .iter()
                    .filter(|r| r.pool.id() == id)
                    .map(|r| r.key().to_string())
                    .collect();
                all.extend(
                    self.slots
                        .iter()
                        .filter(|s| s.pool.id() == id)
                        .map(|s| s.key().to_string()),
                );
                all
            }
        };
        names.sort_unstable();
        names.dedup();
        names.truncate(crate::stats::MAX_LISTED_DATABASES);
        names
    }

    /// Each routed dedicated pool with its database's configuration.
    pub(crate) fn dedicated_owners(&self) -> Vec<(Arc<ClusterPool>, DbConfig)> {
        self.routes
            .iter()
            .filter(|r| r.pool.kind() == PoolKind::Dedicated)
            .map(|r| (Arc::clone(&r.pool), r.config.clone()))
            .collect()
    }

    /// Number of databases resolved and still routed.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// The clients shutting down in the background.
    pub(crate) fn retiring(&self) -> &Arc<Retiring> {
        &self.retiring
    }

    /// Forgets every slot (their pools are closing, so they are already stale).
    pub(crate) fn clear(&self) {
        self.slots.clear();
    }
}

fn dedup(pools: &mut Vec<Arc<ClusterPool>>) {
    let mut seen = std::collections::HashSet::new();
    pools.retain(|p| seen.insert(Arc::as_ptr(p)));
}
