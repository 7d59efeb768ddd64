//! Real nodes for the network tests: loopback only, mDNS off, one RPC connection per actor.

use std::collections::BTreeMap;
use std::time::Duration;

use cmud::node::{Node, NodeOptions};
use cmud::p2p::NetworkOptions;
use cmud::rpc::RpcEndpoint;
use cmud::rpc::client::parse_info;
use cmud::store::Limits;
use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use redis::aio::MultiplexedConnection;
use std::net::SocketAddr;

use tempfile::TempDir;
use tokio::time::Instant;

/// The world every test node plays in.
pub const WORLD: &str = "testworld";

/// A generous deadline for things that take a moment on a loaded 2-core CI machine.
pub const SETTLE: Duration = Duration::from_secs(30);

/// A running node and a connection pinned to each of its actors.
pub struct TestNode {
    /// The node (an `Option` so `stop` can take it).
    pub node: Option<Node>,
    /// One connection per actor, index = actor.
    pub actors: Vec<MultiplexedConnection>,
    /// The world folder's parent (kept alive; reused by `restart`).
    pub dir: TempDir,
}

/// Options of a test node.
pub fn options(dir: &TempDir, actors: usize, join: Vec<Multiaddr>, discovery: bool) -> NodeOptions {
    let mut options = NodeOptions::local(dir.path().join(WORLD), actors);
    options.world = WORLD.into();
    options.network = Some(NetworkOptions {
        world: WORLD.into(),
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr")],
        join,
        mdns: false,
        strict_listen: false,
        limits: Limits::default(),
        discovery,
        nat: Default::default(),
    });
    options
}

impl TestNode {
    /// Starts a node with `actors` actors that joins `join`.
    pub async fn start(actors: usize, join: Vec<Multiaddr>, discovery: bool) -> TestNode {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, actors, join, discovery).await
    }

    /// Starts a node in an existing folder (a restart keeps its identity and data).
    pub async fn start_in(
        dir: TempDir,
        actors: usize,
        join: Vec<Multiaddr>,
        discovery: bool,
    ) -> TestNode {
        let options = options(&dir, actors, join, discovery);
        Self::start_with(dir, options).await
    }

    /// Starts a node with custom options in `dir`.
    pub async fn start_with(dir: TempDir, options: NodeOptions) -> TestNode {
        let actors = options.actors;
        let node = Node::start(options).await.expect("node starts");
        let mut conns = Vec::new();
        for actor in 0..actors {
            let mut conn = connect(&node.rpc_endpoint()).await;
            let _: () = redis::cmd("ACTOR")
                .arg(actor)
                .query_async(&mut conn)
                .await
                .expect("ACTOR");
            conns.push(conn);
        }
        TestNode {
            node: Some(node),
            actors: conns,
            dir,
        }
    }

    /// The node.
    pub fn node(&self) -> &Node {
        self.node.as_ref().expect("node running")
    }

    /// Its first listen address with its peer id.
    pub fn addr(&self) -> Multiaddr {
        self.node().shareable_addrs()[0].parse().expect("multiaddr")
    }

    /// Its TCP listen socket address.
    pub fn socket_addr(&self) -> SocketAddr {
        let mut ip = None;
        let mut port = None;
        for protocol in self.addr().iter() {
            match protocol {
                Protocol::Ip4(v4) => ip = Some(v4),
                Protocol::Tcp(p) => port = Some(p),
                _ => {}
            }
        }
        SocketAddr::from((ip.expect("ip4"), port.expect("tcp")))
    }

    /// The address of this node behind `proxy`.
    pub fn addr_via(&self, proxy: SocketAddr) -> Multiaddr {
        format!(
            "/ip4/127.0.0.1/tcp/{}/p2p/{}",
            proxy.port(),
            self.node().peer_id()
        )
        .parse()
        .expect("multiaddr")
    }

    /// `SET key value` on `actor`.
    pub async fn set(&self, actor: usize, key: &str, value: &str) {
        let mut conn = self.actors[actor].clone();
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg(value)
            .query_async(&mut conn)
            .await
            .expect("SET");
    }

    /// `GET key` on `actor`.
    pub async fn get(&self, actor: usize, key: &str) -> Option<String> {
        let mut conn = self.actors[actor].clone();
        redis::cmd("GET")
            .arg(key)
            .query_async(&mut conn)
            .await
            .expect("GET")
    }

    /// `DBSIZE` on `actor`.
    pub async fn dbsize(&self, actor: usize) -> u64 {
        let mut conn = self.actors[actor].clone();
        redis::cmd("DBSIZE")
            .query_async(&mut conn)
            .await
            .expect("DBSIZE")
    }

    /// `INFO` as a map.
    pub async fn info(&self) -> BTreeMap<String, String> {
        let mut conn = self.actors[0].clone();
        let text: String = redis::cmd("INFO")
            .query_async(&mut conn)
            .await
            .expect("INFO");
        parse_info(&text)
    }

    /// One `INFO` field as a number.
    pub async fn info_u64(&self, field: &str) -> u64 {
        self.info()
            .await
            .get(field)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("INFO has no numeric {field}"))
    }

    /// Stops the node and hands back its folder.
    pub async fn stop(mut self) -> TempDir {
        if let Some(node) = self.node.take() {
            node.shutdown().await;
        }
        self.dir
    }
}

/// A connection to an RPC port. Its response timeout is generous: redis' default (500 ms) is
/// shorter than an actor's pause while it applies a large bootstrap batch on a loaded machine.
pub async fn connect(endpoint: &RpcEndpoint) -> MultiplexedConnection {
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(SETTLE));
    redis::Client::open(endpoint.redis_url())
        .expect("client")
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("connect")
}

/// Waits until `key` holds `value` on every actor of every node; returns how long it took.
pub async fn wait_everywhere(
    nodes: &[&TestNode],
    key: &str,
    value: &str,
    deadline: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let mut missing = None;
        'nodes: for (n, node) in nodes.iter().enumerate() {
            for actor in 0..node.actors.len() {
                if node.get(actor, key).await.as_deref() != Some(value) {
                    missing = Some((n, actor));
                    break 'nodes;
                }
            }
        }
        match missing {
            None => return started.elapsed(),
            Some((n, actor)) if started.elapsed() > deadline => {
                panic!("{key}={value} not on node {n} actor {actor} after {deadline:?}")
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// Waits until `check` holds, polling; panics with `what` after `deadline`.
pub async fn wait_until<F, Fut>(what: &str, deadline: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `node` has at least `peers` connected peers.
pub async fn wait_connected(node: &TestNode, peers: u64) {
    wait_until("peers to connect", SETTLE, || async {
        node.info_u64("connected_peers").await >= peers
    })
    .await;
}

/// Two nodes of `actors` actors each, `b` joined to `a` through a proxy; no other route.
pub async fn pair_via_proxy(
    actors: usize,
    delay: Duration,
) -> (TestNode, super::proxy::Proxy, TestNode) {
    let a = TestNode::start(actors, vec![], false).await;
    let proxy = super::proxy::Proxy::start(a.socket_addr(), delay).await;
    let b = TestNode::start(actors, vec![a.addr_via(proxy.addr)], false).await;
    wait_connected(&a, 1).await;
    wait_connected(&b, 1).await;
    // The first Put after connecting may wait for gossipsub's subscription exchange.
    a.set(0, "warmup/a", "1").await;
    b.set(0, "warmup/b", "1").await;
    wait_everywhere(&[&a, &b], "warmup/a", "1", SETTLE).await;
    wait_everywhere(&[&a, &b], "warmup/b", "1", SETTLE).await;
    (a, proxy, b)
}
