//! The `serve` command: wires configuration, token, STS, refreshers and the HTTP server together
//! and runs them until shutdown.
//!
//! The caller binds ([`bind`]) and hands in what the daemon serves with ([`Parts`]): the
//! listeners, the validated configuration, the STS client, the clock, what was read of the
//! process environment, and a channel of reload requests (SIGHUP in production). So tests run
//! the whole daemon in-process with a fake STS, and listeners bound elsewhere (by systemd's
//! socket activation) can be handed in.
//!
//! After start, a reload request re-reads the configuration: roles are added, removed or
//! replaced without touching the others; an invalid file is logged and the running configuration
//! kept.
//!
//! Order matters. The ports are bound and [`preflight`] checks the token files before anything
//! talks to AWS (`main` calls it before it builds the STS client), so that a misconfigured host
//! fails at once with a clear error, and so that clients asking during the first STS call get a
//! 503 `CredentialsUninitialized` rather than a refused connection. The daemon refuses to run if
//! anything it would call (STS, instance metadata) is its own listener: it would be asking
//! itself for credentials.
//!
//! The daemon's parts (the refreshers, the metrics listener, the identity lookup, the systemd
//! notifier, reloads) run as tasks that are all joined. One that panics stops the daemon with a
//! logged error and a non-zero exit: a daemon that silently stopped refreshing one role would
//! serve until the credentials ran out. A panic in one connection's task ends that connection
//! only (hyper's per-connection tasks are not parts of the daemon), and the accept loop runs in
//! `run`'s own task, so a panic there ends `run` itself.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::audit::Audit;
use crate::config::{Config, GuardMode, RoleConfig};
use crate::imds::{Imds, Upstream};
use crate::listener;
use crate::metrics::Metrics;
use crate::notify;
use crate::refresh::{RoleStatus, Seams};
use crate::roles::{RoleTable, Sessions};
use crate::server::{self, AppState};
use crate::sts::{CHAINED_SESSION_LIMIT, Sts, is_role_session};
use crate::supervisor::Supervisor;

mod reloads;
mod setup;
mod tasks;

use reloads::{Reloads, publish_endpoints};
use tasks::Tasks;

pub use setup::metadata_upstream;
pub use setup::{
    Environment, Listeners, Passed, SetupError, Tokens, bind, is_operator_error, loopback_partner,
    open_files_limit, points_at, preflight, require_descriptors, require_trust_roots,
};

pub use crate::clock::{SharedClock, SystemClock};
pub use crate::notify::Notifier;
pub use crate::sts::SdkSts;

/// How long connections may wait at start for the first credentials before being answered.
const START_HOLD: Duration = Duration::from_millis(1500);
/// Where instance metadata says the instance id.
const INSTANCE_ID_PATH: &str = "/latest/meta-data/instance-id";
/// How long start-up waits for it (only when a template names it).
const INSTANCE_ID_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one source-identity lookup may take.
const IDENTITY_TIMEOUT: Duration = Duration::from_secs(15);
/// First and longest wait between source-identity lookups while STS is unreachable.
const IDENTITY_RETRY: (Duration, Duration) = (Duration::from_secs(2), Duration::from_secs(300));
/// `metrics_listen` serves scrapers, not clients: few connections, nobody to identify.
const METRICS_LISTENER: listener::Options = listener::Options {
    max_connections: 16,
    max_connections_per_user: 16,
    peer_lookup: false,
    peer_processes: false,
    redirects: false,
    containers: false,
};
/// Everything [`run`] serves with.
pub struct Parts<S> {
    /// Where the configuration was read from; reloads read it again.
    pub config_path: PathBuf,
    /// The validated configuration.
    pub config: Config,
    /// The bound listeners.
    pub listeners: Listeners,
    /// The one seam to AWS.
    pub sts: Arc<S>,
    /// The wall clock.
    pub clock: SharedClock,
    /// What was read of the process environment.
    pub environment: Environment,
    /// systemd's notification socket, if any.
    pub notifier: Notifier,
    /// One message per reload request.
    pub reloads: mpsc::Receiver<()>,
}

/// Runs the daemon until `shutdown` is cancelled, then drains and joins every task. Fails if
/// set-up is refused or any task panicked.
pub async fn run<S: Sts>(parts: Parts<S>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let Parts {
        config_path,
        config,
        listeners,
        sts,
        clock,
        environment,
        notifier,
        reloads,
    } = parts;
    let started = Started::check(&config, &listeners, &environment)?;
    let metrics = Arc::new(Metrics::new());
    let audit = Arc::new(Audit::counting_folds_in(metrics.audit_lines_folded()));
    audit.set_lines_per_minute(config.server.audit_lines_per_minute);
    let seams = Seams {
        sts: sts.clone(),
        clock: clock.clone(),
        metrics: metrics.clone(),
    };
    let (supervisor, roles) = start_refreshers(&config, &started, seams, &shutdown).await;
    let mut tasks = Tasks::default();
    if let Some(scrapes) = listeners.metrics {
        let scraped = (metrics.clone(), roles.clone(), clock.clone());
        tasks.spawn(
            "metrics listener",
            serve_metrics(scrapes, scraped, shutdown.clone()),
        );
    }
    let metadata = metadata_endpoint(&config, started.metadata_source);
    let metadata_upstream = metadata.as_ref().map(|_| started.upstream.as_str());
    log_summary(&config, sts.region(), metadata_upstream);
    let notifier = Arc::new(notifier);
    let watched = (&roles, &clock, &notifier, &audit);
    spawn_background(&mut tasks, sts, &config, watched, &shutdown);
    let admissions = Admissions::of(&config);
    let (server_token_sender, server_token) = watch::channel(started.tokens.server);
    let reloading = Reloads {
        path: config_path,
        current: config,
        supervisor,
        listening: started.listening,
        server_token: server_token_sender,
        notifier,
        audit: audit.clone(),
    };
    tasks.spawn("reloads", reloading.run(reloads, shutdown.clone()));
    first_attempts(&roles, START_HOLD, &shutdown).await;
    let hosts = served_hosts(&started.locals, &listeners.containers)?;
    let shared = (metrics.clone(), audit.clone());
    let state = AppState::new(server_token, roles, &hosts, clock, metadata, shared);
    let app = server::router(state);
    let serving = (app, admissions, metrics, shutdown.clone());
    let first = serve_listeners(&mut tasks, listeners.main, listeners.containers, serving)?;
    let failure = until_stopped_or_failed(first, &mut tasks, &shutdown).await;
    shutdown.cancel();
    finish(tasks, failure, &audit).await
}

/// What start-up checked before anything talks to AWS.
struct Started {
    /// Where the listeners are bound; the first is the main one.
    locals: Vec<SocketAddr>,
    listening: SocketAddr,
    tokens: Tokens,
    /// Where instance metadata is read, and the source of the metadata endpoint's
    /// passthrough when `[imds]` is configured.
    upstream: String,
    metadata_source: Option<Upstream>,
}

impl Started {
    /// [`preflight`] on `listeners`, and the public copy of the endpoints written.
    fn check(
        config: &Config,
        listeners: &Listeners,
        environment: &Environment,
    ) -> anyhow::Result<Self> {
        let locals = listeners.local_addresses()?;
        let tokens = preflight(config, &locals, environment)?;
        let upstream = metadata_upstream(config, environment);
        let metadata_source = match config.imds {
            Some(_) => Some(Upstream::new(&upstream)?),
            None => None,
        };
        for address in &locals {
            info!(%address, "listening");
        }
        let listening = *locals.first().context("no listener to serve on")?;
        publish_endpoints(config, listening);
        Ok(Self {
            locals,
            listening,
            tokens,
            upstream,
            metadata_source,
        })
    }
}

/// Starts a refresher for each role (after looking up the instance id, if a session name
/// names it): the supervisor that owns them, and the table of served roles they publish.
async fn start_refreshers<S: Sts>(
    config: &Config,
    started: &Started,
    seams: Seams<S>,
    shutdown: &CancellationToken,
) -> (Supervisor<S>, watch::Receiver<Arc<RoleTable>>) {
    let instance_id = instance_id_if_named(config, &started.upstream).await;
    let role_tokens = &started.tokens.roles;
    let child = shutdown.child_token();
    Supervisor::start(&config.roles, role_tokens, seams, instance_id, child)
}

/// The metrics listener's part: serves `/metrics` without names once its address is bound.
async fn serve_metrics(
    scrapes: setup::MetricsListener,
    (metrics, roles, clock): (Arc<Metrics>, watch::Receiver<Arc<RoleTable>>, SharedClock),
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Some(scrapes) = metrics_listener(scrapes, &shutdown).await else {
        return Ok(());
    };
    let local = (scrapes.local_addr()).context("cannot read the metrics address")?;
    let router = server::metrics_router(metrics.clone(), roles, clock, local);
    let admission = listener::Admission::new(METRICS_LISTENER);
    let app = server::Endpoint::routed(router);
    listener::serve(scrapes, app, admission, metrics, shutdown).await;
    Ok(())
}

/// The parts that run beside the listeners: the source-identity lookup, the systemd
/// notifier and the audit's summaries.
fn spawn_background<S: Sts>(
    tasks: &mut Tasks,
    sts: Arc<S>,
    config: &Config,
    (roles, clock, notifier, audit): (
        &watch::Receiver<Arc<RoleTable>>,
        &SharedClock,
        &Arc<Notifier>,
        &Arc<Audit>,
    ),
    shutdown: &CancellationToken,
) {
    let identity = log_source_identity(sts, config.clone(), shutdown.clone());
    tasks.spawn("source identity", identity);
    let notifications = notify::run(
        notifier.clone(),
        roles.clone(),
        clock.clone(),
        shutdown.clone(),
    );
    tasks.spawn_unending("systemd notifier", notifications);
    let summaries = audit.clone().summarize_every_interval(shutdown.clone());
    tasks.spawn_unending("audit summary", summaries);
}

/// Who may connect to the listeners: the host's users, and containers with a limit of their
/// own (a flood from one cannot make the host's users wait).
#[derive(Clone)]
struct Admissions {
    host: listener::Admission,
    containers: listener::Admission,
}

impl Admissions {
    fn of(config: &Config) -> Self {
        let containers = listener::Options {
            containers: true,
            ..listener_options(config)
        };
        Self {
            host: listener::Admission::new(listener_options(config)),
            containers: listener::Admission::new(containers),
        }
    }
}

/// The `Host` values requests may name: every main and container listener's address.
fn served_hosts(
    locals: &[SocketAddr],
    containers: &[tokio::net::TcpListener],
) -> anyhow::Result<Vec<SocketAddr>> {
    let container_addresses: Vec<SocketAddr> = (containers.iter())
        .map(tokio::net::TcpListener::local_addr)
        .collect::<Result<_, _>>()
        .context("cannot read a container address")?;
    Ok([locals, &container_addresses].concat())
}

/// Serves every container listener and all main listeners but the first as parts of the
/// daemon; the first main listener, which `run`'s own task serves, is returned serving.
fn serve_listeners(
    tasks: &mut Tasks,
    main: Vec<tokio::net::TcpListener>,
    containers: Vec<tokio::net::TcpListener>,
    (app, admissions, metrics, shutdown): (
        server::Endpoint,
        Admissions,
        Arc<Metrics>,
        CancellationToken,
    ),
) -> anyhow::Result<impl Future<Output = ()> + use<>> {
    let serve = |listener, admission: &listener::Admission| {
        let (app, admission) = (app.clone(), admission.clone());
        listener::serve(listener, app, admission, metrics.clone(), shutdown.clone())
    };
    for listener in containers {
        tasks.spawn_unending(
            "container listener",
            serve(listener, &admissions.containers),
        );
    }
    let mut main = main.into_iter();
    let first = main.next().context("no listener to serve on")?;
    for other in main {
        tasks.spawn_unending("second loopback listener", serve(other, &admissions.host));
    }
    Ok(serve(first, &admissions.host))
}

/// Serves until `shutdown`, or until a part fails: then stops the rest, lets `serving` drain,
/// and returns the failure.
async fn until_stopped_or_failed(
    serving: impl Future<Output = ()>,
    tasks: &mut Tasks,
    shutdown: &CancellationToken,
) -> Option<anyhow::Error> {
    tokio::pin!(serving);
    let failure = tokio::select! {
        () = &mut serving => None,
        failure = tasks.failure() => Some(failure),
    };
    if let Some(failure) = &failure {
        error!(error = %format!("{failure:#}"), "stopping: a part of the daemon failed");
        shutdown.cancel();
        serving.await;
    }
    failure
}

/// Joins every part; the audit writes what it still holds back, as every request has been
/// answered. The first failure, if any.
async fn finish(tasks: Tasks, failure: Option<anyhow::Error>, audit: &Audit) -> anyhow::Result<()> {
    let joined = tasks.join_all().await;
    audit.summarize_all();
    info!("stopped");
    match failure {
        Some(failure) => Err(failure),
        None => joined,
    }
}

/// Waits until every role's first STS attempt has ended (with credentials or an error), for at
/// most `limit`, or until `shutdown`. Meanwhile connections wait in the listening sockets
/// (systemd's across a restart): a client asking at start then gets credentials rather than a
/// 503 `CredentialsUninitialized`, and waits no longer than SDKs do (botocore gives up at 2 s).
async fn first_attempts(
    roles: &watch::Receiver<Arc<RoleTable>>,
    limit: Duration,
    shutdown: &CancellationToken,
) {
    let statuses: Vec<_> = (roles.borrow().values())
        .filter_map(|entry| match &entry.sessions {
            Sessions::Shared(status) => Some(status.clone()),
            Sessions::PerUser(_) => None,
        })
        .collect();
    let settled = async {
        for mut status in statuses {
            let ended = |s: &RoleStatus| s.current.is_some() || s.last_error.is_some();
            let _ = status.wait_for(ended).await;
        }
    };
    tokio::select! {
        () = settled => {}
        () = tokio::time::sleep(limit) => {}
        () = shutdown.cancelled() => {}
    }
}

/// This instance's id from instance metadata, when a role's template names `{instance_id}`
/// (looked up once, before any session starts, so every session name of a run is the same);
/// `None` off EC2 or when metadata does not answer in time, and the placeholder stays empty.
async fn instance_id_if_named(config: &Config, upstream: &str) -> Option<String> {
    if !config.roles.iter().any(RoleConfig::names_instance) {
        return None;
    }
    let lookup = async {
        Upstream::new(upstream)
            .ok()?
            .get(INSTANCE_ID_PATH)
            .await
            .ok()
    };
    let found = tokio::time::timeout(INSTANCE_ID_TIMEOUT, lookup)
        .await
        .ok()
        .flatten();
    match &found {
        Some(id) => info!(instance_id = %id, "instance id found for session names"),
        None => warn!(
            upstream,
            "a session name names {{instance_id}}, but instance metadata did not say it; \
             the placeholder stays empty until a restart"
        ),
    }
    found
}

fn listener_options(config: &Config) -> listener::Options {
    listener::Options {
        max_connections: config.server.max_connections,
        max_connections_per_user: config.server.max_connections_per_user,
        peer_lookup: config.server.peer_lookup,
        peer_processes: config.server.peer_processes,
        redirects: config
            .imds
            .as_ref()
            .is_some_and(|imds| imds.guard == Some(GuardMode::Redirect))
            || config
                .containers
                .as_ref()
                .is_some_and(|containers| containers.imds == GuardMode::Redirect),
        containers: false,
    }
}

/// The metrics listener once it listens: at once, or once its address could be bound (tried
/// every few seconds); `None` if the daemon stops first.
async fn metrics_listener(
    listener: setup::MetricsListener,
    shutdown: &CancellationToken,
) -> Option<tokio::net::TcpListener> {
    let address = match listener {
        setup::MetricsListener::Bound(listener) => return Some(listener),
        setup::MetricsListener::Pending(address) => address,
    };
    loop {
        tokio::select! {
            () = tokio::time::sleep(setup::METRICS_BIND_RETRY) => {}
            () = shutdown.cancelled() => return None,
        }
        if let Ok(listener) = setup::bind_metrics(address).await {
            info!(%address, "the metrics listener is up");
            return Some(listener);
        }
    }
}

/// The metadata endpoint, when `[imds]` names a role.
fn metadata_endpoint(config: &Config, upstream: Option<Upstream>) -> Option<server::Metadata> {
    let (imds_config, upstream) = config.imds.as_ref().zip(upstream)?;
    Some(server::Metadata::new(
        &imds_config.role,
        Imds::new(upstream),
    ))
}

fn log_summary(config: &Config, region: Option<String>, metadata_upstream: Option<&str>) {
    let roles: Vec<String> = config
        .roles
        .iter()
        .map(|role| format!("{}={}", role.name, role.arn))
        .collect();
    info!(
        version = env!("CARGO_PKG_VERSION"),
        listen = %config.server.listen,
        token_file = %config.server.token_file.display(),
        region = region.as_deref().unwrap_or("unset"),
        endpoint = config.sts.endpoint.as_deref().unwrap_or("default"),
        roles = %roles.join(","),
        imds_role = config.imds.as_ref().map(|imds| imds.role.as_str()).unwrap_or("off"),
        imds_upstream = metadata_upstream.unwrap_or("-"),
        "assume-roled started"
    );
    if region.is_none() {
        warn!("no STS region found; set [sts] region or AWS_REGION");
    }
}

/// Says which identity the daemon acts as (the first thing to check when AssumeRole is
/// denied), and which configured durations STS will not grant to that identity. STS may be
/// unreachable at start, so the lookup is retried until it succeeds.
async fn log_source_identity<S: Sts>(
    sts: Arc<S>,
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut delay = IDENTITY_RETRY.0;
    let arn = loop {
        match tokio::time::timeout(IDENTITY_TIMEOUT, sts.caller_identity()).await {
            Ok(Ok(arn)) => break arn,
            Ok(Err(error)) if delay == IDENTITY_RETRY.0 => warn!(
                code = %error.code, reason = %error.message,
                "cannot determine the source identity yet; retrying"
            ),
            Err(_) if delay == IDENTITY_RETRY.0 => {
                warn!("cannot determine the source identity yet: STS did not answer in time")
            }
            _ => {}
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => delay = (delay * 2).min(IDENTITY_RETRY.1),
            () = shutdown.cancelled() => return Ok(()),
        }
    };
    info!(arn = %arn, "source identity");
    if !is_role_session(&arn) {
        return Ok(());
    }
    for role in config
        .roles
        .iter()
        .filter(|r| r.duration > CHAINED_SESSION_LIMIT)
    {
        warn!(
            role = %role.name,
            configured_s = role.duration.as_secs(),
            used_s = CHAINED_SESSION_LIMIT.as_secs(),
            "duration capped to 1h: the host's identity is a role session, and STS limits \
             sessions assumed by role chaining to one hour"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests;
