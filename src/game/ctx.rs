//! What a session shares with its background jobs: the replica, the player's identity and
//! mutation task, the content, the clock and the way to the front end, with the small output
//! helpers every command uses (lines, errors in words a player understands, pauses, story).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::clock::Clock;
use super::content::Content;
use super::events::{Activity, Event, Line, LineKind, Progress};
use super::player::PlayerHandle;
use crate::rpc::{Kv, KvError};

/// What sessions and their jobs share.
pub struct Ctx<K> {
    /// The replica.
    pub kv: K,
    /// This player's id.
    pub id: String,
    /// Rules and story.
    pub content: Arc<Content>,
    /// The player's mutation task.
    pub player: PlayerHandle,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Where output goes.
    pub events: mpsc::Sender<Event>,
    /// Whether story text runs without pauses.
    pub no_pauses: bool,
    /// This node's key for reading tells, if it has one.
    pub tell: Option<Arc<super::tell::TellKey>>,
    /// The session's view of the world.
    pub view: super::watch::View,
}

impl<K: Kv> Ctx<K> {
    /// Sends a line of output (a gone front end is not an error: the session just ends).
    pub async fn line(&self, kind: LineKind, text: impl Into<String>) {
        let _ = self.events.send(Event::Line(Line::new(kind, text))).await;
    }

    /// Sends a line of output as a command's whole answer.
    pub async fn reply(&self, kind: LineKind, text: impl Into<String>) -> Result<(), KvError> {
        self.line(kind, text).await;
        Ok(())
    }

    /// Sends any event.
    pub async fn send(&self, event: Event) {
        let _ = self.events.send(event).await;
    }

    /// Reports a failed query in words a player understands.
    pub async fn kv_error(&self, err: &KvError) {
        let text = match err {
            KvError::Connection(_) => format!("The world is unreachable right now ({err})."),
            _ => format!("The world refused that ({err})."),
        };
        self.line(LineKind::Error, text).await;
    }

    /// Waits out a pause unless cancelled; returns whether it ran to the end.
    pub async fn pause(&self, duration: Duration, cancel: &mut watch::Receiver<bool>) -> bool {
        if *cancel.borrow() {
            return false;
        }
        tokio::select! {
            () = self.clock.pause(duration) => true,
            _ = cancel.wait_for(|stop| *stop) => false,
        }
    }

    /// Tells the story: lines with a pause after each, or all at once if pauses are off or the
    /// player skips (cancel). With a `progress` label, progress is reported line by line.
    pub async fn story(
        &self,
        lines: &[String],
        cancel: &mut watch::Receiver<bool>,
        progress: Option<Activity>,
    ) {
        let pause = Duration::from_millis(self.content.rules.story_pause_ms);
        for (i, text) in lines.iter().enumerate() {
            self.line(LineKind::Story, text.clone()).await;
            if let Some(activity) = progress {
                let progress = Progress {
                    activity,
                    done: i as u64 + 1,
                    total: lines.len() as u64,
                };
                self.send(Event::Progress(Some(progress))).await;
            }
            if !self.no_pauses && i + 1 < lines.len() {
                self.pause(pause, cancel).await;
            }
        }
    }
}
