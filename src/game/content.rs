//! The game's content as data: the rules (ranks, problems, hardware, locations and every
//! number that drives play) and the story text, both read from `assets/*.ron`.
//!
//! Owns parsing and checking the content; it does not know about keys or sessions. The files
//! are embedded with `include_str!`, so the binary is self-contained.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, OnceLock};

use serde::Deserialize;

/// The embedded rules file.
pub const RULES_RON: &str = include_str!("../../assets/rules.ron");

/// The embedded story file.
pub const STORY_RON: &str = include_str!("../../assets/story.ron");

/// Why the content could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// A file does not parse.
    #[error("{file}: {message}")]
    Parse {
        /// Which asset.
        file: &'static str,
        /// What is wrong, with its position.
        message: String,
    },
    /// The files parse but do not hold together.
    #[error("{0}")]
    Invalid(String),
}

/// A rank of CMU computer science.
#[derive(Clone, Debug, Deserialize)]
pub struct Rank {
    /// Its name, also used in keys (`work/<rank>/...`).
    pub id: String,
    /// Size of the rank's problem in steps; `None` for the last rank.
    pub problem: Option<u64>,
}

/// A kind of hardware sold in the shop.
#[derive(Clone, Debug, Deserialize)]
pub struct Hardware {
    /// Short id typed in `buy` and used in keys.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Price of one unit in coins.
    pub price: u64,
    /// Power of one unit.
    pub power: u64,
    /// The first rank whose shop sells it.
    pub unlocked_at: String,
}

/// A place in the world.
#[derive(Clone, Debug, Deserialize)]
pub struct Location {
    /// Short id typed in `move` and stored in `p/<id>/loc`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// What `look` says of it.
    pub description: String,
}

/// Numbers of `mine`.
#[derive(Clone, Debug, Deserialize)]
pub struct Mining {
    /// Chance in percent that an attempt finds coins.
    pub success_percent: u32,
    /// Longest time one attempt takes, in milliseconds.
    pub max_attempt_ms: u64,
    /// Largest `n` in `mine n`.
    pub max_attempts: u64,
}

/// Numbers of a problem battle.
#[derive(Clone, Debug, Deserialize)]
pub struct Solving {
    /// Chance in percent that a step makes progress.
    pub progress_percent: u32,
    /// Chance in percent that a step breaks hardware.
    pub break_percent: u32,
    /// A broken kind's count is divided by this.
    pub break_divisor: u64,
    /// Longest time one step takes, in milliseconds.
    pub max_step_ms: u64,
    /// Largest `n` in `solve n`.
    pub max_steps: u64,
    /// A player whose work on a fallen problem is at least this share of its size, in
    /// percent, is promoted with its finisher.
    pub coop_share_percent: u64,
    /// Each epoch of a rank's problem is this large, in percent of the one before.
    pub growth_percent: u64,
    /// One step does at most this share of a problem, in percent, whatever the power.
    pub max_step_percent: u64,
}

/// Numbers of notes.
#[derive(Clone, Debug, Deserialize)]
pub struct NoteRules {
    /// Notes one player may have in the world.
    pub max_per_player: u64,
    /// Longest note, in characters.
    pub max_chars: usize,
}

/// Numbers of presence.
#[derive(Clone, Debug, Deserialize)]
pub struct PresenceRules {
    /// How often the heartbeat is refreshed, in seconds.
    pub heartbeat_secs: u64,
    /// A player is online if seen within this many seconds.
    pub online_secs: u64,
}

/// Numbers of chat.
#[derive(Clone, Debug, Deserialize)]
pub struct ChatRules {
    /// Lines kept per player (the ring's size).
    pub ring: u64,
    /// Longest line, in characters.
    pub max_chars: usize,
    /// Lines of a newly seen player are shown only if this recent, in seconds.
    pub recent_secs: u64,
}

/// Every rule and number of the game (`assets/rules.ron`).
#[derive(Clone, Debug, Deserialize)]
pub struct Rules {
    /// What the money is called.
    pub currency: String,
    /// One unit of it.
    pub coin: String,
    /// Ranks in order of promotion.
    pub ranks: Vec<Rank>,
    /// Hardware in shop order.
    pub hardware: Vec<Hardware>,
    /// Locations in map order.
    pub locations: Vec<Location>,
    /// Where new players start.
    pub start_location: String,
    /// What new players own.
    pub start_hardware: Vec<(String, u64)>,
    /// Mining numbers.
    pub mining: Mining,
    /// Battle numbers.
    pub solving: Solving,
    /// Presence numbers.
    pub presence: PresenceRules,
    /// Chat numbers.
    pub chat: ChatRules,
    /// Note numbers.
    pub notes: NoteRules,
    /// Longest display name, in characters.
    pub max_name_chars: usize,
    /// Pause after a line of story text, in milliseconds.
    pub story_pause_ms: u64,
    /// How often the session looks at the world for news, in milliseconds.
    pub poll_ms: u64,
    /// Clock offset to a peer that earns a warning, in milliseconds, when the node does not
    /// report its `max_clock_skew_ms` (the warning is then at half of that).
    pub clock_warning_ms: i64,
    /// Players shown by `top`.
    pub top_size: usize,
}

/// The story text (`assets/story.ron`).
#[derive(Clone, Debug, Deserialize)]
pub struct Story {
    /// Shown when a session starts.
    pub banner: Vec<String>,
    /// Asks for a name.
    pub ask_name: Vec<String>,
    /// A new character's introduction.
    pub intro: Vec<String>,
    /// A returning player's greeting.
    pub welcome_back: Vec<String>,
    /// Each rank's problem, shown when a battle starts.
    pub problems: BTreeMap<String, Vec<String>>,
    /// Shown on promotion to each rank.
    pub promotions: BTreeMap<String, Vec<String>>,
    /// `solve` at the last rank.
    pub retired: Vec<String>,
    /// After a promotion that unlocked hardware.
    pub new_machines: String,
    /// When breakdowns leave nothing.
    pub out_of_hardware: Vec<String>,
    /// A step with no progress.
    pub stuck: String,
    /// `resign`.
    pub resign: String,
    /// `quit`.
    pub farewell: String,
}

/// Rules and story together, checked.
#[derive(Clone, Debug)]
pub struct Content {
    /// The rules.
    pub rules: Rules,
    /// The story.
    pub story: Story,
}

/// Replaces `{name}`-style fields in a line of text.
pub fn fill(text: &str, fields: &[(&str, &str)]) -> String {
    fields.iter().fold(text.to_owned(), |text, (field, value)| {
        text.replace(&format!("{{{field}}}"), value)
    })
}

impl Content {
    /// The embedded content, parsed and checked once.
    pub fn embedded() -> Arc<Content> {
        static CONTENT: OnceLock<Arc<Content>> = OnceLock::new();
        CONTENT
            .get_or_init(|| {
                // The embedded files are checked by the test suite, so this cannot fail in a
                // build that passed its tests.
                Arc::new(Content::parse(RULES_RON, STORY_RON).expect("embedded assets are valid"))
            })
            .clone()
    }

    /// Parses and checks content from RON text.
    pub fn parse(rules: &str, story: &str) -> Result<Content, ContentError> {
        let rules: Rules = ron::from_str(rules).map_err(|err| ContentError::Parse {
            file: "assets/rules.ron",
            message: err.to_string(),
        })?;
        let story: Story = ron::from_str(story).map_err(|err| ContentError::Parse {
            file: "assets/story.ron",
            message: err.to_string(),
        })?;
        let content = Content { rules, story };
        content.check()?;
        Ok(content)
    }

    fn check(&self) -> Result<(), ContentError> {
        self.check_ids()?;
        self.check_ranks()?;
        self.check_numbers()
    }

    /// Every id is one word, without '/', and used once.
    fn check_ids(&self) -> Result<(), ContentError> {
        let bad = |msg: String| Err(ContentError::Invalid(msg));
        let r = &self.rules;
        if r.ranks.is_empty() || r.hardware.is_empty() || r.locations.is_empty() {
            return bad("ranks, hardware and locations must not be empty".into());
        }
        let ids = r
            .ranks
            .iter()
            .map(|x| &x.id)
            .chain(r.hardware.iter().map(|x| &x.id))
            .chain(r.locations.iter().map(|x| &x.id));
        let mut seen = HashSet::new();
        for id in ids {
            if id.is_empty() || id.contains('/') || id.contains(char::is_whitespace) {
                return bad(format!("id {id:?} must be one word without '/'"));
            }
            if !seen.insert(id.to_lowercase()) {
                return bad(format!("id {id:?} is used twice"));
            }
        }
        Ok(())
    }

    /// Every rank but the last has a problem, and the story text for it.
    fn check_ranks(&self) -> Result<(), ContentError> {
        let bad = |msg: String| Err(ContentError::Invalid(msg));
        let r = &self.rules;
        let last = r.ranks.len() - 1;
        for (i, rank) in r.ranks.iter().enumerate() {
            match (rank.problem, i == last) {
                (Some(0), _) | (None, false) => {
                    return bad(format!("rank {} needs a problem size above 0", rank.id));
                }
                (Some(_), true) => return bad("the last rank has no problem".into()),
                _ => {}
            }
            if i < last && !self.story.problems.contains_key(&rank.id) {
                return bad(format!("story: no problem text for {}", rank.id));
            }
            if i > 0 && !self.story.promotions.contains_key(&rank.id) {
                return bad(format!("story: no promotion text for {}", rank.id));
            }
        }
        Ok(())
    }

    /// Hardware, start, and the numbers of play make sense.
    fn check_numbers(&self) -> Result<(), ContentError> {
        let bad = |msg: String| Err(ContentError::Invalid(msg));
        let r = &self.rules;
        for hw in &r.hardware {
            if hw.price == 0 || hw.power == 0 {
                return bad(format!(
                    "hardware {} needs a price and power above 0",
                    hw.id
                ));
            }
            if self.rank_index(&hw.unlocked_at).is_none() {
                return bad(format!(
                    "hardware {}: unknown rank {}",
                    hw.id, hw.unlocked_at
                ));
            }
        }
        if self.location(&r.start_location).is_none() {
            return bad(format!("unknown start location {}", r.start_location));
        }
        if let Some((id, _)) = r
            .start_hardware
            .iter()
            .find(|(id, _)| self.hardware(id).is_none())
        {
            return bad(format!("unknown start hardware {id}"));
        }
        if r.start_hardware.iter().all(|(_, n)| *n == 0) {
            return bad("new players need some hardware".into());
        }
        let s = &r.solving;
        if r.mining.success_percent > 100
            || s.progress_percent.saturating_add(s.break_percent) > 100
        {
            return bad("percentages must not add up to more than 100".into());
        }
        if s.break_divisor < 2 || r.chat.ring == 0 || r.max_name_chars == 0 || r.poll_ms == 0 {
            return bad("break_divisor, chat ring, name length and poll_ms are too small".into());
        }
        if r.mining.max_attempts == 0 || s.max_steps == 0 || r.presence.heartbeat_secs == 0 {
            return bad("max_attempts, max_steps and heartbeat_secs must be above 0".into());
        }
        if s.coop_share_percent == 0 || s.coop_share_percent > 100 || s.growth_percent < 100 {
            return bad("coop_share_percent must be 1-100 and growth_percent at least 100".into());
        }
        if s.max_step_percent == 0 || s.max_step_percent > 100 {
            return bad("max_step_percent must be 1-100".into());
        }
        if r.notes.max_per_player == 0 || r.notes.max_chars == 0 {
            return bad("notes need max_per_player and max_chars above 0".into());
        }
        Ok(())
    }

    /// Index of the rank called `id`.
    pub fn rank_index(&self, id: &str) -> Option<usize> {
        self.rules.ranks.iter().position(|rank| rank.id == id)
    }

    /// The rank at `index`, clamped into range (a peer may store nonsense).
    pub fn rank(&self, index: usize) -> &Rank {
        &self.rules.ranks[index.min(self.rules.ranks.len() - 1)]
    }

    /// The hardware called `id` (case-insensitive).
    pub fn hardware(&self, id: &str) -> Option<&Hardware> {
        self.rules
            .hardware
            .iter()
            .find(|hw| hw.id.eq_ignore_ascii_case(id))
    }

    /// Whether a player at rank `rank` may buy `hw`.
    pub fn unlocked(&self, hw: &Hardware, rank: usize) -> bool {
        self.rank_index(&hw.unlocked_at)
            .is_some_and(|needed| needed <= rank)
    }

    /// The location called `id` (case-insensitive, also by display name).
    pub fn location(&self, id: &str) -> Option<&Location> {
        self.rules
            .locations
            .iter()
            .find(|loc| loc.id.eq_ignore_ascii_case(id) || loc.name.eq_ignore_ascii_case(id))
    }

    /// `1 coin`, `5 coins`.
    pub fn coins(&self, n: u64) -> String {
        let unit = if n == 1 {
            &self.rules.coin
        } else {
            &self.rules.currency
        };
        format!("{n} {unit}")
    }

    /// The size of epoch `epoch` (from 1) of rank `rank_index`'s problem: the rank's size,
    /// grown by `growth_percent` for each epoch before it; `None` for a rank without one.
    pub fn problem_size(&self, rank_index: usize, epoch: u64) -> Option<u64> {
        let base = self.rank(rank_index).problem?;
        let growth = u128::from(self.rules.solving.growth_percent);
        let mut size = u128::from(base);
        for _ in 1..epoch {
            size = size * growth / 100;
            if size >= u128::from(u64::MAX) {
                return Some(u64::MAX);
            }
        }
        Some(u64::try_from(size).unwrap_or(u64::MAX))
    }

    /// What one battle step with `power` does to a problem of `size` steps: the power, but
    /// at most `max_step_percent` of the size (rounded up), so no problem falls in one blow.
    pub fn step_progress(&self, power: u64, size: u64) -> u64 {
        let cap = u128::from(size) * u128::from(self.rules.solving.max_step_percent);
        let cap = u64::try_from(cap.div_ceil(100)).unwrap_or(u64::MAX).max(1);
        power.min(cap)
    }

    /// Display name of a location id; unknown ids are shown as they are.
    pub fn location_name<'a>(&'a self, id: &'a str) -> &'a str {
        self.location(id).map_or(id, |loc| loc.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_assets_parse_and_hold_together() {
        let content = Content::parse(RULES_RON, STORY_RON).unwrap();
        let ranks: Vec<_> = content.rules.ranks.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(
            ranks,
            [
                "Undergraduate",
                "Masters",
                "PhD",
                "PostDoc",
                "Professor",
                "Retired"
            ]
        );
        let sizes: Vec<_> = content.rules.ranks.iter().map(|r| r.problem).collect();
        assert_eq!(
            sizes,
            [
                Some(100),
                Some(1000),
                Some(10000),
                Some(500000),
                Some(10000000),
                None
            ]
        );
        let shop: Vec<_> = content
            .rules
            .hardware
            .iter()
            .map(|h| (h.id.as_str(), h.price, h.power))
            .collect();
        assert_eq!(
            shop,
            [
                ("cpu", 1, 1),
                ("gpu", 5, 10),
                ("asic", 25, 100),
                ("quantum", 125, 1000),
                ("dark_matter", 625, 10000)
            ]
        );
        assert_eq!(content.rules.locations.len(), 11);
        assert_eq!(content.rules.start_location, "5");
    }

    #[test]
    fn broken_content_is_refused_with_a_reason() {
        let err = Content::parse("(", STORY_RON).unwrap_err();
        assert!(err.to_string().contains("assets/rules.ron"), "{err}");
        let bad_unlock = RULES_RON.replace("unlocked_at: \"PhD\"", "unlocked_at: \"Dean\"");
        let err = Content::parse(&bad_unlock, STORY_RON).unwrap_err();
        assert!(err.to_string().contains("Dean"), "{err}");
        let no_problem = RULES_RON.replace("problem: Some(1000)", "problem: None");
        assert!(Content::parse(&no_problem, STORY_RON).is_err());
    }

    #[test]
    fn locked_hardware_follows_rank() {
        let content = Content::embedded();
        let gpu = content.hardware("GPU").unwrap();
        assert!(!content.unlocked(gpu, 0));
        assert!(content.unlocked(gpu, 1));
        assert_eq!(content.location("fence").unwrap().name, "The Fence");
        assert_eq!(content.location_name("5"), "Gates 5th Floor");
    }
}
