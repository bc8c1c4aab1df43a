//! The service manager's notify protocol (sd_notify): readiness, reloads,
//! shutdown and the watchdog. Without `NOTIFY_SOCKET` every call is a no-op.
//!
//! The watchdog ping is sent by the main loop itself (an arm of its
//! `select!`), never by a task of its own: a loop that is stuck stops
//! pinging, systemd kills the process after `WatchdogSec=`, and meanwhile
//! the lease has already made XDP fall silent for every VIP.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio::{
    signal::unix::{Signal, SignalKind, signal},
    time::{Interval, MissedTickBehavior},
};

pub(super) struct Systemd {
    /// Half of `WATCHDOG_USEC`, as sd_watchdog_enabled(3) advises; `None`
    /// when the service manager asked for no watchdog.
    watchdog: Option<Duration>,
    /// A failing ping is logged once, not at every tick.
    watchdog_failed: bool,
}

impl Systemd {
    pub(super) fn from_env() -> Systemd {
        let notifying = std::env::var_os("NOTIFY_SOCKET").is_some();
        let watchdog = sd_notify::watchdog_enabled()
            .filter(|usec| notifying && !usec.is_zero())
            .map(|usec| usec / 2);
        Systemd {
            watchdog,
            watchdog_failed: false,
        }
    }

    /// The main loop's timer for [`Systemd::watchdog`].
    pub(super) fn watchdog_timer(&self) -> WatchdogTimer {
        WatchdogTimer(self.watchdog.map(|every| {
            let mut ping = tokio::time::interval(every);
            // After a stall, one ping, not a burst that would hide it.
            ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
            ping
        }))
    }

    /// XDP is attached and the control socket answers (or a reload is
    /// over). `status` is what `systemctl status` shows.
    pub(super) fn ready(&self, status: &str) {
        // A newline would end the STATUS= assignment.
        let status = status.replace('\n', "; ");
        send(&[NotifyState::Ready, NotifyState::Status(&status)]);
    }

    /// SIGHUP: the configuration is read again. `MONOTONIC_USEC` is what
    /// `Type=notify-reload` (systemd 253 and later) needs to tie this
    /// message to the reload it asked for; plain `Type=notify` ignores it.
    pub(super) fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => send(&[NotifyState::Reloading, now]),
            Err(e) => {
                tracing::warn!("cannot read CLOCK_MONOTONIC for the reload notification: {e}");
                send(&[NotifyState::Reloading]);
            }
        }
    }

    pub(super) fn stopping(&self) {
        send(&[NotifyState::Stopping]);
    }

    pub(super) fn watchdog(&mut self) {
        if let Err(e) = sd_notify::notify(&[NotifyState::Watchdog])
            && !self.watchdog_failed
        {
            self.watchdog_failed = true;
            tracing::warn!("cannot ping the service manager's watchdog: {e}");
        }
    }
}

/// Fires at half `WATCHDOG_USEC`; never without a watchdog.
pub(super) struct WatchdogTimer(Option<Interval>);

impl WatchdogTimer {
    pub(super) fn enabled(&self) -> bool {
        self.0.is_some()
    }

    pub(super) async fn due(&mut self) {
        match &mut self.0 {
            Some(interval) => {
                interval.tick().await;
            }
            None => std::future::pending().await,
        }
    }
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        let what: Vec<String> = states.iter().map(ToString::to_string).collect();
        tracing::warn!(
            "cannot notify the service manager ({}): {e}",
            what.join(" ")
        );
    }
}

/// A watchdog pings only while the main loop turns; this hook is how the
/// end-to-end tests show it. With `LBFO_TEST_STALL_ON_SIGUSR1=MS` set, each
/// SIGUSR1 blocks the main loop's thread for MS milliseconds, as a loop
/// stuck in a blocking call would be, while the rest of the process (the
/// runtime's workers, health checks) goes on. Stopping the whole process
/// (SIGSTOP) would stop any pinger, in the loop or not, and prove nothing.
/// Without the variable SIGUSR1 keeps its default action.
pub(super) struct StallHook {
    signal: Signal,
    stall: Duration,
}

impl StallHook {
    pub(super) fn from_env() -> std::io::Result<Option<StallHook>> {
        let Some(ms) = std::env::var("LBFO_TEST_STALL_ON_SIGUSR1")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        else {
            return Ok(None);
        };
        Ok(Some(StallHook {
            signal: signal(SignalKind::user_defined1())?,
            stall: Duration::from_millis(ms),
        }))
    }

    /// Waits for SIGUSR1 (forever without the hook); returns the stall.
    pub(super) async fn requested(hook: &mut Option<StallHook>) -> Duration {
        match hook {
            Some(hook) => {
                hook.signal.recv().await;
                hook.stall
            }
            None => std::future::pending().await,
        }
    }
}
