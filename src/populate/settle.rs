//! Before a missing-only scan, what is already queued is let through first, so that the
//! scan never enqueues a version still queued or in flight for a site (a second copy of it,
//! behind the first, would cost a HEAD and could follow a newer version of its key).
//!
//! How: the events topic's end is recorded and the populator's group must pass it (every
//! event read before the scan has become entries); then the replication topic's end is
//! recorded and each site's group must pass it (every entry queued before the scan has
//! finished: copied, superseded or recorded as failed). A site whose group stops moving
//! (paused, down) is left out of this scan: its queue already holds what it misses, and the
//! next scan looks again. When events flow (the events topic has held any), versions
//! written after the scan started are left to their events: this scan could otherwise
//! enqueue one whose event is already on its way.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::worker::{PopulateConfig, PopulateError};
use crate::queue::codec::{FailedRecord, ReplicationEntry};
use crate::queue::kafka::QueueError;
use crate::queue::lag::{self, GroupReader, Passed};
use crate::shard::Shutdown;

/// How long a group may stand still before the scan stops waiting for it.
pub const STALL: Duration = Duration::from_secs(30);

/// The wait of a group that stood still at the last scan.
const RECHECK: Duration = Duration::from_secs(5);

/// What a missing-only scan may rely on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    /// When the scan started (Unix seconds), if events flow (the events topic has held
    /// any): versions modified in that second or later are then left to their events.
    pub events_since: Option<i64>,
    /// Sites whose queue held nothing from before the scan: the scan checks these.
    pub sites: BTreeSet<String>,
    /// Sites left out: their queue did not drain (name, entries still queued).
    pub left_out: Vec<(String, u64)>,
    /// Versions FAILED at a site, or waiting on its replay topics
    /// (`bucket/key/versionId/site`): the scan does not enqueue them again.
    pub outstanding: HashSet<String>,
}

impl Settled {
    /// Every site, with no wait and no events expected (unit tests).
    pub fn now(sites: impl IntoIterator<Item = String>) -> Self {
        Self {
            events_since: None,
            sites: sites.into_iter().collect(),
            left_out: Vec::new(),
            outstanding: HashSet::new(),
        }
    }

    /// Whether `site` has this version FAILED, or waiting for a replay.
    pub fn outstanding(&self, bucket: &str, key: &str, version_id: &str, site: &str) -> bool {
        !self.outstanding.is_empty()
            && self
                .outstanding
                .contains(&format!("{bucket}/{key}/{version_id}/{site}"))
    }

    /// Whether a version last modified at `secs` is left to its event.
    pub fn too_recent(&self, secs: Option<i64>) -> bool {
        match (self.events_since, secs) {
            (Some(since), Some(s)) => s >= since,
            _ => false,
        }
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn kafka_err(topic: &str) -> impl Fn(rdkafka::error::KafkaError) -> PopulateError + '_ {
    move |error| {
        PopulateError::Queue(QueueError::Positions {
            topic: topic.to_string(),
            error,
        })
    }
}

/// The groups a missing-only scan waits for: the populator's on the events topic, and each
/// site's on the replication topic. Made once, asked before every scan.
pub struct Queues {
    brokers: String,
    failed_topic: String,
    events: GroupReader,
    sites: Vec<(String, GroupReader)>,
    /// Each site's replay groups on its replay topics (one reader per step).
    replays: Vec<(String, Vec<GroupReader>)>,
    /// Sites left out of the last scan: the next one gives them a short wait only (they
    /// are waited for again as soon as they move).
    stalled: std::cell::RefCell<BTreeSet<String>>,
}

impl Queues {
    pub fn new(cfg: &PopulateConfig) -> Result<Self, PopulateError> {
        let (events, replication) = (&cfg.topics.events, &cfg.topics.replication);
        let populator =
            GroupReader::new(&cfg.brokers, events, &cfg.group).map_err(kafka_err(events))?;
        let (mut sites, mut replays) = (Vec::new(), Vec::new());
        for (site, target) in &cfg.sites {
            let r = GroupReader::new(&cfg.brokers, replication, &target.group)
                .map_err(kafka_err(replication))?;
            sites.push((site.clone(), r));
            let mut steps = Vec::new();
            for step in 0..cfg.schedule.delays.len() {
                let topic = cfg.topics.replay(site, step);
                let r = GroupReader::new(&cfg.brokers, &topic, &target.replay_group)
                    .map_err(kafka_err(replication))?;
                steps.push(r);
            }
            replays.push((site.clone(), steps));
        }
        Ok(Self {
            brokers: cfg.brokers.clone(),
            failed_topic: cfg.topics.failed.clone(),
            events: populator,
            sites,
            replays,
            stalled: Default::default(),
        })
    }

    /// Waits, as described above, until the scan may start. Progress is logged.
    pub async fn settle(
        &self,
        stall: Duration,
        shutdown: &Shutdown,
    ) -> Result<Settled, PopulateError> {
        let events_since = self.events_read(stall, shutdown).await?;
        let mut settled = Settled {
            events_since,
            ..Settled::now([])
        };
        let Some((_, first)) = self.sites.first() else {
            return Ok(settled);
        };
        let topic = first.topic();
        let ends = lag::ends(first).await.map_err(kafka_err(topic))?;
        let waits = self.sites.iter().map(|(site, r)| {
            let known = self.stalled.borrow().contains(site);
            let stall = if known { RECHECK } else { stall };
            lag::wait_past(r, &ends, stall, shutdown)
        });
        let passed = futures_util::future::join_all(waits).await;
        for ((site, _), p) in self.sites.iter().zip(passed) {
            let p = p.map_err(kafka_err(topic))?;
            let mut stalled = self.stalled.borrow_mut();
            if matches!(p, Passed::Stalled { .. }) {
                stalled.insert(site.clone());
            } else {
                stalled.remove(site);
            }
            match p {
                Passed::Yes => {
                    settled.sites.insert(site.clone());
                }
                Passed::Stalled { behind } => {
                    tracing::warn!(site = %site, queued = behind, "site left out of this scan: its queue is not moving (paused or down?); what it misses is queued or found by the next scan");
                    settled.left_out.push((site.clone(), behind));
                }
                Passed::Cancelled => return Err(PopulateError::Scan("shut down".into())),
            }
        }
        settled.outstanding = self.outstanding().await?;
        Ok(settled)
    }

    /// The versions FAILED at a site (the failed topic's failed records) or waiting on its
    /// replay topics (what its replay group has not committed), read off the executor.
    pub async fn outstanding(&self) -> Result<HashSet<String>, PopulateError> {
        let (brokers, failed) = (self.brokers.clone(), self.failed_topic.clone());
        let replays = self.replays.clone();
        let read = move || -> Result<HashSet<String>, rdkafka::error::KafkaError> {
            // A group that never commits: its uncommitted records are the whole topic. The
            // latest record of a key decides (a tombstone clears it).
            let reader = GroupReader::new(&brokers, &failed, "backbeat-scan-failed-reader")?;
            let mut keys = HashSet::new();
            reader.uncommitted(&brokers, |k, v| {
                let is_failed = v.is_some_and(|v| {
                    serde_json::from_slice::<FailedRecord>(v).is_ok_and(|r| r.kind == "failed")
                });
                if is_failed {
                    keys.insert(k);
                } else {
                    keys.remove(&k);
                }
            })?;
            for (site, steps) in &replays {
                for r in steps {
                    r.uncommitted(&brokers, |_, v| {
                        if let Some(e) = v.and_then(|v| ReplicationEntry::decode(v).ok()) {
                            keys.insert(format!("{}/{}/{}/{site}", e.bucket, e.key, e.version_id));
                        }
                    })?;
                }
            }
            Ok(keys)
        };
        let topic = self.failed_topic.clone();
        glommio::executor()
            .spawn_blocking(read)
            .await
            .map_err(kafka_err(&topic))
    }

    /// Waits until the populator has read the events there are now (or stopped moving).
    /// Returns when the scan started, if events flow.
    async fn events_read(
        &self,
        stall: Duration,
        shutdown: &Shutdown,
    ) -> Result<Option<i64>, PopulateError> {
        let started = unix_now();
        let topic = self.events.topic();
        let ends = lag::ends(&self.events).await.map_err(kafka_err(topic))?;
        let passed = lag::wait_past(&self.events, &ends, stall, shutdown).await;
        match passed.map_err(kafka_err(topic))? {
            Passed::Yes => {}
            Passed::Stalled { behind } => tracing::warn!(
                behind,
                "the populator has not read {behind} events and is not moving: versions whose events are still unread may be enqueued twice (harmless: the worker skips the second)"
            ),
            Passed::Cancelled => return Err(PopulateError::Scan("shut down".into())),
        }
        Ok(ends.values().any(|e| *e > 0).then_some(started))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_the_scan_start_are_left_to_their_events_only_when_events_flow() {
        let mut s = Settled::now(["a".to_string()]);
        assert!(!s.too_recent(Some(i64::MAX)), "no events: nothing is left");
        s.events_since = Some(100);
        assert!(s.too_recent(Some(100)) && s.too_recent(Some(101)));
        assert!(!s.too_recent(Some(99)));
        assert!(!s.too_recent(None), "an unknown time is never left");
    }
}
