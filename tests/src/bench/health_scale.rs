//! Benchmark: HTTP health checks at scale. How much CPU does the `lbfo`
//! daemon need for N http checks at 1 s intervals, and how well does it keep
//! their cadence?
//!
//! `lbfo run` in a lab namespace gets N `[[vip.check]]`s of kind http
//! (`interval_ms = 1000`, `timeout_ms = 500`), spread over VIPs of
//! [`CHECKS_PER_VIP`] checks each (a config allows at most 256 VIPs, checks
//! per VIP are not limited). Check `i` fetches `/p/i` from an HTTP server in
//! a second namespace of the lab, written here, which notes when each
//! request arrives. One daemon per N: it starts, warms up (see below), then
//! a few consecutive measurement windows each give one sample of:
//!
//! - CPU share: the daemon's utime + stime from `/proc/PID/stat` (all its
//!   threads) at the start and end of the window, divided by the window's
//!   wall time: the fraction of one core. Network work the kernel does in
//!   softirq context is accounted to whichever task it interrupts, so part of
//!   the server's receive path shows up in the daemon's system time and the
//!   other way round; the server's CPU is reported beside it.
//! - Interval drift: for each path, the gaps between consecutive arrivals at
//!   the server minus the 1 s interval; p50 and p99 of |drift|. Measured at
//!   the server, so it includes the connect and the server's accept: what a
//!   service sees of its checker's cadence.
//! - Probes per second that arrived, against the ideal N per second.
//!
//! Baselines, measured in the same run: the smaller N for the larger (the
//! ratio of CPU per check: 1.0 is linear scaling), the interval for drift,
//! N/s for the probe rate.
//!
//! Warm-up: every check turning healthy is an event the daemon's main loop
//! acts on, and it logs each one as it does. The window opens once it has
//! acted on every check's (within a time limit) and a settling pause has
//! passed, so start-up work is not counted as steady-state cost. How long
//! that took is reported too: it is lbfo's start-up time at that scale, and
//! a daemon that has not settled by the limit is measured anyway and
//! reported as such. One daemon per N, not one per window, because that
//! start-up is long at 10,000 checks.
//!
//! The server: a fixed pool of blocking worker threads on a few listening
//! ports, each worker accepting, reading one request, answering
//! `Connection: close` and closing (lbfo's checks open a fresh connection per
//! probe). A fixed pool keeps the server's file descriptors at a few dozen
//! whatever the probe rate, so it needs no raised `nofile` limit (the daemon
//! raises its own). TIME_WAIT: the server closes first, so every probe
//! leaves one TIME_WAIT socket on the server's side for 60 s (lbfo's side
//! keeps next to none: it closes with a reset). A SYN that reuses the
//! 4-tuple of such a socket is accepted by Linux only if its sequence number
//! is higher; to keep this benchmark off that path, the checks are spread
//! over [`SERVER_ADDRESSES`] × [`PORTS`] server endpoints, so that at 10,000
//! probes/s lbfo's ~28,000 ephemeral ports come back to the same endpoint
//! only after more than the 60 s (a single endpoint would see each port
//! again within 3 s). Past `net.ipv4.tcp_max_tw_buckets` (131,072 by
//! default) the kernel closes without TIME_WAIT, as it would for any busy
//! server. The TIME_WAIT counts of both namespaces are read after every
//! window to show it.

use std::{
    fmt::Write as _,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{Effort, Section, Summary, checks_config, cpu_times, quantile};
use crate::{
    lab::{Host, LAB_PREFIX_LEN, Lab, in_netns, ip},
    node::LbfoNode,
};

const NODE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
/// The server's first address; it has [`SERVER_ADDRESSES`] in a row.
const WEB: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 20);
const SERVER_ADDRESSES: u8 = 16;
const PORTS: [u16; 4] = [8001, 8002, 8003, 8004];
/// Blocking workers per port: enough that a request whose bytes are late
/// (the daemon busy between connect and send) does not hold up the others.
const WORKERS_PER_PORT: usize = 8;
const INTERVAL: Duration = Duration::from_secs(1);
const TIMEOUT_MS: u64 = 500;
const CHECKS_PER_VIP: usize = 1_000;

/// How one size is measured.
#[derive(Clone, Copy, Debug)]
struct Plan {
    /// The two sizes, the smaller being the baseline for the larger.
    sizes: [usize; 2],
    window: Duration,
    windows: usize,
    /// The longest wait for the daemon to act on every check turning healthy.
    warm_up_limit: Duration,
    /// Between the end of the warm-up and the first window.
    settle: Duration,
}

/// One measurement window of one daemon.
struct Window {
    checks: usize,
    /// The daemon's user + system time, as a fraction of one core.
    cpu_share: f64,
    /// Of that, system time.
    system_share: f64,
    /// The benchmark process's (the server's) CPU, as a fraction of one core.
    server_share: f64,
    probes_per_s: f64,
    /// |arrival gap − interval| of every consecutive pair, in ms.
    drift_ms: Vec<f64>,
    /// Checks not healthy at the end of the window (None: the daemon did not
    /// answer `lbfo status` in time, which an overloaded one may not).
    unhealthy_at_end: Option<usize>,
    /// TIME_WAIT sockets after the window: server's namespace, daemon's.
    time_wait: (u64, u64),
}

/// One daemon's start-up and its windows.
struct Run {
    checks: usize,
    /// From start until the daemon had acted on every check turning healthy
    /// (None: not within the warm-up limit).
    started_after: Option<Duration>,
    windows: Vec<Window>,
}

pub fn run(effort: Effort) -> Result<Section> {
    let plan = if effort.quick {
        // One short window per size, only to prove the harness works.
        Plan {
            sizes: [100, 1_000],
            window: Duration::from_millis(2_500),
            windows: 1,
            warm_up_limit: Duration::from_secs(30),
            settle: Duration::from_millis(500),
        }
    } else {
        Plan {
            sizes: [1_000, 10_000],
            window: Duration::from_secs(15),
            windows: effort.rounds.min(5),
            warm_up_limit: Duration::from_secs(120),
            settle: Duration::from_secs(2),
        }
    };
    let sizes = plan.sizes;
    let mut lab = Lab::new()?;
    let node = lab.add_host("node", NODE)?;
    let web = lab.add_host("web", WEB)?;
    for a in 1..SERVER_ADDRESSES {
        let addr = server_address(a as usize);
        ip(
            &web.ns,
            &[
                "addr",
                "add",
                &format!("{addr}/{LAB_PREFIX_LEN}"),
                "dev",
                &web.ifname,
            ],
        )?;
    }
    // Room for every arrival of the largest window twice over.
    let max_arrivals = sizes[1] * (plan.window.as_secs() as usize + 1) * 2;
    let server = CheckServer::start(&web, max_arrivals)?;

    let mut runs = Vec::new();
    for checks in sizes {
        let run = measure(&mut lab, &node, &web, &server, checks, plan)?;
        for w in &run.windows {
            println!(
                "health scale: {checks} checks: cpu {:.1}% of a core, {:.0} probes/s, |drift| p99 {:.1} ms",
                w.cpu_share * 100.0,
                w.probes_per_s,
                quantile(&w.drift_ms, 0.99)
            );
        }
        runs.push(run);
    }
    drop(server);

    let (small, large) = (&runs[0], &runs[1]);
    // Window i of one size against window i of the other.
    let per_check_ratio: Vec<f64> = small
        .windows
        .iter()
        .zip(&large.windows)
        .map(|(s, l)| (l.cpu_share / l.checks as f64) / (s.cpu_share / s.checks as f64).max(1e-9))
        .collect();
    println!(
        "health scale: CPU per check, {} vs {} checks: {}",
        sizes[1],
        sizes[0],
        Summary::of(&per_check_ratio).fmt(2)
    );

    let mut table = String::new();
    let _ = writeln!(
        table,
        "| checks (1 s interval) | daemon CPU, % of one core | of which system | CPU per 1,000 checks | server CPU | probes/s (ideal = checks) | achieved / ideal | \\|drift\\| p50, ms | \\|drift\\| p99, ms | p99 / interval | start-up, s |"
    );
    let _ = writeln!(table, "|---|---|---|---|---|---|---|---|---|---|---|");
    let mut time_wait = (0, 0);
    let mut unhealthy = 0;
    let mut no_status = 0;
    for run in &runs {
        let n = run.checks as f64;
        let of = |f: &dyn Fn(&Window) -> f64| -> Summary {
            Summary::of(&run.windows.iter().map(f).collect::<Vec<_>>())
        };
        for w in &run.windows {
            time_wait.0 = time_wait.0.max(w.time_wait.0);
            time_wait.1 = time_wait.1.max(w.time_wait.1);
            match w.unhealthy_at_end {
                Some(count) => unhealthy += count,
                None => no_status += 1,
            }
        }
        let _ = writeln!(
            table,
            "| {} | {} | {} | {} | {} | {} | **{}** | {} | {} | **{}** | {} |",
            run.checks,
            of(&|w| w.cpu_share * 100.0).fmt(1),
            of(&|w| w.system_share * 100.0).fmt(1),
            of(&|w| w.cpu_share * 100.0 * 1_000.0 / n).fmt(2),
            of(&|w| w.server_share * 100.0).fmt(1),
            of(&|w| w.probes_per_s).fmt(0),
            of(&|w| w.probes_per_s / n).fmt(3),
            of(&|w| quantile(&w.drift_ms, 0.50)).fmt(2),
            of(&|w| quantile(&w.drift_ms, 0.99)).fmt(2),
            of(&|w| quantile(&w.drift_ms, 0.99) / INTERVAL.as_secs_f64() / 1e3).fmt(4),
            run.started_after.map_or_else(
                || format!("> {:.0} (not settled)", plan.warm_up_limit.as_secs_f64()),
                |d| format!("{:.1}", d.as_secs_f64())
            ),
        );
    }
    let markdown = format!(
        "Command: `cargo xtask bench` (section \"health_scale\"). `lbfo run` in a lab namespace with N http checks (`interval_ms = 1000`, `timeout_ms = {TIMEOUT_MS}`, `rise = 1`, {CHECKS_PER_VIP} per VIP), check i fetching `/p/i` from an HTTP server in another namespace of the lab ({endpoints} endpoints: {SERVER_ADDRESSES} addresses × {ports} ports, a pool of {workers} blocking worker threads in the benchmark's process). Daemon and server share the machine's 2 cores. One daemon per N, logging at info level. Its warm-up ends when its main loop has acted on every check turning healthy (it logs each health event it acts on), or after {limit:?} at most; that time is the start-up column. {settle:?} later, {windows} consecutive windows of {window:?} each give one sample; percentages are of one core. A start-up marked \"not settled\" means the daemon was still working through its queue of health events when the windows opened, and that work is in their figures. `rise = 1` only shortens the warm-up; in a steady state every probe succeeds either way.\n\n\
CPU: the daemon's utime + stime (`/proc/PID/stat`, every thread) over the window, divided by its wall time. The kernel accounts softirq work of the network path to whichever task it interrupts, so the daemon's system time includes part of the server's receive path and the server's includes part of the daemon's; the server's CPU (the benchmark process) is given for that reason. Drift: per path, the gaps between consecutive request arrivals at the server minus the 1 s interval, p50/p99 of the absolute value over all gaps of all checks; it includes the connect and the server's accept. Baselines: {small} checks for {large} (**CPU per check, {large} vs {small}: {ratio}**, window i against window i; 1.0 is linear scaling), the interval for drift, N probes/s for the probe rate.\n\n\
Checks not healthy at the end of a window, over all windows: {unhealthy}{no_status}. TIME_WAIT sockets after a window, at most: {tw_web} in the server's namespace (one per probe for 60 s, as the server closes first, up to the namespace's `tcp_max_tw_buckets`), {tw_node} in the daemon's (lbfo closes with a reset, so it keeps few).{startup}\n\n{table}",
        limit = plan.warm_up_limit,
        settle = plan.settle,
        windows = plan.windows,
        no_status = if no_status > 0 {
            format!(
                " (and {no_status} windows after which the daemon did not answer `lbfo status` within 10 s)"
            )
        } else {
            String::new()
        },
        window = plan.window,
        endpoints = SERVER_ADDRESSES as usize * PORTS.len(),
        workers = PORTS.len() * WORKERS_PER_PORT,
        ports = PORTS.len(),
        small = sizes[0],
        large = sizes[1],
        ratio = Summary::of(&per_check_ratio).fmt(2),
        startup = match (small.started_after, large.started_after) {
            (Some(s), Some(l)) => format!(
                " Start-up, {large} checks against {small}: **{:.1}×** ({:.1} s against {:.1} s; one sample each).",
                l.as_secs_f64() / s.as_secs_f64().max(1e-3),
                l.as_secs_f64(),
                s.as_secs_f64(),
                large = sizes[1],
                small = sizes[0],
            ),
            _ => String::new(),
        },
        tw_web = time_wait.0,
        tw_node = time_wait.1,
    );
    Ok(Section {
        title: "4. Health checks at scale: daemon CPU and interval drift".into(),
        markdown,
    })
}

/// The server's `index`-th address.
fn server_address(index: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(WEB) + (index % SERVER_ADDRESSES as usize) as u32)
}

/// Starts a daemon with `checks` http checks, waits for its steady state,
/// measures `windows` windows and stops it.
fn measure(
    lab: &mut Lab,
    node_host: &Host,
    web: &Host,
    server: &CheckServer,
    checks: usize,
    plan: Plan,
) -> Result<Run> {
    let started = Instant::now();
    let node = LbfoNode::start_logging(lab, node_host, &config(checks), "info")?;
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", node.pid))?;
    if comm.trim() != "lbfo" {
        bail!("process {} is {comm:?}, not the lbfo daemon", node.pid);
    }
    // Bounded: a daemon that never settles is measured anyway, and the
    // report says so.
    let mut started_after = None;
    while started.elapsed() < plan.warm_up_limit {
        if healthy_checks(&node)? >= checks && core_settled(&node)? {
            started_after = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(plan.settle);

    let mut samples = Vec::new();
    for _ in 0..plan.windows {
        samples.push(measure_window(&node, web, server, checks, plan.window)?);
    }
    let status = node.stop(lab)?;
    if !status.success() {
        bail!("lbfo exited with {status}:\n{}", node.log_text());
    }
    Ok(Run {
        checks,
        started_after,
        windows: samples,
    })
}

fn measure_window(
    node: &LbfoNode,
    web: &Host,
    server: &CheckServer,
    checks: usize,
    window: Duration,
) -> Result<Window> {
    server.start_recording();
    let daemon_start = cpu_times(node.pid)?;
    let server_start = cpu_times(std::process::id())?;
    let window_start = Instant::now();
    std::thread::sleep(window);
    let daemon_end = cpu_times(node.pid)?;
    let server_end = cpu_times(std::process::id())?;
    let elapsed = window_start.elapsed().as_secs_f64();
    let arrivals = server.take_recording();

    let unhealthy_at_end = healthy_checks(node).ok().map(|h| checks - h);
    let time_wait = (
        time_wait_sockets(&web.ns)?,
        time_wait_sockets(&node.host.ns)?,
    );

    // Gaps between consecutive arrivals of each path, within the window.
    let mut per_path: Vec<Vec<Instant>> = vec![Vec::new(); checks];
    let mut arrived = 0usize;
    for a in &arrivals {
        if let Some(times) = per_path.get_mut(a.path as usize) {
            times.push(a.at);
            arrived += 1;
        }
    }
    let mut drift_ms = Vec::with_capacity(arrived);
    for times in &mut per_path {
        times.sort_unstable();
        for pair in times.windows(2) {
            let gap = (pair[1] - pair[0]).as_secs_f64();
            drift_ms.push((gap - INTERVAL.as_secs_f64()).abs() * 1e3);
        }
    }
    if drift_ms.is_empty() {
        bail!("{checks} checks: no path was requested twice in {window:?}");
    }
    let busy = |(user, system): (f64, f64), (user0, system0): (f64, f64)| {
        (user + system - user0 - system0) / elapsed
    };
    Ok(Window {
        checks,
        cpu_share: busy(daemon_end, daemon_start),
        system_share: (daemon_end.1 - daemon_start.1) / elapsed,
        server_share: busy(server_end, server_start),
        probes_per_s: arrived as f64 / elapsed,
        drift_ms,
        unhealthy_at_end,
        time_wait,
    })
}

/// `checks` http checks, check `i` on `/p/i`, the server's endpoints taken in
/// turn.
fn config(checks: usize) -> String {
    checks_config("scale", checks, CHECKS_PER_VIP, |i| {
        format!(
            "kind = \"http\"\nurl = \"http://{}:{}/p/{i}\"\ninterval_ms = {}\ntimeout_ms = {TIMEOUT_MS}\nrise = 1",
            server_address(i / PORTS.len()),
            PORTS[i % PORTS.len()],
            INTERVAL.as_millis()
        )
    })
}

/// The daemon's core has acted on every check as healthy: a VIP leaves
/// fault only when the core holds none of its checks as failing (the check
/// tasks' own state, which `healthy_checks` reads, says nothing about the
/// main loop).
fn core_settled(node: &LbfoNode) -> Result<bool> {
    let status = node.status()?;
    Ok(!status.vips.is_empty() && status.vips.iter().all(|v| v.state != "fault"))
}

fn healthy_checks(node: &LbfoNode) -> Result<usize> {
    Ok(node
        .status()?
        .vips
        .iter()
        .flat_map(|v| &v.checks)
        .filter(|c| c.state == "healthy")
        .count())
}

/// TIME_WAIT sockets in a namespace (`tw` of /proc/net/sockstat, read from a
/// thread inside it).
fn time_wait_sockets(ns: &str) -> Result<u64> {
    let sockstat = in_netns(ns, || {
        std::fs::read_to_string("/proc/thread-self/net/sockstat")
    })??;
    sockstat
        .lines()
        .find_map(|l| l.strip_prefix("TCP:"))
        .and_then(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words
                .windows(2)
                .find(|w| w[0] == "tw")
                .and_then(|w| w[1].parse().ok())
        })
        .with_context(|| format!("no TCP tw count in sockstat of {ns}: {sockstat}"))
}

#[derive(Clone, Copy)]
struct Arrival {
    path: u32,
    at: Instant,
}

/// The health-check target: answers `GET /p/<i>` with 200 and notes, while
/// recording, when each request arrived. Stops (and joins its threads) when
/// dropped.
struct CheckServer {
    stop: Arc<AtomicBool>,
    recording: Arc<Recording>,
    workers: Vec<JoinHandle<()>>,
}

struct Recording {
    on: AtomicBool,
    /// One log per worker, so recording never waits on another worker.
    logs: Vec<Mutex<Vec<Arrival>>>,
    /// Arrivals logged, bounded by `max`.
    count: AtomicUsize,
    max: usize,
}

impl CheckServer {
    fn start(host: &Host, max_arrivals: usize) -> Result<CheckServer> {
        let listeners = in_netns(&host.ns, || -> Result<Vec<TcpListener>> {
            PORTS
                .iter()
                .map(|&port| listener(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)))
                .collect()
        })??;
        let stop = Arc::new(AtomicBool::new(false));
        let recording = Arc::new(Recording {
            on: AtomicBool::new(false),
            logs: (0..PORTS.len() * WORKERS_PER_PORT)
                .map(|_| Mutex::new(Vec::new()))
                .collect(),
            count: AtomicUsize::new(0),
            max: max_arrivals,
        });
        let mut server = CheckServer {
            stop: stop.clone(),
            recording: recording.clone(),
            workers: Vec::new(),
        };
        for (i, listener) in listeners.into_iter().enumerate() {
            let listener = Arc::new(listener);
            for w in 0..WORKERS_PER_PORT {
                let (listener, stop, recording) =
                    (listener.clone(), stop.clone(), recording.clone());
                let log = i * WORKERS_PER_PORT + w;
                // On error, dropping `server` stops the workers started so far.
                server.workers.push(
                    std::thread::Builder::new()
                        .name(format!("check-server-{log}"))
                        .spawn(move || serve(&listener, &stop, &recording, log))
                        .context("starting a server thread")?,
                );
            }
        }
        Ok(server)
    }

    fn start_recording(&self) {
        for log in &self.recording.logs {
            log.lock().expect("arrival log").clear();
        }
        self.recording.count.store(0, Ordering::Relaxed);
        self.recording.on.store(true, Ordering::Release);
    }

    fn take_recording(&self) -> Vec<Arrival> {
        self.recording.on.store(false, Ordering::Release);
        let mut all = Vec::new();
        for log in &self.recording.logs {
            all.append(&mut log.lock().expect("arrival log"));
        }
        all
    }
}

impl Drop for CheckServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

/// A listening socket whose `accept` gives up after 100 ms, so workers see
/// the stop flag, with the namespace's largest accept queue (std's may be
/// shorter), so bursts of connects wait instead of being dropped.
fn listener(addr: SocketAddrV4) -> Result<TcpListener> {
    let listener = TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    // SAFETY: plain syscalls on a socket `listener` owns; `timeout` outlives the call.
    unsafe {
        if libc::setsockopt(
            listener.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const timeout).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        ) != 0
        {
            return Err(std::io::Error::last_os_error()).context("SO_RCVTIMEO on a listener");
        }
        // Calling listen again only changes the queue length; -1 means
        // net.core.somaxconn.
        if libc::listen(listener.as_raw_fd(), -1) != 0 {
            return Err(std::io::Error::last_os_error()).context("listen");
        }
    }
    Ok(listener)
}

/// A worker: accepts and answers until the stop flag is set. An accept
/// error is the 100 ms timeout or a connection reset while queued; either
/// way the worker looks at the flag and goes on.
fn serve(listener: &TcpListener, stop: &AtomicBool, recording: &Recording, log: usize) {
    while !stop.load(Ordering::Acquire) {
        let Ok((stream, _)) = listener.accept() else {
            continue;
        };
        let at = Instant::now();
        if let Ok(path) = answer(stream)
            && recording.on.load(Ordering::Acquire)
            && recording.count.fetch_add(1, Ordering::Relaxed) < recording.max
        {
            recording.logs[log]
                .lock()
                .expect("arrival log")
                .push(Arrival { path, at });
        }
    }
}

/// Reads one request, answers 200 with `Connection: close` and closes;
/// returns the number in `/p/<number>`.
fn answer(mut stream: TcpStream) -> Result<u32> {
    // lbfo sends its request right after connecting; a slow one must not
    // keep the worker past the check's own timeout.
    stream.set_read_timeout(Some(Duration::from_millis(TIMEOUT_MS)))?;
    let mut request = [0u8; 2048];
    let mut len = 0;
    while !request[..len].windows(4).any(|w| w == b"\r\n\r\n") {
        if len == request.len() {
            bail!("request head too long");
        }
        let n = stream.read(&mut request[len..])?;
        if n == 0 {
            bail!("closed before the request ended");
        }
        len += n;
    }
    stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")?;
    let head = std::str::from_utf8(&request[..len]).context("request is not UTF-8")?;
    head.strip_prefix("GET /p/")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .context("not a GET /p/<number>")
}
