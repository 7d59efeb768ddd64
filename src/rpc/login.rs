//! Who a connection is: its state ([`ConnState`]: its place among the clients and whether,
//! and as whom, it authenticated), which moves with it when `ACTOR n` hands it to another
//! actor; the `AUTH` command; and what a connection may do before it (one short command at a
//! time, for at most [`AUTH_DEADLINE`]).
//!
//! The secrets themselves are [`super::auth`]'s; the loop that serves a connection is
//! [`super::connection`]'s.

use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::auth::{DEFAULT_USER, GAME_USER};
use super::clients::ClientHandle;
use super::commands::Flow;
use super::resp::{FrameLimits, Reply};
use super::server::NodeInfo;

/// How long a new connection has to authenticate.
pub const AUTH_DEADLINE: Duration = Duration::from_secs(10);

/// What an unauthenticated connection may send: one short command at a time.
pub(super) const PRE_AUTH_LIMITS: FrameLimits = FrameLimits {
    max_args: 8,
    max_arg_bytes: 1024,
    max_frame_bytes: 1024,
    max_inline_bytes: 1024,
};

/// Whether, and as whom, a connection authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Auth {
    /// Not yet: only `AUTH`, `QUIT` and `HELLO` are served until this deadline.
    Pending(Instant),
    /// A client with the token (or any client when `rpc_auth` is off).
    Client,
    /// The node's own game.
    Game,
}

/// A connection's state, carried along when it moves to another actor.
pub struct ConnState {
    /// Its place among the node's clients.
    pub(super) client: ClientHandle,
    /// Whether it authenticated.
    pub(super) auth: Auth,
}

impl ConnState {
    /// The state of a connection just accepted.
    pub fn new(client: ClientHandle, auth_required: bool) -> ConnState {
        let auth = if auth_required {
            Auth::Pending(Instant::now() + AUTH_DEADLINE)
        } else {
            Auth::Client
        };
        ConnState { client, auth }
    }
}

/// How long the client may stay silent: `timeout`, never for the game.
pub(super) fn idle_limit(state: &ConnState) -> Option<Duration> {
    match state.auth {
        Auth::Game => None,
        _ => state.client.options().idle_timeout,
    }
}

/// `AUTH [user] secret`: the token as `default` (or without a user), the game's secret as
/// [`GAME_USER`]. A wrong secret costs the connection.
pub(super) fn authenticate(
    node: &NodeInfo,
    state: &mut ConnState,
    args: &[Bytes],
    reply: &mut Reply<'_>,
) -> Flow {
    let (user, secret) = match args {
        [_, secret] => (DEFAULT_USER.as_bytes(), secret),
        [_, user, secret] => (&user[..], secret),
        _ => {
            reply.error("ERR wrong number of arguments for 'auth' command");
            return Flow::Continue;
        }
    };
    if user == GAME_USER.as_bytes() && node.game_secret.matches(secret) {
        state.auth = Auth::Game;
        state.client.mark_game();
        reply.ok();
        return Flow::Continue;
    }
    if user == DEFAULT_USER.as_bytes() {
        match &node.token {
            Some(token) if token.matches(secret) => {
                if state.auth != Auth::Game {
                    state.auth = Auth::Client;
                }
                reply.ok();
                return Flow::Continue;
            }
            None => {
                reply.error(
                    "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
                );
                return Flow::Continue;
            }
            Some(_) => {}
        }
    }
    reply.error("WRONGPASS invalid username-password pair or user is disabled.");
    Flow::Quit
}
