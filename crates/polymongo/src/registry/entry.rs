//! One database's entry: everything the library keeps about a database, in one place with one
//! life.
//!
//! An entry holds the database's route (its pool, the driver `Database` made from that pool's
//! client), the marks of the models whose indexes exist there, its usage
//! counters, its concurrency guard, and its open change streams. What uses it holds an
//! `Arc` of it (handles, leases of operations, streams, transactions, bulk tasks), so "in
//! use" is exactly "someone besides the registry holds it"; the registry forgets an unused
//! entry when it has been idle too long or falls off the cache bound, and everything in it
//! goes at once.

use std::any::{Any, TypeId};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};

use mongodb::{Collection, Database};

use crate::pool::cluster::ClusterPool;
use crate::registry::gate::Gate;
use crate::registry::routes::Route;
use crate::registry::usage::{DbUsage, Usage};

/// Something an entry can end without knowing its type: a managed change stream.
pub(crate) trait Closable: Send + Sync {
    /// Ends it: its consumer sees the end, its server cursor is killed, its claims released.
    fn close(&self);
}

type ModelState = Arc<dyn Any + Send + Sync>;

/// A process-wide id for each managed change stream.
pub(crate) fn next_stream_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A database in use.
// The fields a warm `.db(name)` reads come first, so they share one cache line.
#[repr(C)]
pub(crate) struct DbEntry {
    retired: AtomicBool,
    epoch: u64,
    pub(crate) pool: Arc<ClusterPool>,
    /// On the registry's coarse clock, in ms.
    last_used: AtomicU64,
    pub(crate) database: Database,
    /// The collection handle of the first model used here, shared by its handles (see
    /// [`collection`](Self::collection)).
    first_collection: OnceLock<(TypeId, Collection<()>)>,
    pub(crate) gate: Option<Box<Gate>>,
    /// Per model, only for models that declare indexes: whether they exist here.
    models: RwLock<Vec<(TypeId, ModelState)>>,
    pub(crate) route: Option<Arc<Route>>,
    usage: OnceLock<Arc<DbUsage>>,
    /// Where the counters go when the entry does (usage analytics on).
    usage_sink: Option<Arc<Usage>>,
    streams: Mutex<Vec<(u64, Weak<dyn Closable>)>>,
    /// Whether the pool lists this database's name (see `ClusterPool::attach`).
    listed: bool,
    /// What placed the database on its pool when a higher layer did (the tenant directory's
    /// record), opaque here.
    tag: Option<Arc<dyn Any + Send + Sync>>,
}

impl DbEntry {
    pub(crate) fn new(
        database: Database,
        pool: Arc<ClusterPool>,
        epoch: u64,
        route: Option<Arc<Route>>,
        usage_sink: Option<Arc<Usage>>,
        now: u64,
        tag: Option<Arc<dyn Any + Send + Sync>>,
    ) -> Self {
        let listed = pool.attach(database.name());
        Self {
            tag,
            listed,
            retired: AtomicBool::new(false),
            epoch,
            pool,
            last_used: AtomicU64::new(now),
            models: RwLock::new(Vec::new()),
            first_collection: OnceLock::new(),
            gate: route
                .as_ref()
                .and_then(|r| Gate::from_config(&r.config))
                .map(Box::new),
            database,
            route,
            usage: OnceLock::new(),
            usage_sink,
            streams: Mutex::new(Vec::new()),
        }
    }

    /// `false` once the entry's pool lost the client it was made from, or the entry was
    /// replaced (reconfigured, forgotten); holders must resolve the name again.
    #[inline]
    pub(crate) fn is_live(&self) -> bool {
        !self.retired.load(Ordering::Acquire) && self.pool.is_current(self.epoch)
    }

    pub(crate) fn retire(&self) {
        self.retired.store(true, Ordering::Release);
    }

    pub(crate) fn name(&self) -> &str {
        self.database.name()
    }

    /// The placement tag the entry was made with, if a higher layer placed it.
    #[inline]
    pub(crate) fn tag(&self) -> Option<&Arc<dyn Any + Send + Sync>> {
        self.tag.as_ref()
    }

    #[inline]
    pub(crate) fn touch(&self, now: u64) {
        // A load first: most uses find the same tick and write nothing.
        if self.last_used.load(Ordering::Relaxed) != now {
            self.last_used.store(now, Ordering::Relaxed);
        }
    }

    pub(crate) fn last_used(&self) -> u64 {
        self.last_used.load(Ordering::Relaxed)
    }

    /// Model `M`'s collection `name` here. The first model used on the database keeps its
    /// handle in the entry, so its warm `.db(name)` costs a reference count; other models
    /// make theirs from the cached `Database` each time (about what the raw driver's
    /// `database(n).collection(c)` costs). One slot, not one per model: a driver
    /// `Collection` is about 300 bytes, and an entry with every model's would cost most
    /// databases more than all the rest of it.
    #[inline]
    pub(crate) fn collection<M: Send + Sync + 'static>(&self, name: &str) -> Collection<M> {
        let id = TypeId::of::<M>();
        let (first, collection) = self
            .first_collection
            .get_or_init(|| (id, self.database.collection::<()>(name)));
        if *first == id {
            collection.clone_with_type()
        } else {
            self.database.collection(name)
        }
    }

    /// [`collection`](Self::collection), with `name` checked unless this entry already made
    /// the collection of `M` (then it was checked then): no check on the warm path.
    pub(crate) fn checked_collection<M: Send + Sync + 'static>(
        &self,
        name: &str,
    ) -> crate::floor::error::Result<Collection<M>> {
        if let Some((first, collection)) = self.first_collection.get() {
            if *first == TypeId::of::<M>() {
                return Ok(collection.clone_with_type());
            }
        }
        crate::floor::name::validate_collection_name(name)?;
        Ok(self.collection(name))
    }

    /// The cached state of type `S` (a model's), made by `make` on first use.
    pub(crate) fn model<S: Any + Send + Sync>(&self, make: impl FnOnce() -> S) -> Arc<S> {
        let id = TypeId::of::<S>();
        let found = {
            let models = self.models.read().unwrap_or_else(|p| p.into_inner());
            models
                .iter()
                .find(|(i, _)| *i == id)
                .map(|(_, s)| Arc::clone(s))
        };
        let state = match found {
            Some(state) => state,
            None => {
                let mut models = self.models.write().unwrap_or_else(|p| p.into_inner());
                match models.iter().find(|(i, _)| *i == id) {
                    Some((_, s)) => Arc::clone(s),
                    None => {
                        let s: ModelState = Arc::new(make());
                        // Most databases see one or two models: grow one slot at a time
                        // (a first push would otherwise reserve four).
                        models.reserve_exact(1);
                        models.push((id, Arc::clone(&s)));
                        s
                    }
                }
            }
        };
        state
            .downcast::<S>()
            .unwrap_or_else(|_| unreachable!("states are stored under their own TypeId"))
    }

    /// Forgets every model's state (indexes ensured): after the database was
    /// dropped or overwritten, the next use ensures its indexes again.
    pub(crate) fn renew_models(&self) {
        self.models
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// [`renew_models`](Self::renew_models) when the returned guard drops. Taken before a
    /// drop or an overwrite is sent: the server may carry it out although the caller's future
    /// is dropped before the answer (a `timeout`), and marks kept then would say indexes
    /// exist that are gone.
    pub(crate) fn renew_models_after(&self) -> RenewModels<'_> {
        RenewModels(self)
    }

    /// The database's usage counters, made on first use; `None` when analytics are off.
    #[inline]
    pub(crate) fn usage(&self) -> Option<(&Arc<Usage>, &Arc<DbUsage>)> {
        let sink = self.usage_sink.as_ref()?;
        Some((
            sink,
            self.usage
                .get_or_init(|| Arc::new(DbUsage::new(self.name()))),
        ))
    }

    /// The usage counters, if any operation was counted.
    pub(crate) fn usage_if_any(&self) -> Option<&Arc<DbUsage>> {
        self.usage.get()
    }

    fn streams(&self) -> std::sync::MutexGuard<'_, Vec<(u64, Weak<dyn Closable>)>> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a change stream on this database (counted on its pool); returns its id.
    pub(crate) fn add_stream(&self, stream: Weak<dyn Closable>) -> u64 {
        let id = next_stream_id();
        self.streams().push((id, stream));
        self.pool.stream_opened();
        id
    }

    /// Unregisters a change stream (closed or dropped).
    pub(crate) fn remove_stream(&self, id: u64) {
        let mut streams = self.streams();
        let before = streams.len();
        streams.retain(|(i, _)| *i != id);
        if streams.len() != before {
            self.pool.stream_closed();
        }
    }

    /// Ends every change stream on this database; returns how many.
    pub(crate) fn close_streams(&self) -> usize {
        let open: Vec<Arc<dyn Closable>> = self
            .streams()
            .iter()
            .filter_map(|(_, s)| s.upgrade())
            .collect();
        // Closed outside the lock: closing unregisters.
        for stream in &open {
            stream.close();
        }
        open.len()
    }

    /// Change streams open on this database.
    pub(crate) fn stream_count(&self) -> usize {
        self.streams().len()
    }
}

impl Drop for DbEntry {
    fn drop(&mut self) {
        self.pool.detach(self.database.name(), self.listed);
        if let (Some(sink), Some(usage)) = (&self.usage_sink, self.usage.get()) {
            sink.forget(usage);
        }
    }
}

impl fmt::Debug for DbEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbEntry")
            .field("database", &self.name())
            .field("cluster", &self.pool.label())
            .field("live", &self.is_live())
            .finish()
    }
}

/// Renews an entry's model states when dropped: see [`DbEntry::renew_models_after`].
pub(crate) struct RenewModels<'a>(&'a DbEntry);

impl Drop for RenewModels<'_> {
    fn drop(&mut self) {
        self.0.renew_models();
    }
}
