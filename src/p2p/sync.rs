//! Bootstrap and anti-entropy over `/cmud/sync/1`: on every (re)connection, and every few
//! seconds with a random peer, a node sends its digest and pulls, page by page, the entries of
//! the ranges where the peer's replica differs. Answers are read from the gateway's replica in
//! a helper task; pages received are merged through the gateway (which validates every entry)
//! before the next page is asked for.

use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use libp2p::PeerId;
use libp2p::request_response::{self, Message, OutboundRequestId, ResponseChannel};
use rand::seq::IteratorRandom;
use tokio::time::Instant;

use super::SyncProgress;
use super::digest::{self, ranges_from};
use super::event_loop::{EventLoop, offset_ms};
use super::gossip::GossipChecked;
use super::wire::{FORMAT_VERSION, RangeDigest, SyncRequest, SyncResponse, entry_bytes};
use crate::store::KeyedEntry;
use crate::store::clock::wall_millis;

/// Exchanges this large or larger are logged and shown as progress.
const LARGE_SYNC_ENTRIES: u64 = 1000;

/// Results of helper tasks, sent back to the event loop.
pub(super) enum Internal {
    /// Our digest is ready: send the first request of the exchange with `peer`.
    Digest {
        /// The peer.
        peer: PeerId,
        /// Our digest.
        ranges: Vec<RangeDigest>,
    },
    /// An answer to a peer's request is ready.
    Serve {
        /// Where it goes.
        channel: ResponseChannel<SyncResponse>,
        /// The answer.
        response: SyncResponse,
    },
    /// The gateway has judged a gossiped batch: report it to gossipsub.
    Gossip(GossipChecked),
    /// A page from `peer` has been merged: ask for the next one, if any.
    Merged {
        /// The peer.
        peer: PeerId,
        /// Where the next page starts.
        next: Option<Bytes>,
        /// Entries of the page the gateway turned away as invalid.
        invalid: usize,
    },
}

/// One running exchange with a peer (we pull from it).
#[derive(Debug)]
pub(super) struct Session {
    /// Our digest, taken when the exchange started.
    ranges: Vec<RangeDigest>,
    /// The request in flight.
    request: Option<OutboundRequestId>,
    /// Where the request in flight resumes (`None` for the first page).
    from: Option<Bytes>,
    /// Entries received so far.
    received: u64,
    /// Entries the peer holds.
    total: u64,
    /// When the exchange started.
    started: Instant,
}

impl EventLoop {
    /// Starts pulling from `peer`, unless an exchange with it is running already.
    pub(super) fn start_sync(&mut self, peer: PeerId) {
        if self.foreign.contains(&peer) || self.sessions.contains_key(&peer) {
            return;
        }
        self.sessions.insert(
            peer,
            Session {
                ranges: Vec::new(),
                request: None,
                from: None,
                received: 0,
                total: 0,
                started: Instant::now(),
            },
        );
        let gateway = self.gateway.clone();
        let internal = self.internal_tx.clone();
        tokio::spawn(async move {
            if let Some(ranges) = gateway.query(digest::digest).await {
                let _ = internal.send(Internal::Digest { peer, ranges });
            }
        });
    }

    /// Pulls from one random connected peer with no exchange running.
    pub(super) fn anti_entropy(&mut self) {
        let candidate = self
            .swarm
            .connected_peers()
            .filter(|peer| !self.foreign.contains(peer) && !self.sessions.contains_key(peer))
            .copied()
            .choose(&mut rand::rng());
        if let Some(peer) = candidate {
            self.start_sync(peer);
        }
    }

    pub(super) fn on_internal(&mut self, internal: Internal) {
        match internal {
            Internal::Digest { peer, ranges } => {
                if let Some(session) = self.sessions.get_mut(&peer) {
                    session.ranges = ranges;
                    self.request_page(peer, None);
                }
            }
            Internal::Serve { channel, response } => {
                if self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_response(channel, response)
                    .is_err()
                {
                    tracing::debug!("a peer left before its sync answer was ready");
                }
            }
            Internal::Gossip(checked) => self.on_gossip_checked(checked),
            Internal::Merged {
                peer,
                next,
                invalid,
            } => {
                if invalid > 0 && self.bad_logged.insert(peer) {
                    tracing::warn!(%peer, invalid, "dropped invalid entries from a peer's sync page (further ones from it are counted in INFO, not logged)");
                }
                match next {
                    Some(from) => self.request_page(peer, Some(from)),
                    None => self.finish_sync(peer),
                }
            }
        }
    }

    fn request_page(&mut self, peer: PeerId, from: Option<Bytes>) {
        let Some(session) = self.sessions.get_mut(&peer) else {
            return;
        };
        if !self.swarm.is_connected(&peer) {
            self.sessions.remove(&peer);
            return;
        }
        let request = SyncRequest {
            format: FORMAT_VERSION,
            world: self.options.world.clone(),
            ranges: ranges_from(&session.ranges, from.as_ref()),
            from: from.clone(),
        };
        session.from = from;
        session.request = Some(self.swarm.behaviour_mut().sync.send_request(&peer, request));
    }

    fn finish_sync(&mut self, peer: PeerId) {
        let Some(session) = self.sessions.remove(&peer) else {
            return;
        };
        if session.received >= LARGE_SYNC_ENTRIES {
            tracing::info!(
                %peer,
                entries = session.received,
                secs = format!("{:.2}", session.started.elapsed().as_secs_f64()),
                "synced with a peer"
            );
        }
        if self.progress.borrow().active {
            let total = session.total.max(session.received);
            self.progress.send_replace(SyncProgress {
                active: false,
                received: total,
                total,
            });
        }
        self.stats.remote.pending_entries.store(0, Relaxed);
    }

    pub(super) fn on_sync_event(
        &mut self,
        event: request_response::Event<SyncRequest, SyncResponse>,
    ) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => self.serve(peer, request, channel),
            request_response::Event::Message {
                peer,
                message:
                    Message::Response {
                        response,
                        request_id,
                    },
                ..
            } => {
                if self.is_current(peer, request_id) {
                    self.on_response(peer, response);
                }
            }
            request_response::Event::OutboundFailure {
                peer,
                error,
                request_id,
                ..
            } => {
                if !self.is_current(peer, request_id) {
                    return;
                }
                if matches!(
                    error,
                    request_response::OutboundFailure::UnsupportedProtocols
                ) {
                    tracing::info!(%peer, "peer does not speak /cmud/sync/1; not syncing with it");
                    self.foreign.insert(peer);
                } else {
                    tracing::debug!(%peer, %error, "sync request failed; anti-entropy retries");
                }
                self.sessions.remove(&peer);
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "could not answer a sync request");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    /// Whether `request` is the one in flight in the exchange with `peer` (answers to an
    /// abandoned exchange are ignored, so they cannot move a newer one's cursor).
    fn is_current(&self, peer: PeerId, request: OutboundRequestId) -> bool {
        self.sessions
            .get(&peer)
            .is_some_and(|session| session.request == Some(request))
    }

    /// Answers a peer's request from the gateway's replica, in a helper task.
    fn serve(
        &mut self,
        peer: PeerId,
        request: SyncRequest,
        channel: ResponseChannel<SyncResponse>,
    ) {
        let refusal = if request.format != FORMAT_VERSION {
            Some(format!(
                "format version {} is not ours ({FORMAT_VERSION}): upgrade the older cmud",
                request.format
            ))
        } else if request.world != self.options.world {
            Some(format!(
                "world {:?} is not ours ({:?})",
                request.world, self.options.world
            ))
        } else {
            None
        };
        if let Some(reason) = refusal {
            if self.foreign.insert(peer) {
                tracing::warn!(%peer, %reason, "refusing to sync with a peer");
            }
            let _ = self
                .swarm
                .behaviour_mut()
                .sync
                .send_response(channel, SyncResponse::Refused(reason));
            return;
        }
        let gateway = self.gateway.clone();
        let internal = self.internal_tx.clone();
        tokio::spawn(async move {
            let answer = gateway
                .query(move |map| {
                    let page = digest::serve_page(map, &request.ranges, request.from.as_ref());
                    (page, map.len() as u64)
                })
                .await;
            if let Some((page, total)) = answer {
                let response = SyncResponse::Page {
                    format: FORMAT_VERSION,
                    entries: page.entries,
                    next: page.next,
                    total,
                    sent_ms: wall_millis(),
                };
                let _ = internal.send(Internal::Serve { channel, response });
            }
        });
    }

    fn on_response(&mut self, peer: PeerId, response: SyncResponse) {
        match response {
            SyncResponse::Refused(reason) => {
                if self.foreign.insert(peer) {
                    tracing::warn!(%peer, %reason, "a peer refused to sync with us");
                }
                self.sessions.remove(&peer);
            }
            SyncResponse::Page {
                format,
                entries,
                next,
                total,
                sent_ms,
            } => {
                if format != FORMAT_VERSION {
                    tracing::warn!(%peer, format, "a peer answered in another format; not syncing with it");
                    self.foreign.insert(peer);
                    self.sessions.remove(&peer);
                    return;
                }
                self.record_clock_offset(peer, offset_ms(sent_ms));
                self.page_received(peer, entries, next, total);
            }
        }
    }

    fn page_received(
        &mut self,
        peer: PeerId,
        entries: Vec<KeyedEntry>,
        next: Option<Bytes>,
        total: u64,
    ) {
        let Some(session) = self.sessions.get_mut(&peer) else {
            return;
        };
        // An honest responder's cursor moves forward with every page; one that does not (a
        // broken or hostile peer) would keep us asking for the same page forever.
        let next = match next {
            Some(next) if session.from.as_ref().is_some_and(|from| next <= *from) => {
                tracing::warn!(%peer, "a peer's sync cursor went backwards; ending the exchange");
                None
            }
            next => next,
        };
        let bytes: usize = entries.iter().map(entry_bytes).sum();
        self.stats
            .remote
            .bytes_received
            .fetch_add(bytes as u64, Relaxed);
        session.received += entries.len() as u64;
        session.total = total;
        // Only a transfer is progress: an in-sync anti-entropy round over a large world also
        // pages (scan limits) but receives nothing.
        if session.received > 0 && total >= LARGE_SYNC_ENTRIES && next.is_some() {
            self.progress.send_replace(SyncProgress {
                active: true,
                received: session.received,
                total,
            });
            self.stats
                .remote
                .pending_entries
                .store(total.saturating_sub(session.received), Relaxed);
        }
        let gateway = self.gateway.clone();
        let internal = self.internal_tx.clone();
        tokio::spawn(async move {
            if let Some(merge) = gateway.remote_entries(entries).await {
                let _ = internal.send(Internal::Merged {
                    peer,
                    next,
                    invalid: merge.invalid,
                });
            }
        });
    }
}
