//! Incremental ingestion, for sources that publish no event notifications: a pass lists a
//! bucket page by page (ListObjectVersions, or ListObjectsV2 where the server lacks it),
//! compares each key with what the last pass saw (`ingest_state`), and enqueues only the
//! versions new since then: no HEAD or GET per key, so a pass costs its listing pages (and
//! a GetObjectTagging per changed version when rules filter on tags). After each page its
//! entries are on the replication topic, its keys in the new snapshot and the page in the
//! cursor: a pass stopped or crashed resumes after its last finished page, and redoes at
//! most that page's entries.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use super::ingest_state::{BucketState, Cursor, KeyState, SnapshotReader, SnapshotWriter};
use super::scan::{flush, group, to_version, KeyVersions, Pending};
use super::worker::{entry_for, send_unsent, PopulateConfig, PopulateError, RulesCache};
use crate::queue::codec::ReplicationEntry;
use crate::queue::kafka::{self, Producer};
use crate::replication::Version;
use crate::s3::ops::list_object_versions::{ListObjectVersionsError, ListObjectVersionsRequest};
use crate::s3::ops::list_objects_v2::ListObjectsV2Request;
use crate::s3::Client;

/// Keys per listing page.
const PAGE: u32 = 1000;

/// Where a pass stands (after each page, and at its end).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Progress {
    pub pass: u64,
    pub keys: u64,
    /// Listing requests sent (the pass's whole cost in requests to the source, tags aside).
    pub pages: u64,
    pub enqueued: u64,
    /// Listing requests sent, and entries enqueued, by this call (a resumed pass's earlier
    /// part aside).
    pub requests: u64,
    pub entries: u64,
    /// Unix seconds.
    pub started: u64,
    /// The key the listing has reached.
    pub at: Option<String>,
    /// Resumed from a cursor left by a pass that stopped.
    pub resumed: bool,
    pub finished: bool,
    /// How far the listing is through the bucket, 0 to 1: the keys listed over the last
    /// pass's count; in a first pass, where the key reached stands in the key space seen so
    /// far (exact when keys are spread evenly, as hashes or UUIDs; far too high for sequential
    /// names, whose leading digits have not been seen changing yet).
    pub fraction: Option<f64>,
}

/// Positions of a key read to place it in the key space.
const PLACES: usize = 24;

/// The smallest and largest byte seen at each of a key's first places, to place a key in
/// the key space seen so far (a mixed-radix number whose digits are the bytes seen).
#[derive(Debug, Clone)]
pub struct KeySpace {
    lo: [u8; PLACES],
    hi: [u8; PLACES],
}

impl Default for KeySpace {
    fn default() -> Self {
        Self {
            lo: [u8::MAX; PLACES],
            hi: [0; PLACES],
        }
    }
}

impl KeySpace {
    pub fn see(&mut self, key: &str) {
        for (i, c) in key.bytes().take(PLACES).enumerate() {
            self.lo[i] = self.lo[i].min(c);
            self.hi[i] = self.hi[i].max(c);
        }
    }

    /// Where `key` stands, 0 to 1, among the keys that the bytes seen so far can make.
    pub fn place(&self, key: &str) -> f64 {
        let (mut at, mut width) = (0.0, 1.0);
        for (i, c) in key.bytes().take(PLACES).enumerate() {
            if self.hi[i] < self.lo[i] {
                break;
            }
            let radix = f64::from(self.hi[i] - self.lo[i]) + 1.0;
            width /= radix;
            at += f64::from(c.clamp(self.lo[i], self.hi[i]) - self.lo[i]) * width;
        }
        at.clamp(0.0, 1.0)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The listing, a page at a time: each page's keys whose versions are all listed.
struct Lister<'a> {
    client: &'a Client,
    bucket: &'a str,
    /// The server has no ListObjectVersions: current objects only.
    objects_only: bool,
    key_marker: Option<String>,
    vid_marker: Option<String>,
    token: Option<String>,
    /// The last page's last key may go on in the next page.
    pending: Pending,
    done: bool,
}

impl<'a> Lister<'a> {
    fn new(client: &'a Client, bucket: &'a str, after: Option<String>) -> Self {
        Self {
            client,
            bucket,
            objects_only: false,
            key_marker: after,
            vid_marker: None,
            token: None,
            pending: None,
            done: false,
        }
    }

    /// The next page's finished keys; `None` once the listing is over.
    async fn page(&mut self) -> Result<Option<Vec<KeyVersions>>, ListObjectVersionsError> {
        if self.done {
            return Ok(None);
        }
        if !self.objects_only {
            match self.versions_page().await {
                Err(e) if e.code() == "NotImplemented" => self.objects_only = true,
                other => return other.map(Some),
            }
        }
        self.objects_page().await.map(Some)
    }

    async fn versions_page(&mut self) -> Result<Vec<KeyVersions>, ListObjectVersionsError> {
        let req = ListObjectVersionsRequest {
            prefix: None,
            key_marker: self.key_marker.as_deref(),
            version_id_marker: self.vid_marker.as_deref(),
            max_keys: Some(PAGE),
        };
        let page = self.client.list_object_versions(self.bucket, req).await?;
        let mut out = Vec::new();
        group(&mut self.pending, page.versions, &mut out);
        if page.is_truncated && page.next_key_marker.is_some() {
            (self.key_marker, self.vid_marker) =
                (page.next_key_marker, page.next_version_id_marker);
        } else {
            self.done = true;
            out.extend(flush(&mut self.pending));
        }
        Ok(out)
    }

    async fn objects_page(&mut self) -> Result<Vec<KeyVersions>, ListObjectVersionsError> {
        let req = ListObjectsV2Request {
            prefix: None,
            continuation_token: self.token.as_deref(),
            start_after: self.key_marker.as_deref().filter(|_| self.token.is_none()),
            max_keys: Some(PAGE),
        };
        let page = self.client.list_objects_v2(self.bucket, req).await?;
        match page.next_continuation_token {
            Some(t) if page.is_truncated => self.token = Some(t),
            _ => self.done = true,
        }
        let keys = page.objects.into_iter().map(|o| KeyVersions {
            key: o.key.clone(),
            versions: vec![to_version(o)],
        });
        Ok(keys.collect())
    }
}

/// A key's state now: its latest version (the last, its versions being oldest first).
fn state_now(kv: &KeyVersions) -> Option<KeyState> {
    let v = kv.versions.last()?;
    Some(KeyState {
        key: kv.key.clone(),
        version_id: v.version_id.clone(),
        etag: v.etag.clone(),
        last_modified: v.order.last_modified.unwrap_or(0),
    })
}

/// The versions of a key that the last pass had not seen (oldest first): all of them for a
/// new key; those after the version it saw last; none when its latest is unchanged. When
/// the version seen last is gone, those written since its time.
pub fn new_versions<'k>(kv: &'k KeyVersions, before: Option<&KeyState>) -> &'k [Version] {
    let Some(b) = before else {
        return &kv.versions;
    };
    let Some(now) = state_now(kv) else {
        return &[];
    };
    let same = now.version_id == b.version_id
        && (now.version_id != "null"
            || (now.etag == b.etag && now.last_modified == b.last_modified));
    if same {
        return &[];
    }
    if let Some(i) = kv
        .versions
        .iter()
        .position(|v| v.version_id == b.version_id)
    {
        // The last one, changed in place (`null`, overwritten): it again.
        let from = if i + 1 == kv.versions.len() { i } else { i + 1 };
        return &kv.versions[from..];
    }
    let first_new =
        (kv.versions.iter()).position(|v| v.order.last_modified.unwrap_or(0) >= b.last_modified);
    first_new.map_or(&[], |i| &kv.versions[i..])
}

/// One pass over `bucket` (or the rest of the pass a cursor says was stopped), calling
/// `progress` after each page. Returns at the pass's end, or when `stop` says so between
/// two pages, with the cursor saved (`finished` false).
pub async fn pass(
    cfg: &PopulateConfig,
    bucket: &str,
    root: &Path,
    stop: &dyn Fn() -> bool,
    mut progress: impl FnMut(&Progress),
) -> Result<Progress, PopulateError> {
    let failed = |m: String| PopulateError::Scan(format!("ingestion of {bucket}: {m}"));
    let st = BucketState::open(root, bucket).map_err(failed)?;
    let (mut cursor, resumed) = cursor_of(&st).map_err(failed)?;
    let mut old = st.snapshot().map_err(failed)?;
    let mut next = st.next(cursor.written).map_err(failed)?;
    let source = Client::new(cfg.source.clone(), None);
    let rules = rules_of(cfg, &source, bucket).await?;
    let producer = kafka::producer(&cfg.brokers)?;
    let mut lister = Lister::new(&source, bucket, cursor.after.clone());
    let mut p = Progress {
        pass: cursor.pass,
        started: cursor.started,
        resumed,
        ..Default::default()
    };
    let page_of = PageJob {
        cfg,
        bucket,
        source: &source,
        rules: &rules,
        producer: &producer,
    };
    let last_count = st.done().map_err(failed)?.map(|d| d.keys);
    let mut reach = Reach::new(last_count);
    loop {
        if stop() {
            return Ok(p);
        }
        let keys = lister
            .page()
            .await
            .map_err(|e| failed(format!("listing: {e}")))?;
        (cursor.pages, p.requests) = (cursor.pages + 1, p.requests + 1);
        let Some(keys) = keys else { break };
        let n = page_of.run(&keys, &mut old, &mut next).await?;
        cursor.keys += keys.len() as u64;
        (cursor.enqueued, p.entries) = (cursor.enqueued + n, p.entries + n);
        if let Some(last) = keys.last() {
            cursor.after = Some(last.key.clone());
        }
        cursor.written = next.flush().map_err(failed)?;
        st.save_cursor(&cursor).map_err(failed)?;
        let fraction = reach.after(&keys, &cursor);
        p = Progress {
            keys: cursor.keys,
            pages: cursor.pages,
            enqueued: cursor.enqueued,
            at: cursor.after.clone(),
            fraction,
            ..p
        };
        progress(&p);
        if lister.done {
            break;
        }
    }
    st.finish(next, &cursor.done(unix_now())).map_err(failed)?;
    (p.finished, p.fraction) = (true, Some(1.0));
    progress(&p);
    Ok(p)
}

/// The pass to resume (true), or a new one after the last done.
fn cursor_of(st: &BucketState) -> Result<(Cursor, bool), String> {
    if let Some(c) = st.cursor_to_resume()? {
        return Ok((c, true));
    }
    let c = Cursor {
        pass: st.done()?.map_or(1, |d| d.pass + 1),
        started: unix_now(),
        ..Default::default()
    };
    Ok((c, false))
}

/// The bucket's rules, which it must have: listed without them, its keys would count as
/// seen, and rules added later would miss them.
async fn rules_of(
    cfg: &PopulateConfig,
    source: &Client,
    bucket: &str,
) -> Result<RulesCache, PopulateError> {
    let rules = RulesCache::new(cfg)?;
    if rules.get(source, bucket).await?.is_none() {
        let message = "no replication configuration (set source.rules_file, source.default_rules_file or the bucket's ReplicationConfiguration): not listed".into();
        return Err(PopulateError::Rules {
            bucket: bucket.into(),
            message,
        });
    }
    Ok(rules)
}

/// How far a pass is: keys listed over the last pass's count, else (a first pass) where
/// the listing stands in the key space seen so far.
struct Reach {
    last_count: Option<u64>,
    space: KeySpace,
}

impl Reach {
    fn new(last_count: Option<u64>) -> Self {
        let last_count = last_count.filter(|n| *n > 0);
        Self {
            last_count,
            space: KeySpace::default(),
        }
    }

    /// After a page of `keys`, with the cursor moved past them.
    fn after(&mut self, keys: &[KeyVersions], cursor: &Cursor) -> Option<f64> {
        keys.iter().for_each(|k| self.space.see(&k.key));
        match (self.last_count, &cursor.after) {
            (Some(n), _) => Some((cursor.keys as f64 / n as f64).min(1.0)),
            (None, Some(k)) => Some(self.space.place(k)),
            (None, None) => None,
        }
    }
}

/// What a page needs: the bucket's rules and the replication topic.
struct PageJob<'a> {
    cfg: &'a PopulateConfig,
    bucket: &'a str,
    source: &'a Client,
    rules: &'a RulesCache,
    producer: &'a Producer,
}

impl PageJob<'_> {
    /// Enqueues the new versions of a page's keys and pushes their states to the new
    /// snapshot; the number of entries enqueued.
    async fn run(
        &self,
        keys: &[KeyVersions],
        old: &mut SnapshotReader,
        next: &mut SnapshotWriter,
    ) -> Result<u64, PopulateError> {
        let failed = |m: String| PopulateError::Scan(format!("ingestion of {}: {m}", self.bucket));
        let mut entries: Vec<ReplicationEntry> = Vec::new();
        let rules = self.rules.get(self.source, self.bucket).await?;
        for kv in keys {
            let before = old.state_of(&kv.key).map_err(failed)?;
            if let Some(r) = &rules {
                for v in new_versions(kv, before.as_ref()) {
                    let (cfg, src, b) = (self.cfg, self.source, self.bucket);
                    entries.extend(entry_for(cfg, src, r, b, v, None, Vec::new()).await?);
                }
            }
            if let Some(s) = state_now(kv) {
                next.push(&s).map_err(failed)?;
            }
        }
        self.send(&entries).await?;
        Ok(entries.len() as u64)
    }

    /// Sends the page's entries at once (each admitted first with the embedded broker).
    async fn send(&self, entries: &[ReplicationEntry]) -> Result<(), PopulateError> {
        if let Some(b) = &self.cfg.backpressure {
            for _ in entries {
                if !b.admit(&self.cfg.shutdown).await {
                    return Err(PopulateError::Scan(
                        "stopped while waiting for the queue".into(),
                    ));
                }
            }
        }
        let topic = &self.cfg.topics.replication;
        let mut sent = vec![false; entries.len()];
        let failed = send_unsent(entries, &mut sent, |e| {
            let (k, v) = (e.kafka_key(), e.encode());
            async move {
                kafka::send(self.producer, topic, &k, Some(&v))
                    .await
                    .map(|_| ())
            }
        })
        .await;
        match failed {
            None => Ok(()),
            Some((n, e)) => {
                if let Some(b) = &self.cfg.backpressure {
                    (0..n).for_each(|_| b.cancel());
                }
                Err(e.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::SourceOrder;

    fn kv(key: &str, vs: &[(&str, i64)]) -> KeyVersions {
        KeyVersions {
            key: key.into(),
            versions: vs
                .iter()
                .map(|(id, t)| Version {
                    key: key.into(),
                    version_id: id.to_string(),
                    delete_marker: false,
                    size: 1,
                    etag: format!("e-{id}"),
                    order: SourceOrder {
                        last_modified: Some(*t),
                        ..Default::default()
                    },
                })
                .collect(),
        }
    }

    fn seen(key: &str, id: &str, etag: &str, t: i64) -> KeyState {
        KeyState {
            key: key.into(),
            version_id: id.into(),
            etag: etag.into(),
            last_modified: t,
        }
    }

    fn ids(vs: &[Version]) -> Vec<&str> {
        vs.iter().map(|v| v.version_id.as_str()).collect()
    }

    #[test]
    fn only_versions_since_the_last_pass() {
        let k = kv("a", &[("v1", 10), ("v2", 20), ("v3", 30)]);
        assert_eq!(ids(new_versions(&k, None)), ["v1", "v2", "v3"], "a new key");
        assert!(
            new_versions(&k, Some(&seen("a", "v3", "e-v3", 30))).is_empty(),
            "unchanged"
        );
        assert_eq!(
            ids(new_versions(&k, Some(&seen("a", "v1", "e-v1", 10)))),
            ["v2", "v3"]
        );
        // The version seen last was deleted since: what was written from its time on.
        assert_eq!(
            ids(new_versions(&k, Some(&seen("a", "v0", "x", 20)))),
            ["v2", "v3"]
        );
    }

    #[test]
    fn keys_placed_in_the_key_space_seen() {
        let mut s = KeySpace::default();
        for k in ["0a", "fz", "3m"] {
            s.see(k);
        }
        assert_eq!(s.place("0a"), 0.0);
        let (a, b) = (s.place("3m"), s.place("8m"));
        assert!(0.0 < a && a < b && b < s.place("fz"), "{a} {b}");
        assert!(
            (b - 8.0 / 55.0).abs() < 0.01,
            "bytes '0' to 'f' are 55 places: {b}"
        );
        assert!(s.place("fz") > 0.99);
    }

    #[test]
    fn unversioned_keys_change_by_etag_or_time() {
        let k = kv("a", &[("null", 10)]);
        assert!(new_versions(&k, Some(&seen("a", "null", "e-null", 10))).is_empty());
        assert_eq!(
            ids(new_versions(&k, Some(&seen("a", "null", "old", 10)))),
            ["null"]
        );
        assert_eq!(
            ids(new_versions(&k, Some(&seen("a", "null", "e-null", 5)))),
            ["null"]
        );
    }
}
