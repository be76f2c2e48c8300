//! The file as written: each table's keys, with values of any TOML type and their positions.
//!
//! Values stay untyped here on purpose: `max_connections = "many"` must be one problem among the
//! others the file has, not a parse failure that hides them. There are no key lists either:
//! validation asks each table for the keys it knows ([`RawTable::get`]), and whatever a table
//! holds that nobody asked for is an unknown key ([`RawConfig::unknown_keys`]). So a new key is
//! known as soon as its validation line exists.

use std::cell::RefCell;
use std::collections::BTreeMap;

use serde::Deserialize;
use toml::{Spanned, Value};

use super::{Problem, line_of};

/// The top-level tables.
pub(super) const TOP_KEYS: &[&str] = &["server", "sts", "imds", "containers", "roles"];

type Table = BTreeMap<String, Spanned<Value>>;

/// The document as serde reads it: known tables only (the top-level keys are checked apart).
#[derive(Deserialize)]
struct Document {
    server: Option<Spanned<Table>>,
    sts: Option<Spanned<Table>>,
    imds: Option<Spanned<Table>>,
    containers: Option<Spanned<Table>>,
    #[serde(default)]
    roles: Vec<Spanned<Table>>,
}

/// One table as written, and the keys validation asked of it.
#[derive(Debug, Default)]
pub(super) struct RawTable {
    /// How its keys are named in problems: `server.`, `roles[0].`.
    prefix: String,
    /// Where the table starts, for problems about keys it lacks.
    start: usize,
    values: Table,
    /// In the order asked, which is the order of the checked type's fields.
    asked: RefCell<Vec<&'static str>>,
}

impl RawTable {
    fn new(prefix: String, table: Option<Spanned<Table>>) -> Self {
        let (start, values) = match table {
            Some(table) => (table.span().start, table.into_inner()),
            None => (0, Table::new()),
        };
        Self {
            prefix,
            start,
            values,
            asked: RefCell::default(),
        }
    }

    /// The value of `key`, if the table has it; `key` is known from now on.
    pub(super) fn get(&self, key: &'static str) -> Option<&Spanned<Value>> {
        let mut asked = self.asked.borrow_mut();
        if !asked.contains(&key) {
            asked.push(key);
        }
        self.values.get(key)
    }

    /// The string value of `key`, if it is one.
    pub(super) fn str(&self, key: &'static str) -> Option<&str> {
        self.get(key)?.get_ref().as_str()
    }

    /// `key` as problems name it: `roles[0].arn`.
    pub(super) fn path(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Where the table starts.
    pub(super) fn start(&self) -> usize {
        self.start
    }

    fn unknown_keys(&self, text: &str, problems: &mut Vec<Problem>) {
        let asked = self.asked.borrow();
        for (key, value) in &self.values {
            if !asked.contains(&key.as_str()) {
                problems.push(Problem {
                    line: line_of(text, value.span().start),
                    key: self.path(key),
                    message: format!("unknown key; expected one of: {}", asked.join(", ")),
                });
            }
        }
    }
}

/// The whole file: its tables, each still raw.
#[derive(Debug, Default)]
pub(super) struct RawConfig {
    pub(super) server: RawTable,
    pub(super) sts: RawTable,
    pub(super) imds: Option<RawTable>,
    pub(super) containers: Option<RawTable>,
    pub(super) roles: Vec<RawTable>,
}

impl RawConfig {
    /// Every key the file holds that validation did not ask for; call after validation.
    pub(super) fn unknown_keys(&self, text: &str) -> Vec<Problem> {
        let mut problems = Vec::new();
        let tables = [&self.server, &self.sts].into_iter().chain(&self.imds);
        for table in tables.chain(&self.containers).chain(&self.roles) {
            table.unknown_keys(text, &mut problems);
        }
        problems
    }

    /// The keys validation asked for, as `table.key` (`roles.arn` for every role's).
    #[cfg(test)]
    pub(super) fn known_keys(&self) -> std::collections::BTreeSet<String> {
        let named = [("server", &self.server), ("sts", &self.sts)];
        let imds = self.imds.iter().map(|table| ("imds", table));
        let containers = self.containers.iter().map(|table| ("containers", table));
        let roles = self.roles.iter().map(|table| ("roles", table));
        let mut keys: std::collections::BTreeSet<String> =
            TOP_KEYS.iter().map(|k| k.to_string()).collect();
        for (name, table) in named.into_iter().chain(imds).chain(containers).chain(roles) {
            keys.extend(
                table
                    .asked
                    .borrow()
                    .iter()
                    .map(|key| format!("{name}.{key}")),
            );
        }
        keys
    }
}

/// Reads `text` into raw tables, with every unknown top-level key as a problem. Fails only when
/// the text is not TOML, or a table is not a table: nothing further can be located then.
pub(super) fn read(text: &str) -> Result<(RawConfig, Vec<Problem>), Vec<Problem>> {
    let top: Table = toml::from_str(text).map_err(|error| vec![toml_problem(text, &error)])?;
    let mut problems: Vec<Problem> = top
        .iter()
        .filter(|(key, _)| !TOP_KEYS.contains(&key.as_str()))
        .map(|(key, value)| Problem {
            line: line_of(text, value.span().start),
            key: key.clone(),
            message: format!("unknown key; expected one of: {}", TOP_KEYS.join(", ")),
        })
        .collect();
    let document: Document = match toml::from_str(text) {
        Ok(document) => document,
        Err(error) => {
            problems.push(toml_problem(text, &error));
            return Err(problems);
        }
    };
    let roles = document.roles.into_iter().enumerate();
    let raw = RawConfig {
        server: RawTable::new("server.".into(), document.server),
        sts: RawTable::new("sts.".into(), document.sts),
        imds: document
            .imds
            .map(|table| RawTable::new("imds.".into(), Some(table))),
        containers: document
            .containers
            .map(|table| RawTable::new("containers.".into(), Some(table))),
        roles: roles
            .map(|(index, table)| RawTable::new(format!("roles[{index}]."), Some(table)))
            .collect(),
    };
    Ok((raw, problems))
}

fn toml_problem(text: &str, error: &toml::de::Error) -> Problem {
    Problem {
        line: error.span().map_or(1, |span| line_of(text, span.start)),
        key: String::new(),
        message: error.message().trim().to_owned(),
    }
}
