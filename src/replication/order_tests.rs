//! The ordering decision against in-memory stores: random histories (same-second versions,
//! delete markers, unversioned buckets) delivered with repeats and reorders, with and
//! without sequencers. The destination never holds a version twice, never out of the
//! source's order, and always ends on the source's latest state.

use proptest::prelude::*;

use super::pipeline_tests::{data_path, held, on_executor, DST, SRC};
use super::*;
use crate::s3::mem::{Fault, Flaky, MemStore};

/// One source write: a delete marker or not, and whether it shares the previous write's
/// LastModified second.
#[derive(Debug, Clone, Copy)]
struct Write {
    marker: bool,
    same_second: bool,
}

/// How a delivery names the version's place in its key's history.
#[derive(Debug, Clone, Copy)]
enum Told {
    Sequencer,
    LastModified,
    Nothing,
}

#[derive(Debug, Clone)]
struct Case {
    source_versioned: bool,
    dest_versioned: bool,
    writes: Vec<Write>,
    /// Indices into `writes`, in delivery order (each at least once).
    deliveries: Vec<(usize, Told)>,
}

fn told() -> impl Strategy<Value = Told> {
    prop_oneof![
        Just(Told::Sequencer),
        Just(Told::LastModified),
        Just(Told::Nothing)
    ]
}

fn case(in_order: bool) -> impl Strategy<Value = Case> {
    (any::<bool>(), any::<bool>(), 1usize..7).prop_flat_map(move |(sv, dv, n)| {
        let writes = prop::collection::vec(
            (any::<bool>(), any::<bool>()).prop_map(move |(m, s)| Write {
                marker: m && sv,
                same_second: s,
            }),
            n,
        );
        let extra = prop::collection::vec(0..n, 0..4);
        let priority = prop::collection::vec(any::<u16>(), n + 4);
        let how = prop::collection::vec(told(), n + 4);
        (writes, extra, priority, how).prop_map(move |(writes, extra, prio, how)| {
            let mut d: Vec<usize> = (0..n).chain(extra).collect();
            if in_order {
                d.sort();
            } else {
                let mut keyed: Vec<(u16, usize)> = d.iter().map(|&i| (prio[i], i)).collect();
                keyed
                    .iter_mut()
                    .enumerate()
                    .for_each(|(j, k)| k.0 ^= prio[j]);
                keyed.sort();
                d = keyed.into_iter().map(|(_, i)| i).collect();
            }
            let deliveries = d.into_iter().zip(how).collect();
            Case {
                source_versioned: sv,
                dest_versioned: dv,
                writes,
                deliveries,
            }
        })
    })
}

/// What the source wrote: per write, (version id, marker, bytes, ETag, LastModified).
type Written = Vec<(String, bool, Vec<u8>, String, String)>;

fn write_source(src: &MemStore, c: &Case) -> Written {
    src.create_bucket(SRC, c.source_versioned);
    let mut out = Vec::new();
    for (i, w) in c.writes.iter().enumerate() {
        src.hold_clock(w.same_second);
        let data = format!("data-{i}").into_bytes();
        let id = if w.marker {
            src.delete_marker(SRC, "k")
        } else {
            src.put(SRC, "k", &data)
        };
        let s = src.versions(SRC, "k").pop().expect("just written");
        out.push((id, w.marker, data, s.etag, s.last_modified));
    }
    out
}

/// The version a delivery names, with what it tells of the version's order (sequencers grow
/// in length as well as value, as S3's do).
fn delivered(w: &Written, i: usize, how: Told) -> Version {
    let (id, marker, data, etag, lm) = &w[i];
    let order = match how {
        Told::Sequencer => SourceOrder::new(None, Some(&format!("{:X}", 0xFu64 << (4 * i)))),
        Told::LastModified => SourceOrder::new(Some(lm), None),
        Told::Nothing => SourceOrder::default(),
    };
    Version {
        key: "k".into(),
        version_id: id.clone(),
        delete_marker: *marker,
        size: data.len() as u64,
        etag: etag.clone(),
        order,
    }
}

/// The source's history as `held` names the destination's: bytes (or "marker"), version id.
fn source_seq(w: &Written, c: &Case) -> Vec<(String, Option<String>)> {
    let mut all = w.iter().map(|(id, marker, data, _, _)| {
        let what = if *marker {
            "marker".to_string()
        } else {
            String::from_utf8_lossy(data).into_owned()
        };
        (what, (!*marker).then(|| id.clone()))
    });
    if c.source_versioned {
        all.collect()
    } else {
        all.next_back().into_iter().collect()
    }
}

/// True when `d` is a subsequence of `s` (markers match markers, versions their bytes).
fn is_subsequence(d: &[(String, Option<String>)], s: &[(String, Option<String>)]) -> bool {
    let mut it = s.iter();
    d.iter().all(|x| it.any(|y| y.0 == x.0))
}

/// A route from `src` to `dst` (buckets `SRC` and `DST`).
fn route_of(src: MemStore, dst: Flaky<MemStore>, dest_versioned: bool) -> Route<Flaky<MemStore>> {
    Route {
        source: Flaky::new(src),
        source_bucket: SRC.into(),
        dest: dst,
        dest_bucket: DST.into(),
        dest_versioned,
        policy: Default::default(),
    }
}

/// Two versioned in-memory stores, with buckets `SRC` and `DST`.
fn versioned_stores() -> (MemStore, MemStore) {
    let (src, dst) = (MemStore::new(), MemStore::new());
    src.create_bucket(SRC, true);
    dst.create_bucket(DST, true);
    (src, dst)
}

fn run_case(c: Case, in_order: bool) {
    on_executor(move || async move {
        let (src, dst) = (MemStore::new(), MemStore::new());
        let w = write_source(&src, &c);
        dst.create_bucket(DST, c.dest_versioned);
        let r = route_of(src, Flaky::new(dst), c.dest_versioned);
        let dp = data_path();
        for &(i, how) in &c.deliveries {
            let v = delivered(&w, i, how);
            if r.decide(&v).await.unwrap() == Verdict::Apply {
                replicate(&r, &dp, &v).await.unwrap();
            }
        }
        check(&r, &w, &c, in_order);
    });
}

fn check(r: &Route<Flaky<MemStore>>, w: &Written, c: &Case, in_order: bool) {
    let (s, d) = (source_seq(w, c), held(r, "k"));
    let latest = s.last().expect("one write at least");
    if !c.dest_versioned {
        let want: Vec<_> = (latest.0 != "marker")
            .then(|| latest.0.clone())
            .into_iter()
            .collect();
        let got: Vec<_> = d.iter().map(|x| x.0.clone()).collect();
        assert_eq!(
            got, want,
            "the unversioned destination holds the latest state\n{c:?}"
        );
        return;
    }
    if !c.source_versioned {
        // Bytes of older writes are gone from the source: a copy is of the current object.
        assert_eq!(d, s, "one copy of the current object\n{c:?}");
        return;
    }
    assert!(
        is_subsequence(&d, &s),
        "in the source's order, never twice:\n{d:?}\n{s:?}\n{c:?}"
    );
    let ends_deleted = d.last().map(|x| x.0 == "marker").unwrap_or(true);
    if latest.0 == "marker" {
        assert!(
            ends_deleted,
            "deleted like the source:\n{d:?}\n{s:?}\n{c:?}"
        );
    } else {
        assert_eq!(d.last(), Some(latest), "never stale:\n{d:?}\n{s:?}\n{c:?}");
    }
    if in_order {
        assert_eq!(d, s, "in-order deliveries copy every version\n{c:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn repeated_and_reordered_deliveries_never_leave_the_destination_stale(c in case(false)) {
        run_case(c, false);
    }

    #[test]
    fn in_order_deliveries_with_repeats_copy_the_history_exactly(c in case(true)) {
        run_case(c, true);
    }
}

/// A delete marker written, its response lost, then retried: one marker at the destination.
#[test]
fn a_retried_delete_marker_is_not_written_twice() {
    on_executor(|| async {
        let (src, dst) = versioned_stores();
        src.put(SRC, "k", b"one");
        let id = src.delete_marker(SRC, "k");
        let lost = Fault::new("delete_object", 500, "InternalError").response_lost();
        let r = route_of(src, Flaky::new(dst).fail(lost.times(1)), true);
        let dp = data_path();
        let history = r.source_history("k").await.unwrap();
        replicate(&r, &dp, &history[0]).await.unwrap();
        let marker = Version {
            version_id: id,
            ..history[1].clone()
        };
        let out = replicate(&r, &dp, &marker).await.unwrap();
        assert_eq!(
            out,
            Outcome::Skipped,
            "the lost response's marker had landed"
        );
        let markers = held(&r, "k").iter().filter(|x| x.0 == "marker").count();
        assert_eq!(markers, 1);
    });
}

/// A marker the source no longer holds (an undelete, or a forged entry) is not applied.
#[test]
fn a_delete_marker_gone_from_the_source_is_superseded() {
    on_executor(|| async {
        let (src, dst) = versioned_stores();
        src.put(SRC, "k", b"one");
        let r = route_of(src, Flaky::new(dst), true);
        let dp = data_path();
        let v = r.source_history("k").await.unwrap().remove(0);
        replicate(&r, &dp, &v).await.unwrap();
        let forged = Version {
            version_id: "no-such-marker".into(),
            delete_marker: true,
            ..v
        };
        assert_eq!(
            r.decide(&forged).await.unwrap(),
            Verdict::Superseded(GONE_FROM_SOURCE)
        );
        assert_eq!(held(&r, "k").len(), 1, "the object is still there");
    });
}

/// A source version that is itself a replica is not sent back (two-way replication), unless
/// replicas are to be replicated (chains), and then its origin travels with it.
#[test]
fn replicas_are_not_sent_back_and_keep_their_origin_when_chained() {
    on_executor(|| async {
        let (src, dst) = versioned_stores();
        let meta = crate::s3::ops::ObjectMetadata {
            user: vec![
                (META_SOURCE_VERSION.into(), "first".into()),
                (META_ORIGIN.into(), "origin-bucket/first".into()),
            ],
            ..Default::default()
        };
        src.put_with(SRC, "k", b"a replica", meta, Vec::new());
        let r = route_of(src, Flaky::new(dst), true);
        let v = r.source_history("k").await.unwrap().remove(0);
        let mut dp = data_path();
        let out = replicate(&r, &dp, &v).await.unwrap();
        assert_eq!(out, Outcome::Superseded(REPLICA_AT_SOURCE));
        assert!(held(&r, "k").is_empty(), "not sent back");
        dp.opts.replicate_replicas = true;
        assert_eq!(
            replicate(&r, &dp, &v).await.unwrap(),
            Outcome::Copied { bytes: 9 }
        );
        let copy = r.dest.inner.versions(DST, "k").remove(0);
        let user = |k: &str| {
            copy.metadata
                .user
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(user(META_ORIGIN).as_deref(), Some("origin-bucket/first"));
        assert_eq!(user(META_SOURCE_VERSION), Some(v.version_id.clone()));
    });
}
