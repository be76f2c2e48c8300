//! HTTP: the loopback endpoint that hands credentials to clients in the ECS container format.
//!
//! Every request first passes [`check_request`], before any routing: requests that carry
//! browser or proxy headers, or name a host other than this listener, get 403 (a web page or an
//! SSRF on this host must not reach credentials); then anything but the health checks needs a
//! known token in `Authorization`, or gets 401. Only then is the path looked at. Which token
//! was presented is a [`Grant`]: the server's token grants the roles without a token file of
//! their own, `/status` and `/metrics`; a role's own token grants that role and nothing else.
//!
//! Handlers only read: the refresh engine publishes each role's status and the handler decides
//! with `servable` whether to answer with the pre-built body or a 503 that says why. No STS
//! call, file read or allocation of secrets happens on this path.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use axum::Extension;
use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::header::{AUTHORIZATION, FORWARDED, HOST, ORIGIN, REFERER};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::sync::watch;
use tracing::debug;

use crate::access::{Grant, Via, grant_of};
use crate::audit::Audit;
use crate::clock::{Clock, SharedClock};
use crate::http::{error_response, json_response, typed_response};
use crate::metrics::{self, Format, Metrics, Names};
use crate::peer::Peer;
use crate::refresh::servable;
use crate::roles::{RoleEntry, RoleTable, Sessions};
use crate::status;
use crate::token::AuthToken;

mod answer;
mod connection;
mod metadata;
pub use connection::Endpoint;
pub use metadata::Metadata;

/// Paths answered without a token: they reveal nothing but liveness and readiness.
const PUBLIC_PATHS: &[&str] = &["/healthz", "/readyz"];
/// Where the instance-metadata routes live.
const METADATA_PREFIX: &str = "/latest/";
/// The `Host` a client of the real instance metadata sends.
const METADATA_HOSTS: &[&str] = &["169.254.169.254", "169.254.169.254:80"];
/// Headers that only browsers and proxies send; a local SDK never does.
const FORBIDDEN_HEADERS: [HeaderName; 4] = [
    ORIGIN,
    REFERER,
    HeaderName::from_static("x-forwarded-for"),
    FORWARDED,
];

/// What every handler shares: cheap to clone, never locked by a handler.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    /// The server's token; a reload may re-issue it.
    token: watch::Receiver<AuthToken>,
    metrics: Arc<Metrics>,
    /// Where decisions are recorded.
    audit: Arc<Audit>,
    /// The metadata endpoint, when `[imds]` is configured.
    metadata: Option<Arc<Metadata>>,
    roles: watch::Receiver<Arc<RoleTable>>,
    allowed_hosts: Vec<String>,
    clock: SharedClock,
}

impl AppState {
    /// State for listeners bound at `locals`, serving the roles of `roles` to holders of
    /// `token`, and answering as instance metadata if `metadata` is given.
    pub fn new(
        token: watch::Receiver<AuthToken>,
        roles: watch::Receiver<Arc<RoleTable>>,
        locals: &[SocketAddr],
        clock: SharedClock,
        metadata: Option<Metadata>,
        (metrics, audit): (Arc<Metrics>, Arc<Audit>),
    ) -> Self {
        let mut hosts: Vec<String> = locals.iter().copied().flat_map(allowed_hosts).collect();
        hosts.sort_unstable();
        hosts.dedup();
        Self {
            inner: Arc::new(Inner {
                token,
                metrics,
                audit,
                metadata: metadata.map(Arc::new),
                roles,
                allowed_hosts: hosts,
                clock,
            }),
        }
    }
}

/// The `Host` values a client may send to a listener bound at `local` (without the port
/// where it is HTTP's own, 80, as clients then send it).
pub fn allowed_hosts(local: SocketAddr) -> Vec<String> {
    let port = local.port();
    let host = match local {
        SocketAddr::V4(v4) => v4.ip().to_string(),
        SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
    };
    let mut hosts = vec![format!("{host}:{port}"), format!("localhost:{port}")];
    if port == 80 {
        hosts.push(host);
    }
    hosts
}

/// Prefix of the credentials paths, the only ones a role's own token opens.
const ROLES_PREFIX: &str = "/roles/";

/// Why a request is refused before routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// It carries a browser or proxy header.
    Proxied,
    /// Its `Host` (or absolute URI) names something other than this listener, or is missing.
    ForeignHost,
    /// It lacks the token, or carries a wrong one.
    Unauthorized,
    /// It came through the metadata guard's redirect and asks for something else.
    NotMetadata,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Proxied => error_response(
                StatusCode::FORBIDDEN,
                "Forbidden",
                "requests from browsers or through proxies are refused",
            ),
            Refusal::ForeignHost => error_response(
                StatusCode::FORBIDDEN,
                "Forbidden",
                "the Host header does not name this loopback listener",
            ),
            Refusal::Unauthorized => error_response(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                answer::UNAUTHORIZED,
            ),
            Refusal::NotMetadata => error_response(
                StatusCode::NOT_FOUND,
                "NotFound",
                "only instance metadata is answered at this address",
            ),
        }
    }
}

/// What the request checks need of a request's headers, read in one pass (a lookup by name
/// hashes the name; a request has few headers).
#[derive(Default)]
struct Headers<'h> {
    /// A browser or proxy header is present.
    proxied: bool,
    hosts: Sole<'h>,
    authorizations: Sole<'h>,
}

/// The only value of a header, or that there were none or several.
#[derive(Default)]
enum Sole<'h> {
    #[default]
    None,
    One(&'h HeaderValue),
    Several,
}

impl<'h> Sole<'h> {
    fn push(&mut self, value: &'h HeaderValue) {
        *self = match self {
            Sole::None => Sole::One(value),
            _ => Sole::Several,
        };
    }

    fn only(&self) -> Option<&'h HeaderValue> {
        match self {
            Sole::One(value) => Some(value),
            _ => None,
        }
    }
}

impl<'h> Headers<'h> {
    fn of(headers: &'h HeaderMap) -> Self {
        let mut read = Headers::default();
        for (name, value) in headers {
            if name == HOST {
                read.hosts.push(value);
            } else if name == AUTHORIZATION {
                read.authorizations.push(value);
            } else if FORBIDDEN_HEADERS.contains(name) {
                read.proxied = true;
            }
        }
        read
    }

    /// See [`check_origin`].
    fn origin(&self, uri: &Uri, allowed_hosts: &[impl AsRef<str>]) -> Result<(), Refusal> {
        if self.proxied {
            return Err(Refusal::Proxied);
        }
        // Compared as bytes: the allowed names are ASCII, so only ASCII can equal one (a
        // value's own check for visible ASCII would read it once more). Clients send them as
        // they are spelled here: the exact comparison first, the case-blind one if it fails.
        let is_allowed = |host: &[u8]| {
            (allowed_hosts.iter()).any(|allowed| {
                let allowed = allowed.as_ref().as_bytes();
                allowed == host || allowed.eq_ignore_ascii_case(host)
            })
        };
        let host_ok = (self.hosts.only()).is_some_and(|host| is_allowed(host.as_bytes()));
        let authority_ok = (uri.authority()).is_none_or(|a| is_allowed(a.as_str().as_bytes()));
        if !host_ok || !authority_ok {
            return Err(Refusal::ForeignHost);
        }
        Ok(())
    }
}

/// The first rule of every listener: no browser or proxy headers, and exactly one `Host` (and
/// absolute URI authority, if any) among `allowed_hosts`.
pub fn check_origin(
    headers: &HeaderMap,
    uri: &Uri,
    allowed_hosts: &[impl AsRef<str>],
) -> Result<(), Refusal> {
    Headers::of(headers).origin(uri, allowed_hosts)
}

/// The checks every request passes before routing; pure, so each rule has a plain test.
/// `identify` names the grant of a presented token. `Ok(None)`: a path that needs no token.
///
/// A request the metadata guard `redirected` here was sent to the instance metadata: it must
/// name that address as its `Host`, and it gets instance metadata or nothing.
pub fn check_request(
    headers: &HeaderMap,
    uri: &Uri,
    allowed_hosts: &[String],
    identify: impl FnOnce(&[u8]) -> Option<Grant>,
    metadata_enabled: bool,
    redirected: bool,
) -> Result<Option<Grant>, Refusal> {
    let headers = Headers::of(headers);
    match redirected {
        true => headers.origin(uri, METADATA_HOSTS)?,
        false => headers.origin(uri, allowed_hosts)?,
    }
    if redirected {
        let metadata = metadata_enabled && uri.path().starts_with(METADATA_PREFIX);
        return if metadata {
            Ok(None)
        } else {
            Err(Refusal::NotMetadata)
        };
    }
    if PUBLIC_PATHS.contains(&uri.path()) {
        return Ok(None);
    }
    // Instance metadata has its own session tokens, checked by the connection before any
    // metadata read is answered (`connection::Asked`).
    if metadata_enabled && uri.path().starts_with(METADATA_PREFIX) {
        return Ok(None);
    }
    let grant = (headers.authorizations.only()).and_then(|value| identify(value.as_bytes()));
    match grant {
        Some(Grant::Role(_)) if !uri.path().starts_with(ROLES_PREFIX) => Err(Refusal::Unauthorized),
        Some(grant) => Ok(Some(grant)),
        None => Err(Refusal::Unauthorized),
    }
}

/// What a request's checks found, handed to its route: the table snapshot its token was
/// checked on (the connection's), and the grant of that token. Handlers decide on the same
/// snapshot, so a token a reload has just replaced cannot open a role in between (and the
/// token is compared once).
#[derive(Clone)]
struct Checked {
    table: Arc<RoleTable>,
    grant: Option<Grant>,
}

impl AppState {
    /// [`check_request`] against `table` and the server's `token`, with this state's hosts.
    fn check_on(
        &self,
        headers: &HeaderMap,
        uri: &Uri,
        redirected: bool,
        table: &RoleTable,
        token: &AuthToken,
    ) -> Result<Option<Grant>, Refusal> {
        let inner = &self.inner;
        check_request(
            headers,
            uri,
            &inner.allowed_hosts,
            |presented| grant_of(presented, token, table),
            inner.metadata.is_some(),
            redirected,
        )
        .inspect_err(|refusal| debug!(?refusal, path = %uri.path(), "request refused"))
    }

    /// Audits a request to `path` refused for its token, naming the role it asked for if that
    /// is one `table` serves (never a name as the request spells it).
    fn audit_unauthorized(&self, path: &str, table: &RoleTable, peer: &Peer) {
        let asked = path.strip_prefix(ROLES_PREFIX);
        let role = asked.and_then(|name| table.get_key_value(name).map(|(name, _)| name.as_str()));
        self.inner.audit.unauthorized(role, peer);
    }
}

/// What the listeners serve: the hot paths directly, the rest through the routes below.
pub fn router(state: AppState) -> Endpoint {
    Endpoint::new(routes(state.clone()), state)
}

/// The routes: what a connection does not answer directly (the two hot paths' other spellings,
/// `HEAD`, the reports, the rest of the metadata). Each is handed the request's [`Checked`]
/// and `Arc<Peer>` by the connection, which checked it; a route that needs them fails closed
/// without them.
fn routes(state: AppState) -> Router {
    let mut app = Router::new()
        .route("/roles/{name}", get(role_credentials))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status_report))
        .route("/metrics", get(metrics_text))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state.clone());
    if let Some(metadata) = &state.inner.metadata {
        app = app.merge(metadata::routes(state.clone(), metadata.clone()));
    }
    app
}

/// A role name the direct path does not take (percent-encoded, or `HEAD`).
async fn role_credentials(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Extension(peer): Extension<Arc<Peer>>,
    Extension(checked): Extension<Checked>,
) -> Response {
    let via = Via::Container(checked.grant.as_ref());
    let now = state.inner.clock.now();
    let Ok(answer) = state
        .credentials(&checked.table, &name, via, &peer, (now, None))
        .await;
    answer.into_response()
}

async fn healthz() -> Response {
    json_response(StatusCode::OK, json!({"status": "ok"}))
}

/// Ready or not, without a token, so it names no role: which roles exist is for token holders
/// (`/status`).
async fn readyz(State(state): State<AppState>, Extension(checked): Extension<Checked>) -> Response {
    let now = state.inner.clock.now();
    let table = &checked.table;
    // A role served per user has nothing to be ready with until its users ask.
    let waiting = (table.values())
        .filter_map(RoleEntry::shared_status)
        .filter(|status| servable(status, now).is_err());
    let count = waiting.count();
    if count == 0 {
        return json_response(StatusCode::OK, json!({"status": "ready"}));
    }
    let message = format!(
        "{count} of {} roles have no servable credentials",
        table.len()
    );
    error_response(StatusCode::SERVICE_UNAVAILABLE, "NotReady", &message)
}

/// The operator's report (`assume-roled status`); behind the token like the credentials.
async fn status_report(
    State(state): State<AppState>,
    Extension(checked): Extension<Checked>,
) -> Response {
    let now = state.inner.clock.now();
    let guard = crate::guard_state::GuardState::read();
    let report = status::report(&checked.table, guard, now);
    let value = serde_json::to_value(report).expect("the report serialises");
    json_response(StatusCode::OK, value)
}

async fn metrics_text(
    State(state): State<AppState>,
    Extension(checked): Extension<Checked>,
    headers: HeaderMap,
) -> Response {
    let inner = &state.inner;
    let scrape = Scrape {
        names: Names::Shown,
        format: Format::asked_in(&headers),
    };
    render_metrics(&inner.metrics, &checked.table, inner.clock.as_ref(), scrape)
}

/// What a scrape gets: role names or not, and in which format.
struct Scrape {
    names: Names,
    format: Format,
}

fn render_metrics(
    metrics: &Metrics,
    table: &RoleTable,
    clock: &dyn Clock,
    scrape: Scrape,
) -> Response {
    let expiries: Vec<(&str, SystemTime)> = table
        .iter()
        .filter_map(|(name, entry)| {
            let expiry = entry.shared_status()?.current?.credentials.expiration;
            Some((name.as_str(), expiry))
        })
        .collect();
    let sessions: Vec<(&str, usize)> = table
        .iter()
        .filter_map(|(name, entry)| match &entry.sessions {
            Sessions::PerUser(sessions) => Some((name.as_str(), sessions.len())),
            Sessions::Shared(_) => None,
        })
        .collect();
    let guard = crate::guard_state::GuardState::read();
    let text = metrics.render(expiries, sessions, guard, clock.now());
    let text = match scrape.names {
        Names::Shown => text,
        Names::Withheld => metrics::without_names(&text),
    };
    match scrape.format {
        Format::OpenMetrics => typed_response(text, metrics::CONTENT_TYPE),
        Format::Text => typed_response(metrics::as_text_format(&text), metrics::TEXT_CONTENT_TYPE),
    }
}

/// The router of `[server] metrics_listen` bound at `local`: `/metrics` only, without the
/// token, behind the same host and origin rules as the main listener (a web page must not read
/// it either).
pub fn metrics_router(
    metrics: Arc<Metrics>,
    roles: watch::Receiver<Arc<RoleTable>>,
    clock: SharedClock,
    local: SocketAddr,
) -> Router {
    let scrape = move |headers: HeaderMap| {
        // No token here: counts without role or user names.
        let table = roles.borrow().clone();
        let scrape = Scrape {
            names: Names::Withheld,
            format: Format::asked_in(&headers),
        };
        let response = render_metrics(&metrics, &table, clock.as_ref(), scrape);
        async move { response }
    };
    let hosts = allowed_hosts(local);
    let origin = move |request: Request, next: Next| {
        let checked = check_origin(request.headers(), request.uri(), &hosts);
        async move {
            match checked {
                Ok(()) => next.run(request).await,
                Err(refusal) => refusal.into_response(),
            }
        }
    };
    Router::new()
        .route("/metrics", get(scrape))
        .fallback(not_found)
        .layer(middleware::from_fn(origin))
}

async fn not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "NotFound", "no such path")
}

async fn method_not_allowed() -> Response {
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        "only GET is supported",
    )
}

#[cfg(test)]
mod tests;
