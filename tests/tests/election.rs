//! End-to-end VRRP tests: lbfo against keepalived (Debian's package, VRRP
//! version 3) and against itself, in namespace labs. Every failover test
//! has the client probe the VIP every few milliseconds (ICMP echo, the
//! lab's prober) and asserts the
//! outage it saw stays under the bound computed from the configured timers.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use lbfo_tests::{
    keepalived::{Keepalived, KeepalivedConfig},
    lab::{
        Host, Lab, allow_input, arping, drop_input, ip, neighbour_mac, netns_exec, run,
        set_neighbour, wait_for,
    },
    node::{LbfoNode, vrrp_config},
    prober::Prober,
    rfc5798::{master_down_interval, skew_time},
};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const VIP_CIDR: &str = "192.0.2.100/24";
const VRID: u8 = 51;
const PROBE_INTERVAL: Duration = Duration::from_millis(5);
/// Slack for process scheduling, the probe interval, ARP/GARP on the bridge,
/// and for seeing the new state (a poll every 5 ms, each a status request or
/// an address dump), on a loaded 2-core machine.
const SLACK: Duration = Duration::from_millis(100);

fn lbfo_config(priority: u8, advert: Duration, extra: &str) -> String {
    vrrp_config(VIP_CIDR, VRID, priority, advert, extra)
}

fn keepalived_config(priority: u8, advert: Duration) -> KeepalivedConfig {
    KeepalivedConfig::new(VRID, priority, advert, VIP_CIDR)
}

fn lab(nodes: usize) -> (Lab, Host, Vec<Host>) {
    Lab::with_client_and_nodes(nodes).expect("creating the lab (needs root)")
}

/// Who answers ARP for the VIP, seen from the client.
fn arp_answerers(client: &Host) -> Vec<[u8; 6]> {
    let mut macs = arping(&client.ns, "eth0", VIP, 3, Duration::from_millis(50)).unwrap();
    macs.sort();
    macs.dedup();
    macs
}

fn learn_vip(client: &Host) {
    run(netns_exec(&client.ns, "ping").args(["-c", "1", "-W", "1", &VIP.to_string()])).unwrap();
}

#[test]
fn lbfo_150_is_master_over_keepalived_100_and_hands_over_gracefully() {
    let advert = Duration::from_millis(100);
    let (mut lab, client, nodes) = lab(2);
    let keepalived =
        Keepalived::start(&mut lab, &nodes[1], &keepalived_config(100, advert)).unwrap();
    let lbfo = LbfoNode::start(&mut lab, &nodes[0], &lbfo_config(150, advert, "")).unwrap();

    lbfo.expect_first_vip_state(
        "master",
        master_down_interval(advert, 150) + Duration::from_secs(2),
    );
    keepalived.wait_backup(Duration::from_secs(2)).unwrap();
    assert_eq!(
        arp_answerers(&client),
        vec![nodes[0].mac],
        "only lbfo's node may answer ARP for the VIP; keepalived log:\n{}",
        keepalived.log_text()
    );
    learn_vip(&client);

    // Graceful stop: lbfo sends priority 0, keepalived takes over after its
    // Skew_Time. lbfo waits for its successor before it exits, so the
    // takeover is watched from the SIGTERM on, not from lbfo's exit.
    let prober = Prober::start(&client.ns, VIP, PROBE_INTERVAL, Duration::from_secs(10)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let stopped = Instant::now();
    lbfo.terminate().unwrap();
    keepalived.wait_master(Duration::from_secs(3)).unwrap();
    let took = stopped.elapsed();
    let exit = lab.wait(lbfo.pid, Duration::from_secs(10)).unwrap();
    assert!(exit.success(), "lbfo exit: {exit}");
    let bound = skew_time(advert, 100) + SLACK;
    eprintln!("keepalived Master {took:?} after the SIGTERM to lbfo (bound {bound:?})");
    assert!(
        took <= bound,
        "keepalived became Master {took:?} after lbfo was told to stop; bound is Skew_Time + 100 ms = {bound:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let report = prober.finish().unwrap();
    assert!(
        report.answered > 0,
        "the client got no answers at all: {report:?}"
    );
    let outage = report.outage;
    eprintln!(
        "graceful handover lbfo -> keepalived: outage {outage:?} (bound {bound:?}), {report:?}",
        report = (report.sent, report.answered)
    );
    assert!(
        outage <= bound,
        "client-visible outage {outage:?} on graceful handover, bound {bound:?}"
    );
    assert_eq!(
        neighbour_mac(&client.ns, "eth0", VIP).unwrap(),
        Some(nodes[1].mac),
        "client must follow to keepalived's node"
    );

    // lbfo comes back with the higher priority and preempts.
    let lbfo = LbfoNode::start(&mut lab, &nodes[0], &lbfo_config(150, advert, "")).unwrap();
    lbfo.expect_first_vip_state("master", master_down_interval(advert, 150) + SLACK * 5);
    keepalived.wait_backup(Duration::from_secs(2)).unwrap();
    wait_for(
        Duration::from_secs(1),
        "the client to move back to lbfo",
        || Ok(neighbour_mac(&client.ns, "eth0", VIP)? == Some(nodes[0].mac)),
    )
    .unwrap();
}

#[test]
fn lbfo_100_takes_over_when_keepalived_150_loses_its_link() {
    let advert = Duration::from_millis(100);
    let (mut lab, client, nodes) = lab(2);
    let keepalived =
        Keepalived::start(&mut lab, &nodes[1], &keepalived_config(150, advert)).unwrap();
    keepalived.wait_master(Duration::from_secs(5)).unwrap();
    let lbfo = LbfoNode::start(&mut lab, &nodes[0], &lbfo_config(100, advert, "")).unwrap();
    lbfo.expect_first_vip_state("backup", Duration::from_secs(2));
    std::thread::sleep(master_down_interval(advert, 100) * 2);
    assert_eq!(
        lbfo.first_vip_state(),
        "backup",
        "lbfo must stay Backup while keepalived (150) advertises"
    );
    let status = lbfo.status().unwrap();
    let vrrp = status.vips[0].vrrp.as_ref().unwrap();
    assert_eq!(
        vrrp.master.as_deref(),
        Some("192.0.2.12"),
        "lbfo must know keepalived's node as Master: {vrrp:?}"
    );
    assert_eq!(vrrp.master_priority, Some(150));
    assert_eq!(
        arp_answerers(&client),
        vec![nodes[1].mac],
        "only keepalived's node answers"
    );
    learn_vip(&client);

    let prober = Prober::start(&client.ns, VIP, PROBE_INTERVAL, Duration::from_secs(10)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // From just before the link goes down: the earliest the interval can start.
    let down = Instant::now();
    ip(&nodes[1].ns, &["link", "set", "eth0", "down"]).unwrap();
    wait_for(Duration::from_secs(3), "lbfo to become Master", || {
        Ok(lbfo.first_vip_state() == "master")
    })
    .unwrap();
    let took = down.elapsed();
    let bound = master_down_interval(advert, 100) + SLACK;
    eprintln!("lbfo Master {took:?} after keepalived's link went down (bound {bound:?})");
    assert!(
        took <= bound,
        "lbfo became Master {took:?} after the link went down; bound is Master_Down_Interval + 100 ms = {bound:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let report = prober.finish().unwrap();
    let outage = report.outage;
    eprintln!(
        "link down keepalived -> lbfo: outage {outage:?} (bound {bound:?}), probes sent/answered {:?}",
        (report.sent, report.answered)
    );
    assert!(
        outage <= bound,
        "client-visible outage {outage:?}, bound {bound:?}"
    );
    assert_eq!(
        neighbour_mac(&client.ns, "eth0", VIP).unwrap(),
        Some(nodes[0].mac),
        "client reaches the VIP through lbfo's node"
    );
    run(netns_exec(&client.ns, "ping").args([
        "-c",
        "3",
        "-i",
        "0.05",
        "-W",
        "1",
        &VIP.to_string(),
    ]))
    .unwrap();
}

/// Who the client's ARP reaches and which lbfo daemons call themselves Master.
fn masters(nodes: &[LbfoNode]) -> Vec<String> {
    nodes
        .iter()
        .filter(|n| n.first_vip_state() == "master")
        .map(|n| n.host.name.clone())
        .collect()
}

/// Starts lbfo on each host with the given priorities, highest first, and
/// waits until the first is Master and the others Backup.
fn start_lbfo_nodes(
    lab: &mut Lab,
    hosts: &[Host],
    priorities: &[u8],
    advert: Duration,
) -> Vec<LbfoNode> {
    let nodes: Vec<LbfoNode> = hosts
        .iter()
        .zip(priorities)
        .map(|(h, p)| LbfoNode::start(lab, h, &lbfo_config(*p, advert, "")).unwrap())
        .collect();
    nodes[0].expect_first_vip_state(
        "master",
        master_down_interval(advert, priorities[0]) + Duration::from_secs(1),
    );
    for node in &nodes[1..] {
        node.expect_first_vip_state("backup", Duration::from_secs(1));
    }
    nodes
}

#[test]
fn two_lbfo_nodes_fail_over_on_link_down_and_preempt_back() {
    let advert = Duration::from_millis(100);
    let (mut lab, client, hosts) = lab(2);
    let nodes = start_lbfo_nodes(&mut lab, &hosts, &[150, 100], advert);
    assert_eq!(arp_answerers(&client), vec![hosts[0].mac]);
    learn_vip(&client);

    let prober = Prober::start(&client.ns, VIP, PROBE_INTERVAL, Duration::from_secs(10)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // From just before the link goes down: the earliest the interval can start.
    let down = Instant::now();
    ip(&hosts[0].ns, &["link", "set", "eth0", "down"]).unwrap();
    nodes[1].expect_first_vip_state("master", Duration::from_secs(3));
    let took = down.elapsed();
    let bound = master_down_interval(advert, 100) + SLACK;
    eprintln!("n2 Master {took:?} after n1's link went down (bound {bound:?})");
    assert!(
        took <= bound,
        "n2 took over {took:?} after n1's link went down, bound {bound:?}"
    );
    // n1 knows it has no link: fault, not a Master nobody can hear.
    nodes[0].expect_first_vip_state("fault", Duration::from_secs(1));
    std::thread::sleep(Duration::from_millis(300));
    let report = prober.finish().unwrap();
    let outage = report.outage;
    eprintln!("lbfo link down: outage {outage:?} (bound {bound:?})");
    assert!(
        outage <= bound,
        "client-visible outage {outage:?}, bound {bound:?}"
    );

    // The link comes back: n1 (150) starts as Backup, hears n2 (100) and
    // preempts when its Master_Down_Timer runs out; n2 steps down, the
    // client follows.
    ip(&hosts[0].ns, &["link", "set", "eth0", "up"]).unwrap();
    let up = Instant::now();
    wait_for(Duration::from_secs(3), "exactly n1 to be Master", || {
        Ok(masters(&nodes) == ["n1"])
    })
    .unwrap_or_else(|e| panic!("{e}; masters {:?}", masters(&nodes)));
    wait_for(Duration::from_secs(2), "the client to follow n1", || {
        Ok(neighbour_mac(&client.ns, "eth0", VIP)? == Some(hosts[0].mac))
    })
    .unwrap();
    eprintln!("link up: one owner again after {:?}", up.elapsed());
    assert_eq!(
        arp_answerers(&client),
        vec![hosts[0].mac],
        "only n1 may answer"
    );

    // Graceful stop of the Master: it keeps answering until n2 advertises
    // as Master, so the client sees less than the Skew_Time gap a
    // release-first handover would leave.
    let probe_interval = Duration::from_millis(2);
    let prober = Prober::start(&client.ns, VIP, probe_interval, Duration::from_secs(10)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let exit = nodes[0].stop(&mut lab).unwrap();
    assert!(exit.success());
    nodes[1].expect_first_vip_state("master", Duration::from_secs(2));
    std::thread::sleep(Duration::from_millis(300));
    let report = prober.finish().unwrap();
    let outage = report.outage;
    let bound = skew_time(advert, 100);
    eprintln!("graceful lbfo -> lbfo: outage {outage:?} (bound {bound:?})");
    assert!(
        outage < bound,
        "graceful handover outage {outage:?}, must be below Skew_Time {bound:?}"
    );
    assert!(
        nodes[0].log_text().contains("has taken over; releasing"),
        "the stopping Master must wait for its successor; log:\n{}",
        nodes[0].log_text()
    );
}

#[test]
fn three_lbfo_nodes_kill_9_moves_the_vip_to_the_next_priority() {
    let advert = Duration::from_millis(100);
    let (mut lab, client, hosts) = lab(3);
    let nodes = start_lbfo_nodes(&mut lab, &hosts, &[150, 120, 100], advert);
    learn_vip(&client);

    let prober = Prober::start(&client.ns, VIP, PROBE_INTERVAL, Duration::from_secs(10)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let killed = Instant::now();
    nodes[0].kill9().unwrap();
    nodes[1].expect_first_vip_state("master", Duration::from_secs(3));
    let took = killed.elapsed();
    let bound = master_down_interval(advert, 120) + SLACK;
    eprintln!("n2 Master {took:?} after the kill -9 of n1 (bound {bound:?})");
    assert!(
        took <= bound,
        "n2 took over {took:?} after the kill -9, bound {bound:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        nodes[2].first_vip_state(),
        "backup",
        "n3 (100) must stay Backup behind n2 (120)"
    );
    let report = prober.finish().unwrap();
    let outage = report.outage;
    eprintln!("kill -9 of the Master: outage {outage:?} (bound {bound:?})");
    assert!(
        outage <= bound,
        "client-visible outage {outage:?}, bound {bound:?}"
    );
    // The killed Master's lease ran out: only n2 answers.
    assert_eq!(
        arp_answerers(&client),
        vec![hosts[1].mac],
        "after kill -9 only the new Master may answer"
    );
}

#[test]
fn a_healed_partition_leaves_exactly_one_owner_within_two_adverts() {
    let advert = Duration::from_millis(100);
    let (mut lab, client, hosts) = lab(2);
    let nodes = start_lbfo_nodes(&mut lab, &hosts, &[150, 100], advert);

    // Partition: each node drops the other's advertisements.
    for h in &hosts {
        drop_input(&h.ns, "lbfo_partition", "ip protocol 112").unwrap();
    }
    nodes[1].expect_first_vip_state("master", master_down_interval(advert, 100) + SLACK * 3);
    assert_eq!(
        masters(&nodes),
        ["n1", "n2"],
        "both must believe they are Master while partitioned"
    );
    // The client talks to the split-brain loser, as clients of a real partition would.
    set_neighbour(&client.ns, "eth0", VIP, &hosts[1].mac, "reachable").unwrap();

    for h in &hosts {
        allow_input(&h.ns, "lbfo_partition").unwrap();
    }
    let healed = Instant::now();
    let took = wait_for(Duration::from_secs(3), "exactly one Master", || {
        Ok(masters(&nodes) == ["n1"])
    })
    .unwrap_or_else(|e| panic!("{e}; masters {:?}", masters(&nodes)));
    assert!(
        took <= 2 * advert + SLACK,
        "one owner {took:?} after healing, bound two advert intervals (+100 ms)"
    );
    wait_for(
        2 * advert + SLACK,
        "the client's neighbour entry to point at n1",
        || Ok(neighbour_mac(&client.ns, "eth0", VIP)? == Some(hosts[0].mac)),
    )
    .unwrap_or_else(|e| panic!("{e} ({:?} after healing)", healed.elapsed()));
    assert_eq!(arp_answerers(&client), vec![hosts[0].mac]);
}

/// Two lbfo nodes whose VIP has an HTTP check on a server of its own.
fn checked_pair(
    weight: Option<i32>,
) -> (
    Lab,
    Host,
    Vec<Host>,
    Vec<LbfoNode>,
    Vec<lbfo_tests::node::HttpServer>,
) {
    let advert = Duration::from_millis(100);
    let (mut lab, client, hosts) = lab(2);
    let svc1 = lab.add_host("svc1", Ipv4Addr::new(192, 0, 2, 31)).unwrap();
    let svc2 = lab.add_host("svc2", Ipv4Addr::new(192, 0, 2, 32)).unwrap();
    let servers = vec![
        lbfo_tests::node::HttpServer::start(&mut lab, &svc1, "svc1").unwrap(),
        lbfo_tests::node::HttpServer::start(&mut lab, &svc2, "svc2").unwrap(),
    ];
    let check = |svc: &Host| {
        format!(
            "[[vip.check]]\nkind = \"http\"\nurl = \"http://{}:8080/\"\ninterval_ms = 100\ntimeout_ms = 50\nrise = 2\nfall = 2\n{}",
            svc.addr,
            weight
                .map(|w| format!("weight = {w}\n"))
                .unwrap_or_default()
        )
    };
    let nodes = vec![
        LbfoNode::start(
            &mut lab,
            &hosts[0],
            &lbfo_config(150, advert, &check(&svc1)),
        )
        .unwrap(),
        LbfoNode::start(
            &mut lab,
            &hosts[1],
            &lbfo_config(100, advert, &check(&svc2)),
        )
        .unwrap(),
    ];
    nodes[0].expect_first_vip_state("master", Duration::from_secs(3));
    nodes[1].expect_first_vip_state("backup", Duration::from_secs(1));
    learn_vip(&client);
    (lab, client, hosts, nodes, servers)
}

#[test]
fn a_failing_check_hands_the_vip_to_the_backup() {
    let advert = Duration::from_millis(100);
    let (_lab, client, hosts, nodes, servers) = checked_pair(None);
    let prober = Prober::start(&client.ns, VIP, PROBE_INTERVAL, Duration::from_secs(10)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let broke = Instant::now();
    servers[0].set_mode("error");
    nodes[1].expect_first_vip_state("master", Duration::from_secs(3));
    let took = broke.elapsed();
    // Two failed probes (fall), one more check interval to act, then the
    // Backup takes over Skew_Time after the priority-0 advertisement.
    let bound = 3 * Duration::from_millis(100) + skew_time(advert, 100) + SLACK;
    eprintln!("n2 Master {took:?} after n1's check broke (bound {bound:?})");
    assert!(
        took <= bound,
        "n2 took over {took:?} after the check broke, bound {bound:?}"
    );
    assert_eq!(nodes[0].first_vip_state(), "fault");
    std::thread::sleep(Duration::from_millis(300));
    let report = prober.finish().unwrap();
    let outage = report.outage;
    eprintln!("check failure on the Master: outage {outage:?} (bound {bound:?})");
    assert!(
        outage <= bound,
        "client-visible outage {outage:?}, bound {bound:?}"
    );
    assert_eq!(arp_answerers(&client), vec![hosts[1].mac]);

    // Healthy again: n1 goes back through Backup and preempts.
    servers[0].set_mode("ok");
    nodes[0].expect_first_vip_state("master", Duration::from_secs(3));
    nodes[1].expect_first_vip_state("backup", Duration::from_secs(1));
}

#[test]
fn a_weighted_check_lowers_the_priority_and_the_backup_preempts() {
    let advert = Duration::from_millis(100);
    let (_lab, client, hosts, nodes, servers) = checked_pair(Some(-60));
    let broke = Instant::now();
    servers[0].set_mode("error");
    nodes[1].expect_first_vip_state("master", Duration::from_secs(3));
    let took = broke.elapsed();
    let bound = 3 * Duration::from_millis(100) + advert + master_down_interval(advert, 100) + SLACK;
    eprintln!("n2 Master {took:?} after n1's weighted check broke (bound {bound:?})");
    assert!(
        took <= bound,
        "n2 preempted {took:?} after the check broke, bound {bound:?}"
    );
    let status = nodes[0].status().unwrap();
    let vrrp = status.vips[0].vrrp.as_ref().unwrap();
    assert_eq!(
        (status.vips[0].state.as_str(), vrrp.effective_priority),
        ("backup", 90),
        "150 - 60, and not in fault"
    );
    assert_eq!(arp_answerers(&client), vec![hosts[1].mac]);
    servers[0].set_mode("ok");
    nodes[0].expect_first_vip_state("master", Duration::from_secs(3));
}

#[test]
fn unicast_peers_work_with_keepalived_when_multicast_is_blocked() {
    let advert = Duration::from_millis(100);
    let (mut lab, client, hosts) = lab(2);
    // Nothing may travel to 224.0.0.18: only unicast advertisements get through.
    for h in &hosts {
        drop_input(&h.ns, "lbfo_nomcast", "ip daddr 224.0.0.18").unwrap();
    }
    let keepalived = Keepalived::start(
        &mut lab,
        &hosts[1],
        &KeepalivedConfig {
            unicast_peers: vec![hosts[0].addr.into()],
            ..keepalived_config(100, advert)
        },
    )
    .unwrap();
    let lbfo = LbfoNode::start(
        &mut lab,
        &hosts[0],
        &lbfo_config(
            150,
            advert,
            &format!("unicast_peers = [\"{}\"]\n", hosts[1].addr),
        ),
    )
    .unwrap();
    lbfo.expect_first_vip_state("master", Duration::from_secs(3));
    keepalived.wait_backup(Duration::from_secs(2)).unwrap();
    // Stable: keepalived hears lbfo's unicast adverts and stays Backup.
    std::thread::sleep(master_down_interval(advert, 100) * 3);
    assert!(
        !keepalived.is_master().unwrap(),
        "keepalived must hear lbfo's unicast advertisements; log:\n{}",
        keepalived.log_text()
    );
    assert_eq!(arp_answerers(&client), vec![hosts[0].mac]);
    let status = lbfo.status().unwrap();
    let vrrp = status.vips[0].vrrp.as_ref().unwrap();
    assert!(vrrp.counters.adverts_sent > 5, "{vrrp:?}");

    // And the other way: lbfo stops, keepalived takes over, lbfo (restarted
    // as 100) hears keepalived's unicast adverts and stays Backup.
    lbfo.stop(&mut lab).unwrap();
    keepalived.wait_master(Duration::from_secs(2)).unwrap();
    let lbfo = LbfoNode::start(
        &mut lab,
        &hosts[0],
        &lbfo_config(
            90,
            advert,
            &format!("unicast_peers = [\"{}\"]\n", hosts[1].addr),
        ),
    )
    .unwrap();
    lbfo.expect_first_vip_state("backup", Duration::from_secs(2));
    std::thread::sleep(master_down_interval(advert, 90) * 3);
    let status = lbfo.status().unwrap();
    assert_eq!(
        status.vips[0].state, "backup",
        "lbfo must hear keepalived's unicast adverts"
    );
    assert_eq!(
        status.vips[0].vrrp.as_ref().unwrap().master.as_deref(),
        Some("192.0.2.12")
    );
}

/// keepalived's per-state scripts, as `lbfo import-keepalived` maps them:
/// each runs as given on its own state, in the order the states come.
#[test]
fn per_state_notify_commands_run_on_master_backup_fault_and_stop() {
    let advert = Duration::from_millis(100);
    let (mut lab, _client, nodes) = lab(1);
    let log = lab.file("states.log");
    let command = |state: &str| {
        format!(
            "[\"/bin/sh\", \"-c\", \"echo {state} >> {}\"]",
            log.display()
        )
    };
    let extra = format!(
        "notify_master = {}\nnotify_backup = {}\nnotify_fault = {}\nnotify_stop = {}\n",
        command("master"),
        command("backup"),
        command("fault"),
        command("stop")
    );
    let node = LbfoNode::start(&mut lab, &nodes[0], &lbfo_config(150, advert, &extra)).unwrap();
    let seen = || std::fs::read_to_string(&log).unwrap_or_default();
    let expect = |want: &str| {
        wait_for(
            Duration::from_secs(3),
            &format!("the scripts to log {want:?}"),
            || Ok(seen().split_whitespace().collect::<Vec<_>>().join(" ") == want),
        )
        .unwrap_or_else(|e| panic!("{e}; log: {:?}\n{}", seen(), node.log_text()));
    };
    // Alone on its LAN: Backup at start, Master after Master_Down_Interval.
    expect("backup master");
    ip(&nodes[0].ns, &["link", "set", "eth0", "down"]).unwrap();
    expect("backup master fault");
    ip(&nodes[0].ns, &["link", "set", "eth0", "up"]).unwrap();
    expect("backup master fault backup master");
    let status = node.stop(&mut lab).unwrap();
    assert!(status.success(), "exit 0 on SIGTERM, got {status}");
    expect("backup master fault backup master stop");
}
