//! The RPC server: what every connection may know about its node ([`NodeInfo`]), the accept
//! loop that admits connections (`maxclients`) and spreads them over the query actors, and
//! binding the loopback port. A connection's own loop is [`super::connection`].

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures::future::LocalBoxFuture;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use super::auth::Secret;
use super::clients::Clients;
use super::commands::NetworkCommand;
use super::connection;
use super::gate::Gate;
use super::login::ConnState;
use super::output::Output;
use super::pubsub;
use super::resp::{FrameLimits, Reply};
use crate::p2p::NetworkHandle;
use crate::p2p::nat::SharedAddr;
use crate::store::actor::{Actor, ConnectionService, Handoff, ToActor};

/// The reply to a connection over `maxclients`, sent as it is closed.
const MAX_CLIENTS_REPLY: &[u8] = b"-ERR max number of clients reached\r\n";

/// First pause of the accept loop after a failed accept (out of file descriptors); it doubles
/// up to [`ACCEPT_BACKOFF_MAX`] while accepts keep failing.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);

/// Longest pause of the accept loop after failed accepts.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Gap between two log lines about failed accepts.
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(10);

/// What every connection may know about its node (read-only, shared by all actors).
pub struct NodeInfo {
    /// The world this node serves.
    pub world: String,
    /// This node's peer id.
    pub peer_id: String,
    /// The RPC port actually bound.
    pub rpc_port: u16,
    /// Limits on frames, derived from the store's key and value limits.
    pub frame_limits: FrameLimits,
    /// The network, if this node has one.
    pub network: Option<NetworkHandle>,
    /// The token clients must send with `AUTH`; `None` when `rpc_auth` is off.
    pub token: Option<Secret>,
    /// The secret of the node's own game (in memory only).
    pub game_secret: Secret,
    /// The largest reply built for one command (`max_client_output_bytes`).
    pub max_reply_bytes: usize,
    /// Every open client and the budgets they share.
    pub clients: Arc<Clients>,
    /// Closed while a node back from a long absence fetches the world again.
    pub gate: Arc<Gate>,
}

impl NodeInfo {
    /// Multiaddrs (with `/p2p/<peer id>`) a friend can join, as text, best first.
    pub fn listen_addrs(&self) -> Vec<String> {
        self.network
            .as_ref()
            .map(NetworkHandle::shareable_addrs)
            .unwrap_or_default()
    }

    /// The same addresses with what each is good for.
    pub fn labelled_addrs(&self) -> Vec<SharedAddr> {
        self.network
            .as_ref()
            .map(NetworkHandle::labelled_addrs)
            .unwrap_or_default()
    }
}

/// Serves RESP on the actors' threads.
pub struct RpcService {
    /// Shared node facts.
    node: Arc<NodeInfo>,
}

impl RpcService {
    /// A service answering for `node`.
    pub fn new(node: Arc<NodeInfo>) -> Self {
        RpcService { node }
    }
}

impl ConnectionService for RpcService {
    fn serve(&self, actor: Rc<Actor>, conn: Handoff) -> LocalBoxFuture<'static, ()> {
        Box::pin(connection::serve(actor, self.node.clone(), conn))
    }

    fn wants_changes(&self) -> bool {
        pubsub::anyone_listening()
    }

    fn changed(&self, key: &[u8], live: bool) {
        pubsub::publish_change(key, live);
    }
}

/// Answers a command that needs the network.
pub async fn network(node: &NodeInfo, command: NetworkCommand, out: &mut Output) {
    let mut reply = Reply(out);
    let Some(net) = &node.network else {
        return reply.error("ERR this node runs without a network");
    };
    match command {
        NetworkCommand::Peers => {
            let peers = net.peers().await;
            reply.array(peers.len());
            for (peer, addrs) in peers {
                reply.array(1 + addrs.len());
                reply.bulk(peer.as_bytes());
                for addr in addrs {
                    reply.bulk(addr.as_bytes());
                }
            }
        }
        NetworkCommand::Join(addr) => match net.join(&addr).await {
            Ok(()) => reply.ok(),
            Err(err) => reply.error(&format!("ERR join {addr}: {err}")),
        },
    }
}

/// Accepts connections until `shutdown` turns true, admitting at most `maxclients` and
/// handing them to the actors round-robin.
pub async fn accept_loop(
    listener: TcpListener,
    node: Arc<NodeInfo>,
    actors: Vec<mpsc::UnboundedSender<ToActor>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut next = 0usize;
    let mut failures = AcceptFailures::default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of file descriptors and the like: the connection waits in the backlog
                // while this loop backs off instead of spinning.
                let pause = failures.failed(&err);
                tokio::select! {
                    _ = tokio::time::sleep(pause) => continue,
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
            }
        };
        failures.succeeded();
        let Some(client) = node.clients.try_open() else {
            // Refused at once; the reply fits any fresh socket's send buffer.
            let _ = stream.try_write(MAX_CLIENTS_REPLY);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let Ok(stream) = stream.into_std() else {
            continue;
        };
        let index = next % actors.len();
        next = next.wrapping_add(1);
        let handoff = Handoff {
            stream,
            unread: BytesMut::new(),
            context: Box::new(ConnState::new(client, node.token.is_some())),
        };
        if actors[index].send(ToActor::Connection(handoff)).is_err() {
            return;
        }
    }
}

/// Failed accepts in a row: how long to pause, and when to say so again.
#[derive(Default)]
struct AcceptFailures {
    /// The current pause; zero after a success.
    pause: Duration,
    /// Failures not yet logged.
    unlogged: u64,
    /// When the last line was logged.
    logged_at: Option<tokio::time::Instant>,
}

impl AcceptFailures {
    /// Counts a failure; returns the pause before the next accept.
    fn failed(&mut self, err: &std::io::Error) -> Duration {
        self.unlogged += 1;
        let now = tokio::time::Instant::now();
        if self.logged_at.is_none_or(|at| now - at >= ACCEPT_LOG_EVERY) {
            tracing::warn!(
                %err,
                failures = self.unlogged,
                "rpc accept failed (more clients than the file limit allows?); backing off"
            );
            self.unlogged = 0;
            self.logged_at = Some(now);
        }
        self.pause = (self.pause * 2).clamp(ACCEPT_BACKOFF_MIN, ACCEPT_BACKOFF_MAX);
        self.pause
    }

    fn succeeded(&mut self) {
        self.pause = Duration::ZERO;
    }
}

/// Binds the RPC listener on loopback at `port`. With `fallback`, a taken port falls back to
/// any free one (a player's second cmud); without it, a taken port is an error.
pub async fn bind(port: u16, fallback: bool) -> std::io::Result<TcpListener> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    match TcpListener::bind(addr).await {
        Ok(listener) => Ok(listener),
        Err(err) if fallback && err.kind() == std::io::ErrorKind::AddrInUse => {
            TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await
        }
        Err(err) => Err(err),
    }
}
