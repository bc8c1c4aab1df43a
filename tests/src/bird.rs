//! BIRD 2 (Debian's `bird2`) in lab hosts: one daemon per namespace with
//! its own config, control socket and pid file, in the foreground, killed
//! with the lab. The configs are the ones docs/SCALING.md gives, with the
//! BGP timers shortened for the lab.

use std::{net::Ipv4Addr, path::PathBuf, process::Stdio, time::Duration};

use anyhow::{Context as _, Result, bail};

use crate::lab::{Host, Lab, ip, netns_exec, wait_for};

/// The lbfo nodes' AS: they share one, as a fleet of equal nodes does.
pub const NODE_AS: u32 = 65001;
pub const ROUTER_AS: u32 = 65000;

/// BGP timers for the lab: sessions come up within a second or two of
/// start-up. Withdrawals do not wait for them (an UPDATE goes at once).
const LAB_TIMERS: &str = "hold time 3; keepalive time 1; connect delay time 1; connect retry time 1; error wait time 1, 2;";

pub struct Bird {
    pub host: Host,
    pub ctl: PathBuf,
    pub log: PathBuf,
    pub pid: u32,
}

impl Bird {
    /// Writes `config` and starts `bird -f` in the host's namespace;
    /// returns once it answers on its control socket.
    pub fn start(lab: &mut Lab, host: &Host, config: &str) -> Result<Bird> {
        let conf = lab.file(&format!("{}.bird.conf", host.name));
        std::fs::write(&conf, config)?;
        let ctl = lab.file(&format!("{}.bird.ctl", host.name));
        let pidfile = lab.file(&format!("{}.bird.pid", host.name));
        let log = lab.file(&format!("{}.bird.log", host.name));
        let pid = lab.spawn(
            netns_exec(&host.ns, "bird")
                .arg("-f")
                .arg("-c")
                .arg(&conf)
                .arg("-s")
                .arg(&ctl)
                .arg("-P")
                .arg(&pidfile)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log)?),
        )?;
        let bird = Bird {
            host: host.clone(),
            ctl,
            log,
            pid,
        };
        wait_for(
            Duration::from_secs(5),
            "BIRD to answer on its socket",
            || {
                if lab.try_wait(pid)?.is_some() {
                    bail!("bird exited at start-up: {}", bird.log_text());
                }
                Ok(bird.birdc(&["show", "status"]).is_ok())
            },
        )?;
        Ok(bird)
    }

    /// `birdc -s CTL ARGS`.
    pub fn birdc(&self, args: &[&str]) -> Result<String> {
        let out = netns_exec(&self.host.ns, "birdc")
            .arg("-s")
            .arg(&self.ctl)
            .args(args)
            .output()
            .context("running birdc (Debian package bird2)")?;
        if !out.status.success() {
            bail!(
                "birdc {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Whether BGP session `protocol` is up.
    pub fn established(&self, protocol: &str) -> Result<bool> {
        Ok(self
            .birdc(&["show", "protocols", protocol])?
            .contains("Established"))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// An lbfo node's BIRD: exports the addresses on `route_device` (the
/// announced route VIPs) to the router over eBGP, imports nothing.
pub fn node_config(node: Ipv4Addr, router: Ipv4Addr, route_device: &str) -> String {
    format!(
        r#"log stderr all;
router id {node};
protocol device {{ }}
protocol direct {{
    ipv4;
    interface "{route_device}";
}}
protocol bgp uplink {{
    local {node} as {NODE_AS};
    neighbor {router} as {ROUTER_AS};
    {LAB_TIMERS}
    ipv4 {{
        import none;
        export where source = RTS_DEVICE;
    }};
}}
"#
    )
}

/// The router's BIRD: one eBGP session per node, and the kernel protocol
/// installing one route with a nexthop per node announcing (`merge paths`).
pub fn router_config(router: Ipv4Addr, nodes: &[(String, Ipv4Addr)]) -> String {
    let mut config = format!(
        r#"log stderr all;
router id {router};
protocol device {{ }}
protocol kernel {{
    ipv4 {{
        import none;
        export all;
    }};
    merge paths on;
}}
template bgp lbfo_node {{
    local {router} as {ROUTER_AS};
    {LAB_TIMERS}
    ipv4 {{
        import all;
        export none;
    }};
}}
"#
    );
    for (name, addr) in nodes {
        config.push_str(&format!(
            "protocol bgp {name} from lbfo_node {{ neighbor {addr} as {NODE_AS}; }}\n"
        ));
    }
    config
}

/// The gateways of the kernel's route to `dst` (a host address) in `ns`,
/// sorted; empty without a route.
pub fn nexthops(ns: &str, dst: Ipv4Addr) -> Result<Vec<Ipv4Addr>> {
    let out = ip(ns, &["-j", "-4", "route", "show"])?;
    let routes: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let mut gateways = Vec::new();
    for route in routes.as_array().into_iter().flatten() {
        if route["dst"].as_str() != Some(&dst.to_string()) {
            continue;
        }
        let hops = match route["nexthops"].as_array() {
            Some(hops) => hops.clone(),
            None => vec![route.clone()],
        };
        for hop in hops {
            if let Some(gw) = hop["gateway"].as_str() {
                gateways.push(gw.parse()?);
            }
        }
    }
    gateways.sort();
    Ok(gateways)
}

/// Turns on IPv4 forwarding with L4 multipath hashing in `ns` (a router).
pub fn enable_ecmp_forwarding(ns: &str) -> Result<()> {
    for key in [
        "net.ipv4.ip_forward=1",
        "net.ipv4.fib_multipath_hash_policy=1",
    ] {
        crate::lab::run(netns_exec(ns, "sysctl").args(["-qw", key]))?;
    }
    Ok(())
}
