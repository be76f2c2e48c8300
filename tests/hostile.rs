//! Hostile requests against the real daemon, byte for byte over TCP: each gets the expected
//! status and no key material (a refused request sees none; even a served one never sees the
//! auth token). Then a slowloris client and a connection flood, which must not starve others.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

use support::*;

/// One request as raw bytes (`{T}` becomes the token, `{H}` the listener's host:port) and the
/// statuses of the answers it must get, in order (pipelined requests get several).
struct Case {
    name: &'static str,
    raw: Vec<u8>,
    expect: &'static [u16],
}

fn case(name: &'static str, raw: impl AsRef<[u8]>, expect: &'static [u16]) -> Case {
    Case {
        name,
        raw: raw.as_ref().to_vec(),
        expect,
    }
}

fn cases() -> Vec<Case> {
    let long_path = format!("/roles/{}", "a".repeat(6000));
    let huge_path = format!("/roles/{}", "a".repeat(20_000));
    let big_header = format!("X-Filler: {}\r\n", "b".repeat(9000));
    let many_headers: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let ok = "Host: {H}\r\nAuthorization: {T}\r\n";
    let get = |extra: &str| format!("GET /roles/piyo HTTP/1.1\r\nHost: {{H}}\r\n{extra}\r\n");
    vec![
        case("right token", get("Authorization: {T}\r\n"), &[200]),
        case("no token", get(""), &[401]),
        case(
            "wrong token",
            get("Authorization: 0123456789abcdef0123456789abcdef01234567\r\n"),
            &[401],
        ),
        case("empty token", get("Authorization: \r\n"), &[401]),
        case(
            "token with a suffix",
            get("Authorization: {T}x\r\n"),
            &[401],
        ),
        case(
            "token with a prefix",
            get("Authorization: x{T}\r\n"),
            &[401],
        ),
        case("Bearer token", get("Authorization: Bearer {T}\r\n"), &[401]),
        case("Basic token", get("Authorization: Basic {T}\r\n"), &[401]),
        case(
            "token in the query",
            "GET /roles/piyo?token={T} HTTP/1.1\r\nHost: {H}\r\n\r\n",
            &[401],
        ),
        case(
            "token as another header",
            get("X-Aws-Ec2-Metadata-Token: {T}\r\n"),
            &[401],
        ),
        case(
            "two Authorization headers",
            get("Authorization: {T}\r\nAuthorization: {T}\r\n"),
            &[401],
        ),
        case(
            "right and wrong Authorization",
            get("Authorization: {T}\r\nAuthorization: nope\r\n"),
            &[401],
        ),
        case(
            "header name in lower case",
            get("authorization: {T}\r\n"),
            &[200],
        ),
        case(
            "X-Forwarded-For",
            get("Authorization: {T}\r\nX-Forwarded-For: 10.0.0.1\r\n"),
            &[403],
        ),
        case(
            "Forwarded",
            get("Authorization: {T}\r\nForwarded: for=10.0.0.1\r\n"),
            &[403],
        ),
        case(
            "Origin",
            get("Authorization: {T}\r\nOrigin: http://evil.example\r\n"),
            &[403],
        ),
        case(
            "Referer",
            get("Authorization: {T}\r\nReferer: http://evil.example/\r\n"),
            &[403],
        ),
        case(
            "foreign Host",
            "GET /roles/piyo HTTP/1.1\r\nHost: evil.example\r\nAuthorization: {T}\r\n\r\n",
            &[403],
        ),
        case(
            "Host with another port",
            "GET /roles/piyo HTTP/1.1\r\nHost: 127.0.0.1:1\r\nAuthorization: {T}\r\n\r\n",
            &[403],
        ),
        case(
            "rebinding Host name",
            "GET /roles/piyo HTTP/1.1\r\nHost: attacker.127.0.0.1.nip.io\r\nAuthorization: {T}\r\n\r\n",
            &[403],
        ),
        case(
            "two Host headers",
            "GET /roles/piyo HTTP/1.1\r\nHost: {H}\r\nHost: evil.example\r\nAuthorization: {T}\r\n\r\n",
            &[403],
        ),
        case(
            "missing Host",
            "GET /roles/piyo HTTP/1.1\r\nAuthorization: {T}\r\n\r\n",
            &[403],
        ),
        case(
            "absolute URI of another host",
            "GET http://169.254.169.254/roles/piyo HTTP/1.1\r\nHost: {H}\r\nAuthorization: {T}\r\n\r\n",
            &[403],
        ),
        case(
            "localhost Host",
            "GET /roles/piyo HTTP/1.1\r\nHost: localhost:{P}\r\nAuthorization: {T}\r\n\r\n",
            &[200],
        ),
        case(
            "path traversal",
            format!("GET /roles/../roles/piyo HTTP/1.1\r\n{ok}\r\n"),
            &[404],
        ),
        case(
            "encoded traversal",
            format!("GET /roles/%2e%2e/roles/piyo HTTP/1.1\r\n{ok}\r\n"),
            &[404],
        ),
        case(
            "encoded slash",
            format!("GET /roles%2fpiyo HTTP/1.1\r\n{ok}\r\n"),
            &[404],
        ),
        case(
            "encoded NUL",
            format!("GET /roles/piyo%00 HTTP/1.1\r\n{ok}\r\n"),
            &[404],
        ),
        case(
            "double slash",
            format!("GET //roles/piyo HTTP/1.1\r\n{ok}\r\n"),
            &[404],
        ),
        case(
            "trailing slash",
            format!("GET /roles/piyo/ HTTP/1.1\r\n{ok}\r\n"),
            &[404],
        ),
        case(
            "other case",
            format!("GET /ROLES/piyo HTTP/1.1\r\n{ok}\r\n"),
            &[404],
        ),
        case(
            "unknown role",
            format!("GET /roles/admin HTTP/1.1\r\n{ok}\r\n"),
            &[404],
        ),
        case(
            "unknown role without token",
            "GET /roles/admin HTTP/1.1\r\nHost: {H}\r\n\r\n",
            &[401],
        ),
        case(
            "metadata path, IMDS off",
            format!("GET /latest/meta-data/iam/security-credentials/ HTTP/1.1\r\n{ok}\r\n"),
            &[404],
        ),
        case(
            "long path",
            format!("GET {long_path} HTTP/1.1\r\n{ok}\r\n"),
            &[404],
        ),
        case(
            "long path without token",
            format!("GET {long_path} HTTP/1.1\r\nHost: {{H}}\r\n\r\n"),
            &[401],
        ),
        case(
            "path beyond the head limit",
            format!("GET {huge_path} HTTP/1.1\r\n{ok}\r\n"),
            &[431],
        ),
        case(
            "oversized header",
            format!("GET /roles/piyo HTTP/1.1\r\n{ok}{big_header}\r\n"),
            &[431],
        ),
        case(
            "very many headers",
            format!("GET /roles/piyo HTTP/1.1\r\n{ok}{many_headers}\r\n"),
            &[431],
        ),
        case(
            "body on GET",
            format!("GET /roles/piyo HTTP/1.1\r\n{ok}Content-Length: 5\r\n\r\nhello"),
            &[200],
        ),
        case(
            "POST",
            format!("POST /roles/piyo HTTP/1.1\r\n{ok}Content-Length: 0\r\n\r\n"),
            &[405],
        ),
        case(
            "PUT",
            format!("PUT /roles/piyo HTTP/1.1\r\n{ok}Content-Length: 0\r\n\r\n"),
            &[405],
        ),
        case(
            "DELETE",
            format!("DELETE /roles/piyo HTTP/1.1\r\n{ok}\r\n"),
            &[405],
        ),
        case(
            "PATCH",
            format!("PATCH /roles/piyo HTTP/1.1\r\n{ok}Content-Length: 0\r\n\r\n"),
            &[405],
        ),
        case(
            "OPTIONS",
            format!("OPTIONS /roles/piyo HTTP/1.1\r\n{ok}\r\n"),
            &[405],
        ),
        case(
            "TRACE",
            format!("TRACE /roles/piyo HTTP/1.1\r\n{ok}\r\n"),
            &[405],
        ),
        case(
            "lower-case method",
            format!("get /roles/piyo HTTP/1.1\r\n{ok}\r\n"),
            &[405],
        ),
        case(
            "HEAD",
            format!("HEAD /roles/piyo HTTP/1.1\r\n{ok}\r\n"),
            &[200],
        ),
        case(
            "POST without token",
            "POST /roles/piyo HTTP/1.1\r\nHost: {H}\r\nContent-Length: 0\r\n\r\n",
            &[401],
        ),
        case(
            "HTTP/1.0",
            "GET /roles/piyo HTTP/1.0\r\nHost: {H}\r\nAuthorization: {T}\r\n\r\n",
            &[200],
        ),
        case(
            "HTTP/1.0 without Host",
            "GET /roles/piyo HTTP/1.0\r\nAuthorization: {T}\r\n\r\n",
            &[403],
        ),
        case("HTTP/0.9", "GET /roles/piyo\r\n\r\n", &[400]),
        // Only HTTP/1 is spoken: the connection is closed without an answer.
        case(
            "HTTP/2 preface on HTTP/1",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            &[],
        ),
        // Transfer-Encoding wins over Content-Length (RFC 9112), and the connection closes after.
        case(
            "length and chunked",
            format!(
                "POST /roles/piyo HTTP/1.1\r\n{ok}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            ),
            &[405],
        ),
        case(
            "space in a header name",
            format!("GET /roles/piyo HTTP/1.1\r\n{ok}Bad Header: x\r\n\r\n"),
            &[400],
        ),
        case(
            "invalid UTF-8 in the path",
            b"GET /roles/pi\xffyo HTTP/1.1\r\nHost: {H}\r\nAuthorization: {T}\r\n\r\n",
            &[400],
        ),
        case(
            "NUL in the token",
            b"GET /roles/piyo HTTP/1.1\r\nHost: {H}\r\nAuthorization: {T}\x00\r\n\r\n",
            &[400],
        ),
        case(
            "invalid UTF-8 token",
            b"GET /roles/piyo HTTP/1.1\r\nHost: {H}\r\nAuthorization: \xff\xfe\r\n\r\n",
            &[401],
        ),
        case(
            "pipelined: good then bad token",
            format!(
                "GET /roles/piyo HTTP/1.1\r\n{ok}\r\nGET /roles/piyo HTTP/1.1\r\nHost: {{H}}\r\nAuthorization: nope\r\nConnection: close\r\n\r\n"
            ),
            &[200, 401],
        ),
        case(
            "pipelined: bad then good token",
            format!(
                "GET /roles/piyo HTTP/1.1\r\nHost: {{H}}\r\nAuthorization: nope\r\n\r\nGET /roles/piyo HTTP/1.1\r\n{ok}Connection: close\r\n\r\n"
            ),
            &[401, 200],
        ),
        case(
            "health without token",
            "GET /healthz HTTP/1.1\r\nHost: {H}\r\n\r\n",
            &[200],
        ),
        case(
            "status report without token",
            "GET /status HTTP/1.1\r\nHost: {H}\r\n\r\n",
            &[401],
        ),
        case(
            "readiness without token",
            "GET /readyz HTTP/1.1\r\nHost: {H}\r\n\r\n",
            &[200],
        ),
    ]
}

/// How many whole answers (head and `Content-Length` body) `bytes` holds, from the start.
fn complete_answers(mut bytes: &[u8]) -> usize {
    let mut count = 0;
    while let Some(head_end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&bytes[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0);
        let end = head_end + 4 + length;
        if bytes.len() < end {
            break;
        }
        count += 1;
        bytes = &bytes[end..];
    }
    count
}

/// Sends raw bytes and returns every answer's status and text. Reads until the server closes,
/// or until `expected` whole answers are in; then listens a little longer, so that an answer
/// too many is seen (a slow machine can only hide an extra answer, never fail a right one).
fn exchange(daemon: &Daemon, raw: &[u8], expected: usize) -> Vec<(u16, String)> {
    let mut stream = TcpStream::connect(daemon.address).unwrap();
    let quiet = Duration::from_millis(300);
    let first_wait = if expected == 0 {
        quiet
    } else {
        Duration::from_secs(10)
    };
    stream.set_read_timeout(Some(first_wait)).unwrap();
    let _ = stream.write_all(raw);
    let mut received = Vec::new();
    let mut chunk = [0u8; 65536];
    while let Ok(read @ 1..) = stream.read(&mut chunk) {
        received.extend_from_slice(&chunk[..read]);
        if complete_answers(&received) >= expected {
            stream.set_read_timeout(Some(quiet)).unwrap();
        }
    }
    let text = String::from_utf8_lossy(&received).into_owned();
    text.split("HTTP/1.")
        .skip(1)
        .filter_map(|answer| {
            let status = answer.get(2..5)?.parse().ok()?;
            Some((status, answer.to_owned()))
        })
        .collect()
}

/// Every hostile request gets its status and no key material; the table is the contract.
#[test]
fn hostile_requests_get_refused_without_leaking() {
    let moto = Moto::start();
    let daemon = Daemon::start(&moto, &[]);
    daemon.wait_ready();
    let served = daemon.credentials();
    let token = daemon.token();
    let secrets = known_secrets(&moto, &daemon, &served);
    // What a 200 may carry: the served role's own secrets, nothing else (not the token, not
    // the instance role's keys).
    let servable: Vec<&str> = ["SecretAccessKey", "Token"]
        .iter()
        .map(|key| served[key].as_str().unwrap())
        .collect();
    let cases = cases();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let raw = substitute(&case.raw, &token, daemon.address);
        let answers = exchange(&daemon, &raw, case.expect.len());
        let statuses: Vec<u16> = answers.iter().map(|(status, _)| *status).collect();
        if statuses != case.expect {
            failures.push(format!(
                "{}: expected {:?}, got {statuses:?}",
                case.name, case.expect
            ));
        }
        for (status, text) in &answers {
            let leaked = secrets.iter().any(|secret| {
                let allowed = *status == 200 && servable.contains(&secret.as_str());
                !allowed && text.contains(secret.as_str())
            });
            if leaked {
                failures.push(format!(
                    "{}: a {status} answer carries key material",
                    case.name
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// Fills in `{T}` (token), `{H}` (host:port) and `{P}` (port), byte by byte, so that cases
/// with invalid UTF-8 or NUL keep their bytes.
fn substitute(raw: &[u8], token: &str, address: std::net::SocketAddr) -> Vec<u8> {
    let host = address.to_string();
    let port = address.port().to_string();
    let mut out = Vec::with_capacity(raw.len() + 64);
    let mut rest = raw;
    while let Some(&byte) = rest.first() {
        let replacement = [("{T}", token), ("{H}", &host), ("{P}", &port)]
            .into_iter()
            .find(|(placeholder, _)| rest.starts_with(placeholder.as_bytes()));
        match replacement {
            Some((placeholder, value)) => {
                out.extend_from_slice(value.as_bytes());
                rest = &rest[placeholder.len()..];
            }
            None => {
                out.push(byte);
                rest = &rest[1..];
            }
        }
    }
    out
}

/// A client dribbling its headers a byte a second is cut off by the header timeout, and other
/// clients are served meanwhile.
#[test]
fn slowloris_is_cut_off_and_others_are_served() {
    let moto = Moto::start();
    let daemon = Daemon::start(&moto, &[]);
    daemon.wait_ready();
    let mut slow = TcpStream::connect(daemon.address).unwrap();
    let started = SystemTime::now();
    let head = format!(
        "GET /roles/piyo HTTP/1.1\r\nHost: {}\r\nX-Slow: ",
        daemon.address
    );
    slow.write_all(head.as_bytes()).unwrap();
    let mut cut_off = None;
    for _ in 0..15 {
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(
            daemon.get("/healthz", &[]).0,
            200,
            "another client was blocked"
        );
        if slow.write_all(b"a").is_err() || slow.flush().is_err() {
            cut_off = Some(started.elapsed().unwrap());
            break;
        }
        let mut probe = [0u8; 512];
        slow.set_read_timeout(Some(Duration::from_millis(10)))
            .unwrap();
        if let Ok(read) = slow.read(&mut probe) {
            // The server answered (408) or closed (0 bytes): either way it gave up on us.
            let _ = read;
            cut_off = Some(started.elapsed().unwrap());
            break;
        }
    }
    let cut_off = cut_off.expect("the slow client was never cut off");
    assert!(
        cut_off <= Duration::from_secs(8),
        "cut off only after {cut_off:?}"
    );
}

/// A client dribbling its request head when the daemon is told to stop cannot hold the stop
/// for the whole drain timeout (10 s): the header timeout holds while draining too.
#[test]
fn a_dribbling_client_does_not_hold_the_stop() {
    let moto = Moto::start();
    let mut daemon = Daemon::start(&moto, &[]);
    daemon.wait_ready();
    let mut slow = TcpStream::connect(daemon.address).unwrap();
    let head = format!(
        "GET /roles/piyo HTTP/1.1\r\nHost: {}\r\nX-Slow: ",
        daemon.address
    );
    slow.write_all(head.as_bytes()).unwrap();
    let dribbler = std::thread::spawn(move || {
        for _ in 0..30 {
            std::thread::sleep(Duration::from_millis(500));
            if slow.write_all(b"a").is_err() {
                return;
            }
        }
    });
    let started = SystemTime::now();
    let status = daemon.terminate();
    let took = started.elapsed().unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(8), "the stop took {took:?}");
    dribbler.join().unwrap();
}

/// At most `max_connections` are served at once: past it, a connection of a holder that holds
/// its fair share already (here the only holder, with all four places) is closed at once,
/// unanswered, rather than served or queued behind the flood; once a place is free, a new
/// connection is served.
#[test]
fn connection_cap_holds_back_a_flood() {
    let moto = Moto::start();
    let dir = TempDir::new("cap");
    let config = moto.config_with(&dir.path().join("state/token"), "max_connections = 4");
    let daemon = Daemon::start_with(dir, &config, &moto.host_env(), &[]);
    daemon.wait_ready();
    // The readiness probes' connections have given their places back.
    std::thread::sleep(Duration::from_millis(200));
    // Four connections, each answered once (so each surely holds its place), then idle.
    let keep_alive = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", daemon.address);
    let mut held: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut stream = TcpStream::connect(daemon.address).unwrap();
            stream.write_all(keep_alive.as_bytes()).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(3)))
                .unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                assert_eq!(stream.read(&mut byte).unwrap(), 1, "{head:?}");
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head).to_lowercase();
            assert!(head.starts_with("http/1.1 200"), "{head}");
            let length: usize = head
                .split("content-length:")
                .nth(1)
                .and_then(|rest| rest.lines().next()?.trim().parse().ok())
                .unwrap_or(0);
            let mut body = vec![0u8; length];
            stream.read_exact(&mut body).unwrap();
            stream
        })
        .collect();
    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        daemon.address
    );
    let ask = || {
        let mut stream = TcpStream::connect(daemon.address).unwrap();
        let _ = stream.write_all(request.as_bytes());
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        let mut answer = Vec::new();
        let started = SystemTime::now();
        // Closed (EOF) or reset: either way, the answer is what arrived.
        let _ = stream.read_to_end(&mut answer);
        (answer, started.elapsed().unwrap())
    };
    let (answer, took) = ask();
    assert!(
        answer.is_empty(),
        "a fifth connection was served while four were held"
    );
    assert!(
        took < Duration::from_secs(1),
        "refused after {took:?}, not at once"
    );
    drop(held.pop());
    std::thread::sleep(Duration::from_millis(200));
    let (answer, _) = ask();
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"),
        "{answer:?}"
    );
    drop(held);
}

/// A client that pipelines requests and never reads the answers is cut off once its socket's
/// buffers are full: the daemon, unable to write, reads no new request, and a connection that
/// starts no request for the header timeout (5 s, looked at once a second) is closed; the 10 s
/// write deadline is only the backstop. Not before 5 s, and within 6.5 s of the client's
/// writes blocking; another client is served while it is stuck, before the cut.
#[test]
fn a_client_that_never_reads_is_cut_off() {
    let moto = Moto::start();
    let daemon = Daemon::start(&moto, &[]);
    daemon.wait_ready();
    let token = daemon.token();
    let mut stream = TcpStream::connect(daemon.address).unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let request = format!(
        "GET /roles/piyo HTTP/1.1\r\nHost: {}\r\nAuthorization: {token}\r\n\r\n",
        daemon.address
    );
    let started = Instant::now();
    // When the client's writes first blocked (the daemon had stopped reading by then, its
    // own writes stalled), and the other client's answer meanwhile.
    let (mut blocked, mut other) = (None, None);
    let cut_off = loop {
        match stream.write(request.as_bytes()) {
            Ok(_) => {}
            // The buffers are full: the daemon has stopped reading while it cannot write.
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                blocked.get_or_insert_with(Instant::now);
                if other.is_none() {
                    let status = daemon.get("/roles/piyo", &[("Authorization", &token)]).0;
                    other = Some((status, Instant::now()));
                }
            }
            Err(error) => break error,
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "a client that never reads was never cut off"
        );
    };
    let cut_at = Instant::now();
    let blocked = blocked.expect("the client's writes blocked");
    let (status, served_at) = other.expect("another client asked while it was stuck");
    eprintln!(
        "blocked after {:?}, cut off {:?} later: {cut_off}",
        blocked - started,
        cut_at - blocked
    );
    assert!(
        matches!(
            cut_off.kind(),
            ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
        ),
        "{cut_off}"
    );
    assert_eq!(status, 200, "the other client was not served meanwhile");
    assert!(
        served_at < cut_at,
        "the other client was served only after the cut"
    );
    // The daemon's last request started before the client's writes blocked: at most the
    // header timeout and a look (6 s) separate the block from the cut (the write deadline
    // alone, measured: 7 s); the cut cannot come before the header timeout.
    let (after_block, after_start) = (cut_at - blocked, cut_at - started);
    assert!(
        after_block <= Duration::from_millis(6500),
        "cut {after_block:?} after the block"
    );
    assert!(
        after_start >= Duration::from_secs(5),
        "cut after {after_start:?}"
    );
}
