//! Command-line behaviour that needs no engine: configuration checks, tuning, exported
//! metric names, and the API commands against a stand-in API server (plain and TLS).

mod common;

use std::process::Command;

use common::output;

/// Runs backbeat with the test's own environment.
fn backbeat(args: &[&str]) -> (i32, String, String) {
    output(Command::new(env!("CARGO_BIN_EXE_backbeat")).args(args))
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

/// The metric names `/metrics` exports: what the exporter writes for a site, parsed as
/// Prometheus text (names of HELP lines and of samples).
fn exported_metric_names() -> Vec<String> {
    use std::collections::BTreeMap;
    let sites = BTreeMap::from([("site-a".to_string(), backbeat::metrics::Stats::new())]);
    let q = backbeat::api::QueueFigures {
        backlogs: BTreeMap::from([("site-a".to_string(), 3)]),
        oldest: BTreeMap::from([("site-a".to_string(), 12.5)]),
    };
    let mut text = backbeat::api::exposition(&sites, &q);
    // What `/metrics` adds after the sites' families.
    text.push_str(&backbeat::metrics::lifecycle::LifecycleStats::default().render());
    text.push_str(&backbeat::metrics::buckets::render(
        &sites,
        &Default::default(),
    ));
    text.push_str(&backbeat::metrics::ingest::IngestStats::default().render());
    text.push_str(&backbeat::metrics::transient::TransientStats::default().render());
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("Prometheus text format");
    let mut names: Vec<String> = scrape.docs.keys().cloned().collect();
    names.extend(scrape.samples.iter().map(|s| s.metric.clone()));
    names.sort();
    names.dedup();
    names
}

#[test]
fn alert_rules_and_dashboard_use_exported_metric_names() {
    let root = env!("CARGO_MANIFEST_DIR");
    let exported = exported_metric_names();
    for name in [
        "backbeat_versions_copied_total",
        "backbeat_backlog_entries",
        "backbeat_rpo_seconds",
    ] {
        assert!(exported.iter().any(|n| n == name), "{name}: {exported:?}");
    }
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
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_backbeat"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(vars.iter().copied());
    output(&mut cmd)
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
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "a CA").unwrap();
    let vars = [
        ("HOME", home),
        ("AWS_CONFIG_FILE", aws.to_str().unwrap()),
        ("AWS_REGION", "us-west-2"),
        ("AWS_CA_BUNDLE", ca.to_str().unwrap()),
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
        err.contains("must start with http:// or https://") && !err.contains("required"),
        "{err}"
    );
}

/// A stand-in operations API on 127.0.0.1 (TLS with a certificate for `localhost` when
/// `tls` is given): answers `/_/crr/status` and `/_/metrics/crr/site-a/all` to requests
/// bearing `Bearer good-token`, 401 to others. Returns its port; it serves until the test
/// process ends.
fn stand_in_api(tls: Option<std::sync::Arc<rustls::ServerConfig>>) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let answer = |request: &str| -> (u16, &'static str) {
        if !request
            .lines()
            .any(|l| l.eq_ignore_ascii_case("authorization: bearer good-token"))
        {
            return (401, r#"{"error":"a bearer token is required"}"#);
        }
        match request.split(' ').nth(1) {
            Some("/_/crr/status") => (200, r#"{"site-a":"disabled"}"#),
            Some("/_/metrics/crr/site-a/all") => (
                200,
                r#"{"backlog":{"description":"b","results":{"count":7,"size":70}},"completions":{"description":"c","results":{"count":4,"size":40}},"failures":{"description":"f","results":{"count":1,"size":10}},"pending":{"description":"p","results":{"count":0,"size":0}},"throughput":{"description":"t","results":{"count":"0.01","size":"0.04"}},"bandwidth":{"configured":"08:00,8MiB/s 19:00,off","bytesPerSecond":8388608}}"#,
            ),
            _ => (404, r#"{"error":"no route"}"#),
        }
    };
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let tls = tls.clone();
            std::thread::spawn(move || {
                let mut conn: Box<dyn ReadWrite> = match tls {
                    Some(cfg) => {
                        let server = rustls::ServerConnection::new(cfg).unwrap();
                        Box::new(rustls::StreamOwned::new(server, stream))
                    }
                    None => Box::new(stream),
                };
                let mut request = String::new();
                {
                    let mut r = BufReader::new(&mut conn);
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                            break;
                        }
                        request.push_str(line.trim_end());
                        request.push('\n');
                    }
                }
                if request.is_empty() {
                    return;
                }
                let (status, body) = answer(&request);
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.flush();
            });
        }
    });
    port
}

trait ReadWrite: std::io::Read + std::io::Write {}
impl<T: std::io::Read + std::io::Write> ReadWrite for T {}

/// A server configuration for `localhost` signed by a fresh CA; and the CA's PEM.
fn tls_server() -> (std::sync::Arc<rustls::ServerConfig>, String) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    (std::sync::Arc::new(cfg), ca_cert.pem())
}

#[test]
fn status_reads_the_api_documents_and_prints_a_table() {
    let port = stand_in_api(None);
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "good-token\n").unwrap();
    let api = format!("127.0.0.1:{port}");
    let t = token.to_str().unwrap();
    let (code, out, err) = backbeat(&["status", "--api", &api, "--token-file", t]);
    assert_eq!(code, 0, "{err}");
    let row = out.lines().find(|l| l.starts_with("site-a")).expect(&out);
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cols,
        ["site-a", "disabled", "7", "4", "1", "0", "0.01", "8", "MiB/s"],
        "{out}"
    );
    let url = format!("http://127.0.0.1:{port}/");
    let (code, out, err) = backbeat(&["status", "--api", &url, "--token-file", t, "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["status"]["site-a"], "disabled", "{v}");
    assert_eq!(
        v["metrics"]["site-a"]["backlog"]["results"]["size"], 70,
        "{v}"
    );
    assert_eq!(
        v["metrics"]["site-a"]["throughput"]["results"]["count"], "0.01",
        "{v}"
    );
}

#[test]
fn api_commands_say_what_to_do_when_refused_or_unreachable() {
    let port = stand_in_api(None);
    let api = format!("127.0.0.1:{port}");
    let (code, _, err) = backbeat(&["pause", "site-a", "--api", &api]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("requires a bearer token") && err.contains("--token-file"),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "wrong-s3cr3t\n").unwrap();
    let (code, out, err) = backbeat(&[
        "status",
        "--api",
        &api,
        "--token-file",
        token.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("refused the token") && err.contains("--token-file"),
        "{err}"
    );
    assert!(
        !err.contains("s3cr3t") && !out.contains("s3cr3t"),
        "the token was printed: {out}{err}"
    );
    let (code, _, err) = backbeat(&["status", "--api", "127.0.0.1:1"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("cannot reach the operations API at http://127.0.0.1:1"),
        "{err}"
    );
    assert!(err.contains("backbeat run"), "{err}");
}

#[test]
fn status_over_https_trusts_the_ca_file_given() {
    let (cfg, ca_pem) = tls_server();
    let port = stand_in_api(Some(cfg));
    let dir = tempfile::tempdir().unwrap();
    let (token, ca) = (dir.path().join("token"), dir.path().join("ca.pem"));
    std::fs::write(&token, "good-token\n").unwrap();
    std::fs::write(&ca, ca_pem).unwrap();
    let url = format!("https://localhost:{port}");
    let t = token.to_str().unwrap();
    let (code, out, err) = backbeat(&[
        "status",
        "--api",
        &url,
        "--token-file",
        t,
        "--ca-file",
        ca.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("site-a") && l.contains("disabled")),
        "{out}"
    );
    // Without the CA, the server's certificate is not trusted: the error names --ca-file.
    let (code, _, err) = backbeat(&["status", "--api", &url, "--token-file", t]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("TLS") && err.contains("--ca-file"), "{err}");
}
