//! Reachability from the internet: what this node knows about its NAT, the addresses a friend
//! can really use, and the bookkeeping behind relays and hole punching.
//!
//! Pure state and pure functions: the event loop (`reach`) feeds it swarm events and acts on
//! what it answers. Nothing here talks to the network. The types a front end sees (address
//! kinds, reachability) carry no libp2p types, so the game can use them as they are.

mod conns;

use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use libp2p::core::ConnectedPoint;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

pub use conns::RelayGate;
pub(super) use conns::{Conn, Nat};

/// How a node deals with NATs (from config.ron).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatOptions {
    /// Whether the home router is asked for a port mapping (UPnP IGD).
    pub upnp: bool,
    /// Whether private and reserved addresses count as internet addresses (a campus, a lab,
    /// the namespace tests).
    pub assume_global_addresses: bool,
    /// Whether this node relays for members of its world once it is reachable.
    pub relay_server: bool,
    /// Relay limits.
    pub relay: RelayLimits,
    /// How long a relayed connection waits for a direct one to the same peer before gossip
    /// and sync run over it.
    pub relay_fallback: Duration,
}

/// Limits of the relay a reachable node serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayLimits {
    /// Reservations held at once.
    pub max_reservations: usize,
    /// Circuits relayed at once.
    pub max_circuits: usize,
    /// Longest life of one circuit, in seconds.
    pub max_circuit_secs: u64,
    /// Most bytes one circuit carries (both ways together).
    pub max_circuit_bytes: u64,
}

impl Default for RelayLimits {
    /// libp2p's reservation and circuit counts, and per-circuit limits large enough to carry
    /// a world (libp2p's 2 minutes and 128 KiB cannot).
    fn default() -> Self {
        RelayLimits {
            max_reservations: 128,
            max_circuits: 16,
            max_circuit_secs: 3600,
            max_circuit_bytes: 256 * 1024 * 1024,
        }
    }
}

/// How long a relayed connection waits by default for hole punching (or any direct connection
/// to the same peer) before gossip and sync run over it. Hole punches succeed on the first
/// attempt almost always, within seconds.
pub const RELAY_FALLBACK: Duration = Duration::from_secs(30);

impl Default for NatOptions {
    /// Off where it reaches beyond the machine (UPnP searches the LAN): tests and tools turn
    /// on what they need; `cli` sets the user's choices.
    fn default() -> Self {
        NatOptions {
            upnp: false,
            assume_global_addresses: false,
            relay_server: true,
            relay: RelayLimits::default(),
            relay_fallback: RELAY_FALLBACK,
        }
    }
}

/// What AutoNAT concluded about this node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NatStatus {
    /// Not tested yet, or no peer could test it.
    #[default]
    Unknown,
    /// Peers on the internet reached one of its addresses.
    Public,
    /// Peers tried and could not reach it.
    Private,
}

impl NatStatus {
    /// The `INFO` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            NatStatus::Unknown => "unknown",
            NatStatus::Public => "public",
            NatStatus::Private => "private",
        }
    }
}

/// Where the router's port mapping stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum UpnpStatus {
    /// Switched off (`upnp: false`).
    #[default]
    Off,
    /// Looking for the router.
    Searching,
    /// The router maps these addresses to this node.
    Mapped(Vec<Multiaddr>),
    /// No router answered, or it refused; the reason.
    Unavailable(String),
}

impl std::fmt::Display for UpnpStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpnpStatus::Off => f.write_str("off"),
            UpnpStatus::Searching => f.write_str("searching"),
            UpnpStatus::Mapped(addrs) => {
                let addrs: Vec<String> = addrs.iter().map(ToString::to_string).collect();
                write!(f, "mapped {}", addrs.join(","))
            }
            UpnpStatus::Unavailable(_) => f.write_str("unavailable"),
        }
    }
}

/// What kind of address a friend is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AddrKind {
    /// Confirmed reachable from the internet.
    Internet,
    /// Through a relay that holds a reservation for this node.
    Relay,
    /// A local address: only machines on the same network can use it.
    Lan,
}

impl AddrKind {
    /// The RPC spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AddrKind::Internet => "internet",
            AddrKind::Relay => "relay",
            AddrKind::Lan => "lan",
        }
    }
}

impl FromStr for AddrKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "internet" => Ok(AddrKind::Internet),
            "relay" => Ok(AddrKind::Relay),
            "lan" => Ok(AddrKind::Lan),
            other => Err(format!("unknown address kind {other:?}")),
        }
    }
}

/// An address a friend can join, with its kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedAddr {
    /// The multiaddr, with `/p2p/<peer id>`.
    pub addr: String,
    /// What it is good for.
    pub kind: AddrKind,
}

/// Whether friends on the internet can join this node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reachability {
    /// Directly, at an internet address.
    Direct,
    /// Only through a relay.
    ViaRelay,
    /// Not yet.
    #[default]
    NotYet,
}

impl Reachability {
    /// From the kinds of the addresses this node can share.
    pub fn of(kinds: impl IntoIterator<Item = AddrKind>) -> Self {
        let best = kinds.into_iter().min();
        match best {
            Some(AddrKind::Internet) => Reachability::Direct,
            Some(AddrKind::Relay) => Reachability::ViaRelay,
            _ => Reachability::NotYet,
        }
    }

    /// The `INFO` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Reachability::Direct => "direct",
            Reachability::ViaRelay => "relay",
            Reachability::NotYet => "none",
        }
    }
}

/// The part this node plays in the DHT (Kademlia).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DhtMode {
    /// Answers other nodes' queries and sits in their routing tables.
    #[default]
    Server,
    /// Only asks: a node that peers cannot reach would fill routing tables with addresses
    /// nobody can dial.
    Client,
}

impl DhtMode {
    /// The mode for a node whose reachability is `status`: a client only once peers tried
    /// and could not reach it. A node nobody could test yet (alone, on a LAN, on loopback)
    /// stays a server, or a world of such nodes would have nobody to answer its lookups.
    pub fn for_status(status: NatStatus) -> Self {
        match status {
            NatStatus::Private => DhtMode::Client,
            NatStatus::Public | NatStatus::Unknown => DhtMode::Server,
        }
    }

    /// The `INFO` spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DhtMode::Server => "server",
            DhtMode::Client => "client",
        }
    }
}

/// What `INFO` shows about NAT traversal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NatReport {
    /// AutoNAT's conclusion (public once an internet address is confirmed).
    pub status: NatStatus,
    /// Confirmed external addresses.
    pub external_addrs: Vec<Multiaddr>,
    /// The router's port mapping.
    pub upnp: UpnpStatus,
    /// Open connections that are direct.
    pub connections_direct: usize,
    /// Open connections through a relay.
    pub connections_relayed: usize,
    /// Relayed connections upgraded to direct ones by hole punching.
    pub hole_punch_ok: u64,
    /// Hole punches that gave up.
    pub hole_punch_failed: u64,
    /// Whether friends on the internet can join.
    pub reachability: Reachability,
    /// Relayed connections that carry the world (no direct one formed in time).
    pub connections_relayed_world: usize,
    /// Gossip and sync streams opened over relayed connections so far.
    pub streams_relayed: u64,
    /// The part this node plays in the DHT.
    pub kad_mode: DhtMode,
}

/// Whether `addr` runs through a relay.
pub fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

/// The remote address of a connection as `PEERS` shows it. libp2p names the far end of an
/// inbound relayed connection by its peer id alone; it is named here as the circuit it is
/// (this node's relayed listen address, then the peer).
pub fn remote_addr(endpoint: &ConnectedPoint, peer: PeerId) -> Multiaddr {
    match endpoint {
        ConnectedPoint::Listener { local_addr, .. } if is_relayed(local_addr) => {
            let mut circuit: Multiaddr = local_addr
                .iter()
                .take_while(|p| !matches!(p, Protocol::P2pCircuit))
                .collect();
            circuit.push(Protocol::P2pCircuit);
            circuit.with(Protocol::P2p(peer))
        }
        other => other.get_remote_address().clone(),
    }
}

/// Whether `ip` is an internet address (or may be taken for one).
pub fn is_global(ip: IpAddr, assume_global: bool) -> bool {
    let never = ip.is_loopback() || ip.is_unspecified() || ip.is_multicast();
    match ip {
        _ if never => false,
        _ if assume_global => true,
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_private()
                || v4.is_link_local()
                || v4.is_documentation()
                || v4.is_broadcast()
                || a == 0
                || a >= 240
                || (a == 100 && (b & 0xc0) == 64) // shared address space (carrier NAT)
                || (a == 198 && (b & 0xfe) == 18) // benchmarking
                || (a == 192 && b == 0 && v4.octets()[2] == 0)) // protocol assignments
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            !((first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link local
                || (first == 0x2001 && v6.segments()[1] == 0xdb8)) // documentation
        }
    }
}

/// Whether `addr` is a loopback address.
pub fn is_loopback(addr: &Multiaddr) -> bool {
    ip_of(addr).is_some_and(|ip| ip.is_loopback())
}

/// The IP address of a multiaddr, if it starts with one.
pub fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    match addr.iter().next()? {
        Protocol::Ip4(v4) => Some(IpAddr::V4(v4)),
        Protocol::Ip6(v6) => Some(IpAddr::V6(v6)),
        _ => None,
    }
}

/// The addresses a friend can use, best first: confirmed internet addresses, then relayed
/// ones, then local ones, each once. `listen` and `external` carry `/p2p/<id>` already.
pub fn shared_addrs(
    listen: &[Multiaddr],
    external: &[Multiaddr],
    assume_global: bool,
) -> Vec<(Multiaddr, AddrKind)> {
    let mut out: Vec<(Multiaddr, AddrKind)> = Vec::new();
    for addr in external.iter().chain(listen) {
        if out.iter().any(|(a, _)| a == addr) {
            continue;
        }
        let kind = if is_relayed(addr) {
            AddrKind::Relay
        } else if external.contains(addr)
            && ip_of(addr).is_some_and(|ip| is_global(ip, assume_global))
        {
            AddrKind::Internet
        } else {
            AddrKind::Lan
        };
        out.push((addr.clone(), kind));
    }
    // Stable: within a kind, the order the swarm gave them.
    out.sort_by_key(|(_, kind)| *kind);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ma(text: &str) -> Multiaddr {
        text.parse().unwrap()
    }

    #[test]
    fn addresses_come_best_first_and_once() {
        let public = ma("/ip4/1.2.3.4/tcp/7441");
        let lan = ma("/ip4/192.168.1.5/tcp/7441");
        let relayed = ma("/ip4/1.2.3.9/tcp/7441/p2p-circuit");
        let shared = shared_addrs(
            &[lan.clone(), relayed.clone(), public.clone()],
            std::slice::from_ref(&public),
            false,
        );
        assert_eq!(
            shared,
            vec![
                (public, AddrKind::Internet),
                (relayed, AddrKind::Relay),
                (lan, AddrKind::Lan)
            ]
        );
    }

    #[test]
    fn a_confirmed_private_address_is_lan_unless_assumed_global() {
        let lab = ma("/ip4/203.0.113.11/tcp/7441");
        let kinds = |assume| shared_addrs(&[], std::slice::from_ref(&lab), assume)[0].1;
        assert_eq!(kinds(false), AddrKind::Lan);
        assert_eq!(kinds(true), AddrKind::Internet);
        assert!(!is_global("127.0.0.1".parse().unwrap(), true));
        assert!(is_global("8.8.8.8".parse().unwrap(), false));
        assert!(!is_global("100.64.0.1".parse().unwrap(), false));
    }

    #[test]
    fn reachability_follows_the_best_address() {
        use AddrKind::*;
        assert_eq!(Reachability::of([Lan, Internet]), Reachability::Direct);
        assert_eq!(Reachability::of([Lan, Relay]), Reachability::ViaRelay);
        assert_eq!(Reachability::of([Lan]), Reachability::NotYet);
        assert_eq!(Reachability::of([]), Reachability::NotYet);
        for kind in [Internet, Relay, Lan] {
            assert_eq!(kind.as_str().parse::<AddrKind>(), Ok(kind));
        }
    }

    #[test]
    fn an_inbound_relayed_connection_is_named_as_its_circuit() {
        let relay = PeerId::random();
        let me = PeerId::random();
        let them = PeerId::random();
        let local = ma(&format!(
            "/ip4/1.2.3.9/tcp/7441/p2p/{relay}/p2p-circuit/p2p/{me}"
        ));
        let endpoint = ConnectedPoint::Listener {
            local_addr: local,
            send_back_addr: ma(&format!("/p2p/{them}")),
        };
        assert_eq!(
            remote_addr(&endpoint, them),
            ma(&format!(
                "/ip4/1.2.3.9/tcp/7441/p2p/{relay}/p2p-circuit/p2p/{them}"
            ))
        );
    }

    #[test]
    fn only_a_node_known_to_be_unreachable_is_a_dht_client() {
        assert_eq!(DhtMode::for_status(NatStatus::Private), DhtMode::Client);
        assert_eq!(DhtMode::for_status(NatStatus::Public), DhtMode::Server);
        assert_eq!(DhtMode::for_status(NatStatus::Unknown), DhtMode::Server);
    }
}
