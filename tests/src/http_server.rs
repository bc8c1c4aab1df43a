//! A small HTTP server for the lab, whose behaviour the test can change at
//! any time by writing a word to its mode file:
//!
//! - `ok`: `200 OK` with the server's name as the body (and `ok` in it)
//! - `error`: `500 Internal Server Error`
//! - `slow`: answers `200` after 2 s (past any health-check timeout)
//! - `hang`: accepts the connection and never answers
//! - `close`: accepts and closes at once
//!
//! Every connection gets its own thread, and every thread ends within 30 s.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, Result};

/// Connections handled at once; more are closed at once.
const MAX_CONNECTIONS: usize = 512;

pub fn serve(listen: SocketAddr, name: &str, mode_file: &Path) -> Result<()> {
    let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if active.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
            continue;
        }
        active.fetch_add(1, Ordering::Relaxed);
        let active = active.clone();
        let name = name.to_string();
        let mode_file = mode_file.to_path_buf();
        std::thread::spawn(move || {
            let _ = handle(stream, &name, &mode_file);
            active.fetch_sub(1, Ordering::Relaxed);
        });
    }
    Ok(())
}

fn mode(mode_file: &PathBuf) -> String {
    std::fs::read_to_string(mode_file)
        .map(|m| m.trim().to_string())
        .unwrap_or_else(|_| "ok".into())
}

fn handle(mut stream: TcpStream, name: &str, mode_file: &PathBuf) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    // Keep-alive: answer requests on this connection until the client closes.
    loop {
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            request.extend_from_slice(&buf[..n]);
            if request.len() > 16 * 1024 {
                return Ok(());
            }
        }
        let (status, body) = match mode(mode_file).as_str() {
            "error" => ("500 Internal Server Error", "error\n".to_string()),
            "slow" => {
                std::thread::sleep(Duration::from_secs(2));
                ("200 OK", format!("{name} ok\n"))
            }
            "hang" => {
                std::thread::sleep(Duration::from_secs(30));
                return Ok(());
            }
            "close" => return Ok(()),
            _ => ("200 OK", format!("{name} ok\n")),
        };
        let close = String::from_utf8_lossy(&request)
            .to_ascii_lowercase()
            .contains("connection: close");
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n{body}",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        stream.write_all(response.as_bytes())?;
        if close {
            return Ok(());
        }
    }
}
