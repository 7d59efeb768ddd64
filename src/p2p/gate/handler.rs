//! The connection side of [`Gated`](super::Gated): the wrapped behaviour's handler once the
//! connection is open, nothing (and refused streams) while it is held, and on relayed
//! connections the count of their streams and the hold on outbound ones after opening.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future;
use libp2p::core::upgrade::DeniedUpgrade;
// The `either` crate's `Either`, as libp2p re-exports it (what its upgrades combine with).
use libp2p::swarm::derive_prelude::Either;
use libp2p::swarm::handler::{
    ConnectionEvent, ConnectionHandler, ConnectionHandlerEvent, DialUpgradeError,
    FullyNegotiatedInbound, FullyNegotiatedOutbound, ListenUpgradeError, SendWrapper,
    SubstreamProtocol,
};

#[cfg(doc)]
use super::OUTBOUND_HOLD;

/// What a [`GatedHandler`] is told by its behaviour.
pub enum GateIn<H: ConnectionHandler> {
    /// The connection is opened: here is the wrapped behaviour's handler for it.
    Open(Opened<H>),
    /// An event for the wrapped handler.
    Inner(H::FromBehaviour),
}

/// A wrapped handler on its way to its connection.
pub struct Opened<H>(pub(super) H);

impl<H: ConnectionHandler> std::fmt::Debug for GateIn<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GateIn::Open(_) => f.write_str("GateIn::Open"),
            GateIn::Inner(event) => f.debug_tuple("GateIn::Inner").field(event).finish(),
        }
    }
}

/// The relayed side of a [`GatedHandler`].
pub(super) struct RelayedSide<H: ConnectionHandler> {
    /// Streams negotiated on relayed connections (shared with the behaviour).
    streams: Arc<AtomicU64>,
    /// How long the wrapped handler's own streams wait once opened.
    hold_for: Duration,
    /// Until when they wait (set on opening).
    hold: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Streams the wrapped handler asked for during the hold.
    waiting: VecDeque<SubstreamProtocol<H::OutboundProtocol, H::OutboundOpenInfo>>,
}

impl<H: ConnectionHandler> RelayedSide<H> {
    pub(super) fn new(streams: Arc<AtomicU64>, hold_for: Duration) -> Self {
        RelayedSide {
            streams,
            hold_for,
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

/// The handler of a [`Gated`](super::Gated) behaviour: the wrapped handler, absent on a held relayed
/// connection (which then refuses the wrapped protocols' streams).
pub struct GatedHandler<H: ConnectionHandler> {
    /// The wrapped handler, once the connection is open.
    inner: Option<H>,
    /// On relayed connections: the count of their streams and the hold after opening.
    relayed: Option<RelayedSide<H>>,
}

impl<H: ConnectionHandler> GatedHandler<H> {
    /// The handler of a direct connection: open from the start.
    pub(super) fn direct(inner: H) -> Self {
        GatedHandler {
            inner: Some(inner),
            relayed: None,
        }
    }

    /// The handler of a held relayed connection, counting its streams in `streams` once open
    /// and holding its own streams for `hold_for` after opening ([`OUTBOUND_HOLD`]).
    pub(super) fn held(streams: Arc<AtomicU64>, hold_for: Duration) -> Self {
        GatedHandler {
            inner: None,
            relayed: Some(RelayedSide::new(streams, hold_for)),
        }
    }

    /// Whether the wrapped handler is in place.
    #[cfg(test)]
    pub(super) fn is_open(&self) -> bool {
        self.inner.is_some()
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
                    relayed.hold = Some(Box::pin(tokio::time::sleep(relayed.hold_for)));
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
