//! From raw values to checked ones: each key is checked by one line of its table's
//! `validate_*` function, every failure becomes a [`Problem`] at the value's line, and checks
//! between keys (duplicate names, shared token files, restrictions that need the peer lookup,
//! the metadata role) run after. A bad value is reported and replaced by its default, so that
//! validation goes on and the operator sees every problem at once; a configuration with any
//! problem is never returned.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;

use toml::{Spanned, Value};

use super::raw::{RawConfig, RawImds, RawRole, RawServer, RawSts, RawValue, as_str};
use super::values::{
    RoleArn, is_account_name, parse_endpoint, parse_external_id, parse_listen, parse_region,
    parse_role_name, parse_session_duration, parse_session_name, parse_source_identity,
    parse_token_file, session_name_from_host,
};
use super::{
    Config, DEFAULT_DURATION, DEFAULT_LISTEN, DEFAULT_MAX_CONNECTIONS, DEFAULT_TOKEN_FILE,
    ImdsConfig, Problem, RoleConfig, ServerConfig, StsConfig, line_of,
};

const MAX_CONNECTIONS_RANGE: RangeInclusive<i64> = 1..=65_536;

/// Collects problems while turning raw values into checked ones.
struct Checker<'a> {
    text: &'a str,
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

    /// The value of type `kind` (`extract` finds it), or `None` if absent; a value of another
    /// type is reported.
    fn typed<'v, T>(
        &mut self,
        key: &str,
        raw: &'v RawValue,
        kind: &str,
        extract: impl FnOnce(&'v Value) -> Option<T>,
    ) -> Option<(T, usize)> {
        let raw = raw.as_ref()?;
        let offset = raw.span().start;
        match extract(raw.get_ref()) {
            Some(value) => Some((value, offset)),
            None => {
                let found = raw.get_ref().type_str();
                self.report(offset, key, format!("expected {kind}, found {found}"));
                None
            }
        }
    }

    /// A string checked by `parse`; `None` if absent or reported.
    fn optional<T>(
        &mut self,
        key: &str,
        raw: &RawValue,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let (text, offset) = self.typed(key, raw, "a string", Value::as_str)?;
        parse(text)
            .map_err(|message| self.report(offset, key, message))
            .ok()
    }

    /// Like [`Checker::optional`], with `default` when absent or reported.
    fn or_default<T>(
        &mut self,
        key: &str,
        raw: &RawValue,
        default: T,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> T {
        self.optional(key, raw, parse).unwrap_or(default)
    }

    /// Like [`Checker::optional`], but an absent value is itself a problem at `table_offset`.
    fn required<T>(
        &mut self,
        key: &str,
        raw: &RawValue,
        table_offset: usize,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        if raw.is_none() {
            self.report(table_offset, key, "is required".to_owned());
        }
        self.optional(key, raw, parse)
    }

    fn flag(&mut self, key: &str, raw: &RawValue, default: bool) -> bool {
        self.typed(key, raw, "true or false", Value::as_bool)
            .map_or(default, |(value, _)| value)
    }

    fn count(
        &mut self,
        key: &str,
        raw: &RawValue,
        range: RangeInclusive<i64>,
        default: usize,
    ) -> usize {
        let Some((value, offset)) = self.typed(key, raw, "an integer", Value::as_integer) else {
            return default;
        };
        if range.contains(&value) {
            return value as usize;
        }
        let message = format!("{value} is outside {} to {}", range.start(), range.end());
        self.report(offset, key, message);
        default
    }

    /// A list of user or group names, each as `useradd` and `groupadd` accept them.
    fn names(&mut self, key: &str, raw: &RawValue) -> Vec<String> {
        let strings = |value: &Value| -> Option<Vec<String>> {
            let items = value
                .as_array()?
                .iter()
                .map(|item| item.as_str().map(str::to_owned));
            items.collect()
        };
        let Some((names, offset)) = self.typed(key, raw, "a list of names", strings) else {
            return Vec::new();
        };
        if let Some(bad) = names.iter().find(|name| !is_account_name(name)) {
            self.report(offset, key, format!("{bad:?} is not a user or group name"));
            return Vec::new();
        }
        names
    }
}

/// Checks every table of `raw`, adding each problem to `problems`; `None` when a required value
/// is missing (there is then a problem saying so).
pub(super) fn validate(
    text: &str,
    raw: &RawConfig,
    host_name: &str,
    problems: &mut Vec<Problem>,
) -> Option<Config> {
    let mut checker = Checker { text, problems };
    let server = validate_server(&mut checker, &raw.server);
    let sts = validate_sts(&mut checker, &raw.sts);
    let default_session = session_name_from_host(host_name);
    let roles: Vec<Option<RoleConfig>> = (raw.roles.iter().enumerate())
        .map(|(index, role)| validate_role(&mut checker, index, role, &default_session))
        .collect();
    if raw.roles.is_empty() {
        let message = "at least one [[roles]] entry is required".to_owned();
        checker.report(text.len(), "roles", message);
    }
    report_duplicate_names(&mut checker, &raw.roles);
    report_shared_token_files(&mut checker, raw);
    report_restrictions_without_lookup(&mut checker, raw);
    let imds = match &raw.imds {
        Some(imds) => Some(validate_imds(&mut checker, imds, &raw.roles)?),
        None => None,
    };
    Some(Config {
        server,
        sts,
        imds,
        roles: roles.into_iter().collect::<Option<_>>()?,
    })
}

fn validate_server(checker: &mut Checker<'_>, raw: &RawServer) -> ServerConfig {
    let default_listen: SocketAddr = DEFAULT_LISTEN.parse().expect("the default parses");
    let max = MAX_CONNECTIONS_RANGE;
    ServerConfig {
        listen: checker.or_default("server.listen", &raw.listen, default_listen, parse_listen),
        token_file: checker.or_default(
            "server.token_file",
            &raw.token_file,
            PathBuf::from(DEFAULT_TOKEN_FILE),
            parse_token_file,
        ),
        max_connections: checker.count(
            "server.max_connections",
            &raw.max_connections,
            max,
            DEFAULT_MAX_CONNECTIONS,
        ),
        metrics_listen: checker.optional(
            "server.metrics_listen",
            &raw.metrics_listen,
            parse_listen,
        ),
        // On: one sock_diag question per connection costs microseconds, and the audit log
        // names the user.
        peer_lookup: checker.flag("server.peer_lookup", &raw.peer_lookup, true),
        peer_processes: checker.flag("server.peer_processes", &raw.peer_processes, false),
    }
}

fn validate_sts(checker: &mut Checker<'_>, raw: &RawSts) -> StsConfig {
    StsConfig {
        region: checker.optional("sts.region", &raw.region, parse_region),
        endpoint: checker.optional("sts.endpoint", &raw.endpoint, parse_endpoint),
    }
}

fn validate_imds(
    checker: &mut Checker<'_>,
    raw: &Spanned<RawImds>,
    roles: &[Spanned<RawRole>],
) -> Option<ImdsConfig> {
    let imds = raw.get_ref();
    let names: Vec<&str> = roles
        .iter()
        .filter_map(|r| as_str(&r.get_ref().name))
        .collect();
    let role = checker.required("imds.role", &imds.role, raw.span().start, |name| {
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
    Some(ImdsConfig {
        role: role?,
        upstream: checker.optional("imds.upstream", &imds.upstream, parse_endpoint),
    })
}

/// Whether role `name` relies on its own token file alone to decide who gets it.
fn unguarded_own_token(roles: &[Spanned<RawRole>], name: &str) -> bool {
    roles.iter().map(Spanned::get_ref).any(|role| {
        as_str(&role.name) == Some(name)
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
    let name = checker.required(&key("name"), &role.name, start, parse_role_name);
    let arn = checker.required(&key("arn"), &role.arn, start, RoleArn::parse);
    let session_name = default_session.to_owned();
    let group = checker.optional(&key("group"), &role.group, |name| {
        match is_account_name(name) {
            true => Ok(name.to_owned()),
            false => Err(format!("{name:?} is not a group name")),
        }
    });
    if let (Some(group), None) = (&role.group, &role.token_file) {
        let message = format!(
            "needs {}: the group is given the role's own token file",
            key("token_file")
        );
        checker.report(group.span().start, &key("group"), message);
    }
    Some(RoleConfig {
        session_name: checker.or_default(
            &key("session_name"),
            &role.session_name,
            session_name,
            parse_session_name,
        ),
        external_id: checker.optional(&key("external_id"), &role.external_id, parse_external_id),
        source_identity: checker.optional(
            &key("source_identity"),
            &role.source_identity,
            parse_source_identity,
        ),
        duration: checker.or_default(
            &key("duration"),
            &role.duration,
            DEFAULT_DURATION,
            parse_session_duration,
        ),
        allowed_users: checker.names(&key("allowed_users"), &role.allowed_users),
        allowed_groups: checker.names(&key("allowed_groups"), &role.allowed_groups),
        token_file: checker.optional(&key("token_file"), &role.token_file, parse_token_file),
        group,
        name: name?,
        arn: arn?,
    })
}

/// `allowed_users` and `allowed_groups` need to know who connects.
fn report_restrictions_without_lookup(checker: &mut Checker<'_>, raw: &RawConfig) {
    let lookup_off = raw
        .server
        .peer_lookup
        .as_ref()
        .and_then(|v| v.get_ref().as_bool())
        == Some(false);
    if !lookup_off {
        return;
    }
    for (index, role) in raw.roles.iter().enumerate() {
        let role = role.get_ref();
        for list in [&role.allowed_users, &role.allowed_groups]
            .into_iter()
            .flatten()
        {
            let message = "needs server.peer_lookup, which is false".to_owned();
            checker.report(
                list.span().start,
                &format!("roles[{index}].allowed_*"),
                message,
            );
        }
    }
}

/// A role's own token file must be its own: shared with the server or another role, reading it
/// would grant more than that role.
fn report_shared_token_files(checker: &mut Checker<'_>, raw: &RawConfig) {
    let server_file = as_str(&raw.server.token_file).unwrap_or(DEFAULT_TOKEN_FILE);
    let mut seen = BTreeSet::from([server_file]);
    for (index, role) in raw.roles.iter().enumerate() {
        let file = &role.get_ref().token_file;
        if let Some(path) = as_str(file)
            && !seen.insert(path)
        {
            let message = format!(
                "{path:?} is already the token file of the server or another role; \
                 each role's own token file must be its own"
            );
            let offset = file.as_ref().map_or(0, |f| f.span().start);
            checker.report(offset, &format!("roles[{index}].token_file"), message);
        }
    }
}

fn report_duplicate_names(checker: &mut Checker<'_>, roles: &[Spanned<RawRole>]) {
    let mut seen = BTreeSet::new();
    for (index, role) in roles.iter().enumerate() {
        let name = &role.get_ref().name;
        if let Some(text) = as_str(name)
            && !seen.insert(text)
        {
            let message = format!("role name {text:?} is used more than once");
            let offset = name.as_ref().map_or(0, |n| n.span().start);
            checker.report(offset, &format!("roles[{index}].name"), message);
        }
    }
}
