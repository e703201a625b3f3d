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
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        Self {
            rules_files: BTreeMap::new(),
            time_progression_factor: 1,
        }
    }
}
