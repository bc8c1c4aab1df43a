//! IPv6 VIPs end to end, owned by operator command: `lbfo run` on nodes in
//! a namespace lab (duplicate address detection off there, see `lab`), with
//! real peers: Debian's `ndisc6` sends Neighbour Solicitations and prints
//! who answers, the client kernel's own neighbour table and `ping -6`
//! follow the unsolicited advertisements and reachability probes.

use std::{
    net::{IpAddr, Ipv6Addr},
    time::{Duration, Instant},
};

use lbfo_tests::{
    lab::{
        Host, Lab, addresses6, arping, ip, ndisc6, neighbour, neighbour_mac, netns_exec, run,
        set_neighbour, set_sysctl, wait_for,
    },
    node::LbfoNode,
};

/// In the lab's 2001:db8:2::/64, next to the IPv4 VIP 192.0.2.100.
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x100);
const VIP6_CIDR: &str = "2001:db8:2::100/64";
const VIP4_CIDR: &str = "192.0.2.100/24";
/// How long one `ndisc6` probe waits for answers.
const PROBE_WAIT: Duration = Duration::from_millis(100);
const METRICS_PORT: u16 = 9655;

/// An IPv4 and an IPv6 VIP side by side on `eth0`, both operator-owned.
fn config(host: &Host, lease_ms: u64, vip6: &str) -> String {
    format!(
        "interface = \"eth0\"\nxdp_mode = \"native\"\nlease_ms = {lease_ms}\n\n\
         [metrics]\nlisten = \"{}:{METRICS_PORT}\"\n\n\
         [[vip]]\nname = \"web\"\naddress = \"{VIP4_CIDR}\"\n\n\
         [[vip]]\nname = \"web6\"\naddress = \"{vip6}\"\n",
        host.addr
    )
}

fn fmt_macs(macs: &[[u8; 6]]) -> String {
    macs.iter()
        .map(lbfo::arp::format_mac)
        .collect::<Vec<_>>()
        .join(", ")
}

fn nd_answers(client: &Host, target: Ipv6Addr) -> Vec<[u8; 6]> {
    ndisc6(&client.ns, &client.ifname, target, PROBE_WAIT).unwrap()
}

fn vip_address(host: &Host, vip: Ipv6Addr) -> Option<serde_json::Value> {
    addresses6(&host.ns, &host.ifname)
        .unwrap()
        .into_iter()
        .find(|a| a["local"].as_str() == Some(&vip.to_string()))
}

fn ping6(client: &Host, target: Ipv6Addr, count: u32) -> std::process::Output {
    netns_exec(&client.ns, "ping")
        .args(["-6", "-n", "-c", &count.to_string(), "-i", "0.2", "-W", "1"])
        .arg(target.to_string())
        .output()
        .expect("running ping")
}

fn status_vip<'a>(status: &'a lbfo::status::Status, name: &str) -> &'a lbfo::status::VipStatus {
    status
        .vips
        .iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("no vip {name} in status: {status:?}"))
}

#[test]
fn only_the_owner_answers_solicitations_with_its_mac() {
    let (mut lab, client, nodes) = Lab::with_client_and_nodes(2).expect("lab (needs root)");
    let n1 = LbfoNode::start(&mut lab, &nodes[0], &config(&nodes[0], 3000, VIP6_CIDR)).unwrap();
    let _n2 = LbfoNode::start(&mut lab, &nodes[1], &config(&nodes[1], 3000, VIP6_CIDR)).unwrap();

    let answers = nd_answers(&client, VIP6);
    assert!(
        answers.is_empty(),
        "on standby nobody may answer for the IPv6 VIP, got {}",
        fmt_macs(&answers)
    );

    n1.own("web6").unwrap();
    let answers = nd_answers(&client, VIP6);
    assert!(
        !answers.is_empty(),
        "the owner must answer the solicitation; log:\n{}",
        n1.log_text()
    );
    assert!(
        answers.iter().all(|m| *m == nodes[0].mac),
        "every answer must carry the owner's MAC {}, got {}",
        lbfo::arp::format_mac(&nodes[0].mac),
        fmt_macs(&answers)
    );
    // The IPv4 VIP next to it is not owned: owning one family's VIP leaves the other alone.
    let arp = arping(
        &client.ns,
        "eth0",
        "192.0.2.100".parse().unwrap(),
        2,
        PROBE_WAIT,
    )
    .unwrap();
    assert!(
        arp.is_empty(),
        "the IPv4 VIP is not owned, yet {} answered ARP for it",
        fmt_macs(&arp)
    );
    let address = vip_address(&nodes[0], VIP6).expect("the owner carries the IPv6 VIP");
    assert_eq!(
        address["nodad"], true,
        "added without duplicate address detection: {address}"
    );
    assert_eq!(
        address["preferred_life_time"],
        u32::MAX,
        "a /64 VIP keeps its preferred lifetime: {address}"
    );
    let pinged = ping6(&client, VIP6, 2);
    assert!(
        pinged.status.success(),
        "ping -6 to the owned VIP must be answered by the owner's stack: {}",
        String::from_utf8_lossy(&pinged.stdout)
    );

    let status = n1.status().unwrap();
    let vip = status_vip(&status, "web6");
    assert_eq!(vip.address, VIP6_CIDR);
    assert!(vip.owned && vip.state == "owner", "status: {vip:?}");
    assert!(
        vip.counters.nd_replied >= answers.len() as u64,
        "XDP counted {} answers, the client saw {}",
        vip.counters.nd_replied,
        answers.len()
    );
    assert!(
        vip.counters.ip_passed >= 2,
        "the echo requests were passed to the stack: {:?}",
        vip.counters
    );
    let text = n1.cli_ok(&["status"]).unwrap();
    assert!(
        text.contains(&format!("vip web6 {VIP6_CIDR}: owner")) && text.contains("nd replied"),
        "lbfo status shows the IPv6 VIP and its ND counters:\n{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&n1.cli_ok(&["status", "--json"]).unwrap())
        .expect("status --json is JSON");
    let web6 = json["vips"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == "web6"))
        .expect("web6 in status --json");
    assert_eq!(web6["address"], VIP6_CIDR);
    assert!(web6["counters"]["nd_replied"].as_u64() >= Some(1), "{web6}");

    // Metrics carry the VIP's name like any other; the announcements are NAs.
    let metrics = wait_for(Duration::from_secs(2), "the metrics to show web6", || {
        let out = run(netns_exec(&client.ns, "curl")
            .args(["-sf", "--max-time", "2"])
            .arg(format!("http://{}:{METRICS_PORT}/metrics", nodes[0].addr)))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let series = |name: &str, labels: &[&str]| {
            text.lines().any(|l| {
                l.starts_with(&format!("{name}{{")) && labels.iter().all(|label| l.contains(label))
            })
        };
        Ok(series("lbfo_xdp_nd_replies_total", &["vip=\"web6\""])
            && series(
                "lbfo_announcements_sent_total",
                &["vip=\"web6\"", "kind=\"na\""],
            ))
    });
    metrics.unwrap_or_else(|e| panic!("{e}"));

    n1.release("2001:db8:2::100").expect("release by address");
    let answers = nd_answers(&client, VIP6);
    assert!(
        answers.is_empty(),
        "after release nobody may answer, got {}",
        fmt_macs(&answers)
    );
    assert!(
        vip_address(&nodes[0], VIP6).is_none(),
        "release must remove the address lbfo added"
    );
    let status = n1.status().unwrap();
    let vip = status_vip(&status, "web6");
    assert!(
        vip.counters.nd_dropped_not_owner >= 1,
        "solicitations after release are dropped and counted: {:?}",
        vip.counters
    );
}

#[test]
fn kill_9_silences_an_ipv6_vip_within_one_lease() {
    let lease = Duration::from_millis(1000);
    let (mut lab, client, nodes) = Lab::with_client_and_nodes(1).expect("lab (needs root)");
    let n1 = &nodes[0];
    let node = LbfoNode::start(
        &mut lab,
        n1,
        &config(n1, lease.as_millis() as u64, VIP6_CIDR),
    )
    .unwrap();
    node.own("web6").unwrap();
    assert!(
        !nd_answers(&client, VIP6).is_empty(),
        "the owner must answer before the kill"
    );

    let killed = Instant::now();
    node.kill9().unwrap();
    let mut last_answer = None;
    while killed.elapsed() < lease * 3 {
        let probe_sent = killed.elapsed();
        if nd_answers(&client, VIP6).is_empty() {
            break;
        }
        last_answer = Some(probe_sent);
    }
    let silent_after = killed.elapsed();
    // One lease, plus a probe that was on its way (and waited) when it ran out.
    assert!(
        silent_after <= lease + 2 * PROBE_WAIT + Duration::from_millis(100),
        "the IPv6 VIP still answered {silent_after:?} after kill -9 (last answer to a probe sent at {last_answer:?}); lease is {lease:?}"
    );
    assert!(
        vip_address(n1, VIP6).is_some(),
        "the killed daemon's address is still on the interface, which is the point: the kernel would answer for it"
    );
    for _ in 0..5 {
        let late = nd_answers(&client, VIP6);
        assert!(
            late.is_empty(),
            "after the lease ran out nothing may answer, the kernel included; got {}",
            fmt_macs(&late)
        );
    }
}

/// Ownership moves from n1 to n2 by operator command; the client, which
/// sends nothing meanwhile, learns n2's MAC from the unsolicited
/// advertisement the take sends at once.
#[test]
fn the_unsolicited_advertisement_moves_the_client_within_1s() {
    let (mut lab, client, nodes) = Lab::with_client_and_nodes(2).expect("lab (needs root)");
    let n1 = LbfoNode::start(&mut lab, &nodes[0], &config(&nodes[0], 3000, VIP6_CIDR)).unwrap();
    let n2 = LbfoNode::start(&mut lab, &nodes[1], &config(&nodes[1], 3000, VIP6_CIDR)).unwrap();
    n1.own("web6").unwrap();
    // The client learns the VIP the ordinary way: its kernel solicits while pinging.
    let pinged = ping6(&client, VIP6, 1);
    assert!(
        pinged.status.success(),
        "ping -6 to n1: {}",
        String::from_utf8_lossy(&pinged.stdout)
    );
    assert_eq!(
        neighbour_mac(&client.ns, "eth0", VIP6).unwrap(),
        Some(nodes[0].mac),
        "the client must have learned n1"
    );

    n1.release("web6").unwrap();
    let start = Instant::now();
    n2.own("web6").unwrap();
    let moved = wait_for(
        Duration::from_secs(2),
        "the client's neighbour entry to move to n2",
        || Ok(neighbour_mac(&client.ns, "eth0", VIP6)? == Some(nodes[1].mac)),
    );
    let elapsed = start.elapsed();
    moved.unwrap_or_else(|e| panic!("{e}; entry is {:?}", neighbour(&client.ns, "eth0", VIP6)));
    assert!(
        elapsed <= Duration::from_secs(1),
        "the neighbour entry moved {elapsed:?} after `lbfo own`, expected within 1 s"
    );
    let status = n2.status().unwrap();
    assert!(
        status_vip(&status, "web6").counters.conflicts_seen == 0,
        "n2 sent the advertisements, it saw none from another MAC"
    );
}

/// A client whose entry for the VIP goes stale checks it with a unicast
/// solicitation (DELAY, then PROBE) while it keeps sending; XDP answers it,
/// so the entry is confirmed REACHABLE and no echo request is lost.
#[test]
fn reachability_probes_are_answered_and_the_entry_stays_usable() {
    let (mut lab, client, nodes) = Lab::with_client_and_nodes(1).expect("lab (needs root)");
    let n1 = LbfoNode::start(&mut lab, &nodes[0], &config(&nodes[0], 3000, VIP6_CIDR)).unwrap();
    n1.own("web6").unwrap();
    // Probe one second after the entry is used while stale (the default is five).
    let delay = Duration::from_secs(1);
    set_sysctl(
        &client.ns,
        "net/ipv6/neigh/eth0/delay_first_probe_time",
        &delay.as_secs().to_string(),
    )
    .unwrap();
    assert!(
        ping6(&client, VIP6, 1).status.success(),
        "ping -6 to the owner"
    );
    set_neighbour(&client.ns, "eth0", IpAddr::V6(VIP6), &nodes[0].mac, "stale").unwrap();
    let replied_before = status_vip(&n1.status().unwrap(), "web6")
        .counters
        .nd_replied;

    // The kernel announces the entry's changes (PROBE, then REACHABLE when
    // the solicited advertisement comes back); polling could miss PROBE,
    // which lasts one round trip.
    let events = lab.file("neigh-events");
    lab.spawn(
        netns_exec(&client.ns, "ip")
            .args(["monitor", "neigh"])
            .stdout(std::fs::File::create(&events).unwrap()),
    )
    .unwrap();
    // One `ping -c 1` every 200 ms for 3 s, through the whole probe. Each
    // is a process of its own because ping confirms the neighbour to the
    // kernel (MSG_CONFIRM) once it has had a reply, which would spare the
    // kernel its probe.
    let pinger = {
        let ns = client.ns.clone();
        std::thread::spawn(move || {
            let mut lost = Vec::new();
            for n in 0..15 {
                let sent = Instant::now();
                let ok = netns_exec(&ns, "ping")
                    .args(["-6", "-n", "-c", "1", "-W", "1"])
                    .arg(VIP6.to_string())
                    .output()
                    .is_ok_and(|o| o.status.success());
                if !ok {
                    lost.push(n);
                }
                std::thread::sleep(Duration::from_millis(200).saturating_sub(sent.elapsed()));
            }
            lost
        })
    };
    let mut seen: Vec<String> = Vec::new();
    let confirmed = wait_for(
        // The delay, one retransmit interval (1 s) for the probe, and slack.
        delay + Duration::from_secs(1) + Duration::from_millis(500),
        "the kernel to announce PROBE, then REACHABLE, for the VIP",
        || {
            let text = std::fs::read_to_string(&events)?;
            seen = text
                .lines()
                .filter(|l| l.starts_with(&VIP6.to_string()))
                .filter_map(|l| l.split_whitespace().last().map(String::from))
                .collect();
            let probe = seen.iter().position(|s| s == "PROBE");
            Ok(probe.is_some_and(|p| seen[p..].iter().any(|s| s == "REACHABLE")))
        },
    );
    let lost = pinger.join().expect("pinger thread");
    confirmed.unwrap_or_else(|e| panic!("{e}; states seen: {seen:?}"));
    assert!(
        lost.is_empty(),
        "every echo request through STALE, DELAY, PROBE and REACHABLE must be answered; lost {lost:?} (states {seen:?})"
    );
    let status = n1.status().unwrap();
    let replied = status_vip(&status, "web6").counters.nd_replied;
    assert!(
        replied > replied_before,
        "the unicast probe was answered by XDP: nd_replied {replied_before} -> {replied} (states {seen:?}, malformed frames {})",
        status.malformed_frames
    );
    assert_eq!(
        neighbour_mac(&client.ns, "eth0", VIP6).unwrap(),
        Some(nodes[0].mac)
    );
}

/// A /128 VIP gets a preferred lifetime of 0: the kernel keeps accepting
/// traffic for it but never picks it as the source of a connection it
/// starts. 2001:db8:2::3 shares more leading bits with the client
/// 2001:db8:2::2 than the node's own 2001:db8:2::11 does, so without that
/// the kernel would prefer it (RFC 6724 rule 8).
#[test]
fn a_host_vip_is_never_picked_as_a_source_address() {
    let vip = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 3);
    let (mut lab, client, nodes) = Lab::with_client_and_nodes(1).expect("lab (needs root)");
    let n1 = LbfoNode::start(
        &mut lab,
        &nodes[0],
        &config(&nodes[0], 3000, &format!("{vip}/128")),
    )
    .unwrap();
    n1.own("web6").unwrap();
    let address = vip_address(&nodes[0], vip).expect("the owner carries the VIP");
    assert_eq!(address["nodad"], true, "{address}");
    assert_eq!(address["preferred_life_time"], 0, "{address}");
    let route = ip(
        &nodes[0].ns,
        &["-j", "-6", "route", "get", &client.addr6.to_string()],
    )
    .unwrap();
    let route: serde_json::Value = serde_json::from_slice(&route.stdout).unwrap();
    assert_eq!(
        route[0]["prefsrc"].as_str(),
        Some(nodes[0].addr6.to_string().as_str()),
        "the node must reach the client from its own address, not the VIP: {route}"
    );
    let pinged = ping6(&client, vip, 2);
    assert!(
        pinged.status.success(),
        "the VIP still takes traffic: {}",
        String::from_utf8_lossy(&pinged.stdout)
    );
}
