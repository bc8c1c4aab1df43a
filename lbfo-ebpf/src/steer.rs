//! Balance mode: a VIP's TCP and UDP sent on to a backend (L2 direct server
//! return: only the MACs change).

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use lbfo_common::{
    BACKEND_ACCEPTS_NEW, BACKEND_PRESENT, Backend, FlowKey, MAGLEV_TABLE_SIZE, NO_BACKEND,
    VipState, maglev_table_start,
};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::{BACKEND_COUNTERS, BACKENDS, CONNTRACK, MAGLEV, Malformed, count, ptr_at};

/// Sends a TCP or UDP packet for a balanced VIP on to its backend.
pub fn steer(
    ctx: &XdpContext,
    eth: *mut EthHdr,
    ip: &Ipv4Hdr,
    vip: &VipState,
) -> Result<u32, Malformed> {
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
