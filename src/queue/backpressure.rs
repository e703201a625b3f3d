//! Backpressure for the embedded broker, which silently drops a partition's oldest messages
//! past a few MiB: the populator waits while too many produced entries are not yet consumed
//! by every site, so no unconsumed entry is ever dropped. (With real brokers retention is
//! the broker's job and this gate is not used.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use event_listener::Event;

/// Entries produced, and entries each site's workers have finished with.
#[derive(Debug)]
pub struct Backpressure {
    produced: AtomicU64,
    consumed: Vec<AtomicU64>,
    limit: u64,
    /// Notified whenever a site finishes entries: what a waiting [`Backpressure::admit`]
    /// wakes on.
    progress: Event,
}

/// What site `i`'s workers count the messages they are done with on.
#[derive(Debug, Clone)]
pub struct SiteCounter {
    gate: Arc<Backpressure>,
    site: usize,
}

impl SiteCounter {
    /// `n` more messages done with: wakes a populator waiting for room.
    pub fn add(&self, n: u64) {
        self.gate.consumed[self.site].fetch_add(n, Ordering::AcqRel);
        self.gate.progress.notify(usize::MAX);
    }
}

impl Backpressure {
    /// `sites` counters, one per site; at most `limit` entries outstanding.
    pub fn new(sites: usize, limit: u64) -> Arc<Self> {
        Arc::new(Self {
            produced: AtomicU64::new(0),
            consumed: (0..sites).map(|_| AtomicU64::new(0)).collect(),
            limit,
            progress: Event::new(),
        })
    }

    /// The counter site `i`'s workers add to for each message they are done with.
    pub fn site_counter(self: &Arc<Self>, i: usize) -> SiteCounter {
        SiteCounter {
            gate: self.clone(),
            site: i,
        }
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

    /// Waits until one more entry may be produced, and counts it; woken by the sites'
    /// progress, not by polling. Returns false on shutdown.
    pub async fn admit(&self, shutdown: &crate::shard::Shutdown) -> bool {
        loop {
            if shutdown.is_set() {
                return false;
            }
            if self.outstanding() < self.limit {
                break;
            }
            let progress = self.progress.listen();
            if self.outstanding() < self.limit {
                break;
            }
            futures_lite::future::or(progress, shutdown.wait()).await;
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
    use std::time::Duration;

    #[test]
    fn outstanding_follows_the_slowest_site() {
        let b = Backpressure::new(2, 3);
        b.produced.store(5, Ordering::SeqCst);
        b.site_counter(0).add(5);
        b.site_counter(1).add(1);
        assert_eq!(b.outstanding(), 4);
        b.site_counter(1).add(3);
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
                c.add(1);
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
