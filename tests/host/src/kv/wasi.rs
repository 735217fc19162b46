//! `wasi:keyvalue@0.2.0-draft2` (store, atomics, batch) and
//! `wasi:config/store@0.2.0-draft-2024-09-27` as host functions.
//!
//! The key-value functions are async (as Spin's are): a Redis label's call
//! awaits the server, a local label's answers at once. Local calls never
//! wait for the disk: each notes the highest write sequence number it read
//! or wrote in the instance's state, and the server waits once, after the
//! component has answered and before the response leaves, until that much is
//! durable (see `run_component` in `server/serve.rs`). A response therefore
//! never reports anything that could still vanish, and a compare-and-set's
//! read→swap window is not stretched by a commit.
//! Buckets are opened only for the labels the component's `key_value_stores`
//! grants (else `access-denied`, as in Spin) and the app's stores provide.

use super::stores::{Backend, Seen, Stores};
use super::{KvError, Ticket};
use std::sync::Arc;
use wasmtime::component::{HasData, Resource, ResourceTable};

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit/keyvalue",
        world: "wasi:keyvalue/imports",
        imports: { default: async | trappable },
        with: {
            "wasi:keyvalue/store.bucket": crate::kv::wasi::Bucket,
            "wasi:keyvalue/atomics.cas": crate::kv::wasi::Cas,
        },
        trappable_error_type: { "wasi:keyvalue/store.error" => crate::kv::wasi::StoreFault },
    });
}

mod config_bindings {
    wasmtime::component::bindgen!({
        path: "wit/config",
        world: "wasi:config/imports",
        imports: { default: trappable },
    });
}

use bindings::wasi::keyvalue::{atomics, batch, store};
use config_bindings::wasi::config::store as config;

/// An open bucket: the store label it names.
pub struct Bucket {
    label: String,
}

/// A compare-and-set handle: the key, and what `current()` saw (`None`
/// until it is called, which the swap treats as "absent").
pub struct Cas {
    label: String,
    key: String,
    seen: Option<Seen>,
}

/// A failed key-value call: an error for the guest, or a trap.
pub enum StoreFault {
    Guest(store::Error),
    Trap(wasmtime::Error),
}

impl From<KvError> for StoreFault {
    fn from(e: KvError) -> Self {
        StoreFault::Guest(store::Error::Other(e.0))
    }
}

impl From<wasmtime::component::ResourceTableError> for StoreFault {
    fn from(e: wasmtime::component::ResourceTableError) -> Self {
        StoreFault::Trap(e.into())
    }
}

/// What a component's store needs for these interfaces.
pub struct KvCtx {
    pub stores: Arc<Stores>,
    /// This component's key-value calls and swaps answered cas-failed (metrics).
    pub store_calls: prometheus_client::metrics::counter::Counter,
    pub cas_retries: prometheus_client::metrics::counter::Counter,
    /// Labels from the component's `key_value_stores`.
    pub labels: Arc<[String]>,
    /// The component's variables, rendered.
    pub variables: Arc<[(String, String)]>,
}

pub struct KvView<'a> {
    pub ctx: &'a KvCtx,
    pub table: &'a mut ResourceTable,
    /// The highest sequence number this request has read or written.
    pub observed: &'a mut u64,
}

pub struct KvData;

impl HasData for KvData {
    type Data<'a> = KvView<'a>;
}

pub fn add_to_linker<T: Send + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    view: fn(&mut T) -> KvView<'_>,
) -> wasmtime::Result<()> {
    bindings::Imports::add_to_linker::<T, KvData>(linker, view)?;
    config::add_to_linker::<T, KvData>(linker, view)?;
    Ok(())
}

impl KvView<'_> {
    /// The bucket's label and its store, borrowed (no copy per call).
    fn bucket(&self, bucket: &Resource<Bucket>) -> Result<(&str, &Backend), StoreFault> {
        let label = &self.table.get(bucket)?.label;
        Ok((label, self.store(label)?))
    }

    /// The store of `label`, for one key-value call (counted).
    fn store(&self, label: &str) -> Result<&Backend, StoreFault> {
        self.ctx.store_calls.inc();
        self.ctx.stores.get(label).ok_or(StoreFault::Guest(store::Error::NoSuchStore))
    }
}

impl KvView<'_> {
    /// Remembers that the answer depends on everything up to `ticket`.
    fn observe(&mut self, ticket: Ticket) {
        *self.observed = (*self.observed).max(ticket.0);
    }

    /// `observe`s the ticket of a store answer and returns its value.
    fn note<T>(&mut self, (value, ticket): (T, Ticket)) -> T {
        self.observe(ticket);
        value
    }
}

impl store::HostBucket for KvView<'_> {
    async fn get(&mut self, bucket: Resource<Bucket>, key: String) -> Result<Option<Vec<u8>>, StoreFault> {
        let (label, kv) = self.bucket(&bucket)?;
        let read = kv.get(label, &key).await?;
        Ok(self.note(read))
    }

    async fn set(&mut self, bucket: Resource<Bucket>, key: String, value: Vec<u8>) -> Result<(), StoreFault> {
        let (label, kv) = self.bucket(&bucket)?;
        let ticket = kv.set(label, &key, value).await?;
        self.observe(ticket);
        Ok(())
    }

    async fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> Result<(), StoreFault> {
        let (label, kv) = self.bucket(&bucket)?;
        let ticket = kv.delete(label, &key).await?;
        self.observe(ticket);
        Ok(())
    }

    async fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> Result<bool, StoreFault> {
        let (label, kv) = self.bucket(&bucket)?;
        let read = kv.exists(label, &key).await?;
        Ok(self.note(read))
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<String>,
    ) -> Result<store::KeyResponse, StoreFault> {
        // Unlike Spin's stores (one page holding every key), in pages.
        let (label, kv) = self.bucket(&bucket)?;
        let page = kv.list_keys(label, cursor.as_deref()).await?;
        Ok(store::KeyResponse { keys: page.keys, cursor: page.cursor })
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl store::Host for KvView<'_> {
    async fn open(&mut self, identifier: String) -> Result<Resource<Bucket>, StoreFault> {
        if !self.ctx.labels.contains(&identifier) {
            return Err(StoreFault::Guest(store::Error::AccessDenied));
        }
        if self.ctx.stores.get(&identifier).is_none() {
            return Err(StoreFault::Guest(store::Error::NoSuchStore));
        }
        Ok(self.table.push(Bucket { label: identifier })?)
    }

    fn convert_error(&mut self, err: StoreFault) -> wasmtime::Result<store::Error> {
        match err {
            StoreFault::Guest(e) => Ok(e),
            StoreFault::Trap(e) => Err(e),
        }
    }
}

impl atomics::HostCas for KvView<'_> {
    async fn new(&mut self, bucket: Resource<Bucket>, key: String) -> Result<Resource<Cas>, StoreFault> {
        let label = self.table.get(&bucket)?.label.clone();
        Ok(self.table.push(Cas { label, key, seen: None })?)
    }

    async fn current(&mut self, cas: Resource<Cas>) -> Result<Option<Vec<u8>>, StoreFault> {
        let handle = self.table.get(&cas)?;
        let (value, seen, ticket) = self.store(&handle.label)?.current(&handle.label, &handle.key).await?;
        self.table.get_mut(&cas)?.seen = Some(seen);
        Ok(self.note((value, ticket)))
    }

    async fn drop(&mut self, cas: Resource<Cas>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

impl atomics::Host for KvView<'_> {
    async fn increment(&mut self, bucket: Resource<Bucket>, key: String, delta: i64) -> Result<i64, StoreFault> {
        let (label, kv) = self.bucket(&bucket)?;
        let counted = kv.increment(label, &key, delta).await?;
        Ok(self.note(counted))
    }

    async fn swap(&mut self, cas: Resource<Cas>, value: Vec<u8>) -> wasmtime::Result<Result<(), atomics::CasError>> {
        let Cas { label, key, seen } = self.table.delete(cas)?;
        let backend = match self.store(&label) {
            Ok(backend) => backend,
            Err(_) => return Ok(Err(atomics::CasError::StoreError(store::Error::NoSuchStore))),
        };
        let outcome = match backend.swap(&label, &key, seen, value).await {
            Ok(outcome) => outcome,
            Err(e) => return Ok(Err(atomics::CasError::StoreError(store::Error::Other(e.0)))),
        };
        match outcome {
            Ok(ticket) => {
                self.observe(ticket);
                Ok(Ok(()))
            }
            // As Spin does, hand back a fresh handle that has read the current value.
            Err(now) => {
                self.ctx.cas_retries.inc();
                let fresh = self.table.push(Cas { label, key, seen: Some(now) })?;
                Ok(Err(atomics::CasError::CasFailed(fresh)))
            }
        }
    }
}

impl batch::Host for KvView<'_> {
    async fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Result<Vec<(String, Option<Vec<u8>>)>, StoreFault> {
        let (label, kv) = self.bucket(&bucket)?;
        let read = kv.get_many(label, &keys).await?;
        Ok(self.note(read))
    }

    async fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> Result<(), StoreFault> {
        let (label, kv) = self.bucket(&bucket)?;
        let last = kv.set_many(label, key_values).await?;
        self.observe(last);
        Ok(())
    }

    async fn delete_many(&mut self, bucket: Resource<Bucket>, keys: Vec<String>) -> Result<(), StoreFault> {
        let (label, kv) = self.bucket(&bucket)?;
        let last = kv.delete_many(label, &keys).await?;
        self.observe(last);
        Ok(())
    }
}

impl config::Host for KvView<'_> {
    fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<String>, config::Error>> {
        Ok(Ok(self.ctx.variables.iter().find(|(k, _)| *k == key).map(|(_, v)| v.clone())))
    }

    fn get_all(&mut self) -> wasmtime::Result<Result<Vec<(String, String)>, config::Error>> {
        Ok(Ok(self.ctx.variables.to_vec()))
    }
}
