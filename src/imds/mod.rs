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
//!
//! This module is the endpoint's own parts: session tokens, which paths exist ([`route`]), the
//! passthrough and the wording of its own answers (token, not found). The server checks the
//! session, routes the requests, and answers the credentials reads on the container
//! endpoint's one answer path (`server/answer.rs`, which words its refusals).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tracing::warn;
use zeroize::Zeroizing;

use crate::credentials::format_timestamp;
use crate::http::{error_response, json_response, text_response};

pub(crate) mod upstream;

pub use upstream::{DEFAULT_UPSTREAM, Upstream, UpstreamError};

/// The header a client names the token's lifetime in, echoed back (Go and Rust need the echo).
pub const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
/// The header carrying the session token on every `GET` (a name, not a string: looked up on
/// every metadata read, a string would be parsed into a name each time).
pub const TOKEN_HEADER: HeaderName = HeaderName::from_static("x-aws-ec2-metadata-token");
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
    /// [`Imds::has_session`] checks).
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
        // Bytes, not chars: only ASCII passes, and this is read on every credentials read.
        && (segment.bytes())
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// The role name and whether the extended body is asked for, if the request path `path` is
/// a credentials read exactly as [`route`] takes it (`Route::Credentials` and
/// `Route::ExtendedCredentials` of the path after `/latest/`): a connection answers those
/// directly, without the router. Pure.
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

/// What the metadata endpoint keeps of its own: the session tokens it issued and where the
/// rest of the instance metadata comes from. Which role it serves, and the role table, are
/// the server's (one snapshot per connection, as for the container endpoint).
pub struct Imds {
    tokens: SessionTokens,
    upstream: Upstream,
}

impl Imds {
    /// Fresh session tokens, passing the metadata it does not answer itself to `upstream`.
    pub fn new(upstream: Upstream) -> Self {
        Self {
            tokens: SessionTokens::new(),
            upstream,
        }
    }

    /// A new session token valid for `ttl` from `now`.
    pub fn mint(&self, now: SystemTime, ttl: Duration) -> String {
        self.tokens.mint(now, ttl)
    }

    /// Whether `headers` carry a session token this endpoint issued, still valid at `now`;
    /// the connection `known` the token it presented last, whose signature is checked once.
    pub fn has_session(
        &self,
        headers: &HeaderMap,
        known: &mut KnownSession,
        now: SystemTime,
    ) -> bool {
        // A request has a few headers: a scan finds the first token for less than hashing
        // the header's name (`get`, on every metadata request).
        let token =
            (headers.iter()).find_map(|(name, value)| (*name == TOKEN_HEADER).then_some(value));
        let Some(token) = token.map(|t| t.as_bytes()) else {
            return false;
        };
        let expiry = known.expiry_of(token, || self.tokens.signed_expiry(token));
        expiry.is_some_and(|expiry| expiry > unix_seconds(now))
    }

    /// The real instance metadata's answer at `path`, as this endpoint passes it on.
    pub async fn passthrough(&self, path: &str) -> Response {
        match self.upstream.get(path).await {
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
}

/// The 401 of a read without a valid session token (IMDSv1, or a stale or forged token), as
/// from the real IMDS.
pub fn session_required() -> Response {
    error_response(
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
        "a valid X-aws-ec2-metadata-token is required (IMDSv2)",
    )
}

/// The 400 of a token request with a lifetime IMDS would refuse.
pub fn bad_ttl() -> Response {
    error_response(
        StatusCode::BAD_REQUEST,
        "BadRequest",
        "X-aws-ec2-metadata-token-ttl-seconds must be 1 to 21600",
    )
}

/// The answer to a token request: the token, its lifetime echoed.
pub fn token_response(token: String, ttl: Duration) -> Response {
    let mut response = text_response(token);
    let echoed = HeaderValue::from(ttl.as_secs());
    response.headers_mut().insert(TTL_HEADER, echoed);
    response
}

/// The message of a metadata path that does not exist.
pub const NOT_FOUND: &str = "no such metadata path";

/// What the real IMDS answers for a path that does not exist.
pub fn not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "NotFound", NOT_FOUND)
}

/// What `iam/info` says of the served role `name` (`[[roles]]` name) with `arn`, whose
/// credentials were last `obtained` (else `now`), as the real IMDS describes an instance
/// profile.
pub fn iam_info(name: &str, arn: &str, obtained: Option<SystemTime>, now: SystemTime) -> Response {
    let profile_arn = arn.replacen(":role/", ":instance-profile/", 1);
    let body = serde_json::json!({
        "Code": "Success",
        "LastUpdated": format_timestamp(obtained.unwrap_or(now)),
        "InstanceProfileArn": profile_arn,
        "InstanceProfileId": format!("assume-roled-{name}"),
    });
    json_response(StatusCode::OK, body)
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

    /// On a connection that knows its token, the token still expires on time; a request
    /// without one has no session.
    #[test]
    fn a_known_session_still_expires() {
        let imds = Imds::new(Upstream::new("http://127.0.0.1:9").unwrap());
        let token = imds.mint(at(0), Duration::from_secs(60));
        let mut headers = HeaderMap::new();
        headers.insert(TOKEN_HEADER, token.parse().unwrap());
        let mut known = KnownSession::default();
        assert!(imds.has_session(&headers, &mut known, at(0)));
        assert!(imds.has_session(&headers, &mut known, at(59)));
        assert!(!imds.has_session(&headers, &mut known, at(60)));
        assert!(!imds.has_session(&HeaderMap::new(), &mut known, at(0)));
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

    /// A role name is one segment of IAM's characters: anything else (a decoded `ö`, a
    /// space, a dot segment) is no credentials path, on either answer path.
    #[test]
    fn only_iam_characters_make_a_role_segment() {
        assert!(clean_segment("piyo-role_1.a:b"));
        for unclean in [
            "",
            ".",
            "..",
            "piyö-role",
            "piyo role",
            "piyo/role",
            "piyo%2f",
        ] {
            assert!(!clean_segment(unclean), "{unclean}");
            let path = format!("/latest/meta-data/iam/security-credentials/{unclean}");
            assert_eq!(credentials_path(&path), None, "{path}");
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
