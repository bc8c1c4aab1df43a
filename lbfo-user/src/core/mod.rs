//! The daemon's decisions, without I/O: [`Node::handle`] takes one
//! [`Input`] (an operator command, a check transition, a link event, a
//! received advertisement, a timer, a reload) at a time `now` and returns
//! the [`Effect`]s to carry out, in the order they must happen. No tokio, no
//! sockets, no clock: the scenario tests in `tests.rs` replay inputs and
//! compare effects.
//!
//! The rules live here once:
//! - an operator-owned VIP is owned while the operator wants it, no check
//!   without weight fails and the interface has a link;
//! - a route VIP is announced while no check without weight fails, the
//!   interface has a link and (balanced) its table is the one every node
//!   builds; no election, no operator;
//! - a failing weighted check lowers the VRRP priority by its weight;
//! - a backend takes new flows while its checks pass, it is not drained and
//!   its MAC is known;
//! - taking a VIP is one [`Effect::Take`], giving it up one
//!   [`Effect::Release`]; the executor does the steps of each in the safe
//!   order (address, map, announcement; map, then address).
//!
//! `now` is the daemon's clock (time since it started), the one the VRRP
//! machines run on.

mod plan;
mod vip;

#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
    path::PathBuf,
    time::Duration,
};

pub use plan::{Capacity, Plan, PlanError, plan};
pub use vip::{CheckKey, MapEntry, NotAnnounced, Phase, Vip, all_checks};

use crate::{
    balance::{BackendIds, TableUpdate},
    config::{Config, GarpConfig, VipAddress, VipConfig},
    control::Response,
    vrrp::{Action, Advertisement, Event, Reject, Sources},
};

/// How much longer than one advertisement interval a stopping Master waits
/// for its successor's first advertisement.
pub const HANDOVER_MARGIN: Duration = Duration::from_millis(100);

/// Why this node took a VIP over: RFC 6527's vrrpv3StatisticsNewMasterReason
/// (`priority`, `preempted`, `master_no_response`) and lbfo's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// Priority 255: this node owns the address.
    Priority,
    /// A lower-priority Master was preempted.
    Preempted,
    /// The Master fell silent for Master_Down_Interval.
    MasterNoResponse,
    /// The Master stepped down with priority 0 (shutdown or fault).
    Shutdown,
    /// `lbfo own`.
    Operator,
    /// The VIP's checks pass again.
    Check,
    /// The interface has its link again.
    Link,
}

impl Reason {
    pub const ALL: [Reason; 7] = [
        Reason::Priority,
        Reason::Preempted,
        Reason::MasterNoResponse,
        Reason::Shutdown,
        Reason::Operator,
        Reason::Check,
        Reason::Link,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Priority => "priority",
            Reason::Preempted => "preempted",
            Reason::MasterNoResponse => "master_no_response",
            Reason::Shutdown => "shutdown",
            Reason::Operator => "operator",
            Reason::Check => "check",
            Reason::Link => "link",
        }
    }
}

/// When and why a takeover began on this node: the executor measures from
/// `began` to the moment XDP answers and the first announcement is out.
#[derive(Debug, Clone, PartialEq)]
pub struct Failover {
    pub vip: String,
    pub began: Duration,
    pub reason: Reason,
}

/// What happened, as the core is told.
#[derive(Debug, Clone)]
pub enum Input {
    /// XDP is attached: checks start unproven, elections start.
    Start,
    /// `lbfo own NAME`.
    Own(String),
    /// `lbfo release NAME`.
    Release(String),
    /// `lbfo drain ADDRESS` (`true`) or `lbfo undrain ADDRESS`.
    Drain { backend: String, drained: bool },
    /// A check changed state.
    Check {
        key: CheckKey,
        healthy: bool,
        why: String,
    },
    /// The interface gained or lost its link (up with a carrier).
    Link { up: bool },
    /// A VRRP advertisement from another router, decoded. The family of
    /// `from` is the virtual router's.
    Advert { from: IpAddr, advert: Advertisement },
    /// A VRRP packet that failed the receive checks.
    Rejected(Reject),
    /// The time from [`Node::next_deadline`] has come.
    Timer,
    /// Operator-owned VIPs' leases are due for renewal.
    RenewLeases,
    /// `garp.refresh_ms`: announce every owned VIP again.
    RefreshAnnouncements,
    /// The neighbour table's MACs for the interface.
    Neighbours(HashMap<IpAddr, [u8; 6]>),
    /// SIGHUP, planned and checked by [`plan::plan`]; `healthy` is every
    /// check that passes now (a check that stays keeps its state).
    Reload {
        plan: Box<Plan>,
        healthy: HashSet<CheckKey>,
    },
    /// An [`Effect::Take`] failed (the executor left nothing behind);
    /// `address` is the VIP's first.
    TakeFailed { address: IpAddr, error: String },
    /// An [`Effect::Take`] is done: XDP answered and the first announcement
    /// was out `took` after the failover began.
    TookOver { address: IpAddr, took: Duration },
    /// SIGTERM or SIGINT.
    Shutdown,
}

/// What the core asks the executor to do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// For each of the VIP's addresses: put it on the interface (unless it
    /// is there), write its map entry owned with a lease, send the first
    /// gratuitous ARP, then the rest of the burst. All or none: a failure
    /// undoes the addresses already taken.
    Take {
        addresses: Vec<VipAddress>,
        entry: MapEntry,
        lease: Duration,
        garp: GarpConfig,
        failover: Failover,
    },
    /// Write the map entry not owned (XDP falls silent at once), then remove
    /// the address if lbfo put it there.
    Release {
        addresses: Vec<VipAddress>,
        entry: MapEntry,
    },
    /// Write the map entry as it stands: ownership and mode unchanged, the
    /// lease (for an owned VIP) pushed forward by `lease`.
    Write {
        addresses: Vec<VipAddress>,
        entry: MapEntry,
        lease: Option<Duration>,
    },
    /// Remove the VIP's map entry (it left the configuration).
    Forget { addresses: Vec<VipAddress> },
    /// Zero a counter slot given to a new VIP.
    ResetCounters { vip_id: u32 },
    /// Announce an owned VIP again (gratuitous ARP burst).
    Announce {
        addresses: Vec<VipAddress>,
        garp: GarpConfig,
    },
    /// Write backends and a table into the idle generation; a
    /// [`Effect::Write`] that flips the entry follows.
    PublishTable(Box<TableUpdate>),
    /// Mark these backend ids gone in the map.
    ClearBackends(Vec<u32>),
    /// Send from `source` (whose family picks the socket).
    SendAdvert {
        source: IpAddr,
        advert: Advertisement,
        unicast_peers: Vec<IpAddr>,
    },
    /// Ask the kernel to resolve these backends' MACs.
    Solicit(Vec<IpAddr>),
    /// Run the VIP's notify script as `SCRIPT NAME OLD NEW`.
    Notify { script: PathBuf, args: Vec<String> },
    /// Answer the operator's command.
    Reply(Response),
    /// Shutdown is complete: nothing is owned; detach XDP and exit.
    Stopped,
}

/// A stopping node's wait for its successors (see [`Input::Shutdown`]).
#[derive(Debug, Clone)]
struct Handover {
    /// VRIDs whose successor has not advertised yet.
    pending: Vec<u8>,
    deadline: Duration,
}

/// The whole daemon state that decisions depend on.
#[derive(Debug, Clone)]
pub struct Node {
    config: Config,
    /// The interface is up with a carrier.
    link_up: bool,
    vips: Vec<Vip>,
    /// What the maps were sized for at start-up.
    capacity: Capacity,
    backend_ids: BackendIds,
    /// The sources of this node's advertisements, per family; `None` where
    /// no VIP of the family is elected.
    sources: Sources,
    /// Advertisements not acted on, by reason.
    rejected: BTreeMap<&'static str, u64>,
    handover: Option<Handover>,
    stopped: bool,
}

impl Node {
    /// The node as it starts: every VIP not owned. `sources` are the VRRP
    /// source addresses (needed for each family with an elected VIP); `capacity` what the
    /// data path's maps are sized for (usually [`Capacity::for_config`]).
    /// Fails, changing nothing anywhere, if the VIPs do not fit.
    pub fn new(
        config: Config,
        link_up: bool,
        sources: Sources,
        capacity: Capacity,
    ) -> Result<Node, PlanError> {
        let empty = Node {
            config: Config {
                vips: Vec::new(),
                ..config.clone()
            },
            link_up,
            vips: Vec::new(),
            capacity,
            backend_ids: BackendIds::new(capacity.backends),
            sources: Sources::default(),
            rejected: Reject::NAMES.iter().map(|n| (*n, 0)).collect(),
            handover: None,
            stopped: false,
        };
        let plan = plan::plan(&empty, config, sources)?;
        let mut node = empty;
        (node.config, node.vips, node.backend_ids) = plan.into_start();
        node.sources = sources;
        Ok(node)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn vips(&self) -> &[Vip] {
        &self.vips
    }

    pub fn link_up(&self) -> bool {
        self.link_up
    }

    pub fn sources(&self) -> Sources {
        self.sources
    }

    pub fn rejected(&self) -> &BTreeMap<&'static str, u64> {
        &self.rejected
    }

    pub fn capacity(&self) -> Capacity {
        self.capacity
    }

    /// Shutdown is complete.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// The map entries (and, for balanced VIPs, first tables) to write
    /// before XDP is attached: every VIP not owned, so XDP drops ARP and
    /// traffic for it; balanced VIPs with a table of no backends until
    /// their MACs are known.
    pub fn initial_effects(&mut self) -> Vec<Effect> {
        let mut effects = Vec::new();
        let lease = self.config.lease();
        for vip in &mut self.vips {
            publish_effects(vip, &mut effects, lease);
            if vip.balance.is_none() {
                effects.push(Effect::Write {
                    addresses: vip.config.addresses.clone(),
                    entry: vip.entry(),
                    lease: None,
                });
            }
        }
        effects
    }

    /// When the next [`Input::Timer`] is due: the earliest VRRP timer, or
    /// the end of a shutdown's wait for successors.
    pub fn next_deadline(&self) -> Option<Duration> {
        let machines = self
            .vips
            .iter()
            .filter_map(|v| v.election.as_ref()?.machine.next_deadline());
        machines
            .chain(self.handover.as_ref().map(|h| h.deadline))
            .min()
    }

    pub fn handle(&mut self, now: Duration, input: Input) -> Vec<Effect> {
        let mut out = Vec::new();
        if self.stopped {
            return out;
        }
        if self.handover.is_some() {
            self.while_stopping(now, input, &mut out);
            return out;
        }
        match input {
            Input::Start => {
                self.apply_health(
                    now,
                    &HashSet::new(),
                    "health checks not passed yet",
                    &mut out,
                );
                for index in 0..self.vips.len() {
                    self.vrrp_event(now, index, Event::Startup, "startup".into(), &mut out);
                }
                self.reconcile_routes(now, &mut out);
            }
            Input::Own(name) => self.own(now, name, &mut out),
            Input::Release(name) => self.release(now, name, &mut out),
            Input::Drain { backend, drained } => self.drain(&backend, drained, &mut out),
            Input::Check { key, healthy, why } => self.on_check(now, key, healthy, why, &mut out),
            Input::Link { up } => self.on_link(now, up, &mut out),
            Input::Advert { from, advert } => self.on_advert(now, from, advert, &mut out),
            Input::Rejected(reject) => self.count_reject(&reject),
            Input::Timer => self.on_timers(now, &mut out),
            Input::RenewLeases => {
                let lease = self.config.lease();
                for vip in self.vips.iter().filter(|v| v.election.is_none() && v.owned) {
                    out.push(Effect::Write {
                        addresses: vip.config.addresses.clone(),
                        entry: vip.entry(),
                        lease: Some(lease),
                    });
                }
                // A route VIP whose announcement failed is tried again.
                self.reconcile_routes(now, &mut out);
            }
            Input::RefreshAnnouncements => {
                for vip in self.vips.iter().filter(|v| v.owned && !v.route()) {
                    out.push(Effect::Announce {
                        addresses: vip.config.addresses.clone(),
                        garp: self.config.garp,
                    });
                }
            }
            Input::Neighbours(macs) => self.on_neighbours(now, &macs, &mut out),
            Input::Reload { plan, healthy } => self.reload(now, *plan, &healthy, &mut out),
            Input::TakeFailed { address, error } => self.on_take_failed(address, &error),
            Input::TookOver { address, took } => self.on_took_over(address, took),
            Input::Shutdown => self.shutdown(now, &mut out),
        }
        out
    }

    // --- operator ---

    /// The VIP an operator named, if lbfo takes orders for it.
    fn operator_vip(&self, name_or_address: &str) -> Result<usize, Response> {
        let Some(config) = self.config.find_vip(name_or_address) else {
            return Err(error(format!(
                "no VIP named or addressed {name_or_address:?} in the config"
            )));
        };
        if let Some(vrid) = config.vrrp.vrid {
            return Err(error(format!(
                "{} is elected by VRRP (vrid {vrid}); `lbfo own/release` only apply to VIPs without vrid",
                config.name
            )));
        }
        if config.announce == crate::config::Announce::Route {
            return Err(error(format!(
                "{} is a route VIP: every node whose checks pass announces it; `lbfo own/release` only apply to ARP VIPs without vrid",
                config.name
            )));
        }
        Ok(self
            .vips
            .iter()
            .position(|v| v.config.name == config.name)
            .expect("every configured VIP has a runtime entry"))
    }

    fn own(&mut self, now: Duration, name: String, out: &mut Vec<Effect>) {
        let index = match self.operator_vip(&name) {
            Ok(i) => i,
            Err(response) => return out.push(Effect::Reply(response)),
        };
        let vip = &mut self.vips[index];
        vip.operator_wants = true;
        let message = if vip.fault {
            format!(
                "{} is in fault ({}); it will be owned as soon as its checks pass",
                vip.name(),
                vip.reason
            )
        } else if vip.owned {
            format!(
                "{} {} is already owned by this node",
                vip.name(),
                vip.config.addresses_text()
            )
        } else {
            vip.reason = "operator command `lbfo own`".into();
            self.reconcile_operator_vip(index, (now, Reason::Operator), out);
            let vip = &self.vips[index];
            format!(
                "{} {} is now owned by this node",
                vip.name(),
                vip.config.addresses_text()
            )
        };
        out.push(Effect::Reply(Response::Done { message }));
        self.log_transition(index, out);
    }

    fn release(&mut self, now: Duration, name: String, out: &mut Vec<Effect>) {
        let index = match self.operator_vip(&name) {
            Ok(i) => i,
            Err(response) => return out.push(Effect::Reply(response)),
        };
        let vip = &mut self.vips[index];
        vip.operator_wants = false;
        vip.reason = "operator command `lbfo release`".into();
        let message = if vip.owned {
            format!("{} {} released", vip.name(), vip.config.addresses_text())
        } else {
            format!(
                "{} {} was not owned by this node",
                vip.name(),
                vip.config.addresses_text()
            )
        };
        self.reconcile_operator_vip(index, (now, Reason::Operator), out);
        out.push(Effect::Reply(Response::Done { message }));
        self.log_transition(index, out);
    }

    /// An operator-owned VIP is owned while the operator wants it and
    /// nothing is failing.
    fn reconcile_operator_vip(
        &mut self,
        index: usize,
        cause: (Duration, Reason),
        out: &mut Vec<Effect>,
    ) {
        let lease = self.config.lease();
        let garp = self.config.garp;
        let vip = &mut self.vips[index];
        let want = vip.operator_wants && !vip.fault;
        if want && !vip.owned {
            take(vip, lease, garp, cause, out);
        } else if !want && vip.owned {
            release(vip, out);
        }
    }

    /// Route VIPs that should be announced and are not, or the other way
    /// round, are set right (start-up, reload, learned MACs, a retry).
    fn reconcile_routes(&mut self, now: Duration, out: &mut Vec<Effect>) {
        for index in 0..self.vips.len() {
            if self.vips[index].route() {
                self.reconcile_route(now, index, None, Reason::Check, out);
            }
        }
    }

    /// A route VIP is announced while nothing fails and nothing blocks it
    /// ([`Vip::route_blocker`]). `why` is what changed its health, if
    /// anything did.
    fn reconcile_route(
        &mut self,
        now: Duration,
        index: usize,
        why: Option<&str>,
        reason: Reason,
        out: &mut Vec<Effect>,
    ) {
        let lease = self.config.lease();
        let garp = self.config.garp;
        let device = self.config.route_device.clone();
        let vip = &mut self.vips[index];
        let blocker = match (vip.fault, why) {
            (true, Some(why)) => Some(format!("fault: {why}")),
            // Still in fault, for the reason it already gives.
            (true, None) if !vip.owned => return,
            (true, None) => Some("fault".into()),
            (false, _) => vip.route_blocker(),
        };
        match (blocker, vip.owned) {
            (None, false) => {
                vip.reason = format!(
                    "announced on {device}: {}",
                    why.unwrap_or(if vip.config.checks.is_empty() {
                        "no checks"
                    } else {
                        "its checks pass"
                    })
                );
                take(vip, lease, garp, (now, reason), out);
            }
            (Some(blocker), true) => {
                vip.reason = format!("withdrawn: {blocker}");
                release(vip, out);
            }
            (Some(blocker), false) => vip.reason = format!("not announced: {blocker}"),
            (None, true) => {}
        }
        self.log_transition(index, out);
    }

    fn drain(&mut self, backend: &str, drained: bool, out: &mut Vec<Effect>) {
        let Ok(address) = backend.parse::<IpAddr>() else {
            return out.push(Effect::Reply(error(format!(
                "{backend:?} is not a backend address (like 192.0.2.21)"
            ))));
        };
        let mut found = Vec::new();
        for vip in &mut self.vips {
            let Some(b) = vip
                .balance
                .as_mut()
                .and_then(|bal| bal.backends.iter_mut().find(|b| b.address == address))
            else {
                continue;
            };
            if b.drained != drained {
                b.drained = drained;
                tracing::info!(backend = %address, vip = %vip.config.name, "{} by operator command", if drained { "drained" } else { "undrained" });
                publish_effects(vip, out, self.config.lease());
            }
            found.push(vip.config.name.clone());
        }
        out.push(Effect::Reply(if found.is_empty() {
            error(format!("no balanced VIP has backend {address}"))
        } else {
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
        }));
    }

    // --- health and link ---

    /// Reads every check's state (start-up, reload) and acts on what changed.
    fn apply_health(
        &mut self,
        now: Duration,
        healthy: &HashSet<CheckKey>,
        why: &str,
        out: &mut Vec<Effect>,
    ) {
        let checks = all_checks(&self.config);
        for vip in &mut self.vips {
            vip.failing_checks.clear();
            vip.failing_backend_checks = vip
                .config
                .backends
                .iter()
                .map(|b| (b.address, Default::default()))
                .collect();
        }
        for (key, _) in checks.iter().filter(|(k, _)| !healthy.contains(k)) {
            if let Some(vip) = self.vips.iter_mut().find(|v| *v.config.name == *key.vip) {
                match key.backend {
                    None => vip.failing_checks.insert(key.index),
                    Some(b) => vip
                        .failing_backend_checks
                        .entry(b)
                        .or_default()
                        .insert(key.index),
                };
            }
        }
        for index in 0..self.vips.len() {
            self.settle_health(now, index, why, Reason::Check, out);
        }
    }

    /// One check changed state: only its VIP is looked at again, so the
    /// cost of an event does not grow with the number of checks.
    fn on_check(
        &mut self,
        now: Duration,
        key: CheckKey,
        healthy: bool,
        why: String,
        out: &mut Vec<Effect>,
    ) {
        let Some(index) = self.vips.iter().position(|v| *v.config.name == *key.vip) else {
            return;
        };
        let vip = &mut self.vips[index];
        if let Some(b) = key.backend {
            vip.unproven_backend_checks.remove(&(b, key.index));
        }
        let failing = match key.backend {
            None => &mut vip.failing_checks,
            Some(b) => vip.failing_backend_checks.entry(b).or_default(),
        };
        if healthy {
            failing.remove(&key.index);
        } else {
            failing.insert(key.index);
        }
        self.settle_health(now, index, &why, Reason::Check, out);
    }

    /// The interface lost or regained its link: every VIP goes to fault
    /// (nothing it owns could be reached, and it cannot hear the other
    /// routers) or out of it. An elected VIP then starts as Backup, as after
    /// start-up, instead of coming back as a second Master.
    fn on_link(&mut self, now: Duration, up: bool, out: &mut Vec<Effect>) {
        if up == self.link_up {
            return;
        }
        self.link_up = up;
        let why = if up {
            tracing::info!(interface = %self.config.interface, "the interface has a link again");
            format!("interface {} has a link again", self.config.interface)
        } else {
            tracing::warn!(interface = %self.config.interface, "the interface lost its link (down or no carrier): every VIP goes to fault");
            format!(
                "interface {} lost its link (down or no carrier)",
                self.config.interface
            )
        };
        for index in 0..self.vips.len() {
            self.settle_health(now, index, &why, Reason::Link, out);
        }
    }

    /// Acts on a VIP's failing checks and the link: a VIP in fault gives its
    /// address up, a VIP that recovers may own again, a failing weighted
    /// check lowers the VRRP priority, a backend whose check fails takes no
    /// new flows.
    fn settle_health(
        &mut self,
        now: Duration,
        index: usize,
        why: &str,
        reason: Reason,
        out: &mut Vec<Effect>,
    ) {
        let lease = self.config.lease();
        let why = if self.link_up {
            why.to_string()
        } else {
            format!("interface {} has no link", self.config.interface)
        };
        let vip = &mut self.vips[index];
        let mut fault = !self.link_up;
        // keepalived's meaning: a positive weight counts while its check
        // passes, a negative one while it fails. Unproven checks fail.
        let mut change: i16 = 0;
        for (i, check) in vip.config.checks.iter().enumerate() {
            let failing = vip.failing_checks.contains(&i);
            match check.weight {
                None if failing => fault = true,
                Some(w) if (w > 0) != failing => {
                    // Weights are within ±253 and a VIP has few checks; the
                    // machine clamps the sum into 1..=254.
                    change = change.saturating_add(w.clamp(-253, 253) as i16);
                }
                _ => {}
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
            publish_effects(vip, out, lease);
        }
        if vip.route() {
            let changed = fault != vip.fault;
            vip.fault = fault;
            self.reconcile_route(now, index, changed.then_some(why.as_str()), reason, out);
            return;
        }
        if fault == vip.fault && change == vip.priority_change {
            return;
        }
        vip.fault = fault;
        vip.priority_change = change;
        if vip.election.is_some() {
            let cause = match (fault, change) {
                (true, _) | (false, 0) => why,
                (false, c) if c < 0 => format!("{why}; priority lowered by {}", -c),
                (false, c) => format!("{why}; priority raised by {c}"),
            };
            let event = Event::Health {
                fault,
                priority_change: change,
            };
            self.vrrp_event(now, index, event, cause, out);
        } else {
            vip.reason = if fault {
                format!("fault: {why}")
            } else {
                format!("healthy: {why}")
            };
            self.reconcile_operator_vip(index, (now, reason), out);
            self.log_transition(index, out);
        }
    }

    // --- VRRP ---

    fn on_advert(
        &mut self,
        now: Duration,
        from: IpAddr,
        advert: Advertisement,
        out: &mut Vec<Effect>,
    ) {
        // An IPv4 and an IPv6 virtual router may share a VRID.
        let Some(index) = self
            .vips
            .iter()
            .position(|v| v.vrid() == Some(advert.vrid) && v.config.is_ipv6() == from.is_ipv6())
        else {
            self.count_reject(&Reject::UnknownVrid { vrid: advert.vrid });
            return;
        };
        let vip = &mut self.vips[index];
        if let Some(instance) = vip.election.as_mut() {
            instance.counters.adverts_received += 1;
            if advert.priority == 0 {
                instance.counters.priority_zero_received += 1;
            }
            // Where a takeover would begin, as the Backup's timer sees it:
            // a priority 0 starts Skew_Time, an advertisement the machine
            // accepts restarts Master_Down_Timer, and one a preempting
            // Backup ignores leaves the timer running.
            if instance.machine.state() == crate::vrrp::State::Backup {
                let ours = instance.machine.effective_priority();
                let preempt = instance.machine.config().preempt;
                vip.election_began = Some(if advert.priority == 0 {
                    (now, Reason::Shutdown)
                } else if !preempt || advert.priority >= ours {
                    (now, Reason::MasterNoResponse)
                } else {
                    let since = vip.election_began.map_or(now, |(t, _)| t);
                    (since, Reason::Preempted)
                });
            }
        }
        let cause = format!(
            "advertisement from {from} with priority {}",
            advert.priority
        );
        self.vrrp_event(
            now,
            index,
            Event::AdvertReceived { from, advert },
            cause,
            out,
        );
    }

    fn on_timers(&mut self, now: Duration, out: &mut Vec<Effect>) {
        for index in 0..self.vips.len() {
            let due = self.vips[index]
                .election
                .as_ref()
                .and_then(|i| i.machine.next_deadline())
                .is_some_and(|d| d <= now);
            if due {
                self.vrrp_event(
                    now,
                    index,
                    Event::Timer,
                    "Master_Down_Timer ran out".into(),
                    out,
                );
            }
        }
    }

    fn count_reject(&mut self, reject: &Reject) {
        tracing::debug!("VRRP advertisement not acted on: {reject}");
        *self.rejected.entry(reject.as_str()).or_default() += 1;
    }

    /// Feeds one event to a VIP's state machine and turns its actions into
    /// effects. `cause` says why, for logs and `lbfo status`.
    fn vrrp_event(
        &mut self,
        now: Duration,
        index: usize,
        event: Event,
        cause: String,
        out: &mut Vec<Effect>,
    ) {
        let Some(instance) = self.vips[index].election.as_mut() else {
            return;
        };
        let mut actions = instance.machine.handle(now, event);
        // Taking over comes before the first advertisement: the old Master
        // of a graceful handover lets go when it hears us, and by then our
        // address, map entry and gratuitous ARP are already out.
        actions.sort_by_key(|a| !matches!(a, Action::BecomeMaster));
        for action in actions {
            self.vrrp_action(now, index, action, &cause, out);
        }
        self.log_transition(index, out);
    }

    fn vrrp_action(
        &mut self,
        now: Duration,
        index: usize,
        action: Action,
        cause: &str,
        out: &mut Vec<Effect>,
    ) {
        let garp = self.config.garp;
        let stopping = self.handover.is_some();
        let link_up = self.link_up;
        let vip = &mut self.vips[index];
        let Some(instance) = vip.election.as_mut() else {
            return;
        };
        match action {
            Action::SendAdvert(advert) => {
                if link_up {
                    instance.counters.adverts_sent += 1;
                    if advert.priority == 0 {
                        instance.counters.priority_zero_sent += 1;
                    }
                    out.push(Effect::SendAdvert {
                        source: instance.source(),
                        advert,
                        unicast_peers: instance.unicast_peers.clone(),
                    });
                } else {
                    tracing::debug!(vip = %vip.config.name, "VRRP advertisement not sent: the interface has no link");
                }
                if vip.owned {
                    let lease = Some(instance.machine.master_down_interval());
                    out.push(Effect::Write {
                        addresses: vip.config.addresses.clone(),
                        entry: vip.entry(),
                        lease,
                    });
                }
            }
            Action::BecomeMaster => {
                instance.counters.became_master += 1;
                let lease = instance.machine.master_down_interval();
                let owner =
                    instance.machine.effective_priority() == crate::vrrp::machine::OWNER_PRIORITY;
                let began = vip.election_began.take().unwrap_or(if owner {
                    (now, Reason::Priority)
                } else {
                    (now, Reason::MasterNoResponse)
                });
                vip.reason = format!("master: {cause}");
                take(vip, lease, garp, began, out);
            }
            Action::Stop if stopping && vip.owned => {
                vip.reason = "handing over: shutting down".into();
            }
            Action::BecomeBackup | Action::EnterFault | Action::Stop => {
                vip.election_began =
                    (action == Action::BecomeBackup).then_some((now, Reason::MasterNoResponse));
                vip.reason = format!("{}: {cause}", instance.machine.state().as_str());
                if vip.owned {
                    release(vip, out);
                }
            }
            Action::SendGratuitousArp => {
                if vip.owned {
                    tracing::info!(vip = %vip.config.name, "another node acted as Master ({cause}); re-announcing with gratuitous ARP");
                    out.push(Effect::Announce {
                        addresses: vip.config.addresses.clone(),
                        garp,
                    });
                }
            }
            Action::Discard(reject) => self.count_reject(&reject),
        }
    }

    /// Logs a VIP's phase change once, with the reason, and runs its notify
    /// script.
    fn log_transition(&mut self, index: usize, out: &mut Vec<Effect>) {
        let vip = &mut self.vips[index];
        let phase = vip.phase();
        if phase == vip.logged {
            return;
        }
        if vip.pending_failover.is_some() && vip.owned {
            // A takeover: logged once it is done, with how long it took.
            vip.unlogged_takeover = Some((vip.logged, phase));
        } else {
            tracing::info!(
                vip = %vip.config.name,
                address = %vip.config.addresses_text(),
                "{} -> {phase}: {} (XDP {})",
                vip.logged,
                vip.reason,
                if vip.owned { "answering" } else { "silent" },
            );
        }
        if let Some(script) = &vip.config.notify {
            out.push(Effect::Notify {
                script: script.clone(),
                args: vec![
                    vip.config.name.clone(),
                    vip.logged.to_string(),
                    phase.to_string(),
                ],
            });
        }
        let stopping = self.handover.is_some();
        if let Some(command) = state_notify(&vip.config, vip.logged, phase, stopping) {
            out.push(Effect::Notify {
                script: PathBuf::from(&command[0]),
                args: command[1..].to_vec(),
            });
        }
        vip.logged = phase;
    }

    fn on_take_failed(&mut self, address: IpAddr, error: &str) {
        let Some(vip) = self
            .vips
            .iter_mut()
            .find(|v| v.config.address().addr == address)
        else {
            return;
        };
        tracing::error!(vip = %vip.config.name, "cannot take the VIP: {error}");
        vip.pending_failover = None;
        // The takeover did not happen: the phase it left is the one logged.
        if let Some((from, _)) = vip.unlogged_takeover.take() {
            vip.logged = from;
        }
        vip.owned = false;
        vip.operator_wants = false;
        vip.reason = format!("cannot take the VIP: {error}");
    }

    fn on_took_over(&mut self, address: IpAddr, took: Duration) {
        let Some(vip) = self
            .vips
            .iter_mut()
            .find(|v| v.config.address().addr == address)
        else {
            return;
        };
        let Some((_, reason)) = vip.pending_failover.take() else {
            return;
        };
        let (from, to) = vip
            .unlogged_takeover
            .take()
            .unwrap_or((vip.logged, vip.logged));
        tracing::info!(
            vip = %vip.config.name,
            address = %vip.config.addresses_text(),
            reason = reason.as_str(),
            took_ms = took.as_secs_f64() * 1000.0,
            "{from} -> {to}: {} (XDP answering, first announcement out {:.1} ms after the takeover began)",
            vip.reason,
            took.as_secs_f64() * 1000.0,
        );
        vip.last_failover = Some((reason, took));
    }

    // --- balancing ---

    /// Takes backend MACs from a neighbour table snapshot, asks for the ones
    /// still unknown and republishes tables that changed.
    fn on_neighbours(
        &mut self,
        now: Duration,
        macs: &HashMap<IpAddr, [u8; 6]>,
        out: &mut Vec<Effect>,
    ) {
        let lease = self.config.lease();
        let mut unresolved = Vec::new();
        for vip in &mut self.vips {
            let Some(balance) = vip.balance.as_mut() else {
                continue;
            };
            let changed = balance.learn_macs(macs);
            unresolved.extend(balance.unresolved());
            if changed {
                publish_effects(vip, out, lease);
            }
        }
        self.reconcile_routes(now, out);
        unresolved.sort_unstable();
        unresolved.dedup();
        if !unresolved.is_empty() {
            out.push(Effect::Solicit(unresolved));
        }
    }

    // --- reload ---

    /// Applies a checked [`Plan`]: the VIPs that go step down and leave the
    /// map, the ones that stay take their new settings (and backends), the
    /// new ones start as at start-up. Nothing here can fail.
    fn reload(
        &mut self,
        now: Duration,
        plan: Plan,
        healthy: &HashSet<CheckKey>,
        out: &mut Vec<Effect>,
    ) {
        let summary = plan.summary();
        let Plan {
            config,
            sources,
            going,
            staying,
            coming,
            backend_ids,
        } = plan;
        for &index in going.iter().rev() {
            self.vrrp_event(now, index, Event::Shutdown, "removed by reload".into(), out);
            let mut vip = self.vips.remove(index);
            if vip.owned {
                release(&mut vip, out);
            }
            if let Some(balance) = &vip.balance {
                out.push(Effect::ClearBackends(
                    balance.backends.iter().map(|b| b.id).collect(),
                ));
            }
            out.push(Effect::Forget {
                addresses: vip.config.addresses.clone(),
            });
            tracing::info!(vip = %vip.config.name, "removed by reload");
        }
        self.config = config;
        self.sources = sources;
        self.backend_ids = backend_ids;
        let lease = self.config.lease();
        for stay in staying {
            let vip = self
                .vips
                .iter_mut()
                .find(|v| v.config.name == stay.config.name)
                .expect("staying VIPs are still there");
            // Backend checks that stay keep what they proved; new ones start unproven.
            let before: HashSet<(IpAddr, usize)> = vip::backend_check_keys(&vip.config).collect();
            vip.unproven_backend_checks = vip::backend_check_keys(&stay.config)
                .filter(|k| !before.contains(k) || vip.unproven_backend_checks.contains(k))
                .filter(|(b, i)| {
                    !healthy.contains(&CheckKey {
                        vip: stay.config.name.as_str().into(),
                        backend: Some(*b),
                        index: *i,
                    })
                })
                .collect();
            vip.config = stay.config;
            if let Some((balance, gone)) = stay.backends {
                vip.balance = Some(balance);
                if !gone.is_empty() {
                    out.push(Effect::ClearBackends(gone));
                }
                publish_effects(vip, out, lease);
            }
        }
        for mut vip in coming {
            out.push(Effect::ResetCounters { vip_id: vip.id });
            if vip.balance.is_some() {
                publish_effects(&mut vip, out, lease);
            } else {
                out.push(Effect::Write {
                    addresses: vip.config.addresses.clone(),
                    entry: vip.entry(),
                    lease: None,
                });
            }
            tracing::info!(vip = %vip.config.name, "added by reload");
            self.vips.push(vip);
            let index = self.vips.len() - 1;
            self.vrrp_event(now, index, Event::Startup, "startup".into(), out);
        }
        self.apply_health(now, healthy, "reloaded", out);
        self.reconcile_routes(now, out);
        tracing::info!("reload applied: {summary}");
    }

    // --- shutdown ---

    /// Steps down from every election: a Master sends priority 0 so a Backup
    /// takes over after Skew_Time, but keeps answering until the successor's
    /// advertisement arrives, or at most one advertisement interval (a
    /// Backup's Skew_Time is shorter) plus [`HANDOVER_MARGIN`]. Then every
    /// VIP is released and the node is [`Effect::Stopped`].
    fn shutdown(&mut self, now: Duration, out: &mut Vec<Effect>) {
        let masters: Vec<&Vip> = self
            .vips
            .iter()
            .filter(|v| v.phase() == Phase::Master)
            .collect();
        let wait = masters
            .iter()
            .filter_map(|v| v.election.as_ref())
            .map(|e| e.machine.config().advert_interval)
            .max()
            .map(|interval| interval + HANDOVER_MARGIN);
        self.handover = Some(Handover {
            pending: masters.iter().filter_map(|v| v.vrid()).collect(),
            deadline: now + wait.unwrap_or_default(),
        });
        for index in 0..self.vips.len() {
            self.vrrp_event(now, index, Event::Shutdown, "shutting down".into(), out);
        }
        self.finish_handover(now, out);
    }

    /// A stopping node only listens for its successors.
    fn while_stopping(&mut self, now: Duration, input: Input, out: &mut Vec<Effect>) {
        match input {
            Input::Advert { from, advert } if advert.priority > 0 => {
                let handover = self.handover.as_mut().expect("stopping");
                if let Some(at) = handover.pending.iter().position(|v| *v == advert.vrid) {
                    handover.pending.swap_remove(at);
                    tracing::info!(vrid = advert.vrid, "{from} has taken over; releasing");
                    if let Some(vip) = self.vips.iter_mut().find(|v| v.vrid() == Some(advert.vrid))
                    {
                        vip.reason = format!("stopped: {from} has taken over");
                        release(vip, out);
                    }
                }
            }
            Input::Timer => {}
            Input::Reload { .. } | Input::Own(_) | Input::Release(_) | Input::Drain { .. } => {
                out.push(Effect::Reply(error("lbfo is shutting down".into())))
            }
            _ => return,
        }
        self.finish_handover(now, out);
    }

    fn finish_handover(&mut self, now: Duration, out: &mut Vec<Effect>) {
        let handover = self.handover.as_ref().expect("stopping");
        if !handover.pending.is_empty() && now < handover.deadline {
            return;
        }
        for vrid in &handover.pending {
            tracing::info!(vrid, "no successor advertised in time; releasing anyway");
        }
        for index in 0..self.vips.len() {
            let vip = &mut self.vips[index];
            if vip.owned {
                vip.reason = "stopped: shutting down".into();
                release(vip, out);
            }
            self.log_transition(index, out);
        }
        out.push(Effect::Stopped);
        self.stopped = true;
    }
}

/// The per-state notify command (`notify_master` and its siblings) a change
/// from `old` to `new` runs, if the VIP has one. Serving phases run
/// `notify_master`; giving the VIP up runs `notify_backup`, or `notify_stop`
/// while the daemon stops; a start (from Initialize) into a phase that does
/// not serve runs `notify_backup` too, so a script always learns the state.
fn state_notify(
    config: &VipConfig,
    old: Phase,
    new: Phase,
    stopping: bool,
) -> Option<&Vec<String>> {
    match new {
        Phase::Master | Phase::Owner | Phase::Announced => config.notify_master.as_ref(),
        Phase::Fault => config.notify_fault.as_ref(),
        _ if stopping => config.notify_stop.as_ref(),
        Phase::Backup | Phase::Standby | Phase::Withdrawn => config.notify_backup.as_ref(),
        Phase::Initialize if old != Phase::Initialize => config.notify_stop.as_ref(),
        Phase::Initialize => None,
    }
}

fn error(message: String) -> Response {
    Response::Error { message }
}

/// This node takes the VIP (see [`Effect::Take`]), for `reason`, in a
/// failover that began at `began`.
fn take(
    vip: &mut Vip,
    lease: Duration,
    garp: GarpConfig,
    (began, reason): (Duration, Reason),
    out: &mut Vec<Effect>,
) {
    vip.owned = true;
    *vip.transitions.entry(reason).or_default() += 1;
    vip.pending_failover = Some((began, reason));
    out.push(Effect::Take {
        addresses: vip.config.addresses.clone(),
        entry: vip.entry(),
        lease,
        garp,
        failover: Failover {
            vip: vip.config.name.clone(),
            began,
            reason,
        },
    });
}

/// This node gives the VIP up (see [`Effect::Release`]).
fn release(vip: &mut Vip, out: &mut Vec<Effect>) {
    vip.owned = false;
    out.push(Effect::Release {
        addresses: vip.config.addresses.clone(),
        entry: vip.entry(),
    });
}

/// A balanced VIP's next table, then its entry flipped to it (an owned
/// VIP's lease renewed: `operator_lease` is `lease_ms`, elected VIPs use
/// their own).
fn publish_effects(vip: &mut Vip, out: &mut Vec<Effect>, operator_lease: Duration) {
    let Some(balance) = vip.balance.as_mut() else {
        return;
    };
    let update = balance.next_table();
    let taking: Vec<String> = balance
        .backends
        .iter()
        .filter(|b| b.accepts_new_flows())
        .map(|b| b.address.to_string())
        .collect();
    tracing::info!(vip = %vip.config.name, "new flows now go to [{}]", taking.join(", "));
    out.push(Effect::PublishTable(Box::new(update)));
    let lease = vip.owned.then(|| vip.lease(operator_lease));
    out.push(Effect::Write {
        addresses: vip.config.addresses.clone(),
        entry: vip.entry(),
        lease,
    });
}
