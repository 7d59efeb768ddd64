//! The persist actor: coalesces the batches it is handed and commits them to a redb database
//! in the world's folder as soon as its [`Pace`] allows (at once after a quiet spell, at most
//! once per [`COMMIT_PERIOD`]); and the loader that reads the database back on start.
//!
//! Runs on a thread of its own because redb is a blocking API. Its backlog is bounded by the
//! key space: it keeps only the latest entry per key until the next commit.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::StoreError;
use super::entry::{Batch, Entry, Key};
use super::pace::Pace;

/// Minimum time between two commits.
pub const COMMIT_PERIOD: Duration = Duration::from_millis(100);

/// Version of the on-disk layout; a database written by a newer cmud is refused.
pub const DISK_FORMAT_VERSION: u64 = 1;

/// Key -> postcard-encoded [`Entry`].
const ENTRIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("entries");

/// Facts about the database itself (`format_version`).
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Messages the persist actor takes.
#[derive(Debug)]
enum ToPersist {
    /// Entries to make durable.
    Batch(Batch),
    /// Commit now and say when done.
    Flush(mpsc::Sender<()>),
}

/// The way to the persist actor; cheap to clone.
#[derive(Clone, Debug)]
pub struct PersistHandle {
    /// The actor's mailbox.
    tx: mpsc::Sender<ToPersist>,
}

impl PersistHandle {
    /// Queues a batch for the next commit.
    pub fn batch(&self, batch: Batch) {
        // A stopped persist actor has already logged why; there is nobody else to tell.
        let _ = self.tx.send(ToPersist::Batch(batch));
    }

    /// Commits everything queued so far and waits for it (blocking; call from a blocking
    /// context or at shutdown).
    pub fn flush_blocking(&self) {
        let (tx, rx) = mpsc::channel();
        if self.tx.send(ToPersist::Flush(tx)).is_ok() {
            let _ = rx.recv();
        }
    }
}

/// Opens (or creates) the world's database, checks its format and loads every entry.
pub fn open(path: &Path) -> Result<(Database, BTreeMap<Key, Entry>), StoreError> {
    let db = Database::create(path).map_err(|err| StoreError::db(path, err))?;
    let write = db.begin_write().map_err(|err| StoreError::db(path, err))?;
    {
        let mut meta = write
            .open_table(META)
            .map_err(|err| StoreError::db(path, err))?;
        let found = meta
            .get("format_version")
            .map_err(|err| StoreError::db(path, err))?
            .map(|v| v.value());
        match found {
            Some(version) if version > DISK_FORMAT_VERSION => {
                return Err(StoreError::NewerFormat {
                    path: path.to_owned(),
                    found: version,
                    supported: DISK_FORMAT_VERSION,
                });
            }
            Some(_) => {}
            None => {
                meta.insert("format_version", DISK_FORMAT_VERSION)
                    .map_err(|err| StoreError::db(path, err))?;
            }
        }
        write
            .open_table(ENTRIES)
            .map_err(|err| StoreError::db(path, err))?;
    }
    write.commit().map_err(|err| StoreError::db(path, err))?;

    let mut map = BTreeMap::new();
    let read = db.begin_read().map_err(|err| StoreError::db(path, err))?;
    let table = read
        .open_table(ENTRIES)
        .map_err(|err| StoreError::db(path, err))?;
    for row in table.iter().map_err(|err| StoreError::db(path, err))? {
        let (key, value) = row.map_err(|err| StoreError::db(path, err))?;
        match postcard::from_bytes::<Entry>(value.value()) {
            Ok(entry) => {
                map.insert(Bytes::copy_from_slice(key.value()), entry);
            }
            Err(err) => tracing::warn!(?err, "skipping an unreadable entry in {}", path.display()),
        }
    }
    Ok((db, map))
}

/// Starts the persist actor on its own thread. It stops, after a last commit, once every
/// handle is dropped.
pub fn spawn(db: Database) -> std::io::Result<(PersistHandle, thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel();
    let join = thread::Builder::new()
        .name("cmud-persist".into())
        .spawn(move || run(db, rx))?;
    Ok((PersistHandle { tx }, join))
}

fn run(db: Database, inbox: mpsc::Receiver<ToPersist>) {
    let mut pending: HashMap<Key, Entry> = HashMap::new();
    let mut waiting: Vec<mpsc::Sender<()>> = Vec::new();
    let mut pace = Pace::new(COMMIT_PERIOD, Instant::now());
    let mut closed = false;
    while !closed {
        // Wait for work; with a failed commit outstanding, wake up to retry it.
        let first = if pending.is_empty() {
            inbox.recv().map_err(|_| RecvTimeoutError::Disconnected)
        } else {
            inbox.recv_timeout(COMMIT_PERIOD)
        };
        match first {
            Ok(message) => absorb(message, &mut pending, &mut waiting),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => closed = true,
        }
        // Keep gathering until the budget allows a commit, unless someone waits for a flush.
        let due = pace.ready_at(Instant::now());
        while !closed && waiting.is_empty() {
            let left = due.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match inbox.recv_timeout(left) {
                Ok(message) => absorb(message, &mut pending, &mut waiting),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => closed = true,
            }
        }
        while let Ok(message) = inbox.try_recv() {
            absorb(message, &mut pending, &mut waiting);
        }
        // Past `due`, or forced by a flush or the end: commit either way.
        let forced = closed || !waiting.is_empty();
        if !pending.is_empty() && (pace.try_take(Instant::now()) || forced) {
            match commit(&db, &pending) {
                Ok(()) => pending.clear(),
                // Keep the entries: the next round retries them.
                Err(err) => {
                    tracing::error!(%err, "could not commit to the world database; will retry")
                }
            }
        }
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Takes one message into the pending set (latest version per key) or the flush waiters.
fn absorb(
    message: ToPersist,
    pending: &mut HashMap<Key, Entry>,
    waiting: &mut Vec<mpsc::Sender<()>>,
) {
    match message {
        ToPersist::Batch(batch) => {
            for (key, entry) in batch.iter() {
                match pending.get_mut(key) {
                    Some(slot) => {
                        slot.merge(entry.clone());
                    }
                    None => {
                        pending.insert(key.clone(), entry.clone());
                    }
                }
            }
        }
        ToPersist::Flush(done) => waiting.push(done),
    }
}

fn commit(db: &Database, pending: &HashMap<Key, Entry>) -> Result<(), redb::Error> {
    let write = db.begin_write()?;
    {
        let mut table = write.open_table(ENTRIES)?;
        let mut buf = Vec::new();
        for (key, entry) in pending {
            // The stored entry may be newer than this one (loaded, or committed from another
            // batch): keep the greater version on disk too.
            let newer_on_disk = match table.get(key.as_ref())? {
                Some(stored) => postcard::from_bytes::<Entry>(stored.value())
                    .is_ok_and(|stored| stored.version >= entry.version),
                None => false,
            };
            if newer_on_disk {
                continue;
            }
            buf.clear();
            // Serializing plain data into a Vec cannot fail.
            let bytes = postcard::to_extend(entry, std::mem::take(&mut buf))
                .expect("postcard encodes an Entry into a Vec");
            table.insert(key.as_ref(), bytes.as_slice())?;
            buf = bytes;
        }
    }
    write.commit()?;
    Ok(())
}
