//! Telling the LAN that a VIP now lives at this node's MAC, so clients and
//! switches stop sending to the previous owner: gratuitous ARP for an IPv4
//! VIP, an unsolicited Neighbour Advertisement for an IPv6 one.

use std::{
    io,
    net::IpAddr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::Arc,
    time::Duration,
};

use tokio_util::sync::CancellationToken;

use crate::{arp::ArpFrame, nd};

/// A send-only AF_PACKET socket on the VIP interface.
pub struct Announcer {
    fd: OwnedFd,
    ifindex: u32,
    /// Announcements sent, by VIP (an IPv4 one's in both ARP forms), for the metrics.
    sent: std::sync::Mutex<std::collections::HashMap<IpAddr, u64>>,
}

impl Announcer {
    pub fn open(ifindex: u32) -> io::Result<Arc<Self>> {
        // Protocol 0: this socket never receives, so the kernel never queues
        // the interface's traffic to it.
        // SAFETY: plain socket(2) call; the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Arc::new(Self {
            fd,
            ifindex,
            sent: Default::default(),
        }))
    }

    /// Sends one Ethernet frame out of the interface as is.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        let ether_type = u16::from_be_bytes([frame[12], frame[13]]);
        // SAFETY: sockaddr_ll is plain data; zeroed is a valid starting value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ether_type.to_be();
        addr.sll_ifindex = self.ifindex as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: buffer and address are valid for the lengths passed.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Announces `vip` once: both gratuitous ARP forms for an IPv4 VIP, the
    /// unsolicited Neighbour Advertisement for an IPv6 one.
    pub fn announce(&self, mac: [u8; 6], vip: IpAddr) -> io::Result<()> {
        match vip {
            IpAddr::V4(v4) => {
                for frame in ArpFrame::gratuitous(mac, v4) {
                    self.send(&frame.encode())?;
                }
            }
            IpAddr::V6(v6) => self.send(&nd::unsolicited_advertisement(mac, v6))?,
        }
        *self
            .sent
            .lock()
            .expect("announcement counter lock")
            .entry(vip)
            .or_default() += 1;
        Ok(())
    }

    /// Announcements sent for `vip` so far.
    pub fn sent(&self, vip: IpAddr) -> u64 {
        self.sent
            .lock()
            .expect("announcement counter lock")
            .get(&vip)
            .copied()
            .unwrap_or(0)
    }

    /// Announces `count` times, `interval` apart, the first one `interval`
    /// from now; stops early when `cancel` fires (the VIP was released).
    pub async fn burst(
        self: Arc<Self>,
        mac: [u8; 6],
        vip: IpAddr,
        count: u32,
        interval: Duration,
        cancel: CancellationToken,
    ) {
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        for sent in 0..count {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = ticker.tick() => {}
            }
            if let Err(e) = self.announce(mac, vip) {
                tracing::warn!(%vip, "announcement {} of {count} not sent: {e}", sent + 1);
            }
        }
        tracing::debug!(%vip, "announcement burst of {count} done");
    }
}
