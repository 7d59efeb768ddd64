//! The event loop's side of NAT traversal: it records connections (direct or relayed), hands
//! the game's traffic to direct connections once hole punching made one (or to the relay where
//! none formed), follows reachability in the DHT, and publishes what `INFO` and `ADDRS` show.
//! Relay reservations are `relays`'.
//!
//! The state itself is [`Nat`](super::nat::Nat) (pure); this file only moves events.

use std::time::Duration;

use libp2p::core::ConnectedPoint;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId, autonat, dcutr, identify, relay};
use tokio::time::Instant;

use super::event_loop::EventLoop;
use super::nat::{
    AddrKind, Conn, DhtMode, NatReport, NatStatus, Reachability, UpnpStatus, is_loopback,
    remote_addr, shared_addrs,
};
use super::upnp;

/// How often reservations, the relay's admission and the report are brought up to date.
pub(super) const NAT_TICK: Duration = Duration::from_secs(1);

/// How long a relayed connection stays once a direct one to the same peer is up (hole
/// punching finishes on both sides before the relayed one goes).
const RELAY_HANDOVER: Duration = Duration::from_secs(3);

impl EventLoop {
    /// Records a new connection; returns the remote address `PEERS` shows for it.
    pub(super) fn nat_connection_up(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        endpoint: &ConnectedPoint,
    ) -> Multiaddr {
        let relayed = endpoint.is_relayed();
        let carried_world = self.nat.carries_world(&peer);
        self.nat
            .conns
            .insert(id, Conn::new(peer, relayed, std::time::Instant::now()));
        if !relayed && !carried_world {
            // Gossip and sync can reach the peer now (perhaps a hole punch after a relayed
            // connection that carried nothing): catch up with it.
            self.start_sync(peer);
        }
        if !relayed {
            self.reservations
                .direct_since
                .entry(peer)
                .or_insert_with(Instant::now);
            if endpoint.is_dialer() {
                let dialled: Multiaddr = endpoint
                    .get_remote_address()
                    .iter()
                    .filter(|p| !matches!(p, Protocol::P2p(_)))
                    .collect();
                self.nat.relays.entry(peer).or_insert(dialled);
            }
        }
        self.publish_nat();
        remote_addr(endpoint, peer)
    }

    /// Forgets a closed connection; returns the remote address it was shown with.
    pub(super) fn nat_connection_down(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        endpoint: &ConnectedPoint,
        last: bool,
    ) -> Multiaddr {
        self.nat.conns.remove(&id);
        let direct_left = self
            .nat
            .conns
            .values()
            .any(|c| c.peer == peer && !c.relayed);
        if !direct_left {
            self.reservations.direct_since.remove(&peer);
            self.nat.relays.remove(&peer);
        }
        if last {
            self.gate.set_member(peer, false);
            self.relay_capable.remove(&peer);
        }
        self.publish_nat();
        remote_addr(endpoint, peer)
    }

    /// Identify told us about `peer`: a relay is a candidate for a reservation, and its
    /// listen addresses go to Kademlia (when discovery is on).
    pub(super) fn on_identified(&mut self, peer: PeerId, info: identify::Info) {
        if info.protocols.contains(&relay::HOP_PROTOCOL_NAME) {
            self.relay_capable.insert(peer);
        }
        if !self.options.discovery {
            return;
        }
        // A peer's loopback addresses lead back to ourselves unless we reach it over
        // loopback; dialled among its real ones, such an address "answers" first with the
        // wrong peer and fails the whole dial.
        let over_loopback = self
            .peers
            .get(&peer)
            .is_some_and(|addrs| addrs.iter().any(is_loopback));
        for addr in info.listen_addrs {
            if over_loopback || !is_loopback(&addr) {
                self.swarm.behaviour_mut().kad.add_address(&peer, addr);
            }
        }
    }

    /// `peer` subscribed to this world's gossip: it is a member the relay may serve.
    pub(super) fn note_member(&mut self, peer: PeerId) {
        self.gate.set_member(peer, true);
    }

    /// The periodic part: relay admission, reservations, hand-over to direct connections,
    /// the relay as a fallback, and the report.
    pub(super) fn nat_tick(&mut self) {
        self.gate
            .set_serving(self.options.nat.relay_server && self.nat.status == NatStatus::Public);
        self.hand_over_to_direct();
        self.fall_back_to_the_relay();
        self.relays_tick();
        self.publish_nat();
    }

    /// Closes relayed connections to peers that have had a direct one for a while, so gossip
    /// and sync run over the direct path.
    fn hand_over_to_direct(&mut self) {
        let now = Instant::now();
        for id in self.nat.redundant_relayed() {
            let Some(conn) = self.nat.conns.get(&id) else {
                continue;
            };
            let settled = self
                .reservations
                .direct_since
                .get(&conn.peer)
                .is_some_and(|since| now.duration_since(*since) >= RELAY_HANDOVER);
            if settled {
                tracing::debug!(peer = %conn.peer, "direct connection up; closing the relayed one");
                self.swarm.close_connection(id);
            }
        }
    }

    /// Lets gossip and sync onto relayed connections that waited `relay_fallback` without a
    /// direct connection to the same peer forming (hole punching failed, or was never tried).
    fn fall_back_to_the_relay(&mut self) {
        let now = std::time::Instant::now();
        let wait = self.options.nat.relay_fallback;
        for (id, peer) in self.nat.relay_fallbacks_due(now, wait) {
            let behaviour = self.swarm.behaviour_mut();
            let gossip = behaviour.gossipsub.open_relayed(id);
            let sync = behaviour.sync.open_relayed(id);
            if let Some(conn) = self.nat.conns.get_mut(&id) {
                conn.world = true;
            }
            tracing::info!(
                %peer,
                gossip,
                sync,
                "no direct connection after {} s: the world flows through the relay",
                wait.as_secs()
            );
            self.start_sync(peer);
        }
    }

    pub(super) fn on_dcutr(&mut self, event: dcutr::Event) {
        match event.result {
            Ok(_) => {
                self.nat.hole_punch_ok += 1;
                tracing::info!(peer = %event.remote_peer_id, "hole punch made a direct connection");
            }
            Err(err) => {
                self.nat.hole_punch_failed += 1;
                tracing::info!(peer = %event.remote_peer_id, %err, "hole punch failed; staying on the relay");
            }
        }
        self.publish_nat();
    }

    pub(super) fn on_autonat(&mut self, event: autonat::v1::Event) {
        if let autonat::v1::Event::StatusChanged { new, .. } = event {
            let status = match new {
                autonat::v1::NatStatus::Public(_) => NatStatus::Public,
                autonat::v1::NatStatus::Private => NatStatus::Private,
                autonat::v1::NatStatus::Unknown => NatStatus::Unknown,
            };
            tracing::info!(status = status.as_str(), "reachability from the internet");
            self.nat.status = status;
            self.nat_tick();
        }
    }

    pub(super) fn on_upnp(&mut self, event: upnp::Event) {
        self.nat.upnp = match event {
            upnp::Event::Mapped(addrs) => {
                tracing::info!(?addrs, "the router maps a port to this node");
                UpnpStatus::Mapped(addrs)
            }
            upnp::Event::Unavailable(why) => {
                tracing::info!(%why, "no port mapping from the router");
                UpnpStatus::Unavailable(why)
            }
        };
        self.publish_nat();
    }

    /// Publishes the addresses a friend can use, best first.
    pub(super) fn publish_addrs(&mut self) {
        let local = *self.swarm.local_peer_id();
        let with_id = |addr: &Multiaddr| addr.clone().with_p2p(local).unwrap_or_else(|a| a);
        let listen: Vec<Multiaddr> = self.swarm.listeners().map(with_id).collect();
        let external: Vec<Multiaddr> = self.swarm.external_addresses().map(with_id).collect();
        let shared = shared_addrs(&listen, &external, self.options.nat.assume_global_addresses);
        self.addrs.send_if_modified(|addrs| {
            let changed = *addrs != shared;
            *addrs = shared;
            changed
        });
        self.publish_nat();
    }

    /// Switches Kademlia between server and client as reachability changes. Kademlia's own
    /// automatic mode follows confirmed external addresses, which a world on a LAN or on
    /// loopback never has (AutoNAT confirms only internet addresses there): every node would be
    /// a client and nobody would answer lookups. So the mode follows AutoNAT's verdict instead.
    fn follow_reachability_in_the_dht(&mut self, status: NatStatus) {
        let mode = DhtMode::for_status(status);
        if mode == self.nat.kad_mode {
            return;
        }
        tracing::info!(mode = mode.as_str(), "DHT mode follows reachability");
        self.nat.kad_mode = mode;
        let kad_mode = match mode {
            DhtMode::Server => libp2p::kad::Mode::Server,
            DhtMode::Client => libp2p::kad::Mode::Client,
        };
        self.swarm.behaviour_mut().kad.set_mode(Some(kad_mode));
    }

    /// Publishes the report `INFO` reads.
    pub(super) fn publish_nat(&mut self) {
        let kinds: Vec<AddrKind> = self.addrs.borrow().iter().map(|(_, k)| *k).collect();
        let reachability = Reachability::of(kinds.iter().copied());
        let (direct, relayed) = self.nat.connection_counts();
        let behaviour = self.swarm.behaviour();
        let streams_relayed =
            behaviour.gossipsub.relayed_streams() + behaviour.sync.relayed_streams();
        let mut status = self.nat.status;
        if reachability == Reachability::Direct {
            status = NatStatus::Public;
        }
        self.follow_reachability_in_the_dht(status);
        let report = NatReport {
            status,
            external_addrs: self.swarm.external_addresses().cloned().collect(),
            upnp: self.nat.upnp.clone(),
            connections_direct: direct,
            connections_relayed: relayed,
            hole_punch_ok: self.nat.hole_punch_ok,
            hole_punch_failed: self.nat.hole_punch_failed,
            reachability,
            connections_relayed_world: self.nat.relayed_world_count(),
            streams_relayed,
            kad_mode: self.nat.kad_mode,
        };
        self.nat_report.send_if_modified(|old| {
            let changed = *old != report;
            *old = report;
            changed
        });
    }
}
