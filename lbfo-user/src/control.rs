//! The control socket: `lbfo status/own/release` talk to the running daemon
//! over a root-only Unix socket, one JSON request line and one JSON response
//! line per connection.

use std::{
    io,
    os::unix::fs::{FileTypeExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::status::Status;

pub const DEFAULT_SOCKET: &str = "/run/lbfo/lbfo.sock";
const MAX_REQUEST_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Status,
    Own { vip: String },
    Release { vip: String },
    Drain { backend: String },
    Undrain { backend: String },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Done { message: String },
    Status(Box<Status>),
    Error { message: String },
}

/// A request handed to the daemon, with where to send its answer.
pub struct Command {
    pub request: Request,
    pub reply: oneshot::Sender<Response>,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("another lbfo daemon is already serving {0}; stop it or pass a different --socket")]
    InUse(PathBuf),
    #[error("control socket {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// Binds the control socket, refusing if a live daemon already serves it.
/// A socket file left by a daemon that died is replaced.
pub fn bind(path: &Path) -> Result<ControlSocket, ControlError> {
    let io_err = |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(io_err)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            if !meta.file_type().is_socket() {
                return Err(io_err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "exists and is not a socket",
                )));
            }
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ControlError::InUse(path.to_path_buf()));
            }
            std::fs::remove_file(path).map_err(io_err)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    // Created root-only from the start: no window in which others could connect.
    let old_umask = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let listener = std::os::unix::net::UnixListener::bind(path);
    nix::sys::stat::umask(old_umask);
    let listener = listener.map_err(io_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io_err)?;
    listener.set_nonblocking(true).map_err(io_err)?;
    Ok(ControlSocket {
        listener: Some(listener),
        path: path.to_path_buf(),
    })
}

/// The bound socket; removes its file when dropped.
pub struct ControlSocket {
    listener: Option<std::os::unix::net::UnixListener>,
    path: PathBuf,
}

impl ControlSocket {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves connections until `shutdown` fires, passing each request to
    /// the daemon through `commands`. Each connection is a task of `tasks`.
    pub async fn serve(
        mut self,
        commands: mpsc::Sender<Command>,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> io::Result<()> {
        let listener = UnixListener::from_std(self.listener.take().expect("served once"))?;
        loop {
            let stream = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!("control socket accept failed: {e}");
                        continue;
                    }
                },
            };
            let commands = commands.clone();
            let shutdown = shutdown.clone();
            tasks.spawn(async move {
                let served = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    served = handle_connection(stream, commands) => served,
                };
                if let Err(e) = served {
                    tracing::debug!("control connection ended: {e}");
                }
            });
        }
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn handle_connection(stream: UnixStream, commands: mpsc::Sender<Command>) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read).take(MAX_REQUEST_BYTES as u64);
    tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no request within 5 s"))??;
    let response = match serde_json::from_str::<Request>(&line) {
        Err(e) => Response::Error {
            message: format!("bad request: {e}"),
        },
        Ok(request) => {
            let (reply, answer) = oneshot::channel();
            if commands.send(Command { request, reply }).await.is_err() {
                Response::Error {
                    message: "daemon is shutting down".into(),
                }
            } else {
                answer.await.unwrap_or(Response::Error {
                    message: "daemon is shutting down".into(),
                })
            }
        }
    };
    let mut text = serde_json::to_string(&response).map_err(io::Error::other)?;
    text.push('\n');
    write.write_all(text.as_bytes()).await
}

/// Client side: sends one request to the daemon at `path` and returns its answer.
pub async fn request(path: &Path, request: &Request) -> anyhow::Result<Response> {
    use anyhow::Context as _;
    let stream = UnixStream::connect(path)
        .await
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => anyhow::anyhow!(
                "no lbfo daemon is listening on {} (start one with `lbfo run`, or pass --socket)",
                path.display()
            ),
            io::ErrorKind::PermissionDenied => anyhow::anyhow!(
                "cannot connect to {}: permission denied (the control socket is root-only)",
                path.display()
            ),
            _ => anyhow::anyhow!("cannot connect to {}: {e}", path.display()),
        })?;
    let (read, mut write) = stream.into_split();
    let mut text = serde_json::to_string(request)?;
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        BufReader::new(read).read_line(&mut line),
    )
    .await
    .context("the daemon did not answer within 10 s")??;
    serde_json::from_str(&line)
        .with_context(|| format!("unreadable answer from the daemon: {line:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_is_stable() {
        let r = Request::Own { vip: "web".into() };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"cmd":"own","vip":"web"}"#
        );
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"cmd":"status"}"#).unwrap(),
            Request::Status
        );
        let d = Response::Done {
            message: "ok".into(),
        };
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            r#"{"result":"done","message":"ok"}"#
        );
    }

    #[tokio::test]
    async fn second_bind_on_a_live_socket_is_refused_and_a_stale_one_replaced() {
        let dir = std::env::temp_dir().join(format!("lbfo-ctl-test-{}", std::process::id()));
        let path = dir.join("ctl.sock");
        let first = bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "control socket must be root-only");
        let err = bind(&path)
            .err()
            .expect("second bind must fail while the first is live");
        assert!(matches!(err, ControlError::InUse(_)), "got {err}");
        // A socket file whose listener is gone is stale and gets replaced.
        let stale = std::os::unix::net::UnixListener::bind(dir.join("stale.sock")).unwrap();
        drop(stale);
        let again = bind(&dir.join("stale.sock"));
        assert!(
            again.is_ok(),
            "stale socket should be replaced: {:?}",
            again.err()
        );
        drop(first);
        assert!(!path.exists(), "socket file must be removed on drop");
        drop(again);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
