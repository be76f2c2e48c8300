//! Reloads: on each request (SIGHUP), the configuration and token files are read again and
//! applied to the running daemon: roles are added, removed or replaced without touching the
//! others; an invalid file, or one that would open the running metadata role to every local
//! process, is logged and the running configuration kept.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::audit::Audit;
use crate::config::{self, Config};
use crate::notify::Notifier;
use crate::sts::Sts;
use crate::supervisor::Supervisor;
use crate::token::{self, AuthToken, RoleTokens, TokenFileError};

/// Applies configuration changes on request; owns the supervisor.
pub(super) struct Reloads<S> {
    pub(super) path: PathBuf,
    pub(super) current: Config,
    pub(super) supervisor: Supervisor<S>,
    /// Where the main listener is bound, for the public copy of the endpoints.
    pub(super) listening: SocketAddr,
    /// The server's token handlers check; re-read at every reload.
    pub(super) server_token: watch::Sender<AuthToken>,
    pub(super) notifier: Arc<Notifier>,
    /// Its line budget follows the configuration.
    pub(super) audit: Arc<Audit>,
}

impl<S: Sts> Reloads<S> {
    /// Reloads on each request until `shutdown`; fails as soon as a refresher panics.
    pub(super) async fn run(
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
pub(super) fn publish_endpoints(config: &Config, listening: SocketAddr) {
    if let Err(error) = crate::env::publish(config, listening) {
        warn!(%error, "cannot write the public copy of the endpoints; `assume-roled env` needs \
            the configuration to be readable");
    }
}

/// Why `new` cannot be applied while the metadata endpoint serves `current`'s `[imds]` role
/// (changes to `[imds]` wait for a restart, so a new file is checked against the running one
/// too): that role would be open to every local process.
pub(super) fn unsafe_for_running_metadata(current: &Config, new: &Config) -> Option<String> {
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
pub(super) fn sections_needing_restart(current: &Config, new: &Config) -> Vec<&'static str> {
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
