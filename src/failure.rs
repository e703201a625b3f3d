//! How a failure is told wherever it is recorded: in status events and failed records on
//! Kafka, in the run's failure list (the `sync` summary, `--json`), and by the API. One
//! form, so the worker, the metrics and the status codec need no conversions of their own.
//!
//! May call: nothing else in the crate.

use serde::{Deserialize, Serialize};

/// An error as recorded: its code (an S3 error code, or one of the engine's own such as
/// `ChecksumMismatch` or `BlockedByEarlierVersion`), a message for people, and whether
/// trying again later may succeed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorRecord {
    pub code: String,
    pub message: String,
    pub retryable: bool,
}
