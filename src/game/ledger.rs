//! What the counters add up to: balances, computing power, ranks and the shared progress on
//! each rank's problem. Pure functions over a [`World`] snapshot; nothing here writes.
//!
//! A balance is `mined - spent - sum(gave) + sum over others of their gave/<me>`: every term
//! is a counter that only grows and has one writer, so no interleaving of writes on any
//! number of replicas can create coins; the sum over all players of balance plus spent is
//! always the sum of mined (see [`total_coins`]).

use std::collections::{BTreeMap, BTreeSet};

use super::claims;
use super::content::Content;
use super::schema::{PlayerRecord, World};

/// Coins `id` can spend, as far as this snapshot knows. Gifts not yet replicated here are not
/// counted, so the true balance is never below this; nor are gifts from a player whose claims
/// break the rules (see `claims`): they count for nothing until that player's state is
/// consistent.
pub fn balance(content: &Content, world: &World, id: &str) -> u64 {
    let received: u128 = counted_gifts(content, world, id)
        .values()
        .map(|&n| u128::from(n))
        .sum();
    settle(&world.player(id), received)
}

/// The gifts to `id` that count, by giver: from every other player whose claims hold (only
/// the givers are checked, so a balance costs little in a large world).
pub fn counted_gifts<'a>(content: &Content, world: &'a World, id: &str) -> BTreeMap<&'a str, u64> {
    world
        .players
        .values()
        .filter(|p| p.id != id)
        .filter_map(|p| Some((p.id.as_str(), *p.gave.get(id)?)))
        .filter(|(giver, _)| !claims::is_unverified(content, world, giver))
        .collect()
}

/// Every player's balance, in one pass over the gifts (calling [`balance`] for each player
/// would be quadratic in the number of players).
pub fn balances<'a>(content: &Content, world: &'a World) -> BTreeMap<&'a str, u64> {
    balances_without(world, &claims::unverified(content, world))
}

/// Every player's balance, the gifts of the players in `skipped` left out.
fn balances_without<'a>(world: &'a World, skipped: &BTreeSet<String>) -> BTreeMap<&'a str, u64> {
    let mut received: BTreeMap<&str, u128> = BTreeMap::new();
    for p in world.players.values().filter(|p| !skipped.contains(&p.id)) {
        for (to, &n) in p.gave.iter().filter(|(to, _)| **to != p.id) {
            *received.entry(to.as_str()).or_default() += u128::from(n);
        }
    }
    world
        .players
        .values()
        .map(|p| {
            let got = received.get(p.id.as_str()).copied().unwrap_or(0);
            (p.id.as_str(), settle(p, got))
        })
        .collect()
}

/// A player's balance given the gifts they received: clamped at zero and at u64::MAX.
fn settle(me: &PlayerRecord, received: u128) -> u64 {
    let given: u128 = me.gave.values().map(|&n| u128::from(n)).sum();
    let credit = u128::from(me.mined) + received;
    let debit = u128::from(me.spent) + given;
    u64::try_from(credit.saturating_sub(debit)).unwrap_or(u64::MAX)
}

/// Sum of balances and of spent coins over every player, and the sum of coins mined: the two
/// are equal in every consistent snapshot (the conservation law the tests check). Every gift
/// counts here, trusted or not.
pub fn total_coins(world: &World) -> (u128, u128) {
    let balances = balances_without(world, &BTreeSet::new());
    let held: u128 = world
        .players
        .values()
        .map(|p| u128::from(balances[p.id.as_str()]) + u128::from(p.spent))
        .sum();
    let mined = world.players.values().map(|p| u128::from(p.mined)).sum();
    (held, mined)
}

/// Total computing power of a player's hardware.
pub fn power(content: &Content, player: &PlayerRecord) -> u64 {
    player
        .hardware
        .iter()
        .filter_map(|(id, &n)| Some(content.hardware(id)?.power.saturating_mul(n)))
        .fold(0u64, u64::saturating_add)
}

/// A player's rank index (unknown ranks count as the first).
pub fn rank_index(content: &Content, player: &PlayerRecord) -> usize {
    player
        .rank
        .as_deref()
        .and_then(|rank| content.rank_index(rank))
        .unwrap_or(0)
}

/// Where a rank's shared problem stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The rank id.
    pub rank: String,
    /// The current epoch: the first one nobody finished (in honest play, one more than the
    /// highest finished).
    pub epoch: u64,
    /// Size in steps.
    pub size: u64,
    /// Steps done by everyone on this epoch.
    pub done: u64,
}

impl Problem {
    /// Steps still to do.
    pub fn remaining(&self) -> u64 {
        self.size.saturating_sub(self.done)
    }
}

/// The current state of rank `rank_index`'s problem, or `None` for a rank without one.
pub fn problem(content: &Content, world: &World, rank_index: usize) -> Option<Problem> {
    let rank = content.rank(rank_index);
    rank.problem?;
    // The first epoch nobody has finished. Honest play finishes epochs in order (a claim is
    // only made on the epoch after the claims its writer saw), so this is one more than the
    // highest claim; but a peer's claim of an absurd epoch (u64::MAX saturates, so that epoch
    // would stay finished and promote everyone at once for good) is not believed.
    // A record that names too little work (or unreadable supports) finishes nothing: a
    // peer's bare claim must not start the problem over for everyone.
    let finished: BTreeSet<u64> = world
        .players
        .values()
        .filter(|p| claims::solved_holds(content, p, &rank.id))
        .filter_map(|p| p.solved.get(&rank.id).copied())
        .collect();
    let mut epoch = 1u64;
    for &claim in finished.range(1..) {
        if claim != epoch {
            break;
        }
        epoch += 1; // At most one per player: cannot overflow.
    }
    Some(Problem {
        rank: rank.id.clone(),
        epoch,
        size: content.problem_size(rank_index, epoch)?,
        done: work_on(world, &rank.id, epoch),
    })
}

/// Steps everyone did on an epoch of a rank's problem.
fn work_on(world: &World, rank: &str, epoch: u64) -> u64 {
    let key = (rank.to_owned(), epoch);
    world
        .players
        .values()
        .filter_map(|p| p.work.get(&key))
        .fold(0u64, |sum, &n| sum.saturating_add(n))
}

/// Whether `work` steps on an epoch of size `size` earn a share of its promotion.
fn earns_share(content: &Content, work: u64, size: u64) -> bool {
    let needed = u128::from(size) * u128::from(content.rules.solving.coop_share_percent);
    u128::from(work) * 100 >= needed && work > 0
}

/// One player's part in a fallen problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Share {
    /// The player id.
    pub id: String,
    /// Their part of all the work done on it, in percent (rounded).
    pub percent: u64,
}

/// Who is promoted by the fall of an epoch of rank `rank_index`'s problem: everyone at that
/// rank's work whose work on it is at least `coop_share_percent` of its size, largest share
/// first (a pure function of the world, so every node names the same players).
pub fn shares(content: &Content, world: &World, rank_index: usize, epoch: u64) -> Vec<Share> {
    let rank = &content.rank(rank_index).id;
    let Some(size) = content.problem_size(rank_index, epoch) else {
        return Vec::new();
    };
    let total = work_on(world, rank, epoch).max(1);
    let mut shares: Vec<Share> = world
        .players
        .values()
        .filter_map(|p| {
            let work = *p.work.get(&(rank.clone(), epoch))?;
            let finished = p.solved.get(rank) == Some(&epoch);
            (finished || earns_share(content, work, size)).then(|| Share {
                id: p.id.clone(),
                percent: u64::try_from(u128::from(work) * 100 / u128::from(total))
                    .unwrap_or(100)
                    .min(100),
            })
        })
        .collect();
    shares.sort_by(|a, b| b.percent.cmp(&a.percent).then(a.id.cmp(&b.id)));
    shares
}

/// Whether the work on an epoch, as the world shows it or a `solved` record of it names,
/// reaches its size: then the epoch fell, and a helper's own `solved` record can name that work.
fn fell(content: &Content, world: &World, rank: &str, epoch: u64, size: u64) -> bool {
    let work = claims::fallen_work(content, world, rank, epoch, size);
    work.values().map(|&n| u128::from(n)).sum::<u128>() >= u128::from(size)
}

/// A promotion player `id` has earned but not taken: an epoch of their rank's problem that
/// fell (someone claimed it, and the work it names reaches its size) while their work on it
/// was at least the co-op share. Returns the rank index and the epoch.
pub fn owed_promotion(content: &Content, world: &World, id: &str) -> Option<(usize, u64)> {
    let me = world.player(id);
    let rank = rank_index(content, &me);
    let current = problem(content, world, rank)?;
    me.work
        .iter()
        .filter(|((r, epoch), _)| *r == current.rank && *epoch < current.epoch)
        .find(|((_, epoch), work)| {
            content.problem_size(rank, *epoch).is_some_and(|size| {
                earns_share(content, **work, size)
                    && fell(content, world, &current.rank, *epoch, size)
            })
        })
        .map(|((_, epoch), _)| (rank, *epoch))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::game::schema::World;

    #[test]
    fn balance_counts_gifts_both_ways() {
        let w = World::from_items(&[
            ("p/A/mined", "100"),
            ("p/A/spent", "10"),
            ("p/A/gave/B", "30"),
            ("p/B/mined", "5"),
            ("p/B/gave/A", "2"),
        ]);
        let content = Content::embedded();
        assert_eq!(balance(&content, &w, "A"), 62);
        assert_eq!(balance(&content, &w, "B"), 33);
        assert_eq!(total_coins(&w), (105, 105));
    }

    #[test]
    fn all_balances_at_once_agree_with_each_one() {
        let w = World::from_items(&[
            ("p/A/mined", "100"),
            ("p/A/spent", "10"),
            ("p/A/gave/B", "30"),
            ("p/A/gave/A", "5"),
            ("p/A/gave/ghost", "1"),
            ("p/B/mined", "5"),
            ("p/B/gave/A", "2"),
            ("p/C/gave/A", &u64::MAX.to_string()),
            ("p/D/gave/A", &u64::MAX.to_string()),
            ("p/E/spent", "3"),
        ]);
        let content = Content::embedded();
        let all = balances(&content, &w);
        assert_eq!(all.len(), w.players.len());
        for id in w.players.keys() {
            assert_eq!(all[id.as_str()], balance(&content, &w, id), "{id}");
        }
        assert_eq!(all["A"], u64::MAX);
        assert_eq!(all["E"], 0);
    }

    #[test]
    fn the_epoch_follows_the_highest_solve_and_sums_everyones_work() {
        let content = Content::embedded();
        let w = World::from_items(&[
            ("p/A/work/Undergraduate/1", "100"),
            ("p/A/solved/Undergraduate", "1"),
            ("p/B/work/Undergraduate/2", "30"),
            ("p/C/work/Undergraduate/2", "50"),
            ("p/C/work/Undergraduate/1", "7"),
        ]);
        let p = problem(&content, &w, 0).unwrap();
        assert_eq!(
            (p.epoch, p.done, p.remaining()),
            (2, 80, 70),
            "epoch 2 is 150 steps"
        );
        assert!(problem(&content, &w, 5).is_none());
    }

    #[test]
    fn an_absurd_solve_claim_does_not_end_a_problem_for_good() {
        let content = Content::embedded();
        // A peer claims the last possible epoch; a player then finishes epoch 1 honestly.
        let max = u64::MAX.to_string();
        let w = World::from_items(&[
            ("p/X/solved/Undergraduate", &max),
            ("p/A/work/Undergraduate/1", "100"),
            ("p/A/solved/Undergraduate", "1"),
            ("p/B/work/Undergraduate/2", "30"),
        ]);
        let p = problem(&content, &w, 0).unwrap();
        assert_eq!((p.epoch, p.done, p.remaining()), (2, 30, 120));
        // Claims that skip epochs are not believed either; claims of the same epoch are.
        let w = World::from_items(&[
            ("p/A/solved/Masters", "1"),
            ("p/B/solved/Masters", "1"),
            ("p/C/solved/Masters", "2"),
            ("p/X/solved/Masters", "7"),
        ]);
        assert_eq!(problem(&content, &w, 1).unwrap().epoch, 3);
    }

    #[test]
    fn problems_grow_with_each_epoch() {
        let content = Content::embedded();
        assert_eq!(content.problem_size(0, 1), Some(100));
        assert_eq!(content.problem_size(0, 2), Some(150));
        assert_eq!(content.problem_size(0, 3), Some(225));
        assert_eq!(content.problem_size(0, 500), Some(u64::MAX));
        assert_eq!(content.problem_size(5, 1), None);
        let w = World::from_items(&[("p/A/solved/Undergraduate", "1")]);
        let p = problem(&content, &w, 0).unwrap();
        assert_eq!((p.epoch, p.size), (2, 150));
    }

    #[test]
    fn helpers_with_a_share_are_promoted_with_the_finisher() {
        let content = Content::embedded();
        // carol finished epoch 1 (size 100): alice did 62, carol 38, dan 9 (under 10%).
        let w = World::from_items(&[
            ("p/alice/work/Undergraduate/1", "62"),
            ("p/carol/work/Undergraduate/1", "38"),
            ("p/carol/solved/Undergraduate", "1"),
            ("p/carol/rank", "Masters"),
            ("p/dan/work/Undergraduate/1", "9"),
        ]);
        let shares = shares(&content, &w, 0, 1);
        let named: Vec<(&str, u64)> = shares.iter().map(|s| (s.id.as_str(), s.percent)).collect();
        assert_eq!(named, [("alice", 56), ("carol", 34)]);
        assert_eq!(owed_promotion(&content, &w, "alice"), Some((0, 1)));
        assert_eq!(owed_promotion(&content, &w, "dan"), None);
        assert_eq!(
            owed_promotion(&content, &w, "carol"),
            None,
            "already promoted"
        );
        // Once alice claims it too, nothing more is owed and the problem is at epoch 2.
        let w = World::from_items(&[
            ("p/alice/work/Undergraduate/1", "62"),
            ("p/alice/solved/Undergraduate", "1"),
            ("p/alice/rank", "Masters"),
            ("p/carol/solved/Undergraduate", "1"),
        ]);
        assert_eq!(owed_promotion(&content, &w, "alice"), None);
        assert_eq!(problem(&content, &w, 0).unwrap().epoch, 2);
    }

    #[test]
    fn power_ignores_unknown_hardware_and_saturates() {
        let content = Content::embedded();
        let w = World::from_items(&[
            ("p/A/hw/cpu", "3"),
            ("p/A/hw/gpu", "2"),
            ("p/A/hw/toaster", "9"),
        ]);
        assert_eq!(power(&content, &w.player("A")), 23);
        let huge = World::from_items(&[("p/A/hw/dark_matter", &u64::MAX.to_string())]);
        assert_eq!(power(&content, &huge.player("A")), u64::MAX);
    }
}
