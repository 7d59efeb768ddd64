//! A writer at its quota across a restart and a `kill -9`, against the real binary: what its
//! account charges beyond the entries it holds (a key another node overwrote) survives in
//! `world.redb`, so the restarted node refuses the same writes as before, holds exactly what
//! its never-restarted peer admitted of it, and anti-entropy settles with nothing sent again.

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use super::common::{Binary, Launch};
use super::raw_conn;
use super::rpc_port::{info, read_reply, wait_until};

/// The smallest key quota a node accepts in `config.ron`.
const QUOTA_KEYS: u64 = 1_000;

/// Keys per `MSET` (its arguments stay under the 1024-element array limit).
const PAIRS_PER_MSET: usize = 250;

/// Generous: two nodes on a busy 2-core machine.
const SETTLE: Duration = Duration::from_secs(60);

/// A node with the smallest key quota, joining `join` if given.
fn node(root: &Path, join: Option<&str>) -> Binary {
    let mut launch = Launch::config(format!("(max_keys_per_writer: {QUOTA_KEYS})"));
    if let Some(addr) = join {
        launch.args = vec!["--join".to_owned(), addr.to_owned()];
    }
    Binary::server_with(root, &launch)
}

/// Sends one command as a RESP array and reads its reply.
fn ask(conn: &mut TcpStream, args: &[&str]) -> Vec<String> {
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    conn.write_all(request.as_bytes()).expect("send");
    read_reply(conn)
}

fn number(conn: &mut TcpStream, field: &str) -> u64 {
    info(conn)[field].parse().expect("a number")
}

/// The keys under `q/` on this node, in order.
fn q_keys(conn: &mut TcpStream) -> Vec<String> {
    let mut keys = ask(conn, &["KEYS", "q/*"]);
    keys.sort();
    keys
}

/// Fails naming the keys only one of the two nodes holds.
fn assert_same_keys(on_a: &mut TcpStream, on_c: &mut TcpStream) {
    let (a_keys, c_keys) = (q_keys(on_a), q_keys(on_c));
    let only_a: Vec<&String> = a_keys.iter().filter(|k| !c_keys.contains(k)).collect();
    let only_c: Vec<&String> = c_keys.iter().filter(|k| !a_keys.contains(k)).collect();
    assert!(
        only_a.is_empty() && only_c.is_empty(),
        "only on a: {only_a:?}; only on c: {only_c:?}"
    );
}

#[test]
fn a_writer_at_its_quota_restarts_into_the_same_admitted_set_and_sync_settles() {
    let (a_dir, c_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = node(a_dir.path(), None);
    let mut on_a = raw_conn(&a.endpoint());
    let a_addr = ask(&mut on_a, &["ADDRS"]).remove(0);
    let mut c = node(c_dir.path(), Some(&a_addr));
    let mut on_c = raw_conn(&c.endpoint());

    // c writes up to its quota, outside `p/` where a may write too.
    let room = QUOTA_KEYS - number(&mut on_c, "quota_keys");
    let keys: Vec<String> = (0..room).map(|n| format!("q/{n:04}")).collect();
    for chunk in keys.chunks(PAIRS_PER_MSET) {
        let mut args = vec!["MSET"];
        for key in chunk {
            args.extend([key.as_str(), "c"]);
        }
        assert_eq!(ask(&mut on_c, &args), ["+OK"]);
    }
    assert_eq!(number(&mut on_c, "quota_keys"), QUOTA_KEYS);
    wait_until(SETTLE, "a holds c's keys", || {
        q_keys(&mut on_a).len() == keys.len()
    });

    // a overwrites c's first key: c's account still charges it (every replica's does).
    assert_eq!(ask(&mut on_a, &["SET", "q/0000", "a"]), ["+OK"]);
    wait_until(SETTLE, "c reads a's value", || {
        ask(&mut on_c, &["GET", "q/0000"]) == ["a"]
    });
    let refused = ask(&mut on_c, &["SET", "q/new", "c"]).remove(0);
    assert!(refused.starts_with("-ERR quota exceeded"), "{refused}");

    // c restarts: its account still charges the key it no longer holds.
    assert!(c.terminate().success());
    drop(c);
    let check = Binary::tool(c_dir.path(), &["check"]);
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{report}");
    assert!(
        report.contains("quota state: 1 charges kept beyond the entries, 0 writers cut"),
        "{report}"
    );
    let c = node(c_dir.path(), Some(&a_addr));
    let mut on_c = raw_conn(&c.endpoint());
    assert_eq!(
        number(&mut on_c, "quota_keys"),
        QUOTA_KEYS,
        "the restart forgot a charge"
    );
    let refused = ask(&mut on_c, &["SET", "q/new", "c"]).remove(0);
    assert!(
        refused.starts_with("-ERR quota exceeded"),
        "after a restart, c took a key its peer refuses: {refused}"
    );

    // Both hold exactly the same keys, and a few rounds of anti-entropy move nothing.
    wait_until(SETTLE, "c syncs with a", || {
        number(&mut on_c, "syncs_completed") >= 1
    });
    assert_same_keys(&mut on_a, &mut on_c);
    assert_eq!(q_keys(&mut on_a).len(), keys.len());
    let counters = |conn: &mut TcpStream| {
        let info = info(conn);
        let field = |name: &str| info[name].parse::<u64>().expect("a number");
        (
            field("syncs_completed"),
            field("sync_entries_received"),
            field("rejected_quota") + field("evicted_quota"),
        )
    };
    let (a_before, c_before) = (counters(&mut on_a), counters(&mut on_c));
    wait_until(SETTLE, "two more syncs each way", || {
        counters(&mut on_a).0 >= a_before.0 + 2 && counters(&mut on_c).0 >= c_before.0 + 2
    });
    let (a_after, c_after) = (counters(&mut on_a), counters(&mut on_c));
    assert_eq!(
        (a_after.1, a_after.2),
        (a_before.1, a_before.2),
        "a received or refused entries again: {a_before:?} -> {a_after:?}"
    );
    assert_eq!(
        (c_after.1, c_after.2),
        (c_before.1, c_before.2),
        "c received or refused entries again: {c_before:?} -> {c_after:?}"
    );
    assert_same_keys(&mut on_a, &mut on_c);

    // a overwrites another of c's keys and c is killed at once: whether or not its last
    // commit (that entry and the charge it leaves, together) reached the disk, c restarts
    // charging both keys it no longer holds, or holding the entry that charges it.
    assert_eq!(ask(&mut on_a, &["SET", "q/0001", "a"]), ["+OK"]);
    wait_until(SETTLE, "c reads a's second value", || {
        ask(&mut on_c, &["GET", "q/0001"]) == ["a"]
    });
    let mut c = c;
    c.kill_9();
    drop(c);
    let c = node(c_dir.path(), Some(&a_addr));
    let mut on_c = raw_conn(&c.endpoint());
    assert_eq!(number(&mut on_c, "quota_keys"), QUOTA_KEYS);
    let refused = ask(&mut on_c, &["SET", "q/new", "c"]).remove(0);
    assert!(refused.starts_with("-ERR quota exceeded"), "{refused}");
    wait_until(SETTLE, "c reads a's second value again", || {
        ask(&mut on_c, &["GET", "q/0001"]) == ["a"]
    });
    assert_same_keys(&mut on_a, &mut on_c);
    drop(a);
}
