//! The rank claims every peer checks (part of `claims`): a rank only as high as the player's
//! `solved` records allow, each `solved` record's summed work against the problem's size, and
//! work only at a rank held.

use std::collections::BTreeMap;

use super::{Broken, Report, Waiting, enough};
use crate::game::content::Content;
use crate::game::ledger;
use crate::game::schema::{PlayerRecord, World, field};
use crate::game::supports::Read;

/// The rank held against the `solved` records, and each `solved` record against the work
/// it summed.
pub(super) fn held(content: &Content, world: &World, me: &PlayerRecord, report: &mut Report) {
    for below in 0..ledger::rank_index(content, me) {
        let rank = &content.rank(below).id;
        if !me.solved.contains_key(rank) {
            report.waiting.insert(Waiting::Solved(rank.clone()));
        }
    }
    for (rank, &epoch) in &me.solved {
        let Some(size) = content
            .rank_index(rank)
            .and_then(|index| content.problem_size(index, epoch))
        else {
            continue; // A rank without a problem, or none at all: nothing to check.
        };
        let work_of = |player: &str| {
            world
                .players
                .get(player)
                .and_then(|p| p.work.get(&(rank.clone(), epoch)))
                .copied()
                .unwrap_or(0)
        };
        match me.supports.solved.get(rank) {
            Some(Read::Named(summed)) => {
                let work: u128 = summed.values().map(|&n| u128::from(n)).sum();
                if work < u128::from(size) {
                    let (rank, size) = (rank.clone(), size);
                    report.broken.push(Broken::Unsolved {
                        rank,
                        epoch,
                        work,
                        size,
                    });
                }
                for (player, &needed) in summed.iter().filter(|(p, n)| work_of(p) < **n) {
                    report.waiting.insert(Waiting::Work {
                        player: player.clone(),
                        rank: rank.clone(),
                        epoch,
                        needed,
                    });
                }
            }
            Some(Read::Malformed) => report.broken.push(Broken::Malformed {
                field: field::solved(rank),
            }),
            _ => {
                let work: u128 = world.players.keys().map(|p| u128::from(work_of(p))).sum();
                if work < u128::from(size) {
                    let rank = rank.clone();
                    report.waiting.insert(Waiting::Fallen { rank, epoch });
                }
            }
        }
    }
}

/// Whether `p`'s `solved/<rank>` record (if any) can stand: written before supports existed,
/// or naming work that reaches the size of the epoch it claims (whether that work has
/// arrived yet or not). One that names too little, or supports that do not read, cannot.
pub fn solved_holds(content: &Content, p: &PlayerRecord, rank: &str) -> bool {
    let Some(&epoch) = p.solved.get(rank) else {
        return true;
    };
    let size = content
        .rank_index(rank)
        .and_then(|index| content.problem_size(index, epoch));
    match (p.supports.solved.get(rank), size) {
        (Some(Read::Named(summed)), Some(size)) => {
            summed.values().map(|&n| u128::from(n)).sum::<u128>() >= u128::from(size)
        }
        (Some(Read::Malformed), _) => false,
        _ => true,
    }
}

/// Work only at a rank held: after a rank below it was solved, and not past the epoch the
/// player finished that rank's problem at.
pub(super) fn work(content: &Content, me: &PlayerRecord, report: &mut Report) {
    for ((rank, epoch), _) in me.work.iter().filter(|(_, n)| **n > 0) {
        let Some(index) = content.rank_index(rank) else {
            continue;
        };
        if me.solved.get(rank).is_some_and(|finished| epoch > finished) {
            let (rank, epoch) = (rank.clone(), *epoch);
            report.broken.push(Broken::WorkAfterRank { rank, epoch });
        }
        if let Some(below) = index.checked_sub(1) {
            let below = &content.rank(below).id;
            if !me.solved.contains_key(below) {
                report.waiting.insert(Waiting::Solved(below.clone()));
            }
        }
    }
}

/// The work to name for an epoch of a rank's problem that fell: per player, the most that
/// either the world shows or any `solved` record of that epoch names (a helper who sees the
/// problem fall before all its work arrived names what the finisher summed). Returns the
/// players and their work, largest first, just enough to reach `size` when it can.
pub fn fallen_work(
    content: &Content,
    world: &World,
    rank: &str,
    epoch: u64,
    size: u64,
) -> BTreeMap<String, u64> {
    let mut work: BTreeMap<&str, u64> = BTreeMap::new();
    let key = (rank.to_owned(), epoch);
    for p in world.players.values() {
        if let Some(&n) = p.work.get(&key) {
            let entry = work.entry(p.id.as_str()).or_default();
            *entry = (*entry).max(n);
        }
        if p.solved.get(rank) != Some(&epoch) || !solved_holds(content, p, rank) {
            continue;
        }
        if let Some(Read::Named(summed)) = p.supports.solved.get(rank) {
            for (player, &n) in summed {
                let entry = work.entry(player.as_str()).or_default();
                *entry = (*entry).max(n);
            }
        }
    }
    enough(work, u128::from(size))
}
