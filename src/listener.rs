//! Accepting connections: the limits that keep one local client from hurting the others, and
//! the drain on shutdown.
//!
//! Every tool on the host depends on this port, so a slow or flooding client must not starve
//! it: a connection must start a request within [`HEADER_READ_TIMEOUT`] (a client dribbling
//! headers a byte a second is cut off, an idle one closed), the head may not exceed [`MAX_HEAD_BYTES`],
//! and at most `max_connections` are served at once, each holder (a user, a container, all
//! uids without an account) getting a fair share ([`crate::admission`]); what admission refuses
//! is closed at once, and past `max_connections` plus [`DECIDING`] new connections wait in the
//! kernel's backlog, so memory stays bounded. Only HTTP/1.1 (and 1.0) is
//! spoken: every SDK fetches credentials that way. What a request may do is decided by
//! [`crate::server`]; this module only moves bytes, and attaches to every request the
//! [`Peer`] found for its connection (once per connection, see [`crate::peer`]).

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

mod beside;
mod deadline;
mod unanswered;

use beside::Beside;
use deadline::WriteDeadline;
use unanswered::{Unanswered, UnansweredLog};

use crate::admission::{Holder, Holders, Limits, Place, Refused};
use crate::metrics::{Metrics, RefusedBecause};
use crate::peer::{NameSource, Peer, Resolver};

/// How long a write to a client may make no progress before the connection is cut. A backstop:
/// a client that does not read its answers is usually cut first by [`HEADER_READ_TIMEOUT`],
/// as a connection that cannot be written reads no new request.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may go without starting a request: a client dribbling its request
/// head, or a keep-alive connection left idle, is closed after it (give or take
/// [`PROGRESS_CHECK`]).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a connection's progress is looked at. hyper's own header timeout sets a timer
/// for every request; a look a second costs nearly nothing at any request rate (README,
/// Benchmarks).
const PROGRESS_CHECK: Duration = Duration::from_secs(1);
/// The largest request head read (hyper's smallest buffer); larger heads get 431.
pub const MAX_HEAD_BYTES: usize = 8192;
/// How long in-flight requests may take to finish after a stop is requested.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// At a stop, how long a connection that has not asked anything yet may take to send its first
/// request before it is closed: enough for a request already on its way, far below the drain
/// bound. Connections that have asked before are closed after the request in progress.
const FIRST_REQUEST_GRACE: Duration = Duration::from_millis(250);
/// Connections accepted beyond `max_connections` while admission decides on them (see
/// [`crate::admission`]): a newcomer may take an idle place of a holder over the fair share.
pub const DECIDING: usize = 64;
/// After a failed `accept` (out of file descriptors), wait before trying again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// How a listener treats its connections.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Connections one holder (see [`crate::admission`]) may hold; more are closed at once.
    /// Needs `peer_lookup`.
    pub max_connections_per_user: usize,
    /// Look up each connection's user (see [`crate::peer`]).
    pub peer_lookup: bool,
    /// Also look up its process (pid and executable).
    pub peer_processes: bool,
    /// Look for connections the metadata guard redirected here (see [`Redirected`]).
    pub redirects: bool,
    /// The `[containers]` listener: a connection whose client is no socket of this host is a
    /// container's (served as such, by its source address) rather than refused.
    pub containers: bool,
}

/// What all the listeners of one endpoint share: the connection limits (so that serving on
/// both loopback families does not double them) and the peer resolver with its caches.
#[derive(Clone)]
pub struct Admission {
    options: Options,
    /// Connections accepted at once: the places, and [`DECIDING`] more for connections whose
    /// user is being found (one may be admitted by closing another holder's idle one).
    permits: Arc<Semaphore>,
    holders: Arc<Holders>,
    resolver: Arc<Resolver>,
    unanswered: Arc<UnansweredLog>,
}

impl Admission {
    /// Limits and lookups as `options` set them.
    pub fn new(options: Options) -> Self {
        Self {
            options,
            permits: Arc::new(Semaphore::new(options.max_connections + DECIDING)),
            holders: Holders::new(Limits {
                total: options.max_connections,
                // Without the peer lookup every client is one holder: no per-user limit.
                per_holder: if options.peer_lookup {
                    options.max_connections_per_user
                } else {
                    options.max_connections
                },
            }),
            resolver: Arc::new(Resolver::new(options.peer_processes)),
            unanswered: Arc::default(),
        }
    }
}

/// A connection the metadata guard redirected here: the client asked for the instance
/// metadata at this original destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Redirected(pub SocketAddr);

/// Whether `address` is one of this host's: binding to it works only then.
fn is_local_address(address: IpAddr) -> bool {
    std::net::UdpSocket::bind((address, 0)).is_ok()
}

/// The original destination of a connection that a NAT rule sent to `listening`, if one did.
fn redirected_from(stream: &TcpStream, listening: SocketAddr) -> Option<Redirected> {
    let original = socket2::SockRef::from(stream).original_dst_v4().ok()?;
    let original = original.as_socket()?;
    (original != listening).then_some(Redirected(original))
}

/// What a listener serves: a service for each connection, made knowing who is at the other
/// end (`crate::server` says what requests get).
pub trait App: Clone + Send + Sync + 'static {
    type Body: hyper::body::Body<
            Data = bytes::Bytes,
            Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        > + Send
        + 'static;
    type Service: hyper::service::Service<
            axum::http::Request<Incoming>,
            Response = axum::http::Response<Self::Body>,
            Error = std::convert::Infallible,
            Future: Send,
        > + Send
        + 'static;

    /// The service of one connection from `peer` (`redirected` here by the metadata guard, or
    /// not), which reports its requests to `progress`; `names` says where its user's names
    /// come from, to take them again when they change.
    fn connection(
        &self,
        peer: Arc<Peer>,
        names: Option<NameSource>,
        redirected: Option<Redirected>,
        progress: Arc<Progress>,
    ) -> Self::Service;
}

/// What a connection's service reports of its requests, for [`until_done_or_drained`]: how
/// many have started, and how many answers are still being worked out.
#[derive(Debug, Default)]
pub struct Progress {
    started: AtomicU64,
    answering: AtomicU64,
}

impl Progress {
    /// A request has started.
    pub fn started(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
    }

    /// An answer that takes a while is being worked out, until the guard is dropped.
    pub fn answering(self: &Arc<Self>) -> Answering {
        self.answering.fetch_add(1, Ordering::Relaxed);
        Answering(self.clone())
    }

    fn requests(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    fn busy(&self) -> bool {
        self.answering.load(Ordering::Relaxed) > 0
    }
}

/// See [`Progress::answering`].
pub struct Answering(Arc<Progress>);

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.answering.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Whether a connection has gone [`HEADER_READ_TIMEOUT`] without starting a request while no
/// answer was being worked out: the number of looks in a row that saw no progress, updated by
/// one look that saw `requests` started and whether it was `busy`. Pure.
fn stalled(idle_looks: &mut u32, seen: &mut u64, requests: u64, busy: bool) -> bool {
    if requests != *seen || busy {
        (*idle_looks, *seen) = (0, requests);
        return false;
    }
    *idle_looks += 1;
    // Progress may have come just after the previous look: one look more than the timeout
    // spans, so that no connection is closed early.
    *idle_looks > (HEADER_READ_TIMEOUT.as_secs() / PROGRESS_CHECK.as_secs()) as u32
}

/// Runs `connection` until it ends, or until it has gone [`HEADER_READ_TIMEOUT`] without
/// starting a request (see [`stalled`]); if `shutdown` comes first, drains it. A connection
/// accepted just before the stop may not have had its first request read yet (or even sent):
/// closing it at once would leave a client that did nothing wrong without an answer, so one
/// that has asked nothing yet gets [`FIRST_REQUEST_GRACE`]. Then the request in progress is
/// finished and the connection closed instead of kept alive.
async fn until_done_or_drained<I, S, B>(
    mut connection: Pin<&mut http1::Connection<I, S>>,
    progress: &Progress,
    shutdown: &CancellationToken,
) -> hyper::Result<()>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut looks =
        tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS_CHECK, PROGRESS_CHECK);
    looks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut idle_looks, mut seen) = (0, 0);
    // The connection is what wakes this task nearly every time: the stop and the looks are
    // polled only when they woke it ([`beside`]).
    let mut beside = Beside::new();
    let stop = shutdown.cancelled();
    tokio::pin!(stop);
    let stopped = std::future::poll_fn(|cx| {
        if let Poll::Ready(finished) = connection.as_mut().poll(cx) {
            return Poll::Ready(Some(finished));
        }
        let Some(mut beside) = beside.woken(cx) else {
            return Poll::Pending;
        };
        if stop.as_mut().poll(&mut beside).is_ready() {
            return Poll::Ready(None);
        }
        // Until pending: a tick that is ready has not registered the waker for the next one
        // (with `if`, the looks, and the header timeout with them, would stop after the first).
        while looks.poll_tick(&mut beside).is_ready() {
            if stalled(
                &mut idle_looks,
                &mut seen,
                progress.requests(),
                progress.busy(),
            ) {
                debug!("connection closed: no request started within the header timeout");
                return Poll::Ready(Some(Ok(())));
            }
        }
        Poll::Pending
    });
    if let Some(finished) = stopped.await {
        return finished;
    }
    let grace = tokio::time::sleep(FIRST_REQUEST_GRACE);
    tokio::pin!(grace);
    let mut look = tokio::time::interval(Duration::from_millis(5));
    while progress.requests() == 0 {
        tokio::select! {
            finished = connection.as_mut() => return finished,
            () = &mut grace => break,
            _ = look.tick() => {}
        }
    }
    connection.as_mut().graceful_shutdown();
    // The header timeout holds while draining too: a client dribbling a request head must not
    // hold the stop for the whole drain timeout.
    loop {
        tokio::select! {
            biased;
            finished = connection.as_mut() => return finished,
            _ = looks.tick() => {
                if stalled(&mut idle_looks, &mut seen, progress.requests(), progress.busy()) {
                    debug!("connection closed while draining: no request within the header timeout");
                    return Ok(());
                }
            }
        }
    }
}

/// Serves `app` on `listener` with at most `max_connections` admitted at a time (fairly, see
/// [`crate::admission`]), until `shutdown` is
/// cancelled; then stops accepting and lets open requests finish for at most
/// [`DRAIN_TIMEOUT`].
pub async fn serve(
    listener: TcpListener,
    app: impl App,
    admission: Admission,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let connections = TaskTracker::new();
    // Open connections take their users' names again when they change (once per resolver).
    if admission.options.peer_lookup {
        let resolver = admission.resolver.clone();
        connections.spawn(resolver.keep_fresh(shutdown.clone()));
    }
    let permits = admission.permits.clone();
    let accepting = Accepting {
        app,
        admission,
        metrics,
        listening: listener.local_addr().ok(),
        shutdown: shutdown.clone(),
    };
    while let Some((permit, stream, client)) = next_connection(&listener, &permits, &shutdown).await
    {
        accepting.metrics.connection_opened();
        let accepting = accepting.clone();
        connections.spawn(async move {
            let _permit = permit;
            accepting.connection(stream, client).await;
            accepting.metrics.connection_closed();
        });
    }
    drop(listener);
    drain(connections).await;
}

/// The next connection with its permit; `None` once `shutdown` is cancelled. Waiting for a
/// permit before accepting leaves extra clients in the backlog.
async fn next_connection(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
    shutdown: &CancellationToken,
) -> Option<(OwnedSemaphorePermit, TcpStream, SocketAddr)> {
    let permit = tokio::select! {
        permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        () = shutdown.cancelled() => return None,
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, client)) => return Some((permit, stream, client)),
                Err(error) => {
                    warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
            () = shutdown.cancelled() => return None,
        }
    }
}

/// Waits for the open connections to end, for at most [`DRAIN_TIMEOUT`].
async fn drain(connections: TaskTracker) {
    connections.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, connections.wait())
        .await
        .is_err()
    {
        warn!(
            timeout_s = DRAIN_TIMEOUT.as_secs(),
            "requests still open after the drain timeout"
        );
    }
    info!("server stopped");
}

/// What one listener's connections share.
#[derive(Clone)]
struct Accepting<A> {
    app: A,
    admission: Admission,
    metrics: Arc<Metrics>,
    /// Where the listener is bound.
    listening: Option<SocketAddr>,
    shutdown: CancellationToken,
}

impl<A: App> Accepting<A> {
    /// One connection from `client`: who it is, whether it is admitted, then HTTP until it
    /// ends, a stop, or its place is given to another holder.
    async fn connection(&self, stream: TcpStream, client: SocketAddr) {
        let options = &self.admission.options;
        let redirected = (self.listening)
            .filter(|_| options.redirects)
            .and_then(|listening| redirected_from(&stream, listening));
        // The generation before the lookup: names that change during it are taken again.
        let generation = self.admission.resolver.generation();
        let found = self.identify(client, redirected).await;
        let peer = match who_connects(found, client, options.containers, is_local_address) {
            Ok(peer) => peer,
            Err(unanswered) => return self.admission.unanswered.note(unanswered, client, None),
        };
        let progress = Arc::new(Progress::default());
        let Some(place) = self.admit(&peer, client, &progress) else {
            return;
        };
        // A uid without an account has no groups to lose: its names are not followed.
        let names = (peer.user.is_some() && peer.container.is_none()).then(|| NameSource {
            resolver: self.admission.resolver.clone(),
            generation,
        });
        let service = (self.app).connection(Arc::new(peer), names, redirected, progress.clone());
        // No timer and no header timeout: given a timer, hyper arms a header-read timer on
        // every request (its own 30 s default, or ours). The connection's looks
        // (until_done_or_drained) enforce HEADER_READ_TIMEOUT instead, once a second.
        let connection = http1::Builder::new()
            .header_read_timeout(None)
            .max_buf_size(MAX_HEAD_BYTES)
            .serve_connection(WriteDeadline::new(TokioIo::new(stream)), service);
        tokio::pin!(connection);
        // Closed by a stop, or to make room for another holder's connection.
        let finished = until_done_or_drained(connection, &progress, place.closing()).await;
        if let Err(error) = finished {
            debug!(%error, "connection ended with an error");
        }
    }

    /// The local user at the other end of a connection from `client`, asked of the kernel
    /// (once per connection); `None` when no live local socket is the client. The client's
    /// socket is connected to the address it asked for, which for a `redirected` connection
    /// is the instance metadata's. Without the peer lookup, everyone is the same nobody.
    async fn identify(&self, client: SocketAddr, redirected: Option<Redirected>) -> Option<Peer> {
        let server = self
            .listening
            .filter(|_| self.admission.options.peer_lookup);
        let Some(server) = server else {
            return Some(Peer::default());
        };
        let asked_for = redirected.map_or(server, |Redirected(original)| original);
        self.admission.resolver.identify(client, asked_for).await
    }

    /// `peer`'s place among the connections, if its holder has a fair share left
    /// ([`crate::admission`]); what is refused is closed at once rather than made to wait, so
    /// that others' requests never queue behind a flood.
    fn admit(&self, peer: &Peer, client: SocketAddr, progress: &Arc<Progress>) -> Option<Place> {
        let busy = {
            let progress = progress.clone();
            Arc::new(move || progress.busy())
        };
        let holders = &self.admission.holders;
        match holders.enter(Holder::of(peer), busy, &self.shutdown) {
            Ok((place, closed_one)) => {
                if closed_one {
                    self.metrics.connection_evicted();
                }
                Some(place)
            }
            Err(refused) => {
                let (reason, because) = match refused {
                    Refused::HolderFull => (Unanswered::UserAtLimit, RefusedBecause::UserAtLimit),
                    Refused::AllTaken => (Unanswered::AllTaken, RefusedBecause::AllTaken),
                };
                self.metrics.connection_refused(because);
                self.admission.unanswered.note(reason, client, peer.uid);
                None
            }
        }
    }
}

/// Who is at the other end of a connection from `client`, given what the peer lookup `found`.
/// On the containers' address (`containers`), a client that is no socket of this host is a
/// container (in a network namespace of its own); unless it comes from an address of this
/// host: a local connection whose source a NAT rule rewrote (Docker masquerades its bridge's
/// addresses), which must not pass for one. Anything else with no live local socket is gone,
/// or not local (127.0.0.1 reached from outside): nothing to answer. Pure but for `is_local`
/// ([`is_local_address`] when serving).
fn who_connects(
    found: Option<Peer>,
    client: SocketAddr,
    containers: bool,
    is_local: impl FnOnce(IpAddr) -> bool,
) -> Result<Peer, Unanswered> {
    match found {
        Some(peer) => Ok(peer),
        None if containers && !is_local(client.ip()) => Ok(Peer::container(client.ip())),
        None => Err(Unanswered::NoLocalClient),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A found user is who connects; with none found, only the containers' listener serves,
    /// and only a client from an address that is not this host's (a container); a local
    /// connection whose source was rewritten, or anything on the host's listeners, is closed.
    #[test]
    fn who_connects_when_the_kernel_knows_no_local_socket() {
        let client: SocketAddr = "172.17.0.2:40000".parse().unwrap();
        let user = Peer {
            uid: Some(1000),
            ..Peer::default()
        };
        let found = who_connects(Some(user.clone()), client, false, |_| false);
        assert_eq!(found.map(|peer| peer.uid), Ok(Some(1000)));
        let container = who_connects(None, client, true, |_| false).expect("a container");
        assert_eq!(container.container, Some(client.ip()));
        assert_eq!(
            who_connects(None, client, true, |_| true).err(),
            Some(Unanswered::NoLocalClient),
            "a host address rewritten by NAT is no container"
        );
        assert_eq!(
            who_connects(None, client, false, |_| false).err(),
            Some(Unanswered::NoLocalClient)
        );
    }

    /// A connection is closed after the header timeout without a new request, never before,
    /// and never while an answer is being worked out.
    #[test]
    fn stalled_after_the_header_timeout_without_progress() {
        let (mut idle, mut seen) = (0, 0);
        let looks_in_timeout = HEADER_READ_TIMEOUT.as_secs() / PROGRESS_CHECK.as_secs();
        for _ in 0..looks_in_timeout {
            assert!(!stalled(&mut idle, &mut seen, 0, false));
        }
        assert!(stalled(&mut idle, &mut seen, 0, false), "nothing asked");
        let (mut idle, mut seen) = (0, 0);
        for look in 0..20 {
            assert!(
                !stalled(&mut idle, &mut seen, look, false),
                "a request a look"
            );
        }
        for _ in 0..20 {
            assert!(
                !stalled(&mut idle, &mut seen, 19, true),
                "an answer in the works"
            );
        }
        for _ in 0..looks_in_timeout {
            assert!(!stalled(&mut idle, &mut seen, 19, false));
        }
        assert!(stalled(&mut idle, &mut seen, 19, false), "idle since");
    }

    /// A close unanswered is logged at once, then once a minute per reason with the count held
    /// back in between; another reason has its own minute.
    #[test]
    fn unanswered_closes_are_logged_once_a_minute_per_reason() {
        let log = UnansweredLog::default();
        let start = tokio::time::Instant::now();
        let at = |seconds| start + Duration::from_secs(seconds);
        assert_eq!(log.due(Unanswered::NoLocalClient, at(0)), Some(0));
        assert_eq!(log.due(Unanswered::NoLocalClient, at(1)), None);
        assert_eq!(log.due(Unanswered::NoLocalClient, at(59)), None);
        assert_eq!(log.due(Unanswered::UserAtLimit, at(30)), Some(0));
        assert_eq!(log.due(Unanswered::NoLocalClient, at(60)), Some(2));
        assert_eq!(log.due(Unanswered::NoLocalClient, at(61)), None);
        assert_eq!(log.due(Unanswered::UserAtLimit, at(90)), Some(0));
    }

    #[test]
    fn local_addresses() {
        assert!(is_local_address("127.0.0.1".parse().unwrap()));
        assert!(
            !is_local_address("192.0.2.77".parse().unwrap()),
            "TEST-NET-1"
        );
    }
}
