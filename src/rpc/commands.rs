//! The RPC command set: one function per command family, each parsing its arguments from the
//! frame, applying them to the actor's replica and writing the reply.
//!
//! Owns what commands mean; framing is `resp`'s, the connection loop is `server`'s. Commands
//! that need the network return a [`Flow`] the connection loop awaits, so the replica is
//! never borrowed across an `.await`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use bytes::Bytes;

use super::clients::ClientHandle;
use super::gate;
use super::listing::{self, Admission, Listing, admit};
use super::output::Output;
use super::pubsub;
use super::resp::{Reply, array_header_bytes, bulk_reply_bytes};
use super::server::NodeInfo;
use crate::store::actor::Actor;
use crate::store::clock::wall_millis;
use crate::store::quota::OwnWrite;
use crate::store::validate::{Limits, Rejected, check_local_key, namespace_owner};

/// What the connection loop does after a command.
#[derive(Debug)]
pub enum Flow {
    /// Go on with the next command.
    Continue,
    /// Send what is buffered and close (`QUIT`).
    Quit,
    /// Send what is buffered and move the connection to this actor (`ACTOR n`).
    MoveTo(usize),
    /// Ask the network and write the answer (`PEERS`, `JOIN`).
    Network(NetworkCommand),
    /// Nothing was written: run the same command again in a moment (a large reply waits for
    /// closed clients to free their output).
    Retry,
    /// Build this listing a slice at a time, serving the actor's other connections between
    /// slices.
    Listing(Box<Listing>),
}

/// Commands answered by the network task.
#[derive(Debug, PartialEq, Eq)]
pub enum NetworkCommand {
    /// List connected peers.
    Peers,
    /// Dial this multiaddr.
    Join(String),
}

/// Runs one command for `client`, appending its reply to `out`.
pub fn execute(
    actor: &Actor,
    node: &NodeInfo,
    client: &ClientHandle,
    args: &[Bytes],
    out: &mut Output,
) -> Flow {
    let mut reply = Reply(out);
    let Some(name) = args.first() else {
        // A blank inline line: Redis ignores it too.
        return Flow::Continue;
    };
    // Upper-cased on the stack: this runs for every command. Names longer than any command
    // are unknown whatever their case.
    let mut upper_buf = [0u8; 16];
    let upper: &[u8] = match upper_buf.get_mut(..name.len()) {
        Some(upper) => {
            upper.copy_from_slice(name);
            upper.make_ascii_uppercase();
            upper
        }
        None => b"",
    };
    let argc = args.len();
    let arity_ok = match upper {
        b"PING" => argc <= 2,
        b"ECHO" | b"GET" | b"KEYS" | b"JOIN" | b"HELLO" | b"SELECT" => {
            argc == 2 || (upper == b"HELLO".as_slice() && argc >= 1)
        }
        b"SET" => argc == 3,
        b"DEL" | b"MGET" | b"EXISTS" | b"CLIENT" | b"LIST" => argc >= 2,
        b"MSET" => argc >= 3 && argc % 2 == 1,
        b"DBSIZE" | b"ADDRS" | b"PEERS" | b"QUIT" => argc == 1,
        b"INFO" | b"ACTOR" => argc <= 2,
        b"COMMAND" => true,
        b"CONFIG" => argc >= 2,
        _ => {
            let shown = String::from_utf8_lossy(name);
            reply.error(&format!("ERR unknown command '{}'", truncate(&shown, 64)));
            return Flow::Continue;
        }
    };
    if !arity_ok {
        let shown = String::from_utf8_lossy(upper).to_lowercase();
        reply.error(&format!(
            "ERR wrong number of arguments for '{shown}' command"
        ));
        return Flow::Continue;
    }
    if !node.gate.is_open() && gate::is_data_command(upper) {
        reply.error(gate::LOADING_REPLY);
        return Flow::Continue;
    }
    match upper {
        b"PING" => match args.get(1) {
            Some(message) => reply.bulk(message),
            None => reply.simple("PONG"),
        },
        b"ECHO" => reply.bulk(&args[1]),
        b"GET" => get(actor, &args[1], &mut reply),
        b"MGET" => return mget(actor, node, client, &args[1..], &mut reply),
        b"EXISTS" => {
            let replica = actor.replica();
            let found = args[1..]
                .iter()
                .filter(|key| replica.get(key).is_some())
                .count();
            reply.integer(found as i64);
        }
        b"SET" | b"MSET" => set(actor, &args[1..], &mut reply),
        b"DEL" => del(actor, &args[1..], &mut reply),
        b"LIST" => return listing::list(node, &args[1..], &mut reply),
        b"KEYS" => return listing::keys(actor, &args[1], &mut reply),
        b"DBSIZE" => reply.integer(actor.replica().live_keys() as i64),
        b"INFO" => reply.bulk(info(actor, node).as_bytes()),
        b"ACTOR" => return pin_actor(actor, args.get(1), &mut reply),
        b"ADDRS" => {
            // Best first, each as [address, kind]: internet, relay or lan.
            let addrs = node.labelled_addrs();
            reply.array(addrs.len());
            for shared in addrs {
                reply.array(2);
                reply.bulk(shared.addr.as_bytes());
                reply.bulk(shared.kind.as_str().as_bytes());
            }
        }
        b"PEERS" => return Flow::Network(NetworkCommand::Peers),
        b"JOIN" => match std::str::from_utf8(&args[1]) {
            Ok(addr) => return Flow::Network(NetworkCommand::Join(addr.to_owned())),
            Err(_) => reply.error("ERR multiaddr is not text"),
        },
        b"QUIT" => {
            reply.ok();
            return Flow::Quit;
        }
        b"SELECT" => match &args[1][..] {
            b"0" => reply.ok(),
            _ => reply.error("ERR cmud has one database: only SELECT 0 is supported"),
        },
        b"COMMAND" => reply.array(0),
        b"CLIENT" => client_command(&args[1..], &mut reply),
        b"CONFIG" => match args[1].to_ascii_uppercase().as_slice() {
            b"GET" => reply.array(0),
            _ => reply.error("ERR CONFIG: only GET is supported, and it returns nothing"),
        },
        // Refusing HELLO keeps clients on RESP2, the only protocol this port speaks.
        b"HELLO" => reply.error("NOPROTO this server speaks RESP2 only"),
        _ => unreachable!("arity table and dispatch name the same commands"),
    }
    Flow::Continue
}

fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

fn get(actor: &Actor, key: &[u8], reply: &mut Reply<'_>) {
    match actor.replica().get_stored(key) {
        Some(value) => reply.value(value),
        None => reply.null(),
    }
}

/// `MGET k [k ...]`: sized first, as a thousand large values make a large reply.
fn mget(
    actor: &Actor,
    node: &NodeInfo,
    client: &ClientHandle,
    keys: &[Bytes],
    reply: &mut Reply<'_>,
) -> Flow {
    let bytes = {
        let replica = actor.replica();
        keys.iter()
            .map(|key| {
                replica
                    .get(key)
                    .map_or(5, |value| bulk_reply_bytes(value.len()))
            })
            .sum::<usize>()
            + array_header_bytes(keys.len())
    };
    let admission = admit(node, client, bytes, "ask for fewer keys", reply);
    if admission == Admission::Build {
        reply.array(keys.len());
        for key in keys {
            get(actor, key, reply);
        }
    }
    admission.flow()
}

/// `SET k v` and `MSET k v [k v ...]`: every pair is checked before any is written.
fn set(actor: &Actor, pairs: &[Bytes], reply: &mut Reply<'_>) {
    let limits = actor.limits();
    for pair in pairs.chunks_exact(2) {
        if let Err(message) = check_key(actor, &pair[0], limits) {
            return reply.error(&message);
        }
        if pair[1].len() > limits.max_value_bytes {
            return reply.error(&format!(
                "ERR value is longer than {} bytes",
                limits.max_value_bytes
            ));
        }
    }
    let now = wall_millis();
    let writes = pairs.chunks_exact(2).map(|pair| OwnWrite {
        key: &pair[0],
        value_bytes: Some(pair[1].len()),
    });
    if let Err(message) = reserve(actor, writes, now) {
        return reply.error(&message);
    }
    let mut replica = actor.replica_mut();
    for pair in pairs.chunks_exact(2) {
        replica.put(owned(&pair[0]), Some(owned(&pair[1])), now);
    }
    drop(replica);
    for pair in pairs.chunks_exact(2) {
        pubsub::publish_change(&pair[0], true);
    }
    actor.count_puts((pairs.len() / 2) as u64);
    reply.ok();
}

fn del(actor: &Actor, keys: &[Bytes], reply: &mut Reply<'_>) {
    let limits = actor.limits();
    if let Some(message) = keys
        .iter()
        .find_map(|key| check_key(actor, key, limits).err())
    {
        return reply.error(&message);
    }
    let now = wall_millis();
    // Deleting an absent key writes nothing: there is nothing to hide from other replicas
    // that this replica knows of.
    let live: Vec<&Bytes> = {
        let replica = actor.replica();
        keys.iter()
            .filter(|key| replica.get(key).is_some())
            .collect()
    };
    let writes = live.iter().map(|key| OwnWrite {
        key,
        value_bytes: None,
    });
    if let Err(message) = reserve(actor, writes, now) {
        return reply.error(&message);
    }
    let mut replica = actor.replica_mut();
    let mut deleted = 0;
    for key in keys {
        if replica.get(key).is_some() {
            replica.put(owned(key), None, now);
            pubsub::publish_change(key, false);
            deleted += 1;
        }
    }
    drop(replica);
    actor.count_puts(deleted);
    reply.integer(deleted as i64);
}

/// Charges a command's writes to this node's quota, all or none; the refusal's reply text.
fn reserve<'a>(
    actor: &Actor,
    writes: impl Iterator<Item = OwnWrite<'a>>,
    now_ms: u64,
) -> Result<(), String> {
    let quota = actor.own_quota();
    if quota.limits().is_off() {
        return Ok(());
    }
    let writes: Vec<OwnWrite<'_>> = writes.collect();
    quota
        .reserve(&writes, now_ms)
        .map_err(|over| format!("ERR {over}"))
}

/// A copy of an argument for the store. Arguments are slices of the connection's read buffer;
/// keeping one would pin that whole buffer for as long as the entry lives, and stop the
/// connection from reusing it.
fn owned(arg: &Bytes) -> Bytes {
    Bytes::copy_from_slice(arg)
}

/// Whether this node may write `key`: size limits, and only its own `p/<id>/` namespace.
fn check_key(actor: &Actor, key: &[u8], limits: &Limits) -> Result<(), String> {
    let own = actor.replica().node().clone();
    match check_local_key(key, own.as_str(), limits) {
        Ok(()) => Ok(()),
        Err(Rejected::Key(0)) => Err("ERR empty keys are not allowed".to_owned()),
        Err(Rejected::Namespace) => {
            let owner = String::from_utf8_lossy(namespace_owner(key).unwrap_or_default());
            Err(format!(
                "ERR p/{}/ belongs to another node: this node writes only under p/{own}/",
                truncate(&owner, 64)
            ))
        }
        Err(_) => Err(format!(
            "ERR key is longer than {} bytes",
            limits.max_key_bytes
        )),
    }
}

/// `ACTOR` shows this connection's actor; `ACTOR n` moves the connection to actor n.
fn pin_actor(actor: &Actor, target: Option<&Bytes>, reply: &mut Reply<'_>) -> Flow {
    let Some(target) = target else {
        reply.integer(actor.index() as i64);
        return Flow::Continue;
    };
    let parsed = std::str::from_utf8(target)
        .ok()
        .and_then(|t| t.parse::<usize>().ok());
    match parsed {
        Some(n) if n < actor.actors() => {
            reply.ok();
            if n == actor.index() {
                Flow::Continue
            } else {
                Flow::MoveTo(n)
            }
        }
        _ => {
            reply.error(&format!(
                "ERR actor must be a number from 0 to {}",
                actor.actors() - 1
            ));
            Flow::Continue
        }
    }
}

fn client_command(args: &[Bytes], reply: &mut Reply<'_>) {
    match args[0].to_ascii_uppercase().as_slice() {
        b"SETNAME" | b"SETINFO" => reply.ok(),
        b"GETNAME" => reply.null(),
        b"ID" => reply.integer(0),
        _ => reply.error("ERR CLIENT: only SETNAME, SETINFO, GETNAME and ID are supported"),
    }
}

/// The `INFO` text: `# Section` headers and `field:value` lines.
fn info(actor: &Actor, node: &NodeInfo) -> String {
    let stats = actor.stats();
    let remote = &stats.remote;
    let load = |c: &AtomicU64| c.load(Relaxed);
    let mut out = String::new();
    let _ = write!(
        out,
        "# Server\r\ncmud_version:{}\r\nworld:{}\r\npeer_id:{}\r\nrpc_port:{}\r\nactors:{}\r\nactor:{}\r\nuptime_in_seconds:{}\r\nloading:{}\r\n",
        env!("CARGO_PKG_VERSION"),
        node.world,
        node.peer_id,
        node.rpc_port,
        stats.actors,
        actor.index(),
        stats.started.elapsed().as_secs(),
        u8::from(!node.gate.is_open()),
    );
    let _ = write!(
        out,
        "\r\n# Replication\r\nlisten_addrs:{}\r\nconnected_peers:{}\r\nclock_offset_ms:{}\r\nmax_clock_skew_ms:{}\r\nsync_pending_entries:{}\r\n",
        node.listen_addrs().join(","),
        remote.connected_peers.load(Relaxed),
        remote.clock_offset_ms.load(Relaxed),
        actor.limits().max_clock_skew.as_millis(),
        load(&remote.pending_entries),
    );
    if let Some(nat) = node.network.as_ref().map(|net| net.nat_report()) {
        let external: Vec<String> = nat.external_addrs.iter().map(ToString::to_string).collect();
        let _ = write!(
            out,
            "\r\n# Reachability\r\nnat_status:{}\r\nreachability:{}\r\nexternal_addrs:{}\r\nupnp:{}\r\nconnections_direct:{}\r\nconnections_relayed:{}\r\nhole_punch_ok:{}\r\nhole_punch_failed:{}\r\n",
            nat.status.as_str(),
            nat.reachability.as_str(),
            external.join(","),
            nat.upnp,
            nat.connections_direct,
            nat.connections_relayed,
            nat.hole_punch_ok,
            nat.hole_punch_failed,
        );
        let _ = write!(
            out,
            "connections_relayed_world:{}\r\nstreams_relayed:{}\r\nkad_mode:{}\r\n",
            nat.connections_relayed_world,
            nat.streams_relayed,
            nat.kad_mode.as_str()
        );
    }
    let clients = &node.clients;
    let _ = write!(
        out,
        "\r\n# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\nclient_output_bytes:{}\r\nclient_input_bytes:{}\r\nevicted_clients:{}\r\nrejected_connections:{}\r\n",
        clients.open(),
        clients.options().maxclients,
        clients.output_total(),
        clients.input_total(),
        clients.evicted(),
        clients.rejected(),
    );
    let _ = write!(
        out,
        "\r\n# Keyspace\r\nkeys:{}\r\n",
        actor.replica().live_keys()
    );
    let _ = write!(
        out,
        "\r\n# Stats\r\nputs_total:{}\r\nsync_messages_sent_local:{}\r\nsync_bytes_sent_local:{}\r\nmax_sync_rate_per_pair:{:.2}\r\nsync_messages_sent_remote:{}\r\nsync_bytes_sent_remote:{}\r\nsync_bytes_received_remote:{}\r\nrejected_versions:{}\r\nrejected_entries:{}\r\nrejected_signatures:{}\r\nrejected_namespaces:{}\r\nrejected_quota:{}\r\nevicted_quota:{}\r\nrejected_batches:{}\r\ntombstones_purged:{}\r\nsyncs_completed:{}\r\nsync_entries_received:{}\r\n",
        stats.puts_total(),
        stats.local_messages(),
        stats.local_bytes(),
        stats.max_rate_per_pair(),
        load(&remote.messages_sent),
        load(&remote.bytes_sent),
        load(&remote.bytes_received),
        load(&remote.rejected_versions),
        load(&remote.rejected_entries),
        load(&remote.rejected_signatures),
        load(&remote.rejected_namespaces),
        load(&remote.rejected_quota),
        load(&remote.evicted_quota),
        load(&remote.rejected_batches),
        load(&stats.tombstones_purged),
        load(&remote.syncs_completed),
        load(&remote.sync_entries_received),
    );
    let quota = actor.own_quota();
    if !quota.limits().is_off() {
        let (keys, bytes) = quota.usage();
        let limits = quota.limits();
        let _ = write!(
            out,
            "\r\n# Quota\r\nquota_keys:{keys}\r\nquota_bytes:{bytes}\r\nmax_keys_per_writer:{}\r\nmax_bytes_per_writer:{}\r\n",
            limits.max_keys, limits.max_bytes,
        );
    }
    out
}
