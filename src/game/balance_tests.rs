//! A seeded simulation of many players over the rules in `assets/rules.ron`, to check that
//! battles stay battles: for every rank, the median number of battle steps the strongest
//! player at the rank needs to finish a problem stays at least [`MIN_MEDIAN_STEPS`].
//!
//! The players are simple and greedy: they join one after another, mine a while (each with
//! their own patience), buy as much of the best hardware their rank unlocks as they can, and
//! fight their rank's problem, going back to mining now and then. Problems fall to whoever
//! brings them to zero, with everyone whose work reached the co-op share, and grow with each
//! epoch; one step does at most `max_step_percent` of a problem. Run with `--nocapture` to see
//! the figures (README, "Battles").

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::content::Content;

/// What the rules must keep: a problem is never a formality of a step or two.
const MIN_MEDIAN_STEPS: u64 = 5;

/// Players in the simulation.
const PLAYERS: usize = 24;

/// Ticks between two players' arrivals.
const ARRIVAL_TICKS: usize = 40;

/// Ticks simulated.
const TICKS: usize = 6000;

#[derive(Clone, Debug, Default)]
struct SimPlayer {
    rank: usize,
    coins: u64,
    hardware: Vec<u64>,
    /// Mining attempts before the next fight.
    to_mine: u64,
    /// Steps done on the current epoch of the rank's problem.
    work: u64,
    /// How many attempts this player mines between fights.
    patience: u64,
}

impl SimPlayer {
    fn power(&self, content: &Content) -> u64 {
        content
            .rules
            .hardware
            .iter()
            .zip(&self.hardware)
            .map(|(hw, n)| hw.power.saturating_mul(*n))
            .fold(0, u64::saturating_add)
    }
}

/// A rank's problem in the simulation.
#[derive(Clone, Debug)]
struct SimProblem {
    epoch: u64,
    done: u64,
    /// Steps the strongest player at the rank needed alone when this epoch opened (or when
    /// the first player reached the rank).
    strongest_steps: Option<u64>,
}

/// Runs the simulation; returns, per rank with a problem, the steps the strongest player
/// needed for each epoch that fell.
fn simulate(content: &Content, seed: u64) -> Vec<Vec<u64>> {
    let rules = &content.rules;
    let ranks_with_problems = rules.ranks.len() - 1;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut players: Vec<SimPlayer> = Vec::new();
    let mut problems = vec![
        SimProblem {
            epoch: 1,
            done: 0,
            strongest_steps: None,
        };
        ranks_with_problems
    ];
    let mut fallen: Vec<Vec<u64>> = vec![Vec::new(); ranks_with_problems];
    for tick in 0..TICKS {
        if tick % ARRIVAL_TICKS == 0 && players.len() < PLAYERS {
            let mut hardware = vec![0; rules.hardware.len()];
            hardware[0] = 1;
            let patience = rng.random_range(3..=30);
            players.push(SimPlayer {
                hardware,
                to_mine: patience,
                patience,
                ..SimPlayer::default()
            });
        }
        for i in 0..players.len() {
            let rank = players[i].rank;
            if rank >= ranks_with_problems {
                continue;
            }
            note_strongest(content, &players, &mut problems[rank], rank);
            act(content, &mut rng, &mut players[i]);
            if players[i].to_mine > 0 || players[i].coins > 0 && can_buy(content, &players[i]) {
                continue;
            }
            fight(
                content,
                &mut rng,
                &mut players,
                i,
                &mut problems,
                &mut fallen,
            );
        }
    }
    fallen
}

/// The steps the strongest player at `rank` needs alone for the epoch, noted once per epoch.
fn note_strongest(content: &Content, players: &[SimPlayer], problem: &mut SimProblem, rank: usize) {
    if problem.strongest_steps.is_some() {
        return;
    }
    let strongest = players
        .iter()
        .filter(|p| p.rank == rank)
        .map(|p| p.power(content))
        .max()
        .unwrap_or(1)
        .max(1);
    let size = content.problem_size(rank, problem.epoch).unwrap_or(1);
    let step = content.step_progress(strongest, size);
    problem.strongest_steps = Some(size.div_ceil(step));
}

fn best_unlocked(content: &Content, player: &SimPlayer) -> usize {
    content
        .rules
        .hardware
        .iter()
        .rposition(|hw| content.unlocked(hw, player.rank))
        .unwrap_or(0)
}

fn can_buy(content: &Content, player: &SimPlayer) -> bool {
    player.coins >= content.rules.hardware[best_unlocked(content, player)].price
}

/// Mines one attempt, or buys as much of the best hardware as the coins allow.
fn act(content: &Content, rng: &mut StdRng, player: &mut SimPlayer) {
    let best = best_unlocked(content, player);
    let price = content.rules.hardware[best].price;
    if player.coins >= price {
        let units = player.coins / price;
        player.hardware[best] = player.hardware[best].saturating_add(units);
        player.coins -= units * price;
    } else if player.to_mine > 0 {
        player.to_mine -= 1;
        let power = player.power(content);
        if rng.random_range(0..100) < content.rules.mining.success_percent && power > 0 {
            player.coins = player.coins.saturating_add(rng.random_range(1..=power));
        }
    }
}

/// One battle step of player `i`; a fallen problem promotes its finisher and every helper
/// with the co-op share.
fn fight(
    content: &Content,
    rng: &mut StdRng,
    players: &mut [SimPlayer],
    i: usize,
    problems: &mut [SimProblem],
    fallen: &mut [Vec<u64>],
) {
    let solving = &content.rules.solving;
    let rank = players[i].rank;
    let roll = rng.random_range(0..100);
    if roll < solving.progress_percent {
        let problem = &mut problems[rank];
        let size = content
            .problem_size(rank, problem.epoch)
            .unwrap_or(u64::MAX);
        let power = content.step_progress(players[i].power(content), size);
        players[i].work = players[i].work.saturating_add(power);
        problem.done = problem.done.saturating_add(power);
        if problem.done >= size {
            let share = size * solving.coop_share_percent / 100;
            for (j, p) in players.iter_mut().enumerate() {
                if p.rank == rank && (j == i || p.work >= share.max(1)) {
                    p.rank += 1;
                    p.to_mine = p.patience;
                }
                if p.rank == rank || j == i {
                    p.work = 0;
                }
            }
            fallen[rank].push(problem.strongest_steps.unwrap_or(0));
            *problem = SimProblem {
                epoch: problem.epoch + 1,
                done: 0,
                strongest_steps: None,
            };
        }
    } else if roll < solving.progress_percent + solving.break_percent {
        let owned: Vec<usize> = (0..players[i].hardware.len())
            .filter(|&k| players[i].hardware[k] > 0)
            .collect();
        let k = owned[rng.random_range(0..owned.len())];
        players[i].hardware[k] /= solving.break_divisor;
        if players[i].hardware.iter().all(|&n| n == 0) {
            players[i].hardware[0] = 1;
        }
    }
    // Now and then a player goes back to mining for a while.
    if rng.random_range(0..100) < 10 {
        players[i].to_mine = players[i].patience;
    }
}

fn median(values: &mut [u64]) -> Option<u64> {
    values.sort_unstable();
    values.get(values.len() / 2).copied()
}

#[test]
fn the_strongest_player_needs_several_steps_at_every_rank() {
    let content = Content::embedded();
    for seed in 0..4 {
        let fallen = simulate(&content, seed);
        for (rank, steps) in fallen.into_iter().enumerate() {
            let mut steps = steps;
            let epochs = steps.len();
            let Some(median) = median(&mut steps) else {
                continue;
            };
            println!(
                "seed {seed} {:<13} {epochs:>3} problems solved, median steps for the strongest: {median}, fewest: {}",
                content.rank(rank).id,
                steps.first().copied().unwrap_or(0)
            );
            assert!(
                median >= MIN_MEDIAN_STEPS,
                "seed {seed}: {} problems take the strongest player {median} steps (median)",
                content.rank(rank).id
            );
        }
    }
}
