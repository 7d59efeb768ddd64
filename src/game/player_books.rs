//! The player task's books: what its affordability checks and the supports of its records
//! rest on. Part of `player`: the check and the record it justifies are made in one step from
//! the same counters, so every spending record names what it counted (see `claims`).

use std::collections::BTreeMap;

use super::PlayerTask;
use crate::game::claims;
use crate::game::ledger;
use crate::game::schema::{PlayerRecord, World, field};
use crate::game::supports::{self, Spending};
use crate::rpc::Kv;

/// The counters a spending decision rests on.
pub(super) struct Books<'a> {
    /// `mined`, never below what the task wrote.
    mined: u64,
    /// Spent plus every gift, each counter never below what the task wrote.
    outflow: u64,
    /// The gifts received that count (not from an unverified player), by giver.
    gifts: BTreeMap<&'a str, u64>,
}

impl Books<'_> {
    /// Coins that can be spent or given.
    pub(super) fn balance(&self) -> u64 {
        let credit =
            u128::from(self.mined) + self.gifts.values().map(|&n| u128::from(n)).sum::<u128>();
        let left = credit.saturating_sub(u128::from(self.outflow));
        u64::try_from(left).unwrap_or(u64::MAX)
    }

    /// The supports of a record that pays out `paid` more: the outflow after it, the mined
    /// coins and, largest first, just enough of the gifts to cover the rest.
    pub(super) fn spending(&self, paid: u64) -> Spending {
        let outflow = self.outflow.saturating_add(paid);
        let short = u128::from(outflow).saturating_sub(u128::from(self.mined));
        Spending {
            outflow,
            mined: self.mined,
            received: claims::enough(self.gifts.clone(), short),
        }
    }
}

impl<K: Kv> PlayerTask<K> {
    /// The books of the player in `world`.
    pub(super) fn books<'a>(&self, world: &'a World, me: &PlayerRecord) -> Books<'a> {
        let mut counters: BTreeMap<String, u64> = me
            .gave
            .iter()
            .map(|(to, &n)| (field::gave(to), n))
            .collect();
        counters.insert(field::SPENT.to_owned(), me.spent);
        for (name, &n) in &self.floors {
            if name == field::SPENT || name.starts_with("gave/") {
                let counter = counters.entry(name.clone()).or_default();
                *counter = (*counter).max(n);
            }
        }
        Books {
            mined: self.counter(field::MINED, me.mined),
            outflow: counters.values().fold(0, |sum, &n| sum.saturating_add(n)),
            gifts: ledger::counted_gifts(&self.content, world, &self.id),
        }
    }

    /// The value of the `solved` record of `problem`, which this step finished and which
    /// took the player's own work on it to `own`: the epoch, and the work it summed
    /// (everyone's as seen here; just enough of it, largest first, to reach the size).
    pub(super) fn finished(&self, world: &World, problem: &ledger::Problem, own: u64) -> String {
        let key = (problem.rank.clone(), problem.epoch);
        let mut summed: BTreeMap<&str, u64> = world
            .players
            .values()
            .filter_map(|p| Some((p.id.as_str(), *p.work.get(&key)?)))
            .collect();
        summed.insert(&self.id, own);
        let named = claims::enough(summed, u128::from(problem.size));
        supports::encode_solved(problem.epoch, &named)
    }

    /// The value of a work record at rank index `rank` that takes it to `total`: the steps,
    /// then the promotion into that rank they relied on (the epoch of the player's own
    /// `solved` record for the rank below; none at the first rank). A player above the first
    /// rank without that record (honest play never is: it is written in the same step as the
    /// rank) writes the bare number, read as a record from before supports.
    pub(super) fn work_record(&self, me: &PlayerRecord, rank: usize, total: u64) -> String {
        let promoted = match rank.checked_sub(1) {
            None => Some(supports::NO_PROMOTION),
            Some(below) => me.solved.get(&self.content.rank(below).id).copied(),
        };
        promoted.map_or_else(|| total.to_string(), |p| supports::encode_work(total, p))
    }

    /// The spent counter as the task knows it (for a hardware record's support).
    pub(super) fn spent(&self, me: &PlayerRecord) -> u64 {
        self.counter(field::SPENT, me.spent)
    }
}
