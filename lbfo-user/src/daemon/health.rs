//! Health check results turned into VIP fault, VRRP priority and backend eligibility.

use super::*;

impl Daemon {
    /// Recomputes every VIP's and backend's health from the status board and
    /// acts on what changed: a VIP in fault gives its address up (map first),
    /// a VIP that recovers may own again, a failing weighted check lowers
    /// the VRRP priority, a backend that fails takes no new flows.
    pub(super) async fn apply_health(&mut self, cause: Option<&HealthEvent>) {
        let is_healthy = |id: &CheckId| self.health.get(id).is_some_and(|s| s.state.is_healthy());
        let mut vip_changes = Vec::new();
        let mut backend_changes = Vec::new();
        for (index, vip) in self.vips.iter().enumerate() {
            let mut fault = false;
            let mut penalty: u8 = 0;
            for (id, check) in Vip::check_ids(&vip.config) {
                if is_healthy(&id) {
                    continue;
                }
                match check.weight {
                    Some(w) => penalty = penalty.saturating_add(w.unsigned_abs().min(255) as u8),
                    None => fault = true,
                }
            }
            if fault != vip.fault || penalty != vip.priority_penalty {
                vip_changes.push((index, fault, penalty));
            }
            if let Some(balance) = &vip.balance {
                for (b, backend) in vip.config.backends.iter().enumerate() {
                    let healthy =
                        Vip::backend_check_ids(&vip.config, backend).all(|(id, _)| is_healthy(&id));
                    if balance.backends[b].healthy != healthy {
                        backend_changes.push((index, b, healthy));
                    }
                }
            }
        }
        let why = cause
            .map(|e| e.to_string())
            .unwrap_or_else(|| "health checks not passed yet".into());
        for (index, b, healthy) in &backend_changes {
            let vip = &mut self.vips[*index];
            if let Some(balance) = vip.balance.as_mut() {
                let backend = &mut balance.backends[*b];
                backend.healthy = *healthy;
                tracing::info!(vip = %vip.config.name, backend = %backend.address, "backend is {}", if *healthy { "healthy: takes new flows" } else { "unhealthy: no new flows" });
            }
        }
        let mut republish: Vec<usize> = backend_changes.iter().map(|(i, _, _)| *i).collect();
        republish.dedup();
        for index in republish {
            self.publish_table(index);
        }
        for (index, fault, penalty) in vip_changes {
            let vip = &mut self.vips[index];
            vip.fault = fault;
            vip.priority_penalty = penalty;
            if vip.election.is_some() {
                self.vrrp_event(
                    index,
                    Event::Health {
                        fault,
                        priority_penalty: penalty,
                    },
                )
                .await;
                if fault {
                    self.vips[index].reason = format!("fault: {why}");
                }
            } else {
                vip.reason = if fault {
                    format!("fault: {why}")
                } else {
                    format!("healthy: {why}")
                };
                self.reconcile_operator_vip(index).await;
            }
            self.log_transition(index);
        }
    }

    /// An operator-owned VIP is owned while the operator wants it and its
    /// checks pass.
    pub(super) async fn reconcile_operator_vip(&mut self, index: usize) {
        let lease = self.config.lease();
        let vip = &mut self.vips[index];
        let want = vip.operator_wants && !vip.fault;
        let result = if want && !vip.ownership.owned {
            self.owner.take(&mut vip.ownership, lease).await
        } else if !want && vip.ownership.owned {
            self.owner.release(&mut vip.ownership).await
        } else {
            Ok(())
        };
        if let Err(e) = result {
            tracing::error!(vip = %vip.config.name, "cannot apply health: {e}");
        }
    }
}
