//! Serving: the app (manifest, router, compiled components, store), and the
//! request path, top to bottom:
//!
//! accept → `handle` → route → spin-* headers → a running-request permit
//! (at most `max_running_requests` at once, granted in arrival order) → the
//! component's `ProxyHandler` (a pre-instantiated component; instances are
//! reused for sequential requests, as Spin 4 does for WASI 0.3) → WASI
//! response, its body read into memory → durability wait → hyper.
//!
//! A trap or a guest error becomes a 500 with a request id in the log. Each
//! instance serves one request at a time (`max_instance_concurrent_reuse_count`
//! defaults to 1 here, where Spin uses 16), so a trap can only ever take down
//! the request that caused it.

use crate::kv::Kv;
use crate::kv::sqlite::{Journal, SPIN_DB_FILE};
use crate::kv::wasi::{KvCtx, KvView};
use crate::manifest::Manifest;
use crate::router::Router;
use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::WasiHttpCtx;
use wasmtime_wasi_http::handler::{HandlerState, Proxy, ProxyHandler, ProxyPre, StoreBundle};
use wasmtime_wasi_http::p3::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::p3::{self, WasiHttpCtxView};

/// Instance slots in the pool: more than the bench's 1,024 clients can hold
/// at once (one instance per request in flight, plus idle reusable ones).
const POOLED_INSTANCES: u32 = 2_048;

/// An engine with pooled instance slots, as Spin runs: a new instance takes a
/// warm slot (its memory mapping, tables and stack kept) instead of mapping
/// and unmapping fresh ones, which showed up as page faults and TLB
/// shootdowns in the bench's profile. Falls back to on-demand allocation
/// where the address space cannot be reserved (e.g. a `ulimit -v`).
fn pooled_engine(config: &mut Config) -> Result<Engine> {
    let mut pool = wasmtime::PoolingAllocationConfig::new();
    pool.total_component_instances(POOLED_INSTANCES)
        .total_core_instances(POOLED_INSTANCES * 8)
        .total_memories(POOLED_INSTANCES)
        .total_tables(POOLED_INSTANCES * 2)
        .total_stacks(POOLED_INSTANCES)
        .max_memory_size(256 << 20)
        // Keep the first pages of a slot mapped: most requests touch no more.
        .linear_memory_keep_resident(1 << 20)
        .table_keep_resident(64 << 10)
        // Reset only the pages an instance dirtied, found with Linux's
        // PAGEMAP_SCAN (6.7+; off where missing), and keep them mapped: a
        // burst of new instances otherwise re-faults its data pages
        // copy-on-write, each fault a TLB shootdown across cores.
        .pagemap_scan(wasmtime::Enabled::Auto);
    config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    match Engine::new(config) {
        Ok(engine) => Ok(engine),
        Err(error) => {
            eprintln!("hongbao-host: pooled instances unavailable ({error:#}); allocating on demand");
            config.allocation_strategy(wasmtime::InstanceAllocationStrategy::OnDemand);
            Ok(Engine::new(config)?)
        }
    }
}

/// The body type every response has on its way to hyper.
pub type Body = UnsyncBoxBody<Bytes, ErrorCode>;

/// Where key-value data lives.
#[derive(Debug, Clone)]
pub enum StoreChoice {
    /// Gone when the process exits (`--memory`).
    Memory,
    /// `DIR/sqlite_key_value.db`, Spin's default file and table (`--state-dir`, default `.spin`).
    Durable(PathBuf),
}

/// Enough to keep both cores busy while some running requests sleep (CAS
/// backoff), few enough that a burst reuses a handful of instances; the
/// bench found 16 better than 8, 32 or 64. (The commit wait holds no permit.)
pub const DEFAULT_MAX_RUNNING_REQUESTS: usize = 16;

/// Instance reuse, as `spin up`'s flags of the same names, and the bound on
/// requests running at once.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub max_instance_reuse_count: usize,
    pub max_instance_concurrent_reuse_count: usize,
    pub idle_instance_timeout: Duration,
    pub request_timeout: Option<Duration>,
    /// Requests running in components at once; the rest wait in arrival
    /// order, holding no instance, until one finishes (0: no bound). A
    /// burst of N clients otherwise needs N instances at once (one request
    /// per instance), and creating them costs more than serving the burst.
    pub max_running_requests: usize,
    /// The components' wall clock, for tests (`--clock-file`); `None`: the real one.
    pub wall_clock: Option<crate::clock::FileClock>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_instance_reuse_count: 128,
            max_instance_concurrent_reuse_count: 1,
            idle_instance_timeout: Duration::from_secs(1),
            request_timeout: None,
            max_running_requests: DEFAULT_MAX_RUNNING_REQUESTS,
            wall_clock: None,
        }
    }
}

/// Per-instance state: WASI, WASI HTTP, and the key-value/config context.
pub struct HostState {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: DenyOutbound,
    kv: Arc<KvCtx>,
    /// The highest key-value sequence number the current request read or
    /// wrote: its response waits until that much is durable.
    observed: u64,
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

/// Stores (hence instances) created so far, by every app in this process:
/// the bench divides requests by it to show how well instances are reused.
static INSTANCES_CREATED: AtomicU64 = AtomicU64::new(0);

pub fn instances_created() -> u64 {
    INSTANCES_CREATED.load(Ordering::Relaxed)
}

/// What `ProxyHandler` asks of us: fresh stores, and the reuse limits.
struct ComponentState {
    name: String,
    engine: Engine,
    kv: Arc<KvCtx>,
    options: ServeOptions,
}

impl HandlerState for ComponentState {
    type StoreData = HostState;

    fn new_store(&self, _req_id: Option<u64>) -> wasmtime::Result<StoreBundle<HostState>> {
        INSTANCES_CREATED.fetch_add(1, Ordering::Relaxed);
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

/// A loaded application, ready to serve.
pub struct App {
    pub manifest: Manifest,
    pub variables: HashMap<String, String>,
    pub kv: Arc<Kv>,
    pub store_location: String,
    router: Router,
    handlers: HashMap<String, ProxyHandler<ComponentState>>,
    /// Bytes of each component's Wasm, by component id (for reports).
    pub component_sizes: Vec<(String, u64)>,
    pub compile_report: Vec<(String, Duration, bool)>,
    pub engine: Engine,
    pub options: ServeOptions,
    linker_pres: HashMap<String, p3::bindings::ServicePre<HostState>>,
}

const STORE_LABELS: [&str; 1] = ["default"];

impl App {
    /// Loads `spin.toml`, resolves variables from the environment, opens the
    /// store and compiles (or loads from cache) every component.
    pub fn load(manifest_path: &Path, store: StoreChoice) -> Result<App> {
        App::load_with(manifest_path, store, ServeOptions::default(), |k| std::env::var(k).ok())
    }

    pub fn load_with(
        manifest_path: &Path,
        store: StoreChoice,
        options: ServeOptions,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<App> {
        let manifest = Manifest::load(manifest_path)?;
        let variables = manifest.resolve_variables(env)?;
        let (kv, store_location) = match store {
            StoreChoice::Memory => (Kv::in_memory(), "in memory (--memory): gone on exit".to_string()),
            StoreChoice::Durable(dir) => {
                let path = dir.join(SPIN_DB_FILE);
                let kv = Kv::durable(Journal::open(&path).map_err(|e| anyhow!(e.0))?).map_err(|e| anyhow!(e.0))?;
                (kv, format!("{} (SQLite, Spin's layout, durable before each response)", path.display()))
            }
        };
        let kv = Arc::new(kv);

        let mut config = Config::new();
        config.wasm_component_model(true).wasm_component_model_async(true);
        // HONGBAO_PERFMAP=1 writes /tmp/perf-<pid>.map so `perf report` can
        // name JIT-compiled guest functions (see BENCHMARKS.md, profiling).
        if std::env::var_os("HONGBAO_PERFMAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = pooled_engine(&mut config)?;
        let mut linker: Linker<HostState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi::p3::add_to_linker(&mut linker)?;
        p3::add_to_linker(&mut linker)?;
        crate::kv::wasi::add_to_linker(&mut linker, kv_view)?;

        let mut handlers = HashMap::new();
        let mut linker_pres = HashMap::new();
        let mut component_sizes = Vec::new();
        let mut compile_report = Vec::new();
        for (id, decl) in &manifest.components {
            for label in &decl.key_value_stores {
                if !STORE_LABELS.contains(&label.as_str()) {
                    bail!(
                        "unknown key_value_stores label {label:?} for component {id:?} (only \"default\" is provided)"
                    );
                }
            }
            let wasm = manifest.dir.join(&decl.source);
            let started = std::time::Instant::now();
            // Cached next to the Wasm (normally inside target/).
            let cache_dir = wasm.parent().unwrap_or(Path::new(".")).join("hongbao-host-cache");
            let (component, cached) = compile(&engine, &wasm, &cache_dir).with_context(|| format!("component {id}"))?;
            compile_report.push((id.clone(), started.elapsed(), cached));
            component_sizes.push((id.clone(), std::fs::metadata(&wasm)?.len()));
            let instance_pre = linker
                .instantiate_pre(&component)
                .map_err(anyhow::Error::from)
                .with_context(|| format!("component {id} imports something this host (and Spin) does not provide"))?;
            let service = p3::bindings::ServicePre::new(instance_pre)
                .map_err(anyhow::Error::from)
                .with_context(|| format!("component {id} does not export wasi:http/handler@0.3.0-rc-2026-03-15"))?;
            let pre = ProxyPre::P3(service.clone());
            let kv_ctx = Arc::new(KvCtx {
                kv: Arc::clone(&kv),
                labels: decl.key_value_stores.clone().into(),
                provided: STORE_LABELS.iter().map(|s| s.to_string()).collect(),
                variables: manifest.component_variables(id, &variables)?.into(),
            });
            let state =
                ComponentState { name: id.clone(), engine: engine.clone(), kv: kv_ctx, options: options.clone() };
            linker_pres.insert(id.clone(), service);
            handlers.insert(id.clone(), ProxyHandler::new(state, pre));
        }
        let (router, replaced) =
            Router::build(manifest.triggers.iter().map(|t| (t.route.as_str(), t.component.as_str())));
        for r in replaced {
            eprintln!("hongbao-host: duplicate route, never used: {r}");
        }
        Ok(App {
            manifest,
            variables,
            kv,
            store_location,
            router,
            handlers,
            component_sizes,
            compile_report,
            engine,
            options,
            linker_pres,
        })
    }

    /// Instantiates a component once, outside the server (for benchmarks of
    /// instantiation cost).
    pub async fn instantiate_once(&self, component: &str) -> Result<Duration> {
        let pre = self.linker_pres.get(component).ok_or_else(|| anyhow!("no component {component}"))?;
        let state = &self.handlers[component].state();
        let mut bundle = state.new_store(None)?;
        let started = std::time::Instant::now();
        pre.instantiate_async(&mut bundle.store).await?;
        Ok(started.elapsed())
    }
}

/// Compiles a component, or loads it from the on-disk cache (keyed by a
/// SHA-256 of the Wasm and the engine's compatibility hash).
fn compile(engine: &Engine, wasm: &Path, cache_dir: &Path) -> Result<(Component, bool)> {
    use sha2::{Digest, Sha256};
    use std::hash::{Hash, Hasher};
    let bytes =
        std::fs::read(wasm).with_context(|| format!("reading {} (build the components first)", wasm.display()))?;
    let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut engine_hash);
    let digest = Sha256::digest(&bytes);
    let key: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    let cached = cache_dir.join(format!("{key}-{:016x}.cwasm", engine_hash.finish()));
    if cached.exists() {
        // SAFETY: the file was written by `Component::serialize` of this same
        // code below, under a name derived from the Wasm and engine hashes.
        if let Ok(component) = unsafe { Component::deserialize_file(engine, &cached) } {
            return Ok((component, true));
        }
    }
    let component = Component::new(engine, &bytes)?;
    if std::fs::create_dir_all(cache_dir).is_ok() {
        let temp = cached.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&temp, component.serialize()?).is_ok() {
            let _ = std::fs::rename(&temp, &cached);
        }
    }
    Ok((component, false))
}

struct Shared {
    app: App,
    next_request: AtomicU64,
    in_flight: AtomicUsize,
    /// FIFO permits for `max_running_requests` (tokio's semaphore is fair).
    running: Option<Arc<tokio::sync::Semaphore>>,
    /// Per component: requests answered and total time inside the host
    /// (routing to response ready, network excluded), for the benchmark.
    timings: HashMap<String, (AtomicU64, AtomicU64)>,
}

/// A running server.
pub struct Running {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    accept_loop: tokio::task::JoinHandle<()>,
}

impl Running {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn app(&self) -> &App {
        &self.shared.app
    }

    /// Per component: (requests, mean time in the host from routing to the
    /// response being ready), since start.
    pub fn timings(&self) -> Vec<(String, u64, Duration)> {
        let mut all: Vec<_> = self
            .shared
            .timings
            .iter()
            .map(|(k, (n, ns))| {
                let n = n.load(Ordering::Relaxed);
                (k.clone(), n, Duration::from_nanos(ns.load(Ordering::Relaxed) / n.max(1)))
            })
            .collect();
        all.sort();
        all
    }

    /// Stops accepting, waits (up to 10 s) for requests in flight, and makes
    /// sure every write is on disk.
    pub async fn shutdown(self) -> Result<()> {
        let _ = self.stop.send(true);
        let _ = self.accept_loop.await;
        for _ in 0..1000 {
            if self.shared.in_flight.load(Ordering::SeqCst) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.shared.app.kv.flush().map_err(|e| anyhow!(e.0))
    }
}

/// Binds `addr` and serves `app` until `shutdown`.
pub async fn serve(app: App, addr: SocketAddr) -> Result<Running> {
    let listener = TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
    let addr = listener.local_addr()?;
    let timings = app.handlers.keys().map(|k| (k.clone(), (AtomicU64::new(0), AtomicU64::new(0)))).collect();
    let limit = app.options.max_running_requests;
    let running = (limit > 0).then(|| Arc::new(tokio::sync::Semaphore::new(limit)));
    let shared =
        Arc::new(Shared { app, next_request: AtomicU64::new(1), in_flight: AtomicUsize::new(0), running, timings });
    let (stop, mut stopped) = watch::channel(false);
    let accept_shared = Arc::clone(&shared);
    let accept_loop = tokio::spawn(async move {
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        eprintln!("hongbao-host: accept failed: {e}");
                        continue;
                    }
                },
                _ = stopped.changed() => return,
            };
            let _ = stream.set_nodelay(true);
            let shared = Arc::clone(&accept_shared);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let shared = Arc::clone(&shared);
                    async move { Ok::<_, std::convert::Infallible>(handle(shared, req, peer).await) }
                });
                let io = wasmtime_wasi_http::io::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().keep_alive(true).serve_connection(io, service).await;
            });
        }
    });
    Ok(Running { addr, shared, stop, accept_loop })
}

fn plain(status: u16, text: &'static str) -> hyper::Response<Body> {
    let body = Full::new(Bytes::from_static(text.as_bytes())).map_err(|never| match never {}).boxed_unsync();
    hyper::Response::builder().status(status).body(body).expect("valid response")
}

/// Decrements the in-flight count when the request is answered.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handle(shared: Arc<Shared>, req: hyper::Request<Incoming>, client: SocketAddr) -> hyper::Response<Body> {
    shared.in_flight.fetch_add(1, Ordering::SeqCst);
    let _in_flight = InFlight(&shared.in_flight);
    let path = req.uri().path().to_owned();
    // Spin answers these itself, before routing.
    if let Some(what) = path.strip_prefix("/.well-known/spin/") {
        return if what == "health" { plain(200, "OK") } else { plain(404, "") };
    }
    let Some(route) = shared.app.router.route(&path) else {
        return plain(404, "");
    };
    let component = route.component.to_owned();
    let request = with_spin_headers(req, &route, client);
    let Some(request) = buffer_small_body(request).await else {
        return plain(400, "request body broken off\n");
    };
    let handler = shared.app.handlers[&component].clone();
    let request_id = shared.next_request.fetch_add(1, Ordering::Relaxed);
    let started = std::time::Instant::now();
    let permit = match &shared.running {
        Some(running) => Some(Arc::clone(running).acquire_owned().await.expect("the semaphore is never closed")),
        None => None,
    };
    let outcome = run_component(&handler, Arc::clone(&shared.app.kv), request, permit).await;
    if let Some((count, total)) = shared.timings.get(&component) {
        count.fetch_add(1, Ordering::Relaxed);
        total.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
    match outcome {
        Ok(response) => response,
        Err(e) => {
            eprintln!("hongbao-host: request {request_id} to [{component}] {path} failed: {e:?}");
            plain(500, "internal error\n")
        }
    }
}

/// Hands the request to a component instance and waits for its response.
/// The instance (and the running-requests `permit`) is given back as soon
/// as the component has written its body, which is read here into memory;
/// then everything the request read or wrote in the key-value store is made
/// durable (one wait, however many calls it made) before the response
/// leaves. A commit therefore holds neither an instance nor a permit.
async fn run_component(
    handler: &ProxyHandler<ComponentState>,
    kv: Arc<Kv>,
    request: hyper::Request<Body>,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
) -> Result<hyper::Response<Body>> {
    let (tx, rx) = oneshot::channel::<Result<(hyper::Response<Body>, crate::kv::Ticket)>>();
    handler.spawn(
        None,
        Box::new(move |accessor, proxy| {
            Box::pin(async move {
                let Proxy::P3(service) = proxy;
                let answer = async {
                    let (request, request_done) = p3::Request::from_http(request);
                    accessor.with(|mut store| store.data_mut().observed = 0);
                    let response = match service.handle(accessor, request).await? {
                        Ok(response) => response,
                        Err(code) => bail!("the component answered with error code {code:?}"),
                    };
                    let observed = accessor.with(|mut store| store.data_mut().observed);
                    let response = accessor
                        .with(|mut store| response.into_http(&mut store, request_done))
                        .map_err(anyhow::Error::from)?;
                    Ok((response, crate::kv::Ticket(observed)))
                }
                .await;
                match answer {
                    Ok((response, ticket)) => {
                        // The guest writes the body through this task's event
                        // loop, so the task lives until the body is taken.
                        let (done_tx, done_rx) = oneshot::channel::<()>();
                        let response = response.map(|body| NotifyOnDrop { body, _done: done_tx }.boxed_unsync());
                        if tx.send(Ok((response, ticket))).is_ok() {
                            let _ = done_rx.await;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
                // The instance is free for the next request now.
                drop(permit);
            })
        }),
    );
    let (response, ticket) = rx.await.map_err(|_| anyhow!("the component instance died before answering (trap)"))??;
    let (parts, body) = response.into_parts();
    let body = read_response_body(body).await?;
    kv.wait(ticket).await.map_err(|e| anyhow!("store: {e}"))?;
    Ok(hyper::Response::from_parts(parts, body))
}

/// Response bodies up to this size are read into memory before the durability
/// wait; a larger one keeps its instance until hyper has sent the rest.
const BUFFERED_RESPONSE: usize = 1 << 20;

/// Reads a component's response body (every frame, trailers too) until it
/// ends or passes `BUFFERED_RESPONSE`, and answers a body that replays what
/// was read, then streams whatever is left.
async fn read_response_body(mut body: Body) -> Result<Body> {
    let mut frames = std::collections::VecDeque::new();
    let mut size = 0;
    while size <= BUFFERED_RESPONSE {
        match body.frame().await {
            None => return Ok(Replay { frames, rest: None }.boxed_unsync()),
            Some(Err(code)) => bail!("the component's response body broke off: {code:?}"),
            Some(Ok(frame)) => {
                size += frame.data_ref().map_or(0, |data| data.len());
                frames.push_back(frame);
            }
        }
    }
    Ok(Replay { frames, rest: Some(body) }.boxed_unsync())
}

/// Frames read ahead, then the rest of the body (if any).
struct Replay {
    frames: std::collections::VecDeque<http_body::Frame<Bytes>>,
    rest: Option<Body>,
}

impl http_body::Body for Replay {
    type Data = Bytes;
    type Error = ErrorCode;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, ErrorCode>>> {
        if let Some(frame) = self.frames.pop_front() {
            return std::task::Poll::Ready(Some(Ok(frame)));
        }
        match self.rest.as_mut() {
            Some(rest) => std::pin::Pin::new(rest).poll_frame(cx),
            None => std::task::Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && self.rest.as_ref().is_none_or(|rest| rest.is_end_stream())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let read: u64 = self.frames.iter().filter_map(|f| f.data_ref()).map(|d| d.len() as u64).sum();
        match &self.rest {
            None => http_body::SizeHint::with_exact(read),
            Some(rest) => {
                let rest = rest.size_hint();
                let mut hint = http_body::SizeHint::new();
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + read);
                }
                hint.set_lower(rest.lower() + read);
                hint
            }
        }
    }
}

/// A response body that tells the component task when hyper is done with it.
struct NotifyOnDrop {
    body: Body,
    _done: oneshot::Sender<()>,
}

impl http_body::Body for NotifyOnDrop {
    type Data = Bytes;
    type Error = ErrorCode;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, ErrorCode>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Bodies up to this size whose length is declared are read before the
/// component runs.
const BUFFERED_BODY: u64 = 64 << 10;

/// Reads a small request body (an open's ticket, a wrap's terms) while the
/// connection's own task is running, so the component then finds it in
/// memory instead of waiting on hyper's body channel, a hand-off between two
/// tasks on every request that has a body. Larger or unsized bodies stream
/// to the component as they arrive. `None`: the client broke the body off.
async fn buffer_small_body(request: hyper::Request<Incoming>) -> Option<hyper::Request<Body>> {
    let declared: Option<u64> =
        request.headers().get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
    let (parts, body) = request.into_parts();
    let body = match declared {
        _ if http_body::Body::is_end_stream(&body) => {
            Full::new(Bytes::new()).map_err(|never| match never {}).boxed_unsync()
        }
        Some(n) if n <= BUFFERED_BODY => {
            let bytes = body.collect().await.ok()?.to_bytes();
            Full::new(bytes).map_err(|never| match never {}).boxed_unsync()
        }
        _ => body.map_err(ErrorCode::from_hyper_request_error).boxed_unsync(),
    };
    Some(hyper::Request::from_parts(parts, body))
}

/// Adds the headers Spin adds (crates/trigger-http/src/headers.rs) and fills in
/// scheme and authority, which a server-side request URI lacks. Client-sent
/// `spin-*` headers are dropped so a client cannot forge them.
fn with_spin_headers<B>(
    req: hyper::Request<B>,
    route: &crate::router::RouteMatch<'_>,
    client: SocketAddr,
) -> hyper::Request<B> {
    let (mut parts, body) = req.into_parts();
    let host = parts.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost").to_owned();
    let path_and_query = parts.uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "/".into());
    let spin_names: Vec<http::HeaderName> =
        parts.headers.keys().filter(|k| k.as_str().starts_with("spin-")).cloned().collect();
    for name in spin_names {
        parts.headers.remove(name);
    }
    let raw = route.raw_route;
    let mut add = |name: String, value: &str| {
        if let (Ok(name), Ok(value)) = (http::HeaderName::try_from(name), http::HeaderValue::from_str(value)) {
            parts.headers.append(name, value);
        }
    };
    add("spin-path-info".into(), &route.path_info);
    add("spin-full-url".into(), &format!("http://{host}{path_and_query}"));
    add("spin-matched-route".into(), if raw == "/" { "" } else { raw.trim_end_matches('/') });
    add("spin-base-path".into(), "/");
    add("spin-raw-component-route".into(), raw);
    add("spin-component-route".into(), raw.strip_suffix("/...").unwrap_or(raw));
    add("spin-client-addr".into(), &client.to_string());
    for (name, value) in &route.captures {
        add(format!("spin-path-match-{}", name.to_ascii_lowercase().replace('_', "-")), value);
    }
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(http::uri::Scheme::HTTP);
    uri.authority = host.parse().ok();
    uri.path_and_query = path_and_query.parse().ok();
    if let Ok(full) = http::Uri::from_parts(uri) {
        parts.uri = full;
    }
    hyper::Request::from_parts(parts, body)
}
