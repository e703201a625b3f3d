//! The `[replication]` tuning keys, which a configuration file or a tuning profile sets. Each
//! key is declared once, in the table at the end: its field, type, default, how it is read,
//! its bounds and how `config check` shows it. The struct, its defaults, the list of keys, the
//! file model and the checks are generated from that table.

use std::path::PathBuf;

use super::de::{Int, Placed, Size};
use crate::shard::Placement;

/// An error of a value within its bounds.
fn within<T: PartialOrd + std::fmt::Display>(v: T, lo: T, hi: T) -> Result<(), String> {
    if v < lo || v > hi {
        return Err(format!("must be between {lo} and {hi}, not {v}"));
    }
    Ok(())
}

fn ensure(ok: bool, message: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(message.to_string())
    }
}

/// `0 (note)` for a zero that means something, else the number.
fn zero_means(v: u64, note: &str) -> String {
    if v == 0 {
        format!("0 ({note})")
    } else {
        v.to_string()
    }
}

macro_rules! tuning_keys {
    ($(
        $(#[$doc:meta])*
        $name:ident: $ty:ty = $default:expr,
            read $raw:ty, check $check:expr, show $show:expr;
    )*) => {
        /// Data path sizes and bounds.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct ReplicationTuning {
            $( $(#[$doc])* pub $name: $ty, )*
        }

        impl Default for ReplicationTuning {
            fn default() -> Self {
                Self { $( $name: $default, )* }
            }
        }

        /// The keys of the tuning section, which a profile may set.
        pub const TUNING_KEYS: &[&str] = &[ $( stringify!($name), )* ];

        /// The `[replication]` table as a file or a profile writes it.
        #[derive(Default, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(super) struct TuningFile {
            /// A tuning profile, whose values this table's own override (not in a profile).
            #[serde(default)]
            pub profile: Option<PathBuf>,
            $( #[serde(default)] $name: Option<$raw>, )*
        }

        impl TuningFile {
            /// Sets every value the table gives, within its bounds. An error names the key.
            pub(super) fn apply(self, t: &mut ReplicationTuning) -> Result<(), (&'static str, String)> {
                $(
                    if let Some(raw) = self.$name {
                        let check: fn(&$ty) -> Result<(), String> = $check;
                        check(&raw.0).map_err(|m| (concat!("replication.", stringify!($name)), m))?;
                        t.$name = raw.0;
                    }
                )*
                Ok(())
            }
        }

        impl ReplicationTuning {
            /// `(dotted key, value as shown)` of every key, in the table's order.
            pub(super) fn shown(&self) -> Vec<(&'static str, String)> {
                vec![$(
                    (concat!("replication.", stringify!($name)), {
                        let show: fn(&$ty) -> String = $show;
                        show(&self.$name)
                    }),
                )*]
            }
        }
    };
}

tuning_keys! {
    /// 0 means one shard per core.
    shards: usize = 0,
        read Int<usize>, check |v| within(*v, 0, 1024),
        show |v| if *v == 0 { "0 (one per core)".into() } else { v.to_string() };
    placement: Placement = Placement::Unbound,
        read Placed, check |_| Ok(()),
        show |v| format!("{v:?}").to_lowercase();
    concurrency: usize = 32,
        read Int<usize>, check |v| within(*v, 1, 100_000), show |v| v.to_string();
    part_size: u64 = 16 << 20,
        read Size, check |v| ensure(*v >= 5 << 20, "must be at least 5MiB (S3's minimum part size)"),
        show |v| v.to_string();
    multipart_threshold: u64 = 64 << 20,
        read Size, check |_| Ok(()), show |v| v.to_string();
    part_concurrency: usize = 4,
        read Int<usize>, check |v| within(*v, 1, 1024), show |v| v.to_string();
    attempts: u32 = crate::retry::DEFAULT_ATTEMPTS,
        read Int<u32>, check |v| within(*v, 1, 100), show |v| v.to_string();
    /// Object bytes in flight per shard (0: only `concurrency` bounds it); objects of
    /// 1 MiB or more take their size from it.
    window: u64 = 64 << 20,
        read Size, check |v| ensure(*v == 0 || *v >= 1 << 20, "must be 0 (no bound) or at least 1MiB"),
        show |v| zero_means(*v, "no bound");
    /// Read buffer of each S3 connection: the largest frame the data path moves at once.
    read_buffer: u64 = 256 << 10,
        read Size, check |v| ensure((8 << 10..=16 << 20).contains(v), "must be between 8KiB and 16MiB"),
        show |v| v.to_string();
    /// SO_SNDBUF and SO_RCVBUF of S3 connections (0: the kernel's autotuning).
    socket_buffer: u64 = 0,
        read Size, check |v| ensure(*v <= 1 << 30, "must be at most 1GiB (0: kernel autotuning)"),
        show |v| zero_means(*v, "kernel autotuning");
    /// A request waiting on an endpoint fails after this long with no byte moved either
    /// way; a transfer that keeps moving is never cut, however long it lasts.
    io_idle_timeout_seconds: u64 = 60,
        read Int<u64>, check |v| within(*v, 1, 86_400), show |v| v.to_string();
    /// Bytes per second a request waiting on an endpoint must at least see, over
    /// `io_idle_timeout_seconds` of waiting (0: no guard), against peers that trickle bytes.
    min_rate: u64 = 0,
        read Size, check |_| Ok(()), show |v| zero_means(*v, "no guard");
}

impl ReplicationTuning {
    /// Parts in flight per shard, across objects.
    pub fn shard_parts(&self) -> usize {
        self.part_concurrency * 4
    }
}
