//! Counts over a sliding time window, in one-minute slots (completions and failures over the
//! last 24 hours, throughput over the last 15 minutes).

use std::time::{SystemTime, UNIX_EPOCH};

const SLOTS: usize = 24 * 60;

#[derive(Clone, Copy, Default, Debug)]
struct Slot {
    minute: u64,
    ok: u64,
    ok_bytes: u64,
    failed: u64,
    failed_bytes: u64,
}

/// One-minute slots for the last 24 hours.
#[derive(Debug)]
pub struct Window {
    slots: Vec<Slot>,
}

impl Default for Window {
    fn default() -> Self {
        Self {
            slots: vec![Slot::default(); SLOTS],
        }
    }
}

/// Totals over a span.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub ok: u64,
    pub ok_bytes: u64,
    pub failed: u64,
    pub failed_bytes: u64,
}

fn minute_of(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() / 60)
        .unwrap_or(0)
}

impl Window {
    /// Records an outcome at time `t`.
    pub fn record_at(&mut self, t: SystemTime, ok: bool, bytes: u64) {
        let m = minute_of(t);
        let slot = &mut self.slots[(m % SLOTS as u64) as usize];
        if slot.minute != m {
            *slot = Slot {
                minute: m,
                ..Slot::default()
            };
        }
        if ok {
            slot.ok += 1;
            slot.ok_bytes += bytes;
        } else {
            slot.failed += 1;
            slot.failed_bytes += bytes;
        }
    }

    pub fn record(&mut self, ok: bool, bytes: u64) {
        self.record_at(SystemTime::now(), ok, bytes);
    }

    /// Totals of the last `minutes` minutes before `now` (the current minute included).
    pub fn totals_at(&self, now: SystemTime, minutes: u64) -> Totals {
        let m = minute_of(now);
        let from = m.saturating_sub(minutes.saturating_sub(1));
        self.slots
            .iter()
            .filter(|s| s.minute >= from && s.minute <= m && (s.ok + s.failed) > 0)
            .fold(Totals::default(), |mut t, s| {
                t.ok += s.ok;
                t.ok_bytes += s.ok_bytes;
                t.failed += s.failed;
                t.failed_bytes += s.failed_bytes;
                t
            })
    }

    pub fn totals(&self, minutes: u64) -> Totals {
        self.totals_at(SystemTime::now(), minutes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn sliding_totals() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000 * 60);
        let mut w = Window::default();
        w.record_at(t0, true, 10);
        w.record_at(t0 + Duration::from_secs(30), false, 5);
        w.record_at(t0 + Duration::from_secs(20 * 60), true, 7);
        let now = t0 + Duration::from_secs(20 * 60 + 10);
        assert_eq!(
            w.totals_at(now, 15),
            Totals {
                ok: 1,
                ok_bytes: 7,
                failed: 0,
                failed_bytes: 0
            }
        );
        assert_eq!(
            w.totals_at(now, 24 * 60),
            Totals {
                ok: 2,
                ok_bytes: 17,
                failed: 1,
                failed_bytes: 5
            }
        );
        // a day later the old slots are reused, not counted twice
        let later = t0 + Duration::from_secs(24 * 3600);
        w.record_at(later, true, 1);
        assert_eq!(
            w.totals_at(later, 24 * 60),
            Totals {
                ok: 2,
                ok_bytes: 8,
                failed: 0,
                failed_bytes: 0
            }
        );
    }
}
