//! `kind = "icmp"`: one echo request, healthy when the matching echo reply
//! comes back within the timeout.
//!
//! One raw ICMP socket serves every icmp check of the engine. Why raw and not
//! a "ping socket" (`SOCK_DGRAM`/`IPPROTO_ICMP`): lbfo runs as root, and ping
//! sockets work only for groups listed in `net.ipv4.ping_group_range`, which
//! is empty ("1 0") on many systems, root included. A raw socket sees every
//! ICMP packet the host receives, so replies are matched strictly:
//!
//! - every probe gets its own (identifier, sequence) pair from one 32-bit
//!   counter, so no two probes in flight share a pair;
//! - a reply must come from the probed address, carry that exact pair, and
//!   echo back a random per-socket token in its payload, so replies to other
//!   programs' pings (or to another lbfo) never count;
//! - "destination unreachable" and "time exceeded" errors that quote one of
//!   our requests end that probe at once with the reason.
//!
//! The kernel-side `ICMP_FILTER` drops every other ICMP type before it reaches
//! the socket, which keeps wake-ups down on busy hosts.

use std::{
    collections::HashMap,
    hash::{BuildHasher as _, Hasher as _},
    io::{self, Read as _},
    net::{Ipv4Addr, SocketAddrV4},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::oneshot,
    time::{Instant, timeout_at},
};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, warn};

use super::error::ProbeError;
use crate::checksum;

const ECHO_REPLY: u8 = 0;
const DEST_UNREACHABLE: u8 = 3;
const ECHO_REQUEST: u8 = 8;
const TIME_EXCEEDED: u8 = 11;
/// Payload: the socket's token, then padding to a common small size.
const PAYLOAD_LEN: usize = 16;
pub const TOKEN_LEN: usize = 8;

/// Which probe a packet answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProbeKey {
    pub addr: Ipv4Addr,
    pub id: u16,
    pub seq: u16,
}

/// What came back for a probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Echo,
    Unreachable { from: Ipv4Addr, reason: String },
}

/// The engine's ICMP socket and its receiver task (stopped on drop).
pub(crate) struct IcmpClient {
    shared: Arc<Shared>,
    _stop: DropGuard,
}

struct Shared {
    socket: AsyncFd<Socket>,
    pending: Pending,
    /// First identifier; random so two lbfo processes start apart.
    id_base: u16,
    counter: AtomicU32,
}

/// Probes waiting for their reply.
pub(crate) struct Pending {
    token: [u8; TOKEN_LEN],
    waiting: Mutex<HashMap<ProbeKey, oneshot::Sender<(Reply, Instant)>>>,
}

impl IcmpClient {
    /// Opens the raw socket in the current network namespace and starts the
    /// receiver task. Must run inside the tokio runtime.
    pub(crate) fn open() -> io::Result<Self> {
        Self::from_socket(open_raw_socket()?)
    }

    /// Wraps a socket from [`open_raw_socket`] (which may have been opened in
    /// another network namespace).
    pub(crate) fn from_socket(socket: Socket) -> io::Result<Self> {
        let random = random_u64();
        // SAFETY: `socket2::Socket` owns its fd and closes it only on drop;
        // the AsyncFd owns the Socket, so the fd stays open and the same for
        // the AsyncFd's whole life.
        let socket = unsafe { AsyncFd::register(socket) }.map_err(|e| e.into_parts().1)?;
        let shared = Arc::new(Shared {
            socket,
            pending: Pending::new(random.to_le_bytes()),
            id_base: (random >> 48) as u16,
            counter: AtomicU32::new(0),
        });
        let stop = CancellationToken::new();
        tokio::spawn(receive(shared.clone(), stop.clone()));
        Ok(Self {
            shared,
            _stop: stop.drop_guard(),
        })
    }

    /// Sends one echo request and waits for its reply until `deadline`;
    /// returns the round-trip time.
    pub(crate) async fn ping(
        &self,
        addr: Ipv4Addr,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Duration, ProbeError> {
        let shared = &self.shared;
        let (key, reply) = loop {
            let n = shared.counter.fetch_add(1, Ordering::Relaxed);
            let key = ProbeKey {
                addr,
                id: shared.id_base.wrapping_add((n >> 16) as u16),
                seq: n as u16,
            };
            // Taken only after 2^32 probes wrapped onto one still in flight.
            if let Some(rx) = shared.pending.register(key) {
                break (key, rx);
            }
        };
        let _forget = ForgetOnDrop {
            pending: &shared.pending,
            key,
        };
        let packet = echo_request(key.id, key.seq, &shared.pending.token);
        let dest = SockAddr::from(SocketAddrV4::new(addr, 0));
        let sent_at = Instant::now();
        timeout_at(
            deadline,
            shared
                .socket
                .async_io(Interest::WRITABLE, |s| s.send_to(&packet, &dest)),
        )
        .await
        .map_err(|_| ProbeError::Timeout {
            waiting_for: format!("sending an echo request to {addr}"),
            after: timeout,
        })?
        .map_err(|source| ProbeError::IcmpSend { addr, source })?;
        match timeout_at(deadline, reply).await {
            Err(_) => Err(ProbeError::Timeout {
                waiting_for: format!(
                    "waiting for an echo reply from {addr} (id {}, seq {})",
                    key.id, key.seq
                ),
                after: timeout,
            }),
            Ok(Ok((Reply::Echo, at))) => Ok(at.saturating_duration_since(sent_at)),
            Ok(Ok((Reply::Unreachable { from, reason }, _))) => {
                Err(ProbeError::IcmpUnreachable { addr, from, reason })
            }
            // The receiver task only stops when the client is dropped.
            Ok(Err(_)) => Err(ProbeError::IcmpSocket(io::Error::other(
                "the ICMP receiver stopped",
            ))),
        }
    }
}

/// A non-blocking raw ICMPv4 socket that only receives echo replies and the
/// errors that can answer an echo request.
pub fn open_raw_socket() -> io::Result<Socket> {
    let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))?;
    socket.set_nonblocking(true)?;
    // Room for bursts of replies when thousands of icmp checks run.
    let _ = socket.set_recv_buffer_size(1 << 20);
    set_icmp_filter(&socket, &[ECHO_REPLY, DEST_UNREACHABLE, TIME_EXCEEDED]);
    Ok(socket)
}

/// Linux `ICMP_FILTER` (SOL_RAW): a bit set per ICMP type to *drop*.
fn set_icmp_filter(socket: &Socket, keep: &[u8]) {
    use std::os::fd::AsRawFd as _;
    const ICMP_FILTER: libc::c_int = 1;
    let mut dropped: u32 = !0;
    for &t in keep {
        dropped &= !(1 << t);
    }
    // SAFETY: a valid socket fd and a pointer/length pair for a u32, which
    // is the kernel's `struct icmp_filter`.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_RAW,
            ICMP_FILTER,
            (&dropped as *const u32).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        // Only an optimisation: matching below does not rely on it.
        debug!(error = %io::Error::last_os_error(), "ICMP_FILTER not set");
    }
}

impl Pending {
    fn new(token: [u8; TOKEN_LEN]) -> Self {
        Self {
            token,
            waiting: Mutex::new(HashMap::new()),
        }
    }

    /// Registers a probe; `None` if that key is already waiting.
    fn register(&self, key: ProbeKey) -> Option<oneshot::Receiver<(Reply, Instant)>> {
        let mut waiting = self.waiting.lock().expect("pending map lock");
        if waiting.contains_key(&key) {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        waiting.insert(key, tx);
        Some(rx)
    }

    fn forget(&self, key: &ProbeKey) {
        self.waiting.lock().expect("pending map lock").remove(key);
    }

    /// Hands a received packet to the probe it answers, if any. Returns
    /// whether it matched.
    fn dispatch(&self, packet: &[u8], at: Instant) -> bool {
        let Some((key, reply)) = parse_packet(packet, &self.token) else {
            return false;
        };
        let waiter = self.waiting.lock().expect("pending map lock").remove(&key);
        match waiter {
            Some(tx) => {
                let _ = tx.send((reply, at));
                true
            }
            None => false,
        }
    }
}

struct ForgetOnDrop<'a> {
    pending: &'a Pending,
    key: ProbeKey,
}

impl Drop for ForgetOnDrop<'_> {
    fn drop(&mut self) {
        self.pending.forget(&self.key);
    }
}

async fn receive(shared: Arc<Shared>, stop: CancellationToken) {
    let mut buf = [0u8; 2048];
    loop {
        let mut ready = tokio::select! {
            _ = stop.cancelled() => return,
            ready = shared.socket.readable() => match ready {
                Ok(ready) => ready,
                Err(e) => {
                    warn!(error = %e, "ICMP socket failed; icmp checks will time out");
                    return;
                }
            },
        };
        // Drain everything queued, then wait for readiness again.
        loop {
            match ready.try_io(|s| s.get_ref().read(&mut buf)) {
                Ok(Ok(n)) => {
                    shared.pending.dispatch(&buf[..n], Instant::now());
                }
                Ok(Err(e)) => {
                    debug!(error = %e, "ICMP receive error");
                    break;
                }
                Err(_would_block) => break,
            }
        }
    }
}

/// An echo request with its checksum.
pub fn echo_request(id: u16, seq: u16, token: &[u8; TOKEN_LEN]) -> Vec<u8> {
    let mut p = vec![0u8; 8 + PAYLOAD_LEN];
    p[0] = ECHO_REQUEST;
    p[4..6].copy_from_slice(&id.to_be_bytes());
    p[6..8].copy_from_slice(&seq.to_be_bytes());
    p[8..8 + TOKEN_LEN].copy_from_slice(token);
    p[8 + TOKEN_LEN..].copy_from_slice(b"lbfo-hc\0");
    let sum = checksum::internet(&[&p]);
    p[2..4].copy_from_slice(&sum.to_be_bytes());
    p
}

/// Parses what a raw ICMP socket receives (an IPv4 header, then ICMP) into
/// the probe it answers: an echo reply with our token, or an error quoting
/// one of our echo requests.
pub fn parse_packet(packet: &[u8], token: &[u8; TOKEN_LEN]) -> Option<(ProbeKey, Reply)> {
    let (src, icmp) = split_ipv4(packet)?;
    if icmp.len() < 8 || checksum::internet(&[icmp]) != 0 {
        return None;
    }
    let (kind, code) = (icmp[0], icmp[1]);
    match kind {
        ECHO_REPLY if code == 0 => {
            let payload = &icmp[8..];
            if payload.len() < TOKEN_LEN || &payload[..TOKEN_LEN] != token {
                return None;
            }
            let key = ProbeKey {
                addr: src,
                id: u16::from_be_bytes([icmp[4], icmp[5]]),
                seq: u16::from_be_bytes([icmp[6], icmp[7]]),
            };
            Some((key, Reply::Echo))
        }
        DEST_UNREACHABLE | TIME_EXCEEDED => {
            // The error quotes the original IPv4 header and its first 8
            // bytes: our echo request's type, code, checksum, id and seq.
            let quoted = &icmp[8..];
            let ihl = usize::from(quoted.first()? & 0x0f) * 4;
            if quoted.len() < ihl + 8 || ihl < 20 || quoted[9] != 1 {
                return None;
            }
            let dst = Ipv4Addr::new(quoted[16], quoted[17], quoted[18], quoted[19]);
            let orig = &quoted[ihl..ihl + 8];
            if orig[0] != ECHO_REQUEST {
                return None;
            }
            let key = ProbeKey {
                addr: dst,
                id: u16::from_be_bytes([orig[4], orig[5]]),
                seq: u16::from_be_bytes([orig[6], orig[7]]),
            };
            Some((
                key,
                Reply::Unreachable {
                    from: src,
                    reason: error_reason(kind, code),
                },
            ))
        }
        _ => None,
    }
}

fn split_ipv4(packet: &[u8]) -> Option<(Ipv4Addr, &[u8])> {
    let first = *packet.first()?;
    let ihl = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || ihl < 20 || packet.len() < ihl || packet[9] != 1 {
        return None;
    }
    let src = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    Some((src, &packet[ihl..]))
}

fn error_reason(kind: u8, code: u8) -> String {
    match (kind, code) {
        (TIME_EXCEEDED, _) => "time to live exceeded in transit".into(),
        (_, 0) => "network unreachable".into(),
        (_, 1) => "host unreachable".into(),
        (_, 3) => "port unreachable".into(),
        (_, 9 | 10 | 13) => "administratively prohibited".into(),
        (_, c) => format!("destination unreachable (code {c})"),
    }
}

fn random_u64() -> u64 {
    // RandomState is seeded from the OS's randomness per process.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id().into());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::testutil::{Netns, is_root};
    use std::process::Command;

    const TOKEN: [u8; TOKEN_LEN] = *b"12345678";

    /// An IPv4 header (no options) from `src` to `dst` around `icmp`.
    fn ipv4(src: [u8; 4], dst: [u8; 4], icmp: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0];
        p[2..4].copy_from_slice(&((20 + icmp.len()) as u16).to_be_bytes());
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(icmp);
        p
    }

    /// The reply a host sends to `echo_request(id, seq, token)`.
    fn echo_reply(id: u16, seq: u16, token: &[u8; TOKEN_LEN]) -> Vec<u8> {
        let mut p = echo_request(id, seq, token);
        p[0] = ECHO_REPLY;
        p[2..4].copy_from_slice(&[0, 0]);
        let sum = checksum::internet(&[&p]);
        p[2..4].copy_from_slice(&sum.to_be_bytes());
        p
    }

    fn key(addr: [u8; 4], id: u16, seq: u16) -> ProbeKey {
        ProbeKey {
            addr: addr.into(),
            id,
            seq,
        }
    }

    #[test]
    fn echo_request_carries_its_checksum() {
        let p = echo_request(0x1234, 7, &TOKEN);
        assert_eq!(
            checksum::internet(&[&p]),
            0,
            "a packet with its checksum sums to zero"
        );
        assert_eq!(p[0], ECHO_REQUEST);
        assert_eq!(&p[4..8], &[0x12, 0x34, 0, 7]);
    }

    #[test]
    fn echo_reply_is_matched_by_source_id_and_seq() {
        let reply = ipv4(
            [192, 0, 2, 9],
            [192, 0, 2, 1],
            &echo_reply(0x1234, 7, &TOKEN),
        );
        assert_eq!(
            parse_packet(&reply, &TOKEN),
            Some((key([192, 0, 2, 9], 0x1234, 7), Reply::Echo))
        );
    }

    #[test]
    fn foreign_and_broken_packets_are_ignored() {
        let good = echo_reply(1, 2, &TOKEN);
        // Another program's ping: same shape, different payload.
        let foreign = ipv4(
            [192, 0, 2, 9],
            [192, 0, 2, 1],
            &echo_reply(1, 2, b"ABCDEFGH"),
        );
        assert_eq!(parse_packet(&foreign, &TOKEN), None, "foreign token");
        let mut corrupt = ipv4([192, 0, 2, 9], [192, 0, 2, 1], &good);
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xff;
        assert_eq!(parse_packet(&corrupt, &TOKEN), None, "bad checksum");
        let request = ipv4([192, 0, 2, 9], [192, 0, 2, 1], &echo_request(1, 2, &TOKEN));
        assert_eq!(
            parse_packet(&request, &TOKEN),
            None,
            "our own request looped back"
        );
        assert_eq!(parse_packet(&good, &TOKEN), None, "no IPv4 header");
        assert_eq!(parse_packet(&[], &TOKEN), None, "empty");
        let short = ipv4([192, 0, 2, 9], [192, 0, 2, 1], &good[..6]);
        assert_eq!(parse_packet(&short, &TOKEN), None, "truncated");
    }

    #[test]
    fn unreachable_quoting_our_request_names_the_probe() {
        // Router 192.0.2.254 says 192.0.2.9 is unreachable, quoting our request.
        let request = echo_request(0xbeef, 42, &TOKEN);
        let quoted = ipv4([192, 0, 2, 1], [192, 0, 2, 9], &request);
        let mut icmp = vec![DEST_UNREACHABLE, 1, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&quoted[..28]);
        let sum = checksum::internet(&[&icmp]);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
        let packet = ipv4([192, 0, 2, 254], [192, 0, 2, 1], &icmp);
        assert_eq!(
            parse_packet(&packet, &TOKEN),
            Some((
                key([192, 0, 2, 9], 0xbeef, 42),
                Reply::Unreachable {
                    from: Ipv4Addr::new(192, 0, 2, 254),
                    reason: "host unreachable".into()
                }
            ))
        );
    }

    #[tokio::test]
    async fn concurrent_probes_get_only_their_own_reply() {
        let pending = Pending::new(TOKEN);
        let mut a = pending.register(key([192, 0, 2, 9], 5, 1)).unwrap();
        let mut b = pending.register(key([192, 0, 2, 9], 5, 2)).unwrap();
        let mut c = pending.register(key([192, 0, 2, 10], 5, 1)).unwrap();
        assert!(
            pending.register(key([192, 0, 2, 9], 5, 1)).is_none(),
            "a key in flight cannot be registered twice"
        );
        let now = Instant::now();
        // Reply for b only (same host as a, other seq).
        let for_b = ipv4([192, 0, 2, 9], [192, 0, 2, 1], &echo_reply(5, 2, &TOKEN));
        assert!(pending.dispatch(&for_b, now));
        assert_eq!(b.try_recv().map(|r| r.0), Ok(Reply::Echo));
        assert!(a.try_recv().is_err(), "a must not see b's reply");
        assert!(c.try_recv().is_err(), "c must not see b's reply");
        // A duplicate of b's reply matches nobody any more.
        assert!(!pending.dispatch(&for_b, now));
        // Right id and seq from the wrong host: not a's reply.
        let wrong_host = ipv4([192, 0, 2, 77], [192, 0, 2, 1], &echo_reply(5, 1, &TOKEN));
        assert!(!pending.dispatch(&wrong_host, now));
        assert!(a.try_recv().is_err());
        // c's reply reaches c.
        let for_c = ipv4([192, 0, 2, 10], [192, 0, 2, 1], &echo_reply(5, 1, &TOKEN));
        assert!(pending.dispatch(&for_c, now));
        assert_eq!(c.try_recv().map(|r| r.0), Ok(Reply::Echo));
        pending.forget(&key([192, 0, 2, 9], 5, 1));
        assert!(pending.waiting.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn loopback_answers() {
        if !is_root() {
            eprintln!("SKIPPED loopback_answers: raw ICMP sockets need root");
            return;
        }
        let client = IcmpClient::open().expect("raw socket as root");
        let t = Duration::from_secs(2);
        let rtt = client
            .ping(Ipv4Addr::LOCALHOST, Instant::now() + t, t)
            .await
            .expect("127.0.0.1 answers echo requests");
        assert!(rtt < t, "rtt {rtt:?}");
        assert!(
            client.shared.pending.waiting.lock().unwrap().is_empty(),
            "a finished probe leaves nothing pending"
        );
    }

    #[tokio::test]
    async fn many_concurrent_loopback_probes_all_succeed() {
        if !is_root() {
            eprintln!("SKIPPED many_concurrent_loopback_probes_all_succeed: needs root");
            return;
        }
        let client = Arc::new(IcmpClient::open().expect("raw socket as root"));
        let t = Duration::from_secs(3);
        let deadline = Instant::now() + t;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..64u8 {
            let client = client.clone();
            // 127.0.0.0/8 all answers on lo: several hosts, several probes each.
            let addr = Ipv4Addr::new(127, 0, 0, 1 + i % 4);
            tasks.spawn(async move { (addr, client.ping(addr, deadline, t).await) });
        }
        let mut ok = 0;
        while let Some(joined) = tasks.join_next().await {
            let (addr, result) = joined.expect("task");
            result.unwrap_or_else(|e| panic!("probe of {addr} failed: {e}"));
            ok += 1;
        }
        assert_eq!(ok, 64);
        assert!(client.shared.pending.waiting.lock().unwrap().is_empty());
    }

    /// A real "no answer": a namespace whose nftables drop echo requests.
    #[tokio::test]
    async fn dropped_echo_requests_time_out_in_a_namespace() {
        if !is_root() {
            eprintln!("SKIPPED dropped_echo_requests_time_out_in_a_namespace: needs root");
            return;
        }
        let ns = Netns::create("icmp");
        ns.exec(Command::new("ip").args(["addr", "add", "192.0.2.10/32", "dev", "lo"]));
        let socket = ns
            .enter(open_raw_socket)
            .expect("raw socket in the namespace");
        let client = IcmpClient::from_socket(socket).expect("client");
        let target = Ipv4Addr::new(192, 0, 2, 10);
        let t = Duration::from_millis(300);

        // First it answers, so the drop below is what makes the difference.
        client
            .ping(target, Instant::now() + t, t)
            .await
            .expect("192.0.2.10 answers before the nftables rule");

        ns.exec(Command::new("nft").arg(
            "add table inet hcheck; add chain inet hcheck input { type filter hook input priority 0; }; \
             add rule inet hcheck input icmp type echo-request drop",
        ));
        let started = std::time::Instant::now();
        let err = client
            .ping(target, Instant::now() + t, t)
            .await
            .expect_err("echo requests are dropped: no reply");
        let took = started.elapsed();
        let msg = err.to_string();
        assert!(
            msg.starts_with("timed out after 300 ms waiting for an echo reply from 192.0.2.10"),
            "expected a timeout, got {msg:?}"
        );
        assert!(
            took >= Duration::from_millis(290) && took < Duration::from_secs(2),
            "took {took:?}"
        );
    }
}
