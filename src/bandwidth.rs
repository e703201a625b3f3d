//! Bandwidth limits: a rate per site (or for `sync`), optionally changing with the time of
//! the week as rclone's `--bwlimit` timetable does, shared by all of a node's shards.
//!
//! Each shard holds a token bucket refilled at the node's rate divided by the shards moving
//! bytes now (those that asked for tokens in the last [`ACTIVE_WINDOW`]): a shard that goes
//! idle leaves its share to the others within that window. A transfer takes tokens for each
//! frame it passes on (the bucket may go into debt by one frame; an admitted transfer holds a
//! frame's worth until its frame arrives, so that the others wait meanwhile) and waits, on a
//! timer, while its shard's bucket is in debt; nothing is allocated per frame. With no limit set
//! the data path holds no limiter at all.
//!
//! Owns: the timetable, the node's shares, the shard buckets. May call: nothing.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// A shard that asked for tokens this recently counts as moving bytes.
pub const ACTIVE_WINDOW: Duration = Duration::from_millis(500);
/// Tokens a shard may save while idle: this much time at its share (at least one frame).
const BURST: Duration = Duration::from_millis(100);
const MIN_BURST: f64 = 64.0 * 1024.0;
/// Tokens an admitted transfer holds until its frame arrives (a frame is at most the read
/// buffer, 256 KiB by default).
const FRAME_RESERVED: u64 = 256 * 1024;

/// A weekly timetable of rates (`None`: no limit). One entry applies all week.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timetable {
    /// (minute of the week from Monday 00:00 UTC, rate), sorted.
    entries: Vec<(u32, Option<u64>)>,
    text: String,
}

const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const WEEK_MINUTES: u32 = 7 * 24 * 60;

impl Timetable {
    /// Parses `"200MiB/s"`, `"off"`, or a timetable of `[Day-]HH:MM,RATE` entries separated
    /// by spaces (UTC; an entry without a day applies every day), e.g.
    /// `"08:00,10MiB/s 19:00,off Sat-00:00,100MiB/s"`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if !s.contains(',') {
            return Ok(Self {
                entries: vec![(0, parse_rate(s)?)],
                text: s.to_string(),
            });
        }
        let mut entries = Vec::new();
        for item in s.split_whitespace() {
            let (when, rate) = item
                .split_once(',')
                .ok_or_else(|| format!("{item:?}: expected [Day-]HH:MM,RATE"))?;
            let rate = parse_rate(rate)?;
            for minute in minutes_of(when)? {
                entries.retain(|(m, _)| *m != minute);
                entries.push((minute, rate));
            }
        }
        entries.sort();
        Ok(Self {
            entries,
            text: s.to_string(),
        })
    }

    /// The rate in force at `t` (bytes per second; `None`: no limit).
    pub fn at(&self, t: SystemTime) -> Option<u64> {
        let secs = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        // 1970-01-01 was a Thursday: Monday-based minute of the week.
        let minute = ((secs / 60 + 3 * 24 * 60) % WEEK_MINUTES as u64) as u32;
        let before = self.entries.iter().rev().find(|(m, _)| *m <= minute);
        before.or(self.entries.last()).and_then(|(_, r)| *r)
    }

    /// As configured.
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// `HH:MM` (every day) or `Day-HH:MM`: minutes of the week it starts at.
fn minutes_of(when: &str) -> Result<Vec<u32>, String> {
    let (days, hhmm): (Vec<u32>, &str) = match when.split_once('-') {
        Some((d, t)) => {
            let i = DAYS
                .iter()
                .position(|x| x.eq_ignore_ascii_case(d))
                .ok_or_else(|| format!("{d:?}: expected a day (Mon, Tue, ... Sun)"))?;
            (vec![i as u32], t)
        }
        None => ((0..7).collect(), when),
    };
    let bad = || format!("{hhmm:?}: expected HH:MM");
    let (h, m) = hhmm.split_once(':').ok_or_else(bad)?;
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 23 || m > 59 {
        return Err(bad());
    }
    Ok(days.iter().map(|d| d * 24 * 60 + h * 60 + m).collect())
}

/// `off` (no limit), or bytes per second: `200MiB/s`, `1.5GiB/s`, `500KB/s`, `10M` (binary
/// when the unit is a single letter, as rclone reads it), `8388608`.
pub fn parse_rate(s: &str) -> Result<Option<u64>, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let t = t.strip_suffix("/s").unwrap_or(t);
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: f64 = n
        .parse()
        .map_err(|_| format!("{s:?}: expected a rate such as \"200MiB/s\" or \"off\""))?;
    let mult: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "K" | "KiB" => 1024.0,
        "M" | "MiB" => 1024.0 * 1024.0,
        "G" | "GiB" => 1024.0 * 1024.0 * 1024.0,
        "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        u => {
            return Err(format!(
                "{s:?}: unknown unit {u:?} (B, KiB, MiB, GiB, KB, MB, GB)"
            ))
        }
    };
    let rate = (n * mult) as u64;
    if rate == 0 {
        return Err(format!("{s:?}: a limit must be above 0 (\"off\" for none)"));
    }
    Ok(Some(rate))
}

/// Shown as `8 MiB/s`.
pub fn show_rate(rate: Option<u64>) -> String {
    match rate {
        None => "off".into(),
        Some(r) if r % (1 << 20) == 0 => format!("{} MiB/s", r >> 20),
        Some(r) => format!("{:.2} MiB/s", r as f64 / (1u64 << 20) as f64),
    }
}

/// One node's limit for one site (or one sync), shared by its shards.
#[derive(Debug)]
pub struct NodeLimit {
    table: Timetable,
    epoch: Instant,
    /// Per shard slot: when it last asked for tokens (ms since `epoch`, 0: never).
    active: Box<[AtomicU64]>,
    next_slot: AtomicUsize,
}

impl NodeLimit {
    pub fn new(table: Timetable, shards: usize) -> Arc<Self> {
        Arc::new(Self {
            table,
            epoch: Instant::now(),
            active: (0..shards.max(1)).map(|_| AtomicU64::new(0)).collect(),
            next_slot: AtomicUsize::new(0),
        })
    }

    /// The rate in force now (bytes per second; `None`: no limit now).
    pub fn rate_now(&self) -> Option<u64> {
        self.table.at(SystemTime::now())
    }

    pub fn timetable(&self) -> &Timetable {
        &self.table
    }

    /// A shard's bucket (call once per shard).
    pub fn shard(self: &Arc<Self>) -> ShardLimit {
        let slot = self.next_slot.fetch_add(1, Ordering::Relaxed) % self.active.len();
        ShardLimit {
            node: self.clone(),
            slot,
            tokens: Cell::new(0.0),
            last: Cell::new(Instant::now()),
            rate: Cell::new(None),
            rate_read: Cell::new(None),
        }
    }

    fn millis(&self, t: Instant) -> u64 {
        t.duration_since(self.epoch).as_millis() as u64 + 1
    }

    /// Marks `slot` active and counts the shards active now.
    fn active_shards(&self, slot: usize, now: Instant) -> usize {
        let ms = self.millis(now);
        self.active[slot].store(ms, Ordering::Relaxed);
        let window = ACTIVE_WINDOW.as_millis() as u64;
        let recent = |a: &AtomicU64| {
            let t = a.load(Ordering::Relaxed);
            t != 0 && ms.saturating_sub(t) <= window
        };
        self.active.iter().filter(|a| recent(a)).count().max(1)
    }
}

/// A shard's token bucket (see the module doc).
#[derive(Debug)]
pub struct ShardLimit {
    node: Arc<NodeLimit>,
    slot: usize,
    /// Bytes this shard may send now (negative: its debt).
    tokens: Cell<f64>,
    last: Cell<Instant>,
    /// The node's rate, read from the timetable at most once a second.
    rate: Cell<Option<u64>>,
    rate_read: Cell<Option<Instant>>,
}

impl ShardLimit {
    /// `None` when the next frame may go now, else how long to wait for its tokens.
    pub fn wait(&self) -> Option<Duration> {
        let now = Instant::now();
        let rate = self.rate(now)?;
        let share = rate as f64 / self.node.active_shards(self.slot, now) as f64;
        let elapsed = now.duration_since(self.last.get()).as_secs_f64();
        self.last.set(now);
        let cap = (share * BURST.as_secs_f64()).max(MIN_BURST);
        let tokens = (self.tokens.get() + elapsed * share).min(cap);
        self.tokens.set(tokens);
        if tokens >= 0.0 {
            return None;
        }
        let wait = Duration::from_secs_f64(-tokens / share);
        // A shard asleep for its tokens still holds its share: counted active until it wakes.
        let until = self.node.millis(now + wait);
        self.node.active[self.slot].store(until, Ordering::Relaxed);
        Some(wait)
    }

    /// Takes `bytes` (the frame just passed on).
    pub fn take(&self, bytes: u64) {
        self.add(-(bytes as f64));
    }

    /// Reserves a frame's tokens for a transfer [`ShardLimit::wait`] admitted, so that the
    /// shard's other transfers wait while its frame is read.
    pub fn reserve(&self) {
        self.add(-(FRAME_RESERVED as f64));
    }

    /// The admitted transfer's frame arrived (`Some(bytes)`) or its body ended: its
    /// reservation is replaced by what it took.
    pub fn settle(&self, bytes: Option<u64>) {
        self.add(FRAME_RESERVED as f64 - bytes.unwrap_or(0) as f64);
    }

    fn add(&self, n: f64) {
        if self.rate.get().is_some() {
            self.tokens.set(self.tokens.get() + n);
        }
    }

    fn rate(&self, now: Instant) -> Option<u64> {
        let fresh = self
            .rate_read
            .get()
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1));
        if !fresh {
            let rate = self.node.rate_now();
            if rate.is_none() {
                self.tokens.set(0.0);
            }
            self.rate.set(rate);
            self.rate_read.set(Some(now));
        }
        self.rate.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_in_the_units_operators_write() {
        assert_eq!(parse_rate("200MiB/s"), Ok(Some(200 << 20)));
        assert_eq!(parse_rate("1.5GiB/s"), Ok(Some(3 << 29)));
        assert_eq!(parse_rate("10M"), Ok(Some(10 << 20)));
        assert_eq!(parse_rate("500KB/s"), Ok(Some(500_000)));
        assert_eq!(parse_rate("off"), Ok(None));
        assert!(parse_rate("0").unwrap_err().contains("above 0"));
        assert!(parse_rate("8 furlongs").unwrap_err().contains("unit"));
        assert_eq!(show_rate(Some(8 << 20)), "8 MiB/s");
    }

    #[test]
    fn a_timetable_applies_the_last_entry_started() {
        let t = Timetable::parse("08:00,10MiB/s 19:00,off Sat-00:00,100MiB/s").unwrap();
        // 2026-12-03 is a Thursday.
        let at = |s: &str| t.at(crate::time::parse_rfc3339(s).unwrap());
        assert_eq!(at("2026-12-03T09:00:00Z"), Some(10 << 20));
        assert_eq!(at("2026-12-03T20:00:00Z"), None);
        assert_eq!(
            at("2026-12-03T07:59:00Z"),
            None,
            "Wednesday 19:00 still holds"
        );
        assert_eq!(at("2026-12-05T07:00:00Z"), Some(100 << 20), "Saturday");
        assert_eq!(at("2026-12-05T09:00:00Z"), Some(10 << 20));
        assert_eq!(
            at("2026-11-30T00:30:00Z"),
            None,
            "Monday wraps to Sunday 19:00"
        );
        let one = Timetable::parse("8MiB/s").unwrap();
        assert_eq!(one.at(SystemTime::now()), Some(8 << 20));
        assert!(Timetable::parse("Moon-08:00,1M")
            .unwrap_err()
            .contains("day"));
        assert!(Timetable::parse("25:00,1M").unwrap_err().contains("HH:MM"));
    }

    #[test]
    fn shards_share_the_rate_and_an_idle_one_leaves_its_share() {
        let node = NodeLimit::new(Timetable::parse("1MiB/s").unwrap(), 2);
        let (a, b) = (node.shard(), node.shard());
        assert_eq!(a.wait(), None);
        a.take(1 << 20);
        let alone = a.wait().expect("in debt");
        assert!(alone > Duration::from_millis(900), "{alone:?}");
        assert_eq!(b.wait(), None);
        b.reserve();
        assert!(b.wait().is_some(), "a reserved frame holds the others back");
        b.settle(Some(1 << 20));
        let shared = a.wait().expect("in debt");
        assert!(
            shared > Duration::from_millis(1800),
            "half the rate each: {shared:?}"
        );
        // A shard asleep longer than the active window keeps its share meanwhile: at
        // 512 KiB/s over 8 shards a frame's debt is a 4 s sleep.
        let slow = NodeLimit::new(Timetable::parse("512KiB/s").unwrap(), 8);
        let shards: Vec<ShardLimit> = (0..8).map(|_| slow.shard()).collect();
        for s in &shards {
            assert_eq!(s.wait(), None);
            s.take(256 << 10);
        }
        for s in &shards {
            let asleep = s.wait().expect("in debt");
            assert!(asleep > Duration::from_secs(3), "{asleep:?}");
        }
        std::thread::sleep(ACTIVE_WINDOW + Duration::from_millis(50));
        let other = shards[1].wait().expect("in debt");
        assert!(
            other > Duration::from_millis(3400),
            "still an eighth each: {other:?}"
        );
        let off = NodeLimit::new(Timetable::parse("off").unwrap(), 1).shard();
        off.take(1 << 30);
        assert_eq!(off.wait(), None);
    }
}
