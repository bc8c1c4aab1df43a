//! Benchmark 1: the XDP program's cost per packet, timed by the kernel in
//! BPF_PROG_TEST_RUN, against an empty `XDP_PASS` program (the floor) timed
//! the same way in the same round.

use std::{fmt::Write as _, net::Ipv4Addr, time::Duration};

use anyhow::{Context as _, Result};
use aya::programs::{TestRun as _, TestRunOptions, Xdp};
use lbfo::{
    balance::{BackendIds, BalancedVip},
    config::BackendConfig,
};
use lbfo_common::{VipMode, VipState};

use super::{Effort, Section, Summary};
use crate::{
    frames::{Arp, tcp_frame},
    xdp_tester::{XdpTester, time_program},
};

const NODE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xc1];
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const OWNED: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const NOT_OWNED: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 101);
const NOT_A_VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const BALANCED: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 102);

/// How a case is timed.
#[derive(Clone, Copy)]
enum Timing {
    /// One BPF_PROG_TEST_RUN with `repeat` runs; the kernel reports the mean.
    Repeated,
    /// Many calls of one run each (median of the kernel's per-call times):
    /// for paths that rewrite the frame, since a repeated run would keep
    /// running on the rewritten frame and measure a different path.
    PerCall,
    /// Per call as above, with a new source port every call, so every
    /// packet is a flow the connection table has not seen.
    PerCallNewFlows,
}

struct Case {
    name: &'static str,
    frame: Vec<u8>,
    timing: Timing,
}

pub fn run(effort: Effort) -> Result<Section> {
    let mut tester = XdpTester::new()?;
    let lease = lbfo::clock::lease_deadline(tester.datapath.jiffies()?, Duration::from_secs(3600));
    let entry = |vip_id, owned| VipState {
        lease_deadline_jiffies: if owned { lease } else { 0 },
        mac: NODE_MAC,
        owned: owned as u8,
        mode: VipMode::Local as u8,
        vip_id,
        ..Default::default()
    };
    tester.datapath.set_vip(OWNED, &entry(1, true))?;
    tester.datapath.set_vip(NOT_OWNED, &entry(2, false))?;
    balance_over_three_backends(&mut tester, lease)?;

    let mut floor_object = aya::Ebpf::load(lbfo::datapath::XDP_OBJECT)?;
    let floor: &mut Xdp = floor_object
        .program_mut("lbfo_pass")
        .context("object has no lbfo_pass")?
        .try_into()?;
    floor.load()?;

    let repeat: u32 = if effort.quick { 10_000 } else { 1_000_000 };
    let calls: usize = if effort.quick { 2_000 } else { 200_000 };
    let cases = [
        Case {
            name: "ARP request for an owned VIP → reply (XDP_TX)",
            frame: Arp::request(CLIENT_MAC, CLIENT, OWNED).frame(),
            timing: Timing::PerCall,
        },
        Case {
            name: "ARP request for a VIP not owned → XDP_DROP",
            frame: Arp::request(CLIENT_MAC, CLIENT, NOT_OWNED).frame(),
            timing: Timing::Repeated,
        },
        Case {
            name: "IPv4 TCP to a non-VIP → XDP_PASS",
            frame: tcp_frame(CLIENT_MAC, NODE_MAC, (CLIENT, 40000), (NOT_A_VIP, 80), 0x02),
            timing: Timing::Repeated,
        },
        Case {
            name: "IPv4 TCP to an owned VIP → XDP_PASS",
            frame: tcp_frame(CLIENT_MAC, NODE_MAC, (CLIENT, 40000), (OWNED, 80), 0x02),
            timing: Timing::Repeated,
        },
        Case {
            name: "TCP to a balanced VIP, tracked flow → backend (XDP_TX)",
            frame: tcp_frame(CLIENT_MAC, NODE_MAC, (CLIENT, 40001), (BALANCED, 80), 0x10),
            timing: Timing::Repeated,
        },
        Case {
            name: "TCP SYN to a balanced VIP, new flow → backend (XDP_TX)",
            frame: tcp_frame(CLIENT_MAC, NODE_MAC, (CLIENT, 1024), (BALANCED, 80), 0x02),
            timing: Timing::PerCallNewFlows,
        },
    ];

    let mut table = String::new();
    let _ = writeln!(
        table,
        "| path | timing | lbfo ns/packet | floor ns/packet | ratio to floor |"
    );
    let _ = writeln!(table, "|---|---|---|---|---|");
    for case in &cases {
        let mut ratios = Vec::new();
        let mut lbfo_ns = Vec::new();
        let mut floor_ns = Vec::new();
        for _ in 0..effort.rounds {
            let (f, l) = match case.timing {
                Timing::Repeated => (
                    time_program(floor, &case.frame, repeat)?,
                    tester.time(&case.frame, repeat)?,
                ),
                Timing::PerCall => (
                    per_call(floor, &case.frame, calls, false)?,
                    per_call(tester.datapath.program(), &case.frame, calls, false)?,
                ),
                Timing::PerCallNewFlows => (
                    per_call(floor, &case.frame, calls, true)?,
                    per_call(tester.datapath.program(), &case.frame, calls, true)?,
                ),
            };
            let (f, l) = (f.as_secs_f64() * 1e9, l.as_secs_f64() * 1e9);
            floor_ns.push(f);
            lbfo_ns.push(l);
            ratios.push(l / f.max(0.1));
        }
        let timing = match case.timing {
            Timing::Repeated => format!("repeat {repeat}"),
            Timing::PerCall => format!("{calls} calls × repeat 1"),
            Timing::PerCallNewFlows => format!("{calls} calls × repeat 1, a new flow each"),
        };
        let _ = writeln!(
            table,
            "| {} | {timing} | {} | {} | **{}** |",
            case.name,
            Summary::of(&lbfo_ns).fmt(1),
            Summary::of(&floor_ns).fmt(1),
            Summary::of(&ratios).fmt(2)
        );
        println!(
            "xdp cost: {}: ratio {}",
            case.name,
            Summary::of(&ratios).fmt(2)
        );
    }

    let markdown = format!(
        "Command: `cargo xtask bench` (section \"xdp_cost\"). lbfo's compiled program and the floor, an empty `XDP_PASS` program from the same object (`lbfo_pass`), run on the same frame in the same round, {rounds} rounds. Target: ARP reply within 1.5× of the floor.\n\n\
The ARP responder rewrites the frame in place and BPF_PROG_TEST_RUN repeats on the same buffer, so a repeated run would time the rewritten frame, not the reply path; that row is timed per call instead (kernel-measured, one run per call, median of the calls), and the floor beside it is timed the same way. Per-call times include the kernel's fixed per-call overhead (timer reads, softirq disable), which the floor pays too.\n\n{table}",
        rounds = effort.rounds
    );
    Ok(Section {
        title: "1. XDP per-packet cost (BPF_PROG_TEST_RUN)".into(),
        markdown,
    })
}

/// Median of the kernel's time for `calls` single runs; with `new_flows`
/// each call's frame gets another source port (and source address every
/// 60,000 calls), so the connection table never knows it.
fn per_call(program: &Xdp, frame: &[u8], calls: usize, new_flows: bool) -> Result<Duration> {
    let mut frame = frame.to_vec();
    let mut output = vec![0u8; frame.len() + 256];
    let mut times = Vec::with_capacity(calls);
    for call in 0..calls {
        if new_flows {
            // Source port at 34, last byte of the source address at 29.
            let port = 1024 + (call % 60_000) as u16;
            frame[34..36].copy_from_slice(&port.to_be_bytes());
            frame[29] = (call / 60_000) as u8 + 2;
        }
        let r = program.test_run(TestRunOptions {
            data_in: Some(&frame),
            data_out: Some(&mut output),
            repeat: 1,
            ..Default::default()
        })?;
        times.push(r.duration.as_nanos() as f64);
    }
    Ok(Duration::from_nanos(Summary::of(&times).median as u64))
}

/// A balanced VIP over three backends, its table built and published the
/// way the daemon does it.
fn balance_over_three_backends(tester: &mut XdpTester, lease: u64) -> Result<()> {
    let configs: Vec<BackendConfig> = (0..3)
        .map(|i| BackendConfig {
            address: Ipv4Addr::new(192, 0, 2, 21 + i).into(),
            weight: 1,
            checks: Vec::new(),
        })
        .collect();
    let mut balanced =
        BalancedVip::new(0, &configs, &mut BackendIds::new(lbfo_common::MAX_BACKENDS))
            .map_err(anyhow::Error::msg)?;
    balanced.learn_macs(
        &configs
            .iter()
            .enumerate()
            .map(|(id, c)| (c.address, [0x02, 0, 0, 0, 0x01, id as u8]))
            .collect(),
    );
    let update = balanced.next_table();
    tester.datapath.publish(&update)?;
    let vip = VipState {
        lease_deadline_jiffies: lease,
        mac: NODE_MAC,
        owned: 1,
        mode: VipMode::Balance as u8,
        vip_id: 3,
        table_slot: update.table_slot,
        table_generation: update.generation,
        ..Default::default()
    };
    tester.datapath.set_vip(BALANCED, &vip)?;
    Ok(())
}
