//! A shutdown signal every long operation watches: set once (SIGINT/SIGTERM or a caller),
//! checked with [`Shutdown::is_set`] or awaited ([`Shutdown::wait`], [`Shutdown::sleep`]),
//! which wakes the waiters at once instead of polling.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use event_listener::Event;

/// Cloneable, `Send + Sync`. A signal made by [`Shutdown::with_signals`] is also set by
/// SIGINT/SIGTERM; one made by [`Shutdown::new`] only by [`Shutdown::trigger`].
#[derive(Clone, Default, Debug)]
pub struct Shutdown {
    inner: Arc<Inner>,
    signals: bool,
}

#[derive(Default, Debug)]
struct Inner {
    flag: AtomicBool,
    set: Event,
}

static SIGNALLED: AtomicBool = AtomicBool::new(false);
/// Notified (by a watcher thread: a signal handler may not) once a signal arrived.
static SIGNAL_EVENT: Event = Event::new();
static WATCHER: Once = Once::new();

extern "C" fn on_signal(_: libc::c_int) {
    SIGNALLED.store(true, Ordering::SeqCst);
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// A signal that is also set by SIGINT and SIGTERM.
    pub fn with_signals() -> Self {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
            libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        }
        WATCHER.call_once(|| {
            std::thread::spawn(|| {
                while !SIGNALLED.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                SIGNAL_EVENT.notify(usize::MAX);
            });
        });
        Self {
            inner: Arc::default(),
            signals: true,
        }
    }

    pub fn trigger(&self) {
        self.inner.flag.store(true, Ordering::SeqCst);
        self.inner.set.notify(usize::MAX);
    }

    pub fn is_set(&self) -> bool {
        self.inner.flag.load(Ordering::Relaxed)
            || (self.signals && SIGNALLED.load(Ordering::Relaxed))
    }

    /// Returns once the signal is set.
    pub async fn wait(&self) {
        loop {
            if self.is_set() {
                return;
            }
            let own = self.inner.set.listen();
            let signal = self.signals.then(|| SIGNAL_EVENT.listen());
            if self.is_set() {
                return;
            }
            match signal {
                Some(signal) => futures_lite::future::or(own, signal).await,
                None => own.await,
            }
        }
    }

    /// Sleeps for `d` on the current glommio executor, waking early on shutdown.
    /// Returns false when shut down.
    pub async fn sleep(&self, d: Duration) -> bool {
        let woken = async {
            self.wait().await;
            false
        };
        let slept = async {
            glommio::timer::sleep(d).await;
            true
        };
        futures_lite::future::or(woken, slept).await && !self.is_set()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_trigger_wakes_sleepers_at_once() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let s = Shutdown::new();
                assert!(s.sleep(Duration::from_millis(1)).await);
                let t = s.clone();
                glommio::spawn_local(async move {
                    glommio::timer::sleep(Duration::from_millis(10)).await;
                    t.trigger();
                })
                .detach();
                let started = Instant::now();
                assert!(!s.sleep(Duration::from_secs(3600)).await);
                assert!(started.elapsed() < Duration::from_secs(3600));
                s.wait().await;
                assert!(!s.sleep(Duration::from_secs(3600)).await, "already set");
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
