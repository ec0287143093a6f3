//! True pool figures, from the driver's connection-pool (CMAP) events rather than guesses.
//!
//! Each client gets its own [`Gauges`] (connections now: total, checked out, waiting), so a
//! pool closed and reopened starts from zero; the [`Counters`] of a pool (checkouts, failures,
//! waits, connections made and closed) add up over its whole life. Both are atomics updated in
//! the event handler, which the driver calls inline: a few relaxed increments per checkout.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mongodb::event::cmap::CmapEvent;
use mongodb::event::EventHandler;
use mongodb::options::ServerAddress;
use serde::Serialize;

use crate::pool::histogram::{AtomicHistogram, DurationHistogram};

/// Told when a pooled connection comes back (checked in) or is closed: whatever command it
/// carried is over, finished or cancelled. Set by the usage layer when it counts commands.
pub(crate) type ConnectionReturned = Arc<dyn Fn(&ServerAddress, u32) + Send + Sync>;

/// When a pool was last used: a handle taken or given back, or a connection checked out.
#[derive(Debug)]
pub(crate) struct Activity {
    origin: Instant,
    last_used_ms: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            last_used_ms: AtomicU64::new(0),
        }
    }
}

impl Activity {
    /// Records a use now.
    pub(crate) fn touch(&self) {
        let now = self.origin.elapsed().as_millis() as u64;
        // A load first: most touches find the same millisecond and write nothing.
        if self.last_used_ms.load(Ordering::Relaxed) != now {
            self.last_used_ms.store(now, Ordering::Relaxed);
        }
    }

    /// Milliseconds since the last use.
    pub(crate) fn idle_ms(&self) -> u64 {
        let now = self.origin.elapsed().as_millis() as u64;
        now.saturating_sub(self.last_used_ms.load(Ordering::Relaxed))
    }
}

/// Connections of one client's pool right now.
#[derive(Debug, Default)]
pub(crate) struct Gauges {
    total: AtomicI64,
    in_use: AtomicI64,
}

/// Figures of one pool over its whole life.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    checkouts: AtomicU64,
    checkout_failures: AtomicU64,
    wait_total_us: AtomicU64,
    wait_max_us: AtomicU64,
    connections_created: AtomicU64,
    connections_closed: AtomicU64,
    clears: AtomicU64,
    /// Waits in the pool's own wait queue (connection slots), one per wait that queued.
    queue_waits: AtomicHistogram,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Counters {
    /// Counts one wait in the pool's wait queue that ended (with a slot or without).
    pub(crate) fn queue_waited(&self, d: Duration) {
        self.queue_waits.record(d);
    }

    fn waited(&self, d: Duration) {
        let us = micros(d);
        self.wait_total_us.fetch_add(us, Ordering::Relaxed);
        self.wait_max_us.fetch_max(us, Ordering::Relaxed);
    }
}

impl Gauges {
    /// Connections checked out now.
    pub(crate) fn in_use(&self) -> i64 {
        self.in_use.load(Ordering::Relaxed)
    }
}

/// The CMAP handler of one client.
pub(crate) fn observer(
    gauges: Arc<Gauges>,
    counters: Arc<Counters>,
    activity: Arc<Activity>,
    returned: Option<ConnectionReturned>,
) -> EventHandler<CmapEvent> {
    EventHandler::callback(move |event| match event {
        CmapEvent::ConnectionCreated(_) => {
            gauges.total.fetch_add(1, Ordering::Relaxed);
            counters.connections_created.fetch_add(1, Ordering::Relaxed);
        }
        CmapEvent::ConnectionClosed(e) => {
            gauges.total.fetch_sub(1, Ordering::Relaxed);
            counters.connections_closed.fetch_add(1, Ordering::Relaxed);
            if let Some(returned) = &returned {
                returned(&e.address, e.connection_id);
            }
        }
        CmapEvent::ConnectionCheckoutFailed(e) => {
            counters.checkout_failures.fetch_add(1, Ordering::Relaxed);
            counters.waited(e.duration);
        }
        CmapEvent::ConnectionCheckedOut(e) => {
            gauges.in_use.fetch_add(1, Ordering::Relaxed);
            counters.checkouts.fetch_add(1, Ordering::Relaxed);
            counters.waited(e.duration);
            activity.touch();
        }
        CmapEvent::ConnectionCheckedIn(e) => {
            gauges.in_use.fetch_sub(1, Ordering::Relaxed);
            activity.touch();
            if let Some(returned) = &returned {
                returned(&e.address, e.connection_id);
            }
        }
        CmapEvent::PoolCleared(_) => {
            counters.clears.fetch_add(1, Ordering::Relaxed);
        }
        _ => {}
    })
}

/// A pool's figures at one instant: [`PolyMongo::stats`](crate::PolyMongo::stats).
///
/// Connections are the pool's own (the driver's monitoring connections, one or two per
/// client, are not in a pool and not counted here).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PoolStats {
    /// Connections the pool holds (idle and checked out).
    pub total: i64,
    /// Idle connections ready to be checked out.
    pub available: i64,
    /// Connections checked out by operations now.
    pub in_use: i64,
    /// Operations run through [`DbHandle::run`](crate::DbHandle::run) waiting now for one of
    /// the pool's connections (counted by polymongo's own guards, so a cancelled wait leaves
    /// the queue at once; operations called directly on a collection are not counted).
    pub wait_queue: i64,
    /// The pool's maximum size.
    pub max_size: u32,
    /// The pool's minimum size.
    pub min_size: u32,
    /// Connections checked out since the pool was made.
    pub checkouts: u64,
    /// Checkouts that failed (pool cleared or closed, connection error, timeout).
    pub checkout_failures: u64,
    /// Mean time a checkout waited, in microseconds.
    pub checkout_wait_mean_us: u64,
    /// Longest time a checkout waited, in microseconds.
    pub checkout_wait_max_us: u64,
    /// Connections opened since the pool was made.
    pub connections_created: u64,
    /// Connections closed since the pool was made.
    pub connections_closed: u64,
    /// Times the driver cleared the pool after an error.
    pub pool_clears: u64,
    /// How long operations waited in the pool's wait queue (the waits counted by
    /// [`wait_queue`](Self::wait_queue): [`DbHandle::run`](crate::DbHandle::run) and
    /// [`PolyMongo::reserve_connection`](crate::PolyMongo::reserve_connection)), one
    /// observation per wait when it ends: with a connection slot, at `wait_queue_timeout`,
    /// with the pool closed, or because the waiting future was dropped. An operation that
    /// finds a slot free does not queue and is not observed, so `count()` is the number of
    /// operations that had to wait, since the pool was made.
    pub queue_wait: DurationHistogram,
}

impl PoolStats {
    /// `waiting` is the pool's own count of operations waiting for a connection: the
    /// driver's checkout events cannot give it, since a cancelled checkout reports nothing.
    pub(crate) fn read(
        gauges: Option<&Gauges>,
        counters: &Counters,
        waiting: i64,
        max_size: u32,
        min_size: u32,
    ) -> Self {
        let (total, in_use) = gauges.map_or((0, 0), |g| {
            (
                g.total.load(Ordering::Relaxed).max(0),
                g.in_use.load(Ordering::Relaxed).max(0),
            )
        });
        let waiting = waiting.max(0);
        let checkouts = counters.checkouts.load(Ordering::Relaxed);
        let failures = counters.checkout_failures.load(Ordering::Relaxed);
        let attempts = checkouts + failures;
        PoolStats {
            total,
            available: (total - in_use).max(0),
            in_use,
            wait_queue: waiting,
            max_size,
            min_size,
            checkouts,
            checkout_failures: failures,
            checkout_wait_mean_us: counters
                .wait_total_us
                .load(Ordering::Relaxed)
                .checked_div(attempts)
                .unwrap_or(0),
            checkout_wait_max_us: counters.wait_max_us.load(Ordering::Relaxed),
            connections_created: counters.connections_created.load(Ordering::Relaxed),
            connections_closed: counters.connections_closed.load(Ordering::Relaxed),
            pool_clears: counters.clears.load(Ordering::Relaxed),
            queue_wait: counters.queue_waits.snapshot(),
        }
    }
}
