//! The metadata guard, end to end, on a host of the test's own: a network namespace whose
//! loopback also carries 169.254.169.254, where the instance-metadata double listens on port 80
//! and vends the instance role (hoge-ec2-role, from moto). The daemon takes its own identity
//! from that metadata, `assume-roled guard apply` installs the rules in the namespace's
//! nftables, and the real aws CLI runs as test users with no credentials variable at all: only
//! the service endpoint (moto) and a region.
//!
//! Each test runs itself again inside a fresh namespace (`ip netns exec`), so that everything it
//! starts (moto, the double, the daemon, the clients) lives there and the host's own firewall
//! and metadata are never touched.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use support::*;

/// Set inside the namespace: the name of the namespace the test runs in.
const NAMESPACE_VARIABLE: &str = "ASSUME_ROLED_TEST_NETNS";
const METADATA: &str = "169.254.169.254";
const GROUP: &str = "ar-guard-piyo";
/// In the role's group: gets piyo-role from the metadata address.
const MEMBER: &str = "ar-guard-member";
/// Not admitted by the role, not exempt: gets nothing.
const OUTSIDER: &str = "ar-guard-outsider";
/// Exempt: keeps the real instance metadata (the instance role).
const EXEMPT: &str = "ar-guard-exempt";
const INSTANCE_ROLE: &str = "assumed-role/hoge-ec2-role/";

/// A network namespace, deleted on drop.
struct Namespace(String);

impl Namespace {
    fn create(name: &str) -> Self {
        let ip = |args: &[&str]| {
            let status = Command::new("ip").args(args).status().unwrap();
            assert!(status.success(), "ip {}", args.join(" "));
        };
        let _ = Command::new("ip").args(["netns", "delete", name]).status();
        ip(&["netns", "add", name]);
        let namespace = Self(name.to_owned());
        ip(&["-n", name, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            name,
            "addr",
            "add",
            &format!("{METADATA}/32"),
            "dev",
            "lo",
        ]);
        namespace
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

/// Whether this process is the one inside the namespace, which runs the test's body. Outside,
/// it makes a namespace, runs `test` again in there, and requires it to pass.
fn inside_namespace(test: &str) -> bool {
    if std::env::var_os(NAMESPACE_VARIABLE).is_some() {
        return true;
    }
    for tool in ["ip", "nft", "setpriv"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .unwrap();
        assert!(found.status.success(), "{tool} is missing: run `make test`");
    }
    let name = format!("ar-test-{}-{test}", std::process::id());
    let name = &name[..name.len().min(40)];
    let _namespace = Namespace::create(name);
    let status = Command::new("ip")
        .args(["netns", "exec", name])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(NAMESPACE_VARIABLE, name)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "{test} failed inside its network namespace"
    );
    false
}

/// The host of one test: moto, the metadata double on 169.254.169.254:80, the daemon with
/// `[imds] guard` in `mode`.
struct Host {
    moto: Moto,
    _double: ImdsDouble,
    daemon: Daemon,
}

impl Host {
    fn start(mode: &str) -> Self {
        ensure_accounts(
            &[GROUP],
            &[(MEMBER, &[GROUP]), (OUTSIDER, &[]), (EXEMPT, &[])],
        );
        let moto = Moto::start();
        let double = ImdsDouble::start_at(&moto, &format!("{METADATA}:80"));
        let dir = TempDir::new("guard");
        let config = config(&dir.path().join("state/token"), &moto, mode);
        // No keys in the environment: the daemon's own identity comes from the metadata.
        let from_metadata = [("AWS_EC2_METADATA_DISABLED", "false")];
        let daemon = Daemon::start_with(dir, &config, &[], &from_metadata);
        daemon.wait_ready();
        guard("apply", &daemon.config_file);
        Self {
            moto,
            _double: double,
            daemon,
        }
    }

    /// The aws CLI's answer to "who am I" when run as `user` with no credentials variable.
    fn whoami(&self, user: &str) -> Output {
        as_user(user, venv_tool("aws"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", "/nonexistent")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL", &self.moto.endpoint)
            .args(WHOAMI)
            .output()
            .unwrap()
    }
}

fn config(token_file: &Path, moto: &Moto, mode: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:{}\"\ntoken_file = \"{}\"\n\n\
         [sts]\nregion = \"us-east-1\"\nendpoint = \"{}\"\n\n\
         [imds]\nrole = \"piyo\"\nguard = \"{mode}\"\nexempt_users = [\"{EXEMPT}\"]\n\n\
         [[roles]]\nname = \"piyo\"\narn = \"{PIYO_ARN}\"\nsession_name = \"hoge\"\n\
         allowed_groups = [\"{GROUP}\"]\n",
        free_port(),
        token_file.display(),
        moto.endpoint
    )
}

/// Runs `assume-roled guard <action>` and requires it to succeed.
fn guard(action: &str, config: &Path) {
    let output = Command::new(daemon_binary())
        .args(["guard", action, "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "guard {action}: {}",
        stderr(&output)
    );
}

fn acts_as_instance_role(output: &Output) -> bool {
    stdout(output).contains(INSTANCE_ROLE)
}

/// Redirect: the allowed user is piyo-role with nothing set, another user gets nothing (never
/// the instance role), an exempt user keeps the instance role; with the daemon stopped the
/// allowed user gets nothing either; and once the rules are removed the instance role is back,
/// which shows the rules did all of it.
#[test]
fn redirect_gives_users_the_role_and_nobody_the_instance_role() {
    if !inside_namespace("redirect_gives_users_the_role_and_nobody_the_instance_role") {
        return;
    }
    let mut host = Host::start("redirect");

    let member = host.whoami(MEMBER);
    assert_acts_as_piyo(&member);
    let outsider = host.whoami(OUTSIDER);
    assert!(!outsider.status.success(), "{}", stdout(&outsider));
    assert!(!acts_as_instance_role(&outsider), "{}", stdout(&outsider));
    assert!(
        stderr(&outsider).contains("Unable to locate credentials"),
        "{}",
        stderr(&outsider)
    );
    let exempt = host.whoami(EXEMPT);
    assert!(acts_as_instance_role(&exempt), "{}", stderr(&exempt));

    let log = host.daemon.log();
    let served = log
        .lines()
        .find(|l| l.contains("audit: credentials served") && l.contains("via=imds"))
        .unwrap_or_else(|| panic!("no audit line for the metadata credentials:\n{log}"));
    assert!(served.contains(&format!("user={MEMBER}")), "{served}");
    assert!(
        log.contains("source identity") && log.contains("hoge-ec2-role"),
        "{log}"
    );

    let config_file = host.daemon.config_file.clone();
    assert!(host.daemon.terminate().success());
    let stopped = host.whoami(MEMBER);
    assert!(!stopped.status.success(), "{}", stdout(&stopped));
    assert!(
        !acts_as_instance_role(&stopped),
        "the instance role while the daemon is down"
    );

    guard("remove", &config_file);
    let unguarded = host.whoami(MEMBER);
    assert!(acts_as_instance_role(&unguarded), "{}", stderr(&unguarded));
}

/// Block: metadata connections of non-exempt users are refused at once, never a hang; an
/// exempt user still reaches it; applying twice changes nothing.
#[test]
fn block_refuses_at_once() {
    if !inside_namespace("block_refuses_at_once") {
        return;
    }
    let host = Host::start("block");
    let ruleset = || {
        let output = Command::new("nft")
            .args(["list", "ruleset"])
            .output()
            .unwrap();
        stdout(&output)
    };
    let before = ruleset();
    guard("apply", &host.daemon.config_file);
    assert_eq!(ruleset(), before, "a second apply changes nothing");

    let token_request = |user: &str| {
        let started = SystemTime::now();
        let output = as_user(user, "curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"])
            .args(["-H", "X-aws-ec2-metadata-token-ttl-seconds: 60"])
            .arg(format!("http://{METADATA}/latest/api/token"))
            .output()
            .unwrap();
        (output, started.elapsed().unwrap())
    };
    let (refused, took) = token_request(MEMBER);
    assert_eq!(refused.status.code(), Some(7), "curl: couldn't connect");
    assert!(took < Duration::from_secs(1), "refused after {took:?}");
    let (exempt, _) = token_request(EXEMPT);
    assert_eq!(stdout(&exempt), "200");
}
