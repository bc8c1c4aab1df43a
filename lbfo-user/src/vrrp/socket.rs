//! VRRP on the wire: raw sockets for protocol 112 on the VIP interface, one
//! pair per family.
//!
//! Two sockets, because a raw socket bound to an address only receives
//! packets sent to that address: the sender is bound to the node's source
//! address (so every advertisement carries it as source, which peers use for
//! the tie-break: for IPv4 the interface's primary address, for IPv6 its
//! link-local one), the receiver is unbound and joined to 224.0.0.18 or
//! ff02::12. An IPv4 raw socket hands over the whole IP packet; an IPv6 one
//! only the payload, so the hop limit and destination the receive checks
//! need come as control messages.

use std::{
    io::{self, IoSliceMut},
    mem::MaybeUninit,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6},
    num::NonZeroU32,
    os::fd::AsRawFd as _,
    sync::Arc,
};

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrIn6, recvmsg, setsockopt,
    sockopt::{Ipv6RecvHopLimit, Ipv6RecvPacketInfo},
};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;

use super::{
    Sources,
    packet::{Advertisement, IPPROTO_VRRP, Reject, VRRP_MULTICAST, VRRP_MULTICAST_V6, VRRP_TTL},
};

/// One received VRRP packet with the IP header fields the receive checks need.
#[derive(Debug, Clone)]
pub struct Received {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    pub payload: Vec<u8>,
}

impl Received {
    /// The advertisement in this packet, or why it is not one to act on.
    /// `None` for our own advertisements (from one of `sources`): one
    /// looped back after our priority changed would look like another Master.
    pub fn decode(&self, sources: &Sources) -> Option<Result<Advertisement, Reject>> {
        (!sources.contains(self.src))
            .then(|| Advertisement::decode(&self.payload, self.src, self.dst, self.ttl))
    }
}

/// A node's VRRP sockets: one per family that has an elected VIP.
#[derive(Clone, Default)]
pub struct VrrpSockets {
    pub ipv4: Option<Arc<VrrpSocket>>,
    pub ipv6: Option<Arc<VrrpSocket>>,
}

impl VrrpSockets {
    /// The socket that sends from `source`.
    pub fn sending_from(&self, source: IpAddr) -> Option<&VrrpSocket> {
        let socket = if source.is_ipv6() {
            &self.ipv6
        } else {
            &self.ipv4
        };
        socket.as_deref().filter(|s| s.source() == source)
    }

    pub fn is_empty(&self) -> bool {
        self.ipv4.is_none() && self.ipv6.is_none()
    }

    /// The sources the open sockets send from.
    pub fn sources(&self) -> Sources {
        let source = |s: &Option<Arc<VrrpSocket>>| s.as_ref().map(|s| s.source());
        Sources {
            ipv4: source(&self.ipv4).and_then(|a| match a {
                IpAddr::V4(a) => Some(a),
                IpAddr::V6(_) => None,
            }),
            ipv6: source(&self.ipv6).and_then(|a| match a {
                IpAddr::V6(a) => Some(a),
                IpAddr::V4(_) => None,
            }),
        }
    }

    /// The next VRRP packet of either family; pending forever with no
    /// socket. Cancel-safe like [`VrrpSocket::recv`].
    pub async fn recv(&self) -> io::Result<Received> {
        async fn one(socket: Option<&VrrpSocket>) -> io::Result<Received> {
            match socket {
                Some(socket) => socket.recv().await,
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            received = one(self.ipv4.as_deref()) => received,
            received = one(self.ipv6.as_deref()) => received,
        }
    }
}

/// The VRRP sockets of one interface and family, sending from `source`.
pub struct VrrpSocket {
    rx: AsyncFd<Socket>,
    tx: Socket,
    source: IpAddr,
    ifindex: u32,
}

impl VrrpSocket {
    pub fn open(ifname: &str, ifindex: u32, source: IpAddr) -> io::Result<Self> {
        let index =
            NonZeroU32::new(ifindex).ok_or_else(|| io::Error::other("interface index 0"))?;
        let domain = match source {
            IpAddr::V4(_) => Domain::IPV4,
            IpAddr::V6(_) => Domain::IPV6,
        };
        let raw = || Socket::new(domain, Type::RAW, Some(Protocol::from(IPPROTO_VRRP as i32)));

        let rx = raw()?;
        let tx = raw()?;
        tx.bind_device(Some(ifname.as_bytes()))?;
        match source {
            IpAddr::V4(source) => {
                rx.bind_device_by_index_v4(Some(index))?;
                rx.join_multicast_v4_n(&VRRP_MULTICAST, &InterfaceIndexOrAddress::Index(ifindex))?;
                tx.bind(&SocketAddrV4::new(source, 0).into())?;
                tx.set_multicast_if_v4(&source)?;
                tx.set_multicast_ttl_v4(VRRP_TTL as u32)?;
                tx.set_ttl_v4(VRRP_TTL as u32)?;
                // Our own advertisements must not come back to us as if from a peer.
                tx.set_multicast_loop_v4(false)?;
            }
            IpAddr::V6(source) => {
                rx.bind_device_by_index_v6(Some(index))?;
                rx.join_multicast_v6(&VRRP_MULTICAST_V6, ifindex)?;
                setsockopt(&rx, Ipv6RecvHopLimit, &true).map_err(io::Error::from)?;
                setsockopt(&rx, Ipv6RecvPacketInfo, &true).map_err(io::Error::from)?;
                // A link-local source needs its interface as scope.
                tx.bind(&SocketAddrV6::new(source, 0, 0, ifindex).into())?;
                tx.set_multicast_if_v6(ifindex)?;
                tx.set_multicast_hops_v6(VRRP_TTL as u32)?;
                tx.set_unicast_hops_v6(VRRP_TTL as u32)?;
                tx.set_multicast_loop_v6(false)?;
            }
        }
        rx.set_nonblocking(true)?;
        rx.set_cloexec(true)?;
        tx.set_nonblocking(true)?;
        tx.set_cloexec(true)?;
        // Never read from (unicast advertisements to our address reach the
        // receiver too): keep what the kernel queues here to the minimum.
        tx.set_recv_buffer_size(0)?;

        // SAFETY: `rx` is an open socket owned by the AsyncFd for its whole life.
        let rx = unsafe { AsyncFd::register_with_interest(rx, tokio::io::Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Self {
            rx,
            tx,
            source,
            ifindex,
        })
    }

    /// The source address of every advertisement sent here.
    pub fn source(&self) -> IpAddr {
        self.source
    }

    /// Sends an advertisement: to each unicast peer if there are any, else
    /// to the VRRP multicast group of the family.
    pub fn send_advert(&self, advert: &Advertisement, unicast_peers: &[IpAddr]) -> io::Result<()> {
        let multicast = [match self.source {
            IpAddr::V4(_) => IpAddr::V4(VRRP_MULTICAST),
            IpAddr::V6(_) => IpAddr::V6(VRRP_MULTICAST_V6),
        }];
        let destinations = if unicast_peers.is_empty() {
            &multicast[..]
        } else {
            unicast_peers
        };
        for &dst in destinations {
            // The checksum covers the IP source and destination, so encode per destination.
            let addr: SockAddr = match dst {
                IpAddr::V4(dst) => SocketAddrV4::new(dst, 0).into(),
                IpAddr::V6(dst) => SocketAddrV6::new(dst, 0, 0, self.scope(dst)).into(),
            };
            self.tx.send_to(&advert.encode(self.source, dst), &addr)?;
        }
        Ok(())
    }

    /// The scope id a destination needs: the interface for link-local and
    /// link-scope multicast addresses.
    fn scope(&self, dst: Ipv6Addr) -> u32 {
        let link_scope =
            dst.is_unicast_link_local() || (dst.is_multicast() && dst.segments()[0] & 0x000f == 2);
        if link_scope { self.ifindex } else { 0 }
    }

    /// Waits for the next VRRP packet. Cancel-safe: nothing is read until
    /// the socket is readable.
    pub async fn recv(&self) -> io::Result<Received> {
        loop {
            let mut guard = self.rx.readable().await?;
            let received = match self.source {
                IpAddr::V4(_) => guard.try_io(|fd| recv_ipv4(fd.get_ref())),
                IpAddr::V6(_) => guard.try_io(|fd| recv_ipv6(fd.get_ref())),
            };
            match received {
                Ok(Ok(Some(received))) => return Ok(received),
                Ok(Ok(None)) => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

/// One packet from an IPv4 raw socket; `None` if it is not IPv4.
fn recv_ipv4(socket: &Socket) -> io::Result<Option<Received>> {
    let mut buf = [MaybeUninit::<u8>::uninit(); 2048];
    let len = socket.recv(&mut buf)?;
    // SAFETY: recv initialised the first `len` bytes.
    let bytes: Vec<u8> = buf[..len]
        .iter()
        .map(|b| unsafe { b.assume_init() })
        .collect();
    Ok(parse_ipv4(&bytes))
}

/// One payload from an IPv6 raw socket with its source, and its destination
/// and hop limit from the control messages; `None` if one is missing.
fn recv_ipv6(socket: &Socket) -> io::Result<Option<Received>> {
    let mut buf = [0u8; 2048];
    let mut cmsg = nix::cmsg_space!(libc::in6_pktinfo, libc::c_int);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<SockaddrIn6>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    )
    .map_err(io::Error::from)?;
    let (mut dst, mut ttl) = (None, None);
    for control in msg.cmsgs().map_err(io::Error::from)? {
        match control {
            ControlMessageOwned::Ipv6PacketInfo(info) => {
                dst = Some(Ipv6Addr::from(info.ipi6_addr.s6_addr));
            }
            ControlMessageOwned::Ipv6HopLimit(limit) => ttl = u8::try_from(limit).ok(),
            _ => {}
        }
    }
    let (Some(src), Some(dst), Some(ttl)) = (msg.address, dst, ttl) else {
        return Ok(None);
    };
    let len = msg.bytes;
    Ok(Some(Received {
        src: IpAddr::V6(src.ip()),
        dst: IpAddr::V6(dst),
        ttl,
        payload: buf[..len].to_vec(),
    }))
}

/// Splits a raw IPv4 packet into the fields VRRP checks and its payload.
fn parse_ipv4(packet: &[u8]) -> Option<Received> {
    let first = *packet.first()?;
    let header_len = ((first & 0x0f) as usize) * 4;
    if first >> 4 != 4 || header_len < 20 || packet.len() < header_len {
        return None;
    }
    let total_len = (u16::from_be_bytes([packet[2], packet[3]]) as usize).min(packet.len());
    let field =
        |at: usize| Ipv4Addr::new(packet[at], packet[at + 1], packet[at + 2], packet[at + 3]);
    Some(Received {
        ttl: packet[8],
        src: field(12).into(),
        dst: field(16).into(),
        payload: packet[header_len..total_len.max(header_len)].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_ip_header_of_a_received_packet() {
        let mut p = vec![
            0x45, 0, 0, 28, 0, 0, 0, 0, 255, 112, 0, 0, 192, 0, 2, 11, 224, 0, 0, 18,
        ];
        p.extend_from_slice(&[0x31, 51, 150, 1, 0, 100, 0, 0]);
        let r = parse_ipv4(&p).expect("valid packet");
        assert_eq!(
            (r.src, r.dst, r.ttl),
            (
                IpAddr::from(Ipv4Addr::new(192, 0, 2, 11)),
                IpAddr::from(VRRP_MULTICAST),
                255
            )
        );
        assert_eq!(r.payload, vec![0x31, 51, 150, 1, 0, 100, 0, 0]);
        assert!(parse_ipv4(&p[..10]).is_none(), "short packet");
        let mut v6 = p.clone();
        v6[0] = 0x65;
        assert!(parse_ipv4(&v6).is_none(), "not IPv4");
    }
}
