//! One configured VIP as the core sees it: what it is, who wants it, what its
//! checks say, and whether this node owns it. No I/O: the map entry it asks
//! for is a [`MapEntry`], written by the executor.

use std::{
    collections::{BTreeSet, HashMap},
    fmt,
    net::Ipv4Addr,
    sync::Arc,
    time::Duration,
};

use lbfo_common::VipMode;

use super::PlanError;

use crate::{
    balance::{BackendIds, BalancedVip},
    config::{Config, VipConfig, VipServeMode},
    health::CheckConfig,
    vrrp::{Instance, State},
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
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which check, typed: the VIP's own `[[vip.check]]` number `index`, or
/// that of one of its backends. Its text form (`web/check/0`,
/// `web/backend/192.0.2.21/check/0`) is the check's id in logs and status.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CheckKey {
    pub vip: Arc<str>,
    pub backend: Option<Ipv4Addr>,
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

/// The VIP's entry in the XDP map, less what only the executor knows (this
/// node's MAC and the lease deadline on the kernel's clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapEntry {
    pub vip_id: u32,
    pub owned: bool,
    pub mode: VipMode,
    pub table_slot: u16,
    pub table_generation: u8,
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
    pub failing_backend_checks: HashMap<Ipv4Addr, BTreeSet<usize>>,
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
        primary: Ipv4Addr,
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
            election: Instance::new(config, primary).map_err(PlanError::Vip)?,
            operator_wants: false,
            owned: false,
            fault: false,
            priority_change: 0,
            failing_checks: BTreeSet::new(),
            failing_backend_checks: HashMap::new(),
            reason: if config.vrrp.vrid.is_some() {
                "starting the election".into()
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
        }
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
