//! Persistent HTTP/1.1 connections to a VIP from a lab namespace, each
//! sending a request on a fixed cadence and noting which of the lab's HTTP
//! servers ([`crate::http_server`], whose body starts with its name)
//! answered. What established connections see while lbfo nodes come and
//! go: a reset, a timeout, or an answer from another backend is what
//! breaking a connection looks like.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddrV4, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

/// One request on a kept-alive connection; returns the name of the server
/// that answered.
pub fn ask(stream: &mut TcpStream) -> std::io::Result<String> {
    stream.write_all(b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n")?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::other("connection closed"));
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(String::from_utf8_lossy(&body)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string())
}

/// What one connection saw.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The client's port: which flow it was.
    pub port: u16,
    /// The backend that answered the first request.
    pub backend: String,
    /// Requests answered.
    pub answered: u64,
    /// Answers from a backend other than the first, with the name.
    pub other_backend: Vec<String>,
    /// The error that ended the connection, if one did.
    pub error: Option<String>,
}

impl Connection {
    /// Every request answered, all by the same backend.
    pub fn intact(&self) -> bool {
        self.error.is_none() && self.other_backend.is_empty()
    }
}

/// Connections that each send a request every `interval` until stopped.
pub struct KeptAlive {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Connection>>,
    /// The client ports, in the order the connections were opened.
    pub ports: Vec<u16>,
}

impl KeptAlive {
    /// Opens `count` connections to `target` from namespace `ns` (one
    /// request each before this returns, so every connection is
    /// established), then keeps each asking every `interval`, for at most
    /// `run_for` and at most `run_for / interval` requests.
    pub fn open(
        ns: &str,
        target: SocketAddrV4,
        count: usize,
        interval: Duration,
        run_for: Duration,
    ) -> Result<KeptAlive> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let mut ports = Vec::new();
        let max_requests = (run_for.as_millis() / interval.as_millis().max(1)) as u64;
        for _ in 0..count {
            let mut stream = crate::lab::in_netns(ns, || TcpStream::connect(target))?
                .with_context(|| format!("connecting to {target}"))?;
            stream.set_read_timeout(Some(Duration::from_secs(2)))?;
            stream.set_nodelay(true)?;
            let port = stream.local_addr()?.port();
            let backend = ask(&mut stream).with_context(|| format!("first request to {target}"))?;
            ports.push(port);
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || {
                let started = Instant::now();
                let mut connection = Connection {
                    port,
                    backend,
                    answered: 1,
                    other_backend: Vec::new(),
                    error: None,
                };
                let mut next = Instant::now() + interval;
                while !stop.load(Ordering::Relaxed)
                    && started.elapsed() < run_for
                    && connection.answered < max_requests
                {
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                    next += interval;
                    match ask(&mut stream) {
                        Ok(who) if who == connection.backend => connection.answered += 1,
                        Ok(who) => {
                            connection.answered += 1;
                            connection.other_backend.push(who);
                        }
                        Err(e) => {
                            connection.error = Some(format!(
                                "after {:.2} s and {} answers: {e}",
                                started.elapsed().as_secs_f64(),
                                connection.answered
                            ));
                            break;
                        }
                    }
                }
                connection
            }));
        }
        Ok(KeptAlive {
            stop,
            threads,
            ports,
        })
    }

    /// Stops every connection and returns what each saw.
    pub fn finish(self) -> Vec<Connection> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .into_iter()
            .map(|t| t.join().expect("connection thread panicked"))
            .collect()
    }
}
