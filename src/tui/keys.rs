//! What keys, the mouse and pastes do to the model. Pure, like the rest of `update`: it returns
//! [`Command`]s and never blocks, so typing stays live while the game works.

use crossterm::event::{
    Event as TermEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEvent, MouseEventKind,
};

use ratatui::layout::Rect;

use crate::game::events::{Activity, Input, LineKind, Mode};

use super::app::{App, CTRL_C_AGAIN, Command, View};
use super::complete::Completion;
use super::scrollback::Scrollback;
use super::{help, panes, view};

/// Lines one turn of the mouse wheel scrolls.
pub const WHEEL_LINES: usize = 3;

impl App {
    /// Applies an event from the terminal.
    pub fn on_terminal(&mut self, event: TermEvent) -> Vec<Command> {
        match event {
            TermEvent::Key(key) => self.on_key(key),
            TermEvent::Mouse(mouse) => {
                self.on_mouse(mouse);
                Vec::new()
            }
            TermEvent::Paste(text) => {
                self.completion = None;
                self.input.insert(&text);
                Vec::new()
            }
            TermEvent::Resize(columns, rows) => {
                self.resize(columns, rows);
                Vec::new()
            }
            TermEvent::FocusGained | TermEvent::FocusLost => Vec::new(),
        }
    }

    /// Applies a key. Only presses (and auto-repeats) count: releases, which Windows reports
    /// too, are ignored.
    pub fn on_key(&mut self, key: KeyEvent) -> Vec<Command> {
        if key.kind == KeyEventKind::Release {
            return Vec::new();
        }
        if self.outside {
            // Any key comes back; it does nothing else.
            self.outside = false;
            return vec![Command::ComeBack];
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && matches!(key.code, KeyCode::Char('c' | 'C')) {
            return self.ctrl_c();
        }
        if self.help.is_some() {
            self.help_key(key);
            return Vec::new();
        }
        if self.addr_view.is_some() {
            return self.addr_key(key);
        }
        if !matches!(key.code, KeyCode::Tab | KeyCode::BackTab) {
            self.completion = None;
        }
        if self.scroll_key(key) {
            return Vec::new();
        }
        match key.code {
            KeyCode::F(1) => self.help = Some(0),
            KeyCode::Char('?') if self.input.is_empty() && !ctrl => self.help = Some(0),
            KeyCode::F(3) => {
                self.view = self.view.next();
                if self.view != View::Game {
                    self.unseen_chat = 0;
                }
            }
            KeyCode::F(4) => self.addr_view = Some(0),
            KeyCode::F(2) => {
                self.mouse_capture = !self.mouse_capture;
                let state = if self.mouse_capture {
                    "on: the wheel scrolls; F2 again to select text"
                } else {
                    "off: text can be selected"
                };
                self.note(LineKind::Event, format!("Mouse capture {state}."));
                return vec![Command::SetMouseCapture(self.mouse_capture)];
            }
            KeyCode::Enter => return self.submit(),
            KeyCode::Esc => return self.escape(),
            KeyCode::Tab => self.complete(true),
            KeyCode::BackTab => self.complete(false),
            KeyCode::Up => self.input.history_prev(),
            KeyCode::Down => self.input.history_next(),
            // Ctrl+Alt is AltGr on Windows ('@' on a German keyboard): a character, not a
            // control key.
            KeyCode::Char(c) if ctrl && !key.modifiers.contains(KeyModifiers::ALT) => {
                self.control_key(c);
            }
            KeyCode::Char(c) => self.input.insert(&c.to_string()),
            KeyCode::Backspace => self.input.backspace(),
            KeyCode::Delete => self.input.delete(),
            KeyCode::Left => self.input.left(),
            KeyCode::Right => self.input.right(),
            KeyCode::Home => self.input.home(),
            KeyCode::End => self.input.end(),
            _ => {}
        }
        Vec::new()
    }

    /// Ctrl-C: stops mining or solving and warns that another quits; with nothing running
    /// (story text does not count: it is no work to lose), or within [`CTRL_C_AGAIN`] of the
    /// warning, quits.
    fn ctrl_c(&mut self) -> Vec<Command> {
        let again = self
            .ctrl_c_at
            .is_some_and(|at| self.now.saturating_duration_since(at) <= CTRL_C_AGAIN);
        let working = self
            .activity()
            .filter(|activity| *activity != Activity::Story && !again);
        let Some(activity) = working else {
            return self.quit();
        };
        self.ctrl_c_at = Some(self.now);
        self.help = None;
        self.addr_view = None;
        let what = activity.label().to_lowercase();
        self.note(
            LineKind::Event,
            format!("Stopping {what}. Ctrl-C again to quit."),
        );
        vec![Command::Send(Input::Interrupt)]
    }

    /// Whether the scroll keys move the chat (Chat view) rather than the log, and the area
    /// of the pane they move.
    fn scrolled(&self) -> (bool, Rect) {
        let screen = Rect::new(0, 0, self.size.0, self.size.1);
        let areas = view::layout(self, screen);
        match (self.view, areas.log, areas.chat) {
            (View::Chat, _, Some(chat)) => (true, chat),
            (_, Some(log), _) => (false, log),
            _ => (false, areas.body),
        }
    }

    /// The lines the scroll keys move.
    fn scrolled_lines(&mut self) -> &mut Scrollback {
        if self.scrolled().0 {
            &mut self.chat
        } else {
            &mut self.log
        }
    }

    /// Rows a page scroll moves: the scrolled pane's height, less one row kept for context.
    pub fn page_rows(&self) -> usize {
        usize::from(self.scrolled().1.height.saturating_sub(1).max(1))
    }

    /// Scroll keys: PgUp/PgDn, Shift or Alt with Up/Down (which macOS Terminal leaves to the
    /// application), Ctrl+Home/End, and End on an empty line. Returns whether the key scrolled.
    fn scroll_key(&mut self, key: KeyEvent) -> bool {
        let shift_or_alt = key
            .modifiers
            .intersects(KeyModifiers::SHIFT | KeyModifiers::ALT);
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let page = self.page_rows();
        let to_end = ctrl || self.input.is_empty();
        if key.code == KeyCode::Home && ctrl {
            self.scroll_to_top();
            return true;
        }
        let lines = self.scrolled_lines();
        match key.code {
            KeyCode::PageUp => lines.scroll_up(page),
            KeyCode::PageDown => lines.scroll_down(page),
            KeyCode::Up if shift_or_alt => lines.scroll_up(1),
            KeyCode::Down if shift_or_alt => lines.scroll_down(1),
            KeyCode::End if to_end => lines.to_bottom(),
            _ => return false,
        }
        true
    }

    /// Ctrl+Home: the oldest lines kept, at the top of the pane.
    fn scroll_to_top(&mut self) {
        let (chat, area) = self.scrolled();
        let width = usize::from(area.width);
        let kept = if chat { &self.chat } else { &self.log };
        let rows: Vec<usize> = kept
            .lines()
            .map(|entry| panes::rows(self, entry, width).len())
            .collect();
        self.scrolled_lines()
            .to_top(usize::from(area.height), &rows);
    }

    fn help_key(&mut self, key: KeyEvent) {
        let screen = Rect::new(0, 0, self.size.0, self.size.1);
        let body = view::layout(self, screen).body;
        let max = help::max_offset(self.theme, body);
        let page = usize::from(body.height.saturating_sub(3).max(1));
        let offset = self.help.unwrap_or(0).min(max);
        self.help = match key.code {
            KeyCode::Esc | KeyCode::F(1) | KeyCode::Enter | KeyCode::Char('q' | '?') => None,
            KeyCode::Up => Some(offset.saturating_sub(1)),
            KeyCode::Down => Some((offset + 1).min(max)),
            KeyCode::PageUp => Some(offset.saturating_sub(page)),
            KeyCode::PageDown | KeyCode::Char(' ') => Some((offset + page).min(max)),
            KeyCode::Home => Some(0),
            KeyCode::End => Some(max),
            _ => Some(offset),
        };
    }

    /// Keys in the address view: choose an address, copy it, close.
    fn addr_key(&mut self, key: KeyEvent) -> Vec<Command> {
        let selected = self.addr_view.unwrap_or(0);
        let last = self.addresses.len().saturating_sub(1);
        match key.code {
            KeyCode::Esc | KeyCode::F(4) | KeyCode::Char('q') => self.addr_view = None,
            KeyCode::Up => self.addr_view = Some(selected.saturating_sub(1)),
            KeyCode::Down => self.addr_view = Some((selected + 1).min(last)),
            KeyCode::Char('c' | 'y') | KeyCode::Enter => {
                if let Some(addr) = self.addresses.get(selected).cloned() {
                    self.addr_view = None;
                    return vec![Command::Copy(addr)];
                }
            }
            KeyCode::Char('w') => {
                if let Some(addr) = self.addresses.get(selected).cloned() {
                    self.addr_view = None;
                    self.outside = true;
                    return vec![Command::ShowOutside(addr)];
                }
            }
            _ => {}
        }
        Vec::new()
    }

    fn control_key(&mut self, c: char) {
        match c {
            'a' => self.input.home(),
            'e' => self.input.end(),
            'u' => self.input.clear(),
            'k' => self.input.kill_to_end(),
            'w' => self.input.delete_word(),
            _ => {}
        }
    }

    /// Enter: send the line; on an empty line while story text runs, skip it.
    fn submit(&mut self) -> Vec<Command> {
        let line = self.input.take();
        if line.trim().is_empty() {
            if self.story_running() {
                return vec![Command::Send(Input::Interrupt)];
            }
            return Vec::new();
        }
        if self.mode() == Mode::Naming {
            // The game applies its one rule and answers every attempt (echoed, accepted or
            // refused with its reason); the line is cleared either way.
            return vec![Command::Send(Input::Line(line.trim().to_owned()))];
        }
        self.input.remember(&line);
        self.log.to_bottom();
        vec![Command::Send(Input::Line(line))]
    }

    /// Esc: clear the line; on an empty line, skip story text or stop a long action.
    fn escape(&mut self) -> Vec<Command> {
        if !self.input.is_empty() {
            self.input.clear();
            return Vec::new();
        }
        if self.progress.is_some() {
            return vec![Command::Send(Input::Interrupt)];
        }
        Vec::new()
    }

    /// Tab (forward) or Shift+Tab: start or continue cycling through completions.
    fn complete(&mut self, forward: bool) {
        if let Some(completion) = &mut self.completion {
            completion.step(forward);
            let line = completion.line();
            self.input.set(&line);
            return;
        }
        let text = self.input.text();
        let candidates = self.vocabulary.candidates(&text, self.mode());
        if candidates.is_empty() {
            return;
        }
        let (head, _) = super::complete::split_last_word(&text);
        let completion = Completion {
            head: head.to_owned(),
            index: if forward { 0 } else { candidates.len() - 1 },
            candidates,
        };
        self.input.set(&completion.line());
        if completion.candidates.len() > 1 {
            self.completion = Some(completion);
        }
    }

    /// The mouse (only reported while capture is on): the wheel scrolls the log.
    pub fn on_mouse(&mut self, mouse: MouseEvent) {
        match mouse.kind {
            MouseEventKind::ScrollUp => self.scrolled_lines().scroll_up(WHEEL_LINES),
            MouseEventKind::ScrollDown => self.scrolled_lines().scroll_down(WHEEL_LINES),
            _ => {}
        }
    }
}
