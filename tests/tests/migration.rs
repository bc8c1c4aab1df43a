//! The rolling migration of docs/MIGRATING.md, end to end: a keepalived
//! pair on keepalived's defaults (VRRP version 2, `advert_int 1`,
//! `auth_type PASS`, two addresses) serves the VIP; the Backup's keepalived
//! is replaced by lbfo running the config `lbfo import-keepalived` made of
//! that node's keepalived.conf, and the Master sees no transition; the
//! Master's link goes down and lbfo takes over within RFC 3768's bound;
//! then the other node is replaced too. The client probes the VIP through
//! every step and each step's outage is held to its bound.

use std::{
    net::Ipv4Addr,
    process::Command,
    time::{Duration, Instant},
};

use lbfo_tests::{
    keepalived::{Keepalived, KeepalivedConfig},
    lab::{Host, Lab, ip, neighbour_mac, netns_exec, run, wait_for},
    node::{LbfoNode, lbfo_bin},
    prober::{ProbeReport, Prober},
    rfc5798::skew_time,
};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const VIP_CIDR: &str = "192.0.2.100/24";
const VIP2_CIDR: &str = "192.0.2.101/24";
const ADVERT: Duration = Duration::from_secs(1);
const PROBE_INTERVAL: Duration = Duration::from_millis(10);
/// Scheduling, probing, ARP on the bridge and polling on a loaded 2-core
/// machine (as in election.rs).
const SLACK: Duration = Duration::from_millis(150);

/// RFC 3768 section 6.1: 3 × Advertisement_Interval + (256 - Priority) / 256 s.
fn master_down_interval_v2(priority: u8) -> Duration {
    3 * ADVERT + skew_time(Duration::from_secs(1), priority)
}

/// keepalived's defaults as most installations run them.
fn keepalived_config(priority: u8) -> KeepalivedConfig {
    KeepalivedConfig {
        version: 2,
        auth_pass: Some("secret".into()),
        more_vips: vec![VIP2_CIDR.into()],
        ..KeepalivedConfig::new(51, priority, ADVERT, VIP_CIDR)
    }
}

/// `lbfo import-keepalived` on a node's keepalived.conf: the TOML, after
/// checking it imported cleanly (warnings allowed, no errors).
fn import(keepalived: &Keepalived) -> String {
    let out = Command::new(lbfo_bin())
        .arg("import-keepalived")
        .arg(&keepalived.conf)
        .output()
        .expect("running lbfo import-keepalived");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "import of {} failed: {stderr}",
        keepalived.conf.display()
    );
    let toml = String::from_utf8(out.stdout).expect("TOML is text");
    for want in ["vrrp_version = 2", "auth_pass = \"secret\"", VIP2_CIDR] {
        assert!(toml.contains(want), "imported config lacks {want}:\n{toml}");
    }
    eprintln!(
        "imported {}:\n{toml}warnings:\n{stderr}",
        keepalived.conf.display()
    );
    toml
}

/// keepalived's state changes so far.
fn transitions(k: &Keepalived) -> usize {
    k.log_lines_with("Entering ")
}

fn probe(client: &Host) -> Prober {
    let p = Prober::start(&client.ns, VIP, PROBE_INTERVAL, Duration::from_secs(40)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    p
}

fn finish(step: &str, prober: Prober, bound: Duration) -> ProbeReport {
    std::thread::sleep(Duration::from_millis(300));
    let report = prober.finish().unwrap();
    eprintln!(
        "{step}: client outage {:?} (bound {bound:?}), probes sent/answered {:?}",
        report.outage,
        (report.sent, report.answered)
    );
    assert!(report.answered > 0, "{step}: no answers at all: {report:?}");
    assert!(
        report.outage <= bound,
        "{step}: client-visible outage {:?}, bound {bound:?}",
        report.outage
    );
    report
}

#[test]
fn a_keepalived_pair_is_replaced_one_node_at_a_time() {
    let (mut lab, client, nodes) =
        Lab::with_client_and_nodes(2).expect("creating the lab (needs root)");
    let (a, b) = (&nodes[0], &nodes[1]);
    let keepalived_a = Keepalived::start(&mut lab, a, &keepalived_config(150)).unwrap();
    keepalived_a.wait_master(Duration::from_secs(6)).unwrap();
    let keepalived_b = Keepalived::start(&mut lab, b, &keepalived_config(100)).unwrap();
    std::thread::sleep(master_down_interval_v2(100) + ADVERT);
    assert!(
        !keepalived_b.is_master().unwrap(),
        "keepalived B must be Backup; log:\n{}",
        keepalived_b.log_text()
    );
    run(netns_exec(&client.ns, "ping").args(["-c", "1", "-W", "1", &VIP.to_string()])).unwrap();

    // 1. Replace the Backup: keepalived B stops (a Backup sends nothing),
    //    lbfo starts with the imported config, hears A and stays Backup.
    let prober = probe(&client);
    let before = transitions(&keepalived_a);
    let toml_b = import(&keepalived_b);
    keepalived_b.stop(&mut lab).unwrap();
    let lbfo_b = LbfoNode::start(&mut lab, b, &toml_b).unwrap();
    lbfo_b.expect_first_vip_state("backup", Duration::from_secs(3));
    std::thread::sleep(2 * master_down_interval_v2(100));
    assert_eq!(
        lbfo_b.first_vip_state(),
        "backup",
        "lbfo must hear keepalived A's v2 adverts; log:\n{}",
        lbfo_b.log_text()
    );
    let status = lbfo_b.status().unwrap();
    let vrrp = status.vips[0].vrrp.as_ref().unwrap();
    assert_eq!(vrrp.master.as_deref(), Some("192.0.2.11"), "{vrrp:?}");
    assert_eq!(vrrp.master_priority, Some(150));
    assert_eq!(
        transitions(&keepalived_a),
        before,
        "keepalived A must see no transition while B is replaced; log:\n{}",
        keepalived_a.log_text()
    );
    assert!(keepalived_a.is_master().unwrap(), "A keeps the VIP");
    // Nothing failed over: only scheduling slack.
    finish("replace the Backup", prober, SLACK);

    // 2. The Master's link goes down: lbfo takes over within
    //    Master_Down_Interval.
    let prober = probe(&client);
    let down = Instant::now();
    ip(&a.ns, &["link", "set", "eth0", "down"]).unwrap();
    lbfo_b.expect_first_vip_state("master", Duration::from_secs(8));
    let took = down.elapsed();
    let bound = master_down_interval_v2(100) + SLACK;
    eprintln!("lbfo B Master {took:?} after A's link went down (bound {bound:?})");
    assert!(
        took <= bound,
        "lbfo took over {took:?} after the link went down; bound {bound:?}"
    );
    finish("Master link down", prober, bound);
    assert_eq!(
        neighbour_mac(&client.ns, "eth0", VIP).unwrap(),
        Some(b.mac),
        "the client follows lbfo"
    );

    // 3. Replace the other node: keepalived A stops while it has no link,
    //    the link returns, lbfo starts on A with A's imported config,
    //    starts as Backup and, at 150 over 100, preempts. B steps down when
    //    it hears A, at the latest one advertisement interval later.
    let toml_a = import(&keepalived_a);
    keepalived_a.stop(&mut lab).unwrap();
    ip(&a.ns, &["link", "set", "eth0", "up"]).unwrap();
    let prober = probe(&client);
    let lbfo_a = LbfoNode::start(&mut lab, a, &toml_a).unwrap();
    lbfo_a.expect_first_vip_state(
        "master",
        master_down_interval_v2(150) + Duration::from_secs(3),
    );
    lbfo_b.expect_first_vip_state("backup", ADVERT + SLACK);
    wait_for(Duration::from_secs(2), "the client to follow A", || {
        Ok(neighbour_mac(&client.ns, "eth0", VIP)? == Some(a.mac))
    })
    .unwrap();
    finish("replace the other node", prober, ADVERT + SLACK);
    let status = lbfo_a.status().unwrap();
    assert_eq!(
        status.vips[0].addresses,
        [VIP_CIDR, VIP2_CIDR],
        "both addresses moved to A"
    );
}
