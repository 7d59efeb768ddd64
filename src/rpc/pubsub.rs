//! Keyspace notifications the Redis way: `SUBSCRIBE`, `PSUBSCRIBE`, `UNSUBSCRIBE` and
//! `PUNSUBSCRIBE` with RESP2's subscribed-mode rules, and a `__keyspace@0__:<key>` message
//! (`set` or `del`) for every change that reaches the subscriber's actor, local or merged.
//!
//! Subscribers live on their actor's thread (a thread-local registry: each actor thread runs
//! one actor), so publishing is a synchronous append to each matching subscriber's queue; the
//! connection loop moves the queue to its output. Queued messages count as the client's unread
//! output, in its own limit and in the node's `max_total_output_bytes` (so a subscriber that
//! does not read can be the one closed to make room). A queue past the client's output limit
//! closes that client, except the node's own game: its queue is dropped instead and it gets
//! one message on [`LAGGED_CHANNEL`] saying how many events it missed, so it reads the world
//! again (with paged `LIST`) and keeps its connection.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::rc::{Rc, Weak};

use bytes::Bytes;
use tokio::sync::Notify;

use super::clients::{ClientHandle, OutputMeter};
use super::output::Output;
use super::resp::Reply;

/// The channel prefix of keyspace notifications (database 0, the only one).
pub const KEYSPACE_PREFIX: &[u8] = b"__keyspace@0__:";

/// The channel on which the node's game hears that its subscription fell behind: the message
/// is the number of events dropped. Sent whether or not the game subscribed to it.
pub const LAGGED_CHANNEL: &[u8] = b"__cmud__:lagged";

thread_local! {
    /// The subscribers on this actor thread.
    static SUBSCRIBERS: RefCell<Vec<Weak<Subscriber>>> = const { RefCell::new(Vec::new()) };
}

/// One subscribed connection's channels, patterns and pending messages.
pub struct Subscriber {
    /// Channels subscribed to by name.
    channels: RefCell<BTreeSet<Bytes>>,
    /// Glob patterns subscribed to.
    patterns: RefCell<BTreeSet<Bytes>>,
    /// Messages not yet moved to the connection's output.
    queue: RefCell<Output>,
    /// Most bytes `queue` may hold before the client is closed (or, for the game, the queue
    /// dropped).
    limit: usize,
    /// Counts `queue` as the client's unread output.
    meter: OutputMeter,
    /// Whether this is the node's own game (never closed for falling behind).
    game: bool,
    /// Set once `queue` went past `limit` (not for the game).
    overflowed: Cell<bool>,
    /// Events in `queue`.
    events: Cell<u64>,
    /// Events the game's queue dropped since it last heard so.
    dropped: Cell<u64>,
    /// Wakes the connection when a message is queued.
    pub wake: Notify,
}

impl Subscriber {
    /// Subscriptions in all (what Redis replies with after each change).
    fn count(&self) -> usize {
        self.channels.borrow().len() + self.patterns.borrow().len()
    }

    /// Moves the pending messages to `out` (for the game, after a note of what it missed).
    /// Returns false if the client fell too far behind.
    pub fn drain_into(&self, out: &mut Output) -> bool {
        let dropped = self.dropped.replace(0);
        if dropped > 0 {
            let mut reply = Reply(out);
            reply.array(3);
            reply.bulk(b"message");
            reply.bulk(LAGGED_CHANNEL);
            reply.bulk(dropped.to_string().as_bytes());
        }
        out.append(&mut self.queue.borrow_mut());
        self.events.set(0);
        !self.overflowed.get()
    }

    /// Bytes queued and not yet moved to the connection's output.
    pub fn queued(&self) -> usize {
        self.queue.borrow().len()
    }

    /// Whether the client fell too far behind (it is closed).
    pub fn overflowed(&self) -> bool {
        self.overflowed.get()
    }

    fn push(&self, write: impl FnOnce(&mut Reply<'_>)) {
        if self.overflowed.get() {
            return;
        }
        let mut queue = self.queue.borrow_mut();
        let before = queue.len();
        write(&mut Reply(&mut queue));
        self.meter.add(queue.len() - before);
        self.events.set(self.events.get() + 1);
        if queue.len() > self.limit {
            if self.game {
                // The game catches up by reading the world again; it keeps its connection.
                self.dropped
                    .set(self.dropped.get() + self.events.replace(0));
            } else {
                self.overflowed.set(true);
            }
            self.meter.sub(queue.len());
            queue.clear();
        }
        drop(queue);
        self.wake.notify_one();
    }
}

/// Whether anyone on this thread is subscribed (so changes are worth looking at).
pub fn anyone_listening() -> bool {
    SUBSCRIBERS.with(|subs| !subs.borrow().is_empty())
}

/// Tells this thread's subscribers that `key` was set (`live`) or deleted.
pub fn publish_change(key: &[u8], live: bool) {
    SUBSCRIBERS.with(|subs| {
        let subs = subs.borrow();
        if subs.is_empty() {
            return;
        }
        let mut channel = Vec::with_capacity(KEYSPACE_PREFIX.len() + key.len());
        channel.extend_from_slice(KEYSPACE_PREFIX);
        channel.extend_from_slice(key);
        let event: &[u8] = if live { b"set" } else { b"del" };
        for sub in subs.iter().filter_map(Weak::upgrade) {
            if sub.channels.borrow().contains(channel.as_slice()) {
                sub.push(|reply| {
                    reply.array(3);
                    reply.bulk(b"message");
                    reply.bulk(&channel);
                    reply.bulk(event);
                });
            }
            for pattern in sub.patterns.borrow().iter() {
                if glob_match(pattern, &channel) {
                    sub.push(|reply| {
                        reply.array(4);
                        reply.bulk(b"pmessage");
                        reply.bulk(pattern);
                        reply.bulk(&channel);
                        reply.bulk(event);
                    });
                }
            }
        }
    });
}

/// What a subscription command did to the connection.
pub enum Subscription {
    /// Still subscribed to something: the connection is in subscribed mode.
    Active(Rc<Subscriber>),
    /// Subscribed to nothing: back to normal commands.
    None,
}

/// Runs `SUBSCRIBE`, `PSUBSCRIBE`, `UNSUBSCRIBE` or `PUNSUBSCRIBE` (`upper` is the name in
/// capitals) for a connection whose subscriber is `current`, writing Redis' replies.
pub fn command(
    current: Option<Rc<Subscriber>>,
    upper: &[u8],
    args: &[Bytes],
    client: &ClientHandle,
    reply: &mut Reply<'_>,
) -> Subscription {
    let sub = current.unwrap_or_else(|| {
        let sub = Rc::new(Subscriber {
            channels: RefCell::default(),
            patterns: RefCell::default(),
            queue: RefCell::default(),
            limit: client.options().max_client_output_bytes,
            meter: client.meter(),
            game: client.is_game(),
            overflowed: Cell::new(false),
            events: Cell::new(0),
            dropped: Cell::new(0),
            wake: Notify::new(),
        });
        SUBSCRIBERS.with(|subs| {
            let mut subs = subs.borrow_mut();
            subs.retain(|weak| weak.strong_count() > 0);
            subs.push(Rc::downgrade(&sub));
        });
        sub
    });
    let (set, kind): (&RefCell<BTreeSet<Bytes>>, &[u8]) = match upper {
        b"SUBSCRIBE" => (&sub.channels, b"subscribe"),
        b"PSUBSCRIBE" => (&sub.patterns, b"psubscribe"),
        b"UNSUBSCRIBE" => (&sub.channels, b"unsubscribe"),
        _ => (&sub.patterns, b"punsubscribe"),
    };
    let names = &args[1..];
    if upper.starts_with(b"UN") || upper.starts_with(b"PUN") {
        let names: Vec<Bytes> = if names.is_empty() {
            set.borrow().iter().cloned().collect()
        } else {
            names.to_vec()
        };
        if names.is_empty() {
            confirm(reply, kind, None, sub.count());
        }
        for name in names {
            set.borrow_mut().remove(&name);
            confirm(reply, kind, Some(&name), sub.count());
        }
    } else {
        for name in names {
            set.borrow_mut().insert(Bytes::copy_from_slice(name));
            confirm(reply, kind, Some(name), sub.count());
        }
    }
    if sub.count() == 0 {
        SUBSCRIBERS.with(|subs| {
            subs.borrow_mut()
                .retain(|weak| weak.upgrade().is_some_and(|s| !Rc::ptr_eq(&s, &sub)));
        });
        return Subscription::None;
    }
    Subscription::Active(sub)
}

/// `*3 kind name count`, Redis' confirmation of one (un)subscription.
fn confirm(reply: &mut Reply<'_>, kind: &[u8], name: Option<&[u8]>, count: usize) {
    reply.array(3);
    reply.bulk(kind);
    match name {
        Some(name) => reply.bulk(name),
        None => reply.null(),
    }
    reply.integer(count as i64);
}

/// Whether a command may run in subscribed mode (RESP2 rules).
pub fn allowed_when_subscribed(upper: &[u8]) -> bool {
    matches!(
        upper,
        b"SUBSCRIBE" | b"PSUBSCRIBE" | b"UNSUBSCRIBE" | b"PUNSUBSCRIBE" | b"PING" | b"QUIT"
    )
}

/// Redis' glob: `*`, `?`, `[abc]`, `[^a]`, `[a-z]`, and `\` to take the next byte literally.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skip| glob_match(rest, &text[skip..])),
        Some((b'?', rest)) => !text.is_empty() && glob_match(rest, &text[1..]),
        Some((b'[', rest)) => {
            let Some((&byte, text_rest)) = text.split_first() else {
                return false;
            };
            let (negate, rest) = match rest.split_first() {
                Some((b'^', rest)) => (true, rest),
                _ => (false, rest),
            };
            let Some(close) = rest.iter().position(|&b| b == b']') else {
                return false;
            };
            let class = &rest[..close];
            let mut hit = false;
            let mut at = 0;
            while at < class.len() {
                if at + 2 < class.len() && class[at + 1] == b'-' {
                    let (lo, hi) = (class[at].min(class[at + 2]), class[at].max(class[at + 2]));
                    hit |= (lo..=hi).contains(&byte);
                    at += 3;
                } else {
                    hit |= class[at] == byte;
                    at += 1;
                }
            }
            hit != negate && glob_match(&rest[close + 1..], text_rest)
        }
        Some((b'\\', rest)) if !rest.is_empty() => {
            text.first() == Some(&rest[0]) && glob_match(&rest[1..], &text[1..])
        }
        Some((&literal, rest)) => text.first() == Some(&literal) && glob_match(rest, &text[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_redis() {
        let yes = [
            ("__keyspace@0__:p/*", "__keyspace@0__:p/abc/name"),
            ("*", ""),
            ("a?c", "abc"),
            ("[ab]x", "bx"),
            ("[^a]x", "bx"),
            ("[a-c]", "b"),
            ("\\*", "*"),
            ("*/name", "p/x/name"),
        ];
        for (pattern, text) in yes {
            assert!(
                glob_match(pattern.as_bytes(), text.as_bytes()),
                "{pattern} {text}"
            );
        }
        let no = [
            ("__keyspace@0__:p/*", "__keyspace@0__:q/a"),
            ("a?c", "ac"),
            ("[^a]x", "ax"),
            ("[a-c]", "d"),
            ("\\*", "x"),
            ("abc", "abcd"),
        ];
        for (pattern, text) in no {
            assert!(
                !glob_match(pattern.as_bytes(), text.as_bytes()),
                "{pattern} {text}"
            );
        }
    }
}
