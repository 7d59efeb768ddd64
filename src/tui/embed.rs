//! What every playing front end does around the game: start the embedded node, connect the
//! game's client to it, and remember what the game learns in `profile.ron`.

use anyhow::Context;

use crate::cli::Settings;
use crate::game::events::Event;
use crate::node::Node;
use crate::rpc::{Kv, KvClient};

/// The embedded node, a client connected to it, and what the player should be told.
pub struct StartedNode {
    /// The running node.
    pub node: Node,
    /// The game's client on the node's RPC port.
    pub kv: KvClient,
    /// Said if the configured RPC port was taken and another one is used.
    pub rpc_moved: Option<String>,
    /// The multiaddrs a friend can `--join`.
    pub addrs: Vec<String>,
}

/// Starts the embedded node and connects a client to its RPC port. Says on stderr (stdout
/// belongs to the game) where friends can join, and if the RPC port had to move.
pub async fn start_node(settings: &Settings) -> anyhow::Result<(Node, KvClient)> {
    let started = start_node_quietly(settings).await?;
    if let Some(moved) = &started.rpc_moved {
        eprintln!("cmud: {moved}");
    }
    for addr in &started.addrs {
        eprintln!("listening on {addr}");
    }
    Ok((started.node, started.kv))
}

/// Like [`start_node`], but returns what to tell the player instead of printing it (the
/// terminal UI shows it in its log: stderr is its screen).
pub async fn start_node_quietly(settings: &Settings) -> anyhow::Result<StartedNode> {
    let node = Node::start(settings.node.clone())
        .await
        .context("starting the embedded node")?;
    let wanted = settings.node.rpc_port;
    let rpc_moved = (wanted != 0 && node.rpc_addr().port() != wanted).then(|| {
        format!(
            "rpc port {wanted} is taken (another cmud?); using {} instead",
            node.rpc_addr()
        )
    });
    let addrs = node.shareable_addrs();
    let kv = KvClient::connect(&node.game_endpoint())
        .await
        .context("connecting to the embedded node")?;
    // Before the screen is taken: a node back from a long absence fetches the world first,
    // from the peers the game would join (`--join`, remembered ones) as well as the
    // configured ones, so they are dialled now rather than once the game starts.
    let peers: Vec<String> = settings
        .joins
        .iter()
        .chain(&settings.profile.peers)
        .cloned()
        .collect();
    kv.wait_for_the_world(|| {
        eprintln!(
            "cmud: syncing the world from peers (this node was away for longer than tombstone_ttl)…"
        );
        for addr in peers {
            let kv = kv.clone();
            // Failures are the game's to report when it joins them again.
            tokio::spawn(async move { kv.join(&addr).await });
        }
    })
    .await
    .context("waiting for the embedded node")?;
    Ok(StartedNode {
        node,
        kv,
        rpc_moved,
        addrs,
    })
}

/// Keeps what the game learned (a chosen name, a joined or failing peer) in `profile.ron`. Other events
/// are ignored. Failures are logged, not fatal: the game goes on.
pub fn remember(settings: &mut Settings, event: &Event) {
    let changed = match event {
        Event::NameChosen(name) => {
            settings.profile.name = Some(name.clone());
            true
        }
        Event::PeerJoined(addr) => settings.profile.add_peer(addr),
        Event::PeerFailed(addr) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            settings.profile.peer_failed(addr, now)
        }
        _ => false,
    };
    if changed && let Err(err) = settings.profile.save(&settings.paths.profile_file) {
        tracing::warn!(%err, "could not save the profile");
    }
}
