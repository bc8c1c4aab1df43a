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
//! | 2001:db8::100| 6  | owned, lease running         |
//! | 2001:db8::101| 7  | not owned                    |
//! | 2001:db8::102| 8  | owned, but the lease ran out |
//!
//! Expected Neighbour Advertisements are built by `etherparse`, whose
//! ICMPv6 checksum is not lbfo's, and once byte by byte.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use etherparse::{Icmpv6Type, PacketBuilder, icmpv6::NeighborAdvertisementHeader};
use lbfo::datapath::Datapath;
use lbfo_common::{NO_VIP, VipCounters, VipMode, VipState};
use lbfo_tests::{
    frames::{
        Arp, Nd, OPTION_SOURCE_LINK_LAYER, OPTION_TARGET_LINK_LAYER, ethernet, ipv4, ipv6,
        link_layer_option, tcp_frame, tcp6_frame, udp_frame, udp6_frame,
    },
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
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
const NOT_A_VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const OWNED6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);
const NOT_OWNED6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x101);
const EXPIRED6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x102);
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

#[derive(Clone, Copy, Debug)]
enum Counter {
    ArpReplied,
    ArpDroppedNotOwner,
    IpPassed,
    IpDroppedNotOwner,
    ConflictsSeen,
    Malformed,
    ArpDroppedRoute,
    NdReplied,
    NdDroppedNotOwner,
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
        Counter::NdReplied => &mut c.nd_replied,
        Counter::NdDroppedNotOwner => &mut c.nd_dropped_not_owner,
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
    dp.set_vip(OWNED6, &entry(6, 1, owned_until)).unwrap();
    dp.set_vip(NOT_OWNED6, &entry(7, 0, 0)).unwrap();
    dp.set_vip(EXPIRED6, &entry(8, 1, expired_at)).unwrap();
}

fn snapshot(dp: &Datapath) -> Vec<VipCounters> {
    (0..=8).map(|id| dp.counters(id).unwrap()).collect()
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
            "Ethernet header only, unknown ethertype: PASS",
            ethernet(NODE_MAC, CLIENT_MAC, 0x88b5, &[]),
            Action::Pass,
            None,
            &[],
        ),
    ]
}

/// A Neighbour Advertisement for `target` at the node's MAC with the
/// target link-layer option, built by etherparse.
fn advertisement(eth_dst: [u8; 6], dst: Ipv6Addr, target: Ipv6Addr, solicited: bool) -> Vec<u8> {
    let header = NeighborAdvertisementHeader {
        router: false,
        solicited,
        r#override: true,
    };
    let mut body = target.octets().to_vec();
    body.extend_from_slice(&link_layer_option(OPTION_TARGET_LINK_LAYER, NODE_MAC));
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(NODE_MAC, eth_dst)
        .ipv6(target.octets(), dst.octets(), 255)
        .icmpv6(Icmpv6Type::NeighborAdvertisement(header))
        .write(&mut frame, &body)
        .expect("etherparse builds the advertisement");
    frame
}

fn nd_cases() -> Vec<Case> {
    use Counter::*;
    let multicast = Nd::solicitation(CLIENT_MAC, CLIENT6, OWNED6);
    let unicast = Nd::unicast_solicitation(CLIENT_MAC, CLIENT6, NODE_MAC, OWNED6);
    let dad = Nd::duplicate_detection(CLIENT_MAC, OWNED6);
    let solicited = advertisement(CLIENT_MAC, CLIENT6, OWNED6, true);
    let defended = advertisement([0x33, 0x33, 0, 0, 0, 1], ALL_NODES, OWNED6, false);
    // The answer to `multicast`, byte by byte, as the wire must carry it.
    let exact: Vec<u8> = [
        &[0x02, 0, 0, 0, 0, 0xc1][..],    // Ethernet dst: the requester
        &[0x02, 0, 0, 0, 0, 0x0a],        // Ethernet src: the node
        &[0x86, 0xdd],                    // IPv6
        &[0x60, 0, 0, 0, 0, 32, 58, 255], // version 6, payload 32, ICMPv6, hop limit 255
        &OWNED6.octets(),                 // source: the VIP
        &CLIENT6.octets(),                // destination: the requester
        &[136, 0, 0x88, 0x6c],            // Neighbour Advertisement, code 0, checksum
        &[0x60, 0, 0, 0],                 // S=1, O=1, R=0
        &OWNED6.octets(),                 // target
        &[2, 1, 0x02, 0, 0, 0, 0, 0x0a],  // target link-layer address: the node
    ]
    .concat();
    let nonce = [14, 1, 1, 2, 3, 4, 5, 6];
    let with_option = |nd: &Nd, option: &[u8]| Nd {
        options: [&nd.options[..], option].concat(),
        ..nd.clone()
    };
    let hop_by_hop = (0, vec![0, 0, 1, 4, 0, 0, 0, 0]); // next header, length 0, PadN
    let reply = |name: &str, nd: Nd, expected: &Vec<u8>| {
        case(
            name,
            nd.frame(),
            Action::Tx,
            Some(expected.clone()),
            &[(6, NdReplied)],
        )
    };
    let malformed =
        |name: &str, input: Vec<u8>| case(name, input, Action::Pass, None, &[(NO_VIP, Malformed)]);

    let mut cases = vec![
        case(
            "multicast solicitation for owned VIP: exact advertisement bytes, XDP_TX",
            multicast.frame(),
            Action::Tx,
            Some(exact),
            &[(6, NdReplied)],
        ),
        reply(
            "multicast solicitation for owned VIP: the advertisement etherparse builds",
            multicast.clone(),
            &solicited,
        ),
        reply(
            "unicast solicitation (reachability probe) for owned VIP: answered",
            unicast.clone(),
            &solicited,
        ),
        reply(
            "unicast solicitation without the source option: frame grows to the advertisement",
            Nd {
                options: Vec::new(),
                ..unicast.clone()
            },
            &solicited,
        ),
        reply(
            "solicitation with a second option: frame shrinks to the advertisement",
            with_option(&multicast, &nonce),
            &solicited,
        ),
        reply(
            "solicitation with padding after the IPv6 payload: padding dropped",
            Nd {
                trailer: vec![0; 6],
                ..multicast.clone()
            },
            &solicited,
        ),
        reply(
            "duplicate address detection for owned VIP: defended to all nodes, S=0",
            dad.clone(),
            &defended,
        ),
        reply(
            "duplicate address detection with a nonce option: defended",
            with_option(&dad, &nonce),
            &defended,
        ),
        case(
            "multicast solicitation for VIP not owned: XDP_DROP",
            Nd::solicitation(CLIENT_MAC, CLIENT6, NOT_OWNED6).frame(),
            Action::Drop,
            None,
            &[(7, NdDroppedNotOwner)],
        ),
        case(
            "unicast solicitation for VIP not owned: XDP_DROP",
            Nd::unicast_solicitation(CLIENT_MAC, CLIENT6, NODE_MAC, NOT_OWNED6).frame(),
            Action::Drop,
            None,
            &[(7, NdDroppedNotOwner)],
        ),
        case(
            "duplicate address detection for VIP not owned: XDP_DROP",
            Nd::duplicate_detection(CLIENT_MAC, NOT_OWNED6).frame(),
            Action::Drop,
            None,
            &[(7, NdDroppedNotOwner)],
        ),
        case(
            "solicitation for VIP with expired lease: XDP_DROP",
            Nd::solicitation(CLIENT_MAC, CLIENT6, EXPIRED6).frame(),
            Action::Drop,
            None,
            &[(8, NdDroppedNotOwner)],
        ),
        case(
            "solicitation behind a hop-by-hop header for VIP not owned: still XDP_DROP",
            Nd {
                extension_headers: vec![hop_by_hop.clone()],
                ..Nd::solicitation(CLIENT_MAC, CLIENT6, NOT_OWNED6)
            }
            .frame(),
            Action::Drop,
            None,
            &[(7, NdDroppedNotOwner)],
        ),
        case(
            "solicitation for an address that is no VIP: XDP_PASS",
            Nd::solicitation(CLIENT_MAC, CLIENT6, NOT_A_VIP6).frame(),
            Action::Pass,
            None,
            &[],
        ),
        case(
            "advertisement from another MAC claiming owned VIP: PASS + conflict",
            Nd::advertisement(OTHER_MAC, OWNED6).frame(),
            Action::Pass,
            None,
            &[(6, ConflictsSeen)],
        ),
        case(
            "advertisement from another MAC without the target option: PASS + conflict",
            Nd {
                options: Vec::new(),
                ..Nd::advertisement(OTHER_MAC, OWNED6)
            }
            .frame(),
            Action::Pass,
            None,
            &[(6, ConflictsSeen)],
        ),
        case(
            "our own advertisement seen again: PASS, no conflict",
            Nd::advertisement(NODE_MAC, OWNED6).frame(),
            Action::Pass,
            None,
            &[],
        ),
        case(
            "advertisement from the owner of a VIP we do not own: PASS, no conflict",
            Nd::advertisement(OTHER_MAC, NOT_OWNED6).frame(),
            Action::Pass,
            None,
            &[],
        ),
        case(
            "advertisement for a VIP whose lease expired: PASS, no conflict",
            Nd::advertisement(OTHER_MAC, EXPIRED6).frame(),
            Action::Pass,
            None,
            &[],
        ),
        malformed(
            "advertisement from another MAC with hop limit 254: PASS + malformed, no conflict",
            Nd {
                hop_limit: 254,
                ..Nd::advertisement(OTHER_MAC, OWNED6)
            }
            .frame(),
        ),
    ];

    let invalid = [
        (
            "hop limit 254",
            Nd {
                hop_limit: 254,
                ..multicast.clone()
            },
        ),
        (
            "hop limit 1",
            Nd {
                hop_limit: 1,
                ..unicast.clone()
            },
        ),
        (
            "code 1",
            Nd {
                code: 1,
                ..multicast.clone()
            },
        ),
        (
            "a wrong checksum",
            Nd {
                checksum_error: 1,
                ..multicast.clone()
            },
        ),
        (
            "a wrong checksum (unicast)",
            Nd {
                checksum_error: 0x100,
                ..unicast.clone()
            },
        ),
        (
            "an option of length 0",
            Nd {
                options: vec![OPTION_SOURCE_LINK_LAYER, 0, 0, 0, 0, 0, 0, 0],
                ..multicast.clone()
            },
        ),
        (
            "a second option of length 0",
            with_option(&multicast, &[14, 0, 0, 0, 0, 0, 0, 0]),
        ),
        (
            "an option longer than the message",
            Nd {
                options: vec![OPTION_SOURCE_LINK_LAYER, 2, 2, 0, 0, 0, 0, 0xc1],
                ..multicast.clone()
            },
        ),
        (
            "a message that is no whole number of 8-byte units",
            Nd {
                options: vec![OPTION_SOURCE_LINK_LAYER, 1, 2, 0],
                ..multicast.clone()
            },
        ),
        (
            "more options than XDP checks (14)",
            Nd {
                options: nonce.repeat(14),
                ..unicast.clone()
            },
        ),
        (
            "a hop-by-hop header before ICMPv6",
            Nd {
                extension_headers: vec![hop_by_hop.clone()],
                ..multicast.clone()
            },
        ),
        (
            "a destination options header before ICMPv6",
            Nd {
                extension_headers: vec![(60, vec![0, 0, 1, 4, 0, 0, 0, 0])],
                ..unicast.clone()
            },
        ),
        (
            "duplicate address detection with a source link-layer option",
            Nd {
                options: link_layer_option(OPTION_SOURCE_LINK_LAYER, CLIENT_MAC),
                ..dad.clone()
            },
        ),
        (
            "duplicate address detection not to the solicited-node group",
            Nd {
                dst: ALL_NODES,
                eth_dst: [0x33, 0x33, 0, 0, 0, 1],
                ..dad.clone()
            },
        ),
    ];
    for (what, nd) in invalid {
        cases.push(malformed(
            &format!("solicitation for owned VIP with {what}: never answered, PASS + malformed"),
            nd.frame(),
        ));
    }
    // 13 options is the most XDP checks: still answered.
    cases.push(reply(
        "solicitation with 13 options: answered",
        Nd {
            options: nonce.repeat(13),
            ..unicast.clone()
        },
        &solicited,
    ));

    // Every truncation of the new paths. Up to the end of the target a
    // solicitation cannot be told apart from a malformed frame; from there on
    // a VIP not owned is dropped at once, while an owned one is checked to the end.
    let full = multicast.frame();
    for len in 0..full.len() {
        cases.push(malformed(
            &format!("solicitation for owned VIP truncated to {len} bytes: PASS + malformed"),
            full[..len].to_vec(),
        ));
    }
    let full = dad.frame();
    for len in 0..full.len() {
        cases.push(malformed(
            &format!("duplicate address detection truncated to {len} bytes: PASS + malformed"),
            full[..len].to_vec(),
        ));
    }
    let full = Nd::solicitation(CLIENT_MAC, CLIENT6, NOT_OWNED6).frame();
    for len in 0..full.len() {
        let input = full[..len].to_vec();
        cases.push(if len < 14 + 40 + 24 {
            malformed(
                &format!("solicitation for VIP not owned truncated to {len} bytes, before the target's end: PASS + malformed"),
                input,
            )
        } else {
            case(
                format!("solicitation for VIP not owned truncated to {len} bytes, target complete: XDP_DROP"),
                input,
                Action::Drop,
                None,
                &[(7, NdDroppedNotOwner)],
            )
        });
    }
    let full = Nd::advertisement(OTHER_MAC, OWNED6).frame();
    for len in 0..full.len() {
        cases.push(malformed(
            &format!(
                "conflicting advertisement truncated to {len} bytes: PASS + malformed, no conflict"
            ),
            full[..len].to_vec(),
        ));
    }
    cases
}

fn ipv6_cases() -> Vec<Case> {
    use Counter::*;
    let to = |dst: Ipv6Addr| tcp6_frame(CLIENT_MAC, NODE_MAC, (CLIENT6, 40000), (dst, 80), 0x02);
    let echo = ipv6(CLIENT6, OWNED6, 58, 64, &[128, 0, 0, 0, 0, 1, 0, 1]);
    let mut cases = vec![
        case(
            "TCP SYN to owned IPv6 VIP: XDP_PASS to the local stack",
            to(OWNED6),
            Action::Pass,
            None,
            &[(6, IpPassed)],
        ),
        case(
            "UDP to owned IPv6 VIP: XDP_PASS",
            udp6_frame(CLIENT_MAC, NODE_MAC, (CLIENT6, 5353), (OWNED6, 53)),
            Action::Pass,
            None,
            &[(6, IpPassed)],
        ),
        case(
            "ICMPv6 echo to owned IPv6 VIP: XDP_PASS",
            ethernet(NODE_MAC, CLIENT_MAC, 0x86dd, &echo),
            Action::Pass,
            None,
            &[(6, IpPassed)],
        ),
        case(
            "TCP to IPv6 VIP not owned: XDP_DROP",
            to(NOT_OWNED6),
            Action::Drop,
            None,
            &[(7, IpDroppedNotOwner)],
        ),
        case(
            "TCP to IPv6 VIP with expired lease: XDP_DROP",
            to(EXPIRED6),
            Action::Drop,
            None,
            &[(8, IpDroppedNotOwner)],
        ),
        case(
            "TCP to an IPv6 address that is no VIP: XDP_PASS",
            to(NOT_A_VIP6),
            Action::Pass,
            None,
            &[],
        ),
        case(
            "IPv6 to a group, not to a VIP: XDP_PASS",
            ethernet(NODE_MAC, CLIENT_MAC, 0x86dd, &[0x60; 40]),
            Action::Pass,
            None,
            &[],
        ),
    ];
    let full = to(OWNED6);
    for len in 0..full.len() {
        let input = full[..len].to_vec();
        cases.push(if len < 14 + 40 {
            case(
                format!("TCP to owned IPv6 VIP truncated to {len} bytes, in the headers: PASS + malformed"),
                input,
                Action::Pass,
                None,
                &[(NO_VIP, Malformed)],
            )
        } else {
            case(
                format!("TCP to owned IPv6 VIP truncated to {len} bytes, headers complete: XDP_PASS"),
                input,
                Action::Pass,
                None,
                &[(6, IpPassed)],
            )
        });
    }
    cases
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

#[test]
fn nd_table() {
    run_table(nd_cases());
}

#[test]
fn ipv6_table() {
    run_table(ipv6_cases());
}

/// The lease is read at packet time: pushing it forward or letting it lapse
/// changes the verdict without any other map change, for ARP and for ND.
#[test]
fn lease_expiry_is_read_per_packet() {
    let mut tester = XdpTester::new().expect("needs root");
    let state = |lease_deadline_jiffies| VipState {
        lease_deadline_jiffies,
        mac: NODE_MAC,
        owned: 1,
        mode: VipMode::Local as u8,
        vip_id: 1,
        ..Default::default()
    };
    let requests: [(std::net::IpAddr, Vec<u8>); 3] = [
        (
            OWNED.into(),
            Arp::request(CLIENT_MAC, CLIENT, OWNED).frame(),
        ),
        (
            OWNED6.into(),
            Nd::solicitation(CLIENT_MAC, CLIENT6, OWNED6).frame(),
        ),
        (
            OWNED6.into(),
            Nd::unicast_solicitation(CLIENT_MAC, CLIENT6, NODE_MAC, OWNED6).frame(),
        ),
    ];
    for (vip, request) in requests {
        let lease = |dp: &Datapath, ms| state(lease_from_now(dp, Duration::from_millis(ms)));
        let entry = lease(&tester.datapath, 200);
        tester.datapath.set_vip(vip, &entry).unwrap();
        assert_eq!(
            tester.run(&request).unwrap().action,
            Action::Tx,
            "{vip}: lease running: must answer"
        );
        let entry = lease(&tester.datapath, 20);
        tester.datapath.set_vip(vip, &entry).unwrap();
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(
            tester.run(&request).unwrap().action,
            Action::Drop,
            "{vip}: 20 ms lease, 40 ms later: must have fallen silent"
        );
    }
}
