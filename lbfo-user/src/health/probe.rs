//! One probe of one check: the shared resources probes need and the error
//! that says what a failed probe saw.

use std::{
    io,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::{sync::OnceCell, time::Instant};
use tracing::warn;

use super::{
    config::{CheckConfig, CheckKind},
    exec::{self, ExecError},
    http,
    icmp::IcmpClient,
    tcp,
};

/// Why a probe failed. The `Display` form is what goes into events, logs and
/// `lbfo status`: one line saying what was tried and what came back.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("timed out after {} ms {waiting_for}", .after.as_millis())]
    Timeout {
        /// What the probe was waiting for, like "connecting to 192.0.2.1:80".
        waiting_for: String,
        after: Duration,
    },
    #[error("cannot resolve {host}: {source}")]
    Resolve { host: String, source: io::Error },
    #[error("{host} resolves to no address")]
    NoAddress { host: String },
    #[error("connecting to {addr}: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("TLS handshake with {addr} ({server_name}): {source}")]
    Tls {
        addr: SocketAddr,
        server_name: String,
        source: io::Error,
    },
    #[error("TLS setup: {0}")]
    TlsSetup(String),
    #[error("HTTP exchange with {addr}: {source}")]
    Http {
        addr: SocketAddr,
        source: hyper::Error,
    },
    #[error("HTTP status {status} is not in {expected}")]
    Status { status: u16, expected: String },
    #[error("HTTP status {status} but the body (first {read} bytes) does not contain {needle:?}")]
    Body {
        status: u16,
        read: usize,
        needle: String,
    },
    #[error("cannot open a raw ICMP socket: {0} (icmp checks need CAP_NET_RAW; run lbfo as root)")]
    IcmpSocket(io::Error),
    #[error("sending echo request to {addr}: {source}")]
    IcmpSend {
        addr: std::net::Ipv4Addr,
        source: io::Error,
    },
    #[error("{addr} unreachable: {reason} (ICMP from {from})")]
    IcmpUnreachable {
        addr: std::net::Ipv4Addr,
        from: std::net::Ipv4Addr,
        reason: String,
    },
    #[error(transparent)]
    Exec(#[from] ExecError),
}

/// What every check task shares: the TLS configurations and the ICMP socket,
/// each made once, when the first check that needs it runs.
#[derive(Default)]
pub(crate) struct Probers {
    pub(crate) http: http::HttpProber,
    icmp: OnceCell<Arc<IcmpClient>>,
    icmp_warned: AtomicBool,
}

impl Probers {
    /// Runs one probe that must end by `deadline`. Ok carries a short detail
    /// of what was seen ("HTTP 200", "connected", …).
    ///
    /// Every prober is cancel-safe: dropping this future (the engine's outer
    /// deadline or shutdown) closes sockets, forgets pending echo requests and
    /// kills child processes.
    pub(crate) async fn probe(
        &self,
        config: &CheckConfig,
        deadline: Instant,
    ) -> Result<String, ProbeError> {
        let timeout = config.timeout;
        match &config.kind {
            CheckKind::Http(check) => self.http.probe(check, deadline, timeout).await,
            CheckKind::Tcp(check) => tcp::probe(&check.address, deadline, timeout).await,
            CheckKind::Icmp(check) => {
                let client = self
                    .icmp
                    .get_or_try_init(|| async {
                        IcmpClient::open().map(Arc::new).inspect_err(|e| {
                            // Every icmp probe retries; say it once.
                            if !self.icmp_warned.swap(true, Ordering::Relaxed) {
                                warn!(error = %e, "cannot open the ICMP socket; icmp checks fail until it opens")
                            }
                        })
                    })
                    .await
                    .map_err(ProbeError::IcmpSocket)?;
                client.ping(check.host, deadline, timeout).await.map(|rtt| {
                    format!(
                        "echo reply from {} in {:.3} ms",
                        check.host,
                        rtt.as_secs_f64() * 1e3
                    )
                })
            }
            CheckKind::Exec(check) => Ok(exec::probe(&check.command, deadline, timeout).await?),
        }
    }
}
