//! Balanced VIPs: backend MACs, table publishing, drain and undrain.

use super::*;

impl Daemon {
    /// Learns backend MACs from the neighbour table, asks the kernel to
    /// resolve the ones still unknown, and republishes tables that changed.
    pub(super) async fn refresh_backend_macs(&mut self) {
        let neighbours = match self.owner.netlink.neighbours(self.iface.index).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("cannot read the neighbour table: {e}");
                return;
            }
        };
        for index in 0..self.vips.len() {
            let Some(balance) = self.vips[index].balance.as_mut() else {
                continue;
            };
            let changed = balance.learn_macs(&neighbours);
            let unresolved: Vec<Ipv4Addr> = balance.unresolved().collect();
            for addr in unresolved {
                if let Err(e) = self.owner.netlink.solicit(self.iface.index, addr).await {
                    tracing::debug!(backend = %addr, "cannot ask the kernel to resolve: {e}");
                }
            }
            if changed {
                self.publish_table(index);
            }
        }
    }

    /// Publishes a balanced VIP's backends and table and flips its entry.
    pub(super) fn publish_table(&mut self, index: usize) {
        let vip = &mut self.vips[index];
        let Some(balance) = vip.balance.as_mut() else {
            return;
        };
        let result = balance
            .publish(&mut self.owner.datapath)
            .map_err(crate::ownership::OwnershipError::from)
            .and_then(|generation| {
                vip.ownership.table_generation = generation;
                self.owner.write_entry(&vip.ownership)
            });
        match result {
            Ok(()) => {
                let taking: Vec<String> = balance
                    .backends
                    .iter()
                    .filter(|b| b.accepts_new_flows())
                    .map(|b| b.address.to_string())
                    .collect();
                tracing::info!(vip = %vip.config.name, "new flows now go to [{}]", taking.join(", "));
            }
            Err(e) => {
                tracing::error!(vip = %vip.config.name, "cannot publish the backend table: {e}")
            }
        }
    }

    /// `lbfo drain/undrain BACKEND`: in every VIP that has it.
    pub(super) fn set_drained(&mut self, backend: &str, drained: bool) -> Response {
        let Ok(address) = backend.parse::<Ipv4Addr>() else {
            return Response::Error {
                message: format!("{backend:?} is not a backend address (like 192.0.2.21)"),
            };
        };
        let mut found = Vec::new();
        for index in 0..self.vips.len() {
            let Some(balance) = self.vips[index].balance.as_mut() else {
                continue;
            };
            let Some(b) = balance.backends.iter_mut().find(|b| b.address == address) else {
                continue;
            };
            let changed = b.drained != drained;
            b.drained = drained;
            let name = self.vips[index].config.name.clone();
            if changed {
                tracing::info!(backend = %address, vip = %name, "{} by operator command", if drained { "drained" } else { "undrained" });
                self.publish_table(index);
            }
            found.push(name);
        }
        if found.is_empty() {
            return Response::Error {
                message: format!("no balanced VIP has backend {address}"),
            };
        }
        Response::Done {
            message: format!(
                "backend {address} {} in {}",
                if drained {
                    "drained (keeps its flows, gets no new ones)"
                } else {
                    "takes new flows again"
                },
                found.join(", ")
            ),
        }
    }
}
