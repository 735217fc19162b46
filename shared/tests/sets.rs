//! A deployment may keep each SET in a store of its own (`KvLayout::PerSet`:
//! spin.sets.toml, a Redis server per SET). That is sound because no write
//! spans two SETs (every atomic step is one key; `set_many` stays in one
//! SET) and no operation on a packet touches another SET's keys: this
//! records the SET of every key of every call and checks both. Batch reads
//! may span SETs (the sweeps read all SETs' index hints, `sent` reads the
//! user's packets): the adapter splits them by label, as reads they need
//! no atomicity.

mod common;

use common::*;
use hongbao::alloc::Kind;
use hongbao::config::KvLayout;
use hongbao::store::memory::MemoryStore;
use hongbao::store::{KeyPage, Store, StoreError, SwapError};
use hongbao::{PacketId, keys};
use std::cell::RefCell;
use std::collections::BTreeSet;

/// A store that notes, per call, the SETs its keys belong to.
struct Recorder {
    inner: MemoryStore,
    /// Per call: the SETs of its keys, and whether it writes.
    calls: RefCell<Vec<(BTreeSet<u32>, bool)>>,
}

impl Recorder {
    fn note<'k>(&self, keys: impl IntoIterator<Item = &'k str>) {
        self.calls.borrow_mut().push((keys.into_iter().filter_map(keys::set_of).collect(), false));
    }

    fn note_write<'k>(&self, keys: impl IntoIterator<Item = &'k str>) {
        self.calls.borrow_mut().push((keys.into_iter().filter_map(keys::set_of).collect(), true));
    }

    /// Every SET touched since the last call of `take`, and whether some
    /// single write touched two.
    fn take(&self) -> (BTreeSet<u32>, bool) {
        let calls = std::mem::take(&mut *self.calls.borrow_mut());
        let spanning = calls.iter().any(|(sets, write)| *write && sets.len() > 1);
        (calls.into_iter().flat_map(|(sets, _)| sets).collect(), spanning)
    }
}

impl Store for Recorder {
    type Cas = (String, <MemoryStore as Store>::Cas);

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.note([key]);
        self.inner.get(key)
    }
    fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.note_write([key]);
        self.inner.set(key, value)
    }
    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.note_write([key]);
        self.inner.delete(key)
    }
    fn exists(&self, key: &str) -> Result<bool, StoreError> {
        self.note([key]);
        self.inner.exists(key)
    }
    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        self.note(keys.iter().map(String::as_str));
        self.inner.get_many(keys)
    }
    fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        self.note_write(entries.iter().map(|(k, _)| k.as_str()));
        self.inner.set_many(entries)
    }
    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        self.note_write([key]);
        self.inner.increment(key, delta)
    }
    fn cas(&self, key: &str) -> Result<Self::Cas, StoreError> {
        self.note([key]);
        Ok((key.to_owned(), self.inner.cas(key)?))
    }
    fn current(&self, cas: &Self::Cas) -> Result<Option<Vec<u8>>, StoreError> {
        self.note([cas.0.as_str()]);
        self.inner.current(&cas.1)
    }
    fn swap(&self, cas: Self::Cas, value: &[u8]) -> Result<(), SwapError> {
        self.note_write([cas.0.as_str()]);
        self.inner.swap(cas.1, value)
    }
    fn list_keys(&self, cursor: Option<&str>) -> Result<KeyPage, StoreError> {
        let page = self.inner.list_keys(cursor)?;
        self.note(page.keys.iter().map(String::as_str));
        Ok(page)
    }
}

#[test]
fn no_call_spans_two_sets_and_a_packets_operations_stay_in_its_set() {
    for config in [config(), cursor_config()] {
        let store = Recorder { inner: memory(), calls: RefCell::default() };
        // Packets until every SET has one, each through its whole life.
        let mut ids: Vec<PacketId> = Vec::new();
        let mut sets_seen = BTreeSet::new();
        let mut n = 0;
        while sets_seen.len() < hongbao::id::SETS as usize {
            n += 1;
            let id = paid_packet(&store, &config, T0, &format!("sender{n}"), Kind::Lucky, 300, 3);
            let (touched, spanning) = store.take();
            assert!(!spanning, "a write of wrap/pay spanned SETs");
            assert_eq!(touched, BTreeSet::from([id.set()]), "wrap and pay of {id} touched other SETs");
            sets_seen.insert(id.set());
            ids.push(id);
        }
        for (i, id) in ids.iter().enumerate() {
            for user in ["bob", "carol"] {
                grab_and_open(&store, &config, env(T0.plus_seconds(60), i as u64), id, user).unwrap();
                let (touched, spanning) = store.take();
                assert!(!spanning, "a write of grab/open spanned SETs");
                assert_eq!(touched, BTreeSet::from([id.set()]), "grab and open of {id} touched other SETs");
            }
            svc(&store, &config, T0.plus_seconds(90)).query(id, "bob").unwrap();
            assert_eq!(store.take(), (BTreeSet::from([id.set()]), false), "query of {id}");
        }
        // The sweeps walk every SET, one at a time.
        let later = T0.plus_seconds(2 * DAY);
        let expired = svc(&store, &config, later).expire().unwrap();
        assert_eq!(expired.refunded as usize, ids.len());
        let settled = svc(&store, &config, later).settle().unwrap();
        assert!(settled.credited > 0);
        svc(&store, &config, later).reconcile(T0.day()).unwrap();
        svc(&store, &config, later).wallet("bob").unwrap();
        svc(&store, &config, later).sent("sender1", T0.day()).unwrap();
        let (touched, spanning) = store.take();
        assert!(!spanning, "a write of a sweep, reconcile or a user view spanned SETs");
        assert_eq!(touched.len(), hongbao::id::SETS as usize);
    }
}

#[test]
fn the_per_set_layout_puts_each_set_in_its_own_label() {
    let layout = KvLayout::PerSet;
    let mut rng = hongbao::alloc::SplitMix64(5);
    for _ in 0..100 {
        let id = PacketId::generate(T0.day(), &mut rng);
        let label = layout.labels()[layout.label_index(&keys::packet(&id))];
        assert_eq!(label, format!("set{}", id.set()));
    }
    assert_eq!(layout.labels()[layout.label_index(&keys::user("bob"))], "users");
    assert_eq!(KvLayout::Single.labels()[KvLayout::Single.label_index(&keys::user("bob"))], "default");
}
