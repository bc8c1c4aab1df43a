//! What a failed probe saw. Its own module so the probes (`http`, `tcp`,
//! `icmp`) and the dispatch over them (`probe`) all use it without importing
//! one another.

use std::{io, net::SocketAddr, time::Duration};

use super::exec::ExecError;

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
    #[error("HTTP exchange with {addr}: {problem}")]
    Http {
        addr: SocketAddr,
        problem: HttpProblem,
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

/// What went wrong in an HTTP exchange once connected.
#[derive(Debug, thiserror::Error)]
pub enum HttpProblem {
    #[error("the server closed the connection without a complete answer")]
    Closed,
    #[error("{0}")]
    Io(io::Error),
    #[error("malformed answer: {0}")]
    Malformed(httparse::Error),
    #[error("the answer's head is longer than 16 KiB")]
    HeadTooLarge,
    #[error("malformed chunked body")]
    BadChunk,
}

impl ProbeError {
    /// A short, stable name of what went wrong, for metrics labels.
    pub fn reason(&self) -> &'static str {
        match self {
            ProbeError::Timeout { .. } => "timeout",
            ProbeError::Resolve { .. } | ProbeError::NoAddress { .. } => "resolve",
            ProbeError::Connect { .. } => "connect",
            ProbeError::Tls { .. } | ProbeError::TlsSetup(_) => "tls",
            ProbeError::Http { .. } => "http",
            ProbeError::Status { .. } => "status",
            ProbeError::Body { .. } => "body",
            ProbeError::IcmpSocket(_) | ProbeError::IcmpSend { .. } => "icmp_socket",
            ProbeError::IcmpUnreachable { .. } => "unreachable",
            ProbeError::Exec(_) => "exec",
        }
    }
}
