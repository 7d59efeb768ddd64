//! Asks the home router for a port mapping (UPnP IGD) and offers the mapped addresses to the
//! swarm as external address candidates, which AutoNAT then confirms or not.
//!
//! libp2p's own `upnp` behaviour maps only RFC 1918 listen addresses and refuses a router whose
//! outside address is not global, and it cannot be told otherwise; networks whose outside uses
//! such ranges (a campus, a lab, the namespace tests) need `assume_global_addresses`. So this
//! behaviour drives the router with `igd-next` itself, one code path for both cases.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::task::{Context, Poll};
use std::time::Duration;

use igd_next::{PortMappingProtocol, SearchOptions};
use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId};
use tokio::sync::mpsc;

use super::nat::is_global;

/// How long one search for the router waits for an answer.
const SEARCH_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a mapping is asked for; it is renewed at half of it.
const LEASE_SECS: u32 = 3600;

/// How long to wait before searching again after a failure.
const RETRY_AFTER: Duration = Duration::from_secs(300);

/// What the router said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The router forwards these outside addresses to this node.
    Mapped(Vec<Multiaddr>),
    /// No mapping; why.
    Unavailable(String),
}

/// The behaviour; [`Behaviour::start`] begins the search once the listen ports are known.
pub struct Behaviour {
    /// Whether private and reserved outside addresses are accepted.
    assume_global: bool,
    /// Results of the mapping task.
    results: mpsc::UnboundedReceiver<Event>,
    /// Where the mapping task sends its results (cloned into it at start).
    results_tx: mpsc::UnboundedSender<Event>,
    /// The mapping task, stopped when the behaviour goes.
    task: Option<tokio::task::JoinHandle<()>>,
    /// Events for the swarm.
    pending: VecDeque<ToSwarm<Event, Infallible>>,
}

impl Behaviour {
    /// A behaviour that does nothing until started.
    pub fn new(assume_global: bool) -> Self {
        let (results_tx, results) = mpsc::unbounded_channel();
        Behaviour {
            assume_global,
            results,
            results_tx,
            task: None,
            pending: VecDeque::new(),
        }
    }

    /// Starts mapping the TCP and UDP (QUIC) ports of `listen` (IPv4 only: IGD maps IPv4).
    /// Needs a tokio runtime.
    pub fn start(&mut self, listen: &[Multiaddr]) {
        let tcp = listen.iter().find_map(|a| port_of(a, false));
        let udp = listen.iter().find_map(|a| port_of(a, true));
        if tcp.is_none() && udp.is_none() || self.task.is_some() {
            return;
        }
        let tx = self.results_tx.clone();
        let assume_global = self.assume_global;
        self.task = Some(tokio::spawn(keep_mapped(tcp, udp, assume_global, tx)));
    }
}

impl Drop for Behaviour {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The listen port of an IPv4 TCP address, or with `quic` of an IPv4 QUIC one.
fn port_of(addr: &Multiaddr, quic: bool) -> Option<u16> {
    let mut parts = addr.iter();
    let Some(Protocol::Ip4(_)) = parts.next() else {
        return None;
    };
    match (parts.next()?, parts.next(), quic) {
        (Protocol::Tcp(port), _, false) => Some(port),
        (Protocol::Udp(port), Some(Protocol::QuicV1), true) => Some(port),
        _ => None,
    }
}

/// Maps the ports, renews the mapping, and searches again after failures, for ever.
async fn keep_mapped(
    tcp: Option<u16>,
    udp: Option<u16>,
    assume_global: bool,
    tx: mpsc::UnboundedSender<Event>,
) {
    loop {
        let (event, wait) = match map_once(tcp, udp, assume_global).await {
            Ok(addrs) => (
                Event::Mapped(addrs),
                Duration::from_secs(u64::from(LEASE_SECS) / 2),
            ),
            Err(why) => (Event::Unavailable(why), RETRY_AFTER),
        };
        if tx.send(event).is_err() {
            return;
        }
        tokio::time::sleep(wait).await;
    }
}

/// One search and mapping; the mapped outside addresses, or why there are none.
async fn map_once(
    tcp: Option<u16>,
    udp: Option<u16>,
    assume_global: bool,
) -> Result<Vec<Multiaddr>, String> {
    let options = SearchOptions {
        timeout: Some(SEARCH_TIMEOUT),
        ..SearchOptions::default()
    };
    let gateway = igd_next::aio::tokio::search_gateway(options)
        .await
        .map_err(|err| format!("no UPnP router found: {err}"))?;
    let outside = gateway
        .get_external_ip()
        .await
        .map_err(|err| format!("the router did not give its outside address: {err}"))?;
    if !is_global(outside, assume_global) {
        return Err(format!(
            "the router's outside address {outside} is not an internet address (another NAT \
             is in front of it; set assume_global_addresses if it is)"
        ));
    }
    let inside = local_ip_towards(gateway.addr)
        .map_err(|err| format!("no local address towards the router: {err}"))?;
    let mut mapped = Vec::new();
    for (port, protocol) in [
        (tcp, PortMappingProtocol::TCP),
        (udp, PortMappingProtocol::UDP),
    ] {
        let Some(port) = port else { continue };
        gateway
            .add_port(
                protocol,
                port,
                SocketAddr::new(inside, port),
                LEASE_SECS,
                "cmud",
            )
            .await
            .map_err(|err| format!("the router refused to map {protocol} {port}: {err}"))?;
        let addr = Multiaddr::from(outside);
        mapped.push(match protocol {
            PortMappingProtocol::TCP => addr.with(Protocol::Tcp(port)),
            PortMappingProtocol::UDP => addr.with(Protocol::Udp(port)).with(Protocol::QuicV1),
        });
    }
    Ok(mapped)
}

/// The local address the system would use to reach `gateway` (no packet is sent).
fn local_ip_towards(gateway: SocketAddr) -> std::io::Result<IpAddr> {
    let socket = std::net::UdpSocket::bind(("0.0.0.0", 0))?;
    socket.connect(gateway)?;
    Ok(socket.local_addr()?.ip())
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Event;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, _: FromSwarm) {}

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
        if let Some(event) = self.pending.pop_front() {
            return Poll::Ready(event);
        }
        match self.results.poll_recv(cx) {
            Poll::Ready(Some(event)) => {
                if let Event::Mapped(addrs) = &event {
                    for addr in addrs {
                        self.pending
                            .push_back(ToSwarm::NewExternalAddrCandidate(addr.clone()));
                    }
                }
                self.pending.push_back(ToSwarm::GenerateEvent(event));
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            _ => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_of_tcp_and_quic_listen_addresses() {
        let tcp: Multiaddr = "/ip4/0.0.0.0/tcp/7441".parse().unwrap();
        let quic: Multiaddr = "/ip4/0.0.0.0/udp/7442/quic-v1".parse().unwrap();
        let v6: Multiaddr = "/ip6/::/tcp/7441".parse().unwrap();
        assert_eq!(port_of(&tcp, false), Some(7441));
        assert_eq!(port_of(&tcp, true), None);
        assert_eq!(port_of(&quic, true), Some(7442));
        assert_eq!(port_of(&v6, false), None);
    }
}
