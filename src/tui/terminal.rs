//! The real terminal: raw mode and the alternate screen on the way in, and the way back out on
//! every exit path (a normal return, an error, or a panic: a panic hook restores the terminal
//! before the report is printed).

use std::io::{self, Stdout, Write};
use std::panic::{self, PanicHookInfo};
use std::sync::Arc;

use crossterm::event::{
    DisableBracketedPaste, DisableMouseCapture, EnableBracketedPaste, EnableMouseCapture,
};
use crossterm::execute;
use crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;

/// A panic hook that can be shared between the hook we install and the one we put back.
type PanicHook = Arc<dyn Fn(&PanicHookInfo<'_>) + Send + Sync + 'static>;

/// The terminal while the UI owns it; dropping it gives the terminal back.
pub struct Screen {
    /// The ratatui terminal drawing on stdout.
    pub terminal: Terminal<CrosstermBackend<Stdout>>,
    /// The panic hook that was there before ours, put back on drop.
    previous_hook: Option<PanicHook>,
}

impl Screen {
    /// Takes the terminal: raw mode, alternate screen, bracketed paste, and a panic hook that
    /// restores all that. Mouse capture stays off (see [`set_mouse_capture`]).
    pub fn enter() -> io::Result<Screen> {
        let terminal = Terminal::new(CrosstermBackend::new(io::stdout()))?;
        let previous: PanicHook = Arc::from(panic::take_hook());
        let chained = Arc::clone(&previous);
        panic::set_hook(Box::new(move |info| {
            restore();
            chained(info);
        }));
        // From here on, dropping the screen (on any error below too) restores the terminal.
        let mut screen = Screen {
            terminal,
            previous_hook: Some(previous),
        };
        enable_raw_mode()?;
        execute!(io::stdout(), EnterAlternateScreen)?;
        // Old Windows consoles have no bracketed paste; pastes then arrive as keys, which works.
        let _ = execute!(io::stdout(), EnableBracketedPaste);
        screen.terminal.clear()?;
        Ok(screen)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
        // The hook cannot be changed from a panicking thread (that would abort); ours stays
        // then, and it only restores the terminal again before the previous one reports.
        if std::thread::panicking() {
            return;
        }
        if let Some(previous) = self.previous_hook.take() {
            // Our hook goes; the one that was there before comes back.
            drop(panic::take_hook());
            panic::set_hook(Box::new(move |info| previous(info)));
        }
    }
}

/// Turns mouse capture on (the wheel scrolls, but text cannot be selected) or off.
pub fn set_mouse_capture(on: bool) -> io::Result<()> {
    if on {
        execute!(io::stdout(), EnableMouseCapture)
    } else {
        execute!(io::stdout(), DisableMouseCapture)
    }
}

/// Steps out of the alternate screen and prints `text` on the terminal's own screen, where
/// the terminal itself wraps a long line and copies it whole, then a hint to come back. Raw
/// mode stays, so lines end in `\r\n`.
pub fn show_outside(text: &str) -> io::Result<()> {
    let mut out = io::stdout();
    execute!(out, LeaveAlternateScreen, crossterm::cursor::Show)?;
    write!(
        out,
        "\r\n{text}\r\n\r\n(cmud: select and copy the line above; any key goes back to the game)\r\n"
    )?;
    out.flush()
}

/// Back to the alternate screen after [`show_outside`].
pub fn come_back() -> io::Result<()> {
    execute!(io::stdout(), EnterAlternateScreen)
}

/// Gives the terminal back: no mouse capture, no paste mode, main screen, cursor shown, cooked
/// mode. Safe to call more than once; errors are ignored because there is nowhere to report
/// them (the terminal is what failed).
pub fn restore() {
    // One at a time: a step a terminal does not support must not stop the others.
    let mut out = io::stdout();
    let _ = execute!(out, DisableMouseCapture);
    let _ = execute!(out, DisableBracketedPaste);
    let _ = execute!(out, LeaveAlternateScreen);
    let _ = execute!(out, crossterm::cursor::Show);
    let _ = disable_raw_mode();
}
