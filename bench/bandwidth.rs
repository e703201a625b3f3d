//! The bandwidth scenario: `backbeat sync` of 16 MiB objects with `--bandwidth 200MiB/s`,
//! sized to take 60 s at that rate (at scale 1), against the in-memory endpoint; then the
//! same objects with no limit (into another bucket), to show what the limit holds back. The
//! rate achieved is the bytes moved over the whole run (start-up and listing included).

use std::path::Path;
use std::process::Command;

use super::mem_s3::{Catalog, MemS3};
use super::{measure, Run, Scenario, MIB};

/// The limit the scenario sets, MiB per second.
const LIMIT_MIB: u64 = 200;
const OBJECT: u64 = 16 * MIB;

/// Runs the limited and the unlimited copy; returns both runs and a note with the rate
/// achieved against the limit.
pub fn run(
    backbeat: &Path,
    scale: f64,
    server_threads: usize,
    shards: usize,
) -> anyhow::Result<(Vec<Run>, String)> {
    let seconds = (60.0 * scale).max(10.0);
    let count = ((LIMIT_MIB * MIB) as f64 * seconds / OBJECT as f64).round() as usize;
    let sc = Scenario {
        name: format!("bandwidth-{LIMIT_MIB}MiB/s"),
        catalog: Catalog::uniform(count, OBJECT),
        object_size: Some(OBJECT),
        rclone_transfers: Vec::new(),
        relay_workers: Vec::new(),
    };
    let server = MemS3::new("bench-src", sc.catalog.clone());
    let url = format!("http://127.0.0.1:{}", server.serve(server_threads));
    eprintln!(
        "scenario {}: {count} objects of 16 MiB ({seconds:.0} s at the limit), in-memory S3 endpoint at {url}",
        sc.name
    );
    let mut runs = Vec::new();
    for limit in [Some(format!("{LIMIT_MIB}MiB/s")), None] {
        // Each pass into its own bucket: into the first pass's copies, every object would
        // be refused, checked and sent again (the endpoint keeps no replica metadata).
        let dst = match limit {
            Some(_) => "s3://bench-dst",
            None => "s3://bench-dst-unlimited",
        };
        let mut cmd = Command::new(backbeat);
        cmd.args(["sync", "s3://bench-src", dst, "--json"])
            .args(["--source-endpoint", &url, "--destination-endpoint", &url])
            .args(["--shards", &shards.to_string()])
            .env("AWS_ACCESS_KEY_ID", "bench")
            .env("AWS_SECRET_ACCESS_KEY", "bench-secret");
        let setting = match &limit {
            Some(l) => {
                cmd.args(["--bandwidth", l]);
                format!("--shards {shards} --bandwidth {l}")
            }
            None => format!("--shards {shards}, no limit"),
        };
        let (run, _) = measure("backbeat", &setting, &sc, &server, &mut cmd)?;
        runs.push(run);
    }
    let limited = &runs[0];
    let achieved = limited.bytes as f64 / limited.seconds / MIB as f64;
    let note = format!(
        "bandwidth: --bandwidth {LIMIT_MIB}MiB/s moved {:.0} MiB in {:.1} s: {achieved:.1} MiB/s, {:+.2}% of the limit (unlimited, the same objects: {:.0} MiB/s)",
        limited.bytes as f64 / MIB as f64,
        limited.seconds,
        (achieved / LIMIT_MIB as f64 - 1.0) * 100.0,
        runs[1].bytes as f64 / runs[1].seconds / MIB as f64,
    );
    Ok((runs, note))
}
