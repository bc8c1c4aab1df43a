//! The clock of leases: the kernel's tick counter (jiffies), which the XDP
//! program reads with `bpf_jiffies64()` for the price of one memory load.
//! The control plane reads the same counter through the object's
//! `lbfo_clock` program ([`crate::datapath::Datapath::jiffies`]) and writes
//! deadlines in it.

use std::{sync::OnceLock, time::Duration};

use nix::time::{ClockId, clock_getres};

/// How long one tick is: the resolution of CLOCK_MONOTONIC_COARSE, which
/// the kernel advances with jiffies.
pub fn tick() -> Duration {
    static TICK: OnceLock<Duration> = OnceLock::new();
    *TICK.get_or_init(|| {
        clock_getres(ClockId::CLOCK_MONOTONIC_COARSE)
            .ok()
            .map(|ts| Duration::new(ts.tv_sec() as u64, ts.tv_nsec() as u32))
            .filter(|t| !t.is_zero())
            // Without an answer assume the slowest common tick (100 Hz).
            .unwrap_or(Duration::from_millis(10))
    })
}

/// The deadline for a lease of `lease` starting when the counter reads
/// `now`. The counter last moved at most one tick ago, so rounding the
/// lease down to whole ticks ends it no later than `lease` from now; it
/// never rounds to zero.
pub fn lease_deadline(now: u64, lease: Duration) -> u64 {
    let ticks = (lease.as_nanos() / tick().as_nanos()).max(1) as u64;
    now + ticks
}

/// Time left on a lease.
pub fn lease_left(deadline: u64, now: u64) -> Duration {
    tick() * deadline.saturating_sub(now) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_whole_ticks_rounded_down_but_never_zero() {
        let t = tick();
        assert!(
            t >= Duration::from_micros(100) && t <= Duration::from_millis(10),
            "a tick is 0.1-10 ms, got {t:?}"
        );
        assert_eq!(lease_deadline(1000, t * 25), 1025);
        assert_eq!(lease_deadline(1000, t * 25 + t / 2), 1025, "rounded down");
        assert_eq!(lease_deadline(1000, t / 3), 1001, "never zero");
        assert_eq!(lease_left(1025, 1000), t * 25);
        assert_eq!(lease_left(1000, 1025), Duration::ZERO);
    }
}
