//! `lbfo run`: start-up, the daemon's main loop and shutdown.
//!
//! Start-up checks everything that can be wrong before it changes anything
//! (config, root, interface, locks, socket, program load) and only then
//! attaches XDP. The main loop is the single owner of the maps and the VIP
//! addresses: control requests, VRRP packets and timers, lease renewal and
//! signals all arrive here and are handled one at a time.

use std::{
    fs::File,
    net::Ipv4Addr,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};
use tokio_util::sync::CancellationToken;

use crate::{
    announce::Announcer,
    arp::format_mac,
    balancer::{BackendIds, BalancedVip},
    clock,
    config::{BackendConfig, Config, VipConfig, VipServeMode, XdpMode},
    control::{self, Command, Request, Response},
    datapath::{Datapath, PROGRAM_NAME},
    election::{Elections, Instance},
    health::{CheckId, HealthChecker, HealthEvent, StatusBoard, config::CheckConfig},
    netlink::{Interface, Netlink, XdpAttachMode},
    ownership::{Owner, VipOwnership},
    status::{BackendStatus, CheckView, Status, VipStatus, VrrpStatus},
    vrrp::{
        Action, Advertisement, Event,
        socket::{Received, VrrpSocket},
    },
};

/// How often backend MACs are read from the neighbour table.
const NEIGHBOUR_REFRESH: Duration = Duration::from_millis(500);

/// One configured VIP at run time.
struct Vip {
    config: VipConfig,
    ownership: VipOwnership,
    /// The VRRP election, for VIPs with a `vrid`; the others are owned
    /// while an operator says so.
    election: Option<Instance>,
    /// Operator-owned VIPs: `lbfo own` was said (and not taken back).
    operator_wants: bool,
    /// Balanced VIPs: backends and Maglev table.
    balance: Option<BalancedVip>,
    /// A check without weight is not healthy: the VIP owns nothing.
    fault: bool,
    /// Sum of the weights of failing weighted checks (VRRP priority penalty).
    priority_penalty: u8,
    /// Why the VIP is in its current state, for logs and `lbfo status`.
    reason: String,
    /// The state last logged, to log each transition once.
    logged_state: &'static str,
}

impl Vip {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn state(&self) -> &'static str {
        match &self.election {
            Some(instance) => instance.machine.state().as_str(),
            None if self.fault => "fault",
            None if self.ownership.owned => "owner",
            None => "standby",
        }
    }

    /// A VIP as it starts: not owned, on standby or about to start its election.
    fn new(
        config: &VipConfig,
        vip_id: u32,
        table_slot: Option<u16>,
        backend_ids: &mut BackendIds,
        primary: Ipv4Addr,
    ) -> Result<Vip, String> {
        let mut ownership = VipOwnership::new(config.address, vip_id);
        let balance = match table_slot {
            Some(slot) => {
                ownership.mode = lbfo_common::VipMode::Balance;
                ownership.table_slot = slot;
                Some(BalancedVip::new(slot, &config.backends, backend_ids)?)
            }
            None => None,
        };
        Ok(Vip {
            config: config.clone(),
            ownership,
            election: Instance::new(config, primary)?,
            operator_wants: false,
            balance,
            fault: false,
            priority_penalty: 0,
            reason: if config.vrrp.vrid.is_some() {
                "starting the election".into()
            } else {
                "standby: waiting for `lbfo own`".into()
            },
            logged_state: "initialize",
        })
    }

    /// Ids of the VIP's own checks, in config order.
    fn check_ids(config: &VipConfig) -> impl Iterator<Item = (CheckId, &CheckConfig)> {
        config
            .checks
            .iter()
            .enumerate()
            .map(|(i, c)| (CheckId::new(format!("{}/check/{i}", config.name)), c))
    }

    /// Ids of a backend's checks.
    fn backend_check_ids<'a>(
        config: &'a VipConfig,
        backend: &'a BackendConfig,
    ) -> impl Iterator<Item = (CheckId, &'a CheckConfig)> {
        backend.checks.iter().enumerate().map(move |(i, c)| {
            (
                CheckId::new(format!(
                    "{}/backend/{}/check/{i}",
                    config.name, backend.address
                )),
                c,
            )
        })
    }
}

struct Daemon {
    config: Config,
    iface: Interface,
    xdp_mode: XdpAttachMode,
    owner: Owner,
    vips: Vec<Vip>,
    elections: Option<Elections>,
    checker: HealthChecker,
    health: StatusBoard,
    backend_ids: BackendIds,
    /// Read again on SIGHUP.
    config_path: PathBuf,
}

/// Every check of the configuration, VIPs' and backends', with its id.
fn all_checks(config: &Config) -> Vec<(CheckId, CheckConfig)> {
    let mut checks = Vec::new();
    for vip in &config.vips {
        checks.extend(Vip::check_ids(vip).map(|(id, c)| (id, c.clone())));
        for backend in &vip.backends {
            checks.extend(Vip::backend_check_ids(vip, backend).map(|(id, c)| (id, c.clone())));
        }
    }
    checks
}

pub async fn run(config_path: &Path, socket_path: &Path) -> Result<()> {
    let config = Config::load(config_path)?;
    if !nix::unistd::geteuid().is_root() {
        bail!("lbfo run must run as root (it attaches XDP and changes interface addresses)");
    }
    let netlink = Netlink::connect()?;
    let iface = netlink.interface(&config.interface).await?;
    if !iface.up {
        tracing::warn!(interface = %iface.name, "interface is down; VIPs will be unreachable until it is up");
    }
    let elections = open_elections(&config, &netlink, &iface).await?;
    let primary = elections
        .as_ref()
        .map(|e| e.primary)
        .unwrap_or(Ipv4Addr::UNSPECIFIED);
    let mut backend_ids = BackendIds::default();
    let mut vips = Vec::new();
    let mut table_slots = 0..lbfo_common::MAX_BALANCED_VIPS as u16;
    for (i, vip) in config.vips.iter().enumerate() {
        let slot = (vip.mode == VipServeMode::Balance).then(|| {
            table_slots
                .next()
                .expect("config validation limits balanced VIPs")
        });
        vips.push(
            Vip::new(vip, i as u32 + 1, slot, &mut backend_ids, primary)
                .map_err(anyhow::Error::msg)?,
        );
    }
    let _lock = lock_interface(&iface)?;
    let socket = control::bind(socket_path)?;
    let datapath = Datapath::load()?;
    let announcer = Announcer::open(iface.index).with_context(|| {
        format!(
            "cannot open a packet socket on {} for gratuitous ARP",
            iface.name
        )
    })?;

    let mut owner = Owner {
        datapath,
        netlink: netlink.clone(),
        announcer,
        ifindex: iface.index,
        mac: iface.mac,
        garp: config.garp,
    };
    // Every VIP starts as not owned: XDP drops ARP and traffic for it.
    // Balanced VIPs start with a table of no backends until MACs are known.
    for vip in &mut vips {
        if let Some(balance) = vip.balance.as_mut() {
            vip.ownership.table_generation = balance.publish(&mut owner.datapath)?;
        }
        owner.write_entry(&vip.ownership)?;
    }
    remove_stale_addresses(&netlink, &iface).await?;
    let xdp_mode = attach(&mut owner, &iface, config.xdp_mode).await?;
    tracing::info!(
        interface = %iface.name,
        mac = %format_mac(&iface.mac),
        "XDP attached in {xdp_mode} mode (program id {}); {} VIP(s); control socket {}",
        owner.datapath.prog_id(),
        vips.len(),
        socket.path().display()
    );

    let shutdown = CancellationToken::new();
    let checks = all_checks(&config);
    if !checks.is_empty()
        && let Err(e) = crate::health::raise_nofile_limit()
    {
        tracing::warn!("cannot raise the open-file limit for health checks: {e}");
    }
    let (health_tx, health_events) = mpsc::channel(checks.len().max(16));
    let checker = HealthChecker::start(checks, health_tx, shutdown.child_token())
        .await
        .context("starting health checks")?;
    let health = checker.status_board();
    let mut daemon = Daemon {
        config,
        iface,
        xdp_mode,
        owner,
        vips,
        elections,
        checker,
        health,
        backend_ids,
        config_path: config_path.to_path_buf(),
    };
    let (commands_tx, commands) = mpsc::channel(64);
    let server = tokio::spawn(socket.serve(commands_tx, shutdown.clone()));
    // Checks start unproven: VIPs with checks begin in fault until they pass.
    daemon.apply_health(None).await;
    daemon.start_elections().await;
    let result = daemon.main_loop(commands, health_events).await;
    shutdown.cancel();
    let _ = server.await;
    daemon.shutdown().await;
    result
}

/// The VRRP socket, if any VIP is elected. Advertisements go out from the
/// interface's own primary address, so it must have one.
async fn open_elections(
    config: &Config,
    netlink: &Netlink,
    iface: &Interface,
) -> Result<Option<Elections>> {
    if !config.vips.iter().any(|v| v.vrrp.vrid.is_some()) {
        return Ok(None);
    }
    let vip_addresses: Vec<Ipv4Addr> = config.vips.iter().map(|v| v.address.addr).collect();
    let addresses = netlink.addresses(iface.index).await?;
    let primary = addresses
        .iter()
        .find(|a| !a.added_by_lbfo && !vip_addresses.contains(&a.addr))
        .map(|a| a.addr)
        .with_context(|| {
            format!(
                "interface {} has no IPv4 address of its own; VRRP sends advertisements from it",
                iface.name
            )
        })?;
    for vip in &config.vips {
        if vip.vrrp.priority == 255
            && !addresses
                .iter()
                .any(|a| a.addr == vip.address.addr && !a.added_by_lbfo)
        {
            bail!(
                "vip {:?}: priority 255 is for the node that owns {} (configured on {}), and this node does not",
                vip.name,
                vip.address.addr,
                iface.name
            );
        }
    }
    let elections = Elections::open(&iface.name, iface.index, primary)
        .with_context(|| format!("cannot open the VRRP socket on {}", iface.name))?;
    tracing::info!(interface = %iface.name, "VRRP advertisements from {primary}");
    Ok(Some(elections))
}

impl Daemon {
    async fn main_loop(
        &mut self,
        mut commands: mpsc::Receiver<Command>,
        mut health_events: mpsc::Receiver<HealthEvent>,
    ) -> Result<()> {
        let mut sigterm = signal(SignalKind::terminate())?;
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sighup = signal(SignalKind::hangup())?;
        let mut lease = self.config.lease();
        // Renew three times per lease: two renewals can be missed (a stalled
        // host) before XDP falls silent. Elected VIPs renew with each advert.
        let mut renew = tokio::time::interval(lease / 3);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let vrrp_socket: Option<Arc<VrrpSocket>> =
            self.elections.as_ref().map(|e| e.socket.clone());
        // Balanced VIPs: backend MACs come from the neighbour table.
        let balancing = self.vips.iter().any(|v| v.balance.is_some());
        let mut neighbours = tokio::time::interval(NEIGHBOUR_REFRESH);
        neighbours.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next_timer = self.next_vrrp_deadline();
            tokio::select! {
                _ = sigterm.recv() => { tracing::info!("SIGTERM: releasing VIPs and detaching XDP"); return Ok(()) }
                _ = sigint.recv() => { tracing::info!("SIGINT: releasing VIPs and detaching XDP"); return Ok(()) }
                _ = renew.tick() => self.renew_operator_leases(lease),
                _ = sighup.recv() => {
                    self.reload().await;
                    if self.config.lease() != lease {
                        lease = self.config.lease();
                        renew = tokio::time::interval(lease / 3);
                        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    }
                }
                Some(command) = commands.recv() => {
                    let response = self.handle(command.request).await;
                    let _ = command.reply.send(response);
                }
                received = recv_vrrp(vrrp_socket.as_deref()), if vrrp_socket.is_some() => match received {
                    Ok(packet) => self.on_vrrp_packet(packet).await,
                    Err(e) => tracing::warn!("VRRP receive failed: {e}"),
                },
                _ = sleep_until(next_timer), if next_timer.is_some() => self.on_vrrp_timers().await,
                _ = neighbours.tick(), if balancing => self.refresh_backend_macs().await,
                Some(event) = health_events.recv() => {
                    if self.health.is_current(&event) {
                        tracing::info!("{event}");
                        self.apply_health(Some(&event)).await;
                    }
                }
            }
        }
    }

    fn renew_operator_leases(&mut self, lease: Duration) {
        for vip in self.vips.iter_mut().filter(|v| v.election.is_none()) {
            if let Err(e) = self.owner.renew(&mut vip.ownership, lease) {
                tracing::error!(vip = %vip.config.name, "cannot renew lease: {e}");
            }
        }
    }

    // ---- reload ----

    /// SIGHUP: reads the config again. A config that does not load, or asks
    /// for what only a restart can do, is refused as a whole and the
    /// running one stays.
    async fn reload(&mut self) {
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

    async fn apply_config(&mut self, new: Config) -> Result<String, String> {
        if new.interface != self.config.interface {
            return Err(format!(
                "changing interface ({} -> {}) needs a restart",
                self.config.interface, new.interface
            ));
        }
        if new.xdp_mode != self.config.xdp_mode {
            return Err("changing xdp_mode needs a restart".into());
        }
        let primary = self.elections.as_ref().map(|e| e.primary);
        if primary.is_none() && new.vips.iter().any(|v| v.vrrp.vrid.is_some()) {
            return Err(
                "the first VIP with a vrid needs a restart (the VRRP socket opens at start)".into(),
            );
        }
        let primary = primary.unwrap_or(Ipv4Addr::UNSPECIFIED);

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
        self.apply_health(None).await;
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

    // ---- health ----

    /// Recomputes every VIP's and backend's health from the status board and
    /// acts on what changed: a VIP in fault gives its address up (map first),
    /// a VIP that recovers may own again, a failing weighted check lowers
    /// the VRRP priority, a backend that fails takes no new flows.
    async fn apply_health(&mut self, cause: Option<&HealthEvent>) {
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
    async fn reconcile_operator_vip(&mut self, index: usize) {
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

    // ---- balancing ----

    /// Learns backend MACs from the neighbour table, asks the kernel to
    /// resolve the ones still unknown, and republishes tables that changed.
    async fn refresh_backend_macs(&mut self) {
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
    fn publish_table(&mut self, index: usize) {
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
    fn set_drained(&mut self, backend: &str, drained: bool) -> Response {
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

    // ---- VRRP ----

    async fn start_elections(&mut self) {
        for index in 0..self.vips.len() {
            self.vrrp_event(index, Event::Startup).await;
        }
    }

    fn next_vrrp_deadline(&self) -> Option<tokio::time::Instant> {
        let elections = self.elections.as_ref()?;
        self.vips
            .iter()
            .filter_map(|v| v.election.as_ref()?.machine.next_deadline())
            .min()
            .map(|d| elections.instant(d))
    }

    async fn on_vrrp_timers(&mut self) {
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

    async fn on_vrrp_packet(&mut self, packet: Received) {
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
    async fn vrrp_event(&mut self, index: usize, event: Event) {
        let Some(elections) = self.elections.as_ref() else {
            return;
        };
        let now = elections.now();
        let Some(instance) = self.vips[index].election.as_mut() else {
            return;
        };
        let cause = describe_event(&event);
        let actions = instance.machine.handle(now, event);
        for action in actions {
            self.vrrp_action(index, action, &cause).await;
        }
        self.log_transition(index);
    }

    async fn vrrp_action(&mut self, index: usize, action: Action, cause: &str) {
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
                if let Err(e) = elections.send(instance, &advert) {
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
                if let Err(e) = self.owner.take(&mut vip.ownership, lease).await {
                    tracing::error!(vip = %vip.config.name, "cannot take the VIP over: {e}");
                    let _ = self.owner.release(&mut vip.ownership).await;
                }
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
    fn log_transition(&mut self, index: usize) {
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

    // ---- control requests ----

    async fn handle(&mut self, request: Request) -> Response {
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
    fn operator_vip(&self, name_or_address: &str) -> Result<usize, Response> {
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

    async fn own(&mut self, name_or_address: &str) -> Response {
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

    async fn release(&mut self, name_or_address: &str) -> Response {
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

    async fn status(&self) -> Result<Status> {
        let now = clock::monotonic_ns();
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
                    (entry.lease_deadline_ns - now) / 1_000_000
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

    fn check_view(&self, id: &CheckId) -> CheckView {
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

    fn backend_status(
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

    /// Steps down from every election (a Master sends priority 0 so a
    /// Backup takes over after Skew_Time), releases every VIP, then
    /// detaches XDP.
    async fn shutdown(&mut self) {
        for index in 0..self.vips.len() {
            self.vrrp_event(index, Event::Shutdown).await;
        }
        for vip in &mut self.vips {
            let was_owned = vip.ownership.owned;
            match self.owner.release(&mut vip.ownership).await {
                Ok(()) if was_owned => {
                    tracing::info!(vip = %vip.config.name, "released on shutdown")
                }
                Ok(()) => {}
                Err(e) => {
                    tracing::error!(vip = %vip.config.name, "cannot release on shutdown: {e}")
                }
            }
        }
        match self
            .owner
            .netlink
            .detach_xdp(self.iface.index, self.xdp_mode)
            .await
        {
            Ok(()) => tracing::info!(interface = %self.iface.name, "XDP detached; stopped"),
            Err(e) => tracing::error!(interface = %self.iface.name, "cannot detach XDP: {e}"),
        }
    }
}

async fn recv_vrrp(socket: Option<&VrrpSocket>) -> std::io::Result<Received> {
    match socket {
        Some(socket) => socket.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn describe_event(event: &Event) -> String {
    match event {
        Event::Startup => "startup".into(),
        Event::Shutdown => "shutting down".into(),
        Event::Timer => "timer".into(),
        Event::AdvertReceived { from, advert } => {
            format!(
                "advertisement from {from} with priority {}",
                advert.priority
            )
        }
        Event::Health { fault: true, .. } => "a health check failed".into(),
        Event::Health {
            priority_penalty, ..
        } => {
            format!("health changed (priority lowered by {priority_penalty})")
        }
    }
}

/// One daemon per interface: a lock file named for the network namespace and
/// interface index, held (flock) for the daemon's life and released by the
/// kernel however the daemon ends.
fn lock_interface(iface: &Interface) -> Result<nix::fcntl::Flock<File>> {
    let netns = std::fs::metadata("/proc/self/ns/net")
        .context("reading /proc/self/ns/net")?
        .ino();
    let dir = PathBuf::from("/run/lbfo/locks");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("netns{netns}-if{}.lock", iface.index));
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .read(true)
        .open(&path)
        .with_context(|| format!("opening lock file {}", path.display()))?;
    let file = match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(locked) => locked,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            bail!(
                "another lbfo daemon{} is already running on interface {}",
                holder
                    .trim()
                    .parse::<u32>()
                    .map(|p| format!(" (pid {p})"))
                    .unwrap_or_default(),
                iface.name
            );
        }
        Err((_, e)) => bail!("cannot lock {}: {e}", path.display()),
    };
    let _ = std::fs::write(&path, format!("{}\n", std::process::id()));
    Ok(file)
}

/// Addresses lbfo added before it was killed are stale: this daemon starts
/// with every VIP not owned, so it removes them.
async fn remove_stale_addresses(netlink: &Netlink, iface: &Interface) -> Result<()> {
    for a in netlink.addresses(iface.index).await? {
        if a.added_by_lbfo {
            tracing::warn!(address = %a.addr, "removing VIP address left on {} by an lbfo that did not shut down cleanly", iface.name);
            netlink
                .remove_address(iface.index, a.addr, a.prefix_len)
                .await?;
        }
    }
    Ok(())
}

/// Attaches the XDP program in the configured mode. A program left attached
/// by an lbfo that was killed is replaced; anyone else's program is not.
async fn attach(owner: &mut Owner, iface: &Interface, mode: XdpMode) -> Result<XdpAttachMode> {
    if let Some(existing) = iface.xdp {
        let name = program_name(existing.prog_id);
        if name.as_deref() != Some(PROGRAM_NAME) {
            bail!(
                "interface {} already has XDP program id {} ({}) attached; lbfo will not replace another program",
                iface.name,
                existing.prog_id,
                name.unwrap_or_else(|| "unknown name".into())
            );
        }
        tracing::warn!(
            interface = %iface.name,
            "replacing XDP program id {} left by an lbfo that did not shut down cleanly",
            existing.prog_id
        );
        owner
            .netlink
            .detach_xdp(iface.index, existing.mode)
            .await
            .with_context(|| format!("detaching stale XDP program from {}", iface.name))?;
    }
    let index = iface.index;
    let fd = owner.datapath.program_fd().try_clone_to_owned()?;
    let try_mode = |m: XdpAttachMode| {
        let netlink = owner.netlink.clone();
        let fd = &fd;
        async move { netlink.attach_xdp(index, fd, m, false).await.map(|()| m) }
    };
    let attached = match mode {
        XdpMode::Native => try_mode(XdpAttachMode::Native).await,
        XdpMode::Generic => try_mode(XdpAttachMode::Generic).await,
        XdpMode::Auto => match try_mode(XdpAttachMode::Native).await {
            Ok(m) => Ok(m),
            Err(e) => {
                tracing::info!(interface = %iface.name, "native XDP not available ({e}); trying generic mode");
                try_mode(XdpAttachMode::Generic).await
            }
        },
    };
    attached.map_err(|e| {
        anyhow::anyhow!(
            "cannot attach XDP to {} in {mode:?} mode: {e} (does this kernel and driver support XDP?)",
            iface.name
        )
    })
}

/// The name of a loaded BPF program, by id.
fn program_name(id: u32) -> Option<String> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .and_then(|p| p.name_as_str().map(str::to_string))
}
