//! The ingestion scenario: incremental ingestion (`populate::ingest`) of a bucket of 1 million
//! keys (at scale 1) on the in-memory endpoint, its entries produced to an in-process broker:
//! a first pass (every version new, every entry produced), then a pass where nothing
//! changed (the listing and the comparison alone). For each: seconds, listing requests the
//! endpoint counted, and CPU seconds of the ingestion thread, per million keys.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backbeat::buckets::{NameMap, Selection};
use backbeat::populate::ingest;
use backbeat::populate::worker::{PopulateConfig, SiteTarget};
use backbeat::queue::kafka::{Membership, Topics};
use backbeat::queue::replayer::Schedule;
use backbeat::s3::{Credentials, Endpoint, EndpointConfig};
use backbeat::shard::Shutdown;

use super::mem_s3::{Catalog, MemS3};

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn config(url: &str, brokers: String, rules: std::path::PathBuf) -> anyhow::Result<PopulateConfig> {
    let creds = Credentials {
        access_key_id: "bench".into(),
        secret_access_key: "bench-secret".into(),
        session_token: None,
    };
    let ep: Arc<Endpoint> = Endpoint::new(EndpointConfig::new(url, "us-east-1", creds))?;
    let site = SiteTarget {
        endpoint: ep.clone(),
        group: "bench-site".into(),
        replay_group: "bench-site-replay".into(),
        buckets: NameMap::default(),
        create_buckets: false,
        versioned: true,
        policy: Default::default(),
    };
    Ok(PopulateConfig {
        brokers,
        topics: Topics::new("bench-"),
        group: "bench-populate".into(),
        membership: Membership::session(6000),
        source: ep,
        buckets: Selection::new(vec!["*".into()], Vec::new()),
        rules_file: Some(rules),
        default_rules_file: None,
        sites: [("bench".to_string(), site)].into(),
        backpressure: None,
        shutdown: Shutdown::new(),
        schedule: Schedule {
            delays: Vec::new(),
            patience: Duration::from_secs(60),
        },
        replay_group: "bench-populate-replay".into(),
    })
}

/// Runs both passes; returns a note with their figures.
pub fn run(scale: f64, server_threads: usize) -> anyhow::Result<String> {
    let n = ((1_000_000.0 * scale) as usize).max(10_000);
    let server = MemS3::new("bench-src", Catalog::uniform(n, 1));
    let url = format!("http://127.0.0.1:{}", server.serve(server_threads));
    let dir = std::env::temp_dir().join(format!("backbeat-bench-ingest-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let rules = dir.join("rules.xml");
    std::fs::write(&rules, "<ReplicationConfiguration><Role>r</Role><Rule><ID>all</ID><Status>Enabled</Status><Priority>1</Priority><Filter><Prefix></Prefix></Filter><DeleteMarkerReplication><Status>Enabled</Status></DeleteMarkerReplication><Destination><Bucket>arn:aws:s3:::x</Bucket><StorageClass>bench</StorageClass></Destination></Rule></ReplicationConfiguration>")?;
    let mock = rdkafka::mocking::MockCluster::new(1)?;
    mock.create_topic("bench-replication", 4, 1)?;
    let cfg = config(&url, mock.bootstrap_servers(), rules)?;
    eprintln!("scenario ingestion: {n} keys, in-memory S3 endpoint at {url}, entries to an in-process broker");
    let mut parts = Vec::new();
    for label in ["first pass (every version new)", "a pass with no change"] {
        let before = server.requests.load(Ordering::Relaxed);
        let (cfg, state) = (cfg.clone(), dir.join("state"));
        let (seconds, cpu, p) = backbeat::shard::block_on(async move {
            let (t0, c0) = (Instant::now(), thread_cpu());
            let p = ingest::pass(&cfg, "bench-src", &state, &|| false, |_| {}).await;
            (
                t0.elapsed().as_secs_f64(),
                (thread_cpu() - c0).as_secs_f64(),
                p,
            )
        })?;
        let p = p?;
        let requests = server.requests.load(Ordering::Relaxed) - before;
        let per_m = 1e6 / n as f64;
        let line = format!(
            "{label}: {} keys, {} entries, {requests} requests to the endpoint ({} listing pages), {seconds:.2} s ({:.2} s per million keys), {cpu:.2} CPU-s ({:.2} CPU-s per million keys)",
            p.keys, p.enqueued, p.pages, seconds * per_m, cpu * per_m
        );
        eprintln!("ingestion: {line}");
        parts.push(line);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(format!("ingestion: {}", parts.join("; ")))
}
