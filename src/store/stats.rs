//! Counters a node keeps about itself, read by `INFO`.
//!
//! Lock-free: each counter is an atomic written by one owner (an actor writes only its own
//! row), so the request path never contends on them. Reads are relaxed snapshots.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Instant;

/// Counters one sender (a query actor, or the gateway) owns.
#[derive(Debug)]
pub struct SenderStats {
    /// First-hand Puts accepted (actors only).
    pub puts: AtomicU64,
    /// Sync messages sent to each participant, indexed like [`Stats::participants`].
    pub messages_to: Vec<AtomicU64>,
    /// Estimated bytes of all sync messages sent to other local participants.
    pub bytes_sent: AtomicU64,
}

impl SenderStats {
    fn new(participants: usize) -> Self {
        SenderStats {
            puts: AtomicU64::new(0),
            messages_to: (0..participants).map(|_| AtomicU64::new(0)).collect(),
            bytes_sent: AtomicU64::new(0),
        }
    }

    /// Records one sync message of `bytes` to participant `to`.
    pub fn sent(&self, to: usize, bytes: usize) {
        self.messages_to[to].fetch_add(1, Relaxed);
        self.bytes_sent.fetch_add(bytes as u64, Relaxed);
    }
}

/// Counters of the network side (written by the gateway and the p2p task).
#[derive(Debug, Default)]
pub struct RemoteStats {
    /// Batches published to the world.
    pub messages_sent: AtomicU64,
    /// Bytes published to the world (encoded).
    pub bytes_sent: AtomicU64,
    /// Bytes received from peers (encoded batches and sync responses).
    pub bytes_received: AtomicU64,
    /// Batches from peers rejected whole (undecodable, oversized, wrong world or format).
    pub rejected_batches: AtomicU64,
    /// Entries from peers dropped for good: invalid (limits, malformed writer id, namespace,
    /// signature) or past their writer's quota (turned away or evicted).
    pub rejected_entries: AtomicU64,
    /// Of those, entries unsigned or not signed by their writer over this entry and world.
    pub rejected_signatures: AtomicU64,
    /// Of those, entries under another peer's `p/<id>/` namespace.
    pub rejected_namespaces: AtomicU64,
    /// Of those, entries of a writer past its quota, turned away on arrival.
    pub rejected_quota: AtomicU64,
    /// Of those, entries admitted under their writer's quota and later pushed out by an
    /// earlier key of the same writer.
    pub evicted_quota: AtomicU64,
    /// Entries from peers skipped for now because their version is in the future.
    pub rejected_versions: AtomicU64,
    /// Peers connected now.
    pub connected_peers: AtomicUsize,
    /// Largest absolute clock offset to a connected peer, in milliseconds.
    pub clock_offset_ms: AtomicI64,
    /// Entries known to be missing locally and not yet fetched (sync state).
    pub pending_entries: AtomicU64,
    /// Reconciliations with a peer that ran to their end (this node then held all the peer
    /// held).
    pub syncs_completed: AtomicU64,
    /// Entries received in peers' sync answers (before validation): what anti-entropy
    /// transfers, flat while replicas agree.
    pub sync_entries_received: AtomicU64,
}

/// All of a node's counters.
#[derive(Debug)]
pub struct Stats {
    /// When the node started, for rates.
    pub started: Instant,
    /// Number of query actors; the gateway is participant `actors`.
    pub actors: usize,
    /// One row per participant: actors `0..actors`, then the gateway.
    pub senders: Vec<SenderStats>,
    /// Network-side counters.
    pub remote: RemoteStats,
    /// Expired tombstones the gateway purged (each actor purges the same ones).
    pub tombstones_purged: AtomicU64,
    /// This node's entries handed to the gateway and not signed yet (actors add, the gateway
    /// subtracts): actors hold their writers while it is over `MAX_UNSIGNED_ENTRIES`.
    pub unsigned_entries: AtomicU64,
}

impl Stats {
    /// Counters for a node with `actors` query actors.
    pub fn new(actors: usize) -> Self {
        let participants = actors + 1;
        Stats {
            started: Instant::now(),
            actors,
            senders: (0..participants)
                .map(|_| SenderStats::new(participants))
                .collect(),
            remote: RemoteStats::default(),
            tombstones_purged: AtomicU64::new(0),
            unsigned_entries: AtomicU64::new(0),
        }
    }

    /// Index of the gateway among participants.
    pub fn gateway_index(&self) -> usize {
        self.actors
    }

    /// Number of participants in local sync (actors and the gateway).
    pub fn participants(&self) -> usize {
        self.actors + 1
    }

    /// First-hand Puts accepted by all actors.
    pub fn puts_total(&self) -> u64 {
        self.senders.iter().map(|s| s.puts.load(Relaxed)).sum()
    }

    /// Sync messages sent between local participants.
    pub fn local_messages(&self) -> u64 {
        self.senders
            .iter()
            .flat_map(|s| &s.messages_to)
            .map(|c| c.load(Relaxed))
            .sum()
    }

    /// Estimated bytes of sync messages sent between local participants.
    pub fn local_bytes(&self) -> u64 {
        self.senders
            .iter()
            .map(|s| s.bytes_sent.load(Relaxed))
            .sum()
    }

    /// The largest message rate over ordered pairs of participants: messages sent divided by
    /// seconds alive (at least one second, so the first message is not a spike).
    pub fn max_rate_per_pair(&self) -> f64 {
        let secs = self.started.elapsed().as_secs_f64().max(1.0);
        let max = self
            .senders
            .iter()
            .flat_map(|s| &s.messages_to)
            .map(|c| c.load(Relaxed))
            .max()
            .unwrap_or(0);
        max as f64 / secs
    }
}
