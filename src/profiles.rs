//! The daemon's roles as AWS profiles: the `credentials` and `profiles` commands.
//!
//! Tools that pick a role by profile name (Terraform's `provider "aws"` blocks, boto3's
//! `Session(profile_name=…)`, `aws --profile`) cannot use the one role a shell's
//! `AWS_CONTAINER_CREDENTIALS_FULL_URI` names. For them every role becomes a profile whose
//! `credential_process` is `assume-roled credentials --role NAME`: it asks the running daemon
//! with the role's token file, as any client does (so the same grant, audit line and per-user
//! session apply), and prints the set in the `credential_process` format. It never calls STS and
//! never writes anything; what it prints lives in the calling process only.
//!
//! `profiles` writes those stanzas, for the roles whose token file the user can read, and with
//! `--write` appends the missing ones to `~/.aws/config`. Everything but reading files and
//! asking the daemon is pure.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::client;
use crate::config::DEFAULT_CONFIG_PATH;
use crate::env::{Endpoint, Endpoints};

/// A role's set as the daemon serves it (the ECS container-credentials format).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Served {
    access_key_id: String,
    secret_access_key: String,
    token: String,
    expiration: String,
}

/// The daemon's error body.
#[derive(Deserialize)]
struct Refusal {
    code: String,
    message: String,
}

/// Role `role`'s credentials from the running daemon at `endpoints`, in the `credential_process`
/// format; an error names the cause (no such role, the token file unreadable, the daemon down,
/// a refusal in the daemon's words) and nothing is printed then.
pub fn credentials(endpoints: &Endpoints, role: &str) -> anyhow::Result<String> {
    let endpoint = find(endpoints, role)?;
    let path = format!("/roles/{role}");
    let answer = client::get(endpoints.listen, &path, &endpoint.token_file)
        .with_context(|| format!("role {role}"))?;
    if answer.status != 200 {
        bail!("role {role}: {}", refusal(answer.status, &answer.body));
    }
    credential_process_json(&answer.body).map_err(|reason| anyhow::anyhow!("role {role}: {reason}"))
}

fn find<'e>(endpoints: &'e Endpoints, role: &str) -> anyhow::Result<&'e Endpoint> {
    (endpoints.roles.iter().find(|e| e.name == role)).with_context(|| {
        let names: Vec<&str> = endpoints.roles.iter().map(|e| e.name.as_str()).collect();
        format!(
            "no role named {role:?}; configured roles: {}",
            names.join(", ")
        )
    })
}

/// What a non-200 answer means, in the daemon's words when it gave some.
fn refusal(status: u16, body: &str) -> String {
    match serde_json::from_str::<Refusal>(body) {
        // Printed on a terminal: no control characters from the answer.
        Ok(Refusal { code, message }) => format!(
            "the daemon refused ({status} {}): {}",
            printable(&code),
            printable(&message)
        ),
        Err(_) => format!("the daemon answered {status}"),
    }
}

/// `text` with each control character (a terminal escape, a newline) as `?`.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// The ECS format's body turned into `credential_process`'s (version 1): every field present and
/// not empty, or an error (never partial JSON).
pub fn credential_process_json(served: &str) -> Result<String, String> {
    let served: Served = serde_json::from_str(served)
        .map_err(|error| format!("the daemon's answer is not a credentials set ({error})"))?;
    let fields = [
        &served.access_key_id,
        &served.secret_access_key,
        &served.token,
        &served.expiration,
    ];
    if fields.iter().any(|field| field.is_empty()) {
        return Err("the daemon's answer has an empty field".to_owned());
    }
    let json = serde_json::json!({
        "Version": 1,
        "AccessKeyId": served.access_key_id,
        "SecretAccessKey": served.secret_access_key,
        "SessionToken": served.token,
        "Expiration": served.expiration,
    });
    Ok(json.to_string())
}

/// One `[profile NAME]` stanza per role whose token file the user can read (`readable`), in
/// configuration order, each running `binary credentials --role NAME` (and `--config PATH`
/// when not the default: an option of the command, so after it).
pub fn stanzas(
    endpoints: &Endpoints,
    readable: impl Fn(&Path) -> bool,
    binary: &Path,
    config: &Path,
) -> Vec<Stanza> {
    let binary = shell_word(&binary.to_string_lossy());
    let mut options = String::new();
    if config != Path::new(DEFAULT_CONFIG_PATH) {
        let _ = write!(
            options,
            " --config {}",
            shell_word(&config.to_string_lossy())
        );
    }
    (endpoints.roles.iter())
        .filter(|role| readable(&role.token_file))
        .map(|role| Stanza {
            profile: role.name.clone(),
            text: format!(
                "[profile {}]\ncredential_process = {binary} credentials --role {}{options}\n",
                role.name, role.name
            ),
        })
        .collect()
}

/// One profile's section of `~/.aws/config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stanza {
    /// The profile's name (the role's).
    pub profile: String,
    /// The section, header included.
    pub text: String,
}

/// The stanzas `existing` (the text of an AWS config file) does not have a profile of that name
/// for, as the text to append: nothing when every one is there. Other profiles, and profiles of
/// those names however written, are left alone.
pub fn missing(existing: &str, stanzas: &[Stanza]) -> String {
    let present = profile_names(existing);
    let mut text = String::new();
    for stanza in stanzas.iter().filter(|s| !present.contains(&s.profile)) {
        if !text.is_empty() || !(existing.is_empty() || existing.ends_with("\n\n")) {
            text.push('\n');
        }
        text.push_str(&stanza.text);
    }
    if !text.is_empty() && !existing.is_empty() && !existing.ends_with('\n') {
        text.insert(0, '\n');
    }
    text
}

/// The profiles an AWS config file defines: `[profile NAME]` sections, and `[default]` (other
/// sections, `[sso-session x]`, `[services x]`, or a bare `[x]`, which the tools do not read as
/// a profile there, are not profiles).
fn profile_names(text: &str) -> Vec<String> {
    (text.lines())
        .filter_map(|line| {
            let header = line.trim().strip_prefix('[')?.strip_suffix(']')?.trim();
            match header.strip_prefix("profile") {
                Some(rest) if rest.starts_with(char::is_whitespace) => Some(rest.trim().to_owned()),
                _ => (header == "default").then(|| header.to_owned()),
            }
        })
        .collect()
}

/// `text` as one word for the AWS CLI and SDKs, which split `credential_process` as a POSIX
/// shell does (without running one): quoted only when it must be.
fn shell_word(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+=:@,".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        return text.to_owned();
    }
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The AWS config file the CLI and SDKs read: `$AWS_CONFIG_FILE` (a leading `~/` is the home
/// directory, as they read it), else `~/.aws/config`.
pub fn aws_config_path() -> anyhow::Result<std::path::PathBuf> {
    let home = || {
        let home = std::env::var_os("HOME").filter(|h| !h.is_empty());
        home.context("HOME is not set: say where with AWS_CONFIG_FILE")
    };
    match std::env::var("AWS_CONFIG_FILE")
        .ok()
        .filter(|p| !p.is_empty())
    {
        Some(path) => match path.strip_prefix("~/") {
            Some(rest) => Ok(Path::new(&home()?).join(rest)),
            None => Ok(path.into()),
        },
        None => Ok(Path::new(&home()?).join(".aws/config")),
    }
}

/// Appends what `stanzas` adds to the AWS config file at `path` (created, with its directory,
/// private to the user when missing); returns the profiles added. The file is opened once,
/// never through a symbolic link, must be the user's and not writable by others (another
/// user's file could hold a profile of that name running their command), and is locked while
/// read and appended to, so that two runs at once add each profile once. Every other line is
/// left as it is, and the file keeps its mode.
pub fn append_missing(path: &Path, stanzas: &[Stanza]) -> anyhow::Result<Vec<String>> {
    use std::io::{Read, Write as _};
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
    if let Some(directory) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(directory)
            .with_context(|| format!("cannot create {}", directory.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| {
            format!(
                "cannot open {} (a symbolic link is not followed)",
                path.display()
            )
        })?;
    let metadata = file.metadata()?;
    let me = uzers::get_effective_uid();
    if metadata.uid() != me || metadata.mode() & 0o002 != 0 {
        bail!(
            "{} belongs to uid {} (mode {:o}), not to you alone: nothing written",
            path.display(),
            metadata.uid(),
            metadata.mode() & 0o7777
        );
    }
    file.lock()
        .with_context(|| format!("cannot lock {}", path.display()))?;
    let mut existing = String::new();
    file.read_to_string(&mut existing)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let present = profile_names(&existing);
    let added: Vec<String> = (stanzas.iter())
        .filter(|s| !present.contains(&s.profile))
        .map(|s| s.profile.clone())
        .collect();
    let text = missing(&existing, stanzas);
    if !text.is_empty() {
        file.write_all(text.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(added)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn endpoints() -> Endpoints {
        let role = |name: &str| Endpoint {
            name: name.to_owned(),
            token_file: PathBuf::from(format!("/var/lib/assume-roled/{name}.token")),
            own_token: true,
        };
        Endpoints {
            listen: "127.0.0.1:9911".parse().unwrap(),
            containers: vec![],
            roles: vec![role("piyo"), role("other"), role("secret")],
        }
    }

    #[test]
    fn a_served_set_becomes_credential_process_json() {
        let served = r#"{"AccessKeyId":"ASIAEXAMPLE","SecretAccessKey":"s","Token":"t",
            "Expiration":"2026-12-06T15:00:00Z","RoleArn":"arn:aws:iam::444455556666:role/piyo-role"}"#;
        let json: serde_json::Value =
            serde_json::from_str(&credential_process_json(served).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"Version": 1, "AccessKeyId": "ASIAEXAMPLE",
                "SecretAccessKey": "s", "SessionToken": "t", "Expiration": "2026-12-06T15:00:00Z"})
        );
        let empty = served.replace("\"s\"", "\"\"");
        assert!(credential_process_json(&empty).is_err());
        assert!(credential_process_json(r#"{"code":"x","message":"y"}"#).is_err());
    }

    #[test]
    fn a_refusal_is_said_in_the_daemons_words() {
        let body = r#"{"code":"NotAdmitted","message":"user bob may not have role piyo"}"#;
        assert_eq!(
            refusal(403, body),
            "the daemon refused (403 NotAdmitted): user bob may not have role piyo"
        );
        assert_eq!(refusal(502, "<html>"), "the daemon answered 502");
        let escape = r#"{"code":"X","message":"a\u001b[2Jb\nc"}"#;
        assert_eq!(refusal(403, escape), "the daemon refused (403 X): a?[2Jb?c");
    }

    #[test]
    fn an_unknown_role_names_the_configured_ones() {
        let error = credentials(&endpoints(), "nope").unwrap_err().to_string();
        assert_eq!(
            error,
            "no role named \"nope\"; configured roles: piyo, other, secret"
        );
    }

    #[test]
    fn stanzas_for_the_roles_the_user_can_open() {
        let readable = |path: &Path| !path.ends_with("secret.token");
        let binary = Path::new("/usr/bin/assume-roled");
        let default = stanzas(
            &endpoints(),
            readable,
            binary,
            Path::new(DEFAULT_CONFIG_PATH),
        );
        let texts: Vec<&str> = default.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "[profile piyo]\ncredential_process = /usr/bin/assume-roled credentials --role piyo\n",
                "[profile other]\ncredential_process = /usr/bin/assume-roled credentials --role other\n",
            ]
        );
        let other = stanzas(
            &endpoints(),
            readable,
            Path::new("/opt/my tools/assume-roled"),
            Path::new("/etc/x.toml"),
        );
        assert!(
            other[0].text.contains(
                "credential_process = '/opt/my tools/assume-roled' credentials --role piyo \
                 --config /etc/x.toml\n"
            ),
            "{}",
            other[0].text
        );
    }

    #[test]
    fn only_missing_profiles_are_appended_and_twice_adds_nothing() {
        let all = stanzas(
            &endpoints(),
            |_| true,
            Path::new("/usr/bin/assume-roled"),
            Path::new(DEFAULT_CONFIG_PATH),
        );
        let existing = "[default]\nregion = eu-west-1\n[profile  other ]\nregion = x";
        let added = missing(existing, &all);
        assert!(added.starts_with("\n\n[profile piyo]\n"), "{added:?}");
        assert!(added.contains("\n\n[profile secret]\n"), "{added:?}");
        assert!(!added.contains("[profile other]"), "{added:?}");
        let after = format!("{existing}{added}");
        assert_eq!(missing(&after, &all), "");
        assert_eq!(
            profile_names(&after),
            ["default", "other", "piyo", "secret"]
        );
        let bare = "[piyo]\nregion = x\n[sso-session piyo]\n";
        assert!(
            missing(bare, &all).contains("[profile piyo]"),
            "a bare [piyo] is no profile"
        );
        assert!(missing("", &all[..1]).starts_with("[profile piyo]"));
    }

    #[test]
    fn append_missing_creates_a_private_file_and_keeps_an_existing_ones_mode() {
        use std::os::unix::fs::PermissionsExt;
        let directory = std::env::temp_dir().join(format!("ar-profiles-{}", std::process::id()));
        let path = directory.join(".aws/config");
        let all = stanzas(
            &endpoints(),
            |_| true,
            Path::new("/b"),
            Path::new(DEFAULT_CONFIG_PATH),
        );
        assert_eq!(
            append_missing(&path, &all).unwrap(),
            ["piyo", "other", "secret"]
        );
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(&path), mode(path.parent().unwrap())), (0o600, 0o700));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let before = std::fs::read_to_string(&path).unwrap();
        assert!(append_missing(&path, &all).unwrap().is_empty());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
        assert_eq!(mode(&path), 0o644);
        // Never through a link (another user's file there would run their command).
        let link = directory.join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let refused = append_missing(&link, &all).unwrap_err().to_string();
        assert!(refused.contains("symbolic link"), "{refused}");
        // Never a file others may write.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let refused = append_missing(&path, &all).unwrap_err().to_string();
        assert!(refused.contains("not to you alone"), "{refused}");
        std::fs::remove_dir_all(&directory).unwrap();
    }
}
