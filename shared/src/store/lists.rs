//! Append-only lists without compare-and-set (user records, wallets, day
//! indexes). A length counter hands out slots with `increment`, so concurrent
//! appends never collide; an optional marker per item name makes an append
//! idempotent, so a retry or a repair does not add the item again.
//!
//! Crash safety: an append is `marker? -> increment -> set slot -> set marker`.
//! Dying after the increment leaves an empty slot (readers skip holes);
//! dying before the marker lets a later append write the item again, and
//! readers drop such duplicates by name. So a list converges to "every item
//! exactly once" whatever the interleaving of appenders and crashes.

use super::{GET_MANY_CHUNK, Store, StoreError};
use crate::keys::List;

/// Appends unconditionally (for items that are unique by construction).
/// Returns the slot the item went to.
pub fn append<S: Store + ?Sized>(store: &S, list: &List, item: &[u8]) -> Result<i64, StoreError> {
    let slot = store.increment(&list.len_key(), 1)?;
    store.set(&list.slot(slot), item)?;
    Ok(slot)
}

/// Appends `item` under `name` unless an item of that name is there already.
/// The marker holds the item itself, so a reader can check one item by name
/// (reconcile reads wallet credits through their markers).
/// Returns whether this call appended.
pub fn append_once<S: Store + ?Sized>(store: &S, list: &List, name: &str, item: &[u8]) -> Result<bool, StoreError> {
    let marker = list.marker(name);
    if store.get(&marker)?.is_some() {
        return Ok(false);
    }
    append(store, list, item)?;
    store.set(&marker, item)?;
    Ok(true)
}

/// Appends `item` under `name` when the caller knows it is not there yet
/// (it was created just now): `append_once` without the marker read.
pub fn append_new<S: Store + ?Sized>(store: &S, list: &List, name: &str, item: &[u8]) -> Result<(), StoreError> {
    append(store, list, item)?;
    store.set(&list.marker(name), item)
}

/// Items of a list, each with its slot number.
pub type Slots = Vec<(i64, Vec<u8>)>;

/// The list's length and its items from slot `from` (1-based) on, in append
/// order, each with its slot; holes are skipped (duplicates are the caller's
/// to drop, by the item's name).
pub fn read_from<S: Store + ?Sized>(store: &S, list: &List, from: i64) -> Result<(i64, Slots), StoreError> {
    let len = store.increment(&list.len_key(), 0)?;
    let mut items = Vec::new();
    let mut start = from.max(1);
    while start <= len {
        let end = (start + GET_MANY_CHUNK as i64 - 1).min(len);
        let keys: Vec<String> = (start..=end).map(|k| list.slot(k)).collect();
        for (k, value) in (start..=end).zip(store.get_many(&keys)?) {
            if let Some(v) = value {
                items.push((k, v));
            }
        }
        start = end + 1;
    }
    Ok((len, items))
}

pub fn read<S: Store + ?Sized>(store: &S, list: &List) -> Result<Vec<Vec<u8>>, StoreError> {
    Ok(read_from(store, list, 1)?.1.into_iter().map(|(_, v)| v).collect())
}
