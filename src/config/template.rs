//! Session name templates: `roles[].session_name` and `roles[].source_identity` may name the
//! connecting local user (`{user}`, `{uid}`), the host (`{host}`, its short name) and the
//! instance (`{instance_id}`), so that CloudTrail in the other account shows who acted.
//!
//! A template is parsed once (`{host}` is filled in then: it is known at parse time) and
//! rendered when a session starts. Rendering is pure and deterministic: what a placeholder
//! brings is sanitised to STS's alphabet (`[\w+=,.@-]`, anything else becomes `-`) and the result
//! is fitted to STS's 2 to 64 characters; a result cut short keeps a hash of the whole, so two
//! long user names never end up in one session name.

use std::fmt;

use sha2::{Digest, Sha256};

use super::values::is_iam_name_char;

/// STS accepts session names and source identities of this many characters.
const LENGTH: std::ops::RangeInclusive<usize> = 2..=64;
/// A result longer than 64 keeps this many characters, then `-` and 8 hex digits of its hash.
const KEPT_WHEN_CUT: usize = 55;
/// The placeholders, as written.
const PLACEHOLDERS: &str = "{user}, {uid}, {host} or {instance_id}";

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    /// The connecting user's name (their uid when the name is unknown).
    User,
    Uid,
    InstanceId,
}

/// A parsed `session_name` or `source_identity`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
    /// As written, for messages and `check`.
    text: String,
}

/// Who a session is for: what the placeholders are filled with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    /// The local user (uid, and name when the name service knows it); `None` for shared roles.
    pub user: Option<(u32, Option<String>)>,
    /// This instance's id, from instance metadata, when known.
    pub instance_id: Option<String>,
}

impl Template {
    /// Parses `text`, filling in `{host}` with the short form of `host_name`.
    pub fn parse(text: &str, host_name: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            rest = &rest[c.len_utf8()..];
            if c != '{' {
                if !is_iam_name_char(c) {
                    return Err(format!(
                        "{text:?} has {c:?}, which STS refuses: use letters, digits, +=,.@_- \
                         and the placeholders {PLACEHOLDERS}"
                    ));
                }
                literal.push(c);
                continue;
            }
            let Some((name, after)) = rest.split_once('}') else {
                return Err(format!("{text:?} has a '{{' that is never closed"));
            };
            rest = after;
            let part = match name {
                "user" => Part::User,
                "uid" => Part::Uid,
                "instance_id" => Part::InstanceId,
                "host" => {
                    literal.push_str(&sanitize(short_host(host_name)));
                    continue;
                }
                other => {
                    return Err(format!(
                        "{text:?} names {{{other}}}, which is not a placeholder: use {PLACEHOLDERS}"
                    ));
                }
            };
            parts
                .extend((!literal.is_empty()).then(|| Part::Literal(std::mem::take(&mut literal))));
            parts.push(part);
        }
        parts.extend((!literal.is_empty()).then_some(Part::Literal(literal)));
        let template = Self {
            parts,
            text: text.to_owned(),
        };
        if let Some(fixed) = template.fixed()
            && !LENGTH.contains(&fixed.len())
        {
            return Err(format!(
                "{text:?} is not a session name: STS wants 2 to 64 of letters, digits and +=,.@_-"
            ));
        }
        Ok(template)
    }

    /// A template with no placeholders left, as if parsed from `text`.
    pub fn literal(text: &str) -> Self {
        Self {
            parts: vec![Part::Literal(text.to_owned())],
            text: text.to_owned(),
        }
    }

    /// The text, when no placeholder is left to fill.
    fn fixed(&self) -> Option<String> {
        self.parts
            .iter()
            .map(|part| match part {
                Part::Literal(text) => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Whether it names the connecting user: then each user has a session of their own.
    pub fn names_user(&self) -> bool {
        (self.parts.iter()).any(|part| matches!(part, Part::User | Part::Uid))
    }

    /// Whether it names the instance id, which is looked up before sessions start.
    pub fn names_instance(&self) -> bool {
        self.parts.contains(&Part::InstanceId)
    }

    /// The session name for `subject`: placeholders filled and sanitised, the whole fitted to
    /// STS's length.
    pub fn render(&self, subject: &Subject) -> String {
        let uid = subject.user.as_ref().map(|(uid, _)| uid.to_string());
        let user = subject.user.as_ref().map(|(uid, name)| match name {
            Some(name) => name.clone(),
            None => uid.to_string(),
        });
        let mut text = String::new();
        for part in &self.parts {
            let filled = match part {
                Part::Literal(literal) => literal.as_str(),
                Part::User => user.as_deref().unwrap_or_default(),
                Part::Uid => uid.as_deref().unwrap_or_default(),
                Part::InstanceId => subject.instance_id.as_deref().unwrap_or_default(),
            };
            text.push_str(&sanitize(filled));
        }
        fit(text)
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The host name up to its first dot.
fn short_host(host_name: &str) -> &str {
    host_name.split('.').next().unwrap_or_default()
}

/// Every character STS refuses becomes `-`.
fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| if is_iam_name_char(c) { c } else { '-' })
        .collect()
}

/// Fits a sanitised text to 2 to 64 characters: too short is padded with `-`; too long keeps
/// its start and a hash of the whole, so that distinct texts stay distinct.
fn fit(mut text: String) -> String {
    // Sanitised text is ASCII: lengths are characters.
    if text.len() > *LENGTH.end() {
        let digest = Sha256::digest(text.as_bytes());
        let hash: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        text.truncate(KEPT_WHEN_CUT);
        text.push('-');
        text.push_str(&hash);
    }
    while text.len() < *LENGTH.start() {
        text.push('-');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Subject {
        Subject {
            user: Some((1001, Some("alice".to_owned()))),
            instance_id: Some("i-0123456789abcdef0".to_owned()),
        }
    }

    #[test]
    fn placeholders_are_filled() {
        let template = Template::parse("{user}@{host}", "web-1.example.internal").unwrap();
        assert!(template.names_user());
        assert!(!template.names_instance());
        assert_eq!(template.render(&alice()), "alice@web-1");
        let template = Template::parse("{uid}.{instance_id}", "h").unwrap();
        assert!(template.names_user() && template.names_instance());
        assert_eq!(template.render(&alice()), "1001.i-0123456789abcdef0");
        assert_eq!(template.to_string(), "{uid}.{instance_id}");
    }

    #[test]
    fn a_user_without_a_name_is_named_by_uid() {
        let nameless = Subject {
            user: Some((4242, None)),
            instance_id: None,
        };
        let template = Template::parse("{user}@x", "h").unwrap();
        assert_eq!(template.render(&nameless), "4242@x");
        let template = Template::parse("{user}-{instance_id}", "h").unwrap();
        assert_eq!(
            template.render(&nameless),
            "4242-",
            "unknown instance: empty"
        );
    }

    #[test]
    fn what_placeholders_bring_is_sanitised() {
        let odd = Subject {
            user: Some((7, Some("ad\\domain user:x".to_owned()))),
            instance_id: None,
        };
        let template = Template::parse("{user}", "h").unwrap();
        assert_eq!(template.render(&odd), "ad-domain-user-x");
        let host = Template::parse("s-{host}", "bad host!.example").unwrap();
        assert_eq!(host.render(&Subject::default()), "s-bad-host-");
    }

    #[test]
    fn results_fit_sts_lengths_and_stay_distinct() {
        let template = Template::parse("{user}", "h").unwrap();
        let one = Subject {
            user: Some((5, Some("a".to_owned()))),
            instance_id: None,
        };
        assert_eq!(template.render(&one), "a-");
        let long = |suffix: &str| Subject {
            user: Some((5, Some(format!("{}{suffix}", "u".repeat(70))))),
            instance_id: None,
        };
        let (first, second) = (template.render(&long("1")), template.render(&long("2")));
        assert_eq!(first.len(), 64);
        assert_eq!(second.len(), 64);
        assert_ne!(first, second);
        assert_eq!(first, template.render(&long("1")), "deterministic");
        assert!(first.chars().all(is_iam_name_char));
    }

    #[test]
    fn bad_templates_are_refused_with_the_reason() {
        let error = Template::parse("{usr}", "h").unwrap_err();
        assert!(
            error.contains("{usr}") && error.contains("{user}"),
            "{error}"
        );
        let error = Template::parse("x{user", "h").unwrap_err();
        assert!(error.contains("never closed"), "{error}");
        let error = Template::parse("a b{user}", "h").unwrap_err();
        assert!(error.contains("' '"), "{error}");
        assert!(Template::parse("x", "h").is_err(), "too short");
        assert!(Template::parse(&"x".repeat(65), "h").is_err(), "too long");
        assert!(Template::parse("{user}", "h").is_ok(), "filled in later");
    }
}
