//! Configuration: the TOML file an operator writes, parsed and then validated into [`Config`].
//!
//! Reading happens in passes over the same text, so that one run reports every problem at once
//! instead of making the operator fix them one by one, low to high as in ripgrep's flags:
//!
//! - `raw`: the file as written, each table a map of keys to values of any TOML type with their
//!   positions. A value of the wrong type is therefore not a parse failure that hides the rest:
//!   it is one more problem for the next pass.
//! - `validate`: each raw value becomes a checked one (with the parsers of `values`) or a
//!   [`Problem`] naming its line and key, and cross-checks run between keys. The keys that
//!   validation asks a table for are the keys it knows; whatever else a table holds is reported
//!   as unknown, with the list of known ones.
//! - this module: the checked types, [`from_toml`] (pure, what the tests drive) and [`load`],
//!   the only I/O.
//!
//! Adding a key: a field in the checked type, the one line in its table's `validate_*` function
//! that fills it, and its documentation in `config.example.toml` (a test checks that the example
//! holds exactly the keys validation knows). Nothing downstream of [`Config`] ever sees an
//! unchecked value.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

mod raw;
mod template;
mod validate;
mod values;

pub use template::{Form, Subject, Template};
pub use validate::redirect_target;
pub use values::{Network, RoleArn, parse_duration, session_name_from_host};

/// Where `serve`, `check` and `env` look for the configuration unless told otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/assume-roled/config.toml";
/// The loopback address served when `[server] listen` is absent.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9357";
/// The token file used when `[server] token_file` is absent.
pub const DEFAULT_TOKEN_FILE: &str = "/var/lib/assume-roled/token";
/// The session length requested from STS when a role names none: one hour is both what clients
/// are tuned for and the cap STS applies when the caller is itself a role session.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(3600);
/// Connections one user may hold when `[server] max_connections_per_user` is absent: far more
/// than one user's tools open at once, far fewer than `max_connections`.
pub const DEFAULT_MAX_CONNECTIONS_PER_USER: usize = 128;
/// Audit lines written in a minute at most when `[server] audit_lines_per_minute` is absent:
/// past it, lines are folded into counts by outcome (well under journald's default rate limit
/// of 10,000 lines in 30 s, so the audit never makes journald drop lines).
pub const DEFAULT_AUDIT_LINES_PER_MINUTE: usize = 600;
/// Connections served at once when `[server] max_connections` is absent: far more than a host's
/// tools open, few enough that a local flood cannot exhaust memory or file descriptors.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Per-user sessions one role may hold when `max_sessions` is absent: more local users than
/// most hosts have, few enough that a flood of new uids cannot become a flood of STS calls.
pub const DEFAULT_MAX_SESSIONS: usize = 256;

/// A validated configuration: every value checked, every default filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `[server]`.
    pub server: ServerConfig,
    /// `[sts]`.
    pub sts: StsConfig,
    /// The instance-metadata endpoint; `None` (the default) leaves it off.
    pub imds: Option<ImdsConfig>,
    /// The endpoint for containers on this host; `None` (the default) leaves it off.
    pub containers: Option<ContainersConfig>,
    /// The `[[roles]]` entries, in file order.
    pub roles: Vec<RoleConfig>,
}

impl Config {
    /// The token file that grants `role`: its own, or the server's.
    pub fn token_file_of<'a>(&'a self, role: &'a RoleConfig) -> &'a Path {
        role.token_file
            .as_deref()
            .unwrap_or(&self.server.token_file)
    }
}

/// `[server]`: where the daemon listens and where its token lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Always a loopback address.
    pub listen: SocketAddr,
    /// The server's token file.
    pub token_file: PathBuf,
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Connections one local user may hold at once; more are closed at once, so that one
    /// user's flood cannot make everyone else wait.
    pub max_connections_per_user: usize,
    /// Audit lines written in a minute at most; past it they are folded into counts.
    pub audit_lines_per_minute: u64,
    /// A second loopback address serving only `/metrics`, without the token (for Prometheus,
    /// which cannot send a bare token); `None`: metrics only at `/metrics` behind the token.
    pub metrics_listen: Option<SocketAddr>,
    /// Find each connection's user in the kernel's tables (needed by `allowed_users`,
    /// `allowed_groups` and the audit log's user fields).
    pub peer_lookup: bool,
    /// Also find each connection's process (pid, executable) for the audit log: a scan of
    /// every visible process per connection.
    pub peer_processes: bool,
}

/// `[sts]`: how to reach STS. Absent values mean "as the AWS SDK resolves them".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StsConfig {
    /// The region of the STS endpoint.
    pub region: Option<String>,
    /// An endpoint URL override (a VPC endpoint, tests).
    pub endpoint: Option<String>,
}

/// `[imds]`: answer as IMDSv2 for one role, passing other metadata through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImdsConfig {
    /// The `name` of the `[[roles]]` entry served under `iam/`.
    pub role: String,
    /// The real instance metadata; `None` means as the SDKs resolve it.
    pub upstream: Option<String>,
    /// What the host's firewall does with local users' traffic to the real instance metadata;
    /// `None`: nothing (the guard is off).
    pub guard: Option<GuardMode>,
    /// Users who keep the real instance metadata (besides root and the daemon's own user).
    pub exempt_users: Vec<String>,
    /// Groups whose members keep it, by the group a connection's socket is created with.
    pub exempt_groups: Vec<String>,
}

/// `[containers]`: serve containers on this host at an address SDKs accept for containers, and
/// keep their metadata traffic from the instance role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainersConfig {
    /// Where containers reach the daemon: `169.254.170.23`, `169.254.170.2` or
    /// `[fd00:ec2::23]`, any port.
    pub listen: Vec<SocketAddr>,
    /// What containers' connections to the instance metadata meet: sent to the daemon (which
    /// answers with the `[imds]` role, to the containers its `allowed_networks` admit), or
    /// refused.
    pub imds: GuardMode,
}

/// The addresses SDKs accept in `AWS_CONTAINER_CREDENTIALS_FULL_URI` besides loopback.
pub const CONTAINER_ADDRESSES: [IpAddr; 3] = [
    IpAddr::V4(Ipv4Addr::new(169, 254, 170, 23)),
    IpAddr::V4(Ipv4Addr::new(169, 254, 170, 2)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23)),
];

/// What the guard does with a local user's connection to the real instance metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardMode {
    /// Sends it to the daemon, which answers as the instance metadata with the `[imds]` role.
    Redirect,
    /// Refuses it at once (a TCP reset).
    Block,
}

impl GuardMode {
    /// The name the configuration uses.
    pub fn as_str(self) -> &'static str {
        match self {
            GuardMode::Redirect => "redirect",
            GuardMode::Block => "block",
        }
    }
}

/// Whether a user or group name exists, for the keys that must name real ones.
pub trait Accounts {
    /// Whether user `name` exists.
    fn user_exists(&self, name: &str) -> bool;
    /// Whether group `name` exists.
    fn group_exists(&self, name: &str) -> bool;
}

/// The system's name service (files, SSSD, LDAP).
struct SystemAccounts;

impl Accounts for SystemAccounts {
    fn user_exists(&self, name: &str) -> bool {
        crate::accounts::user_id(name).is_some()
    }
    fn group_exists(&self, name: &str) -> bool {
        crate::accounts::group_id(name).is_some()
    }
}

/// Takes every name as existing: what pure parsing assumes.
pub struct AnyName;

impl Accounts for AnyName {
    fn user_exists(&self, _: &str) -> bool {
        true
    }
    fn group_exists(&self, _: &str) -> bool {
        true
    }
}

/// One `[[roles]]` entry: a role in another account, served at `/roles/<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleConfig {
    /// Served at `/roles/<name>`.
    pub name: String,
    /// The role to assume.
    pub arn: RoleArn,
    /// `RoleSessionName`, as CloudTrail in the other account shows it.
    pub session_name: Template,
    /// `ExternalId`, if the trust policy requires one.
    pub external_id: Option<String>,
    /// `SourceIdentity`, kept through role chaining.
    pub source_identity: Option<Template>,
    /// The session length asked for.
    pub duration: Duration,
    /// If not empty (with `allowed_groups`): only connections from these users (or members
    /// of those groups) get this role, token or not.
    pub allowed_users: Vec<String>,
    /// See `allowed_users`.
    pub allowed_groups: Vec<String>,
    /// Containers whose connections come from these networks get this role (a container has
    /// no local user); with `allowed_*`, the role is restricted to those users, groups and
    /// networks together.
    pub allowed_networks: Vec<Network>,
    /// The role's own token file, so that reading it (membership of `group`) is what grants
    /// this role; `None`: the role is served to holders of the server's token.
    pub token_file: Option<PathBuf>,
    /// The group the role's token file is given to (mode 0640); `None`: the daemon's group
    /// (a file of another group then gets a new token, as when `group` changes).
    pub group: Option<String>,
    /// Per-user sessions held at once (roles served per user only).
    pub max_sessions: usize,
    /// Session tags: each key and its value's template, in key order.
    pub tags: Vec<(String, Template)>,
    /// The keys of `tags` that stay on the session through role chaining.
    pub transitive_tags: Vec<String>,
    /// Managed policies that narrow the session (session policies).
    pub policy_arns: Vec<String>,
    /// An inline session policy.
    pub policy: Option<SessionPolicy>,
}

/// An inline session policy, read from its file when the configuration is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPolicy {
    /// The file it was read from.
    pub path: PathBuf,
    /// The policy, as compact JSON.
    pub json: String,
}

/// What a session is asked for under: `RoleSessionName`, `SourceIdentity` and session tags,
/// rendered for its subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionParams {
    /// `RoleSessionName`.
    pub session_name: String,
    /// `SourceIdentity`, if the role sets one.
    pub source_identity: Option<String>,
    /// Session tags, key and value.
    pub tags: Vec<(String, String)>,
}

impl RoleConfig {
    /// Whether `other` asks STS for the same session: if so, a reload keeps this role's
    /// credentials and only updates who may have them.
    pub fn same_session(&self, other: &RoleConfig) -> bool {
        self.asked_of_sts() == other.asked_of_sts()
    }

    /// Everything an `AssumeRole` call is asked with. Named field by field: a new field does
    /// not compile until it is sorted into what STS is asked (here) or who may have the role.
    fn asked_of_sts(&self) -> impl PartialEq + '_ {
        let Self {
            name,
            arn,
            session_name,
            external_id,
            source_identity,
            duration,
            tags,
            transitive_tags,
            policy_arns,
            policy,
            allowed_users: _,
            allowed_groups: _,
            allowed_networks: _,
            token_file: _,
            group: _,
            max_sessions: _,
        } = self;
        let session = (tags, transitive_tags, policy_arns, policy);
        (
            name,
            arn,
            session_name,
            external_id,
            source_identity,
            duration,
            session,
        )
    }

    /// Every template the role renders for a session.
    fn templates(&self) -> impl Iterator<Item = &Template> {
        let tags = self.tags.iter().map(|(_, value)| value);
        std::iter::once(&self.session_name)
            .chain(&self.source_identity)
            .chain(tags)
    }

    /// Whether each local user gets a session of their own: a template names the user.
    pub fn per_user(&self) -> bool {
        self.templates().any(Template::names_user)
    }

    /// Whether a template names the instance id.
    pub fn names_instance(&self) -> bool {
        self.templates().any(Template::names_instance)
    }

    /// What the session for `subject` is asked for under.
    pub fn session_params(&self, subject: &Subject) -> SessionParams {
        SessionParams {
            session_name: self.session_name.render(subject),
            source_identity: self.source_identity.as_ref().map(|t| t.render(subject)),
            tags: (self.tags.iter())
                .map(|(key, value)| (key.clone(), value.render(subject)))
                .collect(),
        }
    }

    /// Whether anyone holding the token may have this role (no `allowed_users`,
    /// `allowed_groups` or `allowed_networks`).
    pub fn open_to_all(&self) -> bool {
        self.allowed_users.is_empty()
            && self.allowed_groups.is_empty()
            && self.allowed_networks.is_empty()
    }

    /// Whether a client running as `user`, member of `groups` (a local process), or a
    /// container connecting from `container`, may have this role.
    pub fn admits(&self, user: Option<&str>, groups: &[String], container: Option<IpAddr>) -> bool {
        if self.open_to_all() {
            return true;
        }
        let named = user.is_some_and(|user| self.allowed_users.iter().any(|u| u == user));
        let grouped = groups.iter().any(|g| self.allowed_groups.contains(g));
        let networked = container
            .is_some_and(|address| self.allowed_networks.iter().any(|n| n.contains(address)));
        named || grouped || networked
    }
}

/// One thing wrong with a configuration file, located by line and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line of the value or key.
    pub line: usize,
    /// Dotted key path such as `roles[0].arn`; empty for syntax errors.
    pub key: String,
    /// What is wrong, in a sentence.
    pub message: String,
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read configuration {}: {cause}", path.display())]
    Read {
        /// The configuration file.
        path: PathBuf,
        /// What the system said.
        cause: std::io::Error,
    },
    /// The file has problems, every one of them listed.
    #[error("{}", describe_problems(path, problems))]
    Invalid {
        /// The configuration file.
        path: PathBuf,
        /// Each problem, by line.
        problems: Vec<Problem>,
    },
}

fn describe_problems(path: &Path, problems: &[Problem]) -> String {
    let count = problems.len();
    let noun = if count == 1 { "problem" } else { "problems" };
    let mut text = format!("{} has {count} {noun}:", path.display());
    for problem in problems {
        let location = format!("{}:{}", path.display(), problem.line);
        match problem.key.as_str() {
            "" => text.push_str(&format!("\n  {location}: {}", problem.message)),
            key => text.push_str(&format!("\n  {location}: {key}: {}", problem.message)),
        }
    }
    text
}

/// Reads and validates the configuration file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_with(path, &SystemAccounts)
}

/// Loads the configuration at `path` as the metadata guard reads it: every problem of the file
/// counts but names that do not resolve, which the guard leaves out with a warning (a name
/// service not up yet at boot must not leave the guard off).
pub fn load_for_guard(path: &Path) -> Result<Config, ConfigError> {
    load_with(path, &AnyName)
}

fn load_with(path: &Path, accounts: &dyn Accounts) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
        path: path.to_owned(),
        cause,
    })?;
    let directory = path.parent().unwrap_or(Path::new("."));
    let host = Host {
        name: &host_name(),
        accounts,
        directory,
    };
    from_toml_on(&text, &host).map_err(|problems| ConfigError::Invalid {
        path: path.to_owned(),
        problems,
    })
}

/// The host name, or an empty string if it cannot be read. `/etc/hostname` is the fallback
/// because the systemd unit's `ProcSubset=pid` hides `/proc/sys`.
fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok())
        .map(|name| name.trim().to_owned())
        .unwrap_or_default()
}

/// Parses and validates configuration text. `host_name` seeds the default session name.
pub fn from_toml(text: &str, host_name: &str) -> Result<Config, Vec<Problem>> {
    from_toml_with(text, host_name, &AnyName)
}

/// Like [`from_toml`], with the keys that must name real users and groups checked against
/// `accounts`.
pub fn from_toml_with(
    text: &str,
    host_name: &str,
    accounts: &dyn Accounts,
) -> Result<Config, Vec<Problem>> {
    let host = Host {
        name: host_name,
        accounts,
        directory: Path::new("."),
    };
    from_toml_on(text, &host)
}

/// What a configuration is read against: the host's name and accounts, and the directory
/// relative paths in it start from (its own).
pub struct Host<'a> {
    /// The host name, for `{host}`.
    pub name: &'a str,
    /// Which users and groups exist.
    pub accounts: &'a dyn Accounts,
    /// The configuration file's directory: a relative `policy` path is read from there.
    pub directory: &'a Path,
}

/// Like [`from_toml`], on `host`.
pub fn from_toml_on(text: &str, host: &Host<'_>) -> Result<Config, Vec<Problem>> {
    let (raw, mut problems) = raw::read(text)?;
    let config = validate::validate(text, &raw, host, &mut problems);
    problems.extend(raw.unknown_keys(text));
    match config {
        Some(config) if problems.is_empty() => Ok(config),
        _ => {
            problems.sort_by_key(|problem| problem.line);
            Err(problems)
        }
    }
}

/// 1-based line number of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests;
