//! What the player notices without typing anything: the difference between two looks at the
//! world (others' chat, moves, gifts, promotions, arrivals), and the status snapshot for the
//! status bar and side panel.
//!
//! Owns only the last snapshot it compared against; it writes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::content::Content;
use super::ctx::Ctx;
use super::events::{
    Chat, ChatScope, Detail, Line, LineKind, Mode, Presence, PresenceChange, Status, SyncState,
};
use super::ledger;
use super::names;
use super::schema::{PlayerRecord, Scope, World};
use crate::rpc::{Kv, KvError};

/// The last look at the world.
#[derive(Debug, Default)]
pub struct News {
    /// The snapshot the next look is compared with (`None` before the first look), and the
    /// time it was taken (milliseconds), which decided who was online in it.
    last: Option<(Arc<World>, u64)>,
    /// What the last look and the last status were computed from: the next ones are only
    /// computed again once something differs, so an idle session does no work per player.
    looked: Freshness,
    /// The same for the status snapshot.
    stated: Freshness,
    /// The status last returned.
    status: Option<Status>,
}

/// What a computation over the world depended on.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Freshness {
    /// The view's generation (`None`: the view does not follow the replica, compute always).
    generation: Option<u64>,
    /// When someone's presence changes with time alone (milliseconds); 0 before any.
    until_ms: u64,
}

impl Freshness {
    /// Whether a computation made at `self` still holds at `generation` and `now_ms`.
    fn holds(&self, generation: Option<u64>, now_ms: u64) -> bool {
        generation.is_some() && self.generation == generation && now_ms < self.until_ms
    }
}

impl News {
    /// Reads the world and returns what changed since the last look, as lines to show;
    /// `None` if nothing can have changed (the view is where it was and nobody's presence
    /// changed with time).
    pub(super) async fn look<K: Kv>(&mut self, ctx: &Ctx<K>) -> Result<Option<Vec<Line>>, KvError> {
        let generation = ctx.view.generation();
        let now_ms = ctx.clock.now_ms();
        if self.last.is_some() && self.looked.holds(generation, now_ms) {
            return Ok(None);
        }
        let world = ctx.view.world(&ctx.kv).await?;
        let lines = match &self.last {
            Some((last, last_ms)) => diff(&ctx.content, (last, *last_ms), &world, &ctx.id, now_ms),
            None => Vec::new(),
        };
        self.looked = Freshness {
            generation,
            until_ms: next_presence_change(&ctx.content, &world, now_ms, &ctx.id),
        };
        self.last = Some((world, now_ms));
        Ok(Some(lines))
    }

    /// The snapshot of the last look.
    pub(super) fn world(&self) -> Option<&Arc<World>> {
        self.last.as_ref().map(|(world, _)| world)
    }

    /// A status snapshot if it differs from the one returned last.
    pub(super) async fn status<K: Kv>(
        &mut self,
        ctx: &Ctx<K>,
        mode: Mode,
    ) -> Result<Option<Status>, KvError> {
        let generation = ctx.view.generation();
        let now_ms = ctx.clock.now_ms();
        let info = ctx.kv.info().await.unwrap_or_default();
        let node = node_status(ctx, &info, mode);
        if let Some(last) = &mut self.status
            && self.stated.holds(generation, now_ms)
        {
            if node.same_as(last) {
                return Ok(None);
            }
            node.fill(last);
            return Ok(Some(last.clone()));
        }
        let world = ctx.view.world(&ctx.kv).await?;
        let content = &ctx.content;
        let me = world.player(&ctx.id);
        let shown = names::display_names(&world);
        let mut status = Status {
            name: shown.get(&ctx.id).cloned().unwrap_or_default(),
            rank: content.rank(ledger::rank_index(content, &me)).id.clone(),
            coins: ledger::balance(content, &world, &ctx.id),
            power: ledger::power(content, &me),
            location: content
                .location_name(me.loc.as_deref().unwrap_or_default())
                .to_owned(),
            peers: 0,
            sync: SyncState::Offline,
            clock_offset_ms: 0,
            clock_warning: false,
            via_relay: false,
            mode,
            players: presence(content, &world, now_ms, &ctx.id),
        };
        node.fill(&mut status);
        self.stated = Freshness {
            generation,
            until_ms: next_presence_change(content, &world, now_ms, &ctx.id),
        };
        if self.status.as_ref() == Some(&status) {
            return Ok(None);
        }
        self.status = Some(status.clone());
        Ok(Some(status))
    }
}

/// The part of the status that comes from the node (`INFO`) and the session, not the world.
struct NodeStatus {
    /// Connected peers.
    peers: usize,
    /// Sync state.
    sync: SyncState,
    /// Largest clock offset, absolute.
    clock_offset_ms: i64,
    /// Whether to warn about it.
    clock_warning: bool,
    /// Whether friends reach this node only through a relay.
    via_relay: bool,
    /// The prompt.
    mode: Mode,
}

impl NodeStatus {
    fn same_as(&self, status: &Status) -> bool {
        self.peers == status.peers
            && self.sync == status.sync
            && self.clock_offset_ms == status.clock_offset_ms
            && self.clock_warning == status.clock_warning
            && self.via_relay == status.via_relay
            && self.mode == status.mode
    }

    fn fill(&self, status: &mut Status) {
        status.peers = self.peers;
        status.sync = self.sync;
        status.clock_offset_ms = self.clock_offset_ms;
        status.clock_warning = self.clock_warning;
        status.via_relay = self.via_relay;
        status.mode = self.mode;
    }
}

/// Reads the node's side of the status from its `INFO` fields.
fn node_status<K: Kv>(ctx: &Ctx<K>, info: &BTreeMap<String, String>, mode: Mode) -> NodeStatus {
    let number = |field: &str| -> i64 { info.get(field).and_then(|v| v.parse().ok()).unwrap_or(0) };
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
    NodeStatus {
        peers,
        sync,
        clock_offset_ms: offset,
        clock_warning: offset > warn_at,
        via_relay: info.get("reachability").is_some_and(|r| r == "relay"),
        mode,
    }
}

/// The first time after `now_ms` at which the presence of a character other than `me` (who
/// is always shown online) changes with time alone (a heartbeat leaves the online window, or
/// one from the future enters it); `u64::MAX` if none will.
pub fn next_presence_change(content: &Content, world: &World, now_ms: u64, me: &str) -> u64 {
    let window = content.rules.presence.online_secs.saturating_mul(1000);
    world
        .characters()
        .filter(|p| p.id != me && p.left_ms < p.seen_ms)
        .map(|p| {
            if p.seen_ms > now_ms.saturating_add(window) {
                p.seen_ms - window
            } else {
                p.seen_ms.saturating_add(window).saturating_add(1)
            }
        })
        .filter(|&at| at > now_ms)
        .min()
        .unwrap_or(u64::MAX)
}

/// Whether a player's heartbeat is within the online window of `now_ms`, either way: a clock
/// a little ahead still counts, but a heartbeat far in the future (a peer can store any
/// number) would otherwise show its player online for good.
/// A player who quit after their last heartbeat is offline at once.
pub fn online(content: &Content, player: &PlayerRecord, now_ms: u64) -> bool {
    let window = content.rules.presence.online_secs.saturating_mul(1000);
    now_ms.abs_diff(player.seen_ms) <= window && player.left_ms < player.seen_ms
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

/// What changed between two snapshots that player `me` should hear about; `last` comes with
/// the time it was taken, which decided who was online in it.
pub fn diff(
    content: &Content,
    (last, last_ms): (&World, u64),
    now: &World,
    me: &str,
    now_ms: u64,
) -> Vec<Line> {
    let shown = names::display_names(now);
    let my_loc = now.player(me).loc.unwrap_or_default();
    let recent_ms = content.rules.chat.recent_secs.saturating_mul(1000);
    let unverified = |id: &str| super::claims::is_unverified(content, now, id);
    let mut lines = my_name_line(last, &shown, me);
    for p in now.characters().filter(|p| p.id != me) {
        let name = shown.get(&p.id).cloned().unwrap_or_default();
        let before = last.players.get(&p.id).filter(|b| b.exists());
        let Some(before) = before else {
            // Someone new (or newly synced): their gifts to me count from zero, and only
            // their recent chat is shown.
            if online(content, p, now_ms) {
                lines.push(presence_line(&name, PresenceChange::Joined));
            }
            let giver = Giver {
                record: p,
                name: &name,
            };
            lines.extend(gift_line(
                content,
                &PlayerRecord::default(),
                giver,
                me,
                &unverified,
            ));
            lines.extend(chat_lines(p, &name, &my_loc, |line| {
                line.at_ms.saturating_add(recent_ms) >= now_ms
            }));
            continue;
        };
        let (was, is) = (online(content, before, last_ms), online(content, p, now_ms));
        if !was && is {
            lines.push(presence_line(&name, PresenceChange::Joined));
        }
        lines.extend(changes(content, before, p, &name, &my_loc));
        let giver = Giver {
            record: p,
            name: &name,
        };
        lines.extend(gift_line(content, before, giver, me, &unverified));
        let heard = before.chat.iter().map(|l| l.seq).max().unwrap_or(0);
        lines.extend(chat_lines(p, &name, &my_loc, |line| line.seq > heard));
        if was && !is {
            let change = if p.left_ms > before.left_ms {
                PresenceChange::Left
            } else {
                PresenceChange::Quiet
            };
            lines.push(presence_line(&name, change));
        }
    }
    lines.extend(fallen_problems(content, last, now, &shown));
    lines
}

/// Tells the player when another player takes their name, so the tag they are now shown with
/// does not come as a surprise.
fn my_name_line(last: &World, shown: &BTreeMap<String, String>, me: &str) -> Vec<Line> {
    let before = names::display_names(last).remove(me);
    match (before, shown.get(me)) {
        (Some(before), Some(after)) if before != *after && after.contains('#') => {
            let text = format!(
                "Another player is also called {}: everyone now sees you as {after}.",
                before.split('#').next().unwrap_or_default()
            );
            vec![event(text)]
        }
        _ => Vec::new(),
    }
}

fn presence_line(name: &str, change: PresenceChange) -> Line {
    let text = match change {
        PresenceChange::Joined => format!("--- {name} has joined the world. ---"),
        PresenceChange::Left => format!("--- {name} has left the world. ---"),
        PresenceChange::Quiet => format!("--- {name} has gone quiet. ---"),
    };
    let detail = Detail::Presence {
        name: name.to_owned(),
        change,
    };
    Line::about(LineKind::Event, text, detail)
}

/// Problems that fell since the last look: who finished them, with whom, and their shares.
fn fallen_problems(
    content: &Content,
    last: &World,
    now: &World,
    shown: &BTreeMap<String, String>,
) -> Vec<Line> {
    // Only records that can stand (see `claims::solved_holds`) make a problem fall.
    let claims = |world: &World, rank: &str| -> BTreeSet<u64> {
        world
            .players
            .values()
            .filter(|p| super::claims::solved_holds(content, p, rank))
            .filter_map(|p| p.solved.get(rank).copied())
            .collect()
    };
    let mut lines = Vec::new();
    for (index, rank) in content.rules.ranks.iter().enumerate() {
        let before = claims(last, &rank.id);
        for epoch in claims(now, &rank.id).difference(&before) {
            let shares = ledger::shares(content, now, index, *epoch);
            if shares.is_empty() {
                continue;
            }
            let named: Vec<String> = shares
                .iter()
                .map(|s| {
                    let name = shown.get(&s.id).cloned().unwrap_or_else(|| s.id.clone());
                    format!("{name} ({}%)", s.percent)
                })
                .collect();
            let names: Vec<&str> = named.iter().map(String::as_str).collect();
            let who = super::actions::and_list(&names);
            let text = match shares.len() {
                1 => format!("The {} problem falls to {who}.", rank.id),
                2 => format!("The {} problem falls to {who}: both are promoted.", rank.id),
                n => format!(
                    "The {} problem falls to {who}: all {n} are promoted.",
                    rank.id
                ),
            };
            lines.push(event(text));
        }
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

/// A player who may have given coins, as shown.
struct Giver<'a> {
    /// Their records now.
    record: &'a PlayerRecord,
    /// Their shown name.
    name: &'a str,
}

/// Coins `giver` gave `me` since `before`; said to count for nothing if the giver's claims
/// break the rules (`unverified`, asked only about a giver of something new).
fn gift_line(
    content: &Content,
    before: &PlayerRecord,
    giver: Giver,
    me: &str,
    unverified: &dyn Fn(&str) -> bool,
) -> Option<Line> {
    let gift = |r: &PlayerRecord| r.gave.get(me).copied().unwrap_or(0);
    let coins = gift(giver.record)
        .checked_sub(gift(before))
        .filter(|&c| c > 0)?;
    let (name, coins) = (giver.name, content.coins(coins));
    Some(event(if unverified(&giver.record.id) {
        format!(
            "{name} (unverified) gave you {coins}: they count for nothing until {name}'s records hold together."
        )
    } else {
        format!("{name} gave you {coins}.")
    }))
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
        .filter(|line| line.scope.location().is_none_or(|loc| loc == my_loc))
        .map(|line| {
            let (kind, text) = match &line.scope {
                Scope::Shout => (LineKind::Shout, format!("{name} shouts: {}", line.text)),
                Scope::Say(_) => (LineKind::Chat, format!("{name} says: {}", line.text)),
                Scope::Emote(_) => (LineKind::Chat, format!("{name} {}", line.text)),
            };
            let detail = Detail::Chat(Chat {
                scope: ChatScope::from(&line.scope),
                from: name.to_owned(),
                text: line.text.clone(),
            });
            Line::about(kind, text, detail)
        })
        .collect()
}

/// One row of the leaderboard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Standing {
    /// Shown name.
    pub name: String,
    /// Rank name.
    pub rank: String,
    /// Spendable coins.
    pub coins: u64,
    /// What the player's hardware cost in the shop.
    pub hardware: u64,
    /// Coins plus hardware.
    pub worth: u64,
    /// Whether their claims break the rules (see `claims`): shown so, and last.
    pub unverified: bool,
}

/// What a player's hardware is worth at shop prices.
pub fn hardware_value(content: &Content, player: &PlayerRecord) -> u64 {
    player
        .hardware
        .iter()
        .filter_map(|(id, &n)| Some(content.hardware(id)?.price.saturating_mul(n)))
        .fold(0u64, u64::saturating_add)
}

/// Players by rank (highest first), then net worth, then name; those whose claims break the
/// rules last.
pub fn leaderboard(content: &Content, world: &World) -> Vec<Standing> {
    let shown: BTreeMap<String, String> = names::display_names(world);
    let unverified = super::claims::unverified(content, world);
    let balances = ledger::balances(content, world);
    let mut rows: Vec<(usize, Standing)> = world
        .characters()
        .map(|p| {
            let coins = balances.get(p.id.as_str()).copied().unwrap_or(0);
            let hardware = hardware_value(content, p);
            let rank = ledger::rank_index(content, p);
            let standing = Standing {
                name: shown.get(&p.id).cloned().unwrap_or_default(),
                rank: content.rank(rank).id.clone(),
                coins,
                hardware,
                worth: coins.saturating_add(hardware),
                unverified: unverified.contains(&p.id),
            };
            (rank, standing)
        })
        .collect();
    rows.sort_by(|(ra, a), (rb, b)| {
        a.unverified
            .cmp(&b.unverified)
            .then(rb.cmp(ra))
            .then(b.worth.cmp(&a.worth))
            .then(a.name.to_lowercase().cmp(&b.name.to_lowercase()))
    });
    rows.into_iter().map(|(_, standing)| standing).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_is_looked_at_again_when_a_heartbeat_lapses_or_arrives_from_the_future() {
        let content = Content::embedded();
        let window = content.rules.presence.online_secs * 1000;
        let world = World::from_items(&[
            ("p/me/name", "me"),
            ("p/me/seen", "100000"),
            ("p/a/name", "a"),
            ("p/a/seen", "100000"),
            ("p/f/name", "f"),
            ("p/f/seen", &(100_000 + 3 * window).to_string()),
            ("p/gone/name", "gone"),
            ("p/gone/seen", "1"),
        ]);
        let now = 100_000 + window / 2;
        let at = next_presence_change(&content, &world, now, "me");
        assert_eq!(at, 100_000 + window + 1, "a goes quiet first");
        assert!(!online(&content, &world.player("a"), at));
        assert!(online(&content, &world.player("a"), at - 1));
        let later = next_presence_change(&content, &world, at, "me");
        assert_eq!(
            later,
            100_000 + 2 * window,
            "then f's heartbeat enters the window"
        );
        assert!(online(&content, &world.player("f"), later));
        assert_eq!(
            next_presence_change(&content, &world, later, "me"),
            later + 2 * window + 1
        );
    }

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
        let texts: Vec<String> = diff(&content, (&last, 10), &now, "me", 20)
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
        assert!(diff(&content, (&now, 20), &now, "me", 20).is_empty());
    }

    #[test]
    fn leaving_quitting_and_fallen_problems_are_news() {
        let content = Content::embedded();
        let t = 1_000_000_000u64;
        let seen = t.to_string();
        let base = [
            ("p/me/name", "me"),
            ("p/b/name", "bob"),
            ("p/b/seen", seen.as_str()),
            ("p/c/name", "cat"),
            ("p/c/seen", seen.as_str()),
            ("p/c/work/Undergraduate/1", "62"),
            ("p/b/work/Undergraduate/1", "38"),
        ];
        let last = World::from_items(&base);
        let mut items = base.to_vec();
        let left = (t + 1).to_string();
        items.push(("p/b/left", left.as_str()));
        items.push(("p/b/solved/Undergraduate", "1"));
        let now = World::from_items(&items);
        let texts: Vec<String> = diff(&content, (&last, t), &now, "me", t + 60_000)
            .into_iter()
            .map(|l| l.text)
            .collect();
        assert_eq!(
            texts,
            [
                "--- bob has left the world. ---",
                "--- cat has gone quiet. ---",
                "--- The Undergraduate problem falls to cat (62%) and bob (38%): both are promoted. ---",
            ]
        );
    }

    #[test]
    fn a_player_hears_when_another_takes_their_name() {
        let content = Content::embedded();
        let last = World::from_items(&[("p/me1/name", "alice")]);
        let now = World::from_items(&[("p/me1/name", "alice"), ("p/xy2/name", "alice")]);
        let texts: Vec<String> = diff(&content, (&last, 0), &now, "me1", 0)
            .into_iter()
            .map(|l| l.text)
            .collect();
        assert_eq!(
            texts,
            ["--- Another player is also called alice: everyone now sees you as alice#me1. ---"]
        );
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
        let texts: Vec<String> = diff(&content, (&last, 1_000_000), &now, "me", 1_000_000)
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
        let names: Vec<String> = leaderboard(&content, &w)
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(names, ["grad", "rich", "poor"]);
        // Hardware counts at its shop price: spending does not drop a player down the board.
        let w = World::from_items(&[
            ("p/a/name", "saver"),
            ("p/a/mined", "50"),
            ("p/b/name", "investor"),
            ("p/b/mined", "60"),
            ("p/b/spent", "55"),
            ("p/b/hw/gpu", "11"),
        ]);
        let rows = leaderboard(&content, &w);
        assert_eq!((rows[0].name.as_str(), rows[0].worth), ("investor", 60));
        assert_eq!((rows[0].coins, rows[0].hardware), (5, 55));
    }
}
