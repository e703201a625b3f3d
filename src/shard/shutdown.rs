//! A shutdown signal every long operation watches: set once (SIGINT/SIGTERM or a caller),
//! observed by polling or by awaiting with a timer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Cloneable, `Send + Sync`. A signal made by [`Shutdown::with_signals`] is also set by
/// SIGINT/SIGTERM; one made by [`Shutdown::new`] only by [`Shutdown::trigger`].
#[derive(Clone, Default, Debug)]
pub struct Shutdown {
    flag: Arc<AtomicBool>,
    signals: bool,
}

static SIGNALLED: AtomicBool = AtomicBool::new(false);

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
        Self {
            flag: Arc::default(),
            signals: true,
        }
    }

    pub fn trigger(&self) {
        self.flag.store(true, Ordering::SeqCst);
    }

    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::Relaxed) || (self.signals && SIGNALLED.load(Ordering::Relaxed))
    }

    /// Sleeps for `d` on the current glommio executor, waking early on shutdown.
    /// Returns false when shut down.
    pub async fn sleep(&self, d: Duration) -> bool {
        let step = Duration::from_millis(50);
        let mut left = d;
        while !left.is_zero() {
            if self.is_set() {
                return false;
            }
            let s = left.min(step);
            glommio::timer::sleep(s).await;
            left -= s;
        }
        !self.is_set()
    }
}
