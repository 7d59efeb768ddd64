//! The persist actor: coalesces the batches it is handed and commits them to a redb database
//! in the world's folder at most every [`COMMIT_PERIOD`]; and the loader that reads the
//! database back on start (migrating a database of an older format first).
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
use super::sign::Signer;

/// Minimum time between two commits.
pub const COMMIT_PERIOD: Duration = Duration::from_millis(100);

/// Version of the on-disk layout; a database written by a newer cmud is refused. Version 2:
/// every entry carries its writer's signature (version 1 entries were unsigned).
pub const DISK_FORMAT_VERSION: u64 = 2;

/// The format whose entries were unsigned; migrated on open.
const UNSIGNED_FORMAT_VERSION: u64 = 1;

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

/// Opens (or creates) the world's database, checks its format (migrating an older one) and
/// loads every entry.
pub fn open(path: &Path, signer: &Signer) -> Result<(Database, BTreeMap<Key, Entry>), StoreError> {
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
            Some(UNSIGNED_FORMAT_VERSION) => {
                migrate_unsigned(&write, signer).map_err(|err| StoreError::db(path, err))?;
                meta.insert("format_version", DISK_FORMAT_VERSION)
                    .map_err(|err| StoreError::db(path, err))?;
            }
            Some(DISK_FORMAT_VERSION) => {}
            Some(version) => {
                return Err(StoreError::db(
                    path,
                    format!("unknown format version {version}; it was not written by cmud"),
                ));
            }
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
            // This node's writes reach disk before their signature does (see the gateway): a
            // node killed in between signs them now.
            Ok(entry) if entry.signature.is_none() => {
                if entry.version.node == *signer.node() {
                    let entry = signer.sign(key.value(), &entry);
                    map.insert(Bytes::copy_from_slice(key.value()), entry);
                }
            }
            Ok(entry) => {
                map.insert(Bytes::copy_from_slice(key.value()), entry);
            }
            Err(err) => tracing::warn!(?err, "skipping an unreadable entry in {}", path.display()),
        }
    }
    Ok((db, map))
}

/// Migrates a database of unsigned entries: this node's own entries are signed, everyone
/// else's are dropped (they cannot be signed here, and peers send them again, signed).
fn migrate_unsigned(write: &redb::WriteTransaction, signer: &Signer) -> Result<(), redb::Error> {
    let mut table = write.open_table(ENTRIES)?;
    let mut rows = Vec::new();
    for row in table.iter()? {
        let (key, value) = row?;
        rows.push((key.value().to_vec(), value.value().to_vec()));
    }
    let (mut signed, mut dropped) = (0usize, 0usize);
    for (key, value) in rows {
        match postcard::from_bytes::<Entry>(&value) {
            Ok(entry) if entry.version.node == *signer.node() => {
                let entry = signer.sign(&key, &entry);
                let bytes = postcard::to_allocvec(&entry).map_err(std::io::Error::other)?;
                table.insert(key.as_slice(), bytes.as_slice())?;
                signed += 1;
            }
            _ => {
                table.remove(key.as_slice())?;
                dropped += 1;
            }
        }
    }
    tracing::info!(
        signed,
        dropped,
        "migrated the world database to signed entries; others' entries come back from peers"
    );
    Ok(())
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
    let mut last_commit = Instant::now() - COMMIT_PERIOD;
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
        // Keep gathering until the commit period is up, unless someone waits for a flush.
        let due = last_commit + COMMIT_PERIOD;
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
        if !pending.is_empty() {
            last_commit = Instant::now();
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
                        if replaces(entry, slot) {
                            *slot = entry.clone();
                        }
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

/// Whether `new` should replace `old` on disk: a greater version, or the same write now
/// signed (the gateway persists a local write at once and its signed copy right after).
fn replaces(new: &Entry, old: &Entry) -> bool {
    new.version > old.version
        || (new.version == old.version && old.signature.is_none() && new.signature.is_some())
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
                    .is_ok_and(|stored| !replaces(entry, &stored)),
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

#[cfg(test)]
mod tests {
    use libp2p::identity::Keypair;

    use super::*;
    use crate::store::entry::{NodeId, Version};
    use crate::store::sign::verify_entries;

    fn entry_by(node: &NodeId, value: &'static [u8]) -> Entry {
        let version = Version {
            millis: 1_700_000_000_000,
            counter: 0,
            node: node.clone(),
            actor: 0,
        };
        Entry::value(version, Bytes::from_static(value))
    }

    #[test]
    fn an_unsigned_database_is_migrated_own_entries_signed_others_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("world.redb");
        let signer = Signer::new(&Keypair::ed25519_from_bytes([4; 32]).unwrap(), "w").unwrap();
        let stranger = NodeId::new("12D3KooWStranger");
        {
            // A database as cmud wrote it before signatures.
            let db = Database::create(&path).unwrap();
            let write = db.begin_write().unwrap();
            {
                let mut meta = write.open_table(META).unwrap();
                meta.insert("format_version", UNSIGNED_FORMAT_VERSION)
                    .unwrap();
                let mut table = write.open_table(ENTRIES).unwrap();
                for (key, entry) in [
                    (&b"mine"[..], entry_by(signer.node(), b"1")),
                    (&b"theirs"[..], entry_by(&stranger, b"2")),
                ] {
                    let bytes = postcard::to_allocvec(&entry).unwrap();
                    table.insert(key, bytes.as_slice()).unwrap();
                }
            }
            write.commit().unwrap();
        }
        let (db, map) = open(&path, &signer).unwrap();
        assert_eq!(
            map.keys().collect::<Vec<_>>(),
            [&Bytes::from_static(b"mine")]
        );
        let entries: Vec<_> = map.into_iter().collect();
        assert_eq!(verify_entries("w", &entries), [true]);
        drop(db);
        // Reopened, it is of the current format and nothing changes.
        let (_, again) = open(&path, &signer).unwrap();
        assert_eq!(again.len(), 1);
    }

    #[test]
    fn own_writes_persisted_before_their_signature_are_signed_on_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("world.redb");
        let signer = Signer::new(&Keypair::ed25519_from_bytes([6; 32]).unwrap(), "w").unwrap();
        let (db, _) = open(&path, &signer).unwrap();
        let own = entry_by(signer.node(), b"1");
        let mut pending = HashMap::new();
        pending.insert(Bytes::from_static(b"mine"), own.clone());
        pending.insert(
            Bytes::from_static(b"theirs"),
            entry_by(&NodeId::new("12D3KooWStranger"), b"2"),
        );
        commit(&db, &pending).unwrap();
        // The signed copy of the same write replaces the unsigned one; the reverse does not.
        let signed = signer.sign(b"mine", &own);
        assert!(replaces(&signed, &own) && !replaces(&own, &signed));
        drop(db);
        let (_, map) = open(&path, &signer).unwrap();
        let entries: Vec<_> = map.into_iter().collect();
        assert_eq!(entries, [(Bytes::from_static(b"mine"), signed)]);
    }

    #[test]
    fn a_newer_database_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("world.redb");
        {
            let db = Database::create(&path).unwrap();
            let write = db.begin_write().unwrap();
            write
                .open_table(META)
                .unwrap()
                .insert("format_version", DISK_FORMAT_VERSION + 1)
                .unwrap();
            write.commit().unwrap();
        }
        let signer = Signer::new(&Keypair::generate_ed25519(), "w").unwrap();
        let err = open(&path, &signer).unwrap_err().to_string();
        assert!(
            err.contains("world.redb") && err.contains("upgrade"),
            "{err}"
        );
    }
}
