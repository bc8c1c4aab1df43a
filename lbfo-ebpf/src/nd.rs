//! Neighbour Discovery (RFC 4861) for IPv6 VIPs, what ARP is for IPv4 ones:
//!
//! - A Neighbour Solicitation for a VIP this node owns (lease running) is
//!   rewritten in place into the Neighbour Advertisement and sent back with
//!   `XDP_TX`, whether it came to the solicited-node group or unicast (a
//!   reachability probe). A duplicate address detection probe (source `::`)
//!   is answered to all nodes, defending the address.
//! - One for a VIP this node does not own: `XDP_DROP`, so the kernel never
//!   answers for an address left on the interface.
//! - An advertisement from another MAC for a VIP this node owns: counted as
//!   a conflict and passed on.
//!
//! Only messages that pass RFC 4861's checks (section 7.1: hop limit 255,
//! code 0, right after the IPv6 header, no option of length 0, the
//! checksum) are answered or counted; the others are counted as malformed
//! and passed to the kernel, which discards them.

use core::mem::size_of;

use aya_ebpf::{bindings::xdp_action, helpers::bpf_xdp_adjust_tail, programs::XdpContext};
use lbfo_common::{VIP_FLAG_ROUTE, Vip6Key, VipState};
use network_types::{
    eth::{EthHdr, EtherType},
    ip::Ipv6Hdr,
};

use crate::{IPPROTO_ICMPV6, Malformed, count, lookup_vip6, now, ptr_at};

const NEIGHBOUR_SOLICITATION: u8 = 135;
const NEIGHBOUR_ADVERTISEMENT: u8 = 136;
const OPTION_SOURCE_LINK_LAYER: u8 = 1;
const OPTION_TARGET_LINK_LAYER: u8 = 2;
/// Routers never forward ND, so 255 proves the sender is on the link.
const ND_HOP_LIMIT: u8 = 255;
const FLAG_SOLICITED: u8 = 0x40;
const FLAG_OVERRIDE: u8 = 0x20;
/// The longest message checked, in 8-byte units: the fixed part and 13
/// options, far more than any solicitation carries. Longer ones cannot be
/// checked, so they are never answered.
const MAX_UNITS: usize = 16;
/// Where ND starts when no extension header precedes it, as it must.
const ND_OFFSET: usize = EthHdr::LEN + Ipv6Hdr::LEN;

/// ff02::1.
const ALL_NODES: Vip6Key = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

/// What solicitations and advertisements share: the ICMPv6 header, the
/// flags (advertisements; reserved in solicitations) and the target.
#[repr(C)]
#[derive(Clone, Copy)]
struct NdMessage {
    icmp_type: u8,
    code: u8,
    checksum: [u8; 2],
    flags: u8,
    reserved: [u8; 3],
    target: Vip6Key,
}

/// The whole frame of the advertisement the program answers with.
#[repr(C)]
struct Advert {
    eth: EthHdr,
    ip: Ipv6Hdr,
    message: NdMessage,
    /// The target link-layer address option: type, length 1 (8 bytes), MAC.
    option: [u8; 8],
}
const ADVERT_ICMP_LEN: usize = size_of::<NdMessage>() + 8;

/// `Some(verdict)` for a solicitation or advertisement whose target is a
/// VIP; `None` for anything else, which the caller handles by destination.
pub fn handle(
    ctx: &XdpContext,
    eth: *mut EthHdr,
    ip: &Ipv6Hdr,
    offset: usize,
) -> Result<Option<u32>, Malformed> {
    // Type, code and checksum, which every ICMPv6 message has. (Reading the
    // type byte alone, at an offset the verifier does not know, turns the
    // bounds check into a form it cannot follow.)
    let icmp_header: *const [u8; 4] = ptr_at(ctx, offset)?;
    // SAFETY: ptr_at checked bounds; a byte array has alignment 1.
    let [icmp_type, ..] = unsafe { *icmp_header };
    if icmp_type != NEIGHBOUR_SOLICITATION && icmp_type != NEIGHBOUR_ADVERTISEMENT {
        return Ok(None);
    }
    let message: *const NdMessage = ptr_at(ctx, offset)?;
    // SAFETY: ptr_at checked bounds; NdMessage is all bytes (alignment 1).
    let target = unsafe { (*message).target };
    let Some(vip) = lookup_vip6(&target) else {
        return Ok(None);
    };

    if icmp_type == NEIGHBOUR_SOLICITATION {
        // Route VIPs are IPv4 only; an entry that says otherwise is never answered.
        if !vip.answers(now()) || vip.flags & VIP_FLAG_ROUTE != 0 {
            count(vip.vip_id, |c| c.nd_dropped_not_owner += 1);
            return Ok(Some(xdp_action::XDP_DROP));
        }
        return answer(ctx, eth, ip, offset, target, &vip).map(Some);
    }
    if vip.answers(now()) {
        // SAFETY: the Ethernet header was bounds-checked by the caller.
        let sender = unsafe { (*eth).src_addr };
        let claimed_by = check(ctx, ip, offset, OPTION_TARGET_LINK_LAYER)?.unwrap_or(sender);
        if claimed_by != vip.mac {
            count(vip.vip_id, |c| c.conflicts_seen += 1);
        }
    }
    Ok(Some(xdp_action::XDP_PASS))
}

/// Turns a checked solicitation for an owned VIP into its advertisement.
fn answer(
    ctx: &XdpContext,
    eth: *mut EthHdr,
    ip: &Ipv6Hdr,
    offset: usize,
    target: Vip6Key,
    vip: &VipState,
) -> Result<u32, Malformed> {
    let source_link_layer = check(ctx, ip, offset, OPTION_SOURCE_LINK_LAYER)?;
    // SAFETY: the Ethernet header was bounds-checked by the caller.
    let requester_mac = unsafe { (*eth).src_addr };
    let (destination, destination_mac, flags) = if is_unspecified(&ip.src_addr) {
        // Duplicate address detection: RFC 4861 7.1.1 wants it sent to the
        // target's solicited-node group without a source address option;
        // 7.2.4 answers it to all nodes, not solicited.
        if source_link_layer.is_some() || !same(&ip.dst_addr, &solicited_node(&target)) {
            return Err(Malformed);
        }
        (ALL_NODES, multicast_mac(&ALL_NODES), FLAG_OVERRIDE)
    } else {
        (ip.src_addr, requester_mac, FLAG_SOLICITED | FLAG_OVERRIDE)
    };

    let option = [
        OPTION_TARGET_LINK_LAYER,
        1,
        vip.mac[0],
        vip.mac[1],
        vip.mac[2],
        vip.mac[3],
        vip.mac[4],
        vip.mac[5],
    ];
    let mut sum = pseudo_header_sum(&target, &destination, ADVERT_ICMP_LEN);
    // Type, code, the flags and the first reserved byte; the checksum and the other reserved bytes are zero.
    sum = add_words(sum, &[NEIGHBOUR_ADVERTISEMENT, 0, flags, 0]);
    sum = add_words(sum, &target);
    sum = add_words(sum, &option);
    let advert = Advert {
        eth: EthHdr {
            dst_addr: destination_mac,
            src_addr: vip.mac,
            ether_type: EtherType::Ipv6 as u16,
        },
        ip: Ipv6Hdr {
            vcf: [0x60, 0, 0, 0],
            payload_len: (ADVERT_ICMP_LEN as u16).to_be_bytes(),
            next_hdr: IPPROTO_ICMPV6,
            hop_limit: ND_HOP_LIMIT,
            src_addr: target,
            dst_addr: destination,
        },
        message: NdMessage {
            icmp_type: NEIGHBOUR_ADVERTISEMENT,
            code: 0,
            checksum: (!fold(sum)).to_be_bytes(),
            flags,
            reserved: [0; 3],
            target,
        },
        option,
    };

    // The solicitation may be shorter (no option) or longer (more options,
    // padding) than the advertisement. Resizing moves the frame's end, so
    // every pointer into it is taken again afterwards.
    let delta = size_of::<Advert>() as i32 - (ctx.data_end() - ctx.data()) as i32;
    // SAFETY: a helper call on this program's own context.
    if delta != 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
        // The driver left no room to grow the frame: the kernel, which holds
        // the address of a VIP this node owns, answers instead.
        return Ok(xdp_action::XDP_PASS);
    }
    let out: *mut Advert = ptr_at(ctx, 0)?;
    // SAFETY: ptr_at checked that the whole frame is inside the packet.
    unsafe { out.write(advert) };
    count(vip.vip_id, |c| c.nd_replied += 1);
    Ok(xdp_action::XDP_TX)
}

/// RFC 4861's checks of a received solicitation or advertisement that do
/// not depend on its type (sections 7.1.1 and 7.1.2), and its link-layer
/// address option of type `wanted`, if it has one.
fn check(
    ctx: &XdpContext,
    ip: &Ipv6Hdr,
    offset: usize,
    wanted: u8,
) -> Result<Option<[u8; 6]>, Malformed> {
    // Extension headers came first, or a router forwarded it.
    if offset != ND_OFFSET || ip.hop_limit != ND_HOP_LIMIT {
        return Err(Malformed);
    }
    let message: *const NdMessage = ptr_at(ctx, ND_OFFSET)?;
    // SAFETY: ptr_at checked bounds; NdMessage is all bytes (alignment 1).
    if unsafe { (*message).code } != 0 {
        return Err(Malformed);
    }
    // Options come in 8-byte units, so a message that is not a whole number
    // of them has one that runs past its end.
    let len = u16::from_be_bytes(ip.payload_len) as usize;
    if len < size_of::<NdMessage>() || len % 8 != 0 || len > MAX_UNITS * 8 {
        return Err(Malformed);
    }

    // One pass over the message in 8-byte units adds up the checksum and
    // walks the options, which start after the fixed part.
    let units = len / 8;
    let mut sum = pseudo_header_sum(&ip.src_addr, &ip.dst_addr, len);
    let mut next_option = size_of::<NdMessage>() / 8;
    let mut link_layer = None;
    for unit in 0..MAX_UNITS {
        if unit >= units {
            break;
        }
        let chunk: *const [u8; 8] = ptr_at(ctx, ND_OFFSET + unit * 8)?;
        // SAFETY: ptr_at checked bounds; a byte array has alignment 1.
        let chunk = unsafe { *chunk };
        sum = add_words(sum, &chunk);
        if unit == next_option {
            let [kind, option_units, a, b, c, d, e, f] = chunk;
            if option_units == 0 {
                return Err(Malformed);
            }
            if kind == wanted && option_units == 1 {
                link_layer = Some([a, b, c, d, e, f]);
            }
            next_option += option_units as usize;
        }
    }
    // The last option must end where the message does, and a message that
    // carries its own checksum sums to all ones.
    if next_option != units || fold(sum) != 0xffff {
        return Err(Malformed);
    }
    Ok(link_layer)
}

/// The Ethernet group of an IPv6 multicast group (RFC 2464 section 7).
/// Built, not a constant: the choice between a constant MAC and the
/// requester's would put the constant in a `.rodata` map of its own.
#[inline(always)]
fn multicast_mac(group: &Vip6Key) -> [u8; 6] {
    [0x33, 0x33, group[12], group[13], group[14], group[15]]
}

/// ff02::1:ffXX:XXXX, the group a solicitation for `target` goes to.
fn solicited_node(target: &Vip6Key) -> Vip6Key {
    let mut group = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 0];
    group[13] = target[13];
    group[14] = target[14];
    group[15] = target[15];
    group
}

/// The ICMPv6 checksum's pseudo-header (RFC 8200 section 8.1), summed.
#[inline(always)]
fn pseudo_header_sum(source: &Vip6Key, destination: &Vip6Key, len: usize) -> u32 {
    let sum = add_words(add_words(0, source), destination);
    add_words(
        sum,
        &[0, 0, (len >> 8) as u8, len as u8, 0, 0, 0, IPPROTO_ICMPV6],
    )
}

/// Adds big-endian 16-bit words to a one's complement sum (RFC 1071). The
/// XDP program sums only fixed-size pieces, so it has this small copy of
/// the control plane's checksum, which works on slices of any length.
#[inline(always)]
fn add_words<const N: usize>(sum: u32, bytes: &[u8; N]) -> u32 {
    let (words, _) = bytes.as_chunks::<2>();
    words
        .iter()
        .fold(sum, |sum, word| sum + u16::from_be_bytes(*word) as u32)
}

/// Folds a sum of fewer than 65,536 words into 16 bits: the first round
/// leaves at most 0x1fffe, the second at most 0xffff.
#[inline(always)]
fn fold(sum: u32) -> u16 {
    let sum = (sum & 0xffff) + (sum >> 16);
    ((sum & 0xffff) + (sum >> 16)) as u16
}

/// Address comparisons as two 64-bit words: a 16-byte array comparison may
/// become a `bcmp` call, which BPF does not have.
#[inline(always)]
fn same(a: &Vip6Key, b: &Vip6Key) -> bool {
    u128::from_ne_bytes(*a) == u128::from_ne_bytes(*b)
}

#[inline(always)]
fn is_unspecified(address: &Vip6Key) -> bool {
    u128::from_ne_bytes(*address) == 0
}
