//! The JSON form of the game's events, for bots (`cmud --plain --json`): one object per event,
//! with a `type` field and typed fields (the schema is in the README). Written with
//! serde_json, so every line parses whatever a player typed.

use serde::Serialize;

use super::events::{
    ChatScope, Detail, Event, Line, LineKind, Mode, PresenceChange, Status, SyncState,
};

/// One event as the JSON interface writes it.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Json<'a> {
    /// Narrative text.
    Story { text: &'a str },
    /// Something that happened.
    Event { text: &'a str },
    /// Command output.
    Info { text: &'a str },
    /// A refusal or failure.
    Error { text: &'a str },
    /// The player's own command, echoed.
    Echo { text: &'a str },
    /// Someone talked.
    Chat {
        scope: ChatScope,
        from: &'a str,
        text: &'a str,
        line: &'a str,
    },
    /// A player came or went.
    Presence {
        name: &'a str,
        change: PresenceChange,
        line: &'a str,
    },
    /// A `mine` run ended.
    Mined {
        coins: u64,
        attempts: u64,
        asked: u64,
        empty: u64,
        line: &'a str,
    },
    /// The status bar's snapshot.
    Status(JsonStatus<'a>),
    /// A long action advanced.
    Progress {
        label: &'a str,
        done: u64,
        total: u64,
    },
    /// The long action ended.
    ProgressEnd,
    /// The player chose a name.
    NameChosen { name: &'a str },
    /// The node joined a peer.
    PeerJoined { addr: &'a str },
    /// A remembered peer could not be joined.
    PeerFailed { addr: &'a str },
    /// The player asked to copy this text to the clipboard (`addr copy`).
    Copy { text: &'a str },
    /// The session is over.
    Quit,
}

/// [`Status`] in JSON.
#[derive(Debug, Serialize)]
struct JsonStatus<'a> {
    name: &'a str,
    rank: &'a str,
    coins: u64,
    power: u64,
    location: &'a str,
    peers: usize,
    /// `offline`, `pending` or `in_sync`.
    sync: &'static str,
    /// Entries still to exchange (with `pending`).
    pending: u64,
    clock_offset_ms: i64,
    clock_warning: bool,
    /// `naming`, `mining` or `solving`.
    mode: &'static str,
    players: Vec<JsonPlayer<'a>>,
}

/// A player in [`JsonStatus`].
#[derive(Debug, Serialize)]
struct JsonPlayer<'a> {
    name: &'a str,
    rank: &'a str,
    location: &'a str,
    online: bool,
}

/// The event as one line of JSON (no newline).
pub fn to_line(event: &Event) -> String {
    let json = match event {
        Event::Line(line) => line_json(line),
        Event::Status(status) => Json::Status(status_json(status)),
        Event::Progress(Some(p)) => Json::Progress {
            label: p.activity.label(),
            done: p.done,
            total: p.total,
        },
        Event::Progress(None) => Json::ProgressEnd,
        Event::NameChosen(name) => Json::NameChosen { name },
        Event::PeerJoined(addr) => Json::PeerJoined { addr },
        Event::PeerFailed(addr) => Json::PeerFailed { addr },
        Event::Copy(text) => Json::Copy { text },
        Event::Quit => Json::Quit,
    };
    // Serialising these plain structs cannot fail (no maps with non-string keys, no I/O).
    serde_json::to_string(&json).unwrap_or_else(|_| r#"{"type":"error","text":"?"}"#.into())
}

fn line_json(line: &Line) -> Json<'_> {
    let text = line.text.as_str();
    match &line.detail {
        Some(Detail::Chat(chat)) => Json::Chat {
            scope: chat.scope,
            from: &chat.from,
            text: &chat.text,
            line: text,
        },
        Some(Detail::Presence { name, change }) => Json::Presence {
            name,
            change: *change,
            line: text,
        },
        Some(Detail::Mined(m)) => Json::Mined {
            coins: m.coins,
            attempts: m.attempts,
            asked: m.asked,
            empty: m.empty,
            line: text,
        },
        None => match line.kind {
            LineKind::Story => Json::Story { text },
            LineKind::Event | LineKind::News => Json::Event { text },
            LineKind::Chat | LineKind::Shout | LineKind::Info | LineKind::Address => {
                Json::Info { text }
            }
            LineKind::Error => Json::Error { text },
            LineKind::Echo => Json::Echo { text },
        },
    }
}

fn status_json(s: &Status) -> JsonStatus<'_> {
    let (sync, pending) = match s.sync {
        SyncState::Offline => ("offline", 0),
        SyncState::Pending(n) => ("pending", n),
        SyncState::InSync => ("in_sync", 0),
    };
    JsonStatus {
        name: &s.name,
        rank: &s.rank,
        coins: s.coins,
        power: s.power,
        location: &s.location,
        peers: s.peers,
        sync,
        pending,
        clock_offset_ms: s.clock_offset_ms,
        clock_warning: s.clock_warning,
        mode: match s.mode {
            Mode::Naming => "naming",
            Mode::Mining => "mining",
            Mode::Solving => "solving",
        },
        players: s
            .players
            .iter()
            .map(|p| JsonPlayer {
                name: &p.name,
                rank: &p.rank,
                location: &p.location,
                online: p.online,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::game::events::{Activity, Chat, Progress};

    fn parsed(event: &Event) -> serde_json::Value {
        serde_json::from_str(&to_line(event)).unwrap()
    }

    #[test]
    fn every_event_is_one_object_with_a_type() {
        let chat = Line::about(
            LineKind::Chat,
            "bob says: \"hi\"\n",
            Detail::Chat(Chat {
                scope: ChatScope::Say,
                from: "bob".into(),
                text: "\"hi\"\n".into(),
            }),
        );
        let v = parsed(&Event::Line(chat));
        assert_eq!(v["type"], "chat");
        assert_eq!(v["scope"], "say");
        assert_eq!(v["from"], "bob");
        assert_eq!(v["text"], "\"hi\"\n");
        let v = parsed(&Event::Line(Line::new(LineKind::Error, "no")));
        assert_eq!(
            (v["type"].as_str(), v["text"].as_str()),
            (Some("error"), Some("no"))
        );
        let v = parsed(&Event::Progress(Some(Progress {
            activity: Activity::Mining,
            done: 1,
            total: 3,
        })));
        assert_eq!(
            (v["type"].as_str(), v["done"].as_u64()),
            (Some("progress"), Some(1))
        );
        assert_eq!(parsed(&Event::Progress(None))["type"], "progress_end");
        let v = parsed(&Event::Status(Status::default()));
        assert_eq!(
            (v["type"].as_str(), v["sync"].as_str()),
            (Some("status"), Some("offline"))
        );
        assert_eq!(parsed(&Event::Quit)["type"], "quit");
        assert!(!to_line(&Event::Quit).contains('\n'));
    }
}
