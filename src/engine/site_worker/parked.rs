//! Bounds the entries parked behind an earlier version of their key: a partition holding
//! [`PARKED_MAX`] of them (a hot key behind a slow or failing head) is paused, so it cannot
//! fill memory, and resumed once half of them have run; other partitions go on. Resuming
//! the site, or intake after busy slots, leaves such a partition paused.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use rdkafka::consumer::Consumer as _;
use rdkafka::TopicPartitionList;

use super::Shared;

/// Entries a partition may hold parked (about 1 KiB each).
pub const PARKED_MAX: usize = 1000;

/// Partitions paused for holding too many parked entries.
pub type Full = std::cell::RefCell<BTreeSet<i32>>;

/// An entry of `partition` was parked: past the bound, the partition is paused.
pub fn parked(sh: &Shared, partition: i32) {
    let n = sh.partitions.borrow().parked(partition);
    note(sh);
    if n >= PARKED_MAX && sh.full.borrow_mut().insert(partition) {
        tracing::info!(
            partition,
            parked = n,
            "partition paused: too many entries wait behind an earlier version of their key"
        );
        let tpl = one(sh, partition);
        if let Err(e) = sh.consumer.pause(&tpl) {
            tracing::warn!(partition, error = %e, "pausing a full partition failed");
        }
    }
}

/// A parked entry of `partition` started: at half the bound, the partition resumes (now if
/// intake is open, else with it).
pub fn started(sh: &Shared, partition: i32) {
    let n = sh.partitions.borrow().parked(partition);
    note(sh);
    if n > PARKED_MAX / 2 || !sh.full.borrow_mut().remove(&partition) {
        return;
    }
    tracing::info!(partition, parked = n, "partition resumed");
    let open = !sh.notes.paused.load(Ordering::SeqCst) && !sh.busy.get() && !sh.breaker.is_open();
    if open {
        if let Err(e) = sh.consumer.resume(&one(sh, partition)) {
            tracing::warn!(partition, error = %e, "resuming a partition failed");
        }
    }
}

/// The partitions of `assigned` that a resume may resume: not the full ones.
pub fn resumable(sh: &Shared, assigned: &TopicPartitionList) -> TopicPartitionList {
    let full = sh.full.borrow();
    let mut out = TopicPartitionList::new();
    for e in assigned.elements() {
        if !full.contains(&e.partition()) {
            out.add_partition(e.topic(), e.partition());
        }
    }
    out
}

fn one(sh: &Shared, partition: i32) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&sh.cfg.topics.replication, partition);
    tpl
}

/// Updates the shard's gauge of parked entries.
pub fn note(sh: &Shared) {
    let n = sh.partitions.borrow().parked_total() as u64;
    sh.parked_gauge.store(n, Ordering::Relaxed);
}
