//! Kafka-facing pieces of replication: the message codecs and the per-partition offset
//! ledger. (The rdkafka producer and consumers come with the Kafka-based engine.)
//!
//! Owns: the replication entry and status event formats, and which offsets may be
//! committed. May call: nothing else in the crate (the S3 client knows nothing of Kafka, and
//! this module knows nothing of S3).

pub mod backpressure;
pub mod codec;
pub mod control;
pub mod kafka;
pub mod ledger;
