//! One VIP's election: the RFC 5798 state machine with the VIP's peers and
//! the bookkeeping `lbfo status` shows. Pure, like the machine; the daemon's
//! core feeds it and its executor sends what it returns.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

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

/// The node's VRRP source address in each family: for IPv4 the interface's
/// primary address, for IPv6 its link-local address (RFC 5798 5.1.2.1).
/// Each is `None` while no elected VIP of its family needs it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sources {
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
}

impl Sources {
    /// The source for advertisements of one family.
    pub fn of_family(&self, ipv6: bool) -> Option<IpAddr> {
        if ipv6 {
            self.ipv6.map(IpAddr::V6)
        } else {
            self.ipv4.map(IpAddr::V4)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ipv4.is_none() && self.ipv6.is_none()
    }

    /// Whether `address` is one of ours (an advertisement from it is our
    /// own, looped back).
    pub fn contains(&self, address: IpAddr) -> bool {
        self.of_family(address.is_ipv6()) == Some(address)
    }
}

/// One VIP's election.
#[derive(Debug, Clone)]
pub struct Instance {
    pub machine: Machine,
    pub unicast_peers: Vec<IpAddr>,
    pub counters: VrrpCounters,
}

impl Instance {
    /// The election of an elected VIP (`None` for one without `vrid`);
    /// advertisements go out from the source of its family in `sources`.
    pub fn new(vip: &VipConfig, sources: Sources) -> Result<Option<Instance>, String> {
        let Some(vrid) = vip.vrrp.vrid else {
            return Ok(None);
        };
        let ipv6 = vip.addresses.iter().any(|a| a.addr.is_ipv6());
        let primary = sources.of_family(ipv6).ok_or_else(|| {
            format!(
                "vip {:?}: no IPv{} VRRP source address on the interface",
                vip.name,
                if ipv6 { 6 } else { 4 }
            )
        })?;
        let config = InstanceConfig {
            vrid,
            priority: vip.vrrp.priority,
            advert_interval: vip.vrrp.advert_interval(),
            preempt: vip.vrrp.preempt,
            preempt_delay: Duration::from_millis(vip.vrrp.preempt_delay_ms),
            primary_address: primary,
            addresses: vip.addresses.iter().map(|a| a.addr).collect(),
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

    /// The source of this virtual router's advertisements, whose family is
    /// the router's (an IPv4 and an IPv6 router may share a VRID).
    pub fn source(&self) -> IpAddr {
        self.machine.config().primary_address
    }
}
