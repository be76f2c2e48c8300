//! From raw values to checked ones: each key is checked by one line of its table's
//! `validate_*` function, which also makes the key known ([`RawTable::get`]); every failure
//! becomes a [`Problem`] at the value's line; checks between keys (duplicate names, shared
//! token files, restrictions that need the peer lookup, the metadata role) run after. A bad
//! value is reported and replaced by its default, so that validation goes on and the operator
//! sees every problem at once; a configuration with any problem is never returned.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use toml::{Spanned, Value};

use super::raw::{RawConfig, RawTable};
use super::values::{
    Network, RoleArn, is_account_name, is_iam_name_char, is_tag_char, parse_container_listen,
    parse_endpoint, parse_external_id, parse_listen, parse_region, parse_role_name,
    parse_session_duration, parse_session_name, parse_source_identity, parse_token_file,
    session_name_from_host,
};
use super::{
    Accounts, Config, ContainersConfig, DEFAULT_AUDIT_LINES_PER_MINUTE, DEFAULT_DURATION,
    DEFAULT_LISTEN, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_USER,
    DEFAULT_MAX_SESSIONS, DEFAULT_TOKEN_FILE, Form, GuardMode, Host, ImdsConfig, Problem,
    RoleConfig, ServerConfig, SessionPolicy, StsConfig, Template, line_of,
};

const MAX_CONNECTIONS_RANGE: RangeInclusive<i64> = 1..=65_536;
const MAX_SESSIONS_RANGE: RangeInclusive<i64> = 1..=65_536;

/// Collects problems while turning raw values into checked ones.
struct Checker<'a> {
    text: &'a str,
    accounts: &'a dyn Accounts,
    /// Where a relative `policy` path starts.
    directory: &'a Path,
    problems: &'a mut Vec<Problem>,
}

impl Checker<'_> {
    fn report(&mut self, offset: usize, key: &str, message: String) {
        self.problems.push(Problem {
            line: line_of(self.text, offset),
            key: key.to_owned(),
            message,
        });
    }

    /// `table.key` as a value of type `kind` (`extract` finds it), or `None` if absent; a value
    /// of another type is reported.
    fn typed<'v, T>(
        &mut self,
        table: &'v RawTable,
        key: &'static str,
        kind: &str,
        extract: impl FnOnce(&'v Value) -> Option<T>,
    ) -> Option<(T, usize)> {
        let raw = table.get(key)?;
        let offset = raw.span().start;
        match extract(raw.get_ref()) {
            Some(value) => Some((value, offset)),
            None => {
                let found = raw.get_ref().type_str();
                let message = format!("expected {kind}, found {found}");
                self.report(offset, &table.path(key), message);
                None
            }
        }
    }

    /// A string checked by `parse`; `None` if absent or reported.
    fn optional<T>(
        &mut self,
        table: &RawTable,
        key: &'static str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let (text, offset) = self.typed(table, key, "a string", Value::as_str)?;
        parse(text)
            .map_err(|message| self.report(offset, &table.path(key), message))
            .ok()
    }

    /// Like [`Checker::optional`], with `default` when absent or reported.
    fn or_default<T>(
        &mut self,
        table: &RawTable,
        key: &'static str,
        default: T,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> T {
        self.optional(table, key, parse).unwrap_or(default)
    }

    /// Like [`Checker::optional`], but an absent value is itself a problem, at the table.
    fn required<T>(
        &mut self,
        table: &RawTable,
        key: &'static str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        if table.get(key).is_none() {
            let message = "is required".to_owned();
            self.report(table.start(), &table.path(key), message);
        }
        self.optional(table, key, parse)
    }

    fn flag(&mut self, table: &RawTable, key: &'static str, default: bool) -> bool {
        self.typed(table, key, "true or false", Value::as_bool)
            .map_or(default, |(value, _)| value)
    }

    fn count(
        &mut self,
        table: &RawTable,
        key: &'static str,
        range: RangeInclusive<i64>,
        default: usize,
    ) -> usize {
        let Some((value, offset)) = self.typed(table, key, "an integer", Value::as_integer) else {
            return default;
        };
        if range.contains(&value) {
            return value as usize;
        }
        let message = format!("{value} is outside {} to {}", range.start(), range.end());
        self.report(offset, &table.path(key), message);
        default
    }

    /// A list of strings, each checked by `parse`; empty if absent or reported.
    fn list<T>(
        &mut self,
        table: &RawTable,
        key: &'static str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Vec<T> {
        let kind = "a list of strings";
        let Some((items, offset)) = self.typed(table, key, kind, Value::as_array) else {
            return Vec::new();
        };
        let mut parsed = Vec::new();
        for item in items {
            let checked = match item.as_str() {
                Some(text) => parse(text),
                None => Err(format!(
                    "expected {kind}, found {} in the list",
                    item.type_str()
                )),
            };
            match checked {
                Ok(value) => parsed.push(value),
                Err(message) => {
                    self.report(offset, &table.path(key), message);
                    return Vec::new();
                }
            }
        }
        parsed
    }

    /// A list of user or group names, each as `useradd` and `groupadd` accept them.
    fn names(&mut self, table: &RawTable, key: &'static str) -> Vec<String> {
        let Some((items, offset)) = self.typed(table, key, "a list of names", Value::as_array)
        else {
            return Vec::new();
        };
        let strings = items.iter().map(|item| item.as_str().map(str::to_owned));
        let Some(names) = strings.collect::<Option<Vec<String>>>() else {
            let other = items.iter().find(|item| !item.is_str());
            let found = other.map_or("something else", Value::type_str);
            let message = format!("expected a list of names, found {found} in the list");
            self.report(offset, &table.path(key), message);
            return Vec::new();
        };
        if let Some(bad) = names.iter().find(|name| !is_account_name(name)) {
            let message = format!("{bad:?} is not a user or group name");
            self.report(offset, &table.path(key), message);
            return Vec::new();
        }
        names
    }

    /// Like [`Checker::names`], each of which must exist (as a user, or as a group).
    fn existing(&mut self, table: &RawTable, key: &'static str, kind: NameKind) -> Vec<String> {
        let names = self.names(table, key);
        let exists = |name: &str| match kind {
            NameKind::User => self.accounts.user_exists(name),
            NameKind::Group => self.accounts.group_exists(name),
        };
        let unknown: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| !exists(n))
            .collect();
        if let (false, Some(raw)) = (unknown.is_empty(), table.get(key)) {
            let kind = match kind {
                NameKind::User => "user",
                NameKind::Group => "group",
            };
            let message = format!("no such {kind} on this host: {}", unknown.join(", "));
            self.report(raw.span().start, &table.path(key), message);
            return Vec::new();
        }
        names
    }
}

/// What a list of names names.
#[derive(Clone, Copy)]
enum NameKind {
    User,
    Group,
}

/// Checks every table of `raw`, adding each problem to `problems`; `None` when a required value
/// is missing (there is then a problem saying so).
pub(super) fn validate(
    text: &str,
    raw: &RawConfig,
    host: &Host<'_>,
    problems: &mut Vec<Problem>,
) -> Option<Config> {
    let mut checker = Checker {
        text,
        accounts: host.accounts,
        directory: host.directory,
        problems,
    };
    let host_name = host.name;
    let server = validate_server(&mut checker, &raw.server);
    let sts = validate_sts(&mut checker, &raw.sts);
    let roles: Vec<Option<RoleConfig>> = (raw.roles.iter())
        .map(|role| validate_role(&mut checker, role, host_name))
        .collect();
    if raw.roles.is_empty() {
        let message = "at least one [[roles]] entry is required".to_owned();
        checker.report(text.len(), "roles", message);
    }
    report_duplicate_names(&mut checker, &raw.roles);
    report_shared_token_files(&mut checker, raw);
    report_restrictions_without_lookup(&mut checker, raw);
    report_sessions_without_lookup(&mut checker, raw, &roles);
    let imds = match &raw.imds {
        Some(table) => Some(validate_imds(
            &mut checker,
            table,
            &raw.roles,
            server.listen,
        )?),
        None => None,
    };
    let containers = (raw.containers.as_ref())
        .map(|table| validate_containers(&mut checker, table, raw, imds.as_ref()));
    Some(Config {
        server,
        sts,
        imds,
        containers,
        roles: roles.into_iter().collect::<Option<_>>()?,
    })
}

fn validate_server(checker: &mut Checker<'_>, raw: &RawTable) -> ServerConfig {
    let default_listen: SocketAddr = DEFAULT_LISTEN.parse().expect("the default parses");
    let default_token_file = PathBuf::from(DEFAULT_TOKEN_FILE);
    let max = MAX_CONNECTIONS_RANGE;
    ServerConfig {
        listen: checker.or_default(raw, "listen", default_listen, parse_listen),
        token_file: checker.or_default(raw, "token_file", default_token_file, parse_token_file),
        max_connections: checker.count(
            raw,
            "max_connections",
            max.clone(),
            DEFAULT_MAX_CONNECTIONS,
        ),
        max_connections_per_user: checker.count(
            raw,
            "max_connections_per_user",
            max,
            DEFAULT_MAX_CONNECTIONS_PER_USER,
        ),
        audit_lines_per_minute: checker.count(
            raw,
            "audit_lines_per_minute",
            1..=1_000_000,
            DEFAULT_AUDIT_LINES_PER_MINUTE,
        ) as u64,
        metrics_listen: checker.optional(raw, "metrics_listen", parse_listen),
        // On: one sock_diag question per connection costs microseconds, and the audit log
        // names the user.
        peer_lookup: checker.flag(raw, "peer_lookup", true),
        peer_processes: checker.flag(raw, "peer_processes", false),
    }
}

fn validate_sts(checker: &mut Checker<'_>, raw: &RawTable) -> StsConfig {
    StsConfig {
        region: checker.optional(raw, "region", parse_region),
        endpoint: checker.optional(raw, "endpoint", parse_endpoint),
    }
}

fn validate_imds(
    checker: &mut Checker<'_>,
    raw: &RawTable,
    roles: &[RawTable],
    listen: SocketAddr,
) -> Option<ImdsConfig> {
    let names: Vec<&str> = roles.iter().filter_map(|role| role.str("name")).collect();
    let role = checker.required(raw, "role", |name| {
        if !names.contains(&name) {
            Err(format!(
                "{name:?} is not the name of a [[roles]] entry ({})",
                names.join(", ")
            ))
        } else if !restricted(roles, name) {
            Err(format!(
                "role {name:?} would be served as instance metadata, which carries no token: \
                 any local process could have it; restrict the role with allowed_users or \
                 allowed_groups"
            ))
        } else {
            Ok(name.to_owned())
        }
    });
    let upstream = checker.optional(raw, "upstream", parse_endpoint);
    let guard = checker.optional(raw, "guard", parse_guard_mode);
    if let (Some(GuardMode::Redirect), Some(value)) = (guard, raw.get("guard"))
        && let Err(message) = redirect_target(listen)
    {
        checker.report(value.span().start, &raw.path("guard"), message);
    }
    let exempt_users = checker.existing(raw, "exempt_users", NameKind::User);
    let exempt_groups = checker.existing(raw, "exempt_groups", NameKind::Group);
    Some(ImdsConfig {
        role: role?,
        upstream,
        guard,
        exempt_users,
        exempt_groups,
    })
}

/// Where `guard = "redirect"` sends metadata traffic: the daemon's own listener, exactly, so
/// that no other user can receive it on another address of the same port. Only a specific
/// IPv4 address can be the destination of IPv4 traffic.
pub fn redirect_target(listen: SocketAddr) -> Result<std::net::SocketAddrV4, String> {
    match listen {
        SocketAddr::V4(v4) if !v4.ip().is_unspecified() => Ok(v4),
        _ => Err(format!(
            "\"redirect\" sends IPv4 metadata traffic to server.listen, which must then be one \
             IPv4 address (it is {listen}); use \"block\", or listen on 127.0.0.1"
        )),
    }
}

/// Whether role `name` is restricted to named users, groups or networks.
fn restricted(roles: &[RawTable], name: &str) -> bool {
    roles.iter().any(|role| {
        role.str("name") == Some(name)
            && ["allowed_users", "allowed_groups", "allowed_networks"]
                .iter()
                .any(|key| names_someone(role.get(key)))
    })
}

fn validate_containers(
    checker: &mut Checker<'_>,
    raw: &RawTable,
    config: &RawConfig,
    imds: Option<&ImdsConfig>,
) -> ContainersConfig {
    let listen = checker.list(raw, "listen", parse_container_listen);
    if let Some(value) = raw.get("listen")
        && listen.is_empty()
        && value.get_ref().as_array().is_some_and(Vec::is_empty)
    {
        let message = "is empty: name at least one address".to_owned();
        checker.report(value.span().start, &raw.path("listen"), message);
    }
    if raw.get("listen").is_none() {
        let message = "is required: where containers reach the daemon, e.g. \
                       [\"169.254.170.23:80\", \"[fd00:ec2::23]:80\"]";
        checker.report(raw.start(), &raw.path("listen"), message.to_owned());
    }
    let mode = checker.optional(raw, "imds", parse_guard_mode);
    if let (Some(GuardMode::Redirect), Some(value)) = (mode, raw.get("imds")) {
        let role = imds.map(|imds| imds.role.as_str());
        let networked = role.is_some_and(|name| {
            (config.roles.iter())
                .any(|r| r.str("name") == Some(name) && names_someone(r.get("allowed_networks")))
        });
        if !networked {
            let message = "\"redirect\" answers containers with the [imds] role, which must \
                           name the containers that may have it (allowed_networks)";
            checker.report(value.span().start, &raw.path("imds"), message.to_owned());
        }
        if !listen.is_empty() && !listen.iter().any(SocketAddr::is_ipv4) {
            let message = "\"redirect\" sends IPv4 metadata traffic to an IPv4 listen address, \
                           and there is none";
            checker.report(value.span().start, &raw.path("imds"), message.to_owned());
        }
    }
    // A host process can reach the container address too, from any of the host's addresses:
    // only the peer lookup tells it from a container.
    let lookup = config.server.get("peer_lookup");
    if lookup.and_then(|value| value.get_ref().as_bool()) == Some(false) {
        let message = "needs server.peer_lookup, which is false: it tells local processes \
                       from containers";
        checker.report(raw.start(), &raw.path("listen"), message.to_owned());
    }
    ContainersConfig {
        listen,
        imds: mode.unwrap_or(GuardMode::Block),
    }
}

fn parse_guard_mode(mode: &str) -> Result<GuardMode, String> {
    match mode {
        "redirect" => Ok(GuardMode::Redirect),
        "block" => Ok(GuardMode::Block),
        other => Err(format!(
            "{other:?} is not a guard mode: \"redirect\" or \"block\""
        )),
    }
}

/// Whether an `allowed_*` value names anyone: an empty list restricts nothing.
fn names_someone(raw: Option<&Spanned<Value>>) -> bool {
    raw.and_then(|value| value.get_ref().as_array())
        .is_some_and(|names| !names.is_empty())
}

fn validate_role(checker: &mut Checker<'_>, raw: &RawTable, host_name: &str) -> Option<RoleConfig> {
    let name = checker.required(raw, "name", parse_role_name);
    let arn = checker.required(raw, "arn", RoleArn::parse);
    let session = Template::literal(&session_name_from_host(host_name));
    let session_name = checker.or_default(raw, "session_name", session, |text| {
        parse_session_name(text, host_name)
    });
    let external_id = checker.optional(raw, "external_id", parse_external_id);
    let source_identity = checker.optional(raw, "source_identity", |text| {
        parse_source_identity(text, host_name)
    });
    let max_sessions = checker.count(
        raw,
        "max_sessions",
        MAX_SESSIONS_RANGE,
        DEFAULT_MAX_SESSIONS,
    );
    let duration = checker.or_default(raw, "duration", DEFAULT_DURATION, parse_session_duration);
    let allowed_users = checker.names(raw, "allowed_users");
    let allowed_groups = checker.names(raw, "allowed_groups");
    let allowed_networks = checker.list(raw, "allowed_networks", Network::parse);
    let token_file = checker.optional(raw, "token_file", parse_token_file);
    let group = checker.optional(raw, "group", |name| match is_account_name(name) {
        true => Ok(name.to_owned()),
        false => Err(format!("{name:?} is not a group name")),
    });
    let tags = validate_tags(checker, raw, host_name);
    let transitive_tags = validate_transitive_tags(checker, raw, &tags);
    let policy_arns = checker.list(raw, "policy_arns", parse_policy_arn);
    if let Some(list) = raw.get("policy_arns")
        && policy_arns.len() > MAX_POLICY_ARNS
    {
        let message = format!("STS takes at most {MAX_POLICY_ARNS} managed session policies");
        checker.report(list.span().start, &raw.path("policy_arns"), message);
    }
    let directory = checker.directory;
    let policy = checker.optional(raw, "policy", |text| {
        read_session_policy(&directory.join(text), text)
    });
    if let (Some(group), None) = (raw.get("group"), raw.get("token_file")) {
        let message = format!(
            "needs {}: the group is given the role's own token file",
            raw.path("token_file")
        );
        checker.report(group.span().start, &raw.path("group"), message);
    }
    Some(RoleConfig {
        name: name?,
        arn: arn?,
        session_name,
        external_id,
        source_identity,
        duration,
        allowed_users,
        allowed_groups,
        allowed_networks,
        token_file,
        group,
        max_sessions,
        tags,
        transitive_tags,
        policy_arns,
        policy,
    })
}

/// STS's limits on what a session is asked for.
const MAX_TAGS: usize = 50;
const TAG_KEY_LENGTH: RangeInclusive<usize> = 1..=128;
const MAX_POLICY_ARNS: usize = 10;
/// Characters of an inline session policy (and, together with the managed policies' ARNs and
/// the tags, STS packs them into a size it checks itself).
const MAX_POLICY_CHARS: usize = 2048;

/// `roles[].tags`: a table of keys and value templates.
fn validate_tags(
    checker: &mut Checker<'_>,
    raw: &RawTable,
    host_name: &str,
) -> Vec<(String, Template)> {
    let Some((table, offset)) = checker.typed(raw, "tags", "a table", Value::as_table) else {
        return Vec::new();
    };
    if table.len() > MAX_TAGS {
        let message = format!("has {} tags; STS takes at most {MAX_TAGS}", table.len());
        checker.report(offset, &raw.path("tags"), message);
    }
    let mut tags = Vec::new();
    let mut seen = BTreeSet::new();
    for (key, value) in table {
        let path = raw.path(&format!("tags.{key}"));
        let checked = parse_tag_key(key).and_then(|()| match value.as_str() {
            Some(text) => Template::parse_as(Form::TagValue, text, host_name),
            None => Err(format!("expected a string, found {}", value.type_str())),
        });
        match checked {
            // STS takes keys case-insensitively: `User` and `user` would be one tag.
            Ok(_) if !seen.insert(key.to_lowercase()) => {
                let message = "differs from another tag key only in case, which STS refuses";
                checker.report(offset, &path, message.to_owned());
            }
            Ok(template) => tags.push((key.clone(), template)),
            Err(message) => checker.report(offset, &path, message),
        }
    }
    tags
}

fn parse_tag_key(key: &str) -> Result<(), String> {
    if !TAG_KEY_LENGTH.contains(&key.chars().count()) || !key.chars().all(is_tag_char) {
        return Err(format!(
            "{key:?} is not a tag key: STS wants 1 to 128 of letters, digits, spaces and _.:/=+-@"
        ));
    }
    if key.to_lowercase().starts_with("aws:") {
        return Err(format!("{key:?} starts with \"aws:\", which AWS reserves"));
    }
    Ok(())
}

/// `roles[].transitive_tags`: keys of `tags`.
fn validate_transitive_tags(
    checker: &mut Checker<'_>,
    raw: &RawTable,
    tags: &[(String, Template)],
) -> Vec<String> {
    let known = |key: &str| -> Result<String, String> {
        match tags.iter().any(|(tag, _)| tag == key) {
            true => Ok(key.to_owned()),
            false => Err(format!("{key:?} is not a key of this role's tags")),
        }
    };
    checker.list(raw, "transitive_tags", known)
}

/// A managed policy's ARN: `arn:<partition>:iam::<account or aws>:policy/<path/name>`.
fn parse_policy_arn(text: &str) -> Result<String, String> {
    let expected = "expected arn:aws:iam::<12-digit account id or aws>:policy/<policy name>";
    let parts: Vec<&str> = text.splitn(6, ':').collect();
    let [arn, partition, service, region, account, resource] = parts[..] else {
        return Err(format!("{text:?} is not an ARN; {expected}"));
    };
    let account_ok =
        account == "aws" || (account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()));
    let name = resource
        .strip_prefix("policy/")
        .and_then(|r| r.rsplit('/').next());
    let name_ok = name
        .is_some_and(|name| (1..=128).contains(&name.len()) && name.chars().all(is_iam_name_char));
    let partition_ok = partition.starts_with("aws");
    if arn != "arn" || !partition_ok || service != "iam" || !region.is_empty() || !account_ok {
        return Err(format!(
            "{text:?} is not a managed policy's ARN; {expected}"
        ));
    }
    if !name_ok {
        return Err(format!("{text:?} does not name a policy; {expected}"));
    }
    Ok(text.to_owned())
}

/// An inline session policy from the file at `path` (relative paths from the configuration's
/// directory): a JSON object, kept compact, within STS's size.
fn read_session_policy(path: &Path, written: &str) -> Result<SessionPolicy, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read the policy file {}: {error}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|error| format!("{written:?} is not JSON: {error}"))?;
    if !value.is_object() {
        return Err(format!(
            "{written:?} is not a policy document (a JSON object)"
        ));
    }
    let json = value.to_string();
    let length = json.chars().count();
    if length > MAX_POLICY_CHARS {
        return Err(format!(
            "{written:?} is {length} characters without spaces; STS takes at most \
             {MAX_POLICY_CHARS}"
        ));
    }
    Ok(SessionPolicy {
        path: path.to_owned(),
        json,
    })
}

/// A role served per user needs to know who connects; `max_sessions` means nothing without it.
fn report_sessions_without_lookup(
    checker: &mut Checker<'_>,
    raw: &RawConfig,
    roles: &[Option<RoleConfig>],
) {
    let lookup = raw.server.get("peer_lookup");
    let lookup_off = lookup.and_then(|value| value.get_ref().as_bool()) == Some(false);
    for (table, role) in raw.roles.iter().zip(roles) {
        let Some(role) = role else { continue };
        let names_user = |template: Option<&Template>| template.is_some_and(Template::names_user);
        let key = if role.session_name.names_user() {
            "session_name"
        } else if names_user(role.source_identity.as_ref()) {
            "source_identity"
        } else {
            "tags"
        };
        match (role.per_user(), table.get(key)) {
            (true, Some(value)) if lookup_off => {
                let message = "names the user, which needs server.peer_lookup, which is false";
                checker.report(value.span().start, &table.path(key), message.to_owned());
            }
            (false, _) if let Some(max) = table.get("max_sessions") => {
                let message = "applies only to a role served per user: one whose session_name, \
                               source_identity or a tag names {user} or {uid}";
                checker.report(
                    max.span().start,
                    &table.path("max_sessions"),
                    message.to_owned(),
                );
            }
            _ => {}
        }
    }
}

/// `allowed_users` and `allowed_groups` need to know who connects.
fn report_restrictions_without_lookup(checker: &mut Checker<'_>, raw: &RawConfig) {
    let lookup = raw.server.get("peer_lookup");
    if lookup.and_then(|value| value.get_ref().as_bool()) != Some(false) {
        return;
    }
    for role in &raw.roles {
        for list in [role.get("allowed_users"), role.get("allowed_groups")]
            .into_iter()
            .flatten()
        {
            let message = "needs server.peer_lookup, which is false".to_owned();
            checker.report(list.span().start, &role.path("allowed_*"), message);
        }
    }
}

/// A role's own token file must be its own: shared with the server or another role, reading it
/// would grant more than that role.
fn report_shared_token_files(checker: &mut Checker<'_>, raw: &RawConfig) {
    let server_file = raw.server.str("token_file").unwrap_or(DEFAULT_TOKEN_FILE);
    let mut seen = BTreeSet::from([server_file]);
    for role in &raw.roles {
        if let Some(file) = role.get("token_file")
            && let Some(path) = file.get_ref().as_str()
            && !seen.insert(path)
        {
            let message = format!(
                "{path:?} is already the token file of the server or another role; \
                 each role's own token file must be its own"
            );
            checker.report(file.span().start, &role.path("token_file"), message);
        }
    }
}

fn report_duplicate_names(checker: &mut Checker<'_>, roles: &[RawTable]) {
    let mut seen = BTreeSet::new();
    for role in roles {
        if let Some(name) = role.get("name")
            && let Some(text) = name.get_ref().as_str()
            && !seen.insert(text)
        {
            let message = format!("role name {text:?} is used more than once");
            checker.report(name.span().start, &role.path("name"), message);
        }
    }
}
