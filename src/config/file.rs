//! The TOML configuration file, read through serde models: every key has a default, unknown
//! keys are errors, and every error names the file and the dotted key. The effective
//! configuration records where each value came from: default, tuning profile, file,
//! command-line flag, or, for an endpoint's URL, region and CA file, the environment
//! (`AWS_ENDPOINT_URL_S3`, `AWS_REGION` ...) or the AWS profile, as every S3 tool reads them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::credentials::{self, AwsSetting, Env};
use super::de;
pub use super::kafka_security::{KafkaSecurity, Mechanism, Protocol};
use super::tuning::TuningFile;
pub use super::tuning::{ReplicationTuning, TUNING_KEYS};
use crate::replication::policy::Sse;
use crate::replication::ReplicaPolicy;
use crate::s3::ChecksumTransport;

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    Profile(PathBuf),
    File(PathBuf),
    Flag,
    /// An environment variable.
    Env(&'static str),
    /// A profile of the AWS config file.
    AwsProfile {
        name: String,
        file: PathBuf,
    },
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::Profile(p) => write!(f, "profile {}", p.display()),
            Origin::File(p) => write!(f, "file {}", p.display()),
            Origin::Flag => f.write_str("flag"),
            Origin::Env(var) => write!(f, "env {var}"),
            Origin::AwsProfile { name, file } => {
                write!(f, "aws profile {name:?} in {}", file.display())
            }
        }
    }
}

/// A configuration error: the file, the key, what is wrong, and the line when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub message: String,
    pub line: Option<usize>,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}: {}", self.file, self.key, self.message),
            None => write!(f, "{}: {}: {}", self.file, self.key, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

fn error(file: &Path, key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        file: file.display().to_string(),
        key: key.to_string(),
        message: message.into(),
        line: None,
    }
}

/// Kafka settings. No brokers means the embedded, non-durable broker.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    pub brokers: Vec<String>,
    pub topic_prefix: String,
    #[serde(deserialize_with = "de::int::<_, _, 1, 10_000>")]
    pub partitions: i32,
    #[serde(deserialize_with = "de::int::<_, _, 1, 16>")]
    pub replication_factor: i32,
    #[serde(deserialize_with = "de::int::<_, _, 1000, 3_600_000>")]
    pub session_timeout_ms: u32,
    /// A member that has not polled its consumer for this long is evicted from the group
    /// (at least `session_timeout_ms`). Workers keep polling while their slots are busy.
    #[serde(deserialize_with = "de::int::<_, _, 1000, 86_400_000>")]
    pub max_poll_interval_ms: u32,
    /// The longest a consumer's fetch waits at the broker when there is nothing to read.
    /// Kafka answers as soon as data arrives, so this only paces idle fetches; a broker that
    /// answers only when the wait ends (nisshi 0.6) adds up to this much per topic crossed.
    /// Replay topics' consumers wait at least `replayer::FETCH_WAIT_MS` (500).
    #[serde(deserialize_with = "de::int::<_, _, 1, 10_000>")]
    pub fetch_wait_ms: u32,
    /// How often a site worker commits the offsets its finished entries moved (0: after
    /// every entry). A crash replays at most what finished since the last commit, which the
    /// idempotence check makes harmless; one commit per entry costs a request each.
    #[serde(deserialize_with = "de::int::<_, _, 0, 60_000>")]
    pub commit_interval_ms: u32,
    /// How long a shard lets its entries in flight finish when its partitions are revoked
    /// or it stops; past it they are stopped (fenced) and their new owner replays them.
    #[serde(deserialize_with = "de::int::<_, _, 1, 3600>")]
    pub drain_deadline_seconds: u64,
    /// How clients reach the brokers: plaintext, ssl, sasl_plaintext or sasl_ssl.
    pub security_protocol: Protocol,
    pub sasl_mechanism: Option<Mechanism>,
    pub sasl_username: Option<String>,
    /// A file whose first line is the SASL password (else `BACKBEAT_KAFKA_PASSWORD`).
    pub sasl_password_file: Option<PathBuf>,
    /// The CA of the brokers' certificates, and a client certificate and key (PEM).
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// A shared key: records are signed with it and only signed ones are acted on.
    pub signing_key_file: Option<PathBuf>,
}

impl KafkaConfig {
    /// The transport and authentication keys, together.
    pub fn security(&self) -> KafkaSecurity {
        KafkaSecurity {
            security_protocol: self.security_protocol,
            sasl_mechanism: self.sasl_mechanism,
            sasl_username: self.sasl_username.clone(),
            sasl_password_file: self.sasl_password_file.clone(),
            ca_file: self.ca_file.clone(),
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            signing_key_file: self.signing_key_file.clone(),
        }
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: Vec::new(),
            topic_prefix: "backbeat-".into(),
            partitions: 8,
            replication_factor: 1,
            session_timeout_ms: 10_000,
            max_poll_interval_ms: 60_000,
            fetch_wait_ms: 500,
            commit_interval_ms: 200,
            drain_deadline_seconds: 30,
            security_protocol: Protocol::Plaintext,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password_file: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            signing_key_file: None,
        }
    }
}

/// Entries that fail for a reason that may pass: sent to the site's replay topics and run
/// again after each delay in turn (the last one repeating), until they succeed, fail for
/// good, or have failed for `patience_seconds`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplayConfig {
    /// The delays (seconds), one replay topic per step; empty: FAILED after the attempts.
    pub delays_seconds: Vec<u64>,
    #[serde(deserialize_with = "de::int::<_, _, 1, 2_592_000>")]
    pub patience_seconds: u64,
}

impl Default for ReplayConfig {
    fn default() -> Self {
        Self {
            delays_seconds: vec![30, 120, 600, 3600],
            patience_seconds: 86_400,
        }
    }
}

impl ReplayConfig {
    /// At most 16 steps, each between 1 s and a day.
    fn check(&self) -> Result<(), String> {
        let d = &self.delays_seconds;
        if d.len() > 16 {
            return Err(format!("at most 16 delays, not {}", d.len()));
        }
        match d.iter().find(|s| !(1..=86_400).contains(*s)) {
            Some(s) => Err(format!(
                "each delay must be between 1 and 86400 seconds, not {s}"
            )),
            None => Ok(()),
        }
    }
}

/// An S3 endpoint with its credentials reference (never the secret itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSettings {
    pub endpoint: String,
    pub region: String,
    /// Profile of the AWS shared credentials/config files; none means the environment.
    pub profile: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub path_style: bool,
    /// This endpoint's `replication.io_idle_timeout_seconds` (a slow WAN site, say).
    pub io_idle_timeout_seconds: Option<u64>,
    /// A whole-request deadline for this endpoint (none: a request may last as long as it
    /// moves).
    pub request_deadline_seconds: Option<u64>,
}

/// The source side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceConfig {
    pub s3: EndpointSettings,
    /// The buckets replicated: names or patterns (`"*"`, `"logs-*"`), minus
    /// `exclude_buckets`.
    pub buckets: crate::buckets::Selection,
    /// A ReplicationConfiguration XML file used instead of GetBucketReplication.
    pub rules_file: Option<PathBuf>,
    /// The rules of a bucket that has no ReplicationConfiguration of its own.
    pub default_rules_file: Option<PathBuf>,
    /// With patterns: every this many seconds the source's buckets are listed and new ones
    /// adopted (0: only at start and on a bucket-creation event).
    pub discover_interval_seconds: u64,
    /// The selected buckets whose changes are found by listing them (sources that publish
    /// no events): `ingest_buckets` patterns.
    pub ingest_buckets: crate::buckets::Selection,
    /// Seconds between the end of an ingestion pass over a bucket and the next.
    pub ingest_interval_seconds: u64,
    /// Where ingestion keeps each bucket's last seen state (on this node's disk).
    pub ingest_state_dir: PathBuf,
    /// Transient buckets (`transient_buckets` patterns): a version is deleted from the source
    /// once every site it must reach holds it.
    pub transient_buckets: crate::buckets::Selection,
    /// Seconds a version every site holds stays at the source before it is deleted.
    pub transient_grace_seconds: u64,
    /// For sources that publish no event notifications: every this many seconds, `run`
    /// scans the buckets and enqueues the versions missing at a site (0: never).
    pub scan_interval_seconds: u64,
    /// Replicate versions that are themselves replicas (chains A to B to C). Off: a replica
    /// is not sent on, which stops loops in two-way replication (A to B and B to A).
    pub replicate_replicas: bool,
    /// SSE-C keys of source buckets (`sse_customer_key_files`), read from their files.
    pub customer_keys: crate::s3::customer_key::CustomerKeys,
}

/// A destination site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteConfig {
    pub s3: EndpointSettings,
    pub checksum: ChecksumTransport,
    pub verify_after_write: bool,
    /// Source bucket -> destination bucket (`buckets`), else `bucket_template`, else the
    /// source bucket's name.
    pub buckets: crate::buckets::NameMap,
    /// Create a source bucket's site bucket (versioned, with Object Lock when the source
    /// bucket has it) when it is adopted or found missing.
    pub create_buckets: bool,
    /// What the site's replicas carry beyond bytes and metadata (`storage_class`, `sse`,
    /// `kms_key_id`, `acl`).
    pub policy: crate::replication::ReplicaPolicy,
    /// The site's bandwidth limit on each node (`bandwidth`), shared by the node's shards.
    pub bandwidth: Option<crate::bandwidth::Timetable>,
    /// The SSE-C key replicas are written with (`sse = "customer"`,
    /// `sse_customer_key_file`).
    pub customer_key: Option<crate::s3::customer_key::CustomerKey>,
}

/// The operations API.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    #[serde(deserialize_with = "de::listen")]
    pub listen: SocketAddr,
    pub token_file: Option<PathBuf>,
    /// Open connections at most; at the cap the oldest idle one is closed for a new one.
    #[serde(deserialize_with = "de::int::<_, _, 4, 65_536>")]
    pub max_connections: usize,
    /// `/_/live`, `/_/ready` and `/metrics` answer without the token (probes, scrapers).
    pub open_probes: bool,
    /// Serve HTTPS: a certificate chain and its key (PEM).
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8900".parse().expect("valid address"),
            token_file: None,
            max_connections: 128,
            open_probes: false,
            cert_file: None,
            key_file: None,
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub source: SourceConfig,
    pub sites: BTreeMap<String, SiteConfig>,
    pub replication: ReplicationTuning,
    pub replay: ReplayConfig,
    pub api: ApiConfig,
    pub lifecycle: super::lifecycle::LifecycleConfig,
    /// Dotted key -> where its value came from.
    pub origins: BTreeMap<String, Origin>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            kafka: KafkaConfig::default(),
            source: SourceConfig {
                s3: EndpointFile::default().settled(),
                buckets: Default::default(),
                rules_file: None,
                default_rules_file: None,
                discover_interval_seconds: 60,
                ingest_buckets: Default::default(),
                ingest_interval_seconds: 300,
                ingest_state_dir: PathBuf::from(DEFAULT_INGEST_DIR),
                transient_buckets: Default::default(),
                transient_grace_seconds: 3600,
                scan_interval_seconds: 0,
                replicate_replicas: false,
                customer_keys: Default::default(),
            },
            sites: BTreeMap::new(),
            replication: ReplicationTuning::default(),
            replay: ReplayConfig::default(),
            api: ApiConfig::default(),
            lifecycle: Default::default(),
            origins: BTreeMap::new(),
        }
    }
}

/// The file as written (serde model); `into_config` adds defaults, the environment, the
/// AWS profile and the cross-key checks.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileModel {
    kafka: KafkaConfig,
    source: SourceFile,
    sites: BTreeMap<String, SiteFile>,
    replication: TuningFile,
    replay: ReplayConfig,
    api: ApiConfig,
    lifecycle: super::lifecycle::LifecycleConfig,
}

/// A tuning profile: only a `[replication]` table.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ProfileModel {
    replication: TuningFile,
}

/// The `[source]` table. (serde's `flatten` cannot be combined with `deny_unknown_fields`,
/// so the endpoint keys are listed here and in `SiteFile`.)
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SourceFile {
    #[serde(deserialize_with = "de::url")]
    endpoint: Option<String>,
    region: Option<String>,
    profile: Option<String>,
    ca_file: Option<PathBuf>,
    path_style: Option<bool>,
    io_idle_timeout_seconds: Option<u64>,
    request_deadline_seconds: Option<u64>,
    buckets: Vec<String>,
    exclude_buckets: Vec<String>,
    rules_file: Option<PathBuf>,
    default_rules_file: Option<PathBuf>,
    #[serde(deserialize_with = "de::int::<_, _, 0, 2_592_000>")]
    scan_interval_seconds: u64,
    discover_interval_seconds: Option<u64>,
    ingest_buckets: Vec<String>,
    ingest_interval_seconds: Option<u64>,
    ingest_state_dir: Option<PathBuf>,
    transient_buckets: Vec<String>,
    transient_grace_seconds: Option<u64>,
    replicate_replicas: bool,
    sse_customer_key_files: BTreeMap<String, PathBuf>,
}

/// A `[sites.NAME]` table.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SiteFile {
    #[serde(deserialize_with = "de::url")]
    endpoint: Option<String>,
    region: Option<String>,
    profile: Option<String>,
    ca_file: Option<PathBuf>,
    path_style: Option<bool>,
    io_idle_timeout_seconds: Option<u64>,
    request_deadline_seconds: Option<u64>,
    #[serde(deserialize_with = "de::checksum")]
    checksum: Option<ChecksumTransport>,
    verify_after_write: bool,
    buckets: BTreeMap<String, String>,
    bucket_template: Option<String>,
    create_buckets: bool,
    storage_class: Option<String>,
    sse: Option<String>,
    kms_key_id: Option<String>,
    acl: Option<String>,
    bandwidth: Option<String>,
    sse_customer_key_file: Option<PathBuf>,
}

/// An endpoint's keys as the file gives them.
#[derive(Default)]
struct EndpointFile {
    endpoint: Option<String>,
    region: Option<String>,
    profile: Option<String>,
    ca_file: Option<PathBuf>,
    path_style: Option<bool>,
    io_idle_timeout_seconds: Option<u64>,
    request_deadline_seconds: Option<u64>,
}

/// The value of an AWS setting by precedence: a command-line flag, then the configuration
/// file, then the environment, then the AWS profile (`profile`, else `AWS_PROFILE`, else
/// `default`). `None` when none gives it: the caller's default applies.
pub fn layered(
    flag: Option<String>,
    file: Option<(String, &Path)>,
    setting: AwsSetting,
    profile: Option<&str>,
    env: &dyn Env,
) -> Option<(String, Origin)> {
    flag.map(|v| (v, Origin::Flag))
        .or_else(|| file.map(|(v, p)| (v, Origin::File(p.to_path_buf()))))
        .or_else(|| credentials::aws_setting(setting, profile, env))
}

/// Whether the file at `path` can be read (and, with `nonempty`, holds a first line that
/// is not blank: a token), so `config check` finds what would fail only at start.
fn readable(path: &Path, nonempty: bool) -> Result<(), String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let first = String::from_utf8_lossy(&text);
    if nonempty && first.lines().next().unwrap_or("").trim().is_empty() {
        return Err(format!(
            "{} is empty: its first line is the token",
            path.display()
        ));
    }
    Ok(())
}

/// Settles one endpoint's keys for `config`: its file's values, else the environment's and
/// the AWS profile's, else the defaults.
struct Settle<'a> {
    file: &'a Path,
    env: &'a dyn Env,
    origins: &'a mut BTreeMap<String, Origin>,
}

impl Settle<'_> {
    fn endpoint(&mut self, prefix: &str, e: EndpointFile) -> Result<EndpointSettings, ConfigError> {
        let file = self.file;
        let profile = e.profile.as_deref();
        let mut pick = |key: &str, value: Option<String>, setting| {
            let (v, origin) = layered(None, value.map(|v| (v, file)), setting, profile, self.env)?;
            self.origins
                .insert(format!("{prefix}.{key}"), origin.clone());
            Some((v, origin))
        };
        let endpoint = pick("endpoint", e.endpoint, AwsSetting::EndpointUrl);
        let region = pick("region", e.region, AwsSetting::Region);
        let ca = e.ca_file.map(|p| p.display().to_string());
        let ca_file = pick("ca_file", ca, AwsSetting::CaBundle);
        if let Some((url, origin)) = &endpoint {
            de::check_url(url).map_err(|m| {
                error(
                    file,
                    &format!("{prefix}.endpoint"),
                    format!("{m} (from {origin})"),
                )
            })?;
        }
        if let Some((path, origin)) = &ca_file {
            let path = relative_to(file, PathBuf::from(path));
            readable(&path, false).map_err(|m| {
                error(
                    file,
                    &format!("{prefix}.ca_file"),
                    format!("{m} (from {origin})"),
                )
            })?;
        }
        let mut s = EndpointFile::default().settled();
        s.endpoint = endpoint.map(|(v, _)| v).unwrap_or_default();
        s.region = region.map(|(v, _)| v).unwrap_or(s.region);
        s.profile = e.profile;
        s.ca_file = ca_file.map(|(v, _)| PathBuf::from(v));
        s.path_style = e.path_style.unwrap_or(s.path_style);
        for (key, v, max) in [
            ("io_idle_timeout_seconds", e.io_idle_timeout_seconds, 86_400),
            (
                "request_deadline_seconds",
                e.request_deadline_seconds,
                7 * 86_400,
            ),
        ] {
            if let Some(t) = v.filter(|t| !(1..=max).contains(t)) {
                let m = format!("must be between 1 and {max}, not {t}");
                return Err(error(file, &format!("{prefix}.{key}"), m));
            }
        }
        s.io_idle_timeout_seconds = e.io_idle_timeout_seconds;
        s.request_deadline_seconds = e.request_deadline_seconds;
        Ok(s)
    }
}

impl EndpointFile {
    /// The defaults, for keys that nothing sets.
    fn settled(self) -> EndpointSettings {
        EndpointSettings {
            endpoint: self.endpoint.unwrap_or_default(),
            region: self.region.unwrap_or_else(|| "us-east-1".into()),
            profile: self.profile,
            ca_file: self.ca_file,
            path_style: self.path_style.unwrap_or(true),
            io_idle_timeout_seconds: self.io_idle_timeout_seconds,
            request_deadline_seconds: self.request_deadline_seconds,
        }
    }
}

/// A path as written in `file`: relative paths are relative to the file that names them.
/// The source buckets' SSE-C keys, read from their files (relative to the configuration's).
fn source_keys(
    file: &Path,
    buckets: &crate::buckets::Selection,
    files: BTreeMap<String, PathBuf>,
) -> Result<crate::s3::customer_key::CustomerKeys, ConfigError> {
    let mut keys = crate::s3::customer_key::CustomerKeys::default();
    for (bucket, path) in files {
        let at = format!("source.sse_customer_key_files.{bucket}");
        if !buckets.matches(&bucket) {
            return Err(error(file, &at, "not one of source.buckets"));
        }
        let key = crate::s3::customer_key::CustomerKey::from_file(&relative_to(file, path))
            .map_err(|m| error(file, &at, m))?;
        keys.by_bucket.insert(bucket, key);
    }
    Ok(keys)
}

/// `source.buckets` and `source.exclude_buckets`, each pattern checked.
fn selection(
    file: &Path,
    include: &[String],
    exclude: &[String],
) -> Result<crate::buckets::Selection, ConfigError> {
    for (key, list) in [
        ("source.buckets", include),
        ("source.exclude_buckets", exclude),
    ] {
        for p in list {
            crate::buckets::check_pattern(p).map_err(|m| error(file, key, m))?;
        }
    }
    Ok(crate::buckets::Selection::new(
        include.to_vec(),
        exclude.to_vec(),
    ))
}

/// Where ingestion keeps its state when `source.ingest_state_dir` is not set.
pub const DEFAULT_INGEST_DIR: &str = "/var/lib/backbeat/ingest";

/// A list of bucket patterns (`key`), each checked.
fn patterns(
    file: &Path,
    key: &str,
    list: &[String],
) -> Result<crate::buckets::Selection, ConfigError> {
    for p in list {
        crate::buckets::check_pattern(p).map_err(|m| error(file, key, m))?;
    }
    Ok(crate::buckets::Selection::new(list.to_vec(), Vec::new()))
}

/// `source.default_rules_file`, made absolute, read and parsed.
fn default_rules(file: &Path, p: Option<PathBuf>) -> Result<Option<PathBuf>, ConfigError> {
    let Some(p) = p.map(|p| relative_to(file, p)) else {
        return Ok(None);
    };
    let key = "source.default_rules_file";
    let text = std::fs::read_to_string(&p)
        .map_err(|e| error(file, key, format!("cannot read {}: {e}", p.display())))?;
    crate::populate::rules::ReplicationConfig::parse(&text)
        .map_err(|e| error(file, key, format!("{}: {e}", p.display())))?;
    Ok(Some(p))
}

fn relative_to(file: &Path, p: PathBuf) -> PathBuf {
    if p.is_relative() {
        file.parent().unwrap_or(Path::new(".")).join(p)
    } else {
        p
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Reads and parses a file: the text and its table (for origins).
fn read(path: &Path) -> Result<(String, toml::Table), ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| error(path, "(file)", format!("cannot read: {e}")))?;
    let table = text.parse::<toml::Table>().map_err(|e| ConfigError {
        line: e.span().map(|s| line_of(&text, s.start)),
        ..error(path, "(syntax)", de::reword(e.message(), "(syntax)"))
    })?;
    Ok((text, table))
}

/// Deserializes a model from `text`; an error names the dotted key and its line.
fn model<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(toml::Deserializer::new(text)).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        ConfigError {
            line: inner.span().map(|s| line_of(text, s.start)),
            ..error(path, &key, de::reword(inner.message(), &key))
        }
    })
}

/// Records `origin` for every dotted key of `table` (sections included).
fn mark(table: &toml::Table, prefix: &str, origin: &Origin, out: &mut BTreeMap<String, Origin>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        if let toml::Value::Table(t) = v {
            mark(t, &key, origin, out);
        }
        out.insert(key, origin.clone());
    }
}

/// Applies a `[replication]` table read from `path` to `t`.
/// The line of `[section]`'s `key = ...` in `text` (the plain layout; `None` otherwise).
fn line_of_key(text: &str, dotted: &str) -> Option<usize> {
    let (section, key) = dotted.rsplit_once('.')?;
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.trim().to_string();
        } else if current == section
            && line
                .strip_prefix(key)
                .is_some_and(|r| r.trim_start().starts_with('='))
        {
            return Some(i + 1);
        }
    }
    None
}

/// Applies a `[replication]` table read from `path` (whose text is `text`) to `t`.
fn apply_tuning(
    path: &Path,
    text: &str,
    f: TuningFile,
    t: &mut ReplicationTuning,
) -> Result<(), ConfigError> {
    f.apply(t).map_err(|(key, m)| ConfigError {
        line: line_of_key(text, key),
        ..error(path, key, m)
    })
}

/// Loads the tuning profile at `path` into `t`.
fn load_profile(
    path: &Path,
    t: &mut ReplicationTuning,
    origins: &mut BTreeMap<String, Origin>,
) -> Result<(), ConfigError> {
    let (text, table) = read(path)?;
    let p: ProfileModel = model(path, &text)?;
    if p.replication.profile.is_some() {
        let m = "a tuning profile cannot name another profile";
        return Err(ConfigError {
            line: line_of_key(&text, "replication.profile"),
            ..error(path, "replication.profile", m)
        });
    }
    apply_tuning(path, &text, p.replication, t)?;
    mark(&table, "", &Origin::Profile(path.to_path_buf()), origins);
    Ok(())
}

impl Config {
    /// Loads a configuration file (and the tuning profile it names), with the process
    /// environment and the AWS config file filling in what it leaves out.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with_env(path, &credentials::ProcessEnv)
    }

    /// `load` with the environment given (tests inject one).
    pub fn load_with_env(path: &Path, env: &dyn Env) -> Result<Self, ConfigError> {
        let (text, table) = read(path)?;
        let mut file: FileModel = model(path, &text)?;
        let mut origins = BTreeMap::new();
        let mut replication = ReplicationTuning::default();
        // A tuning profile first, so the file's own values win over it.
        if let Some(p) = file.replication.profile.take() {
            load_profile(&relative_to(path, p), &mut replication, &mut origins)?;
        }
        mark(&table, "", &Origin::File(path.to_path_buf()), &mut origins);
        apply_tuning(
            path,
            &text,
            std::mem::take(&mut file.replication),
            &mut replication,
        )?;
        let mut settle = Settle {
            file: path,
            env,
            origins: &mut origins,
        };
        let mut cfg = file.into_config(&mut settle)?;
        cfg.replication = replication;
        cfg.origins = origins;
        Ok(cfg)
    }
}

impl FileModel {
    /// The configuration: paths made absolute, endpoints settled, cross-key checks done.
    fn into_config(self, settle: &mut Settle<'_>) -> Result<Config, ConfigError> {
        let file = settle.file;
        let mut s = self.source;
        let key_files = std::mem::take(&mut s.sse_customer_key_files);
        let buckets = selection(file, &s.buckets, &s.exclude_buckets)?;
        let customer_keys = source_keys(file, &buckets, key_files)?;
        let ingest_buckets = patterns(file, "source.ingest_buckets", &s.ingest_buckets)?;
        let transient_buckets = patterns(file, "source.transient_buckets", &s.transient_buckets)?;
        let grace = s.transient_grace_seconds.unwrap_or(3600);
        if grace > 2_592_000 {
            let m = format!("must be between 0 and 2592000, not {grace}");
            return Err(error(file, "source.transient_grace_seconds", m));
        }
        let ingest_interval = s.ingest_interval_seconds.unwrap_or(300);
        if !(1..=2_592_000).contains(&ingest_interval) {
            let m = format!("must be between 1 and 2592000, not {ingest_interval}");
            return Err(error(file, "source.ingest_interval_seconds", m));
        }
        let discover = s.discover_interval_seconds.unwrap_or(60);
        if discover > 86_400 {
            let m = format!("must be between 0 and 86400, not {discover}");
            return Err(error(file, "source.discover_interval_seconds", m));
        }
        let source = SourceConfig {
            s3: settle.endpoint(
                "source",
                EndpointFile {
                    endpoint: s.endpoint,
                    region: s.region,
                    profile: s.profile,
                    ca_file: s.ca_file.map(|p| relative_to(file, p)),
                    path_style: s.path_style,
                    io_idle_timeout_seconds: s.io_idle_timeout_seconds,
                    request_deadline_seconds: s.request_deadline_seconds,
                },
            )?,
            buckets,
            rules_file: s.rules_file.map(|p| relative_to(file, p)),
            default_rules_file: default_rules(file, s.default_rules_file)?,
            discover_interval_seconds: discover,
            ingest_buckets,
            transient_buckets,
            transient_grace_seconds: grace,
            ingest_interval_seconds: ingest_interval,
            ingest_state_dir: (s.ingest_state_dir.map(|p| relative_to(file, p)))
                .unwrap_or_else(|| PathBuf::from(DEFAULT_INGEST_DIR)),
            scan_interval_seconds: s.scan_interval_seconds,
            replicate_replicas: s.replicate_replicas,
            customer_keys,
        };
        let mut sites = BTreeMap::new();
        for (name, site) in self.sites {
            let named = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
            if name.is_empty() || name.len() > 100 || !name.chars().all(named) {
                let m = "a site's name names Kafka groups and topics: letters, digits, '.', '_' and '-', at most 100";
                return Err(error(file, &format!("sites.{name}"), m));
            }
            sites.insert(name.clone(), site.into_site(&name, settle)?);
        }
        let api = settled_api(self.api, file)?;
        let kafka = settled_kafka(self.kafka, file, settle.env)?;
        if let Err(m) = self.replay.check() {
            return Err(error(file, "replay.delays_seconds", m));
        }
        let lifecycle = settled_lifecycle(self.lifecycle, file)?;
        Ok(Config {
            kafka,
            source,
            sites,
            replay: self.replay,
            api,
            lifecycle,
            ..Config::default()
        })
    }
}

/// `[api]` with its paths made absolute and checked: a token off loopback, readable files,
/// a certificate with its key.
fn settled_api(mut api: ApiConfig, file: &Path) -> Result<ApiConfig, ConfigError> {
    api.token_file = api.token_file.map(|p| relative_to(file, p));
    if !api.listen.ip().is_loopback() && api.token_file.is_none() {
        let m = format!(
            "required when api.listen ({}) is not a loopback address",
            api.listen
        );
        return Err(error(file, "api.token_file", m));
    }
    if let Some(t) = &api.token_file {
        readable(t, true).map_err(|m| error(file, "api.token_file", m))?;
    }
    api.cert_file = api.cert_file.map(|p| relative_to(file, p));
    api.key_file = api.key_file.map(|p| relative_to(file, p));
    match (&api.cert_file, &api.key_file) {
        (Some(c), Some(k)) => {
            readable(c, false).map_err(|m| error(file, "api.cert_file", m))?;
            readable(k, false).map_err(|m| error(file, "api.key_file", m))?;
        }
        (None, None) => {}
        _ => {
            let m = "HTTPS needs both api.cert_file and api.key_file";
            return Err(error(file, "api.cert_file", m));
        }
    }
    Ok(api)
}

/// `[lifecycle]` with its rules files made absolute, read and checked.
fn settled_lifecycle(
    mut l: super::lifecycle::LifecycleConfig,
    file: &Path,
) -> Result<super::lifecycle::LifecycleConfig, ConfigError> {
    for (bucket, p) in l.rules_files.iter_mut() {
        *p = relative_to(file, std::mem::take(p));
        let key = format!("lifecycle.rules_files.{bucket}");
        let text = std::fs::read_to_string(&*p)
            .map_err(|e| error(file, &key, format!("cannot read {}: {e}", p.display())))?;
        crate::lifecycle::rules::LifecycleRules::parse(&text)
            .map_err(|e| error(file, &key, format!("{}: {e}", p.display())))?;
    }
    Ok(l)
}

/// `[kafka]` with its paths made absolute and its keys checked together.
fn settled_kafka(
    mut kafka: KafkaConfig,
    file: &Path,
    env: &dyn Env,
) -> Result<KafkaConfig, ConfigError> {
    for p in [
        &mut kafka.sasl_password_file,
        &mut kafka.ca_file,
        &mut kafka.cert_file,
        &mut kafka.key_file,
        &mut kafka.signing_key_file,
    ] {
        *p = p.take().map(|p| relative_to(file, p));
    }
    let getenv = |k: &str| env.var(k);
    kafka
        .security()
        .check(!kafka.brokers.is_empty(), &getenv)
        .map_err(|(key, m)| error(file, key, m))?;
    if kafka.drain_deadline_seconds * 1000 >= u64::from(kafka.max_poll_interval_ms) {
        let m = format!(
            "must be shorter than kafka.max_poll_interval_ms ({} ms): a member draining that long is evicted from its group",
            kafka.max_poll_interval_ms
        );
        return Err(error(file, "kafka.drain_deadline_seconds", m));
    }
    Ok(kafka)
}

impl SiteFile {
    fn into_site(self, name: &str, settle: &mut Settle<'_>) -> Result<SiteConfig, ConfigError> {
        let prefix = format!("sites.{name}");
        let file = settle.file;
        let policy = self.policy(&prefix, file)?;
        let bandwidth = match &self.bandwidth {
            Some(b) => Some(
                crate::bandwidth::Timetable::parse(b)
                    .map_err(|m| error(file, &format!("{prefix}.bandwidth"), m))?,
            ),
            None => None,
        };
        let customer_key = match (&self.sse_customer_key_file, &policy.sse) {
            (Some(p), Sse::Customer) => Some(
                crate::s3::customer_key::CustomerKey::from_file(&relative_to(file, p.clone()))
                    .map_err(|m| error(file, &format!("{prefix}.sse_customer_key_file"), m))?,
            ),
            (None, Sse::Customer) => {
                let m = "sse = \"customer\" needs sse_customer_key_file (the key replicas are written with)";
                return Err(error(file, &format!("{prefix}.sse_customer_key_file"), m));
            }
            (Some(_), _) => {
                let m = "a customer key is used with sse = \"customer\" only";
                return Err(error(file, &format!("{prefix}.sse"), m));
            }
            (None, _) => None,
        };
        let s3 = settle.endpoint(
            &prefix,
            EndpointFile {
                endpoint: self.endpoint,
                region: self.region,
                profile: self.profile,
                ca_file: self.ca_file.map(|p| relative_to(file, p)),
                path_style: self.path_style,
                io_idle_timeout_seconds: self.io_idle_timeout_seconds,
                request_deadline_seconds: self.request_deadline_seconds,
            },
        )?;
        if s3.endpoint.is_empty() {
            return Err(error(
                file,
                &format!("{prefix}.endpoint"),
                "missing: every site needs an endpoint (here, in AWS_ENDPOINT_URL_S3 or \
                 AWS_ENDPOINT_URL, or as endpoint_url in its AWS profile)",
            ));
        }
        if let Some(t) = &self.bucket_template {
            crate::buckets::check_template(t)
                .map_err(|m| error(file, &format!("{prefix}.bucket_template"), m))?;
        }
        Ok(SiteConfig {
            s3,
            checksum: self.checksum.unwrap_or(ChecksumTransport::Trailer),
            verify_after_write: self.verify_after_write,
            buckets: crate::buckets::NameMap::new(self.buckets, self.bucket_template),
            create_buckets: self.create_buckets,
            policy,
            bandwidth,
            customer_key,
        })
    }

    /// The site's `storage_class`, `sse`, `kms_key_id` and `acl` keys.
    fn policy(&self, prefix: &str, file: &Path) -> Result<ReplicaPolicy, ConfigError> {
        let at = |k: &str| format!("{prefix}.{k}");
        let storage_class = ReplicaPolicy::parse_storage_class(self.storage_class.as_deref())
            .map_err(|m| error(file, &at("storage_class"), m))?;
        let sse = ReplicaPolicy::parse_sse(self.sse.as_deref(), self.kms_key_id.clone())
            .map_err(|m| error(file, &at("sse"), m))?;
        let acl = ReplicaPolicy::parse_acl(self.acl.as_deref())
            .map_err(|m| error(file, &at("acl"), m))?;
        Ok(ReplicaPolicy {
            storage_class,
            sse,
            acl,
        })
    }
}

/// A path shown quoted, or `none` when unset.
fn show_path(p: &Option<PathBuf>, none: &str) -> String {
    p.as_ref()
        .map(|p| format!("{:?}", p.display().to_string()))
        .unwrap_or_else(|| none.into())
}

fn show_endpoint(lines: &mut Vec<(String, String)>, p: &str, e: &EndpointSettings) {
    let mut push = |k: &str, v: String| lines.push((format!("{p}.{k}"), v));
    push("endpoint", format!("{:?}", e.endpoint));
    push("region", format!("{:?}", e.region));
    let profile = e.profile.as_ref().map(|p| format!("{p:?}"));
    push("profile", profile.unwrap_or_else(|| "(environment)".into()));
    push("ca_file", show_path(&e.ca_file, "(system roots)"));
    push("path_style", e.path_style.to_string());
    if let Some(t) = e.io_idle_timeout_seconds {
        push("io_idle_timeout_seconds", t.to_string());
    }
    if let Some(t) = e.request_deadline_seconds {
        push("request_deadline_seconds", t.to_string());
    }
}

impl Config {
    /// Where `key` (dotted) came from.
    pub fn origin(&self, key: &str) -> Origin {
        self.origins.get(key).cloned().unwrap_or(Origin::Default)
    }

    /// Records that a flag set `key`.
    pub fn set_by_flag(&mut self, key: &str) {
        self.origins.insert(key.to_string(), Origin::Flag);
    }

    /// `(dotted key, value as shown)` of the kafka, source and replay sections.
    fn shown_kafka_and_source(&self) -> Vec<(String, String)> {
        let k = &self.kafka;
        let brokers = if k.brokers.is_empty() {
            "[] (embedded broker, not durable)".into()
        } else {
            format!("{:?}", k.brokers)
        };
        let mut lines = vec![
            ("kafka.brokers".into(), brokers),
            ("kafka.topic_prefix".into(), format!("{:?}", k.topic_prefix)),
            ("kafka.partitions".into(), k.partitions.to_string()),
            (
                "kafka.replication_factor".into(),
                k.replication_factor.to_string(),
            ),
            (
                "kafka.session_timeout_ms".into(),
                k.session_timeout_ms.to_string(),
            ),
            (
                "kafka.max_poll_interval_ms".into(),
                k.max_poll_interval_ms.to_string(),
            ),
            ("kafka.fetch_wait_ms".into(), k.fetch_wait_ms.to_string()),
            (
                "kafka.commit_interval_ms".into(),
                k.commit_interval_ms.to_string(),
            ),
            (
                "kafka.drain_deadline_seconds".into(),
                k.drain_deadline_seconds.to_string(),
            ),
        ];
        lines.extend(k.security().shown());
        lines.extend(self.shown_source_and_replay());
        lines
    }

    /// `(dotted key, value as shown)` of the source and replay sections.
    fn shown_source_and_replay(&self) -> Vec<(String, String)> {
        let mut lines = Vec::new();
        let s = &self.source;
        show_endpoint(&mut lines, "source", &s.s3);
        lines.push((
            "source.buckets".into(),
            format!("{:?}", s.buckets.include()),
        ));
        let exclude = format!("{:?}", s.buckets.exclude());
        lines.push(("source.exclude_buckets".into(), exclude));
        let discover = s.discover_interval_seconds.to_string();
        lines.push(("source.discover_interval_seconds".into(), discover));
        let default_rules = show_path(&s.default_rules_file, "(none)");
        lines.push(("source.default_rules_file".into(), default_rules));
        let transient = format!("{:?}", s.transient_buckets.include());
        lines.push(("source.transient_buckets".into(), transient));
        if !s.transient_buckets.is_empty() {
            let grace = s.transient_grace_seconds.to_string();
            lines.push(("source.transient_grace_seconds".into(), grace));
        }
        let ingest = format!("{:?}", s.ingest_buckets.include());
        lines.push(("source.ingest_buckets".into(), ingest));
        if !s.ingest_buckets.is_empty() {
            let every = s.ingest_interval_seconds.to_string();
            lines.push(("source.ingest_interval_seconds".into(), every));
            let dir = format!("{:?}", s.ingest_state_dir.display().to_string());
            lines.push(("source.ingest_state_dir".into(), dir));
        }
        let interval = s.scan_interval_seconds.to_string();
        lines.push(("source.scan_interval_seconds".into(), interval));
        let replicas = s.replicate_replicas.to_string();
        lines.push(("source.replicate_replicas".into(), replicas));
        for (b, k) in &s.customer_keys.by_bucket {
            let shown = format!("\"(SSE-C key, MD5 {})\"", k.md5());
            lines.push((format!("source.sse_customer_key_files.{b}"), shown));
        }
        let rules = show_path(&s.rules_file, "(GetBucketReplication)");
        lines.push(("source.rules_file".into(), rules));
        let r = &self.replay;
        let delays = if r.delays_seconds.is_empty() {
            "[] (no replay: FAILED after the attempts)".into()
        } else {
            format!("{:?}", r.delays_seconds)
        };
        lines.push(("replay.delays_seconds".into(), delays));
        lines.push((
            "replay.patience_seconds".into(),
            r.patience_seconds.to_string(),
        ));
        lines
    }

    /// The effective configuration, one `key = value  # origin` line per setting.
    /// Credentials are never shown: only the profile name, or "environment".
    pub fn render(&self) -> String {
        let mut lines = self.shown_kafka_and_source();
        for (name, s) in &self.sites {
            let p = format!("sites.{name}");
            show_endpoint(&mut lines, &p, &s.s3);
            let checksum = format!("{:?}", s.checksum).to_lowercase();
            lines.push((format!("{p}.checksum"), checksum));
            let verify = s.verify_after_write.to_string();
            lines.push((format!("{p}.verify_after_write"), verify));
            lines.push((format!("{p}.buckets"), format!("{:?}", s.buckets.named)));
            if let Some(t) = &s.buckets.template {
                lines.push((format!("{p}.bucket_template"), format!("{t:?}")));
            }
            let create = s.create_buckets.to_string();
            lines.push((format!("{p}.create_buckets"), create));
            for (k, v) in s.policy.shown() {
                lines.push((format!("{p}.{k}"), v));
            }
            if let Some(k) = &s.customer_key {
                let shown = format!("\"(SSE-C key, MD5 {})\"", k.md5());
                lines.push((format!("{p}.sse_customer_key_file"), shown));
            }
            let bandwidth = s.bandwidth.as_ref().map_or("off", |b| b.text());
            lines.push((format!("{p}.bandwidth"), format!("{bandwidth:?}")));
        }
        let tuning = self.replication.shown().into_iter();
        lines.extend(tuning.map(|(k, v)| (k.to_string(), v)));
        let listen = format!("{:?}", self.api.listen.to_string());
        lines.push(("api.listen".into(), listen));
        let token = show_path(&self.api.token_file, "(none)");
        lines.push(("api.token_file".into(), token));
        let max = self.api.max_connections.to_string();
        lines.push(("api.max_connections".into(), max));
        lines.push(("api.open_probes".into(), self.api.open_probes.to_string()));
        let cert = show_path(&self.api.cert_file, "(none: plain HTTP)");
        lines.push(("api.cert_file".into(), cert));
        lines.push((
            "api.key_file".into(),
            show_path(&self.api.key_file, "(none)"),
        ));
        let width = lines
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .max()
            .unwrap_or(0)
            + 4;
        lines
            .iter()
            .map(|(k, v)| {
                let kv = format!("{k} = {v}");
                format!("{kv:<width$}# {}\n", self.origin(k))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::HashMap;

    /// An environment with nothing set but HOME (an empty directory).
    fn no_env(dir: &Path) -> HashMap<String, String> {
        HashMap::from([("HOME".to_string(), dir.display().to_string())])
    }

    fn load(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("backbeat.toml");
        std::fs::write(&p, text).unwrap();
        std::fs::write(
            dir.path().join("small.toml"),
            "[replication]\nshards = 2\nconcurrency = 8\npart_size = \"8MiB\"\n",
        )
        .unwrap();
        Config::load_with_env(&p, &no_env(dir.path()))
    }

    #[test]
    fn full_file_with_profile_and_origins() {
        let c = load(
            r#"
[kafka]
brokers = ["127.0.0.1:9092"]
partitions = 4
[source]
endpoint = "http://127.0.0.1:9000"
buckets = ["photos"]
rules_file = "rules.xml"
[sites.site-a]
endpoint = "https://dr.example:443"
profile = "dr"
checksum = "header"
buckets = { photos = "photos-dr" }
io_idle_timeout_seconds = 300
[replication]
profile = "small.toml"
concurrency = 64
"#,
        )
        .unwrap();
        assert_eq!(c.kafka.partitions, 4);
        assert_eq!(c.sites["site-a"].s3.io_idle_timeout_seconds, Some(300));
        assert_eq!(c.source.s3.io_idle_timeout_seconds, None);
        assert!(c
            .render()
            .contains("sites.site-a.io_idle_timeout_seconds = 300"));
        assert_eq!(c.sites["site-a"].checksum, ChecksumTransport::Header);
        assert_eq!(c.sites["site-a"].buckets.dest("photos"), "photos-dr");
        assert_eq!(c.replication.shards, 2);
        assert_eq!(c.replication.part_size, 8 << 20);
        assert_eq!(
            c.replication.concurrency, 64,
            "the file wins over the profile"
        );
        assert!(matches!(c.origin("replication.shards"), Origin::Profile(_)));
        assert!(matches!(
            c.origin("replication.concurrency"),
            Origin::File(_)
        ));
        assert_eq!(c.origin("replication.attempts"), Origin::Default);
        assert!(c.source.rules_file.as_ref().unwrap().is_absolute());
        let shown = c.render();
        assert!(
            shown.contains("replication.shards = 2") && shown.contains("# profile "),
            "{shown}"
        );
        assert!(shown.contains("sites.site-a.profile = \"dr\""), "{shown}");
    }

    #[test]
    fn what_a_replica_carries_is_read_and_bad_values_are_named() {
        let base = "[source]\nendpoint = \"http://127.0.0.1:9000\"\nbuckets = [\"photos\"]\n[sites.dr]\nendpoint = \"http://127.0.0.1:9001\"\n";
        let c = load(&format!(
            "{base}storage_class = \"STANDARD_IA\"\nsse = \"aws:kms\"\nkms_key_id = \"alias/dr\"\nacl = \"bucket-owner-full-control\"\nbandwidth = \"08:00,10MiB/s 19:00,off\"\n"
        ))
        .unwrap();
        let dr = &c.sites["dr"];
        assert_eq!(dr.policy.storage_class.as_deref(), Some("STANDARD_IA"));
        assert_eq!(dr.policy.sse, Sse::Kms(Some("alias/dr".into())));
        let shown = c.render();
        assert!(
            shown.contains("sites.dr.bandwidth = \"08:00,10MiB/s 19:00,off\""),
            "{shown}"
        );
        assert!(
            shown.contains("sites.dr.kms_key_id = \"alias/dr\""),
            "{shown}"
        );
        for (extra, key, said) in [
            ("sse = \"aes\"\n", "sites.dr.sse", "expected"),
            ("acl = \"everyone\"\n", "sites.dr.acl", "canned"),
            ("bandwidth = \"fast\"\n", "sites.dr.bandwidth", "rate"),
            (
                "storage_class = \"cold storage\"\n",
                "sites.dr.storage_class",
                "class",
            ),
            (
                "sse = \"customer\"\n",
                "sites.dr.sse_customer_key_file",
                "needs",
            ),
            (
                "sse_customer_key_file = \"k\"\n",
                "sites.dr.sse",
                "customer",
            ),
        ] {
            let e = load(&format!("{base}{extra}")).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains(said), "{extra}: {e}");
            assert!(e.contains("backbeat.toml"), "the file is named: {e}");
        }
        let e = load(&format!(
            "{base}sse = \"customer\"\nsse_customer_key_file = \"nowhere.key\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("sites.dr.sse_customer_key_file") && e.contains("nowhere.key"),
            "{e}"
        );
        let src = "[source]\nendpoint = \"http://127.0.0.1:9000\"\nbuckets = [\"photos\"]\nsse_customer_key_files = { other = \"k\" }\n";
        let e = load(src).unwrap_err().to_string();
        assert!(
            e.contains("source.sse_customer_key_files.other") && e.contains("source.buckets"),
            "{e}"
        );
    }

    #[test]
    fn shipped_example_and_profiles_load() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let home = tempfile::tempdir().unwrap();
        let env = no_env(home.path());
        let c = Config::load_with_env(&root.join("docs/backbeat.example.toml"), &env).unwrap();
        assert!(c.sites.contains_key("site-b"));
        let mut n = 0;
        for entry in std::fs::read_dir(root.join("tuning")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("toml") {
                continue;
            }
            let dir = tempfile::tempdir().unwrap();
            let cfg = dir.path().join("c.toml");
            std::fs::write(
                &cfg,
                format!(
                    "[replication]\nprofile = {:?}\n",
                    path.display().to_string()
                ),
            )
            .unwrap();
            let c = Config::load_with_env(&cfg, &env)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                matches!(c.origin("replication.shards"), Origin::Profile(_)),
                "{} sets shards",
                path.display()
            );
            n += 1;
        }
        assert!(n >= 4, "the four shipped profiles load");
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        for (text, key, want) in [
            ("[kafka]\nbrokerz = []\n", "kafka.brokerz", "unknown key"),
            ("[nope]\n", "nope", "unknown section"),
            (
                "[replay]\ndelays_seconds = [30, 0]\n",
                "replay.delays_seconds",
                "between 1 and 86400 seconds, not 0",
            ),
            (
                "[sites.\"a b\"]\nendpoint = \"http://x\"\n",
                "sites.a b",
                "letters, digits",
            ),
            (
                "[sites.a]\nendpoint = \"http://x\"\nio_idle_timeout_seconds = 0\n",
                "sites.a.io_idle_timeout_seconds",
                "between 1 and 86400, not 0",
            ),
            (
                "[source]\nrequest_deadline_seconds = 0\n",
                "source.request_deadline_seconds",
                "between 1 and 604800, not 0",
            ),
            (
                "[replication]\nshards = \"two\"\n",
                "replication.shards",
                "expected an integer",
            ),
            (
                "[replication]\npart_size = \"1MiB\"\n",
                "replication.part_size",
                "at least 5MiB",
            ),
            (
                "[replication]\nplacement = \"everywhere\"\n",
                "replication.placement",
                "unbound",
            ),
            (
                "[replication]\nread_buffer = \"1KiB\"\n",
                "replication.read_buffer",
                "between 8KiB and 16MiB",
            ),
            ("[sites.a]\nregion = \"x\"\n", "sites.a.endpoint", "missing"),
            (
                "[sites.a]\nendpoint = \"ftp://x\"\n",
                "sites.a.endpoint",
                "http://",
            ),
            (
                "[sites.a]\nendpoint = \"http://KEY:SECRET@h:9000\"\n",
                "sites.a.endpoint",
                "\"http://***@h:9000\" carries credentials: put them in an AWS profile",
            ),
            (
                "[sites.a]\nendpoint = \"http://AKIA:ab/cd@h:9000\"\n",
                "sites.a.endpoint",
                "\"http://***@h:9000\" carries credentials",
            ),
            (
                "[sites.a]\nendpoint = \"https://h/bucket\"\n",
                "sites.a.endpoint",
                "no path",
            ),
            (
                "[sites.a]\nendpoint = \"http://\"\n",
                "sites.a.endpoint",
                "no host",
            ),
            (
                "[api]\ntoken_file = \"/nonexistent/token\"\n",
                "api.token_file",
                "cannot read /nonexistent/token",
            ),
            (
                "[sites.a]\nendpoint = \"https://h\"\nca_file = \"/nonexistent/ca.pem\"\n",
                "sites.a.ca_file",
                "cannot read /nonexistent/ca.pem",
            ),
            (
                "[kafka]\nsecurity_protocol = \"ssl\"\n",
                "kafka.security_protocol",
                "needs kafka.brokers",
            ),
            (
                "[kafka]\nbrokers = [\"k:9092\"]\nsecurity_protocol = \"tls\"\n",
                "kafka.security_protocol",
                "unknown variant",
            ),
            (
                "[api]\nlisten = \"0.0.0.0:8900\"\n",
                "api.token_file",
                "required",
            ),
            ("[kafka\n", "(syntax)", ""),
            (
                "[replication]\nattempts = 101\n",
                "replication.attempts",
                "between 1 and 100, not 101",
            ),
            (
                "[replication]\nwindow = \"10KiB\"\n",
                "replication.window",
                "at least 1MiB",
            ),
            (
                "[kafka]\npartitions = 0\n",
                "kafka.partitions",
                "between 1 and 10000",
            ),
            (
                "[kafka]\nbrokers = \"a:9092\"\n",
                "kafka.brokers",
                "expected a sequence",
            ),
            (
                "[api]\nlisten = \"nowhere\"\n",
                "api.listen",
                "not an address",
            ),
            (
                "[sites.a]\nendpoint = \"http://x\"\nchecksum = \"md5\"\n",
                "sites.a.checksum",
                "\"trailer\" or \"header\"",
            ),
            (
                "[sites.a]\nendpoint = \"http://x\"\nbuckets = { a = 1 }\n",
                "sites.a.buckets.a",
                "expected a string",
            ),
            (
                "[source]\nscan_interval_seconds = -1\n",
                "source.scan_interval_seconds",
                "between 0 and",
            ),
            (
                "[kafka]\nmax_poll_interval_ms = 20000\ndrain_deadline_seconds = 30\n",
                "kafka.drain_deadline_seconds",
                "shorter than kafka.max_poll_interval_ms (20000 ms)",
            ),
        ] {
            let e = load(text).unwrap_err();
            assert_eq!(e.key, key, "{text}: {e}");
            assert!(e.message.contains(want), "{text}: {e}");
            assert!(e.to_string().contains("backbeat.toml"), "{e}");
            assert!(
                !e.to_string().contains("SECRET") && !e.to_string().contains("ab/cd"),
                "{e}"
            );
        }
    }
}

#[cfg(test)]
mod more_tests {
    use super::*;
    use std::collections::HashMap;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn errors_give_the_line_of_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let home = env(&[("HOME", dir.path().to_str().unwrap())]);
        let p = write(
            dir.path(),
            "b.toml",
            "[kafka]\n\n[replication]\nshards = \"two\"\n",
        );
        let e = Config::load_with_env(&p, &home).unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("replication.shards", Some(4)));
        assert!(
            e.to_string()
                .starts_with(&format!("{}:4: replication.shards: ", p.display())),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_are_named_with_the_known_ones() {
        let dir = tempfile::tempdir().unwrap();
        let home = env(&[("HOME", dir.path().to_str().unwrap())]);
        for (text, key, known) in [
            (
                "[replication]\nconcurency = 4\n",
                "replication.concurency",
                "concurrency",
            ),
            (
                "[sites.a]\nendpoint = \"http://x\"\nbuckts = {}\n",
                "sites.a.buckts",
                "buckets",
            ),
            ("[source]\nca = \"x\"\n", "source.ca", "ca_file"),
            ("[api]\ntoken = \"x\"\n", "api.token", "token_file"),
        ] {
            let p = write(dir.path(), "b.toml", text);
            let e = Config::load_with_env(&p, &home).unwrap_err();
            assert_eq!(e.key, key, "{e}");
            assert!(e.message.starts_with("unknown key (known: "), "{e}");
            assert!(e.message.contains(known), "{e}");
        }
    }

    #[test]
    fn profiles_name_their_own_file_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let home = env(&[("HOME", dir.path().to_str().unwrap())]);
        let cfg = write(
            dir.path(),
            "b.toml",
            "[replication]\nprofile = \"p.toml\"\n",
        );
        for (text, key, line) in [
            ("[replication]\nattempts = 0\n", "replication.attempts", 2),
            ("[kafka]\npartitions = 2\n", "kafka", 1),
            (
                "[replication]\nprofile = \"q.toml\"\n",
                "replication.profile",
                2,
            ),
        ] {
            write(dir.path(), "p.toml", text);
            let e = Config::load_with_env(&cfg, &home).unwrap_err();
            assert!(e.file.ends_with("p.toml") && e.key == key, "{text}: {e}");
            assert_eq!(e.line, Some(line), "{e}");
        }
    }

    #[test]
    fn every_compiled_profile_sets_every_key() {
        let dir = tempfile::tempdir().unwrap();
        let home = env(&[("HOME", dir.path().to_str().unwrap())]);
        for (name, text) in super::super::tune::PROFILES {
            write(dir.path(), "p.toml", text);
            let cfg = write(
                dir.path(),
                "b.toml",
                "[replication]\nprofile = \"p.toml\"\n",
            );
            let c = Config::load_with_env(&cfg, &home).unwrap_or_else(|e| panic!("{name}: {e}"));
            for key in TUNING_KEYS {
                let origin = c.origin(&format!("replication.{key}"));
                assert!(
                    matches!(origin, Origin::Profile(_)),
                    "{name}: {key}: {origin}"
                );
            }
        }
    }

    /// Flag > file > environment > AWS profile, for each of the three settings.
    #[test]
    fn aws_settings_by_precedence() {
        let dir = tempfile::tempdir().unwrap();
        let conf = write(
            dir.path(),
            "config",
            "[default]\nregion = d-1\n[profile dr]\nregion = p-1\nendpoint_url = http://p\nca_bundle = /p.pem\n",
        );
        let file = dir.path().join("b.toml");
        let conf_s = conf.to_str().unwrap();
        let full = env(&[
            ("AWS_CONFIG_FILE", conf_s),
            ("AWS_REGION", "e-1"),
            ("AWS_DEFAULT_REGION", "e-2"),
            ("AWS_ENDPOINT_URL", "http://e"),
            ("AWS_ENDPOINT_URL_S3", "http://e-s3"),
            ("AWS_CA_BUNDLE", "/e.pem"),
        ]);
        let profile_only = env(&[("AWS_CONFIG_FILE", conf_s)]);
        let aws = Origin::AwsProfile {
            name: "dr".into(),
            file: conf.clone(),
        };
        for (setting, from_env, var, from_profile) in [
            (AwsSetting::Region, "e-1", "AWS_REGION", "p-1"),
            (
                AwsSetting::EndpointUrl,
                "http://e-s3",
                "AWS_ENDPOINT_URL_S3",
                "http://p",
            ),
            (AwsSetting::CaBundle, "/e.pem", "AWS_CA_BUNDLE", "/p.pem"),
        ] {
            let get = |flag: Option<&str>, in_file: Option<&str>, env: &HashMap<String, String>| {
                let in_file = in_file.map(|v| (v.to_string(), file.as_path()));
                layered(flag.map(str::to_string), in_file, setting, Some("dr"), env)
            };
            let f = Origin::File(file.clone());
            assert_eq!(
                get(Some("F"), Some("C"), &full),
                Some(("F".into(), Origin::Flag))
            );
            assert_eq!(get(None, Some("C"), &full), Some(("C".into(), f)));
            assert_eq!(
                get(None, None, &full),
                Some((from_env.into(), Origin::Env(var)))
            );
            assert_eq!(
                get(None, None, &profile_only),
                Some((from_profile.into(), aws.clone()))
            );
            assert_eq!(get(None, None, &env(&[])), None);
        }
        // AWS_DEFAULT_REGION when AWS_REGION is unset; AWS_PROFILE, else `default`, names the profile.
        let e = env(&[("AWS_DEFAULT_REGION", "e-2")]);
        let r = credentials::aws_setting(AwsSetting::Region, None, &e);
        assert_eq!(r, Some(("e-2".into(), Origin::Env("AWS_DEFAULT_REGION"))));
        let r = credentials::aws_setting(AwsSetting::Region, None, &profile_only);
        assert_eq!(r.map(|(v, _)| v).as_deref(), Some("d-1"));
        let e = env(&[("AWS_CONFIG_FILE", conf_s), ("AWS_PROFILE", "dr")]);
        let r = credentials::aws_setting(AwsSetting::Region, None, &e);
        assert_eq!(r.map(|(v, _)| v).as_deref(), Some("p-1"));
    }

    /// The configuration file wins over the environment, which wins over the AWS profile;
    /// `config check` shows which gave each value.
    #[test]
    fn config_file_then_env_then_aws_profile() {
        let dir = tempfile::tempdir().unwrap();
        let p_pem = write(dir.path(), "p.pem", "a CA");
        write(dir.path(), "h.pem", "a CA");
        let conf = write(
            dir.path(),
            "config",
            &format!(
                "[profile dr]\nregion = p-1\nendpoint_url = https://dr.example\nca_bundle = {}\n",
                p_pem.display()
            ),
        );
        let cfg = write(
            dir.path(),
            "b.toml",
            "[source]\nregion = \"c-1\"\n[sites.dr]\nprofile = \"dr\"\n[sites.here]\nendpoint = \"http://h\"\nca_file = \"h.pem\"\n",
        );
        let e = env(&[
            ("AWS_CONFIG_FILE", conf.to_str().unwrap()),
            ("AWS_DEFAULT_REGION", "e-1"),
            ("AWS_SECRET_ACCESS_KEY", "never-shown"),
        ]);
        let c = Config::load_with_env(&cfg, &e).unwrap();
        assert_eq!(
            c.source.s3.region, "c-1",
            "the file wins over the environment"
        );
        assert_eq!(
            c.source.s3.endpoint, "",
            "nothing gives the source's endpoint"
        );
        assert_eq!(
            c.sites["dr"].s3.region, "e-1",
            "the environment wins over the profile"
        );
        assert_eq!(c.sites["dr"].s3.endpoint, "https://dr.example");
        assert_eq!(c.sites["dr"].s3.ca_file.as_deref(), Some(p_pem.as_path()));
        assert_eq!(c.sites["here"].s3.ca_file, Some(dir.path().join("h.pem")));
        assert_eq!(
            c.origin("sites.dr.region"),
            Origin::Env("AWS_DEFAULT_REGION")
        );
        assert!(matches!(
            c.origin("sites.dr.endpoint"),
            Origin::AwsProfile { .. }
        ));
        assert!(matches!(c.origin("sites.here.ca_file"), Origin::File(_)));
        assert_eq!(c.origin("source.endpoint"), Origin::Default);
        let shown = c.render();
        assert!(shown.contains("# env AWS_DEFAULT_REGION"), "{shown}");
        assert!(shown.contains("# aws profile \"dr\" in "), "{shown}");
        assert!(!shown.contains("never-shown"), "{shown}");
        // A site whose endpoint nothing gives is an error naming the key.
        let e = env(&[("HOME", dir.path().to_str().unwrap())]);
        let err = Config::load_with_env(&cfg, &e).unwrap_err();
        assert_eq!(err.key, "sites.dr.endpoint", "{err}");
        // A URL from the environment is checked too, and the error says where it came from.
        let e = env(&[("AWS_ENDPOINT_URL", "ftp://x")]);
        let err = Config::load_with_env(&cfg, &e).unwrap_err();
        assert!(err.message.contains("from env AWS_ENDPOINT_URL"), "{err}");
    }
}
