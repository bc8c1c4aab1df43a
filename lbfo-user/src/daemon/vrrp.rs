//! VRRP events in, the state machines' actions carried out.

use super::*;

impl Daemon {
    pub(super) async fn start_elections(&mut self) {
        for index in 0..self.vips.len() {
            self.vrrp_event(index, Event::Startup).await;
        }
    }

    pub(super) fn next_vrrp_deadline(&self) -> Option<tokio::time::Instant> {
        let elections = self.elections.as_ref()?;
        self.vips
            .iter()
            .filter_map(|v| v.election.as_ref()?.machine.next_deadline())
            .min()
            .map(|d| elections.instant(d))
    }

    pub(super) async fn on_vrrp_timers(&mut self) {
        let Some(now) = self.elections.as_ref().map(Elections::now) else {
            return;
        };
        for index in 0..self.vips.len() {
            let due = self.vips[index]
                .election
                .as_ref()
                .and_then(|i| i.machine.next_deadline())
                .is_some_and(|d| d <= now);
            if due {
                self.vrrp_event(index, Event::Timer).await;
            }
        }
    }

    pub(super) async fn on_vrrp_packet(&mut self, packet: Received) {
        let Some(elections) = self.elections.as_mut() else {
            return;
        };
        if packet.src == elections.primary {
            return;
        }
        let advert =
            match Advertisement::decode(&packet.payload, packet.src, packet.dst, packet.ttl) {
                Ok(advert) => advert,
                Err(reject) => {
                    tracing::debug!(from = %packet.src, "VRRP advertisement rejected: {reject}");
                    elections.count_reject(&reject);
                    return;
                }
            };
        let Some(index) = self.vips.iter().position(|v| {
            v.election
                .as_ref()
                .is_some_and(|i| i.machine.config().vrid == advert.vrid)
        }) else {
            elections.count_reject(&crate::vrrp::Reject::UnknownVrid { vrid: advert.vrid });
            return;
        };
        if let Some(instance) = self.vips[index].election.as_mut() {
            instance.counters.adverts_received += 1;
        }
        self.vrrp_event(
            index,
            Event::AdvertReceived {
                from: packet.src,
                advert,
            },
        )
        .await;
    }

    /// Feeds one event to a VIP's state machine and carries out its actions.
    pub(super) async fn vrrp_event(&mut self, index: usize, event: Event) {
        let cause = describe_event(&event);
        self.vrrp_event_because(index, event, cause).await;
    }

    /// [`Self::vrrp_event`] with the cause for the logs and `lbfo status`
    /// given by the caller, who knows more than the event says (which check,
    /// or the link).
    pub(super) async fn vrrp_event_because(&mut self, index: usize, event: Event, cause: String) {
        let Some(elections) = self.elections.as_ref() else {
            return;
        };
        let now = elections.now();
        let Some(instance) = self.vips[index].election.as_mut() else {
            return;
        };
        let mut actions = instance.machine.handle(now, event);
        // Taking over comes before the first advertisement: the old Master
        // of a graceful handover lets go when it hears us, and by then our
        // address, map entry and gratuitous ARP are already out.
        actions.sort_by_key(|a| !matches!(a, Action::BecomeMaster));
        for action in actions {
            self.vrrp_action(index, action, &cause).await;
        }
        self.log_transition(index);
    }

    pub(super) async fn vrrp_action(&mut self, index: usize, action: Action, cause: &str) {
        let vip = &mut self.vips[index];
        let Some(instance) = vip.election.as_mut() else {
            return;
        };
        let elections = self
            .elections
            .as_mut()
            .expect("elected VIPs imply the VRRP socket");
        match action {
            Action::SendAdvert(advert) => {
                if !self.link_up {
                    tracing::debug!(vip = %vip.config.name, "VRRP advertisement not sent: the interface has no link");
                } else if let Err(e) = elections.send(instance, &advert) {
                    tracing::warn!(vip = %vip.config.name, "VRRP advertisement not sent: {e}");
                }
                if vip.ownership.owned {
                    let lease = instance.machine.master_down_interval();
                    if let Err(e) = self.owner.renew(&mut vip.ownership, lease) {
                        tracing::error!(vip = %vip.config.name, "cannot renew lease: {e}");
                    }
                }
            }
            Action::BecomeMaster => {
                instance.counters.became_master += 1;
                // The lease is our own Master_Down_Interval, renewed with every
                // advertisement: no lower-priority Backup takes over sooner, so
                // a Master whose daemon dies falls silent no later than the
                // moment a Backup takes over.
                let lease = instance.machine.master_down_interval();
                vip.reason = format!("master: {cause}");
                let started = std::time::Instant::now();
                match self.owner.take(&mut vip.ownership, lease).await {
                    Ok(()) => {
                        tracing::debug!(vip = %vip.config.name, "took over in {:?}", started.elapsed())
                    }
                    Err(e) => {
                        tracing::error!(vip = %vip.config.name, "cannot take the VIP over: {e}");
                        let _ = self.owner.release(&mut vip.ownership).await;
                    }
                }
            }
            Action::Stop if self.keep_owned_on_stop && vip.ownership.owned => {
                vip.reason = "handing over: shutting down".into();
            }
            Action::BecomeBackup | Action::EnterFault | Action::Stop => {
                vip.reason = format!("{}: {cause}", instance.machine.state().as_str());
                if let Err(e) = self.owner.release(&mut vip.ownership).await {
                    tracing::error!(vip = %vip.config.name, "cannot release the VIP: {e}");
                }
            }
            Action::SendGratuitousArp => {
                if vip.ownership.owned {
                    tracing::info!(vip = %vip.config.name, "another node acted as Master ({cause}); re-announcing with gratuitous ARP");
                    self.owner.announce(&mut vip.ownership);
                }
            }
            Action::Discard(reject) => {
                tracing::debug!(vip = %vip.config.name, "advertisement discarded: {reject}");
                elections.count_reject(&reject);
            }
        }
    }

    /// Logs a VIP's state change once, with the reason.
    pub(super) fn log_transition(&mut self, index: usize) {
        let vip = &mut self.vips[index];
        let state = vip.state();
        if state == vip.logged_state {
            return;
        }
        tracing::info!(
            vip = %vip.config.name,
            address = %vip.config.address,
            "{} -> {state}: {} (XDP {}, address {})",
            vip.logged_state,
            vip.reason,
            if vip.ownership.owned { "answering" } else { "silent" },
            vip.ownership.origin.as_str(),
        );
        if let Some(script) = &vip.config.notify {
            drop(crate::health::notify::run_notify(
                script,
                &[&vip.config.name, vip.logged_state, state],
                self.config.notify_timeout(),
            ));
        }
        vip.logged_state = state;
    }

    /// Shutdown: keeps the VIPs of `masters` until an advertisement from
    /// another router with a non-zero priority arrives for each, or `wait`
    /// has passed.
    pub(super) async fn await_handover(&mut self, masters: &[usize], wait: Duration) {
        let Some(socket) = self.elections.as_ref().map(|e| e.socket.clone()) else {
            return;
        };
        let primary = self.elections.as_ref().map(|e| e.primary);
        let mut pending: Vec<u8> = masters
            .iter()
            .filter_map(|&i| self.vips[i].election.as_ref())
            .map(|e| e.machine.config().vrid)
            .collect();
        let deadline = tokio::time::Instant::now() + wait;
        while !pending.is_empty() {
            let packet = tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                packet = socket.recv() => packet,
            };
            let Ok(packet) = packet else { continue };
            if Some(packet.src) == primary {
                continue;
            }
            if let Ok(advert) =
                Advertisement::decode(&packet.payload, packet.src, packet.dst, packet.ttl)
                && advert.priority > 0
                && let Some(at) = pending.iter().position(|v| *v == advert.vrid)
            {
                tracing::info!(
                    vrid = advert.vrid,
                    "{} has taken over; releasing",
                    packet.src
                );
                pending.swap_remove(at);
            }
        }
        for vrid in pending {
            tracing::info!(
                vrid,
                "no successor advertised within {wait:?}; releasing anyway"
            );
        }
    }
}
