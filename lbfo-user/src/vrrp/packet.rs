//! VRRP advertisements as they travel in the IP payload: version 3 (RFC 5798
//! section 5) over IPv4 and IPv6, and version 2 (RFC 3768 section 5, IPv4
//! only), keepalived's default.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! |Version| Type  | Virtual Rtr ID|   Priority    |Count IPvX Addr|
//! v3: |(rsvd) |     Max Adver Int     |          Checksum             |
//! v2: |   Auth Type   |   Adver Int   |          Checksum             |
//! |              IPv4 (4 bytes) or IPv6 (16 bytes) Address(es)    |
//! v2: |             Authentication Data (8 bytes)                 |
//! ```
//!
//! The v3 checksum covers the IP pseudo-header before the message (RFC 5798
//! section 5.2.8: IPv4's, or IPv6's of RFC 8200 section 8.1), so decoding
//! needs the addresses the IP header carried, and their family says how long
//! each virtual address is; the v2 checksum covers the message alone. v2 carries its interval in
//! whole seconds, v3 in centiseconds; [`Advertisement`] holds centiseconds
//! for both.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IP protocol number of VRRP.
pub const IPPROTO_VRRP: u8 = 112;
/// Destination of advertisements (RFC 5798 section 5.1.1.2).
pub const VRRP_MULTICAST: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// Destination of IPv6 advertisements (RFC 5798 section 5.1.2.2).
pub const VRRP_MULTICAST_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// Advertisements are sent with TTL (IPv6: hop limit) 255 and a receiver
/// drops any other, which proves the sender is on the same link.
pub const VRRP_TTL: u8 = 255;

const TYPE_ADVERTISEMENT: u8 = 1;
/// Version/type, VRID, priority, count, interval (v2: auth type and
/// interval), checksum.
const HEADER_LEN: usize = 8;
/// v2's authentication data after the addresses, present whatever its type.
const AUTH_LEN: usize = 8;
/// v2 auth types (RFC 2338 section 5.3.6): none, a clear-text password
/// (keepalived's `auth_type PASS`), IP AH (refused by lbfo).
const AUTH_NONE: u8 = 0;
const AUTH_PASS: u8 = 1;
/// Centiseconds in one second, v2's interval unit.
pub const CS_PER_SECOND: u16 = 100;
/// The interval field has 12 bits; the top 4 bits of its word are reserved.
const INTERVAL_MASK: u16 = 0x0fff;
pub const MAX_ADVERT_INTERVAL_CS: u16 = INTERVAL_MASK;
/// The count field is one byte.
pub const MAX_ADDRESSES: usize = u8::MAX as usize;

/// Which VRRP an advertisement speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Version {
    /// RFC 3768, keepalived's default: intervals in whole seconds, with
    /// authentication fields.
    V2,
    /// RFC 5798.
    #[default]
    V3,
}

impl Version {
    pub fn number(self) -> u8 {
        match self {
            Version::V2 => 2,
            Version::V3 => 3,
        }
    }
}

/// A v2 advertisement's authentication (always [`Auth::None`] in v3).
/// `Pass` is keepalived's `auth_type PASS`: up to 8 bytes of clear text,
/// zero-padded. It keeps misconfigured routers apart; it is no security,
/// anyone on the link can read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Auth {
    #[default]
    None,
    Pass([u8; AUTH_LEN]),
}

impl Auth {
    /// The password as sent: 1..=8 bytes, zero-padded to 8.
    pub fn pass(password: &str) -> Result<Auth, String> {
        let bytes = password.as_bytes();
        if bytes.is_empty() || bytes.len() > AUTH_LEN || bytes.contains(&0) {
            return Err(format!(
                "auth_pass must be 1..={AUTH_LEN} bytes without NUL (it travels in an 8-byte field), got {} bytes",
                bytes.len()
            ));
        }
        let mut data = [0; AUTH_LEN];
        data[..bytes.len()].copy_from_slice(bytes);
        Ok(Auth::Pass(data))
    }
}

/// One VRRP advertisement. Priority 0 means "the Master is giving up".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertisement {
    pub version: Version,
    pub vrid: u8,
    pub priority: u8,
    /// Centiseconds: 1..=4095 on a v3 wire; whole seconds (1..=255) times
    /// 100 in v2.
    pub max_advert_interval_cs: u16,
    /// All of the family the advertisement travels in.
    pub addresses: Vec<IpAddr>,
    pub auth: Auth,
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
    #[error("VRRP version {version}, expected 3 (or 2 over IPv4)")]
    Version { version: u8 },
    #[error("IPv6 source {src} is not link-local (RFC 5798 5.1.2.1)")]
    Source { src: Ipv6Addr },
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
    AddressMismatch { seen: Vec<IpAddr> },
    #[error("VRRP version {theirs} advertisement, this virtual router speaks version {ours}")]
    VersionMismatch { ours: u8, theirs: u8 },
    #[error("VRRPv2 auth type {auth_type} is not supported (0 none, 1 PASS)")]
    AuthType { auth_type: u8 },
    #[error("authentication differs from ours ({why})")]
    Auth { why: &'static str },
    #[error("VRRPv2 advertisement interval {theirs_cs} cs, ours is {ours_cs} cs (RFC 3768 7.1)")]
    IntervalMismatch { ours_cs: u16, theirs_cs: u16 },
}

impl Reject {
    /// Every [`Reject::as_str`] value, so counters can exist before the
    /// first reject.
    pub const NAMES: [&'static str; 14] = [
        "ttl",
        "source",
        "too_short",
        "version",
        "type",
        "length",
        "checksum",
        "zero_interval",
        "unknown_vrid",
        "address_mismatch",
        "version_mismatch",
        "auth_type",
        "auth",
        "interval_mismatch",
    ];

    /// A stable short name for counters and status output.
    pub fn as_str(&self) -> &'static str {
        match self {
            Reject::Ttl { .. } => "ttl",
            Reject::Source { .. } => "source",
            Reject::TooShort { .. } => "too_short",
            Reject::Version { .. } => "version",
            Reject::Type { .. } => "type",
            Reject::Length { .. } => "length",
            Reject::Checksum { .. } => "checksum",
            Reject::ZeroInterval => "zero_interval",
            Reject::UnknownVrid { .. } => "unknown_vrid",
            Reject::AddressMismatch { .. } => "address_mismatch",
            Reject::VersionMismatch { .. } => "version_mismatch",
            Reject::AuthType { .. } => "auth_type",
            Reject::Auth { .. } => "auth",
            Reject::IntervalMismatch { .. } => "interval_mismatch",
        }
    }
}

impl Advertisement {
    /// The VRRP payload for an IP packet from `src` to `dst` (both of the
    /// addresses' family), checksum filled in.
    ///
    /// # Panics
    /// If there are more than 255 addresses, the interval does not fit its
    /// field (12 bits of centiseconds in v3, one byte of whole seconds in
    /// v2), or a v3 advertisement carries authentication: all are ruled out
    /// by the instance configuration, so this is a programming error, not
    /// bad input.
    pub fn encode(&self, src: impl Into<IpAddr>, dst: impl Into<IpAddr>) -> Vec<u8> {
        let (src, dst) = (src.into(), dst.into());
        let count = u8::try_from(self.addresses.len())
            .expect("instance configuration allows at most 255 addresses");
        let mut payload = Vec::with_capacity(HEADER_LEN + 16 * self.addresses.len() + AUTH_LEN);
        payload.push((self.version.number() << 4) | TYPE_ADVERTISEMENT);
        payload.push(self.vrid);
        payload.push(self.priority);
        payload.push(count);
        match self.version {
            Version::V3 => {
                assert!(
                    self.max_advert_interval_cs <= MAX_ADVERT_INTERVAL_CS,
                    "advert interval {} cs does not fit in 12 bits",
                    self.max_advert_interval_cs
                );
                assert_eq!(self.auth, Auth::None, "VRRPv3 has no authentication");
                payload.extend_from_slice(&self.max_advert_interval_cs.to_be_bytes());
            }
            Version::V2 => {
                let seconds = u8::try_from(self.max_advert_interval_cs / CS_PER_SECOND)
                    .ok()
                    .filter(|_| self.max_advert_interval_cs.is_multiple_of(CS_PER_SECOND))
                    .unwrap_or_else(|| {
                        panic!(
                            "advert interval {} cs is not 1..=255 whole seconds",
                            self.max_advert_interval_cs
                        )
                    });
                let auth_type = match self.auth {
                    Auth::None => AUTH_NONE,
                    Auth::Pass(_) => AUTH_PASS,
                };
                payload.extend_from_slice(&[auth_type, seconds]);
            }
        }
        payload.extend_from_slice(&[0, 0]);
        for address in &self.addresses {
            match address {
                IpAddr::V4(a) => payload.extend_from_slice(&a.octets()),
                IpAddr::V6(a) => payload.extend_from_slice(&a.octets()),
            }
        }
        if self.version == Version::V2 {
            match self.auth {
                Auth::None => payload.extend_from_slice(&[0; AUTH_LEN]),
                Auth::Pass(data) => payload.extend_from_slice(&data),
            }
        }
        let sum = checksum(self.version, src, dst, &payload);
        payload[6..8].copy_from_slice(&sum.to_be_bytes());
        payload
    }

    /// Parses and validates the VRRP payload of a packet from `src` to `dst`
    /// that arrived with IP TTL (IPv6: hop limit) `ttl`, of either version.
    /// Whether the version and authentication are the ones a virtual router
    /// expects is its own check ([`crate::vrrp::Machine`]).
    ///
    /// Checks run cheapest and most telling first, so a truncated packet is
    /// reported as truncated rather than as a checksum failure.
    pub fn decode(
        payload: &[u8],
        src: impl Into<IpAddr>,
        dst: impl Into<IpAddr>,
        ttl: u8,
    ) -> Result<Self, Reject> {
        let (src, dst) = (src.into(), dst.into());
        if ttl != VRRP_TTL {
            return Err(Reject::Ttl { ttl });
        }
        if let IpAddr::V6(src) = src
            && !src.is_unicast_link_local()
        {
            return Err(Reject::Source { src });
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
        let version = match version_type >> 4 {
            2 if src.is_ipv4() => Version::V2,
            3 => Version::V3,
            version => return Err(Reject::Version { version }),
        };
        let kind = version_type & 0x0f;
        if kind != TYPE_ADVERTISEMENT {
            return Err(Reject::Type { kind });
        }
        let auth_len = if version == Version::V2 { AUTH_LEN } else { 0 };
        let address_len = if src.is_ipv4() { 4 } else { 16 };
        let expected = HEADER_LEN + address_len * usize::from(*count) + auth_len;
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
        if checksum(version, src, dst, payload) != 0 {
            let mut zeroed = payload.to_vec();
            zeroed[6..8].fill(0);
            return Err(Reject::Checksum {
                received: u16::from_be_bytes([*sum_hi, *sum_lo]),
                computed: checksum(version, src, dst, &zeroed),
            });
        }
        let (max_advert_interval_cs, auth) = match version {
            Version::V3 => (
                u16::from_be_bytes([*interval_hi, *interval_lo]) & INTERVAL_MASK,
                Auth::None,
            ),
            Version::V2 => {
                let data: [u8; AUTH_LEN] = rest[rest.len() - AUTH_LEN..]
                    .try_into()
                    .expect("the length check left the authentication data");
                let auth = match *interval_hi {
                    AUTH_NONE => Auth::None,
                    AUTH_PASS => Auth::Pass(data),
                    auth_type => return Err(Reject::AuthType { auth_type }),
                };
                (u16::from(*interval_lo) * CS_PER_SECOND, auth)
            }
        };
        if max_advert_interval_cs == 0 {
            return Err(Reject::ZeroInterval);
        }
        // The length check left exactly `count` addresses of the family.
        let addresses = &rest[..rest.len() - auth_len];
        let addresses = if src.is_ipv4() {
            let (v4, _) = addresses.as_chunks::<4>();
            v4.iter().map(|a| Ipv4Addr::from(*a).into()).collect()
        } else {
            let (v6, _) = addresses.as_chunks::<16>();
            v6.iter().map(|a| Ipv6Addr::from(*a).into()).collect()
        };
        Ok(Advertisement {
            version,
            vrid: *vrid,
            priority: *priority,
            max_advert_interval_cs,
            addresses,
            auth,
        })
    }
}

/// The Internet checksum of a `version` advertisement: in v3 over the IP
/// pseudo-header followed by `payload`, in v2 over `payload` alone.
fn checksum(version: Version, src: IpAddr, dst: IpAddr, payload: &[u8]) -> u16 {
    if version == Version::V2 {
        return crate::checksum::internet(&[payload]);
    }
    crate::checksum::transport(src, dst, IPPROTO_VRRP, payload)
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
            version: Version::V3,
            auth: Auth::None,
            vrid: 51,
            priority,
            max_advert_interval_cs: 100,
            addresses: vec![
                Ipv4Addr::new(192, 0, 2, 100).into(),
                Ipv4Addr::new(192, 0, 2, 101).into(),
            ],
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
        let version = if payload[0] >> 4 == 2 {
            Version::V2
        } else {
            Version::V3
        };
        let sum = checksum(
            version,
            KEEPALIVED_SRC.into(),
            VRRP_MULTICAST.into(),
            &payload,
        );
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
                version: Version::V3,
                auth: Auth::None,
                vrid: 7,
                priority: 200,
                max_advert_interval_cs: 50,
                addresses: vec![Ipv4Addr::new(192, 0, 2, 200).into()],
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
                version: Version::V3,
                auth: Auth::None,
                vrid: 1,
                priority: 255,
                max_advert_interval_cs: 1,
                addresses: vec![Ipv4Addr::new(192, 0, 2, 1).into()],
            },
            Advertisement {
                version: Version::V3,
                auth: Auth::None,
                vrid: 255,
                priority: 1,
                max_advert_interval_cs: MAX_ADVERT_INTERVAL_CS,
                addresses: (0..=254)
                    .map(|i| Ipv4Addr::new(192, 0, 2, i).into())
                    .collect(),
            },
            Advertisement {
                version: Version::V3,
                auth: Auth::None,
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
                "version 4",
                edited(good, |p| p[0] = 0x41),
                255,
                Reject::Version { version: 4 },
            ),
            (
                "version 2 without the authentication data",
                edited(good, |p| p[0] = 0x21),
                255,
                Reject::Length {
                    count: 2,
                    expected: 24,
                    len: 16,
                },
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

    const LINK_LOCAL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x11);
    const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);

    fn ipv6_advert() -> Advertisement {
        Advertisement {
            version: Version::V3,
            auth: Auth::None,
            vrid: 51,
            priority: 150,
            max_advert_interval_cs: 10,
            addresses: vec![VIP6.into()],
        }
    }

    /// RFC 5798 over IPv6: 16-byte addresses and the IPv6 pseudo-header
    /// (source, destination, 32-bit length, next header 112). The expected
    /// checksum is summed here by hand, word by word, not by the codec.
    #[test]
    fn ipv6_advertisement_bytes_and_checksum() {
        let payload = ipv6_advert().encode(LINK_LOCAL, VRRP_MULTICAST_V6);
        let mut expected = vec![0x31, 51, 150, 1, 0x00, 0x0a, 0, 0];
        expected.extend_from_slice(&VIP6.octets());
        let words = |bytes: &[u8]| -> u32 {
            bytes
                .chunks(2)
                .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
                .sum()
        };
        let mut sum = words(&LINK_LOCAL.octets())
            + words(&VRRP_MULTICAST_V6.octets())
            + expected.len() as u32
            + u32::from(IPPROTO_VRRP)
            + words(&expected);
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        expected[6..8].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        assert_eq!(payload, expected);
        assert_eq!(
            Advertisement::decode(&payload, LINK_LOCAL, VRRP_MULTICAST_V6, VRRP_TTL),
            Ok(ipv6_advert())
        );
    }

    #[test]
    fn ipv6_receive_checks() {
        let good = ipv6_advert().encode(LINK_LOCAL, VRRP_MULTICAST_V6);
        let decode = |payload: &[u8], src: Ipv6Addr, dst: Ipv6Addr, ttl: u8| {
            Advertisement::decode(payload, src, dst, ttl)
        };
        assert_eq!(
            decode(&good, LINK_LOCAL, VRRP_MULTICAST_V6, 64),
            Err(Reject::Ttl { ttl: 64 }),
            "hop limit other than 255"
        );
        let global = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x11);
        assert_eq!(
            decode(&good, global, VRRP_MULTICAST_V6, 255),
            Err(Reject::Source { src: global }),
            "source not link-local"
        );
        assert!(
            matches!(
                decode(&good, "fe80::12".parse().unwrap(), VRRP_MULTICAST_V6, 255),
                Err(Reject::Checksum { .. })
            ),
            "the pseudo-header's source counts"
        );
        // A 4-byte address list is an IPv4 advertisement: too short here.
        let v4_sized = ipv6_advert().encode(LINK_LOCAL, VRRP_MULTICAST_V6)[..12].to_vec();
        assert_eq!(
            decode(&v4_sized, LINK_LOCAL, VRRP_MULTICAST_V6, 255),
            Err(Reject::Length {
                count: 1,
                expected: 24,
                len: 12
            })
        );
        // RFC 3768 has no IPv6.
        let mut v2 = good.clone();
        v2[0] = 0x21;
        assert_eq!(
            decode(&v2, LINK_LOCAL, VRRP_MULTICAST_V6, 255),
            Err(Reject::Version { version: 2 })
        );
    }

    #[test]
    fn reject_names_are_stable_and_distinct() {
        let rejects = [
            Reject::Ttl { ttl: 0 },
            Reject::Source {
                src: Ipv6Addr::UNSPECIFIED,
            },
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
            Reject::VersionMismatch { ours: 0, theirs: 0 },
            Reject::AuthType { auth_type: 0 },
            Reject::Auth { why: "" },
            Reject::IntervalMismatch {
                ours_cs: 0,
                theirs_cs: 0,
            },
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

    /// Real VRRPv2 advertisements from keepalived 2.2.7 (Debian), its
    /// defaults (`vrrp_version 2`, `advert_int 1`), captured from an
    /// AF_PACKET socket on the peer of a veth pair between two network
    /// namespaces. Config: `vrrp_instance { state BACKUP; interface va;
    /// virtual_router_id 51; priority 150; virtual_ipaddress {
    /// 192.0.2.100/24 192.0.2.101/24 } }` (one address a line), sent from
    /// 192.0.2.1 to 224.0.0.18 with TTL 255 once Master. IP header:
    /// `45c0 002c 0001 0000 ff70 188d c000 0201 e000 0012`.
    const KEEPALIVED_V2: [u8; 24] = [
        0x21, 0x33, 0x96, 0x02, 0x00, 0x01, 0xc3,
        0xfe, // v2 advert, VRID 51, prio 150, 2 addrs, no auth, 1 s
        0xc0, 0x00, 0x02, 0x64, // 192.0.2.100
        0xc0, 0x00, 0x02, 0x65, // 192.0.2.101
        0, 0, 0, 0, 0, 0, 0, 0, // authentication data, unused
    ];
    /// The same on SIGTERM: priority 0.
    const KEEPALIVED_V2_PRIORITY_0: [u8; 24] = [
        0x21, 0x33, 0x00, 0x02, 0x00, 0x01, 0x59, 0xff, //
        0xc0, 0x00, 0x02, 0x64, //
        0xc0, 0x00, 0x02, 0x65, //
        0, 0, 0, 0, 0, 0, 0, 0,
    ];
    /// The same config with `authentication { auth_type PASS; auth_pass
    /// secret }`.
    const KEEPALIVED_V2_PASS: [u8; 24] = [
        0x21, 0x33, 0x96, 0x02, 0x01, 0x01, 0x86, 0xb2, // auth type 1 (PASS)
        0xc0, 0x00, 0x02, 0x64, //
        0xc0, 0x00, 0x02, 0x65, //
        b's', b'e', b'c', b'r', b'e', b't', 0, 0,
    ];
    const KEEPALIVED_V2_PASS_PRIORITY_0: [u8; 24] = [
        0x21, 0x33, 0x00, 0x02, 0x01, 0x01, 0x1c, 0xb3, //
        0xc0, 0x00, 0x02, 0x64, //
        0xc0, 0x00, 0x02, 0x65, //
        b's', b'e', b'c', b'r', b'e', b't', 0, 0,
    ];
    /// `auth_pass longerthan8`: keepalived sends the first 8 bytes.
    const KEEPALIVED_V2_PASS_8: [u8; 24] = [
        0x21, 0x33, 0x96, 0x02, 0x01, 0x01, 0x0e, 0x4d, //
        0xc0, 0x00, 0x02, 0x64, //
        0xc0, 0x00, 0x02, 0x65, //
        b'l', b'o', b'n', b'g', b'e', b'r', b't', b'h',
    ];

    fn keepalived_v2(priority: u8, auth: Auth) -> Advertisement {
        Advertisement {
            version: Version::V2,
            auth,
            ..keepalived_vrid51(priority)
        }
    }

    #[test]
    fn v2_round_trips_byte_for_byte_with_keepalived() {
        let secret = Auth::pass("secret").unwrap();
        let cases: [(Advertisement, &[u8]); 5] = [
            (keepalived_v2(150, Auth::None), &KEEPALIVED_V2),
            (keepalived_v2(0, Auth::None), &KEEPALIVED_V2_PRIORITY_0),
            (keepalived_v2(150, secret), &KEEPALIVED_V2_PASS),
            (keepalived_v2(0, secret), &KEEPALIVED_V2_PASS_PRIORITY_0),
            (
                keepalived_v2(150, Auth::pass("longerth").unwrap()),
                &KEEPALIVED_V2_PASS_8,
            ),
        ];
        for (advert, captured) in cases {
            assert_eq!(
                decode_ok(captured),
                advert,
                "decoding keepalived's {captured:02x?}"
            );
            let encoded = advert.encode(KEEPALIVED_SRC, VRRP_MULTICAST);
            assert_eq!(
                encoded, captured,
                "encoding {advert:?} should give keepalived's bytes {captured:02x?}, got {encoded:02x?}"
            );
        }
    }

    #[test]
    fn v2_checksum_leaves_the_ip_addresses_out() {
        // Unicast to another address from another source: still valid.
        let other = Ipv4Addr::new(192, 0, 2, 9);
        let result = Advertisement::decode(&KEEPALIVED_V2_PASS, other, other, VRRP_TTL);
        assert_eq!(
            result,
            Ok(keepalived_v2(150, Auth::pass("secret").unwrap())),
            "a v2 checksum does not depend on the IP header"
        );
        // An advert interval of 255 s is the most a v2 byte holds.
        let slow = Advertisement {
            max_advert_interval_cs: 255 * CS_PER_SECOND,
            ..keepalived_v2(1, Auth::None)
        };
        let payload = slow.encode(KEEPALIVED_SRC, VRRP_MULTICAST);
        assert_eq!(payload[5], 255);
        assert_eq!(decode_ok(&payload), slow);
    }

    #[test]
    fn rejects_malformed_v2_advertisements() {
        let good = &KEEPALIVED_V2_PASS;
        let cases: Vec<(&str, Vec<u8>, Reject)> = vec![
            (
                "auth type 2 (IP AH)",
                edited(good, |p| p[4] = 2),
                Reject::AuthType { auth_type: 2 },
            ),
            (
                "auth type 7",
                edited(good, |p| p[4] = 7),
                Reject::AuthType { auth_type: 7 },
            ),
            (
                "authentication data cut off",
                good[..16].to_vec(),
                Reject::Length {
                    count: 2,
                    expected: 24,
                    len: 16,
                },
            ),
            (
                "interval 0 s",
                edited(good, |p| p[5] = 0),
                Reject::ZeroInterval,
            ),
            (
                "password changed in flight",
                {
                    let mut p = good.to_vec();
                    p[16] = b'S';
                    p
                },
                Reject::Checksum {
                    received: 0x86b2,
                    computed: 0xa6b2,
                },
            ),
        ];
        for (what, payload, expected) in cases {
            let result = Advertisement::decode(&payload, KEEPALIVED_SRC, VRRP_MULTICAST, VRRP_TTL);
            assert_eq!(
                result.as_ref(),
                Err(&expected),
                "{what}: expected reject {expected:?} for {payload:02x?}, got {result:?}"
            );
        }
    }

    #[test]
    fn passwords_are_1_to_8_bytes_zero_padded() {
        assert_eq!(Auth::pass("secret"), Ok(Auth::Pass(*b"secret\0\0")));
        assert_eq!(Auth::pass("12345678"), Ok(Auth::Pass(*b"12345678")));
        for bad in ["", "123456789", "a\0b"] {
            let err = Auth::pass(bad).expect_err(bad);
            assert!(err.contains("1..=8 bytes"), "{bad:?}: {err}");
        }
    }
}
