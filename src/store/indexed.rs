//! A replica's ordered map together with its [`FingerprintIndex`], merged through one door so
//! the two never drift apart. The gateway holds one; reconciliation reads it.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::entry::{Entry, Key, Merged, merge};
use super::fingerprint::{Fingerprint, FingerprintIndex, Summary};

/// Whether `held` goes with an eviction of its key at `version`: it is that writer's, and not
/// newer.
pub fn is_evicted(held: &Entry, version: &super::entry::Version) -> bool {
    held.version.node == version.node && held.version <= *version
}

/// An ordered map of entries whose range fingerprints are kept up to date.
#[derive(Debug, Default)]
pub struct IndexedMap {
    /// Every key, tombstones included.
    map: BTreeMap<Key, Entry>,
    /// Range fingerprints of `map`'s (key, version) pairs.
    index: FingerprintIndex,
}

impl IndexedMap {
    /// Indexes `map` (O(n log n)).
    pub fn new(map: BTreeMap<Key, Entry>) -> Self {
        let mut index = FingerprintIndex::default();
        for (key, entry) in &map {
            index.upsert(key, Fingerprint::of_entry(key, &entry.version));
        }
        IndexedMap { map, index }
    }

    /// Merges one entry (LWW) and updates the index if the map changed.
    pub fn merge(&mut self, key: Key, entry: Entry) -> Merged {
        let fingerprint = Fingerprint::of_entry(&key, &entry.version);
        let merged = merge(&mut self.map, key.clone(), entry);
        if merged != Merged::Unchanged {
            self.index.upsert(&key, fingerprint);
        }
        merged
    }

    /// Removes `key`'s entry if it is `version`'s writer's, at or before `version` (an entry
    /// evicted by its writer's quota), keeping the index in step. Returns whether it did.
    pub fn evict(&mut self, key: &[u8], version: &super::entry::Version) -> bool {
        if !self
            .map
            .get(key)
            .is_some_and(|held| is_evicted(held, version))
        {
            return false;
        }
        self.map.remove(key);
        self.index.remove(key);
        true
    }

    /// Removes `keys` (expired tombstones) from the map and the index.
    ///
    /// The index has no removal of its own, so it is rebuilt when anything was removed: O(n log n),
    /// but only once per tombstone purge, which runs a few times per `tombstone_ttl` and only
    /// when a tombstone expired.
    pub fn remove_all<'a>(&mut self, keys: impl IntoIterator<Item = &'a Key>) {
        let mut removed = false;
        for key in keys {
            removed |= self.map.remove(key).is_some();
        }
        if removed {
            let mut index = FingerprintIndex::default();
            for (key, entry) in &self.map {
                index.upsert(key, Fingerprint::of_entry(key, &entry.version));
            }
            self.index = index;
        }
    }

    /// The entries, in key order.
    pub fn map(&self) -> &BTreeMap<Key, Entry> {
        &self.map
    }

    /// Number of keys, tombstones included.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Size and fingerprint of the keys in `[lower, upper)`, in O(log n).
    pub fn summary(&self, lower: &[u8], upper: Option<&[u8]>) -> Summary {
        self.index.summary(lower, upper)
    }

    /// Number of keys below `bound`, in O(log n).
    pub fn rank(&self, bound: &[u8]) -> u64 {
        self.index.rank(bound)
    }

    /// The key with `rank` smaller keys, in O(log n).
    pub fn key_at(&self, rank: u64) -> Option<&Key> {
        self.index.key_at(rank)
    }

    /// The entries in `[lower, upper)`, in key order.
    pub fn range<'a>(
        &'a self,
        lower: &'a [u8],
        upper: Option<&'a [u8]>,
    ) -> impl Iterator<Item = (&'a Key, &'a Entry)> + 'a {
        let valid = upper.is_none_or(|upper| lower < upper);
        let bounds = (
            Bound::Included(lower),
            upper.map_or(Bound::Unbounded, Bound::Excluded),
        );
        // `BTreeMap::range` panics on an empty or inverted range: such a range has no entries.
        valid
            .then(|| self.map.range::<[u8], _>(bounds))
            .into_iter()
            .flatten()
    }
}
