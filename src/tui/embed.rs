//! What every playing front end does around the game: start the embedded node, connect the
//! game's client to it, and remember what the game learns in `profile.ron`.

use anyhow::Context;

use crate::cli::Settings;
use crate::game::events::Event;
use crate::node::Node;
use crate::rpc::KvClient;

/// Starts the embedded node and connects a client to its RPC port. Says on stderr (stdout
/// belongs to the game) where friends can join, and if the RPC port had to move.
pub async fn start_node(settings: &Settings) -> anyhow::Result<(Node, KvClient)> {
    let node = Node::start(settings.node.clone())
        .await
        .context("starting the embedded node")?;
    let wanted = settings.node.rpc_port;
    if wanted != 0 && node.rpc_addr().port() != wanted {
        eprintln!(
            "cmud: rpc port {wanted} is taken (another cmud?); using {} instead",
            node.rpc_addr()
        );
    }
    for addr in node.shareable_addrs() {
        eprintln!("listening on {addr}");
    }
    let kv = KvClient::connect(node.rpc_addr())
        .await
        .context("connecting to the embedded node")?;
    Ok((node, kv))
}

/// Keeps what the game learned (a chosen name, a joined peer) in `profile.ron`. Other events
/// are ignored. Failures are logged, not fatal: the game goes on.
pub fn remember(settings: &mut Settings, event: &Event) {
    let changed = match event {
        Event::NameChosen(name) => {
            settings.profile.name = Some(name.clone());
            true
        }
        Event::PeerJoined(addr) => settings.profile.add_peer(addr),
        _ => false,
    };
    if changed && let Err(err) = settings.profile.save(&settings.paths.profile_file) {
        tracing::warn!(%err, "could not save the profile");
    }
}
