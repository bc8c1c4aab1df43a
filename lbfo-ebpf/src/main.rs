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
//! - Neighbour Solicitation for an IPv6 VIP: answered with the Neighbour
//!   Advertisement (`XDP_TX`) if owned, else `XDP_DROP`, as for ARP; an
//!   advertisement from another MAC for an owned one is a conflict (`nd`).
//! - IPv4 or IPv6 to a VIP not owned: `XDP_DROP`.
//! - IPv4 or IPv6 to an owned VIP in local mode: `XDP_PASS` to the local stack.
//! - TCP or UDP to an owned VIP in balance mode: sent on to a backend with
//!   `XDP_TX` (L2 direct server return: only the MACs change). The backend
//!   is the one the connection table remembers for the flow, else the one
//!   the VIP's Maglev table gives for the flow's hash. That goes for any
//!   packet of a flow this node has not seen, not only a SYN: when routers
//!   move flows between lbfo nodes (ECMP), every node's table sends an
//!   established connection to the backend it already has.
//! - Anything else, including frames too short or malformed to parse: `XDP_PASS`.
//!
//! Ownership lives in the `VIPS` and `VIPS6` maps, written only by the
//! control plane. Each protocol has its module (`arp`, `nd`, `ipv4`,
//! `ipv6`, `steer`); they share the maps, `ptr_at` and the helpers below.
//!
//! The maps are declared here at their largest; the control plane creates
//! the balancing ones at the sizes its configuration needs (one entry each
//! when nothing is balanced). The program reaches them only through
//! lookups, which fail past the end, so it works at any size.
#![no_std]
#![no_main]

mod arp;
mod ipv4;
mod ipv6;
mod nd;
mod steer;

use core::mem;

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, xdp_action},
    helpers::bpf_jiffies64,
    macros::{map, xdp},
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
    programs::XdpContext,
};
use lbfo_common::{
    Backend, BackendCounters, CONNTRACK_ENTRIES, FlowKey, MAGLEV_ENTRIES, MAX_BACKENDS, MAX_VIPS,
    MaglevSlot, NO_VIP, Vip6Key, VipCounters, VipKey, VipState,
};
use network_types::eth::{EthHdr, EtherType};

/// IPv4 VIPs this node knows about, keyed by address; see [`VipState`].
#[map]
static VIPS: HashMap<VipKey, VipState> = HashMap::with_max_entries(MAX_VIPS, 0);

/// IPv6 VIPs, keyed by address, with the same [`VipState`] as IPv4 ones.
#[map]
static VIPS6: HashMap<Vip6Key, VipState> = HashMap::with_max_entries(MAX_VIPS, 0);

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
static BACKEND_COUNTERS: PerCpuArray<BackendCounters> =
    PerCpuArray::with_max_entries(MAX_BACKENDS, 0);

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;

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
        arp::handle(ctx, eth)
    } else if ether_type == EtherType::Ipv4 as u16 {
        ipv4::handle(ctx, eth)
    } else if ether_type == EtherType::Ipv6 as u16 {
        ipv6::handle(ctx, eth)
    } else {
        Ok(xdp_action::XDP_PASS)
    }
}

/// A copy of the VIP's state, so a concurrent control-plane update can never
/// be seen half-written halfway through a decision.
#[inline(always)]
fn lookup_vip(key: VipKey) -> Option<VipState> {
    // SAFETY: the value is copied out at once; the control plane replaces whole entries.
    unsafe { VIPS.get(&key).copied() }
}

/// The same for an IPv6 VIP.
#[inline(always)]
fn lookup_vip6(key: &Vip6Key) -> Option<VipState> {
    // SAFETY: as in `lookup_vip`.
    unsafe { VIPS6.get(key).copied() }
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
