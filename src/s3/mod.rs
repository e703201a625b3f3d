//! Our S3 client: requests signed with SigV4 (never hashing payloads), sent with hyper 1.x
//! over glommio sockets and rustls, with a connection pool per endpoint per shard.
//!
//! Owns: HTTP (connections, pool, request and response bodies: `http`; progress-based
//! timeouts: `progress`), signing, checksums, the data path's pipe (`body`) and one file per
//! operation. `error` is a leaf every other
//! file may use; `http` knows nothing of the pipe, which only feeds it a body.
//! May call: `time` (UTC calendar fields), `bandwidth` (the pipe waits for its shard's share
//! of a limit). It knows nothing of Kafka, replication or metrics;
//! callers observe requests through a telemetry callback.

pub mod body;
pub mod checksum;
pub mod client;
pub mod customer_key;
pub mod error;
pub mod http;
pub mod mem;
pub mod ops;
pub mod progress;
pub mod signing;
pub mod store;

pub use client::{
    check_url, redact_url, ChecksumTransport, Client, Endpoint, EndpointConfig, EndpointError,
};
pub use error::RequestError;
pub use signing::Credentials;
