//! Reload planning: everything a new configuration needs (counter slots,
//! table pairs, backend ids, VRRP machines) is allocated and checked here,
//! on copies, before the first effect. A plan that cannot be made changes
//! nothing; one that is made cannot fail half-way.

use crate::{
    balance::{BackendIds, BalancedVip},
    config::{Config, VipConfig, VipServeMode},
    vrrp::Sources,
};

use super::{Node, Vip};

/// What the data path's maps were sized for at start-up
/// ([`Capacity::for_config`]), fixed for the daemon's life. The planner gives
/// out table pairs and backend ids only within it, so a reload that needs
/// more is refused, and a restart sizes the maps anew. The XDP program's
/// compile-time sizes ([`Capacity::MAX`]) are the upper bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// Balanced VIPs with a pair of Maglev tables; 0: no tables at all.
    pub balanced_vips: u32,
    /// Backend ids, shared by all balanced VIPs.
    pub backends: u32,
    /// Flows the connection table remembers; 0 without balancing.
    pub conntrack_entries: u32,
}

impl Capacity {
    /// The sizes the XDP object declares.
    pub const MAX: Capacity = Capacity {
        balanced_vips: lbfo_common::MAX_BALANCED_VIPS,
        backends: lbfo_common::MAX_BACKENDS,
        conntrack_entries: lbfo_common::CONNTRACK_ENTRIES,
    };

    /// Room for what `config` has plus its headroom. A node with no room
    /// for a balanced VIP has no tables, no backends and no connection
    /// table: its maps hold only VIPs and their counters.
    pub fn for_config(config: &Config) -> Capacity {
        let balanced = config.balanced_vips().count() as u32;
        let balanced_vips =
            (balanced + config.balanced_vip_headroom()).min(lbfo_common::MAX_BALANCED_VIPS);
        if balanced_vips == 0 {
            return Capacity {
                balanced_vips: 0,
                backends: 0,
                conntrack_entries: 0,
            };
        }
        let backends: u32 = config
            .balanced_vips()
            .map(|v| v.backends.len() as u32)
            .sum();
        Capacity {
            balanced_vips,
            backends: (backends + config.backend_headroom()).min(lbfo_common::MAX_BACKENDS),
            conntrack_entries: config.conntrack_entries,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("changing {what} needs a restart")]
    NeedsRestart { what: String },
    #[error("no free VIP slot ({} in all)", lbfo_common::MAX_VIPS)]
    NoVipSlot,
    #[error(
        "needs a restart: the maps were sized for {capacity} balanced VIPs at start-up, the new configuration has {needed} (balanced_vip_headroom leaves room for more)"
    )]
    NoTableSlot { needed: u32, capacity: u32 },
    #[error(
        "vip {vip:?}: no free backend id; needs a restart: the maps were sized for {capacity} backends at start-up (backend_headroom leaves room for more; the ids of backends removed by a reload are reused only from the next reload on)"
    )]
    NoBackendId { vip: String, capacity: u32 },
    #[error("{0}")]
    Vip(String),
}

/// A checked reload: what stays, what goes, what comes, with every id
/// already given out.
#[derive(Debug, Clone)]
pub struct Plan {
    pub(super) config: Config,
    pub(super) sources: Sources,
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

/// Plans the move from `node` to `new`. `sources` are the VRRP source
/// addresses for the new configuration (the daemon finds them on the
/// interface; required for each family with an elected VIP).
pub fn plan(node: &Node, new: Config, sources: Sources) -> Result<Plan, PlanError> {
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
    if new.route_device != old.route_device {
        return Err(PlanError::NeedsRestart {
            what: format!(
                "route_device ({} -> {})",
                old.route_device, new.route_device
            ),
        });
    }
    if new.metrics != old.metrics {
        return Err(PlanError::NeedsRestart {
            what: "[metrics]".into(),
        });
    }
    // The maps were sized by these at start-up.
    let sizing = [
        (
            "balanced_vip_headroom",
            old.balanced_vip_headroom != new.balanced_vip_headroom,
        ),
        (
            "backend_headroom",
            old.backend_headroom != new.backend_headroom,
        ),
        (
            "conntrack_entries",
            old.conntrack_entries != new.conntrack_entries,
        ),
    ];
    if let Some((what, _)) = sizing.iter().find(|(_, changed)| *changed) {
        return Err(PlanError::NeedsRestart {
            what: format!("{what} (the maps are sized at start-up)"),
        });
    }
    let capacity = node.capacity;
    let balanced = new.balanced_vips().count() as u32;
    if balanced > capacity.balanced_vips {
        return Err(PlanError::NoTableSlot {
            needed: balanced,
            capacity: capacity.balanced_vips,
        });
    }
    // A VIP stays (keeping its ownership and election state) when its
    // addresses, election and mode are the same.
    let stays = |old: &VipConfig, new: &VipConfig| {
        old.addresses == new.addresses
            && old.vrrp == new.vrrp
            && old.mode == new.mode
            && old.announce == new.announce
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
                        capacity: capacity.backends,
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
            // Cannot run out: every slot below the capacity that no
            // staying VIP holds is free, and the count was checked above.
            let slot = (0..capacity.balanced_vips as u16)
                .find(|s| !used_slots.contains(s))
                .ok_or(PlanError::NoTableSlot {
                    needed: balanced,
                    capacity: capacity.balanced_vips,
                })?;
            used_slots.push(slot);
            Some(slot)
        } else {
            None
        };
        coming.push(Vip::new(config, id, slot, &mut ids, sources)?);
    }
    Ok(Plan {
        config: new,
        sources,
        going,
        staying,
        coming,
        backend_ids: ids,
    })
}
