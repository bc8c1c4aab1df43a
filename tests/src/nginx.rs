//! A real nginx in a lab namespace, with its own config, pid file and logs
//! in the lab's temp folder: `return 200 "ok"` on every path, and a
//! `stub_status` endpoint for its request counter.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context as _, Result};

use crate::lab::{self, Lab, netns_exec, wait_for};

/// Where `stub_status` answers, inside the namespace.
const STATUS_PORT: u16 = 8081;

/// nginx's master process. Dropping this stops nginx the way it stops
/// itself (SIGTERM: the master ends its workers, then itself); a SIGKILL of
/// the master alone, as the lab's cleanup would send, leaves the workers
/// running.
pub struct Nginx {
    ns: String,
    master: u32,
    /// One line per request, `CONNECTION_SERIAL PATH`, when asked for.
    pub access_log: Option<PathBuf>,
}

impl Nginx {
    /// Starts nginx in `ns` serving port `port` on every address, and waits
    /// until it answers. `keepalive_timeout` is nginx's idle timeout for
    /// kept-alive connections; `log` writes an access log (which costs, so
    /// benchmarks go without).
    pub fn start(
        lab: &mut Lab,
        ns: &str,
        port: u16,
        keepalive_timeout: Duration,
        log: bool,
    ) -> Result<Nginx> {
        let dir = lab.file(&format!("nginx-{ns}-{port}"));
        std::fs::create_dir_all(&dir)?;
        let access_log = log.then(|| dir.join("access.log"));
        let access = match &access_log {
            Some(path) => format!("access_log {} probes;", path.display()),
            None => "access_log off;".into(),
        };
        let config = dir.join("nginx.conf");
        std::fs::write(
            &config,
            format!(
                "worker_processes 2;\nworker_rlimit_nofile 65536;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log;\nevents {{ worker_connections 32768; }}\nhttp {{\n  log_format probes '$connection $request_uri';\n  {access}\n  keepalive_requests 1000000;\n  keepalive_timeout {keepalive}ms;\n  server {{\n    listen {port} backlog=4096;\n    location / {{ return 200 \"ok\\n\"; }}\n  }}\n  server {{\n    listen 127.0.0.1:{STATUS_PORT};\n    access_log off;\n    location / {{ stub_status; }}\n  }}\n}}\n",
                dir = dir.display(),
                keepalive = keepalive_timeout.as_millis(),
            ),
        )?;
        let out = std::fs::File::create(dir.join("stderr.log"))?;
        // `daemon off`: the master stays the lab's child.
        let master = lab.spawn(
            netns_exec(ns, "nginx")
                .arg("-c")
                .arg(&config)
                .args(["-g", "daemon off;"])
                .stdout(out.try_clone()?)
                .stderr(out),
        )?;
        let nginx = Nginx {
            ns: ns.into(),
            master,
            access_log,
        };
        wait_for(Duration::from_secs(10), "nginx to answer", || {
            Ok(nginx.requests().is_ok())
        })?;
        Ok(nginx)
    }

    /// nginx's total request count (`stub_status`; this request included).
    pub fn requests(&self) -> Result<u64> {
        let out = lab::run(
            netns_exec(&self.ns, "curl")
                .args(["-sf", "--max-time", "2"])
                .arg(format!("http://127.0.0.1:{STATUS_PORT}/")),
        )?;
        let text = String::from_utf8_lossy(&out.stdout);
        // "server accepts handled requests\n A H R"
        text.lines()
            .nth(2)
            .and_then(|l| l.split_whitespace().nth(2))
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("nginx stub_status: {text:?}"))
    }

    /// The access log so far: (connection serial, path) per request.
    pub fn logged(&self) -> Vec<(u64, String)> {
        let Some(path) = &self.access_log else {
            return Vec::new();
        };
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (serial, path) = l.split_once(' ')?;
                Some((serial.parse().ok()?, path.to_string()))
            })
            .collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SAFETY: kill has no memory preconditions; `master` is our child.
        unsafe { libc::kill(self.master as libc::pid_t, libc::SIGTERM) };
        let gone = || {
            std::fs::read_to_string(format!("/proc/{}/stat", self.master)).map_or(true, |stat| {
                stat.rsplit_once(") ")
                    .is_some_and(|(_, rest)| rest.starts_with('Z'))
            })
        };
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while !gone() && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
