//! Whether the RPC port serves the world yet. A node that was out of contact for longer than
//! `tombstone_ttl` starts with only its own namespace (the store dropped the rest); until it
//! has fetched the world from a peer, data commands get Redis' `-LOADING` error, which clients
//! such as the game treat as "try again shortly", instead of a world with holes in it.
//!
//! Owns the flag and the wording; when to open it is the node's business (`src/node.rs`).

use std::sync::atomic::{AtomicBool, Ordering};

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
