//! STS faults, injected by a proxy in front of moto, against the real daemon: unreachable,
//! throttling, 5xx, access denied, hanging, short-lived credentials; then a crowd of clients at
//! a cold start and SIGTERM under load. (Timing that needs hours, such as an outage longer than
//! the credentials' life or a wall-clock jump, is proved with a fake clock in `src/refresh`.)

mod support;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use support::*;

/// A daemon whose STS is the fault proxy, already in `mode` when the daemon starts.
fn daemon_behind(proxy: &StsProxy, moto: &Moto, mode: &str) -> Daemon {
    daemon_behind_with(proxy, moto, mode, "")
}

/// Like [`daemon_behind`], with `server` lines added to `[server]`.
fn daemon_behind_with(proxy: &StsProxy, moto: &Moto, mode: &str, server: &str) -> Daemon {
    proxy.set_mode(mode);
    let dir = TempDir::new("faults");
    let token_file = dir.path().join("state/token");
    let plain = piyo_config("127.0.0.1:0", &token_file, Some(&proxy.endpoint));
    let config = with_server_lines(&plain, server);
    Daemon::start_with(dir, &config, &moto.host_env(), &[])
}

/// Fault 1: STS unreachable at start: 503 saying why, not ready; served as soon as STS answers.
#[test]
fn unreachable_at_start_then_served() {
    let daemon = refused_then_served("refuse", &["CredentialsUnavailable", "transient"]);
    assert_eq!(daemon.credentials()["AccountId"], TARGET_ACCOUNT);
}

/// Starts the daemon with STS in `mode`: its first answer must be a 503 that `says` each of
/// these, and it must not be ready; then STS answers, and it must become ready.
fn refused_then_served(mode: &str, says: &[&str]) -> Daemon {
    let moto = Moto::start();
    let proxy = StsProxy::start(&moto);
    let daemon = daemon_behind(&proxy, &moto, mode);
    let (status, body) = daemon.first_outcome("piyo");
    assert_eq!(status, 503, "{body}");
    for word in says {
        assert!(body.contains(word), "{body}");
    }
    assert_eq!(daemon.get("/readyz", &[]).0, 503);
    proxy.set_mode("pass");
    assert!(
        eventually(10, || daemon.get("/readyz", &[]).0 == 200),
        "not served after STS answered properly"
    );
    daemon
}

/// Fault 1b: STS answers with empty keys (the SDK fills a field missing from the answer with an
/// empty string): never a 200 with empty credentials, but a 503 and a log line that say so,
/// then served as soon as STS answers properly.
#[test]
fn empty_keys_from_sts_are_refused() {
    let daemon = refused_then_served("empty", &["IncompleteCredentials"]);
    assert!(daemon.log().contains("IncompleteCredentials"));
    let key = daemon.credentials()["AccessKeyId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(key.starts_with("ASIA"), "{key}");
}

/// Fault 2: STS down while the credentials are valid: clients keep getting the same set, no error.
/// No refresh falls due in this window, so this shows that serving never depends on STS; a
/// refresh that fails during an outage (and the one that succeeds after it) is shown with a fake
/// clock by `refresh::tests::outage_keeps_serving_the_last_good_set`.
#[test]
fn outage_with_valid_credentials_is_invisible() {
    let moto = Moto::start();
    let proxy = StsProxy::start(&moto);
    let daemon = daemon_behind(&proxy, &moto, "pass");
    daemon.wait_ready();
    let key = daemon.credentials()["AccessKeyId"].clone();
    proxy.set_mode("refuse");
    for _ in 0..200 {
        assert_eq!(daemon.credentials()["AccessKeyId"], key);
    }
    assert_eq!(daemon.get("/readyz", &[]).0, 200);
}

/// Fault 3: Throttling through the real SDK: the 503 says why, and a long outage is one
/// warning, then quieter lines. (How few calls a minute of throttling makes is proven in paused
/// time: `refresh::tests::a_minute_of_throttling_is_a_few_calls`.)
#[test]
fn throttling_is_explained_and_logged_once() {
    let moto = Moto::start();
    let proxy = StsProxy::start(&moto);
    let daemon = daemon_behind(&proxy, &moto, "throttle");
    assert!(
        eventually(30, || proxy.calls("AssumeRole") >= 3),
        "three throttled AssumeRole calls"
    );
    let (status, body) = daemon.first_outcome("piyo");
    assert_eq!(status, 503);
    assert!(
        body.contains("Throttling") && body.contains("transient"),
        "{body}"
    );
    let warnings = daemon.log().matches("refresh failed, will retry").count();
    assert_eq!(
        warnings, 1,
        "a long outage is one warning, then quieter lines"
    );
}

/// Fault 3b: 5xx answers are transient too: quick retries, growing apart.
#[test]
fn server_errors_back_off() {
    let moto = Moto::start();
    let proxy = StsProxy::start(&moto);
    let daemon = daemon_behind(&proxy, &moto, "error500");
    std::thread::sleep(Duration::from_secs(10));
    let calls = proxy.calls("AssumeRole");
    eprintln!("AssumeRole calls during 10 s of 500s: {calls}");
    assert!(
        (3..=6).contains(&calls),
        "{calls} calls in 10 s of server errors"
    );
    assert!(daemon.first_outcome("piyo").1.contains("InternalFailure"));
}

/// Fault 4: AccessDenied: logged once as a configuration error with the role and STS's message,
/// retried slowly; the 503 says why.
#[test]
fn access_denied_is_a_configuration_error() {
    let moto = Moto::start();
    let proxy = StsProxy::start(&moto);
    let daemon = daemon_behind(&proxy, &moto, "denied");
    let (status, body) = daemon.first_outcome("piyo");
    assert_eq!(status, 503);
    assert!(
        body.contains("AccessDenied") && body.contains("configuration error"),
        "{body}"
    );
    assert!(
        body.contains("is not authorized to perform: sts:AssumeRole"),
        "{body}"
    );
    assert!(
        eventually(40, || proxy.calls("AssumeRole") >= 2),
        "no slow retry"
    );
    // The configuration schedule's first wait is 15–30 s; the transient one's would be 0.5–1 s.
    let gap = proxy.gaps("AssumeRole")[0];
    eprintln!("AccessDenied retried after {gap:?}");
    assert!(
        (Duration::from_secs(14)..Duration::from_secs(32)).contains(&gap),
        "retried after {gap:?}: not the slow schedule"
    );
    std::thread::sleep(Duration::from_secs(1));
    let log = daemon.log();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{log}");
    assert!(
        errors[0].contains("role=\"piyo\"") && errors[0].contains("code=AccessDenied"),
        "{}",
        errors[0]
    );
    assert!(proxy.calls("AssumeRole") <= 2, "retried too fast");
    // What the AccessDenied alert reads.
    let (_, metrics) = daemon.get("/metrics", &[("Authorization", &daemon.token())]);
    let series = "assume_roled_refresh_failures_total{role=\"piyo\",code=\"AccessDenied\"}";
    assert!(sample(&metrics, series) >= Some(1.0), "{metrics}");
}

/// Fault 5: STS accepts and never answers: requests are answered from memory while the call
/// hangs, and the attempt ends at the SDK's 10 s operation timeout (not the refresher's 30 s
/// backstop) and is retried. Each answer must come well inside the 10 s a request waiting on
/// STS would take; the bound is loose (1 s) because the other tests of this file start moto on
/// the same two cores meanwhile.
#[test]
fn hanging_sts_does_not_slow_requests() {
    let moto = Moto::start();
    let proxy = StsProxy::start(&moto);
    let daemon = daemon_behind(&proxy, &moto, "hang");
    assert!(
        eventually(10, || proxy.calls("AssumeRole") >= 1),
        "STS was never asked"
    );
    // The daemon holds connections at start for at most 1.5 s while the first attempt runs.
    assert!(
        eventually(10, || daemon.get("/readyz", &[]).0 == 503),
        "not answering"
    );
    let mut slowest = Duration::ZERO;
    for _ in 0..50 {
        let started = SystemTime::now();
        assert_eq!(daemon.get("/readyz", &[]).0, 503);
        slowest = slowest.max(started.elapsed().unwrap());
    }
    eprintln!("slowest of 50 answers while STS hangs: {slowest:?}");
    assert!(slowest < Duration::from_secs(1), "{slowest:?}");
    assert!(
        eventually(45, || proxy.calls("AssumeRole") >= 2),
        "the hung attempt was not retried"
    );
    // 10 s of timeout, then the first transient retry's 0.5–1 s; the backstop would make it 30 s.
    let gap = proxy.gaps("AssumeRole")[0];
    eprintln!("the hung attempt was retried {gap:?} after it began");
    assert!(
        (Duration::from_secs(9)..Duration::from_secs(14)).contains(&gap),
        "retried {gap:?} after the hung call: not the SDK's 10 s timeout"
    );
    let log = daemon.log();
    assert!(
        log.contains("code=Timeout") && log.contains("STS did not answer in time"),
        "{log}"
    );
    proxy.set_mode("pass");
    assert!(eventually(40, || daemon.get("/readyz", &[]).0 == 200));
}

/// Fault 5b: STS's address takes no connections (its accept queue is full, so the kernel drops
/// the handshake): each attempt ends at the SDK's 3 s connect timeout, not the 10 s operation
/// timeout, as the STS call durations in the metrics show.
#[test]
fn unconnectable_sts_times_out_after_three_seconds() {
    let moto = Moto::start();
    let (_silent, endpoint) = full_listener();
    let dir = TempDir::new("unconnectable");
    let config = piyo_config(
        "127.0.0.1:0",
        &dir.path().join("state/token"),
        Some(&endpoint),
    );
    let daemon = Daemon::start_with(dir, &config, &moto.host_env(), &[]);
    let token = daemon.token();
    let durations = || {
        let text = daemon.get("/metrics", &[("Authorization", &token)]).1;
        let count = sample(&text, "assume_roled_sts_call_duration_seconds_count");
        let sum = sample(&text, "assume_roled_sts_call_duration_seconds_sum");
        count.zip(sum)
    };
    assert!(
        eventually(30, || durations().is_some_and(|(count, _)| count >= 2.0)),
        "no attempt ended: {:?}",
        durations()
    );
    let (count, sum) = durations().unwrap();
    let each = sum / count;
    eprintln!("{count} attempts against an unconnectable STS, {each:.2} s each");
    assert!(
        (2.5..5.0).contains(&each),
        "{each} s per attempt: not the 3 s connect timeout"
    );
}

/// A listener whose accept queue is full: a handshake with it gets no answer, so connecting
/// hangs until the client gives up. Returns what must stay open, and its URL.
fn full_listener() -> ((socket2::Socket, Vec<std::net::TcpStream>), String) {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    socket.listen(0).unwrap();
    let address = socket.local_addr().unwrap().as_socket().unwrap();
    // Connections that complete wait in the queue (nobody accepts) until it is full.
    let mut held = Vec::new();
    while let Ok(stream) =
        std::net::TcpStream::connect_timeout(&address, Duration::from_millis(500))
    {
        held.push(stream);
        assert!(held.len() < 16, "the accept queue never filled");
    }
    ((socket, held), format!("http://{address}"))
}

/// Fault 6: Credentials shorter-lived than asked (the role's maximum session is 15 minutes): served,
/// renewal planned with about 10 minutes left, and no refresh loop.
#[test]
fn short_lived_credentials_are_renewed_earlier() {
    let moto = Moto::start();
    let proxy = StsProxy::start(&moto);
    let daemon = daemon_behind(&proxy, &moto, "short");
    daemon.wait_ready();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(proxy.calls("AssumeRole"), 1, "refresh loop");
    let log = daemon.log();
    let line = log
        .lines()
        .find(|l| l.contains("credentials refreshed"))
        .unwrap();
    let time_of = |key: &str| {
        let text = line
            .split(&format!("{key}="))
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap();
        let parsed = aws_smithy_types::DateTime::from_str(
            text,
            aws_smithy_types::date_time::Format::DateTime,
        );
        SystemTime::try_from(parsed.unwrap()).unwrap()
    };
    let reserve = time_of("expiration")
        .duration_since(time_of("next_refresh"))
        .unwrap();
    assert!(
        (Duration::from_secs(600)..=Duration::from_secs(700)).contains(&reserve),
        "renewal planned {reserve:?} before expiry: {line}"
    );
}

/// Fault 7: an outage longer than the credentials' life (here 150 s, so that it fits in a
/// test): serving stops two minutes before expiry with a 503 that says why; the daemon meets
/// the outage (its renewal, due at 60 s, is refused, and the 503 then carries STS's failure);
/// and it resumes by itself once STS answers again.
#[test]
fn outage_past_expiry_stops_serving_then_recovers() {
    let moto = Moto::start();
    let proxy = StsProxy::start(&moto);
    let daemon = daemon_behind(&proxy, &moto, "short:150");
    daemon.wait_ready();
    proxy.set_mode("refuse");
    let started = SystemTime::now();
    assert!(
        eventually(45, || daemon.get("/readyz", &[]).0 == 503),
        "still serving near expiry"
    );
    let stopped_after = started.elapsed().unwrap();
    assert!(
        stopped_after >= Duration::from_secs(25),
        "stopped too early: {stopped_after:?}"
    );
    let token = daemon.token();
    let answer = || daemon.get("/roles/piyo", &[("Authorization", &token)]);
    let (status, body) = answer();
    assert_eq!(status, 503);
    assert!(body.contains("CredentialsExpired"), "{body}");
    assert!(
        eventually(60, || proxy.calls("AssumeRole") >= 2),
        "the renewal never met the outage"
    );
    let (status, body) = answer();
    assert_eq!(status, 503);
    assert!(
        body.contains("CredentialsExpired") && body.contains("renewing them failed"),
        "the 503 does not say the renewal failed: {body}"
    );
    assert!(body.contains("transient"), "{body}");
    proxy.set_mode("pass");
    assert!(
        eventually(90, || daemon.get("/readyz", &[]).0 == 200),
        "did not resume"
    );
    assert_eq!(daemon.credentials()["AccountId"], TARGET_ACCOUNT);
}

/// Fault 8: Two thousand clients at a cold start, while STS takes three seconds to answer:
/// clients really arrive before there is anything to serve (many first answers are
/// `CredentialsUninitialized`), every one of them ends up with valid credentials, and STS is
/// called exactly once.
#[test]
fn crowd_at_cold_start_makes_one_call() {
    let moto = Moto::start();
    let proxy = StsProxy::start(&moto);
    // All 2,000 clients are one user here: lift the per-user limit, which would otherwise
    // (rightly) close all but 128 of them at once.
    let unlimited = "max_connections_per_user = 65536";
    let daemon = daemon_behind_with(&proxy, &moto, "delay:3", unlimited);
    let token = daemon.token();
    let clients: Vec<_> = (0..2000)
        .map(|_| {
            let address = daemon.address;
            let token = token.clone();
            std::thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || {
                    let request = format!(
                        "GET /roles/piyo HTTP/1.1\r\nHost: {address}\r\nAuthorization: {token}\r\nConnection: close\r\n\r\n"
                    );
                    let mut waited = false;
                    for _ in 0..400 {
                        let answer = raw_exchange(address, request.as_bytes());
                        if answer.status == 200 {
                            let valid = answer.body.contains("\"AccountId\":\"444455556666\"");
                            return (valid, waited);
                        }
                        assert!(answer.body.contains("CredentialsUninitialized"), "{}", answer.body);
                        waited = true;
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    (false, waited)
                })
                .unwrap()
        })
        .collect();
    let outcomes: Vec<(bool, bool)> = clients
        .into_iter()
        .map(|client| client.join().expect("a client thread"))
        .collect();
    let served = outcomes.iter().filter(|(valid, _)| *valid).count();
    let waited = outcomes.iter().filter(|(_, waited)| *waited).count();
    eprintln!("cold start: {waited} of 2000 clients were told to wait first");
    assert_eq!(served, 2000);
    assert!(
        waited >= 100,
        "only {waited} clients arrived during the cold start"
    );
    assert_eq!(proxy.calls("AssumeRole"), 1);
}

/// One `Connection: close` request on a new connection: the answer (`Ok("")` if the daemon
/// closed without answering), or the error with how many bytes of an answer had arrived
/// before it (`None`: the connection was never made).
fn one_request(
    address: SocketAddr,
    request: &str,
) -> Result<String, (Option<usize>, std::io::Error)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).map_err(|error| (None, error))?;
    let with_none = |error| (Some(0), error);
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .map_err(with_none)?;
    stream.write_all(request.as_bytes()).map_err(with_none)?;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(String::from_utf8_lossy(&answer).into_owned()),
            Ok(read) => answer.extend_from_slice(&chunk[..read]),
            Err(error) => return Err((Some(answer.len()), error)),
        }
    }
}

/// Whether a request that failed with `failed` was never taken up by the daemon: the
/// connection was refused (the listener was closed), or reset before any byte of an answer
/// (it was still in the kernel's queue when the listener closed).
fn never_accepted(failed: &(Option<usize>, std::io::Error)) -> bool {
    match failed {
        (None, _) => true,
        (Some(0), error) => error.kind() == std::io::ErrorKind::ConnectionReset,
        _ => false,
    }
}

/// How many credential answers the daemon's audit says it served: each line, the repeats it
/// says it held back, and the counts of the summaries.
fn served_by_audit(log: &str) -> u64 {
    let field = |line: &str, key: &str| -> u64 {
        (line.split_whitespace())
            .find_map(|word| word.strip_prefix(key))
            .and_then(|value| value.parse().ok())
            .unwrap_or(0)
    };
    (log.lines())
        .map(|line| {
            if line.contains("credentials served again") {
                field(line, "count=")
            } else if line.contains("credentials served") {
                1 + field(line, "held_back=")
            } else {
                0
            }
        })
        .sum()
}

/// Fault 9: SIGTERM under load. Before the signal every answer is a whole 200; a slow request
/// in flight at the signal (a metadata read whose upstream does not answer, 0.9 s) completes
/// with its whole answer; after the signal a request is answered whole or refused (or reset
/// before any byte, from the kernel's queue); the daemon's audit counts exactly the answers
/// the clients received whole; the daemon exits 0 within the drain bound.
#[test]
fn sigterm_under_load_drains_and_exits_zero() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let moto = Moto::start();
    let proxy = StsProxy::start(&moto);
    let double = ImdsDouble::start(&moto);
    let dir = TempDir::new("sigterm");
    let config = format!(
        "{}allowed_users = [\"root\"]\n[imds]\nrole = \"piyo\"\nupstream = \"{}\"\n",
        piyo_config(
            "127.0.0.1:0",
            &dir.path().join("state/token"),
            Some(&proxy.endpoint)
        ),
        double.endpoint
    );
    let mut daemon = Daemon::start_with(dir, &config, &moto.host_env(), &[]);
    daemon.wait_ready();
    let token = daemon.token();
    let address = daemon.address;
    let (stop, served) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let signalled = Arc::new(AtomicBool::new(false));
    let loaders: Vec<_> = (0..8)
        .map(|_| {
            let (stop, served, signalled) = (stop.clone(), served.clone(), signalled.clone());
            let request = format!(
                "GET /roles/piyo HTTP/1.1\r\nHost: {address}\r\nAuthorization: {token}\r\nConnection: close\r\n\r\n"
            );
            std::thread::spawn(move || {
                let mut bad = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    match one_request(address, &request) {
                        Ok(answer) if answer.starts_with("HTTP/1.1 200") && answer.ends_with('}') => {
                            served.fetch_add(1, Ordering::SeqCst);
                        }
                        // Refused, or reset unanswered by the closing listener: never
                        // accepted. An answer cut part-way is not that.
                        Err(failed) if signalled.load(Ordering::SeqCst) && never_accepted(&failed) => {
                            break;
                        }
                        other => bad.push(format!("{other:?}")),
                    }
                }
                bad
            })
        })
        .collect();
    assert!(
        eventually(20, || served.load(Ordering::SeqCst) >= 200),
        "no load before the signal"
    );

    let metadata_token = daemon
        .send(
            "PUT",
            "/latest/api/token",
            &[("X-aws-ec2-metadata-token-ttl-seconds", "60")],
        )
        .body;
    double.freeze();
    let slow_request = format!(
        "GET /latest/meta-data/placement/availability-zone HTTP/1.1\r\nHost: {address}\r\n\
         X-aws-ec2-metadata-token: {metadata_token}\r\nConnection: close\r\n\r\n"
    );
    let slow = std::thread::spawn(move || one_request(address, &slow_request));
    std::thread::sleep(Duration::from_millis(300));
    let served_before = served.load(Ordering::SeqCst);
    signalled.store(true, Ordering::SeqCst);
    let started = SystemTime::now();
    let status = daemon.terminate();
    let took = started.elapsed().unwrap();
    stop.store(true, Ordering::SeqCst);
    double.thaw();
    let bad: Vec<String> = loaders
        .into_iter()
        .flat_map(|l| l.join().unwrap())
        .collect();
    let slow_answer = slow.join().unwrap().expect("the slow request was answered");

    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(11), "exit took {took:?}");
    assert!(
        served_before >= 200,
        "{served_before} answers before the signal"
    );
    assert!(
        bad.is_empty(),
        "{} bad answers, e.g. {:?}",
        bad.len(),
        bad.first()
    );
    assert!(
        slow_answer.starts_with("HTTP/1.1 503") && slow_answer.ends_with('}'),
        "the in-flight request was cut: {slow_answer:?}"
    );
    assert!(slow_answer.contains("UpstreamUnavailable"), "{slow_answer}");
    // Every answer the daemon served reached its client whole: none was cut on the way.
    let received = served.load(Ordering::SeqCst) as u64;
    assert_eq!(
        served_by_audit(&daemon.log()),
        received,
        "the daemon served answers its clients did not receive whole"
    );
}

/// `assume-roled status` asks the running daemon: a role STS refuses is `failing` (exit 1, the
/// error shown, in text and JSON); once STS answers again it is `fresh` (exit 0).
#[test]
fn status_command_follows_sts() {
    let moto = Moto::start();
    let proxy = StsProxy::start(&moto);
    proxy.set_mode("denied");
    let dir = TempDir::new("status");
    let listen = format!("127.0.0.1:{}", free_port());
    let config = piyo_config(
        &listen,
        &dir.path().join("state/token"),
        Some(&proxy.endpoint),
    );
    let daemon = Daemon::start_with(dir, &config, &moto.host_env(), &[]);
    daemon.first_outcome("piyo");
    let status = |json: bool| {
        let mut command = std::process::Command::new(daemon_binary());
        isolated(&mut command)
            .args(["status", "--config"])
            .arg(&daemon.config_file);
        if json {
            command.arg("--json");
        }
        command.output().unwrap()
    };
    let failing = status(false);
    assert_eq!(failing.status.code(), Some(1), "{}", stderr(&failing));
    let text = stdout(&failing);
    assert!(
        text.starts_with(&format!("piyo  failing  {PIYO_ARN}\n")),
        "{text}"
    );
    assert!(
        text.contains("last error (configuration): AccessDenied"),
        "{text}"
    );
    let report: serde_json::Value = serde_json::from_slice(&status(true).stdout).unwrap();
    assert_eq!(report["roles"][0]["state"], "failing");
    assert_eq!(report["roles"][0]["last_error"]["code"], "AccessDenied");
    assert!(report["roles"][0]["next_refresh"].is_string());
    proxy.set_mode("pass");
    assert!(
        eventually(45, || status(false).status.success()),
        "never fresh again"
    );
    let report: serde_json::Value = serde_json::from_slice(&status(true).stdout).unwrap();
    assert_eq!(report["roles"][0]["state"], "fresh");
    assert!(
        report["roles"][0]["expiration"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    let token = daemon.token();
    assert!(!String::from_utf8_lossy(&status(true).stdout).contains(&token));
}

/// Metrics move as requests and refreshes happen: served on `metrics_listen` without the token
/// and without role names (on the main listener only with the token, and per role there),
/// refreshes counted by outcome, the soonest expiry.
#[test]
fn metrics_follow_requests_and_refreshes() {
    let moto = Moto::start();
    let proxy = StsProxy::start(&moto);
    proxy.set_mode("throttle");
    let dir = TempDir::new("metrics");
    let scrape_address = format!("127.0.0.1:{}", free_port());
    let config = piyo_config(
        "127.0.0.1:0",
        &dir.path().join("state/token"),
        Some(&proxy.endpoint),
    )
    .replace(
        "[sts]",
        &format!("metrics_listen = \"{scrape_address}\"\n\n[sts]"),
    );
    let daemon = Daemon::start_with(dir, &config, &moto.host_env(), &[]);
    daemon.first_outcome("piyo");
    let scrape = || {
        let request =
            format!("GET /metrics HTTP/1.1\r\nHost: {scrape_address}\r\nConnection: close\r\n\r\n");
        let answer = raw_exchange(scrape_address.parse().unwrap(), request.as_bytes());
        assert_eq!(answer.status, 200, "{answer:?}");
        answer.body
    };
    let transient = r#"assume_roled_refreshes_total{outcome="transient"}"#;
    assert!(
        sample(&scrape(), transient).is_some_and(|n| n >= 1.0),
        "{}",
        scrape()
    );
    proxy.set_mode("pass");
    assert!(eventually(20, || daemon.get("/readyz", &[]).0 == 200));
    for _ in 0..3 {
        daemon.credentials();
    }
    let text = scrape();
    let value = |series: &str| sample(&text, series).unwrap_or_else(|| panic!("{series}: {text}"));
    assert_eq!(
        value(r#"assume_roled_refreshes_total{outcome="success"}"#),
        1.0
    );
    assert!(
        !text.contains("piyo"),
        "a role named without the token: {text}"
    );
    assert_eq!(
        value(r#"assume_roled_http_requests_total{route="roles",status="200"}"#),
        3.0
    );
    let expiry = value("assume_roled_credentials_expiry_seconds");
    assert!((3000.0..=3600.0).contains(&expiry), "expiry in {expiry} s");
    assert!(value("assume_roled_sts_call_duration_seconds_count") >= 1.0);
    // The scrape's own connection is open while it is answered.
    assert!(value("assume_roled_open_connections") >= 1.0);
    assert_eq!(
        daemon.get("/metrics", &[]).0,
        401,
        "the main listener wants the token"
    );
    let (status, named) = daemon.get("/metrics", &[("Authorization", &daemon.token())]);
    assert_eq!(status, 200);
    let per_role = r#"assume_roled_refreshes_total{role="piyo",outcome="success"}"#;
    assert_eq!(sample(&named, per_role), Some(1.0), "{named}");
    for secret in known_secrets(&moto, &daemon, &daemon.credentials()) {
        assert!(!text.contains(&secret));
    }
}
