//! The gateway: this node's one bridge between its local actors and the world, and a full
//! replica of its own.
//!
//! Local actors hand it their flushed batches (already in their logs); it has them signed,
//! keeps them, passes them to the persist actor and queues them for the network, which gets
//! at most one batch per [`FLUSH_PERIOD`]. Local entries are signed here, once per entry that
//! survives an actor's flush, off the RPC request path and off the gateway's own task: on
//! blocking threads, a large batch split over the cores, then merged into the replica,
//! persisted and published (actors hold their writers while too many wait, see
//! `actor::MAX_UNSIGNED_ENTRIES`). An actor's closed log segment is passed on to persistence,
//! which trims it after its next commit, only once every batch before it was signed and
//! handed over. Batches from peers are
//! validated entry by entry (`validate::check_remote`, on blocking threads, since signatures
//! are the costly part), merged, and coalesced into at most one message per period to each
//! local actor and to the persist actor, however many peers publish. Both directions are paced
//! by a [`Pace`]: the first batch after a quiet spell goes at once, what follows within the
//! period waits for the next. Bootstrap and anti-entropy read the gateway's copy
//! ([`GatewayHandle::query`]), never a query actor's, so a peer's sync never stalls a player.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::actor::{FLUSH_PERIOD, ToActor};
use super::clock::wall_millis;
use super::closes::CloseOrder;
use super::entry::{Batch, Entry, Key, KeyedEntry, Merged, NodeId, Version};
use super::indexed::IndexedMap;
use super::pace::{self, Pace};
use super::persist::PersistHandle;
use super::quota::Quota;
use super::sign::Signer;
use super::stats::Stats;
use super::validate::{Checked, Limits, check_remote, purge_horizon, purge_period};

/// Fewest entries of a peer's delivery checked on one blocking thread; a larger delivery is
/// split evenly over the cores so that every core verifies signatures.
const MIN_CHECK_CHUNK_ENTRIES: usize = 256;

/// Fewest entries of a local batch signed on one blocking thread; a larger batch is split
/// evenly over the cores.
const MIN_SIGN_CHUNK_ENTRIES: usize = 256;

/// A delivery whose entries have been checked, with whoever waits for the merge.
type CheckedDelivery = (Checked, Option<oneshot::Sender<RemoteMerge>>);

/// A local batch back from signing.
struct SignedBatch {
    /// Its number in the order local batches were handed over (see [`CloseOrder`]).
    seq: u64,
    /// Its entries, signed.
    signed: Vec<KeyedEntry>,
    /// Entries of a chunk whose signing failed (a bug): persisted as they are, and signed at
    /// the next start like any unsigned entry of this node found on disk.
    unsigned: Vec<KeyedEntry>,
    /// Number of entries handed over for signing.
    handed: usize,
}

/// A read of the gateway's replica (entries and range fingerprints), run on the gateway task.
pub type Query = Box<dyn FnOnce(&IndexedMap) + Send>;

/// Messages the gateway's mailbox takes.
pub enum ToGateway {
    /// A local actor's flushed first-hand Puts.
    Local {
        /// The actor's index.
        from: usize,
        /// Its entries.
        batch: Batch,
    },
    /// A local actor closed a segment of its log after handing over the batches in it: passed
    /// on to persistence behind those batches, which may then trim it.
    LogClosed {
        /// The actor's index.
        from: usize,
        /// The segment closed.
        segment: u64,
    },
    /// Entries received from a peer, not yet validated.
    Remote {
        /// The entries.
        entries: Vec<KeyedEntry>,
        /// Told how many entries changed this replica, if anyone asks.
        merged: Option<oneshot::Sender<RemoteMerge>>,
    },
    /// Runs a read over the gateway's replica (reconciliation).
    Query(Query),
    /// Flushes everything pending to actors, persistence and the network, then stops.
    Shutdown(oneshot::Sender<()>),
}

/// What merging a peer's entries did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RemoteMerge {
    /// Entries that changed this replica.
    pub changed: usize,
    /// Entries skipped because they are in the future (fetched again later).
    pub future: usize,
    /// Entries dropped as invalid (limits, namespace, signature).
    pub invalid: usize,
    /// Of those, entries whose signature was missing or bad.
    pub bad_signatures: usize,
    /// Entries of writers past their quota, turned away.
    pub over_quota: usize,
    /// Entries admitted before and pushed out now by an earlier key of the same writer.
    pub evicted: usize,
}

/// The way to the gateway; cheap to clone.
#[derive(Clone, Debug)]
pub struct GatewayHandle {
    /// The gateway's mailbox.
    tx: mpsc::UnboundedSender<ToGateway>,
}

impl std::fmt::Debug for ToGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ToGateway::Local { from, batch } => write!(f, "Local({from}, {} entries)", batch.len()),
            ToGateway::LogClosed { from, segment } => write!(f, "LogClosed({from}, {segment})"),
            ToGateway::Remote { entries, .. } => write!(f, "Remote({} entries)", entries.len()),
            ToGateway::Query(_) => f.write_str("Query"),
            ToGateway::Shutdown(_) => f.write_str("Shutdown"),
        }
    }
}

impl GatewayHandle {
    /// Hands over a local actor's batch. Returns false if the gateway has stopped.
    pub fn local_batch(&self, from: usize, batch: Batch) -> bool {
        self.tx.send(ToGateway::Local { from, batch }).is_ok()
    }

    /// Says that actor `from` closed log segment `segment` after its last batch in it.
    pub fn log_closed(&self, from: usize, segment: u64) {
        let _ = self.tx.send(ToGateway::LogClosed { from, segment });
    }

    /// Hands over entries from a peer and waits until they are merged into the gateway's
    /// replica (they reach the actors within one more flush period).
    pub async fn remote_entries(&self, entries: Vec<KeyedEntry>) -> Option<RemoteMerge> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(ToGateway::Remote {
                entries,
                merged: Some(tx),
            })
            .ok()?;
        rx.await.ok()
    }

    /// Runs `read` over the gateway's replica and returns its answer (`None` if the gateway
    /// has stopped). Keep reads short: the gateway does nothing else meanwhile.
    pub async fn query<T: Send + 'static>(
        &self,
        read: impl FnOnce(&IndexedMap) -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        let query: Query = Box::new(move |map| {
            let _ = tx.send(read(map));
        });
        self.tx.send(ToGateway::Query(query)).ok()?;
        rx.await.ok()
    }

    /// Flushes and stops the gateway.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(ToGateway::Shutdown(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// Creates the gateway's mailbox; [`run`] consumes the receiving end.
pub fn channel() -> (GatewayHandle, mpsc::UnboundedReceiver<ToGateway>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (GatewayHandle { tx }, rx)
}

/// Everything the gateway task starts with.
pub struct GatewaySetup {
    /// Its initial replica (loaded from disk).
    pub map: BTreeMap<Key, Entry>,
    /// Its mailbox.
    pub inbox: mpsc::UnboundedReceiver<ToGateway>,
    /// The query actors' mailboxes.
    pub actors: Vec<mpsc::UnboundedSender<ToActor>>,
    /// The persist actor.
    pub persist: PersistHandle,
    /// Where batches for the world go (the network task), if there is a network.
    pub outbound: Option<mpsc::Sender<Batch>>,
    /// Validation limits for peers' entries.
    pub limits: Limits,
    /// Signs this node's entries (and names the world peers' entries must be signed for).
    pub signer: Arc<Signer>,
    /// Every writer's quota account, built from `map`.
    pub quota: Quota,
    /// Node-wide counters.
    pub stats: Arc<Stats>,
}

struct Gateway {
    /// The gateway's full replica, with the range fingerprints reconciliation reads.
    map: IndexedMap,
    /// Remote entries merged since the last flush to actors, latest per key.
    inbound: HashMap<Key, Entry>,
    /// Entries evicted by their writer's quota since the last flush to actors: each key's
    /// entries by that writer up to that version go.
    evicted: Vec<(Key, Version)>,
    /// Every writer's quota account.
    quota: Quota,
    /// Local entries not yet published to the world, latest per key.
    unpublished: HashMap<Key, Entry>,
    /// The query actors' mailboxes.
    actors: Vec<mpsc::UnboundedSender<ToActor>>,
    /// The persist actor.
    persist: PersistHandle,
    /// The network task's inbox, while there is one.
    network: Option<mpsc::Sender<Batch>>,
    /// Validation limits for peers' entries.
    limits: Limits,
    /// Signs this node's entries.
    signer: Arc<Signer>,
    /// Node-wide counters.
    stats: Arc<Stats>,
    /// When the gateway last purged expired tombstones.
    last_purge: std::time::Instant,
    /// Where checks running on blocking threads hand their deliveries back.
    checked_tx: mpsc::UnboundedSender<CheckedDelivery>,
    /// Where signing on blocking threads hands local batches back.
    signed_tx: mpsc::UnboundedSender<SignedBatch>,
    /// Local batches out for signing, and the log closes that wait for them.
    closes: CloseOrder,
    /// The budget of messages to the actors: one bucket for every gateway -> actor pair, since
    /// each message goes to all of them at once.
    to_actors: Pace,
    /// The budget of batches published to the world.
    to_network: Pace,
}

/// Runs the gateway until `Shutdown` or until every handle is dropped.
pub async fn run(setup: GatewaySetup) {
    let GatewaySetup {
        map,
        mut inbox,
        actors,
        persist,
        outbound,
        limits,
        signer,
        quota,
        stats,
    } = setup;
    let (checked_tx, mut checked_rx) = mpsc::unbounded_channel();
    let (signed_tx, mut signed_rx) = mpsc::unbounded_channel();
    let now = std::time::Instant::now();
    let mut gateway = Gateway {
        map: IndexedMap::new(map),
        inbound: HashMap::new(),
        evicted: Vec::new(),
        quota,
        unpublished: HashMap::new(),
        actors,
        persist,
        network: outbound,
        limits,
        signer,
        stats,
        last_purge: std::time::Instant::now(),
        checked_tx,
        signed_tx,
        closes: CloseOrder::default(),
        to_actors: Pace::new(FLUSH_PERIOD, now),
        to_network: Pace::new(FLUSH_PERIOD, now),
    };
    let purge_every = purge_period(gateway.limits.tombstone_ttl);
    let mut purge_tick =
        tokio::time::interval_at(tokio::time::Instant::now() + purge_every, purge_every);
    purge_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let due = gateway.due(std::time::Instant::now());
        tokio::select! {
            message = inbox.recv() => match message {
                Some(ToGateway::Local { batch, .. }) => gateway.local(batch),
                Some(ToGateway::LogClosed { from, segment }) => {
                    gateway.log_closed(from, segment)
                }
                Some(ToGateway::Remote { entries, merged }) => gateway.check(entries, merged),
                Some(ToGateway::Query(read)) => read(&gateway.map),
                Some(ToGateway::Shutdown(done)) => {
                    gateway.finish_signing(&mut signed_rx).await;
                    gateway.flush().await;
                    let _ = done.send(());
                    break;
                }
                None => {
                    gateway.finish_signing(&mut signed_rx).await;
                    gateway.flush().await;
                    break;
                }
            },
            _ = purge_tick.tick() => gateway.purge_if_due(),
            Some(signed) = signed_rx.recv() => gateway.signed(signed),
            Some((checked, merged)) = checked_rx.recv() => {
                let report = gateway.remote(checked);
                if let Some(reply) = merged {
                    let _ = reply.send(report);
                }
            }
            () = pace::until(due) => gateway.flush_paced().await,
        }
    }
}

impl Gateway {
    /// Has a local actor's batch signed on blocking threads (chunks in parallel); it comes
    /// back through `signed_tx` to [`Gateway::signed`], which persists it. It is persisted
    /// only once signed (one redb write per entry, not an unsigned one and then its signed
    /// copy): until then the actor's log holds it, and the log is not trimmed before it is
    /// committed (see [`Gateway::log_closed`]).
    fn local(&mut self, batch: Batch) {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let chunk_entries = batch.len().div_ceil(cores).max(MIN_SIGN_CHUNK_ENTRIES);
        let chunks: Vec<_> = (0..batch.len())
            .step_by(chunk_entries)
            .map(|start| {
                let (batch, signer) = (batch.clone(), self.signer.clone());
                let end = (start + chunk_entries).min(batch.len());
                let task =
                    tokio::task::spawn_blocking(move || signer.sign_entries(&batch[start..end]));
                (start..end, task)
            })
            .collect();
        let seq = self.closes.handed_over();
        let back = self.signed_tx.clone();
        tokio::spawn(async move {
            let handed = batch.len();
            let mut signed = Vec::with_capacity(handed);
            let mut unsigned = Vec::new();
            for (range, chunk) in chunks {
                match chunk.await {
                    Ok(chunk) => signed.extend(chunk),
                    // A chunk that panicked is a bug; its entries are persisted unsigned and
                    // signed at the next start.
                    Err(_) => unsigned.extend_from_slice(&batch[range]),
                }
            }
            let _ = back.send(SignedBatch {
                seq,
                signed,
                unsigned,
                handed,
            });
        });
    }

    /// Keeps a signed local batch, persists it and queues it for the world.
    fn signed(&mut self, back: SignedBatch) {
        let SignedBatch {
            seq,
            signed,
            unsigned,
            handed,
        } = back;
        for (key, entry) in &signed {
            if self.map.merge(key.clone(), entry.clone()) != Merged::Unchanged
                && self.network.is_some()
            {
                self.unpublished.insert(key.clone(), entry.clone());
            }
        }
        self.persist.batch(Arc::new(signed));
        if !unsigned.is_empty() {
            self.persist.batch(Arc::new(unsigned));
        }
        for (actor, segment) in self.closes.returned(seq) {
            self.persist.log_closed(actor, segment);
        }
        let unsigned = &self.stats.unsigned_entries;
        let _ = unsigned.fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(handed as u64)));
    }

    /// Actor `from` closed log segment `segment` after handing over the batches in it: passed
    /// on to persistence (which may then trim it) once all of them are signed and persisted.
    fn log_closed(&mut self, from: usize, segment: u64) {
        for (actor, segment) in self.closes.closed((from, segment)) {
            self.persist.log_closed(actor, segment);
        }
    }

    /// Waits for every local batch being signed and keeps it (before the last flush).
    async fn finish_signing(&mut self, signed_rx: &mut mpsc::UnboundedReceiver<SignedBatch>) {
        while self.closes.signing() {
            // The gateway holds a sender itself, so this ends only by a batch coming back.
            let Some(signed) = signed_rx.recv().await else {
                break;
            };
            self.signed(signed);
        }
    }

    /// Drops tombstones past the purge horizon, once per purge period, and has persistence
    /// delete them too.
    fn purge_if_due(&mut self) {
        let ttl = self.limits.tombstone_ttl;
        if self.last_purge.elapsed() < purge_period(ttl) {
            return;
        }
        self.last_purge = std::time::Instant::now();
        let horizon = purge_horizon(wall_millis(), ttl);
        // This node's own deleted keys are released later than anyone else's: once every
        // replica (purging at least every period, clocks within the skew) released them too.
        let own_margin = self.limits.max_clock_skew + 2 * purge_period(ttl);
        let released = self.quota.release(
            horizon,
            u64::try_from(own_margin.as_millis()).unwrap_or(u64::MAX),
        );
        if released > 0 {
            tracing::debug!(released, "quota accounts released expired keys");
        }
        let expired: Vec<Key> = self
            .map
            .iter()
            .filter(|(_, stored)| stored.slot().is_expired_tombstone(horizon))
            .map(|(key, _)| Bytes::copy_from_slice(key))
            .collect();
        if expired.is_empty() {
            return;
        }
        self.map.remove_all(&expired);
        for key in &expired {
            self.inbound.remove(key);
            self.unpublished.remove(key);
        }
        tracing::debug!(purged = expired.len(), "purged expired tombstones");
        self.stats
            .tombstones_purged
            .fetch_add(expired.len() as u64, Relaxed);
        self.persist.purge(expired, horizon);
    }

    /// Checks a peer's entries on blocking threads (chunks in parallel); the outcome comes
    /// back through `checked_tx` and is merged by [`Gateway::remote`].
    fn check(&self, entries: Vec<KeyedEntry>, merged: Option<oneshot::Sender<RemoteMerge>>) {
        let now = wall_millis();
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let chunk_entries = entries.len().div_ceil(cores).max(MIN_CHECK_CHUNK_ENTRIES);
        let mut chunks = Vec::new();
        let mut entries = entries.into_iter().peekable();
        while entries.peek().is_some() {
            let chunk: Vec<KeyedEntry> = entries.by_ref().take(chunk_entries).collect();
            let world = self.signer.world().to_owned();
            let limits = self.limits;
            chunks.push(tokio::task::spawn_blocking(move || {
                check_remote(&world, chunk, now, &limits)
            }));
        }
        let back = self.checked_tx.clone();
        tokio::spawn(async move {
            let mut all = Checked::default();
            for chunk in chunks {
                // A check that panicked is a bug; its entries are dropped, never merged.
                let Ok(checked) = chunk.await else { continue };
                all.accepted.extend(checked.accepted);
                all.rejected.future += checked.rejected.future;
                all.rejected.malformed += checked.rejected.malformed;
                all.rejected.namespace += checked.rejected.namespace;
                all.rejected.signatures += checked.rejected.signatures;
            }
            let _ = back.send((all, merged));
        });
    }

    /// Merges checked entries from a peer and counts what was turned away.
    fn remote(&mut self, checked: Checked) -> RemoteMerge {
        let Checked { accepted, rejected } = checked;
        let mut report = RemoteMerge {
            future: rejected.future,
            invalid: rejected.invalid(),
            bad_signatures: rejected.signatures,
            ..RemoteMerge::default()
        };
        let stats = self.stats.clone();
        let remote = &stats.remote;
        let (mut over_quota, mut evicted) = (0, 0);
        for (key, entry) in accepted {
            let outcome = self.quota.admit(&key, &entry);
            for gone in outcome.evicted {
                self.evict(gone, entry.author());
                evicted += 1;
            }
            if !outcome.admitted {
                over_quota += 1;
                continue;
            }
            if self.map.merge(key.clone(), entry.clone()) != Merged::Unchanged {
                self.inbound.insert(key, entry);
                report.changed += 1;
            }
        }
        report.over_quota = over_quota;
        report.evicted = evicted;
        remote.rejected_quota.fetch_add(over_quota as u64, Relaxed);
        remote.evicted_quota.fetch_add(evicted as u64, Relaxed);
        remote
            .rejected_entries
            .fetch_add((over_quota + evicted) as u64, Relaxed);
        remote
            .rejected_versions
            .fetch_add(report.future as u64, Relaxed);
        remote
            .rejected_entries
            .fetch_add(report.invalid as u64, Relaxed);
        remote
            .rejected_signatures
            .fetch_add(rejected.signatures as u64, Relaxed);
        remote
            .rejected_namespaces
            .fetch_add(rejected.namespace as u64, Relaxed);
        report
    }

    /// Drops `writer`'s entry under `key`, evicted by its quota, here and (at the next flush)
    /// from the actors and persistence.
    fn evict(&mut self, key: Key, writer: &NodeId) {
        let Some(version) = self
            .map
            .get(&key)
            .filter(|held| held.author() == writer)
            .map(|held| held.version)
        else {
            // Another writer's newer entry holds the key: nothing of this writer is kept.
            return;
        };
        self.map.evict(&key, &version);
        self.inbound.remove(&key);
        self.evicted.push((key, version));
    }

    /// When something pending may go next, if anything is pending.
    fn due(&self, now: std::time::Instant) -> Option<std::time::Instant> {
        let to_actors = (!self.inbound.is_empty() || !self.evicted.is_empty())
            .then(|| self.to_actors.ready_at(now));
        let to_network = (!self.unpublished.is_empty() && self.network.is_some())
            .then(|| self.to_network.ready_at(now));
        to_actors.into_iter().chain(to_network).min()
    }

    /// Sends what is pending in each direction whose budget allows it now.
    async fn flush_paced(&mut self) {
        let now = std::time::Instant::now();
        if (!self.inbound.is_empty() || !self.evicted.is_empty()) && self.to_actors.try_take(now) {
            self.send_to_actors();
        }
        if !self.unpublished.is_empty() && self.network.is_some() && self.to_network.try_take(now) {
            self.publish().await;
        }
    }

    /// Sends everything pending, whatever the budget (on shutdown).
    async fn flush(&mut self) {
        self.send_to_actors();
        self.publish().await;
    }

    /// Hands the remote entries merged since the last time to every actor and to persistence.
    fn send_to_actors(&mut self) {
        if !self.inbound.is_empty() {
            // Taken rather than drained: a drained table keeps the size of the largest burst.
            let batch: Batch = Arc::new(std::mem::take(&mut self.inbound).into_iter().collect());
            let bytes: usize = batch.iter().map(|(key, entry)| entry.wire_size(key)).sum();
            let row = &self.stats.senders[self.stats.gateway_index()];
            for (to, actor) in self.actors.iter().enumerate() {
                let sync = ToActor::Sync {
                    from: self.stats.gateway_index(),
                    batch: batch.clone(),
                };
                if actor.send(sync).is_ok() {
                    row.sent(to, bytes);
                }
            }
            self.persist.batch(batch);
        }
        if !self.evicted.is_empty() {
            let evicted = Arc::new(std::mem::take(&mut self.evicted));
            for actor in &self.actors {
                let _ = actor.send(ToActor::Evict(evicted.clone()));
            }
            self.persist.evict(evicted.to_vec());
        }
    }

    /// Hands the local entries not yet published to the network.
    async fn publish(&mut self) {
        if !self.unpublished.is_empty()
            && let Some(network) = &self.network
        {
            let batch: Batch =
                Arc::new(std::mem::take(&mut self.unpublished).into_iter().collect());
            // Back-pressure from a slow network waits here rather than growing a queue; the
            // pending map keeps coalescing meanwhile until the next send.
            if network.send(batch).await.is_err() {
                tracing::debug!("network task stopped; batches are no longer published");
                self.network = None;
            }
        }
    }
}
