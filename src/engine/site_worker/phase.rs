//! What a site worker is doing, as a state machine with its transitions as methods: pure,
//! so every transition is unit-tested without Kafka.
//!
//! ```text
//!            pause                      revoked
//! Consuming ───────► Paused    Consuming/Paused ──────► Draining ──drained──► (back)
//!     ▲ ◄─────────── │                                                         
//!         resume                 any ──shutdown──► Closing (in-flight entries finish
//!                                                   until the deadline, then abandoned)
//! ```

use std::time::{Duration, Instant};

/// The worker's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Taking entries from the owned partitions.
    Consuming,
    /// The site is paused: its partitions are paused at the consumer; entries in flight
    /// finish, no new one starts.
    Paused,
    /// A rebalance revoked partitions: no new entries until the revoked partitions' entries in
    /// flight finish (or the deadline passes); then they are committed and released.
    Draining {
        revoked: Vec<i32>,
        deadline: Instant,
        /// Whether to go back to `Paused` rather than `Consuming` afterwards.
        paused: bool,
    },
    /// Shutting down: entries in flight finish until the deadline, then are abandoned
    /// uncommitted; positions are committed and the group left.
    Closing { deadline: Instant },
}

/// What the worker must do at the consumer after a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    None,
    PausePartitions,
    ResumePartitions,
}

impl Phase {
    /// Whether new entries may start.
    pub fn takes_entries(&self) -> bool {
        matches!(self, Phase::Consuming)
    }

    /// The control topic says the site should be paused (or not).
    pub fn control(self, want_paused: bool) -> (Phase, Action) {
        match (self, want_paused) {
            (Phase::Consuming, true) => (Phase::Paused, Action::PausePartitions),
            (Phase::Paused, false) => (Phase::Consuming, Action::ResumePartitions),
            (
                Phase::Draining {
                    revoked, deadline, ..
                },
                paused,
            ) => {
                let d = Phase::Draining {
                    revoked,
                    deadline,
                    paused,
                };
                let action = if paused {
                    Action::PausePartitions
                } else {
                    Action::None
                };
                (d, action)
            }
            (other, _) => (other, Action::None),
        }
    }

    /// A rebalance revoked `partitions`; they drain for at most `drain`.
    pub fn revoked(self, partitions: Vec<i32>, now: Instant, drain: Duration) -> Phase {
        match self {
            Phase::Consuming | Phase::Paused => Phase::Draining {
                paused: self == Phase::Paused,
                revoked: partitions,
                deadline: now + drain,
            },
            Phase::Draining {
                mut revoked,
                deadline,
                paused,
            } => {
                revoked.extend(partitions);
                Phase::Draining {
                    revoked,
                    deadline,
                    paused,
                }
            }
            closing @ Phase::Closing { .. } => closing,
        }
    }

    /// The revoked partitions are released.
    pub fn drained(self) -> Phase {
        match self {
            Phase::Draining { paused: true, .. } => Phase::Paused,
            Phase::Draining { paused: false, .. } => Phase::Consuming,
            other => other,
        }
    }

    /// Shutdown was asked: entries in flight have `drain` to finish.
    pub fn shutdown(self, now: Instant, drain: Duration) -> Phase {
        match self {
            closing @ Phase::Closing { .. } => closing,
            _ => Phase::Closing {
                deadline: now + drain,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_secs(30);

    #[test]
    fn pause_and_resume_toggle_the_partitions() {
        let (p, a) = Phase::Consuming.control(true);
        assert_eq!((p.clone(), a), (Phase::Paused, Action::PausePartitions));
        assert!(!p.takes_entries());
        assert_eq!(p.clone().control(true), (Phase::Paused, Action::None));
        let (p, a) = p.control(false);
        assert_eq!((p.clone(), a), (Phase::Consuming, Action::ResumePartitions));
        assert!(p.takes_entries());
        assert_eq!(p.control(false), (Phase::Consuming, Action::None));
    }

    #[test]
    fn a_revocation_drains_then_returns_to_the_phase_it_interrupted() {
        let now = Instant::now();
        let p = Phase::Consuming.revoked(vec![1], now, D);
        assert!(!p.takes_entries());
        assert_eq!(
            p,
            Phase::Draining {
                revoked: vec![1],
                deadline: now + D,
                paused: false
            }
        );
        // A second revocation while draining joins the first, with the first deadline.
        let p = p.revoked(vec![2], now + D, D);
        let Phase::Draining {
            revoked, deadline, ..
        } = &p
        else {
            panic!("{p:?}")
        };
        assert_eq!((revoked.as_slice(), *deadline), (&[1, 2][..], now + D));
        assert_eq!(p.drained(), Phase::Consuming);
        let paused = Phase::Paused.revoked(vec![3], now, D);
        assert_eq!(paused.drained(), Phase::Paused);
    }

    #[test]
    fn a_pause_during_a_drain_is_kept_for_afterwards() {
        let p = Phase::Consuming.revoked(vec![0], Instant::now(), D);
        let (p, a) = p.control(true);
        assert_eq!(a, Action::PausePartitions);
        assert_eq!(p.drained(), Phase::Paused);
        let p = Phase::Paused.revoked(vec![0], Instant::now(), D);
        let (p, _) = p.control(false);
        assert_eq!(p.drained(), Phase::Consuming);
    }

    #[test]
    fn shutdown_wins_and_keeps_its_first_deadline() {
        let now = Instant::now();
        for p in [
            Phase::Consuming,
            Phase::Paused,
            Phase::Consuming.revoked(vec![1], now, D),
        ] {
            let c = p.shutdown(now, D);
            assert_eq!(c, Phase::Closing { deadline: now + D });
            assert!(!c.takes_entries());
            assert_eq!(c.clone().shutdown(now + D, D), c);
            assert_eq!(c.clone().revoked(vec![4], now, D), c);
            assert_eq!(c.clone().control(false).0, c);
            assert_eq!(c.clone().drained(), c);
        }
    }
}
