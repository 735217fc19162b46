//! wrap (包), pay (发), grab (抢), open (拆) and query (查).

use super::Service;
use super::cursor::Terms;
use crate::api::{PaymentRequest, WrapRequest};
use crate::auth;
use crate::config::OpenStrategy;
use crate::error::Error;
use crate::id::PacketId;
use crate::keys;
use crate::record::{Claim, ClaimView, Packet, PacketView, ReceivedItem, Strategy, WrapRecord};
use crate::state::{self, Opened, Paid};
use crate::store::{Step, Store, lists, update};
use serde::Serialize;
use std::time::Duration;

/// How long a wrap that lost the idempotency election waits for the winner.
const WRAP_WAIT_ROUNDS: u32 = 50;
const WRAP_WAIT_STEP: Duration = Duration::from_millis(20);

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

impl<S: Store> Service<'_, S> {
    /// Wrap (包): a new packet awaiting payment, idempotent per (sender,
    /// request_id). Returns 201 for a new packet, 200 for a replay.
    ///
    /// Store calls, and what a crash after each leaves:
    /// 1. `get` the idempotency record: if present, this is a replay.
    /// 2. `set` the packet record under a fresh random id (uncontended), and
    ///    for a cursor-strategy packet `set-many` its free shares.
    ///    Crash: an orphan record nobody knows the id of; no money.
    /// 3. append the id to the day index (`increment` + `set`).
    ///    Crash: an indexed orphan, awaiting payment forever; sweeps skip it.
    /// 4. `increment` the election counter: 1 wins, later ones wait for the
    ///    winner. Crash after winning: the request id is spent (replays get
    ///    409 `idempotency_conflict`), no packet was handed out, no money.
    /// 5. `set` the idempotency record. Crash: a replay answers 200 with it.
    pub fn wrap(&mut self, sender: &str, req: &WrapRequest) -> Result<(u16, PacketView), Error> {
        let now = self.env.now;
        let record_key = keys::wrap_request(sender, &req.request_id);
        if let Some(bytes) = self.store.get(&record_key)? {
            return self.wrap_replay(&bytes, req).map(|view| (200, view));
        }
        let id = PacketId::generate(now.day(), self.env.entropy.as_mut());
        let seed = self.env.random();
        let packet =
            state::wrap(&id, sender, &req.terms, now, seed, self.config.open_strategy.for_count(req.terms.count));
        self.store.set(&keys::packet(&id), &packet.encode())?;
        if packet.strategy == Strategy::Cursor {
            // Before anyone can know the id: uncontended, plain writes.
            let shares: Vec<(String, Vec<u8>)> =
                state::preallocated_shares(&packet).iter().map(|s| (keys::share(&id, s.k), s.encode())).collect();
            self.store.set_many(&shares)?;
        }
        lists::append(self.store, &keys::day_index(id.set(), id.day()), id.as_str().as_bytes())?;
        if self.store.increment(&keys::wrap_election(sender, &req.request_id), 1)? == 1 {
            let record = WrapRecord { packet_id: id.to_string(), terms: req.terms.clone() };
            self.store.set(&record_key, &crate::json::to_vec(&record))?;
            return Ok((201, packet.view(now)));
        }
        // Another request with this request_id won: ours is an orphan. Drop
        // it (best effort; a left-over is only an unpaid, unknown packet).
        let _ = self.store.delete(&keys::packet(&id));
        for _ in 0..WRAP_WAIT_ROUNDS {
            if let Some(bytes) = self.store.get(&record_key)? {
                return self.wrap_replay(&bytes, req).map(|view| (200, view));
            }
            (self.env.pause)(WRAP_WAIT_STEP);
        }
        Err(Error::IdempotencyConflict(
            "an earlier request with this request_id did not complete; use a new request_id".into(),
        ))
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
    /// Store calls: the CAS loop on the packet record (`cas`, `current`,
    /// `swap`), then the sender's sent record (`get` marker, `increment`,
    /// `set` slot, `set` marker). A crash after the swap leaves the packet
    /// active without its sent record; the payment system retries an
    /// unanswered callback, and the replay (and every settle) writes it.
    pub fn pay(&mut self, id: &PacketId, req: &PaymentRequest) -> Result<PacketView, Error> {
        let now = self.env.now;
        let ttl = self.config.packet_ttl_seconds;
        let packet = update(self.store, &mut self.env, &keys::packet(id), |current, _| {
            let p = decode_existing(current)?;
            Ok(match state::pay(&p, &req.payment_id, req.amount_fen, now, ttl)? {
                Paid::Changed(next) => Step::Write(next.encode(), next),
                Paid::AlreadyApplied => Step::Done(p),
            })
        })?;
        self.record_sent(&packet)?;
        Ok(packet.view(now))
    }

    /// Admission control before the store's hot record (the seeds' memcached
    /// counter): one atomic `increment` of a per-packet, per-second counter;
    /// above the limit the request is shed with 429 and nothing else happens.
    /// Time-windowed keys cannot leak capacity when a function dies.
    fn admit(&self, id: &PacketId) -> Result<(), Error> {
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

    /// Grab (抢): the cheap qualification check. One counter increment and one
    /// read; no money moves. Hands out a signed ticket for open.
    pub fn grab(&mut self, id: &PacketId, user: &str) -> Result<GrabView, Error> {
        self.admit(id)?;
        let packet = self.load(id)?;
        let remaining_count = match packet.strategy {
            Strategy::Cas => state::grab(&packet, user, self.env.now)?,
            Strategy::Cursor => self.cursor_grab(id, &Terms::of(&packet), user)?,
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
        self.admit(id)?;
        // The packet's own strategy decides, as the grab ticket states it
        // (then a cursor open never reads the packet record). Without facts
        // (a ticket from before they were signed in): most packets were
        // wrapped under the current configuration, so under `cas` an open
        // reads the record inside its CAS loop (and hands a cursor packet
        // over); otherwise it reads the record first to learn the strategy.
        let taken = match facts {
            Some(facts) if facts.strategy == Strategy::Cursor => {
                self.cursor_open(id, &Terms::from_facts(facts), user)?
            }
            Some(_) => self.cas_open(id, user)?,
            None if self.config.open_strategy != OpenStrategy::Fixed(Strategy::Cas) => {
                let packet = self.load(id)?;
                match packet.strategy {
                    Strategy::Cursor => self.cursor_open(id, &Terms::of(&packet), user)?,
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
        let outcome = match outcome {
            Ok(Some(found)) => Ok(found),
            // A cursor-strategy packet (wrapped under another configuration).
            Ok(None) => {
                let packet = self.load(id)?;
                return self.cursor_open(id, &Terms::of(&packet), user);
            }
            Err(e) => Err(e),
        };
        match outcome {
            Ok(found) => Ok(found),
            // Out of CAS attempts: report busy only if no claim of ours landed.
            Err(Error::Busy { retry_after_seconds }) => {
                let p = self.load(id)?;
                match p.claim_of(user) {
                    Some(claim) => Ok(Taken {
                        claim: claim.clone(),
                        remaining_count: p.remaining_count,
                        sender: p.sender.clone(),
                        fresh: false,
                    }),
                    None => Err(Error::Busy { retry_after_seconds }),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Query (查): the packet view.
    pub fn query(&self, id: &PacketId) -> Result<PacketView, Error> {
        let packet = self.load(id)?;
        Ok(self.current(id, packet)?.view(self.env.now))
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

/// A share taken by an open: the claim, the shares left, the sender, and
/// whether this very request made the claim (a replay did not).
pub(super) struct Taken {
    pub claim: Claim,
    pub remaining_count: u32,
    pub sender: String,
    pub fresh: bool,
}

/// The packet record in a CAS round, or `not_found`.
pub(super) fn decode_existing(current: Option<&[u8]>) -> Result<Packet, Error> {
    Packet::decode(current.ok_or(Error::NotFound)?).map_err(Error::Internal)
}
