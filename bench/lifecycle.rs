//! The lifecycle scenario: one pass of `backbeat lifecycle run` over a bucket of the
//! in-memory endpoint (keys of 5 versions, every noncurrent version past its
//! NoncurrentVersionExpiration), first as a dry run (listing and evaluation: versions
//! evaluated per second) and then for real (each deletion a HEAD and a DELETE: actions per
//! second). The endpoint does not remove what is deleted, so both passes see the same
//! bucket.

use std::path::Path;
use std::process::Command;

use anyhow::bail;

use super::mem_s3::{Catalog, MemS3};
use super::{run_measured, scaled, Run};

const RULES: &str = "<LifecycleConfiguration><Rule><ID>old</ID><Status>Enabled</Status><Filter><Prefix></Prefix></Filter><NoncurrentVersionExpiration><NoncurrentDays>1</NoncurrentDays></NoncurrentVersionExpiration></Rule></LifecycleConfiguration>";

/// Runs both passes over `keys x 5` versions (20 000 keys at scale 1: 100 000 versions).
pub fn run(backbeat: &Path, scale: f64, server_threads: usize) -> anyhow::Result<Vec<Run>> {
    let keys = scaled(20_000, scale);
    let versions = 5;
    let server = MemS3::new(
        "bench-src",
        Catalog {
            sizes: vec![1024; keys],
            versions,
        },
    );
    let port = server.serve(server_threads);
    let dir = std::env::temp_dir().join(format!("backbeat-bench-lifecycle-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("rules.xml"), RULES)?;
    let config = dir.join("backbeat.toml");
    std::fs::write(
        &config,
        format!("[source]\nendpoint = \"http://127.0.0.1:{port}\"\nbuckets = [\"bench-src\"]\n\n[lifecycle]\nrules_files.bench-src = \"rules.xml\"\n"),
    )?;
    let total = keys * versions;
    let deletes = keys * (versions - 1);
    eprintln!("scenario lifecycle: {keys} keys x {versions} versions, {deletes} noncurrent versions due, in-memory S3 endpoint");
    let mut out = Vec::new();
    for dry in [true, false] {
        let mut cmd = Command::new(backbeat);
        cmd.args(["lifecycle", "run", "--config"])
            .arg(&config)
            .args(["--bucket", "bench-src"])
            .env("AWS_ACCESS_KEY_ID", "bench")
            .env("AWS_SECRET_ACCESS_KEY", "bench-secret");
        if dry {
            cmd.arg("--dry-run");
        }
        let t = std::time::Instant::now();
        let (status, stdout, err, ru, rss) = run_measured(&mut cmd)?;
        let secs = t.elapsed().as_secs_f64();
        if !status.success() {
            bail!("lifecycle run failed ({status}): {err}");
        }
        let verb = if dry { "would do" } else { "done" };
        let want = format!("delete_version       {deletes} {verb}, 0 skipped, 0 failed");
        if !stdout.contains(&want) {
            bail!(
                "lifecycle run did not report {want:?}: {}",
                stdout.lines().rev().take(4).collect::<Vec<_>>().join(" | ")
            );
        }
        let tv = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
        let cpu = tv(ru.ru_utime) + tv(ru.ru_stime);
        let (name, n) = if dry {
            ("lifecycle-evaluate", total)
        } else {
            ("lifecycle-delete", deletes)
        };
        eprintln!(
            "  {name}: {n} in {secs:.2} s ({:.0}/s), CPU {cpu:.2} s",
            n as f64 / secs
        );
        out.push(Run {
            tool: "backbeat".into(),
            scenario: name.into(),
            object_size: None,
            setting: if dry {
                "lifecycle run --dry-run (versions evaluated)".into()
            } else {
                "lifecycle run (noncurrent versions deleted)".into()
            },
            objects: n,
            bytes: 0,
            seconds: secs,
            gb_per_s: 0.0,
            objects_per_s: n as f64 / secs,
            cpu_seconds: cpu,
            cpu_s_per_gb: 0.0,
            cpu_s_per_1000_objects: cpu / n as f64 * 1000.0,
            max_rss_mib: rss,
            latency_ms: None,
            latency_cdf_ms: Vec::new(),
            per_minute: Vec::new(),
        });
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(out)
}
