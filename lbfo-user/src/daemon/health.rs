//! Health check results turned into VIP fault, VRRP priority and backend eligibility.

use super::*;

impl Daemon {
    /// Reads every check's state from the status board (start-up, reload)
    /// and acts on what changed.
    pub(super) async fn apply_health(&mut self) {
        for vip in &mut self.vips {
            let board = &self.health;
            let failing = |id: &CheckId| !board.get(id).is_some_and(|s| s.state.is_healthy());
            vip.failing_checks = Vip::check_ids(&vip.config)
                .enumerate()
                .filter(|(_, (id, _))| failing(id))
                .map(|(i, _)| i)
                .collect();
            vip.failing_backend_checks = vip
                .config
                .backends
                .iter()
                .map(|b| {
                    let failing = Vip::backend_check_ids(&vip.config, b)
                        .enumerate()
                        .filter(|(_, (id, _))| failing(id))
                        .map(|(i, _)| i)
                        .collect();
                    (b.address, failing)
                })
                .collect();
        }
        for index in 0..self.vips.len() {
            self.settle_health(index, "health checks not passed yet")
                .await;
        }
    }

    /// One check changed state: only its VIP is looked at again, so the
    /// cost of an event does not grow with the number of checks.
    pub(super) async fn apply_check_event(&mut self, event: &HealthEvent) {
        let Some(owner) = CheckOwner::parse(event.id.as_str()) else {
            tracing::warn!(check = %event.id, "health event for a check lbfo does not know");
            return;
        };
        let Some(index) = self.vips.iter().position(|v| v.config.name == owner.vip) else {
            return;
        };
        let vip = &mut self.vips[index];
        let failing = match owner.backend {
            None => &mut vip.failing_checks,
            Some(addr) => vip.failing_backend_checks.entry(addr).or_default(),
        };
        if event.new.is_healthy() {
            failing.remove(&owner.index);
        } else {
            failing.insert(owner.index);
        }
        self.settle_health(index, &event.to_string()).await;
    }

    /// The interface lost or regained its link: every VIP goes to fault
    /// (nothing it owns could be reached, and it cannot hear the other
    /// routers) or out of it. An elected VIP then starts as Backup, as after
    /// start-up, instead of coming back as a second Master.
    pub(super) async fn on_link_change(&mut self, has_link: bool) {
        if has_link == self.link_up {
            return;
        }
        self.link_up = has_link;
        let why = if has_link {
            format!("interface {} has a link again", self.iface.name)
        } else {
            format!(
                "interface {} lost its link (down or no carrier)",
                self.iface.name
            )
        };
        if has_link {
            tracing::info!("{why}");
        } else {
            tracing::warn!("{why}: every VIP goes to fault");
        }
        for index in 0..self.vips.len() {
            self.settle_health(index, &why).await;
        }
    }

    /// Acts on a VIP's failing checks and the link: a VIP in fault gives its
    /// address up (map first), a VIP that recovers may own again, a failing
    /// weighted check lowers the VRRP priority, a backend whose check fails
    /// takes no new flows.
    async fn settle_health(&mut self, index: usize, why: &str) {
        let link_down = !self.link_up;
        let link_why;
        let why = if link_down {
            link_why = format!("interface {} has no link", self.iface.name);
            link_why.as_str()
        } else {
            why
        };
        let vip = &mut self.vips[index];
        let mut fault = link_down;
        let mut penalty: u8 = 0;
        for &i in &vip.failing_checks {
            match vip.config.checks.get(i).and_then(|c| c.weight) {
                Some(w) => penalty = penalty.saturating_add(w.unsigned_abs().min(255) as u8),
                None => fault = true,
            }
        }
        let mut backends_changed = false;
        if let Some(balance) = vip.balance.as_mut() {
            for backend in &mut balance.backends {
                let healthy = vip
                    .failing_backend_checks
                    .get(&backend.address)
                    .is_none_or(|failing| failing.is_empty());
                if backend.healthy != healthy {
                    backend.healthy = healthy;
                    backends_changed = true;
                    tracing::info!(vip = %vip.config.name, backend = %backend.address, "backend is {}", if healthy { "healthy: takes new flows" } else { "unhealthy: no new flows" });
                }
            }
        }
        if backends_changed {
            self.publish_table(index);
        }
        let vip = &mut self.vips[index];
        if fault == vip.fault && penalty == vip.priority_penalty {
            return;
        }
        vip.fault = fault;
        vip.priority_penalty = penalty;
        if vip.election.is_some() {
            let cause = match (fault, penalty) {
                (true, _) | (false, 0) => why.to_string(),
                (false, p) => format!("{why}; priority lowered by {p}"),
            };
            self.vrrp_event_because(
                index,
                Event::Health {
                    fault,
                    priority_penalty: penalty,
                },
                cause,
            )
            .await;
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

/// Where a check belongs, read back from its id (see [`Vip::check_ids`]):
/// `VIP/check/I` or `VIP/backend/ADDRESS/check/I`. VIP names cannot hold a
/// `/` (config validation), so the split is unambiguous.
struct CheckOwner<'a> {
    vip: &'a str,
    backend: Option<Ipv4Addr>,
    index: usize,
}

impl<'a> CheckOwner<'a> {
    fn parse(id: &'a str) -> Option<CheckOwner<'a>> {
        let parts: Vec<&str> = id.split('/').collect();
        match parts.as_slice() {
            [vip, "check", i] => Some(CheckOwner {
                vip,
                backend: None,
                index: i.parse().ok()?,
            }),
            [vip, "backend", addr, "check", i] => Some(CheckOwner {
                vip,
                backend: Some(addr.parse().ok()?),
                index: i.parse().ok()?,
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_ids_parse_back_to_their_owner() {
        let vip: VipConfig = crate::config::Config::parse(
            "interface = \"eth0\"\n[[vip]]\nname = \"web-1\"\naddress = \"192.0.2.100/24\"\nmode = \"balance\"\n[[vip.check]]\nkind = \"tcp\"\naddress = \"192.0.2.1:80\"\n[[vip.backend]]\naddress = \"192.0.2.21\"\n[[vip.backend.check]]\nkind = \"tcp\"\naddress = \"192.0.2.21:80\"\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap()
        .vips
        .remove(0);
        let (id, _) = Vip::check_ids(&vip).next().unwrap();
        let owner = CheckOwner::parse(id.as_str()).unwrap();
        assert_eq!((owner.vip, owner.backend, owner.index), ("web-1", None, 0));
        let (id, _) = Vip::backend_check_ids(&vip, &vip.backends[0])
            .next()
            .unwrap();
        let owner = CheckOwner::parse(id.as_str()).unwrap();
        assert_eq!(
            (owner.vip, owner.backend, owner.index),
            ("web-1", Some(Ipv4Addr::new(192, 0, 2, 21)), 0)
        );
        assert!(CheckOwner::parse("web/other/0").is_none());
    }
}
