//! Test fixtures: a loopback HTTP(S) server that answers as told, process
//! inspection, and a network namespace that removes itself.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::TcpListener,
    task::JoinSet,
};

/// How the test server treats the next requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Answer at once with this status and body.
    Status(u16, &'static str),
    /// Answer with this status after the delay.
    Slow(Duration, u16),
    /// Read the request, then say nothing and keep the connection open.
    Hang,
    /// Read the request, then close without answering.
    Close,
    /// Answer with this status and body and keep the connection open for
    /// more requests (HTTP/1.1 keep-alive, `Content-Length` framing).
    KeepAlive(u16, &'static str),
    /// The same with a chunked body, in chunks of at most 3 bytes.
    KeepAliveChunked(u16, &'static str),
    /// Answer as `KeepAlive` does, then close the idle connection at once
    /// without saying so (as a server whose keep-alive timeout is short).
    KeepAliveThenClose(u16, &'static str),
}

/// No test connection lives longer than this, whatever it was told.
const MAX_HOLD: Duration = Duration::from_secs(30);

/// An HTTP/1.1 server on 127.0.0.1 with an ephemeral port. It stops (and
/// drops every connection) when dropped.
pub(crate) struct TestHttpServer {
    pub(crate) addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

struct Shared {
    answer: Mutex<Answer>,
    requests: Mutex<Vec<String>>,
    connections: AtomicU64,
}

impl TestHttpServer {
    pub(crate) async fn start(answer: Answer) -> Self {
        Self::start_inner(answer, None).await
    }

    /// The same over TLS with a fresh self-signed certificate for
    /// "localhost" and 127.0.0.1.
    pub(crate) async fn start_tls(answer: Answer) -> Self {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("self-signed certificate");
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .expect("server certificate");
        Self::start_inner(
            answer,
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
        )
        .await
    }

    async fn start_inner(answer: Answer, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        // A deep backlog: the load tests connect thousands of times a second
        // while this process is also the busy client.
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().unwrap())
            .expect("bind loopback");
        let listener: TcpListener = socket.listen(4096).expect("listen");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            answer: Mutex::new(answer),
            requests: Mutex::new(Vec::new()),
            connections: AtomicU64::new(0),
        });
        let task = tokio::spawn({
            let shared = shared.clone();
            async move {
                // Dropping the JoinSet (when this task is aborted) aborts every
                // connection handler.
                let mut handlers = JoinSet::new();
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    shared.connections.fetch_add(1, Ordering::SeqCst);
                    let shared = shared.clone();
                    let tls = tls.clone();
                    handlers.spawn(async move {
                        match tls {
                            None => serve(stream, &shared).await,
                            Some(acceptor) => {
                                if let Ok(s) = acceptor.accept(stream).await {
                                    serve(s, &shared).await
                                }
                            }
                        }
                    });
                    // Reap finished handlers so the set stays small.
                    while handlers.try_join_next().is_some() {}
                }
            }
        });
        Self { addr, shared, task }
    }

    pub(crate) fn set(&self, answer: Answer) {
        *self.shared.answer.lock().unwrap() = answer;
    }

    /// Request heads received so far, in order.
    pub(crate) fn requests(&self) -> Vec<String> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Connections accepted so far.
    pub(crate) fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }
}

impl Drop for TestHttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, shared: &Shared) {
    let mut pending = Vec::new();
    loop {
        let mut buf = [0u8; 1024];
        let head_end = loop {
            if let Some(at) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            if pending.len() > 16 * 1024 {
                return;
            }
            match tokio::time::timeout(MAX_HOLD, stream.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => pending.extend_from_slice(&buf[..n]),
                _ => return,
            }
        };
        let head: Vec<u8> = pending.drain(..head_end).collect();
        shared
            .requests
            .lock()
            .unwrap()
            .push(String::from_utf8_lossy(&head).into_owned());
        let answer = *shared.answer.lock().unwrap();
        let response = match answer {
            Answer::Status(status, body) => close_response(status, body),
            Answer::Slow(delay, status) => {
                tokio::time::sleep(delay.min(MAX_HOLD)).await;
                close_response(status, "slow")
            }
            Answer::Hang => {
                tokio::time::sleep(MAX_HOLD).await;
                return;
            }
            Answer::Close => return,
            Answer::KeepAlive(status, body) | Answer::KeepAliveThenClose(status, body) => {
                format!(
                    "HTTP/1.1 {status} Test\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
            }
            Answer::KeepAliveChunked(status, body) => {
                let mut r = format!("HTTP/1.1 {status} Test\r\nTransfer-Encoding: chunked\r\n\r\n");
                for chunk in body.as_bytes().chunks(3) {
                    r += &format!(
                        "{:x}\r\n{}\r\n",
                        chunk.len(),
                        String::from_utf8_lossy(chunk)
                    );
                }
                r + "0\r\n\r\n"
            }
        };
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
        match answer {
            Answer::KeepAlive(..) | Answer::KeepAliveChunked(..) => continue,
            _ => {
                let _ = stream.shutdown().await;
                return;
            }
        }
    }
}

fn close_response(status: u16, body: &str) -> String {
    format!(
        "HTTP/1.1 {status} Test\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// A free port on 127.0.0.1 with nothing listening (bound, then closed).
pub(crate) fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind loopback")
        .local_addr()
        .expect("local addr")
        .port()
}

/// The state letter of a process from /proc (`R`, `S`, `Z`, …), or `None`
/// once it no longer exists.
pub(crate) fn process_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ...": the state follows the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Waits (bounded) until `pid` is gone or a zombie of another parent; returns
/// the last state seen, `None` meaning gone.
pub(crate) async fn wait_process_gone(pid: i32, within: Duration) -> Option<char> {
    let until = std::time::Instant::now() + within;
    loop {
        let state = process_state(pid);
        if state.is_none() || std::time::Instant::now() >= until {
            return state;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reads a pid a test script wrote, waiting (bounded) for the file.
pub(crate) async fn read_pid_file(path: &std::path::Path) -> i32 {
    for _ in 0..300 {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(pid) = text.trim().parse()
        {
            return pid;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the test script never wrote its pid to {}", path.display());
}

/// A private temporary directory, removed on drop.
pub(crate) struct TempDir(pub(crate) std::path::PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "lbfo-health-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    /// Writes an executable shell script and returns its path.
    pub(crate) fn script(&self, name: &str, body: &str) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let path = self.0.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A network namespace named `hcheck-…`, deleted on drop (also when the test
/// fails). Commands run in it through `ip netns exec`.
pub(crate) struct Netns {
    pub(crate) name: String,
}

impl Netns {
    pub(crate) fn create(tag: &str) -> Self {
        let name = format!("hcheck-{tag}-{}", std::process::id());
        // A leftover from a killed run of this very test would be in the way.
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &name])
            .output();
        run_cmd(std::process::Command::new("ip").args(["netns", "add", &name]));
        let ns = Self { name };
        ns.exec(std::process::Command::new("ip").args(["link", "set", "lo", "up"]));
        ns
    }

    /// Runs `command` inside the namespace (through `ip netns exec`); panics
    /// with its output on failure. It takes a `Command` so that the program
    /// is named where it is built, where xtask's check of ./x's list sees it.
    pub(crate) fn exec(&self, command: &std::process::Command) {
        run_cmd(
            std::process::Command::new("ip")
                .args(["netns", "exec", &self.name])
                .arg(command.get_program())
                .args(command.get_args()),
        );
    }

    /// Runs `f` on a thread that has entered the namespace: sockets it opens
    /// belong to the namespace for their whole life.
    pub(crate) fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        use std::os::fd::AsRawFd as _;
        let file =
            std::fs::File::open(format!("/run/netns/{}", self.name)).expect("open netns file");
        std::thread::spawn(move || {
            // SAFETY: setns on a valid namespace fd only changes this thread's
            // network namespace; the thread ends right after `f`.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("namespace thread")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

fn run_cmd(cmd: &mut std::process::Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
