//! Several Unix users on one host: the daemon learns each connection's user from the kernel's
//! socket table (and, with `peer_processes`, its executable), serves a role restricted by
//! `allowed_groups` only to members (a copy of the token does not help anyone else), and writes
//! an audit line naming the user and executable.
//! Test users are created with `useradd` (the tests run as root, as CI does).

mod support;

use std::process::{Command, Output};

use support::*;

const MEMBER: &str = "ar-test-member";
const OUTSIDER: &str = "ar-test-outsider";
const GROUP: &str = "ar-test-piyo";

fn ensure_users() {
    let exists = |what: &str, name: &str| {
        Command::new("getent")
            .args([what, name])
            .output()
            .unwrap()
            .status
            .success()
    };
    if !exists("group", GROUP) {
        assert!(
            Command::new("groupadd")
                .arg(GROUP)
                .status()
                .unwrap()
                .success()
        );
    }
    for (user, groups) in [(MEMBER, GROUP), (OUTSIDER, "")] {
        if !exists("passwd", user) {
            let mut command = Command::new("useradd");
            command.args(["--no-create-home", "--shell", "/usr/sbin/nologin"]);
            if !groups.is_empty() {
                command.args(["--groups", groups]);
            }
            assert!(
                command.arg(user).status().unwrap().success(),
                "useradd {user}"
            );
        }
    }
}

fn uid_of(user: &str) -> String {
    let output = Command::new("id").args(["-u", user]).output().unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// `curl` run as `user` (with that user's groups), sending `token`.
fn curl_as(user: &str, url: &str, token: &str) -> Output {
    Command::new("setpriv")
        .args([
            &format!("--reuid={user}"),
            &format!("--regid={user}"),
            "--init-groups",
            "--",
        ])
        .args([
            "curl",
            "-s",
            "-w",
            "\n%{http_code}",
            "-H",
            &format!("Authorization: {token}"),
            url,
        ])
        .output()
        .unwrap()
}

fn status_of(output: &Output) -> String {
    stdout(output).lines().last().unwrap_or_default().to_owned()
}

#[test]
fn roles_restricted_to_a_group_and_audited_by_user() {
    ensure_users();
    let moto = Moto::start();
    let dir = TempDir::new("users");
    let config = format!(
        "{}allowed_groups = [\"{GROUP}\"]\n",
        moto.config(&dir.path().join("state/token"))
    )
    .replace("[sts]", "peer_processes = true\n\n[sts]");
    let daemon = Daemon::start_with(dir, &config, &moto.host_env(), &[]);
    daemon.wait_ready();
    let token = daemon.token();
    let url = daemon.uri("piyo");

    let member = curl_as(MEMBER, &url, &token);
    assert_eq!(status_of(&member), "200", "{}", stdout(&member));
    assert!(stdout(&member).contains("\"AccountId\":\"444455556666\""));

    let outsider = curl_as(OUTSIDER, &url, &token);
    assert_eq!(
        status_of(&outsider),
        "403",
        "a copy of the token must not be enough"
    );
    assert!(!stdout(&outsider).contains("SecretAccessKey"));

    let root = daemon.get("/roles/piyo", &[("Authorization", &token)]);
    assert_eq!(root.0, 403, "root is not in the group either");

    let log = daemon.log();
    let served = log
        .lines()
        .find(|l| l.contains("audit: credentials served"))
        .expect("an audit line");
    assert!(
        served.contains(&format!("uid={}", uid_of(MEMBER))),
        "{served}"
    );
    assert!(served.contains(&format!("user={MEMBER}")), "{served}");
    assert!(served.contains("exe=/usr/bin/curl"), "{served}");
    assert!(served.contains("access_key_id=ASIA…"), "{served}");
    let refused = log
        .lines()
        .find(|l| l.contains("credentials refused") && l.contains(OUTSIDER))
        .expect("an audit line for the refusal");
    assert!(
        refused.contains(&format!("uid={}", uid_of(OUTSIDER))),
        "{refused}"
    );
    for secret in known_secrets(
        &moto,
        &daemon,
        &serde_json::from_str(stdout(&member).lines().next().unwrap()).unwrap(),
    ) {
        assert!(!log.contains(&secret), "a secret in the log");
    }
}
