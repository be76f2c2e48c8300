//! The `serve` command: wires configuration, token, STS, refreshers and the HTTP server together
//! and runs them until shutdown.
//!
//! After start, SIGHUP re-reads the configuration: roles are added, removed or replaced without
//! touching the others; an invalid file is logged and the running configuration kept.
//!
//! Order matters. The token file is checked and the port bound before anything talks to AWS, so
//! that a misconfigured host fails at once with a clear error, and so that clients asking during
//! the first STS call get a 503 `CredentialsUninitialized` rather than a refused connection.
//! Right after binding, the daemon refuses to run if anything it would call (STS, instance
//! metadata) is its own listener: it would be asking itself for credentials.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::http::Uri;
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{self, Config};
use crate::imds::{self, Imds, Upstream};
use crate::listener;
use crate::metrics::Metrics;
use crate::notify::{self, Notifier};
use crate::refresh::SystemClock;
use crate::server::{self, AppState};
use crate::sts::{CHAINED_SESSION_LIMIT, SdkSts, is_role_session};
use crate::supervisor::{RoleTable, Supervisor};
use crate::token::{self, AuthToken, RoleTokens};

/// How long one source-identity lookup may take.
const IDENTITY_TIMEOUT: Duration = Duration::from_secs(15);
/// First and longest wait between source-identity lookups while STS is unreachable.
const IDENTITY_RETRY: (Duration, Duration) = (Duration::from_secs(2), Duration::from_secs(300));
/// `metrics_listen` serves scrapers, not clients: few connections, nobody to identify.
const METRICS_LISTENER: listener::Options = listener::Options {
    max_connections: 16,
    peer_lookup: false,
    peer_processes: false,
};
/// Where the SDKs (and so the daemon's own source chain) look for instance metadata.
const METADATA_ENDPOINT_VARIABLE: &str = "AWS_EC2_METADATA_SERVICE_ENDPOINT";
/// Environment variables that redirect the daemon's own STS calls.
const STS_ENDPOINT_VARIABLES: &[&str] = &["AWS_ENDPOINT_URL_STS", "AWS_ENDPOINT_URL"];

/// Why this host cannot run the daemon as configured: an operator must act, so no restart.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A setting would make the daemon call itself.
    #[error(
        "{setting} ({url}) points at this daemon's own listener {listen}: it would ask itself \
         for credentials; point it at STS or the real instance metadata"
    )]
    SelfLoop {
        setting: String,
        url: String,
        listen: SocketAddr,
    },
    /// STS is reached over https, and nothing could verify its certificate.
    #[error(
        "no trusted CA certificates found on this host, so STS's certificate cannot be \
         verified: install the ca-certificates package (or set SSL_CERT_FILE)"
    )]
    NoTrustRoots,
}

/// What start-up has checked and bound before anything talks to AWS.
struct Bound {
    token: AuthToken,
    role_tokens: RoleTokens,
    listener: TcpListener,
    local: SocketAddr,
    metrics_listener: Option<TcpListener>,
    hangups: Signal,
    /// The real instance metadata, for `[imds]`.
    upstream: String,
}

/// Checks the token file, binds the listeners and refuses set-ups that cannot work.
async fn bind(config: &Config) -> anyhow::Result<Bound> {
    let token = token::load_or_create(&config.server.token_file, None)?;
    let role_tokens = token::load_role_tokens(config)?;
    let listener = bind_to(config.server.listen, "listen").await?;
    let local = listener
        .local_addr()
        .context("cannot read the bound address")?;
    let upstream = metadata_upstream(config);
    refuse_self_loops(local, &outbound_urls(config, &upstream))?;
    require_trust_roots(config)?;
    let hangups = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
    let metrics_listener = match config.server.metrics_listen {
        Some(address) => Some(bind_to(address, "metrics_listen").await?),
        None => None,
    };
    Ok(Bound {
        token,
        role_tokens,
        listener,
        local,
        metrics_listener,
        hangups,
        upstream,
    })
}

async fn bind_to(address: SocketAddr, key: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address} ({key})"))
}

/// Runs the daemon until `shutdown` is cancelled; SIGHUP re-reads `config_path`.
pub async fn run(
    config_path: &Path,
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let bound = bind(&config).await?;
    info!(address = %bound.local, "listening");
    let sts = Arc::new(SdkSts::new(&config.sts).await);
    let clock = Arc::new(SystemClock);
    let metrics = Arc::new(Metrics::new());
    let (supervisor, roles) = Supervisor::start(
        &config.roles,
        &bound.role_tokens,
        sts.clone(),
        clock.clone(),
        metrics.clone(),
        shutdown.child_token(),
    );
    if let Some(scrapes) = bound.metrics_listener {
        let app = server::metrics_router(metrics.clone(), roles.clone(), clock.clone());
        let serving = listener::serve(
            scrapes,
            app,
            METRICS_LISTENER,
            metrics.clone(),
            shutdown.clone(),
        );
        tokio::spawn(serving);
    }
    let metadata = metadata_endpoint(&config, &bound.upstream, &roles, clock.clone())?;
    log_summary(
        &config,
        &sts,
        metadata.as_ref().map(|_| bound.upstream.as_str()),
    );
    tokio::spawn(log_source_identity(sts, config.clone(), shutdown.clone()));
    let notifier = Arc::new(Notifier::from_env());
    let notifications = tokio::spawn(notify::run(
        notifier.clone(),
        roles.clone(),
        clock.clone(),
        shutdown.clone(),
    ));
    let options = listener_options(&config);
    let reloads = Reloads {
        path: config_path.to_owned(),
        current: config,
        supervisor,
        notifier,
    };
    let reloading = tokio::spawn(reloads.run(bound.hangups, shutdown.clone()));
    let state = AppState::new(
        bound.token,
        roles,
        bound.local,
        clock,
        metadata,
        metrics.clone(),
    );
    let app = server::router(state);
    listener::serve(bound.listener, app, options, metrics, shutdown.clone()).await;
    shutdown.cancel();
    let _ = tokio::join!(reloading, notifications);
    info!("stopped");
    Ok(())
}

fn listener_options(config: &Config) -> listener::Options {
    listener::Options {
        max_connections: config.server.max_connections,
        peer_lookup: config.server.peer_lookup,
        peer_processes: config.server.peer_processes,
    }
}

/// The metadata endpoint, when `[imds]` names a role.
fn metadata_endpoint(
    config: &Config,
    upstream: &str,
    roles: &watch::Receiver<Arc<RoleTable>>,
    clock: Arc<SystemClock>,
) -> anyhow::Result<Option<Arc<Imds>>> {
    let Some(imds_config) = &config.imds else {
        return Ok(None);
    };
    let upstream = Upstream::new(upstream)?;
    let served = Imds::new(&imds_config.role, roles.clone(), upstream, clock);
    Ok(Some(Arc::new(served)))
}

/// Applies configuration changes on SIGHUP; owns the supervisor.
struct Reloads {
    path: PathBuf,
    current: Config,
    supervisor: Supervisor<SdkSts, SystemClock>,
    notifier: Arc<Notifier>,
}

impl Reloads {
    async fn run(mut self, mut hangups: Signal, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = hangups.recv() => self.reload(),
                () = shutdown.cancelled() => break,
            }
        }
        self.supervisor.wait().await;
    }

    /// Re-reads the file and the roles' token files (creating missing ones: deleting a role's
    /// token file and reloading issues a new token); a bad file is logged and the running
    /// configuration kept.
    fn reload(&mut self) {
        self.notifier.send("RELOADING=1");
        match config::load(&self.path) {
            Ok(new) => match token::load_role_tokens(&new) {
                Ok(tokens) => self.apply(new, &tokens),
                Err(error) => error!(
                    error = %error,
                    "reload failed: a role's token file is unusable; keeping the running \
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

    fn apply(&mut self, new: Config, tokens: &RoleTokens) {
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
    }
}

/// Sections whose changes a reload cannot apply: the listener, the STS client and the metadata
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
    sections
}

/// The real instance metadata: configured, else as the SDKs find it, else the link-local default.
fn metadata_upstream(config: &Config) -> String {
    config
        .imds
        .as_ref()
        .and_then(|imds| imds.upstream.clone())
        .or_else(|| std::env::var(METADATA_ENDPOINT_VARIABLE).ok())
        .unwrap_or_else(|| imds::DEFAULT_UPSTREAM.to_owned())
}

/// Every URL the daemon calls out to, named by the setting it comes from.
fn outbound_urls(config: &Config, upstream: &str) -> Vec<(String, String)> {
    let mut urls = Vec::new();
    if let Some(endpoint) = &config.sts.endpoint {
        urls.push(("[sts] endpoint".to_owned(), endpoint.clone()));
    }
    if config.imds.is_some() {
        urls.push(("the metadata upstream".to_owned(), upstream.to_owned()));
    }
    let variables = STS_ENDPOINT_VARIABLES
        .iter()
        .chain([&METADATA_ENDPOINT_VARIABLE]);
    for variable in variables {
        if let Ok(url) = std::env::var(variable) {
            urls.push((variable.to_string(), url));
        }
    }
    urls
}

fn refuse_self_loops(local: SocketAddr, urls: &[(String, String)]) -> Result<(), SetupError> {
    match urls.iter().find(|(_, url)| points_at(url, local)) {
        Some((setting, url)) => Err(SetupError::SelfLoop {
            setting: setting.clone(),
            url: url.clone(),
            listen: local,
        }),
        None => Ok(()),
    }
}

/// Fails early, with the fix, when STS is reached over https and the host has no CA
/// certificates; otherwise every refresh would fail with a TLS error.
fn require_trust_roots(config: &Config) -> Result<(), SetupError> {
    let https = config
        .sts
        .endpoint
        .as_deref()
        .is_none_or(|endpoint| endpoint.starts_with("https://"));
    if https && rustls_native_certs::load_native_certs().certs.is_empty() {
        return Err(SetupError::NoTrustRoots);
    }
    Ok(())
}

/// Whether `url` would reach a listener bound at `local`.
pub fn points_at(url: &str, local: SocketAddr) -> bool {
    let Ok(uri) = url.parse::<Uri>() else {
        return false;
    };
    let default_port = if uri.scheme_str() == Some("https") {
        443
    } else {
        80
    };
    let port = uri.port_u16().unwrap_or(default_port);
    let host = uri
        .host()
        .unwrap_or("")
        .trim_start_matches('[')
        .trim_end_matches(']');
    let same_host = match host.parse::<IpAddr>() {
        Ok(ip) => ip == local.ip(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    };
    same_host && port == local.port()
}

fn log_summary(config: &Config, sts: &SdkSts, metadata_upstream: Option<&str>) {
    let roles: Vec<String> = config
        .roles
        .iter()
        .map(|role| format!("{}={}", role.name, role.arn))
        .collect();
    info!(
        version = env!("CARGO_PKG_VERSION"),
        listen = %config.server.listen,
        token_file = %config.server.token_file.display(),
        region = sts.region().as_deref().unwrap_or("unset"),
        endpoint = config.sts.endpoint.as_deref().unwrap_or("default"),
        roles = %roles.join(","),
        imds_role = config.imds.as_ref().map(|imds| imds.role.as_str()).unwrap_or("off"),
        imds_upstream = metadata_upstream.unwrap_or("-"),
        "assume-roled started"
    );
    if sts.region().is_none() {
        warn!("no STS region found; set [sts] region or AWS_REGION");
    }
}

/// Says which identity the daemon acts as (the first thing to check when AssumeRole is
/// denied), and which configured durations STS will not grant to that identity. STS may be
/// unreachable at start, so the lookup is retried until it succeeds.
async fn log_source_identity(sts: Arc<SdkSts>, config: Config, shutdown: CancellationToken) {
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
            () = shutdown.cancelled() => return,
        }
    };
    info!(arn = %arn, "source identity");
    if !is_role_session(&arn) {
        return;
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_loop_detection() {
        let local: SocketAddr = "127.0.0.1:9357".parse().unwrap();
        assert!(points_at("http://127.0.0.1:9357/", local));
        assert!(points_at("http://localhost:9357", local));
        assert!(points_at("http://LOCALHOST:9357/latest", local));
        assert!(!points_at("http://127.0.0.1:9358/", local));
        assert!(!points_at("http://169.254.169.254", local));
        assert!(!points_at(
            "https://sts.ap-northeast-1.amazonaws.com",
            local
        ));
        assert!(points_at(
            "http://127.0.0.1",
            "127.0.0.1:80".parse().unwrap()
        ));
        assert!(points_at(
            "http://[::1]:9357/",
            "[::1]:9357".parse().unwrap()
        ));
        assert!(!points_at("not a url", local));
    }

    #[test]
    fn self_loop_error_names_the_setting() {
        let local: SocketAddr = "127.0.0.1:9357".parse().unwrap();
        let urls = vec![
            (
                "[sts] endpoint".to_owned(),
                "https://sts.example".to_owned(),
            ),
            (
                "the metadata upstream".to_owned(),
                "http://127.0.0.1:9357/".to_owned(),
            ),
        ];
        let error = refuse_self_loops(local, &urls).unwrap_err().to_string();
        assert!(error.starts_with("the metadata upstream (http://127.0.0.1:9357/) points at"));
    }
}
