//! # hongbao-host
//!
//! Runs the components named in `spin.toml` the way `spin up` does, on
//! wasmtime 44 (the engine Spin 4.0.2 embeds): Spin's routing and `spin-*`
//! headers, WASI 0.3 HTTP with instance reuse, application variables
//! (overridable with `SPIN_VARIABLE_<NAME>`), and `wasi:keyvalue` draft2 over
//! an in-memory store or a durable SQLite file in Spin's own layout.
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! let app = hongbao_host::App::load(std::path::Path::new("spin.toml"), hongbao_host::StoreChoice::Memory)?;
//! let server = hongbao_host::serve(app, "127.0.0.1:3000".parse()?).await?;
//! println!("listening on {}", server.addr());
//! # Ok(()) }
//! ```

pub mod build;
pub mod client;
pub mod clock;
pub mod external;
pub mod kv;
pub mod manifest;
pub mod metrics;
pub mod router;
pub mod runtime_config;
pub mod server;

pub use server::{
    App, CompileCache, Compiled, ComponentSize, ComponentTiming, DEFAULT_MAX_RUNNING_REQUESTS, Running, ServeOptions,
    StoreChoice, instances_created, serve,
};
