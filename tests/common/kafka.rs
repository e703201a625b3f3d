//! The Kafka side of the integration tests: the broker started by `tests/run.sh`, a
//! configuration per test (its own topic prefix), backbeat processes killed when dropped,
//! S3 events as MinIO publishes them, and topic reads.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use backbeat::queue::kafka;
use backbeat::s3::ops::ObjectMetadata;
use backbeat::s3::Client;
use rdkafka::consumer::Consumer as _;
use rdkafka::message::Message;

use super::*;

pub fn broker() -> String {
    std::env::var("BACKBEAT_TEST_KAFKA").unwrap_or_else(|_| panic!("BACKBEAT_TEST_KAFKA is not set: run the tests with `bash tests/run.sh`, which installs and starts a Kafka-compatible broker (nisshi)"))
}

pub async fn put_version(
    c: &Client,
    b: &str,
    key: &str,
    body: &[u8],
    tags: &[(String, String)],
) -> String {
    super::put(c, b, key, body, &ObjectMetadata::default(), tags)
        .await
        .expect("a versioned bucket returns a version id")
}

/// The S3 event JSON MinIO publishes, for one record (every one with sequencer 1).
pub fn event(name: &str, bucket: &str, key: &str, version: &str, size: usize) -> String {
    event_with(name, bucket, key, version, size, "x", "1")
}

/// [`event`] with the object's ETag and the event's sequencer.
pub fn event_with(
    name: &str,
    bucket: &str,
    key: &str,
    version: &str,
    size: usize,
    etag: &str,
    sequencer: &str,
) -> String {
    let k: String =
        percent_encoding::utf8_percent_encode(key, percent_encoding::NON_ALPHANUMERIC).to_string();
    format!(
        r#"{{"EventName":"s3:{name}","Key":"{bucket}/{key}","Records":[{{"eventVersion":"2.0","eventSource":"minio:s3","eventTime":"2026-11-25T10:00:00.000Z","eventName":"s3:{name}","s3":{{"bucket":{{"name":"{bucket}"}},"object":{{"key":"{k}","size":{size},"eTag":"{etag}","versionId":"{version}","sequencer":"{sequencer}"}}}}}}]}}"#
    )
}

pub struct Setup {
    pub prefix: String,
    pub dir: tempfile::TempDir,
    pub config: std::path::PathBuf,
}

/// A failing test keeps its directory and prints the end of each engine log it holds, so an
/// intermittent failure (in CI too) leaves what the engine was doing.
impl Drop for Setup {
    fn drop(&mut self) {
        // BACKBEAT_TEST_KEEP keeps every test's directory (logs), not only a failed one's.
        if !std::thread::panicking() && std::env::var_os("BACKBEAT_TEST_KEEP").is_none() {
            return;
        }
        self.dir.disable_cleanup(true);
        eprintln!("test directory kept: {}", self.dir.path().display());
        let Ok(entries) = std::fs::read_dir(self.dir.path()) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_some_and(|x| x == "log") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(40)..].join("\n");
                eprintln!("--- last lines of {}:\n{tail}", path.display());
            }
        }
    }
}

/// A configuration with its own topics (unique prefix), a rules file and the given sites.
pub fn setup(src_bucket: &str, sites: &[(&str, &str, &str)], rules: &str, extra: &str) -> Setup {
    let prefix = format!("t{}-{}-", std::process::id(), bucket("x"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.xml"), rules).unwrap();
    let s = servers();
    let mut toml = format!(
        "[kafka]\nbrokers = [\"{}\"]\ntopic_prefix = \"{prefix}\"\npartitions = 4\nsession_timeout_ms = 6000\n\n[source]\nendpoint = \"{}\"\nbuckets = [\"{src_bucket}\"]\nrules_file = \"rules.xml\"\n\n",
        broker(),
        s.source
    );
    for (name, endpoint, dst_bucket) in sites {
        toml.push_str(&format!("[sites.{name}]\nendpoint = \"{endpoint}\"\nbuckets = {{ {src_bucket} = \"{dst_bucket}\" }}\nverify_after_write = true\n\n"));
    }
    toml.push_str("[replication]\nshards = 2\nconcurrency = 8\npart_size = \"5MiB\"\nmultipart_threshold = \"5MiB\"\nattempts = 3\n");
    if !extra.contains("[api]") {
        toml.push_str("\n[api]\nlisten = \"127.0.0.1:0\"\n");
    }
    toml.push_str(extra);
    let config = dir.path().join("backbeat.toml");
    std::fs::write(&config, toml).unwrap();
    Setup {
        prefix,
        dir,
        config,
    }
}

pub fn rule(id: &str, priority: i32, filter: &str, dm: bool, site: &str) -> String {
    format!(
        "<Rule><ID>{id}</ID><Status>Enabled</Status><Priority>{priority}</Priority><Filter>{filter}</Filter><DeleteMarkerReplication><Status>{}</Status></DeleteMarkerReplication><Destination><Bucket>arn:aws:s3:::x</Bucket><StorageClass>{site}</StorageClass></Destination></Rule>",
        if dm { "Enabled" } else { "Disabled" }
    )
}

pub fn rules(rs: &[String]) -> String {
    format!(
        "<ReplicationConfiguration><Role>r</Role>{}</ReplicationConfiguration>",
        rs.concat()
    )
}

/// A backbeat process of a test: killed when dropped, so a failing test leaves none behind.
pub struct Proc(pub Option<Child>);

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl std::ops::Deref for Proc {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.0.as_ref().expect("running")
    }
}

impl std::ops::DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().expect("running")
    }
}

pub fn spawn(args: &[&str], config: &std::path::Path) -> Proc {
    spawn_named(args, config, args[0])
}

/// Starts backbeat with its log in `NAME.log` beside the configuration.
pub fn spawn_named(args: &[&str], config: &std::path::Path, name: &str) -> Proc {
    spawn_env(args, config, name, &[])
}

/// Like [`spawn_named`], with extra environment variables (a credentials file, say).
pub fn spawn_env(
    args: &[&str],
    config: &std::path::Path,
    name: &str,
    env: &[(&str, String)],
) -> Proc {
    let log = std::fs::File::create(config.with_file_name(format!("{name}.log"))).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_backbeat"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env("AWS_ACCESS_KEY_ID", "AKTEST")
        .env("AWS_SECRET_ACCESS_KEY", "SKTEST/secret")
        .env(
            "BACKBEAT_LOG",
            std::env::var("BACKBEAT_TEST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    Proc(Some(child))
}

pub fn stop(mut p: Proc) {
    let mut c = p.0.take().expect("running");
    // SAFETY: plain kill(2) on our child.
    unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(40);
    while Instant::now() < deadline {
        if c.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let threads = threads_of(c.id());
    let stacks = stacks_of(c.id());
    let _ = c.kill();
    let _ = c.wait();
    panic!("backbeat did not stop within 40 s of SIGTERM; its threads then (name: state, wait channel):\n{threads}\n{stacks}");
}

/// Every thread's stack by gdb, within 20 s (a hung stop's exact place); else why not.
fn stacks_of(pid: u32) -> String {
    let pid = pid.to_string();
    let gdb = [
        "20",
        "gdb",
        "-p",
        &pid,
        "-batch",
        "-ex",
        "thread apply all bt 30",
    ];
    let out = Command::new("timeout")
        .args(gdb)
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) => format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => format!("(no stacks: gdb: {e})"),
    }
}

/// Each thread of a process with its state and kernel wait channel (where a stop hangs).
fn threads_of(pid: u32) -> String {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return "(unreadable)".into();
    };
    let mut out = Vec::new();
    for t in tasks.flatten() {
        let p = t.path();
        let read = |f: &str| std::fs::read_to_string(p.join(f)).unwrap_or_default();
        let state = read("stat")
            .rsplit_once(") ")
            .map(|(_, r)| r.chars().next().unwrap_or('?'))
            .unwrap_or('?');
        out.push(format!(
            "  {}: {state}, {}",
            read("comm").trim(),
            read("wchan").trim()
        ));
    }
    out.sort();
    out.join("\n")
}

pub fn produce(topic: &str, items: &[(String, String)]) {
    let b = broker();
    let topic = topic.to_string();
    let items = items.to_vec();
    block_on(async move {
        let p = kafka::producer(&b).unwrap();
        for (k, v) in &items {
            kafka::send(&p, &topic, k, Some(v.as_bytes()))
                .await
                .unwrap();
        }
    });
}

/// Reads every message of a topic (from the start) until `n` arrived or 30 s passed.
pub fn read_topic(topic: &str, n: usize) -> Vec<(String, String)> {
    read_topic_while(topic, n, Duration::from_secs(30))
}

/// Reads every message of a topic (from the start) until none came for `quiet` (at most
/// 60 s in all).
pub fn read_until_quiet(topic: &str, quiet: Duration) -> Vec<(String, String)> {
    read_topic_while(topic, usize::MAX, quiet)
}

/// Reads a topic from the start until `n` messages arrived, or none came for `quiet`, or
/// 60 s passed.
fn read_topic_while(topic: &str, n: usize, quiet: Duration) -> Vec<(String, String)> {
    let b = broker();
    let topic = topic.to_string();
    block_on(async move {
        let c = kafka::consumer(
            &b,
            &format!("reader-{}", bucket("g")),
            &kafka::Membership::session(6000),
            rdkafka::consumer::DefaultConsumerContext,
        )
        .unwrap();
        c.subscribe(&[&topic]).unwrap();
        let mut out = Vec::new();
        let limit = if n == usize::MAX { 60 } else { 30 };
        let deadline = Instant::now() + Duration::from_secs(limit);
        let mut last: Option<Instant> = None;
        while out.len() < n && Instant::now() < deadline {
            if last.is_some_and(|t| t.elapsed() >= quiet) {
                break;
            }
            let recv = async { Some(c.recv().await) };
            let tick = async {
                glommio::timer::sleep(Duration::from_millis(500)).await;
                None
            };
            if let Some(Ok(m)) = futures_lite::future::or(recv, tick).await {
                last = Some(Instant::now());
                out.push((
                    m.key()
                        .map(|k| String::from_utf8_lossy(k).into_owned())
                        .unwrap_or_default(),
                    m.payload()
                        .map(|p| String::from_utf8_lossy(p).into_owned())
                        .unwrap_or_default(),
                ));
            }
        }
        out
    })
}

/// How many messages a topic holds: all of them read from the start, until none came for
/// 3 s. (Not from its watermarks: nisshi reports a partition's high watermark one short
/// after a batch of several records from one producer request.)
pub fn topic_len(topic: &str) -> usize {
    read_until_quiet(topic, Duration::from_secs(3)).len()
}

/// Status records of `topic` as JSON, once at least `n` arrived (or 30 s passed).
pub fn statuses(topic: &str, n: usize) -> Vec<serde_json::Value> {
    read_topic(topic, n)
        .iter()
        .filter_map(|(_, v)| serde_json::from_str(v).ok())
        .collect()
}

/// Waits until `f` holds (polling), or panics with `what` after `secs`.
pub fn wait_until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!("timed out after {secs} s waiting for {what}");
}

pub fn real_versions(c: &Client, b: &str, key: &str) -> Vec<Vec<u8>> {
    block_on(async {
        let all = all_versions(c, b).await;
        let mut out = Vec::new();
        for v in all
            .get(key)
            .map(|l| {
                l.iter()
                    .filter(|v| !v.delete_marker)
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
        {
            out.push(read_all(c, b, key, Some(&v.version_id)).await);
        }
        out.reverse(); // oldest first
        out
    })
}

/// Whether the API on `port` answers `/_/ready` with 200; a connection refused or reset (an
/// engine still starting, or the previous one on the same port just gone) is "not yet".
pub fn api_ready(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
    let req = "GET /_/ready HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    let mut out = String::new();
    c.write_all(req.as_bytes()).is_ok()
        && c.read_to_string(&mut out).is_ok()
        && out.starts_with("HTTP/1.1 200")
}

/// A plain HTTP/1.1 GET; returns (status, body).
/// How long a test waits for the API's answer: longer than an endpoint's default idle
/// timeout (60 s), so that a stalled S3 request behind a route surfaces as the API's own
/// error rather than as a silent client timeout.
const API_PATIENCE: Duration = Duration::from_secs(90);

pub fn http_get(port: u16, path: &str, token: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(API_PATIENCE)).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out)
        .unwrap_or_else(|e| panic!("GET {path}: no complete answer within {API_PATIENCE:?}: {e}"));
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

pub fn http_req(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(API_PATIENCE)).unwrap();
    write!(c, "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap_or_else(|e| {
        panic!("{method} {path}: no complete answer within {API_PATIENCE:?}: {e}")
    });
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (
        status,
        out.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default(),
    )
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
