//! The RPC server: the accept loop that spreads connections over the query actors, and the
//! connection loop each actor runs.
//!
//! A connection reads whatever the socket has, runs every complete command in it against its
//! actor's replica, and writes all the replies back at once: pipelined commands cost one read
//! and one write, with no hop to another thread.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use bytes::BytesMut;
use futures::future::LocalBoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use super::commands::{Flow, NetworkCommand, execute};
use super::resp::{FrameLimits, ProtocolError, Reply, parse_command};
use crate::p2p::NetworkHandle;
use crate::store::actor::{Actor, ConnectionService, Handoff, ToActor};

/// Initial size of a connection's read buffer.
const READ_BUFFER_BYTES: usize = 16 * 1024;

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
}

impl NodeInfo {
    /// Multiaddrs (with `/p2p/<peer id>`) a friend can join, as text.
    pub fn listen_addrs(&self) -> Vec<String> {
        self.network
            .as_ref()
            .map(NetworkHandle::shareable_addrs)
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
        let node = self.node.clone();
        Box::pin(async move {
            if let Err(err) = serve_connection(actor, node, conn).await {
                tracing::debug!(%err, "rpc connection ended with an error");
            }
        })
    }
}

async fn serve_connection(
    actor: Rc<Actor>,
    node: Arc<NodeInfo>,
    conn: Handoff,
) -> std::io::Result<()> {
    let Handoff { stream, unread } = conn;
    let mut stream = TcpStream::from_std(stream)?;
    let mut input = unread;
    input.reserve(READ_BUFFER_BYTES);
    let mut output = BytesMut::with_capacity(READ_BUFFER_BYTES);
    loop {
        loop {
            let args = match parse_command(&mut input, &node.frame_limits) {
                Ok(Some(args)) => args,
                Ok(None) => break,
                Err(err) => return close_with_error(&mut stream, &mut output, &err).await,
            };
            match execute(&actor, &node, &args, &mut output) {
                Flow::Continue => {}
                Flow::Quit => {
                    actor.log_before_reply();
                    stream.write_all(&output).await?;
                    return Ok(());
                }
                Flow::MoveTo(to) => {
                    actor.log_before_reply();
                    stream.write_all(&output).await?;
                    let conn = Handoff {
                        stream: stream.into_std()?,
                        unread: input,
                    };
                    if let Err(conn) = actor.hand_off(to, conn) {
                        tracing::warn!("actor {to} is gone; closing the connection moved to it");
                        drop(conn);
                    }
                    return Ok(());
                }
                Flow::Network(command) => network(&node, command, &mut output).await,
            }
        }
        if !output.is_empty() {
            // Acknowledged writes must be in the log before their acknowledgements leave.
            actor.log_before_reply();
            stream.write_all(&output).await?;
            output.clear();
        }
        // Read in large chunks, so a pipelining client's commands arrive in one read.
        if input.capacity() - input.len() < READ_BUFFER_BYTES / 4 {
            input.reserve(READ_BUFFER_BYTES);
        }
        if stream.read_buf(&mut input).await? == 0 {
            return Ok(());
        }
    }
}

async fn close_with_error(
    stream: &mut TcpStream,
    output: &mut BytesMut,
    err: &ProtocolError,
) -> std::io::Result<()> {
    Reply(output).error(&format!("ERR {err}"));
    stream.write_all(output).await?;
    stream.shutdown().await
}

async fn network(node: &NodeInfo, command: NetworkCommand, out: &mut BytesMut) {
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

/// Accepts connections until `shutdown` turns true, handing them to the actors round-robin.
pub async fn accept_loop(
    listener: TcpListener,
    actors: Vec<mpsc::UnboundedSender<ToActor>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut next = 0usize;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%err, "rpc accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
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
        };
        if actors[index].send(ToActor::Connection(handoff)).is_err() {
            return;
        }
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
