//! Managed change streams: registered by database, counted in stats, closed on request.
//!
//! A [`ManagedStream`] wraps the driver's `ChangeStream` (whose automatic resume on transient
//! errors stays on). Its stream lives in a cell it shares with the manager's registry, so the
//! manager can close it from anywhere: closing takes the driver's stream out of the cell and
//! drops it — which kills its server cursor — then wakes the consumer, whose next poll (or the
//! poll it is parked in) ends with `None`. The consumer never hangs on a closed stream, and a
//! stream dropped by its consumer leaves the registry at once.

use std::fmt;
use std::future::IntoFuture;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use dashmap::DashMap;
use futures_util::task::AtomicWaker;
use futures_util::Stream;
use mongodb::bson::Document;
use mongodb::change_stream::event::{ChangeStreamEvent, ResumeToken};
use mongodb::change_stream::ChangeStream;
use mongodb::options::ChangeStreamOptions;
use serde::de::DeserializeOwned;
use tokio::runtime::Handle;

use crate::error::{Error, Result};
use crate::model::DbHandle;
use crate::poly::PolyMongo;
use crate::pool::{ClusterPool, Lease};
use crate::routing::DbSlot;

/// What a stream watches, for the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scope {
    /// A collection or a whole database: closed by `close_db_streams(database)`.
    Database(String),
    /// Every database of the main cluster.
    Cluster,
}

/// Something the registry can close without knowing its event type.
trait Closable: Send + Sync {
    fn close(&self);
}

/// The driver's stream, shared between its consumer and the registry.
struct Cell<E: DeserializeOwned> {
    stream: Mutex<Option<ChangeStream<E>>>,
    closed: AtomicBool,
    waker: AtomicWaker,
    runtime: Handle,
}

impl<E: DeserializeOwned> Cell<E> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<ChangeStream<E>>> {
        self.stream.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<E: DeserializeOwned + Send + Sync> Closable for Cell<E> {
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let stream = self.lock().take();
        // The driver kills the server cursor of a dropped stream from a task it spawns.
        let _in_runtime = self.runtime.enter();
        drop(stream);
        self.waker.wake();
    }
}

struct Entry {
    scope: Scope,
    cell: Weak<dyn Closable>,
}

/// The open managed streams of one manager.
#[derive(Default)]
pub(crate) struct Watches {
    next: AtomicU64,
    open: DashMap<u64, Entry>,
}

impl Watches {
    fn register(&self, scope: Scope, cell: Weak<dyn Closable>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.open.insert(id, Entry { scope, cell });
        id
    }

    /// Closes the streams `which` selects; returns how many.
    pub(crate) fn close(&self, which: impl Fn(&Scope) -> bool) -> usize {
        let chosen: Vec<Arc<dyn Closable>> = self
            .open
            .iter()
            .filter(|e| which(&e.scope))
            .filter_map(|e| e.cell.upgrade())
            .collect();
        // Closed outside the map's locks: a consumer's drop removes its entry meanwhile.
        for cell in &chosen {
            cell.close();
        }
        chosen.len()
    }

    /// Open streams `which` selects.
    pub(crate) fn count(&self, which: impl Fn(&Scope) -> bool) -> usize {
        self.open.iter().filter(|e| which(&e.scope)).count()
    }
}

impl fmt::Debug for Watches {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watches")
            .field("open", &self.open.len())
            .finish()
    }
}

/// A change stream managed by polymongo: [`DbHandle::watch`](crate::DbHandle::watch),
/// [`PolyMongo::watch_database`](crate::PolyMongo::watch_database),
/// [`PolyMongo::watch_cluster`](crate::PolyMongo::watch_cluster).
///
/// A [`Stream`] of events. It ends (`None`) when the manager closes it —
/// [`close_db_streams`](crate::PolyMongo::close_db_streams),
/// [`close_all_watches`](crate::PolyMongo::close_all_watches),
/// [`close_all`](crate::PolyMongo::close_all) — even while its consumer is waiting for the next
/// event; its server cursor is killed then. Errors the driver cannot resume from come as
/// `Some(Err(_))`.
///
/// Keep [`resume_token`](Self::resume_token) to carry on after a restart: pass it to
/// `resume_after` (or `start_after`) in
/// [`DbHandle::watch_with`](crate::DbHandle::watch_with) and its kin.
///
/// While it is open the stream counts as use of its pool, so an `auto_close` pool is not
/// closed under it.
pub struct ManagedStream<E: DeserializeOwned> {
    cell: Arc<Cell<E>>,
    id: u64,
    watches: Arc<Watches>,
    cluster: Arc<str>,
    token: Option<ResumeToken>,
    _lease: Option<Lease>,
}

impl<E: DeserializeOwned> fmt::Debug for ManagedStream<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagedStream")
            .field("id", &self.id)
            .field("cluster", &self.cluster)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl<E: DeserializeOwned + Send + Sync + 'static> ManagedStream<E> {
    fn new(
        stream: ChangeStream<E>,
        scope: Scope,
        pool: &ClusterPool,
        lease: Option<Lease>,
    ) -> Self {
        let token = stream.resume_token();
        let cell = Arc::new(Cell {
            stream: Mutex::new(Some(stream)),
            closed: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            runtime: pool.runtime().clone(),
        });
        let weak: Weak<dyn Closable> = Arc::downgrade(&cell) as Weak<dyn Closable>;
        let watches = pool.watches();
        let id = watches.register(scope, weak);
        Self {
            cell,
            id,
            watches: Arc::clone(watches),
            cluster: pool.label().into(),
            token,
            _lease: lease,
        }
    }

    /// Opens the stream `open` builds (the driver's `watch()` with its options) and registers
    /// it.
    pub(crate) async fn open<A>(
        open: A,
        scope: Scope,
        pool: &ClusterPool,
        lease: Option<Lease>,
    ) -> Result<Self>
    where
        A: IntoFuture<Output = mongodb::error::Result<ChangeStream<E>>>,
    {
        let stream = open
            .into_future()
            .await
            .map_err(|e| Error::from_driver(e, pool.label()))?;
        tracing::debug!(?scope, cluster = pool.label(), "change stream opened");
        Ok(Self::new(stream, scope, pool, lease))
    }
}

impl<E: DeserializeOwned> ManagedStream<E> {
    /// The resume token after the last event this stream returned (or, before any event, the
    /// one the server gave when it opened). Still available after the stream is closed.
    pub fn resume_token(&self) -> Option<ResumeToken> {
        self.token.clone()
    }

    /// Whether the manager closed this stream.
    pub fn is_closed(&self) -> bool {
        self.cell.closed.load(Ordering::Acquire)
    }
}

impl<E> Stream for ManagedStream<E>
where
    E: DeserializeOwned + Unpin + Send + Sync,
{
    type Item = Result<E>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        // Registered before the check, so a close that lands after it wakes this task.
        this.cell.waker.register(cx.waker());
        if this.cell.closed.load(Ordering::Acquire) {
            return Poll::Ready(None);
        }
        let mut guard = this.cell.lock();
        let Some(stream) = guard.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(&mut *stream).poll_next(cx) {
            Poll::Ready(Some(Ok(event))) => {
                // The driver's state is back in place once a poll is ready.
                this.token = stream.resume_token();
                Poll::Ready(Some(Ok(event)))
            }
            Poll::Ready(Some(Err(e))) => {
                Poll::Ready(Some(Err(Error::from_driver(e, &this.cluster))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<E: DeserializeOwned> Drop for ManagedStream<E> {
    fn drop(&mut self) {
        self.watches.open.remove(&self.id);
        let stream = self.cell.lock().take();
        let _in_runtime = self.cell.runtime.enter();
        drop(stream);
    }
}

impl PolyMongo {
    /// A managed change stream on every collection of database `name`, on the pool `name` is
    /// routed to. `pipeline` filters or reshapes events (`$match`, `$project`…); `options`
    /// carries `resume_after` / `start_after` (a [`ManagedStream::resume_token`]),
    /// `full_document` and the rest of the driver's change-stream options.
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::Closed`], or the driver's error when the server
    /// refuses the stream (a standalone `mongod` has no change streams).
    pub async fn watch_database(
        &self,
        name: &str,
        pipeline: impl IntoIterator<Item = Document>,
        options: impl Into<Option<ChangeStreamOptions>>,
    ) -> Result<ManagedStream<ChangeStreamEvent<Document>>> {
        let (slot, lease) = self.leased_slot(name)?;
        let open = slot
            .database
            .watch()
            .pipeline(pipeline)
            .with_options(options);
        ManagedStream::open(open, Scope::Database(name.to_owned()), &slot.pool, lease).await
    }

    /// A managed change stream on collection `collection` of database `db`, without a model
    /// (events carry documents); registered under `db` like
    /// [`DbHandle::watch`](crate::DbHandle::watch).
    ///
    /// # Errors
    /// [`Error::InvalidName`], [`Error::Closed`], or the driver's error.
    pub async fn watch_collection(
        &self,
        db: &str,
        collection: &str,
        pipeline: impl IntoIterator<Item = Document>,
        options: impl Into<Option<ChangeStreamOptions>>,
    ) -> Result<ManagedStream<ChangeStreamEvent<Document>>> {
        crate::name::validate_collection_name(collection)?;
        let (slot, lease) = self.leased_slot(db)?;
        let coll = slot.database.collection::<Document>(collection);
        let open = coll.watch().pipeline(pipeline).with_options(options);
        ManagedStream::open(open, Scope::Database(db.to_owned()), &slot.pool, lease).await
    }

    /// A managed change stream on every database of the main cluster (the `uri` option).
    /// Not closed by [`close_db_streams`](Self::close_db_streams); closed by
    /// [`close_all_watches`](Self::close_all_watches) and [`close_all`](Self::close_all).
    ///
    /// # Errors
    /// [`Error::Closed`], or the driver's error when the server refuses the stream.
    pub async fn watch_cluster(
        &self,
        pipeline: impl IntoIterator<Item = Document>,
        options: impl Into<Option<ChangeStreamOptions>>,
    ) -> Result<ManagedStream<ChangeStreamEvent<Document>>> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        let pool = self.router().main_pool();
        let (client, _) = pool.client()?;
        let open = client.watch().pipeline(pipeline).with_options(options);
        ManagedStream::open(open, Scope::Cluster, pool, None).await
    }

    /// Closes every managed stream on database `name` (its collections' and its own); returns
    /// how many. Their consumers see the end of the stream; their server cursors are killed.
    pub fn close_db_streams(&self, name: &str) -> usize {
        let closed = self
            .watches()
            .close(|s| matches!(s, Scope::Database(d) if d == name));
        tracing::debug!(database = name, closed, "change streams closed");
        closed
    }

    /// Closes every managed stream of this manager; returns how many.
    pub fn close_all_watches(&self) -> usize {
        let closed = self.watches().close(|_| true);
        tracing::debug!(closed, "all change streams closed");
        closed
    }

    /// Managed change streams open now.
    pub fn open_change_streams(&self) -> usize {
        self.watches().count(|_| true)
    }

    /// Managed change streams open on database `name`.
    pub(crate) fn db_change_streams(&self, name: &str) -> usize {
        self.watches()
            .count(|s| matches!(s, Scope::Database(d) if d == name))
    }

    /// The slot of `name` with a lease on its pool, taken so that the slot is still live.
    pub(crate) fn leased_slot(&self, name: &str) -> Result<(Arc<DbSlot>, Option<Lease>)> {
        loop {
            let slot = self.router().resolve(name)?;
            let lease = slot.pool.lease();
            // Checked after the lease is taken: see `ClusterPool::lease`.
            if slot.is_live() {
                return Ok((slot, lease));
            }
        }
    }
}

impl<T> DbHandle<T>
where
    T: DeserializeOwned + Unpin + Send + Sync + 'static,
{
    /// A managed change stream on this collection: registered under its database, counted in
    /// stats, ended by [`PolyMongo::close_db_streams`] and its kin. Use
    /// [`collection`](Self::collection)`().watch()` for the driver's unmanaged stream.
    ///
    /// # Errors
    /// The driver's error when the server refuses the stream.
    pub async fn watch(&self) -> Result<ManagedStream<ChangeStreamEvent<T>>> {
        self.watch_with([], None).await
    }

    /// [`watch`](Self::watch) with a pipeline and the driver's change-stream options
    /// (`resume_after` a [`ManagedStream::resume_token`], `full_document`…).
    ///
    /// # Errors
    /// As [`watch`](Self::watch).
    pub async fn watch_with(
        &self,
        pipeline: impl IntoIterator<Item = Document>,
        options: impl Into<Option<ChangeStreamOptions>>,
    ) -> Result<ManagedStream<ChangeStreamEvent<T>>> {
        let pool = &self.slot().pool;
        let open = self
            .collection()
            .watch()
            .pipeline(pipeline)
            .with_options(options);
        let scope = Scope::Database(self.database_name().to_owned());
        ManagedStream::open(open, scope, pool, pool.lease()).await
    }
}
