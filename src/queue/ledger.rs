//! The offset ledger of one partition: which entries may run, and which offset may be
//! committed.
//!
//! Kafka delivers a partition's messages in offset order. Entries of different keys run
//! concurrently; entries of one key (the versions of one object) run one at a time, in
//! offset order. The committed position never passes an entry that has not finished, so a
//! crash replays at most the uncommitted window, and nothing is lost.

use std::collections::{HashMap, VecDeque};

/// Misuse of the ledger (a bug in the caller).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("offset {offset} received after {last}: offsets must increase")]
    OutOfOrder { offset: i64, last: i64 },
    #[error("offset {0} is not in flight")]
    NotInFlight(i64),
}

/// Per-partition state.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Received and not yet committed, in offset order, with "finished".
    window: VecDeque<(i64, bool)>,
    /// Per key: the entry in flight first, then the entries waiting behind it.
    keys: HashMap<String, VecDeque<i64>>,
    key_of: HashMap<i64, String>,
    last_received: Option<i64>,
    /// The last position handed out for commit (the next offset to read).
    committed: Option<i64>,
}

impl Ledger {
    pub fn new() -> Self {
        Self::default()
    }

    fn check_order(&mut self, offset: i64) -> Result<(), LedgerError> {
        if let Some(last) = self.last_received {
            if offset <= last {
                return Err(LedgerError::OutOfOrder { offset, last });
            }
        }
        self.last_received = Some(offset);
        Ok(())
    }

    /// Records a received entry. Returns true when it may start now, false when an earlier
    /// entry of the same key is still in flight (it starts when [`Ledger::finish`] says so).
    pub fn receive(&mut self, offset: i64, key: &str) -> Result<bool, LedgerError> {
        self.check_order(offset)?;
        self.window.push_back((offset, false));
        self.key_of.insert(offset, key.to_string());
        let q = self.keys.entry(key.to_string()).or_default();
        q.push_back(offset);
        Ok(q.len() == 1)
    }

    /// Records a message that needs no work (a malformed one, already sent to the failed
    /// topic): it only has to be committed past.
    pub fn receive_done(&mut self, offset: i64) -> Result<(), LedgerError> {
        self.check_order(offset)?;
        self.window.push_back((offset, true));
        Ok(())
    }

    /// Marks an entry in flight as finished (replicated, or its failure recorded). Returns
    /// the next entry of the same key, which may start now.
    pub fn finish(&mut self, offset: i64) -> Result<Option<i64>, LedgerError> {
        let key = self
            .key_of
            .get(&offset)
            .cloned()
            .ok_or(LedgerError::NotInFlight(offset))?;
        let q = self
            .keys
            .get_mut(&key)
            .ok_or(LedgerError::NotInFlight(offset))?;
        if q.front() != Some(&offset) {
            return Err(LedgerError::NotInFlight(offset));
        }
        q.pop_front();
        let next = q.front().copied();
        if q.is_empty() {
            self.keys.remove(&key);
        }
        self.key_of.remove(&offset);
        // The window is sorted by offset.
        if let Ok(i) = self.window.binary_search_by_key(&offset, |(o, _)| *o) {
            self.window[i].1 = true;
        }
        Ok(next)
    }

    /// The position to commit (Kafka's "next offset to read") when it moved since the last
    /// call: one past the last finished entry below the lowest unfinished one.
    pub fn commit_position(&mut self) -> Option<i64> {
        let mut pos = None;
        while let Some((o, true)) = self.window.front().copied() {
            pos = Some(o + 1);
            self.window.pop_front();
        }
        let pos = pos?;
        if self.committed.is_some_and(|c| c >= pos) {
            return None;
        }
        self.committed = Some(pos);
        Some(pos)
    }

    /// The last position handed out by [`Ledger::commit_position`].
    pub fn committed(&self) -> Option<i64> {
        self.committed
    }

    /// Entries received and not finished (in flight or waiting behind their key).
    pub fn unfinished(&self) -> usize {
        self.key_of.len()
    }

    pub fn is_idle(&self) -> bool {
        self.key_of.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn commits_only_below_the_lowest_unfinished() {
        let mut l = Ledger::new();
        assert!(l.receive(10, "a").unwrap());
        assert!(l.receive(11, "b").unwrap());
        assert!(!l.receive(12, "a").unwrap(), "second version of a waits");
        l.receive_done(13).unwrap();
        assert_eq!(l.finish(11).unwrap(), None);
        assert_eq!(l.commit_position(), None, "10 is unfinished");
        assert_eq!(
            l.finish(10).unwrap(),
            Some(12),
            "a's next version may start"
        );
        assert_eq!(l.commit_position(), Some(12));
        assert_eq!(l.finish(12).unwrap(), None);
        assert_eq!(l.commit_position(), Some(14));
        assert_eq!(l.commit_position(), None);
        assert!(l.is_idle());
        assert_eq!(
            l.receive(5, "x"),
            Err(LedgerError::OutOfOrder {
                offset: 5,
                last: 13
            })
        );
        assert_eq!(l.finish(99), Err(LedgerError::NotInFlight(99)));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Receive(u8, bool),
        Finish(usize),
        Commit,
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        prop::collection::vec(
            prop_oneof![
                3 => (0u8..4, prop::bool::weighted(0.1)).prop_map(|(k, m)| Op::Receive(k, m)),
                3 => any::<usize>().prop_map(Op::Finish),
                1 => Just(Op::Commit),
            ],
            1..200,
        )
    }

    proptest! {
        /// Against a simple model: no two entries of a key in flight, a key's entries start in
        /// offset order, no commit past an unfinished entry, and once everything finished the
        /// commit reaches the end.
        #[test]
        fn model(ops in ops(), gaps in prop::collection::vec(1i64..3, 200)) {
            let mut l = Ledger::new();
            let mut next_offset = 100i64;
            let mut running: Vec<(i64, u8)> = Vec::new();
            let mut unfinished: BTreeSet<i64> = BTreeSet::new();
            let mut started: HashMap<u8, Vec<i64>> = HashMap::new();
            let mut received: HashMap<u8, Vec<i64>> = HashMap::new();
            let mut committed = 0i64;
            let mut last = 0i64;
            let mut start = |o: i64, k: u8, running: &mut Vec<(i64, u8)>| {
                assert!(!running.iter().any(|(_, rk)| *rk == k), "two entries of key {k} in flight");
                running.push((o, k));
                started.entry(k).or_default().push(o);
            };
            for (i, op) in ops.iter().enumerate() {
                match op {
                    Op::Receive(k, malformed) => {
                        let o = next_offset;
                        next_offset += gaps[i % gaps.len()];
                        last = o;
                        if *malformed {
                            l.receive_done(o).unwrap();
                        } else {
                            unfinished.insert(o);
                            received.entry(*k).or_default().push(o);
                            if l.receive(o, &k.to_string()).unwrap() {
                                start(o, *k, &mut running);
                            }
                        }
                    }
                    Op::Finish(pick) => {
                        if running.is_empty() { continue; }
                        let (o, k) = running.remove(pick % running.len());
                        unfinished.remove(&o);
                        if let Some(n) = l.finish(o).unwrap() {
                            start(n, k, &mut running);
                        }
                    }
                    Op::Commit => {
                        if let Some(p) = l.commit_position() {
                            prop_assert!(p > committed, "commit moves forward");
                            if let Some(low) = unfinished.iter().next() {
                                prop_assert!(p <= *low, "committed {} past unfinished {}", p, low);
                            }
                            committed = p;
                        }
                    }
                }
            }
            // Drain: finish everything still running.
            while let Some((o, k)) = running.pop() {
                unfinished.remove(&o);
                if let Some(n) = l.finish(o).unwrap() {
                    start(n, k, &mut running);
                }
            }
            prop_assert!(l.is_idle());
            prop_assert!(unfinished.is_empty());
            for (k, offs) in &received {
                prop_assert_eq!(started.get(k), Some(offs), "key {} started in offset order, each once", k);
            }
            if last > 0 {
                if let Some(p) = l.commit_position() { committed = p; }
                prop_assert_eq!(committed, last + 1);
            }
        }
    }
}
