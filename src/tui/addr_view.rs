//! The address view (F4): the addresses a friend can `--join`, each alone on a row as wide as
//! the terminal (no side borders, so a mouse selection of a row is the address and nothing
//! else; one too wide even so is cut in the middle with `…`), and copying one to the system
//! clipboard with the OSC 52 escape sequence, which most terminals honour, over SSH too.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};

use super::app::App;
use super::panes::ellipsize_middle;

/// The escape sequence that asks the terminal to put `text` on the system clipboard
/// (OSC 52, selection `c`, base64 payload, ended by BEL).
pub fn osc52(text: &str) -> String {
    format!("\x1b]52;c;{}\x07", STANDARD.encode(text))
}

/// Draws the view over `area` (the log and side panel), full width.
pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let theme = app.theme;
    let selected = app.addr_view.unwrap_or(0);
    let hint_rows = 2;
    let rows = app.addresses.len().max(1) as u16 + hint_rows + 2;
    let popup = area.centered(
        Constraint::Length(area.width),
        Constraint::Length(rows.min(area.height)),
    );
    let block = Block::new()
        .borders(Borders::TOP | Borders::BOTTOM)
        .border_style(theme.title())
        .title(Span::styled(
            " Addresses friends can --join ",
            theme.title(),
        ))
        .title_bottom(
            Line::from(Span::styled(
                " Up/Down | c copies | w whole | Esc closes ",
                theme.dim(),
            ))
            .right_aligned(),
        );
    let inner = block.inner(popup);
    frame.render_widget(Clear, popup);
    frame.render_widget(block, popup);
    let width = usize::from(inner.width);
    let mut lines: Vec<Line> = Vec::new();
    if app.addresses.is_empty() {
        lines.push(Line::from(Span::styled(
            "No address yet: this node is not listening on the network.",
            theme.dim(),
        )));
    }
    let mut cut = false;
    for (i, addr) in app.addresses.iter().enumerate() {
        let shown = ellipsize_middle(addr, width);
        cut |= shown != *addr;
        let style = if i == selected {
            theme
                .line(crate::game::events::LineKind::Address)
                .add_modifier(Modifier::REVERSED)
        } else {
            theme.line(crate::game::events::LineKind::Address)
        };
        lines.push(Line::from(Span::styled(shown, style)));
    }
    lines.push(Line::default());
    let hint = if cut {
        "Too wide here: c copies it whole (OSC 52), w shows it whole outside cmud."
    } else {
        "Your friend runs: cmud --join <address>"
    };
    lines.push(Line::from(Span::styled(hint, theme.dim())));
    frame.render_widget(Paragraph::new(lines), inner);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn osc52_carries_the_text_in_base64() {
        assert_eq!(osc52("hi"), "\x1b]52;c;aGk=\x07");
        assert_eq!(
            osc52("/ip4/1.2.3.4/tcp/7441"),
            "\x1b]52;c;L2lwNC8xLjIuMy40L3RjcC83NDQx\x07"
        );
    }
}
