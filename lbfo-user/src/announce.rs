//! Gratuitous ARP: telling the LAN that a VIP now lives at this node's MAC,
//! so clients and switches stop sending to the previous owner.

use std::{
    io,
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::Arc,
    time::Duration,
};

use tokio_util::sync::CancellationToken;

use crate::arp::{ArpFrame, BROADCAST, ETH_P_ARP};

/// A send-only AF_PACKET socket on the VIP interface.
pub struct Announcer {
    fd: OwnedFd,
    ifindex: u32,
    /// Announcements sent, by VIP (each in both forms), for the metrics.
    sent: std::sync::Mutex<std::collections::HashMap<Ipv4Addr, u64>>,
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

    /// Sends one frame out of the interface as is.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: sockaddr_ll is plain data; zeroed is a valid starting value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ETH_P_ARP.to_be();
        addr.sll_ifindex = self.ifindex as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&BROADCAST);
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

    /// Sends both gratuitous ARP forms for `vip` once.
    pub fn announce(&self, mac: [u8; 6], vip: Ipv4Addr) -> io::Result<()> {
        for frame in ArpFrame::gratuitous(mac, vip) {
            self.send(&frame.encode())?;
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
    pub fn sent(&self, vip: Ipv4Addr) -> u64 {
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
        vip: Ipv4Addr,
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
                tracing::warn!(%vip, "gratuitous ARP {} of {count} not sent: {e}", sent + 1);
            }
        }
        tracing::debug!(%vip, "gratuitous ARP burst of {count} done");
    }
}
