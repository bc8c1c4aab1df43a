//! Notify scripts: the keepalived convention of running an operator's script
//! on every state change, with the VIP name, the old and the new state as
//! arguments. The daemon must never wait on them, so the script runs in a
//! task of its own, and it is killed (with everything it started) at its
//! timeout. The task belongs to the daemon's [`TaskTracker`], so a script
//! started by the last transition before exit still runs to completion (or
//! its timeout) before the process ends.

use std::{path::Path, time::Duration};

use tokio::{task::JoinHandle, time::Instant};
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::health::exec::{self, ExecError};

/// Starts `script` with `args` (no shell) in a task of `tasks` and returns
/// at once. The outcome is logged; the handle resolves to it for callers
/// that want to wait (tests) and can be dropped otherwise.
///
/// Must be called from inside the tokio runtime.
pub fn run_notify(
    tasks: &TaskTracker,
    script: &Path,
    args: &[&str],
    timeout: Duration,
) -> JoinHandle<Result<(), ExecError>> {
    let mut command = vec![script.display().to_string()];
    command.extend(args.iter().map(|a| a.to_string()));
    tasks.spawn(async move {
        let started = Instant::now();
        let shown = command.join(" ");
        let outcome = match exec::run(&command, started + timeout, timeout).await {
            Ok(finished) if finished.status.success() => Ok(()),
            Ok(finished) => Err(ExecError::Failed {
                program: command[0].clone(),
                status: exec::describe_status(finished.status),
                stderr: finished.stderr,
            }),
            Err(e) => Err(e),
        };
        match &outcome {
            Ok(()) => info!(
                command = %shown,
                took_ms = started.elapsed().as_millis() as u64,
                "notify script finished"
            ),
            Err(error) => warn!(command = %shown, %error, "notify script failed"),
        }
        outcome
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::testutil::{TempDir, read_pid_file, wait_process_gone};

    async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(20), f)
            .await
            .expect("test step must finish within 20 s")
    }

    #[tokio::test]
    async fn script_gets_its_arguments_and_the_caller_does_not_wait() {
        let dir = TempDir::new("notify");
        let out = dir.0.join("out");
        let script = dir.script(
            "notify.sh",
            &format!("sleep 0.2\nprintf '%s|' \"$@\" > {}", out.display()),
        );
        let started = std::time::Instant::now();
        let handle = run_notify(
            &TaskTracker::new(),
            &script,
            &["web", "backup", "master"],
            Duration::from_secs(5),
        );
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "run_notify must return at once, took {:?}",
            started.elapsed()
        );
        assert!(!out.exists(), "the script cannot have finished yet");
        bounded(handle)
            .await
            .expect("task")
            .expect("script exits 0");
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "web|backup|master|");
    }

    #[tokio::test]
    async fn failing_script_is_reported_with_stderr() {
        let dir = TempDir::new("notify-fail");
        let script = dir.script("notify.sh", "echo 'cannot reach pager' >&2\nexit 2");
        let err = bounded(run_notify(
            &TaskTracker::new(),
            &script,
            &["web"],
            Duration::from_secs(5),
        ))
        .await
        .expect("task")
        .expect_err("exit 2");
        assert_eq!(
            err.to_string(),
            format!(
                "{} exited with status 2: cannot reach pager",
                script.display()
            )
        );
    }

    #[tokio::test]
    async fn hanging_script_is_killed_at_its_timeout() {
        let dir = TempDir::new("notify-hang");
        let pid_file = dir.0.join("pid");
        let script = dir.script(
            "notify.sh",
            &format!("echo $$ > {}\nexec sleep 30", pid_file.display()),
        );
        let started = std::time::Instant::now();
        let err = bounded(run_notify(
            &TaskTracker::new(),
            &script,
            &[],
            Duration::from_millis(200),
        ))
        .await
        .expect("task")
        .expect_err("killed at the timeout");
        assert!(matches!(err, ExecError::Timeout { .. }), "got {err}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "took {:?}",
            started.elapsed()
        );
        let pid = read_pid_file(&pid_file).await;
        assert_eq!(
            wait_process_gone(pid, Duration::from_secs(2)).await,
            None,
            "pid {pid} must be gone"
        );
    }

    #[tokio::test]
    async fn missing_script_is_reported() {
        let err = bounded(run_notify(
            &TaskTracker::new(),
            Path::new("/nonexistent/notify"),
            &[],
            Duration::from_secs(1),
        ))
        .await
        .expect("task")
        .expect_err("no such file");
        assert!(matches!(err, ExecError::Spawn { .. }), "got {err}");
    }
}
