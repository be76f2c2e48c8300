//! Entry points for the fuzz targets in `fuzz/`, built only with the `fuzzing` feature: one
//! request through a real connection (its checks, the direct answers, axum's routing and
//! percent-decoding, the metadata rules), with one served role and a metadata source that records every path it is
//! asked for, so a target can check what would have reached the real instance metadata.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::http::Request;
use tokio::sync::watch;

use crate::clock::SystemClock;
use crate::credentials::{Credentials, Served};
use crate::imds::Imds;
use crate::imds::upstream::{MetadataSource, Read, Upstream};
use crate::metrics::Metrics;
use crate::peer::Peer;
use crate::refresh::RoleStatus;
use crate::roles::{RoleEntry, RoleTable, Sessions};
use crate::server::{AppState, Metadata, router};
use crate::token::AuthToken;

/// The server's token.
pub const TOKEN: &str = "0123456789abcdefghijklmnopqrstuvwxyzABCD";
/// The served role's secret access key: no answer but a credentials 200 may carry it.
pub const SECRET: &str = "fuzzSECRETfuzzSECRETfuzzSECRETfuzzSECRET";
/// The one role served, as a configuration names it.
const ROLE: &str =
    "[[roles]]\nname = \"piyo\"\narn = \"arn:aws:iam::444455556666:role/piyo-role\"\n";
/// The listener's address, for `Host`.
pub const LISTEN: &str = "127.0.0.1:9357";

/// What one request did.
#[derive(Debug)]
pub struct Outcome {
    /// The answer's status.
    pub status: u16,
    /// The answer's body.
    pub body: Vec<u8>,
    /// The metadata paths the request made the daemon read upstream.
    pub upstream_reads: Vec<String>,
}

/// A metadata source that records what it is asked and answers every path.
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl Recorder {
    /// The recorded reads; a poisoned lock is used as it is, as everywhere in the daemon.
    fn reads(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl MetadataSource for Arc<Recorder> {
    fn read<'a>(&'a self, path: &'a str) -> Read<'a> {
        self.reads().push(path.to_owned());
        Box::pin(async { Ok("value".to_owned()) })
    }
}

struct Harness {
    runtime: tokio::runtime::Runtime,
    app: crate::server::Endpoint,
    reads: Arc<Recorder>,
    _table: watch::Sender<Arc<RoleTable>>,
    _token: watch::Sender<AuthToken>,
    _status: watch::Sender<RoleStatus>,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let role = crate::config::from_toml(ROLE, "fuzz")
            .expect("the fuzzing role parses")
            .roles
            .remove(0);
        let clock = SystemClock::shared();
        let now = clock.now();
        let credentials = Credentials::new(
            "ASIAFUZZFUZZFUZZFUZZ".into(),
            SECRET.into(),
            "fuzz-session-token".into(),
            now + Duration::from_secs(3600),
        )
        .for_role(role.arn.as_str(), role.arn.account_id(), String::new());
        let served = RoleStatus {
            current: Some(Arc::new(Served::new(credentials, now))),
            ..RoleStatus::default()
        };
        let (status_sender, status) = watch::channel(served);
        let entry = RoleEntry {
            config: role,
            token: None,
            sessions: Sessions::Shared(status),
        };
        let table = RoleTable::from([("piyo".to_owned(), entry)]);
        let (table_sender, roles) = watch::channel(Arc::new(table));
        let (token_sender, token) = watch::channel(AuthToken::parse(TOKEN).expect("a token"));
        let reads = Arc::new(Recorder::default());
        let upstream = Upstream::from_source(Box::new(reads.clone()));
        let metadata = Metadata::new("piyo", Imds::new(upstream));
        let state = AppState::new(
            token,
            roles,
            &[LISTEN.parse().expect("an address")],
            clock,
            Some(metadata),
            (Arc::new(Metrics::new()), Arc::default()),
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        Harness {
            runtime,
            app: router(state),
            reads,
            _table: table_sender,
            _token: token_sender,
            _status: status_sender,
        }
    })
}

/// Sends one request through the router; `None` if the parts make no HTTP request at all.
pub fn request(method: &[u8], uri: &[u8], headers: &[(&[u8], &[u8])]) -> Option<Outcome> {
    let mut builder = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(Body::empty()).ok()?;
    let harness = harness();
    let (status, body) = harness.runtime.block_on(async {
        let response = harness.app.answer(Peer::default(), request).await;
        let status = response.status().as_u16();
        let body = to_bytes(Body::new(response.into_body()), usize::MAX)
            .await
            .expect("a body");
        (status, body.to_vec())
    });
    let upstream_reads = std::mem::take(&mut *harness.reads.reads());
    Some(Outcome {
        status,
        body,
        upstream_reads,
    })
}

/// A valid metadata session token, from the router's own `PUT /latest/api/token`.
pub fn session_token() -> String {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN
        .get_or_init(|| {
            let headers: [(&[u8], &[u8]); 2] = [
                (b"host", LISTEN.as_bytes()),
                (b"x-aws-ec2-metadata-token-ttl-seconds", b"21600"),
            ];
            let outcome = request(b"PUT", b"/latest/api/token", &headers).expect("a request");
            assert_eq!(outcome.status, 200);
            String::from_utf8(outcome.body).expect("a text token")
        })
        .clone()
}
