//! Every decoder under arbitrary input: request bodies, packet ids, JWTs,
//! tickets, payment signatures and query strings, through the whole HTTP
//! surface (`hongbao::http::serve`). Never a panic, never a 500: always a
//! success or a contract error code in the contract's envelope.

mod common;

use common::*;
use hongbao::alloc::Kind;
use hongbao::http::{self, Endpoint, Request};
use hongbao::ops::PlacementCache;
use hongbao::store::memory::MemoryStore;
use proptest::prelude::*;
use serde_json::Value;

const ALL: u32 = http::endpoints(&Endpoint::ALL);

/// Codes the contract (and openapi.yaml) names.
const CODES: &[&str] = &[
    "invalid_json",
    "invalid_argument",
    "unauthorized",
    "bad_signature",
    "not_found",
    "idempotency_conflict",
    "already_paid",
    "payment_reused",
    "too_many_unpaid",
    "amount_mismatch",
    "not_sent",
    "day_not_closed",
    "expired",
    "exhausted",
    "already_claimed",
    "invalid_ticket",
    "busy",
    "payload_too_large",
    "method_not_allowed",
];

struct Input {
    method: &'static str,
    path: String,
    query: Option<String>,
    authorization: Option<String>,
    signature: Option<String>,
    body: Vec<u8>,
}

fn answer(store: &MemoryStore, input: &Input) -> (u16, Vec<u8>) {
    // Demo mode on, so its two endpoints' decoders are reached too.
    let mut config = config();
    config.demo_mode = true;
    let header = |name: &str| match name {
        "authorization" => input.authorization.clone(),
        "x-payment-signature" => input.signature.clone(),
        _ => None,
    };
    let req = Request {
        method: input.method,
        path: &input.path,
        query: input.query.as_deref(),
        header: &header,
        body: &input.body,
    };
    let response = http::serve::<ALL, _>(store, None, Ok(&config), env(T0, 5), &PlacementCache::new(), &req);
    (response.status, response.body)
}

fn assert_contract_answer(status: u16, body: &[u8]) {
    assert!(status < 500, "status {status}: {}", String::from_utf8_lossy(body));
    let json: Value = serde_json::from_slice(body).expect("every answer is JSON");
    if status >= 400 {
        let code = json["error"]["code"].as_str().expect("an error has a code");
        assert!(CODES.contains(&code), "unknown code {code}");
        assert!(json["error"]["message"].is_string());
    }
}

/// A store with one paid packet, so ids, tickets and bodies can be near-valid.
fn world() -> (MemoryStore, String) {
    let store = memory();
    let id = paid_packet(&store, &config(), T0, "sender", Kind::Lucky, 1_000, 5);
    (store, id.to_string())
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,80}",
        "[A-Za-z0-9_.=-]{0,120}",
        Just(String::new()),
        prop::collection::vec(any::<u8>(), 0..60).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        text().prop_map(String::into_bytes),
        (text(), text(), any::<i64>()).prop_map(|(a, b, n)| {
            serde_json::json!({"request_id": a, "kind": b, "total_fen": n, "count": n, "ticket": a,
                "packet_id": b, "payment_id": a, "amount_fen": n, "status": "success", "greeting": b, "name": a, "set": n, "state": b})
            .to_string()
            .into_bytes()
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_requests_get_contract_answers(
        endpoint in 0..Endpoint::ALL.len(),
        id_kind in 0..3u8,
        garbage_id in text(),
        query in prop::option::of(text()),
        token_kind in 0..4u8,
        garbage_token in text(),
        signature in prop::option::of(text()),
        sign_body in any::<bool>(),
        body in bytes(),
        wrong_method in any::<bool>(),
    ) {
        let (store, real_id) = world();
        let id = match id_kind { 0 => real_id.clone(), 1 => garbage_id.clone(), _ => format!("{real_id}{garbage_id}") };
        let endpoint = Endpoint::ALL[endpoint];
        let path = match endpoint {
            Endpoint::Wrap => "/v1/packets".to_owned(),
            Endpoint::Payment => format!("/v1/packets/{id}/payment"),
            Endpoint::Grab => format!("/v1/packets/{id}/grab"),
            Endpoint::Open => format!("/v1/packets/{id}/open"),
            Endpoint::Query => format!("/v1/packets/{id}"),
            Endpoint::Sent => "/v1/users/me/sent".into(),
            Endpoint::Received => "/v1/users/me/received".into(),
            Endpoint::Wallet => "/v1/users/me/wallet".into(),
            Endpoint::Expire => "/v1/admin/expire".into(),
            Endpoint::Settle => "/v1/admin/settle".into(),
            Endpoint::Reconcile => "/v1/admin/reconcile".into(),
            Endpoint::Purge => "/v1/admin/purge".into(),
            Endpoint::Placement | Endpoint::SetChange => "/v1/admin/sets".into(),
            Endpoint::DemoSignIn => "/v1/demo/sign-in".into(),
            Endpoint::DemoPayment => "/v1/demo/payment".into(),
        };
        let authorization = match token_kind {
            0 => Some(format!("Bearer {}", hongbao::auth::sign_user_token("test-auth-secret", "alice", T0.plus_seconds(60)))),
            1 => Some(format!("Bearer {garbage_token}")),
            // The admin endpoints' decoders too.
            2 => Some("Bearer test-admin-token".into()),
            _ => Some(garbage_token.clone()),
        };
        let signature = if sign_body {
            Some(hongbao::auth::sign_payment("test-payment-secret", &body))
        } else {
            signature
        };
        let method = match (endpoint.method(), wrong_method) {
            ("GET", false) | ("POST", true) => "GET",
            _ => "POST",
        };
        let input = Input { method, path, query, authorization, signature, body };
        let (status, body) = answer(&store, &input);
        assert_contract_answer(status, &body);
    }

    #[test]
    fn arbitrary_tickets_and_tokens_are_refused_with_their_codes(ticket in text(), token in text()) {
        let now = T0;
        let user = hongbao::auth::verify_user(Some(&format!("Bearer {token}")), "k", now);
        prop_assert!(matches!(user, Err(hongbao::Error::Unauthorized(_))));
        let t = hongbao::auth::verify_ticket("k", &ticket, "p", "alice", now);
        prop_assert!(matches!(t, Err(hongbao::Error::InvalidTicket(_))));
        // A query string of any shape: a day or 422, never a panic.
        let _ = hongbao::api::parse_day(Some(&ticket), now.day());
    }
}
