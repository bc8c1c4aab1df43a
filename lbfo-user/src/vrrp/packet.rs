//! The VRRPv3 advertisement for IPv4 (RFC 5798 section 5), as it travels in
//! the IP payload:
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! |Version| Type  | Virtual Rtr ID|   Priority    |Count IPvX Addr|
//! |(rsvd) |     Max Adver Int     |          Checksum             |
//! |                       IPv4 Address(es)                        |
//! ```
//!
//! The checksum covers an IPv4 pseudo-header before the message (RFC 5798
//! section 5.2.8), so decoding needs the addresses the IP header carried.

use std::net::Ipv4Addr;

/// IP protocol number of VRRP.
pub const IPPROTO_VRRP: u8 = 112;
/// Destination of advertisements (RFC 5798 section 5.1.1.2).
pub const VRRP_MULTICAST: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// Advertisements are sent with TTL 255 and a receiver drops any other TTL,
/// which proves the sender is on the same link.
pub const VRRP_TTL: u8 = 255;

const VERSION: u8 = 3;
const TYPE_ADVERTISEMENT: u8 = 1;
/// Version/type, VRID, priority, count, interval, checksum.
const HEADER_LEN: usize = 8;
/// The interval field has 12 bits; the top 4 bits of its word are reserved.
const INTERVAL_MASK: u16 = 0x0fff;
pub const MAX_ADVERT_INTERVAL_CS: u16 = INTERVAL_MASK;
/// The count field is one byte.
pub const MAX_ADDRESSES: usize = u8::MAX as usize;

/// One VRRPv3 advertisement. Priority 0 means "the Master is giving up".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertisement {
    pub vrid: u8,
    pub priority: u8,
    /// Centiseconds, 1..=4095 on the wire.
    pub max_advert_interval_cs: u16,
    pub addresses: Vec<Ipv4Addr>,
}

/// Why a received advertisement was not acted on. One enum for both the
/// codec and the state machine so the daemon keeps one counter per reason
/// ([`Reject::as_str`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    #[error("TTL {ttl}, expected 255 (sender not on this link)")]
    Ttl { ttl: u8 },
    #[error("{len} bytes, shorter than the {HEADER_LEN}-byte VRRP header")]
    TooShort { len: usize },
    #[error("VRRP version {version}, expected 3")]
    Version { version: u8 },
    #[error("VRRP type {kind}, expected 1 (advertisement)")]
    Type { kind: u8 },
    #[error("{count} addresses need {expected} bytes, payload has {len}")]
    Length {
        count: u8,
        expected: usize,
        len: usize,
    },
    #[error("checksum {received:#06x}, computed {computed:#06x}")]
    Checksum { received: u16, computed: u16 },
    #[error("max advertisement interval of 0")]
    ZeroInterval,
    #[error("VRID {vrid} is not configured here")]
    UnknownVrid { vrid: u8 },
    #[error("address list {seen:?} differs from ours")]
    AddressMismatch { seen: Vec<Ipv4Addr> },
}

impl Reject {
    /// Every [`Reject::as_str`] value, so counters can exist before the
    /// first reject.
    pub const NAMES: [&'static str; 9] = [
        "ttl",
        "too_short",
        "version",
        "type",
        "length",
        "checksum",
        "zero_interval",
        "unknown_vrid",
        "address_mismatch",
    ];

    /// A stable short name for counters and status output.
    pub fn as_str(&self) -> &'static str {
        match self {
            Reject::Ttl { .. } => "ttl",
            Reject::TooShort { .. } => "too_short",
            Reject::Version { .. } => "version",
            Reject::Type { .. } => "type",
            Reject::Length { .. } => "length",
            Reject::Checksum { .. } => "checksum",
            Reject::ZeroInterval => "zero_interval",
            Reject::UnknownVrid { .. } => "unknown_vrid",
            Reject::AddressMismatch { .. } => "address_mismatch",
        }
    }
}

impl Advertisement {
    /// The VRRP payload for an IP packet from `src` to `dst`, checksum
    /// filled in.
    ///
    /// # Panics
    /// If there are more than 255 addresses or the interval does not fit in
    /// 12 bits: both are ruled out by the instance configuration, so this is
    /// a programming error, not bad input.
    pub fn encode(&self, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
        let count = u8::try_from(self.addresses.len())
            .expect("instance configuration allows at most 255 addresses");
        assert!(
            self.max_advert_interval_cs <= MAX_ADVERT_INTERVAL_CS,
            "advert interval {} cs does not fit in 12 bits",
            self.max_advert_interval_cs
        );
        let mut payload = Vec::with_capacity(HEADER_LEN + 4 * self.addresses.len());
        payload.push((VERSION << 4) | TYPE_ADVERTISEMENT);
        payload.push(self.vrid);
        payload.push(self.priority);
        payload.push(count);
        payload.extend_from_slice(&self.max_advert_interval_cs.to_be_bytes());
        payload.extend_from_slice(&[0, 0]);
        for address in &self.addresses {
            payload.extend_from_slice(&address.octets());
        }
        let sum = checksum(src, dst, &payload);
        payload[6..8].copy_from_slice(&sum.to_be_bytes());
        payload
    }

    /// Parses and validates the VRRP payload of a packet from `src` to `dst`
    /// that arrived with IP TTL `ttl`.
    ///
    /// Checks run cheapest and most telling first, so a truncated packet is
    /// reported as truncated rather than as a checksum failure.
    pub fn decode(payload: &[u8], src: Ipv4Addr, dst: Ipv4Addr, ttl: u8) -> Result<Self, Reject> {
        if ttl != VRRP_TTL {
            return Err(Reject::Ttl { ttl });
        }
        let [
            version_type,
            vrid,
            priority,
            count,
            interval_hi,
            interval_lo,
            sum_hi,
            sum_lo,
            rest @ ..,
        ] = payload
        else {
            return Err(Reject::TooShort { len: payload.len() });
        };
        let version = version_type >> 4;
        if version != VERSION {
            return Err(Reject::Version { version });
        }
        let kind = version_type & 0x0f;
        if kind != TYPE_ADVERTISEMENT {
            return Err(Reject::Type { kind });
        }
        let expected = HEADER_LEN + 4 * usize::from(*count);
        if payload.len() != expected {
            return Err(Reject::Length {
                count: *count,
                expected,
                len: payload.len(),
            });
        }
        // Summing the packet with its own checksum in place gives 0 (after
        // complementing) when it is intact; recomputing with the field zeroed
        // instead gives the value worth reporting when it is not.
        if checksum(src, dst, payload) != 0 {
            let mut zeroed = payload.to_vec();
            zeroed[6..8].fill(0);
            return Err(Reject::Checksum {
                received: u16::from_be_bytes([*sum_hi, *sum_lo]),
                computed: checksum(src, dst, &zeroed),
            });
        }
        let max_advert_interval_cs =
            u16::from_be_bytes([*interval_hi, *interval_lo]) & INTERVAL_MASK;
        if max_advert_interval_cs == 0 {
            return Err(Reject::ZeroInterval);
        }
        // The length check left exactly `count` 4-byte addresses.
        let (addresses, _) = rest.as_chunks::<4>();
        let addresses = addresses.iter().copied().map(Ipv4Addr::from).collect();
        Ok(Advertisement {
            vrid: *vrid,
            priority: *priority,
            max_advert_interval_cs,
            addresses,
        })
    }
}

/// The Internet checksum over the IPv4 pseudo-header (source, destination,
/// zero, protocol 112, VRRP length) followed by `payload`.
fn checksum(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> u16 {
    // The length word is 16 bits; a payload that large cannot have passed
    // the length check nor come from `encode`, and wrapping only makes the
    // checksum fail.
    let len = payload.len() as u16;
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&src.octets());
    pseudo[4..8].copy_from_slice(&dst.octets());
    pseudo[9] = IPPROTO_VRRP;
    pseudo[10..12].copy_from_slice(&len.to_be_bytes());
    crate::checksum::internet(&[&pseudo, payload])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real advertisement from keepalived 2.2.7 (Debian), captured with
    /// `tcpdump -x proto 112` on a veth pair between two network namespaces.
    /// Config: `global_defs { vrrp_version 3 }` and
    /// `vrrp_instance { state BACKUP; interface vrrpcap-a0;
    /// virtual_router_id 51; priority 150; advert_int 1;
    /// virtual_ipaddress { 192.0.2.100/32 192.0.2.101/32 } }`, sent from
    /// 192.0.2.1 to 224.0.0.18 with TTL 255 after it became Master.
    /// The full IP packet was
    /// `45c0 0024 0001 0000 ff70 1895 c000 0201 e000 0012` + this payload.
    const KEEPALIVED_VRID51: [u8; 16] = [
        0x31, 0x33, 0x96, 0x02, 0x00, 0x64, 0x11,
        0x07, // v3 advert, VRID 51, prio 150, 2 addrs, 100 cs, csum
        0xc0, 0x00, 0x02, 0x64, // 192.0.2.100
        0xc0, 0x00, 0x02, 0x65, // 192.0.2.101
    ];
    /// The same keepalived on SIGTERM: the priority 0 advertisement a
    /// Master sends when it stops.
    const KEEPALIVED_VRID51_PRIORITY_0: [u8; 16] = [
        0x31, 0x33, 0x00, 0x02, 0x00, 0x64, 0xa7, 0x07, //
        0xc0, 0x00, 0x02, 0x64, //
        0xc0, 0x00, 0x02, 0x65,
    ];
    /// A second keepalived 2.2.7 run, config as above but
    /// `state MASTER; virtual_router_id 7; priority 200; advert_int 0.5;
    /// virtual_ipaddress { 192.0.2.200/32 }`.
    /// IP header: `45c0 0020 0001 0000 ff70 1899 c000 0201 e000 0012`.
    const KEEPALIVED_VRID7: [u8; 12] = [
        0x31, 0x07, 0xc8, 0x01, 0x00, 0x32, 0xa1, 0x6b, // VRID 7, prio 200, 1 addr, 50 cs
        0xc0, 0x00, 0x02, 0xc8, // 192.0.2.200
    ];
    const KEEPALIVED_SRC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

    fn keepalived_vrid51(priority: u8) -> Advertisement {
        Advertisement {
            vrid: 51,
            priority,
            max_advert_interval_cs: 100,
            addresses: vec![Ipv4Addr::new(192, 0, 2, 100), Ipv4Addr::new(192, 0, 2, 101)],
        }
    }

    fn decode_ok(payload: &[u8]) -> Advertisement {
        Advertisement::decode(payload, KEEPALIVED_SRC, VRRP_MULTICAST, VRRP_TTL)
            .unwrap_or_else(|reject| panic!("expected {payload:02x?} to decode, got: {reject}"))
    }

    /// `good` with `edit` applied and the checksum made right again, so a
    /// test of one check cannot pass because of another.
    fn edited(good: &[u8], edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut payload = good.to_vec();
        edit(&mut payload);
        payload[6..8].fill(0);
        let sum = checksum(KEEPALIVED_SRC, VRRP_MULTICAST, &payload);
        payload[6..8].copy_from_slice(&sum.to_be_bytes());
        payload
    }

    #[test]
    fn decodes_keepalived_advertisements() {
        assert_eq!(decode_ok(&KEEPALIVED_VRID51), keepalived_vrid51(150));
        assert_eq!(
            decode_ok(&KEEPALIVED_VRID51_PRIORITY_0),
            keepalived_vrid51(0)
        );
        assert_eq!(
            decode_ok(&KEEPALIVED_VRID7),
            Advertisement {
                vrid: 7,
                priority: 200,
                max_advert_interval_cs: 50,
                addresses: vec![Ipv4Addr::new(192, 0, 2, 200)],
            }
        );
    }

    #[test]
    fn encodes_byte_for_byte_like_keepalived() {
        let cases: [(Advertisement, &[u8]); 3] = [
            (keepalived_vrid51(150), &KEEPALIVED_VRID51),
            (keepalived_vrid51(0), &KEEPALIVED_VRID51_PRIORITY_0),
            (decode_ok(&KEEPALIVED_VRID7), &KEEPALIVED_VRID7),
        ];
        for (advert, captured) in cases {
            let encoded = advert.encode(KEEPALIVED_SRC, VRRP_MULTICAST);
            assert_eq!(
                encoded, captured,
                "encoding {advert:?} should give keepalived's bytes {captured:02x?}, got {encoded:02x?}"
            );
        }
    }

    #[test]
    fn checksum_covers_the_pseudo_header() {
        // Same payload, other source: the pseudo-header makes it invalid.
        let other_src = Ipv4Addr::new(192, 0, 2, 9);
        let result = Advertisement::decode(&KEEPALIVED_VRID51, other_src, VRRP_MULTICAST, VRRP_TTL);
        assert!(
            matches!(
                result,
                Err(Reject::Checksum {
                    received: 0x1107,
                    ..
                })
            ),
            "a payload checksummed for source 192.0.2.1 must fail from {other_src}, got {result:?}"
        );
        // Unicast VRRP: the destination is in the pseudo-header too.
        let unicast_dst = Ipv4Addr::new(192, 0, 2, 2);
        let result =
            Advertisement::decode(&KEEPALIVED_VRID51, KEEPALIVED_SRC, unicast_dst, VRRP_TTL);
        assert!(
            matches!(result, Err(Reject::Checksum { .. })),
            "a payload checksummed for 224.0.0.18 must fail when sent to {unicast_dst}, got {result:?}"
        );
    }

    #[test]
    fn round_trips() {
        let src = Ipv4Addr::new(192, 0, 2, 10);
        let dst = Ipv4Addr::new(192, 0, 2, 11);
        let adverts = [
            Advertisement {
                vrid: 1,
                priority: 255,
                max_advert_interval_cs: 1,
                addresses: vec![Ipv4Addr::new(192, 0, 2, 1)],
            },
            Advertisement {
                vrid: 255,
                priority: 1,
                max_advert_interval_cs: MAX_ADVERT_INTERVAL_CS,
                addresses: (0..=254).map(|i| Ipv4Addr::new(192, 0, 2, i)).collect(),
            },
            Advertisement {
                vrid: 42,
                priority: 0,
                max_advert_interval_cs: 3,
                addresses: vec![],
            },
        ];
        for advert in adverts {
            for (s, d) in [(src, dst), (src, VRRP_MULTICAST)] {
                let payload = advert.encode(s, d);
                assert_eq!(
                    payload.len(),
                    8 + 4 * advert.addresses.len(),
                    "payload length for {} addresses",
                    advert.addresses.len()
                );
                assert_eq!(
                    Advertisement::decode(&payload, s, d, VRRP_TTL).as_ref(),
                    Ok(&advert),
                    "round trip from {s} to {d}"
                );
            }
        }
    }

    #[test]
    fn reserved_interval_bits_are_ignored_on_receive() {
        let payload = edited(&KEEPALIVED_VRID51, |p| p[4] |= 0xf0);
        assert_eq!(decode_ok(&payload).max_advert_interval_cs, 100);
    }

    #[test]
    fn rejects_malformed_advertisements() {
        let decode = |payload: &[u8], ttl: u8| {
            Advertisement::decode(payload, KEEPALIVED_SRC, VRRP_MULTICAST, ttl)
        };
        let good = &KEEPALIVED_VRID51;
        let cases: Vec<(&str, Vec<u8>, u8, Reject)> = vec![
            ("TTL 254", good.to_vec(), 254, Reject::Ttl { ttl: 254 }),
            ("TTL 1", good.to_vec(), 1, Reject::Ttl { ttl: 1 }),
            ("empty", vec![], 255, Reject::TooShort { len: 0 }),
            (
                "7 bytes",
                good[..7].to_vec(),
                255,
                Reject::TooShort { len: 7 },
            ),
            (
                "version 2",
                edited(good, |p| p[0] = 0x21),
                255,
                Reject::Version { version: 2 },
            ),
            (
                "type 2",
                edited(good, |p| p[0] = 0x32),
                255,
                Reject::Type { kind: 2 },
            ),
            (
                "count 3, two addresses",
                edited(good, |p| p[3] = 3),
                255,
                Reject::Length {
                    count: 3,
                    expected: 20,
                    len: 16,
                },
            ),
            (
                "count 1, two addresses",
                edited(good, |p| p[3] = 1),
                255,
                Reject::Length {
                    count: 1,
                    expected: 12,
                    len: 16,
                },
            ),
            (
                "truncated address",
                good[..15].to_vec(),
                255,
                Reject::Length {
                    count: 2,
                    expected: 16,
                    len: 15,
                },
            ),
            (
                "header only",
                good[..8].to_vec(),
                255,
                Reject::Length {
                    count: 2,
                    expected: 16,
                    len: 8,
                },
            ),
            (
                "flipped address bit",
                {
                    let mut p = good.to_vec();
                    p[15] ^= 0x01;
                    p
                },
                255,
                Reject::Checksum {
                    received: 0x1107,
                    computed: 0x1108,
                },
            ),
            (
                "zeroed checksum",
                {
                    let mut p = good.to_vec();
                    p[6..8].fill(0);
                    p
                },
                255,
                Reject::Checksum {
                    received: 0,
                    computed: 0x1107,
                },
            ),
            (
                "interval 0",
                edited(good, |p| p[4..6].fill(0)),
                255,
                Reject::ZeroInterval,
            ),
            (
                "interval 0 behind reserved bits",
                edited(good, |p| p[4..6].copy_from_slice(&[0xf0, 0x00])),
                255,
                Reject::ZeroInterval,
            ),
        ];
        for (what, payload, ttl, expected) in cases {
            let result = decode(&payload, ttl);
            assert_eq!(
                result.as_ref(),
                Err(&expected),
                "{what}: expected reject {expected:?} for {payload:02x?}, got {result:?}"
            );
        }
    }

    #[test]
    fn reject_names_are_stable_and_distinct() {
        let rejects = [
            Reject::Ttl { ttl: 0 },
            Reject::TooShort { len: 0 },
            Reject::Version { version: 0 },
            Reject::Type { kind: 0 },
            Reject::Length {
                count: 0,
                expected: 0,
                len: 0,
            },
            Reject::Checksum {
                received: 0,
                computed: 0,
            },
            Reject::ZeroInterval,
            Reject::UnknownVrid { vrid: 0 },
            Reject::AddressMismatch { seen: vec![] },
        ];
        let names: Vec<&str> = rejects.iter().map(Reject::as_str).collect();
        assert_eq!(
            names,
            Reject::NAMES,
            "as_str must list the variants in NAMES order"
        );
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(
            unique.len(),
            names.len(),
            "reject names must be distinct: {names:?}"
        );
    }
}
