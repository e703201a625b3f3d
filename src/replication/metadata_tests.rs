//! Metadata-only updates against in-memory stores: the replica of the right version follows
//! the source's tags, retention and legal hold, with no byte copied, idempotently; nothing
//! is written for a version that is not replicated yet or no longer at the source.

use super::metadata::{self, MetadataField, NOT_REPLICATED_YET};
use super::pipeline_tests::{data_path, on_executor, DST, SRC};
use super::*;
use crate::s3::mem::{Flaky, MemStore};
use crate::s3::store::{MetadataWrite, ObjectStore};

fn route() -> Route<Flaky<MemStore>> {
    let (source, dest) = (MemStore::new(), MemStore::new());
    source.create_bucket(SRC, true);
    dest.create_bucket(DST, true);
    Route {
        source: Flaky::new(source),
        source_bucket: SRC.into(),
        dest: Flaky::new(dest),
        dest_bucket: DST.into(),
        dest_versioned: true,
        policy: Default::default(),
    }
}

fn version(r: &Route<Flaky<MemStore>>, i: usize) -> Version {
    let s = r.source.inner.versions(SRC, "k").remove(i);
    Version {
        key: "k".into(),
        version_id: s.version_id,
        delete_marker: false,
        size: s.data.len() as u64,
        order: SourceOrder::new(Some(&s.last_modified), None),
        etag: s.etag,
    }
}

async fn set(r: &Route<Flaky<MemStore>>, v: &Version, w: MetadataWrite) {
    let vid = Some(v.version_id.as_str());
    r.source
        .put_object_metadata(SRC, "k", vid, &w)
        .await
        .unwrap();
}

fn pairs(t: &[(&str, &str)]) -> Vec<(String, String)> {
    t.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn a_tag_change_reaches_the_replica_of_that_version_only() {
    on_executor(|| async {
        let r = route();
        r.source.inner.put(SRC, "k", b"first");
        r.source.inner.put(SRC, "k", b"second");
        let (v1, v2) = (version(&r, 0), version(&r, 1));
        let dp = data_path();
        replicate(&r, &dp, &v1).await.unwrap();
        replicate(&r, &dp, &v2).await.unwrap();
        let puts = r.dest.inner.calls("put_object");
        set(&r, &v1, MetadataWrite::Tags(pairs(&[("team", "a")]))).await;
        let tags = [MetadataField::Tags];
        let out = metadata::update(&r, &v1, &tags, false).await.unwrap();
        assert_eq!(out, Outcome::MetadataUpdated { writes: 1 });
        let dest = r.dest.inner.versions(DST, "k");
        assert_eq!(dest.len(), 2, "no version written");
        assert_eq!(
            dest[0].tags,
            pairs(&[("team", "a")]),
            "the noncurrent replica"
        );
        assert!(
            dest[1].tags.is_empty(),
            "the current replica is another version"
        );
        assert_eq!(r.dest.inner.calls("put_object"), puts, "no byte copied");
        // Delivered again: nothing differs, nothing written.
        let again = metadata::update(&r, &v1, &tags, false).await.unwrap();
        assert_eq!(again, Outcome::Skipped);
        set(&r, &v1, MetadataWrite::DeleteTags).await;
        let out = metadata::update(&r, &v1, &tags, false).await.unwrap();
        assert_eq!(out, Outcome::MetadataUpdated { writes: 1 });
        assert!(r.dest.inner.versions(DST, "k")[0].tags.is_empty());
        assert_eq!(r.dest.inner.calls("DeleteObjectTagging"), 1);
    });
}

#[test]
fn retention_and_legal_hold_follow_the_source() {
    on_executor(|| async {
        let r = route();
        r.source.inner.put(SRC, "k", b"locked");
        let v = version(&r, 0);
        replicate(&r, &data_path(), &v).await.unwrap();
        let retention = MetadataWrite::Retention {
            mode: Some("GOVERNANCE".into()),
            retain_until: Some("2030-01-01T00:00:00Z".into()),
        };
        set(&r, &v, retention).await;
        set(&r, &v, MetadataWrite::LegalHold(true)).await;
        let fields = [MetadataField::Retention, MetadataField::LegalHold];
        let out = metadata::update(&r, &v, &fields, false).await.unwrap();
        assert_eq!(out, Outcome::MetadataUpdated { writes: 2 });
        let lock = &r.dest.inner.versions(DST, "k")[0].metadata.write.lock;
        assert_eq!(lock.mode.as_deref(), Some("GOVERNANCE"));
        assert_eq!(lock.retain_until.as_deref(), Some("2030-01-01T00:00:00Z"));
        assert!(lock.legal_hold);
        assert_eq!(metadata::drift(&r, &v).await.unwrap(), vec![]);
        set(&r, &v, MetadataWrite::LegalHold(false)).await;
        assert_eq!(
            metadata::drift(&r, &v).await.unwrap(),
            vec![],
            "a scan leaves locks to their events (the replica's own are never removed)"
        );
        set(&r, &v, MetadataWrite::Tags(pairs(&[("a", "1")]))).await;
        assert_eq!(
            metadata::drift(&r, &v).await.unwrap(),
            vec![MetadataField::Tags],
            "a scan finds tags that differ"
        );
        // The same retention date written another way is no change; a source without
        // retention never removes the replica's.
        let same = MetadataWrite::Retention {
            mode: Some("GOVERNANCE".into()),
            retain_until: Some("2030-01-01T00:00:00.000Z".into()),
        };
        set(&r, &v, same).await;
        let fields = [MetadataField::Retention];
        assert_eq!(
            metadata::update(&r, &v, &fields, false).await.unwrap(),
            Outcome::Skipped
        );
        let none = MetadataWrite::Retention {
            mode: None,
            retain_until: None,
        };
        set(&r, &v, none).await;
        assert_eq!(
            metadata::update(&r, &v, &fields, false).await.unwrap(),
            Outcome::Skipped
        );
        let kept = &r.dest.inner.versions(DST, "k")[0].metadata.write.lock;
        assert_eq!(kept.mode.as_deref(), Some("GOVERNANCE"));
    });
}

#[test]
fn nothing_is_written_before_the_copy_or_after_the_version_is_gone() {
    on_executor(|| async {
        let r = route();
        r.source.inner.put(SRC, "k", b"not yet");
        let v = version(&r, 0);
        set(&r, &v, MetadataWrite::Tags(pairs(&[("a", "1")]))).await;
        let tags = [MetadataField::Tags];
        let out = metadata::update(&r, &v, &tags, false).await.unwrap();
        assert_eq!(out, Outcome::Superseded(NOT_REPLICATED_YET));
        // The copy carries the tags the source has then.
        replicate(&r, &data_path(), &v).await.unwrap();
        assert_eq!(
            r.dest.inner.versions(DST, "k")[0].tags,
            pairs(&[("a", "1")])
        );
        let gone = Version {
            version_id: "no-such-version".into(),
            ..v
        };
        let out = metadata::update(&r, &gone, &tags, false).await.unwrap();
        assert_eq!(out, Outcome::Superseded(GONE_FROM_SOURCE));
    });
}

#[test]
fn a_copy_whose_acl_failed_gets_its_acl_on_the_retry_not_a_second_copy() {
    on_executor(|| async {
        let mut r = route();
        r.policy = std::sync::Arc::new(policy::ReplicaPolicy {
            acl: policy::Acl::Copy,
            ..Default::default()
        });
        let fault = crate::s3::mem::Fault::new("get_object_acl", 503, "SlowDown");
        r.dest = r.dest.fail(fault);
        r.source.inner.put(SRC, "k", b"with an acl");
        let v = version(&r, 0);
        let out = replicate(&r, &data_path(), &v).await.unwrap();
        assert_eq!(out, Outcome::Skipped, "the retry found the copy there");
        assert_eq!(r.dest.inner.calls("put_object"), 1, "copied once");
        assert_eq!(
            r.dest.inner.calls("get_object_acl"),
            1,
            "the ACL compared again on the retry (the failed call did not reach the store)"
        );
        assert_eq!(r.source.inner.calls("get_object_acl"), 2);
    });
}
