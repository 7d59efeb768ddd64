//! The event loop's NAT bookkeeping: its open connections (direct or relayed, carrying the
//! world or not), the relays it knows, and who the relay serves. Pure state; `reach` moves the
//! swarm's events into it and acts on what it answers.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};

use super::{DhtMode, NatStatus, UpnpStatus};

/// Who the relay serves, shared with the relay behaviour's admission check.
#[derive(Debug, Default)]
pub struct RelayGate {
    /// Whether this node relays at all now (reachable and `relay_server`).
    serving: AtomicBool,
    /// Peers subscribed to this world's gossip.
    members: Mutex<HashSet<PeerId>>,
}

impl RelayGate {
    /// A gate shared between the event loop and the relay behaviour.
    pub fn new() -> Arc<Self> {
        Arc::new(RelayGate::default())
    }

    /// Whether a reservation or circuit of `peer` may go ahead.
    pub fn admits(&self, peer: &PeerId) -> bool {
        // A poisoned lock only means a panic elsewhere while inserting: the set is still sound.
        self.serving.load(Relaxed)
            && self
                .members
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .contains(peer)
    }

    /// Relay or stop relaying.
    pub fn set_serving(&self, serving: bool) {
        self.serving.store(serving, Relaxed);
    }

    /// `peer` plays in this world (or, with `false`, has gone).
    pub fn set_member(&self, peer: PeerId, member: bool) {
        let mut members = self
            .members
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if member {
            members.insert(peer);
        } else {
            members.remove(&peer);
        }
    }
}

/// One open connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(in crate::p2p) struct Conn {
    /// The peer at the other end.
    pub peer: PeerId,
    /// Whether it runs through a relay.
    pub relayed: bool,
    /// Whether gossip and sync run over it (direct ones at once, relayed ones as a fallback).
    pub world: bool,
    /// When it came up.
    pub since: Instant,
}

impl Conn {
    /// A connection that has just come up.
    pub fn new(peer: PeerId, relayed: bool, now: Instant) -> Self {
        Conn {
            peer,
            relayed,
            world: !relayed,
            since: now,
        }
    }
}

/// NAT bookkeeping of the event loop.
#[derive(Debug, Default)]
pub(in crate::p2p) struct Nat {
    /// AutoNAT's last word.
    pub status: NatStatus,
    /// The router's port mapping.
    pub upnp: UpnpStatus,
    /// Successful hole punches.
    pub hole_punch_ok: u64,
    /// Failed hole punches.
    pub hole_punch_failed: u64,
    /// Open connections.
    pub conns: HashMap<ConnectionId, Conn>,
    /// Peers that serve as relays, with the address this node dialled them at.
    pub relays: HashMap<PeerId, Multiaddr>,
    /// The DHT mode Kademlia was last set to.
    pub kad_mode: DhtMode,
}

impl Nat {
    /// Counts of (direct, relayed) open connections.
    pub fn connection_counts(&self) -> (usize, usize) {
        let relayed = self.conns.values().filter(|c| c.relayed).count();
        (self.conns.len() - relayed, relayed)
    }

    /// Whether gossip and sync can reach `peer` now (over a direct connection, or a relayed
    /// one opened as a fallback).
    pub fn carries_world(&self, peer: &PeerId) -> bool {
        self.conns.values().any(|c| c.peer == *peer && c.world)
    }

    /// Relayed connections that have waited `wait` without a direct connection to their peer
    /// forming: gossip and sync are to run over them now.
    pub fn relay_fallbacks_due(&self, now: Instant, wait: Duration) -> Vec<(ConnectionId, PeerId)> {
        let mut due: Vec<(ConnectionId, PeerId)> = self
            .conns
            .iter()
            .filter(|(_, c)| c.relayed && !c.world && now.duration_since(c.since) >= wait)
            .filter(|(_, c)| {
                !self
                    .conns
                    .values()
                    .any(|other| other.peer == c.peer && !other.relayed)
            })
            .map(|(id, c)| (*id, c.peer))
            .collect();
        due.sort();
        due
    }

    /// Relayed connections that carry the world.
    pub fn relayed_world_count(&self) -> usize {
        self.conns.values().filter(|c| c.relayed && c.world).count()
    }

    /// Relayed connections to peers that also have a direct one (to be closed, so the game's
    /// traffic takes the direct path).
    pub fn redundant_relayed(&self) -> Vec<ConnectionId> {
        let direct: HashSet<PeerId> = self
            .conns
            .values()
            .filter(|c| !c.relayed)
            .map(|c| c.peer)
            .collect();
        self.conns
            .iter()
            .filter(|(_, c)| c.relayed && direct.contains(&c.peer))
            .map(|(id, _)| *id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relayed_connections_to_directly_connected_peers_are_redundant() {
        let mut nat = Nat::default();
        let a = PeerId::random();
        let b = PeerId::random();
        let now = Instant::now();
        let conn = |n, peer, relayed| {
            (
                ConnectionId::new_unchecked(n),
                Conn::new(peer, relayed, now),
            )
        };
        nat.conns
            .extend([conn(1, a, true), conn(2, a, false), conn(3, b, true)]);
        assert_eq!(
            nat.redundant_relayed(),
            vec![ConnectionId::new_unchecked(1)]
        );
        assert_eq!(nat.connection_counts(), (1, 2));
    }

    #[test]
    fn the_relay_carries_the_world_only_after_the_wait_and_without_a_direct_path() {
        let mut nat = Nat::default();
        let (a, b) = (PeerId::random(), PeerId::random());
        let start = Instant::now();
        let wait = Duration::from_secs(30);
        let id = ConnectionId::new_unchecked;
        nat.conns.insert(id(1), Conn::new(a, true, start));
        nat.conns.insert(id(2), Conn::new(b, true, start));
        nat.conns.insert(id(3), Conn::new(b, false, start));
        assert!(!nat.carries_world(&a), "a relayed connection waits");
        assert!(nat.carries_world(&b), "a direct connection carries at once");
        assert!(nat.relay_fallbacks_due(start + wait / 2, wait).is_empty());
        // b has a direct connection: its relayed one never carries the world.
        assert_eq!(
            nat.relay_fallbacks_due(start + wait, wait),
            vec![(id(1), a)]
        );
        if let Some(conn) = nat.conns.get_mut(&id(1)) {
            conn.world = true;
        }
        assert!(nat.carries_world(&a));
        assert_eq!(nat.relayed_world_count(), 1);
        assert!(nat.relay_fallbacks_due(start + wait * 2, wait).is_empty());
    }

    #[test]
    fn the_gate_admits_members_only_while_serving() {
        let gate = RelayGate::new();
        let peer = PeerId::random();
        gate.set_member(peer, true);
        assert!(!gate.admits(&peer));
        gate.set_serving(true);
        assert!(gate.admits(&peer));
        assert!(!gate.admits(&PeerId::random()));
        gate.set_member(peer, false);
        assert!(!gate.admits(&peer));
    }
}
