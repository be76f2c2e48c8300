//! Connections closed before anything was answered on them, and the throttled log of them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use tracing::{debug, info};

/// How often a connection closed unanswered is logged at `info`, per reason.
const UNANSWERED_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Why a connection was closed before anything was answered on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Unanswered {
    /// No live socket of this host is its other end: the client is gone, is not local, or is
    /// one whose socket the lookup does not understand (the next such gap shows here).
    NoLocalClient,
    /// Its user holds `max_connections_per_user` already.
    UserAtLimit,
    /// Every place is taken and nobody holds more than the fair share.
    AllTaken,
}

impl Unanswered {
    fn text(self) -> &'static str {
        match self {
            Unanswered::NoLocalClient => "no local client socket",
            Unanswered::UserAtLimit => "the user holds max_connections_per_user",
            Unanswered::AllTaken => "max_connections are held, nobody over the fair share",
        }
    }
}

/// Connections closed unanswered are logged at `info` once a minute per reason, with the
/// client's address and how many more were closed since the last line: visible without debug
/// logs, and no flood of lines from a flood of connections.
#[derive(Default)]
pub(super) struct UnansweredLog {
    /// Per reason: when it was last logged, and how many closes were held back since.
    last: Mutex<HashMap<Unanswered, (tokio::time::Instant, u64)>>,
}

impl UnansweredLog {
    pub(super) fn note(&self, reason: Unanswered, client: SocketAddr, uid: Option<u32>) {
        debug!(%client, ?uid, reason = reason.text(), "connection closed unanswered");
        let Some(held_back) = self.due(reason, tokio::time::Instant::now()) else {
            return;
        };
        info!(
            %client,
            uid = %crate::peer::Known(&uid),
            held_back,
            "connection closed unanswered: {} (logged once a minute; held_back counts the \
             others since the last line)",
            reason.text()
        );
    }

    /// Whether a close for `reason` at `now` is logged, and if so how many were held back
    /// since the last line.
    pub(super) fn due(&self, reason: Unanswered, now: tokio::time::Instant) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match last.get_mut(&reason) {
            Some((at, held)) if now.duration_since(*at) < UNANSWERED_LOG_INTERVAL => {
                *held += 1;
                None
            }
            Some((at, held)) => {
                *at = now;
                Some(std::mem::take(held))
            }
            None => {
                last.insert(reason, (now, 0));
                Some(0)
            }
        }
    }
}
