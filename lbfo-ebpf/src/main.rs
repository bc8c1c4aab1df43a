//! lbfo's XDP program.
//!
//! A frame arriving on the VIP interface takes one of these paths:
//!
//! - ARP request for a VIP this node owns (lease still running): rewritten in
//!   place into the ARP reply and sent back out with `XDP_TX`.
//! - ARP request for a VIP this node does not own: `XDP_DROP`, so the kernel
//!   never answers for it either.
//! - ARP reply or announcement from another MAC for a VIP this node owns:
//!   counted as a conflict and passed on.
//! - IPv4 to a VIP: owned -> `XDP_PASS` to the local stack; else `XDP_DROP`.
//! - Anything else, including frames too short or malformed to parse: `XDP_PASS`.
//!
//! Ownership lives in the `VIPS` map, written only by the control plane.
#![no_std]
#![no_main]

use core::mem;

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_ktime_get_ns,
    macros::{map, xdp},
    maps::{HashMap, PerCpuArray},
    programs::XdpContext,
};
use lbfo_common::{MAX_VIPS, NO_VIP, VipCounters, VipKey, VipState};
use network_types::{
    arp::ArpHdr,
    eth::{EthHdr, EtherType},
    ip::Ipv4Hdr,
};

/// VIPs this node knows about, keyed by address; see [`VipState`].
#[map]
static VIPS: HashMap<VipKey, VipState> = HashMap::with_max_entries(MAX_VIPS, 0);

/// Per-CPU counters indexed by `VipState::vip_id`; slot `NO_VIP` for frames
/// that belong to no VIP.
#[map]
static VIP_COUNTERS: PerCpuArray<VipCounters> = PerCpuArray::with_max_entries(MAX_VIPS + 1, 0);

const ARP_HTYPE_ETHERNET: u16 = 1;
const ARP_PTYPE_IPV4: u16 = 0x0800;
const ARP_OP_REQUEST: u16 = 1;
const ARP_OP_REPLY: u16 = 2;

#[xdp]
pub fn lbfo_xdp(ctx: XdpContext) -> u32 {
    match try_lbfo_xdp(&ctx) {
        Ok(action) => action,
        Err(Malformed) => {
            count(NO_VIP, |c| c.malformed += 1);
            xdp_action::XDP_PASS
        }
    }
}

/// Passes every frame. Not used by the daemon: the test lab attaches it to
/// the far end of veth links (native `XDP_TX` on a veth only delivers when
/// the peer runs an XDP program too), and the benchmarks use it as the floor
/// every per-packet cost is compared against.
#[xdp]
pub fn lbfo_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// A header did not fit in the frame, or its fixed fields were wrong.
struct Malformed;

fn try_lbfo_xdp(ctx: &XdpContext) -> Result<u32, Malformed> {
    let eth: *mut EthHdr = ptr_at(ctx, 0)?;
    // SAFETY: ptr_at checked that the whole header lies inside the frame.
    let ether_type = unsafe { (*eth).ether_type };
    if ether_type == EtherType::Arp as u16 {
        handle_arp(ctx, eth)
    } else if ether_type == EtherType::Ipv4 as u16 {
        handle_ipv4(ctx)
    } else {
        Ok(xdp_action::XDP_PASS)
    }
}

fn handle_arp(ctx: &XdpContext, eth: *mut EthHdr) -> Result<u32, Malformed> {
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
            && vip.answers(now_ns())
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
    if !vip.answers(now_ns()) {
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

fn handle_ipv4(ctx: &XdpContext) -> Result<u32, Malformed> {
    let ip: *const Ipv4Hdr = ptr_at(ctx, EthHdr::LEN)?;
    // SAFETY: ptr_at checked bounds; Ipv4Hdr is all bytes (alignment 1).
    let destination: VipKey = u32::from_ne_bytes(unsafe { (*ip).dst_addr });
    let Some(vip) = lookup_vip(destination) else {
        return Ok(xdp_action::XDP_PASS);
    };
    if vip.answers(now_ns()) {
        count(vip.vip_id, |c| c.ip_passed += 1);
        Ok(xdp_action::XDP_PASS)
    } else {
        count(vip.vip_id, |c| c.ip_dropped_not_owner += 1);
        Ok(xdp_action::XDP_DROP)
    }
}

/// A copy of the VIP's state, so a concurrent control-plane update can never
/// be seen half-written halfway through a decision.
#[inline(always)]
fn lookup_vip(key: VipKey) -> Option<VipState> {
    // SAFETY: the value is copied out at once; the control plane replaces whole entries.
    unsafe { VIPS.get(&key).copied() }
}

#[inline(always)]
fn now_ns() -> u64 {
    // SAFETY: a plain helper call without arguments.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
fn count(vip_id: u32, bump: impl FnOnce(&mut VipCounters)) {
    if let Some(counters) = VIP_COUNTERS.get_ptr_mut(vip_id) {
        // SAFETY: per-CPU slot; nothing else on this CPU runs while we hold it.
        bump(unsafe { &mut *counters });
    }
}

/// The one place that turns a frame offset into a pointer: it fails unless the
/// whole `T` lies before `data_end`, which is also what the verifier demands.
#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*mut T, Malformed> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + mem::size_of::<T>() > end {
        return Err(Malformed);
    }
    Ok((start + offset) as *mut T)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
