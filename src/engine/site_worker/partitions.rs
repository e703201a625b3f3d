//! The partitions a shard owns now: each one's offset ledger, the entries parked behind an
//! earlier version of their key, the entries of it running now, and its keys' waiting lines
//! (entries out on the replay topics, `lines`).
//!
//! A partition revoked and assigned again is a new generation: a late completion from the
//! old one finds a different generation and is ignored (the new owner replays the entry).
//! Each generation has a fence: once triggered (a revoked partition's drain deadline
//! passed), its entries' tasks are dropped where they stand, so a stale task never writes
//! after the new owner, nor records an outcome.

use std::collections::HashMap;

use super::inflight::{Entered, InFlight};
use crate::queue::ledger::{Ledger, LedgerError};
use crate::queue::lines::{Lines, Turn};
use crate::shard::Shutdown;

struct Partition<E> {
    ledger: Ledger,
    /// Entries waiting behind an earlier version of their key, by offset.
    parked: HashMap<i64, E>,
    running: InFlight,
    lines: Lines,
    generation: u64,
    /// Stops this generation's entries (see the module's header).
    fence: Shutdown,
}

/// What to do with a received entry.
#[derive(Debug, PartialEq, Eq)]
pub enum Received<E> {
    /// Start it now.
    Start(E),
    /// It waits behind an earlier version of its key.
    Parked,
}

/// Every partition of the shard, keyed by partition number.
pub struct Partitions<E> {
    map: HashMap<i32, Partition<E>>,
    generation: u64,
}

impl<E> Default for Partitions<E> {
    fn default() -> Self {
        Self {
            map: HashMap::new(),
            generation: 0,
        }
    }
}

impl<E> Partitions<E> {
    fn get(&mut self, partition: i32) -> &mut Partition<E> {
        let next = self.generation + 1;
        let p = self.map.entry(partition).or_insert_with(|| Partition {
            ledger: Ledger::new(),
            parked: HashMap::new(),
            running: InFlight::default(),
            lines: Lines::default(),
            generation: next,
            fence: Shutdown::new(),
        });
        if p.generation == next {
            self.generation = next;
        }
        p
    }

    /// The generation of `partition` (created when it is new).
    pub fn generation(&mut self, partition: i32) -> u64 {
        self.get(partition).generation
    }

    /// Records an entry of `key` received at `offset`.
    pub fn receive(
        &mut self,
        partition: i32,
        offset: i64,
        key: &str,
        entry: E,
    ) -> Result<Received<E>, LedgerError> {
        let p = self.get(partition);
        if p.ledger.receive(offset, key)? {
            Ok(Received::Start(entry))
        } else {
            p.parked.insert(offset, entry);
            Ok(Received::Parked)
        }
    }

    /// Records a message that needs no work here (malformed and recorded, or for other sites).
    pub fn pass(&mut self, partition: i32, offset: i64) -> Result<(), LedgerError> {
        self.get(partition).ledger.receive_done(offset)
    }

    /// Counts an entry of `partition` as running until the returned guard is dropped, and
    /// gives the fence its task must stop at.
    pub fn enter_fenced(&mut self, partition: i32) -> (Entered, Shutdown) {
        let p = self.get(partition);
        (p.running.enter(), p.fence.clone())
    }

    /// Stops the entries of `partitions` where they stand (their tasks are dropped).
    pub fn fence(&self, partitions: &[i32]) {
        for p in partitions.iter().filter_map(|p| self.map.get(p)) {
            p.fence.trigger();
        }
    }

    /// Entries of `partitions` running now, to wait on.
    pub fn running(&self, partitions: &[i32]) -> Vec<InFlight> {
        let of = |p: &i32| self.map.get(p).map(|p| p.running.clone());
        partitions.iter().filter_map(of).collect()
    }

    /// An entry finished (replicated, or its failure recorded). Returns the next entry of
    /// its key, which may start now; nothing when the partition changed generation since.
    pub fn finish(
        &mut self,
        partition: i32,
        offset: i64,
        generation: u64,
    ) -> Result<Option<(i64, E)>, LedgerError> {
        match self.map.get_mut(&partition) {
            Some(p) if p.generation == generation => {
                let next = p.ledger.finish(offset)?;
                Ok(next.and_then(|n| p.parked.remove(&n).map(|e| (n, e))))
            }
            _ => Ok(None),
        }
    }

    /// The position to commit for `partition`: when it moved, or (`again`) the last one, to
    /// send once more before the partition is released.
    pub fn commit_position(&mut self, partition: i32, again: bool) -> Option<i64> {
        let p = self.map.get_mut(&partition)?;
        let moved = p.ledger.commit_position();
        if again {
            moved.or(p.ledger.committed())
        } else {
            moved
        }
    }

    /// Whether an entry of `key` about to run may (see [`Lines::turn`]).
    pub fn turn(&mut self, partition: i32, key: &str, ticket: Option<u64>, now: u64) -> Turn {
        self.get(partition).lines.turn(key, ticket, now)
    }

    /// An entry of `key` failed and is out on the replay topic of `step`; its ticket (a new
    /// one when it has none yet).
    pub fn wait(
        &mut self,
        partition: i32,
        key: &str,
        ticket: Option<u64>,
        step: u32,
        now: u64,
    ) -> u64 {
        let lines = &mut self.get(partition).lines;
        let ticket = ticket.unwrap_or_else(|| lines.ticket(now));
        lines.wait(key, ticket, step);
        ticket
    }

    /// Entries of `partition` parked behind an earlier version of their key.
    pub fn parked(&self, partition: i32) -> usize {
        self.map.get(&partition).map_or(0, |p| p.parked.len())
    }

    /// Parked entries over the shard's partitions.
    pub fn parked_total(&self) -> usize {
        self.map.values().map(|p| p.parked.len()).sum()
    }

    /// Entries out on the replay topics, over the shard's partitions.
    pub fn waiting(&self) -> usize {
        self.map.values().map(|p| p.lines.waiting()).sum()
    }

    /// Forgets a released partition.
    pub fn remove(&mut self, partition: i32) {
        self.map.remove(&partition);
    }

    pub fn ids(&self) -> Vec<i32> {
        self.map.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_waits_behind_its_earlier_version_and_starts_after_it() {
        let mut ps = Partitions::default();
        let g = ps.generation(0);
        assert_eq!(
            ps.receive(0, 10, "b/k", "v1").unwrap(),
            Received::Start("v1")
        );
        assert_eq!(ps.receive(0, 11, "b/k", "v2").unwrap(), Received::Parked);
        assert_eq!(
            ps.receive(0, 12, "b/other", "o").unwrap(),
            Received::Start("o")
        );
        assert_eq!(ps.commit_position(0, false), None);
        assert_eq!(ps.finish(0, 10, g).unwrap(), Some((11, "v2")));
        assert_eq!(ps.commit_position(0, false), Some(11));
        assert_eq!(ps.finish(0, 12, g).unwrap(), None);
        assert_eq!(ps.commit_position(0, false), None, "11 still runs");
        assert_eq!(ps.finish(0, 11, g).unwrap(), None);
        assert_eq!(ps.commit_position(0, false), Some(13));
        assert_eq!(
            ps.commit_position(0, true),
            Some(13),
            "sent again on release"
        );
    }

    #[test]
    fn a_late_completion_of_an_old_generation_is_ignored() {
        let mut ps = Partitions::default();
        let old = ps.generation(3);
        ps.receive(3, 5, "b/k", ()).unwrap();
        ps.remove(3);
        let new = ps.generation(3);
        assert_ne!(old, new);
        ps.receive(3, 5, "b/k", ()).unwrap();
        assert_eq!(ps.finish(3, 5, old).unwrap(), None);
        assert_eq!(
            ps.commit_position(3, false),
            None,
            "the old owner's finish moved nothing"
        );
        assert_eq!(ps.finish(3, 5, new).unwrap(), None);
        assert_eq!(ps.commit_position(3, false), Some(6));
    }

    #[test]
    fn passed_messages_are_committed_past_and_running_entries_are_counted() {
        let mut ps: Partitions<()> = Partitions::default();
        ps.pass(1, 0).unwrap();
        assert_eq!(ps.commit_position(1, false), Some(1));
        assert!(ps.pass(1, 0).is_err(), "offsets must increase");
        let (guard, fence) = ps.enter_fenced(1);
        assert_eq!(
            ps.running(&[1, 2]).iter().map(|r| r.count()).sum::<usize>(),
            1
        );
        drop(guard);
        assert_eq!(ps.running(&[1]).iter().map(|r| r.count()).sum::<usize>(), 0);
        assert!(!fence.is_set());
        ps.fence(&[1]);
        assert!(fence.is_set(), "a task of partition 1 stops");
        assert_eq!(ps.ids(), vec![1]);
    }
}
