//! The command table: names, abbreviations, usage and help text in one place, which decides
//! both parsing and `help`; and the parsing of arguments (counts, amounts) that never panics.
//!
//! What the commands do is in `actions` (instant commands) and `jobs` (long actions).

/// Which prompt a command is available at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Where {
    /// At the main prompt only.
    Main,
    /// Inside a battle only.
    Battle,
    /// At both.
    Both,
}

/// What a command is called and how it is explained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Command {
    /// Full name.
    pub name: &'static str,
    /// Shortest accepted prefix of the name.
    pub min: usize,
    /// Other accepted names.
    pub aliases: &'static [&'static str],
    /// Arguments, as shown by `help`.
    pub usage: &'static str,
    /// What it does, one line.
    pub help: &'static str,
    /// Where it works.
    pub at: Where,
}

const fn cmd(
    name: &'static str,
    min: usize,
    aliases: &'static [&'static str],
    usage: &'static str,
    help: &'static str,
    at: Where,
) -> Command {
    Command {
        name,
        min,
        aliases,
        usage,
        help,
        at,
    }
}

/// Every command, in `help` order.
pub const COMMANDS: &[Command] = &[
    cmd(
        "help",
        1,
        &["?"],
        "[command]",
        "lists the commands, or explains one",
        Where::Both,
    ),
    cmd(
        "stats",
        2,
        &[],
        "",
        "shows your name, rank, location, coins and power",
        Where::Main,
    ),
    cmd("map", 2, &[], "", "shows who is where", Where::Main),
    cmd(
        "move",
        2,
        &["go"],
        "<location>",
        "walks to a location (fence, bridge, 1-9)",
        Where::Main,
    ),
    cmd(
        "mine",
        2,
        &[],
        "[n]",
        "tries to mine coins n times (default 1), in the background",
        Where::Main,
    ),
    cmd(
        "shop",
        2,
        &[],
        "",
        "shows the hardware your rank can buy",
        Where::Main,
    ),
    cmd(
        "buy",
        1,
        &[],
        "<hardware> [n|max]",
        "buys n units of hardware (default 1)",
        Where::Main,
    ),
    cmd(
        "inv",
        1,
        &["inventory"],
        "",
        "shows your coins and hardware",
        Where::Both,
    ),
    cmd(
        "solve",
        2,
        &[],
        "[n]",
        "starts a battle with your rank's problem; inside it, computes n steps",
        Where::Both,
    ),
    cmd(
        "resign",
        3,
        &[],
        "",
        "gives up the battle for now",
        Where::Battle,
    ),
    cmd(
        "stop",
        3,
        &[],
        "",
        "stops mining or computing (Esc does the same)",
        Where::Both,
    ),
    cmd(
        "who",
        1,
        &[],
        "",
        "lists the players online now",
        Where::Both,
    ),
    cmd(
        "say",
        2,
        &["'"],
        "<text>",
        "says something to the players at your location",
        Where::Both,
    ),
    cmd(
        "shout",
        4,
        &[],
        "<text>",
        "says something to every player",
        Where::Both,
    ),
    cmd(
        "top",
        1,
        &[],
        "",
        "the leaderboard, by rank then coins",
        Where::Both,
    ),
    cmd(
        "give",
        1,
        &[],
        "<player> <coins>",
        "gives coins to a player (name or name#tag)",
        Where::Main,
    ),
    cmd(
        "addr",
        2,
        &[],
        "[copy]",
        "shows the addresses a friend can --join; copy puts the first on the clipboard",
        Where::Both,
    ),
    cmd(
        "join",
        1,
        &[],
        "<multiaddr>",
        "connects to a friend's node",
        Where::Both,
    ),
    cmd(
        "quit",
        1,
        &["exit"],
        "",
        "leaves the game (your character stays in the world)",
        Where::Both,
    ),
];

/// Finds a command by name, alias or abbreviation (case-insensitive).
pub fn lookup(word: &str) -> Option<&'static Command> {
    let word = word.to_lowercase();
    COMMANDS
        .iter()
        .find(|c| c.name == word || c.aliases.contains(&word.as_str()))
        .or_else(|| {
            COMMANDS
                .iter()
                .find(|c| word.chars().count() >= c.min && c.name.starts_with(word.as_str()))
        })
}

/// Splits a line into its command word and the rest (trimmed).
pub fn split(line: &str) -> (&str, &str) {
    let line = line.trim();
    match line.split_once(char::is_whitespace) {
        Some((word, rest)) => (word, rest.trim()),
        None => (line, ""),
    }
}

/// Parses a count from 1 to `max`; the error says what is expected.
pub fn count(arg: &str, what: &str, max: u64) -> Result<u64, String> {
    match arg.parse::<u64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "{what} must be a whole number from 1 to {max}, not {:?}.",
            shorten(arg)
        )),
    }
}

/// Like [`count`], with 1 when the player gave no number (`mine`, `solve`).
pub fn count_or_one(arg: &str, what: &str, max: u64) -> Result<u64, String> {
    if arg.is_empty() {
        Ok(1)
    } else {
        count(arg, what, max)
    }
}

/// Cuts text a player typed to a length fit to quote back.
pub fn shorten(text: &str) -> String {
    const QUOTED_CHARS: usize = 40;
    if text.chars().count() > QUOTED_CHARS {
        let cut: String = text.chars().take(QUOTED_CHARS).collect();
        format!("{cut}...")
    } else {
        text.to_owned()
    }
}

/// Chat text as it may be stored: control characters removed, trimmed.
pub fn clean_text(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_found_by_name_alias_and_prefix() {
        assert_eq!(lookup("mine").unwrap().name, "mine");
        assert_eq!(lookup("MI").unwrap().name, "mine");
        assert_eq!(lookup("m"), None);
        assert_eq!(lookup("b").unwrap().name, "buy");
        assert_eq!(lookup("exit").unwrap().name, "quit");
        assert_eq!(lookup("sol").unwrap().name, "solve");
        assert_eq!(lookup("sh").unwrap().name, "shop");
        assert_eq!(lookup("sho").unwrap().name, "shop");
        assert_eq!(lookup("shou").unwrap().name, "shout");
        assert_eq!(lookup("ü"), None);
    }

    #[test]
    fn abbreviations_are_unambiguous() {
        for c in COMMANDS {
            let short: String = c.name.chars().take(c.min).collect();
            assert_eq!(lookup(&short).unwrap().name, c.name, "{short}");
        }
    }

    #[test]
    fn counts_refuse_what_is_out_of_range() {
        assert_eq!(count("3", "n", 10), Ok(3));
        for bad in ["0", "-1", "11", "99999999999999999999999", "x", "", "३"] {
            assert!(count(bad, "n", 10).is_err(), "{bad}");
        }
    }

    #[test]
    fn text_is_cleaned_and_lines_split() {
        assert_eq!(clean_text(" hi\u{7}\tthere "), "hithere");
        assert_eq!(split("  say  hello  world "), ("say", "hello  world"));
        assert_eq!(split(""), ("", ""));
        assert_eq!(shorten(&"é".repeat(50)).chars().count(), 43);
    }
}
