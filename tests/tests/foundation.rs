//! End-to-end tests of the foundation: `lbfo run` on a node in a namespace
//! lab, real ARP clients (Debian's `arping`, the kernel's own neighbour
//! table via `ping`), ownership by operator command, gratuitous ARP, the
//! lease as a dead man's switch, and start-up errors.

use std::{
    net::Ipv4Addr,
    process::Command,
    time::{Duration, Instant},
};

use lbfo_tests::{
    lab::{
        Host, Lab, addresses, arping, attached_xdp, ip, neighbour_mac, netns_exec, run,
        set_neighbour, wait_for,
    },
    node::{LbfoNode, basic_config, lbfo_bin},
};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const VIP_CIDR: &str = "192.0.2.100/24";
const PROBE_INTERVAL: Duration = Duration::from_millis(50);

fn fmt_macs(macs: &[[u8; 6]]) -> String {
    macs.iter()
        .map(lbfo::arp::format_mac)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A client and `n` nodes on one segment.
fn lab(nodes: usize) -> (Lab, Host, Vec<Host>) {
    Lab::with_client_and_nodes(nodes).expect("creating the lab (needs root)")
}

fn arp_answers(client: &Host, count: u32) -> Vec<[u8; 6]> {
    arping(&client.ns, &client.ifname, VIP, count, PROBE_INTERVAL).unwrap()
}

fn has_vip_address(host: &Host) -> bool {
    addresses(&host.ns, &host.ifname)
        .unwrap()
        .iter()
        .any(|a| a == VIP_CIDR)
}

#[test]
fn arp_is_answered_only_while_owned() {
    let (mut lab, client, nodes) = lab(1);
    let n1 = &nodes[0];
    let node = LbfoNode::start(&mut lab, n1, &basic_config("web", VIP_CIDR, 3000)).unwrap();

    let answers = arp_answers(&client, 3);
    assert!(
        answers.is_empty(),
        "a standby node must not answer ARP for the VIP, got replies from {}",
        fmt_macs(&answers)
    );
    assert!(
        !has_vip_address(n1),
        "standby node must not carry the VIP address"
    );

    node.own("web").unwrap();
    node.own("web").expect("owning twice is not an error");
    let answers = arp_answers(&client, 3);
    assert!(
        !answers.is_empty(),
        "owner must answer ARP for the VIP; log:\n{}",
        node.log_text()
    );
    assert!(
        answers.iter().all(|m| *m == n1.mac),
        "every reply must come from the owner's MAC {}, got {}",
        lbfo::arp::format_mac(&n1.mac),
        fmt_macs(&answers)
    );
    assert!(
        has_vip_address(n1),
        "owner must carry the VIP address so local services get the traffic"
    );
    let status = node.status().unwrap();
    let vip = &status.vips[0];
    assert!(
        vip.owned && vip.state == "owner",
        "status must show ownership: {vip:?}"
    );
    assert!(
        vip.lease_left_ms > 0 && vip.lease_left_ms <= 3000,
        "lease left must be within the 3 s lease: {vip:?}"
    );
    assert!(
        vip.counters.arp_replied >= answers.len() as u64,
        "XDP counted {} replies but the client saw {}",
        vip.counters.arp_replied,
        answers.len()
    );
    assert_eq!(vip.address_origin, "lbfo");

    node.release("192.0.2.100").expect("release by address");
    node.release("web")
        .expect("releasing twice is not an error");
    let answers = arp_answers(&client, 3);
    assert!(
        answers.is_empty(),
        "after release nobody may answer, got {}",
        fmt_macs(&answers)
    );
    assert!(
        !has_vip_address(n1),
        "release must remove the address lbfo added"
    );
    let status = node.status().unwrap();
    assert!(
        !status.vips[0].owned,
        "status after release: {:?}",
        status.vips[0]
    );
    assert!(
        status.vips[0].counters.arp_dropped_not_owner >= 3,
        "drops must be counted: {:?}",
        status.vips[0].counters
    );
}

#[test]
fn gratuitous_arp_moves_the_client_within_200ms() {
    let (mut lab, client, nodes) = lab(2);
    let n1 = LbfoNode::start(&mut lab, &nodes[0], &basic_config("web", VIP_CIDR, 3000)).unwrap();
    let n2 = LbfoNode::start(&mut lab, &nodes[1], &basic_config("web", VIP_CIDR, 3000)).unwrap();

    n1.own("web").unwrap();
    // The client learns the VIP the ordinary way: its kernel ARPs while pinging.
    run(netns_exec(&client.ns, "ping").args(["-c", "1", "-W", "1", &VIP.to_string()])).unwrap();
    assert_eq!(
        neighbour_mac(&client.ns, "eth0", VIP).unwrap(),
        Some(nodes[0].mac),
        "client must have learned n1"
    );

    n1.release("web").unwrap();
    // From here the client sends nothing: only gratuitous ARP can move its entry.
    let start = Instant::now();
    n2.own("web").unwrap();
    let moved = wait_for(
        Duration::from_secs(2),
        "the client's neighbour entry to move to n2",
        || Ok(neighbour_mac(&client.ns, "eth0", VIP)? == Some(nodes[1].mac)),
    );
    let elapsed = start.elapsed();
    moved.unwrap_or_else(|e| panic!("{e}; entry is {:?}", neighbour_mac(&client.ns, "eth0", VIP)));
    assert!(
        elapsed <= Duration::from_millis(200),
        "neighbour entry moved after {elapsed:?}, expected within 200 ms of `lbfo own`"
    );
}

#[test]
fn kill_9_silences_the_vip_within_one_lease() {
    let lease = Duration::from_millis(1000);
    let (mut lab, client, nodes) = lab(1);
    let n1 = &nodes[0];
    let node = LbfoNode::start(
        &mut lab,
        n1,
        &basic_config("web", VIP_CIDR, lease.as_millis() as u64),
    )
    .unwrap();
    node.own("web").unwrap();
    assert!(
        !arp_answers(&client, 1).is_empty(),
        "owner must answer before the kill"
    );
    let prog_before = attached_xdp(&n1.ns, "eth0").unwrap();

    let killed = Instant::now();
    node.kill9().unwrap();
    // Probe until the first unanswered request.
    let mut last_answer = None;
    while killed.elapsed() < lease * 3 {
        let probe_sent = killed.elapsed();
        if arp_answers(&client, 1).is_empty() {
            break;
        }
        last_answer = Some(probe_sent);
    }
    let silent_after = killed.elapsed();
    assert!(
        silent_after <= lease + 2 * PROBE_INTERVAL + Duration::from_millis(100),
        "VIP still answered {silent_after:?} after kill -9 (last answer to a probe sent at {last_answer:?}); lease is {lease:?}"
    );
    // Nobody else (the kernel in particular) answers afterwards either.
    let late = arping(&client.ns, "eth0", VIP, 5, Duration::from_millis(200)).unwrap();
    assert!(
        late.is_empty(),
        "after the lease ran out nothing may answer, got {}",
        fmt_macs(&late)
    );
    assert_eq!(
        attached_xdp(&n1.ns, "eth0").unwrap(),
        prog_before,
        "the XDP program must stay attached after kill -9 (it is what keeps the VIP silent)"
    );

    // A new daemon takes over cleanly: stale program replaced, stale address removed.
    std::fs::remove_file(&node.log).ok();
    let again = LbfoNode::start(
        &mut lab,
        n1,
        &basic_config("web", VIP_CIDR, lease.as_millis() as u64),
    )
    .unwrap();
    assert_ne!(
        attached_xdp(&n1.ns, "eth0").unwrap(),
        prog_before,
        "restart must replace the stale program"
    );
    assert!(
        !has_vip_address(n1),
        "restart must remove the address the killed daemon left"
    );
    assert!(
        arp_answers(&client, 2).is_empty(),
        "restarted daemon starts on standby"
    );
    again.own("web").unwrap();
    assert!(
        !arp_answers(&client, 2).is_empty(),
        "restarted daemon can own again"
    );
}

#[test]
fn sigterm_releases_and_detaches() {
    let (mut lab, client, nodes) = lab(1);
    let n1 = &nodes[0];
    let node = LbfoNode::start(&mut lab, n1, &basic_config("web", VIP_CIDR, 3000)).unwrap();
    node.own("web").unwrap();
    assert!(attached_xdp(&n1.ns, "eth0").unwrap().is_some());
    let status = node.stop(&mut lab).unwrap();
    assert!(
        status.success(),
        "lbfo must exit 0 on SIGTERM, got {status}; log:\n{}",
        node.log_text()
    );
    assert_eq!(
        attached_xdp(&n1.ns, "eth0").unwrap(),
        None,
        "XDP must be detached after shutdown"
    );
    assert!(
        !has_vip_address(n1),
        "VIP address must be removed after shutdown"
    );
    assert!(
        !node.socket.exists(),
        "control socket must be removed after shutdown"
    );
    assert!(
        arp_answers(&client, 2).is_empty(),
        "nothing answers after shutdown"
    );
}

/// The notify script of the last transition (owner -> standby on SIGTERM)
/// runs to its end before the daemon exits, even when it takes a while.
#[test]
fn the_last_notify_script_runs_to_completion_on_sigterm() {
    let (mut lab, _client, nodes) = lab(1);
    let log = lab.file("notify.log");
    let script = lab.file("notify.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nsleep 0.5\necho \"$1 $2 $3\" >> {}\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let config = format!(
        "interface = \"eth0\"\nxdp_mode = \"native\"\nlease_ms = 3000\nnotify_timeout_ms = 5000\n\n[[vip]]\nname = \"web\"\naddress = \"{VIP_CIDR}\"\nnotify = \"{}\"\n",
        script.display()
    );
    let node = LbfoNode::start(&mut lab, &nodes[0], &config).unwrap();
    node.own("web").unwrap();
    let status = node.stop(&mut lab).unwrap();
    assert!(status.success(), "exit 0 on SIGTERM, got {status}");
    // Both scripts sleep, so they may finish in either order.
    let seen = std::fs::read_to_string(&log).unwrap_or_default();
    let mut seen: Vec<&str> = seen.lines().collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        ["web initialize owner", "web owner standby"],
        "both transitions' scripts ran to their end before exit; log:\n{}",
        node.log_text()
    );
}

#[test]
fn an_address_configured_by_hand_is_never_removed() {
    let (mut lab, client, nodes) = lab(1);
    let n1 = &nodes[0];
    ip(&n1.ns, &["addr", "add", VIP_CIDR, "dev", "eth0"]).unwrap();
    let node = LbfoNode::start(&mut lab, n1, &basic_config("web", VIP_CIDR, 3000)).unwrap();
    let answers = arp_answers(&client, 2);
    assert!(
        answers.is_empty(),
        "standby: XDP must keep the kernel from answering for the configured address, got {}",
        fmt_macs(&answers)
    );
    node.own("web").unwrap();
    assert_eq!(node.status().unwrap().vips[0].address_origin, "operator");
    assert!(!arp_answers(&client, 2).is_empty());
    node.release("web").unwrap();
    assert!(
        has_vip_address(n1),
        "release must leave the operator's address alone"
    );
    node.stop(&mut lab).unwrap();
    assert!(
        has_vip_address(n1),
        "shutdown must leave the operator's address alone"
    );
}

/// Runs `lbfo run` in `ns` expecting it to fail; returns its one-line error.
/// `as_nobody` runs it as the unprivileged user nobody instead of root.
fn run_fails(
    ns: &str,
    config: &str,
    socket: &std::path::Path,
    lab: &Lab,
    as_nobody: bool,
) -> String {
    let config_path = lab.file("bad.toml");
    std::fs::write(&config_path, config).unwrap();
    let mut cmd = if as_nobody {
        let mut cmd = netns_exec(ns, "setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(lbfo_bin());
        cmd
    } else {
        netns_exec(ns, lbfo_bin().to_str().unwrap())
    };
    let out = cmd
        .args(["run", "-c"])
        .arg(&config_path)
        .arg("--socket")
        .arg(socket)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected exit code 1 for config {config:?}, stderr: {stderr}"
    );
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("lbfo: error:"))
        .collect();
    assert_eq!(
        errors.len(),
        1,
        "expected exactly one error line, stderr: {stderr:?}"
    );
    errors[0].to_string()
}

#[test]
fn bad_input_is_one_clear_line_and_nothing_is_applied() {
    let (mut lab, _client, nodes) = lab(2);
    let n1 = &nodes[0];
    let socket = lab.file("bad.sock");
    let good = basic_config("web", VIP_CIDR, 3000);
    let cases: Vec<(&str, String, bool, &str)> = vec![
        (
            &n1.ns,
            "interface = \"eth0\"\nbogus = 1\n".into(),
            false,
            "unknown field `bogus`",
        ),
        (
            &n1.ns,
            good.replace(
                &format!("address = \"{VIP_CIDR}\""),
                &format!("addresses = [\"{VIP_CIDR}\", \"2001:db8::100/64\"]"),
            ),
            false,
            "mixes IPv4 and IPv6 addresses",
        ),
        (
            &n1.ns,
            good.replace("eth0", "nope0"),
            false,
            "interface nope0 does not exist",
        ),
        (&n1.ns, good.clone(), true, "must run as root"),
        // A bridge has no native XDP support: the "kernel/driver without XDP" case.
        (
            lab.switch_ns(),
            good.replace("eth0", "br0"),
            false,
            "cannot attach XDP to br0",
        ),
    ];
    for (ns, config, as_nobody, expected) in &cases {
        let error = run_fails(ns, config, &socket, &lab, *as_nobody);
        assert!(
            error.contains(expected),
            "expected an error containing {expected:?}, got {error:?}"
        );
        assert!(
            !socket.exists(),
            "{expected}: the control socket must not be left behind"
        );
    }
    assert_eq!(
        attached_xdp(&n1.ns, "eth0").unwrap(),
        None,
        "failed starts must not leave XDP attached"
    );
    assert_eq!(attached_xdp(lab.switch_ns(), "br0").unwrap(), None);

    let missing = lab.file("does-not-exist.toml");
    let out = Command::new(lbfo_bin())
        .args(["run", "-c"])
        .arg(&missing)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.trim().starts_with("lbfo: error: cannot read config")
            && stderr.trim().lines().count() == 1,
        "got {stderr:?}"
    );

    // A second daemon: on the same interface, or on the same socket.
    let first = LbfoNode::start(&mut lab, n1, &good).unwrap();
    let error = run_fails(&n1.ns, &good, &lab.file("other.sock"), &lab, false);
    assert!(
        error.contains("already running on interface eth0"),
        "got {error:?}"
    );
    let error = run_fails(&nodes[1].ns, &good, &first.socket, &lab, false);
    assert!(error.contains("already serving"), "got {error:?}");
    assert_eq!(
        attached_xdp(&nodes[1].ns, "eth0").unwrap(),
        None,
        "refused daemon must not attach XDP"
    );
    assert!(
        first.status().is_ok(),
        "the first daemon must be unaffected"
    );

    // Talking to a daemon that is not there.
    let out = Command::new(lbfo_bin())
        .args(["status", "--socket"])
        .arg(lab.file("none.sock"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("no lbfo daemon is listening"),
        "got {stderr:?}"
    );
    let out = first.cli(&["own", "nosuchvip"]).unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no VIP named or addressed \"nosuchvip\"")
    );
}

#[test]
fn periodic_gratuitous_arp_repairs_a_client_that_forgot() {
    let (mut lab, client, nodes) = lab(1);
    let config = basic_config("web", VIP_CIDR, 3000).replace(
        "lease_ms = 3000\n",
        "lease_ms = 3000\n[garp]\ncount = 1\nrefresh_ms = 1000\n",
    );
    let node = LbfoNode::start(&mut lab, &nodes[0], &config).unwrap();
    node.own("web").unwrap();
    // The client believes something wrong about the VIP and sends nothing.
    set_neighbour(&client.ns, "eth0", VIP, &[0x02, 0, 0, 0, 0, 0x99], "stale").unwrap();
    let took = wait_for(
        Duration::from_millis(1000 + 500),
        "a refresh to correct the client",
        || Ok(neighbour_mac(&client.ns, "eth0", VIP)? == Some(nodes[0].mac)),
    )
    .unwrap_or_else(|e| panic!("{e}; entry {:?}", neighbour_mac(&client.ns, "eth0", VIP)));
    eprintln!("client corrected after {took:?}");
}

/// A node whose cable is pulled (the switch port goes down, so its eth0
/// loses the carrier) puts its VIPs in fault: it gives the address up and
/// XDP stops answering. With the link back, an operator-owned VIP is owned
/// again and announced.
#[test]
fn losing_the_link_is_a_fault_until_it_returns() {
    let (mut lab, client, nodes) = lab(1);
    let n1 = &nodes[0];
    let node = LbfoNode::start(&mut lab, n1, &basic_config("web", VIP_CIDR, 3000)).unwrap();
    node.own("web").unwrap();
    assert_eq!(arp_answers(&client, 2), vec![n1.mac; 2]);

    let switch_port = &n1.name;
    ip(lab.switch_ns(), &["link", "set", switch_port, "down"]).unwrap();
    let took = wait_for(Duration::from_secs(1), "the VIP to go to fault", || {
        let vip = &node.status()?.vips[0];
        Ok(vip.state == "fault" && !vip.owned)
    })
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", node.log_text()));
    assert!(
        !has_vip_address(n1),
        "a VIP in fault must give its address up"
    );
    assert!(
        !node.status().unwrap().link_up,
        "status must show the link is gone"
    );
    assert!(
        node.log_text().contains("lost its link"),
        "the log must say why; log:\n{}",
        node.log_text()
    );
    eprintln!("fault {took:?} after the carrier went");

    ip(lab.switch_ns(), &["link", "set", switch_port, "up"]).unwrap();
    wait_for(Duration::from_secs(2), "the VIP to be owned again", || {
        let vip = &node.status()?.vips[0];
        Ok(vip.state == "owner" && vip.owned)
    })
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", node.log_text()));
    assert!(has_vip_address(n1));
    assert!(node.status().unwrap().link_up);
    assert_eq!(arp_answers(&client, 2), vec![n1.mac; 2]);
}

/// `lbfo status | head -n 1`: the reader goes away while the CLI still has
/// more to write than the pipe holds (250 VIPs). The CLI must exit quietly with status 0
/// (main.rs says why 0), in text and in JSON.
#[test]
fn status_into_a_closed_pipe_exits_quietly() {
    use std::{io::Read as _, os::fd::AsRawFd as _, process::Stdio};

    let (mut lab, _client, nodes) = lab(1);
    // 250 VIPs: far more status than a pipe holds.
    let mut config = "interface = \"eth0\"\nxdp_mode = \"native\"\n".to_string();
    for i in 1..=250 {
        config += &format!("\n[[vip]]\nname = \"vip{i}\"\naddress = \"198.51.100.{i}/24\"\n");
    }
    let node = LbfoNode::start(&mut lab, &nodes[0], &config).unwrap();
    for args in [&["status"][..], &["status", "--json"]] {
        let whole = node.cli(args).unwrap();
        assert!(whole.status.success(), "lbfo {args:?}: {whole:?}");

        let mut child = Command::new(lbfo_bin())
            .args(args)
            .arg("--socket")
            .arg(&node.socket)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        // One page instead of the default 64 KiB, which the text of 250 VIPs
        // (about 54 KB) would fit in.
        // SAFETY: F_SETPIPE_SZ and F_GETPIPE_SZ only size a pipe this test owns.
        let capacity = unsafe {
            libc::fcntl(stdout.as_raw_fd(), libc::F_SETPIPE_SZ, 4096);
            libc::fcntl(stdout.as_raw_fd(), libc::F_GETPIPE_SZ)
        };
        assert!(
            capacity > 0,
            "F_GETPIPE_SZ: {}",
            std::io::Error::last_os_error()
        );
        let mut head = [0u8; 100];
        stdout.read_exact(&mut head).unwrap();
        // Unless the output outgrows the pipe, the CLI could finish writing
        // before the reader goes away, and this test would prove nothing.
        assert!(
            whole.stdout.len() > capacity as usize + head.len(),
            "lbfo {args:?} prints {} bytes, no more than the pipe holds ({capacity})",
            whole.stdout.len()
        );
        drop(stdout);
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.is_empty(),
            "lbfo {args:?} into a closed pipe must exit 0 and say nothing, got {} and stderr {stderr:?}",
            out.status
        );
    }
}
