//! The control topic (compacted, keyed by site, [`LIFECYCLE`] for lifecycle, and
//! `ingestion/BUCKET` for a bucket's ingestion): whether a
//! site (or lifecycle) is paused, and when a scheduled resume fires. Every mover shard follows it, so one command reaches the cluster.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use rdkafka::consumer::Consumer as _;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use super::kafka::{self, Producer, QueueError};

/// A site's replication state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SiteControl {
    pub paused: bool,
    /// RFC 3339 time at which a paused site resumes by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_resume: Option<String>,
}

/// The control topic's key of lifecycle's state (a site's name cannot hold a `/`).
pub const LIFECYCLE: &str = "lifecycle/all";

/// The control topic's key of lifecycle's state for transitions to `site` (`all`: the
/// whole of lifecycle, [`LIFECYCLE`]).
pub fn lifecycle_key(site: &str) -> String {
    format!("lifecycle/{site}")
}

/// The control topic's key of ingestion's state for source bucket `bucket` (a site's name
/// cannot hold a `/`).
pub fn ingestion_key(bucket: &str) -> String {
    format!("ingestion/{bucket}")
}

impl SiteControl {
    /// Whether to hold back now: paused, and no scheduled resume has come.
    pub fn paused_now(&self) -> bool {
        let resume_due = self
            .scheduled_resume
            .as_deref()
            .and_then(crate::time::parse_rfc3339)
            .is_some_and(|t| t <= std::time::SystemTime::now());
        self.paused && !resume_due
    }

    /// A state as the control topic carries it; its resume time must be an RFC 3339 time.
    pub fn decode(payload: &[u8]) -> Result<Self, String> {
        let c: Self = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
        if let Some(t) = &c.scheduled_resume {
            if crate::time::parse_rfc3339(t).is_none() {
                return Err(format!("scheduledResume {t:?} is not an RFC 3339 time"));
            }
        }
        Ok(c)
    }
}

/// Publishes a site's state.
pub async fn publish(
    p: &Producer,
    topic: &str,
    site: &str,
    state: &SiteControl,
) -> Result<(), QueueError> {
    let body = serde_json::to_vec(state).expect("control state serializes");
    kafka::send(p, topic, site, Some(&body)).await.map(|_| ())
}

type Reader = kafka::Consumer<rdkafka::consumer::DefaultConsumerContext>;

/// A consumer outside any group.
fn reader(brokers: &str) -> Result<Reader, QueueError> {
    kafka::client_config(brokers)
        .set(
            "group.id",
            format!("backbeat-follower-{}", std::process::id()),
        )
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .map_err(QueueError::Setup)
}

/// Assigns `partitions` of `topic` to `consumer`, each from its beginning.
fn assign_from_start(consumer: &Reader, topic: &str, partitions: &[i32]) -> Result<(), QueueError> {
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        let _ = tpl.add_partition_offset(topic, *p, Offset::Beginning);
    }
    consumer.assign(&tpl).map_err(QueueError::Consume)
}

/// The partitions of `topic`, with their end offsets when `ends` (blocking calls to the
/// brokers: run them off a shard's executor).
fn partitions(brokers: &str, topic: &str, ends: bool) -> Result<Vec<(i32, i64)>, QueueError> {
    use rdkafka::consumer::BaseConsumer;
    let c: BaseConsumer = kafka::client_config(brokers)
        .create()
        .map_err(QueueError::Setup)?;
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .map_err(QueueError::Consume)?;
    let mut out = Vec::new();
    for p in md.topics().iter().flat_map(|t| t.partitions()) {
        let high = if ends {
            let w = c.fetch_watermarks(topic, p.id(), Duration::from_secs(5));
            w.map_err(QueueError::Consume)?.1
        } else {
            0
        };
        out.push((p.id(), high));
    }
    Ok(out)
}

/// Takes a control record into `cell` when it is `site`'s: a state, or a tombstone (the
/// defaults). A record that does not read as a state (or names a resume time that is not
/// one) is logged and ignored: it changes nothing.
fn apply_control(
    cell: &RefCell<SiteControl>,
    site: &str,
    m: &rdkafka::message::BorrowedMessage<'_>,
) {
    if m.key() != Some(site.as_bytes()) {
        return;
    }
    if let Err(e) = super::signing::check(m) {
        let (partition, offset) = (m.partition(), m.offset());
        tracing::warn!(site, partition, offset, error = %e, "control record ignored");
        return;
    }
    let next = match m.payload().map(SiteControl::decode) {
        None => SiteControl::default(),
        Some(Ok(next)) => next,
        Some(Err(e)) => {
            let (partition, offset) = (m.partition(), m.offset());
            tracing::warn!(site, partition, offset, error = %e, "control record ignored: not a site state");
            return;
        }
    };
    tracing::info!(site, paused = next.paused, "control state");
    *cell.borrow_mut() = next;
}

/// Follows the control topic from its beginning, keeping the latest state of `site` in the
/// returned cell, until `stop` is set.
/// Returns once the topic has been read up to its end, so the state is known before the
/// caller consumes anything (a site paused before a restart stays paused).
pub async fn follow(
    brokers: &str,
    topic: &str,
    site: &str,
    stop: crate::shard::Shutdown,
) -> Result<Rc<RefCell<SiteControl>>, QueueError> {
    let state = Rc::new(RefCell::new(SiteControl::default()));
    let (b, t) = (brokers.to_string(), topic.to_string());
    let ends = glommio::executor()
        .spawn_blocking(move || partitions(&b, &t, true))
        .await?;
    let consumer = reader(brokers)?;
    let ids: Vec<i32> = ends.iter().map(|(p, _)| *p).collect();
    assign_from_start(&consumer, topic, &ids)?;
    // Catch up: read until every partition reached the end it had when we started.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut positions: std::collections::HashMap<i32, i64> = std::collections::HashMap::new();
    while ends
        .iter()
        .any(|(p, high)| positions.get(p).copied().unwrap_or(-1) + 1 < *high)
        && std::time::Instant::now() < deadline
    {
        if let Some(Ok(m)) = kafka::recv_within(&consumer, Duration::from_millis(200)).await {
            positions.insert(m.partition(), m.offset());
            apply_control(&state, site, &m);
        }
    }
    let (cell, site) = (state.clone(), site.to_string());
    glommio::spawn_local(async move {
        while !stop.is_set() {
            if let Some(Ok(m)) = kafka::recv_within(&consumer, Duration::from_millis(200)).await {
                apply_control(&cell, &site, &m);
            }
        }
    })
    .detach();
    Ok(state)
}

/// The latest value of every key of a compacted topic, decoded once as it arrives.
pub type Compacted<T> = Rc<RefCell<std::collections::BTreeMap<String, T>>>;

/// Follows a compacted topic from its beginning, keeping the latest value of every key
/// that `decode` accepts (a tombstone, or a value it refuses, removes the key), until `stop`
/// is set. It asks the brokers for the topic's partitions first, blocking: call it where
/// that is fine (the API's executor at start).
pub fn follow_all<T: 'static>(
    brokers: &str,
    topic: &str,
    decode: fn(&[u8]) -> Option<T>,
    stop: crate::shard::Shutdown,
) -> Result<Compacted<T>, QueueError> {
    let state: Compacted<T> = Rc::default();
    let consumer = reader(brokers)?;
    let ids: Vec<i32> = partitions(brokers, topic, false)?
        .iter()
        .map(|(p, _)| *p)
        .collect();
    assign_from_start(&consumer, topic, &ids)?;
    let cell = state.clone();
    glommio::spawn_local(async move {
        while !stop.is_set() {
            if let Some(Ok(m)) = kafka::recv_within(&consumer, Duration::from_millis(200)).await {
                let Some(k) = m.key().map(|k| String::from_utf8_lossy(k).into_owned()) else {
                    continue;
                };
                if let Err(e) = super::signing::check(&m) {
                    tracing::warn!(topic = m.topic(), key = k, error = %e, "record ignored");
                    continue;
                }
                match m.payload().and_then(decode) {
                    Some(v) => {
                        cell.borrow_mut().insert(k, v);
                    }
                    None => {
                        cell.borrow_mut().remove(&k);
                    }
                }
            }
        }
    })
    .detach();
    Ok(state)
}
