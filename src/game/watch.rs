//! One session's local view of the world (`p/`): read once with a paged `List`, then kept
//! current from keyspace notifications, fetching only the keys that changed (batched `MGET`).
//! A subscription that falls behind or breaks is made good with another paged `List`, so an
//! idle session costs the same in a world of ten players as in one of ten thousand.
//!
//! The [`World`] snapshot is maintained incrementally: a change rebuilds only the records of
//! the players it touched. The player's own writes go through [`Watched`], which applies them
//! to the view as soon as the replica acknowledged them (read-your-writes; see `watched`).
//!
//! Owns the view, its watcher task and the subscription; it does not decide what a change
//! means to the player (`news`) or change how a snapshot is read (`schema`). A replica without
//! subscriptions (the test doubles) gets a view that lists the world at every look, as before.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::schema::{self, World};
pub use super::watched::Watched;
use crate::rpc::{KeyEvent, KeySubscription, Kv, KvError};

/// Most changed keys read back in one batch.
const FETCH_BATCH_KEYS: usize = 4096;

/// How long the watcher waits after a first event for the rest of its burst (the keys one
/// write or one merged batch changed arrive one event each), so they are read back and shown
/// together.
const BURST: Duration = Duration::from_millis(10);

/// First wait before subscribing again after the subscription broke; doubles up to the max.
const RETRY_FIRST: Duration = Duration::from_millis(100);

/// Longest wait between attempts to subscribe again.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// A session's view of `p/`; clones share it. The watcher task ends with the last clone.
#[derive(Clone)]
pub struct View {
    /// The state, shared with the watcher task (which holds it weakly).
    shared: Arc<Shared>,
}

/// What the view and its watcher task share.
struct Shared {
    /// The view.
    state: Mutex<State>,
    /// Bumped after every change the view applies; sessions wait on it.
    generation: watch::Sender<u64>,
    /// The watcher task, stopped when the last view goes.
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(task) = self.task.get_mut().ok().and_then(Option::take) {
            task.abort();
        }
    }
}

/// The view proper.
#[derive(Default)]
struct State {
    /// Whether `world` follows the replica (subscribed and caught up); if not, a look lists
    /// the world.
    synced: bool,
    /// Every text key under `p/` with its value.
    entries: BTreeMap<String, String>,
    /// The snapshot read from `entries`, but for the records of `stale`.
    world: Arc<World>,
    /// Players whose records in `world` are behind `entries`: rebuilt when the world is next
    /// read, so changes nobody reads (the player's own heartbeat) cost nothing per player.
    stale: BTreeSet<String>,
    /// Counts the player's own writes.
    write_seq: u64,
    /// The player's own keys, with the count of the write that last set them (`None` for a
    /// delete): a read that started before that write must not undo it.
    written: HashMap<String, (u64, Option<String>)>,
    /// Keys whose changes are kept in `world` but count as no change (the player's own
    /// heartbeat, which changes nothing the player is shown).
    quiet: BTreeSet<String>,
    /// The player's own prefix: changes under it count, but wake no one at once (the
    /// player's commands show their own effects; the next regular look reports the rest).
    own_prefix: Option<String>,
}

/// What applying some changes did.
#[derive(Default)]
struct Applied {
    /// Players whose records must be rebuilt.
    ids: BTreeSet<String>,
    /// Whether the view changed in a way a look may report.
    counts: bool,
    /// Whether the change came from elsewhere, so the session should look at once.
    wakes: bool,
}

impl Applied {
    /// Moves the view to its next generation, waking sessions if the change asks for it.
    fn publish(&self, generation: &watch::Sender<u64>) {
        if self.counts {
            generation.send_if_modified(|g| {
                *g += 1;
                self.wakes
            });
        }
    }
}

impl State {
    /// Sets (`Some`) or deletes `key`, noting in `applied` whose record must be rebuilt if
    /// that changed anything (the echo of the player's own write changes nothing).
    fn apply(&mut self, key: String, value: Option<String>, applied: &mut Applied) {
        let Some(id) = player_of(&key) else {
            return;
        };
        if self.entries.get(&key) == value.as_ref() {
            return;
        }
        if !self.quiet.contains(&key) {
            applied.counts = true;
            applied.wakes |= self
                .own_prefix
                .as_ref()
                .is_none_or(|own| !key.starts_with(own.as_str()));
        }
        match value {
            Some(value) => self.entries.insert(key, value),
            None => self.entries.remove(&key),
        };
        applied.ids.insert(id);
    }

    /// Marks the records of players `ids` as behind `entries`.
    fn mark_stale(&mut self, ids: BTreeSet<String>) {
        self.stale.extend(ids);
    }

    /// The snapshot, with every stale record rebuilt from `entries`.
    fn current(&mut self) -> Arc<World> {
        if self.stale.is_empty() {
            return self.world.clone();
        }
        let ids = std::mem::take(&mut self.stale);
        let world = Arc::make_mut(&mut self.world);
        for id in ids {
            let prefix = schema::player_prefix(&id);
            let pairs = self
                .entries
                .range(prefix.clone()..)
                .take_while(|(key, _)| key.starts_with(&prefix))
                .map(|(key, value)| (key.clone(), value.clone()));
            match World::from_pairs(pairs).players.remove(&id) {
                Some(record) => world.players.insert(id, record),
                None => world.players.remove(&id),
            };
        }
        self.world.clone()
    }
}

/// The player id of a key under `p/`.
fn player_of(key: &str) -> Option<String> {
    let rest = key.strip_prefix(schema::PLAYERS_PREFIX)?;
    Some(rest.split_once('/')?.0.to_owned())
}

impl View {
    fn new(synced: bool) -> View {
        let (generation, _) = watch::channel(0);
        let state = State {
            synced,
            ..State::default()
        };
        View {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                generation,
                task: Mutex::new(None),
            }),
        }
    }

    /// A view that lists the world at every look (for replicas without subscriptions).
    pub fn polling() -> View {
        View::new(false)
    }

    /// Subscribes to `p/`, reads it (after subscribing, so nothing falls between them) and
    /// keeps it current from then on. A replica without subscriptions gets a polling view.
    pub async fn start<K: Kv>(kv: K) -> Result<View, KvError> {
        let subscription = match kv.subscribe(schema::PLAYERS_PREFIX).await {
            Ok(subscription) => subscription,
            Err(KvError::NoSubscriptions) => return Ok(View::polling()),
            Err(err) => return Err(err),
        };
        let view = View::new(false);
        catch_up(&kv, &view.shared).await?;
        let task = tokio::spawn(follow(kv, Arc::downgrade(&view.shared), subscription));
        *view.lock_task() = Some(task);
        Ok(view)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.shared)
    }

    fn lock_task(&self) -> MutexGuard<'_, Option<JoinHandle<()>>> {
        // Poisoned only by a panic while swapping the handle, which cannot panic.
        self.shared
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The world as the replica holds it: the view if it follows the replica, else a fresh
    /// `List` of `p/` through `kv`.
    pub async fn world<K: Kv>(&self, kv: &K) -> Result<Arc<World>, KvError> {
        {
            let mut state = self.lock();
            if state.synced {
                return Ok(state.current());
            }
        }
        Ok(Arc::new(World::from_pairs(
            kv.list(schema::PLAYERS_PREFIX).await?,
        )))
    }

    /// Which change the view is at; `None` while it does not follow the replica (then every
    /// look must read the world).
    pub fn generation(&self) -> Option<u64> {
        let synced = self.lock().synced;
        synced.then(|| *self.shared.generation.borrow())
    }

    /// Resolves at the next change the view applies.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.shared.generation.subscribe()
    }

    /// Tells the view whose session it serves: changes under `p/<id>/` wake no look at once,
    /// and the player's heartbeat counts as no change at all.
    pub fn set_player(&self, id: &str) {
        let mut state = self.lock();
        state.own_prefix = Some(schema::player_prefix(id));
        state.quiet.insert(schema::key(id, schema::field::SEEN));
    }

    /// Records the player's own acknowledged writes (`None` deletes).
    pub(super) fn wrote(&self, writes: impl IntoIterator<Item = (String, Option<String>)>) {
        let mut state = self.lock();
        state.write_seq += 1;
        let seq = state.write_seq;
        let mut applied = Applied::default();
        for (key, value) in writes {
            state.written.insert(key.clone(), (seq, value.clone()));
            state.apply(key, value, &mut applied);
        }
        if state.synced {
            state.mark_stale(std::mem::take(&mut applied.ids));
            drop(state);
            applied.publish(&self.shared.generation);
        }
    }
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    // A panic while holding the lock leaves at worst a stale view, which the next catch-up
    // replaces: keep going.
    shared
        .state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Reads all of `p/` (paged) into the view; the player's writes made meanwhile stay.
async fn catch_up<K: Kv>(kv: &K, shared: &Shared) -> Result<(), KvError> {
    let since = lock(shared).write_seq;
    let pairs = kv.list(schema::PLAYERS_PREFIX).await?;
    let mut state = lock(shared);
    state.entries = pairs.into_iter().collect();
    let newer: Vec<(String, Option<String>)> = state
        .written
        .iter()
        .filter(|(_, (seq, _))| *seq > since)
        .map(|(key, (_, value))| (key.clone(), value.clone()))
        .collect();
    for (key, value) in newer {
        state.apply(key, value, &mut Applied::default());
    }
    let pairs = state.entries.iter().map(|(k, v)| (k.clone(), v.clone()));
    state.world = Arc::new(World::from_pairs(pairs));
    state.stale.clear();
    state.synced = true;
    drop(state);
    shared.generation.send_modify(|g| *g += 1);
    Ok(())
}

/// Reads back the values of `keys` and applies them; writes of the player's made meanwhile
/// stay.
async fn fetch<K: Kv>(kv: &K, shared: &Shared, keys: Vec<String>) -> Result<(), KvError> {
    let since = lock(shared).write_seq;
    let values = kv.get_many(&keys).await?;
    let mut state = lock(shared);
    let mut applied = Applied::default();
    for (key, value) in keys.into_iter().zip(values) {
        if state.written.get(&key).is_some_and(|(seq, _)| *seq > since) {
            continue;
        }
        state.apply(key, value, &mut applied);
    }
    state.mark_stale(std::mem::take(&mut applied.ids));
    drop(state);
    applied.publish(&shared.generation);
    Ok(())
}

/// Why following the subscription stopped.
enum Stop {
    /// Events were lost: read the world again.
    Lagged,
    /// The subscription ended: subscribe again, then read the world.
    Ended,
}

/// The watcher task: applies the subscription's changes; catches up after a lag; subscribes
/// again when the subscription breaks. Ends when the view is gone.
async fn follow<K: Kv>(kv: K, shared: Weak<Shared>, mut subscription: KeySubscription) {
    loop {
        let stop = apply_changes(&kv, &shared, &mut subscription).await;
        let Some(strong) = shared.upgrade() else {
            return;
        };
        lock(&strong).synced = false;
        drop(strong);
        if matches!(stop, Stop::Ended) {
            tracing::debug!("the world's subscription ended; subscribing again");
            match resubscribe(&kv).await {
                Some(fresh) => subscription = fresh,
                None => return,
            }
        } else {
            tracing::debug!("the world's subscription fell behind; reading the world again");
        }
        let mut wait = RETRY_FIRST;
        loop {
            let Some(strong) = shared.upgrade() else {
                return;
            };
            match catch_up(&kv, &strong).await {
                Ok(()) => break,
                Err(err) => tracing::debug!(%err, "reading the world failed"),
            }
            drop(strong);
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(RETRY_MAX);
        }
    }
}

/// Subscribes again, retrying with a growing pause; `None` if the replica no longer offers
/// subscriptions.
async fn resubscribe<K: Kv>(kv: &K) -> Option<KeySubscription> {
    let mut wait = RETRY_FIRST;
    loop {
        match kv.subscribe(schema::PLAYERS_PREFIX).await {
            Ok(subscription) => return Some(subscription),
            Err(KvError::NoSubscriptions) => return None,
            Err(err) => tracing::debug!(%err, "subscribing to the world failed"),
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(RETRY_MAX);
    }
}

/// Applies batches of changes until the subscription lags or ends (or the view is gone).
async fn apply_changes<K: Kv>(
    kv: &K,
    shared: &Weak<Shared>,
    subscription: &mut KeySubscription,
) -> Stop {
    loop {
        let Some(first) = subscription.next().await else {
            return Stop::Ended;
        };
        tokio::time::sleep(BURST).await;
        let mut keys = BTreeSet::new();
        let mut next = Some(first);
        while let Some(event) = next {
            match event {
                KeyEvent::Set(key) | KeyEvent::Del(key) => keys.insert(key),
                KeyEvent::Lagged => return Stop::Lagged,
            };
            if keys.len() >= FETCH_BATCH_KEYS {
                break;
            }
            // An end found here is found again by the next `next()`, after this batch.
            next = subscription.try_next().ok().flatten();
        }
        let Some(strong) = shared.upgrade() else {
            return Stop::Ended;
        };
        // Whether set or deleted, the key's value now is what counts: one read answers both.
        if let Err(err) = fetch(kv, &strong, keys.into_iter().collect()).await {
            tracing::debug!(%err, "reading changed keys failed");
            return Stop::Lagged;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::client::{PeerInfo, SharedAddr};
    use crate::rpc::keyspace::KeySender;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    /// An in-memory replica that offers subscriptions fed by the test and counts its lists.
    #[derive(Clone, Default)]
    struct FakeKv {
        map: Arc<Mutex<BTreeMap<String, String>>>,
        senders: Arc<Mutex<Vec<KeySender>>>,
        lists: Arc<AtomicUsize>,
        /// A write of the player's that lands while the next read of its key is in flight.
        in_flight: Arc<Mutex<Option<(View, String, String)>>>,
    }

    impl FakeKv {
        /// A peer's write: in the replica, announced to subscribers.
        fn peer_writes(&self, key: &str, value: &str) {
            self.map.lock().unwrap().insert(key.into(), value.into());
            self.announce(KeyEvent::Set(key.into()));
        }

        fn announce(&self, event: KeyEvent) {
            for sender in self.senders.lock().unwrap().iter_mut() {
                sender.send(event.clone());
            }
        }
    }

    impl Kv for FakeKv {
        async fn get(&self, key: &str) -> Result<Option<String>, KvError> {
            let old = self.map.lock().unwrap().get(key).cloned();
            let landing = self.in_flight.lock().unwrap().take();
            if let Some((view, written, value)) = landing {
                assert_eq!(written, key);
                self.map
                    .lock()
                    .unwrap()
                    .insert(written.clone(), value.clone());
                view.wrote([(written, Some(value))]);
            }
            Ok(old)
        }
        async fn put(&self, key: &str, value: &str) -> Result<(), KvError> {
            self.map.lock().unwrap().insert(key.into(), value.into());
            Ok(())
        }
        async fn put_many(&self, pairs: &[(String, String)]) -> Result<(), KvError> {
            self.map.lock().unwrap().extend(pairs.iter().cloned());
            Ok(())
        }
        async fn delete(&self, key: &str) -> Result<(), KvError> {
            self.map.lock().unwrap().remove(key);
            Ok(())
        }
        async fn list(&self, prefix: &str) -> Result<Vec<(String, String)>, KvError> {
            self.lists.fetch_add(1, Relaxed);
            let map = self.map.lock().unwrap();
            Ok(map
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect())
        }
        async fn subscribe(&self, _prefix: &str) -> Result<KeySubscription, KvError> {
            let (sender, subscription) = KeySubscription::channel(16);
            self.senders.lock().unwrap().push(sender);
            Ok(subscription)
        }
        async fn info(&self) -> Result<BTreeMap<String, String>, KvError> {
            Ok(BTreeMap::new())
        }
        async fn addrs(&self) -> Result<Vec<SharedAddr>, KvError> {
            Ok(Vec::new())
        }
        async fn peers(&self) -> Result<Vec<PeerInfo>, KvError> {
            Ok(Vec::new())
        }
        async fn join(&self, _: &str) -> Result<(), KvError> {
            Ok(())
        }
    }

    /// Waits (with a deadline) until the view's world satisfies `wanted`.
    async fn until(view: &View, kv: &FakeKv, wanted: impl Fn(&World) -> bool) {
        let mut changes = view.changes();
        tokio::time::timeout(Duration::from_secs(10), async {
            while !wanted(&view.world(kv).await.unwrap()) {
                changes.changed().await.unwrap();
            }
        })
        .await
        .expect("the view never got there");
    }

    fn name(world: &World, id: &str) -> Option<String> {
        world.player(id).name
    }

    #[tokio::test]
    async fn changes_are_read_key_by_key_after_one_list() {
        let kv = FakeKv::default();
        kv.peer_writes("p/a/name", "alice");
        let view = View::start(kv.clone()).await.unwrap();
        assert_eq!(
            name(&view.world(&kv).await.unwrap(), "a").as_deref(),
            Some("alice")
        );
        kv.peer_writes("p/b/name", "bob");
        until(&view, &kv, |w| name(w, "b").as_deref() == Some("bob")).await;
        kv.map.lock().unwrap().remove("p/a/name");
        kv.announce(KeyEvent::Del("p/a/name".into()));
        until(&view, &kv, |w| !w.player("a").exists()).await;
        assert_eq!(
            kv.lists.load(Relaxed),
            1,
            "one list, then only reads of changed keys"
        );
        assert!(!view.world(&kv).await.unwrap().players.contains_key("a"));
    }

    #[tokio::test]
    async fn a_lagging_or_broken_subscription_catches_up_with_a_list() {
        let kv = FakeKv::default();
        let view = View::start(kv.clone()).await.unwrap();
        // A change that no event announces, then word that events were lost.
        kv.map
            .lock()
            .unwrap()
            .insert("p/c/name".into(), "carol".into());
        kv.announce(KeyEvent::Lagged);
        until(&view, &kv, |w| name(w, "c").as_deref() == Some("carol")).await;
        assert_eq!(kv.lists.load(Relaxed), 2);
        // The subscription ends: the view subscribes again and reads the world again.
        kv.map
            .lock()
            .unwrap()
            .insert("p/d/name".into(), "dave".into());
        kv.senders.lock().unwrap().clear();
        until(&view, &kv, |w| name(w, "d").as_deref() == Some("dave")).await;
        assert_eq!(kv.senders.lock().unwrap().len(), 1, "subscribed again");
        kv.peer_writes("p/e/name", "eve");
        until(&view, &kv, |w| name(w, "e").as_deref() == Some("eve")).await;
    }

    #[tokio::test]
    async fn own_writes_show_at_once_and_are_not_undone_by_an_older_read() {
        let kv = FakeKv::default();
        kv.peer_writes("p/me/loc", "fence");
        let view = View::start(kv.clone()).await.unwrap();
        let writer = Watched::new(kv.clone(), view.clone());
        writer.put("p/me/name", "me").await.unwrap();
        let world = view.world(&kv).await.unwrap();
        assert_eq!(name(&world, "me").as_deref(), Some("me"));
        // The player moves while the view reads the key back for an earlier event: the read
        // answers the old place, which must not undo the move.
        *kv.in_flight.lock().unwrap() = Some((view.clone(), "p/me/loc".into(), "bridge".into()));
        kv.announce(KeyEvent::Set("p/me/loc".into()));
        until(&view, &kv, |w| {
            w.player("me").loc.as_deref() == Some("bridge")
        })
        .await;
        kv.peer_writes("p/z/name", "zed");
        until(&view, &kv, |w| w.player("z").exists()).await;
        assert_eq!(
            view.world(&kv).await.unwrap().player("me").loc.as_deref(),
            Some("bridge")
        );
        writer.delete("p/me/name").await.unwrap();
        assert!(!view.world(&kv).await.unwrap().player("me").exists());
    }

    #[tokio::test]
    async fn a_replica_without_subscriptions_is_read_at_every_look() {
        let kv = FakeKv::default();
        let view = View::polling();
        assert_eq!(view.generation(), None);
        kv.map
            .lock()
            .unwrap()
            .insert("p/a/name".into(), "alice".into());
        assert_eq!(
            name(&view.world(&kv).await.unwrap(), "a").as_deref(),
            Some("alice")
        );
        assert_eq!(kv.lists.load(Relaxed), 1);
    }
}
