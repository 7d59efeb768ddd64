//! A node back from an absence longer than `tombstone_ttl`, against the real binary: it
//! answers `-LOADING` until it has fetched the world from a peer, never serves a value deleted
//! while it was away, keeps its own namespace, and a lone node serves what it has after a
//! bounded wait.

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use cmud::rpc::{Kv, KvClient, KvError};

use super::common::{Binary, Launch};
use super::raw_conn;
use super::rpc_port::{info, read_reply, wait_until};

/// Tombstones live this long in these tests.
const TTL_SECS: u64 = 2;

/// A node with a short tombstone lifetime, joining `join` if given.
fn node(root: &Path, join: Option<&str>) -> Binary {
    let mut args = Vec::new();
    if let Some(addr) = join {
        args.extend(["--join".to_owned(), addr.to_owned()]);
    }
    Binary::server_with(
        root,
        &Launch {
            config: Some(format!("(tombstone_ttl_secs: {TTL_SECS})")),
            args,
            ..Launch::default()
        },
    )
}

/// One command's reply, flattened.
fn ask(conn: &mut TcpStream, command: &str) -> Vec<String> {
    conn.write_all(format!("{command}\r\n").as_bytes())
        .expect("send");
    read_reply(conn)
}

/// `GET key`: the value, `nil`, or the error line.
fn get(conn: &mut TcpStream, key: &str) -> String {
    ask(conn, &format!("GET {key}")).remove(0)
}

/// Waits until `key` reads `want` on `conn`.
fn wait_for(conn: &mut TcpStream, key: &str, want: &str) {
    wait_until(Duration::from_secs(30), &format!("{key} = {want}"), || {
        get(conn, key) == want
    });
}

/// Waits until the wall clock is `secs` past `since` (what "out of contact" means).
fn wait_past(since: Instant, secs: u64) {
    let until = since + Duration::from_secs(secs) + Duration::from_millis(500);
    while Instant::now() < until {
        thread::sleep(until - Instant::now());
    }
}

#[test]
fn a_node_back_after_the_ttl_serves_no_deleted_value_and_nothing_before_the_world() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = node(a_dir.path(), None);
    let mut on_a = raw_conn(&a.endpoint());
    let a_addr = ask(&mut on_a, "ADDRS").remove(0);
    let mut b = node(b_dir.path(), Some(&a_addr));
    let mut on_b = raw_conn(&b.endpoint());
    let b_id = info(&mut on_b)["peer_id"].clone();
    let own = format!("p/{b_id}/name");

    // b writes in its own namespace and outside it; a writes too; both see everything.
    assert_eq!(ask(&mut on_b, &format!("SET {own} bea")), ["+OK"]);
    assert_eq!(ask(&mut on_b, "SET t/b-wrote old"), ["+OK"]);
    assert_eq!(ask(&mut on_a, "SET t/a-wrote old"), ["+OK"]);
    wait_for(&mut on_a, "t/b-wrote", "old");
    wait_for(&mut on_b, "t/a-wrote", "old");
    wait_for(&mut on_a, &own, "bea");

    // b stops; a deletes both while it is away and forgets the tombstones after the TTL.
    assert!(b.terminate().success());
    let b_stopped = Instant::now();
    let purged_before: u64 = info(&mut on_a)["tombstones_purged"].parse().unwrap();
    assert_eq!(ask(&mut on_a, "DEL t/b-wrote t/a-wrote"), [":2"]);
    assert_eq!(ask(&mut on_a, "SET t/new fresh"), ["+OK"]);
    wait_until(Duration::from_secs(60), "a purges its tombstones", || {
        let purged: u64 = info(&mut on_a)["tombstones_purged"].parse().unwrap();
        purged >= purged_before + 2
    });
    wait_past(b_stopped, TTL_SECS);

    // From its first moment back, b answers LOADING or the world as a has it: never "old".
    let b = node(b_dir.path(), Some(&a_addr));
    let mut on_b = raw_conn(&b.endpoint());
    let mut loading = 0;
    let started = Instant::now();
    loop {
        let replies = [
            get(&mut on_b, "t/b-wrote"),
            get(&mut on_b, "t/a-wrote"),
            get(&mut on_b, "t/new"),
        ];
        assert!(
            !replies.iter().any(|reply| reply == "old"),
            "a deleted value came back: {replies:?}"
        );
        // The port may open between two of the three reads: each read is LOADING or the
        // world as it is now.
        let now = ["nil", "nil", "fresh"];
        for (reply, now) in replies.iter().zip(now) {
            assert!(
                reply.starts_with("-LOADING") || reply == now,
                "served only once synced: {replies:?}"
            );
        }
        if replies.iter().any(|reply| reply.starts_with("-LOADING")) {
            loading += 1;
        } else {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "b never served: {}",
            b.stderr()
        );
        thread::sleep(Duration::from_millis(5));
    }
    assert!(
        loading > 0,
        "the first commands found the node still syncing"
    );
    assert_eq!(get(&mut on_b, &own), "bea", "its own namespace was kept");
    assert_eq!(info(&mut on_b)["loading"], "0");
    assert!(b.stderr().contains("fetched the world from a peer"));

    // Alone this time (a is gone): after the bounded wait it serves its own player.
    drop(a);
    let mut b = b;
    assert!(b.terminate().success());
    let b_stopped = Instant::now();
    wait_past(b_stopped, TTL_SECS);
    let b = node(b_dir.path(), None);
    let mut on_b = raw_conn(&b.endpoint());
    assert!(get(&mut on_b, &own).starts_with("-LOADING"));
    assert_eq!(info(&mut on_b)["loading"], "1");
    assert_eq!(
        ask(&mut on_b, "PING"),
        ["+PONG"],
        "PING is served throughout"
    );
    // The game's client sees a typed "syncing" state, and can wait for the world.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let kv = KvClient::connect(&b.endpoint()).await.unwrap();
        assert!(matches!(kv.get(&own).await, Err(KvError::Loading)));
        let mut told = false;
        kv.wait_for_the_world(|| told = true).await.unwrap();
        assert!(told, "the player was told the world is syncing");
        assert_eq!(kv.get(&own).await.unwrap().as_deref(), Some("bea"));
    });
    assert_eq!(get(&mut on_b, &own), "bea");
    assert_eq!(
        get(&mut on_b, "t/new"),
        "nil",
        "others' entries were dropped"
    );
    assert!(b.stderr().contains("no peer reached"), "{}", b.stderr());
    // A lone node refuses nothing: the player can write.
    assert_eq!(ask(&mut on_b, &format!("SET {own} bee")), ["+OK"]);
}
