//! The model of the terminal UI and its update from game events. Pure: no I/O, no clock.
//! What it wants done outside (send to the game, save the profile, switch mouse capture,
//! quit) comes back as [`Command`]s for the runner. Keys are handled in `keys`.

use crate::game::events::{Event, Input, Line, LineKind, Mode, Progress, Status};

use super::complete::{Completion, Vocabulary};
use super::input::InputLine;
use super::scrollback::Scrollback;
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
    /// Leave: restore the terminal and stop.
    Quit,
}

/// Everything the screen shows and the keys act on.
#[derive(Debug)]
pub struct App {
    /// Colours or not (`NO_COLOR`).
    pub theme: Theme,
    /// The latest status snapshot from the game.
    pub status: Status,
    /// Whether any status arrived yet (before that the bar says the game is starting).
    pub has_status: bool,
    /// The long action running, if any.
    pub progress: Option<Progress>,
    /// Game output, and how far the player scrolled up.
    pub log: Scrollback,
    /// The line being typed, with history.
    pub input: InputLine,
    /// A Tab cycle in progress.
    pub completion: Option<Completion>,
    /// Words Tab completes besides commands.
    pub vocabulary: Vocabulary,
    /// Whether the help overlay is open.
    pub help_open: bool,
    /// Whether mouse capture is on (off by default so text can be selected).
    pub mouse_capture: bool,
    /// Terminal size (columns, rows), for page scrolling and the too-small check.
    pub size: (u16, u16),
    /// Ticks seen, to animate the spinner.
    pub ticks: u64,
    /// Set once the UI is leaving.
    pub quitting: bool,
}

/// Smallest terminal the full screen is drawn in (columns, rows).
pub const MIN_SIZE: (u16, u16) = (40, 10);

/// Rows of the screen that are not the log (status bar, input line and its border).
const CHROME_ROWS: u16 = 4;

/// Longest name accepted on first run, in characters.
pub const MAX_NAME_CHARS: usize = 24;

impl App {
    /// A fresh UI with nothing shown yet.
    pub fn new(theme: Theme) -> Self {
        App {
            theme,
            status: Status::default(),
            has_status: false,
            progress: None,
            log: Scrollback::default(),
            input: InputLine::default(),
            completion: None,
            vocabulary: Vocabulary::default(),
            help_open: false,
            mouse_capture: false,
            size: (80, 24),
            ticks: 0,
            quitting: false,
        }
    }

    /// The prompt the game is at.
    pub fn mode(&self) -> Mode {
        self.status.mode
    }

    /// Whether the terminal is too small to draw the game in.
    pub fn too_small(&self) -> bool {
        self.size.0 < MIN_SIZE.0 || self.size.1 < MIN_SIZE.1
    }

    /// Rows a page scroll moves.
    pub fn page_rows(&self) -> usize {
        usize::from(self.size.1.saturating_sub(CHROME_ROWS + 1).max(1))
    }

    /// Whether story text is running (Enter on an empty line skips it).
    pub fn story_running(&self) -> bool {
        self.progress
            .as_ref()
            .is_some_and(|p| p.label.eq_ignore_ascii_case("story"))
    }

    /// Adds a line of the UI's own (not from the game) to the log.
    pub fn note(&mut self, kind: LineKind, text: impl Into<String>) {
        self.log.push(Line::new(kind, text));
    }

    /// The terminal was resized.
    pub fn resize(&mut self, columns: u16, rows: u16) {
        self.size = (columns, rows);
    }

    /// A tick of the clock: animates the spinner. Returns whether the screen changed.
    pub fn tick(&mut self) -> bool {
        self.ticks = self.ticks.wrapping_add(1);
        self.progress.is_some()
    }

    /// Applies an event from the game.
    pub fn on_game(&mut self, event: Event) -> Vec<Command> {
        match event {
            Event::Line(line) => self.log.push(line),
            Event::Status(status) => {
                self.vocabulary.learn(&status);
                if status.mode == Mode::Naming && self.status.mode != Mode::Naming {
                    self.completion = None;
                }
                self.status = status;
                self.has_status = true;
            }
            Event::Progress(progress) => self.progress = progress,
            Event::NameChosen(_) | Event::PeerJoined(_) | Event::PeerFailed(_) => {
                return vec![Command::Remember(event)];
            }
            Event::Quit => return self.quit(),
        }
        Vec::new()
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

/// Checks a name typed on first run: 1 to [`MAX_NAME_CHARS`] letters, digits, `-` or `_`.
pub fn validate_name(name: &str) -> Result<(), String> {
    let count = name.chars().count();
    if count == 0 {
        return Err("Type a name first.".to_owned());
    }
    if count > MAX_NAME_CHARS {
        return Err(format!("A name is at most {MAX_NAME_CHARS} characters."));
    }
    if !name
        .chars()
        .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
    {
        return Err("A name is letters, digits, '-' or '_' (no spaces).".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(validate_name("ada").is_ok());
        assert!(validate_name("Zoë_2-b").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("two words").is_err());
        assert!(validate_name(&"x".repeat(MAX_NAME_CHARS + 1)).is_err());
    }
}
