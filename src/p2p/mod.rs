//! The network: one libp2p swarm per node, run in its own task and driven through a command
//! channel (the `Client` / `EventLoop` / `Command` shape of libp2p's file-sharing example).
//!
//! - [`behaviour`]: the behaviours (TCP and QUIC, identify, ping, mDNS, Kademlia, gossipsub,
//!   `/cmud/sync/2`, relay client and server, DCUtR, AutoNAT, UPnP) and their tuning.
//! - [`nat`]: reachability state and the kinds of shareable addresses (pure); `reach`: the
//!   event loop's side of it (hand-over to direct connections, the relay as a fallback),
//!   `relays`: relay reservations; [`gate`]: gossip and sync kept off relayed connections until then; [`upnp`]:
//!   the home router's port mapping.
//! - [`wire`]: gossip batches and sync messages, postcard-encoded with a format version.
//! - `event_loop`: the task that owns the swarm, with `dial` (joins, re-dials, discovery),
//!   `gossip` (batches) and `sync` (bootstrap, anti-entropy); `redial`: re-dial bookkeeping.
//! - [`progress`]: showing a large bootstrap's progress.
//!
//! The network reaches the replica only through the store's gateway (messages, never shared
//! maps): it publishes what the gateway hands it, validates what peers send before the gateway
//! sees it, and answers bootstrap requests from the gateway's replica.

pub mod behaviour;
mod dial;
mod event_loop;
pub mod gate;
mod gossip;
pub mod identity;
pub mod nat;
pub mod progress;
mod reach;
mod redial;
mod relays;
mod sync;
pub mod upnp;
pub mod wire;

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use libp2p::core::transport::ListenerId;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm, gossipsub};
use tokio::sync::{mpsc, oneshot, watch};

use crate::store::gateway::GatewayHandle;
use crate::store::stats::Stats;
use crate::store::{Batch, Limits};

use behaviour::{Behaviour, SwarmOptions};
use event_loop::EventLoop;
use nat::{AddrKind, NatOptions, NatReport, RelayGate, SharedAddr};

/// How long `JOIN` waits for a dial to succeed or fail.
const JOIN_TIMEOUT: Duration = Duration::from_secs(20);

/// How long `start` waits for the listen addresses to be known.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

/// After the first address of every listener, how long `start` still collects more (an
/// unspecified address reports one per interface).
const LISTEN_SETTLE: Duration = Duration::from_millis(100);

/// Why the network could not start or a command failed.
#[derive(Debug, thiserror::Error)]
pub enum P2pError {
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// A multiaddr did not parse or cannot be dialled.
    #[error("bad multiaddr {0}")]
    BadAddr(String),
    /// Dialling a peer failed.
    #[error("{0}")]
    Dial(String),
    /// The swarm could not be built.
    #[error("cannot set up the network: {0}")]
    Setup(String),
    /// The network task has stopped.
    #[error("the network has stopped")]
    Stopped,
    /// A `JOIN` did not reach a node of this world with the expected peer id.
    #[error("{0}")]
    Join(#[from] JoinError),
}

/// Why a `JOIN` failed, one kind per thing a player can do something about. The text starts
/// with a stable code word (`unreachable:` ...) so a client across the RPC port reads the kind
/// back (`rpc::client`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// Nothing accepted the connection there.
    #[error("unreachable: nothing answers at that address")]
    Unreachable,
    /// The host name does not resolve.
    #[error("no-such-host: the host name does not resolve")]
    NoSuchHost,
    /// A node answered with another peer id than the address names.
    #[error("wrong-peer: the node there is {0}, not the peer id in the address")]
    WrongPeer(String),
    /// A node answered but is of another world (or format).
    #[error("foreign-world: the node there is not of this world ({0})")]
    ForeignWorld(String),
    /// Something answered that does not speak cmud's sync protocol.
    #[error("not-cmud: the program there is not a cmud node")]
    NotCmud,
    /// No answer in time.
    #[error("timeout: no answer within {0} s")]
    Timeout(u64),
    /// Another failure, as libp2p says it.
    #[error("failed: {0}")]
    Other(String),
}

impl JoinError {
    /// The kind of a failed dial.
    fn of_dial(error: &libp2p::swarm::DialError) -> JoinError {
        use libp2p::swarm::DialError;
        match error {
            DialError::WrongPeerId { obtained, .. } => JoinError::WrongPeer(obtained.to_string()),
            DialError::Transport(errors) => {
                let text = format!("{errors:?}");
                if text.contains("ConnectionRefused") {
                    JoinError::Unreachable
                } else if text.contains("ResolveError") || text.contains("NoRecordsFound") {
                    JoinError::NoSuchHost
                } else if text.contains("TimedOut") || text.contains("Unreachable") {
                    JoinError::Unreachable
                } else {
                    JoinError::Other(error.to_string())
                }
            }
            other => JoinError::Other(other.to_string()),
        }
    }
}

/// How to run the network.
#[derive(Clone, Debug)]
pub struct NetworkOptions {
    /// The world's name (topic and protocol names include it).
    pub world: String,
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Peers to dial on start (and re-dial after a drop).
    pub join: Vec<Multiaddr>,
    /// Whether mDNS discovery runs.
    pub mdns: bool,
    /// Whether a taken port is an error (a host) or falls back to a free one (a player).
    pub strict_listen: bool,
    /// Key, value and clock-skew limits peers' entries are checked against. [`Node::start`]
    /// sets them to the node's own, so the RPC port and the network agree.
    ///
    /// [`Node::start`]: crate::node::Node::start
    pub limits: Limits,
    /// Whether peers are found beyond the joined ones (listen addresses shared by identify,
    /// Kademlia provider lookups). On for real use; tests that route every byte through a
    /// proxy turn it off so nobody learns a direct address.
    pub discovery: bool,
    /// NAT traversal (UPnP, relay, what counts as an internet address).
    pub nat: NatOptions,
}

/// Everything the network task starts with.
pub struct NetworkSetup {
    /// The node identity.
    pub keypair: Keypair,
    /// Options.
    pub options: NetworkOptions,
    /// The store's gateway.
    pub gateway: GatewayHandle,
    /// Batches the gateway publishes.
    pub outbound: mpsc::Receiver<Batch>,
    /// Node-wide counters.
    pub stats: Arc<Stats>,
}

/// How far a bootstrap from a peer has come (for progress display).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncProgress {
    /// Whether an exchange is running.
    pub active: bool,
    /// Entries received so far in it.
    pub received: u64,
    /// Entries the peer holds (an upper bound of what is to come).
    pub total: u64,
}

/// What the network task is asked to do.
pub(crate) enum Command {
    /// List connected peers with their addresses.
    Peers(oneshot::Sender<Vec<(String, Vec<String>)>>),
    /// Dial this address now and keep re-dialling it after drops.
    Join(Multiaddr, oneshot::Sender<Result<(), P2pError>>),
    /// Stop the task.
    Shutdown(oneshot::Sender<()>),
}

/// The way to the network task; cheap to clone.
#[derive(Clone, Debug)]
pub struct NetworkHandle {
    /// Addresses a friend can use, with `/p2p/<peer id>`, best first.
    addrs: watch::Receiver<Vec<(Multiaddr, AddrKind)>>,
    /// NAT traversal's state.
    nat: watch::Receiver<NatReport>,
    /// The task's mailbox.
    commands: mpsc::Sender<Command>,
    /// Progress of the current bootstrap.
    progress: watch::Receiver<SyncProgress>,
    /// This node's peer id.
    peer_id: PeerId,
    /// How long a relayed connection waits before the world flows over it (a `JOIN` of a
    /// relayed address may have to wait that long for its first sync).
    relay_fallback: Duration,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Peers(_) => f.write_str("Peers"),
            Command::Join(addr, _) => write!(f, "Join({addr})"),
            Command::Shutdown(_) => f.write_str("Shutdown"),
        }
    }
}

impl NetworkHandle {
    /// Multiaddrs (with `/p2p/<peer id>`) a friend can `--join`, best first.
    pub fn shareable_addrs(&self) -> Vec<String> {
        self.addrs
            .borrow()
            .iter()
            .map(|(addr, _)| addr.to_string())
            .collect()
    }

    /// The same addresses with what each is good for.
    pub fn labelled_addrs(&self) -> Vec<SharedAddr> {
        self.addrs
            .borrow()
            .iter()
            .map(|(addr, kind)| SharedAddr {
                addr: addr.to_string(),
                kind: *kind,
            })
            .collect()
    }

    /// NAT traversal's state, as `INFO` shows it.
    pub fn nat_report(&self) -> NatReport {
        self.nat.borrow().clone()
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Connected peers with their addresses.
    pub async fn peers(&self) -> Vec<(String, Vec<String>)> {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Peers(tx)).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Dials `addr` now; succeeds once connected to a node of this world (with the peer id the
    /// address names, if it names one), an error saying why not otherwise. The peer is
    /// re-dialled after drops.
    pub async fn join(&self, addr: &str) -> Result<(), P2pError> {
        let addr: Multiaddr = addr
            .parse()
            .map_err(|_| P2pError::BadAddr(addr.to_owned()))?;
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Join(addr.clone(), tx))
            .await
            .map_err(|_| P2pError::Stopped)?;
        // Through a relay, the first sync waits for hole punching, and where none succeeds
        // for the relay to carry the world (and the other end's first streams after it).
        let timeout = if nat::is_relayed(&addr) {
            JOIN_TIMEOUT + self.relay_fallback + gate::OUTBOUND_HOLD
        } else {
            JOIN_TIMEOUT
        };
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(P2pError::Stopped),
            Err(_) => Err(JoinError::Timeout(timeout.as_secs()).into()),
        }
    }

    /// The progress of the bootstrap that is running, if any; changes are signalled.
    pub fn sync_progress(&self) -> watch::Receiver<SyncProgress> {
        self.progress.clone()
    }

    /// Stops the network task (connections close; the gateway stops publishing).
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// The gossipsub topic of a world's Puts.
pub fn puts_topic(world: &str) -> gossipsub::IdentTopic {
    gossipsub::IdentTopic::new(format!("cmud/{world}/puts/1"))
}

/// The peer id at the end of a multiaddr, if it names one.
pub fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|protocol| match protocol {
        Protocol::P2p(peer) => Some(peer),
        _ => None,
    })
}

/// Starts the network task. Returns once the listen addresses are known, so
/// [`NetworkHandle::shareable_addrs`] is complete.
pub async fn start(setup: NetworkSetup) -> Result<NetworkHandle, P2pError> {
    let NetworkSetup {
        keypair,
        options,
        gateway,
        outbound,
        stats,
    } = setup;
    let peer_id = keypair.public().to_peer_id();
    let relay_fallback = options.nat.relay_fallback;
    let gate = RelayGate::new();
    let mut swarm = behaviour::build_node_swarm(
        keypair,
        SwarmOptions {
            mdns: options.mdns,
            hide_addrs: !options.discovery,
            nat: options.nat.clone(),
            gate: gate.clone(),
        },
    )?;
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&puts_topic(&options.world))
        .map_err(|err| P2pError::Setup(format!("gossipsub subscribe: {err}")))?;
    let listeners = listen(&mut swarm, &options)?;
    let addrs = wait_for_addrs(&mut swarm, listeners).await?;
    let addrs = addrs
        .into_iter()
        .map(|addr| (addr, AddrKind::Lan))
        .collect();
    let (addrs_tx, addrs_rx) = watch::channel(addrs);
    let (nat_tx, nat_rx) = watch::channel(NatReport::default());
    let (progress_tx, progress_rx) = watch::channel(SyncProgress::default());
    let (commands_tx, commands_rx) = mpsc::channel(64);
    let event_loop = EventLoop::new(event_loop::Setup {
        swarm,
        options,
        gateway,
        outbound,
        stats,
        commands: commands_rx,
        addrs: addrs_tx,
        progress: progress_tx,
        nat_report: nat_tx,
        gate,
    });
    let task = tokio::spawn(event_loop.run());
    // A panic inside libp2p ends the network task while the rest of the node runs on: say so
    // loudly rather than leave a node that silently reaches nobody.
    tokio::spawn(async move {
        if let Err(err) = task.await
            && err.is_panic()
        {
            tracing::error!(%err, "the network stopped after a panic; restart cmud to reconnect");
        }
    });
    Ok(NetworkHandle {
        addrs: addrs_rx,
        nat: nat_rx,
        commands: commands_tx,
        progress: progress_rx,
        peer_id,
        relay_fallback,
    })
}

/// Starts a listener per address. A taken port is an error with `strict_listen`, otherwise the
/// address is retried on a free port.
fn listen(
    swarm: &mut Swarm<Behaviour>,
    options: &NetworkOptions,
) -> Result<Vec<ListenerId>, P2pError> {
    let mut listeners = Vec::new();
    for addr in &options.listen {
        let taken = port_taken(addr);
        let addr = match taken {
            Some(reason) if options.strict_listen => {
                return Err(P2pError::Listen {
                    addr: addr.clone(),
                    reason: format!("{reason} (is another cmud running? use --listen)"),
                });
            }
            Some(reason) => {
                let free = with_port_zero(addr);
                tracing::warn!(%addr, %reason, "listen port taken; using a free port instead");
                free
            }
            None => addr.clone(),
        };
        let id = swarm
            .listen_on(addr.clone())
            .map_err(|err| P2pError::Listen {
                addr: addr.clone(),
                reason: err.to_string(),
            })?;
        listeners.push(id);
    }
    Ok(listeners)
}

/// Whether a TCP or UDP (QUIC) port is already taken, checked with a plain bind: libp2p
/// listens with `SO_REUSEPORT`, which would let a second cmud share the port silently.
fn port_taken(addr: &Multiaddr) -> Option<String> {
    let mut ip = None;
    let mut port = None;
    for protocol in addr.iter() {
        match protocol {
            Protocol::Ip4(v4) => ip = Some(std::net::IpAddr::V4(v4)),
            Protocol::Ip6(v6) => ip = Some(std::net::IpAddr::V6(v6)),
            Protocol::Tcp(p) => port = Some((p, "TCP")),
            Protocol::Udp(p) => port = Some((p, "UDP")),
            _ => {}
        }
    }
    let (ip, (port, kind)) = (ip?, port?);
    if port == 0 {
        return None;
    }
    let bound = match kind {
        "TCP" => TcpListener::bind((ip, port)).map(drop),
        _ => std::net::UdpSocket::bind((ip, port)).map(drop),
    };
    match bound {
        Ok(()) => None,
        Err(err) if err.kind() == std::io::ErrorKind::AddrInUse => {
            Some(format!("{kind} port {port} is taken"))
        }
        Err(_) => None, // Let libp2p report other problems in its own words.
    }
}

fn with_port_zero(addr: &Multiaddr) -> Multiaddr {
    addr.iter()
        .map(|protocol| match protocol {
            Protocol::Tcp(_) => Protocol::Tcp(0),
            Protocol::Udp(_) => Protocol::Udp(0),
            other => other,
        })
        .collect()
}

/// Drives the swarm until every listener has reported its addresses.
async fn wait_for_addrs(
    swarm: &mut Swarm<Behaviour>,
    listeners: Vec<ListenerId>,
) -> Result<Vec<Multiaddr>, P2pError> {
    let local = *swarm.local_peer_id();
    let mut found: HashMap<ListenerId, Vec<Multiaddr>> = HashMap::new();
    let deadline = tokio::time::Instant::now() + LISTEN_TIMEOUT;
    let mut settle = None;
    if listeners.is_empty() {
        return Ok(Vec::new());
    }
    loop {
        let until = settle.unwrap_or(deadline);
        let event = match tokio::time::timeout_at(until, swarm.select_next_some()).await {
            Ok(event) => event,
            Err(_) if settle.is_some() => break,
            Err(_) => {
                return Err(P2pError::Setup(
                    "no listen address became ready in time".into(),
                ));
            }
        };
        match event {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => found
                .entry(listener_id)
                .or_default()
                .push(address.with_p2p(local).unwrap_or_else(|addr| addr)),
            SwarmEvent::ListenerClosed {
                addresses, reason, ..
            } => {
                return Err(P2pError::Listen {
                    addr: addresses.first().cloned().unwrap_or_else(Multiaddr::empty),
                    reason: format!("{reason:?}"),
                });
            }
            SwarmEvent::ListenerError { error, .. } => {
                return Err(P2pError::Setup(format!("listener failed: {error}")));
            }
            _ => {}
        }
        if settle.is_none() && listeners.iter().all(|id| found.contains_key(id)) {
            settle = Some(tokio::time::Instant::now() + LISTEN_SETTLE);
        }
    }
    Ok(listeners
        .iter()
        .flat_map(|id| found.remove(id).unwrap_or_default())
        .collect())
}
