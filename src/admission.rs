//! Who may hold the daemon's connections: a fair share of `max_connections` for every holder,
//! so that no local user (however many kernel uids they control) can crowd out the others.
//!
//! A holder is a local user with an account, a container (by address, an IPv6 one by its /64),
//! or one of two shared holders: every uid the name service does not know (a user's
//! subordinate uids, 65,536 of them under rootless Podman, count as one), and every client
//! whose user could not be found at all. Each holder may hold `max_connections_per_user`.
//! Below `max_connections` every connection within that is admitted. At `max_connections`, a
//! new connection of a holder holding less than the fair share (`max_connections` divided by
//! the holders holding connections, the newcomer included) is admitted by closing an idle
//! connection of the holder holding the most; only when nobody is over the fair share, or the
//! biggest holder has no idle connection, is the newcomer refused. The decision is pure
//! ([`verdict`]); [`Holders`] keeps the table and closes the connections it picks.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::peer::Peer;

/// Whose connections are counted together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Holder {
    /// A local user with an account.
    User(u32),
    /// A container, by address (an IPv6 one by its /64).
    Container(IpAddr),
    /// Every uid the name service does not know, together.
    Unnamed,
    /// Every client whose user could not be found (no sock_diag, no /proc), together.
    Unknown,
}

impl Holder {
    /// The holder of a connection from `peer`.
    pub fn of(peer: &Peer) -> Self {
        match (peer.uid, &peer.user, peer.container) {
            (Some(uid), Some(_), _) => Holder::User(uid),
            (Some(_), None, _) => Holder::Unnamed,
            (None, _, Some(address)) => Holder::Container(per_network(address)),
            (None, _, None) => Holder::Unknown,
        }
    }
}

/// An IPv6 container is counted by its /64: one interface may hold any address of it.
fn per_network(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
    }
}

/// What a new connection of a holder gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A place.
    Admit,
    /// A place, made by closing an idle connection of this holder (who holds the most).
    AdmitClosingOneOf(Holder),
    /// The holder holds `max_connections_per_user` already.
    HolderFull,
    /// Every place is taken and nobody holds more than the fair share.
    AllTaken,
}

/// The limits admission works with.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections held at once, by everyone.
    pub total: usize,
    /// Connections one holder may hold.
    pub per_holder: usize,
}

/// What a new connection of `holder` gets, where `held` says how many each holder holds.
/// Pure.
pub fn verdict(held: &HashMap<Holder, usize>, holder: Holder, limits: Limits) -> Verdict {
    let own = held.get(&holder).copied().unwrap_or(0);
    if own >= limits.per_holder {
        return Verdict::HolderFull;
    }
    let total: usize = held.values().sum();
    if total < limits.total {
        return Verdict::Admit;
    }
    if own >= fair_share(held, holder, limits) {
        return Verdict::AllTaken;
    }
    match over_fair_share(held, holder, limits).first() {
        Some(victim) => Verdict::AdmitClosingOneOf(*victim),
        None => Verdict::AllTaken,
    }
}

/// `max_connections` divided by the holders holding connections, `holder` included.
fn fair_share(held: &HashMap<Holder, usize>, holder: Holder, limits: Limits) -> usize {
    let holders = held.len() + usize::from(!held.contains_key(&holder));
    limits.total / holders.max(1)
}

/// The holders other than `holder` holding more than the fair share, the biggest first (of
/// equals, the smallest key, so that the choice does not depend on the map's order). Pure.
pub fn over_fair_share(
    held: &HashMap<Holder, usize>,
    holder: Holder,
    limits: Limits,
) -> Vec<Holder> {
    let share = fair_share(held, holder, limits);
    let mut over: Vec<(Holder, usize)> = held
        .iter()
        .filter(|(other, count)| **other != holder && **count > share)
        .map(|(other, count)| (*other, *count))
        .collect();
    over.sort_by(|(a, x), (b, y)| y.cmp(x).then_with(|| key(a).cmp(&key(b))));
    over.into_iter().map(|(other, _)| other).collect()
}

/// A total order on holders, for ties.
fn key(holder: &Holder) -> (u8, u128) {
    match holder {
        Holder::User(uid) => (0, u128::from(*uid)),
        Holder::Container(IpAddr::V4(v4)) => (1, u128::from(u32::from(*v4))),
        Holder::Container(IpAddr::V6(v6)) => (1, u128::from(*v6)),
        Holder::Unnamed => (2, 0),
        Holder::Unknown => (3, 0),
    }
}

/// Whether a connection has an answer in the works (only idle ones are closed to make room).
pub type Busy = Arc<dyn Fn() -> bool + Send + Sync>;

/// One admitted connection as the table sees it.
struct Held {
    id: u64,
    busy: Busy,
    /// Cancelled to close it.
    close: CancellationToken,
}

/// The connections each holder holds. A std mutex: held to decide, never across an await.
pub struct Holders {
    limits: Limits,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    by_holder: HashMap<Holder, Vec<Held>>,
    counts: HashMap<Holder, usize>,
    next_id: u64,
}

/// A connection's place; given back when dropped. Its [`Place::closing`] token is cancelled
/// when admission closes it to make room for another holder's connection.
pub struct Place {
    holders: Arc<Holders>,
    holder: Holder,
    id: u64,
    closing: CancellationToken,
}

impl Place {
    /// Cancelled when this connection is to be closed to make room (or at a stop: a child of
    /// the token [`Holders::enter`] was given).
    pub fn closing(&self) -> &CancellationToken {
        &self.closing
    }
}

/// Why a new connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Its holder holds `max_connections_per_user`.
    HolderFull,
    /// Every place is taken, fairly.
    AllTaken,
}

impl Holders {
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            table: Mutex::new(Table::default()),
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A place for a new connection of `holder` (see the module's description), and whether
    /// another holder's idle connection was closed for it.
    pub fn enter(
        self: &Arc<Self>,
        holder: Holder,
        busy: Busy,
        parent: &CancellationToken,
    ) -> Result<(Place, bool), Refused> {
        let mut table = self.table();
        let mut closed_one = false;
        match verdict(&table.counts, holder, self.limits) {
            Verdict::Admit => {}
            Verdict::HolderFull => return Err(Refused::HolderFull),
            Verdict::AllTaken => return Err(Refused::AllTaken),
            // The biggest holder over the fair share first; if all of its connections are
            // busy, the next one over it.
            Verdict::AdmitClosingOneOf(_) => {
                let over = over_fair_share(&table.counts, holder, self.limits);
                if !over.into_iter().any(|victim| table.close_idle(victim)) {
                    return Err(Refused::AllTaken);
                }
                closed_one = true;
            }
        }
        let id = table.next_id;
        table.next_id += 1;
        let closing = parent.child_token();
        table.by_holder.entry(holder).or_default().push(Held {
            id,
            busy,
            close: closing.clone(),
        });
        *table.counts.entry(holder).or_insert(0) += 1;
        let place = Place {
            holders: self.clone(),
            holder,
            id,
            closing,
        };
        Ok((place, closed_one))
    }
}

impl Table {
    /// Closes one idle connection of `holder` and takes it off the table; whether there was one.
    fn close_idle(&mut self, holder: Holder) -> bool {
        let Some(held) = self.by_holder.get_mut(&holder) else {
            return false;
        };
        let idle = held.iter().position(|h| !(h.busy)());
        let Some(index) = idle else {
            return false;
        };
        held.swap_remove(index).close.cancel();
        self.forget(holder, None);
        true
    }

    /// One connection of `holder` fewer; with `id`, that one leaves the list too.
    fn forget(&mut self, holder: Holder, id: Option<u64>) {
        if let Some(id) = id
            && let Some(held) = self.by_holder.get_mut(&holder)
        {
            let Some(index) = held.iter().position(|h| h.id == id) else {
                // Already taken off when it was closed to make room.
                return;
            };
            held.swap_remove(index);
        }
        if let Some(count) = self.counts.get_mut(&holder) {
            *count -= 1;
            if *count == 0 {
                self.counts.remove(&holder);
                self.by_holder.remove(&holder);
            }
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.holders.table().forget(self.holder, Some(self.id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Of holders equally far over the fair share, the order is the holders' own (users by uid,
    /// then containers by address, then the unnamed), not the map's.
    #[test]
    fn ties_over_the_fair_share_go_by_holder() {
        let container = Holder::Container("172.17.0.2".parse().unwrap());
        let held: HashMap<Holder, usize> = [
            (Holder::Unnamed, 5),
            (Holder::User(1002), 5),
            (container, 5),
            (Holder::User(1001), 5),
            (Holder::User(1003), 6),
        ]
        .into();
        let limits = Limits {
            total: 8,
            per_holder: 8,
        };
        let over = over_fair_share(&held, Holder::User(7), limits);
        let expected = [
            Holder::User(1003),
            Holder::User(1001),
            Holder::User(1002),
            container,
            Holder::Unnamed,
        ];
        assert_eq!(over, expected);
    }

    const LIMITS: Limits = Limits {
        total: 10,
        per_holder: 4,
    };

    fn held(pairs: &[(Holder, usize)]) -> HashMap<Holder, usize> {
        pairs.iter().copied().collect()
    }

    #[test]
    fn verdicts() {
        let (alice, bob, carol) = (Holder::User(1000), Holder::User(1001), Holder::User(1002));
        assert_eq!(verdict(&held(&[]), alice, LIMITS), Verdict::Admit);
        assert_eq!(
            verdict(&held(&[(alice, 4)]), alice, LIMITS),
            Verdict::HolderFull
        );
        assert_eq!(
            verdict(&held(&[(alice, 3), (bob, 4)]), alice, LIMITS),
            Verdict::Admit
        );
        // Full: 4 + 4 + 2. Carol holds nothing, under the fair share (10 / 3 = 3): a place is
        // made from the biggest holder (alice and bob tie; the smaller uid).
        let full = held(&[(alice, 4), (bob, 4), (Holder::Unnamed, 2)]);
        assert_eq!(
            verdict(&full, carol, LIMITS),
            Verdict::AdmitClosingOneOf(alice)
        );
        // The unnamed holder (2) is under its fair share (10 / 3 = 3) too.
        assert_eq!(
            verdict(&full, Holder::Unnamed, LIMITS),
            Verdict::AdmitClosingOneOf(alice)
        );
        // Alice at her own limit gets nothing, however the others stand.
        assert_eq!(verdict(&full, alice, LIMITS), Verdict::HolderFull);
        let even = held(&[(alice, 3), (bob, 3), (carol, 4)]);
        assert_eq!(verdict(&even, alice, LIMITS), Verdict::AllTaken);
        // A fourth holder: fair share 10 / 4 = 2, and carol holds 4.
        let dave = Holder::User(1003);
        assert_eq!(
            verdict(&even, dave, LIMITS),
            Verdict::AdmitClosingOneOf(carol)
        );
        let shared = held(&[(alice, 5), (bob, 5)]);
        let tight = Limits {
            total: 10,
            per_holder: 10,
        };
        // Fair share 10 / 3 = 3: both are over it; the tie goes to the smaller uid.
        assert_eq!(
            verdict(&shared, carol, tight),
            Verdict::AdmitClosingOneOf(alice)
        );
    }

    #[test]
    fn holders_of_peers() {
        let named = Peer {
            uid: Some(1000),
            user: Some("alice".into()),
            ..Peer::default()
        };
        assert_eq!(Holder::of(&named), Holder::User(1000));
        let subordinate = |uid| Peer {
            uid: Some(uid),
            ..Peer::default()
        };
        assert_eq!(Holder::of(&subordinate(300_000)), Holder::Unnamed);
        assert_eq!(
            Holder::of(&subordinate(300_001)),
            Holder::of(&subordinate(300_000)),
            "every uid without an account is one holder"
        );
        let container = |address: &str| Peer::container(address.parse().unwrap());
        assert_eq!(
            Holder::of(&container("fd00:1::5")),
            Holder::of(&container("fd00:1::ffff:1")),
            "one IPv6 /64 is one holder"
        );
        assert_eq!(Holder::of(&Peer::default()), Holder::Unknown);
    }

    /// The table admits, refuses, closes an idle connection of the biggest holder for a newcomer
    /// (never a busy one), and gives places back when they are dropped.
    #[test]
    fn the_table_makes_room_fairly() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let holders = Holders::new(Limits {
            total: 4,
            per_holder: 3,
        });
        let stop = CancellationToken::new();
        let (alice, bob, carol) = (Holder::User(1000), Holder::User(1001), Holder::User(1002));
        let flags: Vec<Arc<AtomicBool>> = (0..3).map(|_| Arc::new(AtomicBool::new(true))).collect();
        let busy = |flag: &Arc<AtomicBool>| -> Busy {
            let flag = flag.clone();
            Arc::new(move || flag.load(Ordering::Relaxed))
        };
        let idle: Busy = Arc::new(|| false);
        let mut alices: Vec<Place> = flags
            .iter()
            .map(|flag| holders.enter(alice, busy(flag), &stop).unwrap().0)
            .collect();
        let refused = holders.enter(alice, idle.clone(), &stop).err();
        assert_eq!(refused, Some(Refused::HolderFull));
        let (bobs, closed) = holders.enter(bob, idle.clone(), &stop).unwrap();
        assert!(!closed);
        // Full (3 + 1). Carol: fair share 4 / 3 = 1, she holds 0; alice holds 3 > 1.
        assert_eq!(
            holders.enter(carol, idle.clone(), &stop).err(),
            Some(Refused::AllTaken),
            "alice's connections are all busy"
        );
        flags[1].store(false, Ordering::Relaxed);
        let (carols, closed) = holders.enter(carol, idle.clone(), &stop).unwrap();
        assert_eq!(
            over_fair_share(&holders.table().counts, Holder::User(1003), holders.limits),
            [alice],
            "of the holders over the fair share, alice is the biggest"
        );
        assert!(closed);
        assert!(alices[1].closing().is_cancelled(), "the idle one is closed");
        assert!(!alices[0].closing().is_cancelled());
        // The closed connection's place, dropped when it ends, gives nothing back twice.
        drop(alices.remove(1));
        assert_eq!(holders.table().counts.values().sum::<usize>(), 4);
        drop((bobs, carols));
        assert!(holders.enter(bob, idle, &stop).is_ok());
        stop.cancel();
        assert!(
            alices[0].closing().is_cancelled(),
            "a stop closes every place"
        );
    }
}
