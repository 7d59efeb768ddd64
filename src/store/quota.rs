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
//! What it does not give: the accounts live in memory and are rebuilt at start from what the
//! replica holds, so a restart forgets charges of entries no longer held (overwritten by
//! another writer, or replaced by a smaller value) and cuts; replicas that never saw a
//! superseded entry do not charge it either. Both matter only to a writer at its limit; an
//! honest node never is, as it refuses its own writes past its quota (see [`OwnQuota`]), and
//! its own account charges everything any replica could. Nor does a quota stop a peer that
//! mints many identities: each is a new writer with a quota of its own.

mod own;

use std::collections::{BTreeMap, HashMap};

pub use own::{OverQuota, OwnQuota, OwnWrite};

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
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Stamp {
    /// Version time, milliseconds since the Unix epoch.
    millis: u64,
    /// Version counter.
    counter: u32,
    /// Version actor.
    actor: u16,
    /// Whether that entry is a tombstone.
    tombstone: bool,
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
}

/// One key of a writer's account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Charged {
    /// The largest size of the writer's entries seen for the key.
    bytes: u64,
    /// The writer's latest entry seen for the key.
    latest: Stamp,
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
    /// the last keys are evicted until it does (or it is evicted itself).
    fn admit(&mut self, key: &Key, bytes: u64, latest: Stamp, limits: &QuotaLimits) -> Outcome {
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
                self.keys.insert(key.clone(), Charged { bytes, latest });
                self.bytes += bytes;
                false
            }
        }
    }

    /// Forgets keys whose latest entry is a tombstone from before `horizon_ms`, and the cut if
    /// any went. Returns how many went.
    fn release(&mut self, horizon_ms: u64) -> usize {
        let before = self.keys.len();
        let mut freed = 0;
        self.keys.retain(|_, held| {
            let expired = held.latest.tombstone && held.latest.millis < horizon_ms;
            if expired {
                freed += held.bytes;
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
}

impl Quota {
    /// Accounts of `entries` (a replica's content, in key order), with `own` as this node's
    /// account (`own_id`'s). Returns them and the keys of other writers over their quota,
    /// which the replica must drop; this node's own keys are all kept, even over a quota
    /// lowered since they were written (its new writes are refused until it is under).
    pub fn rebuild<'a>(
        own_id: NodeId,
        own: std::sync::Arc<OwnQuota>,
        entries: impl IntoIterator<Item = (&'a Key, &'a Entry)>,
    ) -> (Quota, Vec<Key>) {
        let mut quota = Quota {
            own_id,
            own,
            others: HashMap::new(),
        };
        let mut dropped = Vec::new();
        if quota.own.limits().is_off() {
            return (quota, dropped);
        }
        {
            let mut own_account = quota.own.lock();
            for (key, entry) in entries {
                let bytes = charge(key, entry);
                let latest = Stamp::of(entry);
                if *entry.author() == quota.own_id {
                    own_account.charge(key, bytes, latest);
                    continue;
                }
                let limits = quota.own.limits();
                let account = quota.others.entry(entry.author().clone()).or_default();
                let outcome = account.admit(key, bytes, latest, &limits);
                dropped.extend(outcome.evicted);
                if !outcome.admitted {
                    dropped.push(key.clone());
                }
            }
        }
        (quota, dropped)
    }

    /// Admits a peer's (validated) entry for `key`, whatever it does to the LWW map: a
    /// writer's entry that loses to a newer one is still charged to it.
    pub fn admit(&mut self, key: &Key, entry: &Entry) -> Outcome {
        let limits = self.own.limits();
        if limits.is_off() {
            return Outcome::admitted();
        }
        let bytes = charge(key, entry);
        let latest = Stamp::of(entry);
        if *entry.author() == self.own_id {
            // This node's own entries coming back: never evict what it acknowledged.
            let admitted = self.own.lock().admit_whole(key, bytes, latest, &limits);
            return Outcome {
                admitted,
                evicted: Vec::new(),
            };
        }
        let account = self.others.entry(entry.author().clone()).or_default();
        account.admit(key, bytes, latest, &limits)
    }

    /// Releases keys whose writer's latest entry is a tombstone older than `horizon_ms`; this
    /// node's own ones only from `own_margin_ms` earlier, once every replica released them.
    pub fn release(&mut self, horizon_ms: u64, own_margin_ms: u64) -> usize {
        let mut released = self
            .own
            .lock()
            .release(horizon_ms.saturating_sub(own_margin_ms));
        self.others.retain(|_, account| {
            released += account.release(horizon_ms);
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
