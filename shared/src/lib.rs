//! # hongbao: the red packet (红包) domain
//!
//! Everything the functions share: money (`money`), the allocation algorithms
//! (`alloc`), ids and key naming (`id`, `keys`), records and views (`record`),
//! the pure state machine (`state`), the store abstraction with its CAS loop
//! and test stores (`store`), authentication (`auth`), request decoding
//! (`api`), configuration (`config`) and every operation of the contract
//! (`ops`), JSON encoding that suits Wasm (`json`), plus the HTTP-shaped
//! entry points the components call (`http`).
//!
//! It must never depend on spin-sdk or wasmtime: it is compiled natively for
//! tests and into every Wasm component unchanged.
//!
//! ## Layers
//!
//! Imports point one way: a module uses only modules of the lines above its
//! own (`tests/layers.rs` reads this list and checks every `crate::` path of
//! the source against it, and that `ops`' submodules do not import each other).
//!
//! 1. `money`, `time`, `json`
//! 2. `alloc`
//! 3. `id`
//! 4. `record`
//! 5. `error`, `keys`
//! 6. `env`
//! 7. `store`
//! 8. `state`, `auth`, `config`
//! 9. `api`
//! 10. `ops`
//! 11. `http`
//!
//! The test-only stores (`store::memory`, `store::faulty`) and
//! `Config::for_tests` exist only with the `testing` feature, which this
//! crate's own tests and the simulator turn on.

pub mod alloc;
pub mod api;
pub mod auth;
pub mod config;
pub mod env;
pub mod error;
pub mod http;
pub mod id;
pub mod json;
pub mod keys;
pub mod money;
pub mod ops;
pub mod record;
pub mod state;
pub mod store;
pub mod time;

pub use config::Config;
pub use env::Env;
pub use error::Error;
pub use id::PacketId;
pub use money::Fen;
pub use ops::Service;
pub use store::Store;
pub use time::{Day, Timestamp};
