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
