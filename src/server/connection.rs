//! What one connection is served. Nearly all traffic is two requests: `GET /roles/<name>` and
//! the metadata credentials read. Those are answered here, at once: the same checks
//! ([`AppState::check`]), the same decision (`access::decide_now`) and audit as the routes,
//! but no router, middleware future, service clone, request extension or boxed body. That is
//! most of what the daemon cost over a bare server (README, Benchmarks). A user's first request
//! to a new per-user session, which waits for its first credentials, is answered in a future;
//! everything else goes through the router.

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::http::{Method, Request, Response};
use bytes::Bytes;
use http_body_util::{Either, Full};
use tower::ServiceExt;

use super::{AppState, ROLES_PREFIX, Snapshot, role_response};
use crate::access::{self, Decided, Decision, Grant, Via};
use crate::http::credentials_unboxed;
use crate::imds::{self, KnownSession};
use crate::listener::{App, Progress, Redirected};
use crate::metrics;
use crate::peer::{NameSource, Peer};
use crate::roles::RoleTable;
use crate::token::AuthToken;

/// A response body: the credentials as they are, or whatever the router built.
pub type Body = Either<Full<Bytes>, axum::body::Body>;
/// A response as a connection sends it.
pub type Answer = Response<Body>;

/// What the listeners serve: makes each connection's service, knowing who is at the other end.
#[derive(Clone)]
pub struct Endpoint {
    router: Router,
    /// The state the hot paths are answered with; `None` where only the router serves (the
    /// metrics listener).
    direct: Option<AppState>,
}

impl Endpoint {
    /// The hot paths answered with `state`, the rest by `router`.
    pub fn new(router: Router, state: AppState) -> Self {
        Self {
            router,
            direct: Some(state),
        }
    }

    /// Everything through `router`.
    pub fn routed(router: Router) -> Self {
        Self {
            router,
            direct: None,
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
        Connection {
            snapshot: (self.direct.as_ref()).map(|state| RefCell::new(state.snapshot())),
            endpoint: self.clone(),
            peer: RefCell::new(peer),
            names: names.map(|source| (source.resolver, std::cell::Cell::new(source.generation))),
            redirected,
            progress,
            session: RefCell::default(),
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

/// What the hot paths need of the connection a request came on.
struct On<'c> {
    peer: &'c Arc<Peer>,
    /// Whether the metadata guard redirected the connection here.
    redirected: bool,
    session: &'c mut KnownSession,
}

/// One connection's service (`hyper::service::Service`).
pub struct Connection {
    endpoint: Endpoint,
    /// Who is at the other end, with their user's names as of `names`' generation.
    peer: RefCell<Arc<Peer>>,
    /// Where the user's names come from, and the generation `peer` holds: when the resolver's
    /// moves on (an account file changed, or a minute passed), the names are taken again, so
    /// that a user who lost a group loses what it gave on the next request.
    names: Option<(Arc<crate::peer::Resolver>, std::cell::Cell<u64>)>,
    redirected: Option<Redirected>,
    progress: Arc<Progress>,
    /// What the hot paths check requests against; `None` where only the router serves.
    snapshot: Option<RefCell<Snapshot>>,
    /// The metadata session token this connection presented last.
    session: RefCell<KnownSession>,
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
        if let Err(uid) = self.names_current() {
            return self.routed_with_names_of(uid, request);
        }
        let peer = self.peer.borrow();
        if let (Some(state), Some(snapshot)) = (&self.endpoint.direct, &self.snapshot)
            && let Some(hot) = Hot::of(&request, state.inner.imds.is_some())
        {
            let mut snapshot = snapshot.borrow_mut();
            let (table, token) = snapshot.now();
            let redirected = self.redirected.is_some();
            let session = &mut self.session.borrow_mut();
            let on = On {
                peer: &peer,
                redirected,
                session,
            };
            return match state.answer_hot(hot, &request, on, table, token) {
                Answering::Later(later) => self.meanwhile_busy(later),
                ready => ready,
            };
        }
        let mut request = request;
        request.extensions_mut().insert(peer.clone());
        if let Some(redirected) = self.redirected {
            request.extensions_mut().insert(redirected);
        }
        let router = self.endpoint.router.clone();
        self.meanwhile_busy(Box::pin(async move {
            let Ok(response) = router.oneshot(request).await;
            Ok(response.map(Either::Right))
        }))
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

    /// `request` answered through the router once `uid`'s names are known again (asked of the
    /// name service off the runtime; the next request finds them cached).
    fn routed_with_names_of<B>(&self, uid: u32, mut request: Request<B>) -> Answering
    where
        B: axum::body::HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        let (resolver, _) = self.names.as_ref().expect("names_current found a source");
        let (resolver, peer) = (resolver.clone(), self.peer.borrow().clone());
        if let Some(redirected) = self.redirected {
            request.extensions_mut().insert(redirected);
        }
        let router = self.endpoint.router.clone();
        self.meanwhile_busy(Box::pin(async move {
            let names = resolver.current_names(uid).await;
            request
                .extensions_mut()
                .insert(Arc::new(peer.with_names(names)));
            let Ok(response) = router.oneshot(request).await;
            Ok(response.map(Either::Right))
        }))
    }

    /// `later`, with the connection marked busy until it is answered: it is not idle.
    fn meanwhile_busy(&self, later: Later) -> Answering {
        let busy = self.progress.answering();
        Answering::Later(Box::pin(async move {
            let answer = later.await;
            drop(busy);
            answer
        }))
    }
}

/// A connection's answer to one request: ready at once, or coming.
pub enum Answering {
    Ready(Option<Answer>),
    Later(Later),
}

/// An answer that takes a while: routed, or waiting for a new session's first credentials.
type Later = Pin<Box<dyn Future<Output = Result<Answer, Infallible>> + Send>>;

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

/// The requests answered without the router. Each is exactly what the router would route to
/// the same handler: a name needing no percent-decoding, `GET` only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hot<'r> {
    /// `GET /roles/<name>`.
    Role(&'r str),
    /// `GET /latest/meta-data/iam/security-credentials[-extended]/<iam_name>`.
    Metadata { iam_name: &'r str, extended: bool },
}

impl<'r> Hot<'r> {
    /// Which hot path `request` takes, if any (the metadata one only where `metadata` is
    /// served). Pure.
    fn of<B>(request: &'r Request<B>, metadata: bool) -> Option<Self> {
        if request.method() != Method::GET {
            return None;
        }
        let path = request.uri().path();
        if let Some(name) = path.strip_prefix(ROLES_PREFIX) {
            let plain = !name.is_empty() && !name.contains(['%', '/']);
            return plain.then_some(Hot::Role(name));
        }
        let (iam_name, extended) = imds::credentials_path(path).filter(|_| metadata)?;
        Some(Hot::Metadata { iam_name, extended })
    }
}

impl AppState {
    /// The answer to a `hot` request from `peer`, checked against `table` and `token`.
    fn answer_hot<B>(
        &self,
        hot: Hot<'_>,
        request: &Request<B>,
        on: On<'_>,
        table: &Arc<RoleTable>,
        token: &AuthToken,
    ) -> Answering {
        let route = metrics::route_label(request.uri().path());
        let (headers, uri) = (request.headers(), request.uri());
        let checked = self.check_on(headers, uri, on.redirected, table, token);
        let answering = match checked {
            Err(refused) => {
                if refused == super::Refusal::Unauthorized {
                    let role = match hot {
                        Hot::Role(name) => table.get_key_value(name).map(|(name, _)| name.as_str()),
                        Hot::Metadata { .. } => None,
                    };
                    self.inner.audit.unauthorized(role, on.peer);
                }
                routed(axum::response::IntoResponse::into_response(refused))
            }
            Ok(grant) => match hot {
                Hot::Role(name) => self.role_now(name, on.peer, table, grant),
                Hot::Metadata { iam_name, extended } => {
                    self.metadata_now(iam_name, extended, request, on, table)
                }
            },
        };
        match answering {
            Answering::Ready(answer) => {
                Answering::Ready(answer.map(|answer| self.counted(route, answer)))
            }
            Answering::Later(later) => {
                let state = self.clone();
                Answering::Later(Box::pin(async move {
                    let Ok(answer) = later.await;
                    Ok(state.counted(route, answer))
                }))
            }
        }
    }

    fn counted(&self, route: &'static str, answer: Answer) -> Answer {
        (self.inner.metrics).request(route, answer.status().as_u16());
        answer
    }

    fn role_now(
        &self,
        name: &str,
        peer: &Arc<Peer>,
        table: &RoleTable,
        grant: Option<Grant>,
    ) -> Answering {
        let via = Via::Container(grant.as_ref());
        let clock = self.inner.clock.as_ref();
        match access::decide_now(table, name, via, peer, clock) {
            Decided::Now(decision) => {
                self.inner.audit.record(name, via, peer, &decision);
                Answering::Ready(Some(reply(decision, |d| role_response(name, d))))
            }
            Decided::FirstSession(status) => {
                let (state, name, peer) = (self.clone(), name.to_owned(), peer.clone());
                Answering::Later(Box::pin(async move {
                    let via = Via::Container(grant.as_ref());
                    let clock = state.inner.clock.as_ref();
                    let decision = access::first_credentials(status, via, clock).await;
                    state.inner.audit.record(&name, via, &peer, &decision);
                    Ok(reply(decision, |d| role_response(&name, d)))
                }))
            }
        }
    }

    fn metadata_now<B>(
        &self,
        iam_name: &str,
        extended: bool,
        request: &Request<B>,
        on: On<'_>,
        table: &Arc<RoleTable>,
    ) -> Answering {
        let metadata =
            (self.inner.imds.as_ref()).expect("the metadata path is hot only with [imds]");
        if !metadata.has_session_on(request.headers(), on.session) {
            return routed(imds::session_required());
        }
        let peer = on.peer;
        let via = Via::Metadata { iam_name, extended };
        let clock = self.inner.clock.as_ref();
        match access::decide_now(table, metadata.role(), via, peer, clock) {
            Decided::Now(decision) => {
                self.inner
                    .audit
                    .record(metadata.role(), via, peer, &decision);
                Answering::Ready(Some(reply(decision, |d| {
                    metadata.credentials_answer(table, d)
                })))
            }
            Decided::FirstSession(status) => {
                let (state, iam_name, peer) = (self.clone(), iam_name.to_owned(), peer.clone());
                let (metadata, table) = (metadata.clone(), table.clone());
                Answering::Later(Box::pin(async move {
                    let via = Via::Metadata {
                        iam_name: &iam_name,
                        extended,
                    };
                    let clock = state.inner.clock.as_ref();
                    let decision = access::first_credentials(status, via, clock).await;
                    state
                        .inner
                        .audit
                        .record(metadata.role(), via, &peer, &decision);
                    Ok(reply(decision, |d| metadata.credentials_answer(&table, d)))
                }))
            }
        }
    }
}

/// The answer to `decision`: served credentials as they are (unboxed), anything else as
/// `otherwise` words it.
fn reply(
    decision: Decision,
    otherwise: impl FnOnce(Decision) -> axum::response::Response,
) -> Answer {
    match decision {
        Decision::Served { body, .. } => credentials_unboxed(body).map(Either::Left),
        refused => otherwise(refused).map(Either::Right),
    }
}

/// A ready answer the router's helpers built.
fn routed(response: axum::response::Response) -> Answering {
    Answering::Ready(Some(response.map(Either::Right)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hot(method: Method, path: &str, metadata: bool) -> Option<String> {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap();
        Hot::of(&request, metadata).map(|hot| format!("{hot:?}"))
    }

    /// Only what the router would hand the same handler, unchanged, takes the hot path.
    #[test]
    fn hot_paths_are_exactly_the_plain_reads() {
        let role = |name: &str| Some(format!("{:?}", Hot::Role(name)));
        assert_eq!(hot(Method::GET, "/roles/piyo", false), role("piyo"));
        assert_eq!(hot(Method::GET, "/roles/piyo?x=1", false), role("piyo"));
        for routed in [
            "/roles/",
            "/roles/pi%79o",
            "/roles/a/b",
            "/status",
            "/healthz",
        ] {
            assert_eq!(hot(Method::GET, routed, true), None, "{routed}");
        }
        assert_eq!(hot(Method::HEAD, "/roles/piyo", false), None);
        let path = "/latest/meta-data/iam/security-credentials/piyo-role";
        let metadata = |extended| {
            let iam_name = "piyo-role";
            Some(format!("{:?}", Hot::Metadata { iam_name, extended }))
        };
        assert_eq!(hot(Method::GET, path, true), metadata(false));
        assert_eq!(hot(Method::GET, path, false), None, "no [imds]");
        let extended = "/latest/meta-data/iam/security-credentials-extended/piyo-role";
        assert_eq!(hot(Method::GET, extended, true), metadata(true));
        for routed in [
            "/latest/meta-data/iam/security-credentials/",
            "/latest/meta-data/iam/security-credentials/piyo-role/",
            "/latest/meta-data/iam/security-credentials/..",
            "/latest/meta-data/iam/security-credentials/pi%79o-role",
            "/latest/meta-data/iam/security-credentialsX/piyo-role",
            "/latest/meta-data/iam/info",
        ] {
            assert_eq!(hot(Method::GET, routed, true), None, "{routed}");
        }
    }
}
