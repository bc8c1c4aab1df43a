//! lbfo's XDP program.
//!
//! A frame arriving on the VIP interface takes one of these paths:
//!
//! - ARP request for a VIP this node owns (lease still running): rewritten in
//!   place into the ARP reply and sent back out with `XDP_TX`.
//! - ARP request for a VIP this node does not own: `XDP_DROP`, so the kernel
//!   never answers for it either.
//! - ARP request for a route VIP: `XDP_DROP`, owned or not. Routers reach the
//!   node by its own address; the VIP is on the route device only so the
//!   routing daemon announces it, and the kernel must not answer for it.
//! - ARP reply or announcement from another MAC for a VIP this node owns:
//!   counted as a conflict and passed on.
//! - IPv4 to a VIP not owned: `XDP_DROP`.
//! - IPv4 to an owned VIP in local mode: `XDP_PASS` to the local stack.
//! - TCP or UDP to an owned VIP in balance mode: sent on to a backend with
//!   `XDP_TX` (L2 direct server return: only the MACs change). The backend
//!   is the one the connection table remembers for the flow, else the one
//!   the VIP's Maglev table gives for the flow's hash. That goes for any
//!   packet of a flow this node has not seen, not only a SYN: when routers
//!   move flows between lbfo nodes (ECMP), every node's table sends an
//!   established connection to the backend it already has.
//! - Anything else, including frames too short or malformed to parse: `XDP_PASS`.
//!
//! Ownership lives in the `VIPS` map, written only by the control plane.
//!
//! The maps are declared here at their largest; the control plane creates
//! the balancing ones at the sizes its configuration needs (one entry each
//! when nothing is balanced). The program reaches them only through
//! lookups, which fail past the end, so it works at any size.
#![no_std]
#![no_main]

use core::mem;

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, xdp_action},
    helpers::bpf_jiffies64,
    macros::{map, xdp},
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
    programs::XdpContext,
};
use lbfo_common::{
    BACKEND_ACCEPTS_NEW, BACKEND_PRESENT, Backend, BackendCounters, CONNTRACK_ENTRIES, FlowKey,
    MAGLEV_ENTRIES, MAGLEV_TABLE_SIZE, MaglevSlot, MAX_BACKENDS, MAX_VIPS, NO_BACKEND, NO_VIP, VIP_FLAG_ROUTE,
    VipCounters, VipKey, VipMode, VipState, maglev_table_start,
};
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

/// Maglev lookup tables of the balanced VIPs: backend ids, two generations
/// per VIP (see `VipState::table_generation`). Memory-mappable, so the
/// control plane writes a whole table with one copy instead of 65,537 syscalls.
#[map]
static MAGLEV: Array<MaglevSlot> = Array::with_max_entries(MAGLEV_ENTRIES, BPF_F_MMAPABLE);

/// Backends by id.
#[map]
static BACKENDS: Array<Backend> = Array::with_max_entries(MAX_BACKENDS, 0);

/// The backend each known flow went to, so flows stay put when the backend
/// set changes.
#[map]
static CONNTRACK: LruHashMap<FlowKey, u32> = LruHashMap::with_max_entries(CONNTRACK_ENTRIES, 0);

/// Per-CPU counters per backend id.
#[map]
static BACKEND_COUNTERS: PerCpuArray<BackendCounters> = PerCpuArray::with_max_entries(MAX_BACKENDS, 0);

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
/// Fragment offset and "more fragments" bits of the IPv4 flags/offset field.
const IP_FRAGMENT_MASK: u16 = 0x3fff;

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

/// Not used on traffic: the control plane runs it through BPF_PROG_TEST_RUN
/// to read the tick counter the lease deadlines in `VIPS` are written in.
/// It writes `bpf_jiffies64()` into the first 8 bytes of the frame.
#[xdp]
pub fn lbfo_clock(ctx: XdpContext) -> u32 {
    if let Ok(out) = ptr_at::<[u8; 8]>(&ctx, 0) {
        // SAFETY: ptr_at checked the 8 bytes are inside the frame.
        unsafe { *out = now().to_ne_bytes() };
    }
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
        handle_ipv4(ctx, eth)
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

fn handle_ipv4(ctx: &XdpContext, eth: *mut EthHdr) -> Result<u32, Malformed> {
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
        return steer(ctx, eth, ip, &vip);
    }
    count(vip.vip_id, |c| c.ip_passed += 1);
    Ok(xdp_action::XDP_PASS)
}

/// Sends a TCP or UDP packet for a balanced VIP on to its backend.
fn steer(ctx: &XdpContext, eth: *mut EthHdr, ip: &Ipv4Hdr, vip: &VipState) -> Result<u32, Malformed> {
    let header_len = ((ip.vihl & 0x0f) as usize) * 4;
    if header_len < Ipv4Hdr::LEN {
        return Err(Malformed);
    }
    // Source and destination port lead both the TCP and the UDP header.
    let ports: *const [u8; 4] = ptr_at(ctx, EthHdr::LEN + header_len)?;
    // SAFETY: ptr_at checked bounds; a byte array has alignment 1.
    let ports = unsafe { *ports };
    let flow = FlowKey {
        src_addr: u32::from_ne_bytes(ip.src_addr),
        dst_addr: u32::from_ne_bytes(ip.dst_addr),
        src_port: u16::from_ne_bytes([ports[0], ports[1]]),
        dst_port: u16::from_ne_bytes([ports[2], ports[3]]),
        protocol: ip.proto,
        _pad: [0; 3],
    };

    let (backend_id, backend, new_flow) = match tracked_backend(&flow) {
        Some((id, backend)) => (id, backend, false),
        None => {
            let slot = maglev_table_start(vip.table_slot, vip.table_generation)
                + flow.hash() % MAGLEV_TABLE_SIZE;
            let id = MAGLEV.get(slot).map_or(NO_BACKEND, |s| s.backend_id);
            match BACKENDS.get(id).copied() {
                Some(backend) if backend.flags & BACKEND_ACCEPTS_NEW != 0 => {
                    // A full table evicts its least recently used flow.
                    let _ = CONNTRACK.insert(&flow, &id, 0);
                    (id, backend, true)
                }
                _ => {
                    count(vip.vip_id, |c| c.no_backend += 1);
                    return Ok(xdp_action::XDP_DROP);
                }
            }
        }
    };

    // SAFETY: the Ethernet header was bounds-checked by the caller.
    unsafe {
        (*eth).dst_addr = backend.mac;
        (*eth).src_addr = vip.mac;
    }
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    count(vip.vip_id, |c| c.steered += 1);
    if let Some(counters) = BACKEND_COUNTERS.get_ptr_mut(backend_id) {
        // SAFETY: per-CPU slot; nothing else on this CPU runs while we hold it.
        let counters = unsafe { &mut *counters };
        counters.packets += 1;
        counters.bytes += bytes;
        counters.new_flows += new_flow as u64;
    }
    Ok(xdp_action::XDP_TX)
}

/// The backend a known flow went to, if that backend is still configured.
#[inline(always)]
fn tracked_backend(flow: &FlowKey) -> Option<(u32, Backend)> {
    // SAFETY: the value is copied out at once.
    let id = unsafe { CONNTRACK.get(flow).copied() }?;
    let backend = BACKENDS.get(id).copied()?;
    (backend.flags & BACKEND_PRESENT != 0).then_some((id, backend))
}

/// A copy of the VIP's state, so a concurrent control-plane update can never
/// be seen half-written halfway through a decision.
#[inline(always)]
fn lookup_vip(key: VipKey) -> Option<VipState> {
    // SAFETY: the value is copied out at once; the control plane replaces whole entries.
    unsafe { VIPS.get(&key).copied() }
}

/// The kernel's tick counter, the clock of leases. The verifier turns this
/// helper into a single load; nanosecond clocks cost a helper call and a
/// clock read (tens of nanoseconds in a virtual machine) per packet.
#[inline(always)]
fn now() -> u64 {
    // SAFETY: a plain helper call without arguments.
    unsafe { bpf_jiffies64() }
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
