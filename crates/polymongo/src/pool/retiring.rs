//! Clients taken out of their pools (closed for idleness, evicted by the least-recently-used
//! bound, resized, or left without their database by a reconfiguration), shutting down in the
//! background.
//!
//! A pool closed this way reopens on its next use, so closing never blocks anyone: the old
//! client is handed here and shut down gracefully, letting cursors and sessions the library
//! cannot see (made directly on the driver's handles) finish for up to the pool's
//! `idle_close_grace`, then without waiting.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mongodb::Client;
use tokio::runtime::Handle;

use crate::pool::cluster::ClusterPool;

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

    /// Shuts `client` down in the background: gracefully for up to the pool's
    /// `idle_close_grace`, then without waiting. Whoever takes it out of the map (this task or
    /// [`force_all`](Self::force_all)) records it gone, exactly once.
    pub(crate) fn retire(self: &Arc<Self>, pool: &Arc<ClusterPool>, client: Client) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.clients()
            .insert(id, (Arc::clone(pool), client.clone()));
        let this = Arc::downgrade(self);
        let grace = pool.idle_close_grace();
        self.runtime.spawn(async move {
            if tokio::time::timeout(grace, client.clone().shutdown())
                .await
                .is_err()
            {
                tracing::warn!(?grace, "a closed pool's client still had work after its grace; shutting it down without waiting");
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

    /// Cuts every retiring client's grace: each is shut down in the background without
    /// waiting. Returns how many there were; never waits on the network.
    pub(crate) fn force_all(&self) -> usize {
        let taken: Vec<_> = self.clients().drain().map(|(_, v)| v).collect();
        let count = taken.len();
        for (pool, client) in taken {
            pool.shut_down_in_background(client, Duration::ZERO);
        }
        count
    }
}
