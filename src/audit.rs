//! The audit log: who got which role's credentials, and who was refused, under the target
//! `audit`.
//!
//! One line per response would make the audit the most expensive part of the request path and
//! let one user flood the journal (whose rate limit then drops other services' lines, and
//! ours). So the audit writes one line per (client, role, credential set) at once, then holds
//! back repeats for [`INTERVAL`] and says how many there were: in the next line for that key,
//! or in the summary [`summarize`] writes for keys that went quiet (the daemon calls it every
//! interval, so within two intervals, three for repeats a connection counts itself (see
//! [`memo`]), and once more at stop after the drain). Nothing is lost: every response is in a
//! line or in a count, the line budget's folded counts included. Refusals (by `allowed_*`, an unknown user, a
//! full per-user role) work the same, per (client, role). A key does not include the endpoint
//! or the process: repeats are counted per client, and the line that reports them carries the
//! endpoint and process of its own request.
//!
//! The audit is a value ([`Audit`]) the daemon makes once and hands to the endpoints: no
//! process-wide state. A client is a local user (uid) or a container (address). Each table remembers at most
//! [`ENTRIES`] keys; past it, keys quiet for an interval are forgotten, and if that is not
//! enough the line is only counted, in a total the summary reports (so that a flood of distinct
//! clients is not written line by line either).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::access::{Decision, Via};
use crate::peer::{Known, Peer};

mod memo;

use memo::Memo;
pub use memo::ServedMemo;

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
    /// The summary at stop is written: what comes later (from a connection that outlived the
    /// drain) is written at once.
    closed: bool,
}

impl Throttle {
    fn len(&self) -> usize {
        self.count
    }

    /// Whether to write this key's line at `now`, and if so how many were held back before it
    /// (with `earlier`: repeats a connection counted on its own, see [`ServedMemo`], added to
    /// the key's count first); `None`: held back (counted).
    fn admit(
        &mut self,
        who: Who,
        role: &str,
        detail: &str,
        user: Option<&str>,
        now: Instant,
        earlier: u64,
    ) -> Admit {
        // After the summary at stop (a connection that outlived the drain): every line.
        if self.closed {
            return Admit::Write { held: earlier };
        }
        let Some((entry, new)) = self.entry(who, role, detail, user, now) else {
            return Admit::Full;
        };
        entry.held += earlier;
        if !new && now.duration_since(entry.written) < INTERVAL {
            entry.held += 1;
            return Admit::HeldBack;
        }
        entry.written = now;
        Admit::Write {
            held: std::mem::take(&mut entry.held),
        }
    }

    /// Adds the repeats a connection counted to their key, for its next line or the summary
    /// (a key forgotten meanwhile is taken again); `false` when the table cannot take them (it
    /// is full, or closed at stop): the caller writes them.
    fn take_over(&mut self, who: Who, memo: &Memo, user: Option<&str>, now: Instant) -> bool {
        if self.closed {
            return false;
        }
        let Some((entry, _)) = self.entry(who, &memo.role, &memo.key, user, now) else {
            return false;
        };
        entry.held += memo.held;
        true
    }

    /// The key's entry, and whether it was made now (written at `now`, nothing held); `None`
    /// when the table is full even after forgetting its quiet keys. Finding a known key
    /// allocates nothing.
    fn entry(
        &mut self,
        who: Who,
        role: &str,
        detail: &str,
        user: Option<&str>,
        now: Instant,
    ) -> Option<(&mut Entry, bool)> {
        let known = (self.entries.get(&who)).and_then(|entries| {
            (entries.iter()).position(|e| e.role == role && e.detail == detail)
        });
        if let Some(at) = known {
            let entries = self.entries.get_mut(&who)?;
            return Some((&mut entries[at], false));
        }
        if self.len() >= ENTRIES {
            self.forget_quiet(now);
        }
        if self.len() >= ENTRIES {
            return None;
        }
        // Most clients ask for one role: room for one entry, not the four a first push makes.
        let entries = (self.entries.entry(who)).or_insert_with(|| Vec::with_capacity(1));
        entries.push(Entry {
            role: role.to_owned(),
            detail: detail.to_owned(),
            user: user.map(str::to_owned),
            written: now,
            held: 0,
        });
        self.count += 1;
        Some((entries.last_mut()?, true))
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

/// The audit: its tables and its line budget, a value the daemon hands to what decides
/// (no process-wide state: tests and in-process daemons each have their own). Std mutexes:
/// held to count, never across an await; a poisoned one is used as it is.
#[derive(Default)]
pub struct Audit {
    served: Mutex<Throttle>,
    refused: Mutex<Throttle>,
    budget: Mutex<Budget>,
    /// Lines folded into counts (`assume_roled_audit_lines_folded_total` when the daemon's).
    folded: Counter,
}

fn lock<T>(table: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    table
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// An optional text as a log field, quoted and escaped: a user name or an executable's path
/// may hold spaces, `=`, quotes or newlines, which must not forge another field or line;
/// `-` when unknown.
struct Quoted<'a>(&'a Option<String>);

impl std::fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(text) => write!(f, "\"{}\"", text.escape_debug()),
            None => f.write_str("-"),
        }
    }
}

/// How many audit lines a minute at most, until the configuration says.
const DEFAULT_LINES_PER_MINUTE: u64 = crate::config::DEFAULT_AUDIT_LINES_PER_MINUTE as u64;

/// The audit's line budget: past `per_minute` lines in a minute, lines are folded into counts
/// by outcome, which one line reports once the minute is over (see [`Budget::take`]).
struct Budget {
    per_minute: u64,
    window: Option<Instant>,
    written: u64,
    folded: [u64; 3],
}

/// What a line reports, for the folded counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Served = 0,
    Refused = 1,
    Unauthorized = 2,
}

impl Default for Budget {
    fn default() -> Self {
        Self::new()
    }
}

impl Budget {
    const fn new() -> Self {
        Self {
            per_minute: DEFAULT_LINES_PER_MINUTE,
            window: None,
            written: 0,
            folded: [0; 3],
        }
    }

    /// Whether a line for `outcome`, standing for `responses` (its own and the repeats it
    /// reports), may be written at `now`; if not, they are counted, so that the folded counts
    /// are of responses, as the lines' are. When a new minute starts, what the last one folded
    /// is returned, to be reported first.
    fn take(&mut self, outcome: Outcome, responses: u64, now: Instant) -> (bool, Option<[u64; 3]>) {
        let fresh = self
            .window
            .is_none_or(|start| now.duration_since(start) >= INTERVAL);
        let mut report = None;
        if fresh {
            self.window = Some(now);
            self.written = 0;
            let folded = std::mem::take(&mut self.folded);
            report = (folded != [0; 3]).then_some(folded);
        }
        if self.written < self.per_minute {
            self.written += 1;
            return (true, report);
        }
        self.folded[outcome as usize] += responses;
        (false, report)
    }

    /// What was folded and not reported yet (at a summary, or at stop).
    fn take_folded(&mut self) -> Option<[u64; 3]> {
        let folded = std::mem::take(&mut self.folded);
        (folded != [0; 3]).then_some(folded)
    }
}

fn report_folded([served, refused, unauthorized]: [u64; 3]) {
    warn!(
        target: "audit", served, refused, unauthorized,
        "audit lines folded: more than audit_lines_per_minute in a minute; counts by outcome"
    );
}

/// Who the audit counts a request under: a uid without an account is nobody in particular, so
/// all of them share one key (a user's 65,536 subordinate uids write one line, not 65,536).
fn who_of(peer: &Peer) -> Who {
    match (peer.uid, &peer.user, peer.container) {
        (Some(_), None, None) => (None, None),
        _ => (peer.uid, peer.container),
    }
}

impl Audit {
    /// An audit that counts the lines it folds into `folded` (the metrics' counter).
    pub fn counting_folds_in(folded: Counter) -> Self {
        Self {
            folded,
            ..Self::default()
        }
    }

    /// Sets the line budget (`[server] audit_lines_per_minute`), at start and at a reload.
    pub fn set_lines_per_minute(&self, per_minute: u64) {
        lock(&self.budget).per_minute = per_minute;
    }

    /// Whether a line for `outcome` fits the budget now; a folded-lines report is written first
    /// when a minute ended with lines folded.
    fn within_budget(&self, outcome: Outcome, responses: u64) -> bool {
        let (allowed, report) = lock(&self.budget).take(outcome, responses, Instant::now());
        if let Some(folded) = report {
            report_folded(folded);
        }
        if !allowed {
            self.folded.inc();
        }
        allowed
    }

    /// Records `decision` about role `role` for `peer`: every set handed out and every refusal by
    /// user or token, a line at once per key and counts for repeats (see the module's
    /// description).
    pub fn record(&self, role: &str, via: Via<'_>, peer: &Peer, decision: &Decision) {
        self.record_with(role, via, peer, decision, 0);
    }

    fn record_with(
        &self,
        role: &str,
        via: Via<'_>,
        peer: &Peer,
        decision: &Decision,
        earlier: u64,
    ) {
        let who = who_of(peer);
        let (uid, user, pid, exe, container) = (
            Known(&peer.uid),
            Quoted(&peer.user),
            Known(&peer.pid),
            Quoted(&peer.exe),
            Known(&peer.container),
        );
        let via = via.label();
        match decision {
            Decision::Served { masked_key_id, .. } => {
                let admitted = lock(&self.served).admit(
                    who,
                    role,
                    masked_key_id,
                    peer.user.as_deref(),
                    Instant::now(),
                    earlier,
                );
                // A full table never costs a served line (the line budget may fold it into the
                // minute's count of served lines), nor the connection's repeats it carries.
                let held = match admitted {
                    Admit::Write { held } => held,
                    Admit::Full => earlier,
                    Admit::HeldBack => return,
                };
                if !self.within_budget(Outcome::Served, 1 + held) {
                    return;
                }
                info!(
                    target: "audit", role = %role,
                    access_key_id = %masked_key_id, uid = %uid, user = %user, pid = %pid,
                    exe = %exe, container = %container, via = %via, held_back = held, outcome = "served",
                    "credentials served"
                );
            }
            Decision::NotAdmitted | Decision::UnknownPeer | Decision::Full(_) => {
                let reason = match decision {
                    Decision::NotAdmitted => "user not allowed for this role",
                    Decision::UnknownPeer => {
                        "the role is served per user, and this user is unknown"
                    }
                    _ => "the role holds its max_sessions; no session for a new user",
                };
                let Some(held) = self.admit_refusal(who, role, reason, Outcome::Refused, peer)
                else {
                    return;
                };
                warn!(
                    target: "audit", role = %role, uid = %uid, user = %user,
                    pid = %pid, exe = %exe, container = %container, via = %via, held_back = held, outcome = "refused",
                    "credentials refused: {reason}"
                );
            }
            // The role here is the request's spelling (a role token asking for another path):
            // never a key or a field.
            Decision::WrongToken => self.unauthorized(None, peer),
            _ => {}
        }
    }

    /// Records a request refused for its token (missing, wrong, or another role's): 401. `role` is
    /// the configured role it asked for, if any (never a name taken from the request as it is).
    pub fn unauthorized(&self, role: Option<&str>, peer: &Peer) {
        let role = role.unwrap_or("-");
        let reason = "no valid token (401)";
        let Some(held) =
            self.admit_refusal(who_of(peer), role, reason, Outcome::Unauthorized, peer)
        else {
            return;
        };
        let (uid, user, exe, container) = (
            Known(&peer.uid),
            Quoted(&peer.user),
            Quoted(&peer.exe),
            Known(&peer.container),
        );
        warn!(
            target: "audit", role = %role, uid = %uid, user = %user,
            exe = %exe, container = %container, held_back = held, outcome = "unauthorized",
            "request refused: {reason}"
        );
    }

    /// Whether a refusal's line is written (with how many were held back before it): once per
    /// (client, role, reason) an interval, within the line budget; otherwise counted.
    fn admit_refusal(
        &self,
        who: Who,
        role: &str,
        reason: &str,
        outcome: Outcome,
        peer: &Peer,
    ) -> Option<u64> {
        let mut refused = lock(&self.refused);
        let held = match refused.admit(who, role, reason, peer.user.as_deref(), Instant::now(), 0) {
            Admit::Write { held } => held,
            Admit::HeldBack => return None,
            // A flood of distinct keys is not written line by line.
            Admit::Full => {
                refused.overflow += 1;
                return None;
            }
        };
        drop(refused);
        self.within_budget(outcome, 1 + held).then_some(held)
    }

    /// Writes what was held back for an interval or more: one line per key, with the count.
    pub fn summarize(&self, now: Instant) {
        if let Some(folded) = lock(&self.budget).take_folded() {
            report_folded(folded);
        }
        // A full table of served keys writes each line (see `record`), and what connections
        // hand over to it then (see `memo`): nothing overflows.
        let (served, _) = lock(&self.served).held(now);
        served.iter().for_each(report_served_again);
        let (refused, overflow) = lock(&self.refused).held(now);
        for held in refused {
            let (uid, user, container) =
                (Known(&held.who.0), Quoted(&held.user), Known(&held.who.1));
            warn!(
                target: "audit", role = %held.role, uid = %uid, user = %user,
                container = %container, reason = %held.detail, count = held.count, outcome = "refused",
                "requests refused again, not written one by one"
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

    /// Calls [`Audit::summarize`] every interval until `stop`. (What is still held back when the daemon
    /// stops is written by [`Audit::summarize_all`], once the last request is answered.)
    pub async fn summarize_every_interval(
        self: std::sync::Arc<Self>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let mut tick = tokio::time::interval(INTERVAL);
        loop {
            tokio::select! {
                _ = tick.tick() => self.summarize(Instant::now()),
                () = stop.cancelled() => return,
            }
        }
    }

    /// Writes everything held back, however recent: at stop, after the drain. A connection
    /// that outlives the drain writes what it still holds itself, when it closes.
    pub fn summarize_all(&self) {
        lock(&self.served).closed = true;
        lock(&self.refused).closed = true;
        self.summarize(Instant::now() + INTERVAL);
    }
}

/// The line for repeats of one served key written as a count.
fn report_served_again(held: &Held) {
    let (uid, user, container) = (Known(&held.who.0), Quoted(&held.user), Known(&held.who.1));
    info!(
        target: "audit", role = %held.role, access_key_id = %held.detail, uid = %uid,
        user = %user, container = %container, count = held.count, outcome = "served",
        "credentials served again, not written one by one"
    );
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
            table.admit(alice, "piyo", "ASIA…1", None, at(start, 0), 0),
            write(0)
        );
        assert_eq!(
            table.admit(alice, "piyo", "ASIA…1", None, at(start, 1), 0),
            Admit::HeldBack
        );
        assert_eq!(
            table.admit(alice, "piyo", "ASIA…1", None, at(start, 59), 0),
            Admit::HeldBack
        );
        assert_eq!(
            table.admit(alice, "piyo", "ASIA…2", None, at(start, 2), 0),
            write(0),
            "new set"
        );
        assert_eq!(
            table.admit(alice, "fuga", "ASIA…1", None, at(start, 2), 0),
            write(0),
            "role"
        );
        let container = (None, Some("172.17.0.2".parse().unwrap()));
        assert_eq!(
            table.admit(container, "piyo", "ASIA…1", None, at(start, 3), 0),
            write(0)
        );
        assert_eq!(
            table.admit(alice, "piyo", "ASIA…1", None, at(start, 60), 0),
            write(2)
        );
        assert_eq!(
            table.admit(alice, "piyo", "ASIA…1", None, at(start, 61), 0),
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
        table.admit(alice, "piyo", "ASIA…1", Some("alice"), start, 0);
        for second in 1..=5 {
            table.admit(alice, "piyo", "ASIA…1", Some("alice"), at(start, second), 0);
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
            table.admit((Some(uid), None), "piyo", "", None, start, 0);
        }
        let repeated = (Some(0), None);
        assert_eq!(
            table.admit(repeated, "piyo", "", None, at(start, 1), 0),
            Admit::HeldBack
        );
        let late = (Some(u32::MAX - 1), None);
        assert_eq!(
            table.admit(late, "piyo", "", None, at(start, 1), 0),
            Admit::Full
        );
        assert_eq!(
            table.admit(late, "piyo", "", None, at(start, 60), 0),
            Admit::Write { held: 0 },
            "the quiet ones are forgotten once an interval old"
        );
        let (held, _) = table.held(at(start, 60));
        let counts: Vec<(Who, u64)> = held.iter().map(|h| (h.who, h.count)).collect();
        assert_eq!(counts, [(repeated, 1)], "a key with repeats held is kept");
    }

    /// What the audit writes for each decision: a line per served set and per refusal
    /// reason, a 401 line for a wrong token, nothing for the rest; repeats counted in the
    /// summary; past the line budget (a reload may change it), lines are folded; a flood of
    /// distinct refused keys is counted, not written.
    #[tokio::test(start_paused = true)]
    async fn each_decision_is_written_once_and_counted() {
        let logs = crate::fake::CapturedLogs::start();
        let audit = Audit::default();
        let alice = Peer {
            uid: Some(1001),
            user: Some("alice".into()),
            ..Peer::default()
        };
        let ecs = Via::Container(None);
        let served = Decision::Served {
            body: bytes::Bytes::new(),
            masked_key_id: std::sync::Arc::from("ASIA…1234"),
        };
        audit.record("piyo", ecs, &alice, &served);
        audit.record("piyo", ecs, &alice, &served);
        assert_eq!(logs.count("INFO", "credentials served"), 1);
        audit.record("piyo", ecs, &alice, &Decision::NotAdmitted);
        audit.record("piyo", ecs, &alice, &Decision::NotAdmitted);
        assert_eq!(
            logs.count("WARN", "credentials refused: user not allowed"),
            1
        );
        audit.record("piyo", ecs, &alice, &Decision::UnknownPeer);
        assert_eq!(logs.count("WARN", "this user is unknown"), 1);
        audit.record("piyo", ecs, &alice, &Decision::WrongToken);
        assert_eq!(
            logs.count("WARN", "request refused: no valid token (401)"),
            1
        );
        audit.unauthorized(Some("piyo"), &alice);
        assert_eq!(
            logs.count("WARN", "no valid token (401)"),
            2,
            "another role: a key"
        );
        for unwritten in [
            Decision::Unknown,
            Decision::Unservable(crate::refresh::Unservable::Uninitialized),
        ] {
            audit.record("piyo", ecs, &alice, &unwritten);
        }
        assert_eq!(logs.count("", " audit: "), 5, "nothing for the rest");
        tokio::time::advance(INTERVAL).await;
        audit.summarize(Instant::now());
        assert_eq!(logs.count("INFO", "credentials served again"), 1);
        assert_eq!(logs.count("INFO", "count=1"), 1);
        assert_eq!(logs.count("WARN", "requests refused again"), 1);
        let too_many = "than the audit remembers";
        assert_eq!(logs.count("", too_many), 0, "no overflow: no line for it");

        audit.set_lines_per_minute(1);
        tokio::time::advance(INTERVAL).await;
        let bob = Peer {
            uid: Some(1002),
            user: Some("bob".into()),
            ..Peer::default()
        };
        audit.record("piyo", ecs, &bob, &served);
        audit.record("piyo", ecs, &bob, &Decision::NotAdmitted);
        assert_eq!(logs.count("INFO", "user=\"bob\""), 1, "one line a minute");
        assert_eq!(logs.count("WARN", "user=\"bob\""), 0, "folded");

        audit.set_lines_per_minute(100_000);
        for uid in 0..=ENTRIES as u32 {
            let nameless = Peer {
                uid: Some(uid),
                user: Some(format!("u{uid}")),
                ..Peer::default()
            };
            audit.record("piyo", ecs, &nameless, &Decision::NotAdmitted);
        }
        tokio::time::advance(INTERVAL).await;
        audit.summarize(Instant::now());
        let overflow = "credentials refused to more distinct users than the audit remembers";
        assert_eq!(logs.count("WARN", overflow), 1);
    }

    /// A value can never look like another field or line: quoted, with quotes, backslashes
    /// and newlines escaped.
    #[test]
    fn values_are_quoted_and_escaped() {
        let forged = Some("/tmp/x uid=0 user=root\nINFO audit: credentials served".to_owned());
        assert_eq!(
            Quoted(&forged).to_string(),
            "\"/tmp/x uid=0 user=root\\nINFO audit: credentials served\""
        );
        let quote = Some("a\" uid=\"0".to_owned());
        assert_eq!(Quoted(&quote).to_string(), "\"a\\\" uid=\\\"0\"");
        assert_eq!(Quoted(&None).to_string(), "-");
    }

    /// Past the budget, lines are folded into counts by outcome (of the responses they stood
    /// for: a line reporting repeats counts them too), reported once the minute is over (or at
    /// a summary); a new minute has its budget again.
    #[test]
    fn the_line_budget_folds_and_reports() {
        let mut budget = Budget::new();
        budget.per_minute = 2;
        let start = Instant::now();
        assert_eq!(budget.take(Outcome::Served, 1, start), (true, None));
        assert_eq!(budget.take(Outcome::Refused, 1, at(start, 1)), (true, None));
        assert_eq!(
            budget.take(Outcome::Refused, 1, at(start, 2)),
            (false, None)
        );
        assert_eq!(
            budget.take(Outcome::Unauthorized, 1, at(start, 3)),
            (false, None)
        );
        assert_eq!(
            budget.take(Outcome::Served, 1, at(start, 60)),
            (true, Some([0, 1, 1])),
            "the next minute reports the last one's"
        );
        assert_eq!(budget.take_folded(), None);
        budget.take(Outcome::Served, 1, at(start, 61));
        budget.take(Outcome::Served, 6, at(start, 62));
        assert_eq!(
            budget.take_folded(),
            Some([6, 0, 0]),
            "a line and its five repeats"
        );
    }

    /// Lines past the budget are counted into the metrics' counter
    /// (`assume_roled_audit_lines_folded_total`), one per line not written.
    #[test]
    fn folded_lines_are_counted_for_the_metrics() {
        let folded = Counter::default();
        let audit = Audit::counting_folds_in(folded.clone());
        audit.set_lines_per_minute(1);
        let bob = Peer {
            uid: Some(1002),
            user: Some("bob".into()),
            ..Peer::default()
        };
        let served = Decision::Served {
            body: bytes::Bytes::new(),
            masked_key_id: std::sync::Arc::from("ASIA…0001"),
        };
        let via = Via::Container(None);
        audit.record("piyo", via, &bob, &served);
        assert_eq!(folded.get(), 0, "within the budget");
        audit.record("piyo", via, &bob, &Decision::NotAdmitted);
        audit.unauthorized(Some("piyo"), &bob);
        assert_eq!(folded.get(), 2);
    }

    /// Each audit is a value of its own: what one records, another does not see; a second
    /// served response of the same key is held back, a refusal has its own table.
    #[test]
    fn each_audit_keeps_its_own_tables() {
        let (one, two) = (Audit::default(), Audit::default());
        let alice = Peer {
            uid: Some(1001),
            user: Some("alice".into()),
            ..Peer::default()
        };
        let served = Decision::Served {
            body: bytes::Bytes::new(),
            masked_key_id: std::sync::Arc::from("ASIA…0001"),
        };
        let via = Via::Container(None);
        one.record("piyo", via, &alice, &served);
        one.record("piyo", via, &alice, &served);
        one.record("piyo", via, &alice, &Decision::NotAdmitted);
        assert_eq!(lock(&one.served).len(), 1);
        assert_eq!(lock(&one.refused).len(), 1);
        assert_eq!(lock(&two.served).len() + lock(&two.refused).len(), 0);
    }

    /// Every uid without an account is one client for the audit.
    #[test]
    fn uids_without_an_account_share_a_key() {
        let nameless = |uid| Peer {
            uid: Some(uid),
            ..Peer::default()
        };
        assert_eq!(who_of(&nameless(300_000)), who_of(&nameless(300_001)));
        let alice = Peer {
            uid: Some(1001),
            user: Some("alice".into()),
            ..Peer::default()
        };
        assert_eq!(who_of(&alice), (Some(1001), None));
    }
}
