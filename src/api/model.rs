//! The API's documents, defined once for the server that writes them and the command line
//! that reads them. Their JSON is Backbeat's (docs/operations.md): field names are renamed
//! where Backbeat's differ from Rust's, and fields are declared in the order the server has
//! always written them (alphabetical), so the bytes on the wire do not change.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::failure::ErrorRecord;

/// `{"error": ...}` (and the source's error code for the progress route).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    pub error: String,
}

impl ErrorBody {
    pub fn new(error: impl Into<String>) -> Self {
        ErrorBody {
            code: None,
            error: error.into(),
        }
    }
}

/// `/_/live` and `/_/ready`: `{"status": "ok"|"starting"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    pub status: String,
}

/// `/_/healthcheck`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub endpoints: BTreeMap<String, EndpointHealth>,
    pub kafka: KafkaHealth,
    /// `ok` or `degraded`.
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KafkaHealth {
    /// How many brokers the cluster's metadata names.
    pub brokers: Option<usize>,
    pub error: Option<String>,
    pub ok: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointHealth {
    pub bucket: String,
    pub endpoint: String,
    pub error: Option<String>,
    pub ok: bool,
}

/// A count and a size, as Backbeat's metric routes give them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results<T> {
    pub count: T,
    pub size: T,
}

/// One of Backbeat's metric families.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Family<T> {
    pub description: String,
    /// Why the value is incomplete (the backlog when Kafka does not answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub results: Results<T>,
}

/// `/_/metrics/crr/{site|all}/{metric}`: the families asked for (all with `all`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog: Option<Family<u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completions: Option<Family<u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failures: Option<Family<u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Family<u64>>,
    /// Per second, as Backbeat writes it: a decimal in a string (`"0.25"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput: Option<Family<String>>,
    /// The site's bandwidth limit on the node that answers (absent: none configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<Bandwidth>,
}

/// A site's bandwidth limit on one node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bandwidth {
    /// As configured (a rate, or a weekly timetable).
    pub configured: String,
    /// In force now, bytes per second (absent: no limit now).
    pub bytes_per_second: Option<u64>,
}

/// The metric names `/_/metrics/crr/{site}/{metric}` answers.
pub const METRICS: [&str; 6] = [
    "backlog",
    "completions",
    "failures",
    "throughput",
    "pending",
    "all",
];

/// A site's replication state, in `/_/crr/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SiteState {
    Enabled,
    Disabled,
}

/// `/_/crr/status[/{site}]`: each site's state.
pub type Status = BTreeMap<String, SiteState>;

/// `GET /_/crr/resume[/{site}]`: each site's scheduled resume, an RFC 3339 time or `none`.
pub type Schedules = BTreeMap<String, String>;

/// The answer to a pause, resume or cancelled schedule: `{}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Done {}

/// `POST /_/crr/resume/{site}/schedule`'s body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleRequest {
    /// Hours from now; 6 when not given (Backbeat's default).
    #[serde(default = "default_hours")]
    pub hours: f64,
}

fn default_hours() -> f64 {
    6.0
}

/// `POST /_/crr/resume/{site}/schedule`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scheduled {
    #[serde(rename = "scheduledResume")]
    pub scheduled_resume: String,
}

/// One failed entry as Backbeat lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FailedItem {
    pub bucket: String,
    pub error: Option<ErrorRecord>,
    pub failed_at: String,
    pub key: String,
    pub last_modified: Option<String>,
    pub size: u64,
    /// `PENDING` in the answer to a retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The site.
    pub storage_class: String,
    pub version_id: String,
}

/// A page of failed entries (`GET /_/crr/failed`, `GET /_/crr/failed/{bucket}/{key}/{vid}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FailedPage {
    pub is_truncated: bool,
    /// The marker for the next page, when truncated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
    pub versions: Vec<FailedItem>,
}

/// One entry of `POST /_/crr/failed`'s list: which failed entry to retry (a listed
/// [`FailedItem`] serves as one: its other fields are ignored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RetryRequest {
    #[serde(default)]
    pub bucket: String,
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub version_id: String,
    /// The site.
    #[serde(default)]
    pub storage_class: String,
}

impl From<&FailedItem> for RetryRequest {
    fn from(i: &FailedItem) -> Self {
        RetryRequest {
            bucket: i.bucket.clone(),
            key: i.key.clone(),
            version_id: i.version_id.clone(),
            storage_class: i.storage_class.clone(),
        }
    }
}

/// Where a version is, in the progress route's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProgressState {
    InProgress,
    Completed,
    Failed,
    Pending,
}

/// `/_/metrics/crr/{site}/progress/{bucket}/{key}?versionId=`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub completed: u64,
    pub description: String,
    pub pending: u64,
    /// A percentage: `"25%"`.
    pub progress: String,
    pub state: ProgressState,
    #[serde(rename = "versionId")]
    pub version_id: String,
}

const PROGRESS_DESCRIPTION: &str = "Number of bytes to be replicated (pending), number of bytes transferred to the destination (completed), and percentage of the object that has completed replication (progress)";

impl Progress {
    /// `done` of `size` bytes at the destination (an empty object is 100% once COMPLETED).
    pub fn new(state: ProgressState, size: u64, done: u64, version_id: &str) -> Self {
        let done = done.min(size);
        let complete = if state == ProgressState::Completed {
            100
        } else {
            0
        };
        let pct = (done * 100).checked_div(size).unwrap_or(complete);
        Progress {
            completed: done,
            description: PROGRESS_DESCRIPTION.into(),
            pending: size - done,
            progress: format!("{pct}%"),
            state,
            version_id: version_id.into(),
        }
    }
}

/// `backbeat status --json`: each site's state and metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub metrics: BTreeMap<String, Metrics>,
    pub status: Status,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_keep_backbeats_bytes() {
        let p = Progress::new(ProgressState::InProgress, 40, 10, "v1");
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            format!("{{\"completed\":10,\"description\":\"{PROGRESS_DESCRIPTION}\",\"pending\":30,\"progress\":\"25%\",\"state\":\"IN_PROGRESS\",\"versionId\":\"v1\"}}")
        );
        assert_eq!(
            Progress::new(ProgressState::Completed, 0, 0, "v").progress,
            "100%"
        );
        let m = Metrics {
            completions: Some(Family {
                description: "d".into(),
                error: None,
                results: Results { count: 3, size: 9 },
            }),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"completions":{"description":"d","results":{"count":3,"size":9}}}"#
        );
        let page = FailedPage {
            is_truncated: false,
            next_marker: None,
            versions: vec![FailedItem {
                bucket: "b".into(),
                error: None,
                failed_at: "t".into(),
                key: "k".into(),
                last_modified: None,
                size: 1,
                status: None,
                storage_class: "s".into(),
                version_id: "v".into(),
            }],
        };
        assert_eq!(
            serde_json::to_string(&page).unwrap(),
            r#"{"IsTruncated":false,"Versions":[{"Bucket":"b","Error":null,"FailedAt":"t","Key":"k","LastModified":null,"Size":1,"StorageClass":"s","VersionId":"v"}]}"#
        );
        assert_eq!(serde_json::to_string(&Done {}).unwrap(), "{}");
        let s: Status = serde_json::from_str(r#"{"a":"enabled","b":"disabled"}"#).unwrap();
        assert_eq!(s["b"], SiteState::Disabled);
        let r: ScheduleRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(r.hours, 6.0);
    }
}

/// `/_/buckets`: the selected source buckets this node knows to exist, and for each its
/// site buckets, each site's figures for it, and what discovery did with it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Buckets {
    pub adopted: u64,
    pub adoption_failures: u64,
    pub buckets: BTreeMap<String, BucketDoc>,
    pub known: u64,
}

/// One source bucket in `/_/buckets`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BucketDoc {
    /// Set when this node adopted it (or tried to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adoption: Option<AdoptionDoc>,
    pub sites: BTreeMap<String, BucketAtSite>,
}

/// What discovery did with a bucket on this node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AdoptionDoc {
    pub created: u64,
    pub enqueued: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A source bucket at one site: the site's bucket and this node's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BucketAtSite {
    pub bucket: String,
    pub bytes: u64,
    pub completed: u64,
    pub failed: u64,
}

/// `/_/ingestion/status[/{bucket}]`: whether this node runs ingestion, and each ingested
/// bucket's state (`enabled` or `disabled`, as Backbeat says) with its pass's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ingestion {
    pub buckets: BTreeMap<String, IngestionBucket>,
    /// This node holds ingestion's partition (runs the passes; the others show none).
    pub leader: bool,
}

/// One bucket in `/_/ingestion/status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IngestionBucket {
    /// `enabled` or `disabled` (paused).
    pub control: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass: Option<crate::metrics::ingest::BucketIngest>,
}
