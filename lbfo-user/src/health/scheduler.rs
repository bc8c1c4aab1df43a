//! The engine: one task per distinct probe, probing on a fixed cadence and
//! feeding each check that uses it (its rise/fall machine, status and
//! transitions). Identical checks configured on several VIPs or backends
//! (same kind, target, expectations, interval and timeout;
//! [`CheckConfig::probe_key`]) thus cost one probe, while each keeps its own
//! `rise`, `fall`, `weight`, state and status.
//!
//! Cadence: each task ticks with `tokio::time::interval` (start to start,
//! `MissedTickBehavior::Skip`), so a slow probe does not push later probes
//! back, and a task that was starved does not fire a burst to catch up. A
//! probe gets `timeout` to give its verdict and is dropped at the next tick
//! at the latest, which counts as a timeout failure: probes of one check never
//! overlap. First probes are spread over the first interval (by a hash of
//! the probe) on a grid of up to 10 ms ([`PROBE_GRID`]), so thousands of checks
//! started together do not probe in the same millisecond forever after, and
//! one wake-up of the thread starts every probe of a grid point.
//!
//! Nothing in a check task waits on another check: probes share only the TLS
//! configs and the ICMP socket, both lock-free on the probe path (the ICMP
//! pending map is locked for an insert or remove).

use std::{
    collections::{BTreeMap, HashMap, hash_map::DefaultHasher},
    hash::{Hash as _, Hasher as _},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use tokio::{
    sync::mpsc::{self, error::TrySendError},
    task::JoinHandle,
    time::{Instant, MissedTickBehavior, interval_at, timeout_at},
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{
    CheckId, CheckStatus, HealthEvent, ProbeResult,
    config::CheckConfig,
    error::ProbeError,
    probe::{ProbeState, Probers},
    rise_fall::{HealthState, RiseFall},
};

/// Runs a set of checks. Dropping it (or cancelling the token given to
/// [`HealthChecker::new`]) stops every check; [`HealthChecker::shutdown`]
/// also waits for them.
/// Hears about every probe as it ends (metrics), from the check's own
/// task: it must be quick and must not block.
pub trait ProbeObserver: Send + Sync {
    /// `failure` names what went wrong (see `ProbeError::reason`).
    fn probed(
        &self,
        id: &CheckId,
        kind: &'static str,
        latency: Duration,
        failure: Option<&'static str>,
    );
}

pub struct HealthChecker {
    events: mpsc::Sender<HealthEvent>,
    observer: Option<Arc<dyn ProbeObserver>>,
    /// Where check tasks run (the caller's runtime if `None`).
    runtime: Option<tokio::runtime::Handle>,
    cancel: CancellationToken,
    probers: Arc<Probers>,
    /// Every check by id, and the probe group that serves it.
    running: HashMap<CheckId, RunningCheck>,
    /// One probe task per distinct probe ([`CheckConfig::probe_key`]).
    groups: HashMap<CheckConfig, ProbeGroup>,
    board: StatusBoard,
    instances: AtomicU64,
    /// The origin of every check's probe times (see [`first_probe`]).
    epoch: Instant,
}

struct RunningCheck {
    config: Arc<CheckConfig>,
    /// The key of its group in `groups`.
    probe: CheckConfig,
}

/// One probe task and the checks it feeds. Identical checks (same kind,
/// target, expectations, interval and timeout) on several VIPs or backends
/// run one probe; each keeps its own rise/fall state, status and events.
struct ProbeGroup {
    users: Arc<Mutex<Vec<User>>>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

/// The status of every check, shareable with the status server. Reading it
/// never blocks a check for longer than a copy of one [`CheckStatus`].
#[derive(Clone, Default)]
pub struct StatusBoard {
    checks: Arc<RwLock<BTreeMap<CheckId, Arc<Mutex<CheckStatus>>>>>,
}

impl StatusBoard {
    pub fn get(&self, id: &CheckId) -> Option<CheckStatus> {
        let checks = self.checks.read().expect("status board lock");
        checks
            .get(id)
            .map(|s| s.lock().expect("check status lock").clone())
    }

    /// Every check, in id order.
    #[cfg(test)]
    fn snapshot(&self) -> Vec<(CheckId, CheckStatus)> {
        let checks = self.checks.read().expect("status board lock");
        checks
            .iter()
            .map(|(id, s)| (id.clone(), s.lock().expect("check status lock").clone()))
            .collect()
    }

    /// Whether `event` comes from the instance of its check that is running
    /// now (not from one that [`HealthChecker::sync`] replaced or removed).
    pub fn is_current(&self, event: &HealthEvent) -> bool {
        self.get(&event.id)
            .is_some_and(|s| s.instance == event.instance)
    }

    fn insert(&self, id: CheckId, status: Arc<Mutex<CheckStatus>>) {
        self.checks
            .write()
            .expect("status board lock")
            .insert(id, status);
    }

    fn remove(&self, id: &CheckId) {
        self.checks.write().expect("status board lock").remove(id);
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SyncError {
    #[error("health check {0} is listed twice")]
    DuplicateId(CheckId),
    #[error("health check {id}: {message}")]
    Invalid { id: CheckId, message: String },
}

/// What [`HealthChecker::sync`] changed, each list in id order. Added and
/// replaced checks start in [`HealthState::Unknown`]; `replaced` and
/// `removed` carry the state the old check had. `sync` sends no events for
/// these changes: this report is how the caller learns of them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    pub added: Vec<CheckId>,
    pub replaced: Vec<(CheckId, HealthState)>,
    pub removed: Vec<(CheckId, HealthState)>,
    pub unchanged: Vec<CheckId>,
}

impl HealthChecker {
    /// An engine with no checks. Transitions go to `events`; `cancel` stops
    /// everything. Checks never wait for the receiver: when the channel is
    /// full, a check keeps probing and delivers its net transition (from the
    /// state last delivered to the latest, with the latest result) at a later
    /// probe once there is room. Size the channel for a burst of one event
    /// per check to avoid that delay.
    pub fn new(events: mpsc::Sender<HealthEvent>, cancel: CancellationToken) -> Self {
        Self {
            events,
            observer: None,
            runtime: None,
            cancel,
            probers: Arc::new(Probers::default()),
            running: HashMap::new(),
            groups: HashMap::new(),
            board: StatusBoard::default(),
            instances: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Check tasks started from now on run on `runtime`.
    pub fn set_runtime(&mut self, runtime: tokio::runtime::Handle) {
        self.runtime = Some(runtime);
    }

    /// Every probe of checks started from now on is reported to `observer`.
    pub fn set_observer(&mut self, observer: Arc<dyn ProbeObserver>) {
        self.observer = Some(observer);
    }

    /// [`HealthChecker::new`] followed by [`HealthChecker::sync`].
    pub async fn start(
        checks: impl IntoIterator<Item = (CheckId, CheckConfig)>,
        events: mpsc::Sender<HealthEvent>,
        cancel: CancellationToken,
    ) -> Result<Self, SyncError> {
        let mut checker = Self::new(events, cancel);
        checker.sync(checks).await?;
        Ok(checker)
    }

    /// Makes the running set equal to `checks`: checks whose id and config
    /// are unchanged keep running untouched (state, counters, cadence); new
    /// ids start; ids whose config changed restart from Unknown; missing ids
    /// stop. A stopped or replaced check's task has ended when this returns.
    ///
    /// Validates everything first: on error nothing changes.
    pub async fn sync(
        &mut self,
        checks: impl IntoIterator<Item = (CheckId, CheckConfig)>,
    ) -> Result<SyncReport, SyncError> {
        let mut wanted: BTreeMap<CheckId, CheckConfig> = BTreeMap::new();
        for (id, config) in checks {
            config.validate().map_err(|message| SyncError::Invalid {
                id: id.clone(),
                message,
            })?;
            if wanted.insert(id.clone(), config).is_some() {
                return Err(SyncError::DuplicateId(id));
            }
        }

        let mut report = SyncReport::default();
        let mut gone: Vec<CheckId> = self
            .running
            .keys()
            .filter(|id| !wanted.contains_key(*id))
            .cloned()
            .collect();
        gone.sort();
        for id in gone {
            let state = self.stop(&id).await;
            self.board.remove(&id);
            info!(check = %id, "health check removed");
            report.removed.push((id, state));
        }
        for (id, config) in wanted {
            match self.running.get(&id) {
                Some(running) if *running.config == config => report.unchanged.push(id),
                Some(_) => {
                    let state = self.stop(&id).await;
                    info!(check = %id, target = %config, "health check changed; it restarts from unknown");
                    self.spawn(id.clone(), config);
                    report.replaced.push((id, state));
                }
                None => {
                    info!(check = %id, target = %config, "health check added");
                    self.spawn(id.clone(), config);
                    report.added.push(id);
                }
            }
        }
        Ok(report)
    }

    /// The shared status of every check.
    pub fn status_board(&self) -> StatusBoard {
        self.board.clone()
    }

    /// The config a check runs with.
    #[cfg(test)]
    fn config(&self, id: &CheckId) -> Option<&CheckConfig> {
        self.running.get(id).map(|r| &*r.config)
    }

    /// Number of checks running.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.running.len()
    }

    /// Number of probe tasks running (checks that share a probe count once).
    pub fn probe_tasks(&self) -> usize {
        self.groups.len()
    }

    /// Stops every check and waits until their tasks have ended (probes in
    /// flight are dropped: sockets closed, programs killed).
    pub async fn shutdown(mut self) {
        let ids: Vec<CheckId> = self.running.keys().cloned().collect();
        for id in ids {
            self.stop(&id).await;
            self.board.remove(&id);
        }
    }

    /// Takes one check off its probe group (stopping the group's task, and
    /// waiting for it, when it was the last user); returns its last state.
    /// Once this returns, no event of this check is sent any more.
    async fn stop(&mut self, id: &CheckId) -> HealthState {
        let state = self
            .board
            .get(id)
            .map(|s| s.state)
            .unwrap_or(HealthState::Unknown);
        let Some(running) = self.running.remove(id) else {
            return state;
        };
        let Some(group) = self.groups.get(&running.probe) else {
            return state;
        };
        let now_empty = {
            let mut users = group.users.lock().expect("probe group lock");
            users.retain(|u| u.id != *id);
            users.is_empty()
        };
        if now_empty && let Some(group) = self.groups.remove(&running.probe) {
            group.cancel.cancel();
            // Every await in the task races its token, so this is prompt.
            if let Err(e) = group.task.await
                && e.is_panic()
            {
                warn!(check = %id, "health check task had panicked");
            }
        }
        state
    }

    fn spawn(&mut self, id: CheckId, config: CheckConfig) {
        let config = Arc::new(config);
        let instance = self.instances.fetch_add(1, Ordering::Relaxed) + 1;
        let status = Arc::new(Mutex::new(CheckStatus {
            target: config.to_string(),
            kind: config.kind_name(),
            instance,
            state: HealthState::Unknown,
            since: SystemTime::now(),
            consecutive_successes: 0,
            consecutive_failures: 0,
            probes: 0,
            failed_probes: 0,
            last: None,
            last_error: None,
            weight: config.weight,
        }));
        self.board.insert(id.clone(), status.clone());
        let user = User {
            id: id.clone(),
            instance,
            target: config.to_string(),
            machine: RiseFall::new(config.rise, config.fall),
            status,
            unsent: None,
            queue_full: false,
        };
        let probe = config.probe_key();
        self.running.insert(
            id,
            RunningCheck {
                config: config.clone(),
                probe: probe.clone(),
            },
        );
        if let Some(group) = self.groups.get(&probe) {
            group.users.lock().expect("probe group lock").push(user);
            return;
        }
        let users = Arc::new(Mutex::new(vec![user]));
        let cancel = self.cancel.child_token();
        let task = ProbeTask {
            config,
            users: users.clone(),
            probers: self.probers.clone(),
            events: self.events.clone(),
            observer: self.observer.clone(),
            epoch: self.epoch,
        };
        let run = {
            let cancel = cancel.clone();
            async move {
                cancel.run_until_cancelled(task.run()).await;
            }
        };
        let task = match &self.runtime {
            Some(runtime) => runtime.spawn(run),
            None => tokio::spawn(run),
        };
        self.groups.insert(
            probe,
            ProbeGroup {
                users,
                cancel,
                task,
            },
        );
    }
}

impl Drop for HealthChecker {
    fn drop(&mut self) {
        for group in self.groups.values() {
            group.cancel.cancel();
        }
    }
}

/// How far past its own deadline a probe may run (to kill a program and
/// reap it, say) before the engine drops it; never past the next tick.
const OVERRUN_GRACE: Duration = Duration::from_millis(100);

/// The task of one probe group: probes on the group's cadence and feeds
/// every result to each of its users.
struct ProbeTask {
    /// The config of the check that started the group; its users' configs
    /// differ from it at most in rise, fall and weight.
    config: Arc<CheckConfig>,
    users: Arc<Mutex<Vec<User>>>,
    probers: Arc<Probers>,
    events: mpsc::Sender<HealthEvent>,
    observer: Option<Arc<dyn ProbeObserver>>,
    epoch: Instant,
}

/// One check fed by a probe group.
struct User {
    id: CheckId,
    instance: u64,
    target: String,
    machine: RiseFall,
    status: Arc<Mutex<CheckStatus>>,
    /// A transition the queue had no room for yet, and whether that was
    /// logged.
    unsent: Option<HealthEvent>,
    queue_full: bool,
}

impl ProbeTask {
    /// Runs until the group's token is cancelled (the caller races it).
    async fn run(self) {
        let interval = self.config.interval;
        let phase_id = CheckId::from(format!("{}/{:?}", self.config, self.config.interval));
        let first = first_probe(self.epoch, Instant::now(), &phase_id, interval);
        let mut ticker = interval_at(first, interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut state = ProbeState::default();
        debug!(target = %self.config, "health probe started");
        loop {
            let scheduled = ticker.tick().await;
            let started = Instant::now();
            let deadline = started + self.config.timeout;
            let hard_stop = (deadline + OVERRUN_GRACE).min(scheduled + interval);
            let outcome = timeout_at(
                hard_stop,
                self.probers.probe(&self.config, &mut state, deadline),
            )
            .await;
            let latency = started.elapsed();
            let (success, detail, failure) = match outcome {
                Ok(Ok(detail)) => (true, detail, None),
                Ok(Err(error)) => (false, error.to_string(), Some(error.reason())),
                Err(_) => (
                    false,
                    ProbeError::Timeout {
                        waiting_for: "(the probe overran its deadline and was stopped)".into(),
                        after: self.config.timeout,
                    }
                    .to_string(),
                    Some("timeout"),
                ),
            };
            let result = ProbeResult {
                success,
                detail,
                latency,
                finished_at: SystemTime::now(),
            };
            if !success {
                debug!(target = %self.config, detail = %result.detail, "health probe failed");
            }
            let mut users = self.users.lock().expect("probe group lock");
            for user in users.iter_mut() {
                if let Some(observer) = &self.observer {
                    observer.probed(&user.id, self.config.kind_name(), latency, failure);
                }
                user.record(&result, &self.events);
            }
        }
    }
}

impl User {
    /// Feeds one probe result to this check: its state, status and, on a
    /// transition, an event.
    fn record(&mut self, result: &ProbeResult, events: &mpsc::Sender<HealthEvent>) {
        let success = result.success;
        let transition = self.machine.record(success);
        {
            let mut s = self.status.lock().expect("check status lock");
            s.state = self.machine.state();
            s.consecutive_successes = self.machine.consecutive_successes();
            s.consecutive_failures = self.machine.consecutive_failures();
            s.probes += 1;
            if !success {
                s.failed_probes += 1;
                s.last_error = Some(result.clone());
            }
            if transition.is_some() {
                s.since = result.finished_at;
            }
            s.last = Some(result.clone());
        }
        if let Some(transition) = transition {
            let in_a_row = if success {
                self.machine.consecutive_successes()
            } else {
                self.machine.consecutive_failures()
            };
            let event = HealthEvent {
                id: self.id.clone(),
                instance: self.instance,
                target: self.target.clone(),
                old: transition.from,
                new: transition.to,
                result: result.clone(),
                in_a_row,
            };
            if event.new.is_healthy() {
                info!(check = %self.id, "{event}");
            } else {
                warn!(check = %self.id, "{event}");
            }
            self.unsent = coalesce(self.unsent.take(), event);
        }
        // Never wait for the receiver: a check keeps its cadence (and its
        // status) even if the daemon is slow to read events.
        if let Some(event) = self.unsent.take() {
            match events.try_send(event) {
                Ok(()) => self.queue_full = false,
                Err(TrySendError::Full(event)) => {
                    if !self.queue_full {
                        warn!(check = %self.id, "health event queue is full; the transition is delivered at a later probe");
                        self.queue_full = true;
                    }
                    self.unsent = Some(event);
                }
                Err(TrySendError::Closed(_)) => {
                    // Nobody listens any more; the status board still
                    // shows the truth, so keep checking.
                    debug!(check = %self.id, "health event receiver is gone");
                }
            }
        }
    }
}

/// Folds a new transition into one not delivered yet: the receiver learns the
/// net change (from the state it last heard of to the latest one) with the
/// latest result. A round trip back to the delivered state cancels out.
fn coalesce(unsent: Option<HealthEvent>, next: HealthEvent) -> Option<HealthEvent> {
    let Some(mut merged) = unsent else {
        return Some(next);
    };
    merged.new = next.new;
    merged.result = next.result;
    merged.in_a_row = next.in_a_row;
    (merged.old != merged.new).then_some(merged)
}

/// Probe times fall on a grid, so one wake-up of the check thread starts
/// every probe due at a grid point: with a 10 ms step, 1,000 checks a second
/// wake it 100 times, not 1,000. A wake-up (a context switch, an
/// `epoll_wait`, the timer wheel) costs several probes' worth of CPU, so
/// this is most of what a check costs at a thousand checks a second
/// (measured in `cargo xtask bench`, "Health check CPU against HAProxy"). A
/// probe starts at most one step later than an even spread would start it;
/// its interval stays exact. The step is a hundredth of the interval, at
/// most [`PROBE_GRID`] and at least 1 ms, so short intervals keep a fine
/// spread.
pub(crate) const PROBE_GRID: Duration = Duration::from_millis(10);

fn grid_step(interval: Duration) -> Duration {
    (interval / 100).clamp(Duration::from_millis(1), PROBE_GRID)
}

/// When a check first probes: at a point of its grid ([`grid_step`]) within its
/// interval chosen by a hash of its id (stable per id, spread evenly over
/// many ids), counted from `epoch`, the engine's start, and the first such
/// point from `now` on. Every check of an engine shares the epoch, so checks
/// on the same grid point probe together, and a check restarted by a
/// reload keeps its phase.
fn first_probe(epoch: Instant, now: Instant, id: &CheckId, interval: Duration) -> Instant {
    let mut h = DefaultHasher::new();
    id.hash(&mut h);
    let slot = grid_step(interval).min(interval);
    let slots = (interval.as_nanos() / slot.as_nanos()).max(1) as u64;
    let phase = slot * (h.finish() % slots) as u32;
    let interval_ns = interval.as_nanos().max(1);
    let first = epoch + phase;
    if first >= now {
        return first;
    }
    let periods = (now - first).as_nanos().div_ceil(interval_ns);
    first + Duration::from_nanos((periods * interval_ns) as u64)
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeSet, net::SocketAddr};

    use super::*;
    use crate::health::{
        config::{CheckKind, ExecCheck, IcmpCheck, TcpCheck},
        testutil::{Answer, TestHttpServer, closed_port, is_root},
    };

    /// Every wait in these tests is bounded by this.
    const LIMIT: Duration = Duration::from_secs(20);

    fn http(
        addr: SocketAddr,
        interval_ms: u64,
        timeout_ms: u64,
        rise: u32,
        fall: u32,
    ) -> CheckConfig {
        let text = format!(
            "kind = \"http\"\nurl = \"http://{addr}/health\"\ninterval_ms = {interval_ms}\n\
             timeout_ms = {timeout_ms}\nrise = {rise}\nfall = {fall}\n"
        );
        toml::from_str(&text).unwrap_or_else(|e| panic!("test config {text:?}: {e}"))
    }

    fn tcp(port: u16, interval_ms: u64) -> CheckConfig {
        let mut c = CheckConfig::new(CheckKind::Tcp(TcpCheck {
            address: format!("127.0.0.1:{port}").parse().unwrap(),
        }));
        c.interval = Duration::from_millis(interval_ms);
        c.timeout = Duration::from_millis(interval_ms * 4 / 5);
        c
    }

    fn engine(
        capacity: usize,
    ) -> (
        HealthChecker,
        mpsc::Receiver<HealthEvent>,
        CancellationToken,
    ) {
        let (tx, rx) = mpsc::channel(capacity);
        let cancel = CancellationToken::new();
        (HealthChecker::new(tx, cancel.clone()), rx, cancel)
    }

    async fn next_event(rx: &mut mpsc::Receiver<HealthEvent>, what: &str) -> HealthEvent {
        tokio::time::timeout(LIMIT, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no event within {LIMIT:?} while waiting for {what}"))
            .expect("event channel open")
    }

    /// Waits (bounded) until `f` holds for the check's status.
    async fn wait_status(
        board: &StatusBoard,
        id: &CheckId,
        what: &str,
        f: impl Fn(&CheckStatus) -> bool,
    ) -> CheckStatus {
        let until = std::time::Instant::now() + LIMIT;
        loop {
            let s = board
                .get(id)
                .unwrap_or_else(|| panic!("check {id} not on the board"));
            if f(&s) {
                return s;
            }
            assert!(
                std::time::Instant::now() < until,
                "{what}: not reached within {LIMIT:?}; status {s:#?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn transitions_are_sent_with_their_cause() {
        let server = TestHttpServer::start(Answer::Status(200, "ok")).await;
        let (mut checker, mut rx, _cancel) = engine(16);
        let id = CheckId::from("web/check/0");
        checker
            .sync([(id.clone(), http(server.addr, 50, 40, 2, 3))])
            .await
            .unwrap();

        let up = next_event(&mut rx, "unknown -> healthy").await;
        assert_eq!(
            (up.old, up.new),
            (HealthState::Unknown, HealthState::Healthy),
            "{up}"
        );
        assert_eq!(up.id, id);
        assert_eq!(up.in_a_row, 2, "rise = 2");
        assert!(up.result.success);
        assert_eq!(up.result.detail, format!("HTTP 200 from {}", server.addr));
        assert_eq!(up.target, format!("http GET http://{}/health", server.addr));

        server.set(Answer::Status(503, "down"));
        let down = next_event(&mut rx, "healthy -> unhealthy").await;
        assert_eq!(
            (down.old, down.new),
            (HealthState::Healthy, HealthState::Unhealthy),
            "{down}"
        );
        assert_eq!(down.in_a_row, 3, "fall = 3");
        assert_eq!(down.result.detail, "HTTP status 503 is not in 200-299");
        assert_eq!(
            down.to_string(),
            format!(
                "check web/check/0 (http GET http://{}/health) healthy -> unhealthy after 3 failures in a row: HTTP status 503 is not in 200-299",
                server.addr
            )
        );

        let board = checker.status_board();
        let s = board.get(&id).unwrap();
        assert_eq!(s.state, HealthState::Unhealthy);
        assert!(
            s.consecutive_failures >= 3 && s.consecutive_successes == 0,
            "{s:#?}"
        );
        assert_eq!(
            s.last_error.as_ref().map(|r| r.detail.as_str()),
            Some("HTTP status 503 is not in 200-299")
        );
        assert!(s.probes >= 5 && s.failed_probes >= 3, "{s:#?}");
        assert!(board.is_current(&down));

        server.set(Answer::Status(200, "ok"));
        let back = next_event(&mut rx, "unhealthy -> healthy").await;
        assert_eq!(
            (back.old, back.new),
            (HealthState::Unhealthy, HealthState::Healthy)
        );
        let s = board.get(&id).unwrap();
        let last = s.last.expect("a last result");
        assert!(
            last.success && last.latency > Duration::ZERO && last.latency < Duration::from_secs(1),
            "{last:?}"
        );
        assert!(
            s.last_error.is_some(),
            "the last error is kept after recovery"
        );
        checker.shutdown().await;
    }

    #[tokio::test]
    async fn a_dead_target_goes_unhealthy_on_its_first_failure() {
        let (mut checker, mut rx, _cancel) = engine(4);
        let port = closed_port();
        checker.sync([("db".into(), tcp(port, 50))]).await.unwrap();
        let ev = next_event(&mut rx, "unknown -> unhealthy").await;
        assert_eq!(
            (ev.old, ev.new, ev.in_a_row),
            (HealthState::Unknown, HealthState::Unhealthy, 1)
        );
        assert!(
            ev.result.detail.starts_with(&format!(
                "connecting to 127.0.0.1:{port}: Connection refused"
            )),
            "{ev}"
        );
        checker.shutdown().await;
    }

    /// 20 checks at 50 ms, one target hanging: every other check keeps its
    /// cadence, and the hung one fails once per interval (timeouts, not
    /// stalls).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hung_target_does_not_delay_other_checks() {
        const INTERVAL_MS: u64 = 50;
        let good = TestHttpServer::start(Answer::Status(200, "ok")).await;
        let hung = TestHttpServer::start(Answer::Hang).await;
        let (mut checker, _rx, _cancel) = engine(64);
        let mut checks: Vec<(CheckId, CheckConfig)> = (0..19)
            .map(|i| {
                (
                    CheckId::from(format!("good/{i:02}")),
                    http(good.addr, INTERVAL_MS, 40, 1, 1),
                )
            })
            .collect();
        let hung_id = CheckId::from("hung");
        checks.push((hung_id.clone(), http(hung.addr, INTERVAL_MS, 40, 1, 1)));
        checker.sync(checks).await.unwrap();
        let board = checker.status_board();

        // Warm up past every check's first-probe offset (< one interval).
        tokio::time::sleep(Duration::from_millis(3 * INTERVAL_MS)).await;
        let before = board.snapshot();
        let window = Duration::from_millis(40 * INTERVAL_MS);
        let t0 = std::time::Instant::now();
        tokio::time::sleep(window).await;
        let elapsed = t0.elapsed();
        let after = board.snapshot();

        // Ticks in the measured time; a check cannot exceed it by more than
        // one (no catch-up bursts) and must reach most of it even on two busy
        // cores: a check serialised behind the hung one would get at most a
        // handful.
        let ticks = (elapsed.as_millis() as u64 / INTERVAL_MS) as i64;
        let (min, max) = (ticks * 3 / 4, ticks + 1);
        for ((id, b), (_, a)) in before.iter().zip(&after) {
            let probes = (a.probes - b.probes) as i64;
            assert!(
                (min..=max).contains(&probes),
                "check {id}: {probes} probes in {elapsed:?}, expected {min}..={max} (one per {INTERVAL_MS} ms); status {a:#?}"
            );
            if *id == hung_id {
                assert_eq!(
                    a.failed_probes - b.failed_probes,
                    a.probes - b.probes,
                    "every probe of the hung check fails"
                );
                assert_eq!(a.state, HealthState::Unhealthy);
                let err = a.last_error.as_ref().unwrap();
                assert!(err.detail.starts_with("timed out after 40 ms"), "{err:?}");
                // Cut at its timeout, not left waiting on the server (which
                // would hold it for 30 s).
                assert!(
                    err.latency < Duration::from_millis(3 * INTERVAL_MS),
                    "{err:?}"
                );
            } else {
                assert_eq!(
                    a.failed_probes, b.failed_probes,
                    "check {id} must not fail: {a:#?}"
                );
                assert_eq!(a.state, HealthState::Healthy, "check {id}");
            }
        }
        checker.shutdown().await;
    }

    /// Probes that take most of the interval do not stretch it: start to
    /// start stays `interval` (sleeping after each probe would give one probe
    /// per 80 ms here, 25 in the window instead of 40).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slow_probes_do_not_stretch_the_interval() {
        const INTERVAL_MS: u64 = 50;
        let slow = TestHttpServer::start(Answer::Slow(Duration::from_millis(30), 200)).await;
        let (mut checker, _rx, _cancel) = engine(8);
        let id = CheckId::from("slow");
        checker
            .sync([(id.clone(), http(slow.addr, INTERVAL_MS, 45, 1, 1))])
            .await
            .unwrap();
        let board = checker.status_board();
        wait_status(&board, &id, "first probe", |s| s.probes >= 1).await;
        let before = board.get(&id).unwrap();
        let t0 = std::time::Instant::now();
        tokio::time::sleep(Duration::from_millis(40 * INTERVAL_MS)).await;
        let elapsed = t0.elapsed();
        let after = board.get(&id).unwrap();
        let probes = (after.probes - before.probes) as i64;
        let ticks = (elapsed.as_millis() as u64 / INTERVAL_MS) as i64;
        assert!(
            probes >= ticks * 3 / 4 && probes <= ticks + 1,
            "{probes} probes in {elapsed:?}; a fixed cadence gives about {ticks}, sleeping after each probe about {}",
            elapsed.as_millis() as u64 / (INTERVAL_MS + 30)
        );
        let last = after.last.unwrap();
        assert!(
            last.latency >= Duration::from_millis(30),
            "the server answers after 30 ms: {last:?}"
        );
        checker.shutdown().await;
    }

    /// Nobody reads the events for a while: the check keeps probing, and the
    /// receiver later gets the net transition.
    #[tokio::test]
    async fn a_full_event_queue_does_not_stall_checks() {
        let server = TestHttpServer::start(Answer::Status(200, "ok")).await;
        let (mut checker, mut rx, _cancel) = engine(1);
        let id = CheckId::from("busy");
        checker
            .sync([(id.clone(), http(server.addr, 20, 15, 1, 1))])
            .await
            .unwrap();
        let board = checker.status_board();
        // Unknown -> healthy fills the queue (not read yet).
        wait_status(&board, &id, "healthy", |s| s.state == HealthState::Healthy).await;
        server.set(Answer::Status(500, "down"));
        let s = wait_status(&board, &id, "unhealthy", |s| {
            s.state == HealthState::Unhealthy
        })
        .await;
        let stalled_at = s.probes;
        // Still probing while its event waits.
        wait_status(&board, &id, "probing on", |s| s.probes >= stalled_at + 5).await;
        let first = next_event(&mut rx, "the queued event").await;
        assert_eq!(
            (first.old, first.new),
            (HealthState::Unknown, HealthState::Healthy)
        );
        let second = next_event(&mut rx, "the held-back transition").await;
        assert_eq!(
            (second.old, second.new),
            (HealthState::Healthy, HealthState::Unhealthy),
            "{second}"
        );
        assert_eq!(second.result.detail, "HTTP status 500 is not in 200-299");
        checker.shutdown().await;
    }

    #[test]
    fn undelivered_transitions_coalesce() {
        let ev = |old, new, detail: &str| HealthEvent {
            id: "c".into(),
            instance: 1,
            target: "tcp connect 192.0.2.1:80".into(),
            old,
            new,
            result: ProbeResult {
                success: new == HealthState::Healthy,
                detail: detail.into(),
                latency: Duration::from_millis(1),
                finished_at: SystemTime::UNIX_EPOCH,
            },
            in_a_row: 1,
        };
        use HealthState::*;
        let first = coalesce(None, ev(Unknown, Healthy, "a")).unwrap();
        assert_eq!((first.old, first.new), (Unknown, Healthy));
        let merged = coalesce(Some(first), ev(Healthy, Unhealthy, "b")).unwrap();
        assert_eq!(
            (merged.old, merged.new, merged.result.detail.as_str()),
            (Unknown, Unhealthy, "b")
        );
        let back = coalesce(
            Some(ev(Healthy, Unhealthy, "x")),
            ev(Unhealthy, Healthy, "y"),
        );
        assert_eq!(
            back, None,
            "healthy -> unhealthy -> healthy undelivered is no change"
        );
    }

    #[tokio::test]
    async fn sync_keeps_unchanged_checks_and_restarts_changed_ones() {
        let server = TestHttpServer::start(Answer::Status(200, "ok")).await;
        let other = TestHttpServer::start(Answer::Status(200, "ok")).await;
        let (mut checker, mut rx, _cancel) = engine(16);
        let (a, b, c, d) = (
            CheckId::from("a"),
            CheckId::from("b"),
            CheckId::from("c"),
            CheckId::from("d"),
        );
        let report = checker
            .sync([
                (a.clone(), http(server.addr, 50, 40, 1, 1)),
                (b.clone(), http(server.addr, 50, 40, 1, 1)),
                (c.clone(), http(other.addr, 50, 40, 1, 1)),
            ])
            .await
            .unwrap();
        assert_eq!(report.added, [a.clone(), b.clone(), c.clone()]);
        for _ in 0..3 {
            let ev = next_event(&mut rx, "three checks turning healthy").await;
            assert_eq!(ev.new, HealthState::Healthy, "{ev}");
        }
        let board = checker.status_board();
        let a_before = board.get(&a).unwrap();
        let b_before = board.get(&b).unwrap();

        // Reload: a unchanged, b with another interval, c removed, d new.
        let report = checker
            .sync([
                (a.clone(), http(server.addr, 50, 40, 1, 1)),
                (b.clone(), http(server.addr, 60, 40, 1, 1)),
                (d.clone(), tcp(closed_port(), 50)),
            ])
            .await
            .unwrap();
        assert_eq!(
            report,
            SyncReport {
                added: vec![d.clone()],
                replaced: vec![(b.clone(), HealthState::Healthy)],
                removed: vec![(c.clone(), HealthState::Healthy)],
                unchanged: vec![a.clone()],
            }
        );
        let a_after = board.get(&a).unwrap();
        assert_eq!(
            a_after.instance, a_before.instance,
            "a keeps running as it was"
        );
        assert_eq!(a_after.state, HealthState::Healthy, "a keeps its state");
        assert!(a_after.probes >= a_before.probes, "a keeps its counters");
        let b_after = board.get(&b).unwrap();
        assert_ne!(b_after.instance, b_before.instance, "b is a new instance");
        assert!(board.get(&c).is_none(), "c is off the board");
        assert_eq!(
            checker.config(&b).unwrap().interval,
            Duration::from_millis(60)
        );

        // c's task has stopped: the other server sees no new connections
        // (after a moment for connections made just before the stop to be
        // accepted).
        tokio::time::sleep(Duration::from_millis(100)).await;
        let seen = other.connections();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(other.connections(), seen, "removed check c still probes");

        // The new b proves itself again; stale events are recognisable.
        let mut fresh = 0;
        let until = std::time::Instant::now() + LIMIT;
        while fresh < 2 && std::time::Instant::now() < until {
            let ev = next_event(&mut rx, "events from b and d").await;
            if !board.is_current(&ev) {
                continue;
            }
            if ev.id == b {
                assert_eq!(
                    (ev.old, ev.new),
                    (HealthState::Unknown, HealthState::Healthy)
                );
                fresh += 1;
            } else if ev.id == d {
                assert_eq!(
                    (ev.old, ev.new),
                    (HealthState::Unknown, HealthState::Unhealthy)
                );
                fresh += 1;
            }
        }
        assert_eq!(fresh, 2, "both b (restarted) and d (new) must report");

        // An identical reload changes nothing.
        let again = checker
            .sync([
                (a.clone(), http(server.addr, 50, 40, 1, 1)),
                (b.clone(), http(server.addr, 60, 40, 1, 1)),
                (d.clone(), tcp(closed_port(), 50)),
            ])
            .await
            .unwrap();
        // d's port differs (a new closed port), so only a and b are unchanged.
        assert_eq!(again.unchanged, [a.clone(), b.clone()]);
        checker.shutdown().await;
    }

    #[tokio::test]
    async fn sync_rejects_bad_input_and_changes_nothing() {
        let (mut checker, _rx, _cancel) = engine(4);
        let port = closed_port();
        checker.sync([("a".into(), tcp(port, 100))]).await.unwrap();
        let err = checker
            .sync([("a".into(), tcp(port, 100)), ("a".into(), tcp(port, 200))])
            .await
            .unwrap_err();
        assert_eq!(err, SyncError::DuplicateId("a".into()));
        let mut bad = tcp(port, 100);
        bad.timeout = Duration::from_millis(100);
        let err = checker.sync([("b".into(), bad)]).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "health check b: timeout_ms = 100 must be less than interval_ms = 100 (a probe must end before the next one starts)"
        );
        assert_eq!(checker.len(), 1);
        assert_eq!(
            checker.config(&"a".into()).unwrap().interval,
            Duration::from_millis(100)
        );
        checker.shutdown().await;
    }

    #[tokio::test]
    async fn cancelling_the_token_stops_all_checks() {
        let server = TestHttpServer::start(Answer::Status(200, "ok")).await;
        let (mut checker, _rx, cancel) = engine(8);
        checker
            .sync((0..5).map(|i| {
                (
                    CheckId::from(format!("c{i}")),
                    http(server.addr, 20, 15, 1, 1),
                )
            }))
            .await
            .unwrap();
        let board = checker.status_board();
        wait_status(&board, &"c0".into(), "probing", |s| s.probes >= 2).await;
        cancel.cancel();
        // Let any probe in flight end, then nothing more may arrive.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let seen = server.connections();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(server.connections(), seen, "no probes after cancel");
        checker.shutdown().await;
    }

    #[tokio::test]
    async fn exec_and_icmp_checks_run_in_the_engine() {
        let (mut checker, mut rx, _cancel) = engine(8);
        let mut ok = CheckConfig::new(CheckKind::Exec(ExecCheck {
            command: vec!["/bin/true".into()],
        }));
        ok.interval = Duration::from_millis(50);
        ok.timeout = Duration::from_millis(40);
        let mut fail = ok.clone();
        fail.kind = CheckKind::Exec(ExecCheck {
            command: vec!["/bin/false".into()],
        });
        let mut checks = vec![
            (CheckId::from("true"), ok.clone()),
            (CheckId::from("false"), fail),
        ];
        if is_root() {
            let mut ping = ok.clone();
            ping.kind = CheckKind::Icmp(IcmpCheck {
                host: std::net::Ipv4Addr::LOCALHOST,
            });
            ping.timeout = Duration::from_millis(45);
            checks.push((CheckId::from("ping"), ping));
        }
        let expected = checks.len();
        checker.sync(checks).await.unwrap();
        let mut seen = HashMap::new();
        while seen.len() < expected {
            let ev = next_event(&mut rx, "exec/icmp transitions").await;
            seen.insert(ev.id.to_string(), ev);
        }
        assert_eq!(seen["true"].new, HealthState::Healthy, "{}", seen["true"]);
        assert_eq!(
            seen["false"].new,
            HealthState::Unhealthy,
            "{}",
            seen["false"]
        );
        assert_eq!(
            seen["false"].result.detail,
            "/bin/false exited with status 1"
        );
        if let Some(ping) = seen.get("ping") {
            assert_eq!(ping.new, HealthState::Healthy, "{ping}");
            assert!(
                ping.result
                    .detail
                    .starts_with("echo reply from 127.0.0.1 in "),
                "{ping}"
            );
        }
        checker.shutdown().await;
    }

    /// Many checks in one engine keep their cadence: every check is probed
    /// once per interval and nearly all probes succeed. (The 10,000-check
    /// figures, CPU and drift, come from `cargo xtask bench`.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_thousand_http_checks_keep_their_cadence() {
        scale(1_000, false).await;
    }

    /// The same for https: a full TLS handshake per probe, both sides in
    /// this process.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_hundred_https_checks_keep_their_cadence() {
        scale(200, true).await;
    }

    async fn scale(checks: usize, tls: bool) {
        let _ = crate::health::raise_nofile_limit();
        let servers: Vec<TestHttpServer> = futures::future::join_all((0..4).map(|_| async {
            if tls {
                TestHttpServer::start_tls(Answer::Status(200, "ok")).await
            } else {
                TestHttpServer::start(Answer::Status(200, "ok")).await
            }
        }))
        .await;
        let (mut checker, mut rx, _cancel) = engine(16);
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let list = (0..checks).map(|i| {
            // A path per check: identical checks would share one probe.
            let addr = servers[i % servers.len()].addr;
            let (scheme, tls_line) = if tls {
                ("https", "tls_skip_verify = true\n")
            } else {
                ("http", "")
            };
            let text = format!(
                "kind = \"http\"\nurl = \"{scheme}://{addr}/health/{i}\"\n{tls_line}\
                 interval_ms = 1000\ntimeout_ms = 800\nrise = 1\nfall = 1\n"
            );
            let c: CheckConfig = toml::from_str(&text).unwrap();
            (CheckId::from(format!("scale/{i:05}")), c)
        });
        checker.sync(list).await.unwrap();
        let board = checker.status_board();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let cpu = |who| {
            let u = nix::sys::resource::getrusage(who).unwrap();
            let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
            t(u.user_time()) + t(u.system_time())
        };
        let cpu0 = cpu(nix::sys::resource::UsageWho::RUSAGE_SELF);
        let before = board.snapshot();
        let window = Duration::from_secs(5);
        let t0 = std::time::Instant::now();
        tokio::time::sleep(window).await;
        let elapsed = t0.elapsed();
        let after = board.snapshot();
        let cpu_used = cpu(nix::sys::resource::UsageWho::RUSAGE_SELF) - cpu0;
        let mut probes = 0u64;
        let mut failed = 0u64;
        let mut errors = BTreeSet::new();
        let mut max_latency = Duration::ZERO;
        let mut slowest_check = u64::MAX;
        for ((_, b), (_, a)) in before.iter().zip(&after) {
            let p = a.probes - b.probes;
            probes += p;
            failed += a.failed_probes - b.failed_probes;
            if a.failed_probes > b.failed_probes && errors.len() < 5 {
                errors.insert(a.last_error.as_ref().map(|r| r.detail.clone()));
            }
            slowest_check = slowest_check.min(p);
            if let Some(l) = a.last.as_ref().map(|r| r.latency) {
                max_latency = max_latency.max(l);
            }
        }
        eprintln!(
            "{checks} {} checks: {probes} probes in {elapsed:?} ({:.0}/s), {failed} failed, \
             fewest probes of one check {slowest_check}, max last latency {max_latency:?}, \
             CPU {cpu_used:.2} s (servers included)",
            if tls { "https" } else { "http" },
            probes as f64 / elapsed.as_secs_f64()
        );
        if !errors.is_empty() {
            eprintln!("some errors: {errors:?}");
        }
        let expected = elapsed.as_secs();
        assert!(
            slowest_check + 1 >= expected,
            "a check fell behind: {slowest_check} probes in {elapsed:?}"
        );
        assert!(
            failed * 100 <= probes,
            "more than 1% of probes failed: {failed} of {probes}"
        );
        checker.shutdown().await;
    }

    #[tokio::test]
    async fn identical_checks_share_one_probe_and_each_reacts() {
        let server = TestHttpServer::start(Answer::Status(200, "ok")).await;
        let (mut checker, mut rx, _cancel) = engine(16);
        // The same probe on two VIPs, with different rise and fall; a third
        // check differs in its interval and gets a probe of its own.
        let a = http(server.addr, 50, 40, 1, 1);
        let b = http(server.addr, 50, 40, 2, 2);
        let other = http(server.addr, 60, 40, 1, 1);
        checker
            .sync([
                ("web/check/0".into(), a),
                ("api/check/0".into(), b),
                ("other/check/0".into(), other),
            ])
            .await
            .unwrap();
        assert_eq!(checker.probe_tasks(), 2, "two distinct probes");
        let mut healthy = BTreeSet::new();
        while healthy.len() < 3 {
            let event = tokio::time::timeout(LIMIT, rx.recv())
                .await
                .expect("events")
                .unwrap();
            if event.new == HealthState::Healthy {
                healthy.insert(event.id.to_string());
            }
        }
        let before = server.requests().len();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let probes = server.requests().len() - before;
        // 500 ms: about 10 probes of the shared check and 8 of the other;
        // unshared, about 28.
        assert!(
            (12..=22).contains(&probes),
            "two probe tasks should make 12-22 requests in 500 ms, saw {probes}"
        );
        server.set(Answer::Status(500, "down"));
        let mut unhealthy = BTreeSet::new();
        while unhealthy.len() < 3 {
            let event = tokio::time::timeout(LIMIT, rx.recv())
                .await
                .expect("events")
                .unwrap();
            if event.new == HealthState::Unhealthy {
                unhealthy.insert(event.id.to_string());
            }
        }
        let board = checker.status_board();
        let web = board.get(&"web/check/0".into()).unwrap();
        let api = board.get(&"api/check/0".into()).unwrap();
        assert_eq!(
            (web.state, api.state),
            (HealthState::Unhealthy, HealthState::Unhealthy)
        );
        assert!(
            web.probes > 0 && api.probes > 0,
            "each user counts the shared probes"
        );
        // Removing one user keeps the probe for the other.
        checker
            .sync([
                ("api/check/0".into(), http(server.addr, 50, 40, 2, 2)),
                ("other/check/0".into(), http(server.addr, 60, 40, 1, 1)),
            ])
            .await
            .unwrap();
        assert_eq!(checker.probe_tasks(), 2);
        assert!(board.get(&"web/check/0".into()).is_none());
        let api_probes = board.get(&"api/check/0".into()).unwrap().probes;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            board.get(&"api/check/0".into()).unwrap().probes > api_probes,
            "the remaining user is still fed"
        );
        checker.shutdown().await;
    }

    #[test]
    fn first_probes_spread_over_the_interval_on_the_grid() {
        let interval = Duration::from_millis(1000);
        let epoch = Instant::now();
        let now = epoch + Duration::from_millis(2_345);
        let firsts: Vec<Duration> = (0..1000)
            .map(|i| first_probe(epoch, now, &CheckId::from(format!("vip/{i}")), interval) - epoch)
            .collect();
        assert!(
            firsts
                .iter()
                .all(|&f| f >= now - epoch && f < now - epoch + interval),
            "every first probe within one interval from now: {firsts:?}"
        );
        assert!(
            firsts
                .iter()
                .all(|f| f.as_nanos() % PROBE_GRID.as_nanos() == 0),
            "every first probe on the grid: {firsts:?}"
        );
        // Ten 100 ms buckets of the phase, 100 expected in each.
        let mut buckets = [0; 10];
        for f in &firsts {
            buckets[(f.as_millis() % 1000 / 100) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&n| (50..=150).contains(&n)),
            "{buckets:?}"
        );
        let id = CheckId::from("same");
        let later = now + Duration::from_millis(7_777);
        assert_eq!(
            (first_probe(epoch, now, &id, interval) - epoch).as_nanos() % interval.as_nanos(),
            (first_probe(epoch, later, &id, interval) - epoch).as_nanos() % interval.as_nanos(),
            "a check keeps its phase when it starts again later"
        );
        let short = Duration::from_millis(50);
        assert_eq!(
            grid_step(short),
            Duration::from_millis(1),
            "short intervals keep a fine spread"
        );
        let first = first_probe(epoch, epoch, &id, short) - epoch;
        assert!(
            first < short && first.as_nanos().is_multiple_of(1_000_000),
            "a 50 ms check starts within 50 ms on a 1 ms grid: {first:?}"
        );
    }
}
