//! [`Watched`]: the replica as the player's mutation task sees it, each acknowledged write of
//! the player's applied to the session's [`View`] at once (read-your-writes).
//!
//! Owns nothing but the pairing; reads go to the replica unchanged.

use std::collections::BTreeMap;

use super::watch::View;
use crate::rpc::client::{PeerInfo, SharedAddr};
use crate::rpc::{Kv, KvError};

/// The replica, with the player's own writes applied to the view once acknowledged.
#[derive(Clone)]
pub struct Watched<K> {
    /// The replica.
    kv: K,
    /// The view the writes go to.
    view: View,
}

impl<K> Watched<K> {
    /// `kv` with its writes applied to `view`.
    pub fn new(kv: K, view: View) -> Self {
        Watched { kv, view }
    }
}

impl<K: Kv> Kv for Watched<K> {
    async fn get(&self, key: &str) -> Result<Option<String>, KvError> {
        self.kv.get(key).await
    }
    async fn put(&self, key: &str, value: &str) -> Result<(), KvError> {
        self.kv.put(key, value).await?;
        self.view.wrote([(key.to_owned(), Some(value.to_owned()))]);
        Ok(())
    }
    async fn put_many(&self, pairs: &[(String, String)]) -> Result<(), KvError> {
        self.kv.put_many(pairs).await?;
        self.view
            .wrote(pairs.iter().map(|(k, v)| (k.clone(), Some(v.clone()))));
        Ok(())
    }
    async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.kv.delete(key).await?;
        self.view.wrote([(key.to_owned(), None)]);
        Ok(())
    }
    async fn list(&self, prefix: &str) -> Result<Vec<(String, String)>, KvError> {
        self.kv.list(prefix).await
    }
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<String>>, KvError> {
        self.kv.get_many(keys).await
    }
    async fn info(&self) -> Result<BTreeMap<String, String>, KvError> {
        self.kv.info().await
    }
    async fn addrs(&self) -> Result<Vec<SharedAddr>, KvError> {
        self.kv.addrs().await
    }
    async fn peers(&self) -> Result<Vec<PeerInfo>, KvError> {
        self.kv.peers().await
    }
    async fn join(&self, multiaddr: &str) -> Result<(), KvError> {
        self.kv.join(multiaddr).await
    }
}
