//! The commands whose replies grow with the world: `LIST prefix [AFTER key] [COUNT n]` and
//! `KEYS prefix*`, and the rule every large reply follows: it is sized before it is built, a
//! reply over the client's output limit is refused, and room is made for it in the node's
//! output budget first.

use std::ops::Bound;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::clients::ClientHandle;
use super::commands::Flow;
use super::output::Output;
use super::resp::{Reply, array_header_bytes, bulk_reply_bytes};
use super::server::NodeInfo;
use crate::store::actor::Actor;

/// Entries in a page when `LIST` is given `AFTER` but no `COUNT`.
pub const DEFAULT_PAGE_ENTRIES: usize = 1000;

/// Most entries one page may hold.
pub const MAX_PAGE_ENTRIES: usize = 100_000;

/// Whether a large reply may be built now.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Build it.
    Build,
    /// Refused with an error reply (larger than the client's output limit).
    Refused,
    /// Run the command again in a moment, once closed clients freed their output.
    Wait,
}

impl Admission {
    /// What the connection loop does next.
    pub fn flow(&self) -> Flow {
        match self {
            Admission::Wait => Flow::Retry,
            Admission::Build | Admission::Refused => Flow::Continue,
        }
    }
}

/// Checks that a reply of `bytes` fits the client's output limit and makes room for it in
/// the node's budget; otherwise writes `ERR reply too large: <advice>`.
pub fn admit(
    node: &NodeInfo,
    client: &ClientHandle,
    bytes: usize,
    advice: &str,
    reply: &mut Reply<'_>,
) -> Admission {
    if bytes > node.max_reply_bytes {
        reply.error(&format!("ERR reply too large: {advice}"));
        return Admission::Refused;
    }
    if !client.make_room_for(bytes) {
        return Admission::Wait;
    }
    Admission::Build
}

/// How `LIST` was asked.
#[derive(Debug, PartialEq, Eq)]
struct ListRequest<'a> {
    /// Keys must start with this.
    prefix: &'a [u8],
    /// Resume after this key (paged).
    after: Option<&'a [u8]>,
    /// Most entries in the page; `None` without paging.
    count: Option<usize>,
}

fn parse_list(args: &[Bytes]) -> Result<ListRequest<'_>, &'static str> {
    let syntax = "ERR syntax error: LIST prefix [AFTER key] [COUNT n]";
    let mut request = ListRequest {
        prefix: &args[0],
        after: None,
        count: None,
    };
    let mut options = args[1..].chunks(2);
    for option in &mut options {
        let [name, value] = option else {
            return Err(syntax);
        };
        match name.to_ascii_uppercase().as_slice() {
            b"AFTER" => request.after = Some(value),
            b"COUNT" => {
                let count = std::str::from_utf8(value)
                    .ok()
                    .and_then(|text| text.parse::<usize>().ok())
                    .filter(|count| *count > 0)
                    .ok_or("ERR COUNT must be a positive number")?;
                request.count = Some(count.min(MAX_PAGE_ENTRIES));
            }
            _ => return Err(syntax),
        }
    }
    if request.after.is_some() && request.count.is_none() {
        request.count = Some(DEFAULT_PAGE_ENTRIES);
    }
    Ok(request)
}

/// What a listing replies with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// `LIST`: key, value, ...; paged ones end with the key to resume after.
    Pairs {
        /// Whether this is one page (`AFTER` or `COUNT` given).
        paged: bool,
    },
    /// `KEYS`: the keys.
    Keys,
}

/// Where a listing is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Counting entries and bytes, copying nothing.
    Sizing,
    /// Sized: waiting for room in the node's output budget.
    Admitting,
    /// Copying the entries into the reply's body.
    Building,
}

/// What the connection does after a [`Listing::step`].
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Done: the reply (or an error) is in the output.
    Done,
    /// Let the actor's other connections run, then step again.
    Yield,
    /// Wait [`super::clients::ROOM_WAIT`] for closed clients to free their output, then step
    /// again.
    Wait,
}

/// A `LIST` or `KEYS` reply built a slice at a time, so a listing of a million keys never
/// holds its actor for more than [`SLICE_TIME`] at once: other connections on the actor (a
/// `PING`, the game) are served between slices.
///
/// Two passes, as before: the first sizes the reply (so one over the client's limit is refused
/// before it is built, and room is made for it in the node's budget), the second copies it.
/// Between slices other connections may write: like Redis' `SCAN`, a key present throughout
/// the listing is in it exactly once, with a value it had meanwhile; a key written or deleted
/// during it may or may not be. The array's length is written last, so it always matches.
#[derive(Debug)]
pub struct Listing {
    /// What the reply holds.
    shape: Shape,
    /// Keys must start with this.
    prefix: Bytes,
    /// Where each pass starts.
    start: Bound<Bytes>,
    /// Where the next slice of this pass starts.
    cursor: Bound<Bytes>,
    /// Most entries (a page's `COUNT`).
    count: Option<usize>,
    /// Most bytes of entries (half the output limit for a page; no cap otherwise).
    cap_bytes: usize,
    /// The pass under way.
    phase: Phase,
    /// Entries taken in this pass.
    found: usize,
    /// Reply bytes of those entries.
    bytes: usize,
    /// Whether a live entry follows the last one taken (a page is not the last).
    more: bool,
    /// The last key taken (a page's resume key).
    last: Option<Bytes>,
    /// The reply's elements, built before its header.
    body: Output,
    /// What to suggest when the reply is refused as too large.
    advice: &'static str,
}

/// Longest run of one slice of a listing before its connection yields.
pub const SLICE_TIME: Duration = Duration::from_millis(1);

/// Entries visited between two looks at the clock.
const CLOCK_EVERY_ENTRIES: usize = 64;

impl Listing {
    fn new(shape: Shape, prefix: &[u8], after: Option<&[u8]>, count: Option<usize>) -> Self {
        let prefix = Bytes::copy_from_slice(prefix);
        let start = match after {
            Some(after) if after >= &prefix[..] => Bound::Excluded(Bytes::copy_from_slice(after)),
            _ => Bound::Included(prefix.clone()),
        };
        Listing {
            shape,
            cursor: start.clone(),
            start,
            prefix,
            count,
            cap_bytes: usize::MAX,
            phase: Phase::Sizing,
            found: 0,
            bytes: 0,
            more: false,
            last: None,
            body: Output::default(),
            advice: "use a narrower prefix",
        }
    }

    /// Runs the listing for at most about [`SLICE_TIME`].
    pub fn step(
        &mut self,
        actor: &Actor,
        node: &NodeInfo,
        client: &ClientHandle,
        out: &mut Output,
    ) -> Step {
        let began = Instant::now();
        loop {
            match self.phase {
                Phase::Sizing | Phase::Building => {
                    if !self.slice(actor, began) {
                        return Step::Yield;
                    }
                    if self.phase == Phase::Building {
                        self.finish(out);
                        return Step::Done;
                    }
                    self.phase = Phase::Admitting;
                }
                Phase::Admitting => {
                    match admit(
                        node,
                        client,
                        self.reply_bytes(),
                        self.advice,
                        &mut Reply(out),
                    ) {
                        Admission::Build => {}
                        Admission::Refused => return Step::Done,
                        Admission::Wait => return Step::Wait,
                    }
                    self.phase = Phase::Building;
                    self.cursor = self.start.clone();
                    self.found = 0;
                    self.bytes = 0;
                    self.more = false;
                    self.last = None;
                }
            }
        }
    }

    /// Bytes of one entry in the reply.
    fn entry_bytes(&self, key: &[u8], value: &[u8]) -> usize {
        match self.shape {
            Shape::Pairs { .. } => bulk_reply_bytes(key.len()) + bulk_reply_bytes(value.len()),
            Shape::Keys => bulk_reply_bytes(key.len()),
        }
    }

    /// Elements of the array.
    fn elements(&self) -> usize {
        match self.shape {
            Shape::Pairs { paged } => self.found * 2 + usize::from(paged),
            Shape::Keys => self.found,
        }
    }

    /// The whole reply's bytes, as sized.
    fn reply_bytes(&self) -> usize {
        let resume = match (self.shape, &self.last) {
            (Shape::Pairs { paged: true }, Some(key)) if self.more => bulk_reply_bytes(key.len()),
            (Shape::Pairs { paged: true }, _) => 5,
            _ => 0,
        };
        array_header_bytes(self.elements()) + self.bytes + resume
    }

    /// Goes on with the pass under way; returns whether it ended (false: out of time).
    fn slice(&mut self, actor: &Actor, began: Instant) -> bool {
        let replica = actor.replica();
        let from = match &self.cursor {
            Bound::Included(key) => Bound::Included(&key[..]),
            Bound::Excluded(key) => Bound::Excluded(&key[..]),
            Bound::Unbounded => Bound::Unbounded,
        };
        let building = self.phase == Phase::Building;
        let mut visited = 0usize;
        for (key, entry) in replica.entries().range::<[u8], _>((from, Bound::Unbounded)) {
            if !key.starts_with(&self.prefix) {
                return true;
            }
            visited += 1;
            if visited.is_multiple_of(CLOCK_EVERY_ENTRIES) && began.elapsed() >= SLICE_TIME {
                // This entry is looked at again by the next slice.
                return false;
            }
            let Some(value) = entry.value.as_ref() else {
                self.cursor = Bound::Excluded(key.clone());
                continue;
            };
            let size = self.entry_bytes(key, value);
            if self.count == Some(self.found)
                || (self.found > 0 && self.bytes.saturating_add(size) > self.cap_bytes)
            {
                self.more = true;
                return true;
            }
            self.found += 1;
            self.bytes += size;
            self.cursor = Bound::Excluded(key.clone());
            self.last = Some(key.clone());
            if building {
                let mut reply = Reply(&mut self.body);
                reply.bulk(key);
                if let Shape::Pairs { .. } = self.shape {
                    reply.value(value);
                }
            }
        }
        true
    }

    /// Writes the built reply: its header, its body, and a page's resume key.
    fn finish(&mut self, out: &mut Output) {
        let mut reply = Reply(out);
        reply.array(self.elements());
        reply.0.append(&mut self.body);
        if let Shape::Pairs { paged: true } = self.shape {
            match &self.last {
                Some(key) if self.more => reply.bulk(key),
                _ => reply.null(),
            }
        }
    }
}

/// `LIST prefix`: a flat array key, value, ... of the live keys under `prefix`, in key order.
/// With `AFTER key` or `COUNT n` it is one page, and the array ends with the key to give as
/// `AFTER` for the next page, or nil after the last page. Built by the connection a slice at a
/// time ([`Listing`]).
pub fn list(node: &NodeInfo, args: &[Bytes], reply: &mut Reply<'_>) -> Flow {
    let request = match parse_list(args) {
        Ok(request) => request,
        Err(message) => {
            reply.error(message);
            return Flow::Continue;
        }
    };
    let paged = request.count.is_some();
    let mut listing = Listing::new(
        Shape::Pairs { paged },
        request.prefix,
        request.after,
        request.count,
    );
    if paged {
        // A page: at most `count` entries and half the output limit (at least one entry).
        listing.cap_bytes = node.max_reply_bytes / 2;
        listing.advice = "use a smaller COUNT";
    } else {
        listing.advice = "use a narrower prefix, or LIST prefix COUNT n";
    }
    Flow::Listing(Box::new(listing))
}

/// `KEYS pattern`, for prefix patterns (`p/*`, `*`) and exact keys only.
pub fn keys(actor: &Actor, pattern: &[u8], reply: &mut Reply<'_>) -> Flow {
    let (prefix, exact) = match pattern.split_last() {
        Some((b'*', prefix)) => (prefix, false),
        _ => (pattern, true),
    };
    if prefix
        .iter()
        .any(|b| matches!(b, b'*' | b'?' | b'[' | b'\\'))
    {
        reply.error("ERR only prefix patterns (prefix*) are supported");
        return Flow::Continue;
    }
    if exact {
        match actor.replica().get(prefix) {
            Some(_) => {
                reply.array(1);
                reply.bulk(prefix);
            }
            None => reply.array(0),
        }
        return Flow::Continue;
    }
    Flow::Listing(Box::new(Listing::new(Shape::Keys, prefix, None, None)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<Bytes> {
        words
            .iter()
            .map(|w| Bytes::copy_from_slice(w.as_bytes()))
            .collect()
    }

    #[test]
    fn list_options_parse_in_any_order_and_bad_ones_are_errors() {
        let plain = args(&["p/"]);
        assert_eq!(
            parse_list(&plain).unwrap(),
            ListRequest {
                prefix: b"p/",
                after: None,
                count: None
            }
        );
        let both = args(&["p/", "count", "5", "AFTER", "p/a"]);
        assert_eq!(
            parse_list(&both).unwrap(),
            ListRequest {
                prefix: b"p/",
                after: Some(b"p/a"),
                count: Some(5)
            }
        );
        let after_only = args(&["p/", "AFTER", "p/a"]);
        assert_eq!(
            parse_list(&after_only).unwrap().count,
            Some(DEFAULT_PAGE_ENTRIES)
        );
        let huge = args(&["p/", "COUNT", "99999999999"]);
        assert_eq!(parse_list(&huge).unwrap().count, Some(MAX_PAGE_ENTRIES));
        for bad in [
            &["p/", "COUNT"][..],
            &["p/", "COUNT", "0"],
            &["p/", "COUNT", "-1"],
            &["p/", "LIMIT", "3"],
        ] {
            assert!(parse_list(&args(bad)).is_err(), "{bad:?}");
        }
    }
}
