//! The `assume-roled status` command's side: asks the running daemon for its `/status` report
//! over loopback, with the token from the configured file (read as a client reads it: the
//! owner check is the daemon's, at its start-up). The report itself is [`crate::status`].

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::config::Config;
use crate::status::Report;
use crate::token;

/// How long `status` waits for the daemon.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// Asks the running daemon for its report, with the token from the configured file.
pub fn fetch(config: &Config) -> anyhow::Result<Report> {
    let token = token::read(&config.server.token_file)?;
    let address = config.server.listen;
    let mut stream = TcpStream::connect_timeout(&address, STATUS_TIMEOUT)
        .with_context(|| format!("cannot reach the daemon at {address}; is it running?"))?;
    stream.set_read_timeout(Some(STATUS_TIMEOUT))?;
    let request = format!(
        "GET /status HTTP/1.1\r\nHost: {address}\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
        token.expose()
    );
    stream.write_all(request.as_bytes())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    if !head.starts_with("HTTP/1.1 200") {
        bail!(
            "the daemon answered {}: {body}",
            head.lines().next().unwrap_or("")
        );
    }
    serde_json::from_str(body).context("the daemon's status report is not valid JSON")
}
