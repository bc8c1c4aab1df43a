//! `kind = "http"`: one HTTP/1.1 GET per probe.
//!
//! By default on a fresh connection. A check must say whether the service
//! answers *new* clients *now*: a kept-alive connection can keep working
//! while the service no longer accepts connections (listener gone, backlog
//! full, a draining process still serving its old connections), and it
//! hides slow connects and TLS handshakes from the measured latency. So each
//! probe connects, sends `Connection: close`, reads what it needs and drops
//! the socket, which closes it with a reset (see `tcp::connect`): no
//! TIME_WAIT on lbfo's side, whose ephemeral ports are not used up.
//!
//! `reuse_connection = true` keeps one connection per check open across
//! probes (HTTP/1.1 keep-alive) and opens a new one when the kept one fails.
//! A probe then costs one request and one answer instead of a handshake as
//! well: the choice for many checks at short intervals, at the price above.
//! A request on a kept connection that the server closed meanwhile (its
//! keep-alive timeout) is sent again once on a fresh connection, within the
//! same timeout, so a server's idle timeout never reads as a failure.
//!
//! The exchange is small enough to do by hand over the socket, and that is
//! what keeps a probe cheap: the request is encoded once per check
//! ([`HttpCheck::request`]) and written with one system call; the answer's
//! head is parsed with `httparse`; the body is read only as far as the check
//! needs it (`body_contains`) or, on a kept connection, to its end as its
//! framing (`Content-Length` or chunked) says. A general client (hyper, which
//! lbfo used before) did the same work at about twice the CPU per probe,
//! measured against HAProxy's checks in `cargo xtask bench`.

use std::{
    net::SocketAddr,
    sync::{Arc, OnceLock},
    time::Duration,
};

use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{CertificateDer, ServerName, UnixTime},
};
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    time::{Instant, timeout_at},
};
use tokio_rustls::TlsConnector;
use tracing::{info, warn};

use super::{
    config::HttpCheck,
    error::{HttpProblem, ProbeError},
    tcp,
};

/// How much of a body `body_contains` looks at, and the longest body a kept
/// connection reads to its end (a longer one closes the connection instead).
/// Health endpoints answer in a few bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The longest response head accepted.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// The most response headers accepted.
const MAX_HEADERS: usize = 64;

pub(crate) const USER_AGENT: &str = concat!("lbfo-health/", env!("CARGO_PKG_VERSION"));

/// The two TLS client configurations, made on first use and shared by every
/// https check (which also shares rustls' session cache, so servers that
/// offer resumption get cheaper handshakes).
#[derive(Default)]
pub(crate) struct HttpProber {
    verified: OnceLock<Result<TlsConnector, String>>,
    unverified: OnceLock<Result<TlsConnector, String>>,
}

/// A connection, plain or TLS.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// What one http check keeps between its probes: the kept-alive connection
/// (with `reuse_connection`) and the read buffer.
#[derive(Default)]
pub(crate) struct HttpState {
    kept: Option<(Box<dyn Stream>, SocketAddr)>,
    buf: Vec<u8>,
}

impl HttpState {
    /// Connections this check has open between probes (0 or 1).
    #[cfg(test)]
    pub(crate) fn kept(&self) -> usize {
        usize::from(self.kept.is_some())
    }
}

impl HttpProber {
    pub(crate) async fn probe(
        &self,
        check: &HttpCheck,
        state: &mut HttpState,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<String, ProbeError> {
        if let Some((mut stream, addr)) = state.kept.take() {
            match exchange(&mut stream, &mut state.buf, check, addr, deadline, timeout).await {
                Ok(answer) => {
                    if answer.reusable {
                        state.kept = Some((stream, addr));
                    }
                    return answer.verdict;
                }
                // The server closed the idle connection: not a verdict on
                // the service. Ask again on a new one.
                Err(Unanswered::Closed) => {}
                Err(Unanswered::Failed(e)) => return Err(e),
            }
        }
        let (mut stream, addr) = self.connect(check, deadline, timeout).await?;
        match exchange(&mut stream, &mut state.buf, check, addr, deadline, timeout).await {
            Ok(answer) => {
                if answer.reusable && check.reuse_connection {
                    state.kept = Some((stream, addr));
                }
                answer.verdict
            }
            Err(Unanswered::Closed) => Err(ProbeError::Http {
                addr,
                problem: HttpProblem::Closed,
            }),
            Err(Unanswered::Failed(e)) => Err(e),
        }
    }

    async fn connect(
        &self,
        check: &HttpCheck,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<(Box<dyn Stream>, SocketAddr), ProbeError> {
        let target = &check.target;
        let addrs = tcp::resolve(&target.host, target.port, deadline, timeout).await?;
        let (stream, addr) = tcp::connect(&addrs, deadline, timeout).await?;
        if !check.https {
            return Ok((Box::new(stream), addr));
        }
        let connector = self.connector(check.tls_skip_verify)?;
        let host = target.host.as_str();
        let server_name = ServerName::try_from(host.to_string())
            .map_err(|e| ProbeError::TlsSetup(format!("{host:?} as TLS server name: {e}")))?;
        let tls = timeout_at(deadline, connector.connect(server_name, stream))
            .await
            .map_err(|_| ProbeError::Timeout {
                waiting_for: format!("in the TLS handshake with {addr}"),
                after: timeout,
            })?
            .map_err(|source| ProbeError::Tls {
                addr,
                server_name: host.to_string(),
                source,
            })?;
        Ok((Box::new(tls), addr))
    }

    fn connector(&self, skip_verify: bool) -> Result<TlsConnector, ProbeError> {
        let cell = if skip_verify {
            &self.unverified
        } else {
            &self.verified
        };
        cell.get_or_init(|| tls_config(skip_verify).map(|c| TlsConnector::from(Arc::new(c))))
            .clone()
            .map_err(ProbeError::TlsSetup)
    }
}

/// A verdict, and whether the connection may carry the next request.
struct Answer {
    verdict: Result<String, ProbeError>,
    reusable: bool,
}

/// Why no verdict came from a connection.
enum Unanswered {
    /// The connection closed (or was reset) before any byte of an answer.
    Closed,
    Failed(ProbeError),
}

/// How the answer's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    /// At the end of the connection.
    Close,
}

/// The head of an answer, as far as a check cares.
struct Head {
    status: u16,
    /// Bytes of the buffer the head took.
    len: usize,
    framing: Framing,
    /// The server lets the connection carry another request.
    keep_alive: bool,
}

/// Sends the check's request and reads the answer.
async fn exchange(
    stream: &mut Box<dyn Stream>,
    buf: &mut Vec<u8>,
    check: &HttpCheck,
    addr: SocketAddr,
    deadline: Instant,
    timeout: Duration,
) -> Result<Answer, Unanswered> {
    let failed = |problem| Unanswered::Failed(ProbeError::Http { addr, problem });
    let timed_out = |waiting_for: &str| {
        Unanswered::Failed(ProbeError::Timeout {
            waiting_for: format!("{waiting_for} {addr}"),
            after: timeout,
        })
    };
    buf.clear();
    match timeout_at(deadline, stream.write_all(&check.request)).await {
        Err(_) => return Err(timed_out("sending the request to")),
        Ok(Err(e)) if is_closed(&e) => return Err(Unanswered::Closed),
        Ok(Err(e)) => return Err(failed(HttpProblem::Io(e))),
        Ok(Ok(())) => {}
    }
    let head = loop {
        match parse_head(buf) {
            Ok(Some(head)) if (100..200).contains(&head.status) => {
                // An interim answer (100 Continue, 103 Early Hints): the real
                // one follows.
                buf.drain(..head.len);
                continue;
            }
            Ok(Some(head)) => break head,
            Ok(None) if buf.len() >= MAX_HEAD_BYTES => {
                return Err(failed(HttpProblem::HeadTooLarge));
            }
            Ok(None) => {}
            Err(e) => return Err(failed(HttpProblem::Malformed(e))),
        }
        match timeout_at(deadline, read_more(stream, buf)).await {
            Err(_) => return Err(timed_out("waiting for the response from")),
            Ok(Ok(0)) | Ok(Err(_)) if buf.is_empty() => return Err(Unanswered::Closed),
            Ok(Ok(0)) => return Err(failed(HttpProblem::Closed)),
            Ok(Err(e)) => return Err(failed(HttpProblem::Io(e))),
            Ok(Ok(_)) => {}
        }
    };
    let status = head.status;
    if !check.expect_status.contains(status) {
        return Ok(Answer {
            verdict: Err(ProbeError::Status {
                status,
                expected: check.expect_status.to_string(),
            }),
            reusable: false,
        });
    }
    let reuse = check.reuse_connection && head.keep_alive && head.framing != Framing::Close;
    if check.body_contains.is_none() && !reuse {
        return Ok(Answer {
            verdict: Ok(format!("HTTP {status} from {addr}")),
            reusable: false,
        });
    }
    buf.drain(..head.len);
    let body = match timeout_at(deadline, read_body(stream, buf, head.framing)).await {
        Err(_) => return Err(timed_out("reading the body from")),
        Ok(Err(problem)) => return Err(failed(problem)),
        Ok(Ok(body)) => body,
    };
    let verdict = match &check.body_contains {
        Some(needle) if !contains(&body.bytes, needle.as_bytes()) => Err(ProbeError::Body {
            status,
            read: body.bytes.len(),
            needle: needle.clone(),
        }),
        Some(needle) => Ok(format!(
            "HTTP {status} from {addr}, body contains {needle:?}"
        )),
        None => Ok(format!("HTTP {status} from {addr}")),
    };
    Ok(Answer {
        verdict,
        reusable: reuse && body.complete,
    })
}

fn is_closed(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        BrokenPipe | ConnectionReset | ConnectionAborted | UnexpectedEof
    )
}

/// Reads what the socket has into the free end of `buf`.
async fn read_more(stream: &mut Box<dyn Stream>, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(4096);
    }
    stream.read_buf(buf).await
}

/// Reads until `buf` holds at least `len` bytes: true once it does, false
/// if the connection ended first.
async fn fill(
    stream: &mut Box<dyn Stream>,
    buf: &mut Vec<u8>,
    len: usize,
) -> Result<bool, HttpProblem> {
    while buf.len() < len {
        if read_more(stream, buf).await.map_err(HttpProblem::Io)? == 0 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The answer's head, once `buf` holds all of it.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, httparse::Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf)? {
        httparse::Status::Partial => return Ok(None),
        httparse::Status::Complete(len) => len,
    };
    let status = response.code.unwrap_or_default();
    let mut keep_alive = response.version == Some(1);
    let mut framing = Framing::Close;
    for header in response.headers.iter() {
        let value = std::str::from_utf8(header.value).unwrap_or_default();
        if header.name.eq_ignore_ascii_case("connection") {
            if value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("close"))
            {
                keep_alive = false;
            }
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            framing = if value
                .rsplit(',')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked"))
            {
                Framing::Chunked
            } else {
                Framing::Close
            };
        } else if header.name.eq_ignore_ascii_case("content-length") && framing != Framing::Chunked
        {
            framing = value
                .trim()
                .parse()
                .map(Framing::Length)
                .map_err(|_| httparse::Error::HeaderValue)?;
        }
    }
    // No body, whatever the headers say (RFC 9112 section 6.3).
    if status == 204 || status == 304 {
        framing = Framing::Length(0);
    }
    Ok(Some(Head {
        status,
        len,
        framing,
        keep_alive,
    }))
}

/// A body, up to [`MAX_BODY_BYTES`] of it.
struct Body {
    bytes: Vec<u8>,
    /// All of it was read, and the connection is at the next answer.
    complete: bool,
}

/// Reads the body that starts at `buf[0]`, as `framing` says it ends.
async fn read_body(
    stream: &mut Box<dyn Stream>,
    buf: &mut Vec<u8>,
    framing: Framing,
) -> Result<Body, HttpProblem> {
    let mut bytes = Vec::new();
    match framing {
        Framing::Length(len) => {
            let want = len.min(MAX_BODY_BYTES);
            if !fill(stream, buf, want).await? {
                return Err(HttpProblem::Closed);
            }
            bytes.extend_from_slice(&buf[..want]);
            Ok(Body {
                bytes,
                complete: len <= MAX_BODY_BYTES && buf.len() == len,
            })
        }
        Framing::Close => {
            fill(stream, buf, MAX_BODY_BYTES).await?;
            buf.truncate(MAX_BODY_BYTES);
            bytes.extend_from_slice(buf);
            Ok(Body {
                bytes,
                complete: false,
            })
        }
        Framing::Chunked => {
            // Each chunk: its size in hex, CRLF, the data, CRLF; a size of 0
            // ends the body (trailers are not used by health endpoints and
            // end the reuse of the connection).
            let mut at = 0;
            loop {
                let (size_len, size) = loop {
                    match httparse::parse_chunk_size(&buf[at..]) {
                        Ok(httparse::Status::Complete((n, size))) => break (n, size as usize),
                        Ok(httparse::Status::Partial) => {}
                        Err(_) => return Err(HttpProblem::BadChunk),
                    }
                    if !fill(stream, buf, buf.len() + 1).await? {
                        return Err(HttpProblem::Closed);
                    }
                };
                at += size_len;
                if size == 0 {
                    if !fill(stream, buf, at + 2).await? {
                        return Err(HttpProblem::Closed);
                    }
                    return Ok(Body {
                        bytes,
                        complete: &buf[at..at + 2] == b"\r\n" && buf.len() == at + 2,
                    });
                }
                if bytes.len() + size > MAX_BODY_BYTES {
                    // Enough to judge; the rest is not read, so the
                    // connection is not reused.
                    let room = MAX_BODY_BYTES - bytes.len();
                    fill(stream, buf, at + room).await?;
                    let end = buf.len().min(at + room);
                    bytes.extend_from_slice(&buf[at..end]);
                    return Ok(Body {
                        bytes,
                        complete: false,
                    });
                }
                if !fill(stream, buf, at + size + 2).await? {
                    return Err(HttpProblem::Closed);
                }
                bytes.extend_from_slice(&buf[at..at + size]);
                if &buf[at + size..at + size + 2] != b"\r\n" {
                    return Err(HttpProblem::BadChunk);
                }
                at += size + 2;
            }
        }
    }
}

/// The request a check sends, encoded once: the path and query of the URL,
/// `Host` from the URL (or the operator's own), lbfo's `User-Agent`,
/// `Connection: close` unless the connection is kept, the operator's
/// headers.
pub(crate) fn encode_request(
    path_and_query: &str,
    authority: &str,
    headers: &[(http::HeaderName, http::HeaderValue)],
    keep_alive: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    let path = if path_and_query.is_empty() {
        "/"
    } else {
        path_and_query
    };
    out.extend_from_slice(format!("GET {path} HTTP/1.1\r\n").as_bytes());
    if !headers.iter().any(|(name, _)| name == http::header::HOST) {
        out.extend_from_slice(format!("host: {authority}\r\n").as_bytes());
    }
    out.extend_from_slice(format!("user-agent: {USER_AGENT}\r\naccept: */*\r\n").as_bytes());
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    }
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

fn tls_config(skip_verify: bool) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS protocol versions: {e}"))?;
    let mut config = if skip_verify {
        warn!("https checks with tls_skip_verify accept any certificate");
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth()
    } else {
        let loaded = rustls_native_certs::load_native_certs();
        for error in &loaded.errors {
            warn!(%error, "problem reading the system's trusted CA certificates");
        }
        let mut roots = RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(loaded.certs);
        if added == 0 {
            warn!(
                "no trusted CA certificates in the system store: https checks without tls_skip_verify will fail"
            );
        } else {
            info!(
                added,
                ignored, "loaded the system's trusted CA certificates for https checks"
            );
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    // HTTP/1.1 only: a check is one GET, and h2 would not change its verdict.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// `tls_skip_verify = true`: any certificate, any name, any issuer. The
/// handshake signatures are still checked, so the peer holds the key of the
/// certificate it sent; what is skipped is trusting that certificate.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{
        config::{CheckConfig, CheckKind},
        testutil::{Answer, TestHttpServer},
    };

    fn check(url: &str, extra: &str) -> HttpCheck {
        let text = format!("kind = \"http\"\nurl = \"{url}\"\n{extra}\n");
        let config: CheckConfig =
            toml::from_str(&text).unwrap_or_else(|e| panic!("test config {text:?}: {e}"));
        match config.kind {
            CheckKind::Http(h) => h,
            other => panic!("expected http, got {other:?}"),
        }
    }

    async fn run(check: &HttpCheck, timeout_ms: u64) -> Result<String, ProbeError> {
        let timeout = Duration::from_millis(timeout_ms);
        HttpProber::default()
            .probe(
                check,
                &mut HttpState::default(),
                Instant::now() + timeout,
                timeout,
            )
            .await
    }

    /// Probes `times` times with one prober and one check state, as a
    /// check task does; every result in order.
    async fn probes(
        check: &HttpCheck,
        times: usize,
    ) -> (Vec<Result<String, ProbeError>>, HttpState) {
        let prober = HttpProber::default();
        let mut state = HttpState::default();
        let mut results = Vec::new();
        for _ in 0..times {
            let t = Duration::from_millis(500);
            results.push(prober.probe(check, &mut state, Instant::now() + t, t).await);
        }
        (results, state)
    }

    #[tokio::test]
    async fn ok_answer_is_healthy_and_request_is_well_formed() {
        let server = TestHttpServer::start(Answer::Status(200, "all ok")).await;
        let url = format!("http://{}/health?deep=1", server.addr);
        let c = check(
            &url,
            "body_contains = \"ok\"\nheaders = { \"X-A\" = \"b\" }",
        );
        let detail = run(&c, 2000)
            .await
            .expect("200 with 'ok' in the body is healthy");
        assert_eq!(
            detail,
            format!("HTTP 200 from {}, body contains \"ok\"", server.addr)
        );
        let requests = server.requests();
        assert_eq!(requests.len(), 1, "one probe, one request: {requests:?}");
        let req = requests[0].to_ascii_lowercase();
        assert!(
            req.starts_with("get /health?deep=1 http/1.1\r\n"),
            "request line: {req:?}"
        );
        assert!(
            req.contains(&format!("\r\nhost: {}\r\n", server.addr)),
            "Host header from the URL: {req:?}"
        );
        assert!(
            req.contains("\r\nconnection: close\r\n"),
            "fresh connection per probe: {req:?}"
        );
        assert!(req.contains("\r\nx-a: b\r\n"), "extra header: {req:?}");
    }

    #[tokio::test]
    async fn host_header_can_name_a_virtual_host() {
        let server = TestHttpServer::start(Answer::Status(204, "")).await;
        let c = check(
            &format!("http://{}/", server.addr),
            "headers = { \"Host\" = \"www.example\" }\nexpect_status = \"204\"",
        );
        run(&c, 2000).await.expect("204 is expected");
        let req = server.requests()[0].to_ascii_lowercase();
        assert!(req.contains("\r\nhost: www.example\r\n"), "{req:?}");
        assert_eq!(
            req.matches("\r\nhost:").count(),
            1,
            "one Host header only: {req:?}"
        );
    }

    #[tokio::test]
    async fn wrong_status_fails_with_what_was_seen() {
        let server = TestHttpServer::start(Answer::Status(500, "boom")).await;
        let c = check(
            &format!("http://{}/", server.addr),
            "expect_status = \"200-299\"",
        );
        let err = run(&c, 2000).await.expect_err("500 is not in 200-299");
        assert_eq!(err.to_string(), "HTTP status 500 is not in 200-299");
    }

    #[tokio::test]
    async fn missing_body_text_fails() {
        let server = TestHttpServer::start(Answer::Status(200, "degraded")).await;
        let c = check(
            &format!("http://{}/", server.addr),
            "body_contains = \"ok\"",
        );
        let err = run(&c, 2000).await.expect_err("body lacks 'ok'");
        assert_eq!(
            err.to_string(),
            "HTTP status 200 but the body (first 8 bytes) does not contain \"ok\""
        );
    }

    #[tokio::test]
    async fn slow_answer_times_out() {
        let server = TestHttpServer::start(Answer::Slow(Duration::from_millis(1500), 200)).await;
        let c = check(&format!("http://{}/", server.addr), "");
        let started = std::time::Instant::now();
        let err = run(&c, 200)
            .await
            .expect_err("an answer after 1.5 s misses a 200 ms timeout");
        let took = started.elapsed();
        assert_eq!(
            err.to_string(),
            format!(
                "timed out after 200 ms waiting for the response from {}",
                server.addr
            )
        );
        assert!(
            took < Duration::from_millis(1000),
            "probe must end at its timeout, took {took:?}"
        );
    }

    #[tokio::test]
    async fn accept_then_hang_times_out() {
        let server = TestHttpServer::start(Answer::Hang).await;
        let c = check(&format!("http://{}/", server.addr), "");
        let err = run(&c, 150)
            .await
            .expect_err("a server that never answers is unhealthy");
        assert!(
            matches!(err, ProbeError::Timeout { .. }),
            "expected a timeout, got {err}"
        );
    }

    #[tokio::test]
    async fn close_without_answer_fails() {
        let server = TestHttpServer::start(Answer::Close).await;
        let c = check(&format!("http://{}/", server.addr), "");
        let err = run(&c, 2000)
            .await
            .expect_err("a server that hangs up is unhealthy");
        assert!(
            matches!(err, ProbeError::Http { .. }),
            "expected an HTTP exchange error, got {err}"
        );
    }

    #[tokio::test]
    async fn closed_port_fails_at_connect() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = check(&format!("http://127.0.0.1:{port}/"), "");
        let err = run(&c, 2000).await.expect_err("nothing listens");
        assert!(
            err.to_string()
                .starts_with(&format!("connecting to 127.0.0.1:{port}: ")),
            "expected a connect error, got {err}"
        );
    }

    #[tokio::test]
    async fn each_probe_uses_a_fresh_connection() {
        // Even against a server that would keep the connection open.
        let server = TestHttpServer::start(Answer::KeepAlive(200, "ok")).await;
        let c = check(&format!("http://{}/", server.addr), "");
        let (results, state) = probes(&c, 3).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(
            server.connections(),
            3,
            "three probes must open three connections"
        );
        assert_eq!(state.kept(), 0, "nothing is kept between probes");
    }

    #[tokio::test]
    async fn reuse_keeps_one_connection_across_probes() {
        let server = TestHttpServer::start(Answer::KeepAlive(200, "all ok")).await;
        let c = check(
            &format!("http://{}/health", server.addr),
            "reuse_connection = true\nbody_contains = \"ok\"",
        );
        let (results, state) = probes(&c, 5).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(server.connections(), 1, "five probes, one connection");
        assert_eq!(server.requests().len(), 5, "one request per probe");
        assert_eq!(state.kept(), 1);
        let req = server.requests()[0].to_ascii_lowercase();
        assert!(
            !req.contains("connection: close"),
            "a kept connection does not ask to close: {req:?}"
        );
    }

    #[tokio::test]
    async fn reuse_reads_chunked_bodies_to_their_end() {
        let server = TestHttpServer::start(Answer::KeepAliveChunked(200, "status: all ok")).await;
        let c = check(
            &format!("http://{}/", server.addr),
            "reuse_connection = true\nbody_contains = \"all ok\"",
        );
        let (results, _) = probes(&c, 3).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(
            server.connections(),
            1,
            "the chunked body was read to its end, so the connection carried every request"
        );
    }

    #[tokio::test]
    async fn reuse_reopens_when_the_server_closes_kept_connections() {
        let server = TestHttpServer::start(Answer::KeepAliveThenClose(200, "ok")).await;
        let c = check(
            &format!("http://{}/", server.addr),
            "reuse_connection = true",
        );
        let (results, _) = probes(&c, 4).await;
        assert!(
            results.iter().all(Result::is_ok),
            "a server closing idle connections is healthy: {results:?}"
        );
        assert_eq!(
            server.connections(),
            4,
            "each probe found the kept connection closed"
        );
    }

    #[tokio::test]
    async fn reuse_honours_connection_close() {
        let server = TestHttpServer::start(Answer::Status(200, "ok")).await;
        let c = check(
            &format!("http://{}/", server.addr),
            "reuse_connection = true",
        );
        let (results, state) = probes(&c, 3).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(
            server.connections(),
            3,
            "`Connection: close` answers are not reused"
        );
        assert_eq!(state.kept(), 0);
    }

    #[tokio::test]
    async fn reuse_fails_a_stalled_server_and_starts_again_fresh() {
        let server = TestHttpServer::start(Answer::KeepAlive(200, "ok")).await;
        let c = check(
            &format!("http://{}/", server.addr),
            "reuse_connection = true",
        );
        let prober = HttpProber::default();
        let mut state = HttpState::default();
        let t = Duration::from_millis(200);
        prober
            .probe(&c, &mut state, Instant::now() + t, t)
            .await
            .expect("first answer");
        server.set(Answer::Hang);
        let err = prober
            .probe(&c, &mut state, Instant::now() + t, t)
            .await
            .expect_err("a kept connection that stalls is a failure, not a retry");
        assert!(matches!(err, ProbeError::Timeout { .. }), "{err}");
        assert_eq!(state.kept(), 0, "the stalled connection is dropped");
        server.set(Answer::KeepAlive(200, "ok"));
        prober
            .probe(&c, &mut state, Instant::now() + t, t)
            .await
            .expect("answers again");
        assert_eq!(
            server.connections(),
            2,
            "the next probe opened a new connection"
        );
    }

    #[tokio::test]
    async fn https_with_skip_verify_accepts_a_self_signed_certificate() {
        let server = TestHttpServer::start_tls(Answer::Status(200, "ok")).await;
        let url = format!("https://127.0.0.1:{}/health", server.addr.port());
        let c = check(&url, "tls_skip_verify = true\nbody_contains = \"ok\"");
        let detail = run(&c, 3000)
            .await
            .expect("skip-verify accepts a self-signed cert");
        assert!(detail.starts_with("HTTP 200"), "{detail}");
        assert_eq!(server.requests().len(), 1);
    }

    #[tokio::test]
    async fn https_verifies_certificates_by_default() {
        let server = TestHttpServer::start_tls(Answer::Status(200, "ok")).await;
        let url = format!("https://127.0.0.1:{}/health", server.addr.port());
        let c = check(&url, "");
        let err = run(&c, 3000)
            .await
            .expect_err("a self-signed cert is not trusted");
        let msg = err.to_string();
        assert!(
            matches!(err, ProbeError::Tls { .. }) && msg.contains("certificate"),
            "expected a certificate error in the TLS handshake, got {msg:?}"
        );
        assert!(
            server.requests().is_empty(),
            "no request goes over an untrusted connection"
        );
    }

    #[test]
    fn substring_search() {
        assert!(contains(b"status: ok\n", b"ok"));
        assert!(!contains(b"o k", b"ok"));
        assert!(!contains(b"o", b"ok"));
    }
}
