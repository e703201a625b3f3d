//! The engine riding out the real world, against real servers (moto, nisshi) and the fault
//! proxy: transfers longer than the consumer group's poll interval. Each test's figures are
//! in docs/reliability.md.

mod common;

use std::time::{Duration, Instant};

use backbeat::queue::kafka::Topics;
use backbeat::s3::Client;
use common::kafka::*;
use common::proxy::{Kind, Proxy};
use common::*;

/// A configuration written by `setup` with an 8 s poll interval (and a 3 s drain deadline,
/// which must be shorter), so that tests outlast it in seconds.
fn short_poll_interval(text: String) -> String {
    text.replace(
        "session_timeout_ms = 6000\n",
        "session_timeout_ms = 6000\nmax_poll_interval_ms = 8000\ndrain_deadline_seconds = 3\n",
    )
}

/// Every slot busy with a transfer that lasts longer than `max_poll_interval_ms` (8 s here;
/// the upload held by the proxy for 20 s, with `concurrency = 1`; at full timings the
/// issue's 100 s transfer against the default 60 s): the worker keeps polling its
/// consumer, with its partitions paused, so it is not evicted: the entry is copied once,
/// the one behind it once, and nothing is replayed.
#[test]
fn a_transfer_longer_than_the_poll_interval_does_not_evict_the_worker() {
    let s = servers();
    let (sb, da) = (bucket("busy-src"), bucket("busy-a"));
    let proxy = Proxy::start(&s.dest, false);
    let (src, dst) = (
        Client::new(endpoint(&s.source), None),
        Client::new(endpoint(&s.dest), None),
    );
    let (big, small) = (data(2 << 20, 1), data(3000, 2));
    let events = block_on(async {
        make_bucket(&src, &sb, true).await;
        make_bucket(&dst, &da, true).await;
        let vb = put_version(&src, &sb, "big", &big, &[]).await;
        let vs = put_version(&src, &sb, "small", &small, &[]).await;
        vec![
            (
                format!("{sb}/big"),
                event("ObjectCreated:Put", &sb, "big", &vb, big.len()),
            ),
            (
                format!("{sb}/small"),
                event("ObjectCreated:Put", &sb, "small", &vs, small.len()),
            ),
        ]
    });
    proxy.faults.add("PUT", Some("/big"), Kind::Hold, 1);
    let rule = rules(&[rule("all", 1, "<Prefix></Prefix>", true, "site-a")]);
    let st = setup(&sb, &[("site-a", &proxy.url, &da)], &rule, "");
    let (hold, poll_interval) = timing((20, 8), (100, 60));
    let text = std::fs::read_to_string(&st.config).unwrap();
    let text = timing(short_poll_interval(text.clone()), text).replace(
        "shards = 2\nconcurrency = 8\n",
        "shards = 1\nconcurrency = 1\n",
    );
    std::fs::write(&st.config, text).unwrap();
    let topics = Topics::new(&st.prefix);
    let run = spawn(&["run"], &st.config);
    produce(&topics.events, &events);
    wait_until(60, "the big upload held", || {
        proxy.faults.hits(Kind::Hold) >= 1
    });
    let held = Instant::now();
    std::thread::sleep(Duration::from_secs(hold));
    proxy.faults.release();
    wait_until(60, "both at the destination", || {
        real_versions(&dst, &da, "big").len() == 1 && real_versions(&dst, &da, "small").len() == 1
    });
    let waited = held.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    stop(run);
    eprintln!("slot busy for {waited:?} with max.poll.interval {poll_interval} s");
    let puts = |key: &str| {
        let log = proxy.faults.log.lock().unwrap();
        let path = format!("/{da}/{key}");
        let is_put = |l: &&(String, Option<Kind>)| {
            let target = l.0.split(' ').nth(1).unwrap_or("");
            l.0.starts_with("PUT ") && (target == path || target.starts_with(&format!("{path}?")))
        };
        log.iter().filter(is_put).count()
    };
    assert_eq!(puts("big"), 1, "the held upload was not replayed");
    assert_eq!(puts("small"), 1, "the entry behind it was copied once");
    assert_eq!(
        topic_len(&topics.status),
        2,
        "one outcome each, nothing replayed"
    );
    assert!(real_versions(&dst, &da, "big") == [big.clone()]);
    assert!(real_versions(&dst, &da, "small") == [small.clone()]);
    let log = std::fs::read_to_string(st.config.with_file_name("run.log")).unwrap();
    assert!(
        !log.contains("drain deadline passed"),
        "no revocation: {log}"
    );
}

/// The populator held on one batch for longer than `max_poll_interval_ms` (the source out
/// of reach: the proxy resets every connection for 15 s; the batch is retried every
/// second, nothing set aside since the source does not answer at all): it keeps polling its consumer meanwhile, so it is not evicted, and the batch's
/// entries are produced once, not again after a rejoin.
#[test]
fn a_populator_held_on_a_batch_is_not_evicted() {
    let s = servers();
    let (sb, da) = (bucket("held-src"), bucket("held-a"));
    let proxy = Proxy::start(&s.source, false);
    let (src, dst) = (
        Client::new(endpoint(&s.source), None),
        Client::new(endpoint(&s.dest), None),
    );
    let events = block_on(async {
        make_bucket(&src, &sb, true).await;
        make_bucket(&dst, &da, true).await;
        let xml = rules(&[rule("all", 1, "<Prefix></Prefix>", true, "site-a")]);
        src.put_bucket_replication(&sb, &xml).await.unwrap();
        let mut events = Vec::new();
        for k in ["a", "b", "c"] {
            let v = put_version(&src, &sb, k, &data(900, 5), &[]).await;
            events.push((
                format!("{sb}/{k}"),
                event("ObjectCreated:Put", &sb, k, &v, 900),
            ));
        }
        events
    });
    let st = setup(&sb, &[("site-a", &s.dest, &da)], "<unused/>", "");
    let text = short_poll_interval(std::fs::read_to_string(&st.config).unwrap())
        .replace("rules_file = \"rules.xml\"\n", "")
        .replace(
            &format!("endpoint = \"{}\"", s.source),
            &format!("endpoint = \"{}\"", proxy.url),
        );
    std::fs::write(&st.config, text).unwrap();
    let topics = Topics::new(&st.prefix);
    let run = spawn(&["run"], &st.config);
    let log = || std::fs::read_to_string(st.config.with_file_name("run.log")).unwrap_or_default();
    wait_until(60, "the engine started", || {
        log().contains("partitions assigned")
    });
    let down = |on: bool| {
        proxy
            .faults
            .down
            .store(on, std::sync::atomic::Ordering::SeqCst)
    };
    down(true);
    produce(&topics.events, &events);
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(15));
    down(false);
    for k in ["a", "b", "c"] {
        wait_until(120, k, || real_versions(&dst, &da, k).len() == 1);
    }
    let held = started.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    stop(run);
    eprintln!("batch held {held:?} with max.poll.interval 8 s");
    assert!(
        proxy.faults.hits(Kind::Reset) >= 8,
        "the batch was held past the interval"
    );
    let entries = read_until_quiet(&topics.replication, Duration::from_secs(3));
    let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys.len(), 3, "each event's entry produced once: {keys:?}");
    let text = log();
    assert!(
        !text.contains("set aside"),
        "nothing set aside while the source was out of reach: {text}"
    );
    for k in ["a", "b", "c"] {
        assert_eq!(real_versions(&dst, &da, k).len(), 1, "{k} copied once");
    }
}

/// The destination down for 15 s while entries arrive (every connection reset): the
/// shards' breakers open after a few failures, the entries wait instead of spending their
/// attempts (3 in this configuration, about a second of backoff), intake pauses, a probe
/// finds the site back, and every entry completes: none FAILED, nobody's manual work.
#[test]
fn a_site_outage_costs_time_not_failed_entries() {
    let s = servers();
    let (sb, da) = (bucket("down-src"), bucket("down-a"));
    let proxy = Proxy::start(&s.dest, false);
    let (src, dst) = (
        Client::new(endpoint(&s.source), None),
        Client::new(endpoint(&s.dest), None),
    );
    let keys: Vec<String> = (0..12).map(|i| format!("k{i}")).collect();
    let events = block_on(async {
        make_bucket(&src, &sb, true).await;
        make_bucket(&dst, &da, true).await;
        let mut events = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let v = put_version(&src, &sb, k, &data(1500 + i, i as u64), &[]).await;
            events.push((
                format!("{sb}/{k}"),
                event("ObjectCreated:Put", &sb, k, &v, 1500 + i),
            ));
        }
        events
    });
    let rule = rules(&[rule("all", 1, "<Prefix></Prefix>", true, "site-a")]);
    let st = setup(&sb, &[("site-a", &proxy.url, &da)], &rule, "");
    let topics = Topics::new(&st.prefix);
    proxy
        .faults
        .down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let run = spawn(&["run"], &st.config);
    produce(&topics.events, &events);
    let log = || std::fs::read_to_string(st.config.with_file_name("run.log")).unwrap_or_default();
    wait_until(60, "the breaker open", || {
        log().contains("site unavailable")
    });
    std::thread::sleep(Duration::from_secs(15));
    let resets = proxy.faults.hits(Kind::Reset);
    proxy
        .faults
        .down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let healed = Instant::now();
    for k in &keys {
        wait_until(90, k, || real_versions(&dst, &da, k).len() == 1);
    }
    let drained = healed.elapsed();
    let status = statuses(&topics.status, keys.len());
    stop(run);
    eprintln!(
        "outage: {resets} requests reset; all {} copied {drained:?} after the heal",
        keys.len()
    );
    let completed = status.iter().filter(|v| v["status"] == "COMPLETED").count();
    assert_eq!(
        completed,
        keys.len(),
        "every entry completed, none failed: {status:?}"
    );
    let text = log();
    assert!(text.contains("site available again"), "{text}");
    assert!(
        text.contains("replicated 12 versions") && text.contains(" 0 failed"),
        "{text}"
    );
    assert!(
        resets < 200,
        "the outage was probed, not hammered: {resets} resets"
    );
}

/// A missing-only scan where one key cannot be checked (the destination answers 403 to its
/// HEAD, every time): that key is skipped, named and counted, and the keys after it are
/// enqueued all the same; the command exits 1 and says what happened.
#[test]
fn a_key_that_cannot_be_checked_does_not_stop_the_scan() {
    let s = servers();
    let (sb, da) = (bucket("poison-src"), bucket("poison-a"));
    let proxy = Proxy::start(&s.dest, false);
    let (src, dst) = (
        Client::new(endpoint(&s.source), None),
        Client::new(endpoint(&s.dest), None),
    );
    block_on(async {
        make_bucket(&src, &sb, true).await;
        make_bucket(&dst, &da, true).await;
        for k in ["a", "b", "c"] {
            put_version(&src, &sb, k, &data(800, 9), &[]).await;
        }
    });
    proxy
        .faults
        .add("HEAD", Some(&format!("/{da}/b")), Kind::Forbidden, 1000);
    let rule = rules(&[rule("all", 1, "<Prefix></Prefix>", true, "site-a")]);
    let st = setup(&sb, &[("site-a", &proxy.url, &da)], &rule, "");
    let (code, out, err) = backbeat_env(
        &[
            "populate",
            "--scan",
            &format!("s3://{sb}"),
            "--missing-only",
            "--config",
            st.config.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 1, "{out}\n{err}");
    let summary: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(summary["entries_enqueued"], 2, "a and c: {summary}");
    assert_eq!(summary["keys_failed"], 1, "{summary}");
    let named = summary["first_key_failures"][0].as_str().unwrap_or("");
    assert!(
        named.starts_with("b: ") && named.contains("AccessDenied"),
        "{named}"
    );
    assert!(err.contains("1 keys could not be checked"), "{err}");
    let entries = read_until_quiet(&Topics::new(&st.prefix).replication, Duration::from_secs(3));
    let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys.iter().all(|k| !k.ends_with("/b")), "{keys:?}");
}

/// One key's copy refused with 503 SlowDown for a while (7 times: the first run's 3
/// attempts, the first replay's 3, then one more): after its attempts the entry goes to the
/// replay topics (2 s, then 3 s), not to FAILED. The key's next two versions, arriving
/// meanwhile, wait behind it instead of overtaking it, so the destination ends with all
/// three versions in the source's order; the other keys go on. Nothing FAILED.
#[test]
fn a_failing_version_is_replayed_and_its_key_waits_behind_it() {
    let s = servers();
    let (sb, da) = (bucket("replay-src"), bucket("replay-a"));
    let proxy = Proxy::start(&s.dest, false);
    let (src, dst) = (
        Client::new(endpoint(&s.source), None),
        Client::new(endpoint(&s.dest), None),
    );
    let hot: Vec<Vec<u8>> = (0..3).map(|i| data(2000 + i, i as u64)).collect();
    let put = |key: &str, body: &[u8]| {
        let v = block_on(put_version(&src, &sb, key, body, &[]));
        let e = event("ObjectCreated:Put", &sb, key, &v, body.len());
        (format!("{sb}/{key}"), e)
    };
    block_on(async {
        make_bucket(&src, &sb, true).await;
        make_bucket(&dst, &da, true).await;
    });
    proxy.faults.add("PUT", Some("/hot"), Kind::SlowDown, 7);
    let rule = rules(&[rule("all", 1, "<Prefix></Prefix>", true, "site-a")]);
    let extra = "\n[replay]\ndelays_seconds = [2, 3]\npatience_seconds = 600\n";
    let st = setup(&sb, &[("site-a", &proxy.url, &da)], &rule, extra);
    let topics = Topics::new(&st.prefix);
    let run = spawn(&["run"], &st.config);
    let first = put("hot", &hot[0]);
    produce(&topics.events, &[first, put("cold-0", &data(900, 9))]);
    let log = || std::fs::read_to_string(st.config.with_file_name("run.log")).unwrap_or_default();
    wait_until(60, "the first version sent to replay", || {
        log().contains("replayed in")
    });
    let later = [
        put("hot", &hot[1]),
        put("hot", &hot[2]),
        put("cold-1", &data(901, 10)),
    ];
    produce(&topics.events, &later);
    wait_until(60, "the cold keys copied while hot waits", || {
        real_versions(&dst, &da, "cold-1").len() == 1
    });
    let hot_meanwhile = real_versions(&dst, &da, "hot").len();
    wait_until(60, "the three versions of hot", || {
        real_versions(&dst, &da, "hot").len() == 3
    });
    let status = read_until_quiet(&topics.status, Duration::from_secs(3));
    stop(run);
    assert_eq!(
        hot_meanwhile, 0,
        "hot's later versions did not overtake its first"
    );
    assert!(
        real_versions(&dst, &da, "hot") == hot,
        "all three, in the source's order"
    );
    assert_eq!(proxy.faults.hits(Kind::SlowDown), 7);
    let of = |want: &str| {
        let is = |v: &&(String, String)| v.1.contains(&format!("\"status\":\"{want}\""));
        status.iter().filter(is).count()
    };
    assert_eq!(of("FAILED"), 0, "{status:?}");
    assert_eq!(
        of("PENDING"),
        2,
        "hot's first version replayed twice: {status:?}"
    );
    assert_eq!(of("COMPLETED"), 5, "{status:?}");
    assert!(
        !status.iter().any(|(_, v)| v.contains("superseded")),
        "nothing superseded: {status:?}"
    );
    let failed = read_until_quiet(&topics.failed, Duration::from_secs(2));
    assert!(
        failed.iter().all(|(_, v)| v.is_empty()),
        "only tombstones: {failed:?}"
    );
    let step1 = read_until_quiet(&topics.replay("site-a", 1), Duration::from_secs(2));
    assert_eq!(
        step1.len(),
        3,
        "hot's first version, and the two behind it: {step1:?}"
    );
    assert!(step1.iter().all(|(k, _)| k.ends_with("/hot")), "{step1:?}");
}

/// Three source buckets in the same batches of events: `healthy`; `flaky`, whose rules the
/// source refuses (503) four times; `poison`, whose rules it always refuses. Healthy's
/// objects are copied without waiting for the others; flaky's changes are set aside after
/// its first change's attempts (the next ones of the moment without asking), replayed a
/// second later and copied; poison's are replayed until their
/// patience (3 s) is spent, then parked on the failed topic with the reason. Nobody's batch
/// is held, nothing is lost silently.
#[test]
fn a_poison_bucket_is_set_aside_and_the_others_go_on() {
    let s = servers();
    let names = ["healthy", "flaky", "poison"].map(|n| (bucket(n), bucket(&format!("{n}-a"))));
    let proxy = Proxy::start(&s.source, false);
    let (src, dst) = (
        Client::new(endpoint(&s.source), None),
        Client::new(endpoint(&s.dest), None),
    );
    let mut events = Vec::new();
    block_on(async {
        for (sb, da) in &names {
            make_bucket(&src, sb, true).await;
            make_bucket(&dst, da, true).await;
            let xml = rules(&[rule("all", 1, "<Prefix></Prefix>", true, "site-a")]);
            src.put_bucket_replication(sb, &xml).await.unwrap();
        }
        for i in 0..4 {
            for (sb, _) in &names {
                let k = format!("k{i}");
                let v = put_version(&src, sb, &k, &data(800 + i, i as u64), &[]).await;
                events.push((
                    format!("{sb}/{k}"),
                    event("ObjectCreated:Put", sb, &k, &v, 800 + i),
                ));
            }
        }
    });
    let [(healthy, ha), (flaky, fa), (poison, pa)] = &names;
    proxy.faults.add(
        "GET",
        Some(&format!("/{flaky}?replication")),
        Kind::SlowDown,
        4,
    );
    proxy.faults.add(
        "GET",
        Some(&format!("/{poison}?replication")),
        Kind::SlowDown,
        10_000,
    );
    let st = setup(
        healthy,
        &[("site-a", &s.dest, ha)],
        "<unused/>",
        "\n[replay]\ndelays_seconds = [1]\npatience_seconds = 3\n",
    );
    let mapping =
        format!("buckets = {{ {healthy} = \"{ha}\", {flaky} = \"{fa}\", {poison} = \"{pa}\" }}");
    let text = std::fs::read_to_string(&st.config)
        .unwrap()
        .replace("rules_file = \"rules.xml\"\n", "")
        .replace(
            &format!("buckets = [\"{healthy}\"]"),
            &format!("buckets = [\"{healthy}\", \"{flaky}\", \"{poison}\"]"),
        )
        .replace(&format!("buckets = {{ {healthy} = \"{ha}\" }}"), &mapping)
        .replace(
            &format!("endpoint = \"{}\"", s.source),
            &format!("endpoint = \"{}\"", proxy.url),
        );
    std::fs::write(&st.config, text).unwrap();
    let topics = Topics::new(&st.prefix);
    let run = spawn(&["run"], &st.config);
    wait_until(60, "the engine ready", || {
        std::fs::read_to_string(st.config.with_file_name("run.log"))
            .is_ok_and(|l| l.contains("partitions assigned"))
    });
    let started = Instant::now();
    produce(&topics.events, &events);
    let keys = ["k0", "k1", "k2", "k3"];
    for k in keys {
        wait_until(60, k, || real_versions(&dst, ha, k).len() == 1);
    }
    let healthy_done = started.elapsed();
    for k in keys {
        wait_until(60, k, || real_versions(&dst, fa, k).len() == 1);
    }
    let flaky_done = started.elapsed();
    wait_until(60, "poison's changes parked", || {
        let failed = read_until_quiet(&topics.failed, Duration::from_millis(500));
        failed
            .iter()
            .filter(|(k, _)| k.starts_with("change/"))
            .count()
            == 4
    });
    let parked = started.elapsed();
    stop(run);
    let asked = |b: &str| {
        let log = proxy.faults.log.lock().unwrap();
        log.iter()
            .filter(|(l, _)| l.contains(&format!("/{b}?replication")))
            .count()
    };
    let poison_asked = asked(poison);
    eprintln!("poison: healthy copied in {healthy_done:?}, flaky in {flaky_done:?}, poison parked after {parked:?}; poison's rules asked {poison_asked} times");
    let failed = read_until_quiet(&topics.failed, Duration::from_secs(1));
    for (k, v) in failed.iter().filter(|(k, _)| k.starts_with("change/")) {
        assert!(k.starts_with(&format!("change/{poison}/")), "{k}");
        assert!(
            v.contains("SlowDown") && v.contains(&format!("rules of bucket {poison}")),
            "{v}"
        );
    }
    for k in keys {
        assert!(
            real_versions(&dst, pa, k).is_empty(),
            "nothing of poison replicated"
        );
    }
    let replayed = read_until_quiet(&topics.events_replay(0), Duration::from_secs(1));
    let of = |b: &str| {
        replayed
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{b}/")))
            .count()
    };
    assert_eq!(of(healthy), 0, "{replayed:?}");
    // How many of flaky's changes were set aside depends on how the events were batched.
    assert!(
        (1..=4).contains(&of(flaky)),
        "flaky's changes replayed: {replayed:?}"
    );
    assert!(
        of(poison) >= 8,
        "poison's replayed until its patience: {replayed:?}"
    );
}

/// A hot key behind a slow head: its first version's upload is held by the proxy, and 2 500
/// more entries of the key arrive behind it. The worker parks at most 1 000 of them in
/// memory (`backbeat_parked_entries`), pausing that partition; keys of other partitions are
/// copied meanwhile. (The engine is stopped with the head still held: nothing is committed
/// past it.)
#[test]
fn a_hot_key_behind_a_slow_head_parks_a_bounded_number_of_entries() {
    let s = servers();
    let (sb, da) = (bucket("hotkey-src"), bucket("hotkey-a"));
    let proxy = Proxy::start(&s.dest, false);
    let (src, dst) = (
        Client::new(endpoint(&s.source), None),
        Client::new(endpoint(&s.dest), None),
    );
    let head = data(2 << 20, 3);
    let entry = |key: &str, version: &str, size: usize| {
        format!(
            r#"{{"v":1,"type":"put","bucket":"{sb}","key":"{key}","versionId":"{version}","size":{size},"sites":["site-a"]}}"#
        )
    };
    let mut first = Vec::new();
    block_on(async {
        make_bucket(&src, &sb, true).await;
        make_bucket(&dst, &da, true).await;
        let v = put_version(&src, &sb, "hot", &head, &[]).await;
        first.push((format!("{sb}/hot"), entry("hot", &v, head.len())));
    });
    let others: Vec<(String, String)> = (0..8)
        .map(|i| {
            let k = format!("o{i}");
            let v = block_on(put_version(&src, &sb, &k, &data(700, i), &[]));
            (format!("{sb}/{k}"), entry(&k, &v, 700))
        })
        .collect();
    proxy.faults.add("PUT", Some("/hot"), Kind::Hold, 1);
    let port = free_port();
    let rule = rules(&[rule("all", 1, "<Prefix></Prefix>", true, "site-a")]);
    let st = setup(
        &sb,
        &[("site-a", &proxy.url, &da)],
        &rule,
        &format!("\n[api]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let text = short_poll_interval(std::fs::read_to_string(&st.config).unwrap());
    std::fs::write(&st.config, text).unwrap();
    let topics = Topics::new(&st.prefix);
    let run = spawn(&["run"], &st.config);
    produce(&topics.replication, &first);
    wait_until(60, "the head's upload held", || {
        proxy.faults.hits(Kind::Hold) >= 1
    });
    let behind: Vec<(String, String)> = (0..2500)
        .map(|i| (format!("{sb}/hot"), entry("hot", &format!("later-{i}"), 10)))
        .collect();
    let hot_partition = produce_many(&topics.replication, &behind)[0];
    let other_partitions = produce_many(&topics.replication, &others);
    let parked = || {
        let (_, text) = http_get(port, "/metrics", None);
        let line = text
            .lines()
            .find(|l| l.starts_with("backbeat_parked_entries{"))
            .unwrap_or("x 0")
            .to_string();
        line.rsplit(' ').next().unwrap().parse::<u64>().unwrap()
    };
    let mut most = 0;
    wait_until(60, "1000 entries parked", || {
        most = most.max(parked());
        most >= 1000
    });
    for ((k, _), p) in others.iter().zip(&other_partitions) {
        let key = k.rsplit('/').next().unwrap();
        if *p != hot_partition {
            wait_until(60, key, || real_versions(&dst, &da, key).len() == 1);
        }
    }
    for _ in 0..10 {
        most = most.max(parked());
        std::thread::sleep(Duration::from_millis(300));
    }
    let log = std::fs::read_to_string(st.config.with_file_name("run.log")).unwrap();
    let head_meanwhile = real_versions(&dst, &da, "hot").len();
    stop(run);
    eprintln!("hot key: at most {most} entries parked of 2500 behind the head");
    assert!(most <= 1000 + 16, "parked entries bounded: {most}");
    assert!(
        log.contains("partition paused: too many entries wait"),
        "{log}"
    );
    assert!(
        other_partitions.iter().any(|p| *p != hot_partition),
        "some key elsewhere"
    );
    assert_eq!(head_meanwhile, 0, "the head was still held");
}

/// Produces many messages at once; returns the partition each landed in.
fn produce_many(topic: &str, items: &[(String, String)]) -> Vec<i32> {
    let (b, topic, items) = (broker(), topic.to_string(), items.to_vec());
    block_on(async move {
        let p = backbeat::queue::kafka::producer(&b).unwrap();
        let sends = items.iter().map(|(k, v)| {
            let (p, topic) = (&p, &topic);
            async move {
                backbeat::queue::kafka::send(p, topic, k, Some(v.as_bytes()))
                    .await
                    .unwrap()
                    .0
            }
        });
        futures_util::future::join_all(sends).await
    })
}

/// SIGKILL while an entry waits for its replay: the engine is killed during the entry's
/// 5 s delay, the fault is gone, and a new engine's replayer finds the entry on the replay
/// topic (its offset not committed) and sends it back: the version is copied, nothing
/// FAILED, nothing lost.
#[test]
fn an_entry_waiting_for_its_replay_survives_sigkill() {
    let s = servers();
    let (sb, da) = (bucket("replaykill-src"), bucket("replaykill-a"));
    let proxy = Proxy::start(&s.dest, false);
    let (src, dst) = (
        Client::new(endpoint(&s.source), None),
        Client::new(endpoint(&s.dest), None),
    );
    let body = data(1500, 4);
    let events = block_on(async {
        make_bucket(&src, &sb, true).await;
        make_bucket(&dst, &da, true).await;
        let v = put_version(&src, &sb, "k", &body, &[]).await;
        vec![(
            format!("{sb}/k"),
            event("ObjectCreated:Put", &sb, "k", &v, body.len()),
        )]
    });
    proxy.faults.add("PUT", Some("/k"), Kind::SlowDown, 3);
    let rule = rules(&[rule("all", 1, "<Prefix></Prefix>", true, "site-a")]);
    let extra = "\n[replay]\ndelays_seconds = [5]\n";
    let st = setup(&sb, &[("site-a", &proxy.url, &da)], &rule, extra);
    let text = short_poll_interval(std::fs::read_to_string(&st.config).unwrap());
    std::fs::write(&st.config, text).unwrap();
    let topics = Topics::new(&st.prefix);
    let mut first = spawn_named(&["run"], &st.config, "first");
    produce(&topics.events, &events);
    let log = |name: &str| {
        std::fs::read_to_string(st.config.with_file_name(format!("{name}.log"))).unwrap_or_default()
    };
    wait_until(60, "the entry sent to replay", || {
        log("first").contains("replayed in")
    });
    first.kill().unwrap();
    first.wait().unwrap();
    drop(first);
    assert_eq!(proxy.faults.hits(Kind::SlowDown), 3);
    let killed = Instant::now();
    let second = spawn_named(&["run"], &st.config, "second");
    wait_until(90, "k copied by the second engine", || {
        real_versions(&dst, &da, "k").len() == 1
    });
    let copied = killed.elapsed();
    let status = read_until_quiet(&topics.status, Duration::from_secs(2));
    stop(second);
    eprintln!("replay after SIGKILL: copied {copied:?} after the kill");
    assert!(real_versions(&dst, &da, "k") == [body.clone()]);
    let completed = status
        .iter()
        .filter(|(_, v)| v.contains("\"status\":\"COMPLETED\""))
        .count();
    let failed = status
        .iter()
        .filter(|(_, v)| v.contains("\"status\":\"FAILED\""))
        .count();
    assert_eq!((completed, failed), (1, 0), "{status:?}");
}

/// A missing-only scan skips what is already being taken care of: of four versions
/// missing at site-a, one is FAILED there (its failed record on the failed topic) and one
/// waits on the site's replay topic; the third is new and the fourth's failure was cleared
/// (its record followed by a tombstone): those two are enqueued. (Before, every scan
/// enqueued every missing version again, to fail again or to go behind its replay.)
#[test]
fn a_rescan_skips_versions_failed_or_waiting_for_a_replay() {
    let s = servers();
    let (sb, da) = (bucket("outst-src"), bucket("outst-a"));
    let src = Client::new(endpoint(&s.source), None);
    let dst = Client::new(endpoint(&s.dest), None);
    let versions: Vec<String> = block_on(async {
        make_bucket(&src, &sb, true).await;
        make_bucket(&dst, &da, true).await;
        let mut out = Vec::new();
        for k in ["failed", "waiting", "new", "cleared"] {
            out.push(put_version(&src, &sb, k, &data(600, 2), &[]).await);
        }
        out
    });
    let rule = rules(&[rule("all", 1, "<Prefix></Prefix>", true, "site-a")]);
    let st = setup(&sb, &[("site-a", &s.dest, &da)], &rule, "");
    let topics = Topics::new(&st.prefix);
    let scan = || {
        backbeat_env(
            &[
                "populate",
                "--scan",
                &format!("s3://{sb}"),
                "--missing-only",
                "--config",
                st.config.to_str().unwrap(),
            ],
            &[],
        )
    };
    // A first scan creates the topics (and enqueues all three).
    let (code, out, err) = scan();
    assert_eq!(code, 0, "{out}\n{err}");
    let entry = |k: &str, v: &str| {
        format!(
            r#"{{"v":1,"type":"put","bucket":"{sb}","key":"{k}","versionId":"{v}","size":600,"sites":["site-a"],"replay":{{"ticket":1,"step":0,"dueMs":4102444800000,"failedSinceMs":1}}}}"#
        )
    };
    let failed =
        backbeat::queue::codec::ReplicationEntry::decode(entry("failed", &versions[0]).as_bytes())
            .unwrap();
    let record = backbeat::queue::codec::FailedRecord::new(
        failed.clone(),
        "site-a",
        None,
        "2026-12-02T00:00:00Z".into(),
    );
    let key = backbeat::queue::codec::FailedRecord::key(&failed, "site-a");
    produce(
        &topics.failed,
        &[(key, serde_json::to_string(&record).unwrap())],
    );
    produce(
        &topics.replay("site-a", 0),
        &[(format!("{sb}/waiting"), entry("waiting", &versions[1]))],
    );
    // The site's group has not consumed the first scan's entries: the scan would wait for
    // it; --no-wait enqueues at once (what the outstanding check is about).
    let (code, out, err) = backbeat_env(
        &[
            "populate",
            "--scan",
            &format!("s3://{sb}"),
            "--missing-only",
            "--no-wait",
            "--config",
            st.config.to_str().unwrap(),
        ],
        &[],
    );
    assert!(code == 0, "{out}\n{err}");
    let summary: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(summary["outstanding"], 2, "{summary}");
    assert_eq!(summary["entries_enqueued"], 2, "{summary}");
    // Both scans' entries: the failed and the waiting versions were enqueued by the first
    // scan only. (Read back from the topic, a batch's last record can stay hidden on nisshi,
    // whose high watermark lags by one: counts are upper bounds, the summary exact.)
    let entries = read_until_quiet(&topics.replication, Duration::from_secs(2));
    let times = |k: &str| {
        let key = format!("{sb}/{k}");
        entries.iter().filter(|(k, _)| *k == key).count()
    };
    assert!(
        times("failed") <= 1 && times("waiting") <= 1,
        "not enqueued again: {entries:?}"
    );
}

/// A steady stream through an outage: 10 keys get a new version every 200 ms for 40 s (200
/// versions), and the destination goes down (every connection reset) from the 10th second
/// for 20 s (at full timings: 180 s, 900 versions, down from the 20th second for the
/// issue's 2 minutes). Nothing FAILED, nothing superseded, every
/// key ends with its 20 versions in the source's order; the figures (time to drain after
/// the heal, the engine's peak RSS) go to docs/reliability.md.
#[test]
fn a_steady_stream_rides_out_an_outage_in_order() {
    let s = servers();
    let (sb, da) = (bucket("steady-src"), bucket("steady-a"));
    let proxy = Proxy::start(&s.dest, false);
    let (src, dst) = block_on(versioned_pair(&s, &sb, &da));
    let rule = rules(&[rule("all", 1, "<Prefix></Prefix>", true, "site-a")]);
    let st = setup(&sb, &[("site-a", &proxy.url, &da)], &rule, "");
    let topics = Topics::new(&st.prefix);
    let run = spawn(&["run"], &st.config);
    let log = || std::fs::read_to_string(st.config.with_file_name("run.log")).unwrap_or_default();
    wait_until(60, "the engine started", || {
        log().contains("partitions assigned")
    });
    let pid = run.id();
    let rss = move || rss_kb(pid);
    let (keys, rounds) = (10, timing(20, 90));
    let (down_from, up_from) = timing((10, 30), (20, 140));
    let started = Instant::now();
    let mut peak = 0;
    let (mut down_at, mut healed_at) = (None, None);
    let b = broker();
    block_on(async {
        let p = backbeat::queue::kafka::producer(&b).unwrap();
        for n in 0..keys * rounds {
            let k = format!("k{}", n % keys);
            let v = put_version(&src, &sb, &k, &data(700 + n, n as u64), &[]).await;
            let e = event("ObjectCreated:Put", &sb, &k, &v, 700 + n);
            let key = format!("{sb}/{k}");
            backbeat::queue::kafka::send(&p, &topics.events, &key, Some(e.as_bytes()))
                .await
                .unwrap();
            let t = started.elapsed();
            if down_at.is_none() && t >= Duration::from_secs(down_from) {
                proxy
                    .faults
                    .down
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                down_at = Some(t);
            }
            if healed_at.is_none() && t >= Duration::from_secs(up_from) {
                proxy
                    .faults
                    .down
                    .store(false, std::sync::atomic::Ordering::SeqCst);
                healed_at = Some(Instant::now());
            }
            peak = peak.max(rss());
            let next = Duration::from_millis(200) * (n as u32 + 1);
            glommio::timer::sleep(next.saturating_sub(started.elapsed())).await;
        }
    });
    proxy
        .faults
        .down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let healed_at = healed_at.unwrap_or_else(Instant::now);
    let last_written = healed_at.elapsed();
    for i in 0..keys {
        let k = format!("k{i}");
        wait_until(timing(120, 300), &k, || {
            real_versions(&dst, &da, &k).len() == rounds
        });
        peak = peak.max(rss());
    }
    let drained = healed_at.elapsed();
    let status = read_until_quiet(&topics.status, Duration::from_secs(3));
    let text = log();
    stop(run);
    let resets = proxy.faults.hits(Kind::Reset);
    let pending = status
        .iter()
        .filter(|(_, v)| v.contains("\"PENDING\""))
        .count();
    eprintln!("steady outage: {} versions in {:?}, down for {} s ({resets} resets), the last version written {last_written:?} and all copied {drained:?} after the heal, peak RSS {peak} kB", keys * rounds, started.elapsed(), up_from - down_from);
    for i in 0..keys {
        let k = format!("k{i}");
        let want: Vec<Vec<u8>> = (0..rounds)
            .map(|r| {
                let n = r * keys + i;
                data(700 + n, n as u64)
            })
            .collect();
        assert!(
            real_versions(&dst, &da, &k) == want,
            "{k}: every version, in order"
        );
    }
    assert!(
        !status.iter().any(|(_, v)| v.contains("\"FAILED\"")),
        "nothing FAILED"
    );
    assert_eq!(pending, 0, "no entry sent to replay for the outage");
    assert!(
        !status.iter().any(|(_, v)| v.contains("superseded")),
        "nothing superseded"
    );
    assert!(
        text.contains("site unavailable") && text.contains("site available again"),
        "the breaker opened and closed"
    );
    assert!(resets > 0);
}

/// A slow link with a multipart copy: a 10 MiB object in 5 MiB parts through a proxy that
/// forwards request bodies at 384 KiB/s, with the site's own `io_idle_timeout_seconds = 3`
/// (the issue's 64 KB/s, scaled so that each part still takes several times the timeout;
/// at full timings 64 KB/s itself, with the default 60 s idle timeout).
/// The parts keep moving, so they are never cut: the object is copied at its first
/// attempt, byte for byte.
#[test]
fn a_multipart_copy_over_a_slow_link_outlasts_the_idle_timeout() {
    let s = servers();
    let (sb, da) = (bucket("slowmp-src"), bucket("slowmp-a"));
    let (rate, idle) = timing((384 * 1024, 3), (64_000, 60));
    let proxy = Proxy::start_throttled(&s.dest, rate);
    let (src, dst) = (
        Client::new(endpoint(&s.source), None),
        Client::new(endpoint(&s.dest), None),
    );
    let body = data(10 << 20, 6);
    let events = block_on(async {
        make_bucket(&src, &sb, true).await;
        make_bucket(&dst, &da, true).await;
        let v = put_version(&src, &sb, "big", &body, &[]).await;
        vec![(
            format!("{sb}/big"),
            event("ObjectCreated:Put", &sb, "big", &v, body.len()),
        )]
    });
    let rule = rules(&[rule("all", 1, "<Prefix></Prefix>", true, "site-a")]);
    let st = setup(&sb, &[("site-a", &proxy.url, &da)], &rule, "");
    let text = std::fs::read_to_string(&st.config).unwrap().replace(
        "verify_after_write = true\n",
        &format!("verify_after_write = true\nio_idle_timeout_seconds = {idle}\n"),
    );
    std::fs::write(&st.config, text).unwrap();
    let topics = Topics::new(&st.prefix);
    let run = spawn(&["run"], &st.config);
    let started = Instant::now();
    produce(&topics.events, &events);
    wait_until(timing(180, 600), "big copied", || {
        real_versions(&dst, &da, "big").len() == 1
    });
    let took = started.elapsed();
    let status = read_until_quiet(&topics.status, Duration::from_secs(2));
    stop(run);
    eprintln!(
        "slow link: 10 MiB in 5 MiB parts at {rate} B/s with a {idle} s idle timeout: {took:?}"
    );
    assert!(
        real_versions(&dst, &da, "big") == [body.clone()],
        "byte for byte"
    );
    assert!(
        took > Duration::from_secs(10),
        "the link was slow enough to matter: {took:?}"
    );
    let outcome: Vec<&str> = status.iter().map(|(_, v)| v.as_str()).collect();
    assert_eq!(outcome.len(), 1, "{outcome:?}");
    assert!(
        outcome[0].contains("\"COMPLETED\"") && outcome[0].contains("\"attempt\":1"),
        "first attempt: {outcome:?}"
    );
}

/// Memory during an outage with a large backlog arriving: the destination down, then
/// 100 000 entries produced at once. The shards' breakers open on the first entries and
/// hold intake, so the backlog stays in Kafka: the engine's RSS, sampled every second for
/// 30 s (the issue's 10 minutes at full timings, sampled every 10 s), stays within 64 MiB
/// of idle and flat once librdkafka's first prefetch is in (figures in docs/reliability.md).
#[test]
fn memory_stays_bounded_while_a_down_site_gets_a_large_backlog() {
    let s = servers();
    let (sb, da) = (bucket("rss-src"), bucket("rss-a"));
    let proxy = Proxy::start(&s.dest, false);
    let dst = Client::new(endpoint(&s.dest), None);
    let src = Client::new(endpoint(&s.source), None);
    block_on(async {
        make_bucket(&src, &sb, true).await;
        make_bucket(&dst, &da, true).await;
    });
    let rule = rules(&[rule("all", 1, "<Prefix></Prefix>", true, "site-a")]);
    let st = setup(&sb, &[("site-a", &proxy.url, &da)], &rule, "");
    let text = short_poll_interval(std::fs::read_to_string(&st.config).unwrap());
    std::fs::write(&st.config, text).unwrap();
    let topics = Topics::new(&st.prefix);
    let run = spawn(&["run"], &st.config);
    let log = || std::fs::read_to_string(st.config.with_file_name("run.log")).unwrap_or_default();
    wait_until(60, "the engine started", || {
        log().contains("partitions assigned")
    });
    let pid = run.id();
    let rss = move || rss_kb(pid);
    let idle = rss();
    proxy
        .faults
        .down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let entries: Vec<(String, String)> = (0..100_000)
        .map(|i| {
            let k = format!("k{i:06}");
            let e = format!(r#"{{"v":1,"type":"put","bucket":"{sb}","key":"{k}","versionId":"v{i}","size":1000,"sites":["site-a"]}}"#);
            (format!("{sb}/{k}"), e)
        })
        .collect();
    produce_many(&topics.replication, &entries);
    wait_until(60, "the breaker open", || {
        log().contains("site unavailable")
    });
    let mut samples = Vec::new();
    let (n, every) = timing((30, 1), (60, 10));
    for _ in 0..n {
        samples.push(rss());
        std::thread::sleep(Duration::from_secs(every));
    }
    let in_flight = {
        let text = log();
        text.matches("entry failed").count()
    };
    stop(run);
    let peak = *samples.iter().max().unwrap();
    eprintln!(
        "outage with 100000 entries: RSS idle {idle} kB, then {:?} kB (peak {peak} kB)",
        samples
    );
    assert!(samples.iter().all(|s| *s > 0), "sampled the engine");
    assert_eq!(in_flight, 0, "no entry failed: they wait");
    // librdkafka prefetches before the breaker pauses intake: memory rises in the first
    // seconds, then stays flat. Bounded (within 64 MiB of idle) and flat once settled.
    let settled = samples[samples.len() / 6];
    let last = samples[samples.len() - 1];
    assert!(
        peak <= idle + 64 * 1024,
        "bounded: {idle} kB idle, {peak} kB peak"
    );
    assert!(
        last <= settled + settled / 10,
        "flat while the backlog waits: {samples:?}"
    );
}

/// The resident memory of process `pid`, in KiB (0 once it is gone).
fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with("VmRSS:"));
    line.and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// CPU time (user and system) of process `pid` so far, in seconds (0 once it is gone).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    f.iter().sum::<u64>() as f64 / hz
}

/// `backbeat_versions_copied_total` of `site-a`, from the engine's `/metrics`.
fn copied(port: u16) -> u64 {
    let (_, text) = http_get(port, "/metrics", None);
    text.lines()
        .filter(|l| l.starts_with("backbeat_versions_copied_total{") && l.contains("site-a"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Writes `n` objects of `size` bytes, `{prefix}{i:06}`, 16 at a time; (key, version id).
fn write_objects(
    src: &Client,
    sb: &str,
    prefix: &str,
    n: usize,
    size: usize,
) -> Vec<(String, String)> {
    block_on(async {
        let mut out = Vec::with_capacity(n);
        for chunk in (0..n).collect::<Vec<_>>().chunks(16) {
            let puts = chunk.iter().map(|i| async move {
                let k = format!("{prefix}{i:06}");
                let v = put_version(src, sb, &k, &data(size, *i as u64), &[]).await;
                (k, v)
            });
            out.extend(futures_util::future::join_all(puts).await);
        }
        out
    })
}

/// The event of a version written now (its `eventTime` is when it is sent, so the status
/// topic's `latency_ms` is the time from the event to the replica).
fn event_now(sb: &str, key: &str, vid: &str, size: usize) -> String {
    let now = backbeat::time::rfc3339(std::time::SystemTime::now());
    event("ObjectCreated:Put", sb, key, vid, size).replace("2026-11-25T10:00:00.000Z", &now)
}

/// What one window of the steady load measured.
struct LoadWindow {
    latency: hdrhistogram::Histogram<u64>,
    rss_kb: u64,
    cpu_s: f64,
}

/// Steady load with no fault: the saturating rate is measured first (a burst of entries
/// through the engine, moto on both sides), then events come at half that rate for 90 s,
/// in windows of 30 s (10 minutes in windows of a minute at full timings). Per window:
/// the event-to-replica latency (p50, p99, p99.9) of the versions whose events it sent,
/// and the engine's RSS and CPU time. Every version arrives, exactly once; memory does
/// not drift (the last window's RSS within a fifth, or 16 MiB, of the first's). Latency
/// and CPU are reported for docs/reliability.md, not asserted.
#[test]
fn a_steady_load_at_half_the_saturating_rate_does_not_drift() {
    let s = servers();
    let (sb, da) = (bucket("load-src"), bucket("load-a"));
    let (src, dst) = block_on(versioned_pair(&s, &sb, &da));
    let (burst, seconds, window) = timing((300, 90, 30), (1000, 600, 60));
    let size = 4096;
    let burst_keys = write_objects(&src, &sb, "b", burst, size);
    let port = free_port();
    let rule = rules(&[rule("all", 1, "<Prefix></Prefix>", true, "site-a")]);
    let api = format!("\n[api]\nlisten = \"127.0.0.1:{port}\"\n");
    let st = setup(&sb, &[("site-a", &s.dest, &da)], &rule, &api);
    let topics = Topics::new(&st.prefix);
    let run = spawn(&["run"], &st.config);
    wait_until(60, "the engine ready", || api_ready(port));
    let t0 = Instant::now();
    let events: Vec<(String, String)> = burst_keys
        .iter()
        .map(|(k, v)| (format!("{sb}/{k}"), event_now(&sb, k, v, size)))
        .collect();
    produce(&topics.events, &events);
    wait_until(600, "the burst copied", || copied(port) >= burst as u64);
    let saturating = burst as f64 / t0.elapsed().as_secs_f64();
    let rate = saturating / 2.0;
    let count = (rate * seconds as f64).ceil() as usize;
    let keys = write_objects(&src, &sb, "s", count, size);
    let samples = steady_load(&topics.events, &sb, &keys, size, rate, window, run.id());
    wait_until(600, "the steady load copied", || {
        copied(port) >= (burst + count) as u64
    });
    let status = read_until_quiet(&topics.status, Duration::from_secs(3));
    stop(run);
    let windows = load_windows(&status, &samples, rate, window);
    report_load(saturating, rate, window, &windows);
    let done: Vec<&str> = status
        .iter()
        .filter(|(k, v)| k.starts_with(&format!("{sb}/s")) && v.contains("\"COMPLETED\""))
        .map(|(k, _)| k.as_str())
        .collect();
    let unique: std::collections::BTreeSet<&&str> = done.iter().collect();
    assert_eq!(done.len(), count, "one outcome per version");
    assert_eq!(unique.len(), count, "every version, once");
    assert!(!status.iter().any(|(_, v)| v.contains("\"FAILED\"")));
    let at_dest: usize = block_on(all_versions(&dst, &da))
        .values()
        .map(Vec::len)
        .sum();
    assert_eq!(at_dest, burst + count, "every version at the destination");
    assert!(
        windows.iter().all(|w| !w.latency.is_empty()),
        "each window measured"
    );
    let (first, last) = (windows[0].rss_kb, windows[windows.len() - 1].rss_kb);
    assert!(first > 0 && last > 0, "the engine's memory was sampled");
    assert!(
        last <= first + (first / 5).max(16 << 10),
        "memory does not drift: {first} kB in the first window, {last} kB in the last"
    );
}

/// Sends an event for each of `keys` at `rate` per second, each stamped when sent; samples
/// the engine's (RSS kB, CPU s) at the start and at the end of each window.
fn steady_load(
    topic: &str,
    sb: &str,
    keys: &[(String, String)],
    size: usize,
    rate: f64,
    window: u64,
    pid: u32,
) -> Vec<(u64, f64)> {
    let b = broker();
    let mut samples = vec![(rss_kb(pid), cpu_seconds(pid))];
    let started = Instant::now();
    block_on(async {
        let p = backbeat::queue::kafka::producer(&b).unwrap();
        for (i, (k, v)) in keys.iter().enumerate() {
            let due = Duration::from_secs_f64(i as f64 / rate);
            glommio::timer::sleep(due.saturating_sub(started.elapsed())).await;
            while started.elapsed() >= Duration::from_secs(window * samples.len() as u64) {
                samples.push((rss_kb(pid), cpu_seconds(pid)));
            }
            let e = event_now(sb, k, v, size);
            backbeat::queue::kafka::send(&p, topic, &format!("{sb}/{k}"), Some(e.as_bytes()))
                .await
                .unwrap();
        }
        let end = Duration::from_secs(window * samples.len() as u64);
        glommio::timer::sleep(end.saturating_sub(started.elapsed())).await;
    });
    samples.push((rss_kb(pid), cpu_seconds(pid)));
    samples
}

/// The steady versions' latencies, by the window their event was sent in, with the
/// engine's RSS at each window's end and its CPU time during it.
fn load_windows(
    status: &[(String, String)],
    samples: &[(u64, f64)],
    rate: f64,
    window: u64,
) -> Vec<LoadWindow> {
    let mut windows: Vec<LoadWindow> = samples
        .windows(2)
        .map(|w| LoadWindow {
            latency: hdrhistogram::Histogram::new_with_bounds(1, 3_600_000, 3).unwrap(),
            rss_kb: w[1].0,
            cpu_s: w[1].1 - w[0].1,
        })
        .collect();
    for (_, v) in status {
        let Ok(e) = backbeat::queue::codec::StatusEvent::decode(v.as_bytes()) else {
            continue;
        };
        let (Some(i), Some(ms)) = (e.key.strip_prefix('s'), e.latency_ms) else {
            continue;
        };
        let Ok(i) = i.parse::<usize>() else { continue };
        let w = ((i as f64 / rate) as u64 / window) as usize;
        if let Some(w) = windows.get_mut(w) {
            w.latency.record(ms.max(1)).unwrap();
        }
    }
    windows
}

fn report_load(saturating: f64, rate: f64, window: u64, windows: &[LoadWindow]) {
    eprintln!("steady load: saturating {saturating:.1} versions/s, driven at {rate:.1}/s, windows of {window} s");
    for (n, w) in windows.iter().enumerate() {
        let q = |x: f64| w.latency.value_at_quantile(x);
        eprintln!(
            "  window {}: {} versions, latency p50 {} ms, p99 {} ms, p99.9 {} ms; RSS {} MiB; CPU {:.1} s ({:.0}% of a core)",
            n + 1,
            w.latency.len(),
            q(0.5),
            q(0.99),
            q(0.999),
            w.rss_kb / 1024,
            w.cpu_s,
            w.cpu_s * 100.0 / window as f64
        );
    }
}
