//! The daemon's TOML configuration: parsing and validation.
//!
//! Everything an operator can get wrong is caught here, before the daemon
//! touches the interface, and reported as one line naming the file, the line
//! and what to change.

use std::{
    collections::HashSet,
    fmt,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use lbfo_common::MAX_VIPS;
use serde::{Deserialize, Serialize};

use crate::{
    health::config::CheckConfig,
    vrrp::{Auth, Version},
};

/// A configuration error: always one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The interface the VIPs live on; XDP attaches here.
    pub interface: String,
    #[serde(default)]
    pub xdp_mode: XdpMode,
    /// Lease for VIPs owned by operator command: how long XDP keeps answering
    /// after the daemon stops renewing. Renewed every third of it.
    #[serde(default = "defaults::lease_ms")]
    pub lease_ms: u64,
    #[serde(default)]
    pub garp: GarpConfig,
    /// How long a notify script may run before it is killed.
    #[serde(default = "defaults::notify_timeout_ms")]
    pub notify_timeout_ms: u64,
    /// The Prometheus endpoint; without the table, none.
    pub metrics: Option<MetricsConfig>,
    /// Balanced VIPs beyond those configured that the maps have room for,
    /// so a reload can add them. Read at start-up; see
    /// [`Config::balanced_vip_headroom`] for the default.
    pub balanced_vip_headroom: Option<u32>,
    /// Backends beyond those configured that the maps have room for. Read
    /// at start-up; see [`Config::backend_headroom`] for the default.
    pub backend_headroom: Option<u32>,
    /// Flows the connection table remembers when any VIP is balanced. Read
    /// at start-up.
    #[serde(default = "defaults::conntrack_entries")]
    pub conntrack_entries: u32,
    /// The TUN device lbfo creates and holds open for route VIPs (see
    /// [`Announce::Route`]); it vanishes with the daemon's process.
    #[serde(default = "defaults::route_device")]
    pub route_device: String,
    #[serde(rename = "vip", default)]
    pub vips: Vec<VipConfig>,
}

/// `[metrics]`: where the daemon serves `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address and port, like `127.0.0.1:9655`.
    pub listen: std::net::SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native (driver) mode if the driver supports it, generic otherwise.
    #[default]
    Auto,
    Native,
    Generic,
}

/// The gratuitous ARP burst sent when this node takes a VIP over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GarpConfig {
    /// Announcements in the burst (each one a request and a reply form).
    #[serde(default = "defaults::garp_count")]
    pub count: u32,
    #[serde(default = "defaults::garp_interval_ms")]
    pub interval_ms: u64,
    /// Announce every owned VIP again this often (0: never), for switches
    /// and hosts whose tables forget.
    #[serde(default)]
    pub refresh_ms: u64,
}

impl Default for GarpConfig {
    fn default() -> Self {
        Self {
            count: defaults::garp_count(),
            interval_ms: defaults::garp_interval_ms(),
            refresh_ms: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VipConfig {
    pub name: String,
    /// The VIP's address. Either this or `addresses`; after parsing, it is
    /// also `addresses[0]` (see [`VipConfig::address`]).
    #[serde(default, rename = "address")]
    single_address: Option<VipAddress>,
    /// Several addresses one virtual router advertises together and that
    /// move together (keepalived's `virtual_ipaddress` block), in the order
    /// advertised. Filled from `address` when that is given.
    #[serde(default)]
    pub addresses: Vec<VipAddress>,
    /// How the network learns where the VIP is: `arp` (on the LAN, by
    /// VRRP or operator command; ARP for IPv4, Neighbour Discovery for IPv6) or `route` (a host route announced by the
    /// routing daemon while the VIP's checks pass, on every such node).
    #[serde(default)]
    pub announce: Announce,
    /// VRRP election (RFC 5798): present when `vrid` is set. Without it
    /// the VIP is owned only while an operator says so.
    #[serde(flatten)]
    pub vrrp: VrrpConfig,
    /// `local`: the owner's own stack serves the VIP. `balance`: the owner
    /// spreads TCP and UDP over `backend`s in XDP.
    #[serde(default)]
    pub mode: VipServeMode,
    #[serde(rename = "backend", default)]
    pub backends: Vec<BackendConfig>,
    /// Health checks of the service behind the VIP. A failing check without
    /// `weight` puts the VIP in fault (it owns nothing); a check with
    /// `weight = -N` lowers its VRRP priority by N while it fails, one with
    /// `weight = N` raises it by N while it passes.
    #[serde(rename = "check", default)]
    pub checks: Vec<CheckConfig>,
    /// Run on every state change as `notify NAME OLD NEW` (keepalived's
    /// convention), never waited for, killed after `notify_timeout_ms`.
    pub notify: Option<PathBuf>,
    /// Run as given (`["/usr/local/bin/program", "arg", ...]`, no shell)
    /// when the VIP starts serving: it becomes Master, an operator VIP is
    /// owned, or a route VIP is announced.
    pub notify_master: Option<Vec<String>>,
    /// Run as given when the VIP stops serving while the daemon runs: it
    /// becomes Backup, an operator VIP is released, or a route VIP is
    /// withdrawn.
    pub notify_backup: Option<Vec<String>>,
    /// Run as given when the VIP enters fault (a check without weight
    /// fails, or the interface lost its link).
    pub notify_fault: Option<Vec<String>>,
    /// Run as given when the daemon stops and the VIP is given up (in place
    /// of `notify_backup`).
    pub notify_stop: Option<Vec<String>>,
}

/// How a VIP is made known to the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Announce {
    /// One node answers ARP for the VIP on the LAN: the VRRP Master, or the
    /// node an operator told to own it.
    #[default]
    Arp,
    /// Every node whose VIP checks pass puts the VIP as a /32 on
    /// `route_device`, where the routing daemon (BIRD, FRR) picks it up and
    /// announces it to the routers; no election, no ARP.
    Route,
}

impl Announce {
    pub fn as_str(self) -> &'static str {
        match self {
            Announce::Arp => "arp",
            Announce::Route => "route",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VipServeMode {
    #[default]
    Local,
    Balance,
}

/// A server behind a balanced VIP, on the same Ethernet segment (L2 direct
/// server return: it must accept the VIP as a local address and answer the
/// client directly; see docs/BALANCING.md).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// Of the VIP's family.
    pub address: IpAddr,
    /// Relative share of new flows, 1..=1000.
    #[serde(default = "defaults::weight")]
    pub weight: u32,
    /// The backend takes new flows only while all of these pass.
    #[serde(rename = "check", default)]
    pub checks: Vec<CheckConfig>,
}

/// The VRRP keys of a `[[vip]]`; the same names and meanings as keepalived's.
/// Their ranges are the state machine's ([`crate::vrrp::validate_settings`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct VrrpConfig {
    /// Virtual router id, 1..=255, the same on every node sharing the VIP.
    pub vrid: Option<u8>,
    /// 1..=254, higher wins; 255 only on the node that owns the address.
    #[serde(default = "defaults::priority")]
    pub priority: u8,
    /// 10..=40950 ms in steps of 10 ms (centiseconds on the wire).
    #[serde(default = "defaults::advert_interval_ms")]
    pub advert_interval_ms: u64,
    /// A higher-priority node takes over from a lower-priority Master.
    #[serde(default = "defaults::preempt")]
    pub preempt: bool,
    #[serde(default)]
    pub preempt_delay_ms: u64,
    /// Send advertisements to these addresses (of the VIP's family)
    /// instead of 224.0.0.18 or ff02::12.
    #[serde(default)]
    pub unicast_peers: Vec<IpAddr>,
    /// 3 (RFC 5798) or 2 (RFC 3768, keepalived's default): every router
    /// of a virtual router speaks the same one.
    #[serde(default = "defaults::vrrp_version")]
    pub vrrp_version: u8,
    /// Version 2 only: keepalived's `auth_type PASS` password, 1..=8
    /// bytes. Interop, not security: it travels in clear text.
    pub auth_pass: Option<String>,
}

/// An IPv4 or IPv6 address with the prefix length it is added to the
/// interface with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct VipAddress {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl VipAddress {
    /// The address if it is IPv4. Elected VIPs are IPv4 for now (the
    /// configuration refuses elected IPv6 ones).
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        match self.addr {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        }
    }

    /// The longest prefix of the address's family: a host address.
    pub fn host_prefix_len(addr: IpAddr) -> u8 {
        if addr.is_ipv4() { 32 } else { 128 }
    }
}

impl FromStr for VipAddress {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| {
            format!("{s:?} is not an address like \"192.0.2.100/24\" or \"2001:db8::100/64\"")
        })?;
        let longest = Self::host_prefix_len(addr);
        let prefix_len = match prefix {
            None => longest,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| (1..=longest).contains(p))
                .ok_or_else(|| format!("{s:?}: prefix length must be 1..={longest}"))?,
        };
        let unicast = match addr {
            IpAddr::V4(a) => !(a.is_unspecified() || a.is_multicast() || a.is_broadcast()),
            IpAddr::V6(a) => !(a.is_unspecified() || a.is_multicast() || a.is_loopback()),
        };
        if !unicast {
            return Err(format!("{s:?} cannot be a VIP (not a unicast address)"));
        }
        if let IpAddr::V6(a) = addr
            && a.is_unicast_link_local()
        {
            return Err(format!(
                "{s:?} cannot be a VIP (link-local addresses belong to one interface each)"
            ));
        }
        Ok(Self { addr, prefix_len })
    }
}

impl TryFrom<String> for VipAddress {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<VipAddress> for String {
    fn from(a: VipAddress) -> Self {
        a.to_string()
    }
}

impl fmt::Display for VipAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

mod defaults {
    pub fn route_device() -> String {
        "lbfo0".into()
    }
    pub fn notify_timeout_ms() -> u64 {
        10_000
    }
    pub fn weight() -> u32 {
        1
    }
    pub fn priority() -> u8 {
        100
    }
    pub fn vrrp_version() -> u8 {
        3
    }
    pub fn advert_interval_ms() -> u64 {
        1000
    }
    pub fn preempt() -> bool {
        true
    }
    pub fn lease_ms() -> u64 {
        3000
    }
    pub fn garp_count() -> u32 {
        5
    }
    pub fn garp_interval_ms() -> u64 {
        200
    }
    pub fn conntrack_entries() -> u32 {
        lbfo_common::CONNTRACK_ENTRIES
    }
    /// Room for more balanced VIPs, when any is balanced: each costs 1 MiB
    /// of kernel memory (two tables of 65,537 slots).
    pub const BALANCED_VIP_HEADROOM: u32 = 2;
    /// Room for more backends, when any VIP is balanced: one VIP's worth,
    /// which also lets a reload replace up to that many backends at once
    /// (the ids of removed backends are reused only from the next reload).
    pub const BACKEND_HEADROOM: u32 = lbfo_common::MAX_BACKENDS_PER_VIP;
}

impl VipConfig {
    /// The per-state notify commands, by their config keys.
    pub fn state_notifies(&self) -> [(&'static str, Option<&Vec<String>>); 4] {
        [
            ("notify_master", self.notify_master.as_ref()),
            ("notify_backup", self.notify_backup.as_ref()),
            ("notify_fault", self.notify_fault.as_ref()),
            ("notify_stop", self.notify_stop.as_ref()),
        ]
    }

    /// The first (for most VIPs the only) address: the one that names the
    /// VIP in status, logs and metrics.
    pub fn address(&self) -> VipAddress {
        self.addresses[0]
    }

    /// Whether the VIP is IPv6 (a VIP is one family; validation refuses a
    /// mix).
    pub fn is_ipv6(&self) -> bool {
        self.address().addr.is_ipv6()
    }

    /// The addresses as one text, `192.0.2.100/24, 192.0.2.101/24`.
    pub fn addresses_text(&self) -> String {
        let all: Vec<String> = self.addresses.iter().map(ToString::to_string).collect();
        all.join(", ")
    }

    /// Makes `addresses` the one list of addresses.
    fn settle_addresses(&mut self) -> Result<(), String> {
        let name = &self.name;
        match (self.single_address, self.addresses.is_empty()) {
            (Some(a), true) => self.addresses = vec![a],
            (Some(_), false) => {
                return Err(format!(
                    "vip {name:?} has both address and addresses; give one of them"
                ));
            }
            (None, true) => {
                return Err(format!(
                    "vip {name:?} needs an address (or addresses = [...])"
                ));
            }
            (None, false) => {}
        }
        if self.addresses.len() > crate::vrrp::packet::MAX_ADDRESSES {
            return Err(format!(
                "vip {name:?} has {} addresses; an advertisement carries at most {}",
                self.addresses.len(),
                crate::vrrp::packet::MAX_ADDRESSES
            ));
        }
        if self.addresses.len() > 1 && self.mode == VipServeMode::Balance {
            return Err(format!(
                "vip {name:?}: a balanced VIP has one address; give each balanced address a [[vip]] of its own"
            ));
        }
        Ok(())
    }

    fn validate_checks(&self) -> Result<(), String> {
        let name = &self.name;
        for check in &self.checks {
            // The weight's own range is the check's rule (health::config);
            // here only whether this VIP can use one.
            if let Some(w) = check.weight
                && self.vrrp.vrid.is_none()
            {
                return Err(format!(
                    "vip {name:?}: check weight {w} only applies to VIPs with a vrid (it changes the VRRP priority)"
                ));
            }
        }
        for b in &self.backends {
            if b.checks.iter().any(|c| c.weight.is_some()) {
                return Err(format!(
                    "vip {name:?}: backend {} checks take no weight (a failing check takes the backend out)",
                    b.address
                ));
            }
        }
        if let Some(script) = &self.notify
            && !script.is_absolute()
        {
            return Err(format!(
                "vip {name:?}: notify script {} must be an absolute path",
                script.display()
            ));
        }
        for (key, command) in self.state_notifies() {
            if let Some(command) = command {
                crate::health::config::validate_command(command, key)
                    .map_err(|e| format!("vip {name:?}: {e}"))?;
            }
        }
        Ok(())
    }

    fn validate_backends(&self) -> Result<(), String> {
        let name = &self.name;
        match self.mode {
            VipServeMode::Local if !self.backends.is_empty() => {
                return Err(format!(
                    "vip {name:?} has backends but mode is \"local\"; set mode = \"balance\""
                ));
            }
            VipServeMode::Balance if self.backends.is_empty() => {
                return Err(format!(
                    "vip {name:?}: mode \"balance\" needs at least one [[vip.backend]]"
                ));
            }
            _ => {}
        }
        if self.backends.len() > lbfo_common::MAX_BACKENDS_PER_VIP as usize {
            return Err(format!(
                "vip {name:?} has {} backends; at most {} per VIP",
                self.backends.len(),
                lbfo_common::MAX_BACKENDS_PER_VIP
            ));
        }
        let mut seen = HashSet::new();
        for b in &self.backends {
            if let Some(vip) = self.addresses.first()
                && vip.addr.is_ipv4() != b.address.is_ipv4()
            {
                let family = |a: IpAddr| if a.is_ipv4() { "IPv4" } else { "IPv6" };
                return Err(format!(
                    "vip {name:?}: backend {} is {} but the VIP is {}; a backend has its VIP's family (the packet reaches it unchanged)",
                    b.address,
                    family(b.address),
                    family(vip.addr)
                ));
            }
            if !seen.insert(b.address) {
                return Err(format!(
                    "vip {name:?}: backend {} is listed twice",
                    b.address
                ));
            }
            if self.addresses.iter().any(|a| a.addr == b.address) {
                return Err(format!("vip {name:?}: a backend cannot be the VIP itself"));
            }
            if !(1..=1000).contains(&b.weight) {
                return Err(format!(
                    "vip {name:?}: backend {} weight {} must be 1..=1000 (use `lbfo drain` to take it out)",
                    b.address, b.weight
                ));
            }
        }
        Ok(())
    }
}

impl VipConfig {
    /// A VIP is one family.
    fn validate_family(&self) -> Result<(), String> {
        let name = &self.name;
        let ipv6 = self.addresses.iter().filter(|a| a.addr.is_ipv6()).count();
        if ipv6 == 0 {
            return Ok(());
        }
        if ipv6 != self.addresses.len() {
            return Err(format!(
                "vip {name:?} mixes IPv4 and IPv6 addresses; a virtual router carries one family (RFC 5798), so give each family a [[vip]] of its own"
            ));
        }
        if self.announce == Announce::Route {
            return Err(format!(
                "vip {name:?}: route VIPs are IPv4 only; an IPv6 VIP is announced on the LAN (announce = \"arp\", by Neighbour Discovery)"
            ));
        }
        Ok(())
    }

    /// A route VIP is announced by every healthy node, never elected, and
    /// is always a host address.
    fn validate_announce(&self) -> Result<(), String> {
        if self.announce != Announce::Route {
            return Ok(());
        }
        let name = &self.name;
        if let Some(vrid) = self.vrrp.vrid {
            return Err(format!(
                "vip {name:?}: announce = \"route\" has no election (every node whose checks pass announces it); remove vrid = {vrid}"
            ));
        }
        if let Some(a) = self.addresses.iter().find(|a| a.prefix_len != 32) {
            return Err(format!(
                "vip {name:?}: a route VIP is a host address; write \"{}\" (not /{})",
                a.addr, a.prefix_len
            ));
        }
        Ok(())
    }
}

impl VrrpConfig {
    /// `vrids` holds the (family, VRID) pairs in use: an IPv4 and an IPv6
    /// virtual router are separate (RFC 5798), so a VRID may serve once per
    /// family.
    fn validate(
        &self,
        vip: &str,
        ipv6: bool,
        vrids: &mut HashSet<(bool, u8)>,
    ) -> Result<(), String> {
        let Some(vrid) = self.vrid else {
            let vrrp_key_set = self.priority != defaults::priority()
                || self.advert_interval_ms != defaults::advert_interval_ms()
                || self.preempt != defaults::preempt()
                || self.preempt_delay_ms != 0
                || !self.unicast_peers.is_empty()
                || self.vrrp_version != defaults::vrrp_version()
                || self.auth_pass.is_some();
            if vrrp_key_set {
                return Err(format!("vip {vip:?} has VRRP settings but no vrid"));
            }
            return Ok(());
        };
        let version = self.version().map_err(|e| format!("vip {vip:?}: {e}"))?;
        crate::vrrp::validate_settings(vrid, self.priority, self.advert_interval(), version)
            .map_err(|e| format!("vip {vip:?}: {e}"))?;
        self.auth().map_err(|e| format!("vip {vip:?}: {e}"))?;
        let family = if ipv6 { "IPv6" } else { "IPv4" };
        if ipv6 && version == Version::V2 {
            return Err(format!(
                "vip {vip:?}: vrrp_version = 2 is IPv4 only (RFC 3768); an IPv6 VIP speaks version 3"
            ));
        }
        if !vrids.insert((ipv6, vrid)) {
            return Err(format!(
                "vrid {vrid} is used by two {family} VIPs; each needs its own (an IPv4 and an IPv6 VIP may share one)"
            ));
        }
        if let Some(peer) = self.unicast_peers.iter().find(|p| p.is_ipv6() != ipv6) {
            return Err(format!(
                "vip {vip:?}: unicast peer {peer} is not {family}, the VIP's family"
            ));
        }
        if self.preempt_delay_ms > 3_600_000 {
            return Err(format!(
                "vip {vip:?}: preempt_delay_ms is more than an hour"
            ));
        }
        Ok(())
    }

    pub fn advert_interval(&self) -> Duration {
        Duration::from_millis(self.advert_interval_ms)
    }

    pub fn version(&self) -> Result<Version, String> {
        match self.vrrp_version {
            2 => Ok(Version::V2),
            3 => Ok(Version::V3),
            v => Err(format!(
                "vrrp_version = {v}: lbfo speaks 2 (RFC 3768) and 3 (RFC 5798)"
            )),
        }
    }

    /// What the advertisements carry for authentication.
    pub fn auth(&self) -> Result<Auth, String> {
        match &self.auth_pass {
            None => Ok(Auth::None),
            Some(_) if self.vrrp_version != 2 => {
                Err("auth_pass needs vrrp_version = 2 (version 3 has no authentication)".into())
            }
            Some(pass) => Auth::pass(pass),
        }
    }
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates config text; `path` only labels errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            line: e
                .span()
                .map(|span| text[..span.start].matches('\n').count() + 1)
                .unwrap_or(1),
            message: e.message().replace('\n', " ").trim().to_string(),
        })?;
        let invalid = |message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        for vip in &mut config.vips {
            vip.settle_addresses().map_err(invalid)?;
        }
        config.validate().map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if self.interface.is_empty() || self.interface.len() > 15 || self.interface.contains('/') {
            return Err(format!(
                "interface {:?} is not a valid interface name",
                self.interface
            ));
        }
        let route_device = &self.route_device;
        if route_device.is_empty() || route_device.len() > 15 || route_device.contains('/') {
            return Err(format!(
                "route_device {route_device:?} is not a valid interface name"
            ));
        }
        if *route_device == self.interface {
            return Err(format!(
                "route_device {route_device:?} is the interface itself; lbfo creates the route device, name one that does not exist"
            ));
        }
        if !(300..=3_600_000).contains(&self.lease_ms) {
            return Err(format!(
                "lease_ms = {} is out of range (300..=3600000)",
                self.lease_ms
            ));
        }
        if !(100..=600_000).contains(&self.notify_timeout_ms) {
            return Err(format!(
                "notify_timeout_ms = {} is out of range (100..=600000)",
                self.notify_timeout_ms
            ));
        }
        if self.garp.count > 100 {
            return Err(format!("garp.count = {} is more than 100", self.garp.count));
        }
        if !(10..=10_000).contains(&self.garp.interval_ms) {
            return Err(format!(
                "garp.interval_ms = {} is out of range (10..=10000)",
                self.garp.interval_ms
            ));
        }
        let balanced = self
            .vips
            .iter()
            .filter(|v| v.mode == VipServeMode::Balance)
            .count();
        if balanced > lbfo_common::MAX_BALANCED_VIPS as usize {
            return Err(format!(
                "{balanced} balanced VIPs configured; lbfo supports at most {}",
                lbfo_common::MAX_BALANCED_VIPS
            ));
        }
        if self.garp.refresh_ms != 0 && !(1_000..=3_600_000).contains(&self.garp.refresh_ms) {
            return Err(format!(
                "garp.refresh_ms = {} is out of range (0 for off, or 1000..=3600000)",
                self.garp.refresh_ms
            ));
        }
        if let Some(h) = self.balanced_vip_headroom
            && h > lbfo_common::MAX_BALANCED_VIPS
        {
            return Err(format!(
                "balanced_vip_headroom = {h} is out of range (0..={})",
                lbfo_common::MAX_BALANCED_VIPS
            ));
        }
        if let Some(h) = self.backend_headroom
            && h > lbfo_common::MAX_BACKENDS
        {
            return Err(format!(
                "backend_headroom = {h} is out of range (0..={})",
                lbfo_common::MAX_BACKENDS
            ));
        }
        let conntrack = lbfo_common::MIN_CONNTRACK_ENTRIES..=lbfo_common::MAX_CONNTRACK_ENTRIES;
        if !conntrack.contains(&self.conntrack_entries) {
            return Err(format!(
                "conntrack_entries = {} is out of range ({}..={})",
                self.conntrack_entries,
                conntrack.start(),
                conntrack.end()
            ));
        }
        if self.vips.len() > MAX_VIPS as usize {
            return Err(format!(
                "{} VIPs configured; lbfo supports at most {MAX_VIPS}",
                self.vips.len()
            ));
        }
        let mut names = HashSet::new();
        let mut addresses = HashSet::new();
        let mut vrids = HashSet::new();
        for vip in &self.vips {
            if vip.name.is_empty()
                || vip.name.len() > 64
                || !vip
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(format!(
                    "vip name {:?} must be 1-64 letters, digits, '-', '_' or '.'",
                    vip.name
                ));
            }
            // Names cannot hold ':', so only IPv4 addresses can pass for one.
            if vip.name.parse::<Ipv4Addr>().is_ok() {
                return Err(format!(
                    "vip name {:?} looks like an address; names and addresses must not be confused",
                    vip.name
                ));
            }
            if !names.insert(vip.name.as_str()) {
                return Err(format!("vip name {:?} is used twice", vip.name));
            }
            vip.validate_family()?;
            vip.validate_announce()?;
            vip.vrrp.validate(&vip.name, vip.is_ipv6(), &mut vrids)?;
            vip.validate_backends()?;
            vip.validate_checks()?;
            for address in &vip.addresses {
                if !addresses.insert(address.addr) {
                    return Err(format!("vip address {} is used twice", address.addr));
                }
            }
        }
        Ok(())
    }

    pub fn notify_timeout(&self) -> Duration {
        Duration::from_millis(self.notify_timeout_ms)
    }

    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }

    /// Whether any VIP is announced as a route (the daemon then holds
    /// `route_device`).
    pub fn has_route_vips(&self) -> bool {
        self.vips.iter().any(|v| v.announce == Announce::Route)
    }

    /// VIPs in `balance` mode.
    pub fn balanced_vips(&self) -> impl Iterator<Item = &VipConfig> {
        self.vips.iter().filter(|v| v.mode == VipServeMode::Balance)
    }

    /// `balanced_vip_headroom`, or its default: 2 when any VIP is balanced,
    /// 0 when none is (a node that does not balance gets no tables at all).
    pub fn balanced_vip_headroom(&self) -> u32 {
        self.balanced_vip_headroom
            .unwrap_or(if self.balanced_vips().next().is_some() {
                defaults::BALANCED_VIP_HEADROOM
            } else {
                0
            })
    }

    /// `backend_headroom`, or its default: 256 (one VIP's worth).
    pub fn backend_headroom(&self) -> u32 {
        self.backend_headroom.unwrap_or(defaults::BACKEND_HEADROOM)
    }

    /// Every VIP address of every VIP.
    pub fn all_addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.vips
            .iter()
            .flat_map(|v| v.addresses.iter().map(|a| a.addr))
    }

    /// Finds a VIP by name or by address.
    pub fn find_vip(&self, name_or_address: &str) -> Option<&VipConfig> {
        let as_addr = name_or_address
            .split('/')
            .next()
            .and_then(|a| a.parse::<IpAddr>().ok());
        self.vips.iter().find(|v| {
            v.name == name_or_address || v.addresses.iter().any(|a| Some(a.addr) == as_addr)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("lbfo.toml")).map_err(|e| e.to_string())
    }

    const GOOD: &str = r#"
interface = "eth0"
xdp_mode = "generic"
[[vip]]
name = "web"
address = "192.0.2.100/24"
"#;

    #[test]
    fn good_config_parses_with_defaults() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.interface, "eth0");
        assert_eq!(c.xdp_mode, XdpMode::Generic);
        assert_eq!(c.lease_ms, 3000);
        assert_eq!(
            c.garp,
            GarpConfig {
                count: 5,
                interval_ms: 200,
                refresh_ms: 0
            }
        );
        assert_eq!(
            c.vips[0].address(),
            VipAddress {
                addr: Ipv4Addr::new(192, 0, 2, 100).into(),
                prefix_len: 24
            }
        );
        assert_eq!(c.find_vip("web").unwrap().name, "web");
        assert_eq!(c.find_vip("192.0.2.100").unwrap().name, "web");
        assert!(c.find_vip("192.0.2.101").is_none());
    }

    #[test]
    fn errors_are_one_line_and_name_the_problem() {
        let cases: &[(&str, &str)] = &[
            (
                "interface = \"eth0\"\nbogus = 1\n",
                "lbfo.toml:2: unknown field `bogus`",
            ),
            (
                "interface = \"eth0\"\n[[vip]]\nname = \"a\"\naddress = \"2001:db8::1/129\"\n",
                "prefix length must be 1..=128",
            ),
            (
                "interface = \"eth0\"\n[[vip]]\nname = \"a\"\naddress = \"fe80::1/64\"\n",
                "cannot be a VIP (link-local addresses belong to one interface each)",
            ),
            (
                "interface = \"eth0\"\n[[vip]]\nname = \"a\"\naddress = \"ff02::1\"\n",
                "cannot be a VIP (not a unicast address)",
            ),
            (
                "interface = \"eth0\"\n[[vip]]\nname = \"a\"\naddress = \"2001:db8::1\"\nvrid = 5\nvrrp_version = 2\n",
                "lbfo.toml: vip \"a\": vrrp_version = 2 is IPv4 only (RFC 3768); an IPv6 VIP speaks version 3",
            ),
            (
                "interface = \"eth0\"\n[[vip]]\nname = \"a\"\naddress = \"2001:db8::1\"\nvrid = 5\nunicast_peers = [\"192.0.2.2\"]\n",
                "lbfo.toml: vip \"a\": unicast peer 192.0.2.2 is not IPv6, the VIP's family",
            ),
            (
                "interface = \"eth0\"\n[[vip]]\nname = \"a\"\naddress = \"2001:db8::1\"\nvrid = 5\n[[vip]]\nname = \"b\"\naddress = \"2001:db8::2\"\nvrid = 5\n",
                "lbfo.toml: vrid 5 is used by two IPv6 VIPs; each needs its own (an IPv4 and an IPv6 VIP may share one)",
            ),
            (
                "interface = \"eth0\"\n[[vip]]\nname = \"a\"\naddresses = [\"192.0.2.1/24\", \"2001:db8::1/64\"]\n",
                "vip \"a\" mixes IPv4 and IPv6 addresses; a virtual router carries one family (RFC 5798)",
            ),
            (
                "interface = \"eth0\"\n[[vip]]\nname = \"a\"\naddresses = [\"2001:db8::1/64\", \"192.0.2.1/24\"]\nvrid = 5\n",
                "vip \"a\" mixes IPv4 and IPv6 addresses",
            ),
            (
                "interface = \"eth0\"\n[[vip]]\nname = \"a\"\naddress = \"2001:db8::1\"\nmode = \"balance\"\n[[vip.backend]]\naddress = \"192.0.2.21\"\n",
                "vip \"a\": backend 192.0.2.21 is IPv4 but the VIP is IPv6; a backend has its VIP's family",
            ),
            (
                "interface = \"eth0\"\n[[vip]]\nname = \"a\"\naddress = \"192.0.2.100/24\"\nmode = \"balance\"\n[[vip.backend]]\naddress = \"2001:db8::21\"\n",
                "vip \"a\": backend 2001:db8::21 is IPv6 but the VIP is IPv4",
            ),
            (
                "interface = \"eth0\"\n[[vip]]\nname = \"a\"\naddress = \"2001:db8::1\"\nannounce = \"route\"\n",
                "vip \"a\": route VIPs are IPv4 only",
            ),
            (
                "interface = \"eth0\"\n[[vip]]\nname = \"a\"\naddress = \"2001:db8::1/64\"\n[[vip]]\nname = \"b\"\naddress = \"2001:db8::1/128\"\n",
                "vip address 2001:db8::1 is used twice",
            ),
            (
                "interface = \"eth0\"\n[[vip]]\nname = \"a\"\naddress = \"192.0.2.1/33\"\n",
                "prefix length must be 1..=32",
            ),
            (
                "interface = \"eth0\"\n[[vip]]\nname = \"a\"\naddress = \"nope\"\n",
                "\"nope\" is not an address like \"192.0.2.100/24\" or \"2001:db8::100/64\"",
            ),
            ("xdp_mode = \"auto\"\n", "missing field `interface`"),
            (
                "interface = \"eth0\"\nxdp_mode = \"turbo\"\n",
                "unknown variant `turbo`",
            ),
            (
                "interface = \"eth0\"\n[[vip]]\nname = \"a\"\naddress = \"192.0.2.1\"\n[[vip]]\nname = \"a\"\naddress = \"192.0.2.2\"\n",
                "vip name \"a\" is used twice",
            ),
            (
                "interface = \"eth0\"\n[[vip]]\nname = \"a\"\naddress = \"192.0.2.1\"\n[[vip]]\nname = \"b\"\naddress = \"192.0.2.1/24\"\n",
                "vip address 192.0.2.1 is used twice",
            ),
            (
                "interface = \"eth0\"\nlease_ms = 10\n",
                "lease_ms = 10 is out of range",
            ),
            ("interface = \"\"\n", "is not a valid interface name"),
            (
                "interface = \"eth0\"\n[[vip]]\nname = \"a\"\naddress = \"192.0.2.1\"\npriority = 150\n",
                "has VRRP settings but no vrid",
            ),
            (
                "interface = \"eth0\"\n[[vip]]\nname = \"a\"\naddress = \"192.0.2.1\"\nvrid = 5\nadvert_interval_ms = 15\n",
                "lbfo.toml: vip \"a\": advert interval 15ms is not a multiple of 10ms",
            ),
            (
                "interface = \"eth0\"\n[[vip]]\nname = \"a\"\naddress = \"192.0.2.1\"\nvrid = 5\nadvert_interval_ms = 40960\n",
                "lbfo.toml: vip \"a\": advert interval 40.96s is outside 10ms..=40.95s",
            ),
            (
                "interface = \"eth0\"\n[[vip]]\nname = \"a\"\naddress = \"192.0.2.1\"\nvrid = 0\n",
                "lbfo.toml: vip \"a\": vrid 0 is not valid; use 1..=255",
            ),
            (
                "interface = \"eth0\"\n[[vip]]\nname = \"a\"\naddress = \"192.0.2.1\"\nvrid = 5\n[[vip]]\nname = \"b\"\naddress = \"192.0.2.2\"\nvrid = 5\n",
                "vrid 5 is used by two IPv4 VIPs",
            ),
            (
                "interface = \"eth0\"\n[[vip]]\nname = \"a\"\naddress = \"192.0.2.1\"\nvrid = 5\npriority = 0\n",
                "lbfo.toml: vip \"a\": priority 0 is reserved for a Master giving up; use 1..=255",
            ),
            (
                "interface = \"eth0\"\n[[vip]]\nname = \"a\"\naddress = \"192.0.2.1\"\nvrid = 5\nprority = 7\n",
                "unknown field `prority`",
            ),
            (
                "interface = \"eth0\"\n[[vip]]\nname = \"a\"\naddress = \"224.0.0.18\"\n",
                "cannot be a VIP",
            ),
            (
                "interface = \"eth0\"\n[[vip]]\nname = \"a\"\naddress = \"192.0.2.1\"\nvrid = 5\nvrrp_version = 4\n",
                "vip \"a\": vrrp_version = 4: lbfo speaks 2 (RFC 3768) and 3 (RFC 5798)",
            ),
            (
                "interface = \"eth0\"\n[[vip]]\nname = \"a\"\naddress = \"192.0.2.1\"\nvrid = 5\nauth_pass = \"secret\"\n",
                "vip \"a\": auth_pass needs vrrp_version = 2",
            ),
            (
                "interface = \"eth0\"\n[[vip]]\nname = \"a\"\naddress = \"192.0.2.1\"\nvrid = 5\nvrrp_version = 2\nauth_pass = \"123456789\"\n",
                "vip \"a\": auth_pass must be 1..=8 bytes",
            ),
            (
                "interface = \"eth0\"\n[[vip]]\nname = \"a\"\naddress = \"192.0.2.1\"\nvrid = 5\nvrrp_version = 2\nadvert_interval_ms = 100\n",
                "vip \"a\": advert interval 100ms is not whole seconds",
            ),
            (
                "interface = \"eth0\"\n[[vip]]\nname = \"a\"\naddress = \"192.0.2.1\"\nvrrp_version = 2\n",
                "has VRRP settings but no vrid",
            ),
            (
                "interface = \"eth0\"\nconntrack_entries = 1023\n",
                "lbfo.toml: conntrack_entries = 1023 is out of range (1024..=16777216)",
            ),
            (
                "interface = \"eth0\"\nconntrack_entries = 16777217\n",
                "conntrack_entries = 16777217 is out of range (1024..=16777216)",
            ),
            (
                "interface = \"eth0\"\nbalanced_vip_headroom = 17\n",
                "balanced_vip_headroom = 17 is out of range (0..=16)",
            ),
            (
                "interface = \"eth0\"\nbackend_headroom = 4097\n",
                "backend_headroom = 4097 is out of range (0..=4096)",
            ),
        ];
        for (text, want) in cases {
            let err = parse(text).expect_err(text);
            assert!(
                err.contains(want),
                "config {text:?}: expected error containing {want:?}, got {err:?}"
            );
            assert!(!err.contains('\n'), "error must be one line, got {err:?}");
        }
    }

    #[test]
    fn balance_mode_needs_backends_and_valid_weights() {
        let base = "interface = \"eth0\"\n[[vip]]\nname = \"web\"\naddress = \"192.0.2.100/24\"\n";
        let good = format!(
            "{base}mode = \"balance\"\n[[vip.backend]]\naddress = \"192.0.2.21\"\nweight = 3\n[[vip.backend]]\naddress = \"192.0.2.22\"\n"
        );
        let c = parse(&good).unwrap();
        assert_eq!(c.vips[0].mode, VipServeMode::Balance);
        assert_eq!(
            c.vips[0]
                .backends
                .iter()
                .map(|b| b.weight)
                .collect::<Vec<_>>(),
            vec![3, 1]
        );
        let cases = [
            (
                format!("{base}mode = \"balance\"\n"),
                "needs at least one [[vip.backend]]",
            ),
            (
                format!("{base}[[vip.backend]]\naddress = \"192.0.2.21\"\n"),
                "set mode = \"balance\"",
            ),
            (
                good.replace("weight = 3", "weight = 0"),
                "weight 0 must be 1..=1000",
            ),
            (
                good.replace("192.0.2.22", "192.0.2.21"),
                "backend 192.0.2.21 is listed twice",
            ),
            (
                good.replace("192.0.2.22", "192.0.2.100"),
                "cannot be the VIP itself",
            ),
            (
                good.replace("weight = 3", "wieght = 3"),
                "unknown field `wieght`",
            ),
            (
                good.replace("\"balance\"", "\"roundrobin\""),
                "unknown variant `roundrobin`",
            ),
        ];
        for (text, want) in cases {
            let err = parse(&text).expect_err(&text);
            assert!(err.contains(want), "expected {want:?} in {err:?}");
        }
    }

    #[test]
    fn checks_parse_and_are_checked_in_context() {
        let base = "interface = \"eth0\"\n[[vip]]\nname = \"web\"\naddress = \"192.0.2.100/24\"\n";
        let check = "[[vip.check]]\nkind = \"http\"\nurl = \"http://192.0.2.1:8080/health\"\ninterval_ms = 500\ntimeout_ms = 300\n";
        let c = parse(&format!(
            "{base}notify = \"/usr/local/bin/notify\"\n{check}"
        ))
        .unwrap();
        assert_eq!(c.vips[0].checks.len(), 1);
        assert_eq!(c.vips[0].checks[0].interval, Duration::from_millis(500));
        let cases = [
            (
                format!("{base}{check}weight = -20\n"),
                "only applies to VIPs with a vrid",
            ),
            (
                format!("{base}vrid = 5\n{check}weight = 254\n"),
                "lbfo.toml:6: weight = 254 is not in -253..=-1 or 1..=253",
            ),
            (
                format!("{base}notify = \"notify.sh\"\n"),
                "must be an absolute path",
            ),
            (
                format!("{base}notify_master = [\"on-master.sh\"]\n"),
                "vip \"web\": notify_master[0] = \"on-master.sh\" must be an absolute path",
            ),
            (
                format!("{base}notify_fault = []\n"),
                "notify_fault is empty",
            ),
            (
                format!(
                    "{base}{}",
                    check.replace("timeout_ms = 300", "timeout_ms = 600")
                ),
                "timeout",
            ),
            (
                format!("{base}{}", check.replace("\"http\"", "\"smtp\"")),
                "smtp",
            ),
        ];
        for (text, want) in cases {
            let err = parse(&text).expect_err(&text);
            assert!(err.contains(want), "expected {want:?} in {err:?}");
            assert!(!err.contains('\n'), "one line: {err:?}");
        }
        assert!(parse(&format!("{base}vrid = 5\n{check}weight = -20\n")).is_ok());
        assert!(parse(&format!("{base}vrid = 5\n{check}weight = 20\n")).is_ok());
    }

    #[test]
    fn vrrp_version_2_with_a_password() {
        let c = parse("interface = \"eth0\"\n[[vip]]\nname = \"a\"\naddress = \"192.0.2.1\"\nvrid = 5\nvrrp_version = 2\nauth_pass = \"secret\"\n").unwrap();
        assert_eq!(c.vips[0].vrrp.version(), Ok(Version::V2));
        assert_eq!(c.vips[0].vrrp.auth(), Ok(Auth::Pass(*b"secret\0\0")));
        let default = parse(GOOD).unwrap();
        assert_eq!(default.vips[0].vrrp.version(), Ok(Version::V3));
        assert_eq!(default.vips[0].vrrp.auth(), Ok(Auth::None));
    }

    #[test]
    fn several_addresses_per_vip() {
        let base = "interface = \"eth0\"\n[[vip]]\nname = \"web\"\n";
        let c = parse(&format!(
            "{base}addresses = [\"192.0.2.100/24\", \"192.0.2.101\"]\nvrid = 5\n"
        ))
        .unwrap();
        assert_eq!(c.vips[0].addresses_text(), "192.0.2.100/24, 192.0.2.101/32");
        assert_eq!(c.vips[0].address().to_string(), "192.0.2.100/24");
        assert_eq!(c.find_vip("192.0.2.101").unwrap().name, "web");
        let cases = [
            (
                format!("{base}address = \"192.0.2.1\"\naddresses = [\"192.0.2.2\"]\n"),
                "vip \"web\" has both address and addresses",
            ),
            (format!("{base}\n"), "vip \"web\" needs an address"),
            (
                format!("{base}addresses = []\n"),
                "vip \"web\" needs an address",
            ),
            (
                format!("{base}addresses = [\"192.0.2.1\", \"192.0.2.1/24\"]\n"),
                "vip address 192.0.2.1 is used twice",
            ),
            (
                format!(
                    "{base}addresses = [\"192.0.2.1\", \"192.0.2.2\"]\n[[vip]]\nname = \"b\"\naddress = \"192.0.2.2\"\n"
                ),
                "vip address 192.0.2.2 is used twice",
            ),
            (
                format!(
                    "{base}addresses = [\"192.0.2.1\", \"192.0.2.2\"]\nmode = \"balance\"\n[[vip.backend]]\naddress = \"192.0.2.21\"\n"
                ),
                "a balanced VIP has one address",
            ),
            (
                format!("{base}addresses = [\"nope\"]\n"),
                "lbfo.toml:4: \"nope\" is not an address",
            ),
        ];
        for (text, want) in cases {
            let err = parse(&text).expect_err(&text);
            assert!(err.contains(want), "expected {want:?} in {err:?}");
        }
    }

    #[test]
    fn route_vips_have_no_election_and_are_host_addresses() {
        let base = "interface = \"eth0\"\n[[vip]]\nname = \"web\"\naddress = \"192.0.2.100\"\nannounce = \"route\"\n";
        let c = parse(base).unwrap();
        assert_eq!(c.vips[0].announce, Announce::Route);
        assert_eq!(c.route_device, "lbfo0");
        assert!(c.has_route_vips());
        assert_eq!(parse(GOOD).unwrap().vips[0].announce, Announce::Arp);
        let c = parse(&base.replace(
            "interface = \"eth0\"\n",
            "interface = \"eth0\"\nroute_device = \"bgp0\"\n",
        ))
        .unwrap();
        assert_eq!(c.route_device, "bgp0");
        let cases = [
            (
                format!("{base}vrid = 7\n"),
                "lbfo.toml: vip \"web\": announce = \"route\" has no election (every node whose checks pass announces it); remove vrid = 7",
            ),
            (
                base.replace("192.0.2.100", "192.0.2.100/24"),
                "vip \"web\": a route VIP is a host address; write \"192.0.2.100\" (not /24)",
            ),
            (
                base.replace("\"route\"", "\"bgp\""),
                "unknown variant `bgp`",
            ),
            (
                format!("route_device = \"eth0\"\n{base}"),
                "route_device \"eth0\" is the interface itself",
            ),
            (
                format!("route_device = \"a/b\"\n{base}"),
                "route_device \"a/b\" is not a valid interface name",
            ),
            (
                format!("{base}priority = 120\n"),
                "has VRRP settings but no vrid",
            ),
        ];
        for (text, want) in cases {
            let err = parse(&text).expect_err(&text);
            assert!(err.contains(want), "expected {want:?} in {err:?}");
            assert!(!err.contains('\n'), "one line: {err:?}");
        }
    }

    #[test]
    fn bare_address_means_a_host_address() {
        let a: VipAddress = "198.51.100.7".parse().unwrap();
        assert_eq!(a.prefix_len, 32);
        assert_eq!(a.to_string(), "198.51.100.7/32");
        let a: VipAddress = "2001:db8::7".parse().unwrap();
        assert_eq!(a.prefix_len, 128);
        assert_eq!(a.to_string(), "2001:db8::7/128");
    }

    /// IPv4 and IPv6 VIPs side by side on one interface, found by name or
    /// by either address form.
    #[test]
    fn ipv6_vips_next_to_ipv4_ones() {
        let c = parse(
            r#"
interface = "eth0"
[[vip]]
name = "web"
address = "192.0.2.100/24"
[[vip]]
name = "web6"
address = "2001:db8::100/64"
[[vip]]
name = "api6"
addresses = ["2001:db8::200/128", "2001:db8::201/128"]
"#,
        )
        .unwrap();
        let web6 = c.find_vip("web6").unwrap();
        assert_eq!(
            web6.address().addr,
            "2001:db8::100".parse::<IpAddr>().unwrap()
        );
        assert_eq!(web6.address().prefix_len, 64);
        assert_eq!(c.find_vip("2001:db8::100").unwrap().name, "web6");
        assert_eq!(c.find_vip("2001:db8:0::201/128").unwrap().name, "api6");
        assert_eq!(c.find_vip("192.0.2.100").unwrap().name, "web");
        assert_eq!(c.all_addresses().filter(IpAddr::is_ipv6).count(), 3);
    }

    #[test]
    fn an_ipv6_vip_balances_over_ipv6_backends() {
        let c = parse(
            r#"
interface = "eth0"
[[vip]]
name = "web6"
address = "2001:db8::100/64"
mode = "balance"
[[vip.backend]]
address = "2001:db8::21"
weight = 2
[[vip.backend.check]]
kind = "http"
url = "http://[2001:db8::21]:80/health"
"#,
        )
        .unwrap();
        let web6 = c.find_vip("web6").unwrap();
        assert_eq!(web6.mode, VipServeMode::Balance);
        assert_eq!(
            web6.backends[0].address,
            "2001:db8::21".parse::<IpAddr>().unwrap()
        );
        assert_eq!(c.balanced_vips().count(), 1);
    }

    /// An elected IPv4 VIP and an elected IPv6 VIP share VRID 51: RFC 5798
    /// makes them separate virtual routers.
    #[test]
    fn one_vrid_per_family() {
        let c = parse(
            r#"
interface = "eth0"
[[vip]]
name = "web"
address = "192.0.2.100/24"
vrid = 51
[[vip]]
name = "web6"
address = "2001:db8::100/64"
vrid = 51
unicast_peers = ["fe80::2", "2001:db8::2"]
"#,
        )
        .unwrap();
        assert!(c.vips[1].is_ipv6() && !c.vips[0].is_ipv6());
        assert_eq!(c.vips[1].vrrp.unicast_peers.len(), 2);
    }
}
