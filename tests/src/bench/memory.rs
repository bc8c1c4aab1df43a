//! Benchmark 5: memory of the lbfo daemon against keepalived for the same
//! VIP configuration (one VIP, VRRP version 3, 100 ms advertisements), and
//! of lbfo balancing that VIP over four backends.
//!
//! Resident set size (VmRSS) of every process of each daemon, summed
//! (keepalived runs a parent and a VRRP child), read after the daemon has
//! settled as Master. The XDP program's maps live in kernel memory, in no
//! process's RSS: `bpftool` reports them, and lbfo's figure is the sum of
//! both. keepalived's VRRP uses no kernel tables of its own.

use std::{fmt::Write as _, net::Ipv4Addr, time::Duration};

use anyhow::{Context as _, Result};

use super::{Effort, Section, Summary};
use crate::{
    bpftool::{MapInfo, program_maps},
    keepalived::{Keepalived, KeepalivedConfig},
    lab::{Lab, wait_for},
    node::LbfoNode,
};

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no VmRSS for {pid}"))
}

/// The process and all its descendants.
fn tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let children =
            std::fs::read_to_string(format!("/proc/{}/task/{}/children", all[i], all[i]))
                .unwrap_or_default();
        all.extend(
            children
                .split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok()),
        );
        i += 1;
    }
    all
}

/// RSS of a process tree, skipping the `ip netns exec` wrapper if it is still there.
fn tree_rss_kib(pid: u32, name: &str) -> Result<u64> {
    let mut total = 0;
    for p in tree(pid) {
        let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
        if comm.trim() == name {
            total += rss_kib(p)?;
        }
    }
    Ok(total)
}

/// One elected VIP; `backends` balanced over, if any.
fn lbfo_config(backends: &[Ipv4Addr]) -> String {
    let mut text = "interface = \"eth0\"\nxdp_mode = \"native\"\n\n[[vip]]\nname = \"web\"\naddress = \"192.0.2.100/24\"\nvrid = 51\npriority = 150\nadvert_interval_ms = 100\n".to_string();
    if !backends.is_empty() {
        text.push_str("mode = \"balance\"\n");
        for b in backends {
            text.push_str(&format!("[[vip.backend]]\naddress = \"{b}\"\n"));
        }
    }
    text
}

/// One round in one lab: lbfo without balancing, lbfo balancing over four
/// backend hosts (their MACs learnt, so its table is built), keepalived.
struct Round {
    /// RSS in KiB and maps, without and with balancing.
    lbfo: [(u64, Vec<MapInfo>); 2],
    keepalived_kib: u64,
}

fn measure() -> Result<Round> {
    let mut lab = Lab::new()?;
    let n1 = lab.add_host("n1", Ipv4Addr::new(192, 0, 2, 11))?;
    let n2 = lab.add_host("n2", Ipv4Addr::new(192, 0, 2, 12))?;
    let n3 = lab.add_host("n3", Ipv4Addr::new(192, 0, 2, 13))?;
    let backends: Vec<Ipv4Addr> = (21..25).map(|i| Ipv4Addr::new(192, 0, 2, i)).collect();
    for (i, b) in backends.iter().enumerate() {
        lab.add_host(&format!("b{i}"), *b)?;
    }
    let plain = LbfoNode::start_logging(&mut lab, &n1, &lbfo_config(&[]), "info")?;
    let keepalived = Keepalived::start(
        &mut lab,
        &n2,
        &KeepalivedConfig::new(52, 150, Duration::from_millis(100), "192.0.2.101/24"),
    )?;
    let balanced = LbfoNode::start_logging(
        &mut lab,
        &n3,
        &lbfo_config(&backends)
            .replace("vrid = 51", "vrid = 53")
            .replace("192.0.2.100/", "192.0.2.102/"),
        "info",
    )?;
    wait_for(Duration::from_secs(5), "all three to be Master", || {
        Ok(plain.status()?.vips[0].state == "master"
            && balanced.status()?.vips[0].state == "master"
            && keepalived.is_master()?)
    })?;
    wait_for(Duration::from_secs(5), "the backends' MACs", || {
        Ok(balanced.status()?.vips[0]
            .backends
            .iter()
            .all(|b| b.accepting_new_flows))
    })?;
    std::thread::sleep(Duration::from_millis(500));
    let lbfo = |node: &LbfoNode| -> Result<(u64, Vec<MapInfo>)> {
        Ok((
            tree_rss_kib(node.pid, "lbfo")?,
            program_maps(node.status()?.xdp_prog_id)?,
        ))
    };
    Ok(Round {
        lbfo: [lbfo(&plain)?, lbfo(&balanced)?],
        keepalived_kib: tree_rss_kib(keepalived.pid, "keepalived")?,
    })
}

const MIB: f64 = 1024.0 * 1024.0;

fn map_mib(maps: &[MapInfo]) -> f64 {
    maps.iter().map(|m| m.bytes_memlock).sum::<u64>() as f64 / MIB
}

pub fn run(effort: Effort) -> Result<Section> {
    let rounds = if effort.quick { 1 } else { effort.rounds };
    let mut keepalived = Vec::new();
    // Per configuration: RSS, maps, RSS + maps (MiB), sum / keepalived.
    let mut lbfo: [[Vec<f64>; 4]; 2] = Default::default();
    let mut last_maps = Vec::new();
    for _ in 0..rounds {
        let round = measure()?;
        let k = round.keepalived_kib as f64 / 1024.0;
        keepalived.push(k);
        for (samples, (rss_kib, maps)) in lbfo.iter_mut().zip(&round.lbfo) {
            let rss = *rss_kib as f64 / 1024.0;
            let maps = map_mib(maps);
            samples[0].push(rss);
            samples[1].push(maps);
            samples[2].push(rss + maps);
            samples[3].push((rss + maps) / k);
        }
        last_maps = round.lbfo.map(|(_, maps)| maps).to_vec();
    }
    let k = Summary::of(&keepalived);
    let row = |samples: &[Vec<f64>; 4]| samples.clone().map(|s| Summary::of(&s));
    let [plain, balanced] = [row(&lbfo[0]), row(&lbfo[1])];
    println!(
        "memory: lbfo {} MiB + maps {} MiB = {} MiB ({} of keepalived's {} MiB); balancing: {} MiB + {} MiB",
        plain[0].fmt(1),
        plain[1].fmt(2),
        plain[2].fmt(1),
        plain[3].fmt(2),
        k.fmt(1),
        balanced[0].fmt(1),
        balanced[1].fmt(2),
    );
    let met = plain[3].max <= 1.0;
    let mut table = String::new();
    let _ = writeln!(
        table,
        "| daemon | resident MiB | eBPF maps MiB | sum MiB | sum / keepalived |"
    );
    let _ = writeln!(table, "|---|---|---|---|---|");
    let _ = writeln!(
        table,
        "| keepalived (all processes) | {} | – | {} | 1.00 |",
        k.fmt(1),
        k.fmt(1)
    );
    for (name, s) in [
        ("lbfo, no balancing", &plain),
        ("lbfo, balancing over 4 backends", &balanced),
    ] {
        let _ = writeln!(
            table,
            "| {name} | {} | {} | {} | **{}** |",
            s[0].fmt(1),
            s[1].fmt(2),
            s[2].fmt(1),
            s[3].fmt(2)
        );
    }
    let mut per_map = String::new();
    let _ = writeln!(
        per_map,
        "| map | entries, no balancing | KiB | entries, balancing | KiB |"
    );
    let _ = writeln!(per_map, "|---|---|---|---|---|");
    if let [plain_maps, balanced_maps] = &last_maps[..] {
        for m in plain_maps {
            let b = balanced_maps.iter().find(|b| b.name == m.name);
            let _ = writeln!(
                per_map,
                "| `{}` ({}) | {} | {:.1} | {} | {:.1} |",
                m.name,
                m.kind,
                m.max_entries,
                m.bytes_memlock as f64 / 1024.0,
                b.map_or(0, |b| b.max_entries),
                b.map_or(0.0, |b| b.bytes_memlock as f64 / 1024.0),
            );
        }
    }
    Ok(Section {
        title: "5. Resident memory, lbfo vs keepalived".into(),
        markdown: format!(
            "Command: `cargo xtask bench` (section \"memory\"). One elected VIP each (VRRP version 3, 100 ms advertisements), all Master in the same lab, {rounds} fresh starts; lbfo once without balancing and once balancing the VIP over four backend hosts of the lab (their MACs learnt, the table built). VmRSS summed over each daemon's processes (keepalived: parent and VRRP child). lbfo's eBPF maps are kernel memory, outside any process's RSS, so they are added to its figure: `bytes_memlock` of each map as `bpftool` reports it. The maps are sized from the configuration at start-up (docs/CONFIGURATION.md, \"Map sizes\"): without balancing only the VIP map and its counters; with one balanced VIP, Maglev tables for it and 2 more (1 MiB each), 4 + 256 backend ids and a connection table of 262,144 flows (22 MiB).\n\n\
Target: lbfo's resident memory plus its maps at or below keepalived's resident memory, one VRRP VIP without balancing: **{}** (largest ratio of the rounds {:.2}). keepalived balances with IPVS, which this kernel lacks, so the balancing row is set against its VRRP-only figure: a scale, not a like-for-like comparison.\n\n{table}\n\
The maps of the last round (two possible CPUs; per-CPU maps grow with them):\n\n{per_map}",
            if met { "met" } else { "not met" },
            plain[3].max,
        ),
    })
}
