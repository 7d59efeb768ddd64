//! An ordered map from short byte strings ([`Small`]) to values, packed for memory: what each
//! query actor keeps its whole replica in.
//!
//! A B+ tree whose leaves live in two arenas (one `Vec` of keys, one of values; leaf `i` owns
//! [`LEAF_ENTRIES`] consecutive slots of each), linked in key order for range scans, with a few
//! small inner nodes above them. Two things make it smaller than a `BTreeMap`:
//! - **No holes between entries in the heap.** A `BTreeMap` allocates a node per 11 entries,
//!   between the small buffers a write makes and frees moments later (its key, its batch), so
//!   after a burst of new keys the allocator is left with holes smaller than a page that it can
//!   neither reuse for nodes nor give back. Here the entries sit in one block that grows by
//!   doubling (its unused tail is never touched, so it takes no memory).
//! - **Full leaves for keys written in order.** A full leaf that receives a key past its last
//!   one keeps its entries and starts a new leaf (a `BTreeMap` splits in the middle, leaving
//!   every node about half full); a key before its first moves the others out instead. Keys in
//!   random order leave leaves about 70% full, as any B-tree.
//!
//! Removing entries never merges leaves; when the map falls below [`MIN_FILL_PERCENT`] of its
//! slots (after a tombstone purge) it is rebuilt packed. Owns only the structure: what a value
//! is and when it wins is [`super::replica`]'s business.

use std::ops::Bound;

use super::compact::Small;

/// Entries per leaf.
const LEAF_ENTRIES: usize = 32;

/// Most separator keys in an inner node (it has one more child).
const INNER_KEYS: usize = 64;

/// A map whose entries fill less than this share of its leaves' slots is rebuilt packed.
const MIN_FILL_PERCENT: usize = 40;

/// Leaves a map keeps however sparse (rebuilding a tiny map saves nothing).
const MIN_REPACK_LEAVES: usize = 8;

/// Marks the end of the leaf chain, and the root of an empty map.
const NIL: u32 = u32::MAX;

/// The bookkeeping of one leaf; its entries are in the arenas.
#[derive(Clone, Copy, Debug)]
struct Leaf {
    /// How many of the leaf's slots hold entries (the first `len`, in key order).
    len: u32,
    /// The leaf holding the next keys, or [`NIL`].
    next: u32,
}

/// An inner node: its children are `first` and each separator's child, which holds the keys
/// from its separator up to the next one. Children are inner nodes one level down, or leaves
/// at the lowest level.
#[derive(Debug)]
struct Inner {
    /// The child holding the keys below every separator.
    first: u32,
    /// Separators, ascending, each beside its child (one buffer: a lookup reads the child it
    /// picks from the cache line it compared last).
    entries: Vec<(Small, u32)>,
}

impl Inner {
    /// The position among the children (0 is `first`) of the one `key` belongs in.
    fn position(&self, key: &[u8]) -> usize {
        self.entries.partition_point(|(held, _)| &held[..] <= key)
    }

    /// The child at `position` (0 is `first`).
    fn child(&self, position: usize) -> u32 {
        match position {
            0 => self.first,
            _ => self.entries[position - 1].1,
        }
    }
}

/// An ordered map from [`Small`] keys to `V`, packed (see the module header).
pub struct PackedMap<V> {
    /// Every leaf's keys: leaf `i`'s in `keys[i * LEAF_ENTRIES..][..len]`, the rest empty.
    keys: Vec<Small>,
    /// Every leaf's values, at the same places as their keys; `None` where no entry is.
    values: Vec<Option<V>>,
    /// Every leaf's length and successor; leaf 0 is always the first in key order.
    leaves: Vec<Leaf>,
    /// Every inner node.
    inners: Vec<Inner>,
    /// The root: a leaf when `height` is 0, else an inner node; [`NIL`] while empty.
    root: u32,
    /// Levels of inner nodes above the leaves.
    height: u32,
    /// Number of entries.
    len: usize,
}

impl<V> Default for PackedMap<V> {
    fn default() -> Self {
        PackedMap::new()
    }
}

impl<V> std::fmt::Debug for PackedMap<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedMap")
            .field("len", &self.len)
            .field("leaves", &self.leaves.len())
            .field("height", &self.height)
            .finish()
    }
}

/// What inserting below a node did to it: it took the entry, it had to split (the separator
/// and the new node to its right go to the parent), or the key was there (its old value).
enum Inserted<V> {
    /// The key is new and the node did not split.
    Fits,
    /// The key is new and the node split.
    Split(Small, u32),
    /// The key was there; this was its value.
    Replaced(V),
}

impl<V> PackedMap<V> {
    /// An empty map (allocates nothing).
    pub fn new() -> Self {
        PackedMap {
            keys: Vec::new(),
            values: Vec::new(),
            leaves: Vec::new(),
            inners: Vec::new(),
            root: NIL,
            height: 0,
            len: 0,
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The value under `key`.
    pub fn get(&self, key: &[u8]) -> Option<&V> {
        let at = self.find(key)?;
        self.values[at].as_ref()
    }

    /// The value under `key`, to change in place.
    pub fn get_mut(&mut self, key: &[u8]) -> Option<&mut V> {
        let at = self.find(key)?;
        self.values[at].as_mut()
    }

    /// Puts `value` under `key`; returns the value it replaces, if any.
    pub fn insert(&mut self, key: Small, value: V) -> Option<V> {
        if self.root == NIL {
            self.root = self.new_leaf(NIL);
        }
        match self.insert_below(self.root, self.height, key, value) {
            Inserted::Fits => {}
            Inserted::Split(separator, right) => {
                let mut entries = Vec::with_capacity(INNER_KEYS + 1);
                entries.push((separator, right));
                let first = self.root;
                self.root = self.inners.len() as u32;
                self.inners.push(Inner { first, entries });
                self.height += 1;
            }
            Inserted::Replaced(old) => return Some(old),
        }
        self.len += 1;
        None
    }

    /// Removes `key`'s entry and returns its value.
    pub fn remove(&mut self, key: &[u8]) -> Option<V> {
        let leaf = self.leaf_for(key)?;
        let (base, len) = self.bounds(leaf);
        let index = search(&self.keys[base..base + len], key).ok()?;
        self.keys[base + index..base + len].rotate_left(1);
        self.values[base + index..base + len].rotate_left(1);
        self.keys[base + len - 1] = Small::EMPTY;
        let value = self.values[base + len - 1].take();
        self.leaves[leaf as usize].len -= 1;
        self.len -= 1;
        self.repack_if_sparse();
        value
    }

    /// Keeps only the entries `keep` says yes to (visited in key order).
    pub fn retain(&mut self, mut keep: impl FnMut(&[u8], &V) -> bool) {
        let mut leaf = if self.leaves.is_empty() { NIL } else { 0 };
        while leaf != NIL {
            let (base, len) = self.bounds(leaf);
            let mut kept = 0;
            for read in base..base + len {
                let value = self.values[read]
                    .as_ref()
                    .expect("a leaf's first len slots hold entries");
                if keep(&self.keys[read], value) {
                    self.keys.swap(base + kept, read);
                    self.values.swap(base + kept, read);
                    kept += 1;
                }
            }
            for gone in base + kept..base + len {
                self.keys[gone] = Small::EMPTY;
                self.values[gone] = None;
            }
            self.leaves[leaf as usize].len = kept as u32;
            self.len -= len - kept;
            leaf = self.leaves[leaf as usize].next;
        }
        self.repack_if_sparse();
    }

    /// The entries from `start` on, in key order.
    pub fn range_from(&self, start: Bound<&[u8]>) -> Range<'_, V> {
        let (leaf, pos) = match start {
            Bound::Unbounded => (if self.leaves.is_empty() { NIL } else { 0 }, 0),
            Bound::Included(key) | Bound::Excluded(key) => match self.leaf_for(key) {
                None => (NIL, 0),
                Some(leaf) => {
                    let (base, len) = self.bounds(leaf);
                    let keys = &self.keys[base..base + len];
                    let pos = match start {
                        Bound::Excluded(_) => keys.partition_point(|held| &held[..] <= key),
                        _ => keys.partition_point(|held| &held[..] < key),
                    };
                    (leaf, pos)
                }
            },
        };
        Range {
            map: self,
            leaf,
            pos,
        }
    }

    /// Every entry, in key order.
    pub fn iter(&self) -> Range<'_, V> {
        self.range_from(Bound::Unbounded)
    }

    /// Where `key`'s entry is in the arenas.
    fn find(&self, key: &[u8]) -> Option<usize> {
        let leaf = self.leaf_for(key)?;
        let (base, len) = self.bounds(leaf);
        search(&self.keys[base..base + len], key)
            .ok()
            .map(|index| base + index)
    }

    /// The leaf `key` belongs in (`None` while the map has none).
    fn leaf_for(&self, key: &[u8]) -> Option<u32> {
        if self.root == NIL {
            return None;
        }
        let mut at = self.root;
        for _ in 0..self.height {
            let inner = &self.inners[at as usize];
            at = inner.child(inner.position(key));
        }
        Some(at)
    }

    /// The first slot of `leaf` in the arenas and its number of entries.
    fn bounds(&self, leaf: u32) -> (usize, usize) {
        (
            leaf as usize * LEAF_ENTRIES,
            self.leaves[leaf as usize].len as usize,
        )
    }

    /// Adds an empty leaf whose successor is `next`; returns it.
    fn new_leaf(&mut self, next: u32) -> u32 {
        let id = self.leaves.len() as u32;
        self.leaves.push(Leaf { len: 0, next });
        self.keys
            .resize(self.keys.len() + LEAF_ENTRIES, Small::EMPTY);
        self.values
            .resize_with(self.values.len() + LEAF_ENTRIES, || None);
        id
    }

    fn insert_below(&mut self, node: u32, height: u32, key: Small, value: V) -> Inserted<V> {
        if height == 0 {
            return self.insert_in_leaf(node, key, value);
        }
        let inner = &self.inners[node as usize];
        let position = inner.position(&key);
        let child = inner.child(position);
        let (separator, right) = match self.insert_below(child, height - 1, key, value) {
            Inserted::Split(separator, right) => (separator, right),
            other => return other,
        };
        let inner = &mut self.inners[node as usize];
        // The new child goes right after the one that split, its separator between them.
        inner.entries.insert(position, (separator, right));
        if inner.entries.len() <= INNER_KEYS {
            return Inserted::Fits;
        }
        // The new child last: keys come in order, keep this node full. Otherwise halve it.
        let keep = if position + 1 == inner.entries.len() {
            INNER_KEYS
        } else {
            inner.entries.len() / 2
        };
        let mut entries = Vec::with_capacity(INNER_KEYS + 1);
        entries.extend(inner.entries.drain(keep + 1..));
        let (promoted, first) = inner
            .entries
            .pop()
            .expect("an inner node that split kept `keep` + 1 separators");
        let right = self.inners.len() as u32;
        self.inners.push(Inner { first, entries });
        Inserted::Split(promoted, right)
    }

    fn insert_in_leaf(&mut self, leaf: u32, key: Small, value: V) -> Inserted<V> {
        let (base, len) = self.bounds(leaf);
        let pos = match search(&self.keys[base..base + len], &key) {
            Ok(index) => {
                let old = self.values[base + index].replace(value);
                return Inserted::Replaced(old.expect("a leaf's first len slots hold entries"));
            }
            Err(pos) => pos,
        };
        if len < LEAF_ENTRIES {
            self.place(leaf, pos, key, value);
            return Inserted::Fits;
        }
        let right = self.new_leaf(self.leaves[leaf as usize].next);
        self.leaves[leaf as usize].next = right;
        if pos == LEAF_ENTRIES {
            // Past the last key (keys written in order): this leaf stays full.
            let separator = key.clone();
            self.place(right, 0, key, value);
            return Inserted::Split(separator, right);
        }
        // Before the first key (keys written in descending order) every entry moves right,
        // so the right leaf is full; anywhere else the leaf is halved.
        let from = if pos == 0 { 0 } else { LEAF_ENTRIES / 2 };
        self.move_tail(leaf, from, right);
        if pos <= from {
            self.place(leaf, pos, key, value);
        } else {
            self.place(right, pos - from, key, value);
        }
        let separator = self.keys[right as usize * LEAF_ENTRIES].clone();
        Inserted::Split(separator, right)
    }

    /// Inserts an entry at `pos` in a leaf that has room.
    fn place(&mut self, leaf: u32, pos: usize, key: Small, value: V) {
        let (base, len) = self.bounds(leaf);
        self.keys[base + pos..=base + len].rotate_right(1);
        self.values[base + pos..=base + len].rotate_right(1);
        self.keys[base + pos] = key;
        self.values[base + pos] = Some(value);
        self.leaves[leaf as usize].len += 1;
    }

    /// Moves `leaf`'s entries from `from` on into the empty leaf `to`.
    fn move_tail(&mut self, leaf: u32, from: usize, to: u32) {
        let (base, len) = self.bounds(leaf);
        let target = to as usize * LEAF_ENTRIES;
        for (offset, index) in (base + from..base + len).enumerate() {
            self.keys.swap(index, target + offset);
            self.values.swap(index, target + offset);
        }
        self.leaves[leaf as usize].len = from as u32;
        self.leaves[to as usize].len = (len - from) as u32;
    }

    /// Rebuilds the map packed if removals left too few entries for its leaves.
    fn repack_if_sparse(&mut self) {
        let slots = self.leaves.len() * LEAF_ENTRIES;
        if self.leaves.len() <= MIN_REPACK_LEAVES || self.len * 100 >= slots * MIN_FILL_PERCENT {
            return;
        }
        let mut old = std::mem::take(self);
        let mut leaf = 0;
        while leaf != NIL {
            let (base, len) = old.bounds(leaf);
            for index in base..base + len {
                let key = std::mem::replace(&mut old.keys[index], Small::EMPTY);
                if let Some(value) = old.values[index].take() {
                    // In key order: every insert goes past the last key, so leaves fill.
                    self.insert(key, value);
                }
            }
            leaf = old.leaves[leaf as usize].next;
        }
    }
}

impl<V> FromIterator<(Small, V)> for PackedMap<V> {
    fn from_iter<I: IntoIterator<Item = (Small, V)>>(entries: I) -> Self {
        let mut map = PackedMap::new();
        for (key, value) in entries {
            map.insert(key, value);
        }
        map
    }
}

/// Where `key` is among a leaf's keys, or where it would go.
fn search(keys: &[Small], key: &[u8]) -> Result<usize, usize> {
    keys.binary_search_by(|held| held[..].cmp(key))
}

/// Entries of a [`PackedMap`] in key order, from some key on.
pub struct Range<'a, V> {
    /// The map.
    map: &'a PackedMap<V>,
    /// The leaf being read, or [`NIL`] when done.
    leaf: u32,
    /// The next entry's index in that leaf.
    pos: usize,
}

impl<V> Clone for Range<'_, V> {
    fn clone(&self) -> Self {
        Range { ..*self }
    }
}

impl<'a, V> Iterator for Range<'a, V> {
    type Item = (&'a Small, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        while self.leaf != NIL {
            let (base, len) = self.map.bounds(self.leaf);
            if self.pos < len {
                let index = base + self.pos;
                self.pos += 1;
                let value = self.map.values[index]
                    .as_ref()
                    .expect("a leaf's first len slots hold entries");
                return Some((&self.map.keys[index], value));
            }
            self.leaf = self.map.leaves[self.leaf as usize].next;
            self.pos = 0;
        }
        None
    }
}

impl<V> PackedMap<V> {
    /// Checks the invariants (tests): keys ascending across the chain, separators bounding
    /// their children, lengths adding up.
    #[cfg(test)]
    fn check(&self) {
        let keys: Vec<&[u8]> = self.iter().map(|(key, _)| &key[..]).collect();
        assert!(keys.windows(2).all(|pair| pair[0] < pair[1]), "ascending");
        assert_eq!(keys.len(), self.len);
        for (index, leaf) in self.leaves.iter().enumerate() {
            let base = index * LEAF_ENTRIES;
            for slot in base + leaf.len as usize..base + LEAF_ENTRIES {
                assert!(self.values[slot].is_none() && self.keys[slot].is_empty());
            }
        }
        if self.root != NIL {
            self.check_node(self.root, self.height, None, None);
        }
    }

    #[cfg(test)]
    fn check_node(&self, node: u32, height: u32, low: Option<&[u8]>, high: Option<&[u8]>) {
        let within =
            |key: &[u8]| low.is_none_or(|low| low <= key) && high.is_none_or(|high| key < high);
        if height == 0 {
            let (base, len) = self.bounds(node);
            assert!(self.keys[base..base + len].iter().all(|key| within(key)));
            return;
        }
        let inner = &self.inners[node as usize];
        let keys: Vec<&Small> = inner.entries.iter().map(|(key, _)| key).collect();
        assert!(keys.iter().all(|key| within(key)));
        assert!(keys.windows(2).all(|pair| pair[0] < pair[1]));
        for index in 0..=keys.len() {
            let child = inner.child(index);
            let low = if index == 0 {
                low
            } else {
                Some(&keys[index - 1][..])
            };
            let high = keys.get(index).map(|key| &key[..]).or(high);
            self.check_node(child, height - 1, low, high);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;
    use proptest::prelude::*;

    use super::*;

    fn small(n: u32) -> Small {
        Small::new(&Bytes::from(format!("key:{n:08}")))
    }

    fn fill_percent<V>(map: &PackedMap<V>) -> usize {
        map.len() * 100 / (map.leaves.len() * LEAF_ENTRIES)
    }

    /// A query actor's bytes per entry in a full leaf (the README's memory table quotes this).
    #[test]
    fn a_full_leaf_takes_72_bytes_per_entry() {
        use crate::store::compact::Slot;
        let entry = std::mem::size_of::<Small>() + std::mem::size_of::<Option<Slot>>();
        eprintln!("packed map entry: {entry} B, leaf of {LEAF_ENTRIES}");
        assert_eq!(entry, 72);
    }

    #[test]
    fn keys_written_in_order_fill_every_leaf() {
        let ascending: PackedMap<u32> = (0..100_000).map(|n| (small(n), n)).collect();
        ascending.check();
        assert_eq!(ascending.leaves.len(), 100_000usize.div_ceil(LEAF_ENTRIES));
        let mut descending = PackedMap::new();
        for n in (0..100_000).rev() {
            descending.insert(small(n), n);
        }
        descending.check();
        assert!(
            fill_percent(&descending) >= 99,
            "{}",
            fill_percent(&descending)
        );
    }

    #[test]
    fn keys_in_random_order_fill_leaves_as_a_b_tree_does() {
        let mut order: Vec<u32> = (0..100_000).collect();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for i in (1..order.len()).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            order.swap(i, (seed % (i as u64 + 1)) as usize);
        }
        let map: PackedMap<u32> = order.iter().map(|&n| (small(n), n)).collect();
        map.check();
        assert!(fill_percent(&map) >= 60, "{}", fill_percent(&map));
        assert_eq!(map.get(&small(777)), Some(&777));
    }

    #[test]
    fn removing_most_entries_repacks_the_map() {
        let mut map: PackedMap<u32> = (0..10_000).map(|n| (small(n), n)).collect();
        map.retain(|_, &n| n % 10 == 0);
        map.check();
        assert_eq!(map.len(), 1_000);
        assert_eq!(map.leaves.len(), 1_000usize.div_ceil(LEAF_ENTRIES));
        for n in (0..10_000).filter(|n| n % 10 == 0) {
            assert_eq!(map.remove(&small(n)), Some(n));
        }
        map.check();
        assert!(map.is_empty() && map.leaves.len() <= MIN_REPACK_LEAVES);
        map.insert(small(5), 5);
        assert_eq!(map.iter().count(), 1);
    }

    /// One step of the model test.
    #[derive(Clone, Debug)]
    enum Op {
        Insert(u32, u32),
        Remove(u32),
        RetainOdd,
        Range(u32, bool),
    }

    fn op(keys: u32) -> impl Strategy<Value = Op> {
        prop_oneof![
            20 => (0..keys, any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            6 => (0..keys).prop_map(Op::Remove),
            1 => Just(Op::RetainOdd),
            2 => (0..keys, any::<bool>()).prop_map(|(k, excluded)| Op::Range(k, excluded)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Any run of inserts, removals, retains and range reads does what a `BTreeMap` does
        /// (enough of them to split leaves and inner nodes, in order and out of order).
        #[test]
        fn behaves_as_a_btreemap(
            ops in prop::collection::vec(op(4_000), 1..6_000),
            ascending in 0..3_000u32,
        ) {
            let mut map = PackedMap::new();
            let mut model = BTreeMap::new();
            for n in 0..ascending {
                prop_assert_eq!(map.insert(small(n), n), model.insert(small(n), n));
            }
            for op in ops {
                match op {
                    Op::Insert(k, v) => prop_assert_eq!(map.insert(small(k), v), model.insert(small(k), v)),
                    Op::Remove(k) => prop_assert_eq!(map.remove(&small(k)), model.remove(&small(k))),
                    Op::RetainOdd => {
                        map.retain(|_, v| v % 2 == 1);
                        model.retain(|_, v| *v % 2 == 1);
                    }
                    Op::Range(k, excluded) => {
                        let key = small(k);
                        let bound = if excluded { Bound::Excluded(&key[..]) } else { Bound::Included(&key[..]) };
                        let got: Vec<_> = map.range_from(bound).take(40).map(|(k, v)| (k.clone(), *v)).collect();
                        let want: Vec<_> = model
                            .range::<[u8], _>((bound, Bound::Unbounded))
                            .take(40)
                            .map(|(k, v)| (k.clone(), *v))
                            .collect();
                        prop_assert_eq!(got, want);
                    }
                }
                prop_assert_eq!(map.len(), model.len());
            }
            map.check();
            let all: Vec<_> = map.iter().map(|(k, v)| (k.clone(), *v)).collect();
            let want: Vec<_> = model.into_iter().collect();
            prop_assert_eq!(all, want);
        }
    }
}
