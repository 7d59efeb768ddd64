//! The one place where entries are judged: every entry from outside this node (gossip, sync,
//! relayed by a third node) passes [`check_remote`] before it may touch a replica, and local
//! writes pass the same namespace and size rules ([`check_local_key`]) before they are made.
//!
//! Pure functions over entries; the gateway runs [`check_remote`] off its own task (signature
//! checks are the costly part) and applies quotas, which need its state, after it. A
//! future-dated entry is not invalid, only early: it is skipped alone and fetched again by
//! anti-entropy once it is no longer in the future.

use std::time::Duration;

use super::entry::{Entry, KeyedEntry};
use super::quota::QuotaLimits;
use super::sign::{SIGNATURE_BYTES, verify_entries};
/// Size limits on keys and values, shared by the RPC port and peer validation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest key accepted, in bytes.
    pub max_key_bytes: usize,
    /// Largest value accepted, in bytes.
    pub max_value_bytes: usize,
    /// Most arguments one RPC command may have.
    pub max_args: usize,
    /// How far in the future (by our wall clock) a version may be and still be merged.
    pub max_clock_skew: Duration,
    /// How long a tombstone is kept before it is purged; older ones are not accepted.
    pub tombstone_ttl: Duration,
    /// Most keys one writer may have in the world (0: no limit); see `store::quota`.
    pub max_keys_per_writer: u64,
    /// Most bytes (keys plus values) one writer may have in the world (0: no limit).
    pub max_bytes_per_writer: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: 1024,
            max_value_bytes: 32 * 1024,
            max_args: 1024,
            max_clock_skew: Duration::from_secs(60),
            tombstone_ttl: DEFAULT_TOMBSTONE_TTL,
            max_keys_per_writer: DEFAULT_MAX_KEYS_PER_WRITER,
            max_bytes_per_writer: DEFAULT_MAX_BYTES_PER_WRITER,
        }
    }
}

/// Most keys one writer may have by default: far more than the game's schema uses.
pub const DEFAULT_MAX_KEYS_PER_WRITER: u64 = 100_000;

/// Most bytes one writer may have by default: 64 MiB.
pub const DEFAULT_MAX_BYTES_PER_WRITER: u64 = 64 * 1024 * 1024;

/// How long tombstones are kept by default: a week.
pub const DEFAULT_TOMBSTONE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The purge horizon at wall time `now_ms`: tombstones written before it are purged, and
/// refused from peers.
pub fn purge_horizon(now_ms: u64, ttl: Duration) -> u64 {
    now_ms.saturating_sub(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
}

/// How often replicas purge expired tombstones: a quarter of the TTL, between 100 ms and a
/// minute (a purge is a scan of the whole map).
pub fn purge_period(ttl: Duration) -> Duration {
    (ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(60))
}

/// Whether `entry` is a tombstone older than the purge horizon.
pub fn is_expired_tombstone(entry: &Entry, horizon_ms: u64) -> bool {
    entry.is_tombstone() && entry.version.millis < horizon_ms
}

/// Largest signature an entry may carry, in bytes (an ed25519 signature is 64).
pub const MAX_SIGNATURE_BYTES: usize = 256;

/// Largest peer id text accepted in a version, in bytes (base58 ed25519 peer ids are 52).
pub const MAX_NODE_ID_BYTES: usize = 128;

/// The namespace of the players' own state: only peer X may write under `p/<X>/`.
pub const OWNER_PREFIX: &[u8] = b"p/";

impl Limits {
    /// The per-writer quota.
    pub fn quota(&self) -> QuotaLimits {
        QuotaLimits {
            max_keys: self.max_keys_per_writer,
            max_bytes: self.max_bytes_per_writer,
        }
    }

    /// These limits with quotas off (benchmarks and scale tests that write more).
    pub fn without_quota(self) -> Limits {
        Limits {
            max_keys_per_writer: 0,
            max_bytes_per_writer: 0,
            ..self
        }
    }

    /// The latest version time (Unix milliseconds) merged at wall time `now_ms`.
    pub fn horizon_ms(&self, now_ms: u64) -> u64 {
        let skew_ms = u64::try_from(self.max_clock_skew.as_millis()).unwrap_or(u64::MAX);
        now_ms.saturating_add(skew_ms)
    }
}

/// Why an entry was not merged, or a local write not made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// The version is further ahead of our clock than `max_clock_skew`: try again later.
    #[error("version is {ahead_ms} ms in the future")]
    Future {
        /// How far ahead of our wall clock the version is.
        ahead_ms: u64,
    },
    /// The key is empty or longer than the limit.
    #[error("key of {0} bytes is empty or over the limit")]
    Key(usize),
    /// The value is longer than the limit.
    #[error("value of {0} bytes is over the limit")]
    Value(usize),
    /// The signature slot or the writer id is malformed.
    #[error("malformed writer id or signature")]
    Malformed,
    /// A tombstone older than the purge horizon: every replica has dropped it already.
    #[error("tombstone older than tombstone_ttl")]
    Expired,
    /// The key lies under `p/<id>/` of a peer other than the writer.
    #[error("key under another peer's namespace")]
    Namespace,
    /// The signature is missing, or not the writer's over this entry in this world.
    #[error("missing or bad signature")]
    Signature,
}

impl Rejected {
    /// Whether the entry may become acceptable later (only future-dated ones do).
    pub fn is_transient(&self) -> bool {
        matches!(self, Rejected::Future { .. })
    }
}

/// The peer id whose namespace `key` lies in, if it lies under `p/`: the text between `p/`
/// and the next `/` (or the end). `p/` keys have an owner even when it is empty or bogus, so
/// that no one can write there.
pub fn namespace_owner(key: &[u8]) -> Option<&[u8]> {
    let rest = key.strip_prefix(OWNER_PREFIX)?;
    let end = rest.iter().position(|&b| b == b'/').unwrap_or(rest.len());
    Some(&rest[..end])
}

/// Whether `writer` may write `key`: keys outside `p/` are open to every signing node.
pub fn may_write(key: &[u8], writer: &str) -> bool {
    namespace_owner(key).is_none_or(|owner| owner == writer.as_bytes())
}

/// Checks a key this node is about to write: size limits and namespace.
pub fn check_local_key(key: &[u8], writer: &str, limits: &Limits) -> Result<(), Rejected> {
    if key.is_empty() || key.len() > limits.max_key_bytes {
        return Err(Rejected::Key(key.len()));
    }
    if !may_write(key, writer) {
        return Err(Rejected::Namespace);
    }
    Ok(())
}

/// Checks what can be checked of one entry without its signature, at wall time `now_ms`.
pub fn check_entry(
    key: &[u8],
    entry: &Entry,
    now_ms: u64,
    limits: &Limits,
) -> Result<(), Rejected> {
    if key.is_empty() || key.len() > limits.max_key_bytes {
        return Err(Rejected::Key(key.len()));
    }
    if let Some(value) = &entry.value
        && value.len() > limits.max_value_bytes
    {
        return Err(Rejected::Value(value.len()));
    }
    let node = entry.version.node.as_str();
    if node.is_empty()
        || node.len() > MAX_NODE_ID_BYTES
        || entry
            .signature
            .as_ref()
            .is_some_and(|s| s.len() > MAX_SIGNATURE_BYTES)
    {
        return Err(Rejected::Malformed);
    }
    if is_expired_tombstone(entry, purge_horizon(now_ms, limits.tombstone_ttl)) {
        return Err(Rejected::Expired);
    }
    if !may_write(key, node) {
        return Err(Rejected::Namespace);
    }
    if entry.version.millis > limits.horizon_ms(now_ms) {
        return Err(Rejected::Future {
            ahead_ms: entry.version.millis - now_ms,
        });
    }
    Ok(())
}

/// How many entries of a delivery were turned away, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rejections {
    /// Skipped for now: dated too far in the future (fetched again later).
    pub future: usize,
    /// Over the size limits or malformed.
    pub malformed: usize,
    /// Under another peer's namespace.
    pub namespace: usize,
    /// Unsigned, or not signed by their writer over this very entry in this world.
    pub signatures: usize,
}

impl Rejections {
    /// Entries dropped for good (everything but the future-dated ones).
    pub fn invalid(&self) -> usize {
        self.malformed + self.namespace + self.signatures
    }
}

/// The outcome of [`check_remote`].
#[derive(Debug, Default)]
pub struct Checked {
    /// Entries that may be merged (quotas permitting).
    pub accepted: Vec<KeyedEntry>,
    /// Entries turned away.
    pub rejected: Rejections,
}

/// Checks entries from outside this node for `world` at wall time `now_ms`: limits, namespace,
/// clock skew, then the writer's signature (verified in batches).
pub fn check_remote(
    world: &str,
    entries: Vec<KeyedEntry>,
    now_ms: u64,
    limits: &Limits,
) -> Checked {
    let mut checked = Checked::default();
    let mut candidates = Vec::with_capacity(entries.len());
    for (key, entry) in entries {
        match check_entry(&key, &entry, now_ms, limits) {
            Ok(()) => candidates.push((key, entry)),
            Err(Rejected::Future { .. }) => checked.rejected.future += 1,
            Err(Rejected::Namespace) => checked.rejected.namespace += 1,
            Err(_) => checked.rejected.malformed += 1,
        }
    }
    let verdicts = verify_entries(world, &candidates);
    for ((key, entry), signed) in candidates.into_iter().zip(verdicts) {
        let well_formed = entry
            .signature
            .as_ref()
            .is_some_and(|s| s.len() == SIGNATURE_BYTES);
        if signed && well_formed {
            checked.accepted.push((key, entry));
        } else {
            checked.rejected.signatures += 1;
        }
    }
    checked
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::store::entry::{NodeId, Version};

    fn entry_at(millis: u64, value: &[u8]) -> Entry {
        let version = Version {
            millis,
            counter: 0,
            node: NodeId::new("peer"),
            actor: 0,
        };
        Entry::value(version, Bytes::copy_from_slice(value))
    }

    #[test]
    fn accepts_entries_within_the_skew() {
        let limits = Limits::default();
        assert_eq!(
            check_entry(b"k", &entry_at(100_000 + 60_000, b"v"), 100_000, &limits),
            Ok(())
        );
    }

    #[test]
    fn future_entries_are_transient_rejections() {
        let limits = Limits::default();
        let err =
            check_entry(b"k", &entry_at(100_000 + 60_001, b"v"), 100_000, &limits).unwrap_err();
        assert_eq!(err, Rejected::Future { ahead_ms: 60_001 });
        assert!(err.is_transient());
    }

    #[test]
    fn oversized_keys_and_values_are_rejected() {
        let limits = Limits {
            max_key_bytes: 4,
            max_value_bytes: 4,
            ..Limits::default()
        };
        assert_eq!(
            check_entry(b"", &entry_at(1, b"v"), 1, &limits),
            Err(Rejected::Key(0))
        );
        assert_eq!(
            check_entry(b"12345", &entry_at(1, b"v"), 1, &limits),
            Err(Rejected::Key(5))
        );
        assert_eq!(
            check_entry(b"k", &entry_at(1, b"12345"), 1, &limits),
            Err(Rejected::Value(5))
        );
        assert!(!Rejected::Value(5).is_transient());
    }

    #[test]
    fn tombstones_past_the_horizon_are_refused_but_old_values_are_not() {
        let limits = Limits {
            tombstone_ttl: Duration::from_secs(10),
            ..Limits::default()
        };
        let now = 100_000;
        let mut old = entry_at(now - 10_001, b"v");
        assert_eq!(check_entry(b"k", &old, now, &limits), Ok(()));
        old.value = None;
        assert_eq!(
            check_entry(b"k", &old, now, &limits),
            Err(Rejected::Expired)
        );
        assert!(!Rejected::Expired.is_transient());
        old.version.millis = now - 10_000;
        assert_eq!(check_entry(b"k", &old, now, &limits), Ok(()));
        assert_eq!(
            purge_period(Duration::from_secs(1)),
            Duration::from_millis(250)
        );
        assert_eq!(purge_period(DEFAULT_TOMBSTONE_TTL), Duration::from_secs(60));
    }

    #[test]
    fn malformed_writer_ids_are_rejected() {
        let mut entry = entry_at(1, b"v");
        entry.version.node = NodeId::new("");
        assert_eq!(
            check_entry(b"k", &entry, 1, &Limits::default()),
            Err(Rejected::Malformed)
        );
    }

    #[test]
    fn only_the_owner_may_write_its_namespace() {
        assert_eq!(namespace_owner(b"p/abc/name"), Some(&b"abc"[..]));
        assert_eq!(namespace_owner(b"p/abc"), Some(&b"abc"[..]));
        assert_eq!(namespace_owner(b"p/"), Some(&b""[..]));
        assert_eq!(namespace_owner(b"world/p/abc"), None);
        assert!(may_write(b"p/abc/name", "abc"));
        assert!(!may_write(b"p/abc/name", "abd"));
        assert!(!may_write(b"p/abcd/name", "abc"));
        assert!(!may_write(b"p/", "abc"));
        assert!(may_write(b"bench/1", "anyone"));
        let limits = Limits::default();
        assert_eq!(
            check_local_key(b"p/x/name", "y", &limits),
            Err(Rejected::Namespace)
        );
        let mut entry = entry_at(1, b"v");
        assert_eq!(
            check_entry(b"p/other/name", &entry, 1, &limits),
            Err(Rejected::Namespace)
        );
        entry.version.node = NodeId::new("other");
        assert_eq!(check_entry(b"p/other/name", &entry, 1, &limits), Ok(()));
    }

    #[test]
    fn remote_entries_need_their_writers_signature() {
        use crate::store::sign::Signer;
        use libp2p::identity::Keypair;

        let signer = Signer::new(&Keypair::ed25519_from_bytes([5; 32]).unwrap(), "w").unwrap();
        let mut good = entry_at(1_000, b"v");
        good.version.node = signer.node().clone();
        let key = Bytes::from(format!("p/{}/name", signer.node()));
        let signed = signer.sign(&key, &good);
        let entries = vec![
            (key.clone(), signed.clone()),
            (key.clone(), good.clone()),
            (Bytes::from_static(b"p/else/name"), signed.clone()),
            (
                key.clone(),
                Entry {
                    version: Version {
                        millis: 10_000_000,
                        ..signed.version.clone()
                    },
                    ..signed.clone()
                },
            ),
        ];
        let checked = check_remote("w", entries, 1_000, &Limits::default());
        assert_eq!(checked.accepted, vec![(key, signed)]);
        assert_eq!(
            checked.rejected,
            Rejections {
                future: 1,
                malformed: 0,
                namespace: 1,
                signatures: 1
            }
        );
        assert_eq!(checked.rejected.invalid(), 2);
    }
}
