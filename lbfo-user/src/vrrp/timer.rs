//! The VRRP timers' clock: a one-shot timerfd, which the kernel fires with
//! its high-resolution timers.
//!
//! tokio's own timers tick in whole milliseconds and fire up to a
//! millisecond late. At a 10 ms advertisement interval that is a tenth of
//! the interval: a Backup would take over that much after its
//! Master_Down_Interval, and a Master's adverts would wander. This timer
//! fires within the kernel's timer slack (about 50 µs) of its deadline.

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd, RawFd},
};

use nix::{
    errno::Errno,
    sys::{
        time::TimeSpec,
        timer::Expiration,
        timerfd::{ClockId, TimerFd, TimerFlags, TimerSetTimeFlags},
    },
};
use tokio::{
    io::{Interest, unix::AsyncFd},
    time::Instant,
};

/// A TimerFd as tokio's reactor wants it (by raw descriptor).
struct Timer(TimerFd);

impl AsRawFd for Timer {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

pub struct PreciseTimer {
    fd: AsyncFd<Timer>,
    /// The deadline the timerfd is set to and has not fired for yet.
    armed: Option<Instant>,
}

impl PreciseTimer {
    pub fn new() -> io::Result<PreciseTimer> {
        let fd = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        // SAFETY: the AsyncFd owns the TimerFd, so the descriptor stays
        // open, and the same, for as long as it is registered.
        let fd = unsafe { AsyncFd::register_with_interest(Timer(fd), Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(PreciseTimer { fd, armed: None })
    }

    /// Completes at `deadline`, at once if it has passed. Cancel-safe: a
    /// call dropped before it completes leaves the timer set, and the next
    /// call with the same deadline waits for the same expiry.
    pub async fn sleep_until(&mut self, deadline: Instant) -> io::Result<()> {
        if self.armed != Some(deadline) {
            // Relative to now; at least 1 ns, because 0 would disarm it.
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .max(std::time::Duration::from_nanos(1));
            self.fd.get_ref().0.set(
                Expiration::OneShot(TimeSpec::from_duration(wait)),
                TimerSetTimeFlags::empty(),
            )?;
            self.armed = Some(deadline);
        }
        loop {
            let mut ready = self.fd.readable().await?;
            let mut expirations = [0u8; 8];
            match nix::unistd::read(self.fd.get_ref().0.as_fd(), &mut expirations) {
                Ok(_) => {
                    self.armed = None;
                    return Ok(());
                }
                Err(Errno::EAGAIN) => ready.clear_ready(),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Never early. How late is for the failover benchmark to show; the
    /// median is printed here for whoever runs this by hand.
    #[tokio::test]
    async fn fires_at_its_deadline_never_before() {
        let mut timer = PreciseTimer::new().unwrap();
        let mut late = Vec::new();
        for _ in 0..50 {
            // A deadline between tokio's millisecond ticks.
            let deadline = Instant::now() + Duration::from_micros(2_300);
            timer.sleep_until(deadline).await.unwrap();
            let now = Instant::now();
            assert!(now >= deadline, "fired {:?} early", deadline - now);
            late.push(now - deadline);
        }
        late.sort();
        eprintln!("median lateness {:?}", late[late.len() / 2]);
    }

    #[tokio::test]
    async fn a_passed_deadline_fires_at_once_and_a_dropped_wait_keeps_it() {
        let mut timer = PreciseTimer::new().unwrap();
        timer
            .sleep_until(Instant::now() - Duration::from_millis(5))
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_millis(20);
        // Dropped before it fires, as a lost `select!` branch would be.
        let _ = tokio::time::timeout(Duration::from_millis(5), timer.sleep_until(deadline)).await;
        timer.sleep_until(deadline).await.unwrap();
        assert!(Instant::now() >= deadline);
    }
}
