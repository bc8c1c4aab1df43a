//! A client probing the VIP every millisecond or so with ICMP echo requests,
//! to measure the outage a failover causes as the client sees it: the
//! longest gap between two consecutive answered probes.
//!
//! The prober keeps its cadence whether or not answers come back. (iputils
//! `ping` does not: with requests in flight it waits 10 ms between sends at
//! short intervals, so an outage measured with it ends up to 10 ms late.)
//! It uses lbfo's own ICMP codec and a raw socket in the client's namespace:
//! one thread sends on a fixed schedule, one records when answers arrive.

use std::{
    io::Read as _,
    net::{Ipv4Addr, SocketAddrV4},
    os::fd::AsRawFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use lbfo::health::icmp::{self, Reply, TOKEN_LEN};

pub struct Prober {
    stop_sending: Arc<AtomicBool>,
    stop_receiving: Arc<AtomicBool>,
    /// Returns how many requests went out.
    sender: JoinHandle<u64>,
    /// Returns when each answer arrived (wall-clock seconds).
    receiver: JoinHandle<Vec<f64>>,
    interval: Duration,
    /// Wall-clock seconds when the prober started.
    started: f64,
    /// When the prober stops sending by itself, in the same clock.
    deadline: f64,
}

/// What the prober saw.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    pub sent: u64,
    pub answered: u64,
    /// Longest time between two consecutive answers, or from the last
    /// answer to the end of probing.
    pub longest_gap: Duration,
    /// Answer arrival times, seconds since the epoch.
    pub answers: Vec<f64>,
}

impl ProbeReport {
    /// The outage: the longest gap minus the probe interval (a gap of one
    /// interval is no outage at all).
    pub fn outage(&self, interval: Duration) -> Duration {
        self.longest_gap.saturating_sub(interval)
    }
}

/// Seconds since the epoch.
fn wall_clock() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is past 1970")
        .as_secs_f64()
}

impl Prober {
    /// Starts probing `target` from namespace `ns` every `interval`, for at
    /// most `run_for`.
    pub fn start(
        ns: &str,
        target: Ipv4Addr,
        interval: Duration,
        run_for: Duration,
    ) -> Result<Prober> {
        let socket = crate::lab::in_netns(ns, icmp::open_raw_socket)?
            .context("opening a raw ICMP socket for the prober")?;
        let socket = Arc::new(socket);
        let stop_sending = Arc::new(AtomicBool::new(false));
        let stop_receiving = Arc::new(AtomicBool::new(false));
        // Different for every prober, so two probers never take each
        // other's answers.
        let nanos = wall_clock().to_bits();
        let token: [u8; TOKEN_LEN] = (nanos ^ u64::from(std::process::id())).to_be_bytes();
        let id = (nanos as u16) ^ (std::process::id() as u16);
        let started = wall_clock();
        let until = Instant::now() + run_for;

        let sender = {
            let (socket, stop) = (socket.clone(), stop_sending.clone());
            let to = socket2::SockAddr::from(SocketAddrV4::new(target, 0));
            std::thread::spawn(move || {
                let mut sent = 0u64;
                let mut next = Instant::now();
                while !stop.load(Ordering::Relaxed) && next < until {
                    let request = icmp::echo_request(id, sent as u16, &token);
                    if socket.send_to(&request, &to).is_ok() {
                        sent += 1;
                    }
                    // A fixed schedule; after a stall, carry on from now
                    // instead of sending the missed requests in a burst.
                    next += interval;
                    let now = Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    } else {
                        next = now;
                    }
                }
                sent
            })
        };
        let receiver = {
            let (socket, stop) = (socket.clone(), stop_receiving.clone());
            std::thread::spawn(move || {
                let mut answers = Vec::new();
                let mut buf = [0u8; 1500];
                while !stop.load(Ordering::Relaxed) {
                    let mut pfd = libc::pollfd {
                        fd: socket.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd.
                    unsafe { libc::poll(&mut pfd, 1, 20) };
                    while let Ok(n) = (&*socket).read(&mut buf) {
                        if let Some((key, Reply::Echo)) = icmp::parse_packet(&buf[..n], &token)
                            && key.id == id
                            && key.addr == target
                        {
                            answers.push(wall_clock());
                        }
                    }
                }
                answers
            })
        };
        Ok(Prober {
            stop_sending,
            stop_receiving,
            sender,
            receiver,
            interval,
            started,
            deadline: started + run_for.as_secs_f64(),
        })
    }

    /// Stops probing and reports what it saw.
    pub fn finish(self) -> Result<ProbeReport> {
        self.stop_sending.store(true, Ordering::Relaxed);
        let sent = self.sender.join().expect("the prober's sender panicked");
        let stopped = wall_clock().min(self.deadline);
        // Answers to the last requests are on their way.
        std::thread::sleep(Duration::from_millis(10));
        self.stop_receiving.store(true, Ordering::Relaxed);
        let answers = self
            .receiver
            .join()
            .expect("the prober's receiver panicked");
        Ok(report(answers, sent, self.interval, self.started, stopped))
    }
}

/// The longest gap counts the silence after the last answer up to the
/// moment probing stopped, so an outage that never ended is not mistaken
/// for none; with no answer at all it is the whole run.
fn report(
    answers: Vec<f64>,
    sent: u64,
    interval: Duration,
    started: f64,
    stopped: f64,
) -> ProbeReport {
    let trailing = stopped - answers.last().copied().unwrap_or(started);
    let longest_gap = answers
        .windows(2)
        .map(|w| w[1] - w[0])
        .fold(interval.as_secs_f64().max(trailing), f64::max);
    ProbeReport {
        sent,
        answered: answers.len() as u64,
        longest_gap: Duration::from_secs_f64(longest_gap),
        answers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_gap_between_answers() {
        let answers = vec![100.000, 100.005, 100.305, 100.310];
        let r = report(answers, 63, Duration::from_millis(5), 99.9, 100.312);
        assert_eq!((r.sent, r.answered), (63, 4));
        assert!(
            (r.longest_gap.as_secs_f64() - 0.300).abs() < 1e-6,
            "gap {:?}",
            r.longest_gap
        );
        assert!((r.outage(Duration::from_millis(5)).as_secs_f64() - 0.295).abs() < 1e-6);
    }

    #[test]
    fn silence_until_the_stop_is_an_outage() {
        let r = report(
            vec![100.000, 100.005],
            200,
            Duration::from_millis(5),
            99.9,
            101.005,
        );
        assert!((r.longest_gap.as_secs_f64() - 1.0).abs() < 1e-6, "{r:?}");
        let r = report(vec![], 400, Duration::from_millis(5), 99.0, 101.0);
        assert_eq!((r.answered, r.longest_gap), (0, Duration::from_secs(2)));
    }

    /// The real thing on loopback: every request is answered, and the
    /// prober keeps its cadence.
    #[test]
    fn probes_loopback_at_its_interval() {
        let lab = crate::lab::Lab::new().expect("creating a namespace (needs root)");
        crate::lab::ip(lab.switch_ns(), &["link", "set", "lo", "up"]).unwrap();
        let interval = Duration::from_millis(1);
        let prober = Prober::start(
            lab.switch_ns(),
            Ipv4Addr::LOCALHOST,
            interval,
            Duration::from_secs(5),
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let r = prober.finish().unwrap();
        assert!(r.sent >= 200, "{} requests in 300 ms at 1 ms", r.sent);
        assert_eq!(r.answered, r.sent, "loopback answers every request");
        assert!(r.outage(interval) < Duration::from_millis(20), "{r:?}");
    }
}
