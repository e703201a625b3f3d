//! Incremental ingestion through Kafka (nisshi) from a moto source that publishes no events,
//! every request to it counted by the test proxy: a first pass enqueues every version; after
//! 10 changes (overwrites, new keys, delete markers) the next pass enqueues exactly those 10
//! and sends no HEAD, only its listing pages; a pass killed midway resumes after its last
//! page without enqueueing again what it had done; pause and resume per bucket; and what was
//! enqueued reaches the site (boto3 reads both sides).

mod common;

use backbeat::queue::kafka::Topics;
use common::kafka::*;
use common::proxy::Proxy;
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// A configuration ingesting `sb` through the proxy, its site paused when `paused` (the
/// entries stay on the replication topic, counted), passes `interval` seconds apart.
fn config(sb: &str, db: &str, proxy: &Proxy, port: u16, interval: u64) -> Setup {
    let s = servers();
    let st = setup(
        sb,
        &[("site-a", &s.dest, db)],
        &rules(&[rule("all", 1, "<Prefix></Prefix>", true, "site-a")]),
        &format!("\n[api]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let state = st.dir.path().join("ingest");
    let toml = std::fs::read_to_string(&st.config).unwrap().replacen(
        &format!("endpoint = \"{}\"\nbuckets", s.source),
        &format!(
            "endpoint = \"{}\"\ningest_buckets = [\"{sb}\"]\ningest_interval_seconds = {interval}\ningest_state_dir = \"{}\"\nbuckets",
            proxy.url,
            state.display()
        ),
        1,
    );
    std::fs::write(&st.config, toml).unwrap();
    st
}

/// Reuses `first`'s topics and state directory in `next` (a restart of the same engine).
fn same_engine(first: &Setup, next: &Setup) {
    let toml = std::fs::read_to_string(&next.config)
        .unwrap()
        .replace(&next.prefix, &first.prefix)
        .replace(
            &next.dir.path().join("ingest").display().to_string(),
            &first.dir.path().join("ingest").display().to_string(),
        );
    std::fs::write(&next.config, toml).unwrap();
}

fn pause_site(topics: &Topics, site: &str) {
    produce(
        &topics.control,
        &[(site.to_string(), r#"{"paused":true}"#.into())],
    );
}

fn ingestion(port: u16, bucket: &str) -> Value {
    let (code, body) = http_get(port, &format!("/_/ingestion/status/{bucket}"), None);
    assert_eq!(code, 200, "{body}");
    let doc: Value = serde_json::from_str(&body).unwrap();
    doc["buckets"][bucket].clone()
}

/// Waits until this process finished pass `n` over `bucket`; its figures.
fn pass_done(port: u16, bucket: &str, n: u64, secs: u64) -> Value {
    let mut last = Value::Null;
    wait_until(secs, &format!("ingestion pass {n} done"), || {
        last = ingestion(port, bucket);
        last["pass"]["last_pass"]["pass"] == json!(n)
    });
    last["pass"].clone()
}

/// (key, versionId) of the entries on the replication topic.
fn entries(topics: &Topics) -> Vec<(String, String)> {
    read_until_quiet(&topics.replication, std::time::Duration::from_secs(3))
        .into_iter()
        .map(|(_, v)| {
            let e: Value = serde_json::from_str(&v).unwrap();
            (
                e["key"].as_str().unwrap().into(),
                e["versionId"].as_str().unwrap().into(),
            )
        })
        .collect()
}

fn put(url: &str, bucket: &str, key: &str) -> String {
    let v = fid(
        url,
        "put",
        json!({ "bucket": bucket, "key": key, "size": 64 }),
    );
    v["version_id"].as_str().unwrap().to_string()
}

#[test]
fn after_a_first_pass_only_the_changes_are_enqueued_and_no_head_is_sent() {
    let s = servers();
    let (sb, db) = (bucket("ing-src"), bucket("ing-dst"));
    let n: u64 = 20_000;
    fid(&s.source, "bucket", json!({ "bucket": sb }));
    fid(&s.dest, "bucket", json!({ "bucket": db }));
    fid(
        &s.source,
        "fill",
        json!({ "bucket": sb, "prefix": "k/", "count": n, "size": 16 }),
    );
    let proxy = Proxy::start(&s.source, false);
    let port = free_port();
    let st = config(&sb, &db, &proxy, port, 3600);
    let topics = Topics::new(&st.prefix);
    pause_site(&topics, "site-a");
    let run = spawn(&["run"], &st.config);
    wait_until(60, "the API ready", || api_ready(port));
    let mut during = Value::Null;
    wait_until(300, "the first pass under way, with its progress", || {
        during = ingestion(port, &sb)["pass"].clone();
        during["state"] == json!("listing") && during["keys"].as_u64().unwrap_or(0) > 0
    });
    let fraction = during["fraction"]
        .as_f64()
        .expect("a first pass says how far it is");
    assert!(fraction > 0.0 && fraction <= 1.0, "{during}");
    assert!(during["eta_seconds"].is_u64(), "{during}");
    let first = pass_done(port, &sb, 1, 600);
    assert_eq!(
        (first["keys"].as_u64(), first["enqueued"].as_u64()),
        (Some(n), Some(n)),
        "{first}"
    );
    let pages = first["last_pass"]["pages"].as_u64().unwrap();
    assert!(pages >= n / 1000 && pages <= n / 1000 + 1, "{first}");
    let enqueued = entries(&topics);
    assert_eq!(enqueued.len() as u64, n, "every version once");
    stop(run);

    // 10 changes: 4 overwrites, 3 new keys, 3 delete markers.
    let mut changed = BTreeSet::new();
    for i in [1, 500, 1001, n - 1] {
        let k = format!("k/{i:06}");
        changed.insert((k.clone(), put(&s.source, &sb, &k)));
    }
    for k in ["a-new", "k/000000-new", "z-new"] {
        changed.insert((k.to_string(), put(&s.source, &sb, k)));
    }
    for i in [2, 700, n - 2] {
        let k = format!("k/{i:06}");
        let dm = fid(&s.source, "unlink", json!({ "bucket": sb, "key": k }));
        changed.insert((k, dm["version_id"].as_str().unwrap().to_string()));
    }
    proxy.faults.log.lock().unwrap().clear();
    let port = free_port();
    let st2 = config(&sb, &db, &proxy, port, 2);
    same_engine(&st, &st2);
    let run = spawn(&["run"], &st2.config);
    wait_until(60, "the API ready", || api_ready(port));
    let second = pass_done(port, &sb, 2, 600);
    // Taken at once: the next pass starts 2 s after this one ended.
    let lines = proxy.request_lines();
    stop(run);
    assert_eq!(second["last_pass"]["enqueued"], json!(10), "{second}");
    let all = entries(&topics);
    let before: BTreeSet<&(String, String)> = enqueued.iter().collect();
    let new: BTreeSet<(String, String)> = all
        .iter()
        .filter(|e| !before.contains(e))
        .cloned()
        .collect();
    assert_eq!(all.len() as u64, n + 10, "exactly the 10 changes enqueued");
    assert_eq!(new, changed);
    let heads: Vec<&String> = lines.iter().filter(|l| l.starts_with("HEAD ")).collect();
    assert!(heads.is_empty(), "no HEAD: {heads:?}");
    let listings = lines.iter().filter(|l| l.contains("?versions")).count() as u64;
    let pages = second["last_pass"]["pages"].as_u64().unwrap();
    assert_eq!(listings, pages, "the pass's requests are its listing pages");
    eprintln!(
        "second pass: {} keys, {pages} pages, {listings} listing requests, {} requests to the source in all",
        second["last_pass"]["keys"],
        lines.len()
    );
    let per_object = lines.iter().filter(|l| {
        let path = l.split(' ').nth(1).unwrap_or("");
        path.starts_with(&format!("/{sb}/")) && !path.contains('?')
    });
    assert_eq!(per_object.count(), 0, "no request per key: {lines:?}");
}

#[test]
fn a_pass_killed_midway_resumes_after_its_last_page_and_pause_holds_it() {
    let s = servers();
    let (sb, db) = (bucket("ingk-src"), bucket("ingk-dst"));
    let n: u64 = 4000;
    fid(&s.source, "bucket", json!({ "bucket": sb }));
    fid(&s.dest, "bucket", json!({ "bucket": db }));
    fid(
        &s.source,
        "fill",
        json!({ "bucket": sb, "prefix": "p/", "count": n, "size": 8 }),
    );
    let proxy = Proxy::start(&s.source, false);
    let port = free_port();
    let st = config(&sb, &db, &proxy, port, 3600);
    let topics = Topics::new(&st.prefix);
    pause_site(&topics, "site-a");
    let cursor = st.dir.path().join("ingest").join(&sb).join("cursor");
    let mut run = spawn(&["run"], &st.config);
    let mut pages_at_kill = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while pages_at_kill < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "no page done in 300 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
        let c: Option<Value> = std::fs::read(&cursor)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        pages_at_kill = c.and_then(|c| c["pages"].as_u64()).unwrap_or(0);
    }
    run.kill().unwrap();
    run.wait().unwrap();
    drop(run);
    let before: Vec<(String, String)> = entries(&topics);
    assert!(
        (before.len() as u64) < n,
        "killed midway: {} of {n}",
        before.len()
    );

    // Paused before it starts again: no page is listed.
    let port = free_port();
    let st2 = config(&sb, &db, &proxy, port, 3600);
    same_engine(&st, &st2);
    let key = backbeat::queue::control::ingestion_key(&sb);
    produce(
        &topics.control,
        &[(key.clone(), r#"{"paused":true}"#.into())],
    );
    proxy.faults.log.lock().unwrap().clear();
    let run = spawn(&["run"], &st2.config);
    wait_until(60, "the API ready", || api_ready(port));
    wait_until(30, "ingestion paused", || {
        ingestion(port, &sb)["control"] == json!("disabled")
    });
    std::thread::sleep(std::time::Duration::from_secs(3));
    let listed = proxy
        .request_lines()
        .iter()
        .filter(|l| l.contains("?versions"))
        .count();
    assert_eq!(listed, 0, "a paused bucket is not listed");
    let api = format!("127.0.0.1:{port}");
    let (code, out, err) = backbeat(&["ingestion", "status", &sb, "--api", &api]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("{sb}: disabled")), "{out}");
    let (code, out, err) = backbeat(&["ingestion", "resume", &sb, "--api", &api]);
    assert_eq!(
        (code, out.trim()),
        (0, format!("ingestion of {sb}: resumed").as_str()),
        "{err}"
    );
    let done = pass_done(port, &sb, 1, 300);
    assert_eq!(done["keys"].as_u64(), Some(n), "{done}");
    let all = entries(&topics);
    let distinct: BTreeSet<&(String, String)> = all.iter().collect();
    assert_eq!(distinct.len() as u64, n, "every version enqueued");
    let again = all.len() - distinct.len();
    eprintln!(
        "killed after {pages_at_kill} pages with {} of {n} entries enqueued; {again} enqueued again after the restart",
        before.len()
    );
    assert!(
        again <= 1000,
        "{again} enqueued again: at most the page under way when killed"
    );
    let resumed_requests = proxy
        .request_lines()
        .iter()
        .filter(|l| l.contains("?versions"))
        .count() as u64;
    assert!(
        resumed_requests <= n / 1000 + 1 - (pages_at_kill - 1),
        "resumed after its last page: {resumed_requests} listing requests after {pages_at_kill} pages"
    );

    // What was enqueued reaches the site once it resumes.
    let (code, body) = http_req(port, "POST", "/_/crr/resume/site-a", "");
    assert_eq!(code, 200, "{body}");
    let count = || {
        block_on(async {
            let c = backbeat::s3::Client::new(endpoint(&s.dest), None);
            all_versions(&c, &db).await.len() as u64
        })
    };
    wait_until(300, "every version at the site", || count() == n);
    assert_replicated_by_boto3(&s.source, &sb, &s.dest, &db);
    stop(run);
}
