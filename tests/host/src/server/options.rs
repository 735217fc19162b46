//! What a caller chooses before loading an app: where its key-value data
//! lives, where compiled components are cached, and how instances are reused
//! and requests bounded while serving.

use crate::manifest::Manifest;
use std::path::PathBuf;
use std::time::Duration;

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

/// Where wasmtime's compilation cache keeps compiled components between
/// starts (wasmtime checks the Wasm and the engine's settings on every load).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CompileCache {
    /// `wasmtime-cache/` beside the Wasm of the first component by id,
    /// normally inside `target/`: no home directory needed, gone with
    /// `cargo clean`.
    #[default]
    NextToWasm,
    /// This directory (`--compile-cache`).
    Dir(PathBuf),
    /// Compile every component at every start (`--disable-cache`).
    Off,
}

impl CompileCache {
    /// The cache directory for `manifest`'s components, if any.
    pub(super) fn dir(&self, manifest: &Manifest) -> Option<PathBuf> {
        match self {
            CompileCache::NextToWasm => {
                let wasm = manifest.dir.join(&manifest.components.values().next()?.source);
                Some(wasm.parent()?.join("wasmtime-cache"))
            }
            CompileCache::Dir(dir) => Some(dir.clone()),
            CompileCache::Off => None,
        }
    }
}

/// Instance reuse, as `spin up`'s flags of the same names, the bound on
/// requests running at once, and the compilation cache.
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
    pub compile_cache: CompileCache,
    /// Spin's runtime config: which labels live where (`--runtime-config-file`);
    /// empty: only `default`, on the host's own store.
    pub runtime_config: crate::runtime_config::RuntimeConfig,
    /// What the durable store keeps in RAM of entries already on disk
    /// (`--kv-cache-mib`); misses read SQLite.
    pub kv_cache_bytes: usize,
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
            compile_cache: CompileCache::default(),
            runtime_config: Default::default(),
            kv_cache_bytes: crate::kv::DEFAULT_CACHE_BYTES,
        }
    }
}
