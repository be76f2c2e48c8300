//! Role status for operators: the daemon's `GET /status` report (token-protected), and how the
//! `assume-roled status` command prints it ([`crate::client`] fetches it).
//!
//! A role is `fresh` (servable, last attempt succeeded), `refreshing` (an STS call is in
//! flight), `stale-serving` (STS is failing but the last good set is still served) or
//! `failing` (nothing servable). A role served per user is `per-user`, and each of its live
//! sessions has one of those states. The report carries times and the last error, never a
//! secret.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::credentials::format_timestamp;
use crate::guard_state::GuardState;
use crate::refresh::{RoleStatus, servable};
use crate::roles::{RoleTable, Sessions};
use crate::sessions::UserSessions;
use crate::sts::StsError;

/// What a role is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Serving a set, and the last attempt succeeded.
    Fresh,
    /// An STS call is in flight (or none has finished yet).
    Refreshing,
    /// Serving the last good set while renewing it fails.
    StaleServing,
    /// Nothing to serve, and the last attempt failed.
    Failing,
    /// Served per user: each user's session has a state of its own.
    PerUser,
}

impl State {
    /// The name the report and the text output use.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Fresh => "fresh",
            State::Refreshing => "refreshing",
            State::StaleServing => "stale-serving",
            State::Failing => "failing",
            State::PerUser => "per-user",
        }
    }
}

/// The state of one role at `now`.
pub fn state_of(status: &RoleStatus, now: SystemTime) -> State {
    let serving = servable(status, now).is_ok();
    match (serving, status.refreshing, &status.last_error) {
        (_, true, _) if serving || status.last_error.is_none() => State::Refreshing,
        (true, _, None) => State::Fresh,
        (true, _, Some(_)) => State::StaleServing,
        (false, _, None) => State::Refreshing,
        (false, _, Some(_)) => State::Failing,
    }
}

/// The whole report, as `GET /status` answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// One entry per served role, by name.
    pub roles: Vec<RoleReport>,
    /// The metadata guard, as its watch last wrote it; absent where no watch runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<GuardState>,
}

/// One role's line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleReport {
    /// The role's `name`.
    pub name: String,
    /// The role's ARN.
    pub arn: String,
    /// What it is doing.
    pub state: State,
    /// Whether a request now would get credentials (a role served per user: no live session
    /// is failing).
    pub servable: bool,
    /// When the served set expires (RFC 3339), if there is one.
    pub expiration: Option<String>,
    /// When the served set was obtained.
    pub last_refresh: Option<String>,
    /// When the next attempt is planned.
    pub next_refresh: Option<String>,
    /// Why the last attempt failed, if it did.
    pub last_error: Option<ErrorReport>,
    /// The live sessions of a role served per user, by uid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sessions: Vec<SessionReport>,
}

/// One user's session of a role served per user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionReport {
    /// The local user's name.
    pub user: String,
    /// The local user's uid.
    pub uid: u32,
    /// What the session is doing.
    pub state: State,
    /// When its set expires, if there is one.
    pub expiration: Option<String>,
    /// Why its last attempt failed, if it did.
    pub last_error: Option<ErrorReport>,
}

/// The last STS error, as STS gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReport {
    /// `transient` or `configuration`.
    pub kind: String,
    /// STS's error code.
    pub code: String,
    /// STS's message.
    pub message: String,
}

/// The report for every served role at `now`, with the guard's state as its watch wrote it.
pub fn report(table: &RoleTable, guard: Option<GuardState>, now: SystemTime) -> Report {
    let roles = table
        .iter()
        .map(|(name, entry)| {
            let arn = entry.config.arn.to_string();
            match &entry.sessions {
                Sessions::Shared(status) => role_report(name, arn, &status.borrow(), now),
                Sessions::PerUser(sessions) => per_user_report(name, arn, sessions, now),
            }
        })
        .collect();
    Report { roles, guard }
}

fn role_report(name: &str, arn: String, status: &RoleStatus, now: SystemTime) -> RoleReport {
    let current = status.current.as_ref();
    RoleReport {
        name: name.to_owned(),
        arn,
        state: state_of(status, now),
        servable: servable(status, now).is_ok(),
        expiration: current.map(|s| s.credentials.expiration_text()),
        last_refresh: current.map(|s| format_timestamp(s.obtained)),
        next_refresh: status.next_attempt.map(format_timestamp),
        last_error: status.last_error.as_ref().map(error_report),
        sessions: Vec::new(),
    }
}

fn per_user_report(
    name: &str,
    arn: String,
    sessions: &UserSessions,
    now: SystemTime,
) -> RoleReport {
    let sessions: Vec<SessionReport> = (sessions.views().into_iter())
        .map(|view| SessionReport {
            state: state_of(&view.status, now),
            expiration: (view.status.current.as_ref()).map(|s| s.credentials.expiration_text()),
            last_error: view.status.last_error.as_ref().map(error_report),
            user: view.user,
            uid: view.uid,
        })
        .collect();
    // Servable as far as anyone can say without naming a user: no live session is failing.
    let servable = !sessions
        .iter()
        .any(|session| session.state == State::Failing);
    RoleReport {
        name: name.to_owned(),
        arn,
        state: State::PerUser,
        servable,
        expiration: None,
        last_refresh: None,
        next_refresh: None,
        last_error: None,
        sessions,
    }
}

fn error_report(error: &StsError) -> ErrorReport {
    ErrorReport {
        kind: error.kind.as_str().to_owned(),
        code: error.code.clone(),
        message: error.message.clone(),
    }
}

/// The report as people read it.
pub fn render(report: &Report) -> String {
    let dash = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".to_owned());
    let mut text = String::new();
    if let Some(guard) = &report.guard {
        text.push_str(&guard.describe());
        text.push('\n');
    }
    for role in &report.roles {
        text.push_str(&format!(
            "{}  {}  {}\n",
            role.name,
            role.state.as_str(),
            role.arn
        ));
        if role.state == State::PerUser {
            text.push_str(&format!("  {} user sessions\n", role.sessions.len()));
        } else {
            text.push_str(&format!(
                "  expires {}, last refresh {}, next refresh {}\n",
                dash(&role.expiration),
                dash(&role.last_refresh),
                dash(&role.next_refresh)
            ));
        }
        if let Some(error) = &role.last_error {
            text.push_str(&format!("  last error {}\n", describe_error(error)));
        }
        for session in &role.sessions {
            text.push_str(&format!(
                "  user {} (uid {})  {}  expires {}\n",
                session.user,
                session.uid,
                session.state.as_str(),
                dash(&session.expiration)
            ));
            if let Some(error) = &session.last_error {
                text.push_str(&format!("    last error {}\n", describe_error(error)));
            }
        }
    }
    text
}

fn describe_error(error: &ErrorReport) -> String {
    format!("({}): {}: {}", error.kind, error.code, error.message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::{Credentials, Served};
    use crate::sts::ErrorKind;
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + seconds)
    }

    fn status(expires_at: Option<u64>, failing: bool, refreshing: bool) -> RoleStatus {
        let current = expires_at.map(|expiry| {
            let credentials = Credentials::new(
                "ASIAEXAMPLE123456789".into(),
                "s".into(),
                "t".into(),
                at(expiry),
            );
            Arc::new(Served::new(credentials, at(0)))
        });
        let last_error =
            failing.then(|| StsError::new(ErrorKind::Transient, "Throttling", "slow down"));
        RoleStatus {
            current,
            last_error,
            refreshing,
            next_attempt: None,
        }
    }

    #[test]
    fn states() {
        let now = at(60);
        assert_eq!(
            state_of(&status(Some(3600), false, false), now),
            State::Fresh
        );
        assert_eq!(
            state_of(&status(Some(3600), false, true), now),
            State::Refreshing
        );
        assert_eq!(
            state_of(&status(Some(3600), true, false), now),
            State::StaleServing
        );
        assert_eq!(
            state_of(&status(Some(3600), true, true), now),
            State::Refreshing
        );
        assert_eq!(state_of(&status(None, true, false), now), State::Failing);
        assert_eq!(state_of(&status(None, true, true), now), State::Failing);
        assert_eq!(state_of(&status(None, false, true), now), State::Refreshing);
        assert_eq!(
            state_of(&status(Some(100), true, false), now),
            State::Failing,
            "expiring"
        );
    }

    #[test]
    fn rendering_names_the_role_state_and_error() {
        let report = Report {
            roles: vec![RoleReport {
                name: "piyo".into(),
                arn: "arn:aws:iam::444455556666:role/piyo-role".into(),
                state: State::Failing,
                servable: false,
                expiration: None,
                last_refresh: None,
                next_refresh: Some("2027-01-15T08:01:00Z".into()),
                last_error: Some(ErrorReport {
                    kind: "configuration".into(),
                    code: "AccessDenied".into(),
                    message: "no".into(),
                }),
                sessions: Vec::new(),
            }],
            guard: None,
        };
        let mut report = report;
        report.roles.push(RoleReport {
            name: "mine".into(),
            state: State::PerUser,
            next_refresh: None,
            last_error: None,
            sessions: vec![SessionReport {
                user: "alice".into(),
                uid: 1001,
                state: State::Fresh,
                expiration: Some("2027-01-15T09:00:00Z".into()),
                last_error: None,
            }],
            ..report.roles[0].clone()
        });
        let text = render(&report);
        assert!(text.starts_with("piyo  failing  arn:aws:iam::444455556666:role/piyo-role\n"));
        assert!(text.contains("mine  per-user  "), "{text}");
        assert!(
            text.contains(
                "mine  per-user  arn:aws:iam::444455556666:role/piyo-role\n  1 user sessions\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("  user alice (uid 1001)  fresh  expires 2027-01-15T09:00:00Z\n"),
            "{text}"
        );
        assert!(text.contains("next refresh 2027-01-15T08:01:00Z"));
        assert!(text.contains("last error (configuration): AccessDenied: no"));
        let json = serde_json::to_string(&report).unwrap();
        assert!(json.contains("\"state\":\"failing\""), "{json}");
        assert_eq!(serde_json::from_str::<Report>(&json).unwrap(), report);
        report.guard = Some(GuardState {
            in_place: false,
            lockdown: true,
            reapplied: 2,
        });
        let text = render(&report);
        assert!(
            text.starts_with("metadata guard: LOCKDOWN (the configuration cannot be used"),
            "{text}"
        );
        assert!(text.contains("put back 2 times\npiyo  failing"), "{text}");
    }
}
