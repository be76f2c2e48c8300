//! Per-user sessions with a fake STS and paused time: one STS call per user however many of
//! their requests arrive at once, idle sessions dropped, `max_sessions` enforced, unknown and
//! refused users cost no STS call.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::access::{self, Decision, Grant, Via};
use crate::fake::{FakeClock, FakeSts, HOUR, per_user_role};
use crate::metrics::Metrics;
use crate::peer::Peer;
use crate::refresh::Seams;
use crate::roles::{RoleTable, Sessions};
use crate::supervisor::Supervisor;
use crate::token::RoleTokens;

/// A daemon's worth of a role served per user (`max_sessions` at most), without the HTTP.
struct Harness {
    sts: Arc<FakeSts>,
    clock: Arc<FakeClock>,
    table: watch::Receiver<Arc<RoleTable>>,
    supervisor: Supervisor<FakeSts>,
}

impl Harness {
    fn start(max_sessions: usize, allowed_users: &[&str]) -> Self {
        let clock = FakeClock::new();
        let sts = FakeSts::new(clock.clone(), vec![]);
        let mut role = per_user_role("piyo", max_sessions);
        role.allowed_users = allowed_users.iter().map(|u| u.to_string()).collect();
        let seams = Seams {
            sts: sts.clone(),
            clock: clock.clone(),
            metrics: Arc::new(Metrics::new()),
        };
        let (supervisor, table) = Supervisor::start(
            &[role],
            &RoleTokens::new(),
            seams,
            None,
            CancellationToken::new(),
        );
        Self {
            sts,
            clock,
            table,
            supervisor,
        }
    }

    async fn ask(&self, peer: &Peer) -> Decision {
        let table = self.table.borrow().clone();
        let via = Via::Container(Some(&Grant::Server));
        decide(&table, "piyo", via, peer, self.clock.as_ref()).await
    }

    fn live(&self) -> usize {
        match &self.table.borrow()["piyo"].sessions {
            Sessions::PerUser(sessions) => sessions.len(),
            Sessions::Shared(_) => panic!("the role is served per user"),
        }
    }
}

fn user(uid: u32, name: &str) -> Peer {
    Peer {
        uid: Some(uid),
        user: Some(name.to_owned()),
        ..Peer::default()
    }
}

fn key_of(decision: &Decision) -> &str {
    match decision {
        Decision::Served { masked_key_id, .. } => masked_key_id,
        other => panic!("not served: {other:?}"),
    }
}

/// A hundred concurrent first requests of one user start one session: one STS call, one set.
/// Another user gets a session (and keys) of their own, named after them.
#[tokio::test(start_paused = true)]
async fn one_sts_call_per_user_however_many_ask() {
    let harness = Harness::start(256, &[]);
    assert_eq!(harness.sts.calls(), 0, "nothing before the first request");
    let alice = user(1001, "alice");
    let mut asks = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let (table, clock, alice) = (
            harness.table.borrow().clone(),
            harness.clock.clone(),
            alice.clone(),
        );
        asks.spawn(async move {
            let via = Via::Container(Some(&Grant::Server));
            decide(&table, "piyo", via, &alice, clock.as_ref()).await
        });
    }
    let decisions = asks.join_all().await;
    let first = key_of(&decisions[0]).to_owned();
    assert!(decisions.iter().all(|d| key_of(d) == first));
    assert_eq!(harness.sts.calls(), 1);

    let bob = harness.ask(&user(1002, "bob")).await;
    assert_ne!(key_of(&bob), first, "each user has their own keys");
    assert_eq!(harness.sts.calls(), 2);
    assert_eq!(harness.sts.session_params(), ["alice@test", "bob@test"]);
    assert_eq!(harness.live(), 2);
    harness.supervisor.wait().await.unwrap();
}

/// A session unused for twice the session length is dropped (its refresher stops: no more STS
/// calls); a used one is kept and refreshed.
#[tokio::test(start_paused = true)]
async fn idle_sessions_are_dropped() {
    let harness = Harness::start(256, &[]);
    let (alice, bob) = (user(1001, "alice"), user(1002, "bob"));
    key_of(&harness.ask(&alice).await);
    key_of(&harness.ask(&bob).await);
    // Bob keeps asking every 30 minutes for five hours; Alice never again.
    for _ in 0..10 {
        tokio::time::sleep(HOUR / 2).await;
        key_of(&harness.ask(&bob).await);
    }
    assert_eq!(harness.live(), 1, "alice's session was dropped");
    let calls = harness.sts.calls();
    let names = harness.sts.session_params();
    let alice_calls = names.iter().filter(|n| *n == "alice@test").count();
    // Alice's session was refreshed while it lived (about every 30 minutes for 2 hours), then
    // stopped; Bob's was refreshed all along.
    assert!((3..=6).contains(&alice_calls), "{names:?}");
    tokio::time::sleep(3 * HOUR).await;
    let later = harness.sts.session_params()[names.len()..].to_vec();
    assert!(later.iter().all(|n| n == "bob@test"), "{later:?}");
    assert!(harness.sts.calls() > calls, "bob's session still lives");
    harness.supervisor.wait().await.unwrap();
}

/// At most `max_sessions` users at once: the next gets `Full` (no STS call) until an idle
/// session is dropped.
#[tokio::test(start_paused = true)]
async fn max_sessions_is_enforced() {
    let harness = Harness::start(2, &[]);
    key_of(&harness.ask(&user(1001, "alice")).await);
    key_of(&harness.ask(&user(1002, "bob")).await);
    let carol = user(1003, "carol");
    let refused = harness.ask(&carol).await;
    assert!(
        matches!(refused, Decision::Full(full) if full.limit == 2),
        "{refused:?}"
    );
    assert_eq!(harness.sts.calls(), 2);
    key_of(&harness.ask(&user(1001, "alice")).await);
    tokio::time::sleep(2 * HOUR + Duration::from_secs(120)).await;
    key_of(&harness.ask(&carol).await);
    assert_eq!(harness.live(), 1, "only carol's, the others idled out");
    harness.supervisor.wait().await.unwrap();
}

/// Lowering `max_sessions` by a reload keeps the live sessions (served, no STS call) and
/// refuses new users until enough of them idle out.
#[tokio::test(start_paused = true)]
async fn a_lowered_max_sessions_applies_to_new_users() {
    let mut harness = Harness::start(3, &[]);
    for (uid, name) in [(1001, "alice"), (1002, "bob"), (1003, "carol")] {
        key_of(&harness.ask(&user(uid, name)).await);
    }
    harness
        .supervisor
        .apply(&[per_user_role("piyo", 1)], &RoleTokens::new());
    key_of(&harness.ask(&user(1001, "alice")).await);
    assert_eq!(harness.sts.calls(), 3, "the live sessions are kept");
    let dave = user(1004, "dave");
    let refused = harness.ask(&dave).await;
    assert!(
        matches!(refused, Decision::Full(full) if full.limit == 1),
        "{refused:?}"
    );
    assert_eq!(harness.live(), 3);
    tokio::time::sleep(2 * HOUR + Duration::from_secs(120)).await;
    key_of(&harness.ask(&dave).await);
    assert_eq!(harness.live(), 1, "only dave's, the others idled out");
    harness.supervisor.wait().await.unwrap();
}

/// Nobody gets a session without a known uid and account, or when the role does not admit
/// them; none of these costs an STS call.
#[tokio::test(start_paused = true)]
async fn unknown_and_refused_users_cost_nothing() {
    let open = Harness::start(256, &[]);
    assert_eq!(open.ask(&Peer::default()).await, Decision::UnknownPeer);
    let nameless = Peer {
        uid: Some(231_072),
        ..Peer::default()
    };
    let refused = open.ask(&nameless).await;
    assert_eq!(refused, Decision::UnknownPeer, "a uid without an account");
    assert_eq!(open.sts.calls(), 0);
    open.supervisor.wait().await.unwrap();

    let harness = Harness::start(256, &["alice"]);
    let bob = harness.ask(&user(1002, "bob")).await;
    assert_eq!(bob, Decision::NotAdmitted);
    assert_eq!(harness.sts.calls(), 0);
    assert_eq!(harness.live(), 0);
    key_of(&harness.ask(&user(1001, "alice")).await);
    harness.supervisor.wait().await.unwrap();
}

/// A panicking session refresher stops the daemon, as a shared role's does.
#[tokio::test(start_paused = true)]
async fn a_panicking_session_fails_the_supervisor() {
    let mut harness = Harness::start(256, &[]);
    harness.sts.set_default(crate::fake::Reply::Panic);
    let _ = harness.ask(&user(1001, "alice")).await;
    let failure = tokio::time::timeout(Duration::from_secs(5), harness.supervisor.failure()).await;
    assert!(failure.is_ok(), "the panic reached the supervisor");
}

/// A uid that now belongs to another account does not inherit the old account's session
/// (named after the old account): the new one gets a session of their own.
#[tokio::test(start_paused = true)]
async fn a_reused_uid_gets_a_new_session() {
    let harness = Harness::start(256, &[]);
    let old = harness.ask(&user(1001, "alice")).await;
    let new = harness.ask(&user(1001, "mallory")).await;
    assert_ne!(key_of(&old), key_of(&new));
    assert_eq!(harness.sts.session_params(), ["alice@test", "mallory@test"]);
    assert_eq!(harness.live(), 1, "the old session is gone");
    harness.supervisor.wait().await.unwrap();
}

/// When STS is slower than the first request's wait, that request gets 503
/// `CredentialsUninitialized`; the session goes on, and the next request is served from the
/// same, single STS call.
#[tokio::test(start_paused = true)]
async fn a_slow_first_call_answers_503_then_serves() {
    let harness = Harness::start(256, &[]);
    harness
        .sts
        .set_default(crate::fake::Reply::Delay(Duration::from_secs(3)));
    let alice = user(1001, "alice");
    let first = harness.ask(&alice).await;
    assert_eq!(
        first,
        Decision::Unservable(crate::refresh::Unservable::Uninitialized)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    key_of(&harness.ask(&alice).await);
    assert_eq!(harness.sts.calls(), 1);
    harness.supervisor.wait().await.unwrap();
}

/// The decision a request gets, waiting for a new session's first credentials as the answer
/// path does.
async fn decide(
    table: &RoleTable,
    name: &str,
    via: Via<'_>,
    peer: &Peer,
    clock: &dyn crate::clock::Clock,
) -> Decision {
    match access::decide_now(table, name, via, peer, clock.now()) {
        access::Decided::Now(decision) => decision,
        access::Decided::FirstSession(status) => {
            access::first_credentials(status, via, clock).await
        }
    }
}

/// The sessions as the status report and `Debug` show them: one per user, by uid, with the
/// user's name and status; a session unused for exactly the idle time is dropped, one used
/// just after it is kept.
#[tokio::test(start_paused = true)]
async fn sessions_are_listed_and_swept_at_the_idle_time() {
    let harness = Harness::start(256, &[]);
    key_of(&harness.ask(&user(1002, "bob")).await);
    key_of(&harness.ask(&user(1001, "alice")).await);
    let table = harness.table.borrow().clone();
    let Sessions::PerUser(sessions) = &table["piyo"].sessions else {
        panic!("the role is served per user");
    };
    let views = sessions.views();
    let listed: Vec<(u32, &str)> = (views.iter())
        .map(|view| (view.uid, view.user.as_str()))
        .collect();
    assert_eq!(listed, [(1001, "alice"), (1002, "bob")]);
    assert!(views.iter().all(|view| view.status.current.is_some()));
    assert_eq!(format!("{sessions:?}"), "UserSessions(2 live)");
    let idle = Duration::from_secs(600);
    let now = tokio::time::Instant::now();
    assert!(
        sessions
            .sweep(now + idle - Duration::from_millis(1), idle)
            .is_empty()
    );
    assert_eq!(sessions.sweep(now + idle, idle).len(), 2);
    assert_eq!(sessions.len(), 0);
    harness.supervisor.wait().await.unwrap();
}
