//! Taking and giving up a VIP: the address on the interface, the entry in the
//! XDP map and the announcement burst (gratuitous ARP, or unsolicited
//! Neighbour Advertisements for IPv6), always in the order that leaves no
//! moment where the kernel, rather than XDP, could answer for the VIP.
//!
//! Taking: add the address (so local services accept the traffic), then mark
//! the map owned (XDP starts answering ARP or Neighbour Solicitations), then announce.
//! Giving up: mark the map not owned first (XDP stops answering at once),
//! then remove the address, and only if lbfo added it.
//!
//! A route VIP runs the other way round, because the address is what
//! brings the traffic: announcing marks the map owned first (XDP steers
//! before the router sends the first packet), then puts the /32 on the
//! route device; withdrawing removes the address first, so packets the
//! router still sends while it withdraws are served, then marks the map.
//!
//! [`Owner`] holds every piece that changes when ownership changes; the
//! daemon's executor is its only user.

use std::{collections::HashMap, net::IpAddr, sync::Arc, time::Duration};

use lbfo_common::VipState;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    announce::Announcer,
    balance::TableUpdate,
    clock,
    config::{GarpConfig, VipAddress},
    core::MapEntry,
    datapath::{Datapath, DatapathError},
    netlink::{Netlink, NetlinkError, XdpAttachMode},
    route::RouteDevice,
};

/// A route VIP's address as it goes on the route device.
fn host_address(addr: IpAddr) -> VipAddress {
    VipAddress {
        addr,
        prefix_len: VipAddress::host_prefix_len(addr),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OwnershipError {
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    #[error("no route device is open for route VIPs")]
    NoRouteDevice,
}

/// Who put the VIP address on the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressOrigin {
    /// Not on the interface.
    None,
    /// Added by lbfo; lbfo removes it when it gives the VIP up.
    Lbfo,
    /// Configured by hand; lbfo never removes it.
    Operator,
}

impl AddressOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            AddressOrigin::None => "none",
            AddressOrigin::Lbfo => "lbfo",
            AddressOrigin::Operator => "operator",
        }
    }
}

/// The map, the interface's addresses and the announcements of one
/// interface.
pub struct Owner {
    datapath: Datapath,
    netlink: Netlink,
    announcer: Arc<Announcer>,
    ifindex: u32,
    mac: [u8; 6],
    /// Who put each VIP address on the interface, as far as lbfo knows:
    /// learned at start-up and whenever lbfo takes a VIP.
    origins: HashMap<IpAddr, AddressOrigin>,
    /// Lease deadlines (jiffies) of owned VIPs.
    leases: HashMap<IpAddr, u64>,
    /// Running announcement bursts, to cancel when a VIP is given up.
    bursts: HashMap<IpAddr, CancellationToken>,
    /// Where route VIPs are announced, while any is configured.
    route_device: Option<RouteDevice>,
    tasks: TaskTracker,
}

impl Owner {
    /// `operator_addresses` are the VIP addresses found on the interface at
    /// start-up that lbfo did not add.
    pub fn new(
        datapath: Datapath,
        netlink: Netlink,
        announcer: Arc<Announcer>,
        ifindex: u32,
        mac: [u8; 6],
        operator_addresses: impl IntoIterator<Item = IpAddr>,
        tasks: TaskTracker,
    ) -> Self {
        Self {
            datapath,
            netlink,
            announcer,
            ifindex,
            mac,
            origins: operator_addresses
                .into_iter()
                .map(|a| (a, AddressOrigin::Operator))
                .collect(),
            leases: HashMap::new(),
            bursts: HashMap::new(),
            route_device: None,
            tasks,
        }
    }

    /// The device route VIPs are announced on (start-up, or the reload that
    /// brings the first route VIP).
    pub fn set_route_device(&mut self, device: RouteDevice) {
        self.route_device = Some(device);
    }

    pub fn route_device(&self) -> Option<&RouteDevice> {
        self.route_device.as_ref()
    }

    /// The data path, for reading maps and counters.
    pub fn datapath(&self) -> &Datapath {
        &self.datapath
    }

    pub fn announcements_sent(&self, addr: IpAddr) -> u64 {
        self.announcer.sent(addr)
    }

    pub fn address_origin(&self, addr: IpAddr) -> AddressOrigin {
        self.origins
            .get(&addr)
            .copied()
            .unwrap_or(AddressOrigin::None)
    }

    fn map_entry(&self, address: IpAddr, entry: &MapEntry) -> VipState {
        VipState {
            lease_deadline_jiffies: if entry.owned {
                self.leases.get(&address).copied().unwrap_or(0)
            } else {
                0
            },
            mac: self.mac,
            owned: entry.owned as u8,
            mode: entry.mode as u8,
            vip_id: entry.vip_id,
            table_slot: entry.table_slot,
            table_generation: entry.table_generation,
            flags: if entry.route {
                lbfo_common::VIP_FLAG_ROUTE
            } else {
                0
            },
        }
    }

    /// Writes a VIP's whole entry; for an owned VIP with `lease`, the lease
    /// is pushed forward first. XDP reads either the old or the new entry,
    /// never a mix.
    pub fn write(
        &mut self,
        address: IpAddr,
        entry: &MapEntry,
        lease: Option<Duration>,
    ) -> Result<(), OwnershipError> {
        if let (true, Some(lease)) = (entry.owned, lease) {
            let deadline = clock::lease_deadline(self.datapath.jiffies()?, lease);
            self.leases.insert(address, deadline);
        }
        self.datapath
            .set_vip(address, &self.map_entry(address, entry))?;
        Ok(())
    }

    /// Takes the VIP: address, then map, then the announcements. On failure
    /// nothing is left half-done: the entry is not owned and an address
    /// lbfo added is removed again.
    pub async fn take(
        &mut self,
        address: VipAddress,
        entry: &MapEntry,
        lease: Duration,
        garp: GarpConfig,
    ) -> Result<(), OwnershipError> {
        let result = if entry.route {
            self.try_announce_route(address, entry, lease).await
        } else {
            self.try_take(address, entry, lease).await
        };
        match result {
            Ok(()) => {
                if !entry.route {
                    self.announce(address.addr, garp);
                }
                Ok(())
            }
            Err(e) => {
                let not_owned = MapEntry {
                    owned: false,
                    ..*entry
                };
                if let Err(cleanup) = self.release(address, &not_owned).await {
                    tracing::error!(vip = %address, "cleaning up after a failed take: {cleanup}");
                }
                Err(e)
            }
        }
    }

    /// Takes every address of a VIP, in order, with [`Owner::take`]; if one
    /// fails, those already taken are released again, so the VIP is taken
    /// whole or not at all. The error (one line) names the address that
    /// failed.
    pub async fn take_all(
        &mut self,
        addresses: &[VipAddress],
        entry: &MapEntry,
        lease: Duration,
        garp: GarpConfig,
    ) -> Result<(), String> {
        for (taken, &address) in addresses.iter().enumerate() {
            if let Err(e) = self.take(address, entry, lease, garp).await {
                let not_owned = MapEntry {
                    owned: false,
                    ..*entry
                };
                for &undo in &addresses[..taken] {
                    if let Err(cleanup) = self.release(undo, &not_owned).await {
                        tracing::error!(vip = %undo, "cleaning up after a failed take: {cleanup}");
                    }
                }
                return Err(format!("{address}: {e}"));
            }
        }
        Ok(())
    }

    async fn try_take(
        &mut self,
        address: VipAddress,
        entry: &MapEntry,
        lease: Duration,
    ) -> Result<(), OwnershipError> {
        // Asked every time rather than remembered: an operator may have
        // added or removed the address by hand since.
        let added = self.netlink.add_address(self.ifindex, address).await?;
        let origin = match (added, self.address_origin(address.addr)) {
            (true, _) => AddressOrigin::Lbfo,
            (false, AddressOrigin::Lbfo) => AddressOrigin::Lbfo,
            (false, _) => AddressOrigin::Operator,
        };
        self.origins.insert(address.addr, origin);
        self.write(address.addr, entry, Some(lease))
    }

    /// A route VIP: map first, then the host address on the route device.
    async fn try_announce_route(
        &mut self,
        address: VipAddress,
        entry: &MapEntry,
        lease: Duration,
    ) -> Result<(), OwnershipError> {
        let device = self
            .route_device
            .as_ref()
            .ok_or(OwnershipError::NoRouteDevice)?
            .index();
        self.write(address.addr, entry, Some(lease))?;
        self.netlink
            .add_address(device, host_address(address.addr))
            .await?;
        self.origins.insert(address.addr, AddressOrigin::Lbfo);
        Ok(())
    }

    /// Gives the VIP up: map first, then the address if lbfo added it (a
    /// route VIP: the address first, see the module's notes).
    pub async fn release(
        &mut self,
        address: VipAddress,
        entry: &MapEntry,
    ) -> Result<(), OwnershipError> {
        if entry.route {
            let withdrawn = match &self.route_device {
                Some(device) => {
                    self.netlink
                        .remove_address(device.index(), host_address(address.addr))
                        .await
                }
                None => Ok(()),
            };
            self.origins.remove(&address.addr);
            self.leases.remove(&address.addr);
            // Marked not owned even if the address would not go.
            self.datapath
                .set_vip(address.addr, &self.map_entry(address.addr, entry))?;
            return Ok(withdrawn?);
        }
        if let Some(burst) = self.bursts.remove(&address.addr) {
            burst.cancel();
        }
        self.leases.remove(&address.addr);
        self.datapath
            .set_vip(address.addr, &self.map_entry(address.addr, entry))?;
        if self.address_origin(address.addr) == AddressOrigin::Lbfo {
            self.netlink.remove_address(self.ifindex, address).await?;
            self.origins.remove(&address.addr);
        }
        Ok(())
    }

    /// Removes a VIP that left the configuration from the map.
    pub fn forget(&mut self, address: IpAddr) -> Result<(), OwnershipError> {
        self.leases.remove(&address);
        self.datapath.remove_vip(address)?;
        Ok(())
    }

    /// Starts an announcement burst for an owned VIP (cancelling any
    /// running one): gratuitous ARP, or unsolicited Neighbour
    /// Advertisements for an IPv6 VIP, at the same count and interval. The first announcement goes out now, before anything
    /// else the caller does (a new Master's first advertisement, say); the
    /// rest of the burst follows from a task.
    pub fn announce(&mut self, addr: IpAddr, garp: GarpConfig) {
        if let Some(previous) = self.bursts.remove(&addr) {
            previous.cancel();
        }
        if garp.count == 0 {
            return;
        }
        if let Err(e) = self.announcer.announce(self.mac, addr) {
            tracing::warn!(vip = %addr, "announcement not sent: {e}");
        }
        if garp.count == 1 {
            return;
        }
        let cancel = CancellationToken::new();
        self.bursts.insert(addr, cancel.clone());
        self.tasks.spawn(self.announcer.clone().burst(
            self.mac,
            addr,
            garp.count - 1,
            Duration::from_millis(garp.interval_ms),
            cancel,
        ));
    }

    /// Backends first, then the table into its idle generation.
    pub fn publish(&mut self, update: &TableUpdate) -> Result<(), OwnershipError> {
        self.datapath.publish(update)?;
        Ok(())
    }

    pub fn clear_backends(&mut self, ids: &[u32]) -> Result<(), OwnershipError> {
        for &id in ids {
            self.datapath
                .set_backend(id, &lbfo_common::Backend::default())?;
        }
        Ok(())
    }

    pub fn reset_counters(&mut self, vip_id: u32) -> Result<(), OwnershipError> {
        self.datapath.reset_counters(vip_id)?;
        Ok(())
    }

    /// Cancels every running burst (shutdown).
    pub fn stop_announcing(&mut self) {
        for (_, burst) in self.bursts.drain() {
            burst.cancel();
        }
    }

    pub async fn detach(&mut self, mode: XdpAttachMode) -> std::io::Result<()> {
        self.netlink.detach_xdp(self.ifindex, mode).await
    }
}
