//! The libp2p behaviours a cmud node runs, their configuration, and the swarm built from them.
//!
//! Owns protocol names and tuning (gossipsub mesh sizes, timeouts, limits, relay limits);
//! what to do with their events is the event loop's business.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    PeerId, StreamProtocol, Swarm, SwarmBuilder, autonat, connection_limits, dcutr, gossipsub,
    identify, kad, mdns, noise, ping, relay, request_response, tcp, yamux,
};

use super::P2pError;
use super::gate::Gated;
use super::nat::{NatOptions, RelayGate};
use super::upnp;
use super::wire::{MAX_MESSAGE_BYTES, SYNC_PROTOCOL, SyncCodec};

/// Our own Kademlia protocol, so cmud nodes never mix with the public IPFS DHT.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/cmud/kad/1.0.0");

/// Identify's protocol version string.
pub const IDENTIFY_PROTOCOL: &str = "/cmud/id/1.0.0";

/// How long a quiet connection stays open (libp2p's 10 s default drops quiet friends).
pub const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(3600);

/// How long a sync request may take before it fails.
pub const SYNC_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Sync streams open at once on one connection, in both directions. An honest peer has one
/// request in flight each way; each inbound one holds a frame being read and a gateway read
/// being served, so libp2p's default of 100 let one connection queue 100 full-replica scans.
const MAX_SYNC_STREAMS: usize = 8;

/// How often mDNS asks the LAN for cmud nodes.
const MDNS_QUERY_INTERVAL: Duration = Duration::from_secs(30);

/// Gossipsub heartbeat period.
const HEARTBEAT: Duration = Duration::from_millis(500);

/// Connections to one peer at most: a relayed one and the direct ones hole punching makes
/// (over TCP and QUIC, possibly from both sides at once) must fit together.
const MAX_CONNECTIONS_PER_PEER: u32 = 5;

/// AutoNAT's first probe, soon after the first peers have told this node how they see it.
const AUTONAT_BOOT_DELAY: Duration = Duration::from_secs(2);

/// AutoNAT probes again this often while the answer is uncertain.
const AUTONAT_RETRY: Duration = Duration::from_secs(10);

/// AutoNAT probes again this often once it is sure.
const AUTONAT_REFRESH: Duration = Duration::from_secs(300);

/// AutoNAT asks the same peer again after this long (a world often has one backbone).
const AUTONAT_THROTTLE_SERVER: Duration = Duration::from_secs(5);

/// Established connections at most, so a peer cannot exhaust file descriptors.
const MAX_CONNECTIONS: u32 = 256;

/// Connections being set up at most, in each direction.
const MAX_PENDING_CONNECTIONS: u32 = 64;

/// Everything a cmud node speaks.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    /// Caps connections so a peer cannot exhaust file descriptors.
    pub limits: connection_limits::Behaviour,
    /// Keeps links alive and measures round trips.
    pub ping: ping::Behaviour,
    /// Learns peers' listen addresses and protocols.
    pub identify: identify::Behaviour,
    /// Finds the world's nodes (every node provides the world's key).
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    /// LAN discovery, when switched on.
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    /// Gossip of batched Puts (kept off relayed connections until the relay is the only way).
    pub gossipsub: Gated<gossipsub::Behaviour>,
    /// Bootstrap and anti-entropy (`/cmud/sync/2`; kept off relayed connections likewise).
    pub sync: Gated<request_response::Behaviour<SyncCodec>>,
    /// Reservations and circuits through relays (the transport side comes from the builder).
    pub relay_client: relay::client::Behaviour,
    /// Relays for members of the world while this node is reachable (see [`RelayGate`]).
    pub relay: relay::Behaviour,
    /// Upgrades relayed connections to direct ones (hole punching).
    pub dcutr: dcutr::Behaviour,
    /// Whether this node is reachable (v1: a status, and probes over any connection, so a
    /// backbone that only accepts connections learns it is public).
    pub autonat: autonat::v1::Behaviour,
    /// Confirms candidate addresses through peers this node dialled (AutoNAT v2).
    pub autonat_v2: autonat::v2::client::Behaviour,
    /// Answers peers' AutoNAT v2 probes.
    pub autonat_v2_server: autonat::v2::server::Behaviour,
    /// The home router's port mapping, when switched on.
    pub upnp: Toggle<upnp::Behaviour>,
}

/// The gossipsub configuration every cmud node uses (tests build crafted peers from it too).
pub fn gossipsub_config() -> Result<gossipsub::Config, P2pError> {
    gossipsub::ConfigBuilder::default()
        .heartbeat_interval(HEARTBEAT)
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        .max_transmit_size(MAX_MESSAGE_BYTES)
        // Worlds are small: keep the mesh small and consistent.
        .mesh_n_low(2)
        .mesh_n(4)
        .mesh_n_high(8)
        .mesh_outbound_min(1)
        .build()
        .map_err(|err| P2pError::Setup(format!("gossipsub config: {err}")))
}

/// How a swarm is built.
#[derive(Clone, Debug)]
pub struct SwarmOptions {
    /// Whether mDNS runs.
    pub mdns: bool,
    /// Whether listen addresses are kept out of identify (see [`build_swarm`]).
    pub hide_addrs: bool,
    /// NAT traversal settings.
    pub nat: NatOptions,
    /// Who the relay serves; the event loop keeps it current.
    pub gate: Arc<RelayGate>,
}

/// Builds the behaviours for `keypair`, with the relay client the builder made.
fn behaviour(
    keypair: &Keypair,
    options: &SwarmOptions,
    relay_client: relay::client::Behaviour,
) -> Result<Behaviour, P2pError> {
    let (mdns_on, hide_addrs) = (options.mdns, options.hide_addrs);
    let peer_id = keypair.public().to_peer_id();
    let gossipsub = gossipsub::Behaviour::new(
        gossipsub::MessageAuthenticity::Signed(keypair.clone()),
        gossipsub_config()?,
    )
    .map_err(|err| P2pError::Setup(format!("gossipsub: {err}")))?;

    let mut kad_config = kad::Config::new(KAD_PROTOCOL);
    kad_config.set_query_timeout(Duration::from_secs(30));
    // The event loop bootstraps once it has a peer and then with each discovery round;
    // kad's own timer would only warn "no known peers" on a node that is alone.
    kad_config.set_periodic_bootstrap_interval(None);
    if let Some(size) = NonZeroUsize::new(20) {
        kad_config.set_replication_factor(size);
    }
    let mut kad =
        kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_config);
    // Friends' worlds have no confirmed external addresses; answer DHT queries until AutoNAT
    // says peers cannot reach this node (the event loop then makes it a client).
    kad.set_mode(Some(kad::Mode::Server));

    let identify = identify::Behaviour::new(
        identify::Config::new(IDENTIFY_PROTOCOL.to_owned(), keypair.public())
            .with_agent_version(format!("cmud/{}", env!("CARGO_PKG_VERSION")))
            .with_hide_listen_addrs(hide_addrs)
            // A new relayed address must reach peers soon: they pass it on to the world.
            .with_push_listen_addr_updates(!hide_addrs)
            .with_cache_size(if hide_addrs { 0 } else { 100 }),
    );
    let mdns = if mdns_on {
        // libp2p's 5-minute query interval leaves two players who start at the same moment
        // unaware of each other for minutes; a LAN query every 30 s costs nothing.
        let config = mdns::Config {
            query_interval: MDNS_QUERY_INTERVAL,
            ..mdns::Config::default()
        };
        match mdns::tokio::Behaviour::new(config, peer_id) {
            Ok(mdns) => Some(mdns),
            Err(err) => {
                tracing::warn!(%err, "mDNS is unavailable; LAN friends must --join");
                None
            }
        }
    } else {
        None
    };
    let limits = connection_limits::ConnectionLimits::default()
        .with_max_established_per_peer(Some(MAX_CONNECTIONS_PER_PEER))
        .with_max_established(Some(MAX_CONNECTIONS))
        .with_max_pending_incoming(Some(MAX_PENDING_CONNECTIONS))
        .with_max_pending_outgoing(Some(MAX_PENDING_CONNECTIONS));
    let sync = request_response::Behaviour::with_codec(
        SyncCodec,
        [(SYNC_PROTOCOL, request_response::ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(SYNC_REQUEST_TIMEOUT)
            .with_max_concurrent_streams(MAX_SYNC_STREAMS),
    );
    Ok(Behaviour {
        limits: connection_limits::Behaviour::new(limits),
        ping: ping::Behaviour::new(ping::Config::new()),
        identify,
        kad,
        mdns: Toggle::from(mdns),
        gossipsub: Gated::new(gossipsub),
        sync: Gated::new(sync),
        relay_client,
        relay: relay_server(peer_id, &options.nat, &options.gate),
        dcutr: dcutr::Behaviour::new(peer_id),
        autonat: autonat_v1(peer_id, &options.nat),
        autonat_v2: autonat::v2::client::Behaviour::default(),
        autonat_v2_server: autonat::v2::server::Behaviour::default(),
        upnp: Toggle::from(
            options
                .nat
                .upnp
                .then(|| upnp::Behaviour::new(options.nat.assume_global_addresses)),
        ),
    })
}

/// The relay: libp2p's reservation and circuit counts from config, per-circuit limits large
/// enough to carry a world, and only for members of the world while this node is reachable
/// (the relay behaviour has one set of limits for everyone, so everyone else is refused).
fn relay_server(peer_id: PeerId, nat: &NatOptions, gate: &Arc<RelayGate>) -> relay::Behaviour {
    let admit = |gate: Arc<RelayGate>| {
        move |peer: PeerId, _: &libp2p::Multiaddr, _: std::time::Instant| gate.admits(&peer)
    };
    let mut config = relay::Config {
        max_reservations: nat.relay.max_reservations,
        max_circuits: nat.relay.max_circuits,
        max_circuit_duration: Duration::from_secs(nat.relay.max_circuit_secs),
        max_circuit_bytes: nat.relay.max_circuit_bytes,
        ..relay::Config::default()
    };
    config
        .reservation_rate_limiters
        .push(Box::new(admit(gate.clone())));
    config
        .circuit_src_rate_limiters
        .push(Box::new(admit(gate.clone())));
    relay::Behaviour::new(peer_id, config)
}

/// AutoNAT v1, probing soon and often enough that a player learns within seconds.
fn autonat_v1(peer_id: PeerId, nat: &NatOptions) -> autonat::v1::Behaviour {
    autonat::v1::Behaviour::new(
        peer_id,
        autonat::v1::Config {
            boot_delay: AUTONAT_BOOT_DELAY,
            retry_interval: AUTONAT_RETRY,
            refresh_interval: AUTONAT_REFRESH,
            throttle_server_period: AUTONAT_THROTTLE_SERVER,
            only_global_ips: !nat.assume_global_addresses,
            ..autonat::v1::Config::default()
        },
    )
}

/// Builds a swarm for a plain node: no UPnP, default relay limits (tests build crafted peers
/// with it). `hide_addrs` keeps listen addresses out of identify, so peers reach this node
/// only through addresses they were given (tests that route every byte through a proxy).
pub fn build_swarm(
    keypair: Keypair,
    mdns_on: bool,
    hide_addrs: bool,
) -> Result<Swarm<Behaviour>, P2pError> {
    build_node_swarm(
        keypair,
        SwarmOptions {
            mdns: mdns_on,
            hide_addrs,
            nat: NatOptions::default(),
            gate: RelayGate::new(),
        },
    )
}

/// Builds a swarm on TCP and QUIC (noise + yamux on TCP), with DNS names in multiaddrs where
/// the system's resolver configuration can be read, and the relay client's transport.
pub fn build_node_swarm(
    keypair: Keypair,
    options: SwarmOptions,
) -> Result<Swarm<Behaviour>, P2pError> {
    let behaviour_err = |err| P2pError::Setup(format!("behaviour: {err}"));
    let transport_err = |err| P2pError::Setup(format!("transport: {err}"));
    let idle = |config: libp2p::swarm::Config| {
        config.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT)
    };
    let tcp = || tcp::Config::default().nodelay(true);
    let make = |key: &Keypair, relay_client| {
        behaviour(key, &options, relay_client)
            .map_err(|err| Box::new(err) as Box<dyn std::error::Error + Send + Sync>)
    };
    let with_dns = SwarmBuilder::with_existing_identity(keypair.clone())
        .with_tokio()
        .with_tcp(tcp(), noise::Config::new, yamux::Config::default)
        .map_err(transport_err)?
        .with_quic()
        .with_dns();
    let swarm = match with_dns {
        Ok(builder) => builder
            .with_relay_client(noise::Config::new, yamux::Config::default)
            .map_err(transport_err)?
            .with_behaviour(make)
            .map_err(behaviour_err)?
            .with_swarm_config(idle)
            .build(),
        Err(err) => {
            tracing::warn!(%err, "no DNS resolver configuration; /dns addresses will not dial");
            SwarmBuilder::with_existing_identity(keypair)
                .with_tokio()
                .with_tcp(tcp(), noise::Config::new, yamux::Config::default)
                .map_err(transport_err)?
                .with_quic()
                .with_relay_client(noise::Config::new, yamux::Config::default)
                .map_err(transport_err)?
                .with_behaviour(make)
                .map_err(behaviour_err)?
                .with_swarm_config(idle)
                .build()
        }
    };
    Ok(swarm)
}
