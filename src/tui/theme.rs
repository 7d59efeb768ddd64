//! Colours and emphasis: one style per kind of output, and the plain variant `NO_COLOR` asks
//! for. Owns no state beyond that choice; views ask it for styles.

use ratatui::style::{Color, Modifier, Style};

use crate::game::events::LineKind;

/// How the screen is styled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Theme {
    /// Whether colours are used at all (`false` when `NO_COLOR` is set): emphasis stays.
    pub color: bool,
}

impl Theme {
    /// Colours unless the `NO_COLOR` environment variable is set to something non-empty
    /// (<https://no-color.org>).
    pub fn from_env() -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
        Theme { color: !no_color }
    }

    /// A theme with colours.
    pub const fn colored() -> Self {
        Theme { color: true }
    }

    /// A theme without colours (what `NO_COLOR` gives).
    pub const fn plain() -> Self {
        Theme { color: false }
    }

    fn fg(self, color: Color) -> Style {
        if self.color {
            Style::new().fg(color)
        } else {
            Style::new()
        }
    }

    /// The style of a line of game output.
    pub fn line(self, kind: LineKind) -> Style {
        match kind {
            LineKind::Story => self.fg(Color::Cyan).add_modifier(Modifier::ITALIC),
            LineKind::Event => self.fg(Color::Yellow),
            LineKind::News => self.fg(Color::LightBlue),
            LineKind::Chat => self.fg(Color::Green),
            LineKind::Shout => self.fg(Color::LightMagenta).add_modifier(Modifier::BOLD),
            LineKind::Error => self.fg(Color::Red).add_modifier(Modifier::BOLD),
            LineKind::Info => Style::new(),
            LineKind::Echo => self.fg(Color::Blue).add_modifier(Modifier::BOLD),
            LineKind::Address => self.fg(Color::LightCyan),
        }
    }

    /// What marks a line's kind when there are no colours to tell kinds apart (`NO_COLOR`);
    /// nothing with colours. Addresses and plain output go unmarked, so they copy cleanly.
    pub fn marker(self, kind: LineKind) -> &'static str {
        if self.color {
            return "";
        }
        match kind {
            LineKind::Story => "~ ",
            LineKind::Event => "* ",
            LineKind::News => "+ ",
            LineKind::Chat => "' ",
            LineKind::Shout => "\" ",
            LineKind::Error => "! ",
            LineKind::Info | LineKind::Echo | LineKind::Address => "",
        }
    }

    /// What marks a chat line that mentions the player, colours or not.
    pub fn mention_marker(self) -> &'static str {
        "@ "
    }

    /// A chat line that mentions the player: reverse video, which needs no colour.
    pub fn mention(self) -> Style {
        Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD)
    }

    /// The status bar.
    pub fn status_bar(self) -> Style {
        if self.color {
            Style::new().fg(Color::Black).bg(Color::Gray)
        } else {
            Style::new().add_modifier(Modifier::REVERSED)
        }
    }

    /// Something the player should notice at once (clock warning, offline).
    pub fn warning(self) -> Style {
        self.fg(Color::Red).add_modifier(Modifier::BOLD)
    }

    /// Secondary text: hints, borders, offline players.
    pub fn dim(self) -> Style {
        self.fg(Color::DarkGray)
    }

    /// Titles and key names.
    pub fn title(self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }

    /// An online player in the side panel.
    pub fn online(self) -> Style {
        self.fg(Color::Green)
    }

    /// The filled part of a progress gauge.
    pub fn gauge(self) -> Style {
        self.fg(Color::Magenta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: [LineKind; 9] = [
        LineKind::Story,
        LineKind::Event,
        LineKind::News,
        LineKind::Chat,
        LineKind::Shout,
        LineKind::Error,
        LineKind::Info,
        LineKind::Echo,
        LineKind::Address,
    ];

    #[test]
    fn every_kind_has_its_own_colour_and_plain_has_none() {
        let theme = Theme::colored();
        for (i, a) in KINDS.iter().enumerate() {
            for b in &KINDS[i + 1..] {
                assert_ne!(theme.line(*a), theme.line(*b), "{a:?} and {b:?}");
            }
            assert_eq!(theme.marker(*a), "", "no markers with colours");
        }
        let plain = Theme::plain();
        for kind in KINDS {
            assert_eq!(plain.line(kind).fg, None);
            assert_eq!(plain.line(kind).bg, None);
        }
        assert_eq!(plain.status_bar().bg, None);
    }

    #[test]
    fn without_colour_the_kinds_of_talk_and_news_have_markers() {
        let plain = Theme::plain();
        let marked = [
            LineKind::Story,
            LineKind::Event,
            LineKind::News,
            LineKind::Chat,
            LineKind::Shout,
            LineKind::Error,
        ];
        for (i, a) in marked.iter().enumerate() {
            assert!(!plain.marker(*a).is_empty(), "{a:?}");
            for b in &marked[i + 1..] {
                assert_ne!(plain.marker(*a), plain.marker(*b), "{a:?} and {b:?}");
            }
        }
    }
}
