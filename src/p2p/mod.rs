//! The network: one libp2p swarm per node, driven through a command channel.
//!
//! NOTE: this is the interface the rest of the node is built against; the swarm itself
//! (discovery, gossip, bootstrap) is the network issue's work and lands behind it.

pub mod identity;

use std::sync::Arc;
use std::time::Duration;

use libp2p::Multiaddr;
use libp2p::identity::Keypair;
use tokio::sync::{mpsc, watch};

use crate::store::Batch;
use crate::store::gateway::GatewayHandle;
use crate::store::stats::Stats;

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
    /// The network task has stopped.
    #[error("the network has stopped")]
    Stopped,
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
    /// Whether a taken listen port is an error (a host) or falls back to a free one (a player).
    pub strict_listen: bool,
    /// Clock skew limit, for offset warnings.
    pub max_clock_skew: Duration,
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

/// The way to the network task; cheap to clone.
#[derive(Clone, Debug)]
pub struct NetworkHandle {
    /// Current listen addresses with `/p2p/<peer id>`.
    addrs: watch::Receiver<Vec<Multiaddr>>,
}

impl NetworkHandle {
    /// Multiaddrs (with `/p2p/<peer id>`) a friend can `--join`.
    pub fn shareable_addrs(&self) -> Vec<String> {
        self.addrs
            .borrow()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// Connected peers with their addresses.
    pub async fn peers(&self) -> Vec<(String, Vec<String>)> {
        Vec::new()
    }

    /// Dials `addr` now.
    pub async fn join(&self, addr: &str) -> Result<(), P2pError> {
        let _: Multiaddr = addr
            .parse()
            .map_err(|_| P2pError::BadAddr(addr.to_owned()))?;
        Err(P2pError::Dial(
            "peer-to-peer networking is not built yet".into(),
        ))
    }

    /// Stops the network task.
    pub async fn shutdown(&self) {}
}

/// Starts the network task.
pub async fn start(setup: NetworkSetup) -> Result<NetworkHandle, P2pError> {
    let (_tx, addrs) = watch::channel(Vec::new());
    let mut outbound = setup.outbound;
    tokio::spawn(async move { while outbound.recv().await.is_some() {} });
    Ok(NetworkHandle { addrs })
}
