//! An `lbfo run` daemon inside a lab host, driven through the real `lbfo` CLI.

use std::{
    path::PathBuf,
    process::{Command, Output, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use lbfo::status::Status;

use crate::lab::{Host, Lab, netns_exec};

/// The release `lbfo` binary (`cargo build --release`; `cargo xtask test` builds it).
pub fn lbfo_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("LBFO_BIN") {
        return PathBuf::from(path);
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/lbfo");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build --release` (cargo xtask test does)",
        path.display()
    );
    path
}

/// How [`LbfoNode::start_with`] runs `lbfo run`.
#[derive(Clone, Debug)]
pub struct StartOptions {
    /// `LBFO_LOG`.
    pub log_filter: String,
    /// Arguments after `run -c CONFIG --socket SOCKET`.
    pub args: Vec<String>,
    /// Environment variables besides `LBFO_LOG`.
    pub env: Vec<(String, String)>,
    /// Run the daemon through `setpriv` with only these capabilities (a
    /// bounding set such as `-all,+net_admin`) and no new privileges, as a
    /// hardened service unit would; `None`: with all of root's.
    pub capabilities: Option<String>,
}

impl Default for StartOptions {
    fn default() -> StartOptions {
        StartOptions {
            log_filter: "debug".into(),
            args: Vec::new(),
            env: Vec::new(),
            capabilities: None,
        }
    }
}

pub struct LbfoNode {
    pub host: Host,
    pub socket: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    pub pid: u32,
}

impl LbfoNode {
    /// Writes `config` and starts `lbfo run` in the host's namespace, logging
    /// at debug level; returns once the daemon answers on its control socket.
    pub fn start(lab: &mut Lab, host: &Host, config: &str) -> Result<LbfoNode> {
        Self::start_logging(lab, host, config, "debug")
    }

    /// [`LbfoNode::start`] with `LBFO_LOG` set to `log_filter`: benchmarks
    /// log at "info" as a deployment would, since debug logs every failed
    /// probe, which at thousands of checks is a cost of its own.
    pub fn start_logging(
        lab: &mut Lab,
        host: &Host,
        config: &str,
        log_filter: &str,
    ) -> Result<LbfoNode> {
        let options = StartOptions {
            log_filter: log_filter.into(),
            ..StartOptions::default()
        };
        Self::start_with(lab, host, config, &options)
    }

    /// [`LbfoNode::start`] with more arguments to `lbfo run` and more
    /// environment variables.
    pub fn start_with(
        lab: &mut Lab,
        host: &Host,
        config: &str,
        options: &StartOptions,
    ) -> Result<LbfoNode> {
        let config_path = lab.file(&format!("{}.toml", host.name));
        std::fs::write(&config_path, config)?;
        let socket = Self::socket_path(lab, host);
        let log = lab.file(&format!("{}.log", host.name));
        let mut command = match &options.capabilities {
            Some(bounding) => {
                let mut command = netns_exec(&host.ns, "setpriv");
                command
                    .arg(format!("--bounding-set={bounding}"))
                    .args(["--inh-caps=-all", "--no-new-privs", "--"])
                    .arg(lbfo_bin());
                command
            }
            None => netns_exec(&host.ns, lbfo_bin().to_str().expect("utf-8 path")),
        };
        let pid = lab.spawn(
            command
                .arg("run")
                .arg("-c")
                .arg(&config_path)
                .arg("--socket")
                .arg(&socket)
                .args(&options.args)
                .env("LBFO_LOG", &options.log_filter)
                .envs(options.env.iter().map(|(k, v)| (k, v)))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log)?),
        )?;
        let node = LbfoNode {
            host: host.clone(),
            socket,
            config: config_path,
            log,
            pid,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = lab.try_wait(pid)? {
                bail!(
                    "lbfo exited during start-up ({status}):\n{}",
                    node.log_text()
                );
            }
            if node.cli(&["status"]).is_ok_and(|o| o.status.success()) {
                break;
            }
            if std::time::Instant::now() > deadline {
                bail!(
                    "lbfo did not answer on its control socket within 10 s; log:\n{}",
                    node.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(node)
    }

    /// The control socket [`LbfoNode::start`] gives the daemon on `host`,
    /// for a test that talks to it before `start` returns.
    pub fn socket_path(lab: &Lab, host: &Host) -> PathBuf {
        lab.file(&format!("{}.sock", host.name))
    }

    /// Runs `lbfo ARGS --socket SOCKET` (the socket is a path, reachable from any namespace).
    pub fn cli(&self, args: &[&str]) -> Result<Output> {
        Command::new(lbfo_bin())
            .args(args)
            .arg("--socket")
            .arg(&self.socket)
            .output()
            .context("running lbfo")
    }

    /// [`LbfoNode::cli`], failing with lbfo's error if it does not succeed.
    pub fn cli_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.cli(args)?;
        if !out.status.success() {
            bail!(
                "lbfo {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn own(&self, vip: &str) -> Result<()> {
        self.cli_ok(&["own", vip]).map(drop)
    }

    pub fn release(&self, vip: &str) -> Result<()> {
        self.cli_ok(&["release", vip]).map(drop)
    }

    pub fn status(&self) -> Result<Status> {
        let text = self.cli_ok(&["status", "--json"])?;
        serde_json::from_str(&text).with_context(|| format!("status JSON: {text}"))
    }

    /// The state of VIP `name` (owner, standby, master, backup, fault), or
    /// why it cannot be had.
    pub fn vip_state(&self, name: &str) -> String {
        match self.status() {
            Ok(status) => status
                .vips
                .into_iter()
                .find(|v| v.name == name)
                .map(|v| v.state)
                .unwrap_or_else(|| format!("(no VIP {name})")),
            Err(e) => format!("(no status: {e:#})"),
        }
    }

    /// The state of the first VIP of the config (the one elected VIP of
    /// most election tests), or why it cannot be had.
    pub fn first_vip_state(&self) -> String {
        self.status()
            .map(|s| s.vips[0].state.clone())
            .unwrap_or_else(|e| format!("(no status: {e})"))
    }

    /// Waits until the first VIP is in state `want` and returns how long
    /// that took; panics with the state it is in and the daemon's log
    /// otherwise.
    pub fn expect_first_vip_state(&self, want: &str, within: Duration) -> Duration {
        crate::lab::wait_for(
            within,
            &format!("lbfo on {} to be {want}", self.host.name),
            || Ok(self.first_vip_state() == want),
        )
        .unwrap_or_else(|e| {
            panic!(
                "{e}; state is {}; log:\n{}",
                self.first_vip_state(),
                self.log_text()
            )
        })
    }

    /// Waits until VIP `name` is in state `want`; returns how long that took,
    /// or fails with the state it is in instead.
    pub fn wait_state(&self, name: &str, want: &str, within: Duration) -> Result<Duration> {
        crate::lab::wait_for(
            within,
            &format!("{name} on {} to be {want}", self.host.name),
            || Ok(self.vip_state(name) == want),
        )
        .map_err(|e| anyhow::anyhow!("{e} (it is {})", self.vip_state(name)))
    }

    /// Writes `config` as the daemon's config file and sends SIGHUP: a
    /// reload, which the daemon logs as done or refused.
    pub fn reload_with(&self, config: &str) -> Result<()> {
        std::fs::write(&self.config, config)?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid as i32),
            nix::sys::signal::Signal::SIGHUP,
        )?;
        Ok(())
    }

    /// SIGKILL: the daemon gets no chance to clean up.
    pub fn kill9(&self) -> Result<()> {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )?;
        Ok(())
    }

    /// SIGTERM without waiting for the exit, so a test can watch the
    /// graceful handover while lbfo shuts down; [`Lab::wait`] reaps it.
    pub fn terminate(&self) -> Result<()> {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        Ok(())
    }

    /// SIGTERM and wait for the exit status.
    pub fn stop(&self, lab: &mut Lab) -> Result<std::process::ExitStatus> {
        self.terminate()?;
        lab.wait(self.pid, Duration::from_secs(10))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The release `lbfo-lab` binary (the lab's HTTP server runs from it).
pub fn lab_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/lbfo-lab")
}

/// An HTTP server from [`crate::http_server`] in a lab host, on port 8080.
pub struct HttpServer {
    pub mode_file: PathBuf,
    pub addr: std::net::SocketAddrV4,
}

impl HttpServer {
    pub fn start(lab: &mut Lab, host: &Host, name: &str) -> Result<HttpServer> {
        Self::start_on(lab, host, name, host.addr)
    }

    /// Listens on `listen`:8080 (0.0.0.0 for a backend that must also
    /// accept connections to a VIP).
    pub fn start_on(
        lab: &mut Lab,
        host: &Host,
        name: &str,
        listen: std::net::Ipv4Addr,
    ) -> Result<HttpServer> {
        let mode_file = lab.file(&format!("{name}.mode"));
        std::fs::write(&mode_file, "ok")?;
        let addr = std::net::SocketAddrV4::new(host.addr, 8080);
        lab.spawn(
            netns_exec(&host.ns, lab_bin().to_str().expect("utf-8 path"))
                .args([
                    "serve",
                    "--listen",
                    &std::net::SocketAddrV4::new(listen, 8080).to_string(),
                    "--name",
                    name,
                    "--mode-file",
                ])
                .arg(&mode_file)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )?;
        // Ready when it accepts connections.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while Command::new("ip")
            .args([
                "netns",
                "exec",
                &host.ns,
                "bash",
                "-c",
                &format!("exec 3<>/dev/tcp/{}/8080", host.addr),
            ])
            .stderr(Stdio::null())
            .status()
            .map(|s| !s.success())
            .unwrap_or(true)
        {
            if std::time::Instant::now() > deadline {
                bail!("the lab HTTP server on {addr} did not start");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(HttpServer { mode_file, addr })
    }

    /// ok, error, slow, hang or close.
    pub fn set_mode(&self, mode: &str) {
        std::fs::write(&self.mode_file, mode).expect("writing the mode file");
    }
}

/// One elected VIP ("web") on `eth0`, plus `extra` lines for the `[[vip]]`.
pub fn vrrp_config(vip: &str, vrid: u8, priority: u8, advert: Duration, extra: &str) -> String {
    format!(
        "interface = \"eth0\"\nxdp_mode = \"native\"\n\n[[vip]]\nname = \"web\"\naddress = \"{vip}\"\nvrid = {vrid}\npriority = {priority}\nadvert_interval_ms = {}\n{extra}",
        advert.as_millis()
    )
}

/// The smallest config for one VIP on `eth0`.
pub fn basic_config(vip_name: &str, vip: &str, lease_ms: u64) -> String {
    format!(
        "interface = \"eth0\"\nxdp_mode = \"native\"\nlease_ms = {lease_ms}\n\n[[vip]]\nname = \"{vip_name}\"\naddress = \"{vip}\"\n"
    )
}
