//! A connection's own count of the credentials it is served again and again: a keep-alive
//! client asking at full speed would otherwise take the audit's lock and hash its key on every
//! request (about 400 instructions of the 10,300 a request costs; README, Benchmarks). The
//! table still decides every line; it hears of a connection's repeats at its first request an
//! interval after the last hand-over (whatever it asks: asking for something else in between
//! does not keep them back), at a new set or role, and when the connection closes. So a
//! repeat is in a line or a summary within three intervals instead of two; where the table
//! cannot take them (full, or its summary at stop already written), they are written at once.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::time::Instant;

use super::{Audit, Held, INTERVAL, lock, report_served_again, who_of};
use crate::access::{Decision, Via};
use crate::peer::Peer;

/// One connection's memory of the set it was last served and audited: while the same role's
/// same set is served again within the interval, the repeats are counted here, with no lock or
/// hash (a keep-alive client asking at full speed costs the audit nothing but a clock read),
/// and handed to the audit's table at the next look after the interval or when the
/// connection closes ([`Audit::close`]). What the lines say is unchanged: one line at once per
/// key, then the counts held back.
#[derive(Default)]
pub struct ServedMemo {
    last: Option<Memo>,
    /// The request being answered went through [`Audit::record_on`].
    recorded: bool,
}

pub(super) struct Memo {
    pub(super) role: Box<str>,
    /// The set's masked key id, as the credentials hold it: the same set is the same `Arc`.
    pub(super) key: Arc<str>,
    /// When the audit's table last heard of this key from this connection (a line, a repeat
    /// it held back, or a hand-over), by the request's wall clock (the table keeps its own
    /// time: a clock step only hands repeats over early).
    since: SystemTime,
    /// Served since then, not yet in the table.
    pub(super) held: u64,
}

impl Memo {
    fn is(&self, role: &str, key: &Arc<str>) -> bool {
        Arc::ptr_eq(&self.key, key) && &*self.role == role
    }
}

impl Audit {
    /// Like [`Audit::record`], for a connection that keeps `memo`: a served set it was served
    /// within the interval is counted in the memo alone.
    pub fn record_on(
        &self,
        memo: &mut ServedMemo,
        role: &str,
        via: Via<'_>,
        peer: &Peer,
        decision: &Decision,
        now: SystemTime,
    ) {
        memo.recorded = true;
        let Decision::Served { masked_key_id, .. } = decision else {
            return self.record(role, via, peer, decision);
        };
        if let Some(last) = &mut memo.last
            && last.is(role, masked_key_id)
            && within_interval(last.since, now)
        {
            last.held += 1;
            return;
        }
        let earlier = match memo.last.take() {
            Some(last) if last.is(role, masked_key_id) => last.held,
            Some(other) => {
                self.hand_over(peer, &other);
                0
            }
            None => 0,
        };
        self.record_with(role, via, peer, decision, earlier);
        memo.last = Some(Memo {
            role: role.into(),
            key: masked_key_id.clone(),
            since: now,
            held: 0,
        });
    }

    /// After each request of the connection: one that was not recorded through `memo` (the
    /// router's, a refusal, anything else) hands its repeats over once they are an interval
    /// old, so that a client cannot keep them from the audit by asking for something else in
    /// between. The clock is read only then.
    pub fn after_request(
        &self,
        memo: &mut ServedMemo,
        peer: &Peer,
        now: impl FnOnce() -> SystemTime,
    ) {
        if std::mem::take(&mut memo.recorded) {
            return;
        }
        let Some(last) = memo.last.as_mut().filter(|last| last.held > 0) else {
            return;
        };
        let now = now();
        if !within_interval(last.since, now) {
            self.hand_over(peer, last);
            (last.held, last.since) = (0, now);
        }
    }

    /// The connection of `memo` is closing: what it counted goes to the table, for the summary.
    pub fn close(&self, memo: &mut ServedMemo, peer: &Peer) {
        if let Some(last) = memo.last.take() {
            self.hand_over(peer, &last);
        }
    }

    /// `memo`'s repeats to the table, or, where it cannot take them, into a line at once.
    fn hand_over(&self, peer: &Peer, memo: &Memo) {
        if memo.held == 0 {
            return;
        }
        let (who, user) = (who_of(peer), peer.user.as_deref());
        if lock(&self.served).take_over(who, memo, user, Instant::now()) {
            return;
        }
        report_served_again(&Held {
            who,
            role: memo.role.to_string(),
            detail: memo.key.to_string(),
            user: user.map(str::to_owned),
            count: memo.held,
        });
    }
}

/// Whether `now` is less than an interval after `since` (and not before it: a clock stepped
/// back hands the repeats over). Pure.
fn within_interval(since: SystemTime, now: SystemTime) -> bool {
    (now.duration_since(since)).is_ok_and(|elapsed| elapsed < INTERVAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Peer {
        Peer {
            uid: Some(1001),
            user: Some("alice".into()),
            ..Peer::default()
        }
    }

    fn served(key: &str) -> Decision {
        Decision::Served {
            body: bytes::Bytes::new(),
            masked_key_id: Arc::from(key),
        }
    }

    /// A connection's repeats are counted in its memo, with the table untouched; they reach the
    /// table at its next look after the interval (in that line's held_back) or when it closes
    /// (in the summary); another set, or another role, goes to the table at once.
    #[tokio::test(start_paused = true)]
    async fn a_connections_repeats_are_counted_on_the_connection() {
        let logs = crate::fake::CapturedLogs::start();
        let audit = Audit::default();
        let alice = alice();
        let served = served("ASIA…0001");
        let via = Via::Container(None);
        let (mut memo, start) = (ServedMemo::default(), SystemTime::now());
        audit.record_on(&mut memo, "piyo", via, &alice, &served, start);
        for _ in 0..5 {
            audit.record_on(&mut memo, "piyo", via, &alice, &served, start);
        }
        assert_eq!(logs.count("INFO", "credentials served"), 1);
        let held_in_table = |audit: &Audit| -> u64 {
            let table = lock(&audit.served);
            table.entries.values().flatten().map(|e| e.held).sum()
        };
        assert_eq!(
            held_in_table(&audit),
            0,
            "the repeats stay on the connection"
        );
        assert_eq!(memo.last.as_ref().unwrap().held, 5);

        tokio::time::advance(INTERVAL).await;
        audit.record_on(&mut memo, "piyo", via, &alice, &served, start + INTERVAL);
        assert_eq!(
            logs.count("INFO", "held_back=5"),
            1,
            "the next line counts them"
        );
        audit.record_on(&mut memo, "piyo", via, &alice, &served, start + INTERVAL);
        audit.record_on(&mut memo, "piyo", via, &alice, &served, start + INTERVAL);
        audit.close(&mut memo, &alice);
        assert_eq!(held_in_table(&audit), 2, "closing hands them over");
        audit.summarize_all();
        assert_eq!(logs.count("INFO", "count=2"), 1);
    }

    /// A new set (a refresh) or another role is the table's at once: its line is written, and
    /// what the connection counted of the set before is handed over.
    #[tokio::test(start_paused = true)]
    async fn a_new_set_hands_over_the_repeats_of_the_one_before() {
        let logs = crate::fake::CapturedLogs::start();
        let audit = Audit::default();
        let alice = alice();
        let (before, after) = (served("ASIA…0001"), served("ASIA…0002"));
        let (via, mut memo) = (Via::Container(None), ServedMemo::default());
        let start = SystemTime::now();
        for _ in 0..3 {
            audit.record_on(&mut memo, "piyo", via, &alice, &before, start);
        }
        audit.record_on(&mut memo, "piyo", via, &alice, &after, start);
        assert_eq!(
            logs.count("INFO", "credentials served"),
            2,
            "the new set's line"
        );
        let table = lock(&audit.served);
        let held: Vec<_> = (table.entries.values().flatten())
            .map(|e| (e.detail.as_str(), e.held))
            .collect();
        assert_eq!(held, [("ASIA…0001", 2), ("ASIA…0002", 0)]);
        drop(table);
        audit.record_on(&mut memo, "other", via, &alice, &after, start);
        assert_eq!(
            logs.count("INFO", "credentials served"),
            3,
            "another role's line"
        );
    }

    /// Asking for something else in between does not keep the repeats from the table: the
    /// first request an interval after the last hand-over, whatever it is, hands them over.
    #[tokio::test(start_paused = true)]
    async fn other_requests_hand_the_repeats_over_once_an_interval() {
        let audit = Audit::default();
        let alice = alice();
        let served = served("ASIA…0001");
        let (via, mut memo) = (Via::Container(None), ServedMemo::default());
        let start = SystemTime::now();
        let at = |seconds| start + std::time::Duration::from_secs(seconds);
        for _ in 0..4 {
            audit.record_on(&mut memo, "piyo", via, &alice, &served, start);
            audit.after_request(&mut memo, &alice, || unreachable!("a recorded request"));
        }
        let held_in_table = |audit: &Audit| -> u64 {
            let table = lock(&audit.served);
            table.entries.values().flatten().map(|e| e.held).sum()
        };
        audit.after_request(&mut memo, &alice, || at(59));
        assert_eq!(held_in_table(&audit), 0, "not an interval yet");
        audit.after_request(&mut memo, &alice, || at(60));
        assert_eq!(
            held_in_table(&audit),
            3,
            "handed over by a request for something else"
        );
        audit.after_request(&mut memo, &alice, || at(200));
        assert_eq!(held_in_table(&audit), 3, "nothing more to hand over");
    }

    /// A full table cannot take a connection's repeats: they are written at once, in a line of
    /// their own, and a new set's line carries those of the set before.
    #[tokio::test(start_paused = true)]
    async fn repeats_a_full_table_cannot_take_are_written() {
        let logs = crate::fake::CapturedLogs::start();
        let audit = Audit::default();
        // Every line of the full table written, none folded by the line budget.
        audit.set_lines_per_minute(100_000);
        let via = Via::Container(None);
        for uid in 2000..2000 + super::super::ENTRIES as u32 {
            let peer = Peer {
                uid: Some(uid),
                user: Some(format!("user{uid}")),
                ..Peer::default()
            };
            audit.record(&format!("role{uid}"), via, &peer, &served("ASIA…0000"));
        }
        let alice = alice();
        let (before, after) = (served("ASIA…0001"), served("ASIA…0002"));
        let (mut memo, start) = (ServedMemo::default(), SystemTime::now());
        for _ in 0..3 {
            audit.record_on(&mut memo, "piyo", via, &alice, &before, start);
        }
        audit.record_on(&mut memo, "piyo", via, &alice, &after, start);
        let again = "credentials served again";
        assert_eq!(logs.count("INFO", again), 1, "the first set's two repeats");
        assert_eq!(logs.count("INFO", "count=2"), 1);
        audit.record_on(&mut memo, "piyo", via, &alice, &after, start);
        let later = start + INTERVAL;
        audit.record_on(&mut memo, "piyo", via, &alice, &after, later);
        assert_eq!(
            logs.count("INFO", "held_back=1"),
            1,
            "the line carries the repeat"
        );
    }
}
