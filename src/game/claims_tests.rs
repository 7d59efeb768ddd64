//! The rule checks over in-memory worlds: each rule broken on purpose is flagged, missing
//! supports are only pending, old records are never flagged, and (by proptest) no honest
//! history, whatever order its entries arrive in, ever flags anyone.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use super::*;
use crate::game::clock::InstantClock;
use crate::game::content::{Content, RULES_RON, STORY_RON};
use crate::game::ledger;
use crate::game::player::{Change, Count};
use crate::game::sim_tests::{Log, MemKv, REPLICAS, entered_players, id, sync};
use crate::rpc::Kv;

fn report(items: &[(&str, &str)], id: &str) -> Report {
    check(&Content::embedded(), &World::from_items(items), id)
}

fn verdict(items: &[(&str, &str)], id: &str) -> Verdict {
    report(items, id).verdict()
}

#[test]
fn spending_more_than_was_counted_is_flagged() {
    let r = report(&[("p/A/mined", "5"), ("p/A/spent", "10|o=10|m=5")], "A");
    assert_eq!(r.verdict(), Verdict::Unverified);
    assert!(
        matches!(&r.broken[..], [Broken::Overspent { field, outflow: 10, had: 5 }] if field == "spent"),
        "{r:?}"
    );
    // The same with a gift counted that covers it: consistent.
    let items = [
        ("p/A/mined", "5"),
        ("p/A/spent", "10|o=10|m=5|r=B:5"),
        ("p/B/mined", "5"),
        ("p/B/gave/A", "5|o=5|m=5"),
    ];
    assert_eq!(verdict(&items, "A"), Verdict::Consistent);
    assert_eq!(verdict(&items, "B"), Verdict::Consistent);
}

#[test]
fn giving_more_than_the_giver_had_is_flagged() {
    let items = [("p/A/mined", "10"), ("p/A/gave/B", "50|o=50|m=10")];
    let r = report(&items, "A");
    assert!(
        matches!(&r.broken[..], [Broken::Overspent { field, .. }] if field == "gave/B"),
        "{r:?}"
    );
}

#[test]
fn records_that_contradict_each_other_are_flagged() {
    // Each record alone is covered by the 10 mined, but 20 went out.
    let items = [
        ("p/A/mined", "10"),
        ("p/A/spent", "10|o=10|m=10"),
        ("p/A/gave/B", "10|o=10|m=10"),
    ];
    let r = report(&items, "A");
    assert_eq!(
        r.broken,
        [Broken::Unaccounted {
            outflow: 20,
            accounted: 10
        }]
    );
}

#[test]
fn hardware_worth_more_than_was_spent_is_flagged_but_one_cpu_is_free() {
    let r = report(&[("p/A/hw/gpu", "10|s=0")], "A");
    assert_eq!(r.broken, [Broken::Hardware { value: 50, paid: 1 }]);
    // The starting cpu, or a cpu after a restart, needs nothing spent.
    assert_eq!(
        verdict(&[("p/A/hw/cpu", "1|s=0")], "A"),
        Verdict::Consistent
    );
    let bought = [
        ("p/A/mined", "9"),
        ("p/A/spent", "9|o=9|m=9"),
        ("p/A/hw/cpu", "5|s=4"),
        ("p/A/hw/gpu", "1|s=9"),
    ];
    assert_eq!(verdict(&bought, "A"), Verdict::Consistent);
}

#[test]
fn a_solved_record_short_of_the_problem_is_flagged() {
    let items = [
        ("p/A/rank", "Masters"),
        ("p/A/work/Undergraduate/1", "50"),
        ("p/A/solved/Undergraduate", "1|w=A:50"),
    ];
    let r = report(&items, "A");
    assert_eq!(
        r.broken,
        [Broken::Unsolved {
            rank: "Undergraduate".into(),
            epoch: 1,
            work: 50,
            size: 100
        }]
    );
    // Epoch 2 is 150 steps: 100 of it is not enough either.
    let items = [
        ("p/A/work/Undergraduate/2", "100"),
        ("p/A/solved/Undergraduate", "2|w=A:100"),
    ];
    assert_eq!(verdict(&items, "A"), Verdict::Unverified);
}

#[test]
fn a_solved_record_naming_too_little_work_does_not_start_the_problem_over() {
    let content = Content::embedded();
    let w = World::from_items(&[
        ("p/X/solved/Undergraduate", "1|w=X:5"),
        ("p/A/work/Undergraduate/1", "60"),
    ]);
    let p = ledger::problem(&content, &w, 0).unwrap();
    assert_eq!(
        (p.epoch, p.done),
        (1, 60),
        "everyone's work on epoch 1 stands"
    );
    let news = crate::game::news::diff(&content, (&World::default(), 0), &w, "A", 0);
    assert!(
        news.iter().all(|line| !line.text.contains("falls")),
        "{news:?}"
    );
    // One that names enough counts at once, even before all that work has arrived.
    let w = World::from_items(&[
        ("p/X/solved/Undergraduate", "1|w=X:60|w=A:40"),
        ("p/A/work/Undergraduate/1", "40"),
    ]);
    assert_eq!(ledger::problem(&content, &w, 0).unwrap().epoch, 2);
}

#[test]
fn work_after_leaving_a_rank_is_flagged() {
    let items = [
        ("p/A/rank", "Masters"),
        ("p/A/work/Undergraduate/1", "100"),
        ("p/A/solved/Undergraduate", "1|w=A:100"),
        ("p/A/work/Undergraduate/2", "7"),
    ];
    let r = report(&items, "A");
    assert_eq!(
        r.broken,
        [Broken::WorkAfterRank {
            rank: "Undergraduate".into(),
            epoch: 2
        }]
    );
}

/// The one way `items` break the rules for player A: work at a rank not held.
fn not_held(items: &[(&str, &str)]) -> Broken {
    let r = report(items, "A");
    assert!(
        matches!(&r.broken[..], [Broken::WorkAtRankNotHeld { .. }]),
        "{r:?}"
    );
    r.broken[0].clone()
}

fn not_held_at(rank: &str, epoch: u64, named: u64, promoted: Option<u64>) -> Broken {
    Broken::WorkAtRankNotHeld {
        rank: rank.into(),
        epoch,
        named,
        promoted,
    }
}

#[test]
fn work_naming_a_promotion_its_rank_cannot_have_is_flagged() {
    // The first rank needs no promotion, so work there that names one is not honest.
    let named = not_held(&[("p/A/work/Undergraduate/1", "5|p=1")]);
    assert_eq!(named, not_held_at("Undergraduate", 1, 1, None));
    // Above it, work that names none: flagged alone, and beside a promotion that stands.
    let none = not_held(&[("p/A/work/Masters/1", "5|p=0")]);
    assert_eq!(none, not_held_at("Masters", 1, 0, None));
    let none = not_held(&[
        ("p/A/work/Undergraduate/1", "100|p=0"),
        ("p/A/solved/Undergraduate", "1|w=A:100"),
        ("p/A/work/PhD/1", "5|p=0"),
    ]);
    assert_eq!(none, not_held_at("PhD", 1, 0, None));
}

#[test]
fn work_whose_promotion_the_solved_record_contradicts_is_flagged() {
    // Promoted at epoch 1 (the record stands), but the work at Masters says epoch 2.
    let items = [
        ("p/A/rank", "Masters"),
        ("p/A/work/Undergraduate/1", "100|p=0"),
        ("p/A/solved/Undergraduate", "1|w=A:100"),
        ("p/A/work/Masters/1", "5|p=2"),
    ];
    assert_eq!(not_held(&items), not_held_at("Masters", 1, 2, Some(1)));
    // A record from before supports says the same: its epoch is read all the same.
    let items = [
        ("p/A/work/Undergraduate/1", "100"),
        ("p/A/solved/Undergraduate", "1"),
        ("p/A/work/Masters/1", "5|p=2"),
    ];
    assert_eq!(not_held(&items), not_held_at("Masters", 1, 2, Some(1)));
}

#[test]
fn work_at_one_rank_naming_two_promotions_is_flagged_before_the_solved_record_arrives() {
    let items = [
        ("p/A/work/Masters/1", "5|p=1"),
        ("p/A/work/Masters/2", "5|p=3"),
    ];
    assert_eq!(not_held(&items), not_held_at("Masters", 2, 3, Some(1)));
}

#[test]
fn work_on_a_rank_after_the_promotion_named_above_it_is_flagged_before_the_solved_record() {
    // Work at Masters says A left Undergraduate at epoch 2; A then worked its epoch 3.
    let items = [
        ("p/A/work/Undergraduate/3", "5|p=0"),
        ("p/A/work/Masters/1", "5|p=2"),
    ];
    let r = report(&items, "A");
    let after = Broken::WorkAfterRank {
        rank: "Undergraduate".into(),
        epoch: 3,
    };
    assert_eq!(r.broken, [after], "{r:?}");
    // Work on the epoch of the promotion, or before it, is honest.
    let items = [
        ("p/A/work/Undergraduate/1", "5|p=0"),
        ("p/A/work/Undergraduate/2", "5|p=0"),
        ("p/A/work/Masters/1", "5|p=2"),
    ];
    assert_eq!(verdict(&items, "A"), Verdict::Pending);
}

#[test]
fn work_naming_a_promotion_is_pending_until_the_solved_record_arrives() {
    let mut items = vec![("p/A/rank", "Masters"), ("p/A/work/Masters/1", "3|p=2")];
    let r = report(&items, "A");
    assert_eq!(r.verdict(), Verdict::Pending, "{r:?}");
    assert_eq!(
        r.waiting.iter().collect::<Vec<_>>(),
        [&Waiting::Solved("Undergraduate".into())]
    );
    // The record it names, then the work that record names: consistent.
    items.push(("p/A/solved/Undergraduate", "2|w=A:150"));
    assert_eq!(verdict(&items, "A"), Verdict::Pending);
    items.push(("p/A/work/Undergraduate/2", "150|p=0"));
    assert_eq!(verdict(&items, "A"), Verdict::Consistent);
    // A helper's promotion names others' work and none of the helper's own need be last.
    let items = [
        ("p/A/rank", "Masters"),
        ("p/A/work/Undergraduate/1", "40|p=0"),
        ("p/A/solved/Undergraduate", "1|w=B:60|w=A:40"),
        ("p/A/work/Masters/1", "7|p=1"),
        ("p/B/work/Undergraduate/1", "60|p=0"),
    ];
    assert_eq!(verdict(&items, "A"), Verdict::Consistent);
    // At the first rank nothing is awaited.
    let first = [("p/A/work/Undergraduate/1", "3|p=0")];
    assert_eq!(verdict(&first, "A"), Verdict::Consistent);
}

#[test]
fn old_work_records_are_read_and_never_checked_against_promotions() {
    // A bare number names no promotion: above the first rank without a solved record it
    // is pending (as before supports), and with one that stands it is consistent.
    let old = [("p/A/work/Masters/1", "3")];
    let a = World::from_items(&old).player("A");
    assert_eq!(a.work[&("Masters".to_owned(), 1)], 3);
    assert_eq!(verdict(&old, "A"), Verdict::Pending);
    let old = [
        ("p/A/work/Undergraduate/1", "100"),
        ("p/A/solved/Undergraduate", "1"),
        ("p/A/work/Masters/1", "3"),
        ("p/A/work/Masters/2", "4|p=1"),
    ];
    assert_eq!(verdict(&old, "A"), Verdict::Consistent);
}

#[test]
fn supports_that_do_not_read_are_flagged() {
    for (key, value) in [
        ("p/A/spent", "1|o=1"),
        ("p/A/gave/B", "1|junk"),
        ("p/A/hw/cpu", "1|s=x"),
        ("p/A/solved/Undergraduate", "1|w=A"),
        ("p/A/work/Masters/1", "1|p=x"),
    ] {
        assert_eq!(verdict(&[(key, value)], "A"), Verdict::Unverified, "{key}");
    }
}

#[test]
fn missing_supports_are_pending_until_they_arrive() {
    // Own counters not here yet.
    let r = report(&[("p/A/spent", "4|o=4|m=4")], "A");
    assert_eq!(r.waiting.iter().collect::<Vec<_>>(), [&Waiting::Mined(4)]);
    assert_eq!(r.verdict(), Verdict::Pending);
    assert_eq!(verdict(&[("p/A/hw/cpu", "5|s=4")], "A"), Verdict::Pending);
    // A gift from another player not here yet, then here.
    let mut items = vec![("p/A/mined", "1"), ("p/A/spent", "5|o=5|m=1|r=B:4")];
    assert_eq!(verdict(&items, "A"), Verdict::Pending);
    items.push(("p/B/gave/A", "3|o=3|m=3"));
    assert_eq!(verdict(&items, "A"), Verdict::Pending, "not all of it yet");
    items.push(("p/B/mined", "9"));
    items[3] = ("p/B/gave/A", "4|o=4|m=9");
    assert_eq!(verdict(&items, "A"), Verdict::Consistent);
    // A rank whose solved records are not here; a solved record whose work is not.
    assert_eq!(verdict(&[("p/A/rank", "PhD")], "A"), Verdict::Pending);
    let items = [
        ("p/A/rank", "Masters"),
        ("p/A/solved/Undergraduate", "1|w=A:60|w=B:40"),
        ("p/A/work/Undergraduate/1", "60"),
    ];
    let r = report(&items, "A");
    assert_eq!(r.verdict(), Verdict::Pending);
    assert!(r.waiting.contains(&Waiting::Work {
        player: "B".into(),
        rank: "Undergraduate".into(),
        epoch: 1,
        needed: 40
    }));
    // Work at a rank whose promotion is not here yet.
    assert_eq!(
        verdict(&[("p/A/work/Masters/1", "3")], "A"),
        Verdict::Pending
    );
}

#[test]
fn old_records_without_supports_are_never_flagged() {
    // An honest old character, and an old one whose counters are still arriving.
    let old = [
        ("p/A/rank", "Masters"),
        ("p/A/mined", "30"),
        ("p/A/spent", "20"),
        ("p/A/gave/B", "5"),
        ("p/A/hw/cpu", "21"),
        ("p/A/work/Undergraduate/1", "100"),
        ("p/A/solved/Undergraduate", "1"),
    ];
    assert_eq!(verdict(&old, "A"), Verdict::Consistent);
    let arriving = [
        ("p/A/rank", "Masters"),
        ("p/A/spent", "20"),
        ("p/A/hw/cpu", "21"),
        ("p/A/solved/Undergraduate", "1"),
    ];
    assert_eq!(verdict(&arriving, "A"), Verdict::Pending);
    // One new record beside old ones: the old ones still cannot be held against it.
    let mixed = [
        ("p/A/mined", "30"),
        ("p/A/spent", "25|o=30|m=30"),
        ("p/A/gave/B", "5"),
        ("p/A/gave/C", "5"),
    ];
    assert_eq!(verdict(&mixed, "A"), Verdict::Consistent);
}

#[test]
fn an_unverified_players_gifts_count_for_nothing_until_they_are_consistent() {
    let content = Content::embedded();
    let mut items = vec![
        ("p/C/mined", "1"),
        ("p/C/gave/B", "100|o=100|m=1"),
        ("p/B/mined", "2"),
    ];
    let w = World::from_items(&items);
    assert_eq!(
        unverified(&content, &w).into_iter().collect::<Vec<_>>(),
        ["C"]
    );
    assert_eq!(ledger::balance(&content, &w, "B"), 2);
    assert_eq!(ledger::balances(&content, &w)["B"], 2);
    let (held, _) = ledger::total_coins(&w);
    assert_eq!(held, 102, "the conservation sum still counts it for B");
    // C's state becomes consistent: the gift counts.
    items[0] = ("p/C/mined", "100");
    items[1] = ("p/C/gave/B", "100|o=100|m=100");
    let w = World::from_items(&items);
    assert!(unverified(&content, &w).is_empty());
    assert_eq!(ledger::balance(&content, &w, "B"), 102);
}

#[test]
fn enough_names_the_largest_amounts_until_they_cover_the_need() {
    let amounts: BTreeMap<&str, u64> = [("a", 5), ("b", 50), ("c", 20), ("d", 0)].into();
    let named = |need| {
        enough(amounts.clone(), need)
            .into_keys()
            .collect::<Vec<_>>()
    };
    assert_eq!(named(0), Vec::<String>::new());
    assert_eq!(named(50), ["b"]);
    assert_eq!(named(60), ["b", "c"]);
    assert_eq!(named(1000), ["a", "b", "c"]);
}

/// Players 0..PLAYERS; player p lives on replica p % REPLICAS.
const PLAYERS: usize = 3;

#[derive(Clone, Debug)]
enum Op {
    Mine(usize, u64),
    Buy(usize, usize, Option<u64>),
    Give(usize, usize, u64),
    Work(usize),
    Break(usize, u64),
    Claim(usize),
    /// Copies player p's keys from their home replica to replica r.
    Sync(usize, usize),
}

fn op() -> impl Strategy<Value = Op> {
    let p = 0..PLAYERS;
    prop_oneof![
        2 => (p.clone(), 1..200u64).prop_map(|(p, n)| Op::Mine(p, n)),
        2 => (p.clone(), 0..3usize, proptest::option::of(1..20u64))
            .prop_map(|(p, hw, n)| Op::Buy(p, hw, n)),
        2 => (p.clone(), 0..PLAYERS, 1..60u64).prop_map(|(p, to, n)| Op::Give(p, to, n)),
        8 => p.clone().prop_map(Op::Work),
        1 => (p.clone(), any::<u64>()).prop_map(|(p, pick)| Op::Break(p, pick)),
        1 => p.clone().prop_map(Op::Claim),
        4 => (p, 0..REPLICAS).prop_map(|(p, r)| Op::Sync(p, r)),
    ]
}

/// Rules with small problems, so that random play is promoted now and then.
fn small_problems() -> Arc<Content> {
    let rules = RULES_RON
        .replace("problem: Some(100)", "problem: Some(30)")
        .replace("problem: Some(1000)", "problem: Some(60)");
    Arc::new(Content::parse(&rules, STORY_RON).unwrap())
}

/// Plays `ops` honestly (the real player tasks, on replicas that see each other only when
/// synced) and returns every write, in the order made.
async fn honest_history(content: &Arc<Content>, ops: Vec<Op>) -> Vec<(String, String)> {
    let log = Log::default();
    let replicas: Vec<MemKv> = (0..REPLICAS).map(|_| MemKv::recording(&log)).collect();
    let clock = Arc::new(InstantClock::new(0));
    let handles = entered_players(&replicas, PLAYERS, content, &clock).await;
    for op in ops {
        let (player, change) = match op {
            Op::Mine(p, n) => (p, Change::Mined(n)),
            Op::Buy(p, hw, n) => {
                let hw = content.rules.hardware[hw].id.clone();
                let count = n.map_or(Count::Max, Count::Exactly);
                (p, Change::Buy { hw, count })
            }
            Op::Give(p, to, amount) => (p, Change::Give { to: id(to), amount }),
            Op::Work(p) => {
                let home = replicas[p % REPLICAS].list("p/").await.unwrap();
                let rank = ledger::rank_index(content, &World::from_pairs(home).player(&id(p)));
                (p, Change::Work { rank })
            }
            Op::Break(p, pick) => (p, Change::Break { pick }),
            Op::Claim(p) => (p, Change::Claim),
            Op::Sync(p, r) => {
                sync(&replicas, p, r);
                continue;
            }
        };
        handles[player].apply(change).await.unwrap();
    }
    log.lock().unwrap().clone()
}

/// Delivers `history` to a fresh replica in the order `seed` shuffles it into (a key keeps
/// its latest write, whatever arrives later), and checks after every entry that nobody is
/// flagged; once everything has arrived, that everybody is consistent.
fn deliver(
    content: &Content,
    history: &[(String, String)],
    seed: u64,
) -> Result<(), TestCaseError> {
    let mut order: Vec<usize> = (0..history.len()).collect();
    order.shuffle(&mut StdRng::seed_from_u64(seed));
    let mut replica: BTreeMap<&str, (usize, &str)> = BTreeMap::new();
    for (step, &i) in order.iter().enumerate() {
        let (key, value) = &history[i];
        let newer = replica.get(key.as_str()).is_none_or(|(seen, _)| *seen < i);
        if newer {
            replica.insert(key, (i, value));
        }
        let world = World::from_pairs(
            replica
                .iter()
                .map(|(k, (_, v))| (k.to_string(), v.to_string())),
        );
        for p in world.players.keys() {
            let report = check(content, &world, p);
            prop_assert!(
                report.broken.is_empty(),
                "{p} flagged after {} of {} entries: {:?}",
                step + 1,
                history.len(),
                report
            );
        }
    }
    let world = World::from_pairs(history.iter().cloned());
    for p in world.players.keys() {
        let report = check(content, &world, p);
        prop_assert_eq!(report.verdict(), Verdict::Consistent, "{} {:?}", p, report);
    }
    Ok(())
}

/// The world at the end of `history` with one player's client cheating afterwards, in each
/// of the ways a rule can tell: each is flagged, and the cheater's gifts stop counting.
fn cheat(content: &Content, history: &[(String, String)]) -> Result<(), TestCaseError> {
    let honest = World::from_pairs(history.iter().cloned());
    let cheater = id(0);
    let me = honest.player(&cheater);
    let key = |field: &str| format!("p/{cheater}/{field}");
    let outflow = me.spent + me.gave.values().sum::<u64>();
    let gifts: u64 = honest
        .players
        .values()
        .filter_map(|p| p.gave.get(&cheater))
        .sum();
    let more = me.mined + gifts + 1;
    let held = ledger::rank_index(content, &me);
    let rank = |index: usize| {
        content
            .rank(index.min(content.rules.ranks.len() - 1))
            .id
            .clone()
    };
    // Work at a rank not held that names a promotion into it the solved record contradicts,
    // or (not promoted yet) two work records there that contradict each other.
    let contradicted = match held
        .checked_sub(1)
        .and_then(|below| me.solved.get(&rank(below)))
    {
        Some(&promoted) => vec![(
            key(&field::work(&rank(held), 1)),
            format!("1|p={}", promoted + 1),
        )],
        None => vec![
            (key(&field::work(&rank(1), 1)), "1|p=1".to_owned()),
            (key(&field::work(&rank(1), 2)), "1|p=2".to_owned()),
        ],
    };
    let cheats = [
        // Hardware never paid for.
        vec![(key("hw/dark_matter"), format!("1000000|s={}", me.spent))],
        // A gift of more than was ever had, by its own account.
        vec![(
            key(&format!("gave/{}", id(1))),
            format!("{more}|o={}|m={}", outflow + more, me.mined),
        )],
        // A promotion by a problem that never fell.
        vec![(key("solved/Masters"), format!("1|w={cheater}:1"))],
        // Work above the rank held that names no promotion into it.
        vec![(key(&field::work(&rank(held + 1), 1)), "1|p=0".to_owned())],
        // Work at the first rank that names a promotion into it.
        vec![(key(&field::work(&rank(0), 1)), "1|p=1".to_owned())],
        contradicted,
    ];
    for cheat in cheats {
        let mut pairs = history.to_vec();
        let key = cheat[0].0.clone();
        pairs.extend(cheat);
        let world = World::from_pairs(pairs);
        prop_assert_eq!(
            check(content, &world, &cheater).verdict(),
            Verdict::Unverified,
            "{}",
            key
        );
        let before = ledger::balances(content, &honest)[id(1).as_str()];
        let after = ledger::balances(content, &world)[id(1).as_str()];
        let from_cheater = honest
            .player(&cheater)
            .gave
            .get(&id(1))
            .copied()
            .unwrap_or(0);
        prop_assert!(
            after <= before.saturating_sub(from_cheater),
            "{} {} {}",
            before,
            after,
            from_cheater
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_game_with_promotions_gifts_and_breakdowns_is_never_flagged_in_any_order() {
    let content = small_problems();
    let mut ops = vec![Op::Mine(0, 150), Op::Mine(1, 100), Op::Buy(0, 0, Some(40))];
    ops.extend([Op::Give(1, 0, 60), Op::Sync(1, 0), Op::Buy(1, 0, None)]);
    // Both work on the same problem from replicas that see each other only now and then.
    for round in 0..6 {
        ops.extend([Op::Work(0), Op::Work(1), Op::Sync(round % 2, 1 - round % 2)]);
    }
    ops.extend([Op::Sync(0, 1), Op::Sync(1, 0), Op::Claim(0), Op::Claim(1)]);
    // Work at the rank each was promoted to, one as finisher and one as helper.
    ops.extend([Op::Work(0), Op::Work(1), Op::Sync(0, 1), Op::Sync(1, 0)]);
    ops.extend([
        Op::Mine(0, 100),
        Op::Give(0, 2, 5),
        Op::Sync(0, 0),
        Op::Buy(2, 0, None),
    ]);
    ops.extend([Op::Buy(0, 1, None), Op::Break(0, 1), Op::Break(0, 0)]);
    let history = honest_history(&content, ops).await;
    let written = |part: &str| history.iter().filter(|(k, _)| k.contains(part)).count();
    assert!(written("/solved/") >= 2, "both promoted: {history:?}");
    assert!(
        written("/hw/gpu") >= 2,
        "a gpu bought and broken: {history:?}"
    );
    assert!(written("/gave/") >= 2, "{history:?}");
    assert!(
        written("/work/Masters/") >= 2,
        "work after promotion: {history:?}"
    );
    // Every work record names the promotion into its rank: none at the first, the player's
    // own solved record for the rank below above it.
    let world = World::from_pairs(history.iter().cloned());
    for p in world.players.values() {
        for ((rank, epoch), read) in &p.supports.work {
            let promoted = match content.rank_index(rank) {
                Some(0) | None => 0,
                Some(index) => p.solved[&content.rank(index - 1).id],
            };
            assert_eq!(read, &Read::Named(promoted), "{} {rank} {epoch}", p.id);
        }
    }
    for seed in 0..40 {
        deliver(&content, &history, seed).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn no_honest_history_is_flagged_whatever_order_it_arrives_in(
        ops in proptest::collection::vec(op(), 0..150),
        seeds in proptest::collection::vec(any::<u64>(), 3),
    ) {
        let content = small_problems();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let history = runtime.block_on(honest_history(&content, ops));
        for seed in seeds {
            deliver(&content, &history, seed)?;
        }
        cheat(&content, &history)?;
    }
}

/// How long one look's checks take in a large world (every look at the world checks every
/// player once for balances, and the leaderboard once more). Run with
/// `cargo test --release --lib game::claims::tests::checking_a_large_world -- --ignored --nocapture`.
#[test]
#[ignore]
fn checking_a_large_world() {
    const PLAYERS: usize = 2000;
    let content = Content::embedded();
    let mut pairs = Vec::new();
    for p in 0..PLAYERS {
        let (me, next) = (id(p), id((p + 1) % PLAYERS));
        let key = |field: &str| format!("p/{me}/{field}");
        pairs.extend([
            (key("name"), format!("n{p}")),
            (key("rank"), "Masters".to_owned()),
            (key("mined"), "1000".to_owned()),
            (key("spent"), format!("500|o=600|m=1000|r={next}:0")),
            (key(&format!("gave/{next}")), "100|o=600|m=1000".to_owned()),
            (key("hw/cpu"), "451|s=450".to_owned()),
            (key("hw/gpu"), "10|s=500".to_owned()),
            (key("work/Undergraduate/1"), "100|p=0".to_owned()),
            (key("solved/Undergraduate"), format!("1|w={me}:100")),
            (key("work/Masters/1"), "5|p=1".to_owned()),
        ]);
        for slot in 0..64 {
            pairs.push((
                key(&format!("chat/{slot}")),
                format!("{slot}|0|shout|hello"),
            ));
        }
    }
    let world = World::from_pairs(pairs);
    let start = std::time::Instant::now();
    let rounds = 10;
    for _ in 0..rounds {
        assert!(unverified(&content, &world).is_empty());
    }
    println!(
        "{PLAYERS} players: {:?} per check of everyone",
        start.elapsed() / rounds
    );
}
