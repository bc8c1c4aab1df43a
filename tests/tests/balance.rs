//! End-to-end balancing: three backends behind a VIP owned by one of two
//! lbfo nodes, L2 direct server return, a real HTTP client (curl) making
//! new connections, backend checks, drain, and failover of the VIP.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddrV4, TcpStream},
    time::Duration,
};

use lbfo_tests::{
    keepalive::ask,
    lab::{Host, Lab, in_netns, ip, netns_exec, run, wait_for},
    node::{HttpServer, LbfoNode},
};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const ADVERT_MS: u64 = 100;

/// Client, two lbfo nodes, three DSR backends b1..b3 serving their name.
struct BalanceLab {
    lab: Lab,
    client: Host,
    nodes: Vec<LbfoNode>,
    servers: Vec<HttpServer>,
}

fn balance_lab() -> BalanceLab {
    let mut lab = Lab::new().expect("creating the lab (needs root)");
    let client = lab.add_host("client", Ipv4Addr::new(192, 0, 2, 2)).unwrap();
    // A veth hands frames over with the TCP checksum left for "hardware"
    // to fill in; forwarded as they are by XDP they would arrive broken.
    // A real wire carries finished checksums: have the client compute them.
    run(netns_exec(&client.ns, "ethtool").args(["-K", "eth0", "tx", "off"])).unwrap();
    let n1 = lab.add_host("n1", Ipv4Addr::new(192, 0, 2, 11)).unwrap();
    let n2 = lab.add_host("n2", Ipv4Addr::new(192, 0, 2, 12)).unwrap();
    let mut servers = Vec::new();
    for i in 1..=3u8 {
        let b = lab
            .add_host(&format!("b{i}"), Ipv4Addr::new(192, 0, 2, 20 + i))
            .unwrap();
        // Direct server return: the backend accepts the VIP as its own
        // address but never answers ARP for it (docs/BALANCING.md).
        ip(&b.ns, &["addr", "add", "192.0.2.100/32", "dev", "lo"]).unwrap();
        for (key, value) in [("arp_ignore", "1"), ("arp_announce", "2")] {
            for scope in ["all", "eth0"] {
                run(netns_exec(&b.ns, "sysctl")
                    .args(["-qw", &format!("net.ipv4.conf.{scope}.{key}={value}")]))
                .unwrap();
            }
        }
        servers.push(
            HttpServer::start_on(&mut lab, &b, &format!("b{i}"), Ipv4Addr::UNSPECIFIED).unwrap(),
        );
    }
    let config = |priority: u8| {
        let mut c = format!(
            "interface = \"eth0\"\nxdp_mode = \"native\"\n\n[[vip]]\nname = \"web\"\naddress = \"192.0.2.100/24\"\nvrid = 60\npriority = {priority}\nadvert_interval_ms = {ADVERT_MS}\nmode = \"balance\"\n"
        );
        for i in 1..=3 {
            c.push_str(&format!(
                "\n[[vip.backend]]\naddress = \"192.0.2.2{i}\"\n[[vip.backend.check]]\nkind = \"http\"\nurl = \"http://192.0.2.2{i}:8080/health\"\ninterval_ms = 100\ntimeout_ms = 50\nrise = 2\nfall = 2\n"
            ));
        }
        c
    };
    let nodes = vec![
        LbfoNode::start(&mut lab, &n1, &config(150)).unwrap(),
        LbfoNode::start(&mut lab, &n2, &config(100)).unwrap(),
    ];
    let lab = BalanceLab {
        lab,
        client,
        nodes,
        servers,
    };
    for node in &lab.nodes {
        wait_for(
            Duration::from_secs(5),
            "all backends to take new flows",
            || {
                let status = node.status()?;
                Ok(status.vips[0]
                    .backends
                    .iter()
                    .all(|b| b.accepting_new_flows))
            },
        )
        .unwrap_or_else(|e| {
            panic!(
                "{e}; status {:?}; log:\n{}",
                node.status().map(|s| s.vips[0].backends.clone()),
                node.log_text()
            )
        });
    }
    wait_for(Duration::from_secs(3), "n1 to be Master", || {
        Ok(lab.nodes[0].status()?.vips[0].state == "master")
    })
    .unwrap();
    lab
}

/// `count` new connections with curl, one request each; the body names the backend.
fn curl_many(client: &Host, count: usize) -> BTreeMap<String, usize> {
    // Bounded in time as well as count: at most 30 s, however the VIP behaves.
    let script = format!(
        "end=$((SECONDS + 30)); for i in $(seq {count}); do [ $SECONDS -lt $end ] || break; curl -s -m 1 http://{VIP}:8080/ || echo FAILED; echo; done"
    );
    let out = run(netns_exec(&client.ns, "bash").args(["-c", &script])).unwrap();
    let mut served = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
    {
        let who = line.split_whitespace().next().unwrap_or("").to_string();
        *served.entry(who).or_default() += 1;
    }
    served
}

#[test]
fn new_connections_spread_over_healthy_backends_and_survive_failover() {
    let mut l = balance_lab();
    let served = curl_many(&l.client, 300);
    eprintln!("300 new connections: {served:?}");
    assert_eq!(
        served.get("FAILED"),
        None,
        "every connection must be answered: {served:?}"
    );
    for b in ["b1", "b2", "b3"] {
        let n = served.get(b).copied().unwrap_or(0);
        assert!(
            (60..=140).contains(&n),
            "{b} served {n} of 300 new connections; expected about 100: {served:?}"
        );
    }
    let status = l.nodes[0].status().unwrap();
    let steered = status.vips[0].counters.steered;
    assert!(
        steered >= 300,
        "the owner steered {steered} packets for 300 connections"
    );
    let new_flows: u64 = status.vips[0]
        .backends
        .iter()
        .map(|b| b.counters.new_flows)
        .sum();
    assert!(
        new_flows >= 300,
        "backend counters show {new_flows} new flows"
    );

    // A long-lived connection on b1 or b3 (not the backend about to stop).
    let mut long_lived = None;
    for _ in 0..30 {
        let mut stream = in_netns(&l.client.ns, || {
            TcpStream::connect(SocketAddrV4::new(VIP, 8080))
        })
        .unwrap()
        .unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let who = ask(&mut stream).unwrap();
        if who != "b2" {
            long_lived = Some((stream, who));
            break;
        }
    }
    let (mut stream, kept_on) = long_lived.expect("some connection lands outside b2");

    // b2's server stops answering: its check fails on both nodes and no new connection reaches it.
    l.servers[1].set_mode("close");
    for node in &l.nodes {
        wait_for(Duration::from_secs(3), "b2 to be taken out", || {
            Ok(node.status()?.vips[0]
                .backends
                .iter()
                .any(|b| b.address == "192.0.2.22" && !b.accepting_new_flows))
        })
        .unwrap();
    }
    let served = curl_many(&l.client, 60);
    eprintln!("60 new connections with b2 down: {served:?}");
    assert_eq!(
        served.get("FAILED"),
        None,
        "no new connection may reach the stopped backend: {served:?}"
    );
    assert_eq!(served.get("b2"), None, "{served:?}");
    assert_eq!(
        ask(&mut stream).unwrap(),
        kept_on,
        "the long-lived connection stays on {kept_on}"
    );

    // Drain b3: it keeps its flows, new ones go to b1 only.
    let out = l.nodes[0].cli(&["drain", "192.0.2.23"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let served = curl_many(&l.client, 30);
    assert_eq!(
        served.get("b1"),
        Some(&30),
        "with b2 down and b3 drained everything goes to b1: {served:?}"
    );
    assert_eq!(
        ask(&mut stream).unwrap(),
        kept_on,
        "draining keeps existing flows"
    );
    l.nodes[0].cli(&["undrain", "192.0.2.23"]).unwrap();

    // The VIP fails over to n2: balancing goes on, and the same backend
    // keeps the long-lived flow (both nodes build the same table).
    let exit = l.nodes[0].stop(&mut l.lab).unwrap();
    assert!(exit.success());
    wait_for(Duration::from_secs(3), "n2 to be Master", || {
        Ok(l.nodes[1].status()?.vips[0].state == "master")
    })
    .unwrap();
    wait_for(
        Duration::from_secs(2),
        "the VIP to answer through n2",
        || Ok(!curl_many(&l.client, 1).contains_key("FAILED")),
    )
    .unwrap();
    let served = curl_many(&l.client, 60);
    eprintln!("60 new connections through n2: {served:?}");
    assert_eq!(served.get("FAILED"), None, "{served:?}");
    assert!(
        served.get("b1").copied().unwrap_or(0) > 10 && served.get("b3").copied().unwrap_or(0) > 10,
        "both healthy backends serve after failover: {served:?}"
    );
    assert_eq!(
        ask(&mut stream).unwrap(),
        kept_on,
        "the long-lived connection survives the failover on {kept_on}"
    );
}
