//! Which SETs take new packets (the seeds' self-healing: stop placing red
//! packets in a failing SET). An operator drains a SET and restores it; wrap
//! then re-rolls a new packet's id until it lands in an open SET. Packets
//! already in a drained SET stay there (their id names it) and are served,
//! swept and credited as ever.
//!
//! The state is an append-only log of changes (`store::lists`), not a
//! record under compare-and-set: appends never collide, so concurrent
//! changes are ordered by their slots and the last change of each SET wins,
//! on every reader alike. No record is ever created from "absent" (which
//! Spin's SQLite store would upsert blindly). The log is also the history the
//! admin endpoint shows.

use super::Service;
use crate::error::Error;
use crate::id::SETS;
use crate::keys;
use crate::store::{Store, lists};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::sync::Mutex;

/// The SETs that take new packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenSets(u16);

impl OpenSets {
    pub const ALL: OpenSets = OpenSets((1 << SETS) - 1);

    pub fn contains(self, set: u32) -> bool {
        set < SETS && self.0 & (1 << set) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// These SETs but `set`.
    pub fn without(self, set: u32) -> OpenSets {
        self.with(set, false)
    }

    fn with(self, set: u32, open: bool) -> OpenSets {
        if open { OpenSets(self.0 | 1 << set) } else { OpenSets(self.0 & !(1 << set)) }
    }

    /// The state the log leaves: every SET open, then each change in order.
    /// A log that drains every SET (only two drains racing past
    /// `change_placement`'s last-open check can write one) places as if
    /// none were drained: new packets must go somewhere, and a 503 is for a
    /// store that failed, never for an operator's race.
    fn after(changes: &[PlacementChange]) -> OpenSets {
        let open = changes.iter().filter(|c| c.set < SETS).fold(OpenSets::ALL, |open, c| open.with(c.set, c.open));
        if open.is_empty() { OpenSets::ALL } else { open }
    }

    fn list(self, open: bool) -> Vec<u32> {
        (0..SETS).filter(|&set| self.contains(set) == open).collect()
    }
}

/// One drain (`open: false`) or restore (`open: true`) of a SET.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PlacementChange {
    pub set: u32,
    pub open: bool,
    pub at: Timestamp,
}

/// `GET /v1/admin/sets`: where new packets go, and every change so far.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct PlacementView {
    pub open_sets: Vec<u32>,
    pub drained_sets: Vec<u32>,
    /// How long an instance may still place packets by what it read before
    /// (the `placement_cache_seconds` variable).
    pub cache_seconds: i64,
    pub log: Vec<PlacementChangeView>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct PlacementChangeView {
    pub set: u32,
    pub state: &'static str,
    pub at: String,
}

/// An instance's copy of the open SETs and when it was read, so wrap reads
/// the log at most once per `placement_cache_seconds` (a component keeps one
/// in a static; each request's `Service` borrows it).
#[derive(Debug, Default)]
pub struct PlacementCache(Mutex<Option<(Timestamp, OpenSets)>>);

impl PlacementCache {
    pub const fn new() -> PlacementCache {
        PlacementCache(Mutex::new(None))
    }

    fn fresh(&self, now: Timestamp, seconds: i64) -> Option<OpenSets> {
        let cached = *self.0.lock().unwrap_or_else(|e| e.into_inner());
        cached.filter(|(read_at, _)| (read_at.0..read_at.0 + seconds).contains(&now.0)).map(|(_, open)| open)
    }

    fn keep(&self, now: Timestamp, open: OpenSets) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((now, open));
    }
}

impl<S: Store> Service<'_, S> {
    /// The SETs new packets may be placed in: the instance's cached copy
    /// while fresh, else read from the log (and cached).
    pub(super) fn open_sets(&self) -> Result<OpenSets, Error> {
        let now = self.env.now;
        if let Some(open) = self.placement_cache.and_then(|c| c.fresh(now, self.config.placement_cache_seconds)) {
            return Ok(open);
        }
        let open = OpenSets::after(&self.placement_log()?);
        if let Some(cache) = self.placement_cache {
            cache.keep(now, open);
        }
        Ok(open)
    }

    /// `GET /v1/admin/sets`.
    pub fn placement(&self) -> Result<PlacementView, Error> {
        let log = self.placement_log()?;
        let open = OpenSets::after(&log);
        Ok(PlacementView {
            open_sets: open.list(true),
            drained_sets: open.list(false),
            cache_seconds: self.config.placement_cache_seconds,
            log: log
                .into_iter()
                .map(|c| PlacementChangeView {
                    set: c.set,
                    state: if c.open { "open" } else { "drained" },
                    at: c.at.to_rfc3339(),
                })
                .collect(),
        })
    }

    /// `POST /v1/admin/sets`: drains (`open: false`) or restores a SET.
    /// Idempotent: a SET already in that state logs nothing. The last open
    /// SET cannot be drained (new packets would have nowhere to go).
    pub fn change_placement(&mut self, set: u32, open: bool) -> Result<PlacementView, Error> {
        if set >= SETS {
            return Err(Error::InvalidArgument(format!("set must be 0..{}", SETS - 1)));
        }
        let now = OpenSets::after(&self.placement_log()?);
        if now.contains(set) != open {
            if now.with(set, open).is_empty() {
                return Err(Error::InvalidArgument("the last open SET cannot be drained".into()));
            }
            let change = PlacementChange { set, open, at: self.env.now };
            lists::append(self.store, &keys::placement_log(), &crate::json::to_vec(&change))?;
        }
        self.placement()
    }

    /// The changes in log order. An item that does not decode is skipped:
    /// only this module writes the log.
    fn placement_log(&self) -> Result<Vec<PlacementChange>, Error> {
        Ok(lists::read(self.store, &keys::placement_log())?
            .into_iter()
            .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(set: u32, open: bool) -> PlacementChange {
        PlacementChange { set, open, at: Timestamp(0) }
    }

    #[test]
    fn the_last_change_of_each_set_wins() {
        assert_eq!(OpenSets::after(&[]), OpenSets::ALL);
        let open = OpenSets::after(&[change(3, false), change(5, false), change(3, true), change(7, false)]);
        assert_eq!((open.list(true), open.list(false)), (vec![0, 1, 2, 3, 4, 6, 8, 9], vec![5, 7]));
        assert!(!open.contains(SETS) && !open.contains(u32::MAX));
        let all_drained: Vec<PlacementChange> = (0..SETS).map(|set| change(set, false)).collect();
        assert_eq!(OpenSets::after(&all_drained), OpenSets::ALL, "a race drained them all: none counts");
    }
}
