//! Turns a source bucket's changes into versions to replicate.
//!
//! Owns: the bucket scan, S3 event notification parsing, and the bucket's replication rules.
//! May call: `s3`, `replication` (its `Version` type), `shard`.

pub mod events;
pub mod rules;
pub mod scan;
pub mod worker;
