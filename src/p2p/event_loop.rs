//! The task that owns the swarm: it takes commands from [`super::NetworkHandle`]s, batches
//! from the gateway and results of its own helper tasks, and handles the swarm's events.
//!
//! Connections, discovery and re-dials live here; gossip handling is in `gossip`, bootstrap
//! and anti-entropy sessions in `sync`. Nothing here awaits the gateway: reads and merges run
//! in spawned tasks that report back through the `Internal` channel, so a busy gateway never
//! stalls the swarm.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use futures::StreamExt;
use libp2p::gossipsub::IdentTopic;
use libp2p::kad::{self, GetProvidersOk, QueryResult, RecordKey};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, gossipsub, identify, mdns};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{MissedTickBehavior, interval};

use super::behaviour::{Behaviour, BehaviourEvent};
use super::nat::{AddrKind, Nat, NatReport, RelayGate};
use super::reach::NAT_TICK;
use super::redial::Redial;
use super::relays::Reservations;
use super::sync::{Internal, Syncs};
use super::{Command, NetworkOptions, P2pError, SyncProgress, peer_of, puts_topic};
use crate::store::gateway::GatewayHandle;
use crate::store::stats::Stats;
use crate::store::{Batch, Entry, Key, Limits};

/// How long a stopping node keeps its connections up so its last batches leave.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(300);

/// How often due re-dials are checked.
const REDIAL_TICK: Duration = Duration::from_millis(250);

/// How often a random connected peer is asked for what this node lacks (repairs gossip that
/// was dropped under load and entries that were in the future when first seen).
pub(super) const ANTI_ENTROPY_PERIOD: Duration = Duration::from_secs(5);

/// How often the world's providers are looked up in Kademlia.
const DISCOVERY_PERIOD: Duration = Duration::from_secs(20);

/// Everything the event loop starts with.
pub(super) struct Setup {
    /// The swarm, already listening.
    pub swarm: Swarm<Behaviour>,
    /// Options.
    pub options: NetworkOptions,
    /// The store's gateway.
    pub gateway: GatewayHandle,
    /// Batches to publish.
    pub outbound: mpsc::Receiver<Batch>,
    /// Node-wide counters.
    pub stats: Arc<Stats>,
    /// Commands from handles.
    pub commands: mpsc::Receiver<Command>,
    /// Where shareable addresses are published, best first.
    pub addrs: watch::Sender<Vec<(Multiaddr, AddrKind)>>,
    /// Where bootstrap progress is published.
    pub progress: watch::Sender<SyncProgress>,
    /// Where NAT traversal's state is published.
    pub nat_report: watch::Sender<NatReport>,
    /// Who the relay serves (shared with the relay behaviour).
    pub gate: Arc<RelayGate>,
}

/// The network task's state.
pub(super) struct EventLoop {
    /// The swarm.
    pub(super) swarm: Swarm<Behaviour>,
    /// Options.
    pub(super) options: NetworkOptions,
    /// Validation limits for peers' entries.
    pub(super) limits: Limits,
    /// The world's gossip topic.
    pub(super) topic: IdentTopic,
    /// The world's key in Kademlia (every node provides it).
    pub(super) world_key: RecordKey,
    /// The store's gateway.
    pub(super) gateway: GatewayHandle,
    /// Batches to publish; `None` once the gateway has stopped.
    outbound: Option<mpsc::Receiver<Batch>>,
    /// Node-wide counters.
    pub(super) stats: Arc<Stats>,
    /// Commands from handles.
    commands: mpsc::Receiver<Command>,
    /// Where shareable addresses are published, best first.
    pub(super) addrs: watch::Sender<Vec<(Multiaddr, AddrKind)>>,
    /// Where bootstrap progress is published.
    pub(super) progress: watch::Sender<SyncProgress>,
    /// Results of helper tasks (sender cloned into them).
    pub(super) internal_tx: mpsc::UnboundedSender<Internal>,
    /// Results of helper tasks.
    internal_rx: mpsc::UnboundedReceiver<Internal>,
    /// Connected peers and the remote addresses of their connections.
    pub(super) peers: HashMap<PeerId, Vec<Multiaddr>>,
    /// Joined addresses and their re-dials.
    pub(super) redial: Redial,
    /// `JOIN`s waiting for their dial's outcome.
    pub(super) pending_joins: HashMap<ConnectionId, oneshot::Sender<Result<(), P2pError>>>,
    /// Bootstrap / anti-entropy: the session running and the peers waiting.
    pub(super) sync: Syncs,
    /// Connected peers a sync exchange showed to be of this world.
    pub(super) synced: HashSet<PeerId>,
    /// `JOIN`s connected, waiting for the first sync exchange to show the peer's world.
    pub(super) joins_awaiting_world: HashMap<PeerId, Vec<oneshot::Sender<Result<(), P2pError>>>>,
    /// Connected peers of another world, format or program: not synced with while connected.
    pub(super) foreign: HashSet<PeerId>,
    /// Last clock offset seen per peer (their clock minus ours), in milliseconds.
    pub(super) offsets: HashMap<PeerId, i64>,
    /// Connected peers whose clock offset has been warned about.
    pub(super) offset_warned: HashSet<PeerId>,
    /// Connected peers whose bad batches have been logged (logged once each).
    pub(super) bad_logged: HashSet<PeerId>,
    /// Local entries nobody could be told about yet (no subscriber), latest per key.
    pub(super) held: HashMap<Key, Entry>,
    /// Whether the DHT has been bootstrapped (after the first connection).
    pub(super) kad_bootstrapped: bool,
    /// When a gossip message was last published (shutdown lets a recent one leave).
    pub(super) last_published: Option<tokio::time::Instant>,
    /// NAT traversal's state (connections, AutoNAT, UPnP, hole punches).
    pub(super) nat: Nat,
    /// Relay reservations this node holds.
    pub(super) reservations: Reservations,
    /// Connected peers that offer to relay.
    pub(super) relay_capable: HashSet<PeerId>,
    /// Who the relay serves.
    pub(super) gate: Arc<RelayGate>,
    /// Where NAT traversal's state is published.
    pub(super) nat_report: watch::Sender<NatReport>,
}

impl EventLoop {
    /// Builds the loop from its setup; [`EventLoop::run`] drives it.
    pub(super) fn new(setup: Setup) -> Self {
        let (internal_tx, internal_rx) = mpsc::unbounded_channel();
        let limits = setup.options.limits;
        let mut this = EventLoop {
            topic: puts_topic(&setup.options.world),
            world_key: RecordKey::new(&format!("cmud/{}", setup.options.world)),
            swarm: setup.swarm,
            limits,
            gateway: setup.gateway,
            outbound: Some(setup.outbound),
            stats: setup.stats,
            commands: setup.commands,
            addrs: setup.addrs,
            progress: setup.progress,
            internal_tx,
            internal_rx,
            peers: HashMap::new(),
            redial: Redial::default(),
            pending_joins: HashMap::new(),
            sync: Syncs::default(),
            joins_awaiting_world: HashMap::new(),
            synced: HashSet::new(),
            foreign: HashSet::new(),
            offsets: HashMap::new(),
            offset_warned: HashSet::new(),
            bad_logged: HashSet::new(),
            held: HashMap::new(),
            kad_bootstrapped: false,
            last_published: None,
            nat: Nat::default(),
            reservations: Reservations::default(),
            relay_capable: HashSet::new(),
            gate: setup.gate,
            nat_report: setup.nat_report,
            options: setup.options,
        };
        if let Some(upnp) = this.swarm.behaviour_mut().upnp.as_mut() {
            let listen: Vec<Multiaddr> =
                this.addrs.borrow().iter().map(|(a, _)| a.clone()).collect();
            upnp.start(&listen);
            this.nat.upnp = super::nat::UpnpStatus::Searching;
        }
        this.publish_addrs();
        for addr in this.options.join.clone() {
            let peer = peer_of(&addr);
            if let Some(peer) = peer {
                this.swarm
                    .behaviour_mut()
                    .kad
                    .add_address(&peer, addr.clone());
            }
            this.redial.add(addr, peer);
        }
        if let Err(err) = this
            .swarm
            .behaviour_mut()
            .kad
            .start_providing(this.world_key.clone())
        {
            tracing::debug!(%err, "could not record ourselves as a provider of the world");
        }
        this
    }

    /// Runs until a `Shutdown` command or until every handle is dropped.
    pub(super) async fn run(mut self) {
        let mut redial_tick = interval(REDIAL_TICK);
        redial_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut anti_entropy = interval(ANTI_ENTROPY_PERIOD);
        anti_entropy.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut discovery = interval(DISCOVERY_PERIOD);
        discovery.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut nat_tick = interval(NAT_TICK);
        nat_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut stopped = None;
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown(done)) => {
                        self.publish_last().await;
                        stopped = Some(done);
                        break;
                    }
                    Some(command) => self.on_command(command),
                    None => break,
                },
                batch = recv_outbound(&mut self.outbound) => match batch {
                    Some(batch) => self.publish(&batch),
                    None => self.outbound = None,
                },
                Some(internal) = self.internal_rx.recv() => self.on_internal(internal),
                _ = redial_tick.tick() => self.redial_due(),
                _ = anti_entropy.tick() => self.anti_entropy(),
                _ = discovery.tick() => self.discover(),
                _ = nat_tick.tick() => self.nat_tick(),
            }
        }
        self.stats.remote.connected_peers.store(0, Relaxed);
        // Connections and listeners close with the swarm: only then is the caller told, so a
        // node started next on the same port finds it free.
        drop(self);
        tracing::debug!("network stopped");
        if let Some(done) = stopped {
            let _ = done.send(());
        }
    }

    /// Publishes the batches still queued (the node stops its store first, so they are its
    /// last Puts) and drives the swarm a moment so they leave before connections close.
    async fn publish_last(&mut self) {
        let mut batches = Vec::new();
        if let Some(outbound) = &mut self.outbound {
            while let Ok(batch) = outbound.try_recv() {
                batches.push(batch);
            }
        }
        let published = self.publish_together(&batches);
        let recent = self
            .last_published
            .is_some_and(|at| at.elapsed() < SHUTDOWN_GRACE);
        if !published && !recent {
            return;
        }
        let until = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        while let Ok(event) = tokio::time::timeout_at(until, self.swarm.select_next_some()).await {
            self.on_swarm_event(event);
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Peers(reply) => {
                let mut peers: Vec<_> = self
                    .peers
                    .iter()
                    .map(|(peer, addrs)| {
                        (
                            peer.to_string(),
                            addrs.iter().map(ToString::to_string).collect(),
                        )
                    })
                    .collect();
                peers.sort();
                let _ = reply.send(peers);
            }
            Command::Join(addr, reply) => self.join(addr, reply),
            Command::Shutdown(_) => {} // Handled by `run`.
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                self.redial.connected(peer_id, connection_id);
                if let Some(reply) = self.pending_joins.remove(&connection_id) {
                    self.await_world(peer_id, reply);
                }
                let remote = self.nat_connection_up(connection_id, peer_id, &endpoint);
                self.peers.entry(peer_id).or_default().push(remote);
                self.stats
                    .remote
                    .connected_peers
                    .store(self.peers.len(), Relaxed);
                if num_established.get() == 1 {
                    tracing::info!(peer = %peer_id, addr = %endpoint.get_remote_address(), "peer connected");
                    self.on_first_connection(peer_id);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                cause,
            } => {
                let remote = self.nat_connection_down(
                    connection_id,
                    peer_id,
                    &endpoint,
                    num_established == 0,
                );
                if let Some(addrs) = self.peers.get_mut(&peer_id)
                    && let Some(at) = addrs.iter().position(|a| *a == remote)
                {
                    addrs.remove(at);
                }
                if num_established == 0 {
                    tracing::info!(peer = %peer_id, cause = ?cause, "peer disconnected");
                    self.peers.remove(&peer_id);
                    // Per-peer state goes with the peer, or peers coming and going under fresh
                    // identities would grow it without bound.
                    self.offsets.remove(&peer_id);
                    self.offset_warned.remove(&peer_id);
                    self.bad_logged.remove(&peer_id);
                    self.foreign.remove(&peer_id);
                    self.join_failed(peer_id, super::JoinError::Unreachable);
                    self.update_clock_offset();
                    self.redial.disconnected(peer_id);
                }
                self.stats
                    .remote
                    .connected_peers
                    .store(self.peers.len(), Relaxed);
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                tracing::debug!(peer = ?peer_id, %error, "dial failed");
                self.redial.dial_failed(connection_id);
                if let Some(reply) = self.pending_joins.remove(&connection_id) {
                    let _ = reply.send(Err(super::JoinError::of_dial(&error).into()));
                }
                if let Some(peer) = peer_id.filter(|p| !self.swarm.is_connected(p)) {
                    self.join_failed(peer, super::JoinError::of_dial(&error));
                }
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                self.publish_addrs();
            }
            SwarmEvent::ExpiredListenAddr { .. }
            | SwarmEvent::ExternalAddrConfirmed { .. }
            | SwarmEvent::ExternalAddrExpired { .. } => self.publish_addrs(),
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => self.nat_listener_closed(listener_id, reason.err().map(|e| e.to_string())),
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Gossipsub(event) => {
                if let gossipsub::Event::Subscribed { peer_id, topic } = &event
                    && *topic == self.topic.hash()
                {
                    self.note_member(*peer_id);
                }
                self.on_gossip(event)
            }
            BehaviourEvent::Sync(event) => self.on_sync_event(event),
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                self.on_identified(peer_id, info)
            }
            BehaviourEvent::RelayClient(event) => self.on_relay_client(event),
            BehaviourEvent::Dcutr(event) => self.on_dcutr(event),
            BehaviourEvent::Autonat(event) => self.on_autonat(event),
            BehaviourEvent::Upnp(event) => self.on_upnp(event),
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                for (peer, addr) in found {
                    self.swarm.behaviour_mut().kad.add_address(&peer, addr);
                    self.dial_discovered(peer);
                }
            }
            BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                result:
                    QueryResult::GetProviders(Ok(GetProvidersOk::FoundProviders { providers, .. })),
                ..
            }) if self.options.discovery => {
                for peer in providers {
                    self.dial_discovered(peer);
                }
            }
            _ => {}
        }
    }

    /// Publishes the largest clock offset to `INFO` and warns once per peer when it is more
    /// than half the allowed skew.
    pub(super) fn record_clock_offset(&mut self, peer: PeerId, offset_ms: i64) {
        if !self.peers.contains_key(&peer) {
            return;
        }
        self.offsets.insert(peer, offset_ms);
        let half_skew = (self.options.limits.max_clock_skew.as_millis() / 2) as u64;
        if offset_ms.unsigned_abs() > half_skew {
            if self.offset_warned.insert(peer) {
                tracing::warn!(
                    %peer,
                    offset_ms,
                    "CLOCK SKEW: this peer's clock is far from ours; check both machines' time (NTP)"
                );
            }
        } else {
            self.offset_warned.remove(&peer);
        }
        self.update_clock_offset();
    }

    fn update_clock_offset(&self) {
        let largest = self
            .offsets
            .values()
            .copied()
            .max_by_key(|offset| offset.unsigned_abs())
            .unwrap_or(0);
        self.stats.remote.clock_offset_ms.store(largest, Relaxed);
    }
}

/// A peer's clock minus ours, from a timestamp it sent (saturating: the peer controls it).
pub(super) fn offset_ms(their_ms: u64) -> i64 {
    let offset = i128::from(their_ms) - i128::from(crate::store::clock::wall_millis());
    offset.clamp(-i128::from(i64::MAX), i128::from(i64::MAX)) as i64
}

async fn recv_outbound(outbound: &mut Option<mpsc::Receiver<Batch>>) -> Option<Batch> {
    match outbound {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_offsets_from_absurd_timestamps_saturate() {
        assert_eq!(offset_ms(u64::MAX), i64::MAX);
        assert!(offset_ms(0) < 0);
        assert!(offset_ms(0).checked_abs().is_some());
    }
}
