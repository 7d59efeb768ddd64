//! Tab completion from the game's command table: command names at the prompt's mode, then
//! each argument by its kind (locations and hardware from the rules data, player names from
//! [`Status`] snapshots, `max`, command names). Nothing here lists commands, hardware or
//! locations itself.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::game::commands::{self, ArgKind, Lookup};
use crate::game::content::Content;
use crate::game::events::{Mode, Status};

/// What completion knows beyond the command table.
#[derive(Clone, Debug)]
pub struct Vocabulary {
    /// The rules (locations, hardware).
    content: Arc<Content>,
    /// Player names seen.
    pub players: BTreeSet<String>,
}

impl Default for Vocabulary {
    fn default() -> Self {
        Vocabulary {
            content: Content::embedded(),
            players: BTreeSet::new(),
        }
    }
}

impl Vocabulary {
    /// Learns the players of a status snapshot.
    pub fn learn(&mut self, status: &Status) {
        for presence in &status.players {
            if !presence.name.is_empty() {
                self.players.insert(presence.name.clone());
            }
        }
    }

    /// The candidates for the last word of `line` at `mode`'s prompt, sorted, without
    /// duplicates. Matching ignores case.
    pub fn candidates(&self, line: &str, mode: Mode) -> Vec<String> {
        let (head, word) = split_last_word(line);
        let (first, rest) = commands::split(head);
        let pool: Vec<String> = if mode == Mode::Naming {
            Vec::new()
        } else if first.is_empty() {
            commands::available(mode)
                .map(|c| c.name.to_owned())
                .collect()
        } else {
            let index = if rest.is_empty() {
                0
            } else {
                rest.split_whitespace().count()
            };
            match commands::lookup(first) {
                Lookup::Found(c) => c
                    .arg(index)
                    .map_or(Vec::new(), |arg| self.pool(arg.kind, mode)),
                _ => Vec::new(),
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

    /// What an argument of `kind` completes to.
    fn pool(&self, kind: ArgKind, mode: Mode) -> Vec<String> {
        let rules = &self.content.rules;
        match kind {
            ArgKind::Location => rules.locations.iter().map(|l| l.id.clone()).collect(),
            ArgKind::Hardware => rules.hardware.iter().map(|h| h.id.clone()).collect(),
            ArgKind::CountOrMax => vec!["max".to_owned()],
            ArgKind::Player | ArgKind::Text => self.players.iter().cloned().collect(),
            ArgKind::Command => commands::available(mode)
                .map(|c| c.name.to_owned())
                .collect(),
            ArgKind::Count | ArgKind::Multiaddr => Vec::new(),
        }
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
            ["say", "shop", "shout", "solve", "stats", "stop"]
        );
        assert_eq!(v.candidates("r", Mode::Solving), ["resign"]);
        assert_eq!(v.candidates("b", Mode::Solving), Vec::<String>::new());
        assert_eq!(v.candidates("buy d", Mode::Mining), ["dark_matter"]);
        assert_eq!(v.candidates("b d", Mode::Mining), ["dark_matter"]);
        assert_eq!(v.candidates("buy gpu m", Mode::Mining), ["max"]);
        assert_eq!(v.candidates("move f", Mode::Mining), ["fence"]);
        assert_eq!(v.candidates("give B", Mode::Mining), ["bob"]);
        assert_eq!(v.candidates("tell b", Mode::Mining), ["bob"]);
        assert_eq!(v.candidates("help re", Mode::Solving), ["resign"]);
        assert_eq!(
            v.candidates("give bob ", Mode::Mining),
            Vec::<String>::new()
        );
        assert!(v.candidates("a", Mode::Naming).is_empty());
    }

    #[test]
    fn every_command_completes_from_the_table() {
        let v = vocabulary();
        for c in commands::COMMANDS {
            let mode = if c.allowed(Mode::Mining) {
                Mode::Mining
            } else {
                Mode::Solving
            };
            assert!(
                v.candidates(c.name, mode).contains(&c.name.to_owned()),
                "{}",
                c.name
            );
        }
        let hardware = v.candidates("buy ", Mode::Mining);
        let rules = &Content::embedded().rules;
        assert_eq!(hardware.len(), rules.hardware.len());
        assert_eq!(
            v.candidates("move ", Mode::Mining).len(),
            rules.locations.len()
        );
    }
}
