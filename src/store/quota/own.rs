//! This node's own quota account, shared by its query actors and its gateway: writes are
//! charged here before they are made, so that nothing this node acknowledges is ever past its
//! quota anywhere.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use super::{Account, Key, QuotaLimits, Stamp};

/// Why this node may not make a write: it would go past its own quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "quota exceeded: this node's writes may have at most {} keys and {} bytes in the world \
     (max_keys_per_writer, max_bytes_per_writer); with this command they would have {keys} \
     keys and {bytes} bytes, so nothing of it was written. A key this node deleted stops \
     counting once its tombstone expires (tombstone_ttl)",
    limit_text(self.limits.max_keys),
    limit_text(self.limits.max_bytes)
)]
pub struct OverQuota {
    /// The limits.
    pub limits: QuotaLimits,
    /// Keys the node's writes would have.
    pub keys: u64,
    /// Bytes they would take.
    pub bytes: u64,
}

fn limit_text(limit: u64) -> String {
    if limit == 0 {
        "unlimited".to_owned()
    } else {
        limit.to_string()
    }
}

/// One write a command makes, for [`OwnQuota::reserve`].
#[derive(Clone, Copy, Debug)]
pub struct OwnWrite<'a> {
    /// The key.
    pub key: &'a Key,
    /// The value's length, or `None` for a delete.
    pub value_bytes: Option<usize>,
}

/// This node's own account, shared by every query actor and the gateway.
///
/// Query actors reserve a command's writes here before they make them, all or nothing, so
/// that several actors accepting new keys at once never take the node past its quota: what
/// this node acknowledged fits in every replica's account of it, and is never evicted. The
/// lock is held for a map lookup per key, only for writes, and never when quotas are off.
#[derive(Debug)]
pub struct OwnQuota {
    /// The world's limits.
    limits: QuotaLimits,
    /// This node's account.
    account: Mutex<Account>,
}

impl OwnQuota {
    /// An empty account under `limits`.
    pub fn new(limits: QuotaLimits) -> Self {
        OwnQuota {
            limits,
            account: Mutex::new(Account::default()),
        }
    }

    /// The world's limits.
    pub fn limits(&self) -> QuotaLimits {
        self.limits
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Account> {
        // A panic while holding the lock leaves a consistent account (every update is a
        // few field writes), so a poisoned lock is still usable.
        self.account
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Charges `writes` (made at wall time `now_ms`) if all of them fit, or none.
    pub fn reserve(&self, writes: &[OwnWrite<'_>], now_ms: u64) -> Result<(), OverQuota> {
        if self.limits.is_off() {
            return Ok(());
        }
        let mut account = self.lock();
        let mut new_keys: HashMap<&[u8], u64> = HashMap::new();
        let (mut keys, mut bytes) = (account.keys(), account.bytes());
        for write in writes {
            let size = (write.key.len() + write.value_bytes.unwrap_or(0)) as u64;
            let held = account.keys.get(&write.key[..]).map(|held| held.bytes);
            let before = new_keys.get(&write.key[..]).copied().or(held);
            match before {
                Some(before) => bytes += size.saturating_sub(before),
                None => {
                    keys += 1;
                    bytes += size;
                }
            }
            let now = before.unwrap_or(0).max(size);
            new_keys.insert(&write.key[..], now);
        }
        if self.limits.exceeded(keys, bytes) {
            return Err(OverQuota {
                limits: self.limits,
                keys,
                bytes,
            });
        }
        for write in writes {
            let size = (write.key.len() + write.value_bytes.unwrap_or(0)) as u64;
            // Stamped with the wall clock: a write's version is never earlier, so a tombstone
            // is released no earlier than every replica releases it.
            let latest = Stamp {
                millis: now_ms,
                counter: 0,
                actor: 0,
                tombstone: write.value_bytes.is_none(),
            };
            account.charge_own(write.key, size, latest);
        }
        Ok(())
    }

    /// Keys and bytes charged to this node.
    pub fn usage(&self) -> (u64, u64) {
        let account = self.lock();
        (account.keys(), account.bytes())
    }
}
