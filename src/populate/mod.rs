//! Turns a source bucket's contents (and later its change events) into versions to
//! replicate.
//!
//! Owns: the bucket scan. May call: `s3`, `replication` (its `Version` type), `shard`.

pub mod scan;
