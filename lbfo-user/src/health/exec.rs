//! `kind = "exec"` (and notify scripts): run a program without a shell, with
//! a hard deadline.
//!
//! The program runs in a process group of its own, so the deadline can kill
//! everything it started (a shell script's `sleep` too), not just the program
//! itself: otherwise a killed script's children keep running and keep its
//! stderr pipe open. After the kill the program is waited for, so no zombie is
//! left; processes it started are orphans that init reaps. stdin and stdout
//! are /dev/null, the working directory is `/`, the environment is the
//! daemon's. The last non-empty line of stderr goes into the result detail.

use std::{os::unix::process::ExitStatusExt as _, process::Stdio, time::Duration};

use nix::{sys::signal::Signal, unistd::Pid};
use tokio::{
    io::AsyncReadExt as _,
    process::{Child, ChildStderr, Command},
    time::{Instant, timeout_at},
};
use tracing::{debug, warn};

/// How long stderr is still read after the program exited, for output from
/// processes it left behind.
const STDERR_GRACE: Duration = Duration::from_millis(50);
/// How long a SIGKILLed program may take to be reaped. Only a process stuck
/// in the kernel (uninterruptible sleep) takes longer; then tokio reaps it
/// in the background later.
const REAP_LIMIT: Duration = Duration::from_secs(5);
/// How much of stderr is kept to find its last line.
const STDERR_TAIL_BYTES: usize = 4096;
/// The longest stderr line put into a result detail.
const MAX_LINE_CHARS: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} {status}{}", suffix(.stderr))]
    Failed {
        program: String,
        /// Like "exited with status 1" or "was killed by signal 11 (SIGSEGV)".
        status: String,
        stderr: Option<String>,
    },
    #[error("timed out after {} ms; killed {program} (process group {pgid}){}", .after.as_millis(), suffix(.stderr))]
    Timeout {
        program: String,
        pgid: i32,
        after: Duration,
        stderr: Option<String>,
    },
    #[error("waiting for {program}: {source}")]
    Wait {
        program: String,
        source: std::io::Error,
    },
}

fn suffix(stderr: &Option<String>) -> String {
    stderr
        .as_ref()
        .map(|l| format!(": {l}"))
        .unwrap_or_default()
}

/// What a program that exited by itself left.
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) status: std::process::ExitStatus,
    pub(crate) stderr: Option<String>,
}

/// The exec check: healthy when the program exits 0 before the deadline.
pub(crate) async fn probe(
    command: &[String],
    deadline: Instant,
    timeout: Duration,
) -> Result<String, ExecError> {
    let finished = run(command, deadline, timeout).await?;
    let program = command[0].clone();
    if finished.status.success() {
        Ok(format!(
            "{program} exited with status 0{}",
            suffix(&finished.stderr)
        ))
    } else {
        Err(ExecError::Failed {
            program,
            status: describe_status(finished.status),
            stderr: finished.stderr,
        })
    }
}

/// Runs `command` (program and arguments, no shell) until it exits or
/// `deadline` passes; at the deadline its whole process group is killed and
/// the program reaped before this returns [`ExecError::Timeout`].
///
/// Dropping the future early also kills the process group.
pub(crate) async fn run(
    command: &[String],
    deadline: Instant,
    timeout: Duration,
) -> Result<Finished, ExecError> {
    let program = command.first().cloned().unwrap_or_default();
    let mut child = Command::new(&program)
        .args(command.iter().skip(1))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .current_dir("/")
        // Its own group, led by itself: pgid = pid.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ExecError::Spawn {
            program: program.clone(),
            source,
        })?;
    let pid = child.id().map(|id| id as i32).unwrap_or_default();
    // Kills the group if this future is dropped before the program is reaped.
    let mut group = GroupKiller {
        pgid: pid,
        armed: true,
    };
    let mut stderr = child.stderr.take();
    let mut tail = StderrTail::default();

    let status = match wait_reading(&mut child, &mut stderr, &mut tail, deadline).await {
        Some(Ok(status)) => status,
        Some(Err(source)) => {
            return Err(ExecError::Wait { program, source });
        }
        None => {
            // Still running at the deadline.
            group.kill();
            match tokio::time::timeout(REAP_LIMIT, child.wait()).await {
                Ok(_) => group.armed = false,
                Err(_) => {
                    warn!(%program, pid, "killed program not reaped yet; it is stuck in the kernel")
                }
            }
            drain(&mut stderr, &mut tail, Instant::now() + STDERR_GRACE).await;
            debug!(%program, pid, "killed at its deadline");
            return Err(ExecError::Timeout {
                program,
                pgid: pid,
                after: timeout,
                stderr: tail.last_line(),
            });
        }
    };
    // Reaped: the pid may be reused from now on, so the group is not touched
    // again. Output from processes it left running is read for a moment only.
    group.armed = false;
    drain(
        &mut stderr,
        &mut tail,
        deadline.min(Instant::now() + STDERR_GRACE),
    )
    .await;
    Ok(Finished {
        status,
        stderr: tail.last_line(),
    })
}

/// Waits for the program while reading its stderr; `None` at the deadline.
async fn wait_reading(
    child: &mut Child,
    stderr: &mut Option<ChildStderr>,
    tail: &mut StderrTail,
    deadline: Instant,
) -> Option<std::io::Result<std::process::ExitStatus>> {
    let mut buf = [0u8; 1024];
    loop {
        tokio::select! {
            // Both branches are cancel-safe: `wait` and `read` lose nothing
            // when the other one wins.
            status = child.wait() => return Some(status),
            n = async { stderr.as_mut().expect("checked by the guard").read(&mut buf).await }, if stderr.is_some() => {
                match n {
                    Ok(n) if n > 0 => tail.push(&buf[..n]),
                    _ => *stderr = None,
                }
            }
            _ = tokio::time::sleep_until(deadline) => return None,
        }
    }
}

/// Reads what is left of stderr until EOF or `until`.
async fn drain(stderr: &mut Option<ChildStderr>, tail: &mut StderrTail, until: Instant) {
    let Some(pipe) = stderr.as_mut() else {
        return;
    };
    let mut buf = [0u8; 1024];
    while let Ok(Ok(n)) = timeout_at(until, pipe.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        tail.push(&buf[..n]);
    }
    *stderr = None;
}

/// SIGKILLs a process group once, on request or on drop while armed.
struct GroupKiller {
    pgid: i32,
    armed: bool,
}

impl GroupKiller {
    fn kill(&mut self) {
        if self.armed && self.pgid > 0 {
            // ESRCH (group already gone) is fine.
            let _ = nix::sys::signal::killpg(Pid::from_raw(self.pgid), Signal::SIGKILL);
        }
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        // The program is not reaped yet, so its pid (= pgid) cannot have been
        // reused: the signal reaches only its own group. tokio's kill_on_drop
        // then reaps the program in the background.
        self.kill();
    }
}

/// The last few KiB of a stream.
#[derive(Default)]
struct StderrTail(Vec<u8>);

impl StderrTail {
    fn push(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
        if self.0.len() > 2 * STDERR_TAIL_BYTES {
            self.0.drain(..self.0.len() - STDERR_TAIL_BYTES);
        }
    }

    fn last_line(&self) -> Option<String> {
        let text = String::from_utf8_lossy(&self.0);
        let line = text.lines().map(str::trim).rfind(|l| !l.is_empty())?;
        if line.chars().count() > MAX_LINE_CHARS {
            let cut: String = line.chars().take(MAX_LINE_CHARS).collect();
            return Some(cut + "…");
        }
        Some(line.to_string())
    }
}

pub(crate) fn describe_status(status: std::process::ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    match status.signal() {
        Some(sig) => match Signal::try_from(sig) {
            Ok(name) => format!("was killed by signal {sig} ({name})"),
            Err(_) => format!("was killed by signal {sig}"),
        },
        None => format!("ended with {status}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::testutil::{TempDir, read_pid_file, wait_process_gone};
    use tokio::time::timeout;

    /// Every test step is bounded, whatever the code under test does.
    async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
        timeout(Duration::from_secs(20), f)
            .await
            .expect("test step must finish within 20 s")
    }

    fn cmd(argv: &[&str]) -> Vec<String> {
        argv.iter().map(|s| s.to_string()).collect()
    }

    async fn probe_ms(command: &[String], ms: u64) -> Result<String, ExecError> {
        let t = Duration::from_millis(ms);
        bounded(probe(command, Instant::now() + t, t)).await
    }

    #[tokio::test]
    async fn true_is_healthy() {
        let detail = probe_ms(&cmd(&["/bin/true"]), 2000)
            .await
            .expect("/bin/true exits 0");
        assert_eq!(detail, "/bin/true exited with status 0");
    }

    #[tokio::test]
    async fn false_is_unhealthy() {
        let err = probe_ms(&cmd(&["/bin/false"]), 2000)
            .await
            .expect_err("/bin/false exits 1");
        assert_eq!(err.to_string(), "/bin/false exited with status 1");
    }

    #[tokio::test]
    async fn missing_program_cannot_start() {
        let err = probe_ms(&cmd(&["/nonexistent/lbfo-check"]), 2000)
            .await
            .expect_err("no such program");
        assert!(
            err.to_string()
                .starts_with("cannot start /nonexistent/lbfo-check: No such file"),
            "got {err}"
        );
    }

    #[tokio::test]
    async fn arguments_pass_without_a_shell() {
        // If a shell were involved, `$HOME` and `;` would be interpreted.
        let dir = TempDir::new("args");
        let out = dir.0.join("args");
        let script = dir.script(
            "args.sh",
            &format!("printf '%s|' \"$@\" > {}", out.display()),
        );
        let argv = vec![
            script.display().to_string(),
            "$HOME".into(),
            "a b; false".into(),
        ];
        probe_ms(&argv, 2000).await.expect("script exits 0");
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "$HOME|a b; false|");
    }

    #[tokio::test]
    async fn last_stderr_line_is_captured() {
        let dir = TempDir::new("stderr");
        let script = dir.script(
            "fail.sh",
            "echo 'starting' >&2\necho 'to stdout'\necho 'database unreachable: 192.0.2.7' >&2\necho '' >&2\nexit 3",
        );
        let err = probe_ms(&[script.display().to_string()], 2000)
            .await
            .expect_err("exit 3");
        assert_eq!(
            err.to_string(),
            format!(
                "{} exited with status 3: database unreachable: 192.0.2.7",
                script.display()
            )
        );
        let ok = dir.script("ok.sh", "echo 'all good' >&2");
        let detail = probe_ms(&[ok.display().to_string()], 2000)
            .await
            .expect("exit 0");
        assert!(
            detail.ends_with("exited with status 0: all good"),
            "{detail}"
        );
    }

    #[tokio::test]
    async fn killed_by_signal_is_reported() {
        let dir = TempDir::new("signal");
        let script = dir.script("segv.sh", "kill -SEGV $$");
        let err = probe_ms(&[script.display().to_string()], 2000)
            .await
            .expect_err("signal");
        assert!(
            err.to_string()
                .ends_with("was killed by signal 11 (SIGSEGV)"),
            "got {err}"
        );
    }

    #[tokio::test]
    async fn hanging_program_and_its_children_are_killed_at_the_timeout() {
        let dir = TempDir::new("hang");
        let pid_file = dir.0.join("pid");
        let child_file = dir.0.join("child");
        // The script starts `sleep` as its own child and waits, like real
        // scripts do; both must die at the timeout.
        let script = dir.script(
            "hang.sh",
            &format!(
                "echo $$ > {}\nsleep 30 &\necho $! > {}\necho 'still waiting' >&2\nwait",
                pid_file.display(),
                child_file.display()
            ),
        );
        let started = std::time::Instant::now();
        let err = probe_ms(&[script.display().to_string()], 300)
            .await
            .expect_err("a hanging script must time out");
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(3),
            "the probe must end near its 300 ms timeout, took {took:?}"
        );
        let pid = read_pid_file(&pid_file).await;
        let sleep_pid = read_pid_file(&child_file).await;
        assert_eq!(
            err.to_string(),
            format!(
                "timed out after 300 ms; killed {} (process group {pid}): still waiting",
                script.display()
            )
        );
        // The script was our child and has been reaped: not even a zombie.
        assert_eq!(
            wait_process_gone(pid, Duration::from_secs(2)).await,
            None,
            "script pid {pid} must be gone (no zombie)"
        );
        // Its `sleep` was killed with the group; its parent (init) reaps it.
        let state = wait_process_gone(sleep_pid, Duration::from_secs(2)).await;
        assert!(
            state.is_none() || state == Some('Z'),
            "the script's child {sleep_pid} must be killed, state {state:?}"
        );
    }

    #[tokio::test]
    async fn dropping_the_probe_kills_the_group() {
        let dir = TempDir::new("drop");
        let pid_file = dir.0.join("pid");
        let script = dir.script(
            "hang.sh",
            &format!("echo $$ > {}\nexec sleep 30", pid_file.display()),
        );
        let argv = vec![script.display().to_string()];
        let t = Duration::from_secs(10);
        // The outer timeout drops the probe future long before its own deadline.
        let outer = timeout(
            Duration::from_millis(300),
            probe(&argv, Instant::now() + t, t),
        )
        .await;
        assert!(
            outer.is_err(),
            "the probe should still be running at 300 ms"
        );
        let pid = read_pid_file(&pid_file).await;
        let state = wait_process_gone(pid, Duration::from_secs(5)).await;
        assert_eq!(
            state, None,
            "pid {pid} must be killed and reaped after the drop, state {state:?}"
        );
    }

    #[test]
    fn stderr_tail_keeps_the_last_line() {
        let mut t = StderrTail::default();
        assert_eq!(t.last_line(), None);
        for i in 0..10_000 {
            t.push(format!("line {i}\n").as_bytes());
        }
        assert_eq!(t.last_line().as_deref(), Some("line 9999"));
        assert!(t.0.len() <= 2 * STDERR_TAIL_BYTES);
        let mut long = StderrTail::default();
        long.push("x".repeat(500).as_bytes());
        let line = long.last_line().unwrap();
        assert_eq!(
            line.chars().count(),
            MAX_LINE_CHARS + 1,
            "cut and marked: {line}"
        );
    }
}
