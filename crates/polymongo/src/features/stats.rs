//! The stats API: [`PolyMongo::stats`](crate::PolyMongo::stats).
//!
//! [`Stats::general`] is synchronous and makes no round trip: it reads the pools' CMAP-fed
//! figures and the counts the pools keep of the databases they serve, so it costs O(pools)
//! whatever the number of databases. [`Stats::db`] and [`Stats::list_databases`] ask the
//! server.

use std::sync::Arc;

use mongodb::bson::{doc, Bson, Document};
use serde::Serialize;

use crate::floor::db_config::DbConfig;
use crate::floor::error::{Error, Result};
use crate::floor::redact::redact_uri;
use crate::pool::cluster::{ClusterPool, ConnectionState, PoolKind};
use crate::pool::cmap::PoolStats;
use crate::registry::gate::QueueStats;
use crate::registry::usage::{TopBy, UsageStats, OTHER_DATABASES};
use crate::registry::Registry;

/// The stats API of a manager.
#[derive(Debug, Clone, Copy)]
pub struct Stats<'a> {
    registry: &'a Registry,
    live_clients: usize,
    default_db: &'a str,
}

/// Everything about the manager's pools, without a round trip (the npm package's
/// `stats.general()`, with true pool figures).
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct GeneralStats {
    /// Pools with a client open now.
    pub total_active_pools: usize,
    /// Pooled connections across every pool (monitoring connections not included).
    pub total_connections_across_pools: i64,
    /// Driver clients open or still shutting down.
    pub live_clients: usize,
    /// Databases cached now (each with its registry entry): those used recently or in use.
    pub databases_in_use: usize,
    /// Managed change streams open now (all scopes).
    pub change_streams: usize,
    /// The main cluster's shared pool.
    pub primary: PoolInfo,
    /// Shared pools of the other clusters databases are routed to.
    pub other_clusters: Vec<PoolInfo>,
    /// Dedicated pools, each with its database's configuration.
    pub dedicated: Vec<PoolInfo>,
}

/// One pool in [`GeneralStats`].
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct PoolInfo {
    /// The cluster's URI, password redacted (dedicated pools add the database's name), with
    /// ` (#2)`, ` (#3)` … after it when the manager has clusters that differ only in a secret.
    pub cluster: String,
    /// Shared or dedicated.
    pub kind: PoolKind,
    /// Connection state.
    pub state: ConnectionState,
    /// The pool's figures from the driver's connection-pool events.
    pub stats: PoolStats,
    /// Databases cached on this pool now, sorted: all of them up to
    /// [`MAX_LISTED_DATABASES`](crate::MAX_LISTED_DATABASES), else that many of them (the first to come that are still
    /// cached).
    pub databases: Vec<String>,
    /// How many databases are cached on this pool now (exact).
    pub database_count: usize,
    /// Milliseconds since the pool was last used: a lease taken or given back, a connection
    /// checked out or in (dedicated pools only).
    pub idle_ms: Option<u64>,
    /// The configuration of the database a dedicated pool belongs to.
    pub config: Option<DbConfigView>,
}

/// A [`DbConfig`] as shown in stats: URI redacted, durations in milliseconds.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct DbConfigView {
    /// The database's cluster, password redacted (`None`: the main cluster).
    pub uri: Option<String>,
    /// See [`DbConfig::max_connections`](crate::DbConfig::max_connections).
    pub max_connections: Option<u32>,
    /// See [`DbConfig::min_connections`](crate::DbConfig::min_connections).
    pub min_connections: Option<u32>,
    /// See [`DbConfig::auto_close`](crate::DbConfig::auto_close).
    pub auto_close: bool,
    /// The `ttl`, in milliseconds.
    pub ttl_ms: Option<u64>,
    /// See [`DbConfig::cold_start`](crate::DbConfig::cold_start).
    pub cold_start: Option<bool>,
    /// The read preference, as the driver displays it.
    pub read_preference: Option<String>,
    /// See [`DbConfig::read_concern`](crate::DbConfig::read_concern).
    pub read_concern: Option<mongodb::options::ReadConcern>,
    /// See [`DbConfig::write_concern`](crate::DbConfig::write_concern).
    pub write_concern: Option<mongodb::options::WriteConcern>,
    /// See [`DbConfig::max_concurrent_ops`](crate::DbConfig::max_concurrent_ops).
    pub max_concurrent_ops: Option<u32>,
    /// The `queue_timeout`, in milliseconds.
    pub queue_timeout_ms: Option<u64>,
}

impl From<&DbConfig> for DbConfigView {
    fn from(c: &DbConfig) -> Self {
        let ms = |d: Option<std::time::Duration>| d.map(|d| d.as_millis() as u64);
        DbConfigView {
            uri: c.uri.as_deref().map(redact_uri),
            max_connections: c.max_connections,
            min_connections: c.min_connections,
            auto_close: c.auto_close,
            ttl_ms: ms(c.ttl),
            cold_start: c.cold_start,
            read_preference: c.read_preference.as_ref().map(ToString::to_string),
            read_concern: c.read_concern.clone(),
            write_concern: c.write_concern.clone(),
            max_concurrent_ops: c.max_concurrent_ops,
            queue_timeout_ms: ms(c.queue_timeout),
        }
    }
}

/// One database as the server reports it: [`Stats::db`].
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct DbStats {
    /// The database.
    pub name: String,
    /// Size of its documents (`dbStats.dataSize`), in bytes.
    pub data_size: i64,
    /// Storage it takes (`dbStats.storageSize`), in bytes.
    pub storage_size: i64,
    /// Its collections, sorted by name.
    pub collections: Vec<CollectionStats>,
    /// The pool serving it.
    pub pool_kind: PoolKind,
    /// The cluster serving it, password redacted.
    pub cluster: String,
    /// That pool's figures.
    pub pool: PoolStats,
    /// Its configuration, if it has one.
    pub config: Option<DbConfigView>,
    /// Its `max_concurrent_ops` guard, if it has one: slots in use, waits, refusals.
    pub queue: Option<QueueStats>,
    /// Its usage since the manager was built (usage analytics on), with the last use.
    pub usage: Option<UsageStats>,
    /// Managed change streams open on it or its collections.
    pub change_streams: usize,
}

/// One collection in [`DbStats`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct CollectionStats {
    /// The collection.
    pub name: String,
    /// Its documents (`collStats.count`).
    pub documents: i64,
    /// Size of its documents (`collStats.size`), in bytes.
    pub size: i64,
}

/// One database in [`Stats::list_databases`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DatabaseSize {
    /// The database.
    pub name: String,
    /// Its size on disk, in bytes (`listDatabases.sizeOnDisk`).
    pub size_on_disk: i64,
    /// Whether the server reports it empty.
    pub empty: bool,
}

/// Reads a number the server may send as Int32, Int64 or Double.
fn number(doc: &Document, key: &str) -> i64 {
    match doc.get(key) {
        Some(Bson::Int32(n)) => i64::from(*n),
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Double(n)) => *n as i64,
        _ => 0,
    }
}

impl<'a> Stats<'a> {
    pub(crate) fn new(registry: &'a Registry, live_clients: usize, default_db: &'a str) -> Self {
        Self {
            registry,
            live_clients,
            default_db,
        }
    }

    /// The manager's pools now; synchronous, no server round trip. Costs O(pools), whatever
    /// the number of databases.
    pub fn general(&self) -> GeneralStats {
        self.general_with(true)
    }

    /// [`general`](Self::general), with or without each pool's list of database names and
    /// each dedicated pool's owner configuration (the metrics render and the figures use
    /// neither: copying the names is most of the call, and finding an owner scans every
    /// configured route, which would make a render O(dedicated pools × routes)).
    pub(crate) fn general_with(&self, details: bool) -> GeneralStats {
        let registry = self.registry;
        let routes = registry.routes();
        let info = |pool: &Arc<ClusterPool>| {
            let (database_count, databases) = if details {
                pool.served()
            } else {
                (pool.served_count(), Vec::new())
            };
            let dedicated = pool.kind() == PoolKind::Dedicated;
            PoolInfo {
                cluster: pool.label().to_owned(),
                kind: pool.kind(),
                state: pool.state(),
                stats: pool.stats(),
                databases,
                database_count,
                idle_ms: dedicated.then(|| pool.idle_ms()),
                config: (details && dedicated)
                    .then(|| routes.owner_of(pool))
                    .flatten()
                    .map(|c| DbConfigView::from(&c)),
            }
        };
        let primary = info(routes.main_pool());
        let mut other_clusters = Vec::new();
        let mut dedicated = Vec::new();
        let mut change_streams = 0;
        for pool in routes.pools() {
            change_streams += pool.open_streams();
            if Arc::ptr_eq(&pool, routes.main_pool()) {
                continue;
            }
            match pool.kind() {
                PoolKind::Shared => other_clusters.push(info(&pool)),
                PoolKind::Dedicated => dedicated.push(info(&pool)),
            }
        }
        let all = std::iter::once(&primary)
            .chain(&other_clusters)
            .chain(&dedicated);
        let (mut active, mut connections) = (0, 0);
        for p in all {
            if matches!(
                p.state,
                ConnectionState::Connected | ConnectionState::Connecting
            ) {
                active += 1;
            }
            connections += p.stats.total;
        }
        GeneralStats {
            total_active_pools: active,
            total_connections_across_pools: connections,
            live_clients: self.live_clients,
            databases_in_use: registry.len(),
            change_streams,
            primary,
            other_clusters,
            dedicated,
        }
    }

    /// One database as its cluster reports it (`dbStats`, `listCollections`, `collStats`),
    /// with the figures of the pool serving it.
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::Closed`], and the driver's error if the server fails.
    pub async fn db(&self, name: &str) -> Result<DbStats> {
        // The whole lease is held while the reads run: a dedicated pool in use is not closed
        // for idleness under them.
        let lease = self.registry.lease(name)?;
        let slot = &lease.entry;
        let label = slot.pool.label().to_owned();
        let driver = |e| Error::from_driver(e, &label);
        let db = &slot.database;
        let stats = db
            .run_command(doc! { "dbStats": 1 })
            .await
            .map_err(driver)?;
        // Names only: full specifications carry fields (`info.uuid`) some servers send in
        // another type than the driver expects (nx-27017: a string), and only names are needed.
        let mut names = db.list_collection_names().await.map_err(driver)?;
        names.sort_unstable();
        let mut collections = Vec::with_capacity(names.len());
        for coll in names {
            let s = db
                .run_command(doc! { "collStats": &coll })
                .await
                .map_err(driver)?;
            collections.push(CollectionStats {
                documents: number(&s, "count"),
                size: number(&s, "size"),
                name: coll,
            });
        }
        Ok(DbStats {
            name: name.to_owned(),
            data_size: number(&stats, "dataSize"),
            storage_size: number(&stats, "storageSize"),
            collections,
            pool_kind: slot.pool.kind(),
            cluster: label.clone(),
            pool: slot.pool.stats(),
            config: slot.route.as_ref().map(|r| DbConfigView::from(&r.config)),
            queue: slot.gate.as_ref().map(|g| g.stats()),
            change_streams: slot.stream_count(),
            usage: self.usage(name),
        })
    }

    /// Usage of database `name` while it is cached (or of
    /// [`OTHER_DATABASES`](crate::OTHER_DATABASES), the databases forgotten since the manager
    /// was built); `None` when usage analytics are off or nothing was counted on it.
    /// Synchronous, no round trip.
    pub fn usage(&self, name: &str) -> Option<UsageStats> {
        let usage = self.registry.usage()?;
        if name == OTHER_DATABASES {
            return Some(usage.other_stats());
        }
        let entry = self.registry.peek(name)?;
        let db = entry.usage_if_any()?;
        Some(db.snapshot(usage.window()))
    }

    /// Every database's usage summed, forgotten ones included; `None` when usage analytics
    /// are off. Synchronous, no round trip.
    pub fn total_usage(&self) -> Option<UsageStats> {
        Some(self.registry.usage()?.total_stats())
    }

    /// The `n` busiest databases of the last minute or two (see
    /// [`UsageStats::recent_operations`]), by operations or by time spent, among at most
    /// `max_tracked_databases` ranked ones; empty when usage analytics are off. A database
    /// that becomes busy displaces a quiet one at once, however many databases came before.
    /// Each database is listed once: one re-routed while a handle still holds its old route
    /// counts on two sets of counters for a while, and the busier is listed.
    /// Synchronous, no round trip; costs O(`max_tracked_databases`).
    pub fn top_databases(&self, n: usize, by: TopBy) -> Vec<UsageStats> {
        self.registry
            .usage()
            .map_or_else(Vec::new, |u| u.top(n, by))
    }

    /// The usage metrics' rows: the `n` busiest databases, each counted from when the metrics
    /// first showed it, then `(other databases)`; every counter of every row at least what it
    /// was at the previous call. `None` when usage analytics are off.
    pub(crate) fn metric_rows(&self, n: usize) -> Option<Vec<UsageStats>> {
        Some(self.registry.usage()?.metric_rows(n))
    }

    /// The databases of the main cluster with their sizes (`listDatabases`), sorted by name.
    ///
    /// # Errors
    /// [`Error::Closed`], and the driver's error if the server fails.
    pub async fn list_databases(&self) -> Result<Vec<DatabaseSize>> {
        let client = self
            .registry
            .lease(self.default_db)?
            .entry
            .database
            .client()
            .clone();
        let label = self.registry.routes().main_pool().label().to_owned();
        let mut list: Vec<DatabaseSize> = client
            .list_databases()
            .await
            .map_err(|e| Error::from_driver(e, &label))?
            .into_iter()
            .map(|d| DatabaseSize {
                size_on_disk: i64::try_from(d.size_on_disk).unwrap_or(i64::MAX),
                empty: d.empty,
                name: d.name,
            })
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(list)
    }
}
