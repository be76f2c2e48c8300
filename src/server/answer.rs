//! The one answer to a credentials request, for both endpoints and both paths (a connection's
//! direct path and the router's): decide on the table snapshot the request was checked
//! against, audit the decision, and put it into words ([`wording`], one table for both
//! endpoints). A user's first request to a new per-user session waits for its first
//! credentials in a future; everything else is answered at once.

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use axum::http::{Response, StatusCode};
use bytes::Bytes;
use http_body_util::{Either, Full};
use tracing::{debug, warn};

use super::AppState;
use crate::access::{self, Decided, Decision, Grant, Via};
use crate::audit::ServedMemo;
use crate::http::{credentials_unboxed, error_response};
use crate::metrics::Metrics;
use crate::peer::Peer;
use crate::refresh::Unservable;
use crate::roles::RoleTable;

/// A response body: the credentials as they are, or whatever the router built.
pub type Body = Either<Full<Bytes>, axum::body::Body>;
/// A response as a connection sends it.
pub type Answer = Response<Body>;

/// A connection's answer to one request: ready at once, or coming.
pub enum Answering {
    Ready(Option<Answer>),
    Later(Later),
}

/// An answer that takes a while: routed, or waiting for a new session's first credentials.
pub type Later = Pin<Box<dyn Future<Output = Result<Answer, Infallible>> + Send>>;

impl Answering {
    /// `answer`, ready.
    pub fn ready(answer: Answer) -> Self {
        Answering::Ready(Some(answer))
    }

    /// A ready answer the router's helpers built.
    pub fn routed(response: axum::response::Response) -> Self {
        Self::ready(response.map(Either::Right))
    }

    /// This answer, counted in `metrics` under `route` once it is there (a ready answer at
    /// once, without touching the shared reference count).
    pub fn counted(self, metrics: &Arc<Metrics>, route: &'static str) -> Self {
        match self {
            Answering::Ready(answer) => {
                if let Some(answer) = &answer {
                    metrics.request(route, answer.status().as_u16());
                }
                Answering::Ready(answer)
            }
            Answering::Later(later) => {
                let metrics = metrics.clone();
                Answering::Later(Box::pin(async move {
                    let Ok(answer) = later.await;
                    metrics.request(route, answer.status().as_u16());
                    Ok(answer)
                }))
            }
        }
    }
}

impl Future for Answering {
    type Output = Result<Answer, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Answering::Ready(answer) => Poll::Ready(Ok(answer
                .take()
                .expect("an answer is polled until ready, once"))),
            Answering::Later(future) => future.as_mut().poll(cx),
        }
    }
}

impl AppState {
    /// Whether `peer` gets role `role` through `via`, decided on `table` (the snapshot the
    /// request was checked against), audited, and answered in the endpoint's words.
    pub(super) fn credentials(
        &self,
        table: &Arc<RoleTable>,
        role: &str,
        via: Via<'_>,
        peer: &Arc<Peer>,
        (now, memo): (SystemTime, Option<&mut ServedMemo>),
    ) -> Answering {
        match access::decide_now(table, role, via, peer, now) {
            Decided::Now(decision) => {
                Answering::ready(self.recorded(table, role, via, peer, decision, (now, memo)))
            }
            Decided::FirstSession(status) => {
                let (state, table, peer) = (self.clone(), table.clone(), peer.clone());
                let (role, asked) = (role.to_owned(), OwnedVia::of(via));
                Answering::Later(Box::pin(async move {
                    let via = asked.borrowed();
                    let clock = state.inner.clock.as_ref();
                    let decision = access::first_credentials(status, via, clock).await;
                    Ok(state.recorded(&table, &role, via, &peer, decision, (clock.now(), None)))
                }))
            }
        }
    }

    /// `decision` audited (through the connection's `memo` when it has one) and answered.
    fn recorded(
        &self,
        table: &RoleTable,
        role: &str,
        via: Via<'_>,
        peer: &Peer,
        decision: Decision,
        (now, memo): (SystemTime, Option<&mut ServedMemo>),
    ) -> Answer {
        let audit = &self.inner.audit;
        match memo {
            Some(memo) => audit.record_on(memo, role, via, peer, &decision, now),
            None => audit.record(role, via, peer, &decision),
        }
        if let Some(words) = wording(role, via, &decision) {
            explain(table, role, via, &decision);
            let response = error_response(words.status, words.code, &words.message);
            return response.map(Either::Right);
        }
        match decision {
            Decision::Served { body, .. } => credentials_unboxed(body).map(Either::Left),
            _ => unreachable!("every refusal has its wording"),
        }
    }
}

/// What the daemon's log says of a refusal a client alone could not explain.
fn explain(table: &RoleTable, role: &str, via: Via<'_>, decision: &Decision) {
    match (via, decision) {
        (Via::Metadata { .. }, Decision::Unknown) if !table.contains_key(role) => role_gone(role),
        (Via::Container(_), Decision::WrongToken) => {
            debug!(%role, "request refused: the token is not this role's");
        }
        _ => {}
    }
}

/// Logs that the metadata role `role` is gone from the table (a reload removed it).
fn role_gone(role: &str) {
    warn!(%role, "the metadata role is no longer configured; restart to apply [imds]");
}

/// A refusal on the wire: status, the body's `code` and `message`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Wording {
    status: StatusCode,
    code: &'static str,
    message: Cow<'static, str>,
}

/// Why a request without the right token is refused (also before routing).
pub const UNAUTHORIZED: &str = "missing or invalid Authorization token";
/// Why a user the role does not admit is refused.
const NOT_ADMITTED: &str = "the connecting user may not have this role";

/// How each endpoint words `decision` for role `role`; `None` when it serves credentials.
/// The metadata endpoint answers as the real IMDS: a role it does not serve to this request
/// is a path that does not exist (404 where the container endpoint says 401 or 404), and it
/// keeps STS's error text for the log (its clients need no token to read it). Pure.
fn wording(role: &str, via: Via<'_>, decision: &Decision) -> Option<Wording> {
    let metadata = matches!(via, Via::Metadata { .. });
    let words = |status, code, message: Cow<'static, str>| {
        Some(Wording {
            status,
            code,
            message,
        })
    };
    match decision {
        Decision::Served { .. } => None,
        Decision::Unknown | Decision::WrongToken if metadata => words(
            StatusCode::NOT_FOUND,
            "NotFound",
            crate::imds::NOT_FOUND.into(),
        ),
        Decision::Unknown => words(
            StatusCode::NOT_FOUND,
            "UnknownRole",
            "no such role is configured".into(),
        ),
        Decision::WrongToken => words(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            UNAUTHORIZED.into(),
        ),
        Decision::NotAdmitted => words(StatusCode::FORBIDDEN, "Forbidden", NOT_ADMITTED.into()),
        Decision::UnknownPeer => words(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "this role is served per user, and the connecting user is unknown or has no \
             account on this host"
                .into(),
        ),
        Decision::Full(full) => words(
            StatusCode::SERVICE_UNAVAILABLE,
            "TooManySessions",
            format!(
                "role {role} already holds {} user sessions (its max_sessions); try again \
                 once one is dropped",
                full.limit
            )
            .into(),
        ),
        Decision::Unservable(_) if metadata => words(
            StatusCode::SERVICE_UNAVAILABLE,
            "CredentialsUnavailable",
            "no servable credentials for the metadata role; see the daemon's log".into(),
        ),
        Decision::Unservable(reason) => {
            let (code, message) = unservable(role, reason);
            words(StatusCode::SERVICE_UNAVAILABLE, code, message.into())
        }
    }
}

/// The code and message of a 503 that says why there is nothing to serve.
fn unservable(role: &str, reason: &Unservable) -> (&'static str, String) {
    match reason {
        Unservable::Uninitialized => (
            "CredentialsUninitialized",
            format!("credentials for role {role} have not been fetched yet"),
        ),
        Unservable::Failing(error) => (
            "CredentialsUnavailable",
            format!(
                "cannot get credentials for role {role} ({} error): {error}",
                error.kind.as_str()
            ),
        ),
        Unservable::Expiring(Some(error)) => (
            "CredentialsExpired",
            format!(
                "credentials for role {role} are about to expire and renewing them failed ({} \
                 error): {error}",
                error.kind.as_str()
            ),
        ),
        Unservable::Expiring(None) => (
            "CredentialsExpired",
            format!("credentials for role {role} are about to expire; renewing"),
        ),
    }
}

/// A credentials request's endpoint, owned, for an answer that waits.
enum OwnedVia {
    Container(Option<Grant>),
    Metadata { iam_name: String, extended: bool },
}

impl OwnedVia {
    fn of(via: Via<'_>) -> Self {
        match via {
            Via::Container(grant) => OwnedVia::Container(grant.cloned()),
            Via::Metadata { iam_name, extended } => OwnedVia::Metadata {
                iam_name: iam_name.to_owned(),
                extended,
            },
        }
    }

    fn borrowed(&self) -> Via<'_> {
        match self {
            OwnedVia::Container(grant) => Via::Container(grant.as_ref()),
            OwnedVia::Metadata { iam_name, extended } => Via::Metadata {
                iam_name,
                extended: *extended,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::Full;
    use crate::sts::{ErrorKind, StsError};

    const CONTAINER: Via<'static> = Via::Container(None);
    const METADATA: Via<'static> = Via::Metadata {
        iam_name: "piyo-role",
        extended: false,
    };

    fn said(via: Via<'_>, decision: Decision) -> (u16, &'static str, String) {
        let words = wording("piyo", via, &decision).expect("a refusal");
        (
            words.status.as_u16(),
            words.code,
            words.message.into_owned(),
        )
    }

    /// The one table of refusals: each decision's status and code on each endpoint, the
    /// metadata endpoint's 404 where the container endpoint says 401 or 404, and STS's error
    /// text only behind the container endpoint's token.
    #[test]
    fn each_endpoint_words_each_refusal() {
        let served = Decision::Served {
            body: Bytes::from_static(b"{}"),
            masked_key_id: Arc::from("ASIA****"),
        };
        assert_eq!(wording("piyo", CONTAINER, &served), None);
        assert_eq!(wording("piyo", METADATA, &served), None);
        let failing = Decision::Unservable(Unservable::Failing(StsError::new(
            ErrorKind::Configuration,
            "AccessDenied",
            "not authorized to assume piyo-role",
        )));
        let table = [
            (Decision::Unknown, (404, "UnknownRole"), (404, "NotFound")),
            (
                Decision::WrongToken,
                (401, "Unauthorized"),
                (404, "NotFound"),
            ),
            (
                Decision::NotAdmitted,
                (403, "Forbidden"),
                (403, "Forbidden"),
            ),
            (
                Decision::UnknownPeer,
                (403, "Forbidden"),
                (403, "Forbidden"),
            ),
            (
                Decision::Full(Full { limit: 256 }),
                (503, "TooManySessions"),
                (503, "TooManySessions"),
            ),
            (
                Decision::Unservable(Unservable::Uninitialized),
                (503, "CredentialsUninitialized"),
                (503, "CredentialsUnavailable"),
            ),
            (
                failing.clone(),
                (503, "CredentialsUnavailable"),
                (503, "CredentialsUnavailable"),
            ),
            (
                Decision::Unservable(Unservable::Expiring(None)),
                (503, "CredentialsExpired"),
                (503, "CredentialsUnavailable"),
            ),
        ];
        for (decision, container, metadata) in table {
            let (status, code, _) = said(CONTAINER, decision.clone());
            assert_eq!((status, code), container, "{decision:?} (container)");
            let (status, code, _) = said(METADATA, decision.clone());
            assert_eq!((status, code), metadata, "{decision:?} (metadata)");
        }
        let (_, _, message) = said(CONTAINER, failing.clone());
        assert!(message.contains("not authorized"), "{message}");
        assert!(message.contains("configuration error"), "{message}");
        let (_, _, message) = said(METADATA, failing);
        assert!(!message.contains("not authorized"), "{message}");
        let (_, _, message) = said(CONTAINER, Decision::Full(Full { limit: 256 }));
        assert!(message.contains("256 user sessions"), "{message}");
        let (_, _, message) = said(CONTAINER, Decision::UnknownPeer);
        assert!(message.contains("served per user"), "{message}");
    }

    /// What the log says of a refusal a client alone could not explain: a metadata role a
    /// reload removed (a warning; not for a name that was never the role's), and a container
    /// request whose token is another role's (debug).
    #[tokio::test]
    async fn refusals_are_explained_in_the_log() {
        let logs = crate::fake::CapturedLogs::start();
        let empty = RoleTable::new();
        let (_status, receiver) = tokio::sync::watch::channel(Default::default());
        let entry = crate::roles::RoleEntry {
            config: crate::fake::role("piyo"),
            token: None,
            sessions: crate::roles::Sessions::Shared(receiver),
        };
        let served = RoleTable::from([("piyo".to_owned(), entry)]);
        let gone = "the metadata role is no longer configured";
        explain(&served, "piyo", METADATA, &Decision::Unknown);
        assert_eq!(logs.count("WARN", gone), 0, "the role is there");
        explain(&empty, "piyo", CONTAINER, &Decision::Unknown);
        assert_eq!(logs.count("WARN", gone), 0, "not the metadata endpoint");
        explain(&empty, "piyo", METADATA, &Decision::Unknown);
        assert_eq!(logs.count("WARN", gone), 1);
        explain(&served, "piyo", CONTAINER, &Decision::WrongToken);
        assert_eq!(logs.count("DEBUG", "the token is not this role's"), 1);
        explain(&served, "piyo", METADATA, &Decision::WrongToken);
        assert_eq!(logs.count("DEBUG", "the token is not this role's"), 1);
    }
}
