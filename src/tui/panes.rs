//! The log and chat panes: how a kept line becomes rows on the screen (time, a marker per kind
//! under `NO_COLOR`, wrapping; an address is never wrapped but cut in the middle with `…`), and
//! drawing a pane from its bottom up with the "newer lines below" bar.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use crate::game::events::LineKind;

use super::app::App;
use super::scrollback::{Entry, Scrollback, wrap};

/// Put before the player's own commands in the log.
const ECHO_PREFIX: &str = "> ";

/// What goes before a line's text: its time, and its kind's marker (for `NO_COLOR`).
fn prefix(app: &App, entry: &Entry) -> String {
    let mut prefix = String::new();
    if let Some(stamp) = &entry.stamp {
        prefix.push_str(stamp);
        prefix.push(' ');
    }
    if entry.mention {
        prefix.push_str(app.theme.mention_marker());
    } else {
        prefix.push_str(app.theme.marker(entry.line.kind));
    }
    if entry.line.kind == LineKind::Echo {
        prefix.push_str(ECHO_PREFIX);
    }
    prefix
}

/// The rows a kept line takes in a pane `width` characters wide.
pub fn rows(app: &App, entry: &Entry, width: usize) -> Vec<String> {
    let text = format!("{}{}", prefix(app, entry), entry.line.text);
    if entry.line.kind == LineKind::Address {
        return vec![ellipsize_middle(&text, width)];
    }
    wrap(&text, width)
}

/// `text` cut to `width` characters with `…` in the middle, so both ends stay (an address's
/// protocol and its peer id).
pub fn ellipsize_middle(text: &str, width: usize) -> String {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= width {
        return text.to_owned();
    }
    if width == 0 {
        return String::new();
    }
    let keep = width - 1;
    let head = keep.div_ceil(2);
    let tail = keep - head;
    let mut out: String = chars[..head].iter().collect();
    out.push('…');
    out.extend(&chars[chars.len() - tail..]);
    out
}

/// `text` cut to `width` characters with `…` at the end when it is longer.
pub fn ellipsize_end(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(width.saturating_sub(1)).collect();
    if width > 0 {
        out.push('…');
    }
    out
}

/// Draws `log` in `area`, newest at the bottom (or where the player scrolled to). `empty` is
/// said when there is nothing yet.
pub fn render(app: &App, frame: &mut Frame, area: Rect, log: &Scrollback, empty: &str) {
    if area.height == 0 || area.width == 0 {
        return;
    }
    if log.is_empty() {
        let hint = Line::from(Span::styled(empty.to_owned(), app.theme.dim()));
        frame.render_widget(Paragraph::new(hint), Rect { height: 1, ..area });
        return;
    }
    let below = log.below();
    let mut rows_left = usize::from(area.height) - usize::from(below > 0);
    let width = usize::from(area.width);
    let mut shown: Vec<Line> = Vec::with_capacity(rows_left);
    for entry in log.visible_from_bottom() {
        if rows_left == 0 {
            break;
        }
        let mut style = app.theme.line(entry.line.kind);
        if entry.mention {
            style = style.patch(app.theme.mention());
        }
        let wrapped = rows(app, entry, width);
        let take = wrapped.len().min(rows_left);
        for row in wrapped.into_iter().rev().take(take) {
            shown.push(Line::from(Span::styled(row, style)));
        }
        rows_left -= take;
    }
    shown.reverse();
    let count = shown.len() as u16;
    let top = area.y + area.height - count - u16::from(below > 0);
    frame.render_widget(
        Paragraph::new(shown),
        Rect::new(area.x, top, area.width, count),
    );
    if below > 0 {
        let marker = format!(" {below} newer lines below: End or PgDn ");
        let row = Rect::new(area.x, area.y + area.height - 1, area.width, 1);
        frame.render_widget(
            Paragraph::new(Line::from(marker).centered()).style(app.theme.status_bar()),
            row,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ellipses_keep_both_ends_or_the_start() {
        assert_eq!(ellipsize_middle("abcdefghij", 5), "ab…ij");
        assert_eq!(ellipsize_middle("abc", 5), "abc");
        assert_eq!(ellipsize_middle("abcdef", 1), "…");
        assert_eq!(ellipsize_end("Undergraduate", 6), "Under…");
        assert_eq!(ellipsize_end("PhD", 6), "PhD");
        assert_eq!(ellipsize_end("abc", 0), "");
    }
}
