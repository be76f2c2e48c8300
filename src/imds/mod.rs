//! An IMDSv2-compatible endpoint for tools that only speak instance metadata.
//!
//! Pointed at the daemon with `AWS_EC2_METADATA_SERVICE_ENDPOINT`, such a tool gets the assumed
//! role's credentials under `iam/`, from the same refresh engine (and so the same STS calls) as
//! the ECS endpoint, while everything else it reads (region, availability zone, instance id,
//! identity document) is passed through from the real instance metadata. Nothing under the real
//! metadata's `iam/` is ever passed through: the instance's own credentials must not leak.
//!
//! Session tokens are stateless: the expiry and an HMAC of it under a key generated at start, so
//! no table grows with clients. As with the real IMDS, the token stops SSRF (a `PUT` with a
//! custom header, refused when proxied), not local processes: any process that can reach the
//! port gets credentials. That is why the endpoint is off unless `[imds] role` names a role.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, put};
use axum::{Extension, Router};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::sync::watch;
use tracing::warn;
use zeroize::Zeroizing;

use crate::access::{self, Decision, Via};
use crate::audit::Audit;
use crate::clock::SharedClock;
use crate::credentials::format_timestamp;
use crate::http::{credentials_response, error_response, json_response, text_response};
use crate::peer::Peer;
use crate::refresh::RoleStatus;
use crate::roles::RoleTable;

pub(crate) mod upstream;

pub use upstream::{DEFAULT_UPSTREAM, Upstream, UpstreamError};

/// The header a client names the token's lifetime in, echoed back (Go and Rust need the echo).
pub const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
/// The header carrying the session token on every `GET`.
pub const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
/// The real IMDS accepts token lifetimes from one second to six hours.
const TTL_RANGE: std::ops::RangeInclusive<u64> = 1..=21_600;
type HmacSha256 = Hmac<Sha256>;

/// Issues and checks IMDSv2 session tokens: `<expiry seconds>.<hex HMAC of those digits>`.
pub struct SessionTokens {
    /// The HMAC already keyed (with a random key made at start): every check clones it
    /// instead of re-deriving the key's pads, and nothing is allocated.
    keyed: HmacSha256,
}

impl SessionTokens {
    /// Tokens under a fresh random key; they die with the process, as real IMDS tokens do
    /// with the instance.
    pub fn new() -> Self {
        let key: Zeroizing<[u8; 32]> = Zeroizing::new(rand::random());
        let keyed = HmacSha256::new_from_slice(key.as_ref()).expect("any key length works");
        Self { keyed }
    }

    fn mac(&self, expiry_digits: &[u8]) -> HmacSha256 {
        let mut mac = self.keyed.clone();
        mac.update(expiry_digits);
        mac
    }

    /// A token valid for `ttl` from `now`.
    pub fn mint(&self, now: SystemTime, ttl: Duration) -> String {
        let expiry = (unix_seconds(now) + ttl.as_secs()).to_string();
        let tag = self.mac(expiry.as_bytes()).finalize().into_bytes();
        let hex: String = tag.iter().map(|byte| format!("{byte:02x}")).collect();
        format!("{expiry}.{hex}")
    }

    /// Whether `token` was minted here and has not expired at `now` (the tests' word for what
    /// [`Imds::has_session_on`] checks).
    #[cfg(test)]
    fn verify(&self, token: &[u8], now: SystemTime) -> bool {
        self.signed_expiry(token)
            .is_some_and(|expiry| expiry > unix_seconds(now))
    }

    /// The expiry (Unix seconds) `token` carries, if it was minted here; expired or not.
    fn signed_expiry(&self, token: &[u8]) -> Option<u64> {
        let dot = token.iter().position(|b| *b == b'.')?;
        let (digits, tag) = (&token[..dot], &token[dot + 1..]);
        let expiry = std::str::from_utf8(digits).ok()?.parse::<u64>().ok()?;
        let tag = decode_hex(tag)?;
        self.mac(digits).verify_slice(&tag).ok().map(|()| expiry)
    }
}

/// The session token a connection last presented that was minted here, with its expiry. A
/// client sends the same token with every request, and only the time can change the answer:
/// one connection checks its signature once, not on every request.
#[derive(Default)]
pub struct KnownSession(Option<(Box<[u8]>, u64)>);

impl KnownSession {
    /// The signed expiry of `token`: remembered if it is the token seen last, else `verify`'s.
    fn expiry_of(&mut self, token: &[u8], verify: impl FnOnce() -> Option<u64>) -> Option<u64> {
        // A plain comparison: what its timing could tell is how much of the token this very
        // connection sent before matches the one it sends now.
        if let Some((known, expiry)) = &self.0
            && **known == *token
        {
            return Some(*expiry);
        }
        let expiry = verify()?;
        self.0 = Some((token.into(), expiry));
        Some(expiry)
    }
}

impl Default for SessionTokens {
    fn default() -> Self {
        Self::new()
    }
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Decodes the 64 hex digits of an HMAC-SHA256 tag.
fn decode_hex(text: &[u8]) -> Option<[u8; 32]> {
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut tag = [0u8; 32];
    if text.len() != 64 {
        return None;
    }
    for (byte, pair) in tag.iter_mut().zip(text.chunks_exact(2)) {
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(tag)
}

/// The token lifetime a `PUT` asks for, if it is one IMDS would accept.
pub fn requested_ttl(headers: &HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(TTL_HEADER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    TTL_RANGE
        .contains(&seconds)
        .then(|| Duration::from_secs(seconds))
}

/// What a `GET /latest/<path>` is, decided from the path alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `meta-data/iam/`: what the real IMDS lists there.
    IamListing,
    /// `meta-data/iam/security-credentials/`: the served role's name.
    RoleList,
    /// `meta-data/iam/security-credentials/<name>`.
    Credentials(String),
    /// `meta-data/iam/security-credentials-extended/<name>`: the same with `AccountId`.
    ExtendedCredentials(String),
    /// `meta-data/iam/info`.
    Info,
    /// Read from the real instance metadata: the full path to ask for.
    Upstream(String),
    /// Anything else, including the rest of `iam/` and anything that tries to escape.
    NotFound,
}

/// The metadata tools read, passed through from the real instance metadata: what SDKs ask for
/// (region, instance id and type, the identity document) and what tools use to describe the
/// host. Nothing else passes: not `iam/` or `identity-credentials/` (the instance's own keys),
/// not `user-data` (often secrets), nor anything not listed, whatever its case or encoding.
const PASSED: &[&str] = &[
    "meta-data",
    "meta-data/ami-id",
    "meta-data/hostname",
    "meta-data/instance-id",
    "meta-data/instance-type",
    "meta-data/local-hostname",
    "meta-data/local-ipv4",
    "meta-data/mac",
    "meta-data/public-hostname",
    "meta-data/public-ipv4",
    "meta-data/services/domain",
    "meta-data/services/partition",
    "dynamic/instance-identity/document",
    "dynamic/instance-identity/signature",
    "dynamic/instance-identity/pkcs7",
    "dynamic/instance-identity/rsa2048",
];
/// Trees passed through whole: the instance's placement and its network interfaces.
const PASSED_TREES: &[&str] = &["meta-data/placement", "meta-data/network/interfaces/macs"];

/// Sorts a path below `/latest/`. Paths with empty, `.` or `..` segments, or characters
/// metadata paths never have, are not found, and only the listed paths are passed through.
pub fn route(path: &str) -> Route {
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    let segments: Vec<&str> = trimmed.split('/').collect();
    if !segments.iter().all(|segment| clean_segment(segment)) {
        return Route::NotFound;
    }
    match segments.as_slice() {
        ["meta-data", "iam"] => Route::IamListing,
        ["meta-data", "iam", "security-credentials"] => Route::RoleList,
        ["meta-data", "iam", "security-credentials", name] if !path.ends_with('/') => {
            Route::Credentials((*name).to_owned())
        }
        ["meta-data", "iam", "security-credentials-extended", name] if !path.ends_with('/') => {
            Route::ExtendedCredentials((*name).to_owned())
        }
        ["meta-data", "iam", "info"] => Route::Info,
        _ if passes(trimmed) => Route::Upstream(format!("/latest/{path}")),
        _ => Route::NotFound,
    }
}

/// A path segment the metadata endpoint looks at: no empty, `.` or `..` segment, and only the
/// characters of IAM names and metadata keys.
fn clean_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment != "."
        && segment != ".."
        && (segment.chars())
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

/// The role name and whether the extended body is asked for, if the request path `path` is
/// a credentials read exactly as [`route`] takes it (`Route::Credentials` and
/// `Route::ExtendedCredentials` of the path after `/latest/`): the hot path answers those
/// without the router. Pure.
pub fn credentials_path(path: &str) -> Option<(&str, bool)> {
    let rest = path.strip_prefix("/latest/meta-data/iam/security-credentials")?;
    let (name, extended) = match rest.strip_prefix("-extended/") {
        Some(name) => (name, true),
        None => (rest.strip_prefix('/')?, false),
    };
    clean_segment(name).then_some((name, extended))
}

/// Whether a clean path (no trailing slash) is one that is passed through.
fn passes(path: &str) -> bool {
    PASSED.contains(&path)
        || PASSED_TREES.iter().any(|tree| {
            path == *tree
                || path
                    .strip_prefix(tree)
                    .is_some_and(|rest| rest.starts_with('/'))
        })
}

/// Everything the IMDS routes need.
pub struct Imds {
    tokens: SessionTokens,
    /// The `[[roles]]` name of the served role.
    role: String,
    roles: watch::Receiver<Arc<RoleTable>>,
    upstream: Upstream,
    clock: SharedClock,
    /// Where decisions are recorded (the daemon's one audit).
    audit: Arc<Audit>,
}

/// What the metadata routes need of the served role at one moment.
struct ServedRole {
    /// The IAM name, listed as the real IMDS lists the instance profile's role.
    iam_name: String,
    arn: String,
    /// The shared session's status; `None` for a role served per user.
    status: Option<RoleStatus>,
}

impl Imds {
    /// Serves the role named `role` in `roles`, passing other metadata through to `upstream`.
    pub fn new(
        role: &str,
        roles: watch::Receiver<Arc<RoleTable>>,
        upstream: Upstream,
        clock: SharedClock,
        audit: Arc<Audit>,
    ) -> Self {
        Self {
            tokens: SessionTokens::new(),
            role: role.to_owned(),
            roles,
            upstream,
            clock,
            audit,
        }
    }

    /// The served role now; `None` if a reload removed it.
    fn served_role(&self) -> Option<ServedRole> {
        let table = self.roles.borrow();
        let entry = table.get(&self.role)?;
        Some(ServedRole {
            iam_name: entry.config.arn.role_name().to_owned(),
            arn: entry.config.arn.as_str().to_owned(),
            status: entry.shared_status(),
        })
    }
}

/// The IMDS routes; merged into the main router when `[imds]` is configured.
pub fn router(imds: Arc<Imds>) -> Router {
    let reads = Router::new()
        .route("/latest/{*path}", get(read))
        .route_layer(middleware::from_fn_with_state(
            imds.clone(),
            require_session,
        ));
    Router::new()
        .route("/latest/api/token", put(issue_token))
        .merge(reads)
        .with_state(imds)
}

async fn issue_token(State(imds): State<Arc<Imds>>, headers: HeaderMap) -> Response {
    let Some(ttl) = requested_ttl(&headers) else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "X-aws-ec2-metadata-token-ttl-seconds must be 1 to 21600",
        );
    };
    let token = imds.tokens.mint(imds.clock.now(), ttl);
    let mut response = text_response(token);
    let echoed = HeaderValue::from(ttl.as_secs());
    response.headers_mut().insert(TTL_HEADER, echoed);
    response
}

/// IMDSv1 (no token) and stale or forged tokens get 401, as from the real IMDS.
async fn require_session(State(imds): State<Arc<Imds>>, request: Request, next: Next) -> Response {
    match imds.has_session(request.headers()) {
        true => next.run(request).await,
        false => session_required(),
    }
}

/// The 401 of a read without a valid session token.
pub fn session_required() -> Response {
    error_response(
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
        "a valid X-aws-ec2-metadata-token is required (IMDSv2)",
    )
}

async fn read(
    State(imds): State<Arc<Imds>>,
    Path(path): Path<String>,
    peer: Option<Extension<Arc<Peer>>>,
) -> Response {
    let route = route(&path);
    let peer = peer.map(|Extension(peer)| peer).unwrap_or_default();
    match &route {
        Route::Credentials(name) => return credentials(&imds, name, false, &peer).await,
        Route::ExtendedCredentials(name) => return credentials(&imds, name, true, &peer).await,
        _ => {}
    }
    // Everything else the endpoint knows is for the users the role admits: to anyone else it
    // is an instance with no role and nothing to read (the identity document would let them
    // authenticate as the instance elsewhere).
    if !access::admitted(&imds.roles.borrow(), &imds.role, &peer) {
        return not_found();
    }
    if let Route::Upstream(full_path) = &route {
        return passthrough(&imds, full_path).await;
    }
    let Some(role) = imds.served_role() else {
        return role_gone(&imds);
    };
    match route {
        Route::IamListing => text_response("info\nsecurity-credentials/".to_owned()),
        Route::RoleList => text_response(role.iam_name),
        Route::Info => iam_info(&imds, &role),
        _ => not_found(),
    }
}

fn role_gone(imds: &Imds) -> Response {
    warn!(role = %imds.role, "the metadata role is no longer configured; restart to apply [imds]");
    not_found()
}

fn not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "NotFound", "no such metadata path")
}

/// Decides on one snapshot of the table (waiting for a new per-user session's first
/// credentials), and answers.
async fn credentials(imds: &Imds, iam_name: &str, extended: bool, peer: &Peer) -> Response {
    let via = Via::Metadata { iam_name, extended };
    let table = imds.roles.borrow().clone();
    let decision = access::decide(&table, &imds.role, via, peer, imds.clock.as_ref()).await;
    imds.audit.record(&imds.role, via, peer, &decision);
    imds.credentials_answer(&table, decision)
}

impl Imds {
    /// Whether `headers` carry a session token this endpoint issued and that is still valid.
    pub fn has_session(&self, headers: &HeaderMap) -> bool {
        let token = headers.get(TOKEN_HEADER).map(|t| t.as_bytes());
        self.unexpired(token.and_then(|token| self.tokens.signed_expiry(token)))
    }

    /// [`Self::has_session`] on a connection that `known` the token it presented last.
    pub fn has_session_on(&self, headers: &HeaderMap, known: &mut KnownSession) -> bool {
        let token = headers.get(TOKEN_HEADER).map(|t| t.as_bytes());
        self.unexpired(
            token.and_then(|token| known.expiry_of(token, || self.tokens.signed_expiry(token))),
        )
    }

    /// Whether a signed `expiry` (Unix seconds) is still ahead.
    fn unexpired(&self, expiry: Option<u64>) -> bool {
        expiry.is_some_and(|expiry| expiry > unix_seconds(self.clock.now()))
    }

    /// The `[[roles]]` name of the role served here.
    pub fn role(&self) -> &str {
        &self.role
    }

    /// What a credentials read gets for `decision` (made on `table`), as the real IMDS
    /// answers: a role this endpoint does not serve is a path that does not exist.
    pub fn credentials_answer(&self, table: &RoleTable, decision: Decision) -> Response {
        match decision {
            Decision::Served { body, .. } => credentials_response(body),
            Decision::Unknown if !table.contains_key(&self.role) => role_gone(self),
            Decision::Unknown | Decision::WrongToken => not_found(),
            Decision::NotAdmitted => error_response(
                StatusCode::FORBIDDEN,
                "Forbidden",
                "the connecting user may not have this role",
            ),
            Decision::UnknownPeer => crate::http::unknown_peer_response(),
            Decision::Full(full) => crate::http::full_response(&self.role, full),
            Decision::Unservable(_) => error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "CredentialsUnavailable",
                "no servable credentials for the metadata role; see the daemon's log",
            ),
        }
    }
}

fn iam_info(imds: &Imds, role: &ServedRole) -> Response {
    let obtained =
        (role.status.as_ref()).and_then(|status| Some(status.current.as_ref()?.obtained));
    let updated = obtained.unwrap_or_else(|| imds.clock.now());
    let profile_arn = role.arn.replacen(":role/", ":instance-profile/", 1);
    let body = serde_json::json!({
        "Code": "Success",
        "LastUpdated": format_timestamp(updated),
        "InstanceProfileArn": profile_arn,
        "InstanceProfileId": format!("assume-roled-{}", imds.role),
    });
    json_response(StatusCode::OK, body)
}

async fn passthrough(imds: &Imds, path: &str) -> Response {
    match imds.upstream.get(path).await {
        Ok(value) => text_response(value),
        Err(UpstreamError::NotFound) => not_found(),
        Err(UpstreamError::Status(status)) => {
            warn!(path, status, "instance metadata answered with an error");
            error_response(
                StatusCode::BAD_GATEWAY,
                "UpstreamError",
                &format!("instance metadata answered {status}"),
            )
        }
        Err(UpstreamError::Unreachable(reason)) => {
            warn!(path, reason = %reason, "instance metadata unreachable");
            error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "UpstreamUnavailable",
                "instance metadata is unreachable",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + seconds)
    }

    #[test]
    fn tokens_verify_until_expiry_and_only_here() {
        let tokens = SessionTokens::new();
        let token = tokens.mint(at(0), Duration::from_secs(60));
        assert!(tokens.verify(token.as_bytes(), at(59)));
        assert!(!tokens.verify(token.as_bytes(), at(60)));
        assert!(
            !SessionTokens::new().verify(token.as_bytes(), at(1)),
            "other key"
        );
        let (expiry, tag) = token.split_once('.').unwrap();
        let extended = format!("{}.{tag}", expiry.parse::<u64>().unwrap() + 3600);
        assert!(
            !tokens.verify(extended.as_bytes(), at(1)),
            "expiry is signed"
        );
        assert!(!tokens.verify(b"", at(0)));
        assert!(!tokens.verify(b"1.zz", at(0)));
    }

    /// A connection's known token is verified once and still expires; any other token is
    /// verified afresh, and one that fails is not remembered.
    #[test]
    fn a_known_session_is_verified_once_and_still_expires() {
        let tokens = SessionTokens::new();
        let token = tokens.mint(at(0), Duration::from_secs(60));
        let mut known = KnownSession::default();
        let verifications = std::cell::Cell::new(0);
        let mut expiry_of = |token: &[u8]| {
            known.expiry_of(token, || {
                verifications.set(verifications.get() + 1);
                tokens.signed_expiry(token)
            })
        };
        let expiry = unix_seconds(at(60));
        assert_eq!(expiry_of(token.as_bytes()), Some(expiry));
        assert_eq!(expiry_of(token.as_bytes()), Some(expiry));
        assert_eq!(verifications.get(), 1, "the same token is verified once");
        let forged = format!("{}.{}", expiry + 3600, token.split_once('.').unwrap().1);
        assert_eq!(expiry_of(forged.as_bytes()), None);
        assert_eq!(
            expiry_of(forged.as_bytes()),
            None,
            "a failed token is not remembered"
        );
        assert_eq!(verifications.get(), 3);
        assert_eq!(expiry_of(token.as_bytes()), Some(expiry));
        assert_eq!(
            verifications.get(),
            3,
            "a failed token leaves the known one"
        );
        let other = tokens.mint(at(1), Duration::from_secs(60));
        assert_eq!(expiry_of(other.as_bytes()), Some(expiry + 1));
        assert_eq!(expiry_of(token.as_bytes()), Some(expiry));
        assert_eq!(verifications.get(), 5, "another token came in between");
    }

    /// On a connection that knows its token, the token still expires on time.
    #[tokio::test]
    async fn a_known_session_still_expires() {
        let clock = crate::fake::FakeClock::new();
        let (_keep, roles) = watch::channel(Arc::new(RoleTable::new()));
        let upstream = Upstream::new("http://127.0.0.1:9").unwrap();
        let imds = Imds::new("piyo", roles, upstream, clock.clone(), Arc::default());
        let token = imds
            .tokens
            .mint(crate::clock::Clock::now(&*clock), Duration::from_secs(60));
        let mut headers = HeaderMap::new();
        headers.insert(TOKEN_HEADER, token.parse().unwrap());
        let mut known = KnownSession::default();
        assert!(imds.has_session_on(&headers, &mut known));
        clock.jump(Duration::from_secs(59));
        assert!(imds.has_session_on(&headers, &mut known));
        clock.jump(Duration::from_secs(1));
        assert!(!imds.has_session_on(&headers, &mut known));
    }

    #[test]
    fn ttl_must_be_between_1_and_21600() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(TTL_HEADER, HeaderValue::from_str(value).unwrap());
            requested_ttl(&headers)
        };
        assert_eq!(with("21600"), Some(Duration::from_secs(21600)));
        assert_eq!(with("1"), Some(Duration::from_secs(1)));
        assert_eq!(with("0"), None);
        assert_eq!(with("21601"), None);
        assert_eq!(with("abc"), None);
        assert_eq!(requested_ttl(&HeaderMap::new()), None);
    }

    #[test]
    fn routes() {
        assert_eq!(
            route("meta-data/iam/security-credentials/"),
            Route::RoleList
        );
        assert_eq!(route("meta-data/iam/security-credentials"), Route::RoleList);
        assert_eq!(
            route("meta-data/iam/security-credentials/piyo-role"),
            Route::Credentials("piyo-role".into())
        );
        assert_eq!(route("meta-data/iam/info"), Route::Info);
        assert_eq!(route("meta-data/iam/"), Route::IamListing);
        assert_eq!(
            route("meta-data/placement/region"),
            Route::Upstream("/latest/meta-data/placement/region".into())
        );
        assert_eq!(
            route("dynamic/instance-identity/document"),
            Route::Upstream("/latest/dynamic/instance-identity/document".into())
        );
        assert_eq!(
            route("meta-data/"),
            Route::Upstream("/latest/meta-data/".into())
        );
        for passed in [
            "meta-data/instance-id",
            "meta-data/placement/availability-zone",
            "meta-data/placement/",
            "meta-data/network/interfaces/macs/0e:49:61:0f:c3:11/vpc-id",
            "dynamic/instance-identity/pkcs7",
        ] {
            assert!(matches!(route(passed), Route::Upstream(_)), "{passed}");
        }
    }

    #[test]
    fn nothing_reaches_the_upstream_iam_tree() {
        for path in [
            "meta-data/iam/security-credentials-extended/piyo-role",
            "meta-data/iam/security-credentials/hoge-ec2-role/",
            "meta-data/../meta-data/iam/security-credentials/hoge-ec2-role",
            "meta-data/./iam/info",
            "meta-data//iam/info",
            "meta-data/iam%2finfo",
            "meta-data/placement/../iam/info",
            "user-data",
            "dynamic/fws/instance-monitoring",
            "meta-data/identity-credentials/ec2/security-credentials/ec2-instance",
            "meta-data/identity-credentials/",
            "meta-data/IAM/security-credentials/hoge-ec2-role",
            "meta-data/Iam/info",
            "meta-data/iamx",
            "meta-data/placementx/region",
            "meta-data/user-data",
            "meta-data/public-keys/0/openssh-key",
        ] {
            assert!(
                !matches!(route(path), Route::Upstream(_)),
                "{path} must not be passed through"
            );
        }
    }
}
