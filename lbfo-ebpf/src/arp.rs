//! ARP for IPv4 VIPs: requests answered in place, conflicts counted.

use aya_ebpf::bindings::xdp_action;
use lbfo_common::{VIP_FLAG_ROUTE, VipKey};
use network_types::{arp::ArpHdr, eth::EthHdr};

use crate::{Malformed, count, lookup_vip, now, ptr_at};

const ARP_HTYPE_ETHERNET: u16 = 1;
const ARP_PTYPE_IPV4: u16 = 0x0800;
const ARP_OP_REQUEST: u16 = 1;
const ARP_OP_REPLY: u16 = 2;

pub fn handle(ctx: &aya_ebpf::programs::XdpContext, eth: *mut EthHdr) -> Result<u32, Malformed> {
    let arp: *mut ArpHdr = ptr_at(ctx, EthHdr::LEN)?;
    // SAFETY: ptr_at checked bounds; ArpHdr is all byte arrays (alignment 1).
    let arp = unsafe { &mut *arp };
    if arp.htype() != ARP_HTYPE_ETHERNET
        || arp.ptype() != ARP_PTYPE_IPV4
        || arp.hlen != 6
        || arp.plen != 4
    {
        return Err(Malformed);
    }

    let op = arp.oper();
    let is_announcement = arp.spa == arp.tpa;
    if op == ARP_OP_REQUEST && !is_announcement {
        return Ok(answer_request(eth, arp));
    }
    if op == ARP_OP_REPLY || is_announcement {
        // Another machine claims an address: if it is one of ours, note the conflict
        // and let the kernel see it anyway (its neighbour table stays truthful).
        let claimed: VipKey = u32::from_ne_bytes(arp.spa);
        if let Some(vip) = lookup_vip(claimed)
            && vip.answers(now())
            && vip.mac != arp.sha
        {
            count(vip.vip_id, |c| c.conflicts_seen += 1);
        }
    }
    Ok(xdp_action::XDP_PASS)
}

/// "Who has `tpa`?": reply in place if `tpa` is a VIP we own, drop it if it is
/// a VIP we do not own, pass it to the kernel otherwise.
fn answer_request(eth: *mut EthHdr, arp: &mut ArpHdr) -> u32 {
    let target: VipKey = u32::from_ne_bytes(arp.tpa);
    let Some(vip) = lookup_vip(target) else {
        return xdp_action::XDP_PASS;
    };
    if vip.flags & VIP_FLAG_ROUTE != 0 {
        count(vip.vip_id, |c| c.arp_dropped_route += 1);
        return xdp_action::XDP_DROP;
    }
    if !vip.answers(now()) {
        count(vip.vip_id, |c| c.arp_dropped_not_owner += 1);
        return xdp_action::XDP_DROP;
    }

    let requester_mac = arp.sha;
    let requester_ip = arp.spa;
    arp.set_oper(ARP_OP_REPLY);
    arp.tha = requester_mac;
    arp.tpa = requester_ip;
    arp.sha = vip.mac;
    arp.spa = target.to_ne_bytes();
    // SAFETY: the Ethernet header was bounds-checked by the caller.
    unsafe {
        (*eth).dst_addr = requester_mac;
        (*eth).src_addr = vip.mac;
    }
    count(vip.vip_id, |c| c.arp_replied += 1);
    xdp_action::XDP_TX
}
