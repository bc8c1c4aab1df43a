//! VRRPv3 over IPv6 end to end (RFC 5798 section 5 for IPv6): lbfo against
//! keepalived (Debian's package) in both directions, and a dual-stack pair
//! of lbfo nodes, in namespace labs (duplicate address detection off, see
//! `lab`). Advertisements go from each node's link-local address to
//! ff02::12; the client sees who answers with `ndisc6` and measures the
//! outage with ICMPv6 echo (the lab's prober), against bounds computed from
//! the timers.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use lbfo_tests::{
    keepalived::{Keepalived, KeepalivedConfig},
    lab::{Host, Lab, ip, ndisc6, neighbour_mac, netns_exec, run, wait_for},
    node::{LbfoNode, vrrp_config},
    prober::{ProbeReport, Prober},
    rfc5798::{master_down_interval, skew_time},
};

/// In the lab's 2001:db8:2::/64.
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x100);
const VIP6_CIDR: &str = "2001:db8:2::100/64";
const VIP4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const VIP4_CIDR: &str = "192.0.2.100/24";
const VRID: u8 = 51;
const ADVERT: Duration = Duration::from_millis(100);
const PROBE_INTERVAL: Duration = Duration::from_millis(5);
/// Slack for process scheduling, the probe interval, NA on the bridge and
/// polling the new state, on a loaded 2-core machine (as for IPv4).
const SLACK: Duration = Duration::from_millis(100);

fn lab(nodes: usize) -> (Lab, Host, Vec<Host>) {
    Lab::with_client_and_nodes(nodes).expect("creating the lab (needs root)")
}

/// Who answers a Neighbour Solicitation for the VIP, seen from the client.
fn nd_answerers(client: &Host) -> Vec<[u8; 6]> {
    let mut macs = Vec::new();
    for _ in 0..3 {
        macs.extend(ndisc6(&client.ns, &client.ifname, VIP6, Duration::from_millis(100)).unwrap());
    }
    macs.sort();
    macs.dedup();
    macs
}

/// The client reaches the VIP once, so it has a neighbour entry to move.
fn learn(client: &Host, vip: IpAddr) {
    run(netns_exec(&client.ns, "ping").args(["-c", "1", "-W", "1", &vip.to_string()])).unwrap();
}

/// A host's link-local address on its lab interface, the source of its
/// advertisements.
fn link_local(host: &Host) -> Ipv6Addr {
    lbfo_tests::lab::addresses6(&host.ns, &host.ifname)
        .unwrap()
        .iter()
        .filter_map(|a| a["local"].as_str()?.parse::<Ipv6Addr>().ok())
        .find(Ipv6Addr::is_unicast_link_local)
        .unwrap_or_else(|| panic!("{} has no link-local address", host.name))
}

fn assert_outage(what: &str, report: &ProbeReport, bound: Duration) {
    eprintln!(
        "{what}: outage {:?} (bound {bound:?}), probes sent/answered {:?}",
        report.outage,
        (report.sent, report.answered)
    );
    assert!(report.answered > 0, "{what}: no answers at all: {report:?}");
    assert!(
        report.outage <= bound,
        "{what}: client-visible outage {:?}, bound {bound:?}",
        report.outage
    );
}

#[test]
fn lbfo_150_is_master_over_keepalived_100_over_ipv6_and_hands_over_gracefully() {
    let (mut lab, client, nodes) = lab(2);
    let keepalived = Keepalived::start(
        &mut lab,
        &nodes[1],
        &KeepalivedConfig::new(VRID, 100, ADVERT, VIP6_CIDR),
    )
    .unwrap();
    let lbfo = LbfoNode::start(
        &mut lab,
        &nodes[0],
        &vrrp_config(VIP6_CIDR, VRID, 150, ADVERT, ""),
    )
    .unwrap();
    lbfo.expect_first_vip_state(
        "master",
        master_down_interval(ADVERT, 150) + Duration::from_secs(2),
    );
    keepalived.wait_backup(Duration::from_secs(2)).unwrap();
    assert_eq!(
        nd_answerers(&client),
        vec![nodes[0].mac],
        "only lbfo's node may answer for the IPv6 VIP; keepalived log:\n{}",
        keepalived.log_text()
    );
    learn(&client, VIP6.into());

    // Graceful stop: priority 0 over IPv6, keepalived takes over after its
    // Skew_Time, counted from the SIGTERM.
    let prober = Prober::start(&client.ns, VIP6, PROBE_INTERVAL, Duration::from_secs(10)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let stopped = Instant::now();
    lbfo.terminate().unwrap();
    keepalived.wait_master(Duration::from_secs(3)).unwrap();
    let took = stopped.elapsed();
    let exit = lab.wait(lbfo.pid, Duration::from_secs(10)).unwrap();
    assert!(exit.success(), "lbfo exit: {exit}");
    let bound = skew_time(ADVERT, 100) + SLACK;
    assert!(
        took <= bound,
        "keepalived became Master {took:?} after the SIGTERM to lbfo; bound is Skew_Time + slack = {bound:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_outage(
        "graceful handover lbfo -> keepalived over IPv6",
        &prober.finish().unwrap(),
        bound,
    );
    assert_eq!(
        neighbour_mac(&client.ns, "eth0", VIP6).unwrap(),
        Some(nodes[1].mac),
        "the client must follow to keepalived's node"
    );
}

#[test]
fn lbfo_100_takes_over_when_keepalived_150_loses_its_link_over_ipv6() {
    let (mut lab, client, nodes) = lab(2);
    let keepalived = Keepalived::start(
        &mut lab,
        &nodes[1],
        &KeepalivedConfig::new(VRID, 150, ADVERT, VIP6_CIDR),
    )
    .unwrap();
    keepalived.wait_master(Duration::from_secs(5)).unwrap();
    let lbfo = LbfoNode::start(
        &mut lab,
        &nodes[0],
        &vrrp_config(VIP6_CIDR, VRID, 100, ADVERT, ""),
    )
    .unwrap();
    lbfo.expect_first_vip_state("backup", Duration::from_secs(2));
    std::thread::sleep(master_down_interval(ADVERT, 100) * 2);
    assert_eq!(
        lbfo.first_vip_state(),
        "backup",
        "lbfo must stay Backup while keepalived (150) advertises over IPv6"
    );
    let status = lbfo.status().unwrap();
    let vrrp = status.vips[0].vrrp.as_ref().unwrap();
    let keepalived_source = link_local(&nodes[1]).to_string();
    assert_eq!(
        vrrp.master.as_deref(),
        Some(keepalived_source.as_str()),
        "lbfo must know keepalived's link-local address as Master: {vrrp:?}"
    );
    assert_eq!(vrrp.master_priority, Some(150));
    assert_eq!(nd_answerers(&client), vec![nodes[1].mac]);
    learn(&client, VIP6.into());

    let prober = Prober::start(&client.ns, VIP6, PROBE_INTERVAL, Duration::from_secs(10)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let down = Instant::now();
    ip(&nodes[1].ns, &["link", "set", "eth0", "down"]).unwrap();
    lbfo.wait_state("web", "master", Duration::from_secs(3))
        .unwrap();
    let took = down.elapsed();
    let bound = master_down_interval(ADVERT, 100) + SLACK;
    assert!(
        took <= bound,
        "lbfo became Master {took:?} after keepalived's link went down; bound is Master_Down_Interval + slack = {bound:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_outage(
        "link down keepalived -> lbfo over IPv6",
        &prober.finish().unwrap(),
        bound,
    );
    assert_eq!(
        neighbour_mac(&client.ns, "eth0", VIP6).unwrap(),
        Some(nodes[0].mac),
        "the client reaches the IPv6 VIP through lbfo's node"
    );
}

/// A dual-stack pair: each node has an elected IPv4 VIP and an elected
/// IPv6 VIP on VRID 51 (separate virtual routers, RFC 5798). When the
/// Master's link goes, both move to the Backup within Master_Down_Interval.
#[test]
fn dual_stack_vips_fail_over_together_when_the_link_goes() {
    let (mut lab, client, nodes) = lab(2);
    let config = |priority: u8| {
        vrrp_config(
            VIP4_CIDR,
            VRID,
            priority,
            ADVERT,
            &format!(
                "\n[[vip]]\nname = \"web6\"\naddress = \"{VIP6_CIDR}\"\nvrid = {VRID}\npriority = {priority}\nadvert_interval_ms = {}\n",
                ADVERT.as_millis()
            ),
        )
    };
    let first = LbfoNode::start(&mut lab, &nodes[0], &config(150)).unwrap();
    let second = LbfoNode::start(&mut lab, &nodes[1], &config(100)).unwrap();
    for (node, want) in [(&first, "master"), (&second, "backup")] {
        for vip in ["web", "web6"] {
            node.wait_state(
                vip,
                want,
                master_down_interval(ADVERT, 100) + Duration::from_secs(2),
            )
            .unwrap();
        }
    }
    assert_eq!(nd_answerers(&client), vec![nodes[0].mac]);
    learn(&client, VIP4.into());
    learn(&client, VIP6.into());

    let run_for = Duration::from_secs(10);
    let prober4 = Prober::start(&client.ns, VIP4, PROBE_INTERVAL, run_for).unwrap();
    let prober6 = Prober::start(&client.ns, VIP6, PROBE_INTERVAL, run_for).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let down = Instant::now();
    ip(&nodes[0].ns, &["link", "set", "eth0", "down"]).unwrap();
    let bound = master_down_interval(ADVERT, 100) + SLACK;
    for vip in ["web", "web6"] {
        second
            .wait_state(vip, "master", Duration::from_secs(3))
            .unwrap();
    }
    let took = down.elapsed();
    assert!(
        took <= bound,
        "both VIPs must be Master on the second node within Master_Down_Interval + slack = {bound:?}; took {took:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_outage(
        "dual stack, link down, IPv4 VIP",
        &prober4.finish().unwrap(),
        bound,
    );
    assert_outage(
        "dual stack, link down, IPv6 VIP",
        &prober6.finish().unwrap(),
        bound,
    );
    for vip in [IpAddr::from(VIP4), IpAddr::from(VIP6)] {
        wait_for(Duration::from_secs(1), "the client to follow", || {
            Ok(neighbour_mac(&client.ns, "eth0", vip)? == Some(nodes[1].mac))
        })
        .unwrap();
    }
    // The first node's link comes back: it preempts both back.
    ip(&nodes[0].ns, &["link", "set", "eth0", "up"]).unwrap();
    for vip in ["web", "web6"] {
        first
            .wait_state(
                vip,
                "master",
                master_down_interval(ADVERT, 150) + Duration::from_secs(3),
            )
            .unwrap();
        second
            .wait_state(vip, "backup", Duration::from_secs(2))
            .unwrap();
    }
}
