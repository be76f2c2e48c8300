//! The request rules, driven through the real router with a status the test controls.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, to_bytes};
use axum::http::HeaderValue;
use axum::http::Request as HttpRequest;
use axum::http::header::CONTENT_TYPE;

use super::*;
use crate::credentials::{Credentials, Served};
use crate::fake::role;
use crate::refresh::RoleStatus;
use crate::roles::{RoleEntry, RoleTable, Sessions};
use crate::sts::{ErrorKind, StsError};

const LISTEN: &str = "127.0.0.1:9357";
const TOKEN: &str = "0123456789abcdefghijklmnopqrstuvwxyzABCD";
/// The own token of role `fuga` (its `token_file`).
const ROLE_TOKEN: &str = "fugafugafugafugafugafugafugafugafuga0000";

struct FixedClock(SystemTime);

impl Clock for FixedClock {
    fn now(&self) -> SystemTime {
        self.0
    }
}

fn now() -> SystemTime {
    UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000)
}

fn served(expires_in_secs: u64) -> Arc<Served> {
    let expiry = now() + std::time::Duration::from_secs(expires_in_secs);
    let credentials = Credentials::new(
        "ASIAEXAMPLEKEY123456".into(),
        "the-secret-key".into(),
        "the-session-token".into(),
        expiry,
    )
    .for_role(
        "arn:aws:iam::444455556666:role/piyo-role",
        "444455556666",
        String::new(),
    );
    Arc::new(Served::new(credentials, now()))
}

fn app(status: RoleStatus) -> (Endpoint, watch::Sender<RoleStatus>) {
    app_auditing(status, Arc::default())
}

/// [`app`], recording in `audit`.
fn app_auditing(
    status: RoleStatus,
    audit: Arc<crate::audit::Audit>,
) -> (Endpoint, watch::Sender<RoleStatus>) {
    let (sender, receiver) = watch::channel(status);
    let piyo = RoleEntry {
        config: role("piyo"),
        token: None,
        sessions: Sessions::Shared(receiver.clone()),
    };
    let fuga = RoleEntry {
        config: role("fuga"),
        token: Some(AuthToken::parse(ROLE_TOKEN).unwrap()),
        sessions: Sessions::Shared(receiver),
    };
    let table: RoleTable = [("piyo".to_owned(), piyo), ("fuga".to_owned(), fuga)]
        .into_iter()
        .collect();
    let (_keep, roles) = watch::channel(Arc::new(table));
    let state = AppState::new(
        watch::channel(AuthToken::parse(TOKEN).unwrap()).1,
        roles,
        &[LISTEN.parse().unwrap()],
        Arc::new(FixedClock(now())),
        None,
        (Arc::new(crate::metrics::Metrics::new()), audit),
    );
    (router(state), sender)
}

fn ready() -> RoleStatus {
    RoleStatus {
        current: Some(served(3600)),
        last_error: None,
        ..RoleStatus::default()
    }
}

fn get(path: &str) -> axum::http::request::Builder {
    HttpRequest::get(path).header(HOST, LISTEN)
}

async fn send(router: Endpoint, request: axum::http::request::Builder) -> (StatusCode, String) {
    let request = request.body(Body::empty()).unwrap();
    let response = router.answer(Peer::default(), request).await;
    let status = response.status();
    let content_type = response.headers().get(CONTENT_TYPE).cloned();
    let body = to_bytes(Body::new(response.into_body()), 1 << 20)
        .await
        .unwrap();
    let body = String::from_utf8(body.to_vec()).unwrap();
    assert_eq!(
        content_type.as_ref().and_then(|v| v.to_str().ok()),
        Some("application/json"),
        "every answer is JSON: {status} {body}"
    );
    (status, body)
}

fn assert_no_secret(body: &str) {
    for secret in ["the-secret-key", "the-session-token", TOKEN] {
        assert!(!body.contains(secret), "{body}");
    }
}

#[tokio::test]
async fn authorised_request_gets_the_ecs_body() {
    let (router, _status) = app(ready());
    let (status, body) = send(router, get("/roles/piyo").header(AUTHORIZATION, TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["SecretAccessKey"], "the-secret-key");
    assert_eq!(json["Expiration"], "2027-01-15T09:00:00Z");
}

/// The routed path (a percent-encoded name, HEAD) answers as the direct one does, and a wrong
/// token is refused there too.
#[tokio::test]
async fn routed_role_requests_answer_as_the_direct_path() {
    let (router, _status) = app(ready());
    let encoded = get("/roles/pi%79o").header(AUTHORIZATION, TOKEN);
    let (status, body) = send(router.clone(), encoded).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("the-secret-key"));
    let head = HttpRequest::head("/roles/piyo")
        .header(HOST, LISTEN)
        .header(AUTHORIZATION, TOKEN);
    assert_eq!(send(router.clone(), head).await.0, StatusCode::OK);
    let wrong = get("/roles/pi%79o").header(AUTHORIZATION, "not-the-token");
    assert_eq!(send(router, wrong).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn localhost_host_is_accepted() {
    let (router, _status) = app(ready());
    let request = HttpRequest::get("/roles/piyo")
        .header(HOST, "localhost:9357")
        .header(AUTHORIZATION, TOKEN);
    assert_eq!(send(router, request).await.0, StatusCode::OK);
}

#[tokio::test]
async fn refusals_reveal_nothing() {
    let cases: Vec<(&str, axum::http::request::Builder, StatusCode)> = vec![
        ("no token", get("/roles/piyo"), StatusCode::UNAUTHORIZED),
        (
            "wrong token",
            get("/roles/piyo").header(AUTHORIZATION, "x".repeat(40)),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "bearer",
            get("/roles/piyo").header(AUTHORIZATION, format!("Bearer {TOKEN}")),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "suffix",
            get("/roles/piyo").header(AUTHORIZATION, format!("{TOKEN}x")),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "two tokens",
            get("/roles/piyo")
                .header(AUTHORIZATION, TOKEN)
                .header(AUTHORIZATION, TOKEN),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "token in query",
            get(&format!("/roles/piyo?token={TOKEN}")),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "unknown path without token",
            get("/nope"),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "origin",
            get("/roles/piyo")
                .header(AUTHORIZATION, TOKEN)
                .header(ORIGIN_HEADER, "http://evil.example"),
            StatusCode::FORBIDDEN,
        ),
        (
            "referer",
            get("/roles/piyo")
                .header(AUTHORIZATION, TOKEN)
                .header("referer", "http://evil.example/"),
            StatusCode::FORBIDDEN,
        ),
        (
            "x-forwarded-for",
            get("/roles/piyo")
                .header(AUTHORIZATION, TOKEN)
                .header("x-forwarded-for", "10.0.0.1"),
            StatusCode::FORBIDDEN,
        ),
        (
            "foreign host",
            HttpRequest::get("/roles/piyo")
                .header(HOST, "evil.example:9357")
                .header(AUTHORIZATION, TOKEN),
            StatusCode::FORBIDDEN,
        ),
        (
            "other port",
            HttpRequest::get("/roles/piyo")
                .header(HOST, "127.0.0.1:80")
                .header(AUTHORIZATION, TOKEN),
            StatusCode::FORBIDDEN,
        ),
        (
            "missing host",
            HttpRequest::get("/roles/piyo").header(AUTHORIZATION, TOKEN),
            StatusCode::FORBIDDEN,
        ),
        (
            "absolute uri elsewhere",
            HttpRequest::get("http://169.254.169.254/roles/piyo")
                .header(HOST, LISTEN)
                .header(AUTHORIZATION, TOKEN),
            StatusCode::FORBIDDEN,
        ),
        (
            "healthz from a browser",
            get("/healthz").header(ORIGIN_HEADER, "http://evil.example"),
            StatusCode::FORBIDDEN,
        ),
        (
            "unknown role",
            get("/roles/other").header(AUTHORIZATION, TOKEN),
            StatusCode::NOT_FOUND,
        ),
        (
            "unknown path",
            get("/roles").header(AUTHORIZATION, TOKEN),
            StatusCode::NOT_FOUND,
        ),
        (
            "traversal",
            get("/roles/../roles/piyo").header(AUTHORIZATION, TOKEN),
            StatusCode::NOT_FOUND,
        ),
        (
            "trailing slash",
            get("/roles/piyo/").header(AUTHORIZATION, TOKEN),
            StatusCode::NOT_FOUND,
        ),
        (
            "post",
            HttpRequest::post("/roles/piyo")
                .header(HOST, LISTEN)
                .header(AUTHORIZATION, TOKEN),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
    ];
    for (name, request, expected) in cases {
        let (router, _status) = app(ready());
        let (status, body) = send(router, request).await;
        assert_eq!(status, expected, "{name}: {body}");
        assert_no_secret(&body);
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(
            json["code"].is_string() && json["message"].is_string(),
            "{name}: {body}"
        );
    }
}

const ORIGIN_HEADER: &str = "origin";

#[tokio::test]
async fn nothing_to_serve_is_a_503_that_says_why() {
    let denied = StsError::new(
        ErrorKind::Configuration,
        "AccessDenied",
        "not authorized to perform sts:AssumeRole",
    );
    let cases = [
        (RoleStatus::default(), "CredentialsUninitialized"),
        (
            RoleStatus {
                current: None,
                last_error: Some(denied.clone()),
                ..RoleStatus::default()
            },
            "CredentialsUnavailable",
        ),
        (
            RoleStatus {
                current: Some(served(60)),
                last_error: Some(denied),
                ..RoleStatus::default()
            },
            "CredentialsExpired",
        ),
    ];
    for (role_status, code) in cases {
        let (router, _status) = app(role_status);
        let (status, body) = send(
            router.clone(),
            get("/roles/piyo").header(AUTHORIZATION, TOKEN),
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["code"], code);
        assert_no_secret(&body);
        if code != "CredentialsUninitialized" {
            assert!(body.contains("AccessDenied"), "the reason is given: {body}");
        }
        let (ready, _) = send(router, get("/readyz")).await;
        assert_eq!(ready, StatusCode::SERVICE_UNAVAILABLE);
    }
}

/// A role with its own token file is granted by that token alone, and that token grants
/// nothing else: not the other roles, not the status report, not the metrics.
#[tokio::test]
async fn a_role_token_opens_its_role_only() {
    let (router, _status) = app(ready());
    let cases = [
        ("/roles/fuga", ROLE_TOKEN, StatusCode::OK),
        // Routing decodes the name; the grant is checked on the decoded one.
        ("/roles/fug%61", ROLE_TOKEN, StatusCode::OK),
        ("/roles/fuga", TOKEN, StatusCode::UNAUTHORIZED),
        ("/roles/fug%61", TOKEN, StatusCode::UNAUTHORIZED),
        ("/roles/piyo", ROLE_TOKEN, StatusCode::UNAUTHORIZED),
        ("/roles/piyo", TOKEN, StatusCode::OK),
        // Other names are refused alike, known or not: the token cannot enumerate roles.
        ("/roles/nosuchrole", ROLE_TOKEN, StatusCode::UNAUTHORIZED),
        ("/roles/nosuchrole", TOKEN, StatusCode::NOT_FOUND),
        ("/status", ROLE_TOKEN, StatusCode::UNAUTHORIZED),
        ("/metrics", ROLE_TOKEN, StatusCode::UNAUTHORIZED),
        ("/status", TOKEN, StatusCode::OK),
    ];
    for (path, token, expected) in cases {
        let request = get(path).header(AUTHORIZATION, token);
        let (status, body) = send(router.clone(), request).await;
        assert_eq!(status, expected, "{path} with {token}: {body}");
        if status != StatusCode::OK {
            assert_no_secret(&body);
        }
    }
}

#[tokio::test]
async fn health_checks_need_no_token() {
    let (router, sender) = app(RoleStatus::default());
    assert_eq!(
        send(router.clone(), get("/healthz")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        send(router.clone(), get("/readyz")).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let (_, waiting) = send(router.clone(), get("/readyz")).await;
    assert!(!waiting.contains("piyo"), "names no role: {waiting}");
    assert!(waiting.contains("2 of 2 roles"), "{waiting}");
    sender.send_replace(ready());
    let (status, body) = send(router, get("/readyz")).await;
    assert_eq!(status, StatusCode::OK);
    assert_no_secret(&body);
}

#[test]
fn allowed_hosts_follow_the_bound_address() {
    assert_eq!(
        allowed_hosts("127.0.0.1:41000".parse().unwrap()),
        vec!["127.0.0.1:41000", "localhost:41000"]
    );
    assert_eq!(
        allowed_hosts("[::1]:9357".parse().unwrap())[0],
        "[::1]:9357"
    );
}

/// A connection the metadata guard redirected here asked for the instance metadata: it must
/// name that address as its host and gets instance metadata or nothing; a direct connection
/// naming the metadata address is refused like any foreign host.
#[test]
fn redirected_requests_are_metadata_only() {
    let hosts = allowed_hosts(LISTEN.parse().unwrap());
    let check = |host: &str, path: &str, redirected: bool| {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_str(host).unwrap());
        headers.insert(AUTHORIZATION, HeaderValue::from_static(TOKEN));
        let uri: Uri = path.parse().unwrap();
        let identify = |_: &[u8]| Some(Grant::Server);
        check_request(&headers, &uri, &hosts, identify, true, redirected)
    };
    let metadata = "/latest/meta-data/iam/security-credentials/";
    assert_eq!(check("169.254.169.254", metadata, true), Ok(None));
    assert_eq!(check("169.254.169.254:80", metadata, true), Ok(None));
    assert_eq!(
        check("169.254.169.254", "/roles/piyo", true),
        Err(Refusal::NotMetadata)
    );
    assert_eq!(check(LISTEN, metadata, true), Err(Refusal::ForeignHost));
    assert_eq!(
        check("169.254.169.254", metadata, false),
        Err(Refusal::ForeignHost)
    );
    assert_eq!(check(LISTEN, "/roles/piyo", false), Ok(Some(Grant::Server)));
}

/// The `Host` is compared without regard to case, as bytes: a name that differs only in case
/// passes, one with a byte beyond ASCII or a stray space does not.
#[test]
fn hosts_are_compared_without_case_and_only_as_ascii() {
    let hosts = allowed_hosts(LISTEN.parse().unwrap());
    let check = |host: &[u8]| {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_bytes(host).unwrap());
        headers.insert(AUTHORIZATION, HeaderValue::from_static(TOKEN));
        let uri: Uri = "/roles/piyo".parse().unwrap();
        check_request(
            &headers,
            &uri,
            &hosts,
            |_| Some(Grant::Server),
            false,
            false,
        )
    };
    let port = LISTEN.rsplit(':').next().unwrap();
    for passing in [LISTEN.to_owned(), format!("LocalHost:{port}")] {
        assert_eq!(
            check(passing.as_bytes()),
            Ok(Some(Grant::Server)),
            "{passing}"
        );
    }
    let beyond_ascii = format!("localhost:{port}").replace('o', "\u{f6}");
    for refused in [
        beyond_ascii.as_bytes(),
        &[b"localhost\xcf:", port.as_bytes()].concat(),
        format!("localhost:{port} ").as_bytes(),
        format!("localhost:{port}0").as_bytes(),
    ] {
        assert_eq!(
            check(refused),
            Err(Refusal::ForeignHost),
            "{}",
            String::from_utf8_lossy(refused)
        );
    }
}

/// A kept-alive connection follows reloads: a re-issued server token replaces the old one on
/// its next request, and a role table published just before the channel closed is still read.
#[tokio::test]
async fn a_connection_snapshot_follows_reloads() {
    let (table_sender, roles) = watch::channel(Arc::new(RoleTable::new()));
    let (token_sender, token) = watch::channel(AuthToken::parse(TOKEN).unwrap());
    let state = AppState::new(
        token,
        roles,
        &[LISTEN.parse().unwrap()],
        Arc::new(FixedClock(now())),
        None,
        (Arc::new(crate::metrics::Metrics::new()), Arc::default()),
    );
    let mut snapshot = state.snapshot();
    assert!(snapshot.now().1.matches(TOKEN.as_bytes()));
    token_sender.send_replace(AuthToken::parse(ROLE_TOKEN).unwrap());
    let (_, current) = snapshot.now();
    assert!(
        current.matches(ROLE_TOKEN.as_bytes()),
        "the re-issued token"
    );
    assert!(!current.matches(TOKEN.as_bytes()), "the old token is gone");
    let (_status, receiver) = watch::channel(ready());
    let piyo = RoleEntry {
        config: role("piyo"),
        token: None,
        sessions: Sessions::Shared(receiver),
    };
    let table = RoleTable::from([("piyo".to_owned(), piyo)]);
    table_sender.send_replace(Arc::new(table));
    drop(table_sender);
    assert!(
        snapshot.now().0.contains_key("piyo"),
        "read though the channel closed"
    );
}

/// Every metadata read needs a session token, whatever the method or path: the direct
/// credentials read, its `HEAD` (routed), and the rest of the tree; the token itself is
/// issued without one.
#[tokio::test]
async fn every_metadata_read_needs_a_session() {
    let (receiver, _status) = {
        let (sender, receiver) = watch::channel(ready());
        (receiver, sender)
    };
    let piyo = RoleEntry {
        config: role("piyo"),
        token: None,
        sessions: Sessions::Shared(receiver),
    };
    let (_keep, roles) = watch::channel(Arc::new(RoleTable::from([("piyo".to_owned(), piyo)])));
    let upstream = crate::imds::Upstream::new("http://127.0.0.1:9").unwrap();
    let metadata = Metadata::new("piyo", crate::imds::Imds::new(upstream));
    let state = AppState::new(
        watch::channel(AuthToken::parse(TOKEN).unwrap()).1,
        roles,
        &[LISTEN.parse().unwrap()],
        Arc::new(FixedClock(now())),
        Some(metadata),
        (Arc::new(crate::metrics::Metrics::new()), Arc::default()),
    );
    let app = router(state);
    let credentials = "/latest/meta-data/iam/security-credentials/piyo-role";
    for (method, path) in [
        ("GET", credentials),
        ("HEAD", credentials),
        (
            "GET",
            "/latest/meta-data/iam/security-credentials-extended/piyo-role",
        ),
        ("GET", "/latest/meta-data/instance-id"),
        ("GET", "/latest/dynamic/instance-identity/document"),
        ("GET", "/latest/api/token"),
    ] {
        let request = HttpRequest::builder()
            .method(method)
            .uri(path)
            .header(HOST, LISTEN)
            .body(Body::empty())
            .unwrap();
        let answer = app.answer(Peer::default(), request).await;
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
    }
    let token = HttpRequest::put("/latest/api/token")
        .header(HOST, LISTEN)
        .header(crate::imds::TTL_HEADER, "60")
        .body(Body::empty())
        .unwrap();
    let minted = app.answer(Peer::default(), token).await;
    assert_eq!(minted.status(), StatusCode::OK);
    let token = to_bytes(Body::new(minted.into_body()), 1024).await.unwrap();
    let token = String::from_utf8(token.to_vec()).unwrap();
    let request = HttpRequest::head(credentials)
        .header(HOST, LISTEN)
        .header(crate::imds::TOKEN_HEADER, &token)
        .body(Body::empty())
        .unwrap();
    let answer = app.answer(Peer::default(), request).await;
    assert_eq!(answer.status(), StatusCode::OK, "HEAD with a session");
}

/// A kept-alive connection's repeats reach the audit when it closes: one line at once, the
/// repeats counted on the connection and handed over as it is dropped, in the summary at stop.
/// A connection that outlives that summary (a drain that gave up) writes its own lines.
#[tokio::test]
async fn a_connections_repeats_reach_the_audit_when_it_closes() {
    let logs = crate::fake::CapturedLogs::start();
    let audit = Arc::new(crate::audit::Audit::default());
    let (endpoint, _status) = app_auditing(ready(), audit.clone());
    let serve = |count: usize| {
        let peer = Arc::new(Peer::default());
        let connection =
            crate::listener::App::connection(&endpoint, peer, None, None, Arc::default());
        async move {
            for _ in 0..count {
                let request = get("/roles/piyo").header(AUTHORIZATION, TOKEN);
                let request = request.body(Body::empty()).unwrap();
                let Ok(answer) = hyper::service::Service::call(&connection, request).await;
                assert_eq!(answer.status(), StatusCode::OK);
            }
            connection
        }
    };
    let again = "credentials served again";
    let connection = serve(5).await;
    assert_eq!(logs.count("INFO", "credentials served"), 1);
    drop(connection);
    audit.summarize_all();
    assert_eq!(
        logs.count("INFO", again),
        1,
        "the four repeats, handed over"
    );
    assert_eq!(logs.count("INFO", "count=4"), 1);

    let late = serve(3).await;
    assert_eq!(
        logs.count("INFO", "held_back=0"),
        2,
        "its first request's line"
    );
    drop(late);
    assert_eq!(
        logs.count("INFO", again),
        2,
        "its repeats, written as it closes"
    );
    assert_eq!(logs.count("INFO", "count=2"), 1);
}
