//! Reload planning: everything a new configuration needs (counter slots,
//! table pairs, backend ids, VRRP machines) is allocated and checked here,
//! on copies, before the first effect. A plan that cannot be made changes
//! nothing; one that is made cannot fail half-way.

use std::net::Ipv4Addr;

use crate::{
    balance::{BackendIds, BalancedVip},
    config::{Config, VipConfig, VipServeMode},
};

use super::{Node, Vip};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("changing {what} needs a restart")]
    NeedsRestart { what: String },
    #[error("no free VIP slot ({} in all)", lbfo_common::MAX_VIPS)]
    NoVipSlot,
    #[error(
        "no free table for another balanced VIP ({} in all)",
        lbfo_common::MAX_BALANCED_VIPS
    )]
    NoTableSlot,
    #[error(
        "vip {vip:?}: no free backend id; {} backends in all, and the ids of backends removed by a reload are reused only from the next reload on",
        lbfo_common::MAX_BACKENDS
    )]
    NoBackendId { vip: String },
    #[error("{0}")]
    Vip(String),
}

/// A checked reload: what stays, what goes, what comes, with every id
/// already given out.
#[derive(Debug, Clone)]
pub struct Plan {
    pub(super) config: Config,
    pub(super) primary: Option<Ipv4Addr>,
    /// Indexes (into the node's VIPs) of the VIPs that leave.
    pub(super) going: Vec<usize>,
    /// VIPs that stay with their state: old index, new config, and for a
    /// balanced VIP whose backends changed, its new backend set with the
    /// ids of the backends that left.
    pub(super) staying: Vec<Staying>,
    /// New VIPs, ready to start.
    pub(super) coming: Vec<Vip>,
    /// The id allocator after all of the above.
    pub(super) backend_ids: BackendIds,
}

#[derive(Debug, Clone)]
pub(super) struct Staying {
    pub index: usize,
    pub config: VipConfig,
    pub backends: Option<(BalancedVip, Vec<u32>)>,
}

impl Plan {
    /// A one-line account for the log.
    pub fn summary(&self) -> String {
        format!(
            "{} VIP(s) removed, {} added, {} kept with their state",
            self.going.len(),
            self.coming.len(),
            self.staying.len()
        )
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The VIPs of a plan made against an empty node (start-up).
    pub(super) fn into_start(self) -> (Config, Vec<Vip>, BackendIds) {
        (self.config, self.coming, self.backend_ids)
    }
}

/// Plans the move from `node` to `new`. `primary` is the VRRP source
/// address for the new configuration (the daemon finds it on the
/// interface; required when a VIP is elected).
pub fn plan(node: &Node, new: Config, primary: Option<Ipv4Addr>) -> Result<Plan, PlanError> {
    let old = &node.config;
    if new.interface != old.interface {
        return Err(PlanError::NeedsRestart {
            what: format!("interface ({} -> {})", old.interface, new.interface),
        });
    }
    if new.xdp_mode != old.xdp_mode {
        return Err(PlanError::NeedsRestart {
            what: "xdp_mode".into(),
        });
    }
    if new.metrics != old.metrics {
        return Err(PlanError::NeedsRestart {
            what: "[metrics]".into(),
        });
    }
    // A VIP stays (keeping its ownership and election state) when its
    // address, election and mode are the same.
    let stays = |old: &VipConfig, new: &VipConfig| {
        old.address == new.address && old.vrrp == new.vrrp && old.mode == new.mode
    };
    let mut going = Vec::new();
    let mut staying_at = Vec::new();
    for (index, vip) in node.vips.iter().enumerate() {
        match new
            .vips
            .iter()
            .find(|n| n.name == vip.config.name && stays(&vip.config, n))
        {
            Some(n) => staying_at.push((index, n.clone())),
            None => going.push(index),
        }
    }

    // Ids given back by the previous reload are free now; those given back
    // by this one are not (a packet may still be steered by a table naming
    // them).
    let mut ids = node.backend_ids.clone();
    ids.recycle();
    for &index in &going {
        if let Some(mut balance) = node.vips[index].balance.clone() {
            balance.remove_all(&mut ids);
        }
    }
    let mut staying = Vec::new();
    for (index, config) in staying_at {
        let vip = &node.vips[index];
        let backends = match &vip.balance {
            Some(balance) if vip.config.backends != config.backends => {
                let mut balance = balance.clone();
                let gone = balance
                    .update_backends(&config.backends, &mut ids)
                    .map_err(|_| PlanError::NoBackendId {
                        vip: config.name.clone(),
                    })?;
                Some((balance, gone))
            }
            _ => None,
        };
        staying.push(Staying {
            index,
            config,
            backends,
        });
    }

    let mut used_ids: Vec<u32> = staying.iter().map(|s| node.vips[s.index].id).collect();
    let mut used_slots: Vec<u16> = staying
        .iter()
        .filter_map(|s| node.vips[s.index].balance.as_ref().map(|b| b.table_slot))
        .collect();
    let primary_or_none = primary.unwrap_or(Ipv4Addr::UNSPECIFIED);
    let mut coming = Vec::new();
    for config in new
        .vips
        .iter()
        .filter(|n| !staying.iter().any(|s| s.config.name == n.name))
    {
        let id = (1..=lbfo_common::MAX_VIPS)
            .find(|id| !used_ids.contains(id))
            .ok_or(PlanError::NoVipSlot)?;
        used_ids.push(id);
        let slot = if config.mode == VipServeMode::Balance {
            let slot = (0..lbfo_common::MAX_BALANCED_VIPS as u16)
                .find(|s| !used_slots.contains(s))
                .ok_or(PlanError::NoTableSlot)?;
            used_slots.push(slot);
            Some(slot)
        } else {
            None
        };
        coming.push(Vip::new(config, id, slot, &mut ids, primary_or_none)?);
    }
    if primary.is_none() && new.vips.iter().any(|v| v.vrrp.vrid.is_some()) {
        return Err(PlanError::Vip(
            "elected VIPs need the interface's own address to advertise from".into(),
        ));
    }
    Ok(Plan {
        config: new,
        primary,
        going,
        staying,
        coming,
        backend_ids: ids,
    })
}
