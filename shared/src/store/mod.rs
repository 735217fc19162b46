//! The store abstraction, shaped like `wasi:keyvalue@0.2.0-draft2`
//! (`store` + `atomics` + `batch`), and the one compare-and-set loop every
//! operation uses.
//!
//! What the operations may assume of a store, and no more (it is what Spin's
//! SQLite and Redis stores actually give):
//! * `increment` is atomic and creates the key at 0; it is the only safe way
//!   to create something exactly once under contention.
//! * `swap` fails if the value changed since `current()`; but a swap from an
//!   absent key may blindly upsert (Spin SQLite), and a swap may report
//!   `CasFailed` although it wrote (Spin 4 Redis). So records are created
//!   once under fresh random keys, carry a `version`, and every retry first
//!   looks for its own effect.
//! * Counters are read with `increment(key, 0)`, never `get`.

#[cfg(any(test, feature = "testing"))]
pub mod faulty;
pub mod lists;
#[cfg(any(test, feature = "testing"))]
pub mod memory;

use crate::env::{Env, MAX_CAS_ATTEMPTS};
use crate::error::Error;

/// A backend failure. The operation's effect is unknown: callers retry
/// idempotently.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreError(pub String);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SwapError {
    /// The value changed since `current()` (or the store says so).
    CasFailed,
    Store(StoreError),
}

/// A failed store call answers 503 `unavailable` (its effect unknown).
impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        Error::Unavailable(e.0)
    }
}

impl From<StoreError> for SwapError {
    fn from(e: StoreError) -> Self {
        SwapError::Store(e)
    }
}

pub trait Store {
    /// A compare-and-set handle (`wasi:keyvalue/atomics.cas`).
    type Cas;

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError>;
    fn delete(&self, key: &str) -> Result<(), StoreError>;
    fn exists(&self, key: &str) -> Result<bool, StoreError>;
    /// Values in the order of `keys`, `None` where absent (`batch.get-many`).
    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError>;
    /// Writes many values in one call (`batch.set-many`); not atomic as a whole.
    fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), StoreError>;
    /// Atomically adds `delta` and returns the new value (`atomics.increment`).
    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError>;
    /// `cas::new`: starts a compare-and-set on `key`.
    fn cas(&self, key: &str) -> Result<Self::Cas, StoreError>;
    /// `cas.current`: the value the swap will be compared against.
    fn current(&self, cas: &Self::Cas) -> Result<Option<Vec<u8>>, StoreError>;
    /// `atomics.swap`: writes `value` if the key is unchanged since `current`.
    fn swap(&self, cas: Self::Cas, value: &[u8]) -> Result<(), SwapError>;
    /// One page of the store's keys, in no particular order
    /// (`store.list-keys`): from the start without a cursor, else from where
    /// the page that handed out `cursor` ended. A key present throughout a
    /// walk is listed at least once; one written or deleted meanwhile may or
    /// may not be. Spin's stores answer in one page holding the whole store,
    /// so only the purge, a rare admin operation, calls it.
    fn list_keys(&self, cursor: Option<&str>) -> Result<KeyPage, StoreError>;
}

/// A page of `Store::list_keys`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPage {
    pub keys: Vec<String>,
    /// Where the next page starts; `None` on the last page.
    pub cursor: Option<String>,
}

/// Every key of the store, page by page (tests and the simulator read a
/// whole store with it; the purge walks page by page itself).
pub fn all_keys(store: &impl Store) -> Result<Vec<String>, StoreError> {
    let mut keys = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.list_keys(cursor.as_deref())?;
        keys.extend(page.keys);
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(keys),
        }
    }
}

/// Keys per `get_many` call: a bound on one call's request and answer
/// (thousands of keys in one batch make one huge host call and allocation).
pub const GET_MANY_CHUNK: usize = 256;

/// Values of any number of keys, in order, read `GET_MANY_CHUNK` at a time.
pub fn get_all<S: Store + ?Sized>(store: &S, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
    let mut values = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(GET_MANY_CHUNK) {
        values.extend(store.get_many(chunk)?);
    }
    Ok(values)
}

/// What one round of a compare-and-set loop decided.
pub enum Step<T> {
    /// Write these bytes; on success the loop returns `T`.
    Write(Vec<u8>, T),
    /// Nothing to write (already applied, or a refusal): return `T` now.
    Done(T),
}

/// The compare-and-set loop: read the record, let `step` decide, swap, and on
/// `CasFailed` back off (jittered) and decide again from a fresh read.
/// Bounded: after `MAX_CAS_ATTEMPTS` it reads the record once more and lets
/// `step` look at it, so a last swap that wrote but reported `CasFailed`
/// (Spin 4's Redis store) is answered as done; only if `step` still wants to
/// write does it answer 429 `busy`, having written nothing (every failed
/// attempt either did not write, or wrote an effect `step` recognises as its
/// own and returns as `Done`).
pub fn update<S: Store + ?Sized, T>(
    store: &S,
    env: &mut Env,
    key: &str,
    mut step: impl FnMut(Option<&[u8]>, &mut Env) -> Result<Step<T>, Error>,
) -> Result<T, Error> {
    for attempt in 0..MAX_CAS_ATTEMPTS {
        let cas = store.cas(key)?;
        let current = store.current(&cas)?;
        match step(current.as_deref(), env)? {
            Step::Done(out) => return Ok(out),
            Step::Write(bytes, out) => match store.swap(cas, &bytes) {
                Ok(()) => return Ok(out),
                Err(SwapError::CasFailed) => env.backoff(attempt),
                Err(SwapError::Store(e)) => return Err(e.into()),
            },
        }
    }
    let cas = store.cas(key)?;
    match step(store.current(&cas)?.as_deref(), env)? {
        Step::Done(out) => Ok(out),
        Step::Write(..) => Err(Error::Busy { retry_after_seconds: 1 }),
    }
}

/// Lets operations take `&S` where S is a shared store behind a reference.
impl<S: Store + ?Sized> Store for &S {
    type Cas = S::Cas;
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).get(key)
    }
    fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        (**self).set(key, value)
    }
    fn delete(&self, key: &str) -> Result<(), StoreError> {
        (**self).delete(key)
    }
    fn exists(&self, key: &str) -> Result<bool, StoreError> {
        (**self).exists(key)
    }
    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        (**self).get_many(keys)
    }
    fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        (**self).set_many(entries)
    }
    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        (**self).increment(key, delta)
    }
    fn cas(&self, key: &str) -> Result<Self::Cas, StoreError> {
        (**self).cas(key)
    }
    fn current(&self, cas: &Self::Cas) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).current(cas)
    }
    fn swap(&self, cas: Self::Cas, value: &[u8]) -> Result<(), SwapError> {
        (**self).swap(cas, value)
    }
    fn list_keys(&self, cursor: Option<&str>) -> Result<KeyPage, StoreError> {
        (**self).list_keys(cursor)
    }
}
