//! VRRP around the pure state machines: the socket, the clock, and the
//! bookkeeping of what was sent, received and rejected. The daemon owns one
//! [`Elections`] and applies the [`Action`]s the machines return.

use std::{collections::BTreeMap, io, net::Ipv4Addr, time::Duration};

use tokio::time::Instant;

use crate::{
    config::VipConfig,
    vrrp::{Advertisement, InstanceConfig, Machine, Reject, VRRP_MULTICAST, socket::VrrpSocket},
};

/// Per-instance counters for `lbfo status`.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct VrrpCounters {
    pub adverts_sent: u64,
    pub adverts_received: u64,
    pub became_master: u64,
}

/// One VIP's election.
pub struct Instance {
    pub machine: Machine,
    pub unicast_peers: Vec<Ipv4Addr>,
    pub counters: VrrpCounters,
}

impl Instance {
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
            addresses: vec![vip.address.addr],
        };
        let machine = Machine::new(config).map_err(|e| format!("vip {:?}: {e}", vip.name))?;
        Ok(Some(Instance {
            machine,
            unicast_peers: vip.vrrp.unicast_peers.clone(),
            counters: VrrpCounters::default(),
        }))
    }
}

pub struct Elections {
    pub socket: std::sync::Arc<VrrpSocket>,
    pub primary: Ipv4Addr,
    epoch: Instant,
    /// Advertisements not acted on, by reason (`Reject::as_str`).
    pub rejected: BTreeMap<&'static str, u64>,
}

impl Elections {
    pub fn open(ifname: &str, ifindex: u32, primary: Ipv4Addr) -> io::Result<Elections> {
        Ok(Elections {
            socket: std::sync::Arc::new(VrrpSocket::open(ifname, ifindex, primary)?),
            primary,
            epoch: Instant::now(),
            rejected: Reject::NAMES.iter().map(|n| (*n, 0)).collect(),
        })
    }

    /// The machines' clock: time since the daemon started.
    pub fn now(&self) -> Duration {
        Instant::now().duration_since(self.epoch)
    }

    pub fn instant(&self, at: Duration) -> Instant {
        self.epoch + at
    }

    /// Sends an advertisement: to each unicast peer if there are any, else
    /// to the VRRP multicast group.
    pub fn send(&self, instance: &mut Instance, advert: &Advertisement) -> io::Result<()> {
        let multicast = [VRRP_MULTICAST];
        let destinations: &[Ipv4Addr] = if instance.unicast_peers.is_empty() {
            &multicast
        } else {
            &instance.unicast_peers
        };
        for dst in destinations {
            // The checksum covers the IP source and destination, so encode per destination.
            self.socket.send(&advert.encode(self.primary, *dst), *dst)?;
        }
        instance.counters.adverts_sent += 1;
        Ok(())
    }

    pub fn count_reject(&mut self, reject: &Reject) {
        *self.rejected.entry(reject.as_str()).or_default() += 1;
    }
}
