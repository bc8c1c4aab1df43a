//! `lbfo run`: start-up, the main loop and shutdown, around the pure core.
//!
//! Start-up checks everything that can be wrong before it changes anything
//! (config, root, interface, the plan of VIPs, locks, socket, program load,
//! health checks) and only then removes stale addresses and attaches XDP.
//!
//! The main loop turns what happens (signals, control requests, VRRP
//! packets, timers, check transitions, link and neighbour events) into
//! [`Input`]s, hands each to [`Node::handle`] and gives the effects to the
//! [`Executor`], the one writer of the map and the addresses. Slow
//! work stays off the loop: checks run in their own tasks, the neighbour
//! table is read by [`neighbours`], status reads only memory and maps.

mod executor;
mod neighbours;
mod startup;
mod status;
mod systemd;

use std::{
    collections::{HashMap, HashSet, VecDeque},
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::{mpsc, watch},
    time::Instant,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    announce::Announcer,
    arp::format_mac,
    config::Config,
    control::{self, Command, Request, Response},
    core::{self, CheckKey, Input, Node},
    datapath::Datapath,
    health::{CheckId, HealthChecker, HealthEvent, ProbeObserver, StatusBoard},
    metrics::{self, Metrics},
    netlink::{Interface, Netlink, XdpAttachMode},
    ownership::Owner,
    route::RouteDevice,
    vrrp::{
        Sources,
        socket::{VrrpSocket, VrrpSockets},
        timer::PreciseTimer,
    },
};

use executor::Executor;

/// The daemon's clock: time since start-up, the one the core and the VRRP
/// machines run on.
#[derive(Clone, Copy)]
struct Clock {
    epoch: Instant,
}

impl Clock {
    fn now(&self) -> Duration {
        Instant::now().duration_since(self.epoch)
    }

    fn instant(&self, at: Duration) -> Instant {
        self.epoch + at
    }
}

/// The engine's id for each check, and back.
#[derive(Default)]
struct CheckIds {
    by_key: Arc<HashMap<CheckKey, CheckId>>,
    by_id: HashMap<CheckId, CheckKey>,
}

impl CheckIds {
    fn of(config: &Config) -> (CheckIds, Vec<(CheckId, crate::health::CheckConfig)>) {
        let mut ids = CheckIds::default();
        let mut checks = Vec::new();
        for (key, check) in core::all_checks(config) {
            let id = CheckId::new(key.to_string());
            Arc::get_mut(&mut ids.by_key)
                .expect("not shared yet")
                .insert(key.clone(), id.clone());
            ids.by_id.insert(id.clone(), key);
            checks.push((id, check));
        }
        (ids, checks)
    }

    /// The checks that pass now.
    fn healthy(&self, board: &StatusBoard) -> HashSet<CheckKey> {
        self.by_key
            .iter()
            .filter(|(_, id)| board.get(id).is_some_and(|s| s.state.is_healthy()))
            .map(|(key, _)| key.clone())
            .collect()
    }
}

/// Probe outcomes into the metrics, labelled with the check's VIP.
struct ProbeMetrics {
    metrics: Arc<Metrics>,
    keys: std::sync::RwLock<HashMap<CheckId, CheckKey>>,
}

impl ProbeObserver for ProbeMetrics {
    fn probed(
        &self,
        id: &CheckId,
        kind: &'static str,
        latency: Duration,
        failure: Option<&'static str>,
    ) {
        if let Some(key) = self.keys.read().expect("probe metrics lock").get(id) {
            self.metrics.observe_probe(key, kind, latency, failure);
        }
    }
}

struct Daemon {
    node: Node,
    /// The I/O runtime, for work kept off the main loop.
    io: tokio::runtime::Handle,
    /// The Prometheus registry, with `[metrics]`.
    metrics: Option<Arc<Metrics>>,
    probe_metrics: Option<Arc<ProbeMetrics>>,
    executor: Executor,
    clock: Clock,
    netlink: Netlink,
    iface: Interface,
    xdp_mode: XdpAttachMode,
    checker: HealthChecker,
    board: StatusBoard,
    check_ids: CheckIds,
    /// Tells the neighbour task whether any VIP is balanced.
    balancing: watch::Sender<bool>,
    /// Read again on SIGHUP.
    config_path: PathBuf,
    systemd: systemd::Systemd,
}

/// The real-time priority of the main loop's thread (SCHED_RR): above
/// every ordinary thread, so a busy machine (health checks, status
/// requests, other processes) does not delay an advertisement by a
/// scheduler tick; low among real-time threads. keepalived's
/// `vrrp_rt_priority` does the same for its VRRP process.
pub const MAIN_LOOP_RT_PRIORITY: i32 = 10;

/// Gives the calling thread (the main loop's) [`MAIN_LOOP_RT_PRIORITY`].
/// The loop sleeps between events, and the kernel's real-time throttling
/// (`kernel.sched_rt_runtime_us`) keeps a runaway one from owning a core.
/// Without the permission it runs at normal priority and says so.
pub fn raise_main_loop_priority() {
    let param = libc::sched_param {
        sched_priority: MAIN_LOOP_RT_PRIORITY,
    };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_RR, &param) } != 0 {
        tracing::warn!(
            "cannot give the main loop real-time priority: {}; advertisements may wait for busy threads",
            std::io::Error::last_os_error()
        );
    }
}

/// Where the daemon's work other than the main loop runs.
pub struct Runtimes {
    /// Control connections, the metrics endpoint, the neighbour task.
    pub io: tokio::runtime::Handle,
    /// Health check tasks.
    pub checks: tokio::runtime::Handle,
}

/// Runs the daemon until SIGTERM or SIGINT. The caller runs this future,
/// and with it the main loop, on a runtime of its own.
pub async fn run(config_path: &Path, socket_path: &Path, runtimes: Runtimes) -> Result<()> {
    let Runtimes {
        io,
        checks: check_runtime,
    } = runtimes;
    let config = Config::load(config_path)?;
    if !nix::unistd::geteuid().is_root() {
        bail!("lbfo run must run as root (it attaches XDP and changes interface addresses)");
    }
    let netlink = Netlink::connect()?;
    let iface = netlink.interface(&config.interface).await?;
    // Watch the link before reading its state, so no change is missed.
    let mut link_events = crate::netlink::watch_link(iface.index)?;
    let iface = netlink.interface(&config.interface).await?;
    if !iface.has_link {
        tracing::warn!(interface = %iface.name, "interface has no link (down or no carrier): its VIPs stay in fault until it has");
    }
    let sources = startup::election_sources(&config, &netlink, &iface).await?;
    let vip_addresses: Vec<std::net::IpAddr> = config.all_addresses().collect();
    let capacity = core::Capacity::for_config(&config);
    let mut node = Node::new(config, iface.has_link, sources, capacity)?;
    let _lock = startup::lock_interface(&iface)?;
    let socket = control::bind(socket_path)?;
    let mut datapath = Datapath::load(capacity)?;
    let announcer = Announcer::open(iface.index).with_context(|| {
        format!(
            "cannot open a packet socket on {} for gratuitous ARP",
            iface.name
        )
    })?;
    let vrrp = open_vrrp(&iface, &VrrpSockets::default(), sources)?;

    let metrics_listener = match node.config().metrics {
        Some(m) => Some(
            metrics::bind(m.listen)
                .with_context(|| format!("cannot serve metrics on {}", m.listen))?,
        ),
        None => None,
    };
    let metrics = match metrics_listener {
        Some(_) => Some(Metrics::new()?),
        None => None,
    };

    let tasks = TaskTracker::new();
    let shutdown = CancellationToken::new();
    let (check_ids, checks) = CheckIds::of(node.config());
    if !checks.is_empty()
        && let Err(e) = crate::health::raise_nofile_limit()
    {
        tracing::warn!("cannot raise the open-file limit for health checks: {e}");
    }
    let (health_tx, mut health_events) = mpsc::channel(checks.len().max(16));
    let mut checker = HealthChecker::new(health_tx, shutdown.child_token());
    checker.set_runtime(check_runtime);
    let probe_metrics = metrics.clone().map(|metrics| {
        Arc::new(ProbeMetrics {
            metrics,
            keys: std::sync::RwLock::new(check_ids.by_id.clone()),
        })
    });
    if let Some(observer) = &probe_metrics {
        checker.set_observer(observer.clone());
    }
    let check_count = checks.len();
    checker
        .sync(checks)
        .await
        .context("starting health checks")?;
    if check_count > 0 {
        // Identical checks on several VIPs or backends share one probe.
        tracing::info!(
            checks = check_count,
            probes = checker.probe_tasks(),
            "health checks started"
        );
    }
    let board = checker.status_board();

    // The route device goes with the process if start-up fails from here.
    let route_device = match node.config().has_route_vips() {
        true => Some(open_route_device(&netlink, &node.config().route_device).await?),
        false => None,
    };

    // From here on the system changes.
    let by_hand = startup::remove_stale_addresses(&netlink, &iface, &vip_addresses).await?;
    let xdp_mode = startup::attach(&netlink, &mut datapath, &iface, node.config().xdp_mode).await?;
    let prog_id = datapath.prog_id();
    let mut owner = Owner::new(
        datapath,
        netlink.clone(),
        announcer,
        iface.index,
        iface.mac,
        by_hand,
        tasks.clone(),
    );
    if let Some(device) = route_device {
        owner.set_route_device(device);
    }
    let (solicit_tx, solicit_rx) = mpsc::unbounded_channel();
    let notify_timeout = node.config().notify_timeout();
    let clock = Clock {
        epoch: Instant::now(),
    };
    let mut executor = Executor::new(
        owner,
        clock,
        metrics.clone(),
        vrrp,
        solicit_tx,
        tasks.clone(),
        notify_timeout,
    );
    // Every VIP starts as not owned: XDP drops ARP and traffic for it.
    let initial = node.initial_effects();
    executor.apply(initial).await;
    tracing::info!(
        interface = %iface.name,
        mac = %format_mac(&iface.mac),
        "XDP attached in {xdp_mode} mode (program id {prog_id}); {} VIP(s); control socket {}",
        node.vips().len(),
        socket.path().display()
    );

    let (balancing, balancing_rx) = watch::channel(node.vips().iter().any(|v| v.balance.is_some()));
    let (macs_tx, mut macs) = mpsc::channel(1);
    tasks.spawn_on(
        neighbours::run(
            netlink.clone(),
            iface.index,
            balancing_rx,
            solicit_rx,
            macs_tx,
            shutdown.clone(),
        ),
        &io,
    );
    let (commands_tx, mut commands) = mpsc::channel(64);
    tasks.spawn_on(
        socket.serve(commands_tx, shutdown.clone(), tasks.clone()),
        &io,
    );
    if let (Some(listener), Some(metrics)) = (metrics_listener, &metrics) {
        tracing::info!("metrics at http://{}/metrics", listener.local_addr()?);
        tasks.spawn_on(
            metrics::serve(listener, metrics.clone(), shutdown.clone(), tasks.clone()),
            &io,
        );
    }

    let mut daemon = Daemon {
        node,
        io: io.clone(),
        metrics,
        probe_metrics,
        executor,
        clock,
        netlink,
        iface,
        xdp_mode,
        checker,
        board,
        check_ids,
        balancing,
        config_path: config_path.to_path_buf(),
        systemd: systemd::Systemd::from_env(),
    };
    // Checks start unproven: VIPs with checks begin in fault until they pass.
    daemon.step(Input::Start).await;
    daemon.systemd.ready(&daemon.summary());
    let result = daemon
        .main_loop(
            &mut commands,
            &mut health_events,
            &mut link_events,
            &mut macs,
        )
        .await;
    // The loop ends with every VIP released (or on an error, released now).
    if !daemon.node.stopped() {
        daemon.systemd.stopping();
        daemon.step(Input::Shutdown).await;
        let wait = daemon.node.next_deadline().map(|d| daemon.clock.instant(d));
        if let Some(wait) = wait {
            tokio::time::sleep_until(wait).await;
        }
        daemon.step(Input::Timer).await;
    }
    shutdown.cancel();
    match daemon.executor.owner_mut().detach(daemon.xdp_mode).await {
        Ok(()) => tracing::info!(interface = %daemon.iface.name, "XDP detached; stopped"),
        Err(e) => tracing::error!(interface = %daemon.iface.name, "cannot detach XDP: {e}"),
    }
    daemon.checker.shutdown().await;
    // GARP bursts are cancelled, the control server and the neighbour task
    // end with `shutdown`; notify scripts of the last transitions run to
    // their end (each is killed at notify_timeout_ms).
    tasks.close();
    tasks.wait().await;
    result
}

/// Creates the route device and sets it up, so the routing daemon sees
/// the addresses lbfo puts on it.
async fn open_route_device(netlink: &Netlink, name: &str) -> Result<RouteDevice> {
    let device = RouteDevice::create(name)?;
    netlink.set_up(device.index()).await?;
    tracing::info!(
        route_device = name,
        "route VIPs are announced as /32 addresses on {name}, which vanishes with this process"
    );
    Ok(device)
}

/// The VRRP sockets for `sources`: those of `open` that still send from the
/// right address, and new ones for the rest. Nothing changes if one fails.
fn open_vrrp(iface: &Interface, open: &VrrpSockets, sources: Sources) -> Result<VrrpSockets> {
    let socket = |current: &Option<Arc<VrrpSocket>>, source: Option<IpAddr>| match source {
        None => Ok(None),
        Some(source) if current.as_ref().is_some_and(|s| s.source() == source) => {
            Ok(current.clone())
        }
        Some(source) => {
            let socket = VrrpSocket::open(&iface.name, iface.index, source).with_context(|| {
                format!("cannot open the VRRP socket on {} for {source}", iface.name)
            })?;
            tracing::info!(interface = %iface.name, "VRRP advertisements from {source}");
            anyhow::Ok(Some(Arc::new(socket)))
        }
    };
    Ok(VrrpSockets {
        ipv4: socket(&open.ipv4, sources.of_family(false))?,
        ipv6: socket(&open.ipv6, sources.of_family(true))?,
    })
}

impl Daemon {
    /// Feeds one input to the core and applies what it decides, then what
    /// the core makes of the executor's feedback. Returns the answers to an
    /// operator's command.
    async fn step(&mut self, input: Input) -> Vec<Response> {
        let mut inputs = VecDeque::from([input]);
        let mut replies = Vec::new();
        while let Some(input) = inputs.pop_front() {
            let effects = self.node.handle(self.clock.now(), input);
            let applied = self.executor.apply(effects).await;
            inputs.extend(applied.feedback);
            replies.extend(applied.replies);
        }
        replies
    }

    async fn main_loop(
        &mut self,
        commands: &mut mpsc::Receiver<Command>,
        health_events: &mut mpsc::Receiver<HealthEvent>,
        link_events: &mut mpsc::UnboundedReceiver<bool>,
        macs: &mut mpsc::Receiver<HashMap<IpAddr, [u8; 6]>>,
    ) -> Result<()> {
        let mut sigterm = signal(SignalKind::terminate())?;
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sighup = signal(SignalKind::hangup())?;
        let mut lease = self.node.config().lease();
        // Renew three times per lease: two renewals can be missed (a stalled
        // host) before XDP falls silent. Elected VIPs renew with each advert.
        let mut renew = renew_interval(lease);
        let mut garp_refresh = tokio::time::interval(Duration::from_millis(
            self.node.config().garp.refresh_ms.max(1000),
        ));
        garp_refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // VRRP timers to the microsecond, not tokio's millisecond ticks.
        let mut vrrp_timer = PreciseTimer::new().context("creating the VRRP timer (timerfd)")?;
        let mut metrics_sync = tokio::time::interval(metrics::SYNC_INTERVAL);
        metrics_sync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let exporting = self.metrics.is_some();
        let mut metrics_chore = MetricsChore::default();
        let mut watchdog = self.systemd.watchdog_timer();
        let mut stall_hook =
            systemd::StallHook::from_env().context("SIGUSR1 for the stall hook")?;
        // A status request builds a report of every VIP and check (half a
        // millisecond with a thousand checks): it waits for the next VRRP
        // timer when it would not fit before it.
        let mut command_cost = ChoreCost::default();
        while !self.node.stopped() {
            let next_deadline = self.node.next_deadline();
            let next_timer = next_deadline.map(|d| self.clock.instant(d));
            let room = next_deadline.map(|d| d.saturating_sub(self.clock.now()));
            let commands_fit = command_cost.fits(room);
            let vrrp = self.executor.vrrp().clone();
            let garp_refreshing = self.node.config().garp.refresh_ms > 0;
            tokio::select! {
                _ = sigterm.recv() => {
                    tracing::info!("SIGTERM: releasing VIPs and detaching XDP");
                    self.systemd.stopping();
                    self.step(Input::Shutdown).await;
                }
                _ = sigint.recv() => {
                    tracing::info!("SIGINT: releasing VIPs and detaching XDP");
                    self.systemd.stopping();
                    self.step(Input::Shutdown).await;
                }
                _ = watchdog.due(), if watchdog.enabled() => self.systemd.watchdog(),
                stall = systemd::StallHook::requested(&mut stall_hook), if stall_hook.is_some() => {
                    tracing::warn!("SIGUSR1 with LBFO_TEST_STALL_ON_SIGUSR1: blocking the main loop for {stall:?}");
                    std::thread::sleep(stall);
                }
                _ = renew.tick() => { self.step(Input::RenewLeases).await; }
                _ = sighup.recv() => {
                    self.reload().await;
                    if self.node.config().lease() != lease {
                        lease = self.node.config().lease();
                        renew = renew_interval(lease);
                    }
                }
                Some(command) = commands.recv(), if commands_fit => {
                    let started = std::time::Instant::now();
                    self.command(command).await;
                    command_cost.ran(started.elapsed());
                }
                received = vrrp.recv(), if !vrrp.is_empty() => match received {
                    Ok(packet) => {
                        match packet.decode(&vrrp.sources()) {
                            Some(Ok(advert)) => { self.step(Input::Advert { from: packet.src, advert }).await; }
                            Some(Err(reject)) => { self.step(Input::Rejected(reject)).await; }
                            None => {}
                        }
                    }
                    Err(e) => tracing::warn!("VRRP receive failed: {e}"),
                },
                _ = sleep_until(&mut vrrp_timer, next_timer), if next_timer.is_some() => {
                    self.step(Input::Timer).await;
                }
                Some(snapshot) = macs.recv() => { self.step(Input::Neighbours(snapshot)).await; }
                _ = metrics_sync.tick(), if exporting => metrics_chore.due(),
                _ = garp_refresh.tick(), if garp_refreshing => { self.step(Input::RefreshAnnouncements).await; }
                Some(up) = link_events.recv() => { self.step(Input::Link { up }).await; }
                Some(event) = health_events.recv() => {
                    // The checker logs every transition itself.
                    if self.board.is_current(&event)
                        && let Some(key) = self.check_ids.by_id.get(&event.id).cloned()
                    {
                        let healthy = event.new.is_healthy();
                        self.step(Input::Check { key, healthy, why: event.to_string() }).await;
                    }
                }
            }
            let room = self
                .node
                .next_deadline()
                .map(|d| d.saturating_sub(self.clock.now()));
            if metrics_chore.may_run(room) {
                let started = std::time::Instant::now();
                self.sync_metrics();
                metrics_chore.ran(started.elapsed());
            }
        }
        Ok(())
    }

    fn sync_metrics(&self) {
        if let Some(metrics) = &self.metrics {
            metrics.sync(
                &self.node,
                self.executor.owner(),
                &self.board,
                &self.check_ids.by_key,
            );
        }
    }

    async fn command(&mut self, command: Command) {
        let input = match command.request {
            Request::Status => {
                let sources = status::StatusSources {
                    node: &self.node,
                    owner: self.executor.owner(),
                    iface: &self.iface,
                    xdp_mode: self.xdp_mode,
                };
                match sources.status() {
                    Ok((mut status, pending)) => {
                        // The check views are filled in off the main loop.
                        let board = self.board.clone();
                        let ids = self.check_ids.by_key.clone();
                        self.io.spawn(async move {
                            status::fill_checks(&mut status, pending, &board, &ids);
                            let _ = command.reply.send(Response::Status(Box::new(status)));
                        });
                    }
                    Err(e) => {
                        let _ = command.reply.send(Response::Error {
                            message: format!("cannot read the data path: {e}"),
                        });
                    }
                }
                return;
            }
            Request::Own { vip } => Input::Own(vip),
            Request::Release { vip } => Input::Release(vip),
            Request::Drain { backend } => Input::Drain {
                backend,
                drained: true,
            },
            Request::Undrain { backend } => Input::Drain {
                backend,
                drained: false,
            },
        };
        let response = self
            .step(input)
            .await
            .pop()
            .unwrap_or_else(|| Response::Error {
                message: "lbfo is shutting down".into(),
            });
        let _ = command.reply.send(response);
    }

    /// SIGHUP: reads the config again. A config that does not load, or asks
    /// for what only a restart can do, or does not fit, is refused as a
    /// whole and the running one stays.
    async fn reload(&mut self) {
        let path = self.config_path.clone();
        self.systemd.reloading();
        let result = self.try_reload().await;
        if let Some(metrics) = &self.metrics {
            metrics.reload(result.is_ok());
        }
        let status = match result {
            Ok(summary) => {
                tracing::info!("SIGHUP: reloaded {}: {summary}", path.display());
                self.sync_metrics();
                self.summary()
            }
            Err(e) => {
                tracing::error!("SIGHUP: reload refused, the running configuration stays: {e:#}");
                format!("{}; last reload refused: {e:#}", self.summary())
            }
        };
        self.systemd.ready(&status);
    }

    /// One line for the service manager's status (`systemctl status`).
    fn summary(&self) -> String {
        format!(
            "{} VIP(s) on {}, XDP in {} mode",
            self.node.vips().len(),
            self.iface.name,
            self.xdp_mode
        )
    }

    async fn try_reload(&mut self) -> Result<String> {
        let new = Config::load(&self.config_path)?;
        let sources = startup::election_sources(&new, &self.netlink, &self.iface).await?;
        // Everything is allocated and checked before anything changes.
        let plan = core::plan(&self.node, new, sources)?;
        // The first elected VIP of a family needs its VRRP socket; the new
        // set is kept only if the rest of the reload goes through.
        let vrrp = open_vrrp(&self.iface, self.executor.vrrp(), sources)?;
        let route_device = match (
            self.executor.owner().route_device(),
            plan.config().has_route_vips(),
        ) {
            (None, true) => {
                Some(open_route_device(&self.netlink, &plan.config().route_device).await?)
            }
            _ => None,
        };
        let (check_ids, checks) = CheckIds::of(plan.config());
        // `sync` validates the whole set before it changes anything.
        let report = self.checker.sync(checks).await?;
        self.executor.set_vrrp(vrrp);
        if let Some(device) = route_device {
            self.executor.owner_mut().set_route_device(device);
        }
        self.executor
            .set_notify_timeout(plan.config().notify_timeout());
        if let Some(observer) = &self.probe_metrics {
            *observer.keys.write().expect("probe metrics lock") = check_ids.by_id.clone();
        }
        self.check_ids = check_ids;
        let healthy = self.check_ids.healthy(&self.board);
        let summary = plan.summary();
        self.step(Input::Reload {
            plan: Box::new(plan),
            healthy,
        })
        .await;
        let _ = self
            .balancing
            .send(self.node.vips().iter().any(|v| v.balance.is_some()));
        Ok(format!(
            "{summary}; checks: {} added, {} replaced, {} removed, {} unchanged",
            report.added.len(),
            report.replaced.len(),
            report.removed.len(),
            report.unchanged.len()
        ))
    }
}

fn renew_interval(lease: Duration) -> tokio::time::Interval {
    let mut renew = tokio::time::interval(lease / 3);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    renew
}

/// What a chore of the main loop cost the last time it ran, so it runs only
/// where it cannot delay a VRRP timer: with room for twice that (plus a
/// margin) before the next deadline. On a Master that is right after an
/// advertisement.
#[derive(Default)]
struct ChoreCost {
    last_took: Duration,
}

impl ChoreCost {
    const MARGIN: Duration = Duration::from_micros(500);
    /// The most room a chore waits for: one too long to fit between two
    /// timers still runs, right after one, instead of never.
    const MOST_ROOM: Duration = Duration::from_millis(5);

    /// Whether the chore fits in `room` before the next VRRP deadline
    /// (`None`: no timer runs).
    fn fits(&self, room: Option<Duration>) -> bool {
        let needed = (self.last_took * 2 + Self::MARGIN).min(Self::MOST_ROOM);
        room.is_none_or(|room| room >= needed)
    }

    fn ran(&mut self, took: Duration) {
        self.last_took = took;
    }
}

/// When the main loop copies its state into the metrics registry: its
/// longest chore (milliseconds with a thousand checks), run where it fits
/// ([`ChoreCost`]). A sync that never fits (a timer interval shorter than
/// the sync) runs anyway once [`MetricsChore::OVERDUE`] has passed, so the
/// figures never stop.
#[derive(Default)]
struct MetricsChore {
    due_since: Option<std::time::Instant>,
    cost: ChoreCost,
}

impl MetricsChore {
    const OVERDUE: Duration = Duration::from_secs(2);

    fn due(&mut self) {
        self.due_since.get_or_insert_with(std::time::Instant::now);
    }

    fn may_run(&self, room: Option<Duration>) -> bool {
        self.due_since
            .is_some_and(|since| self.cost.fits(room) || since.elapsed() >= Self::OVERDUE)
    }

    fn ran(&mut self, took: Duration) {
        self.due_since = None;
        self.cost.ran(took);
    }
}

async fn sleep_until(timer: &mut PreciseTimer, deadline: Option<Instant>) {
    let Some(deadline) = deadline else {
        return std::future::pending().await;
    };
    if let Err(e) = timer.sleep_until(deadline).await {
        // Keep time with tokio's coarser timer rather than not at all.
        tracing::warn!("VRRP timer (timerfd) failed: {e}; using a millisecond timer");
        tokio::time::sleep_until(deadline).await;
    }
}

#[cfg(test)]
mod chore_tests {
    use super::*;

    #[test]
    fn a_chore_runs_only_with_room_for_twice_its_cost_and_never_waits_for_more_than_5_ms() {
        let ms = Duration::from_millis;
        let mut cost = ChoreCost::default();
        assert!(cost.fits(None), "no timer: always");
        assert!(
            cost.fits(Some(ms(1))),
            "never measured: needs only the margin"
        );
        assert!(!cost.fits(Some(Duration::from_micros(400))));
        cost.ran(ms(2));
        assert!(!cost.fits(Some(ms(4))), "2 ms of work needs 4.5 ms of room");
        assert!(cost.fits(Some(Duration::from_micros(4500))));
        cost.ran(ms(20));
        assert!(
            cost.fits(Some(ms(5))),
            "too long to ever fit: runs after a timer"
        );
        assert!(!cost.fits(Some(ms(4))));
    }

    #[test]
    fn a_due_metrics_sync_waits_for_room_until_it_is_overdue() {
        let mut chore = MetricsChore::default();
        assert!(!chore.may_run(None), "not due");
        chore.due();
        chore.ran(Duration::from_millis(2));
        assert!(!chore.may_run(None), "ran: not due any more");
        chore.due();
        assert!(!chore.may_run(Some(Duration::from_millis(1))));
        assert!(chore.may_run(Some(Duration::from_millis(9))));
        chore.due_since = Some(std::time::Instant::now() - MetricsChore::OVERDUE);
        assert!(chore.may_run(Some(Duration::ZERO)), "overdue: runs anyway");
    }
}
