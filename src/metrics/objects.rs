//! Object versions being replicated now and the last ones finished: what the per-object
//! progress route and the oldest-change gauge read.
//!
//! A transfer's bytes are counted by the data path through the counter this registry hands
//! out ([`Transfer::done`]); registering and finishing happen once per entry, never per chunk.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Source bucket, key and version id.
pub type ObjectId = (String, String, String);

/// A version being replicated now.
#[derive(Debug)]
pub struct Transfer {
    /// Bytes of the version.
    pub size: u64,
    /// Bytes sent to the destination by the current attempt.
    pub done: Arc<AtomicU64>,
    /// When the source changed (or, unknown, when the entry was received).
    pub changed: SystemTime,
}

/// How a recently finished version ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    pub size: u64,
    pub completed: bool,
    pub at: SystemTime,
}

/// What the progress route reports for one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectProgress {
    InFlight { size: u64, done: u64 },
    Finished(Finished),
}

/// The registry (one per site).
#[derive(Debug)]
pub struct Tracker {
    live: HashMap<ObjectId, Arc<Transfer>>,
    finished: HashMap<ObjectId, Finished>,
    order: VecDeque<ObjectId>,
    keep: usize,
}

/// Finished versions remembered per site (the oldest are forgotten first).
pub const FINISHED_KEPT: usize = 10_000;

impl Default for Tracker {
    fn default() -> Self {
        Self::new(FINISHED_KEPT)
    }
}

impl Tracker {
    pub fn new(keep: usize) -> Self {
        Self {
            live: HashMap::new(),
            finished: HashMap::new(),
            order: VecDeque::new(),
            keep,
        }
    }

    /// Registers a version as in flight; returns the counter its bytes go to.
    pub fn start(&mut self, id: ObjectId, size: u64, changed: SystemTime) -> Arc<Transfer> {
        let t = Arc::new(Transfer {
            size,
            done: Arc::new(AtomicU64::new(0)),
            changed,
        });
        self.live.insert(id, t.clone());
        t
    }

    /// The version is no longer in flight; with an outcome, it is remembered as finished.
    pub fn end(&mut self, id: &ObjectId, outcome: Option<bool>) {
        let Some(t) = self.live.remove(id) else {
            return;
        };
        let Some(completed) = outcome else { return };
        let f = Finished {
            size: t.size,
            completed,
            at: SystemTime::now(),
        };
        if self.finished.insert(id.clone(), f).is_none() {
            self.order.push_back(id.clone());
        }
        while self.order.len() > self.keep {
            if let Some(old) = self.order.pop_front() {
                self.finished.remove(&old);
            }
        }
    }

    /// The in-flight transfer of a version, if any.
    pub fn transfer(&self, id: &ObjectId) -> Option<Arc<Transfer>> {
        self.live.get(id).cloned()
    }

    /// Progress of a version: in flight first, then finished.
    pub fn progress(&self, id: &ObjectId) -> Option<ObjectProgress> {
        if let Some(t) = self.live.get(id) {
            return Some(ObjectProgress::InFlight {
                size: t.size,
                done: t.done.load(Ordering::Relaxed).min(t.size),
            });
        }
        self.finished.get(id).map(|f| ObjectProgress::Finished(*f))
    }

    /// Age of the oldest change in flight.
    pub fn oldest_in_flight(&self) -> Option<Duration> {
        let oldest = self.live.values().map(|t| t.changed).min()?;
        Some(SystemTime::now().duration_since(oldest).unwrap_or_default())
    }

    pub fn in_flight(&self) -> usize {
        self.live.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(k: &str) -> ObjectId {
        ("b".into(), k.into(), "v1".into())
    }

    #[test]
    fn in_flight_then_finished_then_forgotten() {
        let mut t = Tracker::new(2);
        let tr = t.start(id("a"), 100, SystemTime::now());
        tr.done.fetch_add(40, Ordering::Relaxed);
        assert_eq!(
            t.progress(&id("a")),
            Some(ObjectProgress::InFlight {
                size: 100,
                done: 40
            })
        );
        t.end(&id("a"), Some(true));
        assert!(matches!(
            t.progress(&id("a")),
            Some(ObjectProgress::Finished(Finished {
                size: 100,
                completed: true,
                ..
            }))
        ));
        for k in ["b", "c"] {
            t.start(id(k), 1, SystemTime::now());
            t.end(&id(k), Some(false));
        }
        assert_eq!(
            t.progress(&id("a")),
            None,
            "the oldest finished is forgotten"
        );
        assert!(t.progress(&id("c")).is_some());
    }

    #[test]
    fn interrupted_transfers_are_not_remembered_and_oldest_is_tracked() {
        let mut t = Tracker::default();
        let old = SystemTime::now() - Duration::from_secs(30);
        t.start(id("old"), 1, old);
        t.start(id("new"), 1, SystemTime::now());
        let age = t.oldest_in_flight().unwrap();
        assert!(age >= Duration::from_secs(30), "{age:?}");
        t.end(&id("old"), None);
        assert_eq!(t.progress(&id("old")), None);
        assert!(t.oldest_in_flight().unwrap() < Duration::from_secs(30));
        assert_eq!(t.in_flight(), 1);
    }
}
