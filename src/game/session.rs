//! A running game session for one player: takes [`Input`]s, sends [`Event`]s.
//!
//! The session owns what is only the player's view (the prompt, the running long action, the
//! last snapshot for news); everything else is in the replica. Instant commands are answered
//! here (`actions`); long ones run as background jobs (`jobs`) so input stays live; every
//! write goes through the player's mutation task (`player`). Between inputs it polls the
//! world for news (`news`) and keeps the heartbeat fresh.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::clock::{Clock, SystemClock};
use super::content::Content;
use super::ctx::Ctx;
use super::events::{Activity, Event, Input, Line, LineKind, Mode, Progress, Status};
use super::news::News;
use super::player::{Change, Outcome, PlayerHandle};
use super::tell::TellKey;
use super::watch::View;
use crate::rpc::{Kv, KvError};

/// How a session runs.
#[derive(Clone, Debug, Default)]
pub struct SessionOptions {
    /// The player's name, if already known (flag, profile or config); otherwise the session
    /// asks for one first (unless the replica already knows this player's name).
    pub name: Option<String>,
    /// Print story text without pauses (the plain front end, tests).
    pub no_pauses: bool,
    /// Seed for the random source; `None` seeds from the OS.
    pub seed: Option<u64>,
    /// The clock; `None` is the system clock. Tests pass an
    /// [`InstantClock`](super::clock::InstantClock).
    pub clock: Option<Arc<dyn Clock>>,
    /// The player id; `None` is the node's peer id (as `INFO` reports it). Tests use this to
    /// play several characters on one node.
    pub player_id: Option<String>,
    /// The rules and story; `None` is the embedded `assets/`.
    pub content: Option<Arc<Content>>,
    /// This node's key for private tells (`tell.key`); without one the player can send tells
    /// but not read them.
    pub tell_key: Option<Arc<TellKey>>,
    /// Addresses given with `--join`: their outcome is reported like `join`'s.
    pub joins: Vec<String>,
    /// Remembered addresses (`profile.ron`): joined quietly, so the front end can remember
    /// them again or forget them after a week of failures.
    pub remembered_peers: Vec<String>,
}

/// Starts a session on `kv`: send it [`Input`]s, receive [`Event`]s until [`Event::Quit`].
pub fn spawn<K: Kv>(
    kv: K,
    options: SessionOptions,
) -> (mpsc::Sender<Input>, mpsc::Receiver<Event>) {
    let (input_tx, input_rx) = mpsc::channel::<Input>(64);
    let (event_tx, event_rx) = mpsc::channel::<Event>(1024);
    tokio::spawn(async move {
        let mut session = match Session::start(kv, options, event_tx.clone()).await {
            Ok(session) => session,
            Err(err) => {
                let text = format!("Cannot reach the world: {err}");
                let _ = event_tx
                    .send(Event::Line(Line::new(LineKind::Error, text)))
                    .await;
                let _ = event_tx.send(Event::Quit).await;
                return;
            }
        };
        session.run(input_rx).await;
    });
    (input_tx, event_rx)
}

/// Which long action is running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum JobKind {
    /// `mine n`.
    Mining,
    /// `solve n` in a battle.
    Solving,
    /// Story text with pauses.
    Story,
}

/// How a job ended, for the session to act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum JobEnd {
    /// Nothing changes for the session.
    Finished,
    /// The battle is over (promotion, no hardware left, rank changed).
    BattleOver,
}

/// What jobs tell the session.
pub(super) enum JobMsg {
    /// Something changed; refresh the status.
    Refresh,
    /// Job `generation` ended.
    Done(u64, JobEnd),
}

/// A running long action.
pub(super) struct Job {
    /// Which kind.
    pub kind: JobKind,
    /// Numbers jobs so a late `Done` of an old one is recognised.
    pub generation: u64,
    /// Set to true to stop it.
    pub cancel: watch::Sender<bool>,
    /// The task.
    pub handle: JoinHandle<()>,
}

/// One player's session.
pub(super) struct Session<K> {
    /// Shared with jobs.
    pub ctx: Arc<Ctx<K>>,
    /// Current prompt.
    pub mode: Mode,
    /// The rank of the battle being fought, if any.
    pub battle_rank: Option<usize>,
    /// The epoch of the battle's problem last seen (0 before any), shared with battle jobs so
    /// the player hears when someone else finished the problem first.
    pub battle_epoch: Arc<AtomicU64>,
    /// The random source (jobs get their own, seeded from it).
    pub rng: StdRng,
    /// The running long action.
    pub job: Option<Job>,
    /// Generation of the next job.
    pub next_generation: u64,
    /// Jobs report here.
    pub job_tx: mpsc::Sender<JobMsg>,
    /// Reports from jobs (taken by the main loop).
    job_rx: Option<mpsc::Receiver<JobMsg>>,
    /// What the last look at the world found.
    pub news: News,
    /// The last status sent.
    pub last_status: Option<Status>,
    /// When the heartbeat was last written.
    last_heartbeat: Option<Instant>,
    /// Whether `quit` was typed.
    pub quitting: bool,
    /// The name from the options, used once.
    pub wanted_name: Option<String>,
    /// A name typed at the name prompt that another player uses: typed again, it is kept.
    pub taken_name: Option<String>,
    /// `--join` addresses and remembered ones, joined once the session runs.
    joins: (Vec<String>, Vec<String>),
    /// The tells that waited when the player came (`mail` reads them); `None` before the
    /// first look at the world. Tells beyond these are shown as they arrive.
    mailbox: Option<BTreeSet<(String, u64)>>,
}

impl<K: Kv> Session<K> {
    async fn start(
        kv: K,
        options: SessionOptions,
        events: mpsc::Sender<Event>,
    ) -> Result<Self, KvError> {
        let id = match options.player_id {
            Some(id) => id,
            None => kv
                .info()
                .await?
                .get("peer_id")
                .cloned()
                .filter(|id| !id.is_empty() && !id.contains('/'))
                .ok_or_else(|| KvError::Refused("INFO has no usable peer_id".into()))?,
        };
        let content = options.content.unwrap_or_else(Content::embedded);
        let joins = (options.joins, options.remembered_peers);
        let clock = options.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let view = View::start(kv.clone()).await?;
        view.set_player(&id);
        let player = PlayerHandle::spawn_with_view(
            kv.clone(),
            view.clone(),
            id.clone(),
            content.clone(),
            clock.clone(),
        );
        let rng = match options.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        let (job_tx, job_rx) = mpsc::channel(64);
        Ok(Session {
            ctx: Arc::new(Ctx {
                kv,
                id,
                content,
                player,
                clock,
                events,
                no_pauses: options.no_pauses,
                tell: options.tell_key,
                view,
            }),
            mode: Mode::Naming,
            battle_rank: None,
            battle_epoch: Arc::new(AtomicU64::new(0)),
            rng,
            job: None,
            next_generation: 0,
            job_tx,
            job_rx: Some(job_rx),
            news: News::default(),
            last_status: None,
            last_heartbeat: None,
            quitting: false,
            wanted_name: options.name,
            taken_name: None,
            mailbox: None,
            joins,
        })
    }

    async fn run(&mut self, mut inputs: mpsc::Receiver<Input>) {
        let (flags, remembered) = std::mem::take(&mut self.joins);
        if !flags.is_empty() || !remembered.is_empty() {
            super::social::join_at_start(self.ctx.clone(), flags, remembered);
        }
        self.greet().await;
        self.refresh_status().await;
        let Some(mut job_rx) = self.job_rx.take() else {
            return;
        };
        // The tick keeps the heartbeat, presence and node status current; changes to the world
        // are looked at as soon as the view has them.
        let mut tick = tokio::time::interval(Duration::from_millis(self.ctx.content.rules.poll_ms));
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut changes = self.ctx.view.changes();
        while !self.quitting {
            tokio::select! {
                input = inputs.recv() => match input {
                    Some(Input::Line(line)) => self.handle_line(&line).await,
                    Some(Input::Interrupt) => self.interrupt().await,
                    None => break,
                },
                Some(msg) = job_rx.recv() => self.job_msg(msg).await,
                _ = tick.tick() => self.poll().await,
                Ok(()) = changes.changed() => self.poll().await,
            }
            if !self.quitting {
                self.refresh_status().await;
            }
        }
        self.stop_job().await;
        self.ctx.send(Event::Quit).await;
    }

    async fn handle_line(&mut self, line: &str) {
        let line = line.trim();
        if line.is_empty() {
            return;
        }
        self.ctx.line(LineKind::Echo, line).await;
        if line.starts_with('#') {
            return; // A comment, for scripts fed to --plain.
        }
        if self.mode == Mode::Naming {
            self.naming_line(line).await;
        } else {
            self.command(line).await;
        }
    }

    /// Esc (or Enter during story text): stops the running job; nothing if none runs, since
    /// the key may race the end of the story it meant to skip.
    async fn interrupt(&mut self) {
        if let Some(job) = &self.job {
            let _ = job.cancel.send(true);
        }
    }

    async fn job_msg(&mut self, msg: JobMsg) {
        match msg {
            JobMsg::Refresh => {}
            JobMsg::Done(generation, end) => {
                // A job stopped by `stop_job` was already reported ended.
                if self.job.as_ref().is_none_or(|j| j.generation != generation) {
                    return;
                }
                self.job = None;
                if end == JobEnd::BattleOver && self.mode == Mode::Solving {
                    self.mode = Mode::Mining;
                    self.battle_rank = None;
                }
                // The status first, so a front end sees the new prompt when the job ends.
                self.refresh_status().await;
                self.ctx.send(Event::Progress(None)).await;
            }
        }
    }

    /// Looks at the world: news, heartbeat.
    async fn poll(&mut self) {
        if self.mode == Mode::Naming {
            return;
        }
        let heartbeat = Duration::from_secs(self.ctx.content.rules.presence.heartbeat_secs);
        if self
            .last_heartbeat
            .is_none_or(|at| at.elapsed() >= heartbeat)
        {
            self.last_heartbeat = Some(Instant::now());
            if let Err(err) = self
                .ctx
                .player
                .apply(super::player::Change::Heartbeat)
                .await
            {
                tracing::debug!(%err, "heartbeat failed");
            }
        }
        match self.news.look(&self.ctx).await {
            Ok(Some(lines)) => {
                for line in lines {
                    self.ctx.send(Event::Line(line)).await;
                }
            }
            Ok(None) => return, // Nothing changed since the last look.
            Err(err) => return tracing::debug!(%err, "polling the world failed"),
        }
        if let Err(err) = self.after_look().await {
            tracing::debug!(%err, "acting on the world's news failed");
        }
    }

    /// What the player's own task does about what a look found: takes a promotion earned by a
    /// share of a fallen problem, shows tells that arrived, deletes tells their recipients
    /// read.
    async fn after_look(&mut self) -> Result<(), KvError> {
        let Some(world) = self.news.world().cloned() else {
            return Ok(());
        };
        let unread = super::mail::unread(&self.ctx, &world);
        match &self.mailbox {
            None => {
                self.mailbox = Some(unread.iter().map(|t| (t.from.clone(), t.seq)).collect());
                if !unread.is_empty() {
                    let text = format!(
                        "{} tell{} came while you were away: type `mail` to read them.",
                        unread.len(),
                        if unread.len() == 1 { "" } else { "s" }
                    );
                    self.ctx.line(LineKind::Event, text).await;
                }
            }
            Some(mailbox) => {
                let live: Vec<_> = unread
                    .into_iter()
                    .filter(|t| !mailbox.contains(&(t.from.clone(), t.seq)))
                    .collect();
                for t in &live {
                    let line = super::mail::tell_line(t, super::events::ChatScope::Tell);
                    self.ctx.send(Event::Line(line)).await;
                }
                super::mail::mark_read(&self.ctx, &live).await?;
            }
        }
        if super::mail::read_by_recipients(&world, &self.ctx.id) {
            self.ctx.player.apply(Change::Tidy).await?;
        }
        let owed = super::ledger::owed_promotion(&self.ctx.content, &world, &self.ctx.id);
        if owed.is_some()
            && self.job.is_none()
            && let Outcome::Promoted { rank } = self.ctx.player.apply(Change::Claim).await?
        {
            if self.mode == Mode::Solving {
                self.mode = Mode::Mining;
                self.battle_rank = None;
            }
            let (_, mut cancel) = watch::channel(false);
            super::jobs::promoted(&self.ctx, rank, &mut cancel).await;
        }
        Ok(())
    }

    /// Sends a status snapshot if it changed.
    pub async fn refresh_status(&mut self) {
        let status = match self.news.status(&self.ctx, self.mode).await {
            Ok(Some(status)) => status,
            Ok(None) => return, // The same as last time.
            Err(err) => {
                tracing::debug!(%err, "status query failed");
                return;
            }
        };
        if self.last_status.as_ref() != Some(&status) {
            self.last_status = Some(status.clone());
            self.ctx.send(Event::Status(status)).await;
        }
    }

    /// Starts a long action. The `Progress` event is sent before the job runs, so a front end
    /// knows a job started before any of its output.
    pub async fn start_job<F, Fut>(&mut self, kind: JobKind, total: u64, body: F)
    where
        F: FnOnce(Arc<Ctx<K>>, StdRng, watch::Receiver<bool>, mpsc::Sender<JobMsg>) -> Fut,
        Fut: Future<Output = JobEnd> + Send + 'static,
    {
        self.finish_story().await;
        let activity = match kind {
            JobKind::Mining => Activity::Mining,
            JobKind::Solving => Activity::Solving,
            JobKind::Story => Activity::Story,
        };
        self.ctx
            .send(Event::Progress(Some(Progress {
                activity,
                done: 0,
                total,
            })))
            .await;
        let generation = self.next_generation;
        self.next_generation += 1;
        let (cancel, cancel_rx) = watch::channel(false);
        let rng = StdRng::seed_from_u64(self.rng.random());
        let future = body(self.ctx.clone(), rng, cancel_rx, self.job_tx.clone());
        let done_tx = self.job_tx.clone();
        let handle = tokio::spawn(async move {
            let end = future.await;
            let _ = done_tx.send(JobMsg::Done(generation, end)).await;
        });
        self.job = Some(Job {
            kind,
            generation,
            cancel,
            handle,
        });
    }

    /// If story text is still being told, tells the rest at once and waits for it.
    pub async fn finish_story(&mut self) {
        if self
            .job
            .as_ref()
            .is_some_and(|job| job.kind == JobKind::Story)
        {
            self.stop_job().await;
        }
    }

    /// Stops the running job, if any, and waits until it has.
    pub async fn stop_job(&mut self) {
        if let Some(job) = self.job.take() {
            let _ = job.cancel.send(true);
            let _ = job.handle.await;
            self.ctx.send(Event::Progress(None)).await;
        }
    }

    /// Tells story text: in the background with pauses, or at once without them.
    pub async fn tell(&mut self, lines: Vec<String>) {
        let busy = self
            .job
            .as_ref()
            .is_some_and(|job| job.kind != JobKind::Story);
        if self.ctx.no_pauses || lines.len() < 2 || busy {
            for text in lines {
                self.ctx.line(LineKind::Story, text).await;
            }
            return;
        }
        let total = lines.len() as u64;
        self.start_job(
            JobKind::Story,
            total,
            move |ctx, _, mut cancel, _| async move {
                ctx.story(&lines, &mut cancel, Some(Activity::Story)).await;
                JobEnd::Finished
            },
        )
        .await;
    }
}
