//! The rise/fall state machine: from a stream of probe results to a health
//! state. Pure: no clock, no I/O, so every rule below is unit-tested exactly.
//!
//! Rules:
//! - A check starts [`HealthState::Unknown`]. Unknown is *not healthy*: a VIP
//!   is never taken, and a weighted check counts as failing, until the check
//!   has proven health with `rise` successes in a row. Failover safety comes
//!   first: a node that just started (or was just reconfigured) must not grab
//!   a VIP, or keep its full priority, for a service it has never seen work.
//!   This costs nothing at start-up in practice, because VRRP waits its
//!   master-down interval (three adverts and more) before taking over, which
//!   is longer than `rise` probes at usual intervals.
//! - Unknown turns Unhealthy on the first failure: `fall` exists to ride out a
//!   blip of a service known to be good, and an unknown one is not; the
//!   operator sees "unhealthy: connection refused" at once instead of
//!   "unknown" for `fall` intervals.
//! - Healthy turns Unhealthy after `fall` failures in a row.
//! - Unknown or Unhealthy turns Healthy after `rise` successes in a row.
//! - Every result resets the opposite counter: only results *in a row* count.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    /// Not proven either way yet. Counts as not healthy.
    Unknown,
    Healthy,
    Unhealthy,
}

impl HealthState {
    /// Only a proven-healthy check lets a VIP be owned at full priority.
    pub fn is_healthy(self) -> bool {
        self == HealthState::Healthy
    }
}

impl fmt::Display for HealthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HealthState::Unknown => "unknown",
            HealthState::Healthy => "healthy",
            HealthState::Unhealthy => "unhealthy",
        })
    }
}

/// A change of state caused by one result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: HealthState,
    pub to: HealthState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RiseFall {
    rise: u32,
    fall: u32,
    state: HealthState,
    successes: u32,
    failures: u32,
}

impl RiseFall {
    /// `rise` and `fall` below 1 are treated as 1 (config validation rejects
    /// them; this keeps the machine total anyway).
    pub fn new(rise: u32, fall: u32) -> Self {
        Self {
            rise: rise.max(1),
            fall: fall.max(1),
            state: HealthState::Unknown,
            successes: 0,
            failures: 0,
        }
    }

    pub fn state(&self) -> HealthState {
        self.state
    }

    /// Successes in a row up to now (0 after any failure).
    pub fn consecutive_successes(&self) -> u32 {
        self.successes
    }

    /// Failures in a row up to now (0 after any success).
    pub fn consecutive_failures(&self) -> u32 {
        self.failures
    }

    /// Feeds one probe result; returns the transition it caused, if any.
    pub fn record(&mut self, success: bool) -> Option<Transition> {
        let from = self.state;
        if success {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if from != HealthState::Healthy && self.successes >= self.rise {
                self.state = HealthState::Healthy;
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            let turns_unhealthy = match from {
                HealthState::Unknown => true,
                HealthState::Healthy => self.failures >= self.fall,
                HealthState::Unhealthy => false,
            };
            if turns_unhealthy {
                self.state = HealthState::Unhealthy;
            }
        }
        (self.state != from).then_some(Transition {
            from,
            to: self.state,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{HealthState::*, *};

    /// Feeds `results` ('+' success, '-' failure) and returns the state after
    /// each one plus every transition, so a test reads like a timeline.
    fn run(rise: u32, fall: u32, results: &str) -> (Vec<HealthState>, Vec<(usize, Transition)>) {
        let mut m = RiseFall::new(rise, fall);
        let mut states = Vec::new();
        let mut transitions = Vec::new();
        for (i, c) in results.chars().enumerate() {
            let success = match c {
                '+' => true,
                '-' => false,
                other => panic!("bad result {other:?} in {results:?}"),
            };
            if let Some(t) = m.record(success) {
                assert_eq!(t.to, m.state(), "transition target must be the new state");
                transitions.push((i, t));
            }
            states.push(m.state());
        }
        (states, transitions)
    }

    fn t(from: HealthState, to: HealthState) -> Transition {
        Transition { from, to }
    }

    #[test]
    fn starts_unknown_and_not_healthy() {
        let m = RiseFall::new(2, 3);
        assert_eq!(m.state(), Unknown);
        assert!(!m.state().is_healthy());
        assert_eq!(
            (m.consecutive_successes(), m.consecutive_failures()),
            (0, 0)
        );
    }

    #[test]
    fn rise_successes_make_it_healthy() {
        let (states, trans) = run(2, 3, "++");
        assert_eq!(states, [Unknown, Healthy]);
        assert_eq!(trans, [(1, t(Unknown, Healthy))]);
    }

    #[test]
    fn rise_of_one_is_immediate() {
        let (states, trans) = run(1, 1, "+-+");
        assert_eq!(states, [Healthy, Unhealthy, Healthy]);
        assert_eq!(
            trans.len(),
            3,
            "every result flips with rise = fall = 1: {trans:?}"
        );
    }

    #[test]
    fn first_failure_of_an_unknown_check_is_unhealthy() {
        let (states, trans) = run(2, 3, "-");
        assert_eq!(states, [Unhealthy]);
        assert_eq!(trans, [(0, t(Unknown, Unhealthy))]);
    }

    #[test]
    fn healthy_needs_fall_failures_in_a_row() {
        let (states, trans) = run(2, 3, "++--+---");
        assert_eq!(
            states,
            [
                Unknown, Healthy, Healthy, Healthy, Healthy, Healthy, Healthy, Unhealthy
            ],
            "two failures then a success must reset the failure count"
        );
        assert_eq!(
            trans,
            [(1, t(Unknown, Healthy)), (7, t(Healthy, Unhealthy))]
        );
    }

    #[test]
    fn unhealthy_needs_rise_successes_in_a_row() {
        let (states, trans) = run(3, 1, "-++-+++");
        assert_eq!(
            states,
            [
                Unhealthy, Unhealthy, Unhealthy, Unhealthy, Unhealthy, Unhealthy, Healthy
            ]
        );
        assert_eq!(
            trans,
            [(0, t(Unknown, Unhealthy)), (6, t(Unhealthy, Healthy))]
        );
    }

    #[test]
    fn steady_results_cause_no_transitions() {
        let (_, trans) = run(2, 2, "++++++++");
        assert_eq!(trans, [(1, t(Unknown, Healthy))]);
        let (_, trans) = run(2, 2, "--------");
        assert_eq!(trans, [(0, t(Unknown, Unhealthy))]);
    }

    #[test]
    fn counters_count_in_a_row_and_reset() {
        let mut m = RiseFall::new(5, 5);
        m.record(true);
        m.record(true);
        assert_eq!(
            (m.consecutive_successes(), m.consecutive_failures()),
            (2, 0)
        );
        m.record(false);
        assert_eq!(
            (m.consecutive_successes(), m.consecutive_failures()),
            (0, 1)
        );
        m.record(false);
        assert_eq!(
            (m.consecutive_successes(), m.consecutive_failures()),
            (0, 2)
        );
    }

    #[test]
    fn zero_rise_or_fall_behaves_as_one() {
        let (states, _) = run(0, 0, "+-");
        assert_eq!(states, [Healthy, Unhealthy]);
    }

    #[test]
    fn flapping_below_thresholds_never_transitions_once_healthy() {
        let (states, trans) = run(3, 3, "+++-+-+--+--+");
        assert!(states[2..].iter().all(|s| *s == Healthy), "{states:?}");
        assert_eq!(trans, [(2, t(Unknown, Healthy))]);
    }
}
