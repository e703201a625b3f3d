//! Transient source buckets through Kafka (nisshi) between moto servers, read back with boto3:
//! a version replicated to two sites is deleted from the source only once both reported it
//! COMPLETED (not while one is paused), their replicas left whole; a version a site has not
//! completed (its bucket missing: failing, replayed) stays at the source.

mod common;

use backbeat::queue::kafka::Topics;
use common::kafka::*;
use common::*;
use serde_json::{json, Value};

/// The versions of `key` in `bucket` as boto3 lists them (newest first). The transient
/// deleter may remove one between the listing and its HEAD: such a version counts as gone.
fn versions_of(url: &str, bucket: &str, key: &str) -> Vec<Value> {
    let what = json!({ "bucket": bucket, "prefix": key, "vanishing": true });
    let all = fid(url, "describe", what);
    all[key].as_array().cloned().unwrap_or_default()
}

fn put(url: &str, bucket: &str, key: &str, size: usize) -> String {
    let v = fid(
        url,
        "put",
        json!({ "bucket": bucket, "key": key, "size": size }),
    );
    v["version_id"].as_str().unwrap().to_string()
}

fn metric(port: u16, name: &str) -> f64 {
    let (code, text) = http_get(port, "/metrics", None);
    assert_eq!(code, 200, "{text}");
    let prefix = format!("{name} ");
    let line = text.lines().find(|l| l.starts_with(&prefix));
    line.and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

#[test]
fn a_version_leaves_the_source_once_every_site_holds_it() {
    let s = servers();
    let (sb, da, db, missing) = (
        bucket("tr-src"),
        bucket("tr-a"),
        bucket("tr-b"),
        bucket("tr-missing"),
    );
    fid(&s.source, "bucket", json!({ "bucket": sb }));
    fid(&s.dest, "bucket", json!({ "bucket": da }));
    fid(&s.dest, "bucket", json!({ "bucket": db }));
    let port = free_port();
    let rules = rules(&[
        rule("all", 1, "<Prefix></Prefix>", true, "site-a"),
        rule("two", 2, "<Prefix>two/</Prefix>", true, "site-b"),
        rule("bad", 3, "<Prefix>bad/</Prefix>", true, "site-c"),
    ]);
    let st = setup(
        &sb,
        &[
            ("site-a", &s.dest, &da),
            ("site-b", &s.dest, &db),
            ("site-c", &s.dest, &missing),
        ],
        &rules,
        &format!("\n[api]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let toml = std::fs::read_to_string(&st.config).unwrap().replacen(
        "rules_file = \"rules.xml\"\n",
        &format!("rules_file = \"rules.xml\"\ntransient_buckets = [\"{sb}\"]\ntransient_grace_seconds = 1\n"),
        1,
    );
    std::fs::write(&st.config, toml).unwrap();
    let topics = Topics::new(&st.prefix);
    produce(
        &topics.control,
        &[("site-b".into(), r#"{"paused":true}"#.into())],
    );
    let run = spawn(&["run"], &st.config);
    let two = put(&s.source, &sb, "two/k", 1000);
    let bad = put(&s.source, &sb, "bad/k", 500);
    for (k, v, n) in [("two/k", &two, 1000), ("bad/k", &bad, 500)] {
        let e = event("ObjectCreated:Put", &sb, k, v, n);
        produce(&topics.events, &[(format!("{sb}/{k}"), e)]);
    }
    wait_until(90, "both versions at site a", || {
        versions_of(&s.dest, &da, "two/k").len() == 1
            && versions_of(&s.dest, &da, "bad/k").len() == 1
    });
    wait_until(90, "site c's outcome for bad/k", || {
        read_until_quiet(&topics.status, std::time::Duration::from_secs(1))
            .iter()
            .any(|(_, v)| {
                let e: Value = serde_json::from_str(v).unwrap();
                e["site"] == json!("site-c")
                    && e["key"] == json!("bad/k")
                    && e["status"] != json!("COMPLETED")
            })
    });
    wait_until(60, "the API ready", || api_ready(port));
    // Site b paused, site c failing (replayed): past the grace period, both stay.
    std::thread::sleep(std::time::Duration::from_secs(5));
    assert_eq!(
        versions_of(&s.source, &sb, "two/k").len(),
        1,
        "not while site b is paused"
    );
    assert_eq!(versions_of(&s.source, &sb, "bad/k").len(), 1);
    assert!(metric(port, "backbeat_transient_versions_waiting") >= 2.0);

    let (code, body) = http_req(port, "POST", "/_/crr/resume/site-b", "");
    assert_eq!(code, 200, "{body}");
    wait_until(90, "two/k deleted from the source", || {
        versions_of(&s.source, &sb, "two/k").is_empty()
    });
    for d in [&da, &db] {
        let r = versions_of(&s.dest, d, "two/k");
        assert_eq!(r.len(), 1, "the replica at {d} stays: {r:?}");
        assert_eq!(
            (&r[0]["source_version"], &r[0]["size"]),
            (&json!(two), &json!(1000))
        );
    }
    assert_eq!(
        metric(port, "backbeat_transient_bytes_reclaimed_total"),
        1000.0
    );
    assert_eq!(
        metric(port, "backbeat_transient_versions_reclaimed_total"),
        1.0
    );
    std::thread::sleep(std::time::Duration::from_secs(3));
    let kept = versions_of(&s.source, &sb, "bad/k");
    assert_eq!(
        kept.len(),
        1,
        "a version a site has not completed stays at the source"
    );
    assert_eq!(kept[0]["version_id"], json!(bad));
    stop(run);
}
