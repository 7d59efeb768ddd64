//! The loopback RPC port: RESP2 framing ([`resp`]), the command set ([`commands`] and
//! [`listing`]), who may connect ([`auth`]) and how much they may hold ([`clients`]), the
//! connection loop run on each query actor ([`connection`]), the accept loop ([`server`]), and
//! the client the game uses ([`client`]).

pub mod auth;
pub mod client;
pub mod clients;
pub mod commands;
pub mod connection;
pub mod gate;
pub mod keyspace;
pub mod listing;
pub mod login;
pub mod output;
pub mod process;
pub mod pubsub;
pub mod resp;
pub mod server;

pub use auth::RpcEndpoint;
pub use client::{JoinKind, Kv, KvClient, KvError, PeerInfo};
pub use clients::RpcOptions;
pub use keyspace::{KeyEvent, KeySubscription};
