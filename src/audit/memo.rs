//! A connection's own count of the credentials it is served again and again: a keep-alive
//! client asking at full speed would otherwise take the audit's lock and hash its key on every
//! request (about 400 instructions of the 10,300 a request costs; README, Benchmarks). The
//! lines are the same: the table still decides every line, it only hears of a connection's
//! repeats once an interval, or when the connection closes.

use std::sync::Arc;

use std::time::SystemTime;

use tokio::time::Instant;

use super::{Audit, INTERVAL, lock, who_of};
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
}

pub(super) struct Memo {
    pub(super) role: Box<str>,
    /// The set's masked key id, as the credentials hold it: the same set is the same `Arc`.
    pub(super) key: Arc<str>,
    /// When the audit's table last took this key from this connection, by the request's
    /// wall clock (the table keeps its own time: a clock step only hands repeats over early).
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
        let Decision::Served { masked_key_id, .. } = decision else {
            return self.record(role, via, peer, decision);
        };
        if let Some(last) = &mut memo.last
            && last.is(role, masked_key_id)
            && (now.duration_since(last.since)).is_ok_and(|since| since < INTERVAL)
        {
            last.held += 1;
            return;
        }
        let earlier = match memo.last.take() {
            Some(last) if last.is(role, masked_key_id) => last.held,
            Some(other) => {
                self.fold(peer, &other);
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

    /// The connection of `memo` is closing: what it counted goes to the table, for the summary.
    pub fn close(&self, memo: &mut ServedMemo, peer: &Peer) {
        if let Some(last) = memo.last.take() {
            self.fold(peer, &last);
        }
    }

    fn fold(&self, peer: &Peer, memo: &Memo) {
        if memo.held > 0 {
            let user = peer.user.as_deref();
            lock(&self.served).fold_in(who_of(peer), memo, user, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection's repeats are counted in its memo, with the table untouched; they reach the
    /// table at its next look after the interval (in that line's held_back) or when it closes
    /// (in the summary); another set, or another role, goes to the table at once.
    #[tokio::test(start_paused = true)]
    async fn a_connections_repeats_are_counted_on_the_connection() {
        let logs = crate::fake::CapturedLogs::start();
        let audit = Audit::default();
        let alice = Peer {
            uid: Some(1001),
            user: Some("alice".into()),
            ..Peer::default()
        };
        let key: Arc<str> = Arc::from("ASIA…0001");
        let served = Decision::Served {
            body: bytes::Bytes::new(),
            masked_key_id: key.clone(),
        };
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
        let alice = Peer {
            uid: Some(1001),
            ..Peer::default()
        };
        let served = |key: &str| Decision::Served {
            body: bytes::Bytes::new(),
            masked_key_id: Arc::from(key),
        };
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
}
