//! Session templates: `roles[].session_name`, `roles[].source_identity` and the values of
//! `roles[].tags` may name the connecting local user (`{user}`, `{uid}`), the host (`{host}`,
//! its short name) and the instance (`{instance_id}`), so that CloudTrail in the other account
//! shows who acted and its policies can tell users apart (`aws:PrincipalTag/...`).
//!
//! A template is parsed once (`{host}` is filled in then: it is known at parse time) and
//! rendered when a session starts. Rendering is pure and deterministic: what a placeholder
//! brings is sanitised to what STS takes in that place (its [`Form`]: for names `[\w+=,.@-]`,
//! for tag values ASCII letters, digits, spaces and `_.:/=+-@`; anything else becomes `-`) and fitted
//! to STS's lengths (names 2 to 64 characters, tag values up to 256). A text that sanitising,
//! padding or cutting changed ends in a hash of the text as filled in, before any of that, so
//! that two users never get one name (`a b` and `a-b`, two long names with the same start).

use std::fmt;

use sha2::{Digest, Sha256};

use super::values::{is_iam_name_char, is_tag_char};

/// Hex digits of the hash a changed text ends in (48 bits).
const HASH_DIGITS: usize = 12;

/// What STS takes where a template is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// `RoleSessionName` and `SourceIdentity`: 2 to 64 of `[\w+=,.@-]`.
    Name,
    /// A session tag's value: up to 256 letters, digits, spaces and `_.:/=+-@`.
    TagValue,
}

impl Form {
    fn allows(self, c: char) -> bool {
        match self {
            Form::Name => is_iam_name_char(c),
            Form::TagValue => is_tag_char(c),
        }
    }

    /// How many characters STS takes.
    fn length(self) -> std::ops::RangeInclusive<usize> {
        match self {
            Form::Name => 2..=64,
            Form::TagValue => 0..=256,
        }
    }

    /// What it is, for messages.
    fn what(self) -> &'static str {
        match self {
            Form::Name => "a session name: STS wants 2 to 64 of letters, digits and +=,.@_-",
            Form::TagValue => {
                "a tag value: up to 256 of ASCII letters, digits, spaces and _.:/=+-@"
            }
        }
    }

    fn alphabet(self) -> &'static str {
        match self {
            Form::Name => "letters, digits, +=,.@_-",
            Form::TagValue => "ASCII letters, digits, spaces, _.:/=+-@",
        }
    }
}
/// The placeholders, as written.
const PLACEHOLDERS: &str = "{user}, {uid}, {host} or {instance_id}";

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    /// The connecting user's name (their uid when the name is unknown, which only `check`
    /// meets).
    User,
    Uid,
    InstanceId,
}

/// A parsed `session_name`, `source_identity` or tag value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
    form: Form,
    /// As written, for messages and `check`.
    text: String,
}

/// Who a session is for: what the placeholders are filled with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    /// The local user (uid, and name when the name service knows it: the daemon serves only
    /// users it knows; `check` may run as one it does not); `None` for shared roles.
    pub user: Option<(u32, Option<String>)>,
    /// This instance's id, from instance metadata, when known.
    pub instance_id: Option<String>,
}

impl Template {
    /// Parses `text` as a session name, filling in `{host}` with the short form of
    /// `host_name`.
    pub fn parse(text: &str, host_name: &str) -> Result<Self, String> {
        Self::parse_as(Form::Name, text, host_name)
    }

    /// Parses `text` as what `form` says.
    pub fn parse_as(form: Form, text: &str, host_name: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            rest = &rest[c.len_utf8()..];
            if c != '{' {
                if !form.allows(c) {
                    return Err(format!(
                        "{text:?} has {c:?}, which STS refuses: use {} and the placeholders \
                         {PLACEHOLDERS}",
                        form.alphabet()
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
                    literal.push_str(&sanitize(short_host(host_name), form));
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
            form,
            text: text.to_owned(),
        };
        if let Some(fixed) = template.fixed()
            && !form.length().contains(&fixed.chars().count())
        {
            return Err(format!("{text:?} is not {}", form.what()));
        }
        Ok(template)
    }

    /// A session name with no placeholders left, as if parsed from `text`.
    pub fn literal(text: &str) -> Self {
        Self {
            parts: vec![Part::Literal(text.to_owned())],
            form: Form::Name,
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

    /// The text for `subject`: placeholders filled and sanitised, the whole fitted to STS's
    /// length.
    pub fn render(&self, subject: &Subject) -> String {
        let uid = subject.user.as_ref().map(|(uid, _)| uid.to_string());
        let user = subject.user.as_ref().map(|(uid, name)| match name {
            Some(name) => name.clone(),
            None => uid.to_string(),
        });
        let mut filled = String::new();
        for part in &self.parts {
            filled.push_str(match part {
                Part::Literal(literal) => literal.as_str(),
                Part::User => user.as_deref().unwrap_or_default(),
                Part::Uid => uid.as_deref().unwrap_or_default(),
                Part::InstanceId => subject.instance_id.as_deref().unwrap_or_default(),
            });
        }
        fit(&filled, self.form)
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

/// Every character STS refuses in `form` becomes `-`.
fn sanitize(text: &str, form: Form) -> String {
    text.chars()
        .map(|c| if form.allows(c) { c } else { '-' })
        .collect()
}

/// Sanitises `filled` and fits it to `form`'s length. Unchanged when it already fits;
/// otherwise its sanitised start, `-`, and a hash of `filled` as it was.
fn fit(filled: &str, form: Form) -> String {
    let clean = sanitize(filled, form);
    let length = form.length();
    if clean == filled && length.contains(&clean.chars().count()) {
        return clean;
    }
    let digest = Sha256::digest(filled.as_bytes());
    let hash: String = (digest.iter().take(HASH_DIGITS / 2))
        .map(|b| format!("{b:02x}"))
        .collect();
    let kept: String = clean.chars().take(length.end() - 1 - HASH_DIGITS).collect();
    format!("{kept}-{hash}")
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
        let rendered = template.render(&odd);
        assert!(rendered.starts_with("ad-domain-user-x-"), "{rendered}");
        assert_eq!(rendered.len(), "ad-domain-user-x-".len() + HASH_DIGITS);
        // Names that sanitise alike stay apart.
        let spaced = Subject {
            user: Some((8, Some("a b".to_owned()))),
            instance_id: None,
        };
        let dashed = Subject {
            user: Some((9, Some("a-b".to_owned()))),
            instance_id: None,
        };
        assert_eq!(
            template.render(&dashed),
            "a-b",
            "a clean name is kept as it is"
        );
        assert_ne!(template.render(&spaced), template.render(&dashed));
        let host = Template::parse("s-{host}", "bad host!.example").unwrap();
        assert_eq!(
            host.render(&Subject::default()),
            "s-bad-host-",
            "fixed at parse time"
        );
    }

    #[test]
    fn results_fit_sts_lengths_and_stay_distinct() {
        let template = Template::parse("{user}", "h").unwrap();
        let one = Subject {
            user: Some((5, Some("a".to_owned()))),
            instance_id: None,
        };
        let short = template.render(&one);
        assert!(
            short.starts_with("a-") && short.len() == 2 + HASH_DIGITS,
            "{short}"
        );
        let dash = Subject {
            user: Some((6, Some("a-".to_owned()))),
            instance_id: None,
        };
        assert_ne!(
            template.render(&dash),
            short,
            "padding never makes another user's name"
        );
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
    fn tag_values_take_spaces_and_fit_256_and_other_characters_become_a_hash() {
        let template = Template::parse_as(Form::TagValue, "{user} on {host}", "web 1.x").unwrap();
        assert!(template.names_user());
        let spaced = Subject {
            user: Some((7, Some("Ann Lee".to_owned()))),
            instance_id: None,
        };
        assert_eq!(
            template.render(&spaced),
            "Ann Lee on web 1",
            "kept as it is"
        );
        // Not ASCII (a combining mark STS would refuse looks like a letter to the standard
        // library), or a comma: `-`, and the hash keeps users apart.
        for odd in ["Zoë", "a,b", "क्षि"] {
            let subject = Subject {
                user: Some((8, Some(odd.to_owned()))),
                instance_id: None,
            };
            let rendered = template.render(&subject);
            assert!(rendered.chars().all(is_tag_char), "{rendered}");
            assert_eq!(
                rendered.len(),
                rendered.chars().count(),
                "ASCII: {rendered}"
            );
            assert!(rendered.contains("on web 1-"), "{rendered}");
        }
        let long = Subject {
            user: Some((9, Some("e".repeat(300)))),
            instance_id: None,
        };
        assert_eq!(template.render(&long).chars().count(), 256);
        let empty = Template::parse_as(Form::TagValue, "", "h").unwrap();
        assert_eq!(empty.render(&alice()), "", "an empty value is a value");
        let error = Template::parse_as(Form::TagValue, "a,b", "h").unwrap_err();
        assert!(error.contains("spaces"), "{error}");
        assert!(Template::parse_as(Form::TagValue, "é", "h").is_err());
        let error = Template::parse_as(Form::TagValue, &"x".repeat(257), "h").unwrap_err();
        assert!(error.contains("not a tag value"), "{error}");
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
