//! The HTTP contract end to end, through the real components, black-box:
//! authentication, idempotent replays, every error code, and a packet's
//! money through settle and reconcile. Each test runs on every target: this
//! project's host, the host playing Spin 4.0.2's Redis store, two hosts
//! sharing per-SET Redis servers (requests taking turns), and the real
//! Spin binary (`SPIN_BIN`, or `spin` on PATH) with its default SQLite store
//! and with a Redis store (skipped, with one line saying so, without one).

mod common;

use common::*;
use serde_json::json;

/// One `#[tokio::test]` per target for a contract test `async fn name(Target)`.
macro_rules! on_every_target {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread")]
            async fn on_host() {
                super::$name(Target::Host).await
            }
            #[tokio::test(flavor = "multi_thread")]
            async fn on_host_as_spin_redis() {
                super::$name(Target::HostAsSpinRedis).await
            }
            #[tokio::test(flavor = "multi_thread")]
            async fn on_two_hosts_over_redis() {
                super::$name(Target::TwoHostsOnRedis).await
            }
            #[tokio::test(flavor = "multi_thread")]
            async fn on_spin_sqlite() {
                super::$name(Target::Spin).await
            }
            #[tokio::test(flavor = "multi_thread")]
            async fn on_spin_redis() {
                super::$name(Target::SpinRedis).await
            }
        }
    )+};
}

on_every_target!(
    authentication_is_enforced_everywhere,
    replays_are_idempotent_and_conflicts_are_refused,
    bad_input_gets_the_contracts_codes,
    bodies_without_a_declared_length_stream_to_the_component,
    claims_settle_into_wallets_and_reconcile,
    drained_sets_get_no_new_packets,
);

fn wrap_body(rid: &str, total: u64, count: u32) -> serde_json::Value {
    json!({"request_id": rid, "kind": "lucky", "total_fen": total, "count": count, "greeting": "新年快乐"})
}

async fn authentication_is_enforced_everywhere(target: Target) {
    let Some(host) = target.start(HostSpec::app()) else { return };
    let mut api = host.api();
    let id = api.paid_packet("alice", "lucky", 500, 5).await;

    // Users: missing, malformed, badly signed, expired.
    let expired = format!("Bearer {}", hongbao::auth::sign_user_token(AUTH, "bob", hongbao::Timestamp(now() - 1)));
    let forged =
        format!("Bearer {}", hongbao::auth::sign_user_token("not-the-secret", "bob", hongbao::Timestamp(now() + 60)));
    for auth in
        [None, Some("Bearer not.a.jwt"), Some(expired.as_str()), Some(forged.as_str()), Some("Basic Ym9iOmJvYg==")]
    {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
        for (method, path) in [
            ("POST", "/v1/packets".to_string()),
            ("POST", format!("/v1/packets/{id}/grab")),
            ("POST", format!("/v1/packets/{id}/open")),
            ("GET", format!("/v1/packets/{id}")),
            ("GET", "/v1/users/me/sent".to_string()),
            ("GET", "/v1/users/me/received".to_string()),
            ("GET", "/v1/users/me/wallet".to_string()),
        ] {
            let reply = api.client.send(method, &path, &headers, "{}").await.unwrap();
            assert_eq!(
                (reply.status, reply.code().as_deref()),
                (401, Some("unauthorized")),
                "{method} {path} with {auth:?}"
            );
        }
    }
    // Admin endpoints take the admin token only (a user JWT is not it).
    let user = bearer("alice");
    for (method, path) in [
        ("POST", "/v1/admin/expire"),
        ("POST", "/v1/admin/settle"),
        ("GET", "/v1/admin/reconcile"),
        ("POST", "/v1/admin/purge"),
        ("GET", "/v1/admin/sets"),
    ] {
        for auth in [None, Some("Bearer wrong"), Some(user.as_str())] {
            let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
            let reply = api.client.send(method, path, &headers, "").await.unwrap();
            assert_eq!((reply.status, reply.code().as_deref()), (401, Some("unauthorized")), "{path} with {auth:?}");
        }
        assert_eq!(api.admin(method, path).await.status, 200);
    }
    // The payment callback needs the body's signature.
    let body = json!({"payment_id": "p", "amount_fen": 500, "status": "success"}).to_string();
    let other_body = hongbao::auth::sign_payment(PAYMENT, b"{}");
    let wrong_key = hongbao::auth::sign_payment("nope", body.as_bytes());
    for signature in [None, Some("sha256=00"), Some(other_body.as_str()), Some(wrong_key.as_str())] {
        let headers: Vec<(&str, &str)> = signature.map(|s| ("x-payment-signature", s)).into_iter().collect();
        let reply = api.client.post(&format!("/v1/packets/{id}/payment"), &headers, body.clone()).await.unwrap();
        assert_eq!((reply.status, reply.code().as_deref()), (401, Some("bad_signature")));
    }
}

async fn replays_are_idempotent_and_conflicts_are_refused(target: Target) {
    let Some(host) = target.start(HostSpec::app()) else { return };
    let mut api = host.api();

    let first = api.wrap("alice", wrap_body("req-1", 1000, 4)).await;
    assert_eq!(first.status, 201);
    let again = api.wrap("alice", json!({"request_id": "req-1", "kind": "lucky", "total_fen": 1000, "count": 4, "greeting": "新年快乐", "extra": true})).await;
    assert_eq!((again.status, again.json()), (200, first.json()), "unknown fields are ignored: same body");
    let conflict = api.wrap("alice", wrap_body("req-1", 1001, 4)).await;
    assert_eq!((conflict.status, conflict.code().as_deref()), (409, Some("idempotency_conflict")));
    let id = first.json()["id"].as_str().unwrap().to_owned();

    assert_eq!(api.pay(&id, "pay-1", 999).await.code().as_deref(), Some("amount_mismatch"));
    let paid = api.pay(&id, "pay-1", 1000).await;
    assert_eq!((paid.status, paid.json()["status"].as_str()), (200, Some("active")));
    let replay = api.pay(&id, "pay-1", 1000).await;
    assert_eq!((replay.status, replay.json()), (200, paid.json()), "a replay changes nothing");
    let other = api.pay(&id, "pay-2", 1000).await;
    assert_eq!((other.status, other.code().as_deref()), (409, Some("already_paid")));
    // Contract v1.1: a payment_id pays one packet only.
    let second = api.wrap("alice", wrap_body("req-2", 1000, 4)).await.json()["id"].as_str().unwrap().to_owned();
    let reused = api.pay(&second, "pay-1", 1000).await;
    assert_eq!((reused.status, reused.code().as_deref()), (409, Some("payment_reused")));

    let grabbed = api.grab(&id, "bob").await;
    let ticket = grabbed.json()["ticket"].as_str().unwrap().to_owned();
    let opened = api.open(&id, "bob", &ticket).await;
    assert_eq!(opened.status, 200);
    let reopened = api.open(&id, "bob", &ticket).await;
    assert_eq!((reopened.status, reopened.json()["claim"].clone()), (200, opened.json()["claim"].clone()));
    let regrab = api.grab(&id, "bob").await;
    assert_eq!((regrab.status, regrab.code().as_deref()), (409, Some("already_claimed")));
    assert_eq!(regrab.json()["claim"], opened.json()["claim"]);
    let view = api.query(&id, "bob").await.json();
    assert_eq!(view["claims"].as_array().unwrap().len(), 1, "one claim however often bob opens");
    // Contract v1.1: claims are private to the sender and the claimants.
    let stranger = api.query(&id, "carol").await.json();
    assert_eq!((stranger["claims"].clone(), stranger["best_luck"].clone()), (json!([]), serde_json::Value::Null));
    assert_eq!(stranger["remaining_count"], view["remaining_count"], "the rest of the view is public");
}

async fn bad_input_gets_the_contracts_codes(target: Target) {
    let Some(host) = target.start(HostSpec::app().var("max_count", "5")) else { return };
    let mut api = host.api();
    let alice = bearer("alice");
    let c = &mut api.client;
    let post = |path: &str| path.to_string();

    let reply = c.post("/v1/packets", &[("authorization", &alice)], "{not json").await.unwrap();
    assert_eq!((reply.status, reply.code().as_deref()), (400, Some("invalid_json")));
    for (body, field) in [
        (json!({"kind": "lucky", "total_fen": 10, "count": 2}), "request_id"),
        (json!({"request_id": "r", "kind": "huge", "total_fen": 10, "count": 2}), "kind"),
        (json!({"request_id": "r", "kind": "lucky", "total_fen": 1, "count": 2}), "total_fen"),
        (json!({"request_id": "r", "kind": "fixed", "total_fen": 10, "count": 3}), "total_fen"),
        (json!({"request_id": "r", "kind": "lucky", "total_fen": 10.5, "count": 2}), "total_fen"),
        // max_count comes from SPIN_VARIABLE_MAX_COUNT=5, overriding the manifest's 100.
        (json!({"request_id": "r", "kind": "lucky", "total_fen": 600, "count": 6}), "count"),
        (json!({"request_id": "r", "kind": "lucky", "total_fen": 20_001, "count": 1}), "total_fen"),
        (
            json!({"request_id": "r", "kind": "lucky", "total_fen": 10, "count": 2, "greeting": "x".repeat(101)}),
            "greeting",
        ),
    ] {
        let reply = c.post("/v1/packets", &[("authorization", &alice)], body.to_string()).await.unwrap();
        assert_eq!((reply.status, reply.code().as_deref()), (422, Some("invalid_argument")), "{body}");
        let message = reply.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(message.starts_with(field), "{message} should name {field}");
    }
    // Malformed and unknown ids are both 404 not_found, for every packet route.
    let unknown =
        hongbao::PacketId::generate(hongbao::Timestamp(now()).day(), &mut hongbao::alloc::SplitMix64(1)).to_string();
    for id in ["nope", "20261122999zzzzzzzzzzzzzzzz", unknown.as_str()] {
        for (method, path) in [("GET", format!("/v1/packets/{id}")), ("POST", format!("/v1/packets/{id}/grab"))] {
            let reply = c.send(method, &path, &[("authorization", &alice)], "").await.unwrap();
            assert_eq!((reply.status, reply.code().as_deref()), (404, Some("not_found")), "{path}");
        }
    }
    // Unknown path, wrong method, oversized body, bad day.
    let reply = c.get("/v2/whatever", &[]).await.unwrap();
    assert_eq!((reply.status, reply.code().as_deref()), (404, Some("not_found")));
    let reply = c.get(&post("/v1/packets"), &[("authorization", &alice)]).await.unwrap();
    assert_eq!((reply.status, reply.code().as_deref()), (405, Some("method_not_allowed")));
    let big = format!("{{\"request_id\":\"{}\"}}", "x".repeat(70 * 1024));
    let reply = c.post("/v1/packets", &[("authorization", &alice)], big).await.unwrap();
    assert_eq!((reply.status, reply.code().as_deref()), (413, Some("payload_too_large")));
    let reply = c.get("/v1/users/me/sent?day=2026-02-30", &[("authorization", &alice)]).await.unwrap();
    assert_eq!((reply.status, reply.code().as_deref()), (422, Some("invalid_argument")));

    // State errors: not yet paid, invalid tickets.
    let wrapped = api.wrap("alice", wrap_body("r-unpaid", 100, 2)).await;
    let id = wrapped.json()["id"].as_str().unwrap().to_owned();
    let reply = api.grab(&id, "bob").await;
    assert_eq!((reply.status, reply.code().as_deref()), (409, Some("not_sent")));
    let paid = api.paid_packet("alice", "lucky", 100, 2).await;
    let bob_ticket = api.grab(&paid, "bob").await.json()["ticket"].as_str().unwrap().to_owned();
    let other_ticket = api.grab(&id, "bob").await;
    assert_eq!(other_ticket.status, 409);
    for (user, ticket) in [("carol", bob_ticket.as_str()), ("bob", "forged.ticket"), ("bob", "")] {
        let reply = api.open(&paid, user, ticket).await;
        assert_eq!((reply.status, reply.code().as_deref()), (403, Some("invalid_ticket")), "{user} {ticket}");
    }
    let reply =
        api.client.post(&format!("/v1/packets/{paid}/open"), &[("authorization", &bearer("bob"))], "{}").await.unwrap();
    assert_eq!((reply.status, reply.code().as_deref()), (403, Some("invalid_ticket")), "missing ticket");
}

/// Sends one raw HTTP/1.1 request with a chunked body (no content-length,
/// so the host streams it to the component) and returns the status and body.
async fn post_chunked(addr: std::net::SocketAddr, path: &str, auth: &str, chunks: &[&[u8]]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request =
        format!("POST {path} HTTP/1.1\r\nhost: localhost\r\nauthorization: {auth}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n")
            .into_bytes();
    for chunk in chunks {
        request.extend(format!("{:x}\r\n", chunk.len()).into_bytes());
        request.extend_from_slice(chunk);
        request.extend(b"\r\n");
    }
    request.extend(b"0\r\n\r\n");
    stream.write_all(&request).await.unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, answer)
}

async fn bodies_without_a_declared_length_stream_to_the_component(target: Target) {
    let Some(host) = target.start(HostSpec::app()) else { return };
    let alice = bearer("alice");
    let body = wrap_body("r-chunked", 300, 3).to_string();
    let (first, rest) = body.as_bytes().split_at(10);
    let (status, answer) = post_chunked(host.addr, "/v1/packets", &alice, &[first, rest]).await;
    assert_eq!(status, 201, "{answer}");
    assert!(answer.contains("\"awaiting_payment\""), "{answer}");
    // Past the limit while streaming: refused, as a declared length would be.
    let big = format!("{{\"request_id\":\"{}\"}}", "x".repeat(40 * 1024));
    let last = *host.addrs.last().unwrap();
    let (status, answer) = post_chunked(last, "/v1/packets", &alice, &[big.as_bytes(), big.as_bytes()]).await;
    assert_eq!(status, 413, "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
}

/// What failed on Spin's Redis store before (batch reads): settle, expire,
/// reconcile and the user lists, with a packet's money followed to the fen.
async fn claims_settle_into_wallets_and_reconcile(target: Target) {
    let Some(host) = target.start(HostSpec::app()) else { return };
    let mut api = host.api();
    let id = api.paid_packet("alice", "lucky", 1_000, 3).await;
    let mut claimed = 0;
    for user in ["bob", "carol"] {
        let ticket = api.grab(&id, user).await.json()["ticket"].as_str().unwrap().to_owned();
        let opened = api.open(&id, user, &ticket).await;
        assert_eq!(opened.status, 200, "{:?}", opened.json());
        let amount = opened.json()["claim"]["amount_fen"].as_u64().unwrap();
        claimed += amount;
        let received = api.user("received", user).await.json();
        assert_eq!(received["items"][0]["amount_fen"].as_u64(), Some(amount), "{received}");
    }
    let sent = api.user("sent", "alice").await.json();
    assert_eq!(sent["items"][0]["packet_id"], id.as_str());
    let expired = api.admin("POST", "/v1/admin/expire").await;
    assert_eq!((expired.status, expired.json()["refunded"].as_u64()), (200, Some(0)), "{:?}", expired.json());
    let day = hongbao::PacketId::parse(&id).unwrap().day();
    let books = hongbao_host::client::settle_and_reconcile(&mut api.client, ADMIN, day).await.unwrap();
    let settled: Vec<(u64, u64)> = books.settled.iter().map(|s| (s.credited, s.credited_fen)).collect();
    assert_eq!(settled, [(2, claimed), (0, 0)], "credited exactly once: {books:?}");
    let mut in_wallets = 0;
    for user in ["bob", "carol"] {
        in_wallets += api.user("wallet", user).await.json()["balance_fen"].as_u64().unwrap();
    }
    assert_eq!(in_wallets, claimed);
    let report = &books.report;
    assert_eq!((report.claimed_fen, report.credited_fen), (claimed, claimed), "{report:?}");
    assert_eq!(report.outstanding_fen, 1_000 - claimed);
}

/// The placement endpoint (issue 27), through the real admin-sets component:
/// with every SET but 9 drained, new packets all land in SET 9; a bad change
/// is 422; the log lists every change.
async fn drained_sets_get_no_new_packets(target: Target) {
    let Some(host) = target.start(HostSpec::app()) else { return };
    let mut api = host.api();
    let auth = format!("Bearer {ADMIN}");
    let mut change = async |body: serde_json::Value| {
        let reply = api.client.send("POST", "/v1/admin/sets", &[("authorization", &auth)], body.to_string()).await;
        reply.unwrap()
    };
    for set in 0..9 {
        assert_eq!(change(json!({"set": set, "state": "drained"})).await.status, 200);
    }
    let refused = change(json!({"set": 9, "state": "drained"})).await;
    assert_eq!((refused.status, refused.code().as_deref()), (422, Some("invalid_argument")), "the last open SET");
    let mut api = host.api();
    for n in 0..5 {
        let id = api.paid_packet(&format!("s{n}"), "lucky", 100, 2).await;
        assert_eq!(hongbao::PacketId::parse(&id).unwrap().set(), 9, "{id}");
    }
    let view = api.admin("GET", "/v1/admin/sets").await.json();
    assert_eq!((view["open_sets"].clone(), view["log"].as_array().unwrap().len()), (json!([9]), 9), "{view}");
}
