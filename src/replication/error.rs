//! Why a version could not be replicated: the pipeline's step, a kind that decides whether
//! trying again may help, a message, and the underlying error kept as the source.

use std::sync::Arc;

use crate::failure::ErrorRecord;
use crate::s3::error::OpError;

/// The step of the pipeline that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Stage {
    HeadSource,
    GetSource,
    GetSourceTags,
    CheckDestination,
    PutDestination,
    Multipart,
    DeleteDestination,
    Verify,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::HeadSource => "reading the source version's metadata",
            Stage::GetSource => "reading the source version",
            Stage::GetSourceTags => "reading the source version's tags",
            Stage::CheckDestination => "checking the destination",
            Stage::PutDestination => "writing the destination",
            Stage::Multipart => "multipart upload to the destination",
            Stage::DeleteDestination => "writing the delete marker to the destination",
            Stage::Verify => "verifying the destination's checksum",
        })
    }
}

/// What kind of failure: decides whether trying again may help, and names it on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// An S3 request failed: the service's error code (or the client's name for a transport
    /// failure: `Timeout`, `ConnectError` ...), and whether the client judged it retryable.
    Request { code: String, retryable: bool },
    /// The bytes stored differ from the bytes sent (CRC32C or ETag).
    ChecksumMismatch,
    /// A body or part ended early or ran long, or the source's parts do not add up (the
    /// code says which: `IncompleteBody`, `BadLength`, `BadRange`, `InconsistentParts`).
    BadLength(&'static str),
    /// Abandoned: the shard is stopping and its transfers are being cancelled.
    Cancelled,
    /// Not attempted: an earlier version of the same key failed first.
    Blocked,
}

impl ErrorKind {
    /// The code recorded in status events, failed records and summaries.
    pub fn code(&self) -> &str {
        match self {
            ErrorKind::Request { code, .. } => code,
            ErrorKind::ChecksumMismatch => "ChecksumMismatch",
            ErrorKind::BadLength(code) => code,
            ErrorKind::Cancelled => "ShuttingDown",
            ErrorKind::Blocked => "BlockedByEarlierVersion",
        }
    }

    /// True when trying again cannot help (403, 404, a bad request ...).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            ErrorKind::Request {
                retryable: false,
                ..
            }
        )
    }
}

/// A version that could not be replicated (this attempt).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{stage}: {}: {message}", .kind.code())]
pub struct ReplicationError {
    pub stage: Stage,
    pub kind: ErrorKind,
    pub message: String,
    #[source]
    pub source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl ReplicationError {
    pub fn new(stage: Stage, kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            stage,
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// An S3 operation's error at `stage`, kept as the source.
    pub fn op<E>(stage: Stage, e: E) -> Self
    where
        E: OpError + std::error::Error + Send + Sync + 'static,
    {
        let kind = match e.code() {
            "ChecksumMismatch" => ErrorKind::ChecksumMismatch,
            code => ErrorKind::Request {
                code: code.to_string(),
                retryable: e.is_retryable(),
            },
        };
        Self {
            stage,
            kind,
            message: e.to_string(),
            source: Some(Arc::new(e)),
        }
    }

    pub fn code(&self) -> &str {
        self.kind.code()
    }

    pub fn is_permanent(&self) -> bool {
        self.kind.is_permanent()
    }

    pub fn is_retryable(&self) -> bool {
        !self.is_permanent()
    }

    /// The error as recorded everywhere (status events, failed records, summaries).
    pub fn record(&self) -> ErrorRecord {
        ErrorRecord {
            code: self.code().to_string(),
            message: self.to_string(),
            retryable: self.is_retryable(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_name_themselves_and_only_refused_requests_are_permanent() {
        let denied = ErrorKind::Request {
            code: "AccessDenied".into(),
            retryable: false,
        };
        let slow = ErrorKind::Request {
            code: "SlowDown".into(),
            retryable: true,
        };
        assert!(denied.is_permanent() && !slow.is_permanent());
        for (kind, code) in [
            (ErrorKind::ChecksumMismatch, "ChecksumMismatch"),
            (ErrorKind::BadLength("BadRange"), "BadRange"),
            (ErrorKind::Cancelled, "ShuttingDown"),
            (ErrorKind::Blocked, "BlockedByEarlierVersion"),
        ] {
            assert!(!kind.is_permanent(), "{code}");
            assert_eq!(kind.code(), code);
        }
        let e = ReplicationError::new(Stage::Verify, ErrorKind::ChecksumMismatch, "bytes differ");
        assert_eq!(
            e.to_string(),
            "verifying the destination's checksum: ChecksumMismatch: bytes differ"
        );
        let r = e.record();
        assert_eq!((r.code.as_str(), r.retryable), ("ChecksumMismatch", true));
        assert_eq!(r.message, e.to_string());
    }

    #[test]
    fn an_operation_error_is_kept_as_the_source() {
        let io = crate::s3::error::RequestError::Timeout {
            why: "no byte moved for 60 s".into(),
        };
        let e = ReplicationError::op(Stage::GetSource, io);
        assert_eq!(e.code(), "Timeout");
        assert!(e.is_retryable());
        let source = std::error::Error::source(&e).expect("source kept");
        assert_eq!(
            source.to_string(),
            "request timed out: no byte moved for 60 s"
        );
    }
}
