//! What a bucket's lifecycle rules decide for one key's versions, or for one incomplete
//! multipart upload, at a given time: pure functions, no I/O.
//!
//! Days are counted as S3 counts them: an action `Days = n` on a version written at `t`
//! is due from the first midnight UTC at or after `t + n days`. A noncurrent version's days
//! count from when it became noncurrent (when the version above it was written). With a
//! `time_progression_factor` F > 1 (for tests and demos) a day lasts 86400/F seconds and
//! there is no rounding to midnight.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::rules::{Filter, LifecycleRules, Noncurrent, Rule, When};

const DAY: u64 = 86_400;

/// The time rules are evaluated at, and how long a day lasts.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub now: SystemTime,
    /// 1 in production; F makes a day last 86400/F seconds.
    pub factor: u32,
}

impl Clock {
    pub fn new(now: SystemTime, factor: u32) -> Self {
        Self {
            now,
            factor: factor.max(1),
        }
    }

    /// When `days` counted from `since` are over.
    pub fn after(&self, since: SystemTime, days: u32) -> SystemTime {
        if self.factor > 1 {
            let day = Duration::from_secs_f64(DAY as f64 / f64::from(self.factor));
            return since + day * days;
        }
        let t = since + Duration::from_secs(DAY * u64::from(days));
        let secs = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let midnight = (secs / DAY as f64).ceil() as u64 * DAY;
        SystemTime::UNIX_EPOCH + Duration::from_secs(midnight)
    }

    /// When `when` is reached for a version written (or made noncurrent) at `since`.
    fn due_at(&self, since: SystemTime, when: When) -> SystemTime {
        match when {
            When::Days(d) => self.after(since, d),
            When::Date(t) => t,
        }
    }

    fn is_due(&self, since: SystemTime, when: When) -> bool {
        self.now >= self.due_at(since, when)
    }
}

/// One listed entry of a key (version or delete marker), as the rules see it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Entry {
    pub version_id: String,
    pub delete_marker: bool,
    /// As listed (RFC 3339), and read.
    pub last_modified: String,
    pub modified: Option<SystemTime>,
    pub size: u64,
    pub etag: String,
    pub storage_class: String,
    /// The version's tags, when a rule filters on tags (read for it).
    pub tags: Vec<(String, String)>,
}

/// What to do to one version, key or upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Kind {
    /// The current version expires: a delete marker goes on top (versioned bucket).
    ExpireCurrent,
    /// A noncurrent version (or delete marker) is deleted by its version id.
    DeleteVersion,
    /// A delete marker with nothing left under it is removed.
    RemoveDeleteMarker,
    /// The version moves to another storage class, or (when the class names a configured
    /// site) is copied to that site.
    Transition {
        storage_class: String,
        /// Decided for a noncurrent version.
        #[serde(default)]
        noncurrent: bool,
    },
    /// An incomplete multipart upload is aborted.
    AbortUpload { upload_id: String },
}

/// One action, with what identifies its target when it was decided (re-checked before it
/// is carried out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    pub bucket: String,
    pub key: String,
    /// The version acted on; for `ExpireCurrent`, the version that must still be current.
    pub version_id: String,
    pub etag: String,
    pub last_modified: String,
    /// The version's size (0 for markers and uploads).
    #[serde(default)]
    pub size: u64,
    #[serde(flatten)]
    pub kind: Kind,
    /// The rule that decided it.
    pub rule: String,
}

/// Whether `filter` selects this entry of `key`. Delete markers have no tags nor size:
/// only filters without tags and sizes select them.
fn matches(filter: &Filter, key: &str, e: &Entry) -> bool {
    if !key.starts_with(&filter.prefix) {
        return false;
    }
    let sized = filter.size_greater_than.is_some() || filter.size_less_than.is_some();
    if e.delete_marker {
        return filter.tags.is_empty() && !sized;
    }
    filter.tags.iter().all(|t| e.tags.contains(t))
        && filter.size_greater_than.is_none_or(|gt| e.size > gt)
        && filter.size_less_than.is_none_or(|lt| e.size < lt)
}

/// The actions the rules decide for one key's entries, given newest first (the current
/// one first). For the current entry, at most one: expiration wins over transition; a
/// noncurrent entry due for both gets its transition first, then its deletion.
pub fn decide_key(
    rules: &LifecycleRules,
    clock: &Clock,
    bucket: &str,
    key: &str,
    entries: &[Entry],
) -> Vec<Action> {
    let applicable: Vec<&Rule> = rules
        .rules
        .iter()
        .filter(|r| r.enabled && key.starts_with(&r.filter.prefix))
        .collect();
    let mut out = Vec::new();
    if applicable.is_empty() {
        return out;
    }
    // Oldest first: a key's versions reach a site (a transition) in their order.
    for (i, e) in entries.iter().enumerate().rev() {
        let Some(modified) = e.modified else { continue };
        let mine: Vec<&Rule> = applicable
            .iter()
            .copied()
            .filter(|r| matches(&r.filter, key, e))
            .collect();
        let decided = if i == 0 {
            current(&mine, clock, e, modified, entries.len() == 1)
                .into_iter()
                .collect()
        } else {
            let since = entries[i - 1].modified.unwrap_or(modified);
            noncurrent(&mine, clock, e, since, i - 1)
        };
        for (kind, rule) in decided {
            out.push(Action {
                bucket: bucket.to_string(),
                key: key.to_string(),
                version_id: e.version_id.clone(),
                etag: e.etag.clone(),
                last_modified: e.last_modified.clone(),
                size: e.size,
                kind,
                rule: rule.to_string(),
            });
        }
    }
    out
}

/// The current entry: expire it, remove it (a lone delete marker), or transition it.
fn current<'r>(
    rules: &[&'r Rule],
    clock: &Clock,
    e: &Entry,
    modified: SystemTime,
    alone: bool,
) -> Option<(Kind, &'r str)> {
    if e.delete_marker {
        return rules
            .iter()
            .find(|r| alone && r.expired_object_delete_marker)
            .map(|r| (Kind::RemoveDeleteMarker, r.id.as_str()));
    }
    if let Some(r) = rules
        .iter()
        .find(|r| r.expiration.is_some_and(|w| clock.is_due(modified, w)))
    {
        return Some((Kind::ExpireCurrent, r.id.as_str()));
    }
    let due = rules.iter().flat_map(|r| {
        r.transitions
            .iter()
            .filter(|(w, _)| clock.is_due(modified, *w))
            .map(move |(w, class)| (clock.due_at(modified, *w), class, r.id.as_str()))
    });
    transition(due, e, false)
}

/// The latest-due transition among those due, unless the entry is in that class already.
fn transition<'r>(
    due: impl Iterator<Item = (SystemTime, &'r String, &'r str)>,
    e: &Entry,
    noncurrent: bool,
) -> Option<(Kind, &'r str)> {
    let (_, class, rule) = due.max_by_key(|(at, _, _)| *at)?;
    (*class != e.storage_class).then(|| {
        (
            Kind::Transition {
                storage_class: class.clone(),
                noncurrent,
            },
            rule,
        )
    })
}

/// The storage classes (or sites) the enabled rules selecting entry `e` of `key` have moved
/// it to by now: transitions that came due while it was current (it became noncurrent at
/// `since`, or is current), and noncurrent transitions due now. A deletion of the version
/// waits until the sites among them hold it.
pub fn transitions_due<'r>(
    rules: &'r LifecycleRules,
    clock: &Clock,
    key: &str,
    e: &Entry,
    since: Option<SystemTime>,
) -> Vec<&'r str> {
    let Some(modified) = e.modified else {
        return Vec::new();
    };
    let current_end = since.unwrap_or(clock.now);
    let mut out = Vec::new();
    for r in rules
        .rules
        .iter()
        .filter(|r| r.enabled && matches(&r.filter, key, e))
    {
        for (w, class) in &r.transitions {
            if clock.due_at(modified, *w) <= current_end {
                out.push(class.as_str());
            }
        }
        if let Some(since) = since {
            for (n, class) in &r.noncurrent_transitions {
                if clock.is_due(since, When::Days(n.days)) {
                    out.push(class.as_str());
                }
            }
        }
    }
    out
}

/// A noncurrent entry, `rank` noncurrent entries newer than it, noncurrent since `since`:
/// its due transition, then its expiration. Both when both are due: a transition to a site
/// must be done before the version may be deleted (the deletion waits for it).
fn noncurrent<'r>(
    rules: &[&'r Rule],
    clock: &Clock,
    e: &Entry,
    since: SystemTime,
    rank: usize,
) -> Vec<(Kind, &'r str)> {
    let applies = |n: &Noncurrent| {
        rank >= n.newer_noncurrent_versions as usize && clock.is_due(since, When::Days(n.days))
    };
    let mut out = Vec::new();
    if !e.delete_marker {
        let due = rules.iter().flat_map(|r| {
            r.noncurrent_transitions
                .iter()
                .filter(|(n, _)| applies(n))
                .map(move |(n, class)| (clock.after(since, n.days), class, r.id.as_str()))
        });
        out.extend(transition(due, e, true));
    }
    if let Some(r) = rules
        .iter()
        .find(|r| r.noncurrent_expiration.as_ref().is_some_and(applies))
    {
        out.push((Kind::DeleteVersion, r.id.as_str()));
    }
    out
}

/// The rule under which an upload of `key` begun at `initiated` is to be aborted, if any.
pub fn abort_upload<'r>(
    rules: &'r LifecycleRules,
    clock: &Clock,
    key: &str,
    initiated: SystemTime,
) -> Option<&'r Rule> {
    rules.rules.iter().find(|r| {
        r.enabled
            && key.starts_with(&r.filter.prefix)
            && r.abort_incomplete_days
                .is_some_and(|d| clock.is_due(initiated, When::Days(d)))
    })
}

#[cfg(test)]
#[path = "eval_tests.rs"]
mod tests;
