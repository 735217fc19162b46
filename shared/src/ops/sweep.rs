//! The batch side: the refund sweep (expire), wallet credit (settle, 入账) and
//! reconciliation (对账). They walk the per-SET day indexes of the hot
//! day-tables; everything they do is idempotent, so they are safe to run
//! concurrently, repeatedly, and after a crash at any point.

use super::{Service, decode_existing};
use crate::config::{HOT_DAYS, MAX_TTL_SECONDS};
use crate::error::Error;
use crate::id::{PacketId, SETS};
use crate::keys;
use crate::money::Fen;
use crate::record::{Packet, ReceivedItem, Status, Strategy, WalletEntry};
use crate::state::{self, Swept};
use crate::store::{Step, Store, get_all, lists, update};
use crate::time::{Day, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// How far the clocks of two instances may disagree. Payment checks its
/// window on its own clock, sweeps decide on theirs, so a sweep treats a
/// packet as unpayable (and a day as closed) only this long after the latest
/// moment any payment window can end.
pub const CLOCK_SKEW_TOLERANCE_SECONDS: i64 = 3_600;

/// The moment after which no instance can accept a payment for a packet
/// created at `created`.
fn payable_until(created: Timestamp) -> Timestamp {
    created.plus_seconds(MAX_TTL_SECONDS + CLOCK_SKEW_TOLERANCE_SECONDS)
}

#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct ExpireReport {
    pub scanned: u64,
    pub refunded: u64,
    pub refund_fen: u64,
    pub errors: Vec<SweepError>,
    /// SETs whose store failed this run: skipped, swept by a later run.
    pub unreachable_sets: Vec<u32>,
}

#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct SettleReport {
    pub credited: u64,
    pub credited_fen: u64,
    pub errors: Vec<SweepError>,
    /// SETs whose store failed this run: skipped, settled by a later run.
    pub unreachable_sets: Vec<u32>,
}

/// A packet a sweep could not finish this time (the next run retries it),
/// with the contract's code for why.
#[derive(Debug, Serialize, PartialEq, Eq, Clone)]
pub struct SweepError {
    pub packet_id: String,
    pub code: &'static str,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq, Clone)]
pub struct Mismatch {
    pub packet_id: String,
    pub reason: String,
}

/// Kept reports are decoded years later: a field added since defaults.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq, Clone)]
#[serde(default)]
pub struct ReconcileReport {
    pub day: String,
    pub packets: u64,
    pub total_fen: u64,
    pub claimed_fen: u64,
    pub refunded_fen: u64,
    pub outstanding_fen: u64,
    pub credited_fen: u64,
    pub mismatches: Vec<Mismatch>,
    /// Packets whose money may still move: paid and not yet refunded and
    /// credited in full, or still payable.
    pub unfinished: u64,
    /// The day's packets are purged: this is the report kept at the purge.
    pub purged: bool,
}

/// Where a sweep may start in one day index: slots before `next` hold only
/// packets that will never change again. `closed`: the whole day is done.
/// Written with plain `set`: it is a hint that only ever skips finished work,
/// so a stale (lower) value written by a concurrent sweep is harmless.
#[derive(Debug, Default, Serialize, Deserialize, Clone, Copy, PartialEq, Eq)]
struct IndexHint {
    next: i64,
    closed: bool,
}

impl<S: Store> Service<'_, S> {
    /// The refund sweep: every active packet past expiry is refunded its
    /// remainder, exactly once; exhausted packets past expiry become expired.
    ///
    /// Per packet, one CAS round on its record. The refund amount is written
    /// in the same record version that zeroes the remainder, so there is no
    /// crash point between them; the wallet credit is settle's job.
    pub fn expire(&mut self) -> Result<ExpireReport, Error> {
        let op = format!("expire:{:016x}", self.env.random());
        let now = self.env.now;
        let mut report = ExpireReport::default();
        let mut errors = Vec::new();
        let mut unreachable = Vec::new();
        self.walk(&mut errors, &mut unreachable, |svc, id| {
            report.scanned += 1;
            let packet = match svc.load(id) {
                Ok(p) => p,
                Err(Error::NotFound) => return Ok(true),
                Err(e) => return Err(e),
            };
            // A cursor packet: seal its free shares first; after that its
            // shares never change, so they can be read once for the CAS below.
            let shares = if packet.strategy == Strategy::Cursor
                && packet.status.is_paid()
                && !packet.status.is_final()
                && packet.is_past_expiry(now)
            {
                svc.finalize_cursor(id, &packet, &op)?;
                Some(svc.shares(id, packet.count)?)
            } else {
                None
            };
            let outcome = update(svc.store, &mut svc.env, &keys::packet(id), |current, _| {
                let Some(bytes) = current else { return Ok(Step::Done(None)) };
                let p = Packet::decode(bytes).map_err(Error::Internal)?;
                let swept = match &shares {
                    Some(shares) => state::finalize(&p, shares, now, &op),
                    None => state::expire(&p, now, &op),
                };
                Ok(match swept {
                    Swept::Refunded(next) | Swept::Expired(next) => Step::Write(next.encode(), Some((next, true))),
                    // Our own write, reported as failed by the store: still ours.
                    Swept::Unchanged => {
                        let ours = p.last_op == op;
                        Step::Done(Some((p, ours)))
                    }
                })
            })?;
            let Some((packet, ours)) = outcome else { return Ok(true) };
            if ours && packet.status == Status::Refunded {
                report.refunded += 1;
                report.refund_fen += packet.refund_fen.unwrap_or_default().0;
            }
            Ok(svc.is_done(&packet))
        })?;
        self.clean_unpaid(&mut errors, &mut unreachable)?;
        report.errors = errors;
        report.unreachable_sets = unreachable;
        Ok(report)
    }

    /// Drops the pre-split shares of cursor packets never paid, once no
    /// instance can accept their payment (`payable_until`), a day index at a
    /// time; the day is then marked clean and not read again. The packet
    /// records stay (small, and a wrap replay still shows them).
    fn clean_unpaid(&mut self, errors: &mut Vec<SweepError>, unreachable: &mut Vec<u32>) -> Result<(), Error> {
        self.each_set(unreachable, |svc, set| svc.clean_unpaid_set(set, errors))
    }

    fn clean_unpaid_set(&mut self, set: u32, errors: &mut Vec<SweepError>) -> Result<(), Error> {
        let today = self.env.now.day();
        let days: Vec<Day> = (0..HOT_DAYS)
            .map(|back| today.minus_days(back))
            .filter(|day| self.env.now >= payable_until(day.start().plus_seconds(86_400)))
            .collect();
        let marks: Vec<String> = days.iter().map(|&day| keys::day_index_cleaned(set, day)).collect();
        let cleaned = get_all(self.store, &marks)?;
        for ((&day, mark), cleaned) in days.iter().zip(&marks).zip(cleaned) {
            if cleaned.is_some() {
                continue;
            }
            let mut clean = true;
            for bytes in lists::read(self.store, &keys::day_index(set, day))? {
                let Some(id) = String::from_utf8(bytes).ok().and_then(|s| PacketId::parse(&s)) else { continue };
                if let Err(e) = self.drop_unpaid_shares(&id) {
                    errors.push(SweepError { packet_id: id.to_string(), code: e.code() });
                    clean = false;
                }
            }
            if clean {
                self.store.set(mark, b"1")?;
            }
        }
        Ok(())
    }

    fn drop_unpaid_shares(&self, id: &PacketId) -> Result<(), Error> {
        let p = match self.load(id) {
            Ok(p) => p,
            Err(Error::NotFound) => return Ok(()),
            Err(e) => return Err(e),
        };
        if p.status == Status::AwaitingPayment && p.strategy == Strategy::Cursor {
            for k in 1..=p.count {
                self.store.delete(&keys::share(id, k))?;
            }
        }
        Ok(())
    }

    /// Wallet credit (入账): every recorded claim to its receiver, every refund
    /// to its sender, exactly once each.
    ///
    /// Per credit: append the entry to the owner's wallet under its name
    /// (idempotent), then `increment` a per-credit election counter; only the
    /// run that sees 1 reports the credit, so concurrent runs never report one
    /// twice. Then one CAS records settle progress on the packet. A crash
    /// anywhere leaves work the next run redoes without duplicating it.
    pub fn settle(&mut self) -> Result<SettleReport, Error> {
        let op = format!("settle:{:016x}", self.env.random());
        let mut report = SettleReport::default();
        let mut errors = Vec::new();
        let mut unreachable = Vec::new();
        self.walk(&mut errors, &mut unreachable, |svc, id| {
            let packet = match svc.load(id) {
                Ok(p) => p,
                Err(Error::NotFound) => return Ok(true),
                Err(e) => return Err(e),
            };
            // A live cursor packet's claims are in its shares: collect them first.
            let packet = if packet.strategy == Strategy::Cursor && packet.status.is_paid() && !packet.status.is_final()
            {
                svc.collect_claims(id, packet.count, &op)?
            } else {
                packet
            };
            if !packet.status.is_paid() || packet.is_settled() {
                return Ok(svc.is_done(&packet));
            }
            svc.settle_packet(id, &packet, &op, &mut report)?;
            Ok(false) // re-checked as done on a later run, after progress is recorded
        })?;
        report.errors = errors;
        report.unreachable_sets = unreachable;
        Ok(report)
    }

    /// Credits the claims and the refund of `p` not recorded as credited, then
    /// records exactly those (by seq) as credited. Progress names its claims:
    /// a claim collected later, whatever its seq, is credited by a later run.
    /// A failed store call stops the crediting, but what was credited before
    /// it is still recorded: on a flaky store a packet with many claims gets
    /// nearer to settled with every run instead of starting over.
    fn settle_packet(&mut self, id: &PacketId, p: &Packet, op: &str, report: &mut SettleReport) -> Result<(), Error> {
        // The sender's list first: once everything is credited the packet is
        // done, and no run comes back to repair it.
        self.record_sent(p)?;
        let mut credited = Vec::new();
        let mut failed = None;
        for claim in p.claims.iter().filter(|c| !p.is_claim_settled(c.seq)) {
            let item = ReceivedItem {
                packet_id: p.id.clone(),
                sender: p.sender.clone(),
                amount_fen: claim.amount_fen,
                claimed_at: claim.claimed_at,
            };
            let election = keys::credit_election(id, &format!("c{}", claim.seq));
            let done = self
                .record_received(&claim.user, &item, false)
                .and_then(|()| self.credit(&claim.user, &p.claim_credit(claim), &election, report));
            match done {
                Ok(()) => credited.push(claim.seq),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let refund = p.refund_credit();
        let mut refund_done = false;
        if let (Some(entry), false, None) = (&refund, p.refund_settled, &failed) {
            match self.credit(&p.sender, entry, &keys::credit_election(id, "refund"), report) {
                Ok(()) => refund_done = true,
                Err(e) => failed = Some(e),
            }
        }
        // Out of CAS attempts (a busy packet, or swaps that wrote but said
        // they failed): the credits stand, and the next run records them.
        let recorded = update(self.store, &mut self.env, &keys::packet(id), |current, _| {
            let now = decode_existing(current)?;
            Ok(match state::record_settled(&now, &credited, refund_done, op) {
                Some(next) => Step::Write(next.encode(), ()),
                None => Step::Done(()),
            })
        });
        match failed {
            Some(e) => Err(e),
            None => recorded,
        }
    }

    fn credit(&self, owner: &str, entry: &WalletEntry, election: &str, report: &mut SettleReport) -> Result<(), Error> {
        let bytes = crate::json::to_vec(entry);
        // The day first: a crash after it leaves a day with no entry yet, which readers skip.
        let day = entry.at.day().compact();
        lists::append_once(self.store, &keys::wallet_days(owner), &day, day.as_bytes())?;
        lists::append_once(self.store, &keys::wallet(owner, entry.at.day()), &entry.name(), &bytes)?;
        if self.store.increment(election, 1)? == 1 {
            report.credited += 1;
            report.credited_fen += entry.amount_fen.0;
        }
        Ok(())
    }

    /// A packet no sweep needs to look at again.
    pub(super) fn is_done(&self, p: &Packet) -> bool {
        match p.status {
            // In the paid index but not paid (its payment died, or is still
            // in flight): done once no instance's clock can accept a payment.
            Status::AwaitingPayment => self.env.now >= payable_until(p.created_at),
            Status::Expired | Status::Refunded => p.is_settled(),
            Status::Active | Status::Exhausted => false,
        }
    }

    /// Visits every packet of the hot day-tables that is not known to be done,
    /// SET by SET. `visit` returns whether the packet is done for good; the
    /// index hints advance over finished prefixes. A packet `visit` fails on
    /// is listed in `errors` and left for the next run: one bad packet never
    /// holds up the others. A SET whose store fails is listed in
    /// `unreachable` and skipped: one dead SET never holds up the others.
    fn walk(
        &mut self,
        errors: &mut Vec<SweepError>,
        unreachable: &mut Vec<u32>,
        mut visit: impl FnMut(&mut Self, &PacketId) -> Result<bool, Error>,
    ) -> Result<(), Error> {
        self.each_set(unreachable, |svc, set| svc.walk_set(set, errors, &mut visit))
    }

    /// Runs `sweep` on every SET. A SET whose store fails (`Unavailable`) is
    /// listed in `unreachable` (once) and the sweep goes on with the next;
    /// any other error ends it.
    fn each_set(
        &mut self,
        unreachable: &mut Vec<u32>,
        mut sweep: impl FnMut(&mut Self, u32) -> Result<(), Error>,
    ) -> Result<(), Error> {
        for set in 0..SETS {
            match sweep(self, set) {
                Err(Error::Unavailable(_)) if unreachable.contains(&set) => {}
                Err(Error::Unavailable(_)) => unreachable.push(set),
                other => other?,
            }
        }
        Ok(())
    }

    fn walk_set(
        &mut self,
        set: u32,
        errors: &mut Vec<SweepError>,
        visit: &mut impl FnMut(&mut Self, &PacketId) -> Result<bool, Error>,
    ) -> Result<(), Error> {
        let today = self.env.now.day();
        let days: Vec<Day> = (0..HOT_DAYS).map(|back| today.minus_days(back)).collect();
        let hint_keys: Vec<String> = days.iter().map(|&day| keys::paid_index_low(set, day)).collect();
        let hints = get_all(self.store, &hint_keys)?;
        for ((&day, hint_key), hint) in days.iter().zip(&hint_keys).zip(hints) {
            let hint: IndexHint = hint.and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
            if hint.closed {
                continue;
            }
            let (len, items) = lists::read_from(self.store, &keys::paid_index(set, day), hint.next.max(1))?;
            // Until no packet of the day can be paid any more, a hole may be
            // an append still in flight; after that it is a crashed append
            // and will never fill, and nothing new can join the day.
            let settled_day = self.env.now >= payable_until(day.start().plus_seconds(86_400));
            let mut next = hint.next.max(1);
            let mut prefix_done = true;
            let mut seen = HashSet::new();
            let mut present = items.into_iter().peekable();
            for slot in hint.next.max(1)..=len {
                let done = match present.peek() {
                    Some((k, _)) if *k == slot => {
                        let (_, bytes) = present.next().expect("peeked");
                        match String::from_utf8(bytes).ok().and_then(|s| PacketId::parse(&s)) {
                            Some(id) if seen.insert(id.clone()) => visit(self, &id).unwrap_or_else(|e| {
                                errors.push(SweepError { packet_id: id.to_string(), code: e.code() });
                                false
                            }),
                            _ => true,
                        }
                    }
                    _ => settled_day,
                };
                prefix_done &= done;
                if prefix_done {
                    next = slot + 1;
                }
            }
            let closed = settled_day && next > len;
            let advanced = IndexHint { next, closed };
            if advanced != hint && (advanced.next > hint.next || closed) {
                self.store.set(hint_key, &crate::json::to_vec(&advanced))?;
            }
        }
        Ok(())
    }

    /// Reconciliation (对账) over the packets created on `day`: totals, and
    /// every broken invariant or missing credit named per packet. For a
    /// purged day, the report kept at the purge.
    pub fn reconcile(&self, day: Day) -> Result<ReconcileReport, Error> {
        if let Some(kept) = self.kept_report(day)? {
            return Ok(kept);
        }
        let computed = self.reconcile_records(day);
        // A purge that began meanwhile may have deleted some of what was
        // read; it keeps its report before it deletes anything.
        match self.kept_report(day)? {
            Some(kept) => Ok(kept),
            None => computed,
        }
    }

    /// The report kept when `day` was purged, if it was.
    pub(super) fn kept_report(&self, day: Day) -> Result<Option<ReconcileReport>, Error> {
        self.store
            .get(&keys::kept_report(day))?
            .map(|bytes| {
                serde_json::from_slice(&bytes).map_err(|e| Error::Internal(format!("kept report of {day}: {e}")))
            })
            .transpose()
    }

    /// Reconciliation read from the day's packet records.
    pub(super) fn reconcile_records(&self, day: Day) -> Result<ReconcileReport, Error> {
        let mut report = ReconcileReport { day: day.to_string(), ..Default::default() };
        let mut seen = HashSet::new();
        for set in 0..SETS {
            for bytes in lists::read(self.store, &keys::day_index(set, day))? {
                let Some(id) = String::from_utf8(bytes).ok().and_then(|s| PacketId::parse(&s)) else { continue };
                if !seen.insert(id.clone()) {
                    continue;
                }
                let p = match self.load(&id) {
                    Ok(p) => p,
                    Err(Error::NotFound) => continue, // a lost wrap election's orphan
                    Err(e) => return Err(e),
                };
                report.packets += 1;
                let p = self.current(&id, p)?;
                if !self.is_done(&p) {
                    report.unfinished += 1;
                }
                if p.status.is_paid() {
                    self.reconcile_packet(&p, &mut report)?;
                }
            }
        }
        Ok(report)
    }

    fn reconcile_packet(&self, p: &Packet, report: &mut ReconcileReport) -> Result<(), Error> {
        let mismatch = |reason: &str| Mismatch { packet_id: p.id.clone(), reason: reason.to_owned() };
        report.total_fen += p.total_fen.0;
        report.claimed_fen += p.claimed_fen().0;
        report.refunded_fen += p.refund_fen.unwrap_or_default().0;
        report.outstanding_fen += p.remaining_fen.0;
        report.mismatches.extend(p.invariant_violations().into_iter().map(mismatch));

        // Credits: each claim in its receiver's wallet, the refund in the sender's.
        let mut expected: Vec<(String, WalletEntry, bool)> =
            p.claims.iter().map(|c| (c.user.clone(), p.claim_credit(c), p.is_claim_settled(c.seq))).collect();
        if let Some(entry) = p.refund_credit() {
            expected.push((p.sender.clone(), entry, p.refund_settled));
        }
        let markers: Vec<String> =
            expected.iter().map(|(owner, e, _)| keys::wallet(owner, e.at.day()).marker(&e.name())).collect();
        let found = get_all(self.store, &markers)?;
        let mut credited = Fen::ZERO;
        for ((_, entry, recorded_as_settled), found) in expected.iter().zip(found) {
            match found.and_then(|b| serde_json::from_slice::<WalletEntry>(&b).ok()) {
                Some(credit) if credit.amount_fen == entry.amount_fen => {
                    credited = credited.checked_add(credit.amount_fen).unwrap_or(Fen(u64::MAX));
                }
                Some(_) => report.mismatches.push(mismatch("credit_amount_mismatch")),
                None if *recorded_as_settled => report.mismatches.push(mismatch("credit_missing")),
                None => {}
            }
        }
        report.credited_fen += credited.0;
        Ok(())
    }
}
