//! keepalived (Debian's package) as a peer in the lab: VRRP version 3 by
//! default, or its own default, version 2, with `auth_type PASS`.

use std::{fmt::Write as _, net::IpAddr, process::Stdio, time::Duration};

use anyhow::{Context as _, Result, bail};

use crate::lab::{Host, Lab, addresses, addresses6, netns_exec, wait_for};

#[derive(Clone, Debug)]
pub struct KeepalivedConfig {
    pub vrid: u8,
    pub priority: u8,
    pub advert_interval: Duration,
    pub vip_cidr: String,
    pub preempt: bool,
    pub unicast_peers: Vec<IpAddr>,
    /// `vrrp_version`: 3, or 2 (keepalived's own default).
    pub version: u8,
    /// `authentication { auth_type PASS; auth_pass ... }` (version 2).
    pub auth_pass: Option<String>,
    /// Addresses after `vip_cidr` in the same `virtual_ipaddress` block.
    pub more_vips: Vec<String>,
}

impl KeepalivedConfig {
    /// One VRRPv3 instance over multicast with preempt on, keepalived's
    /// defaults (and lbfo's); set `unicast_peers` or `preempt` on the result.
    pub fn new(vrid: u8, priority: u8, advert_interval: Duration, vip_cidr: &str) -> Self {
        KeepalivedConfig {
            vrid,
            priority,
            advert_interval,
            vip_cidr: vip_cidr.into(),
            preempt: true,
            unicast_peers: vec![],
            version: 3,
            auth_pass: None,
            more_vips: vec![],
        }
    }
}

pub struct Keepalived {
    pub host: Host,
    pub pid: u32,
    /// The configuration file it runs (what `lbfo import-keepalived` reads).
    pub conf: std::path::PathBuf,
    pub log: std::path::PathBuf,
    pub vip_cidr: String,
}

impl Keepalived {
    pub fn start(lab: &mut Lab, host: &Host, config: &KeepalivedConfig) -> Result<Keepalived> {
        let dir = lab.file(&format!("keepalived-{}", host.name));
        std::fs::create_dir_all(&dir)?;
        let conf = dir.join("keepalived.conf");
        std::fs::write(&conf, render(host, config))?;
        let log = dir.join("keepalived.log");
        let pid = lab.spawn(
            netns_exec(&host.ns, "keepalived")
                .args(["-n", "-l", "-D", "-f"])
                .arg(&conf)
                .arg("-p")
                .arg(dir.join("keepalived.pid"))
                .arg("-r")
                .arg(dir.join("vrrp.pid"))
                .arg("-c")
                .arg(dir.join("checkers.pid"))
                .stdout(Stdio::null())
                // `-l` logs to the console, which is stderr.
                .stderr(std::fs::File::create(&log)?),
        )?;
        Ok(Keepalived {
            host: host.clone(),
            pid,
            conf,
            log,
            vip_cidr: config.vip_cidr.clone(),
        })
    }

    /// The lines keepalived logged so far that contain `text`.
    pub fn log_lines_with(&self, text: &str) -> usize {
        self.log_text().lines().filter(|l| l.contains(text)).count()
    }

    /// keepalived adds the VIP to its interface exactly while it is Master.
    pub fn is_master(&self) -> Result<bool> {
        if self.vip_cidr.contains(':') {
            return Ok(addresses6(&self.host.ns, &self.host.ifname)?
                .iter()
                .any(|a| {
                    format!("{}/{}", a["local"].as_str().unwrap_or(""), a["prefixlen"])
                        == self.vip_cidr
                }));
        }
        Ok(addresses(&self.host.ns, &self.host.ifname)?.contains(&self.vip_cidr))
    }

    pub fn wait_master(&self, within: Duration) -> Result<Duration> {
        wait_for(within, "keepalived to become Master", || self.is_master())
            .with_context(|| format!("keepalived log:\n{}", self.log_text()))
    }

    pub fn wait_backup(&self, within: Duration) -> Result<Duration> {
        wait_for(within, "keepalived to leave Master", || {
            Ok(!self.is_master()?)
        })
        .with_context(|| format!("keepalived log:\n{}", self.log_text()))
    }

    /// Graceful stop: keepalived sends a priority-0 advertisement.
    pub fn stop(&self, lab: &mut Lab) -> Result<()> {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        let status = lab.wait(self.pid, Duration::from_secs(10))?;
        if !status.success() {
            bail!("keepalived exited with {status}");
        }
        Ok(())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn render(host: &Host, c: &KeepalivedConfig) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "global_defs {{\n    vrrp_version {}\n    router_id {}\n    vrrp_garp_master_delay 0\n}}",
        c.version, host.name
    );
    let _ = writeln!(s, "vrrp_instance lbfo_lab {{");
    let _ = writeln!(
        s,
        "    state BACKUP\n    interface {}\n    virtual_router_id {}\n    priority {}",
        host.ifname, c.vrid, c.priority
    );
    let _ = writeln!(s, "    advert_int {:.2}", c.advert_interval.as_secs_f64());
    if !c.preempt {
        let _ = writeln!(s, "    nopreempt");
    }
    if !c.unicast_peers.is_empty() {
        let _ = writeln!(s, "    unicast_src_ip {}\n    unicast_peer {{", host.addr);
        for p in &c.unicast_peers {
            let _ = writeln!(s, "        {p}");
        }
        let _ = writeln!(s, "    }}");
    }
    if let Some(pass) = &c.auth_pass {
        let _ = writeln!(
            s,
            "    authentication {{\n        auth_type PASS\n        auth_pass {pass}\n    }}"
        );
    }
    let _ = writeln!(s, "    virtual_ipaddress {{");
    for vip in std::iter::once(&c.vip_cidr).chain(&c.more_vips) {
        let _ = writeln!(s, "        {vip} dev {}", host.ifname);
    }
    let _ = writeln!(s, "    }}\n}}");
    s
}
