//! Neighbour Discovery frames (RFC 4861) as the control plane sends them:
//! the unsolicited Neighbour Advertisement that announces "this IPv6 VIP is
//! at my MAC", what gratuitous ARP is for IPv4.

use std::net::Ipv6Addr;

pub const ETH_P_IPV6: u16 = 0x86dd;
/// Ethernet (14) + IPv6 (40) + advertisement (24) + target link-layer option (8).
pub const FRAME_LEN: usize = 86;
const ICMPV6_LEN: usize = 32;
const IPPROTO_ICMPV6: u8 = 58;
const NEIGHBOUR_ADVERTISEMENT: u8 = 136;
const FLAG_OVERRIDE: u8 = 0x20;
const OPTION_TARGET_LINK_LAYER: u8 = 2;
/// ff02::1 and its Ethernet group.
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];

/// The unsolicited advertisement for `vip` at `mac`, to all nodes: Override
/// set (so receivers replace the MAC of an existing entry at once),
/// Solicited and Router clear, the Target Link-Layer Address option and no
/// Source Link-Layer option (receivers ignore advertisements that carry one
/// or lack Override). From the VIP itself, hop limit 255.
pub fn unsolicited_advertisement(mac: [u8; 6], vip: Ipv6Addr) -> [u8; FRAME_LEN] {
    let mut f = [0u8; FRAME_LEN];
    f[0..6].copy_from_slice(&ALL_NODES_MAC);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_P_IPV6.to_be_bytes());
    let ip = &mut f[14..54];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&(ICMPV6_LEN as u16).to_be_bytes());
    ip[6] = IPPROTO_ICMPV6;
    ip[7] = 255;
    ip[8..24].copy_from_slice(&vip.octets());
    ip[24..40].copy_from_slice(&ALL_NODES.octets());
    let icmp = &mut f[54..];
    icmp[0] = NEIGHBOUR_ADVERTISEMENT;
    icmp[4] = FLAG_OVERRIDE;
    icmp[8..24].copy_from_slice(&vip.octets());
    icmp[24] = OPTION_TARGET_LINK_LAYER;
    icmp[25] = 1;
    icmp[26..32].copy_from_slice(&mac);
    let sum = icmpv6_checksum(vip, ALL_NODES, &f[54..]);
    f[56..58].copy_from_slice(&sum.to_be_bytes());
    f
}

/// The ICMPv6 checksum of `message` over the IPv6 pseudo-header.
fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, message: &[u8]) -> u16 {
    crate::checksum::transport(src.into(), dst.into(), IPPROTO_ICMPV6, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x00, 0x00, 0x01];
    const VIP: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);

    #[test]
    fn unsolicited_advertisement_known_bytes() {
        let vip = VIP.octets();
        let expected: Vec<u8> = [
            &[0x33, 0x33, 0, 0, 0, 1][..],    // eth dst: all nodes
            &MAC,                             // eth src
            &[0x86, 0xdd],                    // IPv6
            &[0x60, 0, 0, 0, 0, 32, 58, 255], // payload 32, ICMPv6, hop limit 255
            &vip,                             // source: the VIP
            &[0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], // ff02::1
            &[136, 0, 0x99, 0x2c],            // advertisement, code 0, checksum
            &[0x20, 0, 0, 0],                 // O=1, S=0, R=0
            &vip,                             // target
            &[2, 1],                          // target link-layer address option
            &MAC,
        ]
        .concat();
        assert_eq!(unsolicited_advertisement(MAC, VIP).to_vec(), expected);
    }

    #[test]
    fn checksum_verifies() {
        let frame = unsolicited_advertisement(MAC, VIP);
        assert_eq!(
            icmpv6_checksum(VIP, ALL_NODES, &frame[54..]),
            0,
            "a message carrying its own checksum sums to 0"
        );
    }
}
