//! Real clients through the real daemon, against moto as AWS: the aws CLI, boto3 and the AWS
//! SDK for Rust, each given nothing but the variables `assume-roled env` prints.

mod support;

use support::*;

/// The aws CLI acts as piyo-role in 444455556666: it reads, sees that account's VPC, and is
/// denied a write that the role's policy does not allow.
#[test]
fn aws_cli_acts_as_the_role_in_the_target_account() {
    let moto = Moto::start();
    let daemon = Daemon::start(&moto, &[]);
    let env = daemon.client_env();

    let identity = aws(&moto, &env, WHOAMI);
    assert!(identity.status.success(), "{}", stderr(&identity));
    assert!(
        stdout(&identity).starts_with(PIYO_SESSION_PREFIX),
        "{}",
        stdout(&identity)
    );

    let instances = aws(&moto, &env, &["ec2", "describe-instances"]);
    assert!(instances.status.success(), "{}", stderr(&instances));
    let query = [
        "ec2",
        "describe-vpcs",
        "--filters",
        "Name=tag:Name,Values=piyo-vpc",
        "--query",
        "length(Vpcs)",
    ];
    let vpcs = aws(&moto, &env, &query);
    assert_eq!(stdout(&vpcs).trim(), "1", "{}", stderr(&vpcs));

    let write = [
        "ec2",
        "run-instances",
        "--image-id",
        "ami-12345678",
        "--instance-type",
        "t2.micro",
    ];
    let denied = aws(&moto, &env, &write);
    assert!(!denied.status.success());
    assert!(
        stderr(&denied).contains("AccessDenied"),
        "{}",
        stderr(&denied)
    );
}

/// `eval "$(assume-roled env)"` is the whole user set-up: a shell that evaluates it, and has no
/// other AWS credentials, acts as piyo-role.
#[test]
fn shell_set_up_by_env_acts_as_the_role() {
    let moto = Moto::start();
    let dir = TempDir::new("env");
    let token_file = dir.path().join("state/token");
    let listen = format!("127.0.0.1:{}", free_port());
    let config = moto.config(&token_file).replace("127.0.0.1:0", &listen);
    let daemon = Daemon::start_with(dir, &config, &moto.host_env(), &[]);
    daemon.wait_ready();
    let script = format!(
        "eval \"$('{}' env --config '{}')\" && exec '{}' sts get-caller-identity --query Arn --output text",
        daemon_binary().display(),
        daemon.config_file.display(),
        venv_tool("aws").display()
    );
    let mut command = std::process::Command::new("sh");
    isolated(&mut command)
        .env("AWS_ENDPOINT_URL", &moto.endpoint)
        .args(["-c", &script]);
    let output = command.output().unwrap();
    assert_acts_as_piyo(&output);
}

/// A long-lived boto3 session making 50 calls asks the daemon once: the served credentials
/// have far more life left than botocore's 15-minute refresh window.
#[test]
fn boto3_session_fetches_once_for_many_calls() {
    let moto = Moto::start();
    let daemon = Daemon::start(&moto, &[]);
    let script = r#"
import boto3
sts = boto3.Session().client("sts")
arns = {sts.get_caller_identity()["Arn"] for _ in range(50)}
print(arns.pop() if len(arns) == 1 else arns)
"#;
    let output = python(&moto, &daemon.client_env(), script);
    assert_acts_as_piyo(&output);
    let token = daemon.token();
    let (_, metrics) = daemon.get("/metrics", &[("Authorization", &token)]);
    let served = "assume_roled_http_requests_total{route=\"roles\",status=\"200\"}";
    let fetches = sample(&metrics, served);
    assert_eq!(
        fetches,
        Some(1.0),
        "boto3 fetched {fetches:?} times for 50 calls"
    );
}

/// The AWS SDK for Rust, default credentials chain, gets the same identity.
#[test]
fn rust_sdk_default_chain_acts_as_the_role() {
    let moto = Moto::start();
    let daemon = Daemon::start(&moto, &[]);
    daemon.wait_ready();
    let output = client(&moto, &rust_sdk_whoami(), &daemon.client_env())
        .output()
        .unwrap();
    assert_acts_as_piyo(&output);
}

/// Without the token, or with a wrong one, clients get nothing, and the daemon's log holds no
/// secret of any kind.
#[test]
fn clients_without_the_right_token_fail() {
    let moto = Moto::start();
    let daemon = Daemon::start(&moto, &[]);
    daemon.wait_ready();
    let credentials = daemon.credentials();

    let no_token = vec![(
        "AWS_CONTAINER_CREDENTIALS_FULL_URI".to_owned(),
        daemon.uri("piyo"),
    )];
    let output = aws(&moto, &no_token, &["sts", "get-caller-identity"]);
    assert!(!output.status.success(), "{}", stdout(&output));

    let wrong = daemon.dir.write("wrong-token", &"w".repeat(48));
    let wrong_token = vec![
        no_token[0].clone(),
        (
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE".to_owned(),
            wrong.display().to_string(),
        ),
    ];
    let output = aws(&moto, &wrong_token, &["sts", "get-caller-identity"]);
    assert!(!output.status.success(), "{}", stdout(&output));

    let log = daemon.log();
    for secret in known_secrets(&moto, &daemon, &credentials) {
        assert!(!log.contains(&secret), "a secret is in the log");
    }
}

/// At trace level, through start, refresh, client requests and shutdown, no secret reaches the
/// log: not the served keys, not the auth token, not the host's own credentials.
#[test]
fn trace_logs_never_contain_secrets() {
    let moto = Moto::start();
    let mut daemon = Daemon::start(&moto, &[("ASSUME_ROLED_LOG", "trace")]);
    daemon.wait_ready();
    let credentials = daemon.credentials();
    let output = aws(&moto, &daemon.client_env(), &["sts", "get-caller-identity"]);
    assert!(output.status.success(), "{}", stderr(&output));
    daemon.get("/roles/piyo", &[("Authorization", "wrong")]);
    let secrets = known_secrets(&moto, &daemon, &credentials);
    let status = daemon.terminate();
    assert!(status.success(), "SIGTERM exits 0: {status}");
    let log = daemon.log();
    assert!(
        log.contains("credentials refreshed") && log.contains("stopped"),
        "{log}"
    );
    assert!(log.lines().count() > 20, "trace logging was on");
    for secret in secrets {
        assert!(!log.contains(&secret), "a secret is in the trace log");
    }
}

/// The client table the README carries, as measured: every client the tests run, given the
/// token file, the token in a variable (`env --inline-token`), or only the metadata endpoint.
/// Debian 12's packaged aws CLI (2.9) predates the token-file variable: it gets a 401 there and
/// works with the other two.
#[test]
fn client_table() {
    const DEBIAN_AWS: &str = "/usr/bin/aws";
    assert!(
        std::path::Path::new(DEBIAN_AWS).exists(),
        "{DEBIAN_AWS} is missing: apt-get install awscli (.ci/run installs it)"
    );
    let moto = Moto::start();
    let dir = TempDir::new("table");
    let config = format!(
        "{}allowed_users = [\"root\"]\n[imds]\nrole = \"piyo\"\nupstream = \"http://127.0.0.1:9\"\n",
        piyo_config(
            // A fixed port: `env` prints the configured address.
            &format!("127.0.0.1:{}", free_port()),
            &dir.path().join("state/token"),
            Some(&moto.endpoint),
        )
    );
    let daemon = Daemon::start_with(dir, &config, &moto.host_env(), &[]);
    daemon.wait_ready();
    let modes: [(&str, Vec<(String, String)>); 3] = [
        ("token file", daemon.client_env()),
        ("token variable", inline_token_env(&daemon)),
        (
            "IMDSv2",
            vec![
                (
                    "AWS_EC2_METADATA_SERVICE_ENDPOINT".into(),
                    format!("http://{}/", daemon.address),
                ),
                ("AWS_EC2_METADATA_DISABLED".into(), "false".into()),
            ],
        ),
    ];
    let boto3 = "import boto3; print(boto3.client('sts').get_caller_identity()['Arn'])";
    let jdk = |stack: &'static str| -> Box<RunClient> {
        let moto = &moto;
        let java = std::path::Path::new("java");
        Box::new(move |env| jdk_whoami(client(moto, java, env), stack).output().unwrap())
    };
    let clients: [(&str, Box<RunClient>); 7] = [
        ("aws CLI (PyPI)", Box::new(|env| aws(&moto, env, WHOAMI))),
        (
            "aws CLI (Debian 12)",
            // 2.9 predates AWS_ENDPOINT_URL too: the endpoint is given on the command line.
            Box::new(|env| debian_aws(&moto, env)),
        ),
        ("boto3", Box::new(|env| python(&moto, env, boto3))),
        (
            "AWS SDK for Rust",
            Box::new(|env| client(&moto, &rust_sdk_whoami(), env).output().unwrap()),
        ),
        // The JVM's default sockets: dual-stack IPv6, so the daemon sees ::ffff:127.0.0.1.
        ("JDK HttpURLConnection", jdk(JDK_STACKS[0])),
        ("JDK java.net.http", jdk(JDK_STACKS[1])),
        (
            "Ruby SDK (Debian 12)",
            // Knows neither the full URI nor a metadata port but 80: the guard is its way.
            Box::new(|env| {
                let ruby = client(&moto, std::path::Path::new("ruby"), env);
                ruby_whoami(ruby, &moto.endpoint).output().unwrap()
            }),
        ),
    ];
    let mut table = Vec::new();
    for (name, run) in &clients {
        let row: Vec<bool> = modes
            .iter()
            .map(|(_, env)| stdout(&run(env)).starts_with(PIYO_SESSION_PREFIX))
            .collect();
        eprintln!("{name:22} {row:?}");
        table.push((*name, row));
    }
    let expected = [
        ("aws CLI (PyPI)", vec![true, true, true]),
        ("aws CLI (Debian 12)", vec![false, true, true]),
        ("boto3", vec![true, true, true]),
        ("AWS SDK for Rust", vec![true, true, true]),
        ("JDK HttpURLConnection", vec![true, true, true]),
        ("JDK java.net.http", vec![true, true, true]),
        ("Ruby SDK (Debian 12)", vec![false, false, false]),
    ];
    let expected: Vec<(&str, Vec<bool>)> = expected.into_iter().collect();
    assert_eq!(table, expected, "modes: token file, token variable, IMDSv2");
    let debian = debian_aws(&moto, &modes[0].1);
    assert!(stderr(&debian).contains("401"), "{}", stderr(&debian));
    // Not a failure of ours: the Ruby SDK never asked the daemon (it took no credentials from
    // anywhere). Its way in is the metadata guard (tests/guard.rs).
    let ruby = ruby_whoami(
        client(&moto, std::path::Path::new("ruby"), &modes[2].1),
        &moto.endpoint,
    )
    .output()
    .unwrap();
    assert!(
        stderr(&ruby).contains("MissingCredentials")
            || stderr(&ruby).contains("unable to sign request without credentials"),
        "{}",
        stderr(&ruby)
    );
}

/// What `assume-roled env --inline-token` exports, but the token file: how a client that
/// reads only the token variable sees it.
fn inline_token_env(daemon: &Daemon) -> Vec<(String, String)> {
    let mut command = std::process::Command::new(daemon_binary());
    let output = isolated(&mut command)
        .args(["env", "--inline-token", "--config"])
        .arg(&daemon.config_file)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let env: Vec<(String, String)> = exported(&stdout(&output))
        .into_iter()
        .filter(|(name, _)| name != "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
        .collect();
    assert_eq!(env.len(), 2, "the URI and the token: {env:?}");
    env
}

/// Runs one client with the given environment.
type RunClient<'a> = dyn Fn(&[(String, String)]) -> std::process::Output + 'a;

/// Debian's packaged aws CLI asking who it is, credentials only from `env`.
fn debian_aws(moto: &Moto, env: &[(String, String)]) -> std::process::Output {
    client(moto, std::path::Path::new("/usr/bin/aws"), env)
        .args(["--endpoint-url", &moto.endpoint])
        .args(WHOAMI)
        .output()
        .unwrap()
}
