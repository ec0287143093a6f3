//! `ping` with the connect retry: the npm package's `ping`, and how `connect`, `connect_db` and
//! a warm start check that a cluster answers.

use std::time::{Duration, Instant};

use mongodb::bson::doc;

use crate::floor::config::RetryOptions;
use crate::floor::error::{Error, Result};
use crate::registry::Registry;

/// Sends `ping` to the cluster of database `name` and returns the round-trip time, retrying as
/// `retry` says: only errors that may pass (unreachable, timeouts); each failed attempt is
/// logged and reported to the `on_error` hooks with the pause before the next.
pub(crate) async fn ping(registry: &Registry, retry: RetryOptions, name: &str) -> Result<Duration> {
    let mut attempt = 1;
    loop {
        // Leased per attempt (and not across the pause): a pool closed for idleness meanwhile
        // reopens, and is not closed under the attempt.
        let lease = registry.lease(name)?;
        let slot = &lease.entry;
        let started = Instant::now();
        match slot.database.run_command(doc! { "ping": 1 }).await {
            Ok(_) => {
                tracing::debug!(database = name, cluster = %slot.pool.label(), attempt, "ping answered");
                return Ok(started.elapsed());
            }
            Err(e) => {
                let err = Error::from_driver(e, slot.pool.label());
                if attempt >= retry.attempts || !err.is_retryable() {
                    tracing::warn!(database = name, error = %err.redacted(), attempt, "ping failed");
                    slot.pool.report_error(Some(name), err.to_string());
                    return Err(err);
                }
                let pause = retry.pause_after(attempt);
                tracing::warn!(database = name, error = %err.redacted(), attempt, of = retry.attempts, ?pause, "ping failed; retrying");
                slot.pool.report_error(
                    Some(name),
                    format!(
                        "attempt {attempt} of {} failed, retrying in {pause:?}: {err}",
                        retry.attempts
                    ),
                );
                drop(lease);
                tokio::time::sleep(pause).await;
                attempt += 1;
            }
        }
    }
}
