//! Replicas are never stale, wrong or doubled: repeated, reordered and retried entries,
//! rescans, delete markers the source no longer holds, unversioned buckets and sources
//! without ListObjectVersions, against real servers (moto, s3s-fs, nisshi) and the fault
//! proxy. Destinations are read back with boto3 as well as with our client.

mod common;

use std::time::Duration;

use backbeat::queue::kafka::Topics;
use backbeat::s3::ops::head_object::HeadObjectRequest;
use backbeat::s3::ops::ObjectMetadata;
use backbeat::s3::Client;
use common::kafka::*;
use common::proxy::{Kind, Proxy};
use common::*;

const MIB: usize = 1024 * 1024;

fn all_sites_rule() -> String {
    rules(&[rule("all", 1, "<Prefix></Prefix>", true, "site-a")])
}

/// How many status records say the entry was superseded.
fn superseded(status: &[serde_json::Value]) -> usize {
    let is = |v: &&serde_json::Value| {
        v["status"] == "COMPLETED"
            && v["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("superseded"))
    };
    status.iter().filter(is).count()
}

/// What boto3 reads of `key` at the destination: versions (newest first) as
/// (source version id, size), whether its latest state is a delete marker, and its markers.
fn boto3_key(url: &str, bucket: &str, key: &str) -> (Vec<(String, u64)>, bool, u64) {
    let snap = boto3_snapshot(url, bucket);
    let k = &snap[key];
    let versions = k["versions"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| {
                    let sv = v["source_version"].as_str().unwrap_or("").to_string();
                    (sv, v["size"].as_u64().unwrap_or(u64::MAX))
                })
                .collect()
        })
        .unwrap_or_default();
    let markers = k["delete_markers"].as_u64().unwrap_or(0);
    (versions, k["latest_is_marker"] == true, markers)
}

/// Versioned buckets `sb` (with two versions of `k`, of 700 and 800 bytes) and `da`: a
/// client of the destination, both version ids and the second version's bytes.
fn two_versions_of_k(s: &Servers, sb: &str, da: &str) -> (Client, String, String, Vec<u8>) {
    let (src, dst) = (
        Client::new(endpoint(&s.source), None),
        Client::new(endpoint(&s.dest), None),
    );
    let (v1, v2, b2) = block_on(async {
        make_bucket(&src, sb, true).await;
        make_bucket(&dst, da, true).await;
        let v1 = put_version(&src, sb, "k", &data(700, 1), &[]).await;
        let b2 = data(800, 2);
        let v2 = put_version(&src, sb, "k", &b2, &[]).await;
        (v1, v2, b2)
    });
    (dst, v1, v2, b2)
}

/// Case 1: the first round of events delivered again (at-least-once publishers) after
/// newer versions landed: nothing is copied again and every key stays on its newest.
#[test]
fn repeated_events_for_older_versions_leave_every_key_on_its_newest() {
    let s = servers();
    let (sb, da) = (bucket("rep-src"), bucket("rep-a"));
    let (src, dst) = (
        Client::new(endpoint(&s.source), None),
        Client::new(endpoint(&s.dest), None),
    );
    let mut rounds: Vec<Vec<(String, String)>> = vec![Vec::new(); 3];
    block_on(async {
        make_bucket(&src, &sb, true).await;
        make_bucket(&dst, &da, true).await;
        for (round, events) in rounds.iter_mut().enumerate() {
            for k in 0..10 {
                let key = format!("k{k}");
                let body = data(500 + k, (round * 100 + k) as u64);
                let vid = put_version(&src, &sb, &key, &body, &[]).await;
                let seq = format!("{:016X}", 0x1000 + round * 16 + k);
                let e = event_with("ObjectCreated:Put", &sb, &key, &vid, body.len(), "x", &seq);
                events.push((format!("{sb}/{key}"), e));
            }
        }
    });
    let st = setup(&sb, &[("site-a", &s.dest, &da)], &all_sites_rule(), "");
    let topics = Topics::new(&st.prefix);
    let run = spawn(&["run"], &st.config);
    produce(&topics.events, &rounds.concat());
    let status = statuses(&topics.status, 30);
    assert_eq!(status.len(), 30, "every version completed first");
    produce(&topics.events, &rounds[0]);
    let status = statuses(&topics.status, 40);
    stop(run);
    assert_eq!(superseded(&status), 10, "the repeats are superseded");
    assert_replicated_by_boto3(&s.source, &sb, &s.dest, &da);
    for k in 0..10 {
        assert_eq!(real_versions(&dst, &da, &format!("k{k}")).len(), 3);
    }
}

/// Case 4: the event of v2 delivered before v1's (sequencers say which is newer): v1 is
/// superseded and the destination stays on v2.
#[test]
fn an_older_event_delivered_late_is_superseded_by_its_sequencer() {
    let s = servers();
    let (sb, da) = (bucket("seq-src"), bucket("seq-a"));
    let (dst, v1, v2, b2) = two_versions_of_k(&s, &sb, &da);
    let st = setup(&sb, &[("site-a", &s.dest, &da)], &all_sites_rule(), "");
    let topics = Topics::new(&st.prefix);
    let run = spawn(&["run"], &st.config);
    let key = format!("{sb}/k");
    produce(
        &topics.events,
        &[
            (
                key.clone(),
                event_with("ObjectCreated:Put", &sb, "k", &v2, 800, "x", "0A0"),
            ),
            (
                key,
                event_with("ObjectCreated:Put", &sb, "k", &v1, 700, "x", "09F"),
            ),
        ],
    );
    let status = statuses(&topics.status, 2);
    stop(run);
    assert_eq!(status.len(), 2);
    assert_eq!(superseded(&status), 1, "{status:?}");
    assert_eq!(status[1]["versionId"], v1.as_str(), "v1 came second");
    let (versions, deleted, _) = boto3_key(&s.dest, &da, "k");
    assert!(!deleted);
    assert_eq!(versions, vec![(v2, 800)], "only v2, never v1 over it");
    assert_eq!(real_versions(&dst, &da, "k"), vec![b2]);
}

/// Case 2: v1 fails (a 403 at the destination), v2 lands, then `failed retry` of v1: it is
/// superseded, the failed list empties, the destination stays on v2.
#[test]
fn a_failed_version_retried_after_a_newer_one_landed_is_superseded() {
    let s = servers();
    let (sb, da) = (bucket("fr-src"), bucket("fr-a"));
    let proxy = Proxy::start(&s.dest, false);
    let (dst, v1, v2, b2) = two_versions_of_k(&s, &sb, &da);
    proxy.faults.add("PUT", Some("/k"), Kind::Forbidden, 1);
    let api_port = free_port();
    let api = format!("\n[api]\nlisten = \"127.0.0.1:{api_port}\"\n");
    let st = setup(&sb, &[("site-a", &proxy.url, &da)], &all_sites_rule(), &api);
    let topics = Topics::new(&st.prefix);
    let run = spawn(&["run"], &st.config);
    let key = format!("{sb}/k");
    produce(
        &topics.events,
        &[(key.clone(), event("ObjectCreated:Put", &sb, "k", &v1, 700))],
    );
    let failed = statuses(&topics.status, 1);
    assert_eq!(failed[0]["status"], "FAILED", "{failed:?}");
    produce(
        &topics.events,
        &[(key, event("ObjectCreated:Put", &sb, "k", &v2, 800))],
    );
    wait_until(60, "v2 at the destination", || {
        real_versions(&dst, &da, "k").len() == 1
    });
    let api_addr = format!("127.0.0.1:{api_port}");
    wait_until(30, "v1 in the failed list", || {
        let (_, b) = http_get(api_port, "/_/crr/failed?site=site-a", None);
        b.contains(&v1)
    });
    let (code, out, err) = backbeat(&["failed", "retry", "--site", "site-a", "--api", &api_addr]);
    assert_eq!(code, 0, "{out}{err}");
    wait_until(60, "the failed list to empty", || {
        let (_, b) = http_get(api_port, "/_/crr/failed?site=site-a", None);
        serde_json::from_str::<serde_json::Value>(&b)
            .map(|v| v["Versions"].as_array().map(|a| a.len()) == Some(0))
            .unwrap_or(false)
    });
    let status = statuses(&topics.status, 3);
    stop(run);
    assert_eq!(superseded(&status), 1, "the retried v1: {status:?}");
    let (versions, _, _) = boto3_key(&s.dest, &da, "k");
    assert_eq!(versions, vec![(v2, 800)], "v1 never lands over v2");
    assert_eq!(real_versions(&dst, &da, "k"), vec![b2]);
}

/// Case 7: a delete marker the source no longer holds (removed by version id: an undelete)
/// is not applied: the destination keeps the object.
#[test]
fn a_delete_marker_the_source_no_longer_holds_is_not_applied() {
    let s = servers();
    let (sb, da) = (bucket("undel-src"), bucket("undel-a"));
    let (src, dst) = (
        Client::new(endpoint(&s.source), None),
        Client::new(endpoint(&s.dest), None),
    );
    let (v1, marker) = block_on(async {
        make_bucket(&src, &sb, true).await;
        make_bucket(&dst, &da, true).await;
        let v1 = put_version(&src, &sb, "k", &data(700, 1), &[]).await;
        glommio::timer::sleep(Duration::from_millis(1100)).await;
        let del = src.delete_object(&sb, "k", None).await.unwrap();
        let marker = del.version_id.expect("a versioned delete makes a marker");
        src.delete_object(&sb, "k", Some(&marker)).await.unwrap();
        (v1, marker)
    });
    let st = setup(&sb, &[("site-a", &s.dest, &da)], &all_sites_rule(), "");
    let topics = Topics::new(&st.prefix);
    let run = spawn(&["run"], &st.config);
    let key = format!("{sb}/k");
    produce(
        &topics.events,
        &[
            (key.clone(), event("ObjectCreated:Put", &sb, "k", &v1, 700)),
            (
                key,
                event("ObjectRemoved:DeleteMarkerCreated", &sb, "k", &marker, 0),
            ),
        ],
    );
    let status = statuses(&topics.status, 2);
    stop(run);
    assert_eq!(superseded(&status), 1, "{status:?}");
    let (versions, deleted, markers) = boto3_key(&s.dest, &da, "k");
    assert!(!deleted && markers == 0, "no marker at the destination");
    assert_eq!(versions.len(), 1);
    assert_eq!(real_versions(&dst, &da, "k"), vec![data(700, 1)]);
}

/// Case 3: a source rescanned every second while its versions are still on their way (the
/// first one's upload held by the proxy for a while): no rescan enqueues a version queued
/// or in flight, and the destination ends with each version once, in order.
#[test]
fn rescans_never_enqueue_what_is_queued_nor_duplicate_or_reorder_a_key() {
    let s = servers();
    let (sb, da) = (bucket("rescan-src"), bucket("rescan-a"));
    let proxy = Proxy::start(&s.dest, false);
    let (src, dst) = (
        Client::new(endpoint(&s.source), None),
        Client::new(endpoint(&s.dest), None),
    );
    // The first version is large enough for the proxy to hold its upload.
    let bodies: Vec<Vec<u8>> = (0..30)
        .map(|i| data(if i == 0 { 2 * MIB } else { 2000 + i }, i as u64))
        .collect();
    block_on(async {
        make_bucket(&src, &sb, true).await;
        make_bucket(&dst, &da, true).await;
        for b in &bodies {
            put_version(&src, &sb, "hot", b, &[]).await;
        }
    });
    proxy.faults.add("PUT", None, Kind::Hold, 1);
    let st = setup(&sb, &[("site-a", &proxy.url, &da)], &all_sites_rule(), "");
    let text = std::fs::read_to_string(&st.config).unwrap().replace(
        "rules_file = \"rules.xml\"\n",
        "rules_file = \"rules.xml\"\nscan_interval_seconds = 1\n",
    );
    std::fs::write(&st.config, text).unwrap();
    let run = spawn(&["run"], &st.config);
    wait_until(60, "the first version's upload held", || {
        proxy.faults.hits(Kind::Hold) >= 1
    });
    // Rescans come every second meanwhile; all 30 versions are queued or in flight.
    std::thread::sleep(Duration::from_secs(5));
    proxy.faults.release();
    wait_until(120, "30 versions at the destination", || {
        real_versions(&dst, &da, "hot").len() >= 30
    });
    // Several more rescans find everything present.
    std::thread::sleep(Duration::from_secs(5));
    stop(run);
    let entries = topic_len(&Topics::new(&st.prefix).replication);
    assert_eq!(entries, 30, "each version enqueued once, by the first scan");
    let got = real_versions(&dst, &da, "hot");
    let sizes: Vec<usize> = got.iter().map(Vec::len).collect();
    assert!(
        got == bodies,
        "each version once, in order; sizes: {sizes:?}"
    );
    assert_replicated_by_boto3(&s.source, &sb, &s.dest, &da);
}

/// Case 5, and a source without ListObjectVersions: an unversioned source's overwrite is a
/// new version (told apart by its ETag), copied by the next sync; s3s-fs as the source is
/// listed with ListObjectsV2.
#[test]
fn overwrites_on_unversioned_sources_are_replicated() {
    let s = servers();
    let (fs_url, fs_creds) = s3fs();
    let (mb, fb, db1, db2) = (
        bucket("unv-src"),
        bucket("unv-fs"),
        bucket("unv-a"),
        bucket("unv-b"),
    );
    let fs = s3fs_client(&fs_url, &fs_creds);
    let (src, dst) = (
        Client::new(endpoint(&s.source), None),
        Client::new(endpoint(&s.dest), None),
    );
    block_on(async {
        make_bucket(&src, &mb, false).await;
        fs.create_bucket(&fb).await.unwrap();
        make_bucket(&dst, &db1, true).await;
        make_bucket(&dst, &db2, true).await;
        for (c, b) in [(&src, &mb), (&fs, &fb)] {
            put(c, b, "k", &data(900, 1), &ObjectMetadata::default(), &[]).await;
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let env = profile_env(dir.path(), "fs", &fs_creds);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let runs: [(&str, &str, &str, &[&str]); 2] = [
        (&s.source, &mb, &db1, &[]),
        (&fs_url, &fb, &db2, &["--source-profile", "fs"]),
    ];
    let sync_once = |(url, sb, db, extra): (&str, &str, &str, &[&str])| {
        let (s_arg, d_arg) = (format!("s3://{sb}"), format!("s3://{db}"));
        let mut args = vec!["sync", &s_arg, &d_arg, "--source-endpoint", url];
        args.extend(["--destination-endpoint", &s.dest, "--json"]);
        args.extend_from_slice(extra);
        let (code, out, err) = backbeat_env(&args, &env);
        assert_eq!(code, 0, "{out}{err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    for run in runs {
        assert_eq!(sync_once(run)["versions_copied"], 1);
    }
    block_on(async {
        // New clients: a pooled connection belongs to the executor that opened it.
        let fs = s3fs_client(&fs_url, &fs_creds);
        let src = Client::new(endpoint(&s.source), None);
        for (c, b) in [(&src, &mb), (&fs, &fb)] {
            put(c, b, "k", &data(1200, 2), &ObjectMetadata::default(), &[]).await;
        }
    });
    for run in runs {
        let summary = sync_once(run);
        assert_eq!(summary["versions_copied"], 1, "the overwrite: {summary}");
        assert_eq!(summary["skipped"], 0, "{summary}");
        let again = sync_once(run);
        assert_eq!(again["versions_copied"], 0, "{again}");
        assert_eq!(again["skipped"], 1, "{again}");
    }
    for db in [&db1, &db2] {
        let (versions, _, _) = boto3_key(&s.dest, db, "k");
        assert_eq!(versions.len(), 2, "{db}: {versions:?}");
        assert_eq!(versions[0].1, 1200, "{db}: the overwrite is current");
        let got = real_versions(&dst, db, "k");
        assert!(got == [data(900, 1), data(1200, 2)], "{db}: bytes in order");
    }
}

/// Case 6: a copy corrupted on its way to an unversioned destination (s3s-fs) carries the
/// right source metadata but not the right bytes: it is never reported present, and the
/// next attempt (or run) copies it again.
#[test]
fn a_corrupt_copy_on_an_unversioned_destination_is_copied_again() {
    let s = servers();
    let (fs_url, fs_creds) = s3fs();
    let (sb, db) = (bucket("cor-src"), bucket("cor-fs"));
    let proxy = Proxy::start(&fs_url, false);
    let fs = s3fs_client(&fs_url, &fs_creds);
    let src = Client::new(endpoint(&s.source), None);
    let body = data(5000, 7);
    block_on(async {
        make_bucket(&src, &sb, true).await;
        fs.create_bucket(&db).await.unwrap();
        put(&src, &sb, "k", &body, &ObjectMetadata::default(), &[]).await;
    });
    proxy.faults.add("PUT", Some("/k"), Kind::FlipByte, 1);
    let dir = tempfile::tempdir().unwrap();
    let env = profile_env(dir.path(), "fs", &fs_creds);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (s_arg, d_arg) = (format!("s3://{sb}"), format!("s3://{db}"));
    let args = [
        "sync",
        &s_arg,
        &d_arg,
        "--source-endpoint",
        &s.source,
        "--destination-endpoint",
        &proxy.url,
        "--destination-profile",
        "fs",
        "--json",
        "--attempts",
        "3",
    ];
    let mut copied = 0;
    for _ in 0..2 {
        let (_, out, err) = backbeat_env(&args, &env);
        let summary: serde_json::Value = serde_json::from_str(&out).expect(&err);
        assert_eq!(
            summary["skipped"], 0,
            "a corrupt copy is not present: {summary}"
        );
        copied += summary["versions_copied"].as_u64().unwrap();
        if copied == 1 {
            break;
        }
    }
    assert_eq!(copied, 1);
    assert_eq!(proxy.faults.hits(Kind::FlipByte), 1);
    let (_, out, err) = backbeat_env(&args, &env);
    let again: serde_json::Value = serde_json::from_str(&out).expect(&err);
    assert_eq!(again["skipped"], 1, "the good copy is present: {again}");
    block_on(async {
        let fs = s3fs_client(&fs_url, &fs_creds);
        assert!(read_all(&fs, &db, "k", None).await == body, "bytes equal");
        let h = fs.head_object(&db, "k", HeadObjectRequest::default()).await;
        assert_eq!(h.unwrap().content_length, body.len() as u64);
    });
}

/// Case 8: two engines replicate A to B and B to A (each rescanning its source every
/// second), with writes on both sides and a delete: each side ends with every version
/// once and the counts stay put for 60 s (a replica is not sent back; the delete marker is
/// not echoed).
#[test]
fn two_way_replication_does_not_loop() {
    let s = servers();
    let (ba, bb) = (bucket("aa-a"), bucket("aa-b"));
    block_on(async {
        let (a, b) = (
            Client::new(endpoint(&s.source), None),
            Client::new(endpoint(&s.dest), None),
        );
        make_bucket(&a, &ba, true).await;
        make_bucket(&b, &bb, true).await;
        put_version(&a, &ba, "from-a", &data(1000, 1), &[]).await;
        put_version(&a, &ba, "from-a", &data(1100, 2), &[]).await;
        put_version(&b, &bb, "from-b", &data(1200, 3), &[]).await;
    });
    let rescan = |st: &Setup, source: Option<(&str, &str)>| {
        let mut text = std::fs::read_to_string(&st.config).unwrap().replace(
            "rules_file = \"rules.xml\"\n",
            "rules_file = \"rules.xml\"\nscan_interval_seconds = 1\n",
        );
        if let Some((from, to)) = source {
            text = text.replacen(
                &format!("endpoint = \"{from}\""),
                &format!("endpoint = \"{to}\""),
                1,
            );
        }
        std::fs::write(&st.config, text).unwrap();
    };
    let rule_to = |site: &str| rules(&[rule("all", 1, "<Prefix></Prefix>", true, site)]);
    let a_to_b = setup(&ba, &[("site-b", &s.dest, &bb)], &rule_to("site-b"), "");
    rescan(&a_to_b, None);
    let b_to_a = setup(&bb, &[("site-a", &s.source, &ba)], &rule_to("site-a"), "");
    rescan(&b_to_a, Some((&s.source, &s.dest)));
    let one = spawn_named(&["run"], &a_to_b.config, "a-to-b");
    let two = spawn_named(&["run"], &b_to_a.config, "b-to-a");
    let (a, b) = (
        Client::new(endpoint(&s.source), None),
        Client::new(endpoint(&s.dest), None),
    );
    wait_until(120, "both sides hold both keys", || {
        real_versions(&b, &bb, "from-a").len() == 2 && real_versions(&a, &ba, "from-b").len() == 1
    });
    block_on(async {
        let a = Client::new(endpoint(&s.source), None);
        a.delete_object(&ba, "from-a", None).await.unwrap();
    });
    let counts = || {
        let side = |url: &str, bucket: &str| {
            let snap = boto3_snapshot(url, bucket);
            let of = |k: &str| {
                let v = &snap[k];
                (
                    v["versions"].as_array().map_or(0, Vec::len),
                    v["delete_markers"].as_u64(),
                )
            };
            (of("from-a"), of("from-b"))
        };
        (side(&s.source, &ba), side(&s.dest, &bb))
    };
    let want = (((2, Some(1)), (1, Some(0))), ((2, Some(1)), (1, Some(0))));
    wait_until(120, "the delete at B", || counts() == want);
    std::thread::sleep(Duration::from_secs(60));
    let after = counts();
    stop(one);
    stop(two);
    assert_eq!(
        after, want,
        "(A: from-a, from-b), (B: from-a, from-b) as (versions, markers)"
    );
    assert_eq!(
        real_versions(&b, &bb, "from-a"),
        vec![data(1000, 1), data(1100, 2)]
    );
    drop((a_to_b, b_to_a));
}

/// Case 9: a member whose uploads hang (held by the proxy after their first MiB) loses its
/// partitions to a second member. Past the drain deadline its entries are fenced: their
/// tasks and connections are dropped (reset), so what they had not sent yet is never sent.
/// The new owners replay them and then the next versions; when the hung uploads are let go,
/// none completes over a newer version. (A request whose bytes all reached the server's side
/// before the fence may still complete: the objects are larger than the socket buffers.)
#[test]
fn a_slow_member_fenced_at_a_rebalance_never_writes_after_the_new_owner() {
    let s = servers();
    let (sb, da) = (bucket("fence-src"), bucket("fence-a"));
    let proxy = Proxy::start(&s.dest, false);
    let keys: Vec<String> = (0..4).map(|i| format!("f{i}")).collect();
    let (src, dst) = (
        Client::new(endpoint(&s.source), None),
        Client::new(endpoint(&s.dest), None),
    );
    let (mut first, mut second) = (Vec::new(), Vec::new());
    block_on(async {
        make_bucket(&src, &sb, true).await;
        make_bucket(&dst, &da, true).await;
        for (i, k) in keys.iter().enumerate() {
            let (b1, b2) = (data(16 * MIB, i as u64), data(3000 + i, 100 + i as u64));
            let v1 = put_version(&src, &sb, k, &b1, &[]).await;
            let v2 = put_version(&src, &sb, k, &b2, &[]).await;
            first.push((
                format!("{sb}/{k}"),
                event("ObjectCreated:Put", &sb, k, &v1, b1.len()),
            ));
            second.push((
                format!("{sb}/{k}"),
                event("ObjectCreated:Put", &sb, k, &v2, b2.len()),
            ));
        }
    });
    proxy.faults.add("PUT", None, Kind::Hold, keys.len() as u32);
    let st = setup(&sb, &[("site-a", &proxy.url, &da)], &all_sites_rule(), "");
    // Free slots beside the hung uploads: the member keeps polling, so it takes part in the
    // rebalance (with every slot busy it would stop polling: issue 11).
    let text = std::fs::read_to_string(&st.config)
        .unwrap()
        .replace(
            "session_timeout_ms = 6000\n",
            "session_timeout_ms = 6000\ndrain_deadline_seconds = 3\n",
        )
        .replace("concurrency = 8\n", "concurrency = 16\n")
        .replace(
            "multipart_threshold = \"5MiB\"",
            "multipart_threshold = \"64MiB\"",
        );
    std::fs::write(&st.config, &text).unwrap();
    let direct = st.config.with_file_name("direct.toml");
    std::fs::write(&direct, text.replace(&proxy.url, &s.dest)).unwrap();
    let topics = Topics::new(&st.prefix);
    let pop = spawn(&["populate"], &st.config);
    let slow = spawn_named(
        &["replicate", "--site", "site-a", "--shards", "1"],
        &st.config,
        "slow",
    );
    produce(&topics.events, &first);
    wait_until(60, "every first version's upload hung", || {
        proxy.faults.hits(Kind::Hold) >= keys.len()
    });
    let fast = spawn_named(
        &["replicate", "--site", "site-a", "--shards", "1"],
        &direct,
        "fast",
    );
    let log = |n: &str| {
        std::fs::read_to_string(st.config.with_file_name(format!("{n}.log"))).unwrap_or_default()
    };
    wait_until(90, "the slow member's drain deadline", || {
        log("slow").contains("drain deadline passed on a rebalance")
    });
    for k in &keys {
        wait_until(90, &format!("{k}: the first version replayed"), || {
            real_versions(&dst, &da, k).len() == 1
        });
    }
    produce(&topics.events, &second);
    for k in &keys {
        wait_until(90, &format!("{k}: the second version"), || {
            real_versions(&dst, &da, k).len() == 2
        });
    }
    proxy.faults.release();
    std::thread::sleep(Duration::from_secs(5));
    stop(fast);
    stop(slow);
    stop(pop);
    for (i, k) in keys.iter().enumerate() {
        let want = vec![data(16 * MIB, i as u64), data(3000 + i, 100 + i as u64)];
        let got = real_versions(&dst, &da, k);
        let sizes: Vec<usize> = got.iter().map(Vec::len).collect();
        assert!(
            got == want,
            "{k}: the first version, then the second, once each: {sizes:?}"
        );
    }
    assert_replicated_by_boto3(&s.source, &sb, &s.dest, &da);
}
