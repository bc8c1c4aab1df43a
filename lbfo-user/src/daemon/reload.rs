//! SIGHUP: applying a new configuration to the running daemon.

use super::*;

impl Daemon {
    /// SIGHUP: reads the config again. A config that does not load, or asks
    /// for what only a restart can do, is refused as a whole and the
    /// running one stays.
    pub(super) async fn reload(&mut self) {
        let path = self.config_path.clone();
        let result = match Config::load(&path) {
            Ok(new) => self.apply_config(new).await,
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(summary) => tracing::info!("SIGHUP: reloaded {}: {summary}", path.display()),
            Err(e) => {
                tracing::error!("SIGHUP: reload refused, the running configuration stays: {e}")
            }
        }
    }

    pub(super) async fn apply_config(&mut self, new: Config) -> Result<String, String> {
        if new.interface != self.config.interface {
            return Err(format!(
                "changing interface ({} -> {}) needs a restart",
                self.config.interface, new.interface
            ));
        }
        if new.xdp_mode != self.config.xdp_mode {
            return Err("changing xdp_mode needs a restart".into());
        }
        let new_primary = election_primary(&new, &self.owner.netlink, &self.iface)
            .await
            .map_err(|e| format!("{e:#}"))?;
        // The first elected VIP needs the VRRP socket; it is opened here and
        // kept only if the rest of the reload goes through.
        let mut opened = None;
        if let (None, Some(primary)) = (&self.elections, new_primary) {
            opened = Some(
                Elections::open(&self.iface.name, self.iface.index, primary).map_err(|e| {
                    format!("cannot open the VRRP socket on {}: {e}", self.iface.name)
                })?,
            );
        }

        // Which VIPs stay (same address, election and mode: their ownership
        // and election state carry over), which go, which come.
        let stays = |old: &VipConfig, new: &VipConfig| {
            old.address == new.address && old.vrrp == new.vrrp && old.mode == new.mode
        };
        let mut staying = Vec::new();
        let mut going = Vec::new();
        for (index, vip) in self.vips.iter().enumerate() {
            match new
                .vips
                .iter()
                .find(|n| n.name == vip.config.name && stays(&vip.config, n))
            {
                Some(n) => staying.push((index, n.clone())),
                None => going.push(index),
            }
        }
        let coming: Vec<VipConfig> = new
            .vips
            .iter()
            .filter(|n| !staying.iter().any(|(_, s)| s.name == n.name))
            .cloned()
            .collect();
        // Every new VIP gets a counter slot and (if balanced) a table pair
        // not used by a VIP that stays.
        let mut used_ids: Vec<u32> = staying
            .iter()
            .map(|(i, _)| self.vips[*i].ownership.vip_id)
            .collect();
        let mut used_slots: Vec<u16> = staying
            .iter()
            .filter_map(|(i, _)| self.vips[*i].balance.as_ref().map(|b| b.table_slot))
            .collect();
        let mut placements = Vec::new();
        for vip in &coming {
            let id = (1..=lbfo_common::MAX_VIPS)
                .find(|id| !used_ids.contains(id))
                .ok_or("no free VIP slot")?;
            used_ids.push(id);
            let slot = if vip.mode == VipServeMode::Balance {
                let slot = (0..lbfo_common::MAX_BALANCED_VIPS as u16)
                    .find(|s| !used_slots.contains(s))
                    .ok_or("no free table for another balanced VIP")?;
                used_slots.push(slot);
                Some(slot)
            } else {
                None
            };
            placements.push((id, slot));
        }

        // Checks first: `sync` validates the whole set before it changes
        // anything, so a refusal here leaves everything as it was.
        let report = self
            .checker
            .sync(all_checks(&new))
            .await
            .map_err(|e| e.to_string())?;
        self.backend_ids.recycle();
        self.owner.garp = new.garp;
        if let Some(elections) = opened {
            tracing::info!(interface = %self.iface.name, "VRRP advertisements from {}", elections.primary);
            self.elections = Some(elections);
        }
        let primary = self
            .elections
            .as_ref()
            .map_or(Ipv4Addr::UNSPECIFIED, |e| e.primary);

        for &index in going.iter().rev() {
            self.vrrp_event(index, Event::Shutdown).await;
            let mut vip = self.vips.remove(index);
            if let Err(e) = self.owner.release(&mut vip.ownership).await {
                tracing::error!(vip = %vip.config.name, "cannot release: {e}");
            }
            if let Some(balance) = vip.balance.as_mut() {
                balance.remove_all(&mut self.backend_ids, &mut self.owner.datapath);
            }
            if let Err(e) = self.owner.unregister(&vip.ownership) {
                tracing::error!(vip = %vip.config.name, "cannot remove from the map: {e}");
            }
            tracing::info!(vip = %vip.config.name, "removed by reload");
        }
        for (_, config) in staying {
            let index = self
                .vips
                .iter()
                .position(|v| v.config.name == config.name)
                .expect("staying VIPs are still there");
            let vip = &mut self.vips[index];
            let backends_changed = vip.config.backends != config.backends;
            vip.config = config;
            if backends_changed && let Some(balance) = vip.balance.as_mut() {
                balance.update_backends(
                    &vip.config.backends,
                    &mut self.backend_ids,
                    &mut self.owner.datapath,
                )?;
                self.publish_table(index);
            }
        }
        let added = coming.len();
        for (config, (vip_id, slot)) in coming.iter().zip(placements) {
            let mut vip = Vip::new(config, vip_id, slot, &mut self.backend_ids, primary)?;
            if let Err(e) = self.owner.datapath.reset_counters(vip_id) {
                tracing::warn!("cannot reset counters of slot {vip_id}: {e}");
            }
            if let Some(balance) = vip.balance.as_mut() {
                vip.ownership.table_generation = balance
                    .publish(&mut self.owner.datapath)
                    .map_err(|e| e.to_string())?;
            }
            self.owner
                .write_entry(&vip.ownership)
                .map_err(|e| e.to_string())?;
            tracing::info!(vip = %vip.config.name, "added by reload");
            self.vips.push(vip);
            let index = self.vips.len() - 1;
            self.vrrp_event(index, Event::Startup).await;
        }
        self.config = new;
        self.apply_health().await;
        Ok(format!(
            "{} VIP(s) removed, {added} added, {} kept with their state; checks: {} added, {} replaced, {} removed, {} unchanged",
            going.len(),
            self.vips.len() - added,
            report.added.len(),
            report.replaced.len(),
            report.removed.len(),
            report.unchanged.len()
        ))
    }
}
