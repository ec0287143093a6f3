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
use crate::handle::tenant_route::{ModelRoute, TenantRouter};
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
    /// The tenant directory, when the manager has one: [`tenant`](Self::tenant).
    router: Option<Arc<dyn TenantRouter>>,
    /// [`Model::COLLECTION`] checked once, when the handle was made: warm calls only read
    /// this.
    collection_ok: bool,
    _model: PhantomData<fn() -> T>,
}

impl<T: Model> Clone for ModelHandle<T> {
    fn clone(&self) -> Self {
        Self {
            registry: Arc::clone(&self.registry),
            default_db: Arc::clone(&self.default_db),
            router: self.router.clone(),
            collection_ok: self.collection_ok,
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
    pub(crate) fn new(
        registry: Arc<Registry>,
        default_db: Arc<str>,
        router: Option<Arc<dyn TenantRouter>>,
    ) -> Self {
        Self {
            registry,
            default_db,
            router,
            collection_ok: validate_collection_name(T::COLLECTION).is_ok(),
            _model: PhantomData,
        }
    }

    /// Why [`tenant`](Self::tenant) cannot route: an invalid collection name, or no
    /// directory.
    #[cold]
    fn tenant_refused<'a>(&self) -> ModelRoute<'a, T> {
        ModelRoute::refused(match self.check_collection() {
            Err(e) => e,
            Ok(()) => crate::floor::tenant_error::TenantError::NoDirectory.into(),
        })
    }

    /// [`Error::InvalidName`] when [`Model::COLLECTION`] is invalid.
    #[inline]
    fn check_collection(&self) -> Result<()> {
        if self.collection_ok {
            Ok(())
        } else {
            validate_collection_name(T::COLLECTION)
        }
    }

    /// The model's collection in tenant `id`'s database, on the tenant's cluster, routed
    /// through the tenant directory: what [`db`](Self::db) is for a database name, for a
    /// tenant id. No I/O when this instance has the tenant's route cached (the usual case:
    /// the future is ready at its first poll); otherwise one read of the directory, shared
    /// with concurrent callers routing the same tenant.
    ///
    /// As `db` does, this takes a slot of a database with `max_concurrent_ops` only if one
    /// is free now, and creates no index: for declared indexes and lazy migrations, route the
    /// tenant and [`acquire`](crate::tenants::Tenant::acquire) the model on it.
    ///
    /// ```no_run
    /// # use polymongo::{Model, PolyMongo};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Note { text: String }
    /// # impl Model for Note { const COLLECTION: &'static str = "notes"; }
    /// # async fn demo(poly: PolyMongo) -> polymongo::Result<()> {
    /// let notes = poly.model::<Note>();
    /// notes.tenant("acme").await?.insert_one(Note { text: "hi".into() }).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// Dropping the future at any point is safe.
    ///
    /// # Errors
    /// [`TenantError::NoDirectory`](crate::tenants::TenantError::NoDirectory) when the
    /// manager has no directory; otherwise as
    /// [`Tenants::route`](crate::tenants::Tenants::route), plus
    /// [`Error::InvalidName`](crate::Error::InvalidName) for an invalid
    /// [`Model::COLLECTION`] and [`Error::Saturated`](crate::Error::Saturated) when the
    /// database's slots are all taken.
    #[inline]
    pub fn tenant<'a>(&'a self, id: &'a str) -> ModelRoute<'a, T> {
        match self.router.as_deref() {
            Some(router) if self.collection_ok => ModelRoute::new(router, id),
            _ => self.tenant_refused(),
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

    /// Takes a slot of a database with `max_concurrent_ops` if one is free now. Always
    /// inlined: called out of line, the handle (64 bytes) is moved in and its `Result` out,
    /// about a fifth of a warm `.db(name)`.
    #[inline(always)]
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
    /// entry is still live and the model's collection name is valid (checked when the handle
    /// was made). An `Option`, not a `Result`, so the hot path moves a small value, not an
    /// error-sized one.
    #[inline(always)]
    fn cached(&self, name: &str) -> Option<DbHandle<T>> {
        if !self.collection_ok {
            return None;
        }
        let lease = self.registry.lease_cached(name)?;
        Some(Self::on_checked_lease(lease))
    }

    #[cold]
    fn db_cold(&self, name: &str) -> Result<DbHandle<T>> {
        self.check_collection()?;
        Self::on_lease(self.registry.lease(name)?)
    }

    /// The model's collection in the leased database, for a model whose collection name was
    /// checked (a handle's `collection_ok`).
    #[inline(always)]
    pub(crate) fn on_checked_lease(lease: DbLease) -> DbHandle<T> {
        DbHandle {
            collection: lease.entry.collection::<T>(T::COLLECTION),
            lease,
            permit: None,
            slot: None,
        }
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
