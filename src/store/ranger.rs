//! Range-based set reconciliation (Meyer's scheme, as in iroh-docs' ranger and negentropy) as
//! a pure message-in, message-out state machine over an [`IndexedMap`]: no I/O, no tasks.
//!
//! A session *pulls*: its initiator ends up with every entry the responder holds that it lacks
//! (each node pulls for itself, so every exchange moves data one way and a responder keeps no
//! state between messages).
//!
//! - The initiator opens with the [`Summary`] (count, fingerprint) of its whole key space.
//! - The responder answers each [`Part::Fingerprint`] whose summary differs from its own for
//!   that range: with its entries of the range when it holds few ([`LEAF_KEYS`]) or the
//!   initiator holds none, a page at a time; otherwise with the summaries of [`SPLIT`] sub-ranges
//!   cut at its own keys. Ranges it holds nothing of, or agrees on, are dropped.
//! - The initiator merges the entries and echoes its own summary of each range the responder
//!   summarised whenever the two differ; it is done when nothing differs.
//!
//! A responder's sub-ranges hold strictly fewer of its keys than their parent, so a difference
//! is found in about log_SPLIT(n) rounds, and a round costs O(parts × log n) (the index answers
//! a range's summary from prefix sums). A page ends with the summary of the rest of its range,
//! so bootstrap proceeds one page per round. Anything left out for lack of room in one message
//! is handed back as a summary and comes again in the next round.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::entry::{Key, KeyedEntry};
use super::fingerprint::Summary;
use super::indexed::IndexedMap;

/// Ranges holding at most this many of the responder's keys are answered with their entries.
pub const LEAF_KEYS: u64 = 16;

/// A differing range larger than a leaf is cut into this many sub-ranges.
pub const SPLIT: u64 = 16;

/// Rounds in a row that merge nothing new after which an initiator gives up on a session (an
/// honest responder needs about log_SPLIT(n) such rounds; a hostile one could go on forever).
pub const MAX_IDLE_ROUNDS: u32 = 64;

/// The keys `[lower, upper)`; no `upper` means no upper bound.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    /// First key of the range (inclusive).
    pub lower: Key,
    /// First key after the range, if any.
    pub upper: Option<Key>,
}

impl Range {
    /// Every key.
    pub fn all() -> Range {
        Range {
            lower: Bytes::new(),
            upper: None,
        }
    }

    fn upper(&self) -> Option<&[u8]> {
        self.upper.as_deref()
    }

    fn is_empty(&self) -> bool {
        self.upper()
            .is_some_and(|upper| upper <= self.lower.as_ref())
    }

    /// An estimate of the bytes a part over this range takes on the wire.
    fn size(&self) -> usize {
        const FIXED_BYTES: usize = 48;
        self.lower.len() + self.upper.as_ref().map_or(0, Bytes::len) + FIXED_BYTES
    }
}

/// One range's worth of a message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Part {
    /// The sender's summary of its entries in `range`.
    Fingerprint {
        /// The range.
        range: Range,
        /// Its size and fingerprint at the sender.
        summary: Summary,
    },
    /// The sender's entries in `range` (every one of them).
    Entries {
        /// The range.
        range: Range,
        /// The entries, in key order.
        entries: Vec<KeyedEntry>,
    },
}

/// One message of a session, either way.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The parts, in the order they are to be answered.
    pub parts: Vec<Part>,
}

impl Message {
    /// Moves the entries out of every [`Part::Entries`] (to be merged through validation).
    pub fn take_entries(&mut self) -> Vec<KeyedEntry> {
        let mut all = Vec::new();
        for part in &mut self.parts {
            if let Part::Entries { entries, .. } = part {
                all.append(entries);
            }
        }
        all
    }

    /// Whether the message says nothing (the session is over).
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }
}

/// How much one message may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageLimits {
    /// Estimated bytes of entries and range bounds in one message (at least one entry is
    /// always sent; ranges handed back unanswered may go over it by the size of the request).
    pub bytes: usize,
    /// Parts in one message (at least `SPLIT + 2`; parts beyond it in a received message are
    /// ignored and reconciled in a later session).
    pub parts: usize,
}

impl PageLimits {
    fn parts(&self) -> usize {
        self.parts.max(SPLIT as usize + 2)
    }
}

/// The initiator's first message.
pub fn open(store: &IndexedMap) -> Message {
    let range = Range::all();
    let summary = store.summary(&range.lower, range.upper());
    Message {
        parts: vec![Part::Fingerprint { range, summary }],
    }
}

/// The responder's answer to one message of the initiator.
pub fn respond(store: &IndexedMap, request: &Message, limits: &PageLimits) -> Message {
    let received: Vec<_> = request.parts.iter().take(limits.parts()).collect();
    let mut out = Answer {
        store,
        limits,
        parts: Vec::new(),
        bytes: 0,
    };
    for (index, part) in received.iter().enumerate() {
        // Initiators send only summaries; entries a peer pushes are not what it was asked.
        let Part::Fingerprint { range, summary } = part else {
            continue;
        };
        if range.is_empty() {
            continue;
        }
        let mine = store.summary(&range.lower, range.upper());
        if mine == *summary || mine.count == 0 {
            continue;
        }
        let later = received.len() - index - 1;
        let room = limits.parts().saturating_sub(out.parts.len() + later);
        if out.bytes >= limits.bytes || room < 2 {
            out.defer(range, mine);
        } else if summary.count == 0 || mine.count <= LEAF_KEYS {
            out.page(range);
        } else if room >= SPLIT as usize {
            out.split(range, mine);
        } else {
            out.defer(range, mine);
        }
    }
    Message { parts: out.parts }
}

/// The initiator's next message after merging the entries of `reply`, or `None` when the
/// session is over. Ranges beyond the message's limits are asked about as one range, which the
/// responder cuts again.
pub fn pull(store: &IndexedMap, reply: &Message, limits: &PageLimits) -> Option<Message> {
    let summaries: Vec<(&Range, &Summary)> = reply
        .parts
        .iter()
        .filter_map(|part| match part {
            Part::Fingerprint { range, summary } => Some((range, summary)),
            Part::Entries { .. } => None,
        })
        .collect();
    let mut parts = Vec::new();
    let mut bytes = 0;
    for (range, theirs) in &summaries {
        if parts.len() + 1 >= limits.parts() || bytes >= limits.bytes {
            let upper = summaries.last().and_then(|(last, _)| last.upper.clone());
            let rest = Range {
                lower: range.lower.clone(),
                upper,
            };
            if !rest.is_empty() {
                let summary = store.summary(&rest.lower, rest.upper());
                parts.push(Part::Fingerprint {
                    range: rest,
                    summary,
                });
            }
            break;
        }
        if range.is_empty() {
            continue;
        }
        let mine = store.summary(&range.lower, range.upper());
        if mine != **theirs {
            bytes += range.size();
            parts.push(Part::Fingerprint {
                range: (*range).clone(),
                summary: mine,
            });
        }
    }
    (!parts.is_empty()).then_some(Message { parts })
}

/// An answer being built by [`respond`].
struct Answer<'a> {
    /// The responder's replica.
    store: &'a IndexedMap,
    /// The answer's limits.
    limits: &'a PageLimits,
    /// Parts so far.
    parts: Vec<Part>,
    /// Estimated bytes of entries and range bounds so far.
    bytes: usize,
}

impl Answer<'_> {
    /// Hands `range` back as our summary: the initiator asks again next round if it differs.
    fn defer(&mut self, range: &Range, summary: Summary) {
        self.bytes += range.size();
        self.parts.push(Part::Fingerprint {
            range: range.clone(),
            summary,
        });
    }

    /// Sends our entries of `range` up to the byte budget, then the summary of the rest.
    fn page(&mut self, range: &Range) {
        let mut entries = Vec::new();
        let mut rest = None;
        for (key, entry) in self.store.range(&range.lower, range.upper()) {
            let size = entry.wire_size(&key);
            if self.bytes > 0 && self.bytes + size > self.limits.bytes {
                rest = Some(key);
                break;
            }
            self.bytes += size;
            entries.push((key, entry));
        }
        let sent = Range {
            lower: range.lower.clone(),
            upper: rest.clone().or_else(|| range.upper.clone()),
        };
        self.parts.push(Part::Entries {
            range: sent,
            entries,
        });
        if let Some(lower) = rest {
            let rest = Range {
                lower,
                upper: range.upper.clone(),
            };
            let summary = self.store.summary(&rest.lower, rest.upper());
            self.defer(&rest, summary);
        }
    }

    /// Cuts `range` (holding `mine.count` of our keys) into [`SPLIT`] sub-ranges at our own
    /// keys and sends the summary of each that holds any.
    fn split(&mut self, range: &Range, mine: Summary) {
        let first = self.store.rank(&range.lower);
        let mut lower = range.lower.clone();
        for piece in 1..=SPLIT {
            let upper = if piece == SPLIT {
                range.upper.clone()
            } else {
                let rank = first + mine.count * piece / SPLIT;
                // Always within the range (rank < first + count); the fallback keeps a stale
                // index from ever widening a range.
                self.store.key_at(rank).or_else(|| range.upper.clone())
            };
            let sub = Range {
                lower: lower.clone(),
                upper: upper.clone(),
            };
            if sub.is_empty() {
                continue;
            }
            let summary = self.store.summary(&sub.lower, sub.upper());
            if summary.count > 0 {
                self.defer(&sub, summary);
            }
            match upper {
                Some(upper) => lower = upper,
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests;
