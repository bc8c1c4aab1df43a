//! Benchmark 8: route VIPs over BGP with real BIRD 2 (the lab of
//! `crate::routing`: a router with an eBGP session to each of three lbfo
//! nodes, ECMP over them, three DSR backends).
//!
//! - How long after `kill -9` of a node's lbfo the router's route loses
//!   that node's nexthop, against the routing pipeline's own floor: the
//!   same node's VIP address deleted by hand from the route device
//!   (`ip addr del`), which BIRD sees the same way.
//! - Of kept-alive HTTP/1.1 connections (a request every 50 ms), how many
//!   keep working, on the same backend, when the node carrying some of
//!   them is killed (target: all).
//! - How new connections spread over the nodes and the backends.
//!
//! The machine has 2 cores and every node, router and backend is a
//! namespace on it: this shows that flows spread and survive, not how much
//! a fleet carries.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{Effort, Section, Summary};
use crate::{
    keepalive::KeptAlive,
    lab::{ip, wait_for},
    routing::{RouteLab, VIP},
};

const NODES: usize = 3;
const WEIGHTS: [u32; 3] = [1, 2, 1];
const CONNECTIONS: usize = 24;
const REQUEST_EVERY: Duration = Duration::from_millis(50);

/// Waits for the router to have every node but `gone`; returns the time
/// since `since`.
fn dropped_after(l: &RouteLab, gone: usize, since: Instant) -> Result<Duration> {
    let rest: Vec<usize> = (0..NODES).filter(|&n| n != gone).collect();
    l.wait_nexthops(&rest, Duration::from_secs(5))?;
    Ok(since.elapsed())
}

/// Starts node `i` again and waits until the router has every node.
fn restore(l: &mut RouteLab, i: usize) -> Result<()> {
    if l.nodes[i].is_some() {
        l.kill9(i)?;
    }
    l.start_node(i)?;
    let all: Vec<usize> = (0..NODES).collect();
    l.wait_nexthops(&all, Duration::from_secs(10))?;
    Ok(())
}

struct Round {
    kill_ms: f64,
    floor_ms: f64,
    intact: usize,
    moved: u64,
}

fn round(l: &mut RouteLab, victim: usize) -> Result<Round> {
    // The floor: the address removed by hand, as lbfo itself withdraws.
    let since = Instant::now();
    ip(
        &l.hosts[victim].ns,
        &["addr", "del", &format!("{VIP}/32"), "dev", "lbfo0"],
    )?;
    let floor = dropped_after(l, victim, since)?;
    restore(l, victim)?;

    let kept = KeptAlive::open(
        &l.client.ns,
        l.target(),
        CONNECTIONS,
        REQUEST_EVERY,
        Duration::from_secs(30),
    )?;
    let moved = l.tracked_flows(victim)?;
    // Measured from the signal, not from the reaping of the process.
    let since = Instant::now();
    l.node(victim).kill9()?;
    let kill = dropped_after(l, victim, since)?;
    l.kill9(victim)?;
    // The moved connections run on the other nodes for a while.
    std::thread::sleep(Duration::from_secs(1));
    let connections = kept.finish();
    let intact = connections.iter().filter(|c| c.intact()).count();
    for c in connections.iter().filter(|c| !c.intact()) {
        println!(
            "route_scaling: connection from port {} broke: {c:?}",
            c.port
        );
    }
    restore(l, victim)?;
    Ok(Round {
        kill_ms: kill.as_secs_f64() * 1000.0,
        floor_ms: floor.as_secs_f64() * 1000.0,
        intact,
        moved,
    })
}

/// New connections: by node (new flows in each node's XDP) and by backend.
fn spread(l: &RouteLab, count: usize) -> Result<(Vec<u64>, BTreeMap<String, usize>)> {
    let before: Vec<u64> = (0..NODES).map(|i| l.new_flows(i)).collect::<Result<_>>()?;
    let served = l.curl_many(count)?;
    let after: Vec<u64> = (0..NODES).map(|i| l.new_flows(i)).collect::<Result<_>>()?;
    if let Some(failed) = served.get("FAILED") {
        bail!("{failed} of {count} new connections failed: {served:?}");
    }
    Ok((
        after.iter().zip(&before).map(|(a, b)| a - b).collect(),
        served,
    ))
}

pub fn run(effort: Effort) -> Result<Section> {
    let rounds = if effort.quick {
        1
    } else {
        effort.rounds.min(5)
    };
    let new_connections = if effort.quick { 90 } else { 900 };
    let mut l = RouteLab::new(NODES, &WEIGHTS)?;
    for i in 0..NODES {
        l.start_node(i)?;
    }
    let all: Vec<usize> = (0..NODES).collect();
    l.wait_nexthops(&all, Duration::from_secs(10))
        .context("every node announced")?;
    wait_for(Duration::from_secs(2), "a first connection", || {
        Ok(!l.curl_many(1)?.contains_key("FAILED"))
    })?;

    let (per_node, served) = spread(&l, new_connections)?;
    let mut kills = Vec::new();
    let mut floors = Vec::new();
    let (mut intact, mut total, mut moved) = (0, 0, 0);
    for r in 0..rounds {
        let result = round(&mut l, r % NODES)?;
        println!(
            "route_scaling round {r}: kill -9 → nexthop gone {:.1} ms (address deleted by hand: {:.1} ms); {} of {CONNECTIONS} connections intact, {} through the killed node",
            result.kill_ms, result.floor_ms, result.intact, result.moved
        );
        kills.push(result.kill_ms);
        floors.push(result.floor_ms);
        intact += result.intact;
        total += CONNECTIONS;
        moved += result.moved;
    }
    let (k, f) = (Summary::of(&kills), Summary::of(&floors));

    let mut table = String::new();
    let _ = writeln!(table, "| measure | lbfo | baseline | lbfo / baseline |");
    let _ = writeln!(table, "|---|---|---|---|");
    let _ = writeln!(
        table,
        "| router drops the node's nexthop, ms after | `kill -9` of lbfo: {} | the address deleted by hand: {} | **{:.2}** |",
        k.fmt(1),
        f.fmt(1),
        k.median / f.median.max(0.1)
    );
    let _ = writeln!(
        table,
        "| kept-alive connections intact (same backend, no error) across the kill | {intact} of {total} | all {total} (target) | **{:.2}** |",
        intact as f64 / total as f64
    );
    let sum: u64 = per_node.iter().sum();
    for (i, n) in per_node.iter().enumerate() {
        let share = *n as f64 / sum.max(1) as f64;
        let _ = writeln!(
            table,
            "| new connections through n{} | {n} of {sum} ({:.1}%) | equal share {:.1}% | **{:.2}** |",
            i + 1,
            share * 100.0,
            100.0 / NODES as f64,
            share * NODES as f64
        );
    }
    let weight_sum: u32 = WEIGHTS.iter().sum();
    for (i, w) in WEIGHTS.iter().enumerate() {
        let name = format!("b{}", i + 1);
        let got = served.get(&name).copied().unwrap_or(0);
        let share = got as f64 / new_connections as f64;
        let expected = *w as f64 / weight_sum as f64;
        let _ = writeln!(
            table,
            "| new connections served by {name} (weight {w}) | {got} ({:.1}%) | by weight {:.1}% | **{:.2}** |",
            share * 100.0,
            expected * 100.0,
            share / expected
        );
    }
    println!("route_scaling: {per_node:?} new flows per node, {served:?} per backend");
    let markdown = format!(
        "Command: `cargo xtask bench` (section \"route_scaling\"). One lab (`tests/src/routing.rs`): a client, a router running BIRD 2 with an eBGP session to each of {NODES} lbfo nodes (`merge paths on`, `fib_multipath_hash_policy = 1`), a BIRD on every node exporting the route device `lbfo0`, and three DSR backends weighted 1:2:1; the route VIP is balanced. {rounds} round(s), each on the next node: first the node's VIP address is deleted from `lbfo0` by hand (the floor: BIRD, BGP and the router's kernel route, with nothing of lbfo), then, after the node is back, {CONNECTIONS} kept-alive HTTP/1.1 connections are opened (a request every 50 ms each) and the node's lbfo is killed with `kill -9`; the connections run on for a second on the other nodes. Times are from the signal (or the `ip addr del`) to the router's `ip route` showing the nexthop gone, polled with `ip`, which takes a few milliseconds a call; the baseline also includes starting the `ip` that deletes the address, so lbfo's time can come out below it. A connection is intact if every request was answered by the backend that answered its first. The {} connections carried by the killed nodes had to move to another node, which had never seen their SYN. The spread: {new_connections} new connections with curl before the rounds, counted by each node's XDP (new flows) and by the backend that answered.\n\n\
The machine has 2 cores and every host is a network namespace on it: the spread rows show that ECMP and Maglev divide the work as they should, not what a fleet of nodes can carry.\n\n{table}",
        moved
    );
    Ok(Section {
        title: "8. Route VIPs over BGP: node loss, surviving connections, spread over nodes".into(),
        markdown,
    })
}
