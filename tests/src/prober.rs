//! A client probing the VIP every few milliseconds with iputils `ping`, to
//! measure the outage a failover causes as the client sees it: the longest
//! gap between two consecutive answered probes.

use std::{
    net::Ipv4Addr,
    process::{Child, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result};

use crate::lab::netns_exec;

pub struct Prober {
    child: Child,
    /// Reads ping's output as it comes: a pipe left unread fills up (64 KiB,
    /// under a second of 1 ms probes) and ping then blocks on its write and
    /// stops probing, which would hide an outage instead of measuring it.
    output: std::thread::JoinHandle<String>,
    interval: Duration,
    /// Wall-clock seconds (ping -D's clock) when the prober started.
    started: f64,
    /// When ping stops by itself (`-w`), in the same clock.
    deadline: f64,
}

/// Seconds since the epoch: the clock `ping -D` stamps its lines with.
fn wall_clock() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is past 1970")
        .as_secs_f64()
}

/// What the prober saw.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    pub sent: u64,
    pub answered: u64,
    /// Longest time between two consecutive answers.
    pub longest_gap: Duration,
    /// Answer times, seconds since the epoch as ping printed them.
    pub answers: Vec<f64>,
}

impl ProbeReport {
    /// The outage: the longest gap minus the probe interval (a gap of one
    /// interval is no outage at all).
    pub fn outage(&self, interval: Duration) -> Duration {
        self.longest_gap.saturating_sub(interval)
    }
}

impl Prober {
    /// Starts pinging `target` from `ns` every `interval` for at most `run_for`.
    pub fn start(
        ns: &str,
        target: Ipv4Addr,
        interval: Duration,
        run_for: Duration,
    ) -> Result<Prober> {
        let started = wall_clock();
        let mut child = netns_exec(ns, "ping")
            .args(["-n", "-D"])
            .args(["-i", &format!("{:.3}", interval.as_secs_f64())])
            .args(["-W", "0.1"])
            .args(["-w", &format!("{}", run_for.as_secs().max(1))])
            .arg(target.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting ping (Debian package iputils-ping)")?;
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let output = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
            text
        });
        Ok(Prober {
            child,
            output,
            interval,
            started,
            deadline: started + run_for.as_secs().max(1) as f64,
        })
    }

    /// Stops the prober and reads what it saw.
    pub fn finish(self) -> Result<ProbeReport> {
        let stopped = wall_clock().min(self.deadline);
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let mut child = self.child;
        child.wait().context("waiting for ping")?;
        let text = self.output.join().expect("the ping reader panicked");
        Ok(parse(&text, self.interval, self.started, stopped))
    }
}

/// The longest gap counts the silence after the last answer up to the
/// moment the prober was stopped, so an outage that never ended is not
/// mistaken for none; with no answer at all it is the whole run.
fn parse(text: &str, interval: Duration, started: f64, stopped: f64) -> ProbeReport {
    // "[1732512345.123456] 64 bytes from 192.0.2.100: icmp_seq=12 ttl=64 time=0.05 ms"
    let answers: Vec<f64> = text
        .lines()
        .filter(|l| l.contains(" bytes from "))
        .filter_map(|l| l.strip_prefix('[')?.split(']').next()?.parse().ok())
        .collect();
    let sent = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(answers.len() as u64);
    let trailing = stopped - answers.last().copied().unwrap_or(started);
    let longest_gap = answers
        .windows(2)
        .map(|w| w[1] - w[0])
        .fold(interval.as_secs_f64().max(trailing), f64::max);
    ProbeReport {
        sent,
        answered: answers.len() as u64,
        longest_gap: Duration::from_secs_f64(longest_gap),
        answers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_gap_between_answers() {
        let text = "PING 192.0.2.100 (192.0.2.100) 56(84) bytes of data.\n\
[100.000] 64 bytes from 192.0.2.100: icmp_seq=1 ttl=64 time=0.1 ms\n\
[100.005] 64 bytes from 192.0.2.100: icmp_seq=2 ttl=64 time=0.1 ms\n\
[100.305] 64 bytes from 192.0.2.100: icmp_seq=62 ttl=64 time=0.1 ms\n\
[100.310] 64 bytes from 192.0.2.100: icmp_seq=63 ttl=64 time=0.1 ms\n\
\n--- 192.0.2.100 ping statistics ---\n63 packets transmitted, 4 received, 93% packet loss, time 310ms\n";
        let r = parse(text, Duration::from_millis(5), 99.9, 100.312);
        assert_eq!((r.sent, r.answered), (63, 4));
        assert!(
            (r.longest_gap.as_secs_f64() - 0.300).abs() < 1e-6,
            "gap {:?}",
            r.longest_gap
        );
        assert!((r.outage(Duration::from_millis(5)).as_secs_f64() - 0.295).abs() < 1e-6);
    }

    #[test]
    fn silence_until_the_stop_is_an_outage() {
        let text = "[100.000] 64 bytes from 192.0.2.100: icmp_seq=1 ttl=64 time=0.1 ms\n\
[100.005] 64 bytes from 192.0.2.100: icmp_seq=2 ttl=64 time=0.1 ms\n";
        let r = parse(text, Duration::from_millis(5), 99.9, 101.005);
        assert!((r.longest_gap.as_secs_f64() - 1.0).abs() < 1e-6, "{r:?}");
        let r = parse("", Duration::from_millis(5), 99.0, 101.0);
        assert_eq!((r.answered, r.longest_gap), (0, Duration::from_secs(2)));
    }
}
