//! VRRP on the wire: raw IPv4 sockets for protocol 112 on the VIP interface.
//!
//! Two sockets, because a raw socket bound to an address only receives
//! packets sent to that address: the sender is bound to the interface's
//! primary address (so every advertisement carries it as source, which
//! peers use for the tie-break), the receiver is unbound and joined to
//! 224.0.0.18.

use std::{
    io,
    mem::MaybeUninit,
    net::{Ipv4Addr, SocketAddrV4},
    num::NonZeroU32,
};

use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;

use super::packet::{Advertisement, IPPROTO_VRRP, Reject, VRRP_MULTICAST, VRRP_TTL};

/// One received VRRP packet with the IP header fields the receive checks need.
#[derive(Debug, Clone)]
pub struct Received {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub payload: Vec<u8>,
}

impl Received {
    /// The advertisement in this packet, or why it is not one to act on.
    /// `None` for our own advertisements (from `primary`): one looped back
    /// after our priority changed would look like another Master.
    pub fn decode(&self, primary: Ipv4Addr) -> Option<Result<Advertisement, Reject>> {
        (self.src != primary)
            .then(|| Advertisement::decode(&self.payload, self.src, self.dst, self.ttl))
    }
}

/// The VRRP sockets of one interface, sending from its primary address.
pub struct VrrpSocket {
    rx: AsyncFd<Socket>,
    tx: Socket,
    primary: Ipv4Addr,
}

impl VrrpSocket {
    pub fn open(ifname: &str, ifindex: u32, primary: Ipv4Addr) -> io::Result<Self> {
        let index =
            NonZeroU32::new(ifindex).ok_or_else(|| io::Error::other("interface index 0"))?;

        let rx = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(IPPROTO_VRRP as i32)),
        )?;
        rx.bind_device_by_index_v4(Some(index))?;
        rx.join_multicast_v4_n(&VRRP_MULTICAST, &InterfaceIndexOrAddress::Index(ifindex))?;
        rx.set_nonblocking(true)?;
        rx.set_cloexec(true)?;

        let tx = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(IPPROTO_VRRP as i32)),
        )?;
        tx.bind_device(Some(ifname.as_bytes()))?;
        tx.bind(&SocketAddrV4::new(primary, 0).into())?;
        tx.set_multicast_if_v4(&primary)?;
        tx.set_multicast_ttl_v4(VRRP_TTL as u32)?;
        tx.set_ttl_v4(VRRP_TTL as u32)?;
        // Our own advertisements must not come back to us as if from a peer.
        tx.set_multicast_loop_v4(false)?;
        tx.set_nonblocking(true)?;
        tx.set_cloexec(true)?;
        // Never read from (unicast advertisements to our address reach the
        // receiver too): keep what the kernel queues here to the minimum.
        tx.set_recv_buffer_size(0)?;

        // SAFETY: `rx` is an open socket owned by the AsyncFd for its whole life.
        let rx = unsafe { AsyncFd::register_with_interest(rx, tokio::io::Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Self { rx, tx, primary })
    }

    /// The source address of every advertisement sent here.
    pub fn primary(&self) -> Ipv4Addr {
        self.primary
    }

    /// Sends an advertisement: to each unicast peer if there are any, else
    /// to the VRRP multicast group.
    pub fn send_advert(
        &self,
        advert: &Advertisement,
        unicast_peers: &[Ipv4Addr],
    ) -> io::Result<()> {
        let multicast = [VRRP_MULTICAST];
        let destinations = if unicast_peers.is_empty() {
            &multicast[..]
        } else {
            unicast_peers
        };
        for &dst in destinations {
            // The checksum covers the IP source and destination, so encode per destination.
            let addr: SockAddr = SocketAddrV4::new(dst, 0).into();
            self.tx.send_to(&advert.encode(self.primary, dst), &addr)?;
        }
        Ok(())
    }

    /// Waits for the next VRRP packet. Cancel-safe: nothing is read until
    /// the socket is readable.
    pub async fn recv(&self) -> io::Result<Received> {
        loop {
            let mut guard = self.rx.readable().await?;
            let mut buf = [MaybeUninit::<u8>::uninit(); 2048];
            match guard.try_io(|fd| fd.get_ref().recv(&mut buf)) {
                Ok(Ok(len)) => {
                    // SAFETY: recv initialised the first `len` bytes.
                    let bytes: Vec<u8> = buf[..len]
                        .iter()
                        .map(|b| unsafe { b.assume_init() })
                        .collect();
                    if let Some(received) = parse_ipv4(&bytes) {
                        return Ok(received);
                    }
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
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
        src: field(12),
        dst: field(16),
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
            (Ipv4Addr::new(192, 0, 2, 11), VRRP_MULTICAST, 255)
        );
        assert_eq!(r.payload, vec![0x31, 51, 150, 1, 0, 100, 0, 0]);
        assert!(parse_ipv4(&p[..10]).is_none(), "short packet");
        let mut v6 = p.clone();
        v6[0] = 0x65;
        assert!(parse_ipv4(&v6).is_none(), "not IPv4");
    }
}
