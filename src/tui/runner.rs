//! The event loop: terminal events, game events and a tick, with `select!`, feeding the model
//! and drawing it. Generic over the ratatui backend and the source of terminal events, so tests
//! drive it with `TestBackend` and synthetic keys, and a game played by the test itself.

use std::future::Future;
use std::io;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use crossterm::event::Event as TermEvent;
use futures::{Stream, StreamExt};
use ratatui::Terminal;
use ratatui::backend::Backend;
use tokio::sync::mpsc::{self, error::TrySendError};

use crate::game::events::{Event, Input, LineKind};

use super::addr_view::osc52;
use super::app::{App, Command};
use super::view;

/// The terminal bell.
const BELL: &[u8] = b"\x07";

/// How often the clock ticks (spinner frames).
pub const TICK_PERIOD: Duration = Duration::from_millis(120);

/// Game events applied at most before the screen is drawn again (a burst is drawn once).
const MAX_EVENTS_PER_DRAW: usize = 256;

/// The two ends of a game session, as `game::session::spawn` returns them.
pub struct GameLink {
    /// Where the player's lines go.
    pub input: mpsc::Sender<Input>,
    /// What the game says.
    pub events: mpsc::Receiver<Event>,
}

/// What the loop needs done outside the screen.
pub trait Host {
    /// Keeps what the game learned (`profile.ron`).
    fn remember(&mut self, event: &Event);
    /// Turns mouse capture on or off.
    fn set_mouse_capture(&mut self, on: bool) -> io::Result<()>;
    /// Writes bytes to the terminal between two frames (the bell, OSC 52).
    fn write_to_terminal(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Leaves the full-screen UI and prints `text` on the terminal's own screen.
    fn show_outside(&mut self, text: &str) -> io::Result<()>;
    /// Back to the full-screen UI (the runner then redraws all of it).
    fn come_back(&mut self) -> io::Result<()>;
}

/// Runs the UI until the player or the game quits, the terminal closes, or `stop` completes.
pub async fn run_loop<B, S, F>(
    terminal: &mut Terminal<B>,
    app: &mut App,
    mut terminal_events: S,
    mut game: GameLink,
    host: &mut impl Host,
    stop: F,
) -> anyhow::Result<()>
where
    B: Backend,
    B::Error: Send + Sync + 'static,
    S: Stream<Item = io::Result<TermEvent>> + Unpin,
    F: Future<Output = ()>,
{
    let size = terminal.size().context("reading the terminal size")?;
    app.resize(size.width, size.height);
    let mut tick = tokio::time::interval(TICK_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tokio::pin!(stop);
    let mut dirty = true;
    while !app.quitting {
        // Nothing is drawn while the UI has stepped aside (it would draw on the main screen).
        if dirty && !app.outside {
            terminal
                .draw(|frame| view::render(app, frame))
                .context("drawing the screen")?;
            app.frames += 1;
        }
        // Idle, the loop sleeps until an event: only a spinner needs the clock.
        let ticking = app.wants_ticks();
        let commands = tokio::select! {
            () = &mut stop => break,
            event = terminal_events.next() => match event {
                Some(event) => {
                    app.at(std::time::Instant::now(), SystemTime::now());
                    app.on_terminal(event.context("reading the terminal")?)
                }
                None => break,
            },
            event = game.events.recv() => match event {
                Some(event) => {
                    app.at(std::time::Instant::now(), SystemTime::now());
                    let mut commands = app.on_game(event);
                    for _ in 1..MAX_EVENTS_PER_DRAW {
                        let Ok(event) = game.events.try_recv() else { break };
                        commands.extend(app.on_game(event));
                    }
                    commands
                }
                None => app.on_game_ended(),
            },
            _ = tick.tick(), if ticking => {
                dirty = app.tick();
                continue;
            }
        };
        dirty = true;
        for command in commands {
            if command == Command::ComeBack {
                // The alternate screen comes back blank: all of it must be drawn again.
                terminal.clear().context("clearing the screen")?;
            }
            perform(command, app, &game.input, host);
        }
    }
    Ok(())
}

/// Does what the model asked. Never waits: a full game queue is told to the player.
fn perform(command: Command, app: &mut App, input: &mpsc::Sender<Input>, host: &mut impl Host) {
    match command {
        Command::Send(line) => match input.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                app.note(
                    LineKind::Error,
                    "The game is busy; try that again in a moment.",
                );
            }
            Err(TrySendError::Closed(_)) => {
                app.quit();
            }
        },
        Command::Remember(event) => host.remember(&event),
        Command::SetMouseCapture(on) => {
            if let Err(err) = host.set_mouse_capture(on) {
                app.note(
                    LineKind::Error,
                    format!("Could not switch mouse capture: {err}"),
                );
            }
        }
        Command::Bell => {
            if let Err(err) = host.write_to_terminal(BELL) {
                tracing::debug!(%err, "could not ring the bell");
            }
        }
        Command::Copy(text) => match host.write_to_terminal(osc52(&text).as_bytes()) {
            Ok(()) => app.note_copied(&text),
            Err(err) => app.note(LineKind::Error, format!("Could not copy: {err}")),
        },
        Command::ShowOutside(text) => {
            if let Err(err) = host.show_outside(&text) {
                app.outside = false;
                app.note(LineKind::Error, format!("Could not show it: {err}"));
            }
        }
        Command::ComeBack => {
            if let Err(err) = host.come_back() {
                tracing::warn!(%err, "could not go back to the full-screen UI");
            }
        }
        Command::Quit => {
            app.quit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::theme::Theme;

    struct NoHost;

    impl Host for NoHost {
        fn remember(&mut self, _: &Event) {}
        fn set_mouse_capture(&mut self, _: bool) -> io::Result<()> {
            Err(io::Error::other("no terminal"))
        }
        fn write_to_terminal(&mut self, _: &[u8]) -> io::Result<()> {
            Err(io::Error::other("no terminal"))
        }
        fn show_outside(&mut self, _: &str) -> io::Result<()> {
            Err(io::Error::other("no terminal"))
        }
        fn come_back(&mut self) -> io::Result<()> {
            Err(io::Error::other("no terminal"))
        }
    }

    #[test]
    fn a_busy_game_is_told_not_waited_for_and_a_gone_game_quits() {
        let mut app = App::new(Theme::plain());
        let (input, mut rx) = mpsc::channel(1);
        let send = || Command::Send(Input::Line("mine".into()));
        perform(send(), &mut app, &input, &mut NoHost);
        perform(send(), &mut app, &input, &mut NoHost);
        assert_eq!(rx.try_recv().ok(), Some(Input::Line("mine".into())));
        let last = app.log.lines().last().map(|entry| entry.line.text.clone());
        assert!(last.is_some_and(|text| text.contains("busy")));

        perform(
            Command::SetMouseCapture(true),
            &mut app,
            &input,
            &mut NoHost,
        );
        let last = app.log.lines().last().map(|entry| entry.line.text.clone());
        assert!(last.is_some_and(|text| text.contains("mouse capture")));

        perform(Command::Copy("x".into()), &mut app, &input, &mut NoHost);
        let last = app.log.lines().last().map(|entry| entry.line.text.clone());
        assert!(last.is_some_and(|text| text.contains("Could not copy")));

        drop(rx);
        assert!(!app.quitting);
        perform(send(), &mut app, &input, &mut NoHost);
        assert!(app.quitting);
    }
}
