//! Lifecycle hooks: `on_db_connect`, `on_db_disconnect`, `on_these_db_connect`,
//! `on_these_db_disconnect`, `on_error`, and the tenant directory's `on_tenant_change`.
//!
//! Tenant changes come from the directory's change reader through a channel of
//! [`TENANT_EVENT_QUEUE`] events to a dispatcher of their own: the reader never waits for a
//! hook (its reads keep the staleness bound), and a hook slower than the changes loses the
//! events past that queue, counted in
//! [`DirectoryStats::hook_events_dropped`](crate::tenants::DirectoryStats::hook_events_dropped).
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
pub(crate) type TenantHook = Arc<dyn Fn(&TenantEvent) + Send + Sync>;

/// Tenant events queued for the hooks at most; later ones are dropped (and counted) until
/// the hooks catch up.
pub const TENANT_EVENT_QUEUE: usize = 1024;

/// A change of a tenant's directory entry, as this instance read it (after its first read of
/// the directory, which only takes its bearings):
/// [`PolyMongo::on_tenant_change`](crate::PolyMongo::on_tenant_change).
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct TenantEvent {
    /// The tenant.
    pub tenant: String,
    /// Its cluster (for an archived tenant, the one it was on).
    pub cluster: String,
    /// Its state now.
    pub state: String,
    /// Its entry's version now.
    pub version: u64,
    /// Whether this instance had the tenant cached and forgot it (an invalidation).
    pub invalidated: bool,
    /// When this instance read the change.
    pub at: SystemTime,
}

/// A hook given to the builder, registered before anything can connect.
#[derive(Clone)]
pub(crate) enum PendingHook {
    Pool {
        connect: bool,
        only: Option<HashSet<String>>,
        hook: PoolHook,
    },
    Error(ErrorHook),
    Tenant(TenantHook),
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
    tenants: RwLock<Vec<(u64, TenantHook)>>,
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
        remove(&registry.errors, self.id) || remove(&registry.tenants, self.id)
    }
}

/// Removes hook `id` from `list`; whether it was there.
fn remove<H>(list: &RwLock<Vec<(u64, H)>>, id: u64) -> bool {
    let mut list = list.write().unwrap_or_else(|p| p.into_inner());
    let before = list.len();
    list.retain(|(i, _)| *i != id);
    list.len() != before
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
                PendingHook::Tenant(hook) => self.add_tenant_hook(hook),
            };
        }
    }

    pub(crate) fn add_tenant_hook(self: &Arc<Self>, hook: TenantHook) -> HookHandle {
        self.push(&self.tenants, hook)
    }

    /// Adds `hook` to `list` under a new id.
    fn push<H>(self: &Arc<Self>, list: &RwLock<Vec<(u64, H)>>, hook: H) -> HookHandle {
        let id = self.id();
        list.write()
            .unwrap_or_else(|p| p.into_inner())
            .push((id, hook));
        HookHandle {
            id,
            registry: Arc::downgrade(self),
        }
    }

    /// Whether any `on_tenant_change` hook is registered (else the reader makes no events).
    pub(crate) fn has_tenant_hooks(&self) -> bool {
        !self
            .tenants
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    pub(crate) fn add_error_hook(self: &Arc<Self>, hook: ErrorHook) -> HookHandle {
        self.push(&self.errors, hook)
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

/// The tenant directory's way to its hooks: a bounded queue to a dispatcher task.
pub(crate) struct TenantEvents {
    hooks: Weak<Hooks>,
    queue: mpsc::Sender<TenantEvent>,
    dropped: AtomicU64,
}

impl TenantEvents {
    /// Whether events are worth making: some hook is registered.
    pub(crate) fn wanted(&self) -> bool {
        self.hooks.upgrade().is_some_and(|h| h.has_tenant_hooks())
    }

    /// Queues `event` without waiting; counted as dropped when the queue is full.
    pub(crate) fn send(&self, event: TenantEvent) {
        if self.queue.try_send(event).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Events dropped because the hooks were behind.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Starts the dispatcher of tenant events; it ends when the directory (the sender) is gone.
pub(crate) fn spawn_tenant_events(runtime: &Handle, hooks: &Arc<Hooks>) -> TenantEvents {
    let (queue, mut events) = mpsc::channel::<TenantEvent>(TENANT_EVENT_QUEUE);
    let weak = Arc::downgrade(hooks);
    runtime.spawn(async move {
        while let Some(event) = events.recv().await {
            let Some(hooks) = weak.upgrade() else {
                return;
            };
            let list: Vec<TenantHook> = hooks
                .tenants
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|(_, h)| Arc::clone(h))
                .collect();
            drop(hooks);
            for hook in list {
                call(&*hook, &event, "on_tenant_change");
            }
        }
    });
    TenantEvents {
        hooks: Arc::downgrade(hooks),
        queue,
        dropped: AtomicU64::new(0),
    }
}
