//! Keeps the game's protocols (gossip and sync) off relayed connections until the event loop
//! opens them.
//!
//! libp2p 0.57 has no notion of a limited connection: every behaviour opens streams on a
//! relayed connection as on any other, so gossipsub meshes and request-response syncs over a
//! relay from its first moment, while hole punching may still give a direct connection. cmud
//! wants the world to flow directly, and over a relay only where no direct connection forms
//! (`reach` decides when). [`Gated`] wraps such a behaviour: the wrapped behaviour does not
//! learn of a relayed connection at all (its connection and its handler are held back) until
//! [`Gated::open_relayed`]; until then the connection refuses the wrapped protocols' streams.
//! Once opened, the wrapped behaviour is told of the connection as if it had just come up, and
//! its handler is handed to the connection.
//!
//! Both ends open at about the same moment (the same wait from the same connection's start),
//! never exactly at once: a newly opened relayed connection accepts streams at once but opens
//! its own only after [`OUTBOUND_HOLD`], so the other end has opened too and does not refuse
//! them (gossipsub would disable itself on that connection, and a refused sync reads as a peer
//! that does not speak it).
//!
//! What is not here: when to open (`reach`), and the protocols themselves.

use std::collections::{HashMap, VecDeque};
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future;
use libp2p::core::transport::PortUse;
use libp2p::core::upgrade::DeniedUpgrade;
use libp2p::core::{ConnectedPoint, Endpoint};
// The `either` crate's `Either`, as libp2p re-exports it (what its upgrades combine with).
use libp2p::swarm::behaviour::{ConnectionClosed, ConnectionEstablished, FromSwarm};
use libp2p::swarm::derive_prelude::Either;
use libp2p::swarm::handler::{
    ConnectionEvent, ConnectionHandler, ConnectionHandlerEvent, DialUpgradeError,
    FullyNegotiatedInbound, FullyNegotiatedOutbound, ListenUpgradeError, SendWrapper,
    SubstreamProtocol,
};
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, NetworkBehaviour, NotifyHandler, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};

use super::nat::is_relayed;

/// How long a newly opened relayed connection waits before opening streams of its own (the
/// other end opens within about a round trip and a tick of its event loop).
pub const OUTBOUND_HOLD: Duration = Duration::from_secs(5);

/// A behaviour whose protocols stay off relayed connections until they are opened.
pub struct Gated<B: NetworkBehaviour> {
    /// The wrapped behaviour.
    inner: B,
    /// Relayed connections held back from `inner`, with how they were made.
    held: HashMap<ConnectionId, (PeerId, ConnectedPoint)>,
    /// Connections `inner` knows of, by peer.
    visible: HashMap<PeerId, Vec<ConnectionId>>,
    /// Handlers of opened connections, to hand to their connections.
    opening: VecDeque<(PeerId, ConnectionId, THandler<B>)>,
    /// Streams of `inner` negotiated on relayed connections (shared with the handlers).
    relayed_streams: Arc<AtomicU64>,
}

impl<B: NetworkBehaviour> Gated<B> {
    /// Wraps `inner`.
    pub fn new(inner: B) -> Self {
        Gated {
            inner,
            held: HashMap::new(),
            visible: HashMap::new(),
            opening: VecDeque::new(),
            relayed_streams: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Lets the wrapped protocols onto a held relayed connection; `false` if it is not held
    /// (gone, direct, or opened already) or the wrapped behaviour refused it.
    pub fn open_relayed(&mut self, connection: ConnectionId) -> bool {
        let Some((peer, endpoint)) = self.held.remove(&connection) else {
            return false;
        };
        let handler = match &endpoint {
            ConnectedPoint::Dialer {
                address,
                role_override,
                port_use,
            } => self.inner.handle_established_outbound_connection(
                connection,
                peer,
                address,
                *role_override,
                *port_use,
            ),
            ConnectedPoint::Listener {
                local_addr,
                send_back_addr,
            } => self.inner.handle_established_inbound_connection(
                connection,
                peer,
                local_addr,
                send_back_addr,
            ),
        };
        let handler = match handler {
            Ok(handler) => handler,
            Err(denied) => {
                tracing::debug!(%peer, %denied, "a relayed connection was refused on opening");
                return false;
            }
        };
        let others = self.visible_count(&peer);
        self.visible.entry(peer).or_default().push(connection);
        self.inner
            .on_swarm_event(FromSwarm::ConnectionEstablished(ConnectionEstablished {
                peer_id: peer,
                connection_id: connection,
                endpoint: &endpoint,
                failed_addresses: &[],
                other_established: others,
            }));
        self.opening.push_back((peer, connection, handler));
        true
    }

    /// Streams of the wrapped protocols negotiated on relayed connections so far.
    pub fn relayed_streams(&self) -> u64 {
        self.relayed_streams.load(Relaxed)
    }

    fn visible_count(&self, peer: &PeerId) -> usize {
        self.visible.get(peer).map_or(0, Vec::len)
    }

    /// Forgets a visible connection; whether it was one.
    fn forget_visible(&mut self, peer: &PeerId, connection: ConnectionId) -> bool {
        let Some(connections) = self.visible.get_mut(peer) else {
            return false;
        };
        let before = connections.len();
        connections.retain(|c| *c != connection);
        let forgotten = connections.len() < before;
        if connections.is_empty() {
            self.visible.remove(peer);
        }
        forgotten
    }

    /// A handler that refuses the wrapped protocols until it is opened.
    fn held_handler(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        endpoint: ConnectedPoint,
    ) -> GatedHandler<B::ConnectionHandler> {
        self.held.insert(connection, (peer, endpoint));
        GatedHandler {
            inner: None,
            relayed: Some(RelayedSide::new(self.relayed_streams.clone())),
        }
    }
}

/// The wrapped behaviour's methods (publish, send a request ...) are the wrapper's.
impl<B: NetworkBehaviour> Deref for Gated<B> {
    type Target = B;

    fn deref(&self) -> &B {
        &self.inner
    }
}

impl<B: NetworkBehaviour> DerefMut for Gated<B> {
    fn deref_mut(&mut self) -> &mut B {
        &mut self.inner
    }
}

impl<B: NetworkBehaviour> NetworkBehaviour for Gated<B> {
    type ConnectionHandler = GatedHandler<B::ConnectionHandler>;
    type ToSwarm = B::ToSwarm;

    fn handle_pending_inbound_connection(
        &mut self,
        connection: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner
            .handle_pending_inbound_connection(connection, local_addr, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if is_relayed(local_addr) {
            let endpoint = ConnectedPoint::Listener {
                local_addr: local_addr.clone(),
                send_back_addr: remote_addr.clone(),
            };
            return Ok(self.held_handler(connection, peer, endpoint));
        }
        let inner = self.inner.handle_established_inbound_connection(
            connection,
            peer,
            local_addr,
            remote_addr,
        )?;
        Ok(GatedHandler::direct(inner))
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: Option<PeerId>,
        addresses: &[Multiaddr],
        role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.inner
            .handle_pending_outbound_connection(connection, peer, addresses, role)
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if is_relayed(addr) {
            let endpoint = ConnectedPoint::Dialer {
                address: addr.clone(),
                role_override,
                port_use,
            };
            return Ok(self.held_handler(connection, peer, endpoint));
        }
        let inner = self.inner.handle_established_outbound_connection(
            connection,
            peer,
            addr,
            role_override,
            port_use,
        )?;
        Ok(GatedHandler::direct(inner))
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(established) => {
                if self.held.contains_key(&established.connection_id) {
                    return;
                }
                let others = self.visible_count(&established.peer_id);
                self.visible
                    .entry(established.peer_id)
                    .or_default()
                    .push(established.connection_id);
                self.inner.on_swarm_event(FromSwarm::ConnectionEstablished(
                    ConnectionEstablished {
                        other_established: others,
                        ..established
                    },
                ));
            }
            FromSwarm::ConnectionClosed(closed) => {
                if self.held.remove(&closed.connection_id).is_some()
                    || !self.forget_visible(&closed.peer_id, closed.connection_id)
                {
                    return;
                }
                let remaining = self.visible_count(&closed.peer_id);
                self.inner
                    .on_swarm_event(FromSwarm::ConnectionClosed(ConnectionClosed {
                        remaining_established: remaining,
                        ..closed
                    }));
            }
            FromSwarm::AddressChange(change) if self.held.contains_key(&change.connection_id) => {
                if let Some((_, endpoint)) = self.held.get_mut(&change.connection_id) {
                    *endpoint = change.new.clone();
                }
            }
            // A connection another behaviour refused: it never came up.
            FromSwarm::DialFailure(failure) => {
                self.held.remove(&failure.connection_id);
                self.inner.on_swarm_event(FromSwarm::DialFailure(failure));
            }
            FromSwarm::ListenFailure(failure) => {
                self.held.remove(&failure.connection_id);
                self.inner.on_swarm_event(FromSwarm::ListenFailure(failure));
            }
            other => self.inner.on_swarm_event(other),
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        self.inner
            .on_connection_handler_event(peer, connection, event);
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        if let Some((peer_id, connection, handler)) = self.opening.pop_front() {
            return Poll::Ready(ToSwarm::NotifyHandler {
                peer_id,
                handler: NotifyHandler::One(connection),
                event: GateIn::Open(Opened(handler)),
            });
        }
        let event = match self.inner.poll(cx) {
            Poll::Ready(event) => event,
            Poll::Pending => return Poll::Pending,
        };
        // "Any connection" must mean one the wrapped behaviour knows of, not a held one.
        let event = match event {
            ToSwarm::NotifyHandler {
                peer_id,
                handler: NotifyHandler::Any,
                event,
            } => {
                let handler = self
                    .visible
                    .get(&peer_id)
                    .and_then(|connections| connections.first())
                    .map_or(NotifyHandler::Any, |c| NotifyHandler::One(*c));
                ToSwarm::NotifyHandler {
                    peer_id,
                    handler,
                    event,
                }
            }
            other => other,
        };
        Poll::Ready(event.map_in(GateIn::Inner))
    }
}

/// What a [`GatedHandler`] is told by its behaviour.
pub enum GateIn<H: ConnectionHandler> {
    /// The connection is opened: here is the wrapped behaviour's handler for it.
    Open(Opened<H>),
    /// An event for the wrapped handler.
    Inner(H::FromBehaviour),
}

/// A wrapped handler on its way to its connection.
pub struct Opened<H>(H);

impl<H: ConnectionHandler> std::fmt::Debug for GateIn<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GateIn::Open(_) => f.write_str("GateIn::Open"),
            GateIn::Inner(event) => f.debug_tuple("GateIn::Inner").field(event).finish(),
        }
    }
}

/// The relayed side of a [`GatedHandler`].
struct RelayedSide<H: ConnectionHandler> {
    /// Streams negotiated on relayed connections (shared with the behaviour).
    streams: Arc<AtomicU64>,
    /// Until when the wrapped handler's own streams wait, once opened.
    hold: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Streams the wrapped handler asked for during the hold.
    waiting: VecDeque<SubstreamProtocol<H::OutboundProtocol, H::OutboundOpenInfo>>,
}

impl<H: ConnectionHandler> RelayedSide<H> {
    fn new(streams: Arc<AtomicU64>) -> Self {
        RelayedSide {
            streams,
            hold: None,
            waiting: VecDeque::new(),
        }
    }

    /// Whether the hold after opening is still on.
    fn holding(&mut self, cx: &mut Context<'_>) -> bool {
        let over = self
            .hold
            .as_mut()
            .is_none_or(|hold| hold.as_mut().poll(cx).is_ready());
        if over {
            self.hold = None;
        }
        !over
    }

    fn count_stream(&self) {
        self.streams.fetch_add(1, Relaxed);
    }
}

/// The handler of a [`Gated`] behaviour: the wrapped handler, absent on a held relayed
/// connection (which then refuses the wrapped protocols' streams).
pub struct GatedHandler<H: ConnectionHandler> {
    /// The wrapped handler, once the connection is open.
    inner: Option<H>,
    /// On relayed connections: the count of their streams and the hold after opening.
    relayed: Option<RelayedSide<H>>,
}

impl<H: ConnectionHandler> GatedHandler<H> {
    /// The handler of a direct connection: open from the start.
    fn direct(inner: H) -> Self {
        GatedHandler {
            inner: Some(inner),
            relayed: None,
        }
    }
}

impl<H: ConnectionHandler> ConnectionHandler for GatedHandler<H> {
    type FromBehaviour = GateIn<H>;
    type ToBehaviour = H::ToBehaviour;
    type InboundProtocol = Either<SendWrapper<H::InboundProtocol>, SendWrapper<DeniedUpgrade>>;
    type OutboundProtocol = H::OutboundProtocol;
    type InboundOpenInfo = Either<H::InboundOpenInfo, ()>;
    type OutboundOpenInfo = H::OutboundOpenInfo;

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol, Self::InboundOpenInfo> {
        match &self.inner {
            Some(inner) => inner
                .listen_protocol()
                .map_upgrade(|upgrade| Either::Left(SendWrapper(upgrade)))
                .map_info(Either::Left),
            None => {
                SubstreamProtocol::new(Either::Right(SendWrapper(DeniedUpgrade)), Either::Right(()))
            }
        }
    }

    fn on_behaviour_event(&mut self, event: GateIn<H>) {
        match (event, &mut self.inner) {
            (GateIn::Open(Opened(handler)), inner @ None) => {
                *inner = Some(handler);
                if let Some(relayed) = &mut self.relayed {
                    relayed.hold = Some(Box::pin(tokio::time::sleep(OUTBOUND_HOLD)));
                }
            }
            (GateIn::Open(_), Some(_)) => {
                tracing::debug!("a connection was opened twice; the first handler stays");
            }
            (GateIn::Inner(event), Some(inner)) => inner.on_behaviour_event(event),
            (GateIn::Inner(event), None) => {
                tracing::debug!(?event, "an event for a held relayed connection was dropped");
            }
        }
    }

    fn connection_keep_alive(&self) -> bool {
        self.inner
            .as_ref()
            .is_some_and(ConnectionHandler::connection_keep_alive)
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<H::OutboundProtocol, H::OutboundOpenInfo, H::ToBehaviour>>
    {
        let Some(inner) = &mut self.inner else {
            return Poll::Pending;
        };
        let Some(relayed) = &mut self.relayed else {
            return inner.poll(cx);
        };
        let holding = relayed.holding(cx);
        if !holding && let Some(protocol) = relayed.waiting.pop_front() {
            return Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest { protocol });
        }
        loop {
            match inner.poll(cx) {
                Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest { protocol })
                    if holding =>
                {
                    relayed.waiting.push_back(protocol);
                }
                other => return other,
            }
        }
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<
            Self::InboundProtocol,
            Self::OutboundProtocol,
            Self::InboundOpenInfo,
            Self::OutboundOpenInfo,
        >,
    ) {
        let Some(inner) = &mut self.inner else {
            // Held: only refused inbound streams and address changes arrive; nothing to do.
            return;
        };
        match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound { protocol, info }) => {
                let (future::Either::Left(protocol), Either::Left(info)) = (protocol, info) else {
                    return; // A stream refused while held, finished after opening.
                };
                if let Some(relayed) = &self.relayed {
                    relayed.count_stream();
                }
                inner.on_connection_event(ConnectionEvent::FullyNegotiatedInbound(
                    FullyNegotiatedInbound { protocol, info },
                ));
            }
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol,
                info,
            }) => {
                if let Some(relayed) = &self.relayed {
                    relayed.count_stream();
                }
                inner.on_connection_event(ConnectionEvent::FullyNegotiatedOutbound(
                    FullyNegotiatedOutbound { protocol, info },
                ));
            }
            ConnectionEvent::ListenUpgradeError(ListenUpgradeError { info, error }) => {
                if let (Either::Left(info), Either::Left(error)) = (info, error) {
                    inner.on_connection_event(ConnectionEvent::ListenUpgradeError(
                        ListenUpgradeError { info, error },
                    ));
                }
            }
            ConnectionEvent::DialUpgradeError(DialUpgradeError { info, error }) => inner
                .on_connection_event(ConnectionEvent::DialUpgradeError(DialUpgradeError {
                    info,
                    error,
                })),
            ConnectionEvent::AddressChange(change) => {
                inner.on_connection_event(ConnectionEvent::AddressChange(change))
            }
            ConnectionEvent::LocalProtocolsChange(change) => {
                inner.on_connection_event(ConnectionEvent::LocalProtocolsChange(change))
            }
            ConnectionEvent::RemoteProtocolsChange(change) => {
                inner.on_connection_event(ConnectionEvent::RemoteProtocolsChange(change))
            }
            _ => {}
        }
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Option<H::ToBehaviour>> {
        match &mut self.inner {
            Some(inner) => inner.poll_close(cx),
            None => Poll::Ready(None),
        }
    }
}
