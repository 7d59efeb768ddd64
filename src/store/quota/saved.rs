//! What the quota keeps beyond the entries a replica holds: the values, loaded on start
//! ([`SavedQuota`]) and changed at every commit ([`QuotaDelta`]); the accounts rebuilt from
//! them and the entries ([`Quota::rebuild`]); and the decision, after each change to a key,
//! whether its charge needs a row ([`Quota::note`]). The tables they live in are
//! [`super::disk`]'s.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::{Account, Entry, Key, NodeId, OwnQuota, Quota, Slot, Stamp, charge};
use crate::store::entry::KeyedEntry;

/// One charged key whose entry held does not imply its charge: the charge and the writer's
/// latest stamp for the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedCharge {
    /// The largest size of the writer's entries seen for the key.
    pub bytes: u64,
    /// The writer's latest entry seen for the key.
    pub latest: Stamp,
}

/// What one writer's account keeps beyond the entries held.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SavedAccount {
    /// The first key that did not fit, if one did not.
    pub cut: Option<Key>,
    /// Charges the entries held do not imply.
    pub charges: BTreeMap<Key, SavedCharge>,
}

impl SavedAccount {
    fn is_empty(&self) -> bool {
        self.cut.is_none() && self.charges.is_empty()
    }
}

/// What every account keeps beyond the entries held, as `world.redb` has it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SavedQuota {
    /// Per writer; a writer with nothing to keep has no account here.
    pub writers: HashMap<NodeId, SavedAccount>,
}

/// Changes to a [`SavedQuota`] not committed yet, the latest per row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QuotaDelta {
    /// Rows to write (`Some`) or delete (`None`).
    pub charges: HashMap<(NodeId, Key), Option<SavedCharge>>,
    /// Cuts to write (`Some`) or delete (`None`).
    pub cuts: HashMap<NodeId, Option<Key>>,
}

impl QuotaDelta {
    /// Whether there is nothing to change.
    pub fn is_empty(&self) -> bool {
        self.charges.is_empty() && self.cuts.is_empty()
    }

    /// Keeps `row` for `writer`'s `key`.
    pub(super) fn keep(&mut self, writer: &NodeId, key: Key, row: SavedCharge) {
        self.charges.insert((writer.clone(), key), Some(row));
    }

    /// Deletes the row of `writer`'s `key`.
    pub(super) fn forget(&mut self, writer: &NodeId, key: Key) {
        self.charges.insert((writer.clone(), key), None);
    }

    /// Sets (or deletes) `writer`'s cut.
    pub(super) fn cut(&mut self, writer: &NodeId, cut: Option<Key>) {
        self.cuts.insert(writer.clone(), cut);
    }

    /// Takes in `newer`, a later delta: its rows replace these.
    pub fn absorb(&mut self, newer: QuotaDelta) {
        self.charges.extend(newer.charges);
        self.cuts.extend(newer.cuts);
    }

    /// Applies the changes to `saved`, as a commit does to the tables.
    pub fn apply_to(self, saved: &mut SavedQuota) {
        for ((writer, key), row) in self.charges {
            let account = saved.writers.entry(writer).or_default();
            match row {
                Some(row) => {
                    account.charges.insert(key, row);
                }
                None => {
                    account.charges.remove(&key);
                }
            }
        }
        for (writer, cut) in self.cuts {
            saved.writers.entry(writer).or_default().cut = cut;
        }
        saved.writers.retain(|_, account| !account.is_empty());
    }
}

impl Quota {
    /// Accounts of `map` (a replica's content) and of `saved` (what `world.redb` kept beyond
    /// it), with `own` as this node's account (`own_id`'s). Returns them and the keys of other
    /// writers' entries over their quota, which the replica must drop; this node's own keys
    /// are all kept, even over a quota lowered since they were written (its new writes are
    /// refused until it is under). Rows of `saved` no longer needed go in the first delta.
    pub fn rebuild(
        own_id: NodeId,
        own: std::sync::Arc<OwnQuota>,
        map: &BTreeMap<Key, Entry>,
        saved: SavedQuota,
    ) -> (Quota, Vec<Key>) {
        let mut quota = Quota {
            own_id,
            own,
            others: HashMap::new(),
            delta: QuotaDelta::default(),
        };
        let mut dropped = Vec::new();
        let limits = quota.own.limits();
        if limits.is_off() {
            return (quota, dropped);
        }
        let held_by =
            |key: &Key, writer: &NodeId| map.get(key).is_some_and(|e| e.author() == writer);
        let mut unsaved: Vec<(NodeId, Key)> = Vec::new();
        // What was saved first (the outcome does not depend on the order), then the entries.
        for (writer, account) in saved.writers {
            if writer == quota.own_id {
                let mut own_account = quota.own.lock();
                for (key, charge) in account.charges {
                    own_account.charge(&key, charge.bytes, charge.latest);
                    own_account.mark_saved(&key);
                }
                continue;
            }
            let target = quota.others.entry(writer.clone()).or_default();
            target.cut.clone_from(&account.cut);
            target.saved_cut = account.cut;
            for (key, charge) in account.charges {
                let mut gone = Vec::new();
                let outcome = target.admit(&key, charge.bytes, charge.latest, &limits, &mut gone);
                if outcome.admitted {
                    target.mark_saved(&key);
                } else {
                    gone.push(key);
                }
                dropped.extend(outcome.evicted.into_iter().filter(|k| held_by(k, &writer)));
                unsaved.extend(gone.into_iter().map(|k| (writer.clone(), k)));
            }
        }
        {
            let mut own_account = quota.own.lock();
            for (key, entry) in map {
                let bytes = charge(key, entry);
                let latest = Stamp::of(entry);
                let writer = entry.author();
                if *writer == quota.own_id {
                    own_account.charge(key, bytes, latest);
                    continue;
                }
                let account = quota.others.entry(writer.clone()).or_default();
                let mut gone = Vec::new();
                let outcome = account.admit(key, bytes, latest, &limits, &mut gone);
                dropped.extend(outcome.evicted.into_iter().filter(|k| held_by(k, writer)));
                if !outcome.admitted {
                    dropped.push(key.clone());
                }
                unsaved.extend(gone.into_iter().map(|k| (writer.clone(), k)));
            }
        }
        for (writer, key) in unsaved {
            quota.delta.forget(&writer, key);
        }
        for (writer, account) in &mut quota.others {
            save_cut(&mut quota.delta, writer, account);
        }
        (quota, dropped)
    }

    /// Records whether `writer`'s charge for `key` needs a row in `world.redb` now that the
    /// replica holds `held` under `key`: it does unless `held` is `writer`'s entry of the
    /// charged size at the charged stamp. Call after every change to a key's entry, for its
    /// writer and for the writer of the entry it replaced (or purged).
    pub fn note(&mut self, key: &Key, writer: &NodeId, held: Option<&Slot>) {
        if !self.is_on() {
            return;
        }
        let own = *writer == self.own_id;
        let mut own_guard = own.then(|| self.own.lock());
        let account = match own_guard.as_deref_mut() {
            Some(account) => account,
            None => match self.others.get_mut(writer) {
                Some(account) => account,
                None => return,
            },
        };
        let Some(charged) = account.keys.get_mut(key) else {
            return;
        };
        let implied = held.is_some_and(|slot| {
            let bytes = (key.len() + slot.value().map_or(0, <[u8]>::len)) as u64;
            let stamp = Stamp::of_slot(slot);
            // This node's own stamps are wall-clock readings taken before the write's version.
            let same_stamp = if own {
                stamp.tombstone == charged.latest.tombstone
            } else {
                stamp == charged.latest
            };
            slot.author() == writer && bytes == charged.bytes && same_stamp
        });
        if implied {
            if charged.saved {
                charged.saved = false;
                self.delta.forget(writer, key.clone());
            }
        } else {
            charged.saved = true;
            let row = SavedCharge {
                bytes: charged.bytes,
                latest: charged.latest,
            };
            self.delta.keep(writer, key.clone(), row);
        }
    }

    /// Takes out of the pending changes those of this node's own rows for `batch`'s keys
    /// (its writes, just merged and noted), to be committed with them: a write of a smaller
    /// value than its key was charged then leaves its row in the same commit.
    pub fn take_own_rows(&mut self, batch: &[KeyedEntry]) -> QuotaDelta {
        let mut taken = QuotaDelta::default();
        if self.delta.charges.is_empty() {
            return taken;
        }
        for (key, _) in batch {
            let row = (self.own_id.clone(), key.clone());
            if let Some(change) = self.delta.charges.remove(&row) {
                taken.charges.insert(row, change);
            }
        }
        taken
    }

    /// The changes to what `world.redb` keeps since the last call, for the next commit.
    pub fn take_delta(&mut self) -> QuotaDelta {
        std::mem::take(&mut self.delta)
    }

    /// Whether there are changes for `world.redb` not taken yet.
    pub fn has_delta(&self) -> bool {
        !self.delta.is_empty()
    }
}

/// Adds `writer`'s cut to `delta` if it moved since it was last saved.
pub(super) fn save_cut(delta: &mut QuotaDelta, writer: &NodeId, account: &mut Account) {
    if account.cut != account.saved_cut {
        account.saved_cut.clone_from(&account.cut);
        delta.cut(writer, account.cut.clone());
    }
}
