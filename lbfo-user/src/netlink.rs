//! Everything lbfo asks of the kernel over rtnetlink: the interface, its
//! addresses and its XDP attachment. One [`Netlink`] (one rtnetlink
//! connection) serves the whole daemon.

use std::{net::IpAddr, os::fd::AsRawFd};

use futures::{StreamExt as _, TryStreamExt as _};
use rtnetlink::{
    Handle, LinkUnspec,
    packet_core::NetlinkPayload,
    packet_route::{
        AddressFamily, RouteNetlinkMessage,
        address::{
            AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressProtocol,
            CacheInfo,
        },
        link::{LinkAttribute, LinkFlags, LinkMessage, LinkXdp, XdpAttached},
    },
};

use crate::config::VipAddress;

/// Tag (IFA_PROTO) on every address lbfo adds, so lbfo removes only
/// addresses it added itself, also after a crash, and never one an operator
/// configured by hand.
pub const LBFO_ADDRESS_PROTOCOL: u8 = 0x4c;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("interface {0} does not exist")]
    NoSuchInterface(String),
    #[error("interface {0} has no Ethernet MAC address (lbfo needs an Ethernet interface)")]
    NotEthernet(String),
    #[error("{what}: {source}")]
    Request {
        what: String,
        source: std::io::Error,
    },
    #[error("cannot open rtnetlink socket: {0}")]
    Connect(std::io::Error),
}

/// What lbfo needs to know about the VIP interface.
#[derive(Debug, Clone)]
pub struct Interface {
    pub name: String,
    pub index: u32,
    pub mac: [u8; 6],
    /// Up and with a carrier (IFF_UP and IFF_RUNNING): frames can flow.
    pub has_link: bool,
    /// The program currently attached to the interface, if any.
    pub xdp: Option<AttachedXdp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttachedXdp {
    pub prog_id: u32,
    pub mode: XdpAttachMode,
}

/// The mode an XDP program is actually attached in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpAttachMode {
    Native,
    Generic,
}

impl XdpAttachMode {
    fn flag(self) -> u32 {
        match self {
            XdpAttachMode::Native => XDP_FLAGS_DRV_MODE,
            XdpAttachMode::Generic => XDP_FLAGS_SKB_MODE,
        }
    }
}

impl std::fmt::Display for XdpAttachMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            XdpAttachMode::Native => "native",
            XdpAttachMode::Generic => "generic",
        })
    }
}

/// A lifetime that never runs out (linux/if_addr.h).
const INFINITY_LIFE_TIME: u32 = u32::MAX;

// From linux/if_link.h.
const XDP_FLAGS_UPDATE_IF_NOEXIST: u32 = 1 << 0;
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// An address found on the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterfaceAddress {
    pub addr: IpAddr,
    pub prefix_len: u8,
    /// Added by lbfo (carries [`LBFO_ADDRESS_PROTOCOL`]).
    pub added_by_lbfo: bool,
}

#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

fn io_error(e: rtnetlink::Error) -> std::io::Error {
    match e {
        rtnetlink::Error::NetlinkError(msg) => match msg.code {
            Some(code) => std::io::Error::from_raw_os_error(-code.get()),
            None => std::io::Error::other("netlink error without code"),
        },
        other => std::io::Error::other(other.to_string()),
    }
}

impl Netlink {
    /// Opens the connection; its driver runs as a tokio task.
    pub fn connect() -> Result<Self, NetlinkError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Connect)?;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    pub async fn interface(&self, name: &str) -> Result<Interface, NetlinkError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        let link = match links.try_next().await {
            Ok(Some(link)) => link,
            Ok(None) => return Err(NetlinkError::NoSuchInterface(name.to_string())),
            Err(e) => {
                let e = io_error(e);
                if e.raw_os_error() == Some(libc::ENODEV) {
                    return Err(NetlinkError::NoSuchInterface(name.to_string()));
                }
                return Err(NetlinkError::Request {
                    what: format!("looking up interface {name}"),
                    source: e,
                });
            }
        };
        interface_from_message(name, &link)
    }

    /// IPv4 and IPv6 addresses on the interface.
    pub async fn addresses(&self, index: u32) -> Result<Vec<InterfaceAddress>, NetlinkError> {
        let mut stream = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        let mut out = Vec::new();
        let what = || format!("listing addresses of interface {index}");
        while let Some(msg) = stream.try_next().await.map_err(|e| NetlinkError::Request {
            what: what(),
            source: io_error(e),
        })? {
            let family = msg.header.family;
            if msg.header.index != index
                || (family != AddressFamily::Inet && family != AddressFamily::Inet6)
            {
                continue;
            }
            let mut addr = None;
            let mut added_by_lbfo = false;
            for attr in &msg.attributes {
                match attr {
                    // IPv4 point-to-point links have both; IPv6 addresses only Address.
                    AddressAttribute::Local(a) => addr = Some(*a),
                    AddressAttribute::Address(a) if addr.is_none() => addr = Some(*a),
                    AddressAttribute::Protocol(p) => {
                        added_by_lbfo = u8::from(*p) == LBFO_ADDRESS_PROTOCOL
                    }
                    _ => {}
                }
            }
            if let Some(addr) = addr {
                out.push(InterfaceAddress {
                    addr,
                    prefix_len: msg.header.prefix_len,
                    added_by_lbfo,
                });
            }
        }
        Ok(out)
    }

    /// Adds `vip` tagged as lbfo's. Adding an address that is already there
    /// is not an error: the answer says whether lbfo added it (`true`) or
    /// found it there (`false`).
    ///
    /// An IPv6 VIP skips duplicate address detection (IFA_F_NODAD): the
    /// previous owner may still hold the address for a moment while
    /// ownership moves, and a detected duplicate would leave it `dadfailed`
    /// and unusable for good. A /128 gets a preferred lifetime of 0, so the
    /// kernel never picks the VIP as the source of connections it starts.
    pub async fn add_address(&self, index: u32, vip: VipAddress) -> Result<bool, NetlinkError> {
        let mut req = self.handle.address().add(index, vip.addr, vip.prefix_len);
        let message = req.message_mut();
        message
            .attributes
            .push(AddressAttribute::Protocol(AddressProtocol::from(
                LBFO_ADDRESS_PROTOCOL,
            )));
        if vip.addr.is_ipv6() {
            message.header.flags |= AddressHeaderFlags::Nodad;
            message
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
            if vip.prefix_len == 128 {
                let mut lifetimes = CacheInfo::default();
                lifetimes.ifa_preferred = 0;
                lifetimes.ifa_valid = INFINITY_LIFE_TIME;
                message
                    .attributes
                    .push(AddressAttribute::CacheInfo(lifetimes));
            }
        }
        match req.execute().await.map_err(io_error) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
            Err(source) => Err(NetlinkError::Request {
                what: format!("adding address {vip}"),
                source,
            }),
        }
    }

    /// Removes `vip` from the interface. Removing an absent address is not an error.
    pub async fn remove_address(&self, index: u32, vip: VipAddress) -> Result<(), NetlinkError> {
        let mut msg = AddressMessage::default();
        msg.header.family = if vip.addr.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        msg.header.prefix_len = vip.prefix_len;
        msg.header.index = index;
        if vip.addr.is_ipv4() {
            msg.attributes.push(AddressAttribute::Local(vip.addr));
        }
        msg.attributes.push(AddressAttribute::Address(vip.addr));
        match self
            .handle
            .address()
            .del(msg)
            .execute()
            .await
            .map_err(io_error)
        {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => Ok(()),
            Err(source) => Err(NetlinkError::Request {
                what: format!("removing address {vip}"),
                source,
            }),
        }
    }

    /// The MACs the neighbour tables (ARP and IPv6 Neighbour Discovery)
    /// know on an interface, for entries that are usable (reachable, stale,
    /// delay, probe or permanent).
    pub async fn neighbours(
        &self,
        index: u32,
    ) -> Result<std::collections::HashMap<IpAddr, [u8; 6]>, NetlinkError> {
        let mut out = std::collections::HashMap::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            self.neighbours_of(index, family, &mut out).await?;
        }
        Ok(out)
    }

    async fn neighbours_of(
        &self,
        index: u32,
        family: AddressFamily,
        out: &mut std::collections::HashMap<IpAddr, [u8; 6]>,
    ) -> Result<(), NetlinkError> {
        use rtnetlink::packet_route::neighbour::{
            NeighbourAddress, NeighbourAttribute, NeighbourState,
        };
        let mut stream = self
            .handle
            .neighbours()
            .get()
            .set_address_family(family)
            .execute();
        while let Some(msg) = stream.try_next().await.map_err(|e| NetlinkError::Request {
            what: "listing neighbours".into(),
            source: io_error(e),
        })? {
            let usable = matches!(
                msg.header.state,
                NeighbourState::Reachable
                    | NeighbourState::Stale
                    | NeighbourState::Delay
                    | NeighbourState::Probe
                    | NeighbourState::Permanent
            );
            if msg.header.ifindex != index || !usable {
                continue;
            }
            let mut addr = None;
            let mut mac = None;
            for attr in &msg.attributes {
                match attr {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                        addr = Some(IpAddr::V4(*a))
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                        addr = Some(IpAddr::V6(*a))
                    }
                    NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => {
                        mac = <[u8; 6]>::try_from(l.as_slice()).ok()
                    }
                    _ => {}
                }
            }
            if let (Some(addr), Some(mac)) = (addr, mac) {
                out.insert(addr, mac);
            }
        }
        Ok(())
    }

    /// Asks the kernel to resolve `addr` on the interface, by ARP or by
    /// Neighbour Solicitation (as `ip neigh replace ADDR dev IF use` does:
    /// with NTF_USE the kernel only starts resolution, the state given is
    /// not written), so its MAC appears in the table.
    pub async fn solicit(&self, index: u32, addr: IpAddr) -> Result<(), NetlinkError> {
        use rtnetlink::packet_route::neighbour::{NeighbourFlags, NeighbourState};
        self.handle
            .neighbours()
            .add(index, addr)
            .state(NeighbourState::Permanent)
            .flags(NeighbourFlags::Use)
            .replace()
            .execute()
            .await
            .map_err(|e| NetlinkError::Request {
                what: format!("resolving {addr}"),
                source: io_error(e),
            })
    }

    /// Sets the interface up (`ip link set dev X up`).
    pub async fn set_up(&self, index: u32) -> Result<(), NetlinkError> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|e| NetlinkError::Request {
                what: format!("setting interface {index} up"),
                source: io_error(e),
            })
    }

    /// Attaches an XDP program the way `ip link set dev X xdp` does: owned by
    /// the interface, not by this process, so it stays in place (and keeps
    /// dropping ARP for VIPs whose lease ran out) if the daemon is killed.
    ///
    /// With `replace` false this fails with EBUSY if any program is attached.
    pub async fn attach_xdp(
        &self,
        index: u32,
        prog: &impl AsRawFd,
        mode: XdpAttachMode,
        replace: bool,
    ) -> Result<(), std::io::Error> {
        let mut flags = mode.flag();
        if !replace {
            flags |= XDP_FLAGS_UPDATE_IF_NOEXIST;
        }
        self.set_xdp(index, prog.as_raw_fd(), flags).await
    }

    /// Detaches whatever XDP program is attached in `mode`.
    pub async fn detach_xdp(&self, index: u32, mode: XdpAttachMode) -> Result<(), std::io::Error> {
        self.set_xdp(index, -1, mode.flag()).await
    }

    async fn set_xdp(&self, index: u32, fd: i32, flags: u32) -> Result<(), std::io::Error> {
        let msg = LinkUnspec::new_with_index(index)
            .append_extra_attribute(LinkAttribute::Xdp(vec![
                LinkXdp::Fd(fd),
                LinkXdp::Flags(flags),
            ]))
            .build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(io_error)
    }
}

fn interface_from_message(name: &str, link: &LinkMessage) -> Result<Interface, NetlinkError> {
    let mut mac = None;
    let mut xdp = None;
    for attr in &link.attributes {
        match attr {
            LinkAttribute::Address(bytes) if bytes.len() == 6 => {
                mac = Some(<[u8; 6]>::try_from(bytes.as_slice()).expect("length checked"));
            }
            LinkAttribute::Xdp(xdp_attrs) => {
                let mut prog_id = None;
                let mut mode = None;
                for a in xdp_attrs {
                    match a {
                        LinkXdp::ProgId(id) => prog_id = Some(*id),
                        LinkXdp::Attached(XdpAttached::Driver) => {
                            mode = Some(XdpAttachMode::Native)
                        }
                        LinkXdp::Attached(XdpAttached::SocketBuffer) => {
                            mode = Some(XdpAttachMode::Generic)
                        }
                        _ => {}
                    }
                }
                if let (Some(prog_id), Some(mode)) = (prog_id, mode) {
                    xdp = Some(AttachedXdp { prog_id, mode });
                }
            }
            _ => {}
        }
    }
    let mac = mac
        .filter(|m| *m != [0; 6])
        .ok_or_else(|| NetlinkError::NotEthernet(name.to_string()))?;
    Ok(Interface {
        name: name.to_string(),
        index: link.header.index,
        mac,
        has_link: has_link(link),
        xdp,
    })
}

fn has_link(link: &LinkMessage) -> bool {
    link.header.flags.contains(LinkFlags::Up) && link.header.flags.contains(LinkFlags::Running)
}

/// Whether the interface has a link, as the kernel announces changes to it
/// (RTNLGRP_LINK): `true` for up with a carrier, `false` for down, no
/// carrier or deleted. Open it before reading the interface's state, so no
/// change falls between the two.
pub fn watch_link(
    ifindex: u32,
) -> Result<tokio::sync::mpsc::UnboundedReceiver<bool>, NetlinkError> {
    let (connection, _handle, mut messages) =
        rtnetlink::new_multicast_connection(&[rtnetlink::MulticastGroup::Link])
            .map_err(NetlinkError::Connect)?;
    tokio::spawn(connection);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some((message, _)) = messages.next().await {
            let has = match message.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link))
                    if link.header.index == ifindex =>
                {
                    has_link(&link)
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link))
                    if link.header.index == ifindex =>
                {
                    false
                }
                _ => continue,
            };
            if tx.send(has).is_err() {
                return;
            }
        }
        tracing::error!(
            "the kernel's link notifications stopped; a lost link will not be noticed until lbfo restarts"
        );
    });
    Ok(rx)
}
