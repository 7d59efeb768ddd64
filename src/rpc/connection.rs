//! One client connection on its query actor: `AUTH`, then commands read, run and answered in
//! batches, within the limits of [`super::clients`].
//!
//! A connection reads whatever the socket has (at most `READ_CHUNK_BYTES` at a time), runs
//! every complete command in it against its actor's replica, and writes all the replies back
//! before it reads again: pipelined commands cost one read and one write, with no hop to
//! another thread, and a client that does not read its replies stops being read.
//!
//! Who the connection is and the `AUTH` command are [`super::login`]'s.

use std::io;
use std::rc::Rc;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep_until};

use super::clients::{ClientHandle, ROOM_WAIT};
use super::commands::{Flow, execute};
use super::listing::{Listing, Step};
use super::login::{Auth, ConnState, PRE_AUTH_LIMITS, authenticate, idle_limit};
use super::output::Output;
use super::pubsub::{self, Subscriber, Subscription};
use super::resp::{Reply, parse_command};
use super::server::{NodeInfo, network};
use crate::store::actor::{Actor, Handoff};

/// Most bytes one read takes from the socket.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// A buffer that grew past this is given back once it is empty, so an idle connection holds
/// little memory whatever it once sent or received.
const KEEP_BUFFER_BYTES: usize = 256 * 1024;

/// Why a connection ended.
#[derive(Debug)]
enum End {
    /// The client closed it.
    Eof,
    /// The socket failed.
    Io(io::Error),
    /// `QUIT`, a wrong password or a protocol error: replies written, then closed.
    Closed,
    /// `ACTOR n`: to be moved to that actor; `Moved` once it was.
    MoveTo(usize),
    /// Moved to another actor.
    Moved,
    /// The node closed it to stay under `max_total_output_bytes`.
    Evicted,
    /// Its unread output went past `max_client_output_bytes`.
    OutputOverLimit(usize),
    /// Idle past `timeout`.
    Idle,
    /// No `AUTH` within [`super::login::AUTH_DEADLINE`].
    NoAuth,
}

impl From<io::Error> for End {
    fn from(err: io::Error) -> Self {
        End::Io(err)
    }
}

/// Serves a connection handed to this actor until it closes or moves.
pub async fn serve(actor: Rc<Actor>, node: Arc<NodeInfo>, conn: Handoff) {
    let Handoff {
        stream,
        unread,
        context,
    } = conn;
    let Ok(state) = context.downcast::<ConnState>() else {
        tracing::error!("a connection reached an actor without its rpc state; closing it");
        return;
    };
    let stream = match TcpStream::from_std(stream) {
        Ok(stream) => stream,
        Err(err) => return tracing::debug!(%err, "rpc connection could not be registered"),
    };
    let mut conn = Connection {
        stream: Some(stream),
        input: unread,
        input_peak: 0,
        output: Output::default(),
        state: Some(*state),
        subscriber: None,
    };
    let id = conn.client().id();
    match conn.run(&actor, &node).await {
        End::Eof | End::Closed | End::Moved | End::MoveTo(_) => {}
        End::Io(err) => tracing::debug!(client = id, %err, "rpc connection ended with an error"),
        End::Evicted => {} // logged when chosen
        End::OutputOverLimit(bytes) => tracing::warn!(
            client = id,
            unread_bytes = bytes,
            "closing an rpc client: its unread output is over max_client_output_bytes"
        ),
        End::Idle => tracing::debug!(client = id, "closing an idle rpc client (timeout)"),
        End::NoAuth => tracing::info!(
            client = id,
            "closing an rpc client that did not AUTH in time"
        ),
    }
}

/// A connection being served.
struct Connection {
    /// The socket; taken when the connection moves.
    stream: Option<TcpStream>,
    /// Bytes read and not yet parsed.
    input: BytesMut,
    /// The most bytes `input` held since it was last given back.
    input_peak: usize,
    /// Replies not yet written.
    output: Output,
    /// Taken when the connection moves.
    state: Option<ConnState>,
    /// Its subscriptions, in subscribed mode.
    subscriber: Option<Rc<Subscriber>>,
}

impl Connection {
    fn client(&self) -> &ClientHandle {
        // Both are taken only on the way out of `run`.
        &self
            .state
            .as_ref()
            .expect("state is present while serving")
            .client
    }

    fn state_mut(&mut self) -> &mut ConnState {
        self.state.as_mut().expect("state is present while serving")
    }

    /// Output built for this client and not yet sent: replies, and queued messages.
    fn unread(&self) -> usize {
        self.output.len() + self.subscriber.as_ref().map_or(0, |sub| sub.queued())
    }

    async fn run(&mut self, actor: &Actor, node: &NodeInfo) -> End {
        loop {
            if let Err(end) = self.run_commands(actor, node).await {
                return match end {
                    End::Closed => match self.flush(actor).await {
                        Ok(()) => End::Closed,
                        Err(end) => end,
                    },
                    End::MoveTo(to) => self.move_away(actor, to).await,
                    other => other,
                };
            }
            if let Some(sub) = &self.subscriber
                && !sub.drain_into(&mut self.output)
            {
                return End::OutputOverLimit(self.output.len());
            }
            // What unfinished commands cost is the buffer that holds them, which grows ahead
            // of what it holds: count its capacity, so the node's budget bounds memory.
            let pending = if self.input.is_empty() {
                0
            } else {
                self.input.capacity()
            };
            self.state_mut().client.set_pending_input(pending);
            if let Err(end) = self.flush(actor).await {
                return end;
            }
            if self.subscriber.as_ref().is_some_and(|sub| sub.queued() > 0) {
                // Messages queued while the replies went out: send them before reading.
                continue;
            }
            if self.input.is_empty() && self.input_peak > KEEP_BUFFER_BYTES {
                self.input = BytesMut::new();
                self.input_peak = 0;
            }
            self.client().wait_for_input_room().await;
            if self.input.len() >= READ_CHUNK_BYTES {
                // Midway through a large command: let the actor's other connections run
                // between its chunks, so that clients sending megabytes do not hold a PING
                // behind their reads (tokio would let each read on for a whole budget).
                tokio::task::yield_now().await;
            }
            if let Err(end) = self.read().await {
                return end;
            }
        }
    }

    /// Runs every complete command in `input`.
    async fn run_commands(&mut self, actor: &Actor, node: &NodeInfo) -> Result<(), End> {
        loop {
            let authenticated = !matches!(self.state_mut().auth, Auth::Pending(_));
            let limits = if authenticated {
                &node.frame_limits
            } else {
                &PRE_AUTH_LIMITS
            };
            let args = match parse_command(&mut self.input, limits) {
                Ok(Some(args)) => args,
                Ok(None) => return Ok(()),
                Err(err) => {
                    Reply(&mut self.output).error(&format!("ERR {err}"));
                    return Err(End::Closed);
                }
            };
            let mut flow = self.command(actor, node, &args);
            while matches!(flow, Flow::Retry) {
                if self.client().is_evicted() {
                    return Err(End::Evicted);
                }
                tokio::time::sleep(ROOM_WAIT).await;
                flow = self.command(actor, node, &args);
            }
            match flow {
                Flow::Continue | Flow::Retry => {}
                Flow::Quit => return Err(End::Closed),
                Flow::MoveTo(to) => return Err(End::MoveTo(to)),
                Flow::Network(command) => network(node, command, &mut self.output).await,
                Flow::Listing(listing) => self.build(listing, actor, node).await?,
            }
            let unread = self.unread();
            let client = self.client();
            if unread > client.options().max_client_output_bytes && !client.is_game() {
                return Err(End::OutputOverLimit(unread));
            }
            client.set_unread_output(unread);
            if client.is_evicted() {
                return Err(End::Evicted);
            }
        }
    }

    /// Builds a listing a slice at a time, letting the actor's other connections run between
    /// slices.
    async fn build(
        &mut self,
        mut listing: Box<Listing>,
        actor: &Actor,
        node: &NodeInfo,
    ) -> Result<(), End> {
        loop {
            let client = &self
                .state
                .as_ref()
                .expect("state is present while serving")
                .client;
            match listing.step(actor, node, client, &mut self.output) {
                Step::Done => return Ok(()),
                Step::Yield => tokio::task::yield_now().await,
                Step::Wait => tokio::time::sleep(ROOM_WAIT).await,
            }
            if self.client().is_evicted() {
                return Err(End::Evicted);
            }
        }
    }

    /// `AUTH` and the gate before it; everything else goes to [`execute`].
    fn command(&mut self, actor: &Actor, node: &NodeInfo, args: &[Bytes]) -> Flow {
        let Some(name) = args.first() else {
            return Flow::Continue;
        };
        let state = self.state.as_mut().expect("state is present while serving");
        let mut reply = Reply(&mut self.output);
        if name.eq_ignore_ascii_case(b"AUTH") {
            return authenticate(node, state, args, &mut reply);
        }
        if matches!(state.auth, Auth::Pending(_))
            && !name.eq_ignore_ascii_case(b"QUIT")
            && !name.eq_ignore_ascii_case(b"HELLO")
        {
            reply.error("NOAUTH Authentication required.");
            return Flow::Continue;
        }
        let upper = name.to_ascii_uppercase();
        if matches!(
            upper.as_slice(),
            b"SUBSCRIBE" | b"PSUBSCRIBE" | b"UNSUBSCRIBE" | b"PUNSUBSCRIBE"
        ) {
            if args.len() < 2 && !upper.contains(&b'N') {
                let shown = String::from_utf8_lossy(&upper).to_lowercase();
                reply.error(&format!(
                    "ERR wrong number of arguments for '{shown}' command"
                ));
                return Flow::Continue;
            }
            // Messages queued before this command go out before its confirmations.
            if let Some(sub) = &self.subscriber {
                sub.drain_into(reply.0);
            }
            self.subscriber = match pubsub::command(
                self.subscriber.take(),
                &upper,
                args,
                &state.client,
                &mut reply,
            ) {
                Subscription::Active(sub) => Some(sub),
                Subscription::None => None,
            };
            return Flow::Continue;
        }
        if self.subscriber.is_some() {
            if !pubsub::allowed_when_subscribed(&upper) {
                let shown = String::from_utf8_lossy(name).to_lowercase();
                reply.error(&format!(
                    "ERR Can't execute '{shown}': only (P)SUBSCRIBE / (P)UNSUBSCRIBE / PING / QUIT are allowed in this context"
                ));
                return Flow::Continue;
            }
            if upper == b"PING" {
                reply.array(2);
                reply.bulk(b"pong");
                reply.bulk(args.get(1).map_or(&b""[..], |message| &message[..]));
                return Flow::Continue;
            }
        }
        execute(actor, node, &state.client, args, &mut self.output)
    }
}

impl Connection {
    /// Writes out every reply, unless the node closes the connection meanwhile or the client
    /// reads nothing for `timeout`.
    async fn flush(&mut self, actor: &Actor) -> Result<(), End> {
        // Acknowledged writes must be in the log before their acknowledgements leave.
        actor.log_before_reply().await;
        let state = self.state.as_ref().expect("state is present while serving");
        let stream = self
            .stream
            .as_mut()
            .expect("stream is present while serving");
        let idle = idle_limit(state);
        let subscriber = self.subscriber.as_deref();
        let queued = || subscriber.map_or(0, Subscriber::queued);
        state.client.set_unread_output(self.output.len() + queued());
        while !self.output.is_empty() {
            let deadline = idle.map(|idle| Instant::now() + idle);
            tokio::select! {
                written = write_some(stream, &self.output) => match written? {
                    0 => return Err(End::Io(io::ErrorKind::WriteZero.into())),
                    n => {
                        self.output.advance(n);
                        state.client.set_unread_output(self.output.len() + queued());
                    }
                },
                _ = state.client.evicted() => return Err(End::Evicted),
                _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    return Err(End::Idle);
                }
                // A subscriber that does not read falls behind while its messages queue up.
                () = message_queued(subscriber) => {
                    if subscriber.is_some_and(Subscriber::overflowed) {
                        return Err(End::OutputOverLimit(self.output.len()));
                    }
                }
            }
        }
        self.output.shrink_if_over(KEEP_BUFFER_BYTES);
        Ok(())
    }

    /// Reads what the socket has, at most [`READ_CHUNK_BYTES`].
    async fn read(&mut self) -> Result<(), End> {
        let state = self.state.as_ref().expect("state is present while serving");
        let stream = self
            .stream
            .as_mut()
            .expect("stream is present while serving");
        if self.input.capacity() - self.input.len() < READ_CHUNK_BYTES / 4 {
            self.input.reserve(READ_CHUNK_BYTES);
        }
        let (deadline, expired) = match state.auth {
            Auth::Pending(deadline) => (Some(deadline), End::NoAuth),
            _ => (
                idle_limit(state).map(|idle| Instant::now() + idle),
                End::Idle,
            ),
        };
        let mut room = (&mut self.input).limit(READ_CHUNK_BYTES);
        tokio::select! {
            read = stream.read_buf(&mut room) => if read? == 0 {
                return Err(End::Eof);
            },
            _ = state.client.evicted() => return Err(End::Evicted),
            _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                return Err(expired);
            }
            () = message_queued(self.subscriber.as_deref()) => {}
        }
        self.input_peak = self.input_peak.max(self.input.len());
        Ok(())
    }

    /// Writes what is buffered and hands the connection, with its state, to actor `to`.
    async fn move_away(&mut self, actor: &Actor, to: usize) -> End {
        if let Err(end) = self.flush(actor).await {
            return end;
        }
        let (Some(stream), Some(state)) = (self.stream.take(), self.state.take()) else {
            return End::Closed;
        };
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(err) => return End::Io(err),
        };
        let conn = Handoff {
            stream,
            unread: std::mem::take(&mut self.input),
            context: Box::new(state),
        };
        if actor.hand_off(to, conn).is_err() {
            tracing::warn!("actor {to} is gone; closing the connection moved to it");
        }
        End::Moved
    }
}

/// Writes what the socket takes of `output`: one plain write for small replies, a vectored
/// one when shared values are queued.
async fn write_some(stream: &mut TcpStream, output: &Output) -> io::Result<usize> {
    match output.contiguous() {
        Some(bytes) => stream.write(bytes).await,
        None => stream.write_vectored(&output.slices()).await,
    }
}

/// Resolves when a message is queued for `subscriber`; never without one.
async fn message_queued(subscriber: Option<&Subscriber>) {
    match subscriber {
        Some(sub) => sub.wake.notified().await,
        None => std::future::pending().await,
    }
}
