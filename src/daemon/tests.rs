//! The daemon run in-process: real listeners on loopback port 0, the fake STS, a reload channel
//! instead of SIGHUP. What needs the real binary and real clients stays in `tests/`.

use std::net::SocketAddr;
use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::reloads::{sections_needing_restart, unsafe_for_running_metadata};
use super::setup::refuse_self_loops;
use super::*;
use crate::config;
use crate::fake::{FakeClock, FakeSts, Reply, scratch_dir};

/// Long enough for anything here on a loaded machine; the daemon answers in milliseconds.
const DEADLINE: Duration = Duration::from_secs(20);

/// A daemon running in this test's runtime.
struct Running {
    address: SocketAddr,
    metrics_address: Option<SocketAddr>,
    dir: PathBuf,
    sts: Arc<FakeSts>,
    reload: mpsc::Sender<()>,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

fn config_text(dir: &Path, roles: &[&str]) -> String {
    let mut text = format!(
        "[server]\ntoken_file = \"{}/token\"\n[sts]\nregion = \"ap-northeast-1\"\n",
        dir.display()
    );
    for role in roles {
        text.push_str(&format!(
            "[[roles]]\nname = \"{role}\"\narn = \"arn:aws:iam::444455556666:role/{role}-role\"\n"
        ));
    }
    text
}

impl Running {
    /// Starts the daemon and waits until it serves (and so has written its token file).
    async fn start(name: &str, roles: &[&str], script: Vec<Reply>, with_metrics: bool) -> Self {
        let daemon =
            Self::start_with(name, roles, script, with_metrics, Environment::default()).await;
        assert_eq!(get(daemon.address, "/healthz", None).await.0, 200);
        daemon
    }

    /// Starts the daemon on `text` written into `dir`, and waits until it serves.
    async fn start_in(dir: PathBuf, text: &str) -> Self {
        let daemon = Self::launch(dir, text, vec![], false, Environment::default()).await;
        assert_eq!(get(daemon.address, "/healthz", None).await.0, 200);
        daemon
    }

    async fn start_with(
        name: &str,
        roles: &[&str],
        script: Vec<Reply>,
        with_metrics: bool,
        environment: Environment,
    ) -> Self {
        let dir = scratch_dir(name);
        let text = config_text(&dir, roles);
        Self::launch(dir, &text, script, with_metrics, environment).await
    }

    async fn launch(
        dir: PathBuf,
        text: &str,
        script: Vec<Reply>,
        with_metrics: bool,
        environment: Environment,
    ) -> Self {
        let config_path = dir.join("config.toml");
        std::fs::write(&config_path, text).unwrap();
        let config = config::load(&config_path).unwrap();
        let main = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics = match with_metrics {
            true => Some(TcpListener::bind("127.0.0.1:0").await.unwrap()),
            false => None,
        };
        let address = main.local_addr().unwrap();
        let metrics_address = metrics.as_ref().map(|l| l.local_addr().unwrap());
        let clock = FakeClock::new();
        let sts = FakeSts::new(clock.clone(), script);
        let (reload, reloads) = mpsc::channel(1);
        let shutdown = CancellationToken::new();
        let parts = Parts {
            config_path,
            config,
            listeners: Listeners {
                main: vec![main],
                metrics: metrics.map(setup::MetricsListener::Bound),
                containers: Vec::new(),
            },
            sts: sts.clone(),
            clock,
            environment,
            notifier: Notifier::disabled(),
            reloads,
        };
        let task = tokio::spawn(run(parts, shutdown.clone()));
        Self {
            address,
            metrics_address,
            dir,
            sts,
            reload,
            shutdown,
            task,
        }
    }

    fn token(&self) -> String {
        std::fs::read_to_string(self.dir.join("token")).unwrap()
    }

    async fn get(&self, path: &str) -> (u16, String) {
        get(self.address, path, Some(&self.token())).await
    }

    /// Polls `path` until it answers `status`; the last answer otherwise.
    async fn until(&self, path: &str, status: u16) -> (u16, String) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let answer = self.get(path).await;
            if answer.0 == status || tokio::time::Instant::now() > deadline {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("the daemon stops in time")
            .expect("the daemon task is joined")
    }
}

/// Waits until `path` exists (a token file the daemon writes).
async fn wait_for_file(path: &Path) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !path.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The status `token` gets for `path` once it is 200, or the last one within the deadline.
async fn status_with(address: SocketAddr, path: &str, token: &str) -> u16 {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let status = get(address, path, Some(token)).await.0;
        if status == 200 || tokio::time::Instant::now() > deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Deletes `token_file` (which opens role piyo) and reloads: a new token must be issued that
/// opens the role, the old one must be refused, and no STS call made.
async fn assert_reissued_on_reload(daemon: Running, token_file: &Path) {
    let old = std::fs::read_to_string(token_file).unwrap();
    assert_eq!(get(daemon.address, "/roles/piyo", Some(&old)).await.0, 200);
    std::fs::remove_file(token_file).unwrap();
    daemon.reload.send(()).await.unwrap();
    wait_for_file(token_file).await;
    let new = std::fs::read_to_string(token_file).unwrap();
    assert_ne!(new, old);
    let status = status_with(daemon.address, "/roles/piyo", &new).await;
    assert_eq!(status, 200, "the new token opens the role");
    assert_eq!(get(daemon.address, "/roles/piyo", Some(&old)).await.0, 401);
    assert_eq!(daemon.sts.calls(), 1, "the credentials were kept");
    daemon.stop().await.unwrap();
}

/// One request on a new connection: status and body.
async fn get(address: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let auth = token.map_or(String::new(), |t| format!("Authorization: {t}\r\n"));
    let head = format!("Host: {address}\r\n{auth}");
    get_with(address, path, &head).await
}

/// One request on a new connection with the header lines `head`: status and body.
async fn get_with(address: SocketAddr, path: &str, head: &str) -> (u16, String) {
    let exchange = async {
        let mut stream = TcpStream::connect(address).await.unwrap();
        let head = format!("GET {path} HTTP/1.1\r\n{head}Connection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    };
    let answer = tokio::time::timeout(DEADLINE, exchange)
        .await
        .expect("an answer in time");
    let status = answer[9..12].parse().expect("a status line");
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_owned())
}

/// The value of the sample `name{labels}` in OpenMetrics text, parsed, so `1` is not `10`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Serves the configured role; a reload adds one role and removes another, fetching only the
/// new one; shutdown stops accepting, closes idle connections and ends well.
#[tokio::test]
async fn reload_adds_and_removes_roles_then_shutdown_ends_cleanly() {
    let daemon = Running::start("reload", &["piyo"], vec![], false).await;
    let (status, body) = daemon.until("/roles/piyo", 200).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"AccessKeyId\":\"ASIAFAKE"), "{body}");
    assert_eq!(daemon.sts.calls(), 1);

    std::fs::write(
        daemon.dir.join("config.toml"),
        config_text(&daemon.dir, &["fuga"]),
    )
    .unwrap();
    daemon.reload.send(()).await.unwrap();
    assert_eq!(daemon.until("/roles/fuga", 200).await.0, 200);
    assert_eq!(
        daemon.get("/roles/piyo").await.0,
        404,
        "the removed role is gone"
    );
    assert_eq!(daemon.sts.calls(), 2, "only the new role was fetched");

    let mut idle = TcpStream::connect(daemon.address).await.unwrap();
    let address = daemon.address;
    let sts = daemon.sts.clone();
    daemon.stop().await.expect("a clean stop");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(DEADLINE, idle.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "an idle connection is closed at shutdown");
    assert!(
        TcpStream::connect(address).await.is_err(),
        "no longer accepting"
    );
    let calls = sts.calls();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(sts.calls(), calls, "refreshers stopped");
    // Every task that held the STS client (refreshers, the identity lookup) has ended.
    assert_eq!(Arc::strong_count(&sts), 1, "a task outlived the daemon");
}

/// A bad file on reload is refused and the running roles keep being served, as the last
/// good reload left them; the next good file is applied again. (Reloads are seen to apply
/// first: were they ignored, nothing here would hold.)
#[tokio::test]
async fn a_bad_reload_keeps_the_running_configuration() {
    let daemon = Running::start("bad-reload", &["piyo"], vec![], false).await;
    assert_eq!(daemon.until("/roles/piyo", 200).await.0, 200);
    let config = daemon.dir.join("config.toml");
    std::fs::write(&config, config_text(&daemon.dir, &["piyo", "fuga"])).unwrap();
    daemon.reload.send(()).await.unwrap();
    assert_eq!(
        daemon.until("/roles/fuga", 200).await.0,
        200,
        "a good reload applies"
    );
    // Would drop both roles for another, were it applied: one wrong key refuses it all.
    let bad = config_text(&daemon.dir, &["hoge"]) + "allowed_userz = [\"root\"]\n";
    std::fs::write(&config, bad).unwrap();
    // Reloads are handled one at a time: once the third is queued, the first was handled.
    for _ in 0..3 {
        daemon.reload.send(()).await.unwrap();
    }
    assert_eq!(daemon.get("/roles/piyo").await.0, 200);
    assert_eq!(daemon.get("/roles/fuga").await.0, 200);
    assert_eq!(
        daemon.get("/roles/hoge").await.0,
        404,
        "nothing of the bad file"
    );
    assert_eq!(daemon.sts.calls(), 2);
    std::fs::write(&config, config_text(&daemon.dir, &["piyo"])).unwrap();
    daemon.reload.send(()).await.unwrap();
    assert_eq!(
        daemon.until("/roles/fuga", 404).await.0,
        404,
        "the next good file applies"
    );
    daemon.stop().await.unwrap();
}

/// `metrics_listen` answers `/metrics` without the token and counts the refresh, naming no
/// role; the main listener keeps `/metrics` behind the token.
#[tokio::test]
async fn the_metrics_listener_answers_without_a_token() {
    let daemon = Running::start("metrics", &["piyo"], vec![], true).await;
    assert_eq!(daemon.until("/roles/piyo", 200).await.0, 200);
    let scrapes = daemon.metrics_address.unwrap();
    let (status, text) = get(scrapes, "/metrics", None).await;
    assert_eq!(status, 200, "{text}");
    // Any local user can read it: counts, no role names.
    let series = r#"assume_roled_refreshes_total{outcome="success"}"#;
    assert_eq!(sample(&text, series), Some(1.0), "{text}");
    assert!(!text.contains("piyo"), "{text}");
    assert_eq!(get(scrapes, "/roles/piyo", None).await.0, 404);
    // A web page (DNS rebinding, a foreign Host) or a proxy must not read it either.
    let foreign = get_with(scrapes, "/metrics", "Host: evil.example:80\r\n").await;
    assert_eq!(foreign.0, 403, "{}", foreign.1);
    let page = format!("Host: {scrapes}\r\nOrigin: http://evil.example\r\n");
    assert_eq!(get_with(scrapes, "/metrics", &page).await.0, 403);
    assert_eq!(get(daemon.address, "/metrics", None).await.0, 401);
    daemon.stop().await.unwrap();
}

/// A refresher that panics stops the daemon with an error naming it, instead of leaving a role
/// that is never refreshed again.
#[tokio::test]
async fn a_panicking_refresher_fails_the_daemon() {
    let script = vec![Reply::Panic];
    let daemon =
        Running::start_with("panic", &["piyo"], script, false, Environment::default()).await;
    let outcome = tokio::time::timeout(DEADLINE, daemon.task)
        .await
        .expect("the daemon stops by itself")
        .expect("joined");
    let error = format!("{:#}", outcome.expect_err("a failure"));
    assert!(error.contains("refresher panicked"), "{error}");
}

/// Pointing the daemon's own metadata endpoint at its listener is refused before any STS call.
#[tokio::test]
async fn a_self_loop_is_refused_at_start() {
    let probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let taken = probe.local_addr().unwrap();
    drop(probe);
    let environment = Environment {
        metadata_endpoint: Some(format!("http://{taken}/")),
        ..Environment::default()
    };
    // The listener is bound by the test at that same address.
    let dir = scratch_dir("self-loop");
    let config_path = dir.join("config.toml");
    std::fs::write(&config_path, config_text(&dir, &["piyo"])).unwrap();
    let clock = FakeClock::new();
    let sts = FakeSts::new(clock.clone(), vec![]);
    let parts = Parts {
        config: config::load(&config_path).unwrap(),
        config_path,
        listeners: Listeners {
            main: vec![TcpListener::bind(taken).await.unwrap()],
            metrics: None,
            containers: Vec::new(),
        },
        sts: sts.clone(),
        clock,
        environment,
        notifier: Notifier::disabled(),
        reloads: mpsc::channel(1).1,
    };
    let error = run(parts, CancellationToken::new()).await.unwrap_err();
    assert!(error.downcast_ref::<SetupError>().is_some(), "{error:#}");
    assert_eq!(sts.calls(), 0);
}
#[test]
fn self_loop_detection() {
    let local: SocketAddr = "127.0.0.1:9357".parse().unwrap();
    assert!(points_at("http://127.0.0.1:9357/", local));
    assert!(points_at("http://localhost:9357", local));
    assert!(points_at("http://LOCALHOST:9357/latest", local));
    assert!(!points_at("http://127.0.0.1:9358/", local));
    assert!(!points_at("http://169.254.169.254", local));
    assert!(!points_at(
        "https://sts.ap-northeast-1.amazonaws.com",
        local
    ));
    assert!(points_at(
        "http://127.0.0.1",
        "127.0.0.1:80".parse().unwrap()
    ));
    assert!(points_at(
        "http://[::1]:9357/",
        "[::1]:9357".parse().unwrap()
    ));
    assert!(!points_at("not a url", local));
}

#[test]
fn self_loop_error_names_the_setting() {
    let local: SocketAddr = "127.0.0.1:9357".parse().unwrap();
    let urls = vec![
        (
            "[sts] endpoint".to_owned(),
            "https://sts.example".to_owned(),
        ),
        (
            "the metadata upstream".to_owned(),
            "http://127.0.0.1:9357/".to_owned(),
        ),
    ];
    let error = refuse_self_loops(local, &urls).unwrap_err().to_string();
    assert!(error.starts_with("the metadata upstream (http://127.0.0.1:9357/) points at"));
}

/// Changing a role's ARN on reload drops its credentials at once: a client never gets the old
/// role's set once the reload is applied, only a 503 until the new role's first set arrives.
#[tokio::test]
async fn a_changed_arn_drops_the_old_credentials_at_once() {
    // The new role's first call hangs, so nothing but the old set could ever be served.
    let script = vec![Reply::Issue(crate::fake::HOUR), Reply::Hang];
    let daemon = Running::start("arn-change", &["piyo"], script, false).await;
    let (status, old) = daemon.until("/roles/piyo", 200).await;
    assert_eq!(status, 200, "{old}");
    let moved = config_text(&daemon.dir, &["piyo"]).replace("piyo-role", "piyo-moved");
    std::fs::write(daemon.dir.join("config.toml"), moved).unwrap();
    daemon.reload.send(()).await.unwrap();
    let (status, body) = daemon.until("/roles/piyo", 503).await;
    assert_eq!(status, 503, "still serving the old role's set: {body}");
    assert!(body.contains("CredentialsUninitialized"), "{body}");
    for _ in 0..20 {
        let (status, body) = daemon.get("/roles/piyo").await;
        assert_eq!(status, 503, "{body}");
    }
    assert_eq!(daemon.sts.calls(), 2);
    daemon.stop().await.unwrap();
}

/// Deleting a role's own token file and reloading issues a new token: the old one stops
/// working, the new one opens the role, and the credentials are kept (no STS call).
#[tokio::test]
async fn a_deleted_role_token_file_is_reissued_on_reload() {
    let dir = scratch_dir("reissue");
    let token_file = dir.join("piyo.token");
    let role = format!("token_file = \"{}\"\n", token_file.display());
    let text = format!("{}{role}", config_text(&dir, &["piyo"]));
    let daemon = Running::start_in(dir, &text).await;
    assert_reissued_on_reload(daemon, &token_file).await;
}

/// The sections a reload cannot apply are named, so the operator is told to restart.
#[test]
fn changes_that_need_a_restart_are_named() {
    let dir = scratch_dir("restart-sections");
    let base = config::from_toml(&config_text(&dir, &["piyo"]), "host").unwrap();
    assert!(sections_needing_restart(&base, &base).is_empty());
    let mut changed = base.clone();
    changed.server.max_connections += 1;
    changed.sts.region = Some("eu-west-1".to_owned());
    changed.imds = Some(crate::config::ImdsConfig {
        role: "piyo".to_owned(),
        upstream: None,
        guard: None,
        exempt_users: Vec::new(),
        exempt_groups: Vec::new(),
    });
    changed.roles[0].duration *= 2;
    assert_eq!(
        sections_needing_restart(&base, &changed),
        ["server", "sts", "imds"],
        "roles are reloaded, the rest is not"
    );
}

/// A reload that would leave the running metadata role open to everyone is refused, even when
/// the new file drops `[imds]` (which would only take effect at the next restart).
#[test]
fn a_reload_cannot_open_the_running_metadata_role() {
    let dir = scratch_dir("metadata-reload");
    let restricted = format!(
        "{}allowed_groups = [\"ops\"]\n[imds]\nrole = \"piyo\"\n",
        config_text(&dir, &["piyo"])
    );
    let running = config::from_toml(&restricted, "host").unwrap();
    let open = config::from_toml(&config_text(&dir, &["piyo"]), "host").unwrap();
    assert!(unsafe_for_running_metadata(&running, &running).is_none());
    let reason = unsafe_for_running_metadata(&running, &open).expect("refused");
    assert!(reason.contains("role piyo"), "{reason}");
    let without_metadata = config::from_toml(&config_text(&dir, &["piyo"]), "host").unwrap();
    assert!(unsafe_for_running_metadata(&without_metadata, &open).is_none());
}

/// Both loopback families are held at the same port, so that `localhost` (which resolves to
/// ::1 first on Debian) reaches the daemon and not another user's socket.
#[test]
fn the_other_loopback_is_held_too() {
    let partner = |text: &str| loopback_partner(text.parse().unwrap()).map(|a| a.to_string());
    assert_eq!(partner("127.0.0.1:9357").as_deref(), Some("[::1]:9357"));
    assert_eq!(partner("[::1]:9357").as_deref(), Some("127.0.0.1:9357"));
    assert_eq!(partner("127.0.0.2:9357"), None);
}

/// Connections wait at start until the first credentials are there: the first request is
/// answered with them, not with a 503.
#[tokio::test]
async fn the_first_request_waits_for_the_first_credentials() {
    let script = vec![Reply::Delay(Duration::from_millis(400))];
    let daemon =
        Running::start_with("hold", &["piyo"], script, false, Environment::default()).await;
    // The token file exists before anything is served (preflight).
    wait_for_file(&daemon.dir.join("token")).await;
    let (status, body) = daemon.get("/roles/piyo").await;
    assert_eq!(status, 200, "{body}");
    daemon.stop().await.unwrap();
}

/// The soft limit on open files, as `/proc/self/limits` prints it.
#[test]
fn open_files_limit_is_read() {
    let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                  Max cpu time              unlimited            unlimited            seconds\n\
                  Max open files            1024                 524288               files\n";
    assert_eq!(open_files_limit(limits), Some(1024));
    let unlimited = "Max open files            unlimited            unlimited            files\n";
    assert_eq!(open_files_limit(unlimited), Some(u64::MAX));
    assert_eq!(open_files_limit("nothing here"), None);
}

/// Deleting the server's token file and reloading issues a new token: the old one is refused
/// at once, the new one works, and the credentials are kept.
#[tokio::test]
async fn the_server_token_rotates_on_reload() {
    let daemon = Running::start("server-token", &["piyo"], vec![], false).await;
    assert_eq!(daemon.until("/roles/piyo", 200).await.0, 200);
    let token_file = daemon.dir.join("token");
    assert_reissued_on_reload(daemon, &token_file).await;
}
