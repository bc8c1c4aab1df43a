//! Control-socket requests: status, own, release, drain.

use super::*;

impl Daemon {
    pub(super) async fn handle(&mut self, request: Request) -> Response {
        match request {
            Request::Status => match self.status().await {
                Ok(status) => Response::Status(Box::new(status)),
                Err(e) => Response::Error {
                    message: format!("{e:#}"),
                },
            },
            Request::Own { vip } => self.own(&vip).await,
            Request::Release { vip } => self.release(&vip).await,
            Request::Drain { backend } => self.set_drained(&backend, true),
            Request::Undrain { backend } => self.set_drained(&backend, false),
        }
    }

    /// The VIP an operator named, if lbfo may take orders for it.
    pub(super) fn operator_vip(&self, name_or_address: &str) -> Result<usize, Response> {
        let Some(config) = self.config.find_vip(name_or_address) else {
            return Err(Response::Error {
                message: format!("no VIP named or addressed {name_or_address:?} in the config"),
            });
        };
        let index = self
            .vips
            .iter()
            .position(|v| v.config.name == config.name)
            .expect("every configured VIP has a runtime entry");
        if let Some(vrid) = config.vrrp.vrid {
            return Err(Response::Error {
                message: format!(
                    "{} is elected by VRRP (vrid {vrid}); `lbfo own/release` only apply to VIPs without vrid",
                    config.name
                ),
            });
        }
        Ok(index)
    }

    pub(super) async fn own(&mut self, name_or_address: &str) -> Response {
        let index = match self.operator_vip(name_or_address) {
            Ok(i) => i,
            Err(response) => return response,
        };
        let lease = self.config.lease();
        let vip = &mut self.vips[index];
        vip.operator_wants = true;
        if vip.fault {
            return Response::Done {
                message: format!(
                    "{} is in fault ({}); it will be owned as soon as its checks pass",
                    vip.name(),
                    vip.reason
                ),
            };
        }
        if vip.ownership.owned {
            return Response::Done {
                message: format!(
                    "{} {} is already owned by this node",
                    vip.name(),
                    vip.config.address
                ),
            };
        }
        vip.reason = "operator command `lbfo own`".into();
        let result = self.owner.take(&mut vip.ownership, lease).await;
        let response = match result {
            Ok(()) => Response::Done {
                message: format!(
                    "{} {} is now owned by this node",
                    vip.name(),
                    vip.config.address
                ),
            },
            Err(e) => {
                tracing::error!(vip = %vip.config.name, "cannot take ownership: {e}");
                // Leave nothing half-applied.
                let _ = self.owner.release(&mut vip.ownership).await;
                vip.operator_wants = false;
                Response::Error {
                    message: format!("cannot own {}: {e}", vip.name()),
                }
            }
        };
        self.log_transition(index);
        response
    }

    pub(super) async fn release(&mut self, name_or_address: &str) -> Response {
        let index = match self.operator_vip(name_or_address) {
            Ok(i) => i,
            Err(response) => return response,
        };
        let vip = &mut self.vips[index];
        vip.operator_wants = false;
        let was_owned = vip.ownership.owned;
        vip.reason = "operator command `lbfo release`".into();
        let response = match self.owner.release(&mut vip.ownership).await {
            Ok(()) if was_owned => Response::Done {
                message: format!("{} {} released", vip.name(), vip.config.address),
            },
            Ok(()) => Response::Done {
                message: format!(
                    "{} {} was not owned by this node",
                    vip.name(),
                    vip.config.address
                ),
            },
            Err(e) => {
                tracing::error!(vip = %vip.config.name, "cannot release: {e}");
                Response::Error {
                    message: format!("cannot release {}: {e}", vip.name()),
                }
            }
        };
        self.log_transition(index);
        response
    }

    pub(super) async fn status(&self) -> Result<Status> {
        let now = self.owner.datapath.jiffies()?;
        let mut vips = Vec::new();
        for vip in &self.vips {
            let entry = self
                .owner
                .datapath
                .vip(vip.config.address.addr)
                .unwrap_or_default();
            let answers = entry.answers(now);
            vips.push(VipStatus {
                name: vip.config.name.clone(),
                address: vip.config.address.to_string(),
                state: vip.state().into(),
                owned: answers,
                lease_left_ms: if answers {
                    clock::lease_left(entry.lease_deadline_jiffies, now).as_millis() as u64
                } else {
                    0
                },
                mac: format_mac(&self.iface.mac),
                address_origin: self
                    .owner
                    .address_origin(vip.config.address)
                    .await?
                    .as_str()
                    .into(),
                reason: vip.reason.clone(),
                counters: self.owner.datapath.counters(vip.ownership.vip_id)?,
                mode: if vip.balance.is_some() {
                    "balance"
                } else {
                    "local"
                }
                .into(),
                backends: match &vip.balance {
                    Some(balance) => self.backend_status(&vip.config, balance)?,
                    None => Vec::new(),
                },
                checks: Vip::check_ids(&vip.config)
                    .map(|(id, _)| self.check_view(&id))
                    .collect(),
                vrrp: vip.election.as_ref().map(|i| VrrpStatus {
                    vrid: i.machine.config().vrid,
                    priority: i.machine.config().priority,
                    effective_priority: i.machine.effective_priority(),
                    advert_interval_ms: i.machine.config().advert_interval.as_millis() as u64,
                    master_down_interval_ms: i.machine.master_down_interval().as_millis() as u64,
                    master: i.machine.learned_master().map(|m| m.address.to_string()),
                    master_priority: i.machine.learned_master().map(|m| m.priority),
                    counters: i.counters.clone(),
                }),
            });
        }
        Ok(Status {
            interface: self.iface.name.clone(),
            link_up: self.link_up,
            xdp_mode: self.xdp_mode.to_string(),
            xdp_prog_id: self.owner.datapath.prog_id(),
            mac: format_mac(&self.iface.mac),
            vips,
            malformed_frames: self.owner.datapath.counters(lbfo_common::NO_VIP)?.malformed,
            vrrp_rejected: self
                .elections
                .as_ref()
                .map(|e| {
                    e.rejected
                        .iter()
                        .map(|(k, v)| (k.to_string(), *v))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    pub(super) fn check_view(&self, id: &CheckId) -> CheckView {
        let status = self.health.get(id);
        CheckView {
            id: id.to_string(),
            target: status
                .as_ref()
                .map(|s| s.target.clone())
                .unwrap_or_default(),
            state: status
                .as_ref()
                .map(|s| s.state.to_string())
                .unwrap_or_else(|| "unknown".into()),
            consecutive_successes: status.as_ref().map_or(0, |s| s.consecutive_successes),
            consecutive_failures: status.as_ref().map_or(0, |s| s.consecutive_failures),
            last_latency_ms: status
                .as_ref()
                .and_then(|s| s.last.as_ref())
                .map(|r| r.latency.as_secs_f64() * 1000.0),
            last_error: status
                .as_ref()
                .and_then(|s| s.last_error.as_ref())
                .map(|r| r.detail.clone()),
            weight: status.as_ref().and_then(|s| s.weight),
        }
    }

    pub(super) fn backend_status(
        &self,
        vip_config: &VipConfig,
        balance: &BalancedVip,
    ) -> Result<Vec<BackendStatus>> {
        let flows = self.owner.datapath.active_flows();
        balance
            .backends
            .iter()
            .map(|b| {
                Ok(BackendStatus {
                    address: b.address.to_string(),
                    weight: b.weight,
                    mac: b.mac.as_ref().map(format_mac),
                    healthy: b.healthy,
                    drained: b.drained,
                    accepting_new_flows: b.accepts_new_flows(),
                    why_not: b.why_not().map(str::to_string),
                    counters: self.owner.datapath.backend_counters(b.id)?,
                    active_flows: flows.get(&b.id).copied().unwrap_or(0),
                    checks: vip_config
                        .backends
                        .iter()
                        .find(|c| c.address == b.address)
                        .map(|c| {
                            Vip::backend_check_ids(vip_config, c)
                                .map(|(id, _)| self.check_view(&id))
                                .collect()
                        })
                        .unwrap_or_default(),
                })
            })
            .collect()
    }
}
