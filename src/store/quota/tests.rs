use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::store::compact::Slot;
use crate::store::entry::{Merged, Version, merge};

const OWN: &str = "own";

fn limits(max_keys: u64, max_bytes: u64) -> QuotaLimits {
    QuotaLimits {
        max_keys,
        max_bytes,
    }
}

fn entry(writer: &str, millis: u64, value: Option<usize>) -> Entry {
    let version = Version {
        millis,
        counter: 0,
        node: NodeId::new(writer),
        actor: 0,
    };
    Entry {
        version,
        value: value.map(|n| Bytes::from(vec![b'v'; n])),
        signature: None,
    }
}

fn key(name: &str) -> Key {
    Bytes::copy_from_slice(name.as_bytes())
}

/// A replica as the gateway keeps one: an LWW map of admitted entries and the accounts, and
/// what `world.redb` holds of the accounts (every delta committed at once).
struct Model {
    limits: QuotaLimits,
    map: BTreeMap<Key, Entry>,
    own: Arc<OwnQuota>,
    quota: Quota,
    saved: SavedQuota,
    rejected: usize,
    evicted: usize,
}

impl Model {
    fn new(limits: QuotaLimits) -> Model {
        let own = Arc::new(OwnQuota::new(limits));
        let (quota, _) = Quota::rebuild(
            NodeId::new(OWN),
            own.clone(),
            &BTreeMap::new(),
            SavedQuota::default(),
        );
        Model {
            limits,
            map: BTreeMap::new(),
            own,
            quota,
            saved: SavedQuota::default(),
            rejected: 0,
            evicted: 0,
        }
    }

    /// Delivers a peer's entry (or, by `OWN`, makes this node's own write) and commits; returns
    /// whether it was admitted and the keys it evicted.
    fn deliver(&mut self, key: &Key, entry: &Entry) -> Outcome {
        if entry.author().as_str() == OWN {
            let write = OwnWrite {
                key,
                value_bytes: entry.value.as_ref().map(|v| v.len()),
            };
            let admitted = self.own.reserve(&[write], entry.version.millis).is_ok();
            if admitted {
                self.merge_noted(key, entry);
            } else {
                self.rejected += 1;
            }
            self.commit();
            return Outcome {
                admitted,
                evicted: Vec::new(),
            };
        }
        let outcome = self.quota.admit(key, entry);
        for gone in &outcome.evicted {
            if self
                .map
                .get(gone)
                .is_some_and(|held| held.author() == entry.author())
            {
                self.map.remove(gone);
            }
            self.evicted += 1;
        }
        if outcome.admitted {
            self.merge_noted(key, entry);
        } else {
            self.rejected += 1;
        }
        self.commit();
        outcome
    }

    /// Merges as the gateway does, noting the change for the writers of the new and old entry.
    fn merge_noted(&mut self, key: &Key, entry: &Entry) {
        let before = self.map.get(key).map(|held| held.author().clone());
        let merged = merge(&mut self.map, key.clone(), entry.clone());
        let held = self.map.get(key).map(Slot::new);
        self.quota.note(key, entry.author(), held.as_ref());
        if let Some(before) = before
            && merged != Merged::Unchanged
            && before != *entry.author()
        {
            self.quota.note(key, &before, held.as_ref());
        }
    }

    /// Releases and purges tombstones before `horizon`, as the gateway does.
    fn purge(&mut self, horizon: u64, own_margin: u64) {
        let map = &self.map;
        let live = |key: &Key, writer: &NodeId| {
            map.get(key)
                .is_some_and(|e| e.author() == writer && !e.is_tombstone())
        };
        self.quota.release(horizon, own_margin, live);
        let expired: Vec<(Key, NodeId)> = self
            .map
            .iter()
            .filter(|(_, e)| e.is_tombstone() && e.version.millis < horizon)
            .map(|(k, e)| (k.clone(), e.author().clone()))
            .collect();
        for (key, writer) in expired {
            self.map.remove(&key);
            self.quota.note(&key, &writer, None);
        }
        self.commit();
    }

    /// What a commit does to the quota's tables.
    fn commit(&mut self) {
        self.quota.take_delta().apply_to(&mut self.saved);
    }

    /// Stops and starts again from what is on disk: the entries and the saved quota.
    fn restart(&mut self) {
        self.own = Arc::new(OwnQuota::new(self.limits));
        let (quota, dropped) = Quota::rebuild(
            NodeId::new(OWN),
            self.own.clone(),
            &self.map,
            self.saved.clone(),
        );
        assert_eq!(
            dropped,
            Vec::<Key>::new(),
            "a committed replica drops nothing"
        );
        self.quota = quota;
        self.commit();
    }

    fn usage(&self, writer: &str) -> (u64, u64) {
        if writer == OWN {
            return self.own.usage();
        }
        self.quota
            .account(&NodeId::new(writer))
            .map_or((0, 0), |a| (a.keys(), a.bytes()))
    }

    /// A writer's account without the bookkeeping of what is saved: (key, bytes, stamp) and
    /// the cut.
    fn account(&self, writer: &str) -> (Vec<(Key, u64, Stamp)>, Option<Key>) {
        self.quota
            .account(&NodeId::new(writer))
            .map_or((Vec::new(), None), |a| {
                let keys = a.keys.iter().map(|(k, c)| (k.clone(), c.bytes, c.latest));
                (keys.collect(), a.cut.clone())
            })
    }

    fn held_by(&self, writer: &str) -> usize {
        self.map
            .values()
            .filter(|e| e.author().as_str() == writer)
            .count()
    }
}

#[test]
fn a_writer_gets_exactly_its_key_limit_in_key_order() {
    let mut replica = Model::new(limits(3, 0));
    for name in ["e", "d", "c", "b", "a"] {
        replica.deliver(&key(name), &entry("w", 1, Some(1)));
    }
    let held: Vec<&[u8]> = replica.map.keys().map(|k| &k[..]).collect();
    assert_eq!(held, vec![&b"a"[..], b"b", b"c"]);
    assert_eq!(replica.usage("w"), (3, 6));
    // "e" and "d" were admitted, then pushed out by earlier keys.
    assert_eq!(replica.evicted, 2);
    assert_eq!(replica.rejected, 0);
    // A later key is rejected; the admitted ones may still be rewritten.
    replica.deliver(&key("f"), &entry("w", 2, Some(1)));
    replica.deliver(&key("d"), &entry("w", 2, Some(1)));
    replica.deliver(&key("a"), &entry("w", 2, Some(1)));
    assert_eq!(replica.rejected, 2);
    assert_eq!(replica.map[&key("a")].version.millis, 2);
    // Another writer has a quota of its own.
    replica.deliver(&key("z"), &entry("x", 1, Some(1)));
    assert_eq!(replica.usage("x"), (1, 2));
}

#[test]
fn zero_turns_a_limit_off() {
    let mut replica = Model::new(limits(0, 0));
    for i in 0..1000 {
        replica.deliver(&key(&format!("k{i:04}")), &entry("w", 1, Some(100)));
    }
    assert_eq!(replica.map.len(), 1000);
    assert_eq!(replica.rejected, 0);
    let mut bytes_only = Model::new(limits(0, 50));
    for i in 0..10 {
        bytes_only.deliver(&key(&format!("k{i}")), &entry("w", 1, Some(8)));
    }
    // 10 bytes a key: 5 fit in 50.
    assert_eq!(bytes_only.map.len(), 5);
    assert_eq!(bytes_only.usage("w"), (5, 50));
}

#[test]
fn the_bytes_limit_counts_keys_and_values_and_never_shrinks() {
    let mut replica = Model::new(limits(0, 20));
    replica.deliver(&key("a"), &entry("w", 1, Some(9)));
    replica.deliver(&key("b"), &entry("w", 1, Some(9)));
    assert_eq!(replica.usage("w"), (2, 20));
    replica.deliver(&key("c"), &entry("w", 1, Some(0)));
    assert_eq!(replica.rejected, 1);
    // A smaller value for "a" keeps its charge: "c" stays out whatever the order.
    replica.deliver(&key("a"), &entry("w", 2, Some(1)));
    replica.deliver(&key("c"), &entry("w", 2, Some(0)));
    assert_eq!(replica.usage("w"), (2, 20));
    assert!(!replica.map.contains_key(&key("c")));
    // A larger value for "a" pushes "b" out, and a value too large for the whole quota is
    // itself refused and evicts the key.
    replica.deliver(&key("a"), &entry("w", 3, Some(15)));
    assert!(!replica.map.contains_key(&key("b")));
    assert_eq!(replica.map[&key("a")].version.millis, 3);
    replica.deliver(&key("a"), &entry("w", 4, Some(40)));
    assert!(replica.map.is_empty());
    assert_eq!(replica.usage("w"), (0, 0));
}

#[test]
fn an_overwritten_key_stays_charged_to_its_first_writer() {
    let mut replica = Model::new(limits(1, 0));
    replica.deliver(&key("k"), &entry("w", 1, Some(1)));
    replica.deliver(&key("k"), &entry("x", 2, Some(1)));
    assert_eq!(replica.map[&key("k")].author().as_str(), "x");
    // "w" still has "k" charged: its next key does not fit.
    replica.deliver(&key("l"), &entry("w", 3, Some(1)));
    assert!(!replica.map.contains_key(&key("l")));
    assert_eq!(replica.usage("w"), (1, 2));
    assert_eq!(replica.usage("x"), (1, 2));
}

#[test]
fn expired_tombstones_release_their_keys_and_the_cut() {
    let mut replica = Model::new(limits(1, 0));
    replica.deliver(&key("a"), &entry("w", 1_000, None));
    replica.deliver(&key("b"), &entry("w", 1_000, Some(1)));
    assert_eq!(replica.rejected, 1);
    let dead = |_: &Key, _: &NodeId| false;
    assert_eq!(replica.quota.release(1_000, 0, dead), 0);
    assert_eq!(replica.quota.release(1_001, 0, dead), 1);
    assert!(replica.quota.account(&NodeId::new("w")).is_none());
    replica.deliver(&key("b"), &entry("w", 2_000, Some(1)));
    assert_eq!(replica.usage("w"), (1, 2));
}

#[test]
fn own_writes_are_reserved_all_or_nothing_and_never_evicted() {
    let own = Arc::new(OwnQuota::new(limits(2, 0)));
    let (a, b, c) = (key("a"), key("b"), key("c"));
    let write = |key| OwnWrite {
        key,
        value_bytes: Some(1),
    };
    assert!(own.reserve(&[write(&b), write(&b)], 1).is_ok());
    let refused = own.reserve(&[write(&a), write(&c)], 1).unwrap_err();
    assert_eq!((refused.keys, refused.bytes), (3, 6));
    assert!(refused.to_string().contains("at most 2 keys"), "{refused}");
    assert_eq!(own.usage(), (1, 2));
    // A delete of a held key costs nothing more; a new key still fits once.
    let delete = OwnWrite {
        key: &b,
        value_bytes: None,
    };
    assert!(own.reserve(&[delete], 1).is_ok());
    assert!(own.reserve(&[write(&c)], 1).is_ok());
    assert!(own.reserve(&[write(&a)], 1).is_err());
    // An own entry coming back from a peer that does not fit is refused, not evicting "c".
    let empty = BTreeMap::new();
    let saved = SavedQuota::default();
    let (mut quota, dropped) = Quota::rebuild(NodeId::new(OWN), own.clone(), &empty, saved);
    assert!(dropped.is_empty());
    let outcome = quota.admit(&a, &entry(OWN, 5, Some(1)));
    assert_eq!(outcome, Outcome::default());
    assert_eq!(own.usage(), (2, 4));
    assert!(OwnQuota::new(limits(0, 0)).reserve(&[write(&a)], 1).is_ok());
}

#[test]
fn a_rebuild_keeps_own_keys_and_drops_others_past_their_quota() {
    let own = Arc::new(OwnQuota::new(limits(1, 0)));
    let mut map = BTreeMap::new();
    for name in ["a", "b", "c"] {
        map.insert(key(name), entry(OWN, 1, Some(1)));
        map.insert(key(&format!("x{name}")), entry("x", 1, Some(1)));
    }
    let (_, dropped) = Quota::rebuild(NodeId::new(OWN), own.clone(), &map, SavedQuota::default());
    assert_eq!(dropped, vec![key("xb"), key("xc")]);
    assert_eq!(own.usage(), (3, 6));
}

/// One delivery: writer index, key index, value size (None: tombstone), version time.
type Delivery = (usize, usize, Option<usize>, u64);

/// The writers of deliveries: three peers, then this node.
const WRITERS: [&str; 4] = ["w0", "w1", "w2", OWN];

fn deliveries() -> impl Strategy<Value = Vec<Delivery>> {
    deliveries_by(3)
}

/// Deliveries by the first `writers` of [`WRITERS`].
fn deliveries_by(writers: usize) -> impl Strategy<Value = Vec<Delivery>> {
    prop::collection::vec(
        (
            0..writers,
            0..12usize,
            prop::option::weighted(0.8, 0..12usize),
            0..6u64,
        ),
        1..60,
    )
}

/// The `index`th delivery as an entry (the index is its version counter, so that no two
/// entries share a version, as in a real world).
fn keyed(index: usize, delivery: &Delivery, shared_keys: bool) -> (Key, Entry) {
    let (writer, k, value, millis) = *delivery;
    let writer_name = WRITERS[writer];
    // This node's clock only moves forward.
    let millis = if writer_name == OWN {
        index as u64 / 10
    } else {
        millis
    };
    // Keys outside `p/` may be written by several writers; `p/` keys by their owner only.
    let name = if shared_keys {
        format!("k{k:02}")
    } else {
        format!("p/{writer_name}/k{k:02}")
    };
    let mut entry = entry(writer_name, millis, value);
    entry.version.counter = index as u32;
    (key(&name), entry)
}

/// Delivers `entries` to a fresh replica in batches cut at `cuts`, restarting it between
/// batches if `restarts`.
fn replay(limits: QuotaLimits, entries: &[(Key, Entry)], cuts: &[usize], restarts: bool) -> Model {
    let mut replica = Model::new(limits);
    let mut batches: Vec<&[(Key, Entry)]> = Vec::new();
    let mut rest = entries;
    for cut in cuts {
        let (batch, after) = rest.split_at((*cut).min(rest.len()));
        batches.push(batch);
        rest = after;
    }
    batches.push(rest);
    for batch in batches {
        if restarts {
            replica.restart();
        }
        for (key, entry) in batch {
            replica.deliver(key, entry);
        }
    }
    replica
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_same_entries_in_any_order_and_batches_give_the_same_state(
        deliveries in deliveries(),
        shared_keys in any::<bool>(),
        max_keys in 0..6u64,
        max_bytes in prop::sample::select(vec![0u64, 20, 35, 60]),
        order in any::<prop::sample::Index>(),
        cuts in prop::collection::vec(0..20usize, 0..5),
        restarts in any::<bool>(),
    ) {
        let limits = limits(max_keys, max_bytes);
        let entries: Vec<(Key, Entry)> =
            deliveries.iter().enumerate().map(|(i, d)| keyed(i, d, shared_keys)).collect();
        let mut shuffled = entries.clone();
        // A permutation picked by `order`: rotate, then reverse every other chunk.
        let turn = order.index(shuffled.len().max(1));
        shuffled.rotate_left(turn);
        for (i, chunk) in shuffled.chunks_mut(3).enumerate() {
            if i % 2 == 0 {
                chunk.reverse();
            }
        }
        let mut a = replay(limits, &entries, &[], false);
        let mut b = replay(limits, &shuffled, &cuts, restarts);
        for writer in ["w0", "w1", "w2"] {
            prop_assert_eq!(a.usage(writer), b.usage(writer));
            if max_keys > 0 {
                prop_assert!(a.usage(writer).0 <= max_keys);
                prop_assert!(a.held_by(writer) as u64 <= max_keys);
            }
            if max_bytes > 0 {
                prop_assert!(a.usage(writer).1 <= max_bytes);
            }
        }
        if !shared_keys {
            prop_assert_eq!(&a.map, &b.map);
        } else {
            // An evicted entry may have replaced another writer's older one, which the
            // replica that saw them in that order no longer has: one sync round (each is
            // offered what the other holds) brings it back.
            let held_a: Vec<(Key, Entry)> = a.map.clone().into_iter().collect();
            let held_b: Vec<(Key, Entry)> = b.map.clone().into_iter().collect();
            for (key, entry) in &held_b {
                a.deliver(key, entry);
            }
            for (key, entry) in &held_a {
                b.deliver(key, entry);
            }
            prop_assert_eq!(&a.map, &b.map);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// A replica restarted from its saved state (any number of times, anywhere in the
    /// deliveries, this node's own writes among them) decides every delivery as one that
    /// never stopped, and ends with the same entries and accounts.
    #[test]
    fn a_restart_from_what_was_saved_makes_the_same_decisions(
        deliveries in deliveries_by(4),
        shared_keys in any::<bool>(),
        max_keys in 0..6u64,
        max_bytes in prop::sample::select(vec![0u64, 20, 35, 60]),
        restarts in prop::collection::vec(0..60usize, 1..4),
        purge_at in 0..60usize,
    ) {
        let limits = limits(max_keys, max_bytes);
        let entries: Vec<(Key, Entry)> =
            deliveries.iter().enumerate().map(|(i, d)| keyed(i, d, shared_keys)).collect();
        let (mut never, mut restarted) = (Model::new(limits), Model::new(limits));
        for (i, (key, entry)) in entries.iter().enumerate() {
            if restarts.contains(&i) {
                restarted.restart();
            }
            if i == purge_at {
                never.purge(3, 1);
                restarted.purge(3, 1);
            }
            let (a, b) = (never.deliver(key, entry), restarted.deliver(key, entry));
            prop_assert_eq!(a, b, "delivery {} of {:?}", i, key);
        }
        restarted.restart();
        prop_assert_eq!(&never.map, &restarted.map);
        for writer in ["w0", "w1", "w2"] {
            prop_assert_eq!(never.account(writer), restarted.account(writer));
        }
        prop_assert_eq!(never.usage(OWN), restarted.usage(OWN));
        // Kept: a cut per writer and a row per charged key at most, never one per refusal.
        let charged: u64 = WRITERS.iter().map(|w| restarted.usage(w).0).sum();
        for account in restarted.saved.writers.values() {
            prop_assert!(account.charges.len() as u64 <= charged);
        }
    }
}

#[test]
fn what_a_restart_needs_is_saved_and_the_rest_is_not() {
    let mut replica = Model::new(limits(2, 0));
    // "w"'s key "a" overwritten by "x": its charge is kept, as a row.
    replica.deliver(&key("a"), &entry("w", 1, Some(5)));
    replica.deliver(&key("a"), &entry("x", 2, Some(1)));
    replica.deliver(&key("b"), &entry("w", 1, Some(1)));
    // "c" does not fit: "w" is cut there; "d" is refused without a trace.
    replica.deliver(&key("c"), &entry("w", 1, Some(1)));
    replica.deliver(&key("d"), &entry("w", 1, Some(1)));
    let w = &replica.saved.writers[&NodeId::new("w")];
    assert_eq!(w.cut, Some(key("c")));
    assert_eq!(w.charges.keys().collect::<Vec<_>>(), [&key("a")]);
    // "x"'s key is implied by its entry: nothing kept for it.
    assert!(!replica.saved.writers.contains_key(&NodeId::new("x")));
    // Without what was saved, a restart would admit "c" again; with it, it is refused.
    replica.restart();
    assert!(!replica.deliver(&key("c"), &entry("w", 3, Some(1))).admitted);
    let mut forgetful = Model::new(limits(2, 0));
    forgetful.map = replica.map.clone();
    forgetful.restart();
    assert!(
        forgetful
            .deliver(&key("c"), &entry("w", 3, Some(1)))
            .admitted
    );
    // Rewriting "a" by "w" makes its row unneeded again (the entry implies the charge).
    replica.deliver(&key("a"), &entry("w", 4, Some(5)));
    let w = &replica.saved.writers[&NodeId::new("w")];
    assert!(w.charges.is_empty(), "{w:?}");
}

#[test]
fn an_own_write_smaller_than_its_charge_carries_its_row_to_disk() {
    let own = Arc::new(OwnQuota::new(limits(10, 0)));
    let (mut quota, _) = Quota::rebuild(
        NodeId::new(OWN),
        own.clone(),
        &BTreeMap::new(),
        SavedQuota::default(),
    );
    let k = key("k");
    // Two writes of "k" coalesced by the actor into the second, smaller one.
    for value_bytes in [Some(30), Some(2)] {
        own.reserve(
            &[OwnWrite {
                key: &k,
                value_bytes,
            }],
            5,
        )
        .unwrap();
    }
    let small = entry(OWN, 5, Some(2));
    quota.note(&k, &NodeId::new(OWN), Some(&Slot::new(&small)));
    let delta = quota.take_own_rows(&[(k.clone(), small.clone())]);
    let row = delta.charges[&(NodeId::new(OWN), k.clone())].expect("a row, not a deletion");
    assert_eq!(row.bytes, 31);
    // Written as it was charged, it needs no row.
    let big = entry(OWN, 6, Some(30));
    own.reserve(
        &[OwnWrite {
            key: &k,
            value_bytes: Some(30),
        }],
        6,
    )
    .unwrap();
    quota.note(&k, &NodeId::new(OWN), Some(&Slot::new(&big)));
    let delta = quota.take_own_rows(&[(k.clone(), big)]);
    assert_eq!(delta.charges[&(NodeId::new(OWN), k)], None);
    assert!(!quota.has_delta());
}
