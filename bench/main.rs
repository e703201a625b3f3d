//! `backbeat-bench`: runs named scenarios with backbeat, rclone and a loopback limit on the
//! same in-memory S3 endpoint in the same run, and reports throughput, CPU cost, memory,
//! latency and the ratios backbeat/rclone and backbeat/limit (table, JSON and PNG charts).
//!
//! The endpoint is an in-memory S3 server of this harness (`mem_s3.rs`), so the movers, not
//! the server, are measured. CPU time and peak RSS are each mover process's own (wait4).
//! The limit is `relay.rs`, a plain socket relay run as `backbeat-bench relay`.

mod bandwidth;
mod conn_watch;
mod e2e;
mod ingest;
mod lifecycle;
mod mem_s3;
mod plots;
mod relay;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use mem_s3::{Catalog, MemS3};

#[derive(Parser)]
#[command(
    about = "Benchmark backbeat against rclone and a loopback limit on an in-memory S3 endpoint",
    after_help = "Scenarios: sweep (sweep-4KiB, sweep-64KiB, sweep-1MiB, sweep-16MiB, sweep-256MiB), mixed, versions, e2e, steady, backlog, lifecycle, bandwidth, ingestion, all. Several may be given, comma-separated."
)]
struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Scenarios to run (see below)
    #[arg(long, default_value = "all")]
    scenario: String,
    /// Multiplies every scenario's object count (0.1 for a quick look)
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Kafka brokers for the e2e scenario (default: start nisshi, if installed)
    #[arg(long)]
    kafka: Option<String>,
    /// Objects in the e2e scenario
    #[arg(long, default_value_t = 2000)]
    e2e_count: usize,
    /// Object size in the e2e scenario
    #[arg(long, default_value_t = 256 * 1024)]
    e2e_size: u64,
    /// Object size in the steady and backlog scenarios
    #[arg(long, default_value_t = 64 * 1024)]
    steady_size: u64,
    /// Seconds of steady load (times --scale, at least 60)
    #[arg(long, default_value_t = 180)]
    steady_seconds: u64,
    /// Events per second in the steady scenario (default: half the rate of a burst of the
    /// same objects, measured first)
    #[arg(long)]
    steady_rate: Option<f64>,
    /// `kafka.fetch_wait_ms` of the engine through Kafka (nisshi answers a fetch only when
    /// its wait ends: every topic crossed costs up to this much latency)
    #[arg(long, default_value_t = 10)]
    fetch_wait_ms: u32,
    /// Events waiting in Kafka in the backlog scenario (times --scale)
    #[arg(long, default_value_t = 100_000)]
    backlog_count: usize,
    /// Server threads of the in-memory endpoint
    #[arg(long, default_value_t = 1)]
    server_threads: usize,
    /// backbeat shards (default: one per core)
    #[arg(long)]
    shards: Option<usize>,
    /// backbeat transfers in flight per shard
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Skip rclone
    #[arg(long)]
    skip_rclone: bool,
    /// Skip the loopback limit
    #[arg(long)]
    skip_limit: bool,
    /// Write results as JSON to this file
    #[arg(long, default_value = "bench/results/latest.json")]
    json: PathBuf,
    /// Write the PNG charts into this directory (empty: no charts)
    #[arg(long, default_value = "docs/img")]
    plots: PathBuf,
    /// The backbeat binary (default: next to this one)
    #[arg(long)]
    backbeat: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// The loopback limit (run by the harness itself): relays a scenario's objects.
    Relay {
        #[arg(long)]
        addr: String,
        #[arg(long)]
        scenario: String,
        #[arg(long)]
        scale: f64,
        #[arg(long)]
        workers: usize,
        #[arg(long)]
        dest_bucket: String,
    },
}

#[derive(serde::Serialize, serde::Deserialize, Clone)]
pub struct Run {
    tool: String,
    scenario: String,
    /// The object size of a sweep point.
    #[serde(skip_serializing_if = "Option::is_none")]
    object_size: Option<u64>,
    /// The setting that gave this run (the best one tried, for rclone and the limit).
    setting: String,
    objects: usize,
    bytes: u64,
    seconds: f64,
    gb_per_s: f64,
    objects_per_s: f64,
    cpu_seconds: f64,
    cpu_s_per_gb: f64,
    cpu_s_per_1000_objects: f64,
    max_rss_mib: f64,
    /// Per-object latency p50, p99, p99.9 (ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_ms: Option<[f64; 3]>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    latency_cdf_ms: Vec<[f64; 2]>,
    /// Through Kafka, per minute of the run: objects, latency p50, p99, p99.9, max (ms).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    per_minute: Vec<[f64; 5]>,
}

#[derive(serde::Serialize)]
struct Report {
    machine: String,
    command: String,
    runs: Vec<Run>,
    ratios: Vec<serde_json::Value>,
    notes: Vec<String>,
}

/// A named workload: what the source holds, and the settings tried for rclone and the limit.
struct Scenario {
    name: String,
    catalog: Catalog,
    object_size: Option<u64>,
    rclone_transfers: Vec<usize>,
    relay_workers: Vec<usize>,
}

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

fn scaled(n: usize, scale: f64) -> usize {
    ((n as f64 * scale).round() as usize).max(1)
}

/// Every scenario this harness knows (e2e aside), by name.
fn catalog_scenarios(scale: f64) -> Vec<Scenario> {
    let mut v = Vec::new();
    for (size, count, label) in [
        (4 * KIB, 5000, "4KiB"),
        (64 * KIB, 3000, "64KiB"),
        (MIB, 1000, "1MiB"),
        (16 * MIB, 96, "16MiB"),
        (256 * MIB, 6, "256MiB"),
    ] {
        let (rc, lim) = if size <= 64 * KIB {
            (vec![32, 128], vec![16, 64])
        } else if size <= MIB {
            (vec![16, 64], vec![8, 32])
        } else {
            (vec![4, 16], vec![2, 8])
        };
        v.push(Scenario {
            name: format!("sweep-{label}"),
            catalog: Catalog::uniform(scaled(count, scale), size),
            object_size: Some(size),
            rclone_transfers: rc,
            relay_workers: lim,
        });
    }
    v.push(Scenario {
        name: "mixed".into(),
        catalog: Catalog::mixed(scaled(1000, scale)),
        object_size: None,
        rclone_transfers: vec![16, 64],
        relay_workers: vec![16, 64],
    });
    v.push(Scenario {
        name: "versions".into(),
        catalog: Catalog {
            sizes: vec![64 * KIB; 20],
            versions: scaled(200, scale),
        },
        object_size: None,
        // rclone copies current versions only: it cannot replicate a key's history.
        rclone_transfers: Vec::new(),
        relay_workers: vec![16, 64],
    });
    v
}

/// Samples a process's peak resident set (VmHWM) every 20 ms until it exits; returns MiB.
/// (wait4's ru_maxrss cannot be used: a spawned child starts with the harness's own peak,
/// which it inherits through fork and exec.)
pub fn peak_rss_sampler(pid: u32) -> std::thread::JoinHandle<f64> {
    std::thread::spawn(move || {
        let path = format!("/proc/{pid}/status");
        let mut peak_kib = 0u64;
        while let Ok(text) = std::fs::read_to_string(&path) {
            match text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                Some(kib) => peak_kib = peak_kib.max(kib),
                None => break, // a zombie: it has exited
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        peak_kib as f64 / 1024.0
    })
}

/// Runs `cmd` to completion and returns its own resource usage (wait4), so CPU time and
/// peak RSS are exactly the mover's.
fn run_measured(
    cmd: &mut Command,
) -> anyhow::Result<(std::process::ExitStatus, String, String, libc::rusage, f64)> {
    let dir = std::env::temp_dir();
    let out_path = dir.join(format!("backbeat-bench-{}.out", std::process::id()));
    let err_path = dir.join(format!("backbeat-bench-{}.err", std::process::id()));
    let child = cmd
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(std::fs::File::create(&err_path)?)
        .spawn()?;
    let sampler = peak_rss_sampler(child.id());
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for our own child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut ru) };
    if pid < 0 {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    use std::os::unix::process::ExitStatusExt;
    let out = std::fs::read_to_string(&out_path).unwrap_or_default();
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    let _ = std::fs::remove_file(&err_path);
    let peak = sampler.join().unwrap_or(0.0);
    Ok((
        std::process::ExitStatus::from_raw(status),
        out,
        err,
        ru,
        peak,
    ))
}

/// Runs a mover to completion, showing the endpoint's progress, and checks that every object
/// arrived intact.
fn measure(
    tool: &str,
    setting: &str,
    sc: &Scenario,
    server: &Arc<MemS3>,
    cmd: &mut Command,
) -> anyhow::Result<(Run, String)> {
    let objects = sc.catalog.objects();
    let bytes = sc.catalog.bytes();
    eprintln!(
        "  {} {tool} {setting}: {objects} objects, {:.1} MiB ...",
        sc.name,
        bytes as f64 / MIB as f64
    );
    let before = server.objects_completed.load(Ordering::SeqCst);
    let bad_before = server.checksum_failures.load(Ordering::SeqCst);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let progress = {
        let (server, stop) = (server.clone(), stop.clone());
        std::thread::spawn(move || {
            let t = Instant::now();
            let mut last = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                if last.elapsed() >= Duration::from_secs(3) {
                    let done = server.objects_completed.load(Ordering::SeqCst) - before;
                    eprintln!(
                        "    {done} of {objects} objects arrived ({:.0} s)",
                        t.elapsed().as_secs_f64()
                    );
                    last = Instant::now();
                }
            }
        })
    };
    let t = Instant::now();
    let res = run_measured(cmd).with_context(|| format!("starting {tool}"));
    let secs = t.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = progress.join();
    let (status, out, err, ru, peak_rss) = res?;
    if !status.success() {
        bail!("{tool} failed ({status}): {out}{err}");
    }
    let done = server.objects_completed.load(Ordering::SeqCst) - before;
    let bad = server.checksum_failures.load(Ordering::SeqCst) - bad_before;
    if done != objects as u64 || bad != 0 {
        bail!("{tool}: {done} of {objects} objects arrived, {bad} checksum failures");
    }
    let tv = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    let cpu = tv(ru.ru_utime) + tv(ru.ru_stime);
    let gb = bytes as f64 / 1e9;
    Ok((
        Run {
            tool: tool.into(),
            scenario: sc.name.clone(),
            object_size: sc.object_size,
            setting: setting.into(),
            objects,
            bytes,
            seconds: secs,
            gb_per_s: gb / secs,
            objects_per_s: objects as f64 / secs,
            cpu_seconds: cpu,
            cpu_s_per_gb: cpu / gb,
            cpu_s_per_1000_objects: cpu / objects as f64 * 1000.0,
            max_rss_mib: peak_rss,
            latency_ms: None,
            latency_cdf_ms: Vec::new(),
            per_minute: Vec::new(),
        },
        out,
    ))
}

fn percentiles(cdf: &[[f64; 2]]) -> Option<[f64; 3]> {
    let at = |q: f64| cdf.iter().find(|p| p[0] >= q - 1e-9).map(|p| p[1]);
    Some([at(0.5)?, at(0.99)?, at(0.999)?])
}

/// The best of several runs with different settings (by throughput).
fn best(runs: Vec<Run>) -> Option<Run> {
    runs.into_iter()
        .max_by(|a, b| a.gb_per_s.total_cmp(&b.gb_per_s))
}

fn run_scenario(
    args: &Args,
    sc: &Scenario,
    backbeat: &Path,
    runs: &mut Vec<Run>,
    notes: &mut Vec<String>,
) -> anyhow::Result<()> {
    let server = MemS3::new("bench-src", sc.catalog.clone());
    let port = server.serve(args.server_threads);
    let url = format!("http://127.0.0.1:{port}");
    eprintln!(
        "scenario {}: {} objects ({} keys x {} versions), {:.1} MiB, in-memory S3 endpoint at {url}",
        sc.name,
        sc.catalog.objects(),
        sc.catalog.sizes.len(),
        sc.catalog.versions,
        sc.catalog.bytes() as f64 / MIB as f64
    );
    let shards = args.shards.unwrap_or_else(cores);
    // backbeat
    let mut cmd = Command::new(backbeat);
    cmd.args([
        "sync",
        "s3://bench-src",
        "s3://bench-dst",
        "--source-endpoint",
        &url,
        "--destination-endpoint",
        &url,
        "--json",
    ])
    .args([
        "--shards",
        &shards.to_string(),
        "--concurrency",
        &args.concurrency.to_string(),
    ])
    .env("AWS_ACCESS_KEY_ID", "bench")
    .env("AWS_SECRET_ACCESS_KEY", "bench-secret");
    let setting = format!("--shards {shards} --concurrency {}", args.concurrency);
    let (mut run, out) = measure("backbeat", &setting, sc, &server, &mut cmd)?;
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&out) {
        if let Some(cdf) = v.get("latency_cdf_ms") {
            run.latency_cdf_ms = serde_json::from_value(cdf.clone()).unwrap_or_default();
            run.latency_ms = percentiles(&run.latency_cdf_ms);
        }
    }
    runs.push(run);
    // rclone, its best --transfers
    if !args.skip_rclone {
        if sc.rclone_transfers.is_empty() {
            notes.push(format!("{}: rclone not run: it copies the current version of each key only, so it cannot move a key's history", sc.name));
        }
        let conf =
            std::env::temp_dir().join(format!("backbeat-bench-rclone-{}.conf", std::process::id()));
        let remote = |n: &str| {
            format!("[{n}]\ntype = s3\nprovider = Other\nenv_auth = false\naccess_key_id = bench\nsecret_access_key = bench-secret\nendpoint = {url}\nregion = us-east-1\nforce_path_style = true\n\n")
        };
        std::fs::write(&conf, remote("srcremote") + &remote("dstremote"))?;
        let mut tried = Vec::new();
        for (n, t) in sc.rclone_transfers.iter().enumerate() {
            let mut cmd = Command::new("rclone");
            // rclone 1.60's S3 backend cannot combine AWS_CA_BUNDLE with its own transport.
            cmd.env_remove("AWS_CA_BUNDLE")
                .arg("--config")
                .arg(&conf)
                .args([
                    "copy",
                    "srcremote:bench-src",
                    &format!("dstremote:bench-dst-rclone-{n}"),
                    "--no-check-dest",
                    "--s3-no-check-bucket",
                ])
                .args([
                    "--transfers",
                    &t.to_string(),
                    "--checkers",
                    &t.max(&8).to_string(),
                ])
                .args([
                    "--s3-upload-cutoff",
                    "128Mi",
                    "--s3-chunk-size",
                    "16Mi",
                    "-q",
                ]);
            let r = measure("rclone", &format!("--transfers {t}"), sc, &server, &mut cmd);
            match r {
                Ok((run, _)) => tried.push(run),
                Err(e) => {
                    let _ = std::fs::remove_file(&conf);
                    return Err(e);
                }
            }
        }
        let _ = std::fs::remove_file(&conf);
        runs.extend(best(tried));
    }
    // The loopback limit, its best worker count.
    if !args.skip_limit {
        let me = std::env::current_exe()?;
        let mut tried = Vec::new();
        for (n, w) in sc.relay_workers.iter().enumerate() {
            let mut cmd = Command::new(&me);
            cmd.args([
                "relay",
                "--addr",
                &format!("127.0.0.1:{port}"),
                "--scenario",
                &sc.name,
                "--scale",
                &args.scale.to_string(),
                "--workers",
                &w.to_string(),
                "--dest-bucket",
                &format!("bench-dst-limit-{n}"),
            ]);
            let (mut run, out) =
                measure("limit", &format!("{w} connections"), sc, &server, &mut cmd)?;
            let rep: relay::RelayReport =
                serde_json::from_str(&out).context("reading the relay's report")?;
            run.latency_cdf_ms = rep.latency_cdf_ms;
            run.latency_ms = percentiles(&run.latency_cdf_ms);
            tried.push(run);
        }
        runs.extend(best(tried));
    }
    Ok(())
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} cores, {cpu}, Linux {}", kernel.trim())
}

fn ratios(runs: &[Run]) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for b in runs.iter().filter(|r| r.tool == "backbeat") {
        let other = |tool: &str| {
            runs.iter()
                .find(|r| r.tool == tool && r.scenario == b.scenario)
        };
        let mut v = serde_json::json!({ "scenario": b.scenario });
        if let Some(c) = other("rclone") {
            v["throughput_backbeat_over_rclone"] = serde_json::json!(b.gb_per_s / c.gb_per_s);
            v["objects_per_s_backbeat_over_rclone"] =
                serde_json::json!(b.objects_per_s / c.objects_per_s);
            v["cpu_per_gb_backbeat_over_rclone"] =
                serde_json::json!(b.cpu_s_per_gb / c.cpu_s_per_gb);
        }
        if let Some(l) = other("limit") {
            v["throughput_backbeat_over_limit"] = serde_json::json!(b.gb_per_s / l.gb_per_s);
            v["cpu_per_gb_backbeat_over_limit"] =
                serde_json::json!(b.cpu_s_per_gb / l.cpu_s_per_gb);
        }
        // Through Kafka against `sync` of objects of the same size, in the same run.
        let sync = runs.iter().find(|r| {
            r.tool == "backbeat"
                && r.scenario.starts_with("sweep-")
                && r.object_size == b.object_size
        });
        if let (Some(s), true) = (sync, b.scenario.contains("-kafka-")) {
            v["cpu_per_1000_objects_engine_over_sync"] =
                serde_json::json!(b.cpu_s_per_1000_objects / s.cpu_s_per_1000_objects);
        }
        out.push(v);
    }
    out
}

fn print_table(runs: &[Run], ratios: &[serde_json::Value]) {
    println!(
        "{:<14} {:<9} {:<22} {:>7} {:>9} {:>8} {:>8} {:>9} {:>7} {:>8} {:>8}",
        "scenario",
        "tool",
        "setting",
        "GB/s",
        "objects/s",
        "CPU s",
        "CPU s/GB",
        "CPU s/1k",
        "RSS MiB",
        "p50 ms",
        "p99 ms"
    );
    for r in runs {
        let (p50, p99) = r
            .latency_ms
            .map(|l| (format!("{:.1}", l[0]), format!("{:.1}", l[1])))
            .unwrap_or(("-".into(), "-".into()));
        println!(
            "{:<14} {:<9} {:<22} {:>7.3} {:>9.0} {:>8.2} {:>8.2} {:>9.3} {:>7.0} {:>8} {:>8}",
            r.scenario,
            r.tool,
            r.setting,
            r.gb_per_s,
            r.objects_per_s,
            r.cpu_seconds,
            r.cpu_s_per_gb,
            r.cpu_s_per_1000_objects,
            r.max_rss_mib,
            p50,
            p99
        );
    }
    println!();
    for v in ratios
        .iter()
        .filter(|v| v.as_object().is_some_and(|o| o.len() > 1))
    {
        let f = |k: &str| {
            v[k].as_f64()
                .map(|x| format!("x{x:.2}"))
                .unwrap_or_else(|| "-".into())
        };
        if v.get("cpu_per_1000_objects_engine_over_sync").is_some() {
            println!(
                "{:<14} through Kafka/sync: CPU per 1000 objects {}",
                v["scenario"].as_str().unwrap_or(""),
                f("cpu_per_1000_objects_engine_over_sync")
            );
            continue;
        }
        println!(
            "{:<14} backbeat/rclone: throughput {} objects/s {} CPU/GB {}   backbeat/limit: throughput {} CPU/GB {}",
            v["scenario"].as_str().unwrap_or(""),
            f("throughput_backbeat_over_rclone"),
            f("objects_per_s_backbeat_over_rclone"),
            f("cpu_per_gb_backbeat_over_rclone"),
            f("throughput_backbeat_over_limit"),
            f("cpu_per_gb_backbeat_over_limit"),
        );
    }
}

/// A run through Kafka as the table and the JSON show it.
fn kafka_run(scenario: String, setting: String, count: usize, size: u64, r: e2e::E2e) -> Run {
    let bytes = count as u64 * size;
    let gb = bytes as f64 / 1e9;
    Run {
        tool: "backbeat".into(),
        scenario,
        object_size: Some(size),
        setting,
        objects: count,
        bytes,
        seconds: r.seconds,
        gb_per_s: gb / r.seconds,
        objects_per_s: count as f64 / r.seconds,
        cpu_seconds: r.cpu_seconds,
        cpu_s_per_gb: r.cpu_seconds / gb,
        cpu_s_per_1000_objects: r.cpu_seconds / count as f64 * 1000.0,
        max_rss_mib: r.max_rss_mib,
        latency_ms: Some(r.latency_ms),
        latency_cdf_ms: r.latency_cdf_ms,
        per_minute: r.per_minute,
    }
}

/// The steady scenario's note: its rate, latency per minute and where the latency goes.
fn steady_note(r: &e2e::E2e, achieved: f64, size: u64) -> String {
    let mut minutes = String::new();
    for (i, m) in r.per_minute.iter().enumerate() {
        minutes.push_str(&format!(
            "; minute {}: {} objects, p50 {} p99 {} p99.9 {} max {} ms",
            i + 1,
            m[0],
            m[1],
            m[2],
            m[3],
            m[4]
        ));
    }
    let [event, topic, wait, copy] = r.stages_ms;
    format!(
        "steady, {achieved:.0} events/s of {} KiB objects{minutes}; stages p50/p99: event to entry (events topic, populate) {}/{}, entry to the data mover (replication topic, a free slot) {}/{}, behind its key {}/{}, copy {}/{} ms",
        size / 1024, event[0], event[1], topic[0], topic[1], wait[0], wait[1], copy[0], copy[1]
    )
}

/// The scenarios through Kafka (`e2e`, `steady`, `backlog`), on one broker; each on an
/// in-memory endpoint of its own.
fn through_kafka(
    args: &Args,
    backbeat: &std::path::Path,
    which: &[&str],
    runs: &mut Vec<Run>,
    notes: &mut Vec<String>,
) -> anyhow::Result<()> {
    let broker = e2e::broker(args.kafka.as_deref())?;
    let shards = args.shards.unwrap_or_else(cores);
    let k = ThroughKafka {
        args,
        setup: e2e::Setup {
            backbeat,
            brokers: &broker.addr,
            fetch_wait_ms: args.fetch_wait_ms,
            shards,
            concurrency: args.concurrency,
        },
        setting: format!("run, --shards {shards} --concurrency {}", args.concurrency),
    };
    if which.contains(&"e2e") {
        let (count, size) = (scaled(args.e2e_count, args.scale), args.e2e_size);
        eprintln!(
            "scenario e2e: a burst of {count} events for objects of {} KiB, through Kafka ({})",
            size / 1024,
            broker.addr
        );
        runs.push(k.burst(count, size)?.0);
    }
    if which.contains(&"steady") {
        k.steady(runs, notes)?;
    }
    if which.contains(&"backlog") {
        let count = scaled(args.backlog_count, args.scale);
        eprintln!("scenario backlog: {count} events waiting in Kafka, then an engine started");
        let size = args.steady_size;
        let (server, url) = k.serve(count, size);
        let r = e2e::backlog(&k.setup, &k.at(&server, &url, size), count)?;
        let name = format!("backlog-kafka-{}KiB", size / 1024);
        runs.push(kafka_run(name, k.setting.clone(), count, size, r));
    }
    Ok(())
}

/// What the scenarios through Kafka share: the broker and the engine's settings.
struct ThroughKafka<'a> {
    args: &'a Args,
    setup: e2e::Setup<'a>,
    setting: String,
}

impl ThroughKafka<'_> {
    /// An in-memory source of `count` objects of `size`, served; with its URL.
    fn serve(&self, count: usize, size: u64) -> (std::sync::Arc<MemS3>, String) {
        let server = MemS3::new("bench-src", Catalog::uniform(count, size));
        let url = format!(
            "http://127.0.0.1:{}",
            server.serve(self.args.server_threads)
        );
        (server, url)
    }

    fn at<'s>(&self, server: &'s MemS3, url: &'s str, size: u64) -> e2e::At<'s> {
        e2e::At { server, url, size }
    }

    /// A burst of `count` events at once: its run, and the rate it reached.
    fn burst(&self, count: usize, size: u64) -> anyhow::Result<(Run, f64)> {
        let (server, url) = self.serve(count, size);
        let r = e2e::burst(&self.setup, &self.at(&server, &url, size), count)?;
        let rate = count as f64 / r.seconds;
        let name = format!("e2e-kafka-{}KiB", size / 1024);
        Ok((kafka_run(name, self.setting.clone(), count, size, r), rate))
    }

    /// Events at an even rate (`--steady-rate`, else half a burst's), with its latency
    /// note; the burst measured first is a run of its own.
    fn steady(&self, runs: &mut Vec<Run>, notes: &mut Vec<String>) -> anyhow::Result<()> {
        let (args, size) = (self.args, self.args.steady_size);
        let rate = match args.steady_rate {
            Some(r) => r,
            None => {
                let count = scaled(4000, args.scale.max(0.5));
                eprintln!("scenario steady: first a burst of {count} events for objects of {} KiB, for the saturating rate", size / 1024);
                let (run, saturating) = self.burst(count, size)?;
                runs.push(run);
                saturating / 2.0
            }
        };
        let secs = ((args.steady_seconds as f64 * args.scale) as u64).max(60);
        let count = (rate * secs as f64) as usize;
        let (server, url) = self.serve(count, size);
        eprintln!(
            "scenario steady: {count} events at {rate:.0}/s for {secs} s, objects of {} KiB",
            size / 1024
        );
        let at = self.at(&server, &url, size);
        let (r, achieved) = e2e::steady(&self.setup, &at, count, rate)?;
        notes.push(steady_note(&r, achieved, size));
        let name = format!("steady-kafka-{}KiB", size / 1024);
        let set = format!("{}, {achieved:.0} events/s", self.setting);
        runs.push(kafka_run(name, set, count, size, r));
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Cmd::Relay {
        addr,
        scenario,
        scale,
        workers,
        dest_bucket,
    }) = &args.cmd
    {
        let sc = catalog_scenarios(*scale)
            .into_iter()
            .find(|s| &s.name == scenario)
            .with_context(|| format!("no scenario {scenario}"))?;
        let rep = relay::run(addr, "bench-src", dest_bucket, &sc.catalog, *workers)?;
        println!("{}", serde_json::to_string(&rep)?);
        return Ok(());
    }
    let backbeat = match &args.backbeat {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("backbeat"),
    };
    if !backbeat.exists() {
        bail!(
            "{} not found: build it with `cargo build --release` or pass --backbeat",
            backbeat.display()
        );
    }
    if !args.skip_rclone && Command::new("rclone").arg("version").output().is_err() {
        bail!("rclone not found: install it (apt-get install rclone) or pass --skip-rclone");
    }
    let wanted: Vec<&str> = args.scenario.split(',').map(str::trim).collect();
    let want = |name: &str| {
        wanted
            .iter()
            .any(|w| *w == "all" || *w == name || (*w == "sweep" && name.starts_with("sweep-")))
    };
    let known = catalog_scenarios(args.scale);
    for w in &wanted {
        let ok = *w == "all"
            || *w == "sweep"
            || *w == "e2e"
            || *w == "steady"
            || *w == "backlog"
            || *w == "lifecycle"
            || *w == "bandwidth"
            || *w == "ingestion"
            || known.iter().any(|s| s.name == *w);
        if !ok {
            bail!(
                "no scenario {w}: choose from all, sweep, {}, e2e, steady, backlog, lifecycle, bandwidth, ingestion",
                known
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let mut runs = Vec::new();
    let mut notes = Vec::new();
    for sc in known.iter().filter(|s| want(&s.name)) {
        run_scenario(&args, sc, &backbeat, &mut runs, &mut notes)?;
    }
    let kafka: Vec<&str> = ["e2e", "steady", "backlog"]
        .into_iter()
        .filter(|n| want(n))
        .collect();
    if !kafka.is_empty() {
        let has_broker = args.kafka.is_some()
            || Command::new(e2e::nisshi_bin())
                .arg("--version")
                .output()
                .is_ok();
        if !has_broker && args.scenario == "all" {
            eprintln!(
                "scenarios through Kafka skipped: no --kafka given and nisshi is not installed"
            );
            notes.push("e2e, steady and backlog skipped: no broker".into());
        } else {
            through_kafka(&args, &backbeat, &kafka, &mut runs, &mut notes)?;
        }
    }
    if want("lifecycle") {
        runs.extend(lifecycle::run(&backbeat, args.scale, args.server_threads)?);
    }
    if want("bandwidth") {
        let shards = args.shards.unwrap_or_else(cores);
        let (r, note) = bandwidth::run(&backbeat, args.scale, args.server_threads, shards)?;
        eprintln!("{note}");
        runs.extend(r);
        notes.push(note);
    }
    if want("ingestion") {
        let note = ingest::run(args.scale, args.server_threads)?;
        notes.push(note);
    }
    let ratios = ratios(&runs);
    print_table(&runs, &ratios);
    for n in &notes {
        println!("note: {n}");
    }
    if !args.plots.as_os_str().is_empty() {
        match plots::write(&runs, &args.plots) {
            Ok(paths) => {
                for p in paths {
                    eprintln!("chart written to {}", p.display());
                }
            }
            Err(e) => eprintln!("charts not written: {e}"),
        }
    }
    if let Some(dir) = args.json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let report = Report {
        machine: machine(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        runs,
        ratios,
        notes,
    };
    std::fs::write(&args.json, serde_json::to_string_pretty(&report)?)?;
    eprintln!("results written to {}", args.json.display());
    Ok(())
}
