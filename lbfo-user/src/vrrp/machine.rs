//! One virtual router's state machine (RFC 5798 section 6.4), plus lbfo's
//! Fault state for failed health checks.
//!
//! Pure: the daemon passes the current monotonic time into every call and
//! delivers [`Event::Timer`] at [`Machine::next_deadline`]; the machine
//! answers with [`Action`]s and never touches a socket or a clock.
//!
//! Where RFC 5798 is silent, lbfo follows keepalived: preempt_delay, the
//! immediate answer of a Master to a lower-priority advertisement, and
//! ignoring advertisements whose address list differs from ours.

use std::{net::IpAddr, time::Duration};

use super::packet::{Advertisement, Auth, MAX_ADDRESSES, MAX_ADVERT_INTERVAL_CS, Reject, Version};

/// The priority of the router that owns the virtual addresses: it takes
/// over at once on startup and always preempts.
pub const OWNER_PRIORITY: u8 = 255;
pub const MIN_ADVERT_INTERVAL: Duration = Duration::from_millis(10);
pub const MAX_ADVERT_INTERVAL: Duration = Duration::from_millis(10 * MAX_ADVERT_INTERVAL_CS as u64);
/// VRRPv2 carries whole seconds in one byte.
pub const MAX_ADVERT_INTERVAL_V2: Duration = Duration::from_secs(255);
const NANOS_PER_CENTISECOND: u64 = 10_000_000;

/// What one virtual router is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceConfig {
    pub vrid: u8,
    /// 1..=255; 255 only on the router that owns the addresses.
    pub priority: u8,
    /// 10 ms..=40.95 s, in whole centiseconds (the wire's resolution).
    pub advert_interval: Duration,
    /// Whether a higher-priority Backup takes over from a lower-priority
    /// Master. The owner (effective priority 255) always does.
    pub preempt: bool,
    /// How long a Backup with preemption keeps deferring to a lower-priority
    /// Master, counted from startup (or leaving Fault) and from the first
    /// lower-priority advertisement it hears.
    pub preempt_delay: Duration,
    /// Our address on the VRRP interface: the source of our advertisements
    /// and the tie-break between equal priorities.
    pub primary_address: IpAddr,
    /// The virtual addresses, in the order they are advertised.
    pub addresses: Vec<IpAddr>,
    /// The VRRP spoken; advertisements of the other version are ignored.
    pub version: Version,
    /// v2 only: what our advertisements carry and peers' must match.
    pub auth: Auth,
}

impl InstanceConfig {
    /// RFC 5798's defaults: priority 100, 1 s advertisements, preemption
    /// on without delay.
    pub fn new(vrid: u8, primary_address: IpAddr, addresses: Vec<IpAddr>) -> Self {
        Self {
            vrid,
            priority: 100,
            advert_interval: Duration::from_secs(1),
            preempt: true,
            preempt_delay: Duration::ZERO,
            primary_address,
            addresses,
            version: Version::V3,
            auth: Auth::None,
        }
    }

    fn validate(&self) -> Result<(), InvalidConfig> {
        validate_settings(self.vrid, self.priority, self.advert_interval, self.version)?;
        if self.version == Version::V3 && self.auth != Auth::None {
            return Err(InvalidConfig::AuthWithV3);
        }
        if self.addresses.is_empty() {
            return Err(InvalidConfig::NoAddresses);
        }
        let ipv6 = self.primary_address.is_ipv6();
        if let Some(other) = self.addresses.iter().find(|a| a.is_ipv6() != ipv6) {
            return Err(InvalidConfig::MixedFamilies(*other));
        }
        if ipv6 && self.version == Version::V2 {
            return Err(InvalidConfig::V2OverIpv6);
        }
        if self.addresses.len() > MAX_ADDRESSES {
            return Err(InvalidConfig::TooManyAddresses(self.addresses.len()));
        }
        let mut sorted = self.addresses.clone();
        sorted.sort_unstable();
        if let Some(pair) = sorted.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(InvalidConfig::DuplicateAddress(pair[0]));
        }
        Ok(())
    }
}

/// The rules for the values an operator chooses for a virtual router: the
/// VRID, the priority and the advertisement interval. [`Machine::new`]
/// applies them, and the config file is checked with them before the daemon
/// starts, so both refuse the same values with the same words.
pub fn validate_settings(
    vrid: u8,
    priority: u8,
    advert_interval: Duration,
    version: Version,
) -> Result<(), InvalidConfig> {
    if vrid == 0 {
        return Err(InvalidConfig::Vrid);
    }
    if priority == 0 {
        return Err(InvalidConfig::Priority);
    }
    if version == Version::V2 {
        let whole_seconds = advert_interval.subsec_nanos() == 0;
        if !whole_seconds
            || !(Duration::from_secs(1)..=MAX_ADVERT_INTERVAL_V2).contains(&advert_interval)
        {
            return Err(InvalidConfig::IntervalV2(advert_interval));
        }
        return Ok(());
    }
    if !(MIN_ADVERT_INTERVAL..=MAX_ADVERT_INTERVAL).contains(&advert_interval) {
        return Err(InvalidConfig::IntervalRange(advert_interval));
    }
    if !advert_interval
        .as_nanos()
        .is_multiple_of(u128::from(NANOS_PER_CENTISECOND))
    {
        return Err(InvalidConfig::IntervalResolution(advert_interval));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidConfig {
    #[error("vrid 0 is not valid; use 1..=255")]
    Vrid,
    #[error("priority 0 is reserved for a Master giving up; use 1..=255")]
    Priority,
    #[error("advert interval {0:?} is outside {MIN_ADVERT_INTERVAL:?}..={MAX_ADVERT_INTERVAL:?}")]
    IntervalRange(Duration),
    #[error("advert interval {0:?} is not a multiple of 10ms (advertisements carry centiseconds)")]
    IntervalResolution(Duration),
    #[error(
        "advert interval {0:?} is not whole seconds within 1s..=255s (VRRP version 2 carries seconds; use version 3 for shorter intervals)"
    )]
    IntervalV2(Duration),
    #[error("auth_pass needs VRRP version 2 (version 3 has no authentication)")]
    AuthWithV3,
    #[error("no virtual addresses")]
    NoAddresses,
    #[error("{0} virtual addresses; an advertisement carries at most 255")]
    TooManyAddresses(usize),
    #[error("virtual address {0} is listed twice")]
    DuplicateAddress(IpAddr),
    #[error(
        "virtual address {0} is not of the family advertisements go out in (one virtual router, one family)"
    )]
    MixedFamilies(IpAddr),
    #[error("VRRP version 2 is IPv4 only (RFC 3768); IPv6 virtual routers speak version 3")]
    V2OverIpv6,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Initialize,
    Backup,
    Master,
    /// A health check without weight failed: advertise nothing, own nothing.
    Fault,
}

impl State {
    /// A stable lowercase name for status output.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Initialize => "initialize",
            State::Backup => "backup",
            State::Master => "master",
            State::Fault => "fault",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Startup,
    Shutdown,
    /// The time from [`Machine::next_deadline`] has come. Early or spurious
    /// timers are ignored.
    Timer,
    /// A decoded advertisement for our VRID. `from` is the IP source, which
    /// is the sender's primary address. Our own advertisements must not come
    /// back here: one looped back after our priority changed would look
    /// like another Master.
    AdvertReceived {
        from: IpAddr,
        advert: Advertisement,
    },
    /// The health checks' current verdict, sent whenever it changes.
    Health {
        /// A check without weight is failing.
        fault: bool,
        /// Added to the configured priority: the weights of passing
        /// positive-weight checks less those of failing negative-weight ones.
        priority_change: i16,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this advertisement from the primary address to 224.0.0.18, TTL 255.
    SendAdvert(Advertisement),
    /// Take the addresses over: ownership, interface address, gratuitous ARP burst.
    BecomeMaster,
    /// Give the addresses up (map first, then interface address) if held.
    BecomeBackup,
    /// Give the addresses up if held; the instance is out until healthy.
    EnterFault,
    /// Give the addresses up if held; the instance is back in Initialize.
    Stop,
    /// Announce the addresses again while staying Master: another router
    /// believed it was Master, and clients may have learned its MAC.
    SendGratuitousArp,
    /// The advertisement was not acted on; count it under `reason.as_str()`.
    Discard(Reject),
}

/// The Master a Backup last heard, for status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerMaster {
    pub address: IpAddr,
    pub priority: u8,
}

#[derive(Debug, Clone)]
pub struct Machine {
    config: InstanceConfig,
    /// Our addresses sorted, so the comparison with a received list does not
    /// depend on the order a peer lists them in.
    sorted_addresses: Vec<IpAddr>,
    advert_interval_cs: u16,
    state: State,
    fault: bool,
    priority_change: i16,
    master_adver_interval_cs: u16,
    /// Adver_Timer in Master, Master_Down_Timer in Backup.
    deadline: Option<Duration>,
    /// Until this time a preempting Backup still defers to a lower-priority
    /// Master; `None` means the delay has not started.
    preempt_hold_until: Option<Duration>,
    master: Option<PeerMaster>,
}

impl Machine {
    pub fn new(config: InstanceConfig) -> Result<Self, InvalidConfig> {
        config.validate()?;
        let mut sorted_addresses = config.addresses.clone();
        sorted_addresses.sort_unstable();
        let advert_interval_cs = u16::try_from(config.advert_interval.as_millis() / 10)
            .map_err(|_| InvalidConfig::IntervalRange(config.advert_interval))?;
        Ok(Self {
            config,
            sorted_addresses,
            advert_interval_cs,
            state: State::Initialize,
            fault: false,
            priority_change: 0,
            master_adver_interval_cs: advert_interval_cs,
            deadline: None,
            preempt_hold_until: None,
            master: None,
        })
    }

    pub fn config(&self) -> &InstanceConfig {
        &self.config
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The configured priority changed by weighted checks, kept within
    /// 1..=254 (keepalived's rule): any change takes an owner below 255, and
    /// none takes anyone to 0, which would mean "giving up".
    pub fn effective_priority(&self) -> u8 {
        if self.priority_change == 0 {
            return self.config.priority;
        }
        let changed = i16::from(self.config.priority) + self.priority_change;
        changed.clamp(1, i16::from(OWNER_PRIORITY) - 1) as u8
    }

    /// The interval of the Master we follow (ours until we hear one).
    pub fn master_adver_interval(&self) -> Duration {
        centiseconds(self.master_adver_interval_cs)
    }

    /// Skew_Time = ((256 - Priority) * Master_Adver_Interval) / 256, exact to
    /// the nanosecond (truncated): higher priorities wait less, so they win
    /// the race to take over.
    /// In VRRPv2 (RFC 3768 section 6.1) it is `(256 - Priority) / 256`
    /// seconds, whatever the interval.
    pub fn skew_time(&self) -> Duration {
        let interval_cs = match self.config.version {
            Version::V2 => 100,
            Version::V3 => self.master_adver_interval_cs,
        };
        let interval_ns = u64::from(interval_cs) * NANOS_PER_CENTISECOND;
        let weight = 256 - u64::from(self.effective_priority());
        Duration::from_nanos(interval_ns * weight / 256)
    }

    /// Master_Down_Interval = 3 * Master_Adver_Interval + Skew_Time.
    pub fn master_down_interval(&self) -> Duration {
        3 * self.master_adver_interval() + self.skew_time()
    }

    /// The Master this Backup last heard from (including one it is about to
    /// preempt); `None` when Master, in Fault or not started.
    pub fn learned_master(&self) -> Option<PeerMaster> {
        self.master
    }

    /// When the daemon must deliver [`Event::Timer`].
    pub fn next_deadline(&self) -> Option<Duration> {
        self.deadline
    }

    /// Our advertisement at `priority`.
    pub fn advertisement(&self, priority: u8) -> Advertisement {
        Advertisement {
            version: self.config.version,
            vrid: self.config.vrid,
            priority,
            max_advert_interval_cs: self.advert_interval_cs,
            addresses: self.config.addresses.clone(),
            auth: self.config.auth,
        }
    }

    pub fn handle(&mut self, now: Duration, event: Event) -> Vec<Action> {
        match event {
            Event::Startup => self.startup(now),
            Event::Shutdown => self.shutdown(),
            Event::Timer => self.timer(now),
            Event::AdvertReceived { from, advert } => self.advert_received(now, from, advert),
            Event::Health {
                fault,
                priority_change,
            } => self.health(now, fault, priority_change),
        }
    }

    fn startup(&mut self, now: Duration) -> Vec<Action> {
        if self.state != State::Initialize {
            return Vec::new();
        }
        if self.fault {
            self.state = State::Fault;
            return vec![Action::EnterFault];
        }
        self.initialize(now)
    }

    /// RFC 5798 section 6.4.1, also the way back from Fault.
    fn initialize(&mut self, now: Duration) -> Vec<Action> {
        if self.effective_priority() == OWNER_PRIORITY {
            return self.become_master(now);
        }
        self.state = State::Backup;
        self.master = None;
        self.master_adver_interval_cs = self.advert_interval_cs;
        self.deadline = Some(now + self.master_down_interval());
        self.preempt_hold_until =
            (!self.config.preempt_delay.is_zero()).then(|| now + self.config.preempt_delay);
        vec![Action::BecomeBackup]
    }

    fn become_master(&mut self, now: Duration) -> Vec<Action> {
        self.state = State::Master;
        self.master = None;
        self.preempt_hold_until = None;
        self.deadline = Some(now + self.config.advert_interval);
        vec![
            Action::SendAdvert(self.advertisement(self.effective_priority())),
            Action::BecomeMaster,
        ]
    }

    fn shutdown(&mut self) -> Vec<Action> {
        let actions = match self.state {
            State::Initialize => return Vec::new(),
            // Priority 0 lets a Backup take over after Skew_Time instead of
            // a whole Master_Down_Interval.
            State::Master => vec![Action::SendAdvert(self.advertisement(0)), Action::Stop],
            State::Backup | State::Fault => vec![Action::Stop],
        };
        self.state = State::Initialize;
        self.deadline = None;
        self.master = None;
        actions
    }

    fn timer(&mut self, now: Duration) -> Vec<Action> {
        match self.deadline {
            Some(deadline) if deadline <= now => {}
            _ => return Vec::new(),
        }
        match self.state {
            State::Master => {
                self.deadline = Some(now + self.config.advert_interval);
                vec![Action::SendAdvert(
                    self.advertisement(self.effective_priority()),
                )]
            }
            State::Backup => self.become_master(now),
            State::Initialize | State::Fault => Vec::new(),
        }
    }

    fn health(&mut self, now: Duration, fault: bool, priority_change: i16) -> Vec<Action> {
        self.fault = fault;
        // A new priority is carried by the next advertisement and used by
        // the next Skew_Time; neither the RFC nor a peer needs more.
        self.priority_change = priority_change;
        match (self.state, fault) {
            (State::Master, true) => {
                let actions = vec![
                    Action::SendAdvert(self.advertisement(0)),
                    Action::EnterFault,
                ];
                self.enter_fault();
                actions
            }
            (State::Backup, true) => {
                self.enter_fault();
                vec![Action::EnterFault]
            }
            (State::Fault, false) => self.initialize(now),
            _ => Vec::new(),
        }
    }

    fn enter_fault(&mut self) {
        self.state = State::Fault;
        self.deadline = None;
        self.master = None;
    }

    fn advert_received(
        &mut self,
        now: Duration,
        from: IpAddr,
        advert: Advertisement,
    ) -> Vec<Action> {
        if advert.vrid != self.config.vrid {
            return vec![Action::Discard(Reject::UnknownVrid { vrid: advert.vrid })];
        }
        // `decode` already rejects 0; an advert built some other way must
        // not make Master_Down_Interval 0 either.
        if advert.max_advert_interval_cs == 0 {
            return vec![Action::Discard(Reject::ZeroInterval)];
        }
        if advert.version != self.config.version {
            return vec![Action::Discard(Reject::VersionMismatch {
                ours: self.config.version.number(),
                theirs: advert.version.number(),
            })];
        }
        if advert.auth != self.config.auth {
            let why = match (self.config.auth, advert.auth) {
                (Auth::Pass(_), Auth::None) => "no password",
                (Auth::None, _) => "a password where none is configured",
                _ => "wrong password",
            };
            return vec![Action::Discard(Reject::Auth { why })];
        }
        // RFC 3768 has no learning of the Master's interval: a different one
        // is a misconfiguration, and the packet is discarded.
        if self.config.version == Version::V2
            && advert.max_advert_interval_cs != self.advert_interval_cs
        {
            return vec![Action::Discard(Reject::IntervalMismatch {
                ours_cs: self.advert_interval_cs,
                theirs_cs: advert.max_advert_interval_cs,
            })];
        }
        if !self.same_addresses(&advert.addresses) {
            return vec![Action::Discard(Reject::AddressMismatch {
                seen: advert.addresses,
            })];
        }
        match self.state {
            State::Backup => {
                self.backup_received(now, from, &advert);
                Vec::new()
            }
            State::Master => self.master_received(now, from, &advert),
            State::Initialize | State::Fault => Vec::new(),
        }
    }

    fn same_addresses(&self, addresses: &[IpAddr]) -> bool {
        if addresses.len() != self.sorted_addresses.len() {
            return false;
        }
        let mut sorted = addresses.to_vec();
        sorted.sort_unstable();
        sorted == self.sorted_addresses
    }

    /// RFC 5798 section 6.4.2, with keepalived's preempt_delay.
    fn backup_received(&mut self, now: Duration, from: IpAddr, advert: &Advertisement) {
        self.master = Some(PeerMaster {
            address: from,
            priority: advert.priority,
        });
        if advert.priority == 0 {
            self.deadline = Some(now + self.skew_time());
            return;
        }
        let ours = self.effective_priority();
        let preempts = self.config.preempt || ours == OWNER_PRIORITY;
        let defer = !preempts || advert.priority >= ours || self.hold_preemption(now);
        if !defer {
            // Preempting: let Master_Down_Timer run out.
            return;
        }
        if advert.priority >= ours {
            self.preempt_hold_until = None;
        }
        self.master_adver_interval_cs = advert.max_advert_interval_cs;
        self.deadline = Some(now + self.master_down_interval());
    }

    /// Whether preempt_delay still holds off preempting a lower-priority
    /// Master; the first such Master starts the delay.
    fn hold_preemption(&mut self, now: Duration) -> bool {
        let delay = self.config.preempt_delay;
        if delay.is_zero() {
            return false;
        }
        match self.preempt_hold_until {
            None => {
                self.preempt_hold_until = Some(now + delay);
                true
            }
            Some(until) => now < until,
        }
    }

    /// RFC 5798 section 6.4.3, with an immediate answer to a lower priority.
    fn master_received(
        &mut self,
        now: Duration,
        from: IpAddr,
        advert: &Advertisement,
    ) -> Vec<Action> {
        let ours = self.effective_priority();
        if advert.priority == 0 {
            // Only a Master gives up, so this was a split brain too, and
            // Backups now wait only Skew_Time: tell them at once we are here.
            self.deadline = Some(now + self.config.advert_interval);
            return vec![
                Action::SendAdvert(self.advertisement(ours)),
                Action::SendGratuitousArp,
            ];
        }
        let theirs = (advert.priority, from);
        let mine = (ours, self.config.primary_address);
        if theirs > mine {
            self.state = State::Backup;
            self.master = Some(PeerMaster {
                address: from,
                priority: advert.priority,
            });
            self.master_adver_interval_cs = advert.max_advert_interval_cs;
            self.deadline = Some(now + self.master_down_interval());
            self.preempt_hold_until = None;
            // The winner may never have heard us (its advert reached us
            // first), so it does not know clients may have our MAC. One last
            // advert at our priority makes it answer with gratuitous ARP.
            vec![
                Action::BecomeBackup,
                Action::SendAdvert(self.advertisement(ours)),
            ]
        } else if theirs < mine {
            // Split brain: the other router believed it was Master and may
            // have drawn clients to its MAC. Assert ourselves now rather
            // than at the next interval; it steps down on hearing us.
            self.deadline = Some(now + self.config.advert_interval);
            vec![
                Action::SendAdvert(self.advertisement(ours)),
                Action::SendGratuitousArp,
            ]
        } else {
            // Our own priority and address: our own advertisement looped back.
            Vec::new()
        }
    }
}

fn centiseconds(cs: u16) -> Duration {
    Duration::from_millis(10 * u64::from(cs))
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use std::net::Ipv4Addr;

    use super::*;
    use crate::vrrp::packet::{VRRP_MULTICAST, VRRP_MULTICAST_V6, VRRP_TTL};

    const ME: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
    const LOWER_PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 5));
    const HIGHER_PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 20));
    const VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100));
    const VIP2: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 101));

    /// Master_Down_Interval and Skew_Time for a 1 s Master_Adver_Interval,
    /// worked out by hand from RFC 5798 section 6.1.
    const MDI_100: Duration = Duration::from_nanos(3_609_375_000); // 3 + 156/256 s
    const SKEW_100: Duration = Duration::from_nanos(609_375_000);
    const MDI_150: Duration = Duration::from_nanos(3_414_062_500); // 3 + 106/256 s
    const MDI_200: Duration = Duration::from_nanos(3_218_750_000); // 3 + 56/256 s

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    fn secs(seconds: u64) -> Duration {
        Duration::from_secs(seconds)
    }

    fn config(priority: u8) -> InstanceConfig {
        InstanceConfig {
            priority,
            ..InstanceConfig::new(51, ME, vec![VIP])
        }
    }

    fn machine(config: InstanceConfig) -> Machine {
        Machine::new(config.clone())
            .unwrap_or_else(|e| panic!("{config:?} should be valid, got: {e}"))
    }

    fn expect(machine: &mut Machine, now: Duration, event: Event, expected: &[Action]) {
        let what = format!("{event:?} at {now:?} in {:?}", machine.state());
        let actions = machine.handle(now, event);
        assert_eq!(
            actions, expected,
            "{what}: expected {expected:?}, got {actions:?}"
        );
    }

    fn expect_state(machine: &Machine, state: State, deadline: Option<Duration>) {
        assert_eq!(machine.state(), state, "expected state {state:?}");
        assert_eq!(
            machine.next_deadline(),
            deadline,
            "in {state:?}, expected next deadline {deadline:?}"
        );
    }

    /// Started at 0 as a Backup.
    fn backup(config: InstanceConfig) -> Machine {
        let mut m = machine(config);
        expect(
            &mut m,
            Duration::ZERO,
            Event::Startup,
            &[Action::BecomeBackup],
        );
        m
    }

    /// Started at 0 and Master by the Master_Down_Timer; also returns when.
    fn master(config: InstanceConfig) -> (Machine, Duration) {
        let mut m = backup(config);
        let now = m
            .next_deadline()
            .unwrap_or_else(|| panic!("a Backup must have a Master_Down_Timer"));
        let priority = m.effective_priority();
        expect(
            &mut m,
            now,
            Event::Timer,
            &[send(priority), Action::BecomeMaster],
        );
        (m, now)
    }

    /// A peer's advertisement for our VRID and address, 1 s interval.
    fn advert(priority: u8) -> Advertisement {
        Advertisement {
            version: Version::V3,
            auth: Auth::None,
            vrid: 51,
            priority,
            max_advert_interval_cs: 100,
            addresses: vec![VIP],
        }
    }

    fn received(from: IpAddr, advert: Advertisement) -> Event {
        Event::AdvertReceived { from, advert }
    }

    /// Health with failing negative weights adding up to `penalty`.
    fn health(fault: bool, penalty: u8) -> Event {
        Event::Health {
            fault,
            priority_change: -i16::from(penalty),
        }
    }

    /// Our own advertisement at `priority` (same shape as [`advert`]).
    fn send(priority: u8) -> Action {
        Action::SendAdvert(advert(priority))
    }

    #[test]
    fn owner_becomes_master_at_startup() {
        let mut m = machine(config(255));
        expect(
            &mut m,
            secs(7),
            Event::Startup,
            &[send(255), Action::BecomeMaster],
        );
        expect_state(&m, State::Master, Some(secs(8)));
        assert_eq!(m.learned_master(), None, "a Master follows nobody");
    }

    #[test]
    fn non_owner_starts_as_backup_for_master_down_interval() {
        let mut m = machine(config(100));
        expect(&mut m, secs(5), Event::Startup, &[Action::BecomeBackup]);
        expect_state(&m, State::Backup, Some(secs(5) + MDI_100));
        expect(&mut m, secs(6), Event::Startup, &[]);
    }

    #[test]
    fn backup_becomes_master_when_no_advert_comes() {
        let mut m = backup(config(100));
        let one_ns = Duration::from_nanos(1);
        expect(&mut m, MDI_100 - one_ns, Event::Timer, &[]);
        expect_state(&m, State::Backup, Some(MDI_100));
        expect(
            &mut m,
            MDI_100,
            Event::Timer,
            &[send(100), Action::BecomeMaster],
        );
        expect_state(&m, State::Master, Some(MDI_100 + secs(1)));
    }

    #[test]
    fn master_advertises_every_interval_from_when_it_sent() {
        let mut m = machine(config(255));
        expect(
            &mut m,
            Duration::ZERO,
            Event::Startup,
            &[send(255), Action::BecomeMaster],
        );
        expect(&mut m, ms(999), Event::Timer, &[]);
        for second in 1..=3 {
            expect(&mut m, secs(second), Event::Timer, &[send(255)]);
            expect_state(&m, State::Master, Some(secs(second + 1)));
        }
        // A late timer (the daemon was busy) counts the next interval from
        // the advertisement actually sent, not from the missed deadline.
        expect(&mut m, ms(4_500), Event::Timer, &[send(255)]);
        expect_state(&m, State::Master, Some(ms(5_500)));
    }

    #[test]
    fn timers_outside_backup_and_master_do_nothing() {
        let mut m = machine(config(100));
        expect(&mut m, secs(100), Event::Timer, &[]);
        expect_state(&m, State::Initialize, None);
        let mut m = backup(config(100));
        expect(
            &mut m,
            Duration::ZERO,
            health(true, 0),
            &[Action::EnterFault],
        );
        expect(&mut m, secs(100), Event::Timer, &[]);
        expect_state(&m, State::Fault, None);
    }

    #[test]
    fn backup_resets_its_timer_on_each_advert() {
        let mut m = backup(config(100));
        for second in 1..=20 {
            let now = secs(second);
            expect(&mut m, now, Event::Timer, &[]);
            expect(&mut m, now, received(HIGHER_PEER, advert(200)), &[]);
            expect_state(&m, State::Backup, Some(now + MDI_100));
        }
        assert_eq!(
            m.learned_master(),
            Some(PeerMaster {
                address: HIGHER_PEER,
                priority: 200
            })
        );
        expect(
            &mut m,
            secs(20) + MDI_100,
            Event::Timer,
            &[send(100), Action::BecomeMaster],
        );
    }

    #[test]
    fn backup_conformance_table() {
        // RFC 5798 section 6.4.2: a Backup follows (resets its timer for) an
        // advert unless it preempts and the advert's priority is lower.
        // Equal priority is followed whatever the addresses.
        struct Case {
            what: &'static str,
            priority: u8,
            preempt: bool,
            theirs: u8,
            from: IpAddr,
            follows: bool,
        }
        let cases = [
            Case {
                what: "higher priority",
                priority: 100,
                preempt: true,
                theirs: 101,
                from: LOWER_PEER,
                follows: true,
            },
            Case {
                what: "equal priority, lower address",
                priority: 100,
                preempt: true,
                theirs: 100,
                from: LOWER_PEER,
                follows: true,
            },
            Case {
                what: "equal priority, higher address",
                priority: 100,
                preempt: true,
                theirs: 100,
                from: HIGHER_PEER,
                follows: true,
            },
            Case {
                what: "lower priority, preempt",
                priority: 100,
                preempt: true,
                theirs: 99,
                from: HIGHER_PEER,
                follows: false,
            },
            Case {
                what: "lower priority, no preempt",
                priority: 100,
                preempt: false,
                theirs: 99,
                from: HIGHER_PEER,
                follows: true,
            },
            Case {
                what: "owner-level priority from a peer",
                priority: 254,
                preempt: true,
                theirs: 255,
                from: LOWER_PEER,
                follows: true,
            },
        ];
        for case in cases {
            let mut m = backup(InstanceConfig {
                preempt: case.preempt,
                ..config(case.priority)
            });
            let before = m.next_deadline();
            let now = secs(1);
            let actions = m.handle(now, received(case.from, advert(case.theirs)));
            assert_eq!(
                actions,
                [],
                "{}: a Backup answers nothing, got {actions:?}",
                case.what
            );
            let expected = if case.follows {
                Some(now + m.master_down_interval())
            } else {
                before
            };
            assert_eq!(
                m.next_deadline(),
                expected,
                "{}: expected deadline {expected:?} ({}), got {:?}",
                case.what,
                if case.follows { "reset" } else { "unchanged" },
                m.next_deadline()
            );
            assert_eq!(
                m.learned_master(),
                Some(PeerMaster {
                    address: case.from,
                    priority: case.theirs
                }),
                "{}: the sender is the Master whether followed or not",
                case.what
            );
        }
    }

    #[test]
    fn master_conformance_table() {
        // RFC 5798 section 6.4.3 plus lbfo's answers: higher (priority, then
        // address) wins; a Master hearing a lower one re-asserts at once.
        let steps_down = [Action::BecomeBackup, send(100)];
        let asserts = [send(100), Action::SendGratuitousArp];
        let cases: [(&str, u8, IpAddr, &[Action], State); 6] = [
            (
                "higher priority",
                101,
                LOWER_PEER,
                &steps_down,
                State::Backup,
            ),
            (
                "equal priority, higher address",
                100,
                HIGHER_PEER,
                &steps_down,
                State::Backup,
            ),
            ("lower priority", 99, HIGHER_PEER, &asserts, State::Master),
            (
                "equal priority, lower address",
                100,
                LOWER_PEER,
                &asserts,
                State::Master,
            ),
            ("our own advert looped back", 100, ME, &[], State::Master),
            (
                "a Master giving up",
                0,
                HIGHER_PEER,
                &asserts,
                State::Master,
            ),
        ];
        for (what, theirs, from, expected, state) in cases {
            let (mut m, became_master) = master(config(100));
            let now = became_master + ms(300);
            let actions = m.handle(now, received(from, advert(theirs)));
            assert_eq!(
                actions, expected,
                "{what}: expected {expected:?}, got {actions:?}"
            );
            assert_eq!(m.state(), state, "{what}: expected {state:?}");
            let deadline = match (state, actions.is_empty()) {
                (State::Backup, _) => now + MDI_100,
                // An advert just went out: the next one is an interval later.
                (_, false) => now + secs(1),
                (_, true) => became_master + secs(1),
            };
            assert_eq!(
                m.next_deadline(),
                Some(deadline),
                "{what}: expected next deadline {deadline:?}"
            );
        }
    }

    #[test]
    fn master_stepping_down_follows_the_winner() {
        let (mut m, became_master) = master(config(100));
        let now = became_master + secs(10);
        let winner = Advertisement {
            max_advert_interval_cs: 50,
            ..advert(200)
        };
        expect(
            &mut m,
            now,
            received(LOWER_PEER, winner),
            &[Action::BecomeBackup, send(100)],
        );
        assert_eq!(
            m.learned_master(),
            Some(PeerMaster {
                address: LOWER_PEER,
                priority: 200
            })
        );
        assert_eq!(
            m.master_adver_interval(),
            ms(500),
            "learned from the winner"
        );
        // 3 * 0.5 s + 156/256 * 0.5 s
        expect_state(
            &m,
            State::Backup,
            Some(now + Duration::from_nanos(1_804_687_500)),
        );
    }

    #[test]
    fn preempt_takes_over_from_a_lower_master_after_master_down_interval() {
        let mut m = backup(config(200));
        // The lower Master's adverts are ignored, so the timer set at
        // startup runs out as if there were no Master.
        for second in 1..=3 {
            expect(&mut m, secs(second), received(LOWER_PEER, advert(100)), &[]);
            expect_state(&m, State::Backup, Some(MDI_200));
        }
        expect(
            &mut m,
            MDI_200,
            Event::Timer,
            &[send(200), Action::BecomeMaster],
        );
    }

    #[test]
    fn without_preempt_a_lower_master_is_followed() {
        let mut m = backup(InstanceConfig {
            preempt: false,
            ..config(200)
        });
        for second in 1..=10 {
            let now = secs(second);
            expect(&mut m, now, Event::Timer, &[]);
            expect(&mut m, now, received(LOWER_PEER, advert(100)), &[]);
            expect_state(&m, State::Backup, Some(now + MDI_200));
        }
    }

    #[test]
    fn owner_preempts_even_without_preempt() {
        // Lowered at startup, the owner starts as Backup; once healthy its
        // priority is 255 again and it preempts despite preempt = false.
        let mut m = machine(InstanceConfig {
            preempt: false,
            ..config(255)
        });
        expect(&mut m, Duration::ZERO, health(false, 10), &[]);
        expect(
            &mut m,
            Duration::ZERO,
            Event::Startup,
            &[Action::BecomeBackup],
        );
        expect(&mut m, secs(1), received(LOWER_PEER, advert(200)), &[]);
        let followed = m.next_deadline();
        assert!(
            followed > Some(secs(1)),
            "at 245 without preempt, the Backup follows the 200 Master"
        );
        expect(&mut m, secs(2), health(false, 0), &[]);
        expect(&mut m, secs(2), received(LOWER_PEER, advert(200)), &[]);
        assert_eq!(
            m.next_deadline(),
            followed,
            "at 255 the owner must ignore the 200 Master"
        );
    }

    /// Delivers the lower Master's advert every second from `from_second`
    /// and timers when due; returns when the Backup took over.
    fn takeover_time(m: &mut Machine, from_second: u64) -> Duration {
        for second in from_second..100 {
            let now = secs(second);
            if let Some(deadline) = m.next_deadline().filter(|d| *d < now) {
                let priority = m.effective_priority();
                expect(
                    m,
                    deadline,
                    Event::Timer,
                    &[send(priority), Action::BecomeMaster],
                );
                return deadline;
            }
            expect(m, now, received(LOWER_PEER, advert(100)), &[]);
        }
        panic!("the Backup never took over from the lower Master");
    }

    #[test]
    fn preempt_delay_counts_from_startup() {
        let mut m = backup(InstanceConfig {
            preempt_delay: secs(5),
            ..config(200)
        });
        // Followed at 1..=4 s, ignored from 5 s: down 4 s + MDI.
        assert_eq!(takeover_time(&mut m, 1), secs(4) + MDI_200);
    }

    #[test]
    fn preempt_delay_counts_from_the_first_lower_advert() {
        let mut m = backup(InstanceConfig {
            preempt_delay: secs(5),
            ..config(200)
        });
        // A higher Master ends the startup delay...
        expect(&mut m, secs(1), received(LOWER_PEER, advert(250)), &[]);
        expect(&mut m, secs(2), received(LOWER_PEER, advert(250)), &[]);
        // ...and when it is lowered (at 3 s), the delay starts again:
        // followed at 3..=7 s, ignored from 8 s.
        assert_eq!(takeover_time(&mut m, 3), secs(7) + MDI_200);
    }

    #[test]
    fn zero_preempt_delay_preempts_at_once() {
        let mut m = backup(config(200));
        expect(&mut m, secs(1), received(LOWER_PEER, advert(250)), &[]);
        // Followed at 1 s (higher), ignored from 2 s (lowered).
        assert_eq!(takeover_time(&mut m, 2), secs(1) + MDI_200);
    }

    #[test]
    fn priority_zero_lets_a_backup_take_over_after_skew_time() {
        let mut m = backup(config(100));
        expect(&mut m, secs(1), received(HIGHER_PEER, advert(200)), &[]);
        expect(&mut m, secs(2), received(HIGHER_PEER, advert(0)), &[]);
        expect_state(&m, State::Backup, Some(secs(2) + SKEW_100));
        expect(
            &mut m,
            secs(2) + SKEW_100,
            Event::Timer,
            &[send(100), Action::BecomeMaster],
        );
    }

    #[test]
    fn shutdown_sends_priority_zero_only_from_master() {
        let (mut m, _) = master(config(100));
        expect(&mut m, secs(10), Event::Shutdown, &[send(0), Action::Stop]);
        expect_state(&m, State::Initialize, None);
        expect(&mut m, secs(11), Event::Shutdown, &[]);
        // Back up again: the RFC's startup logic, from scratch.
        expect(&mut m, secs(12), Event::Startup, &[Action::BecomeBackup]);
        expect_state(&m, State::Backup, Some(secs(12) + MDI_100));
        expect(&mut m, secs(13), Event::Shutdown, &[Action::Stop]);
        expect_state(&m, State::Initialize, None);
    }

    #[test]
    fn backup_learns_the_masters_interval() {
        let mut m = backup(config(100));
        let half_second = Advertisement {
            max_advert_interval_cs: 50,
            ..advert(200)
        };
        expect(&mut m, secs(1), received(HIGHER_PEER, half_second), &[]);
        assert_eq!(m.master_adver_interval(), ms(500));
        // 3 * 0.5 s + 156/256 * 0.5 s
        expect_state(
            &m,
            State::Backup,
            Some(secs(1) + Duration::from_nanos(1_804_687_500)),
        );
        let ten_ms = Advertisement {
            max_advert_interval_cs: 1,
            ..advert(200)
        };
        expect(&mut m, secs(2), received(HIGHER_PEER, ten_ms), &[]);
        // 3 * 10 ms + 156/256 * 10 ms
        let deadline = secs(2) + Duration::from_nanos(36_093_750);
        expect_state(&m, State::Backup, Some(deadline));
        expect(
            &mut m,
            deadline,
            Event::Timer,
            &[send(100), Action::BecomeMaster],
        );
        // Our own adverts keep our configured interval.
        assert_eq!(m.advertisement(100).max_advert_interval_cs, 100);
    }

    #[test]
    fn restart_forgets_the_learned_interval() {
        let mut m = backup(config(100));
        let slow = Advertisement {
            max_advert_interval_cs: 400,
            ..advert(200)
        };
        expect(&mut m, secs(1), received(HIGHER_PEER, slow), &[]);
        expect(&mut m, secs(2), health(true, 0), &[Action::EnterFault]);
        expect(&mut m, secs(3), health(false, 0), &[Action::BecomeBackup]);
        assert_eq!(m.master_adver_interval(), secs(1));
        expect_state(&m, State::Backup, Some(secs(3) + MDI_100));
    }

    #[test]
    fn fault_from_backup_and_back() {
        let mut m = backup(config(100));
        expect(&mut m, secs(1), received(HIGHER_PEER, advert(200)), &[]);
        expect(&mut m, secs(2), health(true, 0), &[Action::EnterFault]);
        expect_state(&m, State::Fault, None);
        assert_eq!(m.learned_master(), None);
        // Deaf and mute while in fault.
        expect(&mut m, secs(3), received(HIGHER_PEER, advert(200)), &[]);
        expect(&mut m, secs(3), received(HIGHER_PEER, advert(0)), &[]);
        expect(&mut m, secs(4), health(true, 20), &[]);
        expect_state(&m, State::Fault, None);
        expect(&mut m, secs(5), health(false, 0), &[Action::BecomeBackup]);
        expect_state(&m, State::Backup, Some(secs(5) + MDI_100));
    }

    #[test]
    fn fault_from_master_sends_priority_zero() {
        let (mut m, _) = master(config(100));
        expect(
            &mut m,
            secs(10),
            health(true, 0),
            &[send(0), Action::EnterFault],
        );
        expect_state(&m, State::Fault, None);
        expect(&mut m, secs(11), Event::Shutdown, &[Action::Stop]);
    }

    #[test]
    fn owner_leaving_fault_is_master_at_once() {
        let mut m = machine(config(255));
        expect(
            &mut m,
            Duration::ZERO,
            Event::Startup,
            &[send(255), Action::BecomeMaster],
        );
        expect(
            &mut m,
            secs(1),
            health(true, 0),
            &[send(0), Action::EnterFault],
        );
        expect(
            &mut m,
            secs(2),
            health(false, 0),
            &[send(255), Action::BecomeMaster],
        );
        expect_state(&m, State::Master, Some(secs(3)));
    }

    #[test]
    fn fault_before_startup_starts_in_fault() {
        let mut m = machine(config(100));
        expect(&mut m, Duration::ZERO, health(true, 0), &[]);
        expect_state(&m, State::Initialize, None);
        expect(&mut m, secs(1), Event::Startup, &[Action::EnterFault]);
        expect_state(&m, State::Fault, None);
        expect(&mut m, secs(2), Event::Shutdown, &[Action::Stop]);
        // Still unhealthy on the next startup.
        expect(&mut m, secs(3), Event::Startup, &[Action::EnterFault]);
        expect(&mut m, secs(4), health(false, 0), &[Action::BecomeBackup]);
        expect_state(&m, State::Backup, Some(secs(4) + MDI_100));
    }

    #[test]
    fn effective_priority_table() {
        // (configured, penalty, effective)
        let cases = [
            (100, 0, 100),
            (100, 20, 80),
            (100, 99, 1),
            (100, 200, 1),
            (1, 0, 1),
            (1, 5, 1),
            (254, 0, 254),
            (255, 0, 255),
            (255, 1, 254),
            (255, 55, 200),
            (255, 255, 1),
        ];
        for (configured, penalty, effective) in cases {
            let mut m = machine(config(configured));
            m.handle(Duration::ZERO, health(false, penalty));
            assert_eq!(
                m.effective_priority(),
                effective,
                "priority {configured} with penalty {penalty}: expected {effective}"
            );
        }
    }

    #[test]
    fn positive_change_raises_the_priority_within_1_to_254() {
        // (configured, change, effective)
        let cases = [
            (100, 2, 102),
            (100, 154, 254),
            (100, 253, 254),
            (1, 253, 254),
            (254, 1, 254),
            (255, 1, 254),
            (100, 50 - 20, 130),
        ];
        for (configured, change, effective) in cases {
            let mut m = machine(config(configured));
            m.handle(
                Duration::ZERO,
                Event::Health {
                    fault: false,
                    priority_change: change,
                },
            );
            assert_eq!(
                m.effective_priority(),
                effective,
                "priority {configured} changed by {change}: expected {effective}"
            );
        }
        // A raised Backup preempts a Master it was below.
        let mut m = backup(config(100));
        expect(&mut m, secs(1), received(HIGHER_PEER, advert(101)), &[]);
        m.handle(
            secs(1),
            Event::Health {
                fault: false,
                priority_change: 2,
            },
        );
        expect(&mut m, secs(2), received(HIGHER_PEER, advert(101)), &[]);
        assert_eq!(
            m.next_deadline(),
            Some(secs(1) + MDI_100),
            "at 102 the Backup ignores the Master's 101 and lets the timer set at 1 s run out"
        );
    }

    #[test]
    fn penalty_lowers_the_advertised_priority_and_lengthens_skew() {
        let (mut m, became_master) = master(config(100));
        expect(&mut m, became_master, health(false, 50), &[]);
        expect(&mut m, became_master + secs(1), Event::Timer, &[send(50)]);
        let mut m = backup(config(100));
        expect(&mut m, Duration::ZERO, health(false, 50), &[]);
        expect_state(&m, State::Backup, Some(MDI_100));
        // 3 s + 206/256 s, from the next advert on.
        assert_eq!(
            m.master_down_interval(),
            Duration::from_nanos(3_804_687_500)
        );
        expect(&mut m, secs(1), received(HIGHER_PEER, advert(200)), &[]);
        expect_state(
            &m,
            State::Backup,
            Some(secs(1) + Duration::from_nanos(3_804_687_500)),
        );
    }

    #[test]
    fn owner_with_penalty_starts_as_backup() {
        let mut m = machine(config(255));
        expect(&mut m, Duration::ZERO, health(false, 1), &[]);
        expect(
            &mut m,
            Duration::ZERO,
            Event::Startup,
            &[Action::BecomeBackup],
        );
        // 3 s + 2/256 s
        expect_state(&m, State::Backup, Some(Duration::from_nanos(3_007_812_500)));
    }

    #[test]
    fn timer_arithmetic_matches_rfc_formulas() {
        // (advert interval ms, priority, Skew_Time ns, Master_Down_Interval ns),
        // each worked out by hand: skew = interval * (256 - priority) / 256,
        // truncated to the nanosecond; MDI = 3 * interval + skew.
        let cases: [(u64, u8, u64, u64); 11] = [
            (10, 100, 6_093_750, 36_093_750),
            (10, 255, 39_062, 30_039_062),
            (10, 1, 9_960_937, 39_960_937),
            (30, 100, 18_281_250, 108_281_250),
            (30, 200, 6_562_500, 96_562_500),
            (100, 100, 60_937_500, 360_937_500),
            (100, 254, 781_250, 300_781_250),
            (1_000, 100, 609_375_000, 3_609_375_000),
            (1_000, 255, 3_906_250, 3_003_906_250),
            (1_000, 1, 996_093_750, 3_996_093_750),
            (40_950, 1, 40_790_039_062, 163_640_039_062),
        ];
        for (interval_ms, priority, skew_ns, mdi_ns) in cases {
            let mut m = machine(InstanceConfig {
                advert_interval: ms(interval_ms),
                ..config(priority)
            });
            let what = format!("interval {interval_ms} ms, priority {priority}");
            assert_eq!(
                m.skew_time(),
                Duration::from_nanos(skew_ns),
                "{what}: Skew_Time"
            );
            assert_eq!(
                m.master_down_interval(),
                Duration::from_nanos(mdi_ns),
                "{what}: Master_Down_Interval"
            );
            let start = secs(1);
            m.handle(start, Event::Startup);
            let deadline = if priority == OWNER_PRIORITY {
                start + ms(interval_ms)
            } else {
                start + Duration::from_nanos(mdi_ns)
            };
            assert_eq!(m.next_deadline(), Some(deadline), "{what}: first deadline");
        }
    }

    #[test]
    fn own_advertisement_carries_interval_in_centiseconds() {
        for (interval_ms, cs) in [(10, 1), (30, 3), (100, 10), (1_000, 100), (40_950, 4_095)] {
            let m = machine(InstanceConfig {
                advert_interval: ms(interval_ms),
                addresses: vec![VIP2, VIP],
                ..config(100)
            });
            let advert = m.advertisement(100);
            assert_eq!(
                advert,
                Advertisement {
                    version: Version::V3,
                    auth: Auth::None,
                    vrid: 51,
                    priority: 100,
                    max_advert_interval_cs: cs,
                    addresses: vec![VIP2, VIP],
                },
                "interval {interval_ms} ms, addresses in configured order"
            );
        }
    }

    #[test]
    fn discards_adverts_for_other_vrids_and_address_lists() {
        let mut m = machine(InstanceConfig {
            addresses: vec![VIP, VIP2],
            ..config(100)
        });
        m.handle(Duration::ZERO, Event::Startup);
        let ours = |addresses: Vec<IpAddr>| Advertisement {
            addresses,
            ..advert(200)
        };
        let cases = [
            (
                Advertisement {
                    version: Version::V3,
                    auth: Auth::None,
                    vrid: 52,
                    ..ours(vec![VIP, VIP2])
                },
                Reject::UnknownVrid { vrid: 52 },
            ),
            (ours(vec![VIP]), Reject::AddressMismatch { seen: vec![VIP] }),
            (
                ours(vec![VIP, VIP2, ME]),
                Reject::AddressMismatch {
                    seen: vec![VIP, VIP2, ME],
                },
            ),
            (
                ours(vec![VIP, ME]),
                Reject::AddressMismatch {
                    seen: vec![VIP, ME],
                },
            ),
            (ours(vec![]), Reject::AddressMismatch { seen: vec![] }),
            (
                Advertisement {
                    max_advert_interval_cs: 0,
                    ..ours(vec![VIP, VIP2])
                },
                Reject::ZeroInterval,
            ),
        ];
        for (advert, reject) in cases {
            expect(
                &mut m,
                secs(1),
                received(HIGHER_PEER, advert),
                &[Action::Discard(reject)],
            );
            expect_state(&m, State::Backup, Some(MDI_100));
            assert_eq!(
                m.learned_master(),
                None,
                "a discarded advert names no Master"
            );
        }
        // Same addresses in another order are the same list.
        expect(
            &mut m,
            secs(1),
            received(HIGHER_PEER, ours(vec![VIP2, VIP])),
            &[],
        );
        expect_state(&m, State::Backup, Some(secs(1) + MDI_100));
    }

    #[test]
    fn state_names_are_stable() {
        let names = [
            State::Initialize,
            State::Backup,
            State::Master,
            State::Fault,
        ]
        .map(State::as_str);
        assert_eq!(names, ["initialize", "backup", "master", "fault"]);
    }

    #[test]
    fn rejects_invalid_configs() {
        let base = config(100);
        let cases = [
            (
                InstanceConfig {
                    vrid: 0,
                    ..base.clone()
                },
                InvalidConfig::Vrid,
            ),
            (
                InstanceConfig {
                    priority: 0,
                    ..base.clone()
                },
                InvalidConfig::Priority,
            ),
            (
                InstanceConfig {
                    advert_interval: ms(0),
                    ..base.clone()
                },
                InvalidConfig::IntervalRange(ms(0)),
            ),
            (
                InstanceConfig {
                    advert_interval: ms(9),
                    ..base.clone()
                },
                InvalidConfig::IntervalRange(ms(9)),
            ),
            (
                InstanceConfig {
                    advert_interval: ms(40_960),
                    ..base.clone()
                },
                InvalidConfig::IntervalRange(ms(40_960)),
            ),
            (
                InstanceConfig {
                    advert_interval: ms(15),
                    ..base.clone()
                },
                InvalidConfig::IntervalResolution(ms(15)),
            ),
            (
                InstanceConfig {
                    addresses: vec![],
                    ..base.clone()
                },
                InvalidConfig::NoAddresses,
            ),
            (
                InstanceConfig {
                    addresses: (0..256u32)
                        .map(|i| IpAddr::from(Ipv4Addr::from(0xc633_6400 + i)))
                        .collect(),
                    ..base.clone()
                },
                InvalidConfig::TooManyAddresses(256),
            ),
            (
                InstanceConfig {
                    addresses: vec![VIP, VIP2, VIP],
                    ..base.clone()
                },
                InvalidConfig::DuplicateAddress(VIP),
            ),
        ];
        for (config, error) in cases {
            let result = Machine::new(config.clone()).map(|_| ());
            assert_eq!(
                result,
                Err(error.clone()),
                "{config:?} must be rejected with {error}"
            );
        }
        // The limits themselves are valid.
        for config in [
            InstanceConfig {
                vrid: 255,
                priority: 255,
                advert_interval: ms(10),
                ..base.clone()
            },
            InstanceConfig {
                vrid: 1,
                priority: 1,
                advert_interval: ms(40_950),
                addresses: (0..255u32)
                    .map(|i| IpAddr::from(Ipv4Addr::from(0xc633_6400 + i)))
                    .collect(),
                ..base.clone()
            },
        ] {
            machine(config);
        }
    }

    /// Routers on one link, zero delay, every advertisement going through
    /// the codec; timers are delivered exactly at their deadlines.
    struct Lan {
        now: Duration,
        routers: Vec<Machine>,
        connected: bool,
        log: Vec<(Duration, usize, Action)>,
    }

    impl Lan {
        fn new(configs: impl IntoIterator<Item = InstanceConfig>) -> Self {
            Self {
                now: Duration::ZERO,
                routers: configs.into_iter().map(machine).collect(),
                connected: true,
                log: Vec::new(),
            }
        }

        fn start(&mut self) {
            for router in 0..self.routers.len() {
                self.event(router, Event::Startup);
            }
        }

        fn event(&mut self, router: usize, event: Event) {
            let mut pending = VecDeque::from([(router, event)]);
            while let Some((router, event)) = pending.pop_front() {
                for action in self.routers[router].handle(self.now, event) {
                    if let Action::SendAdvert(advert) = &action
                        && self.connected
                    {
                        let src = self.routers[router].config().primary_address;
                        let dst: IpAddr = if src.is_ipv6() {
                            VRRP_MULTICAST_V6.into()
                        } else {
                            VRRP_MULTICAST.into()
                        };
                        let payload = advert.encode(src, dst);
                        for other in (0..self.routers.len()).filter(|other| *other != router) {
                            let advert = Advertisement::decode(&payload, src, dst, VRRP_TTL)
                                .unwrap_or_else(|reject| {
                                    panic!("our own advert must decode: {reject}")
                                });
                            pending.push_back((other, received(src, advert)));
                        }
                    }
                    self.log.push((self.now, router, action));
                }
                assert!(
                    self.log.len() < 100_000,
                    "actions without end: {:?}",
                    &self.log[..20]
                );
            }
        }

        fn run_until(&mut self, until: Duration) {
            assert!(until >= self.now, "time runs forward only");
            loop {
                let next = (0..self.routers.len())
                    .filter_map(|router| Some((self.routers[router].next_deadline()?, router)))
                    .min();
                match next {
                    Some((deadline, router)) if deadline <= until => {
                        self.now = deadline;
                        self.event(router, Event::Timer);
                    }
                    _ => break,
                }
            }
            self.now = until;
        }

        fn states(&self) -> Vec<State> {
            self.routers.iter().map(Machine::state).collect()
        }

        /// What `router` did from `since` on.
        fn actions(&self, router: usize, since: Duration) -> Vec<(Duration, Action)> {
            self.log
                .iter()
                .filter(|(at, r, _)| *r == router && *at >= since)
                .map(|(at, _, action)| (*at, action.clone()))
                .collect()
        }

        fn first(&self, router: usize, since: Duration, action: &Action) -> Option<Duration> {
            self.actions(router, since)
                .into_iter()
                .find(|(_, a)| a == action)
                .map(|(at, _)| at)
        }
    }

    const ROUTER_A: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const ROUTER_B: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));

    fn router(primary_address: IpAddr, priority: u8) -> InstanceConfig {
        InstanceConfig {
            primary_address,
            ..config(priority)
        }
    }

    #[test]
    fn lan_higher_priority_becomes_master() {
        let mut lan = Lan::new([router(ROUTER_A, 150), router(ROUTER_B, 100)]);
        lan.start();
        lan.run_until(secs(60));
        assert_eq!(lan.states(), [State::Master, State::Backup]);
        assert_eq!(
            lan.first(0, Duration::ZERO, &Action::BecomeMaster),
            Some(MDI_150)
        );
        assert_eq!(
            lan.first(1, Duration::ZERO, &Action::BecomeMaster),
            None,
            "B must never take over: {:?}",
            lan.actions(1, Duration::ZERO)
        );
        assert_eq!(
            lan.routers[1].learned_master(),
            Some(PeerMaster {
                address: ROUTER_A,
                priority: 150
            })
        );
    }

    /// An IPv6 virtual router: advertisements from link-local addresses to
    /// ff02::12 carrying 16-byte addresses; equal priorities go to the
    /// higher source address, compared as 128-bit numbers.
    #[test]
    fn lan_over_ipv6_elects_and_breaks_ties_by_address() {
        let low: IpAddr = "fe80::1".parse().unwrap();
        let high: IpAddr = "fe80::2:1".parse().unwrap();
        let vip: IpAddr = "2001:db8::100".parse().unwrap();
        let v6 = |primary_address, priority| InstanceConfig {
            primary_address,
            priority,
            ..InstanceConfig::new(51, primary_address, vec![vip])
        };
        let mut lan = Lan::new([v6(low, 150), v6(high, 100)]);
        lan.start();
        lan.run_until(secs(10));
        assert_eq!(lan.states(), [State::Master, State::Backup]);
        // Both Master after a partition, equal priority: the higher address stays.
        let mut lan = Lan::new([v6(low, 100), v6(high, 100)]);
        lan.connected = false;
        lan.start();
        lan.run_until(secs(10));
        assert_eq!(lan.states(), [State::Master, State::Master]);
        lan.connected = true;
        lan.run_until(secs(20));
        assert_eq!(lan.states(), [State::Backup, State::Master]);
    }

    #[test]
    fn one_family_per_virtual_router_and_no_v2_over_ipv6() {
        let v6: IpAddr = "fe80::1".parse().unwrap();
        let vip6: IpAddr = "2001:db8::100".parse().unwrap();
        let mixed = InstanceConfig::new(51, v6, vec![vip6, VIP]);
        assert_eq!(
            Machine::new(mixed).err(),
            Some(InvalidConfig::MixedFamilies(VIP))
        );
        let v2 = InstanceConfig {
            version: Version::V2,
            ..InstanceConfig::new(51, v6, vec![vip6])
        };
        assert_eq!(Machine::new(v2).err(), Some(InvalidConfig::V2OverIpv6));
    }

    #[test]
    fn lan_equal_priorities_timing_out_together_do_not_flap() {
        // Both time out at the same instant; the first advert sent reaches
        // the other while still Backup, and a Backup follows an equal
        // priority whatever the addresses (RFC 5798 section 6.4.2).
        let mut lan = Lan::new([router(ROUTER_A, 100), router(ROUTER_B, 100)]);
        lan.start();
        lan.run_until(secs(60));
        assert_eq!(lan.states(), [State::Master, State::Backup]);
        let transitions: Vec<_> = lan
            .log
            .iter()
            .filter(|(_, _, action)| matches!(action, Action::BecomeMaster | Action::BecomeBackup))
            .collect();
        assert_eq!(
            transitions,
            [
                &(Duration::ZERO, 0, Action::BecomeBackup),
                &(Duration::ZERO, 1, Action::BecomeBackup),
                &(MDI_100, 0, Action::BecomeMaster)
            ],
            "one takeover and nothing else"
        );
    }

    #[test]
    fn lan_penalty_hands_over_to_a_preempting_peer() {
        let mut lan = Lan::new([router(ROUTER_A, 150), router(ROUTER_B, 100)]);
        lan.start();
        lan.run_until(secs(10));
        assert_eq!(lan.states(), [State::Master, State::Backup]);
        lan.event(0, health(false, 60));
        lan.run_until(secs(30));
        assert_eq!(
            lan.states(),
            [State::Backup, State::Master],
            "A at 90 must yield to B at 100"
        );
        // A's last advert at 150 went out at 9.414 s (3.414 s + 6 intervals);
        // its adverts at 90 are ignored, so B takes over an MDI later.
        let last_followed = MDI_150 + secs(6);
        assert_eq!(
            lan.first(1, secs(10), &Action::BecomeMaster),
            Some(last_followed + MDI_100),
            "B's takeover: {:?}",
            lan.actions(1, secs(10))
        );
        assert_eq!(
            lan.first(0, secs(10), &Action::BecomeBackup),
            Some(last_followed + MDI_100),
            "A steps down on B's first advert"
        );
        // Healthy again, A (150) preempts B in turn.
        lan.event(0, health(false, 0));
        lan.run_until(secs(60));
        assert_eq!(lan.states(), [State::Master, State::Backup]);
    }

    /// A and B lose sight of each other at 10 s, both become Master, and
    /// see each other again at `heal`; `winner` must end up Master.
    fn split_brain(a: InstanceConfig, b: InstanceConfig, heal: Duration, winner: usize) -> Lan {
        let mut lan = Lan::new([a, b]);
        lan.start();
        lan.run_until(secs(10));
        lan.connected = false;
        lan.run_until(heal);
        assert_eq!(
            lan.states(),
            [State::Master, State::Master],
            "split brain before {heal:?}"
        );
        lan.connected = true;
        lan.run_until(heal + secs(30));
        let mut expected = [State::Backup, State::Backup];
        expected[winner] = State::Master;
        assert_eq!(lan.states(), expected, "resolved after {heal:?}");
        lan
    }

    #[test]
    fn split_brain_lower_heard_first() {
        // A advertises at x.21875 s, B (Master since 12.828125 s) at
        // x.828125 s: healing at 20.5 s, B's advert is the first one sent.
        let heal = ms(20_500);
        let lan = split_brain(router(ROUTER_A, 200), router(ROUTER_B, 100), heal, 0);
        let b_advert = Duration::from_nanos(20_828_125_000);
        assert_eq!(
            lan.actions(1, heal).first(),
            Some(&(b_advert, send(100))),
            "B advertises first"
        );
        assert_eq!(
            lan.actions(0, heal)[..2],
            [(b_advert, send(200)), (b_advert, Action::SendGratuitousArp)],
            "A answers B's advert at once with an advert and gratuitous ARP"
        );
        assert_eq!(
            lan.first(1, heal, &Action::BecomeBackup),
            Some(b_advert),
            "B steps down on A's answer, the first advert it hears"
        );
    }

    #[test]
    fn split_brain_higher_heard_first() {
        // Healing at 20 s, A's advert at 20.21875 s is the first one sent.
        let heal = secs(20);
        let lan = split_brain(router(ROUTER_A, 200), router(ROUTER_B, 100), heal, 0);
        let a_advert = Duration::from_nanos(20_218_750_000);
        assert_eq!(
            lan.actions(1, heal)[..2],
            [(a_advert, Action::BecomeBackup), (a_advert, send(100))],
            "B steps down on the first advert it hears, with one last advert"
        );
        assert_eq!(
            lan.actions(0, heal)[..3],
            [
                (a_advert, send(200)),
                (a_advert, send(200)),
                (a_advert, Action::SendGratuitousArp)
            ],
            "A's regular advert, then its answer to B's last advert with gratuitous ARP"
        );
    }

    #[test]
    fn split_brain_equal_priority_goes_to_the_higher_address() {
        // A (192.0.2.1) was Master first; B (192.0.2.2) wins on address.
        let heal = secs(20);
        let lan = split_brain(router(ROUTER_A, 100), router(ROUTER_B, 100), heal, 1);
        assert!(
            lan.first(0, heal, &Action::BecomeBackup).is_some(),
            "A must step down: {:?}",
            lan.actions(0, heal)
        );
        assert!(
            lan.first(1, heal, &Action::SendGratuitousArp).is_some(),
            "B must re-announce: {:?}",
            lan.actions(1, heal)
        );
    }

    #[test]
    fn lan_master_shutdown_hands_over_after_skew_time() {
        let mut lan = Lan::new([router(ROUTER_A, 200), router(ROUTER_B, 100)]);
        lan.start();
        lan.run_until(secs(10));
        lan.event(0, Event::Shutdown);
        assert_eq!(
            lan.actions(0, secs(10)),
            [(secs(10), send(0)), (secs(10), Action::Stop)]
        );
        lan.run_until(secs(20));
        assert_eq!(lan.states(), [State::Initialize, State::Master]);
        assert_eq!(
            lan.first(1, secs(10), &Action::BecomeMaster),
            Some(secs(10) + SKEW_100),
            "B takes over Skew_Time after the priority 0 advert"
        );
    }

    #[test]
    fn lan_master_fault_hands_over_and_recovers() {
        let mut lan = Lan::new([router(ROUTER_A, 200), router(ROUTER_B, 100)]);
        lan.start();
        lan.run_until(secs(10));
        lan.event(0, health(true, 0));
        lan.run_until(secs(20));
        assert_eq!(lan.states(), [State::Fault, State::Master]);
        assert_eq!(
            lan.first(1, secs(10), &Action::BecomeMaster),
            Some(secs(10) + SKEW_100)
        );
        lan.event(0, health(false, 0));
        lan.run_until(secs(40));
        assert_eq!(
            lan.states(),
            [State::Master, State::Backup],
            "A preempts once healthy"
        );
    }

    #[test]
    fn v2_ignores_v3_and_checks_the_password() {
        let v2 = |auth| InstanceConfig {
            version: Version::V2,
            auth,
            ..config(100)
        };
        let secret = Auth::pass("secret").unwrap();
        let peer = |version, auth| Advertisement {
            version,
            auth,
            ..advert(200)
        };
        let mismatch = |ours, theirs| Action::Discard(Reject::VersionMismatch { ours, theirs });
        let auth = |why| Action::Discard(Reject::Auth { why });
        let cases = [
            (
                v2(secret),
                peer(Version::V3, Auth::None),
                vec![mismatch(2, 3)],
            ),
            (
                config(100),
                peer(Version::V2, Auth::None),
                vec![mismatch(3, 2)],
            ),
            (
                v2(secret),
                peer(Version::V2, Auth::None),
                vec![auth("no password")],
            ),
            (
                v2(secret),
                peer(Version::V2, Auth::pass("secreT").unwrap()),
                vec![auth("wrong password")],
            ),
            (
                v2(Auth::None),
                peer(Version::V2, secret),
                vec![auth("a password where none is configured")],
            ),
        ];
        for (ours, theirs, expected) in cases {
            let mut m = backup(ours.clone());
            let what = format!("{ours:?} hearing {theirs:?}");
            let actions = m.handle(secs(1), received(HIGHER_PEER, theirs));
            assert_eq!(actions, expected, "{what}");
            assert_eq!(
                m.next_deadline(),
                Some(MDI_100),
                "{what}: a rejected advert must not restart Master_Down_Timer"
            );
        }
        // v2 intervals must match (no learning as in v3).
        let mut m = backup(v2(secret));
        let slow = Advertisement {
            max_advert_interval_cs: 200,
            ..peer(Version::V2, secret)
        };
        expect(
            &mut m,
            secs(1),
            received(HIGHER_PEER, slow),
            &[Action::Discard(Reject::IntervalMismatch {
                ours_cs: 100,
                theirs_cs: 200,
            })],
        );
        // v2 Skew_Time is in seconds whatever the interval.
        let m = backup(InstanceConfig {
            advert_interval: secs(2),
            ..v2(Auth::None)
        });
        assert_eq!(m.skew_time(), SKEW_100);
        assert_eq!(m.master_down_interval(), secs(6) + SKEW_100);
        // The matching one is heard, and ours carry version and password.
        let mut m = backup(v2(secret));
        expect(
            &mut m,
            secs(1),
            received(HIGHER_PEER, peer(Version::V2, secret)),
            &[],
        );
        assert_eq!(m.next_deadline(), Some(secs(1) + MDI_100));
        assert_eq!(m.advertisement(100).version, Version::V2);
        assert_eq!(m.advertisement(100).auth, secret);
    }

    #[test]
    fn v2_needs_whole_seconds_and_v3_no_password() {
        let v2 = |ms| InstanceConfig {
            version: Version::V2,
            advert_interval: ms,
            ..config(100)
        };
        assert!(Machine::new(v2(secs(1))).is_ok());
        assert!(Machine::new(v2(secs(255))).is_ok());
        for bad in [ms(500), ms(1500), secs(256)] {
            assert_eq!(
                Machine::new(v2(bad)).err(),
                Some(InvalidConfig::IntervalV2(bad)),
                "{bad:?}"
            );
        }
        let v3_with_pass = InstanceConfig {
            auth: Auth::pass("x").unwrap(),
            ..config(100)
        };
        assert_eq!(
            Machine::new(v3_with_pass).err(),
            Some(InvalidConfig::AuthWithV3)
        );
    }
}
