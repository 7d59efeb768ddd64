//! The loopback RPC port: RESP2 framing ([`resp`]), the command set ([`commands`]), the server
//! loop run on each query actor ([`server`]), and the client the game uses ([`client`]).

pub mod client;
pub mod commands;
pub mod resp;
pub mod server;

pub use client::{JoinKind, Kv, KvClient, KvError, PeerInfo};
