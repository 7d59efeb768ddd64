//! Compact forms of keys and entries for the maps that hold a whole world (each query actor's,
//! the gateway's): byte strings of up to [`INLINE_BYTES`] kept inline, longer ones as a shared
//! [`Bytes`] (the buffer the batch carried, shared by every actor and the gateway), an entry
//! without its signature for query actors ([`Slot`]: they never serve signatures) and one with
//! it for the gateway ([`Stored`]: sync serves them onward).
//!
//! Owns only representation: the order of versions and the merge rule stay in [`super::entry`].

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::ops::Deref;

use bytes::Bytes;

use super::entry::{Entry, NodeId, Version};

/// Longest byte string kept inline (a 16-byte key and a short value fit).
pub const INLINE_BYTES: usize = 22;

/// The length of an inline byte string. An enum rather than a `u8` so that its unused values
/// are niches: they tag [`Small::Shared`] and `Option<Small>`'s `None`, and `Small` stays at
/// 24 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum InlineLen {
    L0,
    L1,
    L2,
    L3,
    L4,
    L5,
    L6,
    L7,
    L8,
    L9,
    L10,
    L11,
    L12,
    L13,
    L14,
    L15,
    L16,
    L17,
    L18,
    L19,
    L20,
    L21,
    L22,
}

/// Every [`InlineLen`] by its value.
const INLINE_LENS: [InlineLen; INLINE_BYTES + 1] = {
    use InlineLen::*;
    [
        L0, L1, L2, L3, L4, L5, L6, L7, L8, L9, L10, L11, L12, L13, L14, L15, L16, L17, L18, L19,
        L20, L21, L22,
    ]
};

/// A byte string in 24 bytes: inline up to [`INLINE_BYTES`], else a shared buffer.
#[derive(Clone)]
pub struct Small(Repr);

/// How a [`Small`] holds its bytes.
#[derive(Clone)]
enum Repr {
    /// The bytes themselves; only the first `len` count.
    Inline {
        /// How many of `bytes` are the string.
        len: InlineLen,
        /// The string, zero-padded.
        bytes: [u8; INLINE_BYTES],
    },
    /// A longer string: a handle on the buffer the batch carried (boxed to keep this small).
    Shared(Box<Bytes>),
}

impl Small {
    /// The empty string (fills unused slots of [`super::packed::PackedMap`]'s leaves).
    pub const EMPTY: Small = Small(Repr::Inline {
        len: InlineLen::L0,
        bytes: [0; INLINE_BYTES],
    });

    /// `bytes` inline if short, else a handle on the same buffer.
    pub fn new(bytes: &Bytes) -> Small {
        match INLINE_LENS.get(bytes.len()) {
            Some(&len) => {
                let mut inline = [0u8; INLINE_BYTES];
                inline[..bytes.len()].copy_from_slice(bytes);
                Small(Repr::Inline { len, bytes: inline })
            }
            None => Small(Repr::Shared(Box::new(bytes.clone()))),
        }
    }

    /// The buffer a long string shares with the batch it came in; `None` when inline.
    pub fn shared(&self) -> Option<&Bytes> {
        match &self.0 {
            Repr::Inline { .. } => None,
            Repr::Shared(bytes) => Some(bytes),
        }
    }

    /// The string as a [`Bytes`]: a copy if inline (small), a refcount if shared.
    pub fn to_bytes(&self) -> Bytes {
        match &self.0 {
            Repr::Inline { .. } => Bytes::copy_from_slice(self),
            Repr::Shared(bytes) => Bytes::clone(bytes),
        }
    }
}

impl Deref for Small {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => &bytes[..*len as usize],
            Repr::Shared(bytes) => bytes,
        }
    }
}

impl Borrow<[u8]> for Small {
    fn borrow(&self) -> &[u8] {
        self
    }
}

impl PartialEq for Small {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Small {}

impl PartialOrd for Small {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Small {
    fn cmp(&self, other: &Self) -> Ordering {
        (**self).cmp(&**other)
    }
}

impl std::fmt::Debug for Small {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self))
    }
}

/// An entry as a query actor keeps it: the version's fields and the value, no signature
/// (48 bytes against [`Entry`]'s 88 plus its buffers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    /// [`Version::millis`].
    millis: u64,
    /// [`Version::counter`].
    counter: u32,
    /// [`Version::actor`].
    actor: u16,
    /// [`Version::node`] (interned: a pointer).
    node: NodeId,
    /// The value; `None` is a tombstone.
    value: Option<Small>,
}

impl Slot {
    /// The compact form of `entry` (its signature dropped).
    pub fn new(entry: &Entry) -> Slot {
        Slot {
            millis: entry.version.millis,
            counter: entry.version.counter,
            actor: entry.version.actor,
            node: entry.version.node.clone(),
            value: entry.value.as_ref().map(Small::new),
        }
    }

    /// The version this was written at.
    pub fn version(&self) -> Version {
        Version {
            millis: self.millis,
            counter: self.counter,
            node: self.node.clone(),
            actor: self.actor,
        }
    }

    /// The writer of the version.
    pub fn author(&self) -> &NodeId {
        &self.node
    }

    /// How this slot's version compares with `version`, in [`Version`]'s order, without
    /// building a `Version`.
    pub fn cmp_version(&self, version: &Version) -> Ordering {
        self.millis
            .cmp(&version.millis)
            .then(self.counter.cmp(&version.counter))
            .then_with(|| self.node.cmp(&version.node))
            .then(self.actor.cmp(&version.actor))
    }

    /// The live value, or `None` for a tombstone.
    pub fn value(&self) -> Option<&[u8]> {
        self.value.as_deref()
    }

    /// The live value as stored (so a long one can be sent from its shared buffer).
    pub fn stored_value(&self) -> Option<&Small> {
        self.value.as_ref()
    }

    /// Whether this is a delete marker.
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }

    /// Whether this is a tombstone written before `horizon_ms`: the rule of
    /// [`super::validate::is_expired_tombstone`].
    pub fn is_expired_tombstone(&self, horizon_ms: u64) -> bool {
        self.is_tombstone() && self.millis < horizon_ms
    }

    /// The full entry back, unsigned.
    pub fn to_entry(&self) -> Entry {
        Entry {
            version: self.version(),
            value: self.value.as_ref().map(Small::to_bytes),
            signature: None,
        }
    }
}

/// A signature as the gateway keeps it: an ed25519 one inline, anything else (a peer's
/// malformed one, kept only until validation drops it) shared.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Signature {
    /// The usual 64 bytes.
    Ed25519([u8; ED25519_SIGNATURE_BYTES]),
    /// Any other length.
    Other(Box<Bytes>),
}

/// Length of an ed25519 signature.
const ED25519_SIGNATURE_BYTES: usize = 64;

/// An entry as the gateway keeps it: a [`Slot`] and the signature (120 bytes, no buffers of
/// its own for short values), so that sync can serve it onward.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// Version and value.
    slot: Slot,
    /// The writer's signature, if the entry has one.
    signature: Option<Signature>,
}

impl Stored {
    /// The compact form of `entry`, signature included.
    pub fn new(entry: &Entry) -> Stored {
        let signature =
            entry.signature.as_ref().map(
                |signature| match <[u8; ED25519_SIGNATURE_BYTES]>::try_from(&signature[..]) {
                    Ok(bytes) => Signature::Ed25519(bytes),
                    Err(_) => Signature::Other(Box::new(signature.clone())),
                },
            );
        Stored {
            slot: Slot::new(entry),
            signature,
        }
    }

    /// The version, value and liveness of the entry.
    pub fn slot(&self) -> &Slot {
        &self.slot
    }

    /// The full entry back, signature included.
    pub fn to_entry(&self) -> Entry {
        let mut entry = self.slot.to_entry();
        entry.signature = self.signature.as_ref().map(|signature| match signature {
            Signature::Ed25519(bytes) => Bytes::copy_from_slice(bytes),
            Signature::Other(bytes) => Bytes::clone(bytes),
        });
        entry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_string_and_an_absent_one_take_24_bytes() {
        assert_eq!(std::mem::size_of::<Small>(), 24);
        assert_eq!(std::mem::size_of::<Option<Small>>(), 24);
        assert_eq!(std::mem::size_of::<Slot>(), 48);
        assert_eq!(std::mem::size_of::<Stored>(), 120);
    }

    #[test]
    fn strings_round_trip_inline_and_shared_and_order_as_bytes() {
        let strings: Vec<Bytes> = [0usize, 1, 16, INLINE_BYTES, INLINE_BYTES + 1, 300]
            .iter()
            .map(|&n| Bytes::from((0..n).map(|i| (i % 251) as u8).collect::<Vec<u8>>()))
            .collect();
        for (i, a) in strings.iter().enumerate() {
            let small = Small::new(a);
            assert_eq!(&*small, &a[..]);
            assert_eq!(small.to_bytes(), *a);
            assert_eq!(
                matches!(small.0, Repr::Inline { .. }),
                a.len() <= INLINE_BYTES
            );
            for b in &strings[i..] {
                assert_eq!(small.cmp(&Small::new(b)), a.cmp(b));
            }
        }
    }

    #[test]
    fn a_long_value_shares_the_batch_buffer() {
        let value = Bytes::from(vec![7u8; 100]);
        let Small(Repr::Shared(held)) = Small::new(&value) else {
            panic!("a 100-byte value is shared")
        };
        assert_eq!(held.as_ptr(), value.as_ptr());
    }

    #[test]
    fn a_slot_keeps_the_version_order_and_drops_the_signature() {
        let version = |millis, node: &str, actor| Version {
            millis,
            counter: 1,
            node: NodeId::new(node),
            actor,
        };
        let mut entry = Entry::value(version(5, "b", 1), Bytes::from_static(b"abc"));
        entry.signature = Some(Bytes::from_static(&[1; 64]));
        let slot = Slot::new(&entry);
        assert_eq!(slot.value(), Some(&b"abc"[..]));
        assert_eq!(
            slot.to_entry(),
            Entry::value(entry.version.clone(), entry.value.clone().unwrap())
        );
        for other in [
            version(4, "b", 1),
            version(5, "a", 9),
            version(5, "b", 0),
            version(5, "b", 1),
            version(5, "b", 2),
            version(5, "c", 0),
            version(6, "a", 0),
        ] {
            assert_eq!(slot.cmp_version(&other), slot.version().cmp(&other));
        }
        assert!(Slot::new(&Entry::tombstone(version(1, "a", 0))).is_tombstone());
        assert_eq!(Stored::new(&entry).to_entry(), entry);
        entry.signature = Some(Bytes::from_static(b"short"));
        assert_eq!(Stored::new(&entry).to_entry(), entry);
        entry.signature = None;
        assert_eq!(Stored::new(&entry).to_entry(), entry);
    }
}
