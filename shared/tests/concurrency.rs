//! Real OS threads racing on one packet through the in-memory store.

mod common;

use common::*;
use hongbao::alloc::Kind;
use hongbao::ops::OpenView;
use hongbao::store::faulty::{Faults, FaultyStore};
use hongbao::store::memory::MemoryStore;
use hongbao::{Config, Error, PacketId, Store};
use std::collections::HashMap;
use std::sync::Barrier;

/// Each client's user and final answer.
type Answers = Vec<(String, Result<OpenView, Error>)>;

/// `threads` clients race to open a packet of `count` shares; clients
/// `0..doubled` have a twin thread with the same user id. Busy answers are
/// retried the next second, as a client honouring Retry-After would.
/// Returns the packet, each client's final answer, and how many 429s were seen.
fn race<S: Store + Sync>(
    store: &S,
    config: &Config,
    count: u32,
    total: u64,
    threads: usize,
    doubled: usize,
) -> (PacketId, Answers, u64) {
    let id = paid_packet(store, config, T0, "sender", Kind::Lucky, total, count);
    let barrier = Barrier::new(threads);
    let results = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let (id, barrier) = (&id, &barrier);
                let user = format!("user{}", if i >= threads - doubled { i - (threads - doubled) } else { i });
                scope.spawn(move || {
                    barrier.wait();
                    let mut second = 0;
                    loop {
                        let env = sleeping_env(T0.plus_seconds(second), i as u64 * 7919 + second as u64);
                        match grab_and_open(store, config, env, id, &user) {
                            Err(Error::Busy { retry_after_seconds }) => second += i64::from(retry_after_seconds),
                            other => return (user, other, second as u64),
                        }
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>()
    });
    let busy = results.iter().map(|(_, _, b)| b).sum();
    (id, results.into_iter().map(|(u, r, _)| (u, r)).collect(), busy)
}

fn assert_exact_outcome<S: Store>(
    store: &S,
    id: &PacketId,
    count: u32,
    total: u64,
    results: &[(String, Result<OpenView, Error>)],
) {
    let mut claims: HashMap<&str, &OpenView> = HashMap::new();
    for (user, result) in results {
        match result {
            Ok(opened) => {
                assert_eq!(&opened.claim.user, user);
                // A twin thread of the same user must see the very same claim.
                if let Some(previous) = claims.insert(user, opened) {
                    assert_eq!(previous.claim, opened.claim, "one claim per user");
                }
            }
            Err(Error::Exhausted) => {}
            Err(other) => panic!("{user}: unexpected {other:?}"),
        }
    }
    assert_eq!(claims.len(), count as usize, "exactly count claims");
    assert_eq!(claims.values().map(|o| o.claim.amount_fen).sum::<u64>(), total, "sum == total");
    let mut seqs: Vec<u32> = claims.values().map(|o| o.claim.seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=count).collect::<Vec<_>>());
    for (u, r) in results {
        if let (Err(e), true) = (r, claims.contains_key(u.as_str())) {
            panic!("{u} holds a claim but one of its clients was told {e:?}");
        }
    }
    let losers = results.iter().filter(|(u, r)| r.is_err() && !claims.contains_key(u.as_str())).count();
    assert!(losers > 0 && results.iter().all(|(u, r)| r.is_ok() || !claims.contains_key(u.as_str())));
    let view = svc(store, &config(), T0).query(id, "sender").unwrap();
    assert_eq!(view.claims.len(), count as usize);
    assert_eq!(view.claims.iter().map(|c| c.amount_fen).sum::<u64>(), total);
    assert_eq!(view.status, "exhausted");
    assert_invariants(&load(store, id));
}

#[test]
fn one_claim_per_user_under_contention() {
    let (store, config) = (MemoryStore::new(), config());
    let (id, results, _) = race(&store, &config, 100, 10_000, 320, 40);
    assert_exact_outcome(&store, &id, 100, 10_000, &results);
}

#[test]
fn cursor_strategy_one_claim_per_user_under_contention() {
    let (store, config) = (MemoryStore::new(), cursor_config());
    let (id, results, _) = race(&store, &config, 100, 10_000, 320, 40);
    assert_exact_outcome(&store, &id, 100, 10_000, &results);
    assert_eq!(load(&store, &id).strategy, hongbao::record::Strategy::Cursor);
    // No two users ever contend: one swap per claim (and one for the
    // payment). Only a user's own twin request may race it for the share
    // the cursor gave that user, failing at most one swap per twin pair.
    let extra = store.swaps() - (100 + 1);
    assert!(extra <= 40, "{extra} swaps repeated; at most one per twin pair (40)");
}

#[test]
fn cursor_strategy_is_safe_when_every_swap_lies_and_with_spin_sqlite() {
    let store = FaultyStore::new(MemoryStore::spin_sqlite(), Faults { swaps_lie: true, ..Faults::default() });
    let config = cursor_config();
    let (id, results, _) = race(&store, &config, 60, 6_000, 200, 20);
    assert_exact_outcome(store.inner(), &id, 60, 6_000, &results);
}

#[test]
fn contention_is_safe_with_spin_sqlite_compare_and_set() {
    let (store, config) = (MemoryStore::spin_sqlite(), config());
    let (id, results, _) = race(&store, &config, 50, 888, 200, 30);
    assert_exact_outcome(&store, &id, 50, 888, &results);
}

#[test]
fn contention_is_safe_when_every_swap_lies() {
    // Spin 4.0.2's Redis store: each swap writes, then reports cas-failed.
    let store = FaultyStore::new(MemoryStore::new(), Faults { swaps_lie: true, ..Faults::default() });
    let config = config();
    let (id, results, _) = race(&store, &config, 60, 6_000, 200, 20);
    assert_exact_outcome(store.inner(), &id, 60, 6_000, &results);
}

#[test]
fn load_shedding_under_contention_claims_nothing_twice() {
    let store = MemoryStore::new();
    let mut config = config();
    config.admission_limit = 40;
    let (id, results, busy) = race(&store, &config, 30, 3_000, 150, 10);
    assert!(busy > 0, "the bound was reached");
    assert_exact_outcome(&store, &id, 30, 3_000, &results);
}

#[test]
fn concurrent_sweeps_refund_and_credit_exactly_once() {
    concurrent_sweeps(config());
}

#[test]
fn cursor_strategy_concurrent_sweeps_refund_and_credit_exactly_once() {
    concurrent_sweeps(cursor_config());
}

fn concurrent_sweeps(config: Config) {
    let store = MemoryStore::new();
    let mut expected_refund = 0;
    let mut ids = Vec::new();
    for p in 0..20u64 {
        let id = paid_packet(&store, &config, T0.plus_seconds(p as i64), "sender", Kind::Lucky, 1_000 + p, 5);
        for u in 0..(p % 6) {
            grab_and_open(&store, &config, env(T0.plus_seconds(30), p * 10 + u), &id, &format!("u{u}")).ok();
        }
        // The view, not the record: a cursor packet's claims are in its shares.
        let view = svc(&store, &config, T0.plus_seconds(40)).query(&id, "sender").unwrap();
        expected_refund += view.remaining_fen;
        ids.push(id);
    }
    let expiry = T0.plus_seconds(DAY + 60);
    let (refunded, refund_fen, credited, credited_fen) = std::thread::scope(|scope| {
        let sweeps: Vec<_> = (0..8u64)
            .map(|i| {
                let (store, config) = (&store, &config);
                scope.spawn(move || {
                    let (mut r, mut rf, mut c, mut cf) = (0, 0, 0, 0);
                    for round in 0..3 {
                        let mut s = hongbao::Service::new(store, config, sleeping_env(expiry, i * 100 + round));
                        let e = s.expire().unwrap();
                        let t = s.settle().unwrap();
                        (r, rf, c, cf) = (r + e.refunded, rf + e.refund_fen, c + t.credited, cf + t.credited_fen);
                    }
                    (r, rf, c, cf)
                })
            })
            .collect();
        sweeps
            .into_iter()
            .map(|h| h.join().unwrap())
            .fold((0, 0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2, a.3 + b.3))
    });
    // A last settle picks up anything credited by a run that ended before a refund landed.
    let last = svc(&store, &config, expiry).settle().unwrap();
    let packets: Vec<_> = ids.iter().map(|id| load(&store, id)).collect();
    let total: u64 = packets.iter().map(|p| p.total_fen.0).sum();
    let claims: u64 = packets.iter().map(|p| p.claims.len() as u64).sum();
    assert_eq!(refund_fen, expected_refund, "each remainder refunded once");
    assert_eq!(refunded, packets.iter().filter(|p| p.refund_fen.is_some()).count() as u64);
    assert_eq!(credited + last.credited, claims + refunded, "each claim and refund credited once");
    assert_eq!(credited_fen + last.credited_fen, total);
    packets.iter().for_each(assert_invariants);
    let reconciled = svc(&store, &config, expiry).reconcile(T0.day()).unwrap();
    assert_eq!(reconciled.mismatches, vec![]);
    assert_eq!(reconciled.credited_fen, total);
}
