//! Checks an entry from outside this node must pass before it may touch a replica.
//!
//! Pure functions over one entry: the network layer and the gateway call them on every entry a
//! peer sent. A future-dated entry is not invalid, only early: it is skipped alone and fetched
//! again by anti-entropy once it is no longer in the future.

use std::time::Duration;

use super::entry::Entry;

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
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: 1024,
            max_value_bytes: 32 * 1024,
            max_args: 1024,
            max_clock_skew: Duration::from_secs(60),
            tombstone_ttl: DEFAULT_TOMBSTONE_TTL,
        }
    }
}

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

/// Why an entry from a peer was not merged.
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
}

impl Rejected {
    /// Whether the entry may become acceptable later (only future-dated ones do).
    pub fn is_transient(&self) -> bool {
        matches!(self, Rejected::Future { .. })
    }
}

/// Checks one entry received from a peer against `limits` at wall time `now_ms`.
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
    let horizon = now_ms.saturating_add(limits.max_clock_skew.as_millis() as u64);
    if entry.version.millis > horizon {
        return Err(Rejected::Future {
            ahead_ms: entry.version.millis - now_ms,
        });
    }
    Ok(())
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
}
