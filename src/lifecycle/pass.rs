//! One lifecycle pass over a bucket: list it, decide each key's actions, and carry them out
//! safely (or, in a dry run, only report them).
//!
//! Before an action deletes anything, it is checked again against the bucket as it is now:
//! a noncurrent version is deleted only if it is still there with the ETag it was listed
//! with, not under Object Lock retention or legal hold, and (through the [`Guard`]) already
//! at every site its replication rules send it to; a current version expires only while it
//! is still the current one; a delete marker is removed only while it is still all that is
//! left of its key. Every action is idempotent: done twice, the second finds nothing to do.

use std::collections::BTreeMap;
use std::time::SystemTime;

use crate::s3::ops::head_object::{HeadObjectError, HeadObjectRequest};
use crate::s3::ops::list_multipart_uploads::UploadsPage;
use crate::s3::Client;

use super::eval::{self, Action, Clock, Entry, Kind};
use super::listing::{self, KeyEntries, Lister};
use super::rules::LifecycleRules;

/// Whether the versions of a key have reached every site they must reach.
#[allow(async_fn_in_trait)]
pub trait Guard {
    /// For each of `entries` (one key's, newest first): `None` when it is at every site it
    /// must reach (or must reach none), else why it is not yet (naming the site). `clock`
    /// says which of the lifecycle rules' transitions to sites have come due.
    async fn reached(
        &self,
        bucket: &str,
        key: &str,
        entries: &[Entry],
        clock: &Clock,
    ) -> Result<Vec<Option<String>>, String>;

    /// Copies the version `a` names to `site` (a transition whose StorageClass names a
    /// configured site); `None` when `site` is not one.
    async fn copy_to_site(&self, a: &Action, site: &str) -> Option<Outcome>;
}

/// A guard for buckets that nothing replicates.
pub struct NoReplication;

impl Guard for NoReplication {
    async fn reached(
        &self,
        _: &str,
        _: &str,
        e: &[Entry],
        _: &Clock,
    ) -> Result<Vec<Option<String>>, String> {
        Ok(vec![None; e.len()])
    }

    async fn copy_to_site(&self, _: &Action, _: &str) -> Option<Outcome> {
        None
    }
}

/// What became of one action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// Dry run: what the real pass would do.
    WouldDo,
    /// Not done, for a reason that may pass (a later pass tries again) or that makes it moot.
    Skipped(String),
    Failed(String),
}

/// What a pass did, by action kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    pub keys: u64,
    pub versions: u64,
    pub uploads: u64,
    /// Action kind (`expire_current`, ...) -> (done or would do, skipped, failed).
    pub by_kind: BTreeMap<&'static str, (u64, u64, u64)>,
}

impl PassReport {
    fn count(&mut self, kind: &Kind, outcome: &Outcome) {
        let c = self.by_kind.entry(kind_name(kind)).or_default();
        match outcome {
            Outcome::Done | Outcome::WouldDo => c.0 += 1,
            Outcome::Skipped(_) => c.1 += 1,
            Outcome::Failed(_) => c.2 += 1,
        }
    }
}

/// The name of an action kind, as reports and metrics write it.
pub fn kind_name(k: &Kind) -> &'static str {
    match k {
        Kind::ExpireCurrent => "expire_current",
        Kind::DeleteVersion => "delete_version",
        Kind::RemoveDeleteMarker => "remove_delete_marker",
        Kind::Transition { .. } => "transition",
        Kind::AbortUpload { .. } => "abort_upload",
    }
}

/// Why a pass stopped.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error("listing the versions of bucket {bucket} failed: {message}")]
    List { bucket: String, message: String },
    #[error("listing the multipart uploads of bucket {bucket} failed: {message}")]
    Uploads { bucket: String, message: String },
}

/// Keys whose actions a pass carries out at once.
pub const KEYS_AT_ONCE: usize = 32;

/// One pass's inputs.
pub struct Pass<'a, G> {
    pub client: &'a Client,
    pub bucket: &'a str,
    pub rules: &'a LifecycleRules,
    pub clock: Clock,
    pub dry_run: bool,
    pub guard: &'a G,
    /// Whether the bucket keeps versions: when it does not, expiring the current object
    /// deletes its data, so it waits for the sites like a version's deletion.
    pub versioned: bool,
}

impl<G: Guard> Pass<'_, G> {
    /// Runs the pass, calling `on_action` for each action as it is done (or would be), and
    /// `on_key` after each key (the listing's progress: keys and versions so far).
    pub async fn run(
        &self,
        mut on_action: impl FnMut(&Action, &Outcome),
        mut on_key: impl FnMut(&PassReport),
    ) -> Result<PassReport, PassError> {
        let mut report = PassReport::default();
        let mut lister = Lister::new(self.client, self.bucket, None, None);
        loop {
            // Up to KEYS_AT_ONCE keys at a time (a key's actions stay in order); their
            // outcomes are reported in key order.
            let mut batch = Vec::with_capacity(KEYS_AT_ONCE);
            while batch.len() < KEYS_AT_ONCE {
                let next = lister.next_key().await.map_err(|e| PassError::List {
                    bucket: self.bucket.to_string(),
                    message: e.to_string(),
                })?;
                let Some(k) = next else { break };
                batch.push(k);
            }
            if batch.is_empty() {
                break;
            }
            report.keys += batch.len() as u64;
            report.versions = lister.listed;
            let done = futures_util::future::join_all(batch.into_iter().map(|k| self.key(k)));
            for (a, o) in done.await.into_iter().flatten() {
                report.count(&a.kind, &o);
                on_action(&a, &o);
            }
            on_key(&report);
        }
        if self.rules.aborts_uploads() {
            self.uploads(&mut report, &mut on_action).await?;
        }
        Ok(report)
    }

    /// One key's actions: tags read if a rule wants them, then the rules evaluated.
    async fn decide(&self, k: &mut KeyEntries) -> Vec<Action> {
        if self.rules.wants_tags(&k.key) {
            for e in k.entries.iter_mut().filter(|e| !e.delete_marker) {
                let tags = self
                    .client
                    .get_object_tagging(self.bucket, &k.key, Some(&e.version_id))
                    .await;
                e.tags = tags.unwrap_or_default();
            }
        }
        eval::decide_key(self.rules, &self.clock, self.bucket, &k.key, &k.entries)
    }

    /// One key: actions decided, checked and done.
    async fn key(&self, mut k: KeyEntries) -> Vec<(Action, Outcome)> {
        let actions = self.decide(&mut k).await;
        let mut out = Vec::with_capacity(actions.len());
        if actions.is_empty() {
            return out;
        }
        let reached = self.reached(&k, &actions).await;
        for a in actions {
            let outcome = match self.waiting(&reached, &k.entries, &a) {
                Some(why) => Outcome::Skipped(why),
                None if self.dry_run => Outcome::WouldDo,
                None => self.act(&a).await,
            };
            out.push((a, outcome));
        }
        out
    }

    /// The guard's answer for a key, asked only when one of its actions needs it.
    async fn reached(
        &self,
        k: &KeyEntries,
        actions: &[Action],
    ) -> Result<Vec<Option<String>>, String> {
        if actions.iter().any(|a| self.needs_replicas(a)) {
            let g = self
                .guard
                .reached(self.bucket, &k.key, &k.entries, &self.clock);
            g.await
        } else {
            Ok(vec![None; k.entries.len()])
        }
    }

    /// One step of a pass (for a bucket processor): up to `max_keys` keys listed after
    /// `after`, their actions, and the key the next step starts after (`None`: done).
    pub async fn step(&self, after: Option<String>, max_keys: usize) -> Result<Step, PassError> {
        let mut lister = Lister::new(self.client, self.bucket, None, after);
        let mut step = Step::default();
        while (step.keys as usize) < max_keys.max(1) {
            let next = lister.next_key().await.map_err(|e| PassError::List {
                bucket: self.bucket.to_string(),
                message: e.to_string(),
            })?;
            step.versions = lister.listed;
            let Some(mut k) = next else {
                step.next = None;
                return Ok(step);
            };
            step.keys += 1;
            let actions = self.decide(&mut k).await;
            let reached = self.reached(&k, &actions).await;
            for a in actions {
                match self.waiting(&reached, &k.entries, &a) {
                    Some(_) => step.waiting.push(a),
                    None => step.actions.push(a),
                }
            }
            step.next = Some(k.key);
        }
        Ok(step)
    }

    /// Carries out an action decided earlier (by an object processor, from a task): the
    /// key is listed again, and a version that must reach sites is checked with the guard
    /// first.
    pub async fn execute(&self, a: &Action) -> Outcome {
        if !matches!(a.kind, Kind::AbortUpload { .. }) {
            if let Err(o) = self.still_decided(a).await {
                return o;
            }
        }
        if self.dry_run {
            return Outcome::WouldDo;
        }
        self.act(a).await
    }

    /// The key listed again and its rules evaluated again now: `a` must still be among
    /// what they decide (a newer version deleted or a marker removed since, or the rules
    /// changed, and a deletion decided earlier would hit what is now the live object), and
    /// a version about to be deleted must be at its sites.
    async fn still_decided(&self, a: &Action) -> Result<(), Outcome> {
        let entries = listing::key_now(self.client, self.bucket, &a.key)
            .await
            .map_err(|e| Outcome::Failed(e.to_string()))?;
        let mut k = KeyEntries {
            key: a.key.clone(),
            entries,
        };
        let now = self.decide(&mut k).await;
        if !now
            .iter()
            .any(|b| b.version_id == a.version_id && b.kind == a.kind)
        {
            return Err(Outcome::Skipped(
                "no longer what the rules decide for the key as it is now".into(),
            ));
        }
        if self.needs_replicas(a) {
            let g = self
                .guard
                .reached(self.bucket, &k.key, &k.entries, &self.clock);
            if let Some(why) = self.waiting(&g.await, &k.entries, a) {
                return Err(Outcome::Skipped(why));
            }
        }
        Ok(())
    }

    /// Carries out one action after checking its target again.
    async fn act(&self, a: &Action) -> Outcome {
        let checked = match &a.kind {
            Kind::ExpireCurrent => self.still_current(a).await,
            Kind::DeleteVersion => self.still_there_unlocked(a).await,
            Kind::RemoveDeleteMarker => self.still_alone(a).await,
            Kind::Transition {
                storage_class,
                noncurrent,
            } => return self.transition(a, storage_class, *noncurrent).await,
            Kind::AbortUpload { .. } => Ok(()),
        };
        if let Err(o) = checked {
            return o;
        }
        let done = match &a.kind {
            Kind::ExpireCurrent => self.client.delete_object(self.bucket, &a.key, None).await,
            Kind::AbortUpload { upload_id } => {
                // An upload already gone counts as aborted.
                let r = self
                    .client
                    .abort_multipart_upload(self.bucket, &a.key, upload_id);
                return match r.await {
                    Ok(()) => Outcome::Done,
                    Err(e) => Outcome::Failed(e.to_string()),
                };
            }
            _ => {
                let id = Some(a.version_id.as_str());
                self.client.delete_object(self.bucket, &a.key, id).await
            }
        };
        match done {
            Ok(_) => Outcome::Done,
            Err(e) => Outcome::Failed(e.to_string()),
        }
    }

    /// A transition: a copy to the site the class names, or a copy of the current version
    /// onto its key in that class (a new version; the old one stays, noncurrent, for the
    /// rules' noncurrent actions).
    async fn transition(&self, a: &Action, class: &str, noncurrent: bool) -> Outcome {
        if let Some(o) = self.guard.copy_to_site(a, class).await {
            return o;
        }
        if noncurrent {
            return Outcome::Skipped(format!("{class} names no configured site, and a noncurrent version cannot change class in place on generic S3 (a copy would become the current version)"));
        }
        if let Err(o) = self.still_current(a).await {
            return o;
        }
        let copied = self
            .client
            .copy_in_place(self.bucket, &a.key, &a.version_id, class);
        match copied.await {
            Ok(_) => Outcome::Done,
            Err(e) => Outcome::Failed(e.to_string()),
        }
    }

    /// The version listed as current is still the current one, unchanged.
    async fn still_current(&self, a: &Action) -> Result<(), Outcome> {
        let h = self
            .client
            .head_object(self.bucket, &a.key, HeadObjectRequest::default())
            .await;
        match h {
            Ok(h)
                if h.version_id.as_deref().unwrap_or("null") == a.version_id
                    && h.etag == a.etag
                    && same_time(&h, a) =>
            {
                Ok(())
            }
            Ok(_) | Err(HeadObjectError::NotFound) | Err(HeadObjectError::DeleteMarker { .. }) => {
                Err(Outcome::Skipped("no longer the current version".into()))
            }
            Err(e) => Err(Outcome::Failed(e.to_string())),
        }
    }

    /// The version is still there with its ETag, and nothing holds it.
    async fn still_there_unlocked(&self, a: &Action) -> Result<(), Outcome> {
        let req = HeadObjectRequest {
            version_id: Some(&a.version_id),
            ..Default::default()
        };
        match self.client.head_object(self.bucket, &a.key, req).await {
            Ok(h) if h.etag != a.etag || !same_time(&h, a) => {
                Err(Outcome::Skipped("changed since it was listed".into()))
            }
            Ok(h) if h.lock.holds(SystemTime::now()) => Err(Outcome::Skipped(format!(
                "under Object Lock ({})",
                if h.lock.legal_hold {
                    "legal hold".to_string()
                } else {
                    format!(
                        "retention until {}",
                        h.lock.retain_until.unwrap_or_default()
                    )
                }
            ))),
            Ok(_) | Err(HeadObjectError::DeleteMarker { .. }) => Ok(()),
            Err(HeadObjectError::NotFound) => Err(Outcome::Skipped("already gone".into())),
            Err(e) => Err(Outcome::Failed(e.to_string())),
        }
    }

    /// The delete marker is still all that is left of its key.
    async fn still_alone(&self, a: &Action) -> Result<(), Outcome> {
        match listing::key_now(self.client, self.bucket, &a.key).await {
            Ok(e) if e.len() == 1 && e[0].delete_marker && e[0].version_id == a.version_id => {
                Ok(())
            }
            Ok(_) => Err(Outcome::Skipped(
                "no longer the only entry of its key".into(),
            )),
            Err(e) => Err(Outcome::Failed(e.to_string())),
        }
    }

    /// Incomplete multipart uploads, page by page: those due are aborted.
    async fn uploads(
        &self,
        report: &mut PassReport,
        on_action: &mut impl FnMut(&Action, &Outcome),
    ) -> Result<(), PassError> {
        for a in self.upload_actions(report).await? {
            let o = if self.dry_run {
                Outcome::WouldDo
            } else {
                self.act(&a).await
            };
            report.count(&a.kind, &o);
            on_action(&a, &o);
        }
        Ok(())
    }

    /// The aborts due among the bucket's incomplete multipart uploads (all pages).
    pub async fn upload_actions(&self, report: &mut PassReport) -> Result<Vec<Action>, PassError> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page: UploadsPage = self
                .client
                .list_multipart_uploads_page(self.bucket, None, after.as_ref())
                .await
                .map_err(|e| PassError::Uploads {
                    bucket: self.bucket.to_string(),
                    message: e.to_string(),
                })?;
            for u in page.uploads {
                report.uploads += 1;
                let Some(begun) = crate::time::parse_rfc3339(&u.initiated) else {
                    continue;
                };
                let Some(rule) = eval::abort_upload(self.rules, &self.clock, &u.key, begun) else {
                    continue;
                };
                let a = Action {
                    bucket: self.bucket.to_string(),
                    key: u.key,
                    version_id: String::new(),
                    etag: String::new(),
                    last_modified: u.initiated,
                    size: 0,
                    kind: Kind::AbortUpload {
                        upload_id: u.upload_id,
                    },
                    rule: rule.id.clone(),
                };
                out.push(a);
            }
            match page.next {
                Some(n) => after = Some(n),
                None => return Ok(out),
            }
        }
    }
}

impl<G> Pass<'_, G> {
    /// Whether an action removes something a site may still need: a version deleted, a
    /// delete marker removed (a site that has not got it would show the object forever),
    /// or, on a bucket without versions, the current object expired.
    fn needs_replicas(&self, a: &Action) -> bool {
        match a.kind {
            Kind::DeleteVersion | Kind::RemoveDeleteMarker => true,
            Kind::ExpireCurrent => !self.versioned,
            _ => false,
        }
    }

    /// Why `a` must wait for its sites, from the guard's answer for its key's `entries`.
    fn waiting(
        &self,
        reached: &Result<Vec<Option<String>>, String>,
        entries: &[Entry],
        a: &Action,
    ) -> Option<String> {
        if !self.needs_replicas(a) {
            return None;
        }
        waiting_for(reached, entries, a)
    }
}

/// The guard's answer for the entry `a` acts on.
fn waiting_for(
    reached: &Result<Vec<Option<String>>, String>,
    entries: &[Entry],
    a: &Action,
) -> Option<String> {
    let at = entries.iter().position(|e| e.version_id == a.version_id);
    match (reached, at) {
        (Err(e), _) => Some(format!("cannot tell whether it was replicated: {e}")),
        (Ok(r), Some(i)) => r.get(i).cloned().flatten(),
        (Ok(_), None) => None,
    }
}

/// Whether a HEAD's `Last-Modified` is the listed LastModified of `a` (to the second; a
/// time that does not read is no evidence either way).
fn same_time(h: &crate::s3::ops::ObjectHead, a: &Action) -> bool {
    let head = h
        .last_modified
        .as_deref()
        .and_then(crate::time::parse_http_date);
    let listed = crate::time::parse_rfc3339(&a.last_modified);
    let secs = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    };
    match (head, listed) {
        (Some(h), Some(l)) => secs(h) == secs(l),
        _ => true,
    }
}

/// What one step of a pass listed and decided.
#[derive(Debug, Clone, Default)]
pub struct Step {
    pub actions: Vec<Action>,
    /// The last key listed, when the listing goes on.
    pub next: Option<String>,
    pub keys: u64,
    /// Entries listed (a page may hold entries of keys the next step takes).
    pub versions: u64,
    /// Actions decided but not produced: their versions are not yet at every site they must
    /// reach (the next pass decides them again).
    pub waiting: Vec<Action>,
}
