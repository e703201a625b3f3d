//! The replayer of one shard: a member of the site's replay group, which consumes the
//! site's replay topics (one per step of the delay schedule) and sends each entry back to
//! the replication topic once it is due, where the site's workers run it again (keyed by
//! its object, so in its partition's order).
//!
//! A topic's entries come due in the order they were written (one delay per topic), so a
//! partition whose first entry is not due yet is paused until it is: at most one entry per
//! partition is held in memory. An entry's replay offset is committed only once it is back
//! on the replication topic; a crash or a rebalance sends it back twice at worst, which the
//! workers' checks make harmless.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rdkafka::consumer::{CommitMode, Consumer as _, DefaultConsumerContext};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::replay::unix_ms;
use super::WorkerConfig;
use crate::queue::codec::ReplicationEntry;
use crate::queue::kafka::{self, Producer, QueueError};
use crate::retry::{retry, RetryPolicy};
use crate::shard::Shutdown;

type Consumer = kafka::Consumer<DefaultConsumerContext>;

/// An entry taken off a replay topic, not due yet.
struct Held {
    offset: i64,
    due_ms: u64,
    key: String,
    payload: Vec<u8>,
}

/// Runs the shard's replayer until shutdown (nothing to do without a schedule).
pub async fn run(
    cfg: WorkerConfig,
    producer: Producer,
    shutdown: Shutdown,
) -> Result<(), QueueError> {
    let steps = cfg.replay.delays.len();
    if steps == 0 {
        return Ok(());
    }
    let topics: Vec<String> = (0..steps)
        .map(|s| cfg.topics.replay(&cfg.site, s))
        .collect();
    let group = &cfg.replay.group;
    let consumer = kafka::consumer(&cfg.brokers, group, &cfg.membership, DefaultConsumerContext)?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&names).map_err(QueueError::Consume)?;
    let consumer = Arc::new(consumer);
    let r = Replayer {
        cfg: &cfg,
        consumer: &consumer,
        producer: &producer,
        shutdown: &shutdown,
    };
    let mut held: HashMap<(String, i32), Held> = HashMap::new();
    while !shutdown.is_set() {
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
                };
                drop(m);
                r.take(&mut held, tp, h).await;
            }
            Some(Err(e)) => tracing::warn!(error = %e, "replay topics: consume error"),
            None => {}
        }
    }
    let c = consumer.clone();
    let _ = glommio::executor()
        .spawn_blocking(move || c.unsubscribe())
        .await;
    Ok(())
}

struct Replayer<'a> {
    cfg: &'a WorkerConfig,
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
        match ReplicationEntry::decode(&h.payload) {
            Ok(e) => h.due_ms = e.replay.map_or(0, |r| r.due_ms),
            Err(bad) => {
                // Written by a worker: a record that does not decode is a bug or a forgery.
                tracing::error!(topic = %tp.0, partition = tp.1, offset = h.offset, reason = %bad.reason, "replay topic: an entry that does not decode is dropped");
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

    /// Sends back every held entry that is due (if its partition is still this shard's).
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
        let owned = self.consumer.assignment().unwrap_or_default();
        for tp in due {
            let h = held.remove(&tp).expect("listed above");
            if owned.find_partition(&tp.0, tp.1).is_some() {
                self.send_back(&tp, &h).await;
                self.pause(&tp, false);
            }
        }
    }

    /// Produces the entry to the replication topic (retried until done or shutdown), then
    /// commits past it.
    async fn send_back(&self, tp: &(String, i32), h: &Held) {
        let topic = &self.cfg.topics.replication;
        let what = "sending a replayed entry back to the replication topic";
        let never = |_: &QueueError| false;
        let sent = retry(&RetryPolicy::UNTIL_DONE, self.shutdown, what, never, |_| {
            kafka::send(self.producer, topic, &h.key, Some(&h.payload))
        });
        if sent.await.is_ok() {
            tracing::debug!(key = %h.key, from = %tp.0, "replayed entry sent back");
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
