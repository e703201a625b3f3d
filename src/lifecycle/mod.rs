//! Object lifecycle: a bucket's lifecycle rules, what they decide for its versions and
//! incomplete uploads, and a pass that carries that out safely.
//!
//! Owns: the `LifecycleConfiguration` document and its validation (`rules`), the evaluation
//! of the rules for one key's versions or one upload at a given time (`eval`), the bucket
//! listed a key at a time (`listing`), and one pass over a bucket with its checks before
//! each action (`pass`; whether versions reached their sites is asked of a `Guard` the
//! caller gives).
//! May call: `s3` (listing, HEAD, tags, deletes, uploads), `time` (dates in rules and
//! listings).

pub mod eval;
pub mod listing;
pub mod pass;
pub mod rules;
pub mod tasks;
