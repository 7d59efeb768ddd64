//! Drawing: the whole screen from the model. Reads state, never changes it, never does I/O;
//! it works on any ratatui backend (`TestBackend` in tests).

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Position, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, LineGauge, Padding, Paragraph};

use crate::game::events::{LineKind, Mode};

use super::app::{App, MIN_SIZE};
use super::help;
use super::scrollback::wrap;
use super::status_bar;

/// Columns at which the side panel of players appears.
const SIDE_PANEL_MIN_COLUMNS: u16 = 70;

/// Gauge cells done and to do: told apart by shape too, for `NO_COLOR`.
const FILLED: &str = "\u{2501}";
/// See [`FILLED`].
const UNFILLED: &str = "\u{2500}";

/// Put before the player's own commands in the log.
const ECHO_PREFIX: &str = "> ";

/// Spinner frames for long actions without a known length.
const SPINNER: &[&str] = &["|", "/", "-", "\\"];

/// Draws the whole screen.
pub fn render(app: &App, frame: &mut Frame) {
    let area = frame.area();
    if area.width < MIN_SIZE.0 || area.height < MIN_SIZE.1 {
        render_too_small(app, frame, area);
        return;
    }
    let progress_rows = u16::from(app.progress.is_some());
    let [status, body, progress, input_border, input] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(progress_rows),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    status_bar::render(app, frame, status);
    if area.width >= SIDE_PANEL_MIN_COLUMNS {
        let panel_columns = if area.width >= 110 { 30 } else { 24 };
        let [log, panel] =
            Layout::horizontal([Constraint::Min(1), Constraint::Length(panel_columns)]).areas(body);
        // A column of space between the log and the panel's border.
        render_log(
            app,
            frame,
            Rect {
                width: log.width.saturating_sub(1),
                ..log
            },
        );
        render_players(app, frame, panel);
    } else {
        render_log(app, frame, body);
    }
    if progress_rows > 0 {
        render_progress(app, frame, progress);
    }
    render_input_border(app, frame, input_border);
    render_input(app, frame, input);
    if app.help_open {
        help::render(app, frame, body);
    }
}

fn render_too_small(app: &App, frame: &mut Frame, area: Rect) {
    let text = vec![
        Line::from(Span::styled("Terminal too small", app.theme.warning())).centered(),
        Line::from(format!("{}x{} here", area.width, area.height)).centered(),
        Line::from(format!("need {}x{}", MIN_SIZE.0, MIN_SIZE.1)).centered(),
        Line::from("Resize, or Ctrl-C").centered(),
    ];
    let rows = (text.len() as u16).min(area.height);
    let centered = area.centered_vertically(Constraint::Length(rows));
    frame.render_widget(Paragraph::new(text), centered);
}

fn render_log(app: &App, frame: &mut Frame, area: Rect) {
    if area.height == 0 || area.width == 0 {
        return;
    }
    let below = app.log.below();
    let mut rows_left = usize::from(area.height) - usize::from(below > 0);
    let width = usize::from(area.width);
    let mut rows: Vec<Line> = Vec::with_capacity(rows_left);
    for line in app.log.visible_from_bottom() {
        if rows_left == 0 {
            break;
        }
        let style = app.theme.line(line.kind);
        let wrapped = if line.kind == LineKind::Echo {
            wrap(&format!("{ECHO_PREFIX}{}", line.text), width)
        } else {
            wrap(&line.text, width)
        };
        let take = wrapped.len().min(rows_left);
        for row in wrapped.into_iter().rev().take(take) {
            rows.push(Line::from(Span::styled(row, style)));
        }
        rows_left -= take;
    }
    rows.reverse();
    let shown = rows.len() as u16;
    let top = area.y + area.height - shown - u16::from(below > 0);
    let text_area = Rect::new(area.x, top, area.width, shown);
    frame.render_widget(Paragraph::new(rows), text_area);
    if below > 0 {
        let marker = format!(" {below} newer lines below: End or PgDn ");
        let row = Rect::new(area.x, area.y + area.height - 1, area.width, 1);
        frame.render_widget(
            Paragraph::new(Line::from(marker).centered()).style(app.theme.status_bar()),
            row,
        );
    }
}

fn render_players(app: &App, frame: &mut Frame, area: Rect) {
    let theme = app.theme;
    let block = Block::new()
        .borders(Borders::LEFT)
        .border_style(theme.dim())
        .padding(Padding::left(1))
        .title(Span::styled(" Players ", theme.title()));
    let mut lines = Vec::new();
    for player in &app.status.players {
        let (mark, style) = if player.online {
            ("* ", theme.online())
        } else {
            ("  ", theme.dim())
        };
        lines.push(Line::from(vec![
            Span::styled(mark, style),
            Span::styled(player.name.clone(), style.add_modifier(Modifier::BOLD)),
            Span::styled(format!(" {}", player.rank), theme.dim()),
        ]));
        lines.push(Line::from(Span::styled(
            format!("  {}", player.location),
            if player.online {
                Style::new()
            } else {
                theme.dim()
            },
        )));
    }
    if lines.is_empty() {
        lines.push(Line::from(Span::styled("nobody seen yet", theme.dim())));
    }
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

fn render_progress(app: &App, frame: &mut Frame, area: Rect) {
    let Some(progress) = &app.progress else {
        return;
    };
    let theme = app.theme;
    let hint = if app.story_running() {
        " Enter/Esc skips"
    } else {
        " Esc stops"
    };
    if progress.total == 0 {
        let frame_index = (app.ticks % SPINNER.len() as u64) as usize;
        let line = Line::from(vec![
            Span::styled(
                format!("{} {}...", SPINNER[frame_index], progress.label),
                theme.gauge(),
            ),
            Span::styled(hint, theme.dim()),
        ]);
        frame.render_widget(Paragraph::new(line), area);
        return;
    }
    let ratio = (progress.done as f64 / progress.total as f64).clamp(0.0, 1.0);
    let label = format!(
        "{} {}/{} {:>3.0}%",
        progress.label,
        progress.done,
        progress.total,
        ratio * 100.0
    );
    let [gauge, hint_area] =
        Layout::horizontal([Constraint::Min(1), Constraint::Length(hint.len() as u16)]).areas(area);
    frame.render_widget(
        LineGauge::default()
            .ratio(ratio)
            .label(label)
            .filled_symbol(FILLED)
            .unfilled_symbol(UNFILLED)
            .filled_style(theme.gauge())
            .unfilled_style(theme.dim()),
        gauge,
    );
    frame.render_widget(Paragraph::new(Span::styled(hint, theme.dim())), hint_area);
}

fn render_input_border(app: &App, frame: &mut Frame, area: Rect) {
    let theme = app.theme;
    let left = if app.mode() == Mode::Naming {
        " Choose a name (letters, digits, - or _) and press Enter ".to_owned()
    } else {
        " F1 help | Tab complete | PgUp/PgDn scroll | Ctrl-C quit ".to_owned()
    };
    let right = match &app.completion {
        Some(completion) => format!(" {} ", completion.candidates.join(" ")),
        None if app.mouse_capture => " mouse on (F2) ".to_owned(),
        None => String::new(),
    };
    let block = Block::new()
        .borders(Borders::TOP)
        .border_style(theme.dim())
        .title_top(Line::from(Span::styled(left, theme.dim())))
        .title_top(Line::from(Span::styled(right, theme.title())).right_aligned());
    frame.render_widget(block, area);
}

fn render_input(app: &App, frame: &mut Frame, area: Rect) {
    let prompt = app.mode().prompt();
    let prompt_width = prompt.chars().count() as u16;
    let room = usize::from(area.width.saturating_sub(prompt_width + 1)).max(1);
    let chars: Vec<char> = app.input.text().chars().collect();
    let cursor = app.input.cursor();
    let start = cursor.saturating_sub(room);
    let shown: String = chars[start..].iter().take(room + 1).collect();
    let line = Line::from(vec![
        Span::styled(prompt, app.theme.title()),
        Span::raw(shown),
    ]);
    frame.render_widget(Paragraph::new(line), area);
    if !app.help_open {
        let x = area.x + prompt_width + (cursor - start) as u16;
        frame.set_cursor_position(Position::new(x.min(area.right().saturating_sub(1)), area.y));
    }
}
