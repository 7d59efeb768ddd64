//! One query actor's private replica: its ordered map, its clock, and the first-hand Puts it
//! has not yet flushed to the other local actors.
//!
//! Plain data and pure methods, with no I/O and no channels, so the rules are tested directly.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;

use super::clock::Hlc;
use super::compact::{Slot, Small};
use super::entry::{Batch, Entry, Key, KeyedEntry, NodeId, Version};
use super::indexed::is_evicted;
use super::packed::PackedMap;

/// A full replica owned by one actor.
#[derive(Debug)]
pub struct Replica {
    /// Every key this replica knows, tombstones included, in key order for prefix scans;
    /// compact (short keys and values inline, no signatures: the gateway keeps those) and
    /// packed (see [`PackedMap`]).
    map: PackedMap<Slot>,
    /// Number of keys whose entry is not a tombstone (`DBSIZE`), kept in step with `map`.
    live: usize,
    /// Stamps this actor's writes.
    clock: Hlc,
    /// First-hand Puts since the last flush, latest per key.
    pending: HashMap<Key, Entry>,
    /// First-hand Puts not yet in the log, in order (see [`Replica::take_unlogged`]).
    unlogged: Vec<KeyedEntry>,
}

impl Replica {
    /// An empty replica whose writes are stamped (`node`, `actor`).
    pub fn new(node: NodeId, actor: u16) -> Self {
        Replica {
            map: PackedMap::new(),
            live: 0,
            clock: Hlc::new(node, actor),
            pending: HashMap::new(),
            unlogged: Vec::new(),
        }
    }

    /// A replica holding `entries` (trusted, e.g. loaded from disk), with its clock moved past
    /// every one of them.
    pub fn with_entries(node: NodeId, actor: u16, entries: &BTreeMap<Key, Entry>) -> Self {
        let mut replica = Replica::new(node, actor);
        for entry in entries.values() {
            replica.clock.observe(&entry.version);
        }
        replica.live = entries.values().filter(|e| !e.is_tombstone()).count();
        // Built from a sorted iterator, so the leaves are full.
        replica.map = entries
            .iter()
            .map(|(key, entry)| (Small::new(key), Slot::new(entry)))
            .collect();
        replica
    }

    /// The first-hand Puts made since the last call, for the log: they are written to it
    /// before their acknowledgement leaves.
    pub fn take_unlogged(&mut self) -> Vec<KeyedEntry> {
        std::mem::take(&mut self.unlogged)
    }

    /// Whether there are first-hand Puts not yet taken by [`Replica::take_unlogged`].
    pub fn has_unlogged(&self) -> bool {
        !self.unlogged.is_empty()
    }

    /// Drops tombstones written before `horizon_ms`; returns how many.
    pub fn purge_expired(&mut self, horizon_ms: u64) -> usize {
        let before = self.map.len();
        self.map
            .retain(|_, slot| !slot.is_expired_tombstone(horizon_ms));
        before - self.map.len()
    }

    /// The node whose writes this replica stamps (its own namespace is `p/<node>/`).
    pub fn node(&self) -> &NodeId {
        self.clock.node()
    }

    /// The live value under `key`.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.map.get(key).and_then(Slot::value)
    }

    /// The live value under `key` as stored: a long one shares its buffer, so the RPC port
    /// sends it without a copy.
    pub fn get_stored(&self, key: &[u8]) -> Option<&Small> {
        self.map.get(key).and_then(Slot::stored_value)
    }

    /// The entry under `key`, tombstone or not, unsigned (a copy: the map holds it compact).
    pub fn entry(&self, key: &[u8]) -> Option<Entry> {
        self.map.get(key).map(Slot::to_entry)
    }

    /// The version of the entry under `key`, tombstone or not.
    pub fn version(&self, key: &[u8]) -> Option<Version> {
        self.map.get(key).map(Slot::version)
    }

    /// Writes `value` (or a tombstone for `None`) under `key` at a fresh version, as a
    /// first-hand Put. Returns whether the key had a live value before.
    pub fn put(&mut self, key: Bytes, value: Option<Bytes>, now_ms: u64) -> bool {
        let is_live = value.is_some();
        let version = self.clock.tick(now_ms);
        let entry = Entry {
            version,
            value,
            signature: None,
        };
        let slot = Slot::new(&entry);
        self.pending.insert(key.clone(), entry.clone());
        self.unlogged.push((key.clone(), entry));
        // The clock is past every version this replica holds or has seen, so a fresh tick
        // always wins: the slot is replaced outright.
        let was_live = match self.map.get_mut(&key[..]) {
            Some(held) => !std::mem::replace(held, slot).is_tombstone(),
            None => {
                self.map.insert(Small::new(&key), slot);
                false
            }
        };
        self.adjust_live(was_live, is_live);
        was_live
    }

    /// Merges entries that another participant made (a local actor's flush or the gateway's
    /// coalesced remote batch). They are trusted: the gateway validated remote ones. Returns
    /// how many keys changed.
    pub fn merge_batch(&mut self, batch: &[KeyedEntry]) -> usize {
        let mut changed = 0;
        for (key, entry) in batch {
            self.clock.observe(&entry.version);
            let is_live = !entry.is_tombstone();
            let was_live = match self.map.get_mut(&key[..]) {
                Some(held) if held.cmp_version(&entry.version).is_lt() => {
                    !std::mem::replace(held, Slot::new(entry)).is_tombstone()
                }
                Some(_) => continue,
                None => {
                    self.map.insert(Small::new(key), Slot::new(entry));
                    false
                }
            };
            changed += 1;
            self.adjust_live(was_live, is_live);
        }
        changed
    }

    /// Drops each key's entry if it is the given version's writer's and not newer (evicted by
    /// that writer's quota at the gateway). Returns the keys dropped.
    pub fn evict(&mut self, entries: &[(Key, Version)]) -> Vec<Key> {
        let mut gone = Vec::new();
        for (key, version) in entries {
            if self
                .map
                .get(&key[..])
                .is_some_and(|held| is_evicted(&held.version(), version))
                && let Some(held) = self.map.remove(&key[..])
            {
                self.adjust_live(!held.is_tombstone(), false);
                gone.push(key.clone());
            }
        }
        gone
    }

    fn adjust_live(&mut self, was_live: bool, is_live: bool) {
        match (was_live, is_live) {
            (false, true) => self.live += 1,
            (true, false) => self.live -= 1,
            _ => {}
        }
    }

    /// Whether there are first-hand Puts not yet taken by [`Replica::take_pending`].
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Takes the first-hand Puts made since the last call, or `None` if there were none.
    pub fn take_pending(&mut self) -> Option<Batch> {
        if self.pending.is_empty() {
            return None;
        }
        // Taken rather than drained: a drained table keeps the size of the largest burst.
        Some(Arc::new(
            std::mem::take(&mut self.pending).into_iter().collect(),
        ))
    }

    /// Calls `visit` on each live key starting with `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: &[u8], mut visit: impl FnMut(&[u8], &[u8])) {
        for (key, value) in self.live_from(Bound::Included(prefix), prefix) {
            visit(key, value);
        }
    }

    /// The live keys and values from `start` on that begin with `prefix`, in key order.
    pub fn live_from<'a>(
        &'a self,
        start: Bound<&'a [u8]>,
        prefix: &'a [u8],
    ) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone + 'a {
        self.live_stored_from(start, prefix)
            .map(|(key, value)| (key, &value[..]))
    }

    /// [`Replica::live_from`] with the values as stored (see [`Replica::get_stored`]).
    pub fn live_stored_from<'a>(
        &'a self,
        start: Bound<&'a [u8]>,
        prefix: &'a [u8],
    ) -> impl Iterator<Item = (&'a [u8], &'a Small)> + Clone + 'a {
        self.map
            .range_from(start)
            .take_while(move |(key, _)| key.starts_with(prefix))
            .filter_map(|(key, slot)| slot.stored_value().map(|value| (&key[..], value)))
    }

    /// Number of live keys.
    pub fn live_keys(&self) -> usize {
        self.live
    }

    /// Every entry, tombstones included, in key order, unsigned (copies).
    pub fn entries(&self) -> BTreeMap<Key, Entry> {
        self.map
            .iter()
            .map(|(key, slot)| (key.to_bytes(), slot.to_entry()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn only_tombstones_older_than_the_horizon_are_purged() {
        let mut replica = Replica::new(NodeId::new("n"), 0);
        replica.put(bytes("old"), Some(bytes("v")), 1_000);
        replica.put(bytes("gone"), None, 1_000);
        replica.put(bytes("recent"), None, 2_000);
        assert_eq!(replica.purge_expired(2_000), 1);
        assert!(replica.entry(b"gone").is_none());
        assert!(replica.entry(b"recent").is_some());
        assert_eq!(replica.get(b"old"), Some(&b"v"[..]));
        assert_eq!(replica.live_keys(), 1);
    }

    #[test]
    fn an_eviction_drops_only_that_writers_entry_up_to_its_version() {
        let mut writer = Replica::new(NodeId::new("w"), 0);
        writer.put(bytes("a"), Some(bytes("1")), 1_000);
        writer.put(bytes("b"), Some(bytes("1")), 1_000);
        let batch = writer.take_pending().unwrap();
        let evicted_at = |key: &str| {
            let (_, entry) = batch.iter().find(|(k, _)| k == key).unwrap();
            entry.version.clone()
        };
        let mut replica = Replica::new(NodeId::new("n"), 0);
        replica.merge_batch(&batch);
        replica.put(bytes("b"), Some(bytes("mine")), 2_000);
        let gone = replica.evict(&[(bytes("a"), evicted_at("a")), (bytes("b"), evicted_at("b"))]);
        assert_eq!(gone, vec![bytes("a")]);
        assert_eq!(replica.get(b"b"), Some(&b"mine"[..]), "a newer write stays");
        assert_eq!(replica.live_keys(), 1);
    }

    #[test]
    fn reput_of_same_value_wins_over_a_later_concurrent_write() {
        // The LWW trace: A puts cheese, B puts mustard 10 ms later, A puts cheese again 10 ms
        // after that. Every replica must end on cheese.
        let mut a = Replica::new(NodeId::new("n"), 0);
        let mut b = Replica::new(NodeId::new("n"), 1);
        a.put(bytes("lunch"), Some(bytes("cheese")), 1_000);
        let first = a.take_pending().unwrap();
        b.merge_batch(&first);
        b.put(bytes("lunch"), Some(bytes("mustard")), 1_010);
        let second = b.take_pending().unwrap();
        a.merge_batch(&second);
        assert_eq!(a.get(b"lunch"), Some(&b"mustard"[..]));
        a.put(bytes("lunch"), Some(bytes("cheese")), 1_020);
        let third = a.take_pending().unwrap();
        b.merge_batch(&third);
        assert_eq!(a.get(b"lunch"), Some(&b"cheese"[..]));
        assert_eq!(b.get(b"lunch"), Some(&b"cheese"[..]));
    }

    #[test]
    fn reput_wins_even_when_the_wall_clock_is_behind() {
        let mut a = Replica::new(NodeId::new("a"), 0);
        let mut b = Replica::new(NodeId::new("b"), 0);
        b.put(bytes("k"), Some(bytes("late")), 50_000);
        a.merge_batch(&b.take_pending().unwrap());
        // A's wall clock is far behind B's, but A has seen B's write: its re-Put still wins.
        a.put(bytes("k"), Some(bytes("again")), 1_000);
        b.merge_batch(&a.take_pending().unwrap());
        assert_eq!(b.get(b"k"), Some(&b"again"[..]));
    }

    #[test]
    fn pending_holds_latest_per_key_and_empties_on_flush() {
        let mut r = Replica::new(NodeId::new("n"), 0);
        assert!(r.take_pending().is_none());
        assert!(!r.has_pending());
        r.put(bytes("k"), Some(bytes("1")), 1);
        assert!(r.has_pending());
        r.put(bytes("k"), Some(bytes("2")), 2);
        r.put(bytes("j"), None, 3);
        let batch = r.take_pending().unwrap();
        assert_eq!(batch.len(), 2);
        assert!(r.take_pending().is_none());
        assert!(!r.has_pending());
    }

    #[test]
    fn live_count_follows_puts_deletes_and_merges() {
        let mut r = Replica::new(NodeId::new("n"), 0);
        assert!(!r.put(bytes("a"), Some(bytes("1")), 1));
        assert!(r.put(bytes("a"), Some(bytes("2")), 2));
        r.put(bytes("b"), Some(bytes("1")), 3);
        assert_eq!(r.live_keys(), 2);
        assert!(r.put(bytes("a"), None, 4));
        assert_eq!(r.live_keys(), 1);
        let mut other = Replica::new(NodeId::new("m"), 0);
        other.merge_batch(&r.take_pending().unwrap());
        assert_eq!(other.live_keys(), 1);
        assert_eq!(other.get(b"a"), None);
    }

    #[test]
    fn prefix_scan_is_in_key_order_and_skips_tombstones() {
        let mut r = Replica::new(NodeId::new("n"), 0);
        for key in ["p/b", "p/a", "q/a", "p/c", "p", "o/z"] {
            r.put(bytes(key), Some(bytes(key)), 1);
        }
        r.put(bytes("p/c"), None, 2);
        let mut seen = Vec::new();
        r.scan_prefix(b"p/", |key, _| seen.push(Bytes::copy_from_slice(key)));
        assert_eq!(seen, vec![bytes("p/a"), bytes("p/b")]);
    }

    #[test]
    fn loading_seeds_the_clock_past_persisted_versions() {
        let mut old = Replica::new(NodeId::new("n"), 0);
        old.put(bytes("k"), Some(bytes("old")), 9_000_000);
        let mut restarted = Replica::with_entries(NodeId::new("n"), 0, &old.entries());
        // The wall clock stepped back after the restart: the new write must still win.
        restarted.put(bytes("k"), Some(bytes("new")), 1_000);
        old.merge_batch(&restarted.take_pending().unwrap());
        assert_eq!(old.get(b"k"), Some(&b"new"[..]));
    }
}
