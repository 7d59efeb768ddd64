//! A replica's ordered map together with its [`FingerprintIndex`], merged through one door so
//! the two never drift apart. The gateway holds one; reconciliation reads it.

use std::collections::{BTreeMap, HashSet};

use bytes::Bytes;

use super::compact::Stored;
use super::entry::{Entry, Key, Merged, Version};
use super::fingerprint::{Fingerprint, FingerprintIndex, Summary, Updated};

/// Whether `held` goes with an eviction of its key at `version`: it is that writer's, and not
/// newer.
pub fn is_evicted(held: &Version, version: &Version) -> bool {
    held.node == version.node && held <= version
}

/// An ordered map of entries whose range fingerprints are kept up to date: one treap holds
/// both, entries compact ([`Stored`]), so a key is held once.
#[derive(Debug, Default)]
pub struct IndexedMap {
    /// Every key, tombstones included, with range fingerprints of the (key, version) pairs.
    index: FingerprintIndex<Stored>,
}

impl IndexedMap {
    /// Indexes `map` (O(n log n)).
    pub fn new(map: BTreeMap<Key, Entry>) -> Self {
        let mut indexed = IndexedMap::default();
        for (key, entry) in map {
            indexed.merge(key, entry);
        }
        indexed
    }

    /// Merges one entry (LWW) and updates the index if the map changed.
    pub fn merge(&mut self, key: Key, entry: Entry) -> Merged {
        let updated = self.index.update(&key, |held| {
            let newer = held.is_none_or(|held| held.slot().cmp_version(&entry.version).is_lt());
            newer.then(|| {
                let fingerprint = Fingerprint::of_entry(&key, &entry.version);
                (fingerprint, Stored::new(&entry))
            })
        });
        match updated {
            Updated::Unchanged => Merged::Unchanged,
            Updated::Inserted => Merged::Changed { was_live: false },
            Updated::Replaced(old) => Merged::Changed {
                was_live: !old.slot().is_tombstone(),
            },
        }
    }

    /// Removes `key`'s entry if it is `version`'s writer's, at or before `version` (an entry
    /// evicted by its writer's quota), keeping the index in step. Returns whether it did.
    pub fn evict(&mut self, key: &[u8], version: &Version) -> bool {
        if !self
            .index
            .get(key)
            .is_some_and(|held| is_evicted(&held.slot().version(), version))
        {
            return false;
        }
        self.index.remove(key).is_some()
    }

    /// Removes `keys` (expired tombstones) from the map and the index.
    ///
    /// The tree is rebuilt when anything was removed: O(n log n), but only once per tombstone
    /// purge, which runs a few times per `tombstone_ttl` and only when a tombstone expired.
    pub fn remove_all<'a>(&mut self, keys: impl IntoIterator<Item = &'a Key>) {
        let gone: HashSet<&[u8]> = keys.into_iter().map(|key| &key[..]).collect();
        if !gone.is_empty() {
            self.index.retain(|key, _| !gone.contains(key));
        }
    }

    /// The entry under `key`, signature included (a copy: the map holds it compact).
    pub fn get(&self, key: &[u8]) -> Option<Entry> {
        self.index.get(key).map(Stored::to_entry)
    }

    /// The entry under `key` as held (no copy).
    pub fn slot(&self, key: &[u8]) -> Option<&super::compact::Slot> {
        self.index.get(key).map(Stored::slot)
    }

    /// Every key with its compact entry, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &Stored)> {
        self.index.iter_from(&[])
    }

    /// Every entry, in key order, as an ordinary map (a copy).
    pub fn to_map(&self) -> BTreeMap<Key, Entry> {
        self.iter()
            .map(|(key, stored)| (Bytes::copy_from_slice(key), stored.to_entry()))
            .collect()
    }

    /// Number of keys, tombstones included.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
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
    pub fn key_at(&self, rank: u64) -> Option<Key> {
        self.index.key_at(rank).map(Bytes::copy_from_slice)
    }

    /// The entries in `[lower, upper)`, in key order (copies).
    pub fn range<'a>(
        &'a self,
        lower: &'a [u8],
        upper: Option<&'a [u8]>,
    ) -> impl Iterator<Item = (Key, Entry)> + 'a {
        self.index
            .iter_from(lower)
            .take_while(move |(key, _)| upper.is_none_or(|upper| *key < upper))
            .map(|(key, stored)| (Bytes::copy_from_slice(key), stored.to_entry()))
    }
}
