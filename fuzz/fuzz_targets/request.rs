//! One arbitrary request through the real router: method, path, `Host`, `Authorization`, a
//! metadata session token and one more header, as the daemon receives them (axum routes and
//! percent-decodes exactly as in production). Besides never panicking:
//!
//! - the role's secret leaves only in a 200 to a `GET` that carries exactly the server's token
//!   (the container endpoint) or a session token the router itself issued (the metadata
//!   endpoint);
//! - a refusal carries neither the secret nor the token;
//! - nothing under the real metadata's `iam/`, no `..` and no `user-data` is ever read
//!   upstream, and nothing at all without a valid session token.
#![no_main]

use assume_roled::fuzzing::{self, LISTEN, SECRET, TOKEN};
use libfuzzer_sys::fuzz_target;

const METHODS: &[&[u8]] = &[b"GET", b"PUT", b"POST", b"HEAD", b"DELETE", b"OPTIONS"];

fuzz_target!(|data: &[u8]| {
    let mut fields = data.split(|b| *b == 0xff);
    let mut next = || fields.next().unwrap_or_default();
    let (selector, path, host, authorization, session, extra) =
        (next(), next(), next(), next(), next(), next());
    let method = METHODS[usize::from(selector.first().copied().unwrap_or(0)) % METHODS.len()];
    let minted = fuzzing::session_token();
    // Selector bits choose well-formed values sometimes, so deep paths are reached.
    let bit = |n: u8| selector.get(1).is_some_and(|b| b & (1 << n) != 0);
    let host = if bit(0) { LISTEN.as_bytes() } else { host };
    let authorization = if bit(1) {
        TOKEN.as_bytes()
    } else {
        authorization
    };
    let session = if bit(2) { minted.as_bytes() } else { session };
    let mut headers: Vec<(&[u8], &[u8])> = vec![
        (b"host", host),
        (b"authorization", authorization),
        (b"x-aws-ec2-metadata-token", session),
    ];
    if let Some(colon) = extra.iter().position(|b| *b == b':') {
        headers.push((&extra[..colon], &extra[colon + 1..]));
    }
    let Some(outcome) = fuzzing::request(method, path, &headers) else {
        return;
    };
    let body = String::from_utf8_lossy(&outcome.body);
    if body.contains(SECRET) {
        assert_eq!(outcome.status, 200, "a refusal carries the secret: {body}");
        assert_eq!(method, b"GET");
        let by_token = authorization == TOKEN.as_bytes();
        let by_session = session == minted.as_bytes();
        assert!(by_token || by_session, "credentials without a token");
    } else if outcome.status != 200 {
        assert!(!body.contains(TOKEN), "a refusal echoes the token");
    }
    for read in &outcome.upstream_reads {
        assert_eq!(
            session,
            minted.as_bytes(),
            "an upstream read without a session"
        );
        let segments: Vec<&str> = read.split('/').collect();
        assert!(!segments.contains(&".."), "{read}");
        assert!(!read.contains("user-data"), "{read}");
        let under_iam =
            read == "/latest/meta-data/iam" || read.starts_with("/latest/meta-data/iam/");
        assert!(!under_iam, "the real iam/ tree was read: {read}");
    }
});
