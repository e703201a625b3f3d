//! Replication through Kafka against a real broker (nisshi) and real S3 servers (moto):
//! events in, objects out, in order, at every site; malformed messages recorded; crashes and
//! group changes lose nothing.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use backbeat::queue::kafka::{self, Topics};
use backbeat::s3::Client;
use common::kafka::*;
use common::*;

const MIB: usize = 1024 * 1024;

#[test]
fn events_reach_every_site_in_order() {
    let s = servers();
    let (sb, da, db) = (bucket("k-src"), bucket("k-a"), bucket("k-b"));
    let src = Client::new(endpoint(&s.source), None);
    let dst = Client::new(endpoint(&s.dest), None);
    let mut events = Vec::new();
    let mut expected: Vec<(String, Vec<Vec<u8>>)> = Vec::new();
    block_on(async {
        make_bucket(&src, &sb, true).await;
        make_bucket(&dst, &da, true).await;
        make_bucket(&dst, &db, true).await;
        for (i, key) in ["doc/one", "doc/two words", "big/object"]
            .iter()
            .enumerate()
        {
            let mut bodies = Vec::new();
            for n in 0..3 {
                let body = if key.starts_with("big") && n == 2 {
                    data(7 * MIB, 50)
                } else {
                    data(1000 + n * 10 + i, (i * 10 + n) as u64)
                };
                let vid = put_version(&src, &sb, key, &body, &[]).await;
                events.push((
                    format!("{sb}/{key}"),
                    event("ObjectCreated:Put", &sb, key, &vid, body.len()),
                ));
                bodies.push(body);
            }
            expected.push((key.to_string(), bodies));
        }
    });
    let st = setup(
        &sb,
        &[("site-a", &s.dest, &da), ("site-b", &s.dest, &db)],
        &rules(&[rule("all", 1, "<Prefix></Prefix>", true, "site-a,site-b")]),
        "",
    );
    let topics = kafka::Topics::new(&st.prefix);
    let run = spawn(&["run"], &st.config);
    produce(&topics.events, &events);
    for d in [&da, &db] {
        for (key, bodies) in &expected {
            wait_until(90, &format!("{key} at {d}"), || {
                real_versions(&dst, d, key).len() >= bodies.len()
            });
            let got = real_versions(&dst, d, key);
            assert_eq!(got.len(), bodies.len(), "{key} at {d}");
            for (i, (g, w)) in got.iter().zip(bodies).enumerate() {
                assert!(
                    g == w,
                    "{key} version {i} at {d}: bytes differ or out of order"
                );
            }
        }
    }
    for d in [&da, &db] {
        assert_replicated_by_boto3(&s.source, &sb, &s.dest, d);
    }
    // status events: one COMPLETED per version per site
    // status events: a COMPLETED one per version per site (a replay after a rebalance may
    // add a second; none may be missing)
    let status = read_topic(&topics.status, 18);
    let completed: std::collections::BTreeSet<(String, String)> = status
        .iter()
        .filter_map(|(_, v)| serde_json::from_str::<serde_json::Value>(v).ok())
        .filter(|v| v["status"] == "COMPLETED")
        .map(|v| {
            (
                v["site"].as_str().unwrap_or("").to_string(),
                v["versionId"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let more = if completed.len() < 18 {
        read_topic(&topics.status, 36)
    } else {
        Vec::new()
    };
    let completed: std::collections::BTreeSet<(String, String)> = status
        .iter()
        .chain(more.iter())
        .filter_map(|(_, v)| serde_json::from_str::<serde_json::Value>(v).ok())
        .filter(|v| v["status"] == "COMPLETED")
        .map(|v| {
            (
                v["site"].as_str().unwrap_or("").to_string(),
                v["versionId"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(completed.len(), 18, "{status:?}");
    stop(run);
    drop(st);
}

#[test]
fn rules_filter_what_goes_where() {
    let s = servers();
    let (sb, da, db) = (bucket("r-src"), bucket("r-a"), bucket("r-b"));
    let src = Client::new(endpoint(&s.source), None);
    let dst = Client::new(endpoint(&s.dest), None);
    let mut events = Vec::new();
    block_on(async {
        make_bucket(&src, &sb, true).await;
        make_bucket(&dst, &da, true).await;
        make_bucket(&dst, &db, true).await;
        let gold = vec![("class".to_string(), "gold".to_string())];
        for (key, tags) in [
            ("logs/plain", vec![]),
            ("logs/gold", gold.clone()),
            ("any/gold", gold.clone()),
            ("skip/none", vec![]),
            ("off/x", vec![]),
        ] {
            let vid = put_version(&src, &sb, key, &data(500, key.len() as u64), &tags).await;
            events.push((
                format!("{sb}/{key}"),
                event("ObjectCreated:Put", &sb, key, &vid, 500),
            ));
        }
        // delete markers: replicated by the "logs" rule (enabled), not by "tagged" (tag rules never do)
        for key in ["logs/plain", "any/gold"] {
            let d = src.delete_object(&sb, key, None).await.unwrap();
            events.push((
                format!("{sb}/{key}"),
                event(
                    "ObjectRemoved:DeleteMarkerCreated",
                    &sb,
                    key,
                    d.version_id.as_deref().unwrap(),
                    0,
                ),
            ));
        }
    });
    let r = rules(&[
        rule("logs", 1, "<Prefix>logs/</Prefix>", true, "site-a"),
        rule("gold-logs", 5, "<And><Prefix>logs/</Prefix><Tag><Key>class</Key><Value>gold</Value></Tag></And>", false, "site-a,site-b"),
        rule("tagged", 2, "<Tag><Key>class</Key><Value>gold</Value></Tag>", false, "site-b"),
        "<Rule><ID>off</ID><Status>Disabled</Status><Priority>9</Priority><Filter><Prefix>off/</Prefix></Filter><Destination><Bucket>arn:aws:s3:::x</Bucket><StorageClass>site-a</StorageClass></Destination></Rule>".to_string(),
    ]);
    let st = setup(
        &sb,
        &[("site-a", &s.dest, &da), ("site-b", &s.dest, &db)],
        &r,
        "",
    );
    let topics = kafka::Topics::new(&st.prefix);
    let run = spawn(&["run"], &st.config);
    produce(&topics.events, &events);
    // 5 puts to site-a/site-b as decided + 1 delete marker: wait for the status events
    // logs/plain -> a (+DM), logs/gold -> a,b, any/gold -> b (DM not replicated)
    let status = read_topic(&topics.status, 5);
    assert_eq!(status.len(), 5, "{status:?}");
    stop(run);
    block_on(async {
        let a = all_versions(&dst, &da).await;
        let b = all_versions(&dst, &db).await;
        let keys = |m: &std::collections::BTreeMap<
            String,
            Vec<backbeat::s3::ops::list_object_versions::ListedVersion>,
        >| m.keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&a), ["logs/gold", "logs/plain"]);
        assert_eq!(keys(&b), ["any/gold", "logs/gold"]);
        assert_eq!(
            a["logs/plain"].iter().filter(|v| v.delete_marker).count(),
            1,
            "delete marker replicated by the logs rule"
        );
        assert_eq!(
            b["any/gold"].iter().filter(|v| v.delete_marker).count(),
            0,
            "tag rules do not replicate delete markers"
        );
    });
}

#[test]
fn malformed_messages_land_in_the_failed_topic_and_the_run_goes_on() {
    let s = servers();
    let (sb, da) = (bucket("m-src"), bucket("m-a"));
    let src = Client::new(endpoint(&s.source), None);
    let dst = Client::new(endpoint(&s.dest), None);
    let vid = block_on(async {
        make_bucket(&src, &sb, true).await;
        make_bucket(&dst, &da, true).await;
        put_version(&src, &sb, "after", b"still replicated", &[]).await
    });
    let st = setup(
        &sb,
        &[("site-a", &s.dest, &da)],
        &rules(&[rule("all", 1, "<Prefix></Prefix>", true, "site-a")]),
        "",
    );
    let topics = kafka::Topics::new(&st.prefix);
    let run = spawn(&["run"], &st.config);
    produce(
        &topics.events,
        &[("junk".into(), "this is not JSON".into())],
    );
    produce(
        &topics.replication,
        &[(
            format!("{sb}/x"),
            r#"{"v":1,"type":"put","bucket":"","key":"x","versionId":"v","sites":["site-a"]}"#
                .into(),
        )],
    );
    produce(
        &topics.events,
        &[(
            format!("{sb}/after"),
            event("ObjectCreated:Put", &sb, "after", &vid, 16),
        )],
    );
    wait_until(90, "the valid object", || {
        real_versions(&dst, &da, "after").len() == 1
    });
    // A delete marker whose event arrives twice (a replay) is applied once.
    std::thread::sleep(Duration::from_millis(1100));
    let dm = block_on(async {
        src.delete_object(&sb, "after", None)
            .await
            .unwrap()
            .version_id
            .unwrap()
    });
    let dm_event = (
        format!("{sb}/after"),
        event("ObjectRemoved:DeleteMarkerCreated", &sb, "after", &dm, 0),
    );
    produce(&topics.events, &[dm_event.clone(), dm_event]);
    let status = read_topic(&topics.status, 3);
    assert_eq!(
        status
            .iter()
            .filter(|(_, v)| v.contains("\"status\":\"COMPLETED\""))
            .count(),
        3,
        "{status:?}"
    );
    let markers = block_on(async {
        all_versions(&dst, &da).await["after"]
            .iter()
            .filter(|v| v.delete_marker)
            .count()
    });
    assert_eq!(
        markers, 1,
        "the replayed delete marker was not applied twice"
    );
    let failed = read_topic(&topics.failed, 2);
    stop(run);
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(
        failed
            .iter()
            .any(|(_, v)| v.contains("malformed-event") && v.contains("this is not JSON")),
        "{failed:?}"
    );
    assert!(
        failed
            .iter()
            .any(|(_, v)| v.contains("\"kind\":\"malformed\"") && v.contains("empty bucket")),
        "{failed:?}"
    );
}

#[test]
fn killed_mover_mid_multipart_and_a_second_member_lose_nothing() {
    let s = servers();
    let (sb, da) = (bucket("kill-src"), bucket("kill-a"));
    let src = Client::new(endpoint(&s.source), None);
    let dst = Client::new(endpoint(&s.dest), None);
    let proxy = common::proxy::Proxy::start(&s.dest, false);
    let mut events = Vec::new();
    let mut bodies = Vec::new();
    block_on(async {
        make_bucket(&src, &sb, true).await;
        make_bucket(&dst, &da, true).await;
        for i in 0..6 {
            let key = format!("obj-{i}");
            let body = if i == 0 {
                data(48 * MIB, 77)
            } else {
                data(2000 + i, i as u64)
            };
            let vid = put_version(&src, &sb, &key, &body, &[]).await;
            events.push((
                format!("{sb}/{key}"),
                event("ObjectCreated:Put", &sb, &key, &vid, body.len()),
            ));
            bodies.push((key, body));
        }
    });
    let st = setup(
        &sb,
        &[("site-a", &proxy.url, &da)],
        &rules(&[rule("all", 1, "<Prefix></Prefix>", true, "site-a")]),
        "",
    );
    let topics = kafka::Topics::new(&st.prefix);
    // Populate alone, then a mover we kill with SIGKILL while it uploads parts.
    let pop = spawn(&["populate"], &st.config);
    produce(&topics.events, &events);
    let mut mover = spawn(&["replicate", "--site", "site-a"], &st.config);
    let deadline = Instant::now() + Duration::from_secs(90);
    while !proxy
        .faults
        .log
        .lock()
        .unwrap()
        .iter()
        .any(|(l, _)| l.contains("partNumber="))
    {
        assert!(Instant::now() < deadline, "no UploadPart within 90 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    mover.kill().unwrap();
    mover.wait().unwrap();
    // Two members of the group now; one of them stops (SIGTERM) after a while.
    let m1 = spawn_named(
        &["replicate", "--site", "site-a", "--shards", "1"],
        &st.config,
        "m1",
    );
    let m2 = spawn_named(
        &["replicate", "--site", "site-a", "--shards", "1"],
        &st.config,
        "m2",
    );
    let log = |n: &str| {
        std::fs::read_to_string(st.config.with_file_name(format!("{n}.log"))).unwrap_or_default()
    };
    wait_until(60, "both members assigned partitions", || {
        log("m1").contains("partitions assigned") && log("m2").contains("partitions assigned")
    });
    stop(m1);
    // m1 leaving revokes m2's partitions too (eager protocol): drained, then released.
    wait_until(60, "a drained revocation in m2", || {
        log("m2").contains("revoked partitions drained and released")
    });
    for (key, body) in &bodies {
        wait_until(120, key, || real_versions(&dst, &da, key).len() == 1);
        assert!(&real_versions(&dst, &da, key)[0] == body, "{key}");
    }
    stop(m2);
    stop(pop);
    // The killed mover's multipart copy was replayed from its uncommitted offset.
    let creates = proxy
        .faults
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|(l, _)| l.starts_with("POST ") && l.contains("obj-0?uploads"))
        .count();
    assert!(
        creates >= 2,
        "the multipart copy started again after SIGKILL ({creates} CreateMultipartUpload)"
    );
    block_on(async {
        let open = dst.list_multipart_uploads(&da, None).await.unwrap();
        // The killed mover could not abort its upload; the replay cleaned it up.
        assert!(open.is_empty(), "{open:?}");
    });
}

#[test]
fn scan_with_missing_only_enqueues_what_a_site_lacks() {
    let s = servers();
    let (sb, da) = (bucket("scan-src"), bucket("scan-a"));
    let src = Client::new(endpoint(&s.source), None);
    let dst = Client::new(endpoint(&s.dest), None);
    block_on(async {
        make_bucket(&src, &sb, true).await;
        make_bucket(&dst, &da, true).await;
        for k in ["a", "b"] {
            put_version(&src, &sb, k, &data(300, 1), &[]).await;
            put_version(&src, &sb, k, &data(400, 2), &[]).await;
        }
    });
    // The site already has a and b (a one-shot sync), then c arrives at the source.
    let (code, _, err) = common::sync(&s.source, &sb, &s.dest, &da, &[]);
    assert_eq!(code, 0, "{err}");
    block_on(async {
        put_version(&src, &sb, "c", &data(500, 3), &[]).await;
        put_version(&src, &sb, "a", &data(600, 4), &[]).await;
    });
    let st = setup(
        &sb,
        &[("site-a", &s.dest, &da)],
        &rules(&[rule("all", 1, "<Prefix></Prefix>", true, "site-a")]),
        "",
    );
    let scan = |more: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_backbeat"))
            .args([
                "populate",
                "--scan",
                &format!("s3://{sb}"),
                "--missing-only",
            ])
            .args(more)
            .arg("--config")
            .arg(&st.config)
            .env("AWS_ACCESS_KEY_ID", "AKTEST")
            .env("AWS_SECRET_ACCESS_KEY", "SKTEST/secret")
            .output()
            .unwrap()
    };
    let out = scan(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["versions_found"], 6, "{summary}");
    assert_eq!(
        summary["entries_enqueued"], 2,
        "c and the new version of a: {summary}"
    );
    assert_eq!(summary["already_present"], 4, "{summary}");
    // Again, with those two queued and no mover: the site is left out, not enqueued twice.
    let again = scan(&[]);
    let err = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(2), "{err}");
    assert!(
        err.contains("left out: site-a") && err.contains("--no-wait"),
        "{err}"
    );
    let summary: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(summary["entries_enqueued"], 0, "{summary}");
    assert_eq!(summary["sites_left_out"][0], "site-a", "{summary}");
    assert_eq!(topic_len(&Topics::new(&st.prefix).replication), 2);
    let mover = spawn(&["replicate", "--site", "site-a"], &st.config);
    wait_until(90, "c and the third version of a", || {
        real_versions(&dst, &da, "c").len() == 1 && real_versions(&dst, &da, "a").len() == 3
    });
    stop(mover);
    assert!(
        real_versions(&dst, &da, "a")[2] == data(600, 4),
        "newest version of a is last"
    );
}

/// A plain TCP relay that can cut every connection and refuse new ones for a while: the
/// broker "goes away" and comes back, as for a broker restart seen from the clients.
struct Outage {
    port: u16,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Outage {
    fn start(listener: std::net::TcpListener, upstream: String) -> Outage {
        use std::sync::atomic::Ordering;
        let port = listener.local_addr().unwrap().port();
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conns: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>> = Default::default();
        let (d, cs) = (down.clone(), conns.clone());
        std::thread::spawn(move || {
            for c in listener.incoming() {
                let Ok(c) = c else { continue };
                if d.load(Ordering::SeqCst) {
                    drop(c);
                    continue;
                }
                let Ok(u) = std::net::TcpStream::connect(&upstream) else {
                    continue;
                };
                cs.lock().unwrap().push(c.try_clone().unwrap());
                cs.lock().unwrap().push(u.try_clone().unwrap());
                for (mut a, mut b) in [(c.try_clone().unwrap(), u.try_clone().unwrap()), (u, c)] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut a, &mut b);
                        let _ = b.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Outage { port, down, conns }
    }

    fn cut(&self, on: bool) {
        self.down.store(on, std::sync::atomic::Ordering::SeqCst);
        if on {
            for c in self.conns.lock().unwrap().drain(..) {
                let _ = c.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

#[test]
fn broker_outage_in_the_middle_of_a_run_loses_nothing() {
    let s = servers();
    // A broker of our own whose advertised address is the relay, so every client connection
    // goes through it (nisshi keeps no data across a real restart: memory storage).
    let relay = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let relay_port = relay.local_addr().unwrap().port();
    let broker_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bin = std::env::var("BACKBEAT_TEST_NISSHI").unwrap_or_else(|_| {
        panic!("BACKBEAT_TEST_NISSHI is not set: run the tests with `bash tests/run.sh`, which installs nisshi")
    });
    let mut nisshi = Command::new(bin)
        .args([
            "broker",
            "--listener-url",
            &format!("tcp://127.0.0.1:{broker_port}"),
            "--advertised-listener-url",
            &format!("tcp://127.0.0.1:{relay_port}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("BACKBEAT_TEST_NISSHI names a nisshi binary (tests/run.sh installs it)");
    wait_until(10, "nisshi", || {
        std::net::TcpStream::connect(("127.0.0.1", broker_port)).is_ok()
    });
    let outage = Outage::start(relay, format!("127.0.0.1:{broker_port}"));
    let brokers = format!("127.0.0.1:{}", outage.port);
    let (sb, da) = (bucket("out-src"), bucket("out-a"));
    let src = Client::new(endpoint(&s.source), None);
    let dst = Client::new(endpoint(&s.dest), None);
    let mut first = Vec::new();
    let mut second = Vec::new();
    block_on(async {
        make_bucket(&src, &sb, true).await;
        make_bucket(&dst, &da, true).await;
        for i in 0..20 {
            let key = format!("k{}", i % 5);
            let vid = put_version(&src, &sb, &key, &data(1000 + i, i as u64), &[]).await;
            let ev = (
                format!("{sb}/{key}"),
                event("ObjectCreated:Put", &sb, &key, &vid, 1000 + i),
            );
            if i < 10 {
                first.push(ev)
            } else {
                second.push(ev)
            }
        }
    });
    let st = setup(
        &sb,
        &[("site-a", &s.dest, &da)],
        &rules(&[rule("all", 1, "<Prefix></Prefix>", true, "site-a")]),
        "",
    );
    let text = std::fs::read_to_string(&st.config)
        .unwrap()
        .replace(&broker(), &brokers);
    std::fs::write(&st.config, text).unwrap();
    let topics = kafka::Topics::new(&st.prefix);
    let run = spawn(&["run"], &st.config);
    let produce_via = |items: &[(String, String)]| {
        let (b, t, items) = (brokers.clone(), topics.events.clone(), items.to_vec());
        block_on(async move {
            let p = kafka::producer(&b).unwrap();
            for (k, v) in &items {
                kafka::send(&p, &t, k, Some(v.as_bytes())).await.unwrap();
            }
        });
    };
    produce_via(&first);
    wait_until(90, "the first events replicated", || {
        (0..5).all(|k| real_versions(&dst, &da, &format!("k{k}")).len() >= 2)
    });
    outage.cut(true);
    std::thread::sleep(Duration::from_secs(5));
    outage.cut(false);
    produce_via(&second);
    for k in 0..5 {
        let key = format!("k{k}");
        wait_until(120, &key, || real_versions(&dst, &da, &key).len() >= 4);
        let got = real_versions(&dst, &da, &key);
        assert_eq!(got.len(), 4, "{key}: every version once");
        for (n, body) in got.iter().enumerate() {
            let i = k + 5 * n;
            assert!(
                *body == data(1000 + i, i as u64),
                "{key} version {n} in order"
            );
        }
    }
    stop(run);
    let _ = nisshi.kill();
    let _ = nisshi.wait();
}

#[test]
fn rules_from_the_bucket_and_a_failing_site_records_failures() {
    let s = servers();
    let (sb, da) = (bucket("gbr-src"), bucket("gbr-a"));
    let missing = bucket("gbr-missing");
    let src = Client::new(endpoint(&s.source), None);
    let dst = Client::new(endpoint(&s.dest), None);
    let mut events = Vec::new();
    block_on(async {
        make_bucket(&src, &sb, true).await;
        make_bucket(&dst, &da, true).await;
        // The rules come from GetBucketReplication this time (no rules_file).
        let xml = rules(&[rule("both", 1, "<Prefix></Prefix>", true, "site-a,site-b")]);
        src.put_bucket_replication(&sb, &xml).await.unwrap();
        for k in ["x", "y"] {
            let vid = put_version(&src, &sb, k, &data(700, 7), &[]).await;
            events.push((
                format!("{sb}/{k}"),
                event("ObjectCreated:Put", &sb, k, &vid, 700),
            ));
        }
    });
    // site-b's bucket does not exist: its entries are replayed (it may be being created)
    // until their patience (3 s here) is spent, then FAILED and recorded.
    let api_port = free_port();
    let st = setup(
        &sb,
        &[("site-a", &s.dest, &da), ("site-b", &s.dest, &missing)],
        "<unused/>",
        &format!("\n[api]\nlisten = \"127.0.0.1:{api_port}\"\n[replay]\ndelays_seconds = [1]\npatience_seconds = 3\n"),
    );
    let text = std::fs::read_to_string(&st.config)
        .unwrap()
        .replace("rules_file = \"rules.xml\"\n", "");
    std::fs::write(&st.config, text).unwrap();
    let topics = kafka::Topics::new(&st.prefix);
    let run = spawn(&["run"], &st.config);
    produce(&topics.events, &events);
    for k in ["x", "y"] {
        wait_until(90, k, || real_versions(&dst, &da, k).len() == 1);
    }
    let failed = read_topic(&topics.failed, 2);
    let status = read_until_quiet(&topics.status, Duration::from_secs(3));
    // Listed by the API, retried once the bucket exists, then cleared.
    wait_until(30, "the failed list", || {
        let (_, b) = http_get(api_port, "/_/crr/failed?site=site-b", None);
        serde_json::from_str::<serde_json::Value>(&b)
            .map(|v| v["Versions"].as_array().map(|a| a.len()) == Some(2))
            .unwrap_or(false)
    });
    let out = Command::new(env!("CARGO_BIN_EXE_backbeat"))
        .args([
            "failed",
            "list",
            "--site",
            "site-b",
            "--json",
            "--api",
            &format!("127.0.0.1:{api_port}"),
        ])
        .output()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        listed.as_array().map(|a| a.len()),
        Some(2),
        "backbeat failed list: {listed}"
    );
    let (_, body) = http_get(api_port, "/_/crr/failed?site=site-b", None);
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["IsTruncated"], false, "{list}");
    // Backbeat names the site `sitename`.
    let (_, same) = http_get(api_port, "/_/crr/failed?sitename=site-b", None);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&same).unwrap(),
        list
    );
    let (_, other) = http_get(api_port, "/_/crr/failed?sitename=nosite", None);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&other).unwrap()["Versions"],
        serde_json::json!([]),
        "{other}"
    );
    let x = list["Versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["Key"] == "x")
        .unwrap()
        .clone();
    let (code, one) = http_get(
        api_port,
        &format!("/_/crr/failed/{sb}/x/{}", x["VersionId"].as_str().unwrap()),
        None,
    );
    assert_eq!(code, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&one).unwrap()["Versions"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "{one}"
    );
    block_on(async { make_bucket(&dst, &missing, true).await });
    let (code, retried) = http_req(
        api_port,
        "POST",
        "/_/crr/failed",
        &list["Versions"].to_string(),
    );
    assert_eq!(code, 200, "{retried}");
    let retried: serde_json::Value = serde_json::from_str(&retried).unwrap();
    assert_eq!(retried.as_array().unwrap().len(), 2, "{retried}");
    assert!(
        retried
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["Status"] == "PENDING"),
        "{retried}"
    );
    for k in ["x", "y"] {
        wait_until(90, &format!("{k} at site-b after retry"), || {
            real_versions(&dst, &missing, k).len() == 1
        });
    }
    wait_until(30, "the failed list to empty", || {
        let (_, b) = http_get(api_port, "/_/crr/failed?site=site-b", None);
        serde_json::from_str::<serde_json::Value>(&b)
            .map(|v| v["Versions"].as_array().map(|a| a.len()) == Some(0))
            .unwrap_or(false)
    });
    stop(run);
    assert_eq!(failed.len(), 2, "{failed:?}");
    for (key, v) in &failed {
        assert!(
            key.ends_with("/site-b"),
            "keyed bucket/key/versionId/site: {key}"
        );
        assert!(
            v.contains("NoSuchBucket") && v.contains("\"kind\":\"failed\""),
            "{v}"
        );
    }
    assert_eq!(
        status
            .iter()
            .filter(
                |(_, v)| v.contains("\"status\":\"FAILED\"") && v.contains("\"site\":\"site-b\"")
            )
            .count(),
        2,
        "{status:?}"
    );
    let replayed = |k: &str| {
        status
            .iter()
            .filter(|(key, v)| {
                key.ends_with(&format!("/{k}")) && v.contains("\"status\":\"PENDING\"")
            })
            .count()
    };
    for k in ["x", "y"] {
        assert!(
            (2..=5).contains(&replayed(k)),
            "{k} replayed every second for 3 s: {status:?}"
        );
    }
    assert_eq!(
        status
            .iter()
            .filter(|(_, v)| v.contains("\"status\":\"COMPLETED\"")
                && v.contains("\"site\":\"site-a\""))
            .count(),
        2,
        "{status:?}"
    );
}

/// An engine (`backbeat run`) replicating a fresh source bucket to a fresh destination
/// bucket as `site-a`, its API on a free loopback port, once ready.
struct ApiEngine {
    port: u16,
    st: Setup,
    run: Proc,
    sb: String,
    da: String,
    src: Client,
    dst: Client,
}

fn api_engine(name: &str) -> ApiEngine {
    api_engine_with(name, "")
}

/// [`api_engine`] with `kafka_keys` added to the configuration's `[kafka]` table.
fn api_engine_with(name: &str, kafka_keys: &str) -> ApiEngine {
    let s = servers();
    let (sb, da) = (bucket(&format!("{name}-src")), bucket(&format!("{name}-a")));
    let src = Client::new(endpoint(&s.source), None);
    let dst = Client::new(endpoint(&s.dest), None);
    block_on(async {
        make_bucket(&src, &sb, true).await;
        make_bucket(&dst, &da, true).await;
    });
    let port = free_port();
    let st = setup(
        &sb,
        &[("site-a", &s.dest, &da)],
        &rules(&[rule("all", 1, "<Prefix></Prefix>", true, "site-a")]),
        &format!("\n[api]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let text = std::fs::read_to_string(&st.config).unwrap();
    let text = text.replacen("[kafka]\n", &format!("[kafka]\n{kafka_keys}\n"), 1);
    std::fs::write(&st.config, text).unwrap();
    let run = spawn(&["run"], &st.config);
    wait_until(60, "the API ready", || api_ready(port));
    ApiEngine {
        port,
        st,
        run,
        sb,
        da,
        src,
        dst,
    }
}

impl ApiEngine {
    /// Writes `keys` (`size` bytes each) to the source and announces them.
    fn announce(&self, keys: &[&str], size: usize) {
        let topics = kafka::Topics::new(&self.st.prefix);
        let events: Vec<(String, String)> = block_on(async {
            let mut events = Vec::new();
            for k in keys {
                let vid = put_version(&self.src, &self.sb, k, &data(size, 9), &[]).await;
                let e = event("ObjectCreated:Put", &self.sb, k, &vid, size);
                events.push((format!("{}/{k}", self.sb), e));
            }
            events
        });
        produce(&topics.events, &events);
    }

    fn replicated(&self, key: &str) -> bool {
        real_versions(&self.dst, &self.da, key).len() == 1
    }

    /// GET `path`: the status and the JSON document.
    fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let (code, body) = http_get(self.port, path, None);
        let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
        (code, v)
    }

    fn send(&self, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
        let (code, text) = http_req(self.port, method, path, body);
        let v =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"));
        (code, v)
    }

    fn backlog(&self) -> serde_json::Value {
        let (code, v) = self.get("/_/metrics/crr/site-a/backlog");
        assert_eq!(code, 200, "{v}");
        v["backlog"]["results"].clone()
    }

    /// Stops the engine; returns its log.
    fn stop(self) -> String {
        stop(self.run);
        std::fs::read_to_string(self.st.config.with_file_name("run.log")).unwrap_or_default()
    }
}

/// Seconds since the epoch of an RFC 3339 UTC time `YYYY-MM-DDTHH:MM:SS[.fff]Z`, read here
/// rather than with the engine's own parser.
fn utc_seconds(t: &str) -> i64 {
    let n = |r: std::ops::Range<usize>| t[r].parse::<i64>().unwrap_or_else(|_| panic!("{t}"));
    assert!(
        t.ends_with('Z') && &t[4..5] == "-" && &t[10..11] == "T",
        "{t}"
    );
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let days = era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719468;
    days * 86400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19)
}

fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn api_probes_health_and_route_errors() {
    let e = api_engine("probe");
    assert_eq!(e.get("/_/live"), (200, serde_json::json!({"status": "ok"})));
    assert_eq!(
        e.get("/_/ready"),
        (200, serde_json::json!({"status": "ok"}))
    );
    let (code, h) = e.get("/_/healthcheck");
    assert_eq!(code, 200, "{h}");
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(h["kafka"]["ok"], true, "{h}");
    assert!(
        h["kafka"]["brokers"].as_u64().is_some_and(|n| n >= 1),
        "{h}"
    );
    assert_eq!(h["endpoints"]["site-a"]["ok"], true, "{h}");
    assert_eq!(h["endpoints"]["site-a"]["bucket"], e.da.as_str(), "{h}");
    // Unknown paths 404, other methods 405, missing parts 400: each says what to use.
    let (code, v) = e.get("/nope");
    assert_eq!((code, v["error"].as_str()), (404, Some("no route /nope")));
    let (code, v) = e.get("/_/metrics/crr/site-a/nosuch");
    assert_eq!(code, 404, "{v}");
    assert!(v["error"].as_str().unwrap().contains("backlog"), "{v}");
    assert_eq!(e.get("/_/metrics/crr/nosuch/backlog").0, 404);
    let (code, v) = e.send("POST", "/_/live", "");
    assert_eq!(code, 405, "{v}");
    assert!(v["error"].as_str().unwrap().contains("GET"), "{v}");
    assert_eq!(e.get("/_/crr/pause/site-a").0, 405);
    let (code, v) = e.get("/_/crr/failed/only-a-bucket");
    assert_eq!(code, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("{versionId}"), "{v}");
    let (code, v) = e.send(
        "POST",
        "/_/crr/resume/site-a/schedule",
        "{\"hours\": \"soon\"}",
    );
    assert_eq!(code, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("hours"), "{v}");
    let (code, v) = e.send("POST", "/_/crr/resume/site-a/schedule", "{\"hours\": -1}");
    assert_eq!(code, 400, "{v}");
    let (code, v) = e.send("POST", "/_/crr/failed", "{\"not\": \"a list\"}");
    assert_eq!(code, 400, "{v}");
    assert_eq!(
        e.get("/_/crr/status"),
        (200, serde_json::json!({"site-a": "enabled"}))
    );
    e.stop();
}

#[test]
fn api_metric_routes_count_what_was_replicated() {
    let e = api_engine("metrics");
    e.announce(&["m1", "m2", "m3"], 900);
    for k in ["m1", "m2", "m3"] {
        wait_until(90, k, || e.replicated(k));
    }
    wait_until(30, "completions", || {
        e.get("/_/metrics/crr/site-a/completions").1["completions"]["results"]["count"] == 3
    });
    let (code, v) = e.get("/_/metrics/crr/site-a/completions");
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        v["completions"]["results"],
        serde_json::json!({"count": 3, "size": 2700})
    );
    assert_eq!(
        v.as_object().unwrap().len(),
        1,
        "only the family asked for: {v}"
    );
    // Committed once replicated: no backlog (its size estimated from the average copy).
    wait_until(30, "the backlog drained", || e.backlog()["count"] == 0);
    assert_eq!(e.backlog(), serde_json::json!({"count": 0, "size": 0}));
    let (code, v) = e.get("/_/metrics/crr/all/all");
    assert_eq!(code, 200, "{v}");
    for m in [
        "backlog",
        "completions",
        "failures",
        "throughput",
        "pending",
    ] {
        assert!(v[m]["description"].is_string(), "{m}: {v}");
    }
    assert_eq!(
        v["failures"]["results"],
        serde_json::json!({"count": 0, "size": 0})
    );
    assert_eq!(
        v["pending"]["results"],
        serde_json::json!({"count": 0, "size": 0})
    );
    // 3 in the last 900 s, per second, as Backbeat writes it.
    assert_eq!(
        v["throughput"]["results"],
        serde_json::json!({"count": "0.00", "size": "3.00"})
    );
    let m = scrape(e.port);
    assert_eq!(
        sample(&m, "backbeat_versions_copied_total", "site-a"),
        Some(3.0)
    );
    assert_eq!(
        sample(&m, "backbeat_replication_latency_seconds", "site-a"),
        Some(3.0)
    );
    assert_eq!(sample(&m, "backbeat_backlog_entries", "site-a"), Some(0.0));
    let owned: f64 = m
        .samples
        .iter()
        .filter(|s| s.metric == "backbeat_partitions_owned")
        .map(|s| match s.value {
            prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum();
    assert_eq!(owned, 4.0, "the shards own the topic's 4 partitions");
    e.stop();
}

/// Pause holds a site's entries in Kafka until resume; control records that do not read as
/// a state (garbage, or a resume time that is not one) are ignored, never a state change.
#[test]
fn api_pause_holds_entries_in_the_backlog_until_resume() {
    let e = api_engine("pause");
    let (code, v) = e.send("POST", "/_/crr/pause/site-a", "");
    assert_eq!((code, &v), (200, &serde_json::json!({})));
    assert_eq!(
        e.get("/_/crr/status/site-a").1,
        serde_json::json!({"site-a": "disabled"})
    );
    // An unreadable control record (anyone who can write to the topic) changes nothing.
    let control = kafka::Topics::new(&e.st.prefix).control;
    produce(&control, &[("site-a".into(), "{not a state".into())]);
    produce(
        &control,
        &[(
            "site-a".into(),
            r#"{"paused":false,"scheduledResume":"soon"}"#.into(),
        )],
    );
    std::thread::sleep(Duration::from_secs(2));
    e.announce(&["during-pause"], 800);
    // The paused site's entry waits in Kafka: its group's lag counts it.
    wait_until(30, "a backlog while paused", || e.backlog()["count"] == 1);
    std::thread::sleep(Duration::from_secs(3));
    assert!(!e.replicated("during-pause"), "replicated while paused");
    assert_eq!(
        e.get("/_/crr/status/site-a").1,
        serde_json::json!({"site-a": "disabled"}),
        "unreadable control records are ignored"
    );
    assert_eq!(e.backlog()["count"], 1);
    assert_eq!(
        sample(&scrape(e.port), "backbeat_backlog_entries", "site-a"),
        Some(1.0)
    );
    assert_eq!(e.send("POST", "/_/crr/resume/site-a", "").0, 200);
    assert_eq!(
        e.get("/_/crr/status").1,
        serde_json::json!({"site-a": "enabled"})
    );
    wait_until(60, "replication after resume", || {
        e.replicated("during-pause")
    });
    wait_until(30, "the backlog drained", || e.backlog()["count"] == 0);
    e.stop();
}

#[test]
fn api_scheduled_resume_is_hours_from_now_and_can_be_cancelled() {
    let e = api_engine("sched");
    let asked = now_seconds();
    let (code, v) = e.send("POST", "/_/crr/resume/site-a/schedule", r#"{"hours": 2}"#);
    assert_eq!(code, 200, "{v}");
    let at = v["scheduledResume"]
        .as_str()
        .expect("scheduledResume")
        .to_string();
    let from_now = utc_seconds(&at) - asked;
    assert!(
        (7200 - 60..=7200 + 60).contains(&from_now),
        "{at} is {from_now} s from now"
    );
    assert_eq!(
        e.get("/_/crr/resume/site-a").1,
        serde_json::json!({"site-a": at})
    );
    assert_eq!(e.get("/_/crr/resume").1, serde_json::json!({"site-a": at}));
    // A scheduled resume pauses the site until then.
    assert_eq!(e.get("/_/crr/status/site-a").1["site-a"], "disabled");
    let (code, v) = e.send("DELETE", "/_/crr/resume/site-a/schedule", "");
    assert_eq!((code, &v), (200, &serde_json::json!({})));
    assert_eq!(
        e.get("/_/crr/resume/site-a").1,
        serde_json::json!({"site-a": "none"})
    );
    assert_eq!(
        e.get("/_/crr/status/site-a").1["site-a"],
        "disabled",
        "still paused"
    );
    assert_eq!(e.send("POST", "/_/crr/resume", "").0, 200);
    assert_eq!(e.get("/_/crr/status/site-a").1["site-a"], "enabled");
    e.stop();
}

#[test]
fn cli_commands_drive_a_running_engine() {
    let e = api_engine("cli");
    e.announce(&["c1"], 700);
    wait_until(90, "c1", || e.replicated("c1"));
    let api = format!("127.0.0.1:{}", e.port);
    let (code, out, err) = backbeat(&["pause", "site-a", "--api", &api]);
    assert_eq!((code, out.trim()), (0, "site-a: paused"), "{err}");
    assert_eq!(e.get("/_/crr/status").1["site-a"], "disabled");
    wait_until(30, "the completion counted", || {
        let (_, out, _) = backbeat(&["status", "--api", &api, "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        v["metrics"]["site-a"]["completions"]["results"]["count"] == 1
    });
    let (code, out, err) = backbeat(&["status", "--api", &api, "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["status"],
        serde_json::json!({"site-a": "disabled"}),
        "{v}"
    );
    assert_eq!(
        v["metrics"]["site-a"]["completions"]["results"]["size"], 700,
        "{v}"
    );
    let asked = now_seconds();
    let (code, out, err) = backbeat(&["resume", "site-a", "--in", "1", "--api", &api]);
    assert_eq!(code, 0, "{err}");
    let at = out.trim().strip_prefix("site-a: resumes at ").expect(&out);
    let from_now = utc_seconds(at) - asked;
    assert!(
        (3600 - 60..=3600 + 60).contains(&from_now),
        "{at} is {from_now} s from now"
    );
    assert_eq!(e.get("/_/crr/resume/site-a").1["site-a"], at);
    let (code, out, _) = backbeat(&["resume", "all", "--api", &api]);
    assert_eq!((code, out.trim()), (0, "all: resumed"));
    assert_eq!(e.get("/_/crr/resume/site-a").1["site-a"], "none");
    let (code, out, _) = backbeat(&["status", "--api", &api]);
    assert_eq!(code, 0);
    let row = out.lines().find(|l| l.starts_with("site-a")).expect(&out);
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        (cols[0], cols[1], cols[3]),
        ("site-a", "enabled", "1"),
        "{out}"
    );
    let (code, out, _) = backbeat(&["failed", "list", "--api", &api, "--json"]);
    assert_eq!((code, out.trim()), (0, "[]"));
    e.stop();
}

#[test]
fn api_off_loopback_requires_the_token() {
    let s = servers();
    let sb = bucket("token-src");
    let src = Client::new(endpoint(&s.source), None);
    block_on(async { make_bucket(&src, &sb, true).await });
    let port = free_port();
    let st = setup(
        &sb,
        &[("site-a", &s.dest, &bucket("token-a"))],
        &rules(&[rule("all", 1, "<Prefix></Prefix>", true, "site-a")]),
        &format!("\n[api]\nlisten = \"0.0.0.0:{port}\"\ntoken_file = \"token\"\n"),
    );
    let token_file = st.config.with_file_name("token");
    std::fs::write(&token_file, "s3cr3t-token\n").unwrap();
    let run = spawn(&["run"], &st.config);
    wait_until(60, "the API", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let (code, body) = http_get(port, "/_/live", None);
    assert_eq!(code, 401, "{body}");
    assert!(!body.contains("s3cr3t"), "{body}");
    assert_eq!(http_get(port, "/_/live", Some("wrong")).0, 401);
    assert_eq!(http_get(port, "/_/live", Some("s3cr3t-token")).0, 200);
    let api = format!("127.0.0.1:{port}");
    let (code, _, err) = backbeat(&["status", "--api", &api]);
    assert_eq!(code, 2);
    assert!(err.contains("--token-file"), "{err}");
    let t = token_file.to_str().unwrap();
    wait_until(60, "ready", || {
        http_get(port, "/_/ready", Some("s3cr3t-token")).0 == 200
    });
    let (code, out, err) = backbeat(&["status", "--api", &api, "--token-file", t]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("site-a") && !out.contains("s3cr3t"), "{out}");
    stop(run);
    let log = std::fs::read_to_string(st.config.with_file_name("run.log")).unwrap();
    assert!(log.contains("operations API listening"), "{log}");
    assert!(!log.contains("SKTEST/secret"), "a secret reached the log");
    assert!(!log.contains("s3cr3t"), "the token reached the log");
}

#[test]
#[ignore = "flaky under the full suite: the restarted engine's shards sometimes get no \
            partitions for minutes (passes alone: `cargo test --test kafka -- --ignored \
            scheduled_resume`); under investigation with issue 11"]
fn scheduled_resume_fires_after_a_restart() {
    let s = servers();
    let (sb, da) = (bucket("sched-src"), bucket("sched-a"));
    let src = Client::new(endpoint(&s.source), None);
    let dst = Client::new(endpoint(&s.dest), None);
    block_on(async {
        make_bucket(&src, &sb, true).await;
        make_bucket(&dst, &da, true).await;
    });
    let port = free_port();
    let st = setup(
        &sb,
        &[("site-a", &s.dest, &da)],
        &rules(&[rule("all", 1, "<Prefix></Prefix>", true, "site-a")]),
        &format!("\n[api]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let run = spawn_named(&["run"], &st.config, "run1");
    wait_until(60, "ready", || api_ready(port));
    // Joined first: members stopped in the middle of their first join hold the group's next
    // rebalance (up to max.poll.interval.ms on nisshi).
    let log1 = st.config.with_file_name("run1.log");
    wait_until(60, "run1 joined", || {
        std::fs::read_to_string(&log1)
            .unwrap_or_default()
            .matches("partitions assigned")
            .count()
            >= 2
    });
    // Paused, resuming by itself in 20 seconds; then the engine restarts.
    let (code, body) = http_req(
        port,
        "POST",
        "/_/crr/resume/site-a/schedule",
        &format!("{{\"hours\": {}}}", 20.0 / 3600.0),
    );
    assert_eq!(code, 200, "{body}");
    let scheduled = Instant::now();
    // Both shards applied the pause before the restart.
    wait_until(30, "run1 paused", || {
        std::fs::read_to_string(&log1)
            .unwrap_or_default()
            .matches("site paused")
            .count()
            >= 2
    });
    stop(run);
    // The next engine joins once the old members' sessions are over: joining while they
    // leave has left the new members without partitions for minutes under load (nisshi;
    // under investigation, issue 11).
    std::thread::sleep(Duration::from_secs(7));
    let run = spawn_named(&["run"], &st.config, "run2");
    wait_until(60, "ready again", || api_ready(port));
    let (_, body) = http_get(port, "/_/crr/status/site-a", None);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["site-a"],
        "disabled",
        "still paused after the restart: {body}"
    );
    // An entry arrives while paused (enqueued by a scan).
    block_on(async { put_version(&src, &sb, "later", &data(600, 6), &[]).await });
    let out = Command::new(env!("CARGO_BIN_EXE_backbeat"))
        .args(["populate", "--scan", &format!("s3://{sb}"), "--config"])
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
    if scheduled.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_secs(2));
        assert!(
            real_versions(&dst, &da, "later").is_empty(),
            "replicated before the scheduled resume"
        );
    }
    wait_until(150, "replication after the scheduled resume", || {
        real_versions(&dst, &da, "later").len() == 1
    });
    assert!(
        scheduled.elapsed() >= Duration::from_secs(19),
        "resumed too early"
    );
    stop(run);
}

/// A sample's value in a Prometheus scrape (counters, gauges and untyped alike).
fn sample(scrape: &prometheus_parse::Scrape, name: &str, site: &str) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|m| m.metric == name && m.labels.get("site") == Some(site))
        .and_then(|m| match &m.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => Some(*v),
            prometheus_parse::Value::Histogram(b) => b.last().map(|b| b.count),
            _ => None,
        })
}

fn scrape(port: u16) -> prometheus_parse::Scrape {
    let (code, text) = http_get(port, "/metrics", None);
    assert_eq!(code, 200, "{text}");
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("Prometheus text format")
}

#[test]
fn per_object_progress_in_flight_pending_and_completed() {
    let s = servers();
    // The site's destination sits behind a proxy that holds the object's part bodies after
    // their first MiB: the copy stays in flight, part-way, until the test lets it go.
    let proxy = proxy::Proxy::start(&s.dest, false);
    proxy
        .faults
        .add("PUT", Some("/big?"), proxy::Kind::Hold, 1000);
    let (sb, da) = (bucket("prog-src"), bucket("prog-a"));
    let src = Client::new(endpoint(&s.source), None);
    let dst = Client::new(endpoint(&s.dest), None);
    let size = 40 * MIB;
    let body = data(size, 40);
    let (vid, small_vid) = block_on(async {
        make_bucket(&src, &sb, true).await;
        make_bucket(&dst, &da, true).await;
        let vid = put_version(&src, &sb, "big", &body, &[]).await;
        // Written but never announced: nothing replicates it.
        let small = put_version(&src, &sb, "dir/not announced", &data(1000, 1), &[]).await;
        (vid, small)
    });
    let port = free_port();
    let st = setup(
        &sb,
        &[("site-a", &proxy.url, &da)],
        &rules(&[rule("all", 1, "<Prefix></Prefix>", true, "site-a")]),
        &format!("\n[api]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let topics = kafka::Topics::new(&st.prefix);
    let run = spawn(&["run"], &st.config);
    wait_until(60, "the API", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    wait_until(60, "ready", || http_get(port, "/_/ready", None).0 == 200);
    produce(
        &topics.events,
        &[(
            format!("{sb}/big"),
            event("ObjectCreated:Put", &sb, "big", &vid, size),
        )],
    );
    let progress = |path: &str| {
        let (code, body) = http_get(port, path, None);
        (
            code,
            serde_json::from_str::<serde_json::Value>(&body).unwrap_or_default(),
        )
    };
    let big = format!("/_/metrics/crr/site-a/progress/{sb}/big?versionId={vid}");
    let mut seen = serde_json::Value::Null;
    wait_until(90, "the copy in flight, part-way", || {
        let (code, v) = progress(&big);
        seen = v.clone();
        code == 200
            && v["state"] == "IN_PROGRESS"
            && v["completed"].as_u64().is_some_and(|c| c >= MIB as u64)
    });
    let completed = seen["completed"].as_u64().unwrap();
    // At most 4 parts of 5 MiB are in flight (part_concurrency), all held: never the whole.
    assert!(completed < size as u64, "{seen}");
    assert_eq!(
        seen["pending"].as_u64().unwrap() + completed,
        size as u64,
        "{seen}"
    );
    assert_eq!(
        seen["progress"],
        format!("{}%", completed * 100 / size as u64),
        "{seen}"
    );
    assert!(seen["description"].is_string(), "{seen}");
    let m = scrape(port);
    assert_eq!(
        sample(&m, "backbeat_entries_in_flight", "site-a"),
        Some(1.0)
    );
    assert!(
        sample(&m, "backbeat_oldest_change_in_flight_seconds", "site-a").is_some_and(|a| a > 0.0),
        "the held change has an age"
    );
    // A version nobody announced: the destination lacks it, so it is pending.
    let enc = "dir/not%20announced";
    let (code, v) = progress(&format!(
        "/_/metrics/crr/site-a/progress/{sb}/{enc}?versionId={small_vid}"
    ));
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["state"], "PENDING", "{v}");
    assert_eq!(v["pending"], 1000, "{v}");
    assert_eq!(v["progress"], "0%", "{v}");
    // Unknown versions, keys and sites are named as such.
    let (code, v) = progress(&format!(
        "/_/metrics/crr/site-a/progress/{sb}/big?versionId=nosuchversion"
    ));
    assert_eq!(code, 404, "{v}");
    let (code, v) = progress(&format!("/_/metrics/crr/site-a/progress/{sb}/nosuchkey"));
    assert_eq!(code, 404, "{v}");
    assert_eq!(v["code"], "NoSuchKey", "{v}");
    for path in [
        format!("/_/metrics/crr/site-a/progress/{sb}/"),
        "/_/metrics/crr/site-a/progress//big".to_string(),
        "/_/metrics/crr/site-a/progress".to_string(),
    ] {
        let (code, body) = http_get(port, &path, None);
        assert!(
            code == 400 || code == 404,
            "{path}: a missing bucket or key is refused: {code} {body}"
        );
        assert!(body.contains("error"), "{path}: {body}");
    }
    let (code, v) = progress(&format!("/_/metrics/crr/nosite/progress/{sb}/big"));
    assert_eq!(code, 404, "{v}");
    assert!(v["error"].as_str().unwrap().contains("site-a"), "{v}");

    proxy.faults.release();
    wait_until(120, "big replicated", || {
        real_versions(&dst, &da, "big").len() == 1
    });
    assert!(real_versions(&dst, &da, "big")[0] == body, "bytes differ");
    let (code, v) = progress(&big);
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["state"], "COMPLETED", "{v}");
    assert_eq!(v["progress"], "100%", "{v}");
    assert_eq!(v["completed"], size as u64, "{v}");
    assert_eq!(v["pending"], 0, "{v}");
    // Without a version id: the latest version, here the same.
    let (code, v) = progress(&format!("/_/metrics/crr/site-a/progress/{sb}/big"));
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["state"], "COMPLETED", "{v}");
    assert_eq!(v["versionId"], vid.as_str(), "{v}");
    let m = scrape(port);
    assert_eq!(sample(&m, "backbeat_rpo_seconds", "site-a"), Some(1.0));
    assert_eq!(
        sample(&m, "backbeat_replication_latency_seconds", "site-a"),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, "backbeat_oldest_change_in_flight_seconds", "site-a"),
        Some(0.0)
    );
    stop(run);
    // After a restart nothing is in memory: the destination answers.
    let run = spawn_named(&["run"], &st.config, "run2");
    wait_until(60, "ready again", || api_ready(port));
    let (code, v) = progress(&big);
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["state"], "COMPLETED", "{v}");
    assert_eq!(v["completed"], size as u64, "{v}");
    stop(run);
}

/// Failed entries at scale: 100 000 failed records of `site-a` (written straight to the
/// failed topic, the site paused so that nothing runs them) are listed by
/// `backbeat failed list` and queued again by `backbeat failed retry`, a page (100) per
/// request: every one lands on the replication topic once, for `site-a` only, with its
/// attempt raised and a fresh patience.
#[test]
fn a_hundred_thousand_failed_entries_are_listed_and_retried() {
    const N: usize = 100_000;
    let e = api_engine("many");
    let api = format!("127.0.0.1:{}", e.port);
    let (code, _, err) = backbeat(&["pause", "site-a", "--api", &api]);
    assert_eq!(code, 0, "{err}");
    let topics = kafka::Topics::new(&e.st.prefix);
    let wrote = Instant::now();
    produce_failed(&topics.failed, &e.sb, N);
    let wrote = wrote.elapsed();
    let listed = Instant::now();
    let count = || {
        let (code, out, err) = backbeat(&[
            "failed", "list", "--site", "site-a", "--json", "--api", &api,
        ]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<serde_json::Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .len()
    };
    wait_until(180, "every failed entry listed", || count() == N);
    let listed = listed.elapsed();
    let retried = Instant::now();
    let (code, out, err) = backbeat(&["failed", "retry", "--site", "site-a", "--api", &api]);
    let retried = retried.elapsed();
    assert_eq!(
        (code, out.trim()),
        (0, format!("{N} entries queued again").as_str()),
        "{err}"
    );
    let entries = read_until_quiet(&topics.replication, Duration::from_secs(5));
    stop(e.run);
    eprintln!("{N} failed entries: written in {wrote:?}, listed in {listed:?} (last list), retried in {retried:?}");
    assert_eq!(entries.len(), N, "each queued once");
    let mut keys = std::collections::HashSet::new();
    for (_, v) in &entries {
        let v: serde_json::Value = serde_json::from_str(v).unwrap();
        assert_eq!(v["sites"], serde_json::json!(["site-a"]), "{v}");
        assert_eq!(v["attempt"], 4, "attempt raised: {v}");
        assert!(v.get("replay").is_none(), "a fresh patience: {v}");
        keys.insert(v["key"].as_str().unwrap().to_string());
    }
    assert_eq!(keys.len(), N, "every one, none twice");
}

/// Writes `n` failed records of site-a for versions of `bucket` to the failed topic, many
/// in flight at once.
fn produce_failed(topic: &str, bucket: &str, n: usize) {
    let (b, topic, bucket) = (broker(), topic.to_string(), bucket.to_string());
    block_on(async move {
        let p = kafka::producer(&b).unwrap();
        for chunk in (0..n).collect::<Vec<_>>().chunks(5000) {
            let sends = chunk.iter().map(|i| {
                let entry = format!(
                    r#"{{"v":1,"type":"put","bucket":"{bucket}","key":"k{i:06}","versionId":"v{i}","size":10,"sites":["site-a"],"attempt":3,"replay":{{"ticket":1,"step":2,"dueMs":1,"failedSinceMs":1}}}}"#
                );
                let entry = backbeat::queue::codec::ReplicationEntry::decode(entry.as_bytes()).unwrap();
                let key = backbeat::queue::codec::FailedRecord::key(&entry, "site-a");
                let r = backbeat::queue::codec::FailedRecord::new(entry, "site-a", None, "2026-12-02T00:00:00Z".into());
                let (p, topic) = (&p, &topic);
                async move {
                    let body = serde_json::to_vec(&r).unwrap();
                    kafka::send(p, topic, &key, Some(&body)).await.unwrap();
                }
            });
            futures_util::future::join_all(sends).await;
        }
    });
}

/// The retention guard: with the site paused, `/metrics` reports the age of the oldest
/// entry its group has not committed (`backbeat_oldest_unconsumed_entry_age_seconds`),
/// growing while it waits, and 0 once the site caught up.
#[test]
fn the_oldest_unconsumed_entry_is_measured_for_the_retention_alert() {
    let e = api_engine("retention");
    let api = format!("127.0.0.1:{}", e.port);
    let (code, _, err) = backbeat(&["pause", "site-a", "--api", &api]);
    assert_eq!(code, 0, "{err}");
    e.announce(&["r1"], 500);
    let age = || {
        let (_, text) = http_get(e.port, "/metrics", None);
        let line = text
            .lines()
            .find(|l| {
                l.starts_with("backbeat_oldest_unconsumed_entry_age_seconds{site=\"site-a\"}")
            })
            .map(str::to_string);
        line.and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    };
    wait_until(60, "an entry waiting", || age().is_some_and(|a| a > 0.0));
    std::thread::sleep(Duration::from_secs(3));
    let waited = age().unwrap();
    assert!(
        waited >= 3.0,
        "the age grows while the site is paused: {waited}"
    );
    let (code, _, err) = backbeat(&["resume", "site-a", "--api", &api]);
    assert_eq!(code, 0, "{err}");
    wait_until(90, "r1", || e.replicated("r1"));
    wait_until(30, "caught up", || age() == Some(0.0));
    stop(e.run);
}

/// Offsets are committed on an interval (`kafka.commit_interval_ms`, 3 s here), not after
/// each entry: while the engine runs, the site's group catches up with the entries it
/// replicated within the interval; a clean stop right after more entries finish (well
/// inside the next interval) commits them too, so a restart replays nothing.
#[test]
fn offsets_are_committed_while_running_and_at_a_clean_stop() {
    let e = api_engine_with("commits", "commit_interval_ms = 3000");
    let topics = Topics::new(&e.st.prefix);
    let group = kafka::replication_group(&e.st.prefix, "site-a");
    let reader = backbeat::queue::lag::GroupReader::new(&broker(), &topics.replication, &group)
        .expect("a group reader");
    e.announce(&["c1", "c2", "c3", "c4", "c5"], 300);
    wait_until(60, "5 keys replicated", || {
        ["c1", "c2", "c3", "c4", "c5"]
            .iter()
            .all(|k| e.replicated(k))
    });
    wait_until(30, "the group committed while running", || {
        reader.lag().is_ok_and(|lag| lag == 0)
    });
    e.announce(&["c6", "c7", "c8"], 300);
    wait_until(60, "3 more keys replicated", || {
        ["c6", "c7", "c8"].iter().all(|k| e.replicated(k))
    });
    let log = e.stop();
    assert_eq!(
        reader.lag().expect("the group's lag"),
        0,
        "a clean stop commits every finished entry"
    );
    assert!(log.contains("stopping: entries in flight finish"), "{log}");
    assert!(
        log.matches("role stopped").count() >= 2 && !log.contains("stop not finished"),
        "the populator and the site worker each say they stopped: {log}"
    );
}
