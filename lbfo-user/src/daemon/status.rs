//! `lbfo status`: the core's view joined with what only the data path knows
//! (leases, counters, flows) and the checks' board. Reads memory and maps
//! only; no netlink round trip, so a status request never holds up the
//! main loop for long.

use std::collections::HashMap;

use crate::{
    arp::format_mac,
    balance::BalancedVip,
    clock,
    core::{CheckKey, Node, Vip},
    datapath::DatapathError,
    health::{CheckId, StatusBoard},
    netlink::{Interface, XdpAttachMode},
    ownership::Owner,
    status::{BackendStatus, CheckView, LastFailover, Status, VipStatus, VrrpStatus},
};

pub(super) struct StatusSources<'a> {
    pub node: &'a Node,
    pub owner: &'a Owner,
    pub board: &'a StatusBoard,
    pub iface: &'a Interface,
    pub xdp_mode: XdpAttachMode,
    /// The engine's id of each check.
    pub check_ids: &'a HashMap<CheckKey, CheckId>,
}

impl StatusSources<'_> {
    pub fn status(&self) -> Result<Status, DatapathError> {
        let datapath = self.owner.datapath();
        let now = datapath.jiffies()?;
        let flows = datapath.active_flows();
        let mut vips = Vec::new();
        for vip in self.node.vips() {
            let entry = datapath.vip(vip.config.address.addr).unwrap_or_default();
            let answers = entry.answers(now);
            vips.push(VipStatus {
                name: vip.config.name.clone(),
                address: vip.config.address.to_string(),
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
                    .address_origin(vip.config.address.addr)
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
                    Some(balance) => self.backends(vip, balance, &flows)?,
                    None => Vec::new(),
                },
                checks: self.checks(vip, None),
                vrrp: vip.election.as_ref().map(|i| VrrpStatus {
                    vrid: i.machine.config().vrid,
                    priority: i.machine.config().priority,
                    effective_priority: i.machine.effective_priority(),
                    advert_interval_ms: i.machine.config().advert_interval.as_millis() as u64,
                    master_down_interval_ms: i.machine.master_down_interval().as_millis() as u64,
                    master: i.machine.learned_master().map(|m| m.address.to_string()),
                    master_priority: i.machine.learned_master().map(|m| m.priority),
                    counters: i.counters.clone(),
                }),
                last_failover: vip.last_failover.map(|(reason, took)| LastFailover {
                    reason: reason.as_str().into(),
                    took_ms: took.as_secs_f64() * 1000.0,
                }),
            });
        }
        Ok(Status {
            interface: self.iface.name.clone(),
            link_up: self.node.link_up(),
            xdp_mode: self.xdp_mode.to_string(),
            xdp_prog_id: datapath.prog_id(),
            mac: format_mac(&self.iface.mac),
            vips,
            malformed_frames: datapath.counters(lbfo_common::NO_VIP)?.malformed,
            vrrp_rejected: if self.node.primary().is_some() {
                self.node
                    .rejected()
                    .iter()
                    .map(|(k, v)| (k.to_string(), *v))
                    .collect()
            } else {
                Default::default()
            },
        })
    }

    /// The checks of a VIP (`backend` = None) or of one of its backends.
    fn checks(&self, vip: &Vip, backend: Option<std::net::Ipv4Addr>) -> Vec<CheckView> {
        let count = match backend {
            None => vip.config.checks.len(),
            Some(b) => vip
                .config
                .backends
                .iter()
                .find(|c| c.address == b)
                .map_or(0, |c| c.checks.len()),
        };
        (0..count)
            .map(|index| {
                let key = CheckKey {
                    vip: vip.config.name.as_str().into(),
                    backend,
                    index,
                };
                self.check_view(&key)
            })
            .collect()
    }

    fn check_view(&self, key: &CheckKey) -> CheckView {
        let status = self.check_ids.get(key).and_then(|id| self.board.get(id));
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

    fn backends(
        &self,
        vip: &Vip,
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
                    checks: self.checks(vip, Some(b.address)),
                })
            })
            .collect()
    }
}
