//! The retention purge: a closed day past the retention loses every key of
//! its packets and nothing else, keeps its reconciliation report, refuses
//! while money still moves, survives a crash before any of its store calls,
//! and races reconcile and a second purge without a wrong answer.

mod common;

use common::*;
use hongbao::alloc::Kind;
use hongbao::ops::{PurgeReport, ReconcileReport};
use hongbao::store::all_keys;
use hongbao::store::faulty::{Faults, FaultyStore};
use hongbao::store::memory::MemoryStore;
use hongbao::{Config, Day, Error, PacketId, Service, Store, Timestamp, keys};
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

/// Purge configuration: small batches, so every purge goes on by cursor.
fn config() -> Config {
    let mut config = common::config();
    config.purge_keys_per_call = 100;
    config
}

/// A purge driven to the end as a cron drives it, from `cursor` on: the
/// last answer, with the keys deleted by all calls; `calls` counts them.
fn purge_from(
    s: &mut Service<'_, impl Store>,
    day: Day,
    mut cursor: Option<String>,
    calls: &mut u32,
) -> Result<PurgeReport, Error> {
    let mut deleted_keys = 0;
    loop {
        let answer = s.purge(Some(day), cursor.as_deref())?;
        *calls += 1;
        deleted_keys += answer.deleted_keys;
        match &answer.next_cursor {
            Some(next) => cursor = Some(next.clone()),
            None => return Ok(PurgeReport { deleted_keys, ..answer }),
        }
    }
}

fn purge(mut s: Service<'_, impl Store>, day: Day) -> Result<PurgeReport, Error> {
    purge_from(&mut s, day, None, &mut 0)
}

fn keys_of(store: &impl Store) -> BTreeSet<String> {
    all_keys(store).unwrap().into_iter().collect()
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
    let early = purge(at(PURGEABLE.plus_seconds(-1)), day);
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
    let mut calls = 0;
    let purged = purge_from(&mut at(PURGEABLE), day, None, &mut calls).unwrap();
    assert!(calls > 3, "{} keys in batches of 100 take several calls: {calls}", before.len());
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
    let again = purge(Service::new(&store, &longer, env(PURGEABLE.plus_seconds(DAY), 3)), day).unwrap();
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
    let refused = purge(svc(&store, &config, PURGEABLE), T0.day());
    assert!(matches!(&refused, Err(Error::DayNotClosed(m)) if m.contains("3 unfinished")), "{refused:?}");
    assert_eq!(refused.unwrap_err().status(), 409);
    assert_eq!(keys_of(&store), before);
    // Settled (by a sweep that still looks back that far), it goes.
    let settled_late = svc(&store, &config, T0.plus_seconds(3 * DAY)).settle().unwrap();
    assert!(settled_late.credited > 0);
    assert!(purge(svc(&store, &config, PURGEABLE), T0.day()).is_ok());
}

#[test]
fn a_purge_that_dies_before_any_store_call_is_finished_by_the_next() {
    let config = config();
    let day = T0.day();
    let clean = memory();
    a_day(&clean, &config, true);
    let counting = FaultyStore::new(&clean, Faults::default());
    purge(Service::new(&counting, &config, env(PURGEABLE, 1)), day).unwrap();
    let calls = counting.calls();
    assert!(calls > 100, "{calls}");

    for crash_at in 1..=calls {
        // (Each world splits its packets its own way: compare within it.)
        let store = memory();
        let ids = a_day(&store, &config, true);
        let report = svc(&store, &config, PURGEABLE).reconcile(day).unwrap();
        let purged: BTreeSet<String> = keys_of(&store).into_iter().filter(|k| !keys::of_day(k, day)).collect();
        let dying = FaultyStore::new(&store, Faults { crash_at: Some(crash_at), ..Faults::default() });
        // The cron's calls, each going on from the last answer's cursor.
        let mut cursor = None;
        let mut dying_purge = Service::new(&dying, &config, env(PURGEABLE, 1));
        loop {
            match dying_purge.purge(Some(day), cursor.as_deref()) {
                Ok(answer) if answer.next_cursor.is_some() => cursor = answer.next_cursor,
                // (This world had fewer keys than the counted one.)
                Ok(_) => break,
                Err(e) => {
                    assert!(matches!(e, Error::Unavailable(_)), "crash at {crash_at}: {e:?}");
                    break;
                }
            }
        }
        // Meanwhile reconcile tells the whole day or the kept report, and a
        // query a whole packet or none.
        let seen = svc(&store, &config, PURGEABLE).reconcile(day).unwrap();
        assert!(seen == report || seen == as_kept(report.clone()), "crash at {crash_at}: {seen:?}");
        for id in &ids {
            let queried = svc(&store, &config, PURGEABLE).query(id, "alice");
            assert!(matches!(queried, Ok(_) | Err(Error::NotFound)), "crash at {crash_at}: {id} {queried:?}");
        }
        // The cron retries its failed call (or, every other time, starts over).
        let retry = if crash_at % 2 == 0 { cursor } else { None };
        let rerun = purge_from(&mut svc(&store, &config, PURGEABLE), day, retry, &mut 0).unwrap();
        assert_eq!(rerun.report, as_kept(report.clone()), "crash at {crash_at}");
        let left = keys_of(&store);
        assert_eq!(left.len(), purged.len() + 1, "crash at {crash_at}");
        assert!(left.contains(&keys::kept_report(day)) && purged.is_subset(&left), "crash at {crash_at}");
    }
}

#[test]
fn a_cursor_goes_on_with_its_own_begun_purge_only() {
    let (store, config) = (memory(), config());
    let day = T0.day();
    a_day(&store, &config, true);
    let at = || svc(&store, &config, PURGEABLE);
    let invalid =
        |r: Result<PurgeReport, Error>| matches!(r, Err(Error::InvalidArgument(m)) if m.starts_with("cursor"));
    assert!(invalid(at().purge(None, Some("zz"))), "not hex");
    // Made up: the right shape, but not signed with the admin token.
    assert!(invalid(at().purge(None, Some(&hex::encode(format!("{}.0", day.compact()))))));
    let token = config.admin_token().unwrap();
    assert!(invalid(at().purge(None, Some(&hongbao::auth::sign_cursor("another token", "20261122.0")))));
    assert!(invalid(at().purge(None, Some(&hongbao::auth::sign_cursor(token, "20261322.0")))), "no such day");
    assert!(invalid(at().purge(None, Some(&hongbao::auth::sign_cursor(token, "20261122")))), "no store cursor");
    // Signed, but for a day whose purge has not begun.
    assert!(invalid(at().purge(None, Some(&hongbao::auth::sign_cursor(token, &format!("{}.0", day.compact()))))));
    let first = at().purge(Some(day), None).unwrap();
    let next = first.next_cursor.expect("more than one batch");
    assert!(invalid(at().purge(Some(day.minus_days(1)), Some(&next))));
    assert!(next.bytes().all(|b| b.is_ascii_hexdigit()), "URL-safe: {next}");
    // Without a day, the cursor names it.
    let second = at().purge(None, Some(&next)).unwrap();
    assert_eq!((second.day.as_str(), second.report), (first.day.as_str(), first.report));
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
                .map(|n| scope.spawn(move || purge(Service::new(store, config, sleeping_env(PURGEABLE, n)), day)))
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
        assert_eq!(purge(svc(store, config, PURGEABLE), day).unwrap().deleted_keys, left.len() as u64);
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
