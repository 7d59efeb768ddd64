//! The input line: the text being typed, the cursor, and the history of sent lines.
//! Pure editing; what a key means is decided in `keys`.

/// Sent lines kept for Up/Down.
pub const MAX_HISTORY: usize = 500;

/// The line being typed.
#[derive(Clone, Debug, Default)]
pub struct InputLine {
    /// The text, as characters so the cursor indexes them directly.
    chars: Vec<char>,
    /// Cursor position, in characters from the start (0..=len).
    cursor: usize,
    /// Lines sent before, oldest first.
    history: Vec<String>,
    /// While browsing history: the entry shown, and the unsent line to come back to.
    browsing: Option<(usize, String)>,
}

impl InputLine {
    /// The text typed so far.
    pub fn text(&self) -> String {
        self.chars.iter().collect()
    }

    /// The cursor, in characters from the start.
    pub fn cursor(&self) -> usize {
        self.cursor
    }

    /// Whether nothing is typed.
    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    /// Lines sent before, oldest first.
    pub fn history(&self) -> &[String] {
        &self.history
    }

    /// Replaces the text, cursor at the end.
    pub fn set(&mut self, text: &str) {
        self.chars = text.chars().collect();
        self.cursor = self.chars.len();
    }

    /// Inserts text at the cursor (a typed key or a paste; line breaks become spaces).
    pub fn insert(&mut self, text: &str) {
        for c in text.chars() {
            let c = if c == '\n' || c == '\r' || c == '\t' {
                ' '
            } else {
                c
            };
            if !c.is_control() {
                self.chars.insert(self.cursor, c);
                self.cursor += 1;
            }
        }
    }

    /// Deletes the character before the cursor.
    pub fn backspace(&mut self) {
        if self.cursor > 0 {
            self.cursor -= 1;
            self.chars.remove(self.cursor);
        }
    }

    /// Deletes the character under the cursor.
    pub fn delete(&mut self) {
        if self.cursor < self.chars.len() {
            self.chars.remove(self.cursor);
        }
    }

    /// Deletes the word before the cursor (Ctrl-W).
    pub fn delete_word(&mut self) {
        let mut start = self.cursor;
        while start > 0 && self.chars[start - 1] == ' ' {
            start -= 1;
        }
        while start > 0 && self.chars[start - 1] != ' ' {
            start -= 1;
        }
        self.chars.drain(start..self.cursor);
        self.cursor = start;
    }

    /// Deletes from the cursor to the end (Ctrl-K).
    pub fn kill_to_end(&mut self) {
        self.chars.truncate(self.cursor);
    }

    /// Moves the cursor one character left.
    pub fn left(&mut self) {
        self.cursor = self.cursor.saturating_sub(1);
    }

    /// Moves the cursor one character right.
    pub fn right(&mut self) {
        self.cursor = (self.cursor + 1).min(self.chars.len());
    }

    /// Moves the cursor to the start.
    pub fn home(&mut self) {
        self.cursor = 0;
    }

    /// Moves the cursor to the end.
    pub fn end(&mut self) {
        self.cursor = self.chars.len();
    }

    /// Empties the line (and stops browsing history).
    pub fn clear(&mut self) {
        self.chars.clear();
        self.cursor = 0;
        self.browsing = None;
    }

    /// Takes the typed line for sending, leaving the input empty.
    pub fn take(&mut self) -> String {
        let text = self.text();
        self.clear();
        text
    }

    /// Records a sent line (not blanks, not a repeat of the last one).
    pub fn remember(&mut self, line: &str) {
        if line.trim().is_empty() || self.history.last().is_some_and(|last| last == line) {
            return;
        }
        self.history.push(line.to_owned());
        if self.history.len() > MAX_HISTORY {
            self.history.remove(0);
        }
    }

    /// Shows the previous history entry (Up); the unsent line is kept to come back to.
    pub fn history_prev(&mut self) {
        let index = match &self.browsing {
            Some((0, _)) => return,
            Some((index, _)) => index - 1,
            None if self.history.is_empty() => return,
            None => {
                self.browsing = Some((self.history.len(), self.text()));
                self.history.len() - 1
            }
        };
        if let Some((at, _)) = &mut self.browsing {
            *at = index;
        }
        let entry = self.history[index].clone();
        self.set(&entry);
    }

    /// Shows the next history entry (Down), and finally the unsent line again.
    pub fn history_next(&mut self) {
        let Some((index, draft)) = self.browsing.take() else {
            return;
        };
        if index + 1 >= self.history.len() {
            self.set(&draft);
        } else {
            self.browsing = Some((index + 1, draft));
            let entry = self.history[index + 1].clone();
            self.set(&entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn editing_moves_the_cursor() {
        let mut input = InputLine::default();
        input.insert("mine 3");
        input.left();
        input.backspace();
        assert_eq!(input.text(), "mine3");
        input.home();
        input.delete();
        assert_eq!(input.text(), "ine3");
        input.end();
        input.insert(" x\ny");
        input.delete_word();
        assert_eq!(input.text(), "ine3 x ");
        assert_eq!(input.cursor(), 7);
    }

    #[test]
    fn history_skips_blanks_and_repeats() {
        let mut input = InputLine::default();
        for line in ["a", "a", " ", "b"] {
            input.remember(line);
        }
        assert_eq!(input.history(), ["a", "b"]);
    }
}
