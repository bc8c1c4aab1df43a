//! Balance mode: a VIP's TCP and UDP, IPv4 or IPv6, sent on to a backend
//! (L2 direct server return: only the MACs change). `ipv4` and `ipv6` build
//! the flow's key; everything from there on is the same for both.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use lbfo_common::{
    BACKEND_ACCEPTS_NEW, BACKEND_PRESENT, Backend, FlowKey, MAGLEV_TABLE_SIZE, NO_BACKEND,
    VipState, maglev_table_start,
};
use network_types::eth::EthHdr;

use crate::{BACKEND_COUNTERS, BACKENDS, CONNTRACK, MAGLEV, Malformed, count, ptr_at};

/// The source and destination ports, which lead both the TCP and the UDP
/// header, at frame offset `offset`; wire order.
#[inline(always)]
pub fn ports(ctx: &XdpContext, offset: usize) -> Result<(u16, u16), Malformed> {
    let ports: *const [u8; 4] = ptr_at(ctx, offset)?;
    // SAFETY: ptr_at checked bounds; a byte array has alignment 1.
    let ports = unsafe { *ports };
    Ok((
        u16::from_ne_bytes([ports[0], ports[1]]),
        u16::from_ne_bytes([ports[2], ports[3]]),
    ))
}

/// Sends a TCP or UDP packet of `flow`, for a balanced VIP of either
/// family, on to its backend.
pub fn steer(
    ctx: &XdpContext,
    eth: *mut EthHdr,
    vip: &VipState,
    flow: &FlowKey,
) -> Result<u32, Malformed> {
    let (backend_id, backend, new_flow) = match tracked_backend(flow) {
        Some((id, backend)) => (id, backend, false),
        None => {
            let slot = maglev_table_start(vip.table_slot, vip.table_generation)
                + flow.hash() % MAGLEV_TABLE_SIZE;
            let id = MAGLEV.get(slot).map_or(NO_BACKEND, |s| s.backend_id);
            match BACKENDS.get(id).copied() {
                Some(backend) if backend.flags & BACKEND_ACCEPTS_NEW != 0 => {
                    // A full table evicts its least recently used flow.
                    let _ = CONNTRACK.insert(flow, &id, 0);
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
