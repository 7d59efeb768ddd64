//! The client side of keyspace notifications: a typed [`KeySubscription`] that delivers which
//! keys under a prefix were set or deleted, built from the replica's `__keyspace@0__:<key>`
//! messages (see `pubsub` for the node side).
//!
//! Owns the translation from pub/sub messages to [`KeyEvent`]s and the bounded hand-over to
//! the reader; it does not fetch values (the reader does, in batches) and never reconnects
//! (a subscription that ends is over; the reader subscribes again and catches up).

use futures::StreamExt;
use tokio::sync::mpsc;

use super::pubsub::KEYSPACE_PREFIX;

/// Events a subscription holds for its reader before it counts as fallen behind.
pub const SUBSCRIPTION_QUEUE_EVENTS: usize = 8192;

/// What a subscription tells its reader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyEvent {
    /// The key was written (its new value must be read).
    Set(String),
    /// The key was deleted.
    Del(String),
    /// Events were lost (the reader fell behind, or the node said this subscriber lagged):
    /// whatever the reader holds may be stale until it reads the prefix again.
    Lagged,
}

/// A live subscription to the changes of every key under one prefix. Ends (`next` answers
/// `None`) when its connection closes.
pub struct KeySubscription {
    /// Events in arrival order.
    events: mpsc::Receiver<KeyEvent>,
}

impl KeySubscription {
    /// A subscription fed through the returned sender (what a `Kv` implementation keeps), and
    /// the subscription itself, holding at most `capacity` unread events.
    pub fn channel(capacity: usize) -> (KeySender, KeySubscription) {
        let (tx, events) = mpsc::channel(capacity.max(1));
        let sender = KeySender { tx, lost: false };
        (sender, KeySubscription { events })
    }

    /// The next event; `None` once the subscription has ended.
    pub async fn next(&mut self) -> Option<KeyEvent> {
        self.events.recv().await
    }

    /// The next event if one is waiting; `Ok(None)` if none is, `Err(())` if it ended.
    pub fn try_next(&mut self) -> Result<Option<KeyEvent>, Ended> {
        match self.events.try_recv() {
            Ok(event) => Ok(Some(event)),
            Err(mpsc::error::TryRecvError::Empty) => Ok(None),
            Err(mpsc::error::TryRecvError::Disconnected) => Err(Ended),
        }
    }
}

/// The subscription has ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ended;

/// The feeding side of a [`KeySubscription`]: never blocks; when the reader is behind and the
/// queue is full, events are dropped and the reader is told [`KeyEvent::Lagged`] once there is
/// room again.
pub struct KeySender {
    /// The queue.
    tx: mpsc::Sender<KeyEvent>,
    /// Whether events were dropped since the last `Lagged` was queued.
    lost: bool,
}

impl KeySender {
    /// Queues `event`. Returns false once the reader has gone.
    pub fn send(&mut self, event: KeyEvent) -> bool {
        if self.lost {
            match self.tx.try_send(KeyEvent::Lagged) {
                Ok(()) => self.lost = false,
                Err(mpsc::error::TrySendError::Full(_)) => return true,
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
            }
        }
        match self.tx.try_send(event) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.lost = true;
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// The pattern that matches the keyspace channel of every key under `prefix` (glob characters
/// in the prefix are escaped).
pub fn pattern_for(prefix: &str) -> Vec<u8> {
    let mut pattern = KEYSPACE_PREFIX.to_vec();
    for byte in prefix.bytes() {
        if matches!(byte, b'*' | b'?' | b'[' | b']' | b'\\') {
            pattern.push(b'\\');
        }
        pattern.push(byte);
    }
    pattern.push(b'*');
    pattern
}

/// What one pub/sub message means: a change of a text key under `prefix`, nothing (a key that
/// is not text or not under the prefix cannot concern the reader), or anything else the node
/// sends on the subscription, which can only mean that the reader must catch up.
pub fn event_of(prefix: &str, channel: &[u8], payload: &[u8]) -> Option<KeyEvent> {
    let Some(key) = channel.strip_prefix(KEYSPACE_PREFIX) else {
        return Some(KeyEvent::Lagged);
    };
    let key = std::str::from_utf8(key).ok()?;
    if !key.starts_with(prefix) {
        return None;
    }
    match payload {
        b"set" => Some(KeyEvent::Set(key.to_owned())),
        b"del" => Some(KeyEvent::Del(key.to_owned())),
        _ => Some(KeyEvent::Lagged),
    }
}

/// Moves a `redis` pub/sub stream's messages into `sender` until the stream or the reader
/// ends.
pub async fn forward(prefix: String, mut stream: redis::aio::PubSubStream, mut sender: KeySender) {
    while let Some(msg) = stream.next().await {
        let channel: Vec<u8> = msg.get_channel().unwrap_or_default();
        if let Some(event) = event_of(&prefix, &channel, msg.get_payload_bytes())
            && !sender.send(event)
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_become_typed_events() {
        let channel = |key: &str| [KEYSPACE_PREFIX, key.as_bytes()].concat();
        assert_eq!(
            event_of("p/", &channel("p/a/name"), b"set"),
            Some(KeyEvent::Set("p/a/name".into()))
        );
        assert_eq!(
            event_of("p/", &channel("p/a/name"), b"del"),
            Some(KeyEvent::Del("p/a/name".into()))
        );
        assert_eq!(event_of("p/", &channel("q/x"), b"set"), None);
        assert_eq!(
            event_of("p/", b"__cmud__:lagged", b""),
            Some(KeyEvent::Lagged)
        );
        assert_eq!(
            event_of("p/", &channel("p/a"), b"expired"),
            Some(KeyEvent::Lagged)
        );
    }

    #[test]
    fn glob_characters_in_a_prefix_are_taken_literally() {
        let pattern = pattern_for("p/[x]*");
        let channel = |key: &str| [KEYSPACE_PREFIX, key.as_bytes()].concat();
        assert!(super::super::pubsub::glob_match(
            &pattern,
            &channel("p/[x]*/name")
        ));
        assert!(!super::super::pubsub::glob_match(
            &pattern,
            &channel("p/x/name")
        ));
    }

    #[tokio::test]
    async fn a_reader_that_falls_behind_is_told_it_lagged() {
        let (mut tx, mut sub) = KeySubscription::channel(2);
        for n in 0..5 {
            assert!(tx.send(KeyEvent::Set(format!("p/{n}"))));
        }
        assert_eq!(sub.next().await, Some(KeyEvent::Set("p/0".into())));
        assert_eq!(sub.next().await, Some(KeyEvent::Set("p/1".into())));
        assert!(tx.send(KeyEvent::Set("p/9".into())));
        assert_eq!(sub.next().await, Some(KeyEvent::Lagged));
        assert_eq!(sub.next().await, Some(KeyEvent::Set("p/9".into())));
        drop(tx);
        assert_eq!(sub.next().await, None);
    }
}
