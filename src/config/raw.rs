//! The file as written: each table's keys, with values of any TOML type and their positions.
//!
//! The key lists come from the structs themselves ([`raw_table!`]), so a key is added in one
//! place. Values stay untyped here on purpose: `max_connections = "many"` must be one problem
//! among the others the file has, not a parse failure that hides them.

use serde::Deserialize;
use toml::de::{DeTable, DeValue};
use toml::{Spanned, Value};

use super::{Problem, line_of};

/// A value as written, with its position.
pub(super) type RawValue = Option<Spanned<Value>>;

/// Declares a table's raw struct (every field a [`RawValue`]) and its list of known keys.
macro_rules! raw_table {
    ($(#[$doc:meta])* $name:ident { $($field:ident),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Default, Deserialize)]
        pub(super) struct $name {
            $(pub(super) $field: RawValue,)*
        }

        impl $name {
            /// The keys this table may hold.
            pub(super) const KEYS: &[&str] = &[$(stringify!($field)),*];
        }
    };
}

raw_table!(
    /// `[server]`
    RawServer {
        listen,
        token_file,
        max_connections,
        metrics_listen,
        peer_lookup,
        peer_processes,
    }
);

raw_table!(
    /// `[sts]`
    RawSts { region, endpoint }
);

raw_table!(
    /// `[imds]`
    RawImds { role, upstream }
);

raw_table!(
    /// One `[[roles]]` entry.
    RawRole {
        name,
        arn,
        session_name,
        external_id,
        source_identity,
        duration,
        allowed_users,
        allowed_groups,
        token_file,
        group,
    }
);

/// The whole file: its tables, each still raw.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) server: RawServer,
    #[serde(default)]
    pub(super) sts: RawSts,
    pub(super) imds: Option<Spanned<RawImds>>,
    #[serde(default)]
    pub(super) roles: Vec<Spanned<RawRole>>,
}

/// The top-level keys.
pub(super) const TOP_KEYS: &[&str] = &["server", "sts", "imds", "roles"];

/// Reads `text` into raw tables, with every unknown key as a problem. Fails only when the
/// text is not TOML, or a table is not a table: nothing further can be located then.
pub(super) fn read(text: &str) -> Result<(RawConfig, Vec<Problem>), Vec<Problem>> {
    let document = DeTable::parse(text).map_err(|error| vec![toml_problem(text, &error)])?;
    let mut problems = unknown_keys(text, document.get_ref());
    match toml::from_str(text) {
        Ok(raw) => Ok((raw, problems)),
        Err(error) => {
            problems.push(toml_problem(text, &error));
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

/// Every key the program does not know, wherever it is. Tables of the wrong shape (a string
/// where a table belongs) are left to the serde pass, which reports them.
fn unknown_keys(text: &str, document: &DeTable<'_>) -> Vec<Problem> {
    let mut problems = Vec::new();
    check_keys(text, document, "", TOP_KEYS, &mut problems);
    for (key, value) in document {
        let known = match key.get_ref().as_ref() {
            "server" => RawServer::KEYS,
            "sts" => RawSts::KEYS,
            "imds" => RawImds::KEYS,
            "roles" => RawRole::KEYS,
            _ => continue,
        };
        match value.get_ref() {
            DeValue::Table(table) => {
                let prefix = format!("{}.", key.get_ref());
                check_keys(text, table, &prefix, known, &mut problems);
            }
            DeValue::Array(roles) => {
                for (index, role) in roles.iter().enumerate() {
                    if let DeValue::Table(table) = role.get_ref() {
                        let prefix = format!("{}[{index}].", key.get_ref());
                        check_keys(text, table, &prefix, known, &mut problems);
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

/// The string a raw value holds, if it is one.
pub(super) fn as_str(raw: &RawValue) -> Option<&str> {
    raw.as_ref()?.get_ref().as_str()
}
