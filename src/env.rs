//! The `env` command: the shell lines that point every AWS SDK in a user's shell at the daemon.
//!
//! `eval "$(assume-roled env)"` in `~/.bashrc` is the whole user set-up. The lines set the full
//! URI and the token file, and unset the relative URI, which SDKs would otherwise prefer. This
//! module is pure: it turns a [`Config`] into text.

use std::net::SocketAddr;

use crate::config::{Config, RoleConfig};

/// The shells `env` can write for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    /// POSIX sh, bash, zsh.
    Sh,
    /// fish.
    Fish,
}

/// The lines for `role` (or the only role) in `shell` syntax.
pub fn profile_lines(config: &Config, role: Option<&str>, shell: Shell) -> Result<String, String> {
    let role = pick_role(config, role)?;
    let uri = credentials_uri(config.server.listen, &role.name);
    let token_file = config.server.token_file.display().to_string();
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

fn pick_role<'a>(config: &'a Config, wanted: Option<&str>) -> Result<&'a RoleConfig, String> {
    let names = || {
        let names: Vec<&str> = config.roles.iter().map(|r| r.name.as_str()).collect();
        names.join(", ")
    };
    match wanted {
        Some(wanted) => config
            .roles
            .iter()
            .find(|role| role.name == wanted)
            .ok_or_else(|| format!("no role named {wanted:?}; configured roles: {}", names())),
        None if config.roles.len() == 1 => Ok(&config.roles[0]),
        None => Err(format!(
            "several roles are configured; choose one with --role ({})",
            names()
        )),
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
        let lines = profile_lines(&config, Some("fuga"), Shell::Sh).unwrap();
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
        let lines = profile_lines(&config, Some("piyo"), Shell::Fish).unwrap();
        assert!(
            lines
                .contains("set -gx AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE '/var/lib/it\\'s/token'")
        );
        assert!(lines.contains("set -e AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"));
    }

    #[test]
    fn role_choice() {
        let config = from_toml(TWO_ROLES, "host").unwrap();
        let error = profile_lines(&config, None, Shell::Sh).unwrap_err();
        assert!(error.contains("--role (piyo, fuga)"), "{error}");
        assert!(profile_lines(&config, Some("nope"), Shell::Sh).is_err());
    }

    #[test]
    fn ipv6_listener_uri() {
        assert_eq!(
            credentials_uri("[::1]:9357".parse().unwrap(), "piyo"),
            "http://[::1]:9357/roles/piyo"
        );
    }
}
