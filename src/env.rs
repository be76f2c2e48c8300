//! The `env` command: the shell lines that point every AWS SDK in a user's shell at the daemon.
//!
//! `eval "$(assume-roled env)"` in `~/.bashrc` is the whole user set-up. The lines set the full
//! URI and the token file, and unset the relative URI, which SDKs would otherwise prefer. The
//! token file is the role's own if it has one, else the server's. Without `--role`, the role is
//! the only one configured, or else the only one whose token file the user can read: so one
//! profile line serves a host where each group has its role. This module is pure: it turns a
//! [`Config`] into text, given which files the user can read.

use std::net::SocketAddr;
use std::path::Path;

use crate::config::{Config, RoleConfig};

/// The shells `env` can write for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    /// POSIX sh, bash, zsh.
    Sh,
    /// fish.
    Fish,
}

/// The lines for `role` (or the one role the user may have) in `shell` syntax; `readable` says
/// whether the user can read a token file.
pub fn profile_lines(
    config: &Config,
    role: Option<&str>,
    shell: Shell,
    readable: impl Fn(&Path) -> bool,
) -> Result<String, String> {
    let role = pick_role(config, role, &readable)?;
    let token_path = config.token_file_of(role);
    // Lines that point at a token the user cannot read would only break their tools.
    if !readable(token_path) {
        return Err(format!(
            "cannot read the token file {} of role {}; members of its group may (ask an \
             administrator to add you)",
            token_path.display(),
            role.name
        ));
    }
    let uri = credentials_uri(config.server.listen, &role.name);
    let token_file = token_path.display().to_string();
    let lines = match shell {
        Shell::Sh => format!(
            "export AWS_CONTAINER_CREDENTIALS_FULL_URI={}\n\
             export AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE={}\n\
             unset AWS_CONTAINER_CREDENTIALS_RELATIVE_URI\n",
            sh_quote(&uri),
            sh_quote(&token_file)
        ),
        Shell::Fish => format!(
            "set -gx AWS_CONTAINER_CREDENTIALS_FULL_URI {}\n\
             set -gx AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE {}\n\
             set -e AWS_CONTAINER_CREDENTIALS_RELATIVE_URI\n",
            fish_quote(&uri),
            fish_quote(&token_file)
        ),
    };
    Ok(lines)
}

/// The URL clients fetch a role's credentials from.
pub fn credentials_uri(listen: SocketAddr, role: &str) -> String {
    format!("http://{listen}/roles/{role}")
}

fn pick_role<'a>(
    config: &'a Config,
    wanted: Option<&str>,
    readable: impl Fn(&Path) -> bool,
) -> Result<&'a RoleConfig, String> {
    let names = || {
        let names: Vec<&str> = config.roles.iter().map(|r| r.name.as_str()).collect();
        names.join(", ")
    };
    let open: Vec<&RoleConfig> = config
        .roles
        .iter()
        .filter(|role| readable(config.token_file_of(role)))
        .collect();
    match wanted {
        Some(wanted) => config
            .roles
            .iter()
            .find(|role| role.name == wanted)
            .ok_or_else(|| format!("no role named {wanted:?}; configured roles: {}", names())),
        None if config.roles.len() == 1 => Ok(&config.roles[0]),
        None if open.len() == 1 => Ok(open[0]),
        None if open.is_empty() => Err(format!(
            "cannot read the token file of any role ({}); members of a role's group may \
             (ask an administrator to add you)",
            names()
        )),
        None => {
            let open: Vec<&str> = open.iter().map(|r| r.name.as_str()).collect();
            Err(format!(
                "several roles are configured; choose one with --role ({})",
                open.join(", ")
            ))
        }
    }
}

/// Single-quotes for POSIX shells: nothing inside is special except `'` itself.
fn sh_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Single-quotes for fish, where `\` and `'` are escaped with a backslash.
fn fish_quote(text: &str) -> String {
    format!("'{}'", text.replace('\\', r"\\").replace('\'', r"\'"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_toml;

    const TWO_ROLES: &str = r#"
[server]
listen = "127.0.0.1:9400"
token_file = "/var/lib/it's/token"
[[roles]]
name = "piyo"
arn = "arn:aws:iam::444455556666:role/piyo-role"
[[roles]]
name = "fuga"
arn = "arn:aws:iam::777788889999:role/fuga-role"
"#;

    #[test]
    fn sh_lines_are_quoted_and_unset_the_relative_uri() {
        let config = from_toml(TWO_ROLES, "host").unwrap();
        let lines = profile_lines(&config, Some("fuga"), Shell::Sh, anything).unwrap();
        assert_eq!(
            lines,
            "export AWS_CONTAINER_CREDENTIALS_FULL_URI='http://127.0.0.1:9400/roles/fuga'\n\
             export AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE='/var/lib/it'\\''s/token'\n\
             unset AWS_CONTAINER_CREDENTIALS_RELATIVE_URI\n"
        );
    }

    #[test]
    fn fish_lines() {
        let config = from_toml(TWO_ROLES, "host").unwrap();
        let lines = profile_lines(&config, Some("piyo"), Shell::Fish, anything).unwrap();
        assert!(
            lines
                .contains("set -gx AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE '/var/lib/it\\'s/token'")
        );
        assert!(lines.contains("set -e AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"));
    }

    fn anything(_: &Path) -> bool {
        true
    }

    #[test]
    fn role_choice() {
        let config = from_toml(TWO_ROLES, "host").unwrap();
        let error = profile_lines(&config, None, Shell::Sh, anything).unwrap_err();
        assert!(error.contains("--role (piyo, fuga)"), "{error}");
        assert!(profile_lines(&config, Some("nope"), Shell::Sh, anything).is_err());
        let nothing = profile_lines(&config, Some("piyo"), Shell::Sh, |_| false).unwrap_err();
        assert!(
            nothing.contains("cannot read the token file /var/lib/it's/token"),
            "{nothing}"
        );
    }

    /// Each group's members get their own role's lines from the same `assume-roled env`.
    #[test]
    fn a_role_token_file_is_used_and_picks_the_role() {
        let text = format!(
            "{TWO_ROLES}token_file = \"/var/lib/assume-roled/fuga.token\"\ngroup = \"fuga-users\"\n"
        );
        let config = from_toml(&text, "host").unwrap();
        let only_fuga = |path: &Path| path.ends_with("fuga.token");
        let lines = profile_lines(&config, None, Shell::Sh, only_fuga).unwrap();
        assert!(lines.contains("/roles/fuga'"), "{lines}");
        assert!(
            lines.contains("TOKEN_FILE='/var/lib/assume-roled/fuga.token'"),
            "{lines}"
        );
        let only_server = |path: &Path| !path.ends_with("fuga.token");
        let lines = profile_lines(&config, None, Shell::Sh, only_server).unwrap();
        assert!(lines.contains("/roles/piyo'"), "{lines}");
        let error = profile_lines(&config, Some("fuga"), Shell::Sh, only_server).unwrap_err();
        assert!(error.contains("fuga.token of role fuga"), "{error}");
        let error = profile_lines(&config, None, Shell::Sh, |_| false).unwrap_err();
        assert!(error.contains("any role (piyo, fuga)"), "{error}");
    }

    #[test]
    fn ipv6_listener_uri() {
        assert_eq!(
            credentials_uri("[::1]:9357".parse().unwrap(), "piyo"),
            "http://[::1]:9357/roles/piyo"
        );
    }
}
