//! The TOML configuration file: every key has a default, unknown keys are errors, and every
//! error names the file and the key. The effective configuration records where each value
//! came from: default, tuning profile, file or command-line flag.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::s3::ChecksumTransport;
use crate::shard::Placement;

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    Profile(PathBuf),
    File(PathBuf),
    Flag,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::Profile(p) => write!(f, "profile {}", p.display()),
            Origin::File(p) => write!(f, "file {}", p.display()),
            Origin::Flag => f.write_str("flag"),
        }
    }
}

/// A configuration error: the file, the key, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {key}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub message: String,
}

/// Kafka settings. No brokers means the embedded, non-durable broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    pub brokers: Vec<String>,
    pub topic_prefix: String,
    pub partitions: i32,
    pub replication_factor: i32,
    pub session_timeout_ms: u32,
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
}

/// The source side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceConfig {
    pub s3: EndpointSettings,
    pub buckets: Vec<String>,
    /// A ReplicationConfiguration XML file used instead of GetBucketReplication.
    pub rules_file: Option<PathBuf>,
    /// For sources that publish no event notifications: every this many seconds, `run`
    /// scans the buckets and enqueues the versions missing at a site (0: never).
    pub scan_interval_seconds: u64,
}

/// A destination site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteConfig {
    pub s3: EndpointSettings,
    pub checksum: ChecksumTransport,
    pub verify_after_write: bool,
    /// Source bucket -> destination bucket; a source bucket not listed keeps its name.
    pub buckets: BTreeMap<String, String>,
}

/// Data path sizes and bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationTuning {
    /// 0 means one shard per core.
    pub shards: usize,
    pub placement: Placement,
    pub concurrency: usize,
    pub part_size: u64,
    pub multipart_threshold: u64,
    pub part_concurrency: usize,
    pub attempts: u32,
    /// Object bytes in flight per shard (0: only `concurrency` bounds it); objects of
    /// 1 MiB or more take their size from it.
    pub window: u64,
    /// Read buffer of each S3 connection: the largest frame the data path moves at once.
    pub read_buffer: u64,
    /// SO_SNDBUF and SO_RCVBUF of S3 connections (0: the kernel's autotuning).
    pub socket_buffer: u64,
}

impl ReplicationTuning {
    /// Parts in flight per shard, across objects.
    pub fn shard_parts(&self) -> usize {
        self.part_concurrency * 4
    }
}

/// The operations API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    pub token_file: Option<PathBuf>,
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub source: SourceConfig,
    pub sites: BTreeMap<String, SiteConfig>,
    pub replication: ReplicationTuning,
    pub api: ApiConfig,
    /// Dotted key -> where its value came from.
    pub origins: BTreeMap<String, Origin>,
}

fn default_endpoint() -> EndpointSettings {
    EndpointSettings {
        endpoint: String::new(),
        region: "us-east-1".into(),
        profile: None,
        ca_file: None,
        path_style: true,
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            kafka: KafkaConfig {
                brokers: Vec::new(),
                topic_prefix: "backbeat-".into(),
                partitions: 8,
                replication_factor: 1,
                session_timeout_ms: 10_000,
            },
            source: SourceConfig {
                s3: default_endpoint(),
                buckets: Vec::new(),
                rules_file: None,
                scan_interval_seconds: 0,
            },
            sites: BTreeMap::new(),
            replication: ReplicationTuning {
                shards: 0,
                placement: Placement::Unbound,
                concurrency: 32,
                part_size: 16 << 20,
                multipart_threshold: 64 << 20,
                part_concurrency: 4,
                attempts: 5,
                window: 64 << 20,
                read_buffer: 256 << 10,
                socket_buffer: 0,
            },
            api: ApiConfig {
                listen: "127.0.0.1:8900".parse().expect("valid address"),
                token_file: None,
            },
            origins: BTreeMap::new(),
        }
    }
}

/// The keys of the tuning section, which a profile may set.
pub const TUNING_KEYS: &[&str] = &[
    "shards",
    "placement",
    "concurrency",
    "part_size",
    "multipart_threshold",
    "part_concurrency",
    "attempts",
    "window",
    "read_buffer",
    "socket_buffer",
];

struct Ctx<'a> {
    file: &'a Path,
    origin: Origin,
    origins: &'a mut BTreeMap<String, Origin>,
}

impl Ctx<'_> {
    fn err(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.display().to_string(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    fn set(&mut self, key: &str) {
        self.origins.insert(key.to_string(), self.origin.clone());
    }

    fn string(&mut self, key: &str, v: &toml::Value) -> Result<String, ConfigError> {
        self.set(key);
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| self.err(key, "expected a string"))
    }

    fn int(&mut self, key: &str, v: &toml::Value, min: i64, max: i64) -> Result<i64, ConfigError> {
        self.set(key);
        let n = v
            .as_integer()
            .ok_or_else(|| self.err(key, "expected an integer"))?;
        if n < min || n > max {
            return Err(self.err(key, format!("must be between {min} and {max}, not {n}")));
        }
        Ok(n)
    }

    fn boolean(&mut self, key: &str, v: &toml::Value) -> Result<bool, ConfigError> {
        self.set(key);
        v.as_bool()
            .ok_or_else(|| self.err(key, "expected true or false"))
    }

    fn size(&mut self, key: &str, v: &toml::Value) -> Result<u64, ConfigError> {
        self.set(key);
        match v {
            toml::Value::Integer(n) if *n >= 0 => Ok(*n as u64),
            toml::Value::String(s) => super::parse_size(s).map_err(|e| self.err(key, e)),
            _ => Err(self.err(key, "expected a size such as 8388608 or \"8MiB\"")),
        }
    }

    fn strings(&mut self, key: &str, v: &toml::Value) -> Result<Vec<String>, ConfigError> {
        self.set(key);
        let arr = v
            .as_array()
            .ok_or_else(|| self.err(key, "expected a list of strings"))?;
        arr.iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| self.err(key, "expected a list of strings"))
            })
            .collect()
    }

    fn path(&mut self, key: &str, v: &toml::Value) -> Result<PathBuf, ConfigError> {
        let s = self.string(key, v)?;
        let p = PathBuf::from(s);
        // Relative paths are relative to the file that names them.
        Ok(if p.is_relative() {
            self.file.parent().unwrap_or(Path::new(".")).join(p)
        } else {
            p
        })
    }
}

fn table<'a>(ctx: &Ctx<'_>, key: &str, v: &'a toml::Value) -> Result<&'a toml::Table, ConfigError> {
    v.as_table().ok_or_else(|| ctx.err(key, "expected a table"))
}

fn endpoint_key(
    ctx: &mut Ctx<'_>,
    e: &mut EndpointSettings,
    prefix: &str,
    k: &str,
    v: &toml::Value,
) -> Result<bool, ConfigError> {
    let key = format!("{prefix}.{k}");
    match k {
        "endpoint" => {
            let s = ctx.string(&key, v)?;
            if !(s.starts_with("http://") || s.starts_with("https://")) {
                return Err(ctx.err(&key, format!("{s:?} must start with http:// or https://")));
            }
            e.endpoint = s;
        }
        "region" => e.region = ctx.string(&key, v)?,
        "profile" => e.profile = Some(ctx.string(&key, v)?),
        "ca_file" => e.ca_file = Some(ctx.path(&key, v)?),
        "path_style" => e.path_style = ctx.boolean(&key, v)?,
        _ => return Ok(false),
    }
    Ok(true)
}

fn apply_tuning(
    ctx: &mut Ctx<'_>,
    t: &mut ReplicationTuning,
    tbl: &toml::Table,
    section: &str,
) -> Result<(), ConfigError> {
    for (k, v) in tbl {
        let key = format!("{section}.{k}");
        match k.as_str() {
            "shards" => t.shards = ctx.int(&key, v, 0, 1024)? as usize,
            "placement" => {
                t.placement = match ctx.string(&key, v)?.as_str() {
                    "unbound" => Placement::Unbound,
                    "pinned" => Placement::Pinned,
                    other => {
                        return Err(
                            ctx.err(&key, format!("{other:?}: use \"unbound\" or \"pinned\""))
                        )
                    }
                }
            }
            "concurrency" => t.concurrency = ctx.int(&key, v, 1, 100_000)? as usize,
            "part_size" => {
                t.part_size = ctx.size(&key, v)?;
                if t.part_size < 5 << 20 {
                    return Err(ctx.err(&key, "must be at least 5MiB (S3's minimum part size)"));
                }
            }
            "multipart_threshold" => t.multipart_threshold = ctx.size(&key, v)?,
            "part_concurrency" => t.part_concurrency = ctx.int(&key, v, 1, 1024)? as usize,
            "attempts" => t.attempts = ctx.int(&key, v, 1, 100)? as u32,
            "window" => {
                t.window = ctx.size(&key, v)?;
                if t.window != 0 && t.window < 1 << 20 {
                    return Err(ctx.err(&key, "must be 0 (no bound) or at least 1MiB"));
                }
            }
            "read_buffer" => {
                t.read_buffer = ctx.size(&key, v)?;
                if !(8 << 10..=16 << 20).contains(&t.read_buffer) {
                    return Err(ctx.err(&key, "must be between 8KiB and 16MiB"));
                }
            }
            "socket_buffer" => {
                t.socket_buffer = ctx.size(&key, v)?;
                if t.socket_buffer > 1 << 30 {
                    return Err(ctx.err(&key, "must be at most 1GiB (0: kernel autotuning)"));
                }
            }
            "profile" if section == "replication" => {}
            _ => {
                return Err(ctx.err(
                    &key,
                    format!("unknown key (known: {})", TUNING_KEYS.join(", ")),
                ))
            }
        }
    }
    Ok(())
}

fn read(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.display().to_string(),
        key: "(file)".into(),
        message: format!("cannot read: {e}"),
    })?;
    text.parse::<toml::Table>().map_err(|e| ConfigError {
        file: path.display().to_string(),
        key: "(syntax)".into(),
        message: e.to_string().lines().next().unwrap_or("").to_string(),
    })
}

impl Config {
    /// Loads a configuration file (and the tuning profile it names).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let tbl = read(path)?;
        Self::from_table(path, &tbl)
    }

    /// Builds a configuration from parsed TOML read from `path`.
    pub fn from_table(path: &Path, tbl: &toml::Table) -> Result<Self, ConfigError> {
        let mut cfg = Config::default();
        let mut origins = BTreeMap::new();
        // A tuning profile first, so the file's own values win over it.
        if let Some(p) = tbl
            .get("replication")
            .and_then(|r| r.as_table())
            .and_then(|r| r.get("profile"))
        {
            let mut ctx = Ctx {
                file: path,
                origin: Origin::File(path.to_path_buf()),
                origins: &mut origins,
            };
            let profile_path = ctx.path("replication.profile", p)?;
            let ptbl = read(&profile_path)?;
            let mut pctx = Ctx {
                file: &profile_path,
                origin: Origin::Profile(profile_path.clone()),
                origins: &mut origins,
            };
            for (k, v) in &ptbl {
                match k.as_str() {
                    "replication" => {
                        let t = table(&pctx, "replication", v)?;
                        apply_tuning(&mut pctx, &mut cfg.replication, t, "replication")?
                    }
                    _ => {
                        return Err(
                            pctx.err(k, "a tuning profile may only hold a [replication] table")
                        )
                    }
                }
            }
        }
        let mut ctx = Ctx {
            file: path,
            origin: Origin::File(path.to_path_buf()),
            origins: &mut origins,
        };
        for (section, v) in tbl {
            match section.as_str() {
                "kafka" => {
                    for (k, v) in table(&ctx, "kafka", v)? {
                        let key = format!("kafka.{k}");
                        match k.as_str() {
                            "brokers" => cfg.kafka.brokers = ctx.strings(&key, v)?,
                            "topic_prefix" => cfg.kafka.topic_prefix = ctx.string(&key, v)?,
                            "partitions" => {
                                cfg.kafka.partitions = ctx.int(&key, v, 1, 10_000)? as i32
                            }
                            "replication_factor" => {
                                cfg.kafka.replication_factor = ctx.int(&key, v, 1, 16)? as i32
                            }
                            "session_timeout_ms" => {
                                cfg.kafka.session_timeout_ms =
                                    ctx.int(&key, v, 1000, 3_600_000)? as u32
                            }
                            _ => return Err(ctx.err(&key, "unknown key")),
                        }
                    }
                }
                "source" => {
                    for (k, v) in table(&ctx, "source", v)? {
                        let key = format!("source.{k}");
                        if endpoint_key(&mut ctx, &mut cfg.source.s3, "source", k, v)? {
                            continue;
                        }
                        match k.as_str() {
                            "buckets" => cfg.source.buckets = ctx.strings(&key, v)?,
                            "rules_file" => cfg.source.rules_file = Some(ctx.path(&key, v)?),
                            "scan_interval_seconds" => {
                                cfg.source.scan_interval_seconds =
                                    ctx.int(&key, v, 0, 86_400 * 30)? as u64
                            }
                            _ => return Err(ctx.err(&key, "unknown key")),
                        }
                    }
                }
                "sites" => {
                    for (name, sv) in table(&ctx, "sites", v)? {
                        let prefix = format!("sites.{name}");
                        let mut site = SiteConfig {
                            s3: default_endpoint(),
                            checksum: ChecksumTransport::Trailer,
                            verify_after_write: false,
                            buckets: BTreeMap::new(),
                        };
                        for (k, v) in table(&ctx, &prefix, sv)? {
                            let key = format!("{prefix}.{k}");
                            if endpoint_key(&mut ctx, &mut site.s3, &prefix, k, v)? {
                                continue;
                            }
                            match k.as_str() {
                                "checksum" => {
                                    site.checksum = match ctx.string(&key, v)?.as_str() {
                                        "trailer" => ChecksumTransport::Trailer,
                                        "header" => ChecksumTransport::Header,
                                        other => {
                                            return Err(ctx.err(
                                                &key,
                                                format!("{other:?}: use \"trailer\" or \"header\""),
                                            ))
                                        }
                                    }
                                }
                                "verify_after_write" => {
                                    site.verify_after_write = ctx.boolean(&key, v)?
                                }
                                "buckets" => {
                                    ctx.set(&key);
                                    for (src, dst) in table(&ctx, &key, v)? {
                                        let d = dst.as_str().ok_or_else(|| {
                                            ctx.err(
                                                &format!("{key}.{src}"),
                                                "expected a bucket name",
                                            )
                                        })?;
                                        site.buckets.insert(src.clone(), d.to_string());
                                    }
                                }
                                _ => return Err(ctx.err(&key, "unknown key")),
                            }
                        }
                        if site.s3.endpoint.is_empty() {
                            return Err(ctx.err(
                                &format!("{prefix}.endpoint"),
                                "missing: every site needs an endpoint",
                            ));
                        }
                        cfg.sites.insert(name.clone(), site);
                    }
                }
                "replication" => {
                    let t = table(&ctx, "replication", v)?;
                    apply_tuning(&mut ctx, &mut cfg.replication, t, "replication")?
                }
                "api" => {
                    for (k, v) in table(&ctx, "api", v)? {
                        let key = format!("api.{k}");
                        match k.as_str() {
                            "listen" => {
                                let s = ctx.string(&key, v)?;
                                cfg.api.listen = s.parse().map_err(|_| {
                                    ctx.err(
                                        &key,
                                        format!("{s:?} is not an address such as 127.0.0.1:8900"),
                                    )
                                })?;
                            }
                            "token_file" => cfg.api.token_file = Some(ctx.path(&key, v)?),
                            _ => return Err(ctx.err(&key, "unknown key")),
                        }
                    }
                }
                other => {
                    return Err(ctx.err(
                        other,
                        "unknown section (known: kafka, source, sites, replication, api)",
                    ))
                }
            }
        }
        if !cfg.api.listen.ip().is_loopback() && cfg.api.token_file.is_none() {
            return Err(ctx.err(
                "api.token_file",
                format!(
                    "required when api.listen ({}) is not a loopback address",
                    cfg.api.listen
                ),
            ));
        }
        cfg.origins = origins;
        Ok(cfg)
    }

    /// Where `key` (dotted) came from.
    pub fn origin(&self, key: &str) -> Origin {
        self.origins.get(key).cloned().unwrap_or(Origin::Default)
    }

    /// Records that a flag set `key`.
    pub fn set_by_flag(&mut self, key: &str) {
        self.origins.insert(key.to_string(), Origin::Flag);
    }

    /// The effective configuration, one `key = value  # origin` line per setting.
    /// Credentials are never shown: only the profile name, or "environment".
    pub fn render(&self) -> String {
        let mut lines: Vec<(String, String)> = Vec::new();
        let mut push = |k: &str, v: String| lines.push((k.to_string(), v));
        let k = &self.kafka;
        push(
            "kafka.brokers",
            if k.brokers.is_empty() {
                "[] (embedded broker, not durable)".into()
            } else {
                format!("{:?}", k.brokers)
            },
        );
        push("kafka.topic_prefix", format!("{:?}", k.topic_prefix));
        push("kafka.partitions", k.partitions.to_string());
        push("kafka.replication_factor", k.replication_factor.to_string());
        push("kafka.session_timeout_ms", k.session_timeout_ms.to_string());
        let ep = |push: &mut dyn FnMut(&str, String), p: &str, e: &EndpointSettings| {
            push(&format!("{p}.endpoint"), format!("{:?}", e.endpoint));
            push(&format!("{p}.region"), format!("{:?}", e.region));
            push(
                &format!("{p}.profile"),
                e.profile
                    .as_ref()
                    .map(|p| format!("{p:?}"))
                    .unwrap_or_else(|| "(environment)".into()),
            );
            push(
                &format!("{p}.ca_file"),
                e.ca_file
                    .as_ref()
                    .map(|p| format!("{:?}", p.display().to_string()))
                    .unwrap_or_else(|| "(system roots)".into()),
            );
            push(&format!("{p}.path_style"), e.path_style.to_string());
        };
        ep(&mut push, "source", &self.source.s3);
        push("source.buckets", format!("{:?}", self.source.buckets));
        push(
            "source.scan_interval_seconds",
            self.source.scan_interval_seconds.to_string(),
        );
        push(
            "source.rules_file",
            self.source
                .rules_file
                .as_ref()
                .map(|p| format!("{:?}", p.display().to_string()))
                .unwrap_or_else(|| "(GetBucketReplication)".into()),
        );
        for (name, s) in &self.sites {
            let p = format!("sites.{name}");
            ep(&mut push, &p, &s.s3);
            push(
                &format!("{p}.checksum"),
                format!("{:?}", s.checksum).to_lowercase(),
            );
            push(
                &format!("{p}.verify_after_write"),
                s.verify_after_write.to_string(),
            );
            push(&format!("{p}.buckets"), format!("{:?}", s.buckets));
        }
        let r = &self.replication;
        push(
            "replication.shards",
            if r.shards == 0 {
                "0 (one per core)".into()
            } else {
                r.shards.to_string()
            },
        );
        push(
            "replication.placement",
            format!("{:?}", r.placement).to_lowercase(),
        );
        push("replication.concurrency", r.concurrency.to_string());
        push("replication.part_size", r.part_size.to_string());
        push(
            "replication.multipart_threshold",
            r.multipart_threshold.to_string(),
        );
        push(
            "replication.part_concurrency",
            r.part_concurrency.to_string(),
        );
        push("replication.attempts", r.attempts.to_string());
        push(
            "replication.window",
            if r.window == 0 {
                "0 (no bound)".into()
            } else {
                r.window.to_string()
            },
        );
        push("replication.read_buffer", r.read_buffer.to_string());
        push(
            "replication.socket_buffer",
            if r.socket_buffer == 0 {
                "0 (kernel autotuning)".into()
            } else {
                r.socket_buffer.to_string()
            },
        );
        push("api.listen", format!("{:?}", self.api.listen.to_string()));
        push(
            "api.token_file",
            self.api
                .token_file
                .as_ref()
                .map(|p| format!("{:?}", p.display().to_string()))
                .unwrap_or_else(|| "(none)".into()),
        );
        let width = lines
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .max()
            .unwrap_or(0)
            + 4;
        lines
            .iter()
            .map(|(k, v)| {
                let origin = self.origin(k);
                let kv = format!("{k} = {v}");
                format!("{kv:<width$}# {origin}\n")
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("backbeat.toml");
        std::fs::write(&p, text).unwrap();
        std::fs::write(
            dir.path().join("small.toml"),
            "[replication]\nshards = 2\nconcurrency = 8\npart_size = \"8MiB\"\n",
        )
        .unwrap();
        Config::load(&p)
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
[replication]
profile = "small.toml"
concurrency = 64
"#,
        )
        .unwrap();
        assert_eq!(c.kafka.partitions, 4);
        assert_eq!(c.sites["site-a"].checksum, ChecksumTransport::Header);
        assert_eq!(c.sites["site-a"].buckets["photos"], "photos-dr");
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
    fn shipped_example_and_profiles_load() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let c = Config::load(&root.join("docs/backbeat.example.toml")).unwrap();
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
            let c = Config::load(&cfg).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
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
                "[api]\nlisten = \"0.0.0.0:8900\"\n",
                "api.token_file",
                "required",
            ),
            ("[kafka\n", "(syntax)", ""),
        ] {
            let e = load(text).unwrap_err();
            assert_eq!(e.key, key, "{text}: {e}");
            assert!(e.message.contains(want), "{text}: {e}");
            assert!(e.to_string().contains("backbeat.toml"), "{e}");
        }
    }
}
