//! How an entry is laid out in `world.redb` since format 3: the writer is a small number
//! whose text is kept once in the [`WRITERS`] table, not a 52-byte peer id per entry; the rest
//! is the version, the value and the signature, postcard-encoded.
//!
//! Owns the byte layout only; which entries are written, and when, is the persist actor's.

use std::collections::HashMap;

use bytes::Bytes;
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::entry::{Entry, NodeId, Version};

/// Key -> an entry in the layout of [`Row`].
pub const ENTRIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("entries");

/// Writer number -> its node id text.
pub const WRITERS: TableDefinition<u32, &str> = TableDefinition::new("writers");

/// Why a stored entry could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The bytes are not an entry.
    #[error("unreadable entry ({0})")]
    Decode(#[from] postcard::Error),
    /// The entry names a writer the table does not hold.
    #[error("unknown writer number {0}")]
    UnknownWriter(u32),
    /// The database could not be read or written.
    #[error(transparent)]
    Database(#[from] redb::Error),
}

/// One stored entry.
#[derive(Serialize, Deserialize)]
struct Row<'a> {
    /// [`Version::millis`].
    millis: u64,
    /// [`Version::counter`].
    counter: u32,
    /// The writer's number in [`WRITERS`].
    writer: u32,
    /// [`Version::actor`].
    actor: u16,
    /// The value; `None` is a tombstone.
    #[serde(borrow)]
    value: Option<&'a [u8]>,
    /// The writer's signature.
    #[serde(borrow)]
    signature: Option<&'a [u8]>,
}

/// The writers of one transaction's view of the database, both ways.
#[derive(Debug, Default)]
pub struct Writers {
    /// Node id by number.
    nodes: Vec<NodeId>,
    /// Number by node id.
    numbers: HashMap<NodeId, u32>,
}

impl Writers {
    /// Reads the writers table (a few rows: one per writer the world has had).
    pub fn read(table: &impl ReadableTable<u32, &'static str>) -> Result<Writers, DiskError> {
        let mut writers = Writers::default();
        for row in table.iter().map_err(redb::Error::from)? {
            let (number, node) = row.map_err(redb::Error::from)?;
            let node = NodeId::new(node.value());
            let number = number.value();
            let at = number as usize;
            if writers.nodes.len() <= at {
                writers.nodes.resize(at + 1, node.clone());
            }
            writers.nodes[at] = node.clone();
            writers.numbers.insert(node, number);
        }
        Ok(writers)
    }

    /// The entry stored as `bytes`.
    pub fn decode(&self, bytes: &[u8]) -> Result<Entry, DiskError> {
        let row: Row<'_> = postcard::from_bytes(bytes)?;
        let node = self.node(row.writer)?;
        Ok(Entry {
            version: Version {
                millis: row.millis,
                counter: row.counter,
                node: node.clone(),
                actor: row.actor,
            },
            value: row.value.map(Bytes::copy_from_slice),
            signature: row.signature.map(Bytes::copy_from_slice),
        })
    }

    /// The version of the entry stored as `bytes`, and whether it is signed, without copying
    /// its value or signature out (a commit checks this for every key it writes).
    pub fn decode_head(&self, bytes: &[u8]) -> Result<(Version, bool), DiskError> {
        let row: Row<'_> = postcard::from_bytes(bytes)?;
        let node = self.node(row.writer)?;
        let version = Version {
            millis: row.millis,
            counter: row.counter,
            node: node.clone(),
            actor: row.actor,
        };
        Ok((version, row.signature.is_some()))
    }

    /// The node whose number is `writer`.
    fn node(&self, writer: u32) -> Result<&NodeId, DiskError> {
        self.nodes
            .get(writer as usize)
            .filter(|node| self.numbers.get(*node) == Some(&writer))
            .ok_or(DiskError::UnknownWriter(writer))
    }

    /// `entry`'s bytes, appended to `buf`; a writer seen for the first time gets a number,
    /// written to `table` in the same transaction.
    pub fn encode(
        &mut self,
        table: &mut redb::Table<u32, &str>,
        entry: &Entry,
        buf: Vec<u8>,
    ) -> Result<Vec<u8>, DiskError> {
        let node = &entry.version.node;
        let writer = match self.numbers.get(node) {
            Some(&number) => number,
            None => {
                // More than u32::MAX writers cannot be held in memory anyway.
                let number = self.nodes.len() as u32;
                table
                    .insert(number, node.as_str())
                    .map_err(redb::Error::from)?;
                self.nodes.push(node.clone());
                self.numbers.insert(node.clone(), number);
                number
            }
        };
        let row = Row {
            millis: entry.version.millis,
            counter: entry.version.counter,
            writer,
            actor: entry.version.actor,
            value: entry.value.as_deref(),
            signature: entry.signature.as_deref(),
        };
        Ok(postcard::to_extend(&row, buf)?)
    }
}
