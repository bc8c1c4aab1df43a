//! Benchmark 3: the outage a client sees when the VIP fails over, lbfo
//! against keepalived (Debian's package, VRRP version 3) in the identical
//! lab with the same priorities and advertisement intervals.
//!
//! Each run builds a fresh lab (client, Master at priority 150, Backup at
//! 100), lets the client learn the VIP, starts the lab's prober on the
//! client (an ICMP echo request every millisecond, answered or not), then
//! either takes the Master's link down or stops it gracefully (SIGTERM).
//! The outage is the longest run of unanswered requests (see
//! `crate::prober`).
//!
//! The link goes down right after the Backup's namespace sees one of the
//! Master's advertisements, so every run waits a whole Master_Down_Interval
//! and the two systems are compared at the same phase. (Taking the link
//! down at an arbitrary moment shortens the wait by however long ago the
//! last advertisement was, which differs between runs and systems.)

use std::{
    fmt::Write as _,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{Effort, Section, Summary};
use crate::{
    advert_watch::AdvertWatch,
    keepalived::{Keepalived, KeepalivedConfig},
    lab::{self, Host, Lab, ip, netns_exec, wait_for},
    node::{LbfoNode, vrrp_config},
    prober::Prober,
    rfc5798::master_down_interval,
};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const VIP_CIDR: &str = "192.0.2.100/24";
const VRID: u8 = 51;
const PROBE: Duration = Duration::from_millis(1);
const BACKUP_PRIORITY: u8 = 100;

#[derive(Clone, Copy, PartialEq)]
enum System {
    Lbfo,
    Keepalived,
}

#[derive(Clone, Copy, PartialEq)]
enum Scenario {
    LinkDown,
    Graceful,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::LinkDown => "Master's link down",
            Scenario::Graceful => "Master stops gracefully",
        }
    }
}

/// A Master or Backup of either system.
enum Peer {
    Lbfo(LbfoNode),
    Keepalived(Keepalived),
}

impl Peer {
    fn start(
        lab: &mut Lab,
        host: &Host,
        system: System,
        priority: u8,
        advert: Duration,
    ) -> Result<Peer> {
        Ok(match system {
            System::Lbfo => Peer::Lbfo(LbfoNode::start(
                lab,
                host,
                &vrrp_config(VIP_CIDR, VRID, priority, advert, ""),
            )?),
            System::Keepalived => Peer::Keepalived(Keepalived::start(
                lab,
                host,
                &KeepalivedConfig::new(VRID, priority, advert, VIP_CIDR),
            )?),
        })
    }

    fn is_master(&self) -> Result<bool> {
        match self {
            Peer::Lbfo(node) => Ok(node.status()?.vips[0].state == "master"),
            Peer::Keepalived(k) => k.is_master(),
        }
    }

    fn stop(&self, lab: &mut Lab) -> Result<()> {
        match self {
            Peer::Lbfo(node) => {
                let status = node.stop(lab)?;
                if !status.success() {
                    bail!("lbfo exited with {status}");
                }
                Ok(())
            }
            Peer::Keepalived(k) => k.stop(lab),
        }
    }
}

/// One failover; returns the client-visible outage.
fn measure(system: System, scenario: Scenario, advert: Duration) -> Result<Duration> {
    let (mut lab, client, nodes) = Lab::with_client_and_nodes(2)?;
    let (n1, n2) = (&nodes[0], &nodes[1]);
    let master = Peer::start(&mut lab, n1, system, 150, advert)?;
    let backup = Peer::start(&mut lab, n2, system, BACKUP_PRIORITY, advert)?;
    let settle = advert * 4 + Duration::from_secs(3);
    wait_for(settle, "n1 to be Master", || master.is_master())?;
    // The Backup must have heard the Master (and be Backup, not starting up).
    std::thread::sleep(advert * 4 + Duration::from_millis(100));
    if backup.is_master()? {
        bail!("both nodes are Master before the failover");
    }
    lab::run(netns_exec(&client.ns, "ping").args(["-c", "1", "-W", "1", &VIP.to_string()]))?;

    let master_down = advert * 4;
    let adverts = AdvertWatch::open(&n2.ns, n1.addr)?;
    let prober = Prober::start(&client.ns, VIP, PROBE, master_down + Duration::from_secs(5))?;
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    match scenario {
        Scenario::LinkDown => {
            adverts.next_advert(advert * 3)?;
            ip(&n1.ns, &["link", "set", "eth0", "down"])?;
        }
        Scenario::Graceful => master.stop(&mut lab)?,
    }
    wait_for(
        master_down + Duration::from_secs(2),
        "n2 to be Master",
        || backup.is_master(),
    )
    .with_context(|| format!("after {:?}", start.elapsed()))?;
    // Give the client's probes time to come back and show the whole gap.
    std::thread::sleep(Duration::from_millis(300));
    let report = prober.finish()?;
    if report.answered == 0 {
        bail!("the client got no answers at all");
    }
    Ok(report.outage)
}

pub fn run(effort: Effort) -> Result<Section> {
    let intervals: &[u64] = if effort.quick {
        &[100]
    } else {
        &[1000, 100, 30, 10]
    };
    let rounds = if effort.quick {
        1
    } else {
        effort.rounds.min(5)
    };
    let mut table = String::new();
    let _ = writeln!(
        table,
        "| advert interval | failover | Backup's wait by the RFC, ms | keepalived outage ms | lbfo outage ms | lbfo / keepalived |"
    );
    let _ = writeln!(table, "|---|---|---|---|---|---|");
    for &interval_ms in intervals {
        let advert = Duration::from_millis(interval_ms);
        for scenario in [Scenario::LinkDown, Scenario::Graceful] {
            let mut lbfo = Vec::new();
            let mut keepalived = Vec::new();
            for _ in 0..rounds {
                // Alternate so drift on the machine affects both alike.
                keepalived
                    .push(measure(System::Keepalived, scenario, advert)?.as_secs_f64() * 1000.0);
                lbfo.push(measure(System::Lbfo, scenario, advert)?.as_secs_f64() * 1000.0);
            }
            let (l, k) = (Summary::of(&lbfo), Summary::of(&keepalived));
            let ratio = l.median / k.median.max(PROBE.as_secs_f64() * 1000.0);
            println!(
                "failover {interval_ms} ms, {}: lbfo {} ms, keepalived {} ms",
                scenario.name(),
                l.fmt(1),
                k.fmt(1)
            );
            let down = master_down_interval(advert, BACKUP_PRIORITY);
            let rfc_wait = match scenario {
                Scenario::LinkDown => down,
                Scenario::Graceful => down - 3 * advert,
            };
            let _ = writeln!(
                table,
                "| {interval_ms} ms | {} | {:.1} | {} | {} | **{ratio:.2}** |",
                scenario.name(),
                rfc_wait.as_secs_f64() * 1000.0,
                k.fmt(1),
                l.fmt(1)
            );
        }
    }
    let markdown = format!(
        "Command: `cargo xtask bench` (section \"failover\"). Each cell: {rounds} failovers, each in a fresh namespace lab (client, Master at priority 150, Backup at 100, one bridge), lbfo and keepalived runs alternating. A client sends an ICMP echo request to the VIP every 1 ms on a fixed schedule, answered or not (the lab's prober, `tests/src/prober.rs`; iputils `ping` slows to one request per 10 ms while requests are unanswered, which would end a measured outage up to 10 ms late); the outage is the longest run of unanswered requests, from sending the first of them to sending the next answered one, so a moment in which the busy machine did not run the prober counts for nothing (a request never sent was not lost). An outage of 0.0 means not one request went unanswered: any gap was shorter than the 1 ms between requests. Link down: `ip link set eth0 down` on the Master, right after an advertisement from it reaches the Backup's namespace, so every run waits a whole Master_Down_Interval and both systems are measured at the same phase. Graceful: SIGTERM to the Master. Targets: lbfo's outage no larger than keepalived's at every setting; graceful handover under 10 ms.\n\n\
By the RFC a Backup waits Master_Down_Interval (3 × interval + Skew_Time) after the last advertisement before it takes over a Master that vanished, so link-down outages scale with the interval for both; the column \"Backup's wait by the RFC\" gives that wait (Backup priority {BACKUP_PRIORITY}), and whatever a system adds to it is its own cost. On a graceful stop keepalived gives the address up at once and its Backup takes over after Skew_Time (the wait given for that row); lbfo's Master keeps answering until its successor's first advertisement arrives, and the successor announces itself with gratuitous ARP before it advertises, so the client barely notices.\n\n{table}"
    );
    Ok(Section {
        title: "3. Failover: client-visible outage, lbfo vs keepalived".into(),
        markdown,
    })
}
