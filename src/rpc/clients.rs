//! The node-wide ledger of RPC clients: how many are open (`maxclients`), the unread output
//! and unfinished input they hold together, and which to close when output grows too large.
//!
//! Every actor thread's connections share one [`Clients`]; each connection holds a
//! [`ClientHandle`] that gives its share back when dropped, wherever the connection ends.
//! The hot path touches two atomics per batch of replies; the registry's lock is taken only
//! when a client opens or closes, or when the node is over its output budget.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

/// Settings of the RPC port (`config.ron`), with Redis' names where Redis has the setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcOptions {
    /// Whether clients must send `AUTH` with the token of `rpc.token` (`rpc_auth`).
    pub auth: bool,
    /// Unread output one client may hold before it is closed; also the largest reply.
    pub max_client_output_bytes: usize,
    /// Bytes of unfinished commands all connections may hold before reading pauses.
    pub max_pending_input_bytes: usize,
    /// Unread output all clients may hold before the largest holders are closed.
    pub max_total_output_bytes: usize,
    /// Most open client connections (capped by the file limit).
    pub maxclients: usize,
    /// Idle time after which a client is closed; `None` never closes idle clients.
    pub idle_timeout: Option<Duration>,
}

impl Default for RpcOptions {
    fn default() -> Self {
        RpcOptions {
            auth: true,
            max_client_output_bytes: 64 * 1024 * 1024,
            max_pending_input_bytes: 256 * 1024 * 1024,
            max_total_output_bytes: 256 * 1024 * 1024,
            maxclients: 10_000,
            idle_timeout: None,
        }
    }
}

/// File descriptors kept back from `maxclients` for the node itself (database, log, peers,
/// the runtime's own descriptors).
pub const RESERVED_FDS: usize = 128;

/// Most times in a row a large reply waits for closed clients to free their output (a pause
/// of [`ROOM_WAIT`] each) before it is built anyway.
const MAX_ROOM_WAITS: u32 = 100;

/// How long a large reply waits, each time, for closed clients to free their output.
pub const ROOM_WAIT: Duration = Duration::from_millis(1);

/// How often a connection waiting for input room looks again, in case it missed a wake-up.
const INPUT_ROOM_RECHECK: Duration = Duration::from_millis(50);

/// One connection's entry in the registry.
#[derive(Default)]
struct Slot {
    /// Output built for it and not yet taken by the kernel.
    unread: AtomicUsize,
    /// Whether it is the node's own game (never closed for others' sake).
    game: AtomicBool,
    /// Set when the node closes it to get under the output budget.
    evicted: AtomicBool,
    /// Wakes the connection when it is evicted.
    evict: Notify,
}

/// The clients of one node.
pub struct Clients {
    /// The settings, with `maxclients` already capped.
    options: RpcOptions,
    /// Open connections (refused ones never count).
    open: AtomicUsize,
    /// Sum of every client's unread output.
    output_total: AtomicUsize,
    /// Sum of every client's unfinished input.
    input_total: AtomicUsize,
    /// Wakes connections waiting for input room.
    input_room: Notify,
    /// Open connections by id, for eviction.
    slots: Mutex<HashMap<u64, Arc<Slot>>>,
    /// The next connection id.
    next_id: AtomicU64,
    /// Connections refused for `maxclients`.
    rejected: AtomicU64,
    /// Connections closed for the node's output budget.
    evicted: AtomicU64,
}

impl Clients {
    /// A ledger with these settings (`maxclients` as given: cap it first with
    /// [`cap_maxclients`]).
    pub fn new(options: RpcOptions) -> Arc<Clients> {
        Arc::new(Clients {
            options,
            open: AtomicUsize::new(0),
            output_total: AtomicUsize::new(0),
            input_total: AtomicUsize::new(0),
            input_room: Notify::new(),
            slots: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            rejected: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
        })
    }

    /// The settings in force.
    pub fn options(&self) -> &RpcOptions {
        &self.options
    }

    /// Registers a new connection, or `None` if `maxclients` are open already.
    pub fn try_open(self: &Arc<Self>) -> Option<ClientHandle> {
        let admitted = self
            .open
            .fetch_update(Relaxed, Relaxed, |open| {
                (open < self.options.maxclients).then_some(open + 1)
            })
            .is_ok();
        if !admitted {
            self.rejected.fetch_add(1, Relaxed);
            return None;
        }
        let id = self.next_id.fetch_add(1, Relaxed);
        let slot = Arc::new(Slot::default());
        self.lock_slots().insert(id, slot.clone());
        Some(ClientHandle {
            clients: self.clone(),
            id,
            slot,
            input: 0,
            room_waits: Cell::new(0),
        })
    }

    /// Open connections now.
    pub fn open(&self) -> usize {
        self.open.load(Relaxed)
    }

    /// Unread output of all clients now, in bytes.
    pub fn output_total(&self) -> usize {
        self.output_total.load(Relaxed)
    }

    /// Unfinished input of all clients now, in bytes.
    pub fn input_total(&self) -> usize {
        self.input_total.load(Relaxed)
    }

    /// Connections refused for `maxclients` so far.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Relaxed)
    }

    /// Connections closed for the output budget so far.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Relaxed)
    }

    fn lock_slots(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Slot>>> {
        // A panic while holding this lock leaves a map that is still consistent.
        self.slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Closes the clients holding the most unread output (never the game) until the total
    /// plus `incoming` fits the budget; the client `incoming` is for counts as holding it
    /// already, so a reply that would make its client the largest holder closes that client
    /// before it is built. Returns whether that fit still waits for closed clients to let go
    /// of their output.
    fn evict_for(&self, incoming: usize, requester: Option<u64>) -> bool {
        let budget = self.options.max_total_output_bytes;
        let total = self.output_total.load(Relaxed);
        if total.saturating_add(incoming) <= budget {
            return false;
        }
        let slots = self.lock_slots();
        // Clients closed already but not yet gone will let go of theirs in a moment.
        let leaving: usize = slots
            .values()
            .filter(|s| s.evicted.load(Relaxed))
            .map(|s| s.unread.load(Relaxed))
            .sum();
        let mut staying = total.saturating_sub(leaving);
        let mut holders: Vec<(u64, &Arc<Slot>, usize)> = slots
            .iter()
            .filter(|(_, s)| !s.game.load(Relaxed) && !s.evicted.load(Relaxed))
            .map(|(id, s)| {
                let coming = if Some(*id) == requester { incoming } else { 0 };
                (*id, s, s.unread.load(Relaxed) + coming)
            })
            .filter(|(_, _, unread)| *unread > 0)
            .collect();
        holders.sort_by_key(|(_, _, unread)| std::cmp::Reverse(*unread));
        let mut closed = 0;
        for (id, slot, unread) in holders {
            if staying.saturating_add(incoming) <= budget {
                break;
            }
            tracing::warn!(
                client = id,
                unread_bytes = unread,
                total_bytes = total,
                "closing an rpc client: the unread output of all clients is over max_total_output_bytes"
            );
            slot.evicted.store(true, Relaxed);
            slot.evict.notify_one();
            self.evicted.fetch_add(1, Relaxed);
            if Some(id) == requester {
                // Its reply will not be built; what it holds already leaves with it.
                staying = staying.saturating_sub(unread - incoming);
                closed += unread - incoming;
            } else {
                staying = staying.saturating_sub(unread);
                closed += unread;
            }
        }
        leaving + closed > 0
    }
}

/// One connection's place among the clients. Dropping it gives back its slot and its shares
/// of the budgets.
pub struct ClientHandle {
    /// The ledger.
    clients: Arc<Clients>,
    /// This connection's id (in logs).
    id: u64,
    /// Its registry entry.
    slot: Arc<Slot>,
    /// Unfinished input this connection has counted in the total.
    input: usize,
    /// Times in a row a large reply waited for closed clients to let go of their output.
    room_waits: Cell<u32>,
}

impl ClientHandle {
    /// This connection's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The node's settings.
    pub fn options(&self) -> &RpcOptions {
        &self.clients.options
    }

    /// Marks this connection as the node's own game.
    pub fn mark_game(&self) {
        self.slot.game.store(true, Relaxed);
    }

    /// Whether this connection is the node's own game.
    pub fn is_game(&self) -> bool {
        self.slot.game.load(Relaxed)
    }

    /// A meter for output queued for this client outside its connection loop.
    pub fn meter(&self) -> OutputMeter {
        OutputMeter {
            clients: self.clients.clone(),
            slot: self.slot.clone(),
        }
    }

    /// Whether the node closed this connection to get under its output budget.
    pub fn is_evicted(&self) -> bool {
        self.slot.evicted.load(Relaxed)
    }

    /// Resolves once the node closes this connection to get under its output budget.
    pub async fn evicted(&self) {
        while !self.is_evicted() {
            self.slot.evict.notified().await;
        }
    }

    /// Makes room in the node's output budget for a reply of `bytes` about to be built,
    /// closing the largest holders of unread output if needed (this one included). Returns
    /// false when the reply should wait a moment for closed clients to free their output (so
    /// their memory and the new reply's are never held at once) or this client was closed;
    /// true when it may be built (its bytes are counted now, [`Self::set_unread_output`]
    /// corrects the figure once it is built).
    pub fn make_room_for(&self, bytes: usize) -> bool {
        let budget = self.clients.options.max_total_output_bytes;
        let total = &self.clients.output_total;
        // Counted before it is built, so two actors cannot both take the last room.
        let fits = total
            .fetch_update(Relaxed, Relaxed, |t| {
                (t.saturating_add(bytes) <= budget).then_some(t + bytes)
            })
            .is_ok();
        if !fits {
            let freeing = self.clients.evict_for(bytes, Some(self.id));
            if self.is_evicted() {
                return false;
            }
            if freeing && self.room_waits.get() < MAX_ROOM_WAITS {
                self.room_waits.set(self.room_waits.get() + 1);
                return false;
            }
            // Nobody left to close (the game holds the rest), or waited long enough.
            total.fetch_add(bytes, Relaxed);
        }
        self.slot.unread.fetch_add(bytes, Relaxed);
        self.room_waits.set(0);
        true
    }

    /// Records how much output this connection holds unread, closing the largest holders if
    /// the node is over its budget.
    pub fn set_unread_output(&self, bytes: usize) {
        let before = self.slot.unread.swap(bytes, Relaxed);
        if bytes >= before {
            self.clients.output_total.fetch_add(bytes - before, Relaxed);
            let _ = self.clients.evict_for(0, None);
        } else {
            self.clients.output_total.fetch_sub(before - bytes, Relaxed);
        }
    }

    /// Records how many bytes of unfinished commands this connection holds.
    pub fn set_pending_input(&mut self, bytes: usize) {
        let total = &self.clients.input_total;
        if bytes >= self.input {
            total.fetch_add(bytes - self.input, Relaxed);
        } else {
            total.fetch_sub(self.input - bytes, Relaxed);
            self.clients.input_room.notify_waiters();
        }
        self.input = bytes;
    }

    /// Waits until the node has room for more unfinished input. The game never waits, and
    /// neither does a connection holding none (so a complete command always gets in).
    pub async fn wait_for_input_room(&self) {
        loop {
            let full = self.clients.input_total.load(Relaxed)
                >= self.clients.options.max_pending_input_bytes;
            if !full || self.input == 0 || self.is_game() || self.is_evicted() {
                return;
            }
            let woken = self.clients.input_room.notified();
            let _ = tokio::time::timeout(INPUT_ROOM_RECHECK, woken).await;
        }
    }
}

/// Counts output queued for a client away from its connection loop (a subscriber's messages,
/// queued as changes are published) in the client's unread output and the node's total.
/// The connection's next [`ClientHandle::set_unread_output`] takes the figure over.
pub struct OutputMeter {
    /// The ledger.
    clients: Arc<Clients>,
    /// The client's registry entry.
    slot: Arc<Slot>,
}

impl OutputMeter {
    /// `bytes` more are queued: closes the largest holders if the node is over its budget.
    pub fn add(&self, bytes: usize) {
        self.slot.unread.fetch_add(bytes, Relaxed);
        self.clients.output_total.fetch_add(bytes, Relaxed);
        let _ = self.clients.evict_for(0, None);
    }

    /// `bytes` queued were dropped.
    pub fn sub(&self, bytes: usize) {
        let taken = self
            .slot
            .unread
            .fetch_update(Relaxed, Relaxed, |unread| {
                Some(unread.saturating_sub(bytes))
            })
            .map_or(0, |before| before.min(bytes));
        self.clients.output_total.fetch_sub(taken, Relaxed);
    }
}

impl Drop for ClientHandle {
    fn drop(&mut self) {
        self.set_unread_output(0);
        self.set_pending_input(0);
        self.clients.lock_slots().remove(&self.id);
        self.clients.open.fetch_sub(1, Relaxed);
    }
}

/// `maxclients` as the file limit allows: at most `fd_limit - RESERVED_FDS`.
pub fn cap_maxclients(maxclients: usize, fd_limit: Option<u64>) -> usize {
    match fd_limit {
        Some(limit) => {
            let allowed = usize::try_from(limit)
                .unwrap_or(usize::MAX)
                .saturating_sub(RESERVED_FDS)
                .max(1);
            maxclients.min(allowed)
        }
        None => maxclients,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clients(maxclients: usize, max_total_output_bytes: usize) -> Arc<Clients> {
        Clients::new(RpcOptions {
            maxclients,
            max_total_output_bytes,
            ..RpcOptions::default()
        })
    }

    #[test]
    fn maxclients_refuses_one_more_and_a_close_frees_a_slot() {
        let clients = clients(2, 1000);
        let a = clients.try_open().unwrap();
        let _b = clients.try_open().unwrap();
        assert!(clients.try_open().is_none());
        drop(a);
        assert_eq!(clients.open(), 1);
        assert!(clients.try_open().is_some());
    }

    #[test]
    fn over_the_output_budget_the_largest_holders_go_first_but_never_the_game() {
        let clients = clients(10, 1000);
        let game = clients.try_open().unwrap();
        game.mark_game();
        let small = clients.try_open().unwrap();
        let large = clients.try_open().unwrap();
        game.set_unread_output(900);
        small.set_unread_output(50);
        assert!(!small.is_evicted() && !game.is_evicted());
        large.set_unread_output(300);
        assert!(large.is_evicted(), "the largest holder is closed");
        assert!(!small.is_evicted(), "one eviction was enough");
        assert!(!game.is_evicted(), "never the game");
        drop(large);
        assert_eq!(clients.output_total(), 950);
        assert!(
            !small.make_room_for(100),
            "the reply waits for the closed client to go"
        );
        assert!(small.is_evicted(), "room for a reply about to be built");
        drop(small);
        let next = clients.try_open().unwrap();
        assert!(next.make_room_for(100), "nobody left to wait for");
        assert!(!game.is_evicted());
    }

    #[test]
    fn maxclients_is_capped_by_the_file_limit() {
        assert_eq!(cap_maxclients(10_000, Some(1024)), 1024 - RESERVED_FDS);
        assert_eq!(cap_maxclients(10_000, Some(1_000_000)), 10_000);
        assert_eq!(cap_maxclients(10_000, None), 10_000);
        assert_eq!(cap_maxclients(10_000, Some(10)), 1);
    }
}
