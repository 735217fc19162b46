//! Every operation of the contract, implemented once over the `Store`
//! abstraction. The write sequence of each, and why every crash point between
//! two store calls is safe, is written in `shared/README.md` and next to each
//! function. Functions (the Wasm components) only decode, call these, and
//! encode.

mod cursor;
mod demo;
mod packet;
mod placement;
mod purge;
mod sweep;
mod user;

pub use packet::{GrabView, OpenView};
pub use placement::{PlacementCache, PlacementChange, PlacementView};
pub use purge::PurgeReport;
pub use sweep::{ExpireReport, Mismatch, ReconcileReport, SettleReport, SweepError};
pub use user::{ReceivedView, SentView, WalletView};

use crate::config::Config;
use crate::env::Env;
use crate::error::Error;
use crate::id::PacketId;
use crate::keys;
use crate::record::{Claim, Packet};
use crate::store::{Store, lists};

/// The operations, bound to one store, one configuration and one request's
/// environment.
pub struct Service<'a, S: Store> {
    pub store: &'a S,
    pub config: &'a Config,
    pub env: Env,
    /// The instance's copy of the open SETs; without one, wrap reads the
    /// placement log every time.
    pub placement_cache: Option<&'a PlacementCache>,
}

impl<'a, S: Store> Service<'a, S> {
    pub fn new(store: &'a S, config: &'a Config, env: Env) -> Self {
        Service { store, config, env, placement_cache: None }
    }

    /// The same service placing new packets by `cache` while it is fresh.
    pub fn with_placement_cache(self, cache: &'a PlacementCache) -> Self {
        Service { placement_cache: Some(cache), ..self }
    }

    /// Reads a packet record; `not_found` if there is none.
    fn load(&self, id: &PacketId) -> Result<Packet, Error> {
        match self.store.get(&keys::packet(id))? {
            Some(bytes) => Packet::decode(&bytes).map_err(Error::Internal),
            None => Err(Error::NotFound),
        }
    }

    /// Appends the packet to its sender's sent list (idempotent: a replay or a
    /// repair by settle does not add it twice).
    fn record_sent(&self, p: &Packet) -> Result<(), Error> {
        let id = PacketId::parse(&p.id).ok_or_else(|| Error::Internal(format!("bad id in record {}", p.id)))?;
        lists::append_once(self.store, &keys::sent(&p.sender, id.day()), &p.id, p.id.as_bytes())?;
        Ok(())
    }
}

/// A share taken by an open: the claim, the shares left, the sender, and
/// whether this very request made the claim (a replay did not).
struct Taken {
    claim: Claim,
    remaining_count: u32,
    sender: String,
    fresh: bool,
}

/// The packet record in a CAS round, or `not_found`.
fn decode_existing(current: Option<&[u8]>) -> Result<Packet, Error> {
    Packet::decode(current.ok_or(Error::NotFound)?).map_err(Error::Internal)
}
