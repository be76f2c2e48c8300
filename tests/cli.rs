//! The `assume-roled` binary as an operator meets it: configuration errors, `check`, the token
//! file, the listen address, start-up without STS, and stopping.

mod support;

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use support::*;

fn run(args: &[&str]) -> Output {
    let mut command = Command::new(daemon_binary());
    isolated(&mut command).args(args).output().unwrap()
}

/// A wrong configuration names the file, the line and the key of every problem at once, and
/// exits 78 (`EX_CONFIG`) for `serve` and `check` alike.
#[test]
fn bad_configuration_is_explained_and_exits_78() {
    let dir = TempDir::new("bad-config");
    let config = dir.write(
        "config.toml",
        r#"[server]
listen = "0.0.0.0:9357"

[[roles]]
name = "piyo"
arn = "arn:aws:iam::4444:role/piyo-role"
colour = "blue"
"#,
    );
    let path = config.display().to_string();
    for command in ["serve", "check"] {
        let output = run(&[command, "--config", &path]);
        assert_eq!(output.status.code(), Some(78), "{command}");
        let text = stderr(&output);
        assert!(
            text.contains(&format!("{path}:2: server.listen: ")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{path}:6: roles[0].arn: ")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{path}:7: roles[0].colour: unknown key")),
            "{text}"
        );
    }
    let missing = run(&["check", "--config", "/nonexistent/config.toml"]);
    assert_eq!(missing.status.code(), Some(78));
    assert!(stderr(&missing).contains("/nonexistent/config.toml"));
}

/// `guard apply` on a host without nftables exits 78 and names the package; an exempt user
/// that does not exist is a configuration error with its line.
#[test]
fn guard_setup_errors_are_explained_and_exit_78() {
    let dir = TempDir::new("guard-errors");
    let config = |exempt: &str| {
        format!(
            "[imds]\nrole = \"piyo\"\nguard = \"block\"\nexempt_users = [{exempt}]\n\
             [[roles]]\nname = \"piyo\"\narn = \"{PIYO_ARN}\"\nallowed_users = [\"root\"]\n"
        )
    };
    let unknown = dir.write("unknown.toml", &config("\"ar-no-such-user\""));
    let output = run(&["check", "--config", &unknown.display().to_string()]);
    assert_eq!(output.status.code(), Some(78));
    let expected = format!(
        "{}:4: imds.exempt_users: no such user on this host: ar-no-such-user",
        unknown.display()
    );
    assert!(stderr(&output).contains(&expected), "{}", stderr(&output));

    let valid = dir.write("valid.toml", &config(""));
    let empty_path = dir.path().join("no-tools");
    std::fs::create_dir_all(&empty_path).unwrap();
    let mut command = Command::new(daemon_binary());
    let output = isolated(&mut command)
        .env("PATH", &empty_path)
        .args(["guard", "apply", "--config"])
        .arg(&valid)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(78), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("install the nftables package"),
        "{}",
        stderr(&output)
    );
}

/// `check` summarises a valid configuration; the shipped example is one.
#[test]
fn check_summarises_the_example() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml");
    let output = run(&["check", "--config", example]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("role piyo  arn:aws:iam::444455556666:role/piyo-role"));
}

/// A log filter that cannot be read is said so, and the command goes on at the default level.
#[test]
fn an_unreadable_log_filter_is_named() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml");
    let mut command = Command::new(daemon_binary());
    isolated(&mut command).env("ASSUME_ROLED_LOG", "info,audit=loud");
    let output = command
        .args(["check", "--config", example])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let said = stderr(&output);
    assert!(
        said.contains(r#"ASSUME_ROLED_LOG="info,audit=loud" is not a log filter"#),
        "{said}"
    );
}

/// `check --assume` makes one real AssumeRole per role and shows what it asked with (as
/// `--as-user` for the tags that name the user) and the identity obtained.
#[test]
fn check_assume_shows_the_assumed_identity() {
    let moto = Moto::start();
    let dir = TempDir::new("check");
    let tags = "tags = { user = \"{user}\", team = \"platform\" }\n";
    let config = dir.write(
        "config.toml",
        &format!("{}{tags}", moto.config(&dir.path().join("token"))),
    );
    let mut command = Command::new(daemon_binary());
    isolated(&mut command)
        .envs(moto.host_env())
        .args(["check", "--assume", "--as-user", "nobody", "--config"])
        .arg(&config);
    let output = command.output().unwrap();
    let text = stdout(&output);
    assert!(output.status.success(), "{text} {}", stderr(&output));
    assert!(
        text.contains("source identity  arn:aws:sts::111122223333:assumed-role/hoge-ec2-role/"),
        "{text}"
    );
    assert!(
        text.contains("role piyo  asks as session hoge; tags team=platform, user=nobody\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "role piyo  ok: arn:aws:sts::444455556666:assumed-role/piyo-role/hoge key ASIA"
        ),
        "{text}"
    );
    for secret in moto.host_secrets() {
        assert!(!text.contains(&secret));
    }
}

/// Like ssh with its keys, the daemon refuses a token file that other users can read.
#[test]
fn token_file_readable_by_others_is_refused() {
    let dir = TempDir::new("open-token");
    let token = dir.write("token", &"t".repeat(48));
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let said = serve_refusing(&dir, &token);
    assert!(
        said.contains("can be read by other users (mode 644)"),
        "{said}"
    );
    assert!(!said.contains(&"t".repeat(48)));
}

/// A token file the daemon's user does not own is refused at start (someone else could
/// rewrite it), naming the owner, never the token.
#[test]
fn token_file_of_another_owner_is_refused() {
    let dir = TempDir::new("foreign-token");
    let token = dir.write("token", &"t".repeat(48));
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(&token, Some(65534), None).unwrap();
    let said = serve_refusing(&dir, &token);
    assert!(said.contains("belongs to uid 65534"), "{said}");
    assert!(!said.contains(&"t".repeat(48)));
}

/// `[sts] endpoint` naming the daemon's own listener would have it ask itself for credentials:
/// refused at start with exit 78, naming the setting.
#[test]
fn an_sts_endpoint_at_the_own_listener_is_refused() {
    let dir = TempDir::new("sts-self-loop");
    let listen = format!("127.0.0.1:{}", free_port());
    let token = dir.path().join("state/token");
    let own = format!("http://{listen}");
    let config = dir.write("config.toml", &piyo_config(&listen, &token, Some(&own)));
    let output = run(&["serve", "--config", &config.display().to_string()]);
    assert_eq!(output.status.code(), Some(78), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("[sts] endpoint"),
        "{}",
        stderr(&output)
    );
}

/// `serve` with `token` as its token file; asserts it exits 78 and returns what it said.
fn serve_refusing(dir: &TempDir, token: &std::path::Path) -> String {
    let config = dir.write("config.toml", &piyo_config("127.0.0.1:0", token, None));
    let output = run(&["serve", "--config", &config.display().to_string()]);
    assert_eq!(output.status.code(), Some(78), "{}", stderr(&output));
    stderr(&output)
}

/// A taken port is a clear error naming the address.
#[test]
fn listen_address_in_use_is_named() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let dir = TempDir::new("taken");
    let config = piyo_config(&address, &dir.path().join("token"), None);
    let config = dir.write("config.toml", &config);
    let output = run(&["serve", "--config", &config.display().to_string()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains(&format!("cannot listen on {address}")),
        "{}",
        stderr(&output)
    );
}

/// STS unreachable at start: the port is open at once, answers 503 with a reason instead of
/// empty credentials, and `/readyz` says not ready.
#[test]
fn unreachable_sts_gives_503_that_says_why() {
    let dir = TempDir::new("no-sts");
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let config = piyo_config(
        "127.0.0.1:0",
        &dir.path().join("state/token"),
        Some(&nowhere),
    );
    let host = vec![
        (
            "AWS_ACCESS_KEY_ID".to_owned(),
            "AKIAEXAMPLEEXAMPLE00".to_owned(),
        ),
        (
            "AWS_SECRET_ACCESS_KEY".to_owned(),
            "example-secret".to_owned(),
        ),
    ];
    let daemon = Daemon::start_with(dir, &config, &host, &[]);
    let (status, body) = daemon.first_outcome("piyo");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("\"code\":\"CredentialsUnavailable\""),
        "{body}"
    );
    assert!(body.contains("transient error"), "{body}");
    assert_eq!(daemon.get("/readyz", &[]).0, 503);
    assert_eq!(daemon.get("/healthz", &[]).0, 200);
}

/// The daemon never takes its own identity from the container-credentials endpoint, even when
/// its environment names one: it could otherwise end up asking itself.
#[test]
fn source_identity_never_comes_from_the_container_endpoint() {
    let trap = TcpListener::bind("127.0.0.1:0").unwrap();
    trap.set_nonblocking(true).unwrap();
    let trap_uri = format!("http://{}/creds", trap.local_addr().unwrap());
    let dir = TempDir::new("no-ecs");
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let config = piyo_config(
        "127.0.0.1:0",
        &dir.path().join("state/token"),
        Some(&nowhere),
    );
    let env = [("AWS_CONTAINER_CREDENTIALS_FULL_URI", trap_uri.as_str())];
    let daemon = Daemon::start_with(dir, &config, &[], &env);
    let answer = daemon.first_outcome("piyo");
    assert_eq!(answer.0, 503, "{}", answer.1);
    assert!(answer.1.contains("NoSourceCredentials"), "{}", answer.1);
    assert!(
        trap.accept().is_err(),
        "the daemon connected to the container endpoint"
    );
}

/// SIGTERM stops the daemon cleanly with exit status 0.
#[test]
fn sigterm_exits_zero() {
    let moto = Moto::start();
    let mut daemon = Daemon::start(&moto, &[]);
    daemon.wait_ready();
    let status = daemon.terminate();
    assert!(status.success(), "{status}");
    assert!(daemon.log().contains("stopped"));
}

/// Without CA certificates STS's certificate cannot be verified: the daemon says so and what to
/// install, and exits 78 instead of failing every refresh (or crash-looping).
#[test]
fn missing_ca_certificates_are_explained() {
    let dir = TempDir::new("no-ca");
    let config = piyo_config("127.0.0.1:0", &dir.path().join("token"), None);
    let config = dir.write("config.toml", &config);
    let empty = dir.write("no-certificates.pem", "");
    let mut command = Command::new(daemon_binary());
    isolated(&mut command)
        .env("SSL_CERT_FILE", &empty)
        .env("SSL_CERT_DIR", dir.path())
        .args(["serve", "--config"])
        .arg(&config);
    let output = command.output().unwrap();
    assert_eq!(output.status.code(), Some(78), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("install the ca-certificates package"),
        "{}",
        stderr(&output)
    );
}

/// A token file the daemon's user cannot read (here: the daemon runs as `nobody`, the file is
/// root's, mode 0640) is a clear error naming the file, not a crash or a new token.
#[test]
fn token_file_unreadable_by_the_daemon_is_explained() {
    let dir = TempDir::new("unreadable-token");
    let token = dir.write("token", &"u".repeat(48));
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = dir.write("config.toml", &piyo_config("127.0.0.1:0", &token, None));
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut command = Command::new("setpriv");
    isolated(&mut command)
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(daemon_binary())
        .args(["serve", "--config"])
        .arg(&config);
    let output = command.output().unwrap();
    assert_eq!(output.status.code(), Some(78), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(
        text.contains(&format!("cannot read token file {}", token.display())),
        "{text}"
    );
    assert_eq!(
        text.matches("Permission denied").count(),
        1,
        "said once: {text}"
    );
    assert_eq!(
        std::fs::read_to_string(&token).unwrap(),
        "u".repeat(48),
        "the token was kept"
    );
}

/// A token path that is a directory is refused as such.
#[test]
fn token_path_that_is_a_directory_is_refused() {
    let dir = TempDir::new("token-dir");
    let token = dir.path().join("token");
    std::fs::create_dir(&token).unwrap();
    let said = serve_refusing(&dir, &token);
    assert!(said.contains("is not a regular file"), "{said}");
}

/// Socket activation, as the socket unit does it (here with `systemd-socket-activate`, which
/// holds the addresses and starts the daemon on the first connection): the daemon takes both
/// loopback listeners instead of binding them, answers the connection that started it with
/// credentials (it waits for them at start), serves on [::1] too, and nobody else can bind
/// either address meanwhile.
#[test]
fn takes_its_listeners_from_systemd() {
    let moto = Moto::start();
    let dir = TempDir::new("activation");
    let port = free_port();
    let token = "activationtoken0123456789abcdefghijklmnopqrstuv";
    let token_file = dir.write("token", token);
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let listen = format!("127.0.0.1:{port}");
    let config = dir.write(
        "config.toml",
        &piyo_config(&listen, &token_file, Some(&moto.endpoint)),
    );
    let mut command = Command::new("systemd-socket-activate");
    command.args(["-l", &listen, "-l", &format!("[::1]:{port}")]);
    let environment = [
        ("PATH", std::env::var("PATH").unwrap_or_default()),
        ("HOME", "/nonexistent".to_owned()),
        ("AWS_CONFIG_FILE", "/dev/null".to_owned()),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".to_owned()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ("AWS_DEFAULT_REGION", "us-east-1".to_owned()),
    ];
    let host = moto.host_env();
    let pairs = environment.iter().map(|(k, v)| (k.to_string(), v.clone()));
    for (name, value) in pairs.chain(host) {
        command.args(["-E", &format!("{name}={value}")]);
    }
    let log = dir.path().join("daemon.log");
    command
        .arg(daemon_binary())
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let _activator = Process(command.spawn().unwrap());
    let address: std::net::SocketAddr = listen.parse().unwrap();
    let request = format!(
        "GET /roles/piyo HTTP/1.1\r\nHost: {listen}\r\nAuthorization: {token}\r\nConnection: close\r\n\r\n"
    );
    assert!(
        eventually(10, || std::net::TcpStream::connect(address).is_ok()),
        "systemd-socket-activate does not listen"
    );
    // That probe started the daemon; this request may reach it before its credentials.
    let first = raw_exchange(address, request.as_bytes());
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(first.status, 200, "{first:?}\n{}", log_text());
    let v6: std::net::SocketAddr = format!("[::1]:{port}").parse().unwrap();
    let over_v6 = request.replace(&format!("Host: {listen}"), &format!("Host: {v6}"));
    let second = raw_exchange(v6, over_v6.as_bytes());
    assert_eq!(second.status, 200, "{second:?}");
    for taken in [address, v6] {
        assert!(
            TcpListener::bind(taken).is_err(),
            "{taken} is free for anyone"
        );
    }
    let log = log_text();
    assert!(
        log.contains(&format!("listening address=[::1]:{port}")),
        "{log}"
    );
    assert!(!log.contains("cannot listen"), "{log}");
}

/// A `max_connections` the process cannot open files for is refused at start (exit 78), naming
/// the limit: a flood would otherwise leave the refreshers without a socket for STS.
#[test]
fn max_connections_must_fit_the_open_files_limit() {
    let dir = TempDir::new("nofile");
    let config = dir.write(
        "config.toml",
        &piyo_config(
            "127.0.0.1:0",
            &dir.path().join("token"),
            Some("http://127.0.0.1:9"),
        ),
    );
    let mut command = Command::new("prlimit");
    isolated(&mut command)
        .args(["--nofile=512", "--"])
        .arg(daemon_binary())
        .args(["serve", "--config"])
        .arg(&config);
    let output = command.output().unwrap();
    assert_eq!(output.status.code(), Some(78), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(
            "max_connections = 1024 needs about 1216 open files, but this process may open 512"
        ),
        "{}",
        stderr(&output)
    );
}

/// A token path that is a symbolic link is refused (exit 78), naming it: whoever can write its
/// directory could point it at a file they read.
#[test]
fn a_symlinked_token_file_is_refused() {
    let dir = TempDir::new("symlinked-token");
    let real = dir.write(
        "real-token",
        "symlinkedtoken0123456789abcdefghijklmnopqrstuv",
    );
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o640)).unwrap();
    let link = dir.path().join("token");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let config = dir.write(
        "config.toml",
        &piyo_config("127.0.0.1:0", &link, Some("http://127.0.0.1:9")),
    );
    let output = run(&["serve", "--config", &config.display().to_string()]);
    assert_eq!(output.status.code(), Some(78), "{}", stderr(&output));
    let expected = format!(
        "token file {} is unusable: it is a symbolic link",
        link.display()
    );
    assert!(stderr(&output).contains(&expected), "{}", stderr(&output));
}

/// `env --inline-token` prints the token itself besides the file, for clients that predate the
/// token-file variable; without the flag the token never appears in the output.
#[test]
fn env_can_inline_the_token() {
    let dir = TempDir::new("inline-token");
    let token = "inlinetoken0123456789abcdefghijklmnopqrstuvwxyz";
    let token_file = dir.write("token", token);
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let config = dir.write(
        "config.toml",
        &piyo_config("127.0.0.1:9357", &token_file, None),
    );
    let config = config.display().to_string();
    let inline = run(&["env", "--inline-token", "--config", &config]);
    assert!(inline.status.success(), "{}", stderr(&inline));
    let expected = format!("export AWS_CONTAINER_AUTHORIZATION_TOKEN='{token}'\n");
    assert!(stdout(&inline).contains(&expected), "{}", stdout(&inline));
    let plain = run(&["env", "--config", &config]);
    assert!(!stdout(&plain).contains(token), "{}", stdout(&plain));
}

/// Another user holding the metrics address before the daemon starts does not stop it: it
/// serves credentials, says the metrics listener is not up, and takes the address once it is
/// free.
#[test]
fn a_taken_metrics_address_does_not_stop_the_daemon() {
    let moto = Moto::start();
    let squatter = TcpListener::bind("127.0.0.1:0").unwrap();
    let scrapes = squatter.local_addr().unwrap();
    let dir = TempDir::new("metrics-taken");
    let config = moto.config_with(
        &dir.path().join("state/token"),
        &format!("metrics_listen = \"{scrapes}\""),
    );
    let daemon = Daemon::start_with(dir, &config, &moto.host_env(), &[]);
    daemon.wait_ready();
    assert_eq!(daemon.first_outcome("piyo").0, 200);
    assert!(
        daemon.log().contains("the metrics listener is not up"),
        "{}",
        daemon.log()
    );
    drop(squatter);
    let scraped = || {
        if std::net::TcpStream::connect(scrapes).is_err() {
            return false;
        }
        let answer = raw_exchange(
            scrapes,
            format!("GET /metrics HTTP/1.1\r\nHost: {scrapes}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
        answer.status == 200
    };
    assert!(eventually(15, scraped), "{}", daemon.log());
    assert!(daemon.log().contains("the metrics listener is up"));
}
