//! What the player notices without typing anything: the difference between two looks at the
//! world (others' chat, moves, gifts, promotions, arrivals), and the status snapshot for the
//! status bar and side panel.
//!
//! Owns only the last snapshot it compared against; it writes nothing.

use std::collections::BTreeMap;

use super::content::Content;
use super::ctx::Ctx;
use super::events::{Line, LineKind, Mode, Presence, Status, SyncState};
use super::ledger;
use super::names;
use super::schema::{PlayerRecord, Scope, World};
use crate::rpc::{Kv, KvError};

/// The last look at the world.
#[derive(Debug, Default)]
pub struct News {
    /// The snapshot the next look is compared with (`None` before the first look).
    last: Option<World>,
}

impl News {
    /// Reads the world and returns what changed since the last look, as lines to show.
    pub(super) async fn look<K: Kv>(&mut self, ctx: &Ctx<K>) -> Result<Vec<Line>, KvError> {
        let world = World::from_pairs(ctx.kv.list(super::schema::PLAYERS_PREFIX).await?);
        let lines = match &self.last {
            Some(last) => diff(&ctx.content, last, &world, &ctx.id, ctx.clock.now_ms()),
            None => Vec::new(),
        };
        self.last = Some(world);
        Ok(lines)
    }

    /// A fresh status snapshot.
    pub(super) async fn status<K: Kv>(&self, ctx: &Ctx<K>, mode: Mode) -> Result<Status, KvError> {
        let world = World::from_pairs(ctx.kv.list(super::schema::PLAYERS_PREFIX).await?);
        let info = ctx.kv.info().await.unwrap_or_default();
        let number =
            |field: &str| -> i64 { info.get(field).and_then(|v| v.parse().ok()).unwrap_or(0) };
        let peers = usize::try_from(number("connected_peers")).unwrap_or(0);
        let pending = u64::try_from(number("sync_pending_entries")).unwrap_or(0);
        let sync = match (peers, pending) {
            (0, _) => SyncState::Offline,
            (_, 0) => SyncState::InSync,
            (_, n) => SyncState::Pending(n),
        };
        let offset = number("clock_offset_ms").saturating_abs();
        // The node skips peers' entries past `max_clock_skew`: warn at half of it, as the
        // node's log does. An older node without the field gets the rules' threshold.
        let warn_at = match number("max_clock_skew_ms") {
            0 => ctx.content.rules.clock_warning_ms,
            skew => skew / 2,
        };
        let content = &ctx.content;
        let me = world.player(&ctx.id);
        let shown = names::display_names(&world);
        Ok(Status {
            name: shown.get(&ctx.id).cloned().unwrap_or_default(),
            rank: content.rank(ledger::rank_index(content, &me)).id.clone(),
            coins: ledger::balance(&world, &ctx.id),
            power: ledger::power(content, &me),
            location: content
                .location_name(me.loc.as_deref().unwrap_or_default())
                .to_owned(),
            peers,
            sync,
            clock_offset_ms: offset,
            clock_warning: offset > warn_at,
            via_relay: info.get("reachability").is_some_and(|r| r == "relay"),
            mode,
            players: presence(content, &world, ctx.clock.now_ms(), &ctx.id),
        })
    }
}

/// Whether a player's heartbeat is within the online window of `now_ms`, either way: a clock
/// a little ahead still counts, but a heartbeat far in the future (a peer can store any
/// number) would otherwise show its player online for good.
pub fn online(content: &Content, player: &PlayerRecord, now_ms: u64) -> bool {
    let window = content.rules.presence.online_secs.saturating_mul(1000);
    now_ms.abs_diff(player.seen_ms) <= window
}

/// Every character, online first, then by name. Player `me` is playing, so online.
pub fn presence(content: &Content, world: &World, now_ms: u64, me: &str) -> Vec<Presence> {
    let shown = names::display_names(world);
    let mut players: Vec<Presence> = world
        .characters()
        .map(|p| Presence {
            name: shown.get(&p.id).cloned().unwrap_or_default(),
            location: content
                .location_name(p.loc.as_deref().unwrap_or_default())
                .to_owned(),
            rank: content.rank(ledger::rank_index(content, p)).id.clone(),
            online: p.id == me || online(content, p, now_ms),
        })
        .collect();
    players.sort_by(|a, b| {
        (!a.online, a.name.to_lowercase()).cmp(&(!b.online, b.name.to_lowercase()))
    });
    players
}

/// What changed between two snapshots that player `me` should hear about.
pub fn diff(content: &Content, last: &World, now: &World, me: &str, now_ms: u64) -> Vec<Line> {
    let shown = names::display_names(now);
    let my_loc = now.player(me).loc.unwrap_or_default();
    let recent_ms = content.rules.chat.recent_secs.saturating_mul(1000);
    let mut lines = Vec::new();
    for p in now.characters().filter(|p| p.id != me) {
        let name = shown.get(&p.id).cloned().unwrap_or_default();
        let before = last.players.get(&p.id).filter(|b| b.exists());
        let Some(before) = before else {
            // Someone new (or newly synced): their gifts to me count from zero, and only
            // their recent chat is shown.
            if online(content, p, now_ms) {
                lines.push(event(format!("{name} has joined the world.")));
            }
            lines.extend(gift_line(content, &PlayerRecord::default(), p, &name, me));
            lines.extend(chat_lines(p, &name, &my_loc, |line| {
                line.at_ms.saturating_add(recent_ms) >= now_ms
            }));
            continue;
        };
        lines.extend(changes(content, before, p, &name, &my_loc));
        lines.extend(gift_line(content, before, p, &name, me));
        let heard = before.chat.iter().map(|l| l.seq).max().unwrap_or(0);
        lines.extend(chat_lines(p, &name, &my_loc, |line| line.seq > heard));
    }
    lines
}

fn event(text: String) -> Line {
    Line::new(LineKind::News, format!("--- {text} ---"))
}

/// A known player's new name, location or rank.
fn changes(
    content: &Content,
    before: &PlayerRecord,
    p: &PlayerRecord,
    name: &str,
    my_loc: &str,
) -> Vec<Line> {
    let mut lines = Vec::new();
    if before.name != p.name {
        let old = before.name.clone().unwrap_or_default();
        lines.push(event(format!("{old} is now known as {name}.")));
    }
    if before.loc != p.loc {
        let to = p.loc.clone().unwrap_or_default();
        let text = if to == my_loc {
            format!("{name} arrives here.")
        } else if before.loc.as_deref() == Some(my_loc) {
            format!("{name} leaves for {}.", content.location_name(&to))
        } else {
            format!("{name} walks to {}.", content.location_name(&to))
        };
        lines.push(event(text));
    }
    let new_rank = ledger::rank_index(content, p);
    if new_rank > ledger::rank_index(content, before) {
        let rank = &content.rank(new_rank).id;
        lines.push(event(format!("{name} has been promoted to {rank}!")));
    }
    lines
}

/// Coins `p` gave `me` since `before`.
fn gift_line(
    content: &Content,
    before: &PlayerRecord,
    p: &PlayerRecord,
    name: &str,
    me: &str,
) -> Option<Line> {
    let gift = |r: &PlayerRecord| r.gave.get(me).copied().unwrap_or(0);
    let coins = gift(p).checked_sub(gift(before)).filter(|&c| c > 0)?;
    Some(event(format!("{name} gave you {}.", content.coins(coins))))
}

fn chat_lines(
    p: &PlayerRecord,
    name: &str,
    my_loc: &str,
    new: impl Fn(&super::schema::ChatLine) -> bool,
) -> Vec<Line> {
    p.chat
        .iter()
        .filter(|line| new(line))
        .filter_map(|line| {
            let (kind, text) = match &line.scope {
                Scope::Shout => (LineKind::Shout, format!("{name} shouts: {}", line.text)),
                Scope::Say(loc) if loc == my_loc => {
                    (LineKind::Chat, format!("{name} says: {}", line.text))
                }
                Scope::Say(_) => return None,
            };
            Some(Line::new(kind, text))
        })
        .collect()
}

/// Players by rank (highest first), then coins, then name: `(display name, rank, coins)`.
pub fn leaderboard(content: &Content, world: &World) -> Vec<(String, String, u64)> {
    let shown: BTreeMap<String, String> = names::display_names(world);
    let balances = ledger::balances(world);
    let mut rows: Vec<(usize, u64, String)> = world
        .characters()
        .map(|p| {
            (
                ledger::rank_index(content, p),
                balances.get(p.id.as_str()).copied().unwrap_or(0),
                shown.get(&p.id).cloned().unwrap_or_default(),
            )
        })
        .collect();
    rows.sort_by(|a, b| {
        b.0.cmp(&a.0)
            .then(b.1.cmp(&a.1))
            .then(a.2.to_lowercase().cmp(&b.2.to_lowercase()))
    });
    rows.into_iter()
        .map(|(rank, coins, name)| (name, content.rank(rank).id.clone(), coins))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn others_moves_gifts_promotions_and_chat_are_news() {
        let content = Content::embedded();
        let base = [
            ("p/me/name", "me"),
            ("p/me/loc", "5"),
            ("p/b/name", "bob"),
            ("p/b/loc", "fence"),
            ("p/b/rank", "Undergraduate"),
        ];
        let last = World::from_items(&base);
        let mut items = base.to_vec();
        items[3] = ("p/b/loc", "5");
        items[4] = ("p/b/rank", "Masters");
        items.push(("p/b/gave/me", "7"));
        items.push(("p/b/chat/1", "1|10|say:5|hello"));
        items.push(("p/b/chat/2", "2|10|say:fence|elsewhere"));
        items.push(("p/b/chat/3", "3|10|shout|HEY"));
        let now = World::from_items(&items);
        let texts: Vec<String> = diff(&content, &last, &now, "me", 20)
            .into_iter()
            .map(|l| l.text)
            .collect();
        assert_eq!(
            texts,
            [
                "--- bob arrives here. ---",
                "--- bob has been promoted to Masters! ---",
                "--- bob gave you 7 coins. ---",
                "bob says: hello",
                "bob shouts: HEY",
            ]
        );
        assert!(diff(&content, &now, &now, "me", 20).is_empty());
    }

    #[test]
    fn a_newcomer_brings_only_recent_chat() {
        let content = Content::embedded();
        let last = World::from_items(&[("p/me/name", "me")]);
        let now = World::from_items(&[
            ("p/me/name", "me"),
            ("p/c/name", "carol"),
            ("p/c/seen", "1000000"),
            ("p/c/chat/1", "1|1|shout|ancient"),
            ("p/c/chat/2", "2|999000|shout|fresh"),
        ]);
        let texts: Vec<String> = diff(&content, &last, &now, "me", 1_000_000)
            .into_iter()
            .map(|l| l.text)
            .collect();
        assert_eq!(
            texts,
            ["--- carol has joined the world. ---", "carol shouts: fresh"]
        );
    }

    #[test]
    fn online_means_a_heartbeat_within_the_window() {
        let content = Content::embedded();
        let now = 1_000_000_000;
        let seen = |ms: u64| PlayerRecord {
            seen_ms: ms,
            ..PlayerRecord::default()
        };
        assert!(online(&content, &seen(now - 30_000), now));
        assert!(!online(&content, &seen(now - 30_001), now));
        assert!(
            online(&content, &seen(now + 5_000), now),
            "a clock a bit ahead"
        );
        assert!(!online(&content, &seen(u64::MAX), now), "online forever");
        assert!(!online(&content, &seen(0), now));
    }

    #[test]
    fn the_leaderboard_ranks_before_coins() {
        let content = Content::embedded();
        let w = World::from_items(&[
            ("p/a/name", "rich"),
            ("p/a/mined", "500"),
            ("p/b/name", "grad"),
            ("p/b/rank", "Masters"),
            ("p/c/name", "poor"),
        ]);
        let names: Vec<String> = leaderboard(&content, &w).into_iter().map(|r| r.0).collect();
        assert_eq!(names, ["grad", "rich", "poor"]);
    }
}
