//! The replica: a multi-actor last-writer-wins key-value store in the style of Anna.
//!
//! - [`entry`]: versions, entries and the LWW merge (the lattice).
//! - [`clock`]: the hybrid logical clock that versions writes.
//! - [`sign`]: the signed encoding of entries, signing and batch verification.
//! - [`validate`]: the one place entries are judged (limits, namespaces, signatures).
//! - [`replica`]: one actor's private map.
//! - [`actor`]: query actor threads and local sync between them.
//! - [`gateway`]: the node's bridge to the network, a full replica of its own.
//! - [`persist`]: durable storage in redb.
//! - [`stats`]: lock-free counters for `INFO`.
//!
//! The store knows nothing of RESP or libp2p: connections reach it as [`actor::Handoff`]s
//! served by an [`actor::ConnectionService`], and the network reaches it through the
//! [`gateway::GatewayHandle`].

pub mod actor;
pub mod clock;
pub mod entry;
pub mod gateway;
pub mod persist;
pub mod replica;
pub mod sign;
pub mod stats;
pub mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

pub use entry::{Batch, Entry, Key, KeyedEntry, NodeId, Version};
pub use sign::Signer;
pub use validate::Limits;

use actor::{ActorSetup, ActorThread, ConnectionService, Mailboxes, ToActor};
use gateway::{GatewayHandle, GatewaySetup, ToGateway};
use persist::PersistHandle;
use replica::Replica;
use stats::Stats;

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
}

/// A store whose data is loaded but whose actors are not running yet. Its gateway handle can
/// already be given to the network, which is started in between.
pub struct OpenStore {
    /// The loaded database, handed to the persist actor.
    db: redb::Database,
    /// Everything loaded from disk.
    map: BTreeMap<Key, Entry>,
    /// The gateway's handle (cloned out to the network).
    gateway: GatewayHandle,
    /// The gateway's mailbox, consumed by `start`.
    gateway_inbox: mpsc::UnboundedReceiver<ToGateway>,
    /// Signs this node's entries (and names its id and world).
    signer: Arc<Signer>,
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
    /// Opens the database at `path` and loads it. `signer` is this node's identity: its id
    /// is stamped on every write and its key signs them.
    pub fn open(path: &Path, signer: Signer) -> Result<OpenStore, StoreError> {
        let (db, map) = persist::open(path, &signer)?;
        let (gateway, gateway_inbox) = gateway::channel();
        Ok(OpenStore {
            db,
            map,
            gateway,
            gateway_inbox,
            signer: Arc::new(signer),
        })
    }

    /// The gateway's handle, for the network.
    pub fn gateway(&self) -> GatewayHandle {
        self.gateway.clone()
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
        let (persist, persist_thread) = persist::spawn(self.db)?;
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
                replica: Replica::with_entries(node.clone(), actor_id, &self.map),
                inbox,
                mailboxes: mailboxes.clone(),
                stats: stats.clone(),
                limits,
                service: service.clone(),
            })?);
        }
        let gateway_task = tokio::spawn(gateway::run(GatewaySetup {
            map: self.map,
            inbox: self.gateway_inbox,
            actors: senders,
            persist: persist.clone(),
            outbound,
            limits,
            signer: self.signer,
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
