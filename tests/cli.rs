//! Command-line behaviour that needs no server: configuration checks.

use std::process::Command;

fn backbeat(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_backbeat"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn config_check_prints_origins_and_names_bad_keys() {
    let root = env!("CARGO_MANIFEST_DIR");
    let (code, out, err) = backbeat(&[
        "config",
        "check",
        &format!("{root}/docs/backbeat.example.toml"),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("replication.shards = 2") && out.contains("# profile"),
        "{out}"
    );
    assert!(
        out.contains("kafka.session_timeout_ms = 10000") && out.contains("# default"),
        "{out}"
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[replication]\nconcurency = 4\n").unwrap();
    let (code, _, err) = backbeat(&["config", "check", bad.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("bad.toml")
            && err.contains("replication.concurency")
            && err.contains("unknown key"),
        "{err}"
    );
}

#[test]
fn alert_rules_and_dashboard_use_exported_metric_names() {
    let root = env!("CARGO_MANIFEST_DIR");
    let names = std::fs::read_to_string(format!("{root}/src/metrics/names.rs")).unwrap();
    let exported: Vec<String> = names
        .lines()
        .filter_map(|l| l.split('"').nth(1).map(str::to_string))
        .collect();
    assert!(exported.len() >= 8, "{exported:?}");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{root}/docs/grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    assert!(dashboard["panels"]
        .as_array()
        .is_some_and(|p| !p.is_empty()));
    for file in ["docs/prometheus-alerts.yml", "docs/grafana-dashboard.json"] {
        let text = std::fs::read_to_string(format!("{root}/{file}")).unwrap();
        let mut found = 0;
        for (i, _) in text.match_indices("backbeat_") {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .fold(name.clone(), |n, s| {
                    n.strip_suffix(s).map(str::to_string).unwrap_or(n)
                });
            assert!(
                exported.contains(&base),
                "{file} uses {name}, which backbeat does not export"
            );
            found += 1;
        }
        assert!(found > 0, "{file} names no metric");
    }
}

#[test]
fn tune_recommends_a_profile_and_writes_one_that_loads() {
    let (code, out, err) = backbeat(&["tune"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("recommended profile: "), "{out}");
    assert!(out.contains("io_uring         available"), "{out}");
    let (code, out, _) = backbeat(&["tune", "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let cores = v["machine"]["cores"].as_u64().unwrap();
    assert!(cores >= 1, "{v}");
    let profile = v["recommendation"]["profile"].as_str().unwrap().to_string();
    assert!(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tuning")
            .join(format!("{profile}.toml"))
            .exists(),
        "{profile} is one of the shipped profiles"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.toml");
    let (code, _, err) = backbeat(&["tune", "--apply-profile", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("profile written to"), "{err}");
    let (code, _, err) = backbeat(&["tune", "--apply-profile", file.to_str().unwrap()]);
    assert_eq!(
        code, 2,
        "an existing file is not overwritten without --force"
    );
    assert!(err.contains("--force"), "{err}");
    // The written profile loads, and its shards follow this machine's cores.
    let cfg = dir.path().join("backbeat.toml");
    std::fs::write(&cfg, "[replication]\nprofile = \"node.toml\"\n").unwrap();
    let (code, out, err) = backbeat(&["config", "check", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with(&format!("replication.shards = {cores}"))
                && l.contains("# profile")),
        "{out}"
    );
    assert!(out.contains("replication.read_buffer = "), "{out}");
}

/// Runs backbeat with only `vars` (and PATH) in its environment.
fn backbeat_env(args: &[&str], vars: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_backbeat"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(vars.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn aws_environment_fills_in_endpoints_regions_and_ca_files() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().to_str().unwrap();
    let aws = dir.path().join("aws-config");
    std::fs::write(
        &aws,
        "[profile dr]\nregion = eu-west-3\nendpoint_url = https://dr.example\n",
    )
    .unwrap();
    let cfg = dir.path().join("b.toml");
    std::fs::write(
        &cfg,
        "[source]\nendpoint = \"http://127.0.0.1:9000\"\n[sites.dr]\nprofile = \"dr\"\n",
    )
    .unwrap();
    let vars = [
        ("HOME", home),
        ("AWS_CONFIG_FILE", aws.to_str().unwrap()),
        ("AWS_REGION", "us-west-2"),
        ("AWS_CA_BUNDLE", "/etc/ca.pem"),
        ("AWS_SECRET_ACCESS_KEY", "do-not-print"),
    ];
    let (code, out, err) = backbeat_env(&["config", "check", cfg.to_str().unwrap()], &vars);
    assert_eq!(code, 0, "{err}");
    let line = |key: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("{key} in {out}"))
            .to_string()
    };
    assert!(line("source.endpoint").contains("# file "), "{out}");
    assert!(
        line("source.region").contains("\"us-west-2\"")
            && line("source.region").contains("# env AWS_REGION"),
        "{out}"
    );
    assert!(
        line("sites.dr.region").contains("# env AWS_REGION"),
        "the environment wins over the profile: {out}"
    );
    assert!(
        line("sites.dr.endpoint").contains("\"https://dr.example\"")
            && line("sites.dr.endpoint").contains("# aws profile \"dr\""),
        "{out}"
    );
    assert!(
        line("sites.dr.ca_file").contains("# env AWS_CA_BUNDLE"),
        "{out}"
    );
    assert!(!out.contains("do-not-print"), "{out}");
    // sync: no endpoint from any source is one clear line, exit code 2.
    let (code, _, err) = backbeat_env(
        &[
            "sync",
            "s3://a",
            "s3://b",
            "--destination-endpoint",
            "http://127.0.0.1:1",
        ],
        &[
            ("HOME", home),
            ("AWS_ACCESS_KEY_ID", "k"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--source-endpoint is required"), "{err}");
    // ... and AWS_ENDPOINT_URL gives both sides theirs (here a bad one, to fail early).
    let (code, _, err) = backbeat_env(
        &["sync", "s3://a", "s3://b"],
        &[
            ("HOME", home),
            ("AWS_ACCESS_KEY_ID", "k"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
            ("AWS_ENDPOINT_URL", "ftp://nowhere"),
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("scheme must be http or https") && !err.contains("required"),
        "{err}"
    );
}
