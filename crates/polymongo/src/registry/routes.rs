//! What configuration says about databases: the pools (the main cluster's, other clusters'
//! shared pools, dedicated pools) and the route of each configured database. Also the one
//! place a dedicated pool is opened, so the `max_dedicated_pools` bound holds on every path,
//! and the idle close of dedicated pools.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;
use mongodb::options::DatabaseOptions;
use mongodb::Client;

use crate::floor::db_config::DbConfig;
use crate::floor::error::Result;
use crate::floor::redact::redact_uri;
use crate::pool::cluster::{ClusterPool, PoolKind};
use crate::pool::retiring::Retiring;

/// The configured routing of one database.
pub(crate) struct Route {
    pub(crate) pool: Arc<ClusterPool>,
    pub(crate) config: DbConfig,
    pub(crate) database_options: DatabaseOptions,
}

impl Route {
    pub(crate) fn new(pool: Arc<ClusterPool>, config: DbConfig) -> Self {
        Self {
            database_options: config.database_options(),
            pool,
            config,
        }
    }
}

/// Routes database names to pools.
pub(crate) struct Routes {
    main: Arc<ClusterPool>,
    main_uri: String,
    /// Shared pools of the other clusters, by connection string.
    shared: DashMap<String, Arc<ClusterPool>>,
    routes: DashMap<Box<str>, Arc<Route>>,
    /// Dedicated pools no database is routed to any more, still to be closed.
    draining: Mutex<Vec<Arc<ClusterPool>>>,
    /// Most dedicated pools open at once (the least recently used idle one is closed first).
    max_dedicated: usize,
    /// Serialises the opening of dedicated pools, so the bound holds under concurrency.
    opening: Mutex<()>,
    retiring: Arc<Retiring>,
    /// The connection strings of every cluster labelled so far, by label: see
    /// [`cluster_label`](Self::cluster_label). Bounded by the clusters configured.
    labels: Mutex<std::collections::HashMap<String, Vec<String>>>,
}

impl fmt::Debug for Routes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Routes")
            .field("main", &self.main)
            .field("routes", &self.routes.len())
            .finish()
    }
}

impl Routes {
    pub(crate) fn new(
        main: Arc<ClusterPool>,
        main_uri: String,
        max_dedicated: usize,
        retiring: Arc<Retiring>,
    ) -> Self {
        let labels =
            std::collections::HashMap::from([(main.label().to_owned(), vec![main_uri.clone()])]);
        Self {
            labels: Mutex::new(labels),
            main,
            main_uri,
            shared: DashMap::new(),
            routes: DashMap::new(),
            draining: Mutex::new(Vec::new()),
            max_dedicated,
            opening: Mutex::new(()),
            retiring,
        }
    }

    fn draining(&self) -> std::sync::MutexGuard<'_, Vec<Arc<ClusterPool>>> {
        self.draining.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The label of the cluster at `uri` (pools, metrics, figures, spans): its connection
    /// string with the secrets hidden, followed by ` (#2)`, ` (#3)` … when clusters labelled
    /// earlier hide to the same string. Two strings that differ only in a secret (a password
    /// being rotated) would otherwise label two pools alike, and two metric series with the
    /// same labels make Prometheus refuse the whole scrape. A cluster keeps its label for the
    /// manager's life.
    pub(crate) fn cluster_label(&self, uri: &str) -> String {
        let base = redact_uri(uri);
        let mut labels = self.labels.lock().unwrap_or_else(|p| p.into_inner());
        let uris = labels.entry(base.clone()).or_default();
        let n = match uris.iter().position(|u| u == uri) {
            Some(n) => n,
            None => {
                uris.push(uri.to_owned());
                uris.len() - 1
            }
        };
        if n == 0 {
            base
        } else {
            format!("{base} (#{})", n + 1)
        }
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

    /// The configured route of `name`, if any.
    pub(crate) fn route(&self, name: &str) -> Option<Arc<Route>> {
        self.routes.get(name).map(|r| Arc::clone(&r))
    }

    /// The pool `name` is routed to, without opening it.
    pub(crate) fn pool_of(&self, name: &str) -> Arc<ClusterPool> {
        self.route(name)
            .map_or_else(|| Arc::clone(&self.main), |r| Arc::clone(&r.pool))
    }

    /// Routes `name` by `route` from now on (the registry then renews the database's entry);
    /// a dedicated pool left without its database is kept for closing.
    pub(crate) fn install(&self, name: &str, route: Route) {
        let new_pool = Arc::clone(&route.pool);
        let old = self.routes.insert(name.into(), Arc::new(route));
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

    /// One housekeeping pass: closes routed pools idle past their `ttl`, draining pools
    /// nothing uses, and, while more than `max_dedicated_pools` are open (every one was in use
    /// when another had to open), the least recently used ones that are no longer in use.
    /// Returns the shortest `ttl` among the pools still open.
    pub(crate) fn reap(&self) -> Option<Duration> {
        for pool in self.dedicated_pools() {
            if pool.idle_expired() {
                self.close_idle(&pool);
            }
        }
        let mut open: Vec<_> = self
            .dedicated_pools()
            .into_iter()
            .filter(|p| p.is_open())
            .collect();
        if open.len() > self.max_dedicated {
            let _one_opening = self.opening.lock().unwrap_or_else(|p| p.into_inner());
            self.trim(&mut open, self.max_dedicated);
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
        if !self.trim(&mut open, self.max_dedicated.saturating_sub(1)) {
            tracing::warn!(
                max_dedicated_pools = self.max_dedicated,
                "every open dedicated pool is in use; opening one more than the bound"
            );
        }
    }

    /// Closes the least recently used of `open` that nothing uses until at most `keep` are
    /// open; `false` if every remaining one was in use.
    fn trim(&self, open: &mut Vec<Arc<ClusterPool>>, keep: usize) -> bool {
        // Least recently used last, so `pop` takes it.
        open.sort_by_cached_key(|p| p.idle_ms());
        let mut excess = open.len().saturating_sub(keep);
        while excess > 0 {
            let Some(pool) = open.pop() else { break };
            if self.close_idle(&pool) {
                tracing::debug!(cluster = %pool.label(), "least recently used dedicated pool closed");
                excess -= 1;
            }
        }
        excess == 0
    }

    /// The client of `pool` and its epoch, opening it if needed. A dedicated pool opens only
    /// after room is made under `max_dedicated_pools`, one opening at a time.
    pub(crate) fn client_of(&self, pool: &Arc<ClusterPool>) -> Result<(Client, u64)> {
        if pool.kind() == PoolKind::Dedicated && !pool.is_open() {
            let _one_opening = self.opening.lock().unwrap_or_else(|p| p.into_inner());
            if !pool.is_open() {
                self.make_room(pool);
            }
            return pool.client();
        }
        pool.client()
    }

    /// Configured databases routed to pool `id` among `names` (a database without a route
    /// is on the main pool).
    pub(crate) fn routed_to(
        &self,
        id: u64,
        names: &std::collections::HashSet<String>,
    ) -> Vec<String> {
        let mut out: Vec<String> = names
            .iter()
            .filter(|name| {
                self.route(name)
                    .map_or(self.main.id() == id, |r| r.pool.id() == id)
            })
            .cloned()
            .collect();
        out.sort_unstable();
        out
    }

    /// The configuration of the database a dedicated pool belongs to.
    pub(crate) fn owner_of(&self, pool: &Arc<ClusterPool>) -> Option<DbConfig> {
        self.routes
            .iter()
            .find(|r| Arc::ptr_eq(&r.pool, pool))
            .map(|r| r.config.clone())
    }

    /// Hands a client taken out of `pool` to a background shutdown with its grace.
    pub(crate) fn retire(&self, pool: &Arc<ClusterPool>, client: Client) {
        self.retiring.retire(pool, client);
    }

    /// The clients shutting down in the background.
    pub(crate) fn retiring(&self) -> &Arc<Retiring> {
        &self.retiring
    }
}

fn dedup(pools: &mut Vec<Arc<ClusterPool>>) {
    let mut seen = std::collections::HashSet::new();
    pools.retain(|p| seen.insert(Arc::as_ptr(p)));
}
