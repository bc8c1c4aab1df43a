//! `kind = "tcp"`: healthy when a TCP connection is accepted within the
//! timeout. Also the resolve-and-connect step of http checks.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use tokio::{
    net::{TcpSocket, TcpStream},
    time::{Instant, timeout_at},
};

use super::{config::HostPort, error::ProbeError};

pub(crate) async fn probe(
    address: &HostPort,
    deadline: Instant,
    timeout: Duration,
) -> Result<String, ProbeError> {
    let addrs = resolve(&address.host, address.port, deadline, timeout).await?;
    let (_stream, addr) = connect(&addrs, deadline, timeout).await?;
    // Dropping the stream closes it with a reset (see `connect`): the check
    // sent nothing, so nothing is lost, and neither side keeps TIME_WAIT.
    Ok(format!("connected to {addr}"))
}

/// Addresses for `host`: an address literal as it is, a name through the
/// system resolver, every time (a check should follow DNS changes).
pub(crate) async fn resolve(
    host: &str,
    port: u16,
    deadline: Instant,
    timeout: Duration,
) -> Result<Vec<SocketAddr>, ProbeError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let addrs: Vec<SocketAddr> = timeout_at(deadline, tokio::net::lookup_host((host, port)))
        .await
        .map_err(|_| ProbeError::Timeout {
            waiting_for: format!("resolving {host}"),
            after: timeout,
        })?
        .map_err(|source| ProbeError::Resolve {
            host: host.to_string(),
            source,
        })?
        .collect();
    if addrs.is_empty() {
        return Err(ProbeError::NoAddress {
            host: host.to_string(),
        });
    }
    Ok(addrs)
}

/// Connects to the first address that accepts, all within `deadline`.
///
/// Two socket options, set before the connect:
/// - `SO_LINGER` 0, so closing sends a reset instead of a FIN. A health
///   checker opens a fresh connection per probe; at thousands of probes a
///   second, closing first with a FIN would leave that many TIME_WAIT
///   sockets per second on lbfo's side, holding its ephemeral ports. A check
///   closes only once it has read all it wants, so the reset loses nothing.
/// - `TCP_QUICKACK` off, so the handshake's last ACK waits to ride on the
///   request instead of going out alone: one segment fewer per probe, and
///   the server wakes once (connection and request together) instead of
///   twice. A plain tcp check sends no data; its ACK goes out with the
///   delayed-ACK timer or the reset, whichever comes first, and the
///   handshake is complete on lbfo's side either way.
pub(crate) async fn connect(
    addrs: &[SocketAddr],
    deadline: Instant,
    timeout: Duration,
) -> Result<(TcpStream, SocketAddr), ProbeError> {
    let mut last_error = None;
    for &addr in addrs {
        let socket = probe_socket(addr).map_err(|source| ProbeError::Connect { addr, source })?;
        match timeout_at(deadline, socket.connect(addr)).await {
            Err(_) => {
                return Err(ProbeError::Timeout {
                    waiting_for: format!("connecting to {addr}"),
                    after: timeout,
                });
            }
            Ok(Ok(stream)) => return Ok((stream, addr)),
            Ok(Err(source)) => last_error = Some(ProbeError::Connect { addr, source }),
        }
    }
    Err(last_error.expect("resolve returns at least one address"))
}

fn probe_socket(addr: SocketAddr) -> std::io::Result<TcpSocket> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    let sock = socket2::SockRef::from(&socket);
    // Best effort: without them the check still works, at a higher cost.
    let _ = sock.set_linger(Some(Duration::ZERO));
    let _ = sock.set_tcp_quickack(false);
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deadline(ms: u64) -> (Instant, Duration) {
        let timeout = Duration::from_millis(ms);
        (Instant::now() + timeout, timeout)
    }

    #[tokio::test]
    async fn open_port_is_healthy() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (d, t) = deadline(1000);
        let hp = HostPort {
            host: "127.0.0.1".into(),
            port,
        };
        let detail = probe(&hp, d, t)
            .await
            .expect("a listening port must be healthy");
        assert_eq!(detail, format!("connected to 127.0.0.1:{port}"));
    }

    #[tokio::test]
    async fn closed_port_is_refused() {
        // Bind, learn the port, close: nothing listens there any more.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let (d, t) = deadline(1000);
        let hp = HostPort {
            host: "127.0.0.1".into(),
            port,
        };
        let err = probe(&hp, d, t).await.expect_err("a closed port must fail");
        let msg = err.to_string();
        assert!(
            matches!(err, ProbeError::Connect { .. }) && msg.contains("refused"),
            "expected connection refused to 127.0.0.1:{port}, got {msg:?}"
        );
    }

    #[tokio::test]
    async fn localhost_name_resolves() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (d, t) = deadline(2000);
        let addrs = resolve("localhost", port, d, t)
            .await
            .expect("localhost resolves");
        assert!(
            addrs.iter().any(|a| a.ip().is_loopback()),
            "localhost should resolve to loopback, got {addrs:?}"
        );
    }
}
