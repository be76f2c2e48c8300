//! Configuration tests: defaults, every problem at once with its line and key, each value.

use std::collections::BTreeSet;

use toml::de::{DeTable, DeValue};

use super::raw::TOP_KEYS;
use super::values::*;
use super::*;
use super::{raw, validate};

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
    assert_eq!(role.session_name.to_string(), "ip-10-0-0-1.ec2.internal");
    assert!(!role.per_user());
    assert_eq!(role.max_sessions, DEFAULT_MAX_SESSIONS);
    assert_eq!(role.duration, DEFAULT_DURATION);
    assert_eq!(role.external_id, None);
}

/// The example shipped to users parses, and documents every key the program knows.
#[test]
fn example_config_parses_and_documents_every_key() {
    let text = include_str!("../../config.example.toml");
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
    let (raw, mut problems) = raw::read(text).expect("reads");
    let host = Host {
        name: "host",
        accounts: &AnyName,
        directory: Path::new(env!("CARGO_MANIFEST_DIR")),
    };
    validate::validate(text, &raw, &host, &mut problems).expect("valid");
    assert!(problems.is_empty(), "{problems:?}");
    for table in TOP_KEYS {
        assert!(seen.contains(*table), "the example has no [{table}]");
    }
    assert_eq!(seen, raw.known_keys());
}

/// The starter configuration `make install` puts in /etc is valid as shipped.
#[test]
fn installed_starter_config_parses() {
    let config = from_toml(include_str!("../../systemd/config.toml"), "host").unwrap();
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
    let wrong_type = problems(&format!("[server]\n\nlisten = 9357\n{MINIMAL}"));
    assert_eq!(wrong_type.len(), 1, "{wrong_type:?}");
    assert_eq!(
        (wrong_type[0].line, wrong_type[0].key.as_str()),
        (3, "server.listen")
    );
    assert_eq!(wrong_type[0].message, "expected a string, found integer");
}

/// A value of the wrong type is one problem among the others, not a stop: every key is still
/// checked and every problem listed with its own line.
#[test]
fn type_errors_do_not_hide_other_problems() {
    let text = "[server]\nlisten = \"0.0.0.0:9357\"\nmax_connections = \"many\"\n\
                peer_lookup = \"yes\"\n[[roles]]\nname = \"piyo\"\narn = 7\n\
                allowed_users = [\"hoge\", 3]\n";
    let found: Vec<(usize, String)> = problems(text)
        .into_iter()
        .map(|p| (p.line, p.key))
        .collect();
    let expected = [
        (2, "server.listen"),
        (3, "server.max_connections"),
        (4, "server.peer_lookup"),
        (7, "roles[0].arn"),
        (8, "roles[0].allowed_users"),
    ];
    let expected: Vec<(usize, String)> =
        expected.iter().map(|(l, k)| (*l, k.to_string())).collect();
    assert_eq!(found, expected);
}

#[test]
fn imds_must_name_a_configured_role() {
    let restricted = format!("{MINIMAL}allowed_groups = [\"ops\"]\n");
    let config = from_toml(&format!("[imds]\nrole = \"piyo\"\n{restricted}"), "h").unwrap();
    let imds = config.imds.unwrap();
    assert_eq!((imds.role.as_str(), imds.guard), ("piyo", None));
    let found = problems(&format!("[imds]\nrole = \"fuga\"\n{restricted}"));
    assert_eq!((found[0].line, found[0].key.as_str()), (2, "imds.role"));
    assert!(from_toml(MINIMAL, "h").unwrap().imds.is_none());
}

/// Instance metadata carries no token, so its role must name who may have it.
#[test]
fn the_metadata_role_is_always_restricted() {
    let found = problems(&format!("[imds]\nrole = \"piyo\"\n{MINIMAL}"));
    assert_eq!((found[0].line, found[0].key.as_str()), (2, "imds.role"));
    assert!(found[0].message.contains("allowed_users or allowed_groups"));
    let empty = format!("[imds]\nrole = \"piyo\"\n{MINIMAL}allowed_users = []\n");
    assert_eq!(
        problems(&empty)[0].key,
        "imds.role",
        "an empty list restricts nothing"
    );
    let users = format!("[imds]\nrole = \"piyo\"\n{MINIMAL}allowed_users = [\"hoge\"]\n");
    assert!(from_toml(&users, "h").is_ok());
}

/// The guard's mode is one of two words, and its exempt users and groups must exist.
#[test]
fn guard_settings() {
    struct Known;
    impl Accounts for Known {
        fn user_exists(&self, name: &str) -> bool {
            name == "ssm-user"
        }
        fn group_exists(&self, name: &str) -> bool {
            name == "monitoring"
        }
    }
    let role = format!("{MINIMAL}allowed_groups = [\"ops\"]\n");
    let guarded = |guard: &str| {
        format!(
            "[imds]\nrole = \"piyo\"\nguard = \"{guard}\"\nexempt_users = [\"ssm-user\"]\n\
             exempt_groups = [\"monitoring\"]\n{role}"
        )
    };
    let config = from_toml_with(&guarded("redirect"), "h", &Known).unwrap();
    let imds = config.imds.unwrap();
    assert_eq!(imds.guard, Some(GuardMode::Redirect));
    assert_eq!(
        (imds.exempt_users, imds.exempt_groups),
        (vec!["ssm-user".into()], vec!["monitoring".into()])
    );
    let block = from_toml_with(&guarded("block"), "h", &Known).unwrap();
    assert_eq!(block.imds.unwrap().guard, Some(GuardMode::Block));
    let found = from_toml_with(&guarded("drop"), "h", &Known).unwrap_err();
    assert_eq!((found[0].line, found[0].key.as_str()), (3, "imds.guard"));
    let unknown = from_toml_with(&guarded("block"), "h", &AnyName).map(|_| ());
    assert!(unknown.is_ok(), "pure parsing takes names as given");
    struct Nobody;
    impl Accounts for Nobody {
        fn user_exists(&self, _: &str) -> bool {
            false
        }
        fn group_exists(&self, _: &str) -> bool {
            false
        }
    }
    let found = from_toml_with(&guarded("block"), "h", &Nobody).unwrap_err();
    let keys: Vec<(usize, &str)> = found.iter().map(|p| (p.line, p.key.as_str())).collect();
    assert_eq!(keys, [(4, "imds.exempt_users"), (5, "imds.exempt_groups")]);
    assert!(
        found[0]
            .message
            .contains("no such user on this host: ssm-user")
    );
}

/// `guard = "redirect"` sends metadata traffic to `server.listen` exactly: an address that
/// cannot receive IPv4 traffic (IPv6, or every address) is refused at the guard's line.
#[test]
fn redirect_needs_one_ipv4_listen_address() {
    let with_listen = |listen: &str, guard: &str| {
        format!(
            "[server]\nlisten = \"{listen}\"\n[imds]\nrole = \"piyo\"\nguard = \"{guard}\"\n\
             {MINIMAL}allowed_users = [\"root\"]\n"
        )
    };
    for listen in ["[::1]:9357", "[::1]:80"] {
        let found = from_toml_with(&with_listen(listen, "redirect"), "h", &AnyName).unwrap_err();
        let keys: Vec<(usize, &str)> = found.iter().map(|p| (p.line, p.key.as_str())).collect();
        assert!(keys.contains(&(5, "imds.guard")), "{listen}: {found:?}");
        assert!(found.iter().any(|p| p.message.contains("one IPv4 address")));
    }
    let elsewhere = from_toml_with(&with_listen("127.0.0.2:9357", "redirect"), "h", &AnyName);
    assert!(elsewhere.is_ok(), "{elsewhere:?}");
    let blocked = from_toml_with(&with_listen("[::1]:9357", "block"), "h", &AnyName);
    assert!(blocked.is_ok(), "{blocked:?}");
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
    assert!(allowed.roles[0].admits(Some("x"), &["ops".to_owned()], None));
    assert!(!allowed.roles[0].admits(Some("ops"), &[], None));
    assert!(!allowed.roles[0].admits(None, &[], None));
    let container = Some("172.17.0.2".parse().unwrap());
    assert!(
        !allowed.roles[0].admits(None, &[], container),
        "no network named"
    );
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
    let empty = format!("[imds]\nrole = \"piyo\"\n{own}allowed_groups = []\n");
    assert_eq!(
        problems(&empty)[0].key,
        "imds.role",
        "an empty list restricts nothing"
    );
}

#[test]
fn reload_keeps_sessions_whose_sts_settings_are_unchanged() {
    let before = from_toml(MINIMAL, "h").unwrap().roles.remove(0);
    let mut after = before.clone();
    after.allowed_groups = vec!["ops".to_owned()];
    after.token_file = Some(PathBuf::from("/srv/t"));
    assert!(before.same_session(&after));
    after.session_name = Template::literal("other");
    assert!(!before.same_session(&after));
}

#[test]
fn reload_asks_for_a_new_session_when_tags_or_policies_change() {
    let before = from_toml(MINIMAL, "h").unwrap().roles.remove(0);
    let tagged = format!("{MINIMAL}tags = {{ team = \"a\" }}\n");
    let mut after = from_toml(&tagged, "h").unwrap().roles.remove(0);
    assert!(!before.same_session(&after));
    after.tags.clear();
    assert!(before.same_session(&after));
    after.policy_arns = vec!["arn:aws:iam::aws:policy/ReadOnlyAccess".to_owned()];
    assert!(!before.same_session(&after));
}

#[test]
fn session_tags_render_per_user_and_mark_the_role_per_user() {
    let text = format!(
        "{MINIMAL}tags = {{ user = \"{{user}}\", host = \"{{host}}\", \"cost center\" = \"R&D 7\" }}\n\
         transitive_tags = [\"cost center\"]\n"
    )
    .replace("R&D", "RD");
    let role = from_toml(&text, "web-1.example").unwrap().roles.remove(0);
    assert!(role.per_user(), "a tag naming the user serves per user");
    let alice = Subject {
        user: Some((1001, Some("alice".to_owned()))),
        instance_id: None,
    };
    let params = role.session_params(&alice);
    assert_eq!(
        params.tags,
        [
            ("cost center".to_owned(), "RD 7".to_owned()),
            ("host".to_owned(), "web-1".to_owned()),
            ("user".to_owned(), "alice".to_owned()),
        ]
    );
    assert_eq!(role.transitive_tags, ["cost center"]);
}

#[test]
fn session_tags_within_sts_limits() {
    let tag = |tags: &str| format!("{MINIMAL}tags = {{ {tags} }}\n");
    assert_refused_at(&tag("\"aws:x\" = \"1\""), "roles[0].tags.aws:x", "reserves");
    assert_refused_at(
        &tag("\"a,b\" = \"1\""),
        "roles[0].tags.a,b",
        "not a tag key",
    );
    let long_key = "k".repeat(129);
    assert_refused_at(
        &tag(&format!("{long_key} = \"1\"")),
        &format!("roles[0].tags.{long_key}"),
        "1 to 128",
    );
    assert_refused_at(&tag("a = \"x!\""), "roles[0].tags.a", "'!'");
    assert_refused_at(&tag("a = 1"), "roles[0].tags.a", "expected a string");
    assert_refused_at(
        &tag(&format!("a = \"{}\"", "v".repeat(257))),
        "roles[0].tags.a",
        "up to 256",
    );
    assert_refused_at(
        &tag("User = \"1\", user = \"2\""),
        "roles[0].tags.user",
        "only in case",
    );
    let many: Vec<String> = (0..51).map(|n| format!("k{n} = \"v\"")).collect();
    assert_refused_at(&tag(&many.join(", ")), "roles[0].tags", "at most 50");
    let fifty: Vec<String> = (0..50).map(|n| format!("k{n} = \"v\"")).collect();
    assert!(from_toml(&tag(&fifty.join(", ")), "h").is_ok());
    let transitive = format!("{MINIMAL}tags = {{ a = \"1\" }}\ntransitive_tags = [\"b\"]\n");
    assert_refused_at(
        &transitive,
        "roles[0].transitive_tags",
        "not a key of this role's tags",
    );
    assert_refused_at(
        &format!("{MINIMAL}tags = \"a\"\n"),
        "roles[0].tags",
        "expected a table",
    );
    // The line is the tags' own.
    let found = problems(&tag("\"aws:x\" = \"1\""));
    assert_eq!(found[0].line, 5, "{found:?}");
}

#[test]
fn session_policies_are_checked_at_load() {
    let arns = |list: &str| format!("{MINIMAL}policy_arns = [{list}]\n");
    let good = from_toml(
        &arns(
            "\"arn:aws:iam::aws:policy/ReadOnlyAccess\", \"arn:aws:iam::444455556666:policy/team/narrow\"",
        ),
        "h",
    );
    assert_eq!(good.unwrap().roles[0].policy_arns.len(), 2);
    assert_refused_at(
        &arns("\"arn:aws:iam::444455556666:role/piyo-role\""),
        "roles[0].policy_arns",
        "does not name a policy",
    );
    assert_refused_at(
        &arns("\"ReadOnlyAccess\""),
        "roles[0].policy_arns",
        "not an ARN",
    );
    let eleven: Vec<String> = (0..11)
        .map(|n| format!("\"arn:aws:iam::aws:policy/P{n}\""))
        .collect();
    assert_refused_at(
        &arns(&eleven.join(", ")),
        "roles[0].policy_arns",
        "at most 10",
    );

    let directory = std::env::temp_dir().join(format!("ar-policy-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let load = |file: &str, content: Option<&str>| {
        if let Some(content) = content {
            std::fs::write(directory.join(file), content).unwrap();
        }
        let host = Host {
            name: "h",
            accounts: &AnyName,
            directory: &directory,
        };
        from_toml_on(&format!("{MINIMAL}policy = \"{file}\"\n"), &host)
    };
    let policy = "{\n  \"Version\": \"2012-10-17\",\n  \"Statement\": [{\"Effect\": \"Allow\", \
                  \"Action\": \"ec2:DescribeVpcs\", \"Resource\": \"*\"}]\n}\n";
    let role = load("narrow.json", Some(policy)).unwrap().roles.remove(0);
    let read = role.policy.unwrap();
    assert_eq!(
        read.path,
        directory.join("narrow.json"),
        "relative to the file's directory"
    );
    assert!(
        !read.json.contains('\n') && read.json.contains("ec2:DescribeVpcs"),
        "{}",
        read.json
    );
    let refused = |file: &str, content: Option<&str>, words: &str| {
        let found = load(file, content).unwrap_err();
        assert!(
            found
                .iter()
                .any(|p| p.key == "roles[0].policy" && p.line == 5 && p.message.contains(words)),
            "{found:?}"
        );
    };
    refused("missing.json", None, "cannot read the policy file");
    refused("bad.json", Some("{\"Version\": "), "is not JSON");
    refused("list.json", Some("[]"), "not a policy document");
    let big = format!("{{\"Sid\": \"{}\"}}", "x".repeat(2100));
    refused("big.json", Some(&big), "at most 2048");
    std::fs::remove_dir_all(&directory).unwrap();
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
    assert_eq!(arn.role_name(), "piyo-role", "the path dropped");
    let plain = RoleArn::parse("arn:aws-cn:iam::444455556666:role/x").unwrap();
    assert_eq!(plain.role_name(), "x");
    for bad in [
        "piyo-role",
        "arn:aws:iam::444455556666:user/piyo",
        "arn:aws:iam::44445555666:role/piyo",
        "arn:aws:sts::444455556666:role/piyo",
        "arn:aws:iam:us-east-1:444455556666:role/piyo",
        "arn:aws:iam::444455556666:role/",
        "arn:aws:iam::444455556666:role/pi yo",
        "arn::iam::444455556666:role/piyo",
        "arn:AWS:iam::444455556666:role/piyo",
        "nra:aws:iam::444455556666:role/piyo",
    ] {
        assert!(RoleArn::parse(bad).is_err(), "{bad} should be refused");
    }
    assert_eq!(
        arn.to_string(),
        "arn:aws:iam::444455556666:role/team/piyo-role"
    );
}

/// `[sts] endpoint` is an http(s) URL with a host; a role's name is what a `[[roles]]`
/// table may be called (it names a path and a token file).
#[test]
fn endpoints_and_role_names() {
    for good in [
        "https://sts.ap-northeast-1.amazonaws.com",
        "http://127.0.0.1:5000",
    ] {
        assert_eq!(parse_endpoint(good).as_deref(), Ok(good));
    }
    for bad in [
        "https://",
        "http://a b",
        "ftp://sts",
        "sts.amazonaws.com",
        "",
    ] {
        assert!(parse_endpoint(bad).is_err(), "{bad}");
    }
    for good in ["piyo", "a", "piyo_2.role-x", &"r".repeat(64)] {
        assert_eq!(parse_role_name(good).as_deref(), Ok(good));
    }
    for bad in ["", ".", "..", "a/b", "pi yo", "ピヨ", &"r".repeat(65)] {
        assert!(parse_role_name(bad).is_err(), "{bad}");
    }
}

/// Cases the other tests leave out: a list of names holding something else names what it
/// found; `redirect` needs one specific IPv4 listen address, the metadata role itself naming
/// container networks (another role's do not count), and an IPv4 container address.
#[test]
fn names_listen_and_container_redirects() {
    let found = problems(&format!("{MINIMAL}allowed_users = [\"alice\", 7]\n"));
    assert!(
        found[0].message.contains("found integer in the list"),
        "{found:?}"
    );
    assert!(redirect_target("127.0.0.1:9357".parse().unwrap()).is_ok());
    for not_one in ["0.0.0.0:9357", "[::1]:9357"] {
        assert!(
            redirect_target(not_one.parse().unwrap()).is_err(),
            "{not_one}"
        );
    }
    let other_role_networked = format!(
        "{MINIMAL}allowed_users = [\"root\"]\n[[roles]]\nname = \"fuga\"\n\
         arn = \"arn:aws:iam::444455556666:role/fuga-role\"\nallowed_networks = [\"172.17.0.0/16\"]\n\
         [imds]\nrole = \"piyo\"\n[containers]\nlisten = [\"169.254.170.23:80\"]\nimds = \"redirect\"\n"
    );
    assert_refused_at(&other_role_networked, "containers.imds", "allowed_networks");
    let only_v6 = format!(
        "{MINIMAL}allowed_networks = [\"172.17.0.0/16\"]\n[imds]\nrole = \"piyo\"\n\
         [containers]\nlisten = [\"[fd00:ec2::23]:80\"]\nimds = \"redirect\"\n"
    );
    assert_refused_at(&only_v6, "containers.imds", "there is none");
}

/// Asserts that `text` is refused with a problem at `key` whose message says `words`.
fn assert_refused_at(text: &str, key: &str, words: &str) {
    let found = problems(text);
    assert!(
        found
            .iter()
            .any(|p| p.key == key && p.message.contains(words)),
        "{found:?}"
    );
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
    assert!(parse_session_name(&session_name_from_host("ö"), "h").is_ok());
}

#[test]
fn external_id_is_not_echoed() {
    let found = problems(&format!("{MINIMAL}external_id = \"secret value!\"\n"));
    assert!(!found[0].message.contains("secret"), "{:?}", found[0]);
}

/// A template naming the user makes the role per user, which needs the peer lookup;
/// `max_sessions` means something only there.
#[test]
fn per_user_roles_need_the_peer_lookup() {
    let per_user = format!("{MINIMAL}session_name = \"{{user}}@{{host}}\"\nmax_sessions = 8\n");
    let config = from_toml(&per_user, "web-1.example").unwrap();
    let role = &config.roles[0];
    assert!(role.per_user());
    assert_eq!(role.max_sessions, 8);
    let subject = Subject {
        user: Some((1001, Some("alice".to_owned()))),
        instance_id: None,
    };
    assert_eq!(role.session_params(&subject).session_name, "alice@web-1");

    let no_lookup = format!("[server]\npeer_lookup = false\n{per_user}");
    let found = problems(&no_lookup);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].key, "roles[0].session_name");
    assert!(found[0].message.contains("peer_lookup"), "{found:?}");
    // A tag that names the user serves per user too.
    let tagged =
        format!("[server]\npeer_lookup = false\n{MINIMAL}tags = {{ user = \"{{user}}\" }}\n");
    let found = problems(&tagged);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].key, "roles[0].tags");
    assert!(found[0].message.contains("peer_lookup"), "{found:?}");

    let shared = format!("{MINIMAL}max_sessions = 8\n");
    let found = problems(&shared);
    assert_eq!(found[0].key, "roles[0].max_sessions");
    assert!(found[0].message.contains("{user}"), "{found:?}");

    let identity = format!("{MINIMAL}source_identity = \"{{uid}}\"\n");
    assert!(from_toml(&identity, "h").unwrap().roles[0].per_user());
    let unknown = format!("{MINIMAL}session_name = \"{{login}}\"\n");
    assert!(problems(&unknown)[0].message.contains("{login}"));
}

/// `[containers]`: only the addresses SDKs accept, `imds = "redirect"` only for a metadata role
/// that names container networks, and the peer lookup on; networks in CIDR notation.
#[test]
fn containers_and_their_networks() {
    let served = format!(
        "{MINIMAL}allowed_networks = [\"172.17.0.0/16\", \"fd00:1::/64\"]\n\
         [imds]\nrole = \"piyo\"\n[containers]\nlisten = [\"169.254.170.23:80\", \"[fd00:ec2::23]:80\"]\n\
         imds = \"redirect\"\n"
    );
    let config = from_toml(&served, "h").unwrap();
    let containers = config.containers.unwrap();
    assert_eq!(containers.listen.len(), 2);
    assert_eq!(containers.imds, GuardMode::Redirect);
    let role = &config.roles[0];
    let inside = |ip: &str| role.admits(None, &[], Some(ip.parse().unwrap()));
    assert!(inside("172.17.0.2") && inside("fd00:1::5"));
    assert!(!inside("172.18.0.2") && !inside("10.0.0.1"));
    assert!(
        !role.admits(Some("hoge"), &[], None),
        "networks restrict the role"
    );

    let default = format!("{MINIMAL}[containers]\nlisten = [\"169.254.170.23:80\"]\n");
    let config = from_toml(&default, "h").unwrap();
    assert_eq!(
        config.containers.unwrap().imds,
        GuardMode::Block,
        "block by default"
    );

    let keys = |text: &str| -> Vec<(String, String)> {
        problems(text)
            .into_iter()
            .map(|p| (p.key, p.message))
            .collect()
    };
    let found = keys(&format!(
        "{MINIMAL}[containers]\nlisten = [\"10.0.0.5:80\"]\n"
    ));
    assert_eq!(found[0].0, "containers.listen");
    assert!(found[0].1.contains("169.254.170.23"), "{found:?}");
    let found = keys(&format!(
        "{MINIMAL}[containers]\nlisten = [\"169.254.170.23:80\"]\nimds = \"redirect\"\n"
    ));
    assert_eq!(found[0].0, "containers.imds");
    assert!(found[0].1.contains("allowed_networks"), "{found:?}");
    let found = keys(&format!(
        "[server]\npeer_lookup = false\n{MINIMAL}[containers]\nlisten = [\"169.254.170.23:80\"]\n"
    ));
    assert!(
        found
            .iter()
            .any(|(k, m)| k == "containers.listen" && m.contains("peer_lookup")),
        "{found:?}"
    );
    let found = keys(&format!(
        "{MINIMAL}allowed_networks = [\"172.17.0.1/16\"]\n"
    ));
    assert!(
        found[0].1.contains("172.17.0.0/16"),
        "suggests the network: {found:?}"
    );
    let found = keys(&format!("{MINIMAL}allowed_networks = [\"172.17.0.0\"]\n"));
    assert!(found[0].1.contains("prefix"), "{found:?}");
    // A port a local user could take while the daemon is down is refused: 1024 and up, and 0.
    for port in [1024, 8080, 0] {
        let found = keys(&format!(
            "{MINIMAL}[containers]\nlisten = [\"169.254.170.23:{port}\"]\n"
        ));
        assert_eq!(found[0].0, "containers.listen", "{port}");
        assert!(found[0].1.contains("privileged port"), "{port}: {found:?}");
    }
    let privileged = format!("{MINIMAL}[containers]\nlisten = [\"169.254.170.23:1023\"]\n");
    assert!(from_toml(&privileged, "h").is_ok());
}

/// External ids, host-derived session names, account names and networks at their edges.
#[test]
fn values_at_their_edges() {
    assert!(parse_external_id("tenant:42/prod").is_ok());
    for bad in ["x", "a b", "ok?"] {
        assert!(parse_external_id(bad).is_err(), "{bad}");
    }
    assert_eq!(session_name_from_host("ab"), "ab");
    assert_eq!(session_name_from_host("a"), "assume-roled");
    assert_eq!(session_name_from_host("web 1"), "web-1");
    for good in ["alice", "_svc", "a.b-c_d1", &"a".repeat(32)] {
        assert!(is_account_name(good), "{good}");
    }
    for bad in ["Alice", "9abc", "-x", "a b", "", &"a".repeat(33)] {
        assert!(!is_account_name(bad), "{bad}");
    }
    let network = |text: &str| Network::parse(text).unwrap();
    let inside = |net: &str, ip: &str| network(net).contains(ip.parse().unwrap());
    assert!(inside("172.17.0.0/16", "172.17.255.255") && !inside("172.17.0.0/16", "172.18.0.0"));
    assert!(inside("10.0.0.0/8", "10.200.1.1") && !inside("10.0.0.0/8", "11.0.0.0"));
    assert!(inside("192.0.2.7/32", "192.0.2.7") && !inside("192.0.2.7/32", "192.0.2.6"));
    assert!(inside("0.0.0.0/0", "203.0.113.9"));
    assert!(inside("fd00::/8", "fd12::1") && !inside("fd00::/8", "fe00::1"));
    assert!(inside("fd00:1::/64", "fd00:1::ffff") && !inside("fd00:1::/64", "fd00:2::1"));
    assert!(inside("::/0", "2001:db8::1") && !inside("::/0", "10.0.0.1"));
    assert!(!inside("10.0.0.0/8", "::ffff:10.0.0.1"));
    assert_eq!(network("172.17.0.0/16").to_string(), "172.17.0.0/16");
    // A network written with host bits set is refused with the network it may have meant.
    for (written, meant) in [
        ("10.1.2.3/8", "10.0.0.0/8"),
        ("fd00:1::5/64", "fd00:1::/64"),
    ] {
        let refused = Network::parse(written).unwrap_err();
        assert!(refused.contains(meant), "{written}: {refused}");
    }
}
