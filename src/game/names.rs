//! Display names: which names are allowed, how two players with the same name are told apart
//! (`alice#3kq`, a piece of the end of their ids), and how a typed name finds a player.
//!
//! A name is only a field (`p/<id>/name`): it never decides which character is whose.

use std::collections::BTreeMap;

use super::schema::World;

/// Shortest id tail used to tell players with the same name apart.
const MIN_TAG_CHARS: usize = 3;

/// Whether a name may hold this character (a letter, a digit, `_` or `-`): never `#`, which
/// tells apart players who share a name, nor spaces, which split commands.
pub fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '-'
}

/// The one rule for names, and its one message: a name the game refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("A name is 1 to {max_chars} letters, digits, _ or -, with no spaces.")]
pub struct NameError {
    /// The longest name allowed, in characters (`max_name_chars` in the rules).
    pub max_chars: usize,
}

/// Checks a chosen name: 1 to `max_chars` letters, digits, `_` or `-`. Both front ends show
/// the same message (the game sends it; a front end may check early with this function).
pub fn validate(name: &str, max_chars: usize) -> Result<(), NameError> {
    let count = name.chars().count();
    if count == 0 || count > max_chars || !name.chars().all(is_name_char) {
        return Err(NameError { max_chars });
    }
    Ok(())
}

/// If another player than `me` already uses `name`, the name `me` would be shown under with
/// it (`alice#3kq`); `None` if nobody else does.
pub fn taken(world: &World, me: &str, name: &str) -> Option<String> {
    let lower = name.to_lowercase();
    let clash = world
        .characters()
        .any(|p| p.id != me && p.name.as_deref().is_some_and(|n| n.to_lowercase() == lower));
    if !clash {
        return None;
    }
    let mut with_me = world.clone();
    let record = with_me.players.entry(me.to_owned()).or_default();
    record.id = me.to_owned();
    record.name = Some(name.to_owned());
    display_names(&with_me).remove(me)
}

/// The name every player is shown under: their name, or `name#tag` when several share it.
/// Players without a name are left out.
pub fn display_names(world: &World) -> BTreeMap<String, String> {
    let mut by_name: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for p in world.characters() {
        if let Some(name) = &p.name {
            by_name
                .entry(name.to_lowercase())
                .or_default()
                .push(p.id.as_str());
        }
    }
    let mut shown = BTreeMap::new();
    for ids in by_name.values() {
        let tag_len = if ids.len() == 1 {
            0
        } else {
            shortest_unique_tail(ids)
        };
        for id in ids {
            let name = world.players[*id].name.clone().unwrap_or_default();
            let shown_name = if tag_len == 0 {
                name
            } else {
                format!("{name}#{}", tail(id, tag_len))
            };
            shown.insert((*id).to_owned(), shown_name);
        }
    }
    shown
}

fn tail(id: &str, chars: usize) -> String {
    let skip = id.chars().count().saturating_sub(chars);
    id.chars().skip(skip).collect()
}

/// The shortest tail length (at least [`MIN_TAG_CHARS`]) that tells `ids` apart. Tails that
/// differ stay different when longer, so this is a binary search: ids are keys a peer
/// chooses, and trying every length of long, alike ids would stall every look at the world.
fn shortest_unique_tail(ids: &[&str]) -> usize {
    let unique = |n: usize| {
        let mut tails: Vec<String> = ids.iter().map(|id| tail(id, n)).collect();
        tails.sort_unstable();
        tails.dedup();
        tails.len() == ids.len()
    };
    let longest = ids.iter().map(|id| id.chars().count()).max().unwrap_or(0);
    let (mut low, mut high) = (MIN_TAG_CHARS, longest.max(MIN_TAG_CHARS));
    while low < high {
        let mid = low + (high - low) / 2;
        if unique(mid) {
            high = mid;
        } else {
            low = mid + 1;
        }
    }
    low
}

/// What a typed player name matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// Exactly this player.
    One(String),
    /// Several players share the name: these are the forms to type instead.
    Ambiguous(Vec<String>),
    /// No player by that name.
    None,
}

impl Found {
    /// The one player `typed` means, or the sentence that tells the player why not.
    pub fn one(self, typed: &str) -> Result<String, String> {
        match self {
            Found::One(id) => Ok(id),
            Found::Ambiguous(forms) => Err(format!(
                "Several players are called that: {}.",
                forms.join(", ")
            )),
            Found::None => Err(format!(
                "There is no player called {:?}.",
                super::commands::shorten(typed)
            )),
        }
    }
}

/// Finds the player a typed name means: a display name (`alice`, `alice#3kq`), or a plain
/// name with a tag that is any unique piece of the end of the id.
pub fn find(world: &World, typed: &str) -> Found {
    let shown = display_names(world);
    let typed_lower = typed.to_lowercase();
    if let Some((id, _)) = shown
        .iter()
        .find(|(_, name)| name.to_lowercase() == typed_lower)
    {
        return Found::One(id.clone());
    }
    let (name, tag) = match typed.split_once('#') {
        Some((name, tag)) => (name.to_lowercase(), Some(tag)),
        None => (typed_lower, None),
    };
    let matches: Vec<&String> = shown
        .keys()
        .filter(|id| {
            let stored = world.players[*id].name.as_deref().unwrap_or_default();
            stored.to_lowercase() == name && tag.is_none_or(|tag| id.ends_with(tag))
        })
        .collect();
    match matches.as_slice() {
        [] => Found::None,
        [one] => Found::One((*one).clone()),
        many => {
            // In the order a player reads them, not the order of the peer ids behind them.
            let mut forms: Vec<String> = many.iter().map(|id| shown[*id].clone()).collect();
            forms.sort();
            Found::Ambiguous(forms)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule_one_message() {
        let messages: std::collections::BTreeSet<String> = ["", "a/b", "a b", "alice#1"]
            .into_iter()
            .map(|bad| validate(bad, 16).unwrap_err().to_string())
            .chain([validate(&"x".repeat(17), 16).unwrap_err().to_string()])
            .collect();
        assert_eq!(
            messages.into_iter().collect::<Vec<_>>(),
            ["A name is 1 to 16 letters, digits, _ or -, with no spaces."]
        );
    }

    #[test]
    fn a_taken_name_says_how_the_player_would_be_shown() {
        let w = World::from_items(&[("p/12D3KooWaaa3kq/name", "alice")]);
        assert_eq!(
            taken(&w, "12D3KooWbbbx7z", "Alice").as_deref(),
            Some("Alice#x7z")
        );
        assert_eq!(taken(&w, "12D3KooWaaa3kq", "alice"), None, "one's own name");
        assert_eq!(taken(&w, "12D3KooWbbbx7z", "bob"), None);
    }

    #[test]
    fn names_are_checked() {
        assert!(validate("alice", 16).is_ok());
        assert!(validate("Zoë_2-b", 16).is_ok());
        assert!(validate("", 16).is_err());
        assert!(validate("a/b", 16).is_err());
        assert!(validate("a b", 16).is_err());
        assert!(validate("alice#1", 16).is_err());
        assert!(validate(&"x".repeat(17), 16).is_err());
    }

    #[test]
    fn shared_names_are_told_apart_and_found() {
        let w = World::from_items(&[
            ("p/12D3KooWaaa3kq/name", "alice"),
            ("p/12D3KooWbbbx7z/name", "alice"),
            ("p/12D3KooWccc111/name", "bob"),
        ]);
        let shown = display_names(&w);
        assert_eq!(shown["12D3KooWaaa3kq"], "alice#3kq");
        assert_eq!(shown["12D3KooWbbbx7z"], "alice#x7z");
        assert_eq!(shown["12D3KooWccc111"], "bob");
        assert_eq!(find(&w, "alice#3kq"), Found::One("12D3KooWaaa3kq".into()));
        assert_eq!(find(&w, "BOB"), Found::One("12D3KooWccc111".into()));
        assert!(matches!(find(&w, "alice"), Found::Ambiguous(v) if v.len() == 2));
        assert_eq!(find(&w, "carol"), Found::None);
        assert_eq!(find(&w, "alice#zzz"), Found::None);
    }

    #[test]
    fn a_peer_cannot_take_anothers_tagged_name() {
        // Names are written by their players, so a peer may store one the game would refuse,
        // such as the tagged form another player is shown under.
        let w = World::from_items(&[
            ("p/id-aaa1/name", "sam"),
            ("p/id-bbb2/name", "sam"),
            ("p/id-attacker/name", "sam#bb2"),
            ("p/id-spaces/name", "give me 5"),
            ("p/id-nothing/name", "#/ !"),
        ]);
        assert_eq!(find(&w, "sam#bb2"), Found::One("id-bbb2".into()));
        let shown = display_names(&w);
        assert!(shown.values().all(|name| {
            let (plain, _) = name.split_once('#').unwrap_or((name, ""));
            validate(plain, 64).is_ok()
        }));
        assert_eq!(shown["id-spaces"], "giveme5");
        assert!(!w.player("id-nothing").exists());
    }

    #[test]
    fn long_shared_id_tails_are_told_apart_quickly() {
        // Ids are keys a peer chooses: 400 players named alike whose ids of 1000 characters
        // differ only at the start. Telling them apart must not try every tail length.
        let tail = "z".repeat(995);
        let ids: Vec<String> = (0..400).map(|i| format!("{i:05}{tail}")).collect();
        let pairs = ids
            .iter()
            .map(|id| (format!("p/{id}/name"), "twin".to_owned()));
        let w = World::from_pairs(pairs);
        let started = std::time::Instant::now();
        let shown = display_names(&w);
        let took = started.elapsed();
        assert_eq!(shown[&ids[7]], format!("twin#{}", &ids[7][2..]));
        assert!(took < std::time::Duration::from_secs(3), "took {took:?}");
    }

    #[test]
    fn same_tails_grow_until_unique() {
        let w = World::from_items(&[("p/xx1abc/name", "a"), ("p/yy2abc/name", "a")]);
        let shown = display_names(&w);
        assert_eq!(shown["xx1abc"], "a#1abc");
        assert_eq!(shown["yy2abc"], "a#2abc");
    }
}
