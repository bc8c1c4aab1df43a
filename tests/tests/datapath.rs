//! Data-path tests: lbfo's compiled XDP program run in the kernel through
//! BPF_PROG_TEST_RUN, as a table of cases. Each case gives an input frame,
//! the expected verdict, the expected output bytes and the expected change
//! of every counter. The map state is the same for every case:
//!
//! | VIP          | id | state                        |
//! |--------------|----|------------------------------|
//! | 192.0.2.100  | 1  | owned, lease running         |
//! | 192.0.2.101  | 2  | not owned                    |
//! | 192.0.2.102  | 3  | owned, but the lease ran out |
//! | 192.0.2.103  | 4  | route VIP, announced (owned) |
//! | 192.0.2.104  | 5  | route VIP, withdrawn         |

use std::{net::Ipv4Addr, time::Duration};

use lbfo::datapath::Datapath;
use lbfo_common::{NO_VIP, VipCounters, VipMode, VipState};
use lbfo_tests::{
    frames::{Arp, ethernet, ipv4, tcp_frame, udp_frame},
    xdp_tester::{Action, XdpTester},
};

const NODE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xc1];
const OTHER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const NOT_A_VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const OWNED: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const NOT_OWNED: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 101);
const EXPIRED: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 102);
const ROUTE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 103);
const ROUTE_WITHDRAWN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 104);

#[derive(Clone, Copy, Debug)]
enum Counter {
    ArpReplied,
    ArpDroppedNotOwner,
    IpPassed,
    IpDroppedNotOwner,
    ConflictsSeen,
    Malformed,
    ArpDroppedRoute,
}

fn field(c: &mut VipCounters, which: Counter) -> &mut u64 {
    match which {
        Counter::ArpReplied => &mut c.arp_replied,
        Counter::ArpDroppedNotOwner => &mut c.arp_dropped_not_owner,
        Counter::IpPassed => &mut c.ip_passed,
        Counter::IpDroppedNotOwner => &mut c.ip_dropped_not_owner,
        Counter::ConflictsSeen => &mut c.conflicts_seen,
        Counter::Malformed => &mut c.malformed,
        Counter::ArpDroppedRoute => &mut c.arp_dropped_route,
    }
}

struct Case {
    name: String,
    input: Vec<u8>,
    action: Action,
    /// None: the frame must leave unchanged.
    output: Option<Vec<u8>>,
    /// (counter slot, counter) that must go up by exactly one; all others stay.
    counters: Vec<(u32, Counter)>,
}

fn case(
    name: impl Into<String>,
    input: Vec<u8>,
    action: Action,
    output: Option<Vec<u8>>,
    counters: &[(u32, Counter)],
) -> Case {
    Case {
        name: name.into(),
        input,
        action,
        output,
        counters: counters.to_vec(),
    }
}

/// A lease deadline `lease` from now, on the kernel's tick counter.
fn lease_from_now(dp: &Datapath, lease: Duration) -> u64 {
    lbfo::clock::lease_deadline(dp.jiffies().unwrap(), lease)
}

fn load_map_state(dp: &mut Datapath) {
    let entry = |vip_id, owned, lease_deadline_jiffies| VipState {
        lease_deadline_jiffies,
        mac: NODE_MAC,
        owned,
        mode: VipMode::Local as u8,
        vip_id,
        ..Default::default()
    };
    let owned_until = lease_from_now(dp, Duration::from_secs(60));
    let expired_at = dp.jiffies().unwrap();
    dp.set_vip(OWNED, &entry(1, 1, owned_until)).unwrap();
    dp.set_vip(NOT_OWNED, &entry(2, 0, 0)).unwrap();
    dp.set_vip(EXPIRED, &entry(3, 1, expired_at)).unwrap();
    let route = |vip_id, owned, lease_deadline_jiffies| VipState {
        flags: lbfo_common::VIP_FLAG_ROUTE,
        ..entry(vip_id, owned, lease_deadline_jiffies)
    };
    dp.set_vip(ROUTE, &route(4, 1, owned_until)).unwrap();
    dp.set_vip(ROUTE_WITHDRAWN, &route(5, 0, 0)).unwrap();
}

fn snapshot(dp: &Datapath) -> Vec<VipCounters> {
    (0..=5).map(|id| dp.counters(id).unwrap()).collect()
}

fn arp_cases() -> Vec<Case> {
    use Counter::*;
    let request_owned = Arp::request(CLIENT_MAC, CLIENT, OWNED).frame();
    // The reply, byte by byte, as the wire must carry it.
    let reply_owned: Vec<u8> = vec![
        0x02, 0, 0, 0, 0, 0xc1, // Ethernet dst: the requester
        0x02, 0, 0, 0, 0, 0x0a, // Ethernet src: the node
        0x08, 0x06, // ARP
        0x00, 0x01, 0x08, 0x00, 6, 4, // Ethernet/IPv4, 6, 4
        0x00, 0x02, // reply
        0x02, 0, 0, 0, 0, 0x0a, 192, 0, 2, 100, // sender: node MAC, VIP
        0x02, 0, 0, 0, 0, 0xc1, 192, 0, 2, 2, // target: the requester
    ];
    let mut padded = request_owned.clone();
    padded.resize(60, 0);
    let mut padded_reply = reply_owned.clone();
    padded_reply.resize(60, 0);
    let probe = Arp::request(CLIENT_MAC, Ipv4Addr::UNSPECIFIED, OWNED);

    let mut cases = vec![
        case(
            "request for owned VIP: exact reply bytes, XDP_TX",
            request_owned.clone(),
            Action::Tx,
            Some(reply_owned.clone()),
            &[(1, ArpReplied)],
        ),
        case(
            "reply built independently matches",
            request_owned.clone(),
            Action::Tx,
            Some(Arp::reply(NODE_MAC, OWNED, CLIENT_MAC, CLIENT).frame()),
            &[(1, ArpReplied)],
        ),
        case(
            "padded 60-byte request: reply keeps the padding",
            padded,
            Action::Tx,
            Some(padded_reply),
            &[(1, ArpReplied)],
        ),
        case(
            "address probe (sender 0.0.0.0) for owned VIP is answered",
            probe.frame(),
            Action::Tx,
            Some(Arp::reply(NODE_MAC, OWNED, CLIENT_MAC, Ipv4Addr::UNSPECIFIED).frame()),
            &[(1, ArpReplied)],
        ),
        case(
            "request for VIP not owned: XDP_DROP",
            Arp::request(CLIENT_MAC, CLIENT, NOT_OWNED).frame(),
            Action::Drop,
            None,
            &[(2, ArpDroppedNotOwner)],
        ),
        case(
            "request for VIP with expired lease: XDP_DROP",
            Arp::request(CLIENT_MAC, CLIENT, EXPIRED).frame(),
            Action::Drop,
            None,
            &[(3, ArpDroppedNotOwner)],
        ),
        case(
            "request for an address that is no VIP: XDP_PASS",
            Arp::request(CLIENT_MAC, CLIENT, NOT_A_VIP).frame(),
            Action::Pass,
            None,
            &[],
        ),
        case(
            "ARP reply from another MAC claiming owned VIP: PASS + conflict",
            Arp::reply(OTHER_MAC, OWNED, CLIENT_MAC, CLIENT).frame(),
            Action::Pass,
            None,
            &[(1, ConflictsSeen)],
        ),
        case(
            "gratuitous ARP from another MAC for owned VIP: PASS + conflict",
            Arp::gratuitous(OTHER_MAC, OWNED).frame(),
            Action::Pass,
            None,
            &[(1, ConflictsSeen)],
        ),
        case(
            "gratuitous ARP reply form from another MAC for owned VIP: PASS + conflict",
            Arp {
                op: 2,
                tha: OTHER_MAC,
                ..Arp::gratuitous(OTHER_MAC, OWNED)
            }
            .frame(),
            Action::Pass,
            None,
            &[(1, ConflictsSeen)],
        ),
        case(
            "our own gratuitous ARP seen again: PASS, no conflict",
            Arp::gratuitous(NODE_MAC, OWNED).frame(),
            Action::Pass,
            None,
            &[],
        ),
        case(
            "gratuitous ARP from the owner of a VIP we do not own: PASS, no conflict",
            Arp::gratuitous(OTHER_MAC, NOT_OWNED).frame(),
            Action::Pass,
            None,
            &[],
        ),
        case(
            "gratuitous ARP for a VIP whose lease expired: PASS, no conflict",
            Arp::gratuitous(OTHER_MAC, EXPIRED).frame(),
            Action::Pass,
            None,
            &[],
        ),
        case(
            "ARP reply from the owner of a VIP we do not own: PASS",
            Arp::reply(OTHER_MAC, NOT_OWNED, NODE_MAC, NOT_A_VIP).frame(),
            Action::Pass,
            None,
            &[],
        ),
        case(
            "request for an announced route VIP: XDP_DROP (routers reach the node by its own address)",
            Arp::request(CLIENT_MAC, CLIENT, ROUTE).frame(),
            Action::Drop,
            None,
            &[(4, ArpDroppedRoute)],
        ),
        case(
            "request for a withdrawn route VIP: XDP_DROP",
            Arp::request(CLIENT_MAC, CLIENT, ROUTE_WITHDRAWN).frame(),
            Action::Drop,
            None,
            &[(5, ArpDroppedRoute)],
        ),
        case(
            "address probe for an announced route VIP: XDP_DROP",
            Arp::request(CLIENT_MAC, Ipv4Addr::UNSPECIFIED, ROUTE).frame(),
            Action::Drop,
            None,
            &[(4, ArpDroppedRoute)],
        ),
        case(
            "unknown ARP operation 3 for owned VIP: PASS",
            Arp {
                op: 3,
                ..Arp::request(CLIENT_MAC, CLIENT, OWNED)
            }
            .frame(),
            Action::Pass,
            None,
            &[],
        ),
    ];
    let request = Arp::request(CLIENT_MAC, CLIENT, OWNED);
    for (what, bad) in [
        (
            "htype 6",
            Arp {
                htype: 6,
                ..request
            },
        ),
        (
            "ptype 0x86dd",
            Arp {
                ptype: 0x86dd,
                ..request
            },
        ),
        ("hlen 8", Arp { hlen: 8, ..request }),
        (
            "plen 16",
            Arp {
                plen: 16,
                ..request
            },
        ),
    ] {
        cases.push(case(
            format!("request for owned VIP with wrong {what}: PASS + malformed"),
            bad.frame(),
            Action::Pass,
            None,
            &[(NO_VIP, Malformed)],
        ));
    }
    for len in 0..42 {
        cases.push(case(
            format!("ARP request truncated to {len} bytes: PASS + malformed"),
            request_owned[..len].to_vec(),
            Action::Pass,
            None,
            &[(NO_VIP, Malformed)],
        ));
    }
    cases
}

fn ip_cases() -> Vec<Case> {
    use Counter::*;
    let to = |dst: Ipv4Addr| tcp_frame(CLIENT_MAC, NODE_MAC, (CLIENT, 40000), (dst, 80), 0x02);
    let truncated = to(OWNED)[..14 + 19].to_vec();
    vec![
        case(
            "TCP SYN to owned VIP: XDP_PASS to the local stack",
            to(OWNED),
            Action::Pass,
            None,
            &[(1, IpPassed)],
        ),
        case(
            "UDP to owned VIP: XDP_PASS",
            udp_frame(CLIENT_MAC, NODE_MAC, (CLIENT, 5353), (OWNED, 53)),
            Action::Pass,
            None,
            &[(1, IpPassed)],
        ),
        case(
            "TCP to VIP not owned: XDP_DROP",
            to(NOT_OWNED),
            Action::Drop,
            None,
            &[(2, IpDroppedNotOwner)],
        ),
        case(
            "TCP to VIP with expired lease: XDP_DROP",
            to(EXPIRED),
            Action::Drop,
            None,
            &[(3, IpDroppedNotOwner)],
        ),
        case(
            "TCP SYN to an announced local route VIP: XDP_PASS",
            to(ROUTE),
            Action::Pass,
            None,
            &[(4, IpPassed)],
        ),
        case(
            "TCP ACK (no SYN) to an announced local route VIP: XDP_PASS",
            tcp_frame(CLIENT_MAC, NODE_MAC, (CLIENT, 40001), (ROUTE, 80), 0x10),
            Action::Pass,
            None,
            &[(4, IpPassed)],
        ),
        case(
            "TCP to a withdrawn route VIP: XDP_DROP",
            to(ROUTE_WITHDRAWN),
            Action::Drop,
            None,
            &[(5, IpDroppedNotOwner)],
        ),
        case(
            "TCP to an address that is no VIP: XDP_PASS",
            to(NOT_A_VIP),
            Action::Pass,
            None,
            &[],
        ),
        case(
            "ICMP to owned VIP: XDP_PASS",
            ethernet(
                NODE_MAC,
                CLIENT_MAC,
                0x0800,
                &ipv4(CLIENT, OWNED, 1, &[8, 0, 0, 0, 0, 1, 0, 1]),
            ),
            Action::Pass,
            None,
            &[(1, IpPassed)],
        ),
        case(
            "IPv4 header cut short: PASS + malformed",
            truncated,
            Action::Pass,
            None,
            &[(NO_VIP, Malformed)],
        ),
        case(
            "IPv6 frame: PASS",
            ethernet(NODE_MAC, CLIENT_MAC, 0x86dd, &[0x60; 40]),
            Action::Pass,
            None,
            &[],
        ),
        case(
            "Ethernet header only, unknown ethertype: PASS",
            ethernet(NODE_MAC, CLIENT_MAC, 0x88b5, &[]),
            Action::Pass,
            None,
            &[],
        ),
    ]
}

fn run_table(cases: Vec<Case>) {
    let mut tester = XdpTester::new().expect("these tests load the XDP program and need root");
    let mut failures = Vec::new();
    for c in &cases {
        load_map_state(&mut tester.datapath);
        let before = snapshot(&tester.datapath);
        let outcome = tester
            .run(&c.input)
            .unwrap_or_else(|e| panic!("{}: {e:#}", c.name));
        let after = snapshot(&tester.datapath);

        if outcome.action != c.action {
            failures.push(format!(
                "{}: expected {}, got {}",
                c.name, c.action, outcome.action
            ));
        }
        let expected_output = c.output.as_ref().unwrap_or(&c.input);
        if &outcome.output != expected_output {
            failures.push(format!(
                "{}: output bytes differ\n  expected {:02x?}\n  got      {:02x?}",
                c.name, expected_output, outcome.output
            ));
        }
        let mut expected = before.clone();
        for (slot, counter) in &c.counters {
            *field(&mut expected[*slot as usize], *counter) += 1;
        }
        if after != expected {
            failures.push(format!(
                "{}: counters differ\n  expected {:?}\n  got      {:?}",
                c.name, expected, after
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} data-path cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn arp_table() {
    run_table(arp_cases());
}

#[test]
fn ipv4_table() {
    run_table(ip_cases());
}

/// The lease is read at packet time: pushing it forward or letting it lapse
/// changes the verdict without any other map change.
#[test]
fn lease_expiry_is_read_per_packet() {
    let mut tester = XdpTester::new().expect("needs root");
    let request = Arp::request(CLIENT_MAC, CLIENT, OWNED).frame();
    let state = |lease_deadline_jiffies| VipState {
        lease_deadline_jiffies,
        mac: NODE_MAC,
        owned: 1,
        mode: VipMode::Local as u8,
        vip_id: 1,
        ..Default::default()
    };
    tester
        .datapath
        .set_vip(
            OWNED,
            &state(lease_from_now(&tester.datapath, Duration::from_millis(200))),
        )
        .unwrap();
    assert_eq!(
        tester.run(&request).unwrap().action,
        Action::Tx,
        "lease running: must answer"
    );
    tester
        .datapath
        .set_vip(
            OWNED,
            &state(lease_from_now(&tester.datapath, Duration::from_millis(20))),
        )
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(40));
    assert_eq!(
        tester.run(&request).unwrap().action,
        Action::Drop,
        "20 ms lease, 40 ms later: must have fallen silent"
    );
}
