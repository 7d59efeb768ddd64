//! A running game session for one player: takes [`Input`]s, sends [`Event`]s.
//!
//! NOTE: placeholder until the game issue lands its rules behind this same signature; it only
//! echoes lines and understands `quit`, so front ends can be built and tested meanwhile.

use tokio::sync::mpsc;

use super::events::{Event, Input, Line, LineKind, Mode, Status};
use crate::rpc::Kv;

/// How a session runs.
#[derive(Clone, Debug, Default)]
pub struct SessionOptions {
    /// The player's name, if already known (flag, profile or config); otherwise the session
    /// asks for one first.
    pub name: Option<String>,
    /// Print story text without pauses (the plain front end, tests).
    pub no_pauses: bool,
    /// Seed for the random source; `None` seeds from the OS.
    pub seed: Option<u64>,
}

/// Starts a session on `kv`: send it [`Input`]s, receive [`Event`]s until [`Event::Quit`].
pub fn spawn<K: Kv>(
    kv: K,
    options: SessionOptions,
) -> (mpsc::Sender<Input>, mpsc::Receiver<Event>) {
    let (input_tx, mut input_rx) = mpsc::channel::<Input>(64);
    let (event_tx, event_rx) = mpsc::channel::<Event>(256);
    tokio::spawn(async move {
        let _kv = kv;
        let mut status = Status {
            mode: Mode::Naming,
            ..Status::default()
        };
        if let Some(name) = options.name {
            status.name = name;
            status.mode = Mode::Mining;
        }
        let _ = event_tx.send(Event::Status(status.clone())).await;
        while let Some(input) = input_rx.recv().await {
            let Input::Line(line) = input else { continue };
            if status.mode == Mode::Naming {
                status.name = line.trim().to_owned();
                status.mode = Mode::Mining;
                let _ = event_tx.send(Event::NameChosen(status.name.clone())).await;
                let _ = event_tx.send(Event::Status(status.clone())).await;
                continue;
            }
            if line.trim() == "quit" {
                let _ = event_tx.send(Event::Quit).await;
                break;
            }
            let _ = event_tx
                .send(Event::Line(Line::new(LineKind::Info, line)))
                .await;
        }
    });
    (input_tx, event_rx)
}
