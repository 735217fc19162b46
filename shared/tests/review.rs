//! Regressions for the defects a review found (issue 22), one test each,
//! named for the guarantee it protects. Each failed on the code before its
//! fix; the deterministic simulator (`simulation.rs`) hunts for their kin.

mod common;

use common::*;
use hongbao::alloc::Kind;
use hongbao::config::MAX_TTL_SECONDS;
use hongbao::http::{self, Endpoint, Request};
use hongbao::ops::PlacementCache;
use hongbao::record::Status;
use hongbao::store::faulty::{Faults, FaultyStore};
use hongbao::store::memory::MemoryStore;
use hongbao::store::{KeyPage, Store, StoreError, SwapError};
use hongbao::{Config, Env, Error, PacketId, Timestamp, keys};
use serde_json::{Value, json};

/// A store that fails every call from the first `cas` on a key `stop`
/// matches: the request dies right there, as in a crash.
struct DiesAt<'a> {
    inner: &'a MemoryStore,
    stop: &'a dyn Fn(&str) -> bool,
    dead: std::cell::Cell<bool>,
}

impl DiesAt<'_> {
    fn alive(&self) -> Result<(), StoreError> {
        if self.dead.get() { Err(StoreError("died".into())) } else { Ok(()) }
    }
}

impl Store for DiesAt<'_> {
    type Cas = <MemoryStore as Store>::Cas;
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.alive()?;
        self.inner.get(key)
    }
    fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.alive()?;
        self.inner.set(key, value)
    }
    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.alive()?;
        self.inner.delete(key)
    }
    fn exists(&self, key: &str) -> Result<bool, StoreError> {
        self.alive()?;
        self.inner.exists(key)
    }
    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        self.alive()?;
        self.inner.get_many(keys)
    }
    fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        self.alive()?;
        self.inner.set_many(entries)
    }
    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        self.alive()?;
        self.inner.increment(key, delta)
    }
    fn cas(&self, key: &str) -> Result<Self::Cas, StoreError> {
        if (self.stop)(key) {
            self.dead.set(true);
        }
        self.alive()?;
        self.inner.cas(key)
    }
    fn current(&self, cas: &Self::Cas) -> Result<Option<Vec<u8>>, StoreError> {
        self.alive()?;
        self.inner.current(cas)
    }
    fn swap(&self, cas: Self::Cas, value: &[u8]) -> Result<(), SwapError> {
        self.alive()?;
        self.inner.swap(cas, value)
    }
    fn list_keys(&self, cursor: Option<&str>) -> Result<KeyPage, StoreError> {
        self.alive()?;
        self.inner.list_keys(cursor)
    }
}

fn open_with_ticket<S: Store>(
    store: &S,
    plain: &MemoryStore,
    config: &Config,
    id: &PacketId,
    user: &str,
    now: Timestamp,
) -> Result<(), Error> {
    let ticket = ticket_as_grab_issues(plain, config, id, user, now.plus_seconds(60));
    svc(store, config, now).open(id, user, &ticket).map(drop)
}

/// Defect 1: settle kept its progress as a prefix length of the claims
/// sorted by share number. An open that took share 1 and had not claimed it
/// yet when settle credited share 2 was never credited.
#[test]
fn a_claim_landing_below_a_credited_share_is_still_credited() {
    let (store, config) = (memory(), cursor_config());
    let id = paid_packet(&store, &config, T0, "sender", Kind::Fixed, 300, 3);
    let now = T0.plus_seconds(5);
    let share_1 = keys::share(&id, 1);
    let stop = |key: &str| key == share_1;
    let stalled = DiesAt { inner: &store, stop: &stop, dead: Default::default() };
    // "a" takes share 1 from the cursor and stops before claiming it.
    assert!(open_with_ticket(&stalled, &store, &config, &id, "a", now).is_err());
    open_with_ticket(&store, &store, &config, &id, "b", now).unwrap();
    assert_eq!(svc(&store, &config, now).settle().unwrap().credited, 1, "b's share 2");
    open_with_ticket(&store, &store, &config, &id, "a", now).unwrap(); // a's retry claims share 1
    svc(&store, &config, now).settle().unwrap();
    let after = T0.plus_seconds(2 * DAY);
    svc(&store, &config, after).expire().unwrap();
    svc(&store, &config, after).settle().unwrap();
    assert_eq!(svc(&store, &config, after).wallet("a").unwrap().balance_fen, 100, "a's share 1 is credited");
    let report = svc(&store, &config, after).reconcile(T0.day()).unwrap();
    assert_eq!((report.mismatches, report.credited_fen), (vec![], 300));
}

fn serve(
    store: &MemoryStore,
    config: &Config,
    now: Timestamp,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &str,
) -> (u16, Value) {
    let header = |name: &str| headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone());
    let req = Request { method, path, query: None, header: &header, body: body.as_bytes() };
    const ALL: u32 = http::endpoints(&Endpoint::ALL);
    let response = http::serve::<ALL, _>(store, None, Ok(config), env(now, 7), &PlacementCache::new(), &req);
    (response.status, serde_json::from_slice(&response.body).unwrap_or(Value::Null))
}

fn callback(store: &MemoryStore, config: &Config, path_id: &PacketId, body: &Value) -> (u16, Value) {
    let body = body.to_string();
    let signature = hongbao::auth::sign_payment(config.payment_secret().unwrap(), body.as_bytes());
    let path = format!("/v1/packets/{path_id}/payment");
    serve(store, config, T0.plus_seconds(1), "POST", &path, &[("x-payment-signature", signature)], &body)
}

fn unpaid(store: &MemoryStore, config: &Config, sender: &str, rid: &str, total: u64) -> PacketId {
    let (_, view) = svc(store, config, T0).wrap(sender, &wrap_request(rid, Kind::Lucky, total, 2)).unwrap();
    PacketId::parse(&view.id).unwrap()
}

/// Defect 2: the signature covered only `{payment_id, amount_fen, status}`,
/// so one signed callback replayed to every unpaid packet of the same total
/// activated them all. Contract v1.1: the body names its packet, and a
/// payment_id pays one packet only.
#[test]
fn one_signed_callback_pays_one_packet_only() {
    let (store, config) = (memory(), config());
    let (a, b) = (unpaid(&store, &config, "s", "r1", 500), unpaid(&store, &config, "s", "r2", 500));
    let for_a = json!({"packet_id": a.as_str(), "payment_id": "wx-1", "amount_fen": 500, "status": "success"});
    assert_eq!(callback(&store, &config, &a, &for_a).0, 200);
    let (status, body) = callback(&store, &config, &b, &for_a);
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("invalid_argument")), "replayed to b");
    let reuse = json!({"packet_id": b.as_str(), "payment_id": "wx-1", "amount_fen": 500, "status": "success"});
    let (status, body) = callback(&store, &config, &b, &reuse);
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("payment_reused")));
    let no_packet = json!({"payment_id": "wx-2", "amount_fen": 500, "status": "success"});
    assert_eq!(callback(&store, &config, &b, &no_packet).0, 422, "an unbound body is refused");
    assert_eq!(load(&store, &b).status, Status::AwaitingPayment);
    assert_eq!(callback(&store, &config, &a, &for_a).0, 200, "the payment system's replay still answers");
}

/// Defect 3: payment was refused from `created + ttl`, and sweeps took an
/// unpaid packet as finished from `created + MAX_TTL`: at the maximum TTL a
/// payment landing as (or after, on a lagging clock) a sweep passed was never
/// refunded.
#[test]
fn a_payment_in_the_last_second_of_its_window_is_refunded_at_expiry() {
    let store = memory();
    let mut config = config();
    config.packet_ttl_seconds = MAX_TTL_SECONDS;
    let id = unpaid(&store, &config, "s", "r1", 500);
    // A sweep on a clock a little ahead passes the whole window first...
    let deadline = T0.plus_seconds(MAX_TTL_SECONDS);
    svc(&store, &config, deadline.plus_seconds(30)).expire().unwrap();
    svc(&store, &config, deadline.plus_seconds(30)).settle().unwrap();
    // ...then the payment lands on an instance whose clock is within the window.
    svc(&store, &config, deadline.plus_seconds(-1)).pay(&id, &payment(&id, "wx", 500)).unwrap();
    let after = deadline.plus_seconds(MAX_TTL_SECONDS);
    let report = svc(&store, &config, after).expire().unwrap();
    assert_eq!((report.refunded, report.refund_fen), (1, 500));
    svc(&store, &config, after).settle().unwrap();
    assert_eq!(svc(&store, &config, after).wallet("s").unwrap().balance_fen, 500);
}

/// Defect 4: nothing bounded unpaid wraps, and one unpaid packet held its
/// day's sweep hint back for two weeks, so every sweep reloaded the day.
#[test]
fn unpaid_wraps_are_bounded_and_never_slow_the_sweeps() {
    let store = memory();
    let mut config = config();
    config.max_unpaid_per_user = 3;
    let ids: Vec<PacketId> = (0..3).map(|i| unpaid(&store, &config, "s", &format!("r{i}"), 500)).collect();
    let refused = svc(&store, &config, T0).wrap("s", &wrap_request("r3", Kind::Lucky, 500, 2));
    assert_eq!(refused.map(drop), Err(Error::TooManyUnpaid(3)));
    assert!(svc(&store, &config, T0).wrap("other", &wrap_request("r3", Kind::Lucky, 500, 2)).is_ok());
    svc(&store, &config, T0).pay(&ids[0], &payment(&ids[0], "wx", 500)).unwrap();
    assert!(
        svc(&store, &config, T0).wrap("s", &wrap_request("r3", Kind::Lucky, 500, 2)).is_ok(),
        "paying frees a slot"
    );
    // Many finished packets after the unpaid ones: later sweeps skip them all.
    for i in 0..5 {
        let id = paid_packet(&store, &config, T0.plus_seconds(i), &format!("p{i}"), Kind::Fixed, 100, 1);
        grab_and_open(&store, &config, env(T0.plus_seconds(10), i as u64), &id, "u").unwrap();
    }
    let later = T0.plus_seconds(3 * DAY);
    svc(&store, &config, later).expire().unwrap();
    svc(&store, &config, later).settle().unwrap();
    svc(&store, &config, later).settle().unwrap();
    assert_eq!(svc(&store, &config, later).expire().unwrap().scanned, 0, "nothing left to look at");
}

/// Defect 4: a losing duplicate wrap left its packet record, its pre-split
/// shares and its day-index entry behind.
#[test]
fn a_wrap_that_lost_its_election_leaves_no_records_behind() {
    let (store, config) = (memory(), cursor_config());
    // A duplicate of this request won the election and is writing its record.
    store.increment(&keys::wrap_election("s", "r"), 1).unwrap();
    let loser = svc(&store, &config, T0).wrap("s", &wrap_request("r", Kind::Lucky, 500, 3));
    assert_eq!(loser.map(drop), Err(Error::Busy { retry_after_seconds: 1 }));
    assert_eq!(store.value_keys(), Vec::<String>::new(), "no packet, share or index entry");
}

/// Defect 4: a cursor packet wrapped and never paid kept its pre-split
/// shares forever.
#[test]
fn shares_of_a_packet_never_paid_are_dropped_once_it_cannot_be_paid() {
    let (store, config) = (memory(), cursor_config());
    let unpaid = unpaid(&store, &config, "s", "r", 500);
    let paid = paid_packet(&store, &config, T0, "t", Kind::Lucky, 500, 2);
    let shares = |id: &PacketId| store.value_keys().iter().filter(|k| k.contains(&format!("/sh/{id}/s"))).count();
    assert_eq!((shares(&unpaid), shares(&paid)), (2, 2));
    svc(&store, &config, T0.plus_seconds(MAX_TTL_SECONDS)).expire().unwrap();
    assert_eq!(shares(&unpaid), 2, "it may still be paid (within the clock-skew margin)");
    let closed = T0.plus_seconds(MAX_TTL_SECONDS + 2 * DAY);
    let report = svc(&store, &config, closed).expire().unwrap();
    assert_eq!((shares(&unpaid), shares(&paid), report.errors.len()), (0, 2, 0));
    assert_eq!(load(&store, &unpaid).status, Status::AwaitingPayment, "the record stays");
    // A cleaned day is not read again: a record broken since goes unnoticed.
    store.set(&keys::packet(&unpaid), b"{broken").unwrap();
    assert_eq!(svc(&store, &config, closed.plus_seconds(1)).expire().unwrap().errors, vec![]);
}

/// Defect 5: one packet that could not be processed aborted the whole
/// sweep, so every later packet in every SET waited.
#[test]
fn one_bad_packet_does_not_stop_the_sweeps() {
    let (store, config) = (memory(), config());
    let bad = paid_packet(&store, &config, T0, "s1", Kind::Lucky, 500, 2);
    let good = paid_packet(&store, &config, T0.plus_seconds(1), "s2", Kind::Lucky, 700, 2);
    store.set(&keys::packet(&bad), b"{not a packet").unwrap();
    let after = T0.plus_seconds(2 * DAY);
    let report = svc(&store, &config, after).expire().unwrap();
    assert_eq!((report.refunded, report.refund_fen), (1, 700));
    assert_eq!(report.errors.len(), 1);
    assert_eq!((report.errors[0].packet_id.as_str(), report.errors[0].code), (bad.as_str(), "internal"));
    let settled = svc(&store, &config, after).settle().unwrap();
    assert_eq!((settled.credited_fen, settled.errors.len()), (700, 1));
    assert_eq!(load(&store, &good).status, Status::Refunded);
}

/// Defect 6: grab counted the packet's shared admission before any per-user
/// check, so one token flooding grabs starved the whole group.
#[test]
fn one_user_flooding_grabs_cannot_lock_the_group_out() {
    let store = memory();
    let mut config = config();
    config.admission_limit = 50;
    let id = paid_packet(&store, &config, T0, "s", Kind::Lucky, 500, 5);
    let now = T0.plus_seconds(10);
    let flood: Vec<Result<_, Error>> = (0..200).map(|_| svc(&store, &config, now).grab(&id, "greedy")).collect();
    assert!(flood.iter().any(|r| r.is_ok()), "the user is served at first");
    assert!(matches!(flood.last(), Some(Err(Error::Busy { .. }))), "then shed");
    for friend in ["a", "b", "c"] {
        grab_and_open(&store, &config, env(now, 1), &id, friend).unwrap();
    }
}

/// Defect 7: anyone who knew a packet id saw every claimant. Contract v1.1:
/// only the sender and the claimants see claims and best luck.
#[test]
fn claims_are_shown_to_the_sender_and_the_claimants_only() {
    for config in [config(), cursor_config()] {
        let store = memory();
        let id = paid_packet(&store, &config, T0, "s", Kind::Fixed, 200, 2);
        for user in ["a", "b"] {
            grab_and_open(&store, &config, env(T0, 3), &id, user).unwrap();
        }
        let view = |viewer: &str| svc(&store, &config, T0).query(&id, viewer).unwrap();
        for insider in ["s", "a", "b"] {
            assert_eq!(view(insider).claims.len(), 2, "{insider}");
            assert_eq!(view(insider).best_luck.as_deref(), Some("a"), "{insider}");
        }
        let outsider = view("eve");
        assert!(outsider.claims.is_empty() && outsider.best_luck.is_none());
        assert_eq!((outsider.status, outsider.remaining_count), ("exhausted", 0), "the rest is public");
    }
}

/// Defect 8: when the last swap of a CAS loop wrote but reported
/// `cas-failed` (Spin 4's Redis store), pay, a cursor claim and settle
/// answered 429 "nothing was done" although it was.
#[test]
fn a_last_swap_that_wrote_is_answered_as_done() {
    let last_one_lies = || Faults {
        spurious_swap_failures: (1..hongbao::env::MAX_CAS_ATTEMPTS as u64).collect(),
        swaps_lie: true,
        ..Faults::default()
    };
    // pay
    let (store, config) = (memory(), config());
    let id = unpaid(&store, &config, "s", "r", 500);
    let lying = FaultyStore::new(&store, last_one_lies());
    let paid = svc(&lying, &config, T0).pay(&id, &payment(&id, "wx", 500)).unwrap();
    assert_eq!(paid.status, "active");
    // a cursor open's claim of its share
    let (store, config) = (memory(), cursor_config());
    let id = paid_packet(&store, &config, T0, "s", Kind::Fixed, 300, 3);
    let lying = FaultyStore::new(&store, last_one_lies());
    open_with_ticket(&lying, &store, &config, &id, "a", T0).unwrap();
    // settle's progress (its credits are made before it)
    let after = T0.plus_seconds(2 * DAY);
    svc(&store, &config, after).expire().unwrap();
    let lying = FaultyStore::new(&store, last_one_lies());
    let settled = svc(&lying, &config, after).settle().unwrap();
    assert_eq!((settled.credited_fen, settled.errors.len()), (300, 0));
    assert!(load(&store, &id).is_settled());
}

/// Defect 10: a wrap that lost its idempotency election slept (up to ~1 s)
/// waiting for the winner, stalling every request of its component instance.
#[test]
fn a_wrap_that_finds_its_twin_in_flight_answers_at_once() {
    let (store, config) = (memory(), config());
    // The winner of the election is between its election and its record.
    store.increment(&keys::wrap_election("s", "r"), 1).unwrap();
    let never_pause = Env::new(T0, Box::new(hongbao::alloc::SplitMix64(1)), |_| panic!("a request paused"));
    let mut loser = hongbao::Service::new(&store, &config, never_pause);
    assert_eq!(
        loser.wrap("s", &wrap_request("r", Kind::Lucky, 500, 2)).map(drop),
        Err(Error::Busy { retry_after_seconds: 1 })
    );
    assert!(store.value_keys().iter().all(|k| !k.contains("/p/")), "the loser left no packet");
}

/// Found while testing the host under injected store faults: a cursor open
/// whose store call failed between its open marker and its share mapping
/// left the user answered 429 busy until expiry. An attempt that fails there
/// now gives its count back, and the retry takes a share.
#[test]
fn a_store_error_mid_open_does_not_lock_the_user_out() {
    let config = cursor_config();
    let calls = {
        let store = memory();
        let id = paid_packet(&store, &config, T0, "s", Kind::Fixed, 300, 3);
        let counting = FaultyStore::new(&store, Faults::default());
        open_with_ticket(&counting, &store, &config, &id, "a", T0).unwrap();
        counting.calls()
    };
    for failing in 1..=calls {
        let store = memory();
        let id = paid_packet(&store, &config, T0, "s", Kind::Fixed, 300, 3);
        let faulty = FaultyStore::new(&store, Faults { fail_calls: vec![failing], ..Faults::default() });
        let _ = open_with_ticket(&faulty, &store, &config, &id, "a", T0);
        open_with_ticket(&store, &store, &config, &id, "a", T0)
            .unwrap_or_else(|e| panic!("call {failing} of {calls} failed, then the retry got {e:?}"));
        let view = svc(&store, &config, T0).query(&id, "s").unwrap();
        assert_eq!(view.claims.iter().filter(|c| c.user == "a").count(), 1, "call {failing}");
    }
}
