//! One VIP's election: the RFC 5798 state machine with the VIP's peers and
//! the bookkeeping `lbfo status` shows. Pure, like the machine; the daemon's
//! core feeds it and its executor sends what it returns.

use std::{net::Ipv4Addr, time::Duration};

use crate::{
    config::VipConfig,
    vrrp::{InstanceConfig, Machine},
};

/// Per-instance counters for `lbfo status`.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct VrrpCounters {
    pub adverts_sent: u64,
    pub adverts_received: u64,
    pub became_master: u64,
    #[serde(default)]
    pub priority_zero_sent: u64,
    #[serde(default)]
    pub priority_zero_received: u64,
}

/// One VIP's election.
#[derive(Debug, Clone)]
pub struct Instance {
    pub machine: Machine,
    pub unicast_peers: Vec<Ipv4Addr>,
    pub counters: VrrpCounters,
}

impl Instance {
    /// The election of an elected VIP (`None` for one without `vrid`);
    /// advertisements go out from `primary`.
    pub fn new(vip: &VipConfig, primary: Ipv4Addr) -> Result<Option<Instance>, String> {
        let Some(vrid) = vip.vrrp.vrid else {
            return Ok(None);
        };
        let config = InstanceConfig {
            vrid,
            priority: vip.vrrp.priority,
            advert_interval: vip.vrrp.advert_interval(),
            preempt: vip.vrrp.preempt,
            preempt_delay: Duration::from_millis(vip.vrrp.preempt_delay_ms),
            primary_address: primary,
            addresses: vip.addresses.iter().filter_map(|a| a.ipv4()).collect(),
            version: vip.vrrp.version()?,
            auth: vip.vrrp.auth()?,
        };
        let machine = Machine::new(config).map_err(|e| format!("vip {:?}: {e}", vip.name))?;
        Ok(Some(Instance {
            machine,
            unicast_peers: vip.vrrp.unicast_peers.clone(),
            counters: VrrpCounters::default(),
        }))
    }

    pub fn vrid(&self) -> u8 {
        self.machine.config().vrid
    }
}
