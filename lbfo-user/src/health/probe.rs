//! One probe of one check: the resources probes share, and the dispatch to
//! the probe of the check's kind.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use tokio::{sync::OnceCell, time::Instant};
use tracing::warn;

use super::{
    config::{CheckConfig, CheckKind},
    error::ProbeError,
    exec, http,
    icmp::IcmpClient,
    tcp,
};

/// What every check task shares: the TLS configurations and the ICMP socket,
/// each made once, when the first check that needs it runs.
#[derive(Default)]
pub(crate) struct Probers {
    pub(crate) http: http::HttpProber,
    icmp: OnceCell<Arc<IcmpClient>>,
    icmp_warned: AtomicBool,
}

/// What one check keeps from one probe to the next.
#[derive(Default)]
pub(crate) struct ProbeState {
    pub(crate) http: http::HttpState,
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
        state: &mut ProbeState,
        deadline: Instant,
    ) -> Result<String, ProbeError> {
        let timeout = config.timeout;
        match &config.kind {
            CheckKind::Http(check) => {
                self.http
                    .probe(check, &mut state.http, deadline, timeout)
                    .await
            }
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
