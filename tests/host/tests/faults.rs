//! The whole service on a store that misbehaves as real ones do:
//! `hongbao-host up --faults error=0.02,cas_lie=0.05` (2% of store calls fail
//! doing nothing; 5% of swaps write but report cas-failed, as Spin 4's Redis
//! store does). A hot packet and many small ones are opened by concurrent
//! clients while settle and expire run alongside. Every answer is a success,
//! a contract refusal, or a retryable 429/503 (never a 500), and once the
//! clients retried to the end the books balance to the fen.

mod common;

use common::*;
use hongbao_host::client::Reply;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;

const FAULTS: &str = "error=0.02,cas_lie=0.05";

/// Sends until the answer is final: 429 and 503 mean "nothing known to be
/// done, retry" (the contract's retryable answers); a 5xx other than 503 is
/// a failure of the test.
macro_rules! final_answer {
    ($send:expr) => {{
        let mut attempts = 0;
        loop {
            let reply: Reply = $send;
            assert!(
                reply.status < 500 || reply.status == 503,
                "{}: {}",
                reply.status,
                String::from_utf8_lossy(&reply.body)
            );
            if reply.status != 429 && reply.status != 503 {
                break reply;
            }
            attempts += 1;
            assert!(attempts < 3_000, "still {} after {attempts} tries", reply.status);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }};
}

async fn paid_packet(api: &mut Api, sender: &str, total: u64, count: u32) -> String {
    let body =
        json!({"request_id": format!("r-{}", rand_suffix()), "kind": "lucky", "total_fen": total, "count": count});
    let wrapped = final_answer!(api.wrap(sender, body.clone()).await);
    assert!(wrapped.status == 201 || wrapped.status == 200, "{:?}", wrapped.json());
    let id = wrapped.json()["id"].as_str().unwrap().to_owned();
    let paid = final_answer!(api.pay(&id, &format!("pay-{id}"), total).await);
    assert_eq!(paid.status, 200, "{:?}", paid.json());
    id
}

/// Grab then open until final; the claim, or `None` when the packet was
/// exhausted for this user.
async fn claim(api: &mut Api, id: &str, user: &str) -> Option<Value> {
    loop {
        let grabbed = final_answer!(api.grab(id, user).await);
        match (grabbed.status, grabbed.code().as_deref()) {
            (200, _) => {}
            (409, Some("already_claimed")) => return Some(grabbed.json()["claim"].clone()),
            (410, Some("exhausted")) => return None,
            other => panic!("grab: {other:?} {:?}", grabbed.json()),
        }
        let ticket = grabbed.json()["ticket"].as_str().unwrap().to_owned();
        let opened = final_answer!(api.open(id, user, &ticket).await);
        match (opened.status, opened.code().as_deref()) {
            (200, _) => return Some(opened.json()["claim"].clone()),
            (410, Some("exhausted")) => return None,
            // The ticket outlived a long run of retries: grab again.
            (403, Some("invalid_ticket")) => continue,
            other => panic!("open: {other:?} {:?}", opened.json()),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_books_balance_on_a_store_that_fails_and_lies() {
    // The cas strategy, so every packet ends exhausted without waiting for
    // expiry: under cursor, a share the cursor handed to an attempt that
    // then failed stays free until the expiry sweep refunds it (the
    // simulator follows cursor packets under faults through expiry).
    let host = HostProcess::start(&HostSpec::app().var("open_strategy", "cas").arg("--faults").arg(FAULTS));
    host.log_line("injecting store faults").await;
    let mut api = Api::new(host.addr);
    // A hot packet and small ones.
    let mut packets = vec![(paid_packet(&mut api, "sender", 10_000, 40).await, 10_000u64, 50u32)];
    for p in 0..8 {
        packets.push((paid_packet(&mut api, &format!("s{p}"), 300 + p, 3).await, 300 + p, 5));
    }

    // Settle and expire keep running while the clients open.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sweeper = {
        let (addr, stop) = (host.addr, std::sync::Arc::clone(&stop));
        tokio::spawn(async move {
            let mut api = Api::new(addr);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for path in ["/v1/admin/settle", "/v1/admin/expire"] {
                    let reply = final_answer!(api.admin("POST", path).await);
                    assert_eq!(reply.status, 200, "{:?}", reply.json());
                }
            }
        })
    };
    let mut clients = Vec::new();
    for (id, _, users) in &packets {
        for u in 0..*users {
            let (addr, id, user) = (host.addr, id.clone(), format!("u{u}"));
            clients.push(tokio::spawn(async move {
                let mut api = Api::new(addr);
                (id.clone(), user.clone(), claim(&mut api, &id, &user).await)
            }));
        }
    }
    let mut told: HashMap<(String, String), Value> = HashMap::new();
    for client in clients {
        let (id, user, claim) = client.await.unwrap();
        if let Some(claim) = claim {
            told.insert((id, user), claim);
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sweeper.await.unwrap();

    // Settle until a run finds nothing left to do; the books balance.
    let day = hongbao::PacketId::parse(&packets[0].0).unwrap().day();
    let books = hongbao_host::client::settle_and_reconcile(&mut api.client, ADMIN, day).await.unwrap();
    let total: u64 = packets.iter().map(|(_, total, _)| total).sum();
    assert_eq!((books.report.claimed_fen, books.report.credited_fen), (total, total), "{books:?}");
    let mut wallets: HashMap<String, u64> = HashMap::new();
    for (id, total, _) in &packets {
        let view = final_answer!(api.query(id, "sender-of-nothing").await).json();
        assert_eq!(view["status"], "exhausted", "{id}: every packet has more users than shares");
        let sender = view["sender"].as_str().unwrap().to_owned();
        let view = final_answer!(api.query(id, &sender).await).json();
        let claims = view["claims"].as_array().unwrap();
        assert_eq!(claims.iter().map(|c| c["amount_fen"].as_u64().unwrap()).sum::<u64>(), *total, "{id}");
        assert!(claims.iter().all(|c| c["amount_fen"].as_u64().unwrap() >= 1));
        for c in claims {
            let user = c["user"].as_str().unwrap().to_owned();
            assert_eq!(told.get(&(id.clone(), user.clone())), Some(c), "{id}: what {user} was told");
            *wallets.entry(user).or_default() += c["amount_fen"].as_u64().unwrap();
        }
        assert_eq!(told.keys().filter(|(p, _)| p == id).count(), claims.len(), "{id}: one claim per user");
    }
    for (user, expected) in &wallets {
        let wallet = final_answer!(api.user("wallet", user).await).json();
        assert_eq!(wallet["balance_fen"].as_u64(), Some(*expected), "wallet of {user}");
    }
}
