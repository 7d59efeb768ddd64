//! One running node: the world's folder (locked), the identity, the replica, its RPC port and
//! its network, started and stopped in the right order.
//!
//! `main` and the integration tests start nodes through [`Node::start`]; nothing here knows
//! about front ends.

use std::fs::{self, File, TryLockError};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::p2p::{self, NetworkHandle, NetworkOptions, NetworkSetup, P2pError, identity};
use crate::rpc::auth::{self, Credentials, DEFAULT_USER, GAME_USER, RpcEndpoint, Secret};
use crate::rpc::clients::{self, Clients, RpcOptions};
use crate::rpc::gate;
use crate::rpc::process;
use crate::rpc::resp::FrameLimits;
use crate::rpc::server::{self, NodeInfo, RpcService};
use crate::store::log::LOG_DIR;
use crate::store::stats::Stats;
use crate::store::{Fsync, Limits, OpenStore, Signer, StartOptions, Store, StoreError};

/// File name of the world database inside a world folder.
pub const DB_FILE: &str = "world.redb";

/// File name of the lock that keeps a second cmud off a world folder.
pub const LOCK_FILE: &str = "cmud.lock";

/// Batches the gateway may queue for the network before it waits.
const OUTBOUND_QUEUE: usize = 16;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Another cmud holds the world folder.
    #[error(
        "another cmud is already running on {dir} ({holder}); quit it first, or use another --world or --data-dir"
    )]
    Locked {
        /// The world folder.
        dir: PathBuf,
        /// Who holds it, as far as the lock file says.
        holder: String,
    },
    /// A file in the world folder could not be used.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The replica could not start.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The RPC port could not be bound.
    #[error("cannot bind the rpc port 127.0.0.1:{port}: {source} (use --rpc-port)")]
    Rpc {
        /// The port asked for.
        port: u16,
        /// The error.
        source: io::Error,
    },
    /// The network could not start.
    #[error(transparent)]
    Network(#[from] P2pError),
}

/// How to run a node.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// The world's name.
    pub world: String,
    /// The world's folder (database, identity, lock).
    pub world_dir: PathBuf,
    /// RPC port on 127.0.0.1; 0 picks a free one.
    pub rpc_port: u16,
    /// Whether a taken RPC port falls back to a free one instead of failing.
    pub rpc_fallback: bool,
    /// Number of query actors.
    pub actors: usize,
    /// Key, value and clock-skew limits.
    pub limits: Limits,
    /// When the append-only log is forced to disk.
    pub fsync: Fsync,
    /// The RPC port's access and client limits.
    pub rpc: RpcOptions,
    /// The network, or `None` for a replica that talks to nobody.
    pub network: Option<NetworkOptions>,
}

impl NodeOptions {
    /// Options for a node with no network, `actors` actors and a free RPC port (for tests and
    /// tools).
    pub fn local(world_dir: impl Into<PathBuf>, actors: usize) -> Self {
        NodeOptions {
            world: "cmud".into(),
            world_dir: world_dir.into(),
            rpc_port: 0,
            rpc_fallback: false,
            actors,
            limits: Limits::default(),
            fsync: Fsync::default(),
            rpc: RpcOptions::default(),
            network: None,
        }
    }
}

/// A running node.
pub struct Node {
    /// What connections may know about the node.
    info: Arc<NodeInfo>,
    /// The RPC address bound.
    rpc_addr: SocketAddr,
    /// The replica.
    store: Store,
    /// The network, if any.
    network: Option<NetworkHandle>,
    /// Node-wide counters.
    stats: Arc<Stats>,
    /// Tells the accept loop to stop.
    stop_accepting: watch::Sender<bool>,
    /// The accept loop.
    acceptor: tokio::task::JoinHandle<()>,
    /// Held for the node's lifetime: the world folder's lock.
    _lock: File,
}

impl Node {
    /// Locks the world folder, loads the replica, starts the network and the RPC port.
    pub async fn start(options: NodeOptions) -> Result<Node, NodeError> {
        let dir = &options.world_dir;
        fs::create_dir_all(dir).map_err(|source| NodeError::Io {
            path: dir.clone(),
            source,
        })?;
        let lock = lock_world(dir)?;
        let key_path = dir.join(identity::IDENTITY_FILE);
        let keypair = identity::load_or_create(&key_path).map_err(|source| NodeError::Io {
            path: key_path,
            source,
        })?;
        let peer_id = keypair.public().to_peer_id().to_string();
        let token = rpc_token(dir, &options.rpc)?;
        let rpc_options = capped(options.rpc.clone());
        let signer = Signer::new(&keypair, &options.world).map_err(|err| NodeError::Io {
            path: dir.join(identity::IDENTITY_FILE),
            source: io::Error::other(err),
        })?;

        let open = OpenStore::open(
            &dir.join(DB_FILE),
            &dir.join(LOG_DIR),
            options.fsync,
            options.limits.tombstone_ttl,
            signer,
        )?;
        tracing::info!(
            entries = open.loaded_entries(),
            "loaded the world from disk"
        );
        let actors = options.actors.max(1);
        let stats = Arc::new(Stats::new(actors));
        let gate = Arc::new(gate::at_start(
            open.out_of_contact(),
            options.network.is_some(),
        ));

        let (network, outbound) = match options.network.clone() {
            Some(mut net_options) => {
                net_options.limits = options.limits;
                let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
                let handle = p2p::start(NetworkSetup {
                    keypair,
                    options: net_options,
                    gateway: open.gateway(),
                    outbound: rx,
                    stats: stats.clone(),
                })
                .await?;
                (Some(handle), Some(tx))
            }
            None => (None, None),
        };

        let listener = server::bind(options.rpc_port, options.rpc_fallback)
            .await
            .map_err(|source| NodeError::Rpc {
                port: options.rpc_port,
                source,
            })?;
        let rpc_addr = listener.local_addr().map_err(|source| NodeError::Rpc {
            port: options.rpc_port,
            source,
        })?;
        let info = Arc::new(NodeInfo {
            world: options.world.clone(),
            peer_id: peer_id.clone(),
            rpc_port: rpc_addr.port(),
            frame_limits: frame_limits(&options.limits),
            network: network.clone(),
            token,
            game_secret: Secret::random(),
            max_reply_bytes: rpc_options.max_client_output_bytes,
            clients: Clients::new(rpc_options),
            gate: gate.clone(),
        });
        let store = open.start(StartOptions {
            actors,
            limits: options.limits,
            outbound,
            stats: stats.clone(),
            service: Arc::new(RpcService::new(info.clone())),
        })?;
        if !gate.is_open() {
            tokio::spawn(gate::open_when_resynced(gate, stats.clone()));
        }
        let (stop_accepting, stop_rx) = watch::channel(false);
        let acceptor = tokio::spawn(server::accept_loop(
            listener,
            info.clone(),
            store.actor_mailboxes().to_vec(),
            stop_rx,
        ));
        Ok(Node {
            info,
            rpc_addr,
            store,
            network,
            stats,
            stop_accepting,
            acceptor,
            _lock: lock,
        })
    }

    /// The RPC address (127.0.0.1 and the port actually bound).
    pub fn rpc_addr(&self) -> SocketAddr {
        self.rpc_addr
    }

    /// How an ordinary client (a tool, a test) reaches the RPC port: the address and the token
    /// of `rpc.token` as user `default`.
    pub fn rpc_endpoint(&self) -> RpcEndpoint {
        RpcEndpoint {
            addr: self.rpc_addr,
            credentials: self.info.token.clone().map(|secret| Credentials {
                user: DEFAULT_USER.to_owned(),
                secret,
            }),
        }
    }

    /// How the node's own game reaches the RPC port: its connections are never closed,
    /// delayed or timed out because of other clients.
    pub fn game_endpoint(&self) -> RpcEndpoint {
        RpcEndpoint {
            addr: self.rpc_addr,
            credentials: Some(Credentials {
                user: GAME_USER.to_owned(),
                secret: self.info.game_secret.clone(),
            }),
        }
    }

    /// This node's peer id (also the player's id in the world).
    pub fn peer_id(&self) -> &str {
        &self.info.peer_id
    }

    /// Multiaddrs a friend can `--join`.
    pub fn shareable_addrs(&self) -> Vec<String> {
        self.info.listen_addrs()
    }

    /// The network, if this node has one.
    pub fn network(&self) -> Option<&NetworkHandle> {
        self.network.as_ref()
    }

    /// Node-wide counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Stops accepting, flushes every actor and commits to disk, then stops the network.
    pub async fn shutdown(self) {
        let _ = self.stop_accepting.send(true);
        let _ = self.acceptor.await;
        // The store first: its last Puts reach the network's queue, and the network publishes
        // them before it stops. The other way round they reached no peer until this node
        // came back.
        self.store.shutdown().await;
        if let Some(network) = &self.network {
            network.shutdown().await;
        }
    }
}

/// The token of `rpc.token` in the world folder (created on first start), or `None` with a
/// warning when `rpc_auth` is off.
fn rpc_token(dir: &Path, options: &RpcOptions) -> Result<Option<Secret>, NodeError> {
    if !options.auth {
        tracing::warn!(
            "rpc_auth is off: any local user can read and write this world through the rpc port"
        );
        return Ok(None);
    }
    let path = dir.join(auth::TOKEN_FILE);
    auth::load_or_create_token(&path)
        .map(Some)
        .map_err(|source| NodeError::Io { path, source })
}

/// The RPC options with `maxclients` capped to what the file limit allows, once the soft file
/// limit is raised to the hard one (as Redis does).
fn capped(mut options: RpcOptions) -> RpcOptions {
    process::return_large_buffers_to_the_system();
    let limit = process::raise_fd_limit();
    match limit {
        Some((now, before)) if now > before => {
            tracing::info!(
                before,
                now,
                "file limit (RLIMIT_NOFILE) raised to the hard limit"
            );
        }
        Some((now, _)) => tracing::info!(now, "file limit (RLIMIT_NOFILE) is the hard limit"),
        None => {}
    }
    let allowed = clients::cap_maxclients(options.maxclients, limit.map(|(now, _)| now));
    if allowed < options.maxclients {
        tracing::warn!(
            maxclients = options.maxclients,
            file_limit = limit.map(|(now, _)| now),
            using = allowed,
            "maxclients is more than the file limit allows"
        );
        options.maxclients = allowed;
    }
    options
}

/// Takes the world folder's lock, or says who holds it.
pub fn lock_world(dir: &Path) -> Result<File, NodeError> {
    let path = dir.join(LOCK_FILE);
    let io_err = |source| NodeError::Io {
        path: path.clone(),
        source,
    };
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let holder = fs::read_to_string(&path).unwrap_or_default();
            let holder = match holder.trim() {
                "" => "another process".to_owned(),
                pid => format!("process {pid}"),
            };
            return Err(NodeError::Locked {
                dir: dir.to_owned(),
                holder,
            });
        }
        Err(TryLockError::Error(source)) => return Err(io_err(source)),
    }
    file.set_len(0).map_err(io_err)?;
    write!(file, "{}", std::process::id()).map_err(io_err)?;
    Ok(file)
}

/// Frame limits for the RPC port, from the store's limits. An argument may be up to twice the
/// largest key or value, so a value slightly over the limit gets a plain error and the client
/// keeps its connection; only absurd frames close it.
fn frame_limits(limits: &Limits) -> FrameLimits {
    let largest = limits.max_value_bytes.max(limits.max_key_bytes);
    let defaults = FrameLimits::default();
    FrameLimits {
        max_args: limits.max_args,
        max_arg_bytes: largest.saturating_mul(2),
        max_frame_bytes: defaults.max_frame_bytes.max(largest.saturating_mul(4)),
        ..defaults
    }
}
