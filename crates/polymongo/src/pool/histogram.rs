//! Histograms of durations with fixed power-of-two buckets: the pools' connection-slot waits,
//! and the layout the usage layer's operation latencies share.
//!
//! The bounds are constants (bucket `i` ends at 2^i µs), the same in every process and every
//! version that keeps [`DURATION_BUCKETS`], so histograms from many instances can be added
//! bucket by bucket: that is what makes a fleet-wide quantile computable from them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Buckets of a [`DurationHistogram`]: bucket `i` holds durations in (2^(i-1), 2^i] µs
/// (bucket 0 everything up to 1 µs), so the bounds run from 1 µs to 2^26 µs (about 67 s);
/// the last bucket is open and holds everything longer.
pub const DURATION_BUCKETS: usize = 28;

/// The bucket of `d`.
pub(crate) fn bucket(d: Duration) -> usize {
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
    // ceil(log2(us)): the smallest power of two at or above it.
    let ceil_log2 = (u64::BITS - (us - 1).leading_zeros()) as usize;
    ceil_log2.min(DURATION_BUCKETS - 1)
}

/// Upper bound of bucket `i` in microseconds, as if it were closed (2^i); the last bucket's
/// real bound is infinite (see [`DurationHistogram::upper_bound_us`]).
pub(crate) fn bucket_ceiling(i: usize) -> u64 {
    1u64 << i.min(63)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Observations of durations at one instant: counts per bucket and their sum. Part of
/// [`UsageStats`](crate::UsageStats) (operation latency) and
/// [`PoolStats`](crate::PoolStats) (connection-slot waits); the metrics export it as a
/// Prometheus histogram.
///
/// Bounds are fixed (see [`DURATION_BUCKETS`]), so two histograms, of two databases or two
/// processes, add bucket by bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DurationHistogram {
    /// Observations per bucket, not cumulative: `counts[i]` is the number of durations in
    /// (2^(i-1), 2^i] µs (`counts[0]`: up to 1 µs; the last: everything above 2^26 µs).
    pub counts: [u64; DURATION_BUCKETS],
    /// Sum of the observed durations, in microseconds.
    pub sum_us: u64,
}

impl DurationHistogram {
    /// Observations counted (the sum of [`counts`](Self::counts)).
    pub fn count(&self) -> u64 {
        self.counts.iter().copied().fold(0, u64::saturating_add)
    }

    /// Upper bound of bucket `i` in microseconds (2^i), `None` for the last bucket (open:
    /// everything longer lands there) and past it.
    pub fn upper_bound_us(i: usize) -> Option<u64> {
        (i + 1 < DURATION_BUCKETS).then(|| bucket_ceiling(i))
    }

    /// `(upper bound in µs, observations at or below it)` for every bucket, cumulative as a
    /// Prometheus histogram's `le` series; the last (`None`, i.e. `+Inf`) is
    /// [`count`](Self::count).
    pub fn cumulative(&self) -> impl Iterator<Item = (Option<u64>, u64)> + '_ {
        self.counts.iter().enumerate().scan(0u64, |seen, (i, c)| {
            *seen = seen.saturating_add(*c);
            Some((Self::upper_bound_us(i), *seen))
        })
    }

    /// The `q`-quantile (`0.0 < q <= 1.0`), in microseconds: the upper bound of the bucket
    /// holding it (2^i µs; 2^27 µs for the open last bucket), never below the true value and
    /// less than twice it. 0 when nothing was observed.
    pub fn quantile_us(&self, q: f64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            seen = seen.saturating_add(*c);
            if seen >= rank {
                return bucket_ceiling(i);
            }
        }
        bucket_ceiling(DURATION_BUCKETS - 1)
    }

    /// Adds `other`'s observations to these, bucket by bucket (the bounds are the same
    /// everywhere): a fleet's histogram is the sum of its instances'.
    pub fn add(&mut self, other: &Self) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine = mine.saturating_add(*theirs);
        }
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
    }

    #[cfg(test)]
    fn record(&mut self, d: Duration) {
        self.counts[bucket(d)] += 1;
        self.sum_us = self.sum_us.saturating_add(micros(d));
    }

    /// Bucket by bucket `self - other`, at zero where `other` has more (a figure read a
    /// moment later can be ahead of a total read before it): the observations between two
    /// readings of the same histogram.
    pub fn saturating_sub(&self, other: &Self) -> Self {
        Self {
            counts: std::array::from_fn(|i| self.counts[i].saturating_sub(other.counts[i])),
            sum_us: self.sum_us.saturating_sub(other.sum_us),
        }
    }

    /// Bucket by bucket the larger of `self` and `other`.
    pub(crate) fn max_with(&self, other: &Self) -> Self {
        Self {
            counts: std::array::from_fn(|i| self.counts[i].max(other.counts[i])),
            sum_us: self.sum_us.max(other.sum_us),
        }
    }
}

/// A [`DurationHistogram`] counted with atomics: a clock read and two relaxed adds per
/// observation, no lock.
#[derive(Debug, Default)]
pub(crate) struct AtomicHistogram {
    counts: [AtomicU64; DURATION_BUCKETS],
    sum_us: AtomicU64,
}

impl AtomicHistogram {
    pub(crate) fn record(&self, d: Duration) {
        self.counts[bucket(d)].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(micros(d), Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> DurationHistogram {
        DurationHistogram {
            counts: std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed)),
            sum_us: self.sum_us.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_and_bound_their_values() {
        for us in [
            1u64, 2, 3, 5, 7, 100, 999, 1_500, 123_456, 10_000_000, 60_000_000,
        ] {
            let b = bucket(Duration::from_micros(us));
            assert!(bucket_ceiling(b) >= us, "{us} -> {b}");
            assert!(bucket_ceiling(b) < us * 2, "{us} -> {}", bucket_ceiling(b));
            assert!(b == 0 || bucket_ceiling(b - 1) < us, "{us} -> {b}");
        }
        assert_eq!(bucket(Duration::ZERO), 0);
        assert_eq!(bucket(Duration::from_micros(1024)), 10);
        assert_eq!(bucket(Duration::from_micros(1025)), 11);
        assert_eq!(bucket(Duration::from_secs(1 << 20)), DURATION_BUCKETS - 1);
        assert_eq!(bucket(Duration::MAX), DURATION_BUCKETS - 1);
    }

    #[test]
    fn cumulative_counts_end_with_the_total() {
        let h = AtomicHistogram::default();
        for us in [1, 3, 3, 100, 70_000_000] {
            h.record(Duration::from_micros(us));
        }
        let s = h.snapshot();
        assert_eq!(s.count(), 5);
        assert_eq!(s.sum_us, 70_000_107);
        let cumulative: Vec<_> = s.cumulative().collect();
        assert_eq!(cumulative.len(), DURATION_BUCKETS);
        assert_eq!(cumulative[0], (Some(1), 1));
        assert_eq!(cumulative[2], (Some(4), 3));
        assert_eq!(cumulative[7], (Some(128), 4));
        assert_eq!(cumulative[DURATION_BUCKETS - 2], (Some(1 << 26), 4));
        assert_eq!(cumulative[DURATION_BUCKETS - 1], (None, 5));
        let mut by_hand = DurationHistogram::default();
        for us in [1, 3, 3, 100, 70_000_000] {
            by_hand.record(Duration::from_micros(us));
        }
        assert_eq!(by_hand, s);
        assert_eq!(s.saturating_sub(&by_hand), DurationHistogram::default());
        by_hand.add(&s);
        assert_eq!(by_hand.count(), 10);
        assert_eq!(by_hand.sum_us, 2 * s.sum_us);
    }
}
