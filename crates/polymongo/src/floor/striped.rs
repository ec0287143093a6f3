//! A counter that many threads add to at once without sharing a cache line.
//!
//! One `AtomicU64` that every core increments on every call moves its cache line from core
//! to core on each increment, so on a machine with many cores a counter on the hot path
//! (the warm tenant route counts a hit per call) becomes the point every request waits on.
//! Here each thread adds to its own stripe (a cache line of its own); reading sums the
//! stripes, so a read is O(stripes), and an increment is one uncontended atomic add.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;

/// Stripes at most: bounds the memory (128 bytes a stripe) whatever the machine.
const MAX_STRIPES: usize = 64;

/// The next stripe number to hand to a thread.
static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's stripe number, taken on its first increment: threads get consecutive
    /// numbers, so up to the number of stripes no two share one.
    static THREAD_STRIPE: usize = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
}

/// A sum of per-thread stripes: [`add`](Self::add) from any thread, [`get`](Self::get) the
/// total.
pub(crate) struct StripedCounter {
    stripes: Box<[CachePadded<AtomicU64>]>,
}

impl Default for StripedCounter {
    fn default() -> Self {
        // One stripe per core (a power of two, so a mask picks it).
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let n = cores.next_power_of_two().min(MAX_STRIPES);
        Self {
            stripes: (0..n)
                .map(|_| CachePadded::new(AtomicU64::new(0)))
                .collect(),
        }
    }
}

impl StripedCounter {
    /// Adds `n` on this thread's stripe.
    #[inline]
    pub(crate) fn add(&self, n: u64) {
        let mask = self.stripes.len() - 1;
        let i = THREAD_STRIPE.try_with(|s| *s & mask).unwrap_or(0);
        self.stripes[i].fetch_add(n, Ordering::Relaxed);
    }

    /// The total: every stripe summed. Increments made meanwhile may or may not be in it.
    pub(crate) fn get(&self) -> u64 {
        self.stripes
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

impl std::fmt::Debug for StripedCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("StripedCounter").field(&self.get()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_from_many_threads_sum_exactly() {
        let c = StripedCounter::default();
        std::thread::scope(|s| {
            for _ in 0..16 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        c.add(1);
                    }
                });
            }
        });
        assert_eq!(c.get(), 160_000);
        assert!(c.stripes.len().is_power_of_two());
        assert!(c.stripes.len() <= MAX_STRIPES);
    }
}
