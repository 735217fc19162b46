//! wrap (包), pay (发), grab (抢), open (拆) and query (查).

use super::{Service, Taken, decode_existing};
use crate::api::{PaymentRequest, WrapRequest};
use crate::auth;
use crate::config::{HOT_DAYS, OpenStrategy};
use crate::error::Error;
use crate::id::{PacketId, SETS};
use crate::keys::{self, List};
use crate::record::{ClaimView, Packet, PacketView, ReceivedItem, Status, Strategy, WrapRecord, WrapTerms};
use crate::state::{self, Opened, Paid};
use crate::store::{Step, Store, lists, update};
use serde::Serialize;
use sha2::Digest;

/// Grab and open requests one user may make on one packet per window: far
/// above what a person taps, far below what takes a group's admission.
const USER_ADMISSION_LIMIT: i64 = 20;
const USER_WINDOW_SECONDS: i64 = 10;

#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct GrabView {
    pub ticket: String,
    pub ticket_expires_at: String,
    pub remaining_count: u32,
}

#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct OpenView {
    pub claim: ClaimView,
    pub remaining_count: u32,
}

/// SETs one wrap tries before it answers 503: each open SET at most once,
/// so while any SET's store works, a wrap succeeds (a dead SET costs it one
/// failed call, until the operator drains it).
const MAX_PLACEMENTS: u32 = SETS;

impl<S: Store> Service<'_, S> {
    /// Wrap (包): a new packet awaiting payment, idempotent per (sender,
    /// request_id). Returns 201 for a new packet, 200 for a replay.
    ///
    /// Store calls, and what a crash after each leaves:
    /// 1. `get` the idempotency record: if present, this is a replay.
    /// 2. `increment` the sender's unpaid count of today; past
    ///    `max_unpaid_per_user` it is given back and the wrap refused (409).
    ///    Crash: one slot of today's count is lost (it frees at midnight).
    /// 3. `set` the packet record under a fresh random id (uncontended) in an
    ///    open SET (the placement log, read at most once per
    ///    `placement_cache_seconds` per instance, and before step 2), and
    ///    for a cursor-strategy packet `set-many` its free shares.
    ///    Crash: an orphan record nobody knows the id of; no money.
    /// 4. append the id to the day index (`increment` + `set`), for
    ///    reconcile. Crash: an indexed orphan, awaiting payment forever;
    ///    the sweeps never see it (they walk the paid index).
    ///    A store failure in 3 or 4 (the SET's store is down) leaves such an
    ///    orphan too, and the packet is placed again under an id in another
    ///    open SET, each open SET at most once; after that the unpaid slot is
    ///    given back and the wrap answers 503.
    /// 5. `increment` the election counter: 1 wins; a loser deletes what it
    ///    wrote and answers the winner's packet, or 429 while the winner has
    ///    not written its record yet. Crash after winning: the request id is
    ///    spent (replays get 429), no packet was handed out, no money.
    /// 6. `set` the idempotency record. Crash: a replay answers 200 with it.
    pub fn wrap(&mut self, sender: &str, req: &WrapRequest) -> Result<(u16, PacketView), Error> {
        let now = self.env.now;
        let record_key = keys::wrap_request(sender, &req.request_id);
        if let Some(bytes) = self.store.get(&record_key)? {
            return self.wrap_replay(&bytes, req).map(|view| (200, view));
        }
        // Only into a SET that takes new packets (see `placement`).
        let mut open = self.open_sets()?;
        let unpaid = keys::unpaid(sender, now.day());
        let limit = self.config.max_unpaid_per_user;
        if self.store.increment(&unpaid, 1)? > i64::from(limit) {
            self.store.increment(&unpaid, -1)?;
            return Err(Error::TooManyUnpaid(limit));
        }
        let mut attempts = 0;
        let (id, packet, shares, index, slot) = loop {
            attempts += 1;
            let Some(id) = PacketId::generate_where(now.day(), self.env.entropy.as_mut(), |set| open.contains(set))
            else {
                let _ = self.store.increment(&unpaid, -1);
                return Err(Error::Unavailable("no SET takes new packets".into()));
            };
            match self.place(&id, sender, &req.terms) {
                Ok((packet, shares, index, slot)) => break (id, packet, shares, index, slot),
                // The SET's store failed (what it wrote, if anything, is an
                // orphan nobody knows the id of): another SET, so a dead SET
                // costs a wrap a retry, not a failure.
                Err(Error::Unavailable(why)) => {
                    open = open.without(id.set());
                    if attempts == MAX_PLACEMENTS {
                        let _ = self.store.increment(&unpaid, -1);
                        return Err(Error::Unavailable(why));
                    }
                }
                Err(e) => return Err(e),
            }
        };
        if self.store.increment(&keys::wrap_election(sender, &req.request_id), 1)? == 1 {
            let record = WrapRecord { packet_id: id.to_string(), terms: req.terms.clone() };
            self.store.set(&record_key, &crate::json::to_vec(&record))?;
            return Ok((201, packet.view(now)));
        }
        // Another request with this request_id won: ours is an orphan that
        // nobody knows of. Drop it (best effort: a left-over is an unpaid,
        // unknown packet; an index slot left empty is skipped by readers) and
        // give its unpaid slot back.
        for key in shares.iter().chain([&keys::packet(&id), &index.slot(slot)]) {
            let _ = self.store.delete(key);
        }
        self.store.increment(&unpaid, -1)?;
        match self.store.get(&record_key)? {
            Some(bytes) => self.wrap_replay(&bytes, req).map(|view| (200, view)),
            // The winner is between its election and its record (or died
            // there). Waiting here would stall the component instance's other
            // requests: the client retries instead.
            None => Err(Error::Busy { retry_after_seconds: 1 }),
        }
    }

    /// Writes a new packet under `id` (steps 3 and 4 of `wrap`): its record,
    /// a cursor packet's free shares, and its slot in the SET's day index.
    /// Returns the packet, its share keys, the index and the slot.
    fn place(
        &mut self,
        id: &PacketId,
        sender: &str,
        terms: &WrapTerms,
    ) -> Result<(Packet, Vec<String>, List, i64), Error> {
        let now = self.env.now;
        let seed = self.env.random();
        let packet = state::wrap(id, sender, terms, now, seed, self.config.open_strategy.for_count(terms.count));
        self.store.set(&keys::packet(id), &packet.encode())?;
        let shares: Vec<String> = match packet.strategy {
            // Before anyone can know the id: uncontended, plain writes.
            Strategy::Cursor => {
                let shares = state::preallocated_shares(&packet);
                let entries: Vec<(String, Vec<u8>)> =
                    shares.iter().map(|s| (keys::share(id, s.k), s.encode())).collect();
                self.store.set_many(&entries)?;
                entries.into_iter().map(|(key, _)| key).collect()
            }
            Strategy::Cas => Vec::new(),
        };
        let index = keys::day_index(id.set(), id.day());
        let slot = lists::append(self.store, &index, id.as_str().as_bytes())?;
        Ok((packet, shares, index, slot))
    }

    fn wrap_replay(&self, record: &[u8], req: &WrapRequest) -> Result<PacketView, Error> {
        let record: WrapRecord =
            serde_json::from_slice(record).map_err(|e| Error::Internal(format!("corrupt wrap record: {e}")))?;
        if record.terms != req.terms {
            return Err(Error::IdempotencyConflict("request_id was already used with a different body".into()));
        }
        let id = PacketId::parse(&record.packet_id).ok_or_else(|| Error::Internal("bad id in wrap record".into()))?;
        Ok(self.load(&id)?.view(self.env.now))
    }

    /// Pay (发): the payment system's signed callback activates the packet.
    ///
    /// Store calls, and what a crash after each leaves:
    /// 1. `get` the packet: refusals (amount, already paid, too late) answer
    ///    here, and a replay of the payment that paid it skips to step 5.
    /// 2. the payment_id's binding (`increment` its counter by 0, then by
    ///    this packet's code if nobody claimed it): a payment_id pays one
    ///    packet only (see `bind_payment`). Crash: the binding stands, and the
    ///    payment system's retry finds it.
    /// 3. append the id to the paid index the sweeps walk (marker `get`,
    ///    `increment`, `set` slot, `set` marker), before the packet turns
    ///    active, so whatever happens next a sweep finds it. Crash: an
    ///    indexed unpaid packet, skipped by sweeps once it can no longer be paid.
    /// 4. the CAS loop on the packet record (`cas`, `current`, `swap`).
    /// 5. take it off the sender's unpaid count (an election `increment`,
    ///    then `increment` -1), and write the sender's sent record.
    ///
    /// The payment system retries an unanswered callback; a replay redoes
    /// steps 3 and 5 idempotently.
    pub fn pay(&mut self, id: &PacketId, req: &PaymentRequest) -> Result<PacketView, Error> {
        if req.packet_id != id.as_str() {
            return Err(Error::InvalidArgument("packet_id: must be the id of the packet in the path".into()));
        }
        let now = self.env.now;
        let ttl = self.config.packet_ttl_seconds;
        if let Paid::Changed(_) = state::pay(&self.load(id)?, &req.payment_id, req.amount_fen, now, ttl)? {
            self.bind_payment(id, &req.payment_id)?;
        }
        let paid = keys::paid_index(id.set(), id.day());
        lists::append_once(self.store, &paid, id.as_str(), id.as_str().as_bytes())?;
        let packet = update(self.store, &mut self.env, &keys::packet(id), |current, _| {
            let p = decode_existing(current)?;
            Ok(match state::pay(&p, &req.payment_id, req.amount_fen, now, ttl)? {
                Paid::Changed(next) => Step::Write(next.encode(), next),
                Paid::AlreadyApplied => Step::Done(p),
            })
        })?;
        if self.store.increment(&keys::unpaid_release(id), 1)? == 1 {
            self.store.increment(&keys::unpaid(&packet.sender, packet.created_at.day()), -1)?;
        }
        self.record_sent(&packet)?;
        Ok(packet.view(now))
    }

    /// Binds `payment_id` to packet `id` for good, or answers 409
    /// `payment_reused` if it is bound to another packet.
    ///
    /// The binding is a counter, so it needs no compare-and-set from absent
    /// and leaves nothing half-done: the first packet to find it at 0 adds
    /// its code (a 40-bit hash of its id, never 0). A packet is the one bound
    /// when the counter is a multiple of its code: its own adds only (a
    /// duplicate callback, or a retry whose add did apply). A second packet's
    /// add makes the sum a multiple of neither code but with negligible
    /// chance (about 2^-40), so it is refused, and so is anything after it.
    fn bind_payment(&self, id: &PacketId, payment_id: &str) -> Result<(), Error> {
        let key = keys::payment_binding(payment_id);
        let code = payment_code(id);
        let mut bound = self.store.increment(&key, 0)?;
        if bound == 0 {
            bound = self.store.increment(&key, code)?;
        }
        if bound % code == 0 { Ok(()) } else { Err(Error::PaymentReused) }
    }

    /// Admission control before the store's hot record (the seeds' memcached
    /// counter): first a per-(packet, user) counter, so one user's flood is
    /// shed before it takes the group's capacity, then one atomic `increment`
    /// of a per-packet, per-second counter; above either limit the request is
    /// shed with 429 and nothing else happens. Time-windowed keys cannot leak
    /// capacity when a function dies.
    fn admit(&self, id: &PacketId, user: &str) -> Result<(), Error> {
        if self.is_cold(id) {
            // Nothing to protect, and counting would write keys into a day
            // the purge may have emptied.
            return Ok(());
        }
        let user_window = self.env.now.0.div_euclid(USER_WINDOW_SECONDS);
        if self.store.increment(&keys::user_admission(id, user, user_window), 1)? > USER_ADMISSION_LIMIT {
            return Err(Error::Busy { retry_after_seconds: USER_WINDOW_SECONDS as u32 });
        }
        let window = self.env.now.0;
        let admitted = self.store.increment(&keys::admission(id, window), 1)?;
        if admitted == 1 {
            // First request of a new second: drop the previous second's
            // counter so finished windows do not pile up (best effort).
            let _ = self.store.delete(&keys::admission(id, window - 1));
        }
        if admitted > self.config.admission_limit {
            return Err(Error::Busy { retry_after_seconds: 1 });
        }
        Ok(())
    }

    /// A packet created before the days the sweeps look back: its money has
    /// long stopped moving, and the purge may be deleting its keys.
    fn is_cold(&self, id: &PacketId) -> bool {
        id.day() < self.env.now.day().minus_days(HOT_DAYS)
    }

    /// Grab (抢): the cheap qualification check. One counter increment and one
    /// read; no money moves. Hands out a signed ticket for open.
    pub fn grab(&mut self, id: &PacketId, user: &str) -> Result<GrabView, Error> {
        self.admit(id, user)?;
        let packet = self.load(id)?;
        if self.is_cold(id) {
            // Expired long ago; reading its shares could race their purge.
            return Err(Error::Expired);
        }
        let remaining_count = match packet.strategy {
            Strategy::Cas => state::grab(&packet, user, self.env.now)?,
            Strategy::Cursor => self.cursor_grab(id, &packet.facts().ok_or(Error::NotSent)?, packet.status, user)?,
        };
        let expires = self.env.now.plus_seconds(auth::TICKET_TTL_SECONDS);
        Ok(GrabView {
            ticket: auth::issue_ticket(self.config.auth_secret()?, id.as_str(), user, expires, packet.facts().as_ref()),
            ticket_expires_at: expires.to_rfc3339(),
            remaining_count,
        })
    }

    /// Open (拆): compute the share, deduct it and record the claim in one
    /// compare-and-set of the packet record.
    ///
    /// Store calls: admission `increment`; the CAS loop (`cas`, `current`,
    /// `swap`, repeated on conflict with jittered backoff); then the
    /// receiver's received record. The claim and the deduction are one write,
    /// so there is no crash point between them. A swap that wrote but
    /// reported failure is recognised on the next round: the user's claim is
    /// in the record, and is answered as the result. A crash after the swap
    /// leaves the received record missing: opening again, or settle, writes it.
    pub fn open(&mut self, id: &PacketId, user: &str, ticket: &str) -> Result<OpenView, Error> {
        let now = self.env.now;
        let facts = auth::verify_ticket(self.config.auth_secret()?, ticket, id.as_str(), user, now)?;
        self.admit(id, user)?;
        // The packet's own strategy decides, as the grab ticket states it
        // (then a cursor open never reads the packet record). Without facts
        // (a ticket from before they were signed in): most packets were
        // wrapped under the current configuration, so under `cas` an open
        // reads the record inside its CAS loop (and hands a cursor packet
        // over); otherwise it reads the record first to learn the strategy.
        let taken = match facts {
            // A ticket is only issued for a paid packet, and after payment the
            // record's status changes only to exhausted (which the cursor
            // shows anyway) or, once past `expires_at`, to expired and refunded.
            Some(facts) if facts.strategy == Strategy::Cursor => self.cursor_open(id, &facts, Status::Active, user)?,
            Some(_) => self.cas_open(id, user)?,
            None if self.config.open_strategy != OpenStrategy::Fixed(Strategy::Cas) => {
                let packet = self.load(id)?;
                match packet.strategy {
                    Strategy::Cursor => {
                        self.cursor_open(id, &packet.facts().ok_or(Error::NotSent)?, packet.status, user)?
                    }
                    Strategy::Cas => self.cas_open(id, user)?,
                }
            }
            None => self.cas_open(id, user)?,
        };
        let Taken { claim, remaining_count, sender, fresh } = taken;
        let item = ReceivedItem {
            packet_id: id.to_string(),
            sender,
            amount_fen: claim.amount_fen,
            claimed_at: claim.claimed_at,
        };
        self.record_received(user, &item, fresh)?;
        Ok(OpenView { claim: claim.view(), remaining_count })
    }

    /// Open by compare-and-set of the packet record.
    fn cas_open(&mut self, id: &PacketId, user: &str) -> Result<Taken, Error> {
        let now = self.env.now;
        let outcome = update(self.store, &mut self.env, &keys::packet(id), |current, env| {
            let p = decode_existing(current)?;
            if p.strategy == Strategy::Cursor {
                return Ok(Step::Done(None));
            }
            Ok(match state::open(&p, user, now, env.entropy.as_mut())? {
                Opened::New { packet, claim } => Step::Write(
                    packet.encode(),
                    Some(Taken {
                        claim,
                        remaining_count: packet.remaining_count,
                        sender: packet.sender.clone(),
                        fresh: true,
                    }),
                ),
                Opened::Already(claim) => Step::Done(Some(Taken {
                    claim,
                    remaining_count: p.remaining_count,
                    sender: p.sender,
                    fresh: false,
                })),
            })
        });
        match outcome? {
            Some(found) => Ok(found),
            // A cursor-strategy packet (wrapped under another configuration).
            None => {
                let packet = self.load(id)?;
                self.cursor_open(id, &packet.facts().ok_or(Error::NotSent)?, packet.status, user)
            }
        }
    }

    /// Query (查): the packet view. Its claims and best luck are shown to the
    /// sender and to the packet's claimants only (contract v1.1).
    pub fn query(&self, id: &PacketId, viewer: &str) -> Result<PacketView, Error> {
        let packet = self.current(id, self.load(id)?)?;
        let mut view = packet.view(self.env.now);
        if packet.sender != viewer && packet.claim_of(viewer).is_none() {
            view.claims.clear();
            view.best_luck = None;
        }
        Ok(view)
    }

    /// Appends a claim to its receiver's received list (idempotent). `fresh`:
    /// the claim was made by this very request, so it cannot be listed yet.
    pub(super) fn record_received(&self, user: &str, item: &ReceivedItem, fresh: bool) -> Result<(), Error> {
        let list = keys::received(user, item.claimed_at.day());
        let bytes = crate::json::to_vec(item);
        if fresh {
            lists::append_new(self.store, &list, &item.packet_id, &bytes)?;
        } else {
            lists::append_once(self.store, &list, &item.packet_id, &bytes)?;
        }
        Ok(())
    }
}

/// A packet's code in payment bindings: 40 bits of a hash of its id, top
/// bit set (never 0, and millions of adds fit in an i64).
fn payment_code(id: &PacketId) -> i64 {
    let digest = sha2::Sha256::digest(id.as_str().as_bytes());
    let low = u64::from_le_bytes(digest[..8].try_into().expect("8 bytes")) & ((1 << 39) - 1);
    (low | 1 << 39) as i64
}
