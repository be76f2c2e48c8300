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

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{mpsc, watch};
use tokio::task::{Id, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::audit::Audit;
use crate::config::{self, Config, GuardMode, RoleConfig};
use crate::imds::{Imds, Upstream};
use crate::listener;
use crate::metrics::Metrics;
use crate::notify;
use crate::refresh::{RoleStatus, Seams};
use crate::roles::{RoleTable, Sessions};
use crate::server::{self, AppState};
use crate::sts::{CHAINED_SESSION_LIMIT, Sts, is_role_session};
use crate::supervisor::Supervisor;
use crate::token::{self, AuthToken, RoleTokens, TokenFileError};

mod setup;

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
    let locals = listeners.local_addresses()?;
    let Tokens {
        server: token,
        roles: role_tokens,
    } = preflight(&config, &locals, &environment)?;
    let upstream = metadata_upstream(&config, &environment);
    let metadata_source = match config.imds {
        Some(_) => Some(Upstream::new(&upstream)?),
        None => None,
    };
    for address in &locals {
        info!(%address, "listening");
    }
    let listening = *locals.first().context("no listener to serve on")?;
    publish_endpoints(&config, listening);
    let metrics = Arc::new(Metrics::new());
    let audit = Arc::new(Audit::default());
    audit.set_lines_per_minute(config.server.audit_lines_per_minute);
    let instance_id = instance_id_if_named(&config, &upstream).await;
    let seams = Seams {
        sts: sts.clone(),
        clock: clock.clone(),
        metrics: metrics.clone(),
    };
    let (supervisor, roles) = Supervisor::start(
        &config.roles,
        &role_tokens,
        seams,
        instance_id,
        shutdown.child_token(),
    );
    let mut tasks = Tasks::default();
    if let Some(scrapes) = listeners.metrics {
        let (metrics, roles, clock, shutdown) = (
            metrics.clone(),
            roles.clone(),
            clock.clone(),
            shutdown.clone(),
        );
        tasks.spawn("metrics listener", async move {
            let Some(scrapes) = metrics_listener(scrapes, &shutdown).await else {
                return Ok(());
            };
            let scrape_address = scrapes
                .local_addr()
                .context("cannot read the metrics address")?;
            let app = server::Endpoint::routed(server::metrics_router(
                metrics.clone(),
                roles,
                clock,
                scrape_address,
            ));
            let admission = listener::Admission::new(METRICS_LISTENER);
            listener::serve(scrapes, app, admission, metrics, shutdown).await;
            Ok(())
        });
    }
    let metadata = metadata_endpoint(&config, metadata_source);
    log_summary(
        &config,
        sts.region(),
        metadata.as_ref().map(|_| upstream.as_str()),
    );
    tasks.spawn(
        "source identity",
        log_source_identity(sts, config.clone(), shutdown.clone()),
    );
    let notifier = Arc::new(notifier);
    let notifications = notify::run(
        notifier.clone(),
        roles.clone(),
        clock.clone(),
        shutdown.clone(),
    );
    tasks.spawn("systemd notifier", async move {
        notifications.await;
        Ok(())
    });
    let summaries = audit.clone().summarize_every_interval(shutdown.clone());
    tasks.spawn("audit summary", async move {
        summaries.await;
        Ok(())
    });
    let admission = listener::Admission::new(listener_options(&config));
    // Containers get a limit of their own: a flood from one cannot make the host's users wait.
    let for_containers = listener::Admission::new(listener::Options {
        containers: true,
        ..listener_options(&config)
    });
    let (server_token_sender, server_token) = watch::channel(token);
    let reloading = Reloads {
        path: config_path,
        current: config,
        supervisor,
        listening,
        server_token: server_token_sender,
        notifier,
        audit: audit.clone(),
    };
    tasks.spawn("reloads", reloading.run(reloads, shutdown.clone()));
    first_attempts(&roles, START_HOLD, &shutdown).await;
    let container_addresses: Vec<SocketAddr> = (listeners.containers.iter())
        .map(tokio::net::TcpListener::local_addr)
        .collect::<Result<_, _>>()
        .context("cannot read a container address")?;
    let hosts = [locals.as_slice(), &container_addresses].concat();
    let state = AppState::new(
        server_token,
        roles,
        &hosts,
        clock,
        metadata,
        metrics.clone(),
        audit.clone(),
    );
    let app = server::router(state);
    for listener in listeners.containers {
        let serving = listener::serve(
            listener,
            app.clone(),
            for_containers.clone(),
            metrics.clone(),
            shutdown.clone(),
        );
        tasks.spawn("container listener", async move {
            serving.await;
            Ok(())
        });
    }
    let mut main = listeners.main.into_iter();
    let first = main.next().context("no listener to serve on")?;
    for other in main {
        let serving = listener::serve(
            other,
            app.clone(),
            admission.clone(),
            metrics.clone(),
            shutdown.clone(),
        );
        tasks.spawn("second loopback listener", async move {
            serving.await;
            Ok(())
        });
    }
    let serving = listener::serve(first, app, admission, metrics, shutdown.clone());
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
    shutdown.cancel();
    let joined = tasks.join_all().await;
    // Every request has been answered: what the audit still holds back is written now.
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

/// The daemon's long-running tasks, by name, so a failure says which part failed.
#[derive(Default)]
struct Tasks {
    set: JoinSet<anyhow::Result<()>>,
    names: HashMap<Id, &'static str>,
}

impl Tasks {
    fn spawn(
        &mut self,
        name: &'static str,
        task: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    ) {
        let id = self.set.spawn(task).id();
        self.names.insert(id, name);
    }

    /// The first task to fail (panic or error); pending while none does. Tasks that finish
    /// well (the identity lookup) are collected on the way. Cancel-safe.
    async fn failure(&mut self) -> anyhow::Error {
        loop {
            match self.set.join_next_with_id().await {
                Some(joined) => {
                    if let Err(failure) = self.outcome(joined) {
                        return failure;
                    }
                }
                None => std::future::pending().await,
            }
        }
    }

    /// Waits for every task; the first failure, if any, after logging each.
    async fn join_all(mut self) -> anyhow::Result<()> {
        let mut first = None;
        while let Some(joined) = self.set.join_next_with_id().await {
            if let Err(failure) = self.outcome(joined) {
                error!(error = %format!("{failure:#}"), "a part of the daemon failed");
                first.get_or_insert(failure);
            }
        }
        first.map_or(Ok(()), Err)
    }

    fn outcome(
        &mut self,
        joined: Result<(Id, anyhow::Result<()>), tokio::task::JoinError>,
    ) -> anyhow::Result<()> {
        let (id, result) = match joined {
            Ok((id, result)) => (id, result),
            Err(error) => (error.id(), Err(anyhow::anyhow!("panicked: {error}"))),
        };
        let name = self.names.remove(&id).unwrap_or("a task");
        result.with_context(|| format!("{name} failed"))
    }
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

/// Applies configuration changes on request; owns the supervisor.
struct Reloads<S> {
    path: PathBuf,
    current: Config,
    supervisor: Supervisor<S>,
    /// Where the main listener is bound, for the public copy of the endpoints.
    listening: SocketAddr,
    /// The server's token handlers check; re-read at every reload.
    server_token: watch::Sender<AuthToken>,
    notifier: Arc<Notifier>,
    /// Its line budget follows the configuration.
    audit: Arc<Audit>,
}

impl<S: Sts> Reloads<S> {
    /// Reloads on each request until `shutdown`; fails as soon as a refresher panics.
    async fn run(
        mut self,
        mut requests: mpsc::Receiver<()>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        loop {
            tokio::select! {
                Some(()) = requests.recv() => self.reload(),
                () = shutdown.cancelled() => break,
                failure = self.supervisor.failure() => {
                    self.supervisor.wait().await.ok();
                    return Err(failure);
                }
            }
        }
        self.supervisor.wait().await
    }

    /// Re-reads the file and the token files (creating missing ones: deleting a token file,
    /// the server's or a role's, and reloading issues a new token, and the old one stops
    /// working); a bad file is logged and the running configuration kept.
    fn reload(&mut self) {
        self.notifier.send("RELOADING=1");
        match config::load(&self.path) {
            Ok(new) if let Some(reason) = unsafe_for_running_metadata(&self.current, &new) => {
                error!(reason, "reload refused; keeping the running configuration");
            }
            Ok(new) => match self.reload_tokens(&new) {
                Ok(tokens) => self.apply(new, &tokens),
                Err(error) => error!(
                    error = %error,
                    "reload failed: a token file is unusable; keeping the running \
                     configuration"
                ),
            },
            Err(error) => error!(
                error = %error,
                "reload failed: the configuration is invalid; keeping the running one"
            ),
        }
        self.notifier.send("READY=1");
    }

    /// The roles' tokens of `new`, and the server's (its file is the running one's: `[server]`
    /// changes wait for a restart), published if it changed.
    fn reload_tokens(&mut self, new: &Config) -> Result<RoleTokens, TokenFileError> {
        let roles = token::load_role_tokens(new)?;
        let server = token::load_or_create(&self.current.server.token_file, None)?;
        let changed = !self
            .server_token
            .borrow()
            .matches(server.expose().as_bytes());
        if changed {
            info!(file = %self.current.server.token_file.display(), "the server's token was re-issued");
            self.server_token.send_replace(server);
        }
        Ok(roles)
    }

    fn apply(&mut self, new: Config, tokens: &RoleTokens) {
        self.audit
            .set_lines_per_minute(new.server.audit_lines_per_minute);
        for section in sections_needing_restart(&self.current, &new) {
            warn!(
                section,
                "changes to [{section}] take effect at the next restart"
            );
        }
        let plan = self.supervisor.apply(&new.roles, tokens);
        info!(
            kept = ?plan.kept,
            started = ?plan.started,
            changed = ?plan.changed,
            stopped = ?plan.stopped,
            "configuration reloaded"
        );
        self.current.roles = new.roles;
        // The listener stays until a restart: the published endpoints say where it is now.
        publish_endpoints(&self.current, self.listening);
    }
}

/// Writes the public copy of where roles are served, for `env`; a failure only means users
/// outside the daemon's group cannot run `env`, so it is logged, not fatal.
fn publish_endpoints(config: &Config, listening: SocketAddr) {
    if let Err(error) = crate::env::publish(config, listening) {
        warn!(%error, "cannot write the public copy of the endpoints; `assume-roled env` needs \
            the configuration to be readable");
    }
}

/// Why `new` cannot be applied while the metadata endpoint serves `current`'s `[imds]` role
/// (changes to `[imds]` wait for a restart, so a new file is checked against the running one
/// too): that role would be open to every local process.
fn unsafe_for_running_metadata(current: &Config, new: &Config) -> Option<String> {
    let served = &current.imds.as_ref()?.role;
    let role = new.roles.iter().find(|role| role.name == *served)?;
    role.open_to_all().then(|| {
        format!(
            "role {served} is served as instance metadata until the next restart, and the new \
             configuration leaves it without allowed_users, allowed_groups or allowed_networks"
        )
    })
}

/// Sections whose changes a reload cannot apply: the listeners, the STS client and the metadata
/// endpoint are built once at start.
fn sections_needing_restart(current: &Config, new: &Config) -> Vec<&'static str> {
    let mut sections = Vec::new();
    if current.server != new.server {
        sections.push("server");
    }
    if current.sts != new.sts {
        sections.push("sts");
    }
    if current.imds != new.imds {
        sections.push("imds");
    }
    if current.containers != new.containers {
        sections.push("containers");
    }
    sections
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
