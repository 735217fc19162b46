//! A store label served by a Redis server (`type = "redis"` in Spin's
//! runtime config), on the `redis` crate's auto-reconnecting multiplexed
//! connection: every request of every instance shares one socket, commands
//! pipelined as they come.
//!
//! Keys and values are Spin's Redis store's own: a key is the key, with no
//! label prefix (so labels sharing a server share its keyspace, and
//! `list_keys` lists every label's keys there; hongbao's labels never
//! collide, and only the purge lists keys); `increment` is `INCRBY` (decimal text); `set_many` is
//! `MSET`. So `spin up` and `hongbao-host up` can serve one dataset side by
//! side. Unlike Spin 4.0.2's store, compare-and-set is truly atomic and says
//! what it did: a Lua script compares the key's value with what `current()`
//! read (absent included) and writes only if they are equal, in one step on
//! the server. Our records carry a `version`, so equal values mean an
//! unchanged record.
//!
//! A failed call (connection lost, timeout) is an error for the guest: its
//! effect is unknown, and every operation retries idempotently. Nothing is
//! retried here, where a repeated `INCRBY` would count twice.

use super::{Faults, KvError, LIST_PAGE, Page, Stats};
use prometheus_client::metrics::counter::Counter;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Compare-and-set in one step: `ARGV[1]` is `1` if `current()` found a
/// value (then `ARGV[2]` is it), `0` if it found none; `ARGV[3]` is the new
/// value. Answers `{1, false}` when it wrote, `{0, now}` when it did not.
const SWAP_SCRIPT: &str = r"
local now = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if now ~= ARGV[2] then return {0, now} end
elseif now then
  return {0, now}
end
redis.call('SET', KEYS[1], ARGV[3])
return {1, false}
";

pub struct RedisKv {
    url: String,
    connection: ConnectionManager,
    swap: redis::Script,
    pub stats: Stats,
    faults: OnceLock<Faults>,
    /// Failed calls (a metric; unregistered unless `count_errors_in`).
    errors: Counter,
}

/// What a swap found when it did not write: the key's value now.
pub type Found = Option<Vec<u8>>;

fn error(e: redis::RedisError) -> KvError {
    KvError(format!("redis: {e}"))
}

impl RedisKv {
    /// A store on the Redis server at `url` (`redis://host:port[/db]`). The
    /// connection is made on first use and remade whenever it is lost, so a
    /// host starts, and keeps serving other stores, while a server is down.
    /// Needs a Tokio runtime.
    pub fn connect(url: &str) -> Result<RedisKv, KvError> {
        let client = redis::Client::open(url).map_err(|e| KvError(format!("redis url {url}: {e}")))?;
        // Bounded waits: a dead server answers 503 in seconds, not never.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let connection = ConnectionManager::new_lazy_with_config(client, config).map_err(error)?;
        Ok(RedisKv {
            url: url.to_owned(),
            connection,
            swap: redis::Script::new(SWAP_SCRIPT),
            stats: Stats::default(),
            faults: OnceLock::new(),
            errors: Counter::default(),
        })
    }

    /// Counts every failed call in `errors` (a host's metric).
    pub fn count_errors_in(self, errors: Counter) -> RedisKv {
        RedisKv { errors, ..self }
    }

    fn failed(&self, e: redis::RedisError) -> KvError {
        self.errors.inc();
        error(e)
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// From now on, inject `faults` (once per store).
    pub fn inject(&self, faults: Faults) -> Result<(), KvError> {
        self.faults.set(faults).map_err(|_| KvError("faults are injected already".into()))
    }

    /// Counts the call and fails it if an injected fault says so; then the
    /// connection to send it on (a cheap handle to the shared one).
    fn call(&self) -> Result<ConnectionManager, KvError> {
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        if self.faults.get().is_some_and(|f| f.happens(f.error)) {
            return Err(KvError("injected fault: the call failed and did nothing".into()));
        }
        Ok(self.connection.clone())
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, KvError> {
        let mut connection = self.call()?;
        cmd.query_async(&mut connection).await.map_err(|e| self.failed(e))
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.query(redis::cmd("GET").arg(key)).await
    }

    pub async fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.query(redis::cmd("SET").arg(key).arg(value)).await
    }

    pub async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.query::<i64>(redis::cmd("DEL").arg(key)).await.map(drop)
    }

    pub async fn exists(&self, key: &str) -> Result<bool, KvError> {
        self.query::<i64>(redis::cmd("EXISTS").arg(key)).await.map(|n| n > 0)
    }

    pub async fn get_many(&self, keys: &[String]) -> Result<Vec<(String, Option<Vec<u8>>)>, KvError> {
        if self.faults.get().is_some_and(|f| f.batch_reads_fail) {
            self.stats.calls.fetch_add(1, Ordering::Relaxed);
            return Err(KvError(
                "wrong number of arguments for 'keys' command (as Spin 4.0.2's Redis get-many)".into(),
            ));
        }
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Option<Vec<u8>>> = self.query(redis::cmd("MGET").arg(keys)).await?;
        Ok(keys.iter().cloned().zip(values).collect())
    }

    pub async fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("MSET");
        for (key, value) in entries {
            cmd.arg(key).arg(value);
        }
        self.query(&cmd).await
    }

    pub async fn delete_many(&self, keys: &[String]) -> Result<(), KvError> {
        if keys.is_empty() {
            return Ok(());
        }
        self.query::<i64>(redis::cmd("DEL").arg(keys)).await.map(drop)
    }

    /// `INCRBY`: the key as decimal text, as Spin's Redis store keeps counters.
    pub async fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        self.query(redis::cmd("INCRBY").arg(key).arg(delta)).await
    }

    /// One `SCAN` page (about `LIST_PAGE` keys, maybe none, maybe one twice;
    /// `KEYS` would block the server)
    /// from `cursor`, and the cursor to go on from (`None`: done).
    pub async fn list_keys(&self, cursor: Option<&str>) -> Result<Page, KvError> {
        let at: u64 = match cursor {
            None => 0,
            Some(text) => text.parse().map_err(|_| KvError(format!("list_keys: bad cursor {text}")))?,
        };
        let mut connection = self.call()?;
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(at)
            .arg("COUNT")
            .arg(LIST_PAGE)
            .query_async(&mut connection)
            .await
            .map_err(|e| self.failed(e))?;
        Ok(Page { keys, cursor: (next != 0).then(|| next.to_string()) })
    }

    /// Writes `value` if the key still holds `seen` (`None`: still absent).
    /// `Err(found)` when it did not write, with what the key holds now.
    pub async fn swap(&self, key: &str, seen: &Option<Vec<u8>>, value: &[u8]) -> Result<Result<(), Found>, KvError> {
        let mut connection = self.call()?;
        self.stats.swaps.fetch_add(1, Ordering::Relaxed);
        let mut invocation = self.swap.key(key);
        match seen {
            Some(bytes) => invocation.arg("1").arg(&bytes[..]),
            None => invocation.arg("0").arg(""),
        };
        let (wrote, now): (i64, Found) =
            invocation.arg(value).invoke_async(&mut connection).await.map_err(|e| self.failed(e))?;
        if wrote != 1 {
            self.stats.swaps_failed.fetch_add(1, Ordering::Relaxed);
            return Ok(Err(now));
        }
        if self.faults.get().is_some_and(|f| f.happens(f.cas_lie)) {
            // Written, yet reported as failed (what Spin 4.0.2's store does).
            return Ok(Err(Some(value.to_vec())));
        }
        Ok(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::external::RedisServer;
    use std::sync::Arc;

    /// Every key, page by page, sorted and each once.
    async fn all_keys(kv: &RedisKv) -> Vec<String> {
        let mut keys = Vec::new();
        let mut cursor = None;
        loop {
            let page = kv.list_keys(cursor.as_deref()).await.unwrap();
            keys.extend(page.keys);
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        keys.sort();
        keys.dedup();
        keys
    }

    /// A server of our own, or `None` (after a line saying so) without one.
    fn server() -> Option<RedisServer> {
        if !RedisServer::available() {
            eprintln!("skipped: no redis-server binary (apt-get install redis-server)");
            return None;
        }
        Some(RedisServer::start().expect("redis-server starts"))
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn speaks_spins_encoding_and_batches() {
        let Some(server) = server() else { return };
        let kv = RedisKv::connect(&server.url()).unwrap();
        assert_eq!(kv.get("a").await.unwrap(), None);
        kv.set("a", b"1").await.unwrap();
        assert!(kv.exists("a").await.unwrap());
        kv.set_many(&[("b".into(), b"2".to_vec()), ("c".into(), b"3".to_vec())]).await.unwrap();
        let keys: Vec<String> = ["a", "x", "c"].map(String::from).to_vec();
        let found = kv.get_many(&keys).await.unwrap();
        assert_eq!(
            found,
            vec![("a".into(), Some(b"1".to_vec())), ("x".into(), None), ("c".into(), Some(b"3".to_vec()))]
        );
        // Counters are INCRBY's decimal text, as Spin's Redis store keeps them.
        assert_eq!(kv.increment("n", 5).await.unwrap(), 5);
        assert_eq!(kv.increment("n", 0).await.unwrap(), 5);
        assert_eq!(kv.get("n").await.unwrap(), Some(b"5".to_vec()));
        assert_eq!(all_keys(&kv).await, ["a", "b", "c", "n"]);
        kv.delete_many(&["b".into(), "c".into()]).await.unwrap();
        kv.delete("a").await.unwrap();
        assert_eq!(all_keys(&kv).await, ["n"]);
        assert_eq!(kv.stats.swaps.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn swap_writes_only_over_what_current_saw_and_says_so() {
        let Some(server) = server() else { return };
        let kv = RedisKv::connect(&server.url()).unwrap();
        // From absent: refused once the key appeared, with what it holds.
        kv.set("k", b"v1").await.unwrap();
        assert_eq!(kv.swap("k", &None, b"mine").await.unwrap(), Err(Some(b"v1".to_vec())));
        // Over a value that changed meanwhile: refused.
        assert_eq!(kv.swap("k", &Some(b"v0".to_vec()), b"mine").await.unwrap(), Err(Some(b"v1".to_vec())));
        assert_eq!(kv.get("k").await.unwrap(), Some(b"v1".to_vec()));
        // Over what is there: written, and reported as written.
        assert_eq!(kv.swap("k", &Some(b"v1".to_vec()), b"v2").await.unwrap(), Ok(()));
        assert_eq!(kv.get("k").await.unwrap(), Some(b"v2".to_vec()));
        assert_eq!(kv.swap("new", &None, b"first").await.unwrap(), Ok(()));
        assert_eq!(kv.get("new").await.unwrap(), Some(b"first".to_vec()));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn concurrent_swaps_never_lose_an_update_nor_lie() {
        let Some(server) = server() else { return };
        let kv = Arc::new(RedisKv::connect(&server.url()).unwrap());
        kv.set("counter", b"0").await.unwrap();
        let (tasks, each) = (16, 25);
        let mut handles = Vec::new();
        for _ in 0..tasks {
            let kv = Arc::clone(&kv);
            handles.push(tokio::spawn(async move {
                let mut wrote = 0;
                while wrote < each {
                    let seen = kv.get("counter").await.unwrap();
                    let n: u64 = String::from_utf8(seen.clone().unwrap()).unwrap().parse().unwrap();
                    if kv.swap("counter", &seen, (n + 1).to_string().as_bytes()).await.unwrap().is_ok() {
                        wrote += 1;
                    }
                }
            }));
        }
        for handle in handles {
            handle.await.unwrap();
        }
        // Every swap that said "written" wrote, and none that said "failed" did.
        assert_eq!(kv.get("counter").await.unwrap(), Some((tasks * each).to_string().into_bytes()));
        let (swaps, failed) = (kv.stats.swaps.load(Ordering::Relaxed), kv.stats.swaps_failed.load(Ordering::Relaxed));
        assert_eq!(swaps - failed, (tasks * each) as u64);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn injected_lies_write_yet_report_failure_and_errors_do_nothing() {
        let Some(server) = server() else { return };
        let kv = RedisKv::connect(&server.url()).unwrap();
        kv.inject(Faults::parse("cas_lie=1").unwrap()).unwrap();
        kv.set("k", b"a").await.unwrap();
        assert_eq!(kv.swap("k", &Some(b"a".to_vec()), b"b").await.unwrap(), Err(Some(b"b".to_vec())));
        assert_eq!(kv.get("k").await.unwrap(), Some(b"b".to_vec()), "written all the same");
        let kv = RedisKv::connect(&server.url()).unwrap();
        kv.inject(Faults::parse("error=1").unwrap()).unwrap();
        assert!(kv.set("k", b"c").await.is_err());
        let plain = RedisKv::connect(&server.url()).unwrap();
        assert_eq!(plain.get("k").await.unwrap(), Some(b"b".to_vec()), "a failed call did nothing");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_restarted_server_is_reached_again_and_keeps_what_it_acknowledged() {
        if !RedisServer::available() {
            return eprintln!("skipped: no redis-server binary");
        }
        let mut server = RedisServer::start_durable().unwrap();
        let kv = RedisKv::connect(&server.url()).unwrap();
        kv.set("kept", b"yes").await.unwrap();
        assert_eq!(kv.increment("n", 3).await.unwrap(), 3);
        tokio::task::block_in_place(|| server.kill_and_restart()).unwrap();
        // The first call may see the dead connection; the manager reconnects.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let value = loop {
            match kv.get("kept").await {
                Ok(value) => break value,
                Err(e) => assert!(std::time::Instant::now() < deadline, "never reconnected: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(value, Some(b"yes".to_vec()));
        assert_eq!(kv.increment("n", 0).await.unwrap(), 3);
    }
}
