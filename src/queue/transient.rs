//! Transient sources: which versions every site they must reach holds, read from the status
//! topic, and the garbage-collection topic's records that say so.
//!
//! The aggregation is kept in memory and bounded: a version is open from its first status
//! record until every site it must reach has reported it COMPLETED (a later FAILED at a site
//! undoes that site's completion). The status topic's offset committed for a partition is
//! the first record of its oldest open version, so a restart reads again what an open
//! version needs. At the bound, the oldest open version is given up: it stays at the source
//! (never deleted without proof), counted, and the commit moves on.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::codec::{Status, StatusEvent};

/// A version every site it must reach holds: delete it from the source once `due_ms` (Unix
/// milliseconds) has passed, after checking again that each site holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GcRecord {
    pub v: u32,
    pub bucket: String,
    pub key: String,
    pub version_id: String,
    pub sites: Vec<String>,
    pub due_ms: u64,
}

impl GcRecord {
    pub fn kafka_key(&self) -> String {
        format!("{}/{}", self.bucket, self.key)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a gc record serializes")
    }

    pub fn decode(b: &[u8]) -> Result<Self, String> {
        let r: Self = serde_json::from_slice(b).map_err(|e| e.to_string())?;
        if r.v != 1 || r.bucket.is_empty() || r.key.is_empty() || r.sites.is_empty() {
            return Err("not a gc record (v 1, a bucket, a key and sites)".into());
        }
        Ok(r)
    }
}

/// A version whose statuses are not all COMPLETED yet.
#[derive(Debug)]
struct Open {
    required: BTreeSet<String>,
    completed: BTreeSet<String>,
    partition: i32,
    first_offset: i64,
    since: Instant,
    /// Its place in the order versions were opened (`Aggregator::by_age`).
    seq: u64,
}

type VersionKey = (String, String, String);

/// What the aggregation says of a status record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Aggregated {
    /// Not for a transient bucket, or it says nothing new.
    Nothing,
    /// Waiting for other sites.
    Open,
    /// Every site it must reach reported it COMPLETED: its sites.
    Complete(Vec<String>),
}

/// The versions of transient buckets not yet COMPLETED everywhere.
#[derive(Debug)]
pub struct Aggregator {
    open: HashMap<VersionKey, Open>,
    /// Partition -> first offsets of its open versions.
    firsts: BTreeMap<i32, BTreeSet<i64>>,
    /// Partition -> the last offset read.
    read: BTreeMap<i32, i64>,
    /// Open versions, oldest first (what the bound gives up first).
    by_age: BTreeMap<u64, VersionKey>,
    next_seq: u64,
    max_open: usize,
    /// Versions given up at the bound (they stay at the source).
    pub given_up: u64,
}

impl Aggregator {
    pub fn new(max_open: usize) -> Self {
        Self {
            open: HashMap::new(),
            firsts: BTreeMap::new(),
            read: BTreeMap::new(),
            by_age: BTreeMap::new(),
            next_seq: 0,
            max_open: max_open.max(1),
            given_up: 0,
        }
    }

    /// A record read at `partition`/`offset` that is not of a transient bucket.
    pub fn skip(&mut self, partition: i32, offset: i64) -> Aggregated {
        self.read.insert(partition, offset);
        Aggregated::Nothing
    }

    /// Takes one status record (of a transient bucket) read at `partition`/`offset`.
    pub fn status(&mut self, partition: i32, offset: i64, ev: &StatusEvent) -> Aggregated {
        self.read.insert(partition, offset);
        if ev.sites.is_empty() || ev.status == Status::Pending {
            // A record that does not name the sites (an older worker) proves nothing.
            return Aggregated::Nothing;
        }
        let k = (ev.bucket.clone(), ev.key.clone(), ev.version_id.clone());
        if !self.open.contains_key(&k) {
            if ev.status != Status::Completed {
                return Aggregated::Nothing;
            }
            self.make_room();
            self.firsts.entry(partition).or_default().insert(offset);
            self.next_seq += 1;
            self.by_age.insert(self.next_seq, k.clone());
            let o = Open {
                seq: self.next_seq,
                required: ev.sites.iter().cloned().collect(),
                completed: BTreeSet::new(),
                partition,
                first_offset: offset,
                since: Instant::now(),
            };
            self.open.insert(k.clone(), o);
        }
        let o = self.open.get_mut(&k).expect("inserted above");
        // Every record names every site; should one name fewer, the union is required.
        o.required.extend(ev.sites.iter().cloned());
        match ev.status {
            Status::Completed => o.completed.insert(ev.site.clone()),
            _ => o.completed.remove(&ev.site),
        };
        if !o.required.is_subset(&o.completed) {
            return Aggregated::Open;
        }
        let o = self.close(&k).expect("open");
        Aggregated::Complete(o.required.into_iter().collect())
    }

    fn close(&mut self, k: &VersionKey) -> Option<Open> {
        let o = self.open.remove(k)?;
        self.by_age.remove(&o.seq);
        if let Some(f) = self.firsts.get_mut(&o.partition) {
            f.remove(&o.first_offset);
        }
        Some(o)
    }

    /// At the bound: gives up the oldest open version.
    fn make_room(&mut self) {
        while self.open.len() >= self.max_open {
            let oldest = self.by_age.first_key_value().map(|(_, k)| k.clone());
            let Some(k) = oldest else { return };
            self.close(&k);
            self.given_up += 1;
        }
    }

    /// The offset to commit for `partition`: its oldest open version's first record, else
    /// the record after the last one read.
    pub fn commit_point(&self, partition: i32) -> Option<i64> {
        let first = self.firsts.get(&partition).and_then(|f| f.first().copied());
        first.or_else(|| self.read.get(&partition).map(|o| o + 1))
    }

    /// Partitions read so far.
    pub fn partitions(&self) -> Vec<i32> {
        self.read.keys().copied().collect()
    }

    /// Forgets what was read of partitions this member no longer owns (their next owner
    /// reads them again from the committed offset).
    pub fn revoke(&mut self, partitions: &[i32]) {
        let gone: Vec<VersionKey> = (self.open.iter())
            .filter(|(_, o)| partitions.contains(&o.partition))
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            self.close(&k);
        }
        for p in partitions {
            self.read.remove(p);
            self.firsts.remove(p);
        }
    }

    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// How long the oldest open version has waited.
    pub fn oldest_wait(&self) -> Option<std::time::Duration> {
        let (_, k) = self.by_age.first_key_value()?;
        self.open.get(k).map(|o| o.since.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::codec::Durations;

    fn ev(key: &str, site: &str, status: Status) -> StatusEvent {
        StatusEvent {
            v: 1,
            bucket: "b".into(),
            key: key.into(),
            version_id: "v1".into(),
            site: site.into(),
            status,
            bytes: 1,
            durations: Durations {
                queue_wait_ms: 0,
                transfer_ms: 0,
                in_topic_ms: None,
            },
            error: None,
            attempt: 0,
            at: "2026-12-03T00:00:00Z".into(),
            latency_ms: None,
            reason: None,
            sites: vec!["a".into(), "b".into()],
        }
    }

    #[test]
    fn complete_once_every_site_reported_completed() {
        let mut a = Aggregator::new(10);
        assert_eq!(
            a.status(0, 5, &ev("k", "a", Status::Completed)),
            Aggregated::Open
        );
        assert_eq!(
            a.commit_point(0),
            Some(5),
            "held at the open version's first record"
        );
        assert_eq!(
            a.status(0, 6, &ev("x", "a", Status::Failed)),
            Aggregated::Nothing
        );
        let done = a.status(0, 7, &ev("k", "b", Status::Completed));
        assert_eq!(done, Aggregated::Complete(vec!["a".into(), "b".into()]));
        assert_eq!(a.commit_point(0), Some(8));
        assert_eq!(a.open_count(), 0);
    }

    #[test]
    fn a_failure_after_a_completion_undoes_it() {
        let mut a = Aggregator::new(10);
        a.status(0, 1, &ev("k", "a", Status::Completed));
        a.status(0, 2, &ev("k", "a", Status::Failed));
        assert_eq!(
            a.status(0, 3, &ev("k", "b", Status::Completed)),
            Aggregated::Open
        );
        let done = a.status(0, 4, &ev("k", "a", Status::Completed));
        assert!(matches!(done, Aggregated::Complete(_)));
    }

    #[test]
    fn a_record_naming_fewer_sites_does_not_shrink_what_is_required() {
        let mut a = Aggregator::new(10);
        a.status(0, 1, &ev("k", "a", Status::Completed));
        let mut only_b = ev("k", "b", Status::Completed);
        only_b.sites = vec!["b".into()];
        let both = Aggregated::Complete(vec!["a".into(), "b".into()]);
        assert_eq!(a.status(0, 2, &only_b), both);
    }

    #[test]
    fn records_without_sites_prove_nothing() {
        let mut a = Aggregator::new(10);
        let mut e = ev("k", "a", Status::Completed);
        e.sites.clear();
        assert_eq!(a.status(0, 1, &e), Aggregated::Nothing);
        assert_eq!(a.commit_point(0), Some(2));
    }

    #[test]
    fn bounded_by_giving_up_the_oldest() {
        let mut a = Aggregator::new(2);
        a.status(0, 1, &ev("k1", "a", Status::Completed));
        a.status(0, 2, &ev("k2", "a", Status::Completed));
        a.status(1, 3, &ev("k3", "a", Status::Completed));
        assert_eq!((a.open_count(), a.given_up), (2, 1));
        assert_eq!(
            a.commit_point(0),
            Some(2),
            "k1 given up: the commit moves on"
        );
        // k1 completing now is a new open version, not a deletion.
        assert_eq!(
            a.status(0, 4, &ev("k1", "b", Status::Completed)),
            Aggregated::Open
        );
        a.revoke(&[0]);
        assert_eq!(a.commit_point(0), None);
        assert_eq!(a.open_count(), 1);
    }

    #[test]
    fn gc_records_checked() {
        let r = GcRecord {
            v: 1,
            bucket: "b".into(),
            key: "k".into(),
            version_id: "v".into(),
            sites: vec!["a".into()],
            due_ms: 5,
        };
        assert_eq!(GcRecord::decode(&r.encode()), Ok(r));
        assert!(GcRecord::decode(
            br#"{"v":1,"bucket":"b","key":"k","versionId":"v","sites":[],"dueMs":1}"#
        )
        .is_err());
    }
}
