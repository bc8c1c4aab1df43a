//! `cargo xtask`: builds the eBPF object, runs the tests, the demo and the benchmarks.

mod ebpf;
#[cfg(test)]
mod programs;

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "lbfo's build, test, demo and benchmark driver")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the XDP object (installs the pinned nightly and bpf-linker if missing).
    BuildEbpf,
    /// Build everything and run every test: unit, data-path (BPF_PROG_TEST_RUN),
    /// end-to-end in network namespaces, and the quick benchmarks. Needs root.
    Test {
        /// Extra arguments for the test binaries, e.g. a test name filter.
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Build everything and run the namespace lab demo. Needs root.
    Demo,
    /// Run the benchmarks and write docs/BENCHMARKS.md. Needs root.
    Bench {
        /// Run every benchmark briefly (what `cargo xtask test` runs); writes no report.
        #[arg(long)]
        quick: bool,
        /// Run only this benchmark and replace its section of docs/BENCHMARKS.md
        /// (xdp_cost, arp_rate, failover, health_cost, health_scale, memory, throughput,
        /// advert_jitter, route_scaling).
        #[arg(long)]
        only: Option<String>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::BuildEbpf => ebpf::build(),
        Cmd::Test { args } => test(&args),
        Cmd::Demo => {
            build_all()?;
            run_lab_tool(&["demo"])
        }
        Cmd::Bench { quick, only } => {
            build_all()?;
            let mut args = vec!["bench"];
            if quick {
                args.push("--quick");
            } else {
                args.extend(["--report", "docs/BENCHMARKS.md"]);
            }
            if let Some(name) = &only {
                args.extend(["--only", name]);
            }
            run_lab_tool(&args)
        }
    }
}

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent directory")
        .to_path_buf()
}

/// Runs a command, failing with its command line if it does not succeed.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("could not start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

/// The eBPF object, then the release userspace binaries (lbfo embeds the object).
fn build_all() -> Result<()> {
    ebpf::build()?;
    run(cargo().args(["build", "--release", "--workspace", "--bins"]))
}

fn require_root(what: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("{what} needs root (network namespaces, XDP); run it as root");
    }
    Ok(())
}

fn test(args: &[String]) -> Result<()> {
    require_root("cargo xtask test")?;
    build_all()?;
    // Unit and data-path tests may run in parallel; the namespace tests measure
    // timings against configured timers, so they get the machine one at a time.
    let mut unit = cargo();
    unit.args(["test", "--release", "--workspace", "--lib", "--bins"]);
    unit.arg("--").args(args);
    run(&mut unit)?;
    let mut e2e = cargo();
    e2e.args(["test", "--release", "-p", "lbfo-tests", "--tests"]);
    e2e.args(["--", "--test-threads=1"]).args(args);
    run(&mut e2e)?;
    if args.is_empty() {
        run_lab_tool(&["bench", "--quick"])?;
    }
    Ok(())
}

/// Runs the lab tool (namespaces demo and benchmarks) from the tests crate.
fn run_lab_tool(args: &[&str]) -> Result<()> {
    require_root("the namespace lab")?;
    run(Command::new(root().join("target/release/lbfo-lab"))
        .args(args)
        .current_dir(root()))
}
