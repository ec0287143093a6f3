//! Typed models and their handles on any database.
//!
//! `poly.model::<User>()` gives a [`ModelHandle`]; `.db("tenant_1")?` gives a [`DbHandle`],
//! which dereferences to the driver's own [`mongodb::Collection<User>`], so every driver
//! operation and option works unchanged (`.find(filter).batch_size(7).await`).
//!
//! A database's registry entry keeps its driver `Database`, the collection handle of the
//! first model used on it, and, for a model that declares indexes, the mark that they exist
//! there: one life for all, forgotten with the entry. A warm `.db(name)` is one map lookup, a
//! liveness check and a few reference-count increments for that first model; another model's
//! collection is made from the cached `Database` (about the raw driver's cost). Only one
//! collection is cached per database because each costs about 300 bytes for as long as the
//! database is cached.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::Arc;

use mongodb::{Collection, IndexModel};
use tokio::sync::{OnceCell, OwnedSemaphorePermit};

use crate::floor::error::{Error, Result};
use crate::floor::name::validate_collection_name;
use crate::handle::slot::ConnectionSlot;
use crate::registry::{DbLease, Registry};

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

/// For a model that declares indexes, kept in a database's registry entry: set once they
/// exist there, shared by concurrent first uses. Models without indexes keep nothing.
pub(crate) struct IndexesEnsured<T> {
    done: OnceCell<()>,
    _model: PhantomData<fn() -> T>,
}

/// A model on every database: the result of [`PolyMongo::model`](crate::PolyMongo::model).
///
/// Cheap to clone; keep one and call [`db`](Self::db) per request.
pub struct ModelHandle<T: Model> {
    registry: Arc<Registry>,
    default_db: Arc<str>,
    _model: PhantomData<fn() -> T>,
}

impl<T: Model> Clone for ModelHandle<T> {
    fn clone(&self) -> Self {
        Self {
            registry: Arc::clone(&self.registry),
            default_db: Arc::clone(&self.default_db),
            _model: PhantomData,
        }
    }
}

impl<T: Model> fmt::Debug for ModelHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelHandle")
            .field("model", &std::any::type_name::<T>())
            .field("collection", &T::COLLECTION)
            .finish()
    }
}

impl<T: Model> ModelHandle<T> {
    pub(crate) fn new(registry: Arc<Registry>, default_db: Arc<str>) -> Self {
        Self {
            registry,
            default_db,
            _model: PhantomData,
        }
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
    /// [`close_all`](crate::PolyMongo::close_all), [`Error::Saturated`](crate::Error::Saturated)
    /// when the database's `max_concurrent_ops` slots are all taken.
    #[inline]
    pub fn db(&self, name: &str) -> Result<DbHandle<T>> {
        let handle = match self.cached(name) {
            Some(handle) => handle,
            None => self.db_cold(name)?,
        };
        Self::enter_now(handle)
    }

    /// Takes a slot of a database with `max_concurrent_ops` if one is free now.
    #[inline]
    pub(crate) fn enter_now(mut handle: DbHandle<T>) -> Result<DbHandle<T>> {
        if let Some(gate) = &handle.lease.entry.gate {
            handle.permit = Some(Arc::new(gate.try_enter(handle.lease.entry.name())?));
        }
        Ok(handle)
    }

    /// The model's collection in database `name`, ready for work: the model's declared
    /// [indexes](Model::indexes) exist there (created on the first call for that database,
    /// once, however many callers race; later calls make no round trip for them), and for a
    /// database with `max_concurrent_ops` the handle holds one of its slots, waited for up to
    /// its `queue_timeout`.
    ///
    /// The "indexes exist" mark lives with the database's registry entry: it is forgotten when
    /// the database is dropped or overwritten through the library
    /// ([`drop_database`](crate::bulk::Bulk::drop_database), a drop-first import, a copy onto
    /// it), re-routed ([`set_db`](crate::Scale::set_db)) or forgotten for idleness, and the
    /// next `acquire` creates the indexes again.
    ///
    /// Safe to cancel at any point: an index creation cut short is tried again by the next
    /// call, and a slot waited for is never taken by a dropped call.
    ///
    /// # Errors
    /// As [`db`](Self::db), plus the driver's error if the indexes cannot be created (the next
    /// call tries again), and [`Error::Saturated`](crate::Error::Saturated) if no slot came
    /// free in time.
    pub async fn acquire(&self, name: &str) -> Result<DbHandle<T>> {
        let handle = match self.cached(name) {
            Some(handle) => handle,
            None => self.db_cold(name)?,
        };
        Self::ready(&self.registry, handle).await
    }

    /// What [`acquire`](Self::acquire) does once it has the handle: first use, indexes, a
    /// slot. Also for a handle on a lease its owner chose (a tenant routed by the
    /// directory).
    pub(crate) async fn ready(registry: &Registry, mut handle: DbHandle<T>) -> Result<DbHandle<T>> {
        let name = handle.lease.entry.database.name().to_owned();
        let name = name.as_str();
        if registry.has_first_use() {
            registry.first_use(&handle.lease).await?;
        }
        if !T::indexes().is_empty() {
            Self::ensure_indexes(&handle).await?;
        }
        if let Some(gate) = &handle.lease.entry.gate {
            handle.permit = Some(Arc::new(gate.enter(name).await?));
        }
        Ok(handle)
    }

    async fn ensure_indexes(handle: &DbHandle<T>) -> Result<()> {
        let ensured = handle.lease.entry.model(|| IndexesEnsured::<T> {
            done: OnceCell::new(),
            _model: PhantomData,
        });
        ensured
            .done
            .get_or_try_init(|| async {
                handle
                    .collection
                    .create_indexes(T::indexes())
                    .await
                    .map_err(|e| Error::from_driver(e, handle.lease.entry.pool.label()))?;
                tracing::debug!(
                    database = handle.database_name(),
                    collection = T::COLLECTION,
                    "model indexes ensured"
                );
                Ok::<_, Error>(())
            })
            .await?;
        Ok(())
    }

    /// The cached handle (without a concurrency slot), if the database was used before and its
    /// entry is still live. An `Option`, not a `Result`, so the hot path moves a small value,
    /// not an error-sized one.
    #[inline(always)]
    fn cached(&self, name: &str) -> Option<DbHandle<T>> {
        let lease = self.registry.lease_cached(name)?;
        let collection = lease.entry.collection::<T>(T::COLLECTION);
        Some(DbHandle {
            collection,
            lease,
            permit: None,
            slot: None,
        })
    }

    #[cold]
    fn db_cold(&self, name: &str) -> Result<DbHandle<T>> {
        validate_collection_name(T::COLLECTION)?;
        Self::on_lease(self.registry.lease(name)?)
    }

    /// The model's collection in the leased database (a tenant routed by the directory).
    pub(crate) fn on_lease(lease: DbLease) -> Result<DbHandle<T>> {
        let collection = lease.entry.checked_collection::<T>(T::COLLECTION)?;
        Ok(DbHandle {
            collection,
            lease,
            permit: None,
            slot: None,
        })
    }

    /// The model's collection in the default database (the `default_db` option).
    ///
    /// # Errors
    /// As [`db`](Self::db).
    pub fn default_db(&self) -> Result<DbHandle<T>> {
        self.db(&self.default_db)
    }

    /// The collection name of the model.
    pub fn collection_name(&self) -> &'static str {
        T::COLLECTION
    }
}

/// A model's collection in one database.
///
/// Dereferences to [`mongodb::Collection<T>`]: call the driver's operations on it directly.
/// While it lives, its database counts as in use: its registry entry is not forgotten, and a
/// dedicated pool with `auto_close` is not closed under it. Cursors and sessions made through
/// it are not seen by the library once the handle is dropped; a pool closed for idleness lets
/// them finish for up to `idle_close_grace`. Keep the handle for the duration of the work
/// rather than a clone of the inner `Collection`, which the manager cannot see.
///
/// On a database with `max_concurrent_ops` the handle holds one of its slots; clones share it,
/// and it is given back when the last of them is dropped.
pub struct DbHandle<T: Send + Sync> {
    pub(crate) collection: Collection<T>,
    pub(crate) lease: DbLease,
    permit: Option<Arc<OwnedSemaphorePermit>>,
    /// A connection slot taken beforehand, which `run` uses instead of queueing.
    pub(crate) slot: Option<ConnectionSlot>,
}

impl<T: Send + Sync> Clone for DbHandle<T> {
    fn clone(&self) -> Self {
        Self {
            collection: self.collection.clone(),
            lease: self.lease.clone(),
            permit: self.permit.clone(),
            slot: self.slot.clone(),
        }
    }
}

impl<T: Send + Sync> fmt::Debug for DbHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbHandle")
            .field("namespace", &self.collection.namespace().to_string())
            .field("cluster", &self.lease.entry.pool.label())
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
        self.lease.entry.name()
    }

    /// The driver's collection handle.
    pub fn collection(&self) -> &Collection<T> {
        &self.collection
    }

    /// The driver's collection handle, giving up the handle (and with it the library's view
    /// of the work done through it).
    pub fn into_collection(self) -> Collection<T> {
        self.collection
    }

    /// This handle (and its clones) holding `slot`, taken beforehand with
    /// [`PolyMongo::reserve_connection`](crate::PolyMongo::reserve_connection): its
    /// [`run`](Self::run) operations then use that slot instead of waiting for one of their
    /// own, so work that holds a slot never queues behind itself. A slot of another pool (the
    /// database was re-routed meanwhile) is not taken: `run` then queues as usual.
    pub fn with_connection_slot(mut self, slot: &ConnectionSlot) -> Self {
        if slot.is_of(&self.lease) {
            self.slot = Some(slot.clone());
        }
        self
    }
}
