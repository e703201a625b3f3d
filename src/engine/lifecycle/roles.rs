//! Lifecycle on Kafka, as Backbeat runs it: a conductor starts a pass per bucket every
//! interval (never while one is running); bucket processors carry a pass a step at a time
//! (a page of keys listed, its actions produced as object tasks, then the next step
//! produced, and only then the task's offset committed: a crash redoes at most one step);
//! object processors check each action again and carry it out. Each is a consumer group
//! member: more nodes, more members. The conductor is whichever member of its group is
//! assigned the passes topic's only partition.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rdkafka::consumer::{CommitMode, Consumer as _, DefaultConsumerContext};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::file::Config;
use crate::lifecycle::eval::Clock;
use crate::lifecycle::pass::{kind_name, Outcome, Pass};
use crate::lifecycle::tasks::{BucketTask, ObjectTask, PassState, Phase};
use crate::queue::control::{self, SiteControl};
use crate::queue::kafka::{self, Membership, Producer, QueueError, Topics};
use crate::retry::{retry, RetryPolicy};
use crate::shard::Shutdown;

use super::{resolve, Resolved};

/// A pass that has not moved on for this long is started again.
const STALE: Duration = Duration::from_secs(600);

/// What every lifecycle role of this node shares.
#[derive(Clone)]
pub struct Roles {
    pub cfg: Arc<Config>,
    pub brokers: String,
    pub topics: Topics,
    pub membership: Membership,
    pub stats: Arc<crate::metrics::lifecycle::LifecycleStats>,
    /// The selected source buckets known to exist (passes run over these).
    pub known: Arc<crate::buckets::Known>,
}

/// Lifecycle's pause state, as the control topic says.
type Control = Rc<RefCell<SiteControl>>;

/// Site -> whether lifecycle's transitions to it are paused.
type SitePauses = Rc<BTreeMap<String, Control>>;

impl Roles {
    fn group(&self, role: &str) -> String {
        format!("{}lifecycle-{role}", self.cfg.kafka.topic_prefix)
    }

    fn consumer(
        &self,
        role: &str,
        topic: &str,
    ) -> Result<kafka::Consumer<DefaultConsumerContext>, QueueError> {
        let c = kafka::consumer(
            &self.brokers,
            &self.group(role),
            &self.membership,
            DefaultConsumerContext,
        )?;
        c.subscribe(&[topic]).map_err(QueueError::Consume)?;
        Ok(c)
    }

    fn clock(&self) -> Clock {
        Clock::new(
            SystemTime::now(),
            self.cfg.lifecycle.time_progression_factor,
        )
    }
}

/// Runs the conductor and both processors until shutdown.
///
/// Shard 0 of the node runs the conductor's and the bucket processors' members, and every
/// shard an object processor's (a member of the object group each), so actions spread over
/// the node's cores.
pub async fn run(roles: Roles, shard: usize, shutdown: Shutdown) -> Result<(), QueueError> {
    let roles = Rc::new(roles);
    let (b, t) = (&roles.brokers, &roles.topics.control);
    let st = control::follow(b, t, control::LIFECYCLE, shutdown.clone()).await?;
    let (c, b) = if shard == 0 {
        let producer = kafka::producer(&roles.brokers)?;
        let (p, sd) = (producer.clone(), shutdown.clone());
        let c = glommio::spawn_local(conductor(roles.clone(), p, st.clone(), sd));
        let sd = shutdown.clone();
        let b = glommio::spawn_local(bucket_processor(roles.clone(), producer, st.clone(), sd));
        (Some(c), Some(b))
    } else {
        (None, None)
    };
    let mut sites = BTreeMap::new();
    for site in roles.cfg.sites.keys() {
        let key = control::lifecycle_key(site);
        let c = control::follow(
            &roles.brokers,
            &roles.topics.control,
            &key,
            shutdown.clone(),
        );
        sites.insert(site.clone(), c.await?);
    }
    let o = object_processor(roles, st, Rc::new(sites), shutdown).await;
    let c = match c {
        Some(c) => c.await,
        None => Ok(()),
    };
    let b = match b {
        Some(b) => b.await,
        None => Ok(()),
    };
    o.and(c).and(b)
}

fn now() -> String {
    crate::time::rfc3339(SystemTime::now())
}

/// Whether a bucket whose latest pass is `state` gets a new one now.
fn due(state: Option<&PassState>, interval: Duration) -> bool {
    let Some(s) = state else { return true };
    let since = |t: &str| {
        crate::time::parse_rfc3339(t)
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .unwrap_or(Duration::MAX)
    };
    if s.running {
        if since(&s.at) >= STALE {
            tracing::warn!(
                pass = s.pass,
                "lifecycle pass made no progress for 10 minutes: starting a new one"
            );
            return true;
        }
        return false;
    }
    since(&s.started) >= interval
}

/// The conductor: while this member holds the passes topic's partition, it reads every
/// bucket's latest pass from it and starts the passes that are due.
async fn conductor(
    roles: Rc<Roles>,
    producer: Producer,
    paused: Control,
    shutdown: Shutdown,
) -> Result<(), QueueError> {
    let topic = roles.topics.lifecycle_passes.clone();
    let consumer = roles.consumer("conductor", &topic)?;
    let states: RefCell<BTreeMap<String, PassState>> = Default::default();
    let interval = Duration::from_secs(roles.cfg.lifecycle.interval_seconds);
    let mut caught_up = false;
    while !shutdown.is_set() {
        match kafka::recv_within(&consumer, Duration::from_millis(500)).await {
            Some(Ok(m)) => {
                if let (Some(k), Ok(())) = (m.key(), crate::queue::signing::check(&m)) {
                    let k = String::from_utf8_lossy(k).into_owned();
                    match m.payload().and_then(PassState::decode) {
                        Some(s) => states.borrow_mut().insert(k, s),
                        None => states.borrow_mut().remove(&k),
                    };
                }
                continue;
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "lifecycle conductor: consume error");
                continue;
            }
            None => {}
        }
        let leader = consumer
            .assignment()
            .map(|a| a.count() > 0)
            .unwrap_or(false);
        if !leader {
            caught_up = false;
            continue;
        }
        if !caught_up {
            // The first quiet poll after the assignment: the topic has been read.
            caught_up = true;
            continue;
        }
        if paused.borrow().paused_now() {
            continue;
        }
        for bucket in &roles.known.list() {
            if due(states.borrow().get(bucket), interval) {
                match start_pass(&roles, &producer, bucket).await {
                    Ok(s) => {
                        states.borrow_mut().insert(bucket.clone(), s);
                    }
                    Err(e) => tracing::warn!(bucket, error = %e, "lifecycle pass not started"),
                }
            }
        }
    }
    Ok(())
}

/// Records a new pass over `bucket` as running and produces its first step.
async fn start_pass(roles: &Roles, p: &Producer, bucket: &str) -> Result<PassState, QueueError> {
    let at = now();
    let state = PassState {
        pass: format!("{at}-{:08x}", rand::random::<u32>()),
        running: true,
        started: at.clone(),
        at,
        keys: 0,
        actions: 0,
        step: 0,
        error: None,
    };
    publish(roles, p, bucket, &state).await?;
    let task = BucketTask {
        v: 1,
        bucket: bucket.to_string(),
        pass: state.pass.clone(),
        phase: Phase::Versions,
        after: None,
        step: 0,
        keys: 0,
        actions: 0,
    };
    let body = serde_json::to_vec(&task).expect("a task serializes");
    kafka::send(p, &roles.topics.lifecycle_bucket_tasks, bucket, Some(&body)).await?;
    tracing::info!(bucket, pass = state.pass, "lifecycle pass started");
    Ok(state)
}

async fn publish(
    roles: &Roles,
    p: &Producer,
    bucket: &str,
    s: &PassState,
) -> Result<(), QueueError> {
    let body = serde_json::to_vec(s).expect("a pass state serializes");
    kafka::send(p, &roles.topics.lifecycle_passes, bucket, Some(&body))
        .await
        .map(|_| ())
}

/// While lifecycle is paused: the consumer's partitions paused (again each round, for
/// partitions a rebalance adds), the consumer still polled (so it stays in its group), and
/// a message fetched before the pause put back. Returns once resumed, or at shutdown.
async fn hold(
    consumer: &Arc<kafka::Consumer<DefaultConsumerContext>>,
    topic: &str,
    paused: &Control,
    shutdown: &Shutdown,
) {
    if !paused.borrow().paused_now() {
        return;
    }
    tracing::info!(topic, "lifecycle paused");
    while paused.borrow().paused_now() && !shutdown.is_set() {
        if let Ok(a) = consumer.assignment() {
            let _ = consumer.pause(&a);
        }
        if let Some(Ok(m)) = kafka::recv_within(consumer, Duration::from_millis(200)).await {
            let (p, o) = (m.partition(), m.offset());
            drop(m);
            let (c, t) = (consumer.clone(), topic.to_string());
            let seek = move || c.seek(&t, p, Offset::Offset(o), Duration::from_secs(5));
            if let Err(e) = glommio::executor().spawn_blocking(seek).await {
                tracing::warn!(topic, partition = p, offset = o, error = %e, "cannot put back a task fetched before the pause");
            }
        }
    }
    if let Ok(a) = consumer.assignment() {
        let _ = consumer.resume(&a);
    }
    tracing::info!(topic, "lifecycle resumed");
}

/// The next task (within 500 ms): its partition, offset, and the task or why it is not
/// one (a signature that does not check, a record that does not decode).
async fn next_task<T>(
    consumer: &kafka::Consumer<DefaultConsumerContext>,
    decode: fn(&[u8]) -> Result<T, String>,
) -> Option<(i32, i64, Result<T, String>)> {
    let Some(Ok(m)) = kafka::recv_within(consumer, Duration::from_millis(500)).await else {
        return None;
    };
    let task = crate::queue::signing::check(&m)
        .map_err(|e| e.to_string())
        .and_then(|()| decode(m.payload().unwrap_or_default()));
    Some((m.partition(), m.offset(), task))
}

/// How long a task may take before its consumer is polled while it goes on.
fn poll_after(roles: &Roles) -> Duration {
    let poll_interval = u64::from(roles.membership.max_poll_interval_ms);
    Duration::from_millis(poll_interval / 4).min(Duration::from_secs(5))
}

/// Commits the offset after `offset`.
fn commit(
    consumer: &kafka::Consumer<DefaultConsumerContext>,
    topic: &str,
    partition: i32,
    offset: i64,
) {
    let mut tpl = TopicPartitionList::new();
    let _ = tpl.add_partition_offset(topic, partition, Offset::Offset(offset + 1));
    if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
        tracing::warn!(topic, partition, error = %e, "commit failed");
    }
}

/// Bucket processors: each task is one step of a pass, done (retried until it is) before
/// its offset is committed.
async fn bucket_processor(
    roles: Rc<Roles>,
    producer: Producer,
    paused: Control,
    shutdown: Shutdown,
) -> Result<(), QueueError> {
    let topic = roles.topics.lifecycle_bucket_tasks.clone();
    let consumer = Arc::new(roles.consumer("bucket", &topic)?);
    // Blocks this executor while it asks for the topic's partitions, once, at start.
    let (b, t) = (&roles.brokers, &roles.topics.lifecycle_passes);
    let passes = control::follow_all(b, t, PassState::decode, shutdown.clone())?;
    let bp = BucketProcessor {
        roles: &roles,
        producer: &producer,
        passes,
    };
    while !shutdown.is_set() {
        hold(&consumer, &topic, &paused, &shutdown).await;
        let Some((partition, offset, task)) = next_task(&consumer, BucketTask::decode).await else {
            continue;
        };
        match task {
            Ok(task) if bp.superseded(&task).is_some() => {
                let why = bp.superseded(&task).unwrap_or_default();
                tracing::info!(
                    bucket = task.bucket,
                    pass = task.pass,
                    step = task.step,
                    "lifecycle step dropped: {why}"
                );
            }
            Ok(task) => {
                let attempt = |_| bp.step(&task);
                let what = format!("lifecycle step over {}", task.bucket);
                let work = retry(
                    &RetryPolicy::LIFECYCLE_STEP,
                    &shutdown,
                    what,
                    |_: &String| false,
                    attempt,
                );
                let after = poll_after(&roles);
                match kafka::polled_while(&consumer, &topic, after, work).await {
                    Ok(()) => {}
                    // Shut down: the step is done again after a restart.
                    Err(g) if g.cancelled => return Ok(()),
                    Err(g) => bp.give_up(&task, g.error).await,
                }
            }
            Err(e) => {
                tracing::warn!(partition, offset, error = %e, "lifecycle bucket task ignored")
            }
        }
        commit(&consumer, &topic, partition, offset);
    }
    Ok(())
}

/// A bucket processor: the passes' states (the compacted passes topic, and what it wrote
/// itself), to recognize a step that is not the pass's next.
struct BucketProcessor<'a> {
    roles: &'a Roles,
    producer: &'a Producer,
    passes: control::Compacted<PassState>,
}

impl BucketProcessor<'_> {
    /// Why `t` is not to be done: its pass was replaced by a newer one, or the step was
    /// done already (delivered twice, or produced twice by a step done again).
    fn superseded(&self, t: &BucketTask) -> Option<&'static str> {
        let passes = self.passes.borrow();
        let s = passes.get(&t.bucket)?;
        if t.pass < s.pass {
            return Some("a newer pass over the bucket has started");
        }
        (t.pass == s.pass && t.step < s.step).then_some("the step was done already")
    }

    async fn publish(&self, bucket: &str, s: PassState) -> Result<(), String> {
        publish(self.roles, self.producer, bucket, &s)
            .await
            .map_err(|e| e.to_string())?;
        self.passes.borrow_mut().insert(bucket.to_string(), s);
        Ok(())
    }

    /// A step failed for good: the pass ends, saying why (the next one tries again).
    async fn give_up(&self, t: &BucketTask, error: String) {
        tracing::warn!(
            bucket = t.bucket,
            pass = t.pass,
            error,
            "lifecycle pass given up"
        );
        let mut s = state_of(t, false);
        s.step = t.step + 1;
        s.error = Some(error);
        if let Err(e) = self.publish(&t.bucket, s).await {
            tracing::warn!(
                bucket = t.bucket,
                error = e,
                "lifecycle pass state not written"
            );
        }
    }

    /// One step of a pass: its actions produced, then the next step (or the pass recorded
    /// as finished).
    async fn step(&self, task: &BucketTask) -> Result<(), String> {
        let roles = self.roles;
        let Some(r) = resolve(&roles.cfg, &task.bucket).await? else {
            return self.finish(task, 0).await;
        };
        let (actions, next) = self.list(&r, task).await?;
        let n = actions.len() as u64;
        for a in actions {
            let key = format!("{}/{}", a.bucket, a.key);
            let t = ObjectTask {
                v: 1,
                pass: task.pass.clone(),
                action: a,
            };
            let body = serde_json::to_vec(&t).expect("a task serializes");
            let topic = &roles.topics.lifecycle_object_tasks;
            let sent = kafka::send(self.producer, topic, &key, Some(&body)).await;
            sent.map_err(|e| e.to_string())?;
        }
        let Some((phase, after, keys)) = next else {
            return self.finish(task, n).await;
        };
        let t = BucketTask {
            phase,
            after,
            step: task.step + 1,
            keys: task.keys + keys,
            actions: task.actions + n,
            ..task.clone()
        };
        let body = serde_json::to_vec(&t).expect("a task serializes");
        let topic = &roles.topics.lifecycle_bucket_tasks;
        let sent = kafka::send(self.producer, topic, &task.bucket, Some(&body)).await;
        sent.map_err(|e| e.to_string())?;
        self.publish(&task.bucket, state_of(&t, true)).await
    }

    /// The step's listing: the actions to produce and what the next step lists (`None`:
    /// the pass is over). Actions waiting for their sites are counted, not produced.
    async fn list(
        &self,
        r: &Resolved,
        task: &BucketTask,
    ) -> Result<
        (
            Vec<crate::lifecycle::eval::Action>,
            Option<(Phase, Option<String>, u64)>,
        ),
        String,
    > {
        let roles = self.roles;
        let pass = pass_of(roles, r, &task.bucket);
        match task.phase {
            Phase::Versions => {
                let page = roles.cfg.lifecycle.page_keys;
                let s = pass
                    .step(task.after.clone(), page)
                    .await
                    .map_err(|e| e.to_string())?;
                roles.stats.scanned(&task.bucket, s.versions);
                for a in &s.waiting {
                    roles.stats.action(&a.bucket, kind_name(&a.kind), "skipped");
                }
                let next = match s.next {
                    Some(after) => Some((Phase::Versions, Some(after), s.keys)),
                    None if r.rules.aborts_uploads() => Some((Phase::Uploads, None, s.keys)),
                    None => None,
                };
                Ok((s.actions, next))
            }
            Phase::Uploads => {
                let mut report = Default::default();
                let a = pass
                    .upload_actions(&mut report)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok((a, None))
            }
        }
    }

    async fn finish(&self, task: &BucketTask, n: u64) -> Result<(), String> {
        let t = BucketTask {
            actions: task.actions + n,
            step: task.step + 1,
            ..task.clone()
        };
        tracing::info!(
            bucket = t.bucket,
            pass = t.pass,
            keys = t.keys,
            actions = t.actions,
            "lifecycle pass finished"
        );
        let started = crate::time::parse_rfc3339(&state_of(&t, false).started);
        if let Some(took) = started.and_then(|s| SystemTime::now().duration_since(s).ok()) {
            self.roles.stats.pass_finished(&t.bucket, took);
        }
        self.publish(&task.bucket, state_of(&t, false)).await
    }
}

fn state_of(t: &BucketTask, running: bool) -> PassState {
    let started = t.pass.rsplit_once('-').map_or(t.pass.as_str(), |(s, _)| s);
    PassState {
        pass: t.pass.clone(),
        running,
        started: started.to_string(),
        at: now(),
        keys: t.keys,
        actions: t.actions,
        step: t.step,
        error: None,
    }
}

fn pass_of<'a>(roles: &Roles, r: &'a Resolved, bucket: &'a str) -> Pass<'a, super::ReplicaGuard> {
    Pass {
        client: &r.source,
        bucket,
        rules: &r.rules,
        clock: roles.clock(),
        dry_run: false,
        guard: &r.guard,
        versioned: r.versioned,
    }
}

/// Object processors: each action checked again and carried out, then its offset
/// committed. An action that fails is tried again a few times; after that the next pass
/// decides it again.
async fn object_processor(
    roles: Rc<Roles>,
    paused: Control,
    sites: SitePauses,
    shutdown: Shutdown,
) -> Result<(), QueueError> {
    let topic = roles.topics.lifecycle_object_tasks.clone();
    let consumer = Arc::new(roles.consumer("object", &topic)?);
    let resolved: RefCell<BTreeMap<String, (Instant, Rc<Resolved>)>> = Default::default();
    while !shutdown.is_set() {
        hold(&consumer, &topic, &paused, &shutdown).await;
        let Some((partition, offset, task)) = next_task(&consumer, ObjectTask::decode).await else {
            continue;
        };
        match task {
            Ok(t) if transition_paused(&sites, &t).is_some() => {
                let why = transition_paused(&sites, &t).unwrap_or_default();
                let a = &t.action;
                roles.stats.action(&a.bucket, kind_name(&a.kind), "skipped");
                tracing::info!(
                    bucket = a.bucket,
                    key = a.key,
                    "lifecycle action skipped: {why}"
                );
            }
            Ok(t) => {
                // A long action (a copy to a site) keeps the member polled.
                let work = execute(&roles, &resolved, &t, &shutdown);
                kafka::polled_while(&consumer, &topic, poll_after(&roles), work).await
            }
            Err(e) => {
                tracing::warn!(partition, offset, error = %e, "lifecycle object task ignored")
            }
        }
        commit(&consumer, &topic, partition, offset);
    }
    Ok(())
}

/// Why `t` waits, when it is a transition to a site whose lifecycle is paused (the next
/// pass decides it again).
fn transition_paused(sites: &SitePauses, t: &ObjectTask) -> Option<String> {
    let crate::lifecycle::eval::Kind::Transition { storage_class, .. } = &t.action.kind else {
        return None;
    };
    let paused = sites.get(storage_class)?.borrow().paused_now();
    paused.then(|| format!("lifecycle transitions to site {storage_class} are paused"))
}

/// The bucket's rules and guard, read again at most every minute.
async fn resolved_for(
    roles: &Roles,
    cache: &RefCell<BTreeMap<String, (Instant, Rc<Resolved>)>>,
    bucket: &str,
) -> Result<Option<Rc<Resolved>>, String> {
    if let Some((at, r)) = cache.borrow().get(bucket) {
        if at.elapsed() < Duration::from_secs(60) {
            return Ok(Some(r.clone()));
        }
    }
    let Some(r) = resolve(&roles.cfg, bucket).await? else {
        return Ok(None);
    };
    let r = Rc::new(r);
    cache
        .borrow_mut()
        .insert(bucket.to_string(), (Instant::now(), r.clone()));
    Ok(Some(r))
}

async fn execute(
    roles: &Roles,
    cache: &RefCell<BTreeMap<String, (Instant, Rc<Resolved>)>>,
    t: &ObjectTask,
    shutdown: &Shutdown,
) {
    let a = &t.action;
    let attempt = |_| async {
        let r = resolved_for(roles, cache, &a.bucket).await?;
        let Some(r) = r else {
            return Ok(Outcome::Skipped(
                "the bucket has no lifecycle rules now".into(),
            ));
        };
        match pass_of(roles, &r, &a.bucket).execute(a).await {
            Outcome::Failed(e) => Err(e),
            o => Ok(o),
        }
    };
    let policy = RetryPolicy::with_attempts(3);
    let what = format!("lifecycle {} of {}/{}", kind_name(&a.kind), a.bucket, a.key);
    let outcome = match retry(&policy, shutdown, what, |_: &String| false, attempt).await {
        Ok(o) => o,
        Err(g) => Outcome::Failed(g.error),
    };
    let kind = kind_name(&a.kind);
    roles.stats.action(&a.bucket, kind, outcome_name(&outcome));
    let (bucket, key, version, rule, pass) = (&a.bucket, &a.key, &a.version_id, &a.rule, &t.pass);
    match &outcome {
        Outcome::Failed(e) => {
            tracing::warn!(kind, bucket, key, version, rule, pass, error = %e, "lifecycle action failed (the next pass decides it again)")
        }
        o => {
            tracing::info!(kind, bucket, key, version, rule, pass, outcome = ?o, "lifecycle action")
        }
    }
}

/// An outcome's name in metrics.
pub fn outcome_name(o: &Outcome) -> &'static str {
    match o {
        Outcome::Done => "done",
        Outcome::WouldDo => "planned",
        Outcome::Skipped(_) => "skipped",
        Outcome::Failed(_) => "failed",
    }
}
