//! Start-up: what `main` binds, reads from the environment and checks before anything talks to
//! AWS, and the set-ups the daemon refuses (it would call itself; no CA certificates).

use std::net::{IpAddr, SocketAddr};

use anyhow::Context;
use axum::http::Uri;
use tokio::net::TcpListener;
use tracing::warn;

use crate::config::{Config, ConfigError};
use crate::guard::GuardError;
use crate::imds;
use crate::token::{self, AuthToken, RoleTokens, TokenFileError};

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
        /// Where the URL comes from.
        setting: String,
        /// The URL.
        url: String,
        /// The daemon's own listener.
        listen: SocketAddr,
    },
    /// STS is reached over https, and nothing could verify its certificate.
    #[error(
        "no trusted CA certificates found on this host, so STS's certificate cannot be \
         verified: install the ca-certificates package (or set SSL_CERT_FILE)"
    )]
    NoTrustRoots,
    /// The process may not open enough files to serve `max_connections`.
    #[error(
        "max_connections = {max_connections} needs about {needed} open files, but this process \
         may open {limit}: raise the limit (the unit's LimitNOFILE=) or lower \
         [server] max_connections"
    )]
    TooFewDescriptors {
        /// `[server] max_connections`.
        max_connections: usize,
        /// What it needs.
        needed: u64,
        /// The soft limit.
        limit: u64,
    },
    /// systemd passed a listening socket the configuration does not name.
    #[error(
        "systemd passed a socket listening on {address}, which the configuration does not name \
         ([server] listen and metrics_listen): make the socket unit's ListenStream= and the \
         configuration agree"
    )]
    UnexpectedSocket {
        /// The socket's address.
        address: SocketAddr,
    },
}

/// Whether `error` is one an operator must fix in a file or on the host (exit 78, no restart)
/// rather than a failure a restart may cure.
pub fn is_operator_error(error: &anyhow::Error) -> bool {
    let guard_setup = error
        .downcast_ref::<GuardError>()
        .is_some_and(|error| !matches!(error, GuardError::Nft(_)));
    error.downcast_ref::<ConfigError>().is_some()
        || error.downcast_ref::<TokenFileError>().is_some()
        || error.downcast_ref::<SetupError>().is_some()
        || guard_setup
}

/// The sockets the daemon serves on, bound by the caller.
#[derive(Debug)]
pub struct Listeners {
    /// `[server] listen`, and the other family's loopback at the same port: credentials,
    /// status, metrics and instance metadata.
    pub main: Vec<TcpListener>,
    /// `[server] metrics_listen`: `/metrics` only, without the token.
    pub metrics: Option<MetricsListener>,
    /// `[containers] listen`: what the main listeners serve, for containers.
    pub containers: Vec<TcpListener>,
}

impl Listeners {
    /// The addresses of the main listeners.
    pub fn local_addresses(&self) -> anyhow::Result<Vec<SocketAddr>> {
        let addresses = self.main.iter().map(TcpListener::local_addr);
        addresses
            .collect::<Result<_, _>>()
            .context("cannot read a bound address")
    }
}

/// The metrics listener: bound (or passed by systemd), or to be bound once the address is free.
/// Another user holding the port while the daemon was down must not stop it serving
/// credentials: the bind is retried in the background.
#[derive(Debug)]
pub enum MetricsListener {
    /// Listening.
    Bound(TcpListener),
    /// Not yet: the address was taken (or unavailable) at start.
    Pending(SocketAddr),
}

/// How often a metrics address that could not be bound is tried again.
pub const METRICS_BIND_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// Binds the metrics address.
pub async fn bind_metrics(address: SocketAddr) -> anyhow::Result<TcpListener> {
    bind_to(address, "metrics_listen").await
}

/// Listening sockets systemd passed (socket activation), by the address each is bound to.
#[derive(Debug, Default)]
pub struct Passed(Vec<(SocketAddr, std::net::TcpListener)>);

impl Passed {
    /// Takes the TCP listeners systemd passed to this process (`LISTEN_FDS`, `LISTEN_PID`).
    /// Reading the variables clears them, so call it before any thread starts.
    pub fn from_systemd() -> anyhow::Result<Self> {
        let mut passed = listenfd::ListenFd::from_env();
        let mut listeners = Vec::new();
        for index in 0..passed.len() {
            let listener = passed.take_tcp_listener(index).with_context(|| {
                format!("systemd passed socket {index}, which is no TCP listener")
            })?;
            if let Some(listener) = listener {
                let address = listener
                    .local_addr()
                    .context("cannot read a passed socket")?;
                listeners.push((address, listener));
            }
        }
        Ok(Self(listeners))
    }

    fn take(&mut self, address: SocketAddr) -> Option<std::net::TcpListener> {
        let index = self.0.iter().position(|(bound, _)| *bound == address)?;
        Some(self.0.remove(index).1)
    }
}

/// The loopback address of the other family at the same port: clients configured with
/// `localhost` reach either, so both must be the daemon's, or another user could hold one.
pub fn loopback_partner(listen: SocketAddr) -> Option<SocketAddr> {
    let ip: IpAddr = match listen.ip() {
        IpAddr::V4(v4) if v4 == std::net::Ipv4Addr::LOCALHOST => {
            std::net::Ipv6Addr::LOCALHOST.into()
        }
        IpAddr::V6(v6) if v6 == std::net::Ipv6Addr::LOCALHOST => {
            std::net::Ipv4Addr::LOCALHOST.into()
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, listen.port()))
}

/// The configured addresses' listeners: taken from what systemd `passed` where it holds them,
/// bound here otherwise. Every passed socket must be one the configuration names.
pub async fn bind(config: &Config, mut passed: Passed) -> anyhow::Result<Listeners> {
    if passed.0.is_empty() {
        warn!(
            "not socket-activated: while this daemon is not running its port is free for any \
             local user to take; enable assume-roled.socket"
        );
    }
    let listen = config.server.listen;
    let first = take_or_bind(&mut passed, listen, "listen").await?;
    let mut main = vec![first];
    // Port 0 (tests) means the port the first one got.
    let port = main[0]
        .local_addr()
        .context("cannot read the bound address")?
        .port();
    if let Some(partner) = loopback_partner(SocketAddr::new(listen.ip(), port)) {
        match take_or_bind(&mut passed, partner, "listen").await {
            Ok(listener) => main.push(listener),
            // No IPv6 (or IPv4) loopback on this host: nothing to hold, and nothing to take.
            Err(error) if is_unavailable_address(&error) => {
                warn!(address = %partner, error = %format!("{error:#}"), "not listening on the \
                    other loopback family: this host has none");
            }
            Err(error) => return Err(error),
        }
    }
    let metrics = match config.server.metrics_listen {
        Some(address) => Some(match passed.take(address) {
            Some(listener) => MetricsListener::Bound(take(listener)?),
            None => match bind_metrics(address).await {
                Ok(listener) => MetricsListener::Bound(listener),
                Err(error) => {
                    warn!(error = %format!("{error:#}"), retry_s = METRICS_BIND_RETRY.as_secs(),
                        "the metrics listener is not up, and is tried again; credentials are \
                         served meanwhile (hold its address in assume-roled.socket so that \
                         nobody else can take it)");
                    MetricsListener::Pending(address)
                }
            },
        }),
        None => None,
    };
    let mut containers = Vec::new();
    for address in config.containers.iter().flat_map(|c| &c.listen) {
        let listener = match passed.take(*address) {
            Some(listener) => take(listener)?,
            None => bind_free(*address, "containers.listen")?,
        };
        containers.push(listener);
    }
    if let Some((address, _)) = passed.0.first() {
        return Err(SetupError::UnexpectedSocket { address: *address }.into());
    }
    Ok(Listeners {
        main,
        metrics,
        containers,
    })
}

fn take(listener: std::net::TcpListener) -> anyhow::Result<TcpListener> {
    listener.set_nonblocking(true)?;
    Ok(TcpListener::from_std(listener)?)
}

/// Binds a container address even before `guard apply` has put it on the daemon's link
/// (`IP_FREEBIND`), so that the order in which the two happen does not matter. Under systemd
/// the sockets come from `assume-roled-containers.socket` instead: port 80 is privileged, and
/// the unit grants the daemon no capability.
fn bind_free(address: SocketAddr, key: &str) -> anyhow::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let bound = || -> std::io::Result<std::net::TcpListener> {
        let socket = Socket::new(Domain::for_address(address), Type::STREAM, None)?;
        match address {
            SocketAddr::V4(_) => socket.set_freebind_v4(true)?,
            SocketAddr::V6(_) => {
                socket.set_only_v6(true)?;
                socket.set_freebind_v6(true)?;
            }
        }
        socket.set_reuse_address(true)?;
        socket.bind(&address.into())?;
        socket.listen(BACKLOG as i32)?;
        Ok(socket.into())
    };
    let hint = match address.port() {
        port if port < 1024 => {
            "; under systemd, enable assume-roled-containers.socket, which holds the port"
        }
        _ => "",
    };
    bound()
        .and_then(|listener| {
            listener.set_nonblocking(true)?;
            TcpListener::from_std(listener)
        })
        .map_err(anyhow::Error::from)
        .with_context(|| format!("cannot listen on {address} ({key}){hint}"))
}

async fn take_or_bind(
    passed: &mut Passed,
    address: SocketAddr,
    key: &str,
) -> anyhow::Result<TcpListener> {
    match passed.take(address) {
        Some(listener) => take(listener),
        None => bind_to(address, key).await,
    }
}

/// Whether binding failed because the host has no such address (IPv6 switched off, or no
/// IPv6 at all), rather than because someone holds it.
fn is_unavailable_address(error: &anyhow::Error) -> bool {
    const EAFNOSUPPORT: i32 = 97;
    error.downcast_ref::<std::io::Error>().is_some_and(|error| {
        error.kind() == std::io::ErrorKind::AddrNotAvailable
            || error.raw_os_error() == Some(EAFNOSUPPORT)
    })
}

/// Connections the kernel queues for the daemon while it is not accepting (at start it waits
/// for the first credentials): as many as systemd's socket units queue (SOMAXCONN), not the
/// 1,024 a plain bind asks for, so that a crowd arriving at a cold start is not dropped.
const BACKLOG: u32 = 4096;

async fn bind_to(address: SocketAddr, key: &str) -> anyhow::Result<TcpListener> {
    let bound = || -> std::io::Result<TcpListener> {
        let socket = match address {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.bind(address)?;
        socket.listen(BACKLOG)
    };
    bound()
        .map_err(anyhow::Error::from)
        .with_context(|| format!("cannot listen on {address} ({key})"))
}

/// What the daemon takes from its process environment, read once at start by the caller.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    /// `AWS_EC2_METADATA_SERVICE_ENDPOINT`: where the SDKs, and so the daemon's own source
    /// chain, find instance metadata.
    pub metadata_endpoint: Option<String>,
    /// Variables that redirect the daemon's own STS calls, with their values.
    pub sts_endpoints: Vec<(String, String)>,
}

impl Environment {
    /// Reads the variables from this process's environment.
    pub fn from_process() -> Self {
        Self {
            metadata_endpoint: std::env::var(METADATA_ENDPOINT_VARIABLE).ok(),
            sts_endpoints: STS_ENDPOINT_VARIABLES
                .iter()
                .filter_map(|name| Some((name.to_string(), std::env::var(name).ok()?)))
                .collect(),
        }
    }
}

/// The tokens [`preflight`] found or created.
pub struct Tokens {
    pub(super) server: AuthToken,
    pub(super) roles: RoleTokens,
}

/// What start-up checks before anything talks to AWS: the token files (created if missing,
/// refused if others can read them or their group is wrong), and that nothing the daemon would
/// call is one of its own listeners at `locals`. Idempotent: `main` calls it before it builds the STS
/// client, and [`run`](super::run) again for the tokens.
pub fn preflight(
    config: &Config,
    locals: &[SocketAddr],
    environment: &Environment,
) -> anyhow::Result<Tokens> {
    let server = token::load_or_create(&config.server.token_file, None)?;
    let roles = token::load_role_tokens(config)?;
    let upstream = metadata_upstream(config, environment);
    let urls = outbound_urls(config, &upstream, environment);
    for local in locals {
        refuse_self_loops(*local, &urls)?;
    }
    Ok(Tokens { server, roles })
}

/// Descriptors the daemon needs besides its client connections: listeners, STS and metadata
/// connections, netlink sockets, the journal, files.
const DESCRIPTOR_RESERVE: u64 = 128;

/// The soft limit on open files in the text of `/proc/self/limits`.
pub fn open_files_limit(limits: &str) -> Option<u64> {
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    match soft {
        "unlimited" => Some(u64::MAX),
        number => number.parse().ok(),
    }
}

/// Refuses a `max_connections` the process cannot open: a flood would then leave the
/// refreshers without sockets for STS.
pub fn require_descriptors(config: &Config) -> Result<(), SetupError> {
    let Some(limit) = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| open_files_limit(&text))
    else {
        return Ok(());
    };
    let max_connections = config.server.max_connections;
    // The places, the connections admission is deciding on, and the daemon's own.
    let needed = (max_connections + crate::listener::DECIDING) as u64 + DESCRIPTOR_RESERVE;
    if limit < needed {
        return Err(SetupError::TooFewDescriptors {
            max_connections,
            needed,
            limit,
        });
    }
    Ok(())
}

/// The real instance metadata: configured, else as the SDKs find it, else the link-local default.
pub fn metadata_upstream(config: &Config, environment: &Environment) -> String {
    config
        .imds
        .as_ref()
        .and_then(|imds| imds.upstream.clone())
        .or_else(|| environment.metadata_endpoint.clone())
        .unwrap_or_else(|| imds::DEFAULT_UPSTREAM.to_owned())
}

/// Every URL the daemon calls out to, named by the setting it comes from.
pub(super) fn outbound_urls(
    config: &Config,
    upstream: &str,
    environment: &Environment,
) -> Vec<(String, String)> {
    let mut urls = Vec::new();
    if let Some(endpoint) = &config.sts.endpoint {
        urls.push(("[sts] endpoint".to_owned(), endpoint.clone()));
    }
    if config.imds.is_some() {
        urls.push(("the metadata upstream".to_owned(), upstream.to_owned()));
    }
    urls.extend(environment.sts_endpoints.iter().cloned());
    if let Some(url) = &environment.metadata_endpoint {
        urls.push((METADATA_ENDPOINT_VARIABLE.to_owned(), url.clone()));
    }
    urls
}

pub(super) fn refuse_self_loops(
    local: SocketAddr,
    urls: &[(String, String)],
) -> Result<(), SetupError> {
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
pub fn require_trust_roots(config: &Config) -> Result<(), SetupError> {
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
