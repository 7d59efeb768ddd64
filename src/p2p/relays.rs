//! The event loop's relay reservations: kept on up to two relays among its peers while this
//! node is not reachable, dropped once it is (when that is safe), and announced to the world.

use std::collections::HashMap;
use std::time::Duration;

use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId, relay};
use tokio::time::Instant;

use super::event_loop::EventLoop;
use super::nat::NatStatus;

/// Relays a node that is not reachable keeps a reservation on.
const WANTED_RESERVATIONS: usize = 2;

/// How long a relay that refused (or dropped) a reservation is left alone.
const RESERVATION_RETRY: Duration = Duration::from_secs(5);

/// How long after a relay accepted (or renewed) a reservation it may still be dropped. The
/// relay client of libp2p-relay 0.22 panics, and takes the whole network task with it, when a
/// reservation's listener is removed while a reservation request is in flight (it forgets the
/// pending reservation, then meets the relay's answer). Requests are in flight right after
/// asking and at renewal, three quarters into the reservation's life (45 minutes with libp2p's
/// one-hour reservations): a reservation is dropped only once accepted and well before that.
const SAFE_DROP_AFTER_ACCEPT: Duration = Duration::from_secs(600);

/// How long after a new reservation the world's providers are looked up once more: two
/// players who got theirs at the same moment each looked before the other's relayed address
/// was announced, and would otherwise wait for the next discovery round.
const REDISCOVER_AFTER_RESERVATION: Duration = Duration::from_secs(3);

/// One relay reservation this node holds or has asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Reservation {
    /// The relay.
    pub relay: PeerId,
    /// When the relay last accepted it (first time or renewal); `None` while asked for.
    pub accepted_at: Option<Instant>,
}

impl Reservation {
    /// Whether its listener may be removed now without a request in flight.
    fn safe_to_drop(&self, now: Instant) -> bool {
        self.accepted_at
            .is_some_and(|at| now.duration_since(at) < SAFE_DROP_AFTER_ACCEPT)
    }
}

/// Relay bookkeeping the event loop keeps beside [`Nat`](super::nat::Nat).
#[derive(Debug, Default)]
pub(super) struct Reservations {
    /// Relay listeners and their reservations.
    pub listeners: HashMap<ListenerId, Reservation>,
    /// Relays left alone until then.
    pub retry_at: HashMap<PeerId, Instant>,
    /// When each peer's first direct connection came up (relayed ones go after a while).
    pub direct_since: HashMap<PeerId, Instant>,
    /// When to look the world's providers up again after a new reservation.
    pub rediscover_at: Option<Instant>,
}

impl EventLoop {
    /// The periodic part: a second look-up after a new reservation, and the reservations.
    pub(super) fn relays_tick(&mut self) {
        if self
            .reservations
            .rediscover_at
            .is_some_and(|at| at <= Instant::now())
        {
            self.reservations.rediscover_at = None;
            self.discover();
        }
        self.keep_reservations();
    }

    /// Keeps reservations on up to two relays while this node is not known to be reachable,
    /// and drops them once it is (each as soon as that is safe, see [`SAFE_DROP_AFTER_ACCEPT`]).
    fn keep_reservations(&mut self) {
        if self.nat.status == NatStatus::Public {
            let now = Instant::now();
            let droppable: Vec<ListenerId> = self
                .reservations
                .listeners
                .iter()
                .filter(|(_, reservation)| reservation.safe_to_drop(now))
                .map(|(listener, _)| *listener)
                .collect();
            for listener in droppable {
                self.reservations.listeners.remove(&listener);
                self.swarm.remove_listener(listener);
            }
            return;
        }
        let now = Instant::now();
        let mut candidates: Vec<(PeerId, Multiaddr)> = self
            .nat
            .relays
            .iter()
            .filter(|(peer, _)| self.relay_capable.contains(peer))
            .filter(|(peer, _)| {
                !self
                    .reservations
                    .listeners
                    .values()
                    .any(|r| r.relay == **peer)
            })
            .filter(|(peer, _)| {
                self.reservations
                    .retry_at
                    .get(peer)
                    .is_none_or(|at| *at <= now)
            })
            .map(|(peer, addr)| (*peer, addr.clone()))
            .collect();
        candidates.sort();
        let room = WANTED_RESERVATIONS.saturating_sub(self.reservations.listeners.len());
        for (relay, addr) in candidates.into_iter().take(room) {
            let circuit = addr.with(Protocol::P2p(relay)).with(Protocol::P2pCircuit);
            match self.swarm.listen_on(circuit.clone()) {
                Ok(listener) => {
                    tracing::debug!(%circuit, "asking for a relay reservation");
                    let reservation = Reservation {
                        relay,
                        accepted_at: None,
                    };
                    self.reservations.listeners.insert(listener, reservation);
                }
                Err(err) => {
                    tracing::debug!(%circuit, %err, "cannot listen through the relay");
                    self.reservations
                        .retry_at
                        .insert(relay, now + RESERVATION_RETRY);
                }
            }
        }
    }

    /// A listener closed: if it was a reservation, the relay is retried later.
    pub(super) fn nat_listener_closed(&mut self, listener: ListenerId, error: Option<String>) {
        if let Some(Reservation { relay, .. }) = self.reservations.listeners.remove(&listener) {
            tracing::debug!(%relay, error = ?error, "relay reservation ended");
            self.reservations
                .retry_at
                .insert(relay, Instant::now() + RESERVATION_RETRY);
            self.publish_addrs();
        }
    }

    pub(super) fn on_relay_client(&mut self, event: relay::client::Event) {
        if let relay::client::Event::ReservationReqAccepted {
            relay_peer_id,
            renewal,
            ..
        } = event
        {
            let now = Instant::now();
            for reservation in self.reservations.listeners.values_mut() {
                if reservation.relay == relay_peer_id {
                    reservation.accepted_at = Some(now);
                }
            }
            if !renewal {
                tracing::info!(relay = %relay_peer_id, "reachable through a relay");
                // Tell the world at once: friends find the relayed address through the DHT.
                self.discover();
                self.reservations.rediscover_at = Some(now + REDISCOVER_AFTER_RESERVATION);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reservation_is_dropped_only_once_accepted_and_far_from_its_renewal() {
        let now = Instant::now();
        let relay = PeerId::random();
        let asked = Reservation {
            relay,
            accepted_at: None,
        };
        assert!(!asked.safe_to_drop(now), "its request is in flight");
        let fresh = Reservation {
            relay,
            accepted_at: Some(now),
        };
        assert!(fresh.safe_to_drop(now + Duration::from_secs(60)));
        assert!(
            !fresh.safe_to_drop(now + SAFE_DROP_AFTER_ACCEPT),
            "its renewal may be near"
        );
    }
}
