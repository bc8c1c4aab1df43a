//! End-to-end tests of running lbfo as an operator's service: JSON logs for
//! log shippers, and systemd's notify protocol (readiness, reload, stop, and
//! the watchdog that only a turning main loop feeds), received on a Unix
//! datagram socket the test binds as `NOTIFY_SOCKET`, as systemd would; and
//! the shipped unit `dist/lbfo.service`: `systemd-analyze verify`, and lbfo
//! run with exactly the capabilities it grants.

use std::{
    io::IoSliceMut,
    os::{fd::AsRawFd, unix::net::UnixDatagram},
    path::PathBuf,
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use lbfo_tests::{
    lab::{Host, Lab, attached_xdp},
    node::{LbfoNode, StartOptions, basic_config, lbfo_bin},
};
use nix::{
    sys::{
        signal::{Signal, kill},
        socket::{
            ControlMessageOwned, MsgFlags, UnixCredentials, recvmsg, setsockopt, sockopt::PassCred,
        },
    },
    unistd::Pid,
};

const VIP_CIDR: &str = "192.0.2.100/24";

/// One node on a segment with a client.
fn lab() -> (Lab, Host) {
    let (lab, _client, mut nodes) =
        Lab::with_client_and_nodes(1).expect("creating the lab (needs root)");
    (lab, nodes.remove(0))
}

#[test]
fn json_logs_are_one_object_per_line() {
    let (mut lab, n1) = lab();
    let options = StartOptions {
        args: vec!["--log-format".into(), "json".into()],
        ..StartOptions::default()
    };
    let node = LbfoNode::start_with(
        &mut lab,
        &n1,
        &basic_config("web", VIP_CIDR, 3000),
        &options,
    )
    .unwrap();
    // Start-up, a transition and shutdown each log.
    node.own("web").unwrap();
    let status = node.stop(&mut lab).unwrap();
    assert!(status.success(), "lbfo exited with {status}");

    let log = node.log_text();
    let mut messages = Vec::new();
    for (n, line) in log.lines().enumerate() {
        let entry: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("stderr line {} is not JSON ({e}): {line:?}", n + 1));
        let text = |pointer: &str| entry.pointer(pointer).and_then(|v| v.as_str());
        for field in ["/timestamp", "/level", "/fields/message"] {
            assert!(
                text(field).is_some_and(|v| !v.is_empty()),
                "line {} has no string {field}: {line}",
                n + 1
            );
        }
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&text("/level").unwrap()),
            "line {} has an unknown level: {line}",
            n + 1
        );
        messages.push(text("/fields/message").unwrap().to_string());
    }
    for want in ["XDP attached", "XDP detached; stopped"] {
        assert!(
            messages.iter().any(|m| m.contains(want)),
            "no JSON log line says {want:?}; messages: {messages:#?}"
        );
    }
}

/// One datagram to `NOTIFY_SOCKET`, with when the test read it and who
/// sent it.
#[derive(Clone, Debug)]
struct Notice {
    at: Instant,
    /// From SCM_CREDENTIALS, as systemd reads it for `NotifyAccess=main`.
    pid: Option<i32>,
    lines: Vec<String>,
}

impl Notice {
    fn has(&self, line: &str) -> bool {
        self.lines.iter().any(|l| l == line)
    }

    fn value(&self, key: &str) -> Option<&str> {
        self.lines
            .iter()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
    }
}

/// What the test checks at the moment `READY=1` arrives from a pid.
type ReadyCheck = Box<dyn FnOnce(i32) -> Result<(), String> + Send>;

/// The service manager's end of the notify protocol: a datagram socket and a
/// thread that records every datagram as it arrives.
struct NotifySocket {
    path: PathBuf,
    notices: Arc<Mutex<Vec<Notice>>>,
    /// The outcome of the check run when the first `READY=1` arrived.
    at_ready: Arc<Mutex<Option<Result<(), String>>>>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

impl NotifySocket {
    fn bind(lab: &Lab, on_ready: ReadyCheck) -> NotifySocket {
        let path = lab.file("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("binding NOTIFY_SOCKET");
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        setsockopt(&socket, PassCred, &true).expect("SO_PASSCRED");
        let notices = Arc::new(Mutex::new(Vec::new()));
        let at_ready = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (notices, at_ready, stop) = (notices.clone(), at_ready.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut on_ready = Some(on_ready);
                let mut buf = [0u8; 4096];
                while !stop.load(Ordering::Relaxed) {
                    let Some((n, pid)) = recv_with_pid(&socket, &mut buf) else {
                        continue;
                    };
                    let notice = Notice {
                        at: Instant::now(),
                        pid,
                        lines: String::from_utf8_lossy(&buf[..n])
                            .lines()
                            .map(str::to_string)
                            .collect(),
                    };
                    if notice.has("READY=1")
                        && let Some(check) = on_ready.take()
                    {
                        let outcome = match pid {
                            Some(pid) => check(pid),
                            None => Err("READY=1 without the sender's credentials".into()),
                        };
                        *at_ready.lock().unwrap() = Some(outcome);
                    }
                    notices.lock().unwrap().push(notice);
                }
            })
        };
        NotifySocket {
            path,
            notices,
            at_ready,
            stop,
            reader: Some(reader),
        }
    }

    fn env(&self) -> (String, String) {
        (
            "NOTIFY_SOCKET".into(),
            self.path.to_str().expect("utf-8 path").into(),
        )
    }

    fn notices(&self) -> Vec<Notice> {
        self.notices.lock().unwrap().clone()
    }

    /// systemd's default `NotifyAccess=main` drops what other processes send.
    fn assert_all_from(&self, pid: u32) {
        let notices = self.notices();
        let others: Vec<&Notice> = notices
            .iter()
            .filter(|n| n.pid != Some(pid as i32))
            .collect();
        assert!(
            others.is_empty(),
            "notifications not from lbfo's main pid {pid}: {others:#?}"
        );
    }

    fn assert_ready_check_passed(&self) {
        match self.at_ready.lock().unwrap().take() {
            Some(Ok(())) => {}
            Some(Err(e)) => panic!("READY=1 came too early: {e}"),
            None => panic!("the check at READY=1 did not run"),
        }
    }

    /// The first datagram from index `from` on that has `line`, and its
    /// index; fails with everything received if none comes `within`.
    fn wait_for(&self, line: &str, from: usize, within: Duration) -> (usize, Notice) {
        let deadline = Instant::now() + within;
        loop {
            let notices = self.notices();
            if let Some((i, n)) = notices
                .iter()
                .enumerate()
                .skip(from)
                .find(|(_, n)| n.has(line))
            {
                return (i, n.clone());
            }
            assert!(
                Instant::now() < deadline,
                "no {line} on NOTIFY_SOCKET within {within:?} (from datagram {from} on); received: {notices:#?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// When each `WATCHDOG=1` arrived.
    fn pings(&self) -> Vec<Instant> {
        self.notices()
            .iter()
            .filter(|n| n.has("WATCHDOG=1"))
            .map(|n| n.at)
            .collect()
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// One datagram and its sender's pid.
fn recv_with_pid(socket: &UnixDatagram, buf: &mut [u8]) -> Option<(usize, Option<i32>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!(UnixCredentials);
    let msg = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )
    .ok()?;
    let pid = msg.cmsgs().ok()?.find_map(|c| match c {
        ControlMessageOwned::ScmCredentials(creds) => Some(creds.pid()),
        _ => None,
    });
    Some((msg.bytes, pid))
}

/// At `READY=1` XDP must be attached and the control socket listening. The
/// sender is stopped while the test looks, so what it sees is the state
/// READY=1 was sent in (give or take this thread's wake-up), not a later
/// one; an early READY=1 would be seen before the program is even loaded.
fn ready_check(lab: &Lab, host: &Host) -> ReadyCheck {
    let socket = LbfoNode::socket_path(lab, host);
    let host = host.clone();
    Box::new(move |pid| {
        let pid = Pid::from_raw(pid);
        kill(pid, Signal::SIGSTOP).map_err(|e| format!("SIGSTOP: {e}"))?;
        let frozen = (|| {
            match attached_xdp(&host.ns, &host.ifname) {
                Ok(Some(_)) => {}
                other => return Err(format!("no XDP program on {}: {other:?}", host.ifname)),
            }
            // A listening socket accepts into its backlog even while the
            // process is stopped.
            std::os::unix::net::UnixStream::connect(&socket)
                .map(drop)
                .map_err(|e| format!("control socket {}: {e}", socket.display()))
        })();
        kill(pid, Signal::SIGCONT).map_err(|e| format!("SIGCONT: {e}"))?;
        frozen?;
        let out = Command::new(lbfo_bin())
            .args(["status", "--socket"])
            .arg(&socket)
            .output()
            .map_err(|e| format!("running lbfo status: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "lbfo status failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    })
}

fn signal(node: &LbfoNode, signal: Signal) {
    kill(Pid::from_raw(node.pid as i32), signal).expect("signalling lbfo");
}

/// CLOCK_MONOTONIC in microseconds, the clock of `MONOTONIC_USEC`.
fn monotonic_usec() -> u128 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    now.tv_sec() as u128 * 1_000_000 + now.tv_nsec() as u128 / 1_000
}

/// The gaps between consecutive instants.
fn gaps(times: &[Instant]) -> Vec<Duration> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

#[test]
fn systemd_hears_ready_reloading_and_stopping() {
    let (mut lab, n1) = lab();
    let notify = NotifySocket::bind(&lab, ready_check(&lab, &n1));
    let options = StartOptions {
        env: vec![notify.env()],
        ..StartOptions::default()
    };
    let node = LbfoNode::start_with(
        &mut lab,
        &n1,
        &basic_config("web", VIP_CIDR, 3000),
        &options,
    )
    .unwrap();

    let (ready_at, ready) = notify.wait_for("READY=1", 0, Duration::from_secs(5));
    assert_eq!(
        ready_at,
        0,
        "READY=1 must be the first notification; received: {:#?}",
        notify.notices()
    );
    notify.assert_ready_check_passed();
    let status = ready.value("STATUS").unwrap_or_default();
    assert!(
        status.contains("1 VIP(s) on eth0"),
        "READY=1 should carry a STATUS= naming the VIPs and interface, got {ready:?}"
    );

    // No WATCHDOG_USEC, no watchdog: wait ten of the pings a 100 ms
    // watchdog would send.
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        notify.pings().is_empty(),
        "WATCHDOG=1 without WATCHDOG_USEC: {:#?}",
        notify.notices()
    );

    let before = monotonic_usec();
    signal(&node, Signal::SIGHUP);
    let (reloading_at, reloading) = notify.wait_for("RELOADING=1", 1, Duration::from_secs(5));
    let after = monotonic_usec();
    let stamp: u128 = reloading
        .value("MONOTONIC_USEC")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("RELOADING=1 without a MONOTONIC_USEC=: {reloading:?}"));
    assert!(
        (before..=after).contains(&stamp),
        "MONOTONIC_USEC={stamp} must be CLOCK_MONOTONIC between SIGHUP ({before}) and its receipt ({after})"
    );
    let (_, reloaded) = notify.wait_for("READY=1", reloading_at + 1, Duration::from_secs(5));
    assert!(
        node.log_text().contains("SIGHUP: reloaded"),
        "READY=1 after RELOADING=1 but no reload in the log:\n{}",
        node.log_text()
    );
    assert!(
        reloaded
            .value("STATUS")
            .is_some_and(|s| !s.contains("refused")),
        "a reload that went through reports no refusal: {reloaded:?}"
    );

    let stopping_from = notify.notices().len();
    signal(&node, Signal::SIGTERM);
    let (stopping_at, _) = notify.wait_for("STOPPING=1", stopping_from, Duration::from_secs(5));
    let exit = lab.wait(node.pid, Duration::from_secs(10)).unwrap();
    assert!(exit.success(), "lbfo exited with {exit}");
    let late: Vec<Notice> = notify.notices()[stopping_at + 1..]
        .iter()
        .filter(|n| n.has("READY=1") || n.has("RELOADING=1"))
        .cloned()
        .collect();
    assert!(
        late.is_empty(),
        "READY or RELOADING after STOPPING=1: {late:#?}"
    );
    notify.assert_all_from(node.pid);
}

/// WATCHDOG_USEC for the watchdog tests: systemd kills a service whose
/// pings are this far apart; lbfo pings at half of it.
const WATCHDOG_USEC: u64 = 200_000;
const PING_INTERVAL: Duration = Duration::from_micros(WATCHDOG_USEC / 2);
/// How late a ping may be on a loaded 2-core machine; still well inside the
/// other half of WATCHDOG_USEC that systemd allows.
const PING_SLACK: Duration = Duration::from_millis(50);

fn start_with_watchdog(
    lab: &mut Lab,
    host: &Host,
    notify: &NotifySocket,
    more_env: &[(&str, &str)],
) -> LbfoNode {
    let mut env = vec![
        notify.env(),
        ("WATCHDOG_USEC".into(), WATCHDOG_USEC.to_string()),
    ];
    env.extend(more_env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let options = StartOptions {
        env,
        ..StartOptions::default()
    };
    LbfoNode::start_with(lab, host, &basic_config("web", VIP_CIDR, 3000), &options).unwrap()
}

fn assert_steady_pings(pings: &[Instant], from: Instant, window: Duration, what: &str) {
    let in_window: Vec<Instant> = pings
        .iter()
        .copied()
        .filter(|&t| t >= from && t <= from + window)
        .collect();
    let nominal = (window.as_micros() / PING_INTERVAL.as_micros()) as usize;
    assert!(
        in_window.len() + 1 >= nominal && in_window.len() <= nominal + 2,
        "{what}: {} WATCHDOG=1 in {window:?}, expected one per {PING_INTERVAL:?} ({} to {})",
        in_window.len(),
        nominal - 1,
        nominal + 2
    );
    let mut edges = vec![from];
    edges.extend(&in_window);
    let longest = gaps(&edges).into_iter().max().unwrap_or_default();
    assert!(
        longest <= PING_INTERVAL + PING_SLACK,
        "{what}: WATCHDOG=1 {longest:?} apart, more than {PING_INTERVAL:?} + {PING_SLACK:?}"
    );
}

#[test]
fn watchdog_pings_at_half_watchdog_usec() {
    let (mut lab, n1) = lab();
    let notify = NotifySocket::bind(&lab, ready_check(&lab, &n1));
    let node = start_with_watchdog(&mut lab, &n1, &notify, &[]);
    let (_, ready) = notify.wait_for("READY=1", 0, Duration::from_secs(5));
    let window = Duration::from_secs(1);
    std::thread::sleep((ready.at + window + PING_SLACK).saturating_duration_since(Instant::now()));
    assert_steady_pings(&notify.pings(), ready.at, window, "after READY=1");
    notify.assert_ready_check_passed();
    node.stop(&mut lab).unwrap();
    notify.assert_all_from(node.pid);
}

#[test]
fn a_stuck_main_loop_stops_the_watchdog_pings() {
    const STALL: Duration = Duration::from_millis(1000);
    let (mut lab, n1) = lab();
    let notify = NotifySocket::bind(&lab, ready_check(&lab, &n1));
    let stall_ms = STALL.as_millis().to_string();
    let node = start_with_watchdog(
        &mut lab,
        &n1,
        &notify,
        &[("LBFO_TEST_STALL_ON_SIGUSR1", &stall_ms)],
    );
    let (_, ready) = notify.wait_for("READY=1", 0, Duration::from_secs(5));
    let window = Duration::from_millis(500);
    std::thread::sleep((ready.at + window + PING_SLACK).saturating_duration_since(Instant::now()));
    assert_steady_pings(&notify.pings(), ready.at, window, "before the stall");

    let stalled = Instant::now();
    signal(&node, Signal::SIGUSR1);
    // The control server, a task of its own, still takes requests during
    // the stall; the answer comes from the loop, so only after it.
    std::thread::sleep(Duration::from_millis(200));
    let asked = Instant::now();
    node.cli_ok(&["status"]).expect("status after the stall");
    let answered = Instant::now();
    assert!(
        answered >= stalled + STALL,
        "lbfo status asked {:?} into a {STALL:?} stall was answered after {:?}: the main loop was not blocked",
        asked - stalled,
        answered - asked
    );

    let resumed_window = Duration::from_millis(500);
    std::thread::sleep(
        (stalled + STALL + resumed_window + PING_INTERVAL + PING_SLACK)
            .saturating_duration_since(Instant::now()),
    );
    let pings = notify.pings();
    // A ping that was due as the signal arrived may still go out before the
    // loop takes the signal; none after that until the stall ends.
    let taken = stalled + Duration::from_millis(50);
    let next = pings.iter().copied().find(|&t| t > taken);
    let Some(next) = next else {
        panic!("no WATCHDOG=1 after the stall: the pings did not resume");
    };
    assert!(
        next >= stalled + STALL,
        "WATCHDOG=1 {:?} into a {STALL:?} stall of the main loop: the ping does not come from the loop",
        next - stalled
    );
    assert!(
        next <= stalled + STALL + PING_INTERVAL + PING_SLACK,
        "the first WATCHDOG=1 after the stall came {:?} after its end, more than {PING_INTERVAL:?} + {PING_SLACK:?}",
        next - (stalled + STALL)
    );
    assert_steady_pings(&pings, next, resumed_window, "after the stall");
    node.stop(&mut lab).unwrap();
    notify.assert_all_from(node.pid);
}

/// `dist/lbfo.service`, the unit lbfo ships.
fn unit_file() -> (PathBuf, String) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dist/lbfo.service");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    (path, text)
}

/// The value of the unit's one `KEY=` line.
fn unit_setting<'a>(unit: &'a str, key: &str) -> &'a str {
    let values: Vec<&str> = unit
        .lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .collect();
    match values[..] {
        [value] => value.trim(),
        _ => panic!("dist/lbfo.service should set {key}= once, sets it {values:?}"),
    }
}

#[test]
fn the_unit_file_verifies() {
    let (path, unit) = unit_file();
    assert_eq!(
        unit_setting(&unit, "ExecStart"),
        "/usr/local/bin/lbfo run -c /etc/lbfo.toml"
    );
    // `verify` wants the executables to exist: check a copy whose ExecStart
    // names the built binary, the rest byte for byte as shipped.
    let dir = std::env::temp_dir().join(format!("lbfo-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("lbfo.service");
    std::fs::write(
        &copy,
        unit.replace(
            "/usr/local/bin/lbfo",
            lbfo_bin().to_str().expect("utf-8 path"),
        ),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("running systemd-analyze (Debian package systemd; ./x installs it)");
    let _ = std::fs::remove_dir_all(&dir);
    // verify exits 0 on settings it ignores; any message is a defect.
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify {} ({}): {said}",
        path.display(),
        out.status
    );
}

/// The bit of each capability in /proc/PID/status's Cap* masks.
fn capability_bit(name: &str) -> u64 {
    let bit = match name {
        "CAP_NET_ADMIN" => 12,
        "CAP_NET_RAW" => 13,
        "CAP_SYS_ADMIN" => 21,
        "CAP_BPF" => 39,
        other => panic!("the unit grants {other}, which this test does not know"),
    };
    1 << bit
}

#[test]
fn the_units_capabilities_are_enough() {
    let (_, unit) = unit_file();
    let granted: Vec<&str> = unit_setting(&unit, "CapabilityBoundingSet")
        .split_whitespace()
        .collect();
    assert_eq!(
        unit_setting(&unit, "AmbientCapabilities"),
        unit_setting(&unit, "CapabilityBoundingSet"),
        "the ambient set should name what the bounding set allows"
    );
    assert_eq!(unit_setting(&unit, "NoNewPrivileges"), "yes");
    let bounding = std::iter::once("-all".to_string())
        .chain(granted.iter().map(|c| {
            format!(
                "+{}",
                c.strip_prefix("CAP_").expect("CAP_ name").to_lowercase()
            )
        }))
        .collect::<Vec<_>>()
        .join(",");
    let want_mask = granted
        .iter()
        .map(|c| capability_bit(c))
        .fold(0, |a, b| a | b);

    let (mut lab, client, nodes) =
        Lab::with_client_and_nodes(1).expect("creating the lab (needs root)");
    let n1 = &nodes[0];
    let options = StartOptions {
        capabilities: Some(bounding),
        ..StartOptions::default()
    };
    let config = basic_config("web", VIP_CIDR, 3000);
    // Killed without a chance to clean up, as after the watchdog's SIGABRT:
    // the restarted daemon (Restart=) must replace the XDP program the dead
    // one left, which takes reading that program's name.
    let first = LbfoNode::start_with(&mut lab, n1, &config, &options).unwrap();
    first.kill9().unwrap();
    lab.wait(first.pid, Duration::from_secs(5)).unwrap();
    let node = LbfoNode::start_with(&mut lab, n1, &config, &options).unwrap_or_else(|e| {
        panic!("restart with the unit's capabilities over the program a killed lbfo left: {e:#}")
    });
    let status = std::fs::read_to_string(format!("/proc/{}/status", node.pid)).unwrap();
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .expect("CapEff in /proc/PID/status");
    assert_eq!(
        effective, want_mask,
        "lbfo should run with exactly the unit's capabilities {granted:?}: CapEff {effective:#x}, want {want_mask:#x}"
    );

    node.own("web").unwrap();
    let vip = VIP_CIDR.split('/').next().unwrap().parse().unwrap();
    let answers = lbfo_tests::lab::arping(
        &client.ns,
        &client.ifname,
        vip,
        3,
        Duration::from_millis(50),
    )
    .unwrap();
    assert!(
        !answers.is_empty() && answers.iter().all(|m| *m == n1.mac),
        "with the unit's capabilities the owner must answer ARP from {:?}, got {answers:?}; log:\n{}",
        n1.mac,
        node.log_text()
    );
    signal(&node, Signal::SIGHUP);
    lbfo_tests::lab::wait_for(Duration::from_secs(5), "the reload", || {
        Ok(node.log_text().contains("SIGHUP: reloaded"))
    })
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", node.log_text()));
    let exit = node.stop(&mut lab).unwrap();
    let log = node.log_text();
    assert!(
        exit.success() && log.contains("XDP detached; stopped"),
        "lbfo with the unit's capabilities should stop cleanly ({exit}); log:\n{log}"
    );
    let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert!(
        errors.is_empty(),
        "errors with the unit's capabilities: {errors:#?}"
    );
}
