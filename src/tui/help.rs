//! The help overlay (F1, or `?` on an empty line): the game's commands and the UI's keys.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};

use super::app::App;
use crate::game::commands as table;
use crate::game::events::Mode;

/// The keys, as the overlay lists them.
pub const KEYS: &[(&str, &str)] = &[
    ("Enter", "send the line"),
    ("Up/Down", "earlier lines sent"),
    ("Tab", "complete (again: next)"),
    ("PgUp/PgDn", "scroll a page"),
    ("Shift+Up/Dn", "scroll a line (or Alt)"),
    ("End", "newest output"),
    ("Esc", "clear; then skip or stop"),
    ("F1 or ?", "this help"),
    ("F2", "mouse capture on/off"),
    ("Ctrl-U/W/K", "clear line/word/rest"),
    ("Ctrl-C", "quit"),
];

/// Columns the command column needs (name and arguments, then what it does).
const COMMAND_COLUMNS: u16 = 40;

/// Draws the overlay centred over `area` (the log and side panel).
pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let theme = app.theme;
    let width = area.width.min(80);
    let main: Vec<_> = table::available(Mode::Mining).collect();
    let height = area.height.min(main.len() as u16 + 3);
    let popup = area.centered(Constraint::Length(width), Constraint::Length(height));
    let block = Block::bordered()
        .border_style(theme.title())
        .title(Span::styled(" Help ", theme.title()))
        .title_bottom(Line::from(Span::styled(" Esc closes ", theme.dim())).right_aligned());
    let inner = block.inner(popup);
    frame.render_widget(Clear, popup);
    frame.render_widget(block, popup);

    let mut commands = vec![Line::from(Span::styled("Commands", theme.title()))];
    for command in &main {
        commands.push(Line::from(vec![
            Span::styled(format!("{:<19}", command.synopsis()), theme.title()),
            Span::raw(command.brief),
        ]));
    }
    let mut keys = vec![Line::from(Span::styled("Keys", theme.title()))];
    for (key, about) in KEYS {
        keys.push(Line::from(vec![
            Span::styled(format!("{key:<12}"), theme.title()),
            Span::raw(*about),
        ]));
    }
    keys.push(Line::default());
    keys.push(Line::from(Span::styled("In a battle", theme.title())));
    for command in table::available(Mode::Solving).filter(|c| !main.contains(c)) {
        keys.push(Line::from(vec![
            Span::styled(format!("{:<12}", command.name), theme.title()),
            Span::raw(command.brief),
        ]));
    }
    if inner.width >= COMMAND_COLUMNS + 34 {
        let [left, right] =
            Layout::horizontal([Constraint::Length(COMMAND_COLUMNS), Constraint::Min(1)])
                .areas(inner);
        frame.render_widget(Paragraph::new(commands), left);
        frame.render_widget(Paragraph::new(keys), right);
    } else {
        keys.push(Line::default());
        keys.extend(commands);
        frame.render_widget(Paragraph::new(keys), inner);
    }
}
