//! End-to-end health checks: real servers in lab namespaces (the lab's HTTP
//! server, a closed port, a host that drops ICMP with nftables, programs
//! that succeed, fail or hang), and a VIP that faults and recovers with them.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use lbfo_tests::{
    lab::{Host, Lab, addresses, arping, drop_input, wait_for},
    nginx::Nginx,
    node::{HttpServer, LbfoNode},
};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const INTERVAL: Duration = Duration::from_millis(200);
const TIMEOUT: Duration = Duration::from_millis(100);
const RISE: u32 = 2;
const FALL: u32 = 3;
/// Slack for scheduling, ARP and seeing the new state (a status request every
/// 5 ms) on a loaded 2-core machine.
const SLACK: Duration = Duration::from_millis(150);

struct HealthLab {
    lab: Lab,
    client: Host,
    node: Host,
    service: Host,
    quiet: Host,
}

fn health_lab() -> HealthLab {
    let mut lab = Lab::new().expect("creating the lab (needs root)");
    let client = lab.add_host("client", Ipv4Addr::new(192, 0, 2, 2)).unwrap();
    let node = lab.add_host("n1", Ipv4Addr::new(192, 0, 2, 11)).unwrap();
    let service = lab.add_host("svc", Ipv4Addr::new(192, 0, 2, 31)).unwrap();
    let quiet = lab.add_host("quiet", Ipv4Addr::new(192, 0, 2, 41)).unwrap();
    // The quiet host drops every echo request.
    drop_input(&quiet.ns, "lbfo_quiet", "icmp type echo-request").unwrap();
    HealthLab {
        lab,
        client,
        node,
        service,
        quiet,
    }
}

fn http_check(url: &str) -> String {
    format!(
        "[[vip.check]]\nkind = \"http\"\nurl = \"{url}\"\nexpect_status = \"200-299\"\nbody_contains = \"ok\"\ninterval_ms = {}\ntimeout_ms = {}\nrise = {RISE}\nfall = {FALL}\n",
        INTERVAL.as_millis(),
        TIMEOUT.as_millis()
    )
}

fn vip_state(node: &LbfoNode, name: &str) -> String {
    node.status()
        .ok()
        .and_then(|s| s.vips.into_iter().find(|v| v.name == name))
        .map(|v| v.state)
        .unwrap_or_default()
}

fn wait_vip_state(node: &LbfoNode, name: &str, want: &str, within: Duration) -> Duration {
    wait_for(within, &format!("{name} to be {want}"), || {
        Ok(vip_state(node, name) == want)
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}; it is {:?}; log:\n{}",
            vip_state(node, name),
            node.log_text()
        )
    })
}

fn answered(client: &Host) -> bool {
    !arping(&client.ns, "eth0", VIP, 2, Duration::from_millis(50))
        .unwrap()
        .is_empty()
}

#[test]
fn a_failing_http_check_faults_the_vip_and_a_passing_one_brings_it_back() {
    let mut h = health_lab();
    let server = HttpServer::start(&mut h.lab, &h.service, "svc").unwrap();
    let notify_log = h.lab.file("notify.log");
    let notify = h.lab.file("notify.sh");
    std::fs::write(
        &notify,
        format!("#!/bin/sh\necho \"$1 $2 $3\" >> {}\n", notify_log.display()),
    )
    .unwrap();
    std::fs::set_permissions(&notify, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let config = format!(
        "interface = \"eth0\"\nxdp_mode = \"native\"\nlease_ms = 1000\n\n[[vip]]\nname = \"web\"\naddress = \"192.0.2.100/24\"\nnotify = \"{}\"\n{}",
        notify.display(),
        http_check("http://192.0.2.31:8080/health")
    );
    let node = LbfoNode::start(&mut h.lab, &h.node, &config).unwrap();
    // Checks start unproven: the VIP is in fault until `rise` passes.
    node.own("web").unwrap();
    let rise_bound = INTERVAL * (RISE + 1) + SLACK;
    wait_vip_state(&node, "web", "owner", rise_bound + INTERVAL);
    assert!(
        answered(&h.client),
        "owner with a passing check must answer ARP"
    );

    for (mode, per_probe) in [
        ("error", Duration::ZERO),
        ("slow", TIMEOUT),
        ("hang", TIMEOUT),
    ] {
        let broke = Instant::now();
        server.set_mode(mode);
        // The fall-th failing probe starts within FALL intervals; release
        // follows within one more interval.
        let bound = INTERVAL * (FALL + 1) + per_probe + SLACK;
        wait_vip_state(&node, "web", "fault", bound * 2);
        let took = broke.elapsed();
        eprintln!("{mode}: fault {took:?} after the server broke (bound {bound:?})");
        assert!(
            took <= bound,
            "{mode}: fault after {took:?}, bound {bound:?}"
        );
        assert!(
            !answered(&h.client),
            "{mode}: a VIP in fault must not answer ARP"
        );
        assert!(
            !addresses(&h.node.ns, "eth0")
                .unwrap()
                .contains(&"192.0.2.100/24".to_string()),
            "{mode}: a VIP in fault gives its address up"
        );
        let status = node.status().unwrap();
        let check = &status.vips[0].checks[0];
        assert_eq!(check.state, "unhealthy", "{mode}: {check:?}");
        assert!(check.consecutive_failures >= FALL, "{mode}: {check:?}");
        assert!(
            check.last_error.is_some(),
            "{mode}: the last error must be shown: {check:?}"
        );

        let fixed = Instant::now();
        server.set_mode("ok");
        wait_vip_state(&node, "web", "owner", rise_bound * 2);
        let took = fixed.elapsed();
        eprintln!("{mode}: owner {took:?} after the server was fixed (bound {rise_bound:?})");
        assert!(
            took <= rise_bound,
            "{mode}: back after {took:?}, bound {rise_bound:?}"
        );
        assert!(answered(&h.client), "{mode}: recovered owner answers again");
    }
    let status = node.status().unwrap();
    let check = &status.vips[0].checks[0];
    assert!(
        check.last_latency_ms.is_some(),
        "latency is recorded: {check:?}"
    );
    assert!(
        check
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("timed out") || e.contains("timeout")),
        "the last error of a hung server is a timeout: {check:?}"
    );

    // The notify script saw every transition, with the keepalived arguments.
    let seen = wait_for(Duration::from_secs(2), "notify calls", || {
        Ok(std::fs::read_to_string(&notify_log)
            .unwrap_or_default()
            .lines()
            .count()
            >= 7)
    });
    let log = std::fs::read_to_string(&notify_log).unwrap_or_default();
    seen.unwrap_or_else(|e| panic!("{e}; notify log:\n{log}"));
    assert!(
        log.contains("web fault owner") && log.contains("web owner fault"),
        "notify log:\n{log}"
    );
}

#[test]
fn tcp_icmp_and_exec_checks_against_real_targets() {
    let mut h = health_lab();
    let _server = HttpServer::start(&mut h.lab, &h.service, "svc").unwrap();
    let fail_script = h.lab.file("fail.sh");
    std::fs::write(
        &fail_script,
        "#!/bin/sh\necho starting >&2\necho broken thing >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(
        &fail_script,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let check = |body: &str| {
        format!("[[vip.check]]\n{body}\ninterval_ms = 200\ntimeout_ms = 100\nrise = 1\nfall = 1\n")
    };
    let vips = [
        (
            "tcp-open",
            "kind = \"tcp\"\naddress = \"192.0.2.31:8080\"",
            "standby",
        ),
        (
            "tcp-closed",
            "kind = \"tcp\"\naddress = \"192.0.2.31:9\"",
            "fault",
        ),
        (
            "icmp-answers",
            "kind = \"icmp\"\nhost = \"192.0.2.31\"",
            "standby",
        ),
        (
            "icmp-dropped",
            &format!("kind = \"icmp\"\nhost = \"{}\"", h.quiet.addr),
            "fault",
        ),
        (
            "exec-ok",
            "kind = \"exec\"\ncommand = [\"/bin/true\"]",
            "standby",
        ),
        (
            "exec-fails",
            &format!("kind = \"exec\"\ncommand = [\"{}\"]", fail_script.display()),
            "fault",
        ),
        (
            "exec-hangs",
            "kind = \"exec\"\ncommand = [\"/bin/sleep\", \"37\"]",
            "fault",
        ),
    ];
    let mut config = "interface = \"eth0\"\nxdp_mode = \"native\"\n".to_string();
    for (i, (name, body, _)) in vips.iter().enumerate() {
        config.push_str(&format!(
            "\n[[vip]]\nname = \"{name}\"\naddress = \"192.0.2.{}/24\"\n{}",
            100 + i,
            check(body)
        ));
    }
    let node = LbfoNode::start(&mut h.lab, &h.node, &config).unwrap();
    for (name, _, want) in &vips {
        wait_vip_state(&node, name, want, Duration::from_secs(3));
    }
    // Stable, not a passing glimpse.
    std::thread::sleep(INTERVAL * 3);
    let status = node.status().unwrap();
    for (name, _, want) in &vips {
        let vip = status.vips.iter().find(|v| v.name == *name).unwrap();
        assert_eq!(&vip.state, want, "{name}: {:?}", vip.checks);
    }
    let error_of = |name: &str| {
        status.vips.iter().find(|v| v.name == name).unwrap().checks[0]
            .last_error
            .clone()
            .unwrap_or_default()
    };
    assert!(
        error_of("tcp-closed").contains("refused"),
        "tcp: {}",
        error_of("tcp-closed")
    );
    assert!(
        error_of("exec-fails").contains("broken thing"),
        "exec: the last stderr line is kept: {}",
        error_of("exec-fails")
    );
    assert!(!error_of("icmp-dropped").is_empty());
    // Hung programs are killed at the timeout: no pile of `sleep 37`.
    let out = std::process::Command::new("pgrep")
        .args(["-f", "^/bin/sleep 37$"])
        .output()
        .unwrap();
    let running = String::from_utf8_lossy(&out.stdout).lines().count();
    assert!(
        running <= 1,
        "{running} hung check programs are still running; each must be killed at its timeout"
    );
}

#[test]
fn sighup_reload_keeps_unchanged_vips_and_refuses_a_broken_config() {
    let mut h = health_lab();
    let _server = HttpServer::start(&mut h.lab, &h.service, "svc").unwrap();
    let web = format!(
        "[[vip]]\nname = \"web\"\naddress = \"192.0.2.100/24\"\n{}",
        http_check("http://192.0.2.31:8080/health")
    );
    let base = "interface = \"eth0\"\nxdp_mode = \"native\"\nlease_ms = 1000\n\n";
    let config = format!("{base}{web}\n[[vip]]\nname = \"api\"\naddress = \"192.0.2.101/24\"\n");
    let node = LbfoNode::start(&mut h.lab, &h.node, &config).unwrap();
    node.own("web").unwrap();
    wait_vip_state(&node, "web", "owner", Duration::from_secs(3));

    let reload = |text: &str| node.reload_with(text).unwrap();
    // A new VIP, one removed, web untouched: web keeps its ownership throughout.
    reload(&format!(
        "{base}{web}\n[[vip]]\nname = \"new\"\naddress = \"192.0.2.102/24\"\n"
    ));
    wait_for(Duration::from_secs(3), "the reload to add `new`", || {
        Ok(node.status()?.vips.iter().any(|v| v.name == "new"))
    })
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", node.log_text()));
    let status = node.status().unwrap();
    let names: Vec<&str> = status.vips.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["web", "new"], "after reload");
    let web_status = &status.vips[0];
    assert!(
        web_status.owned && web_status.state == "owner",
        "web must keep its ownership: {web_status:?}"
    );
    assert_eq!(
        web_status.checks[0].state, "healthy",
        "an unchanged check keeps its state: {:?}",
        web_status.checks[0]
    );
    assert!(
        node.log_text()
            .contains("1 VIP(s) removed, 1 added, 1 kept"),
        "log:\n{}",
        node.log_text()
    );
    assert!(answered(&h.client));

    // Broken configs are refused as a whole; the running one stays.
    for (broken, why) in [
        (format!("{base}{web}\nbogus = 1\n"), "unknown field"),
        (
            format!("{base}{web}").replace("\"eth0\"", "\"eth1\""),
            "needs a restart",
        ),
        (
            format!(
                "{base}{web}\n[[vip]]\nname = \"vr\"\naddress = \"192.0.2.103/24\"\nvrid = 7\npriority = 255\n"
            ),
            "priority 255 is for the node that owns 192.0.2.103",
        ),
    ] {
        let before = node.log_text().matches("reload refused").count();
        reload(&broken);
        wait_for(Duration::from_secs(3), "the refusal", || {
            Ok(node.log_text().matches("reload refused").count() > before)
        })
        .unwrap();
        assert!(
            node.log_text().contains(why),
            "refusal must say why ({why}); log:\n{}",
            node.log_text()
        );
        let status = node.status().unwrap();
        assert_eq!(status.vips.len(), 2, "the running configuration stays");
        assert!(
            status.vips[0].owned,
            "web still owned after a refused reload"
        );
    }

    // The first elected VIP arrives by reload: the VRRP socket opens then,
    // and with nobody else on the segment it becomes Master after its
    // Master_Down_Interval (3 × 100 ms + Skew_Time).
    reload(&format!(
        "{base}{web}\n[[vip]]\nname = \"vr\"\naddress = \"192.0.2.103/24\"\nvrid = 7\npriority = 100\nadvert_interval_ms = 100\n"
    ));
    wait_vip_state(&node, "vr", "master", Duration::from_secs(3));
    assert!(
        node.status().unwrap().vips[0].owned,
        "web keeps its ownership when an elected VIP is added"
    );
}

/// Identical checks on two VIPs run one probe and both VIPs react to it; a
/// `reuse_connection` check keeps one connection to a real nginx across
/// probes and opens a new one when nginx comes back after a restart.
#[test]
fn identical_checks_share_one_probe_and_a_reused_connection_survives_a_restart() {
    let mut h = health_lab();
    let nginx_port = 8090;
    let start_nginx = |lab: &mut Lab| {
        Nginx::start(
            lab,
            &h.service.ns,
            nginx_port,
            Duration::from_secs(60),
            true,
        )
        .unwrap()
    };
    let mut nginx = Some(start_nginx(&mut h.lab));
    let shared = |name: &str, octet: u8| {
        format!(
            "\n[[vip]]\nname = \"{name}\"\naddress = \"192.0.2.{octet}/24\"\n\n[[vip.check]]\nkind = \"http\"\nurl = \"http://192.0.2.31:{nginx_port}/shared\"\ninterval_ms = {}\ntimeout_ms = {}\nrise = {RISE}\nfall = {FALL}\n",
            INTERVAL.as_millis(),
            TIMEOUT.as_millis()
        )
    };
    let config = format!(
        "interface = \"eth0\"\nxdp_mode = \"native\"\n{}{}\n[[vip]]\nname = \"kept\"\naddress = \"192.0.2.103/24\"\n\n[[vip.check]]\nkind = \"http\"\nurl = \"http://192.0.2.31:{nginx_port}/kept\"\nreuse_connection = true\ninterval_ms = {}\ntimeout_ms = {}\nrise = {RISE}\nfall = {FALL}\n",
        shared("web", 101),
        shared("api", 102),
        INTERVAL.as_millis(),
        TIMEOUT.as_millis()
    );
    let node = LbfoNode::start(&mut h.lab, &h.node, &config).unwrap();
    for vip in ["web", "api", "kept"] {
        node.own(vip).unwrap();
    }
    let rise_bound = INTERVAL * (RISE + 1) + SLACK;
    for vip in ["web", "api", "kept"] {
        wait_vip_state(&node, vip, "owner", rise_bound + INTERVAL);
    }
    assert!(
        node.log_text()
            .contains("health checks started checks=3 probes=2"),
        "the daemon says two probes serve three checks:\n{}",
        node.log_text()
    );

    // Two seconds of probes: one /shared request per interval, not two.
    let log = |nginx: &Option<Nginx>, path: &str| -> Vec<u64> {
        nginx
            .as_ref()
            .map(|n| n.logged())
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, p)| p == path)
            .map(|(serial, _)| serial)
            .collect()
    };
    let shared_before = log(&nginx, "/shared").len();
    let kept_before = log(&nginx, "/kept").len();
    let window = Duration::from_secs(2);
    std::thread::sleep(window);
    let probes = (window.as_millis() / INTERVAL.as_millis()) as usize;
    let shared_seen = log(&nginx, "/shared").len() - shared_before;
    assert!(
        (probes - 3..=probes + 2).contains(&shared_seen),
        "two VIPs with the same check should cause one request per {INTERVAL:?} ({probes} in {window:?}), saw {shared_seen}"
    );
    let kept = log(&nginx, "/kept");
    let kept_connections: std::collections::BTreeSet<u64> = kept.iter().copied().collect();
    assert!(
        kept.len() - kept_before >= probes - 3,
        "the kept check probed {} times in {window:?}",
        kept.len() - kept_before
    );
    assert_eq!(
        kept_connections.len(),
        1,
        "reuse_connection: every /kept request on one connection, saw connections {kept_connections:?}"
    );

    // nginx stops: all three VIPs fault; the shared probe feeds both.
    let stopped = Instant::now();
    drop(nginx.take());
    let fall_bound = INTERVAL * (FALL + 1) + SLACK;
    for vip in ["web", "api", "kept"] {
        wait_vip_state(
            &node,
            vip,
            "fault",
            fall_bound.saturating_sub(stopped.elapsed()) + INTERVAL,
        );
    }
    // nginx is back: all three return, the kept check on a new connection.
    nginx = Some(start_nginx(&mut h.lab));
    for vip in ["web", "api", "kept"] {
        wait_vip_state(&node, vip, "owner", rise_bound + INTERVAL);
    }
    let kept_after = log(&nginx, "/kept");
    assert!(
        !kept_after.is_empty(),
        "the kept check probes the restarted nginx"
    );
    drop(nginx);
    node.stop(&mut h.lab).unwrap();
}
