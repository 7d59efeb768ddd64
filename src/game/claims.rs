//! The rules every peer checks. Signatures and owner-only namespaces make each player's keys
//! truly theirs, but a modified client can still sign nonsense under its own `p/<id>/`; so
//! the game treats a player's state as a set of claims and checks what anyone can check:
//!
//! - spending: every `spent` and `gave/<id>` record pays out no more than the `mined` coins
//!   and received gifts it counted, and no more is paid out than the records account for
//!   (so spent ≤ mined + gifts received, and gifts given ≤ what the giver had);
//! - hardware: the shop value of the hardware owned is at most what was spent plus the value
//!   of the starting hardware (a player whose hardware all broke restarts on it for free);
//! - ranks: a rank needs a `solved/<rank>` record for every rank below it, and each one's
//!   summed work reaches the size of the problem it claims; work only at a rank held (each
//!   work record names the promotion into its rank, which the player's `solved` record for
//!   the rank below must show; and no work on an epoch after the one the player finished
//!   that rank at).
//!
//! Entries from different players, and even different keys of one player, arrive in any
//! order, so each claim names what it relied on (see `supports`). A claim whose supports have
//! not all arrived is *pending*, never broken: only a rule broken with the supports present
//! makes a player *unverified*. Records from before supports existed are checked against the
//! world as it is, and a failure there is only pending (their supports may be on the way).
//!
//! Pure functions over a [`World`] snapshot: how the snapshot was read does not matter here.
//! Nothing here writes, and nothing here can see through an inflated `mined` or `work`
//! counter: those are the player's own word.

use std::collections::{BTreeMap, BTreeSet};

use super::content::Content;
use super::schema::{PlayerRecord, World, field};
use super::supports::{Read, Spending};

#[path = "claims_ranks.rs"]
mod ranks;
pub use ranks::{fallen_work, solved_holds};

/// A rule a player's claims break with their supports present.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Broken {
    /// A spending record says it paid out more than the coins it counted.
    Overspent {
        /// The record (`spent` or `gave/<id>`).
        field: String,
        /// What it says was paid out in all.
        outflow: u64,
        /// The mined coins and gifts it counted.
        had: u128,
    },
    /// More is paid out (spent plus gifts) than any spending record accounts for: records
    /// that contradict each other.
    Unaccounted {
        /// Spent plus every gift, as the records stand.
        outflow: u128,
        /// The most any record accounts for.
        accounted: u64,
    },
    /// The hardware is worth more than was spent on it plus the starting hardware.
    Hardware {
        /// Its value at shop prices.
        value: u128,
        /// Spent (the most any record names) plus the starting hardware's value.
        paid: u128,
    },
    /// A `solved` record whose summed work falls short of the problem's size.
    Unsolved {
        /// The rank id.
        rank: String,
        /// The epoch claimed.
        epoch: u64,
        /// The work it summed.
        work: u128,
        /// The size of that epoch's problem.
        size: u64,
    },
    /// Work at a rank the player does not hold: its record names a promotion into that rank
    /// that cannot be theirs (one at the first rank, none above it, or another than their
    /// `solved` record for the rank below, or their other work at that rank, shows).
    WorkAtRankNotHeld {
        /// The rank id worked at.
        rank: String,
        /// The epoch worked on.
        epoch: u64,
        /// The epoch of the promotion into that rank it names (0: none).
        named: u64,
        /// The promotion into that rank the player's other records show, if any.
        promoted: Option<u64>,
    },
    /// Work on an epoch of a rank's problem after the epoch the player finished it at.
    WorkAfterRank {
        /// The rank id.
        rank: String,
        /// The epoch worked on.
        epoch: u64,
    },
    /// A record whose supports do not read.
    Malformed {
        /// The record (the field after `p/<id>/`).
        field: String,
    },
}

/// A support a claim names that has not arrived here (yet).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Waiting {
    /// The player's own `mined`, at least this high.
    Mined(u64),
    /// A gift from `from` (their `gave/<player>`), at least this high.
    Gift {
        /// The giver.
        from: String,
        /// The amount counted.
        needed: u64,
    },
    /// The player's own `spent`, at least this high.
    Spent(u64),
    /// A `solved/<rank>` record of the player's (for a rank they hold or work above).
    Solved(String),
    /// A player's work on an epoch of a rank's problem, at least this high.
    Work {
        /// Whose work.
        player: String,
        /// The rank id.
        rank: String,
        /// The epoch.
        epoch: u64,
        /// The work counted.
        needed: u64,
    },
    /// The work that finished an epoch, for a `solved` record written before supports
    /// existed.
    Fallen {
        /// The rank id.
        rank: String,
        /// The epoch.
        epoch: u64,
    },
}

/// What the checks found about one player.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Rules broken with the supports present.
    pub broken: Vec<Broken>,
    /// Supports not here yet.
    pub waiting: BTreeSet<Waiting>,
}

/// One player's standing under the checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every claim holds with its supports present.
    Consistent,
    /// No rule is broken, but some supports have not arrived.
    Pending,
    /// A rule is broken: shown `(unverified)`, and their gifts count for nothing.
    Unverified,
}

impl Report {
    /// The verdict: broken rules outweigh missing supports.
    pub fn verdict(&self) -> Verdict {
        match (self.broken.is_empty(), self.waiting.is_empty()) {
            (false, _) => Verdict::Unverified,
            (true, false) => Verdict::Pending,
            (true, true) => Verdict::Consistent,
        }
    }
}

/// Checks every claim of player `id` in `world`.
pub fn check(content: &Content, world: &World, id: &str) -> Report {
    let mut report = Report::default();
    // Borrowed, not `world.player(id)`: this runs for every player at every look.
    let Some(me) = world.players.get(id) else {
        return report; // No records, no claims.
    };
    spending(world, me, &mut report);
    hardware(content, me, &mut report);
    ranks::held(content, world, me, &mut report);
    ranks::work(content, me, &mut report);
    report
}

/// Whether player `id`'s claims break a rule.
pub fn is_unverified(content: &Content, world: &World, id: &str) -> bool {
    check(content, world, id).verdict() == Verdict::Unverified
}

/// The players whose claims break a rule (their state is not consistent).
pub fn unverified(content: &Content, world: &World) -> BTreeSet<String> {
    world
        .players
        .keys()
        .filter(|id| is_unverified(content, world, id))
        .cloned()
        .collect()
}

/// `spent` and `gave/*`: each pays out no more than it counted; all together no more than the
/// latest of them accounts for.
fn spending(world: &World, me: &PlayerRecord, report: &mut Report) {
    let mut records: Vec<(String, u64, &Read<Spending>)> =
        vec![(field::SPENT.to_owned(), me.spent, &me.supports.spent)];
    for (to, read) in &me.supports.gave {
        let count = me.gave.get(to).copied().unwrap_or(0);
        records.push((field::gave(to), count, read));
    }
    let mut legacy = false;
    let mut accounted = 0u64;
    for (field, count, read) in records {
        let claim = match read {
            Read::Legacy => {
                legacy |= count > 0;
                continue;
            }
            Read::Malformed => {
                report.broken.push(Broken::Malformed { field });
                continue;
            }
            Read::Named(claim) => claim,
        };
        accounted = accounted.max(claim.outflow);
        if me.mined < claim.mined {
            report.waiting.insert(Waiting::Mined(claim.mined));
        }
        let mut had = u128::from(claim.mined);
        // A gift from oneself is no income.
        for (from, &needed) in claim.received.iter().filter(|(from, _)| **from != me.id) {
            had += u128::from(needed);
            let got = world
                .players
                .get(from)
                .and_then(|giver| giver.gave.get(&me.id))
                .copied()
                .unwrap_or(0);
            if got < needed {
                let from = from.clone();
                report.waiting.insert(Waiting::Gift { from, needed });
            }
        }
        if u128::from(claim.outflow) > had {
            let outflow = claim.outflow;
            report.broken.push(Broken::Overspent {
                field,
                outflow,
                had,
            });
        }
    }
    let outflow = u128::from(me.spent) + me.gave.values().map(|&n| u128::from(n)).sum::<u128>();
    if !legacy && outflow > u128::from(accounted) {
        report
            .broken
            .push(Broken::Unaccounted { outflow, accounted });
    }
}

/// The shop value of the hardware owned against what was spent on it.
fn hardware(content: &Content, me: &PlayerRecord, report: &mut Report) {
    let price = |id: &str| content.hardware(id).map_or(0, |hw| u128::from(hw.price));
    let start: u128 = content
        .rules
        .start_hardware
        .iter()
        .map(|(id, n)| price(id) * u128::from(*n))
        .sum();
    let mut value = 0u128;
    let mut legacy = false;
    let mut named = 0u64;
    for (kind, &count) in &me.hardware {
        value += price(kind) * u128::from(count);
        match me.supports.hardware.get(kind) {
            Some(Read::Named(spent)) => named = named.max(*spent),
            Some(Read::Malformed) => report.broken.push(Broken::Malformed {
                field: field::hardware(kind),
            }),
            _ => legacy |= count > 0 && price(kind) > 0,
        }
    }
    if value <= u128::from(me.spent) + start {
        return;
    }
    let paid = u128::from(named.max(me.spent)) + start;
    if legacy {
        let needed = u64::try_from(value - start).unwrap_or(u64::MAX);
        report.waiting.insert(Waiting::Spent(needed));
    } else if value > paid {
        report.broken.push(Broken::Hardware { value, paid });
    } else {
        report.waiting.insert(Waiting::Spent(named));
    }
}

/// The largest amounts first, until they add up to `needed` (all of them if they never do).
pub fn enough(amounts: BTreeMap<&str, u64>, needed: u128) -> BTreeMap<String, u64> {
    let mut largest: Vec<(&str, u64)> = amounts.into_iter().filter(|(_, n)| *n > 0).collect();
    largest.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let mut chosen = BTreeMap::new();
    let mut sum = 0u128;
    for (id, n) in largest {
        if sum >= needed {
            break;
        }
        sum += u128::from(n);
        chosen.insert(id.to_owned(), n);
    }
    chosen
}

#[cfg(test)]
#[path = "claims_tests.rs"]
mod tests;
