//! The `serve` command: wires configuration, token, STS, refreshers and the HTTP server together
//! and runs them until shutdown.
//!
//! Order matters. The token file is checked and the port bound before anything talks to AWS, so
//! that a misconfigured host fails at once with a clear error, and so that clients asking during
//! the first STS call get a 503 `CredentialsUninitialized` rather than a refused connection.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::refresh::{Refresher, SystemClock};
use crate::server::{self, AppState};
use crate::sts::SdkSts;
use crate::token;

/// How long the start-up identity lookup may take before the daemon stops waiting for it.
const IDENTITY_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs the daemon until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let token = token::load_or_create(&config.server.token_file)?;
    let listen = config.server.listen;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let local = listener
        .local_addr()
        .context("cannot read the bound address")?;
    info!(address = %local, "listening");

    let sts = Arc::new(SdkSts::new(&config.sts).await);
    let clock = Arc::new(SystemClock);
    let mut refreshers = JoinSet::new();
    let mut statuses = Vec::with_capacity(config.roles.len());
    for role in &config.roles {
        let (refresher, status) = Refresher::new(role.clone(), sts.clone(), clock.clone());
        refreshers.spawn(refresher.run(shutdown.child_token()));
        statuses.push((role.name.clone(), status));
    }
    log_summary(&config, &sts);
    tokio::spawn(log_source_identity(sts));

    let state = AppState::new(token, statuses, local, clock);
    let served = server::serve(listener, state, shutdown.clone()).await;
    shutdown.cancel();
    refreshers.join_all().await;
    served.context("server failed")?;
    info!("stopped");
    Ok(())
}

fn log_summary(config: &Config, sts: &SdkSts) {
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
        "assume-roled started"
    );
    if sts.region().is_none() {
        warn!("no STS region found; set [sts] region or AWS_REGION");
    }
}

/// Says which identity the daemon acts as: the first thing to check when AssumeRole is denied.
async fn log_source_identity(sts: Arc<SdkSts>) {
    match tokio::time::timeout(IDENTITY_TIMEOUT, sts.caller_identity()).await {
        Ok(Ok(arn)) => info!(arn = %arn, "source identity"),
        Ok(Err(error)) => warn!(
            code = %error.code, reason = %error.message,
            "cannot determine the source identity"
        ),
        Err(_) => warn!("cannot determine the source identity: STS did not answer in time"),
    }
}
