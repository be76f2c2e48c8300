//! The refresh engine: one background task per session (a role's shared session, or one user's
//! session of a role served per user) keeps a servable credential set in memory.
//!
//! Data flows one way: STS → [`Refresher`] → a `watch` channel of [`RoleStatus`] → request
//! handlers. Each session has exactly one refresher, so there is at most one STS call in flight
//! per session however many clients ask, and handlers never call STS: they read the latest
//! status and decide with [`servable`] whether it may be served *now*.
//!
//! Every decision is a pure function of times and counts, tested with plain numbers:
//! [`refresh_due`] (half-life with jitter, so served sets keep 30 minutes or more while STS works),
//! [`backoff`] (exponential with jitter, slower for configuration errors) and [`servable`]
//! (stop serving [`STOP_SERVING_MARGIN`] before expiry). All of them use the wall clock through
//! the [`crate::clock::Clock`] seam, because expiry is a wall-clock fact: after a suspend the monotonic clock
//! has not moved but the credentials have aged. The refresher therefore wakes at least every
//! [`RECHECK_INTERVAL`] to compare its plan with the wall clock.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::clock::SharedClock;
use crate::config::{RoleConfig, SessionParams, Subject};
use crate::credentials::{Served, format_timestamp};
use crate::metrics::Metrics;
use crate::sts::{ErrorKind, Sts, StsError};

/// Refresh once no more than this is left (or half the lifetime, if that is more), so that
/// served credentials stay outside every client's own refresh window (botocore's is 15 minutes).
pub const REFRESH_WINDOW: Duration = Duration::from_secs(30 * 60);
/// Credentials with less than this left are not served: a client could not use them in time.
pub const STOP_SERVING_MARGIN: Duration = Duration::from_secs(2 * 60);
/// Refreshes happen up to this fraction of the lifetime early, so that hosts started together
/// do not call STS together.
const JITTER_FRACTION: f64 = 0.1;
/// Even credentials that arrive nearly expired (a skewed clock) are not re-fetched sooner than
/// this: better to serve 503 for a minute than to loop on STS.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(60);
/// The longest the refresher sleeps without looking at the wall clock again.
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(60);
/// One attempt, including the source-credential lookup, may not take longer than this.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
/// Retry delays after transient errors: 1 s doubling to at most a minute.
const TRANSIENT_BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(60));
/// Retry delays after configuration errors: someone has to fix IAM first, so ask rarely.
const CONFIGURATION_BACKOFF: (Duration, Duration) =
    (Duration::from_secs(30), Duration::from_secs(10 * 60));

/// What handlers see of a role: the set to serve, if any, and why the last attempt failed.
#[derive(Debug, Clone, Default)]
pub struct RoleStatus {
    pub current: Option<Arc<Served>>,
    /// The error of the most recent attempt; `None` once an attempt succeeds.
    pub last_error: Option<StsError>,
    /// An STS call is in flight.
    pub refreshing: bool,
    /// When the next attempt is planned (wall clock), once the first attempt has finished.
    pub next_attempt: Option<SystemTime>,
}

/// Why a role has nothing to serve at the moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unservable {
    /// No attempt has finished yet.
    Uninitialized,
    /// Attempts failed and no credentials were ever obtained.
    Failing(StsError),
    /// The last set is too close to expiry, and renewing it has not worked (yet).
    Expiring(Option<StsError>),
}

/// When to renew a set obtained at `obtained` that expires at `expiry`; `jitter` is in `[0, 1)`.
pub fn refresh_due(obtained: SystemTime, expiry: SystemTime, jitter: f64) -> SystemTime {
    let lifetime = expiry.duration_since(obtained).unwrap_or_default();
    // Half-life, but keep REFRESH_WINDOW in reserve when the lifetime allows it; never more
    // than two thirds of the lifetime, or short sessions would be renewed on arrival.
    let reserve = (lifetime / 2).max(REFRESH_WINDOW.min(lifetime * 2 / 3));
    let early = lifetime.mul_f64(JITTER_FRACTION * jitter.clamp(0.0, 1.0));
    let due = expiry.checked_sub(reserve + early).unwrap_or(obtained);
    due.max(obtained + MIN_REFRESH_INTERVAL)
}

/// Whether a set expiring at `expiry` may still be handed to a client at `now`.
pub fn is_servable(expiry: SystemTime, now: SystemTime) -> bool {
    expiry
        .duration_since(now)
        .is_ok_and(|left| left > STOP_SERVING_MARGIN)
}

/// How long to wait before attempt `failures + 1`, after `failures` consecutive failures (≥ 1).
/// "Equal jitter": half the exponential delay is fixed, half is random, so retries from many
/// hosts spread out but never come back faster than half the schedule.
pub fn backoff(kind: ErrorKind, failures: u32, jitter: f64) -> Duration {
    let (base, cap) = match kind {
        ErrorKind::Transient => TRANSIENT_BACKOFF,
        ErrorKind::Configuration => CONFIGURATION_BACKOFF,
    };
    let doublings = failures.saturating_sub(1).min(16);
    let delay = base.saturating_mul(1 << doublings).min(cap);
    delay / 2 + (delay / 2).mul_f64(jitter.clamp(0.0, 1.0))
}

/// The set to serve for a role at `now`, or why there is none.
pub fn servable(status: &RoleStatus, now: SystemTime) -> Result<&Arc<Served>, Unservable> {
    match (&status.current, &status.last_error) {
        (Some(served), _) if is_servable(served.credentials.expiration, now) => Ok(served),
        (Some(_), error) => Err(Unservable::Expiring(error.clone())),
        (None, Some(error)) => Err(Unservable::Failing(error.clone())),
        (None, None) => Err(Unservable::Uninitialized),
    }
}

/// What every refresher calls and counts with; cheap to clone.
pub struct Seams<S> {
    /// The one seam to AWS.
    pub sts: Arc<S>,
    /// The wall clock.
    pub clock: SharedClock,
    /// Where refreshes are counted.
    pub metrics: Arc<Metrics>,
}

impl<S> Clone for Seams<S> {
    fn clone(&self) -> Self {
        Self {
            sts: self.sts.clone(),
            clock: self.clock.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// The background task that keeps one session's credentials fresh: a role's shared session,
/// or one user's session of a role served per user.
pub struct Refresher<S> {
    /// Shared by every session of a role served per user.
    role: Arc<RoleConfig>,
    /// The session's rendered names.
    names: SessionParams,
    /// Whose session this is, for logs; `None`: the role's shared session.
    user: Option<String>,
    seams: Seams<S>,
    status: watch::Sender<RoleStatus>,
    failures: u32,
    /// The last error logged loudly, so a long outage is one warning, not one per retry.
    last_logged: Option<(ErrorKind, String)>,
}

impl<S: Sts> Refresher<S> {
    /// A refresher for `role`'s session for `subject`, and the receiver handlers read its
    /// status from.
    pub fn new(
        role: Arc<RoleConfig>,
        subject: &Subject,
        seams: Seams<S>,
    ) -> (Self, watch::Receiver<RoleStatus>) {
        let (status, receiver) = watch::channel(RoleStatus::default());
        (Self::publishing_to(status, role, subject, seams), receiver)
    }

    /// Like [`Refresher::new`], publishing on a channel the caller made.
    pub fn publishing_to(
        status: watch::Sender<RoleStatus>,
        role: Arc<RoleConfig>,
        subject: &Subject,
        seams: Seams<S>,
    ) -> Self {
        let names = role.session_params(subject);
        let user =
            (subject.user.as_ref()).map(|(uid, name)| name.clone().unwrap_or(uid.to_string()));
        Self {
            role,
            names,
            user,
            seams,
            status,
            failures: 0,
            last_logged: None,
        }
    }

    /// Fetches now, then keeps refreshing until `shutdown` is cancelled.
    ///
    /// With sessions per user this future is one user's task for its whole life, so its size
    /// is per-user memory: one wait for the shutdown around the whole loop (a wait in each step
    /// would be laid out twice), and an `async` block rather than an `async fn`, whose
    /// arguments would be held twice (as arguments, then as locals).
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn would hold its arguments twice"
    )]
    pub fn run(mut self, shutdown: CancellationToken) -> impl Future<Output = ()> + Send {
        async move {
            tokio::select! {
                () = self.keep_refreshing() => {}
                () = shutdown.cancelled() => {}
            }
        }
    }

    async fn keep_refreshing(&mut self) -> ! {
        loop {
            let next = self.attempt().await;
            self.sleep_until(next).await;
        }
    }

    /// One STS call; publishes the outcome and returns when to try next.
    async fn attempt(&mut self) -> SystemTime {
        self.status.send_modify(|status| status.refreshing = true);
        let started = tokio::time::Instant::now();
        // Boxed, with its timeout: the SDK's call is a large state machine, and unboxed it would
        // be part of the task itself, held for the task's whole life (per user, with sessions
        // per user) rather than for the call's.
        let call = self.seams.sts.assume_role(&self.role, &self.names);
        let call = Box::pin(tokio::time::timeout(ATTEMPT_TIMEOUT, call));
        let outcome = call.await.unwrap_or_else(|_| {
            Err(StsError::new(
                ErrorKind::Transient,
                "Timeout",
                format!("no answer from STS within {}s", ATTEMPT_TIMEOUT.as_secs()),
            ))
        });
        let now = self.seams.clock.now();
        let label = outcome
            .as_ref()
            .map_or_else(|error| error.kind.as_str(), |_| "success");
        let seconds = started.elapsed().as_secs_f64();
        self.seams.metrics.refresh(&self.role.name, label, seconds);
        if let Err(error) = &outcome {
            self.seams
                .metrics
                .refresh_failed(&self.role.name, &error.code);
        }
        match outcome {
            Ok(credentials) => self.succeeded(Served::new(credentials, now), now),
            Err(error) => self.failed(error, now),
        }
    }

    fn succeeded(&mut self, served: Served, now: SystemTime) -> SystemTime {
        self.failures = 0;
        self.last_logged = None;
        let expiry = served.credentials.expiration;
        let due = refresh_due(now, expiry, rand::random());
        info!(
            role = %self.role.name,
            user = self.user.as_deref(),
            session = %self.names.session_name,
            access_key_id = %served.credentials.masked_access_key_id(),
            expiration = %served.credentials.expiration_text(),
            next_refresh = %format_timestamp(due),
            "credentials refreshed"
        );
        if !is_servable(expiry, now) {
            warn!(
                role = %self.role.name,
                user = self.user.as_deref(),
                expiration = %served.credentials.expiration_text(),
                "new credentials are already about to expire; check the host clock"
            );
        }
        self.status.send_replace(RoleStatus {
            current: Some(Arc::new(served)),
            last_error: None,
            refreshing: false,
            next_attempt: Some(due),
        });
        due
    }

    fn failed(&mut self, error: StsError, now: SystemTime) -> SystemTime {
        self.failures = self.failures.saturating_add(1);
        let delay = backoff(error.kind, self.failures, rand::random());
        self.log_failure(&error, delay);
        let next = now + delay;
        self.status.send_modify(|status| {
            status.last_error = Some(error);
            status.refreshing = false;
            status.next_attempt = Some(next);
        });
        next
    }

    fn log_failure(&mut self, error: &StsError, retry_in: Duration) {
        let key = (error.kind, error.code.clone());
        let repeated = self.last_logged.as_ref() == Some(&key);
        let role = self.role.name.as_str();
        let user = self.user.as_deref();
        let arn = self.role.arn.as_str();
        let failures = self.failures;
        if repeated {
            debug!(role, user, code = %error.code, failures, ?retry_in, "refresh still failing");
            return;
        }
        match error.kind {
            ErrorKind::Transient => warn!(
                role, user, arn, code = %error.code, reason = %error.message, failures, ?retry_in,
                "refresh failed, will retry (transient error)"
            ),
            ErrorKind::Configuration => error!(
                role, user, arn, code = %error.code, reason = %error.message, failures, ?retry_in,
                "refresh refused: configuration error; check the role's trust policy and the \
                 host's sts:AssumeRole permission"
            ),
        }
        self.last_logged = Some(key);
    }

    /// Sleeps until `deadline` on the wall clock, looking again at least every
    /// [`RECHECK_INTERVAL`].
    async fn sleep_until(&self, deadline: SystemTime) {
        while let Ok(left) = deadline.duration_since(self.seams.clock.now())
            && !left.is_zero()
        {
            // The wall clock is read again at each look: a jump (a suspend, a corrected clock)
            // past the deadline ends the sleep. A set stops being servable before its deadline
            // only when it lives under three minutes (the deadline is then a minute after it
            // came, and this sleep ends there), so no separate check for that is needed.
            tokio::time::sleep(left.min(RECHECK_INTERVAL)).await;
        }
    }
}

#[cfg(test)]
mod tests;
