//! The append-only log that makes acknowledged writes survive a crash before redb has them.
//!
//! Each query actor appends its first-hand Puts to a log file of its own at every flush, on
//! its own thread, before handing them to the gateway. A write reaches the page cache at most
//! one flush period after it was acknowledged, however far behind the gateway or the persist
//! actor are, and the page cache survives the death of the process (`kill -9`). How often the
//! log also reaches the disk itself (power loss) is [`Fsync`].
//!
//! An actor's log is a run of segments (`log/<actor>.<segment>.log`). A segment is closed once
//! it is big or old enough; the actor then tells the persist actor, along the same path as its
//! batches, which deletes the closed segments after its next commit. On start every segment
//! left behind is replayed: the merge is commutative, so order does not matter.
//!
//! This file owns the file format, the writer and the reader. It does not decide what a flush
//! contains (the actor) nor when redb commits (the persist actor).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::entry::{Entry, Key, KeyedEntry};

/// First bytes of every segment: a name and the format version of what follows.
const MAGIC: &[u8; 8] = b"CMUDLOG1";

/// Bytes before each record's payload: its length and its CRC-32, both little-endian `u32`.
const RECORD_HEADER_BYTES: usize = 8;

/// A segment this big is closed after the append that reached it.
const SEGMENT_BYTES: u64 = 8 * 1024 * 1024;

/// A segment this old is closed after its next append, so that trimming keeps up.
const SEGMENT_AGE: Duration = Duration::from_secs(1);

/// When the logs of a node hold this many bytes not yet trimmed, writers wait: redb is that
/// far behind.
pub const MAX_UNTRIMMED_BYTES: u64 = 256 * 1024 * 1024;

/// Name of the log folder inside a world folder.
pub const LOG_DIR: &str = "log";

/// When the log is forced to disk, as Redis' `appendfsync`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// Before every acknowledgement (each record is forced to disk before its replies are
    /// sent): a power loss loses nothing acknowledged. Slowest by far.
    Always,
    /// At most once a second per actor: a power loss loses at most about a second of writes.
    #[default]
    Everysec,
    /// Never: the operating system writes the log back when it likes (about 30 s on Linux).
    No,
}

/// Why a log could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A log file or folder could not be used.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A segment does not start with the log's magic bytes.
    #[error("{0} is not a cmud log segment (or one from a newer cmud)")]
    NotALog(PathBuf),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Bytes written to the logs and not yet trimmed, shared by the writers and the trimmer.
pub type Untrimmed = Arc<AtomicU64>;

/// One actor's log writer.
#[derive(Debug)]
pub struct LogWriter {
    /// The log folder.
    dir: PathBuf,
    /// The actor whose log this is.
    actor: usize,
    /// When to force the log to disk.
    fsync: Fsync,
    /// The segment being appended to, if one is open.
    current: Option<Segment>,
    /// Number of the next segment to open.
    next_segment: u64,
    /// Untrimmed bytes across the node.
    untrimmed: Untrimmed,
    /// Last time this writer forced its segment to disk.
    last_sync: Instant,
    /// Whether bytes were written since that.
    dirty: bool,
}

#[derive(Debug)]
struct Segment {
    /// Its number.
    number: u64,
    /// The open file.
    file: File,
    /// Bytes written so far.
    bytes: u64,
    /// When it was opened.
    opened: Instant,
}

impl LogWriter {
    /// A writer for `actor`'s log in `dir` (created if missing).
    pub fn new(dir: &Path, actor: usize, fsync: Fsync, untrimmed: Untrimmed) -> LogWriter {
        LogWriter {
            dir: dir.to_owned(),
            actor,
            fsync,
            current: None,
            next_segment: 0,
            untrimmed,
            last_sync: Instant::now(),
            dirty: false,
        }
    }

    /// Appends entries and closes the segment if it is full. Returns the number of a segment
    /// this closed, which may be trimmed once everything handed to persistence before it is
    /// committed.
    pub fn append(&mut self, entries: &[KeyedEntry]) -> Result<Option<u64>, LogError> {
        self.write(entries)?;
        self.rotate_if_full()
    }

    /// Appends entries as one record, never closing the segment (their batch may not have
    /// been handed to persistence yet).
    pub fn write(&mut self, entries: &[KeyedEntry]) -> Result<(), LogError> {
        let record = encode_record(entries);
        if self.current.is_none() {
            self.current = Some(self.open_segment()?);
        }
        let Some(segment) = &mut self.current else {
            unreachable!("a segment was opened just above");
        };
        let path = segment_path(&self.dir, self.actor, segment.number);
        segment.file.write_all(&record).map_err(io_error(&path))?;
        segment.bytes += record.len() as u64;
        self.untrimmed
            .fetch_add(record.len() as u64, Ordering::Relaxed);
        self.dirty = true;
        if self.fsync == Fsync::Always {
            self.sync()?;
        }
        Ok(())
    }

    /// Closes the open segment if it is big or old enough; returns its number if so. Call
    /// only once everything written to it has been handed to persistence.
    pub fn rotate_if_full(&mut self) -> Result<Option<u64>, LogError> {
        let full = self.current.as_ref().is_some_and(|segment| {
            segment.bytes >= SEGMENT_BYTES || segment.opened.elapsed() >= SEGMENT_AGE
        });
        if full { self.close() } else { Ok(None) }
    }

    /// Whether the node's logs hold more than [`MAX_UNTRIMMED_BYTES`] not yet trimmed.
    pub fn backlogged(&self) -> bool {
        self.untrimmed.load(Ordering::Relaxed) > MAX_UNTRIMMED_BYTES
    }

    /// Forces the open segment to disk if the policy says it is time (call on every tick).
    pub fn tick(&mut self) -> Result<(), LogError> {
        if self.fsync == Fsync::Everysec && self.last_sync.elapsed() >= Duration::from_secs(1) {
            self.sync()?;
        }
        Ok(())
    }

    /// Closes the open segment, if there is one, and returns its number.
    pub fn close(&mut self) -> Result<Option<u64>, LogError> {
        if self.fsync != Fsync::No {
            self.sync()?;
        }
        Ok(self.current.take().map(|segment| segment.number))
    }

    fn sync(&mut self) -> Result<(), LogError> {
        if let Some(segment) = &self.current
            && self.dirty
        {
            let path = segment_path(&self.dir, self.actor, segment.number);
            segment.file.sync_data().map_err(io_error(&path))?;
        }
        self.dirty = false;
        self.last_sync = Instant::now();
        Ok(())
    }

    fn open_segment(&mut self) -> Result<Segment, LogError> {
        fs::create_dir_all(&self.dir).map_err(io_error(&self.dir))?;
        let number = self.next_segment;
        self.next_segment += 1;
        let path = segment_path(&self.dir, self.actor, number);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(io_error(&path))?;
        file.write_all(MAGIC).map_err(io_error(&path))?;
        Ok(Segment {
            number,
            file,
            bytes: MAGIC.len() as u64,
            opened: Instant::now(),
        })
    }
}

/// The file of `actor`'s segment `number`.
fn segment_path(dir: &Path, actor: usize, number: u64) -> PathBuf {
    dir.join(format!("{actor}.{number:08}.log"))
}

/// The (actor, segment) a log file name stands for.
fn parse_name(path: &Path) -> Option<(usize, u64)> {
    let name = path.file_name()?.to_str()?.strip_suffix(".log")?;
    let (actor, number) = name.split_once('.')?;
    Some((actor.parse().ok()?, number.parse().ok()?))
}

/// Every segment file in `dir` with its (actor, segment), in name order. A missing folder has
/// none.
pub fn segments(dir: &Path) -> Result<Vec<(PathBuf, usize, u64)>, LogError> {
    let listing = match fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(io_error(dir)(err)),
    };
    let mut found = Vec::new();
    for item in listing {
        let path = item.map_err(io_error(dir))?.path();
        if let Some((actor, number)) = parse_name(&path) {
            found.push((path, actor, number));
        }
    }
    found.sort();
    Ok(found)
}

/// Deletes `actor`'s segments up to and including `through`; returns the bytes freed.
pub fn trim(dir: &Path, actor: usize, through: u64) -> Result<u64, LogError> {
    let mut freed = 0;
    for (path, owner, number) in segments(dir)? {
        if owner == actor && number <= through {
            freed += fs::metadata(&path).map_err(io_error(&path))?.len();
            fs::remove_file(&path).map_err(io_error(&path))?;
        }
    }
    Ok(freed)
}

/// What reading one segment found.
#[derive(Debug, Default)]
pub struct SegmentRead {
    /// Every entry of every whole record, in order.
    pub entries: Vec<KeyedEntry>,
    /// Whole records read.
    pub records: usize,
    /// Bytes at the end that are not a whole, intact record (a write cut short by a power
    /// loss); they are ignored.
    pub torn_bytes: usize,
}

/// Reads a segment file.
pub fn read_segment(path: &Path) -> Result<SegmentRead, LogError> {
    let bytes = fs::read(path).map_err(io_error(path))?;
    let Some(mut rest) = bytes.strip_prefix(MAGIC.as_slice()) else {
        // A segment cut short before its magic was written holds nothing.
        if MAGIC.starts_with(&bytes) {
            return Ok(SegmentRead::default());
        }
        return Err(LogError::NotALog(path.to_owned()));
    };
    let mut read = SegmentRead::default();
    while !rest.is_empty() {
        let Some(entries) = decode_record(&mut rest) else {
            read.torn_bytes = rest.len();
            break;
        };
        read.entries.extend(entries);
        read.records += 1;
    }
    Ok(read)
}

fn encode_record(entries: &[KeyedEntry]) -> Vec<u8> {
    let mut record = vec![0; RECORD_HEADER_BYTES];
    // Serializing plain data into a Vec cannot fail.
    let mut record = postcard::to_extend(entries, std::mem::take(&mut record))
        .expect("postcard encodes entries into a Vec");
    let payload_len = (record.len() - RECORD_HEADER_BYTES) as u32;
    let crc = crc32(&record[RECORD_HEADER_BYTES..]);
    record[..4].copy_from_slice(&payload_len.to_le_bytes());
    record[4..8].copy_from_slice(&crc.to_le_bytes());
    record
}

/// Takes one intact record off the front of `rest`; `None` if what is left is not one.
fn decode_record(rest: &mut &[u8]) -> Option<Vec<(Key, Entry)>> {
    let header = rest.get(..RECORD_HEADER_BYTES)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    let payload = rest.get(RECORD_HEADER_BYTES..RECORD_HEADER_BYTES.checked_add(len)?)?;
    if crc32(payload) != crc {
        return None;
    }
    let entries = postcard::from_bytes(payload).ok()?;
    *rest = &rest[RECORD_HEADER_BYTES + len..];
    Some(entries)
}

/// CRC-32 (IEEE, as in zlib and Ethernet), table-driven.
fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut n = 0;
        while n < 256 {
            let mut c = n as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 == 1 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[n] = c;
            n += 1;
        }
        table
    };
    !bytes.iter().fold(!0u32, |c, &b| {
        TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8)
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::store::entry::{NodeId, Version};

    fn entry(n: u64) -> KeyedEntry {
        let version = Version {
            millis: n,
            counter: 0,
            node: NodeId::new("peer"),
            actor: 0,
        };
        (
            Bytes::from(format!("k{n}")),
            Entry::value(version, Bytes::from(format!("v{n}"))),
        )
    }

    fn writer(dir: &Path, fsync: Fsync) -> LogWriter {
        LogWriter::new(dir, 0, fsync, Untrimmed::default())
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn appended_records_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = writer(dir.path(), Fsync::Always);
        log.append(&[entry(1), entry(2)]).unwrap();
        log.append(&[entry(3)]).unwrap();
        let found = segments(dir.path()).unwrap();
        assert_eq!(found.len(), 1);
        let read = read_segment(&found[0].0).unwrap();
        assert_eq!(read.records, 2);
        assert_eq!(read.entries, vec![entry(1), entry(2), entry(3)]);
        assert_eq!(read.torn_bytes, 0);
        assert!(log.untrimmed.load(Ordering::Relaxed) > 0);
    }

    #[test]
    fn a_torn_or_damaged_tail_is_ignored_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = writer(dir.path(), Fsync::No);
        log.append(&[entry(1)]).unwrap();
        log.append(&[entry(2)]).unwrap();
        let path = segments(dir.path()).unwrap().remove(0).0;
        let whole = fs::read(&path).unwrap();
        // Cut in the middle of the second record.
        fs::write(&path, &whole[..whole.len() - 3]).unwrap();
        let read = read_segment(&path).unwrap();
        assert_eq!(read.entries, vec![entry(1)]);
        assert!(read.torn_bytes > 0);
        // A flipped byte in the second record's payload.
        let mut flipped = whole.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xFF;
        fs::write(&path, &flipped).unwrap();
        assert_eq!(read_segment(&path).unwrap().entries, vec![entry(1)]);
        fs::write(&path, b"garbage!and more").unwrap();
        assert!(matches!(read_segment(&path), Err(LogError::NotALog(_))));
    }

    #[test]
    fn closed_segments_are_trimmed_and_the_next_append_opens_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = writer(dir.path(), Fsync::Everysec);
        log.append(&[entry(1)]).unwrap();
        let closed = log.close().unwrap().unwrap();
        assert_eq!(log.close().unwrap(), None, "nothing open, nothing closed");
        log.append(&[entry(2)]).unwrap();
        assert_eq!(segments(dir.path()).unwrap().len(), 2);
        assert!(trim(dir.path(), 0, closed).unwrap() > 0);
        let left = segments(dir.path()).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(read_segment(&left[0].0).unwrap().entries, vec![entry(2)]);
        // Another actor's segments are not touched.
        assert_eq!(trim(dir.path(), 1, u64::MAX).unwrap(), 0);
    }

    #[test]
    fn old_segments_close_on_their_next_append() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = writer(dir.path(), Fsync::No);
        assert_eq!(log.append(&[entry(1)]).unwrap(), None);
        log.current.as_mut().unwrap().opened -= SEGMENT_AGE;
        assert_eq!(log.append(&[entry(2)]).unwrap(), Some(0));
        assert_eq!(log.append(&[entry(3)]).unwrap(), None);
        assert_eq!(segments(dir.path()).unwrap().len(), 2);
    }
}
