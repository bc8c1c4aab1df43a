//! `cargo xtask demo`: the main job on a built-in default, in a namespace lab.
//!
//! A client and two lbfo nodes share one Ethernet segment. The demo shows a
//! client's ARP answer for the VIP following ownership from node to node,
//! moved by gratuitous ARP alone, and a killed owner falling silent when its
//! lease runs out. Everything is removed at the end.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use lbfo::arp::format_mac;

use crate::{
    lab::{Lab, arping, neighbour_mac, netns_exec, run, wait_for},
    node::{LbfoNode, basic_config},
};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const LEASE_MS: u64 = 1000;

fn step(text: &str) {
    println!("\n==> {text}");
}

pub fn run_demo() -> Result<()> {
    let (mut lab, client, nodes) =
        Lab::with_client_and_nodes(2).context("creating the namespace lab (needs root)")?;
    let (n1, n2) = (nodes[0].clone(), nodes[1].clone());
    println!(
        "lab: client 192.0.2.2, node n1 192.0.2.11 ({}), node n2 192.0.2.12 ({}), VIP {VIP}",
        format_mac(&n1.mac),
        format_mac(&n2.mac)
    );

    let config = basic_config("web", "192.0.2.100/24", LEASE_MS);
    println!("\nconfig on both nodes:\n{config}");
    let node1 = LbfoNode::start(&mut lab, &n1, &config)?;
    let node2 = LbfoNode::start(&mut lab, &n2, &config)?;

    let who_answers = || -> Result<String> {
        let macs = arping(&client.ns, "eth0", VIP, 2, Duration::from_millis(100))?;
        Ok(match macs.first() {
            None => "nobody answers".into(),
            Some(mac) if *mac == n1.mac => format!("n1 answers ({})", format_mac(mac)),
            Some(mac) if *mac == n2.mac => format!("n2 answers ({})", format_mac(mac)),
            Some(mac) => format!("unknown MAC {} answers", format_mac(mac)),
        })
    };

    step("both nodes start on standby: XDP drops ARP for the VIP");
    println!("client arping {VIP}: {}", who_answers()?);

    step("lbfo own web (on n1)");
    node1.own("web")?;
    println!("client arping {VIP}: {}", who_answers()?);
    run(netns_exec(&client.ns, "ping").args(["-c", "1", "-W", "1", &VIP.to_string()]))?;
    println!(
        "client ping {VIP}: ok; its neighbour table says {}",
        fmt_neigh(neighbour_mac(&client.ns, "eth0", VIP)?)
    );
    print!(
        "\n$ lbfo status   (on n1)\n{}",
        String::from_utf8_lossy(&node1.cli(&["status"])?.stdout)
    );

    step(
        "lbfo release web (on n1), lbfo own web (on n2): the client moves by gratuitous ARP alone",
    );
    node1.release("web")?;
    let start = Instant::now();
    node2.own("web")?;
    let took = wait_for(
        Duration::from_secs(2),
        "the client's neighbour entry to move",
        || Ok(neighbour_mac(&client.ns, "eth0", VIP)? == Some(n2.mac)),
    )?;
    println!(
        "client neighbour entry moved to n2 {:.0} ms after `lbfo own` (without the client sending anything)",
        took.max(start.elapsed()).as_secs_f64() * 1000.0
    );
    println!("client arping {VIP}: {}", who_answers()?);

    step(&format!(
        "kill -9 the daemon on n2: its lease ({LEASE_MS} ms) runs out and XDP falls silent"
    ));
    node2.kill9()?;
    let killed = Instant::now();
    let silent = wait_for(
        Duration::from_millis(LEASE_MS * 3),
        "the VIP to fall silent",
        || Ok(arping(&client.ns, "eth0", VIP, 1, Duration::from_millis(50))?.is_empty()),
    )?;
    println!(
        "no ARP answer for {VIP} {:.0} ms after the kill (lease {LEASE_MS} ms)",
        silent.max(killed.elapsed()).as_secs_f64() * 1000.0
    );

    step("lbfo own web (on n1) again");
    node1.own("web")?;
    println!("client arping {VIP}: {}", who_answers()?);

    step("cleaning up: stopping lbfo, removing the namespaces");
    node1.stop(&mut lab)?;
    drop(lab);
    println!("done");
    Ok(())
}

fn fmt_neigh(mac: Option<[u8; 6]>) -> String {
    mac.map(|m| format_mac(&m))
        .unwrap_or_else(|| "nothing".into())
}
