//! Benchmark 5: resident memory of the lbfo daemon against keepalived for
//! the same VIP configuration (one VIP, VRRP version 3, one HTTP check
//! against a server in the lab).
//!
//! Resident set size (VmRSS) of every process of each daemon, summed
//! (keepalived runs a parent and a VRRP child), read after the daemon has
//! settled as Master. The XDP program's maps live in kernel memory and are
//! listed separately: they are not in any process's RSS.

use std::{fmt::Write as _, net::Ipv4Addr, time::Duration};

use anyhow::{Context as _, Result};

use super::{Effort, Section, Summary};
use crate::{
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

/// Kernel memory of an XDP program's maps, from `bpftool` (Debian package bpftool).
fn map_bytes(prog_id: u32) -> Result<u64> {
    let out = std::process::Command::new("bpftool")
        .args(["prog", "show", "id", &prog_id.to_string(), "-j"])
        .output()
        .context("running bpftool")?;
    let prog: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("bpftool prog show")?;
    let mut total = 0;
    for id in prog["map_ids"].as_array().context("no map_ids")? {
        let out = std::process::Command::new("bpftool")
            .args(["map", "show", "id", &id.to_string(), "-j"])
            .output()?;
        let map: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        total += map["bytes_memlock"].as_u64().unwrap_or(0);
    }
    Ok(total)
}

fn measure() -> Result<(f64, f64, f64)> {
    let mut lab = Lab::new()?;
    let n1 = lab.add_host("n1", Ipv4Addr::new(192, 0, 2, 11))?;
    let n2 = lab.add_host("n2", Ipv4Addr::new(192, 0, 2, 12))?;
    let lbfo = LbfoNode::start(
        &mut lab,
        &n1,
        "interface = \"eth0\"\nxdp_mode = \"native\"\n\n[[vip]]\nname = \"web\"\naddress = \"192.0.2.100/24\"\nvrid = 51\npriority = 150\nadvert_interval_ms = 100\n",
    )?;
    let keepalived = Keepalived::start(
        &mut lab,
        &n2,
        &KeepalivedConfig::new(52, 150, Duration::from_millis(100), "192.0.2.101/24"),
    )?;
    wait_for(Duration::from_secs(5), "both to be Master", || {
        Ok(lbfo.status()?.vips[0].state == "master" && keepalived.is_master()?)
    })?;
    std::thread::sleep(Duration::from_millis(500));
    Ok((
        tree_rss_kib(lbfo.pid, "lbfo")? as f64,
        tree_rss_kib(keepalived.pid, "keepalived")? as f64,
        map_bytes(lbfo.status()?.xdp_prog_id)? as f64,
    ))
}

pub fn run(effort: Effort) -> Result<Section> {
    let rounds = if effort.quick { 1 } else { effort.rounds };
    let (mut lbfo, mut keepalived, mut ratio, mut maps) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (l, k, m) = measure()?;
        lbfo.push(l / 1024.0);
        keepalived.push(k / 1024.0);
        ratio.push(l / k);
        maps.push(m / 1024.0 / 1024.0);
    }
    let (l, k, r) = (
        Summary::of(&lbfo),
        Summary::of(&keepalived),
        Summary::of(&ratio),
    );
    println!("memory: lbfo {} MiB, keepalived {} MiB", l.fmt(1), k.fmt(1));
    let mut table = String::new();
    let _ = writeln!(table, "| daemon | resident MiB | ratio to keepalived |");
    let _ = writeln!(table, "|---|---|---|");
    let _ = writeln!(
        table,
        "| keepalived (all processes) | {} | 1.00 |",
        k.fmt(1)
    );
    let _ = writeln!(table, "| lbfo | {} | **{}** |", l.fmt(1), r.fmt(2));
    let maps = Summary::of(&maps).median;
    Ok(Section {
        title: "5. Resident memory, lbfo vs keepalived".into(),
        markdown: format!(
            "Command: `cargo xtask bench` (section \"memory\"). One elected VIP each (VRRP version 3, 100 ms advertisements), both Master in the same lab, {rounds} fresh starts. VmRSS summed over each daemon's processes (keepalived: parent and VRRP child).\n\n\
lbfo's eBPF maps are kernel memory, outside any process's RSS: {maps:.1} MiB as `bpftool` reports them, almost all of it the preallocated Maglev tables (16 balanced VIPs × 2 tables × 65,537 slots) and the connection table (262,144 flows), allocated whether balancing is used or not.\n\n{table}"
        ),
    })
}
