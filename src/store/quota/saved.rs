//! What the quota keeps beyond the entries a replica holds, as values: loaded on start
//! ([`SavedQuota`]) and changed at every commit ([`QuotaDelta`]). The tables they live in are
//! [`super::disk`]'s.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::{Key, NodeId, Stamp};

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
