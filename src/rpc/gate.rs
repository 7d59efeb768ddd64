//! Whether the RPC port serves the world yet. A node that was out of contact for longer than
//! `tombstone_ttl` starts with only its own namespace (the store dropped the rest); until it
//! has fetched the world from a peer, data commands get Redis' `-LOADING` error, which clients
//! such as the game treat as "try again shortly", instead of a world with holes in it.
//!
//! Owns the flag, the wording, and when a node opens it (started by `src/node.rs`): once the
//! first reconciliation with a peer has run to its end, or after a bounded wait.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::store::stats::Stats;

/// How long a node back from a long absence waits for a peer before it serves what it has.
pub const RESYNC_ALONE_WAIT: Duration = Duration::from_secs(10);

/// How long such a node waits for its first reconciliation to end, peers or not.
pub const RESYNC_MAX_WAIT: Duration = Duration::from_secs(120);

/// How soon the query actors hold what the gateway merged (local sync's bound).
const LOCAL_VISIBILITY: Duration = Duration::from_millis(500);

/// How often the startup gate looks whether the world was fetched.
const RESYNC_POLL: Duration = Duration::from_millis(50);

/// The error data commands get while the gate is closed.
pub const LOADING_REPLY: &str = "LOADING cmud is fetching the world from its peers (this node was \
     out of contact for longer than tombstone_ttl); try again shortly";

/// Opens once; read on every data command.
#[derive(Debug)]
pub struct Gate {
    /// Whether data commands are served.
    open: AtomicBool,
}

impl Gate {
    /// A gate that is open from the start (the usual case).
    pub fn open() -> Gate {
        Gate {
            open: AtomicBool::new(true),
        }
    }

    /// A gate that stays closed until [`Gate::let_in`].
    pub fn closed() -> Gate {
        Gate {
            open: AtomicBool::new(false),
        }
    }

    /// Serves data commands from now on.
    pub fn let_in(&self) {
        self.open.store(true, Ordering::Release);
    }

    /// Whether data commands are served.
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }
}

/// Whether a command (upper-cased name) reads or writes the world, and so waits for the gate.
/// `PING`, `INFO`, `AUTH`, the node commands (`ADDRS`, `PEERS`, `JOIN`: a player may need to
/// join a friend to get the world) and the handshakes are served throughout, as Redis serves
/// its `loading`-flagged commands.
pub fn is_data_command(upper: &[u8]) -> bool {
    matches!(
        upper,
        b"GET" | b"MGET" | b"EXISTS" | b"SET" | b"MSET" | b"DEL" | b"LIST" | b"KEYS" | b"DBSIZE"
    )
}

/// The RPC port's gate at start: closed when the node was out of contact for longer than
/// `tombstone_ttl` and has a network to fetch the world from, open otherwise.
pub fn at_start(out_of_contact: bool, has_network: bool) -> Gate {
    match (out_of_contact, has_network) {
        (true, true) => {
            tracing::warn!(
                "this node was out of contact for longer than tombstone_ttl: answering LOADING \
                 until the world is fetched again from a peer"
            );
            Gate::closed()
        }
        (true, false) => {
            tracing::warn!(
                "this node was out of contact for longer than tombstone_ttl and has no network: \
                 serving its own namespace only"
            );
            Gate::open()
        }
        (false, _) => Gate::open(),
    }
}

/// Opens `gate` once a reconciliation with a peer has run to its end. A node that reaches no
/// peer within [`RESYNC_ALONE_WAIT`] (a lone player), or does not finish within
/// [`RESYNC_MAX_WAIT`], serves what it has, and says so: it holds only its own namespace and
/// values others had not deleted, so nothing deleted comes back either way; the rest of the
/// world arrives once a peer is reached.
pub async fn open_when_resynced(gate: Arc<Gate>, stats: Arc<Stats>) {
    let started = tokio::time::Instant::now();
    let remote = &stats.remote;
    loop {
        if remote.syncs_completed.load(Relaxed) > 0 {
            // The gateway hands what it fetched to the actors within this bound.
            tokio::time::sleep(LOCAL_VISIBILITY).await;
            tracing::info!(
                secs = format!("{:.1}", started.elapsed().as_secs_f64()),
                "fetched the world from a peer: serving it"
            );
            break;
        }
        let alone = remote.connected_peers.load(Relaxed) == 0;
        if alone && started.elapsed() >= RESYNC_ALONE_WAIT {
            tracing::warn!(
                secs = RESYNC_ALONE_WAIT.as_secs(),
                "no peer reached: serving what this node has (its own player); the rest of the \
                 world arrives once a peer is reached"
            );
            break;
        }
        if started.elapsed() >= RESYNC_MAX_WAIT {
            tracing::warn!(
                secs = RESYNC_MAX_WAIT.as_secs(),
                "the world is not fetched yet: serving what this node has meanwhile"
            );
            break;
        }
        tokio::time::sleep(RESYNC_POLL).await;
    }
    gate.let_in();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_gate_holds_data_commands_only_until_let_in() {
        let gate = Gate::closed();
        assert!(!gate.is_open());
        assert!(is_data_command(b"GET") && is_data_command(b"LIST"));
        assert!(!is_data_command(b"PING") && !is_data_command(b"JOIN"));
        gate.let_in();
        assert!(gate.is_open());
        assert!(Gate::open().is_open());
    }
}
