//! Delayed replay through Kafka: a schedule of delays (one replay topic per step, the last
//! step repeating, until a patience is spent), and the replayer, a member of a replay group
//! that consumes replay topics and sends each record back to its topic once it is due.
//! Site workers replay entries with it (back to the replication topic), the populator
//! changes it could not turn into entries (back to the events topic).
//!
//! A topic's records come due in the order they were written (one delay per topic), so a
//! partition whose first record is not due yet is paused until it is: at most one record per
//! partition is held in memory. A record's replay offset is committed only once it is back
//! on its topic; a crash or a rebalance sends it back twice at worst, which the consumers'
//! checks make harmless.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rdkafka::consumer::{CommitMode, Consumer as _, DefaultConsumerContext};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::codec::Replay;
use super::kafka::{self, Membership, Producer, QueueError};
use crate::retry::{retry, RetryPolicy};
use crate::shard::Shutdown;

type Consumer = kafka::Consumer<DefaultConsumerContext>;

pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// A delay schedule: the delay of each step (one replay topic each; the last one repeats),
/// and how long an item may keep failing. No delays: no replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub delays: Vec<Duration>,
    pub patience: Duration,
}

impl Schedule {
    /// Where an item failing now goes next (`prior`: its place the last time it failed, if
    /// it did): the step and since when it fails, or `None` when `patience` (at most the
    /// schedule's) is spent or there is no schedule.
    pub fn next(
        &self,
        prior: Option<&Replay>,
        patience: Duration,
        now_ms: u64,
    ) -> Option<(u32, u64)> {
        if self.delays.is_empty() {
            return None;
        }
        let prior = prior.filter(|r| r.failed_since_ms > 0);
        let since = prior.map_or(now_ms, |r| r.failed_since_ms);
        let patience = patience.min(self.patience);
        if Duration::from_millis(now_ms.saturating_sub(since)) >= patience {
            return None;
        }
        let last = self.delays.len() as u32 - 1;
        Some((prior.map_or(0, |r| (r.step + 1).min(last)), since))
    }

    /// The place of an item leaving for `step`, due after that step's delay.
    pub fn place(&self, ticket: u64, step: u32, failed_since_ms: u64) -> Replay {
        let last = self.delays.len().saturating_sub(1);
        let delay = self.delays.get((step as usize).min(last)).copied();
        Replay {
            ticket,
            step,
            due_ms: unix_ms(SystemTime::now() + delay.unwrap_or_default()),
            failed_since_ms,
        }
    }
}

/// What a replayer consumes and where it sends records back.
#[derive(Clone)]
pub struct ReplayerConfig {
    pub brokers: String,
    pub group: String,
    pub membership: Membership,
    /// The replay topics: a regular expression (librdkafka's `^...`) matching every step's
    /// topic, so that records on steps a shorter schedule no longer has still come back.
    pub topics: String,
    /// Where due records go back.
    pub back: String,
    /// When a record is due (Unix milliseconds), or why it cannot be read.
    pub due: fn(&[u8]) -> Result<u64, String>,
}

/// A record taken off a replay topic, not due yet.
struct Held {
    offset: i64,
    due_ms: u64,
    key: String,
    payload: Vec<u8>,
    /// Its signature checks (always, without a signing key). An untrusted record is sent
    /// back at once and unsigned, so whoever acts on it sets it aside with the reason.
    trusted: bool,
}

/// The subscription pattern of the topics named `base` followed by a step number.
pub fn steps_pattern(base: &str) -> String {
    let mut out = String::from("^");
    for c in base.chars() {
        if !c.is_ascii_alphanumeric() && c != '_' && c != '-' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push_str("[0-9]+$");
    out
}

/// The shortest fetch wait of a replayer's consumer (`kafka.fetch_wait_ms` when longer).
/// Its records are due seconds or more after they were written; a record can go back up
/// to about this much after it is due (a resumed partition's next fetch follows the one
/// in flight), while a consumer that asks an idle broker every few milliseconds costs the
/// broker CPU (a replay topic is idle almost always).
pub const FETCH_WAIT_MS: u32 = 500;

/// Runs a replayer until shutdown.
pub async fn run(
    cfg: ReplayerConfig,
    producer: Producer,
    shutdown: Shutdown,
) -> Result<(), QueueError> {
    let group = &cfg.group;
    let membership = Membership {
        fetch_wait_ms: cfg.membership.fetch_wait_ms.max(FETCH_WAIT_MS),
        ..cfg.membership
    };
    let consumer = kafka::consumer(&cfg.brokers, group, &membership, DefaultConsumerContext)?;
    consumer
        .subscribe(&[cfg.topics.as_str()])
        .map_err(QueueError::Consume)?;
    let consumer = Arc::new(consumer);
    let r = Replayer {
        cfg: &cfg,
        consumer: &consumer,
        producer: &producer,
        shutdown: &shutdown,
    };
    let mut held: HashMap<(String, i32), Held> = HashMap::new();
    while !shutdown.is_set() {
        r.drop_unowned(&mut held);
        r.release_due(&mut held).await;
        let next = held.values().map(|h| h.due_ms).min();
        let now = unix_ms(SystemTime::now());
        let wait = next.map_or(500, |d| d.saturating_sub(now).clamp(1, 500));
        match kafka::recv_within(&consumer, Duration::from_millis(wait)).await {
            Some(Ok(m)) => {
                let tp = (m.topic().to_string(), m.partition());
                let h = Held {
                    offset: m.offset(),
                    due_ms: 0,
                    key: m
                        .key()
                        .map(|k| String::from_utf8_lossy(k).into_owned())
                        .unwrap_or_default(),
                    payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                    trusted: super::signing::check(&m).is_ok(),
                };
                drop(m);
                r.take(&mut held, tp, h).await;
            }
            Some(Err(e)) => tracing::warn!(error = %e, "replay topics: consume error"),
            None => {}
        }
    }
    // Leaving the group and closing the consumer wait on the brokers: off the executor.
    let _ = glommio::executor()
        .spawn_blocking(move || {
            consumer.unsubscribe();
            drop(consumer);
        })
        .await;
    Ok(())
}

struct Replayer<'a> {
    cfg: &'a ReplayerConfig,
    consumer: &'a Arc<Consumer>,
    producer: &'a Producer,
    shutdown: &'a Shutdown,
}

impl Replayer<'_> {
    /// A message off a replay topic: sent back now when due, else held (its partition
    /// paused). One already held for its partition was fetched before the pause: it is put
    /// back, read again on resume.
    async fn take(&self, held: &mut HashMap<(String, i32), Held>, tp: (String, i32), mut h: Held) {
        if held.contains_key(&tp) {
            self.seek(&tp, h.offset).await;
            return;
        }
        match (self.cfg.due)(&h.payload) {
            Ok(_) if !h.trusted => h.due_ms = 0,
            Ok(due) => h.due_ms = due,
            Err(reason) => {
                // Written by us: a record that does not decode is a bug or a forgery.
                tracing::error!(topic = %tp.0, partition = tp.1, offset = h.offset, %reason, "replay topic: a record that does not decode is dropped");
                self.commit(&tp, h.offset + 1);
                return;
            }
        }
        if h.due_ms <= unix_ms(SystemTime::now()) {
            self.send_back(&tp, &h).await;
            return;
        }
        self.pause(&tp, true);
        held.insert(tp, h);
    }

    /// Forgets the held records of partitions a rebalance took away (their new owner reads
    /// them again), resuming those partitions: the pause would outlive the assignment.
    fn drop_unowned(&self, held: &mut HashMap<(String, i32), Held>) {
        if held.is_empty() {
            return;
        }
        let owned = self.consumer.assignment().unwrap_or_default();
        held.retain(|tp, _| {
            let mine = owned.find_partition(&tp.0, tp.1).is_some();
            if !mine {
                self.pause(tp, false);
            }
            mine
        });
    }

    /// Sends back every held entry that is due.
    async fn release_due(&self, held: &mut HashMap<(String, i32), Held>) {
        let now = unix_ms(SystemTime::now());
        let due: Vec<(String, i32)> = held
            .iter()
            .filter(|(_, h)| h.due_ms <= now)
            .map(|(tp, _)| tp.clone())
            .collect();
        if due.is_empty() {
            return;
        }
        for tp in due {
            let h = held.remove(&tp).expect("listed above");
            self.send_back(&tp, &h).await;
            self.pause(&tp, false);
        }
    }

    /// Produces the record back to its topic (retried until done or shutdown), then
    /// commits past it.
    async fn send_back(&self, tp: &(String, i32), h: &Held) {
        let topic = &self.cfg.back;
        let what = "sending a replayed record back";
        let never = |_: &QueueError| false;
        let sent = retry(&RetryPolicy::UNTIL_DONE, self.shutdown, what, never, |_| {
            kafka::send_as(self.producer, topic, &h.key, Some(&h.payload), h.trusted)
        });
        if sent.await.is_ok() {
            tracing::debug!(key = %h.key, from = %tp.0, "replayed record sent back");
            self.commit(tp, h.offset + 1);
        }
    }

    fn commit(&self, tp: &(String, i32), next: i64) {
        let mut tpl = TopicPartitionList::new();
        if tpl
            .add_partition_offset(&tp.0, tp.1, Offset::Offset(next))
            .is_ok()
        {
            if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
                tracing::warn!(topic = %tp.0, partition = tp.1, error = %e, "replay commit failed");
            }
        }
    }

    fn pause(&self, tp: &(String, i32), pause: bool) {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&tp.0, tp.1);
        let r = if pause {
            self.consumer.pause(&tpl)
        } else {
            self.consumer.resume(&tpl)
        };
        if let Err(e) = r {
            tracing::warn!(topic = %tp.0, partition = tp.1, error = %e, "replay topic pause/resume failed");
        }
    }

    /// Puts a message back (off the executor): read again when its partition resumes.
    async fn seek(&self, tp: &(String, i32), offset: i64) {
        let (c, t, p) = (self.consumer.clone(), tp.0.clone(), tp.1);
        let seek = move || c.seek(&t, p, Offset::Offset(offset), Duration::from_secs(5));
        if let Err(e) = glommio::executor().spawn_blocking(seek).await {
            tracing::warn!(topic = %tp.0, partition = tp.1, offset, error = %e, "cannot put back a replay message");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_matches_every_step_of_its_base_only() {
        let p = steps_pattern("t1.x-replication-replay-site.a-");
        assert_eq!(p, r"^t1\.x-replication-replay-site\.a-[0-9]+$");
    }

    #[test]
    fn the_schedule_climbs_then_repeats_its_last_step_until_the_patience() {
        let s = Schedule {
            delays: vec![Duration::from_secs(1), Duration::from_secs(5)],
            patience: Duration::from_secs(60),
        };
        let now = 100_000;
        assert_eq!(s.next(None, s.patience, now), Some((0, now)));
        let at = |step, since| Replay {
            ticket: 0,
            step,
            due_ms: 0,
            failed_since_ms: since,
        };
        assert_eq!(
            s.next(Some(&at(0, now - 1_000)), s.patience, now),
            Some((1, now - 1_000))
        );
        assert_eq!(
            s.next(Some(&at(7, now - 1_000)), s.patience, now),
            Some((1, now - 1_000)),
            "a step a longer schedule had"
        );
        assert_eq!(s.next(Some(&at(1, now - 60_000)), s.patience, now), None);
        assert_eq!(
            s.next(None, Duration::ZERO, now),
            None,
            "no patience at all"
        );
        let p = s.place(3, 9, 5);
        assert!(
            p.due_ms >= unix_ms(SystemTime::now()) + 4_000,
            "an unknown step waits the last delay"
        );
    }
}
