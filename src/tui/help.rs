//! The help overlay (F1, or `?` on an empty line): the game's commands, read from the game's
//! command table (`game::commands::COMMANDS`, the same one `help` prints), and the UI's keys.
//! It scrolls (Up/Down, PgUp/PgDn, Home/End), so every line can be read at any size.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};

use crate::game::commands::{COMMANDS, Where};

use super::app::App;
use super::scrollback::wrap;
use super::theme::Theme;

/// The keys, as the overlay lists them.
pub const KEYS: &[(&str, &str)] = &[
    ("Enter", "send the line"),
    ("Up/Down", "earlier lines sent"),
    ("Tab", "complete (again: next)"),
    ("PgUp/PgDn", "scroll a page"),
    ("Shift+Up/Dn", "scroll a line (or Alt)"),
    ("Ctrl+Home", "oldest output"),
    ("End", "newest output"),
    ("Esc", "clear; then skip or stop"),
    ("F1 or ?", "this help"),
    ("F2", "mouse capture on/off"),
    ("F3", "view: All, Chat, Game"),
    ("F4", "addresses; c copies one"),
    ("Ctrl-U/W/K", "clear line/word/rest"),
    ("Ctrl-C", "stop what runs; again: quit"),
];

/// Widest overlay, in columns.
const MAX_COLUMNS: u16 = 80;

/// Columns of the name-and-arguments column, when there is room for two columns.
const USAGE_COLUMNS: usize = 24;

/// Narrower than this, a command's help goes on the rows below its usage.
const TWO_COLUMNS_MIN: usize = 50;

/// The overlay's box over `area`.
fn popup(area: Rect) -> Rect {
    area.centered(
        Constraint::Length(area.width.min(MAX_COLUMNS)),
        Constraint::Length(area.height),
    )
}

/// A titled entry: `left` in the first column, `right` wrapped beside it (or below it).
fn entry(lines: &mut Vec<Line<'static>>, theme: Theme, left: &str, right: &str, width: usize) {
    if width >= TWO_COLUMNS_MIN {
        let rest = width - USAGE_COLUMNS;
        for (i, row) in wrap(right, rest).into_iter().enumerate() {
            let head = if i == 0 { left } else { "" };
            lines.push(Line::from(vec![
                Span::styled(format!("{head:<USAGE_COLUMNS$}"), theme.title()),
                Span::raw(row),
            ]));
        }
    } else {
        lines.push(Line::from(Span::styled(left.to_owned(), theme.title())));
        for row in wrap(right, width.saturating_sub(2)) {
            lines.push(Line::from(format!("  {row}")));
        }
    }
}

/// The overlay's text for an inner width of `width` columns.
pub fn lines(theme: Theme, width: usize) -> Vec<Line<'static>> {
    let width = width.max(1);
    let heading = |text: &str| Line::from(Span::styled(text.to_owned(), theme.title()));
    let mut lines = vec![heading("Commands (help <command> in the game says more)")];
    for command in COMMANDS.iter().filter(|c| c.at != Where::Battle) {
        let usage = command.synopsis();
        entry(&mut lines, theme, &usage, command.help, width);
    }
    lines.push(Line::default());
    lines.push(heading("In a battle"));
    let battle: Vec<&str> = COMMANDS
        .iter()
        .filter(|c| c.at != Where::Main)
        .map(|c| c.name)
        .collect();
    for row in wrap(&battle.join(", "), width) {
        lines.push(Line::from(row));
    }
    lines.push(Line::default());
    lines.push(heading("Keys"));
    for (key, about) in KEYS {
        entry(&mut lines, theme, key, about, width);
    }
    lines
}

/// The largest first row worth scrolling to on a screen whose body is `area`.
pub fn max_offset(theme: Theme, area: Rect) -> usize {
    let inner = Block::bordered().inner(popup(area));
    lines(theme, usize::from(inner.width))
        .len()
        .saturating_sub(usize::from(inner.height))
}

/// Draws the overlay over `area` (the log and side panel).
pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let theme = app.theme;
    let popup = popup(area);
    let inner = Block::bordered().inner(popup);
    let all = lines(theme, usize::from(inner.width));
    let offset = app
        .help
        .unwrap_or(0)
        .min(all.len().saturating_sub(usize::from(inner.height)));
    let shown = all.len().min(offset + usize::from(inner.height));
    let position = if all.len() > usize::from(inner.height) {
        format!(" {}-{} of {} PgUp/PgDn ", offset + 1, shown, all.len())
    } else {
        String::new()
    };
    let block = Block::bordered()
        .border_style(theme.title())
        .title(Span::styled(" Help ", theme.title()))
        .title_bottom(Line::from(Span::styled(position, theme.dim())))
        .title_bottom(Line::from(Span::styled(" Esc closes ", theme.dim())).right_aligned());
    frame.render_widget(Clear, popup);
    frame.render_widget(block, popup);
    let visible: Vec<Line> = all.into_iter().skip(offset).take(shown - offset).collect();
    frame.render_widget(Paragraph::new(visible).style(Style::new()), inner);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(lines: &[Line]) -> String {
        lines
            .iter()
            .map(|line| line.to_string() + "\n")
            .collect::<String>()
    }

    #[test]
    fn every_command_of_the_game_is_listed_at_every_width() {
        for width in [10, 38, 78] {
            let shown = text(&lines(Theme::plain(), width));
            for command in COMMANDS {
                assert!(shown.contains(command.name), "{} at {width}", command.name);
            }
            assert!(shown.contains("Ctrl-C"), "keys at {width}");
        }
        let wide = text(&lines(Theme::plain(), 78));
        assert!(wide.contains("stop"), "{wide}");
    }

    #[test]
    fn a_small_screen_can_scroll_to_the_last_line() {
        let small = Rect::new(0, 0, 40, 5);
        let big = Rect::new(0, 0, 120, 100);
        assert!(max_offset(Theme::plain(), small) > 20);
        assert_eq!(max_offset(Theme::plain(), big), 0);
    }
}
