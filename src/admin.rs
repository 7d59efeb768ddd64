//! Tools on a stopped node's world folder: `cmud check`, `cmud export` and `cmud import`.
//!
//! Each takes the world folder's lock first, so none of them runs beside a node on the same
//! world. They open the database the way a node does (replaying a log left by a crash), and
//! speak JSON lines ([`ExportLine`], one entry a line) to people and scripts. The clap side of
//! the subcommands is in `cli.rs`; this file does the work.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::node::{DB_FILE, NodeError, lock_world};
use crate::p2p::identity;
use crate::store::Signer;
use crate::store::clock::wall_millis;
use crate::store::entry::{Entry, Key, Merged, NodeId, Version, merge};
use crate::store::log::{self, LOG_DIR};
use crate::store::quota;
use crate::store::sign::verify_entries;
use crate::store::validate::{Rejected, check_entry};
use crate::store::{Limits, StoreError, persist};

/// Why a tool could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// A node is running on the world folder.
    #[error(
        "a cmud is running on {0}: stop it first (check, export and import work on a stopped node's folder)"
    )]
    Running(PathBuf),
    /// There is no world database to read.
    #[error("there is no world at {0} (no {DB_FILE}): check --world and --data-dir")]
    NoWorld(PathBuf),
    /// The world folder or its lock could not be used.
    #[error(transparent)]
    Node(NodeError),
    /// The database is damaged or unreadable.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A line of an import file is not an entry; nothing was imported.
    #[error("{path}:{line}: {message} (nothing was imported)")]
    BadLine {
        /// The import file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
}

/// One entry as a line of an export: plain JSON, text where the bytes are UTF-8, base64 where
/// they are not. The field order is fixed, so the same world always exports the same bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportLine {
    /// The key, when it is UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The key in base64, when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_base64: Option<String>,
    /// The value, when it is UTF-8 (absent for a tombstone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The value in base64, when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_base64: Option<String>,
    /// Whether the entry is a delete marker (then it has no value).
    pub tombstone: bool,
    /// When it was written.
    pub version: ExportVersion,
    /// The peer id of the node that wrote it.
    pub writer: String,
    /// The query actor on that node that wrote it.
    pub actor: u16,
    /// The author's signature in base64, if the entry is signed.
    pub signature: Option<String>,
}

/// The clock reading of an exported entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportVersion {
    /// Milliseconds since the Unix epoch (HLC physical part).
    pub millis: u64,
    /// HLC logical part.
    pub counter: u32,
}

/// Bytes as (text, base64): exactly one is set.
fn split_bytes(bytes: &[u8]) -> (Option<String>, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (Some(text.to_owned()), None),
        Err(_) => (None, Some(BASE64.encode(bytes))),
    }
}

/// The bytes of a (text, base64) pair; `what` names the field in errors.
fn join_bytes(
    what: &str,
    text: Option<String>,
    base64: Option<String>,
) -> Result<Option<Bytes>, String> {
    match (text, base64) {
        (Some(text), None) => Ok(Some(Bytes::from(text))),
        (None, Some(encoded)) => BASE64
            .decode(encoded)
            .map(|bytes| Some(Bytes::from(bytes)))
            .map_err(|err| format!("{what}_base64 is not base64 ({err})")),
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(format!("both {what} and {what}_base64 are given")),
    }
}

impl ExportLine {
    /// The line for `entry` under `key`.
    pub fn new(key: &[u8], entry: &Entry) -> ExportLine {
        let (key, key_base64) = split_bytes(key);
        let (value, value_base64) = entry.value.as_deref().map_or((None, None), split_bytes);
        ExportLine {
            key,
            key_base64,
            value,
            value_base64,
            tombstone: entry.is_tombstone(),
            version: ExportVersion {
                millis: entry.version.millis,
                counter: entry.version.counter,
            },
            writer: entry.version.node.to_string(),
            actor: entry.version.actor,
            signature: entry.signature.as_ref().map(|sig| BASE64.encode(sig)),
        }
    }

    /// The key and entry this line stands for.
    pub fn into_entry(self) -> Result<(Key, Entry), String> {
        let key = join_bytes("key", self.key, self.key_base64)?.ok_or("no key")?;
        let value = join_bytes("value", self.value, self.value_base64)?;
        if self.tombstone != value.is_none() {
            return Err("a tombstone has no value, and anything else has one".into());
        }
        let signature = match self.signature {
            Some(sig) => Some(Bytes::from(
                BASE64
                    .decode(sig)
                    .map_err(|err| format!("signature is not base64 ({err})"))?,
            )),
            None => None,
        };
        let version = Version {
            millis: self.version.millis,
            counter: self.version.counter,
            node: NodeId::new(self.writer),
            actor: self.actor,
        };
        Ok((
            key,
            Entry {
                version,
                value,
                signature,
            },
        ))
    }
}

/// A stopped node's world, opened and locked for as long as this lives.
struct Stopped {
    /// The database file.
    path: PathBuf,
    /// The database.
    db: redb::Database,
    /// Every entry in it.
    map: BTreeMap<Key, Entry>,
    /// Log segments a crash left, replayed on opening.
    replayed_segments: usize,
    /// Held while the tool runs.
    _lock: File,
}

impl Stopped {
    /// Locks and opens the world `world` in `dir`; `create` makes an empty world if there is
    /// none. Entries this node's identity wrote but did not sign yet are signed on opening.
    fn open(dir: &Path, world: &str, create: bool) -> Result<Stopped, AdminError> {
        let path = dir.join(DB_FILE);
        if !create && !path.exists() {
            return Err(AdminError::NoWorld(dir.to_owned()));
        }
        std::fs::create_dir_all(dir).map_err(|source| AdminError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let lock = lock_world(dir).map_err(|err| match err {
            NodeError::Locked { dir, .. } => AdminError::Running(dir),
            other => AdminError::Node(other),
        })?;
        let log_dir = dir.join(LOG_DIR);
        let replayed_segments = log::segments(&log_dir).map_err(StoreError::from)?.len();
        let key_path = dir.join(identity::IDENTITY_FILE);
        let keypair = identity::load_or_create(&key_path).map_err(|source| AdminError::Io {
            path: key_path.clone(),
            source,
        })?;
        let signer = Signer::new(&keypair, world).map_err(|err| AdminError::Io {
            path: key_path,
            source: io::Error::other(err.to_string()),
        })?;
        let (db, map) = persist::open(&path, &log_dir, &signer)?;
        Ok(Stopped {
            path,
            db,
            map,
            replayed_segments,
            _lock: lock,
        })
    }
}

/// What `cmud check` found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Entries read, tombstones included.
    pub entries: usize,
    /// Entries with a value.
    pub live: usize,
    /// Delete markers.
    pub tombstones: usize,
    /// Distinct nodes that wrote entries.
    pub writers: usize,
    /// Entries that carry a signature.
    pub signed: usize,
    /// Tombstones past `tombstone_ttl`, which the node purges on its next start.
    pub expired: usize,
    /// Log segments left by a crash, replayed into the database.
    pub replayed_segments: usize,
    /// Size of the database file, in bytes.
    pub file_bytes: u64,
    /// Quota charges kept beyond the entries (keys whose entry held does not imply them).
    pub quota_charges: usize,
    /// Writers whose keys the quota cut.
    pub quota_cuts: usize,
    /// One line per entry that fails validation.
    pub problems: Vec<String>,
}

/// Reads the whole world in `dir` and verifies every entry as if a peer had sent it.
pub fn check(dir: &Path, world: &str, limits: &Limits) -> Result<CheckReport, AdminError> {
    let world = Stopped::open(dir, world, false)?;
    let now = wall_millis();
    let mut report = CheckReport {
        replayed_segments: world.replayed_segments,
        file_bytes: std::fs::metadata(&world.path).map_or(0, |meta| meta.len()),
        ..CheckReport::default()
    };
    // An unreadable quota row is damage, like an unreadable entry.
    (report.quota_charges, report.quota_cuts) =
        quota::disk::summary(&world.db).map_err(|err| StoreError::Damaged {
            path: world.path.clone(),
            detail: format!("a quota row does not read: {err}"),
        })?;
    let mut writers = BTreeSet::new();
    for (key, entry) in &world.map {
        report.entries += 1;
        if entry.is_tombstone() {
            report.tombstones += 1;
        } else {
            report.live += 1;
        }
        report.signed += usize::from(entry.signature.is_some());
        writers.insert(entry.author().clone());
        match check_entry(key, entry, now, limits) {
            Ok(()) => {}
            Err(Rejected::Expired) => report.expired += 1,
            Err(reason) => report.problems.push(format!(
                "{}: {reason}",
                String::from_utf8_lossy(key).escape_debug()
            )),
        }
    }
    report.writers = writers.len();
    Ok(report)
}

impl std::fmt::Display for CheckReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "entries: {} ({} live, {} tombstones, {} signed) from {} writers",
            self.entries, self.live, self.tombstones, self.signed, self.writers
        )?;
        writeln!(f, "database file: {} bytes", self.file_bytes)?;
        if self.quota_charges + self.quota_cuts > 0 {
            writeln!(
                f,
                "quota state: {} charges kept beyond the entries, {} writers cut",
                self.quota_charges, self.quota_cuts
            )?;
        }
        if self.expired > 0 {
            writeln!(
                f,
                "{} tombstones are past tombstone_ttl: the node purges them when it starts",
                self.expired
            )?;
        }
        if self.replayed_segments > 0 {
            writeln!(
                f,
                "log: {} segments left by an unclean stop were replayed into the database",
                self.replayed_segments
            )?;
        }
        for problem in &self.problems {
            writeln!(f, "problem: {problem}")?;
        }
        match self.problems.len() {
            0 => writeln!(f, "ok"),
            n => writeln!(f, "{n} entries fail validation"),
        }
    }
}

/// Writes every entry of the world in `dir` whose key starts with `prefix` to `out`, one JSON
/// line each, in key order. Returns the number written.
pub fn export(
    dir: &Path,
    world: &str,
    prefix: &[u8],
    out: &mut impl Write,
) -> Result<usize, AdminError> {
    let world = Stopped::open(dir, world, false)?;
    let out_err = |source| AdminError::Io {
        path: "the output".into(),
        source,
    };
    let mut written = 0;
    for (key, entry) in world.map.range::<[u8], _>((
        std::ops::Bound::Included(prefix),
        std::ops::Bound::Unbounded,
    )) {
        if !key.starts_with(prefix) {
            break;
        }
        serde_json::to_writer(&mut *out, &ExportLine::new(key, entry))
            .map_err(|err| out_err(err.into()))?;
        out.write_all(b"\n").map_err(out_err)?;
        written += 1;
    }
    out.flush().map_err(out_err)?;
    Ok(written)
}

/// What `cmud import` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Lines read.
    pub read: usize,
    /// Entries newer than what the world had, now merged.
    pub merged: usize,
    /// Entries the world already had at the same or a newer version.
    pub unchanged: usize,
    /// Tombstones past `tombstone_ttl`, left out: every node has forgotten those keys.
    pub expired: usize,
}

/// Merges the JSON lines of `file` into the world in `dir` (created if missing) under
/// last-writer-wins. Every line is read and verified first: one bad line imports nothing.
pub fn import(
    dir: &Path,
    world: &str,
    file: &Path,
    limits: &Limits,
) -> Result<ImportReport, AdminError> {
    let input = File::open(file).map_err(|source| AdminError::Io {
        path: file.to_owned(),
        source,
    })?;
    let world_name = world;
    let mut world = Stopped::open(dir, world, true)?;
    let now = wall_millis();
    let mut report = ImportReport::default();
    let mut changed = HashMap::new();
    for (index, line) in BufReader::new(input).lines().enumerate() {
        let bad = |message: String| AdminError::BadLine {
            path: file.to_owned(),
            line: index + 1,
            message,
        };
        let line = line.map_err(|err| bad(err.to_string()))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: ExportLine =
            serde_json::from_str(&line).map_err(|err| bad(format!("not an entry: {err}")))?;
        let (key, entry) = parsed.into_entry().map_err(bad)?;
        report.read += 1;
        match check_entry(&key, &entry, now, limits) {
            Ok(()) => {}
            Err(Rejected::Expired) => {
                report.expired += 1;
                continue;
            }
            Err(reason) => return Err(bad(reason.to_string())),
        }
        // The same check peers' entries pass: a line changed since it was written, or an
        // entry its writer never signed, would be dropped by the node anyway.
        let pair = [(key, entry)];
        if !verify_entries(world_name, &pair)[0] {
            return Err(bad(
                "its signature does not verify: it was changed, or its writer did not sign it"
                    .into(),
            ));
        }
        let [(key, entry)] = pair;
        if merge(&mut world.map, key.clone(), entry.clone()) != Merged::Unchanged {
            changed.insert(key, entry);
        }
    }
    // A key twice in the file counts once, at its newest version.
    report.merged = changed.len();
    report.unchanged = report.read - report.expired - report.merged;
    persist::merge_into(&world.db, &world.path, &changed)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(value: Option<&[u8]>) -> Entry {
        let version = Version {
            millis: 1_700_000_000_000,
            counter: 3,
            node: NodeId::new("12D3KooWriter"),
            actor: 1,
        };
        match value {
            Some(value) => Entry::value(version, Bytes::copy_from_slice(value)),
            None => Entry::tombstone(version),
        }
    }

    fn round_trip(key: &[u8], entry: &Entry) -> String {
        let text = serde_json::to_string(&ExportLine::new(key, entry)).unwrap();
        let back: ExportLine = serde_json::from_str(&text).unwrap();
        assert_eq!(
            back.into_entry().unwrap(),
            (Bytes::copy_from_slice(key), entry.clone())
        );
        text
    }

    #[test]
    fn text_is_text_and_other_bytes_are_base64() {
        let text = round_trip(b"p/x/name", &entry(Some(b"alice")));
        assert_eq!(
            text,
            r#"{"key":"p/x/name","value":"alice","tombstone":false,"version":{"millis":1700000000000,"counter":3},"writer":"12D3KooWriter","actor":1,"signature":null}"#
        );
        let text = round_trip(&[0xFF, 0x00], &entry(Some(&[0xC3, 0x28])));
        assert!(text.contains(r#""key_base64":"/wA=""#), "{text}");
        assert!(text.contains(r#""value_base64":"wyg=""#), "{text}");
        let mut signed = entry(None);
        signed.signature = Some(Bytes::from_static(&[7; 64]));
        let text = round_trip(b"gone", &signed);
        assert!(text.contains(r#""tombstone":true"#), "{text}");
        assert!(!text.contains(r#""value"#), "{text}");
    }

    #[test]
    fn import_leaves_out_expired_tombstones_and_counts_what_it_merged() {
        let dir = tempfile::tempdir().unwrap();
        let world = dir.path().join("w");
        let file = dir.path().join("in.jsonl");
        let keypair = libp2p::identity::Keypair::generate_ed25519();
        let signer = crate::store::sign::Signer::new(&keypair, "w").unwrap();
        let signed = |key: &[u8], mut unsigned: Entry| {
            unsigned.version.node = signer.node().clone();
            signer.sign(key, &unsigned)
        };
        let unsigned = ExportLine::new(b"k", &entry(Some(b"v")));
        std::fs::write(&file, serde_json::to_string(&unsigned).unwrap()).unwrap();
        assert!(matches!(
            import(&world, "w", &file, &Limits::default()),
            Err(AdminError::BadLine { line: 1, .. })
        ));
        let live = ExportLine::new(b"k", &signed(b"k", entry(Some(b"v"))));
        let mut old = entry(None);
        old.version.millis = 1;
        let expired = ExportLine::new(b"old", &old);
        let text = [&live, &expired, &live]
            .map(|line| serde_json::to_string(line).unwrap())
            .join("\n");
        std::fs::write(&file, text).unwrap();
        let report = import(&world, "w", &file, &Limits::default()).unwrap();
        let want = ImportReport {
            read: 3,
            merged: 1,
            unchanged: 1,
            expired: 1,
        };
        assert_eq!(report, want);
        let mut out = Vec::new();
        assert_eq!(export(&world, "w", b"", &mut out).unwrap(), 1);
        assert_eq!(check(&world, "w", &Limits::default()).unwrap().live, 1);
        assert!(matches!(
            export(&dir.path().join("none"), "w", b"", &mut out),
            Err(AdminError::NoWorld(_))
        ));
    }

    #[test]
    fn inconsistent_lines_are_refused() {
        let line = ExportLine::new(b"k", &entry(Some(b"v")));
        let no_value = ExportLine {
            value: None,
            ..line.clone()
        };
        assert!(no_value.into_entry().is_err());
        let both = ExportLine {
            key_base64: Some("aw==".into()),
            ..line.clone()
        };
        assert!(both.into_entry().unwrap_err().contains("both key"));
        let bad = ExportLine {
            signature: Some("not base64!".into()),
            ..line
        };
        assert!(bad.into_entry().unwrap_err().contains("signature"));
        assert!(serde_json::from_str::<ExportLine>(r#"{"key":"k","extra":1}"#).is_err());
    }
}
