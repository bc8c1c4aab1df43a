//! IPv6: Neighbour Discovery for VIPs first (`nd`), then traffic to a VIP:
//! dropped unless owned; passed to the local stack, or steered to a backend
//! in balance mode, as for IPv4.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use lbfo_common::{FlowKey, VipMode};
use network_types::{eth::EthHdr, ip::Ipv6Hdr};

use crate::{
    IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, Malformed, count, lookup_vip6, nd, now, ptr_at, steer,
};

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_DSTOPTS: u8 = 60;
/// Extension headers skipped looking for ICMPv6. A packet with more is
/// handled by its destination alone, like any other protocol.
const MAX_EXTENSION_HEADERS: usize = 4;

pub fn handle(ctx: &XdpContext, eth: *mut EthHdr) -> Result<u32, Malformed> {
    let ip: *const Ipv6Hdr = ptr_at(ctx, EthHdr::LEN)?;
    // SAFETY: ptr_at checked bounds; Ipv6Hdr is all bytes (alignment 1).
    let ip = unsafe { &*ip };
    let (protocol, offset) = upper_layer(ctx, ip)?;
    if protocol == IPPROTO_ICMPV6
        && let Some(verdict) = nd::handle(ctx, eth, ip, offset)?
    {
        return Ok(verdict);
    }

    let Some(vip) = lookup_vip6(&ip.dst_addr) else {
        return Ok(xdp_action::XDP_PASS);
    };
    if !vip.answers(now()) {
        count(vip.vip_id, |c| c.ip_dropped_not_owner += 1);
        return Ok(xdp_action::XDP_DROP);
    }
    // Fragments (a fragment header ends `upper_layer`'s walk) and ICMPv6
    // go to the local stack, as for IPv4.
    if vip.mode == VipMode::Balance as u8 && (protocol == IPPROTO_TCP || protocol == IPPROTO_UDP) {
        let (src_port, dst_port) = steer::ports(ctx, offset)?;
        let flow = FlowKey::ipv6(ip.src_addr, ip.dst_addr, src_port, dst_port, protocol);
        return steer::steer(ctx, eth, &vip, &flow);
    }
    count(vip.vip_id, |c| c.ip_passed += 1);
    Ok(xdp_action::XDP_PASS)
}

/// The protocol after the extension headers that may precede ICMPv6, TCP or
/// UDP (hop-by-hop, routing, destination options), and the frame offset
/// where it starts. ND must not follow any, but one that does is still
/// recognised, so that a solicitation for a VIP this node does not own is
/// dropped however it comes; a balanced flow is steered behind them. A
/// fragment header ends the walk: the kernel discards fragmented ND, and
/// only the local stack can reassemble a fragmented flow.
fn upper_layer(ctx: &XdpContext, ip: &Ipv6Hdr) -> Result<(u8, usize), Malformed> {
    let mut protocol = ip.next_hdr;
    let mut offset = EthHdr::LEN + Ipv6Hdr::LEN;
    for _ in 0..MAX_EXTENSION_HEADERS {
        if !matches!(
            protocol,
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS
        ) {
            break;
        }
        // Each starts with the next header and its own length in 8-byte units, not counting the first 8.
        let header: *const [u8; 2] = ptr_at(ctx, offset)?;
        // SAFETY: ptr_at checked bounds; a byte array has alignment 1.
        let [next, units] = unsafe { *header };
        protocol = next;
        offset += (units as usize + 1) * 8;
    }
    Ok((protocol, offset))
}
