//! Route VIPs end to end with real BIRD 2: lbfo nodes announce the VIP
//! over eBGP to a router that spreads flows over them with ECMP
//! (`tests/src/routing.rs` draws the lab). New connections spread over the
//! nodes and land on the backends by weight; a node killed with `kill -9`
//! loses its nexthop within a second; established connections keep their
//! backend when the router moves them to another node, because every node
//! builds the same Maglev table; a failing check withdraws; a node that
//! joins breaks nothing.

use std::time::{Duration, Instant};

use lbfo_tests::{
    keepalive::KeptAlive,
    routing::{CHECK_FALL, CHECK_INTERVAL, CHECK_RISE, RouteLab},
};

/// How often each kept-alive connection sends a request.
const REQUEST_EVERY: Duration = Duration::from_millis(50);
/// Kept-alive connections per test: enough that some go through every
/// node (the chance that 24 flows all hash to one of two nodes is 2^-23).
const CONNECTIONS: usize = 24;

fn assert_all_intact(connections: &[lbfo_tests::keepalive::Connection], what: &str) {
    let broken: Vec<_> = connections.iter().filter(|c| !c.intact()).collect();
    assert!(
        broken.is_empty(),
        "{what}: {} of {} established connections broke: {broken:#?}",
        broken.len(),
        connections.len()
    );
    for c in connections {
        assert!(
            c.answered >= 10,
            "{what}: connection from port {} answered only {} requests",
            c.port,
            c.answered
        );
    }
}

#[test]
fn ecmp_spreads_connections_and_a_killed_node_loses_its_nexthop_but_no_connection() {
    let mut l = RouteLab::new(2, &[1, 2, 1]).unwrap();
    l.start_node(0).unwrap();
    l.start_node(1).unwrap();
    l.wait_nexthops(&[0, 1], Duration::from_secs(5)).unwrap();
    let status = l.node(0).status().unwrap();
    assert_eq!(status.vips[0].state, "announced", "{status:?}");
    assert!(
        status.vips[0].reason.starts_with("announced on lbfo0"),
        "{}",
        status.vips[0].reason
    );

    // Kept-alive connections first, so each node's connection table holds
    // exactly the ones it carries.
    let kept = KeptAlive::open(
        &l.client.ns,
        l.target(),
        CONNECTIONS,
        REQUEST_EVERY,
        Duration::from_secs(60),
    )
    .unwrap();
    let via_n1 = l.tracked_flows(0).unwrap();
    let via_n2 = l.tracked_flows(1).unwrap();
    eprintln!("{CONNECTIONS} kept-alive connections: {via_n1} via n1, {via_n2} via n2");
    assert_eq!(via_n1 + via_n2, CONNECTIONS as u64);
    assert!(
        via_n1 > 0 && via_n2 > 0,
        "the router must spread connections over both nodes: {via_n1} via n1, {via_n2} via n2"
    );

    // Many new connections: over both nodes, on the backends by weight.
    let before = [l.new_flows(0).unwrap(), l.new_flows(1).unwrap()];
    let served = l.curl_many(400).unwrap();
    let per_node = [
        l.new_flows(0).unwrap() - before[0],
        l.new_flows(1).unwrap() - before[1],
    ];
    eprintln!("400 new connections: {served:?}; new flows per node {per_node:?}");
    assert_eq!(served.get("FAILED"), None, "{served:?}");
    assert_eq!(
        per_node[0] + per_node[1],
        400,
        "every connection is one new flow on one node"
    );
    for (node, flows) in per_node.iter().enumerate() {
        assert!(
            (100..=300).contains(flows),
            "n{} took {flows} of 400 new connections; ECMP should give about 200",
            node + 1
        );
    }
    for (backend, expected) in [("b1", 100), ("b2", 200), ("b3", 100)] {
        let n = served.get(backend).copied().unwrap_or(0);
        assert!(
            n * 10 >= expected * 6 && n * 10 <= expected * 14,
            "{backend} served {n} of 400, expected about {expected} (weights 1:2:1): {served:?}"
        );
    }

    // kill -9 of n1: the route device goes with the process, BIRD
    // withdraws, the router drops the nexthop.
    let killed = Instant::now();
    l.node(0).kill9().unwrap();
    l.wait_nexthops(&[1], Duration::from_secs(1))
        .unwrap_or_else(|e| {
            panic!("the router must drop n1's nexthop within 1 s of kill -9: {e:#}")
        });
    let took = killed.elapsed();
    eprintln!(
        "kill -9 of n1: nexthop dropped within {:.0} ms",
        took.as_secs_f64() * 1000.0
    );
    assert!(
        took <= Duration::from_secs(1),
        "nexthop dropped {took:?} after kill -9"
    );
    l.kill9(0).unwrap();
    let served = l.curl_many(50).unwrap();
    assert_eq!(
        served.get("FAILED"),
        None,
        "new connections after the kill: {served:?}"
    );

    // Let the moved connections run a while on n2, then restart n1: it
    // announces again and flows move back, still on their backends.
    std::thread::sleep(Duration::from_secs(1));
    l.start_node(0).unwrap();
    l.wait_nexthops(&[0, 1], Duration::from_secs(5)).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let connections = kept.finish();
    assert_all_intact(&connections, "kill -9 of n1 and its restart");
}

#[test]
fn a_failing_check_withdraws_the_node_and_a_passing_one_brings_it_back() {
    let mut l = RouteLab::new(2, &[1, 1, 1]).unwrap();
    l.start_node(0).unwrap();
    l.start_node(1).unwrap();
    l.wait_nexthops(&[0, 1], Duration::from_secs(5)).unwrap();
    let kept = KeptAlive::open(
        &l.client.ns,
        l.target(),
        CONNECTIONS,
        REQUEST_EVERY,
        Duration::from_secs(60),
    )
    .unwrap();

    // n2's check fails: withdrawn within fall × interval (plus a second
    // for the probe timeout, BGP and the kernel).
    let bound = CHECK_INTERVAL * CHECK_FALL + Duration::from_secs(1);
    l.checks[1].set_mode("error");
    let took = l.wait_nexthops(&[0], bound).unwrap();
    eprintln!(
        "check failing on n2: withdrawn after {:.0} ms",
        took.as_secs_f64() * 1000.0
    );
    let status = l.node(1).status().unwrap();
    let vip = &status.vips[0];
    assert_eq!(vip.state, "fault", "{vip:?}");
    assert!(!vip.owned, "XDP on n2 no longer steers: {vip:?}");
    assert!(
        vip.reason.starts_with("withdrawn: fault:"),
        "status says why it is not announced: {}",
        vip.reason
    );
    let route = vip.route.as_ref().expect("a route VIP shows its route");
    assert!(!route.announced, "{route:?}");
    assert_eq!(route.why_not.as_deref(), Some("fault"), "{route:?}");
    let text = l.node(1).cli_ok(&["status"]).unwrap();
    assert!(
        text.contains("route on lbfo0: not announced (fault)"),
        "lbfo status says it: {text}"
    );
    // The registry is copied from the core every SYNC_INTERVAL.
    std::thread::sleep(lbfo::metrics::SYNC_INTERVAL * 2);
    let metrics = l.metrics(1).unwrap();
    for line in [
        "lbfo_route_vip_announced{device=\"lbfo0\",vip=\"web\"} 0",
        "lbfo_route_vip_not_announced{reason=\"fault\",vip=\"web\"} 1",
        "lbfo_route_vip_not_announced{reason=\"waiting_for_backends\",vip=\"web\"} 0",
    ] {
        assert!(
            metrics.contains(line),
            "metrics must have {line:?}:\n{metrics}"
        );
    }
    let served = l.curl_many(30).unwrap();
    assert_eq!(served.get("FAILED"), None, "{served:?}");

    // The check passes again: announced within rise × interval (+1 s).
    let bound = CHECK_INTERVAL * CHECK_RISE + Duration::from_secs(1);
    l.checks[1].set_mode("ok");
    let took = l.wait_nexthops(&[0, 1], bound).unwrap();
    eprintln!(
        "check passing on n2: announced after {:.0} ms",
        took.as_secs_f64() * 1000.0
    );
    assert_eq!(l.node(1).vip_state("web"), "announced");
    let route = l.node(1).status().unwrap().vips[0].route.clone().unwrap();
    assert!(route.announced && route.why_not.is_none(), "{route:?}");
    std::thread::sleep(lbfo::metrics::SYNC_INTERVAL * 2);
    let metrics = l.metrics(1).unwrap();
    assert!(
        metrics.contains("lbfo_route_vip_announced{device=\"lbfo0\",vip=\"web\"} 1"),
        "{metrics}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_all_intact(&kept.finish(), "n2 withdrawn and back");
}

#[test]
fn a_third_node_joining_breaks_no_established_connection() {
    let mut l = RouteLab::new(3, &[1, 1, 1]).unwrap();
    l.start_node(0).unwrap();
    l.start_node(1).unwrap();
    l.wait_nexthops(&[0, 1], Duration::from_secs(5)).unwrap();
    let kept = KeptAlive::open(
        &l.client.ns,
        l.target(),
        CONNECTIONS,
        REQUEST_EVERY,
        Duration::from_secs(60),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // n3 announces only once its table is the one n1 and n2 have.
    l.start_node(2).unwrap();
    l.wait_nexthops(&[0, 1, 2], Duration::from_secs(5)).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let moved = l.tracked_flows(2).unwrap();
    eprintln!("n3 joined: it carries {moved} of the {CONNECTIONS} established connections");
    assert!(
        moved > 0,
        "some established connections must move to n3 for this test to prove anything"
    );
    assert_all_intact(&kept.finish(), "n3 joining");
    let served = l.curl_many(60).unwrap();
    assert_eq!(served.get("FAILED"), None, "{served:?}");
}
