//! `lbfo import-keepalived` on every sample config Debian's keepalived
//! package ships (`/usr/share/doc/keepalived/samples/`): the real binary, no
//! panic, no hang, every message names a real line of a real file, and
//! what it can serve comes out as a config `lbfo check-config` accepts.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use lbfo_tests::node::lbfo_bin;

const SAMPLES: &str = "/usr/share/doc/keepalived/samples";
/// The import reads a few small files; seconds would mean a hang.
const DEADLINE: Duration = Duration::from_secs(10);

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn lbfo(args: &[&str]) -> Run {
    let mut child = Command::new(lbfo_bin())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting lbfo");
    let started = Instant::now();
    while child.try_wait().expect("waiting for lbfo").is_none() {
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("lbfo {args:?} did not finish within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().expect("lbfo's output");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Every `FILE:LINE: warning|error: ...` line names a file that exists and
/// a line it has; the only other line is the final `lbfo: error:` summary.
fn check_messages(sample: &Path, stderr: &str) -> usize {
    let mut messages = 0;
    for line in stderr.lines() {
        if line.starts_with("lbfo: error: ") {
            continue;
        }
        let (place, rest) = line
            .split_once(": ")
            .unwrap_or_else(|| panic!("{}: message without a place: {line:?}", sample.display()));
        assert!(
            rest.starts_with("warning: ") || rest.starts_with("error: "),
            "{}: not a warning or an error: {line:?}",
            sample.display()
        );
        let (file, number) = place
            .rsplit_once(':')
            .unwrap_or_else(|| panic!("{}: no line number in {line:?}", sample.display()));
        let number: usize = number
            .parse()
            .unwrap_or_else(|_| panic!("{}: line number {number:?} in {line:?}", sample.display()));
        let text = std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("{}: {line:?} names {file}: {e}", sample.display()));
        assert!(
            (1..=text.lines().count()).contains(&number),
            "{}: {line:?} names line {number}, the file has {}",
            sample.display(),
            text.lines().count()
        );
        messages += 1;
    }
    messages
}

fn samples() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(SAMPLES)
        .unwrap_or_else(|e| panic!("{SAMPLES}: {e} (Debian package keepalived)"))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("keepalived.conf"))
        })
        .collect();
    files.sort();
    files
}

#[test]
fn every_debian_sample_imports_without_panic_and_names_real_lines() {
    let samples = samples();
    assert!(
        samples.len() >= 20,
        "expected Debian's keepalived samples, found {samples:?}"
    );
    let dir = std::env::temp_dir().join(format!("lbfo-import-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut served = Vec::new();
    // conditional_conf is written for `-i high` or `-i low`.
    let mut runs: Vec<(PathBuf, Vec<String>)> =
        samples.iter().map(|s| (s.clone(), vec![])).collect();
    for id in ["high", "low"] {
        runs.push((
            Path::new(SAMPLES).join("keepalived.conf.conditional_conf"),
            vec!["--config-id".into(), id.into()],
        ));
    }
    for (sample, extra) in &runs {
        let mut args = vec!["import-keepalived", sample.to_str().unwrap()];
        args.extend(extra.iter().map(String::as_str));
        let run = lbfo(&args);
        let messages = check_messages(sample, &run.stderr);
        match run.code {
            Some(0) => {
                assert!(
                    !run.stdout.is_empty(),
                    "{}: exit 0 without a config",
                    sample.display()
                );
                let out = dir.join(format!("{}.toml", served.len()));
                std::fs::write(&out, &run.stdout).unwrap();
                let check = lbfo(&["check-config", "-c", out.to_str().unwrap()]);
                assert_eq!(
                    check.code,
                    Some(0),
                    "{} {extra:?}: the imported config must pass check-config: {}\n{}",
                    sample.display(),
                    check.stderr,
                    run.stdout
                );
                served.push(format!("{} {extra:?}", sample.display()));
            }
            Some(1) => {
                assert!(
                    run.stderr.contains(": error: "),
                    "{}: exit 1 must say which keyword at which line: {}",
                    sample.display(),
                    run.stderr
                );
                assert!(
                    run.stdout.is_empty(),
                    "{}: no config on stdout with errors",
                    sample.display()
                );
            }
            other => panic!(
                "{}: exit {other:?} (a panic or a signal): {}",
                sample.display(),
                run.stderr
            ),
        }
        eprintln!(
            "{} {extra:?}: exit {:?}, {messages} message(s)",
            sample.display(),
            run.code
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
    // Those without NAT, several interfaces or unsupported checks.
    assert!(
        served.len() >= 3,
        "expected several samples lbfo can serve, got {served:?}"
    );
}

#[test]
fn a_file_that_is_not_keepalived_syntax_is_an_error_at_its_line() {
    let dir = std::env::temp_dir().join(format!("lbfo-import-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        ("toml", "interface = \"eth0\"\n", ":1: error:"),
        ("binary", "\u{0}\u{1}\u{2}{{{\n", ":1: error:"),
        (
            "template",
            "vrrp_instance VI_1 {\n  priority {{PRIORITY}}\n}\n",
            ":2: error: a template placeholder",
        ),
        (
            "unbalanced",
            "vrrp_instance VI_1 {\n",
            ":1: error: the block",
        ),
    ];
    for (name, text, want) in cases {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let run = lbfo(&["import-keepalived", path.to_str().unwrap()]);
        assert_eq!(run.code, Some(1), "{name}: {}", run.stderr);
        assert!(
            run.stderr.contains(&format!("{}{want}", path.display())),
            "{name}: expected {want:?} at its line, got {}",
            run.stderr
        );
        check_messages(&path, &run.stderr);
    }
    let missing = lbfo(&["import-keepalived", "/nonexistent/keepalived.conf"]);
    assert_eq!(missing.code, Some(1), "{}", missing.stderr);
    std::fs::remove_dir_all(&dir).unwrap();
}
