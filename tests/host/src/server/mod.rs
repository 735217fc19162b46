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
//!
//! One job per module: `options` what a caller chooses, `engine` wasmtime's
//! configuration and compilation cache, `instance` what one instance's store
//! holds, `app` loading and compiling, `serve` the accept loop and the
//! request path above, `permits` the running-request bound, `body` the body
//! plumbing, `spin_headers` the `spin-*` headers.

mod app;
mod body;
mod engine;
mod instance;
mod options;
mod permits;
mod serve;
mod spin_headers;

pub use app::{App, Compiled, ComponentSize};
pub use body::Body;
pub use instance::instances_created;
pub use options::{CompileCache, DEFAULT_MAX_RUNNING_REQUESTS, ServeOptions, StoreChoice};
pub use serve::{ComponentTiming, Running, serve};
