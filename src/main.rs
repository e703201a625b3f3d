//! The `backbeat` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use backbeat::config::credentials::{self, AwsSetting};
use backbeat::config::file::layered;
use backbeat::config::parse_size;
use backbeat::replication::{Options, RetryPolicy};
use backbeat::s3::{ChecksumTransport, Endpoint, EndpointConfig};
use backbeat::shard::{Placement, Shutdown};
use backbeat::sync::{self, S3Url, SyncError, SyncJob};

#[derive(Parser)]
#[command(
    name = "backbeat",
    version,
    about = "Asynchronous S3 replication: a thread-per-core io_uring data mover"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replicate every version (and delete marker) of a bucket to another bucket, once.
    Sync(Box<SyncArgs>),
    /// Configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Turn source changes into replication entries: consume S3 event notifications, or
    /// (with --scan) enqueue a bucket's existing versions.
    Populate(PopulateArgs),
    /// Replicate the entries of one destination site: this process's shards join the site's
    /// consumer group.
    Replicate(ReplicateArgs),
    /// Every role in one process: populate and replicate to every configured site.
    Run(RunArgs),
    /// Each site's state (enabled or paused) and metrics, from a running engine's API.
    Status(ApiArgs),
    /// Pause a site (or all): its partitions stop being consumed on every node.
    Pause(SiteArgs),
    /// Resume a site (or all), now or in some hours.
    Resume(ResumeArgs),
    /// Entries that failed after their retries: list them, or retry them.
    #[command(subcommand)]
    Failed(FailedCommand),
    /// Inspect this machine (cores, NUMA, NICs, memlock, io_uring, socket buffers), recommend
    /// a tuning profile and the sysctl and ulimit changes it wants.
    Tune(TuneArgs),
    /// Object lifecycle: expire, clean up and abort what a bucket's lifecycle rules say.
    #[command(subcommand)]
    Lifecycle(LifecycleCommand),
    /// Incremental ingestion (buckets listed pass after pass): status, pause, resume
    #[command(subcommand)]
    Ingestion(IngestionCommand),
    /// The source buckets known (site-level replication), their site buckets and figures
    Buckets(ApiArgs),
}

#[derive(Subcommand)]
enum IngestionCommand {
    /// Each ingested bucket: enabled or paused, its pass's progress and ETA
    Status(IngestionArgs),
    /// Pause the ingestion of a bucket (or all): its pass stops after the page under way
    Pause(IngestionArgs),
    /// Resume the ingestion of a bucket (or all): its pass goes on from its last page
    Resume(IngestionArgs),
}

#[derive(clap::Args)]
struct IngestionArgs {
    /// A bucket, or `all`
    #[arg(default_value = "all")]
    bucket: String,
    #[command(flatten)]
    api: ApiArgs,
}

/// `backbeat ingestion status|pause|resume`, through the API.
fn run_ingestion(c: IngestionCommand) -> anyhow::Result<ExitCode> {
    match c {
        IngestionCommand::Status(a) => {
            let doc = api_client(&a.api)?.ingestion_status(&a.bucket)?;
            if a.api.json {
                println!("{}", serde_json::to_string(&doc)?);
            } else {
                print!("{}", backbeat::api::cli::ingestion_table(&doc));
            }
        }
        IngestionCommand::Pause(a) => {
            api_client(&a.api)?.ingestion_pause(&a.bucket, true)?;
            println!("ingestion of {}: paused", a.bucket);
        }
        IngestionCommand::Resume(a) => {
            api_client(&a.api)?.ingestion_pause(&a.bucket, false)?;
            println!("ingestion of {}: resumed", a.bucket);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `backbeat buckets`, through the API.
fn run_buckets(a: ApiArgs) -> anyhow::Result<ExitCode> {
    let doc = api_client(&a)?.buckets()?;
    if a.json {
        println!("{}", serde_json::to_string(&doc)?);
    } else {
        print!("{}", backbeat::api::cli::buckets_table(&doc));
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand)]
enum LifecycleCommand {
    /// One pass over a bucket now: prints each action as it is done (or, with --dry-run,
    /// what would be done) and a summary
    Run(LifecycleRunArgs),
    /// Whether lifecycle is running or paused (and until when), from a running engine's API
    Status(ApiArgs),
    /// Pause lifecycle on every node (no pass starts, no action is carried out), or with
    /// SITE only its transitions to that site
    Pause(LifecycleSiteArgs),
    /// Resume lifecycle (or its transitions to SITE), now or in some hours
    Resume(LifecycleResumeArgs),
}

#[derive(clap::Args)]
struct LifecycleSiteArgs {
    /// A site (its transitions), or `all` (lifecycle as a whole)
    #[arg(default_value = "all")]
    site: String,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(clap::Args)]
struct LifecycleResumeArgs {
    /// A site (its transitions), or `all` (lifecycle as a whole)
    #[arg(default_value = "all")]
    site: String,
    /// Resume in this many hours instead of now
    #[arg(long = "in")]
    in_hours: Option<f64>,
    #[command(flatten)]
    api: ApiArgs,
}

/// How `lifecycle pause|resume` names what it changed.
fn lifecycle_target(site: &str) -> String {
    if site == "all" {
        "lifecycle".into()
    } else {
        format!("lifecycle transitions to {site}")
    }
}

/// `backbeat lifecycle status|pause|resume`, through the API.
fn lifecycle_api(c: LifecycleCommand) -> anyhow::Result<ExitCode> {
    match c {
        LifecycleCommand::Run(_) => unreachable!("run is not an API command"),
        LifecycleCommand::Status(a) => {
            let (status, at) = api_client(&a)?.lifecycle_status()?;
            if a.json {
                println!(
                    "{}",
                    serde_json::json!({"status": status, "scheduled_resume": at})
                );
            }
            for (name, state) in status.iter().filter(|_| !a.json) {
                let state = serde_json::to_value(state)?;
                let when = at.get(name).filter(|t| *t != "none");
                let when = when
                    .map(|t| format!(", resumes at {t}"))
                    .unwrap_or_default();
                println!("{name}: {}{when}", state.as_str().unwrap_or("?"));
            }
        }
        LifecycleCommand::Pause(a) => {
            api_client(&a.api)?.lifecycle_pause(&a.site, true)?;
            println!("{}: paused", lifecycle_target(&a.site));
        }
        LifecycleCommand::Resume(a) => match a.in_hours {
            None => {
                api_client(&a.api)?.lifecycle_pause(&a.site, false)?;
                println!("{}: resumed", lifecycle_target(&a.site));
            }
            Some(h) => {
                let s = api_client(&a.api)?.lifecycle_schedule(&a.site, h)?;
                println!(
                    "{}: resumes at {}",
                    lifecycle_target(&a.site),
                    s.scheduled_resume
                );
            }
        },
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
struct LifecycleRunArgs {
    /// The TOML configuration file
    #[arg(long)]
    config: PathBuf,
    /// A bucket of source.buckets
    #[arg(long)]
    bucket: String,
    /// Change nothing: list what the pass would do
    #[arg(long)]
    dry_run: bool,
}

/// `backbeat lifecycle run`: one line per action on stdout, progress on stderr, a summary.
fn run_lifecycle(c: LifecycleCommand) -> anyhow::Result<ExitCode> {
    use backbeat::lifecycle::pass::{kind_name, Outcome};
    let LifecycleCommand::Run(a) = c else {
        return lifecycle_api(c);
    };
    let cfg = load_config(&a.config)?;
    let started = std::time::Instant::now();
    let mut failed = 0u64;
    let on_action = |act: &backbeat::lifecycle::eval::Action, o: &Outcome| {
        let what = match o {
            Outcome::Done => "done".to_string(),
            Outcome::WouldDo => "would do".to_string(),
            Outcome::Skipped(why) => format!("skipped: {why}"),
            Outcome::Failed(why) => {
                failed += 1;
                format!("FAILED: {why}")
            }
        };
        let version = match &act.kind {
            backbeat::lifecycle::eval::Kind::AbortUpload { upload_id } => {
                format!("upload {upload_id}")
            }
            _ => format!("version {}", act.version_id),
        };
        println!(
            "{:<20} {} ({version}, rule {}): {what}",
            kind_name(&act.kind),
            act.key,
            act.rule
        );
    };
    let mut last = std::time::Instant::now();
    let on_key = |r: &backbeat::lifecycle::pass::PassReport| {
        if last.elapsed() >= Duration::from_secs(2) {
            last = std::time::Instant::now();
            eprintln!(
                "lifecycle {}: {} keys, {} versions listed",
                a.bucket, r.keys, r.versions
            );
        }
    };
    let r = backbeat::engine::lifecycle::run_once(&cfg, &a.bucket, a.dry_run, on_action, on_key)?;
    let verb = if a.dry_run { "would do" } else { "done" };
    println!(
        "pass over {}{}: {} keys, {} versions, {} uploads in {:.1} s",
        a.bucket,
        if a.dry_run { " (dry run)" } else { "" },
        r.keys,
        r.versions,
        r.uploads,
        started.elapsed().as_secs_f64()
    );
    for (kind, (d, s, f)) in &r.by_kind {
        println!("  {kind:<20} {d} {verb}, {s} skipped, {f} failed");
    }
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[derive(clap::Args)]
struct TuneArgs {
    /// Machine-readable output
    #[arg(long)]
    json: bool,
    /// Write the recommended profile to FILE (name it in the config: [replication] profile = "FILE")
    #[arg(long, value_name = "FILE")]
    apply_profile: Option<std::path::PathBuf>,
    /// Overwrite FILE if it exists
    #[arg(long)]
    force: bool,
}

fn run_tune(a: TuneArgs) -> anyhow::Result<ExitCode> {
    use backbeat::config::tune::{recommend, Machine};
    let m = Machine::inspect();
    let r = recommend(&m);
    if a.json {
        let io_uring = m.io_uring.as_ref().map(|_| "available".to_string());
        let doc = serde_json::json!({
            "machine": {
                "cores": m.cores,
                "numa_nodes": m.numa_nodes,
                "nics": m.nics,
                "memlock_bytes": m.memlock,
                "nofile": m.nofile,
                "io_uring": io_uring.unwrap_or_else(|e| e.clone()),
                "rmem_max": m.rmem_max,
                "wmem_max": m.wmem_max,
                "tcp_rmem_max": m.tcp_rmem_max,
                "tcp_wmem_max": m.tcp_wmem_max,
            },
            "recommendation": r,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print_machine(&m);
        print_recommendation(&r);
    }
    if let Some(path) = &a.apply_profile {
        if path.exists() && !a.force {
            anyhow::bail!("{} exists: pass --force to overwrite it", path.display());
        }
        std::fs::write(path, &r.toml).with_context(|| format!("writing {}", path.display()))?;
        eprintln!(
            "profile written to {}: name it in your configuration ([replication] profile = {:?}) and check it with `backbeat config check`",
            path.display(),
            path.display().to_string()
        );
    }
    Ok(if r.warnings.iter().any(|w| w.starts_with("io_uring")) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `backbeat tune`'s reading of the machine, as text.
fn print_machine(m: &backbeat::config::tune::Machine) {
    let opt = |v: Option<u64>| {
        v.map(|n| n.to_string())
            .unwrap_or_else(|| "unlimited/unknown".into())
    };
    println!("machine");
    println!(
        "  cores            {} ({} NUMA node(s))",
        m.cores, m.numa_nodes
    );
    for n in &m.nics {
        let speed = n.speed_mbps.map(|s| format!("{s} Mbit/s"));
        let speed = speed.unwrap_or_else(|| "speed not reported".into());
        let state = if n.up { "up" } else { "down" };
        println!("  nic {:<12} {speed} {state}", n.name);
    }
    println!("  memlock          {}", opt(m.memlock));
    println!("  open files       {}", opt(m.nofile));
    let io_uring = m.io_uring.as_ref().map(|_| "available".to_string());
    println!(
        "  io_uring         {}",
        io_uring.unwrap_or_else(|e| format!("NOT available: {e}"))
    );
    println!(
        "  net.core.rmem_max/wmem_max   {} / {}",
        opt(m.rmem_max),
        opt(m.wmem_max)
    );
    println!(
        "  tcp_rmem/tcp_wmem max        {} / {}",
        opt(m.tcp_rmem_max),
        opt(m.tcp_wmem_max)
    );
    println!();
}

/// `backbeat tune`'s recommendation, as text.
fn print_recommendation(r: &backbeat::config::tune::Recommendation) {
    println!("recommended profile: {} ({})", r.profile, r.why);
    println!();
    print!("{}", r.toml);
    println!();
    if r.sysctl.is_empty() && r.ulimit.is_empty() {
        println!("system limits: nothing to change");
    } else {
        println!("system changes it wants (as root; persist them in /etc/sysctl.d and the service unit):");
        for l in r.sysctl.iter().chain(&r.ulimit) {
            println!("  {l}");
        }
    }
    for w in &r.warnings {
        println!("warning: {w}");
    }
}

#[derive(Subcommand)]
enum FailedCommand {
    /// List failed entries (all pages)
    List(FailedArgs),
    /// Retry every failed entry (of one site with --site)
    Retry(FailedArgs),
}

#[derive(clap::Args)]
struct FailedArgs {
    /// Only this site
    #[arg(long)]
    site: Option<String>,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(clap::Args, Clone)]
struct ApiArgs {
    /// The operations API: an address (plain HTTP) or an http:// or https:// URL
    #[arg(long, default_value = "127.0.0.1:8900")]
    api: String,
    /// File holding the API's bearer token
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// With an https:// API: the CA certificate(s) to verify it with (PEM; default: the
    /// system's roots)
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct SiteArgs {
    /// A site name, or `all`
    site: String,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(clap::Args)]
struct ResumeArgs {
    /// A site name, or `all`
    site: String,
    /// Resume in this many hours instead of now
    #[arg(long = "in")]
    in_hours: Option<f64>,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(clap::Args)]
struct PopulateArgs {
    /// The TOML configuration file
    #[arg(long)]
    config: PathBuf,
    /// Enqueue the existing versions of s3://BUCKET[/PREFIX] instead of consuming events
    #[arg(long)]
    scan: Option<S3Url>,
    /// With --scan: only versions missing (or different) at each destination
    #[arg(long, requires = "scan")]
    missing_only: bool,
    /// With --missing-only: do not wait for what is already queued to go through first
    /// (a version still queued may then be enqueued twice: harmless, skipped at the worker)
    #[arg(long, requires = "missing_only")]
    no_wait: bool,
}

#[derive(clap::Args)]
struct ReplicateArgs {
    /// The TOML configuration file
    #[arg(long)]
    config: PathBuf,
    /// The destination site (a [sites.NAME] table of the configuration)
    #[arg(long)]
    site: String,
    /// Shards (overrides replication.shards)
    #[arg(long)]
    shards: Option<usize>,
}

#[derive(clap::Args)]
struct RunArgs {
    /// The TOML configuration file
    #[arg(long)]
    config: PathBuf,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file and print the effective configuration, with where each
    /// value came from (default, tuning profile, file, flag). Credentials are never shown.
    Check {
        /// The TOML configuration file
        file: PathBuf,
    },
}

#[derive(clap::Args)]
struct SyncArgs {
    /// Source: s3://BUCKET[/PREFIX]
    source: S3Url,
    /// Destination: s3://BUCKET
    destination: S3Url,
    /// Source endpoint URL, e.g. http://127.0.0.1:9000 (else AWS_ENDPOINT_URL_S3,
    /// AWS_ENDPOINT_URL, or endpoint_url of the source's AWS profile)
    #[arg(long)]
    source_endpoint: Option<String>,
    /// Destination endpoint URL (else as for the source, with the destination's profile)
    #[arg(long)]
    destination_endpoint: Option<String>,
    /// Profile of the AWS shared credentials/config files for the source
    #[arg(long)]
    source_profile: Option<String>,
    /// Profile of the AWS shared credentials/config files for the destination
    #[arg(long)]
    destination_profile: Option<String>,
    /// Region used for signing, both sides (else AWS_REGION, AWS_DEFAULT_REGION, the side's
    /// AWS profile region, else us-east-1)
    #[arg(long)]
    region: Option<String>,
    /// Shards (glommio executors); default one per core
    #[arg(long)]
    shards: Option<usize>,
    /// Pin shard i to CPU i
    #[arg(long)]
    pin: bool,
    /// Keys replicated at once per shard
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Part size of multipart copies when the source's layout is unknown
    #[arg(long, default_value = "16MiB", value_parser = parse_size)]
    part_size: u64,
    /// Objects of this size or more are copied in parts
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    multipart_threshold: u64,
    /// Parts of one object in flight at once
    #[arg(long, default_value_t = 4)]
    part_concurrency: usize,
    /// Object bytes in flight per shard: objects of 1 MiB or more take their size from it,
    /// so many small objects but few large ones are copied at once (0: no bound)
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    window: u64,
    /// Copy versions that are themselves replicas (chains A to B to C); by default they are
    /// not, so two-way replication does not loop
    #[arg(long)]
    replicate_replicas: bool,
    /// Bandwidth limit shared by the shards: a rate (`200MiB/s`, `off`) or a weekly UTC
    /// timetable of `[Day-]HH:MM,RATE` entries (`"08:00,10MiB/s 19:00,off"`)
    #[arg(long, value_parser = parse_bandwidth)]
    bandwidth: Option<backbeat::bandwidth::Timetable>,
    /// Read buffer of each connection: the largest frame moved at once (8KiB to 16MiB)
    #[arg(long, default_value = "256KiB", value_parser = parse_size)]
    read_buffer: u64,
    /// SO_SNDBUF/SO_RCVBUF of each connection (0: kernel autotuning)
    #[arg(long, default_value = "0", value_parser = parse_size)]
    socket_buffer: u64,
    /// Attempts per version, the first included
    #[arg(long, default_value_t = backbeat::retry::DEFAULT_ATTEMPTS)]
    attempts: u32,
    /// A request waiting on an endpoint fails after this many seconds with no byte moved
    /// either way (however long a transfer that keeps moving lasts)
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    io_idle_timeout: u64,
    /// Bytes per second a request waiting on an endpoint must at least see over
    /// --io-idle-timeout of waiting (0: no guard), against peers that trickle bytes
    #[arg(long, default_value = "0", value_parser = parse_size)]
    min_rate: u64,
    /// A request lasting longer than this many seconds fails, even one that keeps moving
    /// (default: none)
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=604_800))]
    request_deadline: Option<u64>,
    /// PEM file of CA certificates for a https source endpoint (else AWS_CA_BUNDLE, or
    /// ca_bundle of the source's AWS profile)
    #[arg(long)]
    source_ca_file: Option<PathBuf>,
    /// PEM file of CA certificates for a https destination endpoint (else as for the source)
    #[arg(long)]
    destination_ca_file: Option<PathBuf>,
    /// Virtual-hosted addressing (bucket.host) instead of path-style
    #[arg(long)]
    virtual_hosted: bool,
    /// How uploads carry a CRC32C not known upfront: trailer (aws-chunked) or header
    #[arg(long, default_value = "trailer", value_parser = parse_checksum)]
    destination_checksum: ChecksumTransport,
    /// Read multipart copies back from the destination to check their CRC32C (for servers
    /// that store a client's checksum without verifying it, such as moto)
    #[arg(long)]
    destination_verify_after_write: bool,
    /// Print the summary as JSON on stdout
    #[arg(long)]
    json: bool,
}

fn parse_checksum(s: &str) -> Result<ChecksumTransport, String> {
    match s {
        "trailer" => Ok(ChecksumTransport::Trailer),
        "header" => Ok(ChecksumTransport::Header),
        _ => Err(format!("{s:?}: use trailer or header")),
    }
}

/// One side of a sync, as the flags give it.
struct SideArgs<'a> {
    name: &'a str,
    url: Option<&'a str>,
    region: Option<&'a str>,
    profile: Option<&'a str>,
    ca: Option<PathBuf>,
    checksum: ChecksumTransport,
    verify_after_write: bool,
    read_buffer: u64,
    socket_buffer: u64,
    io_idle_timeout: u64,
    min_rate: u64,
    request_deadline: Option<u64>,
}

/// A side's endpoint: its URL, region and CA file from the flags, else the environment, else
/// the side's AWS profile (as every S3 tool reads them); its credentials.
fn endpoint(side: SideArgs<'_>, virtual_hosted: bool) -> anyhow::Result<std::sync::Arc<Endpoint>> {
    let pick = |flag: Option<String>, setting| {
        layered(flag, None, setting, side.profile, &credentials::ProcessEnv).map(|(v, _)| v)
    };
    let url = pick(side.url.map(str::to_string), AwsSetting::EndpointUrl).with_context(|| {
        format!(
            "--{}-endpoint is required (or AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, or \
             endpoint_url in the AWS profile)",
            side.name
        )
    })?;
    let region = pick(side.region.map(str::to_string), AwsSetting::Region)
        .unwrap_or_else(|| "us-east-1".into());
    let ca = side.ca.map(|p| p.display().to_string());
    let creds = credentials::resolve(side.profile, &credentials::ProcessEnv)
        .with_context(|| format!("{} credentials", side.name))?;
    let mut cfg = EndpointConfig::new(&url, &region, creds);
    cfg.ca_file = pick(ca, AwsSetting::CaBundle).map(PathBuf::from);
    cfg.path_style = !virtual_hosted;
    cfg.checksum = side.checksum;
    cfg.verify_after_write = side.verify_after_write;
    cfg.read_buffer = side.read_buffer as usize;
    cfg.socket_buffer = (side.socket_buffer > 0).then_some(side.socket_buffer as usize);
    cfg.io_idle_timeout = std::time::Duration::from_secs(side.io_idle_timeout);
    cfg.min_rate = side.min_rate;
    cfg.request_deadline = side.request_deadline.map(std::time::Duration::from_secs);
    Endpoint::new(cfg).with_context(|| format!("--{}-endpoint", side.name))
}

fn run_sync(a: SyncArgs) -> anyhow::Result<ExitCode> {
    check_sync_args(&a)?;
    let json = a.json;
    let job = sync_job(a)?;
    match sync::run(job, Shutdown::with_signals()) {
        Ok(summary) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                print!("{}", summary.render());
            }
            Ok(if summary.failed > 0 || summary.interrupted {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Err(SyncError::Preflight(msg)) => {
            eprintln!("error: {msg}");
            Ok(ExitCode::from(2))
        }
        Err(e) => Err(e.into()),
    }
}

/// The bounds of `sync`'s flags, each refused with what to pass instead.
fn check_sync_args(a: &SyncArgs) -> anyhow::Result<()> {
    if a.destination.prefix.is_some() {
        anyhow::bail!("the destination is a bucket: s3://BUCKET (keys keep their names)");
    }
    if a.part_size < 5 * 1024 * 1024 {
        anyhow::bail!("--part-size must be at least 5MiB (S3's minimum part size)");
    }
    if !(8 << 10..=16 << 20).contains(&a.read_buffer) {
        anyhow::bail!("--read-buffer must be between 8KiB and 16MiB");
    }
    if a.window != 0 && a.window < 1 << 20 {
        anyhow::bail!("--window must be 0 (no bound) or at least 1MiB");
    }
    Ok(())
}

/// The sync job the flags describe: both endpoints resolved (flags, environment, profile).
fn sync_job(a: SyncArgs) -> anyhow::Result<SyncJob> {
    let side = |name, url, profile, ca, checksum, verify_after_write| SideArgs {
        name,
        url,
        region: a.region.as_deref(),
        profile,
        ca,
        checksum,
        verify_after_write,
        read_buffer: a.read_buffer,
        socket_buffer: a.socket_buffer,
        io_idle_timeout: a.io_idle_timeout,
        min_rate: a.min_rate,
        request_deadline: a.request_deadline,
    };
    let src = side(
        "source",
        a.source_endpoint.as_deref(),
        a.source_profile.as_deref(),
        a.source_ca_file.clone(),
        ChecksumTransport::Trailer,
        false,
    );
    let src = endpoint(src, a.virtual_hosted)?;
    let dst = side(
        "destination",
        a.destination_endpoint.as_deref(),
        a.destination_profile.as_deref(),
        a.destination_ca_file.clone(),
        a.destination_checksum,
        a.destination_verify_after_write,
    );
    let dst = endpoint(dst, a.virtual_hosted)?;
    let cores = || std::thread::available_parallelism().map_or(1, |n| n.get());
    Ok(SyncJob {
        shards: a.shards.unwrap_or_else(cores),
        placement: if a.pin {
            Placement::Pinned
        } else {
            Placement::Unbound
        },
        concurrency: a.concurrency,
        shard_parts: a.part_concurrency * 4,
        options: Options {
            multipart_threshold: a.multipart_threshold,
            part_size: a.part_size,
            part_concurrency: a.part_concurrency,
            window: a.window,
            retry: RetryPolicy::with_attempts(a.attempts),
            replicate_replicas: a.replicate_replicas,
        },
        policy: Default::default(),
        bandwidth: a.bandwidth.clone(),
        progress: !a.json && sync::progress_wanted(),
        source: a.source,
        destination: a.destination,
        source_endpoint: src,
        destination_endpoint: dst,
    })
}

fn parse_bandwidth(s: &str) -> Result<backbeat::bandwidth::Timetable, String> {
    backbeat::bandwidth::Timetable::parse(s)
}

fn load_config(path: &std::path::Path) -> anyhow::Result<backbeat::config::file::Config> {
    backbeat::config::file::Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))
}

fn run_populate(a: PopulateArgs) -> anyhow::Result<ExitCode> {
    let cfg = load_config(&a.config)?;
    let (engine, _broker) = backbeat::engine::Engine::start(cfg)?;
    let shutdown = Shutdown::with_signals();
    let stats = backbeat::metrics::Stats::new();
    match &a.scan {
        None => {
            engine.populate(stats, shutdown)?;
            Ok(ExitCode::SUCCESS)
        }
        Some(url) => scan_once(&engine, url, &a, shutdown),
    }
}

/// `populate --scan`: one scan of a bucket, its summary on stdout. A missing-only scan that
/// had to leave a site out (its queue did not move) exits with 2 and says what to do.
fn scan_once(
    engine: &backbeat::engine::Engine,
    url: &S3Url,
    a: &PopulateArgs,
    shutdown: Shutdown,
) -> anyhow::Result<ExitCode> {
    use backbeat::populate::{settle, worker};
    let pc = engine.populate_config(shutdown.clone());
    let show = sync::progress_wanted();
    let summary = backbeat::shard::block_on(async move {
        let settled = match (a.missing_only, a.no_wait) {
            (false, _) => None,
            (true, true) => {
                let mut s = settle::Settled::now(pc.sites.keys().cloned());
                s.outstanding = settle::Queues::new(&pc)?.outstanding().await?;
                Some(s)
            }
            (true, false) => {
                if show {
                    eprintln!("waiting for what is already queued to go through ...");
                }
                let queues = settle::Queues::new(&pc)?;
                Some(queues.settle(settle::STALL, &shutdown).await?)
            }
        };
        let mode = settled
            .as_ref()
            .map_or(worker::ScanMode::All, worker::ScanMode::Missing);
        let progress = |s: &worker::ScanSummary| {
            if show {
                eprint!(
                    "\rscanned {} versions, enqueued {}, already present {}   ",
                    s.versions_found, s.entries_enqueued, s.already_present
                );
            }
        };
        let prefix = url.prefix.as_deref();
        worker::scan_enqueue(&pc, &url.bucket, prefix, mode, &shutdown, progress).await
    })??;
    if show {
        eprintln!();
    }
    println!("{}", serde_json::to_string(&summary)?);
    Ok(explain_scan(&summary))
}

/// What a scan's summary means for its reader, on stderr, and the exit code: 1 when keys
/// were skipped, 2 when sites were left out.
fn explain_scan(summary: &backbeat::populate::worker::ScanSummary) -> ExitCode {
    if summary.keys_failed > 0 {
        eprintln!(
            "{} keys could not be checked or read, and were skipped (the first: {}). The others were enqueued; fix what the errors say and scan again.",
            summary.keys_failed,
            summary.first_key_failures.join("; ")
        );
    }
    if summary.outstanding > 0 {
        eprintln!(
            "{} versions missing at their sites were not enqueued again: they are FAILED there (see `backbeat failed list`, and `backbeat failed retry` once the cause is fixed) or wait for a replay.",
            summary.outstanding
        );
    }
    if summary.sites_left_out.is_empty() {
        return ExitCode::from(if summary.keys_failed > 0 { 1 } else { 0 });
    }
    eprintln!(
        "left out: {}: their queue did not move for {} s, so this scan could not tell what is missing from what is queued. Start (or resume) their `replicate`, or run again with --no-wait to enqueue for them anyway.",
        summary.sites_left_out.join(", "),
        backbeat::populate::settle::STALL.as_secs()
    );
    ExitCode::from(2)
}

fn run_replicate(a: ReplicateArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = load_config(&a.config)?;
    if let Some(n) = a.shards {
        cfg.replication.shards = n;
        cfg.set_by_flag("replication.shards");
    }
    let (engine, _broker) = backbeat::engine::Engine::start(cfg)?;
    let shards = engine.shards();
    engine.replicate(
        &a.site,
        shards,
        backbeat::metrics::Stats::new(),
        Shutdown::with_signals(),
    )?;
    Ok(ExitCode::SUCCESS)
}

fn run_all(a: RunArgs) -> anyhow::Result<ExitCode> {
    let cfg = load_config(&a.config)?;
    let (engine, _broker) = backbeat::engine::Engine::start(cfg)?;
    let engine = std::sync::Arc::new(engine);
    let stats = backbeat::metrics::Stats::new();
    let shutdown = Shutdown::with_signals();
    eprintln!(
        "backbeat: replicating {:?} from {} to {}; operations API on {}://{} (Ctrl-C stops)",
        engine.cfg.source.buckets.text(),
        engine.source.label(),
        engine.sites.keys().cloned().collect::<Vec<_>>().join(", "),
        if engine.cfg.api.cert_file.is_some() {
            "https"
        } else {
            "http"
        },
        engine.cfg.api.listen
    );
    {
        let (sites, shutdown) = (engine.site_stats.clone(), shutdown.clone());
        std::thread::spawn(move || {
            use backbeat::metrics::Stats as S;
            let mut last = String::new();
            while !shutdown.is_set() {
                std::thread::sleep(Duration::from_secs(1));
                let line = sites
                    .iter()
                    .map(|(name, s)| {
                        format!(
                            "{name}: replicated {} versions ({} bytes), {} failed",
                            S::get(&s.versions_copied) + S::get(&s.delete_markers),
                            S::get(&s.bytes_copied),
                            S::get(&s.failed)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                if line != last {
                    eprintln!("{line}");
                    last = line;
                }
            }
        });
    }
    engine.run(stats, shutdown)?;
    Ok(ExitCode::SUCCESS)
}

/// A client of the API the command names, with its token and CA file.
fn api_client(a: &ApiArgs) -> anyhow::Result<backbeat::api::cli::ApiClient> {
    let token = a
        .token_file
        .as_deref()
        .map(backbeat::api::read_token)
        .transpose()?;
    Ok(backbeat::api::cli::ApiClient::new(
        &a.api,
        token,
        a.ca_file.as_deref(),
    )?)
}

fn run_status(a: ApiArgs) -> anyhow::Result<ExitCode> {
    let report = api_client(&a)?.status()?;
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", backbeat::api::cli::status_table(&report));
    }
    Ok(ExitCode::SUCCESS)
}

fn run_pause(a: SiteArgs) -> anyhow::Result<ExitCode> {
    api_client(&a.api)?.pause(&a.site, true)?;
    println!("{}: paused", a.site);
    Ok(ExitCode::SUCCESS)
}

fn run_resume(a: ResumeArgs) -> anyhow::Result<ExitCode> {
    let api = api_client(&a.api)?;
    match a.in_hours {
        None => {
            api.pause(&a.site, false)?;
            println!("{}: resumed", a.site);
        }
        Some(h) => {
            let s = api.schedule_resume(&a.site, h)?;
            println!("{}: resumes at {}", a.site, s.scheduled_resume);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn run_failed(c: FailedCommand) -> anyhow::Result<ExitCode> {
    match c {
        FailedCommand::List(a) => {
            let all = api_client(&a.api)?.failed(a.site.as_deref())?;
            if a.api.json {
                println!("{}", serde_json::to_string(&all)?);
            } else {
                print!("{}", backbeat::api::cli::failed_table(&all));
            }
        }
        FailedCommand::Retry(a) => {
            let api = api_client(&a.api)?;
            let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let mut retried = 0;
            // A page at a time: any number of failed entries, in requests of bounded size.
            api.each_failed_page(a.site.as_deref(), |page| {
                retried += api.retry(page)?.len();
                if progress {
                    eprint!("\r{retried} entries queued again...");
                }
                Ok(())
            })?;
            if progress {
                eprintln!();
            }
            println!("{retried} entries queued again");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BACKBEAT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Sync(a) => run_sync(*a),
        Command::Populate(a) => run_populate(a),
        Command::Replicate(a) => run_replicate(a),
        Command::Run(a) => run_all(a),
        Command::Status(a) => run_status(a),
        Command::Pause(a) => run_pause(a),
        Command::Resume(a) => run_resume(a),
        Command::Failed(c) => run_failed(c),
        Command::Tune(a) => run_tune(a),
        Command::Lifecycle(c) => run_lifecycle(c),
        Command::Ingestion(c) => run_ingestion(c),
        Command::Buckets(a) => run_buckets(a),
        Command::Config(ConfigCommand::Check { file }) => {
            match backbeat::config::file::Config::load(&file) {
                Ok(cfg) => {
                    print!("{}", cfg.render());
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    Ok(ExitCode::from(2))
                }
            }
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
