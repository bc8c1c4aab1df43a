//! ARP frames (Ethernet + IPv4 ARP, RFC 826) as the control plane sends them:
//! the two forms of gratuitous ARP that announce "this VIP is at my MAC".

use std::net::Ipv4Addr;

pub const ETH_P_ARP: u16 = 0x0806;
pub const BROADCAST: [u8; 6] = [0xff; 6];
/// Ethernet header (14) + ARP for IPv4 over Ethernet (28).
pub const FRAME_LEN: usize = 42;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArpOp {
    Request = 1,
    Reply = 2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpFrame {
    pub eth_dst: [u8; 6],
    pub eth_src: [u8; 6],
    pub op: ArpOp,
    pub sender_mac: [u8; 6],
    pub sender_ip: Ipv4Addr,
    pub target_mac: [u8; 6],
    pub target_ip: Ipv4Addr,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArpDecodeError {
    #[error("frame of {0} bytes is too short for Ethernet ARP")]
    TooShort(usize),
    #[error("not an ARP frame (ethertype {0:#06x})")]
    NotArp(u16),
    #[error(
        "not IPv4-over-Ethernet ARP (htype {htype}, ptype {ptype:#06x}, hlen {hlen}, plen {plen})"
    )]
    Unsupported {
        htype: u16,
        ptype: u16,
        hlen: u8,
        plen: u8,
    },
    #[error("unknown ARP operation {0}")]
    UnknownOp(u16),
}

impl ArpFrame {
    /// The two gratuitous ARP forms for `vip` at `mac`, both broadcast:
    /// a request (who-has VIP, tell VIP) and a reply whose target MAC equals
    /// the sender MAC, which is what Linux requires to treat a reply as
    /// gratuitous and update an existing neighbour entry at once.
    pub fn gratuitous(mac: [u8; 6], vip: Ipv4Addr) -> [ArpFrame; 2] {
        let base = ArpFrame {
            eth_dst: BROADCAST,
            eth_src: mac,
            op: ArpOp::Request,
            sender_mac: mac,
            sender_ip: vip,
            target_mac: [0; 6],
            target_ip: vip,
        };
        [
            base,
            ArpFrame {
                op: ArpOp::Reply,
                target_mac: mac,
                ..base
            },
        ]
    }

    pub fn encode(&self) -> [u8; FRAME_LEN] {
        let mut f = [0u8; FRAME_LEN];
        f[0..6].copy_from_slice(&self.eth_dst);
        f[6..12].copy_from_slice(&self.eth_src);
        f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
        f[14..16].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
        f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
        f[18] = 6;
        f[19] = 4;
        f[20..22].copy_from_slice(&(self.op as u16).to_be_bytes());
        f[22..28].copy_from_slice(&self.sender_mac);
        f[28..32].copy_from_slice(&self.sender_ip.octets());
        f[32..38].copy_from_slice(&self.target_mac);
        f[38..42].copy_from_slice(&self.target_ip.octets());
        f
    }

    pub fn decode(f: &[u8]) -> Result<Self, ArpDecodeError> {
        if f.len() < FRAME_LEN {
            return Err(ArpDecodeError::TooShort(f.len()));
        }
        let be16 = |i: usize| u16::from_be_bytes([f[i], f[i + 1]]);
        let mac = |i: usize| <[u8; 6]>::try_from(&f[i..i + 6]).expect("in bounds");
        let ip = |i: usize| Ipv4Addr::new(f[i], f[i + 1], f[i + 2], f[i + 3]);
        if be16(12) != ETH_P_ARP {
            return Err(ArpDecodeError::NotArp(be16(12)));
        }
        let (htype, ptype, hlen, plen) = (be16(14), be16(16), f[18], f[19]);
        if (htype, ptype, hlen, plen) != (1, 0x0800, 6, 4) {
            return Err(ArpDecodeError::Unsupported {
                htype,
                ptype,
                hlen,
                plen,
            });
        }
        let op = match be16(20) {
            1 => ArpOp::Request,
            2 => ArpOp::Reply,
            other => return Err(ArpDecodeError::UnknownOp(other)),
        };
        Ok(ArpFrame {
            eth_dst: mac(0),
            eth_src: mac(6),
            op,
            sender_mac: mac(22),
            sender_ip: ip(28),
            target_mac: mac(32),
            target_ip: ip(38),
        })
    }
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x00, 0x00, 0x01];
    const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);

    #[test]
    fn gratuitous_request_known_bytes() {
        let [request, _] = ArpFrame::gratuitous(MAC, VIP);
        let expected: [u8; 42] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // eth dst: broadcast
            0x02, 0x00, 0x5e, 0x00, 0x00, 0x01, // eth src
            0x08, 0x06, // ARP
            0x00, 0x01, 0x08, 0x00, 0x06, 0x04, // Ethernet, IPv4, 6, 4
            0x00, 0x01, // request
            0x02, 0x00, 0x5e, 0x00, 0x00, 0x01, 192, 0, 2, 100, // sender
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 192, 0, 2, 100, // target
        ];
        assert_eq!(request.encode(), expected);
    }

    #[test]
    fn gratuitous_reply_targets_its_own_mac() {
        let [_, reply] = ArpFrame::gratuitous(MAC, VIP);
        let bytes = reply.encode();
        assert_eq!(&bytes[20..22], &[0, 2], "operation must be reply");
        assert_eq!(&bytes[32..38], &MAC, "target MAC must equal sender MAC");
        assert_eq!(&bytes[38..42], &[192, 0, 2, 100]);
    }

    #[test]
    fn round_trip() {
        for frame in ArpFrame::gratuitous(MAC, VIP) {
            assert_eq!(ArpFrame::decode(&frame.encode()), Ok(frame));
        }
    }

    #[test]
    fn decode_rejects_bad_frames() {
        let good = ArpFrame::gratuitous(MAC, VIP)[0].encode();
        for len in 0..FRAME_LEN {
            assert_eq!(
                ArpFrame::decode(&good[..len]),
                Err(ArpDecodeError::TooShort(len))
            );
        }
        let mut bad = good;
        bad[19] = 16;
        assert!(matches!(
            ArpFrame::decode(&bad),
            Err(ArpDecodeError::Unsupported { plen: 16, .. })
        ));
        let mut bad = good;
        bad[21] = 3;
        assert_eq!(ArpFrame::decode(&bad), Err(ArpDecodeError::UnknownOp(3)));
        let mut bad = good;
        bad[13] = 0x00;
        assert_eq!(ArpFrame::decode(&bad), Err(ArpDecodeError::NotArp(0x0800)));
    }

    #[test]
    fn mac_formatting() {
        assert_eq!(format_mac(&MAC), "02:00:5e:00:00:01");
    }
}
