//! Benchmark: the CPU a health check costs, lbfo against HAProxy, probing the
//! same targets in the same run.
//!
//! One lab namespace holds an nginx (the target), an `lbfo run` with N
//! checks and an HAProxy (`nbthread 1`) with N servers checked at the same
//! interval. Check `i` of either probes its own loopback address
//! (127.0.x.y, port 8080, which nginx serves on every address), so no two
//! checks are identical: lbfo would otherwise share their probes, and the
//! comparison would not be per check. Kinds, each against its HAProxy
//! counterpart:
//!
//! - `http` on a fresh connection (lbfo's default) against `option httpchk`;
//! - `tcp` against HAProxy's plain `check` (a connect);
//! - `http` with `reuse_connection = true` (keep-alive), lbfo alone, for its
//!   own target: 10,000 checks a second under a quarter of one core.
//!
//! Both checkers run side by side but never probe at the same time: while
//! one is measured the other is stopped (SIGSTOP), so each window sees one
//! checker and nginx on the machine's two cores, and the windows alternate
//! (lbfo, HAProxy, lbfo, ...) so a drift of the machine's speed over the run
//! reaches both alike. After SIGCONT a checker gets a settling pause before
//! its next window. CPU is each process's on-CPU time from
//! `/proc/PID/task/*/schedstat` (every thread, in nanoseconds) over the
//! window's wall time. Probes per second come from nginx's request counter
//! (`stub_status`) for http checks; tcp checks send no request.

use std::{fmt::Write as _, net::Ipv4Addr, time::Duration};

use anyhow::{Context as _, Result, bail};

use super::{Effort, Section, Summary, checks_config, cpu_ns};
use crate::{
    lab::{Lab, netns_exec, wait_for},
    nginx::Nginx,
    node::LbfoNode,
};

const NODE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const PORT: u16 = 8080;
const INTERVAL_MS: u64 = 1000;
const TIMEOUT_MS: u64 = 500;
const CHECKS_PER_VIP: usize = 1000;
/// Target of the reuse row: checks per second in a quarter of one core.
const REUSE_TARGET: f64 = 0.25;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Http,
    Tcp,
    HttpReuse,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Http => "http, new connection",
            Kind::Tcp => "tcp connect",
            Kind::HttpReuse => "http, reuse_connection",
        }
    }
}

struct Plan {
    sizes: Vec<usize>,
    window: Duration,
    rounds: usize,
    settle: Duration,
}

/// One row: a kind at a size, lbfo's windows and HAProxy's.
struct Row {
    kind: Kind,
    checks: usize,
    lbfo: Vec<f64>,
    lbfo_rate: Vec<f64>,
    haproxy: Vec<f64>,
    haproxy_rate: Vec<f64>,
}

pub fn run(effort: Effort) -> Result<Section> {
    let plan = if effort.quick {
        Plan {
            sizes: vec![200],
            window: Duration::from_secs(2),
            rounds: 1,
            settle: Duration::from_millis(1500),
        }
    } else {
        Plan {
            sizes: vec![1_000, 10_000],
            window: Duration::from_secs(8),
            rounds: effort.rounds.min(5),
            settle: Duration::from_secs(2),
        }
    };
    let mut lab = Lab::new()?;
    let node = lab.add_host("node", NODE)?;
    let nginx = Nginx::start(&mut lab, &node.ns, PORT, Duration::from_secs(300), false)?;

    let mut rows = Vec::new();
    for &checks in &plan.sizes {
        for kind in [Kind::Http, Kind::Tcp] {
            rows.push(measure(&mut lab, &node, &nginx, kind, checks, &plan)?);
        }
    }
    let largest = *plan.sizes.last().expect("a size");
    rows.push(measure(
        &mut lab,
        &node,
        &nginx,
        Kind::HttpReuse,
        largest,
        &plan,
    )?);

    let mut table = String::new();
    let _ = writeln!(
        table,
        "| checks (1 s interval) | kind | lbfo CPU, % of one core | HAProxy CPU, % of one core | **lbfo / HAProxy** | lbfo probes/s | HAProxy probes/s | target |"
    );
    let _ = writeln!(table, "|---|---|---|---|---|---|---|---|");
    let mut verdicts = Vec::new();
    for row in &rows {
        // "–" for a checker a row does not run (HAProxy keeps no connections).
        let summary = |v: &[f64], scale: f64, digits: usize| {
            if v.is_empty() {
                "–".to_string()
            } else {
                Summary::of(&v.iter().map(|x| x * scale).collect::<Vec<_>>()).fmt(digits)
            }
        };
        let pct = |v: &[f64]| summary(v, 100.0, 1);
        let rate = |v: &[f64]| summary(v, 1.0, 0);
        let (ratio, target) = if row.kind == Kind::HttpReuse {
            let worst = row.lbfo.iter().cloned().fold(0.0, f64::max);
            let met = worst < REUSE_TARGET;
            verdicts.push(met);
            (
                "–".to_string(),
                format!(
                    "< {:.0}% of a core: {}",
                    REUSE_TARGET * 100.0,
                    if met { "met" } else { "**not met**" }
                ),
            )
        } else {
            let ratios: Vec<f64> = row
                .lbfo
                .iter()
                .zip(&row.haproxy)
                .map(|(l, h)| l / h.max(1e-9))
                .collect();
            let summary = Summary::of(&ratios);
            let met = summary.median <= 1.0;
            verdicts.push(met);
            (
                format!("**{}**", summary.fmt(2)),
                format!("≤ 1.0: {}", if met { "met" } else { "**not met**" }),
            )
        };
        let (lbfo, haproxy) = (pct(&row.lbfo), pct(&row.haproxy));
        println!(
            "health cost: {} checks, {}: lbfo {lbfo} %, HAProxy {haproxy} %, ratio {ratio}",
            row.checks,
            row.kind.name(),
        );
        let _ = writeln!(
            table,
            "| {} | {} | {lbfo} | {haproxy} | {ratio} | {} | {} | {target} |",
            row.checks,
            row.kind.name(),
            rate(&row.lbfo_rate),
            rate(&row.haproxy_rate),
        );
    }
    let markdown = format!(
        "Command: `cargo xtask bench` (section \"health_cost\"). One lab namespace with nginx (the target, 2 workers, `return 200`), `lbfo run` with N checks (`interval_ms = {INTERVAL_MS}`, `timeout_ms = {TIMEOUT_MS}`) and HAProxy 2.6 (`nbthread 1`, N servers with `check inter {INTERVAL_MS}`, `option httpchk` for http). Check i of either probes its own loopback address 127.0.x.y:{PORT}, so no two of lbfo's checks are identical (identical ones would share one probe). The two checkers run side by side, but while one is measured the other is stopped (SIGSTOP); windows of {window:?} alternate between them, {rounds} each per row, each after {settle:?} of settling. CPU: on-CPU time of every thread of the process (`/proc/PID/task/*/schedstat`) over the window's wall time; the ratio is window against window in order. Probes per second: nginx's request counter (`stub_status`) over the window; tcp checks send no request. The reuse row is lbfo alone (HAProxy's checks do not keep connections).\n\n\
Targets: lbfo's CPU per check at or below HAProxy's for new-connection http and for tcp checks (median ratio ≤ 1.0), and with `reuse_connection` {largest} checks a second under {reuse:.0}% of one core: **{met} of {all} met**.\n\n{table}",
        window = plan.window,
        rounds = plan.rounds,
        settle = plan.settle,
        reuse = REUSE_TARGET * 100.0,
        met = verdicts.iter().filter(|m| **m).count(),
        all = verdicts.len(),
    );
    Ok(Section {
        title: "4a. Health check CPU against HAProxy".into(),
        markdown,
    })
}

/// Starts both checkers for `kind` at `checks`, measures alternating windows
/// and stops them.
fn measure(
    lab: &mut Lab,
    node_host: &crate::lab::Host,
    nginx: &Nginx,
    kind: Kind,
    checks: usize,
    plan: &Plan,
) -> Result<Row> {
    let node = LbfoNode::start_logging(lab, node_host, &lbfo_config(kind, checks), "warn")?;
    let started = std::time::Instant::now();
    // Bounded: a daemon whose checks are not all healthy by then is
    // measured anyway; the windows' probe counts show it.
    let _ = wait_for(
        Duration::from_secs(60),
        "every check to turn healthy",
        || {
            Ok(node
                .status()?
                .vips
                .iter()
                .flat_map(|v| &v.checks)
                .filter(|c| c.state == "healthy")
                .count()
                >= checks)
        },
    );
    let haproxy = match kind {
        Kind::HttpReuse => None,
        _ => Some(start_haproxy(lab, &node_host.ns, kind, checks)?),
    };
    let mut row = Row {
        kind,
        checks,
        lbfo: Vec::new(),
        lbfo_rate: Vec::new(),
        haproxy: Vec::new(),
        haproxy_rate: Vec::new(),
    };
    for _ in 0..plan.rounds {
        if let Some(h) = haproxy {
            signal(h, libc::SIGSTOP)?;
        }
        std::thread::sleep(plan.settle);
        let (cpu, rate) = window(nginx, node.pid, plan.window)?;
        row.lbfo.push(cpu);
        if kind != Kind::Tcp {
            row.lbfo_rate.push(rate);
        }
        if let Some(h) = haproxy {
            signal(node.pid, libc::SIGSTOP)?;
            signal(h, libc::SIGCONT)?;
            std::thread::sleep(plan.settle);
            let (cpu, rate) = window(nginx, h, plan.window)?;
            row.haproxy.push(cpu);
            if kind != Kind::Tcp {
                row.haproxy_rate.push(rate);
            }
            signal(node.pid, libc::SIGCONT)?;
        }
    }
    if let Some(h) = haproxy {
        signal(h, libc::SIGTERM)?;
        lab.wait(h, Duration::from_secs(10))?;
    }
    let status = node.stop(lab)?;
    if !status.success() {
        bail!("lbfo exited with {status}:\n{}", node.log_text());
    }
    let median = |v: &[f64]| {
        if v.is_empty() {
            "–".to_string()
        } else {
            format!("{:.1} %", Summary::of(v).median * 100.0)
        }
    };
    println!(
        "health cost: {checks} checks, {}: lbfo {}, HAProxy {}, measured in {:.0} s",
        kind.name(),
        median(&row.lbfo),
        median(&row.haproxy),
        started.elapsed().as_secs_f64()
    );
    Ok(row)
}

/// One window: the process's share of one core, and nginx's requests per
/// second.
fn window(nginx: &Nginx, pid: u32, window: Duration) -> Result<(f64, f64)> {
    let requests_before = nginx.requests()?;
    let cpu_before = cpu_ns(pid)?;
    let start = std::time::Instant::now();
    std::thread::sleep(window);
    let cpu_after = cpu_ns(pid)?;
    let elapsed = start.elapsed().as_secs_f64();
    // The status request itself is one of them.
    let requests = nginx.requests()?.saturating_sub(requests_before + 1);
    Ok((
        (cpu_after - cpu_before) as f64 / 1e9 / elapsed,
        requests as f64 / elapsed,
    ))
}

fn signal(pid: u32, signal: libc::c_int) -> Result<()> {
    // SAFETY: kill has no memory preconditions; `pid` is a child of ours.
    if unsafe { libc::kill(pid as libc::pid_t, signal) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("signal {signal} to {pid}"));
    }
    Ok(())
}

/// Check `i`'s own address: 127.0.x.y, never .0 or .255.
fn target(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, (i / 250) as u8, (i % 250 + 1) as u8)
}

fn lbfo_config(kind: Kind, checks: usize) -> String {
    checks_config("cost", checks, CHECKS_PER_VIP, |i| {
        let probe = match kind {
            Kind::Tcp => format!("kind = \"tcp\"\naddress = \"{}:{PORT}\"", target(i)),
            Kind::Http => format!(
                "kind = \"http\"\nurl = \"http://{}:{PORT}/health\"",
                target(i)
            ),
            Kind::HttpReuse => format!(
                "kind = \"http\"\nurl = \"http://{}:{PORT}/health\"\nreuse_connection = true",
                target(i)
            ),
        };
        format!("{probe}\ninterval_ms = {INTERVAL_MS}\ntimeout_ms = {TIMEOUT_MS}\nrise = 1")
    })
}

fn start_haproxy(lab: &mut Lab, ns: &str, kind: Kind, checks: usize) -> Result<u32> {
    let mode = if kind == Kind::Tcp { "tcp" } else { "http" };
    let mut c = format!(
        "global\n  nbthread 1\n  maxconn 2000\ndefaults\n  mode {mode}\n  timeout connect {TIMEOUT_MS}ms\n  timeout check {TIMEOUT_MS}ms\n  timeout client 5s\n  timeout server 5s\nfrontend checks\n  bind 127.0.0.1:9999\n  default_backend targets\nbackend targets\n"
    );
    if kind != Kind::Tcp {
        c += "  option httpchk GET /health\n";
    }
    for i in 0..checks {
        let _ = writeln!(
            c,
            "  server s{i} {}:{PORT} check inter {INTERVAL_MS}",
            target(i)
        );
    }
    let path = lab.file(&format!("haproxy-{checks}-{mode}.cfg"));
    std::fs::write(&path, c)?;
    let log = std::fs::File::create(lab.file("haproxy.log"))?;
    let pid = lab.spawn(
        netns_exec(ns, "haproxy")
            .arg("-f")
            .arg(&path)
            .arg("-db")
            .stdout(log.try_clone()?)
            .stderr(log),
    )?;
    // HAProxy spreads its first checks over one interval.
    std::thread::sleep(Duration::from_millis(INTERVAL_MS + 500));
    if lab.try_wait(pid)?.is_some() {
        bail!(
            "haproxy exited at start: {}",
            std::fs::read_to_string(lab.file("haproxy.log")).unwrap_or_default()
        );
    }
    Ok(pid)
}
