//! The `check` command: validates the configuration and, with `--assume`, performs one real
//! `AssumeRole` per role, the first thing to run on a new host.
//!
//! It prints to stdout for people; problems are errors for `main` to report.

use std::fmt::Write as _;

use anyhow::bail;

use crate::accounts;
use crate::config::Config;
use crate::credentials::Credentials;
use crate::sts::{SdkSts, Sts};

/// A summary of a valid configuration, warning about roles' groups for which `group_exists`
/// Whether the name service knows group `name` (what `summary` is given in production).
pub fn group_exists(name: &str) -> bool {
    accounts::group_id(name).is_some()
}

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

/// Assumes every role once and prints the resulting identities; fails if any role fails.
pub async fn assume_all(config: &Config) -> anyhow::Result<String> {
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
        match sts.assume_role(role).await {
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
