//! The game: CMUD's rules as stateless logic over the replica (see `events` for the contract
//! with front ends). Owns no world state of its own: every command becomes queries through a
//! [`crate::rpc::Kv`], so any number of players on any number of nodes share one world.
//!
//! - [`content`]: rules and story from `assets/*.ron`.
//! - [`schema`]: the key schema under `p/<player-id>/` and the snapshot read back from it.
//! - [`supports`]: what a claim relied on, as written after its number.
//! - [`claims`]: the rules every peer checks over each player's claims.
//! - [`ledger`]: balances, power and problem progress, summed from monotonic counters.
//! - [`names`]: display names, disambiguation, lookup.
//! - [`player`]: the player's single mutation task.
//! - [`commands`]: the command table and argument parsing.
//! - [`session`]: one player's session (inputs in, events out), with its instant commands,
//!   background jobs and news in private modules.
//! - [`tell`]: sealing private tells to a player's X25519 key.
//! - [`json`]: the JSON form of events, for `cmud --plain --json`.
//! - [`clock`]: the game's clock, a parameter for deterministic tests.
//! - [`watch`]: a session's view of the world, kept current from keyspace notifications.

mod actions;
#[cfg(test)]
mod balance_tests;
pub mod claims;
pub mod clock;
pub mod commands;
pub mod content;
mod ctx;
pub mod events;
mod jobs;
pub mod json;
pub mod ledger;
mod mail;
pub mod names;
pub mod news;
mod places;
pub mod player;
pub mod schema;
pub mod session;
mod shop;
#[cfg(test)]
mod sim_tests;
mod social;
pub mod supports;
pub mod watch;
mod watched;

pub use social::sort_by_reach;
pub mod tell;
