//! Entries, versions and the last-writer-wins merge.
//!
//! This file owns the lattice: the total order on [`Version`]s and [`merge`], which keeps the
//! entry with the greater version. It knows nothing of actors, the network or persistence.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A key of the world. Keys are raw bytes; the game uses UTF-8 paths like `p/<id>/name`.
pub type Key = Bytes;

/// One key and its entry, the unit that batches and bootstrap chunks carry.
pub type KeyedEntry = (Key, Entry);

/// A batch of entries shared by every destination it is sent to (cloning it is one refcount).
pub type Batch = Arc<Vec<KeyedEntry>>;

/// The identity of a node in the world: its libp2p peer id in base58 text.
///
/// Text rather than raw multihash bytes so that `INFO`, player ids in keys and log lines all
/// show the same string; the order is the byte order of that string, the same on every node.
///
/// Interned: every `NodeId` of the same text shares one allocation (see [`intern`]), so an
/// entry carries a pointer (8 bytes), not a copy of a 52-byte string, however it was decoded.
#[derive(Clone)]
pub struct NodeId(Arc<NodeText>);

/// The text of an interned [`NodeId`] (a thin pointer to it keeps `NodeId` at 8 bytes).
#[derive(Debug)]
struct NodeText(Box<str>);

impl NodeId {
    /// The interned id whose text is `id`.
    pub fn new(id: impl AsRef<str>) -> Self {
        NodeId(intern::get(id.as_ref()))
    }

    /// The peer id as text.
    pub fn as_str(&self) -> &str {
        &self.0.0
    }
}

impl PartialEq for NodeId {
    fn eq(&self, other: &Self) -> bool {
        // Interned: one allocation per text while any copy lives, so pointers decide equality.
        Arc::ptr_eq(&self.0, &other.0) || self.as_str() == other.as_str()
    }
}

impl Eq for NodeId {}

impl std::hash::Hash for NodeId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialOrd for NodeId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for NodeId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        if Arc::ptr_eq(&self.0, &other.0) {
            return std::cmp::Ordering::Equal;
        }
        self.as_str().cmp(other.as_str())
    }
}

impl Serialize for NodeId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// Interns the text without an intermediate `String` when the format lends it.
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = NodeId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a node id")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<NodeId, E> {
                Ok(NodeId::new(text))
            }
        }
        deserializer.deserialize_str(Text)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.as_str())
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The table of node ids in use. It holds them weakly: an id no entry refers to any more is
/// swept out as the table grows, so ids decoded from a hostile peer's rejected batch do not
/// stay in memory.
mod intern {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, Weak};

    use super::NodeText;

    /// Size below which the table is never swept.
    const MIN_SWEEP_LEN: usize = 1024;

    /// Ids by text, and the size at which dead ones are next swept out.
    struct Table {
        /// Every id interned and perhaps still alive.
        ids: HashMap<Box<str>, Weak<NodeText>>,
        /// Sweep when `ids` reaches this size.
        sweep_at: usize,
    }

    static TABLE: Mutex<Option<Table>> = Mutex::new(None);

    /// The one live allocation for `text`, made if there is none.
    pub(super) fn get(text: &str) -> Arc<NodeText> {
        // A panic while the lock is held cannot leave the table inconsistent (each step is one
        // map operation), so a poisoned lock is used as it is.
        let mut guard = TABLE
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let table = guard.get_or_insert_with(|| Table {
            ids: HashMap::new(),
            sweep_at: MIN_SWEEP_LEN,
        });
        if let Some(live) = table.ids.get(text).and_then(Weak::upgrade) {
            return live;
        }
        let fresh = Arc::new(NodeText(text.into()));
        table.ids.insert(text.into(), Arc::downgrade(&fresh));
        if table.ids.len() >= table.sweep_at {
            table.ids.retain(|_, id| id.strong_count() > 0);
            table.sweep_at = (table.ids.len() * 2).max(MIN_SWEEP_LEN);
        }
        fresh
    }

    /// Number of ids in the table, dead ones not yet swept included (for tests).
    #[cfg(test)]
    pub(super) fn len() -> usize {
        TABLE
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_ref()
            .map_or(0, |table| table.ids.len())
    }
}

/// The version of a write: a hybrid logical clock reading plus the writer that made it.
///
/// Ordered field by field: time first, then the HLC counter, then the writer id (node, then
/// actor index) as a deterministic tie-break. Two different writers never produce equal
/// versions, so the order is total over every version that exists in a world.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Version {
    /// HLC physical part: milliseconds since the Unix epoch.
    pub millis: u64,
    /// HLC logical part: orders writes within one millisecond.
    pub counter: u32,
    /// The node that made the write (its author).
    pub node: NodeId,
    /// The query actor on that node that made the write.
    pub actor: u16,
}

/// A value, or a tombstone, at a version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// When and by whom this was written; decides every merge.
    pub version: Version,
    /// The value; `None` is a tombstone left by a delete.
    pub value: Option<Bytes>,
    /// Room for the author's signature over (key, version, value). Empty until signed entries
    /// exist; carried and stored now so that the formats need not change then.
    pub signature: Option<Bytes>,
}

impl Entry {
    /// A live value written at `version`.
    pub fn value(version: Version, value: Bytes) -> Self {
        Entry {
            version,
            value: Some(value),
            signature: None,
        }
    }

    /// A tombstone written at `version`.
    pub fn tombstone(version: Version) -> Self {
        Entry {
            version,
            value: None,
            signature: None,
        }
    }

    /// The node that wrote this entry.
    pub fn author(&self) -> &NodeId {
        &self.version.node
    }

    /// Whether this entry is a delete marker.
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }

    /// Lattice join in place: keep the entry with the greater version.
    ///
    /// Returns whether `self` changed. Equal versions leave `self` as it is (the same write
    /// seen twice), which makes the join idempotent.
    pub fn merge(&mut self, other: Entry) -> bool {
        if other.version > self.version {
            *self = other;
            true
        } else {
            false
        }
    }

    /// An estimate of the bytes this entry takes on the wire with `key`, used for the sync
    /// byte counters (the same estimate for local and remote messages, so they compare).
    pub fn wire_size(&self, key: &[u8]) -> usize {
        const FIXED_BYTES: usize = 8 + 4 + 2 + 4;
        key.len()
            + self.value.as_ref().map_or(0, Bytes::len)
            + self.signature.as_ref().map_or(0, Bytes::len)
            + self.version.node.as_str().len()
            + FIXED_BYTES
    }
}

/// What merging one entry into a map did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merged {
    /// The key was new or the entry's version was greater: the map changed.
    Changed {
        /// Whether the key had a live value before.
        was_live: bool,
    },
    /// The map already held this version or a greater one.
    Unchanged,
}

/// Merges `entry` into `map` under `key`: the map-level join of the LWW lattice.
pub fn merge(map: &mut BTreeMap<Key, Entry>, key: Key, entry: Entry) -> Merged {
    use std::collections::btree_map::Entry as Slot;
    match map.entry(key) {
        Slot::Vacant(slot) => {
            slot.insert(entry);
            Merged::Changed { was_live: false }
        }
        Slot::Occupied(mut slot) => {
            let was_live = !slot.get().is_tombstone();
            if slot.get_mut().merge(entry) {
                Merged::Changed { was_live }
            } else {
                Merged::Unchanged
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn version(millis: u64, counter: u32, node: &str, actor: u16) -> Version {
        Version {
            millis,
            counter,
            node: NodeId::new(node),
            actor,
        }
    }

    /// Every entry over a small domain: 2 times x 2 counters x 2 nodes x 2 actors x 3 values.
    fn small_domain() -> Vec<Entry> {
        let mut all = Vec::new();
        for millis in 0..2 {
            for counter in 0..2 {
                for node in ["a", "b"] {
                    for actor in 0..2 {
                        let v = version(millis, counter, node, actor);
                        all.push(Entry::tombstone(v.clone()));
                        all.push(Entry::value(v.clone(), Bytes::from_static(b"x")));
                        all.push(Entry::value(v, Bytes::from_static(b"y")));
                    }
                }
            }
        }
        all
    }

    fn join(mut a: Entry, b: Entry) -> Entry {
        a.merge(b);
        a
    }

    /// Entries with the same version must be the same write; the domain has several writes
    /// per version, so the laws are checked over pairs that could exist in a real world.
    fn same_write_or_distinct(a: &Entry, b: &Entry) -> bool {
        a.version != b.version || a == b
    }

    #[test]
    fn lattice_laws_hold_exhaustively_over_a_small_domain() {
        let all = small_domain();
        for a in &all {
            assert_eq!(join(a.clone(), a.clone()), *a, "idempotent");
            for b in all.iter().filter(|b| same_write_or_distinct(a, b)) {
                assert_eq!(
                    join(a.clone(), b.clone()),
                    join(b.clone(), a.clone()),
                    "commutative"
                );
                for c in all
                    .iter()
                    .filter(|c| same_write_or_distinct(a, c) && same_write_or_distinct(b, c))
                {
                    let left = join(join(a.clone(), b.clone()), c.clone());
                    let right = join(a.clone(), join(b.clone(), c.clone()));
                    assert_eq!(left, right, "associative");
                }
            }
        }
    }

    #[test]
    fn equal_timestamps_tie_break_on_writer_id_not_arrival_order() {
        let from_a = Entry::value(version(7, 0, "a", 1), Bytes::from_static(b"cheese"));
        let from_b = Entry::value(version(7, 0, "b", 0), Bytes::from_static(b"mustard"));
        assert_eq!(join(from_a.clone(), from_b.clone()).value, from_b.value);
        assert_eq!(join(from_b.clone(), from_a.clone()).value, from_b.value);
        let actor_0 = Entry::value(version(7, 0, "a", 0), Bytes::from_static(b"0"));
        let actor_1 = Entry::value(version(7, 0, "a", 1), Bytes::from_static(b"1"));
        assert_eq!(join(actor_1.clone(), actor_0.clone()), actor_1);
    }

    #[test]
    fn merge_reports_change_only_for_greater_versions() {
        let mut map = BTreeMap::new();
        let key = Bytes::from_static(b"k");
        let old = Entry::value(version(1, 0, "a", 0), Bytes::from_static(b"old"));
        let new = Entry::tombstone(version(2, 0, "a", 0));
        assert_eq!(
            merge(&mut map, key.clone(), old.clone()),
            Merged::Changed { was_live: false }
        );
        assert_eq!(merge(&mut map, key.clone(), old.clone()), Merged::Unchanged);
        assert_eq!(
            merge(&mut map, key.clone(), new.clone()),
            Merged::Changed { was_live: true }
        );
        assert_eq!(merge(&mut map, key.clone(), old), Merged::Unchanged);
        assert_eq!(map[&key], new);
    }

    #[test]
    fn node_ids_of_one_text_share_one_allocation_however_they_are_made() {
        let made = NodeId::new("12D3KooWShared");
        let encoded = postcard::to_allocvec(&made).unwrap();
        let decoded: NodeId = postcard::from_bytes(&encoded).unwrap();
        assert!(Arc::ptr_eq(&made.0, &decoded.0));
        assert!(Arc::ptr_eq(
            &made.0,
            &NodeId::new(String::from("12D3KooWShared")).0
        ));
        assert_eq!(decoded.as_str(), "12D3KooWShared");
        assert_eq!(std::mem::size_of::<NodeId>(), 8);
    }

    #[test]
    fn node_ids_order_and_compare_by_their_text() {
        let (a, b) = (NodeId::new("a"), NodeId::new("b"));
        assert!(a < b);
        assert_eq!(a.cmp(&NodeId::new("a")), std::cmp::Ordering::Equal);
        assert_ne!(a, b);
    }

    #[test]
    fn node_ids_no_longer_used_are_swept_from_the_table() {
        // Many ids made and dropped (a hostile peer's rejected batch) do not stay interned.
        for n in 0..20_000 {
            drop(NodeId::new(format!("12D3KooWGone{n}")));
        }
        assert!(intern::len() < 10_000, "{} ids interned", intern::len());
    }

    fn arb_entry() -> impl Strategy<Value = Entry> {
        (
            0u64..50,
            0u32..3,
            prop::sample::select(vec!["a", "b", "c"]),
            0u16..3,
        )
            .prop_map(|(millis, counter, node, actor)| {
                // The value, and whether it is a tombstone, are functions of the version: equal
                // versions are the same write, as they are in a real world.
                let v = version(millis, counter, node, actor);
                let value = ((millis + u64::from(counter) + u64::from(actor)) % 4 != 0)
                    .then(|| Bytes::from(format!("{millis}.{counter}.{node}.{actor}")));
                Entry {
                    version: v,
                    value,
                    signature: None,
                }
            })
    }

    proptest! {
        #[test]
        fn lattice_laws_hold_for_random_entries(a in arb_entry(), b in arb_entry(), c in arb_entry()) {
            prop_assert_eq!(join(a.clone(), a.clone()), a.clone());
            prop_assert_eq!(join(a.clone(), b.clone()), join(b.clone(), a.clone()));
            prop_assert_eq!(
                join(join(a.clone(), b.clone()), c.clone()),
                join(a.clone(), join(b.clone(), c.clone()))
            );
        }

        /// Any delivery order, with duplicates, ends in the reference model's state: for each
        /// key, the entry with the greatest version.
        #[test]
        fn random_delivery_orders_with_duplicates_converge_to_the_model(
            writes in prop::collection::vec((0u8..6, arb_entry()), 1..40),
            shuffles in prop::collection::vec(any::<prop::sample::Index>(), 1..80),
        ) {
            let mut model: BTreeMap<Key, Entry> = BTreeMap::new();
            for (key, entry) in &writes {
                let key = Bytes::from(vec![*key]);
                let slot = model.entry(key).or_insert_with(|| entry.clone());
                if entry.version > slot.version {
                    *slot = entry.clone();
                }
            }
            // Deliver a random sequence drawn from the writes (so with duplicates), then every
            // write once more so nothing is missed.
            let mut replica = BTreeMap::new();
            for index in &shuffles {
                let (key, entry) = index.get(&writes).clone();
                merge(&mut replica, Bytes::from(vec![key]), entry);
            }
            for (key, entry) in writes.iter().rev() {
                merge(&mut replica, Bytes::from(vec![*key]), entry.clone());
            }
            prop_assert_eq!(replica, model);
        }
    }
}
