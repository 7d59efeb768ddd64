//! What crosses the network: gossip batches and the `/cmud/sync/1` request-response messages,
//! their compact binary encoding (postcard), and the codec that frames them on a stream.
//!
//! Every message starts with [`FORMAT_VERSION`] so a peer running an incompatible cmud is told
//! apart from a broken one. Owns encoding and size limits only; what a batch *means* (is it
//! valid, does it merge) is decided by the event loop and the store's validation.

use std::io;

use bytes::Bytes;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use serde::{Deserialize, Serialize};

use crate::store::KeyedEntry;

/// Version of every format below; bumped on any incompatible change. Version 2: entries must
/// carry their writer's signature (version 1 peers sent unsigned entries).
pub const FORMAT_VERSION: u16 = 2;

/// The request-response protocol for bootstrap and anti-entropy.
pub const SYNC_PROTOCOL: StreamProtocol = StreamProtocol::new("/cmud/sync/1");

/// Largest gossip message the swarm sends or accepts (gossipsub's `max_transmit_size`).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// Target size of one encoded batch; leaves room for gossipsub's envelope and signature.
pub const BATCH_TARGET_BYTES: usize = 128 * 1024;

/// Largest sync request accepted (a digest of a large world).
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// Largest sync response accepted: one page, which is about [`PAGE_TARGET_BYTES`] or a single
/// entry, and an entry may be as large as `config.ron` allows (values up to 16 MiB). A smaller
/// cap would refuse such a page every time and stall every exchange at it for good.
pub const MAX_RESPONSE_BYTES: usize = 20 * 1024 * 1024;

/// Target size of the entries in one bootstrap page.
pub const PAGE_TARGET_BYTES: usize = 256 * 1024;

/// Fixed overhead added to [`crate::store::Entry::wire_size`] to bound an entry's encoding
/// (length prefixes, option tags, varints).
const ENTRY_OVERHEAD_BYTES: usize = 24;

/// Puts gossiped to the world: the latest entry per key since the sender's last batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireBatch {
    /// [`FORMAT_VERSION`] of the sender; checked before anything else is decoded.
    pub format: u16,
    /// The world the batch belongs to.
    pub world: String,
    /// The sender's wall clock when it sent the batch, in Unix milliseconds (clock offsets).
    pub sent_ms: u64,
    /// The entries.
    pub entries: Vec<KeyedEntry>,
}

/// One key range of a digest: the keys from `lower` (inclusive) up to the next range's lower
/// bound, summarised by their count and a fingerprint of their (key, version) pairs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeDigest {
    /// First key of the range (the first range of a digest starts at the empty key).
    pub lower: Bytes,
    /// Number of entries in the range.
    pub count: u32,
    /// Order-independent fingerprint of the range's (key, version) pairs.
    pub fingerprint: u64,
}

/// "Send me the entries I lack": one page of a bootstrap or anti-entropy exchange.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRequest {
    /// [`FORMAT_VERSION`] of the requester.
    pub format: u16,
    /// The world the requester plays in.
    pub world: String,
    /// Resume at this key, inclusive (`None` for the first page).
    pub from: Option<Bytes>,
    /// The requester's digest of its replica, ranges in key order.
    pub ranges: Vec<RangeDigest>,
}

/// The answer to a [`SyncRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncResponse {
    /// One page of entries from ranges whose digests differ.
    Page {
        /// [`FORMAT_VERSION`] of the responder.
        format: u16,
        /// Entries the requester may lack.
        entries: Vec<KeyedEntry>,
        /// Ask again from this key (inclusive) for more; `None` when done.
        next: Option<Bytes>,
        /// Entries in the responder's replica (for progress).
        total: u64,
        /// The responder's wall clock, in Unix milliseconds (clock offsets).
        sent_ms: u64,
    },
    /// The responder will not sync with us (another world or format); says why.
    Refused(String),
}

/// Why a message from a peer could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The peer runs an incompatible format.
    #[error("format version {0}, this cmud speaks {FORMAT_VERSION}")]
    Format(u16),
    /// The bytes are not a message of this format.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The message is larger than allowed.
    #[error("message of {0} bytes is over the limit")]
    TooLarge(usize),
}

/// Decodes a message whose first field is its format version, checking the version first.
pub fn decode<T: for<'de> Deserialize<'de>>(
    bytes: &[u8],
    max_bytes: usize,
) -> Result<T, WireError> {
    if bytes.len() > max_bytes {
        return Err(WireError::TooLarge(bytes.len()));
    }
    let (format, _) = postcard::take_from_bytes::<u16>(bytes)
        .map_err(|err| WireError::Malformed(err.to_string()))?;
    if format != FORMAT_VERSION {
        return Err(WireError::Format(format));
    }
    postcard::from_bytes(bytes).map_err(|err| WireError::Malformed(err.to_string()))
}

/// Encodes a message (infallible for our types; an error here is a bug, reported as such).
pub fn encode<T: Serialize>(message: &T) -> io::Result<Vec<u8>> {
    postcard::to_allocvec(message).map_err(io::Error::other)
}

/// An upper bound of one entry's encoded size.
pub fn entry_bytes((key, entry): &KeyedEntry) -> usize {
    entry.wire_size(key) + ENTRY_OVERHEAD_BYTES
}

/// Splits `entries` into encoded batches of at most about [`BATCH_TARGET_BYTES`] each (an
/// entry larger than that travels alone; entry limits keep it under [`MAX_MESSAGE_BYTES`]).
pub fn encode_batches(
    world: &str,
    sent_ms: u64,
    entries: &[KeyedEntry],
) -> io::Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut size = 0;
    for (index, keyed) in entries.iter().enumerate() {
        let bytes = entry_bytes(keyed);
        if index > start && size + bytes > BATCH_TARGET_BYTES {
            out.push(encode_one(world, sent_ms, &entries[start..index])?);
            start = index;
            size = 0;
        }
        size += bytes;
    }
    if start < entries.len() {
        out.push(encode_one(world, sent_ms, &entries[start..])?);
    }
    Ok(out)
}

fn encode_one(world: &str, sent_ms: u64, entries: &[KeyedEntry]) -> io::Result<Vec<u8>> {
    encode(&WireBatch {
        format: FORMAT_VERSION,
        world: world.to_owned(),
        sent_ms,
        entries: entries.to_vec(),
    })
}

/// Frames sync messages on a stream: a 4-byte big-endian length, then the postcard bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct SyncCodec;

async fn read_frame<T>(io: &mut T, max_bytes: usize) -> io::Result<Vec<u8>>
where
    T: AsyncRead + Unpin + Send,
{
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max_bytes {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            WireError::TooLarge(len),
        ));
    }
    // The buffer grows as bytes arrive: the length is only the peer's claim, and reserving it
    // up front would let a peer make us hold megabytes per stream for four bytes sent.
    let mut buf = Vec::new();
    (&mut *io).take(len as u64).read_to_end(&mut buf).await?;
    if buf.len() < len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(buf)
}

async fn write_frame<T>(io: &mut T, bytes: &[u8]) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
{
    let len = u32::try_from(bytes.len()).map_err(io::Error::other)?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(bytes).await?;
    io.close().await
}

fn invalid(err: WireError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err)
}

impl libp2p::request_response::Codec for SyncCodec {
    type Protocol = StreamProtocol;
    type Request = SyncRequest;
    type Response = SyncResponse;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<SyncRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        let bytes = read_frame(io, MAX_REQUEST_BYTES).await?;
        decode_request(&bytes).map_err(invalid)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<SyncResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        let bytes = read_frame(io, MAX_RESPONSE_BYTES).await?;
        postcard::from_bytes(&bytes).map_err(|err| invalid(WireError::Malformed(err.to_string())))
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: SyncRequest,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &encode(&request)?).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: SyncResponse,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &encode(&response)?).await
    }
}

/// Decodes a sync request. A request of another format still yields its format and world
/// when they decode, so the responder can refuse it with a clear reason.
fn decode_request(bytes: &[u8]) -> Result<SyncRequest, WireError> {
    match decode::<SyncRequest>(bytes, MAX_REQUEST_BYTES) {
        Err(WireError::Format(format)) => {
            let world = postcard::take_from_bytes::<(u16, String)>(bytes)
                .map(|((_, world), _)| world)
                .unwrap_or_default();
            Ok(SyncRequest {
                format,
                world,
                from: None,
                ranges: Vec::new(),
            })
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Entry, NodeId, Version};

    fn keyed(key: &str, value_len: usize) -> KeyedEntry {
        let version = Version {
            millis: 1_700_000_000_000,
            counter: 3,
            node: NodeId::new("12D3KooWExamplePeerIdExamplePeerIdExamplePeerId"),
            actor: 1,
        };
        (
            Bytes::copy_from_slice(key.as_bytes()),
            Entry::value(version, Bytes::from(vec![7u8; value_len])),
        )
    }

    #[test]
    fn batches_round_trip() {
        let entries = vec![keyed("a", 3), keyed("b", 0)];
        let encoded = encode_batches("w", 42, &entries).unwrap();
        assert_eq!(encoded.len(), 1);
        let batch: WireBatch = decode(&encoded[0], MAX_MESSAGE_BYTES).unwrap();
        assert_eq!(batch.entries, entries);
        assert_eq!((batch.world.as_str(), batch.sent_ms), ("w", 42));
    }

    #[test]
    fn large_batches_are_split_under_the_message_limit() {
        let entries: Vec<_> = (0..40).map(|i| keyed(&format!("k{i}"), 30_000)).collect();
        let encoded = encode_batches("w", 1, &entries).unwrap();
        assert!(encoded.len() >= 10, "{} messages", encoded.len());
        let mut back = Vec::new();
        for message in &encoded {
            assert!(message.len() <= BATCH_TARGET_BYTES, "{}", message.len());
            back.extend(
                decode::<WireBatch>(message, MAX_MESSAGE_BYTES)
                    .unwrap()
                    .entries,
            );
        }
        assert_eq!(back, entries);
    }

    #[test]
    fn a_page_of_the_largest_entry_the_config_allows_is_accepted() {
        use crate::config::Config;
        use crate::store::validate::{MAX_NODE_ID_BYTES, MAX_SIGNATURE_BYTES};

        let mut config = Config {
            max_key_bytes: 64 * 1024,
            max_value_bytes: 16 * 1024 * 1024,
            ..Config::default()
        };
        assert!(config.validate_limits().is_ok());
        config.max_value_bytes += 1;
        assert!(config.validate_limits().is_err(), "larger values allowed");
        config.max_value_bytes -= 1;
        config.max_key_bytes += 1;
        assert!(config.validate_limits().is_err(), "larger keys allowed");

        // A page holds at least one entry, however large, so it must fit a response.
        let version = Version {
            millis: u64::MAX,
            counter: u32::MAX,
            node: NodeId::new("n".repeat(MAX_NODE_ID_BYTES)),
            actor: u16::MAX,
        };
        let mut entry = Entry::value(version, Bytes::from(vec![1u8; 16 * 1024 * 1024]));
        entry.signature = Some(Bytes::from(vec![2u8; MAX_SIGNATURE_BYTES]));
        let page = SyncResponse::Page {
            format: FORMAT_VERSION,
            entries: vec![(Bytes::from(vec![3u8; 64 * 1024]), entry)],
            next: Some(Bytes::from(vec![4u8; 64 * 1024])),
            total: u64::MAX,
            sent_ms: u64::MAX,
        };
        let bytes = encode(&page).unwrap();
        assert!(
            bytes.len() <= MAX_RESPONSE_BYTES,
            "a page of {} bytes is refused by its requester",
            bytes.len()
        );
    }

    #[test]
    fn other_formats_and_garbage_are_told_apart() {
        let mut batch = encode_batches("w", 1, &[keyed("a", 1)]).unwrap().remove(0);
        batch[0] = 9;
        assert!(matches!(
            decode::<WireBatch>(&batch, MAX_MESSAGE_BYTES),
            Err(WireError::Format(9))
        ));
        assert!(matches!(
            decode::<WireBatch>(&[FORMAT_VERSION as u8, 0, 0xff, 0xff], MAX_MESSAGE_BYTES),
            Err(WireError::Malformed(_))
        ));
        assert!(matches!(
            decode::<WireBatch>(&[0; 10], 4),
            Err(WireError::TooLarge(10))
        ));
    }

    #[test]
    fn a_request_of_another_format_keeps_its_world_for_the_refusal() {
        let mut bytes = encode(&SyncRequest {
            format: FORMAT_VERSION,
            world: "elsewhere".into(),
            from: None,
            ranges: vec![],
        })
        .unwrap();
        bytes[0] = 1;
        let request = decode_request(&bytes).unwrap();
        assert_eq!((request.format, request.world.as_str()), (1, "elsewhere"));
    }
}
