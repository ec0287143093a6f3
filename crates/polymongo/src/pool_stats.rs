//! True pool figures, from the driver's connection-pool (CMAP) events rather than guesses.
//!
//! Each client gets its own [`Gauges`] (connections now: total, checked out, waiting), so a
//! pool closed and reopened starts from zero; the [`Counters`] of a pool (checkouts, failures,
//! waits, connections made and closed) add up over its whole life. Both are atomics updated in
//! the event handler, which the driver calls inline: a few relaxed increments per checkout.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mongodb::event::cmap::CmapEvent;
use mongodb::event::EventHandler;
use serde::Serialize;

/// Connections of one client's pool right now.
#[derive(Debug, Default)]
pub(crate) struct Gauges {
    total: AtomicI64,
    in_use: AtomicI64,
    waiting: AtomicI64,
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
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Counters {
    fn waited(&self, d: Duration) {
        let us = micros(d);
        self.wait_total_us.fetch_add(us, Ordering::Relaxed);
        self.wait_max_us.fetch_max(us, Ordering::Relaxed);
    }
}

/// The CMAP handler of one client.
pub(crate) fn observer(gauges: Arc<Gauges>, counters: Arc<Counters>) -> EventHandler<CmapEvent> {
    EventHandler::callback(move |event| match event {
        CmapEvent::ConnectionCreated(_) => {
            gauges.total.fetch_add(1, Ordering::Relaxed);
            counters.connections_created.fetch_add(1, Ordering::Relaxed);
        }
        CmapEvent::ConnectionClosed(_) => {
            gauges.total.fetch_sub(1, Ordering::Relaxed);
            counters.connections_closed.fetch_add(1, Ordering::Relaxed);
        }
        CmapEvent::ConnectionCheckoutStarted(_) => {
            gauges.waiting.fetch_add(1, Ordering::Relaxed);
        }
        CmapEvent::ConnectionCheckoutFailed(e) => {
            gauges.waiting.fetch_sub(1, Ordering::Relaxed);
            counters.checkout_failures.fetch_add(1, Ordering::Relaxed);
            counters.waited(e.duration);
        }
        CmapEvent::ConnectionCheckedOut(e) => {
            gauges.waiting.fetch_sub(1, Ordering::Relaxed);
            gauges.in_use.fetch_add(1, Ordering::Relaxed);
            counters.checkouts.fetch_add(1, Ordering::Relaxed);
            counters.waited(e.duration);
        }
        CmapEvent::ConnectionCheckedIn(_) => {
            gauges.in_use.fetch_sub(1, Ordering::Relaxed);
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
    /// Operations waiting for a connection now.
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
}

impl PoolStats {
    pub(crate) fn read(
        gauges: Option<&Gauges>,
        counters: &Counters,
        max_size: u32,
        min_size: u32,
    ) -> Self {
        let (total, in_use, waiting) = gauges.map_or((0, 0, 0), |g| {
            (
                g.total.load(Ordering::Relaxed).max(0),
                g.in_use.load(Ordering::Relaxed).max(0),
                g.waiting.load(Ordering::Relaxed).max(0),
            )
        });
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
        }
    }
}
