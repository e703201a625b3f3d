//! What a replica carries beyond its bytes, through Kafka (nisshi) between moto servers, read
//! back with boto3: tag, ACL, retention and legal-hold changes applied to the replica of
//! that version without copying it again; Object Lock, SSE-KMS with a site key and a site's
//! storage class carried; a locked version refused by a destination without Object Lock,
//! parked with the reason.

mod common;

use backbeat::queue::kafka::Topics;
use common::kafka::*;
use common::*;
use serde_json::{json, Value};

/// The replicas of `key` in `bucket` (newest first), as boto3 reads them.
fn replicas(url: &str, bucket: &str, key: &str) -> Vec<Value> {
    let all = fid(url, "describe", json!({ "bucket": bucket }));
    all[key].as_array().cloned().unwrap_or_default()
}

/// Waits until the replicas of `key` satisfy `f`, and returns them.
fn wait_replicas(
    url: &str,
    bucket: &str,
    key: &str,
    what: &str,
    f: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let mut got = Vec::new();
    wait_until(90, what, || {
        got = replicas(url, bucket, key);
        f(&got)
    });
    got
}

fn announce(topics: &Topics, name: &str, bucket: &str, key: &str, vid: &str, size: usize) {
    let e = event(name, bucket, key, vid, size);
    produce(&topics.events, &[(format!("{bucket}/{key}"), e)]);
}

fn metric(port: u16, name: &str, site: &str) -> f64 {
    let (code, text) = http_get(port, "/metrics", None);
    assert_eq!(code, 200, "{text}");
    value(&text, name, site)
}

/// A sample of a Prometheus text: `name{site="SITE"...} VALUE`.
fn value(text: &str, name: &str, site: &str) -> f64 {
    let prefix = format!("{name}{{");
    text.lines()
        .filter(|l| l.starts_with(&prefix) && l.contains(&format!("site=\"{site}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .next()
        .unwrap_or_else(|| panic!("no {name} for site {site} in /metrics"))
}

#[test]
fn tag_and_acl_changes_update_the_replica_without_a_copy() {
    let s = servers();
    let (sb, db) = (bucket("fid-src"), bucket("fid-dst"));
    fid(&s.source, "bucket", json!({ "bucket": sb }));
    fid(&s.dest, "bucket", json!({ "bucket": db }));
    let port = free_port();
    let st = setup(
        &sb,
        &[("site-a", &s.dest, &db)],
        &rules(&[rule("all", 1, "<Prefix></Prefix>", true, "site-a")]),
        &format!("\n[api]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let config = std::fs::read_to_string(&st.config).unwrap();
    let config = config.replace(
        "verify_after_write = true\n",
        "verify_after_write = true\nacl = \"copy\"\n",
    );
    std::fs::write(&st.config, config).unwrap();
    let topics = Topics::new(&st.prefix);
    let run = spawn(&["run"], &st.config);
    let put = json!({ "bucket": sb, "key": "doc", "size": 1000, "opts": { "Tagging": "team=a" } });
    let vid = fid(&s.source, "put", put)["version_id"]
        .as_str()
        .unwrap()
        .to_string();
    announce(&topics, "ObjectCreated:Put", &sb, "doc", &vid, 1000);
    let first = wait_replicas(&s.dest, &db, "doc", "the replica", |r| r.len() == 1);
    let replica_vid = first[0]["version_id"].clone();
    assert_eq!(first[0]["source_version"], json!(vid));
    assert_eq!(first[0]["tags"], json!([["team", "a"]]));
    wait_until(60, "the API ready", || api_ready(port));
    let copied = metric(port, "backbeat_bytes_copied_total", "site-a");
    assert_eq!(copied, 1000.0);

    let at = |extra: Value| {
        let mut a = json!({ "bucket": sb, "key": "doc", "version_id": vid });
        a.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        a
    };
    fid(
        &s.source,
        "tags",
        at(json!({ "tags": [["team", "b"], ["env", "prod"]] })),
    );
    announce(&topics, "ObjectTagging:Put", &sb, "doc", &vid, 0);
    let r = wait_replicas(&s.dest, &db, "doc", "the new tags", |r| {
        r[0]["tags"] == json!([["env", "prod"], ["team", "b"]])
    });
    assert_eq!(r.len(), 1, "a tag change writes no version: {r:?}");
    assert_eq!(r[0]["version_id"], replica_vid);

    fid(&s.source, "acl", at(json!({ "acl": "public-read" })));
    announce(&topics, "ObjectAcl:Put", &sb, "doc", &vid, 0);
    let all_users = json!(["READ", "http://acs.amazonaws.com/groups/global/AllUsers"]);
    let r = wait_replicas(&s.dest, &db, "doc", "the new ACL", |r| {
        r[0]["grants"].as_array().unwrap().contains(&all_users)
    });
    let source = replicas(&s.source, &sb, "doc");
    assert_eq!(r[0]["grants"], source[0]["grants"], "the source's grants");

    // MinIO's name for a tag removal.
    fid(&s.source, "tags", at(json!({ "tags": [] })));
    announce(&topics, "ObjectCreated:DeleteTagging", &sb, "doc", &vid, 0);
    let r = wait_replicas(&s.dest, &db, "doc", "no tags", |r| {
        r[0]["tags"] == json!([])
    });
    assert_eq!((r.len(), &r[0]["version_id"]), (1, &replica_vid));
    assert_eq!(r[0]["size"], json!(1000));
    wait_until(30, "three metadata updates counted", || {
        metric(port, "backbeat_metadata_updates_total", "site-a") == 3.0
    });
    let copied = metric(port, "backbeat_bytes_copied_total", "site-a");
    assert_eq!(copied, 1000.0, "no byte copied again");
    assert_eq!(
        metric(port, "backbeat_versions_copied_total", "site-a"),
        1.0
    );
    stop(run);
}

#[test]
fn object_lock_sse_kms_and_storage_class_reach_the_replica() {
    let s = servers();
    let (sb, locked_db, plain_db) = (bucket("lk-src"), bucket("lk-dst"), bucket("lk-plain"));
    fid(&s.source, "bucket", json!({ "bucket": sb, "lock": true }));
    fid(
        &s.dest,
        "bucket",
        json!({ "bucket": locked_db, "lock": true }),
    );
    fid(&s.dest, "bucket", json!({ "bucket": plain_db }));
    let key_id = "arn:aws:kms:us-east-1:123456789012:key/dr-site";
    let st = setup(
        &sb,
        &[
            ("site-lock", &s.dest, &locked_db),
            ("site-plain", &s.dest, &plain_db),
        ],
        &rules(&[rule(
            "all",
            1,
            "<Prefix></Prefix>",
            true,
            "site-lock,site-plain",
        )]),
        "",
    );
    let config = std::fs::read_to_string(&st.config).unwrap().replacen(
        &format!("buckets = {{ {sb} = \"{locked_db}\" }}\n"),
        &format!("buckets = {{ {sb} = \"{locked_db}\" }}\nstorage_class = \"STANDARD_IA\"\nsse = \"aws:kms\"\nkms_key_id = \"{key_id}\"\n"),
        1,
    );
    let config = config.replacen(
        &format!("buckets = {{ {sb} = \"{plain_db}\" }}\n"),
        &format!("buckets = {{ {sb} = \"{plain_db}\" }}\nacl = \"public-read\"\n"),
        1,
    );
    assert!(
        config.contains("STANDARD_IA") && config.contains("public-read"),
        "{config}"
    );
    std::fs::write(&st.config, config).unwrap();
    let topics = Topics::new(&st.prefix);
    let run = spawn(&["run"], &st.config);
    let lock = json!({ "ObjectLockMode": "GOVERNANCE", "RetainDays": 1, "ObjectLockLegalHoldStatus": "ON", "ServerSideEncryption": "AES256" });
    let put = json!({ "bucket": sb, "key": "locked", "size": 3000, "opts": lock });
    let locked_vid = fid(&s.source, "put", put)["version_id"]
        .as_str()
        .unwrap()
        .to_string();
    let put = json!({ "bucket": sb, "key": "plain", "size": 2000, "opts": {} });
    let plain_vid = fid(&s.source, "put", put)["version_id"]
        .as_str()
        .unwrap()
        .to_string();
    announce(
        &topics,
        "ObjectCreated:Put",
        &sb,
        "locked",
        &locked_vid,
        3000,
    );
    announce(&topics, "ObjectCreated:Put", &sb, "plain", &plain_vid, 2000);

    let source = replicas(&s.source, &sb, "locked").remove(0);
    let r = wait_replicas(&s.dest, &locked_db, "locked", "the locked replica", |r| {
        r.len() == 1
    });
    let replica = &r[0];
    assert_eq!(replica["lock_mode"], json!("GOVERNANCE"));
    assert_eq!(replica["retain_until"], source["retain_until"]);
    assert_eq!(replica["legal_hold"], json!("ON"));
    assert_eq!(
        replica["sse"],
        json!("aws:kms"),
        "the site's encryption, not the source's"
    );
    assert_eq!(replica["kms_key_id"], json!(key_id));
    assert_eq!(replica["storage_class"], json!("STANDARD_IA"));
    let rvid = replica["version_id"].as_str().unwrap().to_string();
    let refused = fid(
        &s.dest,
        "delete",
        json!({ "bucket": locked_db, "key": "locked", "version_id": rvid }),
    );
    assert_eq!(
        refused["error"],
        json!("AccessDenied"),
        "the destination keeps the lock"
    );
    let plain = wait_replicas(&s.dest, &locked_db, "plain", "the plain replica", |r| {
        r.len() == 1
    });
    assert_eq!(plain[0]["lock_mode"], Value::Null);
    assert_eq!(plain[0]["storage_class"], json!("STANDARD_IA"));

    // Lock changes at the source follow (MinIO's event names).
    let at = json!({ "bucket": sb, "key": "locked", "version_id": locked_vid });
    let mut off = at.clone();
    off["on"] = json!(false);
    fid(&s.source, "legalhold", off);
    announce(
        &topics,
        "ObjectCreated:PutLegalHold",
        &sb,
        "locked",
        &locked_vid,
        0,
    );
    let mut longer = at.clone();
    longer["mode"] = json!("GOVERNANCE");
    longer["days"] = json!(3);
    fid(&s.source, "retention", longer);
    announce(
        &topics,
        "ObjectCreated:PutRetention",
        &sb,
        "locked",
        &locked_vid,
        0,
    );
    let source = replicas(&s.source, &sb, "locked").remove(0);
    assert_ne!(source["retain_until"], replica["retain_until"]);
    let r = wait_replicas(
        &s.dest,
        &locked_db,
        "locked",
        "the new retention and no legal hold",
        |r| r[0]["legal_hold"] == json!("OFF") && r[0]["retain_until"] == source["retain_until"],
    );
    assert_eq!(
        (r.len(), r[0]["version_id"].as_str()),
        (1, Some(rvid.as_str()))
    );

    // A destination without Object Lock: the locked version is parked, named, the other
    // replicated.
    let plain = wait_replicas(
        &s.dest,
        &plain_db,
        "plain",
        "plain at the site without lock",
        |r| r.len() == 1,
    );
    let all_users = json!(["READ", "http://acs.amazonaws.com/groups/global/AllUsers"]);
    assert!(
        plain[0]["grants"].as_array().unwrap().contains(&all_users),
        "the site's canned ACL: {plain:?}"
    );
    // The copy's record; the lock changes' metadata entries, finding no replica there, try
    // the copy too and are refused alike (their records keyed `.../metadata`).
    let copy_key = format!("{sb}/locked/{locked_vid}/site-plain");
    let failed = read_until_quiet(&topics.failed, std::time::Duration::from_secs(3));
    let keys: Vec<&str> = failed.iter().map(|(k, _)| k.as_str()).collect();
    assert!(
        keys.iter().all(|k| k.starts_with(&copy_key)),
        "only the locked version at site-plain: {keys:?}"
    );
    let (_, record) = failed
        .iter()
        .find(|(k, _)| *k == copy_key)
        .expect("the copy's record");
    let record: Value = serde_json::from_str(record).unwrap();
    assert_eq!(
        record["error"]["code"],
        json!("DestinationWithoutObjectLock"),
        "{record}"
    );
    let message = record["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&plain_db) && message.contains("Object Lock"),
        "{message}"
    );
    assert!(replicas(&s.dest, &plain_db, "locked").is_empty());
    stop(run);
}

/// Samples of a counter per site: (seconds since the start, value).
type Samples = Vec<(f64, f64)>;

/// The highest rate over any window of at least `window` seconds between two samples.
fn max_rate(samples: &Samples, window: f64) -> f64 {
    let mut best: f64 = 0.0;
    for (i, (t0, b0)) in samples.iter().enumerate() {
        if let Some((t1, b1)) = samples[i..].iter().find(|(t, _)| t - t0 >= window) {
            best = best.max((b1 - b0) / (t1 - t0));
        }
    }
    best
}

/// When the counter was last seen still (the copy started after) and when it was first
/// seen at `total` (seconds since the start).
fn span(samples: &Samples, total: f64) -> (f64, f64) {
    let first = samples
        .iter()
        .rev()
        .find(|(_, b)| *b == 0.0)
        .map_or(0.0, |s| s.0);
    let last = samples
        .iter()
        .find(|(_, b)| *b >= total)
        .map(|s| s.0)
        .unwrap();
    (first, last)
}

#[test]
fn a_bandwidth_limit_holds_one_site_to_its_rate_and_not_the_other() {
    const MIB: f64 = 1024.0 * 1024.0;
    let s = servers();
    let (sb, slow_db, fast_db) = (bucket("bw-src"), bucket("bw-slow"), bucket("bw-fast"));
    for (url, b) in [(&s.source, &sb), (&s.dest, &slow_db), (&s.dest, &fast_db)] {
        fid(url, "bucket", json!({ "bucket": b }));
    }
    let port = free_port();
    let st = setup(
        &sb,
        &[
            ("site-slow", &s.dest, &slow_db),
            ("site-fast", &s.dest, &fast_db),
        ],
        &rules(&[rule(
            "all",
            1,
            "<Prefix></Prefix>",
            true,
            "site-slow,site-fast",
        )]),
        &format!("\n[api]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let config = std::fs::read_to_string(&st.config).unwrap().replacen(
        &format!("buckets = {{ {sb} = \"{slow_db}\" }}\n"),
        &format!("buckets = {{ {sb} = \"{slow_db}\" }}\nbandwidth = \"8MiB/s\"\n"),
        1,
    );
    std::fs::write(&st.config, config).unwrap();
    let topics = Topics::new(&st.prefix);
    let src = backbeat::s3::Client::new(endpoint(&s.source), None);
    let events: Vec<(String, String)> = block_on(async {
        let mut events = Vec::new();
        for i in 0..20 {
            let key = format!("obj-{i:02}");
            let vid = put_version(&src, &sb, &key, &data(4 << 20, i), &[]).await;
            let e = event("ObjectCreated:Put", &sb, &key, &vid, 4 << 20);
            events.push((format!("{sb}/{key}"), e));
        }
        events
    });
    let run = spawn(&["run"], &st.config);
    wait_until(60, "the API ready", || api_ready(port));
    assert_eq!(
        metric(
            port,
            "backbeat_site_bandwidth_limit_bytes_per_second",
            "site-slow"
        ),
        8.0 * MIB
    );
    assert_eq!(
        metric(
            port,
            "backbeat_site_bandwidth_limit_bytes_per_second",
            "site-fast"
        ),
        0.0
    );
    let (code, status) = http_get(port, "/_/metrics/crr/site-slow/all", None);
    assert_eq!(code, 200, "{status}");
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(
        status["bandwidth"]["bytesPerSecond"],
        json!(8 << 20),
        "{status}"
    );
    produce(&topics.events, &events);
    let total = 80.0 * MIB;
    let start = std::time::Instant::now();
    let (mut slow, mut fast) = (Samples::new(), Samples::new());
    while slow.last().is_none_or(|(_, b)| *b < total) {
        assert!(
            start.elapsed().as_secs() < 120,
            "not replicated in 120 s: {slow:?}"
        );
        // One scrape for both sites, timed at its middle.
        let before = start.elapsed().as_secs_f64();
        let (code, text) = http_get(port, "/metrics", None);
        assert_eq!(code, 200, "{text}");
        let t = (before + start.elapsed().as_secs_f64()) / 2.0;
        slow.push((t, value(&text, "backbeat_bytes_moved_total", "site-slow")));
        fast.push((t, value(&text, "backbeat_bytes_moved_total", "site-fast")));
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let (s0, s1) = span(&slow, total);
    let (f0, f1) = span(&fast, total);
    let peak = max_rate(&slow, 5.0) / MIB;
    eprintln!(
        "bandwidth: limited site {:.1} s ({:.2} MiB/s on average, at most {peak:.2} MiB/s over 5 s); \
         unlimited site {:.1} s",
        s1 - s0,
        80.0 / (s1 - s0),
        f1 - f0
    );
    assert!(
        s1 - s0 >= 9.5,
        "80 MiB at 8 MiB/s take at least 9.5 s: {:.1} s",
        s1 - s0
    );
    assert!(
        peak <= 8.4,
        "over any 5 s the limited site stays at 8.4 MiB/s or under: {peak:.2}"
    );
    assert!(
        f1 - f0 < (s1 - s0) / 2.0,
        "the other site is not slowed: {:.1} s",
        f1 - f0
    );
    wait_until(30, "20 versions at the limited site", || {
        metric(port, "backbeat_versions_copied_total", "site-slow") == 20.0
    });
    stop(run);
}

/// An SSE-C key as S3 headers carry it: (base64, MD5 base64).
fn customer_headers(key: &[u8; 32]) -> (String, String) {
    use base64::Engine as _;
    use md5::Digest as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    (b64.encode(key), b64.encode(md5::Md5::digest(key)))
}

#[test]
fn sse_c_sources_are_read_and_replicas_written_with_customer_keys() {
    use common::proxy::Proxy;
    let s = servers();
    let (sb, db) = (bucket("ssec-src"), bucket("ssec-dst"));
    fid(&s.source, "bucket", json!({ "bucket": sb }));
    fid(&s.dest, "bucket", json!({ "bucket": db }));
    // moto has no SSE-C: a proxy in front of each server refuses every request for the
    // bucket's objects' bytes that lacks its key, as a server with SSE-C does.
    let (k1, k2) = (
        *b"source-key-0123456789abcdef01234",
        *b"replica-key-0123456789abcdef0123",
    );
    let (src_proxy, dst_proxy) = (Proxy::start(&s.source, false), Proxy::start(&s.dest, false));
    let (k1_b64, k1_md5) = customer_headers(&k1);
    let (k2_b64, k2_md5) = customer_headers(&k2);
    *src_proxy.faults.customer_key.lock().unwrap() = Some((sb.clone(), k1_b64.clone(), k1_md5));
    *dst_proxy.faults.customer_key.lock().unwrap() = Some((db.clone(), k2_b64.clone(), k2_md5));
    let k1_text = std::str::from_utf8(&k1).unwrap();
    let k2_text = std::str::from_utf8(&k2).unwrap();
    let st = setup(
        &sb,
        &[("site-a", &dst_proxy.url, &db)],
        &rules(&[rule("all", 1, "<Prefix></Prefix>", true, "site-a")]),
        "",
    );
    std::fs::write(st.dir.path().join("k1"), k1).unwrap();
    std::fs::write(st.dir.path().join("k2.b64"), format!("{k2_b64}\n")).unwrap();
    let config = std::fs::read_to_string(&st.config)
        .unwrap()
        .replacen(
            &format!("endpoint = \"{}\"", s.source),
            &format!("endpoint = \"{}\"", src_proxy.url),
            1,
        )
        .replacen(
            "rules_file = \"rules.xml\"\n",
            &format!("rules_file = \"rules.xml\"\nsse_customer_key_files = {{ {sb} = \"k1\" }}\n"),
            1,
        )
        .replacen(
            "verify_after_write = true\n",
            "verify_after_write = true\nsse = \"customer\"\nsse_customer_key_file = \"k2.b64\"\n",
            1,
        );
    std::fs::write(&st.config, config).unwrap();
    let topics = Topics::new(&st.prefix);
    let run = spawn(&["run"], &st.config);
    let ssec = json!({ "SSECustomerAlgorithm": "AES256", "SSECustomerKey": k1_text });
    let mut events = Vec::new();
    for (key, size) in [("small", 1000), ("large", 7 << 20)] {
        let put = json!({ "bucket": sb, "key": key, "size": size, "opts": ssec });
        let vid = fid(&src_proxy.url, "put", put)["version_id"]
            .as_str()
            .unwrap()
            .to_string();
        events.push((
            format!("{sb}/{key}"),
            event("ObjectCreated:Put", &sb, key, &vid, size),
        ));
    }
    produce(&topics.events, &events);
    for key in ["small", "large"] {
        let source = fid(
            &src_proxy.url,
            "get",
            json!({ "bucket": sb, "key": key, "sse_c_key": k1_text }),
        );
        assert!(source["sha256"].is_string(), "{source}");
        let mut replica = Value::Null;
        wait_until(90, &format!("{key} at the site"), || {
            let get = json!({ "bucket": db, "key": key, "sse_c_key": k2_text });
            replica = fid(&dst_proxy.url, "get", get);
            replica["error"].is_null()
        });
        assert_eq!(
            replica, source,
            "{key}: the same bytes, read with the site's key"
        );
        let no_key = fid(&dst_proxy.url, "get", json!({ "bucket": db, "key": key }));
        assert_eq!(no_key["error"], json!("InvalidRequest"));
    }
    stop(run);
    use std::sync::atomic::Ordering::SeqCst;
    let refused = |p: &Proxy| p.faults.customer_refused.load(SeqCst);
    let checked = |p: &Proxy| p.faults.customer_checked.load(SeqCst);
    assert_eq!(refused(&src_proxy), 0, "every source read carried the key");
    assert_eq!(
        refused(&dst_proxy),
        2,
        "only the test's reads without the key"
    );
    // Source: boto3's 2 PUTs and 2 GETs, and the engine's reads (GET, HEAD, ranged parts).
    assert!(checked(&src_proxy) >= 6, "{}", checked(&src_proxy));
    // Destination: the small PUT, the multipart upload and its parts, the checks (HEAD).
    assert!(checked(&dst_proxy) >= 5, "{}", checked(&dst_proxy));
    let log = std::fs::read_to_string(st.dir.path().join("run.log")).unwrap();
    for secret in [k1_b64.as_str(), k2_b64.as_str(), k1_text, k2_text] {
        assert!(!log.contains(secret), "a key is in the log");
    }
}

#[test]
fn a_missing_only_scan_enqueues_tag_drift_as_metadata_updates() {
    let s = servers();
    let (sb, db) = (bucket("drift-src"), bucket("drift-dst"));
    fid(&s.source, "bucket", json!({ "bucket": sb }));
    fid(&s.dest, "bucket", json!({ "bucket": db }));
    let mut vids = std::collections::BTreeMap::new();
    for (key, tagging) in [("a", "team=a"), ("b", ""), ("c", "x=1")] {
        let opts = if tagging.is_empty() {
            json!({})
        } else {
            json!({ "Tagging": tagging })
        };
        let put = json!({ "bucket": sb, "key": key, "size": 500, "opts": opts });
        vids.insert(
            key,
            fid(&s.source, "put", put)["version_id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let (code, _, err) = common::sync(&s.source, &sb, &s.dest, &db, &[]);
    assert_eq!(code, 0, "{err}");
    // Tags change at the source with no event seen: a retagged, b tagged, c as it was.
    let at = |key: &str, tags: Value| json!({ "bucket": sb, "key": key, "version_id": vids[key], "tags": tags });
    fid(&s.source, "tags", at("a", json!([["team", "b"]])));
    fid(&s.source, "tags", at("b", json!([["k", "v"]])));
    let st = setup(
        &sb,
        &[("site-a", &s.dest, &db)],
        &rules(&[rule("all", 1, "<Prefix></Prefix>", true, "site-a")]),
        "",
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_backbeat"))
        .args([
            "populate",
            "--scan",
            &format!("s3://{sb}"),
            "--missing-only",
            "--config",
        ])
        .arg(&st.config)
        .env("AWS_ACCESS_KEY_ID", "AKTEST")
        .env("AWS_SECRET_ACCESS_KEY", "SKTEST/secret")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["already_present"], 3, "{summary}");
    assert_eq!(summary["metadata_drift"], 2, "{summary}");
    assert_eq!(summary["entries_enqueued"], 2, "{summary}");
    let topics = Topics::new(&st.prefix);
    let mut entries: Vec<Value> = read_topic(&topics.replication, 2)
        .iter()
        .map(|(_, v)| serde_json::from_str(v).unwrap())
        .collect();
    entries.sort_by_key(|e| e["key"].as_str().unwrap().to_string());
    for (e, key) in entries.iter().zip(["a", "b"]) {
        assert_eq!(
            (e["type"].as_str(), e["key"].as_str()),
            (Some("metadata"), Some(key)),
            "{e}"
        );
        assert_eq!(e["fields"], json!(["tags"]), "{e}");
    }
    let mover = spawn(&["replicate", "--site", "site-a"], &st.config);
    for (key, tags) in [
        ("a", json!([["team", "b"]])),
        ("b", json!([["k", "v"]])),
        ("c", json!([["x", "1"]])),
    ] {
        let r = wait_replicas(&s.dest, &db, key, &format!("the tags of {key}"), |r| {
            r[0]["tags"] == tags
        });
        assert_eq!(r.len(), 1, "{key}: no new version");
    }
    stop(mover);
}
