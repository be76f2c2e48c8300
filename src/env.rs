//! The `env` command: the shell lines that point every AWS SDK in a user's shell at the daemon.
//!
//! `eval "$(assume-roled env)"` in `~/.bashrc` is the whole user set-up. The lines set the full
//! URI and the token file, and unset the relative URI, which SDKs would otherwise prefer. The
//! token file is the role's own if it has one, else the server's. Without `--role`, the role is
//! the only one configured, or else the only one whose token file the user can read: so one
//! profile line serves a host where each group has its role.
//!
//! All `env` needs is where each role is served and which token file opens it: [`Endpoints`],
//! taken from the configuration when the user can read it, else from the public copy the
//! daemon writes beside its token (`endpoints`, no secrets in it), so that the configuration
//! itself (external ids, exempt users) can stay readable by the daemon's group only. Turning
//! endpoints into text is pure, given which files the user can read.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use std::os::unix::fs::PermissionsExt;

use serde::{Deserialize, Serialize};

use crate::config::{Config, ConfigError, DEFAULT_TOKEN_FILE};

/// The name of the public copy of the endpoints, beside the server's token file.
pub const ENDPOINTS_FILE: &str = "endpoints";

/// Where each role is served and which token file opens it: all a client needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoints {
    /// The daemon's listener.
    pub listen: SocketAddr,
    /// Where containers reach it (`[containers] listen`), if they do.
    #[serde(default)]
    pub containers: Vec<SocketAddr>,
    /// The roles, in configuration order.
    pub roles: Vec<Endpoint>,
}

/// One role's endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The role's name, the last part of its URL.
    pub name: String,
    /// The token file whose token opens it.
    pub token_file: PathBuf,
    /// Whether that is the role's own token file (not the server's).
    #[serde(default)]
    pub own_token: bool,
}

impl Endpoints {
    /// The endpoints of `config`.
    pub fn from_config(config: &Config) -> Self {
        let roles = config.roles.iter().map(|role| Endpoint {
            name: role.name.clone(),
            token_file: config.token_file_of(role).to_owned(),
            own_token: role.token_file.is_some(),
        });
        Self {
            listen: config.server.listen,
            containers: config
                .containers
                .iter()
                .flat_map(|c| c.listen.clone())
                .collect(),
            roles: roles.collect(),
        }
    }

    /// The text of the public copy.
    pub fn to_text(&self) -> String {
        let body = toml::to_string(self).expect("endpoints serialise");
        format!(
            "# Written by assume-roled for `assume-roled env`: where each role is served and which\n\
             # token file opens it. No secrets; rewritten at every start and reload.\n{body}"
        )
    }

    /// Reads the public copy's text.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|error| error.message().to_owned())
    }

    /// Where the public copy of `config`'s endpoints lives: beside the server's token file.
    pub fn path_for(token_file: &Path) -> PathBuf {
        token_file.with_file_name(ENDPOINTS_FILE)
    }
}

/// Where the daemon writes the public copy with the default token file.
pub fn default_public_copy() -> PathBuf {
    Endpoints::path_for(Path::new(DEFAULT_TOKEN_FILE))
}

/// The endpoints the client commands (`env`, `credentials`, `profiles`) work from: the
/// configuration at `config_path` if the user can load it, else the public copy at `public`
/// (which the running daemon writes beside its token file): a configuration the user cannot
/// read, or one being edited (the daemon serves what it last loaded), still leaves the user
/// their endpoints.
pub fn load_endpoints(config_path: &Path, public: &Path) -> anyhow::Result<Endpoints> {
    let error = match crate::config::load(config_path) {
        Ok(config) => return Ok(bound(Endpoints::from_config(&config), &config)),
        Err(error) => error,
    };
    let unreadable = matches!(&error, ConfigError::Read { cause, .. }
        if cause.kind() == std::io::ErrorKind::PermissionDenied);
    let published = std::fs::read_to_string(public).map_err(|cause| match unreadable {
        true => anyhow::anyhow!("{error}; nor can {} be read: {cause}", public.display()),
        false => anyhow::Error::from(error),
    })?;
    Endpoints::parse(&published).map_err(|reason| anyhow::anyhow!("{}: {reason}", public.display()))
}

/// `endpoints` with the port the daemon actually bound when the configuration says `:0` (any
/// free port): the running daemon's public copy says which.
fn bound(endpoints: Endpoints, config: &Config) -> Endpoints {
    if endpoints.listen.port() != 0 {
        return endpoints;
    }
    let public = Endpoints::path_for(&config.server.token_file);
    let published = std::fs::read_to_string(public).ok();
    match published.and_then(|text| Endpoints::parse(&text).ok()) {
        Some(running) => Endpoints {
            listen: running.listen,
            ..endpoints
        },
        None => endpoints,
    }
}

/// Writes the public copy of `config`'s endpoints, served at `listening` (the address actually
/// bound: a configured port 0 has become a real one), beside its token file, readable by
/// everyone (so that users outside the daemon's group, members of a role's group, can run
/// `env`), replacing any earlier one at once.
pub fn publish(config: &Config, listening: SocketAddr) -> std::io::Result<PathBuf> {
    let path = Endpoints::path_for(&config.server.token_file);
    let temporary = path.with_extension("new");
    let endpoints = Endpoints {
        listen: listening,
        ..Endpoints::from_config(config)
    };
    std::fs::write(&temporary, endpoints.to_text())?;
    std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o644))?;
    std::fs::rename(&temporary, &path)?;
    Ok(path)
}

/// Reads a token file's text, if the user can.
pub type ReadToken<'a> = &'a dyn Fn(&Path) -> Option<String>;

/// The shells `env` can write for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    /// POSIX sh, bash, zsh.
    Sh,
    /// fish.
    Fish,
}

/// The lines for `role` (or the one role the user may have) in `shell` syntax; `readable` says
/// whether the user can read a token file. With `inline` (which reads a token file), the token
/// itself is exported too, for clients that predate the token-file variable.
pub fn profile_lines(
    endpoints: &Endpoints,
    role: Option<&str>,
    shell: Shell,
    readable: impl Fn(&Path) -> bool,
    inline: Option<ReadToken<'_>>,
) -> Result<String, String> {
    let role = pick_role(endpoints, role, &readable)?;
    let token_path = role.token_file.as_path();
    // Lines that point at a token the user cannot read would only break their tools.
    if !readable(token_path) {
        return Err(format!(
            "cannot read the token file {} of role {}; members of its group may (ask an \
             administrator to add you)",
            token_path.display(),
            role.name
        ));
    }
    let uri = credentials_uri(endpoints.listen, &role.name);
    let token_file = token_path.display().to_string();
    let token = match inline {
        Some(read) => Some(
            read(token_path)
                .ok_or_else(|| format!("cannot read the token file {}", token_path.display()))?,
        ),
        None => None,
    };
    let mut lines = String::new();
    let mut set = |name: &str, value: &str| {
        lines.push_str(&match shell {
            Shell::Sh => format!("export {name}={}\n", sh_quote(value)),
            Shell::Fish => format!("set -gx {name} {}\n", fish_quote(value)),
        });
    };
    set("AWS_CONTAINER_CREDENTIALS_FULL_URI", &uri);
    set("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", &token_file);
    if let Some(token) = &token {
        set("AWS_CONTAINER_AUTHORIZATION_TOKEN", token);
    }
    lines.push_str(match shell {
        Shell::Sh => "unset AWS_CONTAINER_CREDENTIALS_RELATIVE_URI\n",
        Shell::Fish => "set -e AWS_CONTAINER_CREDENTIALS_RELATIVE_URI\n",
    });
    Ok(lines)
}

/// The URL clients fetch a role's credentials from.
pub fn credentials_uri(listen: SocketAddr, role: &str) -> String {
    match listen.port() {
        80 => format!("http://{}/roles/{role}", host_of(listen)),
        _ => format!("http://{listen}/roles/{role}"),
    }
}

/// An address's host part as a URL writes it.
fn host_of(address: SocketAddr) -> String {
    match address {
        SocketAddr::V4(v4) => v4.ip().to_string(),
        SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
    }
}

/// Where a container finds the mounted token file.
pub const CONTAINER_TOKEN_PATH: &str = "/run/assume-roled/token";

/// How to hand a role to a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerForm {
    /// `docker run` flags: `-e` for the variables, `-v` to mount the token file read-only.
    Docker,
    /// The same as a Compose service's `environment` and `volumes`.
    Compose,
}

/// What a container needs for `role` (or the one role the user may have): the full URI at the
/// containers' address (IPv4 first: every SDK that knows the container addresses takes it) and
/// the role's token file, mounted read-only.
pub fn container_lines(
    endpoints: &Endpoints,
    role: Option<&str>,
    form: ContainerForm,
    readable: impl Fn(&Path) -> bool,
) -> Result<String, String> {
    let address = (endpoints.containers.iter())
        .find(|a| a.is_ipv4())
        .or(endpoints.containers.first())
        .ok_or("containers are not served: the configuration has no [containers] table")?;
    let role = pick_role(endpoints, role, &readable)?;
    // The server's token opens every role without a token file of its own, /status and
    // /metrics: a container gets a role's own token, which opens that role alone.
    if !role.own_token {
        return Err(format!(
            "role {} has no token_file of its own; give it one (and a group) before handing it \
             to containers: the server's token would open every role that has none",
            role.name
        ));
    }
    if !readable(&role.token_file) {
        return Err(format!(
            "cannot read the token file {} of role {}; members of its group may",
            role.token_file.display(),
            role.name
        ));
    }
    let uri = credentials_uri(*address, &role.name);
    let token_file = role.token_file.display();
    Ok(match form {
        ContainerForm::Docker => format!(
            "-e AWS_CONTAINER_CREDENTIALS_FULL_URI={uri} \
             -e AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE={CONTAINER_TOKEN_PATH} \
             -v {token_file}:{CONTAINER_TOKEN_PATH}:ro\n"
        ),
        ContainerForm::Compose => format!(
            "    environment:\n      \
             AWS_CONTAINER_CREDENTIALS_FULL_URI: \"{uri}\"\n      \
             AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE: \"{CONTAINER_TOKEN_PATH}\"\n    \
             volumes:\n      \
             - \"{token_file}:{CONTAINER_TOKEN_PATH}:ro\"\n"
        ),
    })
}

fn pick_role<'a>(
    endpoints: &'a Endpoints,
    wanted: Option<&str>,
    readable: impl Fn(&Path) -> bool,
) -> Result<&'a Endpoint, String> {
    let roles = &endpoints.roles;
    let names = || {
        let names: Vec<&str> = roles.iter().map(|r| r.name.as_str()).collect();
        names.join(", ")
    };
    let open: Vec<&Endpoint> = roles
        .iter()
        .filter(|role| readable(&role.token_file))
        .collect();
    match wanted {
        Some(wanted) => roles
            .iter()
            .find(|role| role.name == wanted)
            .ok_or_else(|| format!("no role named {wanted:?}; configured roles: {}", names())),
        None if roles.len() == 1 => Ok(&roles[0]),
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

    fn endpoints(text: &str) -> Endpoints {
        Endpoints::from_config(&from_toml(text, "host").unwrap())
    }

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
        let config = endpoints(TWO_ROLES);
        let lines = profile_lines(&config, Some("fuga"), Shell::Sh, anything, None).unwrap();
        assert_eq!(
            lines,
            "export AWS_CONTAINER_CREDENTIALS_FULL_URI='http://127.0.0.1:9400/roles/fuga'\n\
             export AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE='/var/lib/it'\\''s/token'\n\
             unset AWS_CONTAINER_CREDENTIALS_RELATIVE_URI\n"
        );
    }

    #[test]
    fn fish_lines() {
        let config = endpoints(TWO_ROLES);
        let lines = profile_lines(&config, Some("piyo"), Shell::Fish, anything, None).unwrap();
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
        let config = endpoints(TWO_ROLES);
        let error = profile_lines(&config, None, Shell::Sh, anything, None).unwrap_err();
        assert!(error.contains("--role (piyo, fuga)"), "{error}");
        assert!(profile_lines(&config, Some("nope"), Shell::Sh, anything, None).is_err());
        let nothing = profile_lines(&config, Some("piyo"), Shell::Sh, |_| false, None).unwrap_err();
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
        let config = endpoints(&text);
        let only_fuga = |path: &Path| path.ends_with("fuga.token");
        let lines = profile_lines(&config, None, Shell::Sh, only_fuga, None).unwrap();
        assert!(lines.contains("/roles/fuga'"), "{lines}");
        assert!(
            lines.contains("TOKEN_FILE='/var/lib/assume-roled/fuga.token'"),
            "{lines}"
        );
        let only_server = |path: &Path| !path.ends_with("fuga.token");
        let lines = profile_lines(&config, None, Shell::Sh, only_server, None).unwrap();
        assert!(lines.contains("/roles/piyo'"), "{lines}");
        let error = profile_lines(&config, Some("fuga"), Shell::Sh, only_server, None).unwrap_err();
        assert!(error.contains("fuga.token of role fuga"), "{error}");
        let error = profile_lines(&config, None, Shell::Sh, |_| false, None).unwrap_err();
        assert!(error.contains("any role (piyo, fuga)"), "{error}");
    }

    /// The public copy holds what `env` needs and reads back the same.
    #[test]
    fn the_public_copy_reads_back() {
        let text = format!(
            "{TWO_ROLES}token_file = \"/var/lib/assume-roled/fuga.token\"\n\
             external_id = \"secret-external-id\"\n"
        );
        let config = from_toml(&text, "host").unwrap();
        let written = Endpoints::from_config(&config).to_text();
        assert!(!written.contains("secret-external-id"), "{written}");
        assert!(!written.contains("arn:"), "{written}");
        let read = Endpoints::parse(&written).unwrap();
        assert_eq!(read, Endpoints::from_config(&config));
        assert_eq!(
            read.roles[1].token_file,
            Path::new("/var/lib/assume-roled/fuga.token")
        );
        assert_eq!(
            Endpoints::path_for(Path::new("/var/lib/assume-roled/token")),
            Path::new("/var/lib/assume-roled/endpoints")
        );
    }

    /// For clients that predate the token-file variable, the token itself, quoted; read from
    /// the picked role's file.
    #[test]
    fn the_token_inline() {
        let config = endpoints(TWO_ROLES);
        let read = |path: &Path| Some(format!("tok'en-of-{}", path.display()));
        let lines = profile_lines(&config, Some("piyo"), Shell::Sh, anything, Some(&read)).unwrap();
        assert!(
            lines.contains(
                "export AWS_CONTAINER_AUTHORIZATION_TOKEN='tok'\\''en-of-/var/lib/it'\\''s/token'\n"
            ),
            "{lines}"
        );
        assert!(
            lines.contains("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE="),
            "the file too: {lines}"
        );
        let fish =
            profile_lines(&config, Some("piyo"), Shell::Fish, anything, Some(&read)).unwrap();
        assert!(
            fish.contains("set -gx AWS_CONTAINER_AUTHORIZATION_TOKEN 'tok\\'en-of-"),
            "{fish}"
        );
        let unreadable = |_: &Path| None;
        let error = profile_lines(
            &config,
            Some("piyo"),
            Shell::Sh,
            anything,
            Some(&unreadable),
        );
        assert!(error.unwrap_err().contains("cannot read the token file"));
    }

    #[test]
    fn container_flags_and_compose() {
        let one =
            "[[roles]]\nname = \"piyo\"\narn = \"arn:aws:iam::444455556666:role/piyo-role\"\n";
        let mut endpoints = endpoints(one);
        let none = container_lines(&endpoints, None, ContainerForm::Docker, anything);
        assert!(none.unwrap_err().contains("[containers]"));
        endpoints.containers = vec!["169.254.170.23:80".parse().unwrap()];
        let shared = container_lines(&endpoints, None, ContainerForm::Docker, anything);
        assert!(shared.unwrap_err().contains("no token_file of its own"));
        endpoints.roles[0].own_token = true;
        endpoints.roles[0].token_file = "/var/lib/assume-roled/piyo.token".into();
        let nothing = |_: &Path| false;
        let hidden = container_lines(&endpoints, Some("piyo"), ContainerForm::Docker, nothing);
        assert!(hidden.unwrap_err().contains("cannot read"), "named or not");
        endpoints.containers = vec![
            "[fd00:ec2::23]:80".parse().unwrap(),
            "169.254.170.23:80".parse().unwrap(),
        ];
        let flags = container_lines(&endpoints, None, ContainerForm::Docker, anything).unwrap();
        assert_eq!(
            flags,
            "-e AWS_CONTAINER_CREDENTIALS_FULL_URI=http://169.254.170.23/roles/piyo \
             -e AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=/run/assume-roled/token \
             -v /var/lib/assume-roled/piyo.token:/run/assume-roled/token:ro\n"
        );
        let compose = container_lines(&endpoints, None, ContainerForm::Compose, anything).unwrap();
        assert!(
            compose.contains(
                "AWS_CONTAINER_CREDENTIALS_FULL_URI: \"http://169.254.170.23/roles/piyo\""
            )
        );
        assert!(
            compose.contains("- \"/var/lib/assume-roled/piyo.token:/run/assume-roled/token:ro\"")
        );
        endpoints.containers.truncate(1);
        let v6 = container_lines(&endpoints, None, ContainerForm::Docker, anything).unwrap();
        assert!(v6.contains("http://[fd00:ec2::23]/roles/piyo"), "{v6}");
    }

    #[test]
    fn ipv6_listener_uri() {
        assert_eq!(
            credentials_uri("[::1]:9357".parse().unwrap(), "piyo"),
            "http://[::1]:9357/roles/piyo"
        );
    }
}
