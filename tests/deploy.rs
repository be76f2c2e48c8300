//! What `deploy/` hands an operator, used as the README says. The CloudFormation templates are
//! deployed into moto with the real aws CLI, one `aws cloudformation deploy` per account, by
//! each account's administrator; the daemon, given a session of the instance role the host
//! template made, serves the role the target template made, and the aws CLI through it acts as
//! that role, within the managed policy the template attached; `promtool check metrics` finds
//! its scrape clean.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use support::*;

const HOST_ACCOUNT: &str = "111122223333";

fn deploy_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(name)
}

/// The aws CLI as `keys` (an account's administrator), against moto.
fn aws_as(keys: &Value, endpoint: &str, args: &[&str]) -> Output {
    let mut command = Command::new(venv_tool("aws"));
    isolated(&mut command)
        .env("AWS_ACCESS_KEY_ID", keys["AccessKeyId"].as_str().unwrap())
        .env(
            "AWS_SECRET_ACCESS_KEY",
            keys["SecretAccessKey"].as_str().unwrap(),
        )
        .env("AWS_ENDPOINT_URL", endpoint)
        .args(args);
    if let Some(token) = keys["SessionToken"].as_str() {
        command.env("AWS_SESSION_TOKEN", token);
    }
    let output = command.output().unwrap();
    assert!(output.status.success(), "aws {args:?}: {}", stderr(&output));
    output
}

#[test]
fn the_templates_deploy_and_the_daemon_serves_the_role_they_made() {
    // AWS managed policies (ViewOnlyAccess) exist in moto only when it is asked to load them.
    let moto = BareMoto::start_on("127.0.0.1", &[("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/deploy_accounts.py");
    let made = Command::new(venv_tool("python"))
        .arg(&script)
        .arg(&moto.endpoint)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", stderr(&made));
    let keys: Value = serde_json::from_slice(&made.stdout).unwrap();
    let (host_admin, target_admin) = (&keys[HOST_ACCOUNT], &keys[TARGET_ACCOUNT]);

    // The README's two commands.
    let host_template = deploy_file("cloudformation/host-account.yaml");
    let target_template = deploy_file("cloudformation/target-account.yaml");
    let deploy = |admin: &Value, stack: &str, template: &Path, parameters: &[&str]| {
        let mut args = vec!["cloudformation", "deploy", "--stack-name", stack];
        args.extend(["--template-file", template.to_str().unwrap()]);
        args.extend([
            "--capabilities",
            "CAPABILITY_NAMED_IAM",
            "--parameter-overrides",
        ]);
        args.extend(parameters);
        aws_as(admin, &moto.endpoint, &args);
    };
    deploy(
        host_admin,
        "assume-roled-host",
        &host_template,
        &[&format!("TargetRoleArns={PIYO_ARN}"), "SessionTags=true"],
    );
    deploy(
        target_admin,
        "assume-roled-target",
        &target_template,
        &[&format!("HostAccountId={HOST_ACCOUNT}"), "SessionTags=true"],
    );
    // The roles as made (moto 5.2.5 keeps no Outputs for a stack made through a change set,
    // which is how `deploy` makes it: the outputs name these same roles).
    let arn_of = |admin: &Value, role: &str| {
        let args = [
            "iam",
            "get-role",
            "--role-name",
            role,
            "--query",
            "Role.Arn",
            "--output",
            "text",
        ];
        stdout(&aws_as(admin, &moto.endpoint, &args))
            .trim()
            .to_owned()
    };
    let instance_role = arn_of(host_admin, "hoge-ec2-role");
    assert_eq!(
        instance_role,
        format!("arn:aws:iam::{HOST_ACCOUNT}:role/hoge-ec2-role")
    );
    assert_eq!(arn_of(target_admin, "piyo-role"), PIYO_ARN);
    let profile = aws_as(
        host_admin,
        &moto.endpoint,
        &[
            "iam",
            "get-instance-profile",
            "--instance-profile-name",
            "hoge-ec2-role",
            "--query",
            "InstanceProfile.Roles[].RoleName",
            "--output",
            "text",
        ],
    );
    assert_eq!(
        stdout(&profile).trim(),
        "hoge-ec2-role",
        "the instance profile holds the role"
    );
    let policies = aws_as(
        host_admin,
        &moto.endpoint,
        &[
            "iam",
            "list-role-policies",
            "--role-name",
            "hoge-ec2-role",
            "--query",
            "PolicyNames",
            "--output",
            "text",
        ],
    );
    assert_eq!(
        stdout(&policies).split_whitespace().collect::<Vec<_>>(),
        ["assume-target-roles", "tag-target-sessions"],
        "SessionTags=true adds the tagging policy, SourceIdentity=false not its own"
    );

    // What the target template made: trust in the host's instance role alone, tagging allowed,
    // the managed policy attached.
    let role = aws_as(
        target_admin,
        &moto.endpoint,
        &["iam", "get-role", "--role-name", "piyo-role"],
    );
    let role: Value = serde_json::from_str(&stdout(&role)).unwrap();
    let trust = &role["Role"]["AssumeRolePolicyDocument"]["Statement"];
    assert_eq!(trust.as_array().unwrap().len(), 1, "{trust}");
    assert_eq!(
        trust[0]["Principal"]["AWS"],
        instance_role.as_str(),
        "{trust}"
    );
    assert_eq!(
        trust[0]["Action"],
        serde_json::json!(["sts:AssumeRole", "sts:TagSession"]),
        "{trust}"
    );
    assert!(
        trust[0].get("Condition").is_none(),
        "no external id asked for: {trust}"
    );
    // moto 5.2.5's CloudFormation makes the role but leaves its ManagedPolicyArns out (its
    // AWS::IAM::Role takes Policies only), so the test attaches what the template names, as
    // CloudFormation does on AWS; what follows then checks the role works within it.
    let template = std::fs::read_to_string(&target_template).unwrap();
    assert!(template.contains("      ManagedPolicyArns:\n        - !Ref ManagedPolicyArn\n"));
    let view_only = "arn:aws:iam::aws:policy/job-function/ViewOnlyAccess";
    assert!(template.contains(&format!("    Default: {view_only}\n")));
    let attach = [
        "iam",
        "attach-role-policy",
        "--role-name",
        "piyo-role",
        "--policy-arn",
        view_only,
    ];
    aws_as(target_admin, &moto.endpoint, &attach);

    // A session of the instance role, as the instance profile would hand the daemon.
    let session = aws_as(
        host_admin,
        &moto.endpoint,
        &[
            "sts",
            "assume-role",
            "--role-arn",
            &instance_role,
            "--role-session-name",
            "i-0123456789abcdef0",
        ],
    );
    let session: Value = serde_json::from_str(&stdout(&session)).unwrap();
    let credentials = &session["Credentials"];
    let host_env: Vec<(String, String)> = [
        ("AWS_ACCESS_KEY_ID", "AccessKeyId"),
        ("AWS_SECRET_ACCESS_KEY", "SecretAccessKey"),
        ("AWS_SESSION_TOKEN", "SessionToken"),
    ]
    .map(|(variable, field)| {
        (
            variable.to_owned(),
            credentials[field].as_str().unwrap().to_owned(),
        )
    })
    .to_vec();

    let repaired = Command::new(venv_tool("python"))
        .arg(&script)
        .args([
            &moto.endpoint,
            "inline-as-json",
            HOST_ACCOUNT,
            "hoge-ec2-role",
        ])
        .output()
        .unwrap();
    assert!(repaired.status.success(), "{}", stderr(&repaired));
    // From here on moto checks every call as AWS would: the daemon's AssumeRole meets the
    // trust policy the target template wrote, and the host role's permission to assume it.
    let checks = Command::new(venv_tool("python"))
        .arg(&script)
        .args([&moto.endpoint, "checks-on"])
        .output()
        .unwrap();
    assert!(checks.status.success(), "{}", stderr(&checks));

    let dir = TempDir::new("deploy");
    let config = format!(
        "{}tags = {{ host = \"{{host}}\" }}\n",
        piyo_config(
            "127.0.0.1:0",
            &dir.path().join("state/token"),
            Some(&moto.endpoint)
        )
    );
    let daemon = Daemon::start_with(dir, &config, &host_env, &[]);
    daemon.wait_ready();
    let through_daemon = |args: &[&str]| {
        let mut command = Command::new(venv_tool("aws"));
        isolated(&mut command)
            .envs(daemon.client_env())
            .env("AWS_ENDPOINT_URL", &moto.endpoint)
            .args(args);
        command.output().unwrap()
    };
    let whoami = through_daemon(WHOAMI);
    assert!(whoami.status.success(), "{}", stderr(&whoami));
    assert_eq!(stdout(&whoami).trim(), format!("{PIYO_SESSION_PREFIX}hoge"));
    // ViewOnlyAccess lets the role look, not change.
    let look = through_daemon(&[
        "ec2",
        "describe-vpcs",
        "--query",
        "Vpcs[].VpcId",
        "--output",
        "text",
    ]);
    assert!(look.status.success(), "{}", stderr(&look));
    let change = through_daemon(&["iam", "create-user", "--user-name", "intruder"]);
    assert!(!change.status.success(), "the role could create a user");
    assert!(
        stderr(&change).contains("AccessDenied"),
        "{}",
        stderr(&change)
    );

    // The scrape as Prometheus reads it (the names the rules use are checked against the
    // registry by a unit test in src/metrics.rs).
    let token = daemon.token();
    let (status, scrape) = daemon.get("/metrics", &[("Authorization", &token)]);
    assert_eq!(status, 200);

    // `promtool check metrics` on the scrape (promtool comes with Debian's prometheus).
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (apt-get install prometheus)");
    use std::io::Write;
    check
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let checked = check.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "{}{}",
        stdout(&checked),
        stderr(&checked)
    );
    assert_eq!(
        format!("{}{}", stdout(&checked), stderr(&checked)),
        "",
        "promtool has remarks"
    );
}

/// A host in a private subnet reaches STS through an HTTPS proxy: with the drop-in's
/// environment (`HTTPS_PROXY`, `NO_PROXY` for instance metadata) and no `[sts] endpoint`, the
/// daemon asks the proxy for a tunnel to the regional STS endpoint and gets its credentials
/// through it; instance metadata (read for `{instance_id}`) is never sent to the proxy, even
/// with `HTTP_PROXY` set too.
#[test]
fn sts_through_an_https_proxy_and_metadata_never() {
    let moto = Moto::start();
    let dir = TempDir::new("proxy");
    let ca_file = dir.path().join("proxy-ca.pem");
    let sts_host = "sts.us-east-1.amazonaws.com";
    let proxy = HttpsProxy::start(&moto.endpoint, &ca_file, &[sts_host]);
    // At an address NO_PROXY does not name: only the daemon's own choice keeps it off the proxy.
    let double = ImdsDouble::start_at(&moto, "127.0.0.2:0");
    let config = piyo_config("127.0.0.1:0", &dir.path().join("state/token"), None).replace(
        "session_name = \"hoge\"",
        "session_name = \"{instance_id}\"",
    );
    let dropin = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/systemd/proxy.conf"),
    )
    .unwrap();
    let no_proxy = (dropin.lines())
        .find_map(|line| line.strip_prefix("Environment=NO_PROXY="))
        .expect("the drop-in sets NO_PROXY");
    let environment = [
        ("HTTPS_PROXY", proxy.url.as_str()),
        ("HTTP_PROXY", proxy.url.as_str()),
        ("NO_PROXY", no_proxy),
        // The proxy's CA, as a site's own CA is added to the system's store.
        ("SSL_CERT_FILE", ca_file.to_str().unwrap()),
        (
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            double.endpoint.as_str(),
        ),
    ];
    let daemon = Daemon::start_with(dir, &config, &moto.host_env(), &environment);
    daemon.wait_ready();
    let (tunnels, plain) = proxy.seen();
    assert!(!tunnels.is_empty(), "no CONNECT reached the proxy");
    assert!(
        tunnels.iter().all(|t| t == &format!("{sts_host}:443")),
        "{tunnels:?}"
    );
    assert!(
        plain.is_empty(),
        "sent to the proxy in plain HTTP: {plain:?}"
    );

    let mut command = Command::new(venv_tool("aws"));
    isolated(&mut command)
        .envs(daemon.client_env())
        .env("AWS_ENDPOINT_URL", &moto.endpoint)
        .args(WHOAMI);
    let whoami = command.output().unwrap();
    assert!(whoami.status.success(), "{}", stderr(&whoami));
    assert_eq!(
        stdout(&whoami).trim(),
        format!("{PIYO_SESSION_PREFIX}i-0123456789abcdef0"),
        "credentials through the tunnel, named after the instance read without the proxy"
    );
}

/// The cloud-init example writes a configuration `check` accepts (with the group it makes),
/// before the package is installed, which keeps it.
#[test]
fn the_cloud_init_example_writes_a_valid_configuration() {
    let example = deploy_file("cloud-init.yaml");
    let extract = "import sys, yaml\n\
                   doc = yaml.safe_load(open(sys.argv[1]))\n\
                   assert open(sys.argv[1]).readline().strip() == '#cloud-config'\n\
                   files = {f['path']: f for f in doc['write_files']}\n\
                   config = files['/etc/assume-roled/config.toml']\n\
                   assert config['permissions'] == '0640', config\n\
                   print(doc['groups'][0])\n\
                   print(' '.join(doc['runcmd'][1]))\n\
                   sys.stdout.write(config['content'])\n";
    let output = Command::new(venv_tool("python"))
        .args(["-c", extract])
        .arg(&example)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    let mut lines = text.splitn(3, '\n');
    let (group, install, config) = (
        lines.next().unwrap(),
        lines.next().unwrap(),
        lines.next().unwrap(),
    );
    assert!(
        install.contains("--force-confold") && install.contains("apt-get install"),
        "the install must keep the written configuration: {install}"
    );
    // `check` as on the instance, where cloud-init made the group.
    ensure_accounts(&[group], &[]);
    let dir = TempDir::new("cloud-init");
    let path = dir.write("config.toml", config);
    let mut command = Command::new(daemon_binary());
    isolated(&mut command)
        .args(["check", "--config"])
        .arg(&path);
    let checked = command.output().unwrap();
    assert!(
        checked.status.success(),
        "{}{}",
        stdout(&checked),
        stderr(&checked)
    );
    assert!(stdout(&checked).contains(": ok"), "{}", stdout(&checked));
}
