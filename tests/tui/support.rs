//! Helpers for the terminal UI tests: synthetic keys, game events and screens.

use cmud::game::events::{
    Activity, Event, Line, LineKind, Mode, Presence, Progress, Status, SyncState,
};
use cmud::tui::app::{App, Command};
use cmud::tui::theme::Theme;
use cmud::tui::view;
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyEventState, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

/// A realistic address to share: wider than an 80-column log pane.
pub const ADDRESS: &str =
    "/ip4/192.168.100.123/tcp/7441/p2p/12D3KooWRm9zSWbV8kGk1yuPUt4yUaLrnj3ubfyRhQ6wEMgTs5Jq";

/// A key press without modifiers.
pub fn press(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

/// A key press with modifiers.
pub fn press_with(code: KeyCode, modifiers: KeyModifiers) -> KeyEvent {
    KeyEvent::new(code, modifiers)
}

/// A key release, as Windows reports after every press.
pub fn release(code: KeyCode) -> KeyEvent {
    KeyEvent {
        code,
        modifiers: KeyModifiers::NONE,
        kind: KeyEventKind::Release,
        state: KeyEventState::NONE,
    }
}

/// Types `text` key by key; returns every command that came back.
pub fn type_text(app: &mut App, text: &str) -> Vec<Command> {
    text.chars()
        .flat_map(|c| app.on_key(press(KeyCode::Char(c))))
        .collect()
}

/// Types `text` and presses Enter; returns the commands of the Enter.
pub fn enter_line(app: &mut App, text: &str) -> Vec<Command> {
    assert!(type_text(app, text).is_empty());
    app.on_key(press(KeyCode::Enter))
}

/// A status snapshot of a player at the main prompt, with two other players about.
pub fn status(mode: Mode) -> Status {
    Status {
        name: "ada".into(),
        rank: "Undergraduate".into(),
        coins: 120,
        power: 3,
        location: "the Fence".into(),
        peers: 2,
        sync: SyncState::InSync,
        clock_offset_ms: 0,
        clock_warning: false,
        via_relay: false,
        mode,
        players: vec![
            Presence {
                name: "ada".into(),
                location: "the Fence".into(),
                rank: "Undergraduate".into(),
                online: true,
            },
            Presence {
                name: "bob".into(),
                location: "Gates 5".into(),
                rank: "PhD".into(),
                online: true,
            },
            Presence {
                name: "carol".into(),
                location: "Randy Pausch Bridge".into(),
                rank: "Masters".into(),
                online: false,
            },
        ],
    }
}

/// A model at the main prompt.
pub fn playing() -> App {
    let mut app = App::new(Theme::colored());
    app.on_game(Event::Status(status(Mode::Mining)));
    app
}

/// Sends the model a line of game output; returns what the model asked for (a bell).
pub fn say(app: &mut App, kind: LineKind, text: &str) -> Vec<Command> {
    app.on_game(Event::Line(Line::new(kind, text)))
}

/// Sends the model a progress event.
pub fn progress(app: &mut App, activity: Activity, done: u64, total: u64) {
    app.on_game(Event::Progress(Some(Progress {
        activity,
        done,
        total,
    })));
}

/// The text at the bottom of the log pane (the newest line shown).
pub fn bottom_line(app: &App) -> String {
    app.log
        .visible_from_bottom()
        .next()
        .map(|entry| entry.line.text.clone())
        .unwrap_or_default()
}

/// Draws the model on a test terminal of the given size.
pub fn draw(app: &mut App, columns: u16, rows: u16) -> Terminal<TestBackend> {
    app.resize(columns, rows);
    let mut terminal = Terminal::new(TestBackend::new(columns, rows)).expect("test terminal");
    terminal
        .draw(|frame| view::render(app, frame))
        .expect("drawing on a test terminal");
    terminal
}

/// The screen as text, one string per row.
pub fn screen_text(terminal: &Terminal<TestBackend>) -> String {
    let buffer = terminal.backend().buffer();
    let mut out = String::new();
    for y in 0..buffer.area.height {
        for x in 0..buffer.area.width {
            out.push_str(buffer[(x, y)].symbol());
        }
        out.push('\n');
    }
    out
}
