//! Carries out the core's [`Effect`]s, in the order given, through the one
//! [`Owner`] of the map, the addresses and the announcements. What the core
//! must hear back (a take that failed) comes back as [`Input`]s.

use std::{net::IpAddr, sync::Arc, time::Duration};

use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use super::Clock;
use crate::{
    control::Response,
    core::{Effect, Input},
    metrics::Metrics,
    notify::run_notify,
    ownership::Owner,
    vrrp::socket::VrrpSockets,
};

/// What applying a batch of effects produced.
#[derive(Default)]
pub struct Applied {
    /// To feed back to the core.
    pub feedback: Vec<Input>,
    /// Answers to the operator's command, if the batch had one.
    pub replies: Vec<Response>,
    /// Shutdown is complete.
    pub stopped: bool,
}

pub struct Executor {
    owner: Owner,
    clock: Clock,
    metrics: Option<Arc<Metrics>>,
    /// One per family while any VIP of it is elected.
    vrrp: VrrpSockets,
    /// Backends to resolve, for the neighbour task.
    solicit: mpsc::UnboundedSender<Vec<IpAddr>>,
    tasks: TaskTracker,
    notify_timeout: Duration,
}

impl Executor {
    pub fn new(
        owner: Owner,
        clock: Clock,
        metrics: Option<Arc<Metrics>>,
        vrrp: VrrpSockets,
        solicit: mpsc::UnboundedSender<Vec<IpAddr>>,
        tasks: TaskTracker,
        notify_timeout: Duration,
    ) -> Self {
        Self {
            owner,
            clock,
            metrics,
            vrrp,
            solicit,
            tasks,
            notify_timeout,
        }
    }

    pub fn owner(&self) -> &Owner {
        &self.owner
    }

    pub fn owner_mut(&mut self) -> &mut Owner {
        &mut self.owner
    }

    pub fn vrrp(&self) -> &VrrpSockets {
        &self.vrrp
    }

    /// A reload brought the first elected VIP of a family, or a new source.
    pub fn set_vrrp(&mut self, sockets: VrrpSockets) {
        self.vrrp = sockets;
    }

    pub fn set_notify_timeout(&mut self, timeout: Duration) {
        self.notify_timeout = timeout;
    }

    pub async fn apply(&mut self, effects: Vec<Effect>) -> Applied {
        let mut applied = Applied::default();
        // A take that failed turns the operator's "now owned" into an error.
        let mut failed_take: Option<String> = None;
        for effect in effects {
            match effect {
                Effect::Take {
                    addresses,
                    entry,
                    lease,
                    garp,
                    failover,
                } => {
                    let first = addresses[0].addr;
                    match self.owner.take_all(&addresses, &entry, lease, garp).await {
                        Ok(()) => {
                            // XDP answers and the first announcement is out.
                            let took = self.clock.now().saturating_sub(failover.began);
                            if let Some(metrics) = &self.metrics {
                                metrics.observe_failover(&failover, took);
                            }
                            applied.feedback.push(Input::TookOver {
                                address: first,
                                took,
                            });
                        }
                        Err(error) => {
                            failed_take = Some(format!("cannot take {error}"));
                            applied.feedback.push(Input::TakeFailed {
                                address: first,
                                error,
                            });
                        }
                    }
                }
                Effect::Release { addresses, entry } => {
                    for address in addresses {
                        if let Err(e) = self.owner.release(address, &entry).await {
                            tracing::error!(vip = %address, "cannot release the VIP: {e}");
                        }
                    }
                }
                Effect::Write {
                    addresses,
                    entry,
                    lease,
                } => {
                    for address in addresses {
                        if let Err(e) = self.owner.write(address.addr, &entry, lease) {
                            tracing::error!(vip = %address, "cannot write the map entry: {e}");
                        }
                    }
                }
                Effect::Forget { addresses } => {
                    for address in addresses {
                        if let Err(e) = self.owner.forget(address.addr) {
                            tracing::error!(vip = %address, "cannot remove from the map: {e}");
                        }
                    }
                }
                Effect::ResetCounters { vip_id } => {
                    if let Err(e) = self.owner.reset_counters(vip_id) {
                        tracing::warn!("cannot reset counters of slot {vip_id}: {e}");
                    }
                }
                Effect::Announce { addresses, garp } => {
                    for address in addresses {
                        self.owner.announce(address.addr, garp);
                    }
                }
                Effect::PublishTable(update) => {
                    if let Err(e) = self.owner.publish(&update) {
                        tracing::error!(
                            table = update.table_slot,
                            "cannot publish the backend table: {e}"
                        );
                    }
                }
                Effect::ClearBackends(ids) => {
                    if let Err(e) = self.owner.clear_backends(&ids) {
                        tracing::error!("cannot mark removed backends gone: {e}");
                    }
                }
                Effect::SendAdvert {
                    source,
                    advert,
                    unicast_peers,
                } => match self.vrrp.sending_from(source) {
                    Some(socket) => {
                        if let Err(e) = socket.send_advert(&advert, &unicast_peers) {
                            tracing::warn!(vrid = advert.vrid, "VRRP advertisement not sent: {e}");
                        }
                    }
                    None => tracing::error!(
                        vrid = advert.vrid,
                        "no VRRP socket sending from {source} to advertise on"
                    ),
                },
                Effect::Solicit(backends) => {
                    // The neighbour task asks the kernel; nothing here waits.
                    let _ = self.solicit.send(backends);
                }
                Effect::Notify { script, args } => {
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    drop(run_notify(&self.tasks, &script, &args, self.notify_timeout));
                }
                Effect::Reply(response) => applied.replies.push(match (response, &failed_take) {
                    (Response::Done { .. }, Some(message)) => Response::Error {
                        message: message.clone(),
                    },
                    (response, _) => response,
                }),
                Effect::Stopped => {
                    self.owner.stop_announcing();
                    applied.stopped = true;
                }
            }
        }
        applied
    }
}
