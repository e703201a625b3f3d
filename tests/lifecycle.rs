//! Lifecycle against real servers (moto): `backbeat lifecycle run` over buckets whose rules
//! come from a rules file or from the bucket, with time running fast
//! (`time_progression_factor = 86400`: a day lasts a second). Buckets are set up and read
//! back with boto3 (`tests/common/lifecycle.py`), an independent client.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use backbeat::s3::Client;
use common::*;

/// Runs `tests/common/lifecycle.py URL ARGS...`; its stdout.
fn py(url: &str, args: &[&str]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/lifecycle.py");
    let mut cmd = std::process::Command::new(python());
    cmd.arg(script).arg(url).args(args);
    let (code, out, err) = output(&mut cmd);
    assert_eq!(code, 0, "lifecycle.py {args:?}: {err}");
    out
}

/// The bucket as boto3 lists it: per key, (version id, is a marker, is latest), and the
/// keys of open uploads.
fn state(url: &str, bucket: &str) -> serde_json::Value {
    serde_json::from_str(&py(url, &["state", bucket])).unwrap()
}

fn entries(st: &serde_json::Value, key: &str) -> Vec<(String, bool, bool)> {
    st["entries"][key]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    let e = e.as_array().unwrap();
                    let id = e[0].as_str().unwrap().to_string();
                    (id, e[1].as_bool().unwrap(), e[2].as_bool().unwrap())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A configuration for `lifecycle run`: the source, its buckets, an optional site with
/// replication rules, lifecycle rules files.
fn config(
    dir: &Path,
    buckets: &[&str],
    site: Option<(&str, &str)>,
    files: &[(&str, &str)],
) -> PathBuf {
    let s = servers();
    let list: Vec<String> = buckets.iter().map(|b| format!("\"{b}\"")).collect();
    let mut toml = format!(
        "[source]\nendpoint = \"{}\"\nbuckets = [{}]\n",
        s.source,
        list.join(", ")
    );
    if let Some((src, dst)) = site {
        let rules = "<ReplicationConfiguration><Role>r</Role><Rule><ID>all</ID><Status>Enabled</Status><Priority>1</Priority><Filter><Prefix></Prefix></Filter><DeleteMarkerReplication><Status>Enabled</Status></DeleteMarkerReplication><Destination><Bucket>arn:aws:s3:::x</Bucket><StorageClass>site-a</StorageClass></Destination></Rule></ReplicationConfiguration>";
        std::fs::write(dir.join("replication.xml"), rules).unwrap();
        toml.push_str("rules_file = \"replication.xml\"\n");
        toml.push_str(&format!(
            "\n[sites.site-a]\nendpoint = \"{}\"\nbuckets = {{ {src} = \"{dst}\" }}\n",
            s.dest
        ));
    }
    toml.push_str("\n[lifecycle]\ntime_progression_factor = 86400\n");
    for (bucket, text) in files {
        let name = format!("{bucket}.xml");
        std::fs::write(dir.join(&name), text).unwrap();
        toml.push_str(&format!("rules_files.{bucket} = \"{name}\"\n"));
    }
    let path = dir.join("backbeat.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

/// `backbeat lifecycle run`: (exit code, the actions it printed as (kind, key, version,
/// rule, outcome), stdout).
fn pass(config: &Path, bucket: &str, dry_run: bool) -> (i32, Vec<[String; 5]>, String) {
    let c = config.to_str().unwrap();
    let mut args = vec!["lifecycle", "run", "--config", c, "--bucket", bucket];
    if dry_run {
        args.push("--dry-run");
    }
    let (code, out, err) = backbeat(&args);
    eprintln!("lifecycle run {bucket} (dry run: {dry_run}):\n{out}{err}");
    let actions = out.lines().filter_map(action).collect();
    (code, actions, out)
}

/// `kind key (version V, rule R): outcome`.
fn action(line: &str) -> Option<[String; 5]> {
    let (kind, rest) = line.split_once(' ')?;
    let (key, rest) = rest.trim_start().split_once(" (")?;
    let (inside, outcome) = rest.split_once("): ")?;
    let (version, rule) = inside.split_once(", rule ")?;
    let version = version.split_once(' ')?.1;
    Some([kind, key, version, rule, outcome].map(str::to_string))
}

fn without_outcome(a: &[[String; 5]]) -> BTreeSet<[String; 4]> {
    a.iter()
        .map(|[k, key, v, r, _]| [k.clone(), key.clone(), v.clone(), r.clone()])
        .collect()
}

/// `backbeat run` with lifecycle on (a pass every second, a day a second) for bucket `b`
/// (its rules `lc`), one site (`site`, destination bucket `d`) whose replication rules
/// select `replicated` (a prefix), and the API on a port of its own; `source_extra` goes into
/// `[source]`. Returns the setup, the process and the API's port once it answers.
fn lifecycle_engine(
    b: &str,
    (site, d): (&str, &str),
    replicated: &str,
    lc: &str,
    source_extra: &str,
) -> (common::kafka::Setup, common::kafka::Proc, u16) {
    use common::kafka::{api_ready, free_port, rule, rules, setup, spawn, wait_until};
    let port = free_port();
    let extra = format!(
        "\n[api]\nlisten = \"127.0.0.1:{port}\"\n[lifecycle]\nenabled = \"on\"\ninterval_seconds = 1\ntime_progression_factor = 86400\nrules_files.{b} = \"lc.xml\"\n"
    );
    let filter = format!("<Prefix>{replicated}</Prefix>");
    let rule = rules(&[rule("r", 1, &filter, true, site)]);
    let st = setup(b, &[(site, &servers().dest, d)], &rule, &extra);
    std::fs::write(st.config.parent().unwrap().join("lc.xml"), lc).unwrap();
    let text = std::fs::read_to_string(&st.config).unwrap().replace(
        "rules_file = \"rules.xml\"\n",
        &format!("rules_file = \"rules.xml\"\n{source_extra}"),
    );
    std::fs::write(&st.config, text).unwrap();
    let run = spawn(&["run"], &st.config);
    wait_until(90, "the API", || api_ready(port));
    (st, run, port)
}

/// `backbeat lifecycle ARGS --api 127.0.0.1:PORT`, which must succeed; its stdout.
fn lc_cli(port: u16, args: &[&str]) -> String {
    let api = format!("127.0.0.1:{port}");
    let mut all = vec!["lifecycle"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--api", &api]);
    let (code, out, err) = backbeat(&all);
    assert_eq!(code, 0, "{args:?}: {err}");
    out
}

/// `backbeat_lifecycle_actions_total` for (bucket, action, outcome), from `/metrics`.
fn counted(port: u16, b: &str, action: &str, outcome: &str) -> u64 {
    let (_, m) = common::kafka::http_get(port, "/metrics", None);
    let line = format!(
        "backbeat_lifecycle_actions_total{{bucket=\"{b}\",action=\"{action}\",outcome=\"{outcome}\"}} "
    );
    m.lines()
        .find_map(|l| l.strip_prefix(line.as_str()))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap_or(0)
}

const RULES: &str = r#"<LifecycleConfiguration>
  <Rule><ID>logs</ID><Status>Enabled</Status><Filter><Prefix>logs/</Prefix></Filter>
    <NoncurrentVersionExpiration><NoncurrentDays>1</NoncurrentDays><NewerNoncurrentVersions>1</NewerNoncurrentVersions></NoncurrentVersionExpiration></Rule>
  <Rule><ID>tmp</ID><Status>Enabled</Status><Filter><Prefix>tmp/</Prefix></Filter>
    <Expiration><Days>1</Days></Expiration></Rule>
  <Rule><ID>markers</ID><Status>Enabled</Status><Filter><Prefix></Prefix></Filter>
    <Expiration><ExpiredObjectDeleteMarker>true</ExpiredObjectDeleteMarker></Expiration></Rule>
  <Rule><ID>uploads</ID><Status>Enabled</Status><Filter><Prefix>up/</Prefix></Filter>
    <AbortIncompleteMultipartUpload><DaysAfterInitiation>1</DaysAfterInitiation></AbortIncompleteMultipartUpload></Rule>
  <Rule><ID>big-red</ID><Status>Enabled</Status>
    <Filter><And><Prefix>data/</Prefix><Tag><Key>color</Key><Value>red</Value></Tag><ObjectSizeGreaterThan>1000</ObjectSizeGreaterThan></And></Filter>
    <Expiration><Days>1</Days></Expiration></Rule>
</LifecycleConfiguration>"#;

/// Fills the bucket for [`RULES`]; returns logs/a's version ids, oldest first.
async fn fill(src: &Client, b: &str) -> Vec<String> {
    let mut logs = Vec::new();
    for i in 0..3u8 {
        logs.push(put_data(src, b, "logs/a", &[i; 100]).await.unwrap());
    }
    let gone = put_data(src, b, "gone", b"x").await.unwrap();
    src.delete_object(b, "gone", None).await.unwrap();
    src.delete_object(b, "gone", Some(&gone)).await.unwrap();
    put_data(src, b, "tmp/x", b"temporary").await;
    let red = vec![("color".to_string(), "red".to_string())];
    let blue = vec![("color".to_string(), "blue".to_string())];
    let meta = Default::default();
    put(src, b, "data/big-red", &data(2000, 1), &meta, &red).await;
    put(src, b, "data/small-red", &data(10, 2), &meta, &red).await;
    put(src, b, "data/big-blue", &data(2000, 3), &meta, &blue).await;
    put_data(src, b, "keep/y", b"kept").await;
    logs
}

/// Every kind of action from a rules file: noncurrent versions beyond the newest one kept
/// (NewerNoncurrentVersions, which moto would drop from a stored configuration), a lone
/// delete marker removed, a `tmp/` object under a 1-day Expiration given a delete marker, an
/// open multipart upload aborted, an object matching a tag and a size filter expired while
/// its neighbours (too small, another tag) are not. The dry run changes nothing and lists
/// exactly what the real pass then does; a second pass finds nothing left to do.
#[test]
fn a_pass_applies_every_rule_and_a_dry_run_lists_exactly_what_it_does() {
    let s = servers();
    let b = bucket("lc-rules");
    let src = Client::new(endpoint(&s.source), None);
    let logs = block_on(async {
        make_bucket(&src, &b, true).await;
        fill(&src, &b).await
    });
    py(&s.source, &["open-upload", &b, "up/x"]);
    std::thread::sleep(std::time::Duration::from_secs(3)); // three "days"
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &[&b], None, &[(&b, RULES)]);
    let before = state(&s.source, &b);

    let (code, planned, _) = pass(&cfg, &b, true);
    assert_eq!(code, 0);
    assert!(planned.iter().all(|a| a[4] == "would do"), "{planned:?}");
    assert_eq!(state(&s.source, &b), before, "a dry run changes nothing");
    let kinds: BTreeSet<(String, String)> = planned
        .iter()
        .map(|a| (a[0].clone(), a[1].clone()))
        .collect();
    let want: BTreeSet<(String, String)> = [
        ("delete_version", "logs/a"),
        ("remove_delete_marker", "gone"),
        ("expire_current", "tmp/x"),
        ("expire_current", "data/big-red"),
        ("abort_upload", "up/x"),
    ]
    .iter()
    .map(|(k, key)| (k.to_string(), key.to_string()))
    .collect();
    assert_eq!(kinds, want);
    let logs_deleted: Vec<&String> = planned
        .iter()
        .filter(|a| a[1] == "logs/a")
        .map(|a| &a[2])
        .collect();
    assert_eq!(
        logs_deleted,
        [&logs[0]],
        "only the oldest logs/a version goes"
    );

    let (code, done, _) = pass(&cfg, &b, false);
    assert_eq!(code, 0);
    assert!(done.iter().all(|a| a[4] == "done"), "{done:?}");
    assert_eq!(
        without_outcome(&done),
        without_outcome(&planned),
        "the dry run listed exactly what was done"
    );

    let after = state(&s.source, &b);
    let ids = |key: &str| {
        entries(&after, key)
            .into_iter()
            .map(|e| e.0)
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(
        ids("logs/a"),
        logs[1..].iter().cloned().collect(),
        "current + 1 noncurrent kept"
    );
    assert!(
        entries(&after, "gone").is_empty(),
        "the lone marker is gone"
    );
    for key in ["tmp/x", "data/big-red"] {
        let e = entries(&after, key);
        assert_eq!(e.len(), 2, "{key}: {e:?}");
        assert!(
            e.iter().any(|(_, marker, latest)| *marker && *latest),
            "{key} is behind a delete marker"
        );
    }
    for key in ["data/small-red", "data/big-blue", "keep/y"] {
        assert_eq!(
            entries(&after, key),
            entries(&before, key),
            "{key} untouched"
        );
    }
    assert_eq!(
        after["uploads"],
        serde_json::json!([]),
        "the open upload is aborted"
    );

    let (code, again, out) = pass(&cfg, &b, false);
    assert_eq!(code, 0);
    assert!(
        again.is_empty(),
        "a second pass finds nothing to do: {again:?}"
    );
    assert!(out.contains("pass over"), "{out}");
}

/// Safety: with rules stored on the bucket (NoncurrentVersionExpiration after a day), a
/// noncurrent version is kept while the site its replication rules name does not hold it
/// yet, and deleted by the first pass after it does; a noncurrent version under legal hold,
/// or under GOVERNANCE retention, is kept whatever its age (and the pass says why).
#[test]
fn versions_stay_until_replicated_and_while_under_object_lock() {
    let s = servers();
    let (b, d) = (bucket("lc-safe"), bucket("lc-safe-dst"));
    let src = Client::new(endpoint(&s.source), None);
    py(&s.source, &["lock-bucket", &b]);
    // Locked versions are replicated with their lock: the site's bucket needs Object Lock.
    py(&s.dest, &["lock-bucket", &d]);
    let (rep, held) = block_on(async {
        let rep = put_data(&src, &b, "rep/b", b"one").await.unwrap();
        put_data(&src, &b, "rep/b", b"two").await;
        let held = put_data(&src, &b, "held/a", b"one").await.unwrap();
        put_data(&src, &b, "held/a", b"two").await;
        let kept = put_data(&src, &b, "ret/c", b"one").await.unwrap();
        put_data(&src, &b, "ret/c", b"two").await;
        (rep, (held, kept))
    });
    let (held, retained) = held;
    py(&s.source, &["legal-hold", &b, "held/a", &held]);
    py(
        &s.source,
        &["retain", &b, "ret/c", &retained, "2099-01-01T00:00:00Z"],
    );
    let dir = tempfile::tempdir().unwrap();
    let rules = r#"{"Rules": [{"ID": "old", "Status": "Enabled", "Filter": {"Prefix": ""},
        "NoncurrentVersionExpiration": {"NoncurrentDays": 1}}]}"#;
    std::fs::write(dir.path().join("rules.json"), rules).unwrap();
    py(
        &s.source,
        &[
            "put-lifecycle",
            &b,
            dir.path().join("rules.json").to_str().unwrap(),
        ],
    );
    std::thread::sleep(std::time::Duration::from_secs(3));
    let cfg = config(dir.path(), &[&b], Some((&b, &d)), &[]);

    let (code, first, _) = pass(&cfg, &b, false);
    assert_eq!(code, 0);
    assert_eq!(first.len(), 3, "{first:?}");
    for a in &first {
        assert_eq!(a[0], "delete_version");
        assert_eq!(a[4], "skipped: not yet replicated to site site-a", "{a:?}");
    }
    let (code, _, err) = sync(&s.source, &b, &s.dest, &d, &[]);
    assert_eq!(code, 0, "{err}");

    let (code, second, _) = pass(&cfg, &b, false);
    assert_eq!(code, 0);
    let outcome = |key: &str| {
        second
            .iter()
            .find(|a| a[1] == key)
            .map(|a| (a[2].clone(), a[4].clone()))
    };
    assert_eq!(outcome("rep/b"), Some((rep.clone(), "done".to_string())));
    assert_eq!(
        outcome("held/a"),
        Some((
            held.clone(),
            "skipped: under Object Lock (legal hold)".to_string()
        ))
    );
    let (id, why) = outcome("ret/c").unwrap();
    assert_eq!(id, retained);
    assert!(
        why.starts_with("skipped: under Object Lock (retention until 2099-01-01"),
        "{why}"
    );
    let after = state(&s.source, &b);
    let ids = |key: &str| {
        entries(&after, key)
            .into_iter()
            .map(|e| e.0)
            .collect::<Vec<_>>()
    };
    assert!(
        !ids("rep/b").contains(&rep),
        "the replicated noncurrent version is deleted"
    );
    assert_eq!(ids("rep/b").len(), 1);
    assert!(
        ids("held/a").contains(&held),
        "the version under legal hold stays"
    );
    assert!(
        ids("ret/c").contains(&retained),
        "the retained version stays"
    );
}

/// A bucket not in `source.buckets` is refused, and a rules file that is not a valid
/// LifecycleConfiguration is refused by `config check`, naming the key and the rule.
#[test]
fn unknown_buckets_and_invalid_rules_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bad = "<LifecycleConfiguration><Rule><ID>r1</ID><Status>Enabled</Status><Expiration><Days>0</Days></Expiration></Rule></LifecycleConfiguration>";
    let cfg = config(dir.path(), &["known"], None, &[("known", bad)]);
    let (code, _, err) = backbeat(&["config", "check", cfg.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        err.contains("lifecycle.rules_files.known")
            && err.contains("\"r1\"")
            && err.contains("Days"),
        "{err}"
    );
    let cfg = config(dir.path(), &["known"], None, &[]);
    let c = cfg.to_str().unwrap();
    let (code, _, err) = backbeat(&["lifecycle", "run", "--config", c, "--bucket", "other"]);
    assert_ne!(code, 0);
    assert!(err.contains("\"other\" is not in source.buckets"), "{err}");
}

/// Lifecycle through Kafka in `backbeat run`: the conductor starts a pass every 2 s, bucket
/// processors list one key per step, object processors expire `tmp/` objects. The process is
/// killed (SIGKILL) as soon as the first delete marker appears, mid-pass, and started again:
/// the pass goes on from its last step, and every object ends with exactly one delete marker
/// (an action replayed after the crash, or decided again by a later pass, finds nothing to
/// do), while `keep/` is untouched. A deletion the rules do not decide, delivered as a task,
/// is refused.
#[test]
fn passes_run_on_kafka_and_a_crash_mid_pass_does_nothing_twice() {
    use common::kafka::{rule, rules, setup, spawn, stop, wait_until};
    let s = servers();
    let (b, d) = (bucket("lc-kafka"), bucket("lc-kafka-dst"));
    let n = 24;
    block_on(async {
        let (src, _dst) = versioned_pair(&s, &b, &d).await;
        for i in 0..n {
            put_data(&src, &b, &format!("tmp/k{i:02}"), b"temporary").await;
        }
        put_data(&src, &b, "keep/a", b"kept").await;
    });
    std::thread::sleep(std::time::Duration::from_secs(2));
    let lc = "<LifecycleConfiguration><Rule><ID>tmp</ID><Status>Enabled</Status><Filter><Prefix>tmp/</Prefix></Filter><Expiration><Days>1</Days></Expiration></Rule></LifecycleConfiguration>";
    let extra = format!(
        "\n[lifecycle]\nenabled = \"on\"\ninterval_seconds = 2\npage_keys = 1\ntime_progression_factor = 86400\nrules_files.{b} = \"lc.xml\"\n"
    );
    // Replication rules that select nothing here: no version waits for a site.
    let rule = rules(&[rule(
        "none",
        1,
        "<Prefix>elsewhere/</Prefix>",
        true,
        "site-a",
    )]);
    let st = setup(&b, &[("site-a", &s.dest, &d)], &rule, &extra);
    std::fs::write(st.config.parent().unwrap().join("lc.xml"), lc).unwrap();
    let markers = || {
        let st = state(&s.source, &b);
        (0..n)
            .map(|i| {
                entries(&st, &format!("tmp/k{i:02}"))
                    .iter()
                    .filter(|e| e.1)
                    .count()
            })
            .collect::<Vec<_>>()
    };
    let run = spawn(&["run"], &st.config);
    wait_until(90, "a first delete marker", || {
        markers().iter().any(|m| *m > 0)
    });
    drop(run); // SIGKILL: no drain, no commit
    let at_crash = markers().iter().filter(|m| **m > 0).count();
    eprintln!("killed with {at_crash} of {n} objects expired");
    let run = spawn(&["run"], &st.config);
    wait_until(120, "every tmp/ object expired", || {
        markers().iter().all(|m| *m > 0)
    });
    // At-least-once delivery: an action delivered again after it was done (as a replay
    // after a crash between the action and its commit would) changes nothing.
    let st0 = state(&s.source, &b);
    let (vid, _, _) = entries(&st0, "tmp/k00").into_iter().find(|e| !e.1).unwrap();
    let src = Client::new(endpoint(&s.source), None);
    let etag = block_on(async {
        let req = backbeat::s3::ops::head_object::HeadObjectRequest {
            version_id: Some(&vid),
            ..Default::default()
        };
        src.head_object(&b, "tmp/k00", req).await.unwrap().etag
    });
    let again = serde_json::json!({"v": 1, "pass": "replayed", "action": {
        "bucket": b, "key": "tmp/k00", "version_id": vid, "etag": etag,
        "last_modified": "2026-01-01T00:00:00Z", "action": "expire_current", "rule": "tmp"}});
    // A task the rules do not (or no longer) decide: deleting tmp/k00's version by id would
    // lose it; the processor evaluates the key again and refuses.
    let stale = serde_json::json!({"v": 1, "pass": "stale", "action": {
        "bucket": b, "key": "tmp/k00", "version_id": vid, "etag": etag,
        "last_modified": "2026-01-01T00:00:00Z", "action": "delete_version", "rule": "tmp"}});
    let topic = format!("{}lifecycle-object-tasks", st.prefix);
    let key = format!("{b}/tmp/k00");
    common::kafka::produce(
        &topic,
        &[(key.clone(), again.to_string()), (key, stale.to_string())],
    );
    std::thread::sleep(std::time::Duration::from_secs(6)); // the replay, and two more passes
    stop(run);
    let m = markers();
    assert!(
        m.iter().all(|c| *c == 1),
        "exactly one delete marker per object: {m:?}"
    );
    let after = state(&s.source, &b);
    assert_eq!(entries(&after, "keep/a").len(), 1, "keep/a untouched");
    for i in 0..n {
        assert_eq!(
            entries(&after, &format!("tmp/k{i:02}")).len(),
            2,
            "the version stays, behind its marker"
        );
    }
}

/// Pausing lifecycle through the command line (the API and the control topic): while
/// paused, objects long due stay as they are, through several intervals; `resume --in`
/// keeps it paused until the time it names, then every due object is expired; `/metrics`
/// counts each action by bucket, kind and outcome.
#[test]
fn lifecycle_pauses_resumes_on_schedule_and_counts_its_actions() {
    use common::kafka::{http_get, stop, wait_until};
    let s = servers();
    let (b, d) = (bucket("lc-pause"), bucket("lc-pause-dst"));
    let src = block_on(async { versioned_pair(&s, &b, &d).await.0 });
    let lc = "<LifecycleConfiguration><Rule><ID>tmp</ID><Status>Enabled</Status><Filter><Prefix>tmp/</Prefix></Filter><Expiration><Days>1</Days></Expiration></Rule></LifecycleConfiguration>";
    let (_st, run, port) = lifecycle_engine(&b, ("site-a", &d), "", lc, "");
    let cli = |args: &[&str]| lc_cli(port, args);
    assert_eq!(cli(&["pause"]).trim(), "lifecycle: paused");
    assert!(cli(&["status"]).contains("lifecycle: disabled"));
    let n = 5;
    block_on(async {
        for i in 0..n {
            put_data(&src, &b, &format!("tmp/p{i}"), b"due in a second").await;
        }
    });
    let expired = || {
        let st = state(&s.source, &b);
        (0..n)
            .filter(|i| entries(&st, &format!("tmp/p{i}")).iter().any(|e| e.1))
            .count()
    };
    std::thread::sleep(std::time::Duration::from_secs(5));
    assert_eq!(expired(), 0, "nothing expires while lifecycle is paused");
    let out = cli(&["resume", "--in", "0.0015"]); // 5.4 s
    assert!(out.contains("lifecycle: resumes at"), "{out}");
    let status = cli(&["status"]);
    assert!(
        status.contains("disabled") && status.contains("resumes at"),
        "{status}"
    );
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(expired(), 0, "still paused before the scheduled resume");
    wait_until(
        60,
        "every tmp/ object expired after the scheduled resume",
        || expired() == n,
    );
    let (code, metrics) = http_get(port, "/metrics", None);
    assert_eq!(code, 200);
    let line = format!(
        "backbeat_lifecycle_actions_total{{bucket=\"{b}\",action=\"expire_current\",outcome=\"done\"}} {n}"
    );
    assert!(metrics.contains(&line), "{line} in:\n{metrics}");
    assert!(
        metrics.contains("backbeat_lifecycle_versions_scanned_total"),
        "{metrics}"
    );
    stop(run);
}

/// Transitions: a noncurrent version whose rule names a configured site ("cold") as its
/// StorageClass is copied there (the replication data path: bytes and source version
/// checked by boto3 at the site), and deleted from the source only once the site holds it
/// (its NoncurrentVersionExpiration waits for the copy); a current version under a
/// transition to STANDARD_IA is copied onto its key in that class (a new current version
/// with the same bytes; the old one stays, noncurrent).
#[test]
fn transitions_copy_to_a_cold_site_and_change_class_in_place() {
    let s = servers();
    let (b, c) = (bucket("lc-trans"), bucket("lc-cold"));
    let (src, cold) = (
        Client::new(endpoint(&s.source), None),
        Client::new(endpoint(&s.dest), None),
    );
    let (old, ia) = block_on(async {
        make_bucket(&src, &b, true).await;
        make_bucket(&cold, &c, true).await;
        let old = put_data(&src, &b, "arch/a", &data(3000, 5)).await.unwrap();
        let old2 = put_data(&src, &b, "arch/a", &data(2500, 8)).await.unwrap();
        put_data(&src, &b, "arch/a", &data(2000, 6)).await;
        let ia = put_data(&src, &b, "ia/b", &data(1000, 7)).await.unwrap();
        ((old, old2), ia)
    });
    let (old, old2) = old;
    std::thread::sleep(std::time::Duration::from_secs(3));
    let rules = r#"<LifecycleConfiguration>
      <Rule><ID>archive</ID><Status>Enabled</Status><Filter><Prefix>arch/</Prefix></Filter>
        <NoncurrentVersionTransition><NoncurrentDays>1</NoncurrentDays><StorageClass>cold</StorageClass></NoncurrentVersionTransition>
        <NoncurrentVersionExpiration><NoncurrentDays>1</NoncurrentDays></NoncurrentVersionExpiration></Rule>
      <Rule><ID>ia</ID><Status>Enabled</Status><Filter><Prefix>ia/</Prefix></Filter>
        <Transition><Days>1</Days><StorageClass>STANDARD_IA</StorageClass></Transition></Rule>
    </LifecycleConfiguration>"#;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("lc.xml"), rules).unwrap();
    let toml = format!(
        "[source]\nendpoint = \"{}\"\nbuckets = [\"{b}\"]\n\n[sites.cold]\nendpoint = \"{}\"\nbuckets = {{ {b} = \"{c}\" }}\n\n[lifecycle]\ntime_progression_factor = 86400\nrules_files.{b} = \"lc.xml\"\n",
        s.source, s.dest
    );
    let cfg = dir.path().join("backbeat.toml");
    std::fs::write(&cfg, toml).unwrap();

    let before = boto3_snapshot(&s.source, &b);
    let (code, first, _) = pass(&cfg, &b, false);
    assert_eq!(code, 0);
    let all = |acts: &[[String; 5]], kind: &str, key: &str| -> Vec<(String, String)> {
        acts.iter()
            .filter(|a| a[0] == kind && a[1] == key)
            .map(|a| (a[2].clone(), a[4].clone()))
            .collect()
    };
    let find = |acts: &[[String; 5]], kind: &str, key: &str| {
        acts.iter()
            .find(|a| a[0] == kind && a[1] == key)
            .map(|a| (a[2].clone(), a[4].clone()))
    };
    // Both noncurrent versions are due: copied oldest first, so the site holds each.
    let copies = all(&first, "transition", "arch/a");
    assert_eq!(
        copies,
        [(old.clone(), "done".into()), (old2.clone(), "done".into())]
    );
    let waits = all(&first, "delete_version", "arch/a");
    let not_yet = "skipped: not yet copied to site cold".to_string();
    assert_eq!(
        waits,
        [(old.clone(), not_yet.clone()), (old2.clone(), not_yet)],
        "listed before the copies"
    );
    assert_eq!(
        find(&first, "transition", "ia/b"),
        Some((ia.clone(), "done".into()))
    );

    let (code, second, _) = pass(&cfg, &b, false);
    assert_eq!(code, 0);
    let again = all(&second, "transition", "arch/a");
    assert!(
        again.iter().all(|(_, o)| o.starts_with("skipped")),
        "{again:?}"
    );
    let deleted = all(&second, "delete_version", "arch/a");
    assert_eq!(
        deleted,
        [(old.clone(), "done".into()), (old2.clone(), "done".into())]
    );
    assert!(
        find(&second, "transition", "ia/b").is_none(),
        "already STANDARD_IA: {second:?}"
    );

    let at_cold = boto3_snapshot(&s.dest, &c);
    let kept = &at_cold["arch/a"]["versions"];
    assert_eq!(kept.as_array().unwrap().len(), 2, "{at_cold}");
    assert_eq!(kept[0]["source_version"], serde_json::json!(old2));
    assert_eq!(kept[1]["source_version"], serde_json::json!(old));
    let want = &before["arch/a"]["versions"];
    assert_eq!(want[2]["version_id"], serde_json::json!(old));
    assert_eq!(
        kept[1]["sha256"], want[2]["sha256"],
        "the cold copy's bytes"
    );
    assert_eq!(
        kept[0]["sha256"], want[1]["sha256"],
        "the cold copy's bytes"
    );
    let after = state(&s.source, &b);
    let arch: Vec<String> = entries(&after, "arch/a").into_iter().map(|e| e.0).collect();
    assert!(!arch.contains(&old) && arch.len() == 1, "{arch:?}");
    let ib = &after["entries"]["ia/b"];
    let classes: Vec<(bool, String)> = ib
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e[2].as_bool().unwrap(), e[3].as_str().unwrap().to_string()))
        .collect();
    assert!(
        classes.contains(&(true, "STANDARD_IA".to_string())),
        "{classes:?}"
    );
    assert_eq!(
        classes.len(),
        2,
        "the old version stays, noncurrent: {classes:?}"
    );
    let snap = boto3_snapshot(&s.source, &b);
    let v = &snap["ia/b"]["versions"];
    assert_eq!(
        v[0]["sha256"], v[1]["sha256"],
        "same bytes in the new class"
    );
}

/// The replication guard end to end: with site-a paused, a noncurrent version past its
/// NoncurrentVersionExpiration stays at the source through several passes (each says it is
/// not yet replicated); once the site is resumed and has the version, the next pass deletes
/// it, and the site keeps both versions.
#[test]
fn a_version_stays_while_its_site_is_paused_and_goes_once_replicated() {
    use common::kafka::{stop, wait_until};
    let s = servers();
    let (b, d) = (bucket("lc-guard"), bucket("lc-guard-dst"));
    let src = block_on(async { versioned_pair(&s, &b, &d).await.0 });
    let lc = "<LifecycleConfiguration><Rule><ID>logs</ID><Status>Enabled</Status><Filter><Prefix>logs/</Prefix></Filter><NoncurrentVersionExpiration><NoncurrentDays>1</NoncurrentDays></NoncurrentVersionExpiration></Rule></LifecycleConfiguration>";
    // Versions reach the site through rescans (no event notifications in this test).
    let rescans = "scan_interval_seconds = 1\n";
    let (_st, run, port) = lifecycle_engine(&b, ("site-a", &d), "", lc, rescans);
    let api = format!("127.0.0.1:{port}");
    let (code, _, err) = backbeat(&["pause", "site-a", "--api", &api]);
    assert_eq!(code, 0, "{err}");
    let v1 = block_on(async {
        let v1 = put_data(&src, &b, "logs/x", b"first").await.unwrap();
        put_data(&src, &b, "logs/x", b"second").await;
        v1
    });
    let skipped = || counted(port, &b, "delete_version", "skipped");
    wait_until(60, "passes keeping the noncurrent version", || {
        skipped() >= 3
    });
    let ids = || -> Vec<String> {
        entries(&state(&s.source, &b), "logs/x")
            .into_iter()
            .map(|e| e.0)
            .collect()
    };
    assert!(ids().contains(&v1), "kept while site-a is paused");
    assert!(
        state(&s.dest, &d)["entries"]["logs/x"].is_null(),
        "site-a has nothing yet"
    );
    let (code, _, err) = backbeat(&["resume", "site-a", "--api", &api]);
    assert_eq!(code, 0, "{err}");
    wait_until(90, "the noncurrent version deleted once replicated", || {
        !ids().contains(&v1)
    });
    stop(run);
    let at_site = boto3_snapshot(&s.dest, &d);
    let versions = at_site["logs/x"]["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2, "the site keeps both versions: {at_site}");
    assert_eq!(versions[1]["source_version"], serde_json::json!(v1));
}

/// Lifecycle paused for one site (`backbeat lifecycle pause cold`): transitions to it wait
/// (each pass counts them skipped) while the rest of lifecycle runs; resumed, the next pass
/// copies the version there.
#[test]
fn transitions_to_a_site_wait_while_lifecycle_is_paused_for_it() {
    use common::kafka::{stop, wait_until};
    let s = servers();
    let (b, c) = (bucket("lc-sitepause"), bucket("lc-sitepause-cold"));
    let src = block_on(async { versioned_pair(&s, &b, &c).await.0 });
    let lc = "<LifecycleConfiguration><Rule><ID>archive</ID><Status>Enabled</Status><Filter><Prefix>arch/</Prefix></Filter><NoncurrentVersionTransition><NoncurrentDays>1</NoncurrentDays><StorageClass>cold</StorageClass></NoncurrentVersionTransition></Rule><Rule><ID>tmp</ID><Status>Enabled</Status><Filter><Prefix>tmp/</Prefix></Filter><Expiration><Days>1</Days></Expiration></Rule></LifecycleConfiguration>";
    // Replication rules that select nothing here: only lifecycle writes to the site.
    let (_st, run, port) = lifecycle_engine(&b, ("cold", &c), "elsewhere/", lc, "");
    let cli = |args: &[&str]| lc_cli(port, args);
    assert_eq!(
        cli(&["pause", "cold"]).trim(),
        "lifecycle transitions to cold: paused"
    );
    let status = cli(&["status"]);
    assert!(
        status.contains("lifecycle: enabled") && status.contains("cold: disabled"),
        "{status}"
    );
    let v1 = block_on(async {
        let v1 = put_data(&src, &b, "arch/a", b"old").await.unwrap();
        put_data(&src, &b, "arch/a", b"new").await;
        put_data(&src, &b, "tmp/t", b"temporary").await;
        v1
    });
    let skipped = || counted(port, &b, "transition", "skipped");
    wait_until(60, "transitions to cold held back", || skipped() >= 2);
    let tmp_expired = entries(&state(&s.source, &b), "tmp/t").iter().any(|e| e.1);
    assert!(tmp_expired, "the rest of lifecycle runs");
    assert!(
        state(&s.dest, &c)["entries"]["arch/a"].is_null(),
        "nothing copied to cold yet"
    );
    assert_eq!(
        cli(&["resume", "cold"]).trim(),
        "lifecycle transitions to cold: resumed"
    );
    wait_until(60, "the version copied to cold", || {
        !state(&s.dest, &c)["entries"]["arch/a"].is_null()
    });
    stop(run);
    let at_cold = boto3_snapshot(&s.dest, &c);
    assert_eq!(
        at_cold["arch/a"]["versions"][0]["source_version"],
        serde_json::json!(v1)
    );
}
