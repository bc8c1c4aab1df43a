//! Health checks: is the service behind a VIP, or a backend of a balanced
//! VIP, working?
//!
//! Parts, in the order a check passes through them:
//!
//! - [`config`]: what an operator writes (`[[vip.check]]`,
//!   `[[vip.backend.check]]`) and its validation.
//! - [`HealthChecker`] ([`scheduler`]): one tokio task per distinct probe
//!   (identical checks share one), probing on a fixed cadence; add, remove and replace checks at run time with
//!   [`HealthChecker::sync`].
//! - The probes: [`http`] (HTTP/1.1 GET, a fresh connection each time unless
//!   `reuse_connection`), [`tcp`]
//!   (connect), [`icmp`] (echo on a shared raw socket, replies matched by
//!   address, identifier, sequence and a payload token), [`exec`] (a program,
//!   no shell, killed with its process group at the timeout).
//! - [`rise_fall`]: the pure state machine from results to health. Checks
//!   start [`HealthState::Unknown`], which counts as *not healthy* until
//!   `rise` successes in a row prove otherwise (failover safety first; see
//!   that module).
//!
//! What the engine hands out:
//!
//! - a [`HealthEvent`] on the channel given to [`HealthChecker::new`] for
//!   every transition of a check's state, with the result that caused it;
//! - a [`StatusBoard`] with a [`CheckStatus`] per check (state, counters,
//!   last result, last error) for `lbfo status`.
//!
//! Cadence: a check probes every `interval`, measured start to start, whether
//! its probes are fast or slow; every probe ends by `timeout` (< interval), so
//! probes of one check never overlap and a hung target costs only its own
//! check a failed probe. Checks never wait on each other, nor on the event
//! receiver. A new check's first probe comes within its first interval (spread
//! by id), so with `rise = 2` it can turn healthy after 2-3 intervals.
//!
//! Using it from the daemon:
//!
//! ```ignore
//! let (tx, mut rx) = tokio::sync::mpsc::channel(checks.len().max(16));
//! let mut checker = HealthChecker::start(checks, tx, cancel.child_token()).await?;
//! let board = checker.status_board();
//! // on an event: log it, then recompute each VIP's health from `board`
//! // (every check of the VIP Healthy; Unknown counts as failing).
//! // on SIGHUP: `checker.sync(new_checks).await?` and act on the report.
//! ```

pub mod config;
mod error;
pub mod exec;
pub mod http;
pub mod icmp;
pub mod probe;
pub mod rise_fall;
pub mod scheduler;
pub mod tcp;
#[cfg(test)]
pub(crate) mod testutil;

use std::{
    fmt,
    sync::Arc,
    time::{Duration, SystemTime},
};

pub use config::{CheckConfig, CheckKind};
pub use exec::ExecError;
pub use rise_fall::{HealthState, RiseFall, Transition};
pub use scheduler::{HealthChecker, ProbeObserver, StatusBoard, SyncError, SyncReport};

/// Names one check for events, logs and status. The integrator picks ids
/// that stay the same across reloads for the same check (like
/// `"web/check/0"`), since [`HealthChecker::sync`] matches checks by id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CheckId(Arc<str>);

impl CheckId {
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        Self(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CheckId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for CheckId {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

impl From<String> for CheckId {
    fn from(s: String) -> Self {
        Self::new(s)
    }
}

/// The outcome of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    pub success: bool,
    /// What was seen: "HTTP 200 from 192.0.2.1:8080", "connecting to
    /// 192.0.2.1:80: Connection refused (os error 111)", "timed out after
    /// 300 ms waiting for the response from 192.0.2.1:8080", …
    pub detail: String,
    /// From the start of the probe to its verdict (connect, TLS and the
    /// answer included).
    pub latency: Duration,
    pub finished_at: SystemTime,
}

/// A check changed state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthEvent {
    pub id: CheckId,
    /// Which incarnation of the check (see [`CheckStatus::instance`]). A
    /// replaced check's last events may still be queued when
    /// [`HealthChecker::sync`] returns; [`StatusBoard::is_current`] tells
    /// them apart.
    pub instance: u64,
    /// What the check probes, like `http GET http://192.0.2.1:8080/health`.
    pub target: String,
    pub old: HealthState,
    pub new: HealthState,
    /// The probe result that caused the transition.
    pub result: ProbeResult,
    /// Results in a row that led here (`rise` or `fall`, or 1 for an unknown
    /// check's first failure).
    pub in_a_row: u32,
}

impl fmt::Display for HealthEvent {
    /// One log line: `check web/0 (http GET …) healthy -> unhealthy after 3
    /// failures in a row: HTTP status 500 is not in 200-299`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.result.success {
            "success"
        } else {
            "failure"
        };
        let plural = if self.in_a_row == 1 { "" } else { "s" };
        write!(
            f,
            "check {} ({}) {} -> {} after {} {what}{plural} in a row: {}",
            self.id, self.target, self.old, self.new, self.in_a_row, self.result.detail
        )
    }
}

/// Everything `lbfo status` shows about one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckStatus {
    /// What the check probes, like `tcp connect 192.0.2.1:80`.
    pub target: String,
    /// `"http"`, `"tcp"`, `"icmp"` or `"exec"`.
    pub kind: &'static str,
    /// Grows every time a check is (re)started under its id: a replaced
    /// check starts over with a new instance, in state Unknown.
    pub instance: u64,
    pub state: HealthState,
    /// When the check entered `state` (for Unknown: when it started).
    pub since: SystemTime,
    pub consecutive_successes: u32,
    pub consecutive_failures: u32,
    /// Probes run by this instance, and how many of them failed.
    pub probes: u64,
    pub failed_probes: u64,
    /// The latest result (latency and time of the last check are in it).
    pub last: Option<ProbeResult>,
    /// The latest failed result, kept after the check recovers.
    pub last_error: Option<ProbeResult>,
    pub weight: Option<i32>,
}

/// Raises the soft limit on open files to the hard limit and returns the new
/// soft limit. Every probe in flight holds a socket (or a pipe), so thousands
/// of checks need more than the usual soft limit of 1024. Call once at start.
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(hard.max(soft))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nofile_soft_limit_is_raised_to_the_hard_limit() {
        use nix::sys::resource::{Resource, getrlimit};
        let now = raise_nofile_limit().expect("getrlimit/setrlimit");
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!((soft, now), (hard, hard));
    }

    #[test]
    fn check_ids_display_as_given() {
        let id = CheckId::from("web/check/0");
        assert_eq!(id.to_string(), "web/check/0");
        assert_eq!(id, CheckId::new(String::from("web/check/0")));
        assert!(CheckId::from("a") < CheckId::from("b"));
    }
}
