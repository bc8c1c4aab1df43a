//! `cargo xtask bench`: lbfo measured beside its baselines in the same run,
//! every figure reported as a ratio against a baseline from that run.
//! `--quick` runs every benchmark briefly so the harness never rots; it
//! checks that the benchmarks run, never that a number is good.

pub mod advert_jitter;
pub mod arp_rate;
pub mod failover;
pub mod health_cost;
pub mod health_scale;
pub mod memory;
pub mod route_scaling;
pub mod throughput;
pub mod xdp_cost;

use std::{fmt::Write as _, process::Command};

use anyhow::{Context as _, Result, bail};

/// How long and how often to measure.
#[derive(Clone, Copy, Debug)]
pub struct Effort {
    pub quick: bool,
    /// Rounds per measurement; the report gives their median and spread.
    pub rounds: usize,
}

impl Effort {
    pub fn new(quick: bool) -> Self {
        Self {
            quick,
            rounds: if quick { 3 } else { 7 },
        }
    }
}

/// Median and spread (min..max) of a set of samples.
#[derive(Clone, Copy, Debug)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    pub fn of(samples: &[f64]) -> Summary {
        assert!(!samples.is_empty(), "no samples");
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        let mid = s.len() / 2;
        let median = if s.len() % 2 == 1 {
            s[mid]
        } else {
            (s[mid - 1] + s[mid]) / 2.0
        };
        Summary {
            median,
            min: s[0],
            max: s[s.len() - 1],
        }
    }

    pub fn fmt(&self, precision: usize) -> String {
        format!(
            "{:.p$} ({:.p$}–{:.p$})",
            self.median,
            self.min,
            self.max,
            p = precision
        )
    }
}

/// The `q`-quantile of `values` (nearest rank).
pub fn quantile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// (utime, stime) of a process, in seconds.
pub fn cpu_times(pid: u32) -> Result<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The name in parentheses may hold spaces; the fields after it are
    // fixed: state is field 3, utime 14 and stime 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| -> Result<f64> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse::<f64>().ok())
            .with_context(|| format!("field {n} of /proc/{pid}/stat: {stat}"))
    };
    // SAFETY: sysconf has no preconditions.
    let ticks = (unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64).max(1.0);
    Ok((field(14)? / ticks, field(15)? / ticks))
}

/// On-CPU time of every thread of `pid` so far, in nanoseconds
/// (`/proc/PID/task/*/schedstat`: exact, where `/proc/PID/stat`'s utime and
/// stime are sampled at clock ticks).
pub fn cpu_ns(pid: u32) -> Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .with_context(|| format!("reading /proc/{pid}/task"))?
    {
        let path = task?.path().join("schedstat");
        // A thread may end between the listing and the read.
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        total += text
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .with_context(|| format!("{}: {text:?}", path.display()))?;
    }
    Ok(total)
}

/// A daemon config with `checks` health checks on operator VIPs (`NAME0`,
/// `NAME1`, … at 192.0.2.101, .102, …), `per_vip` checks each (a config
/// allows at most 256 VIPs; checks per VIP are not limited). `check(i)`
/// gives the body of check `i`'s `[[vip.check]]` table.
pub fn checks_config(
    name: &str,
    checks: usize,
    per_vip: usize,
    check: impl Fn(usize) -> String,
) -> String {
    let mut c = String::from("interface = \"eth0\"\nxdp_mode = \"native\"\n");
    for i in 0..checks {
        if i % per_vip == 0 {
            let vip = i / per_vip;
            let _ = write!(
                c,
                "\n[[vip]]\nname = \"{name}{vip}\"\naddress = \"192.0.2.{}/24\"\n",
                101 + vip
            );
        }
        let _ = write!(c, "\n[[vip.check]]\n{}\n", check(i));
    }
    c
}

/// One section of the report.
pub struct Section {
    pub title: String,
    pub markdown: String,
}

/// The benchmarks by name, in report order.
pub const NAMES: [&str; 9] = [
    "xdp_cost",
    "arp_rate",
    "failover",
    "health_cost",
    "health_scale",
    "memory",
    "throughput",
    "advert_jitter",
    "route_scaling",
];

/// Runs every benchmark, or only the one named.
pub fn run_selected(effort: Effort, only: Option<&str>) -> Result<Vec<Section>> {
    if let Some(name) = only
        && !NAMES.contains(&name)
    {
        bail!("no benchmark named {name:?} (one of: {})", NAMES.join(", "));
    }
    let mut sections = Vec::new();
    for name in NAMES.into_iter().filter(|n| only.is_none_or(|o| o == *n)) {
        sections.push(match name {
            "xdp_cost" => xdp_cost::run(effort)?,
            "arp_rate" => arp_rate::run(effort)?,
            "failover" => failover::run(effort)?,
            "health_cost" => health_cost::run(effort)?,
            "health_scale" => health_scale::run(effort)?,
            "memory" => memory::run(effort)?,
            "throughput" => throughput::run(effort)?,
            "route_scaling" => route_scaling::run(effort)?,
            _ => advert_jitter::run(effort)?,
        });
    }
    Ok(sections)
}

/// Replaces `section` in an existing report (from its `## title` line to the
/// next section), noting when it was re-run; appends it if it is missing.
pub fn splice(report: &str, name: &str, section: &Section) -> String {
    let date = command_line(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]));
    let body = format!(
        "## {}\n\n{}\n\n_This section was re-run alone (`cargo xtask bench --only {name}`) on {date}._\n\n",
        section.title,
        section.markdown.trim_end()
    );
    let heading = format!("## {}\n", section.title);
    let Some(start) = report.find(&heading) else {
        return format!("{report}{body}");
    };
    let rest = &report[start + heading.len()..];
    let end = rest
        .find("\n## ")
        .map_or(report.len(), |i| start + heading.len() + i + 1);
    format!("{}{body}{}", &report[..start], &report[end..])
}

/// docs/BENCHMARKS.md: machine, commands, then each section.
pub fn report(sections: &[Section]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# lbfo benchmarks\n");
    let _ = writeln!(
        out,
        "Written by `cargo xtask bench` (as root). Every figure is a median of several rounds with the spread (min–max) beside it, and is given as a ratio against a baseline measured in the same run on the same machine: absolute times on shared machines drift, ratios hold.\n"
    );
    let _ = writeln!(out, "## Machine\n");
    let _ = writeln!(
        out,
        "- kernel: `{}`",
        command_line(Command::new("uname").arg("-srm"))
    );
    let _ = writeln!(
        out,
        "- CPU: {} ({} cores)",
        cpu_model(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    let _ = writeln!(
        out,
        "- date: {}\n",
        command_line(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
    );
    for s in sections {
        let _ = writeln!(out, "## {}\n\n{}", s.title, s.markdown);
    }
    out
}

/// The command's standard output, trimmed; empty if it cannot run.
fn command_line(cmd: &mut Command) -> String {
    cmd.output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(title: &str, markdown: &str) -> Section {
        Section {
            title: title.into(),
            markdown: markdown.into(),
        }
    }

    #[test]
    fn splice_replaces_only_the_named_section() {
        let report = "# r\n\n## 1. A\n\nold a\n\n## 2. B\n\nold b\n\n## 3. C\n\nold c\n";
        let out = splice(report, "b", &section("2. B", "new b\n"));
        assert!(out.starts_with("# r\n\n## 1. A\n\nold a\n\n## 2. B\n\nnew b\n\n_This section"));
        assert!(out.ends_with("_\n\n## 3. C\n\nold c\n"), "{out}");
        assert!(!out.contains("old b"));
        // The last section is replaced up to the end of the file.
        let out = splice(report, "c", &section("3. C", "new c"));
        assert!(out.contains("old b") && out.contains("new c") && !out.contains("old c"));
        // A section the report lacks is appended.
        let out = splice(report, "d", &section("4. D", "d"));
        assert!(out.starts_with(report) && out.contains("## 4. D\n\nd\n"));
    }
}
