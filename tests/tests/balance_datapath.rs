//! Data-path tests of balancing: the compiled XDP program in the kernel
//! (BPF_PROG_TEST_RUN) with Maglev tables built by lbfo's own builder and
//! written by lbfo's own map code. A backend is recognised by the
//! destination MAC of the frame the program sends out.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr},
};

use lbfo::{
    balance::{BackendIds, BalancedVip},
    config::BackendConfig,
    core::Capacity,
    datapath::DatapathError,
};
use lbfo_common::{Backend, VipMode, VipState};
use lbfo_tests::{
    frames::{ethernet, ipv4, tcp_frame, udp_frame},
    xdp_tester::{Action, XdpTester},
};

const NODE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xc1];
const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const VIP_NOT_OWNED: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 101);

fn backend_mac(i: usize) -> [u8; 6] {
    [0x02, 0, 0, 0, 0x01, i as u8]
}

fn backend_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, 21 + i as u8)
}

fn config(i: usize, weight: u32) -> BackendConfig {
    BackendConfig {
        address: backend_addr(i).into(),
        weight,
        checks: Vec::new(),
    }
}

/// A balanced VIP with backends 0..n (backend id = index), kept by the
/// daemon's own `BalancedVip` and published through `Datapath::publish`,
/// the path the daemon uses.
struct Balanced {
    tester: XdpTester,
    weights: Vec<u32>,
    vip: BalancedVip,
    ids: BackendIds,
    /// `VipState::flags` of the balanced VIP.
    flags: u8,
}

impl Balanced {
    fn new(weights: &[u32]) -> Balanced {
        Balanced::node(weights, false, 0)
    }

    /// One lbfo node's view: with `reversed`, the backends are configured
    /// in the opposite order, so they get other ids than on a node without.
    fn node(weights: &[u32], reversed: bool, flags: u8) -> Balanced {
        let mut ids = BackendIds::new(lbfo_common::MAX_BACKENDS);
        let mut configs: Vec<BackendConfig> =
            (0..weights.len()).map(|i| config(i, weights[i])).collect();
        if reversed {
            configs.reverse();
        }
        let mut vip = BalancedVip::new(0, &configs, &mut ids).unwrap();
        let macs: HashMap<IpAddr, [u8; 6]> = (0..weights.len())
            .map(|i| (backend_addr(i).into(), backend_mac(i)))
            .collect();
        vip.learn_macs(&macs);
        let mut b = Balanced {
            tester: XdpTester::new().expect("these tests load the XDP program and need root"),
            weights: weights.to_vec(),
            vip,
            ids,
            flags,
        };
        let not_owned = VipState {
            mac: NODE_MAC,
            mode: VipMode::Balance as u8,
            vip_id: 2,
            table_slot: 1,
            ..Default::default()
        };
        b.tester
            .datapath
            .set_vip(VIP_NOT_OWNED, &not_owned)
            .unwrap();
        b.publish();
        b
    }

    /// The backend leaves the configuration: marked gone in the map and
    /// out of the table.
    fn remove(&mut self, i: usize) {
        let configs: Vec<BackendConfig> = (0..self.weights.len())
            .filter(|&k| {
                k != i
                    && self
                        .vip
                        .backends
                        .iter()
                        .any(|b| b.address == IpAddr::from(backend_addr(k)))
            })
            .map(|k| config(k, self.weights[k]))
            .collect();
        let gone = self.vip.update_backends(&configs, &mut self.ids).unwrap();
        for id in gone {
            self.tester
                .datapath
                .set_backend(id, &Backend::default())
                .unwrap();
        }
        self.publish();
    }

    /// `lbfo drain`: keeps its flows, takes no new ones.
    fn drain(&mut self, i: usize) {
        let backend = self
            .vip
            .backends
            .iter_mut()
            .find(|b| b.address == IpAddr::from(backend_addr(i)))
            .expect("a configured backend");
        backend.drained = true;
        self.publish();
    }

    /// Writes the next table and flips the (owned) VIP to it.
    fn publish(&mut self) {
        let update = self.vip.next_table();
        self.tester.datapath.publish(&update).unwrap();
        let vip = VipState {
            lease_deadline_jiffies: lbfo::clock::lease_deadline(
                self.tester.datapath.jiffies().unwrap(),
                std::time::Duration::from_secs(3600),
            ),
            mac: NODE_MAC,
            owned: 1,
            mode: VipMode::Balance as u8,
            vip_id: 1,
            table_slot: update.table_slot,
            table_generation: update.generation,
            flags: self.flags,
        };
        self.tester.datapath.set_vip(VIP, &vip).unwrap();
    }

    /// Sends one packet of `flow`; returns the verdict and the backend index
    /// its destination MAC names (if it was steered).
    fn send(&mut self, frame: &[u8]) -> (Action, Option<usize>) {
        let out = self.tester.run(frame).unwrap();
        let backend = (out.action == Action::Tx).then(|| {
            assert_eq!(
                &out.output[6..12],
                &NODE_MAC,
                "steered frames leave from the node's MAC"
            );
            assert_eq!(
                &out.output[12..],
                &frame[12..],
                "L2 DSR changes only the MACs"
            );
            let dst: [u8; 6] = out.output[0..6].try_into().unwrap();
            (0..self.weights.len())
                .find(|&i| backend_mac(i) == dst)
                .unwrap_or_else(|| panic!("frame sent to unknown MAC {dst:02x?}"))
        });
        (out.action, backend)
    }

    fn send_flow(&mut self, flow: &Flow) -> Option<usize> {
        let (action, backend) = self.send(&flow.frame());
        assert_eq!(
            action,
            Action::Tx,
            "flow {flow:?} to a balanced VIP must be steered"
        );
        backend
    }
}

#[derive(Clone, Copy, Debug)]
struct Flow {
    src: Ipv4Addr,
    sport: u16,
    dport: u16,
    udp: bool,
}

impl Flow {
    /// A packet of the established connection (ACK, no SYN).
    fn established(&self) -> Vec<u8> {
        tcp_frame(
            CLIENT_MAC,
            NODE_MAC,
            (self.src, self.sport),
            (VIP, self.dport),
            0x10,
        )
    }

    fn frame(&self) -> Vec<u8> {
        if self.udp {
            udp_frame(
                CLIENT_MAC,
                NODE_MAC,
                (self.src, self.sport),
                (VIP, self.dport),
            )
        } else {
            tcp_frame(
                CLIENT_MAC,
                NODE_MAC,
                (self.src, self.sport),
                (VIP, self.dport),
                0x02,
            )
        }
    }
}

/// Deterministic pseudo-random flows from 198.51.100.0/24 and 203.0.113.0/24 clients.
fn random_flows(count: usize, seed: u64) -> Vec<Flow> {
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..count)
        .map(|_| {
            let r = next();
            let net = if r & 1 == 0 {
                [198, 51, 100]
            } else {
                [203, 0, 113]
            };
            Flow {
                src: Ipv4Addr::new(net[0], net[1], net[2], (r >> 8) as u8),
                sport: 1024 + ((r >> 16) as u16 % 60000),
                dport: if r >> 40 & 1 == 0 { 80 } else { 443 },
                udp: false,
            }
        })
        .collect()
}

#[test]
fn a_syn_leaves_for_a_backend_with_xdp_tx_and_is_counted() {
    let mut b = Balanced::new(&[1, 1, 1]);
    let flow = random_flows(1, 7)[0];
    let frame = flow.frame();
    let before = b.tester.datapath.counters(1).unwrap();
    let (action, backend) = b.send(&frame);
    assert_eq!(action, Action::Tx);
    let backend = backend.expect("steered");
    let counters = b.tester.datapath.backend_counters(backend as u32).unwrap();
    assert_eq!(
        (counters.packets, counters.bytes, counters.new_flows),
        (1, frame.len() as u64, 1),
        "backend counters after one SYN"
    );
    assert_eq!(
        b.tester.datapath.counters(1).unwrap().steered,
        before.steered + 1
    );
    assert_eq!(
        b.tester.datapath.active_flows().get(&(backend as u32)),
        Some(&1)
    );

    // The same 5-tuple always picks the same backend, and is one flow.
    for _ in 0..5 {
        assert_eq!(
            b.send_flow(&flow),
            Some(backend),
            "same 5-tuple, same backend"
        );
    }
    let counters = b.tester.datapath.backend_counters(backend as u32).unwrap();
    assert_eq!((counters.packets, counters.new_flows), (6, 1));
    // UDP is balanced too.
    let udp = Flow { udp: true, ..flow };
    assert_eq!(b.send(&udp.frame()).0, Action::Tx);
}

#[test]
fn new_flows_spread_within_2_percent_of_weights() {
    let weights = [1, 2, 3, 2];
    let mut b = Balanced::new(&weights);
    let flows = random_flows(100_000, 0x5eed);
    let mut seen = vec![0u64; weights.len()];
    for flow in &flows {
        seen[b.send_flow(flow).unwrap()] += 1;
    }
    let total: u32 = weights.iter().sum();
    for (i, &w) in weights.iter().enumerate() {
        let expected = flows.len() as f64 * w as f64 / total as f64;
        let error = (seen[i] as f64 - expected).abs() / expected;
        eprintln!(
            "backend {i} weight {w}: {} flows, expected {expected:.0} ({:.2}% off)",
            seen[i],
            error * 100.0
        );
        assert!(
            error <= 0.02,
            "backend {i} (weight {w}) got {} of {} flows, expected {expected:.0} ±2%",
            seen[i],
            flows.len()
        );
    }
}

#[test]
fn removing_a_backend_keeps_tracked_flows_and_sends_no_new_flow_to_it() {
    let mut b = Balanced::new(&[1, 1, 1, 1]);
    let flows = random_flows(10_000, 11);
    let before: Vec<usize> = flows.iter().map(|f| b.send_flow(f).unwrap()).collect();
    let removed = 2;
    // Removal: not present any more, and out of the table.
    b.remove(removed);
    let mut moved_from_others = 0;
    for (flow, &was) in flows.iter().zip(&before) {
        let now = b.send_flow(flow).unwrap();
        assert_ne!(now, removed, "no flow may reach a removed backend");
        if was != removed && now != was {
            moved_from_others += 1;
        }
    }
    assert_eq!(
        moved_from_others, 0,
        "tracked flows on other backends must stay where they are"
    );
    for flow in random_flows(10_000, 12) {
        assert_ne!(
            b.send_flow(&flow).unwrap(),
            removed,
            "a new flow went to the removed backend"
        );
    }
}

#[test]
fn a_drained_backend_keeps_its_flows_but_gets_no_new_ones() {
    let mut b = Balanced::new(&[1, 1, 1]);
    let flows = random_flows(3_000, 21);
    let before: Vec<usize> = flows.iter().map(|f| b.send_flow(f).unwrap()).collect();
    let drained = 0;
    b.drain(drained);
    for (flow, &was) in flows.iter().zip(&before) {
        assert_eq!(
            b.send_flow(flow).unwrap(),
            was,
            "a tracked flow must stay on its backend, drained or not"
        );
    }
    for flow in random_flows(3_000, 22) {
        assert_ne!(
            b.send_flow(&flow).unwrap(),
            drained,
            "a new flow went to the drained backend"
        );
    }
}

#[test]
fn maglev_disruption_when_one_of_n_backends_goes_is_near_one_over_n() {
    for n in [3usize, 5, 8] {
        let mut b = Balanced::new(&vec![1; n]);
        let flows = random_flows(20_000, 31 + n as u64);
        let before: Vec<usize> = flows.iter().map(|f| b.send_flow(f).unwrap()).collect();
        // Forget tracked flows so every packet goes through the table again.
        b.tester.datapath.clear_conntrack().unwrap();
        b.remove(0);
        let moved = flows
            .iter()
            .zip(&before)
            .filter(|(f, was)| b.send_flow(f).unwrap() != **was)
            .count();
        let fraction = moved as f64 / flows.len() as f64;
        let ideal = 1.0 / n as f64;
        eprintln!(
            "N = {n}: {:.2}% of flows moved when one backend went (ideal {:.2}%)",
            fraction * 100.0,
            ideal * 100.0
        );
        assert!(
            (fraction - ideal).abs() <= 0.02,
            "N = {n}: {:.2}% of flows moved, expected about {:.2}%",
            fraction * 100.0,
            ideal * 100.0
        );
        b.tester.datapath.clear_conntrack().unwrap();
    }
}

#[test]
fn edge_cases_of_a_balanced_vip() {
    let mut b = Balanced::new(&[1, 1]);
    let flow = random_flows(1, 41)[0];
    // ICMP to the VIP is answered by the owner itself.
    let icmp = ethernet(
        NODE_MAC,
        CLIENT_MAC,
        0x0800,
        &ipv4(flow.src, VIP, 1, &[8, 0, 0, 0, 0, 1, 0, 1]),
    );
    assert_eq!(
        b.send(&icmp).0,
        Action::Pass,
        "ICMP to a balanced VIP goes to the local stack"
    );
    // A non-first fragment carries no ports: the local stack reassembles.
    let mut fragment = flow.frame();
    fragment[14 + 6] = 0x00;
    fragment[14 + 7] = 0x10;
    assert_eq!(
        b.send(&fragment).0,
        Action::Pass,
        "fragments go to the local stack"
    );
    // Not owned: dropped like any VIP traffic.
    let mut not_owned = flow.frame();
    not_owned[14 + 16..14 + 20].copy_from_slice(&VIP_NOT_OWNED.octets());
    assert_eq!(b.send(&not_owned).0, Action::Drop);
    // Ports cut off: malformed, passed.
    let truncated = flow.frame()[..14 + 20 + 2].to_vec();
    let malformed_before = b.tester.datapath.counters(0).unwrap().malformed;
    assert_eq!(b.send(&truncated).0, Action::Pass);
    assert_eq!(
        b.tester.datapath.counters(0).unwrap().malformed,
        malformed_before + 1
    );
    // No backend takes new flows: new flows are dropped and counted.
    b.drain(0);
    b.drain(1);
    let before = b.tester.datapath.counters(1).unwrap().no_backend;
    assert_eq!(b.send(&random_flows(1, 42)[0].frame()).0, Action::Drop);
    assert_eq!(
        b.tester.datapath.counters(1).unwrap().no_backend,
        before + 1
    );
}

/// Maps sized for a node that balances nothing (one entry each): even a
/// balance-mode VIP entry, which the daemon never writes on such a node,
/// cannot make the program read past the Maglev array. The table lookup
/// fails (or finds the one zeroed slot, naming a backend that takes no
/// flows), the packet is dropped and counted; writing a table is refused.
#[test]
fn maps_sized_for_no_balancing_keep_every_lookup_inside_them() {
    let mut tester = XdpTester::with_capacity(Capacity {
        balanced_vips: 0,
        backends: 0,
        conntrack_entries: 0,
    })
    .expect("these tests load the XDP program and need root");
    let jiffies = tester.datapath.jiffies().unwrap();
    let flows = random_flows(20, 11);
    for (table_slot, table_generation) in [(0, 0), (0, 1), (15, 1), (u16::MAX, 1)] {
        let vip = VipState {
            lease_deadline_jiffies: lbfo::clock::lease_deadline(
                jiffies,
                std::time::Duration::from_secs(3600),
            ),
            mac: NODE_MAC,
            owned: 1,
            mode: VipMode::Balance as u8,
            vip_id: 1,
            table_slot,
            table_generation,
            ..Default::default()
        };
        tester.datapath.set_vip(VIP, &vip).unwrap();
        for flow in &flows {
            let before = tester.datapath.counters(1).unwrap().no_backend;
            let out = tester.run(&flow.frame()).unwrap();
            assert_eq!(
                out.action,
                Action::Drop,
                "flow {flow:?} with table slot {table_slot} generation {table_generation} and no tables"
            );
            assert_eq!(
                tester.datapath.counters(1).unwrap().no_backend,
                before + 1,
                "counted as finding no backend"
            );
        }
    }
    let table = vec![0; lbfo_common::MAGLEV_TABLE_SIZE as usize];
    let error = tester.datapath.write_table(0, 0, &table).unwrap_err();
    assert!(
        matches!(error, DatapathError::NoTable { .. }),
        "writing a table the maps have no room for: {error}"
    );
}

/// ECMP moves flows between lbfo nodes when one leaves or joins: the node
/// that now gets a connection has never seen its SYN. It must send the
/// packet by its Maglev table, which is the same table as the first node's
/// (same backend set, whatever ids the backends have there), so the
/// connection keeps its backend. A route VIP is steered like any other.
#[test]
fn a_flow_moved_from_another_node_keeps_its_backend_without_a_syn() {
    let weights = [1, 2, 1, 3];
    let mut first = Balanced::node(&weights, false, lbfo_common::VIP_FLAG_ROUTE);
    let flows = random_flows(5_000, 51);
    let backends: Vec<usize> = flows
        .iter()
        .map(|f| {
            let syn = first.send_flow(f).unwrap();
            let (action, data) = first.send(&f.established());
            assert_eq!((action, data), (Action::Tx, Some(syn)), "flow {f:?}");
            syn
        })
        .collect();
    drop(first);
    let mut second = Balanced::node(&weights, true, lbfo_common::VIP_FLAG_ROUTE);
    assert_eq!(
        second.tester.datapath.active_flows().values().sum::<u64>(),
        0,
        "the second node has tracked no flow"
    );
    let mut wrong = Vec::new();
    let mut dropped = 0;
    for (flow, &was) in flows.iter().zip(&backends) {
        match second.send(&flow.established()) {
            (Action::Tx, Some(now)) if now == was => {}
            (Action::Tx, now) => wrong.push((flow.src, flow.sport, was, now)),
            _ => dropped += 1,
        }
    }
    assert_eq!(
        dropped, 0,
        "established packets without a SYN must not be dropped"
    );
    assert!(
        wrong.is_empty(),
        "{} of {} moved flows reached another backend, e.g. {:?}",
        wrong.len(),
        flows.len(),
        &wrong[..wrong.len().min(5)]
    );
    // Now tracked on the second node too: its later packets stay put.
    assert_eq!(
        second.tester.datapath.active_flows().values().sum::<u64>(),
        flows.len() as u64
    );
}

/// An IPv6 VIP is steered by the same path: the flow key holds the 16-byte
/// addresses, only the MACs change, a tracked flow keeps its backend, a VIP
/// not owned is dropped and ports cut off are malformed.
#[test]
fn an_ipv6_vip_is_steered_like_an_ipv4_one() {
    use lbfo_tests::frames::{tcp6_frame, udp6_frame};
    use std::net::Ipv6Addr;
    let vip6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);
    let backend6 = |i: usize| Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x21 + i as u16);
    let mut tester = XdpTester::new().expect("these tests load the XDP program and need root");
    let mut ids = BackendIds::new(lbfo_common::MAX_BACKENDS);
    let configs: Vec<BackendConfig> = (0..3)
        .map(|i| BackendConfig {
            address: backend6(i).into(),
            weight: 1,
            checks: Vec::new(),
        })
        .collect();
    let mut vip = BalancedVip::new(0, &configs, &mut ids).unwrap();
    vip.learn_macs(
        &(0..3)
            .map(|i| (backend6(i).into(), backend_mac(i)))
            .collect(),
    );
    let update = vip.next_table();
    tester.datapath.publish(&update).unwrap();
    let owned = VipState {
        lease_deadline_jiffies: lbfo::clock::lease_deadline(
            tester.datapath.jiffies().unwrap(),
            std::time::Duration::from_secs(3600),
        ),
        mac: NODE_MAC,
        owned: 1,
        mode: VipMode::Balance as u8,
        vip_id: 1,
        table_slot: update.table_slot,
        table_generation: update.generation,
        flags: 0,
    };
    tester.datapath.set_vip(vip6, &owned).unwrap();
    let vip6_not_owned = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x101);
    let not_owned = VipState {
        owned: 0,
        vip_id: 2,
        ..owned
    };
    tester.datapath.set_vip(vip6_not_owned, &not_owned).unwrap();

    let mut seen = [0u32; 3];
    for n in 0..3_000u16 {
        let client = Ipv6Addr::new(0x2001, 0xdb8, 0xc1, 0, 0, 0, 0, n % 300);
        let frame = tcp6_frame(CLIENT_MAC, NODE_MAC, (client, 1024 + n), (vip6, 80), 0x02);
        let out = tester.run(&frame).unwrap();
        assert_eq!(out.action, Action::Tx, "IPv6 SYN {n} to a balanced VIP");
        assert_eq!(&out.output[6..12], &NODE_MAC, "leaves from the node's MAC");
        assert_eq!(
            &out.output[12..],
            &frame[12..],
            "L2 DSR changes only the MACs"
        );
        let dst: [u8; 6] = out.output[0..6].try_into().unwrap();
        let backend = (0..3)
            .find(|&i| backend_mac(i) == dst)
            .unwrap_or_else(|| panic!("frame sent to unknown MAC {dst:02x?}"));
        seen[backend] += 1;
        // The established connection stays on it, drained or not.
        let ack = tcp6_frame(CLIENT_MAC, NODE_MAC, (client, 1024 + n), (vip6, 80), 0x10);
        assert_eq!(
            tester.run(&ack).unwrap().output[0..6],
            dst,
            "flow {n} kept its backend"
        );
    }
    for (i, &s) in seen.iter().enumerate() {
        assert!(
            (900..=1100).contains(&s),
            "backend {i} got {s} of 3000 IPv6 flows, expected about 1000"
        );
    }
    assert_eq!(tester.datapath.active_flows().values().sum::<u64>(), 3_000);
    assert_eq!(tester.datapath.counters(1).unwrap().steered, 6_000);

    let client = Ipv6Addr::new(0x2001, 0xdb8, 0xc1, 0, 0, 0, 0, 7);
    let udp = udp6_frame(CLIENT_MAC, NODE_MAC, (client, 5353), (vip6, 53));
    assert_eq!(
        tester.run(&udp).unwrap().action,
        Action::Tx,
        "UDP is balanced too"
    );
    let elsewhere = tcp6_frame(
        CLIENT_MAC,
        NODE_MAC,
        (client, 1),
        (vip6_not_owned, 80),
        0x02,
    );
    let before = tester.datapath.counters(2).unwrap().ip_dropped_not_owner;
    assert_eq!(
        tester.run(&elsewhere).unwrap().action,
        Action::Drop,
        "VIP not owned"
    );
    assert_eq!(
        tester.datapath.counters(2).unwrap().ip_dropped_not_owner,
        before + 1
    );
    // Every truncation inside the IPv6 header or the ports is malformed and passed.
    let syn = tcp6_frame(CLIENT_MAC, NODE_MAC, (client, 1), (vip6, 80), 0x02);
    for len in 14..14 + 40 + 4 {
        let before = tester.datapath.counters(0).unwrap().malformed;
        let out = tester.run(&syn[..len]).unwrap();
        assert_eq!(out.action, Action::Pass, "truncated to {len} bytes");
        assert_eq!(
            tester.datapath.counters(0).unwrap().malformed,
            before + 1,
            "truncated to {len} bytes is malformed"
        );
    }
}
