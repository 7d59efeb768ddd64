//! The replica and its RPC port, end to end: real nodes on loopback, the `redis` crate as a
//! third-party client, raw bytes for what a client would never send, and the `cmud` binary for
//! crashes, signals and the world lock.

mod common;
#[path = "replica/quota_restart.rs"]
mod quota_restart;
#[path = "replica/resync.rs"]
mod resync;
#[path = "replica/rpc_port.rs"]
mod rpc_port;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use cmud::node::{Node, NodeOptions};
use cmud::rpc::RpcEndpoint;
use common::{Binary, eventually};
use redis::aio::MultiplexedConnection;

/// Generous: CI machines are small and busy.
const DEADLINE: Duration = Duration::from_secs(10);

async fn node(actors: usize) -> (Node, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(NodeOptions::local(dir.path().join("cmud"), actors))
        .await
        .expect("node starts");
    (node, dir)
}

/// A client connection. Redis' default reply timeout (500 ms) is too short for a busy CI box.
async fn connect(endpoint: &RpcEndpoint) -> MultiplexedConnection {
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(DEADLINE));
    redis::Client::open(endpoint.redis_url())
        .expect("client")
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("connection")
}

/// A connection pinned to actor `n`.
async fn connect_to_actor(endpoint: &RpcEndpoint, n: usize) -> MultiplexedConnection {
    let mut conn = connect(endpoint).await;
    let () = redis::cmd("ACTOR")
        .arg(n)
        .query_async(&mut conn)
        .await
        .expect("ACTOR n");
    let index: usize = redis::cmd("ACTOR")
        .query_async(&mut conn)
        .await
        .expect("ACTOR");
    assert_eq!(index, n, "the connection moved to the actor it asked for");
    conn
}

async fn info(conn: &mut MultiplexedConnection) -> BTreeMap<String, String> {
    let text: String = redis::cmd("INFO").query_async(conn).await.expect("INFO");
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn field<T: std::str::FromStr>(info: &BTreeMap<String, String>, name: &str) -> T {
    info.get(name)
        .unwrap_or_else(|| panic!("INFO has no {name}: {info:?}"))
        .parse()
        .unwrap_or_else(|_| panic!("INFO {name} is not a number: {info:?}"))
}

async fn get(conn: &mut MultiplexedConnection, key: &str) -> Option<String> {
    redis::cmd("GET")
        .arg(key)
        .query_async(conn)
        .await
        .expect("GET")
}

async fn set(conn: &mut MultiplexedConnection, key: &str, value: &str) {
    let () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async(conn)
        .await
        .expect("SET");
}

/// A fresh raw connection that authenticated.
fn raw_conn(endpoint: &RpcEndpoint) -> TcpStream {
    let stream = common::raw_connection(endpoint);
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    stream
}

/// Writes `request` on a fresh authenticated raw connection and reads until the server closes
/// it or `expect` bytes arrived.
fn raw(endpoint: &RpcEndpoint, request: &[u8], expect: usize) -> Vec<u8> {
    let mut stream = raw_conn(endpoint);
    stream.write_all(request).expect("write");
    let mut reply = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    while reply.len() < expect {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(err) => panic!(
                "reading a reply: {err} (got {:?})",
                String::from_utf8_lossy(&reply)
            ),
        }
    }
    reply
}

/// Sends `request` on a fresh connection, reads until the server closes it, and splits the
/// replies into lines (for error replies, which are one line each).
fn raw_lines(endpoint: &RpcEndpoint, request: &[u8]) -> (String, Vec<String>) {
    let reply = String::from_utf8_lossy(&raw(endpoint, request, usize::MAX)).into_owned();
    let lines = reply.split("\r\n").map(str::to_owned).collect();
    (reply, lines)
}

/// Whether the server closed `stream` (reads end) within the deadline.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_client_speaks_to_the_port() {
    let (node, _dir) = node(2).await;
    let mut conn = connect(&node.rpc_endpoint()).await;

    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG");
    set(&mut conn, "w/alice/loc", "fence").await;
    assert_eq!(
        get(&mut conn, "w/alice/loc").await.as_deref(),
        Some("fence")
    );
    assert_eq!(get(&mut conn, "w/nobody").await, None);

    let () = redis::cmd("MSET")
        .arg(&["w/alice/coins", "3", "w/bob/loc", "gates5", "q/other", "x"])
        .query_async(&mut conn)
        .await
        .unwrap();
    let values: Vec<Option<String>> = redis::cmd("MGET")
        .arg(&["w/alice/coins", "missing", "w/bob/loc"])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(values, [Some("3".into()), None, Some("gates5".into())]);

    let listed: Vec<String> = redis::cmd("LIST")
        .arg("w/")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        listed,
        [
            "w/alice/coins",
            "3",
            "w/alice/loc",
            "fence",
            "w/bob/loc",
            "gates5"
        ],
        "LIST is key, value, ... in key order, and only under the prefix"
    );
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("w/a*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys, ["w/alice/coins", "w/alice/loc"]);
    let err = redis::cmd("KEYS")
        .arg("w/*/loc")
        .query_async::<Vec<String>>(&mut conn)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("prefix"), "{err}");

    let size: u64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
    assert_eq!(size, 4);
    let deleted: u64 = redis::cmd("DEL")
        .arg(&["w/bob/loc", "missing"])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(deleted, 1, "only live keys count as deleted");
    assert_eq!(get(&mut conn, "w/bob/loc").await, None);
    let size: u64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
    assert_eq!(size, 3, "a tombstone is not a key");

    // What real clients send on connect keeps them happy.
    let () = redis::cmd("CLIENT")
        .arg(&["SETNAME", "test"])
        .query_async(&mut conn)
        .await
        .unwrap();
    let config: Vec<String> = redis::cmd("CONFIG")
        .arg(&["GET", "save"])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(config.is_empty());
    let hello = redis::cmd("HELLO")
        .arg(3)
        .query_async::<redis::Value>(&mut conn)
        .await;
    assert!(hello.is_err(), "HELLO is refused so clients stay on RESP2");

    let fields = info(&mut conn).await;
    for name in [
        "peer_id",
        "actors",
        "rpc_port",
        "keys",
        "puts_total",
        "sync_messages_sent_local",
        "sync_bytes_sent_local",
        "max_sync_rate_per_pair",
        "rejected_versions",
        "connected_peers",
        "sync_bytes_sent_remote",
        "sync_bytes_received_remote",
    ] {
        assert!(fields.contains_key(name), "INFO lacks {name}: {fields:?}");
    }
    assert_eq!(field::<usize>(&fields, "actors"), 2);
    assert_eq!(
        field::<u16>(&fields, "rpc_port"),
        node.rpc_endpoint().addr.port()
    );
    assert_eq!(fields["peer_id"], node.peer_id());
    assert_eq!(field::<u64>(&fields, "keys"), 3);
    assert_eq!(
        field::<u64>(&fields, "puts_total"),
        5,
        "SET, MSET of 3, one DEL"
    );
    assert_eq!(field::<u64>(&fields, "connected_peers"), 0);

    drop(conn);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_commands_work_like_redis_cli() {
    let (node, _dir) = node(1).await;
    let reply = raw(&node.rpc_endpoint(), b"PING\r\n", 7);
    assert_eq!(reply, b"+PONG\r\n");
    let reply = raw(
        &node.rpc_endpoint(),
        b"SET \"two words\" \"it's\"\r\nGET \"two words\"\nQUIT\r\n",
        usize::MAX,
    );
    assert_eq!(
        String::from_utf8_lossy(&reply),
        "+OK\r\n$4\r\nit's\r\n+OK\r\n"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_commands_all_get_replies_in_order() {
    let (node, _dir) = node(2).await;
    let mut request = Vec::new();
    for i in 0..2000 {
        let key = format!("k{i}");
        let value = format!("v{i}");
        write!(
            request,
            "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n{value}\r\n*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n",
            key.len(),
            value.len(),
            key.len()
        )
        .unwrap();
    }
    // A move to another actor in the middle of a pipeline keeps the rest of the pipeline.
    request.extend_from_slice(b"ACTOR 1\r\nACTOR\r\nGET k1999\r\nQUIT\r\n");
    let reply = raw(&node.rpc_endpoint(), &request, usize::MAX);
    let mut expected = String::new();
    for i in 0..2000 {
        let value = format!("v{i}");
        expected.push_str(&format!("+OK\r\n${}\r\n{value}\r\n", value.len()));
    }
    expected.push_str("+OK\r\n:1\r\n");
    let head = String::from_utf8_lossy(&reply);
    assert!(
        head.starts_with(&expected),
        "replies out of order or missing"
    );
    let tail = &head[expected.len()..];
    // Actor 1 sees actor 0's write once local sync has run; either answer is in order.
    assert!(
        tail == "$5\r\nv1999\r\n+OK\r\n" || tail == "$-1\r\n+OK\r\n",
        "unexpected tail {tail:?}"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_errors_and_never_hurts_the_node() {
    let (node, _dir) = node(2).await;
    let addr = &node.rpc_endpoint();

    // Unknown command and wrong arity: an error, and the connection stays.
    let (reply, lines) = raw_lines(addr, b"FLY me\r\nGET\r\nSET a\r\nPING\r\nQUIT\r\n");
    assert!(lines[0].starts_with("-ERR unknown command"), "{reply}");
    assert!(
        lines[1].starts_with("-ERR wrong number of arguments"),
        "{reply}"
    );
    assert!(
        lines[2].starts_with("-ERR wrong number of arguments"),
        "{reply}"
    );
    assert_eq!(lines[3], "+PONG", "{reply}");

    // Over the limits: an error before anything is allocated. A huge declared length must not
    // make the server wait for (or reserve) a gigabyte.
    for request in [
        &b"*2000\r\n"[..],
        b"*2\r\n$3\r\nGET\r\n$1073741824\r\n",
        b"*1\r\n$-3\r\n",
        b"SET \"unbalanced\r\n",
        b"*2\r\n$3\r\nGET\r\n$x\r\n",
        b"*1\r\n+PING\r\n",
    ] {
        let mut stream = raw_conn(addr);
        stream.write_all(request).unwrap();
        let mut first = [0u8; 5];
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        stream.read_exact(&mut first).unwrap_or_else(|err| {
            panic!(
                "no error reply to {:?}: {err}",
                String::from_utf8_lossy(request)
            )
        });
        assert_eq!(&first, b"-ERR ", "{:?}", String::from_utf8_lossy(request));
        assert!(
            closed_by_server(&mut stream),
            "malformed RESP closes the connection: {:?}",
            String::from_utf8_lossy(request)
        );
    }

    // Key and value limits: an error, the connection stays, nothing is written.
    let mut conn = connect(addr).await;
    let long_key = "k".repeat(1025);
    let err = redis::cmd("SET")
        .arg(&long_key)
        .arg("v")
        .query_async::<()>(&mut conn)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("key is longer"), "{err}");
    let big_value = vec![b'v'; 32 * 1024 + 1];
    let err = redis::cmd("SET")
        .arg("k")
        .arg(&big_value)
        .query_async::<()>(&mut conn)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("longer"), "{err}");
    let err = redis::cmd("MSET")
        .arg(&["ok", "fine"])
        .arg("k")
        .arg(&big_value)
        .query_async::<()>(&mut conn)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("longer"), "{err}");
    assert_eq!(get(&mut conn, "ok").await, None, "MSET is all or nothing");
    let at_limit = vec![b'v'; 32 * 1024];
    let () = redis::cmd("SET")
        .arg("k".repeat(1024))
        .arg(&at_limit)
        .query_async(&mut conn)
        .await
        .unwrap();

    // Garbage from many connections at once: every one gets an answer or a close, and the
    // node still serves.
    let mut rng_state = 0x2545_f491_4f6c_dd1du64;
    let mut garbage = || {
        (0..4096)
            .map(|_| {
                rng_state ^= rng_state << 13;
                rng_state ^= rng_state >> 7;
                rng_state ^= rng_state << 17;
                // Mostly protocol characters, so the parser goes deep.
                b"*$\r\n0123456789-+:ab \"'"[(rng_state % 22) as usize]
            })
            .collect::<Vec<u8>>()
    };
    let inputs: Vec<Vec<u8>> = (0..50).map(|_| garbage()).collect();
    let handles: Vec<_> = inputs
        .into_iter()
        .map(|input| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut stream = raw_conn(&addr);
                let _ = stream.write_all(&input);
                let _ = stream.shutdown(std::net::Shutdown::Write);
                closed_by_server(&mut stream)
            })
        })
        .collect();
    for handle in handles {
        assert!(
            handle.join().unwrap(),
            "a garbage connection was left hanging"
        );
    }
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
    assert_eq!(pong, "PONG");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_on_one_actor_reaches_every_other_actor_within_500_ms() {
    let actors = 4;
    let (node, _dir) = node(actors).await;
    let mut conns = Vec::new();
    for n in 0..actors {
        conns.push(connect_to_actor(&node.rpc_endpoint(), n).await);
    }
    let mut slowest = Duration::ZERO;
    for round in 0..8 {
        let writer = round % actors;
        let key = format!("visible/{round}");
        set(&mut conns[writer], &key, "yes").await;
        let written = Instant::now();
        for (reader, conn) in conns.iter_mut().enumerate() {
            while get(conn, &key).await.is_none() {
                assert!(
                    written.elapsed() < Duration::from_millis(500),
                    "actor {reader} did not see actor {writer}'s put within 500 ms"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        slowest = slowest.max(written.elapsed());
    }
    println!("slowest local visibility over 8 rounds: {slowest:?}");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_sync_is_rate_limited_quiet_when_idle_and_never_resends() {
    let actors = 4;
    let (node, _dir) = node(actors).await;
    let mut writer = connect_to_actor(&node.rpc_endpoint(), 0).await;
    let mut busy = Vec::new();
    for n in 0..actors {
        busy.push(connect_to_actor(&node.rpc_endpoint(), n).await);
    }

    // Hammer every actor for two seconds: rates per pair stay at or below 10 per second.
    let until = Instant::now() + Duration::from_secs(2);
    let mut i = 0u64;
    while Instant::now() < until {
        for (n, conn) in busy.iter_mut().enumerate() {
            set(conn, &format!("hammer/{n}/{}", i % 100), &i.to_string()).await;
        }
        i += 1;
    }
    let fields = info(&mut writer).await;
    let rate: f64 = field(&fields, "max_sync_rate_per_pair");
    assert!(rate <= 10.0, "max_sync_rate_per_pair {rate} > 10");
    assert!(
        field::<u64>(&fields, "sync_messages_sent_local") > 0,
        "sync ran at all"
    );

    // Nothing changes: nothing is sent.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before: u64 = field(&info(&mut writer).await, "sync_messages_sent_local");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after: u64 = field(&info(&mut writer).await, "sync_messages_sent_local");
    assert_eq!(before, after, "sync messages sent while nothing changed");

    // The cost of a round of one Put, before and after 1000 unrelated Puts.
    async fn round_bytes(writer: &mut MultiplexedConnection, key: &str) -> u64 {
        let before: u64 = field(&info(writer).await, "sync_bytes_sent_local");
        set(writer, key, "same-size").await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        let after: u64 = field(&info(writer).await, "sync_bytes_sent_local");
        after - before
    }
    let first = round_bytes(&mut writer, "round/a").await;
    assert!(first > 0, "a put was synced");
    for n in 0..1000 {
        set(&mut writer, &format!("unrelated/{n:04}"), "some value").await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let second = round_bytes(&mut writer, "round/b").await;
    assert!(
        second <= 2 * first,
        "a round after 1000 puts cost {second} bytes, the one before {first}: the store is resent"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_put_costs_one_message_to_each_other_participant() {
    let actors = 4;
    let (node, _dir) = node(actors).await;
    let mut conns = Vec::new();
    for n in 0..actors {
        conns.push(connect_to_actor(&node.rpc_endpoint(), n).await);
    }
    let sent_by_actor_0 = || -> Vec<u64> {
        node.stats().senders[0]
            .messages_to
            .iter()
            .map(|count| count.load(std::sync::atomic::Ordering::Relaxed))
            .collect()
    };
    let before = sent_by_actor_0();
    set(&mut conns[0], "chat/line", "hello").await;
    for conn in &mut conns[1..] {
        eventually(DEADLINE, "every actor sees the line", async || {
            get(conn, "chat/line").await.is_some()
        })
        .await;
    }
    // A second message for the same Put would follow within a period or two.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent: Vec<u64> = sent_by_actor_0()
        .iter()
        .zip(&before)
        .map(|(after, before)| after - before)
        .collect();
    // Actors 1-3 and the gateway (participant 4) got one message each; nobody else any.
    assert_eq!(sent, vec![0, 1, 1, 1, 1]);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_writer_wins_across_actors_and_a_re_put_wins_again() {
    let actors = 3;
    let (node, _dir) = node(actors).await;
    let mut a = connect_to_actor(&node.rpc_endpoint(), 0).await;
    let mut b = connect_to_actor(&node.rpc_endpoint(), 1).await;
    let mut c = connect_to_actor(&node.rpc_endpoint(), 2).await;

    async fn everyone_sees(conns: [&mut MultiplexedConnection; 3], value: &str) {
        for conn in conns {
            eventually(DEADLINE, &format!("everyone sees {value}"), async || {
                get(conn, "sandwich").await.as_deref() == Some(value)
            })
            .await;
        }
    }

    set(&mut a, "sandwich", "cheese").await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    set(&mut b, "sandwich", "mustard").await;
    everyone_sees([&mut a, &mut b, &mut c], "mustard").await;

    tokio::time::sleep(Duration::from_millis(10)).await;
    set(&mut a, "sandwich", "cheese").await;
    everyone_sees([&mut a, &mut b, &mut c], "cheese").await;
    // And it stays: nothing flaps back once synced.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for conn in [&mut a, &mut b, &mut c] {
        assert_eq!(get(conn, "sandwich").await.as_deref(), Some("cheese"));
    }
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_has_its_world_and_newer_writes_still_win() {
    let dir = tempfile::tempdir().unwrap();
    let world = dir.path().join("cmud");
    let node = Node::start(NodeOptions::local(&world, 2)).await.unwrap();
    let peer_id = node.peer_id().to_owned();
    let mut conn = connect(&node.rpc_endpoint()).await;
    for n in 0..500 {
        set(&mut conn, &format!("k/{n:03}"), &n.to_string()).await;
    }
    let () = redis::cmd("DEL")
        .arg("k/007")
        .query_async(&mut conn)
        .await
        .unwrap();
    drop(conn);
    node.shutdown().await;

    let node = Node::start(NodeOptions::local(&world, 3)).await.unwrap();
    assert_eq!(node.peer_id(), peer_id, "the identity is kept");
    // Every actor loaded the world before serving.
    for n in 0..3 {
        let mut conn = connect_to_actor(&node.rpc_endpoint(), n).await;
        let size: u64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
        assert_eq!(size, 499, "actor {n}");
        assert_eq!(get(&mut conn, "k/123").await.as_deref(), Some("123"));
        assert_eq!(
            get(&mut conn, "k/007").await,
            None,
            "the tombstone survived"
        );
    }
    // The clock was seeded from the stored versions: a write now beats the old one everywhere.
    let mut conn = connect_to_actor(&node.rpc_endpoint(), 1).await;
    set(&mut conn, "k/123", "new").await;
    for n in 0..3 {
        let mut other = connect_to_actor(&node.rpc_endpoint(), n).await;
        eventually(DEADLINE, "the new write wins", async || {
            get(&mut other, "k/123").await.as_deref() == Some("new")
        })
        .await;
    }
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_under_another_nodes_namespace_are_refused_whole() {
    let (node, _dir) = node(2).await;
    let own = format!("p/{}/", node.peer_id());
    let other = "p/12D3KooWSomebodyElse/";
    let mut conn = connect(&node.rpc_endpoint()).await;
    let refusal = format!(
        "p/12D3KooWSomebodyElse/ belongs to another node: this node writes only under {own}"
    );
    let err = redis::cmd("SET")
        .arg(format!("{other}name"))
        .arg("mallory")
        .query_async::<()>(&mut conn)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("ERR"));
    assert_eq!(err.detail(), Some(refusal.as_str()));
    // MSET is all or nothing: the pair in our own namespace is not written either.
    let err = redis::cmd("MSET")
        .arg(format!("{own}name"))
        .arg("alice")
        .arg(format!("{other}mined"))
        .arg("1000000")
        .query_async::<()>(&mut conn)
        .await
        .unwrap_err();
    assert_eq!(err.detail(), Some(refusal.as_str()));
    assert_eq!(get(&mut conn, &format!("{own}name")).await, None);
    let err = redis::cmd("DEL")
        .arg("p/")
        .query_async::<i64>(&mut conn)
        .await
        .unwrap_err();
    assert!(
        err.detail().unwrap().contains("belongs to another node"),
        "{err}"
    );
    // Our own namespace and keys outside `p/` are open.
    set(&mut conn, &format!("{own}name"), "alice").await;
    set(&mut conn, "anything/else", "1").await;
    assert_eq!(
        get(&mut conn, &format!("{own}name")).await.as_deref(),
        Some("alice")
    );
    // The game's client gets the refusal typed.
    let kv = cmud::rpc::KvClient::connect(&node.rpc_endpoint())
        .await
        .unwrap();
    let refused = cmud::rpc::Kv::put(&kv, &format!("{other}name"), "x").await;
    assert!(
        matches!(refused, Err(cmud::rpc::KvError::ForeignNamespace(ref why)) if *why == refusal),
        "{refused:?}"
    );
    node.shutdown().await;
}

/// Sets `prefix<n>` for each n of `count`, one SET each, and returns the replies.
async fn set_each(
    mut conn: MultiplexedConnection,
    prefix: &str,
    count: usize,
) -> Vec<Result<(), String>> {
    let mut replies = Vec::new();
    for n in 0..count {
        let reply = redis::cmd("SET")
            .arg(format!("{prefix}{n:03}"))
            .arg("v")
            .query_async::<()>(&mut conn)
            .await;
        replies.push(reply.map_err(|err| err.detail().unwrap_or_default().to_owned()));
    }
    replies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_writes_past_the_quota_are_refused_and_acknowledged_ones_stay() {
    const QUOTA: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    let world = dir.path().join("cmud");
    let mut options = NodeOptions::local(&world, 2);
    options.limits.max_keys_per_writer = QUOTA as u64;
    let node = Node::start(options.clone()).await.unwrap();
    // Two actors accept new keys at once: together they acknowledge exactly the quota.
    let (a, b) = tokio::join!(
        set_each(connect_to_actor(&node.rpc_endpoint(), 0).await, "a/", 80),
        set_each(connect_to_actor(&node.rpc_endpoint(), 1).await, "b/", 80),
    );
    let acknowledged: Vec<String> = a
        .iter()
        .enumerate()
        .filter(|(_, reply)| reply.is_ok())
        .map(|(n, _)| format!("a/{n:03}"))
        .chain(
            b.iter()
                .enumerate()
                .filter(|(_, reply)| reply.is_ok())
                .map(|(n, _)| format!("b/{n:03}")),
        )
        .collect();
    assert_eq!(acknowledged.len(), QUOTA);
    let refusal = a
        .iter()
        .chain(&b)
        .find_map(|reply| reply.clone().err())
        .unwrap();
    assert!(
        refusal.starts_with("quota exceeded: this node's writes may have at most 100 keys"),
        "{refusal}"
    );
    let mut conn = connect(&node.rpc_endpoint()).await;
    assert_eq!(info(&mut conn).await["quota_keys"], QUOTA.to_string());
    // An acknowledged key may be written again; a command with a new key is refused whole.
    set(&mut conn, &acknowledged[0], "again").await;
    let err = redis::cmd("MSET")
        .arg(&acknowledged[1])
        .arg("changed")
        .arg("new/key")
        .arg("v")
        .query_async::<()>(&mut conn)
        .await
        .unwrap_err();
    assert!(
        err.detail().unwrap().starts_with("quota exceeded:"),
        "{err}"
    );
    assert_eq!(get(&mut conn, &acknowledged[1]).await.as_deref(), Some("v"));
    // The game's client gets the refusal typed; deleting a key does not free it at once.
    let kv = cmud::rpc::KvClient::connect(&node.rpc_endpoint())
        .await
        .unwrap();
    let refused = cmud::rpc::Kv::put(&kv, "new/key", "x").await;
    assert!(
        matches!(refused, Err(cmud::rpc::KvError::OverQuota(ref why)) if why.starts_with("quota exceeded:")),
        "{refused:?}"
    );
    // Nothing acknowledged is evicted: every actor holds every acknowledged key.
    for n in 0..2 {
        let mut actor = connect_to_actor(&node.rpc_endpoint(), n).await;
        eventually(
            DEADLINE,
            "every acknowledged write on every actor",
            async || {
                let size: u64 = redis::cmd("DBSIZE").query_async(&mut actor).await.unwrap();
                size == QUOTA as u64
            },
        )
        .await;
        assert_eq!(
            get(&mut actor, &acknowledged[0]).await.as_deref(),
            Some("again")
        );
    }
    let deleted: i64 = redis::cmd("DEL")
        .arg(&acknowledged[2])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    assert!(cmud::rpc::Kv::put(&kv, "new/key", "x").await.is_err());
    drop((conn, kv));
    node.shutdown().await;
    // After a restart the account is rebuilt from what is held (the tombstone counts).
    let node = Node::start(options).await.unwrap();
    let mut conn = connect(&node.rpc_endpoint()).await;
    assert_eq!(info(&mut conn).await["quota_keys"], QUOTA.to_string());
    let err = redis::cmd("SET")
        .arg("new/key")
        .arg("v")
        .query_async::<()>(&mut conn)
        .await
        .unwrap_err();
    assert!(
        err.detail().unwrap().starts_with("quota exceeded:"),
        "{err}"
    );
    drop(conn);
    node.shutdown().await;
}

#[test]
fn kill_9_loses_nothing_acknowledged_250_ms_earlier() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Binary::server(dir.path());
    let addr = &server.endpoint();
    // A first write, so the persist actor has just committed when the real ones arrive: they
    // must make it to disk on the next commit, not on some later one.
    assert_eq!(
        raw(addr, b"SET warm up\r\nQUIT\r\n", usize::MAX),
        b"+OK\r\n+OK\r\n"
    );
    std::thread::sleep(Duration::from_millis(150));
    let mut request = Vec::new();
    for n in 0..2000 {
        write!(request, "SET durable/{n:04} value-{n}\r\n").unwrap();
    }
    let reply = raw(addr, &request, 2000 * 5);
    assert_eq!(reply.len(), 2000 * 5, "every SET acknowledged");
    std::thread::sleep(Duration::from_millis(250));
    server.kill_9();

    let server = Binary::server(dir.path());
    let reply = raw(
        &server.endpoint(),
        b"DBSIZE\r\nGET durable/1999\r\nQUIT\r\n",
        usize::MAX,
    );
    assert_eq!(
        String::from_utf8_lossy(&reply),
        ":2001\r\n$10\r\nvalue-1999\r\n+OK\r\n",
        "writes acknowledged 250 ms before the kill are lost"
    );
}

#[test]
fn sigterm_flushes_and_a_second_cmud_on_the_same_world_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Binary::server(dir.path());

    let second = Binary::run_to_end(dir.path());
    assert!(!second.status.success(), "the second cmud must not start");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("another cmud is already running"),
        "unclear message: {stderr}"
    );

    // Written and at once asked to stop: the shutdown persists it.
    let reply = raw(
        &server.endpoint(),
        b"SET last words\r\nQUIT\r\n",
        usize::MAX,
    );
    assert_eq!(reply, b"+OK\r\n+OK\r\n");
    assert!(server.terminate().success(), "SIGTERM is a clean exit");

    let server = Binary::server(dir.path());
    let reply = raw(&server.endpoint(), b"GET last\r\nQUIT\r\n", usize::MAX);
    assert_eq!(reply, b"$5\r\nwords\r\n+OK\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_limits_are_the_ones_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = NodeOptions::local(dir.path().join("cmud"), 1);
    options.limits.max_key_bytes = 8;
    options.limits.max_value_bytes = 16;
    options.limits.max_args = 5;
    let node = Node::start(options).await.unwrap();
    let addr = &node.rpc_endpoint();
    let (reply, lines) = raw_lines(
        addr,
        b"SET key567890 v\r\nSET k 0123456789abcdefX\r\nSET k 0123456789abcdef\r\nMSET a 1 b 2 c 3\r\nGET k\r\nQUIT\r\n",
    );
    assert!(lines[0].contains("key is longer than 8 bytes"), "{reply}");
    assert!(
        lines[1].contains("value is longer than 16 bytes"),
        "{reply}"
    );
    assert_eq!(lines[2], "+OK", "{reply}");
    // Seven arguments are over max_args: a protocol error that closes the connection.
    assert!(lines[3].starts_with("-ERR Protocol error"), "{reply}");
    assert_eq!(lines.len(), 5, "nothing after the protocol error: {reply}");
    node.shutdown().await;
}
