//! A client probing the VIP every millisecond or so with ICMP echo requests,
//! to measure the outage a failover causes as the client sees it: the
//! longest run of unanswered requests, from the first of them being sent to
//! the next answered one being sent.
//!
//! The prober keeps its cadence whether or not answers come back. (iputils
//! `ping` does not: with requests in flight it waits 10 ms between sends at
//! short intervals, so an outage measured with it ends up to 10 ms late.)
//! Measuring between send times, not answer times, also keeps a stall of
//! the prober itself (a busy machine not running its thread for a moment)
//! from counting as an outage: a request that was never sent was not lost.
//! It uses lbfo's own ICMP codec for IPv4, and for IPv6 an ICMPv6 echo
//! (RFC 4443) built here, whose checksum the kernel fills in, over a raw
//! socket in the client's namespace: one thread sends on a fixed schedule,
//! one notes which requests come back.

use std::{
    mem::MaybeUninit,
    net::{IpAddr, SocketAddr},
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
    /// Returns when each request went out (wall-clock seconds), by sequence.
    sender: JoinHandle<Vec<f64>>,
    /// Returns the sequence numbers answered.
    receiver: JoinHandle<Vec<u16>>,
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
    /// The longest run of unanswered requests: from sending its first to
    /// sending the next answered one (or to the end of probing, if none
    /// was). One lost request is an outage of one interval; none is zero.
    pub outage: Duration,
}

/// Sequence numbers are 16 bits on the wire; a prober sends at most this
/// many requests (65 s at 1 ms), so each maps back to one request.
const MAX_REQUESTS: usize = 1 << 16;

/// Seconds since the epoch, the clock of probe and fetch send times.
pub fn wall_clock() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is past 1970")
        .as_secs_f64()
}

impl Prober {
    /// Starts probing `target` (IPv4 or IPv6) from namespace `ns` every
    /// `interval`, for at most `run_for`.
    pub fn start(
        ns: &str,
        target: impl Into<IpAddr>,
        interval: Duration,
        run_for: Duration,
    ) -> Result<Prober> {
        let target: IpAddr = target.into();
        let socket = crate::lab::in_netns(ns, || match target {
            IpAddr::V4(_) => icmp::open_raw_socket(),
            IpAddr::V6(_) => open_raw_icmpv6_socket(),
        })?
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
            let to = socket2::SockAddr::from(SocketAddr::new(target, 0));
            std::thread::spawn(move || {
                let mut sent_at = Vec::new();
                let mut next = Instant::now();
                while !stop.load(Ordering::Relaxed) && next < until && sent_at.len() < MAX_REQUESTS
                {
                    let seq = sent_at.len() as u16;
                    let request = match target {
                        IpAddr::V4(_) => icmp::echo_request(id, seq, &token),
                        IpAddr::V6(_) => echo_request_v6(id, seq, &token),
                    };
                    let at = wall_clock();
                    if socket.send_to(&request, &to).is_ok() {
                        sent_at.push(at);
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
                sent_at
            })
        };
        let receiver = {
            let (socket, stop) = (socket.clone(), stop_receiving.clone());
            std::thread::spawn(move || {
                let mut answers = Vec::new();
                let mut buf = [MaybeUninit::<u8>::uninit(); 1500];
                while !stop.load(Ordering::Relaxed) {
                    let mut pfd = libc::pollfd {
                        fd: socket.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd.
                    unsafe { libc::poll(&mut pfd, 1, 20) };
                    while let Ok((n, from)) = socket.recv_from(&mut buf) {
                        // SAFETY: recv_from initialised the first `n` bytes.
                        let packet: Vec<u8> = buf[..n]
                            .iter()
                            .map(|b| unsafe { b.assume_init() })
                            .collect();
                        let from = from.as_socket().map(|a| a.ip());
                        let seq = match target {
                            IpAddr::V4(v4) => match icmp::parse_packet(&packet, &token) {
                                Some((key, Reply::Echo)) if key.id == id && key.addr == v4 => {
                                    Some(key.seq)
                                }
                                _ => None,
                            },
                            IpAddr::V6(_) if from == Some(target) => {
                                echo_reply_v6(&packet, id, &token)
                            }
                            IpAddr::V6(_) => None,
                        };
                        answers.extend(seq);
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
            started,
            deadline: started + run_for.as_secs_f64(),
        })
    }

    /// Stops probing and reports what it saw.
    pub fn finish(self) -> Result<ProbeReport> {
        self.stop_sending.store(true, Ordering::Relaxed);
        let sent_at = self.sender.join().expect("the prober's sender panicked");
        let stopped = wall_clock().min(self.deadline);
        // Answers to the last requests are on their way.
        std::thread::sleep(Duration::from_millis(10));
        self.stop_receiving.store(true, Ordering::Relaxed);
        let answers = self
            .receiver
            .join()
            .expect("the prober's receiver panicked");
        Ok(report(&sent_at, &answers, self.started, stopped))
    }
}

/// A raw ICMPv6 socket, non-blocking; the kernel computes the checksum of
/// what it sends (RFC 3542 section 3.1).
fn open_raw_icmpv6_socket() -> std::io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV6,
        socket2::Type::RAW,
        Some(socket2::Protocol::ICMPV6),
    )?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

const ECHO_REQUEST_V6: u8 = 128;
const ECHO_REPLY_V6: u8 = 129;

/// An ICMPv6 echo request: type, code, checksum (left to the kernel), id,
/// sequence, then the token.
fn echo_request_v6(id: u16, seq: u16, token: &[u8; TOKEN_LEN]) -> Vec<u8> {
    let mut p = vec![ECHO_REQUEST_V6, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(token);
    p
}

/// The sequence number of an ICMPv6 echo reply to one of our requests (a
/// raw ICMPv6 socket hands over the message without the IPv6 header).
fn echo_reply_v6(message: &[u8], id: u16, token: &[u8; TOKEN_LEN]) -> Option<u16> {
    let [
        ECHO_REPLY_V6,
        0,
        _,
        _,
        id_hi,
        id_lo,
        seq_hi,
        seq_lo,
        rest @ ..,
    ] = message
    else {
        return None;
    };
    (u16::from_be_bytes([*id_hi, *id_lo]) == id && rest.starts_with(token))
        .then(|| u16::from_be_bytes([*seq_hi, *seq_lo]))
}

fn report(sent_at: &[f64], answered_seqs: &[u16], started: f64, stopped: f64) -> ProbeReport {
    let mut answered = vec![false; sent_at.len()];
    for &seq in answered_seqs {
        if let Some(a) = answered.get_mut(usize::from(seq)) {
            *a = true;
        }
    }
    ProbeReport {
        sent: sent_at.len() as u64,
        answered: answered.iter().filter(|&&a| a).count() as u64,
        outage: longest_outage(sent_at, &answered, started, stopped),
    }
}

/// The longest run of unanswered requests (`answered[i]` for the request
/// sent at `sent_at[i]`), measured between send times. A run still going
/// when probing stopped lasts until then, so an outage that never ended is
/// not mistaken for none; with nothing sent it is the whole run.
pub fn longest_outage(sent_at: &[f64], answered: &[bool], started: f64, stopped: f64) -> Duration {
    let mut outage = 0f64;
    let mut unanswered_since: Option<f64> = None;
    for (&at, &ok) in sent_at.iter().zip(answered) {
        if ok {
            if let Some(since) = unanswered_since.take() {
                outage = outage.max(at - since);
            }
        } else if unanswered_since.is_none() {
            unanswered_since = Some(at);
        }
    }
    if sent_at.is_empty() {
        unanswered_since = Some(started);
    }
    if let Some(since) = unanswered_since {
        outage = outage.max(stopped - since);
    }
    Duration::from_secs_f64(outage.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Requests every 5 ms from t = 100 s; `lost` are not answered.
    fn run(count: usize, lost: std::ops::Range<usize>) -> (Vec<f64>, Vec<u16>) {
        let sent: Vec<f64> = (0..count).map(|i| 100.0 + i as f64 * 0.005).collect();
        let answered = (0..count as u16)
            .filter(|i| !lost.contains(&usize::from(*i)))
            .collect();
        (sent, answered)
    }

    #[test]
    fn the_longest_unanswered_run_is_the_outage() {
        let (sent, answered) = run(100, 20..80);
        let r = report(&sent, &answered, 99.9, 100.5);
        assert_eq!((r.sent, r.answered), (100, 40));
        assert!((r.outage.as_secs_f64() - 0.300).abs() < 1e-9, "{r:?}");
        let (sent, answered) = run(100, 50..51);
        let r = report(&sent, &answered, 99.9, 100.5);
        assert!(
            (r.outage.as_secs_f64() - 0.005).abs() < 1e-9,
            "one lost request: {r:?}"
        );
        let (sent, answered) = run(100, 0..0);
        assert_eq!(report(&sent, &answered, 99.9, 100.5).outage, Duration::ZERO);
    }

    #[test]
    fn silence_until_the_stop_is_an_outage() {
        let (sent, answered) = run(100, 90..100);
        let r = report(&sent, &answered, 99.9, 101.0);
        assert!((r.outage.as_secs_f64() - 0.550).abs() < 1e-9, "{r:?}");
        let r = report(&[], &[], 99.0, 101.0);
        assert_eq!((r.answered, r.outage), (0, Duration::from_secs(2)));
    }

    /// The real thing on loopback, both families: every request is
    /// answered (by the kernel, which also checks the ICMPv6 checksum), and
    /// the prober keeps its cadence.
    #[test]
    fn probes_loopback_at_its_interval() {
        let lab = crate::lab::Lab::new().expect("creating a namespace (needs root)");
        crate::lab::ip(lab.switch_ns(), &["link", "set", "lo", "up"]).unwrap();
        let interval = Duration::from_millis(1);
        for target in [
            IpAddr::from(std::net::Ipv4Addr::LOCALHOST),
            IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        ] {
            let prober =
                Prober::start(lab.switch_ns(), target, interval, Duration::from_secs(5)).unwrap();
            std::thread::sleep(Duration::from_millis(300));
            let r = prober.finish().unwrap();
            assert!(
                r.sent >= 200,
                "{target}: {} requests in 300 ms at 1 ms",
                r.sent
            );
            assert_eq!(
                r.answered, r.sent,
                "{target}: loopback answers every request"
            );
            assert_eq!(r.outage, Duration::ZERO, "{target}: {r:?}");
        }
    }
}
