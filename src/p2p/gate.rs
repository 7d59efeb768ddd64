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

mod handler;

use std::collections::{HashMap, VecDeque};
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use libp2p::core::transport::PortUse;
use libp2p::core::{ConnectedPoint, Endpoint};
use libp2p::swarm::behaviour::{ConnectionClosed, ConnectionEstablished, FromSwarm};
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, NetworkBehaviour, NotifyHandler, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};

use super::nat::is_relayed;
pub use handler::{GateIn, GatedHandler, Opened};

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
        GatedHandler::held(self.relayed_streams.clone(), OUTBOUND_HOLD)
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

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use libp2p::core::upgrade::DeniedUpgrade;
    use libp2p::swarm::derive_prelude::Either;
    use libp2p::swarm::handler::{ConnectionEvent, ConnectionHandlerEvent, SubstreamProtocol};
    use libp2p::swarm::{ConnectionHandler, dummy};

    use super::*;

    /// A behaviour that records what the swarm tells it.
    #[derive(Default)]
    struct Recorder {
        /// Connections it made a handler for.
        handlers: Vec<ConnectionId>,
        /// Established connections, with the count of others it was told of.
        established: Vec<(ConnectionId, usize)>,
        /// Closed connections, with the count of remaining ones.
        closed: Vec<(ConnectionId, usize)>,
    }

    impl NetworkBehaviour for Recorder {
        type ConnectionHandler = dummy::ConnectionHandler;
        type ToSwarm = Infallible;

        fn handle_established_inbound_connection(
            &mut self,
            connection: ConnectionId,
            _: PeerId,
            _: &Multiaddr,
            _: &Multiaddr,
        ) -> Result<THandler<Self>, ConnectionDenied> {
            self.handlers.push(connection);
            Ok(dummy::ConnectionHandler)
        }

        fn handle_established_outbound_connection(
            &mut self,
            connection: ConnectionId,
            _: PeerId,
            _: &Multiaddr,
            _: Endpoint,
            _: PortUse,
        ) -> Result<THandler<Self>, ConnectionDenied> {
            self.handlers.push(connection);
            Ok(dummy::ConnectionHandler)
        }

        fn on_swarm_event(&mut self, event: FromSwarm) {
            match event {
                FromSwarm::ConnectionEstablished(e) => self
                    .established
                    .push((e.connection_id, e.other_established)),
                FromSwarm::ConnectionClosed(e) => {
                    self.closed.push((e.connection_id, e.remaining_established))
                }
                _ => {}
            }
        }

        fn on_connection_handler_event(
            &mut self,
            _: PeerId,
            _: ConnectionId,
            event: THandlerOutEvent<Self>,
        ) {
            match event {}
        }

        fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Infallible, Infallible>> {
            Poll::Pending
        }
    }

    fn dial(address: &Multiaddr) -> ConnectedPoint {
        ConnectedPoint::Dialer {
            address: address.clone(),
            role_override: Endpoint::Dialer,
            port_use: PortUse::Reuse,
        }
    }

    fn established(
        peer: PeerId,
        id: ConnectionId,
        endpoint: &ConnectedPoint,
        others: usize,
    ) -> FromSwarm<'_> {
        FromSwarm::ConnectionEstablished(ConnectionEstablished {
            peer_id: peer,
            connection_id: id,
            endpoint,
            failed_addresses: &[],
            other_established: others,
        })
    }

    fn closed(
        peer: PeerId,
        id: ConnectionId,
        endpoint: &ConnectedPoint,
        remaining: usize,
    ) -> FromSwarm<'_> {
        FromSwarm::ConnectionClosed(ConnectionClosed {
            peer_id: peer,
            connection_id: id,
            endpoint,
            cause: None,
            remaining_established: remaining,
        })
    }

    fn addrs(peer: PeerId) -> (Multiaddr, Multiaddr) {
        let relay = PeerId::random();
        let relayed = format!("/ip4/203.0.113.1/tcp/7441/p2p/{relay}/p2p-circuit/p2p/{peer}");
        let direct = "/ip4/203.0.113.9/tcp/7441".parse().expect("multiaddr");
        (relayed.parse().expect("multiaddr"), direct)
    }

    #[test]
    fn a_relayed_connection_stays_hidden_from_the_wrapped_behaviour_until_opened() {
        let mut gated = Gated::new(Recorder::default());
        let peer = PeerId::random();
        let (relayed, direct) = addrs(peer);
        let (c1, c2) = (
            ConnectionId::new_unchecked(1),
            ConnectionId::new_unchecked(2),
        );
        let (e1, e2) = (dial(&relayed), dial(&direct));

        let held = gated
            .handle_established_outbound_connection(
                c1,
                peer,
                &relayed,
                Endpoint::Dialer,
                PortUse::Reuse,
            )
            .expect("accepted");
        assert!(!held.is_open());
        assert!(
            matches!(held.listen_protocol().upgrade(), Either::Right(_)),
            "refuses streams"
        );
        gated.on_swarm_event(established(peer, c1, &e1, 0));
        assert!(gated.handlers.is_empty() && gated.established.is_empty());

        let open = gated
            .handle_established_outbound_connection(
                c2,
                peer,
                &direct,
                Endpoint::Dialer,
                PortUse::Reuse,
            )
            .expect("accepted");
        assert!(open.is_open());
        gated.on_swarm_event(established(peer, c2, &e2, 1));
        assert_eq!(
            gated.established,
            vec![(c2, 0)],
            "the held one is not counted"
        );

        assert!(gated.open_relayed(c1));
        assert!(!gated.open_relayed(c1), "opened once");
        assert_eq!(gated.handlers, vec![c2, c1]);
        assert_eq!(gated.established, vec![(c2, 0), (c1, 1)]);
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        match gated.poll(&mut cx) {
            Poll::Ready(ToSwarm::NotifyHandler {
                handler: NotifyHandler::One(id),
                event: GateIn::Open(_),
                ..
            }) => assert_eq!(id, c1),
            _ => panic!("the opened connection gets its handler"),
        }

        gated.on_swarm_event(closed(peer, c2, &e2, 1));
        gated.on_swarm_event(closed(peer, c1, &e1, 0));
        assert_eq!(gated.closed, vec![(c2, 1), (c1, 0)]);
    }

    #[test]
    fn a_held_connection_that_closes_is_never_shown() {
        let mut gated = Gated::new(Recorder::default());
        let peer = PeerId::random();
        let (relayed, _) = addrs(peer);
        let c1 = ConnectionId::new_unchecked(1);
        let e1 = dial(&relayed);
        let _held = gated
            .handle_established_outbound_connection(
                c1,
                peer,
                &relayed,
                Endpoint::Dialer,
                PortUse::Reuse,
            )
            .expect("accepted");
        gated.on_swarm_event(established(peer, c1, &e1, 0));
        gated.on_swarm_event(closed(peer, c1, &e1, 0));
        assert!(!gated.open_relayed(c1));
        assert!(
            gated.handlers.is_empty() && gated.established.is_empty() && gated.closed.is_empty()
        );
    }

    #[tokio::test]
    async fn an_opened_handler_accepts_the_wrapped_protocols() {
        let mut held: GatedHandler<dummy::ConnectionHandler> =
            GatedHandler::held(Arc::new(AtomicU64::new(0)), OUTBOUND_HOLD);
        held.on_behaviour_event(GateIn::Open(Opened(dummy::ConnectionHandler)));
        assert!(held.is_open());
        assert!(matches!(held.listen_protocol().upgrade(), Either::Left(_)));
    }

    /// A handler that asks for one outbound stream as soon as it is polled.
    struct Asker {
        /// Whether it has asked.
        asked: bool,
    }

    impl ConnectionHandler for Asker {
        type FromBehaviour = Infallible;
        type ToBehaviour = Infallible;
        type InboundProtocol = DeniedUpgrade;
        type OutboundProtocol = DeniedUpgrade;
        type InboundOpenInfo = ();
        type OutboundOpenInfo = ();

        fn listen_protocol(&self) -> SubstreamProtocol<DeniedUpgrade> {
            SubstreamProtocol::new(DeniedUpgrade, ())
        }

        fn poll(
            &mut self,
            _: &mut Context<'_>,
        ) -> Poll<ConnectionHandlerEvent<DeniedUpgrade, (), Infallible>> {
            if std::mem::replace(&mut self.asked, true) {
                return Poll::Pending;
            }
            Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                protocol: SubstreamProtocol::new(DeniedUpgrade, ()),
            })
        }

        fn on_behaviour_event(&mut self, event: Infallible) {
            match event {}
        }

        fn on_connection_event(
            &mut self,
            _: ConnectionEvent<DeniedUpgrade, DeniedUpgrade, (), ()>,
        ) {
        }
    }

    fn asks(handler: &mut GatedHandler<Asker>) -> bool {
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        matches!(
            handler.poll(&mut cx),
            Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest { .. })
        )
    }

    #[tokio::test]
    async fn an_opened_relayed_connection_opens_its_own_streams_only_after_the_hold() {
        let hold = Duration::from_millis(200);
        let mut relayed = GatedHandler::held(Arc::new(AtomicU64::new(0)), hold);
        assert!(!asks(&mut relayed), "held: nothing runs");
        relayed.on_behaviour_event(GateIn::Open(Opened(Asker { asked: false })));
        assert!(!asks(&mut relayed), "the other end may not have opened yet");
        tokio::time::sleep(hold * 2).await;
        assert!(asks(&mut relayed), "the stream asked for during the hold");
        let mut direct = GatedHandler::direct(Asker { asked: false });
        assert!(asks(&mut direct), "a direct connection does not wait");
    }
}
