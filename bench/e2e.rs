//! The end-to-end scenario: S3 event notifications in Kafka to objects at the destination,
//! through `backbeat run` (populate and replicate in one process), with replication latency
//! from each event's time to its completion, read back from the status topic.

use std::path::Path;
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
    // tests/services.sh installs it under ~/.local/nisshi-slatedb and names it in NISSHI_BIN.
    let local = std::env::var("HOME").map(|h| format!("{h}/.local/nisshi-slatedb/bin/nisshi"));
    let bin = std::env::var("NISSHI_BIN")
        .ok()
        .or(local.ok().filter(|p| std::path::Path::new(p).exists()))
        .unwrap_or_else(|| "nisshi".into());
    let child = Command::new(bin)
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

#[allow(clippy::too_many_arguments)]
pub fn run(
    backbeat: &Path,
    brokers: &str,
    server: &MemS3,
    url: &str,
    count: usize,
    size: u64,
    shards: usize,
    concurrency: usize,
) -> anyhow::Result<E2e> {
    let dir = std::env::temp_dir().join(format!("backbeat-bench-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let prefix = format!("bench{}-", std::process::id());
    std::fs::write(
        dir.join("rules.xml"),
        "<ReplicationConfiguration><Role>r</Role><Rule><ID>all</ID><Status>Enabled</Status><Priority>1</Priority><Filter><Prefix></Prefix></Filter><DeleteMarkerReplication><Status>Enabled</Status></DeleteMarkerReplication><Destination><Bucket>arn:aws:s3:::bench-dst</Bucket><StorageClass>bench</StorageClass></Destination></Rule></ReplicationConfiguration>",
    )?;
    let config = dir.join("backbeat.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbrokers = [\"{brokers}\"]\ntopic_prefix = \"{prefix}\"\npartitions = 8\nsession_timeout_ms = 6000\n[source]\nendpoint = \"{url}\"\nbuckets = [\"bench-src\"]\nrules_file = \"rules.xml\"\n[sites.bench]\nendpoint = \"{url}\"\nbuckets = {{ bench-src = \"bench-dst\" }}\n[replication]\nshards = {shards}\nconcurrency = {concurrency}\n[api]\nlisten = \"127.0.0.1:0\"\n"
        ),
    )?;
    let log = dir.join("backbeat.log");
    let mut child = Command::new(backbeat)
        .args(["run", "--config"])
        .arg(&config)
        .env("AWS_ACCESS_KEY_ID", "bench")
        .env("AWS_SECRET_ACCESS_KEY", "bench-secret")
        .env("BACKBEAT_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let sampler = crate::peak_rss_sampler(child.id());
    // Wait for every shard to join the group before the clock starts.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.matches("partitions assigned").count() >= shards {
            break;
        }
        if Instant::now() > deadline || child.try_wait()?.is_some() {
            let _ = child.kill();
            bail!("backbeat run did not join the group: {text}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let topics = kafka::Topics::new(&prefix);
    let before = server.objects_completed.load(Ordering::SeqCst);
    let start = Instant::now();
    let (b, events_topic) = (brokers.to_string(), topics.events.clone());
    let produced = backbeat::shard::block_on(async move {
        let p = kafka::producer(&b)?;
        let mut i = 0;
        while i < count {
            let n = (count - i).min(256);
            let batch: Vec<(String, String)> = (i..i + n)
                .map(|j| {
                    let key = format!("obj-{j:08}");
                    let ev = event(
                        "bench-src",
                        &key,
                        size,
                        &backbeat::time::rfc3339(SystemTime::now()),
                    );
                    (key, ev)
                })
                .collect();
            let sends = batch.iter().map(|(key, ev)| {
                let rec: rdkafka::producer::FutureRecord<'_, str, str> =
                    rdkafka::producer::FutureRecord::to(&events_topic)
                        .key(key.as_str())
                        .payload(ev.as_str());
                p.send(rec, Duration::from_secs(30))
            });
            for r in futures_util::future::join_all(sends).await {
                r.map_err(|(e, _)| anyhow::anyhow!("produce: {e}"))?;
            }
            i += n;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    produced?;
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut last_report = Instant::now();
    loop {
        let done = server.objects_completed.load(Ordering::SeqCst) - before;
        if done as usize >= count {
            break;
        }
        if last_report.elapsed() > Duration::from_secs(2) {
            eprintln!("    {done} of {count} objects at the destination");
            last_report = Instant::now();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("only {done} of {count} objects arrived in 10 minutes");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let seconds = start.elapsed().as_secs_f64();
    // SAFETY: kill(2) and wait4(2) on our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let mut status = 0;
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut ru) };
    let tv = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    let cpu_seconds = tv(ru.ru_utime) + tv(ru.ru_stime);
    // Latency from the status topic.
    let (b, status_topic) = (brokers.to_string(), topics.status.clone());
    let hist = backbeat::shard::block_on(async move {
        let c = kafka::consumer(
            &b,
            &format!("{status_topic}-reader"),
            &kafka::Membership::session(6000),
            rdkafka::consumer::DefaultConsumerContext,
        )?;
        c.subscribe(&[&status_topic])
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000, 3)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while (h.len() as usize) < count && Instant::now() < deadline {
            let recv = async { Some(c.recv().await) };
            let tick = async {
                glommio::timer::sleep(Duration::from_millis(500)).await;
                None
            };
            if let Some(Ok(m)) = futures_lite::future::or(recv, tick).await {
                if let Some(ms) = m
                    .payload()
                    .and_then(|p| StatusEvent::decode(p).ok())
                    .and_then(|s| s.latency_ms)
                {
                    h.record(ms.max(1))?;
                }
            }
        }
        Ok::<_, anyhow::Error>(h)
    })??;
    let _ = std::fs::remove_dir_all(&dir);
    if (hist.len() as usize) < count {
        bail!(
            "only {} of {count} status events carried a latency",
            hist.len()
        );
    }
    Ok(E2e {
        seconds,
        cpu_seconds,
        max_rss_mib: sampler.join().unwrap_or(0.0),
        latency_ms: [
            hist.value_at_quantile(0.5) as f64,
            hist.value_at_quantile(0.99) as f64,
            hist.value_at_quantile(0.999) as f64,
        ],
        // The histogram is in milliseconds here: scale it to what cdf_ms expects.
        latency_cdf_ms: backbeat::metrics::cdf_ms(&hist)
            .into_iter()
            .map(|[q, v]| [q, v * 1000.0])
            .collect(),
    })
}
