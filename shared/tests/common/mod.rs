//! Helpers shared by the integration tests: a fixed clock, seeded
//! randomness, and short-hands for driving a packet through its life.
#![allow(dead_code)]

use hongbao::alloc::{Kind, SplitMix64};
use hongbao::api::{PaymentRequest, WrapRequest};
use hongbao::ops::OpenView;
use hongbao::record::{Packet, WrapTerms};
use hongbao::store::memory::MemoryStore;
use hongbao::{Config, Env, Error, Fen, PacketId, Service, Store, Timestamp, keys};

/// 2026-11-22T08:00:00Z.
pub const T0: Timestamp = Timestamp(1_795_305_600 + 8 * 3600);
pub const DAY: i64 = 86_400;

/// An environment with seeded randomness that does not really sleep.
pub fn env(now: Timestamp, seed: u64) -> Env {
    Env::new(now, Box::new(SplitMix64(seed)), |_| {})
}

/// An environment whose backoff really sleeps (for tests with threads).
pub fn sleeping_env(now: Timestamp, seed: u64) -> Env {
    Env::new(now, Box::new(SplitMix64(seed)), std::thread::sleep)
}

/// The test configuration with the CAS open strategy. Every test names the
/// strategy it exercises (`config` or `cursor_config`), whatever the default.
pub fn config() -> Config {
    config_with(hongbao::record::Strategy::Cas)
}

/// The test configuration with the cursor open strategy.
pub fn cursor_config() -> Config {
    config_with(hongbao::record::Strategy::Cursor)
}

fn config_with(strategy: hongbao::record::Strategy) -> Config {
    let mut config = Config::for_tests();
    config.open_strategy = strategy.into();
    config
}

/// A service at `now`; each gets its own random stream (seeded, so runs repeat).
pub fn svc<'a, S: Store>(store: &'a S, config: &'a Config, now: Timestamp) -> Service<'a, S> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let seed = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Service::new(store, config, env(now, seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
}

pub fn terms(kind: Kind, total: u64, count: u32) -> WrapTerms {
    WrapTerms { kind, total_fen: Fen(total), count, greeting: Some("恭喜发财".into()), group_id: Some("g1".into()) }
}

pub fn wrap_request(rid: &str, kind: Kind, total: u64, count: u32) -> WrapRequest {
    WrapRequest { request_id: rid.into(), terms: terms(kind, total, count) }
}

/// Wraps and pays a packet at `now`; returns its id.
pub fn paid_packet<S: Store>(
    store: &S,
    config: &Config,
    now: Timestamp,
    sender: &str,
    kind: Kind,
    total: u64,
    count: u32,
) -> PacketId {
    let mut s = svc(store, config, now);
    let (status, view) = s.wrap(sender, &wrap_request(&format!("r-{}", now.0), kind, total, count)).unwrap();
    assert_eq!(status, 201);
    let id = PacketId::parse(&view.id).unwrap();
    s.pay(&id, &payment(&id, &format!("pay-{id}"), total)).unwrap();
    id
}

/// The payment system's callback for packet `id`.
pub fn payment(id: &PacketId, payment_id: &str, amount: u64) -> PaymentRequest {
    PaymentRequest { packet_id: id.to_string(), payment_id: payment_id.into(), amount_fen: Fen(amount) }
}

/// Grab then open, as a client does.
pub fn grab_and_open<S: Store>(
    store: &S,
    config: &Config,
    env: Env,
    id: &PacketId,
    user: &str,
) -> Result<OpenView, Error> {
    let mut s = Service::new(store, config, env);
    let ticket = match s.grab(id, user) {
        Ok(grabbed) => grabbed.ticket,
        // Already claimed: open answers the same claim again with any valid ticket.
        Err(Error::AlreadyClaimed(_)) => ticket_as_grab_issues(store, config, id, user, s.env.now.plus_seconds(60)),
        Err(e) => return Err(e),
    };
    s.open(id, user, &ticket)
}

/// A ticket as grab issues it (carrying the packet's facts), read straight
/// from `store`, valid until `expires_at`.
pub fn ticket_as_grab_issues<S: Store>(
    store: &S,
    config: &Config,
    id: &PacketId,
    user: &str,
    expires_at: Timestamp,
) -> String {
    let facts = load(store, id).facts();
    hongbao::auth::issue_ticket(config.auth_secret().unwrap(), id.as_str(), user, expires_at, facts.as_ref())
}

pub fn load<S: Store>(store: &S, id: &PacketId) -> Packet {
    Packet::decode(&store.get(&keys::packet(id)).unwrap().expect("packet exists")).unwrap()
}

pub fn memory() -> MemoryStore {
    MemoryStore::new()
}

/// Asserts every money invariant of a packet.
pub fn assert_invariants(p: &Packet) {
    assert!(p.invariant_violations().is_empty(), "{}: {:?}\n{p:#?}", p.id, p.invariant_violations());
}
