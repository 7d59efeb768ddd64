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
#[derive(Debug)]
struct Node {
    /// The key (a cheap clone of the replica's).
    key: Key,
    /// The fingerprint of the key's current entry.
    own: Fingerprint,
    /// Size and fingerprint of the subtree rooted here.
    subtree: Summary,
    /// Heap priority, random so that no choice of keys can unbalance the tree.
    priority: u64,
    /// Left child (smaller keys) or [`NIL`].
    left: u32,
    /// Right child (greater keys) or [`NIL`].
    right: u32,
}

/// Range fingerprints of a replica, kept in step with it by [`FingerprintIndex::upsert`].
#[derive(Debug)]
pub struct FingerprintIndex {
    /// Every node; indices into it link the tree.
    nodes: Vec<Node>,
    /// The root, or [`NIL`] when empty.
    root: u32,
    /// State of the generator of priorities (xorshift64*, seeded at random).
    seed: u64,
}

impl Default for FingerprintIndex {
    fn default() -> Self {
        FingerprintIndex {
            nodes: Vec::new(),
            root: NIL,
            seed: rand::random::<u64>() | 1,
        }
    }
}

impl FingerprintIndex {
    /// Number of keys indexed.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no key is indexed.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Sets the fingerprint of `key`'s entry, adding the key if it is new.
    pub fn upsert(&mut self, key: &Key, fingerprint: Fingerprint) {
        // Recursion depth is the treap's depth: about 2 ln n with random priorities (under 60
        // for a billion keys), whatever the keys.
        self.root = self.insert(self.root, key, fingerprint);
    }

    /// Removes `key` if it is indexed (a key evicted by a quota), in O(log n).
    pub fn remove(&mut self, key: &[u8]) {
        let mut gone = NIL;
        self.root = self.delete(self.root, key, &mut gone);
        if gone == NIL {
            return;
        }
        // Free the arena slot: the last node moves into it, and whoever pointed at the last
        // node (its parent, or the root) points at the slot instead.
        let last = (self.nodes.len() - 1) as u32;
        if gone != last {
            let moved_key = self.nodes[last as usize].key.clone();
            if self.root == last {
                self.root = gone;
            } else {
                let mut at = self.root;
                loop {
                    let node = &mut self.nodes[at as usize];
                    let next = if moved_key < node.key {
                        &mut node.left
                    } else {
                        &mut node.right
                    };
                    if *next == last {
                        *next = gone;
                        break;
                    }
                    at = *next;
                }
            }
        }
        self.nodes.swap_remove(gone as usize);
    }

    fn delete(&mut self, at: u32, key: &[u8], gone: &mut u32) -> u32 {
        if at == NIL {
            return NIL;
        }
        let index = at as usize;
        match key.cmp(self.nodes[index].key.as_ref()) {
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
        self.refresh(at);
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
            let child = self.join(self.nodes[left as usize].right, right);
            self.nodes[left as usize].right = child;
            self.refresh(left);
            left
        } else {
            let child = self.join(left, self.nodes[right as usize].left);
            self.nodes[right as usize].left = child;
            self.refresh(right);
            right
        }
    }

    fn next_priority(&mut self) -> u64 {
        self.seed ^= self.seed >> 12;
        self.seed ^= self.seed << 25;
        self.seed ^= self.seed >> 27;
        self.seed.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn insert(&mut self, at: u32, key: &Key, fingerprint: Fingerprint) -> u32 {
        if at == NIL {
            let priority = self.next_priority();
            self.nodes.push(Node {
                key: key.clone(),
                own: fingerprint,
                subtree: Summary {
                    count: 1,
                    fingerprint,
                },
                priority,
                left: NIL,
                right: NIL,
            });
            // Keys beyond u32::MAX - 1 would need a wider arena index; a replica that large
            // does not fit in memory anyway.
            return (self.nodes.len() - 1) as u32;
        }
        let index = at as usize;
        let mut root = at;
        match key.cmp(&self.nodes[index].key) {
            Ordering::Equal => self.nodes[index].own = fingerprint,
            Ordering::Less => {
                let child = self.insert(self.nodes[index].left, key, fingerprint);
                self.nodes[index].left = child;
                if self.nodes[child as usize].priority > self.nodes[index].priority {
                    root = self.rotate_right(at);
                }
            }
            Ordering::Greater => {
                let child = self.insert(self.nodes[index].right, key, fingerprint);
                self.nodes[index].right = child;
                if self.nodes[child as usize].priority > self.nodes[index].priority {
                    root = self.rotate_left(at);
                }
            }
        }
        if root == at {
            self.refresh(at);
        }
        root
    }

    fn rotate_right(&mut self, at: u32) -> u32 {
        let left = self.nodes[at as usize].left;
        self.nodes[at as usize].left = self.nodes[left as usize].right;
        self.nodes[left as usize].right = at;
        self.refresh(at);
        self.refresh(left);
        left
    }

    fn rotate_left(&mut self, at: u32) -> u32 {
        let right = self.nodes[at as usize].right;
        self.nodes[at as usize].right = self.nodes[right as usize].left;
        self.nodes[right as usize].left = at;
        self.refresh(at);
        self.refresh(right);
        right
    }

    fn subtree(&self, at: u32) -> Summary {
        if at == NIL {
            Summary::default()
        } else {
            self.nodes[at as usize].subtree
        }
    }

    fn refresh(&mut self, at: u32) {
        let node = &self.nodes[at as usize];
        let own = Summary {
            count: 1,
            fingerprint: node.own,
        };
        let summary = own
            .add(&self.subtree(node.left))
            .add(&self.subtree(node.right));
        self.nodes[at as usize].subtree = summary;
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
            if node.key.as_ref() < bound {
                acc = acc.add(&self.subtree(node.left)).add(&Summary {
                    count: 1,
                    fingerprint: node.own,
                });
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
    pub fn key_at(&self, mut rank: u64) -> Option<&Key> {
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
                index.remove(key.as_bytes());
                model.remove(key.as_bytes());
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
                prop_assert_eq!(
                    index.rank(lower.as_bytes()),
                    model.keys().filter(|k| k.as_ref() < lower.as_bytes()).count() as u64
                );
            }
            for (rank, key) in model.keys().enumerate() {
                prop_assert_eq!(index.key_at(rank as u64), Some(key));
            }
            prop_assert_eq!(index.key_at(model.len() as u64), None);
        }
    }
}
