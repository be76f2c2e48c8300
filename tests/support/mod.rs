//! Helpers for tests that run real processes: moto as AWS, the real `assume-roled` binary, and
//! the real clients (aws CLI, boto3, the Rust SDK). Every process gets a free loopback port and
//! is killed when its handle drops. Tools come from the project's `.venv`, which `make test`
//! creates; without it the tests fail and say so rather than skip.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;

pub const TARGET_ACCOUNT: &str = "444455556666";
/// How piyo-role's session ARNs start: proof that a client acts in the target account.
pub const PIYO_SESSION_PREFIX: &str = "arn:aws:sts::444455556666:assumed-role/piyo-role/";
pub const PIYO_ARN: &str = "arn:aws:iam::444455556666:role/piyo-role";
/// How long a process may take to become ready before the test fails.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The interval at which readiness is polled.
const POLL: Duration = Duration::from_millis(50);
/// Long enough for the first attempt to end even against a hanging STS (the SDK gives up
/// after 10 s), with room for a loaded machine.
const FIRST_OUTCOME_TIMEOUT: Duration = Duration::from_secs(60);

/// A tool installed in the project's virtualenv by `make test`.
pub fn venv_tool(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".venv/bin")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: run `make test`, which installs moto, boto3 and the aws CLI into .venv",
        path.display()
    );
    path
}

/// The daemon binary under test.
pub fn daemon_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_assume-roled"))
}

/// A fresh directory under the target directory, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port for a test to listen on, or to find nobody listening on. It is below the kernel's
/// ephemeral range (32768 and up), where every `:0` bind and outgoing connection lands, so no
/// other test can take it between this call and its use; and it is handed out once per test
/// process (the tests of one binary run in parallel, binaries one after another).
pub fn free_port() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let base = 10_000 + (std::process::id() as usize % 200) * 100;
    for _ in 0..100 {
        let port = u16::try_from(base + NEXT.fetch_add(1, Ordering::SeqCst) % 100).unwrap();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port among {base}..{}", base + 100)
}

fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = std::time::SystemTime::now() + READY_TIMEOUT;
    while !ready() {
        assert!(
            std::time::SystemTime::now() < deadline,
            "{what} did not become ready"
        );
        std::thread::sleep(POLL);
    }
}

/// A child process killed on drop.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A moto server with the two-account scenario, IAM checks on.
pub struct Moto {
    pub endpoint: String,
    /// A session of `hoge-ec2-role` in 111122223333: what the instance profile would provide.
    pub host_credentials: Value,
    _process: Process,
}

/// A moto server with nothing in it (and IAM checks off), for tests that make their own
/// accounts.
pub struct BareMoto {
    pub endpoint: String,
    pub process: Process,
}

impl BareMoto {
    /// Moto listening on `host` (its endpoint is loopback either way), with `env` added to its
    /// environment.
    pub fn start_on(host: &str, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let child = Command::new(venv_tool("moto_server"))
            .args(["-H", host, "-p", &port.to_string()])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts");
        let process = Process(child);
        wait_for("moto", || TcpStream::connect(("127.0.0.1", port)).is_ok());
        Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            process,
        }
    }
}

impl Moto {
    pub fn start() -> Self {
        Self::start_on("127.0.0.1")
    }

    /// Moto listening on `host` (`0.0.0.0`: also reachable from a namespace joined to this one);
    /// `endpoint` is its loopback address either way.
    pub fn start_on(host: &str) -> Self {
        let BareMoto { endpoint, process } = BareMoto::start_on(host, &[]);
        let bootstrap = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/bootstrap.py");
        let output = Command::new(venv_tool("python"))
            .arg(bootstrap)
            .arg(&endpoint)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "bootstrap failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let host_credentials = serde_json::from_slice(&output.stdout).unwrap();
        Self {
            endpoint,
            host_credentials,
            _process: process,
        }
    }

    /// Environment giving a process the host's own identity, as an instance profile would.
    pub fn host_env(&self) -> Vec<(String, String)> {
        let c = &self.host_credentials;
        vec![
            (
                "AWS_ACCESS_KEY_ID".into(),
                c["AccessKeyId"].as_str().unwrap().into(),
            ),
            (
                "AWS_SECRET_ACCESS_KEY".into(),
                c["SecretAccessKey"].as_str().unwrap().into(),
            ),
            (
                "AWS_SESSION_TOKEN".into(),
                c["SessionToken"].as_str().unwrap().into(),
            ),
        ]
    }

    /// The host's own secret values, which must never appear in the daemon's output.
    pub fn host_secrets(&self) -> Vec<String> {
        let c = &self.host_credentials;
        vec![
            c["SecretAccessKey"].as_str().unwrap().into(),
            c["SessionToken"].as_str().unwrap().into(),
        ]
    }

    /// A configuration for the daemon that serves piyo-role through this moto.
    pub fn config(&self, token_file: &Path) -> String {
        piyo_config("127.0.0.1:0", token_file, Some(&self.endpoint))
    }

    /// Like [`Moto::config`], with `server` lines added to `[server]`.
    pub fn config_with(&self, token_file: &Path, server: &str) -> String {
        with_server_lines(&self.config(token_file), server)
    }
}

/// `config` (as [`piyo_config`] writes it) with `server` lines added to its `[server]` table.
pub fn with_server_lines(config: &str, server: &str) -> String {
    config.replacen("[sts]", &format!("{server}\n\n[sts]"), 1)
}

/// A configuration serving piyo-role as `/roles/piyo`, listening on `listen`, with STS at
/// `sts_endpoint` (`None`: the regional default, over https). It ends inside the role's table,
/// so tests can append role keys.
pub fn piyo_config(listen: &str, token_file: &Path, sts_endpoint: Option<&str>) -> String {
    let endpoint = sts_endpoint.map_or(String::new(), |url| format!("endpoint = \"{url}\"\n"));
    format!(
        "[server]\nlisten = \"{listen}\"\ntoken_file = \"{}\"\n\n[sts]\nregion = \"us-east-1\"\n{endpoint}\n\
         [[roles]]\nname = \"piyo\"\narn = \"{PIYO_ARN}\"\nsession_name = \"hoge\"\n",
        token_file.display()
    )
}

/// An empty home directory of its own for one client: clients write caches there (botocore,
/// the aws CLI), and parallel tests must not share them.
fn fresh_home() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let home = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "home-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&home).unwrap();
    home
}

/// Environment every process gets, isolating it from the machine's own AWS configuration.
pub fn isolated(command: &mut Command) -> &mut Command {
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", fresh_home())
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_DEFAULT_REGION", "us-east-1")
}

/// A running `assume-roled serve`.
pub struct Daemon {
    pub address: SocketAddr,
    pub token_file: PathBuf,
    pub config_file: PathBuf,
    pub log_file: PathBuf,
    process: Process,
    pub dir: TempDir,
}

impl Daemon {
    /// Starts the daemon with the host's identity and `config` (a function of the token path),
    /// and waits until it listens.
    pub fn start(moto: &Moto, extra_env: &[(&str, &str)]) -> Self {
        let dir = TempDir::new("daemon");
        let token_file = dir.path().join("state/token");
        let config = moto.config(&token_file);
        Self::start_with(dir, &config, &moto.host_env(), extra_env)
    }

    pub fn start_with(
        dir: TempDir,
        config: &str,
        host_env: &[(String, String)],
        extra_env: &[(&str, &str)],
    ) -> Self {
        let config_file = dir.write("config.toml", config);
        let log_file = dir.path().join("daemon.log");
        let mut command = Command::new(daemon_binary());
        isolated(&mut command)
            .args(["serve", "--config"])
            .arg(&config_file)
            .envs(host_env.iter().map(|(k, v)| (k, v)))
            .envs(extra_env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_file).unwrap());
        let process = Process(command.spawn().expect("daemon starts"));
        let mut daemon = Self {
            address: "127.0.0.1:0".parse().unwrap(),
            token_file: dir.path().join("state/token"),
            config_file,
            log_file,
            process,
            dir,
        };
        let mut found = None;
        wait_for("the daemon's listener", || {
            found = listening_address(&daemon.log());
            found.is_some()
        });
        daemon.address = found.unwrap();
        daemon
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_default()
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.process.0.id()
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(&self.token_file).unwrap()
    }

    /// Waits until `/readyz` says every role has credentials.
    /// Waits until the daemon has credentials; if it never does, the panic shows its log.
    pub fn wait_ready(&self) {
        let ready = eventually(READY_TIMEOUT.as_secs(), || {
            self.get("/readyz", &[]).0 == 200
        });
        assert!(
            ready,
            "the daemon's credentials did not become ready:\n{}",
            self.log()
        );
    }

    pub fn uri(&self, role: &str) -> String {
        format!("http://{}/roles/{role}", self.address)
    }

    /// One HTTP/1.1 GET with `headers`; returns status and body.
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let answer = self.send("GET", path, headers);
        (answer.status, answer.body)
    }

    /// One HTTP/1.1 request with `headers` and no body.
    pub fn send(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.address
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        raw_exchange(self.address, request.as_bytes())
    }

    /// The first answer for `role` that is not `CredentialsUninitialized`: the outcome of the
    /// daemon's first STS call.
    pub fn first_outcome(&self, role: &str) -> (u16, String) {
        let token = self.token();
        let path = format!("/roles/{role}");
        let mut answer = (0, String::new());
        let decided = eventually(FIRST_OUTCOME_TIMEOUT.as_secs(), || {
            answer = self.get(&path, &[("Authorization", &token)]);
            !answer.1.contains("CredentialsUninitialized")
        });
        assert!(
            decided,
            "no outcome for {role} yet: {answer:?}\n{}",
            self.log()
        );
        answer
    }

    /// The credentials body, fetched with the right token.
    pub fn credentials(&self) -> Value {
        let (status, body) = self.get("/roles/piyo", &[("Authorization", &self.token())]);
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Environment pointing a client at this daemon, as `assume-roled env` would.
    pub fn client_env(&self) -> Vec<(String, String)> {
        vec![
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI".into(),
                self.uri("piyo"),
            ),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE".into(),
                self.token_file.display().to_string(),
            ),
        ]
    }

    /// Rewrites the configuration file with `config`, sends SIGHUP and waits until the daemon
    /// says it reloaded.
    pub fn reload(&self, config: &str) {
        self.reload_until(config, "configuration reloaded");
    }

    /// Like [`Daemon::reload`], but waits for one more log line containing `outcome`.
    pub fn reload_until(&self, config: &str, outcome: &str) {
        let reloads = || self.log().matches(outcome).count();
        let before = reloads();
        std::fs::write(&self.config_file, config).unwrap();
        let pid = self.pid().to_string();
        Command::new("kill").args(["-HUP", &pid]).status().unwrap();
        assert!(
            eventually(10, || reloads() > before),
            "no reload: {}",
            self.log()
        );
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = self.process.0.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.process.0.wait().unwrap()
    }
}

/// The address from the daemon's `listening address=…` log line.
fn listening_address(log: &str) -> Option<SocketAddr> {
    let line = log
        .lines()
        .find(|line| line.contains("listening address="))?;
    let rest = &line[line.find("address=")? + "address=".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// An HTTP answer as read off the socket.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// Status line and headers.
    pub head: String,
    pub body: String,
}

impl Answer {
    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// Writes raw bytes to `address` and reads the answer until the server closes.
pub fn raw_exchange(address: SocketAddr, request: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    Answer {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

/// A client process talking to moto, isolated from the machine's AWS configuration, with
/// credentials only from `env`.
pub fn client(moto: &Moto, program: &Path, env: &[(String, String)]) -> Command {
    let mut command = Command::new(program);
    isolated(&mut command)
        .env("AWS_ENDPOINT_URL", &moto.endpoint)
        .envs(env.iter().map(|(k, v)| (k, v)));
    command
}

/// Runs the real aws CLI against moto with credentials only from `env`.
pub fn aws(moto: &Moto, env: &[(String, String)], args: &[&str]) -> Output {
    client(moto, &venv_tool("aws"), env)
        .args(args)
        .output()
        .unwrap()
}

/// Runs a Python snippet with the venv's boto3, credentials only from `env`.
pub fn python(moto: &Moto, env: &[(String, String)], script: &str) -> Output {
    client(moto, &venv_tool("python"), env)
        .args(["-c", script])
        .output()
        .unwrap()
}

/// The JDK's HTTP stacks, as `JdkWhoAmI.java` names them: `HttpURLConnection` (the AWS SDK for
/// Java's credential providers) and `java.net.http.HttpClient`.
pub const JDK_STACKS: [&str; 2] = ["urlconnection", "httpclient"];

/// `java` running `tests/support/JdkWhoAmI.java` on `stack` (one of [`JDK_STACKS`]), as
/// `command` starts it (`Command::new("java")`, or [`as_user`]): the JVM's default sockets,
/// which are dual-stack IPv6 ones. It prints the ARN STS names for the credentials it found.
pub fn jdk_whoami(mut command: Command, stack: &str) -> Command {
    assert!(
        Command::new("sh")
            .args(["-c", "command -v java"])
            .output()
            .unwrap()
            .status
            .success(),
        "java is missing: apt-get install default-jdk-headless (.ci/run installs it)"
    );
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/JdkWhoAmI.java");
    // A small, quick JVM: the program runs for a second.
    command
        .args(["-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xss512k"])
        .arg(source)
        .arg(stack);
    command
}

/// Debian's packaged AWS SDK for Ruby (`ruby-aws-sdk-core`) asking STS at `sts` who it is, as
/// `command` starts `ruby`; it prints the ARN. That SDK (3.168) predates `AWS_ENDPOINT_URL`,
/// so the endpoint is given to the client.
pub fn ruby_whoami(mut command: Command, sts: &str) -> Command {
    let loads = Command::new("ruby")
        .args(["-raws-sdk-core", "-e", ""])
        .status();
    assert!(
        loads.is_ok_and(|status| status.success()),
        "Debian's Ruby SDK is missing: apt-get install ruby-aws-sdk-core (.ci/run installs it)"
    );
    let script = "require 'aws-sdk-core'; \
        sts = Aws::STS::Client.new(region: 'us-east-1', endpoint: ARGV[0]); \
        puts sts.get_caller_identity.arn";
    command.args(["-e", script, sts]);
    command
}

/// The example built with the AWS SDK for Rust (`examples/sdk_whoami.rs`).
pub fn rust_sdk_whoami() -> PathBuf {
    let binary = daemon_binary()
        .parent()
        .unwrap()
        .join("examples/sdk_whoami");
    assert!(
        binary.exists(),
        "{} is missing: run `make test`, which builds the examples first",
        binary.display()
    );
    binary
}

/// Starts one of the Python helpers in `tests/support/` with one argument; it prints the port
/// it listens on as its first line.
fn start_helper(script: &str, argument: &str, stderr: Stdio) -> (Process, u16) {
    start_helper_with(script, &[argument], stderr)
}

fn start_helper_with(script: &str, arguments: &[&str], stderr: Stdio) -> (Process, u16) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support")
        .join(script);
    let mut child = Command::new(venv_tool("python"))
        .arg(script)
        .args(arguments)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut line = String::new();
    let stdout = child.stdout.take().unwrap();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
    let port = line.trim().parse().expect("the helper prints its port");
    (Process(child), port)
}

/// An HTTPS proxy (`connect_proxy.py`) that opens CONNECT tunnels to `hosts` only, ends TLS
/// there with a certificate of a CA of its own (written to `ca_file`), and forwards what it
/// reads inside to `target` (moto).
pub struct HttpsProxy {
    /// `http://127.0.0.1:<port>`, for HTTPS_PROXY.
    pub url: String,
    address: SocketAddr,
    _process: Process,
}

impl HttpsProxy {
    pub fn start(target: &str, ca_file: &Path, hosts: &[&str]) -> Self {
        let ca_file = ca_file.to_str().unwrap();
        let arguments: Vec<&str> = [target, ca_file]
            .into_iter()
            .chain(hosts.iter().copied())
            .collect();
        let (process, port) = start_helper_with("connect_proxy.py", &arguments, Stdio::null());
        Self {
            url: format!("http://127.0.0.1:{port}"),
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            _process: process,
        }
    }

    /// The CONNECT targets it was asked for, and the plain requests (absolute URLs) it was
    /// sent, in order.
    pub fn seen(&self) -> (Vec<String>, Vec<String>) {
        let request = format!(
            "GET /__proxy/stats HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.address
        );
        let stats: Value =
            serde_json::from_str(&raw_exchange(self.address, request.as_bytes()).body).unwrap();
        let list = |key: &str| -> Vec<String> {
            (stats[key].as_array().cloned().unwrap_or_default())
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        };
        (list("connect"), list("plain"))
    }
}

/// The fault-injecting STS proxy (`sts_proxy.py`) in front of moto.
pub struct StsProxy {
    pub endpoint: String,
    address: SocketAddr,
    _process: Process,
}

impl StsProxy {
    pub fn start(moto: &Moto) -> Self {
        let (process, port) = start_helper("sts_proxy.py", &moto.endpoint, Stdio::null());
        Self {
            endpoint: format!("http://127.0.0.1:{port}"),
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            _process: process,
        }
    }

    /// Switches what the proxy does with the next requests (see `sts_proxy.py`).
    pub fn set_mode(&self, mode: &str) {
        let request = format!(
            "POST /__proxy/mode HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{mode}",
            self.address,
            mode.len()
        );
        let answer = raw_exchange(self.address, request.as_bytes());
        assert_eq!(answer.status, 200, "{answer:?}");
    }

    /// How many calls of `action` (e.g. `AssumeRole`) reached the proxy.
    pub fn calls(&self, action: &str) -> u64 {
        self.stats()[action].as_u64().unwrap_or(0)
    }

    /// The gaps between successive calls of `action` that reached the proxy, in order.
    pub fn gaps(&self, action: &str) -> Vec<Duration> {
        let stats = self.stats();
        let times: Vec<f64> = (stats["times"][action]
            .as_array()
            .cloned()
            .unwrap_or_default())
        .iter()
        .filter_map(Value::as_f64)
        .collect();
        (times.windows(2))
            .map(|pair| Duration::from_secs_f64(pair[1] - pair[0]))
            .collect()
    }

    /// The `RoleSessionName` and `SourceIdentity` (if any) of every `AssumeRole`, in order.
    pub fn sessions(&self) -> Vec<(String, Option<String>)> {
        let stats = self.stats();
        let named = stats["AssumeRole_sessions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        named
            .iter()
            .map(|pair| {
                let name = pair[0].as_str().unwrap_or_default().to_owned();
                (name, pair[1].as_str().map(str::to_owned))
            })
            .collect()
    }

    /// Every `AssumeRole`'s parameters as STS received them (its query form: `Tags.member.1.Key`,
    /// `Policy`, ...), in order.
    pub fn assume_role_params(&self) -> Vec<serde_json::Map<String, Value>> {
        let stats = self.stats();
        (stats["AssumeRole_params"]
            .as_array()
            .cloned()
            .unwrap_or_default())
        .into_iter()
        .filter_map(|params| params.as_object().cloned())
        .collect()
    }

    fn stats(&self) -> Value {
        let request = format!(
            "GET /__proxy/stats HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.address
        );
        serde_json::from_str(&raw_exchange(self.address, request.as_bytes()).body).unwrap()
    }
}

/// Polls `condition` every 50 ms for up to `seconds`; false if it never held.
pub fn eventually(seconds: u64, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = std::time::SystemTime::now() + Duration::from_secs(seconds);
    while std::time::SystemTime::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(POLL);
    }
    condition()
}

/// Creates `groups`, then `users` (each in its supplementary groups), once per test binary (the
/// tests run in parallel), accepting what another process made meanwhile: `groupadd -f`
/// succeeds on an existing group, and `useradd` exits 9 for an existing user.
pub fn ensure_accounts(groups: &[&str], users: &[(&str, &[&str])]) {
    static MADE: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut made = MADE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    for group in groups {
        if made.contains(&group.to_string()) {
            continue;
        }
        let status = Command::new("groupadd").args(["-f", group]).status();
        assert!(status.unwrap().success(), "groupadd -f {group}");
        made.push(group.to_string());
    }
    for (user, supplementary) in users {
        if made.contains(&user.to_string()) {
            continue;
        }
        let mut command = Command::new("useradd");
        command.args(["--no-create-home", "--shell", "/usr/sbin/nologin"]);
        if !supplementary.is_empty() {
            command.args(["--groups", &supplementary.join(",")]);
        }
        let output = command.arg(user).output().unwrap();
        const EXISTS: i32 = 9;
        let made_or_there = output.status.success() || output.status.code() == Some(EXISTS);
        assert!(made_or_there, "useradd {user}: {}", stderr(&output));
        made.push(user.to_string());
    }
}

/// `program` run as `user`, with that user's groups.
pub fn as_user(user: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new("setpriv");
    command
        .args([
            &format!("--reuid={user}"),
            &format!("--regid={user}"),
            "--init-groups",
            "--",
        ])
        .arg(program);
    command
}

/// Sends `SIG<name>` to `pid` with the shell's `kill`.
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

/// The value of the sample `series` (name and labels, as printed) in OpenMetrics text, parsed,
/// so that `1` does not match `10`.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The variables `assume-roled env` prints, parsed from its sh lines.
pub fn exported(lines: &str) -> Vec<(String, String)> {
    lines
        .lines()
        .filter_map(|line| line.strip_prefix("export "))
        .map(|assignment| {
            let (name, value) = assignment.split_once('=').unwrap();
            (name.to_owned(), value.trim_matches('\'').to_owned())
        })
        .collect()
}

/// An instance-metadata double (`imds_double.py`) vending the host role's credentials.
pub struct ImdsDouble {
    pub endpoint: String,
    log_file: PathBuf,
    process: Process,
    _dir: TempDir,
}

impl ImdsDouble {
    pub fn start(moto: &Moto) -> Self {
        Self::start_at(moto, "127.0.0.1:0")
    }

    /// A double listening at `address` (`169.254.169.254:80` in a test's network namespace).
    pub fn start_at(moto: &Moto, address: &str) -> Self {
        let dir = TempDir::new("imds-double");
        let log_file = dir.path().join("reads.log");
        let log = Stdio::from(std::fs::File::create(&log_file).unwrap());
        let credentials = moto.host_credentials.to_string();
        let (process, port) = start_helper_with("imds_double.py", &[&credentials, address], log);
        let host = address
            .rsplit_once(':')
            .map_or("127.0.0.1", |(host, _)| host);
        Self {
            endpoint: format!("http://{host}:{port}/"),
            log_file,
            process,
            _dir: dir,
        }
    }

    /// How many times `path` was read from the double.
    pub fn reads(&self, path: &str) -> usize {
        let log = std::fs::read_to_string(&self.log_file).unwrap_or_default();
        log.lines()
            .filter(|line| *line == format!("GET {path}"))
            .count()
    }

    /// Freezes the double (SIGSTOP): connections are still accepted by the kernel but never
    /// answered, the way a wedged or unreachable metadata service behaves. A killed double
    /// would refuse connections at once, which proves nothing about timeouts.
    pub fn freeze(&self) {
        signal(self.process.0.id(), "STOP");
    }

    /// Lets a frozen double answer again (SIGCONT).
    pub fn thaw(&self) {
        signal(self.process.0.id(), "CONT");
    }
}

/// The aws CLI arguments that print the caller's ARN alone.
pub const WHOAMI: &[&str] = &[
    "sts",
    "get-caller-identity",
    "--query",
    "Arn",
    "--output",
    "text",
];

/// Asserts that a client printed (first) piyo-role's session ARN.
pub fn assert_acts_as_piyo(output: &Output) {
    assert!(
        stdout(output).starts_with(PIYO_SESSION_PREFIX),
        "{} {}",
        stdout(output),
        stderr(output)
    );
}

/// Every secret a test run knows: the host's credentials, the daemon's token, and the served
/// credentials in `served` (an ECS body).
pub fn known_secrets(moto: &Moto, daemon: &Daemon, served: &Value) -> Vec<String> {
    let mut secrets = moto.host_secrets();
    secrets.push(daemon.token());
    for key in ["SecretAccessKey", "Token"] {
        secrets.push(served[key].as_str().unwrap().to_owned());
    }
    secrets
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
