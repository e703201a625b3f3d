//! How far a consumer group is behind a topic: the topic's end (high watermark) and the
//! group's committed position per partition, and waiting until a group has passed ends
//! recorded earlier. The API reports each site's backlog with it; a rescan waits with it
//! so that it never enqueues a version still queued or in flight for a site.
//!
//! Owns: reading a group's committed offsets without joining the group. Blocking rdkafka
//! calls run on glommio's blocking thread pool, never on an executor. May call: `kafka`
//! (client settings), `shard` (the shutdown signal).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

use crate::shard::Shutdown;

/// An offset per partition.
pub type Offsets = BTreeMap<i32, i64>;

/// How long one question to the brokers may take.
const ASK: Duration = Duration::from_secs(5);

/// How often a wait asks again.
const POLL: Duration = Duration::from_millis(500);

/// Reads one group's committed offsets on one topic (it never joins the group).
#[derive(Clone)]
pub struct GroupReader {
    consumer: Arc<BaseConsumer>,
    topic: String,
}

impl GroupReader {
    pub fn new(brokers: &str, topic: &str, group: &str) -> Result<Self, KafkaError> {
        let consumer = super::kafka::client_config(brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()?;
        Ok(Self {
            consumer: Arc::new(consumer),
            topic: topic.to_string(),
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Each partition's start and end (low and high watermarks). Blocking.
    fn watermarks(&self) -> Result<BTreeMap<i32, (i64, i64)>, KafkaError> {
        let md = self.consumer.fetch_metadata(Some(&self.topic), ASK)?;
        let parts = md.topics().iter().flat_map(|t| t.partitions().iter());
        parts
            .map(|p| {
                let marks = self.consumer.fetch_watermarks(&self.topic, p.id(), ASK)?;
                Ok((p.id(), marks))
            })
            .collect()
    }

    /// The topic's end per partition. Blocking.
    pub fn ends(&self) -> Result<Offsets, KafkaError> {
        Ok(self
            .watermarks()?
            .into_iter()
            .map(|(p, (_, high))| (p, high))
            .collect())
    }

    /// The group's position per partition: its committed offset, or the partition's start
    /// where it has committed none (where it would begin reading). Blocking.
    fn positions(&self, marks: &BTreeMap<i32, (i64, i64)>) -> Result<Offsets, KafkaError> {
        let mut tpl = TopicPartitionList::new();
        for p in marks.keys() {
            tpl.add_partition(&self.topic, *p);
        }
        let committed = self.consumer.committed_offsets(tpl, ASK)?;
        let at = |p: i32, low: i64| match committed.find_partition(&self.topic, p) {
            Some(e) => match e.offset() {
                Offset::Offset(o) => o.max(low),
                _ => low,
            },
            None => low,
        };
        Ok(marks
            .iter()
            .map(|(p, (low, _))| (*p, at(*p, *low)))
            .collect())
    }

    /// Entries of the topic the group has not committed yet. Blocking.
    pub fn lag(&self) -> Result<u64, KafkaError> {
        let marks = self.watermarks()?;
        let ends = marks.iter().map(|(p, (_, high))| (*p, *high)).collect();
        Ok(behind(&ends, &self.positions(&marks)?))
    }

    /// How long the oldest entry the group has not committed has been on the topic (from
    /// its timestamp), or `None` when it has committed everything. Blocking: reads the
    /// first uncommitted message of each partition behind.
    pub fn oldest_unconsumed_age(&self, brokers: &str) -> Result<Option<Duration>, KafkaError> {
        let marks = self.watermarks()?;
        let positions = self.positions(&marks)?;
        let mut tpl = TopicPartitionList::new();
        for (p, (_, high)) in &marks {
            let at = positions.get(p).copied().unwrap_or(0);
            if at < *high {
                tpl.add_partition_offset(&self.topic, *p, Offset::Offset(at))?;
            }
        }
        let behind = tpl.count();
        if behind == 0 {
            return Ok(None);
        }
        // A group id is required to consume; assigned partitions never join it.
        let reader: BaseConsumer = super::kafka::client_config(brokers)
            .set(
                "group.id",
                format!("backbeat-age-reader-{}", std::process::id()),
            )
            .set("enable.auto.commit", "false")
            .create()?;
        reader.assign(&tpl)?;
        let (mut oldest, mut seen) = (i64::MAX, std::collections::BTreeSet::new());
        let deadline = Instant::now() + Duration::from_secs(3);
        while seen.len() < behind && Instant::now() < deadline {
            use rdkafka::Message as _;
            let Some(Ok(m)) = reader.poll(Duration::from_millis(200)) else {
                continue;
            };
            if seen.insert(m.partition()) {
                if let Some(ms) = m.timestamp().to_millis() {
                    oldest = oldest.min(ms);
                }
            }
        }
        if oldest == i64::MAX {
            // Behind, yet nothing read: unknown, not "caught up".
            return Err(KafkaError::MessageConsumption(
                rdkafka::types::RDKafkaErrorCode::RequestTimedOut,
            ));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as i64;
        Ok(Some(Duration::from_millis((now - oldest).max(0) as u64)))
    }

    /// Calls `visit` with each record of the topic the group has not committed yet, key and
    /// payload (a tombstone has none). Blocking.
    pub fn uncommitted(
        &self,
        brokers: &str,
        visit: impl FnMut(String, Option<&[u8]>),
    ) -> Result<(), KafkaError> {
        let marks = self.watermarks()?;
        let from = self.positions(&marks)?;
        let to: Offsets = marks.iter().map(|(p, (_, high))| (*p, *high)).collect();
        read_between(brokers, &self.topic, &from, &to, visit)
    }

    /// How many entries below `ends` the group has not committed. Blocking.
    pub fn behind(&self, ends: &Offsets) -> Result<u64, KafkaError> {
        // Serve the client's events (errors while brokers flap) so none piles up.
        let _ = self.consumer.poll(Duration::ZERO);
        let marks = self.watermarks()?;
        Ok(behind(ends, &self.positions(&marks)?))
    }
}

/// Closing a consumer that names a group waits on the brokers: the last reader closes it on
/// a thread of its own, never on an executor.
impl Drop for GroupReader {
    fn drop(&mut self) {
        if Arc::strong_count(&self.consumer) == 1 {
            let last = self.consumer.clone();
            let _ = std::thread::Builder::new()
                .name("kafka-close".into())
                .spawn(move || drop(last));
        }
    }
}

/// Calls `visit` with every record of `topic` from `from` up to `to` (per partition), key
/// and payload (a tombstone has none), leaving out records whose signature does not check
/// when a signing key is set. Blocking; gives up on partitions that send nothing
/// for 5 s, saying so (the caller gets what was read: a best effort).
pub fn read_between(
    brokers: &str,
    topic: &str,
    from: &Offsets,
    to: &Offsets,
    mut visit: impl FnMut(String, Option<&[u8]>),
) -> Result<(), KafkaError> {
    use rdkafka::Message as _;
    let mut tpl = TopicPartitionList::new();
    let mut left = BTreeMap::new();
    for (p, end) in to {
        let start = from.get(p).copied().unwrap_or(0);
        if start < *end {
            tpl.add_partition_offset(topic, *p, Offset::Offset(start))?;
            left.insert(*p, *end);
        }
    }
    if left.is_empty() {
        return Ok(());
    }
    // A group id is required to consume; assigned partitions never join it.
    let reader: BaseConsumer = super::kafka::client_config(brokers)
        .set(
            "group.id",
            format!("backbeat-range-reader-{}", std::process::id()),
        )
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    reader.assign(&tpl)?;
    let mut moved = Instant::now();
    while !left.is_empty() && moved.elapsed() < Duration::from_secs(5) {
        let Some(Ok(m)) = reader.poll(Duration::from_millis(200)) else {
            continue;
        };
        moved = Instant::now();
        let end = left.get(&m.partition()).copied();
        // With a signing key, a record that does not check is not seen (a forged failed or
        // replay record must not hide a version from a rescan).
        let trusted = super::signing::check(&m).is_ok();
        if trusted && end.is_some_and(|end| m.offset() < end) {
            let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned());
            visit(key.unwrap_or_default(), m.payload());
        }
        if end.is_some_and(|end| m.offset() + 1 >= end) {
            left.remove(&m.partition());
        }
    }
    if !left.is_empty() {
        let partitions: Vec<&i32> = left.keys().collect();
        tracing::warn!(topic, ?partitions, "read stopped short of the end of these partitions (nothing came for 5 s): what they hold past that is not known");
    }
    Ok(())
}

/// Entries below `ends` not yet passed by `positions` (a partition missing from
/// `positions` counts from 0).
pub fn behind(ends: &Offsets, positions: &Offsets) -> u64 {
    ends.iter()
        .map(|(p, end)| (end - positions.get(p).copied().unwrap_or(0)).max(0) as u64)
        .sum()
}

/// What a wait for a group came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Passed {
    /// The group has committed everything below the ends.
    Yes,
    /// The group stopped moving this many entries short (paused, down, or stuck).
    Stalled { behind: u64 },
    /// Shutdown.
    Cancelled,
}

/// Waits until `reader`'s group has committed everything below `ends`, for as long as it
/// makes progress: when the number of entries it is behind has not gone down for `stall`,
/// gives up with [`Passed::Stalled`].
pub async fn wait_past(
    reader: &GroupReader,
    ends: &Offsets,
    stall: Duration,
    shutdown: &Shutdown,
) -> Result<Passed, KafkaError> {
    let (mut least, mut moved) = (u64::MAX, Instant::now());
    loop {
        let (r, e) = (reader.clone(), ends.clone());
        let behind = glommio::executor()
            .spawn_blocking(move || r.behind(&e))
            .await?;
        if behind == 0 {
            return Ok(Passed::Yes);
        }
        if behind < least {
            (least, moved) = (behind, Instant::now());
        } else if moved.elapsed() >= stall {
            return Ok(Passed::Stalled { behind });
        }
        if !shutdown.sleep(POLL).await {
            return Ok(Passed::Cancelled);
        }
    }
}

/// The ends of `topic`, asked off the executor.
pub async fn ends(reader: &GroupReader) -> Result<Offsets, KafkaError> {
    let r = reader.clone();
    glommio::executor().spawn_blocking(move || r.ends()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behind_counts_what_is_below_the_ends_and_not_passed() {
        let ends: Offsets = [(0, 10), (1, 5), (2, 0)].into();
        let positions: Offsets = [(0, 7), (1, 9)].into();
        // 3 on partition 0, none on 1 (past its end), none on 2 (empty).
        assert_eq!(behind(&ends, &positions), 3);
        let nothing: Offsets = Offsets::new();
        assert_eq!(behind(&ends, &nothing), 15);
    }
}
