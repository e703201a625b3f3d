//! `backbeat-bench`: measures `backbeat sync` against `rclone copy` on the same data and the
//! same endpoint, in the same run, and prints throughput, CPU cost and their ratios.
//!
//! The endpoint is an in-memory S3 server of this harness (`mem_s3.rs`), so the movers, not
//! the server, are measured. CPU time is each mover process's own (rusage of the child).

mod e2e;
mod mem_s3;

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Benchmark backbeat sync against rclone copy on an in-memory S3 endpoint")]
struct Args {
    /// Scenarios: large (64 MiB objects), small (4 KiB objects), e2e (events in Kafka to
    /// objects at the destination), or all
    #[arg(long, default_value = "all")]
    scenario: String,
    /// Kafka brokers for the e2e scenario (default: start nisshi, if installed)
    #[arg(long)]
    kafka: Option<String>,
    /// Objects in the e2e scenario
    #[arg(long, default_value_t = 2000)]
    e2e_count: usize,
    /// Object size in the e2e scenario
    #[arg(long, default_value_t = 256 * 1024)]
    e2e_size: u64,
    /// Number of 64 MiB objects in the large scenario
    #[arg(long, default_value_t = 24)]
    large_count: usize,
    /// Number of 4 KiB objects in the small scenario
    #[arg(long, default_value_t = 5000)]
    small_count: usize,
    /// Server threads of the in-memory endpoint
    #[arg(long, default_value_t = 1)]
    server_threads: usize,
    /// backbeat shards (default: one per core)
    #[arg(long)]
    shards: Option<usize>,
    /// Transfers in flight: backbeat --concurrency per shard, rclone --transfers
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Skip rclone (report backbeat alone)
    #[arg(long)]
    skip_rclone: bool,
    /// Write results as JSON to this file
    #[arg(long)]
    json: Option<PathBuf>,
    /// The backbeat binary (default: next to this one)
    #[arg(long)]
    backbeat: Option<PathBuf>,
}

#[derive(serde::Serialize, Clone)]
struct Run {
    tool: String,
    scenario: String,
    objects: usize,
    bytes: u64,
    seconds: f64,
    gb_per_s: f64,
    objects_per_s: f64,
    cpu_seconds: f64,
    cpu_s_per_gb: f64,
    cpu_s_per_1000_objects: f64,
    max_rss_mib: f64,
    /// Replication latency p50, p99, p99.9 (ms), from the source event to completion.
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_ms: Option<[f64; 3]>,
}

#[derive(serde::Serialize)]
struct Report {
    machine: String,
    runs: Vec<Run>,
    ratios: Vec<serde_json::Value>,
}

/// Runs `cmd` to completion and returns its own resource usage (wait4), so CPU time and
/// peak RSS are exactly the mover's.
fn run_measured(
    cmd: &mut Command,
) -> anyhow::Result<(std::process::ExitStatus, String, String, libc::rusage)> {
    let dir = std::env::temp_dir();
    let out_path = dir.join(format!("backbeat-bench-{}.out", std::process::id()));
    let err_path = dir.join(format!("backbeat-bench-{}.err", std::process::id()));
    let child = cmd
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(std::fs::File::create(&err_path)?)
        .spawn()?;
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
    Ok((std::process::ExitStatus::from_raw(status), out, err, ru))
}

fn measure(
    tool: &str,
    scenario: &str,
    objects: usize,
    bytes: u64,
    cmd: &mut Command,
) -> anyhow::Result<Run> {
    eprintln!(
        "  running {tool} ({scenario}: {objects} objects, {:.1} MiB) ...",
        bytes as f64 / 1048576.0
    );
    let t = Instant::now();
    let (status, out, err, ru) = run_measured(cmd).with_context(|| format!("starting {tool}"))?;
    let secs = t.elapsed().as_secs_f64();
    if !status.success() {
        bail!("{tool} failed ({status}): {out}{err}");
    }
    let tv = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    let cpu = tv(ru.ru_utime) + tv(ru.ru_stime);
    let gb = bytes as f64 / 1e9;
    Ok(Run {
        tool: tool.into(),
        scenario: scenario.into(),
        objects,
        bytes,
        seconds: secs,
        gb_per_s: gb / secs,
        objects_per_s: objects as f64 / secs,
        cpu_seconds: cpu,
        cpu_s_per_gb: cpu / gb,
        cpu_s_per_1000_objects: cpu / objects as f64 * 1000.0,
        max_rss_mib: ru.ru_maxrss as f64 / 1024.0,
        latency_ms: None,
    })
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

fn scenario(
    args: &Args,
    name: &str,
    count: usize,
    size: u64,
    backbeat: &PathBuf,
    runs: &mut Vec<Run>,
) -> anyhow::Result<()> {
    let server = mem_s3::MemS3::new("bench-src", count, size);
    let port = server.serve(args.server_threads);
    let url = format!("http://127.0.0.1:{port}");
    eprintln!("scenario {name}: in-memory S3 endpoint at {url}");
    let bytes = count as u64 * size;
    let shards = args.shards.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
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
    let before = server.objects_completed.load(Ordering::SeqCst);
    let run = measure("backbeat", name, count, bytes, &mut cmd)?;
    let done = server.objects_completed.load(Ordering::SeqCst) - before;
    if done != count as u64 || server.checksum_failures.load(Ordering::SeqCst) != 0 {
        bail!(
            "backbeat: {done} of {count} objects arrived, {} checksum failures",
            server.checksum_failures.load(Ordering::SeqCst)
        );
    }
    runs.push(run);
    if !args.skip_rclone {
        let conf =
            std::env::temp_dir().join(format!("backbeat-bench-rclone-{}.conf", std::process::id()));
        let remote = |n: &str| {
            format!("[{n}]\ntype = s3\nprovider = Other\nenv_auth = false\naccess_key_id = bench\nsecret_access_key = bench-secret\nendpoint = {url}\nregion = us-east-1\nforce_path_style = true\n\n")
        };
        std::fs::write(&conf, remote("srcremote") + &remote("dstremote"))?;
        let mut cmd = Command::new("rclone");
        // rclone 1.60's S3 backend cannot combine AWS_CA_BUNDLE with its own transport.
        cmd.env_remove("AWS_CA_BUNDLE")
            .arg("--config")
            .arg(&conf)
            .args([
                "copy",
                "srcremote:bench-src",
                "dstremote:bench-dst-rclone",
                "--no-check-dest",
                "--s3-no-check-bucket",
            ])
            .args([
                "--transfers",
                &args.concurrency.to_string(),
                "--checkers",
                &args.concurrency.to_string(),
            ])
            .args([
                "--s3-upload-cutoff",
                "128Mi",
                "--s3-chunk-size",
                "16Mi",
                "-q",
            ]);
        let before = server.objects_completed.load(Ordering::SeqCst);
        let run = measure("rclone", name, count, bytes, &mut cmd);
        let _ = std::fs::remove_file(&conf);
        let run = run?;
        let done = server.objects_completed.load(Ordering::SeqCst) - before;
        if done != count as u64 {
            bail!("rclone: {done} of {count} objects arrived");
        }
        runs.push(run);
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
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
    let mut runs = Vec::new();
    let all = args.scenario == "all";
    if all || args.scenario == "large" {
        scenario(
            &args,
            "large-64MiB",
            args.large_count,
            64 << 20,
            &backbeat,
            &mut runs,
        )?;
    }
    if all || args.scenario == "small" {
        scenario(
            &args,
            "small-4KiB",
            args.small_count,
            4 << 10,
            &backbeat,
            &mut runs,
        )?;
    }
    if all || args.scenario == "e2e" {
        let has_broker =
            args.kafka.is_some() || Command::new("nisshi").arg("--version").output().is_ok();
        if !has_broker && all {
            eprintln!("scenario e2e skipped: no --kafka given and nisshi is not installed");
        } else {
            let broker = e2e::broker(args.kafka.as_deref())?;
            let server = mem_s3::MemS3::new("bench-src", args.e2e_count, args.e2e_size);
            let port = server.serve(args.server_threads);
            let url = format!("http://127.0.0.1:{port}");
            eprintln!("scenario e2e: {} objects of {} KiB, events in Kafka ({}) to the in-memory endpoint {url}", args.e2e_count, args.e2e_size / 1024, broker.addr);
            let shards = args.shards.unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            });
            let r = e2e::run(
                &backbeat,
                &broker.addr,
                &server,
                &url,
                args.e2e_count,
                args.e2e_size,
                shards,
                args.concurrency,
            )?;
            let bytes = args.e2e_count as u64 * args.e2e_size;
            let gb = bytes as f64 / 1e9;
            println!("e2e replication latency from event to completion: p50 {} ms, p99 {} ms, p99.9 {} ms", r.latency_ms[0], r.latency_ms[1], r.latency_ms[2]);
            runs.push(Run {
                tool: "backbeat".into(),
                scenario: format!("e2e-kafka-{}KiB", args.e2e_size / 1024),
                objects: args.e2e_count,
                bytes,
                seconds: r.seconds,
                gb_per_s: gb / r.seconds,
                objects_per_s: args.e2e_count as f64 / r.seconds,
                cpu_seconds: r.cpu_seconds,
                cpu_s_per_gb: r.cpu_seconds / gb,
                cpu_s_per_1000_objects: r.cpu_seconds / args.e2e_count as f64 * 1000.0,
                max_rss_mib: r.max_rss_mib,
                latency_ms: Some(r.latency_ms),
            });
        }
    }
    println!(
        "{:<14} {:<9} {:>8} {:>10} {:>10} {:>10} {:>12} {:>9}",
        "scenario", "tool", "GB/s", "objects/s", "CPU s", "CPU s/GB", "CPU s/1k obj", "RSS MiB"
    );
    for r in &runs {
        println!(
            "{:<14} {:<9} {:>8.3} {:>10.0} {:>10.2} {:>10.2} {:>12.3} {:>9.0}",
            r.scenario,
            r.tool,
            r.gb_per_s,
            r.objects_per_s,
            r.cpu_seconds,
            r.cpu_s_per_gb,
            r.cpu_s_per_1000_objects,
            r.max_rss_mib
        );
    }
    let mut ratios = Vec::new();
    for b in runs.iter().filter(|r| r.tool == "backbeat") {
        if let Some(c) = runs
            .iter()
            .find(|r| r.tool == "rclone" && r.scenario == b.scenario)
        {
            println!(
                "{}: backbeat/rclone throughput x{:.2}, objects/s x{:.2}, CPU per GB x{:.2} (lower is better)",
                b.scenario,
                b.gb_per_s / c.gb_per_s,
                b.objects_per_s / c.objects_per_s,
                b.cpu_s_per_gb / c.cpu_s_per_gb
            );
            ratios.push(serde_json::json!({
                "scenario": b.scenario,
                "throughput_backbeat_over_rclone": b.gb_per_s / c.gb_per_s,
                "objects_per_s_backbeat_over_rclone": b.objects_per_s / c.objects_per_s,
                "cpu_per_gb_backbeat_over_rclone": b.cpu_s_per_gb / c.cpu_s_per_gb,
            }));
        }
    }
    if let Some(path) = &args.json {
        let report = Report {
            machine: machine(),
            runs,
            ratios,
        };
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
        eprintln!("results written to {}", path.display());
    }
    Ok(())
}
