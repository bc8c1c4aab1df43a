//! `cargo xtask demo`: lbfo's own story, in a namespace lab, in seconds.
//!
//! A client and two lbfo nodes share one Ethernet segment. The nodes elect
//! a Master for the VIP by VRRP, and each checks its own web server, which
//! also serves the VIP. The client fetches from the VIP in a loop while the
//! Master's web server fails: its check fails, the Backup takes over and
//! moves the client with gratuitous ARP. Then the Master's daemon is killed
//! with SIGKILL and its XDP lease makes its node fall silent.
//!
//! Every number printed is measured; a step that does not happen, or takes
//! longer than the configured timers allow, stops the demo with an error.
//! The lab is removed at the end, also on failure.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use lbfo::arp::format_mac;

use crate::{
    fetcher::{FetchLog, Fetcher},
    lab::{Host, Lab, arping, neighbour_mac, wait_for},
    node::{HttpServer, LbfoNode, vrrp_config},
    prober::wall_clock,
    rfc5798::{master_down_interval, skew_time},
};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const VIP_CIDR: &str = "192.0.2.100/24";
const VRID: u8 = 51;
const PRIORITIES: [u8; 2] = [150, 100];
const ADVERT: Duration = Duration::from_millis(100);
const CHECK_INTERVAL: Duration = Duration::from_millis(100);
const FALL: u32 = 2;
const RISE: u32 = 2;
const FETCH_INTERVAL: Duration = Duration::from_millis(10);
const FETCH_TIMEOUT: Duration = Duration::from_millis(100);
/// Scheduling, ARP and fetch-interval slack on a busy 2-core machine.
const SLACK: Duration = Duration::from_millis(150);

fn step(text: &str) {
    println!("\n==> {text}");
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

/// Milliseconds from `since` to `at`, both [`wall_clock`] seconds.
fn ms_after(at: f64, since: f64) -> String {
    format!("{:.0} ms", (at - since) * 1000.0)
}

pub fn run_demo() -> Result<()> {
    let (mut lab, client, hosts) =
        Lab::with_client_and_nodes(2).context("creating the namespace lab (needs root)")?;
    let name_of = |mac: [u8; 6]| {
        hosts.iter().find(|h| h.mac == mac).map_or_else(
            || format!("unknown {}", format_mac(&mac)),
            |h| h.name.clone(),
        )
    };
    let neighbour = || -> Result<String> {
        Ok(match neighbour_mac(&client.ns, "eth0", VIP)? {
            Some(mac) => format!("{} ({})", format_mac(&mac), name_of(mac)),
            None => "none".into(),
        })
    };
    let arp_answers = || -> Result<String> {
        let mut macs = arping(&client.ns, "eth0", VIP, 3, Duration::from_millis(50))?;
        macs.sort();
        macs.dedup();
        let names: Vec<String> = macs.into_iter().map(name_of).collect();
        Ok(if names.is_empty() {
            "nobody".into()
        } else {
            names.join(" and ")
        })
    };
    println!(
        "lab: client {}, n1 {} ({}), n2 {} ({}), VIP {VIP}",
        client.addr,
        hosts[0].addr,
        format_mac(&hosts[0].mac),
        hosts[1].addr,
        format_mac(&hosts[1].mac)
    );

    step("n1 (priority 150) and n2 (priority 100) run lbfo; each checks its own web server");
    let servers = hosts
        .iter()
        .map(|h| HttpServer::start_on(&mut lab, h, &h.name, Ipv4Addr::UNSPECIFIED))
        .collect::<Result<Vec<_>>>()?;
    let check = format!(
        "\n[[vip.check]]\nkind = \"http\"\nurl = \"http://127.0.0.1:8080/health\"\ninterval_ms = {}\ntimeout_ms = 50\nrise = {RISE}\nfall = {FALL}\n",
        CHECK_INTERVAL.as_millis()
    );
    let configs = PRIORITIES.map(|p| vrrp_config(VIP_CIDR, VRID, p, ADVERT, &check));
    println!("config on n1 (n2's says priority = 100):\n\n{}", configs[0]);
    let n1 = LbfoNode::start(&mut lab, &hosts[0], &configs[0])?;
    let n2 = LbfoNode::start(&mut lab, &hosts[1], &configs[1])?;
    // Checks start unproven, so the VIP waits in fault for `rise` passes,
    // then as a Backup for Master_Down_Interval before n1 wins.
    n1.wait_state("web", "master", Duration::from_secs(5))?;
    n2.wait_state("web", "backup", Duration::from_secs(2))?;
    println!("VRRP: n1 is Master, n2 is Backup");
    println!("client arping {VIP}: answered by {}", arp_answers()?);

    step(&format!(
        "the client fetches http://{VIP}:8080/ every {}, a new connection each time",
        ms(FETCH_INTERVAL)
    ));
    let fetcher = start_fetcher(&client);
    std::thread::sleep(Duration::from_millis(300));
    let before = neighbour_mac(&client.ns, "eth0", VIP)?;
    if before != Some(hosts[0].mac) {
        bail!(
            "the client's neighbour entry for {VIP} is {}, not n1's MAC",
            neighbour()?
        );
    }
    println!("client's neighbour entry for {VIP}: {}", neighbour()?);

    step(
        "n1's web server fails (HTTP 500): n1's check fails, n2 takes over and sends gratuitous ARP",
    );
    let broke = Instant::now();
    servers[0].set_mode("error");
    n1.wait_state("web", "fault", Duration::from_secs(3))?;
    let n1_fault = broke.elapsed();
    n2.wait_state("web", "master", Duration::from_secs(3))?;
    let n2_master = broke.elapsed();
    let log = settle_on(&client, hosts[1].mac, fetcher)?;
    println!(
        "n1: fault {} after the failure (check fails {FALL} times, every {})",
        ms(n1_fault),
        ms(CHECK_INTERVAL)
    );
    println!(
        "n2: master {} after the failure (n1 sent priority 0; n2 waited its Skew_Time, {})",
        ms(n2_master),
        ms(skew_time(ADVERT, PRIORITIES[1]))
    );
    println!(
        "client's neighbour entry for {VIP}: {} -> {}",
        format_mac(&hosts[0].mac),
        neighbour()?
    );
    println!("client fetches: {}", describe(&log));
    moved_for_good(&log, "n1", "n2")?;
    let bound = (FALL + 1) * CHECK_INTERVAL + skew_time(ADVERT, PRIORITIES[1]);
    let outage = log.outage();
    println!(
        "client-visible outage: {} (the timers allow {}: {} failed checks, one interval to act, Skew_Time)",
        ms(outage),
        ms(bound),
        FALL
    );
    if outage > bound + SLACK {
        bail!(
            "the client-visible outage was {}, more than the {} the timers allow",
            ms(outage),
            ms(bound)
        );
    }
    for node in [&n1, &n2] {
        print!(
            "\n$ lbfo status   (on {})\n{}",
            node.host.name,
            node.cli_ok(&["status"])?
        );
    }

    step("n1's web server recovers: its check passes again and n1 (priority 150) preempts");
    let fixed = Instant::now();
    servers[0].set_mode("ok");
    n1.wait_state("web", "master", Duration::from_secs(5))?;
    let back = fixed.elapsed();
    n2.wait_state("web", "backup", Duration::from_secs(2))?;
    wait_for(
        Duration::from_secs(2),
        "the client's neighbour entry to move back to n1",
        || Ok(neighbour_mac(&client.ns, "eth0", VIP)? == Some(hosts[0].mac)),
    )?;
    println!(
        "n1: master again {} after its server recovered ({RISE} passing checks, then Master_Down_Interval as a Backup); n2: backup",
        ms(back)
    );
    println!("client's neighbour entry for {VIP}: {}", neighbour()?);

    step("kill -9 of lbfo on n1: its XDP lease runs out and n1 falls silent; n2 takes over");
    // A Master's lease lasts its own Master_Down_Interval from its last
    // advertisement, which ends before the Backup's, so the two never overlap.
    let lease = master_down_interval(ADVERT, PRIORITIES[0]);
    let takeover = master_down_interval(ADVERT, PRIORITIES[1]);
    let fetcher = start_fetcher(&client);
    std::thread::sleep(Duration::from_millis(300));
    let killed_at = wall_clock();
    let killed = Instant::now();
    n1.kill9()?;
    n2.wait_state("web", "master", takeover + SLACK * 3)?;
    let n2_master = killed.elapsed();
    let log = settle_on(&client, hosts[1].mac, fetcher)?;
    moved_for_good(&log, "n1", "n2")?;
    let last_n1 = log
        .last("n1")
        .context("n1 answered no fetch before the kill")?;
    if last_n1 - killed_at > (lease + SLACK).as_secs_f64() {
        bail!(
            "n1 still answered a fetch sent {} after the kill, past its lease of {}",
            ms_after(last_n1, killed_at),
            ms(lease)
        );
    }
    println!("client fetches: {}", describe(&log));
    println!(
        "n1: answered until {} after the kill (its lease: its Master_Down_Interval, {}), then silent",
        ms_after(last_n1, killed_at),
        ms(lease)
    );
    println!(
        "n2: master {} after the kill (its Master_Down_Interval: {}); client's neighbour entry: {}",
        ms(n2_master),
        ms(takeover),
        neighbour()?
    );
    println!("client-visible outage: {}", ms(log.outage()));
    let answers = arp_answers()?;
    if answers != "n2" {
        bail!("after the kill only n2 may answer ARP for {VIP}, but {answers} did");
    }
    println!("client arping {VIP}: answered by {answers}");

    step("cleaning up: stopping lbfo, removing the namespaces");
    n2.stop(&mut lab)?;
    drop(lab);
    println!("done");
    Ok(())
}

/// Fetches from the VIP for at most 10 s (each part of the demo finishes
/// its fetcher within a few seconds).
fn start_fetcher(client: &Host) -> Fetcher {
    Fetcher::start(
        &client.ns,
        SocketAddrV4::new(VIP, 8080),
        FETCH_INTERVAL,
        FETCH_TIMEOUT,
        Duration::from_secs(10),
    )
}

/// "n1 answered 80, then 25 failed, then n2 answered 60".
fn describe(log: &FetchLog) -> String {
    log.runs()
        .iter()
        .map(|(who, n)| match who {
            Some(who) => format!("{who} answered {n}"),
            None => format!("{n} failed"),
        })
        .collect::<Vec<_>>()
        .join(", then ")
}

/// The client was served by `from` first and by `to` from some point on,
/// to the end, and never by `from` again.
fn moved_for_good(log: &FetchLog, from: &str, to: &str) -> Result<()> {
    let (Some(last_from), Some(first_to)) = (log.last(from), log.first(to)) else {
        bail!(
            "the client was not served by {from} and then {to}: {}",
            describe(log)
        );
    };
    let ends_on_to = log
        .fetches
        .last()
        .is_some_and(|f| f.served_by.as_deref() == Some(to));
    if last_from > first_to || !ends_on_to {
        bail!(
            "the client did not move from {from} to {to} for good: {}",
            describe(log)
        );
    }
    Ok(())
}

/// Waits for the client's neighbour entry for the VIP to name `mac`, lets
/// the fetches in flight land, and stops the fetcher.
fn settle_on(client: &Host, mac: [u8; 6], fetcher: Fetcher) -> Result<FetchLog> {
    wait_for(
        Duration::from_secs(2),
        "the client's neighbour entry to move to the new owner",
        || Ok(neighbour_mac(&client.ns, "eth0", VIP)? == Some(mac)),
    )?;
    std::thread::sleep(Duration::from_millis(300));
    fetcher.finish()
}
