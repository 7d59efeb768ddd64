//! What a running game session tells its front end, and what the front end tells it.
//!
//! This is the whole contract between `game` and the front ends (`tui`, the plain REPL):
//! the game never prints and never reads a terminal; it sends [`Event`]s and receives
//! [`Input`]s. Front ends render; they never query the replica themselves.

/// What kind of text a line is, so front ends can colour or announce it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LineKind {
    /// Narrative text (intro, problems, promotions).
    Story,
    /// Something that happened to the player (`--- Mining bitcoin [1/3]... ---`, a promotion).
    Event,
    /// Something another player did (arrived, joined, was promoted, gave coins).
    News,
    /// A chat line said at a location (`say`), the player's own or another's.
    Chat,
    /// A chat line shouted to everyone (`shout`).
    Shout,
    /// A player's mistake or a failure ("You can't afford that").
    Error,
    /// Ordinary command output (stats, map, help, shop).
    Info,
    /// The player's own command, echoed back.
    Echo,
    /// A multiaddr a friend can `--join`, alone on its line (front ends never break it).
    Address,
}

impl LineKind {
    /// Whether the line is conversation between players (front ends keep it in view).
    pub fn is_chat(self) -> bool {
        matches!(self, LineKind::Chat | LineKind::Shout)
    }
}

/// One line of game output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// How to show it.
    pub kind: LineKind,
    /// The text, without a trailing newline.
    pub text: String,
    /// What it is about, in typed fields, for front ends that want more than the text (the
    /// JSON interface, colours by chat scope); `None` for plain output.
    pub detail: Option<Detail>,
}

impl Line {
    /// A line of the given kind.
    pub fn new(kind: LineKind, text: impl Into<String>) -> Self {
        Line {
            kind,
            text: text.into(),
            detail: None,
        }
    }

    /// A line with typed details.
    pub fn about(kind: LineKind, text: impl Into<String>, detail: Detail) -> Self {
        Line {
            kind,
            text: text.into(),
            detail: Some(detail),
        }
    }
}

/// Who a chat line reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatScope {
    /// Said to the players at one location.
    Say,
    /// Acted out to the players at one location (`emote`, `:waves`).
    Emote,
    /// Shouted to everyone.
    Shout,
    /// A private tell, read as it arrived.
    Tell,
    /// A private tell that waited while the player was away (`mail`).
    Mail,
}

impl From<&super::schema::Scope> for ChatScope {
    fn from(scope: &super::schema::Scope) -> Self {
        match scope {
            super::schema::Scope::Say(_) => ChatScope::Say,
            super::schema::Scope::Emote(_) => ChatScope::Emote,
            super::schema::Scope::Shout => ChatScope::Shout,
        }
    }
}

/// A chat line, typed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Chat {
    /// Who it reached.
    pub scope: ChatScope,
    /// The speaker's shown name (the player's own for what they said).
    pub from: String,
    /// What was said (for a tell the player sent: to whom and what, see the text).
    pub text: String,
}

/// How a player's presence changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceChange {
    /// Came online (new, or back).
    Joined,
    /// Quit.
    Left,
    /// Their heartbeat lapsed (a crash, a lost network).
    Quiet,
}

/// The end of a `mine` run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Mined {
    /// Coins found.
    pub coins: u64,
    /// Attempts made.
    pub attempts: u64,
    /// Attempts asked for.
    pub asked: u64,
    /// Attempts that found nothing.
    pub empty: u64,
}

/// What a line is about, for front ends that want typed fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Detail {
    /// Someone talked (or the player did).
    Chat(Chat),
    /// A player came or went.
    Presence {
        /// Their shown name.
        name: String,
        /// How.
        change: PresenceChange,
    },
    /// A `mine` run ended.
    Mined(Mined),
}

/// Which prompt the game is at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Waiting for the player to choose a name (first run).
    #[default]
    Naming,
    /// The main prompt, `(mining) > `.
    Mining,
    /// Inside a problem battle, `(solving) > `.
    Solving,
}

impl Mode {
    /// The prompt a front end shows at this mode while `running` runs: `(mining)` or
    /// `(solving)` only while that runs, `(battle)` in a battle otherwise.
    pub fn prompt(self, running: Option<Activity>) -> &'static str {
        match (self, running) {
            (Mode::Naming, _) => "name> ",
            (_, Some(Activity::Mining)) => "(mining) > ",
            (_, Some(Activity::Solving)) => "(solving) > ",
            (Mode::Solving, _) => "(battle) > ",
            (Mode::Mining, _) => "> ",
        }
    }
}

/// How this node's replica stands with the world.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyncState {
    /// No peer connected.
    #[default]
    Offline,
    /// Connected, with this many entries still to exchange.
    Pending(u64),
    /// Connected and nothing known to be outstanding.
    InSync,
}

/// A player seen in the world, for the side panel and `who`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Presence {
    /// Display name, disambiguated if two players share it (`alice#3kq`).
    pub name: String,
    /// Pretty location name.
    pub location: String,
    /// Rank name.
    pub rank: String,
    /// Whether their heartbeat is recent.
    pub online: bool,
}

/// Everything the status bar and side panel show; sent whenever it changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Status {
    /// The player's display name (empty before one is chosen).
    pub name: String,
    /// Current rank name.
    pub rank: String,
    /// Spendable coins.
    pub coins: u64,
    /// Total computing power.
    pub power: u64,
    /// Pretty name of the current location.
    pub location: String,
    /// Connected peers.
    pub peers: usize,
    /// Sync state of the replica.
    pub sync: SyncState,
    /// Largest clock offset to a peer, in milliseconds (absolute).
    pub clock_offset_ms: i64,
    /// Whether that offset is large enough to warn the player about.
    pub clock_warning: bool,
    /// Whether friends on the internet reach this node only through a relay.
    pub via_relay: bool,
    /// Current prompt.
    pub mode: Mode,
    /// Players known in the world (online first), for the side panel and completion.
    pub players: Vec<Presence>,
}

/// Which long action is running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activity {
    /// `mine n`.
    Mining,
    /// `solve n` in a battle.
    Solving,
    /// Story text told with pauses.
    Story,
}

impl Activity {
    /// How front ends name it ("Mining").
    pub fn label(self) -> &'static str {
        match self {
            Activity::Mining => "Mining",
            Activity::Solving => "Solving",
            Activity::Story => "Story",
        }
    }
}

/// Progress of a long action (mining, solving, story text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// What is running.
    pub activity: Activity,
    /// Steps done.
    pub done: u64,
    /// Steps in all.
    pub total: u64,
}

/// What the game sends its front end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A line of output.
    Line(Line),
    /// A fresh status snapshot.
    Status(Status),
    /// A long action started or advanced (`Some`) or finished (`None`).
    Progress(Option<Progress>),
    /// The player chose this name: the front end remembers it (profile.ron).
    NameChosen(String),
    /// The node connected to this address, a node of this world (from `join`, `--join` or a
    /// remembered peer): the front end remembers it (profile.ron).
    PeerJoined(String),
    /// The player asked to copy this text (`addr copy`) to the system clipboard; the front
    /// end does it if it can and says what it did.
    Copy(String),
    /// This remembered address could not be joined: the front end forgets it once it has
    /// failed for a week (profile.ron).
    PeerFailed(String),
    /// The session is over (`quit`); the front end exits.
    Quit,
}

/// What a front end sends the game.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A line the player typed (without the newline).
    Line(String),
    /// Skip story text or interrupt a long action (Esc; Enter while story text runs).
    Interrupt,
}
