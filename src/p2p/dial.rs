//! Reaching peers: `JOIN`, re-dials of joined addresses, and discovery of the world's other
//! nodes through Kademlia (every node provides the world's key) and mDNS.

use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, DialError};
use libp2p::{Multiaddr, PeerId};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::event_loop::EventLoop;
use super::{P2pError, peer_of};

impl EventLoop {
    pub(super) fn join(&mut self, addr: Multiaddr, reply: oneshot::Sender<Result<(), P2pError>>) {
        let peer = peer_of(&addr);
        if peer.is_some_and(|peer| self.swarm.is_connected(&peer)) {
            self.redial.add(addr, peer);
            let _ = reply.send(Ok(()));
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
                Err(P2pError::Dial("already dialling that peer".into()))
            }
            Err(err) => {
                self.redial.not_dialled(&addr, false);
                Err(P2pError::Dial(err.to_string()))
            }
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
