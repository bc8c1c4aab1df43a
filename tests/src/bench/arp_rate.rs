//! Benchmark: ARP answering on a live veth link, lbfo's XDP responder
//! against the Linux kernel answering for the same address.
//!
//! Two labs of the same shape, a client and a node on one bridge: in one,
//! `lbfo run` on the node owns the VIP and its XDP program answers; in the
//! other (the baseline), no lbfo runs and the VIP is configured on the node's
//! `eth0` with `ip addr add`, so the kernel answers. A load generator in the
//! client namespace sends ARP requests for the VIP through an `AF_PACKET`
//! socket and a receiver matches the replies to the requests:
//!
//! - saturation: requests as fast as one thread can send them, for a fixed
//!   time and at most a fixed count; the figure is replies per second;
//! - fixed rate below saturation (10,000 requests/s): request-to-reply latency,
//!   p50 and p99, from the moment before `sendto` to the kernel's receive
//!   timestamp of the reply on the client's `eth0` (`SO_TIMESTAMPNS`), so the
//!   receiver thread's wake-up time is not in it.
//!
//! Matching: both responders copy the request's sender address into the
//! reply's target address and nothing else of the request, so the sender
//! address carries the request's sequence number modulo [`TAGS`]; replies
//! come back in order over the veth links, and a tag resynchronises the match
//! after lost requests (fewer than [`TAGS`] in a row). The tags stay below
//! the kernel's neighbour-table garbage-collection threshold (128 entries):
//! the kernel learns every requester it answers, and a table in overflow
//! makes it stop answering, which would measure the table, not the responder.
//!
//! Rounds alternate the order of the two cases, so drift of a shared machine
//! affects both alike; every figure is the median of per-round values and
//! every ratio is taken within a round.

use std::{
    fmt::Write as _,
    mem::{size_of, size_of_val, zeroed},
    net::Ipv4Addr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{Effort, Section, Summary};
use crate::{
    frames::Arp,
    lab::{Host, Lab, in_netns, ip},
    node::{LbfoNode, basic_config},
};

const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const NODE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const VIP_CIDR: &str = "192.0.2.100/24";
/// Requests come from 192.0.2.130 + (sequence mod TAGS); see the module docs.
const FIRST_TAG: u8 = 130;
const TAGS: u64 = 120;
/// The rate of the latency measurement, well below either responder's
/// saturation so queues stay empty and latency is the path's own.
const FIXED_RATE: u64 = 10_000;
const ETH_P_ARP: u16 = 0x0806;
/// How long the receiver keeps listening after the last request.
const GRACE: Duration = Duration::from_millis(100);

/// Offsets in an Ethernet + ARP frame.
const ARP_OP: usize = 14 + 6;
const ARP_SPA: usize = 14 + 14;
const ARP_THA: usize = 14 + 18;
const ARP_TPA: usize = 14 + 24;
const ARP_FRAME_LEN: usize = 14 + 28;

#[derive(Clone, Copy)]
enum Pacing {
    /// Back to back, as fast as the sending thread goes.
    Saturate,
    /// This many requests per second on a fixed schedule.
    PerSecond(u64),
}

/// One load run against one responder.
struct Load {
    sent: u64,
    /// Replies to our requests (matched or not).
    replies: u64,
    /// From the first request to the last.
    send_window: Duration,
    /// Request-to-reply latency of each matched reply.
    latencies_ns: Vec<u64>,
    /// Replies the client's socket dropped (its receive buffer was full).
    socket_drops: u64,
}

impl Load {
    fn sent_per_s(&self) -> f64 {
        self.sent as f64 / self.send_window.as_secs_f64().max(1e-6)
    }

    fn replies_per_s(&self) -> f64 {
        self.replies as f64 / self.send_window.as_secs_f64().max(1e-6)
    }

    fn answered(&self) -> f64 {
        self.replies as f64 / (self.sent.max(1)) as f64
    }

    /// The `q`-quantile of the latencies in microseconds (nearest rank).
    fn latency_us(&self, q: f64) -> f64 {
        if self.latencies_ns.is_empty() {
            return f64::NAN;
        }
        let mut sorted = self.latencies_ns.clone();
        sorted.sort_unstable();
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1] as f64 / 1e3
    }
}

/// The per-round figures of one case.
#[derive(Default)]
struct Samples {
    replies_per_s: Vec<f64>,
    sent_per_s: Vec<f64>,
    answered_saturated: Vec<f64>,
    p50_us: Vec<f64>,
    p99_us: Vec<f64>,
    answered_fixed: Vec<f64>,
    socket_drops: u64,
}

impl Samples {
    fn push(&mut self, saturated: &Load, fixed: &Load) {
        self.replies_per_s.push(saturated.replies_per_s());
        self.sent_per_s.push(saturated.sent_per_s());
        self.answered_saturated.push(saturated.answered() * 100.0);
        self.p50_us.push(fixed.latency_us(0.50));
        self.p99_us.push(fixed.latency_us(0.99));
        self.answered_fixed.push(fixed.answered() * 100.0);
        self.socket_drops += saturated.socket_drops + fixed.socket_drops;
    }
}

/// A client with its sockets, in a lab whose node answers for the VIP.
struct Responder {
    name: &'static str,
    client: Host,
    ifindex: i32,
    _lab: Lab,
    _node: Option<LbfoNode>,
}

pub fn run(effort: Effort) -> Result<Section> {
    let (window, max_count) = if effort.quick {
        (Duration::from_millis(200), 400_000)
    } else {
        (Duration::from_millis(1500), 3_000_000)
    };
    let fixed_count = (FIXED_RATE as f64 * window.as_secs_f64()) as u64;

    let lbfo = lbfo_responder()?;
    let kernel = kernel_responder()?;
    // Both must answer before anything is measured.
    for responder in [&lbfo, &kernel] {
        let probe = responder.load(Pacing::PerSecond(1_000), Duration::from_millis(50), 50)?;
        if probe.replies == 0 {
            bail!(
                "the {} responder does not answer ARP for {VIP}",
                responder.name
            );
        }
    }

    let mut lbfo_samples = Samples::default();
    let mut kernel_samples = Samples::default();
    let mut ratios_rate = Vec::new();
    let mut ratios_p50 = Vec::new();
    let mut ratios_p99 = Vec::new();
    for round in 0..effort.rounds {
        let order = if round % 2 == 0 {
            [&lbfo, &kernel]
        } else {
            [&kernel, &lbfo]
        };
        let mut saturated = Vec::new();
        for responder in order {
            saturated.push(responder.load(Pacing::Saturate, window, max_count)?);
        }
        let mut fixed = Vec::new();
        for responder in order {
            fixed.push(responder.load(Pacing::PerSecond(FIXED_RATE), window, fixed_count)?);
        }
        let (l, k) = if round % 2 == 0 { (0, 1) } else { (1, 0) };
        lbfo_samples.push(&saturated[l], &fixed[l]);
        kernel_samples.push(&saturated[k], &fixed[k]);
        ratios_rate.push(saturated[l].replies_per_s() / saturated[k].replies_per_s().max(1.0));
        ratios_p50.push(fixed[l].latency_us(0.50) / fixed[k].latency_us(0.50));
        ratios_p99.push(fixed[l].latency_us(0.99) / fixed[k].latency_us(0.99));
    }

    let rate = Summary::of(&ratios_rate);
    // What the kernel's answer costs more than lbfo's on this path, per request.
    let saved_us: Vec<f64> = lbfo_samples
        .replies_per_s
        .iter()
        .zip(&kernel_samples.replies_per_s)
        .map(|(l, k)| 1e6 / k.max(1.0) - 1e6 / l.max(1.0))
        .collect();
    println!("arp rate: replies/s lbfo/kernel {}", rate.fmt(2));
    println!(
        "arp rate: latency p50 lbfo/kernel {}, p99 {}",
        Summary::of(&ratios_p50).fmt(2),
        Summary::of(&ratios_p99).fmt(2)
    );

    let mut table = String::new();
    let _ = writeln!(table, "| measure | lbfo (XDP) | kernel | lbfo / kernel |");
    let _ = writeln!(table, "|---|---|---|---|");
    let mut row = |name: &str, l: &[f64], k: &[f64], ratio: Option<&[f64]>, precision| {
        let _ = writeln!(
            table,
            "| {name} | {} | {} | {} |",
            Summary::of(l).fmt(precision),
            Summary::of(k).fmt(precision),
            ratio.map_or("".into(), |r| format!("**{}**", Summary::of(r).fmt(2)))
        );
    };
    row(
        "saturation: replies/s",
        &lbfo_samples.replies_per_s,
        &kernel_samples.replies_per_s,
        Some(&ratios_rate),
        0,
    );
    let per_reply = |rates: &[f64]| rates.iter().map(|r| 1e6 / r.max(1.0)).collect::<Vec<_>>();
    let inverse_ratios: Vec<f64> = ratios_rate.iter().map(|r| 1.0 / r).collect();
    row(
        "saturation: time per reply (1 / rate), µs",
        &per_reply(&lbfo_samples.replies_per_s),
        &per_reply(&kernel_samples.replies_per_s),
        Some(&inverse_ratios),
        2,
    );
    row(
        "saturation: requests sent/s",
        &lbfo_samples.sent_per_s,
        &kernel_samples.sent_per_s,
        None,
        0,
    );
    row(
        "saturation: requests answered, %",
        &lbfo_samples.answered_saturated,
        &kernel_samples.answered_saturated,
        None,
        1,
    );
    row(
        &format!("latency p50 at {FIXED_RATE} req/s, µs"),
        &lbfo_samples.p50_us,
        &kernel_samples.p50_us,
        Some(&ratios_p50),
        1,
    );
    row(
        &format!("latency p99 at {FIXED_RATE} req/s, µs"),
        &lbfo_samples.p99_us,
        &kernel_samples.p99_us,
        Some(&ratios_p99),
        1,
    );
    row(
        &format!("requests answered at {FIXED_RATE} req/s, %"),
        &lbfo_samples.answered_fixed,
        &kernel_samples.answered_fixed,
        None,
        1,
    );

    let markdown = format!(
        "Command: `cargo xtask bench` (section \"arp_rate\"). Two labs of the same shape, a client and a node on a bridge (veth links, XDP pass programs on the bridge ports): in one `lbfo run` owns {VIP_CIDR} (`xdp_mode = \"native\"`) and its XDP program answers with `XDP_TX`; in the baseline no lbfo runs and the node has {VIP_CIDR} from `ip addr add`, so the kernel answers. A generator in the client namespace sends ARP requests for {VIP} on an `AF_PACKET` socket; a receiver on a second one matches each reply to its request by the sender address, which carries the request's sequence number modulo {TAGS} (both responders echo it as the reply's target address; fewer addresses than the kernel's neighbour-table GC threshold, since the kernel learns every requester). Per round and case: {window:?} back to back (at most {max_count} requests) for the reply rate, then {window:?} at {FIXED_RATE} requests/s for latency, from just before `sendto` to the kernel's receive timestamp on the client's `eth0` (`SO_TIMESTAMPNS`). {rounds} rounds, the order of lbfo and kernel alternating; ratios are taken within a round. The issue's target: lbfo at least 3× the kernel's rate; measured here **{rate_ratio}×**, {verdict} on this path.\n\n\
What limits the rate: the machine has 2 cores. A frame sent on a veth is carried on through the bridge, the node's responder and back to the client in softirq context on the sending CPU, so the generator's core does all of that and the reply rate is one core divided by the whole path's cost per request: the generator's `sendto`, four veth crossings, the bridge twice, the XDP pass programs of the bridge ports, the responder and the client's receive. The time per reply (1 / rate) is that cost; the difference between the cases, {saved} µs per request, is what the kernel's answer costs more than lbfo's on this path. The receiver thread runs on the other core; its socket dropped {lbfo_drops} (lbfo) and {kernel_drops} (kernel) replies over the run, so it was not the limit where those are 0.\n\n\
Why this ratio stays below that of the responders alone (section 1 times lbfo's program by itself): besides the shared path, a veth takes most of XDP's advantage away. It delivers socket buffers, and its native XDP mode turns each one into an XDP buffer first (copying it when it lacks XDP's headroom or is a clone, as the bridge's broadcast copies are), and the `XDP_TX` reply becomes a socket buffer again at the bridge port. On a NIC whose driver runs XDP, the program sees the frame before any socket buffer is allocated and the reply never gets one; this lab cannot show that saving. The kernel's path is the one it would take on a NIC too: the node-side veth passes the frame through the per-CPU backlog to the ARP code, which allocates the reply.\n\n{table}",
        rounds = effort.rounds,
        saved = Summary::of(&saved_us).fmt(2),
        rate_ratio = rate.fmt(2),
        verdict = if rate.median >= 3.0 { "met" } else { "not met" },
        lbfo_drops = lbfo_samples.socket_drops,
        kernel_drops = kernel_samples.socket_drops,
    );
    Ok(Section {
        title: "2. ARP replies on a veth link: lbfo's XDP responder vs the kernel".into(),
        markdown,
    })
}

/// A lab whose node runs `lbfo run` and owns the VIP.
fn lbfo_responder() -> Result<Responder> {
    let mut lab = Lab::new()?;
    let client = add_client(&mut lab)?;
    let node_host = lab.add_host("node", NODE)?;
    // A long lease: the daemon renews it anyway; nothing may expire mid-run.
    let node = LbfoNode::start(
        &mut lab,
        &node_host,
        &basic_config("bench", VIP_CIDR, 60_000),
    )?;
    node.own("bench")?;
    responder("lbfo", lab, client, Some(node))
}

/// A lab whose node has the VIP as an ordinary address: the kernel answers.
fn kernel_responder() -> Result<Responder> {
    let mut lab = Lab::new()?;
    let client = add_client(&mut lab)?;
    let node = lab.add_host("node", NODE)?;
    ip(&node.ns, &["addr", "add", VIP_CIDR, "dev", &node.ifname])?;
    responder("kernel", lab, client, None)
}

fn add_client(lab: &mut Lab) -> Result<Host> {
    let client = lab.add_host("client", CLIENT)?;
    // The generator does all the ARP on this side; with NOARP the client's
    // kernel skips the replies (for addresses it does not have) instead of
    // spending the generator's CPU on them.
    ip(&client.ns, &["link", "set", &client.ifname, "arp", "off"])?;
    Ok(client)
}

fn responder(
    name: &'static str,
    lab: Lab,
    client: Host,
    node: Option<LbfoNode>,
) -> Result<Responder> {
    let ifname = client.ifname.clone();
    let ifindex = in_netns(&client.ns, || {
        nix::net::if_::if_nametoindex(ifname.as_str())
    })?
    .with_context(|| format!("index of {ifname} in {}", client.ns))?;
    Ok(Responder {
        name,
        client,
        ifindex: ifindex as i32,
        _lab: lab,
        _node: node,
    })
}

impl Responder {
    /// Sends requests for at most `duration` and `max_count` requests, and
    /// collects the replies until shortly after the last request.
    fn load(&self, pacing: Pacing, duration: Duration, max_count: u64) -> Result<Load> {
        let (tx, rx) = in_netns(&self.client.ns, || -> Result<(OwnedFd, OwnedFd)> {
            Ok((
                packet_socket(self.ifindex, 0)?,
                packet_socket(self.ifindex, ETH_P_ARP)?,
            ))
        })??;
        set_option(&rx, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1)
            .context("PACKET_IGNORE_OUTGOING")?;
        set_option(&rx, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1).context("SO_TIMESTAMPNS")?;
        // Room for a whole saturated run's backlog: a reply dropped here
        // would count against the responder.
        set_option(&rx, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 64 << 20)
            .context("SO_RCVBUFFORCE")?;
        set_receive_timeout(&rx, Duration::from_millis(20))?;
        // Read (and reset) the drop counter before the run.
        socket_drops(&rx)?;

        let send_ns: Vec<AtomicU64> = (0..max_count).map(|_| AtomicU64::new(0)).collect();
        let sender_done = AtomicBool::new(false);
        let hard_stop = Instant::now() + duration + Duration::from_secs(5);
        // Both on threads of their own: the sender changes its timer slack.
        let (sent, received) = std::thread::scope(|s| {
            let receiver = s
                .spawn(|| receive_replies(&rx, self.client.mac, &send_ns, &sender_done, hard_stop));
            let sender = s.spawn(|| {
                let sent = send_requests(
                    &tx,
                    self.ifindex,
                    self.client.mac,
                    pacing,
                    duration,
                    &send_ns,
                );
                sender_done.store(true, Ordering::Release);
                sent
            });
            (
                sender.join().expect("ARP sender panicked"),
                receiver.join().expect("ARP receiver panicked"),
            )
        });
        let (sent, send_window) = sent?;
        let (replies, latencies_ns) = received?;
        Ok(Load {
            sent,
            replies,
            send_window,
            latencies_ns,
            socket_drops: socket_drops(&rx)?,
        })
    }
}

/// An `AF_PACKET` raw socket on `ifindex`; `protocol` 0 receives nothing
/// (the sending socket), `ETH_P_ARP` receives ARP frames.
fn packet_socket(ifindex: i32, protocol: u16) -> Result<OwnedFd> {
    // SAFETY: plain syscalls on a descriptor this function owns.
    unsafe {
        let fd = libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            protocol.to_be() as i32,
        );
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("AF_PACKET socket");
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let mut addr: libc::sockaddr_ll = zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = protocol.to_be();
        addr.sll_ifindex = ifindex;
        if libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_ll>() as u32,
        ) != 0
        {
            return Err(std::io::Error::last_os_error()).context("binding the AF_PACKET socket");
        }
        Ok(fd)
    }
}

fn set_option(fd: &OwnedFd, level: i32, name: i32, value: i32) -> Result<()> {
    // SAFETY: `value` outlives the call and its size is given.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            size_of::<i32>() as u32,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

fn set_receive_timeout(fd: &OwnedFd, timeout: Duration) -> Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as _,
        tv_usec: timeout.subsec_micros() as _,
    };
    // SAFETY: `tv` outlives the call and its size is given.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const tv).cast(),
            size_of::<libc::timeval>() as u32,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).context("SO_RCVTIMEO");
    }
    Ok(())
}

/// Frames the socket dropped since the last call (the kernel resets the
/// counters on every read).
fn socket_drops(fd: &OwnedFd) -> Result<u64> {
    // SAFETY: `stats` is written by the kernel up to `len` bytes.
    unsafe {
        let mut stats: libc::tpacket_stats = zeroed();
        let mut len = size_of::<libc::tpacket_stats>() as u32;
        if libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&raw mut stats).cast(),
            &mut len,
        ) != 0
        {
            return Err(std::io::Error::last_os_error()).context("PACKET_STATISTICS");
        }
        Ok(stats.tp_drops as u64)
    }
}

/// CLOCK_REALTIME in nanoseconds: the clock of `SO_TIMESTAMPNS`.
fn realtime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sends requests until `duration` has passed or `send_ns` is full, writing
/// each request's send time into `send_ns[sequence]` first. Returns how many
/// were sent and the time from the first to the last.
fn send_requests(
    tx: &OwnedFd,
    ifindex: i32,
    mac: [u8; 6],
    pacing: Pacing,
    duration: Duration,
    send_ns: &[AtomicU64],
) -> Result<(u64, Duration)> {
    let mut frame = Arp::request(mac, Ipv4Addr::new(192, 0, 2, FIRST_TAG), VIP).frame();
    // SAFETY: zeroed is a valid sockaddr_ll; the fields are filled below.
    let mut to: libc::sockaddr_ll = unsafe { zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_protocol = ETH_P_ARP.to_be();
    to.sll_ifindex = ifindex;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    if let Pacing::PerSecond(_) = pacing {
        // Sleeps of ~100 µs: the default 50 µs timer slack would be half of it.
        // SAFETY: prctl on the calling thread only.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1_000u64) };
    }
    let start = Instant::now();
    let mut last = start;
    let mut sent = 0u64;
    for (sequence, slot) in send_ns.iter().enumerate() {
        let now = Instant::now();
        if now - start >= duration {
            break;
        }
        if let Pacing::PerSecond(rate) = pacing {
            let due = start + Duration::from_nanos(sequence as u64 * 1_000_000_000 / rate);
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        frame[ARP_SPA + 3] = FIRST_TAG + (sequence as u64 % TAGS) as u8;
        slot.store(realtime_ns(), Ordering::Release);
        // SAFETY: `frame` and `to` outlive the call; their sizes are given.
        let r = unsafe {
            libc::sendto(
                tx.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const to).cast(),
                size_of_val(&to) as u32,
            )
        };
        if r < 0 {
            let error = std::io::Error::last_os_error();
            // A full device queue drops the request: a request lost, not a failure.
            if error.raw_os_error() != Some(libc::ENOBUFS) {
                return Err(error).context("sending an ARP request");
            }
        }
        sent += 1;
        last = Instant::now();
    }
    Ok((sent, last - start))
}

/// Receives replies for the VIP until `GRACE` after the sender is done (or
/// `hard_stop`). Returns the number of replies and the latency of each one
/// matched to its request.
fn receive_replies(
    rx: &OwnedFd,
    mac: [u8; 6],
    send_ns: &[AtomicU64],
    sender_done: &AtomicBool,
    hard_stop: Instant,
) -> Result<(u64, Vec<u64>)> {
    let mut frame = [0u8; 128];
    // Room for one timestamp control message (cmsghdr + timespec), aligned.
    let mut control = [0u64; 8];
    let mut replies = 0u64;
    let mut latencies = Vec::with_capacity(send_ns.len());
    // The lowest sequence not matched yet.
    let mut next = 0u64;
    let mut done_at: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if now > hard_stop || done_at.is_some_and(|d| now - d > GRACE) {
            break;
        }
        if done_at.is_none() && sender_done.load(Ordering::Acquire) {
            done_at = Some(now);
        }
        let mut iov = libc::iovec {
            iov_base: frame.as_mut_ptr().cast(),
            iov_len: frame.len(),
        };
        // SAFETY: zeroed msghdr is valid; its pointers are set to live buffers.
        let mut msg: libc::msghdr = unsafe { zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = size_of_val(&control);
        // SAFETY: `msg` points at buffers that live through the call.
        let n = unsafe { libc::recvmsg(rx.as_raw_fd(), &mut msg, 0) };
        if n < 0 {
            let error = std::io::Error::last_os_error();
            match error.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => continue,
                _ => return Err(error).context("receiving ARP replies"),
            }
        }
        let frame = &frame[..n as usize];
        let Some(tag) = reply_tag(frame, mac) else {
            continue;
        };
        replies += 1;
        let Some(received_ns) = receive_timestamp(&msg) else {
            continue;
        };
        // The only sequence with this tag in [next, next + TAGS).
        let sequence = next + (tag + TAGS - next % TAGS) % TAGS;
        let Some(sent_ns) = send_ns
            .get(sequence as usize)
            .map(|s| s.load(Ordering::Acquire))
            .filter(|&t| t != 0)
        else {
            continue;
        };
        latencies.push(received_ns.saturating_sub(sent_ns));
        next = sequence + 1;
    }
    Ok((replies, latencies))
}

/// The tag of an ARP reply from the VIP to our requests, if `frame` is one.
fn reply_tag(frame: &[u8], mac: [u8; 6]) -> Option<u64> {
    if frame.len() < ARP_FRAME_LEN
        || frame[12..14] != ETH_P_ARP.to_be_bytes()
        || frame[ARP_OP..ARP_OP + 2] != 2u16.to_be_bytes()
        || frame[ARP_SPA..ARP_SPA + 4] != VIP.octets()
        || frame[ARP_THA..ARP_THA + 6] != mac
        || frame[ARP_TPA..ARP_TPA + 3] != [192, 0, 2]
    {
        return None;
    }
    let tag = frame[ARP_TPA + 3].checked_sub(FIRST_TAG)? as u64;
    (tag < TAGS).then_some(tag)
}

/// The kernel's receive time (CLOCK_REALTIME, ns) from `SCM_TIMESTAMPNS`.
fn receive_timestamp(msg: &libc::msghdr) -> Option<u64> {
    // SAFETY: the CMSG macros walk the control buffer the kernel filled,
    // within `msg_controllen`.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                return Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
        None
    }
}
