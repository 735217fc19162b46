//! Crash safety: for every operation, the process "dies" before each of its
//! store calls in turn (nothing after that point happens); then the client
//! retries, the sweeps run, and the books are audited: every money invariant
//! holds, every claim and refund is credited exactly once, the user records
//! are complete. Also: swaps that fail spuriously, and swaps that write but
//! report failure (Spin 4.0.2's Redis store).

mod common;

use common::*;
use hongbao::alloc::Kind;
use hongbao::record::Status;
use hongbao::store::faulty::{Faults, FaultyStore};
use hongbao::store::memory::MemoryStore;
use hongbao::{Config, Error, PacketId, Store, Timestamp};
use std::collections::HashMap;

const EXPIRY: Timestamp = Timestamp(T0.0 + DAY + 120);

/// One operation under test: how to set the world up, the operation itself,
/// and what a client (or the payment system) does when it got no answer.
struct Scenario {
    name: &'static str,
    setup: fn(&MemoryStore, &Config) -> Vec<PacketId>,
    op: fn(&dyn DynStore, &Config, &[PacketId]) -> Result<(), Error>,
    retry: fn(&MemoryStore, &Config, &[PacketId]) -> Vec<PacketId>,
}

/// Object-safe view of a store for the scenarios (the faulty wrapper or the
/// plain one), so one scenario table covers both.
trait DynStore {
    fn run(&self, f: &mut dyn FnMut(&FaultyStore<&MemoryStore>));
}

impl DynStore for FaultyStore<&MemoryStore> {
    fn run(&self, f: &mut dyn FnMut(&FaultyStore<&MemoryStore>)) {
        f(self)
    }
}

fn with<T>(store: &dyn DynStore, f: impl FnOnce(&FaultyStore<&MemoryStore>) -> T) -> T {
    let mut f = Some(f);
    let mut out = None;
    store.run(&mut |s| out = Some((f.take().unwrap())(s)));
    out.unwrap()
}

fn wrap_id(store: &MemoryStore, config: &Config, rid: &str) -> Result<PacketId, Error> {
    let (_, view) = svc(store, config, T0).wrap("sender", &wrap_request(rid, Kind::Lucky, 10_000, 4))?;
    Ok(PacketId::parse(&view.id).unwrap())
}

fn pay(store: &impl Store, config: &Config, id: &PacketId) -> Result<(), Error> {
    svc(store, config, T0.plus_seconds(1)).pay(id, &payment(id, &format!("pay-{id}"), 10_000)).map(drop)
}

/// The plain store under a test store: what a grab saw, read without
/// counting as one of the operation's store calls.
trait Plain {
    fn plain(&self) -> &MemoryStore;
}

impl Plain for MemoryStore {
    fn plain(&self) -> &MemoryStore {
        self
    }
}

impl Plain for FaultyStore<&MemoryStore> {
    fn plain(&self) -> &MemoryStore {
        self.inner()
    }
}

/// Opens with a ticket as grab issues it (carrying the packet's facts).
fn open_as(store: &(impl Store + Plain), config: &Config, id: &PacketId, user: &str) -> Result<(), Error> {
    let ticket = ticket_as_grab_issues(store.plain(), config, id, user, T0.plus_seconds(70));
    svc(store, config, T0.plus_seconds(10)).open(id, user, &ticket).map(drop)
}

std::thread_local! {
    /// Retried opens answered 429 busy (counted per test thread).
    static BUSY_RETRIES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// A client retrying its open after a crash. With the cursor strategy, a
/// first attempt that died between its marker and its share mapping leaves
/// the user answered 429 busy (taking another share could give them two);
/// one that failed there gave its count back, and the share the cursor gave
/// it is stranded, so the retry may find the packet exhausted. Either way
/// the user must hold no claim, and the audit checks the share is refunded.
fn retry_open(store: &MemoryStore, config: &Config, id: &PacketId, user: &str) {
    match open_as(store, config, id, user) {
        Ok(()) => {}
        Err(Error::Busy { .. } | Error::Exhausted)
            if config.open_strategy == hongbao::record::Strategy::Cursor.into() =>
        {
            BUSY_RETRIES.set(BUSY_RETRIES.get() + 1);
            let view = svc(store, config, T0).query(id, "sender").unwrap();
            assert!(view.claims.iter().all(|c| c.user != user), "busy, yet {user} holds a claim");
        }
        Err(e) => panic!("open retry: {e:?}"),
    }
}

fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "wrap",
            setup: |_, _| vec![],
            op: |s, c, _| {
                with(s, |s| svc(s, c, T0).wrap("sender", &wrap_request("r1", Kind::Lucky, 10_000, 4)).map(drop))
            },
            retry: |store, config, _| {
                // The client retries with the same request id; if the crash
                // spent it (429 busy, whose winner never wrote its record),
                // the client gives up on it and uses a new one.
                let id = match wrap_id(store, config, "r1") {
                    Ok(id) => id,
                    Err(Error::Busy { .. }) => wrap_id(store, config, "r2").unwrap(),
                    Err(e) => panic!("wrap retry: {e:?}"),
                };
                pay(store, config, &id).unwrap();
                open_as(store, config, &id, "a").unwrap();
                vec![id]
            },
        },
        Scenario {
            name: "pay",
            setup: |store, config| vec![wrap_id(store, config, "r1").unwrap()],
            op: |s, c, ids| with(s, |s| pay(s, c, &ids[0])),
            retry: |store, config, ids| {
                pay(store, config, &ids[0]).unwrap(); // the payment system retries
                open_as(store, config, &ids[0], "a").unwrap();
                ids.to_vec()
            },
        },
        Scenario {
            name: "open",
            setup: |store, config| {
                let id = paid_packet(store, config, T0, "sender", Kind::Lucky, 10_000, 4);
                open_as(store, config, &id, "a").unwrap();
                vec![id]
            },
            op: |s, c, ids| with(s, |s| open_as(s, c, &ids[0], "x")),
            retry: |store, config, ids| {
                retry_open(store, config, &ids[0], "x");
                ids.to_vec()
            },
        },
        Scenario {
            name: "open (last share)",
            setup: |store, config| {
                let id = paid_packet(store, config, T0, "sender", Kind::Lucky, 10_000, 2);
                open_as(store, config, &id, "a").unwrap();
                vec![id]
            },
            op: |s, c, ids| with(s, |s| open_as(s, c, &ids[0], "x")),
            retry: |store, config, ids| {
                retry_open(store, config, &ids[0], "x");
                ids.to_vec()
            },
        },
        Scenario {
            name: "expire",
            setup: |store, config| {
                let id = paid_packet(store, config, T0, "sender", Kind::Lucky, 10_000, 4);
                open_as(store, config, &id, "a").unwrap();
                vec![id]
            },
            op: |s, c, _| with(s, |s| svc(s, c, EXPIRY).expire().map(drop)),
            retry: |_, _, ids| ids.to_vec(),
        },
        Scenario {
            name: "settle",
            setup: |store, config| {
                let id = paid_packet(store, config, T0, "sender", Kind::Lucky, 10_000, 4);
                open_as(store, config, &id, "a").unwrap();
                open_as(store, config, &id, "b").unwrap();
                svc(store, config, EXPIRY).expire().unwrap();
                vec![id]
            },
            op: |s, c, _| with(s, |s| svc(s, c, EXPIRY).settle().map(drop)),
            retry: |_, _, ids| ids.to_vec(),
        },
    ]
}

/// The audit after recovery: sweeps run (twice, to prove idempotency), then
/// every packet, wallet, received list and the reconciliation must agree.
fn audit(store: &MemoryStore, config: &Config, ids: &[PacketId], context: &str) {
    for _ in 0..2 {
        svc(store, config, EXPIRY).expire().unwrap();
        svc(store, config, EXPIRY).settle().unwrap();
    }
    assert_eq!(svc(store, config, EXPIRY).settle().unwrap().credited, 0, "{context}: nothing credited twice");
    let mut expected_wallets: HashMap<String, u64> = HashMap::new();
    for id in ids {
        let p = load(store, id);
        assert!(p.invariant_violations().is_empty(), "{context}: {:?}", p.invariant_violations());
        assert!(matches!(p.status, Status::Refunded | Status::Expired), "{context}: {:?}", p.status);
        for claim in &p.claims {
            *expected_wallets.entry(claim.user.clone()).or_default() += claim.amount_fen.0;
            let received = svc(store, config, EXPIRY).received(&claim.user, claim.claimed_at.day()).unwrap();
            assert_eq!(received.items.iter().filter(|i| i.packet_id == p.id).count(), 1, "{context}: received record");
        }
        if let Some(refund) = p.refund_fen {
            *expected_wallets.entry(p.sender.clone()).or_default() += refund.0;
        }
        let sent = svc(store, config, EXPIRY).sent(&p.sender, id.day()).unwrap();
        assert_eq!(sent.items.iter().filter(|i| i.packet_id == p.id).count(), 1, "{context}: sent record");
    }
    for (user, expected) in &expected_wallets {
        let wallet = svc(store, config, EXPIRY).wallet(user).unwrap();
        assert_eq!(wallet.balance_fen, *expected, "{context}: wallet of {user}");
        let refunds = wallet.entries.iter().filter(|e| e.kind == "refund").count();
        assert!(refunds <= ids.len(), "{context}");
    }
    let report = svc(store, config, EXPIRY).reconcile(T0.day()).unwrap();
    assert_eq!(report.mismatches, vec![], "{context}");
    assert_eq!(report.outstanding_fen, 0, "{context}");
    assert_eq!(report.claimed_fen + report.refunded_fen, report.total_fen, "{context}");
    assert_eq!(report.credited_fen, report.total_fen, "{context}: credited = claimed + refunded");
    assert!(store.poisoned().is_none(), "{context}: counter/value families mixed");
}

fn configs() -> Vec<(&'static str, Config)> {
    vec![("cas", config()), ("cursor", cursor_config())]
}

fn calls_of(scenario: &Scenario, config: &Config) -> u64 {
    let store = MemoryStore::new();
    let ids = (scenario.setup)(&store, config);
    let counting = FaultyStore::new(&store, Faults::default());
    (scenario.op)(&counting, config, &ids).unwrap();
    counting.calls()
}

#[test]
fn every_operation_survives_a_crash_at_every_store_call() {
    for (strategy, config) in configs() {
        for scenario in scenarios() {
            let calls = calls_of(&scenario, &config);
            assert!(calls >= 3, "{}: {calls} calls", scenario.name);
            BUSY_RETRIES.set(0);
            for crash_at in 1..=calls {
                let context = format!("{strategy}: {} crashed before call {crash_at} of {calls}", scenario.name);
                let store = MemoryStore::new();
                let ids = (scenario.setup)(&store, &config);
                let faulty = FaultyStore::new(&store, Faults { crash_at: Some(crash_at), ..Faults::default() });
                let answered = (scenario.op)(&faulty, &config, &ids);
                assert!(faulty.crashed(), "{context}: the crash was not reached");
                // A sweep answers even after a failed call (it skips the SET,
                // or the packet, and reports it); every other operation fails.
                if !matches!(scenario.name, "expire" | "settle") {
                    assert!(answered.is_err(), "{context}: answered as if nothing failed");
                }
                let ids = (scenario.retry)(&store, &config, &ids);
                audit(&store, &config, &ids, &context);
            }
            // Only a crash between the open marker and the share mapping (before
            // the cursor's increment, or before the mapping's write) leaves
            // the user busy; from the mapping on, the retry finishes the claim.
            assert!(
                BUSY_RETRIES.get() <= 2,
                "{strategy}: {}: {} crash points left the user busy",
                scenario.name,
                BUSY_RETRIES.get()
            );
        }
    }
}

#[test]
fn every_operation_survives_a_transient_failure_of_any_call() {
    for (strategy, config) in configs() {
        for scenario in scenarios() {
            let calls = calls_of(&scenario, &config);
            for failing in 1..=calls {
                let context = format!("{strategy}: {}: call {failing} of {calls} failed", scenario.name);
                let store = MemoryStore::new();
                let ids = (scenario.setup)(&store, &config);
                let faulty = FaultyStore::new(&store, Faults { fail_calls: vec![failing], ..Faults::default() });
                let result = (scenario.op)(&faulty, &config, &ids);
                // A failed store call surfaces as 503 (or the op tolerated it).
                if let Err(e) = &result {
                    assert_eq!(e.status(), 503, "{context}: {e:?}");
                }
                let ids = (scenario.retry)(&store, &config, &ids);
                audit(&store, &config, &ids, &context);
            }
        }
    }
}

#[test]
fn swap_that_wrote_but_failed_is_recognised() {
    for (strategy, config) in configs() {
        for scenario in scenarios() {
            let store = MemoryStore::new();
            let ids = (scenario.setup)(&store, &config);
            let lying = FaultyStore::new(&store, Faults { swaps_lie: true, ..Faults::default() });
            (scenario.op)(&lying, &config, &ids).unwrap_or_else(|e| panic!("{strategy}: {}: {e:?}", scenario.name));
            let ids = (scenario.retry)(&store, &config, &ids);
            audit(&store, &config, &ids, &format!("{strategy}: {}", scenario.name));
        }
    }
}

#[test]
fn lying_swaps_do_not_double_count_refunds_or_claims() {
    let (store, config) = (MemoryStore::new(), config());
    let id = paid_packet(&store, &config, T0, "sender", Kind::Lucky, 10_000, 4);
    let lying = FaultyStore::new(&store, Faults { swaps_lie: true, ..Faults::default() });
    open_as(&lying, &config, &id, "a").unwrap();
    open_as(&lying, &config, &id, "a").unwrap();
    assert_eq!(load(&store, &id).claims.len(), 1);
    let report = svc(&lying, &config, EXPIRY).expire().unwrap();
    let refund = load(&store, &id).refund_fen.unwrap().0;
    assert_eq!((report.refunded, report.refund_fen), (1, refund), "our own lied-about write is counted once");
    let settled = svc(&lying, &config, EXPIRY).settle().unwrap();
    assert_eq!((settled.credited, settled.credited_fen), (2, 10_000));
    audit(&store, &config, &[id], "lying swaps");
}

#[test]
fn spurious_swap_failures_are_retried() {
    let (store, config) = (MemoryStore::new(), config());
    let id = paid_packet(&store, &config, T0, "sender", Kind::Fixed, 10_000, 4);
    let flaky = FaultyStore::new(&store, Faults { spurious_swap_failures: vec![1, 2, 3], ..Faults::default() });
    open_as(&flaky, &config, &id, "a").unwrap();
    assert_eq!(load(&store, &id).claims.len(), 1);
    assert!(flaky.calls() > 6, "retried after the spurious failures");
}

#[test]
fn contention_that_never_ends_answers_busy_and_claims_nothing() {
    let (store, config) = (MemoryStore::new(), config());
    let id = paid_packet(&store, &config, T0, "sender", Kind::Fixed, 10_000, 4);
    let hopeless =
        FaultyStore::new(&store, Faults { spurious_swap_failures: (1..=1_000).collect(), ..Faults::default() });
    let result = open_as(&hopeless, &config, &id, "a");
    assert_eq!(result, Err(Error::Busy { retry_after_seconds: 1 }));
    assert!(load(&store, &id).claims.is_empty());
}
