//! A hot packet: hundreds of clients, each its own user on its own
//! connection, open one packet of 100 shares at once through the durable
//! store. Exactly 100 claims, one per user, summing to the total; every
//! other client ends with 410 exhausted, after honouring 429 + Retry-After.
//!
//! The host's logical clock (`--clock-file`) stands still until every
//! client's first grab is answered: they all fall in one admission window,
//! so exactly `admission_limit` are admitted and the rest told 429, however
//! fast the machine is.

mod common;

use common::*;
use std::collections::HashMap;
use std::sync::Arc;

const CLIENTS: usize = 300;
const SHARES: u32 = 100;
const TOTAL: u64 = 88_888;
/// Grabs and opens one window admits: half the clients' first grabs.
const ADMISSION_LIMIT: usize = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hundred_clients_one_packet_cas() {
    three_hundred_clients_one_packet("cas").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hundred_clients_one_packet_cursor() {
    three_hundred_clients_one_packet("cursor").await;
}

async fn three_hundred_clients_one_packet(strategy: &str) {
    let state = TempDir::new(&format!("hot-{strategy}")).unwrap();
    let clock = Arc::new(Clock::new());
    let spec = HostSpec::app()
        .durable(&state.0)
        .var("admission_limit", &ADMISSION_LIMIT.to_string())
        .var("open_strategy", strategy)
        .clock(&clock);
    let host = HostProcess::start(&spec);
    let mut api = Api::new(host.addr);
    let id = Arc::new(api.paid_packet("sender", "lucky", TOTAL, SHARES).await);

    let first_answered = Arc::new(tokio::sync::Barrier::new(CLIENTS + 1));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (id, first_answered, addr) = (Arc::clone(&id), Arc::clone(&first_answered), host.addr);
            tokio::spawn(async move {
                let mut api = Api::new(addr);
                let user = format!("u{i:03}");
                let first = api.grab(&id, &user).await;
                first_answered.wait().await;
                let (outcome, _) = grab_and_open(&mut api, &id, &user).await.expect("client finishes");
                (user, first, outcome)
            })
        })
        .collect();
    first_answered.wait().await;
    // The Retry-After (1 s) has passed for those told 429 once the clock
    // moves on; from then on it runs at the real pace, so a client that
    // waits out a Retry-After finds a new window.
    clock.advance(1);
    let ticking = Clock::run_at_real_pace(&clock);
    let mut results = Vec::new();
    for c in clients {
        results.push(c.await.unwrap());
    }
    ticking.abort();

    let firsts = |status: u16| results.iter().filter(|(_, first, _)| first.status == status).count();
    assert_eq!(firsts(200), ADMISSION_LIMIT, "one window admits exactly admission_limit first grabs");
    assert_eq!(firsts(429), CLIENTS - ADMISSION_LIMIT, "and sheds the rest");
    for (_, first, _) in results.iter().filter(|(_, first, _)| first.status == 429) {
        assert_eq!(first.header("retry-after"), Some("1"), "told when to come back");
    }
    let claims: HashMap<&str, &serde_json::Value> = results
        .iter()
        .filter_map(|(u, _, o)| match o {
            Outcome::Claimed(c) => Some((u.as_str(), c)),
            Outcome::Exhausted => None,
        })
        .collect();
    assert_eq!(claims.len(), SHARES as usize, "exactly one claim per share");
    assert_eq!(results.iter().filter(|(_, _, o)| *o == Outcome::Exhausted).count(), CLIENTS - SHARES as usize);
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
    let books = hongbao_host::client::settle_and_reconcile(&mut api.client, ADMIN, clock.day()).await.unwrap();
    assert_eq!(books.settled[0].credited_fen, TOTAL, "the first settle credits every claim: {books:?}");
    assert_eq!(books.report.credited_fen, TOTAL);
}
