//! `lbfo`: the daemon (`lbfo run`) and its command-line client.

use std::{
    io::{ErrorKind, Write as _},
    path::PathBuf,
    process::ExitCode,
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use lbfo::control::{self, DEFAULT_SOCKET, Request, Response};

#[derive(Parser)]
#[command(
    name = "lbfo",
    version,
    about = "Keeps virtual IPs alive across machines with XDP"
)]
struct Cli {
    /// Control socket of the daemon to run or talk to.
    #[arg(long, global = true, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon in the foreground.
    Run {
        /// Configuration file.
        #[arg(short, long)]
        config: PathBuf,
        /// Log lines as text, or as one JSON object per line for log shippers.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Check a configuration file and exit.
    CheckConfig {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Show VIPs, ownership, leases and counters.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Make this node the owner of a VIP (by name or address).
    Own { vip: String },
    /// Give up ownership of a VIP (by name or address).
    Release { vip: String },
    /// Stop sending new flows to a backend (by address); its flows stay.
    Drain { backend: String },
    /// Let a drained backend take new flows again.
    Undrain { backend: String },
    /// Print an equivalent lbfo config (TOML) for a keepalived config;
    /// warnings on stderr; exit 1 (and no output) where lbfo would behave
    /// differently. See docs/MIGRATING.md.
    ImportKeepalived {
        /// keepalived's configuration file (its includes are followed).
        file: PathBuf,
        /// keepalived's `-i`: which `@ID` lines count (default: the host
        /// name up to its first dot, as keepalived).
        #[arg(long)]
        config_id: Option<String>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    /// tracing-subscriber's JSON: `timestamp`, `level`, `fields.message`,
    /// the other fields beside it in `fields`, and `target`.
    Json,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LBFO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_format = match cli.command {
        Cmd::Run { log_format, .. } => log_format,
        _ => LogFormat::Text,
    };
    init_logging(log_format);
    let result = match cli.command {
        Cmd::Run { ref config, .. } => run_daemon(config, &cli.socket),
        _ => runtime(tokio::runtime::Builder::new_current_thread().enable_all())
            .and_then(|rt| rt.block_on(dispatch(cli))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader stopped reading (`lbfo status | head`): it has what it
        // wanted, so this is success, not the shell's SIGPIPE status (141),
        // which `set -o pipefail` scripts would take for lbfo failing.
        Err(e) if e.is::<StdoutClosed>() => ExitCode::SUCCESS,
        // A log shipper reading JSON gets the daemon's last word as JSON too.
        Err(e) if log_format == LogFormat::Json => {
            tracing::error!("lbfo: error: {e:#}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("lbfo: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The daemon runs on three threads, each with a tokio runtime of its own:
/// the main loop alone on this one, so VRRP advertisements and lease
/// renewals never wait for a busy worker; health checks on `lbfo-checks`;
/// control connections, the metrics endpoint and the neighbour task on
/// `lbfo-io`, so a burst of status requests or scrapes does not push probes
/// off their cadence. One thread each: a single thread serves thousands of
/// probes a second, and one thread wakes for its events in batches where
/// two would keep waking each other (measured: a second worker for 1,000
/// checks cost 40% more CPU, all of it in wake-ups and context switches).
fn run_daemon(config: &std::path::Path, socket: &std::path::Path) -> Result<()> {
    let io = Worker::start("lbfo-io")?;
    let checks = Worker::start("lbfo-checks")?;
    let main_loop = runtime(tokio::runtime::Builder::new_current_thread().enable_all())?;
    lbfo::daemon::raise_main_loop_priority();
    main_loop.block_on(lbfo::daemon::run(
        config,
        socket,
        lbfo::daemon::Runtimes {
            io: io.handle.clone(),
            checks: checks.handle.clone(),
        },
    ))
}

/// A thread of its own running a single-threaded tokio runtime, on which
/// other threads spawn tasks through `handle`. Dropping it stops the
/// runtime (tasks still on it are dropped) and joins the thread.
struct Worker {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Worker {
    fn start(name: &str) -> Result<Self> {
        let rt = runtime(tokio::runtime::Builder::new_current_thread().enable_all())?;
        let handle = rt.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let _ = rt.block_on(stopped);
            })
            .map_err(|e| anyhow::anyhow!("cannot start the {name} thread: {e}"))?;
        Ok(Self {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn runtime(builder: &mut tokio::runtime::Builder) -> Result<tokio::runtime::Runtime> {
    builder
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start a tokio runtime: {e}"))
}

async fn dispatch(cli: Cli) -> Result<()> {
    let request = match cli.command {
        Cmd::Run { .. } => unreachable!("lbfo run has a runtime of its own (run_daemon)"),
        Cmd::CheckConfig { config } => {
            let c = lbfo::config::Config::load(&config)?;
            return print(&format!(
                "{}: ok ({} VIPs on {})\n",
                config.display(),
                c.vips.len(),
                c.interface
            ));
        }
        Cmd::ImportKeepalived { file, config_id } => {
            let id = config_id.unwrap_or_else(lbfo::keepalived::default_config_id);
            let import = lbfo::keepalived::import(&file, &id);
            for line in import.warnings.iter().chain(&import.errors) {
                eprintln!("{line}");
            }
            if !import.errors.is_empty() {
                bail!(
                    "{} keyword(s) in {} would behave differently under lbfo; nothing printed",
                    import.errors.len(),
                    file.display()
                );
            }
            return print(&import.toml);
        }
        Cmd::Status { json } => {
            return match control::request(&cli.socket, &Request::Status).await? {
                Response::Status(status) if json => {
                    print(&(serde_json::to_string_pretty(&status)? + "\n"))
                }
                Response::Status(status) => print(&status.render()),
                other => answer(other),
            };
        }
        Cmd::Own { vip } => Request::Own { vip },
        Cmd::Release { vip } => Request::Release { vip },
        Cmd::Drain { backend } => Request::Drain { backend },
        Cmd::Undrain { backend } => Request::Undrain { backend },
    };
    answer(control::request(&cli.socket, &request).await?)
}

fn answer(response: Response) -> Result<()> {
    match response {
        Response::Done { message } => print(&format!("{message}\n")),
        Response::Error { message } => bail!("{message}"),
        Response::Status(_) => bail!("unexpected status answer"),
    }
}

/// Standard output is a pipe whose reader has gone away.
#[derive(Debug, thiserror::Error)]
#[error("standard output was closed")]
struct StdoutClosed;

/// Writes `text` to standard output. `println!` would panic when the reader
/// has gone away; here that is [`StdoutClosed`], which `main` turns into a
/// quiet exit. (Rust ignores SIGPIPE, so the write fails with EPIPE instead
/// of the signal killing lbfo.)
fn print(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        result => result.context("cannot write to standard output"),
    }
}
