//! Query actors: one OS thread each, owning a private [`Replica`] and serving the RPC
//! connections handed to it.
//!
//! Thread-per-actor on a current-thread tokio runtime: the replica lives in this thread only,
//! so a request touches it directly, with no lock and no channel hop. Actors talk to each
//! other and to the gateway only by messages: each flushes its first-hand Puts as soon as its
//! [`Pace`] allows (at once after a quiet spell, at most once per [`FLUSH_PERIOD`]), and only
//! when it has any.
//!
//! This file owns the actor loop and local sync; what a connection says is the RPC layer's
//! business (see [`ConnectionService`]).

use std::cell::{Cell, Ref, RefCell, RefMut};
use std::ops::{Deref, DerefMut};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::thread;
use std::time::Duration;

use bytes::BytesMut;
use futures::future::LocalBoxFuture;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::LocalSet;

use super::clock::wall_millis;
use super::entry::{Batch, Key, Version};
use super::gateway::GatewayHandle;
use super::log::LogWriter;
#[cfg(doc)]
use super::log::MAX_UNTRIMMED_BYTES;
use super::pace::{self, Pace};
use super::quota::OwnQuota;
use super::replica::Replica;
use super::stats::Stats;
use super::validate::{Limits, purge_horizon, purge_period};

/// The least gap between two flushes of an actor's first-hand Puts to the other local
/// participants (at most 10 messages per second per ordered pair); the first Put after a
/// quiet spell is flushed at once.
pub const FLUSH_PERIOD: Duration = Duration::from_millis(100);

/// How often an actor looks whether its log is due to be forced to disk or its tombstones due
/// to be purged, also while idle.
const HOUSEKEEPING_PERIOD: Duration = Duration::from_millis(250);

/// How often an actor held by backpressure looks again whether persistence caught up.
const HOLD_POLL: Duration = Duration::from_millis(5);

/// When this many of the node's entries wait for their signature at the gateway, actors hold
/// their writers until signing catches up (about a second of signing on one core): so the
/// backlog of unsigned entries stays bounded however fast clients write new keys.
pub const MAX_UNSIGNED_ENTRIES: u64 = 50_000;

/// A client connection moving to an actor, with whatever bytes were read but not yet handled.
#[derive(Debug)]
pub struct Handoff {
    /// The socket, in non-blocking mode.
    pub stream: std::net::TcpStream,
    /// Bytes read from the socket but not yet parsed (pipelined commands after `ACTOR n`).
    pub unread: BytesMut,
    /// The serving layer's own state of the connection (authentication, limits), opaque here.
    pub context: Box<dyn std::any::Any + Send>,
}

/// Messages an actor's mailbox takes.
#[derive(Debug)]
pub enum ToActor {
    /// Entries another participant accepted: merge them.
    Sync {
        /// The sender's participant index (an actor, or the gateway).
        from: usize,
        /// The entries.
        batch: Batch,
    },
    /// Entries the gateway evicted by their writers' quotas: drop each key's entry if it is
    /// that version's writer's and not newer.
    Evict(Arc<Vec<(Key, Version)>>),
    /// Serve this connection from now on.
    Connection(Handoff),
    /// Flush what is pending, then stop; the reply says the flush went out.
    Shutdown(oneshot::Sender<()>),
}

/// Serves RPC connections on an actor's thread. Implemented by the RPC layer.
pub trait ConnectionService: Send + Sync + 'static {
    /// Serves `conn` until it closes or moves to another actor.
    fn serve(&self, actor: Rc<Actor>, conn: Handoff) -> LocalBoxFuture<'static, ()>;

    /// Whether a connection on this thread wants to hear of merged changes.
    fn wants_changes(&self) -> bool {
        false
    }

    /// A merge on this actor set (`live`) or deleted `key`.
    fn changed(&self, _key: &[u8], _live: bool) {}
}

/// Mailboxes of every local participant, in participant order (actors, then the gateway).
#[derive(Clone, Debug)]
pub struct Mailboxes {
    /// One sender per query actor.
    pub actors: Vec<mpsc::UnboundedSender<ToActor>>,
    /// The gateway.
    pub gateway: GatewayHandle,
}

/// What a connection on an actor's thread may use: the replica and the way to other actors.
pub struct Actor {
    /// This actor's index, which is also its participant index.
    index: usize,
    /// The private replica. Borrowed only synchronously, never across an `.await`.
    replica: RefCell<Replica>,
    /// Wakes the actor's loop when first-hand Puts become pending, to flush them.
    wrote: Notify,
    /// Mailboxes of the other participants.
    mailboxes: Mailboxes,
    /// Node-wide counters; this actor writes only its own row.
    stats: Arc<Stats>,
    /// Key and value limits the RPC port enforces.
    limits: Limits,
    /// This actor's append-only log, written at every flush.
    log: RefCell<LogWriter>,
    /// When this actor last purged expired tombstones.
    last_purge: Cell<std::time::Instant>,
    /// This node's quota account, shared by all actors: writes are reserved in it first.
    own_quota: Arc<OwnQuota>,
}

impl Actor {
    /// This actor's index.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Number of query actors on this node.
    pub fn actors(&self) -> usize {
        self.mailboxes.actors.len()
    }

    /// Reads the replica. Do not hold the guard across an `.await`.
    pub fn replica(&self) -> Ref<'_, Replica> {
        self.replica.borrow()
    }

    /// Writes to the replica. Do not hold the guard across an `.await`; when it is dropped,
    /// new first-hand Puts are flushed as soon as the pace allows.
    pub fn replica_mut(&self) -> ReplicaMut<'_> {
        let replica = self.replica.borrow_mut();
        ReplicaMut {
            had_pending: replica.has_pending(),
            replica,
            wrote: &self.wrote,
        }
    }

    /// Counts `n` first-hand Puts.
    pub fn count_puts(&self, n: u64) {
        self.stats.senders[self.index]
            .puts
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// Node-wide counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Limits the RPC port enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// This node's quota account: reserve a command's writes in it before making them.
    pub fn own_quota(&self) -> &OwnQuota {
        &self.own_quota
    }

    /// Moves `conn` to actor `to`. Gives it back if there is no such actor or it has stopped.
    pub fn hand_off(&self, to: usize, conn: Handoff) -> Result<(), Handoff> {
        let Some(mailbox) = self.mailboxes.actors.get(to) else {
            return Err(conn);
        };
        mailbox
            .send(ToActor::Connection(conn))
            .map_err(|err| match err.0 {
                ToActor::Connection(conn) => conn,
                _ => unreachable!("send error returns the message that was sent"),
            })
    }

    /// Sends the first-hand Puts since the last flush to every other actor and the gateway,
    /// after appending them to the log.
    fn flush(&self) {
        // Bound first: the borrow must end before `hand_over` borrows the replica again (an
        // `if let` keeps its scrutinee's temporaries alive through the block).
        let pending = self.replica.borrow_mut().take_pending();
        if let Some(batch) = pending {
            self.hand_over(batch);
        }
        self.housekeeping();
        self.hold_while_persistence_lags();
        self.hold_while_signing_lags();
    }

    /// Forces the log to disk and purges expired tombstones when they are due.
    fn housekeeping(&self) {
        if let Err(err) = self.log.borrow_mut().tick() {
            tracing::error!(%err, "could not force the log to disk");
        }
        self.purge_if_due();
    }

    /// Appends the writes made so far to the log; the RPC layer awaits this before it sends
    /// acknowledgements, so nothing acknowledged is only in memory.
    ///
    /// The actor's other connections whose commands are ready run first (one yield), and one
    /// append then covers their writes too: with many clients each sending one SET at a
    /// time, one write to the log per round of connections rather than one per SET.
    pub async fn log_before_reply(&self) {
        if !self.replica.borrow().has_unlogged() {
            return;
        }
        tokio::task::yield_now().await;
        self.append_unlogged();
    }

    /// Appends the writes made since the last call to the log.
    fn append_unlogged(&self) {
        let unlogged = self.replica.borrow_mut().take_unlogged();
        if unlogged.is_empty() {
            return;
        }
        if let Err(err) = self.log.borrow_mut().write(&unlogged) {
            // redb still gets the entries; only a crash before its commit would lose them.
            tracing::error!(%err, "could not append to the log");
        }
    }

    /// Hands one flush's batch to every other actor and the gateway, with the log complete
    /// before it and a full log segment closed after it.
    fn hand_over(&self, batch: Batch) {
        self.append_unlogged();
        let bytes: usize = batch.iter().map(|(key, entry)| entry.wire_size(key)).sum();
        let row = &self.stats.senders[self.index];
        for (to, mailbox) in self.mailboxes.actors.iter().enumerate() {
            if to != self.index {
                let sync = ToActor::Sync {
                    from: self.index,
                    batch: batch.clone(),
                };
                // A closed mailbox means that actor is shutting down: nothing left to tell it.
                if mailbox.send(sync).is_ok() {
                    row.sent(to, bytes);
                }
            }
        }
        // Counted before it is sent: the gateway may sign it before this thread runs again.
        let unsigned = batch.len() as u64;
        self.stats.unsigned_entries.fetch_add(unsigned, Relaxed);
        if self.mailboxes.gateway.local_batch(self.index, batch) {
            row.sent(self.stats.gateway_index(), bytes);
        } else {
            self.stats.unsigned_entries.fetch_sub(unsigned, Relaxed);
        }
        match self.log.borrow_mut().rotate_if_full() {
            Ok(Some(segment)) => self.mailboxes.gateway.log_closed(self.index, segment),
            Ok(None) => {}
            Err(err) => tracing::error!(%err, "could not close a log segment"),
        }
    }

    /// Drops tombstones past the purge horizon, once per purge period.
    fn purge_if_due(&self) {
        if self.last_purge.get().elapsed() < purge_period(self.limits.tombstone_ttl) {
            return;
        }
        self.last_purge.set(std::time::Instant::now());
        let horizon = purge_horizon(wall_millis(), self.limits.tombstone_ttl);
        let purged = self.replica.borrow_mut().purge_expired(horizon);
        if purged > 0 {
            tracing::debug!(actor = self.index, purged, "purged expired tombstones");
        }
    }

    /// Backpressure: while the node's log holds more than [`MAX_UNTRIMMED_BYTES`] that redb
    /// has not committed, this actor (and so every connection on it) waits. Its own open
    /// segment is closed first, so that the wait always ends once redb catches up.
    fn hold_while_persistence_lags(&self) {
        if !self.log.borrow().backlogged() {
            return;
        }
        self.close_log();
        tracing::warn!("persistence is behind: holding writers until it catches up");
        while self.log.borrow().backlogged() {
            thread::sleep(HOLD_POLL);
        }
    }

    /// Backpressure: while more than [`MAX_UNSIGNED_ENTRIES`] of the node's entries wait for
    /// their signature, this actor (and so every connection on it) waits. What it handed over
    /// is already in the log and on its way to persistence, so the wait always ends.
    fn hold_while_signing_lags(&self) {
        let lagging = || self.stats.unsigned_entries.load(Relaxed) > MAX_UNSIGNED_ENTRIES;
        if !lagging() {
            return;
        }
        tracing::debug!("signing is behind: holding writers until it catches up");
        while lagging() {
            thread::sleep(HOLD_POLL);
        }
    }

    /// Closes the open log segment and says so behind this actor's batches.
    fn close_log(&self) {
        match self.log.borrow_mut().close() {
            Ok(Some(segment)) => self.mailboxes.gateway.log_closed(self.index, segment),
            Ok(None) => {}
            Err(err) => tracing::error!(%err, "could not close a log segment"),
        }
    }
}

/// A write borrow of an actor's replica. Dropping it wakes the actor's loop if it left
/// first-hand Puts pending where there were none (later ones join the flush already due).
pub struct ReplicaMut<'a> {
    /// The borrow.
    replica: RefMut<'a, Replica>,
    /// Whether Puts were pending already when the borrow began.
    had_pending: bool,
    /// The actor loop's wake-up.
    wrote: &'a Notify,
}

impl Deref for ReplicaMut<'_> {
    type Target = Replica;

    fn deref(&self) -> &Replica {
        &self.replica
    }
}

impl DerefMut for ReplicaMut<'_> {
    fn deref_mut(&mut self) -> &mut Replica {
        &mut self.replica
    }
}

impl Drop for ReplicaMut<'_> {
    fn drop(&mut self) {
        if !self.had_pending && self.replica.has_pending() {
            self.wrote.notify_one();
        }
    }
}

/// A running actor thread.
pub struct ActorThread {
    /// Joined on shutdown.
    join: thread::JoinHandle<()>,
}

impl ActorThread {
    /// Waits for the thread to end (after its mailbox got `Shutdown`).
    pub fn join(self) {
        if self.join.join().is_err() {
            tracing::error!("a query actor thread panicked");
        }
    }
}

/// Everything an actor thread starts with.
pub struct ActorSetup {
    /// The actor's index.
    pub index: usize,
    /// Its initial replica (loaded from disk).
    pub replica: Replica,
    /// Its append-only log.
    pub log: LogWriter,
    /// Its own mailbox.
    pub inbox: mpsc::UnboundedReceiver<ToActor>,
    /// Everyone's mailboxes.
    pub mailboxes: Mailboxes,
    /// Node-wide counters.
    pub stats: Arc<Stats>,
    /// Limits for the RPC port.
    pub limits: Limits,
    /// Serves connections handed to this actor.
    pub service: Arc<dyn ConnectionService>,
    /// This node's quota account, shared by all actors.
    pub own_quota: Arc<OwnQuota>,
}

/// Starts an actor on a thread of its own.
pub fn spawn(setup: ActorSetup) -> std::io::Result<ActorThread> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let join = thread::Builder::new()
        .name(format!("cmud-actor-{}", setup.index))
        .spawn(move || LocalSet::new().block_on(&runtime, run(setup)))?;
    Ok(ActorThread { join })
}

/// The keys `batch` will change in the actor's replica (newer than what it holds), and
/// whether each ends live.
fn changes_in<'a>(actor: &Actor, batch: &'a Batch) -> Vec<(&'a [u8], bool)> {
    let replica = actor.replica.borrow();
    batch
        .iter()
        .filter(|(key, entry)| replica.version(key).is_none_or(|held| held < entry.version))
        .map(|(key, entry)| (&key[..], entry.value.is_some()))
        .collect()
}

async fn run(setup: ActorSetup) {
    let ActorSetup {
        index,
        replica,
        log,
        mut inbox,
        mailboxes,
        stats,
        limits,
        service,
        own_quota,
    } = setup;
    let actor = Rc::new(Actor {
        index,
        replica: RefCell::new(replica),
        wrote: Notify::new(),
        mailboxes,
        stats,
        limits,
        log: RefCell::new(log),
        last_purge: Cell::new(std::time::Instant::now()),
        own_quota,
    });
    // One bucket stands for those of all this actor's ordered pairs: every flush goes to every
    // other participant at once, so their buckets would always be in the same state.
    let mut pace = Pace::new(FLUSH_PERIOD, std::time::Instant::now());
    let mut housekeeping = tokio::time::interval(HOUSEKEEPING_PERIOD);
    housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let due = actor
            .replica
            .borrow()
            .has_pending()
            .then(|| pace.ready_at(std::time::Instant::now()));
        tokio::select! {
            message = inbox.recv() => match message {
                Some(ToActor::Sync { batch, .. }) => {
                    let changes = service.wants_changes().then(|| changes_in(&actor, &batch));
                    actor.replica.borrow_mut().merge_batch(&batch);
                    for (key, live) in changes.into_iter().flatten() {
                        service.changed(key, live);
                    }
                }
                Some(ToActor::Evict(entries)) => {
                    let gone = actor.replica.borrow_mut().evict(&entries);
                    if service.wants_changes() {
                        for key in gone {
                            service.changed(&key, false);
                        }
                    }
                }
                Some(ToActor::Connection(conn)) => {
                    tokio::task::spawn_local(service.serve(actor.clone(), conn));
                }
                Some(ToActor::Shutdown(done)) => {
                    actor.flush();
                    actor.close_log();
                    let _ = done.send(());
                    break;
                }
                None => {
                    actor.flush();
                    actor.close_log();
                    break;
                }
            },

            // New Puts: go round again to see when they may go.
            () = actor.wrote.notified() => {}
            // Housekeeping while idle too: force the log to disk, purge old tombstones.
            _ = housekeeping.tick() => actor.housekeeping(),
            () = pace::until(due) => {
                if pace.try_take(std::time::Instant::now()) {
                    actor.flush();
                }
            }
        }
    }
}
