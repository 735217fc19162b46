//! A hot packet: hundreds of clients, each its own user on its own
//! connection, open one packet of 100 shares at once through the durable
//! store. Exactly 100 claims, one per user, summing to the total; every
//! other client ends with 410 exhausted, after honouring 429 + Retry-After.

mod common;

use common::*;
use std::collections::HashMap;
use std::sync::Arc;

const CLIENTS: usize = 520;
const SHARES: u32 = 100;
const TOTAL: u64 = 88_888;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_hundred_clients_one_packet_cas() {
    five_hundred_clients_one_packet("cas").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_hundred_clients_one_packet_cursor() {
    five_hundred_clients_one_packet("cursor").await;
}

async fn five_hundred_clients_one_packet(strategy: &str) {
    let state = TempDir::new(&format!("hot-{strategy}")).unwrap();
    // A low admission bound so the 429 path is really taken.
    let spec = HostSpec::app().durable(&state.0).var("admission_limit", "150").var("open_strategy", strategy);
    let host = HostProcess::start(&spec);
    let mut api = Api::new(host.addr);
    let id = Arc::new(api.paid_packet("sender", "lucky", TOTAL, SHARES).await);

    let start = Arc::new(tokio::sync::Barrier::new(CLIENTS));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (id, start, addr) = (Arc::clone(&id), Arc::clone(&start), host.addr);
            tokio::spawn(async move {
                let mut api = Api::new(addr);
                let user = format!("u{i:03}");
                start.wait().await;
                let (outcome, busy) = grab_and_open(&mut api, &id, &user).await.expect("client finishes");
                (user, outcome, busy)
            })
        })
        .collect();
    let mut results = Vec::new();
    for c in clients {
        results.push(c.await.unwrap());
    }

    let busy: u32 = results.iter().map(|(_, _, b)| b).sum();
    assert!(busy > 0, "the admission bound answered 429 to some");
    let claims: HashMap<&str, &serde_json::Value> = results
        .iter()
        .filter_map(|(u, o, _)| match o {
            Outcome::Claimed(c) => Some((u.as_str(), c)),
            Outcome::Exhausted => None,
        })
        .collect();
    assert_eq!(claims.len(), SHARES as usize, "exactly one claim per share");
    assert_eq!(results.iter().filter(|(_, o, _)| *o == Outcome::Exhausted).count(), CLIENTS - SHARES as usize);
    let sum: u64 = claims.values().map(|c| c["amount_fen"].as_u64().unwrap()).sum();
    assert_eq!(sum, TOTAL, "shares sum to the total");
    assert!(claims.values().all(|c| c["amount_fen"].as_u64().unwrap() >= 1));
    for (user, claim) in &claims {
        assert_eq!(claim["user"].as_str(), Some(*user), "each claim is its client's own");
    }

    // The packet agrees with what the clients were told.
    let view = api.query(&id, "sender").await.json();
    assert_eq!(view["status"], "exhausted");
    assert_eq!((view["remaining_count"].as_u64(), view["remaining_fen"].as_u64()), (Some(0), Some(0)));
    let recorded = view["claims"].as_array().unwrap();
    assert_eq!(recorded.len(), SHARES as usize);
    let seqs: Vec<u64> = recorded.iter().map(|c| c["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=u64::from(SHARES)).collect::<Vec<_>>(), "claims in seq order");
    for c in recorded {
        assert_eq!(&c, claims.get(c["user"].as_str().unwrap()).expect("recorded claim was answered"));
    }
    let settled = api.admin("POST", "/v1/admin/settle").await.json();
    assert_eq!(settled["credited_fen"].as_u64(), Some(TOTAL));
    let day = hongbao::Timestamp(now()).day();
    let report = api.admin("GET", &format!("/v1/admin/reconcile?day={day}")).await.json();
    assert_eq!(report["mismatches"], serde_json::json!([]));
    assert_eq!(report["credited_fen"].as_u64(), Some(TOTAL));
}
