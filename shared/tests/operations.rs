//! Every operation of the contract against the strict in-memory store (and,
//! where it matters, Spin SQLite's weaker compare-and-set).

mod common;

use common::*;
use hongbao::alloc::Kind;
use hongbao::record::Status;
use hongbao::store::memory::MemoryStore;
use hongbao::{Error, Fen, PacketId, Store, auth};

#[test]
fn wrap_replay_returns_the_same_packet_and_a_changed_body_conflicts() {
    let (store, config) = (memory(), config());
    let request = wrap_request("req-1", Kind::Lucky, 1_000, 5);
    let (status, first) = svc(&store, &config, T0).wrap("alice", &request).unwrap();
    assert_eq!((status, first.status), (201, "awaiting_payment"));
    assert_eq!((first.paid_at.clone(), first.best_luck.clone(), first.refund_fen), (None, None, None));
    let (status, again) = svc(&store, &config, T0.plus_seconds(5)).wrap("alice", &request).unwrap();
    assert_eq!((status, again), (200, first.clone()));
    let changed = wrap_request("req-1", Kind::Lucky, 1_001, 5);
    assert!(matches!(svc(&store, &config, T0).wrap("alice", &changed), Err(Error::IdempotencyConflict(_))));
    // The same request id from another sender is another packet.
    let (status, other) = svc(&store, &config, T0).wrap("bob", &request).unwrap();
    assert_eq!(status, 201);
    assert_ne!(other.id, first.id);
}

#[test]
fn concurrent_wraps_with_one_request_id_make_one_packet() {
    let (store, config) = (memory(), config());
    let request = wrap_request("same", Kind::Fixed, 600, 6);
    let barrier = std::sync::Barrier::new(8);
    let results: Vec<(u16, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let (store, config, request, barrier) = (&store, &config, &request, &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    let mut s = hongbao::Service::new(store, config, env(T0, i));
                    // A loser that arrives between the winner's election and
                    // its record is told to retry (429), as a client would,
                    // for as long as the winner takes (a loaded machine may
                    // deschedule it): only a winner that never finishes fails.
                    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
                    while std::time::Instant::now() < deadline {
                        match s.wrap("carol", request) {
                            Err(Error::Busy { .. }) => std::thread::yield_now(),
                            answer => {
                                let (status, view) = answer.unwrap();
                                return (status, view.id);
                            }
                        }
                    }
                    panic!("still busy after two minutes")
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results.iter().filter(|(status, _)| *status == 201).count(), 1, "{results:?}");
    assert!(results.iter().all(|(_, id)| *id == results[0].1), "{results:?}");
}

#[test]
fn payment_activates_once_and_replays_by_payment_id() {
    let (store, config) = (memory(), config());
    let (_, view) = svc(&store, &config, T0).wrap("alice", &wrap_request("r", Kind::Lucky, 500, 3)).unwrap();
    let id = PacketId::parse(&view.id).unwrap();
    let pay = |pid: &str, amount: u64, at| svc(&store, &config, at).pay(&id, &payment(&id, pid, amount));
    assert_eq!(pay("p1", 499, T0), Err(Error::AmountMismatch { expected: 500, got: 499 }));
    let paid = pay("p1", 500, T0.plus_seconds(10)).unwrap();
    assert_eq!(paid.status, "active");
    assert_eq!(paid.paid_at.as_deref(), Some("2026-11-22T08:00:10Z"));
    assert_eq!(paid.expires_at.as_deref(), Some("2026-11-23T08:00:10Z"));
    assert_eq!(pay("p1", 500, T0.plus_seconds(99)).unwrap(), paid, "a replay changes nothing");
    assert_eq!(pay("p2", 500, T0), Err(Error::AlreadyPaid));
    let unknown = PacketId::generate(T0.day(), &mut hongbao::alloc::SplitMix64(77));
    let missing = svc(&store, &config, T0).pay(&unknown, &payment(&unknown, "p", 1));
    assert_eq!(missing, Err(Error::NotFound));
    let sent = svc(&store, &config, T0).sent("alice", T0.day()).unwrap();
    assert_eq!(sent.items.len(), 1);
    assert_eq!((sent.items[0].packet_id.as_str(), sent.items[0].status), (view.id.as_str(), "active"));
}

#[test]
fn a_payment_after_the_payment_window_is_refused() {
    let (store, config) = (memory(), config());
    let (_, view) = svc(&store, &config, T0).wrap("alice", &wrap_request("r", Kind::Lucky, 500, 3)).unwrap();
    let id = PacketId::parse(&view.id).unwrap();
    let late = svc(&store, &config, T0.plus_seconds(DAY)).pay(&id, &payment(&id, "p", 500));
    assert_eq!(late, Err(Error::Expired));
}

#[test]
fn grab_and_open_follow_the_contract() {
    let (store, config) = (memory(), config());
    let (_, view) = svc(&store, &config, T0).wrap("alice", &wrap_request("r", Kind::Fixed, 300, 3)).unwrap();
    let id = PacketId::parse(&view.id).unwrap();
    assert_eq!(svc(&store, &config, T0).grab(&id, "u1").unwrap_err(), Error::NotSent);
    svc(&store, &config, T0).pay(&id, &payment(&id, "p", 300)).unwrap();

    let grabbed = svc(&store, &config, T0).grab(&id, "u1").unwrap();
    assert_eq!(grabbed.remaining_count, 3);
    assert_eq!(grabbed.ticket_expires_at, "2026-11-22T08:01:00Z");
    // The ticket is bound to its user, its packet and its time.
    let open = |user: &str, ticket: &str, at| svc(&store, &config, at).open(&id, user, ticket);
    assert!(matches!(open("u2", &grabbed.ticket, T0), Err(Error::InvalidTicket(_))));
    assert!(matches!(open("u1", &grabbed.ticket, T0.plus_seconds(60)), Err(Error::InvalidTicket(_))));
    assert!(matches!(open("u1", "garbage", T0), Err(Error::InvalidTicket(_))));
    let opened = open("u1", &grabbed.ticket, T0.plus_seconds(1)).unwrap();
    assert_eq!((opened.claim.amount_fen, opened.claim.seq, opened.remaining_count), (100, 1, 2));
    // Opening again answers the same claim; grabbing again says already_claimed.
    let again = open("u1", &grabbed.ticket, T0.plus_seconds(2)).unwrap();
    assert_eq!(again.claim, opened.claim);
    match svc(&store, &config, T0).grab(&id, "u1") {
        Err(Error::AlreadyClaimed(claim)) => assert_eq!(claim.view(), opened.claim),
        other => panic!("{other:?}"),
    }
    for user in ["u2", "u3"] {
        grab_and_open(&store, &config, env(T0, 1), &id, user).unwrap();
    }
    // Grabbed before the last share went: the ticket is good, the packet is empty.
    let late_ticket = auth::issue_ticket(config.auth_secret().unwrap(), id.as_str(), "u4", T0.plus_seconds(60), None);
    assert_eq!(open("u4", &late_ticket, T0), Err(Error::Exhausted));
    assert_eq!(svc(&store, &config, T0).grab(&id, "u4").unwrap_err(), Error::Exhausted);
    let view = svc(&store, &config, T0).query(&id, "alice").unwrap();
    assert_eq!((view.status, view.remaining_count, view.remaining_fen), ("exhausted", 0, 0));
    assert_eq!(view.claims.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(view.best_luck.as_deref(), Some("u1"), "equal shares: the lowest seq is best");
}

#[test]
fn a_packet_lives_its_whole_life() {
    let (store, config) = (memory(), config());
    whole_life(&store, &config);
}

#[test]
fn a_cursor_packet_lives_its_whole_life() {
    let store = memory();
    whole_life(&store, &cursor_config());
}

#[test]
fn the_whole_life_holds_with_spin_sqlite_compare_and_set() {
    let (store, config) = (MemoryStore::spin_sqlite(), config());
    whole_life(&store, &config);
}

fn whole_life<S: Store>(store: &S, config: &hongbao::Config) {
    let id = paid_packet(store, config, T0, "sender", Kind::Lucky, 10_000, 5);
    let mut claimed = 0;
    for (i, user) in ["a", "b", "c"].iter().enumerate() {
        let opened = grab_and_open(store, config, env(T0.plus_seconds(i as i64), i as u64), &id, user).unwrap();
        claimed += opened.claim.amount_fen;
    }
    let expiry = T0.plus_seconds(DAY);
    assert_eq!(grab_and_open(store, config, env(expiry, 9), &id, "late").unwrap_err(), Error::Expired);
    // Nothing is refunded before expiry.
    assert_eq!(svc(store, config, expiry.plus_seconds(-1)).expire().unwrap().refunded, 0);
    let report = svc(store, config, expiry).expire().unwrap();
    assert_eq!((report.refunded, report.refund_fen), (1, 10_000 - claimed));
    assert!(report.scanned >= 1);
    assert_eq!(svc(store, config, expiry.plus_seconds(5)).expire().unwrap().refunded, 0, "exactly once");
    let view = svc(store, config, expiry).query(&id, "sender").unwrap();
    assert_eq!((view.status, view.refund_fen, view.remaining_fen), ("refunded", Some(10_000 - claimed), 0));
    assert!(view.best_luck.is_some());

    // Nothing is in any wallet before settle.
    assert_eq!(svc(store, config, expiry).wallet("a").unwrap().balance_fen, 0);
    let settled = svc(store, config, expiry).settle().unwrap();
    assert_eq!((settled.credited, settled.credited_fen), (4, 10_000));
    assert_eq!(svc(store, config, expiry).settle().unwrap().credited, 0, "exactly once");
    let mut wallets = 0;
    for user in ["a", "b", "c", "sender"] {
        let wallet = svc(store, config, expiry).wallet(user).unwrap();
        assert_eq!(wallet.entries.len(), 1);
        wallets += wallet.balance_fen;
    }
    assert_eq!(wallets, 10_000);
    assert_eq!(svc(store, config, expiry).wallet("sender").unwrap().entries[0].kind, "refund");

    let received = svc(store, config, expiry).received("a", T0.day()).unwrap();
    assert_eq!(received.items.len(), 1);
    assert_eq!(received.items[0].sender, "sender");

    let reconciled = svc(store, config, expiry).reconcile(T0.day()).unwrap();
    assert_eq!(reconciled.packets, 1);
    assert_eq!(reconciled.mismatches, vec![]);
    assert_eq!(reconciled.claimed_fen + reconciled.refunded_fen + reconciled.outstanding_fen, reconciled.total_fen);
    assert_eq!(reconciled.credited_fen, reconciled.claimed_fen + reconciled.refunded_fen);
    assert_invariants(&load(store, &id));
}

#[test]
fn an_exhausted_packet_expires_without_refund() {
    let (store, config) = (memory(), config());
    let id = paid_packet(&store, &config, T0, "s", Kind::Lucky, 50, 2);
    for user in ["x", "y"] {
        grab_and_open(&store, &config, env(T0, 3), &id, user).unwrap();
    }
    let report = svc(&store, &config, T0.plus_seconds(DAY)).expire().unwrap();
    assert_eq!((report.refunded, report.refund_fen), (0, 0));
    assert_eq!(load(&store, &id).status, Status::Expired);
}

#[test]
fn received_lists_are_newest_first_and_per_day() {
    let (store, config) = (memory(), config());
    let first = paid_packet(&store, &config, T0, "s1", Kind::Fixed, 100, 1);
    let second = paid_packet(&store, &config, T0.plus_seconds(60), "s2", Kind::Fixed, 200, 1);
    grab_and_open(&store, &config, env(T0.plus_seconds(70), 1), &first, "r").unwrap();
    grab_and_open(&store, &config, env(T0.plus_seconds(80), 2), &second, "r").unwrap();
    let items = svc(&store, &config, T0).received("r", T0.day()).unwrap().items;
    let ids: Vec<&str> = items.iter().map(|i| i.packet_id.as_str()).collect();
    assert_eq!(ids, vec![second.as_str(), first.as_str()]);
    assert!(svc(&store, &config, T0).received("r", T0.day().minus_days(1)).unwrap().items.is_empty());
}

#[test]
fn admission_sheds_load_per_packet_per_second() {
    let store = memory();
    let mut config = config();
    config.admission_limit = 3;
    let id = paid_packet(&store, &config, T0, "s", Kind::Lucky, 1_000, 10);
    for _ in 0..3 {
        svc(&store, &config, T0).grab(&id, "u").unwrap();
    }
    assert_eq!(svc(&store, &config, T0).grab(&id, "u").unwrap_err(), Error::Busy { retry_after_seconds: 1 });
    // Shed before the packet: nothing was claimed, and a new second admits again.
    assert!(load(&store, &id).claims.is_empty());
    grab_and_open(&store, &config, env(T0.plus_seconds(1), 5), &id, "u").unwrap();
    // The finished window's counter was dropped, so windows do not pile up.
    assert!(!store.exists(&hongbao::keys::admission(&id, T0.0)).unwrap());
}

#[test]
fn reconcile_reports_broken_packets() {
    let (store, config) = (memory(), config());
    let id = paid_packet(&store, &config, T0, "s", Kind::Lucky, 1_000, 4);
    grab_and_open(&store, &config, env(T0, 1), &id, "a").unwrap();
    // Corrupt the record behind the service's back: money appears from nowhere.
    let mut p = load(&store, &id);
    p.claims[0].amount_fen = Fen(p.claims[0].amount_fen.0 + 1);
    store.set(&hongbao::keys::packet(&id), &p.encode()).unwrap();
    let report = svc(&store, &config, T0).reconcile(T0.day()).unwrap();
    assert_eq!(report.mismatches.len(), 1);
    assert_eq!(
        (report.mismatches[0].packet_id.as_str(), report.mismatches[0].reason.as_str()),
        (id.as_str(), "sum_mismatch")
    );
}

#[test]
fn sweeps_skip_finished_day_tables() {
    let (store, config) = (memory(), config());
    let id = paid_packet(&store, &config, T0, "s", Kind::Fixed, 100, 1);
    grab_and_open(&store, &config, env(T0, 1), &id, "a").unwrap();
    let later = T0.plus_seconds(DAY + 1);
    svc(&store, &config, later).expire().unwrap();
    svc(&store, &config, later).settle().unwrap();
    // Expired and settled: the next sweeps no longer visit it.
    assert_eq!(svc(&store, &config, later).expire().unwrap().scanned, 1, "settle marks progress only after this pass");
    assert_eq!(svc(&store, &config, later.plus_seconds(3 * DAY)).expire().unwrap().scanned, 0);
    // A new packet on a later day is still found.
    let newer = paid_packet(&store, &config, later.plus_seconds(3 * DAY), "s", Kind::Fixed, 100, 1);
    let report = svc(&store, &config, later.plus_seconds(5 * DAY)).expire().unwrap();
    assert_eq!((report.scanned, report.refunded, report.refund_fen), (1, 1, 100));
    assert_eq!(load(&store, &newer).status, Status::Refunded);
}

#[test]
fn a_cursor_open_takes_the_packet_facts_from_the_ticket() {
    use hongbao::store::faulty::{Faults, FaultyStore};
    let (store, config) = (memory(), cursor_config());
    let id = paid_packet(&store, &config, T0, "s", Kind::Lucky, 300, 3);
    let counted = FaultyStore::new(&store, Faults::default());
    let calls_of = |user: &str, ticket: &str| {
        let before = counted.calls();
        let opened = svc(&counted, &config, T0.plus_seconds(1)).open(&id, user, ticket).unwrap();
        (opened, counted.calls() - before)
    };
    let secret = config.auth_secret().unwrap();
    // As grab issues it: the facts are signed in, and open skips the packet
    // read. (Grabbed in the opens' second, so neither open starts a new
    // admission window, which costs a delete.)
    let grabbed = svc(&store, &config, T0.plus_seconds(1)).grab(&id, "u1").unwrap();
    let (with_facts, calls_with) = calls_of("u1", &grabbed.ticket);
    // A ticket without facts (issued before they existed) still opens.
    let bare = auth::issue_ticket(secret, id.as_str(), "u2", T0.plus_seconds(60), None);
    let (without, calls_without) = calls_of("u2", &bare);
    assert_eq!(calls_with + 1, calls_without, "the facts replace the packet read");
    assert_eq!((with_facts.claim.seq, with_facts.remaining_count), (1, 2));
    assert_eq!((without.claim.seq, without.remaining_count), (2, 1));
    let view = svc(&store, &config, T0.plus_seconds(1)).received("u1", T0.day()).unwrap();
    assert_eq!(view.items[0].sender, "s", "the received record names the sender from the facts");

    // Past the packet's expiry the facts alone refuse the open; after the
    // sweep has sealed the free share, so does the share record.
    let expires_at = load(&store, &id).expires_at.unwrap();
    let late = svc(&store, &config, expires_at.plus_seconds(-1)).grab(&id, "u3").unwrap();
    assert_eq!(svc(&store, &config, expires_at).open(&id, "u3", &late.ticket).unwrap_err(), Error::Expired);
    svc(&store, &config, expires_at).expire().unwrap();
    assert_eq!(
        svc(&store, &config, expires_at.plus_seconds(-1)).open(&id, "u3", &late.ticket).unwrap_err(),
        Error::Expired
    );
    let packet = load(&store, &id);
    assert_invariants(&packet);
    let refund = 300 - with_facts.claim.amount_fen - without.claim.amount_fen;
    assert_eq!((packet.claims.len(), packet.refund_fen), (2, Some(Fen(refund))));
}

#[test]
fn the_default_auto_strategy_wraps_small_packets_cas_and_large_ones_cursor() {
    use hongbao::config::OpenStrategy;
    use hongbao::record::Strategy;
    let (store, config) = (memory(), hongbao::Config::for_tests());
    assert_eq!(config.open_strategy, OpenStrategy::Auto, "the contract's default");
    let from = OpenStrategy::AUTO_CURSOR_FROM_COUNT;
    for (count, strategy) in [(from - 1, Strategy::Cas), (from, Strategy::Cursor)] {
        let total = 10 * u64::from(count) + 7;
        let id = paid_packet(&store, &config, T0.plus_seconds(i64::from(count)), "s", Kind::Lucky, total, count);
        assert_eq!(load(&store, &id).strategy, strategy, "{count} shares");
        let now = T0.plus_seconds(1_000);
        for u in 0..count {
            grab_and_open(&store, &config, env(now, u64::from(u)), &id, &format!("u{u}")).unwrap();
        }
        assert_eq!(grab_and_open(&store, &config, env(now, 0), &id, "late").unwrap_err(), Error::Exhausted);
        let view = svc(&store, &config, now).query(&id, "s").unwrap();
        assert_eq!((view.claims.len(), view.remaining_fen), (count as usize, 0));
        assert_eq!(view.claims.iter().map(|c| c.amount_fen).sum::<u64>(), total);
        assert!(view.claims.iter().all(|c| c.amount_fen >= 1));
    }
}
