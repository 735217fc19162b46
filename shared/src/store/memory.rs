//! An in-memory store for tests, at least as strict as any real backend.
//!
//! * CAS compares a per-key write version captured at `current()`, not the
//!   value, so any intervening write (even of identical bytes) fails the swap.
//!   A swap from "absent" succeeds only if the key is still absent.
//! * Counters and values are different kinds of entry: `get` or `current` on
//!   a counter is an error (backends store counters in their own encodings),
//!   and `increment` on a value written by `set` poisons the store (every
//!   later call fails), as Spin's SQLite store does after its panic.
//!
//! `MemoryStore::spin_sqlite()` instead reproduces Spin's SQLite semantics
//! where they are weaker: a swap whose `current()` found nothing is a blind
//! upsert, and other swaps compare values. Tests run the operations against
//! both to show they never rely on the stronger guarantee.
//!
//! Why the host (`tests/host/src/kv`) has its own strict map rather than this
//! one: it serves `wasi:keyvalue` to components (stores by label, a journal
//! under the map, durability tickets a response waits for, Spin's failure
//! modes on demand), none of which belongs in the domain crate; this one is
//! a plain `Store` with call counting for native tests and the simulator.

use super::{KeyPage, Store, StoreError, SwapError};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Keys per `list_keys` page.
const LIST_PAGE: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CasSemantics {
    /// Version comparison, strict from absent.
    Strict,
    /// Spin SQLite: value comparison, blind upsert from absent.
    SpinSqlite,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Value {
    Bytes(Vec<u8>),
    Counter(i64),
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, (Value, u64)>,
    next_version: u64,
    poisoned: Option<String>,
}

pub struct MemoryStore {
    inner: Mutex<Inner>,
    semantics: CasSemantics,
    calls: AtomicU64,
    swaps: AtomicU64,
}

pub struct MemoryCas {
    key: String,
    /// What `current()` saw: the entry version and value, or `None` if absent
    /// (or if `current()` was never called). `current` takes `&self` in the
    /// interface (as in WIT), hence the cell.
    seen: RefCell<Option<(u64, Vec<u8>)>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::with_semantics(CasSemantics::Strict)
    }

    pub fn spin_sqlite() -> MemoryStore {
        MemoryStore::with_semantics(CasSemantics::SpinSqlite)
    }

    pub fn with_semantics(semantics: CasSemantics) -> MemoryStore {
        MemoryStore { inner: Mutex::default(), semantics, calls: AtomicU64::new(0), swaps: AtomicU64::new(0) }
    }

    /// Store calls so far (every trait method counts one).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Swap attempts so far.
    pub fn swaps(&self) -> u64 {
        self.swaps.load(Ordering::Relaxed)
    }

    /// Every value key (not counters), sorted: for tests that inspect layout.
    pub fn value_keys(&self) -> Vec<String> {
        let inner = self.inner.lock().unwrap();
        let mut keys: Vec<String> =
            inner.entries.iter().filter(|(_, (v, _))| matches!(v, Value::Bytes(_))).map(|(k, _)| k.clone()).collect();
        keys.sort();
        keys
    }

    pub fn poisoned(&self) -> Option<String> {
        self.inner.lock().unwrap().poisoned.clone()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, StoreError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let inner = self.inner.lock().unwrap();
        match &inner.poisoned {
            Some(why) => Err(StoreError(format!("store poisoned: {why}"))),
            None => Ok(inner),
        }
    }
}

impl Inner {
    fn write(&mut self, key: &str, value: Value) {
        self.next_version += 1;
        self.entries.insert(key.to_owned(), (value, self.next_version));
    }

    fn bytes(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self.entries.get(key) {
            None => Ok(None),
            Some((Value::Bytes(b), _)) => Ok(Some(b.clone())),
            Some((Value::Counter(_), _)) => Err(StoreError(format!("counter {key} read as a value"))),
        }
    }
}

impl Store for MemoryStore {
    type Cas = MemoryCas;

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.lock()?.bytes(key)
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.lock()?.write(key, Value::Bytes(value.to_vec()));
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.lock()?.entries.remove(key);
        Ok(())
    }

    fn exists(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.lock()?.entries.contains_key(key))
    }

    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let inner = self.lock()?;
        keys.iter().map(|k| inner.bytes(k)).collect()
    }

    fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        for (key, value) in entries {
            inner.write(key, Value::Bytes(value.clone()));
        }
        Ok(())
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        let mut inner = self.lock()?;
        let current = match inner.entries.get(key) {
            None => 0,
            Some((Value::Counter(n), _)) => *n,
            Some((Value::Bytes(_), _)) => {
                let why = format!("increment on {key}, a key written by set");
                inner.poisoned = Some(why.clone());
                return Err(StoreError(why));
            }
        };
        let next = current.checked_add(delta).ok_or_else(|| StoreError(format!("counter {key} overflows")))?;
        inner.write(key, Value::Counter(next));
        Ok(next)
    }

    fn cas(&self, key: &str) -> Result<MemoryCas, StoreError> {
        drop(self.lock()?);
        Ok(MemoryCas { key: key.to_owned(), seen: RefCell::new(None) })
    }

    fn current(&self, cas: &MemoryCas) -> Result<Option<Vec<u8>>, StoreError> {
        let inner = self.lock()?;
        let value = inner.bytes(&cas.key)?;
        let seen = inner.entries.get(&cas.key).map(|(_, version)| *version).zip(value.clone());
        *cas.seen.borrow_mut() = seen;
        Ok(value)
    }

    fn swap(&self, cas: MemoryCas, value: &[u8]) -> Result<(), SwapError> {
        self.swaps.fetch_add(1, Ordering::Relaxed);
        let mut inner = self.lock()?;
        let now = inner.entries.get(&cas.key).cloned();
        let unchanged = match (self.semantics, &*cas.seen.borrow(), &now) {
            (CasSemantics::Strict, None, None) => true,
            (CasSemantics::Strict, Some((seen, _)), Some((_, version))) => seen == version,
            (CasSemantics::Strict, _, _) => false,
            (CasSemantics::SpinSqlite, None, _) => true,
            (CasSemantics::SpinSqlite, Some((_, seen)), Some((Value::Bytes(b), _))) => seen == b,
            (CasSemantics::SpinSqlite, Some(_), _) => false,
        };
        if !unchanged {
            return Err(SwapError::CasFailed);
        }
        inner.write(&cas.key, Value::Bytes(value.to_vec()));
        Ok(())
    }

    /// In key order, so a seeded simulation replays identically, and in
    /// small pages (the cursor is the page's last key), so tests walk many.
    fn list_keys(&self, cursor: Option<&str>) -> Result<KeyPage, StoreError> {
        let inner = self.lock()?;
        let mut keys: Vec<&String> = inner.entries.keys().filter(|k| cursor.is_none_or(|c| k.as_str() > c)).collect();
        keys.sort_unstable();
        let more = keys.len() > LIST_PAGE;
        keys.truncate(LIST_PAGE);
        let keys: Vec<String> = keys.into_iter().cloned().collect();
        let cursor = if more { keys.last().cloned() } else { None };
        Ok(KeyPage { keys, cursor })
    }
}
