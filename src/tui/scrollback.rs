//! The scrollback: game output kept for the log pane, and where the player has scrolled to.
//!
//! The position is an anchor on a line (by sequence number), not a row count from the bottom,
//! so new output arriving below never moves what a player who scrolled up is reading, and a
//! resize that rewraps lines keeps the same line at the bottom.

use std::collections::VecDeque;

use crate::game::events::Line;

/// A line as the log keeps it: the game's line and what the UI noted when it arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The line itself.
    pub line: Line,
    /// The local time it arrived (`HH:MM`), when timestamps are on.
    pub stamp: Option<String>,
    /// Whether it is someone's chat that mentions the player (highlighted).
    pub mention: bool,
}

impl Entry {
    /// A line without a time or a mention.
    pub fn plain(line: Line) -> Self {
        Entry {
            line,
            stamp: None,
            mention: false,
        }
    }
}

/// Lines kept; older ones are dropped.
pub const MAX_LOG_LINES: usize = 5000;

/// Game output and the scroll position over it.
#[derive(Clone, Debug, Default)]
pub struct Scrollback {
    /// The kept lines, oldest first.
    lines: VecDeque<Entry>,
    /// Sequence number of `lines[0]` (lines ever dropped from the front).
    first_seq: u64,
    /// `None` follows new output; `Some(seq)` keeps line `seq` at the bottom of the pane.
    anchor: Option<u64>,
}

impl Scrollback {
    /// Appends a line, dropping the oldest beyond [`MAX_LOG_LINES`].
    pub fn push(&mut self, line: Entry) {
        self.lines.push_back(line);
        if self.lines.len() > MAX_LOG_LINES {
            self.lines.pop_front();
            self.first_seq += 1;
            if let Some(anchor) = self.anchor {
                self.anchor = Some(anchor.max(self.first_seq));
            }
        }
    }

    /// Number of lines kept.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether nothing was shown yet.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The kept lines, oldest first.
    pub fn lines(&self) -> impl DoubleEndedIterator<Item = &Entry> {
        self.lines.iter()
    }

    /// Whether the pane follows new output (not scrolled up).
    pub fn is_following(&self) -> bool {
        self.anchor.is_none()
    }

    fn last_seq(&self) -> Option<u64> {
        (self.first_seq + self.lines.len() as u64).checked_sub(1)
    }

    /// Scrolls up by `n` lines (stops at the oldest line).
    pub fn scroll_up(&mut self, n: usize) {
        let Some(last) = self.last_seq() else { return };
        let bottom = self.anchor.unwrap_or(last);
        self.anchor = Some(bottom.saturating_sub(n as u64).max(self.first_seq));
    }

    /// Scrolls down by `n` lines; reaching the newest line follows new output again.
    pub fn scroll_down(&mut self, n: usize) {
        let (Some(anchor), Some(last)) = (self.anchor, self.last_seq()) else {
            return;
        };
        let bottom = anchor.saturating_add(n as u64);
        self.anchor = (bottom < last).then_some(bottom);
    }

    /// Shows the oldest lines at the top of a pane of `height` rows, where `rows` says how many
    /// rows each kept line takes, oldest first. When everything fits, the pane simply follows
    /// new output.
    pub fn to_top(&mut self, height: usize, rows: &[usize]) {
        let total: usize = rows.iter().sum();
        if total <= height {
            self.anchor = None;
            return;
        }
        // One row goes to the "newer lines below" bar.
        let room = height.saturating_sub(1).max(1);
        let mut used = 0;
        let mut last_fitting = 0;
        for (i, count) in rows.iter().enumerate() {
            used += count;
            if used > room && i > 0 {
                break;
            }
            last_fitting = i;
        }
        self.anchor = Some(self.first_seq + last_fitting as u64);
    }

    /// Jumps back to the newest line and follows new output.
    pub fn to_bottom(&mut self) {
        self.anchor = None;
    }

    /// Lines below the pane that the player has not seen because they scrolled up.
    pub fn below(&self) -> usize {
        match (self.anchor, self.last_seq()) {
            (Some(anchor), Some(last)) => (last - anchor) as usize,
            _ => 0,
        }
    }

    /// The line at the bottom of the pane and the ones above it, newest first.
    pub fn visible_from_bottom(&self) -> impl Iterator<Item = &Entry> {
        let end = match self.anchor {
            Some(anchor) => (anchor - self.first_seq) as usize + 1,
            None => self.lines.len(),
        };
        self.lines.range(..end.min(self.lines.len())).rev()
    }
}

/// Splits `text` into rows of at most `width` characters, breaking at a space where it can.
/// Widths are counted in characters: game text is plain.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut rows = Vec::new();
    for paragraph in text.split('\n') {
        let mut rest: Vec<char> = paragraph.chars().filter(|c| *c != '\r').collect();
        if rest.is_empty() {
            rows.push(String::new());
            continue;
        }
        while rest.len() > width {
            let cut = rest[..=width]
                .iter()
                .rposition(|c| *c == ' ')
                .filter(|&at| at > 0)
                .unwrap_or(width);
            rows.push(rest[..cut].iter().collect());
            let skip = usize::from(rest.get(cut) == Some(&' '));
            rest.drain(..cut + skip);
        }
        rows.push(rest.into_iter().collect());
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::game::events::LineKind;

    fn info(text: &str) -> Entry {
        Entry::plain(Line::new(LineKind::Info, text))
    }

    fn filled(n: usize) -> Scrollback {
        let mut log = Scrollback::default();
        for i in 0..n {
            log.push(info(&format!("line {i}")));
        }
        log
    }

    fn bottom(log: &Scrollback) -> String {
        log.visible_from_bottom().next().unwrap().line.text.clone()
    }

    #[test]
    fn to_top_puts_the_oldest_line_at_the_top() {
        let mut log = filled(30);
        log.to_top(10, &[1; 30]);
        // Nine rows of lines, one for the bar below them.
        assert_eq!(bottom(&log), "line 8");
        let mut log = filled(30);
        let mut rows = [1; 30];
        rows[0] = 3;
        log.to_top(10, &rows);
        assert_eq!(bottom(&log), "line 6");
        let mut short = filled(5);
        short.scroll_up(2);
        short.to_top(10, &[1; 5]);
        assert!(short.is_following(), "all of it fits: nothing to scroll");
    }

    #[test]
    fn scrolled_position_survives_new_output_and_trimming() {
        let mut log = filled(MAX_LOG_LINES);
        log.scroll_up(10);
        let before = bottom(&log);
        log.push(info("new"));
        assert_eq!(bottom(&log), before);
        assert_eq!(log.below(), 11);
        log.scroll_down(100);
        assert!(log.is_following());
        assert_eq!(bottom(&log), "new");
    }

    #[test]
    fn scrolling_stops_at_the_oldest_line() {
        let mut log = filled(3);
        log.scroll_up(100);
        assert_eq!(bottom(&log), "line 0");
        assert_eq!(log.below(), 2);
    }

    #[test]
    fn wrap_breaks_at_spaces_and_long_words() {
        assert_eq!(wrap("aaa bbb ccc", 7), vec!["aaa bbb", "ccc"]);
        assert_eq!(wrap("abcdefgh", 3), vec!["abc", "def", "gh"]);
        assert_eq!(wrap("", 5), vec![""]);
        assert_eq!(wrap("a\nb", 5), vec!["a", "b"]);
    }
}
