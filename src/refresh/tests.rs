//! Refresh decisions with plain numbers, and the engine's timing with a fake STS and paused time.

use std::time::UNIX_EPOCH;

use super::*;
use crate::clock::Clock;
use crate::fake::{FakeClock, FakeSts, Reply, role};

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

fn at(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000 + seconds)
}

const _: () = assert!(HOUR.as_secs() == crate::fake::HOUR.as_secs());

#[test]
fn one_hour_sets_are_renewed_with_30_to_36_minutes_left() {
    let obtained = at(0);
    let expiry = obtained + HOUR;
    assert_eq!(refresh_due(obtained, expiry, 0.0), obtained + 30 * MINUTE);
    assert_eq!(refresh_due(obtained, expiry, 1.0), obtained + 24 * MINUTE);
}

#[test]
fn long_sets_are_renewed_at_half_life() {
    let obtained = at(0);
    assert_eq!(
        refresh_due(obtained, obtained + 12 * HOUR, 0.0),
        obtained + 6 * HOUR
    );
}

#[test]
fn short_sets_are_renewed_early_but_not_immediately() {
    let obtained = at(0);
    // A role whose maximum session is 15 minutes: renew with 10 minutes left.
    assert_eq!(
        refresh_due(obtained, obtained + 15 * MINUTE, 0.0),
        obtained + 5 * MINUTE
    );
    // A set that arrives already expired (skewed clock) is not re-fetched in a loop.
    assert_eq!(
        refresh_due(obtained, obtained, 0.5),
        obtained + MIN_REFRESH_INTERVAL
    );
    assert_eq!(
        refresh_due(obtained, at(0) - HOUR, 0.5),
        obtained + MIN_REFRESH_INTERVAL
    );
}

#[test]
fn servable_until_two_minutes_before_expiry() {
    let expiry = at(3600);
    assert!(is_servable(expiry, at(0)));
    assert!(is_servable(expiry, at(3600 - 121)));
    assert!(!is_servable(expiry, at(3600 - 120)));
    assert!(!is_servable(expiry, at(4000)));
}

#[test]
fn backoff_grows_to_a_cap_and_is_slower_for_configuration_errors() {
    let fixed = |kind, failures| backoff(kind, failures, 0.0);
    assert_eq!(fixed(ErrorKind::Transient, 1), Duration::from_millis(500));
    assert_eq!(fixed(ErrorKind::Transient, 2), Duration::from_secs(1));
    assert_eq!(fixed(ErrorKind::Transient, 8), Duration::from_secs(30));
    assert_eq!(fixed(ErrorKind::Transient, 1000), Duration::from_secs(30));
    assert_eq!(
        backoff(ErrorKind::Transient, 1000, 1.0),
        Duration::from_secs(60)
    );
    assert_eq!(fixed(ErrorKind::Configuration, 1), Duration::from_secs(15));
    assert_eq!(
        backoff(ErrorKind::Configuration, 99, 1.0),
        Duration::from_secs(600)
    );
}

#[test]
fn servable_explains_why_not() {
    let status = RoleStatus::default();
    assert_eq!(
        servable(&status, at(0)).unwrap_err(),
        Unservable::Uninitialized
    );
    let denied = StsError::new(ErrorKind::Configuration, "AccessDenied", "no");
    let status = RoleStatus {
        current: None,
        last_error: Some(denied.clone()),
        ..RoleStatus::default()
    };
    assert_eq!(
        servable(&status, at(0)).unwrap_err(),
        Unservable::Failing(denied)
    );
}

struct Harness {
    clock: Arc<FakeClock>,
    sts: Arc<FakeSts>,
    status: watch::Receiver<RoleStatus>,
    shutdown: CancellationToken,
}

impl Harness {
    fn start(script: Vec<Reply>) -> Self {
        let clock = FakeClock::new();
        let sts = FakeSts::new(clock.clone(), script);
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let seams = Seams {
            sts: sts.clone(),
            clock: clock.clone(),
            metrics,
        };
        let (refresher, status) =
            Refresher::new(Arc::new(role("piyo")), &Subject::default(), seams);
        let shutdown = CancellationToken::new();
        tokio::spawn(refresher.run(shutdown.clone()));
        Self {
            clock,
            sts,
            status,
            shutdown,
        }
    }

    /// Time left on the set a client would get now, or `None` if it would get a 503.
    fn served_life(&self) -> Option<Duration> {
        let status = self.status.borrow();
        let now = self.clock.now();
        servable(&status, now)
            .ok()
            .map(|served| served.credentials.expiration.duration_since(now).unwrap())
    }

    fn access_key(&self) -> Option<String> {
        let status = self.status.borrow();
        status
            .current
            .as_ref()
            .map(|s| s.credentials.access_key_id.clone())
    }

    async fn advance(&self, by: Duration) {
        tokio::time::sleep(by).await;
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Over ten simulated hours with a working STS, a client always gets credentials with at least
/// 29 minutes left, and STS is called about twice an hour, not more.
#[tokio::test(start_paused = true)]
async fn served_credentials_always_have_ample_life() {
    let harness = Harness::start(vec![]);
    harness.advance(Duration::from_millis(1)).await;
    for _ in 0..600 {
        let left = harness
            .served_life()
            .expect("always servable while STS works");
        assert!(left >= 29 * MINUTE, "only {left:?} left");
        harness.advance(MINUTE).await;
    }
    let calls = harness.sts.calls();
    assert!((20..=26).contains(&calls), "{calls} STS calls in 10 hours");
}

/// STS failing while a valid set exists: clients keep getting the same set, retries back off,
/// and the next success replaces it.
#[tokio::test(start_paused = true)]
async fn outage_keeps_serving_the_last_good_set() {
    let harness = Harness::start(vec![]);
    harness.advance(Duration::from_millis(1)).await;
    let first_key = harness.access_key().unwrap();
    harness.sts.set_default(Reply::Fail(ErrorKind::Transient));
    // Past the planned refresh (at most 36 minutes in), one minute of failures follows.
    harness.advance(36 * MINUTE).await;
    let calls_before = harness.sts.calls();
    for _ in 0..60 {
        assert!(harness.served_life().is_some());
        harness.advance(Duration::from_secs(1)).await;
    }
    let calls_in_minute = harness.sts.calls() - calls_before;
    assert!(
        calls_in_minute <= 8,
        "{calls_in_minute} calls in one minute of outage"
    );
    assert_eq!(harness.access_key().unwrap(), first_key);
    harness.sts.set_default(Reply::Issue(HOUR));
    harness.advance(2 * MINUTE).await;
    assert_ne!(harness.access_key().unwrap(), first_key);
    assert!(harness.served_life().unwrap() > 55 * MINUTE);
}

/// An outage longer than the credentials' life: serving stops two minutes before expiry and
/// resumes by itself once STS answers again.
#[tokio::test(start_paused = true)]
async fn long_outage_stops_serving_before_expiry_and_recovers() {
    let harness = Harness::start(vec![]);
    harness.advance(Duration::from_millis(1)).await;
    harness.sts.set_default(Reply::Fail(ErrorKind::Transient));
    harness
        .advance(HOUR - 2 * MINUTE - Duration::from_secs(5))
        .await;
    assert!(harness.served_life().is_some());
    harness.advance(Duration::from_secs(10)).await;
    assert!(
        harness.served_life().is_none(),
        "expiring set must not be served"
    );
    let status = harness.status.borrow().clone();
    assert!(matches!(
        servable(&status, harness.clock.now()),
        Err(Unservable::Expiring(Some(_)))
    ));
    harness.sts.set_default(Reply::Issue(HOUR));
    harness.advance(2 * MINUTE).await;
    assert!(harness.served_life().unwrap() > 55 * MINUTE);
}

/// STS hangs: the attempt times out and is retried; the old set is served meanwhile.
#[tokio::test(start_paused = true)]
async fn hung_sts_call_times_out_and_is_retried() {
    let harness = Harness::start(vec![Reply::Hang]);
    harness
        .advance(ATTEMPT_TIMEOUT - Duration::from_secs(1))
        .await;
    assert_eq!(harness.sts.calls(), 1);
    assert!(harness.served_life().is_none());
    harness.advance(Duration::from_secs(5)).await;
    assert_eq!(harness.sts.calls(), 2);
    assert!(harness.served_life().is_some());
}

/// A role whose sessions last 15 minutes: renewed every few minutes, never in a loop.
#[tokio::test(start_paused = true)]
async fn short_sessions_are_refreshed_earlier_without_looping() {
    let harness = Harness::start(vec![]);
    harness.sts.set_default(Reply::Issue(15 * MINUTE));
    for _ in 0..60 {
        harness.advance(MINUTE).await;
        assert!(harness.served_life().unwrap() >= 8 * MINUTE);
    }
    let calls = harness.sts.calls();
    assert!((12..=18).contains(&calls), "{calls} calls in an hour");
}

/// The wall clock jumps two hours (suspend and resume): the daemon stops serving the stale set
/// at once and has a new one within a minute, instead of waiting for its old plan.
#[tokio::test(start_paused = true)]
async fn wall_clock_jump_triggers_a_refresh() {
    let harness = Harness::start(vec![]);
    harness.advance(Duration::from_millis(1)).await;
    let first_key = harness.access_key().unwrap();
    harness.clock.jump(2 * HOUR);
    assert!(harness.served_life().is_none());
    harness
        .advance(RECHECK_INTERVAL + Duration::from_secs(1))
        .await;
    assert_ne!(harness.access_key().unwrap(), first_key);
    assert!(harness.served_life().unwrap() > 55 * MINUTE);
}

/// Configuration errors (AccessDenied) are retried slowly, and the reason is kept for the 503.
#[tokio::test(start_paused = true)]
async fn configuration_errors_retry_slowly() {
    let harness = Harness::start(vec![]);
    harness
        .sts
        .set_default(Reply::Fail(ErrorKind::Configuration));
    harness.advance(10 * MINUTE).await;
    let calls = harness.sts.calls();
    assert!((3..=7).contains(&calls), "{calls} calls in 10 minutes");
    let status = harness.status.borrow().clone();
    assert!(matches!(
        servable(&status, harness.clock.now()),
        Err(Unservable::Failing(_))
    ));
}

/// Throttled from the first call for a minute: exponential backoff makes a handful of calls,
/// never a burst, and the role reports the throttling until STS answers again.
#[tokio::test(start_paused = true)]
async fn a_minute_of_throttling_is_a_few_calls() {
    let harness = Harness::start(vec![]);
    harness.sts.set_default(Reply::Fail(ErrorKind::Transient));
    let mut calls_per_second = Vec::new();
    for _ in 0..60 {
        let before = harness.sts.calls();
        harness.advance(Duration::from_secs(1)).await;
        calls_per_second.push(harness.sts.calls() - before);
    }
    let calls = harness.sts.calls();
    assert!((4..=9).contains(&calls), "{calls} calls in a minute");
    // The first retry comes within a second of the first call (1 s, with equal jitter); after
    // that the gaps only grow.
    let burst = calls_per_second.iter().skip(1).any(|n| *n > 1);
    assert!(!burst && calls_per_second[0] <= 2, "{calls_per_second:?}");
    let failing = servable(&harness.status.borrow(), harness.clock.now()).map(|_| ());
    assert!(
        matches!(failing, Err(Unservable::Failing(_))),
        "{failing:?}"
    );
    harness.sts.set_default(Reply::Issue(HOUR));
    harness.advance(2 * MINUTE).await;
    assert!(harness.served_life().is_some(), "served once STS answers");
}

/// An outage is logged once, not at every retry: a configuration error as an error naming the
/// role, a transient one as a warning; another kind of error is news, and so is the first
/// failure after a success.
#[tokio::test(start_paused = true)]
async fn an_outage_is_logged_once() {
    let logs = crate::fake::CapturedLogs::start();
    let harness = Harness::start(vec![]);
    harness
        .sts
        .set_default(Reply::Fail(ErrorKind::Configuration));
    harness.advance(10 * MINUTE).await;
    assert!(harness.sts.calls() >= 3, "{} calls", harness.sts.calls());
    let refused = "refresh refused: configuration error";
    assert_eq!(logs.count("ERROR", refused), 1);
    assert_eq!(logs.count("ERROR", "role=\"piyo\""), 1);
    harness.sts.set_default(Reply::Fail(ErrorKind::Transient));
    harness.advance(10 * MINUTE).await;
    let retrying = "refresh failed, will retry";
    assert_eq!(logs.count("WARN", retrying), 1, "a new kind of error");
    harness.sts.set_default(Reply::Issue(HOUR));
    harness.advance(2 * MINUTE).await;
    assert!(harness.served_life().is_some());
    harness.sts.set_default(Reply::Fail(ErrorKind::Transient));
    harness.advance(40 * MINUTE).await;
    assert_eq!(
        logs.count("WARN", retrying),
        2,
        "the first failure after a success"
    );
    assert_eq!(logs.count("ERROR", refused), 1);
}

/// New credentials that are already within the serving margin (a skewed host clock) are
/// logged as such; a normal set is not.
#[tokio::test(start_paused = true)]
async fn credentials_born_expiring_are_logged() {
    let logs = crate::fake::CapturedLogs::start();
    let harness = Harness::start(vec![Reply::Issue(HOUR), Reply::Issue(MINUTE)]);
    let expiring = "new credentials are already about to expire";
    harness.advance(MINUTE).await;
    assert_eq!(logs.count("WARN", expiring), 0);
    harness.advance(40 * MINUTE).await;
    assert!(harness.sts.calls() >= 2);
    assert_eq!(logs.count("WARN", expiring), 1);
}

/// With sessions per user a refresher is one user's task for its whole life: the size of its
/// future is per-user memory (472 bytes measured; 632 before the shutdown wait was moved
/// around the loop and the call's timeout into the call's box).
#[test]
fn a_refresher_task_stays_small() {
    let clock = FakeClock::new();
    let sts = FakeSts::new(clock.clone(), vec![]);
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let seams = Seams {
        sts,
        clock,
        metrics,
    };
    let (refresher, _status) = Refresher::new(Arc::new(role("piyo")), &Subject::default(), seams);
    let task = refresher.run(CancellationToken::new());
    let size = std::mem::size_of_val(&task);
    assert!(size <= 512, "a refresher's future is {size} bytes");
}
