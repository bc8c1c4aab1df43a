//! One configured VIP as the core sees it: what it is, who wants it, what its
//! checks say, and whether this node owns it. No I/O: the map entry it asks
//! for is a [`MapEntry`], written by the executor.

use std::{
    collections::{BTreeSet, HashMap},
    fmt,
    net::IpAddr,
    sync::Arc,
    time::Duration,
};

use lbfo_common::VipMode;

use super::PlanError;

use crate::{
    balance::{BackendIds, BalancedVip},
    config::{Announce, Config, VipConfig, VipServeMode},
    health::CheckConfig,
    vrrp::{Instance, Sources, State},
};

/// Where a VIP stands, as logs, notify scripts and `lbfo status` name it.
/// Elected VIPs follow their VRRP machine; the others are owned while an
/// operator wants them and nothing is failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Elected, not started yet (or stopped).
    Initialize,
    /// Elected, another router is Master.
    Backup,
    /// Elected, this node is Master.
    Master,
    /// A check without weight fails, or the interface has no link.
    Fault,
    /// Not elected, the operator has not said `lbfo own`.
    Standby,
    /// Not elected, owned on the operator's word.
    Owner,
    /// A route VIP this node announces (its address is on the route device).
    Announced,
    /// A route VIP this node does not announce, for a reason other than a
    /// failing check (see the VIP's reason).
    Withdrawn,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Initialize => "initialize",
            Phase::Backup => "backup",
            Phase::Master => "master",
            Phase::Fault => "fault",
            Phase::Standby => "standby",
            Phase::Owner => "owner",
            Phase::Announced => "announced",
            Phase::Withdrawn => "withdrawn",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a route VIP is not announced on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAnnounced {
    /// A check without weight fails, or the interface has no link.
    Fault,
    /// Its table is not yet the one every node builds ([`Vip::route_blocker`]).
    WaitingForBackends,
    /// Putting the address on the route device failed (tried again at the
    /// next lease renewal), or the daemon is stopping.
    Failed,
}

impl NotAnnounced {
    pub const ALL: [NotAnnounced; 3] = [
        NotAnnounced::Fault,
        NotAnnounced::WaitingForBackends,
        NotAnnounced::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NotAnnounced::Fault => "fault",
            NotAnnounced::WaitingForBackends => "waiting_for_backends",
            NotAnnounced::Failed => "failed",
        }
    }
}

/// Which check, typed: the VIP's own `[[vip.check]]` number `index`, or
/// that of one of its backends. Its text form (`web/check/0`,
/// `web/backend/192.0.2.21/check/0`) is the check's id in logs and status.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CheckKey {
    pub vip: Arc<str>,
    pub backend: Option<IpAddr>,
    pub index: usize,
}

impl fmt::Display for CheckKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.backend {
            None => write!(f, "{}/check/{}", self.vip, self.index),
            Some(b) => write!(f, "{}/backend/{b}/check/{}", self.vip, self.index),
        }
    }
}

/// Every check of a configuration, the VIPs' and their backends', in
/// config order.
pub fn all_checks(config: &Config) -> Vec<(CheckKey, CheckConfig)> {
    let mut checks = Vec::new();
    for vip in &config.vips {
        let name: Arc<str> = vip.name.as_str().into();
        let key = |backend, index| CheckKey {
            vip: name.clone(),
            backend,
            index,
        };
        checks.extend(
            vip.checks
                .iter()
                .enumerate()
                .map(|(i, c)| (key(None, i), c.clone())),
        );
        for backend in &vip.backends {
            checks.extend(
                backend
                    .checks
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (key(Some(backend.address), i), c.clone())),
            );
        }
    }
    checks
}

/// Every backend check of a VIP, as (backend, check index).
pub fn backend_check_keys(config: &VipConfig) -> impl Iterator<Item = (IpAddr, usize)> + '_ {
    config
        .backends
        .iter()
        .flat_map(|b| (0..b.checks.len()).map(|i| (b.address, i)))
}

/// The VIP's entry in the XDP map, less what only the executor knows (this
/// node's MAC and the lease deadline on the kernel's clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapEntry {
    pub vip_id: u32,
    pub owned: bool,
    pub mode: VipMode,
    pub table_slot: u16,
    pub table_generation: u8,
    /// A route VIP: XDP answers no ARP for it, and its address goes on the
    /// route device instead of the interface.
    pub route: bool,
}

/// One VIP at run time.
#[derive(Debug, Clone)]
pub struct Vip {
    pub config: VipConfig,
    /// Slot in the per-VIP counters, 1..=MAX_VIPS.
    pub id: u32,
    /// Balanced VIPs: backends and Maglev table.
    pub balance: Option<BalancedVip>,
    /// The VRRP election, for VIPs with a `vrid`.
    pub election: Option<Instance>,
    /// Operator-owned VIPs: `lbfo own` was said (and not taken back).
    pub operator_wants: bool,
    /// This node answers for the VIP (as far as the core has asked).
    pub owned: bool,
    /// A check without weight is not healthy, or the link is down.
    pub fault: bool,
    /// What weighted checks add to the VRRP priority: passing positive
    /// weights less failing negative ones.
    pub priority_change: i16,
    /// Indexes of the VIP's checks that are not healthy (unproven ones count).
    pub failing_checks: BTreeSet<usize>,
    /// The same for each backend's checks.
    pub failing_backend_checks: HashMap<IpAddr, BTreeSet<usize>>,
    /// Backend checks that have not reported a state since they started:
    /// a balanced route VIP waits for them (see [`Vip::route_blocker`]).
    pub unproven_backend_checks: BTreeSet<(IpAddr, usize)>,
    /// Why the VIP is where it is, for logs and `lbfo status`.
    pub reason: String,
    /// The phase last logged (and passed to the notify script).
    pub logged: Phase,
    /// Takeovers by this node, by reason.
    pub transitions: std::collections::BTreeMap<super::Reason, u64>,
    /// The last takeover, when it was done: why, and how long it took.
    pub last_failover: Option<(super::Reason, Duration)>,
    /// A takeover asked of the executor and not reported done yet.
    pub pending_failover: Option<(Duration, super::Reason)>,
    /// Elected VIPs: when a takeover would have begun, and why.
    pub election_began: Option<(Duration, super::Reason)>,
    /// The phases of a takeover whose log line waits for its duration.
    pub unlogged_takeover: Option<(Phase, Phase)>,
}

impl Vip {
    /// A VIP as it starts: not owned, on standby or about to start its
    /// election. Takes a backend id for each backend from `ids`.
    pub fn new(
        config: &VipConfig,
        id: u32,
        table_slot: Option<u16>,
        ids: &mut BackendIds,
        sources: Sources,
    ) -> Result<Vip, PlanError> {
        debug_assert_eq!(table_slot.is_some(), config.mode == VipServeMode::Balance);
        let balance = match table_slot {
            Some(slot) => Some(BalancedVip::new(slot, &config.backends, ids).map_err(|_| {
                PlanError::NoBackendId {
                    vip: config.name.clone(),
                    capacity: ids.limit(),
                }
            })?),
            None => None,
        };
        Ok(Vip {
            config: config.clone(),
            id,
            balance,
            election: Instance::new(config, sources).map_err(PlanError::Vip)?,
            operator_wants: false,
            owned: false,
            fault: false,
            priority_change: 0,
            failing_checks: BTreeSet::new(),
            failing_backend_checks: HashMap::new(),
            unproven_backend_checks: backend_check_keys(config).collect(),
            reason: if config.vrrp.vrid.is_some() {
                "starting the election".into()
            } else if config.announce == Announce::Route {
                "not announced: starting".into()
            } else {
                "standby: waiting for `lbfo own`".into()
            },
            logged: Phase::Initialize,
            transitions: Default::default(),
            last_failover: None,
            pending_failover: None,
            election_began: None,
            unlogged_takeover: None,
        })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn phase(&self) -> Phase {
        match &self.election {
            Some(instance) => match instance.machine.state() {
                State::Initialize => Phase::Initialize,
                State::Backup => Phase::Backup,
                State::Master => Phase::Master,
                State::Fault => Phase::Fault,
            },
            None if self.fault => Phase::Fault,
            None if self.route() && self.owned => Phase::Announced,
            None if self.route() => Phase::Withdrawn,
            None if self.owned => Phase::Owner,
            None => Phase::Standby,
        }
    }

    pub fn entry(&self) -> MapEntry {
        MapEntry {
            vip_id: self.id,
            owned: self.owned,
            mode: if self.balance.is_some() {
                VipMode::Balance
            } else {
                VipMode::Local
            },
            table_slot: self.balance.as_ref().map_or(0, |b| b.table_slot),
            table_generation: self.balance.as_ref().map_or(0, |b| b.generation),
            route: self.route(),
        }
    }

    /// A route VIP that this node does not announce: why. `None` for an
    /// announced route VIP and for ARP VIPs.
    pub fn not_announced(&self) -> Option<NotAnnounced> {
        if !self.route() || self.owned {
            None
        } else if self.fault {
            Some(NotAnnounced::Fault)
        } else if self.route_blocker().is_some() {
            Some(NotAnnounced::WaitingForBackends)
        } else {
            Some(NotAnnounced::Failed)
        }
    }

    /// Announced over the routing daemon rather than by ARP.
    pub fn route(&self) -> bool {
        self.config.announce == Announce::Route
    }

    /// Why a route VIP whose checks pass must still not be announced, if
    /// anything: every node must build the same Maglev table, so that a
    /// flow the router moves here lands on the backend it had. A node that
    /// has not yet heard every backend check, or not learned the MAC of a
    /// backend that takes flows, would build a smaller one.
    pub fn route_blocker(&self) -> Option<String> {
        let balance = self.balance.as_ref()?;
        let mut unproven: Vec<String> = self
            .unproven_backend_checks
            .iter()
            .map(|(b, _)| b.to_string())
            .collect();
        unproven.dedup();
        if !unproven.is_empty() {
            return Some(format!(
                "waiting for the first result of the checks of backend(s) {}",
                unproven.join(", ")
            ));
        }
        let no_mac: Vec<String> = balance
            .backends
            .iter()
            .filter(|b| b.healthy && !b.drained && b.mac.is_none())
            .map(|b| b.address.to_string())
            .collect();
        (!no_mac.is_empty()).then(|| {
            format!(
                "waiting for the MAC of backend(s) {} (the table would differ from the other nodes')",
                no_mac.join(", ")
            )
        })
    }

    /// How long XDP answers after the last renewal: an elected Master's own
    /// Master_Down_Interval (no lower-priority Backup takes over sooner, so a
    /// Master whose daemon dies falls silent no later than the moment a
    /// Backup takes over), or the configured `lease_ms`.
    pub fn lease(&self, operator_lease: Duration) -> Duration {
        match &self.election {
            Some(instance) => instance.machine.master_down_interval(),
            None => operator_lease,
        }
    }

    pub fn vrid(&self) -> Option<u8> {
        self.election.as_ref().map(Instance::vrid)
    }
}
