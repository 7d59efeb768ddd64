//! The client side of the RPC port: the [`Kv`] trait the game is written against, and
//! [`KvClient`], its implementation over a multiplexed `redis` connection.
//!
//! The game sees nothing of the store, actors or libp2p: only these calls. Values are UTF-8
//! text here because everything the game stores is text.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::auth::RpcEndpoint;
use super::keyspace::{self, KeySubscription};
pub use crate::p2p::nat::{AddrKind, SharedAddr};

/// How long a query may wait for the replica's reply before it fails.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// Entries per page when [`Kv::list`] reads a prefix (`LIST prefix AFTER key COUNT n`): small
/// enough that no reply is ever large, large enough that a world takes few round trips.
pub const LIST_PAGE_ENTRIES: usize = 4096;

/// How often [`KvClient::wait_for_the_world`] asks the node again.
const WORLD_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// Longest one-line answer to `AUTH` or `ACTOR` read while opening a subscription.
const MAX_HANDSHAKE_LINE_BYTES: usize = 1024;

/// Keys per `MGET`: below the port's limit of 1024 array elements (the command name counts).
const MGET_KEYS: usize = 1000;

/// Why a query to the replica failed. The replica's refusals arrive typed: the game matches on
/// the variant, never on protocol text.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// The RPC port could not be reached or the connection broke.
    #[error("replica unreachable: {0}")]
    Connection(String),
    /// The replica refused the query (for example a value over the size limit); its reason.
    #[error("replica refused: {0}")]
    Refused(String),
    /// The write touches another node's `p/<id>/` namespace, which only that node may write;
    /// nothing of the command was written. The replica's reason.
    #[error("{0}")]
    ForeignNamespace(String),
    /// The node is still fetching the world from its peers (it was out of contact for longer
    /// than `tombstone_ttl`): try again shortly. See [`KvClient::wait_for_the_world`].
    #[error("syncing the world from peers")]
    Loading,
    /// The write would take this node past its quota (`max_keys_per_writer`,
    /// `max_bytes_per_writer`); nothing of the command was written. The replica's reason.
    #[error("{0}")]
    OverQuota(String),
    /// A stored value is not UTF-8 text.
    #[error("value under {0} is not text")]
    NotText(String),
    /// This replica does not offer keyspace notifications (the caller reads the prefix
    /// instead).
    #[error("this replica offers no keyspace notifications")]
    NoSubscriptions,
    /// A `JOIN` did not reach a node of this world with the expected peer id.
    #[error("{message}")]
    Join {
        /// What went wrong.
        kind: JoinKind,
        /// The node's words for it, without the code word.
        message: String,
    },
}

/// Why a `JOIN` failed, as the node's reply names it (`p2p::JoinError`'s code words).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinKind {
    /// Nothing answers at that address.
    Unreachable,
    /// The host name does not resolve.
    NoSuchHost,
    /// A node answers with another peer id.
    WrongPeer,
    /// A node of another world (or format) answers.
    ForeignWorld,
    /// Something that is not a cmud node answers.
    NotCmud,
    /// No answer in time.
    Timeout,
    /// Not a multiaddr.
    BadAddr,
    /// This node has no network.
    NoNetwork,
    /// Anything else.
    Other,
}

/// Reads a refused `JOIN`'s reply (`ERR join <addr>: <code>: <words>`) back into its kind.
pub fn join_refusal(reply: &str) -> KvError {
    const CODES: &[(&str, JoinKind)] = &[
        ("unreachable: ", JoinKind::Unreachable),
        ("no-such-host: ", JoinKind::NoSuchHost),
        ("wrong-peer: ", JoinKind::WrongPeer),
        ("foreign-world: ", JoinKind::ForeignWorld),
        ("not-cmud: ", JoinKind::NotCmud),
        ("timeout: ", JoinKind::Timeout),
        ("failed: ", JoinKind::Other),
    ];
    for (code, kind) in CODES {
        if let Some((_, words)) = reply.split_once(code) {
            return KvError::Join {
                kind: *kind,
                message: words.trim().to_owned(),
            };
        }
    }
    let (kind, message) = if reply.contains("bad multiaddr") {
        (JoinKind::BadAddr, "that is not a multiaddr".to_owned())
    } else if reply.contains("without a network") {
        (
            JoinKind::NoNetwork,
            "this node runs without a network".to_owned(),
        )
    } else {
        (JoinKind::Other, reply.trim().to_owned())
    };
    KvError::Join { kind, message }
}

/// How the replica words a refusal to write another node's namespace (see `rpc::commands`).
const FOREIGN_NAMESPACE_MARK: &str = "belongs to another node";

/// How the replica words a refusal past this node's quota (`store::quota::OverQuota`).
const OVER_QUOTA_MARK: &str = "quota exceeded:";

impl From<redis::RedisError> for KvError {
    fn from(err: redis::RedisError) -> Self {
        if err.is_io_error() || err.is_connection_dropped() || err.is_connection_refusal() {
            return KvError::Connection(err.to_string());
        }
        if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading) {
            return KvError::Loading;
        }
        // A server error's text without its code (`ERR`); other errors as the crate words them.
        let reason = match (err.code(), err.detail()) {
            (Some(_), Some(detail)) => detail.trim().to_owned(),
            _ => err.to_string(),
        };
        if reason.contains(FOREIGN_NAMESPACE_MARK) {
            KvError::ForeignNamespace(reason)
        } else if reason.starts_with(OVER_QUOTA_MARK) {
            KvError::OverQuota(reason)
        } else {
            KvError::Refused(reason)
        }
    }
}

/// A peer this node is connected to, as `PEERS` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's id.
    pub peer_id: String,
    /// Addresses the peer is reachable at, as far as this node knows.
    pub addrs: Vec<String>,
}

/// The queries the game makes of its co-located replica.
///
/// Every method is one RPC round trip (or one pipelined batch). Implementations are cheap to
/// clone and safe to use from many tasks at once.
pub trait Kv: Clone + Send + Sync + 'static {
    /// The value under `key`, if it has one.
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<String>, KvError>> + Send;
    /// Writes `value` under `key` (a new version, even if the value is the same).
    fn put(&self, key: &str, value: &str) -> impl Future<Output = Result<(), KvError>> + Send;
    /// Writes several keys in one round trip.
    fn put_many(
        &self,
        pairs: &[(String, String)],
    ) -> impl Future<Output = Result<(), KvError>> + Send;
    /// Deletes `key` (leaves a tombstone).
    fn delete(&self, key: &str) -> impl Future<Output = Result<(), KvError>> + Send;
    /// Every live key starting with `prefix`, with its value, in key order (entries that are
    /// not text are left out).
    fn list(
        &self,
        prefix: &str,
    ) -> impl Future<Output = Result<Vec<(String, String)>, KvError>> + Send;
    /// The values of `keys`, in order (`None` for a key without a live text value), in one
    /// round trip where the replica allows it.
    fn get_many(
        &self,
        keys: &[String],
    ) -> impl Future<Output = Result<Vec<Option<String>>, KvError>> + Send {
        async move {
            let mut values = Vec::with_capacity(keys.len());
            for key in keys {
                values.push(match self.get(key).await {
                    Err(KvError::NotText(_)) => None,
                    other => other?,
                });
            }
            Ok(values)
        }
    }
    /// Subscribes to the changes of every key under `prefix`, local or from peers, on a
    /// connection of its own. Fails with [`KvError::NoSubscriptions`] where there are none.
    fn subscribe(
        &self,
        prefix: &str,
    ) -> impl Future<Output = Result<KeySubscription, KvError>> + Send {
        let _ = prefix;
        async { Err(KvError::NoSubscriptions) }
    }
    /// The node's `INFO` fields (`peer_id`, `connected_peers`, `clock_offset_ms`, ...).
    fn info(&self) -> impl Future<Output = Result<BTreeMap<String, String>, KvError>> + Send;
    /// Multiaddrs a friend can `--join` to reach this node, best first, with their kinds.
    fn addrs(&self) -> impl Future<Output = Result<Vec<SharedAddr>, KvError>> + Send;
    /// Peers this node is connected to.
    fn peers(&self) -> impl Future<Output = Result<Vec<PeerInfo>, KvError>> + Send;
    /// Dials a peer now; succeeds once connected to a node of this world with the peer id the
    /// address names; fails with [`KvError::Join`] saying why not.
    fn join(&self, multiaddr: &str) -> impl Future<Output = Result<(), KvError>> + Send;
}

/// [`Kv`] over the loopback RPC port, on one multiplexed connection: many queries can be in
/// flight at once, and all of them are served by the same query actor, so the game always
/// reads its own writes.
#[derive(Clone)]
pub struct KvClient {
    /// The port and credential, for connections made by hand (subscriptions).
    endpoint: RpcEndpoint,
    /// The same as the `redis` crate's settings (credential, protocol).
    client: redis::Client,
    /// The multiplexed connection; clones share it.
    conn: MultiplexedConnection,
    /// A second connection for `JOIN`, made at the start and kept, so a dial never holds up
    /// the game's queries and a node with every client slot taken still answers it.
    join_conn: MultiplexedConnection,
}

impl KvClient {
    /// Connects to the RPC port at `endpoint` and authenticates.
    pub async fn connect(endpoint: &RpcEndpoint) -> Result<Self, KvError> {
        let client = redis::Client::open(endpoint.redis_url())?;
        // The redis crate gives up on a reply after 500 ms by default. A co-located replica
        // that is busy (merging a large bootstrap) or a `JOIN` that dials a far peer can take
        // longer, and a write that timed out here may still have been applied: wait instead.
        let config = AsyncConnectionConfig::new().set_response_timeout(Some(RESPONSE_TIMEOUT));
        let conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let join_conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        Ok(KvClient {
            endpoint: endpoint.clone(),
            client,
            conn,
            join_conn,
        })
    }

    /// A new connection to the RPC port, authenticated and moved to query actor `actor`.
    async fn connect_on_actor(&self, actor: i64) -> Result<TcpStream, KvError> {
        let broken = |err: std::io::Error| KvError::Connection(err.to_string());
        let mut stream = TcpStream::connect(self.endpoint.addr)
            .await
            .map_err(broken)?;
        let mut commands = Vec::new();
        if let Some(creds) = &self.endpoint.credentials {
            let auth = redis::cmd("AUTH")
                .arg(&creds.user)
                .arg(creds.secret.expose())
                .get_packed_command();
            commands.push(auth);
        }
        commands.push(redis::cmd("ACTOR").arg(actor).get_packed_command());
        stream.write_all(&commands.concat()).await.map_err(broken)?;
        // Both answers are one line each: `+OK` or an error. Read byte by byte so nothing
        // past them is taken from the stream the subscription goes on with.
        for _ in 0..commands.len() {
            let mut line = Vec::new();
            while !line.ends_with(b"\r\n") {
                line.push(stream.read_u8().await.map_err(broken)?);
                if line.len() > MAX_HANDSHAKE_LINE_BYTES {
                    return Err(KvError::Refused("handshake answer too long".into()));
                }
            }
            if !line.starts_with(b"+") {
                let text = String::from_utf8_lossy(&line).trim().to_owned();
                return Err(KvError::Refused(text));
            }
        }
        Ok(stream)
    }

    /// Waits until the node serves the world (`INFO` says `loading:0`), calling `syncing`
    /// once first if it does not yet: a node back from a long absence fetches the world from
    /// a peer before it answers data commands.
    pub async fn wait_for_the_world(&self, syncing: impl FnOnce()) -> Result<(), KvError> {
        let loading =
            async || Ok::<_, KvError>(self.info().await?.get("loading").is_some_and(|l| l == "1"));
        if !loading().await? {
            return Ok(());
        }
        syncing();
        while loading().await? {
            tokio::time::sleep(WORLD_POLL).await;
        }
        Ok(())
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, KvError> {
        let mut conn = self.conn.clone();
        Ok(cmd.query_async(&mut conn).await?)
    }

    /// One page of `prefix`: the entries after `after`, and the key to resume after if there
    /// may be more.
    async fn list_page(
        &self,
        prefix: &str,
        after: Option<&[u8]>,
    ) -> Result<(Vec<redis::Value>, Option<Vec<u8>>), KvError> {
        let mut cmd = redis::cmd("LIST");
        cmd.arg(prefix);
        if let Some(after) = after {
            cmd.arg("AFTER").arg(after);
        }
        cmd.arg("COUNT").arg(LIST_PAGE_ENTRIES);
        let mut items: Vec<redis::Value> = self.query(&cmd).await?;
        let resume = match items.pop() {
            Some(redis::Value::BulkString(key)) => Some(key),
            Some(redis::Value::Nil) => None,
            _ => return Err(KvError::Refused("LIST page without a resume key".into())),
        };
        Ok((items, resume))
    }
}

fn into_text(key: &str, raw: Vec<u8>) -> Result<String, KvError> {
    String::from_utf8(raw).map_err(|_| KvError::NotText(key.to_owned()))
}

impl Kv for KvClient {
    async fn get(&self, key: &str) -> Result<Option<String>, KvError> {
        let raw: Option<Vec<u8>> = self.query(redis::cmd("GET").arg(key)).await?;
        raw.map(|raw| into_text(key, raw)).transpose()
    }

    async fn put(&self, key: &str, value: &str) -> Result<(), KvError> {
        self.query::<()>(redis::cmd("SET").arg(key).arg(value))
            .await
    }

    async fn put_many(&self, pairs: &[(String, String)]) -> Result<(), KvError> {
        if pairs.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("MSET");
        for (key, value) in pairs {
            cmd.arg(key).arg(value);
        }
        self.query::<()>(&cmd).await
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.query::<i64>(redis::cmd("DEL").arg(key))
            .await
            .map(drop)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, String)>, KvError> {
        let mut pairs = Vec::new();
        let mut after = None;
        loop {
            let (items, resume) = self.list_page(prefix, after.as_deref()).await?;
            let mut items = items.into_iter();
            while let (Some(key), Some(value)) = (items.next(), items.next()) {
                // Any peer can write any bytes: an entry that is not text is skipped, or one
                // such value would hide the whole world from the game.
                if let (redis::Value::BulkString(key), redis::Value::BulkString(value)) =
                    (key, value)
                    && let (Ok(key), Ok(value)) = (String::from_utf8(key), String::from_utf8(value))
                {
                    pairs.push((key, value));
                }
            }
            match resume {
                Some(key) => after = Some(key),
                None => return Ok(pairs),
            }
        }
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<String>>, KvError> {
        let mut values = Vec::with_capacity(keys.len());
        // MGET takes at most the array limit of arguments: ask in chunks below it.
        for chunk in keys.chunks(MGET_KEYS) {
            let raw: Vec<Option<Vec<u8>>> = self.query(redis::cmd("MGET").arg(chunk)).await?;
            values.extend(
                raw.into_iter()
                    .map(|raw| raw.and_then(|raw| String::from_utf8(raw).ok())),
            );
        }
        Ok(values)
    }

    async fn subscribe(&self, prefix: &str) -> Result<KeySubscription, KvError> {
        // A connection of its own (RESP2 allows nothing else on a subscribed connection), on
        // the actor that answers this client's queries: an event then always follows a change
        // those queries already see, so the read it prompts never finds an older value.
        let actor: i64 = self.query(&redis::cmd("ACTOR")).await?;
        let stream = self.connect_on_actor(actor).await?;
        let settings = self.client.get_connection_info().redis_settings();
        let mut pubsub = redis::aio::PubSub::new(settings, stream).await?;
        pubsub.psubscribe(keyspace::pattern_for(prefix)).await?;
        let (sender, subscription) = KeySubscription::channel(keyspace::SUBSCRIPTION_QUEUE_EVENTS);
        tokio::spawn(keyspace::forward(
            prefix.to_owned(),
            pubsub.into_on_message(),
            sender,
        ));
        Ok(subscription)
    }

    async fn info(&self) -> Result<BTreeMap<String, String>, KvError> {
        let text: String = self.query(&redis::cmd("INFO")).await?;
        Ok(parse_info(&text))
    }

    async fn addrs(&self) -> Result<Vec<SharedAddr>, KvError> {
        // ADDRS answers one [address, kind] pair per address; an unknown kind is a LAN one.
        let rows: Vec<(String, String)> = self.query(&redis::cmd("ADDRS")).await?;
        Ok(rows
            .into_iter()
            .map(|(addr, kind)| SharedAddr {
                addr,
                kind: kind.parse().unwrap_or(AddrKind::Lan),
            })
            .collect())
    }

    async fn peers(&self) -> Result<Vec<PeerInfo>, KvError> {
        // PEERS answers one array per peer: [peer id, addr, addr, ...].
        let rows: Vec<Vec<String>> = self.query(&redis::cmd("PEERS")).await?;
        Ok(rows
            .into_iter()
            .filter_map(|mut row| {
                if row.is_empty() {
                    return None;
                }
                let peer_id = row.remove(0);
                Some(PeerInfo {
                    peer_id,
                    addrs: row,
                })
            })
            .collect())
    }

    async fn join(&self, multiaddr: &str) -> Result<(), KvError> {
        // The node answers JOIN once the dial is done (up to its join timeout) and answers a
        // connection's commands in order: on the shared connection, every other query of the
        // game would wait that long behind it.
        let mut conn = self.join_conn.clone();
        match redis::cmd("JOIN")
            .arg(multiaddr)
            .query_async::<()>(&mut conn)
            .await
            .map_err(KvError::from)
        {
            Err(KvError::Refused(reply)) => Err(join_refusal(&reply)),
            other => other,
        }
    }
}

/// Parses `INFO` text (`# Section` headers and `field:value` lines) into a map.
pub fn parse_info(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once(':'))
        .map(|(field, value)| (field.trim().to_owned(), value.trim().to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_join_is_read_back_into_its_kind() {
        let kind = |reply: &str| match join_refusal(reply) {
            KvError::Join { kind, message } => (kind, message),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            kind(
                "ResponseError: join /ip4/127.0.0.1/tcp/1: unreachable: nothing answers at that address"
            ),
            (
                JoinKind::Unreachable,
                "nothing answers at that address".into()
            )
        );
        assert_eq!(kind("join x: bad multiaddr x").0, JoinKind::BadAddr);
        assert_eq!(
            kind("join /dns4/a: no-such-host: the host name does not resolve").0,
            JoinKind::NoSuchHost
        );
        assert_eq!(kind("something new").0, JoinKind::Other);
    }
}
