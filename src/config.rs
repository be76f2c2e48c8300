//! Configuration: the TOML file an operator writes, parsed and then validated into [`Config`].
//!
//! Reading happens in three passes over the same text, so that one run reports every problem at
//! once instead of making the operator fix them one by one: a syntax pass that keeps the position of
//! every key (unknown keys are found there, with their line), a serde pass into loosely typed `Raw*`
//! structs whose values remember their position, and a validation pass that turns each raw value
//! into a checked one or a [`Problem`] naming the line and the key. Nothing downstream of
//! [`Config`] ever sees an unchecked value.
//!
//! This module does no I/O except in [`load`]; [`from_toml`] is pure and is what the tests drive.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// Where `serve`, `check` and `env` look for the configuration unless told otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/assume-roled/config.toml";
/// The loopback address served when `[server] listen` is absent.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9357";
/// The token file used when `[server] token_file` is absent.
pub const DEFAULT_TOKEN_FILE: &str = "/var/lib/assume-roled/token";
/// The session length requested from STS when a role names none: one hour is both what clients
/// are tuned for and the cap STS applies when the caller is itself a role session.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(3600);
/// STS refuses `DurationSeconds` outside this range.
const DURATION_RANGE_SECS: std::ops::RangeInclusive<u64> = 900..=43_200;
/// Connections served at once when `[server] max_connections` is absent: far more than a host's
/// tools open, few enough that a local flood cannot exhaust memory or file descriptors.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
const MAX_CONNECTIONS_RANGE: std::ops::RangeInclusive<i64> = 1..=65_536;
/// Role names become one URL path segment, so they stay short and need no escaping.
const MAX_ROLE_NAME_LEN: usize = 64;

/// Keys each table may hold; anything else is reported as unknown. `config.example.toml` must
/// document exactly these (a test checks it), so adding a key means adding it there too.
const TOP_KEYS: &[&str] = &["server", "sts", "imds", "roles"];
const SERVER_KEYS: &[&str] = &[
    "listen",
    "token_file",
    "max_connections",
    "metrics_listen",
    "peer_lookup",
    "peer_processes",
];
const STS_KEYS: &[&str] = &["region", "endpoint"];
const IMDS_KEYS: &[&str] = &["role", "upstream"];
const ROLE_KEYS: &[&str] = &[
    "name",
    "arn",
    "session_name",
    "external_id",
    "source_identity",
    "duration",
    "allowed_users",
    "allowed_groups",
    "token_file",
    "group",
];

/// A validated configuration: every value checked, every default filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub server: ServerConfig,
    pub sts: StsConfig,
    /// The instance-metadata endpoint; `None` (the default) leaves it off.
    pub imds: Option<ImdsConfig>,
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
    pub token_file: PathBuf,
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
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
    pub region: Option<String>,
    pub endpoint: Option<String>,
}

/// `[imds]`: answer as IMDSv2 for one role, passing other metadata through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImdsConfig {
    /// The `name` of the `[[roles]]` entry served under `iam/`.
    pub role: String,
    /// The real instance metadata; `None` means as the SDKs resolve it.
    pub upstream: Option<String>,
}

/// One `[[roles]]` entry: a role in another account, served at `/roles/<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleConfig {
    pub name: String,
    pub arn: RoleArn,
    pub session_name: String,
    pub external_id: Option<String>,
    pub source_identity: Option<String>,
    pub duration: Duration,
    /// If not empty (with `allowed_groups`): only connections from these users (or members
    /// of those groups) get this role, token or not.
    pub allowed_users: Vec<String>,
    pub allowed_groups: Vec<String>,
    /// The role's own token file, so that reading it (membership of `group`) is what grants
    /// this role; `None`: the role is served to holders of the server's token.
    pub token_file: Option<PathBuf>,
    /// The group the role's token file is given to (mode 0640); `None`: the daemon's group
    /// (a file of another group then gets a new token, as when `group` changes).
    pub group: Option<String>,
}

impl RoleConfig {
    /// Whether `other` asks STS for the same session: if so, a reload keeps this role's
    /// credentials and only updates who may have them.
    pub fn same_session(&self, other: &RoleConfig) -> bool {
        (
            &self.name,
            &self.arn,
            &self.session_name,
            &self.external_id,
            &self.source_identity,
            self.duration,
        ) == (
            &other.name,
            &other.arn,
            &other.session_name,
            &other.external_id,
            &other.source_identity,
            other.duration,
        )
    }

    /// Whether a client running as `user`, member of `groups`, may have this role.
    pub fn admits(&self, user: Option<&str>, groups: &[String]) -> bool {
        if self.allowed_users.is_empty() && self.allowed_groups.is_empty() {
            return true;
        }
        let named = user.is_some_and(|user| self.allowed_users.iter().any(|u| u == user));
        named || groups.iter().any(|g| self.allowed_groups.contains(g))
    }
}

/// A syntactically valid IAM role ARN, with its account id split out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleArn {
    arn: String,
    account_id: String,
}

impl RoleArn {
    /// Parses `arn:<partition>:iam::<12 digits>:role/<optional path/><name>`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let expected = "expected arn:aws:iam::<12-digit account id>:role/<role name>";
        let parts: Vec<&str> = text.splitn(6, ':').collect();
        let [arn, partition, service, region, account_id, resource] = parts[..] else {
            return Err(format!("{text:?} is not an ARN; {expected}"));
        };
        let partition_ok = !partition.is_empty()
            && partition
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '-');
        let account_ok = account_id.len() == 12 && account_id.bytes().all(|b| b.is_ascii_digit());
        let role_name = resource
            .strip_prefix("role/")
            .and_then(|r| r.rsplit('/').next());
        let name_ok = role_name.is_some_and(|name| {
            (1..=64).contains(&name.len()) && name.chars().all(is_iam_name_char)
        });
        let path_ok = resource.chars().all(|c| c == '/' || is_iam_name_char(c));
        if arn != "arn" || !partition_ok || service != "iam" || !region.is_empty() {
            return Err(format!("{text:?} is not an IAM ARN; {expected}"));
        }
        if !account_ok {
            return Err(format!(
                "{text:?} has account id {account_id:?}, which is not 12 digits"
            ));
        }
        if !name_ok || !path_ok {
            return Err(format!("{text:?} does not name a role; {expected}"));
        }
        Ok(Self {
            arn: text.to_owned(),
            account_id: account_id.to_owned(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.arn
    }

    /// The account that owns the role, which is the account the credentials act in.
    pub fn account_id(&self) -> &str {
        &self.account_id
    }

    /// The role's IAM name: what follows the last `/` (any path dropped).
    pub fn role_name(&self) -> &str {
        self.as_str().rsplit('/').next().unwrap_or_default()
    }
}

impl fmt::Display for RoleArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.arn)
    }
}

/// One thing wrong with a configuration file, located by line and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    /// Dotted key path such as `roles[0].arn`; empty for syntax errors.
    pub key: String,
    pub message: String,
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration {}: {cause}", path.display())]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{}", describe_problems(path, problems))]
    Invalid {
        path: PathBuf,
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
    let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
        path: path.to_owned(),
        cause,
    })?;
    from_toml(&text, &host_name()).map_err(|problems| ConfigError::Invalid {
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
    let document = DeTable::parse(text).map_err(|error| vec![toml_problem(text, &error)])?;
    let mut problems = unknown_keys(text, document.get_ref());
    let raw: RawConfig = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(error) => {
            problems.push(toml_problem(text, &error));
            return Err(problems);
        }
    };
    let config = validate(text, raw, host_name, &mut problems);
    match config {
        Some(config) if problems.is_empty() => Ok(config),
        _ => {
            problems.sort_by_key(|problem| problem.line);
            Err(problems)
        }
    }
}

fn toml_problem(text: &str, error: &toml::de::Error) -> Problem {
    Problem {
        line: error.span().map_or(1, |span| line_of(text, span.start)),
        key: String::new(),
        message: error.message().trim().to_owned(),
    }
}

/// 1-based line number of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Every key the program does not know, wherever it is. Values of the wrong shape (a string
/// where a table belongs) are left to the serde pass, which reports them.
fn unknown_keys(text: &str, document: &DeTable<'_>) -> Vec<Problem> {
    let mut problems = Vec::new();
    check_keys(text, document, "", TOP_KEYS, &mut problems);
    for (key, value) in document {
        match (key.get_ref().as_ref(), value.get_ref()) {
            ("server", DeValue::Table(table)) => {
                check_keys(text, table, "server.", SERVER_KEYS, &mut problems)
            }
            ("sts", DeValue::Table(table)) => {
                check_keys(text, table, "sts.", STS_KEYS, &mut problems)
            }
            ("imds", DeValue::Table(table)) => {
                check_keys(text, table, "imds.", IMDS_KEYS, &mut problems)
            }
            ("roles", DeValue::Array(roles)) => {
                for (index, role) in roles.iter().enumerate() {
                    if let DeValue::Table(table) = role.get_ref() {
                        let prefix = format!("roles[{index}].");
                        check_keys(text, table, &prefix, ROLE_KEYS, &mut problems);
                    }
                }
            }
            _ => {}
        }
    }
    problems
}

fn check_keys(
    text: &str,
    table: &DeTable<'_>,
    prefix: &str,
    known: &[&str],
    problems: &mut Vec<Problem>,
) {
    for key in table.keys() {
        let name: &str = key.get_ref();
        if !known.contains(&name) {
            problems.push(Problem {
                line: line_of(text, key.span().start),
                key: format!("{prefix}{name}"),
                message: format!("unknown key; expected one of: {}", known.join(", ")),
            });
        }
    }
}

#[derive(Deserialize, Default)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    sts: RawSts,
    imds: Option<Spanned<RawImds>>,
    #[serde(default)]
    roles: Vec<Spanned<RawRole>>,
}

#[derive(Deserialize)]
struct RawImds {
    role: Option<Spanned<String>>,
    upstream: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
struct RawServer {
    listen: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
    max_connections: Option<Spanned<i64>>,
    metrics_listen: Option<Spanned<String>>,
    peer_lookup: Option<bool>,
    peer_processes: Option<bool>,
}

#[derive(Deserialize, Default)]
struct RawSts {
    region: Option<Spanned<String>>,
    endpoint: Option<Spanned<String>>,
}

#[derive(Deserialize)]
struct RawRole {
    name: Option<Spanned<String>>,
    arn: Option<Spanned<String>>,
    session_name: Option<Spanned<String>>,
    external_id: Option<Spanned<String>>,
    source_identity: Option<Spanned<String>>,
    duration: Option<Spanned<String>>,
    allowed_users: Option<Spanned<Vec<String>>>,
    allowed_groups: Option<Spanned<Vec<String>>>,
    token_file: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
}

/// Collects problems while turning raw values into checked ones.
struct Checker<'a> {
    text: &'a str,
    problems: &'a mut Vec<Problem>,
}

impl Checker<'_> {
    /// Applies `check` to an optional raw value; a failure becomes a problem at the value's line.
    fn optional<T>(
        &mut self,
        key: &str,
        raw: Option<&Spanned<String>>,
        check: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<Option<T>> {
        let Some(raw) = raw else { return Some(None) };
        match check(raw.get_ref()) {
            Ok(value) => Some(Some(value)),
            Err(message) => {
                self.report(raw.span().start, key, message);
                None
            }
        }
    }

    /// Like [`Checker::optional`], but an absent value takes `default`.
    fn with_default<T>(
        &mut self,
        key: &str,
        raw: Option<&Spanned<String>>,
        default: T,
        check: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        self.optional(key, raw, check)
            .map(|value| value.unwrap_or(default))
    }

    /// Like [`Checker::optional`], but an absent value is itself a problem at `line_offset`.
    fn required<T>(
        &mut self,
        key: &str,
        raw: Option<&Spanned<String>>,
        line_offset: usize,
        check: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        if raw.is_none() {
            self.report(line_offset, key, "is required".to_owned());
            return None;
        }
        self.optional(key, raw, check).flatten()
    }

    fn report(&mut self, offset: usize, key: &str, message: String) {
        self.problems.push(Problem {
            line: line_of(self.text, offset),
            key: key.to_owned(),
            message,
        });
    }
}

fn validate(
    text: &str,
    raw: RawConfig,
    host_name: &str,
    problems: &mut Vec<Problem>,
) -> Option<Config> {
    let mut checker = Checker { text, problems };
    let server = validate_server(&mut checker, &raw.server);
    let sts = validate_sts(&mut checker, &raw.sts);
    let default_session = session_name_from_host(host_name);
    let mut roles = Vec::with_capacity(raw.roles.len());
    for (index, role) in raw.roles.iter().enumerate() {
        roles.push(validate_role(&mut checker, index, role, &default_session));
    }
    if raw.roles.is_empty() {
        checker.report(
            text.len(),
            "roles",
            "at least one [[roles]] entry is required".into(),
        );
    }
    report_duplicate_names(&mut checker, &raw.roles);
    report_shared_token_files(&mut checker, &raw);
    report_restrictions_without_lookup(&mut checker, &raw);
    let imds = match &raw.imds {
        Some(imds) => Some(validate_imds(&mut checker, imds, &raw.roles)?),
        None => None,
    };
    Some(Config {
        server: server?,
        sts: sts?,
        imds,
        roles: roles.into_iter().collect::<Option<_>>()?,
    })
}

/// `allowed_users` and `allowed_groups` need to know who connects.
fn report_restrictions_without_lookup(checker: &mut Checker<'_>, raw: &RawConfig) {
    if raw.server.peer_lookup != Some(false) {
        return;
    }
    for (index, role) in raw.roles.iter().enumerate() {
        let restrictions = [
            &role.get_ref().allowed_users,
            &role.get_ref().allowed_groups,
        ];
        for list in restrictions.into_iter().flatten() {
            let message = "needs server.peer_lookup, which is false".to_owned();
            checker.report(
                list.span().start,
                &format!("roles[{index}].allowed_*"),
                message,
            );
        }
    }
}

fn validate_server(checker: &mut Checker<'_>, raw: &RawServer) -> Option<ServerConfig> {
    let default_listen = DEFAULT_LISTEN
        .parse()
        .expect("default listen address parses");
    let listen = checker.with_default(
        "server.listen",
        raw.listen.as_ref(),
        default_listen,
        parse_listen,
    );
    let token_file = checker.with_default(
        "server.token_file",
        raw.token_file.as_ref(),
        PathBuf::from(DEFAULT_TOKEN_FILE),
        parse_token_file,
    );
    let max_connections = match &raw.max_connections {
        None => Some(DEFAULT_MAX_CONNECTIONS),
        Some(value) if MAX_CONNECTIONS_RANGE.contains(value.get_ref()) => {
            Some(*value.get_ref() as usize)
        }
        Some(value) => {
            let (min, max) = (MAX_CONNECTIONS_RANGE.start(), MAX_CONNECTIONS_RANGE.end());
            let message = format!("{} is outside {min} to {max}", value.get_ref());
            checker.report(value.span().start, "server.max_connections", message);
            None
        }
    };
    let metrics_listen = checker.optional(
        "server.metrics_listen",
        raw.metrics_listen.as_ref(),
        parse_listen,
    );
    Some(ServerConfig {
        listen: listen?,
        token_file: token_file?,
        max_connections: max_connections?,
        metrics_listen: metrics_listen?,
        // On: one sock_diag question per connection costs microseconds, and the audit log
        // names the user.
        peer_lookup: raw.peer_lookup.unwrap_or(true),
        peer_processes: raw.peer_processes.unwrap_or(false),
    })
}

fn validate_sts(checker: &mut Checker<'_>, raw: &RawSts) -> Option<StsConfig> {
    let region = checker.optional("sts.region", raw.region.as_ref(), parse_region);
    let endpoint = checker.optional("sts.endpoint", raw.endpoint.as_ref(), parse_endpoint);
    Some(StsConfig {
        region: region?,
        endpoint: endpoint?,
    })
}

fn validate_imds(
    checker: &mut Checker<'_>,
    raw: &Spanned<RawImds>,
    roles: &[Spanned<RawRole>],
) -> Option<ImdsConfig> {
    let imds = raw.get_ref();
    let names: Vec<&str> = roles
        .iter()
        .filter_map(|role| role.get_ref().name.as_ref().map(|n| n.get_ref().as_str()))
        .collect();
    let role = checker.required("imds.role", imds.role.as_ref(), raw.span().start, |name| {
        if unguarded_own_token(roles, name) {
            Err(format!(
                "role {name:?} has its own token_file, but the metadata endpoint serves it \
                 without that token, to any local process; serve another role, or restrict \
                 this one with allowed_users / allowed_groups"
            ))
        } else if names.contains(&name) {
            Ok(name.to_owned())
        } else {
            Err(format!(
                "{name:?} is not the name of a [[roles]] entry ({})",
                names.join(", ")
            ))
        }
    });
    let upstream = checker.optional("imds.upstream", imds.upstream.as_ref(), parse_endpoint);
    Some(ImdsConfig {
        role: role?,
        upstream: upstream?,
    })
}

/// Whether role `name` relies on its own token file alone to decide who gets it.
fn unguarded_own_token(roles: &[Spanned<RawRole>], name: &str) -> bool {
    roles.iter().map(Spanned::get_ref).any(|role| {
        role.name.as_ref().is_some_and(|n| n.get_ref() == name)
            && role.token_file.is_some()
            && role.allowed_users.is_none()
            && role.allowed_groups.is_none()
    })
}

fn validate_role(
    checker: &mut Checker<'_>,
    index: usize,
    raw: &Spanned<RawRole>,
    default_session: &str,
) -> Option<RoleConfig> {
    let start = raw.span().start;
    let role = raw.get_ref();
    let key = |name: &str| format!("roles[{index}].{name}");
    let name = checker.required(&key("name"), role.name.as_ref(), start, parse_role_name);
    let arn = checker.required(&key("arn"), role.arn.as_ref(), start, RoleArn::parse);
    let session_name = checker.with_default(
        &key("session_name"),
        role.session_name.as_ref(),
        default_session.to_owned(),
        parse_session_name,
    );
    let external_id = checker.optional(
        &key("external_id"),
        role.external_id.as_ref(),
        parse_external_id,
    );
    let source_identity = checker.optional(
        &key("source_identity"),
        role.source_identity.as_ref(),
        parse_source_identity,
    );
    let duration = checker.with_default(
        &key("duration"),
        role.duration.as_ref(),
        DEFAULT_DURATION,
        parse_session_duration,
    );
    let allowed_users = names(checker, &key("allowed_users"), role.allowed_users.as_ref());
    let allowed_groups = names(
        checker,
        &key("allowed_groups"),
        role.allowed_groups.as_ref(),
    );
    let token_file = checker.optional(
        &key("token_file"),
        role.token_file.as_ref(),
        parse_token_file,
    );
    let group = checker.optional(&key("group"), role.group.as_ref(), |name| {
        if !is_account_name(name) {
            return Err(format!("{name:?} is not a group name"));
        }
        Ok(name.to_owned())
    });
    if let (Some(group), None) = (&role.group, &role.token_file) {
        let message = format!(
            "needs {}: the group is given the role's own token file",
            key("token_file")
        );
        checker.report(group.span().start, &key("group"), message);
    }
    Some(RoleConfig {
        name: name?,
        arn: arn?,
        session_name: session_name?,
        external_id: external_id?,
        source_identity: source_identity?,
        duration: duration?,
        allowed_users: allowed_users?,
        allowed_groups: allowed_groups?,
        token_file: token_file?,
        group: group?,
    })
}

/// A list of user or group names, each as `useradd` and `groupadd` accept them.
fn names(
    checker: &mut Checker<'_>,
    key: &str,
    raw: Option<&Spanned<Vec<String>>>,
) -> Option<Vec<String>> {
    let Some(raw) = raw else {
        return Some(Vec::new());
    };
    match raw.get_ref().iter().find(|name| !is_account_name(name)) {
        Some(bad) => {
            checker.report(
                raw.span().start,
                key,
                format!("{bad:?} is not a user or group name"),
            );
            None
        }
        None => Some(raw.get_ref().clone()),
    }
}

/// Whether `name` is a user or group name as `useradd` and `groupadd` accept it.
fn is_account_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    first_ok
        && name.len() <= 32
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.'))
}

/// A role's own token file must be its own: shared with the server or another role, reading it
/// would grant more than that role.
fn report_shared_token_files(checker: &mut Checker<'_>, raw: &RawConfig) {
    let server_file = raw
        .server
        .token_file
        .as_ref()
        .map_or(DEFAULT_TOKEN_FILE, |file| file.get_ref().as_str());
    let mut seen = BTreeSet::from([server_file]);
    for (index, role) in raw.roles.iter().enumerate() {
        if let Some(file) = &role.get_ref().token_file
            && !seen.insert(file.get_ref().as_str())
        {
            let message = format!(
                "{:?} is already the token file of the server or another role; \
                 each role's own token file must be its own",
                file.get_ref()
            );
            checker.report(
                file.span().start,
                &format!("roles[{index}].token_file"),
                message,
            );
        }
    }
}

fn report_duplicate_names(checker: &mut Checker<'_>, roles: &[Spanned<RawRole>]) {
    let mut seen = BTreeSet::new();
    for (index, role) in roles.iter().enumerate() {
        if let Some(name) = &role.get_ref().name
            && !seen.insert(name.get_ref().as_str())
        {
            let message = format!("role name {:?} is used more than once", name.get_ref());
            checker.report(name.span().start, &format!("roles[{index}].name"), message);
        }
    }
}

fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    let address: SocketAddr = text
        .parse()
        .map_err(|_| format!("{text:?} is not an address such as \"{DEFAULT_LISTEN}\""))?;
    if !address.ip().is_loopback() {
        return Err(format!(
            "{text:?} is not a loopback address; credentials are served on loopback only \
             (use 127.0.0.1:<port>)"
        ));
    }
    Ok(address)
}

fn parse_token_file(text: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(text);
    if !path.is_absolute() || path.file_name().is_none() {
        return Err(format!("{text:?} is not an absolute file path"));
    }
    Ok(path)
}

fn parse_region(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        return Err(format!(
            "{text:?} is not a region name such as \"ap-northeast-1\""
        ));
    }
    Ok(text.to_owned())
}

fn parse_endpoint(text: &str) -> Result<String, String> {
    let rest = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => {
            Ok(text.to_owned())
        }
        _ => Err(format!("{text:?} is not an http:// or https:// URL")),
    }
}

fn parse_role_name(text: &str) -> Result<String, String> {
    let valid = (1..=MAX_ROLE_NAME_LEN).contains(&text.len())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && text != "."
        && text != "..";
    if !valid {
        return Err(format!(
            "{text:?} is not a role name: use 1 to {MAX_ROLE_NAME_LEN} letters, digits, '-', '_' or '.'"
        ));
    }
    Ok(text.to_owned())
}

/// Characters IAM and STS accept in role names and session names (`[\w+=,.@-]`).
fn is_iam_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '=' | ',' | '.' | '@' | '-')
}

fn parse_session_name(text: &str) -> Result<String, String> {
    if !(2..=64).contains(&text.len()) || !text.chars().all(is_iam_name_char) {
        return Err(format!(
            "{text:?} is not a session name: STS wants 2 to 64 of letters, digits and +=,.@_-"
        ));
    }
    Ok(text.to_owned())
}

fn parse_external_id(text: &str) -> Result<String, String> {
    let valid = (2..=1224).contains(&text.len())
        && text
            .chars()
            .all(|c| is_iam_name_char(c) || c == ':' || c == '/');
    if !valid {
        // The value is deliberately not echoed: external ids are often treated as secrets.
        return Err(
            "is not an external id: STS wants 2 to 1224 of letters, digits and +=,.@:/_-"
                .to_owned(),
        );
    }
    Ok(text.to_owned())
}

fn parse_source_identity(text: &str) -> Result<String, String> {
    if text.starts_with("aws:") {
        return Err(format!("{text:?} starts with \"aws:\", which STS reserves"));
    }
    parse_session_name(text).map_err(|_| {
        format!(
            "{text:?} is not a source identity: STS wants 2 to 64 of letters, digits and +=,.@_-"
        )
    })
}

/// Parses durations such as `1h`, `90m`, `3600s` or `1h30m`, within what STS accepts.
fn parse_session_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text).ok_or_else(|| {
        format!("{text:?} is not a duration such as \"1h\", \"45m\" or \"3600s\"")
    })?;
    let (min, max) = (DURATION_RANGE_SECS.start(), DURATION_RANGE_SECS.end());
    if !DURATION_RANGE_SECS.contains(&duration.as_secs()) {
        return Err(format!(
            "{text:?} is outside what STS accepts ({}m to {}h)",
            min / 60,
            max / 3600
        ));
    }
    Ok(duration)
}

/// Parses a sequence of `<digits><unit>` groups, unit one of `h`, `m`, `s`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        let amount: u64 = digits.parse().ok()?;
        total = total.checked_add(amount.checked_mul(unit)?)?;
        digits.clear();
    }
    (digits.is_empty() && !text.is_empty()).then(|| Duration::from_secs(total))
}

/// A session name derived from the host name: STS shows it in CloudTrail, so it should say
/// which host made the call. Characters STS refuses become `-`.
pub fn session_name_from_host(host_name: &str) -> String {
    let cleaned: String = host_name
        .chars()
        .map(|c| if is_iam_name_char(c) { c } else { '-' })
        .take(64)
        .collect();
    if cleaned.len() < 2 {
        "assume-roled".to_owned()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[[roles]]
name = "piyo"
arn = "arn:aws:iam::444455556666:role/piyo-role"
"#;

    fn problems(text: &str) -> Vec<Problem> {
        from_toml(text, "host").expect_err("config should be refused")
    }

    #[test]
    fn minimal_config_takes_defaults() {
        let config = from_toml(MINIMAL, "ip-10-0-0-1.ec2.internal").unwrap();
        assert_eq!(config.server.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.server.token_file, PathBuf::from(DEFAULT_TOKEN_FILE));
        assert_eq!(config.server.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert!(
            config.server.peer_lookup,
            "the audit log names users by default"
        );
        assert_eq!(config.sts, StsConfig::default());
        let role = &config.roles[0];
        assert_eq!(role.name, "piyo");
        assert_eq!(role.arn.account_id(), "444455556666");
        assert_eq!(role.session_name, "ip-10-0-0-1.ec2.internal");
        assert_eq!(role.duration, DEFAULT_DURATION);
        assert_eq!(role.external_id, None);
    }

    /// The example shipped to users parses, and documents every key the program knows.
    #[test]
    fn example_config_parses_and_documents_every_key() {
        let text = include_str!("../config.example.toml");
        let config = from_toml(text, "host").expect("config.example.toml is valid");
        assert!(!config.roles.is_empty());
        let document = DeTable::parse(text).unwrap();
        let mut seen = BTreeSet::new();
        for (key, value) in document.get_ref() {
            seen.insert(key.get_ref().to_string());
            let tables: Vec<&DeTable<'_>> = match value.get_ref() {
                DeValue::Table(table) => vec![table],
                DeValue::Array(array) => array
                    .iter()
                    .filter_map(|v| v.get_ref().as_table())
                    .collect(),
                _ => vec![],
            };
            for table in tables {
                for inner in table.keys() {
                    seen.insert(format!("{}.{}", key.get_ref(), inner.get_ref()));
                }
            }
        }
        let mut known: BTreeSet<String> = TOP_KEYS.iter().map(|k| k.to_string()).collect();
        for (table, keys) in [
            ("server", SERVER_KEYS),
            ("sts", STS_KEYS),
            ("imds", IMDS_KEYS),
            ("roles", ROLE_KEYS),
        ] {
            known.extend(keys.iter().map(|k| format!("{table}.{k}")));
        }
        assert_eq!(seen, known);
    }

    /// The starter configuration `make install` puts in /etc is valid as shipped.
    #[test]
    fn installed_starter_config_parses() {
        let config = from_toml(include_str!("../systemd/config.toml"), "host").unwrap();
        assert_eq!(config.server.token_file, PathBuf::from(DEFAULT_TOKEN_FILE));
        assert!(config.imds.is_none());
    }

    #[test]
    fn every_problem_is_listed_at_once_with_line_and_key() {
        let text = r#"[server]
listen = "0.0.0.0:9357"
colour = "blue"

[[roles]]
name = "piyo"
arn = "arn:aws:iam::4444:role/piyo-role"
session_name = "has space"

[[roles]]
name = "piyo"
arn = "arn:aws:iam::444455556666:role/other"
duration = "5m"
"#;
        let found: Vec<(usize, String)> = problems(text)
            .into_iter()
            .map(|p| (p.line, p.key))
            .collect();
        assert_eq!(
            found,
            vec![
                (2, "server.listen".to_owned()),
                (3, "server.colour".to_owned()),
                (7, "roles[0].arn".to_owned()),
                (8, "roles[0].session_name".to_owned()),
                (11, "roles[1].name".to_owned()),
                (13, "roles[1].duration".to_owned()),
            ]
        );
    }

    #[test]
    fn report_names_file_line_and_key() {
        let error = ConfigError::Invalid {
            path: PathBuf::from("/etc/assume-roled/config.toml"),
            problems: problems("[sts]\nregion = \"Tokyo\"\n"),
        };
        let text = error.to_string();
        assert!(
            text.contains("/etc/assume-roled/config.toml:2: sts.region:"),
            "{text}"
        );
        assert!(
            text.contains("roles: at least one [[roles]] entry"),
            "{text}"
        );
    }

    #[test]
    fn syntax_and_type_errors_have_lines() {
        let syntax = problems("[server\nlisten = 1\n");
        assert_eq!(syntax[0].line, 1);
        let wrong_type = problems("[server]\n\nlisten = 9357\n");
        assert_eq!(wrong_type.last().unwrap().line, 3);
        assert!(wrong_type.last().unwrap().message.contains("string"));
    }

    #[test]
    fn imds_must_name_a_configured_role() {
        let config = from_toml(&format!("[imds]\nrole = \"piyo\"\n{MINIMAL}"), "h").unwrap();
        assert_eq!(config.imds.unwrap().role, "piyo");
        let found = problems(&format!("[imds]\nrole = \"fuga\"\n{MINIMAL}"));
        assert_eq!((found[0].line, found[0].key.as_str()), (2, "imds.role"));
        assert!(from_toml(MINIMAL, "h").unwrap().imds.is_none());
    }

    #[test]
    fn max_connections_range() {
        let with = |n: &str| from_toml(&format!("[server]\nmax_connections = {n}\n{MINIMAL}"), "h");
        assert_eq!(with("8").unwrap().server.max_connections, 8);
        let found = with("0").unwrap_err();
        assert_eq!(
            (found[0].line, found[0].key.as_str()),
            (2, "server.max_connections")
        );
        assert!(with("\"many\"").is_err());
    }

    #[test]
    fn restrictions_need_peer_lookup() {
        let text = format!("[server]\npeer_lookup = false\n{MINIMAL}allowed_users = [\"hoge\"]\n");
        let found = problems(&text);
        assert_eq!(
            (found[0].line, found[0].key.as_str()),
            (7, "roles[0].allowed_*")
        );
        let allowed = from_toml(&format!("{MINIMAL}allowed_groups = [\"ops\"]\n"), "h").unwrap();
        assert!(allowed.roles[0].admits(Some("x"), &["ops".to_owned()]));
        assert!(!allowed.roles[0].admits(Some("ops"), &[]));
        assert!(!allowed.roles[0].admits(None, &[]));
        assert!(problems(&format!("{MINIMAL}allowed_users = [\"Not A Name\"]\n")).len() == 1);
    }

    #[test]
    fn role_token_files_are_their_own_and_groups_need_one() {
        let own = format!("{MINIMAL}token_file = \"/srv/piyo.token\"\ngroup = \"piyo-users\"\n");
        let config = from_toml(&own, "h").unwrap();
        let role = &config.roles[0];
        assert_eq!(role.group.as_deref(), Some("piyo-users"));
        assert_eq!(config.token_file_of(role), Path::new("/srv/piyo.token"));
        let shared = from_toml(MINIMAL, "h").unwrap();
        assert_eq!(
            shared.token_file_of(&shared.roles[0]),
            Path::new(DEFAULT_TOKEN_FILE)
        );

        let found = problems(&format!("{MINIMAL}group = \"piyo-users\"\n"));
        assert_eq!(
            (found[0].line, found[0].key.as_str()),
            (5, "roles[0].group")
        );
        assert!(found[0].message.contains("needs roles[0].token_file"));
        let found = problems(&format!("{MINIMAL}token_file = \"{DEFAULT_TOKEN_FILE}\"\n"));
        assert_eq!(found[0].key, "roles[0].token_file");
        assert!(
            found[0].message.contains("must be its own"),
            "{}",
            found[0].message
        );
        let two = format!(
            "{own}{}token_file = \"/srv/piyo.token\"\n",
            MINIMAL.replace("piyo\"", "other\"")
        );
        assert_eq!(problems(&two)[0].key, "roles[1].token_file");
        assert_eq!(
            problems(&format!("{MINIMAL}token_file = \"relative\"\n"))[0].key,
            "roles[0].token_file"
        );
        assert_eq!(
            problems(&format!(
                "{MINIMAL}token_file = \"/t\"\ngroup = \"Bad Group\"\n"
            ))[0]
                .key,
            "roles[0].group"
        );
    }

    #[test]
    fn metadata_cannot_bypass_a_role_token() {
        let own = format!("{MINIMAL}token_file = \"/srv/piyo.token\"\n");
        let found = problems(&format!("[imds]\nrole = \"piyo\"\n{own}"));
        assert_eq!((found[0].line, found[0].key.as_str()), (2, "imds.role"));
        assert!(
            found[0].message.contains("allowed_groups"),
            "{}",
            found[0].message
        );
        let guarded = format!("[imds]\nrole = \"piyo\"\n{own}allowed_groups = [\"ops\"]\n");
        assert!(from_toml(&guarded, "h").is_ok());
    }

    #[test]
    fn reload_keeps_sessions_whose_sts_settings_are_unchanged() {
        let before = from_toml(MINIMAL, "h").unwrap().roles.remove(0);
        let mut after = before.clone();
        after.allowed_groups = vec!["ops".to_owned()];
        after.token_file = Some(PathBuf::from("/srv/t"));
        assert!(before.same_session(&after));
        after.session_name = "other".to_owned();
        assert!(!before.same_session(&after));
    }

    #[test]
    fn missing_required_keys_point_at_the_role() {
        let found = problems("[sts]\n\n[[roles]]\nname = \"a1\"\n");
        assert_eq!((found[0].line, found[0].key.as_str()), (3, "roles[0].arn"));
        assert_eq!(found[0].message, "is required");
    }

    #[test]
    fn listen_must_be_loopback() {
        assert!(parse_listen("127.0.0.1:0").is_ok());
        assert!(parse_listen("[::1]:9357").is_ok());
        assert!(parse_listen("0.0.0.0:9357").is_err());
        assert!(parse_listen("10.0.0.5:9357").is_err());
        assert!(parse_listen("localhost:9357").is_err());
    }

    #[test]
    fn role_arns() {
        let arn = RoleArn::parse("arn:aws:iam::444455556666:role/team/piyo-role").unwrap();
        assert_eq!(arn.account_id(), "444455556666");
        assert!(RoleArn::parse("arn:aws-cn:iam::444455556666:role/x").is_ok());
        for bad in [
            "piyo-role",
            "arn:aws:iam::444455556666:user/piyo",
            "arn:aws:iam::44445555666:role/piyo",
            "arn:aws:sts::444455556666:role/piyo",
            "arn:aws:iam:us-east-1:444455556666:role/piyo",
            "arn:aws:iam::444455556666:role/",
            "arn:aws:iam::444455556666:role/pi yo",
        ] {
            assert!(RoleArn::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("900s"), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("15"), None);
        assert_eq!(parse_duration(""), None);
        assert_eq!(parse_duration("1d"), None);
        assert!(parse_session_duration("12h").is_ok());
        assert!(parse_session_duration("14m").is_err());
        assert!(parse_session_duration("13h").is_err());
    }

    #[test]
    fn session_names_from_host_names() {
        assert_eq!(
            session_name_from_host("web-1.example.com"),
            "web-1.example.com"
        );
        assert_eq!(session_name_from_host("host name/x"), "host-name-x");
        assert_eq!(session_name_from_host(""), "assume-roled");
        assert_eq!(session_name_from_host(&"h".repeat(100)).len(), 64);
        assert!(parse_session_name(&session_name_from_host("ö")).is_ok());
    }

    #[test]
    fn external_id_is_not_echoed() {
        let found = problems(&format!("{MINIMAL}external_id = \"secret value!\"\n"));
        assert!(!found[0].message.contains("secret"), "{:?}", found[0]);
    }
}
