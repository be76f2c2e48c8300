//! Who gets a role's credentials now: the one decision both endpoints make.
//!
//! A request names a role and arrives with what the daemon knows of it: the token it presented
//! (the container endpoint) or none (the metadata endpoint, whose session tokens stop SSRF, not
//! local users), and the connecting local user (`Peer`). [`decide_now`] reads one snapshot of the
//! role table and the wall clock and answers served (with the pre-built body), refused (and
//! why) or unservable (and why); its two steps are pure ([`gate`]: who may have the role;
//! [`serve`]: what a session's status allows now). Between them, a role served per user finds
//! the user's session, starting it on the user's first request and waiting (briefly) for its
//! first credentials. Each endpoint turns the [`Decision`] into its own wire format, and
//! `crate::audit` records it.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::peer::Peer;
use crate::refresh::{RoleStatus, Unservable, servable};
use crate::roles::{RoleEntry, RoleTable, Sessions};
use crate::sessions::Full;
use crate::token::AuthToken;

/// Which token a request carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// The server's token (`[server] token_file`).
    Server,
    /// The own token of the role so named (its `token_file`).
    Role(String),
}

/// The grant `presented` carries, if it is any known token; each comparison is constant-time.
pub fn grant_of(presented: &[u8], server: &AuthToken, roles: &RoleTable) -> Option<Grant> {
    if server.matches(presented) {
        return Some(Grant::Server);
    }
    roles
        .iter()
        .find(|(_, entry)| entry.token.as_ref().is_some_and(|t| t.matches(presented)))
        .map(|(name, _)| Grant::Role(name.clone()))
}

/// Whether `grant` opens `entry`: a role with its own token only to that token, the others
/// only to the server's.
pub fn grants_role(grant: &Grant, entry: &RoleEntry) -> bool {
    match (grant, &entry.token) {
        (Grant::Server, None) => true,
        (Grant::Role(name), Some(_)) => *name == entry.config.name,
        _ => false,
    }
}

/// Through which endpoint a role is asked for.
#[derive(Debug, Clone, Copy)]
pub enum Via<'a> {
    /// The container endpoint, with the grant of the token the request carried.
    Container(Option<&'a Grant>),
    /// The metadata endpoint, asking for the role by its IAM name.
    Metadata {
        /// The name in `iam/security-credentials/<name>`.
        iam_name: &'a str,
        /// Asked at `security-credentials-extended/`: the body carries `AccountId`.
        extended: bool,
    },
}

impl Via<'_> {
    pub fn label(&self) -> &'static str {
        match self {
            Via::Container(_) => "ecs",
            Via::Metadata { .. } => "imds",
        }
    }
}

/// What a request for a role's credentials gets. `Debug` leaves the body out: it holds the
/// secret.
#[derive(Clone, PartialEq, Eq)]
pub enum Decision {
    /// No such role is served (here).
    Unknown,
    /// The request's token does not grant this role.
    WrongToken,
    /// The connecting user is not among the role's `allowed_*`.
    NotAdmitted,
    /// The role is served per user, and who is connecting is unknown (or has no account).
    UnknownPeer,
    /// The role is served per user and holds its `max_sessions`; this user has none yet.
    Full(Full),
    /// The user may have the role, but there is nothing to serve now.
    Unservable(Unservable),
    /// The body to send, and the masked access key id for the audit line.
    Served {
        /// The pre-built body in the endpoint's format.
        body: Bytes,
        /// The access key id as logs show it.
        masked_key_id: std::sync::Arc<str>,
    },
}

impl std::fmt::Debug for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Decision::Served { masked_key_id, .. } => f
                .debug_struct("Served")
                .field("masked_key_id", masked_key_id)
                .finish_non_exhaustive(),
            Decision::Unknown => f.write_str("Unknown"),
            Decision::WrongToken => f.write_str("WrongToken"),
            Decision::NotAdmitted => f.write_str("NotAdmitted"),
            Decision::UnknownPeer => f.write_str("UnknownPeer"),
            Decision::Full(full) => f.debug_tuple("Full").field(full).finish(),
            Decision::Unservable(reason) => f.debug_tuple("Unservable").field(reason).finish(),
        }
    }
}

/// How long a user's first request waits for their new session's first credentials: about
/// one STS call, and less than clients wait for an answer: botocore gives the container
/// endpoint 2 s, and instance metadata 1 s (as the Rust SDK does).
const FIRST_SESSION_WAIT: Duration = Duration::from_millis(1500);
/// The same through the metadata endpoint.
const FIRST_SESSION_WAIT_METADATA: Duration = Duration::from_millis(800);

/// What [`decide_now`] can say without waiting: the decision, or the new session of a user
/// (of a role served per user) whose first credentials are still coming.
pub enum Decided {
    Now(Decision),
    FirstSession(watch::Receiver<RoleStatus>),
}

/// Decides whether `peer` gets role `name` through `via`, from one table snapshot: [`gate`],
/// then the session (the user's own, for a role served per user), then [`serve`] at the wall
/// clock's `now`. A new session's first credentials are still coming: then the session to
/// wait for (with [`first_credentials`]). Nearly every request is decided here, without a
/// future.
pub fn decide_now(
    table: &RoleTable,
    name: &str,
    via: Via<'_>,
    peer: &Peer,
    now: SystemTime,
) -> Decided {
    let entry = match gate(table, name, via, peer) {
        Ok(entry) => entry,
        Err(refused) => return Decided::Now(refused),
    };
    let sessions = match &entry.sessions {
        Sessions::Shared(status) => return Decided::Now(serve(&status.borrow(), via, now)),
        Sessions::PerUser(sessions) => sessions,
    };
    // The session is named after the user: a uid without an account (a process run under an
    // arbitrary uid, or a user namespace's subordinate uids, of which one user may hold
    // thousands) is nobody the other account could be told about, and would let one user
    // take many sessions.
    let (Some(uid), Some(user)) = (peer.uid, peer.user.as_deref()) else {
        return Decided::Now(Decision::UnknownPeer);
    };
    let limit = entry.config.max_sessions;
    let status = match sessions.session_for(uid, user, limit, Instant::now()) {
        Ok(status) => status,
        Err(full) => return Decided::Now(Decision::Full(full)),
    };
    if settled(&status.borrow()) {
        return Decided::Now(serve(&status.borrow(), via, now));
    }
    Decided::FirstSession(status)
}

/// Whether a session's refresher has had its first answer, credentials or error.
fn settled(status: &RoleStatus) -> bool {
    status.current.is_some() || status.last_error.is_some()
}

/// What a new session serves through `via` once its first credentials (or error) come, or
/// after the endpoint's wait: its clients give up soon after.
pub async fn first_credentials(
    mut status: watch::Receiver<RoleStatus>,
    via: Via<'_>,
    clock: &dyn Clock,
) -> Decision {
    let wait = match via {
        Via::Container(_) => FIRST_SESSION_WAIT,
        Via::Metadata { .. } => FIRST_SESSION_WAIT_METADATA,
    };
    let _ = tokio::time::timeout(wait, status.wait_for(settled)).await;
    serve(&status.borrow(), via, clock.now())
}

/// Whether the request may have role `name` at all: the role it names, the token it carries,
/// the user it comes from. Pure.
pub fn gate<'t>(
    table: &'t RoleTable,
    name: &str,
    via: Via<'_>,
    peer: &Peer,
) -> Result<&'t RoleEntry, Decision> {
    // A role's own token opens that role and nothing else; whether another name exists is
    // none of its holder's business, so an unknown name is refused alike.
    if let Via::Container(Some(Grant::Role(own))) = via
        && own != name
    {
        return Err(Decision::WrongToken);
    }
    let Some(entry) = table.get(name) else {
        return Err(Decision::Unknown);
    };
    match via {
        Via::Container(grant) if !grant.is_some_and(|g| grants_role(g, entry)) => {
            return Err(Decision::WrongToken);
        }
        Via::Metadata { iam_name, .. } if iam_name != entry.config.arn.role_name() => {
            return Err(Decision::Unknown);
        }
        // A role granted by its own token alone is not served where no token is presented.
        // The configuration refuses such a metadata role; a reload that gives the role a token
        // file while dropping [imds] (applied at the next restart) must not open it meanwhile.
        Via::Metadata { .. } if entry.guarded_by_token_alone() => {
            return Err(Decision::WrongToken);
        }
        _ => {}
    }
    if !entry
        .config
        .admits(peer.user.as_deref(), &peer.groups, peer.container)
    {
        return Err(Decision::NotAdmitted);
    }
    Ok(entry)
}

/// What a session whose refresher last published `status` serves through `via` at `now`. Pure.
pub fn serve(status: &RoleStatus, via: Via<'_>, now: SystemTime) -> Decision {
    match servable(status, now) {
        Ok(served) => Decision::Served {
            body: match via {
                Via::Container(_) => served.ecs_body.clone(),
                Via::Metadata { extended, .. } => served.imds_body(extended),
            },
            masked_key_id: served.masked_key_id.clone(),
        },
        Err(reason) => Decision::Unservable(reason),
    }
}

/// Role `name`'s entry if `peer` may see anything of it through the metadata endpoint (which
/// has no token): the role exists, does not rely on a token of its own alone, and admits the
/// user. Pure.
pub fn admitting<'t>(table: &'t RoleTable, name: &str, peer: &Peer) -> Option<&'t RoleEntry> {
    table.get(name).filter(|entry| {
        !entry.guarded_by_token_alone()
            && (entry.config).admits(peer.user.as_deref(), &peer.groups, peer.container)
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use tokio::sync::watch;

    use super::*;
    use crate::credentials::{Credentials, Served};
    use crate::refresh::RoleStatus;

    fn table(token: Option<AuthToken>, allowed_groups: &[&str]) -> (RoleTable, SystemTime) {
        let now = SystemTime::now();
        let mut config = crate::fake::role("piyo");
        config.allowed_groups = allowed_groups.iter().map(|g| g.to_string()).collect();
        let credentials = Credentials::new(
            "ASIAEXAMPLE".into(),
            "secret".into(),
            "token".into(),
            now + Duration::from_secs(3600),
        );
        let status = RoleStatus {
            current: Some(Arc::new(Served::new(credentials, now))),
            ..RoleStatus::default()
        };
        let entry = RoleEntry {
            config,
            token,
            sessions: Sessions::Shared(watch::channel(status).1),
        };
        (RoleTable::from([("piyo".to_owned(), entry)]), now)
    }

    /// [`gate`] then [`serve`], for the shared role of [`table`].
    fn decide(
        table: &RoleTable,
        name: &str,
        via: Via<'_>,
        peer: &Peer,
        now: SystemTime,
    ) -> Decision {
        match gate(table, name, via, peer) {
            Ok(entry) => serve(&entry.shared_status().unwrap(), via, now),
            Err(refused) => refused,
        }
    }

    /// A role granted by its own token alone is never served by the metadata endpoint, which
    /// has no token; with `allowed_*` it is, to those users only.
    #[test]
    fn metadata_never_serves_a_role_its_own_token_alone_guards() {
        let via = Via::Metadata {
            iam_name: "piyo-role",
            extended: false,
        };
        let member = Peer {
            user: Some("hoge".into()),
            groups: vec!["ops".into()],
            ..Peer::default()
        };
        let (open, now) = table(Some(AuthToken::generate()), &[]);
        assert_eq!(
            decide(&open, "piyo", via, &member, now),
            Decision::WrongToken
        );
        let (guarded, now) = table(Some(AuthToken::generate()), &["ops"]);
        assert!(matches!(
            decide(&guarded, "piyo", via, &member, now),
            Decision::Served { .. }
        ));
        let stranger = Peer::default();
        assert_eq!(
            decide(&guarded, "piyo", via, &stranger, now),
            Decision::NotAdmitted
        );
        let (shared, now) = table(None, &[]);
        assert!(matches!(
            decide(&shared, "piyo", via, &stranger, now),
            Decision::Served { .. }
        ));
    }

    /// Everything of the metadata endpoint but the credentials is for the users the role
    /// admits: never for another user, an unknown role, or a role its own token alone guards.
    #[test]
    fn admitting_gates_the_rest_of_the_metadata() {
        let member = Peer {
            user: Some("hoge".into()),
            groups: vec!["ops".into()],
            ..Peer::default()
        };
        let (guarded, _) = table(None, &["ops"]);
        assert!(admitting(&guarded, "piyo", &member).is_some());
        assert!(admitting(&guarded, "piyo", &Peer::default()).is_none());
        assert!(admitting(&guarded, "fuga", &member).is_none());
        let (token_alone, _) = table(Some(AuthToken::generate()), &[]);
        assert!(admitting(&token_alone, "piyo", &member).is_none());
        let (token_and_group, _) = table(Some(AuthToken::generate()), &["ops"]);
        assert!(admitting(&token_and_group, "piyo", &member).is_some());
    }

    /// The metadata endpoint serves a role under its IAM name only: any other name there is a
    /// path that does not exist.
    #[test]
    fn metadata_asks_by_the_iam_name() {
        let (shared, now) = table(None, &[]);
        let asked = |iam_name| Via::Metadata {
            iam_name,
            extended: false,
        };
        let anyone = Peer::default();
        assert!(matches!(
            decide(&shared, "piyo", asked("piyo-role"), &anyone, now),
            Decision::Served { .. }
        ));
        for other in ["piyo", "hoge-ec2-role", "piyo-role2"] {
            let decision = decide(&shared, "piyo", asked(other), &anyone, now);
            assert_eq!(decision, Decision::Unknown, "{other}");
        }
    }

    /// The endpoint as the audit names it, and a decision as `Debug` shows it: the served body
    /// (the secret) never, the masked key id and the refusals by name.
    #[test]
    fn labels_and_debug_show_no_secret() {
        let metadata = Via::Metadata {
            iam_name: "piyo-role",
            extended: true,
        };
        assert_eq!(Via::Container(None).label(), "ecs");
        assert_eq!(metadata.label(), "imds");
        let (shared, now) = table(None, &[]);
        let served = decide(&shared, "piyo", metadata, &Peer::default(), now);
        let shown = format!("{served:?}");
        assert!(
            shown.starts_with("Served") && shown.contains("ASIA"),
            "{shown}"
        );
        assert!(
            !shown.contains("secret") && !shown.contains("token"),
            "{shown}"
        );
        assert_eq!(format!("{:?}", Decision::NotAdmitted), "NotAdmitted");
        assert_eq!(format!("{:?}", Decision::WrongToken), "WrongToken");
    }

    /// A session has settled once its first attempt ended, with credentials or with an error:
    /// only before that does a user's first request wait.
    #[test]
    fn a_session_settles_on_credentials_or_an_error() {
        let (shared, _) = table(None, &[]);
        let served = shared["piyo"].shared_status().unwrap();
        assert!(settled(&served));
        assert!(!settled(&RoleStatus::default()));
        let failed = RoleStatus {
            last_error: Some(crate::sts::StsError::new(
                crate::sts::ErrorKind::Transient,
                "Throttling",
                "slow down",
            )),
            ..RoleStatus::default()
        };
        assert!(settled(&failed));
    }
}
