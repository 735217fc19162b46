//! The host's key-value store.
//!
//! A map in memory, with a sequence number per entry: compare-and-set
//! compares that number (captured at `current()`), not the value, so it is
//! strict: any write in between fails the swap, and a swap from "absent"
//! fails if the key exists when it swaps (one written and deleted again in
//! between is absent again: such a swap goes through). That is stricter than
//! Spin's SQLite store (value comparison, blind upsert from absent) and than
//! its Redis store (which reports failure on every swap). It is not
//! `hongbao::store::memory` (a test-only `Store` of the domain crate): this
//! one serves `wasi:keyvalue` by store label, with the journal and durability
//! tickets below, which the domain crate has no business knowing.
//!
//! In memory the map is the store. Durable, it is a bounded cache over the
//! SQLite table (`State`): a miss reads the row back, entries already on
//! disk are evicted least recently used first, entries not yet on disk stay.
//! So the resident set follows the cache budget, not the table's size.
//!
//! Durability is optional and layered under the map: with a journal
//! (`sqlite::Journal`), every mutation is queued in sequence order while the
//! map is locked, and a writer thread commits whatever is queued in one
//! SQLite transaction (group commit: one fsync for every request waiting).
//! An operation answers with a `Ticket` at once (host functions never wait
//! for the disk); the request remembers the highest ticket it wrote or read,
//! and the server awaits that one after the component has answered and
//! before the response leaves (`kv::wasi`), so nothing a client was told is
//! stored can be lost on kill -9, and no client sees a value read from a
//! write that could still vanish.
//!
//! Counters (written by `increment`) and values (written by `set`/`swap`) are
//! kept apart while they are cached: `get` of a counter and `increment` of a
//! value are errors, as they are bugs on every real backend. On disk a counter
//! is 8 bytes little-endian, as Spin's SQLite store keeps it (and read back,
//! it is those bytes to `get`).

pub mod redis;
pub mod sqlite;
pub mod stores;
pub mod wasi;

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvError(pub String);

impl std::fmt::Display for KvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A write sequence number to wait for before answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Ticket(pub u64);

#[derive(Debug, Clone)]
enum Value {
    Bytes(Vec<u8>),
    Counter(i64),
    /// Known absent: deleted (kept until the delete is on disk, so a cache
    /// miss cannot read the old row back), or found missing on disk.
    Absent,
}

#[derive(Debug, Clone)]
struct Entry {
    value: Value,
    /// Unique per write or read-back: what compare-and-set compares.
    seq: u64,
    /// What an answer based on this entry waits for: its write's sequence
    /// number, or 0 for what was read from disk (durable already).
    ticket: u64,
}

impl Entry {
    fn present(&self) -> bool {
        !matches!(self.value, Value::Absent)
    }

    /// The seq `current()` reports: 0 when absent.
    fn cas_seq(&self) -> u64 {
        if self.present() { self.seq } else { 0 }
    }
}

/// A mutation to make durable, in sequence order.
#[derive(Debug, Clone)]
pub struct Mutation {
    pub label: String,
    pub key: String,
    /// `None` deletes.
    pub value: Option<Vec<u8>>,
    pub seq: u64,
}

/// What one cached entry costs in RAM besides its key and value (the key's
/// and the entry's headers, the list links, the map's slot), for the budget.
const ENTRY_OVERHEAD: usize = 96;

fn entry_size(key: &str, value: &Value) -> usize {
    ENTRY_OVERHEAD
        + key.len()
        + match value {
            Value::Bytes(b) => b.len(),
            Value::Counter(_) | Value::Absent => 0,
        }
}

/// What a durable store keeps in RAM by default (`up --kv-cache-mib`): the
/// entries used last, plus every write not yet on disk.
pub const DEFAULT_CACHE_BYTES: usize = 128 << 20;

/// A map keyed by strings, hashed with foldhash (seeded per process), the
/// hasher hashbrown itself defaults to: SipHash showed in the open phase's
/// profile, for keys our own components build.
type Map<V> = HashMap<String, V, foldhash::fast::RandomState>;

/// One label's entries, least recently used first (hashlink, which rusqlite
/// already brings, keeps the order in its linked hash map).
type Lru = hashlink::LruCache<String, Entry, foldhash::fast::RandomState>;

struct Table {
    entries: Lru,
    bytes: usize,
}

impl Default for Table {
    fn default() -> Table {
        Table { entries: Lru::with_hasher(usize::MAX, Default::default()), bytes: 0 }
    }
}

/// Tables per label, each key's chosen by its hash. A hash map grows in one
/// step, moving every entry under the store's one lock: in the memory soak's
/// profile that step (`reserve_rehash`) stalled the whole store for seconds
/// once a label held millions of keys. Split, each step moves a 64th.
const SHARDS: usize = 64;

/// Which of a label's tables holds `key`: a fixed hasher of its own, so the
/// shard says nothing about where the key lands inside its (randomly seeded) table.
fn shard(key: &str) -> usize {
    use std::hash::BuildHasher;
    const SHARD_HASHER: foldhash::fast::FixedState = foldhash::fast::FixedState::with_seed(0x5e7_5ba2d);
    (SHARD_HASHER.hash_one(key) % SHARDS as u64) as usize
}

/// label → shard → key → entry. Nested so lookups borrow `&str` and allocate nothing.
/// In memory the map is the store. Durable, it is a cache of the SQLite
/// table: entries not yet on disk stay, the others are evicted least
/// recently used first once `budget` bytes are cached, and a miss reads the
/// row back (caching what it found, absence too).
struct State {
    tables: Map<Vec<Table>>,
    next_seq: u64,
    /// The latest write (read-backs take sequence numbers too, but nothing
    /// waits for them): what `flush` waits for.
    last_written: u64,
    bytes: usize,
    budget: usize,
    /// Durable: where misses are read from.
    disk: Option<sqlite::Reader>,
}

impl State {
    fn new(budget: usize, disk: Option<sqlite::Reader>) -> State {
        State { tables: Map::default(), next_seq: 1, last_written: 0, bytes: 0, budget, disk }
    }

    /// The key's entry, read back from disk on a miss (`None`: absent, in memory).
    fn entry(&mut self, label: &str, key: &str, durable: u64) -> Result<Option<&Entry>, KvError> {
        if self.disk.is_some() && !self.table(label, key).is_some_and(|t| t.entries.contains_key(key)) {
            self.read_back(label, key, durable)?;
        }
        Ok(self.table_mut(label, key).and_then(|t| t.entries.get(key)))
    }

    fn read_back(&mut self, label: &str, key: &str, durable: u64) -> Result<(), KvError> {
        let Some(disk) = &mut self.disk else { return Ok(()) };
        let value = disk.get(label, key)?.map_or(Value::Absent, Value::Bytes);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.put(label, key, Entry { value, seq, ticket: 0 }, durable);
        Ok(())
    }

    /// Caches `entry` (most recently used), evicting first if over budget.
    fn put(&mut self, label: &str, key: &str, entry: Entry, durable: u64) {
        let size = entry_size(key, &entry.value);
        let old = self.table_mut(label, key).and_then(|t| t.entries.get_mut(key)).map(|e| entry_size(key, &e.value));
        if self.bytes + size > self.budget.saturating_add(old.unwrap_or(0)) {
            self.evict(size.saturating_sub(old.unwrap_or(0)), durable);
        }
        let shards = match self.tables.get_mut(label) {
            Some(shards) => shards,
            None => {
                self.tables.entry(label.to_owned()).or_insert_with(|| (0..SHARDS).map(|_| Table::default()).collect())
            }
        };
        let table = &mut shards[shard(key)];
        match (table.entries.get_mut(key), old) {
            (Some(slot), Some(old)) => {
                *slot = entry;
                table.bytes = table.bytes + size - old;
                self.bytes = self.bytes + size - old;
            }
            _ => {
                table.entries.insert(key.to_owned(), entry);
                table.bytes += size;
                self.bytes += size;
            }
        }
    }

    fn table(&self, label: &str, key: &str) -> Option<&Table> {
        self.tables.get(label).map(|shards| &shards[shard(key)])
    }

    fn table_mut(&mut self, label: &str, key: &str) -> Option<&mut Table> {
        self.tables.get_mut(label).map(|shards| &mut shards[shard(key)])
    }

    fn remove(&mut self, label: &str, key: &str) {
        if let Some(table) = self.table_mut(label, key)
            && let Some(entry) = table.entries.remove(key)
        {
            let size = entry_size(key, &entry.value);
            table.bytes -= size;
            self.bytes -= size;
        }
    }

    /// Evicts least recently used entries until `room` more bytes fit, from
    /// the largest table first. Entries not yet durable (`ticket > durable`)
    /// are kept (moved to the back): the disk does not have them yet.
    fn evict(&mut self, room: usize, durable: u64) {
        let mut kept = 0;
        while self.bytes + room > self.budget && kept < 64 {
            let Some(table) = self.tables.values_mut().flatten().max_by_key(|t| t.bytes) else { return };
            let Some((key, entry)) = table.entries.remove_lru() else { return };
            if entry.ticket > durable {
                table.entries.insert(key, entry);
                kept += 1;
                continue;
            }
            let size = entry_size(&key, &entry.value);
            table.bytes -= size;
            self.bytes -= size;
        }
    }
}

/// Keys per `list_keys` page, in every backend.
pub const LIST_PAGE: usize = 1000;

/// A page of keys and where the next one starts (`None`: this was the last).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Page {
    pub keys: Vec<String>,
    pub cursor: Option<String>,
}

/// Keys with their values (`None`: absent), as a batch read returns them.
pub type KeyValues = Vec<(String, Option<Vec<u8>>)>;

/// Counts of store calls, for the benchmarks.
#[derive(Debug, Default)]
pub struct Stats {
    pub calls: AtomicU64,
    pub swaps: AtomicU64,
    pub swaps_failed: AtomicU64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub calls: u64,
    pub swaps: u64,
    pub swaps_failed: u64,
}

impl Stats {
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            calls: self.calls.load(Ordering::Relaxed),
            swaps: self.swaps.load(Ordering::Relaxed),
            swaps_failed: self.swaps_failed.load(Ordering::Relaxed),
        }
    }
}

/// Several stores' counters together.
impl std::ops::Add for StatsSnapshot {
    type Output = StatsSnapshot;

    fn add(self, other: StatsSnapshot) -> StatsSnapshot {
        StatsSnapshot {
            calls: self.calls + other.calls,
            swaps: self.swaps + other.swaps,
            swaps_failed: self.swaps_failed + other.swaps_failed,
        }
    }
}

pub struct Kv {
    state: Mutex<State>,
    journal: Option<sqlite::Journal>,
    pub stats: Stats,
    faults: std::sync::OnceLock<Faults>,
}

/// Injected store faults (`hongbao-host up --faults error=0.02,cas_lie=0.05`),
/// to show the components keep the books right on a store that misbehaves as
/// real ones do: `error`, the share of calls that fail without effect;
/// `cas_lie`, the share of swaps that write but report `cas-failed` (as Spin
/// 4.0.2's Redis store does on every swap).
#[derive(Debug)]
pub struct Faults {
    pub error: f64,
    pub cas_lie: f64,
    /// Batch reads fail, as Spin 4.0.2's Redis `get-many` does (it sends `KEYS`).
    pub batch_reads_fail: bool,
    /// A splitmix64 state: the draws need no quality, only no lock.
    state: AtomicU64,
}

impl Faults {
    pub fn none() -> Faults {
        Faults { error: 0.0, cas_lie: 0.0, batch_reads_fail: false, state: AtomicU64::new(0x5eed) }
    }

    /// What Spin 4.0.2's Redis store does (`--kv-compat spin-redis`, see
    /// ../shared/bin/README.md): every swap reports `cas-failed`, whether
    /// it wrote or not, and `get-many` fails.
    pub fn spin_redis(self) -> Faults {
        Faults { cas_lie: 1.0, batch_reads_fail: true, ..self }
    }

    /// Parses `name=probability` pairs, comma-separated.
    pub fn parse(text: &str) -> Result<Faults, String> {
        let mut faults = Faults::none();
        for pair in text.split(',').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').ok_or_else(|| format!("{pair}: want name=probability"))?;
            let p: f64 = value.parse().map_err(|_| format!("{pair}: not a number"))?;
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("{pair}: a probability is between 0 and 1"));
            }
            match name.trim() {
                "error" => faults.error = p,
                "cas_lie" => faults.cas_lie = p,
                other => return Err(format!("unknown fault {other} (error, cas_lie)")),
            }
        }
        Ok(faults)
    }

    pub(super) fn happens(&self, probability: f64) -> bool {
        if probability <= 0.0 {
            return false;
        }
        let mut z = self.state.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64 <= probability
    }
}

/// The same faults with draws of their own (one per store).
impl Clone for Faults {
    fn clone(&self) -> Faults {
        Faults { state: AtomicU64::new(self.state.load(Ordering::Relaxed) ^ 0x5bd1_e995), ..*self }
    }
}

/// The outcome of a swap whose comparison failed: what the key holds now.
#[derive(Debug)]
pub struct CasFailed {
    pub current_seq: u64,
}

impl Kv {
    /// A store that lives and dies with the process (`--memory`).
    pub fn in_memory() -> Kv {
        Kv::with(State::new(usize::MAX, None), None)
    }

    /// A durable store over the journal's database, caching at most about
    /// `cache_bytes` of entries already on disk (and every one not yet).
    pub fn durable(journal: sqlite::Journal, cache_bytes: usize) -> Result<Kv, KvError> {
        let reader = journal.reader()?;
        Ok(Kv::with(State::new(cache_bytes, Some(reader)), Some(journal)))
    }

    fn with(state: State, journal: Option<sqlite::Journal>) -> Kv {
        Kv { state: Mutex::new(state), journal, stats: Stats::default(), faults: std::sync::OnceLock::new() }
    }

    /// From now on, inject `faults` (once per store).
    pub fn inject(&self, faults: Faults) -> Result<(), KvError> {
        self.faults.set(faults).map_err(|_| KvError("faults are injected already".into()))
    }

    pub fn is_durable(&self) -> bool {
        self.journal.is_some()
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Bytes of entries held in RAM (see `State`).
    pub fn cached_bytes(&self) -> usize {
        self.state.lock().unwrap().bytes
    }

    /// Waits until everything up to `ticket` is durable (at once in memory).
    pub async fn wait(&self, ticket: Ticket) -> Result<(), KvError> {
        match &self.journal {
            Some(journal) => journal.wait(ticket).await,
            None => Ok(()),
        }
    }

    /// Blocks until everything written so far is durable (for shutdown).
    pub fn flush(&self) -> Result<(), KvError> {
        match &self.journal {
            Some(journal) => {
                let last = Ticket(self.state.lock().unwrap().last_written);
                journal.wait_blocking(last)
            }
            None => Ok(()),
        }
    }

    fn count(&self) {
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>, KvError> {
        if let Some(journal) = &self.journal {
            journal.check()?;
        }
        if self.faults.get().is_some_and(|f| f.happens(f.error)) {
            return Err(KvError("injected fault: the call failed and did nothing".into()));
        }
        Ok(self.state.lock().unwrap())
    }

    /// The highest sequence number on disk: entries up to it may be evicted.
    fn durable_seq(&self) -> u64 {
        self.journal.as_ref().map_or(u64::MAX, sqlite::Journal::durable)
    }

    /// The key's entry (read back from disk on a miss).
    fn entry<'s>(&self, state: &'s mut State, label: &str, key: &str) -> Result<Option<&'s Entry>, KvError> {
        state.entry(label, key, self.durable_seq())
    }

    /// Writes under the lock: new sequence number, journal entry, map update.
    fn write(&self, state: &mut State, label: &str, key: &str, value: Value) -> Ticket {
        let seq = state.next_seq;
        state.next_seq += 1;
        state.last_written = seq;
        let Some(journal) = &self.journal else {
            match value {
                Value::Absent => state.remove(label, key),
                value => state.put(label, key, Entry { value, seq, ticket: seq }, u64::MAX),
            }
            return Ticket(seq);
        };
        let persisted = match &value {
            Value::Bytes(b) => Some(b.clone()),
            Value::Counter(n) => Some(n.to_le_bytes().to_vec()),
            Value::Absent => None,
        };
        journal.push(Mutation { label: label.to_owned(), key: key.to_owned(), value: persisted, seq });
        state.put(label, key, Entry { value, seq, ticket: seq }, journal.durable());
        Ticket(seq)
    }

    /// The value, its sequence number (0 when absent, for compare-and-set),
    /// and what an answer based on it depends on.
    fn read(&self, state: &mut State, label: &str, key: &str) -> Result<(Option<Vec<u8>>, u64, Ticket), KvError> {
        match self.entry(state, label, key)? {
            None => Ok((None, 0, Ticket(0))),
            Some(Entry { value: Value::Absent, ticket, .. }) => Ok((None, 0, Ticket(*ticket))),
            Some(Entry { value: Value::Bytes(b), seq, ticket }) => Ok((Some(b.clone()), *seq, Ticket(*ticket))),
            Some(Entry { value: Value::Counter(_), .. }) => {
                Err(KvError(format!("{key} is a counter: read it with increment(key, 0), not get")))
            }
        }
    }

    pub fn get(&self, label: &str, key: &str) -> Result<(Option<Vec<u8>>, Ticket), KvError> {
        self.count();
        let mut state = self.lock()?;
        let (value, _, ticket) = self.read(&mut state, label, key)?;
        Ok((value, ticket))
    }

    pub fn get_many(&self, label: &str, keys: &[String]) -> Result<(KeyValues, Ticket), KvError> {
        self.count();
        if self.faults.get().is_some_and(|f| f.batch_reads_fail) {
            return Err(KvError(
                "wrong number of arguments for 'keys' command (as Spin 4.0.2's Redis get-many)".into(),
            ));
        }
        let mut state = self.lock()?;
        let mut newest = 0;
        let mut found = Vec::with_capacity(keys.len());
        for key in keys {
            let (value, _, ticket) = self.read(&mut state, label, key)?;
            newest = newest.max(ticket.0);
            found.push((key.clone(), value));
        }
        Ok((found, Ticket(newest)))
    }

    pub fn exists(&self, label: &str, key: &str) -> Result<(bool, Ticket), KvError> {
        self.count();
        let mut state = self.lock()?;
        Ok(match self.entry(&mut state, label, key)? {
            Some(entry) => (entry.present(), Ticket(entry.ticket)),
            None => (false, Ticket(0)),
        })
    }

    /// One page of `label`'s keys in key order, after `after` (the last key
    /// of the page before): at most `LIST_PAGE`, with that page's last key
    /// as the cursor while more may follow. Durable, the disk answers, once
    /// every write made before the call is on it (so a key written or
    /// deleted during the walk may or may not be listed, as in a Redis SCAN).
    pub async fn list_keys(&self, label: &str, after: Option<&str>) -> Result<Page, KvError> {
        let last = Ticket(self.state.lock().unwrap().last_written);
        self.wait(last).await?;
        self.keys_after(label, after)
    }

    /// `list_keys` once the disk holds every write: from it, else from the
    /// map (every entry scanned per page: the memory store is for tests and
    /// local use).
    fn keys_after(&self, label: &str, after: Option<&str>) -> Result<Page, KvError> {
        self.count();
        let mut state = self.lock()?;
        let state = &mut *state;
        let mut keys = match &mut state.disk {
            Some(disk) => disk.keys_after(label, after, LIST_PAGE + 1)?,
            None => {
                let mut keys: Vec<&String> = (state.tables.get(label).into_iter().flatten())
                    .flat_map(|t| t.entries.iter())
                    .filter(|(key, entry)| entry.present() && after.is_none_or(|after| key.as_str() > after))
                    .map(|(key, _)| key)
                    .collect();
                if keys.len() > LIST_PAGE + 1 {
                    keys.select_nth_unstable(LIST_PAGE);
                    keys.truncate(LIST_PAGE + 1);
                }
                keys.sort_unstable();
                keys.into_iter().cloned().collect()
            }
        };
        let more = keys.len() > LIST_PAGE;
        keys.truncate(LIST_PAGE);
        let cursor = if more { keys.last().cloned() } else { None };
        Ok(Page { keys, cursor })
    }

    pub fn set(&self, label: &str, key: &str, value: Vec<u8>) -> Result<Ticket, KvError> {
        self.count();
        let mut state = self.lock()?;
        Ok(self.write(&mut state, label, key, Value::Bytes(value)))
    }

    pub fn delete(&self, label: &str, key: &str) -> Result<Ticket, KvError> {
        self.count();
        let mut state = self.lock()?;
        match self.entry(&mut state, label, key)? {
            Some(entry) if entry.present() => Ok(self.write(&mut state, label, key, Value::Absent)),
            // Nothing to delete: the answer depends on what made it absent.
            entry => Ok(Ticket(entry.map_or(0, |e| e.ticket))),
        }
    }

    pub fn increment(&self, label: &str, key: &str, delta: i64) -> Result<(i64, Ticket), KvError> {
        self.count();
        let mut state = self.lock()?;
        let (current, seen) = match self.entry(&mut state, label, key)? {
            None => (0, 0),
            Some(Entry { value: Value::Absent, ticket, .. }) => (0, *ticket),
            Some(Entry { value: Value::Counter(n), ticket, .. }) => (*n, *ticket),
            // A counter read back from disk: Spin's 8-byte little-endian form.
            Some(Entry { value: Value::Bytes(b), ticket, .. }) if b.len() == 8 => {
                (i64::from_le_bytes(b[..].try_into().unwrap()), *ticket)
            }
            Some(Entry { value: Value::Bytes(_), .. }) => {
                return Err(KvError(format!(
                    "increment on {key}, a value written by set (Spin's SQLite store panics here)"
                )));
            }
        };
        if delta == 0 {
            // A read (the only way to read a counter): nothing to write or
            // journal; the answer depends on the entry's write.
            return Ok((current, Ticket(seen)));
        }
        let next = current.checked_add(delta).ok_or_else(|| KvError(format!("counter {key} overflows")))?;
        let ticket = self.write(&mut state, label, key, Value::Counter(next));
        Ok((next, ticket))
    }

    /// `cas.current()`: the value and its sequence number (0 when absent).
    pub fn current(&self, label: &str, key: &str) -> Result<(Option<Vec<u8>>, u64, Ticket), KvError> {
        self.count();
        let mut state = self.lock()?;
        self.read(&mut state, label, key)
    }

    /// `swap`: writes if the key's sequence number is still `expected`. An
    /// entry evicted and read back in between has a new number, so such a
    /// swap fails as if the key had changed (the caller reads again); it
    /// never succeeds over a write it did not see.
    pub fn swap(
        &self,
        label: &str,
        key: &str,
        expected: u64,
        value: Vec<u8>,
    ) -> Result<Result<Ticket, CasFailed>, KvError> {
        self.count();
        self.stats.swaps.fetch_add(1, Ordering::Relaxed);
        let mut state = self.lock()?;
        let now = self.entry(&mut state, label, key)?.map_or(0, Entry::cas_seq);
        if now != expected {
            self.stats.swaps_failed.fetch_add(1, Ordering::Relaxed);
            return Ok(Err(CasFailed { current_seq: now }));
        }
        let ticket = self.write(&mut state, label, key, Value::Bytes(value));
        if self.faults.get().is_some_and(|f| f.happens(f.cas_lie)) {
            return Ok(Err(CasFailed { current_seq: ticket.0 }));
        }
        Ok(Ok(ticket))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injected_faults_fail_calls_and_make_swaps_lie() {
        assert!(Faults::parse("error=2").is_err() && Faults::parse("nope=0.1").is_err());
        let kv = Kv::in_memory();
        kv.inject(Faults::parse("cas_lie=1").unwrap()).unwrap();
        kv.set("default", "k", b"a".to_vec()).unwrap();
        let (_, seen, _) = kv.current("default", "k").unwrap();
        assert!(kv.swap("default", "k", seen, b"b".to_vec()).unwrap().is_err(), "reported as failed");
        assert_eq!(kv.get("default", "k").unwrap().0, Some(b"b".to_vec()), "yet written");
        let kv = Kv::in_memory();
        kv.inject(Faults::parse("error=0.5").unwrap()).unwrap();
        let failed = (0..1000).filter(|i| kv.set("default", &i.to_string(), vec![1]).is_err()).count();
        assert!((350..650).contains(&failed), "{failed} of 1000 failed");
        let written = kv.stats().calls;
        assert_eq!(written, 1000);
    }

    #[test]
    fn spin_redis_compatibility_lies_on_every_swap_and_fails_batch_reads() {
        let kv = Kv::in_memory();
        kv.inject(Faults::none().spin_redis()).unwrap();
        kv.set("default", "k", b"a".to_vec()).unwrap();
        let (_, seen, _) = kv.current("default", "k").unwrap();
        kv.set("default", "k", b"b".to_vec()).unwrap();
        assert!(kv.swap("default", "k", seen, b"c".to_vec()).unwrap().is_err(), "changed: not written");
        assert_eq!(kv.get("default", "k").unwrap().0, Some(b"b".to_vec()));
        let (_, seen, _) = kv.current("default", "k").unwrap();
        assert!(kv.swap("default", "k", seen, b"d".to_vec()).unwrap().is_err(), "written, yet cas-failed");
        assert_eq!(kv.get("default", "k").unwrap().0, Some(b"d".to_vec()));
        assert!(kv.get_many("default", &["k".to_string()]).is_err());
    }

    #[test]
    fn swap_is_strict_about_versions_not_values() {
        let kv = Kv::in_memory();
        kv.set("default", "k", b"a".to_vec()).unwrap();
        let (_, seen, _) = kv.current("default", "k").unwrap();
        // Same bytes written again still count as a change.
        kv.set("default", "k", b"a".to_vec()).unwrap();
        assert!(kv.swap("default", "k", seen, b"b".to_vec()).unwrap().is_err());
        let (_, seen, _) = kv.current("default", "k").unwrap();
        assert!(kv.swap("default", "k", seen, b"b".to_vec()).unwrap().is_ok());
        assert_eq!(kv.get("default", "k").unwrap().0, Some(b"b".to_vec()));
    }

    #[test]
    fn swap_from_absent_fails_if_the_key_appeared() {
        let kv = Kv::in_memory();
        let (value, seen, _) = kv.current("default", "new").unwrap();
        assert_eq!((value, seen), (None, 0));
        kv.set("default", "new", b"x".to_vec()).unwrap();
        assert!(kv.swap("default", "new", seen, b"y".to_vec()).unwrap().is_err());
    }

    #[test]
    fn counters_and_values_do_not_mix() {
        let kv = Kv::in_memory();
        assert_eq!(kv.increment("default", "n", 2).unwrap().0, 2);
        assert_eq!(kv.increment("default", "n", 0).unwrap().0, 2);
        assert!(kv.get("default", "n").is_err());
        kv.set("default", "v", b"text".to_vec()).unwrap();
        assert!(kv.increment("default", "v", 1).is_err());
        assert!(kv.increment("default", "v", 0).is_err());
    }

    #[test]
    fn reading_a_counter_writes_nothing() {
        let kv = Kv::in_memory();
        let (_, written) = kv.increment("default", "n", 5).unwrap();
        assert_eq!(kv.increment("default", "n", 0).unwrap(), (5, written));
        assert_eq!(kv.increment("default", "absent", 0).unwrap().0, 0);
        // Nothing was written: no new sequence number, no new key.
        assert_eq!(kv.state.lock().unwrap().next_seq, written.0 + 1);
        assert_eq!(kv.keys_after("default", None).unwrap().keys, ["n"]);
    }

    #[test]
    fn a_labels_keys_spread_over_its_shards_and_all_read_back() {
        let kv = Kv::in_memory();
        let keys: Vec<String> = (0..6_400).map(|i| format!("s1/db_12.t_3_07/p/{i:027}")).collect();
        for key in &keys {
            kv.set("default", key, key.as_bytes().to_vec()).unwrap();
        }
        let sizes: Vec<usize> = kv.state.lock().unwrap().tables["default"].iter().map(|t| t.entries.len()).collect();
        assert_eq!(sizes.len(), SHARDS);
        // 100 keys a shard on average: none is far off, so none resizes alone with most of the label.
        assert!(sizes.iter().all(|&n| (50..200).contains(&n)), "{sizes:?}");
        for key in &keys {
            assert_eq!(kv.get("default", key).unwrap().0.as_deref(), Some(key.as_bytes()));
        }
        // Listed in pages of LIST_PAGE, in key order, each key once.
        let mut listed = Vec::new();
        let mut pages = 0;
        let mut cursor = None;
        loop {
            let page = kv.keys_after("default", cursor.as_deref()).unwrap();
            assert!(page.keys.len() <= LIST_PAGE);
            listed.extend(page.keys);
            pages += 1;
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let mut expected = keys.clone();
        expected.sort();
        assert_eq!(listed, expected);
        assert_eq!(pages, 7);
    }

    #[test]
    fn labels_are_separate_stores() {
        let kv = Kv::in_memory();
        kv.set("a", "k", b"1".to_vec()).unwrap();
        assert_eq!(kv.get("b", "k").unwrap().0, None);
        assert_eq!(kv.keys_after("a", None).unwrap().keys, ["k"]);
    }
}
