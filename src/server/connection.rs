//! What one connection is served. Every request of the main and container listeners is
//! checked here, on the connection's own snapshot of the role table and token
//! ([`AppState::check_on`]), a metadata read's session token too, and counted here, once
//! (the metrics listener's router checks its own).
//! Nearly all traffic is two requests: `GET /roles/<name>` and the metadata credentials read.
//! Those are answered here, at once, with the one answer path ([`AppState::credentials`]): no
//! router, service clone, request extension or boxed body, which is most of what the daemon
//! cost over a bare server (README, Benchmarks). The rest goes through the router, handed
//! what the checks found.

use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::http::{Method, Request};
use bytes::Bytes;
use http_body_util::Either;
use tokio::sync::watch;
use tower::ServiceExt;

use super::answer::Answering;
use super::metadata::SessionChecked;
use super::{AppState, Checked, Metadata, ROLES_PREFIX};
use crate::access::Via;
use crate::audit::ServedMemo;
use crate::imds::{self, KnownSession};
use crate::listener::{App, Progress, Redirected};
use crate::metrics;
use crate::peer::{NameSource, Peer, Resolver};
use crate::roles::RoleTable;
use crate::token::AuthToken;

pub use super::answer::{Answer, Body};

/// What the listeners serve: makes each connection's service, knowing who is at the other end.
#[derive(Clone)]
pub struct Endpoint {
    router: Router,
    /// The state requests are checked and answered with; `None` where the router alone
    /// serves (the metrics listener, whose router checks what it needs).
    state: Option<AppState>,
}

impl Endpoint {
    /// Requests checked and answered with `state`, the rest by `router`.
    pub fn new(router: Router, state: AppState) -> Self {
        Self {
            router,
            state: Some(state),
        }
    }

    /// Everything through `router`.
    pub fn routed(router: Router) -> Self {
        Self {
            router,
            state: None,
        }
    }
}

impl App for Endpoint {
    type Body = Body;
    type Service = Connection;

    fn connection(
        &self,
        peer: Arc<Peer>,
        names: Option<NameSource>,
        redirected: Option<Redirected>,
        progress: Arc<Progress>,
    ) -> Connection {
        let checked = (self.state.clone()).map(|state| Checking {
            snapshot: RefCell::new(state.snapshot()),
            state,
            session: RefCell::default(),
            served: RefCell::default(),
        });
        Connection {
            router: self.router.clone(),
            checked,
            peer: RefCell::new(peer),
            names: names.map(|source| (source.resolver, Cell::new(source.generation))),
            redirected: redirected.is_some(),
            progress,
        }
    }
}

#[cfg(any(test, feature = "fuzzing"))]
impl Endpoint {
    /// `request` answered as on a connection of its own from `peer` (tests, fuzzing).
    pub async fn answer<B>(&self, peer: Peer, request: Request<B>) -> Answer
    where
        B: axum::body::HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        let connection = self.connection(Arc::new(peer), None, None, Arc::default());
        let Ok(answer) = hyper::service::Service::call(&connection, request).await;
        answer
    }
}

/// One connection's service (`hyper::service::Service`).
pub struct Connection {
    router: Router,
    /// What requests are checked and answered with; `None` where the router alone serves.
    checked: Option<Checking>,
    /// Who is at the other end, with their user's names as of `names`' generation.
    peer: RefCell<Arc<Peer>>,
    /// Where the user's names come from, and the generation `peer` holds: when the resolver's
    /// moves on (an account file changed, or a minute passed), the names are taken again, so
    /// that a user who lost a group loses what it gave on the next request.
    names: Option<(Arc<Resolver>, Cell<u64>)>,
    /// Whether the metadata guard redirected the connection here.
    redirected: bool,
    progress: Arc<Progress>,
}

/// A connection's means to check and answer its requests.
struct Checking {
    state: AppState,
    snapshot: RefCell<Snapshot>,
    /// The metadata session token this connection presented last.
    session: RefCell<KnownSession>,
    /// The set this connection was last served, and its repeats the audit has yet to take.
    served: RefCell<ServedMemo>,
}

impl Drop for Connection {
    /// The repeats this connection counted go to the audit's table, for its summary.
    fn drop(&mut self) {
        if let Some(checking) = &mut self.checked {
            let audit = &checking.state.inner.audit;
            audit.close(checking.served.get_mut(), &self.peer.borrow());
        }
    }
}

impl<B> hyper::service::Service<Request<B>> for Connection
where
    B: axum::body::HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Answer;
    type Error = Infallible;
    type Future = Answering;

    fn call(&self, request: Request<B>) -> Answering {
        self.progress.started();
        let Some(checking) = &self.checked else {
            let router = self.router.clone();
            return self.meanwhile_busy(Answering::Later(Box::pin(async move {
                let Ok(response) = router.oneshot(request).await;
                Ok(response.map(Either::Right))
            })));
        };
        let answering = match self.names_current() {
            Ok(()) => {
                let mut snapshot = checking.snapshot.borrow_mut();
                let (table, token) = snapshot.now();
                let on = On {
                    peer: &self.peer.borrow(),
                    redirected: self.redirected,
                    session: &mut checking.session.borrow_mut(),
                    served: Some(&mut checking.served.borrow_mut()),
                    router: &self.router,
                };
                checking.state.respond(request, on, table, token)
            }
            Err(uid) => self.with_names_of(uid, request, checking),
        };
        let audit = &checking.state.inner.audit;
        let clock = || crate::clock::Clock::now(checking.state.inner.clock.as_ref());
        audit.after_request(
            &mut checking.served.borrow_mut(),
            &self.peer.borrow(),
            clock,
        );
        self.meanwhile_busy(answering)
    }
}

impl Connection {
    /// Brings the user's names up to the resolver's generation where they are known (one
    /// atomic load when nothing changed); `Err(uid)` when they must be asked for first.
    fn names_current(&self) -> Result<(), u32> {
        let Some((resolver, held)) = &self.names else {
            return Ok(());
        };
        let now = resolver.generation();
        if held.get() == now {
            return Ok(());
        }
        let mut peer = self.peer.borrow_mut();
        let uid = peer.uid.expect("names are followed for local users only");
        let names = resolver.cached_names(uid).ok_or(uid)?;
        *peer = Arc::new(peer.with_names(names));
        held.set(now);
        Ok(())
    }

    /// `request` answered once `uid`'s names are known again (asked of the name service off
    /// the runtime, which may take a while; the next request finds them cached), checked on
    /// the table and token as they are then: a reload meanwhile applies to it.
    fn with_names_of<B>(&self, uid: u32, request: Request<B>, checking: &Checking) -> Answering
    where
        B: axum::body::HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        let (resolver, _) = self.names.as_ref().expect("names_current found a source");
        let (resolver, peer) = (resolver.clone(), self.peer.borrow().clone());
        let state = checking.state.clone();
        let (router, redirected) = (self.router.clone(), self.redirected);
        Answering::Later(Box::pin(async move {
            let names = resolver.current_names(uid).await;
            let mut snapshot = state.snapshot();
            let (table, token) = snapshot.now();
            let on = On {
                peer: &Arc::new(peer.with_names(names)),
                redirected,
                session: &mut KnownSession::default(),
                served: None,
                router: &router,
            };
            state.respond(request, on, table, token).await
        }))
    }

    /// `answering`, with the connection marked busy until it is answered: it is not idle.
    fn meanwhile_busy(&self, answering: Answering) -> Answering {
        let Answering::Later(later) = answering else {
            return answering;
        };
        let busy = self.progress.answering();
        Answering::Later(Box::pin(async move {
            let answer = later.await;
            drop(busy);
            answer
        }))
    }
}

/// What answering a request needs of the connection it came on.
struct On<'c> {
    peer: &'c Arc<Peer>,
    /// Whether the metadata guard redirected the connection here.
    redirected: bool,
    session: &'c mut KnownSession,
    /// The connection's memory of what it was served (none where it is not at hand).
    served: Option<&'c mut ServedMemo>,
    router: &'c Router,
}

impl AppState {
    /// A connection's request, checked against `table` and `token` and answered: refused,
    /// answered on the one credentials path, or routed; counted once.
    fn respond<B>(
        &self,
        request: Request<B>,
        on: On<'_>,
        table: &Arc<RoleTable>,
        token: &AuthToken,
    ) -> Answering
    where
        B: axum::body::HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        let route = metrics::route_label(request.uri().path());
        let (headers, uri) = (request.headers(), request.uri());
        let answering = match self.check_on(headers, uri, on.redirected, table, token) {
            Err(refused) => {
                if refused == super::Refusal::Unauthorized {
                    self.audit_unauthorized(uri.path(), table, on.peer);
                }
                Answering::routed(axum::response::IntoResponse::into_response(refused))
            }
            Ok(grant) => self.granted(request, grant, on, table),
        };
        answering.counted(&self.inner.metrics, route)
    }

    /// A request that passed the checks with `grant`.
    fn granted<B>(
        &self,
        request: Request<B>,
        grant: Option<crate::access::Grant>,
        on: On<'_>,
        table: &Arc<RoleTable>,
    ) -> Answering
    where
        B: axum::body::HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        let metadata = self.inner.metadata.as_deref();
        let mut session = None;
        // One reading of the clock for the whole request: session, decision and audit.
        let now = || crate::clock::Clock::now(self.inner.clock.as_ref());
        match Asked::of(&request, metadata) {
            Asked::Role(name) => {
                let via = Via::Container(grant.as_ref());
                return self.credentials(table, name, via, on.peer, (now(), on.served));
            }
            Asked::Metadata { metadata, read } => {
                let now = now();
                if !(metadata.imds()).has_session(request.headers(), on.session, now) {
                    return Answering::routed(imds::session_required());
                }
                if let Some((iam_name, extended)) = read {
                    let via = Via::Metadata { iam_name, extended };
                    return self.credentials(
                        table,
                        metadata.role(),
                        via,
                        on.peer,
                        (now, on.served),
                    );
                }
                session = Some(SessionChecked);
            }
            Asked::Other => {}
        }
        let checked = Checked {
            table: table.clone(),
            grant,
        };
        through_router(request, (checked, session), on)
    }
}

/// `request` through the router, handed what its checks found (and, for a metadata read, that
/// its session was checked) and who sent it.
fn through_router<B>(
    mut request: Request<B>,
    (checked, session): (Checked, Option<SessionChecked>),
    on: On<'_>,
) -> Answering
where
    B: axum::body::HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let extensions = request.extensions_mut();
    extensions.insert(checked);
    extensions.insert(on.peer.clone());
    if let Some(session) = session {
        extensions.insert(session);
    }
    let router = on.router.clone();
    Answering::Later(Box::pin(async move {
        let Ok(response) = router.oneshot(request).await;
        Ok(response.map(Either::Right))
    }))
}

/// What a checked request asks for, as far as the connection answers it or checks more.
enum Asked<'r> {
    /// `GET /roles/<name>`, with a name needing no percent-decoding: exactly what the router
    /// would hand its role route, answered directly.
    Role(&'r str),
    /// A read of the metadata endpoint (`GET` or `HEAD` below `/latest/`), which needs a
    /// session token; `read` is the credentials read answered directly, `Some((iam_name,
    /// extended))` (`GET` only).
    Metadata {
        metadata: &'r Metadata,
        read: Option<(&'r str, bool)>,
    },
    /// Anything else: the router's.
    Other,
}

impl<'r> Asked<'r> {
    /// What `request` asks for, with the metadata endpoint where it is served. Pure.
    fn of<B>(request: &'r Request<B>, metadata: Option<&'r Metadata>) -> Self {
        let path = request.uri().path();
        let get = request.method() == Method::GET;
        if let Some(name) = path.strip_prefix(ROLES_PREFIX) {
            let plain = get && !name.is_empty() && !name.contains(['%', '/']);
            return if plain {
                Asked::Role(name)
            } else {
                Asked::Other
            };
        }
        let reads = get || request.method() == Method::HEAD;
        match metadata {
            Some(metadata) if reads && path.starts_with(super::METADATA_PREFIX) => {
                let read = imds::credentials_path(path).filter(|_| get);
                Asked::Metadata { metadata, read }
            }
            _ => Asked::Other,
        }
    }
}

/// One connection's copy of the role table and the server's token as last published, read
/// again only after a reload has published new ones: seeing that takes one atomic load, where
/// reading the shared copy takes a lock and a reference count that every connection touches.
pub(super) struct Snapshot {
    roles: watch::Receiver<Arc<RoleTable>>,
    token: watch::Receiver<AuthToken>,
    table: Arc<RoleTable>,
    current: AuthToken,
}

impl AppState {
    /// A connection's own [`Snapshot`] of what its requests are checked against.
    pub(super) fn snapshot(&self) -> Snapshot {
        let (mut roles, mut token) = (self.inner.roles.clone(), self.inner.token.clone());
        let table = roles.borrow_and_update().clone();
        let current = token.borrow_and_update().clone();
        Snapshot {
            roles,
            token,
            table,
            current,
        }
    }
}

impl Snapshot {
    /// The table and token now.
    pub(super) fn now(&mut self) -> (&Arc<RoleTable>, &AuthToken) {
        // A closed channel (`Err`) may still hold a value not read yet: read it.
        if !matches!(self.roles.has_changed(), Ok(false)) {
            self.table = self.roles.borrow_and_update().clone();
        }
        if !matches!(self.token.has_changed(), Ok(false)) {
            self.current = self.token.borrow_and_update().clone();
        }
        (&self.table, &self.current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imds::{Imds, Upstream};

    fn asked(method: Method, path: &str, metadata: bool) -> String {
        let served = Metadata::new(
            "piyo",
            Imds::new(Upstream::new("http://127.0.0.1:9").unwrap()),
        );
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap();
        match Asked::of(&request, metadata.then_some(&served)) {
            Asked::Role(name) => format!("role {name}"),
            Asked::Metadata {
                read: Some((iam_name, extended)),
                ..
            } => format!("credentials {iam_name} {extended}"),
            Asked::Metadata { read: None, .. } => "metadata read".to_owned(),
            Asked::Other => "other".to_owned(),
        }
    }

    /// Only what the router would hand the same handler, unchanged, is answered directly;
    /// every read of the metadata endpoint, direct or routed, has its session checked.
    #[test]
    fn what_is_answered_directly_and_what_needs_a_session() {
        assert_eq!(asked(Method::GET, "/roles/piyo", false), "role piyo");
        assert_eq!(asked(Method::GET, "/roles/piyo?x=1", false), "role piyo");
        for routed in [
            "/roles/",
            "/roles/pi%79o",
            "/roles/a/b",
            "/status",
            "/healthz",
        ] {
            assert_eq!(asked(Method::GET, routed, true), "other", "{routed}");
        }
        assert_eq!(asked(Method::HEAD, "/roles/piyo", false), "other");
        let path = "/latest/meta-data/iam/security-credentials/piyo-role";
        assert_eq!(
            asked(Method::GET, path, true),
            "credentials piyo-role false"
        );
        assert_eq!(asked(Method::HEAD, path, true), "metadata read");
        assert_eq!(asked(Method::GET, path, false), "other", "no [imds]");
        let extended = "/latest/meta-data/iam/security-credentials-extended/piyo-role";
        assert_eq!(
            asked(Method::GET, extended, true),
            "credentials piyo-role true"
        );
        for read in [
            "/latest/meta-data/iam/security-credentials/",
            "/latest/meta-data/iam/security-credentials/piyo-role/",
            "/latest/meta-data/iam/security-credentials/..",
            "/latest/meta-data/iam/security-credentials/pi%79o-role",
            "/latest/meta-data/iam/security-credentialsX/piyo-role",
            "/latest/meta-data/iam/info",
            "/latest/api/token",
        ] {
            assert_eq!(asked(Method::GET, read, true), "metadata read", "{read}");
        }
        assert_eq!(asked(Method::PUT, "/latest/api/token", true), "other");
    }
}
