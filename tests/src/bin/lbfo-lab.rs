//! The namespace lab as a tool, run by `cargo xtask demo` and `cargo xtask bench`.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use lbfo_tests::bench::{self, Effort};

#[derive(Parser)]
#[command(about = "lbfo's namespace lab: demo and benchmarks (root)")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Client and two lbfo nodes in namespaces: VRRP election, a failed HTTP
    /// check moving the VIP by gratuitous ARP, kill -9 and lease expiry.
    Demo,
    /// An HTTP server for the lab whose behaviour follows a mode file
    /// (ok, error, slow, hang, close); see `lbfo_tests::http_server`.
    Serve {
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[arg(long)]
        name: String,
        #[arg(long)]
        mode_file: PathBuf,
    },
    /// Run the benchmarks.
    Bench {
        /// Brief runs that only prove the harness works; no report.
        #[arg(long)]
        quick: bool,
        /// Write the report here (full runs only).
        #[arg(long)]
        report: Option<PathBuf>,
        /// Run one benchmark and replace only its section in the report.
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(bench::NAMES))]
        only: Option<String>,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Cmd::Demo => lbfo_tests::demo::run_demo(),
        Cmd::Serve {
            listen,
            name,
            mode_file,
        } => lbfo_tests::http_server::serve(listen, &name, &mode_file),
        Cmd::Bench {
            quick,
            report,
            only,
        } => bench::run_selected(Effort::new(quick), only.as_deref()).and_then(|sections| {
            let Some(path) = report.filter(|_| !quick) else {
                return Ok(());
            };
            let text = match (&only, sections.first()) {
                (Some(name), Some(section)) => {
                    let old = std::fs::read_to_string(&path).with_context(|| {
                        format!("--only replaces a section of {}", path.display())
                    })?;
                    bench::splice(&old, name, section)
                }
                _ => bench::report(&sections),
            };
            std::fs::write(&path, text)?;
            println!("wrote {}", path.display());
            Ok(())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lbfo-lab: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
