//! rdkafka on glommio: a runtime shim, topic creation, the producer and consumers.
//!
//! rdkafka's `AsyncRuntime` wants `Send` futures; glommio tasks need not be `Send`, but
//! `Send` ones run fine: `spawn` is `glommio::spawn_local(..).detach()` and the delay a
//! `futures_timer::Delay` (its own timer thread). Consumers are `StreamConsumer`s polled from
//! the shard's executor: each shard is one member of the site's consumer group.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer as _, ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::AsyncRuntime;

use crate::retry::{retry, RetryPolicy};

/// Runs rdkafka's futures on the current glommio executor.
pub struct GlommioRuntime;

impl AsyncRuntime for GlommioRuntime {
    type Delay = futures_timer::Delay;

    fn spawn<T>(task: T)
    where
        T: Future<Output = ()> + Send + 'static,
    {
        glommio::spawn_local(task).detach();
    }

    fn delay_for(duration: Duration) -> Self::Delay {
        futures_timer::Delay::new(duration)
    }
}

pub type Producer = FutureProducer<DefaultClientContext, GlommioRuntime>;
pub type Consumer<C> = StreamConsumer<C, GlommioRuntime>;

/// Why a Kafka operation failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("Kafka client setup failed: {0}")]
    Setup(KafkaError),
    #[error("creating the Kafka topic {topic} failed: {message} (are kafka.brokers reachable, and do kafka.security_protocol, its certificates or SASL settings match the cluster's?)")]
    CreateTopic { topic: String, message: String },
    #[error("producing to {topic} failed: {error}")]
    Produce { topic: String, error: KafkaError },
    #[error("committing offsets failed: {0}")]
    Commit(KafkaError),
    #[error("consuming failed: {0}")]
    Consume(KafkaError),
    #[error("reading consumer groups' positions on {topic} failed: {error}")]
    Positions { topic: String, error: KafkaError },
}

/// Topic names under a common prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    pub events: String,
    pub replication: String,
    pub status: String,
    pub failed: String,
    pub control: String,
    /// What every replay topic's name starts with (see [`Topics::replay`]).
    pub replay_base: String,
    /// What the populator's replay topics' names start with.
    pub events_replay_base: String,
    /// Lifecycle: one record per step of a bucket pass.
    pub lifecycle_bucket_tasks: String,
    /// Lifecycle: one record per action, keyed `bucket/key`.
    pub lifecycle_object_tasks: String,
    /// Lifecycle: each bucket's latest pass (compacted, keyed by bucket).
    pub lifecycle_passes: String,
    /// Site-level replication: each source bucket adopted, or seen created (compacted,
    /// keyed by bucket).
    pub buckets: String,
    /// Transient sources: versions every site holds, to delete from the source (keyed
    /// `bucket/key`).
    pub gc: String,
}

impl Topics {
    /// The replay topic of `site` for `step` of its delay schedule: entries wait there
    /// for that step's delay before they are sent back to the replication topic.
    pub fn replay(&self, site: &str, step: usize) -> String {
        format!("{}{step}", self.replay_prefix(site))
    }

    /// What the names of `site`'s replay topics start with (the step follows).
    pub fn replay_prefix(&self, site: &str) -> String {
        format!("{}{site}-", self.replay_base)
    }

    /// The populator's replay topic for `step`: changes it could not turn into entries
    /// wait there before they go back to the events topic.
    pub fn events_replay(&self, step: usize) -> String {
        format!("{}{step}", self.events_replay_base)
    }

    pub fn new(prefix: &str) -> Self {
        Self {
            events: format!("{prefix}events"),
            replication: format!("{prefix}replication"),
            status: format!("{prefix}replication-status"),
            failed: format!("{prefix}replication-failed"),
            control: format!("{prefix}control"),
            replay_base: format!("{prefix}replication-replay-"),
            events_replay_base: format!("{prefix}events-replay-"),
            lifecycle_bucket_tasks: format!("{prefix}lifecycle-bucket-tasks"),
            lifecycle_object_tasks: format!("{prefix}lifecycle-object-tasks"),
            lifecycle_passes: format!("{prefix}lifecycle-passes"),
            buckets: format!("{prefix}buckets"),
            gc: format!("{prefix}gc"),
        }
    }
}

/// A consumer group per destination site.
pub fn replication_group(prefix: &str, site: &str) -> String {
    format!("{prefix}replication-{site}")
}

/// The group of a site's replayers (they consume the site's replay topics).
pub fn replay_group(prefix: &str, site: &str) -> String {
    format!("{prefix}replay-{site}")
}

/// How every Kafka client of this process reaches the brokers (TLS, SASL): set once at
/// start by [`secure`], applied by [`client_config`] to every producer, consumer and admin
/// client, so none can be made without it.
static SECURITY: std::sync::OnceLock<Security> = std::sync::OnceLock::new();

/// Transport and authentication settings, as librdkafka names them. Its `Debug` masks the
/// password.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Security {
    settings: Vec<(&'static str, String)>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = self.settings.iter().map(|(k, v)| {
            let v = if *k == "sasl.password" { "***" } else { v };
            (*k, v)
        });
        f.debug_map().entries(shown).finish()
    }
}

impl Security {
    pub fn set(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.settings.push((key, value.into()));
        self
    }
}

/// Installs the settings every client of this process uses from now on. Once: a later,
/// different call is refused (false) and changes nothing.
pub fn secure(s: Security) -> bool {
    SECURITY.get_or_init(|| s.clone()) == &s
}

/// Base client settings.
pub fn client_config(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("client.id", "backbeat")
        .set("log_level", "3");
    // librdkafka's own debug contexts (for example `cgrp,protocol`), for diagnosing a broker.
    if let Ok(contexts) = std::env::var("BACKBEAT_KAFKA_DEBUG") {
        c.set("debug", contexts).set("log_level", "7");
    }
    if let Some(s) = SECURITY.get() {
        for (k, v) in &s.settings {
            c.set(*k, v);
        }
    }
    c
}

/// Creates the topics (an existing topic is fine). Compacted topics get
/// `cleanup.policy=compact`.
pub async fn ensure_topics(
    brokers: &str,
    topics: &[(&str, i32, i32, bool)],
) -> Result<(), QueueError> {
    let admin: AdminClient<DefaultClientContext> =
        client_config(brokers).create().map_err(QueueError::Setup)?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, partitions, rf, compacted)| {
            let t = NewTopic::new(name, *partitions, TopicReplication::Fixed(*rf));
            if *compacted {
                t.set("cleanup.policy", "compact")
            } else {
                t
            }
        })
        .collect();
    let results = admin
        .create_topics(
            new.iter(),
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .map_err(|e| QueueError::CreateTopic {
            topic: "(all)".into(),
            message: explain(brokers, e.to_string()),
        })?;
    for r in results {
        if let Err((topic, code)) = r {
            if code != RDKafkaErrorCode::TopicAlreadyExists {
                return Err(QueueError::CreateTopic {
                    topic,
                    message: explain(brokers, code.to_string()),
                });
            }
        }
    }
    Ok(())
}

/// A client context that keeps the last error librdkafka reported (an authentication or
/// TLS failure is only ever reported there).
#[derive(Clone, Default)]
struct ErrorsNoted(Arc<std::sync::Mutex<Option<String>>>);

impl ClientContext for ErrorsNoted {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(%error, "Kafka client: {reason}");
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.to_string());
    }
}

impl rdkafka::producer::ProducerContext for ErrorsNoted {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::producer::DeliveryResult<'_>, _: ()) {}
}

impl ErrorsNoted {
    fn last(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// `message` (an admin operation that failed), followed by the reason a fresh client
/// connecting to `brokers` is given, if any: the admin client never hands its errors to a
/// context, so a failed authentication or TLS handshake would otherwise show only as a
/// timeout. Runs on a thread of its own for at most 5 s (the failure path only).
fn explain(brokers: &str, message: String) -> String {
    let config = client_config(brokers);
    let probe = std::thread::spawn(move || {
        let noted = ErrorsNoted::default();
        let producer: rdkafka::producer::BaseProducer<ErrorsNoted> =
            config.create_with_context(noted.clone()).ok()?;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while noted.last().is_none() && std::time::Instant::now() < deadline {
            producer.poll(Duration::from_millis(200));
        }
        noted.last()
    });
    match probe.join().ok().flatten() {
        Some(reason) => format!("{message}; the client reports: {reason}"),
        None => message,
    }
}

/// The process's idempotent producer for `brokers`, which waits for every in-sync replica.
///
/// One per broker list, shared by every role and shard: each librdkafka producer costs a
/// thread per broker, a main thread and a polling thread (which wakes for every delivery
/// and spins through the last millisecond of each 100 ms poll), and one producer batches
/// the records of all shards together. A process talks to one cluster, so the map holds
/// one producer (tests that start brokers of their own add one each).
pub fn producer(brokers: &str) -> Result<Producer, QueueError> {
    static SHARED: std::sync::LazyLock<
        std::sync::Mutex<std::collections::HashMap<String, Producer>>,
    > = std::sync::LazyLock::new(Default::default);
    let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(p) = shared.get(brokers) {
        return Ok(p.clone());
    }
    let p = new_producer(brokers)?;
    shared.insert(brokers.to_string(), p.clone());
    Ok(p)
}

fn new_producer(brokers: &str) -> Result<Producer, QueueError> {
    client_config(brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("message.timeout.ms", "60000")
        .create()
        .map_err(QueueError::Setup)
}

/// Produces one message and waits for its delivery. `None` as payload is a tombstone.
///
/// The delivery report arrives from librdkafka's thread; the wait polls it again every
/// second whatever the wake-ups, so a wake-up the executor missed costs a second, never a
/// stuck partition.
pub async fn send(
    p: &Producer,
    topic: &str,
    key: &str,
    payload: Option<&[u8]>,
) -> Result<(i32, i64), QueueError> {
    send_as(p, topic, key, payload, true).await
}

/// [`send`], signed (with a signing key) only when `signed`: a record forwarded that did not
/// check stays unsigned, so a forgery is never vouched for.
pub async fn send_as(
    p: &Producer,
    topic: &str,
    key: &str,
    payload: Option<&[u8]>,
    signed: bool,
) -> Result<(i32, i64), QueueError> {
    let mut rec: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).key(key);
    if let Some(b) = payload {
        rec = rec.payload(b);
    }
    if let Some(h) = super::signing::headers(key, payload).filter(|_| signed) {
        rec = rec.headers(h);
    }
    let err = |error| QueueError::Produce {
        topic: topic.to_string(),
        error,
    };
    // librdkafka's queue is full: wait for room (every 100 ms, for 30 s at most). The record
    // comes back with the error, so it is kept between attempts.
    let record = std::cell::RefCell::new(Some(rec));
    let enqueue = |_| {
        let rec = record
            .borrow_mut()
            .take()
            .expect("the record is put back on failure");
        let sent = p.send_result(rec).map_err(|(e, back)| {
            *record.borrow_mut() = Some(back);
            e
        });
        std::future::ready(sent)
    };
    let queue_full = RetryPolicy {
        max_attempts: 300,
        base: Duration::from_millis(100),
        max: Duration::from_millis(100),
        warn_after: 50,
    };
    let permanent = |e: &KafkaError| {
        !matches!(
            e,
            KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)
        )
    };
    // Never set: a produce waits for room whatever the shutdown (bounded by the policy).
    static NEVER: std::sync::LazyLock<crate::shard::Shutdown> =
        std::sync::LazyLock::new(crate::shard::Shutdown::new);
    let delivery = retry(
        &queue_full,
        &NEVER,
        "producing: waiting for room",
        permanent,
        enqueue,
    )
    .await
    .map_err(|g| err(g.error))?;
    match repoll(delivery).await {
        Ok(Ok(d)) => Ok((d.partition, d.offset)),
        Ok(Err((e, _))) => Err(err(e)),
        Err(_canceled) => Err(err(KafkaError::Canceled)),
    }
}

/// Awaits `fut`, polling it again every second even without a wake-up.
async fn repoll<F: Future + Unpin>(mut fut: F) -> F::Output {
    loop {
        let value = async { Some((&mut fut).await) };
        let tick = async {
            glommio::timer::sleep(Duration::from_secs(1)).await;
            None
        };
        if let Some(v) = futures_lite::future::or(value, tick).await {
            return v;
        }
    }
}

/// The next message, or `None` when none came within `wait`: consumer loops use it to
/// look at their shutdown signal (and pause state) regularly.
pub async fn recv_within<C: ConsumerContext + 'static>(
    consumer: &Consumer<C>,
    wait: Duration,
) -> Option<rdkafka::error::KafkaResult<rdkafka::message::BorrowedMessage<'_>>> {
    let recv = async { Some(consumer.recv().await) };
    let tick = async {
        glommio::timer::sleep(wait).await;
        None
    };
    futures_lite::future::or(recv, tick).await
}

/// Runs `work` while keeping `consumer` a live member of its group: once `work` has taken
/// `after` (backpressure, retries), the assigned partitions are paused (again every round,
/// for partitions a rebalance adds) and the consumer is polled, since a member that does
/// not poll for `max.poll.interval.ms` is evicted. A message fetched meanwhile is put back
/// when `work` ends (each partition seeks back to the first one fetched, before the
/// partitions resume).
pub async fn polled_while<C, T>(
    consumer: &Arc<Consumer<C>>,
    topic: &str,
    after: Duration,
    work: impl Future<Output = T>,
) -> T
where
    C: ConsumerContext + 'static,
{
    let paused = std::cell::Cell::new(false);
    let fetched = std::cell::RefCell::new(std::collections::BTreeMap::<i32, i64>::new());
    let keep = async {
        glommio::timer::sleep(after).await;
        loop {
            if let Ok(a) = consumer.assignment() {
                let _ = consumer.pause(&a);
            }
            paused.set(true);
            if let Some(Ok(m)) = recv_within(consumer, Duration::from_millis(500)).await {
                let mut f = fetched.borrow_mut();
                let first = f.entry(m.partition()).or_insert(m.offset());
                *first = (*first).min(m.offset());
            }
        }
    };
    let out = futures_lite::future::or(work, keep).await;
    for (p, o) in fetched.into_inner() {
        let (c, t) = (consumer.clone(), topic.to_string());
        let seek = move || c.seek(&t, p, rdkafka::Offset::Offset(o), Duration::from_secs(5));
        if let Err(e) = glommio::executor().spawn_blocking(seek).await {
            tracing::warn!(partition = p, offset = o, error = %e, "cannot put back a message fetched while busy");
        }
    }
    if paused.get() {
        if let Ok(a) = consumer.assignment() {
            let _ = consumer.resume(&a);
        }
    }
    out
}

/// How a member proves it is alive: heartbeats within the session timeout, and a poll of
/// the consumer at least every `max_poll_interval_ms` (else the group evicts it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Membership {
    pub session_timeout_ms: u32,
    pub max_poll_interval_ms: u32,
    /// The longest a fetch waits at the broker for data (`fetch.wait.max.ms`).
    pub fetch_wait_ms: u32,
}

impl Membership {
    /// A session timeout with librdkafka's usual poll interval (at least the session's).
    pub fn session(session_timeout_ms: u32) -> Self {
        Self {
            session_timeout_ms,
            max_poll_interval_ms: session_timeout_ms.max(60_000),
            fetch_wait_ms: 500,
        }
    }
}

/// A group member with manual commits: nothing is committed until the caller says so.
/// A member of `group` subscribed to `topic` (the roles that only need to know whether they
/// hold the topic's partition, or read it whole).
pub fn member(
    brokers: &str,
    group: &str,
    membership: &Membership,
    topic: &str,
) -> Result<Arc<Consumer<rdkafka::consumer::DefaultConsumerContext>>, QueueError> {
    let c = consumer(
        brokers,
        group,
        membership,
        rdkafka::consumer::DefaultConsumerContext,
    )?;
    c.subscribe(&[topic]).map_err(QueueError::Consume)?;
    Ok(Arc::new(c))
}

pub fn consumer<C: ConsumerContext + 'static>(
    brokers: &str,
    group: &str,
    membership: &Membership,
    context: C,
) -> Result<Consumer<C>, QueueError> {
    let session = membership.session_timeout_ms;
    let max_poll = membership.max_poll_interval_ms.max(session);
    client_config(brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", session.to_string())
        .set("heartbeat.interval.ms", (session / 5).max(500).to_string())
        .set("max.poll.interval.ms", max_poll.to_string())
        .set("partition.assignment.strategy", "range,roundrobin")
        .set("fetch.wait.max.ms", membership.fetch_wait_ms.to_string())
        // What a consumer reads ahead of its application: 8 MiB (thousands of entries, far
        // more than a shard has slots) instead of librdkafka's 64 MiB, so a backlog in
        // Kafka costs the node little memory.
        .set("queued.max.messages.kbytes", "8192")
        .create_with_context(context)
        .map_err(QueueError::Setup)
}
