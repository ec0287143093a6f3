//! Typed models and their handles on any database.
//!
//! `poly.model::<User>()` gives a [`ModelHandle`]; `.db("tenant_1")?` gives a [`DbHandle`],
//! which dereferences to the driver's own [`mongodb::Collection<User>`], so every driver
//! operation and option works unchanged (`.find(filter).batch_size(7).await`).
//!
//! Each model keeps a cache of its collection handles by database name. A warm `.db(name)` is
//! one map lookup, a check that the database's pool is still open, and two reference-count
//! increments; building the handle from the client (`client.database(n).collection(c)`, two
//! string allocations) happens once per database and model.

use std::any::Any;
use std::fmt;
use std::future::IntoFuture;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Instant;

use dashmap::DashMap;
use mongodb::{Collection, IndexModel};
use tokio::sync::{OnceCell, OwnedSemaphorePermit};
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::name::validate_collection_name;
use crate::poly::PolyMongo;
use crate::pool::Lease;
use crate::routing::DbSlot;
use crate::usage::{self, DbUsage, UsageAnalytics};

/// A document type stored in one collection.
///
/// ```
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct User {
///     name: String,
///     role: String,
/// }
///
/// impl polymongo::Model for User {
///     const COLLECTION: &'static str = "users";
/// }
/// ```
///
/// The driver's operations need `T: Serialize` to write and `T: DeserializeOwned` to read;
/// the trait itself asks only for the collection name.
///
/// Per-tenant indexes: a model may declare the indexes it needs, and
/// [`ModelHandle::acquire`] creates them in each database the first time the model is used
/// there, so tenant databases created at run time get them too:
///
/// ```
/// use mongodb::{bson::doc, options::IndexOptions, IndexModel};
///
/// struct Account;
///
/// impl polymongo::Model for Account {
///     const COLLECTION: &'static str = "accounts";
///
///     fn indexes() -> Vec<IndexModel> {
///         vec![IndexModel::builder()
///             .keys(doc! { "email": 1 })
///             .options(IndexOptions::builder().unique(true).build())
///             .build()]
///     }
/// }
/// ```
pub trait Model: Send + Sync + 'static {
    /// The collection's name, the same in every database. Checked when the model is first used
    /// on a database: no `$`, no NUL, not empty, not `system.`.
    const COLLECTION: &'static str;

    /// Indexes the collection needs in every database. Default: none.
    fn indexes() -> Vec<IndexModel> {
        Vec::new()
    }
}

/// Collection handles of one model, by database name.
pub(crate) struct ModelCache<T: Send + Sync> {
    entries: DashMap<Box<str>, Cached<T>>,
    /// The model's declared indexes (empty: nothing to ensure).
    indexes: Vec<IndexModel>,
    /// Per database, set once the indexes exist there; shared by concurrent first uses.
    indexed: DashMap<Box<str>, Arc<OnceCell<()>>>,
}

struct Cached<T: Send + Sync> {
    collection: Collection<T>,
    slot: Arc<DbSlot>,
}

impl<T: Model> ModelCache<T> {
    pub(crate) fn new() -> Self {
        Self {
            entries: DashMap::new(),
            indexes: T::indexes(),
            indexed: DashMap::new(),
        }
    }
}

/// A model on every database: the result of [`PolyMongo::model`].
///
/// Cheap to clone; keep one and call [`db`](Self::db) per request.
pub struct ModelHandle<T: Model> {
    poly: PolyMongo,
    cache: Arc<ModelCache<T>>,
}

impl<T: Model> Clone for ModelHandle<T> {
    fn clone(&self) -> Self {
        Self {
            poly: self.poly.clone(),
            cache: Arc::clone(&self.cache),
        }
    }
}

impl<T: Model> fmt::Debug for ModelHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelHandle")
            .field("model", &std::any::type_name::<T>())
            .field("collection", &T::COLLECTION)
            .field("databases", &self.cache.entries.len())
            .finish()
    }
}

impl<T: Model> ModelHandle<T> {
    pub(crate) fn new(poly: PolyMongo, cache: Arc<ModelCache<T>>) -> Self {
        Self { poly, cache }
    }

    /// The model's collection in database `name`, on the pool `name` is routed to.
    ///
    /// The first call for a database checks its name and opens the pool if it is the first use
    /// of that pool (cold start); later calls are a cache lookup.
    ///
    /// Never does I/O: declared indexes are created by [`acquire`](Self::acquire), and on a
    /// database with `max_concurrent_ops` this takes a slot only if one is free now.
    ///
    /// # Errors
    /// [`Error::InvalidName`](crate::Error::InvalidName) for a name MongoDB would refuse (or an
    /// invalid [`Model::COLLECTION`]), [`Error::Closed`](crate::Error::Closed) after
    /// [`close_all`](PolyMongo::close_all), [`Error::Saturated`](crate::Error::Saturated) when
    /// the database's `max_concurrent_ops` slots are all taken.
    #[inline]
    pub fn db(&self, name: &str) -> Result<DbHandle<T>> {
        let mut handle = match self.cached(name) {
            Some(handle) => handle,
            None => self.db_cold(name)?,
        };
        if let Some(gate) = &handle.slot.gate {
            handle.permit = Some(Arc::new(gate.try_enter(name)?));
        }
        Ok(handle)
    }

    /// The model's collection in database `name`, ready for work: the model's declared
    /// [indexes](Model::indexes) exist there (created on the first call for that database,
    /// once, however many callers race; later calls make no round trip for them), and for a
    /// database with `max_concurrent_ops` the handle holds one of its slots, waited for up to
    /// its `queue_timeout`.
    ///
    /// # Errors
    /// As [`db`](Self::db), plus the driver's error if the indexes cannot be created (the next
    /// call tries again), and [`Error::Saturated`](crate::Error::Saturated) if no slot came
    /// free in time.
    pub async fn acquire(&self, name: &str) -> Result<DbHandle<T>> {
        let mut handle = match self.cached(name) {
            Some(handle) => handle,
            None => self.db_cold(name)?,
        };
        if !self.cache.indexes.is_empty() {
            self.ensure_indexes(&handle).await?;
        }
        if let Some(gate) = &handle.slot.gate {
            handle.permit = Some(Arc::new(gate.enter(name).await?));
        }
        Ok(handle)
    }

    async fn ensure_indexes(&self, handle: &DbHandle<T>) -> Result<()> {
        let name = handle.database_name();
        let cell = match self.cache.indexed.get(name) {
            Some(cell) => Arc::clone(&cell),
            None => Arc::clone(&self.cache.indexed.entry(name.into()).or_default()),
        };
        cell.get_or_try_init(|| async {
            handle
                .collection
                .create_indexes(self.cache.indexes.clone())
                .await
                .map_err(|e| Error::from_driver(e, handle.slot.pool.label()))?;
            tracing::debug!(
                database = name,
                collection = T::COLLECTION,
                "model indexes ensured"
            );
            Ok::<_, Error>(())
        })
        .await?;
        Ok(())
    }

    /// The cached handle (without a concurrency slot), if the database was used before and its
    /// entry is still live. An `Option`, not a `Result`, so the hot path moves 32 bytes, not
    /// an error-sized value.
    #[inline(always)]
    fn cached(&self, name: &str) -> Option<DbHandle<T>> {
        let hit = self.cache.entries.get(name)?;
        if !hit.slot.is_live() {
            return None;
        }
        let lease = hit.slot.pool.lease();
        // Checked again after the lease is taken: see `ClusterPool::lease`.
        if lease.is_some() && !hit.slot.is_live() {
            return None;
        }
        Some(DbHandle {
            collection: hit.collection.clone(),
            slot: Arc::clone(&hit.slot),
            _lease: lease,
            permit: None,
        })
    }

    #[cold]
    fn db_cold(&self, name: &str) -> Result<DbHandle<T>> {
        validate_collection_name(T::COLLECTION)?;
        loop {
            let slot = self.poly.router().resolve(name)?;
            let lease = slot.pool.lease();
            if lease.is_some() && !slot.is_live() {
                // The pool was closed for idleness between the lookup and the lease: the next
                // lookup reopens it.
                continue;
            }
            let collection = slot.database.collection::<T>(T::COLLECTION);
            self.cache.entries.insert(
                name.into(),
                Cached {
                    collection: collection.clone(),
                    slot: Arc::clone(&slot),
                },
            );
            return Ok(DbHandle {
                collection,
                slot,
                _lease: lease,
                permit: None,
            });
        }
    }

    /// The model's collection in the default database (the `default_db` option).
    ///
    /// # Errors
    /// As [`db`](Self::db).
    pub fn default_db(&self) -> Result<DbHandle<T>> {
        self.db(self.poly.default_db_name())
    }

    /// The collection name of the model.
    pub fn collection_name(&self) -> &'static str {
        T::COLLECTION
    }
}

/// A model cache with its type erased, so the manager can keep caches of every model in one map
/// and clear them all when the pools close.
pub(crate) trait AnyModelCache: Send + Sync {
    fn clear(&self);
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
}

impl<T: Model> AnyModelCache for ModelCache<T> {
    fn clear(&self) {
        self.entries.clear();
    }

    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}

/// A model's collection in one database.
///
/// Dereferences to [`mongodb::Collection<T>`]: call the driver's operations on it directly.
/// While it lives, its database's pool counts as in use: a dedicated pool with `auto_close` is
/// never closed under a live handle (nor under cursors and sessions made through it, which the
/// closing client lets finish). Keep the handle for the duration of the work rather than
/// keeping a clone of the inner `Collection`, which the manager cannot see.
///
/// On a database with `max_concurrent_ops` the handle holds one of its slots; clones share it,
/// and it is given back when the last of them is dropped.
pub struct DbHandle<T: Send + Sync> {
    collection: Collection<T>,
    slot: Arc<DbSlot>,
    _lease: Option<Lease>,
    permit: Option<Arc<OwnedSemaphorePermit>>,
}

impl<T: Send + Sync> Clone for DbHandle<T> {
    fn clone(&self) -> Self {
        Self {
            collection: self.collection.clone(),
            slot: Arc::clone(&self.slot),
            _lease: self._lease.clone(),
            permit: self.permit.clone(),
        }
    }
}

impl<T: Send + Sync> fmt::Debug for DbHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbHandle")
            .field("namespace", &self.collection.namespace().to_string())
            .field("cluster", &self.slot.pool.label())
            .finish()
    }
}

impl<T: Send + Sync> Deref for DbHandle<T> {
    type Target = Collection<T>;

    #[inline]
    fn deref(&self) -> &Collection<T> {
        &self.collection
    }
}

impl<T: Send + Sync> DbHandle<T> {
    /// The database this handle points at.
    pub fn database_name(&self) -> &str {
        self.slot.name()
    }

    pub(crate) fn slot(&self) -> &Arc<DbSlot> {
        &self.slot
    }

    /// The driver's collection handle.
    pub fn collection(&self) -> &Collection<T> {
        &self.collection
    }

    /// The driver's collection handle, giving up the handle.
    pub fn into_collection(self) -> Collection<T> {
        self.collection
    }

    /// Runs one driver operation on this handle's collection, counted in the database's
    /// [usage analytics](crate::Stats::usage) and traced in a `polymongo.op` span.
    ///
    /// `op` builds the operation with every option the driver offers; `run` awaits it. The
    /// operation's kind (`find`, `insert`, `update`, `delete`, `aggregate`, `count`, else
    /// `other`) is read from the driver's action type, so a closure returning an `async` block
    /// of several calls counts once, as `other`. Its latency is what the caller waits,
    /// pool checkout included. An operation dropped before it finishes (a cancelled request)
    /// still leaves `in_flight`, and is counted as finished, not failed.
    ///
    /// Calling the operation on the handle directly (`handle.find_one(f).await`) works the
    /// same but is not counted, unless the manager counts every command
    /// ([`UsageAnalytics::Commands`]); with that source `run` does not count again.
    ///
    /// ```no_run
    /// # use mongodb::bson::doc;
    /// # #[derive(serde::Deserialize)] struct User { name: String }
    /// # impl polymongo::Model for User { const COLLECTION: &'static str = "users"; }
    /// # async fn f(users: polymongo::ModelHandle<User>) -> polymongo::Result<()> {
    /// let alice: Option<User> = users
    ///     .db("tenant_1")?
    ///     .run(|c| c.find_one(doc! { "name": "alice" }).projection(doc! { "name": 1 }))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// With the `wait_queue_timeout` option, the operation first waits at most that long for
    /// one of its pool's connections to be free.
    ///
    /// An operation running through `run` counts as work in flight:
    /// [`close_all`](crate::PolyMongo::close_all) lets it finish (up to its deadline), and a
    /// `run` started after the close began is refused with [`Error::Closed`](crate::Error::Closed).
    ///
    /// # Errors
    /// The operation's driver error as [`Error::Driver`](crate::Error::Driver) (retryable
    /// labels kept, credentials removed), [`Error::PoolExhausted`](crate::Error::PoolExhausted)
    /// when the pool stayed busy for `wait_queue_timeout`.
    pub async fn run<'a, A, R>(&'a self, op: impl FnOnce(&'a Collection<T>) -> A) -> Result<R>
    where
        A: IntoFuture<Output = mongodb::error::Result<R>>,
    {
        // Counted in flight, so a graceful close lets it finish (and refused once a close
        // has begun).
        let _in_flight = self.slot.pool.begin_operation()?;
        let command = usage::command_index::<A>();
        let span = tracing::debug_span!(
            "polymongo.op",
            database = self.slot.name(),
            collection = self.collection.name(),
            op = usage::command_name(command),
        );
        let mut counted = match self.slot.pool.usage() {
            Some(u) if u.source() == UsageAnalytics::Operations => Some(Counted {
                usage: u.operation(self.slot.name(), command),
                started: Instant::now(),
                failed: false,
            }),
            _ => None,
        };
        // Held for the operation: with `wait_queue_timeout` on, a busy pool makes this wait
        // at most that long (the driver's own queue has no bound).
        let _connection = match self.slot.pool.connection_slot().await {
            Ok(permit) => permit,
            Err(e) => {
                if let Some(c) = &mut counted {
                    c.failed = true;
                }
                return Err(e);
            }
        };
        let result = op(&self.collection)
            .into_future()
            .instrument(span.clone())
            .await;
        if let Some(c) = &mut counted {
            c.failed = result.is_err();
        }
        drop(counted);
        result.map_err(|e| {
            let e = Error::from_driver(e, self.slot.pool.label());
            tracing::debug!(parent: &span, error = %e, "operation failed");
            e
        })
    }
}

/// One operation in flight, reported when it finishes or is dropped.
struct Counted {
    usage: Arc<DbUsage>,
    started: Instant,
    failed: bool,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.usage.finished(self.started.elapsed(), self.failed);
    }
}
