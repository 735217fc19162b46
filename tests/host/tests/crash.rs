//! kill -9 in the middle of a hot packet. Every answer a client got before
//! the kill must hold after the restart (writes are durable before the
//! response), the packet then finishes normally, and the books balance.

mod common;

use common::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

const CLIENTS: usize = 300;
const SHARES: u32 = 100;
const TOTAL: u64 = 50_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_mid_packet_loses_nothing() {
    let state = TempDir::new("crash").unwrap();
    // The CAS strategy: a kill there can never strand a share, so the packet
    // must finish. (A cursor-strategy open killed between its open marker
    // and its share mapping leaves a share to expiry's refund; the shared
    // crate's crash tests cover that at every store call.)
    let spec = HostSpec::app().durable(&state.0).var("open_strategy", "cas");
    let mut host = HostProcess::start(&spec);
    let mut api = Api::new(host.addr);
    let id = Arc::new(api.paid_packet("sender", "lucky", TOTAL, SHARES).await);

    // Clients follow the current address; a restart publishes the new one.
    let (addr_tx, addr_rx) = watch::channel(host.addr);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (id, mut addr_rx) = (Arc::clone(&id), addr_rx.clone());
            tokio::spawn(async move {
                let user = format!("c{i:03}");
                // Spread the arrivals so the kill lands mid-packet.
                tokio::time::sleep(Duration::from_millis((i as u64 * 7919) % 2_000)).await;
                let mut answered_before_kill = None;
                loop {
                    let addr = *addr_rx.borrow_and_update();
                    let mut api = Api::new(addr);
                    match grab_and_open(&mut api, &id, &user).await {
                        Ok((outcome, _)) => return (user, outcome, answered_before_kill),
                        // An answer the contract does not allow is a failure, not a crash.
                        Err(e) if e.to_string().contains("unexpected") => panic!("{user}: {e}"),
                        Err(_) => {
                            // The host died under us: remember nothing was
                            // answered, wait for the restart, try again.
                            if answered_before_kill.is_none() {
                                answered_before_kill = Some(false);
                            }
                            if *addr_rx.borrow() == addr {
                                let _ = tokio::time::timeout(Duration::from_secs(30), addr_rx.changed()).await;
                            }
                        }
                    }
                }
            })
        })
        .collect();

    // Kill once a good part of the packet is claimed, not all of it.
    let mut before_kill = serde_json::Value::Null;
    for _ in 0..500 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let view = api.query(&id, "sender").await.json();
        if view["claims"].as_array().map_or(0, Vec::len) >= 30 {
            before_kill = view;
            break;
        }
    }
    let claimed_before = before_kill["claims"].as_array().expect("claims appeared").clone();
    host.kill();
    assert!((claimed_before.len() as u32) < SHARES, "the kill landed mid-packet");

    host = HostProcess::start(&spec);
    addr_tx.send(host.addr).unwrap();
    let mut results = Vec::new();
    for c in clients {
        results.push(tokio::time::timeout(Duration::from_secs(120), c).await.expect("clients finish").unwrap());
    }

    let mut api = Api::new(host.addr);
    let view = api.query(&id, "sender").await.json();
    let recorded = view["claims"].as_array().unwrap();
    // Every claim visible before the kill (it was durable before being shown) is still there, unchanged.
    for claim in &claimed_before {
        assert!(recorded.contains(claim), "lost after kill -9: {claim}");
    }
    assert_eq!(recorded.len(), SHARES as usize);
    assert_eq!(view["status"], "exhausted");
    let sum: u64 = recorded.iter().map(|c| c["amount_fen"].as_u64().unwrap()).sum();
    assert_eq!(sum, TOTAL);
    let by_user: HashMap<&str, &serde_json::Value> =
        recorded.iter().map(|c| (c["user"].as_str().unwrap(), c)).collect();
    assert_eq!(by_user.len(), SHARES as usize, "one claim per user");
    // What each client was finally told matches the record.
    let mut told = 0;
    for (user, outcome, _) in &results {
        match outcome {
            Outcome::Claimed(claim) => {
                assert_eq!(Some(&claim), by_user.get(user.as_str()), "{user}");
                told += 1;
            }
            Outcome::Exhausted => {
                assert!(!by_user.contains_key(user.as_str()), "{user} was told exhausted but has a claim")
            }
        }
    }
    assert_eq!(told, SHARES as usize);
    assert!(results.iter().any(|(_, _, interrupted)| interrupted.is_some()), "some clients saw the crash");

    let settled = api.admin("POST", "/v1/admin/settle").await.json();
    assert_eq!(settled["credited_fen"].as_u64(), Some(TOTAL));
    let day = hongbao::Timestamp(now()).day();
    let report = api.admin("GET", &format!("/v1/admin/reconcile?day={day}")).await.json();
    assert_eq!(report["mismatches"], serde_json::json!([]));
    assert_eq!(report["claimed_fen"].as_u64(), Some(TOTAL));
    assert_eq!(report["credited_fen"].as_u64(), Some(TOTAL));
}
