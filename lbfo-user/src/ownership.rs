//! Taking and giving up a VIP: the address on the interface, the entry in the
//! XDP map and the gratuitous ARP burst, always in the order that leaves no
//! moment where the kernel, rather than XDP, could answer for the VIP.
//!
//! Taking: add the address (so local services accept the traffic), then mark
//! the map owned (XDP starts answering ARP), then announce.
//! Giving up: mark the map not owned first (XDP stops answering at once),
//! then remove the address, and only if lbfo added it.

use std::{sync::Arc, time::Duration};

use lbfo_common::{VipMode, VipState};
use tokio_util::sync::CancellationToken;

use crate::{
    announce::Announcer,
    clock,
    config::{GarpConfig, VipAddress},
    datapath::{Datapath, DatapathError},
    netlink::{Netlink, NetlinkError},
};

#[derive(Debug, thiserror::Error)]
pub enum OwnershipError {
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error(transparent)]
    Datapath(#[from] DatapathError),
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

/// One VIP's ownership as the data plane and the interface see it.
#[derive(Debug)]
pub struct VipOwnership {
    pub address: VipAddress,
    pub vip_id: u32,
    pub owned: bool,
    /// In jiffies (see [`crate::clock`]).
    pub lease_deadline: u64,
    pub origin: AddressOrigin,
    /// Local or balanced, and for balanced VIPs which table is live.
    pub mode: VipMode,
    pub table_slot: u16,
    pub table_generation: u8,
    garp: Option<CancellationToken>,
}

impl VipOwnership {
    pub fn new(address: VipAddress, vip_id: u32) -> Self {
        Self {
            address,
            vip_id,
            owned: false,
            lease_deadline: 0,
            origin: AddressOrigin::None,
            mode: VipMode::Local,
            table_slot: 0,
            table_generation: 0,
            garp: None,
        }
    }

    fn map_entry(&self, mac: [u8; 6]) -> VipState {
        VipState {
            lease_deadline_jiffies: if self.owned { self.lease_deadline } else { 0 },
            mac,
            owned: self.owned as u8,
            mode: self.mode as u8,
            vip_id: self.vip_id,
            table_slot: self.table_slot,
            table_generation: self.table_generation,
            _pad: 0,
        }
    }
}

/// The pieces that change when ownership changes, held together so every
/// change goes through the same ordered steps.
pub struct Owner {
    pub datapath: Datapath,
    pub netlink: Netlink,
    pub announcer: Arc<Announcer>,
    pub ifindex: u32,
    pub mac: [u8; 6],
    pub garp: GarpConfig,
}

impl Owner {
    /// Writes a VIP's whole map entry as it stands: at start-up (not owned,
    /// so XDP drops ARP and traffic for it) and after a balanced VIP's table
    /// generation changed (ownership and lease untouched).
    pub fn write_entry(&mut self, vip: &VipOwnership) -> Result<(), OwnershipError> {
        self.datapath
            .set_vip(vip.address.addr, &vip.map_entry(self.mac))?;
        Ok(())
    }

    /// Forgets a VIP that left the configuration (after [`Owner::release`]).
    pub fn unregister(&mut self, vip: &VipOwnership) -> Result<(), OwnershipError> {
        self.datapath.remove_vip(vip.address.addr)?;
        Ok(())
    }

    /// Takes the VIP: address, then map, then gratuitous ARP. Idempotent.
    pub async fn take(
        &mut self,
        vip: &mut VipOwnership,
        lease: Duration,
    ) -> Result<(), OwnershipError> {
        if !vip.owned {
            vip.origin = self.ensure_address(vip.address).await?;
        }
        let was_owned = vip.owned;
        vip.owned = true;
        vip.lease_deadline = clock::lease_deadline(self.datapath.jiffies()?, lease);
        if let Err(e) = self
            .datapath
            .set_vip(vip.address.addr, &vip.map_entry(self.mac))
        {
            vip.owned = was_owned;
            return Err(e.into());
        }
        if !was_owned {
            self.announce(vip);
        }
        Ok(())
    }

    /// Starts a gratuitous ARP burst for an owned VIP (cancelling any running one).
    pub fn announce(&mut self, vip: &mut VipOwnership) {
        if let Some(previous) = vip.garp.take() {
            previous.cancel();
        }
        if self.garp.count == 0 {
            return;
        }
        // The first announcement goes out now, before anything else the
        // caller does (a new Master's first advertisement, say); the rest
        // of the burst follows from a task.
        if let Err(e) = self.announcer.announce(self.mac, vip.address.addr) {
            tracing::warn!(vip = %vip.address.addr, "gratuitous ARP not sent: {e}");
        }
        if self.garp.count == 1 {
            return;
        }
        let cancel = CancellationToken::new();
        vip.garp = Some(cancel.clone());
        let interval = Duration::from_millis(self.garp.interval_ms);
        tokio::spawn(self.announcer.clone().burst(
            self.mac,
            vip.address.addr,
            self.garp.count - 1,
            interval,
            cancel,
        ));
    }

    /// Pushes the lease of an owned VIP forward.
    pub fn renew(&mut self, vip: &mut VipOwnership, lease: Duration) -> Result<(), OwnershipError> {
        if !vip.owned {
            return Ok(());
        }
        vip.lease_deadline = clock::lease_deadline(self.datapath.jiffies()?, lease);
        self.datapath
            .set_vip(vip.address.addr, &vip.map_entry(self.mac))?;
        Ok(())
    }

    /// Gives the VIP up: map first, then the address if lbfo added it. Idempotent.
    pub async fn release(&mut self, vip: &mut VipOwnership) -> Result<(), OwnershipError> {
        if let Some(garp) = vip.garp.take() {
            garp.cancel();
        }
        vip.owned = false;
        vip.lease_deadline = 0;
        self.datapath
            .set_vip(vip.address.addr, &vip.map_entry(self.mac))?;
        if vip.origin == AddressOrigin::Lbfo {
            self.netlink
                .remove_address(self.ifindex, vip.address.addr, vip.address.prefix_len)
                .await?;
            vip.origin = AddressOrigin::None;
        }
        Ok(())
    }

    /// Makes sure the VIP address is on the interface; tells who put it there.
    async fn ensure_address(
        &mut self,
        address: VipAddress,
    ) -> Result<AddressOrigin, OwnershipError> {
        match self.address_origin(address).await? {
            AddressOrigin::None => {
                self.netlink.add_address(self.ifindex, address).await?;
                Ok(AddressOrigin::Lbfo)
            }
            origin => Ok(origin),
        }
    }

    /// What is on the interface for this VIP right now.
    pub async fn address_origin(
        &self,
        address: VipAddress,
    ) -> Result<AddressOrigin, OwnershipError> {
        let present = self
            .netlink
            .addresses(self.ifindex)
            .await?
            .into_iter()
            .find(|a| a.addr == address.addr);
        Ok(match present {
            Some(a) if a.added_by_lbfo => AddressOrigin::Lbfo,
            Some(_) => AddressOrigin::Operator,
            None => AddressOrigin::None,
        })
    }
}
