//! When a VRRP router's advertisements arrive in a lab namespace: a raw
//! socket for IP protocol 112 there, filtered on the sender's address.

use std::{
    io::{IoSliceMut, Read as _},
    net::Ipv4Addr,
    os::fd::AsRawFd as _,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use nix::sys::socket::{self, ControlMessageOwned, MsgFlags, sockopt};

use crate::lab;

/// RFC 5798's group for IPv4 advertisements.
const VRRP_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);

pub struct AdvertWatch {
    socket: socket2::Socket,
    from: Ipv4Addr,
}

impl AdvertWatch {
    /// Watches for advertisements from `from` in namespace `ns`. The kernel
    /// hands a raw socket the group's packets only where something joined
    /// 224.0.0.18 (a VRRP router does); elsewhere call [`AdvertWatch::join`].
    pub fn open(ns: &str, from: Ipv4Addr) -> Result<AdvertWatch> {
        let socket = lab::in_netns(ns, || {
            socket2::Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::RAW,
                Some(socket2::Protocol::from(112)),
            )
        })?
        .context("opening a raw socket for VRRP")?;
        // Receive times taken by the kernel as each packet arrives, so the
        // watcher's own scheduling delays do not show up as the sender's.
        socket::setsockopt(&socket, sockopt::ReceiveTimestampns, &true)
            .context("SO_TIMESTAMPNS on the VRRP watch socket")?;
        Ok(AdvertWatch { socket, from })
    }

    /// Watches the advertisements `from` sends, in its own namespace `ns`,
    /// as they leave: a packet socket sees every packet handed to the
    /// namespace's interfaces, outgoing ones included, and the kernel stamps
    /// an outgoing one as the device takes it. These times are the sender's
    /// own, free of the receive path of the segment and of another
    /// namespace's softirq scheduling.
    pub fn open_sender(ns: &str, from: Ipv4Addr) -> Result<AdvertWatch> {
        let socket = lab::in_netns(ns, || {
            socket2::Socket::new(
                socket2::Domain::PACKET,
                socket2::Type::DGRAM,
                // ETH_P_ALL: the kernel hands outgoing packets only to
                // sockets of every protocol.
                Some(socket2::Protocol::from(i32::from(
                    (libc::ETH_P_ALL as u16).to_be(),
                ))),
            )
        })?
        .context("opening a packet socket for VRRP")?;
        // Only IP protocol 112 is queued (byte 9 of the network header): the
        // Master's interface also carries the checks' and scrapes' traffic,
        // which would fill the socket's queue and drop advertisements.
        use socket2::SockFilter;
        let vrrp_only = [
            SockFilter::new(0x30, 0, 0, 9),      // ldb [9]
            SockFilter::new(0x15, 0, 1, 112),    // jeq #112
            SockFilter::new(0x06, 0, 0, 0xffff), // ret: the packet
            SockFilter::new(0x06, 0, 0, 0),      // ret: nothing
        ];
        socket
            .attach_filter(&vrrp_only)
            .context("a VRRP filter on the packet socket")?;
        socket::setsockopt(&socket, sockopt::ReceiveTimestampns, &true)
            .context("SO_TIMESTAMPNS on the VRRP tap")?;
        Ok(AdvertWatch { socket, from })
    }

    /// Joins 224.0.0.18 on the interface with address `local`, for a
    /// namespace in which no VRRP router runs.
    pub fn join(&self, local: Ipv4Addr) -> Result<()> {
        self.socket
            .join_multicast_v4(&VRRP_GROUP, &local)
            .with_context(|| format!("joining {VRRP_GROUP} on {local}"))
    }

    /// The source of the next packet; `None` when none came in time (or,
    /// on a non-blocking socket, none is queued).
    fn read_source(&self) -> Option<Ipv4Addr> {
        let mut buf = [0u8; 1500];
        let n = (&self.socket).read(&mut buf).ok()?;
        source(&buf[..n])
    }

    /// Forgets the packets queued so far.
    fn drain(&self) -> Result<()> {
        self.socket.set_nonblocking(true)?;
        while self.read_source().is_some() {}
        self.socket.set_nonblocking(false)?;
        Ok(())
    }

    /// Returns as soon as the next advertisement from the router arrives.
    pub fn next_advert(&self, within: Duration) -> Result<()> {
        self.drain()?;
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("no advertisement from {} within {within:?}", self.from);
            }
            self.socket
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
            if self.read_source() == Some(self.from) {
                return Ok(());
            }
        }
    }

    /// The kernel's receive time (wall clock, since the Unix epoch) of every
    /// advertisement from the router that arrives within `window`, at most
    /// `max` of them.
    pub fn record(&self, window: Duration, max: usize) -> Result<Vec<Duration>> {
        self.drain()?;
        let deadline = Instant::now() + window;
        let mut arrivals = Vec::new();
        while arrivals.len() < max {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            self.socket
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
            if let Some((src, at)) = self.receive_stamped()
                && src == self.from
            {
                arrivals.push(at);
            }
        }
        Ok(arrivals)
    }

    /// One packet's source and kernel receive time; `None` on a timeout or
    /// a packet without either.
    fn receive_stamped(&self) -> Option<(Ipv4Addr, Duration)> {
        let mut buf = [0u8; 1500];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut control = nix::cmsg_space!(nix::sys::time::TimeSpec);
        let msg = socket::recvmsg::<()>(
            self.socket.as_raw_fd(),
            &mut iov,
            Some(&mut control),
            MsgFlags::empty(),
        )
        .ok()?;
        let len = msg.bytes;
        let at = msg.cmsgs().ok()?.find_map(|c| match c {
            ControlMessageOwned::ScmTimestampns(ts) => Some(Duration::new(
                u64::try_from(ts.tv_sec()).ok()?,
                u32::try_from(ts.tv_nsec()).ok()?,
            )),
            _ => None,
        })?;
        Some((source(&buf[..len])?, at))
    }
}

/// Both sockets hand over the packet from its network header on: IPv4
/// (version 4 in the first nibble; the packet socket sees every protocol),
/// protocol 112 (byte 9), the source at bytes 12..16.
fn source(packet: &[u8]) -> Option<Ipv4Addr> {
    (packet.len() >= 20 && packet[0] >> 4 == 4 && packet[9] == 112)
        .then(|| Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]))
}
