//! The multiplayer and node commands: `map`, `who`, `say`, `emote`, `shout`, `top`, `give`,
//! and the node side, `addr` and `join`. Places (`look`, notes) are in `places`, tells in
//! `mail`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::claims;
use super::commands;
use super::ctx::Ctx;
use super::events::{Chat, ChatScope, Detail, Event, Line, LineKind};
use super::names;
use super::news;
use super::player::{Change, Outcome};
use super::schema::Scope;
use super::session::Session;
use crate::rpc::client::{AddrKind, SharedAddr};
use crate::rpc::{Kv, KvError};

/// A player's shown name, with `(unverified)` after it if their claims break the rules.
fn marked(name: String, unverified: bool) -> String {
    if unverified {
        format!("{name} (unverified)")
    } else {
        name
    }
}

impl<K: Kv> Session<K> {
    /// `map`: every character by location, in map order; offline players are marked, and
    /// players whose claims break the rules are marked and come last.
    pub(super) async fn map(&mut self) -> Result<(), KvError> {
        let world = self.world().await?;
        let content = self.ctx.content.clone();
        let now = self.ctx.clock.now_ms();
        let shown = names::display_names(&world);
        let unverified = claims::unverified(&content, &world);
        let mut lines = Vec::new();
        for loc in &content.rules.locations {
            let mut here: Vec<(bool, String)> = world
                .characters()
                .filter(|p| p.loc.as_deref() == Some(loc.id.as_str()))
                .map(|p| {
                    let name = shown.get(&p.id).cloned().unwrap_or_default();
                    let flagged = unverified.contains(&p.id);
                    let mut shown = marked(name, flagged);
                    if p.id != self.ctx.id && !news::online(&content, p, now) {
                        shown.push_str(" (offline)");
                    }
                    (flagged, shown)
                })
                .collect();
            if here.is_empty() {
                continue;
            }
            here.sort_by_key(|(flagged, name)| (*flagged, name.to_lowercase()));
            let here: Vec<String> = here.into_iter().map(|(_, name)| name).collect();
            lines.push(format!("--- {} ({}) ---", loc.name, loc.id));
            lines.push(here.join(", "));
        }
        for text in lines {
            self.ctx.line(LineKind::Info, text).await;
        }
        Ok(())
    }

    /// `who`: the players online now; those whose claims break the rules marked, and last.
    pub(super) async fn who(&mut self) -> Result<(), KvError> {
        let world = self.world().await?;
        let content = &self.ctx.content;
        let shown = names::display_names(&world);
        let unverified: BTreeSet<&String> = claims::unverified(content, &world)
            .iter()
            .filter_map(|id| shown.get(id))
            .collect();
        let mut online: Vec<_> =
            news::presence(content, &world, self.ctx.clock.now_ms(), &self.ctx.id)
                .into_iter()
                .filter(|p| p.online)
                .map(|p| (unverified.contains(&p.name), p))
                .collect();
        // Stable: the presence order (by name) stays within each group.
        online.sort_by_key(|(flagged, _)| *flagged);
        let title = format!("Online now ({}):", online.len());
        self.ctx.line(LineKind::Info, title).await;
        for (flagged, p) in online {
            let name = marked(p.name, flagged);
            let text = format!("  {name} - {}, {}", p.rank, p.location);
            self.ctx.line(LineKind::Info, text).await;
        }
        Ok(())
    }

    /// `say`, `emote` and `shout`.
    pub(super) async fn chat(&mut self, text: &str, kind: ChatKind) -> Result<(), KvError> {
        let verb = kind.verb();
        let text = commands::clean_text(text);
        let max = self.ctx.content.rules.chat.max_chars;
        if text.is_empty() {
            let why = format!(
                "{} what? Type `{verb} <text>`.",
                super::actions::capitalise(verb)
            );
            return self.ctx.reply(LineKind::Error, why).await;
        }
        if text.chars().count() > max {
            let why = format!("That is too long to {verb}: at most {max} characters.");
            return self.ctx.reply(LineKind::Error, why).await;
        }
        let world = self.world().await?;
        let loc = world.player(&self.ctx.id).loc.unwrap_or_default();
        let scope = match kind {
            ChatKind::Say => Scope::Say(loc),
            ChatKind::Emote => Scope::Emote(loc),
            ChatKind::Shout => Scope::Shout,
        };
        self.ctx
            .player
            .apply(Change::Chat {
                scope: scope.clone(),
                text: text.clone(),
            })
            .await?;
        let me = names::display_names(&world)
            .remove(&self.ctx.id)
            .unwrap_or_default();
        let shown = match kind {
            ChatKind::Emote => format!("{me} {text}"),
            _ => format!("You {verb}: {text}"),
        };
        let line_kind = match kind {
            ChatKind::Shout => LineKind::Shout,
            _ => LineKind::Chat,
        };
        let detail = Detail::Chat(Chat {
            scope: ChatScope::from(&scope),
            from: me,
            text,
        });
        self.ctx
            .send(Event::Line(Line::about(line_kind, shown, detail)))
            .await;
        Ok(())
    }

    /// `top`: by rank, then net worth (coins plus the shop value of hardware).
    pub(super) async fn top(&mut self) -> Result<(), KvError> {
        let world = self.world().await?;
        let content = self.ctx.content.clone();
        let rows = news::leaderboard(&content, &world);
        self.ctx
            .line(LineKind::Info, "Leaderboard (rank, then net worth):")
            .await;
        for (i, row) in rows.into_iter().take(content.rules.top_size).enumerate() {
            let text = format!(
                "  {}. {} - {}, worth {} ({} + hardware {})",
                i + 1,
                marked(row.name, row.unverified),
                row.rank,
                content.coins(row.worth),
                row.coins,
                row.hardware,
            );
            self.ctx.line(LineKind::Info, text).await;
        }
        Ok(())
    }

    /// `give <player> <coins>`.
    pub(super) async fn give(&mut self, rest: &str) -> Result<(), KvError> {
        let args: Vec<&str> = rest.split_whitespace().collect();
        let [who, amount] = args.as_slice() else {
            let usage = "Usage: give <player> <coins>, for example `give alice 10`.";
            return self.ctx.reply(LineKind::Error, usage).await;
        };
        let amount = match commands::count(amount, "The coins to give", u64::MAX) {
            Ok(amount) => amount,
            Err(why) => return self.ctx.reply(LineKind::Error, why).await,
        };
        let world = self.world().await?;
        let to = match names::find(&world, who).one(who) {
            Ok(id) if id == self.ctx.id => {
                let why = "Giving coins to yourself changes nothing.";
                return self.ctx.reply(LineKind::Error, why).await;
            }
            Ok(id) => id,
            Err(why) => return self.ctx.reply(LineKind::Error, why).await,
        };
        let shown = names::display_names(&world).remove(&to).unwrap_or_default();
        let outcome = self.ctx.player.apply(Change::Give { to, amount }).await?;
        let (kind, text) = match outcome {
            Outcome::Gave => (
                LineKind::Info,
                format!("You gave {} to {shown}.", self.ctx.content.coins(amount)),
            ),
            Outcome::Unaffordable { balance, .. } => (
                LineKind::Error,
                format!(
                    "You cannot give {}: you have {balance}.",
                    self.ctx.content.coins(amount)
                ),
            ),
            _ => (LineKind::Error, format!("{shown} cannot receive coins.")),
        };
        self.ctx.line(kind, text).await;
        Ok(())
    }

    /// `addr`: where friends can join this node, each address alone on its line, the most
    /// widely reachable first; `addr copy` also asks the front end to copy that first one.
    pub(super) async fn addr(&mut self, rest: &str) -> Result<(), KvError> {
        let copy = match rest.to_lowercase().as_str() {
            "" => false,
            "copy" => true,
            _ => {
                let usage = "Usage: addr, or addr copy to copy your address to the clipboard.";
                return self.ctx.reply(LineKind::Error, usage).await;
            }
        };
        let addrs = match self.ctx.kv.addrs().await {
            Ok(addrs) => addrs,
            Err(KvError::Refused(why)) => {
                let text = format!("No address to share: {why}.");
                return self.ctx.reply(LineKind::Error, text).await;
            }
            Err(err) => return Err(err),
        };
        if addrs.is_empty() {
            let text = "This node is not listening on the network yet, so nobody can join it.";
            return self.ctx.reply(LineKind::Info, text).await;
        }
        self.ctx
            .line(LineKind::Info, reachability_sentence(&addrs))
            .await;
        self.ctx
            .line(
                LineKind::Info,
                "Friends can join you with `cmud --join <address>`, best first:",
            )
            .await;
        if copy {
            self.ctx.send(Event::Copy(addrs[0].addr.clone())).await;
        }
        // Best first as the node ordered them, under one label per kind, each address alone
        // on its line (so it can be copied).
        let mut labelled = None;
        for SharedAddr { addr, kind } in addrs {
            if labelled != Some(kind) {
                labelled = Some(kind);
                let label = match kind {
                    AddrKind::Internet => "internet:",
                    AddrKind::Relay => "via relay:",
                    AddrKind::Lan => "LAN only:",
                };
                self.ctx.line(LineKind::Info, label).await;
            }
            self.ctx.line(LineKind::Address, addr).await;
        }
        Ok(())
    }

    /// `join <multiaddr>`. The node answers once the dial is done, which can take many
    /// seconds: the answer is awaited briefly, then it is reported when it comes and input
    /// stays live meanwhile.
    pub(super) async fn join(&mut self, rest: &str) -> Result<(), KvError> {
        let args: Vec<&str> = rest.split_whitespace().collect();
        let [addr] = args.as_slice() else {
            let usage = "Usage: join <multiaddr>, as a friend's `addr` shows it.";
            return self.ctx.reply(LineKind::Error, usage).await;
        };
        let addr = (*addr).to_owned();
        let (tx, mut rx) = oneshot::channel();
        let ctx = self.ctx.clone();
        let dialled = addr.clone();
        tokio::spawn(async move {
            let result = ctx.kv.join(&dialled).await;
            // Nobody waits any more: report it here.
            if let Err(result) = tx.send(result) {
                report_join(&ctx, &dialled, result).await;
            }
        });
        let result = match tokio::time::timeout(JOIN_WAIT, &mut rx).await {
            Ok(result) => result.ok(),
            Err(_) => {
                // A result sent just now is taken here; after `close` the task reports it.
                rx.close();
                rx.try_recv().ok()
            }
        };
        match result {
            Some(result) => report_join(&self.ctx, &addr, result).await,
            None => {
                let text = format!(
                    "Dialling {} in the background; play on.",
                    commands::shorten(&addr)
                );
                self.ctx.line(LineKind::Info, text).await;
            }
        }
        Ok(())
    }
}

/// Which way of talking to the room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ChatKind {
    /// `say`: heard here.
    Say,
    /// `emote`: seen here.
    Emote,
    /// `shout`: heard everywhere.
    Shout,
}

impl ChatKind {
    fn verb(self) -> &'static str {
        match self {
            ChatKind::Say => "say",
            ChatKind::Emote => "emote",
            ChatKind::Shout => "shout",
        }
    }
}

/// How long `join` waits for the dial before it lets the player play on.
const JOIN_WAIT: Duration = Duration::from_secs(1);

/// One plain sentence: can friends on the internet join this node, and if not, what helps.
fn reachability_sentence(addrs: &[SharedAddr]) -> &'static str {
    match addrs.iter().map(|a| a.kind).min() {
        Some(AddrKind::Internet) => "Friends on the internet can join you directly.",
        Some(AddrKind::Relay) => {
            "Friends on the internet can join you only via a relay (forwarding TCP and UDP port \
             7441 on your router would let them join directly)."
        }
        _ => {
            "Friends on the internet cannot join you yet: forward TCP and UDP port 7441 on your \
             router, or join a friend who is reachable. Friends on your network can join."
        }
    }
}

/// Tells how a `join` ended, in one line; an address that connected is remembered.
async fn report_join<K: Kv>(ctx: &Ctx<K>, addr: &str, result: Result<(), KvError>) {
    let shown = commands::shorten(addr);
    match result {
        Ok(()) => {
            let text = format!(
                "Joined {shown}: connected to a node of this world, which syncs in the background."
            );
            ctx.line(LineKind::Info, text).await;
            ctx.send(Event::PeerJoined(addr.to_owned())).await;
        }
        Err(KvError::Join { message, .. }) => {
            let text = format!("Could not join {shown}: {message}.");
            ctx.line(LineKind::Error, text).await;
        }
        Err(err) => ctx.kv_error(&err).await,
    }
}

/// Joins the addresses the player gave on the command line (`--join`, reported like `join`)
/// and the remembered ones (quietly: they are remembered again, or forgotten after a week of
/// failures), in the background.
pub(super) fn join_at_start<K: Kv>(ctx: Arc<Ctx<K>>, flags: Vec<String>, remembered: Vec<String>) {
    for (addr, loud) in flags.iter().map(|a| (a.clone(), true)).chain(
        remembered
            .into_iter()
            .filter(|a| !flags.contains(a))
            .map(|a| (a, false)),
    ) {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let result = ctx.kv.join(&addr).await;
            if loud {
                return report_join(&ctx, &addr, result).await;
            }
            match result {
                Ok(()) => ctx.send(Event::PeerJoined(addr)).await,
                Err(KvError::Join { .. }) => ctx.send(Event::PeerFailed(addr)).await,
                Err(err) => tracing::debug!(%addr, %err, "could not join a remembered peer"),
            }
        });
    }
}

/// Sorts multiaddrs a friend could join so the most widely reachable comes first (the one to
/// share, and the one `addr copy` copies).
pub fn sort_by_reach(addrs: &mut [String]) {
    addrs.sort_by_key(|addr| reach(addr));
}

/// How widely a multiaddr can be dialled: public addresses and names first, then relayed
/// ones, then private networks (a LAN), then this machine only. Lower is wider.
fn reach(addr: &str) -> u8 {
    use std::net::{Ipv4Addr, Ipv6Addr};
    let mut parts = addr.split('/').skip(1);
    let (protocol, host) = (parts.next().unwrap_or_default(), parts.next());
    let relayed = addr.contains("/p2p-circuit");
    let local = match (protocol, host.unwrap_or_default()) {
        ("ip4", host) => host.parse::<Ipv4Addr>().ok().map(|ip| {
            if ip.is_loopback() || ip.is_unspecified() {
                3
            } else if ip.is_private() || ip.is_link_local() {
                2
            } else {
                0
            }
        }),
        ("ip6", host) => host.parse::<Ipv6Addr>().ok().map(|ip| {
            if ip.is_loopback() || ip.is_unspecified() {
                3
            } else if ip.is_unicast_link_local() || ip.is_unique_local() {
                2
            } else {
                0
            }
        }),
        _ => Some(0),
    };
    match (local.unwrap_or(0), relayed) {
        (0, true) => 1,
        (rank, _) => rank,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(kind: AddrKind) -> SharedAddr {
        SharedAddr {
            addr: "/ip4/203.0.113.7/tcp/7441".into(),
            kind,
        }
    }

    #[test]
    fn the_sentence_follows_the_best_address() {
        let lan = shared(AddrKind::Lan);
        let relay = shared(AddrKind::Relay);
        let internet = shared(AddrKind::Internet);
        assert!(reachability_sentence(&[lan.clone(), internet]).contains("directly"));
        assert!(reachability_sentence(&[lan.clone(), relay]).contains("only via a relay"));
        let none = reachability_sentence(&[lan]);
        assert!(none.contains("cannot join you yet") && none.contains("TCP and UDP port 7441"));
    }

    #[test]
    fn the_widest_reaching_address_sorts_first() {
        let mut addrs = vec![
            "/ip4/127.0.0.1/tcp/7441/p2p/A",
            "/ip4/192.168.1.20/tcp/7441/p2p/A",
            "/ip4/203.0.113.7/tcp/4001/p2p/R/p2p-circuit/p2p/A",
            "/ip6/::1/tcp/7441/p2p/A",
            "/ip4/203.0.113.9/tcp/7441/p2p/A",
            "/ip6/fd00::2/tcp/7441/p2p/A",
            "/dns4/host.example.org/tcp/7441/p2p/A",
        ];
        addrs.sort_by_key(|addr| reach(addr));
        assert_eq!(
            addrs,
            [
                "/ip4/203.0.113.9/tcp/7441/p2p/A",
                "/dns4/host.example.org/tcp/7441/p2p/A",
                "/ip4/203.0.113.7/tcp/4001/p2p/R/p2p-circuit/p2p/A",
                "/ip4/192.168.1.20/tcp/7441/p2p/A",
                "/ip6/fd00::2/tcp/7441/p2p/A",
                "/ip4/127.0.0.1/tcp/7441/p2p/A",
                "/ip6/::1/tcp/7441/p2p/A",
            ]
        );
    }
}
