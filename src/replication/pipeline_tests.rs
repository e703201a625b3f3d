//! The pipeline against in-memory stores, with failures injected: order, idempotence under
//! replays and lost responses, retries, permanent errors, blocked keys, delete markers and
//! multipart layouts, without a server or a process.

use std::cell::RefCell;
use std::time::Duration;

use super::*;
use crate::metrics::Stats;
use crate::retry::RetryPolicy;
use crate::s3::mem::{Fault, Flaky, MemStore};
use crate::shard::Shutdown;

pub(super) const SRC: &str = "src";
pub(super) const DST: &str = "dst";

pub(super) fn on_executor<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .spawn(f)
        .unwrap()
        .join()
        .unwrap();
}

/// A source and a destination store (both versioned), the destination with `faults`.
fn route(faults: Vec<Fault>) -> Route<Flaky<MemStore>> {
    let (source, dest) = (MemStore::new(), MemStore::new());
    source.create_bucket(SRC, true);
    dest.create_bucket(DST, true);
    let dest = faults.into_iter().fold(Flaky::new(dest), Flaky::fail);
    Route {
        source: Flaky::new(source),
        source_bucket: SRC.into(),
        dest,
        dest_bucket: DST.into(),
        dest_versioned: true,
        policy: Default::default(),
    }
}

pub(super) fn data_path() -> DataPath {
    let opts = Options {
        retry: RetryPolicy {
            base: Duration::from_millis(1),
            max: Duration::from_millis(2),
            ..RetryPolicy::default()
        },
        ..Options::default()
    };
    DataPath::new(opts, 4, Stats::new(), Shutdown::new())
}

/// The source's versions of `key`, oldest first, as the scan names them.
fn listed(r: &Route<Flaky<MemStore>>, key: &str) -> Vec<Version> {
    let stored = r.source.inner.versions(SRC, key);
    let of = |s: crate::s3::mem::Stored| Version {
        key: key.to_string(),
        version_id: s.version_id,
        delete_marker: s.delete_marker,
        size: s.data.len() as u64,
        order: crate::replication::SourceOrder::new(Some(&s.last_modified), None),
        etag: s.etag,
    };
    stored.into_iter().map(of).collect()
}

fn latency() -> RefCell<hdrhistogram::Histogram<u64>> {
    RefCell::new(crate::metrics::latency_histogram())
}

/// What the destination holds of `key`: (bytes or "marker", source version id), oldest first.
pub(super) fn held(r: &Route<Flaky<MemStore>>, key: &str) -> Vec<(String, Option<String>)> {
    let of = |s: crate::s3::mem::Stored| {
        let source = s
            .metadata
            .user
            .iter()
            .find(|(k, _)| k == META_SOURCE_VERSION)
            .map(|(_, v)| v.clone());
        let what = if s.delete_marker {
            "marker".to_string()
        } else {
            String::from_utf8_lossy(&s.data).into_owned()
        };
        (what, source)
    };
    r.dest
        .inner
        .versions(DST, key)
        .into_iter()
        .map(of)
        .collect()
}

#[test]
fn a_key_is_copied_in_order_and_a_second_pass_copies_nothing() {
    on_executor(|| async {
        let r = route(vec![]);
        let ids: Vec<String> = ["one", "two", "three"]
            .iter()
            .map(|d| r.source.inner.put(SRC, "k", d.as_bytes()))
            .collect();
        let dm = r.source.inner.delete_marker(SRC, "k");
        let dp = data_path();
        let versions = listed(&r, "k");
        replicate_key(&r, &dp, ("k", &versions), false, &latency()).await;
        let want: Vec<(String, Option<String>)> = vec![
            ("one".into(), Some(ids[0].clone())),
            ("two".into(), Some(ids[1].clone())),
            ("three".into(), Some(ids[2].clone())),
            ("marker".into(), None),
        ];
        assert_eq!(held(&r, "k"), want);
        assert_eq!(Stats::get(&dp.stats.versions_copied), 3);
        assert_eq!(Stats::get(&dp.stats.delete_markers), 1);
        let marker = Version {
            key: "k".into(),
            version_id: dm,
            delete_marker: true,
            size: 0,
            etag: String::new(),
            order: Default::default(),
        };
        assert_eq!(r.decide(&marker).await.unwrap(), Verdict::Applied);
        assert_eq!(r.applied_prefix("k", &versions).await.unwrap(), 4);

        let puts = r.dest.inner.calls("put_object");
        replicate_key(&r, &dp, ("k", &versions), false, &latency()).await;
        assert_eq!(
            r.dest.inner.calls("put_object"),
            puts,
            "nothing copied again"
        );
        assert_eq!(held(&r, "k"), want);
    });
}

#[test]
fn a_retry_after_a_lost_response_writes_no_second_version() {
    on_executor(|| async {
        let lost = Fault::new("put_object", 503, "ServiceUnavailable").response_lost();
        let r = route(vec![lost]);
        let id = r.source.inner.put(SRC, "k", b"payload");
        let dp = data_path();
        let v = listed(&r, "k").remove(0);
        let outcome = replicate(&r, &dp, &v).await.unwrap();
        assert_eq!(outcome, Outcome::Skipped, "the first attempt had landed");
        assert_eq!(held(&r, "k"), vec![("payload".into(), Some(id))]);
        assert_eq!(Stats::get(&dp.stats.retries), 1);
    });
}

#[test]
fn retryable_errors_are_retried_within_the_budget() {
    on_executor(|| async {
        let slow = Fault::new("put_object", 503, "SlowDown").times(2);
        let r = route(vec![slow]);
        r.source.inner.put(SRC, "k", b"payload");
        let dp = data_path();
        let v = listed(&r, "k").remove(0);
        let outcome = replicate(&r, &dp, &v).await.unwrap();
        assert_eq!(outcome, Outcome::Copied { bytes: 7 });
        assert_eq!(Stats::get(&dp.stats.retries), 2);

        let down = Fault::new("put_object", 503, "SlowDown").times(100);
        let r = route(vec![down]);
        r.source.inner.put(SRC, "k", b"payload");
        let v = listed(&r, "k").remove(0);
        let gave_up = replicate(&r, &dp, &v).await.unwrap_err();
        assert_eq!(gave_up.attempts, RetryPolicy::default().max_attempts);
        assert_eq!(gave_up.error.code(), "SlowDown");
        assert_eq!(gave_up.error.stage, Stage::PutDestination);
        assert!(held(&r, "k").is_empty());
    });
}

#[test]
fn a_permanent_error_fails_at_once_and_blocks_the_later_versions_of_its_key() {
    on_executor(|| async {
        let denied = Fault::new("put_object", 403, "AccessDenied").after_calls(1);
        let r = route(vec![denied]);
        for d in ["one", "two", "three"] {
            r.source.inner.put(SRC, "k", d.as_bytes());
        }
        let dp = data_path();
        replicate_key(&r, &dp, ("k", &listed(&r, "k")), false, &latency()).await;
        assert_eq!(held(&r, "k").len(), 1, "only the first version is copied");
        let failures = dp.stats.failures.lock().unwrap().clone();
        let codes: Vec<(&str, u32)> = failures
            .iter()
            .map(|f| (f.error.code.as_str(), f.attempts))
            .collect();
        assert_eq!(
            codes,
            vec![("AccessDenied", 1), ("BlockedByEarlierVersion", 0)]
        );
        assert!(!failures[0].error.retryable && failures[1].error.retryable);
        assert_eq!(Stats::get(&dp.stats.retries), 0, "a 403 is not retried");
    });
}

#[test]
fn a_multipart_source_keeps_its_layout_and_a_failed_upload_is_aborted() {
    on_executor(|| async {
        let r = route(vec![]);
        let (a, b) = (vec![b'a'; 300_000], vec![b'b'; 100_000]);
        r.source.inner.put_parts(SRC, "big", &[&a, &b]);
        let dp = data_path();
        let v = listed(&r, "big").remove(0);
        let outcome = replicate(&r, &dp, &v).await.unwrap();
        assert_eq!(outcome, Outcome::Copied { bytes: 400_000 });
        let copy = r.dest.inner.versions(DST, "big").remove(0);
        assert_eq!(copy.data.len(), 400_000);
        assert_eq!(&copy.data[..300_000], &a[..]);
        assert_eq!(copy.part_sizes, vec![300_000, 100_000]);
        assert_eq!(copy.etag, v.etag, "same layout, same ETag");

        // The abort itself meets a 503 first: it is tried again, not left open.
        let denied = Fault::new("upload_part", 403, "AccessDenied");
        let busy = Fault::new("abort_multipart_upload", 503, "SlowDown");
        let r = route(vec![denied, busy]);
        r.source.inner.put_parts(SRC, "big", &[&a, &b]);
        let v = listed(&r, "big").remove(0);
        let gave_up = replicate(&r, &dp, &v).await.unwrap_err();
        assert_eq!(gave_up.error.code(), "AccessDenied");
        assert_eq!(r.dest.inner.open_uploads(DST), 0, "the upload was aborted");
        assert_eq!(r.dest.inner.calls("abort_multipart_upload"), 1);
        assert!(held(&r, "big").is_empty());
    });
}

#[test]
fn metadata_and_tags_travel_with_the_source_version_id() {
    on_executor(|| async {
        let r = route(vec![]);
        let meta = crate::s3::ops::ObjectMetadata {
            content_type: Some("text/plain".into()),
            user: vec![("colour".into(), "blue".into())],
            ..Default::default()
        };
        let tags = vec![("team".into(), "a".into())];
        let id = r.source.inner.put_with(SRC, "k", b"x", meta, tags.clone());
        let dp = data_path();
        let v = listed(&r, "k").remove(0);
        replicate(&r, &dp, &v).await.unwrap();
        let copy = r.dest.inner.versions(DST, "k").remove(0);
        assert_eq!(copy.metadata.content_type.as_deref(), Some("text/plain"));
        assert_eq!(copy.tags, tags);
        let user: Vec<(&str, &str)> = copy
            .metadata
            .user
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert!(user.contains(&("colour", "blue")));
        assert!(user.contains(&(META_SOURCE_VERSION, id.as_str())));
        assert_eq!(r.decide(&v).await.unwrap(), Verdict::Applied);
        assert!(user.contains(&(order::META_SOURCE_LAST_MODIFIED, "1790000001")));
    });
}

/// A key the destination's listing did not hold: its first version is written with no HEAD
/// (two requests: GET, PUT), the later ones as usual.
#[test]
fn a_key_absent_from_the_listing_is_written_without_a_head() {
    on_executor(|| async {
        let r = route(vec![]);
        let ids: Vec<String> = ["one", "two"]
            .iter()
            .map(|d| r.source.inner.put(SRC, "k", d.as_bytes()))
            .collect();
        let dp = data_path();
        let versions = listed(&r, "k");
        replicate_key(&r, &dp, ("k", &versions), true, &latency()).await;
        let want: Vec<(String, Option<String>)> = vec![
            ("one".into(), Some(ids[0].clone())),
            ("two".into(), Some(ids[1].clone())),
        ];
        assert_eq!(held(&r, "k"), want);
        assert_eq!(r.dest.inner.calls("head_object"), 0, "no HEAD at all");
        assert_eq!(r.dest.inner.calls("put_object"), 2);
        assert_eq!(Stats::get(&dp.stats.versions_copied), 2);
    });
}

/// Listed as absent, but written meanwhile (a replay of the same versions, or a later
/// version landing first): the conditional PUT is refused, the usual HEAD decides, and
/// nothing is doubled or written over the later version.
#[test]
fn a_key_written_after_the_listing_is_neither_doubled_nor_overwritten() {
    on_executor(|| async {
        let r = route(vec![]);
        for d in ["one", "two"] {
            r.source.inner.put(SRC, "k", d.as_bytes());
        }
        let dp = data_path();
        let versions = listed(&r, "k");
        replicate_key(&r, &dp, ("k", &versions), false, &latency()).await;
        let before = held(&r, "k");
        // The same versions again, as a rerun whose listing was taken before the first run.
        replicate_key(&r, &dp, ("k", &versions), true, &latency()).await;
        assert_eq!(held(&r, "k"), before, "nothing doubled");
        assert_eq!(Stats::get(&dp.stats.versions_copied), 2);

        // Only the first version, while the destination already holds the second.
        let r2 = route(vec![]);
        for d in ["one", "two"] {
            r2.source.inner.put(SRC, "k", d.as_bytes());
        }
        let versions = listed(&r2, "k");
        let dp2 = data_path();
        replicate_key(&r2, &dp2, ("k", &versions[1..]), false, &latency()).await;
        replicate_key(&r2, &dp2, ("k", &versions[..1]), true, &latency()).await;
        let held2 = held(&r2, "k");
        assert_eq!(
            held2.len(),
            1,
            "the older version not written over: {held2:?}"
        );
        assert_eq!(held2[0].0, "two");
        // The usual check counts a version a later replica covers as skipped.
        assert_eq!(Stats::get(&dp2.stats.skipped), 1);
        assert_eq!(
            Stats::get(&dp2.stats.versions_copied),
            1,
            "only the first call's"
        );
    });
}

/// The HEAD-free write is only for a first version that is a small object and a history
/// without delete markers; anything it meets otherwise (a server refusing the condition for
/// good) sends the key the usual way, which copies it once.
#[test]
fn the_head_free_write_falls_back_to_the_usual_way() {
    on_executor(|| async {
        // A server that refuses the conditional PUT once, for good.
        let r = route(vec![Fault::new("put_object", 400, "InvalidArgument")]);
        r.source.inner.put(SRC, "k", b"one");
        let dp = data_path();
        let versions = listed(&r, "k");
        replicate_key(&r, &dp, ("k", &versions), true, &latency()).await;
        assert_eq!(held(&r, "k").len(), 1, "copied once");
        assert_eq!(
            r.dest.inner.calls("head_object"),
            1,
            "asked after the refusal"
        );
        assert_eq!(Stats::get(&dp.stats.failed), 0);

        // An empty object, and a history with a delete marker: asked first.
        let r = route(vec![]);
        r.source.inner.put(SRC, "empty", b"");
        r.source.inner.put(SRC, "gone", b"x");
        r.source.inner.delete_marker(SRC, "gone");
        let dp = data_path();
        for key in ["empty", "gone"] {
            let versions = listed(&r, key);
            replicate_key(&r, &dp, (key, &versions), true, &latency()).await;
        }
        assert_eq!(r.dest.inner.calls("head_object"), 2, "one HEAD per key");
        assert_eq!(held(&r, "empty").len(), 1);
        assert_eq!(held(&r, "gone").len(), 2, "the version and its marker");
    });
}
