//! A web client in a lab namespace: `GET /` from an address every few
//! milliseconds, a new connection each time, noting which of the lab's HTTP
//! servers ([`crate::http_server`], whose body starts with its name)
//! answered each request. It is what a user of a VIP sees during a failover.
//!
//! Like the [prober](crate::prober) it keeps its cadence whether or not
//! answers come back (every fetch runs on a thread of its own, so a fetch
//! waiting for its timeout does not hold up the next), and the outage is the
//! longest run of failed fetches measured between send times.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddrV4, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::Result;

use crate::prober::{longest_outage, wall_clock};

/// The most fetches a fetcher makes, however long it runs.
const MAX_FETCHES: usize = 10_000;

pub struct Fetcher {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<Vec<Fetch>>>,
    started: f64,
    deadline: f64,
}

/// One request: when it was sent (wall-clock seconds, [`wall_clock`]) and
/// the name of the server that answered it with `200 OK`, or `None` if the
/// fetch failed (no connection, a timeout, another status).
#[derive(Debug, Clone)]
pub struct Fetch {
    pub sent_at: f64,
    pub served_by: Option<String>,
}

/// Every fetch, in the order they were sent.
#[derive(Debug, Clone)]
pub struct FetchLog {
    pub fetches: Vec<Fetch>,
    started: f64,
    stopped: f64,
}

impl Fetcher {
    /// Starts fetching `http://target/` from namespace `ns` every
    /// `interval`, each fetch given up after `timeout`, for at most `run_for`.
    pub fn start(
        ns: &str,
        target: SocketAddrV4,
        interval: Duration,
        timeout: Duration,
        run_for: Duration,
    ) -> Fetcher {
        let stop = Arc::new(AtomicBool::new(false));
        let started = wall_clock();
        let thread = {
            let (ns, stop) = (ns.to_string(), stop.clone());
            // Threads inherit the namespace of the thread that starts them,
            // so every fetch thread connects from inside `ns`.
            std::thread::spawn(move || {
                crate::lab::in_netns(&ns, || schedule(target, interval, timeout, run_for, &stop))
            })
        };
        Fetcher {
            stop,
            thread,
            started,
            deadline: started + run_for.as_secs_f64(),
        }
    }

    /// Stops fetching, waits for the fetches in flight and returns the log.
    pub fn finish(self) -> Result<FetchLog> {
        self.stop.store(true, Ordering::Relaxed);
        let stopped = wall_clock().min(self.deadline);
        let fetches = self.thread.join().expect("the fetcher panicked")?;
        Ok(FetchLog {
            fetches,
            started: self.started,
            stopped,
        })
    }
}

fn schedule(
    target: SocketAddrV4,
    interval: Duration,
    timeout: Duration,
    run_for: Duration,
    stop: &AtomicBool,
) -> Vec<Fetch> {
    let (tx, rx) = mpsc::channel();
    let mut sent_at = Vec::new();
    let until = Instant::now() + run_for;
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) && next < until && sent_at.len() < MAX_FETCHES {
        let (tx, seq) = (tx.clone(), sent_at.len());
        sent_at.push(wall_clock());
        std::thread::spawn(move || {
            let _ = tx.send((seq, fetch(target, timeout)));
        });
        // A fixed schedule; after a stall, carry on from now instead of
        // sending the missed fetches in a burst.
        next += interval;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
    drop(tx);
    let mut served_by = vec![None; sent_at.len()];
    // Ends when the last fetch thread is done, within `timeout` or so.
    for (seq, server) in rx {
        served_by[seq] = server;
    }
    sent_at
        .into_iter()
        .zip(served_by)
        .map(|(sent_at, served_by)| Fetch { sent_at, served_by })
        .collect()
}

/// One `GET /` on a new connection: the first word of a `200 OK` body.
fn fetch(target: SocketAddrV4, timeout: Duration) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&target.into(), timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: lbfo-lab\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200 ") {
        return None;
    }
    body.split_whitespace().next().map(str::to_string)
}

impl FetchLog {
    /// The longest run of failed fetches, from sending the first of them to
    /// sending the next one that was answered (or to the end of fetching).
    pub fn outage(&self) -> Duration {
        let sent_at: Vec<f64> = self.fetches.iter().map(|f| f.sent_at).collect();
        let answered: Vec<bool> = self.fetches.iter().map(|f| f.served_by.is_some()).collect();
        longest_outage(&sent_at, &answered, self.started, self.stopped)
    }

    /// When the first fetch `server` answered was sent.
    pub fn first(&self, server: &str) -> Option<f64> {
        self.answered_by(server).next()
    }

    /// When the last fetch `server` answered was sent.
    pub fn last(&self, server: &str) -> Option<f64> {
        self.answered_by(server).last()
    }

    /// The fetches as runs of the same outcome, in order: `(Some("n1"), 80),
    /// (None, 25), (Some("n2"), 60)` is 80 answered by n1, then 25 failed,
    /// then 60 answered by n2.
    pub fn runs(&self) -> Vec<(Option<String>, usize)> {
        let mut runs: Vec<(Option<String>, usize)> = Vec::new();
        for f in &self.fetches {
            match runs.last_mut() {
                Some((who, n)) if *who == f.served_by => *n += 1,
                _ => runs.push((f.served_by.clone(), 1)),
            }
        }
        runs
    }

    fn answered_by<'a>(&'a self, server: &'a str) -> impl Iterator<Item = f64> + 'a {
        self.fetches
            .iter()
            .filter(move |f| f.served_by.as_deref() == Some(server))
            .map(|f| f.sent_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real thing on loopback: the lab's HTTP server answers, fails for
    /// a while, answers again; the fetcher sees the three runs and an outage
    /// as long as the failure.
    #[test]
    fn sees_a_server_fail_and_recover() {
        let lab = crate::lab::Lab::new().expect("creating a namespace (needs root)");
        let mode_file = lab.file("t.mode");
        std::fs::write(&mode_file, "ok").unwrap();
        let listen = SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 8080);
        {
            let (ns, mode_file) = (lab.switch_ns().to_string(), mode_file.clone());
            // Serves until the test process ends.
            std::thread::spawn(move || {
                crate::lab::in_netns(&ns, || {
                    crate::http_server::serve(listen.into(), "t", &mode_file)
                })
            });
        }
        let interval = Duration::from_millis(5);
        crate::lab::wait_for(Duration::from_secs(5), "the server to listen", || {
            crate::lab::in_netns(lab.switch_ns(), || TcpStream::connect(listen).is_ok())
        })
        .unwrap();
        let fetcher = Fetcher::start(
            lab.switch_ns(),
            listen,
            interval,
            Duration::from_millis(100),
            Duration::from_secs(5),
        );
        std::thread::sleep(Duration::from_millis(200));
        let failing = Duration::from_millis(300);
        std::fs::write(&mode_file, "error").unwrap();
        std::thread::sleep(failing);
        std::fs::write(&mode_file, "ok").unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let log = fetcher.finish().unwrap();
        let runs = log.runs();
        let outcomes: Vec<Option<&str>> = runs.iter().map(|(w, _)| w.as_deref()).collect();
        assert_eq!(outcomes, [Some("t"), None, Some("t")], "runs: {runs:?}");
        let outage = log.outage();
        // One interval either way for where the mode changes fall between
        // fetches, and scheduling slack for a busy machine.
        assert!(
            outage + 2 * interval >= failing
                && outage <= failing + 2 * interval + Duration::from_millis(100),
            "outage {outage:?} for a server failing {failing:?}"
        );
    }
}
