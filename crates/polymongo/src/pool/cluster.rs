//! One driver `Client` (one connection pool) per cluster, created on first use.
//!
//! The pool owns the only long-lived `Client` of its cluster; database handles clone it.
//! Creation happens under a mutex so concurrent first uses make exactly one client, and inside
//! the runtime the manager was built on, because the driver binds a client to the runtime that
//! created it and spawns its monitors there.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use mongodb::event::command::CommandEvent;
use mongodb::event::sdam::SdamEvent;
use mongodb::event::EventHandler;
use mongodb::options::{ClientOptions, ServerAddress};
use mongodb::Client;
use serde::Serialize;
use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::floor::error::{Error, Result};
use crate::pool::cmap::{self, Activity, ConnectionReturned, Counters, Gauges, PoolStats};
use crate::pool::events::{PoolSignal, Signals};

/// Where a pool stands, as the npm package's `getConnectionState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionState {
    /// No client exists: never used (cold start) or closed.
    Disconnected,
    /// A client exists but no server of the cluster has answered its monitor yet.
    Connecting,
    /// At least one server of the cluster is known and usable.
    Connected,
    /// [`close_all`](crate::PolyMongo::close_all) is shutting the client down.
    Disconnecting,
}

const PHASE_IDLE: u8 = 0;
const PHASE_OPEN: u8 = 1;
const PHASE_CLOSING: u8 = 2;
const PHASE_CLOSED: u8 = 3;

/// What the driver's monitors have told us; shared with the event handlers.
struct Health {
    phase: AtomicU8,
    /// Servers whose last description was not `Unknown`.
    available: Mutex<HashSet<ServerAddress>>,
    /// Bumped for each new client and each close: events of older clients are ignored.
    generation: AtomicU64,
    /// Whether the last transition reported was "connected", so each is reported once.
    announced: AtomicBool,
    reporter: Reporter,
}

/// Who a pool is, for the hook dispatcher.
struct Reporter {
    pool: u64,
    cluster: String,
    kind: PoolKind,
    signals: Signals,
}

impl Health {
    fn available(&self) -> MutexGuard<'_, HashSet<ServerAddress>> {
        // A poisoned set is still a valid set: the handler only inserts and removes.
        self.available.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reports a transition unless it is the state already reported.
    fn announce(&self, connected: bool) {
        if self.announced.swap(connected, Ordering::AcqRel) != connected {
            let r = &self.reporter;
            // The dispatcher is gone only when the manager is: nobody to tell then.
            let _ = r.signals.send(PoolSignal::Transition {
                pool: r.pool,
                cluster: r.cluster.clone(),
                kind: r.kind,
                connected,
                at: SystemTime::now(),
            });
        }
    }

    fn on_sdam(&self, generation: u64, event: SdamEvent) {
        if generation != self.generation.load(Ordering::Acquire) {
            return;
        }
        match event {
            SdamEvent::ServerDescriptionChanged(e) => {
                let usable = e.new_description.server_type() != mongodb::ServerType::Unknown;
                if let (Some(err), None) =
                    (e.new_description.error(), e.previous_description.error())
                {
                    let _ = self.reporter.signals.send(PoolSignal::Error {
                        cluster: self.reporter.cluster.clone(),
                        database: None,
                        message: format!("server {} unreachable: {err}", e.address),
                        at: SystemTime::now(),
                    });
                }
                let any = {
                    let mut set = self.available();
                    if usable {
                        set.insert(e.address);
                    } else {
                        set.remove(&e.address);
                    }
                    !set.is_empty()
                };
                if self.phase.load(Ordering::Acquire) == PHASE_OPEN {
                    self.announce(any);
                }
            }
            SdamEvent::ServerClosed(e) => {
                let any = {
                    let mut set = self.available();
                    set.remove(&e.address);
                    !set.is_empty()
                };
                if !any {
                    self.announce(false);
                }
            }
            _ => {}
        }
    }

    /// The pool lost its client: later events of that client are ignored.
    fn client_taken(&self, phase: u8) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.phase.store(phase, Ordering::Release);
        self.available().clear();
        self.announce(false);
    }
}

/// What every pool of a manager shares, handed down by the layers above.
#[derive(Clone)]
pub(crate) struct PoolEnv {
    pub(crate) runtime: Handle,
    pub(crate) live_clients: Arc<AtomicUsize>,
    pub(crate) signals: Signals,
    /// The `wait_queue_timeout` option.
    pub(crate) wait_queue_timeout: Option<Duration>,
    /// The `idle_close_grace` option: how long a client closed for idleness may finish work
    /// the library cannot see.
    pub(crate) idle_close_grace: Duration,
    /// A command-event handler for every client (usage analytics from commands), if any.
    pub(crate) command_handler: Option<EventHandler<CommandEvent>>,
    /// Told when a connection comes back or closes (with `command_handler`).
    pub(crate) connection_returned: Option<ConnectionReturned>,
}

impl fmt::Debug for PoolEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolEnv")
            .field("wait_queue_timeout", &self.wait_queue_timeout)
            .field("idle_close_grace", &self.idle_close_grace)
            .finish_non_exhaustive()
    }
}

static NEXT_POOL_ID: AtomicU64 = AtomicU64::new(1);

/// How a pool was shut down by [`ClusterPool::finish_close`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shutdown {
    /// There was no client to close.
    NotOpen,
    /// Every operation, cursor and session ended before the deadline.
    Graceful,
    /// The deadline passed (or the close was forced): the client is being shut down in the
    /// background without waiting.
    Forced,
}

/// Whether a pool serves many databases or one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolKind {
    /// A cluster's pool, shared by every database routed to that cluster without pool settings.
    Shared,
    /// A database's own pool (it has `max_connections`, `min_connections` or `auto_close`).
    Dedicated,
}

struct Slot {
    client: Option<Client>,
    /// The open client's connection gauges.
    gauges: Option<Arc<Gauges>>,
    /// The open client's pool size (`max`, `min`): what the pool really has, whatever the
    /// options of the next client say.
    open_size: (u32, u32),
    /// Options the next client is made with.
    options: ClientOptions,
}

/// At most this many database names are kept per pool for statistics and hook events; the
/// count is always exact.
pub const MAX_LISTED_DATABASES: usize = 100;

/// Up to [`MAX_LISTED_DATABASES`] names of the databases a pool serves now, kept by the
/// registry as entries come and go, so reading them costs the same whatever the number of
/// databases. Only entries that got a place here take the lock when they go.
#[derive(Default)]
struct Served {
    names: Vec<Box<str>>,
}

/// The connection pool of one cluster (shared) or of one database (dedicated).
pub(crate) struct ClusterPool {
    label: String,
    kind: PoolKind,
    /// Boxed: the driver's options are large, and the fields the hot path reads (`epoch`,
    /// `kind`) should share a cache line rather than sit on either side of them.
    slot: Mutex<Box<Slot>>,
    /// Bumped (under the `slot` lock) each time the pool's client is taken away. Registry
    /// entries remember the epoch their client came from; a different epoch means that client
    /// is gone.
    epoch: AtomicU64,
    id: u64,
    health: Arc<Health>,
    counters: Arc<Counters>,
    activity: Arc<Activity>,
    /// One permit per connection of the pool, taken by `DbHandle::run` (replaced when the pool
    /// is resized).
    connection_slots: std::sync::RwLock<Arc<Semaphore>>,
    /// Operations waiting for a permit now: the pool's wait queue.
    waiting: Arc<AtomicI64>,
    wait_queue_timeout: Option<Duration>,
    /// Operations running through `DbHandle::run` now; a graceful close waits for them.
    in_flight: AtomicUsize,
    /// Woken when `in_flight` falls to zero.
    drained: tokio::sync::Notify,
    live_clients: Arc<AtomicUsize>,
    runtime: Handle,
    command_handler: Option<EventHandler<CommandEvent>>,
    connection_returned: Option<ConnectionReturned>,
    idle_close_grace: Duration,
    /// Idle time after which the pool is closed, in ms; 0: never (not `auto_close`).
    ttl_ms: AtomicU64,
    /// Leases alive on this pool (dedicated pools only; shared pools are never closed for
    /// idleness).
    leases: AtomicUsize,
    served: Mutex<Served>,
    /// Databases served now (exact).
    served_count: AtomicUsize,
    /// Managed change streams open on the pool's databases.
    open_streams: AtomicUsize,
    /// Set when a close stops waiting (deadline, force): work in flight through the library
    /// is cut then, since the driver alone may never end it (a black-holed connection has no
    /// timeout once the client's monitor is shut down). `cut_now` wakes the work waiting.
    cut: AtomicBool,
    cut_now: tokio::sync::Notify,
}

impl fmt::Debug for ClusterPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterPool")
            .field("cluster", &self.label)
            .field("kind", &self.kind)
            .field("state", &self.state())
            .finish()
    }
}

impl ClusterPool {
    /// `label` is the URI with its password redacted; it is all logs and errors ever show.
    pub(crate) fn new(
        label: String,
        kind: PoolKind,
        options: ClientOptions,
        env: &PoolEnv,
        ttl: Option<Duration>,
    ) -> Self {
        let id = NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed);
        let size = pool_size(&options);
        let health = Arc::new(Health {
            phase: AtomicU8::new(PHASE_IDLE),
            available: Mutex::new(HashSet::new()),
            generation: AtomicU64::new(0),
            announced: AtomicBool::new(false),
            reporter: Reporter {
                pool: id,
                cluster: label.clone(),
                kind,
                signals: env.signals.clone(),
            },
        });
        Self {
            label,
            kind,
            slot: Mutex::new(Box::new(Slot {
                client: None,
                gauges: None,
                open_size: (0, 0),
                options,
            })),
            counters: Arc::new(Counters::default()),
            activity: Arc::new(Activity::default()),
            epoch: AtomicU64::new(0),
            id,
            health,
            connection_slots: std::sync::RwLock::new(Arc::new(Semaphore::new(size))),
            waiting: Arc::new(AtomicI64::new(0)),
            wait_queue_timeout: env.wait_queue_timeout,
            in_flight: AtomicUsize::new(0),
            drained: tokio::sync::Notify::new(),
            live_clients: Arc::clone(&env.live_clients),
            runtime: env.runtime.clone(),
            command_handler: env.command_handler.clone(),
            connection_returned: env.connection_returned.clone(),
            idle_close_grace: env.idle_close_grace,
            ttl_ms: AtomicU64::new(ttl_millis(ttl)),
            leases: AtomicUsize::new(0),
            served: Mutex::new(Served::default()),
            served_count: AtomicUsize::new(0),
            open_streams: AtomicUsize::new(0),
            cut: AtomicBool::new(false),
            cut_now: tokio::sync::Notify::new(),
        }
    }

    /// A number naming this pool for the hook dispatcher.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Reports an error to whoever listens (the `on_error` hooks).
    pub(crate) fn report_error(&self, database: Option<&str>, message: String) {
        let _ = self.health.reporter.signals.send(PoolSignal::Error {
            cluster: self.label.clone(),
            database: database.map(str::to_owned),
            message,
            at: SystemTime::now(),
        });
    }

    /// The pool's size as its next client is made.
    fn pool_size(&self) -> usize {
        pool_size(&self.slot().options)
    }

    /// Waits for one of the pool's connections to be free (up to `wait_queue_timeout` when
    /// that bound is on) and holds it for the caller. While waiting, the caller is counted in
    /// the pool's wait queue; a cancelled wait leaves it at once.
    pub(crate) async fn connection_slot(&self) -> Result<OwnedSemaphorePermit> {
        self.connection_slot_within(self.wait_queue_timeout).await
    }

    /// [`connection_slot`](Self::connection_slot) with the caller's own bound (`None`: no
    /// bound) instead of the pool's `wait_queue_timeout`.
    pub(crate) async fn connection_slot_within(
        &self,
        wait: Option<Duration>,
    ) -> Result<OwnedSemaphorePermit> {
        let slots = Arc::clone(
            &self
                .connection_slots
                .read()
                .unwrap_or_else(|p| p.into_inner()),
        );
        if let Ok(permit) = Arc::clone(&slots).try_acquire_owned() {
            return Ok(permit);
        }
        // Counted in the queue, and its wait observed when it leaves, however it leaves.
        let queued = Queued::enter(&self.waiting, &self.counters);
        let started = queued.since;
        let outcome = match wait {
            Some(wait) => tokio::time::timeout(wait, slots.acquire_owned()).await,
            None => Ok(slots.acquire_owned().await),
        };
        match outcome {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => {
                tracing::debug!(cluster = %self.label, waited = ?started.elapsed(), "no connection came free in time");
                Err(Error::PoolExhausted {
                    cluster: self.label.clone(),
                    max_pool_size: self.pool_size() as u32,
                    waited: started.elapsed(),
                })
            }
        }
    }

    /// Counts one operation in flight until the returned guard drops; refused with
    /// [`Error::Closed`] once the pool has begun closing (new work), so a graceful close can
    /// wait for exactly the operations that started before it.
    pub(crate) fn begin_operation(self: &Arc<Self>) -> Result<InFlight> {
        // SeqCst on both sides (here and in `begin_close` + `drain`): either the close sees
        // this operation, or this check sees the close.
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = InFlight {
            pool: Arc::clone(self),
        };
        if self.health.phase.load(Ordering::SeqCst) >= PHASE_CLOSING {
            return Err(Error::Closed);
        }
        Ok(guard)
    }

    /// Resolves when the pool's close stops waiting for work in flight; that work should then
    /// end at once (its outcome unknown). Registered when first polled (a waiter on one
    /// `Notify`), then checked: with the close setting the flag before it notifies, either
    /// the check sees the cut or the cut wakes the waiter.
    pub(crate) async fn cut(&self) {
        let notified = self.cut_now.notified();
        let mut notified = std::pin::pin!(notified);
        notified.as_mut().enable();
        if self.cut.load(Ordering::SeqCst) {
            return;
        }
        notified.await;
    }

    /// Waits until no operation is in flight.
    async fn drain(&self) {
        loop {
            let notified = self.drained.notified();
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// The runtime the pool's clients live on.
    pub(crate) fn runtime(&self) -> &Handle {
        &self.runtime
    }

    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    pub(crate) fn kind(&self) -> PoolKind {
        self.kind
    }

    fn slot(&self) -> MutexGuard<'_, Box<Slot>> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The pool's client and its epoch, the client created now if the pool is not open
    /// (first use, or reopening after an idle close).
    pub(crate) fn client(&self) -> Result<(Client, u64)> {
        let mut slot = self.slot();
        if self.health.phase.load(Ordering::Acquire) >= PHASE_CLOSING {
            return Err(Error::Closed);
        }
        let epoch = self.epoch.load(Ordering::Acquire);
        if let Some(client) = slot.client.as_ref() {
            return Ok((client.clone(), epoch));
        }
        let mut options = slot.options.clone();
        let generation = self.health.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let health = Arc::clone(&self.health);
        options.sdam_event_handler = Some(EventHandler::callback(move |e| {
            health.on_sdam(generation, e)
        }));
        let gauges = Arc::new(Gauges::default());
        options.cmap_event_handler = Some(cmap::observer(
            Arc::clone(&gauges),
            Arc::clone(&self.counters),
            Arc::clone(&self.activity),
            self.connection_returned.clone(),
        ));
        options.command_event_handler = self.command_handler.clone();
        let _in_runtime = self.runtime.enter();
        let client =
            Client::with_options(options).map_err(|e| Error::from_driver(e, &self.label))?;
        self.live_clients.fetch_add(1, Ordering::AcqRel);
        self.health.phase.store(PHASE_OPEN, Ordering::Release);
        self.activity.touch();
        tracing::info!(cluster = %self.label, kind = ?self.kind, max_pool_size = ?slot.options.max_pool_size, "pool opened");
        slot.open_size = (
            slot.options.max_pool_size.unwrap_or(DRIVER_POOL_SIZE),
            slot.options.min_pool_size.unwrap_or(0),
        );
        slot.client = Some(client.clone());
        slot.gauges = Some(gauges);
        Ok((client, epoch))
    }

    /// Whether a client obtained at `epoch` is still this pool's client.
    #[inline]
    pub(crate) fn is_current(&self, epoch: u64) -> bool {
        self.epoch.load(Ordering::Acquire) == epoch
    }

    /// New options and idle time. When the pool size changes and a client is open, that
    /// client is taken out (returned, for a graceful background shutdown): the next use opens
    /// a client of the new size, so the pool never reports a size it does not have.
    pub(crate) fn reconfigure(
        &self,
        options: ClientOptions,
        ttl: Option<Duration>,
    ) -> Option<Client> {
        let size = pool_size(&options);
        let resized = self.pool_size() != size;
        if resized {
            *self
                .connection_slots
                .write()
                .unwrap_or_else(|p| p.into_inner()) = Arc::new(Semaphore::new(size));
        }
        self.ttl_ms.store(ttl_millis(ttl), Ordering::Release);
        let mut slot = self.slot();
        slot.options = options;
        if resized && slot.client.is_some() {
            self.epoch.fetch_add(1, Ordering::SeqCst);
            self.health.client_taken(PHASE_IDLE);
            slot.gauges = None;
            tracing::info!(cluster = %self.label, max_pool_size = size, "pool resized; its client closes and reopens at the new size");
            return slot.client.take();
        }
        None
    }

    /// Counts a use of a dedicated pool until the lease is dropped; `None` for shared pools,
    /// which are never closed for idleness and so need no count.
    ///
    /// The caller must check its registry entry is still live *after* taking the lease: with
    /// [`begin_idle_close`](Self::begin_idle_close) bumping the epoch before reading the count
    /// (both `SeqCst`), either the closer sees this lease, or this check sees the new epoch.
    #[inline]
    pub(crate) fn lease(self: &Arc<Self>) -> Option<PoolLease> {
        if self.kind == PoolKind::Shared {
            return None;
        }
        self.leases.fetch_add(1, Ordering::SeqCst);
        self.activity.touch();
        Some(PoolLease {
            pool: Arc::clone(self),
        })
    }

    /// Milliseconds since the pool was last used (a lease taken or given back, a connection
    /// checked out or in).
    pub(crate) fn idle_ms(&self) -> u64 {
        self.activity.idle_ms()
    }

    /// The `auto_close` idle time, if any.
    pub(crate) fn ttl(&self) -> Option<Duration> {
        match self.ttl_ms.load(Ordering::Acquire) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// Whether the pool began closing for good (new work is refused).
    pub(crate) fn is_closing(&self) -> bool {
        self.health.phase.load(Ordering::SeqCst) >= PHASE_CLOSING
    }

    /// A managed change stream opened on one of the pool's databases.
    pub(crate) fn stream_opened(&self) {
        self.open_streams.fetch_add(1, Ordering::SeqCst);
    }

    /// A managed change stream closed.
    pub(crate) fn stream_closed(&self) {
        self.open_streams.fetch_sub(1, Ordering::SeqCst);
    }

    /// Managed change streams open on the pool's databases now.
    pub(crate) fn open_streams(&self) -> usize {
        self.open_streams.load(Ordering::SeqCst)
    }

    /// Whether a client is open now.
    pub(crate) fn is_open(&self) -> bool {
        self.health.phase.load(Ordering::Acquire) == PHASE_OPEN
    }

    /// Whether nothing the library can see uses the pool: no lease, no connection checked out.
    fn unused(&self, slot: &Slot) -> bool {
        self.leases.load(Ordering::SeqCst) == 0
            && slot.gauges.as_ref().is_none_or(|g| g.in_use() <= 0)
    }

    /// Whether the pool is open, unused, and idle past its `ttl`.
    pub(crate) fn idle_expired(&self) -> bool {
        self.is_open()
            && self.unused(&self.slot())
            && self
                .ttl()
                .is_some_and(|ttl| self.idle_ms() >= ttl.as_millis() as u64)
    }

    /// Closes the pool for idleness (TTL, least-recently-used bound, a database routed away):
    /// the next use opens a new client. Returns the client to shut down, or `None` if the pool
    /// has no client or is in use (then nothing is closed).
    pub(crate) fn begin_idle_close(&self) -> Option<Client> {
        let mut slot = self.slot();
        if slot.client.is_none() || !self.unused(&slot) {
            return None;
        }
        // Epoch first, then the lease count again: see `lease`. If a lease appeared in
        // between, give up; the epoch bump only makes entries resolve again to this client.
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if !self.unused(&slot) {
            return None;
        }
        self.health.client_taken(PHASE_IDLE);
        tracing::info!(cluster = %self.label, idle_ms = self.idle_ms(), "idle pool closing");
        slot.gauges = None;
        slot.client.take()
    }

    /// How long a client taken out for idleness may finish work the library cannot see.
    pub(crate) fn idle_close_grace(&self) -> Duration {
        self.idle_close_grace
    }

    /// Records that a client of this pool finished shutting down.
    pub(crate) fn client_gone(&self) {
        self.live_clients.fetch_sub(1, Ordering::AcqRel);
    }

    /// The pool's figures now (zero connections when no client is open). The sizes are those
    /// of the open client, else of the next one.
    pub(crate) fn stats(&self) -> PoolStats {
        let slot = self.slot();
        let (max, min) = if slot.client.is_some() {
            slot.open_size
        } else {
            (
                slot.options.max_pool_size.unwrap_or(DRIVER_POOL_SIZE),
                slot.options.min_pool_size.unwrap_or(0),
            )
        };
        PoolStats::read(
            slot.gauges.as_deref(),
            &self.counters,
            self.waiting.load(Ordering::Relaxed),
            max,
            min,
        )
    }

    pub(crate) fn state(&self) -> ConnectionState {
        match self.health.phase.load(Ordering::Acquire) {
            PHASE_OPEN if !self.health.available().is_empty() => ConnectionState::Connected,
            PHASE_OPEN => ConnectionState::Connecting,
            PHASE_CLOSING => ConnectionState::Disconnecting,
            _ => ConnectionState::Disconnected,
        }
    }

    /// A database now served by this pool (a registry entry was made for it). Returns whether
    /// its name was listed, which [`detach`](Self::detach) must be told.
    pub(crate) fn attach(&self, name: &str) -> bool {
        self.served_count.fetch_add(1, Ordering::Relaxed);
        let mut served = self.served.lock().unwrap_or_else(|p| p.into_inner());
        if served.names.len() < MAX_LISTED_DATABASES {
            served.names.push(name.into());
            return true;
        }
        false
    }

    /// A database no longer served (its entry was dropped); `listed` as `attach` returned.
    pub(crate) fn detach(&self, name: &str, listed: bool) {
        self.served_count.fetch_sub(1, Ordering::Relaxed);
        if listed {
            let mut served = self.served.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(i) = served.names.iter().position(|n| &**n == name) {
                served.names.swap_remove(i);
            }
        }
    }

    /// How many cached databases this pool serves.
    pub(crate) fn served_count(&self) -> usize {
        self.served_count.load(Ordering::Relaxed)
    }

    /// How many databases the pool serves now, and up to [`MAX_LISTED_DATABASES`] of their
    /// names, sorted.
    pub(crate) fn served(&self) -> (usize, Vec<String>) {
        let mut names: Vec<String> = {
            let served = self.served.lock().unwrap_or_else(|p| p.into_inner());
            served.names.iter().map(|n| n.to_string()).collect()
        };
        names.sort_unstable();
        names.dedup();
        (self.served_count(), names)
    }

    /// First half of closing for good: from now on [`client`](Self::client) fails with
    /// `Closed` and every registry entry made from this pool is stale. Returns the client to
    /// shut down.
    pub(crate) fn begin_close(&self) -> Option<Client> {
        let mut slot = self.slot();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.health.client_taken(PHASE_CLOSING);
        // Pairs with `begin_operation`.
        std::sync::atomic::fence(Ordering::SeqCst);
        slot.gauges = None;
        slot.client.take()
    }

    /// Second half of closing: waits up to `deadline` for the operations in flight, then for
    /// the client's cursors and sessions, then leaves the client to a background shutdown
    /// that does not wait. Returns within `deadline` whatever the network does, and at once
    /// when `force` fires.
    pub(crate) async fn finish_close(
        self: &Arc<Self>,
        taken: Option<Client>,
        deadline: Duration,
        mut force: tokio::sync::watch::Receiver<bool>,
    ) -> Shutdown {
        let outcome = match taken {
            None => Shutdown::NotOpen,
            Some(client) => {
                let graceful = tokio::select! {
                    done = tokio::time::timeout(deadline, async {
                        self.drain().await;
                        client.clone().shutdown().await;
                    }) => done.is_ok(),
                    _ = async {
                        // A sender gone (the manager dropped) never forces.
                        if force.wait_for(|forced| *forced).await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    } => false,
                };
                if graceful {
                    self.client_gone();
                    Shutdown::Graceful
                } else {
                    tracing::warn!(cluster = %self.label, ?deadline, "pool still busy at the deadline (or forced); closing it without waiting");
                    self.cut.store(true, Ordering::SeqCst);
                    self.cut_now.notify_waiters();
                    self.shut_down_in_background(client, Duration::ZERO);
                    Shutdown::Forced
                }
            }
        };
        self.health.phase.store(PHASE_CLOSED, Ordering::Release);
        if outcome != Shutdown::NotOpen {
            tracing::info!(cluster = %self.label, kind = ?self.kind, "pool closed");
        }
        outcome
    }

    /// Shuts `client` down on the pool's runtime: gracefully for up to `grace`, then without
    /// waiting; records it gone when done. The driver's own shutdown has no bound (it ends
    /// sessions on the server), which is why nobody awaits this.
    pub(crate) fn shut_down_in_background(self: &Arc<Self>, client: Client, grace: Duration) {
        let pool = Arc::clone(self);
        self.runtime.spawn(async move {
            if grace.is_zero()
                || tokio::time::timeout(grace, client.clone().shutdown())
                    .await
                    .is_err()
            {
                client.shutdown().immediate(true).await;
            }
            pool.client_gone();
        });
    }
}

/// One operation waiting for a connection (see [`ClusterPool::connection_slot`]). When it
/// leaves the queue (a slot, a timeout, a closed pool, or the waiting future dropped) its
/// wait is observed in the pool's wait histogram, so the histogram counts exactly the waits
/// the `wait_queue` gauge counted.
struct Queued<'a> {
    waiting: &'a AtomicI64,
    counters: &'a Counters,
    since: Instant,
}

impl<'a> Queued<'a> {
    fn enter(waiting: &'a AtomicI64, counters: &'a Counters) -> Self {
        waiting.fetch_add(1, Ordering::Relaxed);
        Self {
            waiting,
            counters,
            since: Instant::now(),
        }
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        self.counters.queue_waited(self.since.elapsed());
    }
}

/// One operation in flight on a pool (see [`ClusterPool::begin_operation`]).
pub(crate) struct InFlight {
    pool: Arc<ClusterPool>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.pool.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.pool.drained.notify_waiters();
        }
    }
}

/// The driver's default pool size.
const DRIVER_POOL_SIZE: u32 = 10;

/// The driver's pool size for `options`.
fn pool_size(options: &ClientOptions) -> usize {
    options.max_pool_size.unwrap_or(DRIVER_POOL_SIZE) as usize
}

fn ttl_millis(ttl: Option<Duration>) -> u64 {
    ttl.map_or(0, |t| (t.as_millis() as u64).max(1))
}

/// A claim on a dedicated pool: while any lease lives, the pool is in use and is not closed
/// for idleness.
pub(crate) struct PoolLease {
    pool: Arc<ClusterPool>,
}

impl Clone for PoolLease {
    fn clone(&self) -> Self {
        self.pool.leases.fetch_add(1, Ordering::SeqCst);
        PoolLease {
            pool: Arc::clone(&self.pool),
        }
    }
}

impl Drop for PoolLease {
    fn drop(&mut self) {
        self.pool.activity.touch();
        self.pool.leases.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(live: &Arc<AtomicUsize>) -> PoolEnv {
        let (signals, _events) = tokio::sync::mpsc::unbounded_channel();
        PoolEnv {
            runtime: Handle::current(),
            live_clients: Arc::clone(live),
            signals,
            wait_queue_timeout: None,
            idle_close_grace: Duration::from_secs(1),
            command_handler: None,
            connection_returned: None,
        }
    }

    #[tokio::test]
    async fn state_follows_the_lifecycle_without_a_server() {
        let opts = ClientOptions::parse("mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=100")
            .await
            .unwrap();
        let live = Arc::new(AtomicUsize::new(0));
        let pool = Arc::new(ClusterPool::new(
            "test".into(),
            PoolKind::Shared,
            opts,
            &env(&live),
            None,
        ));
        assert_eq!(pool.state(), ConnectionState::Disconnected);
        let (a, epoch_a) = pool.client().unwrap();
        let (b, epoch_b) = pool.client().unwrap();
        assert_eq!(epoch_a, epoch_b);
        assert!(pool.is_current(epoch_a));
        assert_eq!(pool.state(), ConnectionState::Connecting);
        assert_eq!(live.load(Ordering::Acquire), 1, "one client for two uses");
        drop((a, b));

        let taken = pool.begin_close();
        assert!(
            !pool.is_current(epoch_a),
            "entries made before the close are stale"
        );
        assert!(matches!(pool.client(), Err(Error::Closed)));
        assert_eq!(pool.state(), ConnectionState::Disconnecting);
        let outcome = pool
            .finish_close(
                taken,
                Duration::from_secs(5),
                tokio::sync::watch::channel(false).1,
            )
            .await;
        assert_eq!(outcome, Shutdown::Graceful);
        assert_eq!(live.load(Ordering::Acquire), 0);
        assert_eq!(pool.state(), ConnectionState::Disconnected);
        assert!(matches!(pool.client(), Err(Error::Closed)));

        let again = pool.begin_close();
        let outcome = pool
            .finish_close(
                again,
                Duration::from_secs(5),
                tokio::sync::watch::channel(false).1,
            )
            .await;
        assert_eq!(outcome, Shutdown::NotOpen);
    }

    #[tokio::test]
    async fn a_cancelled_wait_leaves_the_queue() {
        let opts = ClientOptions::parse("mongodb://127.0.0.1:1/?maxPoolSize=1")
            .await
            .unwrap();
        let live = Arc::new(AtomicUsize::new(0));
        let pool = ClusterPool::new("test".into(), PoolKind::Shared, opts, &env(&live), None);
        let held = pool.connection_slot().await.unwrap();
        for _ in 0..10 {
            let waited =
                tokio::time::timeout(Duration::from_millis(1), pool.connection_slot()).await;
            assert!(waited.is_err(), "the only permit is held");
        }
        assert_eq!(pool.stats().wait_queue, 0, "ten cancelled waits, none left");
        drop(held);
        assert!(pool.connection_slot().await.is_ok());
    }
}
