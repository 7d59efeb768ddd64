//! The quota's tables in `world.redb` (since format 4): per writer its cut ([`QUOTA_CUTS`]),
//! per charged key whose entry held does not imply its charge a [`SavedCharge`]
//! ([`QUOTA_CHARGES`]), and the limits they were made under ([`QUOTA_LIMITS`]). Writers are
//! numbers of the entries' writers table. The persist actor writes a [`QuotaDelta`] in the
//! same transaction as the entries it goes with, so a `kill -9` never parts them.
//!
//! Owns the byte layout and loading; what goes in is [`super::Quota::note`]'s decision.

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::{QuotaDelta, QuotaLimits, SavedCharge, SavedQuota};
use crate::store::disk::{DiskError, WRITERS, Writers};
use crate::store::entry::{Key, NodeId};

/// (writer number, key) -> a postcard-encoded [`SavedCharge`].
pub const QUOTA_CHARGES: TableDefinition<(u32, &[u8]), &[u8]> =
    TableDefinition::new("quota_charges");

/// Writer number -> its cut (the first key that did not fit).
pub const QUOTA_CUTS: TableDefinition<u32, &[u8]> = TableDefinition::new("quota_cuts");

/// `max_keys` and `max_bytes` the saved state was made under.
const QUOTA_LIMITS: TableDefinition<&str, u64> = TableDefinition::new("quota_limits");

/// Creates the quota's tables if they are missing.
pub fn create_tables(write: &WriteTransaction) -> Result<(), redb::Error> {
    write.open_table(QUOTA_CHARGES)?;
    write.open_table(QUOTA_CUTS)?;
    write.open_table(QUOTA_LIMITS)?;
    Ok(())
}

/// Writes `delta` in `write`, numbering writers with `writers` (new ones go to `writer_table`).
pub fn apply(
    write: &WriteTransaction,
    writers: &mut Writers,
    writer_table: &mut redb::Table<u32, &str>,
    delta: &QuotaDelta,
) -> Result<(), DiskError> {
    if delta.is_empty() {
        return Ok(());
    }
    let mut charges = write.open_table(QUOTA_CHARGES).map_err(redb::Error::from)?;
    for ((writer, key), row) in &delta.charges {
        let number = writers.number(writer_table, writer)?;
        match row {
            Some(row) => {
                let bytes = postcard::to_allocvec(row)?;
                charges
                    .insert((number, key.as_ref()), bytes.as_slice())
                    .map_err(redb::Error::from)?;
            }
            None => {
                charges
                    .remove((number, key.as_ref()))
                    .map_err(redb::Error::from)?;
            }
        }
    }
    let mut cuts = write.open_table(QUOTA_CUTS).map_err(redb::Error::from)?;
    for (writer, cut) in &delta.cuts {
        let number = writers.number(writer_table, writer)?;
        match cut {
            Some(cut) => cuts.insert(number, cut.as_ref()),
            None => cuts.remove(number),
        }
        .map_err(redb::Error::from)?;
    }
    Ok(())
}

/// Loads what the quota kept, for accounts under `limits`. State made under other limits (or
/// none: a database from before format 4) is deleted, and the accounts start afresh from the
/// entries held; so is every writer's for which `keep` says no.
pub fn load(
    db: &Database,
    limits: QuotaLimits,
    keep: impl Fn(&NodeId) -> bool,
) -> Result<SavedQuota, DiskError> {
    let write = db.begin_write().map_err(redb::Error::from)?;
    let saved = {
        let mut meta = write.open_table(QUOTA_LIMITS).map_err(redb::Error::from)?;
        let stored = |meta: &redb::Table<&str, u64>, name| {
            meta.get(name)
                .map(|value| value.map(|value| value.value()))
                .map_err(redb::Error::from)
        };
        let made_under = (stored(&meta, "max_keys")?, stored(&meta, "max_bytes")?);
        if made_under == (Some(limits.max_keys), Some(limits.max_bytes)) {
            drop(meta);
            read(&write, keep)?
        } else {
            if made_under.0.is_some() {
                tracing::info!(
                    "max_keys_per_writer or max_bytes_per_writer changed: quota accounts start \
                     afresh from the entries held"
                );
            }
            meta.insert("max_keys", limits.max_keys)
                .map_err(redb::Error::from)?;
            meta.insert("max_bytes", limits.max_bytes)
                .map_err(redb::Error::from)?;
            write
                .delete_table(QUOTA_CHARGES)
                .map_err(redb::Error::from)?;
            write.delete_table(QUOTA_CUTS).map_err(redb::Error::from)?;
            SavedQuota::default()
        }
    };
    create_tables(&write)?;
    write.commit().map_err(redb::Error::from)?;
    Ok(saved)
}

/// Reads the saved state, deleting the rows of writers `keep` refuses.
fn read(write: &WriteTransaction, keep: impl Fn(&NodeId) -> bool) -> Result<SavedQuota, DiskError> {
    let writers = Writers::read(&write.open_table(WRITERS).map_err(redb::Error::from)?)?;
    let mut saved = SavedQuota::default();
    let mut charges = write.open_table(QUOTA_CHARGES).map_err(redb::Error::from)?;
    let mut dropped = Vec::new();
    for row in charges.iter().map_err(redb::Error::from)? {
        let (key, value) = row.map_err(redb::Error::from)?;
        let (number, key) = key.value();
        let writer = writers.node(number)?;
        if !keep(writer) {
            dropped.push((number, key.to_vec()));
            continue;
        }
        let charge: SavedCharge = postcard::from_bytes(value.value())?;
        let account = saved.writers.entry(writer.clone()).or_default();
        account.charges.insert(Key::copy_from_slice(key), charge);
    }
    for (number, key) in &dropped {
        charges
            .remove((*number, key.as_slice()))
            .map_err(redb::Error::from)?;
    }
    let mut cuts = write.open_table(QUOTA_CUTS).map_err(redb::Error::from)?;
    let mut dropped = Vec::new();
    for row in cuts.iter().map_err(redb::Error::from)? {
        let (number, cut) = row.map_err(redb::Error::from)?;
        let writer = writers.node(number.value())?;
        if !keep(writer) {
            dropped.push(number.value());
            continue;
        }
        let account = saved.writers.entry(writer.clone()).or_default();
        account.cut = Some(Key::copy_from_slice(cut.value()));
    }
    for number in dropped {
        cuts.remove(number).map_err(redb::Error::from)?;
    }
    Ok(saved)
}

/// How much the quota keeps: (charges kept beyond the entries, writers cut), each row decoded
/// (for `cmud check`).
pub fn summary(db: &Database) -> Result<(usize, usize), DiskError> {
    let read = db.begin_read().map_err(redb::Error::from)?;
    let writers = Writers::read(&read.open_table(WRITERS).map_err(redb::Error::from)?)?;
    let charges = read.open_table(QUOTA_CHARGES).map_err(redb::Error::from)?;
    let mut kept = 0;
    for row in charges.iter().map_err(redb::Error::from)? {
        let (key, value) = row.map_err(redb::Error::from)?;
        writers.node(key.value().0)?;
        let _: SavedCharge = postcard::from_bytes(value.value())?;
        kept += 1;
    }
    let cuts = read.open_table(QUOTA_CUTS).map_err(redb::Error::from)?;
    let mut cut = 0;
    for row in cuts.iter().map_err(redb::Error::from)? {
        let (number, _) = row.map_err(redb::Error::from)?;
        writers.node(number.value())?;
        cut += 1;
    }
    Ok((kept, cut))
}
