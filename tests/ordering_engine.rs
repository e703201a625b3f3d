//! Order and idempotence through the whole engine (`backbeat run`, `populate` and
//! `replicate` processes over Kafka), against real servers (moto, s3s-fs, nisshi): an
//! overwrite on an unversioned source announced by events is a new version and a repeated
//! event changes nothing (issue 10, case 5, engine path); `run` rescanning a source without
//! ListObjectVersions (s3s-fs) copies its objects and then an overwrite; a chain A -> B -> C
//! (`source.replicate_replicas`) keeps every version in order and the origin, and without
//! that setting B's replicas are not sent on. Destinations are read back with boto3 as well
//! as with our client.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use backbeat::queue::kafka::Topics;
use backbeat::s3::ops::head_object::HeadObjectRequest;
use backbeat::s3::Client;
use common::kafka::*;
use common::*;

fn rule_to(site: &str) -> String {
    rules(&[rule("all", 1, "<Prefix></Prefix>", true, site)])
}

/// Rewrites a configuration file written by `setup`.
fn edit_config(st: &Setup, edit: impl FnOnce(String) -> String) {
    let text = std::fs::read_to_string(&st.config).unwrap();
    std::fs::write(&st.config, edit(text)).unwrap();
}

/// `[source]` rescanned every second (and `more` lines added to it).
fn rescan_every_second(text: String, more: &str) -> String {
    text.replace(
        "rules_file = \"rules.xml\"\n",
        &format!("rules_file = \"rules.xml\"\nscan_interval_seconds = 1\n{more}"),
    )
}

/// `[source]` at `to` instead of `from` (the first endpoint of the file is the source's).
fn source_endpoint(text: String, from: &str, to: &str) -> String {
    text.replacen(
        &format!("endpoint = \"{from}\""),
        &format!("endpoint = \"{to}\""),
        1,
    )
}

/// SHA-256 of `bytes` (hex), computed by Python's hashlib: compared with what boto3 read.
fn sha256_hex(bytes: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new(python())
        .args([
            "-c",
            "import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// What boto3 reads of `key`: its versions newest first as (size, sha256, source version).
fn boto3_versions(url: &str, bucket: &str, key: &str) -> Vec<(u64, String, String)> {
    let snap = boto3_snapshot(url, bucket);
    let Some(versions) = snap[key]["versions"].as_array() else {
        return Vec::new();
    };
    let field = |v: &serde_json::Value, f: &str| v[f].as_str().unwrap_or("").to_string();
    versions
        .iter()
        .map(|v| {
            let size = v["size"].as_u64().unwrap_or(u64::MAX);
            (size, field(v, "sha256"), field(v, "source_version"))
        })
        .collect()
}

/// The `backbeat-origin` metadata of each version of `key`, newest first, read with boto3.
fn boto3_origins(url: &str, bucket: &str, key: &str) -> Vec<Option<String>> {
    let script = r#"
import json, sys, boto3
from botocore.config import Config
url, bucket, key = sys.argv[1:4]
s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
    aws_access_key_id="AKTEST", aws_secret_access_key="SKTEST/secret",
    config=Config(s3={"addressing_style": "path"}))
vs = s3.list_object_versions(Bucket=bucket, Prefix=key).get("Versions", [])
vs = [v for v in vs if v["Key"] == key]
vs.sort(key=lambda v: (v["LastModified"], v["IsLatest"]), reverse=True)
out = [s3.head_object(Bucket=bucket, Key=key, VersionId=v["VersionId"])["Metadata"].get("backbeat-origin") for v in vs]
print(json.dumps(out))
"#;
    let out = Command::new(python())
        .args(["-c", script, url, bucket, key])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The `ObjectCreated:Put` event (Kafka key and JSON) of the current object `k` of the
/// unversioned bucket `b`: version `null`, its size and ETag as a HEAD reads them.
fn put_event_of_k(url: &str, b: &str, sequencer: &str) -> (String, String) {
    let head = block_on(async {
        let c = Client::new(endpoint(url), None);
        c.head_object(b, "k", HeadObjectRequest::default())
            .await
            .unwrap()
    });
    let (size, etag) = (head.content_length as usize, head.etag.trim_matches('"'));
    let e = event_with("ObjectCreated:Put", b, "k", "null", size, etag, sequencer);
    (format!("{b}/k"), e)
}

/// Each version of `key` (oldest first) as (version id, user metadata `name`), by HEAD.
fn user_meta_of_versions(
    c: &Client,
    b: &str,
    key: &str,
    name: &str,
) -> Vec<(String, Option<String>)> {
    block_on(async {
        let all = all_versions(c, b).await;
        let mut out = Vec::new();
        for v in all
            .get(key)
            .into_iter()
            .flatten()
            .filter(|v| !v.delete_marker)
        {
            let opts = HeadObjectRequest {
                version_id: Some(&v.version_id),
                ..Default::default()
            };
            let h = c.head_object(b, key, opts).await.unwrap();
            out.push((v.version_id.clone(), h.user_meta(name).map(str::to_string)));
        }
        out.reverse(); // oldest first
        out
    })
}

/// Case 5, engine path (issue 10): on an unversioned source every write is version `null`;
/// an overwrite (a new ETag, a later sequencer) is a new version to replicate, and the first
/// event delivered again afterwards changes nothing. `populate` and `replicate` run as
/// separate processes.
#[test]
fn an_overwrite_on_an_unversioned_source_is_replicated_by_events_and_a_repeat_is_not() {
    let s = servers();
    let (sb, da) = (bucket("unv-ev-src"), bucket("unv-ev-a"));
    let (src, dst) = (
        Client::new(endpoint(&s.source), None),
        Client::new(endpoint(&s.dest), None),
    );
    let (body_a, body_b) = (data(900, 51), data(1300, 52));
    block_on(async {
        make_bucket(&src, &sb, false).await;
        make_bucket(&dst, &da, true).await;
        assert_eq!(
            put_data(&src, &sb, "k", &body_a).await,
            None,
            "an unversioned source"
        );
    });
    let event_a = put_event_of_k(&s.source, &sb, "0A0");
    let st = setup(&sb, &[("site-a", &s.dest, &da)], &rule_to("site-a"), "");
    let topics = Topics::new(&st.prefix);
    let pop = spawn(&["populate"], &st.config);
    let rep = spawn(&["replicate", "--site", "site-a"], &st.config);
    produce(&topics.events, std::slice::from_ref(&event_a));
    wait_until(90, "body A at the destination", || {
        real_versions(&dst, &da, "k").len() == 1
    });
    assert!(
        real_versions(&dst, &da, "k") == [body_a.clone()],
        "body A first"
    );
    block_on(async {
        let src = Client::new(endpoint(&s.source), None);
        put_data(&src, &sb, "k", &body_b).await;
    });
    produce(&topics.events, &[put_event_of_k(&s.source, &sb, "0B0")]);
    wait_until(90, "the overwrite at the destination", || {
        real_versions(&dst, &da, "k").len() >= 2
    });
    assert_a_then_b(&s, &sb, &dst, &da, &body_a, &body_b);
    // The first event again (an at-least-once publisher): superseded by B, not written.
    produce(&topics.events, &[event_a]);
    let status = statuses(&topics.status, 3);
    // Anything more (a copy of the repeat, an entry twice) would land within this while.
    std::thread::sleep(Duration::from_secs(3));
    stop(rep);
    stop(pop);
    assert_eq!(
        topic_len(&topics.status),
        3,
        "three entries completed: {status:?}"
    );
    let repeat = &status[2];
    let reason = repeat["reason"].as_str().unwrap_or("(copied)");
    assert!(
        repeat["status"] == "COMPLETED" && reason.starts_with("superseded"),
        "the repeat of A is older than B: not written: {repeat}"
    );
    assert_a_then_b(&s, &sb, &dst, &da, &body_a, &body_b);
}

/// The destination holds exactly body A then body B (current), by our client and by boto3;
/// boto3 reads the same bytes as the source's current object.
fn assert_a_then_b(s: &Servers, sb: &str, dst: &Client, da: &str, a: &[u8], b: &[u8]) {
    let got = real_versions(dst, da, "k");
    let sizes: Vec<usize> = got.iter().map(Vec::len).collect();
    assert!(got == [a, b], "A then B, once each; sizes {sizes:?}");
    let versions = boto3_versions(&s.dest, da, "k");
    let want = vec![
        (b.len() as u64, sha256_hex(b), "null".to_string()),
        (a.len() as u64, sha256_hex(a), "null".to_string()),
    ];
    assert_eq!(
        versions, want,
        "boto3: B current, then A, each a replica of `null`"
    );
    let source = boto3_versions(&s.source, sb, "k");
    assert_eq!(
        source.len(),
        1,
        "the unversioned source holds one object: {source:?}"
    );
    assert_eq!(
        source[0].1, versions[0].1,
        "boto3: current bytes equal the source's"
    );
}

/// A source without ListObjectVersions (s3s-fs, its own credentials through `[source]
/// profile`), no events, rescanned every second by `run`: its objects are copied, then an
/// overwrite of one of them, and the rescans that follow copy nothing twice.
#[test]
fn run_rescans_a_source_without_list_object_versions() {
    let s = servers();
    let (fs_url, fs_creds) = s3fs();
    let (fb, da) = (bucket("fs-eng-src"), bucket("fs-eng-a"));
    let dst = Client::new(endpoint(&s.dest), None);
    let bodies: Vec<Vec<u8>> = (0..3).map(|i| data(1000 + i, 60 + i as u64)).collect();
    block_on(async {
        let fs = s3fs_client(&fs_url, &fs_creds);
        fs.create_bucket(&fb).await.unwrap();
        make_bucket(&dst, &da, true).await;
        for (i, b) in bodies.iter().enumerate() {
            put_data(&fs, &fb, &format!("k{i}"), b).await;
        }
    });
    let st = setup(&fb, &[("site-a", &s.dest, &da)], &rule_to("site-a"), "");
    edit_config(&st, |t| {
        let t = source_endpoint(t, &s.source, &fs_url);
        rescan_every_second(t, "profile = \"fs\"\n")
    });
    let env = profile_env(st.dir.path(), "fs", &fs_creds);
    let run = spawn_env(&["run"], &st.config, "run", &env);
    for (i, b) in bodies.iter().enumerate() {
        wait_until(120, &format!("k{i} at the destination"), || {
            real_versions(&dst, &da, &format!("k{i}")) == [b.clone()]
        });
    }
    let new_k1 = data(1700, 70);
    block_on(async {
        let fs = s3fs_client(&fs_url, &fs_creds);
        put_data(&fs, &fb, "k1", &new_k1).await;
    });
    wait_until(120, "the overwrite of k1 at the destination", || {
        real_versions(&dst, &da, "k1").len() >= 2
    });
    // More rescans find everything present.
    std::thread::sleep(Duration::from_secs(5));
    stop(run);
    let mut want: Vec<Vec<Vec<u8>>> = bodies.into_iter().map(|b| vec![b]).collect();
    want[1].push(new_k1);
    assert_keys_hold(&s.dest, &da, &want);
}

/// Bucket `db` at `url` holds exactly the keys `k0`, `k1`... with, per key, the versions of
/// `want` (oldest first), each a replica of version `null`: by our client and by boto3.
fn assert_keys_hold(url: &str, db: &str, want: &[Vec<Vec<u8>>]) {
    let dst = Client::new(endpoint(url), None);
    for (i, bodies) in want.iter().enumerate() {
        let key = format!("k{i}");
        let got = real_versions(&dst, db, &key);
        let sizes: Vec<usize> = got.iter().map(Vec::len).collect();
        assert!(
            got == *bodies,
            "{key}: each version once, in order; sizes {sizes:?}"
        );
        let boto: Vec<_> = bodies
            .iter()
            .rev() // newest first
            .map(|b| (b.len() as u64, sha256_hex(b), "null".to_string()))
            .collect();
        assert_eq!(boto3_versions(url, db, &key), boto, "{key} (boto3)");
    }
    let keys = boto3_snapshot(url, db).as_object().unwrap().len();
    assert_eq!(keys, want.len(), "keys at the destination (boto3)");
}

/// A chain A -> B -> C: engine 1 rescans A (source server) to B (destination server),
/// engine 2 rescans B to C (source server) with `replicate_replicas`; engine 3 rescans B to
/// C2 without it. C holds A's two versions in order, each naming A's bucket and version as
/// its origin; C2 stays empty, B's replicas superseded as replicas.
#[test]
fn a_chain_keeps_the_origin_and_replicas_go_on_only_when_asked() {
    let s = servers();
    let (ba, bb, bc, bc2) = (
        bucket("chain-a"),
        bucket("chain-b"),
        bucket("chain-c"),
        bucket("chain-c2"),
    );
    let (src, dst) = (
        Client::new(endpoint(&s.source), None),
        Client::new(endpoint(&s.dest), None),
    );
    let bodies = [data(1000, 81), data(1100, 82)];
    let va: Vec<String> = block_on(async {
        for (c, b) in [(&src, &ba), (&dst, &bb), (&src, &bc), (&src, &bc2)] {
            make_bucket(c, b, true).await;
        }
        let mut va = Vec::new();
        for body in &bodies {
            va.push(put_version(&src, &ba, "k", body, &[]).await);
        }
        va
    });
    let a_to_b = setup(&ba, &[("site-b", &s.dest, &bb)], &rule_to("site-b"), "");
    edit_config(&a_to_b, |t| rescan_every_second(t, ""));
    let b_to = |c: &str, more: &str| {
        let st = setup(&bb, &[("site-c", &s.source, c)], &rule_to("site-c"), "");
        edit_config(&st, |t| {
            rescan_every_second(source_endpoint(t, &s.source, &s.dest), more)
        });
        st
    };
    let b_to_c = b_to(&bc, "replicate_replicas = true\n");
    let b_to_c2 = b_to(&bc2, "");
    let one = spawn_named(&["run"], &a_to_b.config, "a-to-b");
    let two = spawn_named(&["run"], &b_to_c.config, "b-to-c");
    let three = spawn_named(&["run"], &b_to_c2.config, "b-to-c2");
    wait_until(120, "both versions at C", || {
        real_versions(&src, &bc, "k").len() >= 2
    });
    let refused = statuses(&Topics::new(&b_to_c2.prefix).status, 2);
    std::thread::sleep(Duration::from_secs(5));
    stop(one);
    stop(two);
    stop(three);
    assert_chain(&s, (&ba, &bb, &bc), &va, &bodies);
    assert_replicas_not_sent_on(&refused, &s.source, &bc2);
}

/// The engine without `replicate_replicas` completed B's replicas as replicas (the status
/// records `refused`) and its destination bucket `bc2` at `url` is empty.
fn assert_replicas_not_sent_on(refused: &[serde_json::Value], url: &str, bc2: &str) {
    let is_replica_refusal = |v: &serde_json::Value| {
        v["status"] == "COMPLETED"
            && v["reason"]
                .as_str()
                .is_some_and(|r| r.contains("itself a replica"))
    };
    assert!(
        refused.len() >= 2,
        "engine 3 handled B's replicas: {refused:?}"
    );
    assert!(refused.iter().all(is_replica_refusal), "{refused:?}");
    let c2 = block_on(all_versions(&Client::new(endpoint(url), None), bc2));
    assert!(
        c2.is_empty(),
        "C2 (no replicate_replicas) stays empty: {c2:?}"
    );
}

/// C holds A's versions in order with A's bytes, each the replica of B's version at the
/// same place and naming A's site, bucket and version as its origin (by our HEAD and by
/// boto3).
fn assert_chain(s: &Servers, (ba, bb, bc): (&str, &str, &str), va: &[String], bodies: &[Vec<u8>]) {
    let (src, dst) = (
        Client::new(endpoint(&s.source), None),
        Client::new(endpoint(&s.dest), None),
    );
    let got = real_versions(&src, bc, "k");
    let sizes: Vec<usize> = got.iter().map(Vec::len).collect();
    assert!(
        got == bodies,
        "C: both versions once, in order; sizes {sizes:?}"
    );
    let site_a = s.source.trim_start_matches("http://");
    let origins: Vec<Option<String>> = va
        .iter()
        .map(|v| Some(format!("{site_a}/{ba}/{v}")))
        .collect();
    let at_b = user_meta_of_versions(&dst, bb, "k", "backbeat-origin");
    let at_c = user_meta_of_versions(&src, bc, "k", "backbeat-origin");
    let only =
        |l: &[(String, Option<String>)]| l.iter().map(|(_, o)| o.clone()).collect::<Vec<_>>();
    assert_eq!(only(&at_b), origins, "B's origins");
    assert_eq!(
        only(&at_c),
        origins,
        "C's origins: A's site, bucket and version"
    );
    let mut newest_first = origins.clone();
    newest_first.reverse();
    assert_eq!(
        boto3_origins(&s.source, bc, "k"),
        newest_first,
        "C's origins (boto3)"
    );
    let b_versions: Vec<String> = at_b.iter().rev().map(|(v, _)| v.clone()).collect();
    let want: Vec<(u64, String, String)> = bodies
        .iter()
        .rev()
        .zip(b_versions)
        .map(|(b, v)| (b.len() as u64, sha256_hex(b), v))
        .collect();
    assert_eq!(
        boto3_versions(&s.source, bc, "k"),
        want,
        "C replicates B's versions (boto3)"
    );
}
