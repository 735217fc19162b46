//! `wasi:keyvalue@0.2.0-draft2` as a `hongbao::Store`: one bucket
//! (`KvStore`), and the buckets of a layout (`Stores`), which routes each
//! key to its SET's label.

use hongbao::config::KvLayout;
use hongbao::id::SETS;
use hongbao::store::{KeyPage, Store, StoreError, SwapError};
use spin_sdk::experimental::wasi::keyvalue::{atomics, batch, store};

pub struct KvStore {
    bucket: store::Bucket,
    /// Whether `batch.get-many` may be used: Spin 4.0.2's Redis store
    /// implements it with `KEYS` and fails (or traps, for one key), so the
    /// `kv_batch_reads` variable turns it off and reads go one key at a time.
    batch_reads: std::cell::Cell<bool>,
}

impl KvStore {
    pub fn open(label: &str) -> Result<KvStore, StoreError> {
        store::open(label).map(|bucket| KvStore { bucket, batch_reads: std::cell::Cell::new(true) }).map_err(error)
    }

    pub fn use_batch_reads(&self, on: bool) {
        self.batch_reads.set(on);
    }
}

/// The store as the layout says: every key in `default`, or each SET's keys
/// in that SET's label and the rest in `users` (`KvLayout::label_index`).
/// Buckets are opened on first use and kept for the instance's life (their
/// handles live in its resource table).
pub struct Stores {
    layout: KvLayout,
    /// The layout's replica labels instead, only read (`http::serve`).
    replica: bool,
    /// By index into `layout.labels()`.
    buckets: [std::cell::OnceCell<KvStore>; SETS as usize + 1],
    batch_reads: std::cell::Cell<bool>,
}

impl Stores {
    /// The instance's stores for `layout` (opened once; a layout other than
    /// the first one asked for gets stores of its own, for tests).
    pub fn shared(layout: KvLayout) -> std::rc::Rc<Stores> {
        Stores::cached(layout, false)
    }

    /// The replicas of `layout`'s stores, if it has any: read only when a
    /// read's primary fails. A replica is a Redis replica, which refuses
    /// even `INCRBY 0`, so a counter is read there with `GET` (Spin's Redis
    /// store and hongbao-host's keep counters as decimal text).
    pub fn replicas(layout: KvLayout) -> Option<std::rc::Rc<Stores>> {
        (!layout.replica_labels().is_empty()).then(|| Stores::cached(layout, true))
    }

    fn cached(layout: KvLayout, replica: bool) -> std::rc::Rc<Stores> {
        thread_local! {
            static OPEN: std::cell::RefCell<Vec<std::rc::Rc<Stores>>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        OPEN.with(|open| {
            let mut open = open.borrow_mut();
            if let Some(stores) = open.iter().find(|s| s.layout == layout && s.replica == replica) {
                return std::rc::Rc::clone(stores);
            }
            let stores = std::rc::Rc::new(Stores {
                layout,
                replica,
                buckets: Default::default(),
                batch_reads: std::cell::Cell::new(true),
            });
            open.push(std::rc::Rc::clone(&stores));
            stores
        })
    }

    pub fn use_batch_reads(&self, on: bool) {
        self.batch_reads.set(on);
    }

    /// Which bucket `key` lives in (an index into `buckets`).
    fn index(&self, key: &str) -> usize {
        self.layout.label_index(key)
    }

    fn bucket(&self, index: usize) -> Result<&KvStore, StoreError> {
        let cell = &self.buckets[index];
        if let Some(bucket) = cell.get() {
            return Ok(bucket);
        }
        let labels = if self.replica { self.layout.replica_labels() } else { self.layout.labels() };
        let bucket = KvStore::open(labels[index])?;
        Ok(cell.get_or_init(|| bucket))
    }

    fn for_key(&self, key: &str) -> Result<&KvStore, StoreError> {
        self.at(self.index(key))
    }

    /// The bucket of `key`, to write to: never a replica's.
    fn for_write(&self, key: &str) -> Result<&KvStore, StoreError> {
        if self.replica {
            return Err(StoreError("a replica takes no writes".into()));
        }
        self.for_key(key)
    }

    /// The bucket at `index`, told whether batch reads may be used.
    fn at(&self, index: usize) -> Result<&KvStore, StoreError> {
        let bucket = self.bucket(index)?;
        bucket.use_batch_reads(self.batch_reads.get());
        Ok(bucket)
    }

    /// Keys grouped by bucket, each with its position in `keys`, in order.
    fn by_bucket<'k>(&self, keys: impl Iterator<Item = &'k str>) -> Vec<(usize, Vec<usize>)> {
        let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
        for (position, key) in keys.enumerate() {
            let index = self.index(key);
            match groups.iter_mut().find(|(i, _)| *i == index) {
                Some((_, positions)) => positions.push(position),
                None => groups.push((index, vec![position])),
            }
        }
        groups
    }
}

impl Store for Stores {
    type Cas = atomics::Cas;

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.for_key(key)?.get(key)
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.for_write(key)?.set(key, value)
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.for_write(key)?.delete(key)
    }

    fn exists(&self, key: &str) -> Result<bool, StoreError> {
        self.for_key(key)?.exists(key)
    }

    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        // One bucket: no grouping, no copies.
        if self.layout == KvLayout::Single {
            return self.at(0)?.get_many(keys);
        }
        let mut values = vec![None; keys.len()];
        for (_, positions) in self.by_bucket(keys.iter().map(String::as_str)) {
            let group: Vec<String> = positions.iter().map(|&p| keys[p].clone()).collect();
            let found = self.for_key(&group[0])?.get_many(&group)?;
            for (position, value) in positions.into_iter().zip(found) {
                values[position] = value;
            }
        }
        Ok(values)
    }

    fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        if self.layout == KvLayout::Single {
            return self.at(0)?.set_many(entries);
        }
        for (_, positions) in self.by_bucket(entries.iter().map(|(k, _)| k.as_str())) {
            let group: Vec<(String, Vec<u8>)> = positions.iter().map(|&p| entries[p].clone()).collect();
            self.for_write(&group[0].0)?.set_many(&group)?;
        }
        Ok(())
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        if self.replica && delta == 0 {
            let text = self.for_key(key)?.get(key)?;
            let text = text.as_deref().map(String::from_utf8_lossy);
            return text.map_or(Ok(0), |t| t.parse().map_err(|_| StoreError(format!("counter {key} reads {t}"))));
        }
        self.for_write(key)?.increment(key, delta)
    }

    fn cas(&self, key: &str) -> Result<atomics::Cas, StoreError> {
        self.for_write(key)?.cas(key)
    }

    fn current(&self, cas: &atomics::Cas) -> Result<Option<Vec<u8>>, StoreError> {
        cas.current().map_err(error)
    }

    fn swap(&self, cas: atomics::Cas, value: &[u8]) -> Result<(), SwapError> {
        swap(cas, value)
    }

    /// Label after label in layout order, one page of one label per call:
    /// the cursor is the label's index and that label's own cursor
    /// (`{index}` or `{index}:{cursor}`). Each key is kept only from the
    /// label the layout puts it in (labels on one Redis server each list the
    /// server's every key).
    fn list_keys(&self, cursor: Option<&str>) -> Result<KeyPage, StoreError> {
        let (index, inner) = match cursor {
            None => (0, None),
            Some(cursor) => {
                let (index, inner) = cursor.split_once(':').map_or((cursor, None), |(i, inner)| (i, Some(inner)));
                let index = index.parse().ok().filter(|&i| i < self.layout.labels().len());
                (index.ok_or_else(|| StoreError(format!("list_keys: bad cursor {cursor}")))?, inner)
            }
        };
        let page = self.at(index)?.list_keys(inner)?;
        let keys = page.keys.into_iter().filter(|key| self.index(key) == index).collect();
        let cursor = match page.cursor {
            Some(next) => Some(format!("{index}:{next}")),
            None if index + 1 < self.layout.labels().len() => Some((index + 1).to_string()),
            None => None,
        };
        Ok(KeyPage { keys, cursor })
    }
}

fn error(e: store::Error) -> StoreError {
    StoreError(match e {
        store::Error::NoSuchStore => "no such store".into(),
        store::Error::AccessDenied => "access denied".into(),
        store::Error::Other(message) => message,
    })
}

impl Store for KvStore {
    type Cas = atomics::Cas;

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.bucket.get(key).map_err(error)
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.bucket.set(key, value).map_err(error)
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.bucket.delete(key).map_err(error)
    }

    fn exists(&self, key: &str) -> Result<bool, StoreError> {
        self.bucket.exists(key).map_err(error)
    }

    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        if !self.batch_reads.get() {
            return keys.iter().map(|key| self.get(key)).collect();
        }
        let found = batch::get_many(&self.bucket, keys).map_err(error)?;
        Ok(crate::kv::align(keys, found))
    }

    fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        batch::set_many(&self.bucket, entries).map_err(error)
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        atomics::increment(&self.bucket, key, delta).map_err(error)
    }

    fn cas(&self, key: &str) -> Result<atomics::Cas, StoreError> {
        atomics::Cas::new(&self.bucket, key).map_err(error)
    }

    fn current(&self, cas: &atomics::Cas) -> Result<Option<Vec<u8>>, StoreError> {
        cas.current().map_err(error)
    }

    fn swap(&self, cas: atomics::Cas, value: &[u8]) -> Result<(), SwapError> {
        swap(cas, value)
    }

    /// One page, as the store cuts it (Spin's stores answer in one).
    fn list_keys(&self, cursor: Option<&str>) -> Result<KeyPage, StoreError> {
        let page = self.bucket.list_keys(cursor).map_err(error)?;
        Ok(KeyPage { keys: page.keys, cursor: page.cursor })
    }
}

/// `atomics.swap` (a handle knows its bucket).
fn swap(cas: atomics::Cas, value: &[u8]) -> Result<(), SwapError> {
    atomics::swap(cas, value).map_err(|e| match e {
        atomics::CasError::CasFailed(_) => SwapError::CasFailed,
        atomics::CasError::StoreError(e) => SwapError::Store(error(e)),
    })
}

/// `get-many` answers (key, value) pairs and Spin's SQLite store leaves
/// missing keys out entirely; line the answers up with the keys asked for.
pub fn align(keys: &[String], found: Vec<(String, Option<Vec<u8>>)>) -> Vec<Option<Vec<u8>>> {
    let mut by_key: std::collections::HashMap<String, Option<Vec<u8>>> = found.into_iter().collect();
    keys.iter().map(|k| by_key.remove(k).flatten()).collect()
}

#[cfg(test)]
mod tests {
    use super::align;

    #[test]
    fn get_many_answers_line_up_with_the_keys() {
        let keys: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let found = vec![("c".to_string(), Some(b"3".to_vec())), ("a".to_string(), Some(b"1".to_vec()))];
        assert_eq!(align(&keys, found), vec![Some(b"1".to_vec()), None, Some(b"3".to_vec())]);
        let with_none = vec![("b".to_string(), None)];
        assert_eq!(align(&keys, with_none), vec![None, None, None]);
    }
}
