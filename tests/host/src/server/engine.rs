//! The wasmtime engine every component of an app is compiled for: the
//! component model with WASI 0.3's async, pooled instance slots as Spin runs,
//! wasmtime's own compilation cache, and an optional perf map for profiling
//! guest code.

use anyhow::Result;
use std::path::Path;
use wasmtime::{Cache, CacheConfig, Config, Engine};

/// Instance slots in the pool: more than the bench's 1,024 clients can hold
/// at once (one instance per request in flight, plus idle reusable ones).
const POOLED_INSTANCES: u32 = 2_048;

/// The engine for one app, and its compilation cache in `cache_dir` (none
/// without one, or where the directory cannot be made: a start then
/// compiles every component, as with `--disable-cache`).
pub(super) fn new(cache_dir: Option<&Path>) -> Result<(Engine, Option<Cache>)> {
    let cache = cache_dir.and_then(|dir| match cache_in(dir) {
        Ok(cache) => Some(cache),
        Err(error) => {
            eprintln!("hongbao-host: no compilation cache in {} ({error:#}); compiling", dir.display());
            None
        }
    });
    let mut config = Config::new();
    config.cache(cache.clone());
    config.wasm_component_model(true).wasm_component_model_async(true);
    // HONGBAO_PERFMAP=1 writes /tmp/perf-<pid>.map so `perf report` can
    // name JIT-compiled guest functions (see BENCHMARKS.md, profiling).
    if std::env::var_os("HONGBAO_PERFMAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    Ok((pooled(&mut config)?, cache))
}

/// Wasmtime's cache with its default limits, in `dir` (made if missing).
fn cache_in(dir: &Path) -> Result<Cache> {
    let mut config = CacheConfig::new();
    // wasmtime wants it absolute.
    config.with_directory(std::path::absolute(dir)?);
    Ok(Cache::new(config)?)
}

/// An engine with pooled instance slots, as Spin runs: a new instance takes a
/// warm slot (its memory mapping, tables and stack kept) instead of mapping
/// and unmapping fresh ones, which showed up as page faults and TLB
/// shootdowns in the bench's profile. Falls back to on-demand allocation
/// where the address space cannot be reserved (e.g. a `ulimit -v`).
fn pooled(config: &mut Config) -> Result<Engine> {
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
