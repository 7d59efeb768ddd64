//! Storage with the real `cmud` binary: `kill -9` under load loses no acknowledged write, a
//! damaged `world.redb` is one clear message, and `cmud check`, `export` and `import`.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::process::Output;
use std::thread;
use std::time::{Duration, Instant};

use cmud::rpc::RpcEndpoint;
use common::{Binary, Launch, raw_connection};

/// Sends `request` on a fresh connection and reads until `expect` bytes or the end.
fn raw(endpoint: &RpcEndpoint, request: &[u8], expect: usize) -> Vec<u8> {
    let mut stream = raw_connection(endpoint);
    stream.write_all(request).expect("write");
    let mut reply = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    while reply.len() < expect {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(err) => panic!("reading a reply: {err}"),
        }
    }
    reply
}

/// A RESP command from its arguments (any bytes).
fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// An acknowledged write of a checked key.
#[derive(Clone, Copy, Debug)]
struct Acked {
    /// The sequence number written as the value.
    seq: u64,
    /// When its reply had been read (no earlier than the acknowledgement).
    at: Instant,
}

/// Commands per pipelined round of a writer; one in [`CHECKED_EVERY`] is a checked key.
const PIPELINE: usize = 64;
const CHECKED_EVERY: usize = 8;
/// Checked keys per writer.
const CHECKED_KEYS: usize = 50;

/// One pipelining writer: random new keys (`load/<n>`) with a checked key (`chk/<w>/<k>`,
/// value = a rising sequence number) among them, until the node dies. Returns every
/// acknowledged write of each checked key, in order, and the number of SETs acknowledged.
fn writer(endpoint: RpcEndpoint, id: usize, first_seq: u64) -> (Vec<Vec<Acked>>, u64) {
    let mut acked = vec![Vec::new(); CHECKED_KEYS];
    let mut stream = raw_connection(&endpoint);
    let mut seq = first_seq;
    let mut next_checked = 0;
    let mut total = 0;
    let mut reply = vec![0u8; PIPELINE * 5];
    loop {
        let mut request = Vec::new();
        let mut checked = Vec::new();
        for i in 0..PIPELINE {
            if i % CHECKED_EVERY == 0 {
                seq += 1;
                let key = format!("chk/{id}/{next_checked}");
                request.extend(command(&[
                    b"SET",
                    key.as_bytes(),
                    seq.to_string().as_bytes(),
                ]));
                checked.push((next_checked, seq));
                next_checked = (next_checked + 1) % CHECKED_KEYS;
            } else {
                let key = format!("load/{}", rand::random::<u32>() % 1_000_000);
                request.extend(command(&[b"SET", key.as_bytes(), b"x"]));
            }
        }
        if stream.write_all(&request).is_err() || stream.read_exact(&mut reply).is_err() {
            break;
        }
        assert!(
            reply.chunks(5).all(|r| r == b"+OK\r\n"),
            "a SET was refused: {}",
            String::from_utf8_lossy(&reply)
        );
        let at = Instant::now();
        for (key, seq) in checked {
            acked[key].push(Acked { seq, at });
        }
        total += PIPELINE as u64;
    }
    (acked, total)
}

/// Figures of one kill.
struct Round {
    /// Checked keys whose latest write acknowledged 250 ms before the kill was missing
    /// afterwards.
    lost: usize,
    /// Checked keys that had such a write.
    checked: usize,
    /// SETs acknowledged per second under load.
    rate: f64,
}

/// Loads a node with `writers` pipelining writers (and `redis-benchmark` beside them if
/// `benchmark`), kills it with SIGKILL after `run_for`, restarts it and checks every key's
/// latest write acknowledged 250 ms before the kill.
fn kill_under_load(
    root: &Path,
    round: u64,
    writers: usize,
    benchmark: bool,
    run_for: Duration,
) -> Round {
    // The writers create keys at random among a million: quotas off.
    let mut server = Binary::server_with(root, &Launch::without_quota());
    let endpoint = server.endpoint();
    let token_file = Binary::world_dir(root).join(cmud::rpc::auth::TOKEN_FILE);
    let token = std::fs::read_to_string(token_file).unwrap_or_default();
    let mut bench = benchmark.then(|| {
        std::process::Command::new("redis-benchmark")
            .args(["-h", "127.0.0.1", "-p", &endpoint.addr.port().to_string()])
            .args(["-a", token.trim()])
            .args([
                "-t",
                "set",
                "-r",
                "200000",
                "-c",
                "20",
                "-P",
                "16",
                "-n",
                "100000000",
                "-q",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-benchmark runs")
    });
    let started = Instant::now();
    let handles: Vec<_> = (0..writers)
        .map(|id| {
            let endpoint = endpoint.clone();
            thread::spawn(move || writer(endpoint, id, round << 32))
        })
        .collect();
    thread::sleep(run_for);
    let killed_at = Instant::now();
    server.kill_9();
    let killed_log = server.stderr();
    if let Some(bench) = &mut bench {
        let _ = bench.kill();
        let _ = bench.wait();
    }
    let elapsed = killed_at - started;
    let results: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().expect("writer"))
        .collect();

    let server = Binary::server(root);
    let mut request = Vec::new();
    let mut expected = Vec::new();
    for (id, (acked, _)) in results.iter().enumerate() {
        for (key, history) in acked.iter().enumerate() {
            let due = history
                .iter()
                .rev()
                .find(|acked| acked.at + Duration::from_millis(250) <= killed_at);
            if let Some(acked) = due {
                request.extend(command(&[b"GET", format!("chk/{id}/{key}").as_bytes()]));
                expected.push(acked.seq);
            }
        }
    }
    // Only the keys written well before the kill are asked for: a later write may be there
    // or not, and an earlier sequence number must not be.
    request.extend(command(&[b"QUIT"]));
    let reply = String::from_utf8(raw(&server.endpoint(), &request, usize::MAX)).expect("text");
    let mut lines = reply.split("\r\n");
    let mut lost = 0;
    for want in &expected {
        let found = match lines.next() {
            Some(header) if header.starts_with('$') && header != "$-1" => lines
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0),
            _ => 0,
        };
        if found < *want {
            lost += 1;
            eprintln!(
                "lost: wanted round {} seq {}, found round {} seq {}",
                want >> 32,
                want & 0xFFFF_FFFF,
                found >> 32,
                found & 0xFFFF_FFFF
            );
        }
    }
    if lost > 0 {
        eprintln!("the killed node logged:\n{}", killed_log);
    }
    drop(server);
    let acknowledged: u64 = results.iter().map(|(_, total)| total).sum();
    Round {
        lost,
        checked: expected.len(),
        rate: acknowledged as f64 / elapsed.as_secs_f64(),
    }
}

fn kill_loop(kills: u64, writers: usize, benchmark: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut lost = 0;
    for round in 1..=kills {
        // Between 0.6 and 1.6 s of load, so the kill lands anywhere in the commit cycle.
        let run_for = Duration::from_millis(600 + rand::random::<u64>() % 1000);
        let figures = kill_under_load(dir.path(), round, writers, benchmark, run_for);
        eprintln!(
            "kill {round}: {} of {} checked keys lost, {:.0} SET/s acknowledged",
            figures.lost, figures.checked, figures.rate
        );
        assert!(figures.checked > 0, "no write was acknowledged in time");
        lost += figures.lost;
    }
    assert_eq!(lost, 0, "acknowledged writes were lost");
}

#[test]
fn kill_9_under_load_loses_no_acknowledged_write() {
    kill_loop(3, 4, false);
}

/// The full version, with `redis-benchmark -t set -r 200000 -c 20 -P 16` beside 4 writers:
/// `cargo test --release --test storage -- --ignored --nocapture kill_9_twelve`.
#[test]
#[ignore = "long: 12 kills under full load with redis-benchmark; figures in the README"]
fn kill_9_twelve_times_under_full_load() {
    kill_loop(12, 4, true);
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A stopped world under `root` with text, binary and deleted keys.
fn stopped_world(root: &Path) {
    let mut server = Binary::server(root);
    let mut request = Vec::new();
    for n in 0..300 {
        request.extend(command(&[b"SET", format!("k/{n:03}").as_bytes(), b"v"]));
    }
    request.extend(command(&[b"SET", b"bin", &[0xFF, 0x00, 0x0A]]));
    request.extend(command(&[b"SET", &[0xC3, 0x28], b"odd key"]));
    request.extend(command(&[b"DEL", b"k/007"]));
    request.extend(command(&[b"QUIT"]));
    let reply = raw(&server.endpoint(), &request, usize::MAX);
    assert!(reply.ends_with(b":1\r\n+OK\r\n"), "{reply:?}");
    assert!(server.terminate().success());
}

#[test]
fn export_import_export_is_byte_identical_and_tools_refuse_a_running_node() {
    let first = tempfile::tempdir().unwrap();
    stopped_world(first.path());
    let dump = first.path().join("world.jsonl");
    let out = Binary::tool(first.path(), &["export", "-o", dump.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let exported = std::fs::read_to_string(&dump).unwrap();
    assert_eq!(
        exported.lines().count(),
        302,
        "300 keys, 2 odd ones, one a tombstone"
    );
    assert!(exported.contains(r#"{"key":"k/007","tombstone":true"#));
    assert!(exported.contains(r#""value_base64":"/wAK""#));

    let second = tempfile::tempdir().unwrap();
    let out = Binary::tool(second.path(), &["import", dump.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("302 merged"), "{}", stderr(&out));
    let again = Binary::tool(second.path(), &["export"]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(String::from_utf8(again.stdout).unwrap(), exported);

    let only = Binary::tool(second.path(), &["export", "--prefix", "k/01"]);
    assert_eq!(String::from_utf8(only.stdout).unwrap().lines().count(), 10);
    let check = Binary::tool(second.path(), &["check"]);
    let report = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(check.status.success(), "{report}");
    assert!(report.contains("302 (301 live, 1 tombstones"), "{report}");

    // The imported world is one a node starts on.
    let mut server = Binary::server(second.path());
    let reply = raw(&server.endpoint(), &command(&[b"GET", b"bin"]), 9);
    assert_eq!(reply, b"$3\r\n\xFF\x00\x0A\r\n");
    for args in [
        &["check"][..],
        &["export"],
        &["import", dump.to_str().unwrap()],
    ] {
        let out = Binary::tool(second.path(), args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(stderr(&out).contains("is running"), "{}", stderr(&out));
    }
    assert!(server.terminate().success());
}

#[test]
fn a_bad_import_line_imports_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.jsonl");
    // A good line, signed by its writer for the world the tool opens ("cmud"), then a bad one.
    let keypair = libp2p::identity::Keypair::generate_ed25519();
    let signer = cmud::store::sign::Signer::new(&keypair, "cmud").unwrap();
    let version = cmud::store::entry::Version {
        millis: 1,
        counter: 0,
        node: signer.node().clone(),
        actor: 0,
    };
    let entry = cmud::store::entry::Entry::value(version, bytes::Bytes::from_static(b"1"));
    let signed = signer.sign(b"a", &entry);
    let signature = base64_of(signed.signature.as_deref().unwrap());
    let good = format!(
        r#"{{"key":"a","value":"1","tombstone":false,"version":{{"millis":1,"counter":0}},"writer":"{}","actor":0,"signature":"{signature}"}}"#,
        signer.node()
    );
    std::fs::write(&file, format!("{good}\n{{\"key\": 5}}\n")).unwrap();
    let out = Binary::tool(dir.path(), &["import", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("bad.jsonl:2:"), "{}", stderr(&out));
    let export = Binary::tool(dir.path(), &["export"]);
    assert!(export.stdout.is_empty(), "nothing was imported");
}

#[test]
fn a_damaged_database_is_one_clear_message_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    stopped_world(dir.path());
    let db = Binary::world_dir(dir.path()).join("world.redb");
    let whole = std::fs::read(&db).unwrap();
    let damages: [(&str, Vec<u8>); 3] = [
        ("empty", Vec::new()),
        ("truncated", whole[..whole.len() / 2].to_vec()),
        ("overwritten", vec![0x42; whole.len()]),
    ];
    for (kind, bytes) in damages {
        std::fs::write(&db, &bytes).unwrap();
        for out in [
            Binary::run_to_end(dir.path()),
            Binary::tool(dir.path(), &["check"]),
        ] {
            let text = stderr(&out);
            assert_eq!(out.status.code(), Some(1), "{kind}: {text}");
            assert!(text.contains("world.redb is damaged"), "{kind}: {text}");
            assert!(text.contains("cmud import"), "{kind}: {text}");
            assert!(!text.contains("panicked"), "{kind}: {text}");
        }
        assert_eq!(
            std::fs::read(&db).unwrap(),
            bytes,
            "{kind}: the file is left alone"
        );
    }
}

/// Resident memory of process `pid`, in bytes.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("VmRSS");
    kib * 1024
}

/// SETs `key:<12 digits>` (16 bytes) to `abc` for `0..n` over one pipelined connection.
fn load_small_keys(endpoint: &RpcEndpoint, n: u64) {
    const CHUNK: u64 = 10_000;
    let mut stream = raw_connection(endpoint);
    let mut reply = vec![0u8; CHUNK as usize * 5];
    for start in (0..n).step_by(CHUNK as usize) {
        let end = (start + CHUNK).min(n);
        let mut request = Vec::new();
        for k in start..end {
            request.extend(command(&[
                b"SET",
                format!("key:{k:012}").as_bytes(),
                b"abc",
            ]));
        }
        stream.write_all(&request).expect("write");
        let len = (end - start) as usize * 5;
        stream.read_exact(&mut reply[..len]).expect("replies");
    }
}

/// CPU time `pid` has used, in clock ticks (user and system).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    // Fields after the command name (which may hold spaces) start at its closing parenthesis.
    let rest = &stat[stat.rfind(')').expect("stat has a command name") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0)
}

/// Waits until `pid` is done with its backlog (under a tenth of a core over two seconds: the
/// gateway has signed and redb has committed everything) and its resident memory is steady
/// (two readings within 1%), for at most five minutes; returns the resident memory.
fn settled_rss(pid: u32) -> u64 {
    const PERIOD: Duration = Duration::from_secs(2);
    let started = Instant::now();
    let (mut last_rss, mut last_cpu) = (rss_bytes(pid), cpu_ticks(pid));
    loop {
        thread::sleep(PERIOD);
        let (rss, cpu) = (rss_bytes(pid), cpu_ticks(pid));
        // Clock ticks are 100 a second on Linux: 20 ticks in 2 s is a tenth of a core.
        let idle = cpu - last_cpu < 20;
        if (idle && rss.abs_diff(last_rss) * 100 <= last_rss)
            || started.elapsed() > Duration::from_secs(300)
        {
            return rss;
        }
        (last_rss, last_cpu) = (rss, cpu);
    }
}

/// Resident memory of a process before and after a million small keys, and its database.
struct Figures {
    /// RSS with no keys, in bytes.
    empty: u64,
    /// RSS with the keys, settled, in bytes.
    full: u64,
    /// `world.redb` with the keys, after a clean stop (0 for redis-server, which saves
    /// nothing here), in bytes.
    redb: u64,
    /// The disk `world.redb` takes while the node runs with the keys (its allocated blocks),
    /// in bytes.
    redb_running: u64,
}

impl Figures {
    fn per_entry(&self, keys: u64) -> u64 {
        self.full.saturating_sub(self.empty) / keys
    }

    fn show(&self, who: &str, keys: u64) {
        eprintln!(
            "{who}: RSS {} MB empty, {} MB with {keys} keys: {} B per entry; world.redb {} MB",
            self.empty >> 20,
            self.full >> 20,
            self.per_entry(keys),
            self.redb >> 20
        );
    }
}

/// A `--server-only` node with `actors` query actors, loaded with `keys` small keys.
fn cmud_figures(actors: usize, keys: u64) -> Figures {
    let dir = tempfile::tempdir().unwrap();
    let launch = Launch {
        args: vec!["--actors".into(), actors.to_string()],
        ..Launch::without_quota()
    };
    let mut server = Binary::server_with(dir.path(), &launch);
    let empty = settled_rss(server.pid());
    load_small_keys(&server.endpoint(), keys);
    let full = settled_rss(server.pid());
    let db = Binary::world_dir(dir.path()).join("world.redb");
    // redb sets the file's length ahead of what it fills, so the running file is sparse: what
    // it takes of the disk is its allocated blocks, not its length.
    let running = std::fs::metadata(&db).unwrap();
    let redb_running = running.blocks() * 512;
    assert!(server.terminate().success());
    let redb = std::fs::metadata(&db).unwrap().len();
    eprintln!(
        "world.redb: {} MB long while running, {} MB of it on disk",
        running.len() >> 20,
        redb_running >> 20
    );
    Figures {
        empty,
        full,
        redb,
        redb_running,
    }
}

/// redis-server (no persistence) loaded with the same keys, if it is installed.
fn redis_figures(keys: u64) -> Option<Figures> {
    let mut redis = std::process::Command::new("redis-server")
        .args([
            "--port",
            "7479",
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let addr: SocketAddr = "127.0.0.1:7479".parse().unwrap();
    let started = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "redis-server starts"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let empty = settled_rss(redis.id());
    let endpoint = RpcEndpoint {
        addr,
        credentials: None,
    };
    load_small_keys(&endpoint, keys);
    let full = settled_rss(redis.id());
    let _ = redis.kill();
    let _ = redis.wait();
    Some(Figures {
        empty,
        full,
        redb: 0,
        redb_running: 0,
    })
}

/// A million small keys (16-byte keys, 3-byte values, signed) in a 2-actor and a 1-actor
/// node, beside redis-server's figure if it is installed. Run with
/// `cargo test --release --test storage -- --ignored --nocapture memory`; figures in the
/// README. The bounds are the storage issue's targets (550 MB with 2 actors, 400 MB with 1,
/// `world.redb` 220 MB), about 20% above the figures measured (the node took 1,192 and 701 MB
/// before the compact maps).
#[test]
#[ignore = "heavy: a million keys; figures in the README"]
fn memory_per_entry_of_a_million_small_keys() {
    const KEYS: u64 = 1_000_000;
    const MB: u64 = 1 << 20;
    let two = cmud_figures(2, KEYS);
    two.show("cmud (2 actors)", KEYS);
    let one = cmud_figures(1, KEYS);
    one.show("cmud (1 actor)", KEYS);
    if let Some(redis) = redis_figures(KEYS) {
        redis.show("redis-server", KEYS);
    }
    assert!(two.full < 550 * MB, "2 actors: {} MB", two.full / MB);
    assert!(one.full < 400 * MB, "1 actor: {} MB", one.full / MB);
    assert!(two.redb < 220 * MB, "world.redb: {} MB", two.redb / MB);
    assert!(
        two.redb_running < 220 * MB,
        "world.redb while running: {} MB on disk",
        two.redb_running / MB
    );
}

/// Standard base64 with padding, as `cmud export` writes signatures.
fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
