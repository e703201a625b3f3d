//! Kafka: rdkafka on glommio (`kafka`), the message codecs, the per-partition offset ledger,
//! the control topic, consumer groups' lag (`lag`), delayed replay (`replayer`, and the
//! keys' waiting lines behind replayed items, `lines`), the buckets topic's records
//! (`buckets`), transient sources' aggregation of statuses and garbage-collection records
//! (`transient`), and the embedded broker's backpressure.
//! What consumes the replication topic (the site worker) lives in `engine`.
//!
//! Owns: the replication entry and status event formats, which offsets may be committed,
//! and when a replayed record is due. May call: `shard` (shutdown signal), `retry`, `s3`
//! (only the CRC32C text form, to validate an entry's checksum), `failure` (errors in
//! status events), `time` (resume times of control records); nothing of S3
//! requests or of replication.

pub mod backpressure;
pub mod buckets;
pub mod codec;
pub mod control;
pub mod kafka;
pub mod lag;
pub mod ledger;
pub mod lines;
pub mod replayer;
pub mod signing;
pub mod transient;
