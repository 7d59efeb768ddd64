//! Drawing: the whole screen from the model. Reads state, never changes it, never does I/O;
//! it works on any ratatui backend (`TestBackend` in tests). [`layout`] is also what the keys
//! use to know how tall the pane they scroll is.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Position, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, LineGauge, Padding, Paragraph};

use crate::game::events::Mode;

use super::app::{App, MIN_SIZE, View};
use super::panes::{self, ellipsize_end};
use super::{addr_view, help, status_bar};

/// Columns at which the side panel of players appears.
const SIDE_PANEL_MIN_COLUMNS: u16 = 70;

/// Gauge cells done and to do: told apart by shape too, for `NO_COLOR`.
const FILLED: &str = "\u{2501}";
/// See [`FILLED`].
const UNFILLED: &str = "\u{2500}";

/// Spinner frames for long actions without a known length.
const SPINNER: &[&str] = &["|", "/", "-", "\\"];

/// Rows of the log column below which the All view has no chat pane.
const CHAT_PANE_MIN_COLUMN_ROWS: u16 = 6;

/// Most rows of the chat pane in the All view (its title row included).
const CHAT_PANE_MAX_ROWS: u16 = 8;

/// Said in an empty chat pane.
const NO_CHAT_YET: &str = "No chat yet: say or shout <text>.";

/// Where each part of the screen goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Areas {
    /// The status bar.
    pub status: Rect,
    /// Everything between the status bar and the progress row (log column and side panel).
    pub body: Rect,
    /// Game output (not in the Chat view).
    pub log: Option<Rect>,
    /// The chat pane's title row (All view).
    pub chat_title: Option<Rect>,
    /// Chat lines (All and Chat views).
    pub chat: Option<Rect>,
    /// The side panel of players (wide terminals).
    pub panel: Option<Rect>,
    /// The progress row (empty when nothing runs).
    pub progress: Rect,
    /// The border above the input line, with the key hints.
    pub input_border: Rect,
    /// The input line.
    pub input: Rect,
}

/// Splits the screen for the model's state.
pub fn layout(app: &App, area: Rect) -> Areas {
    let progress_rows = u16::from(app.progress.is_some());
    let [status, body, progress, input_border, input] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(progress_rows),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    let mut areas = Areas {
        status,
        body,
        progress,
        input_border,
        input,
        ..Areas::default()
    };
    let column = if area.width >= SIDE_PANEL_MIN_COLUMNS {
        let panel_columns = if area.width >= 110 { 30 } else { 24 };
        let [column, panel] =
            Layout::horizontal([Constraint::Min(1), Constraint::Length(panel_columns)]).areas(body);
        areas.panel = Some(panel);
        // A column of space between the log and the panel's border.
        Rect {
            width: column.width.saturating_sub(1),
            ..column
        }
    } else {
        body
    };
    match app.view {
        View::Game => areas.log = Some(column),
        View::Chat => areas.chat = Some(column),
        View::All if column.height < CHAT_PANE_MIN_COLUMN_ROWS => areas.log = Some(column),
        View::All => {
            let chat_rows = (column.height / 3 + 1).min(CHAT_PANE_MAX_ROWS);
            let [log, title, chat] = Layout::vertical([
                Constraint::Min(1),
                Constraint::Length(1),
                Constraint::Length(chat_rows - 1),
            ])
            .areas(column);
            areas.log = Some(log);
            areas.chat_title = Some(title);
            areas.chat = Some(chat);
        }
    }
    areas
}

/// Draws the whole screen.
pub fn render(app: &App, frame: &mut Frame) {
    let area = frame.area();
    if area.width < MIN_SIZE.0 || area.height < MIN_SIZE.1 {
        render_too_small(app, frame, area);
        return;
    }
    let areas = layout(app, area);
    status_bar::render(app, frame, areas.status);
    if let Some(log) = areas.log {
        panes::render(app, frame, log, &app.log, "");
    }
    if let Some(title) = areas.chat_title {
        render_chat_title(app, frame, title);
    }
    if let Some(chat) = areas.chat {
        panes::render(app, frame, chat, &app.chat, NO_CHAT_YET);
    }
    if let Some(panel) = areas.panel {
        render_players(app, frame, panel);
    }
    if app.progress.is_some() {
        render_progress(app, frame, areas.progress);
    }
    render_input_border(app, frame, areas.input_border);
    render_input(app, frame, areas.input);
    if app.addr_view.is_some() {
        addr_view::render(app, frame, areas.body);
    }
    if app.help_open() {
        help::render(app, frame, areas.body);
    }
}

/// The rule above the chat pane.
fn render_chat_title(app: &App, frame: &mut Frame, area: Rect) {
    let block = Block::new()
        .borders(Borders::TOP)
        .border_style(app.theme.dim())
        .title(Span::styled(" Chat ", app.theme.title()))
        .title(Line::from(Span::styled(" F3: Chat view ", app.theme.dim())).right_aligned());
    frame.render_widget(block, area);
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

fn render_players(app: &App, frame: &mut Frame, area: Rect) {
    let theme = app.theme;
    let block = Block::new()
        .borders(Borders::LEFT)
        .border_style(theme.dim())
        .padding(Padding::left(1))
        .title(Span::styled(" Players ", theme.title()));
    // The border and the padding take two columns, the online mark two more.
    let room = usize::from(area.width.saturating_sub(4));
    let mut lines = Vec::new();
    for player in &app.status.players {
        let (mark, style) = if player.online {
            ("* ", theme.online())
        } else {
            ("  ", theme.dim())
        };
        let (name, rank) = panel_name_and_rank(&player.name, &player.rank, room);
        lines.push(Line::from(vec![
            Span::styled(mark, style),
            Span::styled(name, style.add_modifier(Modifier::BOLD)),
            Span::styled(rank, theme.dim()),
        ]));
        lines.push(Line::from(Span::styled(
            format!("  {}", ellipsize_end(&player.location, room)),
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

/// A player's name and rank shortened with `…` to fit `room` columns: the rank gives way
/// first (down to a few letters, then entirely), the name only when it alone is too long.
pub fn panel_name_and_rank(name: &str, rank: &str, room: usize) -> (String, String) {
    /// Fewer letters of a rank than this say nothing: it is left out instead.
    const MIN_RANK_CHARS: usize = 4;
    let name_chars = name.chars().count();
    if name_chars >= room {
        return (ellipsize_end(name, room), String::new());
    }
    let rank_room = room - name_chars;
    if rank_room <= MIN_RANK_CHARS {
        return (name.to_owned(), String::new());
    }
    let rank = ellipsize_end(rank, rank_room - 1);
    (name.to_owned(), format!(" {rank}"))
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
                format!("{} {}...", SPINNER[frame_index], progress.activity.label()),
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
        progress.activity.label(),
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
    let hints = [
        " F1 help | F3 view | F4 addr | Tab | PgUp/PgDn | Ctrl-C ",
        " F1 help | F3 view | F4 addr ",
    ];
    let left = if app.mode() == Mode::Naming {
        " Choose a name (letters, digits, - or _) and press Enter ".to_owned()
    } else {
        // The longest hint that fits.
        let fits = hints
            .iter()
            .find(|hint| hint.chars().count() <= usize::from(area.width));
        fits.unwrap_or(&hints[1]).to_string()
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
    let prompt = app.prompt();
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
    if !app.help_open() && app.addr_view.is_none() {
        let x = area.x + prompt_width + (cursor - start) as u16;
        frame.set_cursor_position(Position::new(x.min(area.right().saturating_sub(1)), area.y));
    }
}
