//! The housekeeper: one task per manager that closes dedicated pools idle past their `ttl`,
//! forgets databases idle past `database_idle_timeout` (or past the cache bound), moves the
//! registry's coarse clock on, and keeps the usage board's entry bar current.
//!
//! A pass never waits on the network: a pool closed for idleness is handed to a background
//! shutdown. The task holds only a weak reference to the registry, so it ends with the
//! manager, or when told to stop.

use std::sync::Weak;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::registry::Registry;

/// Longest pause between two passes over the pools; a pass is also due every quarter of the
/// shortest `ttl` in use.
const MAX_TICK: Duration = Duration::from_millis(250);
const MIN_TICK: Duration = Duration::from_millis(5);

/// Longest pause between two sweeps of the entries: a quarter of the idle timeout, within
/// these bounds. A sweep reads every cached entry once, so it is kept rare.
const MIN_SWEEP: Duration = Duration::from_millis(10);
const MAX_SWEEP: Duration = Duration::from_secs(30);

/// Starts the housekeeper: passes until `stop` fires or the registry is dropped.
pub(crate) fn spawn(
    runtime: &Handle,
    target: Weak<Registry>,
    idle_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let sweep_every = (idle_timeout / 4).clamp(MIN_SWEEP, MAX_SWEEP);
    runtime.spawn(async move {
        let mut next_sweep = Instant::now() + sweep_every;
        loop {
            let Some(registry) = target.upgrade() else {
                return;
            };
            registry.tick();
            let shortest = registry.routes().reap();
            if let Some(usage) = registry.usage() {
                usage.refresh();
            }
            if Instant::now() >= next_sweep {
                registry.sweep();
                next_sweep = Instant::now() + sweep_every;
            }
            let tick = shortest.map_or(MAX_TICK, |t| (t / 4).clamp(MIN_TICK, MAX_TICK));
            let wake = (Instant::now() + tick).min(next_sweep);
            // Not holding the registry while asleep: the manager may be dropped meanwhile.
            let over_bound = {
                let registry = std::sync::Arc::clone(&registry);
                async move { registry.over_bound.notified().await }
            };
            drop(registry);
            tokio::select! {
                () = tokio::time::sleep_until(wake) => {}
                () = over_bound => {
                    if let Some(registry) = target.upgrade() {
                        registry.sweep();
                    }
                }
                _ = stop.changed() => return,
            }
        }
    })
}
