//! The whole life of packets over HTTP: wrap → payment → grab/open by many
//! users → query → expiry → refund → settle → wallets → reconcile; the same
//! driven by the host's own `--tick`; and a clean restart on the durable
//! store in between. Time is the host's logical clock (`--clock-file`): the
//! test moves it past the TTL, so nothing depends on how fast this runs.

mod common;

use common::*;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;

const TTL_SECONDS: i64 = 60;

/// Claims for `users` on a packet; returns user → amount.
async fn open_all(api: &mut Api, id: &str, users: &[String]) -> HashMap<String, u64> {
    let mut claims = HashMap::new();
    for user in users {
        match grab_and_open(api, id, user).await.unwrap().0 {
            Outcome::Claimed(claim) => {
                claims.insert(user.clone(), claim["amount_fen"].as_u64().unwrap());
            }
            Outcome::Exhausted => {}
        }
    }
    claims
}

#[tokio::test(flavor = "multi_thread")]
async fn a_packet_lives_its_whole_life() {
    let state = TempDir::new("life").unwrap();
    let clock = Clock::new();
    // No cache beyond what is not on disk yet: the sweeps read from SQLite.
    let spec = HostSpec::app()
        .durable(&state.0)
        .arg("--kv-cache-mib")
        .arg("0")
        .var("packet_ttl_seconds", &TTL_SECONDS.to_string())
        .clock(&clock);
    let mut host = HostProcess::start(&spec);
    let mut api = Api::new(host.addr);

    let lucky = api.paid_packet("sender", "lucky", 10_000, 10).await;
    let fixed = api.paid_packet("sender", "fixed", 600, 6).await;
    let users: Vec<String> = (0..7).map(|i| format!("user{i}")).collect();
    let lucky_claims = open_all(&mut api, &lucky, &users).await;
    let fixed_claims = open_all(&mut api, &fixed, &users).await;
    assert_eq!(lucky_claims.len(), 7);
    assert_eq!(fixed_claims.len(), 6, "six shares for seven users");
    assert!(fixed_claims.values().all(|&a| a == 100));

    let view = api.query(&lucky, "user0").await.json();
    assert_eq!(view["status"], "active");
    assert_eq!(view["remaining_count"], 3);
    let claimed: u64 = lucky_claims.values().sum();
    assert_eq!(view["remaining_fen"].as_u64().unwrap(), 10_000 - claimed);
    assert_eq!(view["best_luck"], Value::Null, "undecided while active");
    let fixed_view = api.query(&fixed, "user0").await.json();
    assert_eq!(fixed_view["status"], "exhausted");
    assert_eq!(fixed_view["best_luck"], fixed_view["claims"][0]["user"], "equal shares: lowest seq");

    let sent = api.user("sent", "sender").await.json();
    assert_eq!(sent["day"], clock.day().to_string());
    assert_eq!(sent["items"].as_array().unwrap().len(), 2);
    let received = api.user("received", "user0").await.json();
    assert_eq!(received["items"].as_array().unwrap().len(), 2);

    // A clean restart on the same state in the middle of the packet's life.
    assert!(host.stop().success(), "SIGTERM shuts down cleanly");
    host = HostProcess::start(&spec);
    let mut api = Api::new(host.addr);
    assert_eq!(api.query(&lucky, "user0").await.json()["claims"], view["claims"], "nothing lost on restart");

    // Expiry: nothing before the TTL, the exact remainder at it, once.
    clock.advance(TTL_SECONDS - 1);
    let early = api.admin("POST", "/v1/admin/expire").await.json();
    assert_eq!(early["refunded"], 0, "a second before the TTL");
    clock.advance(1);
    let late = grab_and_open(&mut api, &lucky, "latecomer").await;
    assert!(late.is_err(), "the packet has expired: {late:?}");
    let swept = api.admin("POST", "/v1/admin/expire").await.json();
    assert_eq!(swept["refunded"], 1);
    assert_eq!(swept["refund_fen"].as_u64().unwrap(), 10_000 - claimed);
    assert!(swept["scanned"].as_u64().unwrap() >= 2);
    assert_eq!(api.admin("POST", "/v1/admin/expire").await.json()["refunded"], 0, "exactly once");
    let refunded = api.query(&lucky, "sender").await.json();
    assert_eq!((refunded["status"].as_str(), refunded["remaining_fen"].as_u64()), (Some("refunded"), Some(0)));
    assert_eq!(refunded["refund_fen"].as_u64().unwrap(), 10_000 - claimed);
    assert_eq!(api.query(&fixed, "sender").await.json()["status"], "expired");

    // Wallets hold nothing until settle, then exactly the claims and refund.
    assert_eq!(api.user("wallet", "user0").await.json()["balance_fen"], 0);
    let settled = api.admin("POST", "/v1/admin/settle").await.json();
    assert_eq!(settled["credited"], 7 + 6 + 1);
    assert_eq!(settled["credited_fen"], 10_600);
    assert_eq!(api.admin("POST", "/v1/admin/settle").await.json()["credited"], 0, "exactly once");
    let mut wallets = 0;
    for user in &users {
        let wallet = api.user("wallet", user).await.json();
        let expected = lucky_claims.get(user).copied().unwrap_or(0) + fixed_claims.get(user).copied().unwrap_or(0);
        assert_eq!(wallet["balance_fen"].as_u64().unwrap(), expected, "{user}");
        wallets += expected;
    }
    let sender_wallet = api.user("wallet", "sender").await.json();
    assert_eq!(sender_wallet["entries"][0]["kind"], "refund");
    wallets += sender_wallet["balance_fen"].as_u64().unwrap();
    assert_eq!(wallets, 10_600, "every fen ends in exactly one wallet");

    let report = api.admin("GET", &format!("/v1/admin/reconcile?day={}", clock.day())).await.json();
    assert_eq!(report["packets"], 2);
    assert_eq!(report["total_fen"], 10_600);
    assert_eq!(report["claimed_fen"].as_u64().unwrap() + report["refunded_fen"].as_u64().unwrap(), 10_600);
    assert_eq!(report["outstanding_fen"], 0);
    assert_eq!(report["credited_fen"], 10_600);
    assert_eq!(report["mismatches"], json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_tick_refunds_and_credits_by_itself() {
    let clock = Clock::new();
    let spec = HostSpec::app().var("packet_ttl_seconds", &TTL_SECONDS.to_string()).clock(&clock).arg("--tick").arg("1");
    let host = HostProcess::start(&spec);
    let mut api = Api::new(host.addr);
    let id = api.paid_packet("sender", "lucky", 900, 3).await;
    let (claim, _) = grab_and_open(&mut api, &id, "only").await.unwrap();
    let Outcome::Claimed(claim) = claim else { panic!("claimed") };
    let amount = claim["amount_fen"].as_u64().unwrap();
    // No admin call from here on: past the TTL, the host's ticker expires and
    // settles. Its rounds come every real second; waiting for the refund's
    // credit is the event, bounded only so that a broken ticker fails.
    clock.advance(TTL_SECONDS);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let refunded = loop {
        let wallet = api.user("wallet", "sender").await.json();
        if wallet["balance_fen"].as_u64().unwrap_or(0) > 0 {
            break wallet;
        }
        assert!(tokio::time::Instant::now() < deadline, "the ticker never refunded: {wallet}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(refunded["balance_fen"].as_u64(), Some(900 - amount), "refund credited by the ticker");
    assert_eq!(api.user("wallet", "only").await.json()["balance_fen"].as_u64(), Some(amount));
    assert_eq!(api.query(&id, "only").await.json()["status"], "refunded");
}
