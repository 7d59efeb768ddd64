//! The persist actor: coalesces the batches it is handed and commits them to a redb database
//! in the world's folder as soon as its [`Pace`] allows (at once after a quiet spell, at most
//! once per [`COMMIT_PERIOD`]); and the loader that reads the database back on start
//! (migrating a database of an older format first).
//!
//! Runs on a thread of its own because redb is a blocking API. Its backlog is bounded by the
//! key space: it keeps only the latest entry per key until the next commit.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::StoreError;
use super::clock::wall_millis;
use super::disk::{DiskError, ENTRIES, WRITERS, Writers};
use super::entry::{Batch, Entry, Key, KeyedEntry, Merged, Version, merge};
use super::heap::Trim;
use super::indexed::is_evicted;
use super::log::{self, Untrimmed};
use super::pace::Pace;
use super::quota::{QuotaDelta, disk as quota_disk};
use super::sign::Signer;
use super::validate::is_expired_tombstone;

/// Memory redb may keep for its page cache. Its default (1 GiB) let the cache grow to the size
/// of the whole file, a second copy of the world in memory; the node reads the database only
/// at start and when a commit checks the stored version of a key it writes, so a small cache
/// (and the operating system's page cache below it) serves.
const REDB_CACHE_BYTES: usize = 32 << 20;

/// Minimum time between two commits.
///
/// Durability does not depend on it: an acknowledged write is in an actor's log before its
/// reply leaves, and the log is trimmed only once redb has committed it. What it sets is the
/// cost of persistence and how long one commit holds the machine: a commit rewrites every page
/// it touches (redb copies on write), and new keys spread over the whole table touch a page
/// each, so one commit a second writes a page for several keys where ten a second wrote nearly
/// one per key (`benches/new-key-cpu.sh`: 2.7 KB written per new key at 100 ms, 0.8 KB at 1 s;
/// persistence 11 and 7 us of CPU). But a commit of a second's worth of a bulk load is long
/// enough to be felt: with 1 s, the slowest `PING` to a node serving a 1,000,000-key bootstrap
/// was 73-98 ms in three runs against 37-45 ms in two at 100 ms (`tests/sync_scale.rs`), so
/// the period stays at the design's 100 ms.
pub const COMMIT_PERIOD: Duration = Duration::from_millis(100);

/// Version of the on-disk layout; a database written by a newer cmud is refused. Version 2:
/// every entry carries its writer's signature (version 1 entries were unsigned). Version 3:
/// the writer is a number in the writers table (see [`super::disk`]), not its peer id text.
/// Version 4: the quota's state beyond the entries (see [`super::quota::disk`]) is kept too,
/// written at the same commits as the entries.
pub const DISK_FORMAT_VERSION: u64 = 4;

/// The format whose entries were unsigned; migrated on open.
const UNSIGNED_FORMAT_VERSION: u64 = 1;

/// The format whose entries each held their writer's peer id text; migrated on open.
const WRITER_TEXT_FORMAT_VERSION: u64 = 2;

/// The format without the quota's tables: its entries are read as they are, and the accounts
/// start from them (as every start did then).
const NO_QUOTA_FORMAT_VERSION: u64 = 3;

/// Facts about the database itself (`format_version`, [`LAST_SEEN`]).
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The last time a node ran on the database, in milliseconds since the Unix epoch: written at
/// every commit and at least every [`TOUCH_PERIOD`], so that a node stopped for longer than
/// `tombstone_ttl` knows it on start.
const LAST_SEEN: &str = "last_seen_ms";

/// Longest time between two writes of [`LAST_SEEN`] while a node runs.
const TOUCH_PERIOD: Duration = Duration::from_secs(60);

/// Messages the persist actor takes.
#[derive(Debug)]
enum ToPersist {
    /// Entries to make durable.
    Batch(Batch),
    /// Commit now and say when done.
    Flush(mpsc::Sender<()>),
    /// Delete these keys if what redb holds for them is a tombstone older than `horizon_ms`.
    Purge {
        /// Keys the gateway purged.
        keys: Vec<Key>,
        /// The purge horizon, in milliseconds since the Unix epoch.
        horizon_ms: u64,
    },
    /// Entries merged from peers, the entries evicted by their writer's quota since (each key
    /// deleted where it holds an entry of the version's writer, not newer: another writer's
    /// or a newer write stays), and the quota's changes that go with them: all in one commit.
    Changes {
        /// The entries merged.
        batch: Batch,
        /// The entries evicted.
        evicted: Vec<(Key, Version)>,
        /// The quota's changes.
        quota: QuotaDelta,
    },
    /// An actor closed a log segment after handing over its last batch: once what came
    /// before is committed, the segment (and that actor's earlier ones) may go.
    LogClosed {
        /// The actor whose log it is.
        actor: usize,
        /// The segment closed.
        segment: u64,
    },
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

    /// Has the database drop `keys` where they hold tombstones older than `horizon_ms`.
    pub fn purge(&self, keys: Vec<Key>, horizon_ms: u64) {
        let _ = self.tx.send(ToPersist::Purge { keys, horizon_ms });
    }

    /// Queues `entries`, the deletion of `evicted` ones (evicted by their writer's quota:
    /// dropped where the database holds them or older ones of the same writer) and the
    /// quota's changes, to be committed together.
    pub fn changes(&self, batch: Batch, evicted: Vec<(Key, Version)>, quota: QuotaDelta) {
        if !batch.is_empty() || !evicted.is_empty() || !quota.is_empty() {
            let changes = ToPersist::Changes {
                batch,
                evicted,
                quota,
            };
            let _ = self.tx.send(changes);
        }
    }

    /// Says that `actor` closed log segment `segment` after handing over its batches.
    pub fn log_closed(&self, actor: usize, segment: u64) {
        let _ = self.tx.send(ToPersist::LogClosed { actor, segment });
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

/// Opens (or creates) the world's database, checks its format (migrating an older one), loads every entry, and replays
/// what the append-only log in `log_dir` holds beyond it (committing it, then deleting the log).
///
/// A damaged database (empty, truncated, overwritten, or holding an unreadable entry) is a
/// [`StoreError::Damaged`]: it is never started on, nor silently replaced.
pub fn open(
    path: &Path,
    log_dir: &Path,
    signer: &Signer,
) -> Result<(Database, BTreeMap<Key, Entry>), StoreError> {
    if let Ok(meta) = std::fs::metadata(path)
        && meta.len() == 0
    {
        return Err(StoreError::damaged(path, "the file is empty"));
    }
    let (db, mut map) = quietly_catching_panics(path, || {
        let db = create(path, signer)?;
        let map = load(&db, path, signer)?;
        Ok((db, map))
    })?;
    replay_log(&db, path, log_dir, signer, &mut map)?;
    Ok((db, map))
}

/// Runs `open` with redb's panics on damaged files turned into [`StoreError::Damaged`], and
/// without the panic's backtrace on the terminal.
fn quietly_catching_panics<T>(
    path: &Path,
    open: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(open));
    std::panic::set_hook(hook);
    result.unwrap_or_else(|panic| {
        let detail = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("redb could not read it");
        Err(StoreError::damaged(path, detail))
    })
}

/// Opens the database file and makes sure its tables exist and its format is one we read.
fn create(path: &Path, signer: &Signer) -> Result<Database, StoreError> {
    let db = Database::builder()
        .set_cache_size(REDB_CACHE_BYTES)
        .create(path)
        .map_err(|err| match err {
            redb::DatabaseError::Storage(redb::StorageError::Corrupted(detail)) => {
                StoreError::damaged(path, detail)
            }
            redb::DatabaseError::Storage(redb::StorageError::Io(err))
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
                ) =>
            {
                StoreError::damaged(path, format!("it is not a readable redb database ({err})"))
            }
            // redb reads a file that is not a database (overwritten) as an unknown format.
            redb::DatabaseError::UpgradeRequired(_) => {
                StoreError::damaged(path, "it is not a redb database of a known format")
            }
            other => StoreError::db(path, other),
        })?;
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
            Some(version @ (UNSIGNED_FORMAT_VERSION | WRITER_TEXT_FORMAT_VERSION)) => {
                migrate(&write, signer, version).map_err(|err| StoreError::db(path, err))?;
                meta.insert("format_version", DISK_FORMAT_VERSION)
                    .map_err(|err| StoreError::db(path, err))?;
            }
            Some(NO_QUOTA_FORMAT_VERSION) => {
                // Nothing to convert: the quota's tables are created below, empty, and the
                // accounts are built from the entries on start.
                tracing::info!(
                    from = NO_QUOTA_FORMAT_VERSION,
                    to = DISK_FORMAT_VERSION,
                    "migrated the world database; quota accounts start from the entries held"
                );
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
        write
            .open_table(WRITERS)
            .map_err(|err| StoreError::db(path, err))?;
        quota_disk::create_tables(&write).map_err(|err| StoreError::db(path, err))?;
    }
    write.commit().map_err(|err| StoreError::db(path, err))?;
    Ok(db)
}

/// Reads every entry; one that does not decode means the file is damaged.
fn load(db: &Database, path: &Path, signer: &Signer) -> Result<BTreeMap<Key, Entry>, StoreError> {
    let mut map = BTreeMap::new();
    let read = db.begin_read().map_err(|err| StoreError::db(path, err))?;
    let table = read
        .open_table(ENTRIES)
        .map_err(|err| StoreError::db(path, err))?;
    let writers = read
        .open_table(WRITERS)
        .map_err(|err| StoreError::db(path, err))
        .and_then(|table| Writers::read(&table).map_err(|err| StoreError::db(path, err)))?;
    for row in table.iter().map_err(|err| StoreError::db(path, err))? {
        let (key, value) = row.map_err(|err| StoreError::db(path, err))?;
        let entry = writers.decode(value.value()).map_err(|err| {
            let key = String::from_utf8_lossy(key.value());
            StoreError::damaged(
                path,
                format!("the entry under {key:?} is unreadable ({err})"),
            )
        })?;
        // This node's writes reach disk before their signature does (see the gateway): a
        // node killed in between signs them now.
        if entry.signature.is_none() {
            if entry.version.node == *signer.node() {
                let entry = signer.sign(key.value(), &entry);
                map.insert(Bytes::copy_from_slice(key.value()), entry);
            }
            continue;
        }
        map.insert(Bytes::copy_from_slice(key.value()), entry);
    }
    Ok(map)
}

/// Merges every segment of the log into `map` and the database, then deletes the segments.
fn replay_log(
    db: &Database,
    path: &Path,
    log_dir: &Path,
    signer: &Signer,
    map: &mut BTreeMap<Key, Entry>,
) -> Result<(), StoreError> {
    let segments = log::segments(log_dir)?;
    if segments.is_empty() {
        return Ok(());
    }
    let mut changed = HashMap::new();
    let (mut records, mut torn) = (0, 0);
    for (segment, _, _) in &segments {
        let read = log::read_segment(segment)?;
        records += read.records;
        torn += read.torn_bytes;
        for (key, entry) in read.entries {
            // The log holds this node's writes as they were acknowledged, before signing.
            let entry = match entry.signature {
                None if entry.version.node == *signer.node() => signer.sign(&key, &entry),
                _ => entry,
            };
            if merge(map, key.clone(), entry.clone()) != Merged::Unchanged {
                changed.insert(key, entry);
            }
        }
    }
    if torn > 0 {
        tracing::warn!(
            torn,
            "the log ended in a write cut short; its last bytes are ignored"
        );
    }
    tracing::info!(
        records,
        recovered = changed.len(),
        "replayed the log left by a node that did not stop cleanly"
    );
    commit(db, &changed, None).map_err(|err| StoreError::db(path, err))?;
    for (segment, _, _) in &segments {
        std::fs::remove_file(segment).map_err(|source| {
            StoreError::Log(log::LogError::Io {
                path: segment.clone(),
                source,
            })
        })?;
    }
    Ok(())
}

/// The log the persist actor trims after its commits.
#[derive(Clone, Debug)]
pub struct Trimmer {
    /// The log folder.
    pub dir: PathBuf,
    /// Bytes of log not yet trimmed, which the writers watch.
    pub untrimmed: Untrimmed,
}

impl Trimmer {
    /// Deletes the closed segments once everything handed over before them is committed.
    fn trim(&self, closed: &mut Vec<(usize, u64)>) {
        for (actor, segment) in closed.drain(..) {
            match log::trim(&self.dir, actor, segment) {
                Ok(freed) => {
                    self.untrimmed
                        .fetch_sub(freed.min(self.untrimmed.load(Relaxed)), Relaxed);
                }
                Err(err) => tracing::error!(%err, "could not trim the log"),
            }
        }
    }
}

/// Migrates a database of format 1 or 2 (each entry postcard-encoded with its writer's text)
/// to the current layout. From format 1 (unsigned), this node's own entries are signed and
/// everyone else's dropped (they cannot be signed here, and peers send them again, signed).
fn migrate(write: &redb::WriteTransaction, signer: &Signer, from: u64) -> Result<(), DiskError> {
    let mut table = write.open_table(ENTRIES).map_err(redb::Error::from)?;
    let mut writer_table = write.open_table(WRITERS).map_err(redb::Error::from)?;
    let mut writers = Writers::read(&writer_table)?;
    let mut rows = Vec::new();
    for row in table.iter().map_err(redb::Error::from)? {
        let (key, value) = row.map_err(redb::Error::from)?;
        rows.push((key.value().to_vec(), value.value().to_vec()));
    }
    let (mut kept, mut signed, mut dropped) = (0usize, 0usize, 0usize);
    for (key, value) in rows {
        let entry = match postcard::from_bytes::<Entry>(&value) {
            Ok(entry) if from != UNSIGNED_FORMAT_VERSION => entry,
            Ok(entry) if entry.version.node == *signer.node() => {
                signed += 1;
                signer.sign(&key, &entry)
            }
            Ok(_) => {
                table.remove(key.as_slice()).map_err(redb::Error::from)?;
                dropped += 1;
                continue;
            }
            Err(err) => return Err(err.into()),
        };
        let bytes = writers.encode(&mut writer_table, &entry, Vec::new())?;
        table
            .insert(key.as_slice(), bytes.as_slice())
            .map_err(redb::Error::from)?;
        kept += 1;
    }
    tracing::info!(
        from,
        to = DISK_FORMAT_VERSION,
        kept,
        signed,
        dropped,
        "migrated the world database; others' entries dropped from an unsigned one come back \
         from peers"
    );
    Ok(())
}

/// Starts the persist actor on its own thread. It stops, after a last commit, once every
/// handle is dropped.
pub fn spawn(
    db: Database,
    trimmer: Option<Trimmer>,
) -> std::io::Result<(PersistHandle, thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel();
    let join = thread::Builder::new()
        .name("cmud-persist".into())
        .spawn(move || run(db, trimmer, rx))?;
    Ok((PersistHandle { tx }, join))
}

fn run(db: Database, trimmer: Option<Trimmer>, inbox: mpsc::Receiver<ToPersist>) {
    let mut pending = Pending::default();
    let mut segments: Vec<(usize, u64)> = Vec::new();
    let mut purges: Vec<Deletion> = Vec::new();
    let mut waiting: Vec<mpsc::Sender<()>> = Vec::new();
    let mut pace = Pace::new(COMMIT_PERIOD, Instant::now());
    let mut trim = Trim::new();
    let mut closed = false;
    while !closed {
        // Wait for work; with a failed commit outstanding, wake up to retry it.
        let first = if pending.is_empty() {
            let message = inbox.recv_timeout(TOUCH_PERIOD);
            if matches!(message, Err(RecvTimeoutError::Timeout))
                && let Err(err) = touch(&db)
            {
                tracing::error!(%err, "could not write to the world database");
            }
            message
        } else {
            inbox.recv_timeout(COMMIT_PERIOD)
        };
        match first {
            Ok(message) => absorb(
                message,
                &mut pending,
                &mut segments,
                &mut purges,
                &mut waiting,
            ),
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
                Ok(message) => absorb(
                    message,
                    &mut pending,
                    &mut segments,
                    &mut purges,
                    &mut waiting,
                ),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => closed = true,
            }
        }
        while let Ok(message) = inbox.try_recv() {
            absorb(
                message,
                &mut pending,
                &mut segments,
                &mut purges,
                &mut waiting,
            );
        }
        // Past `due`, or forced by a flush or the end: commit either way.
        let forced = closed || !waiting.is_empty();
        if !pending.is_empty() && (pace.try_take(Instant::now()) || forced) {
            match commit_pending(&db, &pending, Some(wall_millis())) {
                Ok(()) => {
                    trim.committed(pending.entries.len());
                    // Dropped rather than cleared: after a burst its table would keep the
                    // burst's size for the life of the node.
                    pending = Pending::default();
                }
                // Keep the entries: the next round retries them.
                Err(err) => {
                    tracing::error!(%err, "could not commit to the world database; will retry")
                }
            }
        }
        // Everything handed over before the segments closed is committed now.
        if pending.is_empty()
            && let Some(trimmer) = &trimmer
        {
            trimmer.trim(&mut segments);
        }
        // The backlog is gone: if it was a burst, what it held is free now.
        if pending.is_empty() {
            trim.if_due(Instant::now());
        }
        for deletion in purges.drain(..) {
            let done = match &deletion {
                Deletion::Expired { keys, horizon_ms } => delete_expired(&db, keys, *horizon_ms),
            };
            if let Err(err) = done {
                tracing::error!(%err, ?deletion, "could not delete from the world database");
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
    pending: &mut Pending,
    closed: &mut Vec<(usize, u64)>,
    purges: &mut Vec<Deletion>,
    waiting: &mut Vec<mpsc::Sender<()>>,
) {
    match message {
        ToPersist::Batch(batch) => pending.add_entries(batch.iter().cloned()),
        ToPersist::Flush(done) => waiting.push(done),
        ToPersist::LogClosed { actor, segment } => closed.push((actor, segment)),
        ToPersist::Purge { keys, horizon_ms } => {
            purges.push(Deletion::Expired { keys, horizon_ms })
        }
        ToPersist::Changes {
            batch,
            evicted,
            quota,
        } => pending.absorb(&batch, evicted, quota),
    }
}

/// The last time a node ran on this database (milliseconds since the Unix epoch), if known.
pub fn last_seen(db: &Database, path: &Path) -> Result<Option<u64>, StoreError> {
    let read = db.begin_read().map_err(|err| StoreError::db(path, err))?;
    let meta = read
        .open_table(META)
        .map_err(|err| StoreError::db(path, err))?;
    let found = meta
        .get(LAST_SEEN)
        .map_err(|err| StoreError::db(path, err))?
        .map(|v| v.value());
    Ok(found)
}

/// Deletes `keys` whatever they hold and records `now_ms` as the last time a node ran here.
pub fn forget(db: &Database, path: &Path, keys: &[Key], now_ms: u64) -> Result<(), StoreError> {
    let run = || -> Result<(), redb::Error> {
        let write = db.begin_write()?;
        {
            let mut table = write.open_table(ENTRIES)?;
            for key in keys {
                table.remove(key.as_ref())?;
            }
            write.open_table(META)?.insert(LAST_SEEN, now_ms)?;
        }
        write.commit()?;
        Ok(())
    };
    run().map_err(|err| StoreError::db(path, err))
}

/// Compacts the database when more than half of its file is free space (after many deletes or
/// purged tombstones), so the space is given back. Call before any transaction is open.
pub fn compact_if_sparse(db: &mut Database, path: &Path) -> Result<(), StoreError> {
    let file_bytes = std::fs::metadata(path).map_or(0, |meta| meta.len());
    // Pages freed by the last transactions are only released by the ones after them.
    for _ in 0..2 {
        let empty = db.begin_write().map_err(|err| StoreError::db(path, err))?;
        empty.commit().map_err(|err| StoreError::db(path, err))?;
    }
    let write = db.begin_write().map_err(|err| StoreError::db(path, err))?;
    let stats = write.stats().map_err(|err| StoreError::db(path, err))?;
    let used_bytes = stats.allocated_pages() * stats.page_size() as u64;
    write.abort().map_err(|err| StoreError::db(path, err))?;
    if used_bytes.saturating_mul(2) >= file_bytes {
        return Ok(());
    }
    db.compact().map_err(|err| StoreError::db(path, err))?;
    let after = std::fs::metadata(path).map_or(0, |meta| meta.len());
    tracing::info!(before = file_bytes, after, "compacted the world database");
    Ok(())
}

/// Records that a node is running here now.
fn touch(db: &Database) -> Result<(), redb::Error> {
    let write = db.begin_write()?;
    write.open_table(META)?.insert(LAST_SEEN, wall_millis())?;
    write.commit()?;
    Ok(())
}

/// Deletes `keys` where the database holds a tombstone older than `horizon_ms` (a newer
/// write under the key stays).
pub fn delete_expired(db: &Database, keys: &[Key], horizon_ms: u64) -> Result<(), DiskError> {
    let write = db.begin_write().map_err(redb::Error::from)?;
    {
        let mut table = write.open_table(ENTRIES).map_err(redb::Error::from)?;
        let writers = Writers::read(&write.open_table(WRITERS).map_err(redb::Error::from)?)?;
        for key in keys {
            let expired = match table.get(key.as_ref()).map_err(redb::Error::from)? {
                Some(stored) => writers
                    .decode(stored.value())
                    .is_ok_and(|stored| is_expired_tombstone(&stored, horizon_ms)),
                None => false,
            };
            if expired {
                table.remove(key.as_ref()).map_err(redb::Error::from)?;
            }
        }
    }
    write.commit().map_err(redb::Error::from)?;
    Ok(())
}

/// What the next commit writes, in one transaction.
#[derive(Debug, Default)]
struct Pending {
    /// Entries, the latest per key.
    entries: HashMap<Key, Entry>,
    /// Entries evicted by their writer's quota: each key deleted where it holds an entry of
    /// that version's writer, not newer.
    evicted: Vec<(Key, Version)>,
    /// The quota's changes.
    quota: QuotaDelta,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.evicted.is_empty() && self.quota.is_empty()
    }

    /// Takes in entries, keeping the latest per key.
    fn add_entries(&mut self, entries: impl IntoIterator<Item = KeyedEntry>) {
        for (key, entry) in entries {
            match self.entries.get_mut(&key) {
                Some(slot) => {
                    if replaces(&entry, &slot.version, slot.signature.is_some()) {
                        *slot = entry;
                    }
                }
                None => {
                    self.entries.insert(key, entry);
                }
            }
        }
    }

    /// Takes in later changes: their entries, then their evictions (which drop what is
    /// pending of them too), then their quota changes.
    fn absorb(&mut self, batch: &[KeyedEntry], evicted: Vec<(Key, Version)>, quota: QuotaDelta) {
        self.add_entries(batch.iter().cloned());
        for (key, version) in &evicted {
            if self
                .entries
                .get(key)
                .is_some_and(|held| is_evicted(&held.version, version))
            {
                self.entries.remove(key);
            }
        }
        self.evicted.extend(evicted);
        self.quota.absorb(quota);
    }
}

/// A deletion the persist actor makes after its next commit.
#[derive(Debug)]
enum Deletion {
    /// Expired tombstones.
    Expired {
        /// Their keys.
        keys: Vec<Key>,
        /// The purge horizon.
        horizon_ms: u64,
    },
}

/// Whether `new` should replace an entry of version `old` (signed or not) on disk: a greater
/// version, or the same write now signed (a local write whose signing failed is persisted
/// unsigned, and signed at the next start).
fn replaces(new: &Entry, old: &Version, old_signed: bool) -> bool {
    new.version > *old || (new.version == *old && !old_signed && new.signature.is_some())
}

/// Merges `entries` into the database under last-writer-wins, in one transaction (for tools
/// working on a stopped node's folder).
pub fn merge_into(
    db: &Database,
    path: &Path,
    entries: &HashMap<Key, Entry>,
) -> Result<(), StoreError> {
    commit(db, entries, None).map_err(|err| StoreError::db(path, err))
}

/// Writes `entries` under last-writer-wins, and `last_seen` (by a running node only: a replay
/// or an import does not mean a node was in touch with the world).
fn commit(
    db: &Database,
    entries: &HashMap<Key, Entry>,
    last_seen: Option<u64>,
) -> Result<(), DiskError> {
    let pending = Pending {
        entries: entries.clone(),
        ..Pending::default()
    };
    commit_pending(db, &pending, last_seen)
}

/// Writes `pending`'s entries under last-writer-wins, deletes its evicted entries, writes its
/// quota changes and `last_seen`, all in one transaction.
fn commit_pending(
    db: &Database,
    pending: &Pending,
    last_seen: Option<u64>,
) -> Result<(), DiskError> {
    let write = db.begin_write().map_err(redb::Error::from)?;
    {
        if let Some(now_ms) = last_seen {
            let mut meta = write.open_table(META).map_err(redb::Error::from)?;
            meta.insert(LAST_SEEN, now_ms).map_err(redb::Error::from)?;
        }
        let mut table = write.open_table(ENTRIES).map_err(redb::Error::from)?;
        let mut writer_table = write.open_table(WRITERS).map_err(redb::Error::from)?;
        let mut writers = Writers::read(&writer_table)?;
        let mut buf = Vec::new();
        // In key order: consecutive keys mostly share their pages, which stay in redb's cache
        // from one insert to the next (random keys would each walk to a page of their own).
        let mut rows: Vec<(&Key, &Entry)> = pending.entries.iter().collect();
        rows.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (key, entry) in rows {
            buf.clear();
            let bytes = writers.encode(&mut writer_table, entry, std::mem::take(&mut buf))?;
            // Written first and the stored entry checked after, in one walk down the tree: it
            // may be newer than this one (loaded, or committed from another batch), and then
            // it goes back, so the greater version stays on disk.
            let newer_on_disk = match table
                .insert(key.as_ref(), bytes.as_slice())
                .map_err(redb::Error::from)?
            {
                Some(stored) => {
                    let stored = stored.value();
                    let newer = writers
                        .decode_head(stored)
                        .is_ok_and(|(version, signed)| !replaces(entry, &version, signed));
                    newer.then(|| stored.to_vec())
                }
                None => None,
            };
            if let Some(stored) = newer_on_disk {
                table
                    .insert(key.as_ref(), stored.as_slice())
                    .map_err(redb::Error::from)?;
            }
            buf = bytes;
        }
        for (key, version) in &pending.evicted {
            let held = match table.get(key.as_ref()).map_err(redb::Error::from)? {
                Some(stored) => writers
                    .decode_head(stored.value())
                    .is_ok_and(|(stored, _)| is_evicted(&stored, version)),
                None => false,
            };
            if held {
                table.remove(key.as_ref()).map_err(redb::Error::from)?;
            }
        }
        quota_disk::apply(&write, &mut writers, &mut writer_table, &pending.quota)?;
    }
    write.commit().map_err(redb::Error::from)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use libp2p::identity::Keypair;

    use super::*;
    use crate::store::entry::{NodeId, Version};
    use crate::store::sign::verify_entries;

    /// This node's signer in the tests.
    fn test_signer() -> Signer {
        Signer::new(&Keypair::ed25519_from_bytes([9; 32]).unwrap(), "w").unwrap()
    }

    fn keyed(n: u64) -> (Key, Entry) {
        let version = Version {
            millis: n,
            counter: 0,
            node: test_signer().node().clone(),
            actor: 0,
        };
        (
            Bytes::from(format!("key/{n:06}")),
            Entry::value(version, Bytes::from(format!("value-{n}"))),
        )
    }

    /// A closed database of `n` entries in `dir`; returns its path.
    fn database(dir: &Path, n: u64) -> PathBuf {
        let path = dir.join("world.redb");
        let (db, _) = open(&path, &dir.join("log"), &test_signer()).unwrap();
        let pending: HashMap<Key, Entry> = (0..n).map(keyed).collect();
        commit(&db, &pending, None).unwrap();
        path
    }

    fn damage(path: &Path, err: StoreError) -> String {
        let text = err.to_string();
        assert!(matches!(err, StoreError::Damaged { .. }), "{text}");
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("cmud import"), "{text}");
        text
    }

    #[test]
    fn an_empty_file_is_damage_not_a_new_world() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("world.redb");
        std::fs::write(&path, b"").unwrap();
        let err = open(&path, &dir.path().join("log"), &test_signer()).unwrap_err();
        assert!(damage(&path, err).contains("empty"));
    }

    #[test]
    fn a_truncated_file_is_damage_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = database(dir.path(), 2000);
        let len = std::fs::metadata(&path).unwrap().len();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len / 2).unwrap();
        drop(file);
        let err = open(&path, &dir.path().join("log"), &test_signer()).unwrap_err();
        damage(&path, err);
    }

    #[test]
    fn an_overwritten_file_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = database(dir.path(), 10);
        let len = std::fs::metadata(&path).unwrap().len() as usize;
        std::fs::write(&path, vec![0x5A; len]).unwrap();
        let err = open(&path, &dir.path().join("log"), &test_signer()).unwrap_err();
        damage(&path, err);
    }

    #[test]
    fn a_mostly_empty_database_is_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let path = database(dir.path(), 20_000);
        let (mut db, map) = open(&path, &dir.path().join("log"), &test_signer()).unwrap();
        let full = std::fs::metadata(&path).unwrap().len();
        let keys: Vec<Key> = map.into_keys().collect();
        forget(&db, &path, &keys, 1).unwrap();
        compact_if_sparse(&mut db, &path).unwrap();
        let compacted = std::fs::metadata(&path).unwrap().len();
        assert!(compacted * 2 < full, "{full} -> {compacted} bytes");
        // Nothing more to give back: no second compaction.
        compact_if_sparse(&mut db, &path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), compacted);
    }

    #[test]
    fn the_log_is_replayed_into_the_database_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let log_dir = dir.path().join("log");
        let path = database(dir.path(), 3);
        let mut writer = log::LogWriter::new(&log_dir, 1, log::Fsync::No, Untrimmed::default());
        // Newer than what redb holds for key 1, and a key redb never had.
        let mut newer = keyed(1);
        newer.1.version.millis = 100;
        writer.append(&[newer.clone(), keyed(7)]).unwrap();
        drop(writer);
        let (db, map) = open(&path, &log_dir, &test_signer()).unwrap();
        assert_eq!(
            last_seen(&db, &path).unwrap(),
            None,
            "a replay is not a node in touch with the world"
        );
        drop(db);
        assert_eq!(map.len(), 4);
        assert_eq!(map[&newer.0].version, newer.1.version);
        assert!(log::segments(&log_dir).unwrap().is_empty());
        // And it was committed: a second open without the log still has it.
        let (_, map) = open(&path, &log_dir, &test_signer()).unwrap();
        assert_eq!(map[&keyed(7).0].value, keyed(7).1.value);
    }

    #[test]
    fn evicted_entries_leave_the_database_and_newer_writes_stay() {
        let dir = tempfile::tempdir().unwrap();
        let path = database(dir.path(), 3);
        let log_dir = dir.path().join("log");
        let (db, _) = open(&path, &log_dir, &test_signer()).unwrap();
        let (persist, thread) = spawn(db, None).unwrap();
        // Key 0 committed long ago, key 1 newer than its eviction, key 2 still pending.
        let mut newer = keyed(1);
        newer.1.version.millis = 100;
        let pending = keyed(2);
        persist.batch(std::sync::Arc::new(vec![newer.clone(), pending.clone()]));
        let evicted = vec![
            (keyed(0).0, keyed(0).1.version),
            (keyed(1).0, keyed(1).1.version),
            (pending.0.clone(), pending.1.version.clone()),
        ];
        persist.changes(Batch::default(), evicted, QuotaDelta::default());
        persist.flush_blocking();
        drop(persist);
        thread.join().unwrap();
        let (_, map) = open(&path, &log_dir, &test_signer()).unwrap();
        assert_eq!(map.keys().collect::<Vec<_>>(), vec![&newer.0]);
        assert_eq!(map[&newer.0].version, newer.1.version);
    }

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
        let (db, map) = open(&path, &dir.path().join("log"), &signer).unwrap();
        assert_eq!(
            map.keys().collect::<Vec<_>>(),
            [&Bytes::from_static(b"mine")]
        );
        let entries: Vec<_> = map.into_iter().collect();
        assert_eq!(verify_entries("w", &entries), [true]);
        drop(db);
        // Reopened, it is of the current format and nothing changes.
        let (_, again) = open(&path, &dir.path().join("log"), &signer).unwrap();
        assert_eq!(again.len(), 1);
    }

    #[test]
    fn a_database_of_writer_texts_is_migrated_to_writer_numbers_keeping_every_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("world.redb");
        let signer = Signer::new(&Keypair::ed25519_from_bytes([5; 32]).unwrap(), "w").unwrap();
        let stranger = NodeId::new("12D3KooWStranger");
        let mut theirs = entry_by(&stranger, b"2");
        theirs.signature = Some(Bytes::from_static(&[9; 64]));
        let written = [
            (
                Bytes::from_static(b"mine"),
                signer.sign(b"mine", &entry_by(signer.node(), b"1")),
            ),
            (Bytes::from_static(b"theirs"), theirs),
        ];
        let old_bytes: usize;
        {
            // A database as cmud wrote it with the writer's text in every entry (format 2).
            let db = Database::create(&path).unwrap();
            let write = db.begin_write().unwrap();
            {
                let mut meta = write.open_table(META).unwrap();
                meta.insert("format_version", WRITER_TEXT_FORMAT_VERSION)
                    .unwrap();
                let mut table = write.open_table(ENTRIES).unwrap();
                let mut sizes = 0;
                for (key, entry) in &written {
                    let bytes = postcard::to_allocvec(entry).unwrap();
                    sizes += bytes.len();
                    table.insert(&key[..], bytes.as_slice()).unwrap();
                }
                old_bytes = sizes;
            }
            write.commit().unwrap();
        }
        let (db, map) = open(&path, &dir.path().join("log"), &signer).unwrap();
        assert_eq!(map, written.iter().cloned().collect());
        let read = db.begin_read().unwrap();
        let table = read.open_table(ENTRIES).unwrap();
        let new_bytes: usize = table
            .iter()
            .unwrap()
            .map(|row| row.unwrap().1.value().len())
            .sum();
        assert!(
            new_bytes + 60 < old_bytes,
            "{new_bytes} B against {old_bytes} B"
        );
        drop((table, read, db));
        let (_, again) = open(&path, &dir.path().join("log"), &signer).unwrap();
        assert_eq!(again, written.into_iter().collect());
    }

    #[test]
    fn a_commit_never_puts_an_older_entry_over_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("world.redb");
        let signer = test_signer();
        let (db, _) = open(&path, &dir.path().join("log"), &signer).unwrap();
        let older = entry_by(signer.node(), b"old");
        let mut newer = entry_by(signer.node(), b"new");
        newer.version.millis += 1;
        let signed = signer.sign(b"k", &older);
        let commit_one = |entry: &Entry| {
            let pending = HashMap::from([(Bytes::from_static(b"k"), entry.clone())]);
            commit(&db, &pending, None).unwrap();
        };
        commit_one(&newer);
        commit_one(&signed);
        commit_one(&older);
        let stored = |db: &Database| {
            let read = db.begin_read().unwrap();
            let writers = Writers::read(&read.open_table(WRITERS).unwrap()).unwrap();
            let table = read.open_table(ENTRIES).unwrap();
            let bytes = table.get(&b"k"[..]).unwrap().unwrap();
            writers.decode(bytes.value()).unwrap()
        };
        assert_eq!(stored(&db), newer);
        // The same version signed replaces the unsigned one, and not the other way round.
        commit_one(&older);
        let signed_newer = signer.sign(b"k", &newer);
        commit_one(&signed_newer);
        commit_one(&newer);
        assert_eq!(stored(&db), signed_newer);
        let mut newest = newer.clone();
        newest.version.counter += 1;
        commit_one(&newest);
        assert_eq!(stored(&db), newest);
    }

    #[test]
    fn own_writes_persisted_before_their_signature_are_signed_on_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("world.redb");
        let signer = Signer::new(&Keypair::ed25519_from_bytes([6; 32]).unwrap(), "w").unwrap();
        let (db, _) = open(&path, &dir.path().join("log"), &signer).unwrap();
        let own = entry_by(signer.node(), b"1");
        let mut pending = HashMap::new();
        pending.insert(Bytes::from_static(b"mine"), own.clone());
        pending.insert(
            Bytes::from_static(b"theirs"),
            entry_by(&NodeId::new("12D3KooWStranger"), b"2"),
        );
        commit(&db, &pending, None).unwrap();
        // The signed copy of the same write replaces the unsigned one; the reverse does not.
        let signed = signer.sign(b"mine", &own);
        assert!(replaces(&signed, &own.version, false) && !replaces(&own, &signed.version, true));
        drop(db);
        let (_, map) = open(&path, &dir.path().join("log"), &signer).unwrap();
        let entries: Vec<_> = map.into_iter().collect();
        assert_eq!(entries, [(Bytes::from_static(b"mine"), signed)]);
    }

    fn saved_charge(bytes: u64, millis: u64) -> crate::store::quota::SavedCharge {
        crate::store::quota::SavedCharge {
            bytes,
            latest: crate::store::quota::Stamp {
                millis,
                counter: 1,
                actor: 0,
                tombstone: millis.is_multiple_of(2),
            },
        }
    }

    /// (writer, key, row: (bytes, millis) or a deletion) changes and (writer, cut) changes.
    type Changes = (Vec<(u8, u8, Option<(u64, u64)>)>, Vec<(u8, Option<u8>)>);

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

        /// Whatever deltas are committed, loading gives back what applying them in memory
        /// gives (and the quota of `rebuild` in `quota/tests.rs` starts from that).
        #[test]
        fn the_quota_state_survives_commits_and_a_load(
            commits in proptest::collection::vec(
                (
                    proptest::collection::vec(
                        (0..3u8, 0..6u8, proptest::option::of((0..100u64, 0..10u64))),
                        0..8,
                    ),
                    proptest::collection::vec((0..3u8, proptest::option::of(0..6u8)), 0..3),
                ),
                1..5,
            ),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("world.redb");
            let limits = crate::store::quota::QuotaLimits { max_keys: 3, max_bytes: 0 };
            let (db, _) = open(&path, &dir.path().join("log"), &test_signer()).unwrap();
            assert_eq!(quota_disk::load(&db, limits, |_| true).unwrap(), Default::default());
            let mut expected = crate::store::quota::SavedQuota::default();
            let writer = |n: u8| NodeId::new(format!("12D3KooWriter{n}"));
            let key = |n: u8| Bytes::from(format!("k{n}"));
            let changes: Vec<Changes> = commits;
            for (charges, cuts) in changes {
                let mut delta = QuotaDelta::default();
                for (w, k, row) in charges {
                    let row = row.map(|(bytes, millis)| saved_charge(bytes, millis));
                    delta.charges.insert((writer(w), key(k)), row);
                }
                for (w, cut) in cuts {
                    delta.cuts.insert(writer(w), cut.map(key));
                }
                let pending = Pending { quota: delta.clone(), ..Pending::default() };
                commit_pending(&db, &pending, None).unwrap();
                delta.apply_to(&mut expected);
            }
            drop(db);
            let (db, _) = open(&path, &dir.path().join("log"), &test_signer()).unwrap();
            proptest::prop_assert_eq!(&quota_disk::load(&db, limits, |_| true).unwrap(), &expected);
            // A writer left out (back from a long absence) is gone for good.
            let kept = quota_disk::load(&db, limits, |node| *node != writer(0)).unwrap();
            proptest::prop_assert!(!kept.writers.contains_key(&writer(0)));
            proptest::prop_assert_eq!(quota_disk::load(&db, limits, |_| true).unwrap(), kept);
        }
    }

    #[test]
    fn other_limits_start_the_quota_afresh_and_format_3_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = database(dir.path(), 3);
        let limits = crate::store::quota::QuotaLimits {
            max_keys: 3,
            max_bytes: 0,
        };
        let row = |db: &Database| {
            let mut delta = QuotaDelta::default();
            let writer = NodeId::new("12D3KooWriter");
            delta.charges.insert(
                (writer.clone(), Bytes::from_static(b"k")),
                Some(saved_charge(9, 1)),
            );
            delta.cuts.insert(writer, Some(Bytes::from_static(b"z")));
            let pending = Pending {
                quota: delta,
                ..Pending::default()
            };
            commit_pending(db, &pending, None).unwrap();
        };
        let (db, _) = open(&path, &dir.path().join("log"), &test_signer()).unwrap();
        quota_disk::load(&db, limits, |_| true).unwrap();
        row(&db);
        assert_eq!(quota_disk::summary(&db).unwrap(), (1, 1));
        assert_eq!(
            quota_disk::load(&db, limits, |_| true)
                .unwrap()
                .writers
                .len(),
            1
        );
        let other = crate::store::quota::QuotaLimits {
            max_keys: 4,
            max_bytes: 0,
        };
        assert!(
            quota_disk::load(&db, other, |_| true)
                .unwrap()
                .writers
                .is_empty()
        );
        assert_eq!(quota_disk::summary(&db).unwrap(), (0, 0));
        // A database of format 3 (no quota tables): its entries are read as they are.
        row(&db);
        {
            let write = db.begin_write().unwrap();
            write
                .open_table(META)
                .unwrap()
                .insert("format_version", NO_QUOTA_FORMAT_VERSION)
                .unwrap();
            for table in ["quota_charges", "quota_cuts", "quota_limits"] {
                let handle: TableDefinition<&[u8], &[u8]> = TableDefinition::new(table);
                assert!(write.delete_table(handle).unwrap());
            }
            write.commit().unwrap();
        }
        drop(db);
        let (db, map) = open(&path, &dir.path().join("log"), &test_signer()).unwrap();
        assert_eq!(map.len(), 3);
        let read = db.begin_read().unwrap();
        let meta = read.open_table(META).unwrap();
        let format = meta.get("format_version").unwrap().unwrap().value();
        assert_eq!(format, DISK_FORMAT_VERSION);
        drop((meta, read));
        assert!(
            quota_disk::load(&db, other, |_| true)
                .unwrap()
                .writers
                .is_empty()
        );
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
        let err = open(&path, &dir.path().join("log"), &signer)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("world.redb") && err.contains("upgrade"),
            "{err}"
        );
    }
}
