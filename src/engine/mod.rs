//! The long-running roles, wired from the configuration: `populate`, `replicate --site` and
//! `run` (all of them in one process).
//!
//! Owns: the roles' wiring, bucket discovery and adoption (`buckets`), the site worker (`site_worker`: the consumer group member
//! that feeds the replication pipeline, records outcomes and commits offsets), and the
//! lifecycle role (`lifecycle`: a bucket's rules, the replication guard, a pass now), and
//! the roles' threads and their bounded stop (`roles`).
//! May call: `config`, `queue`, `populate`, `replication`, `shard`, `s3`, `metrics`, `api`,
//! `time`, `retry`, `failure`, `lifecycle`, `bandwidth`, `buckets`.

pub mod buckets;
pub mod ingest;
pub mod lifecycle;
pub mod roles;
pub mod site_worker;
pub mod transient;

use crate::s3::customer_key::CustomerKeys;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::credentials;
use crate::config::file::{Config, EndpointSettings};
use crate::metrics::Stats;
use crate::populate::settle;
use crate::populate::worker::{self as populate, PopulateConfig, SiteTarget};
use crate::queue::backpressure::Backpressure;
use crate::queue::kafka::{self, Topics};
use crate::queue::replayer::Schedule;
use crate::replication::{Options, RetryPolicy};
use crate::s3::ops::bucket::Versioning;
use crate::s3::{ChecksumTransport, Client, Endpoint, EndpointConfig};
use crate::shard::{self, Shutdown};
use site_worker::{self as replicate, WorkerConfig};

/// Why the engine could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Queue(#[from] kafka::QueueError),
    #[error(transparent)]
    Populate(#[from] populate::PopulateError),
    #[error(transparent)]
    Shard(#[from] shard::ShardError),
    #[error("stop not finished {seconds} s after it began (still running: {roles}); what they had not committed is replayed at the next start")]
    StopTimeout { roles: String, seconds: u64 },
}

/// A site's endpoint and settings.
pub struct Site {
    pub endpoint: Arc<Endpoint>,
    pub buckets: crate::buckets::NameMap,
    /// Create a source bucket's site bucket when missing.
    pub create_buckets: bool,
    pub versioned: bool,
    /// What the site's replicas carry beyond bytes and metadata.
    pub policy: Arc<crate::replication::ReplicaPolicy>,
}

/// Buckets the health route asks about (the first ones known).
const HEALTH_BUCKETS: usize = 20;

/// Entries the embedded broker may hold unconsumed: with entries under 1 KiB spread over the
/// partitions, far below the ~5 MiB per partition it keeps.
pub const EMBEDDED_OUTSTANDING: u64 = 2000;

/// The brokers to use: the configured ones, whose topics are created if missing, or an
/// embedded in-process broker (with its topics) when none is configured.
fn connect_kafka(
    cfg: &Config,
    topics: &Topics,
) -> Result<(String, Option<EmbeddedBroker>), EngineError> {
    let (p, rf) = (cfg.kafka.partitions, cfg.kafka.replication_factor);
    if cfg.kafka.brokers.is_empty() {
        tracing::warn!("no Kafka brokers configured: using an embedded in-process broker, which is NOT durable (entries are lost when the process stops)");
        let mock = rdkafka::mocking::MockCluster::new(1)
            .map_err(|e| EngineError::Setup(format!("embedded broker: {e}")))?;
        let replay = replay_topics(cfg, topics);
        let fixed = [
            &topics.events,
            &topics.replication,
            &topics.status,
            &topics.failed,
            &topics.control,
            &topics.lifecycle_bucket_tasks,
            &topics.lifecycle_object_tasks,
            &topics.lifecycle_passes,
            &topics.buckets,
            &topics.gc,
        ];
        for t in fixed.into_iter().chain(&replay) {
            mock.create_topic(t, p, 1)
                .map_err(|e| EngineError::Setup(format!("embedded broker topic {t}: {e}")))?;
        }
        return Ok((mock.bootstrap_servers(), Some(EmbeddedBroker(mock))));
    }
    let brokers = cfg.kafka.brokers.join(",");
    secure_kafka(cfg)?;
    let (b, t) = (brokers.clone(), topics.clone());
    let replay = replay_topics(cfg, topics);
    shard::block_on(async move {
        let mut wanted = vec![
            (t.events.as_str(), p, rf, false),
            (t.replication.as_str(), p, rf, false),
            (t.status.as_str(), p, rf, false),
            (t.failed.as_str(), p, rf, true),
            (t.control.as_str(), 1, rf, true),
            (t.lifecycle_bucket_tasks.as_str(), p, rf, false),
            (t.lifecycle_object_tasks.as_str(), p, rf, false),
            (t.lifecycle_passes.as_str(), 1, rf, true),
            (t.buckets.as_str(), 1, rf, true),
            (t.gc.as_str(), p, rf, false),
        ];
        wanted.extend(replay.iter().map(|r| (r.as_str(), p, rf, false)));
        kafka::ensure_topics(&b, &wanted).await
    })??;
    Ok((brokers, None))
}

/// The API's TLS settings, when `api.cert_file` and `api.key_file` are given.
fn api_tls(
    api: &crate::config::file::ApiConfig,
) -> Result<Option<Arc<rustls::ServerConfig>>, EngineError> {
    match (&api.cert_file, &api.key_file) {
        (Some(c), Some(k)) => crate::api::tls_config(c, k)
            .map(Some)
            .map_err(|e| EngineError::Setup(format!("api.cert_file / api.key_file: {e}"))),
        _ => Ok(None),
    }
}

/// Installs `[kafka]`'s TLS and SASL settings for every Kafka client of the process.
fn secure_kafka(cfg: &Config) -> Result<(), EngineError> {
    let k = cfg.kafka.security();
    let mut s = kafka::Security::default().set("security.protocol", k.security_protocol.as_str());
    if k.security_protocol.sasl() {
        let env = |name: &str| std::env::var(name).ok();
        let password = k
            .password(&env)
            .map_err(|(key, m)| EngineError::Setup(format!("{key}: {m}")))?;
        let mechanism = k.sasl_mechanism.map_or("PLAIN", |m| m.as_str());
        s = s
            .set("sasl.mechanisms", mechanism)
            .set("sasl.username", k.sasl_username.clone().unwrap_or_default())
            .set("sasl.password", password);
    }
    let files = [
        ("ssl.ca.location", &k.ca_file),
        ("ssl.certificate.location", &k.cert_file),
        ("ssl.key.location", &k.key_file),
    ];
    for (key, path) in files {
        if let Some(p) = path {
            s = s.set(key, p.display().to_string());
        }
    }
    if !kafka::secure(s) {
        let e = "kafka security settings differ from those this process already uses";
        return Err(EngineError::Setup(e.into()));
    }
    if let Some(path) = &k.signing_key_file {
        let key = crate::config::kafka_security::signing_key(path)
            .map_err(|m| EngineError::Setup(format!("kafka.signing_key_file: {m}")))?;
        if !crate::queue::signing::sign_with(&key) {
            let e = "kafka.signing_key_file differs from the key this process already uses";
            return Err(EngineError::Setup(e.into()));
        }
    }
    Ok(())
}

/// Every site's replay topics and the populator's, one per step of the delay schedule.
fn replay_topics(cfg: &Config, topics: &Topics) -> Vec<String> {
    let steps = cfg.replay.delays_seconds.len();
    let sites = cfg.sites.keys();
    let events = (0..steps).map(|i| topics.events_replay(i));
    sites
        .flat_map(|s| (0..steps).map(move |i| topics.replay(s, i)))
        .chain(events)
        .collect()
}

/// At most this many buckets are checked at start (with patterns there may be thousands:
/// the others are checked when their entries come).
const CHECKED_AT_START: usize = 100;

/// Checks the known buckets once, so a missing bucket or rejected credentials is said at
/// start: the source must be usable; a site that is not is warned about (its entries fail,
/// and are listed, until it is fixed), and its missing buckets created where it has
/// `create_buckets`. Records whether each site's buckets keep versions.
fn check_buckets(
    known: &[String],
    source: &Arc<Endpoint>,
    sites: &mut BTreeMap<String, Site>,
) -> Result<(), EngineError> {
    let buckets: Vec<String> = known.iter().take(CHECKED_AT_START).cloned().collect();
    let site_list: Vec<(String, Arc<Endpoint>, crate::buckets::NameMap, bool)> = sites
        .iter()
        .map(|(n, s)| {
            (
                n.clone(),
                s.endpoint.clone(),
                s.buckets.clone(),
                s.create_buckets,
            )
        })
        .collect();
    let src = source.clone();
    let versioning = shard::block_on(async move {
        let source = Client::new(src.clone(), None);
        let mut out = Vec::new();
        for b in &buckets {
            match source.get_bucket_versioning(b).await {
                Ok(_) => {}
                Err(e) if e.code() == "NotImplemented" => {}
                Err(e) => return Err(format!("source: bucket {b:?} at {}: {e}", src.label())),
            }
            for (name, ep, names, create) in &site_list {
                let dest = names.dest(b);
                let site = Client::new(ep.clone(), None);
                if *create {
                    if let Err(e) = buckets::ensure_site_bucket(&source, &site, b, &dest).await {
                        tracing::warn!("site {name}: bucket {dest:?} at {} could not be created: {e}; its entries will fail until this is fixed", ep.label());
                    }
                }
                match site.get_bucket_versioning(&dest).await {
                    Ok(v) => out.push((name.clone(), v)),
                    Err(e) if e.code() == "NotImplemented" => {
                        out.push((name.clone(), Versioning::Unversioned))
                    }
                    Err(e) => {
                        tracing::warn!("site {name}: bucket {dest:?} at {} is not usable: {e}; its entries will fail until this is fixed", ep.label());
                    }
                }
            }
        }
        Ok(out)
    })?
    .map_err(EngineError::Setup)?;
    for (name, v) in versioning {
        if let Some(s) = sites.get_mut(&name) {
            s.versioned &= v == Versioning::Enabled;
        }
    }
    Ok(())
}

/// The selected source buckets that exist at start: those named, or (with patterns) those
/// the source lists.
fn known_at_start(cfg: &Config, source: &Arc<Endpoint>) -> Result<Vec<String>, EngineError> {
    if let Some(fixed) = cfg.source.buckets.fixed() {
        return Ok(fixed);
    }
    let (src, sel) = (source.clone(), cfg.source.buckets.clone());
    let listed = shard::block_on(async move {
        let c = Client::new(src, None);
        buckets::list_selected(&c, &sel).await
    })?;
    let found = listed.map_err(|e| {
        EngineError::Setup(format!(
            "source: listing buckets at {} (source.buckets has patterns: {}): {e}; the credentials need s3:ListAllMyBuckets",
            source.label(),
            cfg.source.buckets.text()
        ))
    })?;
    tracing::info!(
        buckets = found.len(),
        selection = cfg.source.buckets.text(),
        "source buckets selected"
    );
    Ok(found)
}

/// The data path's options from `[replication]`.
fn options(cfg: &Config) -> Options {
    let r = &cfg.replication;
    Options {
        multipart_threshold: r.multipart_threshold,
        part_size: r.part_size,
        part_concurrency: r.part_concurrency,
        window: r.window,
        retry: RetryPolicy::with_attempts(r.attempts),
        replicate_replicas: cfg.source.replicate_replicas,
    }
}

/// Everything resolved from the configuration.
pub struct Engine {
    pub cfg: Config,
    pub brokers: String,
    pub topics: Topics,
    pub source: Arc<Endpoint>,
    pub sites: BTreeMap<String, Site>,
    /// With the embedded broker: bounds entries produced and not yet consumed.
    pub backpressure: Option<Arc<Backpressure>>,
    /// Counters per site (what `run` and the API report).
    pub site_stats: BTreeMap<String, Arc<Stats>>,
    /// Lifecycle's counters (exported by the API).
    pub lifecycle_stats: Arc<crate::metrics::lifecycle::LifecycleStats>,
    /// The selected source buckets known to exist (refreshed by discovery with patterns).
    pub known: Arc<crate::buckets::Known>,
    /// Bucket discovery's figures.
    pub bucket_stats: Arc<crate::metrics::buckets::BucketStats>,
    /// Incremental ingestion's figures.
    pub ingest_stats: Arc<crate::metrics::ingest::IngestStats>,
    /// Transient sources' figures.
    pub transient_stats: Arc<crate::metrics::transient::TransientStats>,
}

/// The embedded in-process broker, used when the configuration names none. It lives as long
/// as this value (kept by the thread that started the engine).
pub struct EmbeddedBroker(
    #[allow(dead_code)]
    rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
);

/// The source's endpoint, with its buckets' SSE-C keys.
pub(crate) fn source_endpoint(cfg: &Config) -> Result<Arc<Endpoint>, EngineError> {
    let keys = cfg.source.customer_keys.clone();
    let writes = (ChecksumTransport::Trailer, false, keys);
    endpoint("source", &cfg.source.s3, writes, &cfg.replication)
}

/// A site's endpoint, with the SSE-C key its replicas are written with.
pub(crate) fn site_endpoint(
    name: &str,
    s: &crate::config::file::SiteConfig,
    tuning: &crate::config::file::ReplicationTuning,
) -> Result<Arc<Endpoint>, EngineError> {
    let keys = CustomerKeys {
        by_bucket: Default::default(),
        any_bucket: s.customer_key.clone(),
    };
    let writes = (s.checksum, s.verify_after_write, keys);
    endpoint(&format!("site {name}"), &s.s3, writes, tuning)
}

/// An endpoint from its settings; `writes` says how uploads carry their CRC32C, whether
/// multipart copies are read back, and the SSE-C keys of its buckets.
fn endpoint(
    name: &str,
    s: &EndpointSettings,
    writes: (ChecksumTransport, bool, CustomerKeys),
    tuning: &crate::config::file::ReplicationTuning,
) -> Result<Arc<Endpoint>, EngineError> {
    let (checksum, verify, customer_keys) = writes;
    let creds = credentials::resolve(s.profile.as_deref(), &credentials::ProcessEnv)
        .map_err(|e| EngineError::Setup(format!("{name} credentials: {e}")))?;
    let mut c = EndpointConfig::new(&s.endpoint, &s.region, creds);
    c.path_style = s.path_style;
    c.ca_file = s.ca_file.clone();
    c.checksum = checksum;
    c.verify_after_write = verify;
    c.customer_keys = customer_keys;
    c.read_buffer = tuning.read_buffer as usize;
    c.socket_buffer = (tuning.socket_buffer > 0).then_some(tuning.socket_buffer as usize);
    let idle = s
        .io_idle_timeout_seconds
        .unwrap_or(tuning.io_idle_timeout_seconds);
    c.io_idle_timeout = Duration::from_secs(idle);
    c.request_deadline = s.request_deadline_seconds.map(Duration::from_secs);
    c.min_rate = tuning.min_rate;
    Endpoint::new(c).map_err(|e| EngineError::Setup(format!("{name}: {e}")))
}

impl Engine {
    /// Resolves endpoints and credentials, starts the embedded broker if needed, creates the
    /// topics and checks each site's buckets.
    pub fn start(cfg: Config) -> Result<(Self, Option<EmbeddedBroker>), EngineError> {
        if cfg.source.s3.endpoint.is_empty() {
            return Err(EngineError::Setup("source.endpoint is not set".into()));
        }
        if cfg.source.buckets.is_empty() {
            let e = "source.buckets is empty: name the buckets to replicate, or patterns such as [\"*\"] (entries for any other bucket are refused)";
            return Err(EngineError::Setup(e.into()));
        }
        let tuning = &cfg.replication;
        let source = source_endpoint(&cfg)?;
        let topics = Topics::new(&cfg.kafka.topic_prefix);
        let (brokers, embedded) = connect_kafka(&cfg, &topics)?;
        let mut sites = BTreeMap::new();
        for (name, s) in &cfg.sites {
            let ep = site_endpoint(name, s, tuning)?;
            let site = Site {
                endpoint: ep,
                buckets: s.buckets.clone(),
                create_buckets: s.create_buckets,
                versioned: true,
                policy: Arc::new(s.policy.clone()),
            };
            sites.insert(name.clone(), site);
        }
        let known = known_at_start(&cfg, &source)?;
        check_buckets(&known, &source, &mut sites)?;
        let bucket_stats = Arc::new(crate::metrics::buckets::BucketStats::default());
        bucket_stats.set_known(known.len());
        let known = Arc::new(crate::buckets::Known::new(known));
        let site_stats: BTreeMap<String, Arc<Stats>> =
            sites.keys().map(|n| (n.clone(), Stats::new())).collect();
        let backpressure = embedded
            .as_ref()
            .map(|_| Backpressure::new(sites.len(), EMBEDDED_OUTSTANDING));
        Ok((
            Self {
                cfg,
                brokers,
                topics,
                source,
                sites,
                backpressure,
                site_stats,
                lifecycle_stats: Default::default(),
                known,
                bucket_stats,
                ingest_stats: Default::default(),
                transient_stats: Default::default(),
            },
            embedded,
        ))
    }

    fn options(&self) -> Options {
        options(&self.cfg)
    }

    pub fn shards(&self) -> usize {
        match self.cfg.replication.shards {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            n => n,
        }
    }

    /// The worker configuration of one site.
    pub fn worker_config(&self, site: &str) -> Result<WorkerConfig, EngineError> {
        let s = self.sites.get(site).ok_or_else(|| {
            EngineError::Setup(format!(
                "site {site:?} is not configured (configured: {})",
                self.sites.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })?;
        Ok(WorkerConfig {
            site: site.to_string(),
            brokers: self.brokers.clone(),
            topics: self.topics.clone(),
            group: kafka::replication_group(&self.cfg.kafka.topic_prefix, site),
            membership: self.membership(),
            source: self.source.clone(),
            dest: s.endpoint.clone(),
            buckets: s.buckets.clone(),
            create_buckets: s.create_buckets,
            source_buckets: self.cfg.source.buckets.clone(),
            dest_versioned: s.versioned,
            policy: s.policy.clone(),
            bandwidth: None,
            opts: self.options(),
            concurrency: self.cfg.replication.concurrency,
            shard_parts: self.cfg.replication.shard_parts(),
            drain_deadline: Duration::from_secs(self.cfg.kafka.drain_deadline_seconds),
            commit_interval: Duration::from_millis(self.cfg.kafka.commit_interval_ms.into()),
            consumed: self.backpressure.as_ref().and_then(|b| {
                self.sites
                    .keys()
                    .position(|n| n == site)
                    .map(|i| b.site_counter(i))
            }),
            replay: replicate::ReplayConfig {
                schedule: self.schedule(),
                group: kafka::replay_group(&self.cfg.kafka.topic_prefix, site),
            },
        })
    }

    pub fn populate_config(&self, shutdown: Shutdown) -> PopulateConfig {
        PopulateConfig {
            brokers: self.brokers.clone(),
            topics: self.topics.clone(),
            group: format!("{}populate", self.cfg.kafka.topic_prefix),
            membership: self.membership(),
            source: self.source.clone(),
            buckets: self.cfg.source.buckets.clone(),
            rules_file: self.cfg.source.rules_file.clone(),
            default_rules_file: self.cfg.source.default_rules_file.clone(),
            sites: self
                .sites
                .iter()
                .map(|(n, s)| {
                    (
                        n.clone(),
                        SiteTarget {
                            endpoint: s.endpoint.clone(),
                            group: kafka::replication_group(&self.cfg.kafka.topic_prefix, n),
                            replay_group: kafka::replay_group(&self.cfg.kafka.topic_prefix, n),
                            buckets: s.buckets.clone(),
                            create_buckets: s.create_buckets,
                            versioned: s.versioned,
                            policy: s.policy.clone(),
                        },
                    )
                })
                .collect(),
            backpressure: self.backpressure.clone(),
            shutdown,
            schedule: self.schedule(),
            replay_group: format!("{}populate-replay", self.cfg.kafka.topic_prefix),
        }
    }

    /// The replay schedule of sites and of the populator.
    fn schedule(&self) -> Schedule {
        let r = &self.cfg.replay;
        Schedule {
            delays: r
                .delays_seconds
                .iter()
                .map(|s| Duration::from_secs(*s))
                .collect(),
            patience: Duration::from_secs(r.patience_seconds),
        }
    }

    /// How this node's consumers stay members of their groups.
    fn membership(&self) -> kafka::Membership {
        kafka::Membership {
            session_timeout_ms: self.cfg.kafka.session_timeout_ms,
            max_poll_interval_ms: self.cfg.kafka.max_poll_interval_ms,
            fetch_wait_ms: self.cfg.kafka.fetch_wait_ms,
        }
    }

    /// Runs the site's shards until shutdown.
    pub fn replicate(
        &self,
        site: &str,
        shards: usize,
        stats: Arc<Stats>,
        shutdown: Shutdown,
    ) -> Result<(), EngineError> {
        let mut wc = self.worker_config(site)?;
        if let Some(t) = self.cfg.sites.get(site).and_then(|s| s.bandwidth.clone()) {
            let node = crate::bandwidth::NodeLimit::new(t, shards);
            tracing::info!(
                site,
                bandwidth = node.timetable().text(),
                "bandwidth limited"
            );
            let _ = stats.bandwidth.set(node.clone());
            wc.bandwidth = Some(node);
        }
        let results = shard::run(shards, self.cfg.replication.placement, move |_i| {
            let (wc, stats, shutdown) = (wc.clone(), stats.clone(), shutdown.clone());
            async move {
                replicate::run_shard(wc, stats, shutdown)
                    .await
                    .map_err(|e| e.to_string())
            }
        })?;
        for r in results {
            r.map_err(EngineError::Setup)?;
        }
        Ok(())
    }

    /// Runs the event populator until shutdown.
    pub fn populate(&self, stats: Arc<Stats>, shutdown: Shutdown) -> Result<(), EngineError> {
        let pc = self.populate_config(shutdown.clone());
        shard::block_on(async move { populate::run_events(pc, stats, shutdown).await })??;
        Ok(())
    }

    /// Runs lifecycle's conductor and processors (one member of each group) until shutdown.
    pub fn lifecycle(&self, shutdown: Shutdown) -> Result<(), EngineError> {
        let roles = lifecycle::roles::Roles {
            cfg: Arc::new(self.cfg.clone()),
            brokers: self.brokers.clone(),
            topics: self.topics.clone(),
            membership: self.membership(),
            stats: self.lifecycle_stats.clone(),
            known: self.known.clone(),
        };
        let shards = self.shards();
        tracing::info!(
            shards,
            "lifecycle: conductor, bucket and object processors running"
        );
        let results = shard::run(shards, self.cfg.replication.placement, move |i| {
            let (roles, shutdown) = (roles.clone(), shutdown.clone());
            async move {
                let r = lifecycle::roles::run(roles, i, shutdown).await;
                r.map_err(|e| e.to_string())
            }
        })?;
        for r in results {
            r.map_err(EngineError::Setup)?;
        }
        Ok(())
    }

    /// Starts the operations API (health, readiness, Prometheus metrics).
    fn start_api(&self, shutdown: Shutdown) -> Result<Arc<crate::api::ApiState>, EngineError> {
        let token = match &self.cfg.api.token_file {
            Some(p) => {
                Some(crate::api::read_token(p).map_err(|e| EngineError::Setup(e.to_string()))?)
            }
            None => None,
        };
        // Health asks about a few buckets, not thousands.
        let checked: Vec<String> = self.known.list().into_iter().take(HEALTH_BUCKETS).collect();
        let mut endpoints: Vec<(String, Arc<Endpoint>, String)> = checked
            .iter()
            .map(|b| ("source".to_string(), self.source.clone(), b.clone()))
            .collect();
        for (name, s) in &self.sites {
            for b in &checked {
                endpoints.push((name.clone(), s.endpoint.clone(), s.buckets.dest(b)));
            }
        }
        let state = Arc::new(crate::api::ApiState {
            sites: self.site_stats.clone(),
            lifecycle: self.lifecycle_stats.clone(),
            brokers: self.brokers.clone(),
            endpoints,
            token,
            replication_topic: self.topics.replication.clone(),
            control_topic: self.topics.control.clone(),
            failed_topic: self.topics.failed.clone(),
            groups: self
                .sites
                .keys()
                .map(|n| {
                    (
                        n.clone(),
                        kafka::replication_group(&self.cfg.kafka.topic_prefix, n),
                    )
                })
                .collect(),
            routes: self
                .sites
                .iter()
                .map(|(n, s)| {
                    (
                        n.clone(),
                        crate::api::SiteRoute {
                            source: self.source.clone(),
                            dest: s.endpoint.clone(),
                            buckets: s.buckets.clone(),
                            dest_versioned: s.versioned,
                        },
                    )
                })
                .collect(),
            ready: std::sync::atomic::AtomicBool::new(false),
            limits: crate::api::Limits {
                max_connections: self.cfg.api.max_connections,
                ..Default::default()
            },
            open_probes: self.cfg.api.open_probes,
            tls: api_tls(&self.cfg.api)?,
            buckets: crate::api::BucketsView {
                known: self.known.clone(),
                stats: self.bucket_stats.clone(),
                names: self
                    .sites
                    .iter()
                    .map(|(n, s)| (n.clone(), s.buckets.clone()))
                    .collect(),
                ingest: self.cfg.source.ingest_buckets.clone(),
                ingest_stats: self.ingest_stats.clone(),
                transient_stats: self.transient_stats.clone(),
            },
        });
        crate::api::serve(self.cfg.api.listen, state.clone(), shutdown)
            .map_err(|e| EngineError::Setup(e.to_string()))?;
        tracing::info!(listen = %self.cfg.api.listen, "operations API listening");
        Ok(state)
    }

    /// Scans every source bucket now and then and enqueues what a site is missing (sources
    /// without event notifications). Each pass first lets what is queued go through.
    fn rescan_loop(&self, shutdown: Shutdown) -> Result<(), EngineError> {
        let pc = self.populate_config(shutdown.clone());
        let every = Duration::from_secs(self.cfg.source.scan_interval_seconds);
        let known = self.known.clone();
        let queues = settle::Queues::new(&pc).map_err(|e| EngineError::Setup(e.to_string()))?;
        shard::block_on(async move {
            while !shutdown.is_set() {
                match queues.settle(settle::STALL, &shutdown).await {
                    Ok(settled) => rescan_pass(&pc, &known.list(), &settled, &shutdown).await,
                    Err(e) => tracing::warn!(error = %e, "scan not started; trying again later"),
                }
                shutdown.sleep(every).await;
            }
        })?;
        Ok(())
    }

    /// Discovers the source's buckets and adopts new ones until shutdown (with patterns in
    /// `source.buckets`).
    fn discover(&self, shutdown: Shutdown) -> Result<(), EngineError> {
        let d = buckets::Discovery {
            pc: self.populate_config(shutdown.clone()),
            selection: self.cfg.source.buckets.clone(),
            known: self.known.clone(),
            interval: Duration::from_secs(self.cfg.source.discover_interval_seconds),
            group: format!("{}buckets", self.cfg.kafka.topic_prefix),
            stats: self.bucket_stats.clone(),
            at_start: self.known.list(),
        };
        shard::block_on(buckets::run(d, shutdown))??;
        Ok(())
    }

    /// Deletes from transient source buckets what every site holds, until shutdown.
    fn transient(&self, shutdown: Shutdown) -> Result<(), EngineError> {
        let s = &self.cfg.source;
        let t = transient::Transient {
            pc: self.populate_config(shutdown.clone()),
            select: s.transient_buckets.clone(),
            grace: Duration::from_secs(s.transient_grace_seconds),
            stats: self.transient_stats.clone(),
            prefix: self.cfg.kafka.topic_prefix.clone(),
        };
        tracing::info!(
            buckets = s.transient_buckets.text(),
            grace_seconds = s.transient_grace_seconds,
            "transient buckets: versions every site holds are deleted from the source"
        );
        shard::block_on(transient::run(t, shutdown))??;
        Ok(())
    }

    /// Lists the ingested buckets pass after pass until shutdown (`source.ingest_buckets`).
    fn ingest(&self, shutdown: Shutdown) -> Result<(), EngineError> {
        let s = &self.cfg.source;
        let i = ingest::Ingestion {
            pc: self.populate_config(shutdown.clone()),
            known: self.known.clone(),
            select: s.ingest_buckets.clone(),
            interval: Duration::from_secs(s.ingest_interval_seconds),
            dir: s.ingest_state_dir.clone(),
            group: format!("{}ingest", self.cfg.kafka.topic_prefix),
            stats: self.ingest_stats.clone(),
        };
        std::fs::create_dir_all(&i.dir).map_err(|e| {
            EngineError::Setup(format!(
                "source.ingest_state_dir {}: {e} (ingestion keeps each bucket's last seen state there)",
                i.dir.display()
            ))
        })?;
        tracing::info!(buckets = s.ingest_buckets.text(), dir = %i.dir.display(), "ingestion: buckets listed pass after pass");
        shard::block_on(ingest::run(i, shutdown))??;
        Ok(())
    }

    /// Every role in this process: the populator, each site's shards, and the optional
    /// roles the configuration wants.
    pub fn run(self: &Arc<Self>, stats: Arc<Stats>, shutdown: Shutdown) -> Result<(), EngineError> {
        let api = self.start_api(shutdown.clone())?;
        let src = &self.cfg.source;
        let lifecycle = lifecycle::wanted(&self.cfg, &self.known.list())?;
        let optional: [(&str, bool, Role); 5] = [
            (
                "scanner",
                src.scan_interval_seconds > 0,
                Engine::rescan_loop,
            ),
            ("buckets", src.buckets.fixed().is_none(), Engine::discover),
            (
                "transient",
                !src.transient_buckets.is_empty(),
                Engine::transient,
            ),
            ("ingest", !src.ingest_buckets.is_empty(), Engine::ingest),
            ("lifecycle", lifecycle, Engine::lifecycle),
        ];
        let (me, st, sd) = (self.clone(), stats.clone(), shutdown.clone());
        let mut roles: Vec<(String, roles::Body)> =
            vec![("populate".into(), Box::new(move || me.populate(st, sd)))];
        for (name, _, f) in optional.into_iter().filter(|(_, wanted, _)| *wanted) {
            let (me, sd) = (self.clone(), shutdown.clone());
            roles.push((name.into(), Box::new(move || f(&me, sd))));
        }
        let shards = self.shards();
        for site in self.sites.keys().cloned().collect::<Vec<_>>() {
            let (me, sd, st) = (
                self.clone(),
                shutdown.clone(),
                self.site_stats[&site].clone(),
            );
            let name = format!("site-{site}");
            roles.push((name, Box::new(move || me.replicate(&site, shards, st, sd))));
        }
        api.ready.store(true, std::sync::atomic::Ordering::SeqCst);
        let drain = Duration::from_secs(self.cfg.kafka.drain_deadline_seconds);
        roles::run_all(roles, &shutdown, drain + roles::STOP_GRACE)
    }
}

/// An optional role of `run`: runs on its own thread until shutdown.
type Role = fn(&Engine, Shutdown) -> Result<(), EngineError>;

/// One rescan of every bucket, for the settled sites.
async fn rescan_pass(
    pc: &PopulateConfig,
    buckets: &[String],
    settled: &settle::Settled,
    shutdown: &Shutdown,
) {
    use populate::{scan_enqueue, ScanMode};
    if settled.sites.is_empty() {
        return;
    }
    for b in buckets {
        let mode = ScanMode::Missing(settled);
        match scan_enqueue(pc, b, None, mode, shutdown, |_| {}).await {
            Ok(s) if s.entries_enqueued > 0 || s.keys_failed > 0 => {
                tracing::info!(bucket = %b, enqueued = s.entries_enqueued, keys_failed = s.keys_failed, "scan found versions to replicate")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(bucket = %b, error = %e, "scan failed; trying again later")
            }
        }
    }
}
