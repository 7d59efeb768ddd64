//! The command table: every command's name, abbreviation, aliases, arguments (with what each
//! completes to), help text and the prompts it works at, in one place. Dispatch (`actions`),
//! `help`, abbreviation, the terminal UI's completion and its help overlay all read it; the
//! test below fails if a command lacks help, and dispatch is an exhaustive `match` on
//! [`CommandId`], so a command without a handler does not compile.
//!
//! Also the parsing of arguments (counts, amounts) that never panics.

use super::events::Mode;

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

/// Which command: what dispatch matches on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CommandId {
    Help,
    Stats,
    Map,
    Look,
    Move,
    Mine,
    Shop,
    Buy,
    Inv,
    Solve,
    Resign,
    Stop,
    Who,
    Say,
    Emote,
    Shout,
    Tell,
    Mail,
    Note,
    Unnote,
    Top,
    Give,
    Addr,
    Join,
    Quit,
}

/// What an argument is, and so what it completes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgKind {
    /// A whole number (no completion).
    Count,
    /// A number or `max`.
    CountOrMax,
    /// A location id from the rules.
    Location,
    /// A hardware id from the rules.
    Hardware,
    /// A player's shown name.
    Player,
    /// Free text (player names are offered, for mentions).
    Text,
    /// A multiaddr (no completion).
    Multiaddr,
    /// A command name.
    Command,
}

/// One argument of a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arg {
    /// Its name in the usage (`<player>`).
    pub name: &'static str,
    /// What it is.
    pub kind: ArgKind,
    /// Whether it may be left out (`[n]`).
    pub optional: bool,
}

/// What a command is called and how it is explained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Command {
    /// Which command.
    pub id: CommandId,
    /// Full name.
    pub name: &'static str,
    /// Length of the abbreviation that means this command even when longer names share it
    /// (`sh` is `shop`, not `shout`); 0 if only an unambiguous prefix does.
    pub min: usize,
    /// Other accepted names (`'` for `say`, `:` for `emote`).
    pub aliases: &'static [&'static str],
    /// Arguments, in order.
    pub args: &'static [Arg],
    /// What it does, one line.
    pub help: &'static str,
    /// What it does in a few words, for narrow places (the terminal UI's help overlay).
    pub brief: &'static str,
    /// Where it works.
    pub at: Where,
}

impl Command {
    /// The arguments as `help` shows them: `<player> <text>`, `[n]`.
    pub fn usage(&self) -> String {
        self.args
            .iter()
            .map(|arg| {
                if arg.optional {
                    format!("[{}]", arg.name)
                } else {
                    format!("<{}>", arg.name)
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// `name usage`, trimmed.
    pub fn synopsis(&self) -> String {
        format!("{} {}", self.name, self.usage())
            .trim_end()
            .to_owned()
    }

    /// Whether it works at `mode`'s prompt.
    pub fn allowed(&self, mode: Mode) -> bool {
        match (self.at, mode) {
            (_, Mode::Naming) => self.id == CommandId::Quit,
            (Where::Both, _) => true,
            (Where::Main, Mode::Mining) | (Where::Battle, Mode::Solving) => true,
            _ => false,
        }
    }

    /// The argument at `index` (0 is the first after the command), if any.
    pub fn arg(&self, index: usize) -> Option<&'static Arg> {
        self.args.get(index)
    }
}

const fn arg(name: &'static str, kind: ArgKind) -> Arg {
    Arg {
        name,
        kind,
        optional: false,
    }
}

const fn opt(name: &'static str, kind: ArgKind) -> Arg {
    Arg {
        name,
        kind,
        optional: true,
    }
}

const N: &[Arg] = &[opt("n", ArgKind::Count)];
const TEXT: &[Arg] = &[arg("text", ArgKind::Text)];

/// Every command, in `help` order.
pub const COMMANDS: &[Command] = &[
    Command {
        id: CommandId::Help,
        brief: "list commands",
        name: "help",
        min: 1,
        aliases: &["?"],
        args: &[opt("command", ArgKind::Command)],
        help: "lists the commands, or explains one",
        at: Where::Both,
    },
    Command {
        id: CommandId::Stats,
        brief: "rank, coins, power",
        name: "stats",
        min: 2,
        aliases: &[],
        args: &[],
        help: "your name, rank, location, coins, power and your problem's size",
        at: Where::Main,
    },
    Command {
        id: CommandId::Map,
        brief: "who is where",
        name: "map",
        min: 2,
        aliases: &[],
        args: &[],
        help: "who is where",
        at: Where::Main,
    },
    Command {
        id: CommandId::Look,
        brief: "look around here",
        name: "look",
        min: 1,
        aliases: &[],
        args: &[],
        help: "this place: who is here, the notes left here, where you can go",
        at: Where::Both,
    },
    Command {
        id: CommandId::Move,
        brief: "go somewhere",
        name: "move",
        min: 0,
        aliases: &["go"],
        args: &[arg("location", ArgKind::Location)],
        help: "walks to a location",
        at: Where::Main,
    },
    Command {
        id: CommandId::Mine,
        brief: "mine coins",
        name: "mine",
        min: 0,
        aliases: &[],
        args: N,
        help: "tries to mine coins n times (default 1), in the background",
        at: Where::Main,
    },
    Command {
        id: CommandId::Shop,
        brief: "hardware for sale",
        name: "shop",
        min: 2,
        aliases: &[],
        args: &[],
        help: "the hardware your rank can buy",
        at: Where::Main,
    },
    Command {
        id: CommandId::Buy,
        brief: "buy hardware",
        name: "buy",
        min: 1,
        aliases: &[],
        args: &[
            arg("hardware", ArgKind::Hardware),
            opt("n|max", ArgKind::CountOrMax),
        ],
        help: "buys n units of hardware (default 1), or as many as you can afford",
        at: Where::Main,
    },
    Command {
        id: CommandId::Inv,
        brief: "what you own",
        name: "inv",
        min: 1,
        aliases: &["inventory"],
        args: &[],
        help: "your coins and hardware",
        at: Where::Both,
    },
    Command {
        id: CommandId::Solve,
        brief: "battle your problem",
        name: "solve",
        min: 3,
        aliases: &[],
        args: N,
        help: "starts a battle with your rank's problem; inside it, computes n steps",
        at: Where::Both,
    },
    Command {
        id: CommandId::Resign,
        brief: "give up this battle",
        name: "resign",
        min: 1,
        aliases: &[],
        args: &[],
        help: "gives up the battle for now",
        at: Where::Battle,
    },
    Command {
        id: CommandId::Stop,
        brief: "stop mining/solving",
        name: "stop",
        min: 3,
        aliases: &[],
        args: &[],
        help: "stops mining or computing (Esc does the same)",
        at: Where::Both,
    },
    Command {
        id: CommandId::Who,
        brief: "who is online",
        name: "who",
        min: 1,
        aliases: &[],
        args: &[],
        help: "the players online now",
        at: Where::Both,
    },
    Command {
        id: CommandId::Say,
        brief: "talk to the room",
        name: "say",
        min: 2,
        aliases: &["'"],
        args: TEXT,
        help: "says something to the players here ('text does the same)",
        at: Where::Both,
    },
    Command {
        id: CommandId::Emote,
        brief: "act something out",
        name: "emote",
        min: 1,
        aliases: &[":", "me"],
        args: TEXT,
        help: "acts something out to the players here (:waves)",
        at: Where::Both,
    },
    Command {
        id: CommandId::Shout,
        brief: "talk to everyone",
        name: "shout",
        min: 4,
        aliases: &[],
        args: TEXT,
        help: "says something to every player",
        at: Where::Both,
    },
    Command {
        id: CommandId::Tell,
        brief: "a private word",
        name: "tell",
        min: 2,
        aliases: &["whisper"],
        args: &[arg("player", ArgKind::Player), arg("text", ArgKind::Text)],
        help: "says something only that player can read, now or when they come back",
        at: Where::Both,
    },
    Command {
        id: CommandId::Mail,
        brief: "tells while away",
        name: "mail",
        min: 0,
        aliases: &[],
        args: &[],
        help: "the tells you received while you were away",
        at: Where::Both,
    },
    Command {
        id: CommandId::Note,
        brief: "leave a note here",
        name: "note",
        min: 1,
        aliases: &[],
        args: TEXT,
        help: "leaves a note here for anyone who comes by (look shows it)",
        at: Where::Main,
    },
    Command {
        id: CommandId::Unnote,
        brief: "take your notes down",
        name: "unnote",
        min: 1,
        aliases: &[],
        args: &[],
        help: "removes the notes you left here",
        at: Where::Main,
    },
    Command {
        id: CommandId::Top,
        brief: "the leaderboard",
        name: "top",
        min: 1,
        aliases: &[],
        args: &[],
        help: "the leaderboard, by rank then net worth",
        at: Where::Both,
    },
    Command {
        id: CommandId::Give,
        brief: "give coins",
        name: "give",
        min: 1,
        aliases: &[],
        args: &[arg("player", ArgKind::Player), arg("coins", ArgKind::Count)],
        help: "gives coins to a player (name or name#tag)",
        at: Where::Main,
    },
    Command {
        id: CommandId::Addr,
        brief: "addresses to share",
        name: "addr",
        min: 1,
        aliases: &[],
        args: &[],
        help: "the addresses a friend can --join to play with you, best first; `addr copy` puts the first on the clipboard",
        at: Where::Both,
    },
    Command {
        id: CommandId::Join,
        brief: "dial a friend",
        name: "join",
        min: 1,
        aliases: &[],
        args: &[arg("multiaddr", ArgKind::Multiaddr)],
        help: "connects to a friend's node, and remembers it once connected",
        at: Where::Both,
    },
    Command {
        id: CommandId::Quit,
        brief: "leave the game",
        name: "quit",
        min: 1,
        aliases: &["exit"],
        args: &[],
        help: "leaves the game (your character stays in the world)",
        at: Where::Both,
    },
];

/// What a typed command word means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// This command.
    Found(&'static Command),
    /// Several commands start so: their names.
    Ambiguous(Vec<&'static str>),
    /// No command starts so.
    Unknown,
}

/// Finds a command by name, alias or abbreviation (case-insensitive): an exact name or alias,
/// else the only command the word starts, else the one whose declared abbreviation it is.
pub fn lookup(word: &str) -> Lookup {
    let word = word.to_lowercase();
    if word.is_empty() {
        return Lookup::Unknown;
    }
    if let Some(c) = COMMANDS
        .iter()
        .find(|c| c.name == word || c.aliases.contains(&word.as_str()))
    {
        return Lookup::Found(c);
    }
    let starting: Vec<&'static Command> = COMMANDS
        .iter()
        .filter(|c| c.name.starts_with(word.as_str()))
        .collect();
    let declared: Vec<&'static Command> = starting
        .iter()
        .copied()
        .filter(|c| c.min > 0 && word.chars().count() >= c.min)
        .collect();
    match (starting.as_slice(), declared.as_slice()) {
        ([], _) => Lookup::Unknown,
        ([one], _) | (_, [one]) => Lookup::Found(one),
        (many, _) => Lookup::Ambiguous(many.iter().map(|c| c.name).collect()),
    }
}

/// The command called `id` in the table.
pub fn command(id: CommandId) -> &'static Command {
    // Every id is in the table: `every_command_is_in_the_table_once_with_help` checks it.
    COMMANDS.iter().find(|c| c.id == id).unwrap_or(&COMMANDS[0])
}

/// The commands that work at `mode`'s prompt, in `help` order.
pub fn available(mode: Mode) -> impl Iterator<Item = &'static Command> {
    COMMANDS.iter().filter(move |c| c.allowed(mode))
}

/// Splits a line into its command word and the rest (trimmed). A leading `'` or `:` is a
/// word by itself (`'hello` says hello, `:waves` emotes).
pub fn split(line: &str) -> (&str, &str) {
    let line = line.trim();
    if let Some(first) = line.chars().next()
        && (first == '\'' || first == ':')
    {
        return (&line[..1], line[1..].trim());
    }
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

    fn found(word: &str) -> &'static str {
        match lookup(word) {
            Lookup::Found(c) => c.name,
            other => panic!("{word}: {other:?}"),
        }
    }

    #[test]
    fn commands_are_found_by_name_alias_and_prefix() {
        assert_eq!(found("mine"), "mine");
        assert_eq!(found("MI"), "mine");
        assert_eq!(found("b"), "buy");
        assert_eq!(found("exit"), "quit");
        assert_eq!(found("sol"), "solve");
        assert_eq!(found("sh"), "shop");
        assert_eq!(found("sho"), "shop");
        assert_eq!(found("shou"), "shout");
        assert_eq!(found("'"), "say");
        assert_eq!(found(":"), "emote");
        assert_eq!(found("ma"), "map");
        assert_eq!(found("mai"), "mail");
        assert_eq!(lookup("ü"), Lookup::Unknown);
        assert_eq!(lookup(""), Lookup::Unknown);
    }

    #[test]
    fn an_ambiguous_prefix_lists_the_candidates() {
        assert_eq!(
            lookup("m"),
            Lookup::Ambiguous(vec!["map", "move", "mine", "mail"])
        );
        assert_eq!(
            lookup("s"),
            Lookup::Ambiguous(vec!["stats", "shop", "solve", "stop", "say", "shout"])
        );
    }

    #[test]
    fn abbreviations_are_unambiguous() {
        for c in COMMANDS.iter().filter(|c| c.min > 0) {
            let short: String = c.name.chars().take(c.min).collect();
            assert_eq!(found(&short), c.name, "{short}");
        }
    }

    #[test]
    fn every_command_is_in_the_table_once_with_help() {
        let mut names = std::collections::HashSet::new();
        let mut ids = std::collections::HashSet::new();
        for c in COMMANDS {
            assert!(!c.help.is_empty(), "{} has no help", c.name);
            assert!(
                !c.brief.is_empty() && c.brief.chars().count() <= 20,
                "{}: a brief of 1-20 characters",
                c.name
            );
            assert!(names.insert(c.name), "{} twice", c.name);
            assert!(ids.insert(c.id), "{:?} twice", c.id);
            assert_eq!(command(c.id).name, c.name);
            for alias in c.aliases {
                assert!(names.insert(alias), "alias {alias} twice");
            }
        }
    }

    #[test]
    fn the_prompts_each_have_their_commands() {
        let battle: Vec<&str> = available(Mode::Solving).map(|c| c.name).collect();
        assert!(battle.contains(&"resign") && battle.contains(&"solve"));
        assert!(!battle.contains(&"buy"));
        let main: Vec<&str> = available(Mode::Mining).map(|c| c.name).collect();
        assert!(main.contains(&"buy") && !main.contains(&"resign"));
        let naming: Vec<&str> = available(Mode::Naming).map(|c| c.name).collect();
        assert_eq!(naming, ["quit"]);
        assert_eq!(command(CommandId::Buy).usage(), "<hardware> [n|max]");
        assert_eq!(command(CommandId::Tell).synopsis(), "tell <player> <text>");
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
        assert_eq!(split("'hello there"), ("'", "hello there"));
        assert_eq!(split(":waves"), (":", "waves"));
        assert_eq!(split(""), ("", ""));
        assert_eq!(shorten(&"é".repeat(50)).chars().count(), 43);
    }
}
