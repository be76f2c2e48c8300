//! A bounded soak: many authorised requests over 64 keep-alive connections, loopback only,
//! stopping by itself. Every answer must be a 200, and the daemon's resident memory after the
//! run must be within 10% of what it was after a warm-up (no growth per request).
//!
//! `make test` runs 200,000 requests; `make soak` runs the full 1,000,000
//! (`SOAK_REQUESTS` sets the number).

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use support::*;

const CONNECTIONS: usize = 64;
const DEFAULT_REQUESTS: usize = 200_000;

/// A daemon that stops answering (or crashes) fails the soak instead of hanging it.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads one line; the end of the stream (the daemon closed the connection or died) or a
/// silence longer than [`READ_TIMEOUT`] is a failure of the soak, not a line.
fn read_line(reader: &mut BufReader<TcpStream>, line: &mut String) {
    line.clear();
    let read = reader
        .read_line(line)
        .expect("an answer within the read timeout");
    assert!(read > 0, "the daemon closed the connection mid-soak");
}

/// Sends `count` requests on one keep-alive connection; returns how many were not a 200.
fn hammer(address: SocketAddr, token: &str, count: usize) -> usize {
    let stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let request =
        format!("GET /roles/piyo HTTP/1.1\r\nHost: {address}\r\nAuthorization: {token}\r\n\r\n");
    let mut failures = 0;
    let mut line = String::new();
    for _ in 0..count {
        writer.write_all(request.as_bytes()).unwrap();
        read_line(&mut reader, &mut line);
        if !line.starts_with("HTTP/1.1 200") {
            failures += 1;
        }
        let mut length = 0;
        loop {
            read_line(&mut reader, &mut line);
            if line == "\r\n" {
                break;
            }
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).unwrap();
    }
    failures
}

fn run(address: SocketAddr, token: &str, total: usize) -> usize {
    let per_connection = total / CONNECTIONS;
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let token = token.to_owned();
            std::thread::spawn(move || hammer(address, &token, per_connection))
        })
        .collect();
    workers.into_iter().map(|w| w.join().unwrap()).sum()
}

fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn soak_holds_without_errors_or_growth() {
    let total: usize = std::env::var("SOAK_REQUESTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_REQUESTS);
    let moto = Moto::start();
    // 64 keep-alive connections of one user, run after run: lift the per-user limit (128), so
    // that a run's new connections never meet the last run's still closing.
    let dir = TempDir::new("soak");
    let token_file = dir.path().join("state/token");
    let config = moto.config_with(&token_file, "max_connections_per_user = 1024");
    let daemon = Daemon::start_with(dir, &config, &moto.host_env(), &[]);
    daemon.wait_ready();
    let token = daemon.token();
    assert_eq!(
        run(daemon.address, &token, total / 10),
        0,
        "errors during warm-up"
    );
    let warm = resident_kib(daemon.pid());
    let started = std::time::SystemTime::now();
    let failures = run(daemon.address, &token, total);
    let took = started.elapsed().unwrap();
    let after = resident_kib(daemon.pid());
    eprintln!(
        "soak: {total} requests over {CONNECTIONS} connections in {took:?}, {failures} not 200; \
         resident {warm} KiB after warm-up, {after} KiB after"
    );
    assert_eq!(failures, 0);
    assert!(
        after * 10 <= warm * 11,
        "resident memory grew from {warm} to {after} KiB"
    );
}
