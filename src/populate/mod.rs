//! Turns a source bucket's changes into versions to replicate.
//!
//! Owns: the bucket scan, incremental ingestion (`ingest`: a listing compared with what the
//! last pass saw, kept on the node's disk by `ingest_state`), S3 event notification parsing, the bucket's replication rules,
//! a missing-only scan's wait for what is already queued (`settle`), and the changes set
//! aside when they cannot be turned into entries (`aside`).
//! May call: `s3`, `replication` (its `Version` type and the destination check of
//! `--missing-only`), `queue` (the topics entries go to, and the consumer groups' positions),
//! `metrics`, `shard`, `retry`, `time` (an entry's LastModified written out), `failure`
//! (the error of a change parked on the failed topic), `buckets` (which buckets are
//! replicated, and their names at each site).

pub mod aside;
pub mod events;
pub mod ingest;
pub mod ingest_state;
pub mod rules;
pub mod scan;
pub mod settle;
pub mod worker;
