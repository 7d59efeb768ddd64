//! Front ends: the ratatui terminal UI and the plain line REPL ([`plain`]).
//!
//! The terminal UI is split model / events / update / view, as in ratatui's templates:
//! [`app`] is the model and its update from game events, [`keys`] its update from the terminal,
//! [`view`], [`panes`], [`help`] and [`addr_view`] draw it, [`runner`] is the `select!` loop over terminal events, game
//! events and a tick, and [`terminal`] takes and restores the real terminal. The UI only talks
//! to the game through `game::events`; it never queries the replica.

pub mod addr_view;
pub mod app;
pub mod complete;
pub mod embed;
pub mod help;
pub mod input;
pub mod keys;
pub mod panes;
pub mod plain;
pub mod runner;
pub mod scrollback;
pub mod status_bar;
pub mod terminal;
pub mod theme;
pub mod view;

use std::io::{self, Write};

use anyhow::Context;
use crossterm::event::EventStream;

use crate::cli::Settings;
use crate::game::events::{Event, LineKind};
use crate::game::session::{self, SessionOptions};

use self::app::App;
use self::runner::{GameLink, Host};
use self::theme::Theme;

/// Runs the game in the terminal UI with an embedded node.
pub async fn run(mut settings: Settings) -> anyhow::Result<()> {
    let started = embed::start_node_quietly(&settings).await?;
    let tell_key = crate::game::tell::TellKey::load_or_create(&settings.node.world_dir);
    let tell_problem = tell_key.as_ref().err().map(ToString::to_string);
    let (input, events) = session::spawn(
        started.kv,
        SessionOptions {
            name: settings.name.clone(),
            tell_key: tell_key.ok().map(std::sync::Arc::new),
            joins: settings.joins.clone(),
            remembered_peers: settings.profile.peers.clone(),
            ..SessionOptions::default()
        },
    );
    let mut app = App::new(Theme::from_env());
    app.options = settings.screen;
    if let Some(why) = tell_problem {
        app.note(
            LineKind::Error,
            format!("Tells cannot be read here: {why}."),
        );
    }
    if let Some(moved) = &started.rpc_moved {
        app.note(LineKind::Error, format!("Note: {moved}."));
    }
    let mut addrs = started.addrs.clone();
    crate::game::sort_by_reach(&mut addrs);
    if !addrs.is_empty() {
        app.note(
            LineKind::Event,
            "Friends can join you with cmud --join and one of these (F4 shows them, c copies):",
        );
    }
    for addr in addrs {
        app.note(LineKind::Address, addr);
    }
    let result = play(&mut settings, &mut app, GameLink { input, events }).await;
    tracing::info!("leaving the game: flushing the world to disk");
    started.node.shutdown().await;
    result
}

/// The UI part of [`run`]: owns the real terminal while it runs.
async fn play(settings: &mut Settings, app: &mut App, game: GameLink) -> anyhow::Result<()> {
    let mut screen = terminal::Screen::enter()
        .context("taking the terminal (for a plain line interface, run cmud --plain)")?;
    let mut host = RealHost { settings };
    runner::run_loop(
        &mut screen.terminal,
        app,
        EventStream::new(),
        game,
        &mut host,
        stop_signal(),
    )
    .await
}

/// The host of the real UI: the profile on disk and the real terminal.
struct RealHost<'a> {
    /// Where the profile is kept and what it holds.
    settings: &'a mut Settings,
}

impl Host for RealHost<'_> {
    fn remember(&mut self, event: &Event) {
        embed::remember(self.settings, event);
    }

    fn set_mouse_capture(&mut self, on: bool) -> io::Result<()> {
        terminal::set_mouse_capture(on)
    }

    fn write_to_terminal(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut out = io::stdout();
        out.write_all(bytes)?;
        out.flush()
    }

    fn show_outside(&mut self, text: &str) -> io::Result<()> {
        terminal::show_outside(text)
    }

    fn come_back(&mut self) -> io::Result<()> {
        terminal::come_back()
    }
}

/// Completes on SIGTERM or SIGHUP (terminal closed), so the UI leaves cleanly then too.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(mut term), Ok(mut hup)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = hup.recv() => {}
                }
            }
            _ => std::future::pending().await,
        }
    }
    #[cfg(not(unix))]
    std::future::pending::<()>().await
}
