//! Several Unix users on one host: the daemon learns each connection's user from the kernel's
//! socket table (and, with `peer_processes`, its executable), serves a role restricted by
//! `allowed_groups` only to members (a copy of the token does not help anyone else), and writes
//! an audit line naming the user and executable. A role with its own token file gives it to
//! its group: members read it and get that role through the real aws CLI, others cannot read it,
//! and moving the role to another group replaces the token. A role whose session name names
//! the user gives each member a session of their own: the other account sees who acted.
//! Test users are created with `useradd` (the tests run as root, as CI does).

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Command, Output};

use support::*;

const MEMBER: &str = "ar-test-member";
/// A second member of `GROUP`.
const SECOND: &str = "ar-test-second";
const OUTSIDER: &str = "ar-test-outsider";
const GROUP: &str = "ar-test-piyo";
/// A second group, which the role is moved to.
const OTHER_GROUP: &str = "ar-test-fuga";

/// The test users and groups, made once per test binary and idempotently.
fn ensure_users() {
    ensure_accounts(
        &[GROUP, OTHER_GROUP],
        &[(MEMBER, &[GROUP]), (SECOND, &[GROUP]), (OUTSIDER, &[])],
    );
}

/// The tests that flood the daemon (thousands of connections or processes) run one at a time:
/// on two cores, two floods at once would measure each other, not the daemon.
fn one_flood_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static FLOODS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    FLOODS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn uid_of(user: &str) -> String {
    let output = Command::new("id").args(["-u", user]).output().unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn gid_of(group: &str) -> u32 {
    let output = Command::new("getent")
        .args(["group", group])
        .output()
        .unwrap();
    stdout(&output).split(':').nth(2).unwrap().parse().unwrap()
}

/// `curl` run as `user` (with that user's groups), sending `token`.
fn curl_as(user: &str, url: &str, token: &str) -> Output {
    as_user(user, "curl")
        .args([
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

/// The metadata credentials of `role_name` as `user` would read them: an IMDSv2 session token,
/// then the credentials path with it. Returns the status and body of the second request.
fn metadata_credentials_as(
    user: &str,
    address: std::net::SocketAddr,
    role_name: &str,
) -> (String, String) {
    let path = format!("meta-data/iam/security-credentials/{role_name}");
    metadata_get_as(user, address, &path)
}

/// `path` (below `/latest/`) of the metadata endpoint as `user` reads it: an IMDSv2 session
/// token, then the path with it. Returns the status and body of the second request.
fn metadata_get_as(user: &str, address: std::net::SocketAddr, path: &str) -> (String, String) {
    let base = format!("http://{address}/latest");
    let session = as_user(user, "curl")
        .args([
            "-s",
            "-X",
            "PUT",
            "-H",
            "X-aws-ec2-metadata-token-ttl-seconds: 60",
        ])
        .arg(format!("{base}/api/token"))
        .output()
        .unwrap();
    let read = as_user(user, "curl")
        .args(["-s", "-w", "\n%{http_code}", "-H"])
        .arg(format!("X-aws-ec2-metadata-token: {}", stdout(&session)))
        .arg(format!("{base}/{path}"))
        .output()
        .unwrap();
    (status_of(&read), stdout(&read))
}

fn status_of(output: &Output) -> String {
    stdout(output).lines().last().unwrap_or_default().to_owned()
}

#[test]
fn roles_restricted_to_a_group_and_audited_by_user() {
    ensure_users();
    let moto = Moto::start();
    let dir = TempDir::new("users");
    let solo = format!(
        "\n[[roles]]\nname = \"solo\"\narn = \"{PIYO_ARN}\"\nallowed_users = [\"{MEMBER}\"]\n"
    );
    let config = format!(
        "{}allowed_groups = [\"{GROUP}\"]\n{solo}",
        moto.config_with(&dir.path().join("state/token"), "peer_processes = true")
    );
    // piyo is also the metadata role, the rest of the metadata passed through from a double.
    let double = ImdsDouble::start(&moto);
    let upstream = &double.endpoint;
    let config = format!("{config}\n[imds]\nrole = \"piyo\"\nupstream = \"{upstream}\"\n");
    let daemon = Daemon::start_with(dir, &config, &moto.host_env(), &[]);
    daemon.wait_ready();
    let token = daemon.token();
    let url = daemon.uri("piyo");

    // The metadata endpoint has no bearer token: allowed_groups is all that stands between a
    // local user and the role there.
    let (status, body) = metadata_credentials_as(MEMBER, daemon.address, "piyo-role");
    assert_eq!(status, "200", "{body}");
    assert!(body.contains("\"Code\":\"Success\""), "{body}");
    let (status, body) = metadata_credentials_as(OUTSIDER, daemon.address, "piyo-role");
    assert_eq!(status, "403", "{body}");
    assert!(!body.contains("SecretAccessKey"), "{body}");
    // To anyone the role does not admit, the endpoint is an instance with no role: 404 for
    // every other path, the identity document (which would authenticate them as the
    // instance elsewhere) included; the member reads them.
    let document = "dynamic/instance-identity/document";
    for path in [
        "meta-data/iam/",
        "meta-data/iam/security-credentials/",
        "meta-data/iam/info",
        "meta-data/instance-id",
        "meta-data/placement/region",
        document,
    ] {
        let (status, body) = metadata_get_as(OUTSIDER, daemon.address, path);
        assert_eq!(status, "404", "{path}: {body}");
        let (status, body) = metadata_get_as(MEMBER, daemon.address, path);
        assert_eq!(status, "200", "{path} (member): {body}");
    }

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

    // allowed_users: the named user only, whatever the token.
    let solo = daemon.uri("solo");
    assert_eq!(status_of(&curl_as(MEMBER, &solo, &token)), "200");
    assert_eq!(status_of(&curl_as(OUTSIDER, &solo, &token)), "403");

    let log = daemon.log();
    let served = log
        .lines()
        .find(|l| l.contains("audit: credentials served"))
        .expect("an audit line");
    assert!(
        served.contains(&format!("uid={}", uid_of(MEMBER))),
        "{served}"
    );
    assert!(served.contains(&format!("user=\"{MEMBER}\"")), "{served}");
    assert!(served.contains("exe=\"/usr/bin/curl\""), "{served}");
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

#[test]
fn a_role_token_file_belongs_to_its_group() {
    ensure_users();
    let moto = Moto::start();
    let dir = TempDir::new("role-token");
    let role_file = dir.path().join("roles/team.token");
    let team = format!(
        "\n[[roles]]\nname = \"team\"\narn = \"{PIYO_ARN}\"\nsession_name = \"hoge\"\n\
         token_file = \"{}\"\ngroup = \"{GROUP}\"\n",
        role_file.display()
    );
    // `env` prints the configured address, so this test needs a fixed port.
    let listen = format!("127.0.0.1:{}", free_port());
    let config = format!("{}{team}", moto.config(&dir.path().join("state/token")))
        .replace("127.0.0.1:0", &listen);
    let daemon = Daemon::start_with(dir, &config, &moto.host_env(), &[]);
    daemon.wait_ready();

    let metadata = std::fs::metadata(&role_file).unwrap();
    assert_eq!(metadata.mode() & 0o777, 0o640);
    assert_eq!(metadata.gid(), gid_of(GROUP));
    let team_token = std::fs::read_to_string(&role_file).unwrap();
    assert!(!team_token.ends_with('\n'));

    // A member reads the file; `assume-roled env` (no --role) picks the one role the member can
    // read, and the real aws CLI, run as the member with those lines, acts as the role.
    let read = as_user(MEMBER, "cat").arg(&role_file).output().unwrap();
    assert_eq!(stdout(&read), team_token);
    // The configuration is the daemon's group's to read: users get the endpoints from the
    // public copy the daemon writes beside its token.
    let private = std::fs::Permissions::from_mode(0o640);
    std::fs::set_permissions(&daemon.config_file, private).unwrap();
    let public_copy = daemon.token_file.with_file_name("endpoints");
    let env = as_user(MEMBER, daemon_binary())
        .args(["env", "--config"])
        .arg(&daemon.config_file)
        .arg("--endpoints")
        .arg(&public_copy)
        .output()
        .unwrap();
    assert!(env.status.success(), "{}", stderr(&env));
    let lines = stdout(&env);
    assert!(lines.contains("/roles/team'"), "{lines}");
    let whoami = {
        let mut command = as_user(MEMBER, venv_tool("aws"));
        isolated(&mut command)
            .env("AWS_ENDPOINT_URL", &moto.endpoint)
            .envs(exported(&lines))
            .args(WHOAMI);
        command.output().unwrap()
    };
    assert_acts_as_piyo(&whoami);

    // Others can neither read the file nor get lines pointing at it.
    let denied = as_user(OUTSIDER, "cat").arg(&role_file).output().unwrap();
    assert!(!denied.status.success());
    assert!(stdout(&denied).is_empty());
    let env = as_user(OUTSIDER, daemon_binary())
        .args(["env", "--config"])
        .arg(&daemon.config_file)
        .arg("--endpoints")
        .arg(&public_copy)
        .output()
        .unwrap();
    assert!(!env.status.success());
    assert!(
        stderr(&env).contains("cannot read the token file of any role"),
        "{}",
        stderr(&env)
    );

    // Each token opens its own roles only.
    let server_token = daemon.token();
    let status = |path: &str, token: &str| daemon.get(path, &[("Authorization", token)]).0;
    assert_eq!(status("/roles/team", &team_token), 200);
    assert_eq!(status("/roles/team", &server_token), 401);
    assert_eq!(status("/roles/piyo", &team_token), 401);
    assert_eq!(status("/status", &team_token), 401);

    // Moved to another group on reload: a new token, so the old one (which a former member may
    // have kept) stops working; the role keeps its credentials (no new session).
    let moved = config.replace(
        &format!("group = \"{GROUP}\""),
        &format!("group = \"{OTHER_GROUP}\""),
    );
    daemon.reload(&moved);
    assert!(
        daemon.log().contains(r#"kept=["piyo", "team"]"#),
        "{}",
        daemon.log()
    );
    assert_eq!(
        std::fs::metadata(&role_file).unwrap().gid(),
        gid_of(OTHER_GROUP)
    );
    let new_token = std::fs::read_to_string(&role_file).unwrap();
    assert_ne!(new_token, team_token);
    assert_eq!(status("/roles/team", &team_token), 401);
    assert_eq!(status("/roles/team", &new_token), 200);
    assert!(
        !as_user(MEMBER, "cat")
            .arg(&role_file)
            .output()
            .unwrap()
            .status
            .success()
    );
    assert!(daemon.log().contains("token file given to a new group"));

    // Without `group`, the file goes back to the daemon's group (root's here), again with a new
    // token: the group that had it can no longer use what it read.
    let ungrouped = config.replace(&format!("group = \"{GROUP}\"\n"), "");
    daemon.reload(&ungrouped);
    assert_eq!(std::fs::metadata(&role_file).unwrap().gid(), 0);
    let third_token = std::fs::read_to_string(&role_file).unwrap();
    assert_ne!(third_token, new_token);
    assert_eq!(status("/roles/team", &new_token), 401);
    assert_eq!(status("/roles/team", &third_token), 200);

    // A group that does not exist: the reload is refused and everything stays as it was.
    let unknown = config.replace(GROUP, "ar-test-no-such-group");
    daemon.reload_until(&unknown, "reload failed: a token file is unusable");
    assert!(
        daemon
            .log()
            .contains("there is no group ar-test-no-such-group")
    );
    assert_eq!(std::fs::read_to_string(&role_file).unwrap(), third_token);
    assert_eq!(status("/roles/team", &third_token), 200);
    for secret in [&team_token, &new_token, &third_token, &server_token] {
        assert!(
            !daemon.log().contains(secret.as_str()),
            "a token in the log"
        );
    }
}

/// One user holding 1,100 idle connections (far more than `max_connections`, here 256 so that
/// the flood overflows it at once) does not make another user wait: past its 128 places the
/// flood's connections are closed at once, and the other user's request is answered within
/// 2 s. Without the per-user limit it waits for the 5 s header timeout to free a place.
#[test]
fn one_user_cannot_crowd_out_the_others() {
    let _alone = one_flood_at_a_time();
    ensure_users();
    let moto = Moto::start();
    let dir = TempDir::new("flood");
    let config = moto.config_with(&dir.path().join("state/token"), "max_connections = 256");
    let daemon = Daemon::start_with(dir, &config, &moto.host_env(), &[]);
    daemon.wait_ready();
    let flood = format!(
        "import resource, socket, sys, time\n\
         soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n\
         resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))\n\
         held = [socket.create_connection(('127.0.0.1', {port})) for _ in range(1100)]\n\
         print('holding', len(held), flush=True)\n\
         time.sleep(30)\n",
        port = daemon.address.port()
    );
    let mut flooder = as_user(OUTSIDER, "/usr/bin/python3")
        .args(["-c", &flood])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let flood_output = flooder.stdout.take().unwrap();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(flood_output), &mut line).unwrap();
    assert_eq!(
        line.trim(),
        "holding 1100",
        "the flood could not open its connections"
    );
    let started = std::time::SystemTime::now();
    let answer = curl_as(MEMBER, &daemon.uri("piyo"), &daemon.token());
    let took = started.elapsed().unwrap();
    let _ = flooder.kill();
    let _ = flooder.wait();
    assert_eq!(status_of(&answer), "200", "{}", stdout(&answer));
    assert!(
        took < std::time::Duration::from_secs(2),
        "answered after {took:?}"
    );
    // What the fairness alert reads: the flood's connections past its 128, each counted.
    let (_, metrics) = daemon.get("/metrics", &[("Authorization", &daemon.token())]);
    let series = "assume_roled_connections_refused_total{reason=\"user_at_limit\"}";
    let refused = sample(&metrics, series).unwrap_or_default();
    assert!(refused >= 900.0, "{refused} refused: {metrics}");
}

/// The host's short name, as `{host}` renders it.
fn short_host_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    name.trim().split('.').next().unwrap().to_owned()
}

/// Ten requests of `user` at once through curl with `token`; their bodies once all are 200.
fn ten_at_once(user: &str, url: &str, token: &str) -> Vec<serde_json::Value> {
    let header = format!("Authorization: {token}");
    let children: Vec<_> = (0..10)
        .map(|_| {
            as_user(user, "curl")
                .args(["-s", "-w", "\n%{http_code}", "-H", &header, url])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|child| {
            let output = child.wait_with_output().unwrap();
            assert_eq!(status_of(&output), "200", "{}", stdout(&output));
            serde_json::from_str(stdout(&output).lines().next().unwrap()).unwrap()
        })
        .collect()
}

/// A role whose session name and source identity name the user, served to a group through
/// its own token file: each member's tools act as `piyo-role/<user>@<host>` in the other
/// account, with keys of their own; ten requests of a member make one AssumeRole, however they
/// arrive; a user the role does not admit gets 403 and costs no STS call; the shared role
/// beside it keeps its one session; status and metrics list the sessions.
#[test]
fn each_member_acts_under_a_session_of_their_own() {
    ensure_users();
    let moto = Moto::start();
    let proxy = StsProxy::start(&moto);
    let dir = TempDir::new("per-user");
    let role_file = dir.path().join("roles/mine.token");
    let mine = format!(
        "\n[[roles]]\nname = \"mine\"\narn = \"{PIYO_ARN}\"\nsession_name = \"{{user}}@{{host}}\"\n\
         source_identity = \"{{user}}.{{instance_id}}\"\nallowed_groups = [\"{GROUP}\"]\ntoken_file = \"{}\"\n\
         group = \"{GROUP}\"\n",
        role_file.display()
    );
    // Also the metadata role: a user's metadata reads get that user's session. The instance
    // metadata double says the instance id.
    let double = ImdsDouble::start(&moto);
    let metadata = format!(
        "\n[imds]\nrole = \"mine\"\nupstream = \"{}\"\n",
        double.endpoint
    );
    let config = format!(
        "{}{mine}{metadata}",
        moto.config(&dir.path().join("state/token"))
    )
    .replace(&moto.endpoint, &proxy.endpoint);
    let mut daemon = Daemon::start_with(dir, &config, &moto.host_env(), &[]);
    daemon.wait_ready();
    assert_eq!(
        proxy.calls("AssumeRole"),
        1,
        "the shared role only, at start"
    );
    let token = std::fs::read_to_string(&role_file).unwrap();
    let url = daemon.uri("mine");

    let member = ten_at_once(MEMBER, &url, &token);
    let second = ten_at_once(SECOND, &url, &token);
    let key = |body: &serde_json::Value| body["AccessKeyId"].as_str().unwrap().to_owned();
    assert!(member.iter().all(|body| key(body) == key(&member[0])));
    assert!(second.iter().all(|body| key(body) == key(&second[0])));
    assert_ne!(
        key(&member[0]),
        key(&second[0]),
        "each user has keys of their own"
    );
    assert_eq!(proxy.calls("AssumeRole"), 3, "one AssumeRole per user");
    let (status, body) = metadata_credentials_as(SECOND, daemon.address, "piyo-role");
    assert_eq!(status, "200", "{body}");
    let read: serde_json::Value = serde_json::from_str(body.lines().next().unwrap()).unwrap();
    assert_eq!(
        key(&read),
        key(&second[0]),
        "the metadata endpoint: the same user's session"
    );

    let host = short_host_name();
    let mut named = proxy.sessions()[1..].to_vec();
    named.sort();
    let instance = "i-0123456789abcdef0";
    let mut expected = vec![
        (
            format!("{MEMBER}@{host}"),
            Some(format!("{MEMBER}.{instance}")),
        ),
        (
            format!("{SECOND}@{host}"),
            Some(format!("{SECOND}.{instance}")),
        ),
    ];
    expected.sort();
    assert_eq!(
        named, expected,
        "RoleSessionName and SourceIdentity name the user"
    );

    // The real aws CLI, run as each member with the role's token file: the other account sees
    // who it is.
    for user in [MEMBER, SECOND] {
        let mut command = as_user(user, venv_tool("aws"));
        isolated(&mut command)
            .env("AWS_ENDPOINT_URL", &moto.endpoint)
            .env("AWS_CONTAINER_CREDENTIALS_FULL_URI", &url)
            .env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", &role_file)
            .args(WHOAMI);
        let output = command.output().unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        let arn = stdout(&output).trim().to_owned();
        assert_eq!(arn, format!("{PIYO_SESSION_PREFIX}{user}@{host}"));
    }

    // A copy of the token does not make an outsider a member, nor cost an STS call.
    let outsider = curl_as(OUTSIDER, &url, &token);
    assert_eq!(status_of(&outsider), "403", "{}", stdout(&outsider));
    assert_eq!(proxy.calls("AssumeRole"), 3);

    let server_token = daemon.token();
    let (status, report) = daemon.get("/status", &[("Authorization", &server_token)]);
    assert_eq!(status, 200, "{report}");
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    let roles = report["roles"].as_array().unwrap();
    let mine = roles.iter().find(|r| r["name"] == "mine").unwrap();
    assert_eq!(mine["state"], "per-user");
    let users: Vec<&str> = (mine["sessions"].as_array().unwrap().iter())
        .map(|s| s["user"].as_str().unwrap())
        .collect();
    assert_eq!(users.len(), 2, "{mine}");
    assert!(users.contains(&MEMBER) && users.contains(&SECOND), "{mine}");
    let shared = roles.iter().find(|r| r["name"] == "piyo").unwrap();
    assert_eq!(shared["state"], "fresh", "the shared role is untouched");
    let (_, metrics) = daemon.get("/metrics", &[("Authorization", &server_token)]);
    assert_eq!(
        sample(&metrics, "assume_roled_user_sessions{role=\"mine\"}"),
        Some(2.0),
        "{metrics}"
    );

    let log = daemon.log();
    let audit = (log.lines())
        .find(|l| l.contains("credentials served") && l.contains(&format!("user=\"{SECOND}\"")))
        .expect("an audit line for the second member");
    let id = key(&second[0]);
    let masked = format!("{}…{}", &id[..4], &id[id.len() - 4..]);
    assert!(
        audit.contains(&format!("access_key_id={masked}")),
        "{audit}"
    );
    // Twelve responses to the second member with that set (ten, the metadata read, the aws
    // CLI's): one line at once, and the eleven held back counted in the summary written when
    // the daemon stops.
    let lines_for = |log: &str, text: &str| {
        let user = format!("user=\"{SECOND}\"");
        (log.lines())
            .filter(|l| l.contains(text) && l.contains(&user))
            .count()
    };
    assert_eq!(lines_for(&log, "credentials served"), 1, "{log}");
    assert!(daemon.terminate().success());
    let log = daemon.log();
    let summary = (log.lines())
        .find(|l| {
            l.contains("credentials served again") && l.contains(&format!("user=\"{SECOND}\""))
        })
        .unwrap_or_else(|| panic!("no summary for the second member:\n{log}"));
    assert!(summary.contains("count=11"), "{summary}");
}

/// A JVM on its default sockets (dual-stack IPv6: the daemon sees `::ffff:127.0.0.1`'s
/// connection on its IPv4 listener) is known by its user like any client: `allowed_users`
/// admits the named user on both endpoints and both JDK HTTP stacks, refuses another, and the
/// audit names the JVM's user and executable. A Python AF_INET6 socket shows the same at the
/// byte level. No connection is closed as of no local client.
#[test]
fn a_jvm_on_dual_stack_sockets_is_known_by_its_user() {
    ensure_users();
    let moto = Moto::start();
    let dir = TempDir::new("jvm-users");
    let config = format!(
        "{}allowed_users = [\"{MEMBER}\"]\n\n[imds]\nrole = \"piyo\"\nupstream = \"http://127.0.0.1:9/\"\n",
        moto.config_with(&dir.path().join("state/token"), "peer_processes = true")
    );
    let daemon = Daemon::start_with(dir, &config, &moto.host_env(), &[]);
    daemon.wait_ready();
    let token = daemon.token();
    // The token in a variable: the test users cannot read root's token file.
    let ecs = [
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", daemon.uri("piyo")),
        ("AWS_CONTAINER_AUTHORIZATION_TOKEN", token.clone()),
    ];
    let imds = [
        (
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            format!("http://{}/", daemon.address),
        ),
        ("AWS_EC2_METADATA_DISABLED", "false".to_owned()),
    ];
    let jvm = |user: &str, env: &[(&str, String)], stack: &str| {
        let mut java = as_user(user, "java");
        isolated(&mut java)
            .env("AWS_ENDPOINT_URL", &moto.endpoint)
            .envs(env.iter().map(|(name, value)| (name, value)));
        jdk_whoami(java, stack).output().unwrap()
    };
    for stack in JDK_STACKS {
        for (endpoint, env) in [("ECS", &ecs[..]), ("IMDSv2", &imds[..])] {
            let member = jvm(MEMBER, env, stack);
            assert!(
                stdout(&member).starts_with(PIYO_SESSION_PREFIX),
                "{stack} {endpoint}: {}",
                stderr(&member)
            );
            let outsider = jvm(OUTSIDER, env, stack);
            assert!(!outsider.status.success(), "{stack} {endpoint}");
            // The metadata endpoint lists no role to a user it may not serve (404).
            let refused = ["HTTP 403", "HTTP 404"];
            assert!(
                refused.iter().any(|code| stderr(&outsider).contains(code)),
                "{stack} {endpoint}: refused by user, not left unanswered: {}",
                stderr(&outsider)
            );
        }
    }

    // The same socket family from Python, written byte for byte.
    let dual_stack_get = "import socket, sys\n\
        s = socket.socket(socket.AF_INET6)\n\
        s.connect(('::ffff:127.0.0.1', int(sys.argv[1])))\n\
        s.sendall(('GET /roles/piyo HTTP/1.1\\r\\nHost: 127.0.0.1:' + sys.argv[1]\n\
            + '\\r\\nAuthorization: ' + sys.argv[2] + '\\r\\nConnection: close\\r\\n\\r\\n').encode())\n\
        print(s.recv(100).split(b'\\r\\n')[0].decode())\n";
    let python_as = |user: &str| {
        let output = as_user(user, "/usr/bin/python3")
            .args(["-c", dual_stack_get])
            .arg(daemon.address.port().to_string())
            .arg(&token)
            .output()
            .unwrap();
        stdout(&output).trim().to_owned()
    };
    assert_eq!(python_as(MEMBER), "HTTP/1.1 200 OK");
    assert_eq!(python_as(OUTSIDER), "HTTP/1.1 403 Forbidden");

    let log = daemon.log();
    let served = log
        .lines()
        .find(|l| l.contains("audit: credentials served") && l.contains("exe=\"/usr/lib/jvm/"))
        .unwrap_or_else(|| panic!("no audit line naming the JVM:\n{log}"));
    assert!(served.contains(&format!("user=\"{MEMBER}\"")), "{served}");
    assert!(
        log.lines()
            .any(|l| l.contains("credentials refused") && l.contains(OUTSIDER)),
        "{log}"
    );
    assert!(!log.contains("connection closed unanswered"), "{log}");
}

/// A member removed from the role's group loses the role on her open keep-alive connection
/// too: its next requests get 403 (within the name service's re-check: a second for the local
/// files), audited, on the same connection.
#[test]
fn losing_the_group_takes_the_role_from_open_connections() {
    const LEAVER: &str = "ar-test-leaver";
    const TEAM: &str = "ar-test-leaving";
    ensure_accounts(&[TEAM], &[(LEAVER, &[TEAM])]);
    // A former run took her out: she is a member again before the daemon starts.
    let added = Command::new("gpasswd")
        .args(["-a", LEAVER, TEAM])
        .output()
        .unwrap();
    assert!(added.status.success(), "{}", stderr(&added));
    let moto = Moto::start();
    let dir = TempDir::new("leaver");
    let config = format!(
        "{}allowed_groups = [\"{TEAM}\"]\n",
        moto.config(&dir.path().join("state/token"))
    );
    let daemon = Daemon::start_with(dir, &config, &moto.host_env(), &[]);
    daemon.wait_ready();
    // One keep-alive connection: a request, then (after "go" on stdin) one every 0.2 s until
    // a refusal or 65 s; each line says the status and the connection's local port.
    let client = "import http.client, sys, time\n\
        c = http.client.HTTPConnection('127.0.0.1', int(sys.argv[1]))\n\
        def ask():\n\
        \x20   c.request('GET', '/roles/piyo', headers={'Authorization': sys.argv[2]})\n\
        \x20   r = c.getresponse(); r.read()\n\
        \x20   return r.status, c.sock.getsockname()[1]\n\
        print(*ask(), flush=True)\n\
        sys.stdin.readline()\n\
        start = time.monotonic()\n\
        while time.monotonic() - start < 65:\n\
        \x20   status, port = ask()\n\
        \x20   if status != 200:\n\
        \x20       print(status, port, round(time.monotonic() - start, 2), flush=True)\n\
        \x20       break\n\
        \x20   time.sleep(0.2)\n";
    let mut child = as_user(LEAVER, "/usr/bin/python3")
        .args([
            "-c",
            client,
            &daemon.address.port().to_string(),
            &daemon.token(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let first = lines.next().unwrap().unwrap();
    let (status, port) = first.split_once(' ').unwrap();
    assert_eq!(status, "200", "a member is served: {first}");
    let removed = Command::new("gpasswd")
        .args(["-d", LEAVER, TEAM])
        .output()
        .unwrap();
    assert!(removed.status.success(), "{}", stderr(&removed));
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let last = lines.next().expect("a refusal within 65 s").unwrap();
    let fields: Vec<&str> = last.split(' ').collect();
    assert_eq!(fields[0], "403", "{last}");
    assert_eq!(fields[1], port, "the same connection: {first} then {last}");
    let seconds: f64 = fields[2].parse().unwrap();
    eprintln!("the open connection lost the role {seconds} s after the group change");
    assert!(seconds < 65.0, "{last}");
    let _ = child.wait();
    let log = daemon.log();
    assert!(
        log.lines()
            .any(|l| l.contains("credentials refused") && l.contains(LEAVER)),
        "{log}"
    );
}

/// Many holders filling `max_connections` (the default 1,024) with idle connections do not
/// make another user wait: ten accounts holding 128 each (1,280), then ten uids without an
/// account (a user's subordinate uids) holding 128 each, which count as one holder. The other
/// user's request is answered 200 within 2 s each time; without fair admission it waits for the
/// crowd's 5 s header timeout. Idle connections closed to make room are counted.
#[test]
fn a_crowd_of_holders_cannot_crowd_out_another_user() {
    let _alone = one_flood_at_a_time();
    ensure_users();
    let crowd: Vec<String> = (0..10).map(|i| format!("ar-test-crowd{i}")).collect();
    let accounts: Vec<(&str, &[&str])> = crowd.iter().map(|u| (u.as_str(), &[][..])).collect();
    ensure_accounts(&[], &accounts);
    let moto = Moto::start();
    let dir = TempDir::new("crowd");
    let config = moto.config(&dir.path().join("state/token"));
    let daemon = Daemon::start_with(dir, &config, &moto.host_env(), &[]);
    daemon.wait_ready();
    let hold = format!(
        "import socket, sys\n\
         held = [socket.create_connection(('127.0.0.1', {port})) for _ in range(128)]\n\
         print('holding', len(held), flush=True)\n\
         sys.stdin.read()\n",
        port = daemon.address.port()
    );
    let by_account: Vec<Command> = crowd
        .iter()
        .map(|user| as_user(user, "/usr/bin/python3"))
        .collect();
    let without_account: Vec<Command> = (0..10)
        .map(|i| {
            let id = 300_000 + i;
            let mut command = Command::new("setpriv");
            command.args([
                &format!("--reuid={id}"),
                &format!("--regid={id}"),
                "--clear-groups",
                "/usr/bin/python3",
            ]);
            command
        })
        .collect();
    for (name, commands) in [
        ("accounts", by_account),
        ("uids without an account", without_account),
    ] {
        let mut holders: Vec<std::process::Child> = commands
            .into_iter()
            .map(|mut command| {
                command
                    .args(["-c", &hold])
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for holder in &mut holders {
            let mut line = String::new();
            let output = holder.stdout.take().unwrap();
            std::io::BufRead::read_line(&mut std::io::BufReader::new(output), &mut line).unwrap();
            assert_eq!(
                line.trim(),
                "holding 128",
                "{name}: the crowd could not connect"
            );
        }
        let started = std::time::SystemTime::now();
        let answer = curl_as(MEMBER, &daemon.uri("piyo"), &daemon.token());
        let took = started.elapsed().unwrap();
        for mut holder in holders {
            drop(holder.stdin.take());
            let _ = holder.wait();
        }
        eprintln!("{name}: another user answered after {took:?}");
        assert_eq!(status_of(&answer), "200", "{name}: {}", stdout(&answer));
        assert!(
            took < std::time::Duration::from_secs(2),
            "{name}: answered after {took:?}"
        );
    }
    let (_, metrics) = daemon.get("/metrics", &[("Authorization", &daemon.token())]);
    let evicted = sample(&metrics, "assume_roled_connections_evicted_total").unwrap_or(0.0);
    assert!(evicted > 0.0, "{metrics}");
}

/// The audit is complete and bounded: 2,000 uids without an account, refused once each, write
/// a handful of lines (they are one client for the audit), one of which counts the others at
/// stop; 20 wrong tokens leave a line; an executable whose path holds a space, `=`, a quote and
/// a newline cannot forge a field or a line.
#[test]
fn the_audit_is_complete_bounded_and_unforgeable() {
    let _alone = one_flood_at_a_time();
    ensure_users();
    let moto = Moto::start();
    let dir = TempDir::new("audit");
    let config = format!(
        "{}allowed_users = [\"{MEMBER}\"]\n",
        moto.config_with(&dir.path().join("state/token"), "peer_processes = true")
    );
    let mut daemon = Daemon::start_with(dir, &config, &moto.host_env(), &[]);
    daemon.wait_ready();
    let token = daemon.token();
    // One process forks a child per uid; each asks once with the right token and is refused.
    let nameless = "import os, socket, sys\n\
        port, token = int(sys.argv[1]), sys.argv[2]\n\
        codes = {}\n\
        for uid in range(310000, 312000):\n\
        \x20   r, w = os.pipe()\n\
        \x20   if os.fork() == 0:\n\
        \x20       os.setgroups([]); os.setgid(uid); os.setuid(uid)\n\
        \x20       s = socket.create_connection(('127.0.0.1', port))\n\
        \x20       s.sendall(('GET /roles/piyo HTTP/1.1\\r\\nHost: 127.0.0.1:%d\\r\\nAuthorization: %s\\r\\nConnection: close\\r\\n\\r\\n' % (port, token)).encode())\n\
        \x20       os.write(w, s.recv(12)[9:12]); os._exit(0)\n\
        \x20   os.close(w); code = os.read(r, 3).decode(); os.close(r); os.wait()\n\
        \x20   codes[code] = codes.get(code, 0) + 1\n\
        print(codes)\n";
    let output = Command::new("/usr/bin/python3")
        .args(["-c", nameless, &daemon.address.port().to_string(), &token])
        .output()
        .unwrap();
    assert_eq!(
        stdout(&output).trim(),
        "{'403': 2000}",
        "{}",
        stderr(&output)
    );
    for _ in 0..20 {
        let wrong = curl_as(MEMBER, &daemon.uri("piyo"), &"w".repeat(48));
        assert_eq!(status_of(&wrong), "401");
    }
    // An executable whose path tries to forge fields and a line.
    let forge = std::path::Path::new("/tmp/ar-test-forge");
    let _ = std::fs::remove_dir_all(forge);
    std::fs::create_dir_all(forge).unwrap();
    let forged = forge.join("x uid=0 user=\"root\"\nINFO audit: credentials served");
    std::fs::copy("/usr/bin/curl", &forged).unwrap();
    std::fs::set_permissions(forge, std::fs::Permissions::from_mode(0o755)).unwrap();
    let served = as_user(MEMBER, &forged)
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .args([
            "-H",
            &format!("Authorization: {token}"),
            &daemon.uri("piyo"),
        ])
        .output()
        .unwrap();
    assert_eq!(stdout(&served), "200", "{}", stderr(&served));
    assert!(daemon.terminate().success());
    std::fs::remove_dir_all(forge).unwrap();

    let log = daemon.log();
    let audit: Vec<&str> = log.lines().filter(|l| l.contains(" audit: ")).collect();
    assert!(audit.len() <= 100, "{} audit lines:\n{log}", audit.len());
    let folded = audit
        .iter()
        .find(|l| l.contains("requests refused again") && l.contains("count=1999"))
        .unwrap_or_else(|| panic!("no line counting the other refusals:\n{log}"));
    assert!(folded.contains("uid=-"), "{folded}");
    assert!(
        audit
            .iter()
            .any(|l| l.contains("no valid token (401)") && l.contains(MEMBER)),
        "{log}"
    );
    let member_uid = uid_of(MEMBER);
    let served = audit
        .iter()
        .find(|l| l.contains("credentials served") && l.contains("exe=\"/tmp/ar-test-forge/"))
        .unwrap_or_else(|| panic!("no audit line for the forged executable:\n{log}"));
    assert!(served.contains(&format!("uid={member_uid} ")), "{served}");
    assert!(
        served.contains(
            r#"exe="/tmp/ar-test-forge/x uid=0 user=\"root\"\nINFO audit: credentials served""#
        ),
        "{served}"
    );
    assert_eq!(
        log.matches("INFO audit: credentials served").count(),
        served.matches("INFO audit: credentials served").count(),
        "the newline forged a line"
    );
}

/// `program` as `user`, isolated like every client but with `home` as its home and the AWS
/// config file there (`~/.aws/config`), as a user's own shell has it.
fn in_home(user: &str, program: impl AsRef<std::ffi::OsStr>, home: &std::path::Path) -> Command {
    let mut command = as_user(user, program);
    isolated(&mut command)
        .env("HOME", home)
        .env_remove("AWS_CONFIG_FILE");
    command
}

/// A home directory of `user`'s own under `dir`.
fn home_of(dir: &TempDir, user: &str) -> std::path::PathBuf {
    let home = dir.path().join(format!("home-{user}"));
    std::fs::create_dir_all(&home).unwrap();
    let status = Command::new("chown")
        .arg(format!("{user}:"))
        .arg(&home)
        .status()
        .unwrap();
    assert!(status.success());
    home
}

/// Every file under `directory` (and below).
fn files_under(directory: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(directory).into_iter().flatten().flatten() {
        let path = entry.path();
        match path.is_dir() {
            true => found.extend(files_under(&path)),
            false => found.push(path),
        }
    }
    found
}

/// Two roles as two AWS profiles of one user, as a Terraform configuration with two providers
/// uses them: `profiles --write` adds them to the user's `~/.aws/config` (once), the aws CLI and
/// one boto3 process use both through `credential_process` (`assume-roled credentials`),
/// each under its own per-user session, with no STS call per process and nothing secret on
/// disk. The other account receives each user's session tags (the user's name, the host) and
/// the narrowed role's session policies. A member the role does not admit, and a user who
/// cannot read the token, get a non-zero exit and no keys; with the daemon stopped, a clear
/// error at once.
#[test]
fn each_role_is_a_profile_with_tags_and_policies() {
    ensure_users();
    let moto = Moto::start();
    let proxy = StsProxy::start(&moto);
    let dir = TempDir::new("profiles");
    let policy = "{\n  \"Version\": \"2012-10-17\",\n  \"Statement\": [{\"Effect\": \"Allow\",\n  \
                  \"Action\": \"ec2:DescribeVpcs\", \"Resource\": \"*\"}]\n}\n";
    dir.write("narrow.json", policy);
    let token_of = |name: &str| dir.path().join(format!("roles/{name}.token"));
    let roles = format!(
        "\n[[roles]]\nname = \"mine\"\narn = \"{PIYO_ARN}\"\nsession_name = \"{{user}}@{{host}}\"\n\
         allowed_groups = [\"{GROUP}\"]\ntoken_file = \"{}\"\ngroup = \"{GROUP}\"\n\
         tags = {{ user = \"{{user}}\", host = \"{{host}}\", team = \"platform\" }}\n\
         transitive_tags = [\"team\"]\n\
         \n[[roles]]\nname = \"narrow\"\narn = \"{PIYO_ARN}\"\nsession_name = \"narrow-{{user}}\"\n\
         allowed_users = [\"{MEMBER}\"]\ntoken_file = \"{}\"\ngroup = \"{GROUP}\"\n\
         policy_arns = [\"arn:aws:iam::aws:policy/ReadOnlyAccess\"]\npolicy = \"narrow.json\"\n",
        token_of("mine").display(),
        token_of("narrow").display(),
    );
    let config = format!("{}{roles}", moto.config(&dir.path().join("state/token")))
        .replace(&moto.endpoint, &proxy.endpoint);
    let mut daemon = Daemon::start_with(dir, &config, &moto.host_env(), &[]);
    daemon.wait_ready();
    let config_file = daemon.config_file.clone();
    let binary = daemon_binary();
    let home = home_of(&daemon.dir, MEMBER);

    // The profiles a member can use: the two roles whose token files the group reads, not the
    // shared role behind the server's token.
    let printed = in_home(MEMBER, &binary, &home)
        .args(["profiles", "--config"])
        .arg(&config_file)
        .output()
        .unwrap();
    assert!(printed.status.success(), "{}", stderr(&printed));
    let (binary_path, config_path) = (binary.display(), config_file.display());
    assert_eq!(
        stdout(&printed),
        format!(
            "[profile mine]\ncredential_process = {binary_path} credentials --role mine \
             --config {config_path}\n\n\
             [profile narrow]\ncredential_process = {binary_path} credentials --role narrow \
             --config {config_path}\n"
        )
    );
    let write = || {
        let output = in_home(MEMBER, &binary, &home)
            .args(["profiles", "--write", "--config"])
            .arg(&config_file)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        stdout(&output)
    };
    assert!(write().contains("added mine, narrow"));
    let aws_config = home.join(".aws/config");
    let written = std::fs::read_to_string(&aws_config).unwrap();
    assert!(write().contains("every profile is there already"));
    assert_eq!(std::fs::read_to_string(&aws_config).unwrap(), written);
    let owner = std::fs::metadata(&aws_config).unwrap();
    assert_eq!(owner.uid().to_string(), uid_of(MEMBER));
    assert_eq!(owner.permissions().mode() & 0o777, 0o600);

    // The aws CLI with each profile, as the member: each role under the member's own session.
    let host = short_host_name();
    let whoami = |profile: &str| {
        let output = in_home(MEMBER, venv_tool("aws"), &home)
            .env("AWS_ENDPOINT_URL", &moto.endpoint)
            .args(["--profile", profile])
            .args(WHOAMI)
            .output()
            .unwrap();
        assert!(output.status.success(), "{profile}: {}", stderr(&output));
        stdout(&output).trim().to_owned()
    };
    assert_eq!(
        whoami("mine"),
        format!("{PIYO_SESSION_PREFIX}{MEMBER}@{host}")
    );
    assert_eq!(
        whoami("narrow"),
        format!("{PIYO_SESSION_PREFIX}narrow-{MEMBER}")
    );
    assert_eq!(
        proxy.calls("AssumeRole"),
        3,
        "the shared role, then one per profile"
    );

    // One boto3 process with both profiles, as a program with two sessions (or Terraform with
    // two providers) has them.
    let script = "import boto3, os\n\
                  for name in ('mine', 'narrow'):\n    \
                  sts = boto3.Session(profile_name=name).client('sts', endpoint_url=os.environ['AWS_ENDPOINT_URL'])\n    \
                  print(sts.get_caller_identity()['Arn'])\n";
    let output = in_home(MEMBER, venv_tool("python"), &home)
        .env("AWS_ENDPOINT_URL", &moto.endpoint)
        .args(["-c", script])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        format!("{PIYO_SESSION_PREFIX}{MEMBER}@{host}\n{PIYO_SESSION_PREFIX}narrow-{MEMBER}\n")
    );
    assert_eq!(proxy.calls("AssumeRole"), 3, "no STS call per process");

    // What `credentials` prints, and nothing secret written anywhere under the member's home
    // (the CLI caches assume-role sets in ~/.aws/cli/cache; credential_process sets it does not).
    let output = in_home(MEMBER, &binary, &home)
        .args(["credentials", "--role", "mine", "--config"])
        .arg(&config_file)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let set: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(set["Version"], 1);
    for field in [
        "AccessKeyId",
        "SecretAccessKey",
        "SessionToken",
        "Expiration",
    ] {
        assert!(
            set[field].as_str().is_some_and(|v| !v.is_empty()),
            "{field}: {set}"
        );
    }
    let secret = set["SecretAccessKey"].as_str().unwrap();
    for file in files_under(&home) {
        let content = std::fs::read(&file).unwrap();
        let found = (content.windows(secret.len())).any(|window| window == secret.as_bytes());
        assert!(!found, "{} holds the secret", file.display());
    }

    // What the other account received: the member's tags, the narrowed role's policies.
    let params = proxy.assume_role_params();
    let asked = |session: &str| {
        (params.iter())
            .find(|p| p["RoleSessionName"] == session)
            .unwrap_or_else(|| panic!("no AssumeRole for {session}: {params:?}"))
            .clone()
    };
    let mine = asked(&format!("{MEMBER}@{host}"));
    let tags: std::collections::BTreeMap<String, String> = (1..=3)
        .map(|n| {
            let field = |part: &str| mine[&format!("Tags.member.{n}.{part}")].as_str().unwrap();
            (field("Key").to_owned(), field("Value").to_owned())
        })
        .collect();
    let expected = [
        ("host", host.as_str()),
        ("team", "platform"),
        ("user", MEMBER),
    ];
    let expected = expected.map(|(k, v)| (k.to_owned(), v.to_owned()));
    assert_eq!(tags, expected.into_iter().collect(), "{mine:?}");
    assert_eq!(mine["TransitiveTagKeys.member.1"], "team", "{mine:?}");
    assert!(!mine.contains_key("Policy"), "{mine:?}");
    let narrow = asked(&format!("narrow-{MEMBER}"));
    assert_eq!(
        narrow["PolicyArns.member.1.arn"],
        "arn:aws:iam::aws:policy/ReadOnlyAccess"
    );
    let sent: serde_json::Value = serde_json::from_str(narrow["Policy"].as_str().unwrap()).unwrap();
    assert_eq!(
        sent,
        serde_json::from_str::<serde_json::Value>(policy).unwrap()
    );
    assert!(!narrow.keys().any(|k| k.starts_with("Tags.")), "{narrow:?}");

    // A member the narrowed role does not admit, and a user who cannot read the token.
    let refused = |user: &str, role: &str| {
        let home = home_of(&daemon.dir, user);
        let output = in_home(user, &binary, &home)
            .args(["credentials", "--role", role, "--config"])
            .arg(&config_file)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{user} got {role}");
        assert_eq!(stdout(&output), "", "no keys, not even partial JSON");
        stderr(&output)
    };
    let not_admitted = refused(SECOND, "narrow");
    assert!(
        not_admitted.contains("role narrow: the daemon refused (403"),
        "{not_admitted}"
    );
    let unreadable = refused(OUTSIDER, "mine");
    assert!(
        unreadable.contains("role mine: cannot use its token file"),
        "{unreadable}"
    );
    assert!(unreadable.contains("Permission denied"), "{unreadable}");
    assert_eq!(proxy.calls("AssumeRole"), 3, "a refusal costs no STS call");

    // The daemon stopped: a clear error, at once.
    assert!(daemon.terminate().success());
    let started = std::time::SystemTime::now();
    let output = in_home(MEMBER, &binary, &home)
        .args(["credentials", "--role", "mine", "--config"])
        .arg(&config_file)
        .output()
        .unwrap();
    assert!(started.elapsed().unwrap() < std::time::Duration::from_secs(2));
    assert!(!output.status.success());
    assert_eq!(stdout(&output), "");
    assert!(
        stderr(&output).contains("cannot reach the daemon"),
        "{}",
        stderr(&output)
    );

    // Another user takes the port while the daemon is down: the command asks the kernel who
    // holds it and sends the token to nobody but root or the daemon's user.
    let squat = "import socket, sys\n\
                 s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
                 s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(1)\n\
                 print('listening', flush=True)\n\
                 c, _ = s.accept(); c.settimeout(3)\n\
                 try:\n    print(c.recv(65536).decode(errors='replace'), flush=True)\n\
                 except OSError:\n    print('nothing', flush=True)\n";
    let mut squatter = as_user(OUTSIDER, "/usr/bin/python3")
        .args(["-c", squat, &daemon.address.port().to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut squatter_out = std::io::BufReader::new(squatter.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut squatter_out, &mut line).unwrap();
    assert_eq!(line.trim(), "listening");
    let output = in_home(MEMBER, &binary, &home)
        .args(["credentials", "--role", "mine", "--config"])
        .arg(&config_file)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert_eq!(stdout(&output), "");
    let said = stderr(&output);
    let outsider_uid = uid_of(OUTSIDER);
    assert!(
        said.contains(&format!(
            "is held by uid {outsider_uid}, not by root or the daemon's user"
        )),
        "{said}"
    );
    let mut received = String::new();
    std::io::Read::read_to_string(&mut squatter_out, &mut received).unwrap();
    let _ = squatter.wait();
    let token = std::fs::read_to_string(daemon.dir.path().join("roles/mine.token")).unwrap();
    assert!(
        !received.contains(&token),
        "the squatter got the token: {received}"
    );
    assert!(!received.contains("Authorization"), "{received}");
}
