//! A small packet builder for data-path tests. Written independently of
//! lbfo's own codecs so that tests never check lbfo against itself.

use std::net::Ipv4Addr;

pub const BROADCAST: [u8; 6] = [0xff; 6];

pub fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Every field of an ARP packet, so tests can make any variant.
#[derive(Clone, Copy, Debug)]
pub struct Arp {
    pub htype: u16,
    pub ptype: u16,
    pub hlen: u8,
    pub plen: u8,
    pub op: u16,
    pub sha: [u8; 6],
    pub spa: Ipv4Addr,
    pub tha: [u8; 6],
    pub tpa: Ipv4Addr,
}

impl Arp {
    /// "Who has `target`? Tell `sender_ip`", broadcast.
    pub fn request(sender_mac: [u8; 6], sender_ip: Ipv4Addr, target: Ipv4Addr) -> Arp {
        Arp {
            htype: 1,
            ptype: 0x0800,
            hlen: 6,
            plen: 4,
            op: 1,
            sha: sender_mac,
            spa: sender_ip,
            tha: [0; 6],
            tpa: target,
        }
    }

    pub fn reply(
        sender_mac: [u8; 6],
        sender_ip: Ipv4Addr,
        target_mac: [u8; 6],
        target_ip: Ipv4Addr,
    ) -> Arp {
        Arp {
            op: 2,
            tha: target_mac,
            tpa: target_ip,
            ..Arp::request(sender_mac, sender_ip, target_ip)
        }
    }

    /// A gratuitous announcement: sender and target address are both `addr`.
    pub fn gratuitous(sender_mac: [u8; 6], addr: Ipv4Addr) -> Arp {
        Arp::request(sender_mac, addr, addr)
    }

    pub fn payload(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(28);
        p.extend_from_slice(&self.htype.to_be_bytes());
        p.extend_from_slice(&self.ptype.to_be_bytes());
        p.push(self.hlen);
        p.push(self.plen);
        p.extend_from_slice(&self.op.to_be_bytes());
        p.extend_from_slice(&self.sha);
        p.extend_from_slice(&self.spa.octets());
        p.extend_from_slice(&self.tha);
        p.extend_from_slice(&self.tpa.octets());
        p
    }

    /// The whole Ethernet frame; requests go to broadcast, replies to `tha`.
    pub fn frame(&self) -> Vec<u8> {
        let dst = if self.op == 1 { BROADCAST } else { self.tha };
        ethernet(dst, self.sha, 0x0806, &self.payload())
    }
}

/// An IPv4 header (no options) with a correct checksum, followed by `payload`.
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, payload: &[u8]) -> Vec<u8> {
    let total = 20 + payload.len();
    let mut h = vec![
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        1,
        0x40,
        0,
        64,
        protocol,
        0,
        0,
    ];
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    let sum = checksum(&h);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// A TCP header with the given flags (e.g. 0x02 for SYN), no options, checksum left 0
/// (XDP does not verify it).
pub fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut t = Vec::with_capacity(20);
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&1u32.to_be_bytes());
    t.extend_from_slice(&0u32.to_be_bytes());
    t.push(5 << 4);
    t.push(flags);
    t.extend_from_slice(&65535u16.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 0]);
    t
}

pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = 8 + payload.len();
    let mut u = Vec::with_capacity(len);
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&(len as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

/// An Ethernet frame carrying IPv4 + TCP.
pub fn tcp_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    flags: u8,
) -> Vec<u8> {
    ethernet(
        dst_mac,
        src_mac,
        0x0800,
        &ipv4(src.0, dst.0, 6, &tcp(src.1, dst.1, flags)),
    )
}

/// An Ethernet frame carrying IPv4 + UDP.
pub fn udp_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
) -> Vec<u8> {
    ethernet(
        dst_mac,
        src_mac,
        0x0800,
        &ipv4(src.0, dst.0, 17, &udp(src.1, dst.1, b"lbfo")),
    )
}

/// The Internet checksum (RFC 1071).
pub fn checksum(bytes: &[u8]) -> u16 {
    let mut sum = 0u32;
    for chunk in bytes.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from_be_bytes([chunk[0], 0])
        };
        sum += word as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
