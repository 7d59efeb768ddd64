//! Test helpers for the game: real nodes (alone, or several joined on loopback so that each
//! player plays on a node of their own, as every node writes only its own `p/<id>/`), and
//! sessions driven like a front end would.

use std::sync::Arc;
use std::time::Duration;

use cmud::game::clock::InstantClock;
use cmud::game::content::{Content, RULES_RON, STORY_RON};
use cmud::game::events::{Activity, Event, Input, LineKind, Status};
use cmud::game::session::{self, SessionOptions};
use cmud::node::{Node, NodeOptions};
use cmud::p2p::NetworkOptions;
use cmud::rpc::{Kv, KvClient};
use cmud::store::Limits;
use tokio::sync::mpsc;

/// Long enough for anything on a loaded CI machine; tests wait for events, not for time.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A node with no network in a temporary folder, and a client on it.
pub struct TestNode {
    pub node: Node,
    pub kv: KvClient,
    pub dir: tempfile::TempDir,
}

impl TestNode {
    pub async fn start() -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir).await
    }

    pub async fn start_in(dir: tempfile::TempDir) -> TestNode {
        let node = Node::start(NodeOptions::local(dir.path().join("world"), 2))
            .await
            .unwrap();
        let kv = KvClient::connect(&node.game_endpoint()).await.unwrap();
        TestNode { node, kv, dir }
    }

    /// A node on loopback that joins `join` (its peers' addresses); with `discovery` off it
    /// talks to those only (so a proxy in between stays in between).
    pub async fn start_joined(join: &[String], discovery: bool) -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        let mut options = NodeOptions::local(dir.path().join("world"), 2);
        options.network = Some(NetworkOptions {
            world: options.world.clone(),
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            join: join.iter().map(|a| a.parse().unwrap()).collect(),
            mdns: false,
            strict_listen: false,
            limits: Limits::default(),
            discovery,
            nat: Default::default(),
        });
        let node = Node::start(options).await.unwrap();
        let kv = KvClient::connect(&node.game_endpoint()).await.unwrap();
        TestNode { node, kv, dir }
    }

    /// This node's player id (its peer id).
    pub fn id(&self) -> String {
        self.node.peer_id().to_owned()
    }

    /// The loopback TCP address its swarm listens on (for a proxy in front of it).
    pub fn swarm_addr(&self) -> std::net::SocketAddr {
        let addr: libp2p::Multiaddr = self.node.shareable_addrs()[0].parse().unwrap();
        let port = addr
            .iter()
            .find_map(|p| match p {
                libp2p::multiaddr::Protocol::Tcp(port) => Some(port),
                _ => None,
            })
            .unwrap();
        ([127, 0, 0, 1], port).into()
    }

    /// The multiaddr that reaches this node through a proxy listening on `proxy`.
    pub fn addr_via(&self, proxy: std::net::SocketAddr) -> String {
        format!("/ip4/127.0.0.1/tcp/{}/p2p/{}", proxy.port(), self.id())
    }

    /// A fresh client (another connection, maybe on another query actor).
    pub async fn client(&self) -> KvClient {
        KvClient::connect(&self.node.rpc_endpoint()).await.unwrap()
    }

    /// Stops the node and hands back its folder.
    pub async fn stop(self) -> tempfile::TempDir {
        self.node.shutdown().await;
        self.dir
    }
}

/// The flags of a test node whose files live under `dir`: loopback, free ports, no mDNS.
pub fn node_args(dir: &std::path::Path) -> Vec<String> {
    vec![
        "--no-mdns".into(),
        "--rpc-port".into(),
        "0".into(),
        "--actors".into(),
        "2".into(),
        "--listen".into(),
        "/ip4/127.0.0.1/tcp/0".into(),
        "--data-dir".into(),
        dir.join("data").display().to_string(),
        "--config".into(),
        dir.join("config.ron").display().to_string(),
    ]
}

/// A node with its own identity and a real network on loopback, as `cmud --join ...` would
/// start it, and a client on it.
pub struct NetNode {
    pub node: Node,
    pub kv: KvClient,
    pub dir: tempfile::TempDir,
    /// Its world folder (identity.key, tell.key).
    pub world_dir: std::path::PathBuf,
}

impl NetNode {
    /// Starts a node that joins `join`. Settings come from the command line, so this keeps
    /// compiling whatever fields the network's options gain.
    pub async fn start(join: &[String]) -> NetNode {
        Self::start_with(join, &[]).await
    }

    /// Like [`NetNode::start`], with more flags (`--world other`).
    pub async fn start_with(join: &[String], extra: &[&str]) -> NetNode {
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec!["cmud".to_owned()];
        args.extend(node_args(dir.path()));
        args.extend(extra.iter().map(|s| s.to_string()));
        for addr in join {
            args.extend(["--join".to_owned(), addr.clone()]);
        }
        let options = <cmud::cli::Cli as clap::Parser>::parse_from(args)
            .settings()
            .unwrap()
            .node;
        let world_dir = options.world_dir.clone();
        let node = Node::start(options).await.unwrap();
        assert!(
            !node.shareable_addrs().is_empty(),
            "a node returns from start once it listens"
        );
        let kv = KvClient::connect(&node.game_endpoint()).await.unwrap();
        NetNode {
            node,
            kv,
            dir,
            world_dir,
        }
    }

    /// Two nodes, the second joined to the first.
    pub async fn pair() -> [NetNode; 2] {
        let a = NetNode::start(&[]).await;
        let b = NetNode::start(&a.node.shareable_addrs()).await;
        [a, b]
    }

    /// This node's tell key (made in its world folder on first use).
    pub fn tell_key(&self) -> Arc<cmud::game::tell::TellKey> {
        Arc::new(cmud::game::tell::TellKey::load_or_create(&self.world_dir).unwrap())
    }

    pub async fn stop(self) -> tempfile::TempDir {
        self.node.shutdown().await;
        self.dir
    }
}

/// Wall time, moved ahead at will, with pauses that end at once: heartbeats stay real between
/// players on several nodes while long actions run instantly.
#[derive(Debug, Default)]
pub struct ShiftedClock {
    /// How far ahead of the system clock, in milliseconds.
    ahead_ms: std::sync::atomic::AtomicU64,
}

impl ShiftedClock {
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap();
        self.ahead_ms
            .fetch_add(ms, std::sync::atomic::Ordering::Relaxed);
    }
}

impl cmud::game::clock::Clock for ShiftedClock {
    fn now_ms(&self) -> u64 {
        let ahead = self.ahead_ms.load(std::sync::atomic::Ordering::Relaxed);
        cmud::game::clock::SystemClock.now_ms() + ahead
    }

    fn pause(&self, _: Duration) -> futures::future::BoxFuture<'static, ()> {
        Box::pin(tokio::task::yield_now())
    }
}

/// Rules with some numbers changed, for tests.
pub fn content_with(changes: &[(&str, &str)]) -> Arc<Content> {
    let mut rules = RULES_RON.to_owned();
    for (from, to) in changes {
        assert!(rules.contains(from), "rules.ron has no {from:?}");
        rules = rules.replace(from, to);
    }
    Arc::new(Content::parse(&rules, STORY_RON).unwrap())
}

/// Options for a deterministic session: seeded, instant pauses.
pub fn options(name: Option<&str>, player_id: Option<&str>, seed: u64) -> SessionOptions {
    SessionOptions {
        name: name.map(str::to_owned),
        no_pauses: true,
        seed: Some(seed),
        clock: Some(Arc::new(InstantClock::starting_now())),
        player_id: player_id.map(str::to_owned),
        content: None,
        ..SessionOptions::default()
    }
}

/// A session driven like a front end drives it.
pub struct Player {
    pub inputs: mpsc::Sender<Input>,
    pub events: mpsc::Receiver<Event>,
    /// The latest status.
    pub status: Status,
    /// Lines that arrived while waiting for something else (news).
    pub backlog: Vec<(LineKind, String)>,
    /// Names chosen (Event::NameChosen).
    pub chosen: Vec<String>,
    /// Addresses the game said to remember (Event::PeerJoined).
    pub joined: Vec<String>,
    /// Whether a long action runs, as far as the events read so far say.
    pub busy: bool,
    marks: u64,
}

impl Player {
    /// Starts a session and waits for its greeting; returns it with the greeting's lines.
    pub async fn start<K: Kv>(kv: K, options: SessionOptions) -> (Player, Vec<String>) {
        let (inputs, events) = session::spawn(kv, options);
        let mut player = Player {
            inputs,
            events,
            status: Status::default(),
            backlog: Vec::new(),
            chosen: Vec::new(),
            joined: Vec::new(),
            busy: false,
            marks: 0,
        };
        let greeting = player.run_raw("").await;
        (player, greeting.into_iter().map(|(_, t)| t).collect())
    }

    /// The next event, or a panic after the deadline.
    pub async fn next(&mut self) -> Option<Event> {
        let event = tokio::time::timeout(DEADLINE, self.events.recv())
            .await
            .expect("the session went quiet");
        match &event {
            Some(Event::Status(status)) => self.status = status.clone(),
            Some(Event::NameChosen(name)) => self.chosen.push(name.clone()),
            Some(Event::PeerJoined(addr)) => self.joined.push(addr.clone()),
            Some(Event::Progress(progress)) => self.busy = progress.is_some(),
            _ => {}
        }
        event
    }

    /// Sends a line and returns its output (kind and text, echoes left out): everything up
    /// to a comment mark sent after it, and, if it started a long action, up to its end.
    pub async fn run_raw(&mut self, line: &str) -> Vec<(LineKind, String)> {
        self.marks += 1;
        let mark = format!("# mark {}", self.marks);
        if !line.is_empty() {
            self.inputs
                .send(Input::Line(line.to_owned()))
                .await
                .unwrap();
        }
        self.inputs.send(Input::Line(mark.clone())).await.unwrap();
        let mut out = Vec::new();
        let mut busy = false;
        let mut marked = false;
        while !marked || busy {
            match self.next().await {
                Some(Event::Line(l)) if l.kind == LineKind::Echo => marked |= l.text == mark,
                Some(Event::Line(l)) => out.push((l.kind, l.text)),
                // Story text runs on by itself; mining and solving are waited for.
                Some(Event::Progress(p)) => busy = p.is_some_and(|p| p.activity != Activity::Story),
                Some(Event::Quit) | None => break,
                Some(_) => {}
            }
        }
        out
    }

    /// Sends a line and returns its output's texts.
    pub async fn run(&mut self, line: &str) -> Vec<String> {
        self.run_raw(line)
            .await
            .into_iter()
            .map(|(_, t)| t)
            .collect()
    }

    /// Waits until a line (from any command or from news) satisfies `wanted`.
    pub async fn wait_for_line(&mut self, wanted: impl Fn(&str) -> bool) -> String {
        if let Some(i) = self.backlog.iter().position(|(_, t)| wanted(t)) {
            return self.backlog.remove(i).1;
        }
        loop {
            match self.next().await {
                Some(Event::Line(l)) if wanted(&l.text) => return l.text,
                Some(Event::Line(l)) => self.backlog.push((l.kind, l.text)),
                Some(Event::Quit) | None => panic!("the session ended"),
                Some(_) => {}
            }
        }
    }

    /// Waits until no long action runs (lines that arrive meanwhile go to the backlog).
    pub async fn wait_idle(&mut self) {
        while self.busy {
            match self.next().await {
                Some(Event::Line(l)) if l.kind != LineKind::Echo => {
                    self.backlog.push((l.kind, l.text))
                }
                Some(Event::Quit) | None => panic!("the session ended"),
                Some(_) => {}
            }
        }
    }

    /// Runs `line` until its output satisfies `wanted` (the world may take a moment to sync).
    pub async fn run_until(
        &mut self,
        line: &str,
        wanted: impl Fn(&[String]) -> bool,
    ) -> Vec<String> {
        let start = tokio::time::Instant::now();
        loop {
            let out = self.run(line).await;
            if wanted(&out) {
                return out;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{line}: never got it; last: {out:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Quits and waits for the session to end.
    pub async fn quit(mut self) -> Vec<String> {
        self.inputs.send(Input::Line("quit".into())).await.unwrap();
        let mut out = Vec::new();
        loop {
            match self.next().await {
                Some(Event::Line(l)) if l.kind != LineKind::Echo => out.push(l.text),
                Some(Event::Quit) | None => return out,
                Some(_) => {}
            }
        }
    }
}

/// `n` nodes joined into one world on loopback (each joins the first), once every one is
/// connected: one node per player, replicating for real.
pub async fn joined_nodes(n: usize) -> Vec<TestNode> {
    let first = TestNode::start_joined(&[], true).await;
    let addrs = first.node.shareable_addrs();
    let mut nodes = vec![first];
    for _ in 1..n {
        nodes.push(TestNode::start_joined(&addrs, true).await);
    }
    let start = tokio::time::Instant::now();
    for node in &nodes {
        loop {
            let info = node.kv.info().await.unwrap();
            let peers: usize = info["connected_peers"].parse().unwrap_or(0);
            if peers + 1 >= n.min(2) && (node.id() != nodes[0].id() || peers + 1 >= n) {
                break;
            }
            assert!(start.elapsed() < DEADLINE, "the nodes never connected");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    nodes
}
