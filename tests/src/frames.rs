//! A small packet builder for data-path tests. Written independently of
//! lbfo's own codecs so that tests never check lbfo against itself.

use std::net::{Ipv4Addr, Ipv6Addr};

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

/// An IPv6 header (no extension headers) followed by `payload`.
pub fn ipv6(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    next_header: u8,
    hop_limit: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    h.push(next_header);
    h.push(hop_limit);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(payload);
    h
}

/// The ICMPv6 checksum of `message` (its checksum field zero) between two
/// addresses: over the IPv6 pseudo-header (RFC 8200 section 8.1) and the message.
pub fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, message: &[u8]) -> u16 {
    let mut pseudo = Vec::with_capacity(40 + message.len());
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&(message.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    pseudo.extend_from_slice(message);
    checksum(&pseudo)
}

/// ff02::1:ffXX:XXXX, the group solicitations for `target` go to.
pub fn solicited_node(target: Ipv6Addr) -> Ipv6Addr {
    let t = target.octets();
    Ipv6Addr::from([
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | t[13] as u16,
        u16::from_be_bytes([t[14], t[15]]),
    ])
}

/// The Ethernet group of an IPv6 multicast address: 33:33 and its last four bytes.
pub fn multicast_mac(group: Ipv6Addr) -> [u8; 6] {
    let g = group.octets();
    [0x33, 0x33, g[12], g[13], g[14], g[15]]
}

pub const OPTION_SOURCE_LINK_LAYER: u8 = 1;
pub const OPTION_TARGET_LINK_LAYER: u8 = 2;

/// A link-layer address option (RFC 4861 section 4.6.1).
pub fn link_layer_option(kind: u8, mac: [u8; 6]) -> Vec<u8> {
    let mut o = vec![kind, 1];
    o.extend_from_slice(&mac);
    o
}

/// Every field of a Neighbour Solicitation or Advertisement and the
/// headers around it, so tests can make any variant.
#[derive(Clone, Debug)]
pub struct Nd {
    pub eth_dst: [u8; 6],
    pub eth_src: [u8; 6],
    pub hop_limit: u8,
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    /// 135 (solicitation) or 136 (advertisement).
    pub icmp_type: u8,
    pub code: u8,
    /// The byte after the checksum: R, S, O flags in advertisements.
    pub flags: u8,
    pub target: Ipv6Addr,
    /// The options, as they go on the wire.
    pub options: Vec<u8>,
    /// Added to the correct checksum: 0 makes it right.
    pub checksum_error: u16,
    /// Extension headers between IPv6 and ICMPv6: (protocol number, the
    /// header as on the wire; its first byte, the next header, is filled in).
    pub extension_headers: Vec<(u8, Vec<u8>)>,
    /// Bytes after the IPv6 payload (padding).
    pub trailer: Vec<u8>,
}

impl Nd {
    /// "Who has `target`?", to its solicited-node group, with the source link-layer option.
    pub fn solicitation(mac: [u8; 6], src: Ipv6Addr, target: Ipv6Addr) -> Nd {
        let group = solicited_node(target);
        Nd {
            eth_dst: multicast_mac(group),
            eth_src: mac,
            hop_limit: 255,
            src,
            dst: group,
            icmp_type: 135,
            code: 0,
            flags: 0,
            target,
            options: link_layer_option(OPTION_SOURCE_LINK_LAYER, mac),
            checksum_error: 0,
            extension_headers: Vec::new(),
            trailer: Vec::new(),
        }
    }

    /// A reachability probe: straight to `target` at `target_mac`.
    pub fn unicast_solicitation(
        mac: [u8; 6],
        src: Ipv6Addr,
        target_mac: [u8; 6],
        target: Ipv6Addr,
    ) -> Nd {
        Nd {
            eth_dst: target_mac,
            dst: target,
            ..Nd::solicitation(mac, src, target)
        }
    }

    /// Duplicate address detection: from `::`, without the source option.
    pub fn duplicate_detection(mac: [u8; 6], target: Ipv6Addr) -> Nd {
        Nd {
            src: Ipv6Addr::UNSPECIFIED,
            options: Vec::new(),
            ..Nd::solicitation(mac, Ipv6Addr::UNSPECIFIED, target)
        }
    }

    /// An unsolicited advertisement to all nodes (O=1) with the target link-layer option.
    pub fn advertisement(mac: [u8; 6], target: Ipv6Addr) -> Nd {
        let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
        Nd {
            eth_dst: multicast_mac(all_nodes),
            dst: all_nodes,
            icmp_type: 136,
            flags: 0x20,
            options: link_layer_option(OPTION_TARGET_LINK_LAYER, mac),
            ..Nd::solicitation(mac, target, target)
        }
    }

    /// The ICMPv6 message, its checksum filled in.
    pub fn message(&self) -> Vec<u8> {
        let mut m = vec![self.icmp_type, self.code, 0, 0, self.flags, 0, 0, 0];
        m.extend_from_slice(&self.target.octets());
        m.extend_from_slice(&self.options);
        let sum = icmpv6_checksum(self.src, self.dst, &m).wrapping_add(self.checksum_error);
        m[2..4].copy_from_slice(&sum.to_be_bytes());
        m
    }

    pub fn frame(&self) -> Vec<u8> {
        let kind_after = |i: usize| self.extension_headers.get(i).map_or(58, |(kind, _)| *kind);
        let mut payload = Vec::new();
        for (i, (_, header)) in self.extension_headers.iter().enumerate() {
            payload.push(kind_after(i + 1));
            payload.extend_from_slice(&header[1..]);
        }
        payload.extend_from_slice(&self.message());
        let mut ip = ipv6(self.src, self.dst, kind_after(0), self.hop_limit, &payload);
        ip.extend_from_slice(&self.trailer);
        ethernet(self.eth_dst, self.eth_src, 0x86dd, &ip)
    }
}

/// An Ethernet frame carrying IPv6 + TCP (checksum left 0, XDP does not verify it).
pub fn tcp6_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: (Ipv6Addr, u16),
    dst: (Ipv6Addr, u16),
    flags: u8,
) -> Vec<u8> {
    ethernet(
        dst_mac,
        src_mac,
        0x86dd,
        &ipv6(src.0, dst.0, 6, 64, &tcp(src.1, dst.1, flags)),
    )
}

/// An Ethernet frame carrying IPv6 + UDP (checksum left 0).
pub fn udp6_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: (Ipv6Addr, u16),
    dst: (Ipv6Addr, u16),
) -> Vec<u8> {
    ethernet(
        dst_mac,
        src_mac,
        0x86dd,
        &ipv6(src.0, dst.0, 17, 64, &udp(src.1, dst.1, b"lbfo")),
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
