//! The peers this node joined (`--join`, saved peers, `JOIN`), and when to dial them again.
//!
//! Pure bookkeeping: the event loop tells it about dials, connections and drops, and asks it
//! which addresses are due. A dropped or unreachable peer is retried with exponential backoff,
//! so a partition heals without anyone typing anything.

use std::time::Duration;

use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};
use tokio::time::Instant;

/// First wait before re-dialling.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// Longest wait between re-dials.
pub const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// One joined address.
#[derive(Debug)]
struct Joined {
    /// Where to dial.
    addr: Multiaddr,
    /// The peer the address names (`/p2p/...`), if it names one: dials insist on it.
    named: Option<PeerId>,
    /// The peer there, once known (from the address or the latest connection).
    peer: Option<PeerId>,
    /// The dial in flight, if any.
    dialing: Option<ConnectionId>,
    /// Whether a connection to it is up.
    connected: bool,
    /// When to dial next, if it is down.
    due: Option<Instant>,
    /// The wait after the next failure.
    backoff: Duration,
}

/// All joined addresses.
#[derive(Debug, Default)]
pub struct Redial {
    /// In the order they were joined.
    joined: Vec<Joined>,
}

impl Redial {
    /// Adds an address (dialled at once); returns false if it was already there.
    pub fn add(&mut self, addr: Multiaddr, peer: Option<PeerId>) -> bool {
        if self.joined.iter().any(|j| j.addr == addr) {
            return false;
        }
        self.joined.push(Joined {
            addr,
            named: peer,
            peer,
            dialing: None,
            connected: false,
            due: Some(Instant::now()),
            backoff: FIRST_BACKOFF,
        });
        true
    }

    /// Addresses due for a dial now (not connected, not dialling), with the peers they name.
    ///
    /// An address joined without a peer id is dialled as such, not as the peer last found
    /// there: a host that comes back with a new identity (a fresh data folder) would otherwise
    /// fail every re-dial as the wrong peer, for ever.
    pub fn due(&self, now: Instant) -> Vec<(Multiaddr, Option<PeerId>)> {
        self.joined
            .iter()
            .filter(|j| !j.connected && j.dialing.is_none() && j.due.is_some_and(|due| due <= now))
            .map(|j| (j.addr.clone(), j.named))
            .collect()
    }

    /// A dial of `addr` started.
    pub fn dialing(&mut self, addr: &Multiaddr, id: ConnectionId) {
        if let Some(j) = self.joined.iter_mut().find(|j| j.addr == *addr) {
            j.dialing = Some(id);
            j.due = None;
        }
    }

    /// A dial of `addr` could not even start, or found the peer already connected.
    pub fn not_dialled(&mut self, addr: &Multiaddr, already_connected: bool) {
        if let Some(j) = self.joined.iter_mut().find(|j| j.addr == *addr) {
            if already_connected {
                j.connected = true;
                j.due = None;
            } else {
                Self::back_off(j);
            }
        }
    }

    /// A connection came up (`id` may be one of our dials).
    pub fn connected(&mut self, peer: PeerId, id: ConnectionId) {
        for j in &mut self.joined {
            if j.dialing == Some(id) {
                j.peer = Some(peer);
                j.dialing = None;
            }
            if j.peer == Some(peer) {
                j.connected = true;
                j.due = None;
                j.backoff = FIRST_BACKOFF;
            }
        }
    }

    /// A dial failed.
    pub fn dial_failed(&mut self, id: ConnectionId) {
        if let Some(j) = self.joined.iter_mut().find(|j| j.dialing == Some(id)) {
            j.dialing = None;
            Self::back_off(j);
        }
    }

    /// The last connection to `peer` closed.
    pub fn disconnected(&mut self, peer: PeerId) {
        for j in &mut self.joined {
            if j.peer == Some(peer) && j.connected {
                j.connected = false;
                j.due = Some(Instant::now() + j.backoff);
            }
        }
    }

    fn back_off(j: &mut Joined) {
        j.due = Some(Instant::now() + j.backoff);
        j.backoff = (j.backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_back_off_and_a_connection_resets_the_backoff() {
        let mut redial = Redial::default();
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        assert!(redial.add(addr.clone(), None));
        assert!(!redial.add(addr.clone(), None));
        let now = Instant::now();
        assert_eq!(redial.due(now).len(), 1);
        let id = ConnectionId::new_unchecked(1);
        redial.dialing(&addr, id);
        assert!(redial.due(now + MAX_BACKOFF).is_empty(), "dialling already");
        redial.dial_failed(id);
        assert!(redial.due(Instant::now()).is_empty(), "backing off");
        assert_eq!(redial.due(Instant::now() + FIRST_BACKOFF).len(), 1);

        let id = ConnectionId::new_unchecked(2);
        redial.dialing(&addr, id);
        let peer = PeerId::random();
        redial.connected(peer, id);
        assert!(
            redial.due(Instant::now() + MAX_BACKOFF).is_empty(),
            "connected"
        );
        redial.disconnected(peer);
        assert_eq!(
            redial.due(Instant::now() + FIRST_BACKOFF),
            vec![(addr, None)],
            "re-dialled as the address, not as the peer last found there"
        );
    }
}
