//! `lbfo run`: start-up, the daemon's main loop and shutdown.
//!
//! Start-up checks everything that can be wrong before it changes anything
//! (config, root, interface, locks, socket, program load) and only then
//! attaches XDP. The main loop is the single owner of the maps and the VIP
//! addresses: control requests, lease renewal and signals all arrive here
//! and are handled one at a time.

use std::{
    fs::File,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
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
    clock,
    config::{Config, XdpMode},
    control::{self, Command, Request, Response},
    datapath::{Datapath, PROGRAM_NAME},
    netlink::{Interface, Netlink, XdpAttachMode},
    ownership::{Owner, VipOwnership},
    status::{Status, VipStatus},
};

/// One configured VIP at run time.
struct Vip {
    name: String,
    ownership: VipOwnership,
    /// Why it is in its current state, for logs and `lbfo status`.
    reason: String,
}

struct Daemon {
    config: Config,
    iface: Interface,
    xdp_mode: XdpAttachMode,
    owner: Owner,
    vips: Vec<Vip>,
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
    let _lock = lock_interface(&iface)?;
    let socket = control::bind(socket_path)?;
    let datapath = Datapath::load()?;
    let announcer = Announcer::open(iface.index).with_context(|| {
        format!(
            "cannot open a packet socket on {} for gratuitous ARP",
            iface.name
        )
    })?;

    // Every VIP starts as standby: in the map as not owned (XDP drops ARP
    // and traffic for it) and without an address lbfo put there earlier.
    let mut vips = Vec::new();
    for (i, vip) in config.vips.iter().enumerate() {
        vips.push(Vip {
            name: vip.name.clone(),
            ownership: VipOwnership::new(vip.address, i as u32 + 1),
            reason: "standby: waiting for `lbfo own`".into(),
        });
    }
    let mut owner = Owner {
        datapath,
        netlink: netlink.clone(),
        announcer,
        ifindex: iface.index,
        mac: iface.mac,
        garp: config.garp,
    };
    for vip in &vips {
        owner.register(&vip.ownership)?;
    }
    remove_stale_addresses(&netlink, &iface).await?;
    let xdp_mode = attach(&mut owner, &iface, config.xdp_mode).await?;
    tracing::info!(
        interface = %iface.name,
        mac = %format_mac(&iface.mac),
        "XDP attached in {xdp_mode} mode (program id {}); {} VIP(s) on standby; control socket {}",
        owner.datapath.prog_id(),
        vips.len(),
        socket.path().display()
    );

    let mut daemon = Daemon {
        config,
        iface,
        xdp_mode,
        owner,
        vips,
    };
    let shutdown = CancellationToken::new();
    let (commands_tx, commands) = mpsc::channel(64);
    let server = tokio::spawn(socket.serve(commands_tx, shutdown.clone()));
    let result = daemon.main_loop(commands).await;
    shutdown.cancel();
    let _ = server.await;
    daemon.shutdown().await;
    result
}

impl Daemon {
    async fn main_loop(&mut self, mut commands: mpsc::Receiver<Command>) -> Result<()> {
        let mut sigterm = signal(SignalKind::terminate())?;
        let mut sigint = signal(SignalKind::interrupt())?;
        let lease = self.config.lease();
        // Renew three times per lease: two renewals can be missed (a stalled
        // host) before XDP falls silent.
        let mut renew = tokio::time::interval(lease / 3);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = sigterm.recv() => { tracing::info!("SIGTERM: releasing VIPs and detaching XDP"); return Ok(()) }
                _ = sigint.recv() => { tracing::info!("SIGINT: releasing VIPs and detaching XDP"); return Ok(()) }
                _ = renew.tick() => self.renew_leases(lease),
                Some(command) = commands.recv() => {
                    let response = self.handle(command.request).await;
                    let _ = command.reply.send(response);
                }
            }
        }
    }

    fn renew_leases(&mut self, lease: Duration) {
        for vip in &mut self.vips {
            if let Err(e) = self.owner.renew(&mut vip.ownership, lease) {
                tracing::error!(vip = %vip.name, "cannot renew lease: {e}");
            }
        }
    }

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
        }
    }

    fn find(&self, name_or_address: &str) -> Result<usize, Response> {
        let Some(config) = self.config.find_vip(name_or_address) else {
            return Err(Response::Error {
                message: format!("no VIP named or addressed {name_or_address:?} in the config"),
            });
        };
        Ok(self
            .vips
            .iter()
            .position(|v| v.name == config.name)
            .expect("every configured VIP has a runtime entry"))
    }

    async fn own(&mut self, name_or_address: &str) -> Response {
        let index = match self.find(name_or_address) {
            Ok(i) => i,
            Err(response) => return response,
        };
        let lease = self.config.lease();
        let vip = &mut self.vips[index];
        if vip.ownership.owned {
            return Response::Done {
                message: format!(
                    "{} {} is already owned by this node",
                    vip.name, vip.ownership.address
                ),
            };
        }
        match self.owner.take(&mut vip.ownership, lease).await {
            Ok(()) => {
                vip.reason = "owner: operator command `lbfo own`".into();
                tracing::info!(
                    vip = %vip.name,
                    address = %vip.ownership.address,
                    "now owner (operator command): address {} on {}, XDP answering ARP, sending {} gratuitous ARP(s)",
                    vip.ownership.origin.as_str(),
                    self.iface.name,
                    self.config.garp.count
                );
                Response::Done {
                    message: format!(
                        "{} {} is now owned by this node",
                        vip.name, vip.ownership.address
                    ),
                }
            }
            Err(e) => {
                tracing::error!(vip = %vip.name, "cannot take ownership: {e}");
                // Leave nothing half-applied.
                let _ = self.owner.release(&mut vip.ownership).await;
                Response::Error {
                    message: format!("cannot own {}: {e}", vip.name),
                }
            }
        }
    }

    async fn release(&mut self, name_or_address: &str) -> Response {
        let index = match self.find(name_or_address) {
            Ok(i) => i,
            Err(response) => return response,
        };
        let vip = &mut self.vips[index];
        let was_owned = vip.ownership.owned;
        match self.owner.release(&mut vip.ownership).await {
            Ok(()) if was_owned => {
                vip.reason = "standby: operator command `lbfo release`".into();
                tracing::info!(vip = %vip.name, address = %vip.ownership.address, "released (operator command): XDP no longer answers, address removed unless configured by hand");
                Response::Done {
                    message: format!("{} {} released", vip.name, vip.ownership.address),
                }
            }
            Ok(()) => Response::Done {
                message: format!(
                    "{} {} was not owned by this node",
                    vip.name, vip.ownership.address
                ),
            },
            Err(e) => {
                tracing::error!(vip = %vip.name, "cannot release: {e}");
                Response::Error {
                    message: format!("cannot release {}: {e}", vip.name),
                }
            }
        }
    }

    async fn status(&self) -> Result<Status> {
        let now = clock::monotonic_ns();
        let mut vips = Vec::new();
        for vip in &self.vips {
            let entry = self
                .owner
                .datapath
                .vip(vip.ownership.address.addr)
                .unwrap_or_default();
            let answers = entry.answers(now);
            vips.push(VipStatus {
                name: vip.name.clone(),
                address: vip.ownership.address.to_string(),
                state: if vip.ownership.owned {
                    "owner"
                } else {
                    "standby"
                }
                .into(),
                owned: answers,
                lease_left_ms: if answers {
                    (entry.lease_deadline_ns - now) / 1_000_000
                } else {
                    0
                },
                mac: format_mac(&self.iface.mac),
                address_origin: self
                    .owner
                    .address_origin(vip.ownership.address)
                    .await?
                    .as_str()
                    .into(),
                reason: vip.reason.clone(),
                counters: self.owner.datapath.counters(vip.ownership.vip_id)?,
            });
        }
        Ok(Status {
            interface: self.iface.name.clone(),
            xdp_mode: self.xdp_mode.to_string(),
            xdp_prog_id: self.owner.datapath.prog_id(),
            mac: format_mac(&self.iface.mac),
            vips,
            malformed_frames: self.owner.datapath.counters(lbfo_common::NO_VIP)?.malformed,
        })
    }

    /// Releases every VIP, then detaches XDP.
    async fn shutdown(&mut self) {
        for vip in &mut self.vips {
            let was_owned = vip.ownership.owned;
            match self.owner.release(&mut vip.ownership).await {
                Ok(()) if was_owned => tracing::info!(vip = %vip.name, "released on shutdown"),
                Ok(()) => {}
                Err(e) => tracing::error!(vip = %vip.name, "cannot release on shutdown: {e}"),
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
/// with every VIP on standby, so it removes them.
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
