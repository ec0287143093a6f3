//! Closing dedicated pools that are not used: the TTL reaper, and the shutdown of clients taken
//! out of their pool (idle, evicted by the least-recently-used bound, or left without their
//! database by a reconfiguration).
//!
//! A closed-for-idleness pool reopens on its next use, so closing never blocks anyone: the old
//! client is handed to [`Retiring`], which shuts it down in the background, letting cursors and
//! sessions still open on it finish for up to [`IDLE_CLOSE_GRACE`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use mongodb::Client;
use tokio::runtime::Handle;
use tokio::sync::watch;

use crate::pool::ClusterPool;

/// How long a client closed for idleness may keep serving cursors and sessions opened before
/// the close, before it is shut down without waiting.
pub const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(30);

/// Longest pause between two reaper passes; a pass is also due every quarter of the shortest
/// `ttl` in use.
const MAX_TICK: Duration = Duration::from_millis(250);
const MIN_TICK: Duration = Duration::from_millis(5);

/// Clients taken out of their pools and shutting down in the background.
pub(crate) struct Retiring {
    next_id: AtomicU64,
    clients: Mutex<HashMap<u64, (Arc<ClusterPool>, Client)>>,
    runtime: Handle,
}

impl Retiring {
    pub(crate) fn new(runtime: Handle) -> Self {
        Self {
            next_id: AtomicU64::new(0),
            clients: Mutex::new(HashMap::new()),
            runtime,
        }
    }

    fn clients(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (Arc<ClusterPool>, Client)>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Shuts `client` down in the background: gracefully for up to [`IDLE_CLOSE_GRACE`], then
    /// without waiting. Whoever takes it out of the map (this task or
    /// [`force_all`](Self::force_all)) records it gone, exactly once.
    pub(crate) fn retire(self: &Arc<Self>, pool: &Arc<ClusterPool>, client: Client) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.clients()
            .insert(id, (Arc::clone(pool), client.clone()));
        let this = Arc::downgrade(self);
        self.runtime.spawn(async move {
            if tokio::time::timeout(IDLE_CLOSE_GRACE, client.clone().shutdown())
                .await
                .is_err()
            {
                client.shutdown().immediate(true).await;
            }
            if let Some(this) = this.upgrade() {
                if let Some((pool, _)) = this.clients().remove(&id) {
                    pool.client_gone();
                    tracing::info!(cluster = %pool.label(), "idle pool closed");
                }
            }
        });
    }

    /// Shuts every retiring client down now; returns how many there were.
    pub(crate) async fn force_all(&self) -> usize {
        let taken: Vec<_> = self.clients().drain().map(|(_, v)| v).collect();
        for (pool, client) in &taken {
            client.clone().shutdown().immediate(true).await;
            pool.client_gone();
        }
        taken.len()
    }
}

/// What the reaper needs from the manager, without keeping it alive.
pub(crate) trait Reapable: Send + Sync + 'static {
    /// Closes the pools due for it; returns the shortest `ttl` of the pools still open.
    fn reap(&self) -> Option<Duration>;
}

/// Starts the reaper: a pass now and then until `stop` fires or the manager is dropped.
pub(crate) fn spawn<R: Reapable>(
    runtime: &Handle,
    target: Weak<R>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    runtime.spawn(async move {
        loop {
            let Some(manager) = target.upgrade() else {
                return;
            };
            let shortest = manager.reap();
            drop(manager);
            let tick = shortest.map_or(MAX_TICK, |t| (t / 4).clamp(MIN_TICK, MAX_TICK));
            tokio::select! {
                () = tokio::time::sleep(tick) => {}
                _ = stop.changed() => return,
            }
        }
    })
}
