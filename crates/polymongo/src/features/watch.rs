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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use futures_util::Stream;
use mongodb::bson::Document;
use mongodb::change_stream::event::{ChangeStreamEvent, ResumeToken};
use mongodb::change_stream::ChangeStream;
use mongodb::options::ChangeStreamOptions;
use serde::de::DeserializeOwned;
use tokio::runtime::Handle;

use crate::floor::error::{Error, Result};
use crate::handle::model::DbHandle;
use crate::pool::cluster::ClusterPool;
use crate::registry::entry::Closable;
use crate::registry::{DbLease, Registry};

/// Where a stream is registered, released when it closes or is dropped.
enum Owner {
    /// On a database's entry; the lease keeps the entry (and a dedicated pool) in use.
    Database(DbLease),
    /// On the whole main cluster.
    Cluster(Arc<Registry>),
}

/// The driver's stream, shared between its consumer and the registry.
struct Cell<E: DeserializeOwned> {
    stream: Mutex<Option<ChangeStream<E>>>,
    closed: AtomicBool,
    waker: AtomicWaker,
    runtime: Handle,
    /// Taken (and released) by the first close or drop.
    owner: Mutex<Option<(u64, Owner)>>,
}

impl<E: DeserializeOwned> Cell<E> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<ChangeStream<E>>> {
        self.stream.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops the driver's stream (the driver kills its server cursor from a task it spawns)
    /// and releases the registration and the lease: a closed stream is no longer counted and
    /// no longer keeps its database or pool in use.
    fn release(&self) {
        let stream = self.lock().take();
        {
            let _in_runtime = self.runtime.enter();
            drop(stream);
        }
        let owner = self.owner.lock().unwrap_or_else(|p| p.into_inner()).take();
        match owner {
            Some((id, Owner::Database(lease))) => lease.entry.remove_stream(id),
            Some((id, Owner::Cluster(registry))) => registry.remove_cluster_stream(id),
            None => {}
        }
    }
}

impl<E: DeserializeOwned + Send + Sync> Closable for Cell<E> {
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.release();
        self.waker.wake();
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
    cluster: Arc<str>,
    token: Option<ResumeToken>,
}

impl<E: DeserializeOwned> fmt::Debug for ManagedStream<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagedStream")
            .field("cluster", &self.cluster)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl<E: DeserializeOwned + Send + Sync + 'static> ManagedStream<E> {
    /// Opens the stream `open` builds (the driver's `watch()` with its options) and registers
    /// it with `owner`. Refused with [`Error::Closed`] when the manager began closing,
    /// whenever that happened: the registration comes first and the check after it, and a
    /// close marks the pools closing before it ends the registered streams.
    async fn open<A>(open: A, owner: Owner, pool: &ClusterPool) -> Result<Self>
    where
        A: IntoFuture<Output = mongodb::error::Result<ChangeStream<E>>>,
    {
        if pool.is_closing() {
            return Err(Error::Closed);
        }
        let stream = open
            .into_future()
            .await
            .map_err(|e| Error::from_driver(e, pool.label()))?;
        let token = stream.resume_token();
        let cell = Arc::new(Cell {
            stream: Mutex::new(Some(stream)),
            closed: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            runtime: pool.runtime().clone(),
            owner: Mutex::new(None),
        });
        let weak: Weak<dyn Closable> = Arc::downgrade(&cell) as Weak<dyn Closable>;
        let id = match &owner {
            Owner::Database(lease) => lease.entry.add_stream(weak),
            Owner::Cluster(registry) => registry.add_cluster_stream(weak),
        };
        *cell.owner.lock().unwrap_or_else(|p| p.into_inner()) = Some((id, owner));
        if pool.is_closing() {
            cell.close();
            return Err(Error::Closed);
        }
        tracing::debug!(cluster = pool.label(), "change stream opened");
        Ok(Self {
            cell,
            cluster: pool.label().into(),
            token,
        })
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
        self.cell.release();
    }
}

/// A managed stream on every collection of database `name`:
/// [`PolyMongo::watch_database`](crate::PolyMongo::watch_database).
pub(crate) async fn watch_database(
    registry: &Registry,
    name: &str,
    pipeline: impl IntoIterator<Item = Document>,
    options: impl Into<Option<ChangeStreamOptions>>,
) -> Result<ManagedStream<ChangeStreamEvent<Document>>> {
    let lease = registry.lease(name)?;
    let database = lease.entry.database.clone();
    let open = database.watch().pipeline(pipeline).with_options(options);
    let pool = Arc::clone(&lease.entry.pool);
    ManagedStream::open(open, Owner::Database(lease), &pool).await
}

/// A managed stream on one collection of database `db`:
/// [`PolyMongo::watch_collection`](crate::PolyMongo::watch_collection).
pub(crate) async fn watch_collection(
    registry: &Registry,
    db: &str,
    collection: &str,
    pipeline: impl IntoIterator<Item = Document>,
    options: impl Into<Option<ChangeStreamOptions>>,
) -> Result<ManagedStream<ChangeStreamEvent<Document>>> {
    crate::floor::name::validate_collection_name(collection)?;
    let lease = registry.lease(db)?;
    let coll = lease.entry.database.collection::<Document>(collection);
    let open = coll.watch().pipeline(pipeline).with_options(options);
    let pool = Arc::clone(&lease.entry.pool);
    ManagedStream::open(open, Owner::Database(lease), &pool).await
}

/// A managed stream on every database of the main cluster:
/// [`PolyMongo::watch_cluster`](crate::PolyMongo::watch_cluster).
pub(crate) async fn watch_cluster(
    registry: &Arc<Registry>,
    pipeline: impl IntoIterator<Item = Document>,
    options: impl Into<Option<ChangeStreamOptions>>,
) -> Result<ManagedStream<ChangeStreamEvent<Document>>> {
    if registry.is_closed() {
        return Err(Error::Closed);
    }
    let pool = Arc::clone(registry.routes().main_pool());
    let (client, _) = registry.routes().client_of(&pool)?;
    let open = client.watch().pipeline(pipeline).with_options(options);
    ManagedStream::open(open, Owner::Cluster(Arc::clone(registry)), &pool).await
}

/// Ends every managed stream on database `name`; returns how many.
pub(crate) fn close_db_streams(registry: &Registry, name: &str) -> usize {
    let closed = registry.peek(name).map_or(0, |entry| entry.close_streams());
    tracing::debug!(database = name, closed, "change streams closed");
    closed
}

/// Ends every managed stream; returns how many.
pub(crate) fn close_all_watches(registry: &Registry) -> usize {
    let closed = registry.close_all_streams();
    tracing::debug!(closed, "all change streams closed");
    closed
}

/// Managed streams open now: one read per pool.
pub(crate) fn open_change_streams(registry: &Registry) -> usize {
    registry
        .routes()
        .pools()
        .iter()
        .map(|p| p.open_streams())
        .sum()
}

impl<T> DbHandle<T>
where
    T: DeserializeOwned + Unpin + Send + Sync + 'static,
{
    /// A managed change stream on this collection: registered under its database, counted in
    /// stats, ended by [`PolyMongo::close_db_streams`](crate::PolyMongo::close_db_streams) and its kin. Use
    /// [`collection`](Self::collection)`().watch()` for the driver's unmanaged stream.
    ///
    /// # Errors
    /// [`Error::Closed`] once the manager began closing, or the driver's error when the server
    /// refuses the stream.
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
        let open = self
            .collection()
            .watch()
            .pipeline(pipeline)
            .with_options(options);
        let pool = Arc::clone(&self.lease.entry.pool);
        ManagedStream::open(open, Owner::Database(self.lease.clone()), &pool).await
    }
}
