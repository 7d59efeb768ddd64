//! The key schema: where a player's state lives in the replicated LWW store, and how a `List`
//! of `p/` is read back into a [`World`] snapshot.
//!
//! Every key a player writes is under `p/<player-id>/`, so no two nodes ever write the same
//! key. Counters only grow; a balance is a sum over counters (see `ledger`). Values are plain
//! decimal text so `redis-cli` shows them as they are. Values written by peers are untrusted:
//! anything that does not parse is ignored, never a panic.
//!
//! | key | value |
//! |---|---|
//! | `p/<id>/name` | display name |
//! | `p/<id>/rank` | rank id (`Undergraduate` ...) |
//! | `p/<id>/loc` | location id (`fence`, `bridge`, `1`..`9`) |
//! | `p/<id>/hw/<hw>` | units owned of a hardware kind |
//! | `p/<id>/mined` | coins ever mined (monotonic) |
//! | `p/<id>/spent` | coins ever spent in the shop (monotonic) |
//! | `p/<id>/gave/<recipient-id>` | coins ever given to that player (monotonic) |
//! | `p/<id>/work/<rank>/<epoch>` | steps this player did on that epoch of the rank's problem (then the promotion into that rank it relied on) |
//! | `p/<id>/solved/<rank>` | the epoch of that rank's problem this player finished |
//! | `p/<id>/seen` | heartbeat, milliseconds since the Unix epoch |
//! | `p/<id>/chat/<n mod ring>` | `seq|millis|scope|text`, scope `say:<loc>`, `emote:<loc>` or `shout` |
//! | `p/<id>/left` | when the player last quit, milliseconds since the Unix epoch |
//! | `p/<id>/note/<slot>` | `millis|loc|text`: a note left at a location (`slot` below the cap) |
//! | `p/<id>/tellkey` | the player's X25519 public key for tells, hex |
//! | `p/<id>/tell/<recipient-id>/<seq>` | a tell sealed to the recipient's key (see `tell`) |
//! | `p/<id>/read/<sender-id>` | the highest `seq` of that sender's tells this player has read |
//!
//! `spent`, `gave/*`, `hw/*`, `work/*` and `solved/*` also carry, after the number, the supports the
//! claim relied on (see `supports`); records written before supports existed have none and
//! still read.

use std::collections::BTreeMap;

use super::supports::{self, Supports};

/// Prefix of every player's keys.
pub const PLAYERS_PREFIX: &str = "p/";

/// The prefix of one player's keys.
pub fn player_prefix(id: &str) -> String {
    format!("{PLAYERS_PREFIX}{id}/")
}

/// The key of a field of a player (`p/<id>/<field>`).
pub fn key(id: &str, field: &str) -> String {
    format!("{PLAYERS_PREFIX}{id}/{field}")
}

/// Longest name, rank or location read from the world, in characters.
const MAX_FIELD_CHARS: usize = 64;

/// Longest chat line read from the world, in characters.
const MAX_CHAT_CHARS: usize = 1000;

/// Text from the world made safe to show: peers are untrusted, so control characters
/// (terminal escape sequences, newlines) are dropped and the length is capped.
pub fn shown_text(value: &str, max_chars: usize) -> String {
    value
        .chars()
        .filter(|c| !c.is_control())
        .take(max_chars)
        .collect()
}

/// A name from the world, kept to the characters a chosen name may hold: a peer could
/// otherwise store `alice#3kq`, the form another player is shown under, and so take the
/// coins a `give alice#3kq` meant for them. `None` if nothing is left.
fn stored_name(value: &str) -> Option<String> {
    let name: String = value
        .chars()
        .filter(|&c| super::names::is_name_char(c))
        .take(MAX_FIELD_CHARS)
        .collect();
    (!name.is_empty()).then_some(name)
}

/// Field names (the part after `p/<id>/`).
pub mod field {
    /// Display name.
    pub const NAME: &str = "name";
    /// Rank id.
    pub const RANK: &str = "rank";
    /// Location id.
    pub const LOC: &str = "loc";
    /// Coins ever mined.
    pub const MINED: &str = "mined";
    /// Coins ever spent.
    pub const SPENT: &str = "spent";
    /// Heartbeat.
    pub const SEEN: &str = "seen";
    /// When the player last quit.
    pub const LEFT: &str = "left";
    /// The public key tells are sealed to.
    pub const TELL_KEY: &str = "tellkey";

    /// `hw/<hw>`.
    pub fn hardware(hw: &str) -> String {
        format!("hw/{hw}")
    }

    /// `gave/<recipient>`.
    pub fn gave(recipient: &str) -> String {
        format!("gave/{recipient}")
    }

    /// `work/<rank>/<epoch>`.
    pub fn work(rank: &str, epoch: u64) -> String {
        format!("work/{rank}/{epoch}")
    }

    /// `solved/<rank>`.
    pub fn solved(rank: &str) -> String {
        format!("solved/{rank}")
    }

    /// `chat/<slot>`.
    pub fn chat(slot: u64) -> String {
        format!("chat/{slot}")
    }

    /// `note/<slot>`.
    pub fn note(slot: u64) -> String {
        format!("note/{slot}")
    }

    /// `tell/<recipient>/<seq>`.
    pub fn tell(recipient: &str, seq: u64) -> String {
        format!("tell/{recipient}/{seq}")
    }

    /// `read/<sender>`.
    pub fn read(sender: &str) -> String {
        format!("read/{sender}")
    }
}

/// Whether a chat line was said or acted out in a room, or shouted to everyone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Heard by players at this location.
    Say(String),
    /// Acted out (`emote`), seen by players at this location.
    Emote(String),
    /// Heard by everyone.
    Shout,
}

impl Scope {
    /// The location it is heard at; `None` for everywhere.
    pub fn location(&self) -> Option<&str> {
        match self {
            Scope::Say(loc) | Scope::Emote(loc) => Some(loc),
            Scope::Shout => None,
        }
    }
}

/// One line of a player's chat ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatLine {
    /// The player's running line number (the ring slot is `seq mod ring`).
    pub seq: u64,
    /// When it was said, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Who may hear it.
    pub scope: Scope,
    /// What was said.
    pub text: String,
}

impl ChatLine {
    /// The stored form, `seq|millis|scope|text`.
    pub fn encode(&self) -> String {
        let scope = match &self.scope {
            Scope::Say(loc) => format!("say:{loc}"),
            Scope::Emote(loc) => format!("emote:{loc}"),
            Scope::Shout => "shout".to_owned(),
        };
        format!("{}|{}|{}|{}", self.seq, self.at_ms, scope, self.text)
    }

    /// Reads the stored form; `None` if it is malformed.
    pub fn decode(value: &str) -> Option<ChatLine> {
        let mut parts = value.splitn(4, '|');
        let seq = parts.next()?.parse().ok()?;
        let at_ms = parts.next()?.parse().ok()?;
        let scope = match parts.next()? {
            "shout" => Scope::Shout,
            other => match other.split_once(':')? {
                ("say", loc) => Scope::Say(loc.to_owned()),
                ("emote", loc) => Scope::Emote(loc.to_owned()),
                _ => return None,
            },
        };
        let text = shown_text(parts.next()?, MAX_CHAT_CHARS);
        Some(ChatLine {
            seq,
            at_ms,
            scope,
            text,
        })
    }
}

/// A note a player left at a location.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Note {
    /// When it was left, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The location id.
    pub loc: String,
    /// What it says.
    pub text: String,
}

impl Note {
    /// The stored form, `millis|loc|text`.
    pub fn encode(&self) -> String {
        format!("{}|{}|{}", self.at_ms, self.loc, self.text)
    }

    /// Reads the stored form; `None` if it is malformed.
    pub fn decode(value: &str) -> Option<Note> {
        let mut parts = value.splitn(3, '|');
        let at_ms = parts.next()?.parse().ok()?;
        let loc = shown_text(parts.next()?, MAX_FIELD_CHARS);
        let text = shown_text(parts.next()?, MAX_CHAT_CHARS);
        Some(Note { at_ms, loc, text })
    }
}

/// Everything stored under one player's prefix.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlayerRecord {
    /// The player id (the node's peer id).
    pub id: String,
    /// Display name, if set.
    pub name: Option<String>,
    /// Rank id, as stored.
    pub rank: Option<String>,
    /// Location id, as stored.
    pub loc: Option<String>,
    /// Units per hardware id.
    pub hardware: BTreeMap<String, u64>,
    /// Coins ever mined.
    pub mined: u64,
    /// Coins ever spent.
    pub spent: u64,
    /// Coins ever given, per recipient id.
    pub gave: BTreeMap<String, u64>,
    /// Steps done, per (rank id, epoch).
    pub work: BTreeMap<(String, u64), u64>,
    /// Epoch finished, per rank id.
    pub solved: BTreeMap<String, u64>,
    /// Last heartbeat, in milliseconds.
    pub seen_ms: u64,
    /// The chat ring, in `seq` order.
    pub chat: Vec<ChatLine>,
    /// When the player last quit, in milliseconds (0 if never).
    pub left_ms: u64,
    /// Notes left, by slot.
    pub notes: BTreeMap<u64, Note>,
    /// The public key tells to this player are sealed to, as stored (hex).
    pub tell_key: Option<String>,
    /// Sealed tells this player sent, by (recipient id, seq), as stored.
    pub tells: BTreeMap<(String, u64), String>,
    /// The highest tell `seq` read, per sender id.
    pub read: BTreeMap<String, u64>,
    /// What the player's claims (spending, hardware, work, solved problems) say they relied on.
    pub supports: Supports,
}

impl PlayerRecord {
    fn set(&mut self, field: &str, value: &str) {
        // Counters may carry supports after the number; text fields are taken whole.
        let number = || supports::split(value).0.trim().parse::<u64>().ok();
        let named = || supports::split(value).1;
        let (head, rest) = field.split_once('/').unwrap_or((field, ""));
        match (head, rest) {
            (field::NAME, "") => self.name = stored_name(value),
            (field::RANK, "") => self.rank = Some(shown_text(value, MAX_FIELD_CHARS)),
            (field::LOC, "") => self.loc = Some(shown_text(value, MAX_FIELD_CHARS)),
            (field::MINED, "") => self.mined = number().unwrap_or(0),
            (field::SPENT, "") => {
                self.spent = number().unwrap_or(0);
                self.supports.spent = supports::spending(named().as_deref());
            }
            (field::SEEN, "") => self.seen_ms = number().unwrap_or(0),
            (field::LEFT, "") => self.left_ms = number().unwrap_or(0),
            (field::TELL_KEY, "") => self.tell_key = Some(shown_text(value, MAX_FIELD_CHARS)),
            ("note", slot) => {
                if let (Ok(slot), Some(note)) = (slot.parse(), Note::decode(value)) {
                    self.notes.insert(slot, note);
                }
            }
            ("tell", rest) => {
                let parsed = rest
                    .split_once('/')
                    .and_then(|(to, seq)| Some((to, seq.parse::<u64>().ok()?)));
                if let Some((to, seq)) = parsed.filter(|(to, _)| !to.is_empty()) {
                    self.tells.insert((to.to_owned(), seq), value.to_owned());
                }
            }
            ("read", from) if !from.is_empty() => {
                if let Some(n) = number() {
                    self.read.insert(from.to_owned(), n);
                }
            }
            ("hw", hw) if !hw.is_empty() => {
                if let Some(n) = number() {
                    self.hardware.insert(hw.to_owned(), n);
                    let claim = supports::hardware(named().as_deref());
                    self.supports.hardware.insert(hw.to_owned(), claim);
                }
            }
            ("gave", to) if !to.is_empty() => {
                if let Some(n) = number() {
                    self.gave.insert(to.to_owned(), n);
                    let claim = supports::spending(named().as_deref());
                    self.supports.gave.insert(to.to_owned(), claim);
                }
            }
            ("work", rest) => {
                let parsed = rest
                    .split_once('/')
                    .and_then(|(rank, epoch)| Some((rank, epoch.parse::<u64>().ok()?)));
                if let (Some((rank, epoch)), Some(n)) = (parsed, number()) {
                    let key = (rank.to_owned(), epoch);
                    self.work.insert(key.clone(), n);
                    let claim = supports::work(named().as_deref());
                    self.supports.work.insert(key, claim);
                }
            }
            ("solved", rank) if !rank.is_empty() => {
                if let Some(n) = number() {
                    self.solved.insert(rank.to_owned(), n);
                    let claim = supports::solved(named().as_deref());
                    self.supports.solved.insert(rank.to_owned(), claim);
                }
            }
            ("chat", _) => {
                if let Some(line) = ChatLine::decode(value) {
                    self.chat.push(line);
                }
            }
            _ => {}
        }
    }

    /// Whether the character exists (has a name).
    pub fn exists(&self) -> bool {
        self.name.is_some()
    }
}

/// A snapshot of every player in the world, as one `List p/` returned it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct World {
    /// Players by id.
    pub players: BTreeMap<String, PlayerRecord>,
}

impl World {
    /// A snapshot from literal `(key, value)` pairs, for tests.
    #[cfg(test)]
    pub fn from_items(items: &[(&str, &str)]) -> World {
        World::from_pairs(items.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    /// Builds the snapshot from `List p/` pairs; keys outside the schema are ignored.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> World {
        let mut players: BTreeMap<String, PlayerRecord> = BTreeMap::new();
        for (key, value) in pairs {
            let Some(rest) = key.strip_prefix(PLAYERS_PREFIX) else {
                continue;
            };
            let Some((id, field)) = rest.split_once('/') else {
                continue;
            };
            // Ids are peer ids (base58); one with control characters is a peer's mischief.
            if id.is_empty() || id.chars().any(char::is_control) {
                continue;
            }
            let record = players
                .entry(id.to_owned())
                .or_insert_with(|| PlayerRecord {
                    id: id.to_owned(),
                    ..PlayerRecord::default()
                });
            record.set(field, &value);
        }
        for record in players.values_mut() {
            record.chat.sort_by_key(|line| line.seq);
        }
        World { players }
    }

    /// One player's record, or an empty one.
    pub fn player(&self, id: &str) -> PlayerRecord {
        self.players
            .get(id)
            .cloned()
            .unwrap_or_else(|| PlayerRecord {
                id: id.to_owned(),
                ..PlayerRecord::default()
            })
    }

    /// Players whose character exists.
    pub fn characters(&self) -> impl Iterator<Item = &PlayerRecord> {
        self.players.values().filter(|p| p.exists())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_list_reads_back_into_records() {
        let world = World::from_pairs(pairs(&[
            ("p/A/name", "alice"),
            ("p/A/mined", "12"),
            ("p/A/hw/cpu", "3"),
            ("p/A/gave/B", "4"),
            ("p/A/work/Undergraduate/1", "40"),
            ("p/A/solved/Masters", "2"),
            ("p/A/chat/1", "1|99|say:5|hi | there"),
            ("p/A/chat/0", "64|100|shout|later"),
            ("p/B/name", "bob"),
        ]));
        let a = world.player("A");
        assert_eq!(a.name.as_deref(), Some("alice"));
        assert_eq!(a.mined, 12);
        assert_eq!(a.hardware["cpu"], 3);
        assert_eq!(a.gave["B"], 4);
        assert_eq!(a.work[&("Undergraduate".to_owned(), 1)], 40);
        assert_eq!(a.solved["Masters"], 2);
        assert_eq!(a.chat[0].text, "hi | there");
        assert_eq!(a.chat[1].scope, Scope::Shout);
        assert_eq!(world.characters().count(), 2);
    }

    #[test]
    fn garbage_from_peers_is_ignored() {
        let world = World::from_pairs(pairs(&[
            ("p/A/mined", "-5"),
            ("p/A/hw/cpu", "99999999999999999999999"),
            ("p/A/work/x", "1"),
            ("p/A/chat/3", "nonsense"),
            ("p//name", "ghost"),
            ("p/A", "no field"),
            ("p/B/name", "evil\u{1b}[2J\nname"),
            ("p/B/chat/1", "1|2|shout|\u{1b}]0;pwned\u{7}hi"),
            ("q/A/name", "elsewhere"),
            ("p/\u{1b}[31m/name", "escape in the id"),
        ]));
        let a = world.player("A");
        assert_eq!(a.mined, 0);
        assert!(a.hardware.is_empty() && a.work.is_empty() && a.chat.is_empty());
        assert_eq!(world.players.len(), 2);
        let b = world.player("B");
        assert_eq!(
            b.name.as_deref(),
            Some("evil2Jname"),
            "no escape reaches a terminal"
        );
        assert_eq!(b.chat[0].text, "]0;pwnedhi");
    }

    #[test]
    fn chat_lines_round_trip() {
        let line = ChatLine {
            seq: 7,
            at_ms: 1234,
            scope: Scope::Say("fence".into()),
            text: "a|b ü".into(),
        };
        assert_eq!(ChatLine::decode(&line.encode()), Some(line));
    }
}
