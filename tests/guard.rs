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
//!
//! Containers: Docker's bridge is network namespaces and veth pairs, and so is the test's
//! "container": a namespace of its own joined to the host's by a veth pair, its default route
//! through the host, with nothing but what a container gets (the full URI and the mounted
//! token file) or nothing at all.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use support::*;

/// Set inside the namespace: the name of the namespace the test runs in.
const NAMESPACE_VARIABLE: &str = "ASSUME_ROLED_TEST_NETNS";
/// Set inside the namespace of a container test: the container's namespace.
const CONTAINER_VARIABLE: &str = "ASSUME_ROLED_TEST_CONTAINER";
/// The host's end of the veth pair, the container's gateway.
const BRIDGE_ADDRESS: &str = "172.30.0.1";
/// The container's address.
const CONTAINER_ADDRESS: &str = "172.30.0.2";
/// Where the daemon serves containers.
const CONTAINER_LISTEN: &str = "169.254.170.23";
const METADATA: &str = "169.254.169.254";
/// The instance metadata's IPv6 address (Nitro instances).
const METADATA_V6: &str = "fd00:ec2::254";
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

/// Runs `ip` with `args` and requires it to succeed.
fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().unwrap();
    assert!(status.success(), "ip {}", args.join(" "));
}

impl Namespace {
    /// A fresh namespace `name` with loopback up.
    fn fresh(name: &str) -> Self {
        let _ = Command::new("ip").args(["netns", "delete", name]).status();
        ip(&["netns", "add", name]);
        ip(&["-n", name, "link", "set", "lo", "up"]);
        Self(name.to_owned())
    }

    /// The host: the metadata addresses (IPv4 and IPv6) on its loopback.
    fn create(name: &str) -> Self {
        let namespace = Self::fresh(name);
        for address in [format!("{METADATA}/32"), format!("{METADATA_V6}/128")] {
            ip(&["-n", name, "addr", "add", &address, "dev", "lo"]);
        }
        namespace
    }

    /// A container's namespace `name`, joined to `host`'s by a veth pair.
    fn container(name: &str, host: &str) -> Self {
        let namespace = Self::fresh(name);
        let (host_end, container_end) = ("ar-host", "ar-container");
        let pair = ["type", "veth", "peer", "name", container_end, "netns", name];
        ip(&[&["-n", host, "link", "add", host_end][..], &pair[..]].concat());
        let (bridge, own) = (
            format!("{BRIDGE_ADDRESS}/24"),
            format!("{CONTAINER_ADDRESS}/24"),
        );
        ip(&["-n", host, "addr", "add", &bridge, "dev", host_end]);
        ip(&["-n", host, "link", "set", host_end, "up"]);
        ip(&["-n", name, "addr", "add", &own, "dev", container_end]);
        ip(&["-n", name, "link", "set", container_end, "up"]);
        ip(&["-n", name, "route", "add", "default", "via", BRIDGE_ADDRESS]);
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
    inside_namespace_with(test, false)
}

/// Like [`inside_namespace`], with a container: a second namespace joined to the first by a
/// veth pair (the host at [`BRIDGE_ADDRESS`], the container at [`CONTAINER_ADDRESS`], its
/// default route through the host), named in [`CONTAINER_VARIABLE`].
fn inside_namespace_with(test: &str, with_container: bool) -> bool {
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
    let container_name = format!("{}-c", &name[..name.len().min(36)]);
    let _container = with_container.then(|| Namespace::container(&container_name, name));
    let status = Command::new("ip")
        .args(["netns", "exec", name])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(NAMESPACE_VARIABLE, name)
        .env(CONTAINER_VARIABLE, &container_name)
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
        let daemon = guarded_daemon(dir, &config);
        Self {
            moto,
            _double: double,
            daemon,
        }
    }

    /// The aws CLI's answer to "who am I" when run as `user` with no credentials variable.
    fn whoami(&self, user: &str) -> Output {
        let mut command = as_user(user, venv_tool("aws"));
        with_nothing_set(&mut command, &self.moto.endpoint)
            .args(WHOAMI)
            .output()
            .unwrap()
    }

    /// The same question from a JVM on `stack` (its default, dual-stack sockets).
    fn jvm_whoami(&self, user: &str, stack: &str) -> Output {
        let mut java = as_user(user, "java");
        with_nothing_set(&mut java, &self.moto.endpoint);
        jdk_whoami(java, stack).output().unwrap()
    }

    /// The same question from Debian's Ruby SDK, which reads instance metadata on port 80 only.
    fn ruby_whoami(&self, user: &str) -> Output {
        let mut ruby = as_user(user, "ruby");
        with_nothing_set(&mut ruby, &self.moto.endpoint);
        ruby_whoami(ruby, &self.moto.endpoint).output().unwrap()
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

/// `command` with no AWS variable, profile or home of its own: only a region and where STS
/// (moto) is.
fn with_nothing_set<'c>(command: &'c mut Command, sts: &str) -> &'c mut Command {
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", "/nonexistent")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", sts)
}

/// Loads `script` with `nft -f -`.
fn nft_script(script: &str) {
    use std::io::Write;
    let mut nft = Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    nft.stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(nft.wait().unwrap().success(), "nft -f: {script}");
}

/// The daemon with `config`, ready, its rules applied. No keys in its environment: its own
/// identity comes from the metadata.
fn guarded_daemon(dir: TempDir, config: &str) -> Daemon {
    let from_metadata = [("AWS_EC2_METADATA_DISABLED", "false")];
    let daemon = Daemon::start_with(dir, config, &[], &from_metadata);
    daemon.wait_ready();
    guard("apply", &daemon.config_file);
    daemon
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
    assert_ipv6_metadata_refused();

    // A JVM (dual-stack sockets, redirected) and Debian's Ruby SDK (metadata on port 80 only):
    // the guard is how they get the role, with nothing set.
    for stack in JDK_STACKS {
        let member = host.jvm_whoami(MEMBER, stack);
        assert_acts_as_piyo(&member);
        let outsider = host.jvm_whoami(OUTSIDER, stack);
        assert!(!outsider.status.success(), "{stack}: {}", stdout(&outsider));
        assert!(!acts_as_instance_role(&outsider), "{stack}");
    }
    assert_acts_as_piyo(&host.ruby_whoami(MEMBER));
    let outsider = host.ruby_whoami(OUTSIDER);
    assert!(!outsider.status.success(), "{}", stdout(&outsider));
    assert!(!acts_as_instance_role(&outsider));

    let log = host.daemon.log();
    let served = log
        .lines()
        .find(|l| l.contains("audit: credentials served") && l.contains("via=imds"))
        .unwrap_or_else(|| panic!("no audit line for the metadata credentials:\n{log}"));
    assert!(served.contains(&format!("user=\"{MEMBER}\"")), "{served}");
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

/// The instance metadata's IPv6 address, served by a stand-in (any HTTP server: what counts
/// is whether a connection gets through): a guarded user's connection is refused at once
/// (curl's exit 7) in both modes, as the daemon answers IPv4 only; an exempt user's is answered.
fn assert_ipv6_metadata_refused() {
    let dir = TempDir::new("v6-metadata");
    let mut server = Command::new("python3")
        .args([
            "-m",
            "http.server",
            "80",
            "--bind",
            METADATA_V6,
            "--directory",
        ])
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://[{METADATA_V6}]/");
    let get = |user: &str| {
        let started = SystemTime::now();
        let output = as_user(user, "curl")
            .args([
                "-s",
                "-g",
                "-m",
                "5",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &url,
            ])
            .output()
            .unwrap();
        (output, started.elapsed().unwrap())
    };
    assert!(
        eventually(10, || stdout(&get(EXEMPT).0) == "200"),
        "the IPv6 stand-in never answered the exempt user"
    );
    for user in [MEMBER, OUTSIDER] {
        let (refused, took) = get(user);
        assert_eq!(
            refused.status.code(),
            Some(7),
            "{user}: curl: couldn't connect"
        );
        assert!(
            took < Duration::from_secs(1),
            "{user}: refused after {took:?}"
        );
    }
    let _ = server.kill();
    let _ = server.wait();
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
    assert_ipv6_metadata_refused();
}

/// The host of a container test: moto (reachable from the container), the metadata double,
/// and the daemon serving containers with `[containers] imds = mode`.
struct ContainerHost {
    moto: Moto,
    _double: ImdsDouble,
    daemon: Daemon,
    container: String,
}

impl ContainerHost {
    fn start(mode: &str) -> Self {
        let moto = Moto::start_on("0.0.0.0");
        let double = ImdsDouble::start_at(&moto, &format!("{METADATA}:80"));
        let dir = TempDir::new("containers");
        let config = format!(
            "[server]\nlisten = \"127.0.0.1:{}\"\ntoken_file = \"{}\"\n\n\
             [sts]\nregion = \"us-east-1\"\nendpoint = \"{}\"\n\n\
             [imds]\nrole = \"piyo\"\n\n\
             [containers]\nlisten = [\"{CONTAINER_LISTEN}:80\"]\nimds = \"{mode}\"\n\n\
             [[roles]]\nname = \"piyo\"\narn = \"{PIYO_ARN}\"\nsession_name = \"hoge\"\n\
             allowed_networks = [\"0.0.0.0/0\"]\n",
            free_port(),
            dir.path().join("state/token").display(),
            moto.endpoint
        );
        let daemon = guarded_daemon(dir, &config);
        Self {
            moto,
            _double: double,
            daemon,
            container: std::env::var(CONTAINER_VARIABLE).unwrap(),
        }
    }

    /// `program` in the container, with only `variables` (and a region and moto's address,
    /// which a container would have from its image and its network).
    fn in_container(&self, program: &str, variables: &[(&str, &str)]) -> Command {
        let moto = self.moto.endpoint.replace("127.0.0.1", BRIDGE_ADDRESS);
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.container])
            .arg(program);
        with_nothing_set(&mut command, &moto).envs(variables.iter().copied());
        command
    }

    /// The aws CLI's "who am I" in the container.
    fn whoami(&self, variables: &[(&str, &str)]) -> Output {
        let aws = venv_tool("aws");
        let mut command = self.in_container(aws.to_str().unwrap(), variables);
        command.args(WHOAMI).output().unwrap()
    }
}

/// A container with the full URI at 169.254.170.23 and the role's token file acts as the role;
/// without the token it gets 401; with no AWS variable at all its SDK finds the instance
/// metadata, which the rules send to the daemon: the role again, never the instance role (the
/// audit names the container's address). A
/// host process reaching the container address is a local user, not a container (the role is
/// for container networks only: 403). After `guard remove`, the same container gets the
/// instance role from the real metadata: the rules did all of it.
#[test]
fn containers_get_the_role_and_never_the_instance_role() {
    if !inside_namespace_with("containers_get_the_role_and_never_the_instance_role", true) {
        return;
    }
    let host = ContainerHost::start("redirect");
    let uri = format!("http://{CONTAINER_LISTEN}/roles/piyo");
    let token_file = host.daemon.token_file.to_str().unwrap().to_owned();
    let with_token = [
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", uri.as_str()),
        (
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            token_file.as_str(),
        ),
    ];
    assert_acts_as_piyo(&host.whoami(&with_token));

    let no_token = host
        .in_container("curl", &[])
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &uri])
        .output()
        .unwrap();
    assert_eq!(stdout(&no_token), "401");

    let bare = host.whoami(&[("AWS_EC2_METADATA_DISABLED", "false")]);
    assert_acts_as_piyo(&bare);

    let log = host.daemon.log();
    // One line for the container and that set (the metadata read is a repeat of it).
    let served = (log.lines())
        .find(|l| l.contains("credentials served"))
        .unwrap_or_else(|| panic!("no audit line for the container:\n{log}"));
    assert!(
        served.contains(&format!("container={CONTAINER_ADDRESS}")),
        "{served}"
    );

    // On the host, even from the bridge's own address, a process is a local user.
    let token = host.daemon.token();
    let from_bridge = || {
        let output = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(["--interface", BRIDGE_ADDRESS])
            .args(["-H", &format!("Authorization: {token}"), &uri])
            .output()
            .unwrap();
        stdout(&output)
    };
    let posing = from_bridge();
    assert_eq!(posing, "403", "a host process is no container");
    // Nor is one whose source a NAT rule rewrote, as Docker masquerades its bridge's addresses
    // (to an address of this host, in the network the role names: every address. Were it
    // taken for a container, 200).
    let masquerade = "table ip ar_test_nat {\n chain post {\n  type nat hook postrouting priority 100;\n  \
                      ip saddr 172.30.0.0/24 oifname != \"ar-host\" masquerade\n }\n}\n";
    nft_script(masquerade);
    // It is no local socket the kernel knows at those addresses, and no container: closed
    // with no answer at all (curl's 000), not refused with a status.
    let rewritten = from_bridge();
    assert_eq!(
        rewritten, "000",
        "a rewritten host connection got an answer (200: it passed for a container)"
    );
    let log = host.daemon.log();
    assert!(
        log.contains("connection closed unanswered: no local client socket"),
        "{log}"
    );
    nft_script("delete table ip ar_test_nat\n");

    guard("remove", &host.daemon.config_file);
    let unguarded = host.whoami(&[("AWS_EC2_METADATA_DISABLED", "false")]);
    assert!(acts_as_instance_role(&unguarded), "{}", stderr(&unguarded));
}

/// Block: a container's connection to the instance metadata is refused at once.
#[test]
fn containers_metadata_is_blocked() {
    if !inside_namespace_with("containers_metadata_is_blocked", true) {
        return;
    }
    let host = ContainerHost::start("block");
    let started = SystemTime::now();
    let refused = host
        .in_container("curl", &[])
        .args([
            "-s",
            "-X",
            "PUT",
            "-H",
            "X-aws-ec2-metadata-token-ttl-seconds: 60",
        ])
        .arg(format!("http://{METADATA}/latest/api/token"))
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(7), "curl: couldn't connect");
    assert!(started.elapsed().unwrap() < Duration::from_secs(1));
    let bare = host.whoami(&[("AWS_EC2_METADATA_DISABLED", "false")]);
    assert!(!bare.status.success());
    assert!(!acts_as_instance_role(&bare), "{}", stdout(&bare));
}

/// Runs `assume-roled guard apply` with `extra` arguments and returns what it did.
fn guard_apply(config: &Path, extra: &[&str]) -> Output {
    Command::new(daemon_binary())
        .args(["guard", "apply", "--config"])
        .arg(config)
        .args(extra)
        .output()
        .unwrap()
}

/// Whether nft lists the daemon's table.
fn table_present() -> bool {
    Command::new("nft")
        .args(["list", "table", "inet", "assume_roled"])
        .output()
        .unwrap()
        .status
        .success()
}

/// A configuration the guard cannot use (it does not parse, or cannot be read) fails closed:
/// `guard apply` installs the lockdown (exit 78; 0 as the unit's ExecStartPre, which leaves the
/// report to `serve`), a test user gets no instance keys, root still does. An exempt group
/// that does not resolve is a warning: the rest of the guard applies.
#[test]
fn a_configuration_the_guard_cannot_use_fails_closed() {
    if !inside_namespace("a_configuration_the_guard_cannot_use_fails_closed") {
        return;
    }
    let host = Host::start("redirect");
    guard("remove", &host.daemon.config_file);
    assert!(
        acts_as_instance_role(&host.whoami(OUTSIDER)),
        "open to start with"
    );
    let dir = TempDir::new("fail-closed");
    let broken = dir.write("broken.toml", "[imds\nguard = \"redirect\"\n");
    for (arguments, code) in [(&[][..], 78), (&["--from-unit"][..], 0)] {
        guard("remove", &host.daemon.config_file);
        let applied = guard_apply(&broken, arguments);
        assert_eq!(applied.status.code(), Some(code), "{}", stderr(&applied));
        assert!(
            stderr(&applied).contains("broken.toml"),
            "{}",
            stderr(&applied)
        );
        assert!(
            stderr(&applied).contains("refused to every user but root"),
            "{}",
            stderr(&applied)
        );
        let outsider = host.whoami(OUTSIDER);
        assert!(
            !acts_as_instance_role(&outsider),
            "{arguments:?}: {}",
            stdout(&outsider)
        );
        let root = host.whoami("root");
        assert!(
            acts_as_instance_role(&root),
            "{arguments:?}: {}",
            stderr(&root)
        );
    }
    let missing = dir.path().join("missing.toml");
    guard("remove", &host.daemon.config_file);
    assert_eq!(guard_apply(&missing, &[]).status.code(), Some(78));
    assert!(!acts_as_instance_role(&host.whoami(OUTSIDER)), "unreadable");

    let unresolved = std::fs::read_to_string(&host.daemon.config_file)
        .unwrap()
        .replace(
            "[imds]\n",
            "[imds]\nexempt_groups = [\"ar-guard-no-such-group\"]\n",
        );
    let unresolved = dir.write("unresolved.toml", &unresolved);
    let applied = guard_apply(&unresolved, &[]);
    assert!(applied.status.success(), "{}", stderr(&applied));
    assert!(
        stderr(&applied).contains("\"ar-guard-no-such-group\" is unknown"),
        "{}",
        stderr(&applied)
    );
    assert_acts_as_piyo(&host.whoami(MEMBER));
    assert!(!acts_as_instance_role(&host.whoami(OUTSIDER)));
    assert!(
        acts_as_instance_role(&host.whoami(EXEMPT)),
        "the rest applies"
    );
}

/// A running `guard watch`, stopped with SIGTERM when dropped (as systemd stops it: the watch
/// then ends its `nft monitor`, which a SIGKILL would leave behind in the namespace).
struct Watch {
    process: Process,
    state: std::path::PathBuf,
    log: std::path::PathBuf,
}

impl Drop for Watch {
    fn drop(&mut self) {
        if matches!(self.process.0.try_wait(), Ok(None)) {
            signal(self.process.0.id(), "TERM");
            let _ = self.process.0.wait();
        }
    }
}

impl Watch {
    fn start(config: &Path, dir: &TempDir) -> Self {
        let state = dir.path().join("guard/state");
        let log = dir.path().join("watch.log");
        let child = Command::new(daemon_binary())
            .args(["guard", "watch", "--config"])
            .arg(config)
            .env("ASSUME_ROLED_GUARD_STATE", &state)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let watch = Self {
            process: Process(child),
            state,
            log,
        };
        assert!(
            eventually(10, || watch.state().is_some()),
            "{}",
            watch.log()
        );
        watch
    }

    fn state(&self) -> Option<String> {
        std::fs::read_to_string(&self.state).ok()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// `guard watch` keeps the table: after `nft flush ruleset` (what every reload of Debian's
/// stock nftables.conf does) and after the table alone is deleted, it is back within a second,
/// 20 times in a row, and the metadata is the daemon's again; each time is a warning and a
/// count. SIGTERM ends the watch and leaves the rules. With a configuration it cannot use, the
/// watch keeps the lockdown.
#[test]
fn the_watch_puts_the_table_back_within_a_second() {
    if !inside_namespace("the_watch_puts_the_table_back_within_a_second") {
        return;
    }
    let host = Host::start("redirect");
    let dir = TempDir::new("watch");
    let mut watch = Watch::start(&host.daemon.config_file, &dir);
    let mut took = Vec::new();
    for round in 0..20 {
        let removal = if round % 2 == 0 {
            "flush ruleset\n".to_owned()
        } else {
            "delete table inet assume_roled\n".to_owned()
        };
        nft_script(&removal);
        // The wall clock, as the other timings here (a test process, no paused time).
        let started = SystemTime::now();
        let since = || started.elapsed().unwrap_or_default();
        while !table_present() && since() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(2));
        }
        let elapsed = since();
        assert!(table_present(), "round {round}: not back: {}", watch.log());
        took.push(elapsed);
    }
    took.sort();
    let (median, worst) = (took[took.len() / 2], took[took.len() - 1]);
    eprintln!("table back after a flush or delete: median {median:?}, worst {worst:?}");
    assert!(worst < Duration::from_secs(1), "worst {worst:?}");
    assert!(
        eventually(5, || watch
            .state()
            .is_some_and(|state| state.contains("reapplied 20"))),
        "{:?}",
        watch.state()
    );
    assert!(watch.state().unwrap().contains("in_place 1"));
    assert_eq!(watch.log().matches("putting it back").count(), 20);
    assert_acts_as_piyo(&host.whoami(MEMBER));
    assert!(!acts_as_instance_role(&host.whoami(OUTSIDER)));

    signal(watch.process.0.id(), "TERM");
    assert!(watch.process.0.wait().unwrap().success());
    assert!(table_present(), "SIGTERM leaves the rules");
    assert!(!acts_as_instance_role(&host.whoami(OUTSIDER)));

    let second = TempDir::new("watch-broken");
    let broken = second.write("broken.toml", "not = = toml\n");
    guard("remove", &host.daemon.config_file);
    let locked = Watch::start(&broken, &second);
    assert!(
        locked.state().unwrap().contains("lockdown 1"),
        "{}",
        locked.log()
    );
    nft_script("flush ruleset\n");
    assert!(eventually(2, table_present), "{}", locked.log());
    assert!(!acts_as_instance_role(&host.whoami(OUTSIDER)));
    assert!(acts_as_instance_role(&host.whoami("root")));
}

/// With `listen = "127.0.0.2:P"`, redirected metadata traffic goes to the daemon there, not
/// to 127.0.0.1:P, where another user listens first and receives nothing.
#[test]
fn redirect_goes_to_the_daemons_own_address() {
    if !inside_namespace("redirect_goes_to_the_daemons_own_address") {
        return;
    }
    ensure_accounts(
        &[GROUP],
        &[(MEMBER, &[GROUP]), (OUTSIDER, &[]), (EXEMPT, &[])],
    );
    let moto = Moto::start();
    let _double = ImdsDouble::start_at(&moto, &format!("{METADATA}:80"));
    let dir = TempDir::new("guard-elsewhere");
    let config = config(&dir.path().join("state/token"), &moto, "redirect")
        .replace("listen = \"127.0.0.1:", "listen = \"127.0.0.2:");
    let port = config_port(&config);
    let squatter = Squatter::start(&format!("127.0.0.1:{port}"));
    let mut host = Host {
        _double,
        daemon: guarded_daemon(dir, &config),
        moto,
    };
    assert_acts_as_piyo(&host.whoami(MEMBER));
    assert!(!acts_as_instance_role(&host.whoami(OUTSIDER)));
    assert_eq!(squatter.stop(), 0, "the squatter received connections");

    // The daemon down, and its own address taken by another user: `guard apply` refuses
    // instead of redirecting there (and says why); the squatter receives nothing.
    let config_file = host.daemon.config_file.clone();
    assert!(host.daemon.terminate().success());
    let squatter = Squatter::start(&format!("127.0.0.2:{port}"));
    let applied = guard_apply(&config_file, &[]);
    assert!(applied.status.success(), "{}", stderr(&applied));
    assert!(
        stderr(&applied).contains("another user listens"),
        "{}",
        stderr(&applied)
    );
    let member = host.whoami(MEMBER);
    assert!(!member.status.success() && !acts_as_instance_role(&member));
    assert_eq!(squatter.stop(), 0, "the squatter received connections");
}

/// A Python script run as `user` with `arguments`, its stdin piped, started once it printed
/// `ready` as its first line; its stdout is read on from there.
fn python_as_user(
    user: &str,
    script: &str,
    arguments: &[&str],
    ready: &str,
) -> (Process, std::io::BufReader<std::process::ChildStdout>) {
    let child = as_user(user, "/usr/bin/python3")
        .args(["-c", script])
        .args(arguments)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut process = Process(child);
    let mut said = std::io::BufReader::new(process.0.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut said, &mut line).unwrap();
    assert_eq!(line.trim(), ready, "{script}");
    (process, said)
}

/// Another user's listener, counting the connections it receives.
struct Squatter {
    process: Process,
    heard: std::io::BufReader<std::process::ChildStdout>,
}

impl Squatter {
    /// Listens at `address` as the outsider.
    fn start(address: &str) -> Self {
        let (host, port) = address.rsplit_once(':').unwrap();
        let script = "import socket, sys\n\
                 s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
                 s.bind((sys.argv[1], int(sys.argv[2]))); s.listen()\n\
                 print('listening', flush=True)\n\
                 while True:\n    c, _ = s.accept(); print('connected', flush=True); c.close()\n";
        let (process, heard) = python_as_user(OUTSIDER, script, &[host, port], "listening");
        Self { process, heard }
    }

    /// Stops it; how many connections it received.
    fn stop(mut self) -> usize {
        signal(self.process.0.id(), "KILL");
        let _ = self.process.0.wait();
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut self.heard, &mut rest).unwrap();
        rest.matches("connected").count()
    }
}

/// A connection to the instance metadata made while the guard's table was gone lives on in
/// connection tracking without the redirect; once the table is back it is cut, and a request
/// on it gets no answer.
#[test]
fn a_connection_made_while_the_guard_was_gone_is_cut() {
    if !inside_namespace("a_connection_made_while_the_guard_was_gone_is_cut") {
        return;
    }
    let host = Host::start("redirect");
    // The host's own firewall tracks connections (any stateful rule does), so the early
    // connection has a tracking entry from its first packet: without the NAT, for good.
    nft_script(
        "table inet host_firewall {\n\tchain output {\n\t\ttype filter hook output priority 10;\n\
         \t\tct state established,related accept\n\t}\n}\n",
    );
    guard("remove", &host.daemon.config_file);
    let script = "import socket, sys\n\
             s = socket.create_connection(('169.254.169.254', 80))\n\
             print('connected', flush=True)\n\
             sys.stdin.readline()\n\
             try:\n\
             \x20   s.sendall(b'PUT /latest/api/token HTTP/1.1\\r\\nHost: 169.254.169.254\\r\\n'\n\
             \x20       b'X-aws-ec2-metadata-token-ttl-seconds: 60\\r\\nConnection: close\\r\\n\\r\\n')\n\
             \x20   print(repr(s.recv(100)), flush=True)\n\
             except OSError as error:\n\
             \x20   print('cut', error, flush=True)\n";
    let (mut early, mut said) = python_as_user(OUTSIDER, script, &[], "connected");
    guard("apply", &host.daemon.config_file);
    use std::io::Write as _;
    early.0.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut said, &mut answer).unwrap();
    assert!(
        !answer.contains("200 OK"),
        "the early connection was answered: {answer}"
    );
    assert!(
        answer.starts_with("cut") || answer.trim() == "b''",
        "{answer}"
    );
}

/// The port in a configuration's `listen` line.
fn config_port(config: &str) -> u16 {
    let line = config.lines().find(|l| l.starts_with("listen = ")).unwrap();
    line.rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('"')
        .parse()
        .unwrap()
}
