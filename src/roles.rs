//! The table of served roles, as request handlers, the status report and the metrics read it.
//!
//! The supervisor is its one writer: it publishes a new `Arc<RoleTable>` on a `watch` channel
//! whenever a reload changes the set of roles, and each role's refresher publishes that role's
//! [`RoleStatus`] on a channel of its own (a role served per user: each user's session does).
//! Readers clone an `Arc` and never wait on a writer.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::watch;

use crate::config::RoleConfig;
use crate::refresh::RoleStatus;
use crate::sessions::UserSessions;
use crate::token::AuthToken;

/// Where a role's credentials come from.
#[derive(Debug, Clone)]
pub enum Sessions {
    /// One session shared by everyone the role admits: what its refresher publishes.
    Shared(watch::Receiver<RoleStatus>),
    /// A session per local user.
    PerUser(Arc<UserSessions>),
}

/// A served role: what it is, the token that grants it, and its session or sessions.
#[derive(Debug, Clone)]
pub struct RoleEntry {
    /// The role's validated configuration.
    pub config: RoleConfig,
    /// The role's own token (from its `token_file`); `None`: the server's token grants it.
    pub token: Option<AuthToken>,
    /// The role's session, or its users' sessions.
    pub sessions: Sessions,
}

impl RoleEntry {
    /// Whether only the role's own token decides who gets it (no `allowed_*`): where no token
    /// is presented (the metadata endpoint), nobody may have it.
    pub fn guarded_by_token_alone(&self) -> bool {
        self.token.is_some() && self.config.open_to_all()
    }

    /// What the shared session last published; `None` for a role served per user.
    pub fn shared_status(&self) -> Option<RoleStatus> {
        match &self.sessions {
            Sessions::Shared(status) => Some(status.borrow().clone()),
            Sessions::PerUser(_) => None,
        }
    }
}

/// Served roles by name.
pub type RoleTable = BTreeMap<String, RoleEntry>;
