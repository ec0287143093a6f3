//! One driver `Client` (one connection pool) per cluster, created on first use.
//!
//! The pool owns the only long-lived `Client` of its cluster; database handles clone it.
//! Creation happens under a mutex so concurrent first uses make exactly one client, and inside
//! the runtime the manager was built on, because the driver binds a client to the runtime that
//! created it and spawns its monitors there.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use mongodb::event::sdam::SdamEvent;
use mongodb::event::EventHandler;
use mongodb::options::{ClientOptions, ServerAddress};
use mongodb::Client;
use serde::Serialize;
use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::change_stream::Watches;
use crate::error::{Error, Result};
use crate::hooks::{ErrorEvent, Signal, Signals};
use crate::pool_stats::{self, Counters, Gauges, PoolStats};
use crate::usage::{Usage, UsageAnalytics};

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
            let _ = r.signals.send(Signal::Transition {
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
                    let _ = self.reporter.signals.send(Signal::Error(ErrorEvent {
                        cluster: self.reporter.cluster.clone(),
                        database: None,
                        message: format!("server {} unreachable: {err}", e.address),
                        at: SystemTime::now(),
                    }));
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

/// What every pool of a manager shares.
#[derive(Clone)]
pub(crate) struct PoolEnv {
    pub(crate) runtime: Handle,
    pub(crate) live_clients: Arc<AtomicUsize>,
    pub(crate) signals: Signals,
    /// Usage analytics, when on.
    pub(crate) usage: Option<Arc<Usage>>,
    /// The manager's open change streams.
    pub(crate) watches: Arc<Watches>,
    /// The `wait_queue_timeout` option.
    pub(crate) wait_queue_timeout: Option<Duration>,
}

static NEXT_POOL_ID: AtomicU64 = AtomicU64::new(1);

/// How a pool was shut down by [`ClusterPool::finish_close`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shutdown {
    /// There was no client to close.
    NotOpen,
    /// Every cursor and session ended before the deadline.
    Graceful,
    /// The deadline passed; the client was shut down without waiting.
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
    /// Options the next client is made with (a reconfiguration waits for the next open).
    options: ClientOptions,
}

/// The connection pool of one cluster (shared) or of one database (dedicated).
pub(crate) struct ClusterPool {
    label: String,
    kind: PoolKind,
    /// Boxed: the driver's options are large, and the fields the hot path reads (`epoch`,
    /// `kind`) should share a cache line rather than sit on either side of them.
    slot: Mutex<Box<Slot>>,
    /// Bumped (under the `slot` lock) each time the pool starts closing. Routing entries
    /// remember the epoch their client came from; a different epoch means that client is gone.
    epoch: AtomicU64,
    id: u64,
    health: Arc<Health>,
    counters: Arc<Counters>,
    usage: Option<Arc<Usage>>,
    watches: Arc<Watches>,
    /// One permit per connection of the pool, taken by `DbHandle::run` when the
    /// `wait_queue_timeout` bound is on (replaced when the pool is resized).
    connection_slots: std::sync::RwLock<Arc<Semaphore>>,
    wait_queue_timeout: Option<Duration>,
    /// Operations running through `DbHandle::run` now; a graceful close waits for them.
    in_flight: AtomicUsize,
    /// Woken when `in_flight` falls to zero.
    drained: tokio::sync::Notify,
    live_clients: Arc<AtomicUsize>,
    runtime: Handle,
    /// Idle time after which the reaper closes the pool, in ms; 0: never (not `auto_close`).
    ttl_ms: AtomicU64,
    /// Handles alive on this pool (dedicated pools only; shared pools are never reaped).
    handles: AtomicUsize,
    /// When a handle was last taken or given back, in ms since `origin`.
    last_used_ms: AtomicU64,
    origin: Instant,
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
                options,
            })),
            counters: Arc::new(Counters::default()),
            epoch: AtomicU64::new(0),
            id,
            health,
            usage: env.usage.clone(),
            watches: Arc::clone(&env.watches),
            connection_slots: std::sync::RwLock::new(Arc::new(Semaphore::new(size))),
            wait_queue_timeout: env.wait_queue_timeout,
            in_flight: AtomicUsize::new(0),
            drained: tokio::sync::Notify::new(),
            live_clients: Arc::clone(&env.live_clients),
            runtime: env.runtime.clone(),
            ttl_ms: AtomicU64::new(ttl_millis(ttl)),
            handles: AtomicUsize::new(0),
            last_used_ms: AtomicU64::new(0),
            origin: Instant::now(),
        }
    }

    /// A number naming this pool for the hook dispatcher.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Reports an error to the `on_error` hooks.
    pub(crate) fn report_error(&self, database: Option<&str>, message: String) {
        let _ = self.health.reporter.signals.send(Signal::Error(ErrorEvent {
            cluster: self.label.clone(),
            database: database.map(str::to_owned),
            message,
            at: SystemTime::now(),
        }));
    }

    /// The pool's size as its next client is made.
    fn pool_size(&self) -> usize {
        pool_size(&self.slot().options)
    }

    /// With `wait_queue_timeout` on, waits up to it for one of the pool's connections to be
    /// free and holds it for the caller; `None` when the bound is off.
    pub(crate) async fn connection_slot(&self) -> Result<Option<OwnedSemaphorePermit>> {
        let Some(wait) = self.wait_queue_timeout else {
            return Ok(None);
        };
        let slots = Arc::clone(
            &self
                .connection_slots
                .read()
                .unwrap_or_else(|p| p.into_inner()),
        );
        let started = Instant::now();
        match tokio::time::timeout(wait, slots.acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Some(permit)),
            Ok(Err(_)) => Err(Error::Closed),
            Err(_) => {
                tracing::debug!(cluster = %self.label, ?wait, "no connection came free in time");
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

    /// The manager's registry of change streams.
    pub(crate) fn watches(&self) -> &Arc<Watches> {
        &self.watches
    }

    /// The runtime the pool's clients live on.
    pub(crate) fn runtime(&self) -> &Handle {
        &self.runtime
    }

    /// The manager's usage table, when usage analytics are on.
    pub(crate) fn usage(&self) -> Option<&Arc<Usage>> {
        self.usage.as_ref()
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
        options.cmap_event_handler = Some(pool_stats::observer(
            Arc::clone(&gauges),
            Arc::clone(&self.counters),
        ));
        options.command_event_handler = self
            .usage
            .as_ref()
            .filter(|u| u.source() == UsageAnalytics::Commands)
            .map(Usage::observer);
        let _in_runtime = self.runtime.enter();
        let client =
            Client::with_options(options).map_err(|e| Error::from_driver(e, &self.label))?;
        self.live_clients.fetch_add(1, Ordering::AcqRel);
        self.health.phase.store(PHASE_OPEN, Ordering::Release);
        tracing::info!(cluster = %self.label, kind = ?self.kind, max_pool_size = ?slot.options.max_pool_size, "pool opened");
        slot.client = Some(client.clone());
        slot.gauges = Some(gauges);
        Ok((client, epoch))
    }

    /// Whether a client obtained at `epoch` is still this pool's client.
    #[inline]
    pub(crate) fn is_current(&self, epoch: u64) -> bool {
        self.epoch.load(Ordering::Acquire) == epoch
    }

    /// Options for the next client; the open one (if any) keeps its own until it is closed.
    /// The idle time applies at once.
    pub(crate) fn reconfigure(&self, options: ClientOptions, ttl: Option<Duration>) {
        let size = pool_size(&options);
        if self.pool_size() != size {
            *self
                .connection_slots
                .write()
                .unwrap_or_else(|p| p.into_inner()) = Arc::new(Semaphore::new(size));
        }
        self.slot().options = options;
        self.ttl_ms.store(ttl_millis(ttl), Ordering::Release);
    }

    /// Counts a handle on a dedicated pool until the lease is dropped; `None` for shared pools,
    /// which are never closed for idleness and so need no count.
    ///
    /// The caller must check its routing entry is still live *after* taking the lease: with
    /// [`begin_idle_close`](Self::begin_idle_close) bumping the epoch before reading the count
    /// (both `SeqCst`), either the closer sees this handle, or this check sees the new epoch.
    #[inline]
    pub(crate) fn lease(self: &Arc<Self>) -> Option<Lease> {
        if self.kind == PoolKind::Shared {
            return None;
        }
        self.handles.fetch_add(1, Ordering::SeqCst);
        self.touch();
        Some(Lease {
            pool: Arc::clone(self),
        })
    }

    fn touch(&self) {
        let now = self.origin.elapsed().as_millis() as u64;
        self.last_used_ms.store(now, Ordering::Relaxed);
    }

    /// Milliseconds since the pool was last used (a handle taken or given back).
    pub(crate) fn idle_ms(&self) -> u64 {
        let now = self.origin.elapsed().as_millis() as u64;
        now.saturating_sub(self.last_used_ms.load(Ordering::Relaxed))
    }

    /// The `auto_close` idle time, if any.
    pub(crate) fn ttl(&self) -> Option<Duration> {
        match self.ttl_ms.load(Ordering::Acquire) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// Whether a client is open now.
    pub(crate) fn is_open(&self) -> bool {
        self.health.phase.load(Ordering::Acquire) == PHASE_OPEN
    }

    /// Whether the pool is open, unused by any handle, and idle past its `ttl`.
    pub(crate) fn idle_expired(&self) -> bool {
        self.is_open()
            && self.handles.load(Ordering::SeqCst) == 0
            && self
                .ttl()
                .is_some_and(|ttl| self.idle_ms() >= ttl.as_millis() as u64)
    }

    /// Closes the pool for idleness (TTL, least-recently-used bound, reconfiguration): the next
    /// use opens a new client. Returns the client to shut down, or `None` if the pool has no
    /// client or a handle is alive (then nothing is closed).
    pub(crate) fn begin_idle_close(&self) -> Option<Client> {
        let mut slot = self.slot();
        if slot.client.is_none() || self.handles.load(Ordering::SeqCst) != 0 {
            return None;
        }
        // Epoch first, then the handle count again: see `lease`. If a handle appeared in
        // between, give up; the epoch bump only makes caches resolve again to this client.
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if self.handles.load(Ordering::SeqCst) != 0 {
            return None;
        }
        self.health.client_taken(PHASE_IDLE);
        tracing::info!(cluster = %self.label, idle_ms = self.idle_ms(), "idle pool closing");
        slot.gauges = None;
        slot.client.take()
    }

    /// Records that a client of this pool finished shutting down.
    pub(crate) fn client_gone(&self) {
        self.live_clients.fetch_sub(1, Ordering::AcqRel);
    }

    /// The pool's figures now (zero connections when no client is open).
    pub(crate) fn stats(&self) -> PoolStats {
        let slot = self.slot();
        PoolStats::read(
            slot.gauges.as_deref(),
            &self.counters,
            slot.options.max_pool_size.unwrap_or(0),
            slot.options.min_pool_size.unwrap_or(0),
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

    /// First half of closing for good: from now on [`client`](Self::client) fails with
    /// `Closed` and every routing entry made from this pool is stale. Returns the client to
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
    /// the client's cursors and sessions, then shuts it down without waiting.
    pub(crate) async fn finish_close(
        &self,
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
                let outcome = if graceful {
                    Shutdown::Graceful
                } else {
                    tracing::warn!(cluster = %self.label, ?deadline, "pool still busy at the deadline (or forced); closing it without waiting");
                    client.shutdown().immediate(true).await;
                    Shutdown::Forced
                };
                self.client_gone();
                outcome
            }
        };
        self.health.phase.store(PHASE_CLOSED, Ordering::Release);
        if outcome != Shutdown::NotOpen {
            tracing::info!(cluster = %self.label, kind = ?self.kind, "pool closed");
        }
        outcome
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

/// The driver's pool size for `options` (its default is 10).
fn pool_size(options: &ClientOptions) -> usize {
    options.max_pool_size.map_or(10, |n| n as usize)
}

fn ttl_millis(ttl: Option<Duration>) -> u64 {
    ttl.map_or(0, |t| (t.as_millis() as u64).max(1))
}

/// A handle's claim on a dedicated pool: while any lease lives, the pool is in use and is not
/// closed for idleness.
pub(crate) struct Lease {
    pool: Arc<ClusterPool>,
}

impl Clone for Lease {
    fn clone(&self) -> Self {
        self.pool.handles.fetch_add(1, Ordering::SeqCst);
        Lease {
            pool: Arc::clone(&self.pool),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.pool.touch();
        self.pool.handles.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn state_follows_the_lifecycle_without_a_server() {
        let opts = ClientOptions::parse("mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=100")
            .await
            .unwrap();
        let live = Arc::new(AtomicUsize::new(0));
        let (signals, _events) = tokio::sync::mpsc::unbounded_channel();
        let env = PoolEnv {
            runtime: Handle::current(),
            live_clients: Arc::clone(&live),
            signals,
            usage: None,
            watches: Arc::default(),
            wait_queue_timeout: None,
        };
        let pool = ClusterPool::new("test".into(), PoolKind::Shared, opts, &env, None);
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
}
