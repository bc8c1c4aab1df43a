//! What an operator writes for one health check (`[[vip.check]]` or
//! `[[vip.backend.check]]`) and its validation.
//!
//! The TOML table is read into a flat `RawCheck` that knows every field of
//! every kind (so `deny_unknown_fields` still catches typos), then turned into
//! the typed [`CheckConfig`] by `TryFrom`. Every message is one line naming
//! the field and what to change.
//!
//! The daemon's config embeds checks as `check: Vec<CheckConfig>`. Errors
//! tied to one field (unknown field or kind, wrong type) carry that field's
//! position; errors found only once the whole table is read (missing or
//! misplaced fields, ranges) are placed by the TOML parser at the start of
//! the array, i.e. the first `[[vip.check]]` of that VIP.
//!
//! ```toml
//! [[vip.check]]
//! kind = "http"            # http | tcp | icmp | exec
//! url = "http://192.0.2.1:8080/health"
//! expect_status = "200-299"
//! body_contains = "ok"
//! interval_ms = 500
//! timeout_ms = 300
//! rise = 2
//! fall = 3
//! weight = -20
//! ```

use std::{collections::BTreeMap, fmt, net::Ipv4Addr, time::Duration};

use http::{HeaderName, HeaderValue, Uri};
use serde::Deserialize;

/// Shortest interval accepted. Checks at 10 ms are only useful in tests, but
/// nothing breaks at that rate.
pub const MIN_INTERVAL_MS: u64 = 10;
/// Longest interval accepted: an hour.
pub const MAX_INTERVAL_MS: u64 = 3_600_000;
/// Largest `rise` / `fall`.
pub const MAX_RISE_FALL: u32 = 100;
/// The largest weight either way: it takes any priority of 1..=254 to the
/// other end of that range.
pub const MAX_WEIGHT: i32 = 253;

pub const DEFAULT_INTERVAL_MS: u64 = 1000;
pub const DEFAULT_RISE: u32 = 2;
pub const DEFAULT_FALL: u32 = 3;
pub const DEFAULT_EXPECT_STATUS: &str = "200-299";

/// One validated health check.
///
/// Two configs compare equal exactly when they would probe the same way, which
/// is what [`super::HealthChecker::sync`] uses to keep unchanged checks (and
/// their rise/fall state) running across a reload.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "RawCheck")]
pub struct CheckConfig {
    pub kind: CheckKind,
    /// Time between the starts of two probes (a fixed cadence, not a pause).
    pub interval: Duration,
    /// How long one probe may take; always shorter than `interval`.
    pub timeout: Duration,
    /// Successes in a row that turn the check healthy.
    pub rise: u32,
    /// Failures in a row that turn a healthy check unhealthy.
    pub fall: u32,
    /// `None`: a failing check faults the VIP. `Some(w)` with `w` in
    /// `-`[`MAX_WEIGHT`]`..=-1`: the VIP's VRRP priority is lowered by `|w|`
    /// while the check is not healthy; `1..=`[`MAX_WEIGHT`]: it is raised by
    /// `w` while the check is healthy (keepalived's meanings).
    pub weight: Option<i32>,
}

/// The kind-specific part of a check.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CheckKind {
    Http(HttpCheck),
    Tcp(TcpCheck),
    Icmp(IcmpCheck),
    Exec(ExecCheck),
}

/// `kind = "http"`: one HTTP/1.1 GET, on a fresh connection unless
/// `reuse_connection`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HttpCheck {
    /// `http://` or `https://`, always with a host.
    pub url: Uri,
    pub expect_status: StatusRanges,
    /// Substring the body (its first [`super::http::MAX_BODY_BYTES`] bytes)
    /// must contain.
    pub body_contains: Option<String>,
    /// Extra request headers, in name order. A `Host` here replaces the one
    /// taken from the URL (to check one virtual host on one backend address).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Accept any certificate (self-signed lab certs). Only for `https`.
    pub tls_skip_verify: bool,
    /// Keep the connection open across probes (HTTP/1.1 keep-alive).
    pub reuse_connection: bool,
    /// Derived from `url`: whether it is https, and the host (without the
    /// brackets of an IPv6 literal) and port to connect to.
    pub https: bool,
    pub target: HostPort,
    /// The request, encoded once (see `http::encode_request`).
    pub request: Vec<u8>,
}

/// `kind = "tcp"`: a TCP connect.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TcpCheck {
    pub address: HostPort,
}

/// `kind = "icmp"`: one echo request, one matching echo reply.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IcmpCheck {
    pub host: Ipv4Addr,
}

/// `kind = "exec"`: run a program (no shell); exit status 0 is healthy.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExecCheck {
    /// Program (an absolute path) and its arguments.
    pub command: Vec<String>,
}

/// A host (name or address) and a port, as in `"192.0.2.1:80"`,
/// `"db.example:5432"` or `"[2001:db8::1]:80"`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// Without brackets for IPv6.
    pub host: String,
    pub port: u16,
}

/// Accepted HTTP status codes: `"200"`, `"200-299"` or a comma-separated list
/// of both (`"200,301-302"`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StatusRanges {
    ranges: Vec<(u16, u16)>,
}

impl CheckConfig {
    /// A check with the default interval, timeout, rise and fall.
    #[cfg(test)]
    pub(crate) fn new(kind: CheckKind) -> Self {
        Self {
            kind,
            interval: Duration::from_millis(DEFAULT_INTERVAL_MS),
            timeout: Duration::from_millis(DEFAULT_INTERVAL_MS / 2),
            rise: DEFAULT_RISE,
            fall: DEFAULT_FALL,
            weight: None,
        }
    }

    /// `"http"`, `"tcp"`, `"icmp"` or `"exec"`.
    pub fn kind_name(&self) -> &'static str {
        self.kind.name()
    }

    /// Checks the invariants the engine relies on. Configs read from TOML
    /// have passed this already; [`super::HealthChecker::sync`] checks again
    /// for configs built in code.
    pub fn validate(&self) -> Result<(), String> {
        let interval_ms = self.interval.as_millis();
        let timeout_ms = self.timeout.as_millis();
        if !(u128::from(MIN_INTERVAL_MS)..=u128::from(MAX_INTERVAL_MS)).contains(&interval_ms) {
            return Err(format!(
                "interval_ms = {interval_ms} is out of range ({MIN_INTERVAL_MS}..={MAX_INTERVAL_MS})"
            ));
        }
        if timeout_ms == 0 {
            return Err("timeout_ms = 0: a probe needs some time".into());
        }
        if self.timeout >= self.interval {
            return Err(format!(
                "timeout_ms = {timeout_ms} must be less than interval_ms = {interval_ms} \
                 (a probe must end before the next one starts)"
            ));
        }
        for (name, value) in [("rise", self.rise), ("fall", self.fall)] {
            if !(1..=MAX_RISE_FALL).contains(&value) {
                return Err(format!(
                    "{name} = {value} is out of range (1..={MAX_RISE_FALL}): it counts results in a row"
                ));
            }
        }
        if let Some(w) = self.weight
            && (w == 0 || w.abs() > MAX_WEIGHT)
        {
            return Err(format!(
                "weight = {w} is not in -{MAX_WEIGHT}..=-1 or 1..={MAX_WEIGHT} (a failing check \
                 lowers the VRRP priority by -weight, a passing one raises it by weight); leave \
                 it out to fault the VIP instead"
            ));
        }
        match &self.kind {
            CheckKind::Http(h) => {
                validate_url(&h.url)?;
                if h.tls_skip_verify && h.url.scheme_str() != Some("https") {
                    return Err(format!(
                        "tls_skip_verify only applies to https URLs, not {}",
                        h.url
                    ));
                }
            }
            CheckKind::Tcp(t) => {
                if t.address.host.is_empty() || t.address.port == 0 {
                    return Err(format!(
                        "tcp check: address {} needs a host and a port",
                        t.address
                    ));
                }
            }
            CheckKind::Icmp(i) => validate_icmp_host(i.host)?,
            CheckKind::Exec(e) => validate_command(&e.command, "exec command")?,
        }
        Ok(())
    }
}

impl CheckConfig {
    /// What two checks must share to share their probes: everything but
    /// `rise`, `fall` and `weight`, which each user applies to the results
    /// on its own.
    pub(crate) fn probe_key(&self) -> CheckConfig {
        CheckConfig {
            rise: 0,
            fall: 0,
            weight: None,
            ..self.clone()
        }
    }
}

impl CheckKind {
    pub fn name(&self) -> &'static str {
        match self {
            CheckKind::Http(_) => "http",
            CheckKind::Tcp(_) => "tcp",
            CheckKind::Icmp(_) => "icmp",
            CheckKind::Exec(_) => "exec",
        }
    }
}

/// What the check probes, for logs and status: `http GET http://…`,
/// `tcp connect 192.0.2.1:80`, `icmp echo 192.0.2.1`, `exec /path arg`.
impl fmt::Display for CheckConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            CheckKind::Http(h) => write!(f, "http GET {}", h.url),
            CheckKind::Tcp(t) => write!(f, "tcp connect {}", t.address),
            CheckKind::Icmp(i) => write!(f, "icmp echo {}", i.host),
            CheckKind::Exec(e) => write!(f, "exec {}", e.command.join(" ")),
        }
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl std::str::FromStr for HostPort {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("address {s:?} is not host:port like \"192.0.2.1:80\"");
        if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
            if sa.port() == 0 {
                return Err(format!("address {s:?}: port 0 cannot be connected to"));
            }
            return Ok(Self {
                host: sa.ip().to_string(),
                port: sa.port(),
            });
        }
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        // A name, not an address: no further colon (that would be an IPv6
        // address without brackets) and something a resolver can look up.
        if host.is_empty()
            || host.contains(':')
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
        {
            return Err(bad());
        }
        let port: u16 = port.parse().map_err(|_| bad())?;
        if port == 0 {
            return Err(format!("address {s:?}: port 0 cannot be connected to"));
        }
        Ok(Self {
            host: host.to_string(),
            port,
        })
    }
}

impl StatusRanges {
    /// Whether `code` is accepted.
    pub fn contains(&self, code: u16) -> bool {
        self.ranges
            .iter()
            .any(|&(lo, hi)| (lo..=hi).contains(&code))
    }
}

impl std::str::FromStr for StatusRanges {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let code = |part: &str| -> Result<u16, String> {
            part.trim()
                .parse::<u16>()
                .ok()
                .filter(|c| (100..=599).contains(c))
                .ok_or_else(|| {
                    format!(
                        "expect_status {s:?}: {:?} is not an HTTP status code (100..=599)",
                        part.trim()
                    )
                })
        };
        let mut ranges = Vec::new();
        for part in s.split(',') {
            let (lo, hi) = match part.split_once('-') {
                Some((lo, hi)) => (code(lo)?, code(hi)?),
                None => {
                    let c = code(part)?;
                    (c, c)
                }
            };
            if lo > hi {
                return Err(format!(
                    "expect_status {s:?}: range {lo}-{hi} starts above its end (write {hi}-{lo})"
                ));
            }
            ranges.push((lo, hi));
        }
        Ok(Self { ranges })
    }
}

impl fmt::Display for StatusRanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (lo, hi)) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if lo == hi {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

fn validate_url(url: &Uri) -> Result<(), String> {
    match url.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(format!("url {url:?} must start with http:// or https://")),
    }
    let authority = url
        .authority()
        .ok_or_else(|| format!("url {:?} has no host", url.to_string()))?;
    if authority.host().is_empty() {
        return Err(format!("url {:?} has no host", url.to_string()));
    }
    if authority.as_str().contains('@') {
        return Err(format!(
            "url {:?}: user names and passwords in the URL are not supported; use headers",
            url.to_string()
        ));
    }
    if authority.port_u16() == Some(0) {
        return Err(format!(
            "url {:?}: port 0 cannot be connected to",
            url.to_string()
        ));
    }
    Ok(())
}

fn validate_icmp_host(host: Ipv4Addr) -> Result<(), String> {
    if host.is_unspecified() || host.is_broadcast() || host.is_multicast() {
        return Err(format!("icmp host {host} is not a unicast address"));
    }
    Ok(())
}

/// Checks a program to run without a shell; `what` names it in errors
/// (`exec command`, `notify_master`, ...).
pub(crate) fn validate_command(command: &[String], what: &str) -> Result<(), String> {
    let Some(program) = command.first() else {
        return Err(format!(
            "{what} is empty: give [\"/path/to/program\", \"arg\", ...]"
        ));
    };
    // The daemon's PATH and working directory are nothing an operator should
    // have to think about, and no shell is involved: name the file exactly.
    if !program.starts_with('/') {
        return Err(format!(
            "{what}[0] = {program:?} must be an absolute path (no shell, no PATH lookup)"
        ));
    }
    if command.iter().any(|a| a.contains('\0')) {
        return Err(format!("{what} contains a NUL byte"));
    }
    Ok(())
}

/// The TOML table as written: every field of every kind, all optional, so
/// the conversion can say which field is missing or does not belong.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    kind: KindName,
    interval_ms: Option<u64>,
    timeout_ms: Option<u64>,
    rise: Option<u32>,
    fall: Option<u32>,
    weight: Option<i32>,
    // http
    url: Option<String>,
    expect_status: Option<String>,
    body_contains: Option<String>,
    headers: Option<BTreeMap<String, String>>,
    tls_skip_verify: Option<bool>,
    reuse_connection: Option<bool>,
    // tcp
    address: Option<String>,
    // icmp
    host: Option<String>,
    // exec
    command: Option<Vec<String>>,
}

/// `kind = "…"`: a serde enum, so an unknown kind is reported at the line
/// of its `kind` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum KindName {
    Http,
    Tcp,
    Icmp,
    Exec,
}

impl TryFrom<RawCheck> for CheckConfig {
    type Error = String;

    fn try_from(raw: RawCheck) -> Result<Self, String> {
        let (kind_name, allowed): (&str, &[&str]) = match raw.kind {
            KindName::Http => (
                "http",
                &[
                    "url",
                    "expect_status",
                    "body_contains",
                    "headers",
                    "tls_skip_verify",
                    "reuse_connection",
                ],
            ),
            KindName::Tcp => ("tcp", &["address"]),
            KindName::Icmp => ("icmp", &["host"]),
            KindName::Exec => ("exec", &["command"]),
        };
        let present = [
            ("url", raw.url.is_some()),
            ("expect_status", raw.expect_status.is_some()),
            ("body_contains", raw.body_contains.is_some()),
            ("headers", raw.headers.is_some()),
            ("tls_skip_verify", raw.tls_skip_verify.is_some()),
            ("reuse_connection", raw.reuse_connection.is_some()),
            ("address", raw.address.is_some()),
            ("host", raw.host.is_some()),
            ("command", raw.command.is_some()),
        ];
        for (field, is_set) in present {
            if is_set && !allowed.contains(&field) {
                let belongs = match field {
                    "address" => "tcp",
                    "host" => "icmp",
                    "command" => "exec",
                    _ => "http",
                };
                return Err(format!(
                    "`{field}` does not apply to {kind_name} checks (it is for {belongs} checks)"
                ));
            }
        }
        let missing = |field: &str, example: &str| {
            format!("{kind_name} check needs `{field}` (like {field} = {example})")
        };

        let kind = match raw.kind {
            KindName::Http => {
                let url_text = raw
                    .url
                    .ok_or_else(|| missing("url", "\"http://192.0.2.1:8080/health\""))?;
                let url: Uri = url_text
                    .parse()
                    .map_err(|e| format!("url {url_text:?} is not a valid URL: {e}"))?;
                if url.authority().is_none() && url.scheme().is_none() {
                    return Err(format!(
                        "url {url_text:?} has no host (write it like \"http://192.0.2.1:8080/health\")"
                    ));
                }
                validate_url(&url)?;
                let expect_status = raw
                    .expect_status
                    .as_deref()
                    .unwrap_or(DEFAULT_EXPECT_STATUS)
                    .parse()?;
                if raw.body_contains.as_deref() == Some("") {
                    return Err("body_contains = \"\" matches every body; leave it out".into());
                }
                let mut headers = Vec::new();
                for (name, value) in raw.headers.unwrap_or_default() {
                    let header_name = HeaderName::from_bytes(name.as_bytes())
                        .map_err(|_| format!("headers: {name:?} is not a valid header name"))?;
                    let header_value = HeaderValue::from_str(&value).map_err(|_| {
                        format!("headers: value {value:?} of {name:?} is not a valid header value")
                    })?;
                    if header_name == http::header::CONNECTION
                        || header_name == http::header::CONTENT_LENGTH
                        || header_name == http::header::TRANSFER_ENCODING
                    {
                        return Err(format!(
                            "headers: {name:?} is set by lbfo (use reuse_connection to keep connections open)"
                        ));
                    }
                    headers.push((header_name, header_value));
                }
                let https = url.scheme_str() == Some("https");
                let authority = url.authority().expect("validate_url checked the host");
                let target = HostPort {
                    host: authority
                        .host()
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_string(),
                    port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
                };
                let reuse_connection = raw.reuse_connection.unwrap_or(false);
                let request = super::http::encode_request(
                    url.path_and_query().map_or("/", |p| p.as_str()),
                    authority.as_str(),
                    &headers,
                    reuse_connection,
                );
                CheckKind::Http(HttpCheck {
                    url,
                    expect_status,
                    body_contains: raw.body_contains,
                    headers,
                    tls_skip_verify: raw.tls_skip_verify.unwrap_or(false),
                    reuse_connection,
                    https,
                    target,
                    request,
                })
            }
            KindName::Tcp => {
                let address = raw
                    .address
                    .ok_or_else(|| missing("address", "\"192.0.2.1:80\""))?;
                CheckKind::Tcp(TcpCheck {
                    address: address.parse()?,
                })
            }
            KindName::Icmp => {
                let host = raw.host.ok_or_else(|| missing("host", "\"192.0.2.1\""))?;
                let host: Ipv4Addr = host.parse().map_err(|_| {
                    format!("icmp host {host:?} is not an IPv4 address (lbfo pings IPv4 addresses)")
                })?;
                CheckKind::Icmp(IcmpCheck { host })
            }
            KindName::Exec => {
                let command = raw
                    .command
                    .ok_or_else(|| missing("command", "[\"/usr/local/bin/check\", \"arg\"]"))?;
                CheckKind::Exec(ExecCheck { command })
            }
        };

        let interval_ms = raw.interval_ms.unwrap_or(DEFAULT_INTERVAL_MS);
        // Half the interval leaves the other half as margin: a probe that
        // takes its whole timeout still ends well before the next one.
        let timeout_ms = raw.timeout_ms.unwrap_or(interval_ms / 2);
        let config = CheckConfig {
            kind,
            interval: Duration::from_millis(interval_ms),
            timeout: Duration::from_millis(timeout_ms),
            rise: raw.rise.unwrap_or(DEFAULT_RISE),
            fall: raw.fall.unwrap_or(DEFAULT_FALL),
            weight: raw.weight,
        };
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks embedded the simple way: an array of tables in a parent.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        check: Vec<CheckConfig>,
    }

    /// A check table with its position in the text (the byte range of its
    /// `[[check]]` header, or of the inline table), so each error can be
    /// checked against the very table it is about.
    type SpannedCheck = toml::Spanned<RawCheck>;

    /// Converts a table read as [`SpannedCheck`]; an error comes with the
    /// table's byte range in the text.
    fn from_spanned(table: SpannedCheck) -> Result<CheckConfig, (std::ops::Range<usize>, String)> {
        let span = table.span();
        CheckConfig::try_from(table.into_inner()).map_err(|message| (span, message))
    }

    /// Checks embedded with their positions.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct SpannedDoc {
        check: Vec<SpannedCheck>,
    }

    fn line_of(text: &str, offset: usize) -> usize {
        text[..offset].matches('\n').count() + 1
    }

    /// Parses `[[check]]` tables the precise way and renders errors the way
    /// config.rs does: `line: message`, one line.
    fn parse(text: &str) -> Result<Vec<CheckConfig>, String> {
        let doc: SpannedDoc = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
            format!("{line}: {}", e.message().replace('\n', " ").trim())
        })?;
        doc.check
            .into_iter()
            .map(|t| {
                from_spanned(t)
                    .map_err(|(span, message)| format!("{}: {message}", line_of(text, span.start)))
            })
            .collect()
    }

    fn one(text: &str) -> CheckConfig {
        let mut checks = parse(text).unwrap_or_else(|e| panic!("{text:?} should parse, got {e}"));
        assert_eq!(checks.len(), 1);
        checks.remove(0)
    }

    #[test]
    fn the_issue_example_parses() {
        let c = one(r#"
[[check]]
kind = "http"
url = "http://192.0.2.1:8080/health"
expect_status = "200-299"
body_contains = "ok"
interval_ms = 500
timeout_ms = 300
rise = 2
fall = 3
weight = -20
headers = { "X-A" = "b" }
"#);
        assert_eq!(c.interval, Duration::from_millis(500));
        assert_eq!(c.timeout, Duration::from_millis(300));
        assert_eq!((c.rise, c.fall, c.weight), (2, 3, Some(-20)));
        let CheckKind::Http(h) = &c.kind else {
            panic!("expected an http check, got {c:?}")
        };
        assert_eq!(h.url.host(), Some("192.0.2.1"));
        assert_eq!(h.url.port_u16(), Some(8080));
        assert_eq!(h.expect_status.to_string(), "200-299");
        assert!(h.expect_status.contains(204) && !h.expect_status.contains(300));
        assert_eq!(h.body_contains.as_deref(), Some("ok"));
        assert_eq!(h.headers.len(), 1);
        assert_eq!(h.headers[0].0.as_str(), "x-a");
        assert!(!h.tls_skip_verify);
        assert_eq!(c.to_string(), "http GET http://192.0.2.1:8080/health");
    }

    #[test]
    fn defaults_and_other_kinds() {
        let checks = parse(
            r#"
[[check]]
kind = "tcp"
address = "192.0.2.1:80"
[[check]]
kind = "icmp"
host = "192.0.2.2"
interval_ms = 200
[[check]]
kind = "exec"
command = ["/usr/local/bin/check", "--quick"]
[[check]]
kind = "tcp"
url = "http://192.0.2.1/"
"#,
        );
        // The last table is wrong on purpose: the error names its line.
        assert_eq!(
            checks.unwrap_err(),
            "12: `url` does not apply to tcp checks (it is for http checks)"
        );

        let tcp = one("[[check]]\nkind = \"tcp\"\naddress = \"192.0.2.1:80\"\n");
        assert_eq!(tcp.interval, Duration::from_millis(1000));
        assert_eq!(tcp.timeout, Duration::from_millis(500));
        assert_eq!((tcp.rise, tcp.fall, tcp.weight), (2, 3, None));
        assert_eq!(tcp.to_string(), "tcp connect 192.0.2.1:80");

        let icmp = one("[[check]]\nkind = \"icmp\"\nhost = \"192.0.2.2\"\ninterval_ms = 200\n");
        assert_eq!(
            icmp.timeout,
            Duration::from_millis(100),
            "timeout defaults to half the interval"
        );
        assert_eq!(icmp.to_string(), "icmp echo 192.0.2.2");

        let exec = one("[[check]]\nkind = \"exec\"\ncommand = [\"/bin/check\", \"-q\"]\n");
        assert_eq!(exec.to_string(), "exec /bin/check -q");

        let https = one(
            "[[check]]\nkind = \"http\"\nurl = \"https://[2001:db8::1]/\"\ntls_skip_verify = true\nexpect_status = \"200,301-302\"\n",
        );
        let CheckKind::Http(h) = &https.kind else {
            panic!("{https:?}")
        };
        assert!(h.tls_skip_verify);
        assert_eq!(h.expect_status.to_string(), "200,301-302");
        assert!(h.expect_status.contains(301) && !h.expect_status.contains(303));

        let named = one("[[check]]\nkind = \"tcp\"\naddress = \"db.example:5432\"\n");
        let CheckKind::Tcp(t) = &named.kind else {
            panic!("{named:?}")
        };
        assert_eq!(
            t.address,
            HostPort {
                host: "db.example".into(),
                port: 5432
            }
        );
        let v6 = one("[[check]]\nkind = \"tcp\"\naddress = \"[2001:db8::1]:80\"\n");
        assert_eq!(v6.to_string(), "tcp connect [2001:db8::1]:80");
    }

    #[test]
    fn invalid_checks_give_one_line_errors_with_the_line() {
        // (table body after `[[check]]` on line 1, expected error)
        let cases: &[(&str, &str)] = &[
            (
                "kind = \"ftp\"\naddress = \"192.0.2.1:21\"",
                "2: unknown variant `ftp`, expected one of `http`, `tcp`, `icmp`, `exec`",
            ),
            ("address = \"192.0.2.1:80\"", "missing field `kind`"),
            (
                "kind = \"http\"\nurl = \"/health\"",
                "url \"/health\" has no host",
            ),
            (
                "kind = \"http\"\nurl = \"http:///health\"",
                "is not a valid URL",
            ),
            (
                "kind = \"http\"\nurl = \"http://:8080/health\"",
                "has no host",
            ),
            (
                "kind = \"http\"\nurl = \"ftp://192.0.2.1/\"",
                "must start with http:// or https://",
            ),
            (
                "kind = \"http\"\nurl = \"http://user:pw@192.0.2.1/\"",
                "passwords in the URL are not supported",
            ),
            (
                "kind = \"http\"\nurl = \"http://192.0.2.1/\"\nexpect_status = \"299-200\"",
                "expect_status \"299-200\": range 299-200 starts above its end (write 200-299)",
            ),
            (
                "kind = \"http\"\nurl = \"http://192.0.2.1/\"\nexpect_status = \"2xx\"",
                "\"2xx\" is not an HTTP status code",
            ),
            (
                "kind = \"http\"\nurl = \"http://192.0.2.1/\"\nexpect_status = \"600\"",
                "\"600\" is not an HTTP status code (100..=599)",
            ),
            (
                "kind = \"http\"\nurl = \"http://192.0.2.1/\"\nexpect_status = 200",
                "invalid type: integer `200`, expected a string",
            ),
            (
                "kind = \"http\"\nurl = \"http://192.0.2.1/\"\ntls_skip_verify = true",
                "tls_skip_verify only applies to https URLs",
            ),
            (
                "kind = \"http\"\nurl = \"http://192.0.2.1/\"\nheaders = { \"Bad Name\" = \"x\" }",
                "headers: \"Bad Name\" is not a valid header name",
            ),
            (
                "kind = \"http\"\nurl = \"http://192.0.2.1/\"\nheaders = { \"Connection\" = \"keep-alive\" }",
                "is set by lbfo",
            ),
            (
                "kind = \"http\"\nurl = \"http://192.0.2.1/\"\nbody_contains = \"\"",
                "matches every body",
            ),
            (
                "kind = \"http\"",
                "http check needs `url` (like url = \"http://192.0.2.1:8080/health\")",
            ),
            (
                "kind = \"tcp\"",
                "tcp check needs `address` (like address = \"192.0.2.1:80\")",
            ),
            ("kind = \"icmp\"", "icmp check needs `host`"),
            ("kind = \"exec\"", "exec check needs `command`"),
            (
                "kind = \"tcp\"\naddress = \"192.0.2.1\"",
                "address \"192.0.2.1\" is not host:port",
            ),
            (
                "kind = \"tcp\"\naddress = \"192.0.2.1:0\"",
                "port 0 cannot be connected to",
            ),
            (
                "kind = \"tcp\"\naddress = \"192.0.2.1:80\"\nurl = \"http://192.0.2.1/\"",
                "`url` does not apply to tcp checks (it is for http checks)",
            ),
            (
                "kind = \"http\"\nurl = \"http://192.0.2.1/\"\naddress = \"192.0.2.1:80\"",
                "`address` does not apply to http checks (it is for tcp checks)",
            ),
            (
                "kind = \"icmp\"\nhost = \"192.0.2.1\"\ncommand = [\"/bin/true\"]",
                "`command` does not apply to icmp checks (it is for exec checks)",
            ),
            (
                "kind = \"exec\"\ncommand = [\"/bin/true\"]\nhost = \"192.0.2.1\"",
                "`host` does not apply to exec checks (it is for icmp checks)",
            ),
            (
                "kind = \"icmp\"\nhost = \"example.com\"",
                "icmp host \"example.com\" is not an IPv4 address",
            ),
            (
                "kind = \"icmp\"\nhost = \"224.0.0.1\"",
                "is not a unicast address",
            ),
            ("kind = \"exec\"\ncommand = []", "exec command is empty"),
            (
                "kind = \"exec\"\ncommand = [\"check.sh\"]",
                "command[0] = \"check.sh\" must be an absolute path",
            ),
            (
                "kind = \"tcp\"\naddress = \"192.0.2.1:80\"\ninterval_ms = 500\ntimeout_ms = 500",
                "timeout_ms = 500 must be less than interval_ms = 500",
            ),
            (
                "kind = \"tcp\"\naddress = \"192.0.2.1:80\"\ninterval_ms = 500\ntimeout_ms = 900",
                "timeout_ms = 900 must be less than interval_ms = 500",
            ),
            (
                "kind = \"tcp\"\naddress = \"192.0.2.1:80\"\ntimeout_ms = 0",
                "timeout_ms = 0",
            ),
            (
                "kind = \"tcp\"\naddress = \"192.0.2.1:80\"\ninterval_ms = 5",
                "interval_ms = 5 is out of range (10..=3600000)",
            ),
            (
                "kind = \"tcp\"\naddress = \"192.0.2.1:80\"\nrise = 0",
                "rise = 0 is out of range (1..=100)",
            ),
            (
                "kind = \"tcp\"\naddress = \"192.0.2.1:80\"\nfall = 0",
                "fall = 0 is out of range (1..=100)",
            ),
            (
                "kind = \"tcp\"\naddress = \"192.0.2.1:80\"\nweight = 0",
                "weight = 0 is not in -253..=-1 or 1..=253",
            ),
            (
                "kind = \"tcp\"\naddress = \"192.0.2.1:80\"\nweight = 254",
                "weight = 254 is not in -253..=-1 or 1..=253",
            ),
            (
                "kind = \"tcp\"\naddress = \"192.0.2.1:80\"\nweight = -300",
                "weight = -300 is not in -253..=-1 or 1..=253",
            ),
            (
                "kind = \"tcp\"\naddress = \"192.0.2.1:80\"\nintervall_ms = 500",
                "unknown field `intervall_ms`",
            ),
            (
                "kind = \"tcp\"\naddress = \"192.0.2.1:80\"\nrise = -1",
                "invalid value: integer `-1`",
            ),
        ];
        for (body, want) in cases {
            let text = format!("[[check]]\n{body}\n");
            let err = parse(&text)
                .map(|c| format!("{c:?}"))
                .expect_err(&format!("config {text:?} should be rejected with {want:?}"));
            assert!(
                err.contains(want),
                "config {text:?}: expected an error containing {want:?}, got {err:?}"
            );
            assert!(!err.contains('\n'), "error must be one line, got {err:?}");
            assert!(
                !err.starts_with("0:"),
                "error must carry the table's line, got {err:?}"
            );
        }
    }

    #[test]
    fn simple_embedding_parses_and_places_table_errors_at_the_array() {
        let good = "[[check]]\nkind = \"tcp\"\naddress = \"192.0.2.1:80\"\n";
        let doc: Doc = toml::from_str(good).expect("plain Vec<CheckConfig> works");
        assert_eq!(doc.check.len(), 1);
        assert_eq!(doc.check[0].kind_name(), "tcp");
        let text = format!("{good}[[check]]\nkind = \"tcp\"\n");
        let err = toml::from_str::<Doc>(&text).unwrap_err();
        assert_eq!(
            err.message(),
            "tcp check needs `address` (like address = \"192.0.2.1:80\")"
        );
        let span = err.span().expect("a position");
        assert_eq!(
            line_of(&text, span.start),
            1,
            "the array's first table: {span:?}"
        );
        // Field-level errors keep their own line even this way.
        let text = format!("{good}[[check]]\nkind = \"ftp\"\n");
        let err = toml::from_str::<Doc>(&text).unwrap_err();
        assert_eq!(line_of(&text, err.span().unwrap().start), 5, "{err}");
    }

    #[test]
    fn spanned_errors_name_the_table_line() {
        let text = "[[check]]\nkind = \"tcp\"\naddress = \"192.0.2.1:80\"\n\n[[check]]\nkind = \"icmp\"\nhost = \"192.0.2.1\"\nrise = 0\n";
        assert_eq!(
            parse(text).unwrap_err(),
            "5: rise = 0 is out of range (1..=100): it counts results in a row"
        );
        let inline = "check = [\n  { kind = \"tcp\", address = \"192.0.2.1:80\" },\n  { kind = \"exec\" },\n]\n";
        assert_eq!(
            parse(inline).unwrap_err(),
            "3: exec check needs `command` (like command = [\"/usr/local/bin/check\", \"arg\"])"
        );
    }

    #[test]
    fn validate_catches_configs_built_in_code() {
        let mut c = CheckConfig::new(CheckKind::Tcp(TcpCheck {
            address: "192.0.2.1:80".parse().unwrap(),
        }));
        assert_eq!(c.validate(), Ok(()));
        c.timeout = c.interval;
        let err = c.validate().unwrap_err();
        assert!(err.contains("must be less than interval_ms"), "got {err:?}");
        c.timeout = Duration::from_millis(100);
        c.fall = 0;
        let err = c.validate().unwrap_err();
        assert!(err.starts_with("fall = 0"), "got {err:?}");
        c.fall = 1;
        c.kind = CheckKind::Exec(ExecCheck {
            command: vec!["true".into()],
        });
        let err = c.validate().unwrap_err();
        assert!(err.contains("must be an absolute path"), "got {err:?}");
    }
}
