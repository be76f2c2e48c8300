//! The `check` command: validates the configuration and, with `--assume`, performs one real
//! `AssumeRole` per role, the first thing to run on a new host.
//!
//! It prints to stdout for people; problems are errors for `main` to report.

use std::fmt::Write as _;
use std::io::{Read, Write as _};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::bail;

use crate::accounts;
use crate::config::{Config, RoleConfig, SessionParams, Subject};
use crate::credentials::Credentials;
use crate::daemon::{self, Environment};
use crate::guard_state::GuardState;
use crate::sts::{SdkSts, Sts};

/// Whether the name service knows group `name` (what `summary` is given in production).
pub fn group_exists(name: &str) -> bool {
    accounts::group_id(name).is_some()
}

/// How long the probe of the instance metadata may take, in all.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// A warning when instance metadata answers at the address local users reach
/// (the same one the daemon would read, as [`daemon::metadata_upstream`] finds it) and no guard
/// keeps them from it: any of them can read the instance role's keys and assume the target
/// roles directly, around every token and allow-list.
pub fn metadata_exposure(config: &Config, environment: &Environment) -> Option<String> {
    if (config.imds.as_ref()).is_some_and(|imds| imds.guard.is_some()) {
        return None;
    }
    let upstream = daemon::metadata_upstream(config, environment);
    let authority = upstream
        .strip_prefix("http://")?
        .split('/')
        .next()
        .filter(|a| !a.is_empty())?;
    let address = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    answers_http(&address).then(|| {
        format!(
            "warning: instance metadata answers at {authority} and no [imds] guard is \
             configured: any local user can read the instance role's keys there and assume \
             the roles above directly, without the token and around allowed_users and \
             allowed_groups; set [imds] guard = \"redirect\" (or \"block\") and run \
             `assume-roled guard apply`\n"
        )
    })
}

/// The guard's line for `check`: what its watch last wrote, or, when the configuration asks
/// for a guard and no watch has written anything, that nothing keeps it in place.
pub fn guard_state(config: &Config) -> Option<String> {
    let state = GuardState::read();
    let guarded = (config.imds.as_ref()).is_some_and(|imds| imds.guard.is_some())
        || config.containers.is_some();
    match state {
        Some(state) => Some(format!("{}\n", state.describe())),
        None if guarded => Some(
            "warning: metadata guard: no watch keeps it in place (a firewall reload removes \
             it): systemctl enable --now assume-roled-guard\n"
                .to_owned(),
        ),
        None => None,
    }
}

/// Whether something at `address` answers an IMDSv2 token request with HTTP, quickly.
fn answers_http(address: &str) -> bool {
    let Some(socket) = address.to_socket_addrs().ok().and_then(|mut a| a.next()) else {
        return false;
    };
    let Ok(mut stream) = TcpStream::connect_timeout(&socket, PROBE_TIMEOUT) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(PROBE_TIMEOUT));
    let request = format!(
        "PUT /latest/api/token HTTP/1.0\r\nHost: {address}\r\n\
         X-aws-ec2-metadata-token-ttl-seconds: 1\r\n\r\n"
    );
    let mut head = [0u8; 5];
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_exact(&mut head).is_ok()
        && &head == b"HTTP/"
}

/// A summary of a valid configuration, warning about roles' groups for which `group_exists`
/// is false: `serve` would refuse to start without them.
pub fn summary(config: &Config, group_exists: impl Fn(&str) -> bool) -> String {
    let mut text = String::new();
    let server = &config.server;
    let _ = writeln!(text, "listen      {}", server.listen);
    let _ = writeln!(text, "token file  {}", server.token_file.display());
    let region = config
        .sts
        .region
        .as_deref()
        .unwrap_or("(from the environment)");
    let endpoint = config.sts.endpoint.as_deref().unwrap_or("(default)");
    let _ = writeln!(text, "sts         region {region}, endpoint {endpoint}");
    for role in &config.roles {
        let _ = writeln!(
            text,
            "role {}  {} (session {}, duration {}s{})",
            role.name,
            role.arn,
            role.session_name,
            role.duration.as_secs(),
            if role.external_id.is_some() {
                ", external id set"
            } else {
                ""
            },
        );
        if let Some(line) = asked_beyond_names(role) {
            let _ = writeln!(text, "  {line}");
        }
        if let Some(file) = &role.token_file {
            let group = role.group.as_deref().unwrap_or("the daemon's group");
            let _ = writeln!(text, "  own token file {} for {group}", file.display());
        }
        if let Some(group) = &role.group
            && !group_exists(group)
        {
            let _ = writeln!(
                text,
                "  warning: there is no group {group}; serve will refuse to start until it \
                 exists (groupadd {group})"
            );
        }
    }
    text
}

/// The tags and session policies `role` sends, as configured (templates unfilled).
fn asked_beyond_names(role: &RoleConfig) -> Option<String> {
    let tags: Vec<String> = (role.tags.iter())
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    describe_asked(role, &tags)
}

/// `tags` (as `key=value`) and `role`'s session policies in a line; `None` if it has neither.
fn describe_asked(role: &RoleConfig, tags: &[String]) -> Option<String> {
    let mut parts = Vec::new();
    if !tags.is_empty() {
        let mut part = format!("tags {}", tags.join(", "));
        if !role.transitive_tags.is_empty() {
            let _ = write!(part, " (transitive: {})", role.transitive_tags.join(", "));
        }
        parts.push(part);
    }
    if !role.policy_arns.is_empty() {
        parts.push(format!("session policies {}", role.policy_arns.join(", ")));
    }
    if let Some(policy) = &role.policy {
        parts.push(format!(
            "inline session policy {} ({} characters)",
            policy.path.display(),
            policy.json.chars().count()
        ));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// Who `check --assume` asks as: `as_user`, or the user running it.
pub fn subject_for(as_user: Option<&str>) -> anyhow::Result<Subject> {
    let uid = match as_user {
        Some(name) => match accounts::user_id(name) {
            Some(uid) => uid,
            None => bail!("--as-user: there is no user {name} on this host"),
        },
        None => uzers::get_current_uid(),
    };
    Ok(Subject {
        user: Some((uid, accounts::user(uid).map(|(name, _)| name))),
        instance_id: None,
    })
}

/// Assumes every role once, as `subject` (for roles served per user), and prints what each was
/// asked with and the resulting identities; fails if any role fails.
pub async fn assume_all(config: &Config, subject: &Subject) -> anyhow::Result<String> {
    let sts = SdkSts::new(&config.sts).await;
    let mut text = String::new();
    match sts.caller_identity().await {
        Ok(arn) => {
            let _ = writeln!(text, "source identity  {arn}");
        }
        Err(error) => bail!("cannot determine the source identity: {error}"),
    }
    let mut failed = Vec::new();
    for role in &config.roles {
        let params = role.session_params(subject);
        let _ = writeln!(
            text,
            "role {}  {}",
            role.name,
            describe_params(role, &params)
        );
        match sts.assume_role(role, &params).await {
            Ok(credentials) => {
                let _ = writeln!(text, "role {}  ok: {}", role.name, describe(&credentials));
            }
            Err(error) => {
                let _ = writeln!(
                    text,
                    "role {}  FAILED ({} error): {error}",
                    role.name,
                    error.kind.as_str()
                );
                failed.push(role.name.as_str());
            }
        }
    }
    if !failed.is_empty() {
        bail!("{text}AssumeRole failed for: {}", failed.join(", "));
    }
    Ok(text)
}

/// What one `AssumeRole` is asked with, filled in for its subject.
fn describe_params(role: &RoleConfig, params: &SessionParams) -> String {
    let mut text = format!("asks as session {}", params.session_name);
    if let Some(identity) = &params.source_identity {
        let _ = write!(text, ", source identity {identity}");
    }
    let tags: Vec<String> = (params.tags.iter())
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    if let Some(asked) = describe_asked(role, &tags) {
        let _ = write!(text, "; {asked}");
    }
    text
}

fn describe(credentials: &Credentials) -> String {
    format!(
        "{} key {} expires {}",
        credentials.session_arn,
        credentials.masked_access_key_id(),
        credentials.expiration_text()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_toml;

    #[test]
    fn summary_and_assume_show_tags_and_policies() {
        let text = "[[roles]]\nname = \"piyo\"\narn = \"arn:aws:iam::444455556666:role/piyo-role\"\n\
                    session_name = \"{user}@{host}\"\n\
                    tags = { user = \"{user}\", team = \"platform\" }\ntransitive_tags = [\"team\"]\n\
                    policy_arns = [\"arn:aws:iam::aws:policy/ReadOnlyAccess\"]\n";
        let config = from_toml(text, "web-1").unwrap();
        let summary = summary(&config, |_| true);
        assert!(
            summary.contains(
                "  tags team=platform, user={user} (transitive: team); session policies \
                 arn:aws:iam::aws:policy/ReadOnlyAccess\n"
            ),
            "{summary}"
        );
        let alice = Subject {
            user: Some((1001, Some("alice".to_owned()))),
            instance_id: None,
        };
        let role = &config.roles[0];
        assert_eq!(
            describe_params(role, &role.session_params(&alice)),
            "asks as session alice@web-1; tags team=platform, user=alice (transitive: team); \
             session policies arn:aws:iam::aws:policy/ReadOnlyAccess"
        );
    }

    #[test]
    fn summary_names_role_token_files_and_missing_groups() {
        let text = "[[roles]]\nname = \"piyo\"\narn = \"arn:aws:iam::444455556666:role/piyo-role\"\n\
                    token_file = \"/var/lib/assume-roled/piyo.token\"\ngroup = \"piyo-users\"\n";
        let config = from_toml(text, "host").unwrap();
        let present = summary(&config, |group| group == "piyo-users");
        assert!(present.contains("own token file /var/lib/assume-roled/piyo.token for piyo-users"));
        assert!(!present.contains("warning"), "{present}");
        let missing = summary(&config, |_| false);
        assert!(
            missing.contains("warning: there is no group piyo-users"),
            "{missing}"
        );
    }
}
