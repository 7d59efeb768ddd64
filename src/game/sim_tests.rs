//! Property test of the coin rules over simulated replicas: players on several in-memory
//! replicas mine, buy and give in a generated order, and replicas sync each player's keys
//! from the player's home in a generated order too. Whatever the order, a player's own
//! replica never shows them in debt, and once everything is synced every replica agrees that
//! balances plus spending equal mining.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use proptest::prelude::*;

use super::clock::InstantClock;
use super::content::Content;
use super::ledger;
use super::player::{Change, Count, Outcome, PlayerHandle};
use super::schema::World;
use crate::rpc::client::SharedAddr;
use crate::rpc::{Kv, KvError, PeerInfo};

/// An in-memory replica; replicas made with [`MemKv::recording`] also append every write to
/// one shared log, in the order made (a key's writes are in its version order there).
#[derive(Clone, Default)]
pub(super) struct MemKv(Arc<Mutex<BTreeMap<String, String>>>, Option<Log>);

/// Every write to the replicas sharing it, in order.
pub(super) type Log = Arc<Mutex<Vec<(String, String)>>>;

impl MemKv {
    /// A replica whose writes go to `log` as well.
    pub(super) fn recording(log: &Log) -> MemKv {
        MemKv(Arc::default(), Some(log.clone()))
    }

    pub(super) fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        // A poisoned lock only follows a panic in another test thread.
        self.0.lock().unwrap()
    }

    fn record(&self, pairs: &[(String, String)]) {
        if let Some(log) = &self.1 {
            log.lock().unwrap().extend(pairs.iter().cloned());
        }
    }
}

impl Kv for MemKv {
    async fn get(&self, key: &str) -> Result<Option<String>, KvError> {
        Ok(self.map().get(key).cloned())
    }
    async fn put(&self, key: &str, value: &str) -> Result<(), KvError> {
        self.map().insert(key.to_owned(), value.to_owned());
        self.record(&[(key.to_owned(), value.to_owned())]);
        Ok(())
    }
    async fn put_many(&self, pairs: &[(String, String)]) -> Result<(), KvError> {
        self.map().extend(pairs.iter().cloned());
        self.record(pairs);
        Ok(())
    }
    async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.map().remove(key);
        Ok(())
    }
    async fn list(&self, prefix: &str) -> Result<Vec<(String, String)>, KvError> {
        let map = self.map();
        Ok(map
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
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
        Err(KvError::Join {
            kind: crate::rpc::JoinKind::NoNetwork,
            message: "no network".into(),
        })
    }
}

/// Players 0..PLAYERS; player p lives on replica p % REPLICAS.
const PLAYERS: usize = 4;
pub(super) const REPLICAS: usize = 2;

#[derive(Clone, Debug)]
enum Op {
    Mine(usize, u64),
    Buy(usize, Option<u64>),
    Give(usize, usize, u64),
    /// Copies player p's keys from their home replica to replica r.
    Sync(usize, usize),
}

fn op() -> impl Strategy<Value = Op> {
    let p = 0..PLAYERS;
    prop_oneof![
        (p.clone(), 1..50u64).prop_map(|(p, n)| Op::Mine(p, n)),
        (p.clone(), proptest::option::of(1..30u64)).prop_map(|(p, n)| Op::Buy(p, n)),
        (p.clone(), 0..PLAYERS, 1..80u64).prop_map(|(p, to, n)| Op::Give(p, to, n)),
        (p, 0..REPLICAS).prop_map(|(p, r)| Op::Sync(p, r)),
    ]
}

pub(super) fn id(p: usize) -> String {
    format!("player{p}")
}

/// Copies player `p`'s keys from its home replica to replica `to`.
pub(super) fn sync(replicas: &[MemKv], p: usize, to: usize) {
    let prefix = format!("p/{}/", id(p));
    let from = replicas[p % REPLICAS].map().clone();
    let mut target = replicas[to].map();
    for (k, v) in from
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
    {
        target.insert(k.clone(), v.clone());
    }
}

/// Credit minus debit of `p` in `world`, without clamping.
fn raw_balance(world: &World, p: &str) -> i128 {
    let me = world.player(p);
    let given: i128 = me.gave.values().map(|&n| i128::from(n)).sum();
    let received: i128 = world
        .players
        .values()
        .filter(|o| o.id != p)
        .filter_map(|o| o.gave.get(p))
        .map(|&n| i128::from(n))
        .sum();
    i128::from(me.mined) + received - i128::from(me.spent) - given
}

/// `players` player tasks spread over `replicas` in turn, each entered as `n<p>`, and then
/// every player's keys synced to every replica.
pub(super) async fn entered_players(
    replicas: &[MemKv],
    players: usize,
    content: &Arc<Content>,
    clock: &Arc<InstantClock>,
) -> Vec<PlayerHandle> {
    let mut handles = Vec::new();
    for p in 0..players {
        let kv = replicas[p % replicas.len()].clone();
        let handle = PlayerHandle::spawn(kv, id(p), content.clone(), clock.clone());
        let enter = Change::Enter {
            name: format!("n{p}"),
            tell_key: None,
        };
        handle.apply(enter).await.unwrap();
        handles.push(handle);
    }
    for p in 0..players {
        for r in 0..replicas.len() {
            sync(replicas, p, r);
        }
    }
    handles
}

async fn play(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let replicas: Vec<MemKv> = (0..REPLICAS).map(|_| MemKv::default()).collect();
    let content = Content::embedded();
    let clock = Arc::new(InstantClock::new(0));
    let handles = entered_players(&replicas, PLAYERS, &content, &clock).await;
    for op in ops {
        let (player, change) = match op {
            Op::Mine(p, n) => (p, Change::Mined(n)),
            Op::Buy(p, n) => {
                let count = n.map_or(Count::Max, Count::Exactly);
                let hw = "cpu".to_owned();
                (p, Change::Buy { hw, count })
            }
            Op::Give(p, to, amount) => (p, Change::Give { to: id(to), amount }),
            Op::Sync(p, r) => {
                sync(&replicas, p, r);
                continue;
            }
        };
        handles[player].apply(change).await.unwrap();
        let home = World::from_pairs(replicas[player % REPLICAS].list("p/").await.unwrap());
        prop_assert!(
            raw_balance(&home, &id(player)) >= 0,
            "player {player} in debt"
        );
    }
    for p in 0..PLAYERS {
        for r in 0..REPLICAS {
            sync(&replicas, p, r);
        }
    }
    let first = World::from_pairs(replicas[0].list("p/").await.unwrap());
    for replica in &replicas {
        let world = World::from_pairs(replica.list("p/").await.unwrap());
        prop_assert_eq!(&world, &first, "replicas disagree after a full sync");
    }
    let (held, mined) = ledger::total_coins(&first);
    prop_assert_eq!(held, mined, "coins were created or destroyed");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]
    #[test]
    fn no_order_of_trades_and_syncs_creates_or_destroys_coins(ops in proptest::collection::vec(op(), 0..80)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(play(ops))?;
    }
}

#[tokio::test]
async fn chat_is_a_ring_so_the_world_does_not_grow() {
    let kv = MemKv::default();
    let content = Content::embedded();
    let clock = Arc::new(InstantClock::new(0));
    let handle = PlayerHandle::spawn(kv.clone(), "talker".into(), content.clone(), clock);
    let name = "talker".to_owned();
    handle
        .apply(Change::Enter {
            name,
            tell_key: None,
        })
        .await
        .unwrap();
    for i in 1..=150u64 {
        let change = Change::Chat {
            scope: super::schema::Scope::Shout,
            text: format!("line {i}"),
        };
        handle.apply(change).await.unwrap();
    }
    let world = World::from_pairs(kv.list("p/").await.unwrap());
    let chat = &world.player("talker").chat;
    let ring = usize::try_from(content.rules.chat.ring).unwrap();
    assert_eq!(chat.len(), ring);
    assert_eq!(chat.last().unwrap().text, "line 150");
    assert_eq!(chat.first().unwrap().seq, 150 - content.rules.chat.ring + 1);
    assert_eq!(kv.list("p/talker/chat/").await.unwrap().len(), ring);
}

#[tokio::test]
async fn counters_never_saturate_into_free_coins() {
    // Two peers each claim to have given `me` u64::MAX coins: absurd, but any peer can write
    // its own counters. Whatever the balance, every coin paid or given must be counted.
    let kv = MemKv::default();
    let content = Content::embedded();
    let clock = Arc::new(InstantClock::new(0));
    let handle = PlayerHandle::spawn(kv.clone(), "me".into(), content, clock);
    let name = "me".to_owned();
    handle
        .apply(Change::Enter {
            name,
            tell_key: None,
        })
        .await
        .unwrap();
    let max = u64::MAX.to_string();
    for (key, value) in [
        ("p/rich1/name", "rich1"),
        ("p/rich1/gave/me", max.as_str()),
        ("p/rich2/name", "rich2"),
        ("p/rich2/gave/me", max.as_str()),
    ] {
        kv.put(key, value).await.unwrap();
    }
    let (mut paid, mut units_bought) = (0u128, 0u128);
    for count in [Count::Max, Count::Max, Count::Exactly(5)] {
        let hw = "cpu".to_owned();
        if let Outcome::Bought { units, cost } =
            handle.apply(Change::Buy { hw, count }).await.unwrap()
        {
            paid += u128::from(cost);
            units_bought += u128::from(units);
        }
    }
    let mut gave: u128 = 0;
    for _ in 0..3 {
        let to = "rich1".to_owned();
        let amount = u64::MAX / 2;
        if handle.apply(Change::Give { to, amount }).await.unwrap() == Outcome::Gave {
            gave += u128::from(amount);
        }
    }
    let world = World::from_pairs(kv.list("p/").await.unwrap());
    let me = world.player("me");
    assert_eq!(
        u128::from(me.spent),
        paid,
        "a purchase was not fully paid for"
    );
    assert_eq!(
        u128::from(me.gave["rich1"]),
        gave,
        "a gift was not fully counted"
    );
    assert_eq!(
        u128::from(me.hardware["cpu"]),
        1 + units_bought,
        "hardware bought was lost"
    );
}

/// A replica whose `JOIN` waits until the test lets it go (a far peer being dialled).
#[derive(Clone)]
struct SlowJoinKv {
    inner: MemKv,
    gate: Arc<tokio::sync::Semaphore>,
}

impl Kv for SlowJoinKv {
    async fn get(&self, key: &str) -> Result<Option<String>, KvError> {
        self.inner.get(key).await
    }
    async fn put(&self, key: &str, value: &str) -> Result<(), KvError> {
        self.inner.put(key, value).await
    }
    async fn put_many(&self, pairs: &[(String, String)]) -> Result<(), KvError> {
        self.inner.put_many(pairs).await
    }
    async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.inner.delete(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<(String, String)>, KvError> {
        self.inner.list(prefix).await
    }
    async fn info(&self) -> Result<BTreeMap<String, String>, KvError> {
        self.inner.info().await
    }
    async fn addrs(&self) -> Result<Vec<SharedAddr>, KvError> {
        self.inner.addrs().await
    }
    async fn peers(&self) -> Result<Vec<PeerInfo>, KvError> {
        self.inner.peers().await
    }
    async fn join(&self, _: &str) -> Result<(), KvError> {
        let _permit = self.gate.acquire().await;
        Ok(())
    }
}

/// While the session waits on a slow command, a fast mining job keeps reporting progress to
/// it; stopping that job afterwards (`quit`) must not wait forever for a job that is itself
/// waiting for room to say it ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_job_after_the_session_was_busy_does_not_hang() {
    use super::events::{Activity, Event, Input};
    use super::session::{self, SessionOptions};
    use std::time::Duration;
    for seed in 0..8 {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let kv = SlowJoinKv {
            inner: MemKv::default(),
            gate: gate.clone(),
        };
        let options = SessionOptions {
            name: Some("miner".into()),
            no_pauses: true,
            seed: Some(seed),
            clock: Some(Arc::new(InstantClock::new(0))),
            player_id: Some("miner".into()),
            ..SessionOptions::default()
        };
        let (inputs, mut events) = session::spawn(kv, options);
        let (attempts_tx, mut attempts) = tokio::sync::mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                match event {
                    Event::Progress(Some(progress)) if progress.activity == Activity::Mining => {
                        let _ = attempts_tx.send(());
                    }
                    Event::Quit => return true,
                    _ => {}
                }
            }
            false
        });
        for line in ["mine 1000", "join /ip4/192.0.2.1/tcp/1", "quit"] {
            inputs.send(Input::Line(line.into())).await.unwrap();
        }
        // The session is stuck in `join` while the job mines on.
        for _ in 0..200 {
            attempts.recv().await.unwrap();
        }
        gate.add_permits(1);
        let quit = tokio::time::timeout(Duration::from_secs(20), reader).await;
        assert!(
            matches!(quit, Ok(Ok(true))),
            "seed {seed}: the session hung on quit"
        );
    }
}

/// `join` waits for a dial that may take many seconds: the game answers other commands
/// meanwhile and reports the join when it is done.
#[tokio::test]
async fn input_stays_live_while_a_join_dials() {
    use super::events::{Event, Input};
    use super::session::{self, SessionOptions};
    use std::time::Duration;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let kv = SlowJoinKv {
        inner: MemKv::default(),
        gate: gate.clone(),
    };
    let options = SessionOptions {
        name: Some("joiner".into()),
        no_pauses: true,
        seed: Some(1),
        clock: Some(Arc::new(InstantClock::new(0))),
        player_id: Some("joiner".into()),
        ..SessionOptions::default()
    };
    let (inputs, mut events) = session::spawn(kv, options);
    for line in ["join /ip4/192.0.2.1/tcp/1", "stats"] {
        inputs.send(Input::Line(line.into())).await.unwrap();
    }
    let mut wait_for = async |wanted: &str| {
        let found = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(event) = events.recv().await {
                if matches!(&event, Event::Line(line) if line.text.starts_with(wanted)) {
                    return true;
                }
            }
            false
        })
        .await;
        assert!(matches!(found, Ok(true)), "no {wanted:?}");
    };
    wait_for("Name: joiner").await;
    gate.add_permits(1);
    wait_for("Joined /ip4/192.0.2.1/tcp/1").await;
}
