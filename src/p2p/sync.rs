//! Bootstrap and anti-entropy over `/cmud/sync/2`: the thin handler that moves the messages of
//! [`crate::store::ranger`]'s reconciliation between the swarm and the gateway.
//!
//! A node pulls from one peer at a time: on every (re)connection the peer joins a queue, and
//! every few seconds a random peer is pulled from when nothing else is. One session at a time
//! is what makes a node that joins several peers at once download the world once: the first
//! session brings everything, the next ones find nothing missing. Answers are computed on the
//! gateway (which owns the replica and its fingerprint index) in helper tasks.
//!
//! Entries received are merged through the gateway, which validates each one (signatures on
//! blocking threads, every core) before it touches the replica. The next request does not wait
//! for that: a reply's entries and the ranges it hands back are disjoint, so the next request
//! can be computed at once, and the next page travels while this one is verified. At most
//! [`MAX_PAGES_MERGING`] pages of a session wait for their merge at any time (the next request
//! is held back beyond that), so memory stays bounded, and a session ends only once every page
//! it received has been merged.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;

use libp2p::PeerId;
use libp2p::request_response::{self, Message as Rr, OutboundRequestId, ResponseChannel};
use rand::seq::IteratorRandom;
use tokio::time::Instant;

use super::SyncProgress;
use super::event_loop::{EventLoop, offset_ms};
use super::gossip::GossipChecked;
use super::wire::{FORMAT_VERSION, PAGE_LIMITS, SyncRequest, SyncResponse, encode};
use crate::store::clock::wall_millis;
use crate::store::gateway::RemoteMerge;
use crate::store::ranger::{self, MAX_IDLE_ROUNDS, Message};

/// Exchanges this large or larger are logged and shown as progress.
const LARGE_SYNC_ENTRIES: u64 = 1000;

/// Pages of a session handed to the gateway and not merged yet, at most: one or two are
/// verified while the next is on its way. Each page holds about a `PAGE_TARGET_BYTES` of
/// entries, so this bounds what a session holds in memory.
const MAX_PAGES_MERGING: usize = 3;

/// Results of helper tasks, sent back to the event loop.
pub(super) enum Internal {
    /// The first request of the session with `peer` is ready.
    Opened {
        /// The peer.
        peer: PeerId,
        /// The request.
        message: Message,
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
    /// The next request after a reply of session `session` is computed.
    Pulled {
        /// The session.
        session: u64,
        /// The next request; `None` when nothing is left to ask.
        next: Option<Message>,
    },
    /// The entries of one reply of session `session` (from `peer`) have been merged.
    Merged {
        /// The session.
        session: u64,
        /// The peer that sent them.
        peer: PeerId,
        /// What the gateway made of them.
        merged: RemoteMerge,
    },
}

/// This node's pulling: the session running, if any, and the peers waiting for one.
#[derive(Debug, Default)]
pub(super) struct Syncs {
    /// The session running.
    active: Option<Session>,
    /// Peers to pull from next, in order (newly connected ones).
    waiting: VecDeque<PeerId>,
    /// The id of the last session begun (replies and merges name their session by it).
    last_id: u64,
}

/// The session running with a peer (we pull from it).
#[derive(Debug)]
struct Session {
    /// Tells this session's helper-task results from those of an earlier one.
    id: u64,
    /// The peer.
    peer: PeerId,
    /// The request in flight, once sent.
    request: Option<OutboundRequestId>,
    /// Rounds in a row whose entries changed nothing here.
    idle_rounds: u32,
    /// Entries received so far.
    received: u64,
    /// Entries the peer holds.
    total: u64,
    /// When the session started.
    started: Instant,
    /// Replies whose entries the gateway has not merged yet.
    merging: usize,
    /// The next request, held back while [`MAX_PAGES_MERGING`] pages wait for their merge.
    held: Option<Message>,
    /// Whether the last request has been answered (the session ends once nothing is merging).
    pulled_all: bool,
}

impl EventLoop {
    /// Pulls from `peer` now, or after the session running.
    pub(super) fn start_sync(&mut self, peer: PeerId) {
        // A peer reached only through a relay that does not carry the world yet is pulled
        // from once it does (`reach` starts it then).
        if self.foreign.contains(&peer) || !self.nat.carries_world(&peer) {
            return;
        }
        match &self.sync.active {
            Some(session) if session.peer == peer => {}
            Some(_) => {
                if !self.sync.waiting.contains(&peer) {
                    self.sync.waiting.push_back(peer);
                }
            }
            None => self.begin_sync(peer),
        }
    }

    /// Pulls from a waiting peer, or else from one random connected peer, if no session runs.
    pub(super) fn anti_entropy(&mut self) {
        if self.sync.active.is_some() {
            return;
        }
        while let Some(peer) = self.sync.waiting.pop_front() {
            if self.nat.carries_world(&peer) && !self.foreign.contains(&peer) {
                self.begin_sync(peer);
                return;
            }
        }
        let candidate = self
            .swarm
            .connected_peers()
            .filter(|peer| !self.foreign.contains(peer) && self.nat.carries_world(peer))
            .copied()
            .choose(&mut rand::rng());
        if let Some(peer) = candidate {
            self.begin_sync(peer);
        }
    }

    fn begin_sync(&mut self, peer: PeerId) {
        self.sync.last_id += 1;
        self.sync.active = Some(Session {
            id: self.sync.last_id,
            peer,
            request: None,
            idle_rounds: 0,
            received: 0,
            total: 0,
            started: Instant::now(),
            merging: 0,
            held: None,
            pulled_all: false,
        });
        let gateway = self.gateway.clone();
        let internal = self.internal_tx.clone();
        tokio::spawn(async move {
            if let Some(message) = gateway.query(ranger::open).await {
                let _ = internal.send(Internal::Opened { peer, message });
            }
        });
    }

    pub(super) fn on_internal(&mut self, internal: Internal) {
        match internal {
            Internal::Opened { peer, message } => {
                if self
                    .session_with(peer)
                    .is_some_and(|session| session.request.is_none())
                {
                    self.send_sync_request(peer, message);
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
            Internal::Pulled { session, next } => self.on_pulled(session, next),
            Internal::Merged {
                session,
                peer,
                merged,
            } => self.on_merged(session, peer, merged),
        }
    }

    /// The session running, if it is session `id`.
    fn session_by_id(&mut self, id: u64) -> Option<&mut Session> {
        self.sync.active.as_mut().filter(|session| session.id == id)
    }

    /// Sends the next request of session `id`, or holds it while too many pages are merging,
    /// or ends the session when nothing is left to ask and nothing is merging.
    fn on_pulled(&mut self, id: u64, next: Option<Message>) {
        let Some(session) = self.session_by_id(id) else {
            return;
        };
        // A round counts as idle until a merge of its entries says otherwise.
        session.idle_rounds += 1;
        let peer = session.peer;
        match next {
            Some(_) if session.idle_rounds > MAX_IDLE_ROUNDS => {
                tracing::warn!(%peer, "a peer's sync answers bring nothing new; ending the session");
                self.finish_sync();
            }
            Some(message) if session.merging >= MAX_PAGES_MERGING => session.held = Some(message),
            Some(message) => self.send_sync_request(peer, message),
            None if session.merging == 0 => self.complete_sync(),
            None => session.pulled_all = true,
        }
    }

    /// Counts what the merge of one reply did, and sends a held request or ends the session
    /// when it was the one waited for.
    fn on_merged(&mut self, id: u64, peer: PeerId, merged: RemoteMerge) {
        if merged.invalid > 0 && self.bad_logged.insert(peer) {
            tracing::warn!(%peer, invalid = merged.invalid, "dropped invalid entries from a peer's sync answer (further ones from it are counted in INFO, not logged)");
        }
        let Some(session) = self.session_by_id(id) else {
            return;
        };
        session.merging = session.merging.saturating_sub(1);
        if merged.changed > 0 {
            session.idle_rounds = 0;
        }
        if session.pulled_all && session.merging == 0 {
            self.complete_sync();
        } else if let Some(message) = session.held.take() {
            self.send_sync_request(peer, message);
        }
    }

    fn session_with(&mut self, peer: PeerId) -> Option<&mut Session> {
        self.sync
            .active
            .as_mut()
            .filter(|session| session.peer == peer)
    }

    fn send_sync_request(&mut self, peer: PeerId, message: Message) {
        if !self.nat.carries_world(&peer) {
            self.finish_sync();
            return;
        }
        let request = SyncRequest {
            format: FORMAT_VERSION,
            world: self.options.world.clone(),
            message,
        };
        let id = self.swarm.behaviour_mut().sync.send_request(&peer, request);
        if let Some(session) = self.session_with(peer) {
            session.request = Some(id);
        }
    }

    /// Ends the session running after a reconciliation that ran to its end: counted, since the
    /// RPC port of a node back from a long absence waits for the first one.
    fn complete_sync(&mut self) {
        self.stats.remote.syncs_completed.fetch_add(1, Relaxed);
        self.finish_sync();
    }

    /// Ends the session running and starts the next waiting one.
    fn finish_sync(&mut self) {
        let Some(session) = self.sync.active.take() else {
            return;
        };
        if session.received >= LARGE_SYNC_ENTRIES {
            tracing::info!(
                peer = %session.peer,
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
        if !self.sync.waiting.is_empty() {
            self.anti_entropy();
        }
    }

    pub(super) fn on_sync_event(
        &mut self,
        event: request_response::Event<SyncRequest, SyncResponse>,
    ) {
        match event {
            request_response::Event::Message {
                peer,
                message: Rr::Request {
                    request, channel, ..
                },
                ..
            } => self.serve(peer, request, channel),
            request_response::Event::Message {
                peer,
                message:
                    Rr::Response {
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
                connection_id,
                error,
                request_id,
            } => {
                if !self.is_current(peer, request_id) {
                    return;
                }
                // Refused over a relayed connection: the other end has not let the world onto
                // it yet (see `gate`), which says nothing about whether it speaks sync.
                let over_relay = self
                    .nat
                    .conns
                    .get(&connection_id)
                    .is_some_and(|conn| conn.relayed);
                if matches!(
                    error,
                    request_response::OutboundFailure::UnsupportedProtocols
                ) && !over_relay
                {
                    tracing::info!(%peer, "peer does not speak /cmud/sync/2; not syncing with it");
                    self.foreign.insert(peer);
                    self.join_failed(peer, super::JoinError::NotCmud);
                } else {
                    tracing::debug!(%peer, %error, "sync request failed; anti-entropy retries");
                }
                self.finish_sync();
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "could not answer a sync request");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    /// Whether `request` is the one in flight in the session with `peer` (answers to an
    /// abandoned session are ignored).
    fn is_current(&self, peer: PeerId, request: OutboundRequestId) -> bool {
        self.sync
            .active
            .as_ref()
            .is_some_and(|session| session.peer == peer && session.request == Some(request))
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
            self.join_failed(peer, super::JoinError::ForeignWorld(reason.clone()));
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
                .query(move |store| {
                    let message = ranger::respond(store, &request.message, &PAGE_LIMITS);
                    (message, store.len() as u64)
                })
                .await;
            if let Some((message, total)) = answer {
                let response = SyncResponse::Reply {
                    format: FORMAT_VERSION,
                    message,
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
                self.finish_sync();
                self.join_failed(peer, super::JoinError::ForeignWorld(reason));
            }
            SyncResponse::Reply {
                format,
                message,
                total,
                sent_ms,
            } => {
                if format != FORMAT_VERSION {
                    tracing::warn!(%peer, format, "a peer answered in another format; not syncing with it");
                    self.foreign.insert(peer);
                    self.finish_sync();
                    let why = format!("it speaks format {format}");
                    self.join_failed(peer, super::JoinError::ForeignWorld(why));
                    return;
                }
                self.join_confirmed(peer);
                self.record_clock_offset(peer, offset_ms(sent_ms));
                self.reply_received(peer, message, total);
            }
        }
    }

    fn reply_received(&mut self, peer: PeerId, mut message: Message, total: u64) {
        let bytes = encode(&message).map_or(0, |bytes| bytes.len());
        self.stats
            .remote
            .bytes_received
            .fetch_add(bytes as u64, Relaxed);
        let entries = message.take_entries();
        self.stats
            .remote
            .sync_entries_received
            .fetch_add(entries.len() as u64, Relaxed);
        let Some(session) = self.session_with(peer) else {
            return;
        };
        session.received += entries.len() as u64;
        session.total = total;
        if !entries.is_empty() {
            session.merging += 1;
        }
        let (id, received, more) = (session.id, session.received, !message.is_empty());
        // Only a transfer is progress: an in-sync anti-entropy round over a large world
        // receives nothing.
        if received > 0 && total >= LARGE_SYNC_ENTRIES && more {
            self.progress.send_replace(SyncProgress {
                active: true,
                received,
                total,
            });
            self.stats
                .remote
                .pending_entries
                .store(total.saturating_sub(received), Relaxed);
        }
        if !entries.is_empty() {
            let gateway = self.gateway.clone();
            let internal = self.internal_tx.clone();
            tokio::spawn(async move {
                // A stopped gateway merges nothing; the session still hears that the page is done.
                let merged = gateway.remote_entries(entries).await.unwrap_or_default();
                let _ = internal.send(Internal::Merged {
                    session: id,
                    peer,
                    merged,
                });
            });
        }
        // The reply's entries lie outside every range it hands back, so the next request does
        // not depend on their merge: compute it now, while they are verified.
        let gateway = self.gateway.clone();
        let internal = self.internal_tx.clone();
        tokio::spawn(async move {
            let next = gateway
                .query(move |store| ranger::pull(store, &message, &PAGE_LIMITS))
                .await;
            if let Some(next) = next {
                let _ = internal.send(Internal::Pulled { session: id, next });
            }
        });
    }
}
