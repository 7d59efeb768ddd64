//! The session's view of the world against real nodes: an idle session does not read the
//! world on a timer, and a change made on another node reaches the player soon after it
//! reaches the player's node.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cmud::rpc::{Kv, KvClient, RpcEndpoint};
use tokio::time::Instant;

use crate::harness::{DEADLINE, NetNode, Player, TestNode, options};
use crate::proxy::Proxy;

/// Keys of padding in the world, so that one read of all of `p/` is large.
const PADDING_KEYS: usize = 2000;

/// Bytes of each padding value.
const PADDING_VALUE_BYTES: usize = 100;

/// How long the session is watched while idle: six looks at the world by the old timer.
const IDLE: Duration = Duration::from_secs(3);

/// Longest a change may take from the player's node to the player here. The design's figure
/// is 500 ms; the rest is room for a loaded CI machine.
const CHANGE_SHOWN_WITHIN: Duration = Duration::from_millis(1500);

#[tokio::test]
async fn an_idle_session_does_not_read_the_world_on_a_timer() {
    let node = TestNode::start().await;
    let id = node.id();
    let value = "x".repeat(PADDING_VALUE_BYTES);
    let padding: Vec<(String, String)> = (0..PADDING_KEYS)
        .map(|n| (format!("p/{id}/pad/{n:05}"), value.clone()))
        .collect();
    for chunk in padding.chunks(500) {
        node.kv.put_many(chunk).await.unwrap();
    }
    let listing_bytes: usize = padding.iter().map(|(k, v)| k.len() + v.len()).sum();
    // The session talks to its node through a proxy that counts what the node sends it.
    let proxy = Proxy::start(node.node.game_endpoint().addr, Duration::ZERO).await;
    let endpoint = RpcEndpoint {
        addr: proxy.addr,
        ..node.node.game_endpoint()
    };
    let kv = KvClient::connect(&endpoint).await.unwrap();
    let (mut player, _) = Player::start(kv, options(Some("idler"), None, 1)).await;
    assert!(
        player
            .run("stats")
            .await
            .contains(&"Name: idler".to_owned())
    );
    assert!(
        proxy.bytes_from_target() as usize > listing_bytes,
        "the session read the world once at the start"
    );
    let before = proxy.bytes_from_target();
    tokio::time::sleep(IDLE).await;
    let idle = (proxy.bytes_from_target() - before) as usize;
    eprintln!("idle session: {idle} bytes from its node in {IDLE:?}; p/ is {listing_bytes} bytes");
    assert!(
        idle < listing_bytes / 2,
        "an idle session read {idle} bytes in {IDLE:?}; all of p/ is {listing_bytes}"
    );
    // The view still has the world: a command that shows every player works.
    let who = player.run("who").await;
    assert_eq!(who.first().map(String::as_str), Some("Online now (1):"));
    player.quit().await;
    node.stop().await;
}

#[tokio::test]
async fn a_change_on_another_node_reaches_the_player_soon_after_it_reaches_the_node() {
    let [a, b] = NetNode::pair().await;
    let (mut alice, _) = Player::start(a.kv.clone(), options(Some("alice"), None, 1)).await;
    let (mut bob, _) = Player::start(b.kv.clone(), options(Some("bob"), None, 2)).await;
    alice
        .wait_for_line(|l| l == "--- bob has joined the world. ---")
        .await;
    // When alice's node first holds bob's shout, seen from another connection to it.
    let reached: Arc<Mutex<Option<Instant>>> = Arc::default();
    let watcher = {
        let kv = KvClient::connect(&a.node.rpc_endpoint()).await.unwrap();
        let reached = reached.clone();
        let chat = format!("p/{}/chat/", b.node.peer_id());
        tokio::spawn(async move {
            loop {
                let lines = kv.list(&chat).await.unwrap();
                if lines.iter().any(|(_, v)| v.ends_with("over here")) {
                    *reached.lock().unwrap() = Some(Instant::now());
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    bob.run("shout over here").await;
    tokio::time::timeout(
        DEADLINE,
        alice.wait_for_line(|l| l == "bob shouts: over here"),
    )
    .await
    .expect("alice never heard bob");
    let shown = Instant::now();
    tokio::time::timeout(DEADLINE, watcher)
        .await
        .expect("the shout never reached alice's node")
        .unwrap();
    let reached = reached.lock().unwrap().expect("set by the watcher");
    let late = shown.saturating_duration_since(reached);
    eprintln!("bob's shout reached alice {late:?} after alice's node");
    assert!(
        late < CHANGE_SHOWN_WITHIN,
        "bob's shout reached alice {late:?} after alice's node held it"
    );
    alice.quit().await;
    bob.quit().await;
    a.stop().await;
    b.stop().await;
}

/// Keys each generated player holds (name, rank, place, hardware, counters, an old
/// heartbeat).
const KEYS_PER_PLAYER: usize = 7;

/// How long each world is watched idle when measuring CPU.
const MEASURED_IDLE: Duration = Duration::from_secs(30);

/// Writes `players` characters (offline for an hour), each signed by a key of its own, as an
/// export file in `dir`, and imports it into the world folder `world_dir`.
fn import_players(dir: &std::path::Path, world_dir: &std::path::Path, players: usize) {
    use cmud::store::entry::{Entry, Version};
    use std::io::Write as _;
    let hour_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        - 3_600_000;
    let path = dir.join("players.jsonl");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    for n in 0..players {
        let keypair = libp2p::identity::Keypair::generate_ed25519();
        let signer = cmud::store::sign::Signer::new(&keypair, "cmud").unwrap();
        let id = signer.node().to_string();
        let fields = [
            ("name", format!("player{n}")),
            ("rank", "Undergraduate".to_owned()),
            ("loc", "fence".to_owned()),
            ("hw/cpu", "3".to_owned()),
            ("mined", "40".to_owned()),
            ("spent", "2".to_owned()),
            ("seen", hour_ago.to_string()),
        ];
        assert_eq!(fields.len(), KEYS_PER_PLAYER);
        for (field, value) in fields {
            let key = format!("p/{id}/{field}");
            let version = Version {
                millis: hour_ago,
                counter: 0,
                node: signer.node().clone(),
                actor: 0,
            };
            let entry = Entry::value(version, bytes::Bytes::from(value));
            let line =
                cmud::admin::ExportLine::new(key.as_bytes(), &signer.sign(key.as_bytes(), &entry));
            serde_json::to_writer(&mut file, &line).unwrap();
            file.write_all(b"\n").unwrap();
        }
    }
    file.flush().unwrap();
    drop(file);
    cmud::admin::import(world_dir, "cmud", &path, &cmud::store::Limits::default()).unwrap();
}

/// CPU time this process has used so far (user + system).
fn process_cpu() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage, and RUSAGE_SELF.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) }, 0);
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// CPU used over [`MEASURED_IDLE`] in a world holding `players` other characters: by its
/// node alone (in this process), then by the node and one idle session on it.
async fn idle_cpu(players: usize) -> (Duration, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let world_dir = dir.path().join("world");
    let started = Instant::now();
    import_players(dir.path(), &world_dir, players);
    eprintln!("{players} players imported in {:?}", started.elapsed());
    let node = TestNode::start_in(dir).await;
    let measure = async || {
        // Let what came before settle (the node's first flushes, the session's first look).
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before = process_cpu();
        tokio::time::sleep(MEASURED_IDLE).await;
        process_cpu() - before
    };
    let alone = measure().await;
    let (mut player, _) = Player::start(node.kv.clone(), options(Some("idler"), None, 1)).await;
    player.run("stats").await;
    assert_eq!(
        player.status.players.len(),
        players + 1,
        "every player is in the view"
    );
    let with_session = measure().await;
    player.quit().await;
    node.stop().await;
    (alone, with_session)
}

/// The figure in the README: `cargo test --release --test game idle_cpu_does_not_grow --
/// --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measures 2 x 30 s of idle CPU and imports 10,000 players"]
async fn idle_cpu_does_not_grow_with_the_world() {
    let small = idle_cpu(10).await;
    let large = idle_cpu(10_000).await;
    let share = |cpu: Duration| cpu.as_secs_f64() / MEASURED_IDLE.as_secs_f64() * 100.0;
    for (players, (alone, with_session)) in [(10, small), (10_000, large)] {
        eprintln!(
            "{players} players, over {MEASURED_IDLE:?} idle: node alone {alone:?} ({:.2}% of a \
             core), node + session {with_session:?} ({:.2}% of a core)",
            share(alone),
            share(with_session)
        );
    }
    let session = |(alone, with_session): (Duration, Duration)| with_session.saturating_sub(alone);
    assert!(
        large.1 < small.1 * 3 / 2 + Duration::from_millis(100),
        "idle CPU grew with the world: {small:?} with 10 players, {large:?} with 10,000 \
         (session's share {:?} and {:?})",
        session(small),
        session(large)
    );
}
