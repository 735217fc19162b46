//! Loading an app: the manifest and its variables, the key-value store, one
//! engine, and each component compiled (or loaded from wasmtime's cache) and
//! pre-instantiated against the host's linker, ready for `serve`.

use super::instance::{self, ComponentState, HostState};
use super::{ServeOptions, StoreChoice, engine};
use crate::kv::redis::RedisKv;
use crate::kv::sqlite::{Journal, SPIN_DB_FILE};
use crate::kv::stores::Stores;
use crate::kv::wasi::KvCtx;
use crate::kv::{Faults, Kv, StatsSnapshot};
use crate::manifest::{HttpTrigger, Manifest};
use crate::metrics::Metrics;
use crate::router::Router;
use crate::runtime_config::KvStoreConfig;
use anyhow::{Context, Result, anyhow, bail};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::Component;
use wasmtime::{Cache, Engine};
use wasmtime_wasi_http::handler::{HandlerState, ProxyHandler, ProxyPre};
use wasmtime_wasi_http::p3;

/// A loaded application, ready to serve.
pub struct App {
    manifest: Manifest,
    variables: HashMap<String, String>,
    pub(super) stores: Arc<Stores>,
    pub(super) metrics: Arc<Metrics>,
    store_location: String,
    pub(super) router: Router,
    pub(super) handlers: HashMap<String, ProxyHandler<ComponentState>>,
    component_sizes: Vec<ComponentSize>,
    compile_report: Vec<Compiled>,
    pub(super) options: ServeOptions,
    linker_pres: HashMap<String, p3::bindings::ServicePre<HostState>>,
}

/// The size of one component's Wasm file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentSize {
    pub component: String,
    pub bytes: u64,
}

/// How one component came to be ready to instantiate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compiled {
    pub component: String,
    /// Reading the Wasm and compiling it, or loading it from the cache.
    pub took: Duration,
    /// Loaded from wasmtime's compilation cache, not compiled.
    pub cached: bool,
}

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
        let metrics = Arc::new(Metrics::new());
        let (stores, store_location) = open_stores(&store, &options, &metrics)?;
        let stores = Arc::new(stores);

        let (engine, cache) = engine::new(options.compile_cache.dir(&manifest).as_deref())?;
        let linker = instance::linker(&engine)?;
        let mut handlers = HashMap::new();
        let mut linker_pres = HashMap::new();
        let mut component_sizes = Vec::new();
        let mut compile_report = Vec::new();
        for (id, decl) in &manifest.components {
            for label in &decl.key_value_stores {
                if stores.get(label).is_none() {
                    let provided: Vec<&str> = stores.labels().collect();
                    bail!(
                        "unknown key_value_stores label {label:?} for component {id:?} (provided: {}; others need a runtime config)",
                        provided.join(", ")
                    );
                }
            }
            let wasm = manifest.dir.join(&decl.source);
            let started = std::time::Instant::now();
            let (component, cached) =
                compile(&engine, cache.as_ref(), &wasm).with_context(|| format!("component {id}"))?;
            compile_report.push(Compiled { component: id.clone(), took: started.elapsed(), cached });
            component_sizes.push(ComponentSize { component: id.clone(), bytes: std::fs::metadata(&wasm)?.len() });
            let instance_pre = linker
                .instantiate_pre(&component)
                .map_err(anyhow::Error::from)
                .with_context(|| format!("component {id} imports something this host (and Spin) does not provide"))?;
            let service = p3::bindings::ServicePre::new(instance_pre)
                .map_err(anyhow::Error::from)
                .with_context(|| format!("component {id} does not export wasi:http/handler@0.3.0-rc-2026-03-15"))?;
            let pre = ProxyPre::P3(service.clone());
            let (store_calls, cas_retries) = metrics.store_counters(id);
            let kv_ctx = Arc::new(KvCtx {
                stores: Arc::clone(&stores),
                store_calls,
                cas_retries,
                labels: decl.key_value_stores.clone().into(),
                variables: manifest.component_variables(id, &variables)?.into(),
            });
            let state = ComponentState {
                name: id.clone(),
                engine: engine.clone(),
                kv: kv_ctx,
                options: options.clone(),
                instances: metrics.instances_counter(id),
            };
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
            stores,
            metrics,
            store_location,
            router,
            handlers,
            component_sizes,
            compile_report,
            options,
            linker_pres,
        })
    }

    /// The application's name in the manifest.
    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    /// An application variable's value, as resolved at load.
    pub fn variable(&self, name: &str) -> Option<&str> {
        self.variables.get(name).map(String::as_str)
    }

    /// The HTTP routes, in manifest order.
    pub fn triggers(&self) -> &[HttpTrigger] {
        &self.manifest.triggers
    }

    /// Where the key-value data lives, in words (for the log).
    pub fn store_location(&self) -> &str {
        &self.store_location
    }

    /// The store's call counters since start.
    pub fn store_stats(&self) -> StatsSnapshot {
        self.stores.stats()
    }

    /// This app's metrics (served by `metrics::serve`).
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// Makes the store fail as `faults` says, for testing.
    pub fn inject_faults(&self, faults: Faults) -> Result<()> {
        self.stores.inject(faults).map_err(|e| anyhow!(e.0))
    }

    /// Each component's Wasm size, by component id.
    pub fn component_sizes(&self) -> &[ComponentSize] {
        &self.component_sizes
    }

    /// How each component was made ready, by component id.
    pub fn compile_report(&self) -> &[Compiled] {
        &self.compile_report
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

/// The app's stores: `default` and every label of the runtime config, the
/// `spin` ones (and `default`, unless the config says otherwise) on the
/// host's own store, in memory or in one SQLite file; and where they are,
/// in words.
fn open_stores(choice: &StoreChoice, options: &ServeOptions, metrics: &Metrics) -> Result<(Stores, String)> {
    let config = &options.runtime_config;
    let mut labels: BTreeMap<String, Option<RedisKv>> = BTreeMap::from([("default".to_string(), None)]);
    for (label, store) in &config.key_value_stores {
        let redis = match store {
            KvStoreConfig::Spin { .. } => None,
            KvStoreConfig::Redis { url } => Some(
                RedisKv::connect(url).map_err(|e| anyhow!(e.0))?.count_errors_in(metrics.redis_error_counter(label)),
            ),
        };
        labels.insert(label.clone(), redis);
    }
    let any_local = labels.values().any(Option::is_none);
    let (local, local_location) = match choice {
        StoreChoice::Memory => (Kv::in_memory(), "in memory (--memory): gone on exit".to_string()),
        StoreChoice::Durable(_) if !any_local => (Kv::in_memory(), String::new()),
        StoreChoice::Durable(dir) => {
            let path = match config.local_path()? {
                Some(path) => path.to_path_buf(),
                None => dir.join(SPIN_DB_FILE),
            };
            let journal = Journal::open(&path).map_err(|e| anyhow!(e.0))?;
            let kv = Kv::durable(journal, options.kv_cache_bytes).map_err(|e| anyhow!(e.0))?;
            (kv, format!("{} (SQLite, Spin's layout, durable before each response)", path.display()))
        }
    };
    let stores = Stores::new(local, labels);
    let location = if stores.uses_redis() {
        let mut parts = stores.describe();
        if any_local {
            parts.push(format!("the host's store: {local_location}"));
        }
        parts.join("; ")
    } else {
        local_location
    };
    Ok((stores, location))
}

/// Compiles a component; wasmtime's cache, when on, loads an unchanged one
/// from disk instead. `true`: it did (its hit counter moved, and components
/// are compiled one at a time). A cached load decompresses and copies the
/// code, where the hand-made cache this replaced mapped its file: ~33 ms for
/// all the components instead of ~6 ms, against seconds to compile them.
fn compile(engine: &Engine, cache: Option<&Cache>, wasm: &Path) -> Result<(Component, bool)> {
    let bytes =
        std::fs::read(wasm).with_context(|| format!("reading {} (build the components first)", wasm.display()))?;
    let hits = cache.map_or(0, Cache::cache_hits);
    let component = Component::new(engine, &bytes)?;
    Ok((component, cache.is_some_and(|cache| cache.cache_hits() > hits)))
}
