//! What keys, the mouse and pastes do to the model. Pure, like the rest of `update`: it returns
//! [`Command`]s and never blocks, so typing stays live while the game works.

use crossterm::event::{
    Event as TermEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEvent, MouseEventKind,
};

use crate::game::events::{Input, LineKind, Mode};

use super::app::{App, Command, validate_name};
use super::complete::Completion;

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
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && matches!(key.code, KeyCode::Char('c' | 'C')) {
            return self.quit();
        }
        if self.help_open {
            self.help_key(key);
            return Vec::new();
        }
        if !matches!(key.code, KeyCode::Tab | KeyCode::BackTab) {
            self.completion = None;
        }
        if self.scroll_key(key) {
            return Vec::new();
        }
        match key.code {
            KeyCode::F(1) => self.help_open = true,
            KeyCode::Char('?') if self.input.is_empty() && !ctrl => self.help_open = true,
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

    /// Scroll keys: PgUp/PgDn, Shift or Alt with Up/Down (which macOS Terminal leaves to the
    /// application), Ctrl+Home/End, and End on an empty line. Returns whether the key scrolled.
    fn scroll_key(&mut self, key: KeyEvent) -> bool {
        let shift_or_alt = key
            .modifiers
            .intersects(KeyModifiers::SHIFT | KeyModifiers::ALT);
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        match key.code {
            KeyCode::PageUp => self.log.scroll_up(self.page_rows()),
            KeyCode::PageDown => self.log.scroll_down(self.page_rows()),
            KeyCode::Up if shift_or_alt => self.log.scroll_up(1),
            KeyCode::Down if shift_or_alt => self.log.scroll_down(1),
            KeyCode::Home if ctrl => self.log.scroll_up(usize::MAX),
            KeyCode::End if ctrl || self.input.is_empty() => self.log.to_bottom(),
            _ => return false,
        }
        true
    }

    fn help_key(&mut self, key: KeyEvent) {
        match key.code {
            KeyCode::Esc | KeyCode::F(1) | KeyCode::Enter | KeyCode::Char('q' | '?') => {
                self.help_open = false;
            }
            _ => {}
        }
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
            let name = line.trim();
            if let Err(why) = validate_name(name) {
                self.note(LineKind::Error, why);
                self.input.set(name);
                return Vec::new();
            }
            return vec![Command::Send(Input::Line(name.to_owned()))];
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
            MouseEventKind::ScrollUp => self.log.scroll_up(WHEEL_LINES),
            MouseEventKind::ScrollDown => self.log.scroll_down(WHEEL_LINES),
            _ => {}
        }
    }
}
