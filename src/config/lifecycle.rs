//! The `[lifecycle]` table: where each bucket's lifecycle rules come from, and the
//! test-only time progression factor.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::de;

/// Lifecycle settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LifecycleConfig {
    /// Bucket -> a LifecycleConfiguration XML file used instead of
    /// GetBucketLifecycleConfiguration (some servers drop fields such as
    /// NewerNoncurrentVersions).
    pub rules_files: BTreeMap<String, PathBuf>,
    /// For tests and demos only: time runs this many times faster for lifecycle rules
    /// (86400: a day lasts a second). 1 in production.
    #[serde(deserialize_with = "de::int::<_, _, 1, 8_640_000>")]
    pub time_progression_factor: u32,
    /// Whether `run` executes lifecycle: `auto` when a configured bucket has lifecycle rules
    /// at start (a rules file, or rules stored on the bucket), `on`, or `off`.
    pub enabled: Enabled,
    /// Seconds between the starts of two passes over a bucket (a pass still running is
    /// never started again).
    #[serde(deserialize_with = "de::int::<_, _, 1, 2_592_000>")]
    pub interval_seconds: u64,
    /// Keys listed per step of a pass (a step is the unit a crashed pass resumes from).
    #[serde(deserialize_with = "de::int::<_, _, 1, 100_000>")]
    pub page_keys: usize,
}

/// Whether `run` executes lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Enabled {
    Auto,
    On,
    Off,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        Self {
            rules_files: BTreeMap::new(),
            time_progression_factor: 1,
            enabled: Enabled::Auto,
            interval_seconds: 3600,
            page_keys: 1000,
        }
    }
}
