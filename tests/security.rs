//! The control plane under attack or misuse, against real servers (moto, nisshi): clients
//! that hold the operations API's connections open, records forged on the Kafka topics,
//! and secured transports. What each control covers is in docs/security.md.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use backbeat::queue::kafka::Topics;
use backbeat::s3::Client;
use common::kafka::*;
use common::*;

/// Descriptors open in process `pid`.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Limits process `pid` to `n` open descriptors.
fn limit_fds(pid: u32, n: u64) {
    let lim = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: prlimit on our own child with a valid rlimit; no old value asked for.
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &lim,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// A slowloris: 500 connections that each send half a request head and wait, against an
/// engine limited to 512 descriptors (it holds about 130 idle). The API keeps at most `api.max_connections` (128)
/// open, closing the oldest idle one for each newcomer, so a real request is answered at
/// once, replication goes on (40 more objects copied), and once the client leaves the
/// descriptors return to their level before it; a lone half-sent head is closed by the
/// header-read timeout (10 s). With `open_probes`, probes answer without the token, other
/// routes do not.
#[test]
fn half_open_connections_take_down_neither_the_api_nor_replication() {
    let s = servers();
    let (sb, da) = (bucket("loris-src"), bucket("loris-a"));
    let (src, dst) = block_on(versioned_pair(&s, &sb, &da));
    let port = free_port();
    let rule = rules(&[rule("all", 1, "<Prefix></Prefix>", true, "site-a")]);
    let api = format!(
        "\n[api]\nlisten = \"127.0.0.1:{port}\"\ntoken_file = \"token\"\nopen_probes = true\n"
    );
    let st = setup(&sb, &[("site-a", &s.dest, &da)], &rule, &api);
    std::fs::write(st.config.with_file_name("token"), "t0ken\n").unwrap();
    let topics = Topics::new(&st.prefix);
    let run = spawn(&["run"], &st.config);
    limit_fds(run.id(), 512);
    wait_until(60, "the engine ready", || api_ready(port));
    // 40 objects first, so the S3 connection pools are as full as they get.
    let copy = |from: usize| {
        let objects: Vec<(String, String)> = block_on(async {
            let mut out = Vec::new();
            for i in from..from + 40 {
                let k = format!("k{i:02}");
                let v = put_version(&src, &sb, &k, &data(2000, i as u64), &[]).await;
                out.push((
                    format!("{sb}/{k}"),
                    event("ObjectCreated:Put", &sb, &k, &v, 2000),
                ));
            }
            out
        });
        produce(&topics.events, &objects);
        wait_until(120, "40 objects copied", || {
            block_on(all_versions(&dst, &da)).len() == from + 40
        });
    };
    copy(0);
    let baseline = open_fds(run.id());
    let half = "GET /_/live HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    let loris: Vec<TcpStream> = (0..500)
        .filter_map(|_| {
            let mut c = TcpStream::connect(("127.0.0.1", port)).ok()?;
            c.write_all(half.as_bytes()).ok()?;
            Some(c)
        })
        .collect();
    assert_eq!(loris.len(), 500, "the kernel takes every connection");
    std::thread::sleep(Duration::from_secs(1));
    let during = open_fds(run.id());
    let asked = Instant::now();
    let (code, body) = http_get(port, "/_/ready", None);
    let answered = asked.elapsed();
    assert_eq!(code, 200, "{body}");
    // open_probes: probes answer without the token, nothing else does.
    assert_eq!(http_get(port, "/_/crr/status", None).0, 401);
    assert_eq!(http_get(port, "/_/crr/status", Some("t0ken")).0, 200);
    copy(40);
    drop(loris);
    let mut after = 0;
    wait_until(30, "descriptors back to their level", || {
        after = open_fds(run.id());
        after <= baseline + 8
    });
    let mut lone = TcpStream::connect(("127.0.0.1", port)).unwrap();
    lone.write_all(half.as_bytes()).unwrap();
    lone.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let waited = Instant::now();
    let mut buf = [0u8; 256];
    let closed = std::io::Read::read(&mut lone, &mut buf);
    let lone_closed = waited.elapsed();
    stop(run);
    eprintln!("slowloris: {baseline} descriptors before, {during} with 500 half-open connections, {after} after; a request answered in {answered:?}; a lone half-sent head closed after {lone_closed:?}");
    assert!(
        during <= baseline + 128 + 8,
        "at most max_connections held: {baseline} before, {during} during"
    );
    assert!(
        answered < Duration::from_secs(1),
        "answered at once: {answered:?}"
    );
    assert!(
        closed.is_ok()
            || closed
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the server ended the half-sent request: {closed:?}"
    );
    assert!(
        lone_closed < Duration::from_secs(20),
        "closed by the header-read timeout: {lone_closed:?}"
    );
}

/// Entries forged on the replication topic by anyone who can write to it: one for a bucket
/// the configuration does not name (which the source credentials can read, and whose
/// namesake exists at the destination) is parked on the failed topic as `refused`, with the
/// reason, and never copied; a delete marker for a version the source does not have is
/// not applied (the destination's object stays visible); a real entry beside them is
/// copied.
#[test]
fn forged_entries_are_refused_or_not_applied() {
    let s = servers();
    let (sb, da, other) = (
        bucket("forge-src"),
        bucket("forge-a"),
        bucket("forge-other"),
    );
    let (src, dst) = (
        Client::new(endpoint(&s.source), None),
        Client::new(endpoint(&s.dest), None),
    );
    let (secret, real, kept) = (data(3000, 1), data(2000, 2), data(1500, 3));
    let (v_secret, v_real, v_kept) = block_on(async {
        make_bucket(&src, &sb, true).await;
        make_bucket(&src, &other, true).await;
        make_bucket(&dst, &da, true).await;
        make_bucket(&dst, &other, true).await;
        let vs = put_version(&src, &other, "secret", &secret, &[]).await;
        let vr = put_version(&src, &sb, "real", &real, &[]).await;
        let vk = put_version(&src, &sb, "kept", &kept, &[]).await;
        (vs, vr, vk)
    });
    let rule = rules(&[rule("all", 1, "<Prefix></Prefix>", true, "site-a")]);
    let st = setup(&sb, &[("site-a", &s.dest, &da)], &rule, "");
    let topics = Topics::new(&st.prefix);
    let run = spawn(&["run"], &st.config);
    // "kept" replicated first, through an event.
    produce(
        &topics.events,
        &[(
            format!("{sb}/kept"),
            event("ObjectCreated:Put", &sb, "kept", &v_kept, kept.len()),
        )],
    );
    wait_until(60, "kept replicated", || {
        real_versions(&dst, &da, "kept").len() == 1
    });
    let entry = |bucket: &str, key: &str, kind: &str, vid: &str, size: usize| {
        let e = format!(
            r#"{{"v":1,"type":"{kind}","bucket":"{bucket}","key":"{key}","versionId":"{vid}","size":{size},"sites":["site-a"]}}"#
        );
        (format!("{bucket}/{key}"), e)
    };
    produce(
        &topics.replication,
        &[
            entry(&other, "secret", "put", &v_secret, secret.len()),
            entry(&sb, "kept", "delete-marker", "forged-marker-id", 0),
            entry(&sb, "real", "put", &v_real, real.len()),
        ],
    );
    wait_until(60, "the real entry replicated", || {
        real_versions(&dst, &da, "real").len() == 1
    });
    let failed = read_until_quiet(&topics.failed, Duration::from_secs(3));
    let status = read_until_quiet(&topics.status, Duration::from_secs(2));
    stop(run);
    let refused: Vec<&(String, String)> = failed
        .iter()
        .filter(|(k, _)| k.starts_with("refused/"))
        .collect();
    assert_eq!(refused.len(), 1, "{failed:?}");
    assert!(
        refused[0].1.contains("not in source.buckets") && refused[0].1.contains(&other),
        "the reason names the bucket: {}",
        refused[0].1
    );
    let secret_copies = block_on(all_versions(&dst, &other));
    assert!(
        secret_copies.is_empty(),
        "nothing copied from {other}: {secret_copies:?}"
    );
    let kept_versions = block_on(all_versions(&dst, &da));
    let kept_markers = kept_versions["kept"]
        .iter()
        .filter(|v| v.delete_marker)
        .count();
    assert_eq!(kept_markers, 0, "the forged marker is not applied");
    assert!(real_versions(&dst, &da, "kept") == [kept.clone()]);
    let marker_outcome: Vec<&String> = status
        .iter()
        .filter(|(_, v)| v.contains("forged-marker-id"))
        .map(|(_, v)| v)
        .collect();
    eprintln!("forged marker outcome: {marker_outcome:?}");
}

/// A broker of this test's own (nisshi), stopped when dropped.
struct Broker(std::process::Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn nisshi() -> String {
    std::env::var("BACKBEAT_TEST_NISSHI").unwrap_or_else(|_| {
        panic!("BACKBEAT_TEST_NISSHI is not set: run the tests with `bash tests/run.sh`, which installs nisshi")
    })
}

/// Starts nisshi on `port`, advertising `advertised` (a TLS front's address, say).
fn own_broker(port: u16, advertised: u16, extra: &[&str]) -> Broker {
    own_broker_env(port, advertised, extra, &[])
}

/// [`own_broker`] with environment variables (its storage's settings).
fn own_broker_env(port: u16, advertised: u16, extra: &[&str], env: &[(&str, &str)]) -> Broker {
    let child = std::process::Command::new(nisshi())
        .envs(env.iter().copied())
        .args(["broker", "--listener-url"])
        .arg(format!("tcp://127.0.0.1:{port}"))
        .arg("--advertised-listener-url")
        .arg(format!("tcp://127.0.0.1:{advertised}"))
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let b = Broker(child);
    wait_until(10, "the broker listening", || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    b
}

/// A configuration of `setup`'s that talks to `brokers` with the extra `[kafka]` keys, and
/// rescans the source every second (so nothing needs producing from the test).
fn with_kafka(st: &Setup, base: &str, brokers: &str, keys: &str) {
    let text = base;
    let start = text.find("brokers = [").unwrap();
    let end = start + text[start..].find('\n').unwrap();
    let text = format!(
        "{}brokers = [\"{brokers}\"]\n{keys}{}",
        &text[..start],
        &text[end + 1..]
    )
    .replace(
        "rules_file = \"rules.xml\"\n",
        "rules_file = \"rules.xml\"\nscan_interval_seconds = 1\n",
    );
    std::fs::write(&st.config, text).unwrap();
}

/// Kafka over TLS with a client certificate: nisshi (which has no TLS listener of its own)
/// behind a TLS front that requires a certificate signed by its CA, advertising the
/// front's address. An engine with `security_protocol = "ssl"`, `ca_file`, `cert_file` and
/// `key_file` replicates through it, every Kafka connection a handshake the front
/// accepted; the same engine without its certificate cannot reach Kafka and stops,
/// saying so.
#[test]
fn kafka_over_tls_with_a_client_certificate() {
    let s = servers();
    let tunnel = common::proxy::Tunnel::start(true);
    let port = free_port();
    tunnel.forward_to(&format!("127.0.0.1:{port}"));
    let _broker = own_broker(port, tunnel.port, &[]);
    let (sb, da) = (bucket("tls-src"), bucket("tls-a"));
    let (src, dst) = (
        Client::new(endpoint(&s.source), None),
        Client::new(endpoint(&s.dest), None),
    );
    let body = data(5000, 7);
    block_on(async {
        make_bucket(&src, &sb, true).await;
        make_bucket(&dst, &da, true).await;
        put_version(&src, &sb, "k", &body, &[]).await;
    });
    let rule = rules(&[rule("all", 1, "<Prefix></Prefix>", true, "site-a")]);
    let st = setup(&sb, &[("site-a", &s.dest, &da)], &rule, "");
    let dir = st.config.parent().unwrap().to_path_buf();
    std::fs::write(dir.join("ca.pem"), &tunnel.ca_pem).unwrap();
    std::fs::write(dir.join("client.pem"), &tunnel.client_cert_pem).unwrap();
    std::fs::write(dir.join("client.key"), &tunnel.client_key_pem).unwrap();
    let front = format!("127.0.0.1:{}", tunnel.port);
    let tls = "security_protocol = \"ssl\"\nca_file = \"ca.pem\"\n";
    let base = std::fs::read_to_string(&st.config).unwrap();
    let with_cert = format!("{tls}cert_file = \"client.pem\"\nkey_file = \"client.key\"\n");
    with_kafka(&st, &base, &front, &with_cert);
    let run = spawn(&["run"], &st.config);
    wait_until(90, "k replicated over Kafka on TLS", || {
        real_versions(&dst, &da, "k").len() == 1
    });
    // Killed, not stopped: this test is about the login. (Seen once in CI: on this slower
    // broker, mid-rebalance, the engine took over 40 s to stop on SIGTERM; see the notes.)
    drop(run);
    assert!(real_versions(&dst, &da, "k") == [body.clone()]);
    let (ok, refused) = (
        tunnel.handshakes.load(std::sync::atomic::Ordering::SeqCst),
        tunnel.refused.load(std::sync::atomic::Ordering::SeqCst),
    );
    assert!(ok > 0, "the engine's Kafka connections went through TLS");
    assert_eq!(refused, 0, "every handshake was accepted");
    // Without its certificate: refused by the front; the engine stops and says why.
    with_kafka(&st, &base, &front, tls);
    let (code, _, err) = backbeat_env(&["run", "--config", st.config.to_str().unwrap()], &[]);
    eprintln!(
        "tls: {ok} handshakes accepted; without a certificate: exit {code}, {}",
        err.lines().last().unwrap_or("")
    );
    assert_ne!(code, 0, "{err}");
    assert!(
        tunnel.refused.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "the front refused the handshake"
    );
    assert!(err.contains("Kafka") || err.contains("kafka"), "{err}");
}

/// A plain TCP relay to `upstream` that records what clients send: listening now, so its
/// port can be advertised.
struct Relay {
    port: u16,
    sent: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Relay {
    fn start(upstream: u16) -> Relay {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let sent: std::sync::Arc<std::sync::Mutex<Vec<u8>>> = Default::default();
        let record = sent.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let (mut c_in, mut s_out) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                let record = record.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    while let Ok(n) = std::io::Read::read(&mut c_in, &mut buf) {
                        if n == 0 || s_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        record.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                    let _ = s_out.shutdown(std::net::Shutdown::Both);
                });
                let (mut s_in, mut c_out) = (server, client);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s_in, &mut c_out);
                    let _ = c_out.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Relay { port, sent }
    }

    fn saw(&self, bytes: &[u8]) -> bool {
        self.sent
            .lock()
            .unwrap()
            .windows(bytes.len())
            .any(|w| w == bytes)
    }
}

/// SASL on the wire: a broker started with `--authentication` on memory storage (which
/// keeps no SCRAM users) refuses every SCRAM exchange. The test shows the settings reach
/// the broker: with `security_protocol = "sasl_plaintext"` and SCRAM-SHA-256, what
/// the engine sends (recorded by a relay the broker advertises) holds a SCRAM-SHA-256
/// handshake for user alice and never the password; the engine stops with a Kafka error
/// that does not print the password either. (A login that succeeds: the next test.)
#[test]
fn sasl_settings_reach_the_broker_and_the_password_stays_secret() {
    let s = servers();
    let port = free_port();
    let relay = Relay::start(port);
    let _broker = own_broker(port, relay.port, &["--authentication"]);
    let (sb, da) = (bucket("sasl-src"), bucket("sasl-a"));
    block_on(async {
        make_bucket(&Client::new(endpoint(&s.source), None), &sb, true).await;
        make_bucket(&Client::new(endpoint(&s.dest), None), &da, true).await;
    });
    let rule = rules(&[rule("all", 1, "<Prefix></Prefix>", true, "site-a")]);
    let st = setup(&sb, &[("site-a", &s.dest, &da)], &rule, "");
    let keys = "security_protocol = \"sasl_plaintext\"\nsasl_mechanism = \"SCRAM-SHA-256\"\nsasl_username = \"alice\"\n";
    let base = std::fs::read_to_string(&st.config).unwrap();
    with_kafka(&st, &base, &format!("127.0.0.1:{}", relay.port), keys);
    let secret = "pa55-not-to-be-seen";
    let config = st.config.to_str().unwrap();
    let (code, out, _) = backbeat_env(
        &["config", "check", config],
        &[("BACKBEAT_KAFKA_PASSWORD", secret)],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("sasl_password") && out.contains("***"),
        "{out}"
    );
    let (code, out, err) = backbeat_env(
        &["run", "--config", config],
        &[
            ("BACKBEAT_KAFKA_PASSWORD", secret),
            ("BACKBEAT_LOG", "debug"),
        ],
    );
    eprintln!("sasl: exit {code}; {}", err.lines().last().unwrap_or(""));
    assert_ne!(code, 0, "{err}");
    assert!(relay.saw(b"SCRAM-SHA-256"), "a SCRAM-SHA-256 handshake");
    assert!(
        relay.saw(b"n=alice,r="),
        "a SCRAM client-first message for alice"
    );
    assert!(
        !relay.saw(secret.as_bytes()),
        "SCRAM never sends the password"
    );
    assert!(
        !format!("{out}{err}").contains(secret),
        "the password is never printed"
    );
    // Without a password the configuration is refused before anything connects.
    let (code, _, err) = backbeat_env(&["config", "check", config], &[]);
    assert_ne!(code, 0);
    assert!(
        err.contains("kafka.sasl_password_file") && err.contains("BACKBEAT_KAFKA_PASSWORD"),
        "{err}"
    );
}

/// A SASL/SCRAM login that succeeds, end to end: nisshi keeping its users in its storage
/// (slatedb, on the test's S3 server) is given user alice (SCRAM-SHA-256) and restarted
/// with `--authentication`, so every client must log in. An engine with
/// `security_protocol = "sasl_plaintext"`, alice and her password from
/// `sasl_password_file` creates its topics, produces and consumes through it: the version
/// is replicated. With a wrong password the engine stops, and its error says the broker
/// refused the SASL login (not only that creating topics timed out), without the password.
#[test]
fn a_sasl_scram_login_replicates_and_a_wrong_password_is_named() {
    let s = servers();
    let (state, sb, da) = (
        bucket("scram-state"),
        bucket("scram-src"),
        bucket("scram-a"),
    );
    let (src, dst) = (
        Client::new(endpoint(&s.source), None),
        Client::new(endpoint(&s.dest), None),
    );
    let body = data(3000, 11);
    block_on(async {
        make_bucket(&dst, &state, false).await;
        make_bucket(&src, &sb, true).await;
        make_bucket(&dst, &da, true).await;
        put_version(&src, &sb, "k", &body, &[]).await;
    });
    let port = free_port();
    let storage = format!("slatedb://{state}");
    let env = [
        ("AWS_ENDPOINT", s.dest.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_ACCESS_KEY_ID", "AKTEST"),
        ("AWS_SECRET_ACCESS_KEY", "SKTEST/secret"),
        ("AWS_REGION", "us-east-1"),
    ];
    let password = "alice-Secret-9f2";
    {
        let _open = own_broker_env(port, port, &["--storage-engine", &storage], &env);
        let mut cmd = std::process::Command::new(nisshi());
        cmd.args(["user", "create", "--mechanism", "scram256", "--broker"])
            .arg(format!("tcp://127.0.0.1:{port}"))
            .args(["alice", password]);
        let (code, out, err) = output(&mut cmd);
        assert_eq!(code, 0, "nisshi user create: {out}{err}");
    }
    let storage_args = ["--authentication", "--storage-engine", &storage];
    let _broker = own_broker_env(port, port, &storage_args, &env);
    let rule = rules(&[rule("all", 1, "<Prefix></Prefix>", true, "site-a")]);
    let st = setup(&sb, &[("site-a", &s.dest, &da)], &rule, "");
    let dir = st.config.parent().unwrap().to_path_buf();
    std::fs::write(dir.join("kafka.pass"), format!("{password}\n")).unwrap();
    let base = std::fs::read_to_string(&st.config).unwrap();
    let keys = "security_protocol = \"sasl_plaintext\"\nsasl_mechanism = \"SCRAM-SHA-256\"\nsasl_username = \"alice\"\nsasl_password_file = \"kafka.pass\"\n";
    let brokers = format!("127.0.0.1:{port}");
    with_kafka(&st, &base, &brokers, keys);
    let run = spawn(&["run"], &st.config);
    wait_until(90, "k replicated over Kafka with a SASL login", || {
        real_versions(&dst, &da, "k").len() == 1
    });
    // Killed, not stopped: this test is about the login. (Seen once in CI: on this slower
    // broker, mid-rebalance, the engine took over 40 s to stop on SIGTERM; see the notes.)
    drop(run);
    assert!(real_versions(&dst, &da, "k") == [body.clone()]);
    let log = std::fs::read_to_string(dir.join("run.log")).unwrap();
    assert!(!log.contains(password), "the password is never logged");
    // A wrong password: refused by the broker, and said so.
    let wrong = "not-alices-pw-77";
    std::fs::write(dir.join("kafka.pass"), format!("{wrong}\n")).unwrap();
    let (code, out, err) = backbeat_env(&["run", "--config", st.config.to_str().unwrap()], &[]);
    eprintln!(
        "wrong password: exit {code}; {}",
        err.lines().last().unwrap_or("")
    );
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("SASL authentication"),
        "the cause is named: {err}"
    );
    assert!(
        !format!("{out}{err}").contains(wrong),
        "the password is never printed"
    );
}

/// The operations API over TLS: `api.cert_file` and `api.key_file` make it serve HTTPS;
/// the command line reaches it with `--api https://...` and `--ca-file` (and its token),
/// and without the CA it refuses the server and says to pass `--ca-file`.
#[test]
fn the_api_over_tls_with_the_command_line() {
    let s = servers();
    let (sb, da) = (bucket("apitls-src"), bucket("apitls-a"));
    block_on(async {
        make_bucket(&Client::new(endpoint(&s.source), None), &sb, true).await;
        make_bucket(&Client::new(endpoint(&s.dest), None), &da, true).await;
    });
    let (ca, cert, key) = common::proxy::server_certificate();
    let port = free_port();
    let rule = rules(&[rule("all", 1, "<Prefix></Prefix>", true, "site-a")]);
    let api = format!("\n[api]\nlisten = \"127.0.0.1:{port}\"\ntoken_file = \"token\"\ncert_file = \"api.pem\"\nkey_file = \"api.key\"\n");
    let st = setup(&sb, &[("site-a", &s.dest, &da)], &rule, &api);
    let dir = st.config.parent().unwrap().to_path_buf();
    for (name, text) in [("ca.pem", &ca), ("api.pem", &cert), ("api.key", &key)] {
        std::fs::write(dir.join(name), text).unwrap();
    }
    std::fs::write(dir.join("token"), "t0ken\n").unwrap();
    let run = spawn(&["run"], &st.config);
    let url = format!("https://127.0.0.1:{port}");
    let (ca_path, token) = (dir.join("ca.pem"), dir.join("token"));
    let status = |extra: &[&str]| {
        let mut args = vec![
            "status",
            "--api",
            &url,
            "--token-file",
            token.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        backbeat(&args)
    };
    let mut last = (0, String::new(), String::new());
    wait_until(60, "status over TLS", || {
        last = status(&["--ca-file", ca_path.to_str().unwrap()]);
        last.0 == 0
    });
    let (code, _, err) = status(&[]);
    let plain = http_get_raw(port, "/_/live");
    stop(run);
    assert!(last.1.contains("site-a"), "{last:?}");
    assert_ne!(code, 0);
    assert!(err.contains("--ca-file"), "says what to do: {err}");
    assert!(
        !plain.starts_with("HTTP/1.1 200"),
        "plain HTTP is not served: {plain:?}"
    );
}

/// What a plain-HTTP request to `port` gets back (empty when the connection just closes).
fn http_get_raw(port: u16, path: &str) -> String {
    use std::io::Read;
    let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let ask = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let _ = c.write_all(ask.as_bytes());
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Signed records (`kafka.signing_key_file`): an event the populator turns into an entry
/// (signed) is replicated; entries forged on the replication topic without the key, for a
/// real version of a configured bucket, unsigned or wrongly signed, are set aside as
/// `untrusted` with the reason and never copied; a forged control record pausing the site
/// is ignored.
#[test]
fn with_a_signing_key_only_signed_records_are_acted_on() {
    let s = servers();
    let (sb, da) = (bucket("sign-src"), bucket("sign-a"));
    let (src, dst) = (
        Client::new(endpoint(&s.source), None),
        Client::new(endpoint(&s.dest), None),
    );
    let (forged, real) = (data(1200, 11), data(1300, 12));
    let (v_forged, v_real) = block_on(async {
        make_bucket(&src, &sb, true).await;
        make_bucket(&dst, &da, true).await;
        let vf = put_version(&src, &sb, "forged", &forged, &[]).await;
        let vr = put_version(&src, &sb, "real", &real, &[]).await;
        (vf, vr)
    });
    let rule = rules(&[rule("all", 1, "<Prefix></Prefix>", true, "site-a")]);
    let st = setup(&sb, &[("site-a", &s.dest, &da)], &rule, "");
    std::fs::write(
        st.config.with_file_name("signing.key"),
        "a shared key of at least thirty-two bytes\n",
    )
    .unwrap();
    let text = std::fs::read_to_string(&st.config).unwrap().replace(
        "session_timeout_ms = 6000\n",
        "session_timeout_ms = 6000\nsigning_key_file = \"signing.key\"\n",
    );
    std::fs::write(&st.config, text).unwrap();
    let (code, out, err) = backbeat(&["config", "check", st.config.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("records signed and checked") && !out.contains("thirty-two"),
        "{out}"
    );
    let topics = Topics::new(&st.prefix);
    let run = spawn(&["run"], &st.config);
    wait_until(60, "the engine started", || {
        std::fs::read_to_string(st.config.with_file_name("run.log"))
            .unwrap_or_default()
            .contains("partitions assigned")
    });
    produce(
        &topics.control,
        &[("site-a".into(), r#"{"paused":true}"#.into())],
    );
    let entry = format!(
        r#"{{"v":1,"type":"put","bucket":"{sb}","key":"forged","versionId":"{v_forged}","size":1200,"sites":["site-a"]}}"#
    );
    let key = format!("{sb}/forged");
    produce(&topics.replication, &[(key.clone(), entry.clone())]);
    produce_signed(&topics.replication, &key, &entry, "00ff");
    produce(
        &topics.events,
        &[(
            format!("{sb}/real"),
            event("ObjectCreated:Put", &sb, "real", &v_real, real.len()),
        )],
    );
    wait_until(60, "the signed entry replicated", || {
        real_versions(&dst, &da, "real").len() == 1
    });
    let failed = read_until_quiet(&topics.failed, Duration::from_secs(3));
    stop(run);
    let untrusted: Vec<&String> = failed
        .iter()
        .filter(|(k, _)| k.starts_with("untrusted/"))
        .map(|(_, v)| v)
        .collect();
    assert_eq!(untrusted.len(), 2, "{failed:?}");
    assert!(
        untrusted.iter().any(|v| v.contains("unsigned")),
        "{untrusted:?}"
    );
    assert!(
        untrusted.iter().any(|v| v.contains("wrongly signed")),
        "{untrusted:?}"
    );
    assert!(
        real_versions(&dst, &da, "forged").is_empty(),
        "a forged entry is never copied"
    );
    let log = std::fs::read_to_string(st.config.with_file_name("run.log")).unwrap();
    assert!(
        log.contains("control record ignored"),
        "the forged pause is ignored"
    );
}

/// Produces `value` under `key` with a `backbeat-signature` header of `signature`.
fn produce_signed(topic: &str, key: &str, value: &str, signature: &str) {
    use rdkafka::message::{Header, OwnedHeaders};
    let (b, topic) = (broker(), topic.to_string());
    let (key, value, signature) = (key.to_string(), value.to_string(), signature.to_string());
    block_on(async move {
        let p = backbeat::queue::kafka::producer(&b).unwrap();
        let headers = OwnedHeaders::new().insert(Header {
            key: backbeat::queue::signing::HEADER,
            value: Some(&signature),
        });
        let rec = rdkafka::producer::FutureRecord::to(&topic)
            .key(&key)
            .payload(&value)
            .headers(headers);
        p.send(rec, Duration::from_secs(10)).await.unwrap();
    });
}
