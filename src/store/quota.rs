//! Per-writer quotas: one peer cannot fill every disk in the world.
//!
//! Each writer (the node named in an entry's version) may have at most
//! [`QuotaLimits::max_keys`] keys and [`QuotaLimits::max_bytes`] bytes (key plus value) in the
//! world; 0 turns a limit off. This file owns the rule and the bookkeeping behind it; the
//! gateway applies it to peers' entries after `validate::check_remote`, and the query actors
//! reserve this node's own writes through [`OwnQuota`] before they acknowledge them.
//!
//! # The rule
//!
//! A replica keeps, per writer, an [`Account`]: every key it has seen an entry of that writer
//! for, charged the largest size (key + value, a tombstone is its key) any entry of that
//! writer for that key had. The writer's admitted keys are the longest prefix of its account
//! in key order that fits both limits; the first key that does not fit is the writer's *cut*,
//! and every entry of that writer for a key at or after the cut is rejected. An entry of a
//! key earlier than the cut joins the account and may push the last admitted keys out
//! (evicted: the replica drops the writer's entries for them).
//!
//! Why this rule: a replica forgets the entries it rejects (keeping them would be the very
//! disk it protects), so a rejection must never be undone by what arrives later, or the
//! outcome would depend on whether the rejected entry came before or after. Hence charges
//! only grow: a writer's key stays charged when another writer overwrites it (a key outside
//! `p/`), when the writer writes a smaller value, or deletes it; and a cut only moves to
//! earlier keys. With that, the admitted set is a function of the set of entries seen, in any
//! order and any batching (the property test below delivers the same entries in random orders
//! and batches to two replicas). A key leaves an account only when the writer's latest entry
//! for it is a tombstone older than `tombstone_ttl`, which every replica purges by the same
//! horizon (a purge also forgets the cut, so the writer may grow again).
//!
//! # Across restarts
//!
//! Most of an account is implied by the entries the replica holds: a key whose held entry is
//! the writer's own, of the charged size and at the latest stamp, is charged again from it on
//! start. What is not implied is kept in `world.redb` beside the entries (see [`disk`]), at the
//! same commits: per writer its cut, and per charged key whose held entry does not imply its
//! charge (overwritten by another writer, replaced by a smaller value, or this node's own
//! deleted key kept charged past its purge) a [`SavedCharge`]. So a restarted replica makes the
//! same decisions as one that never stopped, and what is kept is bounded by the quota itself,
//! never by the entries refused. [`Quota::note`] decides, after each change to a key, whether
//! its row is needed; the changes gather in a [`QuotaDelta`] the gateway hands to persistence
//! with the entries.
//!
//! What it does not give: replicas that never saw a superseded entry do not charge it (nor
//! does one that was killed before committing it), and a change of the limits starts the
//! accounts afresh from the entries held. Both matter only to a writer at its limit; an honest
//! node never is, as it refuses its own writes past its quota (see [`OwnQuota`]), and its own
//! account charges everything any replica could. Nor does a quota stop a peer that mints many
//! identities: each is a new writer with a quota of its own.

pub mod disk;
mod own;
mod saved;

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

pub use own::{OverQuota, OwnQuota, OwnWrite};
use saved::save_cut;
pub use saved::{QuotaDelta, SavedAccount, SavedCharge, SavedQuota};

use super::compact::Slot;
use super::entry::{Entry, Key, NodeId};

/// A world's per-writer limits; 0 turns a limit off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QuotaLimits {
    /// Most keys one writer may have in the world.
    pub max_keys: u64,
    /// Most bytes (keys plus values) one writer may have in the world.
    pub max_bytes: u64,
}

impl QuotaLimits {
    /// Whether neither limit is on (nothing is charged then).
    pub fn is_off(&self) -> bool {
        self.max_keys == 0 && self.max_bytes == 0
    }

    /// Whether `keys` keys of `bytes` bytes are over a limit.
    fn exceeded(&self, keys: u64, bytes: u64) -> bool {
        (self.max_keys != 0 && keys > self.max_keys)
            || (self.max_bytes != 0 && bytes > self.max_bytes)
    }
}

/// The bytes an entry of `key` is charged: its key and its value (a tombstone: its key).
pub fn charge(key: &[u8], entry: &Entry) -> u64 {
    (key.len() + entry.value.as_ref().map_or(0, |v| v.len())) as u64
}

/// The writer's latest entry seen for a key, to know when its tombstone expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Stamp {
    /// Version time, milliseconds since the Unix epoch.
    pub millis: u64,
    /// Version counter.
    pub counter: u32,
    /// Version actor.
    pub actor: u16,
    /// Whether that entry is a tombstone.
    pub tombstone: bool,
}

impl Stamp {
    fn of(entry: &Entry) -> Stamp {
        Stamp {
            millis: entry.version.millis,
            counter: entry.version.counter,
            actor: entry.version.actor,
            tombstone: entry.is_tombstone(),
        }
    }

    fn of_slot(slot: &Slot) -> Stamp {
        let version = slot.version();
        Stamp {
            millis: version.millis,
            counter: version.counter,
            actor: version.actor,
            tombstone: slot.is_tombstone(),
        }
    }
}

/// One key of a writer's account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Charged {
    /// The largest size of the writer's entries seen for the key.
    bytes: u64,
    /// The writer's latest entry seen for the key.
    latest: Stamp,
    /// Whether `world.redb` holds a [`SavedCharge`] row for the key (or one is on its way).
    saved: bool,
}

/// What admitting one entry did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Whether the entry may be merged.
    pub admitted: bool,
    /// Keys of the writer admitted before and pushed out now: its entries for them go.
    pub evicted: Vec<Key>,
}

impl Outcome {
    fn admitted() -> Outcome {
        Outcome {
            admitted: true,
            evicted: Vec::new(),
        }
    }
}

/// One writer's charged keys, their total, and its cut.
#[derive(Debug, Default)]
pub struct Account {
    /// The admitted keys, in key order.
    keys: BTreeMap<Key, Charged>,
    /// Sum of their charges.
    bytes: u64,
    /// The first key that did not fit: it and every later key are rejected.
    cut: Option<Key>,
    /// The cut as `world.redb` holds it (or will at the next commit).
    saved_cut: Option<Key>,
}

impl Account {
    /// Number of keys charged.
    pub fn keys(&self) -> u64 {
        self.keys.len() as u64
    }

    /// Bytes charged.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Admits an entry of this writer for `key` of `bytes` at `latest`; when it does not fit,
    /// the last keys are evicted until it does (or it is evicted itself). Keys that leave the
    /// account with a saved row are added to `unsaved`.
    fn admit(
        &mut self,
        key: &Key,
        bytes: u64,
        latest: Stamp,
        limits: &QuotaLimits,
        unsaved: &mut Vec<Key>,
    ) -> Outcome {
        if self.cut.as_ref().is_some_and(|cut| key >= cut) {
            return Outcome::default();
        }
        let was_charged = self.charge(key, bytes, latest);
        let mut outcome = Outcome::admitted();
        while limits.exceeded(self.keys(), self.bytes) {
            let Some((last, charged)) = self.keys.pop_last() else {
                break;
            };
            self.bytes -= charged.bytes;
            if charged.saved {
                unsaved.push(last.clone());
            }
            if last == *key {
                outcome.admitted = false;
                if !was_charged {
                    self.cut = Some(last);
                    break;
                }
            }
            outcome.evicted.push(last.clone());
            self.cut = Some(last);
        }
        outcome
    }

    /// Admits an entry only if it fits as it is, evicting nothing (this node's own writes:
    /// what it acknowledged stays).
    fn admit_whole(&mut self, key: &Key, bytes: u64, latest: Stamp, limits: &QuotaLimits) -> bool {
        let (keys, total) = self.after(key, bytes);
        let fits = !limits.exceeded(keys, total);
        if fits {
            self.charge(key, bytes, latest);
        }
        fits
    }

    /// Charges this node's own write of `key` made at wall time `latest`: unlike a peer's
    /// entry, it is this node's latest write of the key whatever the stamps say (two writes in
    /// one millisecond stamp alike), so a delete followed by a write is not taken for a
    /// delete.
    fn charge_own(&mut self, key: &Key, bytes: u64, latest: Stamp) {
        self.charge(key, bytes, latest);
        if let Some(held) = self.keys.get_mut(key)
            && held.latest.millis <= latest.millis
        {
            held.latest = latest;
        }
    }

    /// Records that `world.redb` holds a row for `key` (charged).
    fn mark_saved(&mut self, key: &[u8]) {
        if let Some(charged) = self.keys.get_mut(key) {
            charged.saved = true;
        }
    }

    /// Keys and bytes charged if `key` were charged `bytes` more.
    fn after(&self, key: &[u8], bytes: u64) -> (u64, u64) {
        match self.keys.get(key) {
            Some(held) => (self.keys(), self.bytes + bytes.saturating_sub(held.bytes)),
            None => (self.keys() + 1, self.bytes + bytes),
        }
    }

    /// Charges `key` with at least `bytes` and records `latest` if newer. Returns whether the
    /// key was charged before.
    fn charge(&mut self, key: &Key, bytes: u64, latest: Stamp) -> bool {
        match self.keys.get_mut(key) {
            Some(held) => {
                if bytes > held.bytes {
                    self.bytes += bytes - held.bytes;
                    held.bytes = bytes;
                }
                held.latest = held.latest.max(latest);
                true
            }
            None => {
                let saved = false;
                let charged = Charged {
                    bytes,
                    latest,
                    saved,
                };
                self.keys.insert(key.clone(), charged);
                self.bytes += bytes;
                false
            }
        }
    }

    /// Forgets keys whose latest entry is a tombstone from before `horizon_ms`, unless
    /// `live(key)` (the replica holds a live entry of this writer for it: an older one, whose
    /// tombstone was pushed out by another writer's entry that was evicted), and the cut if
    /// any went; those with a saved row are added to `unsaved`. Returns how many went.
    fn release(
        &mut self,
        horizon_ms: u64,
        unsaved: &mut Vec<Key>,
        live: impl Fn(&Key) -> bool,
    ) -> usize {
        let before = self.keys.len();
        let mut freed = 0;
        self.keys.retain(|key, held| {
            let expired = held.latest.tombstone && held.latest.millis < horizon_ms && !live(key);
            if expired {
                freed += held.bytes;
                if held.saved {
                    unsaved.push(key.clone());
                }
            }
            !expired
        });
        self.bytes -= freed;
        let released = before - self.keys.len();
        if released > 0 {
            self.cut = None;
        }
        released
    }
}

/// Every writer's account on one replica (the gateway's), this node's own included.
#[derive(Debug)]
pub struct Quota {
    /// This node.
    own_id: NodeId,
    /// This node's account, shared with the query actors.
    own: std::sync::Arc<OwnQuota>,
    /// Every other writer's account.
    others: HashMap<NodeId, Account>,
    /// Changes to what `world.redb` must keep, not handed to persistence yet.
    delta: QuotaDelta,
}

impl Quota {
    /// Whether quotas are on (otherwise nothing is charged, noted or saved).
    pub fn is_on(&self) -> bool {
        !self.own.limits().is_off()
    }

    /// Admits a peer's (validated) entry for `key`, whatever it does to the LWW map: a
    /// writer's entry that loses to a newer one is still charged to it. Call [`Quota::note`]
    /// once the replica merged it.
    pub fn admit(&mut self, key: &Key, entry: &Entry) -> Outcome {
        let limits = self.own.limits();
        if limits.is_off() {
            return Outcome::admitted();
        }
        let bytes = charge(key, entry);
        let latest = Stamp::of(entry);
        let writer = entry.author();
        if *writer == self.own_id {
            // This node's own entries coming back: never evict what it acknowledged.
            let admitted = self.own.lock().admit_whole(key, bytes, latest, &limits);
            return Outcome {
                admitted,
                evicted: Vec::new(),
            };
        }
        let account = self.others.entry(writer.clone()).or_default();
        let mut gone = Vec::new();
        let outcome = account.admit(key, bytes, latest, &limits, &mut gone);
        save_cut(&mut self.delta, writer, account);
        for key in gone {
            self.delta.forget(writer, key);
        }
        outcome
    }

    /// Releases keys whose writer's latest entry is a tombstone older than `horizon_ms`; this
    /// node's own ones only from `own_margin_ms` earlier, once every replica released them.
    /// `live(key, writer)` says whether the replica holds a live entry of `writer` for `key`
    /// (which stays charged, as a restart would charge it).
    pub fn release(
        &mut self,
        horizon_ms: u64,
        own_margin_ms: u64,
        live: impl Fn(&Key, &NodeId) -> bool,
    ) -> usize {
        let mut gone = Vec::new();
        let own_id = &self.own_id;
        let mut released =
            self.own
                .lock()
                .release(horizon_ms.saturating_sub(own_margin_ms), &mut gone, |key| {
                    live(key, own_id)
                });
        for key in gone.drain(..) {
            self.delta.forget(&self.own_id, key);
        }
        let delta = &mut self.delta;
        self.others.retain(|writer, account| {
            released += account.release(horizon_ms, &mut gone, |key| live(key, writer));
            for key in gone.drain(..) {
                delta.forget(writer, key);
            }
            save_cut(delta, writer, account);
            account.keys() > 0 || account.cut.is_some()
        });
        released
    }

    /// The account of `writer`, if it has one.
    pub fn account(&self, writer: &NodeId) -> Option<&Account> {
        self.others.get(writer)
    }
}

#[cfg(test)]
#[path = "quota/tests.rs"]
mod tests;
