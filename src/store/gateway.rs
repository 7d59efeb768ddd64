//! The gateway: this node's one bridge between its local actors and the world, and a full
//! replica of its own.
//!
//! Local actors hand it their flushed batches; it keeps them, passes them to the persist
//! actor at once (so acknowledged writes reach disk quickly) and queues them for the network,
//! which gets at most one batch per [`FLUSH_PERIOD`]. Batches from peers are validated entry
//! by entry, merged, and coalesced into at most one message per period to each local actor and
//! to the persist actor, however many peers publish. Bootstrap and anti-entropy read the
//! gateway's copy ([`GatewayHandle::query`]), never a query actor's, so a peer's sync never
//! stalls a player.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior, interval_at};

use super::actor::{FLUSH_PERIOD, ToActor};
use super::clock::wall_millis;
use super::entry::{Batch, Entry, Key, KeyedEntry, Merged, merge};
use super::persist::PersistHandle;
use super::stats::Stats;
use super::validate::{Limits, check_entry, is_expired_tombstone, purge_horizon, purge_period};

/// A read of the gateway's replica, run on the gateway task.
pub type Query = Box<dyn FnOnce(&BTreeMap<Key, Entry>) + Send>;

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
    /// Runs a read over the gateway's replica (bootstrap chunks, digests).
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
    /// Entries dropped as invalid.
    pub invalid: usize,
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
        read: impl FnOnce(&BTreeMap<Key, Entry>) -> T + Send + 'static,
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
    /// Node-wide counters.
    pub stats: Arc<Stats>,
}

struct Gateway {
    /// The gateway's full replica.
    map: BTreeMap<Key, Entry>,
    /// Remote entries merged since the last flush to actors, latest per key.
    inbound: HashMap<Key, Entry>,
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
    /// Node-wide counters.
    stats: Arc<Stats>,
    /// When the gateway last purged expired tombstones.
    last_purge: Instant,
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
        stats,
    } = setup;
    let mut gateway = Gateway {
        map,
        inbound: HashMap::new(),
        unpublished: HashMap::new(),
        actors,
        persist,
        network: outbound,
        limits,
        stats,
        last_purge: Instant::now(),
    };
    let mut tick = interval_at(Instant::now() + FLUSH_PERIOD, FLUSH_PERIOD);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            message = inbox.recv() => match message {
                Some(ToGateway::Local { batch, .. }) => gateway.local(batch),
                // Straight on, behind the batches this actor handed over before it.
                Some(ToGateway::LogClosed { from, segment }) => {
                    gateway.persist.log_closed(from, segment)
                }
                Some(ToGateway::Remote { entries, merged }) => {
                    let report = gateway.remote(entries);
                    if let Some(reply) = merged {
                        let _ = reply.send(report);
                    }
                }
                Some(ToGateway::Query(read)) => read(&gateway.map),
                Some(ToGateway::Shutdown(done)) => {
                    gateway.flush().await;
                    let _ = done.send(());
                    break;
                }
                None => {
                    gateway.flush().await;
                    break;
                }
            },
            _ = tick.tick() => {
                gateway.purge_if_due();
                gateway.flush().await;
            }
        }
    }
}

impl Gateway {
    fn local(&mut self, batch: Batch) {
        for (key, entry) in batch.iter() {
            if merge(&mut self.map, key.clone(), entry.clone()) != Merged::Unchanged
                && self.network.is_some()
            {
                self.unpublished.insert(key.clone(), entry.clone());
            }
        }
        // Persist the actor's batch as it is: the persist actor coalesces, and going straight
        // there keeps the time from acknowledgement to disk short.
        self.persist.batch(batch);
    }

    /// Drops tombstones past the purge horizon, once per purge period, and has persistence
    /// delete them too.
    fn purge_if_due(&mut self) {
        let ttl = self.limits.tombstone_ttl;
        if self.last_purge.elapsed() < purge_period(ttl) {
            return;
        }
        self.last_purge = Instant::now();
        let horizon = purge_horizon(wall_millis(), ttl);
        let expired: Vec<Key> = self
            .map
            .iter()
            .filter(|(_, entry)| is_expired_tombstone(entry, horizon))
            .map(|(key, _)| key.clone())
            .collect();
        if expired.is_empty() {
            return;
        }
        for key in &expired {
            self.map.remove(key);
            self.inbound.remove(key);
            self.unpublished.remove(key);
        }
        tracing::debug!(purged = expired.len(), "purged expired tombstones");
        self.stats
            .tombstones_purged
            .fetch_add(expired.len() as u64, Relaxed);
        self.persist.purge(expired, horizon);
    }

    fn remote(&mut self, entries: Vec<KeyedEntry>) -> RemoteMerge {
        let now = wall_millis();
        let mut report = RemoteMerge::default();
        for (key, entry) in entries {
            match check_entry(&key, &entry, now, &self.limits) {
                Ok(()) => {}
                Err(reason) if reason.is_transient() => {
                    report.future += 1;
                    continue;
                }
                Err(reason) => {
                    tracing::debug!(%reason, "dropped an invalid entry from a peer");
                    report.invalid += 1;
                    continue;
                }
            }
            if merge(&mut self.map, key.clone(), entry.clone()) != Merged::Unchanged {
                self.inbound.insert(key, entry);
                report.changed += 1;
            }
        }
        let remote = &self.stats.remote;
        remote
            .rejected_versions
            .fetch_add(report.future as u64, Relaxed);
        remote
            .rejected_entries
            .fetch_add(report.invalid as u64, Relaxed);
        report
    }

    async fn flush(&mut self) {
        if !self.inbound.is_empty() {
            let batch: Batch = Arc::new(self.inbound.drain().collect());
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
        if !self.unpublished.is_empty()
            && let Some(network) = &self.network
        {
            let batch: Batch = Arc::new(self.unpublished.drain().collect());
            // Back-pressure from a slow network waits here rather than growing a queue; the
            // pending map keeps coalescing meanwhile on the next tick.
            if network.send(batch).await.is_err() {
                tracing::debug!("network task stopped; batches are no longer published");
                self.network = None;
            }
        }
    }
}
