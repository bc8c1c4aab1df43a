//! `lbfo status`: the core's view joined with what only the data path knows
//! (leases, counters, flows) and the checks' board. The main loop reads
//! memory and maps only (no netlink round trip); the check views, the
//! costly part with many checks, are filled in on the I/O runtime.

use std::{collections::HashMap, net::IpAddr};

use crate::{
    arp::format_mac,
    balance::BalancedVip,
    clock,
    core::{CheckKey, Node, Vip},
    datapath::DatapathError,
    health::{CheckId, StatusBoard},
    netlink::{Interface, XdpAttachMode},
    ownership::{AddressOrigin, Owner},
    status::{BackendStatus, CheckView, LastFailover, RouteStatus, Status, VipStatus, VrrpStatus},
};

pub(super) struct StatusSources<'a> {
    pub node: &'a Node,
    pub owner: &'a Owner,
    pub iface: &'a Interface,
    pub xdp_mode: XdpAttachMode,
}

/// The checks each VIP and backend of a [`Status`] shows, filled in by
/// [`fill_checks`] away from the main loop: a thousand checks' views cost
/// more than the rest of the status together.
pub(super) struct PendingChecks(Vec<(usize, Option<usize>, Vec<CheckKey>)>);

impl StatusSources<'_> {
    /// Everything but the check views (see [`PendingChecks`]).
    pub fn status(&self) -> Result<(Status, PendingChecks), DatapathError> {
        let mut pending = Vec::new();
        let datapath = self.owner.datapath();
        let now = datapath.jiffies()?;
        let flows = if self.node.vips().iter().any(|v| v.balance.is_some()) {
            datapath.active_flows()
        } else {
            HashMap::new()
        };
        let mut vips = Vec::new();
        for (at, vip) in self.node.vips().iter().enumerate() {
            pending.push((at, None, check_keys(vip, None)));
            if let Some(balance) = &vip.balance {
                for (b, backend) in balance.backends.iter().enumerate() {
                    pending.push((at, Some(b), check_keys(vip, Some(backend.address))));
                }
            }
            // Every address of a VIP gets the same entry; the first stands
            // for all.
            let entry = datapath.vip(vip.config.address().addr).unwrap_or_default();
            let answers = entry.answers(now);
            vips.push(VipStatus {
                name: vip.config.name.clone(),
                address: vip.config.address().to_string(),
                addresses: vip
                    .config
                    .addresses
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                state: vip.phase().as_str().into(),
                owned: answers,
                lease_left_ms: if answers {
                    clock::lease_left(entry.lease_deadline_jiffies, now).as_millis() as u64
                } else {
                    0
                },
                mac: format_mac(&self.iface.mac),
                address_origin: self
                    .owner
                    .address_origin(vip.config.address().addr)
                    .as_str()
                    .into(),
                reason: vip.reason.clone(),
                counters: datapath.counters(vip.id)?,
                mode: if vip.balance.is_some() {
                    "balance"
                } else {
                    "local"
                }
                .into(),
                backends: match &vip.balance {
                    Some(balance) => self.backends(balance, &flows)?,
                    None => Vec::new(),
                },
                checks: Vec::new(),
                vrrp: vip.election.as_ref().map(|i| VrrpStatus {
                    vrid: i.machine.config().vrid,
                    version: i.machine.config().version.number(),
                    priority: i.machine.config().priority,
                    effective_priority: i.machine.effective_priority(),
                    advert_interval_ms: i.machine.config().advert_interval.as_millis() as u64,
                    master_down_interval_ms: i.machine.master_down_interval().as_millis() as u64,
                    master: i.machine.learned_master().map(|m| m.address.to_string()),
                    master_priority: i.machine.learned_master().map(|m| m.priority),
                    counters: i.counters.clone(),
                }),
                announce: vip.config.announce.as_str().into(),
                route: vip.route().then(|| RouteStatus {
                    device: self.node.config().route_device.clone(),
                    announced: vip.owned
                        && vip
                            .config
                            .addresses
                            .iter()
                            .all(|a| self.owner.address_origin(a.addr) == AddressOrigin::Lbfo),
                    why_not: vip.not_announced().map(|w| w.as_str().to_string()),
                }),
                last_failover: vip.last_failover.map(|(reason, took)| LastFailover {
                    reason: reason.as_str().into(),
                    took_ms: took.as_secs_f64() * 1000.0,
                }),
            });
        }
        let status = Status {
            interface: self.iface.name.clone(),
            link_up: self.node.link_up(),
            xdp_mode: self.xdp_mode.to_string(),
            xdp_prog_id: datapath.prog_id(),
            mac: format_mac(&self.iface.mac),
            vips,
            malformed_frames: datapath.counters(lbfo_common::NO_VIP)?.malformed,
            vrrp_rejected: if !self.node.sources().is_empty() {
                self.node
                    .rejected()
                    .iter()
                    .map(|(k, v)| (k.to_string(), *v))
                    .collect()
            } else {
                Default::default()
            },
        };
        Ok((status, PendingChecks(pending)))
    }

    fn backends(
        &self,
        balance: &BalancedVip,
        flows: &HashMap<u32, u64>,
    ) -> Result<Vec<BackendStatus>, DatapathError> {
        balance
            .backends
            .iter()
            .map(|b| {
                Ok(BackendStatus {
                    address: b.address.to_string(),
                    weight: b.weight,
                    mac: b.mac.as_ref().map(format_mac),
                    healthy: b.healthy,
                    drained: b.drained,
                    accepting_new_flows: b.accepts_new_flows(),
                    why_not: b.why_not().map(str::to_string),
                    counters: self.owner.datapath().backend_counters(b.id)?,
                    active_flows: flows.get(&b.id).copied().unwrap_or(0),
                    checks: Vec::new(),
                })
            })
            .collect()
    }
}

/// The keys of a VIP's checks (`backend` = None) or of one backend's.
fn check_keys(vip: &Vip, backend: Option<IpAddr>) -> Vec<CheckKey> {
    let count = match backend {
        None => vip.config.checks.len(),
        Some(b) => vip
            .config
            .backends
            .iter()
            .find(|c| c.address == b)
            .map_or(0, |c| c.checks.len()),
    };
    let name: std::sync::Arc<str> = vip.config.name.as_str().into();
    (0..count)
        .map(|index| CheckKey {
            vip: name.clone(),
            backend,
            index,
        })
        .collect()
}

/// Fills in the check views of a status from the checks' board.
pub(super) fn fill_checks(
    status: &mut Status,
    pending: PendingChecks,
    board: &StatusBoard,
    ids: &HashMap<CheckKey, CheckId>,
) {
    for (vip, backend, keys) in pending.0 {
        let views = keys.iter().map(|key| check_view(key, board, ids)).collect();
        let vip = &mut status.vips[vip];
        match backend {
            None => vip.checks = views,
            Some(b) => vip.backends[b].checks = views,
        }
    }
}

fn check_view(key: &CheckKey, board: &StatusBoard, ids: &HashMap<CheckKey, CheckId>) -> CheckView {
    let status = ids.get(key).and_then(|id| board.get(id));
    CheckView {
        id: key.to_string(),
        target: status
            .as_ref()
            .map(|s| s.target.clone())
            .unwrap_or_default(),
        state: status
            .as_ref()
            .map(|s| s.state.to_string())
            .unwrap_or_else(|| "unknown".into()),
        consecutive_successes: status.as_ref().map_or(0, |s| s.consecutive_successes),
        consecutive_failures: status.as_ref().map_or(0, |s| s.consecutive_failures),
        last_latency_ms: status
            .as_ref()
            .and_then(|s| s.last.as_ref())
            .map(|r| r.latency.as_secs_f64() * 1000.0),
        last_error: status
            .as_ref()
            .and_then(|s| s.last_error.as_ref())
            .map(|r| r.detail.clone()),
        weight: status.as_ref().and_then(|s| s.weight),
    }
}
