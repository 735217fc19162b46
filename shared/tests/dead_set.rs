//! One SET's store down (issue 27): its packets' money steps fail closed
//! (`unavailable`, nothing written), the sweeps skip it and name it, every
//! other SET carries on; when it returns, the sweeps catch up, exactly once.

mod common;

use common::*;
use hongbao::alloc::Kind;
use hongbao::id::SETS;
use hongbao::store::memory::MemoryStore;
use hongbao::store::{KeyPage, Store, StoreError, SwapError};
use hongbao::{Error, PacketId, keys};
use std::cell::RefCell;

/// A store some keys of which are unreachable, as when their server is
/// down: every call touching such a key fails without effect.
struct Failing<'a> {
    inner: &'a MemoryStore,
    unreachable: RefCell<KeyFilter>,
}

/// Which keys are unreachable.
type KeyFilter = Box<dyn Fn(&str) -> bool>;

impl<'a> Failing<'a> {
    fn new(inner: &'a MemoryStore) -> Failing<'a> {
        Failing { inner, unreachable: RefCell::new(Box::new(|_| false)) }
    }

    /// From now on, SET `set` is down.
    fn set_down(&self, set: u32) {
        self.fail_keys(move |key| keys::set_of(key) == Some(set));
    }

    fn fail_keys(&self, unreachable: impl Fn(&str) -> bool + 'static) {
        *self.unreachable.borrow_mut() = Box::new(unreachable);
    }

    fn heal(&self) {
        self.fail_keys(|_| false);
    }

    fn reach(&self, key: &str) -> Result<(), StoreError> {
        if (self.unreachable.borrow())(key) { Err(StoreError(format!("{key} is unreachable"))) } else { Ok(()) }
    }
}

impl Store for Failing<'_> {
    type Cas = <MemoryStore as Store>::Cas;
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.reach(key)?;
        self.inner.get(key)
    }
    fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.reach(key)?;
        self.inner.set(key, value)
    }
    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.reach(key)?;
        self.inner.delete(key)
    }
    fn exists(&self, key: &str) -> Result<bool, StoreError> {
        self.reach(key)?;
        self.inner.exists(key)
    }
    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        keys.iter().try_for_each(|k| self.reach(k))?;
        self.inner.get_many(keys)
    }
    fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        entries.iter().try_for_each(|(k, _)| self.reach(k))?;
        self.inner.set_many(entries)
    }
    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        self.reach(key)?;
        self.inner.increment(key, delta)
    }
    fn cas(&self, key: &str) -> Result<Self::Cas, StoreError> {
        self.reach(key)?;
        self.inner.cas(key)
    }
    fn current(&self, cas: &Self::Cas) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.current(cas)
    }
    fn swap(&self, cas: Self::Cas, value: &[u8]) -> Result<(), SwapError> {
        self.inner.swap(cas, value)
    }
    fn list_keys(&self, cursor: Option<&str>) -> Result<KeyPage, StoreError> {
        self.inner.list_keys(cursor)
    }
}

/// A paid packet of alice's placed in `set`: every other SET drained for
/// the wrap, then restored.
fn paid_packet_in(store: &MemoryStore, set: u32, at: i64) -> PacketId {
    let config = config();
    let mut admin = svc(store, &config, T0);
    let others: Vec<u32> = (0..SETS).filter(|&s| s != set).collect();
    others.iter().for_each(|&s| drop(admin.change_placement(s, false).unwrap()));
    let id = paid_packet(store, &config, T0.plus_seconds(at), "alice", Kind::Lucky, 1_000, 3);
    others.iter().for_each(|&s| drop(admin.change_placement(s, true).unwrap()));
    assert_eq!(id.set(), set);
    id
}

/// Two paid packets, in SETs 3 and 7.
fn packets_in_two_sets(store: &MemoryStore) -> (PacketId, PacketId) {
    (paid_packet_in(store, 3, 0), paid_packet_in(store, 7, 1))
}

/// Every value in the store (counters aside), by key.
fn values(memory: &MemoryStore) -> Vec<(String, Option<Vec<u8>>)> {
    memory.value_keys().into_iter().map(|k| (k.clone(), memory.get(&k).unwrap())).collect()
}

fn balance(store: &impl Store, user: &str) -> u64 {
    svc(store, &config(), T0).wallet(user).unwrap().balance_fen
}

#[test]
fn a_dead_set_fails_closed_and_the_sweeps_carry_on_then_catch_up_exactly_once() {
    let memory = MemoryStore::new();
    let config = config();
    let (dead, alive) = packets_in_two_sets(&memory);
    let store = Failing::new(&memory);
    for id in [&dead, &alive] {
        grab_and_open(&store, &config, env(T0.plus_seconds(100), 1), id, "bob").unwrap();
    }

    store.set_down(dead.set());
    // Money steps on the dead SET's packet: unavailable, nothing written.
    let before = values(&memory);
    let opened = grab_and_open(&store, &config, env(T0.plus_seconds(200), 2), &dead, "carol");
    assert!(matches!(opened, Err(Error::Unavailable(_))), "{opened:?}");
    assert_eq!(values(&memory), before);
    // The other SET's packet opens as ever.
    grab_and_open(&store, &config, env(T0.plus_seconds(200), 3), &alive, "carol").unwrap();

    // Settle and expire (after both packets expired) sweep the live SET only.
    let later = T0.plus_seconds(config.packet_ttl_seconds + 60);
    let settled = svc(&store, &config, later).settle().unwrap();
    assert_eq!(settled.unreachable_sets, vec![dead.set()]);
    let expired = svc(&store, &config, later).expire().unwrap();
    assert_eq!((expired.unreachable_sets, expired.refunded), (vec![dead.set()], 1));
    let settled = svc(&store, &config, later).settle().unwrap();
    assert_eq!((settled.unreachable_sets, settled.credited), (vec![dead.set()], 1), "the live packet's refund");
    let alive_packet = load(&memory, &alive);
    let dead_packet = load(&memory, &dead);
    assert!(alive_packet.is_settled(), "{alive_packet:?}");
    assert!(!dead_packet.is_settled() && dead_packet.refund_fen.is_none(), "{dead_packet:?}");
    let carol_alive = alive_packet.claims.iter().find(|c| c.user == "carol").unwrap().amount_fen.0;
    assert_eq!(balance(&memory, "carol"), carol_alive);

    // The SET returns: the sweeps catch up with its packet, then find nothing.
    store.heal();
    let expired = svc(&store, &config, later).expire().unwrap();
    assert_eq!((expired.unreachable_sets, expired.refunded), (vec![], 1));
    let settled = svc(&store, &config, later).settle().unwrap();
    assert_eq!((settled.unreachable_sets.len(), settled.credited), (0, 2), "bob's claim and the refund");
    for _ in 0..2 {
        let again = svc(&store, &config, later).settle().unwrap();
        let expired = svc(&store, &config, later).expire().unwrap();
        assert_eq!((again.credited, expired.refunded), (0, 0), "exactly once");
    }
    let report = svc(&store, &config, later).reconcile(dead.day()).unwrap();
    assert!(report.mismatches.is_empty(), "{report:?}");
    assert_eq!((report.packets, report.total_fen, report.credited_fen), (2, 2_000, 2_000));
    let bob: u64 = [&dead, &alive]
        .iter()
        .map(|id| load(&memory, id).claims.iter().find(|c| c.user == "bob").unwrap().amount_fen.0)
        .sum();
    assert_eq!(balance(&memory, "bob"), bob);
    for id in [&dead, &alive] {
        assert_invariants(&load(&memory, id));
    }
}

#[test]
fn reconcile_of_a_day_with_a_dead_set_answers_unavailable_never_a_partial_report() {
    let memory = MemoryStore::new();
    let (dead, _) = packets_in_two_sets(&memory);
    let store = Failing::new(&memory);
    store.set_down(dead.set());
    let report = svc(&store, &config(), T0).reconcile(dead.day());
    assert!(matches!(report, Err(Error::Unavailable(_))), "{report:?}");
}

/// A store call failing halfway through a packet's credits: the claims
/// credited before it are recorded as credited, so on a flaky store a packet
/// with many claims gets nearer to settled with every run.
#[test]
fn a_settle_cut_short_by_a_failed_call_keeps_what_it_credited() {
    let memory = MemoryStore::new();
    let config = config();
    let id = paid_packet(&memory, &config, T0, "alice", Kind::Lucky, 1_000, 10);
    for u in 0..10 {
        grab_and_open(&memory, &config, env(T0.plus_seconds(10), u), &id, &format!("u{u}")).unwrap();
    }
    let claims: Vec<u32> = load(&memory, &id).claims.iter().map(|c| c.seq).collect();
    let store = Failing::new(&memory);
    // The sixth claim's credit cannot be decided.
    let stuck = keys::credit_election(&id, &format!("c{}", claims[5]));
    store.fail_keys(move |key| key == stuck);
    let report = svc(&store, &config, T0.plus_seconds(60)).settle().unwrap();
    assert_eq!((report.credited, report.errors.len()), (5, 1), "{report:?}");
    let mut recorded = claims[..5].to_vec();
    recorded.sort_unstable();
    assert_eq!(load(&memory, &id).settled, recorded, "the five credited claims are recorded");

    store.heal();
    let report = svc(&store, &config, T0.plus_seconds(60)).settle().unwrap();
    assert_eq!((report.credited, report.errors.len()), (5, 0), "only the other five, once");
    assert!(load(&memory, &id).is_settled());
    let report = svc(&memory, &config, T0.plus_seconds(60)).reconcile(id.day()).unwrap();
    assert!(report.mismatches.is_empty() && report.credited_fen == 1_000, "{report:?}");
}

/// Wrap heals around a dead SET by itself: a packet whose SET's store fails
/// is placed again in another SET, so wraps keep succeeding before any
/// operator drains the SET. With every SET failing it answers 503 and gives
/// the sender's unpaid slot back.
#[test]
fn wraps_land_in_live_sets_while_one_is_down_and_answer_unavailable_when_all_are() {
    let memory = MemoryStore::new();
    let config = config();
    let store = Failing::new(&memory);
    store.set_down(6);
    for i in 0..60 {
        let (status, view) = svc(&store, &config, T0)
            .wrap(&format!("u{i}"), &wrap_request(&format!("r{i}"), Kind::Lucky, 100, 2))
            .unwrap();
        assert_eq!(status, 201);
        assert_ne!(PacketId::parse(&view.id).unwrap().set(), 6);
    }
    store.fail_keys(|key| keys::set_of(key).is_some());
    let wrapped = svc(&store, &config, T0).wrap("alice", &wrap_request("all-down", Kind::Lucky, 100, 2));
    assert!(matches!(wrapped, Err(Error::Unavailable(_))), "{wrapped:?}");
    assert_eq!(memory.increment(&keys::unpaid("alice", T0.day()), 0).unwrap(), 0, "the slot is given back");
    store.heal();
    let (status, _) = svc(&store, &config, T0).wrap("alice", &wrap_request("all-down", Kind::Lucky, 100, 2)).unwrap();
    assert_eq!(status, 201, "the same request, once the store is back");
}

/// An HTTP request through `http::serve`, with `replica` as the replica.
fn serve(
    primary: &Failing,
    replica: Option<&Failing>,
    method: &str,
    path: &str,
    user: &str,
) -> (u16, serde_json::Value) {
    use hongbao::http::{self, Endpoint, Request};
    const ALL: u32 = http::endpoints(&Endpoint::ALL);
    let token = format!("Bearer {}", hongbao::auth::sign_user_token("test-auth-secret", user, T0.plus_seconds(3600)));
    let header = |name: &str| (name == "authorization").then(|| token.clone());
    let req = Request { method, path, query: None, header: &header, body: b"" };
    let placement = hongbao::ops::PlacementCache::new();
    let response =
        http::serve::<ALL, _>(primary, replica, Ok(&config()), env(T0.plus_seconds(300), 9), &placement, &req);
    (response.status, serde_json::from_slice(&response.body).unwrap())
}

/// Degraded reads: with a SET's primary down, query and the user records
/// come from the replica marked `"degraded": true` (privacy as ever); money
/// steps never do; what the replica cannot answer stays the primary's 503.
#[test]
fn reads_of_a_dead_set_come_from_its_replica_marked_degraded_and_money_never_does() {
    let memory = MemoryStore::new();
    let (dead, _) = packets_in_two_sets(&memory);
    grab_and_open(&memory, &config(), env(T0.plus_seconds(100), 1), &dead, "bob").unwrap();
    let primary = Failing::new(&memory);
    primary.set_down(dead.set());
    let replica = Failing::new(&memory); // caught up: the same data
    let query = format!("/v1/packets/{dead}");

    let (status, healthy) = serve(&Failing::new(&memory), Some(&replica), "GET", &query, "bob");
    assert_eq!((status, healthy.get("degraded")), (200, None), "a healthy primary answers itself");
    let (status, view) = serve(&primary, Some(&replica), "GET", &query, "bob");
    assert_eq!((status, view["degraded"].clone()), (200, serde_json::json!(true)), "{view}");
    let mut undegraded = view.clone();
    undegraded.as_object_mut().unwrap().remove("degraded");
    assert_eq!(undegraded, healthy, "the same view, marked");
    let (status, stranger) = serve(&primary, Some(&replica), "GET", &query, "mallory");
    assert_eq!((status, stranger["claims"].clone()), (200, serde_json::json!([])), "claims stay private");
    let (status, sent) = serve(&primary, Some(&replica), "GET", "/v1/users/me/sent", "alice");
    assert_eq!((status, sent["degraded"].clone(), sent["items"].as_array().map(Vec::len)), (200, true.into(), Some(2)));

    // Money never reads a replica.
    let (status, grabbed) = serve(&primary, Some(&replica), "POST", &format!("{query}/grab"), "carol");
    assert_eq!((status, grabbed["error"]["code"].clone()), (503, "unavailable".into()), "{grabbed}");
    // Without a replica, or one that lacks the packet: the primary's 503.
    let (status, _) = serve(&primary, None, "GET", &query, "bob");
    assert_eq!(status, 503);
    let empty = MemoryStore::new();
    let (status, lagging) = serve(&primary, Some(&Failing::new(&empty)), "GET", &query, "bob");
    assert_eq!((status, lagging["error"]["code"].clone()), (503, "unavailable".into()), "not a 404");
}
