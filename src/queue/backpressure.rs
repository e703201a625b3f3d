//! Backpressure for the embedded broker, which silently drops a partition's oldest messages
//! past a few MiB: the populator waits while too many produced entries are not yet consumed
//! by every site, so no unconsumed entry is ever dropped. (With real brokers retention is
//! the broker's job and this gate is not used.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Entries produced, and entries each site's workers have finished with.
#[derive(Debug)]
pub struct Backpressure {
    produced: AtomicU64,
    consumed: Vec<Arc<AtomicU64>>,
    limit: u64,
}

impl Backpressure {
    /// `sites` counters, one per site; at most `limit` entries outstanding.
    pub fn new(sites: usize, limit: u64) -> Arc<Self> {
        Arc::new(Self {
            produced: AtomicU64::new(0),
            consumed: (0..sites).map(|_| Arc::new(AtomicU64::new(0))).collect(),
            limit,
        })
    }

    /// The counter site `i`'s workers increment for each message they are done with.
    pub fn site_counter(&self, i: usize) -> Arc<AtomicU64> {
        self.consumed[i].clone()
    }

    /// Entries produced and not yet consumed by the slowest site.
    pub fn outstanding(&self) -> u64 {
        let slowest = self
            .consumed
            .iter()
            .map(|c| c.load(Ordering::Acquire))
            .min()
            .unwrap_or(u64::MAX);
        self.produced
            .load(Ordering::Acquire)
            .saturating_sub(slowest)
    }

    /// Waits until one more entry may be produced, and counts it. Returns false on shutdown.
    pub async fn admit(&self, shutdown: &crate::shard::Shutdown) -> bool {
        while self.outstanding() >= self.limit {
            if !shutdown.sleep(Duration::from_millis(20)).await {
                return false;
            }
        }
        self.produced.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// Takes back an admission whose entry was not produced after all.
    pub fn cancel(&self) {
        self.produced.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outstanding_follows_the_slowest_site() {
        let b = Backpressure::new(2, 3);
        b.produced.store(5, Ordering::SeqCst);
        b.site_counter(0).store(5, Ordering::SeqCst);
        b.site_counter(1).store(1, Ordering::SeqCst);
        assert_eq!(b.outstanding(), 4);
        b.site_counter(1).store(4, Ordering::SeqCst);
        assert_eq!(b.outstanding(), 1);
    }

    #[test]
    fn admit_waits_for_consumers() {
        let b = Backpressure::new(1, 2);
        let shutdown = crate::shard::Shutdown::new();
        let done = crate::shard::block_on(async {
            assert!(b.admit(&shutdown).await);
            assert!(b.admit(&shutdown).await);
            let c = b.site_counter(0);
            let consumed = std::rc::Rc::new(std::cell::Cell::new(false));
            // a consumer finishes one entry a little later
            let flag = consumed.clone();
            glommio::spawn_local(async move {
                glommio::timer::sleep(Duration::from_millis(50)).await;
                flag.set(true);
                c.fetch_add(1, Ordering::SeqCst);
            })
            .detach();
            assert!(b.admit(&shutdown).await);
            consumed.get()
        })
        .unwrap();
        assert!(
            done,
            "the third entry was admitted only after a consumer finished one"
        );
        assert_eq!(b.outstanding(), 2);
    }
}
