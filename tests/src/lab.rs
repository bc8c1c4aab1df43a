//! A small network lab made of namespaces: one "switch" namespace holding a
//! bridge, and one namespace per host, each wired to the bridge by a veth
//! link whose host end is called `eth0`. Everything the lab creates is
//! removed when the [`Lab`] is dropped, also when a test panics.
//!
//! Addresses come from the documentation ranges only (192.0.2.0/24 and the
//! other IPv4 ones, 2001:db8::/32), and traffic never leaves the
//! namespaces made here. Every host has an IPv6 address next to its IPv4
//! one (see [`ipv6_of`]).
//!
//! Duplicate address detection is off in lab namespaces (`accept_dad = 0`):
//! a fresh namespace's addresses are then usable at once instead of
//! tentative for a second or more, and no test waits on it. lbfo adds its
//! IPv6 VIPs without detection anyway (IFA_F_NODAD).

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::AsFd as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// Prefix of every namespace a lab creates: `lbfot<pid>x<n>-<name>`.
const PREFIX: &str = "lbfot";
pub const LAB_PREFIX_LEN: u8 = 24;
pub const LAB_PREFIX_LEN6: u8 = 64;

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// A host in the lab: a namespace with one interface, `eth0`.
#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub ns: String,
    pub ifname: String,
    pub mac: [u8; 6],
    pub addr: Ipv4Addr,
    /// The host's IPv6 address, [`ipv6_of`] its IPv4 one.
    pub addr6: Ipv6Addr,
}

/// A lab host's IPv6 address: the last two octets of its IPv4 address, their
/// decimal digits read as hexadecimal, in 2001:db8::/32, so that 192.0.2.11
/// is 2001:db8:2::11 and each IPv4 segment has a /64 of its own.
pub fn ipv6_of(addr: Ipv4Addr) -> Ipv6Addr {
    let [_, _, segment, host] = addr.octets();
    let digits = |octet: u8| u16::from_str_radix(&octet.to_string(), 16).expect("decimal digits");
    Ipv6Addr::new(0x2001, 0xdb8, digits(segment), 0, 0, 0, 0, digits(host))
}

pub struct Lab {
    id: String,
    switch_ns: String,
    namespaces: Vec<String>,
    children: Vec<Child>,
    /// Keeps the pass programs on the switch ports attached (bpf_link lives with the fd).
    pass_programs: Vec<aya::Ebpf>,
    pub dir: PathBuf,
}

/// Runs a command and fails with its stderr if it does not succeed.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .output()
        .with_context(|| format!("could not start {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// `ip -n NS args...`
pub fn ip(ns: &str, args: &[&str]) -> Result<Output> {
    run(Command::new("ip").arg("-n").arg(ns).args(args))
}

/// A command run inside a namespace (`ip netns exec NS program`).
pub fn netns_exec(ns: &str, program: &str) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, program]);
    cmd
}

impl Lab {
    /// Creates the switch namespace and its bridge.
    pub fn new() -> Result<Lab> {
        remove_leftovers();
        let n = NEXT_LAB.fetch_add(1, Ordering::Relaxed);
        let id = format!("{PREFIX}{}x{n}", std::process::id());
        let dir = std::env::temp_dir().join(&id);
        std::fs::create_dir_all(&dir)?;
        let mut lab = Lab {
            switch_ns: format!("{id}-sw"),
            id,
            namespaces: Vec::new(),
            children: Vec::new(),
            pass_programs: Vec::new(),
            dir,
        };
        let sw = lab.switch_ns.clone();
        lab.add_namespace(&sw)?;
        ip(
            &sw,
            &[
                "link",
                "add",
                "br0",
                "type",
                "bridge",
                "stp_state",
                "0",
                "forward_delay",
                "0",
            ],
        )?;
        ip(&sw, &["link", "set", "br0", "up"])?;
        Ok(lab)
    }

    fn add_namespace(&mut self, ns: &str) -> Result<()> {
        run(Command::new("ip").args(["netns", "add", ns]))?;
        self.namespaces.push(ns.to_string());
        // Before any link exists, so every interface made later inherits it.
        for scope in ["all", "default"] {
            set_sysctl(ns, &format!("net/ipv6/conf/{scope}/accept_dad"), "0")?;
        }
        ip(ns, &["link", "set", "lo", "up"])?;
        Ok(())
    }

    /// Adds a host `name` at `addr`/24, wired to the bridge.
    pub fn add_host(&mut self, name: &str, addr: Ipv4Addr) -> Result<Host> {
        self.add_host_on(name, addr, "br0")
    }

    /// Adds a second segment: a bridge `bridge` in the switch namespace.
    pub fn add_segment(&mut self, bridge: &str) -> Result<()> {
        let sw = self.switch_ns.clone();
        ip(
            &sw,
            &[
                "link",
                "add",
                bridge,
                "type",
                "bridge",
                "stp_state",
                "0",
                "forward_delay",
                "0",
            ],
        )?;
        ip(&sw, &["link", "set", bridge, "up"]).map(drop)
    }

    /// Adds a host `name` at `addr`/24 on segment `bridge` (see
    /// [`Lab::add_segment`]; the lab's own is `br0`).
    pub fn add_host_on(&mut self, name: &str, addr: Ipv4Addr, bridge: &str) -> Result<Host> {
        let ns = format!("{}-{name}", self.id);
        self.add_namespace(&ns)?;
        self.wire(&ns, name, "eth0", addr, bridge)?;
        let mac = link_mac(&ns, "eth0")?;
        Ok(Host {
            name: name.to_string(),
            ns,
            ifname: "eth0".into(),
            mac,
            addr,
            addr6: ipv6_of(addr),
        })
    }

    /// Gives `host` one more interface `ifname` at `addr`/24 on segment
    /// `bridge` (a router between two segments).
    pub fn add_interface(
        &mut self,
        host: &Host,
        ifname: &str,
        addr: Ipv4Addr,
        bridge: &str,
    ) -> Result<()> {
        let port = format!("{}-{ifname}", host.name);
        self.wire(&host.ns, &port, ifname, addr, bridge)
    }

    /// A veth from switch port `port` on `bridge` to `ifname` in `ns`.
    fn wire(
        &mut self,
        ns: &str,
        port: &str,
        ifname: &str,
        addr: Ipv4Addr,
        bridge: &str,
    ) -> Result<()> {
        let sw = self.switch_ns.clone();
        ip(
            &sw,
            &[
                "link", "add", port, "type", "veth", "peer", "name", ifname, "netns", ns,
            ],
        )?;
        ip(&sw, &["link", "set", port, "master", bridge])?;
        ip(&sw, &["link", "set", port, "up"])?;
        ip(
            ns,
            &[
                "addr",
                "add",
                &format!("{addr}/{LAB_PREFIX_LEN}"),
                "dev",
                ifname,
            ],
        )?;
        ip(
            ns,
            &[
                "addr",
                "add",
                &format!("{}/{LAB_PREFIX_LEN6}", ipv6_of(addr)),
                "dev",
                ifname,
            ],
        )?;
        ip(ns, &["link", "set", ifname, "up"])?;
        // Native XDP_TX from the host's end only arrives if this end runs XDP too.
        self.attach_pass(port)
    }

    /// The lab most tests and benchmarks use: a client at 192.0.2.2 and
    /// `nodes` hosts n1, n2, ... at 192.0.2.11, .12, ...
    pub fn with_client_and_nodes(nodes: usize) -> Result<(Lab, Host, Vec<Host>)> {
        let mut lab = Lab::new()?;
        let client = lab.add_host("client", Ipv4Addr::new(192, 0, 2, 2))?;
        let nodes = (0..nodes)
            .map(|i| {
                lab.add_host(
                    &format!("n{}", i + 1),
                    Ipv4Addr::new(192, 0, 2, 11 + i as u8),
                )
            })
            .collect::<Result<_>>()?;
        Ok((lab, client, nodes))
    }

    /// Namespace of the switch (the bridge and the far ends of all links).
    pub fn switch_ns(&self) -> &str {
        &self.switch_ns
    }

    fn attach_pass(&mut self, port: &str) -> Result<()> {
        let ns_path = format!("/var/run/netns/{}", self.switch_ns);
        let port = port.to_string();
        let ebpf = std::thread::scope(|s| {
            s.spawn(|| -> Result<aya::Ebpf> {
                let ns = std::fs::File::open(&ns_path)?;
                nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                    .context("entering the switch namespace")?;
                let mut ebpf = aya::Ebpf::load(lbfo::datapath::XDP_OBJECT)?;
                let pass: &mut aya::programs::Xdp = ebpf
                    .program_mut("lbfo_pass")
                    .context("no lbfo_pass")?
                    .try_into()?;
                pass.load()?;
                let index = nix::net::if_::if_nametoindex(port.as_str())?;
                pass.attach(index, aya::programs::XdpMode::Driver)?;
                Ok(ebpf)
            })
            .join()
            .expect("attach thread panicked")
        })?;
        self.pass_programs.push(ebpf);
        Ok(())
    }

    /// Starts a process that is killed when the lab is dropped.
    pub fn spawn(&mut self, cmd: &mut Command) -> Result<u32> {
        let child = cmd
            .spawn()
            .with_context(|| format!("could not start {cmd:?}"))?;
        let pid = child.id();
        self.children.push(child);
        Ok(pid)
    }

    /// Waits for a process started with [`Lab::spawn`] to exit.
    pub fn wait(&mut self, pid: u32, within: Duration) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        let child = self
            .children
            .iter_mut()
            .find(|c| c.id() == pid)
            .context("no such child")?;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("process {pid} did not exit within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether a process started with [`Lab::spawn`] has exited (and how).
    pub fn try_wait(&mut self, pid: u32) -> Result<Option<std::process::ExitStatus>> {
        let child = self
            .children
            .iter_mut()
            .find(|c| c.id() == pid)
            .context("no such child")?;
        Ok(child.try_wait()?)
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.pass_programs.clear();
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Namespaces left by a lab whose process died without cleaning up.
fn remove_leftovers() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid: u32 = rest
            .split('x')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        if pid != 0 && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// Drops, in namespace `ns`, every input packet that `matches` (an nftables
/// match such as `ip protocol 112`), in a table called `table` that
/// [`allow_input`] removes again.
pub fn drop_input(ns: &str, table: &str, matches: &str) -> Result<()> {
    run(netns_exec(ns, "nft").args(["add", "table", "inet", table]))?;
    run(netns_exec(ns, "nft").args([
        "add",
        "chain",
        "inet",
        table,
        "input",
        "{ type filter hook input priority 0; }",
    ]))?;
    run(netns_exec(ns, "nft")
        .args(["add", "rule", "inet", table, "input"])
        .args(matches.split_whitespace())
        .arg("drop"))?;
    Ok(())
}

/// Removes a table made by [`drop_input`].
pub fn allow_input(ns: &str, table: &str) -> Result<()> {
    run(netns_exec(ns, "nft").args(["delete", "table", "inet", table])).map(drop)
}

/// Sets a neighbour entry by hand, as a client that learned (or believes) it.
pub fn set_neighbour(
    ns: &str,
    ifname: &str,
    addr: impl Into<std::net::IpAddr>,
    mac: &[u8; 6],
    state: &str,
) -> Result<()> {
    let mac = mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    ip(
        ns,
        &[
            "neigh",
            "replace",
            &addr.into().to_string(),
            "lladdr",
            &mac,
            "dev",
            ifname,
            "nud",
            state,
        ],
    )
    .map(drop)
}

/// Writes a sysctl of namespace `ns` (`key` as under /proc/sys, like
/// `net/ipv6/conf/all/accept_dad`).
pub fn set_sysctl(ns: &str, key: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/{key}");
    // /proc/sys/net is the namespace of the thread that opens it.
    in_netns(ns, || std::fs::write(&path, value))?
        .with_context(|| format!("writing {path} in {ns}"))
}

/// Runs `f` on a thread inside namespace `ns`. Sockets it creates stay in
/// that namespace and can be used from any thread afterwards.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| -> Result<T> {
            enter_netns(ns)?;
            Ok(f())
        })
        .join()
        .expect("namespace thread panicked")
    })
}

/// Moves the calling thread into namespace `ns`, for a thread of its own
/// that lives there (the rest of the process stays where it is).
pub fn enter_netns(ns: &str) -> Result<()> {
    let path = format!("/var/run/netns/{ns}");
    let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("entering namespace {ns}"))
}

pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let bytes: Vec<u8> = s
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("bad MAC {s:?}"))?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("bad MAC {s:?}"))
}

pub fn link_mac(ns: &str, ifname: &str) -> Result<[u8; 6]> {
    let out = ip(ns, &["-j", "link", "show", ifname])?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    parse_mac(v[0]["address"].as_str().context("no address")?)
}

/// The IPv4 addresses on an interface, as "a.b.c.d/len".
pub fn addresses(ns: &str, ifname: &str) -> Result<Vec<String>> {
    let out = ip(ns, &["-j", "-4", "addr", "show", "dev", ifname])?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(v[0]["addr_info"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| format!("{}/{}", i["local"].as_str().unwrap_or(""), i["prefixlen"]))
                .collect()
        })
        .unwrap_or_default())
}

/// The IPv6 addresses on an interface as `ip -j` gives them (`local`,
/// `prefixlen`, `nodad`, `deprecated`, `preferred_life_time`, ...).
pub fn addresses6(ns: &str, ifname: &str) -> Result<Vec<serde_json::Value>> {
    let out = ip(ns, &["-j", "-6", "addr", "show", "dev", ifname])?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(v[0]["addr_info"].as_array().cloned().unwrap_or_default())
}

/// The id of the XDP program attached to an interface, if any.
pub fn attached_xdp(ns: &str, ifname: &str) -> Result<Option<u64>> {
    let out = ip(ns, &["-j", "link", "show", ifname])?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(v[0]["xdp"]["prog"]["id"].as_u64())
}

/// The MAC the namespace's neighbour table holds for `addr`, if any.
pub fn neighbour_mac(
    ns: &str,
    ifname: &str,
    addr: impl Into<std::net::IpAddr>,
) -> Result<Option<[u8; 6]>> {
    Ok(neighbour(ns, ifname, addr)?.and_then(|(mac, _)| mac))
}

/// A neighbour entry: its MAC (none while unresolved) and its states.
pub type NeighbourEntry = (Option<[u8; 6]>, Vec<String>);

/// The namespace's neighbour entry for `addr`, if any: its MAC (none while
/// unresolved) and its states, like `["STALE"]` or `["REACHABLE"]`.
pub fn neighbour(
    ns: &str,
    ifname: &str,
    addr: impl Into<std::net::IpAddr>,
) -> Result<Option<NeighbourEntry>> {
    let out = ip(
        ns,
        &[
            "-j",
            "neigh",
            "show",
            &addr.into().to_string(),
            "dev",
            ifname,
        ],
    )?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let Some(entry) = v.get(0) else {
        return Ok(None);
    };
    let mac = entry["lladdr"].as_str().map(parse_mac).transpose()?;
    let states = entry["state"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    Ok(Some((mac, states)))
}

/// Sends `count` ARP requests for `target`, `interval` apart, with Debian's
/// `arping` from inside `ns`, and returns the MAC of every reply.
pub fn arping(
    ns: &str,
    ifname: &str,
    target: Ipv4Addr,
    count: u32,
    interval: Duration,
) -> Result<Vec<[u8; 6]>> {
    let deadline = interval * (count + 1);
    let out = netns_exec(ns, "arping")
        .args(["-c", &count.to_string()])
        .args(["-W", &format!("{:.3}", interval.as_secs_f64())])
        .args(["-w", &format!("{:.3}", deadline.as_secs_f64())])
        .args(["-i", ifname, &target.to_string()])
        .output()
        .context("running arping (Debian package arping)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    // Replies look like: "42 bytes from 02:00:00:00:00:01 (192.0.2.100): index=0 time=..."
    text.lines()
        .filter(|l| l.contains(" bytes from "))
        .map(|l| {
            let mac = l
                .split(" bytes from ")
                .nth(1)
                .and_then(|r| r.split_whitespace().next());
            parse_mac(mac.unwrap_or_default())
        })
        .collect()
}

/// Sends one Neighbour Solicitation for `target` to its solicited-node
/// group with `ndisc6` (Debian package ndisc6) from inside `ns`, waits
/// `wait` for answers and returns the Target Link-Layer Address of every one.
pub fn ndisc6(ns: &str, ifname: &str, target: Ipv6Addr, wait: Duration) -> Result<Vec<[u8; 6]>> {
    let out = netns_exec(ns, "ndisc6")
        .args(["-m", "-n", "-q", "-r", "1"])
        .args(["-w", &wait.as_millis().to_string()])
        .args([&target.to_string(), ifname])
        .output()
        .context("running ndisc6 (Debian package ndisc6)")?;
    // -q prints one MAC a line, nothing when no one answers (exit status 2).
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(parse_mac)
        .collect()
}

/// Polls `condition` every few milliseconds until it holds or `within` has
/// passed; returns how long it took.
pub fn wait_for(
    within: Duration,
    what: &str,
    mut condition: impl FnMut() -> Result<bool>,
) -> Result<Duration> {
    let start = Instant::now();
    loop {
        if condition()? {
            return Ok(start.elapsed());
        }
        if start.elapsed() > within {
            bail!("timed out after {within:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
