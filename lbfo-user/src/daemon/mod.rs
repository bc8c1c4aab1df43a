//! `lbfo run`: start-up, the daemon's main loop and shutdown.
//!
//! Start-up checks everything that can be wrong before it changes anything
//! (config, root, interface, locks, socket, program load) and only then
//! attaches XDP. The main loop is the single owner of the maps and the VIP
//! addresses: control requests, VRRP packets and timers, lease renewal and
//! signals all arrive here and are handled one at a time.
//!
//! The main loop's work is split by subject: [`vrrp`] (advertisements and
//! timers in, ownership out), [`health`] (check results into fault, priority
//! and backend eligibility), [`balancing`] (backend MACs and tables),
//! [`requests`] (the control socket), [`reload`] (SIGHUP).

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
    /// Indexes of the VIP's checks that are not healthy (unproven ones count).
    failing_checks: std::collections::BTreeSet<usize>,
    /// The same for each backend's checks.
    failing_backend_checks: std::collections::HashMap<Ipv4Addr, std::collections::BTreeSet<usize>>,
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
            failing_checks: Default::default(),
            failing_backend_checks: Default::default(),
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
    /// The interface is up with a carrier. Without a link every VIP is in
    /// fault: it can neither answer nor hear the other routers.
    link_up: bool,
    xdp_mode: XdpAttachMode,
    owner: Owner,
    vips: Vec<Vip>,
    elections: Option<Elections>,
    checker: HealthChecker,
    health: StatusBoard,
    backend_ids: BackendIds,
    /// Read again on SIGHUP.
    config_path: PathBuf,
    /// Shutting down: a stopping Master keeps its VIPs until handed over.
    keep_owned_on_stop: bool,
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
    // Watch the link before reading its state, so no change is missed.
    let link_events = crate::netlink::watch_link(iface.index)?;
    let iface = netlink.interface(&config.interface).await?;
    if !iface.has_link {
        tracing::warn!(interface = %iface.name, "interface has no link (down or no carrier): its VIPs stay in fault until it has");
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
        link_up: iface.has_link,
        iface,
        xdp_mode,
        owner,
        vips,
        elections,
        checker,
        health,
        backend_ids,
        config_path: config_path.to_path_buf(),
        keep_owned_on_stop: false,
    };
    let (commands_tx, commands) = mpsc::channel(64);
    let server = tokio::spawn(socket.serve(commands_tx, shutdown.clone()));
    // Checks start unproven: VIPs with checks begin in fault until they pass.
    daemon.apply_health().await;
    daemon.start_elections().await;
    let result = daemon.main_loop(commands, health_events, link_events).await;
    shutdown.cancel();
    let _ = server.await;
    daemon.shutdown().await;
    result
}

/// The VRRP socket, if any VIP is elected.
async fn open_elections(
    config: &Config,
    netlink: &Netlink,
    iface: &Interface,
) -> Result<Option<Elections>> {
    let Some(primary) = election_primary(config, netlink, iface).await? else {
        return Ok(None);
    };
    let elections = Elections::open(&iface.name, iface.index, primary)
        .with_context(|| format!("cannot open the VRRP socket on {}", iface.name))?;
    tracing::info!(interface = %iface.name, "VRRP advertisements from {primary}");
    Ok(Some(elections))
}

/// What elected VIPs need of the interface, checked at start and on every
/// reload: advertisements go out from its own primary address, so it must
/// have one, and priority 255 belongs to the node that has the VIP address
/// configured itself. Returns that primary address; `None` when no VIP is
/// elected.
async fn election_primary(
    config: &Config,
    netlink: &Netlink,
    iface: &Interface,
) -> Result<Option<Ipv4Addr>> {
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
    for vip in config.vips.iter().filter(|v| v.vrrp.vrid.is_some()) {
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
    Ok(Some(primary))
}

mod balancing;
mod health;
mod reload;
mod requests;
mod vrrp;

impl Daemon {
    async fn main_loop(
        &mut self,
        mut commands: mpsc::Receiver<Command>,
        mut health_events: mpsc::Receiver<HealthEvent>,
        mut link_events: mpsc::UnboundedReceiver<bool>,
    ) -> Result<()> {
        let mut sigterm = signal(SignalKind::terminate())?;
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sighup = signal(SignalKind::hangup())?;
        let mut lease = self.config.lease();
        // Renew three times per lease: two renewals can be missed (a stalled
        // host) before XDP falls silent. Elected VIPs renew with each advert.
        let mut renew = tokio::time::interval(lease / 3);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut vrrp_socket: Option<Arc<VrrpSocket>> =
            self.elections.as_ref().map(|e| e.socket.clone());
        // Balanced VIPs: backend MACs come from the neighbour table.
        let balancing = self.vips.iter().any(|v| v.balance.is_some());
        let mut garp_refresh =
            tokio::time::interval(Duration::from_millis(self.config.garp.refresh_ms.max(1000)));
        garp_refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // VRRP timers to the microsecond, not tokio's millisecond ticks.
        let mut vrrp_timer =
            crate::vrrp::timer::PreciseTimer::new().context("creating the VRRP timer (timerfd)")?;
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
                    // The first elected VIP opens the VRRP socket.
                    vrrp_socket = self.elections.as_ref().map(|e| e.socket.clone());
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
                _ = sleep_until(&mut vrrp_timer, next_timer), if next_timer.is_some() => self.on_vrrp_timers().await,
                _ = neighbours.tick(), if balancing => self.refresh_backend_macs().await,
                _ = garp_refresh.tick(), if self.config.garp.refresh_ms > 0 => self.refresh_announcements(),
                Some(has_link) = link_events.recv() => self.on_link_change(has_link).await,
                Some(event) = health_events.recv() => {
                    // The checker logs every transition itself.
                    if self.health.is_current(&event) {
                        self.apply_check_event(&event).await;
                    }
                }
            }
        }
    }

    /// `garp.refresh_ms`: every owned VIP is announced once more.
    fn refresh_announcements(&mut self) {
        for vip in self.vips.iter().filter(|v| v.ownership.owned) {
            if let Err(e) = self
                .owner
                .announcer
                .announce(self.iface.mac, vip.config.address.addr)
            {
                tracing::warn!(vip = %vip.config.name, "gratuitous ARP refresh not sent: {e}");
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

    /// Steps down from every election (a Master sends priority 0 so a
    /// Backup takes over after Skew_Time), releases every VIP, then
    /// detaches XDP.
    async fn shutdown(&mut self) {
        // An elected Master hands over without a gap: it advertises priority
        // 0 (so a Backup takes over after Skew_Time instead of the whole
        // Master_Down_Interval) but keeps answering until another router's
        // advertisement shows the takeover, or at most one advertisement
        // interval (a Backup's Skew_Time is shorter) plus a margin.
        let masters: Vec<usize> = (0..self.vips.len())
            .filter(|&i| {
                self.vips[i]
                    .election
                    .as_ref()
                    .is_some_and(|e| e.machine.state() == crate::vrrp::State::Master)
            })
            .collect();
        let wait = masters
            .iter()
            .filter_map(|&i| self.vips[i].election.as_ref())
            .map(|e| e.machine.config().advert_interval)
            .max()
            .map(|interval| interval + HANDOVER_MARGIN);
        self.keep_owned_on_stop = true;
        for index in 0..self.vips.len() {
            self.vrrp_event(index, Event::Shutdown).await;
        }
        self.keep_owned_on_stop = false;
        if let Some(wait) = wait {
            self.await_handover(&masters, wait).await;
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

/// How much longer than one advertisement interval a stopping Master waits
/// for its successor's first advertisement.
const HANDOVER_MARGIN: Duration = Duration::from_millis(100);

async fn recv_vrrp(socket: Option<&VrrpSocket>) -> std::io::Result<Received> {
    match socket {
        Some(socket) => socket.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(
    timer: &mut crate::vrrp::timer::PreciseTimer,
    deadline: Option<tokio::time::Instant>,
) {
    let Some(deadline) = deadline else {
        return std::future::pending().await;
    };
    if let Err(e) = timer.sleep_until(deadline).await {
        // Keep time with tokio's coarser timer rather than not at all.
        tracing::warn!("VRRP timer (timerfd) failed: {e}; using a millisecond timer");
        tokio::time::sleep_until(deadline).await;
    }
}

fn describe_event(event: &Event) -> String {
    match event {
        Event::Startup => "startup".into(),
        Event::Shutdown => "shutting down".into(),
        Event::Timer => "Master_Down_Timer ran out".into(),
        Event::AdvertReceived { from, advert } => {
            format!(
                "advertisement from {from} with priority {}",
                advert.priority
            )
        }
        // Callers give the check or the link behind it (`vrrp_event_because`).
        Event::Health { .. } => "health changed".into(),
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
