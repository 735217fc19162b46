//! The packet state machine as pure functions: no I/O, no clock, no
//! randomness that is not passed in. Each returns the next record (with
//! `version` bumped and `last_op` naming the operation) or a typed error that
//! is exactly the contract's answer. Each is also idempotent: applied to a
//! record that already carries its own effect, it says so instead of applying
//! it twice. That is what makes a retry after an ambiguous swap safe.
//!
//! ```text
//! awaiting_payment --pay--> active --open (last share)--> exhausted --expire--> expired
//!                              \--expire (money left)--> refunded
//! ```

use crate::alloc::preallocate;
use crate::alloc::{Entropy, next_share};
use crate::error::Error;
use crate::id::PacketId;
use crate::money::Fen;
use crate::record::{Claim, Packet, Share, ShareState, Status, Strategy, WrapTerms};
use crate::time::Timestamp;

/// A new packet, awaiting payment.
pub fn wrap(id: &PacketId, sender: &str, terms: &WrapTerms, now: Timestamp, seed: u64, strategy: Strategy) -> Packet {
    Packet {
        id: id.to_string(),
        version: 1,
        last_op: "wrap".into(),
        strategy,
        kind: terms.kind,
        sender: sender.to_owned(),
        greeting: terms.greeting.clone(),
        group_id: terms.group_id.clone(),
        total_fen: terms.total_fen,
        count: terms.count,
        created_at: now,
        seed,
        status: Status::AwaitingPayment,
        payment_id: None,
        paid_at: None,
        expires_at: None,
        remaining_fen: terms.total_fen,
        remaining_count: terms.count,
        claims: Vec::new(),
        refund_fen: None,
        refunded_at: None,
        settled: Vec::new(),
        refund_settled: false,
    }
}

fn next_version(p: &Packet, op: String) -> Packet {
    let mut next = p.clone();
    next.version += 1;
    next.last_op = op;
    next
}

// Returned once per call and moved straight into a store write: boxing
// would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, PartialEq)]
pub enum Paid {
    Changed(Packet),
    /// This payment_id already paid the packet: nothing changes.
    AlreadyApplied,
}

/// A packet must be paid within `ttl` of its creation; a later payment is
/// refused (410 `expired`) so that every packet's money moves within a
/// bounded number of day-tables (see README, "sweep window").
pub fn pay(p: &Packet, payment_id: &str, amount: Fen, now: Timestamp, ttl: i64) -> Result<Paid, Error> {
    if amount != p.total_fen {
        return Err(Error::AmountMismatch { expected: p.total_fen.0, got: amount.0 });
    }
    if p.status != Status::AwaitingPayment {
        return if p.payment_id.as_deref() == Some(payment_id) {
            Ok(Paid::AlreadyApplied)
        } else {
            Err(Error::AlreadyPaid)
        };
    }
    if now >= p.created_at.plus_seconds(ttl) {
        return Err(Error::Expired);
    }
    let mut next = next_version(p, format!("pay:{payment_id}"));
    next.status = Status::Active;
    next.payment_id = Some(payment_id.to_owned());
    next.paid_at = Some(now);
    next.expires_at = Some(now.plus_seconds(ttl));
    Ok(Paid::Changed(next))
}

/// The checks of grab (抢): may `user` still try to open this packet?
/// Returns the remaining share count. Best effort: open re-checks atomically.
pub fn grab(p: &Packet, user: &str, now: Timestamp) -> Result<u32, Error> {
    if let Some(claim) = p.claim_of(user) {
        return Err(Error::AlreadyClaimed(claim.clone()));
    }
    check_openable(p, now)?;
    Ok(p.remaining_count)
}

/// The checks grab and open make on every strategy: the packet is paid and
/// not expired, by its status or by the clock.
pub fn check_live(status: Status, expires_at: Option<Timestamp>, now: Timestamp) -> Result<(), Error> {
    match status {
        Status::AwaitingPayment => Err(Error::NotSent),
        Status::Expired | Status::Refunded => Err(Error::Expired),
        _ if now.has_reached(expires_at) => Err(Error::Expired),
        _ => Ok(()),
    }
}

/// A record-serialized packet also answers `exhausted` by itself (a cursor
/// packet's record does not know; its cursor does).
fn check_openable(p: &Packet, now: Timestamp) -> Result<(), Error> {
    if p.status == Status::Exhausted {
        return Err(Error::Exhausted);
    }
    check_live(p.status, p.expires_at, now)?;
    if p.remaining_count == 0 { Err(Error::Exhausted) } else { Ok(()) }
}

#[allow(clippy::large_enum_variant)] // as `Paid`
#[derive(Debug, PartialEq)]
pub enum Opened {
    New {
        packet: Packet,
        claim: Claim,
    },
    /// The user's claim is already in the record: answer it again.
    Already(Claim),
}

/// Open (拆): compute this user's share, deduct it and record the claim, as
/// one new version of the packet record.
pub fn open(p: &Packet, user: &str, now: Timestamp, entropy: &mut dyn Entropy) -> Result<Opened, Error> {
    if let Some(claim) = p.claim_of(user) {
        return Ok(Opened::Already(claim.clone()));
    }
    check_openable(p, now)?;
    let amount = next_share(p.kind, p.total_fen, p.count, p.remaining_fen, p.remaining_count, entropy);
    let claim = Claim { user: user.to_owned(), amount_fen: amount, seq: p.claims.len() as u32 + 1, claimed_at: now };
    let mut next = next_version(p, format!("open:{user}"));
    next.remaining_fen = p.remaining_fen.checked_sub(amount).expect("a share never exceeds the remainder");
    next.remaining_count -= 1;
    next.claims.push(claim.clone());
    if next.remaining_count == 0 {
        next.status = Status::Exhausted;
    }
    Ok(Opened::New { packet: next, claim })
}

#[derive(Debug, PartialEq)]
pub enum Swept {
    /// Money was left: all of it goes back to the sender, exactly once.
    Refunded(Packet),
    /// Fully claimed and past expiry: only the status changes.
    Expired(Packet),
    Unchanged,
}

/// The expiry sweep's step for one packet.
pub fn expire(p: &Packet, now: Timestamp, op: &str) -> Swept {
    if !p.is_past_expiry(now) {
        return Swept::Unchanged;
    }
    match p.status {
        Status::Active => {
            let mut next = next_version(p, op.to_owned());
            next.status = Status::Refunded;
            next.refund_fen = Some(p.remaining_fen);
            next.refunded_at = Some(now);
            next.remaining_fen = Fen::ZERO;
            next.remaining_count = 0;
            Swept::Refunded(next)
        }
        Status::Exhausted => {
            let mut next = next_version(p, op.to_owned());
            next.status = Status::Expired;
            Swept::Expired(next)
        }
        _ => Swept::Unchanged,
    }
}

/// Records settle progress: the claims with the seqs in `credited` and (if
/// `refund_done`) the refund are in their owners' wallets. Only adds to what
/// is recorded, so concurrent settles cannot undo each other; seqs of claims
/// the record does not hold are ignored. `None` when nothing changes.
pub fn record_settled(p: &Packet, credited: &[u32], refund_done: bool, op: &str) -> Option<Packet> {
    let mut settled = p.settled.clone();
    for &seq in credited {
        if let (Err(at), true) = (settled.binary_search(&seq), p.claims.iter().any(|c| c.seq == seq)) {
            settled.insert(at, seq);
        }
    }
    let refund = p.refund_settled || (refund_done && p.refund_fen.is_some());
    if settled == p.settled && refund == p.refund_settled {
        return None;
    }
    let mut next = next_version(p, op.to_owned());
    next.settled = settled;
    next.refund_settled = refund;
    Some(next)
}

/// The shares of a new cursor-strategy packet, all free, pre-allocated from
/// the packet's secret seed (share k is a pure function of (seed, k)).
pub fn preallocated_shares(p: &Packet) -> Vec<Share> {
    preallocate(p.kind, p.total_fen, p.count, p.seed)
        .into_iter()
        .zip(1..)
        .map(|(amount_fen, k)| Share {
            k,
            amount_fen,
            state: ShareState::Free,
            user: None,
            at: None,
            version: 1,
            last_op: "wrap".into(),
        })
        .collect()
}

#[derive(Debug, PartialEq)]
pub enum ShareClaimed {
    New {
        share: Share,
        claim: Claim,
    },
    /// Already this user's (a replay, or our own swap reported as failed).
    Already(Claim),
}

/// Claims share `k` for `user`. A share number is handed out once, so the
/// only possible contender is the expiry sweep sealing it.
pub fn claim_share(s: &Share, user: &str, now: Timestamp) -> Result<ShareClaimed, Error> {
    match s.state {
        ShareState::Free => {
            let mut next = s.clone();
            next.state = ShareState::Claimed;
            next.user = Some(user.to_owned());
            next.at = Some(now);
            next.version += 1;
            next.last_op = format!("open:{user}");
            let claim = next.claim().expect("just claimed");
            Ok(ShareClaimed::New { share: next, claim })
        }
        ShareState::Claimed if s.user.as_deref() == Some(user) => {
            Ok(ShareClaimed::Already(s.claim().expect("claimed")))
        }
        ShareState::Claimed => Err(Error::Internal(format!("share {} was handed out twice", s.k))),
        ShareState::Sealed => Err(Error::Expired),
    }
}

/// Seals a share nobody claimed, at expiry: from then on no open can claim
/// it, and its amount is part of the refund. `None` unless it is free.
pub fn seal_share(s: &Share, op: &str) -> Option<Share> {
    (s.state == ShareState::Free).then(|| {
        let mut next = s.clone();
        next.state = ShareState::Sealed;
        next.version += 1;
        next.last_op = op.to_owned();
        next
    })
}

/// Merges the claimed shares of a cursor-strategy packet into its record
/// (claims in share order), so settle, reconcile and the view can treat it
/// like any packet. `None` when the record already has every claim.
pub fn collect(p: &Packet, shares: &[Share], op: &str) -> Option<Packet> {
    let mut claims = p.claims.clone();
    for claim in shares.iter().filter_map(Share::claim) {
        if !claims.iter().any(|c| c.seq == claim.seq) {
            claims.push(claim);
        }
    }
    if claims.len() == p.claims.len() {
        return None;
    }
    claims.sort_by_key(|c| c.seq);
    let mut next = next_version(p, op.to_owned());
    let claimed = Fen::sum(claims.iter().map(|c| c.amount_fen)).expect("within total");
    next.remaining_fen = p.total_fen.checked_sub(claimed).expect("shares sum to the total");
    next.remaining_count = p.count - claims.len() as u32;
    next.claims = claims;
    if next.remaining_count == 0 && next.status == Status::Active {
        next.status = Status::Exhausted;
    }
    Some(next)
}

/// Expiry of a cursor-strategy packet whose shares are all claimed or sealed:
/// the claims move into the record and the sealed shares are refunded.
pub fn finalize(p: &Packet, shares: &[Share], now: Timestamp, op: &str) -> Swept {
    debug_assert!(shares.iter().all(|s| s.state != ShareState::Free));
    let collected = collect(p, shares, op);
    match expire(collected.as_ref().unwrap_or(p), now, op) {
        Swept::Unchanged => collected.map_or(Swept::Unchanged, Swept::Expired),
        swept => swept,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alloc::{Kind, SplitMix64};
    use crate::time::Day;

    const T0: Timestamp = Timestamp(1_795_305_600);
    const TTL: i64 = 86_400;

    fn packet(kind: Kind, total: u64, count: u32) -> Packet {
        let id = PacketId::generate(Day::from_days_since_epoch(T0.0 / 86_400), &mut SplitMix64(1));
        let terms = WrapTerms { kind, total_fen: Fen(total), count, greeting: None, group_id: None };
        wrap(&id, "sender", &terms, T0, 99, Strategy::Cas)
    }

    fn paid(kind: Kind, total: u64, count: u32) -> Packet {
        match pay(&packet(kind, total, count), "pay-1", Fen(total), T0.plus_seconds(5), TTL).unwrap() {
            Paid::Changed(p) => p,
            other => panic!("{other:?}"),
        }
    }

    fn open_new(p: &Packet, user: &str, rng: &mut SplitMix64) -> (Packet, Claim) {
        match open(p, user, T0.plus_seconds(10), rng).unwrap() {
            Opened::New { packet, claim } => (packet, claim),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn payment_activates_once_and_replays_by_payment_id() {
        let p = paid(Kind::Lucky, 1000, 3);
        assert_eq!(p.status, Status::Active);
        assert_eq!(p.expires_at, Some(T0.plus_seconds(5 + TTL)));
        assert_eq!(p.version, 2);
        assert_eq!(pay(&p, "pay-1", Fen(1000), T0, TTL), Ok(Paid::AlreadyApplied));
        assert_eq!(pay(&p, "pay-2", Fen(1000), T0, TTL), Err(Error::AlreadyPaid));
        assert_eq!(pay(&p, "pay-1", Fen(999), T0, TTL), Err(Error::AmountMismatch { expected: 1000, got: 999 }));
    }

    #[test]
    fn late_payment_is_refused() {
        let p = packet(Kind::Fixed, 300, 3);
        assert_eq!(pay(&p, "x", Fen(300), T0.plus_seconds(TTL), TTL), Err(Error::Expired));
    }

    #[test]
    fn unpaid_packets_cannot_be_grabbed_or_opened() {
        let p = packet(Kind::Lucky, 100, 2);
        assert_eq!(grab(&p, "a", T0), Err(Error::NotSent));
        assert_eq!(open(&p, "a", T0, &mut SplitMix64(1)), Err(Error::NotSent));
    }

    #[test]
    fn opening_drains_the_packet_exactly() {
        let mut rng = SplitMix64(3);
        let mut p = paid(Kind::Lucky, 1000, 4);
        for (i, user) in ["a", "b", "c", "d"].iter().enumerate() {
            let (next, claim) = open_new(&p, user, &mut rng);
            assert_eq!(claim.seq as usize, i + 1);
            assert_eq!(next.version, p.version + 1);
            assert_eq!(next.last_op, format!("open:{user}"));
            p = next;
        }
        assert_eq!(p.status, Status::Exhausted);
        assert_eq!(p.remaining_fen, Fen(0));
        assert_eq!(p.claimed_fen(), Fen(1000));
        assert!(p.invariant_violations().is_empty());
        assert_eq!(open(&p, "e", T0, &mut rng), Err(Error::Exhausted));
        assert_eq!(grab(&p, "e", T0), Err(Error::Exhausted));
    }

    #[test]
    fn a_user_gets_one_claim_however_often_they_open() {
        let mut rng = SplitMix64(4);
        let (p, claim) = open_new(&paid(Kind::Lucky, 1000, 4), "a", &mut rng);
        assert_eq!(open(&p, "a", T0, &mut rng), Ok(Opened::Already(claim.clone())));
        assert_eq!(grab(&p, "a", T0), Err(Error::AlreadyClaimed(claim)));
    }

    #[test]
    fn expiry_refunds_exactly_the_remainder_once() {
        let mut rng = SplitMix64(5);
        let (p, claim) = open_new(&paid(Kind::Fixed, 900, 3), "a", &mut rng);
        let later = T0.plus_seconds(5 + TTL);
        assert_eq!(expire(&p, T0, "sweep-1"), Swept::Unchanged);
        assert_eq!(open(&p, "b", later, &mut rng), Err(Error::Expired));
        let Swept::Refunded(r) = expire(&p, later, "sweep-1") else { panic!() };
        assert_eq!(r.refund_fen, Some(Fen(900 - claim.amount_fen.0)));
        assert_eq!(r.status, Status::Refunded);
        assert_eq!(r.last_op, "sweep-1");
        assert!(r.invariant_violations().is_empty());
        assert_eq!(expire(&r, later, "sweep-2"), Swept::Unchanged);
    }

    #[test]
    fn exhausted_packets_expire_without_refund() {
        let mut rng = SplitMix64(6);
        let (p, _) = open_new(&paid(Kind::Lucky, 5, 1), "a", &mut rng);
        let Swept::Expired(e) = expire(&p, T0.plus_seconds(10 + TTL), "s") else { panic!() };
        assert_eq!(e.status, Status::Expired);
        assert_eq!(e.refund_fen, None);
        assert!(e.best_luck(T0).is_some());
    }

    #[test]
    fn best_luck_is_the_largest_share_with_ties_to_the_lowest_seq() {
        let mut p = paid(Kind::Fixed, 300, 3);
        let mut rng = SplitMix64(7);
        for u in ["x", "y", "z"] {
            p = open_new(&p, u, &mut rng).0;
        }
        assert_eq!(p.best_luck(T0).unwrap().user, "x");
        let half = open_new(&paid(Kind::Fixed, 300, 3), "x", &mut rng).0;
        assert_eq!(half.best_luck(T0), None, "undecided while active");
    }

    #[test]
    fn cursor_shares_are_claimed_once_and_sealed_when_free() {
        let mut p = paid(Kind::Lucky, 1_000, 3);
        p.strategy = Strategy::Cursor;
        let shares = preallocated_shares(&p);
        assert_eq!(shares.iter().map(|s| s.amount_fen.0).sum::<u64>(), 1_000);
        let ShareClaimed::New { share, claim } = claim_share(&shares[0], "a", T0).unwrap() else { panic!() };
        assert_eq!((claim.seq, claim.amount_fen), (1, shares[0].amount_fen));
        assert_eq!(claim_share(&share, "a", T0), Ok(ShareClaimed::Already(claim.clone())));
        assert!(matches!(claim_share(&share, "b", T0), Err(Error::Internal(_))));
        assert_eq!(seal_share(&share, "s"), None, "a claimed share is never sealed");
        let sealed = seal_share(&shares[1], "s").unwrap();
        assert_eq!(claim_share(&sealed, "b", T0), Err(Error::Expired));
        let third = seal_share(&shares[2], "s").unwrap();
        let later = T0.plus_seconds(5 + TTL);
        let Swept::Refunded(done) = finalize(&p, &[share, sealed, third], later, "s") else { panic!() };
        assert_eq!(done.claims, vec![claim.clone()]);
        assert_eq!(done.refund_fen, Some(Fen(1_000 - claim.amount_fen.0)));
        assert!(done.invariant_violations().is_empty(), "{:?}", done.invariant_violations());
    }

    #[test]
    fn collecting_claims_marks_a_full_cursor_packet_exhausted() {
        let mut p = paid(Kind::Fixed, 300, 3);
        p.strategy = Strategy::Cursor;
        let claimed: Vec<Share> = preallocated_shares(&p)
            .iter()
            .zip(["x", "y", "z"])
            .map(|(s, u)| match claim_share(s, u, T0).unwrap() {
                ShareClaimed::New { share, .. } => share,
                other => panic!("{other:?}"),
            })
            .collect();
        let c = collect(&p, &claimed[..2], "settle").unwrap();
        assert_eq!((c.status, c.remaining_count, c.remaining_fen), (Status::Active, 1, Fen(100)));
        assert_eq!(collect(&c, &claimed[..2], "settle"), None, "idempotent");
        let full = collect(&c, &claimed, "settle").unwrap();
        assert_eq!(full.status, Status::Exhausted);
        assert!(full.invariant_violations().is_empty());
    }

    #[test]
    fn settle_progress_only_moves_forward() {
        let mut rng = SplitMix64(8);
        let (p, _) = open_new(&paid(Kind::Lucky, 100, 2), "a", &mut rng);
        let s = record_settled(&p, &[1], false, "settle").unwrap();
        assert_eq!(s.settled, [1]);
        assert_eq!(record_settled(&s, &[], false, "settle"), None);
        assert_eq!(record_settled(&s, &[1], true, "settle"), None, "no refund to settle");
        assert_eq!(record_settled(&s, &[2], false, "settle"), None, "no claim 2 in the record");
    }

    /// Regression (review, defect 1): progress was a prefix length of the
    /// claims sorted by share number, so a lower share claimed after a higher
    /// one was credited counted as settled without ever being credited.
    #[test]
    fn a_lower_share_claimed_after_settle_is_not_counted_as_settled() {
        let mut p = paid(Kind::Fixed, 300, 3);
        p.strategy = Strategy::Cursor;
        let claimed = |k: usize, user: &str| match claim_share(&preallocated_shares(&p)[k], user, T0).unwrap() {
            ShareClaimed::New { share, .. } => share,
            other => panic!("{other:?}"),
        };
        let (third, first) = (claimed(2, "c"), claimed(0, "a"));
        let with_third = collect(&p, std::slice::from_ref(&third), "settle-1").unwrap();
        let settled = record_settled(&with_third, &[3], false, "settle-1").unwrap();
        assert!(settled.is_settled());
        let both = collect(&settled, &[first, third], "settle-2").unwrap();
        assert_eq!(both.claims.iter().map(|c| c.seq).collect::<Vec<_>>(), [1, 3]);
        assert!(!both.is_settled(), "share 1 is not credited yet");
        assert!(!both.is_claim_settled(1) && both.is_claim_settled(3));
        assert!(record_settled(&both, &[1], false, "settle-2").unwrap().is_settled());
    }
}
