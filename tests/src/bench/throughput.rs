//! Benchmark 6: HTTP requests per second through a balanced VIP against
//! straight to a backend, with `wrk` (Debian package) as the client.
//!
//! The lab: a client, one lbfo node owning the VIP in balance mode, and
//! three backends set up for direct server return, each running the lab's
//! HTTP server. Rounds alternate between the baseline (wrk straight at
//! backend b1) and the VIP with b1 as its only backend (the cost of the
//! extra XDP hop), then the VIP over all three backends.

use std::{fmt::Write as _, net::Ipv4Addr, time::Duration};

use anyhow::{Context as _, Result, bail};

use super::{Effort, Section, Summary};
use crate::{
    lab::{self, Host, Lab, ip, netns_exec, wait_for},
    node::{HttpServer, LbfoNode},
};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);

fn lbfo_config(backends: &[Ipv4Addr]) -> String {
    let mut c = "interface = \"eth0\"\nxdp_mode = \"native\"\nlease_ms = 60000\n\n[[vip]]\nname = \"web\"\naddress = \"192.0.2.100/24\"\nmode = \"balance\"\n".to_string();
    for b in backends {
        c.push_str(&format!("\n[[vip.backend]]\naddress = \"{b}\"\n"));
    }
    c
}

/// Requests per second wrk reached against `url` from the client.
fn wrk(client: &Host, url: &str, seconds: u64) -> Result<f64> {
    let out = lab::run(netns_exec(&client.ns, "wrk").args([
        "-t",
        "1",
        "-c",
        "16",
        "-d",
        &format!("{seconds}s"),
        "--timeout",
        "2s",
        url,
    ]))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("Socket errors") && text.contains("timeout") {
        eprintln!("wrk reported socket errors against {url}:\n{text}");
    }
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk output:\n{text}"))
}

struct ThroughputLab {
    _lab: Lab,
    client: Host,
    node: LbfoNode,
    backends: Vec<Ipv4Addr>,
}

fn build() -> Result<ThroughputLab> {
    let mut lab = Lab::new()?;
    let client = lab.add_host("client", Ipv4Addr::new(192, 0, 2, 2))?;
    // Finished TCP checksums on the wire (see docs/BALANCING.md, Limits).
    lab::run(netns_exec(&client.ns, "ethtool").args(["-K", "eth0", "tx", "off"]))?;
    let n1 = lab.add_host("n1", Ipv4Addr::new(192, 0, 2, 11))?;
    let mut backends = Vec::new();
    for i in 1..=3u8 {
        let addr = Ipv4Addr::new(192, 0, 2, 20 + i);
        let b = lab.add_host(&format!("b{i}"), addr)?;
        ip(&b.ns, &["addr", "add", "192.0.2.100/32", "dev", "lo"])?;
        for (key, value) in [("arp_ignore", "1"), ("arp_announce", "2")] {
            lab::run(
                netns_exec(&b.ns, "sysctl")
                    .args(["-qw", &format!("net.ipv4.conf.all.{key}={value}")]),
            )?;
        }
        HttpServer::start_on(&mut lab, &b, &format!("b{i}"), Ipv4Addr::UNSPECIFIED)?;
        backends.push(addr);
    }
    let node = LbfoNode::start(&mut lab, &n1, &lbfo_config(&backends[..1]))?;
    node.own("web")?;
    let lab = ThroughputLab {
        _lab: lab,
        client,
        node,
        backends,
    };
    lab.wait_backends(1)?;
    Ok(lab)
}

impl ThroughputLab {
    /// Switches the VIP to the first `n` backends (SIGHUP reload).
    fn use_backends(&self, n: usize) -> Result<()> {
        self.node.reload_with(&lbfo_config(&self.backends[..n]))?;
        self.wait_backends(n)
    }

    fn wait_backends(&self, n: usize) -> Result<()> {
        wait_for(Duration::from_secs(5), "backends to take new flows", || {
            let status = self.node.status()?;
            let b = &status.vips[0].backends;
            Ok(b.len() == n && b.iter().all(|b| b.accepting_new_flows))
        })
        .map(drop)
    }
}

pub fn run(effort: Effort) -> Result<Section> {
    let rounds = if effort.quick { 1 } else { effort.rounds };
    let seconds = if effort.quick { 1 } else { 4 };
    let lab = build()?;
    let (mut direct, mut one, mut three) = (Vec::new(), Vec::new(), Vec::new());
    let (mut one_ratio, mut three_ratio) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let d = wrk(&lab.client, "http://192.0.2.21:8080/", seconds)?;
        lab.use_backends(1)?;
        let o = wrk(&lab.client, &format!("http://{VIP}:8080/"), seconds)?;
        lab.use_backends(3)?;
        let t = wrk(&lab.client, &format!("http://{VIP}:8080/"), seconds)?;
        if d <= 0.0 {
            bail!("no requests went through straight to the backend");
        }
        direct.push(d);
        one.push(o);
        three.push(t);
        one_ratio.push(o / d);
        three_ratio.push(t / d);
    }
    let status = lab.node.status()?;
    let steered = status.vips[0].counters.steered;
    let mut table = String::new();
    let _ = writeln!(table, "| path | requests/s | ratio to direct |");
    let _ = writeln!(table, "|---|---|---|");
    let _ = writeln!(
        table,
        "| straight to backend b1 (baseline) | {} | 1.00 |",
        Summary::of(&direct).fmt(0)
    );
    let _ = writeln!(
        table,
        "| through the VIP, b1 its only backend | {} | **{}** |",
        Summary::of(&one).fmt(0),
        Summary::of(&one_ratio).fmt(2)
    );
    let _ = writeln!(
        table,
        "| through the VIP, b1-b3 | {} | **{}** |",
        Summary::of(&three).fmt(0),
        Summary::of(&three_ratio).fmt(2)
    );
    println!(
        "throughput: direct {} req/s, via VIP (1 backend) ratio {}, (3 backends) ratio {}",
        Summary::of(&direct).fmt(0),
        Summary::of(&one_ratio).fmt(2),
        Summary::of(&three_ratio).fmt(2)
    );
    Ok(Section {
        title: "6. Requests per second through the VIP vs straight to a backend".into(),
        markdown: format!(
            "Command: `cargo xtask bench` (section \"throughput\"). `wrk -t1 -c16 -d{seconds}s` from the client namespace; {rounds} rounds, each round direct, then via the VIP with one backend, then with three (switched by SIGHUP reload). The owner steered {steered} packets in all. Everything shares one 2-core machine: the client, the lbfo node and the backends compete for the same CPUs, so three backends add no capacity here; the one-backend row is the cost of the XDP hop (requests go through lbfo, answers go straight back to the client).\n\n{table}"
        ),
    })
}
