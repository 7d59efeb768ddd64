//! Long actions that run in the background while input stays live: `mine n`, and the problem
//! battle (`solve` to enter, `solve n` to compute, `resign`, `stop`). Each attempt or step
//! waits a random time on the game's clock and can be interrupted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;
use tokio::sync::{mpsc, watch};

use super::commands;
use super::content::Content;
use super::ctx::Ctx;
use super::events::{Activity, Detail, Event, Line, LineKind, Mined, Mode, Progress};
use super::ledger;
use super::player::{Change, Outcome};
use super::schema::World;
use super::session::{JobEnd, JobKind, JobMsg, Session};
use crate::rpc::Kv;

impl<K: Kv> Session<K> {
    /// Refuses a second long action while one runs; story text is cut short instead.
    async fn busy(&mut self) -> bool {
        self.finish_story().await;
        if self.job.as_ref().is_some_and(|job| *job.cancel.borrow()) {
            // Already told to stop: let it finish rather than refuse.
            self.stop_job().await;
        }
        let Some(job) = &self.job else { return false };
        let what = match job.kind {
            JobKind::Mining => "mining",
            _ => "computing",
        };
        let text = format!("You are busy {what}: wait, or type `stop` (Esc) first.");
        self.ctx.line(LineKind::Error, text).await;
        true
    }

    /// `mine [n]`.
    pub(super) async fn mine(&mut self, rest: &str) {
        let max = self.ctx.content.rules.mining.max_attempts;
        let attempts = match commands::count_or_one(rest, "The number of attempts", max) {
            Ok(n) => n,
            Err(why) => return self.ctx.line(LineKind::Error, why).await,
        };
        if self.busy().await {
            return;
        }
        self.start_job(JobKind::Mining, attempts, move |ctx, rng, cancel, tx| {
            mine(ctx, rng, cancel, tx, attempts)
        })
        .await;
    }

    /// `solve`: enters the battle at the main prompt, computes `n` steps inside it.
    pub(super) async fn solve(&mut self, rest: &str) {
        if self.mode == Mode::Solving {
            return self.compute(rest).await;
        }
        if !rest.is_empty() {
            let text = "Type `solve` to start the battle, then `solve [n]` inside it.";
            return self.ctx.line(LineKind::Error, text).await;
        }
        if self.busy().await {
            return;
        }
        let world = match self.world().await {
            Ok(world) => world,
            Err(err) => return self.ctx.kv_error(&err).await,
        };
        let content = self.ctx.content.clone();
        let rank = self.my_rank(&world);
        let Some(problem) = ledger::problem(&content, &world, rank) else {
            return self.tell(content.story.retired.clone()).await;
        };
        self.mode = Mode::Solving;
        self.battle_rank = Some(rank);
        self.battle_epoch.store(problem.epoch, Ordering::Relaxed);
        let mut lines = content
            .story
            .problems
            .get(&problem.rank)
            .cloned()
            .unwrap_or_default();
        lines.push(format!(
            "The problem has {} remaining steps. `solve [n]` computes, `resign` gives up.",
            problem.remaining()
        ));
        self.tell(lines).await;
    }

    async fn compute(&mut self, rest: &str) {
        let max = self.ctx.content.rules.solving.max_steps;
        let steps = match commands::count_or_one(rest, "The number of steps", max) {
            Ok(n) => n,
            Err(why) => return self.ctx.line(LineKind::Error, why).await,
        };
        if self.busy().await {
            return;
        }
        let rank = self.battle_rank.unwrap_or(0);
        let epoch = self.battle_epoch.clone();
        self.start_job(JobKind::Solving, steps, move |ctx, rng, cancel, tx| {
            battle(ctx, rng, cancel, tx, (rank, epoch), steps)
        })
        .await;
    }

    /// `resign`: leaves the battle (stopping any step being computed).
    pub(super) async fn resign(&mut self) {
        self.stop_job().await;
        self.mode = Mode::Mining;
        self.battle_rank = None;
        let text = self.ctx.content.story.resign.clone();
        self.ctx.line(LineKind::Story, text).await;
    }

    /// `stop`: interrupts the running long action.
    pub(super) async fn stop(&mut self) {
        match &self.job {
            Some(job) => {
                let _ = job.cancel.send(true);
            }
            None => self.ctx.line(LineKind::Info, "Nothing to stop.").await,
        }
    }
}

async fn progress<K: Kv>(ctx: &Ctx<K>, activity: Activity, done: u64, total: u64) {
    let progress = Progress {
        activity,
        done,
        total,
    };
    ctx.send(Event::Progress(Some(progress))).await;
}

/// Asks the session to refresh the status. Only a hint, dropped when the session is behind,
/// and never in the last free slot: the job's `Done` needs it, and a session stopping the job
/// waits for the job to end while the job would wait for that slot (a hang).
fn refresh(tx: &mpsc::Sender<JobMsg>) {
    if tx.capacity() > 1 {
        let _ = tx.try_send(JobMsg::Refresh);
    }
}

fn random_pause(rng: &mut StdRng, max_ms: u64) -> Duration {
    Duration::from_millis(rng.random_range(0..=max_ms))
}

async fn my_power<K: Kv>(ctx: &Ctx<K>) -> Option<u64> {
    let pairs = ctx
        .kv
        .list(&super::schema::player_prefix(&ctx.id))
        .await
        .ok()?;
    Some(ledger::power(
        &ctx.content,
        &World::from_pairs(pairs).player(&ctx.id),
    ))
}

async fn mine<K: Kv>(
    ctx: Arc<Ctx<K>>,
    mut rng: StdRng,
    mut cancel: watch::Receiver<bool>,
    tx: mpsc::Sender<JobMsg>,
    attempts: u64,
) -> JobEnd {
    let rules = &ctx.content.rules;
    let mut run = Mined {
        coins: 0,
        attempts: 0,
        asked: attempts,
        empty: 0,
    };
    for i in 1..=attempts {
        let pause = random_pause(&mut rng, rules.mining.max_attempt_ms);
        if !ctx.pause(pause, &mut cancel).await {
            break;
        }
        let success = rng.random_range(0..100) < rules.mining.success_percent;
        let power = my_power(&ctx).await.unwrap_or(0);
        if success && power > 0 {
            let coins = rng.random_range(1..=power);
            if let Err(err) = ctx.player.apply(Change::Mined(coins)).await {
                ctx.kv_error(&err).await;
                break;
            }
            run.coins = run.coins.saturating_add(coins);
        } else {
            run.empty += 1;
        }
        run.attempts = i;
        refresh(&tx);
        progress(&ctx, Activity::Mining, i, attempts).await;
    }
    ctx.send(Event::Line(mined_line(&ctx.content, run))).await;
    JobEnd::Finished
}

/// The one line a `mine` run ends with.
fn mined_line(content: &Content, run: Mined) -> Line {
    let empty = match run.empty {
        0 => String::new(),
        1 => ", 1 came up empty".to_owned(),
        n => format!(", {n} came up empty"),
    };
    let tries = if run.attempts == 1 {
        "attempt"
    } else {
        "attempts"
    };
    let text = if run.attempts < run.asked {
        format!(
            "Mining stopped after {} of {} attempts: mined {}{empty}.",
            run.attempts,
            run.asked,
            content.coins(run.coins)
        )
    } else {
        format!(
            "Mined {} in {} {tries}{empty}.",
            content.coins(run.coins),
            run.attempts
        )
    };
    Line::about(LineKind::Event, text, Detail::Mined(run))
}

/// What one battle step rolled.
enum Roll {
    Progress,
    Break,
    Stuck,
}

fn roll(rng: &mut StdRng, content: &Content) -> Roll {
    let solving = &content.rules.solving;
    let roll = rng.random_range(0..100);
    if roll < solving.progress_percent {
        Roll::Progress
    } else if roll
        < solving
            .progress_percent
            .saturating_add(solving.break_percent)
    {
        Roll::Break
    } else {
        Roll::Stuck
    }
}

async fn battle<K: Kv>(
    ctx: Arc<Ctx<K>>,
    mut rng: StdRng,
    mut cancel: watch::Receiver<bool>,
    tx: mpsc::Sender<JobMsg>,
    (rank, epoch): (usize, Arc<AtomicU64>),
    steps: u64,
) -> JobEnd {
    for i in 1..=steps {
        ctx.line(LineKind::Event, "--- Computing problem... ---")
            .await;
        let pause = random_pause(&mut rng, ctx.content.rules.solving.max_step_ms);
        if !ctx.pause(pause, &mut cancel).await {
            let text = format!("Stopped after {} of {steps} steps.", i - 1);
            ctx.line(LineKind::Info, text).await;
            return JobEnd::Finished;
        }
        let change = match roll(&mut rng, &ctx.content) {
            Roll::Progress => Change::Work { rank },
            Roll::Break => Change::Break { pick: rng.random() },
            Roll::Stuck => {
                ctx.line(LineKind::Event, ctx.content.story.stuck.clone())
                    .await;
                progress(&ctx, Activity::Solving, i, steps).await;
                continue;
            }
        };
        let outcome = match ctx.player.apply(change).await {
            Ok(outcome) => outcome,
            Err(err) => {
                ctx.kv_error(&err).await;
                return JobEnd::Finished;
            }
        };
        refresh(&tx);
        if let Some(end) = report_step(&ctx, outcome, &epoch, &mut cancel).await {
            return end;
        }
        progress(&ctx, Activity::Solving, i, steps).await;
    }
    JobEnd::Finished
}

/// Tells what a step did; `Some` ends the battle.
async fn report_step<K: Kv>(
    ctx: &Ctx<K>,
    outcome: Outcome,
    epoch: &AtomicU64,
    cancel: &mut watch::Receiver<bool>,
) -> Option<JobEnd> {
    let content = &ctx.content;
    match outcome {
        Outcome::Progress {
            epoch: now,
            remaining,
        } => {
            let before = epoch.swap(now, Ordering::Relaxed);
            if before != 0 && before != now {
                let text = "Someone else finished this problem first: it starts over.";
                ctx.line(LineKind::Event, text).await;
            }
            let text = format!("The problem has {remaining} remaining steps.");
            ctx.line(LineKind::Event, text).await;
            None
        }
        Outcome::Promoted { rank } => {
            promoted(ctx, rank, cancel).await;
            Some(JobEnd::BattleOver)
        }
        Outcome::Broke {
            hw,
            before,
            after,
            restarted,
        } => {
            if !hw.is_empty() {
                let name = content
                    .hardware(&hw)
                    .map_or(hw.as_str(), |h| h.name.as_str());
                let text =
                    format!("Disaster! Your {name} overheat: {after} of {before} still work.");
                ctx.line(LineKind::Event, text).await;
            }
            if restarted {
                ctx.story(&content.story.out_of_hardware, cancel, None)
                    .await;
                return Some(JobEnd::BattleOver);
            }
            None
        }
        _ => {
            let text = "Your rank has changed: this battle is over.";
            ctx.line(LineKind::Event, text).await;
            Some(JobEnd::BattleOver)
        }
    }
}

/// Tells a promotion to rank `rank`.
pub(super) async fn promoted<K: Kv>(ctx: &Ctx<K>, rank: usize, cancel: &mut watch::Receiver<bool>) {
    let content = &ctx.content;
    let new_rank = content.rank(rank).id.clone();
    ctx.line(LineKind::Event, format!("--- Promoted to {new_rank}! ---"))
        .await;
    let lines = content
        .story
        .promotions
        .get(&new_rank)
        .cloned()
        .unwrap_or_default();
    ctx.story(&lines, cancel, None).await;
    let unlocks = content
        .rules
        .hardware
        .iter()
        .any(|hw| hw.unlocked_at == new_rank);
    if unlocks {
        ctx.line(LineKind::Story, content.story.new_machines.clone())
            .await;
    }
}
