//! The game against real nodes: transcripts, bad input, two players, coins and progress under
//! concurrency, restarts, and the `--plain` binary. All game integration tests live in this
//! one test binary (each test binary links the whole crate).

#[path = "game/harness.rs"]
mod harness;

use std::sync::Arc;
use std::time::Duration;

use cmud::game::clock::{InstantClock, SystemClock};
use cmud::game::content::Content;
use cmud::game::events::{Input, LineKind, Mode};
use cmud::game::ledger;
use cmud::game::player::{Change, Count, Outcome, PlayerHandle};
use cmud::game::schema::World;
use cmud::rpc::{Kv, KvClient};
use harness::{DEADLINE, Player, TestNode, content_with, mirror, options};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

async fn world(kv: &KvClient) -> World {
    World::from_pairs(kv.list("p/").await.unwrap())
}

/// Runs each (input, expected output) row against a session and compares them all.
async fn check_transcript(player: &mut Player, rows: &[(&str, &[&str])]) {
    for (input, expected) in rows {
        let got = player.run(input).await;
        assert_eq!(got, *expected, "after {input:?}");
    }
}

#[tokio::test]
async fn transcript_of_a_first_game() {
    let node = TestNode::start().await;
    let (mut alice, greeting) = Player::start(node.kv.clone(), options(None, None, 7)).await;
    assert!(greeting.iter().any(|l| l.contains("What should the world call you")));
    assert_eq!(alice.status.mode, Mode::Naming);
    let named = alice.run("alice").await;
    assert!(named[0].starts_with("The autumn of 2010"), "{named:?}");
    assert_eq!(alice.chosen, ["alice"]);
    check_transcript(
        &mut alice,
        &[
            (
                "stats",
                &[
                    "Name: alice",
                    "Rank: Undergraduate",
                    "Location: Gates 5th Floor",
                    "Coins: 0",
                    "Power: 1",
                    "Problem: 100 of 100 steps remaining",
                ],
            ),
            (
                "shop",
                &[
                    "The shop sells:",
                    "  cpu          Xeon CPUs                1 coin each, power 1",
                    "More machines arrive with each promotion.",
                ],
            ),
            (
                "buy cpu",
                &["You cannot afford that: it costs 1 coin and you have 0."],
            ),
            (
                "mine 3",
                &[
                    "--- Mining bitcoin [1/3]... ---",
                    "Successfully mined 1 coin!",
                    "--- Mining bitcoin [2/3]... ---",
                    "Successfully mined 1 coin!",
                    "--- Mining bitcoin [3/3]... ---",
                    "Successfully mined 1 coin!",
                ],
            ),
            ("buy cpu 2", &["You have purchased 2 Xeon CPUs for 2 coins."]),
            (
                "buy gpu",
                &["Nvidia GPUs are not sold to you yet: they unlock at Masters."],
            ),
            ("buy cpu max", &["You have purchased 1 Xeon CPUs for 1 coin."]),
            ("inv", &["Coins: 0", "  Xeon CPUs: 4", "Power: 4"]),
            ("move fence", &["You walk to The Fence."]),
            ("move fence", &["You are already at The Fence."]),
            (
                "move mars",
                &[
                    "(404) Location not found: mars",
                    "Locations: fence, bridge, 1, 2, 3, 4, 5, 6, 7, 8, 9",
                ],
            ),
            ("map", &["--- The Fence (fence) ---", "alice"]),
            ("say hello, world", &["You say: hello, world"]),
            ("who", &["Online now (1):", "  alice - Undergraduate, The Fence"]),
            ("top", &["Leaderboard:", "  1. alice - Undergraduate, 0 coins"]),
            ("give alice 1", &["Giving coins to yourself changes nothing."]),
            ("give bob 1", &["There is no player called \"bob\"."]),
            ("resign", &["`resign` only works inside a battle (`solve`)."]),
            ("stop", &["Nothing to stop."]),
            ("help buy", &["buy <hardware> [n|max] - buys n units of hardware (default 1)"]),
        ],
    )
    .await;
    let battle = alice.run("solve").await;
    assert_eq!(
        battle.last().unwrap(),
        "The problem has 100 remaining steps. `solve [n]` computes, `resign` gives up."
    );
    assert_eq!(alice.status.mode, Mode::Solving);
    check_transcript(
        &mut alice,
        &[
            (
                "shop",
                &["You are in a battle: use `help`, `inv`, `solve`, `resign`, `stop`, `who`, `say`, `shout`, `top`, `addr`, `join`, `quit`, or `resign` first."],
            ),
            (
                "solve 2",
                &[
                    "--- Computing problem... ---",
                    "The problem has 96 remaining steps.",
                    "--- Computing problem... ---",
                    "The problem has 92 remaining steps.",
                ],
            ),
            (
                "resign",
                &["You close the laptop. Let's come back to it another day."],
            ),
        ],
    )
    .await;
    assert_eq!(alice.status.mode, Mode::Mining);
    let bye = alice.quit().await;
    assert_eq!(
        bye,
        ["Goodbye, alice. The world keeps your character until you come back."]
    );
}
