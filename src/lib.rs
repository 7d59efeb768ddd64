//! CMUD: a multiplayer terminal MUD with no central server.
//!
//! Every player's binary embeds a full replica of the world ([`store`]), serves it to the game
//! over a loopback RESP port ([`rpc`]), gossips it with peers over libp2p ([`p2p`]), and plays
//! it through stateless rules ([`game`]) in a terminal UI ([`tui`]). [`node`] wires a replica,
//! its RPC port and its network together; `main` picks a front end. [`admin`] checks, exports
//! and imports a stopped node's world.

pub mod admin;
pub mod cli;
pub mod config;
pub mod game;
pub mod node;
pub mod p2p;
pub mod rpc;
pub mod store;
pub mod tui;
