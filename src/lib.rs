//! backbeat: asynchronous S3 replication, a thread-per-core io_uring data mover.

pub mod api;
pub mod bandwidth;
pub mod buckets;
pub mod config;
pub mod engine;
pub mod failure;
pub mod lifecycle;
pub mod metrics;
pub mod populate;
pub mod queue;
pub mod replication;
pub mod retry;
pub mod s3;
pub mod shard;
pub mod sync;
pub mod time;
