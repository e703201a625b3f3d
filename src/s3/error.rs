//! Errors shared by every S3 operation: transport failures, service errors parsed from the
//! XML body, and integrity failures, each classified retryable or permanent.

/// What a whole-request deadline overrun's message names (`progress` writes it), so that
/// it is told from a silent peer.
pub(crate) const DEADLINE: &str = "request_deadline_seconds";

/// An S3 request that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("cannot connect to {endpoint}: {message}")]
    Connect { endpoint: String, message: String },
    #[error("TLS handshake with {endpoint} failed: {message} (check the endpoint's CA file)")]
    Tls { endpoint: String, message: String },
    /// The connection failed mid-request; `message` spells out the causes, `source` keeps
    /// the error itself.
    #[error("connection error: {message}")]
    Io {
        message: String,
        #[source]
        source: Option<std::sync::Arc<dyn std::error::Error + Send + Sync>>,
    },
    /// No progress (see `progress`): `why` says which bound was passed.
    #[error("request timed out: {why}")]
    Timeout { why: String },
    #[error("{status} {code}: {message}")]
    Service {
        status: u16,
        code: String,
        message: String,
        request_id: String,
    },
    #[error("CRC32C mismatch: expected {expected}, got {actual}")]
    ChecksumMismatch { expected: String, actual: String },
    #[error("source body error: {0}")]
    Body(String),
    #[error("unexpected response: {0}")]
    BadResponse(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

impl RequestError {
    /// True when trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            RequestError::Connect { .. }
            | RequestError::Io { .. }
            | RequestError::Timeout { .. }
            | RequestError::ChecksumMismatch { .. }
            | RequestError::Body(_) => true,
            RequestError::Tls { .. }
            | RequestError::BadResponse(_)
            | RequestError::InvalidRequest(_) => false,
            RequestError::Service { status, code, .. } => {
                *status >= 500
                    || *status == 429
                    || *status == 408
                    || matches!(
                        code.as_str(),
                        "SlowDown"
                            | "RequestTimeout"
                            | "InternalError"
                            | "ServiceUnavailable"
                            | "Throttling"
                            | "ThrottlingException"
                            | "RequestTimeTooSkewed"
                            | "BadDigest"
                            | "XAmzContentChecksumMismatch"
                            | "InvalidChecksum"
                    )
            }
        }
    }

    /// The HTTP status of a service error.
    pub fn status(&self) -> Option<u16> {
        match self {
            RequestError::Service { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The S3 error code of a service error, or a name for the other kinds.
    pub fn code(&self) -> &str {
        match self {
            RequestError::Service { code, .. } => code,
            RequestError::Connect { .. } => "ConnectError",
            RequestError::Tls { .. } => "TlsError",
            RequestError::Io { .. } => "ConnectionError",
            // A deadline overrun is not the endpoint going silent (not an outage).
            RequestError::Timeout { why } if why.contains(DEADLINE) => "RequestDeadline",
            RequestError::Timeout { .. } => "Timeout",
            RequestError::ChecksumMismatch { .. } => "ChecksumMismatch",
            RequestError::Body(_) => "SourceBodyError",
            RequestError::BadResponse(_) => "BadResponse",
            RequestError::InvalidRequest(_) => "InvalidRequest",
        }
    }

    /// Builds a service error from a status and an S3 XML error body (which may be empty,
    /// as for HEAD).
    pub fn from_response(status: u16, body: &[u8], request_id: &str) -> Self {
        let (code, message) = parse_error_xml(body).unwrap_or_else(|| {
            let code = match status {
                301 => "PermanentRedirect",
                400 => "BadRequest",
                403 => "AccessDenied",
                404 => "NotFound",
                405 => "MethodNotAllowed",
                409 => "Conflict",
                412 => "PreconditionFailed",
                416 => "InvalidRange",
                500 => "InternalError",
                501 => "NotImplemented",
                503 => "ServiceUnavailable",
                _ => "Unknown",
            };
            (code.to_string(), String::new())
        });
        RequestError::Service {
            status,
            code,
            message,
            request_id: request_id.to_string(),
        }
    }
}

/// An S3 error document: `<Error><Code>..</Code><Message>..</Message></Error>`, or the same
/// `<Error>` wrapped in another element (`<ErrorResponse>`, as some servers answer).
#[derive(serde::Deserialize)]
struct ErrorDocument {
    #[serde(rename = "Code", default)]
    code: Option<String>,
    #[serde(rename = "Message", default)]
    message: Option<String>,
    #[serde(rename = "Error", default)]
    error: Option<Box<ErrorDocument>>,
}

/// Extracts `<Code>` and `<Message>` from an S3 `<Error>` document; `None` when the body is
/// empty, not XML, or has no code.
pub fn parse_error_xml(body: &[u8]) -> Option<(String, String)> {
    if body.is_empty() {
        return None;
    }
    let text = std::str::from_utf8(body).ok()?;
    let mut doc: ErrorDocument = quick_xml::de::from_str(text).ok()?;
    loop {
        match doc.code.filter(|c| !c.is_empty()) {
            Some(code) => return Some((code, doc.message.unwrap_or_default())),
            None => doc = *doc.error?,
        }
    }
}

/// Why a request body could not be produced.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BodyError {
    #[error("reading the source failed: {message}")]
    Source { message: String, retryable: bool },
    #[error("source body ended after {got} of {expected} bytes")]
    Short { got: u64, expected: u64 },
    #[error("source body is longer than the {expected} bytes announced")]
    Long { expected: u64 },
    #[error("CRC32C of the bytes read ({actual}) differs from the source's ({expected})")]
    Checksum { expected: String, actual: String },
    /// The transfer was abandoned (its task stopped) before the body was sent.
    #[error("the transfer was abandoned before its body was sent")]
    Abandoned,
}

impl BodyError {
    pub fn to_request_error(&self) -> RequestError {
        match self {
            BodyError::Checksum { expected, actual } => RequestError::ChecksumMismatch {
                expected: format!("{expected} (stored by the source)"),
                actual: format!("{actual} (computed over the bytes read from it)"),
            },
            BodyError::Source {
                message,
                retryable: false,
            } => RequestError::BadResponse(message.clone()),
            other => RequestError::Body(other.to_string()),
        }
    }
}

/// What every operation's error can say about itself.
pub trait OpError: std::fmt::Display {
    fn is_retryable(&self) -> bool;
    fn code(&self) -> &str;
}

impl OpError for RequestError {
    fn is_retryable(&self) -> bool {
        RequestError::is_retryable(self)
    }
    fn code(&self) -> &str {
        RequestError::code(self)
    }
}

/// Declares an operation's error enum: its own variants plus a transparent
/// [`RequestError`], with `is_retryable()` and `code()`.
macro_rules! op_error {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident $({ $($f:ident : $t:ty),* })? => $retry:expr, $code:expr;)* }) => {
        $(#[$m])*
        #[derive(Debug, thiserror::Error)]
        pub enum $name {
            $($(#[$vm])* $variant $({ $($f: $t),* })?,)*
            #[error(transparent)]
            Request(#[from] $crate::s3::error::RequestError),
        }
        impl $crate::s3::error::OpError for $name {
            fn is_retryable(&self) -> bool {
                $name::is_retryable(self)
            }
            fn code(&self) -> &str {
                $name::code(self)
            }
        }
        impl $name {
            /// True when trying again later may succeed.
            pub fn is_retryable(&self) -> bool {
                match self {
                    $(Self::$variant { .. } => $retry,)*
                    Self::Request(e) => e.is_retryable(),
                }
            }
            /// A stable name for the failure (the S3 code for service errors).
            pub fn code(&self) -> &str {
                match self {
                    $(Self::$variant { .. } => $code,)*
                    Self::Request(e) => e.code(),
                }
            }
        }
    };
}
pub(crate) use op_error;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_error_body() {
        let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message><Key>a&amp;b</Key></Error>"#;
        let e = RequestError::from_response(404, body, "r1");
        assert_eq!(e.code(), "NoSuchKey");
        assert!(!e.is_retryable());
        assert!(e.to_string().contains("does not exist"));
    }

    #[test]
    fn error_documents() {
        let wrapped = b"<ErrorResponse><Error><Code>SlowDown</Code><Message>m</Message></Error></ErrorResponse>";
        assert_eq!(
            parse_error_xml(wrapped),
            Some(("SlowDown".to_string(), "m".to_string()))
        );
        let no_message = b"<Error><Code>NoSuchUpload</Code><UploadId>u</UploadId></Error>";
        assert_eq!(
            parse_error_xml(no_message),
            Some(("NoSuchUpload".to_string(), String::new()))
        );
        let result =
            b"<CompleteMultipartUploadResult><ETag>e</ETag></CompleteMultipartUploadResult>";
        for body in [
            &result[..],
            b"<Error><Code></Code></Error>",
            b"<html><body>502 Bad Gateway</body></html>",
            b"Bad Gateway",
            b"<Error><Code>x",
            b"\xff",
            b"",
        ] {
            assert_eq!(
                parse_error_xml(body),
                None,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(
            RequestError::from_response(502, b"<html>", "").code(),
            "Unknown"
        );
    }

    #[test]
    fn classifies() {
        assert!(
            RequestError::from_response(503, b"<Error><Code>SlowDown</Code></Error>", "")
                .is_retryable()
        );
        assert!(RequestError::from_response(500, b"", "").is_retryable());
        assert!(!RequestError::from_response(403, b"", "").is_retryable());
        assert_eq!(
            RequestError::from_response(403, b"", "").code(),
            "AccessDenied"
        );
        assert!(!RequestError::from_response(400, b"", "").is_retryable());
        assert!(RequestError::ChecksumMismatch {
            expected: "a".into(),
            actual: "b".into()
        }
        .is_retryable());
    }
}
