//! The sessions of a role served per user: one refresher per (role, local user), started by
//! that user's first request and dropped when unused.
//!
//! A role whose `session_name` or `source_identity` names `{user}` or `{uid}` has no shared
//! session. Its [`UserSessions`] maps each uid to that user's session: the first request of a
//! user inserts the entry under the lock (so a hundred concurrent first requests make one
//! refresher, and one STS call) and hands the new refresher to the role's [`run`] loop, which
//! owns every refresher task of the role. The loop drops sessions nobody asked for during twice
//! the role's session length (their keys are zeroed as the last reference goes) and at most
//! `max_sessions` live at once: past it, a new user is refused until one is dropped, so a flood
//! of new uids cannot become a flood of STS calls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::{RoleConfig, Subject};
use crate::refresh::{Refresher, RoleStatus, Seams};
use crate::sts::Sts;

/// How often the loop looks for idle sessions.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// A session asked for while `max_sessions` are live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full {
    /// The role's `max_sessions`.
    pub limit: usize,
}

/// One user's session as handlers and the report see it.
struct Session {
    /// The user's name.
    user: String,
    status: watch::Receiver<RoleStatus>,
    last_used: Instant,
    stop: CancellationToken,
}

/// A session for the loop to start: whose, and where to publish.
struct Start {
    subject: Subject,
    status: watch::Sender<RoleStatus>,
    stop: CancellationToken,
}

/// One user's session in the status report.
#[derive(Debug, Clone)]
pub struct SessionView {
    /// The local user.
    pub uid: u32,
    /// Their name.
    pub user: String,
    /// What the session's refresher last published.
    pub status: RoleStatus,
}

/// The live sessions of one role served per user. A std mutex: held to look up or insert,
/// never across an await; a poisoned one is used as it is.
pub struct UserSessions {
    sessions: Mutex<HashMap<u32, Session>>,
    starts: mpsc::UnboundedSender<Start>,
    /// Cancelled when the role stops being served; every session's stop is a child of it.
    stop: CancellationToken,
}

impl std::fmt::Debug for UserSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UserSessions({} live)", self.len())
    }
}

impl UserSessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Session>> {
        self.sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The session of user `uid`, named `user`, started if it is new, unless `max_sessions`
    /// are live. Marks it used at `now`.
    pub fn session_for(
        &self,
        uid: u32,
        user: &str,
        max_sessions: usize,
        now: Instant,
    ) -> Result<watch::Receiver<RoleStatus>, Full> {
        let mut sessions = self.lock();
        match sessions.get_mut(&uid) {
            Some(session) if session.user == user => {
                session.last_used = now;
                return Ok(session.status.clone());
            }
            // The uid now belongs to someone else (an account removed and its uid reused, or
            // renamed): the old session is named after the old account and is not theirs.
            Some(_) => {
                if let Some(old) = sessions.remove(&uid) {
                    old.stop.cancel();
                }
            }
            None => {}
        }
        if sessions.len() >= max_sessions {
            return Err(Full {
                limit: max_sessions,
            });
        }
        let (sender, status) = watch::channel(RoleStatus::default());
        let stop = self.stop.child_token();
        let subject = Subject {
            user: Some((uid, Some(user.to_owned()))),
            instance_id: None,
        };
        // If the loop has ended (the role is being removed), the session never starts: nothing
        // is kept, and the request gets 503 CredentialsUninitialized.
        let start = Start {
            subject,
            status: sender,
            stop: stop.clone(),
        };
        if self.starts.send(start).is_err() {
            return Ok(status);
        }
        let session = Session {
            user: user.to_owned(),
            status: status.clone(),
            last_used: now,
            stop,
        };
        sessions.insert(uid, session);
        Ok(status)
    }

    /// Drops the sessions unused since `now - idle`; returns the users dropped.
    fn sweep(&self, now: Instant, idle: Duration) -> Vec<String> {
        let mut dropped = Vec::new();
        self.lock().retain(|_, session| {
            let keep = now.duration_since(session.last_used) < idle;
            if !keep {
                session.stop.cancel();
                dropped.push(session.user.clone());
            }
            keep
        });
        dropped
    }

    /// How many sessions are live.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Every live session, by uid.
    pub fn views(&self) -> Vec<SessionView> {
        let mut views: Vec<SessionView> = (self.lock().iter())
            .map(|(uid, session)| SessionView {
                uid: *uid,
                user: session.user.clone(),
                status: session.status.borrow().clone(),
            })
            .collect();
        views.sort_by_key(|view| view.uid);
        views
    }
}

/// The sessions of `role`, and the loop that runs them until `stop`.
pub fn start<S: Sts>(
    role: RoleConfig,
    instance_id: Option<String>,
    seams: Seams<S>,
    stop: CancellationToken,
) -> (Arc<UserSessions>, impl Future<Output = ()> + Send + 'static) {
    let (starts, requests) = mpsc::unbounded_channel();
    let sessions = Arc::new(UserSessions {
        sessions: Mutex::new(HashMap::new()),
        starts,
        stop: stop.clone(),
    });
    let running = run(sessions.clone(), requests, role, instance_id, seams, stop);
    (sessions, running)
}

/// Starts the refreshers handlers ask for, drops idle sessions, and stops them all at `stop`.
/// A refresher that panics is a bug: the panic goes on to the supervisor, which stops the
/// daemon, as for a shared role's refresher.
async fn run<S: Sts>(
    sessions: Arc<UserSessions>,
    mut requests: mpsc::UnboundedReceiver<Start>,
    role: RoleConfig,
    instance_id: Option<String>,
    seams: Seams<S>,
    stop: CancellationToken,
) {
    let idle = role.duration * 2;
    let role = Arc::new(role);
    let mut refreshers = JoinSet::new();
    let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        tokio::select! {
            Some(mut start) = requests.recv() => {
                start.subject.instance_id = instance_id.clone();
                let status = start.status;
                let refresher =
                    Refresher::publishing_to(status, role.clone(), &start.subject, seams.clone());
                refreshers.spawn(refresher.run(start.stop));
            }
            Some(joined) = refreshers.join_next() => resume_panic(joined),
            _ = sweep.tick() => {
                for user in sessions.sweep(Instant::now(), idle) {
                    info!(role = %role.name, user, idle = ?idle, "session dropped: unused");
                }
            }
            () = stop.cancelled() => break,
        }
    }
    sessions.lock().clear();
    while let Some(joined) = refreshers.join_next().await {
        resume_panic(joined);
    }
}

fn resume_panic(joined: Result<(), tokio::task::JoinError>) {
    if let Err(error) = joined
        && error.is_panic()
    {
        std::panic::resume_unwind(error.into_panic());
    }
}

#[cfg(test)]
mod tests;
