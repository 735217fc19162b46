//! kill -9 in the middle of a hot packet. Every answer a client got before
//! the kill must hold after the restart (writes are durable before the
//! response), the packet then finishes normally, and the books balance.
//! The kill follows claims seen in the packet, and the restart a client
//! that found the host dead: events, not the machine's pace.

mod common;

use common::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};

const CLIENTS: usize = 300;
/// Clients running before the kill: fewer than the shares, so the kill lands
/// mid-packet whenever it comes; the rest start against the dead host.
const BEFORE_KILL: usize = 60;
const SHARES: u32 = 100;
const TOTAL: u64 = 50_000;
/// Claims to see before the kill.
const KILL_AT: usize = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_mid_packet_loses_nothing() {
    let state = TempDir::new("crash").unwrap();
    // The CAS strategy: a kill there can never strand a share, so the packet
    // must finish. (A cursor-strategy open killed between its open marker
    // and its share mapping leaves a share to expiry's refund; the shared
    // crate's crash tests cover that at every store call.)
    // No cache beyond what is not on disk yet: every other read comes from
    // SQLite, across the kills too.
    let spec = HostSpec::app().durable(&state.0).arg("--kv-cache-mib").arg("0").var("open_strategy", "cas");
    let mut host = HostProcess::start(&spec);
    let mut api = Api::new(host.addr);
    let id = Arc::new(api.paid_packet("sender", "lucky", TOTAL, SHARES).await);

    // Clients follow the current address; a restart publishes the new one.
    let (addr_tx, addr_rx) = watch::channel(host.addr);
    // Told by each client that finds the host dead.
    let saw_dead = Arc::new(Notify::new());
    let client = |i: usize| {
        let (id, mut addr_rx, saw_dead) = (Arc::clone(&id), addr_rx.clone(), Arc::clone(&saw_dead));
        tokio::spawn(async move {
            let user = format!("c{i:03}");
            let mut interrupted = false;
            loop {
                let addr = *addr_rx.borrow_and_update();
                let mut api = Api::new(addr);
                match grab_and_open(&mut api, &id, &user).await {
                    Ok((outcome, _)) => return (user, outcome, interrupted),
                    // An answer the contract does not allow is a failure, not a crash.
                    Err(e) if e.to_string().contains("unexpected") => panic!("{user}: {e}"),
                    Err(_) => {
                        // The host died under us: wait for the restart, try again.
                        interrupted = true;
                        saw_dead.notify_one();
                        if *addr_rx.borrow() == addr {
                            let _ = addr_rx.changed().await;
                        }
                    }
                }
            }
        })
    };
    let mut clients: Vec<_> = (0..BEFORE_KILL).map(client).collect();

    // Kill once a good part of the packet is claimed (the clients' pace
    // does not matter: at most BEFORE_KILL of the shares can be).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let claimed_before = loop {
        let claims = api.query(&id, "sender").await.json()["claims"].as_array().cloned().unwrap_or_default();
        if claims.len() >= KILL_AT {
            break claims;
        }
        assert!(tokio::time::Instant::now() < deadline, "{} claims after two minutes", claims.len());
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    host.kill();
    assert!(claimed_before.len() < SHARES as usize, "the kill landed mid-packet");

    // The rest arrive while the host is down; restart once one has seen it.
    clients.extend((BEFORE_KILL..CLIENTS).map(client));
    tokio::time::timeout(Duration::from_secs(120), saw_dead.notified()).await.expect("a client finds the host dead");
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
    assert!(results.iter().any(|(_, _, interrupted)| *interrupted), "some clients saw the crash");

    let day = hongbao::Timestamp(now()).day();
    let books = hongbao_host::client::settle_and_reconcile(&mut api.client, ADMIN, day).await.unwrap();
    assert_eq!(books.settled[0].credited_fen, TOTAL, "the first settle credits every claim: {books:?}");
    assert_eq!((books.report.claimed_fen, books.report.credited_fen), (TOTAL, TOTAL));
}
