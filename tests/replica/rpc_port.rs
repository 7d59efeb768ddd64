//! The RPC port's access and limits, against the real binary: AUTH and the token file, the
//! inline splitter, LIST pages, maxclients, the file limit, the idle timeout, and the memory
//! attacks of issue 10 with the node's RSS read from /proc.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use cmud::rpc::{Kv, KvClient, RpcEndpoint};

use super::common::{self, Binary, Launch};
use super::{DEADLINE, closed_by_server, raw, raw_conn, raw_lines};

/// Reads one reply line (`+`, `-`, `:` or a bulk header) from a raw connection.
pub(super) fn read_line(stream: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => line.push(byte[0]),
            other => panic!("reading a reply line: {other:?} after {line:?}"),
        }
    }
    String::from_utf8_lossy(&line[..line.len() - 2]).into_owned()
}

/// `INFO` over a raw connection, as a map.
pub(super) fn info(stream: &mut TcpStream) -> BTreeMap<String, String> {
    stream.write_all(b"INFO\r\n").expect("INFO");
    let header = read_line(stream);
    let len: usize = header[1..].parse().expect("a bulk INFO reply");
    let mut body = vec![0u8; len + 2];
    stream.read_exact(&mut body).expect("INFO body");
    cmud::rpc::client::parse_info(&String::from_utf8_lossy(&body))
}

fn info_u64(stream: &mut TcpStream, field: &str) -> u64 {
    info(stream)[field].parse().expect("a number")
}

/// Polls `check` until it holds; fails after `deadline`.
pub(super) fn wait_until(deadline: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < deadline, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn only_the_token_opens_the_port() {
    let dir = tempfile::tempdir().unwrap();
    let server = Binary::server(dir.path());
    let endpoint = server.endpoint();
    let token = endpoint.credentials.clone().unwrap().secret;
    let token = token.expose();

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.path().join("data/cmud/rpc.token");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "rpc.token is readable by its owner only"
        );
    }
    let printed = Binary::command_with(
        dir.path(),
        &Launch {
            args: vec!["--print-rpc-token".into()],
            ..Launch::default()
        },
        &[],
    )
    .output()
    .unwrap();
    assert!(printed.status.success());
    assert_eq!(String::from_utf8_lossy(&printed.stdout).trim(), token);

    // Nothing but AUTH, QUIT and HELLO before AUTH; the connection stays.
    let mut stream = TcpStream::connect(endpoint.addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.write_all(b"PING\r\nSET k v\r\nHELLO 3\r\n").unwrap();
    assert_eq!(read_line(&mut stream), "-NOAUTH Authentication required.");
    assert_eq!(read_line(&mut stream), "-NOAUTH Authentication required.");
    assert!(read_line(&mut stream).starts_with("-NOPROTO"));
    write!(stream, "AUTH {token}\r\nPING\r\n").unwrap();
    assert_eq!(read_line(&mut stream), "+OK");
    assert_eq!(read_line(&mut stream), "+PONG");

    // `AUTH default <token>`, as `redis-cli --user default` sends it.
    let (reply, _) = raw_lines(
        &RpcEndpoint {
            credentials: None,
            ..endpoint.clone()
        },
        format!("AUTH default {token}\r\nPING\r\nQUIT\r\n").as_bytes(),
    );
    assert_eq!(reply, "+OK\r\n+PONG\r\n+OK\r\n");

    // A wrong token, or the right one for another user, costs the connection.
    let wrong = "0".repeat(64);
    for attempt in [
        format!("AUTH {wrong}\r\nPING\r\n"),
        format!("AUTH someone {token}\r\nPING\r\n"),
        format!("AUTH {token}x\r\nPING\r\n"),
    ] {
        let mut stream = TcpStream::connect(endpoint.addr).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        stream.write_all(attempt.as_bytes()).unwrap();
        assert_eq!(
            read_line(&mut stream),
            "-WRONGPASS invalid username-password pair or user is disabled."
        );
        assert!(closed_by_server(&mut stream), "{attempt:?}");
    }

    // Before AUTH a command may be 1 KiB at most.
    let mut stream = TcpStream::connect(endpoint.addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream
        .write_all(format!("AUTH {}\r\n", "x".repeat(2000)).as_bytes())
        .unwrap();
    assert!(read_line(&mut stream).starts_with("-ERR Protocol error"));
    assert!(closed_by_server(&mut stream));

    // The redis crate authenticates from the URL.
    let mut conn = redis::Client::open(endpoint.redis_url())
        .unwrap()
        .get_connection()
        .unwrap();
    let pong: String = redis::cmd("PING").query(&mut conn).unwrap();
    assert_eq!(pong, "PONG");

    // And so does redis-cli, where it is installed.
    if let Ok(out) = std::process::Command::new("redis-cli")
        .args([
            "-p",
            &endpoint.addr.port().to_string(),
            "-a",
            token,
            "--no-auth-warning",
        ])
        .arg("PING")
        .output()
    {
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "PONG");
    }
}

#[test]
fn a_connection_that_does_not_authenticate_is_closed_after_10_s() {
    let dir = tempfile::tempdir().unwrap();
    let server = Binary::server(dir.path());
    let opened = Instant::now();
    let mut stream = TcpStream::connect(server.endpoint().addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = [0u8; 16];
    let read = stream.read(&mut buf);
    assert!(
        matches!(read, Ok(0))
            || read.is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "closed, not timed out on our side"
    );
    let waited = opened.elapsed();
    assert!(
        (Duration::from_secs(9)..Duration::from_secs(25)).contains(&waited),
        "closed after {waited:?}"
    );
}

#[test]
fn inline_commands_split_like_redis() {
    let dir = tempfile::tempdir().unwrap();
    let server = Binary::server(dir.path());
    let reply = raw(
        &server.endpoint(),
        b"SET q \"\\x41\\x00B\"\r\nGET q\r\nSET s 'it\\'s'\r\nGET s\r\nSET \"a\\tb\" \"\\\\\\\"\"\r\nGET \"a\\tb\"\r\nSET bad \"open\r\n",
        usize::MAX,
    );
    assert_eq!(
        String::from_utf8_lossy(&reply),
        "+OK\r\n$3\r\nA\0B\r\n+OK\r\n$4\r\nit's\r\n+OK\r\n$2\r\n\\\"\r\n-ERR Protocol error: unbalanced quotes in request\r\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_and_a_reply_over_the_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Binary::server_with(
        dir.path(),
        &Launch::config("(max_client_output_bytes: 1048576)"),
    );
    let endpoint = server.endpoint();
    let big = "v".repeat(32 * 1024);
    let mut request = Vec::new();
    for n in 0..40 {
        write!(request, "SET big/{n:02} {big}\r\n").unwrap();
    }
    request.extend_from_slice(b"SET small/a 1\r\nSET small/b 2\r\n");
    request.extend_from_slice(b"LIST big/\r\nMGET");
    for n in 0..40 {
        write!(request, " big/{n:02}").unwrap();
    }
    request.extend_from_slice(b"\r\nLIST small/\r\nLIST small/ COUNT 1\r\nLIST small/ AFTER small/a\r\nLIST big/ COUNT 0\r\nQUIT\r\n");
    let (reply, lines) = raw_lines(&endpoint, &request);
    assert!(lines[..42].iter().all(|l| l == "+OK"), "{reply:.200}");
    assert_eq!(
        lines[42],
        "-ERR reply too large: use a narrower prefix, or LIST prefix COUNT n"
    );
    assert_eq!(lines[43], "-ERR reply too large: ask for fewer keys");
    let rest = lines[44..].join("|");
    assert_eq!(
        rest,
        "*4|$7|small/a|$1|1|$7|small/b|$1|2|\
         *3|$7|small/a|$1|1|$7|small/a|\
         *3|$7|small/b|$1|2|$-1|\
         -ERR COUNT must be a positive number|+OK|"
    );
    // The game's client reads the world in pages, whatever its size (once local sync brought
    // the writes to its actor).
    let kv = KvClient::connect(&endpoint).await.unwrap();
    let mut listed = Vec::new();
    common::eventually(DEADLINE, "the client lists every key", async || {
        listed = kv.list("big/").await.unwrap();
        listed.len() == 40
    })
    .await;
    assert!(listed.iter().all(|(_, value)| *value == big));
    assert_eq!(listed[39].0, "big/39");
}

#[test]
fn maxclients_refuses_one_more_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Binary::server_with(dir.path(), &Launch::config("(maxclients: 5)"));
    let endpoint = server.endpoint();
    let mut admitted: Vec<TcpStream> = (0..5).map(|_| raw_conn(&endpoint)).collect();
    let asked = Instant::now();
    let mut refused = TcpStream::connect(endpoint.addr).unwrap();
    refused.set_read_timeout(Some(DEADLINE)).unwrap();
    assert_eq!(
        read_line(&mut refused),
        "-ERR max number of clients reached"
    );
    assert!(closed_by_server(&mut refused));
    println!("refused in {:?}", asked.elapsed());
    assert_eq!(info_u64(&mut admitted[0], "rejected_connections"), 1);
    assert_eq!(info_u64(&mut admitted[0], "maxclients"), 5);
    admitted.pop();
    // A slot is free again once the node has seen the close.
    wait_until(DEADLINE, "a closed client frees its slot", || {
        let mut stream = TcpStream::connect(endpoint.addr).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        let auth = endpoint.auth_line();
        stream.write_all(&auth).unwrap();
        read_line(&mut stream) == "+OK"
    });
}

#[test]
fn timeout_closes_idle_clients() {
    let dir = tempfile::tempdir().unwrap();
    let server = Binary::server_with(dir.path(), &Launch::config("(timeout: 1)"));
    let mut stream = raw_conn(&server.endpoint());
    let idle_from = Instant::now();
    assert!(closed_by_server(&mut stream), "an idle client is closed");
    let idle = idle_from.elapsed();
    assert!(idle >= Duration::from_millis(900), "closed after {idle:?}");
}

/// A `cmud --plain` player on the RPC port `port`, under `ulimit`.
struct PlainGame {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl PlainGame {
    fn start(root: &Path, port: u16, ulimit: &str) -> PlainGame {
        let launch = Launch {
            ulimit: Some(ulimit.into()),
            args: vec![
                "--name".into(),
                "ada".into(),
                "--rpc-port".into(),
                port.to_string(),
            ],
            ..Launch::default()
        };
        let mut child = Binary::command_with(root, &launch, &["--plain"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        PlainGame { child, lines }
    }

    /// Sends `command` and waits for a line containing `expect`.
    fn answers(&mut self, command: &str, expect: &str) -> Duration {
        let asked = Instant::now();
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{command}").unwrap();
        loop {
            let left = Duration::from_secs(30).saturating_sub(asked.elapsed());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("the game did not answer {command:?}"));
            if line.contains(expect) {
                return asked.elapsed();
            }
        }
    }
}

impl Drop for PlainGame {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// 1,100 idle authenticated clients on a `--plain` node under `ulimit`: returns the replies
/// each got to AUTH, after checking that the game kept working throughout.
fn idle_clients_around_a_game(ulimit: &str) -> (Vec<String>, String) {
    let (now, _) = cmud::rpc::process::raise_fd_limit().expect("a file limit");
    assert!(
        now >= 2400,
        "this test needs 2,400 file descriptors, the hard limit is {now}"
    );
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut game = PlainGame::start(dir.path(), port, ulimit);
    game.answers("stats", "Name: ada");
    let endpoint = common::endpoint(dir.path(), ([127, 0, 0, 1], port).into());
    let mut clients = Vec::new();
    let mut replies = Vec::new();
    for _ in 0..1100 {
        let mut stream = TcpStream::connect(endpoint.addr).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        stream.write_all(&endpoint.auth_line()).unwrap();
        replies.push(read_line(&mut stream));
        clients.push(stream);
    }
    let took = game.answers("stats", "Name: ada");
    println!("with 1,100 idle clients the game answered in {took:?}");
    let log = std::fs::read_to_string(dir.path().join("data/cmud/cmud.log")).unwrap();
    drop(clients);
    // Once they are gone, anyone gets in again.
    wait_until(DEADLINE, "a new client gets in", || {
        let mut stream = TcpStream::connect(endpoint.addr).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        stream.write_all(&endpoint.auth_line()).unwrap();
        read_line(&mut stream) == "+OK"
    });
    (replies, log)
}

#[test]
fn a_soft_file_limit_of_1024_locks_nobody_out() {
    let (replies, log) = idle_clients_around_a_game("-Sn 1024");
    assert!(replies.iter().all(|r| r == "+OK"), "every client got in");
    assert!(log.contains("file limit (RLIMIT_NOFILE) raised"), "{log}");
    assert!(log.contains("before=1024"), "{log}");
}

#[test]
fn a_hard_file_limit_of_1024_caps_maxclients_and_the_game_keeps_its_connection() {
    let (replies, log) = idle_clients_around_a_game("-n 1024");
    let admitted = replies.iter().filter(|r| *r == "+OK").count();
    let refused = replies
        .iter()
        .filter(|r| *r == "-ERR max number of clients reached")
        .count();
    assert_eq!(admitted + refused, 1100, "{replies:?}");
    assert!(
        refused > 0 && admitted > 800,
        "admitted {admitted}, refused {refused}"
    );
    assert!(
        log.contains("maxclients is more than the file limit allows"),
        "{log}"
    );
    assert!(
        !log.contains("os error 24"),
        "no accept ran out of descriptors"
    );
}

/// The node's resident memory, from /proc.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}

/// PINGs the node every 10 ms from its own connection until stopped; gives every latency.
struct Pinger {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<Vec<Duration>>,
}

impl Pinger {
    fn start(endpoint: &RpcEndpoint) -> Pinger {
        let mut stream = raw_conn(endpoint);
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = thread::spawn(move || {
            let mut latencies = Vec::new();
            while !stopped.load(Ordering::Relaxed) {
                let asked = Instant::now();
                stream.write_all(b"PING\r\n").unwrap();
                assert_eq!(read_line(&mut stream), "+PONG");
                latencies.push(asked.elapsed());
                thread::sleep(Duration::from_millis(10));
            }
            latencies
        });
        Pinger { stop, thread }
    }

    fn latencies(self) -> Vec<Duration> {
        self.stop.store(true, Ordering::Relaxed);
        let mut latencies = self.thread.join().expect("the pinger never failed");
        latencies.sort();
        latencies
    }
}

/// CPU time and time spent waiting for a CPU (run-queue delay) of the node's query actor
/// threads so far, in milliseconds, from /proc's schedstat: what the node did, and how long
/// the machine kept it waiting.
fn actor_sched_ms(pid: u32) -> (u64, u64) {
    let mut totals = (0, 0);
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return totals;
    };
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("cmud-actor") {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        let mut fields = stat
            .split_whitespace()
            .map(|f| f.parse::<u64>().unwrap_or(0));
        totals.0 += fields.next().unwrap_or(0) / 1_000_000;
        totals.1 += fields.next().unwrap_or(0) / 1_000_000;
    }
    totals
}

/// The machine's 1-minute load average.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_owned()
}

/// Runs `attack` against a node, sampling its RSS every 20 ms for `window` once
/// `attack_landed` holds; returns the growth over the idle RSS and the slowest PING. Prints
/// the PING latencies, the machine's load and the actors' CPU and run-queue time meanwhile.
fn measure_attack(
    server: &Binary,
    attack: impl FnOnce(&RpcEndpoint) -> Vec<TcpStream>,
    attack_landed: impl Fn(&mut TcpStream) -> bool,
) -> (u64, Duration) {
    let endpoint = server.endpoint();
    let mut probe = raw_conn(&endpoint);
    let idle = rss_bytes(server.pid());
    let load_before = load_average();
    let (cpu_before, wait_before) = actor_sched_ms(server.pid());
    let attacked = Instant::now();
    let pinger = Pinger::start(&endpoint);
    let held = attack(&endpoint);
    let mut peak = idle;
    let landing = Instant::now();
    while !attack_landed(&mut probe) {
        peak = peak.max(rss_bytes(server.pid()));
        assert!(
            landing.elapsed() < Duration::from_secs(60),
            "the attack did not land: {:?}\n{}",
            info(&mut probe),
            server.stderr()
        );
        thread::sleep(Duration::from_millis(20));
    }
    let window = Instant::now();
    while window.elapsed() < Duration::from_secs(2) {
        peak = peak.max(rss_bytes(server.pid()));
        thread::sleep(Duration::from_millis(20));
    }
    let fields = info(&mut probe);
    let latencies = pinger.latencies();
    let (cpu_after, wait_after) = actor_sched_ms(server.pid());
    let slowest = latencies.last().copied().unwrap_or_default();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    let over = latencies
        .iter()
        .filter(|l| **l > Duration::from_millis(50))
        .count();
    println!(
        "idle rss {} MB, peak {} MB (+{} MB); {} PINGs: median {:?}, p99 {:?}, slowest {slowest:?}, {over} over 50 ms; \
         load {load_before} -> {}; over {:.1} s the actor threads ran {} ms and waited {} ms for a CPU; \
         clients {} evicted {} output {} input {}",
        idle / 1_000_000,
        peak / 1_000_000,
        (peak - idle) / 1_000_000,
        latencies.len(),
        at(0.5),
        at(0.99),
        load_average(),
        attacked.elapsed().as_secs_f64(),
        cpu_after - cpu_before,
        wait_after - wait_before,
        fields["connected_clients"],
        fields["evicted_clients"],
        fields["client_output_bytes"],
        fields["client_input_bytes"],
    );
    drop(held);
    (peak - idle, slowest)
}

/// The bound on RSS growth in each attack (the README has the exact figures).
const RSS_GROWTH_BOUND: u64 = 300 * 1_000_000;

/// Generous: a debug binary on a loaded 2-core CI machine (0.1-0.3 s measured with a load
/// average of 15). The release figures (the issue asks for 50 ms) are in the README.
const PING_BOUND: Duration = Duration::from_secs(2);

#[test]
fn clients_that_never_read_large_replies_cannot_grow_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let server = Binary::server(dir.path());
    let value = "v".repeat(32 * 1024);
    raw(
        &server.endpoint(),
        format!("SET big {value}\r\nQUIT\r\n").as_bytes(),
        usize::MAX,
    );
    // On both actors before the attack: an actor that has not merged it yet would answer
    // nils, and its half of the attackers would hold nothing.
    for actor in 0..2 {
        let mut conn = raw_conn(&server.endpoint());
        conn.write_all(format!("ACTOR {actor}\r\n").as_bytes())
            .unwrap();
        assert_eq!(read_line(&mut conn), "+OK");
        wait_until(DEADLINE, "every actor has the value", || {
            conn.write_all(b"EXISTS big\r\n").unwrap();
            read_line(&mut conn) == ":1"
        });
    }
    let mut mget = b"MGET".to_vec();
    for _ in 0..1023 {
        mget.extend_from_slice(b" big");
    }
    mget.extend_from_slice(b"\r\n");
    let (growth, slowest) = measure_attack(
        &server,
        |endpoint| {
            (0..30)
                .map(|_| {
                    let mut stream = raw_conn(endpoint);
                    stream.write_all(&mget).unwrap();
                    stream
                })
                .collect()
        },
        // 30 replies of 32 MiB are four times the budget: some clients must have been closed.
        |probe| info_u64(probe, "evicted_clients") >= 10,
    );
    assert!(growth < RSS_GROWTH_BOUND, "rss grew by {growth} bytes");
    assert!(slowest < PING_BOUND, "a PING took {slowest:?}");
}

#[test]
fn unfinished_commands_cannot_grow_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let server = Binary::server(dir.path());
    // An MSET of 127 values of 32 KiB announces just under the 4 MiB a command may have; each
    // connection sends all of it but the last bytes.
    let value = "v".repeat(32 * 1024);
    let mut frame = b"*255\r\n$4\r\nMSET\r\n".to_vec();
    for _ in 0..127 {
        write!(frame, "$1\r\nk\r\n${}\r\n{value}\r\n", value.len()).unwrap();
    }
    frame.truncate(frame.len() - 10);
    let (growth, slowest) = measure_attack(
        &server,
        |endpoint| {
            let mut streams: Vec<(TcpStream, usize)> = (0..200)
                .map(|_| {
                    let stream = raw_conn(endpoint);
                    stream.set_nonblocking(true).unwrap();
                    (stream, 0)
                })
                .collect();
            // Write what each socket takes until none takes more for a second.
            let mut last_progress = Instant::now();
            while last_progress.elapsed() < Duration::from_secs(1) {
                for (stream, sent) in &mut streams {
                    if *sent < frame.len()
                        && let Ok(n) = stream.write(&frame[*sent..])
                    {
                        *sent += n;
                        last_progress = Instant::now();
                    }
                }
                if streams.iter().all(|(_, sent)| *sent == frame.len()) {
                    break;
                }
                thread::sleep(Duration::from_millis(5));
            }
            streams.into_iter().map(|(stream, _)| stream).collect()
        },
        // The node stopped reading at its budget (256 MiB), or read everything.
        |probe| info_u64(probe, "client_input_bytes") >= 200 * 1024 * 1024,
    );
    assert!(growth < RSS_GROWTH_BOUND, "rss grew by {growth} bytes");
    assert!(slowest < PING_BOUND, "a PING took {slowest:?}");
}

/// Ignored: it writes a million keys first. Run it with
/// `cargo test --release --test replica listing_a_million -- --ignored --nocapture`.
#[test]
#[ignore]
fn listing_a_million_keys_from_ten_clients_that_never_read_cannot_grow_the_node() {
    let dir = tempfile::tempdir().unwrap();
    // A million keys of one writer: quotas off.
    let server = Binary::server_with(dir.path(), &Launch::without_quota());
    let mut loader = raw_conn(&server.endpoint());
    // 2,000 MSETs of 500 pairs (a command has at most 1024 arguments).
    for batch in 0..2000 {
        let mut mset = b"MSET".to_vec();
        for n in 0..500 {
            write!(mset, " k/{batch:04}{n:03} value-{n:03}").unwrap();
        }
        mset.extend_from_slice(b"\r\n");
        loader.write_all(&mset).unwrap();
        assert_eq!(read_line(&mut loader), "+OK");
    }
    // Every actor has merged the world before the attack.
    for actor in 0..2 {
        let mut conn = raw_conn(&server.endpoint());
        conn.write_all(format!("ACTOR {actor}\r\n").as_bytes())
            .unwrap();
        assert_eq!(read_line(&mut conn), "+OK");
        wait_until(
            Duration::from_secs(300),
            "every actor has the world",
            || {
                conn.write_all(b"DBSIZE\r\n").unwrap();
                read_line(&mut conn) == ":1000000"
            },
        );
    }
    let (growth, slowest) = measure_attack(
        &server,
        |endpoint| {
            (0..10)
                .map(|_| {
                    let mut stream = raw_conn(endpoint);
                    stream.write_all(b"LIST \"\"\r\n").unwrap();
                    stream
                })
                .collect()
        },
        |probe| info_u64(probe, "evicted_clients") >= 1,
    );
    assert!(growth < RSS_GROWTH_BOUND, "rss grew by {growth} bytes");
    assert!(slowest < PING_BOUND, "a PING took {slowest:?}");
}

/// One reply as text: an array's elements (flattened), or the single value.
pub(super) fn read_reply(stream: &mut TcpStream) -> Vec<String> {
    let line = read_line(stream);
    match line.as_bytes().first() {
        Some(b'*') => {
            let n: usize = line[1..].parse().expect("array length");
            (0..n).flat_map(|_| read_reply(stream)).collect()
        }
        Some(b'$') if line == "$-1" => vec!["nil".into()],
        Some(b'$') => vec![read_line(stream)],
        _ => vec![line],
    }
}

#[test]
fn keyspace_notifications_reach_subscribers_from_every_actor() {
    let dir = tempfile::tempdir().unwrap();
    let server = Binary::server(dir.path());
    let endpoint = server.endpoint();
    let mut sub = raw_conn(&endpoint);
    sub.write_all(b"ACTOR\r\n").unwrap();
    let home: usize = read_line(&mut sub)[1..].parse().unwrap();
    sub.write_all(b"PSUBSCRIBE __keyspace@0__:w/*\r\nSUBSCRIBE __keyspace@0__:x\r\n")
        .unwrap();
    assert_eq!(
        read_reply(&mut sub),
        ["psubscribe", "__keyspace@0__:w/*", ":1"]
    );
    assert_eq!(
        read_reply(&mut sub),
        ["subscribe", "__keyspace@0__:x", ":2"]
    );
    // Subscribed mode: only the subscription commands, PING and QUIT.
    sub.write_all(b"GET x\r\nPING\r\n").unwrap();
    assert!(read_line(&mut sub).starts_with("-ERR Can't execute 'get'"));
    assert_eq!(read_reply(&mut sub), ["pong", ""]);

    // A write on the subscriber's actor, then writes merged from the other actor.
    let mut near = raw_conn(&endpoint);
    near.write_all(format!("ACTOR {home}\r\nSET w/near 1\r\n").as_bytes())
        .unwrap();
    assert_eq!(read_line(&mut near), "+OK");
    assert_eq!(read_line(&mut near), "+OK");
    assert_eq!(
        read_reply(&mut sub),
        [
            "pmessage",
            "__keyspace@0__:w/*",
            "__keyspace@0__:w/near",
            "set"
        ]
    );
    let mut far = raw_conn(&endpoint);
    far.write_all(format!("ACTOR {}\r\nSET w/far 1\r\nSET q 1\r\n", 1 - home).as_bytes())
        .unwrap();
    for _ in 0..3 {
        assert_eq!(read_line(&mut far), "+OK");
    }
    assert_eq!(
        read_reply(&mut sub),
        [
            "pmessage",
            "__keyspace@0__:w/*",
            "__keyspace@0__:w/far",
            "set"
        ]
    );
    far.write_all(b"DEL w/far\r\nSET x 2\r\n").unwrap();
    assert_eq!(read_line(&mut far), ":1");
    assert_eq!(read_line(&mut far), "+OK");
    let mut events = vec![read_reply(&mut sub), read_reply(&mut sub)];
    events.sort();
    assert_eq!(
        events,
        [
            vec!["message", "__keyspace@0__:x", "set"],
            vec![
                "pmessage",
                "__keyspace@0__:w/*",
                "__keyspace@0__:w/far",
                "del"
            ],
        ],
        "q matches no subscription"
    );

    // Unsubscribing from everything ends subscribed mode.
    sub.write_all(b"UNSUBSCRIBE\r\nPUNSUBSCRIBE\r\nGET x\r\n")
        .unwrap();
    assert_eq!(
        read_reply(&mut sub),
        ["unsubscribe", "__keyspace@0__:x", ":1"]
    );
    assert_eq!(
        read_reply(&mut sub),
        ["punsubscribe", "__keyspace@0__:w/*", ":0"]
    );
    assert_eq!(read_reply(&mut sub), ["2"]);
}

#[test]
fn a_subscriber_that_does_not_read_is_closed_at_its_output_limit() {
    let dir = tempfile::tempdir().unwrap();
    let server = Binary::server_with(
        dir.path(),
        &Launch::config("(max_client_output_bytes: 1048576)"),
    );
    let endpoint = server.endpoint();
    let mut sub = raw_conn(&endpoint);
    sub.write_all(b"PSUBSCRIBE *\r\n").unwrap();
    assert_eq!(read_reply(&mut sub), ["psubscribe", "*", ":1"]);
    // 30,000 events of about 1 KB: far more than the limit and the sockets' buffers.
    let long = "k".repeat(900);
    let mut writer = raw_conn(&endpoint);
    let mut request = Vec::new();
    for n in 0..30_000 {
        write!(request, "SET {long}{n} v\r\n").unwrap();
    }
    writer.write_all(&request).unwrap();
    let mut replies = vec![0u8; 30_000 * 5];
    writer.read_exact(&mut replies).unwrap();
    // The subscriber's socket ends after what the kernel held.
    sub.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut sink = Vec::new();
    let ended = sub.read_to_end(&mut sink);
    assert!(
        ended.is_ok() || ended.is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "closed by the node"
    );
    assert!(
        sink.len() < 30_000 * 950,
        "not every event was delivered: {}",
        sink.len()
    );
}

/// `SET`s of `events` keys of about 1 KB each (one keyspace event each), written through a
/// new connection; returns once every one is acknowledged.
fn set_many(endpoint: &RpcEndpoint, prefix: &str, events: usize) {
    let long = "k".repeat(900);
    let mut writer = raw_conn(endpoint);
    let mut request = Vec::new();
    for n in 0..events {
        write!(request, "SET {prefix}{long}{n} v\r\n").unwrap();
    }
    writer.write_all(&request).unwrap();
    let mut replies = vec![0u8; events * 5];
    writer.read_exact(&mut replies).unwrap();
}

#[test]
fn subscribers_that_do_not_read_count_in_the_total_output_budget() {
    let dir = tempfile::tempdir().unwrap();
    // Each client may hold 32 MiB, all of them together 32 MiB too.
    let server = Binary::server_with(
        dir.path(),
        &Launch::config("(max_client_output_bytes: 33554432, max_total_output_bytes: 33554432)"),
    );
    let endpoint = server.endpoint();
    let mut subs: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut sub = raw_conn(&endpoint);
            sub.write_all(b"PSUBSCRIBE *\r\n").unwrap();
            assert_eq!(read_reply(&mut sub), ["psubscribe", "*", ":1"]);
            sub
        })
        .collect();
    // About 28 MB of events each: under a client's own limit, over the node's budget together.
    set_many(&endpoint, "", 30_000);
    let mut probe = raw_conn(&endpoint);
    wait_until(DEADLINE, "a subscriber is closed for the budget", || {
        info_u64(&mut probe, "evicted_clients") >= 1
    });
    let log = server.stderr();
    assert!(log.contains("over max_total_output_bytes"), "{log}");
    let closed = subs
        .iter_mut()
        .map(|sub| {
            let mut sink = Vec::new();
            sub.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            match sub.read_to_end(&mut sink) {
                Ok(_) => true,
                Err(err) => err.kind() == std::io::ErrorKind::ConnectionReset,
            }
        })
        .filter(|closed| *closed)
        .count();
    assert!(closed >= 1, "the node closed a subscriber");
    assert!(info_u64(&mut probe, "client_output_bytes") <= 32 * 1024 * 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_games_subscription_is_never_closed_it_hears_it_fell_behind() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = cmud::node::NodeOptions::local(dir.path().join("cmud"), 1);
    options.rpc.max_client_output_bytes = 1024 * 1024;
    options.rpc.max_total_output_bytes = 8 * 1024 * 1024;
    let node = cmud::node::Node::start(options).await.unwrap();
    let (game, endpoint) = (node.game_endpoint(), node.rpc_endpoint());
    tokio::task::spawn_blocking(move || {
        let mut sub = raw_conn(&game);
        sub.write_all(b"PSUBSCRIBE __keyspace@0__:*\r\n").unwrap();
        assert_eq!(
            read_reply(&mut sub),
            ["psubscribe", "__keyspace@0__:*", ":1"]
        );
        // 30 MB of events for a game that reads none of them meanwhile.
        set_many(&endpoint, "", 30_000);
        let mut probe = raw_conn(&endpoint);
        assert_eq!(info_u64(&mut probe, "evicted_clients"), 0);
        // It reads what the socket held, then hears how many it missed, and goes on.
        let lagged = loop {
            let message = read_reply(&mut sub);
            if message[1] == "__cmud__:lagged" {
                break message[2].parse::<u64>().unwrap();
            }
            assert!(message[3] == "set", "{message:?}");
        };
        assert!(lagged > 1000, "missed {lagged}");
        probe.write_all(b"SET after 1\r\n").unwrap();
        assert_eq!(read_line(&mut probe), "+OK");
        loop {
            let message = read_reply(&mut sub);
            if message.get(2).map(String::as_str) == Some("__keyspace@0__:after") {
                break;
            }
        }
        assert_eq!(info_u64(&mut probe, "evicted_clients"), 0);
    })
    .await
    .unwrap();
    node.shutdown().await;
}
