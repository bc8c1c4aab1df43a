//! The Internet checksum (RFC 1071), shared by the VRRP codec (over the IP
//! pseudo-header and the advertisement), the ICMP echo probe and the
//! unsolicited Neighbour Advertisement (over the IPv6 pseudo-header).

use std::net::IpAddr;

/// The one's complement of the one's complement sum of `parts`' bytes, read
/// as one run of big-endian 16-bit words (an odd last byte padded with
/// zero). Over data that carries its own checksum it yields 0.
///
/// The data comes in parts so a pseudo-header need not be copied in front of
/// the payload; a part may have any length, words straddle parts.
pub fn internet(parts: &[&[u8]]) -> u16 {
    // 64 bits cannot overflow for any slice that fits in memory.
    let mut sum: u64 = 0;
    // The high byte of a word whose low byte starts the next part.
    let mut high: Option<u8> = None;
    for part in parts {
        let mut bytes = *part;
        if let Some(hi) = high {
            let [lo, rest @ ..] = bytes else { continue };
            sum += u64::from(u16::from_be_bytes([hi, *lo]));
            high = None;
            bytes = rest;
        }
        let (pairs, rest) = bytes.as_chunks::<2>();
        sum += pairs
            .iter()
            .map(|pair| u64::from(u16::from_be_bytes(*pair)))
            .sum::<u64>();
        if let [last] = rest {
            high = Some(*last);
        }
    }
    if let Some(hi) = high {
        sum += u64::from(hi) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The checksum of an upper-layer `message` of `protocol` sent from `src`
/// to `dst`, over the pseudo-header of their family: IPv4's (RFC 768: source,
/// destination, zero, protocol, 16-bit length) or IPv6's (RFC 8200 section
/// 8.1: source, destination, 32-bit length, three zeros, next header).
///
/// # Panics
/// If `src` and `dst` are of different families, which no packet can be.
pub fn transport(src: IpAddr, dst: IpAddr, protocol: u8, message: &[u8]) -> u16 {
    // A length past the field's width cannot come from a real packet; the
    // truncation only makes the checksum fail.
    let len = message.len();
    match (src, dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let mut pseudo = [0u8; 12];
            pseudo[0..4].copy_from_slice(&src.octets());
            pseudo[4..8].copy_from_slice(&dst.octets());
            pseudo[9] = protocol;
            pseudo[10..12].copy_from_slice(&(len as u16).to_be_bytes());
            internet(&[&pseudo, message])
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            let mut pseudo = [0u8; 40];
            pseudo[0..16].copy_from_slice(&src.octets());
            pseudo[16..32].copy_from_slice(&dst.octets());
            pseudo[32..36].copy_from_slice(&(len as u32).to_be_bytes());
            pseudo[39] = protocol;
            internet(&[&pseudo, message])
        }
        _ => panic!("pseudo-header from {src} to {dst} mixes IP families"),
    }
}

#[cfg(test)]
mod tests {
    use super::internet;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: these words sum to 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(internet(&[&data]), !0xddf2);
        assert_eq!(internet(&[&data]), 0x220d);
    }

    #[test]
    fn ipv4_header_known_value_and_verification() {
        // A captured IPv4 header (192.168.0.1 -> 192.168.0.199, UDP) whose
        // checksum field holds 0xb861.
        let mut header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(internet(&[&header]), 0xb861);
        header[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert_eq!(
            internet(&[&header]),
            0,
            "a header carrying its own checksum sums to 0"
        );
    }

    #[test]
    fn carries_fold_back_in() {
        // 0xffff + 0x0001 = 0x1_0000, folded to 0x0001; complement 0xfffe.
        assert_eq!(internet(&[&[0xff, 0xff, 0x00, 0x01]]), 0xfffe);
        // Many all-ones words keep the sum at 0xffff (one's complement -0).
        assert_eq!(internet(&[&[0xff; 4096]]), 0x0000);
    }

    #[test]
    fn odd_length_pads_the_last_byte_with_zero() {
        assert_eq!(internet(&[&[0x12, 0x34, 0x56]]), !(0x1234 + 0x5600));
        assert_eq!(internet(&[&[0x01]]), !0x0100);
        assert_eq!(internet(&[]), 0xffff);
        assert_eq!(internet(&[&[]]), 0xffff);
    }

    #[test]
    fn parts_give_the_same_sum_as_the_whole_however_split() {
        let data: Vec<u8> = (0u8..=40).map(|b| b.wrapping_mul(37)).collect();
        let whole = internet(&[&data]);
        for first in 0..=data.len() {
            for second in first..=data.len() {
                let parts: [&[u8]; 3] = [&data[..first], &data[first..second], &data[second..]];
                assert_eq!(
                    internet(&parts),
                    whole,
                    "split at {first} and {second} of {} bytes",
                    data.len()
                );
            }
        }
    }
}
