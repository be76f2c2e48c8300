//! Request handling before routing: arbitrary path, Host, Authorization and one more header,
//! through the guard, the metadata router's path rules and the session-token check. Besides
//! never panicking, the guard must let a credentials request through only with exactly the
//! token, and the metadata rules must never pass an `iam/` path upstream.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use assume_roled::imds::{Route, SessionTokens, route};
use assume_roled::access::Grant;
use assume_roled::server::check_request;
use assume_roled::token::AuthToken;
use axum::http::header::{AUTHORIZATION, HOST};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Uri};
use libfuzzer_sys::fuzz_target;

const TOKEN: &str = "0123456789abcdefghijklmnopqrstuvwxyzABCD";

fuzz_target!(|data: &[u8]| {
    let mut fields = data.split(|b| *b == 0xff);
    let (path, host, authorization, extra) = (
        fields.next().unwrap_or_default(),
        fields.next().unwrap_or_default(),
        fields.next().unwrap_or_default(),
        fields.next().unwrap_or_default(),
    );
    let token = AuthToken::parse(TOKEN).unwrap();
    let allowed = vec!["127.0.0.1:9357".to_owned(), "localhost:9357".to_owned()];
    let Ok(uri) = Uri::try_from(path) else {
        return;
    };
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(host) {
        headers.insert(HOST, value);
    }
    if let Ok(value) = HeaderValue::from_bytes(authorization) {
        headers.insert(AUTHORIZATION, value);
    }
    if let Some((name, value)) = split_header(extra) {
        headers.append(name, value);
    }
    let identify = |presented: &[u8]| token.matches(presented).then_some(Grant::Server);
    let verdict = check_request(&headers, &uri, &allowed, identify, false);
    let public = matches!(uri.path(), "/healthz" | "/readyz");
    if verdict.is_ok() && !public {
        let presented: Vec<_> = headers.get_all(AUTHORIZATION).iter().collect();
        assert_eq!(presented.len(), 1);
        assert_eq!(presented[0].as_bytes(), TOKEN.as_bytes());
    }
    if let Some(rest) = uri.path().strip_prefix("/latest/")
        && let Route::Upstream(upstream) = route(rest)
    {
        assert!(!upstream.contains("/iam"), "{upstream}");
        assert!(!upstream.contains(".."), "{upstream}");
    }
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let tokens = SessionTokens::new();
    assert!(!tokens.verify(authorization, now), "a token never minted was accepted");
    let minted = tokens.mint(now, Duration::from_secs(60));
    assert!(tokens.verify(minted.as_bytes(), now));
    assert!(!tokens.verify(minted.as_bytes(), now + Duration::from_secs(60)));
});

fn split_header(raw: &[u8]) -> Option<(HeaderName, HeaderValue)> {
    let colon = raw.iter().position(|b| *b == b':')?;
    let name = HeaderName::from_bytes(&raw[..colon]).ok()?;
    let value = HeaderValue::from_bytes(&raw[colon + 1..]).ok()?;
    Some((name, value))
}
