//! The end-to-end scenarios: S3 event notifications in Kafka to objects at the destination,
//! through `backbeat run` (populate and replicate in one process), with replication latency
//! from each event's time to its completion, read back from the status topic.
//!
//! - `e2e`: every event produced at once (a burst): the saturating rate.
//! - `steady`: events produced at a fixed rate (half the burst's, by default): latency
//!   percentiles per minute, what an RPO is made of.
//! - `backlog`: events produced while no engine runs, then one started: catch-up time and
//!   peak memory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use backbeat::queue::codec::StatusEvent;
use backbeat::queue::kafka;
use rdkafka::consumer::Consumer as _;
use rdkafka::message::Message;

use crate::mem_s3::MemS3;

/// Figures of one end-to-end run.
pub struct E2e {
    pub seconds: f64,
    pub cpu_seconds: f64,
    pub max_rss_mib: f64,
    /// p50, p99, p99.9 in milliseconds.
    pub latency_ms: [f64; 3],
    /// (quantile, milliseconds).
    pub latency_cdf_ms: Vec<[f64; 2]>,
    /// Per minute of the run (by each outcome's time): objects, p50, p99, p99.9, max (ms).
    pub per_minute: Vec<[f64; 5]>,
    /// Where the latency goes, (p50, p99) in ms (0 counted as 1) of: the event until its
    /// entry is produced (the events topic, populate), the entry until the data mover takes
    /// it (the replication topic, librdkafka's queue, a free slot), its wait behind an
    /// earlier version of its key, its copy. An outcome without `inTopicMs` counts its
    /// topic time in the first stage.
    pub stages_ms: [[f64; 2]; 4],
}

/// One outcome read back from the status topic.
struct Outcome {
    at: SystemTime,
    ms: u64,
    queue_wait_ms: u64,
    transfer_ms: u64,
    in_topic_ms: u64,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A broker: the given one, or a nisshi started here (stopped when dropped).
pub struct Broker {
    pub addr: String,
    child: Option<Child>,
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn broker(given: Option<&str>) -> anyhow::Result<Broker> {
    if let Some(b) = given {
        return Ok(Broker {
            addr: b.to_string(),
            child: None,
        });
    }
    let port = free_port()?;
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(nisshi_bin())
        .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("no --kafka given and nisshi is not installed (source tests/services.sh && services_nisshi_bin installs it)")?;
    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&addr).is_err() {
        if Instant::now() > deadline {
            bail!("nisshi did not start on {addr}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Broker {
        addr,
        child: Some(child),
    })
}

fn event(bucket: &str, key: &str, size: u64, time: &str) -> String {
    format!(
        r#"{{"Records":[{{"eventName":"ObjectCreated:Put","eventTime":"{time}","s3":{{"bucket":{{"name":"{bucket}"}},"object":{{"key":"{key}","size":{size},"eTag":"x","versionId":"null","sequencer":"1"}}}}}}]}}"#
    )
}

/// What a scenario runs: the engine's binary and settings.
pub struct Setup<'a> {
    pub backbeat: &'a Path,
    pub brokers: &'a str,
    /// `kafka.fetch_wait_ms` of the engine.
    pub fetch_wait_ms: u32,
    pub shards: usize,
    pub concurrency: usize,
}

/// Where: the in-memory endpoint (its URL) and the size of its objects.
pub struct At<'a> {
    pub server: &'a MemS3,
    pub url: &'a str,
    pub size: u64,
}

/// A `backbeat run` on the in-memory endpoint, with its own topics.
struct Engine {
    child: Child,
    log: PathBuf,
    sampler: std::thread::JoinHandle<f64>,
}

/// The directory and topics of one scenario (created before any engine starts, so that
/// events can wait in Kafka for one).
struct Workspace {
    dir: PathBuf,
    config: PathBuf,
    topics: kafka::Topics,
}

impl Workspace {
    fn new(s: &Setup<'_>, url: &str, tag: &str) -> anyhow::Result<Self> {
        let id = format!("{tag}{}", std::process::id());
        let dir = std::env::temp_dir().join(format!("backbeat-bench-{id}"));
        std::fs::create_dir_all(&dir)?;
        let prefix = format!("bench{id}-");
        std::fs::write(
            dir.join("rules.xml"),
            "<ReplicationConfiguration><Role>r</Role><Rule><ID>all</ID><Status>Enabled</Status><Priority>1</Priority><Filter><Prefix></Prefix></Filter><DeleteMarkerReplication><Status>Enabled</Status></DeleteMarkerReplication><Destination><Bucket>arn:aws:s3:::bench-dst</Bucket><StorageClass>bench</StorageClass></Destination></Rule></ReplicationConfiguration>",
        )?;
        let config = dir.join("backbeat.toml");
        std::fs::write(
            &config,
            format!(
                "[kafka]\nbrokers = [\"{}\"]\ntopic_prefix = \"{prefix}\"\npartitions = 8\nsession_timeout_ms = 6000\nfetch_wait_ms = {}\n[source]\nendpoint = \"{}\"\nbuckets = [\"bench-src\"]\nrules_file = \"rules.xml\"\n[sites.bench]\nendpoint = \"{}\"\nbuckets = {{ bench-src = \"bench-dst\" }}\n[replication]\nshards = {}\nconcurrency = {}\n[api]\nlisten = \"127.0.0.1:0\"\n",
                s.brokers, s.fetch_wait_ms, url, url, s.shards, s.concurrency
            ),
        )?;
        Ok(Workspace {
            dir,
            config,
            topics: kafka::Topics::new(&prefix),
        })
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Engine {
    /// Starts `backbeat run`; returns once every shard joined the group.
    fn start(s: &Setup<'_>, ws: &Workspace) -> anyhow::Result<Engine> {
        let log = ws.dir.join("backbeat.log");
        let child = Command::new(s.backbeat)
            .args(["run", "--config"])
            .arg(&ws.config)
            .env("AWS_ACCESS_KEY_ID", "bench")
            .env("AWS_SECRET_ACCESS_KEY", "bench-secret")
            .env("BACKBEAT_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        let sampler = crate::peak_rss_sampler(child.id());
        let mut e = Engine {
            child,
            log,
            sampler,
        };
        e.joined(s.shards)?;
        Ok(e)
    }

    fn joined(&mut self, shards: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if text.matches("partitions assigned").count() >= shards {
                return Ok(());
            }
            if Instant::now() > deadline || self.child.try_wait()?.is_some() {
                let _ = self.child.kill();
                bail!("backbeat run did not join the group: {text}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the engine: (CPU seconds, peak RSS MiB).
    fn stop(self) -> (f64, f64) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) and wait4(2) on our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let mut status = 0;
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        let tv = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
        (
            tv(ru.ru_utime) + tv(ru.ru_stime),
            self.sampler.join().unwrap_or(0.0),
        )
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Produces the events of objects `from..to` now, in batches of 256.
fn produce(brokers: &str, topic: &str, from: usize, to: usize, size: u64) -> anyhow::Result<()> {
    let (b, topic) = (brokers.to_string(), topic.to_string());
    backbeat::shard::block_on(async move {
        let p = kafka::producer(&b)?;
        let mut i = from;
        while i < to {
            let n = (to - i).min(256);
            send_events(&p, &topic, i..i + n, size).await?;
            i += n;
        }
        Ok::<_, anyhow::Error>(())
    })?
}

async fn send_events(
    p: &kafka::Producer,
    topic: &str,
    keys: std::ops::Range<usize>,
    size: u64,
) -> anyhow::Result<()> {
    let batch: Vec<(String, String)> = keys
        .map(|j| {
            let key = format!("obj-{j:08}");
            let now = backbeat::time::rfc3339(SystemTime::now());
            let ev = event("bench-src", &key, size, &now);
            (key, ev)
        })
        .collect();
    let sends = batch.iter().map(|(key, ev)| {
        let rec: rdkafka::producer::FutureRecord<'_, str, str> =
            rdkafka::producer::FutureRecord::to(topic)
                .key(key.as_str())
                .payload(ev.as_str());
        p.send(rec, Duration::from_secs(30))
    });
    for r in futures_util::future::join_all(sends).await {
        r.map_err(|(e, _)| anyhow::anyhow!("produce: {e}"))?;
    }
    Ok(())
}

/// Produces `count` events at `rate` per second, evenly (a batch every 10 ms), each stamped
/// when it is produced. Returns the rate achieved.
fn produce_steady(
    brokers: &str,
    topic: &str,
    (count, size): (usize, u64),
    rate: f64,
) -> anyhow::Result<f64> {
    let (b, topic) = (brokers.to_string(), topic.to_string());
    backbeat::shard::block_on(async move {
        let p = kafka::producer(&b)?;
        let start = Instant::now();
        let mut sent = 0usize;
        let mut last_report = Instant::now();
        while sent < count {
            let due = ((start.elapsed().as_secs_f64() * rate) as usize).min(count);
            if due > sent {
                send_events(&p, &topic, sent..due, size).await?;
                sent = due;
            }
            if last_report.elapsed() > Duration::from_secs(10) {
                eprintln!("    {sent} of {count} events produced");
                last_report = Instant::now();
            }
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
        Ok::<_, anyhow::Error>(count as f64 / start.elapsed().as_secs_f64())
    })?
}

/// Waits until `count` more objects than `before` reached the endpoint (10 minutes at most,
/// progress every 5 s).
fn arrived(server: &MemS3, before: u64, count: usize, e: &mut Engine) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut last_report = Instant::now();
    loop {
        let done = server.objects_completed.load(Ordering::SeqCst) - before;
        if done as usize >= count {
            return Ok(());
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!("    {done} of {count} objects at the destination");
            last_report = Instant::now();
        }
        if Instant::now() > deadline || e.child.try_wait()?.is_some() {
            bail!(
                "only {done} of {count} objects arrived (the engine's log: {})",
                e.log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Each outcome's time and latency, read back from the status topic.
fn outcomes(brokers: &str, topic: &str, count: usize) -> anyhow::Result<Vec<Outcome>> {
    let (b, topic) = (brokers.to_string(), topic.to_string());
    let got = backbeat::shard::block_on(async move {
        let c = kafka::consumer(
            &b,
            &format!("{topic}-reader"),
            &kafka::Membership::session(6000),
            rdkafka::consumer::DefaultConsumerContext,
        )?;
        c.subscribe(&[&topic]).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut got = Vec::with_capacity(count);
        let deadline = Instant::now() + Duration::from_secs(120);
        while got.len() < count && Instant::now() < deadline {
            let recv = async { Some(c.recv().await) };
            let tick = async {
                glommio::timer::sleep(Duration::from_millis(500)).await;
                None
            };
            if let Some(Ok(m)) = futures_lite::future::or(recv, tick).await {
                let s = m.payload().and_then(|p| StatusEvent::decode(p).ok());
                if let Some(s) = s {
                    let at = backbeat::time::parse_rfc3339(&s.at);
                    if let (Some(at), Some(ms)) = (at, s.latency_ms) {
                        got.push(Outcome {
                            at,
                            ms: ms.max(1),
                            queue_wait_ms: s.durations.queue_wait_ms,
                            transfer_ms: s.durations.transfer_ms,
                            in_topic_ms: s.durations.in_topic_ms.unwrap_or(0),
                        });
                    }
                }
            }
        }
        Ok::<_, anyhow::Error>(got)
    })??;
    if got.len() < count {
        bail!(
            "only {} of {count} status events carried a latency",
            got.len()
        );
    }
    Ok(got)
}

fn histogram(ms: impl Iterator<Item = u64>) -> anyhow::Result<hdrhistogram::Histogram<u64>> {
    let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000, 3)?;
    for v in ms {
        h.saturating_record(v);
    }
    Ok(h)
}

fn quantiles(h: &hdrhistogram::Histogram<u64>) -> [f64; 3] {
    [0.5, 0.99, 0.999].map(|q| h.value_at_quantile(q) as f64)
}

/// The figures of a run from its outcomes.
fn figures(out: &[Outcome], seconds: f64, cpu: f64, rss: f64) -> anyhow::Result<E2e> {
    let hist = histogram(out.iter().map(|o| o.ms))?;
    let first = out
        .iter()
        .map(|o| o.at)
        .min()
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let minute = |at: SystemTime| at.duration_since(first).unwrap_or_default().as_secs() / 60;
    let minutes = out.iter().map(|o| minute(o.at)).max().unwrap_or(0);
    let mut per_minute = Vec::new();
    for m in 0..=minutes {
        let h = histogram(out.iter().filter(|o| minute(o.at) == m).map(|o| o.ms))?;
        let [p50, p99, p999] = quantiles(&h);
        per_minute.push([h.len() as f64, p50, p99, p999, h.max() as f64]);
    }
    let stage = |f: &dyn Fn(&Outcome) -> u64| -> anyhow::Result<[f64; 2]> {
        let [p50, p99, _] = quantiles(&histogram(out.iter().map(|o| f(o).max(1)))?);
        Ok([p50, p99])
    };
    let stages_ms = [
        stage(&|o| {
            o.ms.saturating_sub(o.in_topic_ms + o.queue_wait_ms + o.transfer_ms)
        })?,
        stage(&|o| o.in_topic_ms)?,
        stage(&|o| o.queue_wait_ms)?,
        stage(&|o| o.transfer_ms)?,
    ];
    Ok(E2e {
        seconds,
        cpu_seconds: cpu,
        max_rss_mib: rss,
        latency_ms: quantiles(&hist),
        // The histogram is in milliseconds here: scale it to what cdf_ms expects.
        latency_cdf_ms: backbeat::metrics::cdf_ms(&hist)
            .into_iter()
            .map(|[q, v]| [q, v * 1000.0])
            .collect(),
        per_minute,
        stages_ms,
    })
}

/// Every event produced at once, with the engine running.
pub fn burst(s: &Setup<'_>, at: &At<'_>, count: usize) -> anyhow::Result<E2e> {
    let ws = Workspace::new(s, at.url, "e2e")?;
    let e = Engine::start(s, &ws)?;
    let before = at.server.objects_completed.load(Ordering::SeqCst);
    let start = Instant::now();
    let r = produce(s.brokers, &ws.topics.events, 0, count, at.size);
    finish(s, at, (&ws, e), (before, start), r.map(|_| count))
}

/// Waits for `count` objects, stops the engine and reads the outcomes (the engine killed
/// when `produced` or the wait failed).
fn finish(
    s: &Setup<'_>,
    at: &At<'_>,
    (ws, mut e): (&Workspace, Engine),
    (before, start): (u64, Instant),
    produced: anyhow::Result<usize>,
) -> anyhow::Result<E2e> {
    let r = produced.and_then(|count| arrived(at.server, before, count, &mut e).map(|_| count));
    let count = match r {
        Ok(c) => c,
        Err(err) => {
            e.kill();
            return Err(err);
        }
    };
    let seconds = start.elapsed().as_secs_f64();
    let (cpu, rss) = e.stop();
    let out = outcomes(s.brokers, &ws.topics.status, count)?;
    figures(&out, seconds, cpu, rss)
}

/// `count` events at `rate` per second, with the engine running.
pub fn steady(s: &Setup<'_>, at: &At<'_>, count: usize, rate: f64) -> anyhow::Result<(E2e, f64)> {
    let ws = Workspace::new(s, at.url, "steady")?;
    let mut e = Engine::start(s, &ws)?;
    let before = at.server.objects_completed.load(Ordering::SeqCst);
    let start = Instant::now();
    let r = produce_steady(s.brokers, &ws.topics.events, (count, at.size), rate);
    let achieved = match r.and_then(|a| arrived(at.server, before, count, &mut e).map(|_| a)) {
        Ok(a) => a,
        Err(err) => {
            e.kill();
            return Err(err);
        }
    };
    let seconds = start.elapsed().as_secs_f64();
    let (cpu, rss) = e.stop();
    let out = outcomes(s.brokers, &ws.topics.status, count)?;
    Ok((figures(&out, seconds, cpu, rss)?, achieved))
}

/// `count` events produced before any engine runs; then one started, timed from its start
/// until the last object is at the destination.
pub fn backlog(s: &Setup<'_>, at: &At<'_>, count: usize) -> anyhow::Result<E2e> {
    let ws = Workspace::new(s, at.url, "backlog")?;
    let t = Instant::now();
    produce(s.brokers, &ws.topics.events, 0, count, at.size)?;
    eprintln!(
        "    {count} events waiting in Kafka ({:.1} s to produce)",
        t.elapsed().as_secs_f64()
    );
    let before = at.server.objects_completed.load(Ordering::SeqCst);
    let start = Instant::now();
    let e = Engine::start(s, &ws)?;
    finish(s, at, (&ws, e), (before, start), Ok(count))
}

/// The nisshi binary: `NISSHI_BIN`, else where tests/services.sh installs it
/// (~/.local/nisshi-slatedb), else `nisshi` on the PATH.
pub fn nisshi_bin() -> String {
    let local = std::env::var("HOME").map(|h| format!("{h}/.local/nisshi-slatedb/bin/nisshi"));
    std::env::var("NISSHI_BIN")
        .ok()
        .or(local.ok().filter(|p| std::path::Path::new(p).exists()))
        .unwrap_or_else(|| "nisshi".into())
}
