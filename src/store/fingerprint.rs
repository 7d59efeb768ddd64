//! Fingerprints of sets of (key, version) pairs, and the index that keeps the fingerprint of
//! every key range of a replica up to date as entries merge.
//!
//! An entry's fingerprint is SHA-256 over its key and version; a set's fingerprint is the sum
//! of its entries' fingerprints modulo 2^256, with the set's size beside it. Addition makes the
//! fingerprint of a range `prefix(upper) - prefix(lower)`, so the index answers any range in
//! O(log n) from prefix sums over a balanced tree (a treap keyed by key, each node holding its
//! subtree's size and sum), and updates in O(log n) when one entry changes.
//!
//! Why a sum and not XOR: XOR of hashes is linear over GF(2), so a hostile peer can pick, by
//! Gaussian elimination over about 257 entries of its own, two different sets with equal XOR and
//! hide a difference from reconciliation. A modular sum has no such shortcut; the best known
//! attack is Wagner's generalised birthday, which for 256 bits needs sets of tens of thousands of
//! crafted entries in one range and around 2^32 work or more, and only ever hides the attacker's
//! own entries' disagreement. (Negentropy and Meyer's range-based reconciliation make the same
//! choice.) Owns no entries and knows nothing of the network.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::compact::Small;
use super::entry::{Key, Version};

/// A 256-bit fingerprint: a little-endian number modulo 2^256.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fingerprint(pub [u8; 32]);

/// Limbs of a fingerprint, least significant first.
type Limbs = [u64; 4];

impl Fingerprint {
    /// The fingerprint of the empty set.
    pub const ZERO: Fingerprint = Fingerprint([0; 32]);

    /// The fingerprint of one entry: SHA-256 over its key and version, every field length-
    /// prefixed or fixed-width so that no two (key, version) pairs hash the same bytes.
    pub fn of_entry(key: &[u8], version: &Version) -> Fingerprint {
        let node = version.node.as_str().as_bytes();
        let mut hasher = Sha256::new();
        hasher.update(b"cmud-entry-fp-1");
        hasher.update((key.len() as u64).to_le_bytes());
        hasher.update(key);
        hasher.update(version.millis.to_le_bytes());
        hasher.update(version.counter.to_le_bytes());
        hasher.update((node.len() as u64).to_le_bytes());
        hasher.update(node);
        hasher.update(version.actor.to_le_bytes());
        Fingerprint(hasher.finalize().into())
    }

    fn limbs(&self) -> Limbs {
        let mut limbs = [0u64; 4];
        for (limb, chunk) in limbs.iter_mut().zip(self.0.chunks_exact(8)) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            *limb = u64::from_le_bytes(word);
        }
        limbs
    }

    fn from_limbs(limbs: Limbs) -> Fingerprint {
        let mut bytes = [0u8; 32];
        for (chunk, limb) in bytes.chunks_exact_mut(8).zip(limbs) {
            chunk.copy_from_slice(&limb.to_le_bytes());
        }
        Fingerprint(bytes)
    }

    /// `self + other` modulo 2^256.
    pub fn add(&self, other: &Fingerprint) -> Fingerprint {
        let (a, b) = (self.limbs(), other.limbs());
        let mut out = [0u64; 4];
        let mut carry = false;
        for i in 0..4 {
            let (sum, c1) = a[i].overflowing_add(b[i]);
            let (sum, c2) = sum.overflowing_add(u64::from(carry));
            out[i] = sum;
            carry = c1 || c2;
        }
        Fingerprint::from_limbs(out)
    }

    /// `self - other` modulo 2^256.
    pub fn sub(&self, other: &Fingerprint) -> Fingerprint {
        let (a, b) = (self.limbs(), other.limbs());
        let mut out = [0u64; 4];
        let mut borrow = false;
        for i in 0..4 {
            let (diff, b1) = a[i].overflowing_sub(b[i]);
            let (diff, b2) = diff.overflowing_sub(u64::from(borrow));
            out[i] = diff;
            borrow = b1 || b2;
        }
        Fingerprint::from_limbs(out)
    }
}

/// The size and fingerprint of a set of entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Number of entries.
    pub count: u64,
    /// Sum of their fingerprints.
    pub fingerprint: Fingerprint,
}

impl Summary {
    fn add(&self, other: &Summary) -> Summary {
        Summary {
            count: self.count + other.count,
            fingerprint: self.fingerprint.add(&other.fingerprint),
        }
    }

    fn sub(&self, other: &Summary) -> Summary {
        Summary {
            count: self.count.saturating_sub(other.count),
            fingerprint: self.fingerprint.sub(&other.fingerprint),
        }
    }
}

/// Marks a missing child in the arena.
const NIL: u32 = u32::MAX;

/// One key of the index: a treap node in the arena.
///
/// The key's own fingerprint is not stored: it is the subtree's sum minus its children's.
#[derive(Debug)]
struct Node<T> {
    /// The key (inline when short).
    key: Small,
    /// What the index keeps under the key (the gateway: its compact entry).
    payload: T,
    /// Sum of the fingerprints of the subtree rooted here.
    subtree: Fingerprint,
    /// Number of keys in the subtree rooted here.
    count: u32,
    /// Heap priority, random so that no choice of keys can unbalance the tree.
    priority: u32,
    /// Left child (smaller keys) or [`NIL`].
    left: u32,
    /// Right child (greater keys) or [`NIL`].
    right: u32,
}

/// What [`FingerprintIndex::update`] did.
#[derive(Debug)]
pub enum Updated<T> {
    /// Nothing changed.
    Unchanged,
    /// The key was new.
    Inserted,
    /// The key's payload was replaced; this was the old one.
    Replaced(T),
}

/// An ordered map from keys to `T` that keeps the fingerprint of every key range: a treap in
/// one arena, each node holding its subtree's size and sum.
#[derive(Debug)]
pub struct FingerprintIndex<T = ()> {
    /// Every node; indices into it link the tree.
    nodes: Vec<Node<T>>,
    /// The root, or [`NIL`] when empty.
    root: u32,
    /// State of the generator of priorities (xorshift64*, seeded at random).
    seed: u64,
}

impl<T> Default for FingerprintIndex<T> {
    fn default() -> Self {
        FingerprintIndex {
            nodes: Vec::new(),
            root: NIL,
            seed: rand::random::<u64>() | 1,
        }
    }
}

impl FingerprintIndex<()> {
    /// Sets the fingerprint of `key`, adding the key if it is new.
    pub fn upsert(&mut self, key: &Key, fingerprint: Fingerprint) {
        self.update(key, |_| Some((fingerprint, ())));
    }
}

impl<T> FingerprintIndex<T> {
    /// Number of keys indexed.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no key is indexed.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Offers `decide` what `key` holds (`None`: nothing); if it returns a fingerprint and a
    /// payload, they become the key's, and every sum above is brought up to date.
    pub fn update(
        &mut self,
        key: &Key,
        decide: impl FnOnce(Option<&T>) -> Option<(Fingerprint, T)>,
    ) -> Updated<T> {
        let mut decide = Some(decide);
        let mut updated = Updated::Unchanged;
        // Recursion depth is the treap's depth: about 2 ln n with random priorities (under 60
        // for a billion keys), whatever the keys.
        self.root = self.insert(self.root, key, &mut decide, &mut updated);
        updated
    }

    /// Removes `key` and returns its payload, in O(log n). The arena stays dense: the last
    /// node moves into the freed slot.
    pub fn remove(&mut self, key: &[u8]) -> Option<T> {
        let mut gone = NIL;
        self.root = self.delete(self.root, key, &mut gone);
        if gone == NIL {
            return None;
        }
        let last = (self.nodes.len() - 1) as u32;
        if gone != last {
            // Whoever points at the last node (its parent, or the root) points at the slot.
            if self.root == last {
                self.root = gone;
            } else {
                let moved = &self.nodes[last as usize].key;
                let mut at = self.root;
                loop {
                    let node = &self.nodes[at as usize];
                    let next = if moved[..] < node.key[..] {
                        node.left
                    } else {
                        node.right
                    };
                    if next == last {
                        let node = &mut self.nodes[at as usize];
                        if node.left == last {
                            node.left = gone;
                        } else {
                            node.right = gone;
                        }
                        break;
                    }
                    at = next;
                }
            }
        }
        Some(self.nodes.swap_remove(gone as usize).payload)
    }

    fn delete(&mut self, at: u32, key: &[u8], gone: &mut u32) -> u32 {
        if at == NIL {
            return NIL;
        }
        let index = at as usize;
        let own = self.own(at);
        match key.cmp(&self.nodes[index].key) {
            Ordering::Less => {
                let child = self.delete(self.nodes[index].left, key, gone);
                self.nodes[index].left = child;
            }
            Ordering::Greater => {
                let child = self.delete(self.nodes[index].right, key, gone);
                self.nodes[index].right = child;
            }
            Ordering::Equal => {
                *gone = at;
                let (left, right) = (self.nodes[index].left, self.nodes[index].right);
                return self.join(left, right);
            }
        }
        if *gone != NIL {
            self.refresh(at, own);
        }
        at
    }

    /// Joins two treaps whose keys are all smaller in `left` than in `right`.
    fn join(&mut self, left: u32, right: u32) -> u32 {
        if left == NIL {
            return right;
        }
        if right == NIL {
            return left;
        }
        if self.nodes[left as usize].priority > self.nodes[right as usize].priority {
            let own = self.own(left);
            let child = self.join(self.nodes[left as usize].right, right);
            self.nodes[left as usize].right = child;
            self.refresh(left, own);
            left
        } else {
            let own = self.own(right);
            let child = self.join(left, self.nodes[right as usize].left);
            self.nodes[right as usize].left = child;
            self.refresh(right, own);
            right
        }
    }

    /// The payload under `key`.
    pub fn get(&self, key: &[u8]) -> Option<&T> {
        let mut at = self.root;
        while at != NIL {
            let node = &self.nodes[at as usize];
            match key.cmp(&node.key) {
                Ordering::Less => at = node.left,
                Ordering::Equal => return Some(&node.payload),
                Ordering::Greater => at = node.right,
            }
        }
        None
    }

    fn next_priority(&mut self) -> u32 {
        self.seed ^= self.seed >> 12;
        self.seed ^= self.seed << 25;
        self.seed ^= self.seed >> 27;
        (self.seed.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    }

    fn insert<F>(&mut self, at: u32, key: &Key, decide: &mut Option<F>, out: &mut Updated<T>) -> u32
    where
        F: FnOnce(Option<&T>) -> Option<(Fingerprint, T)>,
    {
        if at == NIL {
            let Some((subtree, payload)) = decide.take().and_then(|decide| decide(None)) else {
                return NIL;
            };
            let priority = self.next_priority();
            self.nodes.push(Node {
                key: Small::new(key),
                payload,
                subtree,
                count: 1,
                priority,
                left: NIL,
                right: NIL,
            });
            *out = Updated::Inserted;
            // Keys beyond u32::MAX - 1 would need a wider arena index; a replica that large
            // does not fit in memory anyway.
            return (self.nodes.len() - 1) as u32;
        }
        let index = at as usize;
        let (child, before) = match key[..].cmp(&self.nodes[index].key) {
            Ordering::Equal => {
                let decide = decide.take();
                let Some((fingerprint, payload)) =
                    decide.and_then(|decide| decide(Some(&self.nodes[index].payload)))
                else {
                    return at;
                };
                *out =
                    Updated::Replaced(std::mem::replace(&mut self.nodes[index].payload, payload));
                self.refresh(at, fingerprint);
                return at;
            }
            Ordering::Less => {
                let before = self.subtree(self.nodes[index].left);
                let child = self.insert(self.nodes[index].left, key, decide, out);
                self.nodes[index].left = child;
                (child, before)
            }
            Ordering::Greater => {
                let before = self.subtree(self.nodes[index].right);
                let child = self.insert(self.nodes[index].right, key, decide, out);
                self.nodes[index].right = child;
                (child, before)
            }
        };
        if matches!(out, Updated::Unchanged) {
            return at;
        }
        // Only the child's subtree changed: add the change to this node's sums rather than
        // summing its children again (which would read the other child, a cache miss per
        // level of a large treap).
        let after = self.subtree(child);
        let node = &mut self.nodes[index];
        node.subtree = node
            .subtree
            .add(&after.fingerprint)
            .sub(&before.fingerprint);
        // An insert never shrinks a subtree; at most `len()` keys fit in u32 (see above).
        node.count += (after.count - before.count) as u32;
        if child != NIL && self.nodes[child as usize].priority > self.nodes[index].priority {
            return self.rotate_up(at, child);
        }
        at
    }

    /// Lifts `child` above its parent `at` (a right rotation if it is the left child).
    fn rotate_up(&mut self, at: u32, child: u32) -> u32 {
        let (own_at, own_child) = (self.own(at), self.own(child));
        if self.nodes[at as usize].left == child {
            self.nodes[at as usize].left = self.nodes[child as usize].right;
            self.nodes[child as usize].right = at;
        } else {
            self.nodes[at as usize].right = self.nodes[child as usize].left;
            self.nodes[child as usize].left = at;
        }
        self.refresh(at, own_at);
        self.refresh(child, own_child);
        child
    }

    fn subtree(&self, at: u32) -> Summary {
        if at == NIL {
            Summary::default()
        } else {
            let node = &self.nodes[at as usize];
            Summary {
                count: u64::from(node.count),
                fingerprint: node.subtree,
            }
        }
    }

    /// The fingerprint of `at`'s own key: its subtree's sum minus its children's.
    fn own(&self, at: u32) -> Fingerprint {
        let node = &self.nodes[at as usize];
        node.subtree
            .sub(&self.subtree(node.left).fingerprint)
            .sub(&self.subtree(node.right).fingerprint)
    }

    /// Recomputes `at`'s sums from its children and its own fingerprint `own`.
    fn refresh(&mut self, at: u32, own: Fingerprint) {
        let node = &self.nodes[at as usize];
        let (left, right) = (self.subtree(node.left), self.subtree(node.right));
        let node = &mut self.nodes[at as usize];
        node.subtree = own.add(&left.fingerprint).add(&right.fingerprint);
        // At most `len()` keys, which fits in u32 (see `insert`).
        node.count = (1 + left.count + right.count) as u32;
    }

    /// The summary of every key below `bound` (`None`: of every key).
    fn prefix(&self, bound: Option<&[u8]>) -> Summary {
        let Some(bound) = bound else {
            return self.subtree(self.root);
        };
        let mut acc = Summary::default();
        let mut at = self.root;
        while at != NIL {
            let node = &self.nodes[at as usize];
            if &node.key[..] < bound {
                // The node and its left subtree: its subtree without the right one.
                acc = acc.add(&self.subtree(at)).sub(&self.subtree(node.right));
                at = node.right;
            } else {
                at = node.left;
            }
        }
        acc
    }

    /// The summary of the keys in `[lower, upper)` (`upper` `None`: no upper bound).
    pub fn summary(&self, lower: &[u8], upper: Option<&[u8]>) -> Summary {
        if upper.is_some_and(|upper| upper <= lower) {
            return Summary::default();
        }
        self.prefix(upper).sub(&self.prefix(Some(lower)))
    }

    /// Number of keys below `bound`.
    pub fn rank(&self, bound: &[u8]) -> u64 {
        self.prefix(Some(bound)).count
    }

    /// The key with `rank` smaller keys, if there are that many.
    pub fn key_at(&self, mut rank: u64) -> Option<&[u8]> {
        let mut at = self.root;
        while at != NIL {
            let node = &self.nodes[at as usize];
            let left = self.subtree(node.left).count;
            match rank.cmp(&left) {
                Ordering::Less => at = node.left,
                Ordering::Equal => return Some(&node.key),
                Ordering::Greater => {
                    rank -= left + 1;
                    at = node.right;
                }
            }
        }
        None
    }

    /// The keys from `lower` on with their payloads, in key order.
    pub fn iter_from<'a>(&'a self, lower: &[u8]) -> impl Iterator<Item = (&'a [u8], &'a T)> + 'a {
        // The path of nodes not yet visited: each one's left subtree is done (or below `lower`).
        let mut path = Vec::new();
        let mut at = self.root;
        while at != NIL {
            let node = &self.nodes[at as usize];
            if &node.key[..] >= lower {
                path.push(at);
                at = node.left;
            } else {
                at = node.right;
            }
        }
        std::iter::from_fn(move || {
            let next = path.pop()?;
            let node = &self.nodes[next as usize];
            let mut at = node.right;
            while at != NIL {
                path.push(at);
                at = self.nodes[at as usize].left;
            }
            Some((&node.key[..], &node.payload))
        })
    }

    /// Keeps only the keys for which `keep` holds, rebuilding the tree (O(n log n)) if any
    /// went.
    pub fn retain(&mut self, mut keep: impl FnMut(&[u8], &T) -> bool) {
        let gone: Vec<bool> = self
            .nodes
            .iter()
            .map(|node| !keep(&node.key, &node.payload))
            .collect();
        if !gone.contains(&true) {
            return;
        }
        let owns: Vec<Fingerprint> = (0..self.nodes.len() as u32)
            .map(|at| self.own(at))
            .collect();
        let nodes = std::mem::take(&mut self.nodes);
        self.root = NIL;
        for ((node, own), gone) in nodes.into_iter().zip(owns).zip(gone) {
            if !gone {
                let key = node.key.to_bytes();
                self.update(&key, |_| Some((own, node.payload)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;
    use proptest::prelude::*;

    use super::*;
    use crate::store::NodeId;

    fn version(millis: u64) -> Version {
        Version {
            millis,
            counter: 0,
            node: NodeId::new("n"),
            actor: 0,
        }
    }

    /// The gateway's bytes per entry (the README's memory table quotes this).
    #[test]
    fn a_gateway_node_takes_192_bytes() {
        let node = std::mem::size_of::<Node<crate::store::compact::Stored>>();
        eprintln!("treap node with a compact signed entry: {node} B");
        assert_eq!(node, 192);
    }

    #[test]
    fn sums_wrap_and_subtract_back() {
        let max = Fingerprint([0xff; 32]);
        let one = Fingerprint::from_limbs([1, 0, 0, 0]);
        assert_eq!(max.add(&one), Fingerprint::ZERO);
        assert_eq!(Fingerprint::ZERO.sub(&one), max);
        let a = Fingerprint::of_entry(b"a", &version(1));
        let b = Fingerprint::of_entry(b"b", &version(2));
        assert_eq!(a.add(&b).sub(&b), a);
        assert_eq!(a.add(&b), b.add(&a));
    }

    #[test]
    fn entry_fingerprints_tell_fields_apart() {
        let base = Fingerprint::of_entry(b"ab", &version(1));
        assert_ne!(base, Fingerprint::of_entry(b"ab", &version(2)));
        assert_ne!(base, Fingerprint::of_entry(b"a", &version(1)));
        let mut other_actor = version(1);
        other_actor.actor = 1;
        assert_ne!(base, Fingerprint::of_entry(b"ab", &other_actor));
    }

    fn brute(model: &BTreeMap<Key, Fingerprint>, lower: &[u8], upper: Option<&[u8]>) -> Summary {
        model
            .iter()
            .filter(|(key, _)| key.as_ref() >= lower && upper.is_none_or(|u| key.as_ref() < u))
            .fold(Summary::default(), |acc, (_, fp)| {
                acc.add(&Summary {
                    count: 1,
                    fingerprint: *fp,
                })
            })
    }

    proptest! {
        #[test]
        fn ranges_match_a_scan_after_any_updates(
            writes in prop::collection::vec(("[a-e]{0,3}", 0u64..5), 0..120),
            removals in prop::collection::vec("[a-e]{0,3}", 0..40),
            bounds in prop::collection::vec(("[a-e]{0,3}", prop::option::of("[a-e]{0,3}")), 1..20),
        ) {
            let mut index = FingerprintIndex::default();
            let mut model = BTreeMap::new();
            for (key, millis) in writes.iter().cloned() {
                let key = Bytes::from(key);
                let fp = Fingerprint::of_entry(&key, &version(millis));
                index.upsert(&key, fp);
                model.insert(key, fp);
            }
            for key in removals {
                prop_assert_eq!(index.remove(key.as_bytes()).is_some(), model.remove(key.as_bytes()).is_some());
            }
            // Slots freed by removals are reused soundly.
            for (key, millis) in writes.into_iter().step_by(3) {
                let key = Bytes::from(key);
                let fp = Fingerprint::of_entry(&key, &version(millis + 1));
                index.upsert(&key, fp);
                model.insert(key, fp);
            }
            prop_assert_eq!(index.len(), model.len());
            for (lower, upper) in bounds {
                let upper = upper.as_deref().map(str::as_bytes);
                prop_assert_eq!(
                    index.summary(lower.as_bytes(), upper),
                    brute(&model, lower.as_bytes(), upper)
                );
                let from: Vec<&[u8]> = index.iter_from(lower.as_bytes()).map(|(key, _)| key).collect();
                let expected: Vec<&[u8]> = model
                    .keys()
                    .map(|key| &key[..])
                    .filter(|key| *key >= lower.as_bytes())
                    .collect();
                prop_assert_eq!(from, expected);
                prop_assert_eq!(index.get(lower.as_bytes()).is_some(), model.contains_key(lower.as_bytes()));
                prop_assert_eq!(
                    index.rank(lower.as_bytes()),
                    model.keys().filter(|k| k.as_ref() < lower.as_bytes()).count() as u64
                );
            }
            for (rank, key) in model.keys().enumerate() {
                prop_assert_eq!(index.key_at(rank as u64), Some(&key[..]));
            }
            prop_assert_eq!(index.key_at(model.len() as u64), None);
        }
    }
}
