//! `wasi:keyvalue@0.2.0-draft2` as a `hongbao::Store`.

use hongbao::store::{Store, StoreError, SwapError};
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

    /// The bucket, opened once per instance and kept for the requests the
    /// instance serves after (its handle lives in the instance's resource
    /// table, which lasts as long as the instance).
    pub fn shared(label: &str) -> Result<std::rc::Rc<KvStore>, StoreError> {
        thread_local! {
            static OPEN: std::cell::RefCell<Option<(String, std::rc::Rc<KvStore>)>> = const { std::cell::RefCell::new(None) };
        }
        OPEN.with(|open| {
            let mut open = open.borrow_mut();
            if let Some((opened, store)) = open.as_ref().filter(|(opened, _)| opened == label) {
                let _ = opened;
                return Ok(std::rc::Rc::clone(store));
            }
            let store = std::rc::Rc::new(KvStore::open(label)?);
            *open = Some((label.to_owned(), std::rc::Rc::clone(&store)));
            Ok(store)
        })
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
        atomics::swap(cas, value).map_err(|e| match e {
            atomics::CasError::CasFailed(_) => SwapError::CasFailed,
            atomics::CasError::StoreError(e) => SwapError::Store(error(e)),
        })
    }
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
