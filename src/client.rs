//! The commands' side of the daemon's HTTP endpoint: `status` asks for the `/status` report and
//! `credentials` for a role's set, over loopback, with a token read as a client reads it (the
//! owner check is the daemon's, at its start-up). The report itself is [`crate::status`].
//!
//! The token goes only to the daemon: before sending it, the kernel is asked who owns the other
//! end of the connection (sock_diag), which must be root (systemd's socket) or the owner of the
//! token file (the daemon's user). Another local user who took the port while the daemon was
//! down gets nothing.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::config::Config;
use crate::sockdiag;
use crate::status::Report;
use crate::token::{self, AuthToken};

/// How long a command waits to connect: a stopped daemon refuses at once, a socket-activated
/// one accepts at once and starts behind it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a command waits for the answer: a new per-user session's first request waits for
/// its AssumeRole call (the STS client gives up after 10 s).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);
/// The most of an answer read: a credentials set or the status report is a few kilobytes.
const ANSWER_LIMIT: u64 = 1 << 20;

/// An answer: its status code and body (which may hold credentials: no `Debug`).
pub struct Answer {
    /// The HTTP status code.
    pub status: u16,
    /// The body, as text.
    pub body: String,
}

/// `GET path` from the daemon at `address`, with the token read from `token_file`, once the
/// other end is known to be the daemon's.
pub fn get(address: SocketAddr, path: &str, token_file: &Path) -> anyhow::Result<Answer> {
    let token = token::read(token_file).context("cannot use its token file")?;
    let owner = std::fs::metadata(token_file)?.uid();
    let stream = TcpStream::connect_timeout(&address, CONNECT_TIMEOUT)
        .with_context(|| format!("cannot reach the daemon at {address}; is it running?"))?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT))?;
    let holder = sockdiag::server_owner(stream.peer_addr()?, stream.local_addr()?)
        .ok()
        .flatten();
    if !is_the_daemons(holder, owner) {
        let holder = holder.map_or("an owner the kernel did not say".to_owned(), |uid| {
            format!("uid {uid}")
        });
        bail!(
            "{address} is held by {holder}, not by root or the daemon's user (uid {owner}, the \
             owner of {}): the token was not sent",
            token_file.display()
        );
    }
    send(stream, address, path, &token)
}

/// Whether a socket owned by `holder` is the daemon's: systemd's (root) or the daemon's own
/// (the user that owns its token files). Pure.
fn is_the_daemons(holder: Option<u32>, token_owner: u32) -> bool {
    holder.is_some_and(|uid| uid == 0 || uid == token_owner)
}

fn send(
    mut stream: TcpStream,
    address: SocketAddr,
    path: &str,
    token: &AuthToken,
) -> anyhow::Result<Answer> {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
        token.expose()
    );
    let waited = || format!("the daemon at {address} did not answer {path}");
    stream.write_all(request.as_bytes()).with_context(waited)?;
    let mut answer = String::new();
    (&mut stream)
        .take(ANSWER_LIMIT)
        .read_to_string(&mut answer)
        .with_context(waited)?;
    parse_answer(&answer).with_context(waited)
}

/// An HTTP/1.1 answer's status and body (the daemon sends whole bodies, never chunks).
fn parse_answer(answer: &str) -> anyhow::Result<Answer> {
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((answer, ""));
    let status = (head.strip_prefix("HTTP/1.1 "))
        .and_then(|rest| rest.get(..3)?.parse().ok())
        .context("the answer is not HTTP/1.1")?;
    Ok(Answer {
        status,
        body: body.to_owned(),
    })
}

/// Asks the running daemon for its report, with the token from the configured file.
pub fn fetch(config: &Config) -> anyhow::Result<Report> {
    let answer = get(config.server.listen, "/status", &config.server.token_file)?;
    if answer.status != 200 {
        bail!("the daemon answered {}: {}", answer.status, answer.body);
    }
    serde_json::from_str(&answer.body).context("the daemon's status report is not valid JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_its_status_and_body() {
        let answer = parse_answer("HTTP/1.1 403 Forbidden\r\ncontent-length: 2\r\n\r\n{}").unwrap();
        assert_eq!((answer.status, answer.body.as_str()), (403, "{}"));
        assert!(parse_answer("SSH-2.0-OpenSSH\r\n").is_err());
        assert!(parse_answer("HTTP/1.1 2").is_err());
    }

    #[test]
    fn only_root_or_the_token_files_owner_is_the_daemon() {
        assert!(is_the_daemons(Some(0), 998), "systemd's socket");
        assert!(is_the_daemons(Some(998), 998), "the daemon's own");
        assert!(!is_the_daemons(Some(1001), 998), "another user on the port");
        assert!(!is_the_daemons(None, 998), "unknown: not sent");
    }
}
