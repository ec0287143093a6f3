//! The one deadline model for every database call a handler makes: a request waits at most
//! `queue` for a place in its tenant's pool before anything is sent (refused: 503, safe to
//! retry), and the whole request ends by `request` after it arrived (past it while the handler
//! ran: 504, outcome unknown).
//!
//! The driver's own connection queue has no bound and calls made through the extractor's
//! `Deref` do not pass through [`DbHandle::run`](polymongo::DbHandle::run), so neither can
//! bound a handler. The bound is held outside the handler instead: the extractor takes the
//! place in the pool (polymongo's wait queue, the one `run` uses) before the handler runs, and
//! [`Tenancy::layer`](crate::Tenancy::layer) drops whatever the handler still awaits at the
//! deadline. That holds however the handler calls the database.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Default of [`RequestLimits::queue`].
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(1);
/// Default of [`RequestLimits::request`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The time limits of a request through [`Tenancy::layer`](crate::Tenancy::layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// How long a request may wait for a place in its tenant's pool (one of its
    /// `max_pool_size` connection slots, held until the handler returns). Past it: 503 `busy`
    /// with `Retry-After`; nothing was sent. Default [`DEFAULT_QUEUE_TIMEOUT`].
    pub queue: Duration,
    /// How long a request may take from its arrival to its answer. Past it the handler is
    /// dropped (with the driver calls it awaits) and the request is answered 504 `timeout`
    /// without `Retry-After` — or 503 `busy` if the handler had not started. Default
    /// [`DEFAULT_REQUEST_TIMEOUT`].
    pub request: Duration,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            queue: DEFAULT_QUEUE_TIMEOUT,
            request: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

impl RequestLimits {
    /// Both limits above zero, the queue within the request.
    pub(crate) fn check(&self) -> Result<(), &'static str> {
        if self.queue.is_zero() || self.request.is_zero() {
            return Err("the queue and request timeouts must be more than zero");
        }
        if self.queue > self.request {
            return Err("the queue timeout must not exceed the request timeout");
        }
        Ok(())
    }
}

/// Where a request stands, for what its deadline answers.
/// Where a request limit too long for an instant puts the deadline.
const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 86_400);

const OUTSIDE: u8 = 0;
const PREPARING: u8 = 1;
const HANDED: u8 = 2;

/// One request's deadline and how far it got; put in the request's extensions by the layer
/// and moved along by the extractors.
#[derive(Debug)]
pub(crate) struct RequestClock {
    deadline: Instant,
    queue: Duration,
    phase: AtomicU8,
}

impl RequestClock {
    pub(crate) fn start(limits: RequestLimits) -> Self {
        RequestClock {
            // A limit too long to name an instant (`Duration::MAX` for "no limit") would
            // panic on every request: such a deadline is 30 years away, which is no limit.
            deadline: Instant::now()
                .checked_add(limits.request)
                .unwrap_or_else(|| Instant::now() + FAR_FUTURE),
            queue: limits.queue,
            phase: AtomicU8::new(OUTSIDE),
        }
    }

    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// How long the extractor may wait for a place in the pool: the queue timeout, cut to
    /// what is left of the request's time.
    pub(crate) fn queue_wait(&self) -> Duration {
        self.queue
            .min(self.deadline.saturating_duration_since(Instant::now()))
    }

    /// An extractor is resolving the tenant, taking the place, ensuring indexes: the handler
    /// has not started, and what the extractor sends (`createIndexes`) is idempotent.
    pub(crate) fn preparing(&self) {
        self.phase.store(PREPARING, Ordering::SeqCst);
    }

    /// The handle is given to the handler, which may send writes from now on.
    pub(crate) fn handed(&self) {
        self.phase.store(HANDED, Ordering::SeqCst);
    }

    /// Whether a deadline passing now finds nothing of the request applied: only while an
    /// extractor prepares. Before any tenant extractor ran, a handler that reaches the
    /// database some other way may have written, so that counts as unknown too.
    pub(crate) fn nothing_sent(&self) -> bool {
        self.phase.load(Ordering::SeqCst) == PREPARING
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_checked() {
        assert!(RequestLimits::default().check().is_ok());
        let zero = RequestLimits {
            queue: Duration::ZERO,
            ..RequestLimits::default()
        };
        assert!(zero.check().is_err());
        let inverted = RequestLimits {
            queue: Duration::from_secs(5),
            request: Duration::from_secs(1),
        };
        assert!(inverted.check().is_err());
    }

    #[tokio::test]
    async fn only_a_request_still_preparing_has_sent_nothing() {
        let clock = RequestClock::start(RequestLimits::default());
        assert!(!clock.nothing_sent());
        clock.preparing();
        assert!(clock.nothing_sent());
        clock.handed();
        assert!(!clock.nothing_sent());
        assert!(clock.queue_wait() <= DEFAULT_QUEUE_TIMEOUT);
    }
}
