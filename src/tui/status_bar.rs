//! The status bar: name, rank, coins, power, location, the log's view (F3), peers, sync
//! state, and the clock warning. When the terminal is narrow the least needed parts are left out, never the sync
//! state or the warning.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use crate::game::events::{Mode, SyncState};

use super::app::App;

/// Between two parts.
const SEPARATOR: &str = " | ";

/// One part of the bar: its text, its style, and how readily it is left out (higher first).
struct Part {
    /// What it shows.
    text: String,
    /// How it looks.
    style: Style,
    /// Parts with a higher number are dropped first when the bar is too narrow.
    drop_order: u8,
}

/// The parts, in display order.
fn parts(app: &App) -> Vec<Part> {
    let theme = app.theme;
    let bar = theme.status_bar();
    let status = &app.status;
    let part = |text: String, style: Style, drop_order: u8| Part {
        text,
        style,
        drop_order,
    };
    let name = if !app.has_status {
        "starting...".to_owned()
    } else if status.mode == Mode::Naming || status.name.is_empty() {
        "choosing a name".to_owned()
    } else {
        status.name.clone()
    };
    let mut parts = vec![part(name, bar.add_modifier(Modifier::BOLD), 0)];
    if status.clock_warning {
        let seconds = status.clock_offset_ms.unsigned_abs() as f64 / 1000.0;
        parts.push(part(
            format!("CLOCK OFF BY {seconds:.1}s"),
            bar.patch(theme.warning()),
            0,
        ));
    }
    if app.has_status && status.mode != Mode::Naming {
        for (text, drop_order) in [
            (status.rank.clone(), 4),
            (format!("{} coins", status.coins), 2),
            (format!("power {}", status.power), 3),
            (status.location.clone(), 5),
        ] {
            if !text.is_empty() {
                parts.push(part(text, bar, drop_order));
            }
        }
    }
    let view = match app.unseen_chat {
        0 => format!("view {}", app.view.name()),
        n => format!("view {} ({n} new chat)", app.view.name()),
    };
    parts.push(part(view, bar, 1));
    let peers = match status.peers {
        1 => "1 peer".to_owned(),
        n => format!("{n} peers"),
    };
    parts.push(part(peers, bar, 1));
    if status.via_relay {
        parts.push(part("via relay".to_owned(), bar, 1));
    }
    let sync = match status.sync {
        SyncState::Offline => "offline".to_owned(),
        SyncState::Pending(n) => format!("{n} pending"),
        SyncState::InSync => "in sync".to_owned(),
    };
    parts.push(part(sync, bar, 0));
    parts
}

fn width(parts: &[Part]) -> usize {
    let text: usize = parts.iter().map(|p| p.text.chars().count()).sum();
    1 + text + SEPARATOR.len() * parts.len().saturating_sub(1)
}

/// Draws the bar on its row.
pub fn render(app: &App, frame: &mut Frame, area: Rect) {
    let mut parts = parts(app);
    while width(&parts) > usize::from(area.width) {
        let Some((at, _)) = parts
            .iter()
            .enumerate()
            .filter(|(_, p)| p.drop_order > 0)
            .max_by_key(|(at, p)| (p.drop_order, *at))
        else {
            break;
        };
        parts.remove(at);
    }
    let bar = app.theme.status_bar();
    let mut spans = vec![Span::styled(" ", bar)];
    for (i, part) in parts.into_iter().enumerate() {
        if i > 0 {
            spans.push(Span::styled(SEPARATOR, bar));
        }
        spans.push(Span::styled(part.text, part.style));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)).style(bar), area);
}
