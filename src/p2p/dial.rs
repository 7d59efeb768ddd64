//! Reaching peers: `JOIN`, re-dials of joined addresses, and discovery of the world's other
//! nodes through Kademlia (every node provides the world's key) and mDNS.

use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, DialError};
use libp2p::{Multiaddr, PeerId};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::event_loop::EventLoop;
use super::{JoinError, P2pError, peer_of};

/// Why a dial did not start when one to the same peer is under way.
const ALREADY_DIALLING: &str = "already dialling that peer";

impl EventLoop {
    pub(super) fn join(&mut self, addr: Multiaddr, reply: oneshot::Sender<Result<(), P2pError>>) {
        let peer = peer_of(&addr);
        if let Some(peer) = peer.filter(|peer| self.swarm.is_connected(peer)) {
            self.redial.add(addr, Some(peer));
            self.await_world(peer, reply);
            return;
        }
        if let Some(peer) = peer {
            self.swarm
                .behaviour_mut()
                .kad
                .add_address(&peer, addr.clone());
        }
        self.redial.add(addr.clone(), peer);
        match self.dial(addr, peer) {
            Ok(id) => {
                self.pending_joins.insert(id, reply);
            }
            // Already being dialled (a `--join` at start): its connection will answer.
            Err(P2pError::Dial(why)) if why == ALREADY_DIALLING && peer.is_some() => {
                let peer = peer.unwrap_or_else(|| unreachable!("checked just above"));
                self.joins_awaiting_world
                    .entry(peer)
                    .or_default()
                    .push(reply);
            }
            Err(err) => {
                let _ = reply.send(Err(err));
            }
        }
    }

    /// Dials a joined address now and records it with the re-dialler.
    fn dial(&mut self, addr: Multiaddr, peer: Option<PeerId>) -> Result<ConnectionId, P2pError> {
        let opts = match peer {
            Some(peer) => DialOpts::peer_id(peer)
                .addresses(vec![addr.clone()])
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build(),
            None => DialOpts::unknown_peer_id().address(addr.clone()).build(),
        };
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.redial.dialing(&addr, id);
                Ok(id)
            }
            Err(DialError::DialPeerConditionFalse(_)) => {
                let connected = peer.is_some_and(|peer| self.swarm.is_connected(&peer));
                self.redial.not_dialled(&addr, connected);
                Err(P2pError::Dial(ALREADY_DIALLING.into()))
            }
            Err(err) => {
                self.redial.not_dialled(&addr, false);
                Err(P2pError::Dial(err.to_string()))
            }
        }
    }

    /// A `JOIN` connected to `peer`: it succeeds once a sync exchange shows the peer is of
    /// this world (at once if one already did), and fails if the peer turns out foreign.
    pub(super) fn await_world(
        &mut self,
        peer: PeerId,
        reply: oneshot::Sender<Result<(), P2pError>>,
    ) {
        if self.foreign.contains(&peer) {
            let why = "it refused to sync with us, or we with it".to_owned();
            let _ = reply.send(Err(JoinError::ForeignWorld(why).into()));
        } else if self.synced.contains(&peer) {
            let _ = reply.send(Ok(()));
        } else {
            self.joins_awaiting_world
                .entry(peer)
                .or_default()
                .push(reply);
            self.start_sync(peer);
        }
    }

    /// A sync exchange with `peer` worked: it is of this world.
    pub(super) fn join_confirmed(&mut self, peer: PeerId) {
        self.synced.insert(peer);
        for reply in self.joins_awaiting_world.remove(&peer).unwrap_or_default() {
            let _ = reply.send(Ok(()));
        }
    }

    /// `peer` is not one to join (another world, not cmud, gone).
    pub(super) fn join_failed(&mut self, peer: PeerId, why: JoinError) {
        self.synced.remove(&peer);
        for reply in self.joins_awaiting_world.remove(&peer).unwrap_or_default() {
            let _ = reply.send(Err(why.clone().into()));
        }
    }

    pub(super) fn redial_due(&mut self) {
        for (addr, peer) in self.redial.due(Instant::now()) {
            if let Err(err) = self.dial(addr.clone(), peer) {
                tracing::debug!(%addr, %err, "re-dial did not start");
            }
        }
    }

    /// Looks up the world's providers and re-announces ourselves as one.
    pub(super) fn discover(&mut self) {
        if !self.options.discovery || self.peers.is_empty() {
            return;
        }
        let kad = &mut self.swarm.behaviour_mut().kad;
        let _ = kad.bootstrap();
        kad.get_providers(self.world_key.clone());
        if let Err(err) = kad.start_providing(self.world_key.clone()) {
            tracing::debug!(%err, "could not announce ourselves as a provider");
        }
    }

    pub(super) fn dial_discovered(&mut self, peer: PeerId) {
        if peer == *self.swarm.local_peer_id()
            || self.swarm.is_connected(&peer)
            || self.foreign.contains(&peer)
        {
            return;
        }
        let opts = DialOpts::peer_id(peer)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        if let Err(err) = self.swarm.dial(opts) {
            tracing::debug!(%peer, %err, "could not dial a discovered peer");
        }
    }

    pub(super) fn on_first_connection(&mut self, peer: PeerId) {
        if self.options.discovery && !self.kad_bootstrapped {
            self.kad_bootstrapped = true;
            let kad = &mut self.swarm.behaviour_mut().kad;
            let _ = kad.bootstrap();
            kad.get_providers(self.world_key.clone());
            let _ = kad.start_providing(self.world_key.clone());
        }
        self.start_sync(peer);
    }
}
