//! The registry layer: one entry per database in use, with one eviction policy, and the one
//! lease protocol every path that touches a database goes through.
//!
//! **Resolve → lease → re-check.** [`Registry::lease`] finds (or makes) the database's entry,
//! takes a lease on its pool (dedicated pools count them, so they are not closed for
//! idleness under it), then checks the entry is still live: a pool closed between the lookup
//! and the lease shows as a changed epoch, and the loop resolves again (which reopens the
//! pool). Model handles, `run`, change streams, transactions, `ping`, `stats().db`,
//! `client_for` and the bulk tasks all lease through here, so none of them can run on a
//! retiring client, and a dedicated pool is only ever opened by [`Routes::client_of`], under
//! the `max_dedicated_pools` bound.
//!
//! **Eviction.** An entry is in use while anything besides the registry holds it (the lease
//! holds an `Arc`), so an entry is removed only when its reference count is one, checked
//! under the map's shard lock, where no reader can clone it meanwhile. The housekeeping pass
//! removes entries idle past `database_idle_timeout`, and, past `max_cached_databases`, the
//! least recently used ones, with everything in them.

pub(crate) mod entry;
pub(crate) mod eviction;
pub(crate) mod first_use;
pub(crate) mod gate;
pub(crate) mod metric_rows;
pub(crate) mod routes;
pub(crate) mod usage;

use std::any::Any;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use dashmap::mapref::entry::Entry as MapEntry;
use dashmap::DashMap;
use mongodb::event::command::CommandEvent;
use mongodb::event::EventHandler;
use mongodb::options::ServerAddress;
use tokio::sync::Notify;

use crate::floor::error::{Error, Result};
use crate::floor::name::validate_database_name;
use crate::pool::cluster::{ClusterPool, PoolLease};
use crate::pool::cmap::ConnectionReturned;
use entry::{Closable, DbEntry};
use first_use::FirstUse;
use routes::{Route, Routes};
use usage::{DbUsage, Usage, UsageAnalytics};

/// The limits of the registry, from the options.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) idle_timeout: Duration,
    pub(crate) max_cached: usize,
}

/// Every database in use, by name.
pub(crate) struct Registry {
    routes: Routes,
    entries: DashMap<Box<str>, Arc<DbEntry>>,
    origin: Instant,
    /// The coarse clock entries are stamped with, in ms since `origin`; moved on by each
    /// housekeeping pass and each new entry, so a warm lookup reads no clock.
    now_ms: AtomicU64,
    limits: Limits,
    closed: AtomicBool,
    usage: Option<Arc<Usage>>,
    /// Woken when the cache bound is passed, so the housekeeper trims at once.
    pub(crate) over_bound: Notify,
    /// Managed streams on a whole cluster (not of one database).
    cluster_streams: Mutex<Vec<(u64, Weak<dyn Closable>)>>,
    /// Done before a database's first ready handle, if configured.
    first_use: OnceLock<Arc<dyn FirstUse>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("databases", &self.entries.len())
            .field("routes", &self.routes)
            .finish()
    }
}

/// A database leased for a piece of work: its entry (so it is not forgotten) and, on a
/// dedicated pool, a claim on the pool (so it is not closed for idleness).
pub(crate) struct DbLease {
    pub(crate) entry: Arc<DbEntry>,
    pub(crate) pool_lease: Option<PoolLease>,
}

impl Clone for DbLease {
    fn clone(&self) -> Self {
        Self {
            entry: Arc::clone(&self.entry),
            pool_lease: self.pool_lease.clone(),
        }
    }
}

impl fmt::Debug for DbLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.entry.fmt(f)
    }
}

impl Registry {
    pub(crate) fn new(routes: Routes, limits: Limits, usage: Option<Arc<Usage>>) -> Self {
        Self {
            routes,
            entries: DashMap::new(),
            origin: Instant::now(),
            now_ms: AtomicU64::new(0),
            limits,
            closed: AtomicBool::new(false),
            usage,
            over_bound: Notify::new(),
            cluster_streams: Mutex::new(Vec::new()),
            first_use: OnceLock::new(),
        }
    }

    /// Sets the work done before each database's first ready handle; `false` if one was
    /// set already (it stays).
    pub(crate) fn set_first_use(&self, work: Arc<dyn FirstUse>) -> bool {
        self.first_use.set(work).is_ok()
    }

    /// Whether first-use work is configured.
    #[inline]
    pub(crate) fn has_first_use(&self) -> bool {
        self.first_use.get().is_some()
    }

    /// Does the first-use work on the leased database unless it was done for its entry.
    ///
    /// # Errors
    /// The work's error.
    pub(crate) async fn first_use(&self, lease: &DbLease) -> Result<()> {
        let Some(work) = self.first_use.get() else {
            return Ok(());
        };
        let mark = lease.entry.model(first_use::Prepared::new);
        mark.ensure(work.as_ref(), lease).await
    }

    pub(crate) fn routes(&self) -> &Routes {
        &self.routes
    }

    pub(crate) fn usage(&self) -> Option<&Arc<Usage>> {
        self.usage.as_ref()
    }

    /// Marks the registry closed; `true` if it already was.
    pub(crate) fn close(&self) -> bool {
        self.closed.swap(true, Ordering::SeqCst)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Moves the coarse clock on; returns it.
    pub(crate) fn tick(&self) -> u64 {
        let now = self.origin.elapsed().as_millis() as u64;
        self.now_ms.fetch_max(now, Ordering::Relaxed);
        now
    }

    #[inline]
    fn now(&self) -> u64 {
        self.now_ms.load(Ordering::Relaxed)
    }

    /// Databases cached now.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The live entry of `name` with a lease, without validating the name or making an
    /// entry: the hot path of a warm `.db(name)`. `None` sends the caller to
    /// [`lease`](Self::lease).
    #[inline(always)]
    pub(crate) fn lease_cached(&self, name: &str) -> Option<DbLease> {
        let entry = {
            let hit = self.entries.get(name)?;
            if !hit.is_live() {
                return None;
            }
            Arc::clone(hit.value())
        };
        let pool_lease = entry.pool.lease();
        // Checked again after the lease is taken: see `ClusterPool::lease`.
        if pool_lease.is_some() && !entry.is_live() {
            return None;
        }
        entry.touch(self.now());
        Some(DbLease { entry, pool_lease })
    }

    /// The entry of `name` (made on first use) with a lease, taken so that the entry is still
    /// live: resolve → lease → re-check.
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::Closed`], or the driver's error opening a pool.
    pub(crate) fn lease(&self, name: &str) -> Result<DbLease> {
        loop {
            if let Some(lease) = self.lease_cached(name) {
                return Ok(lease);
            }
            let entry = self.resolve(name)?;
            let pool_lease = entry.pool.lease();
            if entry.is_live() {
                entry.touch(self.now());
                return Ok(DbLease { entry, pool_lease });
            }
        }
    }

    /// The entry of `name`, made on first use (or remade when the old one is stale). The name
    /// is validated only then: a name found in the map was valid when it was put there.
    fn resolve(&self, name: &str) -> Result<Arc<DbEntry>> {
        validate_database_name(name)?;
        if self.is_closed() {
            return Err(Error::Closed);
        }
        let made = match self.entries.entry(name.into()) {
            MapEntry::Occupied(e) if e.get().is_live() => return Ok(Arc::clone(e.get())),
            MapEntry::Occupied(mut e) => {
                let entry = self.new_entry(name)?;
                e.get().retire();
                e.insert(Arc::clone(&entry));
                entry
            }
            MapEntry::Vacant(e) => {
                let entry = self.new_entry(name)?;
                Arc::clone(e.insert(entry).value())
            }
        };
        if self.entries.len() > self.limits.max_cached {
            self.over_bound.notify_one();
        }
        Ok(made)
    }

    /// The entry of `name` made anew on `pool` with placement `tag` (a higher layer's
    /// record of where the database lives), replacing any cached one, with a lease. The old
    /// entry is retired (handles taken earlier keep working on its pool) and its managed
    /// streams end, as for a re-route.
    ///
    /// The database's configuration ([`DbConfig`](crate::DbConfig), if any) applies, except
    /// its pool: read preference, read and write concerns, `max_concurrent_ops` and
    /// `queue_timeout` hold on the placed entry as on any other; a configuration that would
    /// choose the pool (`uri`, a dedicated pool) is refused, never silently ignored.
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::Closed`], [`Error::DbConfig`] for a configuration
    /// that chooses the pool, or the driver's error opening the pool.
    pub(crate) fn place(
        &self,
        name: &str,
        pool: &Arc<ClusterPool>,
        tag: Arc<dyn Any + Send + Sync>,
    ) -> Result<DbLease> {
        validate_database_name(name)?;
        if self.is_closed() {
            return Err(Error::Closed);
        }
        let route = self.placeable(name, pool.label())?;
        let (client, epoch) = self.routes.client_of(pool)?;
        let database = match &route {
            Some(r) => client.database_with_options(name, r.database_options.clone()),
            None => client.database(name),
        };
        let entry = Arc::new(DbEntry::new(
            database,
            Arc::clone(pool),
            epoch,
            route,
            self.usage.clone(),
            self.tick(),
            Some(tag),
        ));
        if let Some(old) = self.entries.insert(name.into(), Arc::clone(&entry)) {
            old.retire();
            old.close_streams();
        }
        if self.entries.len() > self.limits.max_cached {
            self.over_bound.notify_one();
        }
        let pool_lease = entry.pool.lease();
        entry.touch(self.now());
        Ok(DbLease { entry, pool_lease })
    }

    /// The configured route of `name` if a higher layer may place it on a pool of its choice
    /// (`on`, for the error): its configuration may not choose the pool.
    ///
    /// # Errors
    /// [`Error::DbConfig`] naming the field that chooses a pool.
    pub(crate) fn placeable(&self, name: &str, on: &str) -> Result<Option<Arc<Route>>> {
        let route = self.routes.route(name);
        let Some(r) = &route else {
            return Ok(None);
        };
        let c = &r.config;
        let field = if c.uri.is_some() {
            "uri"
        } else if c.auto_close {
            "auto_close"
        } else if c.max_connections.is_some() {
            "max_connections"
        } else if c.min_connections.is_some() {
            "min_connections"
        } else {
            return Ok(route);
        };
        Err(Error::DbConfig {
            database: name.to_owned(),
            field,
            message: format!(
                "chooses a pool, but the tenant directory places this database on {on}: keep \
                 only read preference, concerns, max_concurrent_ops and queue_timeout in its \
                 configuration"
            ),
        })
    }

    /// Forgets `name`'s entry (a higher layer learnt that its placement changed): it is
    /// retired and its managed streams end; the next use makes a new one. `false` when none
    /// was cached.
    pub(crate) fn forget(&self, name: &str) -> bool {
        match self.entries.remove(name) {
            Some((_, old)) => {
                old.retire();
                old.close_streams();
                true
            }
            None => false,
        }
    }

    fn new_entry(&self, name: &str) -> Result<Arc<DbEntry>> {
        // A pool configured while `close_all` ran was not closed by it: refuse here too.
        if self.is_closed() {
            return Err(Error::Closed);
        }
        let route = self.routes.route(name);
        let pool = route.as_ref().map_or_else(
            || Arc::clone(self.routes.main_pool()),
            |r| Arc::clone(&r.pool),
        );
        let (client, epoch) = self.routes.client_of(&pool)?;
        let database = match &route {
            Some(r) => client.database_with_options(name, r.database_options.clone()),
            None => client.database(name),
        };
        tracing::debug!(database = name, cluster = %pool.label(), "database routed");
        Ok(Arc::new(DbEntry::new(
            database,
            pool,
            epoch,
            route,
            self.usage.clone(),
            self.tick(),
            None,
        )))
    }

    /// The entry of `name` if it is cached (live or not), without making one.
    pub(crate) fn peek(&self, name: &str) -> Option<Arc<DbEntry>> {
        self.entries.get(name).map(|e| Arc::clone(e.value()))
    }

    /// Routes `name` by `route` from now on: its entry is retired (handles taken earlier keep
    /// working on their pool; the next use makes a new entry on the new route) and its
    /// managed change streams end, so their consumers watch again on the new route.
    pub(crate) fn install(&self, name: &str, route: Route) -> usize {
        self.routes.install(name, route);
        match self.entries.remove(name) {
            Some((_, old)) => {
                old.retire();
                old.close_streams()
            }
            None => 0,
        }
    }

    /// One housekeeping pass over the entries: forgets those nothing uses that have been idle
    /// past the idle timeout, then, past the cache bound, the least recently used unused ones.
    /// Returns how many it forgot. Collects candidates under read locks and removes each
    /// under its shard's write lock, re-checking there that nothing took it meanwhile.
    pub(crate) fn sweep(&self) -> usize {
        let now = self.tick();
        let idle_ms = self.limits.idle_timeout.as_millis() as u64;
        let unused = |e: &Arc<DbEntry>| Arc::strong_count(e) == 1;
        let idle = |e: &Arc<DbEntry>| now.saturating_sub(e.last_used()) >= idle_ms;
        let expired: Vec<Box<str>> = self
            .entries
            .iter()
            .filter(|e| unused(e.value()) && (idle(e.value()) || !e.is_live()))
            .map(|e| e.key().clone())
            .collect();
        let mut forgotten = 0;
        for name in expired {
            if self
                .entries
                .remove_if(&name, |_, e| unused(e) && (idle(e) || !e.is_live()))
                .is_some()
            {
                forgotten += 1;
            }
        }
        if self.entries.len() > self.limits.max_cached {
            // Down to nine tenths of the bound, so a burst of new databases wakes this pass
            // once per tenth of the bound, not once per database.
            let target = self.limits.max_cached - self.limits.max_cached / 10;
            let excess = self.entries.len().saturating_sub(target);
            // Reads of the table instead of a copy of every name: the first finds the
            // last-use time below which `excess` unused entries lie, the next take those.
            let mut times: Vec<u64> = self
                .entries
                .iter()
                .filter(|e| unused(e.value()))
                .map(|e| e.last_used())
                .collect();
            if !times.is_empty() {
                let nth = excess.min(times.len()) - 1;
                let cutoff = *times.select_nth_unstable(nth).1;
                drop(times);
                // Every entry older than the cutoff first, then as many as are missing of
                // those at it: taking `excess` of all those at or below it in the table's order
                // could keep an older entry and forget newer ones that tie at the cutoff.
                let mut oldest: Vec<Box<str>> = self
                    .entries
                    .iter()
                    .filter(|e| unused(e.value()) && e.last_used() < cutoff)
                    .map(|e| e.key().clone())
                    .take(excess)
                    .collect();
                let ties = excess - oldest.len();
                oldest.extend(
                    self.entries
                        .iter()
                        .filter(|e| unused(e.value()) && e.last_used() == cutoff)
                        .map(|e| e.key().clone())
                        .take(ties),
                );
                for name in oldest {
                    if self.entries.remove_if(&name, |_, e| unused(e)).is_some() {
                        forgotten += 1;
                    }
                }
            }
        }
        // A table emptied by forgetting keeps its peak capacity (25 bytes a slot) unless told.
        if forgotten > 0 && self.entries.len() < self.entries.capacity() / 4 {
            self.entries.shrink_to_fit();
        }
        if forgotten > 0 {
            tracing::debug!(
                forgotten,
                cached = self.entries.len(),
                "databases forgotten"
            );
        }
        forgotten
    }

    /// Forgets every entry (the manager is closing: their pools are, so they are stale).
    pub(crate) fn clear(&self) {
        for e in self.entries.iter() {
            e.retire();
        }
        self.entries.clear();
        self.entries.shrink_to_fit();
    }

    /// Registers a managed stream on the whole main cluster (counted on the main pool).
    pub(crate) fn add_cluster_stream(&self, stream: Weak<dyn Closable>) -> u64 {
        let id = entry::next_stream_id();
        self.cluster_streams().push((id, stream));
        self.routes.main_pool().stream_opened();
        id
    }

    /// Unregisters a cluster stream.
    pub(crate) fn remove_cluster_stream(&self, id: u64) {
        let mut streams = self.cluster_streams();
        let before = streams.len();
        streams.retain(|(i, _)| *i != id);
        if streams.len() != before {
            self.routes.main_pool().stream_closed();
        }
    }

    fn cluster_streams(&self) -> std::sync::MutexGuard<'_, Vec<(u64, Weak<dyn Closable>)>> {
        self.cluster_streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Ends every managed stream: the cluster-wide ones and every database's. Returns how many.
    pub(crate) fn close_all_streams(&self) -> usize {
        let cluster: Vec<Arc<dyn Closable>> = self
            .cluster_streams()
            .iter()
            .filter_map(|(_, s)| s.upgrade())
            .collect();
        for s in &cluster {
            s.close();
        }
        let entries: Vec<Arc<DbEntry>> = self
            .entries
            .iter()
            .filter(|e| e.stream_count() > 0)
            .map(|e| Arc::clone(e.value()))
            .collect();
        cluster.len() + entries.iter().map(|e| e.close_streams()).sum::<usize>()
    }

    /// With the `commands` usage source: the command handler every client gets, and the
    /// connection listener that ends a command whose connection came back without a reply
    /// event (the operation was cancelled). `registry` is filled once the registry exists
    /// (the pools, made first, need the handler).
    pub(crate) fn command_observer(
        usage: &Arc<Usage>,
        registry: Arc<OnceLock<Weak<Registry>>>,
    ) -> Option<(EventHandler<CommandEvent>, ConnectionReturned)> {
        if usage.source() != UsageAnalytics::Commands {
            return None;
        }
        let pending: Arc<DashMap<(u64, u32), Pending>> = Arc::new(DashMap::new());
        let returned: ConnectionReturned = {
            let pending = Arc::clone(&pending);
            Arc::new(move |address: &ServerAddress, id: u32| {
                if let Some((_, p)) = pending.remove(&connection_key(address, id)) {
                    p.end(p.started.elapsed(), false);
                }
            })
        };
        let usage = Arc::clone(usage);
        let handler = EventHandler::callback(move |event: CommandEvent| match event {
            CommandEvent::Started(e) => {
                let db = registry
                    .get()
                    .and_then(Weak::upgrade)
                    .and_then(|r| r.peek(&e.db))
                    .and_then(|entry| entry.usage().map(|(_, u)| Arc::clone(u)));
                let index = usage::command_index_by_name(&e.command_name);
                let p = Pending {
                    usage: Arc::clone(&usage),
                    db,
                    started: Instant::now(),
                };
                p.start(index);
                let key = connection_key(&e.connection.address, e.connection.id);
                // One command at a time per connection: a command still pending there was
                // cancelled without an event.
                if let Some(old) = pending.insert(key, p) {
                    old.end(old.started.elapsed(), false);
                }
            }
            CommandEvent::Succeeded(e) => {
                if let Some((_, p)) =
                    pending.remove(&connection_key(&e.connection.address, e.connection.id))
                {
                    p.end(e.duration, false);
                }
            }
            CommandEvent::Failed(e) => {
                if let Some((_, p)) =
                    pending.remove(&connection_key(&e.connection.address, e.connection.id))
                {
                    p.end(e.duration, true);
                }
            }
            _ => {}
        });
        Some((handler, returned))
    }
}

/// Names a pooled connection without allocating: connection ids are unique per server, and the
/// server's address is hashed (a collision would only end a pending command early).
fn connection_key(address: &ServerAddress, id: u32) -> (u64, u32) {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    address.hash(&mut hasher);
    (hasher.finish(), id)
}

/// A command in flight, counted from the driver's command events.
struct Pending {
    usage: Arc<Usage>,
    /// The database's counters; `None` when the database has no entry (counted in the
    /// aggregate).
    db: Option<Arc<DbUsage>>,
    started: Instant,
}

impl Pending {
    fn start(&self, index: usize) {
        match &self.db {
            Some(db) => self.usage.started(db, index),
            None => self.usage.started_other(index),
        }
    }

    fn end(&self, duration: Duration, failed: bool) {
        match &self.db {
            Some(db) => self.usage.finished(db, duration, failed),
            None => self.usage.finished_other(duration, failed),
        }
    }
}

/// The pool a database is routed to without opening it, for checks made before any work
/// (transactions compare pools).
pub(crate) fn pool_of(registry: &Registry, name: &str) -> Result<Arc<ClusterPool>> {
    validate_database_name(name)?;
    if registry.is_closed() {
        return Err(Error::Closed);
    }
    Ok(registry.routes.pool_of(name))
}
