//! lbfo against Debian's keepalived on VRRP version 2 (RFC 3768), the
//! version keepalived speaks by default, with `auth_type PASS` and two
//! addresses in one virtual router, both ways round; and a wrong password,
//! which both sides must refuse.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use lbfo_tests::{
    keepalived::{Keepalived, KeepalivedConfig},
    lab::{Host, Lab, addresses, arping, ip, neighbour_mac, netns_exec, run, wait_for},
    node::LbfoNode,
    prober::Prober,
    rfc5798::skew_time,
};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const VIP2: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 101);
const VIP_CIDR: &str = "192.0.2.100/24";
const VIP2_CIDR: &str = "192.0.2.101/24";
const VRID: u8 = 51;
/// keepalived's default, and the only kind of interval VRRPv2 carries:
/// whole seconds.
const ADVERT: Duration = Duration::from_secs(1);
const PROBE_INTERVAL: Duration = Duration::from_millis(5);
/// As in election.rs: scheduling, probing, ARP on the bridge, polling.
const SLACK: Duration = Duration::from_millis(150);

/// RFC 3768 section 6.1: Skew_Time = (256 - Priority) / 256 seconds, and
/// Master_Down_Interval = 3 × Advertisement_Interval + Skew_Time. With 1 s
/// adverts that equals the RFC 5798 formula, which the lab's rfc5798 module
/// works out independently of lbfo.
fn master_down_interval_v2(priority: u8) -> Duration {
    3 * ADVERT + skew_time(Duration::from_secs(1), priority)
}

fn lbfo_config(priority: u8, password: &str) -> String {
    format!(
        "interface = \"eth0\"\nxdp_mode = \"native\"\n\n[[vip]]\nname = \"web\"\naddresses = [\"{VIP_CIDR}\", \"{VIP2_CIDR}\"]\nvrid = {VRID}\npriority = {priority}\nvrrp_version = 2\nauth_pass = \"{password}\"\nadvert_interval_ms = 1000\n"
    )
}

fn keepalived_config(priority: u8, password: &str) -> KeepalivedConfig {
    KeepalivedConfig {
        version: 2,
        auth_pass: Some(password.into()),
        more_vips: vec![VIP2_CIDR.into()],
        ..KeepalivedConfig::new(VRID, priority, ADVERT, VIP_CIDR)
    }
}

fn lab() -> (Lab, Host, Vec<Host>) {
    Lab::with_client_and_nodes(2).expect("creating the lab (needs root)")
}

/// Who answers ARP for `vip`, seen from the client.
fn arp_answerers(client: &Host, vip: Ipv4Addr) -> Vec<[u8; 6]> {
    let mut macs = arping(&client.ns, "eth0", vip, 3, Duration::from_millis(50)).unwrap();
    macs.sort();
    macs.dedup();
    macs
}

fn learn(client: &Host, vip: Ipv4Addr) {
    run(netns_exec(&client.ns, "ping").args(["-c", "1", "-W", "1", &vip.to_string()])).unwrap();
}

fn rejected(node: &LbfoNode, reason: &str) -> u64 {
    node.status()
        .unwrap()
        .vrrp_rejected
        .get(reason)
        .copied()
        .unwrap_or(0)
}

/// keepalived holds both addresses exactly while it is Master.
fn keepalived_holds_both(k: &Keepalived) -> bool {
    let on = addresses(&k.host.ns, &k.host.ifname).unwrap();
    on.iter().any(|a| a == VIP_CIDR) && on.iter().any(|a| a == VIP2_CIDR)
}

#[test]
fn lbfo_master_keepalived_backup_on_v2_with_pass_and_two_addresses() {
    let (mut lab, client, nodes) = lab();
    let keepalived =
        Keepalived::start(&mut lab, &nodes[1], &keepalived_config(100, "secret")).unwrap();
    let lbfo = LbfoNode::start(&mut lab, &nodes[0], &lbfo_config(150, "secret")).unwrap();
    lbfo.expect_first_vip_state(
        "master",
        master_down_interval_v2(150) + Duration::from_secs(2),
    );
    keepalived.wait_backup(Duration::from_secs(3)).unwrap();
    // Stable: keepalived hears lbfo's v2 adverts (password, both addresses)
    // and stays Backup for more than its Master_Down_Interval.
    std::thread::sleep(master_down_interval_v2(100) + ADVERT);
    assert!(
        !keepalived.is_master().unwrap(),
        "keepalived must accept lbfo's VRRPv2 advertisements; log:\n{}",
        keepalived.log_text()
    );
    for vip in [VIP, VIP2] {
        assert_eq!(
            arp_answerers(&client, vip),
            vec![nodes[0].mac],
            "only lbfo's node may answer ARP for {vip}"
        );
    }
    let status = lbfo.status().unwrap();
    assert_eq!(
        status.vips[0].addresses,
        [VIP_CIDR, VIP2_CIDR],
        "status lists both addresses"
    );
    assert_eq!(status.vips[0].vrrp.as_ref().unwrap().version, 2);
    learn(&client, VIP);
    learn(&client, VIP2);

    // Graceful stop: priority 0, keepalived takes over after its Skew_Time
    // ((256 - 100) / 256 s) with both addresses.
    let prober = Prober::start(&client.ns, VIP2, PROBE_INTERVAL, Duration::from_secs(15)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let stopped = Instant::now();
    lbfo.terminate().unwrap();
    wait_for(
        Duration::from_secs(5),
        "keepalived to hold both addresses",
        || Ok(keepalived_holds_both(&keepalived)),
    )
    .unwrap_or_else(|e| panic!("{e}; keepalived log:\n{}", keepalived.log_text()));
    let took = stopped.elapsed();
    let exit = lab.wait(lbfo.pid, Duration::from_secs(10)).unwrap();
    assert!(exit.success(), "lbfo exit: {exit}");
    let bound = skew_time(Duration::from_secs(1), 100) + SLACK;
    eprintln!("keepalived Master {took:?} after lbfo's SIGTERM (bound {bound:?})");
    assert!(
        took <= bound,
        "keepalived took over {took:?} after the SIGTERM; bound Skew_Time + slack = {bound:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let report = prober.finish().unwrap();
    eprintln!(
        "v2 graceful lbfo -> keepalived: outage {:?}, sent/answered {:?}",
        report.outage,
        (report.sent, report.answered)
    );
    assert!(report.answered > 0, "no answers at all: {report:?}");
    assert!(
        report.outage <= bound,
        "client-visible outage {:?} for {VIP2}, bound {bound:?}",
        report.outage
    );
    assert_eq!(
        neighbour_mac(&client.ns, "eth0", VIP2).unwrap(),
        Some(nodes[1].mac),
        "the client follows keepalived for the second address too"
    );
}

#[test]
fn keepalived_master_lbfo_backup_on_v2_then_lbfo_takes_over_on_link_down() {
    let (mut lab, client, nodes) = lab();
    let keepalived =
        Keepalived::start(&mut lab, &nodes[1], &keepalived_config(150, "secret")).unwrap();
    keepalived.wait_master(Duration::from_secs(6)).unwrap();
    let lbfo = LbfoNode::start(&mut lab, &nodes[0], &lbfo_config(100, "secret")).unwrap();
    lbfo.expect_first_vip_state("backup", Duration::from_secs(2));
    std::thread::sleep(master_down_interval_v2(100) + ADVERT);
    let status = lbfo.status().unwrap();
    let vip = &status.vips[0];
    assert_eq!(
        vip.state,
        "backup",
        "lbfo must hear keepalived's v2 adverts; log:\n{}",
        lbfo.log_text()
    );
    let vrrp = vip.vrrp.as_ref().unwrap();
    assert_eq!(vrrp.master.as_deref(), Some("192.0.2.12"), "{vrrp:?}");
    assert_eq!(vrrp.master_priority, Some(150));
    assert!(vrrp.counters.adverts_received >= 3, "{vrrp:?}");
    for reason in [
        "auth",
        "version_mismatch",
        "address_mismatch",
        "interval_mismatch",
    ] {
        assert_eq!(
            status.vrrp_rejected.get(reason).copied().unwrap_or(0),
            0,
            "keepalived's adverts must not be rejected for {reason}: {:?}",
            status.vrrp_rejected
        );
    }
    assert_eq!(arp_answerers(&client, VIP2), vec![nodes[1].mac]);
    learn(&client, VIP);
    learn(&client, VIP2);

    let prober = Prober::start(&client.ns, VIP2, PROBE_INTERVAL, Duration::from_secs(15)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let down = Instant::now();
    ip(&nodes[1].ns, &["link", "set", "eth0", "down"]).unwrap();
    lbfo.expect_first_vip_state("master", Duration::from_secs(6));
    let took = down.elapsed();
    let bound = master_down_interval_v2(100) + SLACK;
    eprintln!("lbfo Master {took:?} after keepalived's link went down (bound {bound:?})");
    assert!(
        took <= bound,
        "lbfo took over {took:?} after the link went down; bound Master_Down_Interval + slack = {bound:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let report = prober.finish().unwrap();
    eprintln!(
        "v2 link down keepalived -> lbfo: outage {:?}, sent/answered {:?}",
        report.outage,
        (report.sent, report.answered)
    );
    assert!(
        report.outage <= bound,
        "client-visible outage {:?} for {VIP2}, bound {bound:?}",
        report.outage
    );
    for vip in [VIP, VIP2] {
        assert_eq!(
            arp_answerers(&client, vip),
            vec![nodes[0].mac],
            "lbfo answers for {vip} after the takeover"
        );
    }
}

#[test]
fn a_wrong_password_is_refused_by_both_sides() {
    let (mut lab, client, nodes) = lab();
    let keepalived =
        Keepalived::start(&mut lab, &nodes[1], &keepalived_config(150, "secret")).unwrap();
    keepalived.wait_master(Duration::from_secs(6)).unwrap();
    // Were keepalived's adverts accepted, lbfo (100) would stay Backup.
    let metrics = format!("{}:9655", nodes[0].addr);
    let config = lbfo_config(100, "wrong").replacen(
        "\n\n[[vip]]",
        &format!("\n[metrics]\nlisten = \"{metrics}\"\n\n[[vip]]"),
        1,
    );
    let lbfo = LbfoNode::start(&mut lab, &nodes[0], &config).unwrap();
    lbfo.expect_first_vip_state(
        "master",
        master_down_interval_v2(100) + Duration::from_secs(2),
    );
    let auth_rejects = rejected(&lbfo, "auth");
    assert!(
        auth_rejects >= 3,
        "lbfo must count keepalived's adverts as rejected for auth, saw {auth_rejects}"
    );
    // keepalived refuses lbfo's adverts in turn and says so.
    wait_for(
        Duration::from_secs(3),
        "keepalived to log lbfo's password as invalid",
        || Ok(keepalived.log_lines_with("passwd") > 0),
    )
    .unwrap_or_else(|e| panic!("{e}; keepalived log:\n{}", keepalived.log_text()));
    assert!(
        keepalived.is_master().unwrap(),
        "keepalived (150) stays Master"
    );
    // The same count, by reason, on the metrics endpoint.
    let out = run(netns_exec(&client.ns, "curl")
        .args(["-sf", "--max-time", "2"])
        .arg(format!("http://{metrics}/metrics")))
    .unwrap();
    let exposition = String::from_utf8_lossy(&out.stdout);
    let counted: f64 = exposition
        .lines()
        .find(|l| l.starts_with("lbfo_vrrp_adverts_rejected_total{reason=\"auth\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no auth rejects in the exposition:\n{exposition}"));
    assert!(
        counted >= auth_rejects as f64,
        "metrics count {counted} auth rejects, status counted {auth_rejects} before"
    );
}
