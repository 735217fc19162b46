//! Opens of cursor-strategy packets: pre-allocated shares, an `increment`
//! cursor, and a compare-and-set on each share's own record, so no two opens
//! of a packet ever contend on one key. The packet record itself is written
//! only by pay, settle (collecting claims) and expiry.
//!
//! Open's store calls, and what a crash after each leaves:
//! 1. `get` the packet (status, expiry), unless the grab ticket carries its
//!    facts (`auth::PacketFacts`: count, expiry, sender, fixed once paid).
//! 2. `increment` the user's open marker: 1 means first attempt; more means
//!    a replay (see `replay`). An attempt that ends without mapping a share
//!    (a store error in steps 3-4, or a replay that found nothing to finish)
//!    gives its count back (`increment` -1), so a retry can be a first
//!    attempt again. Crash (the process dies, keeping its count): the user's
//!    later opens answer 429 busy until expiry (an attempt may be in flight;
//!    taking a second share could break "one claim per user"), no money moved.
//! 3. `increment` the cursor: share number k (> count: exhausted). Crash:
//!    as after 2, and share k stays free; expiry seals and refunds it.
//! 4. `set` the user's share number k, before claiming it (`0` records that
//!    the user's first open found the packet exhausted). From here on a
//!    replay knows which share is the user's and finishes the claim itself,
//!    so a crash strands nothing.
//! 5. CAS share k free → claimed by the user. The only contender is expiry
//!    sealing it (then: 410 expired). Crash: the claim stands; a replay
//!    reads it through the mapping and answers it.
//! 6. the received record (as for every open).

use super::{Service, Taken, decode_existing};
use crate::error::Error;
use crate::id::PacketId;
use crate::keys;
use crate::record::{Claim, Packet, PacketFacts, Share, ShareState, Status, Strategy};
use crate::state::{self, ShareClaimed};
use crate::store::{Step, Store, get_all, update};

impl<S: Store> Service<'_, S> {
    /// Every share record of a cursor-strategy packet, in order.
    pub(super) fn shares(&self, id: &PacketId, count: u32) -> Result<Vec<Share>, Error> {
        let keys: Vec<String> = (1..=count).map(|k| keys::share(id, k)).collect();
        get_all(self.store, &keys)?
            .into_iter()
            .map(|bytes| {
                let bytes = bytes.ok_or_else(|| Error::Internal(format!("packet {id} is missing a share")))?;
                Share::decode(&bytes).map_err(Error::Internal)
            })
            .collect()
    }

    /// The packet as it stands: for a cursor-strategy packet not yet
    /// finalized, the claims in its share records merged in (read-only).
    pub(super) fn current(&self, id: &PacketId, packet: Packet) -> Result<Packet, Error> {
        if packet.strategy != Strategy::Cursor || !packet.status.is_paid() || packet.status.is_final() {
            return Ok(packet);
        }
        let shares = self.shares(id, packet.count)?;
        Ok(state::collect(&packet, &shares, "view").unwrap_or(packet))
    }

    /// What the user's share mapping says (`None` if unwritten).
    fn mapped(&self, id: &PacketId, user: &str) -> Result<Option<Mapped>, Error> {
        let Some(k) = self.store.get(&keys::share_of(id, user))? else { return Ok(None) };
        let k: u32 = std::str::from_utf8(&k)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::Internal("bad share mapping".into()))?;
        if k == 0 {
            return Ok(Some(Mapped::Exhausted));
        }
        let bytes =
            self.store.get(&keys::share(id, k))?.ok_or_else(|| Error::Internal("mapped share missing".into()))?;
        let share = Share::decode(&bytes).map_err(Error::Internal)?;
        Ok(Some(match share.claim() {
            Some(claim) if claim.user == user => Mapped::Claimed(claim),
            Some(_) => return Err(Error::Internal(format!("share {k} is mapped to {user} but claimed by another"))),
            None => Mapped::Unclaimed(k),
        }))
    }

    /// Claims share `k` (handed to `user` by the cursor) for `user`.
    /// Returns the claim and whether this call made it.
    fn claim_share(&mut self, id: &PacketId, k: u32, user: &str) -> Result<(Claim, bool), Error> {
        let now = self.env.now;
        update(self.store, &mut self.env, &keys::share(id, k), |current, _| {
            let share = Share::decode(current.ok_or_else(|| Error::Internal(format!("share {k} missing")))?)
                .map_err(Error::Internal)?;
            Ok(match state::claim_share(&share, user, now)? {
                ShareClaimed::New { share, claim } => Step::Write(share.encode(), (claim, true)),
                ShareClaimed::Already(claim) => Step::Done((claim, false)),
            })
        })
    }

    /// Shares not yet handed out.
    fn untaken(&self, id: &PacketId, count: u32) -> Result<u32, Error> {
        let taken = self.store.increment(&keys::cursor(id), 0)?.clamp(0, i64::from(count));
        Ok(count - taken as u32)
    }

    pub(super) fn cursor_grab(
        &mut self,
        id: &PacketId,
        packet: &PacketFacts,
        status: Status,
        user: &str,
    ) -> Result<u32, Error> {
        match self.mapped(id, user)? {
            Some(Mapped::Claimed(claim)) => return Err(Error::AlreadyClaimed(claim)),
            Some(Mapped::Exhausted) => return Err(Error::Exhausted),
            // The user holds share k but its claim is not written yet: a
            // ticket lets their open finish it.
            Some(Mapped::Unclaimed(_)) | None => {}
        }
        state::check_live(status, Some(packet.expires_at), self.env.now)?;
        match self.untaken(id, packet.count)? {
            // Every share is handed out, but one may be this user's, still
            // being claimed by another of their requests: let open tell.
            0 if self.store.increment(&keys::open_marker(id, user), 0)? > 0 => Ok(0),
            0 => Err(Error::Exhausted),
            remaining => Ok(remaining),
        }
    }

    pub(super) fn cursor_open(
        &mut self,
        id: &PacketId,
        packet: &PacketFacts,
        status: Status,
        user: &str,
    ) -> Result<Taken, Error> {
        let marker = keys::open_marker(id, user);
        if self.store.increment(&marker, 1)? > 1 {
            return self.replay(id, packet, status, user);
        }
        let k = match self.take_share(id, packet, status, user) {
            Ok(k) => k,
            Err(e) => {
                // This attempt ends having mapped nothing it could claim (a
                // share the cursor may have given it stays free and is
                // refunded at expiry): give its count back, so the user's
                // retry is a first attempt again rather than busy until
                // expiry. Only a process that dies here keeps its count.
                let _ = self.store.increment(&marker, -1);
                return Err(e);
            }
        };
        let (claim, fresh) = self.claim_share(id, k, user)?;
        Ok(Taken { claim, remaining_count: packet.count - k, sender: packet.sender.clone(), fresh })
    }

    /// A first attempt's share number, mapped to the user before anything
    /// claims it; `exhausted` (remembered for the user) when none is left.
    fn take_share(&mut self, id: &PacketId, packet: &PacketFacts, status: Status, user: &str) -> Result<u32, Error> {
        state::check_live(status, Some(packet.expires_at), self.env.now)?;
        let k = self.store.increment(&keys::cursor(id), 1)?;
        if k > i64::from(packet.count) {
            // Remembered, so this user's retries answer the same.
            self.store.set(&keys::share_of(id, user), b"0")?;
            return Err(Error::Exhausted);
        }
        let k = k as u32;
        // The mapping first: from here on a replay can finish this claim.
        self.store.set(&keys::share_of(id, user), k.to_string().as_bytes())?;
        Ok(k)
    }

    /// A second open by the same user: answer the claim if there is one.
    fn replay(&mut self, id: &PacketId, packet: &PacketFacts, status: Status, user: &str) -> Result<Taken, Error> {
        let taken =
            |claim, remaining_count| Taken { claim, remaining_count, sender: packet.sender.clone(), fresh: false };
        match self.mapped(id, user)? {
            Some(Mapped::Claimed(claim)) => return Ok(taken(claim, self.untaken(id, packet.count)?)),
            Some(Mapped::Exhausted) => return Err(Error::Exhausted),
            Some(Mapped::Unclaimed(k)) => {
                // The first attempt took share k and stopped before its claim
                // (or is still claiming it: the CAS lets one of us write).
                state::check_live(status, Some(packet.expires_at), self.env.now)?;
                let (claim, fresh) = self.claim_share(id, k, user)?;
                return Ok(Taken { fresh, ..taken(claim, self.untaken(id, packet.count)?) });
            }
            None => {}
        }
        // Records written before mappings preceded claims may hold a claim
        // without a mapping: look for it.
        let shares = self.shares(id, packet.count)?;
        if let Some(claim) = shares.iter().filter_map(Share::claim).find(|c| c.user == user) {
            self.store.set(&keys::share_of(id, user), claim.seq.to_string().as_bytes())?;
            return Ok(taken(claim, self.untaken(id, packet.count)?));
        }
        state::check_live(status, Some(packet.expires_at), self.env.now)?;
        if shares.iter().all(|s| s.state != ShareState::Free) {
            // A sealed share was never claimed: the packet expired. (The
            // ticket's facts cannot say so when the clock here lags the sweep's.)
            let sealed = shares.iter().any(|s| s.state == ShareState::Sealed);
            return Err(if sealed { Error::Expired } else { Error::Exhausted });
        }
        // The first attempt is between its marker and its mapping (or died
        // there) and may hold a share: taking another could give this user
        // two. This attempt claimed nothing: it gives its count back.
        let _ = self.store.increment(&keys::open_marker(id, user), -1);
        Err(Error::Busy { retry_after_seconds: 1 })
    }

    /// Seals the free shares of an expired cursor packet and moves its
    /// claims into the record; the record's CAS decides the refund, once.
    pub(super) fn finalize_cursor(&mut self, id: &PacketId, packet: &Packet, op: &str) -> Result<(), Error> {
        for share in self.shares(id, packet.count)? {
            if share.state == ShareState::Free {
                update(self.store, &mut self.env, &keys::share(id, share.k), |current, _| {
                    let now = Share::decode(current.ok_or_else(|| Error::Internal("share missing".into()))?)
                        .map_err(Error::Internal)?;
                    Ok(match state::seal_share(&now, op) {
                        Some(sealed) => Step::Write(sealed.encode(), ()),
                        None => Step::Done(()),
                    })
                })?;
            }
        }
        Ok(())
    }

    /// Writes the claims of a cursor packet's shares into its record (settle
    /// does this before crediting). Returns the record as it now is.
    pub(super) fn collect_claims(&mut self, id: &PacketId, count: u32, op: &str) -> Result<Packet, Error> {
        let shares = self.shares(id, count)?;
        update(self.store, &mut self.env, &keys::packet(id), |current, _| {
            let p = decode_existing(current)?;
            Ok(match state::collect(&p, &shares, op) {
                Some(next) => Step::Write(next.encode(), next),
                None => Step::Done(p),
            })
        })
    }
}

/// A user's share mapping in a cursor-strategy packet.
enum Mapped {
    /// Their first open found the packet exhausted.
    Exhausted,
    /// Share k is theirs and claimed.
    Claimed(Claim),
    /// Share k was handed to them; the claim is not written (yet).
    Unclaimed(u32),
}
