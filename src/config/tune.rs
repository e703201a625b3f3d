//! `backbeat tune`: inspects the machine (cores and NUMA nodes, NIC speeds, memlock limit,
//! io_uring, socket buffer limits), recommends one of the tuning profiles shipped in
//! `tuning/`, and says which sysctl and ulimit changes it would want.
//!
//! The profiles are compiled in, so the recommendation works on a node without the source
//! tree; `--apply-profile FILE` writes the recommended one (adapted to this machine's cores).

use std::path::Path;

/// The shipped profiles: (name, TOML).
pub const PROFILES: &[(&str, &str)] = &[
    ("small-vm", include_str!("../../tuning/small-vm.toml")),
    ("10gbe-8core", include_str!("../../tuning/10gbe-8core.toml")),
    (
        "25gbe-16core",
        include_str!("../../tuning/25gbe-16core.toml"),
    ),
    (
        "100gbe-64core",
        include_str!("../../tuning/100gbe-64core.toml"),
    ),
];

/// A network interface and its speed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Nic {
    pub name: String,
    /// Mbit/s, when the driver reports it (virtual NICs often do not).
    pub speed_mbps: Option<u64>,
    pub up: bool,
}

/// What `tune` found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Machine {
    pub cores: usize,
    pub numa_nodes: usize,
    pub nics: Vec<Nic>,
    /// RLIMIT_MEMLOCK soft limit in bytes (`None`: unlimited).
    pub memlock: Option<u64>,
    /// RLIMIT_NOFILE soft limit.
    pub nofile: Option<u64>,
    pub io_uring: Result<(), String>,
    pub rmem_max: Option<u64>,
    pub wmem_max: Option<u64>,
    /// The maximum of net.ipv4.tcp_rmem / tcp_wmem (autotuning ceiling).
    pub tcp_rmem_max: Option<u64>,
    pub tcp_wmem_max: Option<u64>,
}

fn read_u64(path: impl AsRef<Path>) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn last_field(path: &str) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

fn rlimit(resource: libc::__rlimit_resource_t) -> Option<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct it is given.
    if unsafe { libc::getrlimit(resource, &mut r) } != 0 || r.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    Some(r.rlim_cur)
}

/// Tries to create an io_uring (what every shard needs).
fn probe_io_uring() -> Result<(), String> {
    if let Some(v) = read_u64("/proc/sys/kernel/io_uring_disabled") {
        if v == 2 {
            return Err("disabled by kernel.io_uring_disabled=2".into());
        }
    }
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup with a zeroed io_uring_params (120 bytes); the fd is closed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_io_uring_setup,
            4u32,
            params.as_mut_ptr() as *mut libc::c_void,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    // SAFETY: the fd was just returned by the kernel.
    unsafe { libc::close(fd as i32) };
    Ok(())
}

impl Machine {
    /// Reads this machine (sysfs, procfs, rlimits).
    pub fn inspect() -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let numa_nodes = std::fs::read_dir("/sys/devices/system/node")
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| {
                        let n = e.file_name();
                        let n = n.to_string_lossy();
                        n.starts_with("node") && n[4..].chars().all(|c| c.is_ascii_digit())
                    })
                    .count()
            })
            .unwrap_or(0)
            .max(1);
        let mut nics = Vec::new();
        if let Ok(d) = std::fs::read_dir("/sys/class/net") {
            for e in d.filter_map(Result::ok) {
                let name = e.file_name().to_string_lossy().into_owned();
                if name == "lo" {
                    continue;
                }
                let p = e.path();
                let speed = read_u64(p.join("speed")).filter(|s| *s > 0 && *s < 10_000_000);
                let up = std::fs::read_to_string(p.join("operstate"))
                    .map(|s| s.trim() == "up")
                    .unwrap_or(false);
                nics.push(Nic {
                    name,
                    speed_mbps: speed,
                    up,
                });
            }
        }
        nics.sort_by(|a, b| a.name.cmp(&b.name));
        Self {
            cores,
            numa_nodes,
            nics,
            memlock: rlimit(libc::RLIMIT_MEMLOCK),
            nofile: rlimit(libc::RLIMIT_NOFILE),
            io_uring: probe_io_uring(),
            rmem_max: read_u64("/proc/sys/net/core/rmem_max"),
            wmem_max: read_u64("/proc/sys/net/core/wmem_max"),
            tcp_rmem_max: last_field("/proc/sys/net/ipv4/tcp_rmem"),
            tcp_wmem_max: last_field("/proc/sys/net/ipv4/tcp_wmem"),
        }
    }

    /// The fastest NIC that is up, in Mbit/s.
    pub fn nic_speed(&self) -> Option<u64> {
        self.nics
            .iter()
            .filter(|n| n.up)
            .filter_map(|n| n.speed_mbps)
            .max()
    }
}

/// What `tune` recommends.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Recommendation {
    /// The shipped profile it starts from.
    pub profile: String,
    pub why: String,
    /// The profile adapted to this machine (shards = cores), as TOML.
    pub toml: String,
    pub sysctl: Vec<String>,
    pub ulimit: Vec<String>,
    pub warnings: Vec<String>,
}

/// A value of the profile's `[replication]` table.
fn profile_value(toml_text: &str, key: &str) -> Option<toml::Value> {
    let t: toml::Table = toml_text.parse().ok()?;
    t.get("replication")?.get(key).cloned()
}

fn size_of(v: Option<toml::Value>) -> u64 {
    match v {
        Some(toml::Value::Integer(n)) => n.max(0) as u64,
        Some(toml::Value::String(s)) => super::parse_size(&s).unwrap_or(0),
        _ => 0,
    }
}

/// Picks a profile for `m` and lists the system changes it wants.
pub fn recommend(m: &Machine) -> Recommendation {
    let speed = m.nic_speed();
    let (name, why) = choose_profile(m.cores, speed);
    let text = PROFILES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .unwrap_or(PROFILES[0].1);
    let toml = adapt_profile(m, name, &why, text);
    let socket_buffer = size_of(profile_value(text, "socket_buffer"));
    let concurrency = profile_value(text, "concurrency")
        .and_then(|v| v.as_integer())
        .unwrap_or(32) as u64;
    Recommendation {
        profile: name.into(),
        why,
        toml,
        sysctl: sysctl_changes(m, speed, socket_buffer),
        ulimit: ulimit_changes(m, concurrency),
        warnings: machine_warnings(m),
    }
}

/// The profile for a machine with `cores` cores whose fastest NIC runs at `speed` Mbit/s,
/// and why.
fn choose_profile(cores: usize, speed: Option<u64>) -> (&'static str, String) {
    match speed {
        Some(s) if s >= 100_000 || (s >= 40_000 && cores >= 48) => {
            ("100gbe-64core", format!("a {} Gbit/s NIC", s / 1000))
        }
        Some(s) if s >= 25_000 => ("25gbe-16core", format!("a {} Gbit/s NIC", s / 1000)),
        Some(s) if s >= 10_000 => ("10gbe-8core", format!("a {} Gbit/s NIC", s / 1000)),
        Some(s) => ("small-vm", format!("the fastest NIC runs at {s} Mbit/s")),
        None if cores >= 8 => (
            "10gbe-8core",
            format!("no NIC reports its speed (virtual NICs do not); {cores} cores"),
        ),
        None => (
            "small-vm",
            format!("no NIC reports its speed (virtual NICs do not); {cores} cores"),
        ),
    }
}

/// The profile's TOML with a header saying where it came from and one shard per core of
/// this machine, whatever the profile was written for.
fn adapt_profile(m: &Machine, name: &str, why: &str, text: &str) -> String {
    let mut toml = String::new();
    toml.push_str(&format!(
        "# Written by `backbeat tune` from the {name} profile ({why}); shards set to this machine's {} cores ({} NUMA node(s)).\n",
        m.cores, m.numa_nodes
    ));
    for line in text.lines() {
        if line.trim_start().starts_with("shards") {
            toml.push_str(&format!("shards = {}\n", m.cores));
        } else {
            toml.push_str(line);
            toml.push('\n');
        }
    }
    toml
}

/// The sysctl commands raising socket buffer limits below what the profile (and the NIC
/// `speed`) wants.
fn sysctl_changes(m: &Machine, speed: Option<u64>, socket_buffer: u64) -> Vec<String> {
    let mut sysctl = Vec::new();
    if socket_buffer > 0 {
        for (key, have) in [
            ("net.core.rmem_max", m.rmem_max),
            ("net.core.wmem_max", m.wmem_max),
        ] {
            if have.is_none_or(|h| h < socket_buffer) {
                sysctl.push(format!("sysctl -w {key}={socket_buffer}"));
            }
        }
    }
    let want_tcp = (socket_buffer.max(16 << 20)).max(if speed.unwrap_or(0) >= 25_000 {
        64 << 20
    } else {
        16 << 20
    });
    for (key, have) in [
        ("net.ipv4.tcp_rmem", m.tcp_rmem_max),
        ("net.ipv4.tcp_wmem", m.tcp_wmem_max),
    ] {
        if have.is_none_or(|h| h < want_tcp) {
            sysctl.push(format!("sysctl -w {key}=\"4096 131072 {want_tcp}\""));
        }
    }
    sysctl
}

/// The ulimit commands raising the memlock and open-file limits below what the shards and
/// `concurrency` transfers each need.
fn ulimit_changes(m: &Machine, concurrency: u64) -> Vec<String> {
    let mut ulimit = Vec::new();
    // Each shard's io_uring rings count against memlock on kernels before 5.12 (about 1 MiB a
    // shard with glommio's ring sizes; the 8 MiB default is enough for a small VM).
    let memlock_want: u64 = (m.cores as u64) << 20;
    let memlock_want = memlock_want.max(8 << 20);
    if m.memlock.is_some_and(|l| l < memlock_want) {
        ulimit.push(format!(
            "ulimit -l {}   # KiB of locked memory (io_uring rings of {} shards); LimitMEMLOCK= in a systemd unit",
            memlock_want / 1024,
            m.cores
        ));
    }
    // Two connections per transfer in flight, per site, plus Kafka and slack.
    let files_want = (m.cores as u64 * concurrency * 2 * 2 + 1024).max(65_536);
    if m.nofile.is_some_and(|l| l < files_want) {
        ulimit.push(format!(
            "ulimit -n {files_want}   # open files: two connections per transfer in flight, per site; LimitNOFILE= in a systemd unit"
        ));
    }
    ulimit
}

/// What no setting fixes: io_uring missing, several NUMA nodes.
fn machine_warnings(m: &Machine) -> Vec<String> {
    let mut warnings = Vec::new();
    if let Err(e) = &m.io_uring {
        warnings.push(format!(
            "io_uring is not available ({e}): backbeat cannot run here; use Linux 5.8 or later with io_uring enabled"
        ));
    }
    if m.numa_nodes > 1 {
        warnings.push(format!(
            "{} NUMA nodes: run one backbeat process per node (numactl --cpunodebind=N --membind=N) with placement = \"pinned\", so a shard's buffers stay on its node",
            m.numa_nodes
        ));
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(cores: usize, speed: Option<u64>) -> Machine {
        Machine {
            cores,
            numa_nodes: 1,
            nics: vec![Nic {
                name: "eth0".into(),
                speed_mbps: speed,
                up: true,
            }],
            memlock: Some(8 << 20),
            nofile: Some(1024),
            io_uring: Ok(()),
            rmem_max: Some(212_992),
            wmem_max: Some(212_992),
            tcp_rmem_max: Some(6 << 20),
            tcp_wmem_max: Some(4 << 20),
        }
    }

    #[test]
    fn picks_the_profile_by_nic_speed_and_cores() {
        assert_eq!(recommend(&machine(2, None)).profile, "small-vm");
        assert_eq!(recommend(&machine(2, Some(1000))).profile, "small-vm");
        assert_eq!(recommend(&machine(8, Some(10_000))).profile, "10gbe-8core");
        assert_eq!(
            recommend(&machine(16, Some(25_000))).profile,
            "25gbe-16core"
        );
        assert_eq!(
            recommend(&machine(64, Some(100_000))).profile,
            "100gbe-64core"
        );
        assert_eq!(recommend(&machine(12, None)).profile, "10gbe-8core");
    }

    #[test]
    fn adapts_shards_and_asks_for_limits() {
        let r = recommend(&machine(12, Some(25_000)));
        assert!(r.toml.contains("shards = 12\n"), "{}", r.toml);
        assert!(
            r.sysctl.iter().any(|s| s.contains("net.ipv4.tcp_rmem")),
            "{:?}",
            r.sysctl
        );
        assert!(
            r.ulimit.iter().any(|s| s.starts_with("ulimit -n")),
            "{:?}",
            r.ulimit
        );
        assert!(
            r.ulimit.iter().any(|s| s.starts_with("ulimit -l")),
            "{:?}",
            r.ulimit
        );
        let mut m = machine(2, None);
        m.io_uring = Err("ENOSYS".into());
        m.numa_nodes = 2;
        let r = recommend(&m);
        assert_eq!(r.warnings.len(), 2, "{:?}", r.warnings);
    }

    #[test]
    fn every_profile_parses_and_sets_every_tuning_key() {
        for (name, text) in PROFILES {
            let t: toml::Table = text.parse().unwrap_or_else(|e| panic!("{name}: {e}"));
            let r = t["replication"].as_table().expect("a [replication] table");
            for key in crate::config::file::TUNING_KEYS {
                assert!(r.contains_key(*key), "{name} does not set {key}");
            }
            assert!(
                text.lines().filter(|l| l.starts_with('#')).count() >= 3,
                "{name} says how its values were derived"
            );
        }
    }

    #[test]
    fn inspects_this_machine() {
        let m = Machine::inspect();
        assert!(m.cores >= 1 && m.numa_nodes >= 1);
        let r = recommend(&m);
        assert!(PROFILES.iter().any(|(n, _)| *n == r.profile));
    }
}
