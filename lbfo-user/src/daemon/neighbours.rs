//! Backend MACs, off the main loop: a task reads the interface's neighbour
//! table every [`NEIGHBOUR_REFRESH`] and asks the kernel to resolve the
//! backends the core names, so a slow netlink dump never delays an
//! advertisement or a lease renewal.

use std::{collections::HashMap, net::IpAddr, time::Duration};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::netlink::Netlink;

/// How often backend MACs are read from the neighbour table.
pub const NEIGHBOUR_REFRESH: Duration = Duration::from_millis(500);

/// Runs until `cancel`: snapshots go to `macs` while `balancing` says any
/// VIP is balanced; addresses from `solicit` are resolved with NTF_USE.
pub(super) async fn run(
    netlink: Netlink,
    ifindex: u32,
    balancing: tokio::sync::watch::Receiver<bool>,
    mut solicit: mpsc::UnboundedReceiver<Vec<IpAddr>>,
    macs: mpsc::Sender<HashMap<IpAddr, [u8; 6]>>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(NEIGHBOUR_REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {
                if !*balancing.borrow() {
                    continue;
                }
                match netlink.neighbours(ifindex).await {
                    // A full channel means the core has a snapshot to read
                    // already; the next one comes soon enough.
                    Ok(snapshot) => { let _ = macs.try_send(snapshot); }
                    Err(e) => tracing::warn!("cannot read the neighbour table: {e}"),
                }
            }
            Some(addresses) = solicit.recv() => {
                for addr in addresses {
                    if let Err(e) = netlink.solicit(ifindex, addr).await {
                        tracing::debug!(backend = %addr, "cannot ask the kernel to resolve: {e}");
                    }
                }
            }
        }
    }
}
