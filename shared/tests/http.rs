//! Every status code and error code of the contract (`api.md` v1.1, and
//! `openapi.yaml`), each produced by a real request through
//! `hongbao::http::serve` over the strict in-memory store: a change of the
//! contract's answers fails here, natively, without building a component.

mod common;

use common::*;
use hongbao::http::{self, Endpoint, Request, Response};
use hongbao::ops::PlacementCache;
use hongbao::store::faulty::{Faults, FaultyStore};
use hongbao::store::memory::MemoryStore;
use hongbao::{Config, Error, Store, Timestamp};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};

const ALL: u32 = http::endpoints(&Endpoint::ALL);

/// Every (status, code) the contract can answer; `None` for a success.
const CONTRACT: &[(u16, Option<&str>)] = &[
    (200, None),
    (201, None),
    (400, Some("invalid_json")),
    (401, Some("unauthorized")),
    (401, Some("bad_signature")),
    (403, Some("invalid_ticket")),
    (404, Some("not_found")),
    (405, Some("method_not_allowed")),
    (409, Some("idempotency_conflict")),
    (409, Some("already_paid")),
    (409, Some("payment_reused")),
    (409, Some("too_many_unpaid")),
    (409, Some("not_sent")),
    (409, Some("already_claimed")),
    (410, Some("expired")),
    (410, Some("exhausted")),
    (413, Some("payload_too_large")),
    (422, Some("invalid_argument")),
    (422, Some("amount_mismatch")),
    (429, Some("busy")),
    (500, Some("internal")),
    (503, Some("unavailable")),
];

/// One request to the whole HTTP surface.
struct Call<'a> {
    method: &'a str,
    path: String,
    query: Option<&'a str>,
    authorization: Option<String>,
    signature: Option<String>,
    body: Vec<u8>,
    now: Timestamp,
}

impl<'a> Call<'a> {
    fn new(method: &'a str, path: impl Into<String>) -> Call<'a> {
        Call { method, path: path.into(), query: None, authorization: None, signature: None, body: vec![], now: T0 }
    }

    fn user(mut self, user: &str) -> Self {
        let token = hongbao::auth::sign_user_token("test-auth-secret", user, self.now.plus_seconds(3600));
        self.authorization = Some(format!("Bearer {token}"));
        self
    }

    fn body(mut self, body: Value) -> Self {
        self.body = body.to_string().into_bytes();
        self
    }

    /// The payment system's signed callback paying `id`.
    fn payment(id: &str, payment_id: &str, amount: u64) -> Call<'a> {
        let body = json!({"packet_id": id, "payment_id": payment_id, "amount_fen": amount, "status": "success"});
        let mut call = Call::new("POST", format!("/v1/packets/{id}/payment")).body(body);
        call.signature = Some(hongbao::auth::sign_payment("test-payment-secret", &call.body));
        call
    }

    fn at(mut self, now: Timestamp) -> Self {
        self.now = now;
        self
    }

    fn send<S: Store>(&self, store: &S, config: Result<&Config, Error>) -> Response {
        let header = |name: &str| match name {
            "authorization" => self.authorization.clone(),
            "x-payment-signature" => self.signature.clone(),
            _ => None,
        };
        let req =
            Request { method: self.method, path: &self.path, query: self.query, header: &header, body: &self.body };
        // A fresh random stream per request, as each component instance has.
        static SEED: AtomicU64 = AtomicU64::new(1);
        let env = env(self.now, SEED.fetch_add(1, Ordering::Relaxed));
        http::serve::<ALL, S>(store, None, config, env, &PlacementCache::new(), &req)
    }
}

/// What the suite has seen: each (status, code) with the case that produced it.
#[derive(Default)]
struct Seen(BTreeSet<(u16, Option<String>)>);

impl Seen {
    /// Asserts the answer is `status` (with `code` for an error) in the
    /// contract's envelope, and returns its JSON body.
    fn expect(&mut self, case: &str, response: Response, status: u16, code: Option<&str>) -> Value {
        let body: Value = serde_json::from_slice(&response.body)
            .unwrap_or_else(|_| panic!("{case}: body is not JSON: {}", String::from_utf8_lossy(&response.body)));
        let got = body["error"]["code"].as_str().map(str::to_owned);
        assert_eq!((response.status, got.as_deref()), (status, code), "{case}: {body}");
        if code.is_some() {
            assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{case}: a message");
        }
        let retry_after = response.headers.iter().find(|(name, _)| *name == "retry-after");
        assert_eq!(retry_after.is_some(), matches!(status, 429 | 503), "{case}: Retry-After only on 429 and 503");
        self.0.insert((status, got));
        body
    }
}

fn wrap_body(request_id: &str, total: u64, count: u32) -> Value {
    json!({"request_id": request_id, "kind": "lucky", "total_fen": total, "count": count})
}

/// Wraps and pays a packet through HTTP; returns its id.
fn paid(seen: &mut Seen, store: &MemoryStore, config: &Config, request_id: &str, total: u64, count: u32) -> String {
    let wrapped = Call::new("POST", "/v1/packets").user("sender").body(wrap_body(request_id, total, count));
    let id = seen.expect("wrap", wrapped.send(store, Ok(config)), 201, None)["id"].as_str().unwrap().to_owned();
    let paid = Call::payment(&id, &format!("pay-{request_id}"), total).send(store, Ok(config));
    seen.expect("pay", paid, 200, None);
    id
}

fn grab(store: &MemoryStore, config: &Config, id: &str, user: &str) -> Response {
    Call::new("POST", format!("/v1/packets/{id}/grab")).user(user).send(store, Ok(config))
}

fn open(store: &MemoryStore, config: &Config, id: &str, user: &str, ticket: &str) -> Response {
    Call::new("POST", format!("/v1/packets/{id}/open"))
        .user(user)
        .body(json!({"ticket": ticket}))
        .send(store, Ok(config))
}

#[test]
fn every_answer_of_the_contract_comes_from_serve() {
    for config in [config(), cursor_config()] {
        every_answer_with(&config);
    }
}

fn every_answer_with(config: &Config) {
    let store = memory();
    let mut seen = Seen::default();

    // Wrap: bad JSON, no token, bad terms, too large, a conflicting replay.
    let wrap = |body: Vec<u8>| Call { body, ..Call::new("POST", "/v1/packets").user("sender") };
    seen.expect("not JSON", wrap(b"{not json".to_vec()).send(&store, Ok(config)), 400, Some("invalid_json"));
    let anonymous = Call::new("POST", "/v1/packets").body(wrap_body("r0", 100, 2));
    seen.expect("no token", anonymous.send(&store, Ok(config)), 401, Some("unauthorized"));
    let zero = wrap(wrap_body("r0", 100, 0).to_string().into_bytes());
    seen.expect("count 0", zero.send(&store, Ok(config)), 422, Some("invalid_argument"));
    seen.expect("65 KiB", wrap(vec![b' '; 65 * 1024]).send(&store, Ok(config)), 413, Some("payload_too_large"));
    let id = paid(&mut seen, &store, config, "r1", 1_000, 2);
    let replay = wrap(wrap_body("r1", 1_000, 3).to_string().into_bytes());
    seen.expect("same request_id, other terms", replay.send(&store, Ok(config)), 409, Some("idempotency_conflict"));

    // Routing.
    seen.expect("no route", Call::new("GET", "/v1/nothing").send(&store, Ok(config)), 404, Some("not_found"));
    let unknown = Call::new("GET", "/v1/packets/h00000000000000000000000000").user("sender");
    seen.expect("unknown packet", unknown.send(&store, Ok(config)), 404, Some("not_found"));
    let wrong_method = Call::new("GET", format!("/v1/packets/{id}/grab")).user("a");
    seen.expect("GET on grab", wrong_method.send(&store, Ok(config)), 405, Some("method_not_allowed"));

    // Payment: bad signature, another payment for a paid packet, a payment id
    // reused for another packet, a wrong amount.
    let mut forged = Call::payment(&id, "pay-r1", 1_000);
    forged.signature = Some(hongbao::auth::sign_payment("not-the-secret", &forged.body));
    seen.expect("forged callback", forged.send(&store, Ok(config)), 401, Some("bad_signature"));
    seen.expect(
        "second payment",
        Call::payment(&id, "pay-x", 1_000).send(&store, Ok(config)),
        409,
        Some("already_paid"),
    );
    let unpaid = Call::new("POST", "/v1/packets").user("sender").body(wrap_body("r2", 500, 5));
    let unpaid = seen.expect("wrap", unpaid.send(&store, Ok(config)), 201, None)["id"].as_str().unwrap().to_owned();
    let reused = Call::payment(&unpaid, "pay-r1", 500).send(&store, Ok(config));
    seen.expect("payment id of another packet", reused, 409, Some("payment_reused"));
    let short = Call::payment(&unpaid, "pay-r2", 499).send(&store, Ok(config));
    seen.expect("wrong amount", short, 422, Some("amount_mismatch"));
    seen.expect("grab unpaid", grab(&store, config, &unpaid, "a"), 409, Some("not_sent"));

    // Grab and open: a claim, a second claim, a forged ticket, exhaustion.
    let ticket = seen.expect("grab", grab(&store, config, &id, "a"), 200, None)["ticket"].as_str().unwrap().to_owned();
    seen.expect("open", open(&store, config, &id, "a", &ticket), 200, None);
    seen.expect("grab again", grab(&store, config, &id, "a"), 409, Some("already_claimed"));
    seen.expect("open again", open(&store, config, &id, "a", &ticket), 200, None);
    seen.expect("someone else's ticket", open(&store, config, &id, "b", &ticket), 403, Some("invalid_ticket"));
    let ticket = seen.expect("grab", grab(&store, config, &id, "b"), 200, None)["ticket"].as_str().unwrap().to_owned();
    seen.expect("open", open(&store, config, &id, "b", &ticket), 200, None);
    seen.expect("grab empty", grab(&store, config, &id, "c"), 410, Some("exhausted"));
    seen.expect("query", Call::new("GET", format!("/v1/packets/{id}")).user("a").send(&store, Ok(config)), 200, None);

    // Expiry, by the clock.
    let late = paid(&mut seen, &store, config, "r3", 300, 3);
    let after = T0.plus_seconds(config.packet_ttl_seconds);
    let expired = Call::new("POST", format!("/v1/packets/{late}/grab")).at(after).user("a").send(&store, Ok(config));
    seen.expect("grab after expiry", expired, 410, Some("expired"));

    // Too many unpaid packets of today.
    let mut strict = config.clone();
    strict.max_unpaid_per_user = 1;
    let first = Call::new("POST", "/v1/packets").user("hoarder").body(wrap_body("h1", 100, 1));
    seen.expect("first unpaid", first.send(&store, Ok(&strict)), 201, None);
    let second = Call::new("POST", "/v1/packets").user("hoarder").body(wrap_body("h2", 100, 1));
    seen.expect("second unpaid", second.send(&store, Ok(&strict)), 409, Some("too_many_unpaid"));

    // Load shed before the store: one admission per second.
    let hot = paid(&mut seen, &store, config, "r4", 1_000, 10);
    let mut shed = config.clone();
    shed.admission_limit = 1;
    seen.expect("first grab", grab(&store, &shed, &hot, "a"), 200, None);
    seen.expect("second grab, same second", grab(&store, &shed, &hot, "b"), 429, Some("busy"));

    // A deployment error, and a store that fails.
    let missing = Call::new("GET", format!("/v1/packets/{id}")).user("a");
    let unconfigured = Config::load(|_| None);
    let answer = missing.send(&store, unconfigured.as_ref().map_err(Error::clone));
    seen.expect("no auth_secret given", answer, 500, Some("internal"));
    let broken = FaultyStore::new(MemoryStore::new(), Faults { crash_at: Some(1), ..Faults::default() });
    let down = Call::new("GET", format!("/v1/packets/{id}")).user("a").send(&broken, Ok(config));
    seen.expect("store down", down, 503, Some("unavailable"));

    let want: BTreeSet<(u16, Option<String>)> =
        CONTRACT.iter().map(|(status, code)| (*status, code.map(str::to_owned))).collect();
    assert_eq!(seen.0, want, "the answers seen are exactly the contract's");
}

/// The demo's two endpoints: 404 unless `demo_mode` is on; then a sign-in is
/// a real (short-lived) token and the demo payment pays the sender's own
/// packet, once, for its total.
#[test]
fn demo_endpoints_exist_only_in_demo_mode() {
    let mut seen = Seen::default();
    let store = MemoryStore::new();
    let off = Config::for_tests();
    let sign_in = |name: &str| Call::new("POST", "/v1/demo/sign-in").body(json!({"name": name}));
    let body = seen.expect("sign-in, demo off", sign_in("alice").send(&store, Ok(&off)), 404, Some("not_found"));
    assert!(!body.to_string().contains("token"));
    let id = paid(&mut seen, &store, &off, "demo-off", 100, 2);
    let pay = |user: &str, id: &str| Call::new("POST", "/v1/demo/payment").user(user).body(json!({"packet_id": id}));
    seen.expect("pay, demo off", pay("sender", &id).send(&store, Ok(&off)), 404, Some("not_found"));

    let mut on = Config::for_tests();
    on.demo_mode = true;
    seen.expect("sign-in, bad name", sign_in("a b").send(&store, Ok(&on)), 422, Some("invalid_argument"));
    let signed = seen.expect("sign-in", sign_in("alice").send(&store, Ok(&on)), 200, None);
    assert_eq!(signed["user"], "alice");
    let token = signed["token"].as_str().unwrap();
    let lasts = http::DEMO_TOKEN_SECONDS;
    let demo_secret = hongbao::auth::demo_token_secret("test-auth-secret");
    let bearer = format!("Bearer {token}");
    assert_eq!(hongbao::auth::verify_user(Some(&bearer), &demo_secret, T0), Ok("alice".into()));
    let late = hongbao::auth::verify_user(Some(&bearer), &demo_secret, T0.plus_seconds(lasts));
    assert!(late.is_err(), "the token expires after {lasts} s");

    let wrap = |request_id: &str| {
        let mut wrap = Call::new("POST", "/v1/packets").body(wrap_body(request_id, 300, 3));
        wrap.authorization = Some(bearer.clone());
        wrap
    };
    let id = seen.expect("wrap as alice", wrap("demo-1").send(&store, Ok(&on)), 201, None)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // A demo token is no user token once demo mode is off.
    seen.expect("demo token, demo off", wrap("demo-2").send(&store, Ok(&off)), 401, Some("unauthorized"));
    seen.expect("pay, not the sender", pay("bob", &id).send(&store, Ok(&on)), 422, Some("invalid_argument"));
    seen.expect(
        "pay, no token",
        Call::new("POST", "/v1/demo/payment").body(json!({"packet_id": id})).send(&store, Ok(&on)),
        401,
        Some("unauthorized"),
    );
    seen.expect("pay, malformed id", pay("alice", "nope").send(&store, Ok(&on)), 404, Some("not_found"));
    let elsewhere = paid(&mut seen, &MemoryStore::new(), &on, "demo-elsewhere", 100, 1);
    seen.expect("pay, unknown packet", pay("alice", &elsewhere).send(&store, Ok(&on)), 404, Some("not_found"));
    for attempt in ["pay", "pay again"] {
        let view = seen.expect(attempt, pay("alice", &id).send(&store, Ok(&on)), 200, None);
        assert_eq!((view["status"].as_str(), view["remaining_fen"].as_u64()), (Some("active"), Some(300)), "{attempt}");
    }
    let grabbed = seen.expect("grab", grab(&store, &on, &id, "bob"), 200, None);
    let opened = open(&store, &on, &id, "bob", grabbed["ticket"].as_str().unwrap());
    assert!(seen.expect("open", opened, 200, None)["claim"]["amount_fen"].as_u64().unwrap() >= 1);
}

/// The purge's answers (an admin extension of the contract): the admin token
/// only; a day inside the retention is 422; a day whose money still moves is
/// 409 `day_not_closed`; a closed day past it is purged, and by default the
/// newest such day is.
#[test]
fn the_purge_answers_by_the_day_and_its_books() {
    let (store, config) = (MemoryStore::new(), config());
    let mut seen = Seen::default();
    let admin = |query, now: Timestamp| {
        let mut call = Call::new("POST", "/v1/admin/purge").at(now);
        call.query = query;
        call.authorization = Some("Bearer test-admin-token".into());
        call
    };
    let id = paid(&mut seen, &store, &config, "old", 300, 3);
    let ticket = seen.expect("grab", grab(&store, &config, &id, "a"), 200, None)["ticket"].as_str().unwrap().to_owned();
    seen.expect("open", open(&store, &config, &id, "a", &ticket), 200, None);
    let day = T0.day().to_string();
    let query = format!("day={day}");
    let query = query.as_str();
    let month_later = T0.plus_seconds(40 * DAY);

    let user = Call::new("POST", "/v1/admin/purge").user("a").send(&store, Ok(&config));
    seen.expect("a user's token", user, 401, Some("unauthorized"));
    seen.expect(
        "inside the retention",
        admin(Some(query), T0).send(&store, Ok(&config)),
        422,
        Some("invalid_argument"),
    );
    seen.expect(
        "bad day",
        admin(Some("day=2026-13-01"), month_later).send(&store, Ok(&config)),
        422,
        Some("invalid_argument"),
    );
    // Refunded by expiry but never settled: the money has not reached the wallets.
    let sweep = |path: &str| Call { path: path.into(), ..admin(None, T0.plus_seconds(2 * DAY)) };
    let expire = sweep("/v1/admin/expire");
    seen.expect("expire", expire.send(&store, Ok(&config)), 200, None);
    seen.expect("unsettled", admin(Some(query), month_later).send(&store, Ok(&config)), 409, Some("day_not_closed"));
    seen.expect("settle", sweep("/v1/admin/settle").send(&store, Ok(&config)), 200, None);

    // In batches of 5 keys listed: the caller goes on with each cursor.
    let mut small = config.clone();
    small.purge_keys_per_call = 5;
    let mut purged = seen.expect("purge", admin(Some(query), month_later).send(&store, Ok(&small)), 200, None);
    let (mut calls, mut deleted) = (1, purged["deleted_keys"].as_u64().unwrap());
    while let Some(cursor) = purged["next_cursor"].as_str() {
        let go_on = format!("cursor={cursor}");
        let mut call = Call::new("POST", "/v1/admin/purge").at(month_later);
        (call.query, call.authorization) = (Some(go_on.as_str()), Some("Bearer test-admin-token".into()));
        purged = seen.expect("purge, going on", call.send(&store, Ok(&small)), 200, None);
        (calls, deleted) = (calls + 1, deleted + purged["deleted_keys"].as_u64().unwrap());
    }
    assert!(calls > 3 && deleted > 5, "{calls} calls deleted {deleted} keys");
    assert_eq!(purged["day"], day.as_str());
    assert_eq!((purged["report"]["packets"].as_u64(), purged["report"]["total_fen"].as_u64()), (Some(1), Some(300)));
    assert_eq!(purged["report"]["purged"], true);
    seen.expect(
        "bad cursor",
        admin(Some("cursor=xyz"), month_later).send(&store, Ok(&config)),
        422,
        Some("invalid_argument"),
    );
    let query_packet = Call::new("GET", format!("/v1/packets/{id}")).at(month_later).user("sender");
    seen.expect("purged packet", query_packet.send(&store, Ok(&config)), 404, Some("not_found"));

    // No day: the newest one past the retention (here, T0's day again).
    let default_day = T0.plus_seconds((config.retention_days + 1) * DAY);
    let again = seen.expect("purge, no day", admin(None, default_day).send(&store, Ok(&config)), 200, None);
    assert_eq!((again["day"].as_str(), again["deleted_keys"].as_u64()), (Some(day.as_str()), Some(0)));
}

/// The placement endpoint (an admin extension of the contract): the admin
/// token only; a drain or restore answers the state after it with the log;
/// a bad body is 400 or 422; draining the last open SET is 422.
#[test]
fn the_sets_endpoint_drains_restores_and_shows_its_log() {
    let (store, config) = (MemoryStore::new(), config());
    let mut seen = Seen::default();
    let admin = |method, body: Option<Value>| {
        let mut call = Call::new(method, "/v1/admin/sets");
        call.authorization = Some("Bearer test-admin-token".into());
        match body {
            Some(body) => call.body(body),
            None => call,
        }
    };
    let user = Call::new("GET", "/v1/admin/sets").user("a").send(&store, Ok(&config));
    seen.expect("a user's token", user, 401, Some("unauthorized"));
    let view = seen.expect("view", admin("GET", None).send(&store, Ok(&config)), 200, None);
    assert_eq!((view["drained_sets"].clone(), view["log"].clone()), (json!([]), json!([])));
    assert_eq!(view["open_sets"].as_array().unwrap().len(), 10);
    assert_eq!(view["cache_seconds"], 5);

    let drain = admin("POST", Some(json!({"set": 4, "state": "drained"})));
    let view = seen.expect("drain", drain.send(&store, Ok(&config)), 200, None);
    assert_eq!(view["drained_sets"], json!([4]));
    assert_eq!(view["log"], json!([{"set": 4, "state": "drained", "at": T0.to_rfc3339()}]));
    let view = seen.expect("view after", admin("GET", None).send(&store, Ok(&config)), 200, None);
    assert_eq!(view["drained_sets"], json!([4]));
    let restore = admin("POST", Some(json!({"set": 4, "state": "open"})));
    let view = seen.expect("restore", restore.send(&store, Ok(&config)), 200, None);
    assert_eq!((view["drained_sets"].clone(), view["log"].as_array().unwrap().len()), (json!([]), 2));

    for (case, body) in [
        ("set 10", json!({"set": 10, "state": "drained"})),
        ("no state", json!({"set": 1})),
        ("bad state", json!({"set": 1, "state": "closed"})),
        ("set as text", json!({"set": "1", "state": "open"})),
    ] {
        seen.expect(case, admin("POST", Some(body)).send(&store, Ok(&config)), 422, Some("invalid_argument"));
    }
    let mut not_json = admin("POST", None);
    not_json.body = b"drain 4".to_vec();
    seen.expect("not JSON", not_json.send(&store, Ok(&config)), 400, Some("invalid_json"));
    for set in 0..9 {
        let drain = admin("POST", Some(json!({"set": set, "state": "drained"})));
        seen.expect("drain", drain.send(&store, Ok(&config)), 200, None);
    }
    let last = admin("POST", Some(json!({"set": 9, "state": "drained"})));
    seen.expect("the last open SET", last.send(&store, Ok(&config)), 422, Some("invalid_argument"));
    seen.expect("PUT", admin("PUT", None).send(&store, Ok(&config)), 405, Some("method_not_allowed"));
}
