//! Gossip of batched Puts: publishing the gateway's batches, and handing peers' batches to the
//! gateway, which judges every entry (`store::validate`) before any touches a replica.
//!
//! A batch that does not decode, belongs to another world or format, or is dated in the
//! future as a whole is rejected here. A batch with any invalid entry (limits, namespace,
//! signature) is rejected once the gateway has checked it: its valid entries are merged, but
//! the message is not forwarded (gossipsub `Reject`). Rejected batches are counted in
//! `rejected_batches` and logged once per peer. An entry that is merely in the future is
//! skipped alone by the gateway.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;

use libp2p::PeerId;
use libp2p::gossipsub::{self, MessageAcceptance, MessageId, PublishError};

use super::event_loop::{EventLoop, offset_ms};
use super::sync::Internal;
use super::wire::{self, MAX_MESSAGE_BYTES, WireBatch};
use crate::store::clock::wall_millis;
use crate::store::gateway::RemoteMerge;
use crate::store::{Batch, Entry, Key, KeyedEntry};

/// The gateway's verdict on a gossiped batch, to be reported to gossipsub.
#[derive(Debug)]
pub(super) struct GossipChecked {
    /// The message.
    message_id: MessageId,
    /// The peer that forwarded it to us.
    source: PeerId,
    /// The peer that published it.
    author: PeerId,
    /// What the gateway made of its entries.
    merged: RemoteMerge,
}

/// Most entries held back for lack of subscribers. Beyond that they are dropped from the
/// hold: peers pull them by anti-entropy, and re-gossiping a whole offline session would only
/// duplicate that.
const MAX_HELD_ENTRIES: usize = 10_000;

impl EventLoop {
    /// Publishes the gateway's batch (and anything held back for lack of subscribers), split
    /// so that no message exceeds the gossip limit.
    pub(super) fn publish(&mut self, batch: &Batch) {
        if !self.anyone_subscribed() {
            for (key, entry) in batch.iter() {
                hold(&mut self.held, key.clone(), entry.clone());
            }
            self.cap_held();
            return;
        }
        let entries: Vec<KeyedEntry> = if self.held.is_empty() {
            batch.as_ref().clone()
        } else {
            for (key, entry) in batch.iter() {
                hold(&mut self.held, key.clone(), entry.clone());
            }
            std::mem::take(&mut self.held).into_iter().collect()
        };
        self.publish_entries(entries);
    }

    /// Publishes what was held back, now that someone listens.
    pub(super) fn publish_held(&mut self) {
        if !self.held.is_empty() {
            let entries = std::mem::take(&mut self.held).into_iter().collect();
            self.publish_entries(entries);
        }
    }

    /// Publishes `batches` and anything held back as one batch (the last ones queued when the
    /// node stops). Returns whether there was anything to publish and anyone to tell.
    pub(super) fn publish_together(&mut self, batches: &[Batch]) -> bool {
        for batch in batches {
            for (key, entry) in batch.iter() {
                hold(&mut self.held, key.clone(), entry.clone());
            }
        }
        if self.held.is_empty() || !self.anyone_subscribed() {
            return false;
        }
        self.publish_held();
        true
    }

    fn publish_entries(&mut self, entries: Vec<KeyedEntry>) {
        let messages = match wire::encode_batches(&self.options.world, wall_millis(), &entries) {
            Ok(messages) => messages,
            Err(err) => {
                tracing::error!(%err, "could not encode a batch; its Puts reach peers by anti-entropy");
                return;
            }
        };
        let remote = &self.stats.remote;
        for message in messages {
            let bytes = message.len() as u64;
            match self
                .swarm
                .behaviour_mut()
                .gossipsub
                .publish(self.topic.clone(), message)
            {
                Ok(_) => {
                    self.last_published = Some(tokio::time::Instant::now());
                    remote.messages_sent.fetch_add(1, Relaxed);
                    remote.bytes_sent.fetch_add(bytes, Relaxed);
                }
                Err(PublishError::NoPeersSubscribedToTopic | PublishError::AllQueuesFull(_)) => {
                    // Nobody to tell yet: keep the entries for the first subscriber (and
                    // anti-entropy covers anything else). Holding all of them is simplest and
                    // harmless: a duplicate merge changes nothing.
                    for (key, entry) in &entries {
                        hold(&mut self.held, key.clone(), entry.clone());
                    }
                    self.cap_held();
                    return;
                }
                Err(err) => tracing::warn!(%err, "could not publish a batch"),
            }
        }
    }

    /// Whether any connected peer listens to the world's Puts.
    fn anyone_subscribed(&self) -> bool {
        let topic = self.topic.hash();
        self.swarm
            .behaviour()
            .gossipsub
            .all_peers()
            .any(|(_, topics)| topics.contains(&&topic))
    }

    fn cap_held(&mut self) {
        if self.held.len() > MAX_HELD_ENTRIES {
            tracing::debug!(
                entries = self.held.len(),
                "too many Puts held for absent peers; anti-entropy will deliver them"
            );
            // Dropped rather than cleared: a cleared table keeps the size of the largest
            // batch held, for the life of the node.
            self.held = HashMap::new();
        }
    }

    pub(super) fn on_gossip(&mut self, event: gossipsub::Event) {
        match event {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => {
                let remote = &self.stats.remote;
                remote
                    .bytes_received
                    .fetch_add(message.data.len() as u64, Relaxed);
                let author = message.source.unwrap_or(propagation_source);
                let verdict = self.check_batch(&message.data);
                match verdict {
                    Ok(batch) => {
                        self.record_clock_offset(author, offset_ms(batch.sent_ms));
                        let gateway = self.gateway.clone();
                        let internal = self.internal_tx.clone();
                        tokio::spawn(async move {
                            if let Some(merged) = gateway.remote_entries(batch.entries).await {
                                let checked = GossipChecked {
                                    message_id,
                                    source: propagation_source,
                                    author,
                                    merged,
                                };
                                let _ = internal.send(Internal::Gossip(checked));
                            }
                        });
                    }
                    Err(reason) => {
                        self.report(&message_id, &propagation_source, MessageAcceptance::Reject);
                        self.rejected(propagation_source, author, &reason);
                    }
                }
            }
            gossipsub::Event::Subscribed { peer_id, topic } if topic == self.topic.hash() => {
                tracing::debug!(peer = %peer_id, "peer subscribed to the world's Puts");
                self.publish_held();
            }
            _ => {}
        }
    }

    /// Reports the gateway's verdict on a batch: forwarded only if every entry was valid and
    /// within its writer's quota.
    pub(super) fn on_gossip_checked(&mut self, checked: GossipChecked) {
        let GossipChecked {
            message_id,
            source,
            author,
            merged,
        } = checked;
        if merged.invalid == 0 {
            // A batch that took a writer past its quota (entries turned away, or others pushed
            // out) is valid but not wanted: not forwarded, and no penalty for a relay. What
            // it held within the quota reaches the others by sync.
            let acceptance = if merged.over_quota == 0 && merged.evicted == 0 {
                MessageAcceptance::Accept
            } else {
                MessageAcceptance::Ignore
            };
            self.report(&message_id, &source, acceptance);
            return;
        }
        self.report(&message_id, &source, MessageAcceptance::Reject);
        let reason = format!(
            "{} invalid entries ({} with a missing or bad signature)",
            merged.invalid, merged.bad_signatures
        );
        self.rejected(source, author, &reason);
    }

    fn report(&mut self, message_id: &MessageId, source: &PeerId, acceptance: MessageAcceptance) {
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(message_id, source, acceptance);
    }

    /// Decodes a gossiped batch and checks it as a whole (format, world, date); `Err` says why
    /// it is rejected. Its entries are judged by the gateway.
    fn check_batch(&self, data: &[u8]) -> Result<WireBatch, String> {
        let batch: WireBatch =
            wire::decode(data, MAX_MESSAGE_BYTES).map_err(|err| err.to_string())?;
        if batch.world != self.options.world {
            return Err(format!("batch of world {:?}", batch.world));
        }
        let now = wall_millis();
        if batch.sent_ms > self.limits.horizon_ms(now) {
            return Err(format!(
                "batch dated {} ms in the future",
                batch.sent_ms - now
            ));
        }
        Ok(batch)
    }

    /// Counts and logs a rejected batch. Logged once per connected peer that sent it (not per
    /// author: a peer can sign each message with a fresh key, and a set of authors would grow
    /// without bound); the event loop forgets the peer when it disconnects.
    fn rejected(&mut self, peer: PeerId, author: PeerId, reason: &str) {
        self.stats.remote.rejected_batches.fetch_add(1, Relaxed);
        if self.bad_logged.insert(peer) {
            tracing::warn!(%peer, %author, reason, "rejected a bad batch from a peer (further ones from it are counted in INFO, not logged)");
        } else {
            tracing::debug!(%peer, %author, reason, "rejected a bad batch");
        }
    }
}

/// Keeps the latest entry per key.
fn hold(held: &mut HashMap<Key, Entry>, key: Key, entry: Entry) {
    match held.get_mut(&key) {
        Some(old) => {
            old.merge(entry);
        }
        None => {
            held.insert(key, entry);
        }
    }
}
