//! A connection's unsent replies: small pieces copied into one buffer, large values shared
//! with the replica rather than copied, written with vectored writes.
//!
//! Owns bytes waiting for the socket, nothing else: what a reply says is [`super::resp`]'s,
//! when to write is the connection's. A value of [`SHARE_MIN_BYTES`] or more is queued as the
//! replica's own buffer (a reference count), so `MGET` of a thousand 32 KiB values costs a
//! thousand pointers, not 32 MiB of copies, and the memory stays the replica's.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};

/// Values this large or larger are sent from the replica's buffer instead of being copied.
/// Below it a copy is cheaper than a reference and an extra slice in the vectored write.
pub const SHARE_MIN_BYTES: usize = 1024;

/// Most slices one vectored write takes (well under every system's `IOV_MAX`).
const MAX_WRITE_SLICES: usize = 64;

/// Unsent bytes, in order: `chunks`, then `tail`.
#[derive(Debug, Default)]
pub struct Output {
    /// Sealed pieces: copied replies cut off `tail`, and shared values.
    chunks: VecDeque<Bytes>,
    /// Bytes of `chunks` together.
    chunk_bytes: usize,
    /// Where small replies are appended.
    tail: BytesMut,
}

impl Output {
    /// Unsent bytes in all.
    pub fn len(&self) -> usize {
        self.chunk_bytes + self.tail.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The buffer small replies are appended to (after everything queued).
    pub fn tail(&mut self) -> &mut BytesMut {
        &mut self.tail
    }

    /// Queues `bytes` without copying them.
    pub fn push_shared(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        self.seal();
        self.chunk_bytes += bytes.len();
        self.chunks.push_back(bytes);
    }

    /// Appends `value`: shared if large, copied otherwise.
    pub fn push_value(&mut self, value: &Bytes) {
        if value.len() >= SHARE_MIN_BYTES {
            self.push_shared(value.clone());
        } else {
            self.tail.extend_from_slice(value);
        }
    }

    /// Moves everything of `other` behind what is queued here.
    pub fn append(&mut self, other: &mut Output) {
        other.seal();
        if other.chunks.is_empty() {
            return;
        }
        self.seal();
        self.chunk_bytes += other.chunk_bytes;
        self.chunks.append(&mut other.chunks);
        other.chunk_bytes = 0;
    }

    /// Drops everything queued.
    pub fn clear(&mut self) {
        self.chunks.clear();
        self.chunk_bytes = 0;
        self.tail.clear();
    }

    /// Cuts what `tail` holds into a chunk, so something can be queued behind it.
    fn seal(&mut self) {
        if !self.tail.is_empty() {
            let sealed = self.tail.split().freeze();
            self.chunk_bytes += sealed.len();
            self.chunks.push_back(sealed);
        }
    }

    /// The first slices to write, in order.
    pub fn slices(&self) -> Vec<IoSlice<'_>> {
        let mut slices: Vec<IoSlice<'_>> = self
            .chunks
            .iter()
            .take(MAX_WRITE_SLICES)
            .map(|chunk| IoSlice::new(chunk))
            .collect();
        if slices.len() < MAX_WRITE_SLICES && !self.tail.is_empty() {
            slices.push(IoSlice::new(&self.tail));
        }
        slices
    }

    /// Everything waiting, when it is in one piece (the usual case: small replies only).
    pub fn contiguous(&self) -> Option<&[u8]> {
        self.chunks.is_empty().then_some(&self.tail[..])
    }

    /// Forgets the first `n` bytes (written).
    pub fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.chunks.front_mut() else {
                self.tail.advance(n);
                return;
            };
            let taken = n.min(front.len());
            front.advance(taken);
            self.chunk_bytes -= taken;
            n -= taken;
            if front.is_empty() {
                self.chunks.pop_front();
            }
        }
    }

    /// Gives back a large `tail` once everything is sent, so an idle connection holds little.
    pub fn shrink_if_over(&mut self, keep_bytes: usize) {
        if self.is_empty() && self.tail.capacity() > keep_bytes {
            self.tail = BytesMut::new();
        }
    }

    /// Everything waiting, copied into one buffer (tests).
    #[cfg(test)]
    pub fn to_vec(&self) -> Vec<u8> {
        let mut all = Vec::with_capacity(self.len());
        for chunk in &self.chunks {
            all.extend_from_slice(chunk);
        }
        all.extend_from_slice(&self.tail);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_values_keep_their_place_and_are_not_copied() {
        let large = Bytes::from(vec![b'v'; SHARE_MIN_BYTES]);
        let mut out = Output::default();
        out.tail().extend_from_slice(b"*2\r\n");
        out.push_value(&Bytes::from_static(b"small"));
        out.push_value(&large);
        out.tail().extend_from_slice(b"\r\n");
        assert_eq!(out.len(), 4 + 5 + SHARE_MIN_BYTES + 2);
        let sent = out.to_vec();
        assert!(sent.starts_with(b"*2\r\nsmallvv"));
        assert!(sent.ends_with(b"vv\r\n"));
        let shared = out.chunks.iter().any(|c| c.as_ptr() == large.as_ptr());
        assert!(shared, "the large value is the replica's own buffer");
    }

    #[test]
    fn advancing_crosses_chunks_and_ends_in_the_tail() {
        let mut out = Output::default();
        out.tail().extend_from_slice(b"ab");
        out.push_shared(Bytes::from_static(b"cde"));
        out.tail().extend_from_slice(b"fg");
        let mut other = Output::default();
        other.tail().extend_from_slice(b"hi");
        out.append(&mut other);
        assert!(other.is_empty());
        assert_eq!(out.to_vec(), b"abcdefghi");
        out.advance(3);
        assert_eq!(out.to_vec(), b"defghi");
        assert_eq!(out.len(), 6);
        out.advance(6);
        assert!(out.is_empty());
        out.tail().extend_from_slice(b"j");
        assert_eq!(out.slices().len(), 1);
        assert_eq!(out.contiguous(), Some(&b"j"[..]));
    }
}
