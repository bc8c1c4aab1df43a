//! What `lbfo status` shows: a snapshot the daemon builds on request.

use std::fmt::Write as _;

use lbfo_common::{BackendCounters, VipCounters};

use crate::vrrp::VrrpCounters;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub interface: String,
    /// The interface is up with a carrier; without, every VIP is in fault.
    #[serde(default = "yes")]
    pub link_up: bool,
    /// "native" or "generic": how XDP is attached.
    pub xdp_mode: String,
    pub xdp_prog_id: u32,
    pub mac: String,
    pub vips: Vec<VipStatus>,
    /// Frames that belonged to no VIP and were too short or malformed to parse.
    pub malformed_frames: u64,
    /// VRRP advertisements not acted on, by reason.
    #[serde(default)]
    pub vrrp_rejected: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VipStatus {
    pub name: String,
    /// The first address (for most VIPs the only one).
    pub address: String,
    /// Every address, in the order advertised; they move together.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// "owner" or "standby" for operator-owned VIPs; "initialize",
    /// "backup", "master" or "fault" for elected ones.
    pub state: String,
    /// Whether XDP answers for the VIP right now (owned and lease running).
    pub owned: bool,
    /// Milliseconds until XDP stops answering unless the lease is renewed.
    pub lease_left_ms: u64,
    /// MAC the VIP is answered with.
    pub mac: String,
    /// Who put the address on the interface: "lbfo", "operator" or "none".
    pub address_origin: String,
    /// Why the VIP is in its current state.
    pub reason: String,
    pub counters: VipCounters,
    /// "local" or "balance".
    #[serde(default)]
    pub mode: String,
    /// The VIP's own health checks.
    #[serde(default)]
    pub checks: Vec<CheckView>,
    /// Balanced VIPs: their backends.
    #[serde(default)]
    pub backends: Vec<BackendStatus>,
    /// The election, for VIPs with a vrid.
    #[serde(default)]
    pub vrrp: Option<VrrpStatus>,
    /// "arp" or "route".
    #[serde(default = "arp")]
    pub announce: String,
    /// Route VIPs: whether this node announces it, and why not.
    #[serde(default)]
    pub route: Option<RouteStatus>,
    /// This node's last takeover of the VIP.
    #[serde(default)]
    pub last_failover: Option<LastFailover>,
}

/// A route VIP on this node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RouteStatus {
    /// The route device its address goes on.
    pub device: String,
    /// The address is on the device: the routing daemon announces it.
    pub announced: bool,
    /// Not announced: "fault", "waiting_for_backends" or "failed" (the
    /// VIP's reason says more).
    pub why_not: Option<String>,
}

/// How this node last took a VIP over: why, and how long it took from the
/// moment the failover began here to XDP answering with the first
/// announcement out.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LastFailover {
    pub reason: String,
    pub took_ms: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BackendStatus {
    pub address: String,
    pub weight: u32,
    pub mac: Option<String>,
    pub healthy: bool,
    pub drained: bool,
    pub accepting_new_flows: bool,
    /// Why it takes no new flows, if it does not.
    pub why_not: Option<String>,
    pub counters: BackendCounters,
    /// Flows in the connection table that go to it.
    pub active_flows: u64,
    #[serde(default)]
    pub checks: Vec<CheckView>,
}

/// One health check as `lbfo status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckView {
    pub id: String,
    /// What it probes, like `http GET http://192.0.2.1:8080/health`.
    pub target: String,
    /// "unknown", "healthy" or "unhealthy".
    pub state: String,
    pub consecutive_successes: u32,
    pub consecutive_failures: u32,
    pub last_latency_ms: Option<f64>,
    /// What the last failed probe saw.
    pub last_error: Option<String>,
    pub weight: Option<i32>,
}

impl CheckView {
    fn render(&self, indent: &str) -> String {
        format!(
            "{indent}check {} ({}): {}, {} ok / {} failed in a row, last latency {}{}{}\n",
            self.id,
            self.target,
            self.state,
            self.consecutive_successes,
            self.consecutive_failures,
            self.last_latency_ms
                .map(|l| format!("{l:.1} ms"))
                .unwrap_or_else(|| "-".into()),
            self.weight
                .map(|w| format!(", weight {w}"))
                .unwrap_or_default(),
            self.last_error
                .as_ref()
                .map(|e| format!(", last error: {e}"))
                .unwrap_or_default(),
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VrrpStatus {
    pub vrid: u8,
    /// VRRP version, 2 or 3.
    #[serde(default)]
    pub version: u8,
    pub priority: u8,
    /// Priority after weighted checks changed it.
    pub effective_priority: u8,
    pub advert_interval_ms: u64,
    pub master_down_interval_ms: u64,
    /// The Master this node last heard, while it is Backup.
    pub master: Option<String>,
    pub master_priority: Option<u8>,
    pub counters: VrrpCounters,
}

fn yes() -> bool {
    true
}

fn arp() -> String {
    "arp".into()
}

impl Status {
    /// The human-readable form printed by `lbfo status`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "interface {} ({}, {}), XDP {} mode, program id {}",
            self.interface,
            self.mac,
            if self.link_up {
                "link up"
            } else {
                "NO LINK: every VIP in fault"
            },
            self.xdp_mode,
            self.xdp_prog_id
        );
        if self.vips.is_empty() {
            out.push_str("no VIPs configured\n");
        }
        for v in &self.vips {
            let lease = if v.owned {
                format!("lease {} ms", v.lease_left_ms)
            } else {
                "not answering".to_string()
            };
            let placed = match &v.route {
                Some(r) if r.announced => format!("route on {}: announced", r.device),
                Some(r) => format!(
                    "route on {}: not announced ({})",
                    r.device,
                    r.why_not.as_deref().unwrap_or("-")
                ),
                None => format!("address on interface: {}", v.address_origin),
            };
            let _ = writeln!(
                out,
                "\nvip {} {}: {} ({lease}), {placed}\n  why: {}",
                v.name,
                if v.addresses.len() > 1 {
                    v.addresses.join(", ")
                } else {
                    v.address.clone()
                },
                v.state,
                v.reason
            );
            if let Some(f) = &v.last_failover {
                let _ = writeln!(out, "  last takeover: {:.1} ms ({})", f.took_ms, f.reason);
            }
            if let Some(vrrp) = &v.vrrp {
                let _ = writeln!(
                    out,
                    "  vrrp{} vrid {} priority {} (effective {}), advert every {} ms, master down after {} ms{}; adverts sent {}, received {}",
                    if vrrp.version == 2 { " v2" } else { "" },
                    vrrp.vrid,
                    vrrp.priority,
                    vrrp.effective_priority,
                    vrrp.advert_interval_ms,
                    vrrp.master_down_interval_ms,
                    vrrp.master
                        .as_ref()
                        .map(|m| format!(
                            ", master {m} (priority {})",
                            vrrp.master_priority.unwrap_or(0)
                        ))
                        .unwrap_or_default(),
                    vrrp.counters.adverts_sent,
                    vrrp.counters.adverts_received
                );
            }
            for check in &v.checks {
                out.push_str(&check.render("  "));
            }
            for b in &v.backends {
                let c = &b.counters;
                let _ = writeln!(
                    out,
                    "  backend {} weight {} mac {}: {}; packets {}, bytes {}, new flows {}, active flows {}",
                    b.address,
                    b.weight,
                    b.mac.as_deref().unwrap_or("unknown"),
                    match &b.why_not {
                        None => "takes new flows".to_string(),
                        Some(why) => format!("no new flows ({why})"),
                    },
                    c.packets,
                    c.bytes,
                    c.new_flows,
                    b.active_flows
                );
                for check in &b.checks {
                    out.push_str(&check.render("    "));
                }
            }
            let c = &v.counters;
            let ipv6 = v
                .address
                .parse::<crate::config::VipAddress>()
                .is_ok_and(|a| a.addr.is_ipv6());
            let (protocol, replied, dropped) = if ipv6 {
                ("nd", c.nd_replied, c.nd_dropped_not_owner)
            } else {
                ("arp", c.arp_replied, c.arp_dropped_not_owner)
            };
            let _ = writeln!(
                out,
                "  {protocol} replied {replied}, {protocol} dropped (not owner) {dropped}, ip passed {}, ip dropped (not owner) {}, conflicts {}",
                c.ip_passed, c.ip_dropped_not_owner, c.conflicts_seen
            );
            if v.route.is_some() {
                let _ = writeln!(
                    out,
                    "  arp dropped (route VIP: routers reach the node by its own address) {}",
                    c.arp_dropped_route
                );
            }
        }
        let rejected: Vec<String> = self
            .vrrp_rejected
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(reason, n)| format!("{reason} {n}"))
            .collect();
        if !rejected.is_empty() {
            let _ = writeln!(
                out,
                "\nVRRP advertisements rejected: {}",
                rejected.join(", ")
            );
        }
        if self.malformed_frames > 0 {
            let _ = writeln!(
                out,
                "\nmalformed frames passed to the kernel: {}",
                self.malformed_frames
            );
        }
        out
    }
}
