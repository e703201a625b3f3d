//! The consumer group's side of a site worker: the rebalance callback, which librdkafka
//! calls from its own thread. An assignment is applied at once (paused when the site is);
//! a revocation is only noted for the worker, which drains, commits and releases.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use rdkafka::consumer::{Consumer as _, ConsumerContext};
use rdkafka::{ClientContext, TopicPartitionList};

/// Rebalance as a small state machine. An assignment is applied at once. A revocation is
/// only noted: the worker loop stops taking entries, lets those in flight finish (up to the
/// drain deadline), commits the revoked partitions synchronously, and then releases them with
/// `unassign` (librdkafka waits for that call before the group moves on). While closing, a
/// revocation is applied at once.
#[derive(Default, Clone)]
pub struct RebalanceNotes {
    revoked: Arc<Mutex<Option<Vec<i32>>>>,
    pub(super) closing: Arc<AtomicBool>,
    /// Partitions this shard owns now (summed into the site's gauge).
    pub(super) owned: Arc<AtomicI64>,
    /// The site is paused: partitions are paused as soon as they are assigned.
    pub(super) paused: Arc<AtomicBool>,
}

impl RebalanceNotes {
    pub(super) fn take_revoked(&self) -> Option<Vec<i32>> {
        self.revoked.lock().expect("rebalance notes").take()
    }
}

impl ClientContext for RebalanceNotes {}

impl ConsumerContext for RebalanceNotes {
    fn rebalance(
        &self,
        base: &rdkafka::consumer::BaseConsumer<Self>,
        err: rdkafka::types::RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        use rdkafka::types::RDKafkaRespErr as E;
        let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        match err {
            E::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                tracing::info!(partitions = ?parts, "partitions assigned");
                if let Err(e) = base.assign(tpl) {
                    tracing::error!(error = %e, "assign failed");
                } else {
                    self.owned.store(parts.len() as i64, Ordering::Relaxed);
                    if self.paused.load(Ordering::SeqCst) {
                        if let Err(e) = base.pause(tpl) {
                            tracing::warn!(error = %e, "cannot pause newly assigned partitions");
                        }
                    }
                }
            }
            E::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS if !self.closing.load(Ordering::SeqCst) => {
                tracing::info!(partitions = ?parts, "partitions revoked: draining");
                self.revoked
                    .lock()
                    .expect("rebalance notes")
                    .get_or_insert_with(Vec::new)
                    .extend(parts);
            }
            _ => {
                if err != E::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS {
                    tracing::warn!(?err, "rebalance error");
                }
                let _ = base.unassign();
            }
        }
    }

    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        _offsets: &TopicPartitionList,
    ) {
        if let Err(e) = result {
            tracing::warn!(error = %e, "offset commit failed");
        }
    }
}
