//! `lbfo import-keepalived`: a keepalived configuration turned into an
//! equivalent lbfo one, so a keepalived pair can be replaced one node at a
//! time (docs/MIGRATING.md).
//!
//! What lbfo does the same way is mapped; what it cannot do the same way is
//! said, never silently changed: a warning where only a nicety is lost, an
//! error (and no output) where the result would behave differently in a way
//! that matters, such as `lb_kind NAT`. Every message names the file and
//! line of the keyword.

pub mod parse;

use std::{collections::BTreeMap, fmt::Write as _, net::Ipv4Addr, path::Path};

pub use parse::{Loc, ParseError, Stmt, parse_file};

/// What an import produced: the TOML (meaningful only without errors) and
/// every message, each one line starting with `file:line:`.
#[derive(Debug, Default)]
pub struct Import {
    pub toml: String,
    pub warnings: Vec<String>,
    pub errors: Vec<String>,
}

/// Reads `path` (with its includes; `config_id` picks the `@` lines, as
/// keepalived's `-i`) and maps it.
pub fn import(path: &Path, config_id: &str) -> Import {
    let mut out = Importer::default();
    let stmts = {
        let warnings = &mut out.warnings;
        parse_file(path, config_id, &mut |at, w| {
            warnings.push(format!("{at}: warning: {w}"))
        })
    };
    match stmts {
        Ok(stmts) => out.top(&stmts),
        Err(e) => out.errors.push(e.to_string()),
    }
    let toml = if out.errors.is_empty() {
        out.render()
    } else {
        String::new()
    };
    Import {
        toml,
        warnings: out.warnings,
        errors: out.errors,
    }
}

/// The configuration id keepalived uses without `-i`: the host name, up to
/// its first dot.
pub fn default_config_id() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name = name.trim();
    name.split('.').next().unwrap_or_default().to_string()
}

#[derive(Debug, Clone)]
struct Script {
    command: Vec<String>,
    interval_ms: u64,
    timeout_ms: Option<u64>,
    weight: i32,
    rise: u32,
    fall: u32,
}

/// A check as TOML keys, in order.
type Check = Vec<(&'static str, toml::Value)>;

#[derive(Debug, Default)]
struct Vip {
    name: String,
    from: String,
    addresses: Vec<(Ipv4Addr, u8)>,
    keys: Vec<(&'static str, toml::Value)>,
    checks: Vec<Check>,
    balance: Option<Vec<Backend>>,
}

#[derive(Debug)]
struct Backend {
    address: Ipv4Addr,
    weight: u32,
    checks: Vec<Check>,
}

#[derive(Default)]
struct Importer {
    warnings: Vec<String>,
    errors: Vec<String>,
    interface: Option<(String, Loc)>,
    version: Option<u8>,
    garp: BTreeMap<&'static str, (u64, Loc)>,
    scripts: BTreeMap<String, (Script, Loc)>,
    vips: Vec<Vip>,
}

/// Top-level keepalived keywords lbfo has no counterpart for; anything else
/// unknown is not keepalived syntax.
const OTHER_TOP_LEVEL: &[&str] = &[
    "static_ipaddress",
    "static_routes",
    "static_rules",
    "vrrp_sync_group",
    "virtual_server_group",
    "vrrp_track_process",
    "track_file",
    "vrrp_track_file",
    "garp_group",
    "linkbeat_use_polling",
    "net_namespace",
    "net_namespace_ipvs",
    "instance",
    "use_pid_dir",
    "bfd_instance",
    "vrrp_script_group",
];

impl Importer {
    fn warn(&mut self, at: &Loc, message: impl AsRef<str>) {
        self.warnings
            .push(format!("{at}: warning: {}", message.as_ref()));
    }

    fn error(&mut self, at: &Loc, message: impl AsRef<str>) {
        self.errors
            .push(format!("{at}: error: {}", message.as_ref()));
    }

    fn top(&mut self, stmts: &[Stmt]) {
        // Scripts first: instances refer to them wherever they are defined.
        for s in stmts.iter().filter(|s| s.keyword() == "vrrp_script") {
            self.script(s);
        }
        for s in stmts.iter().filter(|s| s.keyword() == "global_defs") {
            self.global_defs(s);
        }
        for s in stmts {
            match s.keyword() {
                "global_defs" | "vrrp_script" => {}
                "vrrp_instance" => self.instance(s),
                "virtual_server" => self.virtual_server(s),
                "vrrp_sync_group" => self.warn(
                    &s.at,
                    "vrrp_sync_group not imported: each lbfo VIP fails over on its own; give instances that must move together one [[vip]] with addresses = [...]",
                ),
                "virtual_server_group" => self.error(
                    &s.at,
                    "virtual_server_group: lbfo balances one address per VIP; write one virtual_server per address",
                ),
                k if OTHER_TOP_LEVEL.contains(&k) => {
                    self.warn(&s.at, format!("{k} not imported: lbfo has no counterpart"))
                }
                k => self.error(
                    &s.at,
                    format!("{k:?} is not a keepalived keyword (is this a keepalived configuration?)"),
                ),
            }
        }
    }

    fn global_defs(&mut self, s: &Stmt) {
        for c in s.children() {
            let at = &c.at;
            match c.keyword() {
                "vrrp_version" => self.version = self.number(c, 2..=3).map(|v| v as u8),
                "vrrp_garp_master_repeat" => {
                    if let Some(n) = self.number(c, 0..=100) {
                        self.garp.insert("count", (n, at.clone()));
                    }
                }
                "vrrp_garp_interval" => {
                    if let Some(ms) = self.seconds(c) {
                        self.garp.insert("interval_ms", (ms.max(10), at.clone()));
                    }
                }
                "vrrp_garp_master_refresh" => {
                    if let Some(ms) = self.seconds(c) {
                        self.garp.insert("refresh_ms", (ms, at.clone()));
                    }
                }
                "vrrp_garp_master_delay" => self.garp_delay(c),
                "router_id" | "notification_email" | "notification_email_from"
                | "smtp_server" | "smtp_connect_timeout" | "smtp_helo" | "smtp_alert" => self
                    .warn(
                        at,
                        format!(
                            "{} ignored: lbfo sends no mail and needs no router id (logs, metrics and the notify script report state)",
                            c.keyword()
                        ),
                    ),
                k => self.warn(at, format!("{k} ignored: lbfo has no counterpart")),
            }
        }
    }

    fn garp_delay(&mut self, c: &Stmt) {
        if self.seconds(c).is_some_and(|ms| ms > 0) {
            self.warn(
                &c.at,
                format!(
                    "{} ignored: lbfo sends one gratuitous ARP burst on takeover, no second one after a delay (garp.refresh_ms repeats announcements)",
                    c.keyword()
                ),
            );
        }
    }

    fn script(&mut self, s: &Stmt) {
        let Some(name) = s.args().first().cloned() else {
            return self.error(&s.at, "vrrp_script needs a name");
        };
        // keepalived's defaults: every second, rise and fall 1, no weight.
        let mut script = Script {
            command: Vec::new(),
            interval_ms: 1000,
            timeout_ms: None,
            weight: 0,
            rise: 1,
            fall: 1,
        };
        for c in s.children() {
            match c.keyword() {
                "script" => match self.command(c) {
                    Some(command) => script.command = command,
                    None => return,
                },
                "interval" => script.interval_ms = self.seconds(c).unwrap_or(1000),
                "timeout" => script.timeout_ms = self.seconds(c),
                "weight" => {
                    if c.args().get(1).is_some_and(|a| a == "reverse") {
                        self.error(&c.at, "weight ... reverse: lbfo has no reversed weights");
                    }
                    script.weight = self.signed(c, -253..=253).unwrap_or(0) as i32;
                }
                "rise" => script.rise = self.number(c, 1..=100).unwrap_or(1) as u32,
                "fall" => script.fall = self.number(c, 1..=100).unwrap_or(1) as u32,
                "user" => self.warn(&c.at, "user ignored: lbfo runs exec checks as its own user"),
                k => self.warn(&c.at, format!("{k} ignored: lbfo has no counterpart")),
            }
        }
        if script.command.is_empty() {
            return self.error(&s.at, format!("vrrp_script {name} has no script"));
        }
        self.scripts.insert(name, (script, s.at.clone()));
    }

    /// A script line as a program and its arguments. keepalived looks the
    /// program up in PATH when it runs it; lbfo runs it by absolute path,
    /// so the lookup happens here, once.
    fn command(&mut self, c: &Stmt) -> Option<Vec<String>> {
        let text = c.args().join(" ");
        let mut words: Vec<String> = text.split_whitespace().map(String::from).collect();
        // keepalived strips quotes inside a script string too.
        for w in &mut words {
            *w = w.trim_matches(|ch| ch == '\'' || ch == '"').to_string();
        }
        let Some(program) = words.first().cloned() else {
            self.error(&c.at, format!("{} is empty", c.keyword()));
            return None;
        };
        if !program.starts_with('/') {
            let found = std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join(&program))
                    .find(|p| p.is_file())
            });
            match found {
                Some(path) => {
                    self.warn(
                        &c.at,
                        format!(
                            "{program} written as {} (lbfo runs checks by absolute path, without PATH)",
                            path.display()
                        ),
                    );
                    words[0] = path.to_string_lossy().into_owned();
                }
                None => {
                    self.error(
                        &c.at,
                        format!(
                            "{program} is not an absolute path and is not in PATH here; lbfo runs checks by absolute path"
                        ),
                    );
                    return None;
                }
            }
        }
        Some(words)
    }

    fn instance(&mut self, s: &Stmt) {
        let name = s
            .args()
            .first()
            .cloned()
            .unwrap_or_else(|| "vrrp".to_string());
        let mut vip = Vip {
            name: vip_name(&name),
            from: format!("{} vrrp_instance {name}", s.at),
            ..Vip::default()
        };
        let mut vrid = None;
        let mut priority: Option<u64> = None;
        let mut advert_ms: u64 = 1000;
        let mut advert_at = s.at.clone();
        let mut version = self.version.unwrap_or(2);
        let mut auth: Option<(String, Loc)> = None;
        for c in s.children() {
            let at = &c.at;
            match c.keyword() {
                "state" => {
                    if c.args().first().is_some_and(|a| a == "MASTER") {
                        self.warn(
                            at,
                            "state MASTER: lbfo always starts as Backup (RFC 5798 section 6.4.1) and becomes Master once no better router has advertised for Master_Down_Interval (about 3.6 s at advert_int 1), where keepalived would take over at once",
                        );
                    }
                }
                "interface" => {
                    if let Some(ifname) = c.args().first() {
                        self.interface_is(ifname, at);
                    }
                }
                "virtual_router_id" => vrid = self.number(c, 1..=255),
                "priority" => priority = self.number(c, 1..=255),
                "advert_int" => {
                    advert_ms = self.seconds(c).unwrap_or(1000);
                    advert_at = at.clone();
                }
                "version" => {
                    if let Some(v) = self.number(c, 2..=3) {
                        version = v as u8;
                    }
                }
                "nopreempt" => vip.keys.push(("preempt", false.into())),
                "preempt" => {}
                "preempt_delay" => {
                    if let Some(ms) = self.seconds(c) {
                        vip.keys.push(("preempt_delay_ms", (ms as i64).into()));
                    }
                }
                "unicast_src_ip" => self.warn(
                    at,
                    "unicast_src_ip ignored: lbfo advertises from the interface's first address of its own",
                ),
                "unicast_peer" => {
                    let peers: Vec<toml::Value> = c
                        .children()
                        .iter()
                        .filter_map(|p| match p.keyword().parse::<Ipv4Addr>() {
                            Ok(a) => Some(a.to_string().into()),
                            Err(_) => {
                                self.error(&p.at, format!("unicast_peer {:?} is not an IPv4 address", p.keyword()));
                                None
                            }
                        })
                        .collect();
                    vip.keys.push(("unicast_peers", peers.into()));
                }
                "authentication" => auth = self.authentication(c),
                "virtual_ipaddress" => {
                    for a in c.children() {
                        if let Some(address) = self.address(a) {
                            vip.addresses.push(address);
                        }
                    }
                }
                "virtual_ipaddress_excluded" => self.error(
                    at,
                    "virtual_ipaddress_excluded: lbfo moves only advertised addresses; list them in virtual_ipaddress",
                ),
                "track_script" => {
                    for t in c.children() {
                        self.track_script(t, &mut vip);
                    }
                }
                "track_interface" => {
                    for t in c.children() {
                        let same = self
                            .interface
                            .as_ref()
                            .is_some_and(|(i, _)| i == t.keyword());
                        if same {
                            self.warn(&t.at, format!("track_interface {}: lbfo puts its VIPs in fault whenever its own interface loses its link", t.keyword()));
                        } else {
                            self.warn(&t.at, format!("track_interface {} not imported: lbfo watches only its own interface's link", t.keyword()));
                        }
                    }
                }
                "notify" => {
                    if let Some(command) = self.command(c) {
                        if command.len() > 1 {
                            self.warn(at, "notify arguments dropped: lbfo runs the script as `SCRIPT NAME OLD NEW`");
                        }
                        vip.keys.push(("notify", command[0].clone().into()));
                        self.warn(
                            at,
                            "notify: lbfo calls it as `SCRIPT NAME OLD NEW` (states initialize, backup, master, fault), keepalived as `SCRIPT INSTANCE|GROUP NAME STATE PRIORITY`: adapt the script to the arguments",
                        );
                    }
                }
                "notify_master" | "notify_backup" | "notify_fault" | "notify_stop" => {
                    if let Some(command) = self.command(c) {
                        let key = match c.keyword() {
                            "notify_master" => "notify_master",
                            "notify_backup" => "notify_backup",
                            "notify_fault" => "notify_fault",
                            _ => "notify_stop",
                        };
                        let argv: Vec<toml::Value> = command.into_iter().map(Into::into).collect();
                        vip.keys.push((key, argv.into()));
                    }
                }
                "garp_master_delay" => self.garp_delay(c),
                "garp_master_repeat" => {
                    if let Some(n) = self.number(c, 0..=100) {
                        self.garp.insert("count", (n, at.clone()));
                    }
                }
                "garp_master_refresh" => {
                    if let Some(ms) = self.seconds(c) {
                        self.garp.insert("refresh_ms", (ms, at.clone()));
                    }
                }
                "use_vmac" => self.warn(
                    at,
                    "use_vmac ignored: lbfo answers with the node's own MAC and moves clients with gratuitous ARP",
                ),
                k => self.warn(at, format!("{k} ignored: lbfo has no counterpart")),
            }
        }
        let Some(vrid) = vrid else {
            return self.error(
                &s.at,
                format!("vrrp_instance {name} has no virtual_router_id"),
            );
        };
        if vip.addresses.is_empty() {
            return self.error(
                &s.at,
                format!("vrrp_instance {name} has no IPv4 virtual_ipaddress"),
            );
        }
        let mut keys = vec![("vrid", toml::Value::from(i64::from(vrid as u8)))];
        keys.push((
            "priority",
            toml::Value::from(priority.unwrap_or(100) as i64),
        ));
        if version == 2 && !advert_ms.is_multiple_of(1000) {
            // keepalived rounds v2 intervals to whole seconds too.
            let rounded = (advert_ms.div_ceil(1000)).max(1) * 1000;
            self.warn(
                &advert_at,
                format!(
                    "advert_int {} s: VRRP version 2 carries whole seconds; {} s",
                    advert_ms as f64 / 1000.0,
                    rounded / 1000
                ),
            );
            advert_ms = rounded;
        }
        keys.push(("advert_interval_ms", (advert_ms as i64).into()));
        keys.push(("vrrp_version", i64::from(version).into()));
        match (auth, version) {
            (Some((pass, _)), 2) => keys.push(("auth_pass", pass.into())),
            (Some((_, at)), _) => self.warn(
                &at,
                "authentication ignored: VRRP version 3 has none (keepalived ignores it as well)",
            ),
            (None, _) => {}
        }
        keys.append(&mut vip.keys);
        vip.keys = keys;
        self.vips.push(vip);
    }

    fn authentication(&mut self, c: &Stmt) -> Option<(String, Loc)> {
        let mut pass = None;
        for a in c.children() {
            match (a.keyword(), a.args().first().map(String::as_str)) {
                ("auth_type", Some("PASS")) => {}
                ("auth_type", Some("AH")) => {
                    self.error(&a.at, "auth_type AH: lbfo does not speak IPsec AH authentication; use PASS (or none) on both keepalived nodes first");
                    return None;
                }
                ("auth_type", other) => {
                    self.error(&a.at, format!("auth_type {other:?} is not PASS or AH"));
                    return None;
                }
                ("auth_pass", Some(p)) => {
                    let mut p = p.to_string();
                    if p.len() > 8 {
                        self.warn(&a.at, "auth_pass longer than 8 characters: only the first 8 are sent (as keepalived does)");
                        let mut end = 8;
                        while !p.is_char_boundary(end) {
                            end -= 1;
                        }
                        p.truncate(end);
                    }
                    pass = Some((p, a.at.clone()));
                }
                (k, _) => self.warn(&a.at, format!("{k} ignored")),
            }
        }
        pass
    }

    /// One `virtual_ipaddress` line: `ADDRESS[/LEN] [dev IF] [options]`.
    fn address(&mut self, a: &Stmt) -> Option<(Ipv4Addr, u8)> {
        let text = a.keyword();
        let (addr, len) = match text.split_once('/') {
            Some((addr, len)) => (
                addr,
                len.parse::<u8>().ok().filter(|l| (1..=32).contains(l)),
            ),
            None => (text, Some(32)),
        };
        let (Ok(addr), Some(len)) = (addr.parse::<Ipv4Addr>(), len) else {
            if addr.parse::<std::net::Ipv6Addr>().is_ok() {
                self.error(&a.at, format!("{text}: lbfo serves IPv4 VIPs only"));
            } else {
                self.error(
                    &a.at,
                    format!("{text:?} is not an IPv4 address (a template placeholder?)"),
                );
            }
            return None;
        };
        let mut words = a.args().iter();
        while let Some(w) = words.next() {
            match w.as_str() {
                "dev" => {
                    if let Some(dev) = words.next() {
                        self.interface_is(dev, &a.at);
                    }
                }
                "brd" | "broadcast" | "scope" | "label" | "metric" | "preferred_lft"
                | "track_group" => {
                    words.next();
                    self.warn(
                        &a.at,
                        format!("{w} ignored: lbfo adds the address with its prefix only"),
                    );
                }
                other => self.warn(&a.at, format!("{other} ignored")),
            }
        }
        Some((addr, len))
    }

    fn interface_is(&mut self, ifname: &str, at: &Loc) {
        match &self.interface {
            None => self.interface = Some((ifname.to_string(), at.clone())),
            Some((first, first_at)) if first != ifname => {
                let message = format!(
                    "interface {ifname}: one lbfo daemon serves one interface, and {first} came first ({first_at}); import each interface's instances into a config of their own"
                );
                self.error(at, message);
            }
            Some(_) => {}
        }
    }

    fn track_script(&mut self, t: &Stmt, vip: &mut Vip) {
        let Some((script, _)) = self.scripts.get(t.keyword()).cloned() else {
            return self.error(
                &t.at,
                format!("track_script {}: no vrrp_script of that name", t.keyword()),
            );
        };
        let weight = match t.args() {
            [w, value, ..] if w == "weight" => {
                self.signed_word(value, &t.at, -253..=253).unwrap_or(0) as i32
            }
            _ => script.weight,
        };
        let interval_ms = script.interval_ms.max(10);
        let mut check: Check = vec![
            ("kind", "exec".into()),
            (
                "command",
                script
                    .command
                    .iter()
                    .map(|w| toml::Value::from(w.as_str()))
                    .collect::<Vec<_>>()
                    .into(),
            ),
            ("interval_ms", (interval_ms as i64).into()),
        ];
        let timeout = script.timeout_ms.unwrap_or(interval_ms);
        if timeout >= interval_ms {
            self.warn(
                &t.at,
                format!(
                    "{}: timeout {} ms is not below the interval; lbfo needs it shorter: {} ms",
                    t.keyword(),
                    timeout,
                    interval_ms - interval_ms / 10
                ),
            );
        }
        check.push((
            "timeout_ms",
            (timeout.min(interval_ms - interval_ms / 10) as i64).into(),
        ));
        check.push(("rise", i64::from(script.rise).into()));
        check.push(("fall", i64::from(script.fall).into()));
        if weight != 0 {
            check.push(("weight", i64::from(weight).into()));
        }
        vip.checks.push(check);
    }

    fn virtual_server(&mut self, s: &Stmt) {
        let (Some(ip), port) = (s.args().first(), s.args().get(1)) else {
            return self.error(&s.at, "virtual_server needs an address and a port");
        };
        let Ok(address) = ip.parse::<Ipv4Addr>() else {
            return self.error(&s.at, format!("virtual_server {ip}: lbfo balances IPv4 addresses (fwmark and IPv6 virtual servers are not imported)"));
        };
        let port: Option<u16> = port.and_then(|p| p.parse().ok());
        let mut delay_loop_ms = 60_000;
        let mut backends = Vec::new();
        for c in s.children() {
            let at = &c.at;
            match (c.keyword(), c.args().first().map(String::as_str)) {
                ("lb_kind", Some("DR")) => {}
                ("lb_kind", Some(kind)) => self.error(
                    at,
                    format!("lb_kind {kind}: lbfo balances by L2 direct server return (DR) only; backends must accept the VIP as a local address and answer clients directly (docs/BALANCING.md)"),
                ),
                ("delay_loop", _) => delay_loop_ms = self.seconds(c).unwrap_or(60_000),
                ("lb_algo", _) => self.warn(at, "lb_algo ignored: lbfo spreads new flows by Maglev consistent hashing, weighted"),
                ("protocol", _) | ("quorum", _) | ("hysteresis", _) | ("alpha", _) | ("omega", _) => {}
                ("persistence_timeout", _) | ("persistence_granularity", _) => self.warn(
                    at,
                    format!("{} ignored: lbfo keeps each connection on its backend but has no client persistence", c.keyword()),
                ),
                ("sorry_server", _) => self.warn(at, "sorry_server ignored: with no healthy backend lbfo drops new flows"),
                ("real_server", _) => {
                    if let Some(b) = self.real_server(c, port, delay_loop_ms) {
                        backends.push(b);
                    }
                }
                (k, _) => self.warn(at, format!("{k} ignored")),
            }
        }
        if port.is_some() {
            self.warn(
                &s.at,
                format!(
                    "virtual_server {ip} {}: lbfo balances every TCP and UDP port of the address",
                    port.unwrap_or(0)
                ),
            );
        }
        // The VIP that holds the address: an instance's, or one of its own.
        let at_vip = self
            .vips
            .iter()
            .position(|v| v.addresses.iter().any(|(a, _)| *a == address));
        let index = match at_vip {
            Some(i) if self.vips[i].addresses.len() > 1 => {
                return self.error(
                    &s.at,
                    format!("virtual_server {address}: its vrrp_instance has several addresses, and a balanced lbfo VIP has one; give {address} a vrrp_instance of its own"),
                );
            }
            Some(i) => i,
            None => {
                self.warn(&s.at, format!("virtual_server {address} is in no vrrp_instance: imported as a VIP without election (`lbfo own vs-{address}` on the node that should serve it)"));
                self.vips.push(Vip {
                    name: vip_name(&format!("vs-{address}")),
                    from: format!("{} virtual_server {address}", s.at),
                    addresses: vec![(address, 32)],
                    ..Vip::default()
                });
                self.vips.len() - 1
            }
        };
        let balance = self.vips[index].balance.get_or_insert_with(Vec::new);
        for b in backends {
            match balance.iter_mut().find(|have| have.address == b.address) {
                Some(have) => have.checks.extend(b.checks),
                None => balance.push(b),
            }
        }
    }

    fn real_server(
        &mut self,
        r: &Stmt,
        vs_port: Option<u16>,
        delay_loop_ms: u64,
    ) -> Option<Backend> {
        let Some(Ok(address)) = r.args().first().map(|a| a.parse::<Ipv4Addr>()) else {
            self.error(&r.at, "real_server needs an IPv4 address");
            return None;
        };
        let port: Option<u16> = r.args().get(1).and_then(|p| p.parse().ok());
        if port.is_some() && port != vs_port {
            self.error(&r.at, format!("real_server {address} port {}: direct server return cannot change the port ({})", port.unwrap_or(0), vs_port.unwrap_or(0)));
        }
        let mut backend = Backend {
            address,
            weight: 1,
            checks: Vec::new(),
        };
        for c in r.children() {
            match c.keyword() {
                "weight" => match self.number(c, 0..=1000) {
                    Some(0) => self.warn(&c.at, "weight 0 written as 1: use `lbfo drain` to give a backend no new flows"),
                    Some(w) => backend.weight = w as u32,
                    None => {}
                },
                "TCP_CHECK" | "HTTP_GET" | "SSL_GET" | "MISC_CHECK" | "PING_CHECK" => {
                    let port = port.or(vs_port).unwrap_or(80);
                    backend.checks.extend(self.backend_check(c, address, port, delay_loop_ms));
                }
                k if k.ends_with("_CHECK") => self.error(
                    &c.at,
                    format!("{k}: lbfo checks backends by TCP_CHECK, HTTP_GET, SSL_GET, MISC_CHECK or PING_CHECK; without a check this backend would never be taken out"),
                ),
                k => self.warn(&c.at, format!("{k} ignored")),
            }
        }
        Some(backend)
    }

    fn backend_check(
        &mut self,
        c: &Stmt,
        address: Ipv4Addr,
        port: u16,
        delay_loop_ms: u64,
    ) -> Vec<Check> {
        let mut connect_port = port;
        let mut connect_ip = address.to_string();
        let mut timeout_ms = 5000;
        let mut retry: u64 = 1;
        let mut urls: Vec<(String, Option<String>, Loc)> = Vec::new();
        let mut misc: Option<Vec<String>> = None;
        let mut virtualhost = None;
        for k in c.children() {
            match k.keyword() {
                "connect_port" => connect_port = self.number(k, 1..=65535).unwrap_or(port as u64) as u16,
                "connect_ip" => connect_ip = k.args().first().cloned().unwrap_or(connect_ip),
                "connect_timeout" | "misc_timeout" => timeout_ms = self.seconds(k).unwrap_or(5000),
                "retry" | "nb_get_retry" => retry = self.number(k, 0..=99).unwrap_or(1),
                "delay_before_retry" => self.warn(&k.at, "delay_before_retry: lbfo retries at the check's interval (delay_loop), so fall = retry + 1 takes that much longer"),
                "misc_path" => misc = self.command(k),
                "virtualhost" => virtualhost = k.args().first().cloned(),
                "url" => {
                    let mut path = "/".to_string();
                    let mut status = None;
                    for u in k.children() {
                        match u.keyword() {
                            "path" => path = u.args().first().cloned().unwrap_or(path),
                            "status_code" => status = u.args().first().cloned(),
                            "digest" => self.warn(&u.at, "digest ignored: lbfo checks the status code (body_contains can match text)"),
                            other => self.warn(&u.at, format!("{other} ignored")),
                        }
                    }
                    urls.push((path, status, k.at.clone()));
                }
                other => self.warn(&k.at, format!("{other} ignored")),
            }
        }
        let interval_ms = delay_loop_ms.max(10);
        if timeout_ms >= interval_ms {
            self.warn(&c.at, format!("connect_timeout {timeout_ms} ms is not below delay_loop {interval_ms} ms; lbfo needs it shorter"));
            timeout_ms = interval_ms - interval_ms / 10;
        }
        let common = |check: &mut Check| {
            check.push(("interval_ms", (interval_ms as i64).into()));
            check.push(("timeout_ms", (timeout_ms as i64).into()));
            check.push(("rise", 1.into()));
            check.push(("fall", ((retry + 1) as i64).into()));
        };
        let mut checks = Vec::new();
        match c.keyword() {
            "TCP_CHECK" => {
                let mut check: Check = vec![
                    ("kind", "tcp".into()),
                    ("address", format!("{connect_ip}:{connect_port}").into()),
                ];
                common(&mut check);
                checks.push(check);
            }
            "PING_CHECK" => {
                let mut check: Check =
                    vec![("kind", "icmp".into()), ("host", connect_ip.clone().into())];
                common(&mut check);
                checks.push(check);
            }
            "MISC_CHECK" => match misc {
                Some(command) => {
                    let mut check: Check = vec![
                        ("kind", "exec".into()),
                        (
                            "command",
                            command
                                .into_iter()
                                .map(toml::Value::from)
                                .collect::<Vec<_>>()
                                .into(),
                        ),
                    ];
                    common(&mut check);
                    checks.push(check);
                }
                None => self.error(&c.at, "MISC_CHECK without misc_path"),
            },
            kind => {
                let scheme = if kind == "SSL_GET" { "https" } else { "http" };
                if urls.is_empty() {
                    urls.push(("/".into(), None, c.at.clone()));
                }
                for (path, status, _) in urls {
                    let mut check: Check = vec![
                        ("kind", "http".into()),
                        (
                            "url",
                            format!("{scheme}://{connect_ip}:{connect_port}{path}").into(),
                        ),
                    ];
                    if let Some(status) = status {
                        check.push(("expect_status", status.into()));
                    }
                    if let Some(host) = &virtualhost {
                        let mut headers = toml::Table::new();
                        headers.insert("Host".into(), host.clone().into());
                        check.push(("headers", headers.into()));
                    }
                    if scheme == "https" {
                        // keepalived's SSL_GET does not verify the certificate either.
                        check.push(("tls_skip_verify", true.into()));
                    }
                    common(&mut check);
                    checks.push(check);
                }
            }
        }
        checks
    }

    fn number(&mut self, c: &Stmt, range: std::ops::RangeInclusive<u64>) -> Option<u64> {
        let word = c.args().first().map(String::as_str).unwrap_or("");
        match word.parse::<u64>() {
            Ok(n) if range.contains(&n) => Some(n),
            _ => {
                self.error(
                    &c.at,
                    format!(
                        "{} {word:?}: expected a number in {}..={} (a template placeholder?)",
                        c.keyword(),
                        range.start(),
                        range.end()
                    ),
                );
                None
            }
        }
    }

    fn signed(&mut self, c: &Stmt, range: std::ops::RangeInclusive<i64>) -> Option<i64> {
        let word = c.args().first().cloned().unwrap_or_default();
        self.signed_word(&word, &c.at, range)
    }

    fn signed_word(
        &mut self,
        word: &str,
        at: &Loc,
        range: std::ops::RangeInclusive<i64>,
    ) -> Option<i64> {
        match word.parse::<i64>() {
            Ok(n) if range.contains(&n) => Some(n),
            _ => {
                self.error(
                    at,
                    format!(
                        "{word:?}: expected a number in {}..={}",
                        range.start(),
                        range.end()
                    ),
                );
                None
            }
        }
    }

    /// A keepalived duration in seconds (decimals allowed), in milliseconds.
    fn seconds(&mut self, c: &Stmt) -> Option<u64> {
        let word = c.args().first().map(String::as_str).unwrap_or("");
        match word.parse::<f64>() {
            Ok(s) if (0.0..=86_400.0).contains(&s) => Some((s * 1000.0).round() as u64),
            _ => {
                self.error(
                    &c.at,
                    format!(
                        "{} {word:?}: expected seconds (a template placeholder?)",
                        c.keyword()
                    ),
                );
                None
            }
        }
    }

    fn render(&self) -> String {
        let mut out = String::from(
            "# Imported from keepalived by `lbfo import-keepalived`; see docs/MIGRATING.md.\n",
        );
        let value = |v: &toml::Value| v.to_string();
        let interface = self.interface.as_ref().map_or("eth0", |(i, _)| i.as_str());
        let _ = writeln!(out, "interface = {}", value(&interface.into()));
        if !self.garp.is_empty() {
            out.push_str("\n[garp]\n");
            for (key, (n, at)) in &self.garp {
                let n = match *key {
                    "refresh_ms" if *n > 0 => (*n).max(1000),
                    _ => *n,
                };
                let _ = writeln!(out, "{key} = {n}  # {at}");
            }
        }
        for vip in &self.vips {
            let _ = writeln!(out, "\n# {}", vip.from);
            out.push_str("[[vip]]\n");
            let _ = writeln!(out, "name = {}", value(&vip.name.as_str().into()));
            let addresses: Vec<toml::Value> = vip
                .addresses
                .iter()
                .map(|(a, l)| format!("{a}/{l}").into())
                .collect();
            if addresses.len() == 1 {
                let _ = writeln!(out, "address = {}", value(&addresses[0]));
            } else {
                let _ = writeln!(out, "addresses = {}", value(&addresses.into()));
            }
            for (key, v) in &vip.keys {
                let _ = writeln!(out, "{key} = {}", value(v));
            }
            if vip.balance.is_some() {
                out.push_str("mode = \"balance\"\n");
            }
            for check in &vip.checks {
                out.push_str("[[vip.check]]\n");
                for (key, v) in check {
                    let _ = writeln!(out, "{key} = {}", value(v));
                }
            }
            for b in vip.balance.iter().flatten() {
                out.push_str("[[vip.backend]]\n");
                let _ = writeln!(out, "address = \"{}\"", b.address);
                let _ = writeln!(out, "weight = {}", b.weight);
                for check in &b.checks {
                    out.push_str("[[vip.backend.check]]\n");
                    for (key, v) in check {
                        let _ = writeln!(out, "{key} = {}", value(v));
                    }
                }
            }
        }
        out
    }
}

/// A keepalived instance name as an lbfo VIP name (letters, digits, `-_.`).
fn vip_name(name: &str) -> String {
    let mut n: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if n.is_empty() || n.parse::<Ipv4Addr>().is_ok() {
        n.insert_str(0, "vip-");
    }
    n
}

#[cfg(test)]
mod tests;
