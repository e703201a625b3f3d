//! What lifecycle's topics carry (JSON, `"v": 1`): bucket tasks (a pass over a bucket,
//! with where its listing resumes), object tasks (one action each), and the state of each
//! bucket's latest pass (a compacted topic keyed by bucket). A record that does not decode
//! yields the reason, never a guess.

use serde::{Deserialize, Serialize};

use super::eval::Action;

/// Which part of a bucket a pass is listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Versions,
    Uploads,
}

/// One step of a pass over a bucket: list from `after` (a key; none: the start), produce
/// the actions, then the next step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketTask {
    pub v: u32,
    pub bucket: String,
    /// The pass's id (its start time and a random suffix).
    pub pass: String,
    pub phase: Phase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// This step's number in its pass (0 first): a step delivered twice, or produced twice
    /// by a step done again after a crash, is recognized by it and dropped.
    #[serde(default)]
    pub step: u64,
    /// Keys listed and actions produced by the pass's earlier steps.
    #[serde(default)]
    pub keys: u64,
    #[serde(default)]
    pub actions: u64,
}

/// One action of a pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectTask {
    pub v: u32,
    pub pass: String,
    pub action: Action,
}

/// A bucket's latest pass.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PassState {
    pub pass: String,
    pub running: bool,
    /// When it started (RFC 3339).
    pub started: String,
    /// When it last moved on (a page listed) or finished (RFC 3339).
    pub at: String,
    #[serde(default)]
    pub keys: u64,
    #[serde(default)]
    pub actions: u64,
    /// The number of the step the pass expects next.
    #[serde(default)]
    pub step: u64,
    /// Why a pass ended before its last step (its step failed for good).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn decode<T: serde::de::DeserializeOwned>(payload: &[u8], what: &str) -> Result<T, String> {
    let v: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| format!("not JSON: {e}"))?;
    match v.get("v").and_then(|v| v.as_u64()) {
        Some(1) => {}
        other => return Err(format!("{what} of unknown version {other:?}")),
    }
    serde_json::from_value(v).map_err(|e| format!("not a valid {what}: {e}"))
}

impl BucketTask {
    pub fn decode(payload: &[u8]) -> Result<Self, String> {
        decode(payload, "bucket task")
    }
}

impl ObjectTask {
    pub fn decode(payload: &[u8]) -> Result<Self, String> {
        decode(payload, "object task")
    }
}

impl PassState {
    pub fn decode(payload: &[u8]) -> Option<Self> {
        serde_json::from_slice(payload).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::eval::Kind;

    #[test]
    fn tasks_round_trip_and_bad_ones_say_why() {
        let t = BucketTask {
            v: 1,
            bucket: "b".into(),
            pass: "p1".into(),
            phase: Phase::Versions,
            after: Some("k".into()),
            step: 2,
            keys: 3,
            actions: 1,
        };
        let json = serde_json::to_vec(&t).unwrap();
        assert_eq!(BucketTask::decode(&json).unwrap(), t);
        let o = ObjectTask {
            v: 1,
            pass: "p1".into(),
            action: Action {
                bucket: "b".into(),
                key: "k".into(),
                version_id: "v".into(),
                etag: "\"e\"".into(),
                last_modified: "2026-01-01T00:00:00Z".into(),
                size: 0,
                kind: Kind::AbortUpload {
                    upload_id: "u".into(),
                },
                rule: "r".into(),
            },
        };
        let json = serde_json::to_vec(&o).unwrap();
        assert!(String::from_utf8_lossy(&json).contains("\"action\":\"abort_upload\""));
        assert_eq!(ObjectTask::decode(&json).unwrap(), o);
        assert!(BucketTask::decode(b"{").unwrap_err().contains("not JSON"));
        assert!(BucketTask::decode(br#"{"v":2}"#)
            .unwrap_err()
            .contains("unknown version"));
        assert!(ObjectTask::decode(br#"{"v":1,"pass":"p"}"#)
            .unwrap_err()
            .contains("not a valid object task"));
    }
}
