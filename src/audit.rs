//! The audit log: who got which role's credentials, and who was refused, under the target
//! `audit`.
//!
//! One line per response would make the audit the most expensive part of the request path and
//! let one user flood the journal (whose rate limit then drops other services' lines, and
//! ours). So the audit writes one line per (client, role, credential set) at once, then holds
//! back repeats for [`INTERVAL`] and says how many there were: in the next line for that key,
//! or in the summary [`summarize`] writes for keys that went quiet (the daemon calls it every
//! interval, so within two intervals, and once more at stop after the drain). Nothing is lost:
//! every response is in a line or in a count. Refusals (by `allowed_*`, an unknown user, a
//! full per-user role) work the same, per (client, role). A key does not include the endpoint
//! or the process: repeats are counted per client, and the line that reports them carries the
//! endpoint and process of its own request.
//!
//! A client is a local user (uid) or a container (address). Each table remembers at most
//! [`ENTRIES`] keys; past it, keys quiet for an interval are forgotten, and if that is not
//! enough the line is only counted, in a total the summary reports (so that a flood of distinct
//! clients is not written line by line either).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use crate::access::{Decision, Via};
use crate::peer::{Known, Peer};

/// How long repeats of one key are held back.
pub const INTERVAL: Duration = Duration::from_secs(60);
/// The most keys one table remembers.
const ENTRIES: usize = 4096;

/// Who the line is about: a user by uid, a container by address, or neither (unknown).
type Who = (Option<u32>, Option<IpAddr>);

/// One key's state: when its last line was written and what was held back since.
struct Entry {
    role: String,
    /// The masked access key id for served lines; empty for refusals.
    detail: String,
    /// For the summary, which has no request at hand.
    user: Option<String>,
    written: Instant,
    held: u64,
}

/// What the summary reports of one key.
struct Held {
    who: Who,
    role: String,
    detail: String,
    user: Option<String>,
    count: u64,
}

/// When each key's lines were written, and how many were held back since.
#[derive(Default)]
struct Throttle {
    entries: HashMap<Who, Vec<Entry>>,
    /// How many entries `entries` holds.
    count: usize,
    /// Lines neither written nor held because the table was full: counted, and reported in
    /// the summary.
    overflow: u64,
}

impl Throttle {
    fn len(&self) -> usize {
        self.count
    }

    /// Whether to write this key's line at `now`, and if so how many were held back before it;
    /// `None`: held back (counted). Looking up a known key allocates nothing.
    fn admit(
        &mut self,
        who: Who,
        role: &str,
        detail: &str,
        user: Option<&str>,
        now: Instant,
    ) -> Admit {
        if let Some(entry) = (self.entries.get_mut(&who)).and_then(|entries| {
            entries
                .iter_mut()
                .find(|e| e.role == role && e.detail == detail)
        }) {
            if now.duration_since(entry.written) < INTERVAL {
                entry.held += 1;
                return Admit::HeldBack;
            }
            let held = std::mem::take(&mut entry.held);
            entry.written = now;
            return Admit::Write { held };
        }
        if self.len() >= ENTRIES {
            self.forget_quiet(now);
        }
        if self.len() >= ENTRIES {
            return Admit::Full;
        }
        let entry = Entry {
            role: role.to_owned(),
            detail: detail.to_owned(),
            user: user.map(str::to_owned),
            written: now,
            held: 0,
        };
        self.entries.entry(who).or_default().push(entry);
        self.count += 1;
        Admit::Write { held: 0 }
    }

    /// Keys with nothing held back and no line for an interval: they start afresh if seen again.
    fn forget_quiet(&mut self, now: Instant) {
        for entries in self.entries.values_mut() {
            entries.retain(|e| e.held > 0 || now.duration_since(e.written) < INTERVAL);
        }
        self.entries.retain(|_, entries| !entries.is_empty());
        self.count = self.entries.values().map(Vec::len).sum();
    }

    /// What was held back for at least an interval, to report now (each key's count starts
    /// again), and the overflow count (reset too).
    fn held(&mut self, now: Instant) -> (Vec<Held>, u64) {
        let mut held = Vec::new();
        for (who, entries) in &mut self.entries {
            for entry in entries.iter_mut() {
                if entry.held > 0 && now.duration_since(entry.written) >= INTERVAL {
                    held.push(Held {
                        who: *who,
                        role: entry.role.clone(),
                        detail: entry.detail.clone(),
                        user: entry.user.clone(),
                        count: std::mem::take(&mut entry.held),
                    });
                    entry.written = now;
                }
            }
        }
        self.forget_quiet(now);
        (held, std::mem::take(&mut self.overflow))
    }
}

/// What [`Throttle::admit`] decided.
#[derive(Debug, PartialEq, Eq)]
enum Admit {
    /// Write the line, saying how many were held back since the last one.
    Write { held: u64 },
    /// Counted, not written.
    HeldBack,
    /// The table is full of recent keys.
    Full,
}

/// The tables of this process. Std mutexes: held to count, never across an await; a poisoned
/// one is used as it is.
static SERVED: LazyLock<Mutex<Throttle>> = LazyLock::new(Mutex::default);
static REFUSED: LazyLock<Mutex<Throttle>> = LazyLock::new(Mutex::default);

fn lock(table: &Mutex<Throttle>) -> std::sync::MutexGuard<'_, Throttle> {
    table
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// An optional text as a log field, escaped (an executable's path may hold newlines or
/// spaces, which must not forge another line or field); `-` when unknown.
struct Escaped<'a>(&'a Option<String>);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(text) => write!(f, "{}", text.escape_debug()),
            None => f.write_str("-"),
        }
    }
}

/// Records `decision` about role `role` for `peer`: every set handed out and every refusal by
/// user, a line at once per key and counts for repeats (see the module's description).
pub fn record(role: &str, via: Via<'_>, peer: &Peer, decision: &Decision) {
    let who = (peer.uid, peer.container);
    let (uid, user, pid, exe, container) = (
        Known(&peer.uid),
        Known(&peer.user),
        Known(&peer.pid),
        Escaped(&peer.exe),
        Known(&peer.container),
    );
    let via = via.label();
    match decision {
        Decision::Served { masked_key_id, .. } => {
            let admitted = lock(&SERVED).admit(
                who,
                role,
                masked_key_id,
                peer.user.as_deref(),
                Instant::now(),
            );
            // A full table never costs a served line: the audit of what was handed out is kept.
            let held = match admitted {
                Admit::Write { held } => held,
                Admit::Full => 0,
                Admit::HeldBack => return,
            };
            info!(
                target: "audit", role = %role, access_key_id = %masked_key_id, uid = %uid,
                user = %user, pid = %pid, exe = %exe, container = %container, via = %via,
                held_back = held, "credentials served"
            );
        }
        Decision::NotAdmitted | Decision::UnknownPeer | Decision::Full(_) => {
            // A uid without an account is nobody in particular: such refusals share one key.
            let who = match (decision, &peer.user) {
                (Decision::UnknownPeer, None) => (None, None),
                _ => who,
            };
            let mut refused = lock(&REFUSED);
            let held = match refused.admit(who, role, "", peer.user.as_deref(), Instant::now()) {
                Admit::Write { held } => held,
                Admit::HeldBack => return,
                // A flood of distinct keys (subordinate uids, say) is not written line by line.
                Admit::Full => {
                    refused.overflow += 1;
                    return;
                }
            };
            drop(refused);
            let reason = match decision {
                Decision::NotAdmitted => "user not allowed for this role",
                Decision::UnknownPeer => "the role is served per user, and this user is unknown",
                _ => "the role holds its max_sessions; no session for a new user",
            };
            warn!(
                target: "audit", role = %role, uid = %uid, user = %user, pid = %pid, exe = %exe,
                container = %container, via = %via, held_back = held,
                "credentials refused: {reason}"
            );
        }
        _ => {}
    }
}

/// Writes what was held back for an interval or more: one line per key, with the count.
pub fn summarize(now: Instant) {
    let (served, served_overflow) = lock(&SERVED).held(now);
    for held in served {
        let (uid, user, container) = (Known(&held.who.0), Known(&held.user), Known(&held.who.1));
        info!(
            target: "audit", role = %held.role, access_key_id = %held.detail, uid = %uid,
            user = %user, container = %container, count = held.count,
            "credentials served again, not written one by one"
        );
    }
    if served_overflow > 0 {
        info!(
            target: "audit", count = served_overflow,
            "credentials served to more distinct clients than the audit remembers; not \
             written one by one"
        );
    }
    let (refused, overflow) = lock(&REFUSED).held(now);
    for held in refused {
        let (uid, user, container) = (Known(&held.who.0), Known(&held.user), Known(&held.who.1));
        warn!(
            target: "audit", role = %held.role, uid = %uid, user = %user, container = %container,
            count = held.count, "credentials refused again, not written one by one"
        );
    }
    if overflow > 0 {
        warn!(
            target: "audit", count = overflow,
            "credentials refused to more distinct users than the audit remembers; not written \
             one by one"
        );
    }
}

/// Calls [`summarize`] every interval until `stop`. (What is still held back when the daemon
/// stops is written by [`summarize_all`], once the last request is answered.)
pub async fn summarize_every_interval(stop: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => summarize(Instant::now()),
            () = stop.cancelled() => return,
        }
    }
}

/// Writes everything held back, however recent: at stop, after the drain.
pub fn summarize_all() {
    summarize(Instant::now() + INTERVAL);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, seconds: u64) -> Instant {
        start + Duration::from_secs(seconds)
    }

    /// The first line of a key at once; repeats within the interval held back and counted;
    /// the next line after it says how many; each key apart.
    #[test]
    fn repeats_are_held_back_and_counted() {
        let mut table = Throttle::default();
        let start = Instant::now();
        let alice = (Some(1001), None);
        let write = |held| Admit::Write { held };
        assert_eq!(
            table.admit(alice, "piyo", "ASIA…1", None, at(start, 0)),
            write(0)
        );
        assert_eq!(
            table.admit(alice, "piyo", "ASIA…1", None, at(start, 1)),
            Admit::HeldBack
        );
        assert_eq!(
            table.admit(alice, "piyo", "ASIA…1", None, at(start, 59)),
            Admit::HeldBack
        );
        assert_eq!(
            table.admit(alice, "piyo", "ASIA…2", None, at(start, 2)),
            write(0),
            "new set"
        );
        assert_eq!(
            table.admit(alice, "fuga", "ASIA…1", None, at(start, 2)),
            write(0),
            "role"
        );
        let container = (None, Some("172.17.0.2".parse().unwrap()));
        assert_eq!(
            table.admit(container, "piyo", "ASIA…1", None, at(start, 3)),
            write(0)
        );
        assert_eq!(
            table.admit(alice, "piyo", "ASIA…1", None, at(start, 60)),
            write(2)
        );
        assert_eq!(
            table.admit(alice, "piyo", "ASIA…1", None, at(start, 61)),
            Admit::HeldBack
        );
    }

    /// Keys that went quiet with repeats held back are reported once an interval has passed,
    /// and nothing is reported twice.
    #[test]
    fn the_summary_reports_what_was_held_back() {
        let mut table = Throttle::default();
        let start = Instant::now();
        let alice = (Some(1001), None);
        table.admit(alice, "piyo", "ASIA…1", Some("alice"), start);
        for second in 1..=5 {
            table.admit(alice, "piyo", "ASIA…1", Some("alice"), at(start, second));
        }
        assert!(
            table.held(at(start, 30)).0.is_empty(),
            "not before the interval"
        );
        let (held, _) = table.held(at(start, 60));
        assert_eq!(held.len(), 1);
        assert_eq!((held[0].count, held[0].user.as_deref()), (5, Some("alice")));
        assert!(table.held(at(start, 200)).0.is_empty(), "reported once");
        assert_eq!(table.len(), 0, "quiet keys are forgotten");
    }

    /// A full table forgets quiet keys first; full of recent ones, it says so.
    #[test]
    fn a_full_table_makes_room_or_says_so() {
        let mut table = Throttle::default();
        let start = Instant::now();
        for uid in 0..ENTRIES as u32 {
            table.admit((Some(uid), None), "piyo", "", None, start);
        }
        let late = (Some(u32::MAX - 1), None);
        assert_eq!(
            table.admit(late, "piyo", "", None, at(start, 1)),
            Admit::Full
        );
        assert_eq!(
            table.admit(late, "piyo", "", None, at(start, 61)),
            Admit::Write { held: 0 },
            "the quiet ones are forgotten"
        );
    }

    #[test]
    fn executables_are_escaped() {
        let forged = Some("/tmp/x\nINFO audit: credentials served".to_owned());
        assert_eq!(
            Escaped(&forged).to_string(),
            "/tmp/x\\nINFO audit: credentials served"
        );
        assert_eq!(Escaped(&None).to_string(), "-");
    }
}
