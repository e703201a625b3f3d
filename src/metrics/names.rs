//! Every metric name the engine exports, in one place.

pub const VERSIONS_COPIED: &str = "backbeat_versions_copied_total";
pub const DELETE_MARKERS: &str = "backbeat_delete_markers_replicated_total";
pub const METADATA_UPDATES: &str = "backbeat_metadata_updates_total";
pub const SKIPPED: &str = "backbeat_versions_skipped_total";
pub const SUPERSEDED: &str = "backbeat_versions_superseded_total";
pub const FAILED: &str = "backbeat_versions_failed_total";
pub const BYTES_COPIED: &str = "backbeat_bytes_copied_total";
pub const BYTES_MOVED: &str = "backbeat_bytes_moved_total";
pub const RETRIES: &str = "backbeat_retries_total";
pub const CHECKSUM_MISMATCHES: &str = "backbeat_checksum_mismatches_total";
pub const REPLICATION_LATENCY: &str = "backbeat_replication_latency_seconds";
pub const BANDWIDTH_LIMIT: &str = "backbeat_site_bandwidth_limit_bytes_per_second";
pub const IN_FLIGHT: &str = "backbeat_entries_in_flight";
pub const BACKLOG: &str = "backbeat_backlog_entries";
pub const PARTITIONS_OWNED: &str = "backbeat_partitions_owned";
pub const RPO: &str = "backbeat_rpo_seconds";
pub const OLDEST_CHANGE_IN_FLIGHT: &str = "backbeat_oldest_change_in_flight_seconds";
pub const UNAVAILABLE_SHARDS: &str = "backbeat_site_unavailable_shards";
pub const REPLAYS: &str = "backbeat_replays_total";
pub const REPLAY_WAITING: &str = "backbeat_replay_waiting_entries";
pub const PARKED: &str = "backbeat_parked_entries";
pub const OLDEST_UNCONSUMED: &str = "backbeat_oldest_unconsumed_entry_age_seconds";
pub const LIFECYCLE_ACTIONS: &str = "backbeat_lifecycle_actions_total";
pub const LIFECYCLE_SCANNED: &str = "backbeat_lifecycle_versions_scanned_total";
pub const LIFECYCLE_PASSES: &str = "backbeat_lifecycle_passes_total";
pub const LIFECYCLE_PASS_SECONDS: &str = "backbeat_lifecycle_pass_seconds";
