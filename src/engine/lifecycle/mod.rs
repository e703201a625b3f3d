//! The lifecycle role wired from the configuration: a bucket's rules (its rules file or
//! GetBucketLifecycleConfiguration), the guard that keeps a version until it is at every site
//! its replication rules send it to (asked of the destinations, by the source's order), one
//! pass now (`backbeat lifecycle run`), and the roles on Kafka (`roles`).

pub mod roles;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use crate::config::file::Config;
use crate::lifecycle::eval::{Action, Clock, Entry};
use crate::lifecycle::pass::{Guard, Outcome, Pass, PassReport};
use crate::lifecycle::rules::LifecycleRules;
use crate::populate::rules::ReplicationConfig;
use crate::replication::Version;
use crate::replication::{DataPath, Route, Verdict};
use crate::s3::ops::bucket::{BucketError, Versioning};
use crate::s3::ops::list_object_versions::ListedVersion;
use crate::s3::Client;
use crate::shard;

use super::{site_endpoint, source_endpoint, EngineError};

/// Keeps a version until every site it must reach reflects it.
pub struct ReplicaGuard {
    source: Client,
    rules: Option<ReplicationConfig>,
    /// The bucket's lifecycle rules: a version they transition to a site must be there
    /// before it is deleted.
    lifecycle: LifecycleRules,
    /// Site -> the route from the bucket to it.
    routes: BTreeMap<String, Route>,
    /// The data path of transitions to sites.
    dp: DataPath,
}

fn listed(key: &str, e: &Entry, latest: bool) -> ListedVersion {
    ListedVersion {
        key: key.to_string(),
        version_id: e.version_id.clone(),
        is_latest: latest,
        delete_marker: e.delete_marker,
        last_modified: e.last_modified.clone(),
        etag: e.etag.clone(),
        size: e.size,
        storage_class: e.storage_class.clone(),
    }
}

impl Guard for ReplicaGuard {
    async fn copy_to_site(&self, a: &Action, site: &str) -> Option<Outcome> {
        let route = self.routes.get(site)?;
        let e = Entry {
            version_id: a.version_id.clone(),
            last_modified: a.last_modified.clone(),
            etag: a.etag.clone(),
            size: a.size,
            ..Default::default()
        };
        let v = Version::from(listed(&a.key, &e, false));
        Some(match route.decide(&v).await {
            Ok(Verdict::Apply) => match crate::replication::replicate(route, &self.dp, &v).await {
                Ok(_) => Outcome::Done,
                Err(g) => Outcome::Failed(format!("copying to site {site}: {}", g.error)),
            },
            Ok(Verdict::Applied) => Outcome::Skipped(format!("already at site {site}")),
            Ok(Verdict::Superseded(why)) => {
                Outcome::Skipped(format!("not copied to site {site}: {why}"))
            }
            Err(e) => Outcome::Failed(format!("site {site}: {e}")),
        })
    }

    async fn reached(
        &self,
        bucket: &str,
        key: &str,
        entries: &[Entry],
        clock: &Clock,
    ) -> Result<Vec<Option<String>>, String> {
        let history: Vec<Version> = entries
            .iter()
            .enumerate()
            .rev()
            .map(|(i, e)| Version::from(listed(key, e, i == 0)))
            .collect();
        let prefixes: RefCell<BTreeMap<String, usize>> = Default::default();
        let mut out = Vec::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            let since = i.checked_sub(1).and_then(|j| entries[j].modified);
            let mut why = None;
            for (site, cold) in self.sites_for(bucket, key, e, since, clock).await? {
                let at = Held {
                    history: &history,
                    prefixes: &prefixes,
                    index: entries.len() - 1 - i,
                };
                why = self.missing_at(&site, cold, key, at).await?;
                if why.is_some() {
                    break;
                }
            }
            out.push(why);
        }
        Ok(out)
    }
}

/// A version's place in its key's history (oldest first), and the prefixes each site was
/// found to reflect (asked once per site and key).
struct Held<'a> {
    history: &'a [Version],
    prefixes: &'a RefCell<BTreeMap<String, usize>>,
    index: usize,
}

impl ReplicaGuard {
    /// Why the version is not (yet) at `site`, or `None`. A replication site holds it when
    /// it reflects the key's history up to it or later (the worker's order); a site the
    /// lifecycle rules transition it to must hold that very version (it receives only some
    /// of a key's versions, so a later one proves nothing).
    async fn missing_at(
        &self,
        site: &str,
        cold: bool,
        key: &str,
        at: Held<'_>,
    ) -> Result<Option<String>, String> {
        let Some(route) = self.routes.get(site) else {
            let m = format!("its replication rules name site {site}, which is not configured here");
            return Ok(Some(m));
        };
        let err = |e: crate::replication::ReplicationError| format!("site {site}: {e}");
        if cold {
            let held = route
                .holds_version(&at.history[at.index])
                .await
                .map_err(err)?;
            return Ok((!held).then(|| format!("not yet copied to site {site}")));
        }
        let known = at.prefixes.borrow().get(site).copied();
        let prefix = match known {
            Some(p) => p,
            None => {
                let p = route.applied_prefix(key, at.history).await.map_err(err)?;
                at.prefixes.borrow_mut().insert(site.to_string(), p);
                p
            }
        };
        Ok((prefix <= at.index).then(|| format!("not yet replicated to site {site}")))
    }

    /// The sites entry `e` of `key` must reach, each with whether it is a lifecycle
    /// transition's (checked for that very version): those its replication rules name, and
    /// the sites its lifecycle rules have transitioned it to by now (`since`: when it
    /// became noncurrent).
    async fn sites_for(
        &self,
        bucket: &str,
        key: &str,
        e: &Entry,
        since: Option<std::time::SystemTime>,
        clock: &Clock,
    ) -> Result<Vec<(String, bool)>, String> {
        let mut sites: Vec<(String, bool)> = match &self.rules {
            Some(rules) => {
                let tags = self.tags_for(bucket, key, e, rules).await?;
                let d = rules.decide(key, &tags, e.delete_marker);
                let names = d.map(|d| d.sites).unwrap_or_default();
                names.into_iter().map(|s| (s, false)).collect()
            }
            None => Vec::new(),
        };
        let due = crate::lifecycle::eval::transitions_due(&self.lifecycle, clock, key, e, since);
        for class in due {
            if self.routes.contains_key(class) {
                sites.retain(|(s, _)| s != class);
                sites.push((class.to_string(), true));
            }
        }
        Ok(sites)
    }

    /// The version's tags when the replication rules filter on tags (read if the pass did
    /// not already).
    async fn tags_for(
        &self,
        bucket: &str,
        key: &str,
        e: &Entry,
        rules: &ReplicationConfig,
    ) -> Result<Vec<(String, String)>, String> {
        let wanted = rules.rules.iter().any(|r| !r.filter.tags.is_empty());
        if !wanted || e.delete_marker || !e.tags.is_empty() {
            return Ok(e.tags.clone());
        }
        self.source
            .get_object_tagging(bucket, key, Some(&e.version_id))
            .await
            .map_err(|err| format!("reading the tags of {key} ({}): {err}", e.version_id))
    }
}

/// What one pass needs, resolved from the configuration for `bucket`.
struct Resolved {
    source: Client,
    rules: LifecycleRules,
    guard: ReplicaGuard,
    /// Whether the source bucket keeps versions.
    versioned: bool,
}

/// Whether `bucket` keeps versions (a server without GetBucketVersioning keeps none); an
/// error is an error, not a guess.
async fn versioning(c: &Client, bucket: &str) -> Result<bool, String> {
    match c.get_bucket_versioning(bucket).await {
        Ok(v) => Ok(v == Versioning::Enabled),
        Err(e) if e.code() == "NotImplemented" => Ok(false),
        Err(e) => Err(format!("reading the versioning of bucket {bucket}: {e}")),
    }
}

/// A configuration document of a bucket: its file when one is configured, else what the
/// source stores (`None`: the source has none, `absent` being that error).
async fn document(
    file: Option<&std::path::Path>,
    stored: impl std::future::Future<Output = Result<String, BucketError>>,
    absent: fn(&BucketError) -> bool,
    what: &str,
) -> Result<Option<String>, String> {
    if let Some(p) = file {
        let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
        return Ok(Some(text));
    }
    match stored.await {
        Ok(xml) => Ok(Some(xml)),
        Err(e) if absent(&e) => Ok(None),
        Err(e) => Err(format!("reading its {what} configuration: {e}")),
    }
}

/// The bucket's lifecycle rules: its rules file, else what the source stores.
async fn lifecycle_rules(
    cfg: &Config,
    source: &Client,
    bucket: &str,
) -> Result<Option<LifecycleRules>, String> {
    let file = cfg.lifecycle.rules_files.get(bucket).map(|p| p.as_path());
    let absent = |e: &BucketError| matches!(e, BucketError::NoLifecycleConfiguration);
    let text = document(
        file,
        source.get_bucket_lifecycle(bucket),
        absent,
        "lifecycle",
    );
    let parse = |t: String| LifecycleRules::parse(&t).map_err(|e| e.to_string());
    text.await?.map(parse).transpose()
}

/// The bucket's replication rules: `source.rules_file`, else what the source stores.
async fn replication_rules(
    cfg: &Config,
    source: &Client,
    bucket: &str,
) -> Result<Option<ReplicationConfig>, String> {
    let file = cfg.source.rules_file.as_deref();
    let absent = |e: &BucketError| matches!(e, BucketError::NoReplicationConfiguration);
    let text = document(
        file,
        source.get_bucket_replication(bucket),
        absent,
        "replication",
    );
    let parse = |t: String| ReplicationConfig::parse(&t).map_err(|e| e.to_string());
    text.await?.map(parse).transpose()
}

/// The source client, the rules and the guard for `bucket` (`None`: it has no rules).
async fn resolve(cfg: &Config, bucket: &str) -> Result<Option<Resolved>, String> {
    let t = &cfg.replication;
    let src = source_endpoint(cfg).map_err(|e| e.to_string())?;
    let source = Client::new(src, None);
    let Some(rules) = lifecycle_rules(cfg, &source, bucket).await? else {
        return Ok(None);
    };
    let mut routes = BTreeMap::new();
    for (name, s) in &cfg.sites {
        let ep = site_endpoint(name, s, t).map_err(|e| e.to_string())?;
        let dest = Client::new(ep, None);
        let dest_bucket = s.buckets.dest(bucket);
        // Unknown is not "unversioned": that would make a missing object read as a
        // replicated delete.
        let versioned = versioning(&dest, &dest_bucket)
            .await
            .map_err(|e| format!("site {name}: {e}"))?;
        let route = Route {
            source: source.clone(),
            source_bucket: bucket.to_string(),
            dest,
            dest_bucket,
            dest_versioned: versioned,
            policy: Default::default(),
        };
        routes.insert(name.clone(), route);
    }
    let dp = DataPath::new(
        super::options(cfg),
        cfg.replication.shard_parts(),
        crate::metrics::Stats::new(),
        crate::shard::Shutdown::new(),
    );
    let guard = ReplicaGuard {
        source: source.clone(),
        rules: replication_rules(cfg, &source, bucket).await?,
        lifecycle: rules.clone(),
        routes,
        dp,
    };
    let versioned = versioning(&source, bucket).await?;
    Ok(Some(Resolved {
        source,
        rules,
        guard,
        versioned,
    }))
}

/// Whether `run` executes lifecycle: `on`, `off`, or (`auto`) when a configured bucket has
/// a rules file or rules stored on it.
pub fn wanted(cfg: &Config, known: &[String]) -> Result<bool, EngineError> {
    use crate::config::lifecycle::Enabled;
    match cfg.lifecycle.enabled {
        Enabled::On => return Ok(true),
        Enabled::Off => return Ok(false),
        Enabled::Auto if !cfg.lifecycle.rules_files.is_empty() => return Ok(true),
        Enabled::Auto => {}
    }
    let src = source_endpoint(cfg)?;
    let buckets = known.to_vec();
    Ok(shard::block_on(async move {
        let source = Client::new(src, None);
        for b in &buckets {
            if source.get_bucket_lifecycle(b).await.is_ok() {
                return true;
            }
        }
        false
    })?)
}

/// One pass over `bucket` now (or, with `dry_run`, what it would do), reporting each
/// action to `on_action` and the listing's progress to `on_key`.
pub fn run_once(
    cfg: &Config,
    bucket: &str,
    dry_run: bool,
    on_action: impl FnMut(&Action, &Outcome),
    on_key: impl FnMut(&PassReport),
) -> Result<PassReport, EngineError> {
    if !cfg.source.buckets.matches(bucket) {
        return Err(EngineError::Setup(format!(
            "bucket {bucket:?} is not in source.buckets ({}): lifecycle acts only on configured buckets",
            cfg.source.buckets.text()
        )));
    }
    let cfg = Arc::new(cfg.clone());
    let factor = cfg.lifecycle.time_progression_factor;
    let bucket = bucket.to_string();
    shard::block_on(async move {
        let r = resolve(&cfg, &bucket)
            .await
            .map_err(|m| EngineError::Setup(format!("bucket {bucket}: {m}")))?;
        let Some(r) = r else {
            tracing::info!(
                bucket,
                "the bucket has no lifecycle configuration: nothing to do"
            );
            return Ok(PassReport::default());
        };
        let pass = Pass {
            client: &r.source,
            bucket: &bucket,
            rules: &r.rules,
            clock: Clock::new(SystemTime::now(), factor),
            dry_run,
            guard: &r.guard,
            versioned: r.versioned,
        };
        pass.run(on_action, on_key)
            .await
            .map_err(|e| EngineError::Setup(e.to_string()))
    })?
}
