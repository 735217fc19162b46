//! The retention purge: a closed day past the retention loses every key of
//! its packets and nothing else, keeps its reconciliation report, refuses
//! while money still moves, survives a crash before any of its store calls,
//! and races reconcile and a second purge without a wrong answer.

mod common;

use common::*;
use hongbao::alloc::Kind;
use hongbao::ops::ReconcileReport;
use hongbao::store::faulty::{Faults, FaultyStore};
use hongbao::store::memory::MemoryStore;
use hongbao::{Config, Error, PacketId, Service, Store, Timestamp, keys};
use std::collections::BTreeSet;

/// The first moment T0's day may be purged: the start of the 32nd day after it.
const PURGEABLE: Timestamp = Timestamp(1_795_305_600 + 32 * DAY);

/// A day of packets: cas and cursor packets partly and fully opened, one
/// left unpaid, refunded at expiry; then a packet of the next day. Settled
/// unless `settle` is false. Returns the day's packet ids.
fn a_day(store: &MemoryStore, config: &Config, settle: bool) -> Vec<PacketId> {
    let mut ids = Vec::new();
    let cursor = cursor_config();
    for (n, count) in [(1, 3), (2, 5), (3, 120)] {
        let config = if count > 100 { &cursor } else { config };
        let id = paid_packet(store, config, T0.plus_seconds(n), "alice", Kind::Lucky, 100 * u64::from(count), count);
        for u in 0..count.min(4) + n as u32 {
            let _ = grab_and_open(store, config, env(T0.plus_seconds(60), u64::from(u)), &id, &format!("u{u}"));
        }
        ids.push(id);
    }
    let (_, unpaid) =
        svc(store, config, T0.plus_seconds(9)).wrap("bob", &wrap_request("unpaid", Kind::Fixed, 300, 3)).unwrap();
    ids.push(PacketId::parse(&unpaid.id).unwrap());
    let next_day = paid_packet(store, config, T0.plus_seconds(DAY), "carol", Kind::Fixed, 200, 2);
    grab_and_open(store, config, env(T0.plus_seconds(DAY + 5), 7), &next_day, "u1").unwrap();
    let later = T0.plus_seconds(3 * DAY);
    svc(store, config, later).expire().unwrap();
    if settle {
        svc(store, config, later).settle().unwrap();
    }
    ids
}

fn keys_of(store: &impl Store) -> BTreeSet<String> {
    store.list_keys().unwrap().into_iter().collect()
}

/// What users see of their history: wallets, and the day's received lists.
fn histories(store: &MemoryStore, config: &Config) -> Vec<serde_json::Value> {
    let s = svc(store, config, PURGEABLE);
    let users = ["alice", "u0", "u3"];
    let wallets = users.map(|u| serde_json::to_value(s.wallet(u).unwrap()).unwrap());
    let received = users.map(|u| serde_json::to_value(s.received(u, T0.day()).unwrap()).unwrap());
    wallets.into_iter().chain(received).collect()
}

/// The report a purge keeps: reconcile's, marked purged.
fn as_kept(mut report: ReconcileReport) -> ReconcileReport {
    report.purged = true;
    report
}

#[test]
fn a_closed_day_past_the_retention_loses_its_packets_and_keeps_its_report() {
    let (store, config) = (memory(), config());
    let ids = a_day(&store, &config, true);
    let day = T0.day();
    let at = |now| svc(&store, &config, now);
    let report = at(PURGEABLE).reconcile(day).unwrap();
    assert_eq!((report.packets, report.unfinished, report.outstanding_fen, report.purged), (4, 0, 0, false));
    assert!(report.mismatches.is_empty() && report.refunded_fen > 0 && report.claimed_fen > 0, "{report:?}");
    let next_day = at(PURGEABLE).reconcile(day.minus_days(-1)).unwrap();
    let history = histories(&store, &config);

    // A day inside the retention is kept, whatever the request says.
    let early = at(PURGEABLE.plus_seconds(-1)).purge(day);
    assert!(matches!(&early, Err(Error::InvalidArgument(m)) if m.contains("31 days")), "{early:?}");
    assert_eq!(at(PURGEABLE.plus_seconds(-1)).newest_purgeable_day(), day.minus_days(1));

    // Before the purge: a grab of a packet this old is expired and writes nothing.
    let quiet = keys_of(&store);
    for id in &ids {
        assert_eq!(at(PURGEABLE).grab(id, "u9").unwrap_err(), Error::Expired, "{id}");
    }
    assert_eq!(keys_of(&store), quiet);

    let before = keys_of(&store);
    let doomed: BTreeSet<String> = before.iter().filter(|k| keys::of_day(k, day)).cloned().collect();
    assert!(doomed.len() > 100, "the cursor packet's shares alone are 120 keys: {}", doomed.len());
    let purged = at(PURGEABLE).purge(day).unwrap();
    assert_eq!(purged.deleted_keys, doomed.len() as u64);
    assert_eq!(purged.report, as_kept(report.clone()));
    let after = keys_of(&store);
    let expected: BTreeSet<String> = before.difference(&doomed).cloned().chain([keys::kept_report(day)]).collect();
    assert_eq!(after, expected, "only the day's keys go, and the report is kept");

    // What users and the operator see afterwards.
    assert_eq!(at(PURGEABLE).reconcile(day).unwrap(), as_kept(report));
    assert_eq!(at(PURGEABLE).reconcile(day.minus_days(-1)).unwrap(), next_day);
    assert_eq!(histories(&store, &config), history, "wallets and received lists stay");
    let quiet = keys_of(&store);
    for id in &ids {
        assert_eq!(at(PURGEABLE).query(id, "alice").unwrap_err(), Error::NotFound);
        assert_eq!(at(PURGEABLE).grab(id, "u9").unwrap_err(), Error::NotFound);
    }
    assert_eq!(keys_of(&store), quiet, "a grab or query of a purged packet writes nothing");

    // Again, even after the retention was raised: nothing left to delete, the same report.
    let mut longer = config.clone();
    longer.retention_days = 90;
    let again = Service::new(&store, &longer, env(PURGEABLE.plus_seconds(DAY), 3)).purge(day).unwrap();
    assert_eq!((again.deleted_keys, again.report), (0, purged.report));
    assert!(at(PURGEABLE).sent("alice", day).unwrap().items.is_empty(), "sent lists go with their packets");
}

#[test]
fn a_day_whose_money_still_moves_is_refused_and_keeps_every_key() {
    let (store, config) = (memory(), config());
    a_day(&store, &config, false);
    // (Reconcile reads list lengths with `increment(key, 0)`, which creates
    // them: read once before, the refusal must write nothing.)
    svc(&store, &config, PURGEABLE).reconcile(T0.day()).unwrap();
    let before = keys_of(&store);
    let refused = svc(&store, &config, PURGEABLE).purge(T0.day());
    assert!(matches!(&refused, Err(Error::DayNotClosed(m)) if m.contains("3 unfinished")), "{refused:?}");
    assert_eq!(refused.unwrap_err().status(), 409);
    assert_eq!(keys_of(&store), before);
    // Settled (by a sweep that still looks back that far), it goes.
    let settled_late = svc(&store, &config, T0.plus_seconds(3 * DAY)).settle().unwrap();
    assert!(settled_late.credited > 0);
    assert!(svc(&store, &config, PURGEABLE).purge(T0.day()).is_ok());
}

#[test]
fn a_purge_that_dies_before_any_store_call_is_finished_by_the_next() {
    let config = config();
    let day = T0.day();
    let clean = memory();
    a_day(&clean, &config, true);
    let counting = FaultyStore::new(&clean, Faults::default());
    Service::new(&counting, &config, env(PURGEABLE, 1)).purge(day).unwrap();
    let calls = counting.calls();
    assert!(calls > 100, "{calls}");

    for crash_at in 1..=calls {
        // (Each world splits its packets its own way: compare within it.)
        let store = memory();
        a_day(&store, &config, true);
        let report = svc(&store, &config, PURGEABLE).reconcile(day).unwrap();
        let purged: BTreeSet<String> = keys_of(&store).into_iter().filter(|k| !keys::of_day(k, day)).collect();
        let dying = FaultyStore::new(&store, Faults { crash_at: Some(crash_at), ..Faults::default() });
        assert!(Service::new(&dying, &config, env(PURGEABLE, 1)).purge(day).is_err());
        // Meanwhile reconcile tells the whole day or the kept report.
        let seen = svc(&store, &config, PURGEABLE).reconcile(day).unwrap();
        assert!(seen == report || seen == as_kept(report.clone()), "crash at {crash_at}: {seen:?}");
        let rerun = svc(&store, &config, PURGEABLE).purge(day).unwrap();
        assert_eq!(rerun.report, as_kept(report.clone()), "crash at {crash_at}");
        let left = keys_of(&store);
        assert_eq!(left.len(), purged.len() + 1, "crash at {crash_at}");
        assert!(left.contains(&keys::kept_report(day)) && purged.is_subset(&left), "crash at {crash_at}");
    }
}

#[test]
fn concurrent_purges_and_reconciles_agree_on_the_day() {
    let config = config();
    let day = T0.day();
    for round in 0..20 {
        let store = memory();
        a_day(&store, &config, true);
        let report = svc(&store, &config, PURGEABLE).reconcile(day).unwrap();
        let doomed = keys_of(&store).iter().filter(|k| keys::of_day(k, day)).count() as u64;
        let (store, config) = (&store, &config);
        let answers = std::thread::scope(|scope| {
            let purges: Vec<_> = (0..2)
                .map(|n| scope.spawn(move || Service::new(store, config, sleeping_env(PURGEABLE, n)).purge(day)))
                .collect();
            let reconciles: Vec<_> = (0..2)
                .map(|n| {
                    scope.spawn(move || {
                        let mut seen = Vec::new();
                        loop {
                            let r = Service::new(store, config, env(PURGEABLE, n)).reconcile(day).unwrap();
                            let done = r.purged;
                            seen.push(r);
                            if done {
                                return seen;
                            }
                        }
                    })
                })
                .collect();
            let purged: Vec<_> = purges.into_iter().map(|p| p.join().unwrap().unwrap()).collect();
            let seen: Vec<_> = reconciles.into_iter().flat_map(|r| r.join().unwrap()).collect();
            (purged, seen)
        });
        let (purged, seen) = answers;
        for p in &purged {
            assert_eq!(p.report, as_kept(report.clone()), "round {round}");
        }
        assert!(purged.iter().map(|p| p.deleted_keys).sum::<u64>() >= doomed, "round {round}");
        for r in seen {
            assert!(r == report || r == as_kept(report.clone()), "round {round}: {r:?}");
        }
        // A reconcile that read the day while it was deleted may have
        // recreated index lengths (at 0) by reading them; the next run
        // deletes those, and nothing else is left.
        let left: Vec<String> = keys_of(store).into_iter().filter(|k| keys::of_day(k, day)).collect();
        assert!(left.iter().all(|k| k.ends_with("/len") && store.increment(k, 0) == Ok(0)), "round {round}: {left:?}");
        assert_eq!(svc(store, config, PURGEABLE).purge(day).unwrap().deleted_keys, left.len() as u64);
        assert!(keys_of(store).iter().all(|k| !keys::of_day(k, day)), "round {round}");
    }
}

#[test]
fn a_report_kept_before_a_field_existed_still_reads() {
    let (store, config) = (memory(), config());
    let day = T0.day();
    store.set(&keys::kept_report(day), br#"{"day":"2026-11-22","packets":2,"total_fen":300,"purged":true}"#).unwrap();
    let kept = svc(&store, &config, PURGEABLE).reconcile(day).unwrap();
    assert_eq!((kept.packets, kept.total_fen, kept.unfinished, kept.purged), (2, 300, 0, true));
}
