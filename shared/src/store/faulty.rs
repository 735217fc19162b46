//! A fault-injecting wrapper for tests: it numbers every store call and can
//! * crash: call N and every call after it fail without effect, as if the
//!   process died between call N-1 and call N;
//! * fail single calls transiently (the operation sees an error, the store is fine);
//! * make swaps fail spuriously without writing;
//! * make swaps lie: write, then report `CasFailed` (Spin 4.0.2's Redis store
//!   does this on every swap).

use super::{KeyPage, Store, StoreError, SwapError};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// The process dies before this call (1-based); it and all later calls fail.
    pub crash_at: Option<u64>,
    /// These calls fail once, without effect.
    pub fail_calls: Vec<u64>,
    /// These swaps (1-based among swaps) report `CasFailed` without writing.
    pub spurious_swap_failures: Vec<u64>,
    /// Every swap that writes reports `CasFailed` anyway.
    pub swaps_lie: bool,
}

pub struct FaultyStore<S> {
    inner: S,
    faults: Mutex<Faults>,
    calls: AtomicU64,
    swaps: AtomicU64,
}

impl<S: Store> FaultyStore<S> {
    pub fn new(inner: S, faults: Faults) -> FaultyStore<S> {
        FaultyStore { inner, faults: Mutex::new(faults), calls: AtomicU64::new(0), swaps: AtomicU64::new(0) }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// True once a crash point has been reached.
    pub fn crashed(&self) -> bool {
        let crash_at = self.faults.lock().unwrap().crash_at;
        crash_at.is_some_and(|at| self.calls() >= at)
    }

    pub fn set_faults(&self, faults: Faults) {
        *self.faults.lock().unwrap() = faults;
    }

    fn enter(&self, what: &str) -> Result<(), StoreError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let faults = self.faults.lock().unwrap();
        if faults.crash_at.is_some_and(|at| n >= at) {
            return Err(StoreError(format!("crashed before call {n} ({what})")));
        }
        if faults.fail_calls.contains(&n) {
            return Err(StoreError(format!("injected failure of call {n} ({what})")));
        }
        Ok(())
    }
}

impl<S: Store> Store for FaultyStore<S> {
    type Cas = S::Cas;

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.enter("get")?;
        self.inner.get(key)
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.enter("set")?;
        self.inner.set(key, value)
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.enter("delete")?;
        self.inner.delete(key)
    }

    fn exists(&self, key: &str) -> Result<bool, StoreError> {
        self.enter("exists")?;
        self.inner.exists(key)
    }

    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        self.enter("get_many")?;
        self.inner.get_many(keys)
    }

    fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        self.enter("set_many")?;
        self.inner.set_many(entries)
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        self.enter("increment")?;
        self.inner.increment(key, delta)
    }

    fn cas(&self, key: &str) -> Result<Self::Cas, StoreError> {
        self.enter("cas")?;
        self.inner.cas(key)
    }

    fn current(&self, cas: &Self::Cas) -> Result<Option<Vec<u8>>, StoreError> {
        self.enter("current")?;
        self.inner.current(cas)
    }

    fn swap(&self, cas: Self::Cas, value: &[u8]) -> Result<(), SwapError> {
        self.enter("swap")?;
        let n = self.swaps.fetch_add(1, Ordering::SeqCst) + 1;
        let (spurious, lie) = {
            let faults = self.faults.lock().unwrap();
            (faults.spurious_swap_failures.contains(&n), faults.swaps_lie)
        };
        if spurious {
            return Err(SwapError::CasFailed);
        }
        self.inner.swap(cas, value)?;
        if lie { Err(SwapError::CasFailed) } else { Ok(()) }
    }

    fn list_keys(&self, cursor: Option<&str>) -> Result<KeyPage, StoreError> {
        self.enter("list_keys")?;
        self.inner.list_keys(cursor)
    }
}
