//! Prometheus metrics: a registry the daemon fills and an HTTP endpoint
//! that serves it in the text format (0.0.4) every Prometheus scrapes.
//!
//! The main loop copies its state into the registry on a short tick
//! ([`SYNC_INTERVAL`]) and the executor observes each takeover as it
//! happens; a scrape only encodes the registry, so it never waits for the
//! main loop and the main loop never waits for a scrape.
//!
//! State values follow keepalived's exporters, so alerts carry over:
//! `lbfo_vip_state` is 0 init, 1 backup, 2 master, 3 fault. A VIP without
//! an election reports standby as 1 and owner as 2.

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use http_body_util::Full;
use hyper::{Request, Response, body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{
    Encoder as _, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    core::{CheckKey, Failover, Node, Phase, Reason},
    health::{CheckId, StatusBoard},
    ownership::Owner,
};

/// One encoding of the registry, served until [`SCRAPE_CACHE`] has passed.
struct Exposition {
    at: std::time::Instant,
    plain: bytes::Bytes,
    /// Compressed when a scraper first asks for gzip.
    gzip: Option<bytes::Bytes>,
}

/// How often the main loop copies its state into the registry.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(500);

/// How long one encoding of the registry serves scrapes. Short next to any
/// scrape interval (Prometheus's shortest sensible one is 1 s), and next to
/// [`SYNC_INTERVAL`], so no scrape sees older figures than a sync already
/// gives.
pub const SCRAPE_CACHE: Duration = Duration::from_millis(100);

/// Failover and probe durations: 1 ms to 10 s.
const DURATION_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

pub struct Metrics {
    registry: Registry,
    vip_state: IntGaugeVec,
    vip_owned: IntGaugeVec,
    route_announced: IntGaugeVec,
    route_not_announced: IntGaugeVec,
    lease_remaining: GaugeVec,
    master_transitions: IntCounterVec,
    adverts_sent: IntCounterVec,
    adverts_received: IntCounterVec,
    adverts_rejected: IntCounterVec,
    priority_zero_sent: IntCounterVec,
    priority_zero_received: IntCounterVec,
    failover_seconds: HistogramVec,
    arp_replies: IntCounterVec,
    arp_dropped: IntCounterVec,
    nd_replies: IntCounterVec,
    nd_dropped: IntCounterVec,
    packets: IntCounterVec,
    conflicts: IntCounterVec,
    malformed: IntCounter,
    check_up: IntGaugeVec,
    check_duration: HistogramVec,
    check_failures: IntCounterVec,
    backend_up: IntGaugeVec,
    backend_weight: IntGaugeVec,
    backend_packets: IntCounterVec,
    conntrack_entries: IntGauge,
    announcements: IntCounterVec,
    config_reloads: IntCounterVec,
    last_reload_success: Gauge,
    /// The VIP names the per-VIP series were last written for.
    vips: std::sync::Mutex<Vec<String>>,
    /// The last exposition and when it was encoded.
    cache: std::sync::Mutex<Option<Exposition>>,
}

#[derive(Debug, thiserror::Error)]
#[error("registering metric {name}: {source}")]
pub struct MetricsError {
    name: String,
    source: prometheus::Error,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    name: &str,
    metric: Result<T, prometheus::Error>,
) -> Result<T, MetricsError> {
    let error = |source| MetricsError {
        name: name.into(),
        source,
    };
    let metric = metric.map_err(error)?;
    registry.register(Box::new(metric.clone())).map_err(error)?;
    Ok(metric)
}

impl Metrics {
    pub fn new() -> Result<Arc<Metrics>, MetricsError> {
        let r = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            register(&r, name, IntCounterVec::new(Opts::new(name, help), labels))
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            register(&r, name, IntGaugeVec::new(Opts::new(name, help), labels))
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            register(
                &r,
                name,
                HistogramVec::new(
                    HistogramOpts::new(name, help).buckets(DURATION_BUCKETS.to_vec()),
                    labels,
                ),
            )
        };
        let metrics = Metrics {
            vip_state: gauge(
                "lbfo_vip_state",
                "VIP state: 0 init, 1 backup (or standby, or withdrawn), 2 master (or owner, or announced), 3 fault.",
                &["vip", "address", "vrid"],
            )?,
            vip_owned: gauge(
                "lbfo_vip_owned",
                "1 while XDP answers for the VIP on this node.",
                &["vip"],
            )?,
            route_announced: gauge(
                "lbfo_route_vip_announced",
                "Route VIPs: 1 while this node announces the VIP (its address is on the route device).",
                &["vip", "device"],
            )?,
            route_not_announced: gauge(
                "lbfo_route_vip_not_announced",
                "Route VIPs: 1 for the reason this node does not announce the VIP (fault, waiting_for_backends, failed), 0 for the others.",
                &["vip", "reason"],
            )?,
            lease_remaining: register(
                &r,
                "lbfo_vip_lease_remaining_seconds",
                GaugeVec::new(
                    Opts::new(
                        "lbfo_vip_lease_remaining_seconds",
                        "Time until XDP falls silent for the VIP unless renewed.",
                    ),
                    &["vip"],
                ),
            )?,
            master_transitions: counter(
                "lbfo_vrrp_master_transitions_total",
                "Takeovers by this node, by reason.",
                &["vip", "reason"],
            )?,
            adverts_sent: counter(
                "lbfo_vrrp_adverts_sent_total",
                "VRRP advertisements sent.",
                &["vip"],
            )?,
            adverts_received: counter(
                "lbfo_vrrp_adverts_received_total",
                "VRRP advertisements received for the VIP's virtual router.",
                &["vip"],
            )?,
            adverts_rejected: counter(
                "lbfo_vrrp_adverts_rejected_total",
                "VRRP packets not acted on, by reason.",
                &["reason"],
            )?,
            priority_zero_sent: counter(
                "lbfo_vrrp_priority_zero_sent_total",
                "Advertisements with priority 0 sent (stepping down).",
                &["vip"],
            )?,
            priority_zero_received: counter(
                "lbfo_vrrp_priority_zero_received_total",
                "Advertisements with priority 0 received (the Master stepped down).",
                &["vip"],
            )?,
            failover_seconds: histogram(
                "lbfo_failover_seconds",
                "From the moment a takeover began on this node to XDP answering with the first announcement out.",
                &["vip", "reason"],
            )?,
            arp_replies: counter(
                "lbfo_xdp_arp_replies_total",
                "ARP requests for the VIP answered by XDP.",
                &["vip"],
            )?,
            arp_dropped: counter(
                "lbfo_xdp_arp_dropped_total",
                "ARP requests for the VIP dropped (not owned, the lease ran out, or a route VIP, which no node answers ARP for).",
                &["vip"],
            )?,
            nd_replies: counter(
                "lbfo_xdp_nd_replies_total",
                "Neighbour Solicitations for the IPv6 VIP answered by XDP.",
                &["vip"],
            )?,
            nd_dropped: counter(
                "lbfo_xdp_nd_dropped_total",
                "Neighbour Solicitations for the IPv6 VIP dropped (not owned, or the lease ran out).",
                &["vip"],
            )?,
            packets: counter(
                "lbfo_xdp_packets_total",
                "Packets to the VIP by XDP verdict.",
                &["vip", "verdict"],
            )?,
            conflicts: counter(
                "lbfo_vip_conflicts_total",
                "ARP replies or announcements, or Neighbour Advertisements, from another MAC claiming a VIP this node owns.",
                &["vip"],
            )?,
            malformed: register(
                &r,
                "lbfo_xdp_malformed_total",
                IntCounter::new(
                    "lbfo_xdp_malformed_total",
                    "Frames too short or malformed to parse, passed to the kernel.",
                ),
            )?,
            check_up: gauge(
                "lbfo_check_up",
                "1 while the check passes.",
                &["vip", "check", "kind"],
            )?,
            check_duration: histogram(
                "lbfo_check_duration_seconds",
                "Duration of each probe, by check kind.",
                &["kind"],
            )?,
            check_failures: counter(
                "lbfo_check_failures_total",
                "Failed probes, by reason.",
                &["vip", "check", "reason"],
            )?,
            backend_up: gauge(
                "lbfo_backend_up",
                "1 while the backend takes new flows.",
                &["vip", "backend"],
            )?,
            backend_weight: gauge(
                "lbfo_backend_weight",
                "The backend's configured weight.",
                &["vip", "backend"],
            )?,
            backend_packets: counter(
                "lbfo_backend_packets_total",
                "Packets steered to the backend.",
                &["vip", "backend"],
            )?,
            conntrack_entries: register(
                &r,
                "lbfo_conntrack_entries",
                IntGauge::new("lbfo_conntrack_entries", "Flows in the connection table."),
            )?,
            announcements: counter(
                "lbfo_announcements_sent_total",
                "Announcements sent: gratuitous ARP (each in both forms), or unsolicited Neighbour Advertisements (na).",
                &["vip", "kind"],
            )?,
            config_reloads: counter(
                "lbfo_config_reloads_total",
                "SIGHUP reloads by result.",
                &["result"],
            )?,
            last_reload_success: register(
                &r,
                "lbfo_config_last_reload_success_timestamp_seconds",
                Gauge::new(
                    "lbfo_config_last_reload_success_timestamp_seconds",
                    "When the configuration was last loaded (start-up or reload), in Unix time.",
                ),
            )?,
            vips: Default::default(),
            cache: Default::default(),
            registry: r,
        };
        let build_info = register(
            &metrics.registry,
            "lbfo_build_info",
            IntGaugeVec::new(
                Opts::new("lbfo_build_info", "Always 1; the version is a label."),
                &["version"],
            ),
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        metrics
            .registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .map_err(|source| MetricsError {
                name: "process".into(),
                source,
            })?;
        for result in ["success", "failure"] {
            metrics.config_reloads.with_label_values(&[result]);
        }
        metrics.config_loaded();
        Ok(Arc::new(metrics))
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("the text encoder writes to memory");
        out
    }

    /// The exposition for a scrape, gzip-compressed if `gzip`: encoded at
    /// most once per [`SCRAPE_CACHE`] (and compressed at most once), so a
    /// storm of scrapes costs one encoding per interval, not one per scrape
    /// (with thousands of checks an encoding takes milliseconds of CPU).
    pub fn exposition(&self, gzip: bool) -> bytes::Bytes {
        let mut cache = self.cache.lock().expect("exposition cache lock");
        let fresh = cache
            .as_ref()
            .is_some_and(|c| c.at.elapsed() < SCRAPE_CACHE);
        if !fresh {
            *cache = Some(Exposition {
                at: std::time::Instant::now(),
                plain: bytes::Bytes::from(self.encode()),
                gzip: None,
            });
        }
        let cached = cache.as_mut().expect("filled above");
        if !gzip {
            return cached.plain.clone();
        }
        cached
            .gzip
            .get_or_insert_with(|| {
                use std::io::Write as _;
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                encoder
                    .write_all(&cached.plain)
                    .and_then(|()| encoder.finish())
                    .map(bytes::Bytes::from)
                    .expect("gzip writes to memory")
            })
            .clone()
    }

    /// The configuration was loaded (at start-up, or by a reload).
    pub fn config_loaded(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.last_reload_success.set(now.as_secs_f64());
    }

    pub fn reload(&self, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.config_reloads.with_label_values(&[result]).inc();
        if success {
            self.config_loaded();
        }
    }

    pub fn observe_failover(&self, failover: &Failover, took: Duration) {
        self.failover_seconds
            .with_label_values(&[failover.vip.as_str(), failover.reason.as_str()])
            .observe(took.as_secs_f64());
    }

    /// One probe of a check ran; `failure` names why it failed.
    pub fn observe_probe(
        &self,
        key: &CheckKey,
        kind: &str,
        latency: Duration,
        failure: Option<&str>,
    ) {
        self.check_duration
            .with_label_values(&[kind])
            .observe(latency.as_secs_f64());
        if let Some(reason) = failure {
            self.check_failures
                .with_label_values(&[&*key.vip, &key.to_string(), reason])
                .inc();
        }
    }

    /// Copies the core's and the data path's state into the registry.
    pub fn sync(
        &self,
        node: &Node,
        owner: &Owner,
        board: &StatusBoard,
        check_ids: &HashMap<CheckKey, CheckId>,
    ) {
        let names: Vec<String> = node.vips().iter().map(|v| v.config.name.clone()).collect();
        {
            let mut known = self.vips.lock().expect("metrics lock");
            if *known != names {
                // VIPs came or went: drop every per-VIP series and write
                // the current ones afresh.
                self.reset_per_vip();
                *known = names;
            }
        }
        let datapath = owner.datapath();
        let now = datapath.jiffies().ok();
        for vip in node.vips() {
            let name = vip.config.name.as_str();
            let vrid = vip.vrid().map(|v| v.to_string()).unwrap_or_default();
            let state = match vip.phase() {
                Phase::Initialize => 0,
                Phase::Backup | Phase::Standby | Phase::Withdrawn => 1,
                Phase::Master | Phase::Owner | Phase::Announced => 2,
                Phase::Fault => 3,
            };
            self.vip_state
                .with_label_values(&[name, &vip.config.address().to_string(), &vrid])
                .set(state);
            let entry = datapath.vip(vip.config.address().addr).unwrap_or_default();
            let answers = now.is_some_and(|now| entry.answers(now));
            self.vip_owned
                .with_label_values(&[name])
                .set(answers as i64);
            if vip.route() {
                let device = node.config().route_device.as_str();
                self.route_announced
                    .with_label_values(&[name, device])
                    .set(vip.owned as i64);
                let why = vip.not_announced();
                for reason in crate::core::NotAnnounced::ALL {
                    self.route_not_announced
                        .with_label_values(&[name, reason.as_str()])
                        .set((why == Some(reason)) as i64);
                }
            }
            let left = match (answers, now) {
                (true, Some(now)) => {
                    crate::clock::lease_left(entry.lease_deadline_jiffies, now).as_secs_f64()
                }
                _ => 0.0,
            };
            self.lease_remaining.with_label_values(&[name]).set(left);
            for reason in Reason::ALL {
                let count = vip.transitions.get(&reason).copied().unwrap_or(0);
                set_counter(&self.master_transitions, &[name, reason.as_str()], count);
            }
            if let Some(election) = &vip.election {
                let c = &election.counters;
                set_counter(&self.adverts_sent, &[name], c.adverts_sent);
                set_counter(&self.adverts_received, &[name], c.adverts_received);
                set_counter(&self.priority_zero_sent, &[name], c.priority_zero_sent);
                set_counter(
                    &self.priority_zero_received,
                    &[name],
                    c.priority_zero_received,
                );
            }
            let ipv6 = vip.config.address().addr.is_ipv6();
            if let Ok(c) = datapath.counters(vip.id) {
                if ipv6 {
                    set_counter(&self.nd_replies, &[name], c.nd_replied);
                    set_counter(&self.nd_dropped, &[name], c.nd_dropped_not_owner);
                } else {
                    set_counter(&self.arp_replies, &[name], c.arp_replied);
                    set_counter(
                        &self.arp_dropped,
                        &[name],
                        c.arp_dropped_not_owner + c.arp_dropped_route,
                    );
                }
                set_counter(&self.packets, &[name, "pass"], c.ip_passed);
                set_counter(&self.packets, &[name, "drop"], c.ip_dropped_not_owner);
                set_counter(&self.packets, &[name, "steer"], c.steered);
                set_counter(&self.packets, &[name, "no_backend"], c.no_backend);
                set_counter(&self.conflicts, &[name], c.conflicts_seen);
            }
            set_counter(
                &self.announcements,
                // A VIP is one family: gratuitous ARP or unsolicited Neighbour Advertisements.
                &[name, if ipv6 { "na" } else { "garp" }],
                vip.config
                    .addresses
                    .iter()
                    .map(|a| owner.announcements_sent(a.addr))
                    .sum(),
            );
            if let Some(balance) = &vip.balance {
                for b in &balance.backends {
                    let labels = [name, &b.address.to_string()];
                    let labels: Vec<&str> = labels.iter().map(|s| &**s).collect();
                    self.backend_up
                        .with_label_values(&labels)
                        .set(b.accepts_new_flows() as i64);
                    self.backend_weight
                        .with_label_values(&labels)
                        .set(b.weight as i64);
                    if let Ok(c) = datapath.backend_counters(b.id) {
                        set_counter(&self.backend_packets, &labels, c.packets);
                    }
                }
            }
        }
        // Once over the checks (not once per VIP): a thousand checks on a
        // hundred VIPs would otherwise be a hundred thousand steps.
        for (key, id) in check_ids {
            if let Some(status) = board.get(id) {
                self.check_up
                    .with_label_values(&[&*key.vip, &key.to_string(), status.kind])
                    .set(status.state.is_healthy() as i64);
            }
        }
        for (reason, count) in node.rejected() {
            set_counter(&self.adverts_rejected, &[reason], *count);
        }
        if let Ok(c) = datapath.counters(lbfo_common::NO_VIP) {
            let seen = self.malformed.get();
            if c.malformed >= seen {
                self.malformed.inc_by(c.malformed - seen);
            }
        }
        if node.vips().iter().any(|v| v.balance.is_some()) {
            let flows: u64 = datapath.active_flows().values().sum();
            self.conntrack_entries.set(flows as i64);
        }
    }

    fn reset_per_vip(&self) {
        for v in [
            &self.vip_state,
            &self.vip_owned,
            &self.check_up,
            &self.route_announced,
            &self.route_not_announced,
        ] {
            v.reset();
        }
        self.lease_remaining.reset();
        for v in [
            &self.master_transitions,
            &self.adverts_sent,
            &self.adverts_received,
            &self.priority_zero_sent,
            &self.priority_zero_received,
            &self.arp_replies,
            &self.arp_dropped,
            &self.nd_replies,
            &self.nd_dropped,
            &self.packets,
            &self.conflicts,
            &self.announcements,
            &self.backend_packets,
            &self.check_failures,
        ] {
            v.reset();
        }
        self.backend_up.reset();
        self.backend_weight.reset();
    }
}

/// Brings a counter to `value`, the running total kept elsewhere.
fn set_counter(vec: &IntCounterVec, labels: &[&str], value: u64) {
    let counter = vec.with_label_values(labels);
    let seen = counter.get();
    if value < seen {
        // The source started over (a VIP slot given to a new VIP).
        counter.reset();
        counter.inc_by(value);
    } else if value > seen {
        counter.inc_by(value - seen);
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown`.
pub async fn serve(
    listener: std::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => return tracing::error!("metrics endpoint: {e}"),
    };
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("metrics endpoint accept failed: {e}");
                    continue;
                }
            },
        };
        let metrics = metrics.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let metrics = metrics.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&request, &metrics)) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = shutdown.cancelled() => {}
                served = connection => if let Err(e) = served {
                    tracing::debug!("metrics connection ended: {e}");
                },
            }
        });
    }
}

fn answer(request: &Request<Incoming>, metrics: &Metrics) -> Response<Full<bytes::Bytes>> {
    // Prometheus asks for gzip: a tenth of the bytes, so a scrape storm
    // costs the node's network stack (softirqs, which preempt even the
    // real-time main loop) a tenth as much.
    let gzip = accepts_gzip(request.headers());
    let (status, content_type, body) = if request.uri().path() == "/metrics" {
        (
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.exposition(gzip),
        )
    } else {
        (
            404,
            "text/plain; charset=utf-8",
            bytes::Bytes::from_static(b"lbfo serves metrics at /metrics\n"),
        )
    };
    let mut response = Response::builder()
        .status(status)
        .header("content-type", content_type);
    if gzip && status == 200 {
        response = response.header("content-encoding", "gzip");
    }
    response.body(Full::new(body)).expect("a valid response")
}

/// Whether the scraper's `Accept-Encoding` lists gzip (without `q=0`).
fn accepts_gzip(headers: &hyper::HeaderMap) -> bool {
    headers
        .get_all(hyper::header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

/// Binds the endpoint's socket (at start-up, so a busy port is an error
/// before anything changes).
pub fn bind(listen: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = std::net::TcpListener::bind(listen)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(accept_encoding: &[&str]) -> hyper::HeaderMap {
        let mut h = hyper::HeaderMap::new();
        for v in accept_encoding {
            h.append(hyper::header::ACCEPT_ENCODING, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn gzip_is_served_to_scrapers_that_accept_it() {
        // What Prometheus sends, and what curl --compressed sends.
        assert!(accepts_gzip(&headers(&["gzip"])));
        assert!(accepts_gzip(&headers(&["deflate, gzip;q=1.0, *;q=0.5"])));
        assert!(accepts_gzip(&headers(&["br", "GZIP"])));
        assert!(!accepts_gzip(&headers(&[])));
        assert!(!accepts_gzip(&headers(&["identity"])));
        assert!(!accepts_gzip(&headers(&["gzip;q=0"])));
        assert!(!accepts_gzip(&headers(&["gzip; q=0.0"])));
    }

    #[test]
    fn the_gzip_exposition_decompresses_to_the_plain_one() {
        use std::io::Read as _;
        let metrics = Metrics::new().unwrap();
        let plain = metrics.exposition(false);
        let gzip = metrics.exposition(true);
        assert!(gzip.len() < plain.len());
        let mut unpacked = Vec::new();
        flate2::read::GzDecoder::new(&gzip[..])
            .read_to_end(&mut unpacked)
            .unwrap();
        assert_eq!(unpacked, plain.to_vec());
    }
}
