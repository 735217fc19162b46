//! What one component instance's store holds (WASI, WASI HTTP, the
//! key-value and variables context), the linker that provides it, and the
//! `HandlerState` through which `ProxyHandler` asks for fresh stores.

use super::ServeOptions;
use crate::kv::wasi::{KvCtx, KvView};
use anyhow::Result;
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::WasiHttpCtx;
use wasmtime_wasi_http::handler::{HandlerState, StoreBundle};
use wasmtime_wasi_http::p3::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::p3::{self, WasiHttpCtxView};

/// Per-instance state: WASI, WASI HTTP, and the key-value/config context.
pub(super) struct HostState {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: DenyOutbound,
    kv: Arc<KvCtx>,
    /// The highest key-value sequence number the current request read or
    /// wrote: its response waits until that much is durable.
    pub(super) observed: u64,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl p3::WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { table: &mut self.table, ctx: &mut self.http, hooks: &mut self.hooks }
    }
}

fn kv_view(state: &mut HostState) -> KvView<'_> {
    KvView { ctx: &state.kv, table: &mut state.table, observed: &mut state.observed }
}

/// Everything a component may import: WASI 0.2 and 0.3, WASI HTTP 0.3, and
/// `wasi:keyvalue` with Spin's variables.
pub(super) fn linker(engine: &Engine) -> Result<Linker<HostState>> {
    let mut linker: Linker<HostState> = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi::p3::add_to_linker(&mut linker)?;
    p3::add_to_linker(&mut linker)?;
    crate::kv::wasi::add_to_linker(&mut linker, kv_view)?;
    Ok(linker)
}

/// No component makes outbound requests (spin.toml allows no hosts).
struct DenyOutbound;

impl p3::WasiHttpHooks for DenyOutbound {
    fn send_request(
        &mut self,
        _request: http::Request<UnsyncBoxBody<Bytes, ErrorCode>>,
        _options: Option<p3::RequestOptions>,
        _fut: Box<dyn std::future::Future<Output = Result<(), ErrorCode>> + Send>,
    ) -> Box<
        dyn std::future::Future<
                Output = Result<
                    (
                        http::Response<UnsyncBoxBody<Bytes, ErrorCode>>,
                        Box<dyn std::future::Future<Output = Result<(), ErrorCode>> + Send>,
                    ),
                    wasmtime_wasi::TrappableError<ErrorCode>,
                >,
            > + Send,
    > {
        Box::new(async { Err(ErrorCode::HttpRequestDenied.into()) })
    }
}

static INSTANCES_CREATED: AtomicU64 = AtomicU64::new(0);

/// Stores (hence instances) created so far, by every app in this process:
/// the bench divides requests by it to show how well instances are reused.
pub fn instances_created() -> u64 {
    INSTANCES_CREATED.load(Ordering::Relaxed)
}

/// What `ProxyHandler` asks of us: fresh stores, and the reuse limits.
pub(super) struct ComponentState {
    pub(super) name: String,
    pub(super) engine: Engine,
    pub(super) kv: Arc<KvCtx>,
    pub(super) options: ServeOptions,
    /// Instances of this component created (a metric).
    pub(super) instances: prometheus_client::metrics::counter::Counter,
}

impl HandlerState for ComponentState {
    type StoreData = HostState;

    fn new_store(&self, _req_id: Option<u64>) -> wasmtime::Result<StoreBundle<HostState>> {
        INSTANCES_CREATED.fetch_add(1, Ordering::Relaxed);
        self.instances.inc();
        let mut wasi = WasiCtxBuilder::new();
        wasi.inherit_stdout().inherit_stderr();
        if let Some(clock) = &self.options.wall_clock {
            wasi.wall_clock(clock.clone());
        }
        let state = HostState {
            table: ResourceTable::new(),
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            hooks: DenyOutbound,
            kv: Arc::clone(&self.kv),
            observed: 0,
        };
        Ok(StoreBundle { store: Store::new(&self.engine, state), write_profile: Box::new(|_| {}) })
    }

    fn request_timeout(&self) -> Duration {
        self.options.request_timeout.unwrap_or(Duration::MAX)
    }

    fn idle_instance_timeout(&self) -> Duration {
        self.options.idle_instance_timeout
    }

    fn max_instance_reuse_count(&self) -> usize {
        self.options.max_instance_reuse_count.max(1)
    }

    fn max_instance_concurrent_reuse_count(&self) -> usize {
        self.options.max_instance_concurrent_reuse_count.max(1)
    }

    fn handle_worker_error(&self, error: wasmtime::Error) {
        eprintln!("hongbao-host: [{}] instance ended with an error: {error:?}", self.name);
    }
}
