//! The replica: a multi-actor last-writer-wins key-value store in the style of Anna.
//!
//! - [`entry`]: versions, entries and the LWW merge (the lattice).
//! - [`compact`]: the compact keys and entries the whole-world maps hold.
//! - [`clock`]: the hybrid logical clock that versions writes.
//! - [`sign`]: the signed encoding of entries, signing and batch verification.
//! - [`validate`]: the one place entries are judged (limits, namespaces, signatures).
//! - [`replica`]: one actor's private map.
//! - [`actor`]: query actor threads and local sync between them.
//! - [`gateway`]: the node's bridge to the network, a full replica of its own.
//! - [`closes`]: when the gateway may tell persistence of a closed log segment.
//! - [`log`]: the append-only log that covers what redb has not committed yet.
//! - [`persist`]: durable storage in redb.
//! - [`heap`]: freed memory given back to the system after a burst.
//! - [`disk`]: the layout of an entry in redb.
//! - [`quota`]: per-writer quotas (keys and bytes), the same admitted set in any order.
//! - [`pace`]: the rate budget every sync hop spends (send at once, or coalesce until refill).
//! - [`stats`]: lock-free counters for `INFO`.
//!
//! The store knows nothing of RESP or libp2p: connections reach it as [`actor::Handoff`]s
//! served by an [`actor::ConnectionService`], and the network reaches it through the
//! [`gateway::GatewayHandle`].

pub mod actor;
pub mod clock;
pub mod closes;
pub mod compact;
pub mod disk;
pub mod entry;
pub mod fingerprint;
pub mod gateway;
pub mod heap;
pub mod indexed;
pub mod log;
pub mod pace;
pub mod packed;
pub mod persist;
pub mod quota;
pub mod ranger;
pub mod replica;
pub mod sign;
pub mod stats;
pub mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

pub use entry::{Batch, Entry, Key, KeyedEntry, NodeId, Version};
pub use log::Fsync;
pub use sign::Signer;
pub use validate::Limits;

use actor::{ActorSetup, ActorThread, ConnectionService, Mailboxes, ToActor};
use clock::wall_millis;
use gateway::{GatewayHandle, GatewaySetup, ToGateway};
use log::LogWriter;
use persist::PersistHandle;
use quota::{OwnQuota, Quota};
use replica::Replica;
use stats::Stats;
use validate::{is_expired_tombstone, namespace_owner, purge_horizon};

/// Why the store could not start.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened, read or written.
    #[error("world database {path}: {message}")]
    Database {
        /// The database file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The database was written by a newer cmud.
    #[error(
        "world database {path} has format {found}, but this cmud reads up to {supported}: upgrade cmud"
    )]
    NewerFormat {
        /// The database file.
        path: PathBuf,
        /// Its format version.
        found: u64,
        /// The newest this build reads.
        supported: u64,
    },
    /// The database is damaged: the node does not start on it, nor replace it.
    #[error(
        "world database {path} is damaged: {detail}.\n  cmud will not start on it. Move the file \
         away to start afresh (peers send the world again), or move it away and `cmud import` \
         a backup made with `cmud export`"
    )]
    Damaged {
        /// The database file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// The append-only log could not be read or written.
    #[error(transparent)]
    Log(#[from] log::LogError),
    /// A thread could not be started.
    #[error("could not start a store thread: {0}")]
    Thread(#[from] std::io::Error),
}

impl StoreError {
    fn db(path: &Path, err: impl std::fmt::Display) -> Self {
        StoreError::Database {
            path: path.to_owned(),
            message: err.to_string(),
        }
    }

    fn damaged(path: &Path, detail: impl std::fmt::Display) -> Self {
        StoreError::Damaged {
            path: path.to_owned(),
            detail: detail.to_string(),
        }
    }
}

/// A store whose data is loaded but whose actors are not running yet. Its gateway handle can
/// already be given to the network, which is started in between.
pub struct OpenStore {
    /// The loaded database, handed to the persist actor.
    db: redb::Database,
    /// Its file, for errors.
    path: PathBuf,
    /// Everything loaded from disk.
    map: BTreeMap<Key, Entry>,
    /// The gateway's handle (cloned out to the network).
    gateway: GatewayHandle,
    /// The gateway's mailbox, consumed by `start`.
    gateway_inbox: mpsc::UnboundedReceiver<ToGateway>,
    /// The append-only log's folder and fsync policy.
    log: (PathBuf, Fsync),
    /// Signs this node's entries (and names its id and world).
    signer: Arc<Signer>,
    /// Whether no node ran here for longer than `tombstone_ttl` (the world must be fetched
    /// again before it is served).
    out_of_contact: bool,
}

/// How to run the store's actors.
pub struct StartOptions {
    /// Number of query actors (at least 1).
    pub actors: usize,
    /// Limits on keys, values and clock skew.
    pub limits: Limits,
    /// Where the gateway publishes batches for the world, if there is a network.
    pub outbound: Option<mpsc::Sender<Batch>>,
    /// Node-wide counters (shared with the network and `INFO`).
    pub stats: Arc<Stats>,
    /// Serves client connections on the actors.
    pub service: Arc<dyn ConnectionService>,
}

/// A running store: query actors, the gateway and the persist actor.
pub struct Store {
    /// Actor threads, joined on shutdown.
    threads: Vec<ActorThread>,
    /// Everyone's mailboxes.
    mailboxes: Mailboxes,
    /// The gateway task.
    gateway_task: tokio::task::JoinHandle<()>,
    /// The persist actor.
    persist: PersistHandle,
    /// The persist thread, joined on shutdown.
    persist_thread: std::thread::JoinHandle<()>,
}

impl OpenStore {
    /// Opens the database at `path`, loads it, and replays the log in `log_dir`; the actors
    /// will log their writes there, forced to disk as `fsync` says. `signer` is this node's
    /// identity: its id is stamped on every write and its key signs them.
    ///
    /// Tombstones older than `ttl` are dropped. If no node ran here for longer than `ttl`,
    /// others may have deleted keys and purged the tombstones meanwhile, so every entry outside
    /// this node's own namespace `p/<own id>/` (which only it writes) is dropped too and
    /// fetched again from peers: an old value never comes back to life, not even one this
    /// node wrote outside its namespace and another node deleted.
    pub fn open(
        path: &Path,
        log_dir: &Path,
        fsync: Fsync,
        ttl: Duration,
        signer: Signer,
    ) -> Result<OpenStore, StoreError> {
        let (mut db, mut map) = persist::open(path, log_dir, &signer)?;
        let own = signer.node().clone();
        let now = wall_millis();
        let horizon = purge_horizon(now, ttl);
        let out_of_contact = persist::last_seen(&db, path)?.is_some_and(|last| last < horizon);
        let forget: Vec<Key> = map
            .iter()
            .filter(|(key, entry)| {
                is_expired_tombstone(entry, horizon)
                    || (out_of_contact && namespace_owner(key) != Some(own.as_str().as_bytes()))
            })
            .map(|(key, _)| key.clone())
            .collect();
        if out_of_contact {
            tracing::warn!(
                dropped = forget.len(),
                "no node ran on this world for longer than tombstone_ttl: dropping what others \
                 wrote, to fetch it again from peers"
            );
        }
        for key in &forget {
            map.remove(key);
        }
        persist::forget(&db, path, &forget, now)?;
        persist::compact_if_sparse(&mut db, path)?;
        let (gateway, gateway_inbox) = gateway::channel();
        Ok(OpenStore {
            db,
            path: path.to_owned(),
            map,
            gateway,
            gateway_inbox,
            log: (log_dir.to_owned(), fsync),
            signer: Arc::new(signer),
            out_of_contact,
        })
    }

    /// The gateway's handle, for the network.
    pub fn gateway(&self) -> GatewayHandle {
        self.gateway.clone()
    }

    /// Whether no node ran on this world for longer than `tombstone_ttl`: only this node's own
    /// namespace was kept, and the rest must be fetched from peers before it is served.
    pub fn out_of_contact(&self) -> bool {
        self.out_of_contact
    }

    /// Number of entries loaded, tombstones included.
    pub fn loaded_entries(&self) -> usize {
        self.map.len()
    }

    /// Starts the persist actor, the gateway and the query actors. Must be called inside a
    /// tokio runtime (the gateway is a task on it).
    pub fn start(self, options: StartOptions) -> Result<Store, StoreError> {
        let node = self.signer.node().clone();
        let StartOptions {
            actors,
            limits,
            outbound,
            stats,
            service,
        } = options;
        let actors = actors.max(1);
        let (log_dir, fsync) = self.log;
        let untrimmed = log::Untrimmed::default();
        let trimmer = persist::Trimmer {
            dir: log_dir.clone(),
            untrimmed: untrimmed.clone(),
        };
        // Back from a long absence, what others' accounts kept is as stale as their entries.
        let out_of_contact = self.out_of_contact;
        let keep = |writer: &NodeId| !out_of_contact || *writer == node;
        let saved = quota::disk::load(&self.db, limits.quota(), keep)
            .map_err(|err| StoreError::db(&self.path, err))?;
        let (persist, persist_thread) = persist::spawn(self.db, Some(trimmer))?;
        let own_quota = Arc::new(OwnQuota::new(limits.quota()));
        let mut map = self.map;
        let (mut quota, dropped) = Quota::rebuild(node.clone(), own_quota.clone(), &map, saved);
        if !dropped.is_empty() {
            tracing::warn!(
                dropped = dropped.len(),
                "dropping entries of writers past their quota (max_keys_per_writer, max_bytes_per_writer)"
            );
        }
        let evicted = dropped
            .into_iter()
            .filter_map(|key| map.remove(&key).map(|entry| (key, entry.version)))
            .collect();
        persist.changes(Batch::default(), evicted, quota.take_delta());
        let (senders, inboxes): (Vec<_>, Vec<_>) = (0..actors)
            .map(|_| mpsc::unbounded_channel::<ToActor>())
            .unzip();
        let mailboxes = Mailboxes {
            actors: senders.clone(),
            gateway: self.gateway.clone(),
        };

        let mut threads = Vec::with_capacity(actors);
        for (index, inbox) in inboxes.into_iter().enumerate() {
            // Actor indexes are stamped into versions as u16; more actors than that is absurd.
            let actor_id = u16::try_from(index).unwrap_or(u16::MAX);
            threads.push(actor::spawn(ActorSetup {
                index,
                replica: Replica::with_entries(node.clone(), actor_id, &map),
                log: LogWriter::new(&log_dir, index, fsync, untrimmed.clone()),
                inbox,
                mailboxes: mailboxes.clone(),
                stats: stats.clone(),
                limits,
                service: service.clone(),
                own_quota: own_quota.clone(),
            })?);
        }
        let gateway_task = tokio::spawn(gateway::run(GatewaySetup {
            map,
            inbox: self.gateway_inbox,
            actors: senders,
            persist: persist.clone(),
            outbound,
            limits,
            signer: self.signer,
            quota,
            stats,
        }));
        Ok(Store {
            threads,
            mailboxes,
            gateway_task,
            persist,
            persist_thread,
        })
    }
}

impl Store {
    /// The query actors' mailboxes, for handing them connections.
    pub fn actor_mailboxes(&self) -> &[mpsc::UnboundedSender<ToActor>] {
        &self.mailboxes.actors
    }

    /// The gateway's handle.
    pub fn gateway(&self) -> GatewayHandle {
        self.mailboxes.gateway.clone()
    }

    /// Stops everything in order, so nothing acknowledged is lost: actors flush to the gateway,
    /// the gateway flushes to persistence, persistence commits.
    pub async fn shutdown(self) {
        let Store {
            threads,
            mailboxes,
            gateway_task,
            persist,
            persist_thread,
        } = self;
        for mailbox in &mailboxes.actors {
            let (tx, rx) = oneshot::channel();
            if mailbox.send(ToActor::Shutdown(tx)).is_ok() {
                let _ = rx.await;
            }
        }
        mailboxes.gateway.shutdown().await;
        let _ = gateway_task.await;
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                thread.join();
            }
            persist.flush_blocking();
            drop(persist);
            if persist_thread.join().is_err() {
                tracing::error!("the persist thread panicked");
            }
        })
        .await;
    }
}
