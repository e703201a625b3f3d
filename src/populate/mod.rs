//! Turns a source bucket's changes into versions to replicate.
//!
//! Owns: the bucket scan, S3 event notification parsing, the bucket's replication rules,
//! and a missing-only scan's wait for what is already queued (`settle`).
//! May call: `s3`, `replication` (its `Version` type and the destination check of
//! `--missing-only`), `queue` (the topics entries go to, and the consumer groups' positions),
//! `metrics`, `shard`, `retry`, `time` (an entry's LastModified written out).

pub mod events;
pub mod rules;
pub mod scan;
pub mod settle;
pub mod worker;
