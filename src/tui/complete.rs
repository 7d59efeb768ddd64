//! Tab completion, and the command table the help overlay shares with it.
//!
//! The UI does not query the replica, so it completes from what it knows: the game's commands
//! (listed here, as in DESIGN.md), the hardware names, and the locations and players seen in
//! [`Status`] snapshots.

use std::collections::BTreeSet;

use crate::game::events::{Mode, Status};

/// One game command, for completion and the help overlay.
#[derive(Clone, Copy, Debug)]
pub struct CommandHelp {
    /// The command word.
    pub name: &'static str,
    /// Its arguments, as help shows them.
    pub args: &'static str,
    /// What it does, in a few words.
    pub about: &'static str,
    /// What its first argument completes to.
    pub completes: Arg,
}

/// What an argument completes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arg {
    /// Nothing in particular (player names are offered).
    Free,
    /// A location.
    Location,
    /// A hardware kind.
    Hardware,
    /// A player's name.
    Player,
}

const fn cmd(
    name: &'static str,
    args: &'static str,
    about: &'static str,
    completes: Arg,
) -> CommandHelp {
    CommandHelp {
        name,
        args,
        about,
        completes,
    }
}

/// The commands at the main prompt.
pub const COMMANDS: &[CommandHelp] = &[
    cmd("help", "", "list commands", Arg::Free),
    cmd("stats", "", "rank, coins, power", Arg::Free),
    cmd("map", "", "where you can go", Arg::Free),
    cmd("move", "<place>", "go somewhere", Arg::Location),
    cmd("mine", "[n]", "mine coins", Arg::Free),
    cmd("shop", "", "hardware for sale", Arg::Free),
    cmd("buy", "<hw> [n|max]", "buy hardware", Arg::Hardware),
    cmd("inv", "", "what you own", Arg::Free),
    cmd("solve", "", "battle your problem", Arg::Free),
    cmd("who", "", "who is online, where", Arg::Free),
    cmd("say", "<text>", "talk to the room", Arg::Free),
    cmd("shout", "<text>", "talk to everyone", Arg::Free),
    cmd("top", "", "the leaderboard", Arg::Free),
    cmd("give", "<player> <n>", "give coins", Arg::Player),
    cmd("addr", "", "addresses to share", Arg::Free),
    cmd("join", "<multiaddr>", "dial a friend", Arg::Free),
    cmd("quit", "", "leave the game", Arg::Free),
];

/// The commands inside a problem battle.
pub const BATTLE_COMMANDS: &[&str] = &["solve", "resign", "inv", "help", "quit"];

/// Hardware kinds (`buy`).
pub const HARDWARE: &[&str] = &["cpu", "gpu", "asic", "quantum", "dark_matter"];

/// What completion knows beyond the static tables.
#[derive(Clone, Debug, Default)]
pub struct Vocabulary {
    /// Locations seen (the player's own and other players').
    pub locations: BTreeSet<String>,
    /// Player names seen.
    pub players: BTreeSet<String>,
}

impl Vocabulary {
    /// Learns the locations and players of a status snapshot.
    pub fn learn(&mut self, status: &Status) {
        if !status.location.is_empty() {
            self.locations.insert(status.location.clone());
        }
        for presence in &status.players {
            if !presence.location.is_empty() {
                self.locations.insert(presence.location.clone());
            }
            if !presence.name.is_empty() {
                self.players.insert(presence.name.clone());
            }
        }
    }

    /// The candidates for the last word of `line` at `mode`'s prompt, sorted, without
    /// duplicates. Matching ignores case.
    pub fn candidates(&self, line: &str, mode: Mode) -> Vec<String> {
        let (head, word) = split_last_word(line);
        let words: Vec<&str> = head.split_whitespace().collect();
        let pool: Vec<String> = match (mode, words.first()) {
            (Mode::Naming, _) => Vec::new(),
            (Mode::Solving, None) => BATTLE_COMMANDS.iter().map(|s| s.to_string()).collect(),
            (Mode::Mining, None) => COMMANDS.iter().map(|c| c.name.to_owned()).collect(),
            (_, Some(first)) => {
                let arg = COMMANDS
                    .iter()
                    .find(|c| c.name.eq_ignore_ascii_case(first))
                    .map_or(Arg::Free, |c| c.completes);
                match (arg, words.len()) {
                    (Arg::Location, 1) => self.locations.iter().cloned().collect(),
                    (Arg::Hardware, 1) => HARDWARE.iter().map(|s| s.to_string()).collect(),
                    (Arg::Hardware, 2) => vec!["max".to_owned()],
                    (Arg::Player | Arg::Free, _) => self.players.iter().cloned().collect(),
                    _ => Vec::new(),
                }
            }
        };
        let lower = word.to_lowercase();
        let mut out: Vec<String> = pool
            .into_iter()
            .filter(|c| c.to_lowercase().starts_with(&lower))
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// Splits a line into everything before its last word and that word (empty after a space).
pub fn split_last_word(line: &str) -> (&str, &str) {
    match line.rfind(' ') {
        Some(at) => (&line[..=at], &line[at + 1..]),
        None => ("", line),
    }
}

/// A Tab cycle in progress: the line it started from and the candidates it goes through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// Everything before the word being completed.
    pub head: String,
    /// The candidates, in order.
    pub candidates: Vec<String>,
    /// The one shown now.
    pub index: usize,
}

impl Completion {
    /// The input line with the current candidate (a space follows a sole candidate).
    pub fn line(&self) -> String {
        let word = &self.candidates[self.index];
        if self.candidates.len() == 1 {
            format!("{}{word} ", self.head)
        } else {
            format!("{}{word}", self.head)
        }
    }

    /// Moves to the next (or previous) candidate.
    pub fn step(&mut self, forward: bool) {
        let n = self.candidates.len();
        self.index = if forward {
            (self.index + 1) % n
        } else {
            (self.index + n - 1) % n
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::game::events::Presence;

    fn vocabulary() -> Vocabulary {
        let mut vocabulary = Vocabulary::default();
        vocabulary.learn(&Status {
            location: "the Fence".into(),
            players: vec![Presence {
                name: "bob".into(),
                location: "Gates 5".into(),
                rank: "PhD".into(),
                online: true,
            }],
            ..Status::default()
        });
        vocabulary
    }

    #[test]
    fn completes_by_position_and_command() {
        let v = vocabulary();
        assert_eq!(v.candidates("mi", Mode::Mining), ["mine"]);
        assert_eq!(
            v.candidates("s", Mode::Mining),
            ["say", "shop", "shout", "solve", "stats"]
        );
        assert_eq!(v.candidates("r", Mode::Solving), ["resign"]);
        assert_eq!(v.candidates("buy d", Mode::Mining), ["dark_matter"]);
        assert_eq!(v.candidates("buy gpu m", Mode::Mining), ["max"]);
        assert_eq!(v.candidates("move g", Mode::Mining), ["Gates 5"]);
        assert_eq!(v.candidates("give B", Mode::Mining), ["bob"]);
        assert!(v.candidates("a", Mode::Naming).is_empty());
    }
}
