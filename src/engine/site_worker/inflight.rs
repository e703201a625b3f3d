//! Entries running now, counted with a wake-up when none is left: what a drain waits on
//! (a shard's entries at shutdown, a revoked partition's on a rebalance) instead of polling.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use event_listener::Event;

/// A count of running entries; clones share it.
#[derive(Clone, Default)]
pub struct InFlight(Rc<Inner>);

#[derive(Default)]
struct Inner {
    count: Cell<usize>,
    idle: Event,
}

/// Held by a running entry; dropping it ends the entry.
pub struct Entered(Rc<Inner>);

impl Drop for Entered {
    fn drop(&mut self) {
        let n = self.0.count.get() - 1;
        self.0.count.set(n);
        if n == 0 {
            self.0.idle.notify(usize::MAX);
        }
    }
}

impl InFlight {
    pub fn enter(&self) -> Entered {
        self.0.count.set(self.0.count.get() + 1);
        Entered(self.0.clone())
    }

    pub fn count(&self) -> usize {
        self.0.count.get()
    }

    /// Waits until no entry runs, for at most `wait`. True when none runs.
    pub async fn idle_within(&self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            if self.count() == 0 {
                return true;
            }
            let listener = self.0.idle.listen();
            if self.count() == 0 {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let woken = async {
                listener.await;
                true
            };
            let timer = async {
                glommio::timer::sleep(left).await;
                false
            };
            if !futures_lite::future::or(woken, timer).await {
                return self.count() == 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_the_last_entry_and_gives_up_at_the_deadline() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let f = InFlight::default();
                assert!(f.idle_within(Duration::ZERO).await);
                let (a, b) = (f.enter(), f.enter());
                assert_eq!(f.count(), 2);
                let started = Instant::now();
                assert!(!f.idle_within(Duration::from_millis(50)).await);
                assert!(started.elapsed() >= Duration::from_millis(50));
                drop(a);
                glommio::spawn_local(async move {
                    glommio::timer::sleep(Duration::from_millis(20)).await;
                    drop(b);
                })
                .detach();
                assert!(f.idle_within(Duration::from_secs(30)).await);
                assert_eq!(f.count(), 0);
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
