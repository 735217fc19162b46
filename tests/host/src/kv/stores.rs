//! The stores an app may open, by label, as Spin resolves them: `default`
//! and every label of the runtime config, each either the host's own store
//! (`Kv`: memory, or the durable SQLite file) or a Redis server.
//!
//! Every label of type `spin` shares the one `Kv` (Spin's SQLite layout keeps
//! the label in a column), so one durability ticket covers a request's local
//! reads and writes. A Redis label answers when Redis has the write (with
//! `appendfsync always`, on disk): its calls need no ticket.

use super::redis::RedisKv;
use super::{CasFailed, Faults, KeyValues, Kv, KvError, Page, StatsSnapshot, Ticket};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Where one label's keys live.
pub enum Backend {
    Local(Arc<Kv>),
    Redis(RedisKv),
}

/// What a compare-and-set's `current()` saw, for its swap to compare.
#[derive(Debug, Clone)]
pub enum Seen {
    /// The local store's write sequence number (0: absent).
    Seq(u64),
    /// Redis: the value itself (`None`: absent).
    Value(Option<Vec<u8>>),
}

/// Every answer of a local call carries a ticket; a Redis answer needs none.
const NO_TICKET: Ticket = Ticket(0);

impl Backend {
    pub async fn get(&self, label: &str, key: &str) -> Result<(Option<Vec<u8>>, Ticket), KvError> {
        match self {
            Backend::Local(kv) => kv.get(label, key),
            Backend::Redis(redis) => Ok((redis.get(key).await?, NO_TICKET)),
        }
    }

    pub async fn set(&self, label: &str, key: &str, value: Vec<u8>) -> Result<Ticket, KvError> {
        match self {
            Backend::Local(kv) => kv.set(label, key, value),
            Backend::Redis(redis) => redis.set(key, &value).await.map(|()| NO_TICKET),
        }
    }

    pub async fn delete(&self, label: &str, key: &str) -> Result<Ticket, KvError> {
        match self {
            Backend::Local(kv) => kv.delete(label, key),
            Backend::Redis(redis) => redis.delete(key).await.map(|()| NO_TICKET),
        }
    }

    pub async fn exists(&self, label: &str, key: &str) -> Result<(bool, Ticket), KvError> {
        match self {
            Backend::Local(kv) => kv.exists(label, key),
            Backend::Redis(redis) => Ok((redis.exists(key).await?, NO_TICKET)),
        }
    }

    /// One page (the cursor is the backend's own: a key, or SCAN's number).
    pub async fn list_keys(&self, label: &str, cursor: Option<&str>) -> Result<Page, KvError> {
        match self {
            Backend::Local(kv) => kv.list_keys(label, cursor).await,
            Backend::Redis(redis) => redis.list_keys(cursor).await,
        }
    }

    pub async fn get_many(&self, label: &str, keys: &[String]) -> Result<(KeyValues, Ticket), KvError> {
        match self {
            Backend::Local(kv) => kv.get_many(label, keys),
            Backend::Redis(redis) => Ok((redis.get_many(keys).await?, NO_TICKET)),
        }
    }

    pub async fn set_many(&self, label: &str, entries: Vec<(String, Vec<u8>)>) -> Result<Ticket, KvError> {
        match self {
            Backend::Local(kv) => {
                let mut last = Ticket(0);
                for (key, value) in entries {
                    last = last.max(kv.set(label, &key, value)?);
                }
                Ok(last)
            }
            Backend::Redis(redis) => redis.set_many(&entries).await.map(|()| NO_TICKET),
        }
    }

    pub async fn delete_many(&self, label: &str, keys: &[String]) -> Result<Ticket, KvError> {
        match self {
            Backend::Local(kv) => {
                let mut last = Ticket(0);
                for key in keys {
                    last = last.max(kv.delete(label, key)?);
                }
                Ok(last)
            }
            Backend::Redis(redis) => redis.delete_many(keys).await.map(|()| NO_TICKET),
        }
    }

    pub async fn increment(&self, label: &str, key: &str, delta: i64) -> Result<(i64, Ticket), KvError> {
        match self {
            Backend::Local(kv) => kv.increment(label, key, delta),
            Backend::Redis(redis) => Ok((redis.increment(key, delta).await?, NO_TICKET)),
        }
    }

    /// `cas.current()`: the value, and what the swap will compare.
    pub async fn current(&self, label: &str, key: &str) -> Result<(Option<Vec<u8>>, Seen, Ticket), KvError> {
        match self {
            Backend::Local(kv) => kv.current(label, key).map(|(value, seq, ticket)| (value, Seen::Seq(seq), ticket)),
            Backend::Redis(redis) => {
                let value = redis.get(key).await?;
                Ok((value.clone(), Seen::Value(value), NO_TICKET))
            }
        }
    }

    /// `swap`: writes if the key is as `seen` (`None`: `current()` was never
    /// called, which means "absent"). `Err(now)`: not written, or (a lie
    /// injected for tests) written but reported as failed; `now` is what a
    /// fresh handle has seen.
    pub async fn swap(
        &self,
        label: &str,
        key: &str,
        seen: Option<Seen>,
        value: Vec<u8>,
    ) -> Result<Result<Ticket, Seen>, KvError> {
        match (self, seen) {
            (Backend::Local(kv), seen) => {
                let expected = match seen {
                    Some(Seen::Seq(seq)) => seq,
                    None => 0,
                    Some(Seen::Value(_)) => return Err(KvError("a Redis handle swapped on a local store".into())),
                };
                Ok(kv.swap(label, key, expected, value)?.map_err(|CasFailed { current_seq }| Seen::Seq(current_seq)))
            }
            (Backend::Redis(redis), seen) => {
                let expected = match seen {
                    Some(Seen::Value(value)) => value,
                    None => None,
                    Some(Seen::Seq(_)) => return Err(KvError("a local handle swapped on a Redis store".into())),
                };
                Ok(redis.swap(key, &expected, &value).await?.map(|()| NO_TICKET).map_err(Seen::Value))
            }
        }
    }
}

/// The app's stores by label, and the host's own store under the `spin` ones.
pub struct Stores {
    by_label: BTreeMap<String, Arc<Backend>>,
    local: Arc<Kv>,
}

impl Stores {
    /// `labels`: each label's Redis server, or `None` for the local store.
    pub fn new(local: Kv, labels: BTreeMap<String, Option<RedisKv>>) -> Stores {
        let local = Arc::new(local);
        let shared_local = Arc::new(Backend::Local(Arc::clone(&local)));
        let by_label = labels
            .into_iter()
            .map(|(label, redis)| {
                let backend = match redis {
                    Some(redis) => Arc::new(Backend::Redis(redis)),
                    None => Arc::clone(&shared_local),
                };
                (label, backend)
            })
            .collect();
        Stores { by_label, local }
    }

    pub fn get(&self, label: &str) -> Option<&Backend> {
        self.by_label.get(label).map(|b| &**b)
    }

    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.by_label.keys().map(String::as_str)
    }

    /// Where each label's keys live, in words (for the log).
    pub fn describe(&self) -> Vec<String> {
        self.by_label
            .iter()
            .map(|(label, backend)| match &**backend {
                Backend::Local(_) => format!("{label}: the host's store"),
                Backend::Redis(redis) => format!("{label}: {}", redis.url()),
            })
            .collect()
    }

    pub fn uses_redis(&self) -> bool {
        self.by_label.values().any(|b| matches!(**b, Backend::Redis(_)))
    }

    /// Waits until the local store has made everything up to `ticket` durable.
    pub async fn wait(&self, ticket: Ticket) -> Result<(), KvError> {
        self.local.wait(ticket).await
    }

    /// Blocks until everything written locally is durable (for shutdown).
    pub fn flush(&self) -> Result<(), KvError> {
        self.local.flush()
    }

    /// Call counters of every store, summed (the local one counted once).
    pub fn stats(&self) -> StatsSnapshot {
        self.by_label
            .values()
            .filter_map(|backend| match &**backend {
                Backend::Redis(redis) => Some(redis.stats.snapshot()),
                Backend::Local(_) => None,
            })
            .fold(self.local.stats(), |total, s| total + s)
    }

    /// Makes every store fail as `faults` says (each with its own draws).
    pub fn inject(&self, faults: Faults) -> Result<(), KvError> {
        for backend in self.by_label.values() {
            if let Backend::Redis(redis) = &**backend {
                redis.inject(faults.clone())?;
            }
        }
        self.local.inject(faults)
    }
}
