//! What the benches share: a real node on loopback and an authenticated raw connection to its
//! RPC port, the way a pipelining Redis client talks to it.

use std::io::{Read, Write};
use std::net::TcpStream;

use cmud::node::{Node, NodeOptions};
use tempfile::TempDir;
use tokio::runtime::Runtime;

/// A one-actor node in a fresh folder, with a connection that has sent `AUTH`.
pub struct BenchNode {
    pub runtime: Runtime,
    pub node: Node,
    pub stream: TcpStream,
    _dir: TempDir,
}

impl BenchNode {
    /// Starts the node and authenticates one connection with its token.
    pub fn start() -> BenchNode {
        let runtime = Runtime::new().expect("runtime");
        let dir = tempfile::tempdir().expect("temp dir");
        let node = runtime
            .block_on(Node::start(NodeOptions::local(dir.path().join("bench"), 1)))
            .expect("node");
        let endpoint = node.rpc_endpoint();
        let mut stream = TcpStream::connect(endpoint.addr).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        stream.write_all(&endpoint.auth_line()).expect("AUTH");
        let mut ok = [0u8; 5];
        stream.read_exact(&mut ok).expect("AUTH reply");
        assert_eq!(&ok, b"+OK\r\n", "AUTH with the node's token");
        BenchNode {
            runtime,
            node,
            stream,
            _dir: dir,
        }
    }

    /// Closes the connection and shuts the node down.
    pub fn shutdown(self) {
        drop(self.stream);
        self.runtime.block_on(self.node.shutdown());
    }
}
