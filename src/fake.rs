//! Test doubles for the seams: a wall clock tests can move and an STS that follows a script;
//! and a real loopback connection for the tests that ask the kernel about one.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::clock::Clock;
use crate::config::{RoleArn, RoleConfig, SessionParams, Template};
use crate::credentials::Credentials;
use crate::sts::{ErrorKind, Sts, StsError};

pub const HOUR: Duration = Duration::from_secs(3600);
/// The identity the fake STS says the daemon acts as: an instance-profile session.
pub const SOURCE_ARN: &str = "arn:aws:sts::111122223333:assumed-role/hoge-ec2-role/i-0fake";

/// A loopback connection of this process, open while this lives: `client` as the server sees
/// it, `server` the listening address.
pub struct LoopbackConnection {
    pub client: std::net::SocketAddr,
    pub server: std::net::SocketAddr,
    _streams: (std::net::TcpStream, std::net::TcpStream),
}

impl LoopbackConnection {
    pub fn open() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let server = listener.local_addr().unwrap();
        let client_stream = std::net::TcpStream::connect(server).unwrap();
        let (accepted, client) = listener.accept().unwrap();
        assert_eq!(client, client_stream.local_addr().unwrap());
        Self {
            client,
            server,
            _streams: (client_stream, accepted),
        }
    }

    /// A connection to an IPv4 listener from a dual-stack IPv6 socket, as every JVM opens:
    /// the client's socket is `::ffff:127.0.0.1`, the listener sees `127.0.0.1`.
    pub fn open_dual_stack() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let server = listener.local_addr().unwrap();
        let client_stream = std::net::TcpStream::connect(crate::sockdiag::mapped(server)).unwrap();
        let (accepted, client) = listener.accept().unwrap();
        assert!(client.is_ipv4(), "the IPv4 listener sees an IPv4 peer");
        assert_eq!(
            crate::sockdiag::mapped(client),
            client_stream.local_addr().unwrap()
        );
        Self {
            client,
            server,
            _streams: (client_stream, accepted),
        }
    }
}

/// An empty directory of this test process, named `name`.
pub fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("assume-roled-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn at(seconds: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000 + seconds)
}

/// A wall clock that follows tokio's (paused) clock and can also jump, like a resumed laptop.
pub struct FakeClock {
    base: SystemTime,
    start: tokio::time::Instant,
    jumped: Mutex<Duration>,
}

impl FakeClock {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            base: at(0),
            start: tokio::time::Instant::now(),
            jumped: Mutex::new(Duration::ZERO),
        })
    }

    pub fn jump(&self, by: Duration) {
        *self.jumped.lock().unwrap() += by;
    }
}

impl Clock for FakeClock {
    fn now(&self) -> SystemTime {
        self.base + self.start.elapsed() + *self.jumped.lock().unwrap()
    }
}

/// What the fake STS does on one call.
#[derive(Clone)]
pub enum Reply {
    Issue(Duration),
    Fail(ErrorKind),
    Hang,
    /// Issues a one-hour set after this long.
    Delay(Duration),
    /// A bug in the refresher's path: the task panics.
    Panic,
}

/// STS that follows a script, then issues one-hour sets; it counts calls.
pub struct FakeSts {
    clock: Arc<FakeClock>,
    script: Mutex<VecDeque<Reply>>,
    default: Mutex<Reply>,
    calls: AtomicUsize,
    /// The session name of every call, in order.
    sessions: Mutex<Vec<String>>,
}

impl FakeSts {
    pub fn new(clock: Arc<FakeClock>, script: Vec<Reply>) -> Arc<Self> {
        Arc::new(Self {
            clock,
            script: Mutex::new(script.into()),
            default: Mutex::new(Reply::Issue(HOUR)),
            calls: AtomicUsize::new(0),
            sessions: Mutex::new(Vec::new()),
        })
    }

    pub fn set_default(&self, reply: Reply) {
        *self.default.lock().unwrap() = reply;
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// The session name of every call so far.
    pub fn session_params(&self) -> Vec<String> {
        self.sessions.lock().unwrap().clone()
    }

    /// The set call number `call` gets: valid for `lifetime` from now.
    fn issue(&self, role: &RoleConfig, call: usize, lifetime: Duration) -> Credentials {
        let expiry = self.clock.now() + lifetime;
        let key = format!("ASIAFAKE{call:012}");
        Credentials::new(key, "secret".into(), "token".into(), expiry).for_role(
            role.arn.as_str(),
            role.arn.account_id(),
            String::new(),
        )
    }
}

impl Sts for FakeSts {
    async fn assume_role(
        &self,
        role: &RoleConfig,
        session: &SessionParams,
    ) -> Result<Credentials, StsError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        self.sessions
            .lock()
            .unwrap()
            .push(session.session_name.clone());
        let reply = self
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| self.default.lock().unwrap().clone());
        match reply {
            Reply::Issue(lifetime) => Ok(self.issue(role, call, lifetime)),
            Reply::Fail(kind) => Err(StsError::new(kind, "Throttling", "slow down")),
            Reply::Hang => std::future::pending().await,
            Reply::Panic => panic!("the fake STS was told to panic"),
            Reply::Delay(wait) => {
                tokio::time::sleep(wait).await;
                Ok(self.issue(role, call, HOUR))
            }
        }
    }

    async fn caller_identity(&self) -> Result<String, StsError> {
        Ok(SOURCE_ARN.to_owned())
    }

    fn region(&self) -> Option<String> {
        Some("ap-northeast-1".to_owned())
    }
}

/// A one-hour role named `name`.
pub fn role(name: &str) -> RoleConfig {
    RoleConfig {
        name: name.into(),
        arn: RoleArn::parse("arn:aws:iam::444455556666:role/piyo-role").unwrap(),
        session_name: Template::literal("test"),
        external_id: None,
        source_identity: None,
        duration: HOUR,
        allowed_users: Vec::new(),
        allowed_groups: Vec::new(),
        allowed_networks: Vec::new(),
        token_file: None,
        group: None,
        max_sessions: crate::config::DEFAULT_MAX_SESSIONS,
        tags: Vec::new(),
        transitive_tags: Vec::new(),
        policy_arns: Vec::new(),
        policy: None,
    }
}

/// [`role`] served per user, as `{user}@test`, holding at most `max_sessions`.
pub fn per_user_role(name: &str, max_sessions: usize) -> RoleConfig {
    RoleConfig {
        session_name: Template::parse("{user}@test", "h").unwrap(),
        max_sessions,
        ..role(name)
    }
}

/// What is logged on this thread while it lives, as text: for tests of what the daemon logs
/// (a paused-time tokio test runs its tasks on its own thread).
pub struct CapturedLogs {
    text: Arc<Mutex<Vec<u8>>>,
    _default: tracing::subscriber::DefaultGuard,
}

/// Where a [`CapturedLogs`] subscriber writes.
struct LogSink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLogs {
    /// Captures every level from now on.
    pub fn start() -> Self {
        let text = Arc::new(Mutex::new(Vec::new()));
        let target = text.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || LogSink(target.clone()))
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        let _default = tracing::subscriber::set_default(subscriber);
        Self { text, _default }
    }

    /// The lines logged at `level` (`ERROR`, `WARN`, …) that contain `words`.
    pub fn count(&self, level: &str, words: &str) -> usize {
        let text = String::from_utf8_lossy(&self.text.lock().unwrap()).into_owned();
        (text.lines())
            .filter(|line| line.contains(level) && line.contains(words))
            .count()
    }
}
