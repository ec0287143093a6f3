//! Lifecycle hooks: `on_db_connect`, `on_db_disconnect`, `on_these_db_connect`,
//! `on_these_db_disconnect`, `on_error`.
//!
//! How hooks run: pools report transitions (a pool's first usable server seen, its last one
//! lost or the pool closed) and errors as signals on a channel; one dispatcher task, spawned
//! with the manager, calls the matching hooks one at a time, in the order the signals came.
//! The driver's monitor threads and the manager never wait for a hook. A hook that panics is
//! caught, logged and skipped; the next signal is handled as usual. A slow hook delays only
//! later hook calls. A pool reports each transition once: connect and disconnect alternate.

use std::collections::HashSet;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::SystemTime;

use serde::Serialize;
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use crate::pool::cluster::{ConnectionState, PoolKind};
use crate::pool::events::PoolSignal;
use crate::registry::Registry;

/// A pool connected or disconnected.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct PoolEvent {
    /// Databases served by the pool (for `on_these_db_*` hooks: the named ones it serves),
    /// sorted, at most [`MAX_LISTED_DATABASES`](crate::MAX_LISTED_DATABASES).
    pub databases: Vec<String>,
    /// The cluster, password redacted.
    pub cluster: String,
    /// Shared or dedicated.
    pub kind: PoolKind,
    /// `Connected` or `Disconnected`.
    pub state: ConnectionState,
    /// When the transition was seen.
    pub at: SystemTime,
}

/// Something went wrong on a pool or an operation of the manager.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct ErrorEvent {
    /// The cluster, password redacted.
    pub cluster: String,
    /// The database concerned, when there is one.
    pub database: Option<String>,
    /// What happened (never contains a password).
    pub message: String,
    /// When it was seen.
    pub at: SystemTime,
}

pub(crate) type PoolHook = Arc<dyn Fn(&PoolEvent) + Send + Sync>;
pub(crate) type ErrorHook = Arc<dyn Fn(&ErrorEvent) + Send + Sync>;

/// A hook given to the builder, registered before anything can connect.
#[derive(Clone)]
pub(crate) enum PendingHook {
    Pool {
        connect: bool,
        only: Option<HashSet<String>>,
        hook: PoolHook,
    },
    Error(ErrorHook),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum On {
    Connect,
    Disconnect,
}

struct PoolEntry {
    id: u64,
    on: On,
    only: Option<HashSet<String>>,
    hook: PoolHook,
}

/// The registered hooks of one manager.
#[derive(Default)]
pub(crate) struct Hooks {
    next: AtomicU64,
    pools: RwLock<Vec<PoolEntry>>,
    errors: RwLock<Vec<(u64, ErrorHook)>>,
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks").finish_non_exhaustive()
    }
}

/// Unregisters a hook: [`HookHandle::unregister`]. Dropping the handle keeps the hook.
#[derive(Debug)]
#[must_use = "dropping the handle keeps the hook registered; keep it to unregister later"]
pub struct HookHandle {
    id: u64,
    registry: Weak<Hooks>,
}

impl HookHandle {
    /// Removes the hook; `true` if it was still registered. Calls already under way finish.
    pub fn unregister(self) -> bool {
        let Some(registry) = self.registry.upgrade() else {
            return false;
        };
        let mut pools = registry.pools.write().unwrap_or_else(|p| p.into_inner());
        let before = pools.len();
        pools.retain(|e| e.id != self.id);
        if pools.len() != before {
            return true;
        }
        drop(pools);
        let mut errors = registry.errors.write().unwrap_or_else(|p| p.into_inner());
        let before = errors.len();
        errors.retain(|(id, _)| *id != self.id);
        errors.len() != before
    }
}

impl Hooks {
    fn id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn add_pool_hook(
        self: &Arc<Self>,
        connect: bool,
        only: Option<HashSet<String>>,
        hook: PoolHook,
    ) -> HookHandle {
        let id = self.id();
        let on = if connect { On::Connect } else { On::Disconnect };
        self.pools
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(PoolEntry { id, on, only, hook });
        HookHandle {
            id,
            registry: Arc::downgrade(self),
        }
    }

    /// Registers hooks given to the builder; they stay for the manager's life.
    pub(crate) fn add_pending(self: &Arc<Self>, pending: Vec<PendingHook>) {
        for hook in pending {
            // Builder hooks have no handle to unregister them with.
            let _kept = match hook {
                PendingHook::Pool {
                    connect,
                    only,
                    hook,
                } => self.add_pool_hook(connect, only, hook),
                PendingHook::Error(hook) => self.add_error_hook(hook),
            };
        }
    }

    pub(crate) fn add_error_hook(self: &Arc<Self>, hook: ErrorHook) -> HookHandle {
        let id = self.id();
        self.errors
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push((id, hook));
        HookHandle {
            id,
            registry: Arc::downgrade(self),
        }
    }
}

/// Databases served by pool `id` for an event: with `only`, those of `only` routed to it;
/// otherwise up to [`MAX_LISTED_DATABASES`](crate::MAX_LISTED_DATABASES) of those it serves
/// now. Costs O(pools), whatever the number of databases.
fn served(registry: &Registry, pool: u64, only: Option<&HashSet<String>>) -> Vec<String> {
    match only {
        Some(only) => registry.routes().routed_to(pool, only),
        None => registry
            .routes()
            .pools()
            .iter()
            .find(|p| p.id() == pool)
            .map(|p| p.served().1)
            .unwrap_or_default(),
    }
}

fn call<E>(hook: &(dyn Fn(&E) + Send + Sync), event: &E, what: &str) {
    if catch_unwind(AssertUnwindSafe(|| hook(event))).is_err() {
        tracing::error!(hook = what, "a hook panicked; it was skipped");
    }
}

/// Starts the dispatcher; it ends when every sender (every pool, the manager) is gone.
pub(crate) fn spawn(
    runtime: &Handle,
    hooks: Arc<Hooks>,
    directory: Weak<Registry>,
    mut signals: mpsc::UnboundedReceiver<PoolSignal>,
) {
    runtime.spawn(async move {
        while let Some(signal) = signals.recv().await {
            match signal {
                PoolSignal::Error {
                    cluster,
                    database,
                    message,
                    at,
                } => {
                    let event = ErrorEvent {
                        cluster,
                        database,
                        message,
                        at,
                    };
                    let hooks: Vec<ErrorHook> = hooks
                        .errors
                        .read()
                        .unwrap_or_else(|p| p.into_inner())
                        .iter()
                        .map(|(_, h)| Arc::clone(h))
                        .collect();
                    for hook in hooks {
                        call(&*hook, &event, "on_error");
                    }
                }
                PoolSignal::Transition {
                    pool,
                    cluster,
                    kind,
                    connected,
                    at,
                } => {
                    let Some(directory) = directory.upgrade() else {
                        continue;
                    };
                    let on = if connected {
                        On::Connect
                    } else {
                        On::Disconnect
                    };
                    let hooks: Vec<(Option<HashSet<String>>, PoolHook)> = hooks
                        .pools
                        .read()
                        .unwrap_or_else(|p| p.into_inner())
                        .iter()
                        .filter(|e| e.on == on)
                        .map(|e| (e.only.clone(), Arc::clone(&e.hook)))
                        .collect();
                    for (only, hook) in hooks {
                        let databases = served(&directory, pool, only.as_ref());
                        if only.is_some() && databases.is_empty() {
                            continue;
                        }
                        let event = PoolEvent {
                            databases,
                            cluster: cluster.clone(),
                            kind,
                            state: if connected {
                                ConnectionState::Connected
                            } else {
                                ConnectionState::Disconnected
                            },
                            at,
                        };
                        call(
                            &*hook,
                            &event,
                            if connected {
                                "on_db_connect"
                            } else {
                                "on_db_disconnect"
                            },
                        );
                    }
                }
            }
        }
    });
}
