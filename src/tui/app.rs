//! The model of the terminal UI and its update from game events. Pure: no I/O, and the time
//! comes from the runner ([`App::at`]). What it wants done outside (send to the game, save the
//! profile, switch mouse capture, ring the bell, copy to the clipboard, quit) comes back as
//! [`Command`]s for the runner. Keys are handled in `keys`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::cli::ScreenOptions;
use crate::game::events::{Activity, Event, Input, Line, LineKind, Mode, Progress, Status};

use super::complete::{Completion, Vocabulary};
use super::input::InputLine;
use super::scrollback::{Entry, Scrollback};
use super::theme::Theme;

/// Something the UI wants done outside the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Send this to the game.
    Send(Input),
    /// Keep what the game learned (a chosen name, a joined peer) in `profile.ron`.
    Remember(Event),
    /// Turn mouse capture on or off.
    SetMouseCapture(bool),
    /// Ring the terminal bell (a mention).
    Bell,
    /// Put this text on the system clipboard (OSC 52).
    Copy(String),
    /// Leave the full-screen UI for a moment and print this on the terminal's own screen,
    /// where the terminal wraps it and copies it as one line (an address wider than the UI).
    ShowOutside(String),
    /// Back to the full-screen UI after [`Command::ShowOutside`].
    ComeBack,
    /// Leave: restore the terminal and stop.
    Quit,
}

/// What the log area shows; F3 goes round them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum View {
    /// Game output, with a chat pane below it that game output cannot push away.
    #[default]
    All,
    /// Only chat, the whole height.
    Chat,
    /// Only game output, the whole height.
    Game,
}

impl View {
    /// The next view (F3).
    pub fn next(self) -> View {
        match self {
            View::All => View::Chat,
            View::Chat => View::Game,
            View::Game => View::All,
        }
    }

    /// Its name in the status bar.
    pub fn name(self) -> &'static str {
        match self {
            View::All => "All",
            View::Chat => "Chat",
            View::Game => "Game",
        }
    }
}

/// Everything the screen shows and the keys act on.
#[derive(Debug)]
pub struct App {
    /// Colours or not (`NO_COLOR`).
    pub theme: Theme,
    /// Timestamps and the bell (from `config.ron`).
    pub options: ScreenOptions,
    /// The latest status snapshot from the game.
    pub status: Status,
    /// Whether any status arrived yet (before that the bar says the game is starting).
    pub has_status: bool,
    /// The long action running, if any.
    pub progress: Option<Progress>,
    /// Game output (everything but chat), and how far the player scrolled up.
    pub log: Scrollback,
    /// Chat, kept apart so game output never pushes it away.
    pub chat: Scrollback,
    /// What the log area shows.
    pub view: View,
    /// Chat lines that arrived while the Game view hid them.
    pub unseen_chat: usize,
    /// The addresses a friend can join, as last listed (the start banner or `addr`).
    pub addresses: Vec<String>,
    /// Whether the last line logged was an address (the next one continues the same list).
    last_was_address: bool,
    /// The address view (F4), with the address selected in it, when open.
    pub addr_view: Option<usize>,
    /// The line being typed, with history.
    pub input: InputLine,
    /// A Tab cycle in progress.
    pub completion: Option<Completion>,
    /// Words Tab completes besides commands.
    pub vocabulary: Vocabulary,
    /// Whether the UI stepped aside to show something whole on the terminal's own screen
    /// (nothing is drawn then; any key comes back).
    pub outside: bool,
    /// The help overlay's first row shown, when it is open.
    pub help: Option<usize>,
    /// Whether mouse capture is on (off by default so text can be selected).
    pub mouse_capture: bool,
    /// Terminal size (columns, rows), for page scrolling and the too-small check.
    pub size: (u16, u16),
    /// Ticks seen, to animate the spinner.
    pub ticks: u64,
    /// Frames drawn so far (an idle screen draws none).
    pub frames: u64,
    /// When a Ctrl-C stopped a long action (a second one soon after quits).
    pub ctrl_c_at: Option<Instant>,
    /// The time now, as the runner last said.
    pub now: Instant,
    /// The wall-clock time now, for timestamps.
    pub wall: SystemTime,
    /// Set once the UI is leaving.
    pub quitting: bool,
}

/// Smallest terminal the full screen is drawn in (columns, rows).
pub const MIN_SIZE: (u16, u16) = (40, 10);

/// A second Ctrl-C within this time of the one that stopped a long action quits.
pub const CTRL_C_AGAIN: Duration = Duration::from_secs(3);

impl App {
    /// A fresh UI with nothing shown yet.
    pub fn new(theme: Theme) -> Self {
        App {
            theme,
            options: ScreenOptions {
                timestamps: false,
                bell_on_mention: true,
                utc_offset_secs: 0,
            },
            status: Status::default(),
            has_status: false,
            progress: None,
            log: Scrollback::default(),
            chat: Scrollback::default(),
            view: View::default(),
            unseen_chat: 0,
            addresses: Vec::new(),
            last_was_address: false,
            addr_view: None,
            input: InputLine::default(),
            completion: None,
            vocabulary: Vocabulary::default(),
            outside: false,
            help: None,
            mouse_capture: false,
            size: (80, 24),
            ticks: 0,
            frames: 0,
            ctrl_c_at: None,
            now: Instant::now(),
            wall: SystemTime::now(),
            quitting: false,
        }
    }

    /// The prompt the game is at.
    pub fn mode(&self) -> Mode {
        self.status.mode
    }

    /// What runs in the background, if anything.
    pub fn activity(&self) -> Option<Activity> {
        self.progress.as_ref().map(|p| p.activity)
    }

    /// The input line's prompt: `(mining)` or `(solving)` only while that runs.
    pub fn prompt(&self) -> &'static str {
        self.mode().prompt(self.activity())
    }

    /// Whether the terminal is too small to draw the game in.
    pub fn too_small(&self) -> bool {
        self.size.0 < MIN_SIZE.0 || self.size.1 < MIN_SIZE.1
    }

    /// Whether story text is running (Enter on an empty line skips it).
    pub fn story_running(&self) -> bool {
        self.activity() == Some(Activity::Story)
    }

    /// Whether the help overlay is open.
    pub fn help_open(&self) -> bool {
        self.help.is_some()
    }

    /// The runner says what time it is before it hands the model an event.
    pub fn at(&mut self, now: Instant, wall: SystemTime) {
        self.now = now;
        self.wall = wall;
    }

    /// Adds a line of the UI's own (not from the game) to the log.
    pub fn note(&mut self, kind: LineKind, text: impl Into<String>) {
        self.push_line(Line::new(kind, text));
    }

    /// The terminal was resized.
    pub fn resize(&mut self, columns: u16, rows: u16) {
        self.size = (columns, rows);
    }

    /// A tick of the clock: animates the spinner. Returns whether the screen changed.
    pub fn tick(&mut self) -> bool {
        self.ticks = self.ticks.wrapping_add(1);
        self.progress.as_ref().is_some_and(|p| p.total == 0)
    }

    /// Whether the runner needs ticks at all (a spinner to animate); idle, it sleeps.
    pub fn wants_ticks(&self) -> bool {
        self.progress.as_ref().is_some_and(|p| p.total == 0)
    }

    /// Applies an event from the game.
    pub fn on_game(&mut self, event: Event) -> Vec<Command> {
        match event {
            Event::Line(line) => return self.push_line(line),
            Event::Status(status) => {
                self.vocabulary.learn(&status);
                if status.mode == Mode::Naming && self.status.mode != Mode::Naming {
                    self.completion = None;
                }
                self.status = status;
                self.has_status = true;
            }
            Event::Progress(progress) => self.progress = progress,
            Event::Copy(text) => return vec![Command::Copy(text)],
            Event::NameChosen(_) | Event::PeerJoined(_) | Event::PeerFailed(_) => {
                return vec![Command::Remember(event)];
            }
            Event::Quit => return self.quit(),
        }
        Vec::new()
    }

    /// Says that `text` went to the clipboard, the text alone on its line (never wrapped).
    /// It does not change the addresses known.
    pub fn note_copied(&mut self, text: &str) {
        self.note(
            LineKind::Event,
            "Copied to the clipboard (OSC 52; if pasting gives nothing, see the README):",
        );
        self.file(Line::new(LineKind::Address, text));
    }

    /// Files a line (see [`App::file`]); a run of address lines is the list of addresses.
    fn push_line(&mut self, line: Line) -> Vec<Command> {
        if line.kind == LineKind::Address {
            if !self.last_was_address {
                self.addresses.clear();
            }
            self.addresses.push(line.text.clone());
        }
        self.last_was_address = line.kind == LineKind::Address;
        self.file(line)
    }

    /// Files a line: chat in the chat pane, the rest in the log. A mention of the player in
    /// someone's chat is marked and may ring the bell.
    fn file(&mut self, line: Line) -> Vec<Command> {
        let mention = line.kind.is_chat() && mentions(&line.text, &self.status.name);
        let stamp = self
            .options
            .timestamps
            .then(|| clock_label(self.wall, self.options.utc_offset_secs));
        let chat = line.kind.is_chat();
        let entry = Entry {
            line,
            stamp,
            mention,
        };
        if chat {
            self.chat.push(entry);
            if self.view == View::Game {
                self.unseen_chat += 1;
            }
        } else {
            self.log.push(entry);
        }
        if mention && self.options.bell_on_mention {
            vec![Command::Bell]
        } else {
            Vec::new()
        }
    }

    /// The game stopped without saying goodbye (its channel closed).
    pub fn on_game_ended(&mut self) -> Vec<Command> {
        self.quit()
    }

    /// Leaves the UI.
    pub fn quit(&mut self) -> Vec<Command> {
        self.quitting = true;
        vec![Command::Quit]
    }
}

/// Whether a chat line (`bob says: ...`) mentions `name` as a word in what was said. The
/// player's own lines (`You say: ...`) never do; a disambiguated name (`ada#3kq`) is
/// mentioned by its plain part too.
pub fn mentions(text: &str, name: &str) -> bool {
    let plain = name.split('#').next().unwrap_or_default();
    let Some((speaker, said)) = text.split_once(": ") else {
        return false;
    };
    if plain.is_empty() || speaker.starts_with("You ") {
        return false;
    }
    said.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-' || c == '#'))
        .any(|word| {
            let word = word.trim_start_matches('@');
            word.eq_ignore_ascii_case(plain) || word.eq_ignore_ascii_case(name)
        })
}

/// `HH:MM` of `wall` at `utc_offset_secs` from UTC.
pub fn clock_label(wall: SystemTime, utc_offset_secs: i32) -> String {
    let secs = wall
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let minutes = (secs + i64::from(utc_offset_secs))
        .div_euclid(60)
        .rem_euclid(24 * 60);
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_are_words_in_what_others_said() {
        assert!(mentions("bob says: hi ada!", "ada"));
        assert!(mentions("bob shouts: ADA, come here", "ada"));
        assert!(mentions("bob says: @ada look", "ada#3kq"));
        assert!(!mentions("bob says: adam is here", "ada"));
        assert!(!mentions("You say: I am ada", "ada"));
        assert!(
            !mentions("ada says: hello", "ada"),
            "a name before the colon"
        );
        assert!(!mentions("bob says: hi", ""));
    }

    #[test]
    fn clock_labels_use_the_offset() {
        let wall = UNIX_EPOCH + Duration::from_secs(17 * 3600 + 5 * 60 + 59);
        assert_eq!(clock_label(wall, 0), "17:05");
        assert_eq!(clock_label(wall, 3600), "18:05");
        assert_eq!(clock_label(wall, -18 * 3600), "23:05");
    }
}
