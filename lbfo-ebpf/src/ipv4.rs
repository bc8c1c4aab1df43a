//! IPv4 to a VIP: dropped unless owned; passed to the local stack, or
//! steered to a backend in balance mode.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use lbfo_common::{FlowKey, VipKey, VipMode};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::{IPPROTO_TCP, IPPROTO_UDP, Malformed, count, lookup_vip, now, ptr_at, steer};

/// Fragment offset and "more fragments" bits of the IPv4 flags/offset field.
const IP_FRAGMENT_MASK: u16 = 0x3fff;

pub fn handle(ctx: &XdpContext, eth: *mut EthHdr) -> Result<u32, Malformed> {
    let ip: *const Ipv4Hdr = ptr_at(ctx, EthHdr::LEN)?;
    // SAFETY: ptr_at checked bounds; Ipv4Hdr is all bytes (alignment 1).
    let ip = unsafe { &*ip };
    let destination: VipKey = u32::from_ne_bytes(ip.dst_addr);
    let Some(vip) = lookup_vip(destination) else {
        return Ok(xdp_action::XDP_PASS);
    };
    if !vip.answers(now()) {
        count(vip.vip_id, |c| c.ip_dropped_not_owner += 1);
        return Ok(xdp_action::XDP_DROP);
    }
    if vip.mode == VipMode::Balance as u8
        && (ip.proto == IPPROTO_TCP || ip.proto == IPPROTO_UDP)
        // Only first fragments carry ports; fragments go to the local stack.
        && u16::from_be_bytes(ip.frags) & IP_FRAGMENT_MASK == 0
    {
        let header_len = ((ip.vihl & 0x0f) as usize) * 4;
        if header_len < Ipv4Hdr::LEN {
            return Err(Malformed);
        }
        let (src_port, dst_port) = steer::ports(ctx, EthHdr::LEN + header_len)?;
        let flow = FlowKey::ipv4(ip.src_addr, ip.dst_addr, src_port, dst_port, ip.proto);
        return steer::steer(ctx, eth, &vip, &flow);
    }
    count(vip.vip_id, |c| c.ip_passed += 1);
    Ok(xdp_action::XDP_PASS)
}
