//! Sync at scale with real `cmud --server-only` processes on loopback. Every test here takes
//! minutes (and the first two gigabytes), so all are ignored by default; the commands and the
//! last figures are in the README, section "Sync at scale". Run them in release:
//! `cargo test --release --test sync_scale -- --ignored --nocapture --test-threads 1`.
//!
//! `CMUD_SCALE_KEYS` overrides the world size of the first two (default 1,000,000).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use cmud::rpc::client::parse_info;
use common::{Binary, Launch, eventually};
use rand::seq::IndexedRandom;
use redis::aio::MultiplexedConnection;
use tempfile::TempDir;

/// A `cmud --server-only` process and a connection to its RPC port.
struct Proc {
    /// The process.
    bin: Binary,
    /// A connection to it.
    conn: MultiplexedConnection,
    /// Its folders (deleted with it).
    _dir: TempDir,
}

impl Proc {
    async fn spawn() -> Proc {
        let dir = tempfile::tempdir().expect("tempdir");
        // A million keys of one writer: quotas off.
        let launch = Launch {
            args: vec!["--actors".into(), "1".into()],
            ..Launch::without_quota()
        };
        let bin = Binary::server_with(dir.path(), &launch);
        let conn = connect(&bin).await;
        Proc {
            bin,
            conn,
            _dir: dir,
        }
    }

    async fn info(&self) -> BTreeMap<String, String> {
        let text: String = redis::cmd("INFO")
            .query_async(&mut self.conn.clone())
            .await
            .expect("INFO");
        parse_info(&text)
    }

    async fn info_u64(&self, field: &str) -> u64 {
        self.info()
            .await
            .get(field)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    async fn addr(&self) -> String {
        // ADDRS answers (address, kind) pairs, best first.
        let addrs: Vec<(String, String)> = redis::cmd("ADDRS")
            .query_async(&mut self.conn.clone())
            .await
            .expect("ADDRS");
        addrs.into_iter().next().expect("a listen address").0
    }

    /// Dials `other` (a dial already under way, from discovery, is as good). A node that was
    /// just loaded with a million keys may let a handshake time out: that is retried.
    async fn join(&self, other: &Proc) {
        let addr = other.addr().await;
        for attempt in 1.. {
            let joined: redis::RedisResult<()> = redis::cmd("JOIN")
                .arg(&addr)
                .query_async(&mut self.conn.clone())
                .await;
            match joined {
                Ok(()) => return,
                Err(err) if err.to_string().contains("already dialling") => return,
                Err(err) if err.to_string().contains("Timeout") && attempt < 4 => {
                    println!("JOIN attempt {attempt} timed out: {err}");
                }
                Err(err) => panic!("JOIN {addr}: {err}"),
            }
        }
    }

    async fn dbsize(&self) -> u64 {
        redis::cmd("DBSIZE")
            .query_async(&mut self.conn.clone())
            .await
            .expect("DBSIZE")
    }

    async fn set(&self, key: &str, value: &str) {
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg(value)
            .query_async(&mut self.conn.clone())
            .await
            .expect("SET");
    }

    async fn get(&self, key: &str) -> Option<String> {
        redis::cmd("GET")
            .arg(key)
            .query_async(&mut self.conn.clone())
            .await
            .expect("GET")
    }

    /// Writes `keys` keys of 64-byte values.
    async fn load(&self, keys: u64) {
        let value = "v".repeat(64);
        let mut conn = self.conn.clone();
        for chunk in 0..keys.div_ceil(500) {
            let mut mset = redis::cmd("MSET");
            for i in chunk * 500..((chunk + 1) * 500).min(keys) {
                mset.arg(format!("world/{i:07}")).arg(&value);
            }
            let _: () = mset.query_async(&mut conn).await.expect("MSET");
        }
        eventually(
            Duration::from_secs(120),
            "the world to be loaded",
            async || self.dbsize().await == keys,
        )
        .await;
    }

    /// User plus system CPU time of the process, in clock ticks.
    fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.bin.pid()))
            .expect("/proc/<pid>/stat");
        // Fields after the command name (which is in parentheses): utime is the 12th, stime
        // the 13th.
        let rest = &stat[stat.rfind(')').expect("a command name") + 2..];
        let fields: Vec<&str> = rest.split(' ').collect();
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
    }
}

async fn connect(bin: &Binary) -> MultiplexedConnection {
    let client = redis::Client::open(bin.endpoint().redis_url()).expect("client");
    // A JOIN answers once its dial is done, and a node merging a large world may take more
    // than the redis crate's default 500 ms to answer.
    let config =
        redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(60)));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("connect")
}

fn scale_keys() -> u64 {
    std::env::var("CMUD_SCALE_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100)
}

/// Waits for `joiner` to hold `keys` keys and returns how long it took from `since`.
async fn wait_world(joiner: &Proc, keys: u64, since: Instant) -> Duration {
    eventually(
        Duration::from_secs(300),
        "the world to arrive",
        async || joiner.dbsize().await == keys,
    )
    .await;
    since.elapsed()
}

/// What one bootstrap of `keys` keys measured.
#[derive(Debug)]
struct Bootstrap {
    /// Time for the first new node to receive the world (right after the sender was loaded).
    first: Duration,
    /// Time for the second, while the sender was pinged and wrote.
    second: Duration,
    /// Slowest PING answered by the sender during the second.
    slowest_ping: Duration,
    /// Slowest of the sender's Puts to reach its other peer during the second.
    slowest_put: Duration,
    /// CPU time (user and system) the joiner of the second used, from its start to the end:
    /// steadier than wall-clock time on a shared machine.
    joiner_cpu: Duration,
    /// CPU time the sender used during the second.
    sender_cpu: Duration,
    /// The machine's load average (1 minute) at the end of the second.
    load: String,
}

async fn bootstrap(keys: u64) -> Bootstrap {
    let sender = Proc::spawn().await;
    sender.load(keys).await;
    let peer = Proc::spawn().await;
    let started = Instant::now();
    peer.join(&sender).await;
    let first = wait_world(&peer, keys, started).await;

    let joiner = Proc::spawn().await;
    let done = Arc::new(AtomicU64::new(0));
    let pinger = {
        let mut conn = sender.conn.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            while done.load(Relaxed) == 0 {
                let at = Instant::now();
                let _: String = redis::cmd("PING")
                    .query_async(&mut conn)
                    .await
                    .expect("PING");
                slowest = slowest.max(at.elapsed());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            slowest
        })
    };
    let sender_ticks = sender.cpu_ticks();
    let started = Instant::now();
    joiner.join(&sender).await;
    let mut slowest_put = Duration::ZERO;
    let mut probe = 0;
    while joiner.dbsize().await < keys {
        probe += 1;
        let key = format!("probe/{probe}");
        let at = Instant::now();
        sender.set(&key, "x").await;
        eventually(
            Duration::from_secs(30),
            "a probe to reach the peer",
            async || peer.get(&key).await.is_some(),
        )
        .await;
        slowest_put = slowest_put.max(at.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The probes are part of the world the joiner receives too.
    let second = wait_world(&joiner, keys + probe, started).await;
    let ticks = Duration::from_secs(1) / u32::try_from(clock_ticks_per_second()).unwrap_or(100);
    let joiner_cpu = ticks * u32::try_from(joiner.cpu_ticks()).unwrap_or(u32::MAX);
    let sender_cpu = ticks * u32::try_from(sender.cpu_ticks() - sender_ticks).unwrap_or(u32::MAX);
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|text| text.split(' ').next().unwrap_or("?").to_owned())
        .unwrap_or_default();
    done.store(1, Relaxed);
    let slowest_ping = pinger.await.expect("pinger");
    Bootstrap {
        first,
        second,
        slowest_ping,
        slowest_put,
        joiner_cpu,
        sender_cpu,
        load,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes and gigabytes: run in release with --ignored --nocapture"]
async fn bootstrap_is_linear_and_the_sender_stays_responsive() {
    let keys = scale_keys();
    let small = bootstrap(keys / 10).await;
    println!("{} keys: {small:?}", keys / 10);
    let large = bootstrap(keys).await;
    println!("{keys} keys: {large:?}");
    println!(
        "first bootstraps, right after loading the sender: {:?} and {:?}",
        small.first, large.first
    );
    // The second bootstrap is the figure: the first starts while the sender is still busy
    // persisting the world it was just loaded with.
    let ratio = large.second.as_secs_f64() / small.second.as_secs_f64();
    println!("ratio {ratio:.1}");
    for (size, run) in [(keys / 10, &small), (keys, &large)] {
        println!(
            "{size} keys: joiner {:.2} s of CPU, sender {:.2} s of CPU meanwhile, load {}",
            run.joiner_cpu.as_secs_f64(),
            run.sender_cpu.as_secs_f64(),
            run.load
        );
    }
    assert!(large.second < Duration::from_secs(30), "{large:?}");
    assert!(ratio <= 12.0, "ratio {ratio:.1}");
    assert!(large.slowest_ping < Duration::from_millis(50), "{large:?}");
    assert!(large.slowest_put < Duration::from_millis(500), "{large:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes and gigabytes: run in release with --ignored --nocapture"]
async fn joining_two_peers_downloads_once_and_idle_is_cheap() {
    let keys = scale_keys();
    let a = Proc::spawn().await;
    a.load(keys).await;
    let b = Proc::spawn().await;
    b.join(&a).await;
    wait_world(&b, keys, Instant::now()).await;

    let one = Proc::spawn().await;
    one.join(&a).await;
    wait_world(&one, keys, Instant::now()).await;
    let bytes_one = one.info_u64("sync_bytes_received_remote").await;

    let two = Proc::spawn().await;
    let (ja, jb) = tokio::join!(two.join(&a), two.join(&b));
    let _ = (ja, jb);
    wait_world(&two, keys, Instant::now()).await;
    // Let the second peer's session (which finds nothing) end too.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let bytes_two = two.info_u64("sync_bytes_received_remote").await;
    let ratio = bytes_two as f64 / bytes_one as f64;
    println!("joining one peer: {bytes_one} bytes; two peers: {bytes_two} bytes; ratio {ratio:.3}");

    // Idle: `a` with two peers (b and `one`), after everything settled.
    drop(two);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let ticks = clock_ticks_per_second();
    let before = a.cpu_ticks();
    let window = Duration::from_secs(60);
    tokio::time::sleep(window).await;
    let used = (a.cpu_ticks() - before) as f64 / ticks as f64;
    let share = used / window.as_secs_f64();
    println!(
        "idle with {keys} keys and two peers: {:.2}% of a core over 60 s",
        share * 100.0
    );
    assert!(ratio <= 1.2, "ratio {ratio:.3}");
    assert!(share < 0.02, "{:.2}% of a core", share * 100.0);
}

/// Per-node rates of one world, averaged over its nodes.
#[derive(Debug, Clone, Copy)]
struct Rates {
    /// Batches published per second.
    messages: f64,
    /// Bytes published per second.
    bytes_sent: f64,
    /// Bytes received per second (gossip and sync).
    bytes_received: f64,
}

async fn counters(nodes: &[Proc]) -> Vec<[u64; 3]> {
    let mut all = Vec::new();
    for node in nodes {
        let info = node.info().await;
        let field = |name: &str| info.get(name).and_then(|v| v.parse().ok()).unwrap_or(0);
        all.push([
            field("sync_messages_sent_remote"),
            field("sync_bytes_sent_remote"),
            field("sync_bytes_received_remote"),
        ]);
    }
    all
}

fn rates(before: &[[u64; 3]], after: &[[u64; 3]], window: Duration) -> Rates {
    let mut sums = [0f64; 3];
    for (b, a) in before.iter().zip(after) {
        for i in 0..3 {
            sums[i] += (a[i] - b[i]) as f64;
        }
    }
    let per = |sum: f64| sum / before.len() as f64 / window.as_secs_f64();
    Rates {
        messages: per(sums[0]),
        bytes_sent: per(sums[1]),
        bytes_received: per(sums[2]),
    }
}

/// What one world of `n` processes measured.
#[derive(Debug)]
struct World {
    /// Time until every node was connected to every other.
    discovered: Duration,
    /// Slowest Put to reach every node.
    slowest_put: Duration,
    /// Rates while idle.
    idle: Rates,
    /// Rates under 100 Puts per second spread over the nodes.
    loaded: Rates,
    /// Puts per second actually made during the loaded window.
    puts_per_second: f64,
}

async fn world(n: usize) -> World {
    let mut nodes = Vec::new();
    for _ in 0..n {
        nodes.push(Proc::spawn().await);
    }
    // A random connected graph of average degree 3: a random tree, then n / 2 random edges.
    let started = Instant::now();
    let mut rng = rand::rng();
    let indices: Vec<usize> = (0..n).collect();
    for i in 1..n {
        let to = *indices[..i].choose(&mut rng).expect("an earlier node");
        nodes[i].join(&nodes[to]).await;
    }
    for _ in 0..n / 2 {
        let pair: Vec<_> = indices.choose_multiple(&mut rng, 2).copied().collect();
        nodes[pair[0]].join(&nodes[pair[1]]).await;
    }
    for node in &nodes {
        eventually(
            Duration::from_secs(300),
            "every node to find every other",
            async || node.info_u64("connected_peers").await >= n as u64 - 1,
        )
        .await;
    }
    let discovered = started.elapsed();

    let mut slowest_put = Duration::ZERO;
    for probe in 0..5 {
        let writer = indices.choose(&mut rng).copied().expect("a node");
        let key = format!("probe/{probe}");
        let at = Instant::now();
        nodes[writer].set(&key, "x").await;
        for node in &nodes {
            eventually(
                Duration::from_secs(30),
                "a probe to reach every node",
                async || node.get(&key).await.is_some(),
            )
            .await;
        }
        slowest_put = slowest_put.max(at.elapsed());
    }

    let window = Duration::from_secs(20);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = counters(&nodes).await;
    tokio::time::sleep(window).await;
    let idle = rates(&before, &counters(&nodes).await, window);

    let before = counters(&nodes).await;
    let started = Instant::now();
    let mut put = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    // Puts go out on the tick without waiting for the one before: 30 processes on two cores
    // answer a SET in more than 10 ms at times.
    let mut writes = tokio::task::JoinSet::new();
    while started.elapsed() < window {
        tick.tick().await;
        let mut conn = nodes[put % n].conn.clone();
        let key = format!("load/{put}");
        writes.spawn(async move {
            let _: () = redis::cmd("SET")
                .arg(key)
                .arg("some value of a few dozen bytes")
                .query_async(&mut conn)
                .await
                .expect("SET");
        });
        put += 1;
    }
    while writes.join_next().await.is_some() {}
    let elapsed = started.elapsed();
    let loaded = rates(&before, &counters(&nodes).await, elapsed);
    World {
        discovered,
        slowest_put,
        idle,
        loaded,
        puts_per_second: put as f64 / elapsed.as_secs_f64(),
    }
}

/// Whether `large` is within 1.3 times `small` (plus `slack` for figures near zero).
fn within(large: f64, small: f64, slack: f64) -> bool {
    large <= small * 1.3 + slack
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "30 processes for minutes: run in release with --ignored --nocapture"]
async fn thirty_processes_cost_each_node_what_ten_do() {
    let ten = world(10).await;
    println!("10 nodes: {ten:?}");
    let thirty = world(30).await;
    println!("30 nodes: {thirty:?}");
    println!(
        "every node connected to every other in {:?} (10 nodes) and {:?} (30 nodes)",
        ten.discovered, thirty.discovered
    );
    assert!(thirty.slowest_put < Duration::from_secs(3), "{thirty:?}");
    assert!(thirty.puts_per_second > 90.0, "{thirty:?}");
    for (large, small, slack) in [
        (thirty.idle.messages, ten.idle.messages, 0.1),
        (thirty.idle.bytes_sent, ten.idle.bytes_sent, 100.0),
        (thirty.idle.bytes_received, ten.idle.bytes_received, 100.0),
        (thirty.loaded.messages, ten.loaded.messages, 0.1),
        (thirty.loaded.bytes_sent, ten.loaded.bytes_sent, 100.0),
        (
            thirty.loaded.bytes_received,
            ten.loaded.bytes_received,
            100.0,
        ),
    ] {
        assert!(
            within(large, small, slack),
            "30 nodes {thirty:?} vs 10 nodes {ten:?}"
        );
    }
}
