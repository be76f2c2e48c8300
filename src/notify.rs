//! systemd notifications: readiness, status lines and watchdog pings (`sd_notify`).
//!
//! Under `Type=notify` systemd passes a datagram socket in `NOTIFY_SOCKET`; the daemon sends
//! `READY=1` once every role's first STS attempt has ended, with credentials or with an error
//! (a boot never waits on STS: whether credentials exist is what `STATUS=`, `/readyz` and
//! `status` say), `STATUS=` lines saying what it is doing,
//! `WATCHDOG=1` at half the `WATCHDOG_USEC` interval, and `RELOADING=1` / `STOPPING=1` around
//! reloads and stops. Outside systemd there is no socket and every call does nothing. The
//! protocol is a few lines of text on a Unix socket, so it is written here rather than pulled in.

use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::clock::SharedClock;
use crate::credentials::format_timestamp;
use crate::refresh::{RoleStatus, Unservable, servable};
use crate::roles::RoleTable;

/// How often the status is recomputed (and, at most, the watchdog interval).
const STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// A connection to systemd's notification socket, if there is one.
#[derive(Debug)]
pub struct Notifier {
    socket: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from the environment.
    pub fn from_env() -> Self {
        let socket = std::env::var("NOTIFY_SOCKET").ok().and_then(|path| {
            let address = socket_address(&path)?;
            Some((UnixDatagram::unbound().ok()?, address))
        });
        let watchdog_pid = std::env::var("WATCHDOG_PID").ok();
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|usec| watchdog_interval(&usec, watchdog_pid.as_deref(), std::process::id()));
        Self { socket, watchdog }
    }

    /// A notifier that tells nobody: not run by systemd, or in tests.
    pub fn disabled() -> Self {
        Self {
            socket: None,
            watchdog: None,
        }
    }

    /// Sends one notification; failures are logged, never fatal.
    pub fn send(&self, state: &str) {
        if let Some((socket, address)) = &self.socket
            && let Err(error) = socket.send_to_addr(state.as_bytes(), address)
        {
            debug!(%error, "cannot notify systemd");
        }
    }

    /// How often to ping the watchdog, if systemd asked for it.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }
}

/// The socket address in `NOTIFY_SOCKET`: a path, or an abstract name after `@`.
fn socket_address(text: &str) -> Option<std::os::unix::net::SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    match text.strip_prefix('@') {
        Some(name) => std::os::unix::net::SocketAddr::from_abstract_name(name).ok(),
        None => std::os::unix::net::SocketAddr::from_pathname(text).ok(),
    }
}

/// Half the watchdog timeout, if the watchdog is meant for this process.
pub fn watchdog_interval(usec: &str, for_pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    if for_pid.is_some_and(|pid| pid.parse() != Ok(own_pid)) {
        return None;
    }
    let usec: u64 = usec.parse().ok().filter(|usec| *usec > 0)?;
    Some(Duration::from_micros(usec) / 2)
}

/// What the roles add up to, for `READY=1` and `STATUS=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Every role has servable credentials.
    pub ready: bool,
    /// Every role's first STS attempt has ended (with credentials or an error): `READY=1`.
    pub settled: bool,
    pub text: String,
}

/// Summarises the shared roles' statuses at `now`, beside `per_user` roles served per user
/// (which have nothing to be ready with until their users ask).
pub fn summarize(roles: &[(String, RoleStatus)], per_user: usize, now: SystemTime) -> Summary {
    let mut valid_until: Option<SystemTime> = None;
    let mut waiting = Vec::new();
    let mut settled = true;
    for (name, status) in roles {
        match servable(status, now) {
            Ok(served) => {
                let expiry = served.credentials.expiration;
                valid_until = Some(valid_until.map_or(expiry, |t| t.min(expiry)));
            }
            Err(Unservable::Uninitialized) => {
                settled = false;
                waiting.push(format!("{name}: first fetch"));
            }
            Err(Unservable::Failing(error) | Unservable::Expiring(Some(error))) => {
                waiting.push(format!("{name}: {}", error.code))
            }
            Err(Unservable::Expiring(None)) => waiting.push(format!("{name}: renewing")),
        }
    }
    let count = roles.len();
    let noun = if count == 1 { "role" } else { "roles" };
    if waiting.is_empty() {
        let until = valid_until.map_or_else(|| "-".to_owned(), format_timestamp);
        let text = match per_user {
            0 => format!("serving {count} {noun}, credentials valid until {until}"),
            _ if count == 0 => format!("serving {per_user} per user"),
            _ => format!(
                "serving {count} {noun}, credentials valid until {until}, and {per_user} per user"
            ),
        };
        return Summary {
            ready: true,
            settled,
            text,
        };
    }
    Summary {
        ready: false,
        settled,
        text: format!("waiting for STS: {}", waiting.join("; ")),
    }
}

/// Keeps systemd informed until `shutdown`: readiness once, status on change, watchdog pings.
pub async fn run(
    notifier: Arc<Notifier>,
    roles: watch::Receiver<Arc<RoleTable>>,
    clock: SharedClock,
    shutdown: CancellationToken,
) {
    let tick = notifier
        .watchdog()
        .map_or(STATUS_INTERVAL, |w| w.min(STATUS_INTERVAL));
    let mut announced_ready = false;
    let mut last_text = String::new();
    loop {
        let table = roles.borrow().clone();
        let snapshot: Vec<(String, RoleStatus)> = (table.iter())
            .filter_map(|(name, entry)| Some((name.clone(), entry.shared_status()?)))
            .collect();
        let summary = summarize(&snapshot, table.len() - snapshot.len(), clock.now());
        if summary.settled && !announced_ready {
            notifier.send("READY=1");
            announced_ready = true;
            info!(status = %summary.text, "ready");
        }
        if summary.text != last_text {
            notifier.send(&format!("STATUS={}", summary.text));
            last_text = summary.text;
        }
        if notifier.watchdog().is_some() {
            notifier.send("WATCHDOG=1");
        }
        tokio::select! {
            () = tokio::time::sleep(tick) => {}
            () = shutdown.cancelled() => {
                notifier.send("STOPPING=1");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::{Credentials, Served};
    use crate::sts::{ErrorKind, StsError};
    use std::time::UNIX_EPOCH;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + seconds)
    }

    fn fresh() -> RoleStatus {
        let credentials = Credentials::new(
            "ASIAEXAMPLE123456789".into(),
            "s".into(),
            "t".into(),
            at(3600),
        );
        RoleStatus {
            current: Some(Arc::new(Served::new(credentials, at(0)))),
            last_error: None,
            ..RoleStatus::default()
        }
    }

    #[test]
    fn summaries() {
        let ready = summarize(&[("piyo".into(), fresh())], 0, at(60));
        assert_eq!(
            ready,
            Summary {
                ready: true,
                settled: true,
                text: "serving 1 role, credentials valid until 2027-01-15T09:00:00Z".into()
            }
        );
        let beside = summarize(&[("piyo".into(), fresh())], 2, at(60)).text;
        assert_eq!(
            beside,
            "serving 1 role, credentials valid until 2027-01-15T09:00:00Z, and 2 per user"
        );
        let only = summarize(&[], 1, at(60));
        assert!(only.ready, "nothing to wait for");
        assert_eq!(only.text, "serving 1 per user");
        let denied = RoleStatus {
            current: None,
            last_error: Some(StsError::new(
                ErrorKind::Configuration,
                "AccessDenied",
                "no",
            )),
            ..RoleStatus::default()
        };
        let roles = [
            ("piyo".into(), fresh()),
            ("fuga".into(), denied),
            ("hoge".into(), RoleStatus::default()),
        ];
        let waiting = summarize(&roles, 0, at(60));
        assert!(!waiting.ready);
        assert!(!waiting.settled, "hoge's first fetch has not ended");
        let failed = summarize(&roles[..2], 0, at(60));
        assert!(
            !failed.ready && failed.settled,
            "every first attempt has ended"
        );
        assert_eq!(
            waiting.text,
            "waiting for STS: fuga: AccessDenied; hoge: first fetch"
        );
    }

    #[test]
    fn watchdog_intervals() {
        assert_eq!(
            watchdog_interval("30000000", None, 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            watchdog_interval("30000000", Some("7"), 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(watchdog_interval("30000000", Some("8"), 7), None);
        assert_eq!(watchdog_interval("0", None, 7), None);
        assert_eq!(watchdog_interval("x", None, 7), None);
    }

    #[test]
    fn notifications_reach_the_socket() {
        let dir = std::env::temp_dir().join(format!("assume-roled-notify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier {
            socket: Some((
                UnixDatagram::unbound().unwrap(),
                socket_address(path.to_str().unwrap()).unwrap(),
            )),
            watchdog: None,
        };
        notifier.send("READY=1");
        let mut buffer = [0u8; 64];
        let read = listener.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..read], b"READY=1");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
