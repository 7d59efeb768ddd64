//! The rank claims every peer checks (part of `claims`): a rank only as high as the player's
//! `solved` records allow, each `solved` record's summed work against the problem's size, and
//! work only at a rank held (each work record names the promotion into its rank it relied on).

use std::collections::BTreeMap;

use super::{Broken, Report, Waiting, enough};
use crate::game::content::Content;
use crate::game::ledger;
use crate::game::schema::{PlayerRecord, World, field};
use crate::game::supports::{NO_PROMOTION, Read};

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

/// Work only at a rank held. Each work record names the promotion into its rank that it
/// relied on (see `supports`): none at the first rank; above it, the epoch of the player's
/// own `solved` record for the rank below, which honest play writes in the same step as the
/// rank and never again. A record naming one its rank cannot have, or one that the player's
/// `solved` record or another work record at that rank contradicts, is broken as it stands;
/// one whose `solved` record has not arrived is pending. And no work on an epoch after the
/// one the player finished that rank at: by their `solved` record, or, before it arrives,
/// by the promotion their work at the rank above names.
pub(super) fn work(content: &Content, me: &PlayerRecord, report: &mut Report) {
    let promotions = promotions(content, me, report);
    for ((rank, epoch), _) in me.work.iter().filter(|(_, n)| **n > 0) {
        let Some(index) = content.rank_index(rank) else {
            continue;
        };
        let finished = me.solved.get(rank).or_else(|| promotions.get(&(index + 1)));
        if finished.is_some_and(|finished| epoch > finished) {
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

/// The promotion into each rank (by index) that the player's work records there name. Each
/// record's is first checked against its rank, the player's `solved` record for the rank
/// below, and the work records at that rank read before it; a record without supports names
/// none and is not checked.
fn promotions(content: &Content, me: &PlayerRecord, report: &mut Report) -> BTreeMap<usize, u64> {
    let mut named: BTreeMap<usize, u64> = BTreeMap::new();
    for ((rank, epoch), read) in &me.supports.work {
        let Some(index) = content.rank_index(rank) else {
            continue; // Not a rank: no problem to work on, nothing to check.
        };
        let claimed = match read {
            Read::Legacy => continue,
            Read::Malformed => {
                let field = field::work(rank, *epoch);
                report.broken.push(Broken::Malformed { field });
                continue;
            }
            Read::Named(claimed) => *claimed,
        };
        let (holds, promoted) = match index.checked_sub(1) {
            // The first rank needs no promotion, so it can name none.
            None => (claimed == NO_PROMOTION, None),
            Some(below) => {
                let promoted = me.solved.get(&content.rank(below).id);
                let promoted = promoted.or_else(|| named.get(&index)).copied();
                let agrees = promoted.is_none_or(|promoted| promoted == claimed);
                (claimed != NO_PROMOTION && agrees, promoted)
            }
        };
        if holds {
            named.entry(index).or_insert(claimed);
        } else {
            report.broken.push(Broken::WorkAtRankNotHeld {
                rank: rank.clone(),
                epoch: *epoch,
                named: claimed,
                promoted,
            });
        }
    }
    named
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
