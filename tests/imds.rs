//! The metadata endpoint and the instance-profile source, end to end: an instance-metadata
//! double vends a hoge-ec2-role session (from moto) as an EC2 host's IMDS would; the daemon takes
//! its own identity from it, chains into piyo-role, and answers as IMDSv2 for tools that only
//! speak instance metadata. Clients get nothing but `AWS_EC2_METADATA_SERVICE_ENDPOINT`.

mod support;

use std::process::Output;
use std::time::{Duration, SystemTime};

use support::*;

const TTL: (&str, &str) = ("X-aws-ec2-metadata-token-ttl-seconds", "300");

/// moto, the metadata double, and a daemon whose source identity comes from the double and
/// whose `[imds]` endpoint serves piyo-role.
struct Host {
    moto: Moto,
    double: ImdsDouble,
    daemon: Daemon,
}

impl Host {
    /// `duration` is piyo's configured session length; the host identity is a role session,
    /// so STS would refuse more than one hour.
    fn start(duration: &str) -> Self {
        let moto = Moto::start();
        let double = ImdsDouble::start(&moto);
        let dir = TempDir::new("imds");
        let config = format!(
            "{}duration = \"{duration}\"\nallowed_users = [\"root\"]\n\n[imds]\nrole = \"piyo\"\n",
            moto.config(&dir.path().join("state/token"))
        );
        let source_from_metadata = [
            (
                "AWS_EC2_METADATA_SERVICE_ENDPOINT",
                double.endpoint.as_str(),
            ),
            ("AWS_EC2_METADATA_DISABLED", "false"),
            ("ASSUME_ROLED_LOG", "info,assume_roled=debug"),
        ];
        let daemon = Daemon::start_with(dir, &config, &[], &source_from_metadata);
        daemon.wait_ready();
        Self {
            moto,
            double,
            daemon,
        }
    }

    /// Environment of a tool that only speaks instance metadata, pointed at the daemon.
    fn metadata_env(&self) -> Vec<(String, String)> {
        vec![
            (
                "AWS_EC2_METADATA_SERVICE_ENDPOINT".into(),
                format!("http://{}/", self.daemon.address),
            ),
            ("AWS_EC2_METADATA_DISABLED".into(), "false".into()),
        ]
    }

    /// Runs `program` as such a tool; without `AWS_DEFAULT_REGION` unless `region` is given.
    fn run(&self, program: &std::path::Path, args: &[&str], region: Option<&str>) -> Output {
        let mut command = client(&self.moto, program, &self.metadata_env());
        command.env_remove("AWS_DEFAULT_REGION").args(args);
        if let Some(region) = region {
            command.env("AWS_DEFAULT_REGION", region);
        }
        command.output().unwrap()
    }

    fn session_token(&self) -> String {
        let answer = self.daemon.send("PUT", "/latest/api/token", &[TTL]);
        assert_eq!(answer.status, 200, "{answer:?}");
        answer.body
    }

    fn metadata(&self, path: &str) -> (u16, String) {
        let token = self.session_token();
        self.daemon
            .get(path, &[("X-aws-ec2-metadata-token", &token)])
    }
}

/// The aws CLI, given only the metadata endpoint, acts as piyo-role in 444455556666.
#[test]
fn aws_cli_through_metadata_acts_as_the_role() {
    let host = Host::start("1h");
    let aws = venv_tool("aws");
    let identity = host.run(&aws, WHOAMI, Some("us-east-1"));
    assert_acts_as_piyo(&identity);
    let instances = host.run(&aws, &["ec2", "describe-instances"], Some("us-east-1"));
    assert!(instances.status.success(), "{}", stderr(&instances));
}

/// boto3 and the Rust SDK resolve credentials and region through the daemon: the region is the
/// instance's (passed through from the double), the identity is piyo-role. (botocore uses its
/// metadata region provider for `defaults_mode = auto`, not as a client's region, so the boto3
/// client names its region and the provider is asked directly.)
#[test]
fn sdks_resolve_credentials_and_region_through_metadata() {
    let host = Host::start("1h");
    let script = r#"
import boto3, botocore.utils
session = boto3.Session()
print(session.client("sts", region_name="us-east-1").get_caller_identity()["Arn"])
print(botocore.utils.IMDSRegionProvider(session._session).provide())
"#;
    let boto3 = host.run(&venv_tool("python"), &["-c", script], None);
    let lines: Vec<String> = stdout(&boto3).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 2, "{} {}", stdout(&boto3), stderr(&boto3));
    assert!(lines[0].starts_with(PIYO_SESSION_PREFIX), "{lines:?}");
    assert_eq!(lines[1], "ap-northeast-1");

    let rust = host.run(&rust_sdk_whoami(), &[], None);
    let lines: Vec<String> = stdout(&rust).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 2, "{} {}", stdout(&rust), stderr(&rust));
    assert!(lines[0].starts_with(PIYO_SESSION_PREFIX), "{lines:?}");
    assert_eq!(lines[1], "ap-northeast-1");
}

/// The daemon's own identity came from instance metadata and is a role session, so a 2h
/// duration is capped at 1h with a warning instead of being refused by STS.
#[test]
fn instance_profile_source_caps_chained_duration() {
    let host = Host::start("2h");
    let log = host.daemon.log();
    assert!(
        log.contains("source identity arn=arn:aws:sts::111122223333:assumed-role/hoge-ec2-role/"),
        "{log}"
    );
    assert!(log.contains("duration capped to 1h"), "{log}");
    let credentials = host.daemon.credentials();
    let expiration = credentials["Expiration"].as_str().unwrap();
    let expires = aws_smithy_types::DateTime::from_str(
        expiration,
        aws_smithy_types::date_time::Format::DateTime,
    )
    .unwrap();
    let left = SystemTime::try_from(expires)
        .unwrap()
        .duration_since(SystemTime::now())
        .unwrap();
    assert!(
        left <= Duration::from_secs(3600),
        "{expiration} is more than an hour away"
    );
    assert!(left >= Duration::from_secs(3500), "{expiration}");
}

/// The metadata endpoint and the container endpoint serve the same set, from the same STS call.
#[test]
fn both_endpoints_share_one_refresh_engine() {
    let host = Host::start("1h");
    let listed = host.metadata("/latest/meta-data/iam/security-credentials/");
    assert_eq!(listed, (200, "piyo-role".to_owned()), "no trailing newline");
    let (status, body) = host.metadata("/latest/meta-data/iam/security-credentials/piyo-role");
    assert_eq!(status, 200, "{body}");
    let imds: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(imds["Code"], "Success");
    assert_eq!(imds["Type"], "AWS-HMAC");
    assert!(imds["Expiration"].as_str().unwrap().ends_with('Z'));
    let ecs = host.daemon.credentials();
    assert_eq!(imds["AccessKeyId"], ecs["AccessKeyId"]);
    assert_eq!(
        host.daemon.log().matches("credentials refreshed").count(),
        1
    );
    let (status, body) = host.metadata("/latest/meta-data/iam/info");
    assert_eq!(status, 200);
    assert!(
        body.contains("arn:aws:iam::444455556666:instance-profile/piyo-role"),
        "{body}"
    );
}

/// IMDSv2 rules: the TTL header is echoed, out-of-range TTLs are 400, a proxied PUT is refused,
/// GETs without a valid token are 401, the container token does not stand in for one.
#[test]
fn session_token_rules() {
    let host = Host::start("1h");
    let daemon = &host.daemon;
    let answer = daemon.send("PUT", "/latest/api/token", &[TTL]);
    assert_eq!(
        answer.header("x-aws-ec2-metadata-token-ttl-seconds"),
        Some("300"),
        "{answer:?}"
    );
    for ttl in ["0", "21601", "soon"] {
        let answer = daemon.send(
            "PUT",
            "/latest/api/token",
            &[("X-aws-ec2-metadata-token-ttl-seconds", ttl)],
        );
        assert_eq!(answer.status, 400, "ttl {ttl}");
    }
    assert_eq!(daemon.send("PUT", "/latest/api/token", &[]).status, 400);
    let proxied = daemon.send(
        "PUT",
        "/latest/api/token",
        &[TTL, ("X-Forwarded-For", "10.0.0.1")],
    );
    assert_eq!(proxied.status, 403);
    let path = "/latest/meta-data/iam/security-credentials/piyo-role";
    assert_eq!(daemon.get(path, &[]).0, 401, "IMDSv1 is refused");
    assert_eq!(
        daemon
            .get(path, &[("X-aws-ec2-metadata-token", "1.forged")])
            .0,
        401
    );
    let container_token = daemon.token();
    assert_eq!(
        daemon
            .get(path, &[("X-aws-ec2-metadata-token", &container_token)])
            .0,
        401
    );
    assert_eq!(
        daemon.get(path, &[("Authorization", &container_token)]).0,
        401
    );
}

/// Everything else comes from the real metadata (the double), immutable values once; nothing
/// under the real metadata's `iam/` is ever passed through.
#[test]
fn passthrough_serves_instance_facts_but_never_the_instance_role() {
    let host = Host::start("1h");
    for _ in 0..3 {
        let answer = host.metadata("/latest/meta-data/instance-id");
        assert_eq!(answer, (200, "i-0123456789abcdef0".to_owned()));
    }
    assert_eq!(
        host.double.reads("/latest/meta-data/instance-id"),
        1,
        "cached after one read"
    );
    let (status, document) = host.metadata("/latest/dynamic/instance-identity/document");
    assert_eq!(status, 200);
    assert!(
        document.contains("\"instanceId\": \"i-0123456789abcdef0\""),
        "{document}"
    );

    // The extended path (asked first by the Java v2 and Go SDKs) adds the role's account.
    let extended = "/latest/meta-data/iam/security-credentials-extended/piyo-role";
    let (status, body) = host.metadata(extended);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"AccountId\":\"444455556666\"") && body.contains("\"Code\":\"Success\""),
        "{body}"
    );

    let host_secret = host.moto.host_secrets()[0].clone();
    for path in [
        "/latest/meta-data/iam/security-credentials/hoge-ec2-role",
        "/latest/meta-data/iam/security-credentials-extended/hoge-ec2-role",
        "/latest/meta-data/../meta-data/iam/security-credentials/hoge-ec2-role",
        "/latest/meta-data/%2e%2e/meta-data/iam/security-credentials/hoge-ec2-role",
        "/latest/meta-data//iam/security-credentials/hoge-ec2-role",
    ] {
        let (status, body) = host.metadata(path);
        assert_eq!(status, 404, "{path}: {body}");
        assert!(!body.contains(&host_secret), "{path}");
    }
    let iam_reads = host
        .double
        .reads("/latest/meta-data/iam/security-credentials/hoge-ec2-role");
    let daemon_own_reads = 1; // the daemon's own source chain, before any client asked
    assert!(
        iam_reads <= daemon_own_reads,
        "an iam/ path was passed through ({iam_reads} reads)"
    );

    host.double.freeze();
    let started = std::time::SystemTime::now();
    let (status, body) = host.metadata("/latest/meta-data/placement/availability-zone");
    let took = started.elapsed().unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(
        took < Duration::from_secs(1),
        "upstream down must not hang clients: {took:?}"
    );
    assert_eq!(
        host.metadata("/latest/meta-data/instance-id").0,
        200,
        "cached values survive"
    );
    host.double.thaw();
    assert_eq!(
        host.metadata("/latest/meta-data/placement/availability-zone")
            .0,
        200,
        "answered again once the metadata service is back"
    );
}

/// If the metadata upstream is the daemon's own listener, it refuses to start.
#[test]
fn metadata_upstream_pointing_at_itself_is_refused() {
    let dir = TempDir::new("self-loop");
    let listen = format!("127.0.0.1:{}", free_port());
    let config = format!(
        "[server]\nlisten = \"{listen}\"\ntoken_file = \"{}\"\n[imds]\nrole = \"piyo\"\nupstream = \"http://{listen}/\"\n[[roles]]\nname = \"piyo\"\narn = \"{PIYO_ARN}\"\nallowed_users = [\"root\"]\n",
        dir.path().join("token").display()
    );
    let config = dir.write("config.toml", &config);
    let mut command = std::process::Command::new(daemon_binary());
    isolated(&mut command)
        .args(["serve", "--config"])
        .arg(&config);
    let output = command.output().unwrap();
    assert_eq!(output.status.code(), Some(78));
    assert!(
        stderr(&output).contains("the metadata upstream"),
        "{}",
        stderr(&output)
    );
    assert!(
        stderr(&output).contains("would ask itself"),
        "{}",
        stderr(&output)
    );
}

/// `check` warns, naming the address, when instance metadata answers and no guard keeps local
/// users from it; with a guard configured it does not.
#[test]
fn check_warns_when_instance_metadata_is_unguarded() {
    let moto = Moto::start();
    let double = ImdsDouble::start(&moto);
    let dir = TempDir::new("exposure");
    let plain = moto.config(&dir.path().join("token"));
    let guarded =
        format!("{plain}allowed_users = [\"root\"]\n[imds]\nrole = \"piyo\"\nguard = \"block\"\n");
    let check = |name: &str, text: &str| {
        let path = dir.write(name, text);
        let mut command = std::process::Command::new(daemon_binary());
        let output = isolated(&mut command)
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &double.endpoint)
            .args(["check", "--config"])
            .arg(path)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        stdout(&output)
    };
    let address = double
        .endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let warned = check("plain.toml", &plain);
    assert!(
        warned.contains(&format!("warning: instance metadata answers at {address}")),
        "{warned}"
    );
    let guarded = check("guarded.toml", &guarded);
    assert!(
        !guarded.contains("warning: instance metadata answers"),
        "{guarded}"
    );
    // No watch runs here (no state file): nothing keeps the configured guard in place.
    assert!(
        guarded.contains("warning: metadata guard: no watch keeps it in place"),
        "{guarded}"
    );
}
