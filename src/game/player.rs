//! The player's single mutation task: every write to a player's own keys goes through it, one
//! change at a time, so a background `mine` and a typed `buy` never race on the player's
//! counters (each change is a read-modify-write of keys only this task writes).
//!
//! Owns the checks that guard coins (affordability, gifts) because they must be made in the
//! same step as the write. It does not format text: it answers with an [`Outcome`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::clock::Clock;
use super::content::Content;
use super::ledger;
use super::schema::{self, Scope, World, field};
use super::supports;
use super::watch::{View, Watched};
use crate::rpc::{Kv, KvError};

#[path = "player_books.rs"]
mod books;
#[path = "player_social.rs"]
mod social;

/// Changes queued before senders wait.
const MAILBOX: usize = 64;

/// How many units `buy` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Count {
    /// Exactly this many.
    Exactly(u64),
    /// As many as the balance allows.
    Max,
}

/// A change to the player's own state.
#[derive(Clone, Debug)]
pub enum Change {
    /// Creates the character if it does not exist; sets the name (and the public key tells
    /// are sealed to) either way.
    Enter {
        /// The display name.
        name: String,
        /// The tell key's public half, hex.
        tell_key: Option<String>,
    },
    /// Takes a promotion earned by a share of a fallen problem, if one is owed.
    Claim,
    /// Moves to a location id.
    Move(String),
    /// Adds mined coins.
    Mined(u64),
    /// Buys hardware.
    Buy {
        /// Hardware id.
        hw: String,
        /// How many.
        count: Count,
    },
    /// Gives coins to another player.
    Give {
        /// Recipient id.
        to: String,
        /// Coins.
        amount: u64,
    },
    /// One step of progress on the rank's problem with all the player's power.
    Work {
        /// The rank the battle is for; a player promoted meanwhile stops.
        rank: usize,
    },
    /// A breakdown: `pick` chooses among the kinds owned.
    Break {
        /// A random number.
        pick: u64,
    },
    /// Appends a line to the chat ring.
    Chat {
        /// Who hears it.
        scope: Scope,
        /// What is said.
        text: String,
    },
    /// Refreshes the heartbeat.
    Heartbeat,
    /// Records that the player quit (others see them leave at once).
    Leave,
    /// Leaves a note at a location.
    Note {
        /// The location id.
        loc: String,
        /// What it says.
        text: String,
    },
    /// Removes the player's notes at a location.
    Unnote {
        /// The location id.
        loc: String,
    },
    /// Stores a sealed tell for a player.
    Tell {
        /// Recipient id.
        to: String,
        /// The sealed tell (see `tell`).
        sealed: String,
    },
    /// Records that the player read a sender's tells up to `seq`.
    Read {
        /// Sender id.
        from: String,
        /// The highest seq read.
        seq: u64,
    },
    /// Deletes the player's tells their recipients have read.
    Tidy,
}

/// What a change did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done; nothing to report.
    Done,
    /// `Enter`: whether the character was new.
    Entered {
        /// True if it was created now.
        created: bool,
    },
    /// `Buy` succeeded.
    Bought {
        /// Units bought.
        units: u64,
        /// Coins paid.
        cost: u64,
    },
    /// `Buy` refused: the hardware is not sold at this rank.
    Locked,
    /// `Buy` or `Give` refused: not enough coins.
    Unaffordable {
        /// Coins needed (`None` if more than can be counted).
        needed: Option<u64>,
        /// Coins held.
        balance: u64,
    },
    /// `Give` succeeded.
    Gave,
    /// `Give` refused: the recipient has no character.
    NoSuchPlayer,
    /// `Work` made progress.
    Progress {
        /// The problem's epoch worked on.
        epoch: u64,
        /// Steps left.
        remaining: u64,
    },
    /// `Work` finished the problem, or `Work` or `Claim` took a promotion earned by a
    /// share of a problem someone else finished.
    Promoted {
        /// The new rank's index.
        rank: usize,
    },
    /// `Note` stored the note; `replaced` is the oldest note it took the place of.
    Noted {
        /// The note removed to stay within the cap.
        replaced: Option<super::schema::Note>,
    },
    /// `Unnote` removed this many notes.
    Unnoted(usize),
    /// `Work` refused: the player's rank is no longer the battle's, or has no problem.
    NotYourProblem,
    /// `Break` divided a kind.
    Broke {
        /// Hardware id.
        hw: String,
        /// Units before.
        before: u64,
        /// Units after.
        after: u64,
        /// Nothing was left: the player starts again on the start hardware.
        restarted: bool,
    },
}

/// A change and where its outcome goes.
struct Request {
    /// What to do.
    change: Change,
    /// Who waits for the outcome.
    reply: oneshot::Sender<Result<Outcome, KvError>>,
}

/// The way to a player's mutation task; cheap to clone. The task ends when every handle is
/// dropped.
#[derive(Clone)]
pub struct PlayerHandle {
    /// The task's mailbox.
    tx: mpsc::Sender<Request>,
}

impl PlayerHandle {
    /// Starts the task for player `id`, reading the world afresh at every change.
    pub fn spawn<K: Kv>(kv: K, id: String, content: Arc<Content>, clock: Arc<dyn Clock>) -> Self {
        Self::spawn_with_view(kv, View::polling(), id, content, clock)
    }

    /// Starts the task for player `id`, reading the world from `view` and applying its writes
    /// to it.
    pub fn spawn_with_view<K: Kv>(
        kv: K,
        view: View,
        id: String,
        content: Arc<Content>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let (tx, mut rx) = mpsc::channel::<Request>(MAILBOX);
        let mut task = PlayerTask {
            kv: Watched::new(kv, view.clone()),
            view,
            id,
            content,
            clock,
            floors: HashMap::new(),
        };
        tokio::spawn(async move {
            while let Some(request) = rx.recv().await {
                let outcome = task.apply(request.change).await;
                let _ = request.reply.send(outcome);
            }
        });
        PlayerHandle { tx }
    }

    /// Applies one change and waits for its outcome.
    pub async fn apply(&self, change: Change) -> Result<Outcome, KvError> {
        let (reply, rx) = oneshot::channel();
        let stopped = || KvError::Connection("the player task has stopped".into());
        self.tx
            .send(Request { change, reply })
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

/// The task's state: what it needs to read and write the player's keys.
struct PlayerTask<K> {
    /// The replica.
    kv: K,
    /// The world as this node holds it (the task's writes reach it through `kv`).
    view: View,
    /// The player's id (all writes are under `p/<id>/`).
    id: String,
    /// Prices, unlocks, problem sizes.
    content: Arc<Content>,
    /// Heartbeat and chat times.
    clock: Arc<dyn Clock>,
    /// The highest value this task wrote to each of its counters: a read of the replica can
    /// never take a counter backwards, even if it were stale.
    floors: HashMap<String, u64>,
}

impl<K: Kv> PlayerTask<K> {
    async fn world(&self) -> Result<Arc<World>, KvError> {
        self.view.world(&self.kv).await
    }

    async fn own(&self) -> Result<World, KvError> {
        Ok(World::from_pairs(
            self.kv.list(&schema::player_prefix(&self.id)).await?,
        ))
    }

    fn key(&self, field: &str) -> String {
        schema::key(&self.id, field)
    }

    /// A counter's value: what the replica says, never below what this task wrote.
    fn counter(&self, field: &str, read: u64) -> u64 {
        read.max(self.floors.get(field).copied().unwrap_or(0))
    }

    fn bump(&mut self, writes: &mut Vec<(String, String)>, field: &str, value: u64) {
        self.record(writes, field, value, value.to_string());
    }

    /// Like `bump`, with the counter's supports after it (`text` starts with `value`).
    fn record(
        &mut self,
        writes: &mut Vec<(String, String)>,
        field: &str,
        value: u64,
        text: String,
    ) {
        self.floors.insert(field.to_owned(), value);
        writes.push((self.key(field), text));
    }

    async fn apply(&mut self, change: Change) -> Result<Outcome, KvError> {
        match change {
            Change::Enter { name, tell_key } => self.enter(name, tell_key).await,
            Change::Claim => {
                let world = self.world().await?;
                self.claim(&world).await
            }
            Change::Move(loc) => {
                self.kv.put(&self.key(field::LOC), &loc).await?;
                Ok(Outcome::Done)
            }
            Change::Mined(coins) => {
                let me = self.own().await?.player(&self.id);
                let mined = self.counter(field::MINED, me.mined).saturating_add(coins);
                let mut writes = Vec::new();
                self.bump(&mut writes, field::MINED, mined);
                self.kv.put_many(&writes).await?;
                Ok(Outcome::Done)
            }
            Change::Buy { hw, count } => self.buy(&hw, count).await,
            Change::Give { to, amount } => self.give(to, amount).await,
            Change::Work { rank } => self.work(rank).await,
            Change::Break { pick } => self.breakdown(pick).await,
            Change::Chat { scope, text } => self.chat(scope, text).await,
            Change::Heartbeat => {
                let now = self.clock.now_ms().to_string();
                self.kv.put(&self.key(field::SEEN), &now).await?;
                Ok(Outcome::Done)
            }
            Change::Leave => {
                let now = self.clock.now_ms().to_string();
                self.kv.put(&self.key(field::LEFT), &now).await?;
                Ok(Outcome::Done)
            }
            Change::Note { loc, text } => self.note(loc, text).await,
            Change::Unnote { loc } => self.unnote(&loc).await,
            Change::Tell { to, sealed } => self.tell(to, sealed).await,
            Change::Read { from, seq } => self.read(from, seq).await,
            Change::Tidy => self.tidy().await,
        }
    }

    async fn enter(&mut self, name: String, tell_key: Option<String>) -> Result<Outcome, KvError> {
        let me = self.own().await?.player(&self.id);
        let rules = &self.content.rules;
        let mut writes = vec![
            (self.key(field::NAME), name),
            (self.key(field::SEEN), self.clock.now_ms().to_string()),
        ];
        if let Some(key) = tell_key.filter(|key| me.tell_key.as_ref() != Some(key)) {
            writes.push((self.key(field::TELL_KEY), key));
        }
        let created = !me.exists();
        if created {
            writes.push((self.key(field::RANK), rules.ranks[0].id.clone()));
            writes.push((self.key(field::LOC), rules.start_location.clone()));
            for (hw, units) in &rules.start_hardware {
                let value = supports::encode_hardware(*units, self.spent(&me));
                writes.push((self.key(&field::hardware(hw)), value));
            }
        }
        self.kv.put_many(&writes).await?;
        Ok(Outcome::Entered { created })
    }

    async fn buy(&mut self, hw: &str, count: Count) -> Result<Outcome, KvError> {
        let world = self.world().await?;
        let me = world.player(&self.id);
        let Some(hardware) = self.content.hardware(hw).cloned() else {
            return Ok(Outcome::Locked);
        };
        if !self
            .content
            .unlocked(&hardware, ledger::rank_index(&self.content, &me))
        {
            return Ok(Outcome::Locked);
        }
        let books = self.books(&world, &me);
        let balance = books.balance();
        let owned = me.hardware.get(&hardware.id).copied().unwrap_or(0);
        let spent = self.counter(field::SPENT, me.spent);
        // Neither counter may pass u64::MAX: a saturated `spent` would not count the whole
        // price (coins from nothing), a saturated count would lose units. Only a balance fed
        // by absurd gifts from peers comes near.
        let room = ((u64::MAX - spent) / hardware.price).min(u64::MAX - owned);
        let units = match count {
            Count::Exactly(n) => n,
            Count::Max => (balance / hardware.price).min(room),
        };
        let cost = units.checked_mul(hardware.price);
        if units == 0 || units > room || cost.is_none_or(|cost| cost > balance) {
            let needed = cost
                .filter(|_| units <= room)
                .map(|c| c.max(hardware.price));
            return Ok(Outcome::Unaffordable { needed, balance });
        }
        let cost = cost.unwrap_or(0);
        let hw_field = field::hardware(&hardware.id);
        let paid = spent + cost;
        let hw_value = supports::encode_hardware(owned + units, paid);
        let mut writes = vec![(self.key(&hw_field), hw_value)];
        let text = books.spending(cost).encode(paid);
        self.record(&mut writes, field::SPENT, paid, text);
        self.kv.put_many(&writes).await?;
        Ok(Outcome::Bought { units, cost })
    }

    async fn give(&mut self, to: String, amount: u64) -> Result<Outcome, KvError> {
        let world = self.world().await?;
        if to == self.id || !world.player(&to).exists() {
            return Ok(Outcome::NoSuchPlayer);
        }
        let me = world.player(&self.id);
        let books = self.books(&world, &me);
        let balance = books.balance();
        if amount == 0 || amount > balance {
            return Ok(Outcome::Unaffordable {
                needed: Some(amount),
                balance,
            });
        }
        let gave_field = field::gave(&to);
        let already = me.gave.get(&to).copied().unwrap_or(0);
        // The counter may not pass u64::MAX: saturated, it would not count the whole gift.
        let Some(gave) = self.counter(&gave_field, already).checked_add(amount) else {
            return Ok(Outcome::Unaffordable {
                needed: None,
                balance,
            });
        };
        let mut writes = Vec::new();
        let text = books.spending(amount).encode(gave);
        self.record(&mut writes, &gave_field, gave, text);
        self.kv.put_many(&writes).await?;
        Ok(Outcome::Gave)
    }

    async fn work(&mut self, rank: usize) -> Result<Outcome, KvError> {
        let world = self.world().await?;
        let me = world.player(&self.id);
        if ledger::rank_index(&self.content, &me) != rank {
            return Ok(Outcome::NotYourProblem);
        }
        if let Outcome::Promoted { rank } = self.claim(&world).await? {
            return Ok(Outcome::Promoted { rank });
        }
        let Some(problem) = ledger::problem(&self.content, &world, rank) else {
            return Ok(Outcome::NotYourProblem);
        };
        let power = self
            .content
            .step_progress(ledger::power(&self.content, &me), problem.size);
        let work_field = field::work(&problem.rank, problem.epoch);
        let mine = me
            .work
            .get(&(problem.rank.clone(), problem.epoch))
            .copied()
            .unwrap_or(0);
        let mut writes = Vec::new();
        let total = self.counter(&work_field, mine).saturating_add(power);
        let text = self.work_record(&me, rank, total);
        self.record(&mut writes, &work_field, total, text);
        let remaining = problem.remaining().saturating_sub(power);
        let next = rank + 1;
        if remaining == 0 && next < self.content.rules.ranks.len() {
            writes.push((
                self.key(&field::solved(&problem.rank)),
                self.finished(&world, &problem, total),
            ));
            writes.push((self.key(field::RANK), self.content.rank(next).id.clone()));
            self.kv.put_many(&writes).await?;
            return Ok(Outcome::Promoted { rank: next });
        }
        self.kv.put_many(&writes).await?;
        Ok(Outcome::Progress {
            epoch: problem.epoch,
            remaining,
        })
    }

    async fn breakdown(&mut self, pick: u64) -> Result<Outcome, KvError> {
        let me = self.own().await?.player(&self.id);
        let owned: Vec<(&str, u64)> = self
            .content
            .rules
            .hardware
            .iter()
            .filter_map(|hw| Some((hw.id.as_str(), *me.hardware.get(&hw.id)?)))
            .filter(|(_, n)| *n > 0)
            .collect();
        let spent = self.spent(&me);
        if owned.is_empty() {
            return self.restart(String::new(), 0, spent).await;
        }
        let index = usize::try_from(pick % owned.len() as u64).unwrap_or(0);
        let (hw, before) = owned[index];
        let after = before / self.content.rules.solving.break_divisor;
        let left = owned
            .iter()
            .map(|&(id, n)| if id == hw { after } else { n })
            .fold(0u64, u64::saturating_add);
        if left == 0 {
            return self.restart(hw.to_owned(), before, spent).await;
        }
        let hw = hw.to_owned();
        let value = supports::encode_hardware(after, spent);
        self.kv
            .put(&self.key(&field::hardware(&hw)), &value)
            .await?;
        Ok(Outcome::Broke {
            hw,
            before,
            after,
            restarted: false,
        })
    }

    /// Nothing is left after breaking `hw` (empty if nothing was owned at all): the player
    /// starts again on the start hardware. Each record names the `spent` so far.
    async fn restart(&mut self, hw: String, before: u64, spent: u64) -> Result<Outcome, KvError> {
        let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
        if !hw.is_empty() {
            counts.insert(&hw, 0);
        }
        for (start, units) in &self.content.rules.start_hardware {
            counts.insert(start, *units);
        }
        let writes: Vec<(String, String)> = counts
            .into_iter()
            .map(|(id, n)| {
                let value = supports::encode_hardware(n, spent);
                (self.key(&field::hardware(id)), value)
            })
            .collect();
        self.kv.put_many(&writes).await?;
        Ok(Outcome::Broke {
            hw,
            before,
            after: 0,
            restarted: true,
        })
    }
}
