//! The game: CMUD's rules as stateless logic over the replica (see `events` for the contract
//! with front ends). Owns no state of its own: every command becomes queries through a
//! [`crate::rpc::Kv`].

pub mod events;
pub mod session;
