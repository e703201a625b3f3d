//! Waiting lines of keys: which items of a key (site workers' entries, the populator's
//! changes) are out on replay topics, so that the key's later items wait behind them
//! instead of overtaking them (a version written after a later one would be superseded, and
//! missing at the destination).
//!
//! An entry that leaves for a replay topic gets a ticket (its place in its key's line, kept
//! across replays). When an entry of the key is about to run, it runs only if no entry with
//! an earlier ticket is out; otherwise it joins the line, sent to the replay topic where the
//! line's head waits (behind it, since a topic partition is first in, first out). Pure
//! bookkeeping: the caller produces to the topics. Lost with its owner (a restart, a
//! rebalance): a replayed item then runs when it comes back, and the workers' ordering
//! checks keep the destination from going stale.

use std::collections::{BTreeMap, HashMap};

/// What to do with an entry about to run.
#[derive(Debug, PartialEq, Eq)]
pub enum Turn {
    /// Nothing of its key waits before it: run it.
    Run,
    /// It joins its key's line with this ticket, on the replay topic of `step`.
    Wait { ticket: u64, step: u32 },
}

/// The lines of one partition's keys: for each key with entries out on the replay topics,
/// their tickets and the step each was sent to.
#[derive(Default)]
pub struct Lines {
    keys: HashMap<String, BTreeMap<u64, u32>>,
    /// The highest ticket seen: a new ticket is above every ticket of the partition.
    last: u64,
    waiting: usize,
}

impl Lines {
    /// An entry of `key` (with its ticket when it comes back from a replay topic) is about
    /// to run; `now` (Unix nanoseconds) seeds a new ticket. A returned entry leaves the line
    /// first; a `Wait` answer has already put it (back) in.
    pub fn turn(&mut self, key: &str, ticket: Option<u64>, now: u64) -> Turn {
        if let Some(t) = ticket {
            self.leave(key, t);
        }
        let Some((&head, &step)) = self.keys.get(key).and_then(|l| l.first_key_value()) else {
            return Turn::Run;
        };
        let ticket = match ticket {
            Some(t) if t < head => return Turn::Run,
            Some(t) => t,
            None => self.ticket(now),
        };
        self.wait(key, ticket, step);
        Turn::Wait { ticket, step }
    }

    /// A new ticket, above every ticket seen: a key's new entry goes behind its line.
    pub fn ticket(&mut self, now: u64) -> u64 {
        self.last = now.max(self.last + 1);
        self.last
    }

    /// The entry with `ticket` is out on the replay topic of `step`.
    pub fn wait(&mut self, key: &str, ticket: u64, step: u32) {
        self.last = self.last.max(ticket);
        let line = self.keys.entry(key.to_string()).or_default();
        if line.insert(ticket, step).is_none() {
            self.waiting += 1;
        }
    }

    fn leave(&mut self, key: &str, ticket: u64) {
        let Some(line) = self.keys.get_mut(key) else {
            return;
        };
        if line.remove(&ticket).is_some() {
            self.waiting -= 1;
        }
        if line.is_empty() {
            self.keys.remove(key);
        }
    }

    /// Entries out on the replay topics.
    pub fn waiting(&self) -> usize {
        self.waiting
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_with_nothing_out_runs() {
        let mut l = Lines::default();
        assert_eq!(l.turn("k", None, 10), Turn::Run);
        assert_eq!(l.turn("k", Some(3), 10), Turn::Run);
        assert_eq!(l.waiting(), 0);
    }

    /// v1 fails and goes out at step 0; v2 and v3 arrive and queue behind it, at step 0.
    /// v1 comes back and fails again (step 1): v2, back from step 0, goes behind it at
    /// step 1, and runs only once v1 is back for good; v3 then runs after v2.
    #[test]
    fn later_entries_wait_behind_the_head_until_it_is_done() {
        let mut l = Lines::default();
        assert_eq!(l.turn("k", None, 100), Turn::Run);
        let t1 = l.ticket(100);
        l.wait("k", t1, 0);
        let w2 = l.turn("k", None, 50);
        let Turn::Wait {
            ticket: t2,
            step: 0,
        } = w2
        else {
            panic!("{w2:?}")
        };
        let Turn::Wait {
            ticket: t3,
            step: 0,
        } = l.turn("k", None, 200)
        else {
            panic!()
        };
        assert!(t1 < t2 && t2 < t3, "{t1} {t2} {t3}");
        assert_eq!(l.turn("other", None, 1), Turn::Run, "other keys go on");
        // v1 back, fails again: step 1.
        assert_eq!(l.turn("k", Some(t1), 300), Turn::Run);
        l.wait("k", t1, 1);
        assert_eq!(
            l.turn("k", Some(t2), 300),
            Turn::Wait {
                ticket: t2,
                step: 1
            }
        );
        assert_eq!(
            l.turn("k", Some(t3), 300),
            Turn::Wait {
                ticket: t3,
                step: 1
            }
        );
        // v1 back and done; v2, then v3.
        assert_eq!(l.turn("k", Some(t1), 400), Turn::Run);
        assert_eq!(l.turn("k", Some(t2), 400), Turn::Run);
        assert_eq!(l.waiting(), 1);
        assert_eq!(l.turn("k", Some(t3), 400), Turn::Run);
        assert_eq!(l.waiting(), 0);
        assert!(l.keys.is_empty(), "an empty line is forgotten");
    }

    /// A returned entry whose ticket was issued elsewhere (a previous owner with a clock
    /// ahead) still keeps its place: new tickets go above it.
    #[test]
    fn new_tickets_go_above_tickets_from_elsewhere() {
        let mut l = Lines::default();
        assert_eq!(l.turn("k", Some(5_000), 10), Turn::Run);
        l.wait("k", 5_000, 2);
        let Turn::Wait { ticket, step } = l.turn("k", None, 10) else {
            panic!()
        };
        assert!(ticket > 5_000);
        assert_eq!(step, 2);
        // Coming back twice (a duplicate from the replayer) is harmless.
        assert_eq!(l.turn("k", Some(5_000), 10), Turn::Run);
        assert_eq!(l.turn("k", Some(5_000), 10), Turn::Run);
        assert_eq!(l.turn("k", Some(ticket), 10), Turn::Run);
        assert_eq!(l.waiting(), 0);
    }
}
