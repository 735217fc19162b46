//! A SET group's store dies mid-run (issue 27). Two hosts serve the per-SET
//! manifest from three Redis servers of our own (SETs 0-4, SETs 5-9, users)
//! and a fourth replicating the 5-9 one (`replicaof`, its replica labels).
//! The 5-9 primary is SIGKILLed: new wraps keep succeeding, all in SETs 0-4,
//! with no 5xx; grabs and opens of its packets answer 503 with Retry-After,
//! while their queries and senders' lists come back from the replicas marked
//! degraded; the other SETs'
//! packets open as ever; the operator drains 5-9 and the sweeps name them
//! unreachable. The server restarts from its
//! AOF: the operator restores the SETs, everything resumes, and after expiry
//! nothing is lost or doubled and the books reconcile.

mod common;

use common::*;
use hongbao::PacketId;
use hongbao_host::client::{Outcome, Reply};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

const HOSTS: usize = 2;
const SHARES: u32 = 3;
const TOTAL: u64 = 900;
const DEAD: std::ops::Range<u32> = 5..10;

fn in_dead_group(id: &str) -> bool {
    DEAD.contains(&PacketId::parse(id).unwrap().set())
}

/// One user's claim on `id`, retried while a store is restarting (503).
async fn claim(api: &mut Api, id: &str, user: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match hongbao_host::client::grab_and_open(&mut api.client, &bearer(user), id).await {
            Ok(attempt) => match attempt.outcome {
                Outcome::Claimed(claim) => return claim,
                Outcome::Exhausted => panic!("{id}: exhausted for {user}"),
            },
            Err(e) => {
                assert!(tokio::time::Instant::now() < deadline, "{user} on {id}: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A 503 with Retry-After: the contract's answer of a store that is down.
fn assert_unavailable(reply: &Reply, what: &str) {
    assert_eq!((reply.status, reply.code().as_deref()), (503, Some("unavailable")), "{what}: {:?}", reply.json());
    assert!(reply.header("retry-after").is_some(), "{what}: a 503 without Retry-After");
}

async fn change_set(api: &mut Api, set: u32, state: &str) -> Value {
    let auth = format!("Bearer {ADMIN}");
    let body = json!({"set": set, "state": state}).to_string();
    let reply = api.client.send("POST", "/v1/admin/sets", &[("authorization", &auth)], body).await.unwrap();
    assert_eq!(reply.status, 200, "{:?}", reply.json());
    reply.json()
}

/// A sweep run until it answers 200 (a host still reconnecting answers 503).
async fn sweep(api: &mut Api, path: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let reply = api.admin("POST", path).await;
        if reply.status == 200 {
            return reply.json();
        }
        assert!(reply.status == 503 && tokio::time::Instant::now() < deadline, "{path}: {:?}", reply.json());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_set_group_fails_closed_while_the_others_carry_on_then_everything_catches_up() {
    let Some(mut fleet) = RedisFleet::start_apart() else { return };
    let clock = Arc::new(Clock::new());
    let ticking = Clock::run_at_real_pace(&clock);
    let spec = fleet
        .host_spec(HostSpec::app())
        .var("packet_ttl_seconds", "600")
        .var("placement_cache_seconds", "1")
        .clock(&clock);
    let hosts: Vec<HostProcess> = (0..HOSTS).map(|_| HostProcess::start(&spec)).collect();
    let addrs: Vec<_> = hosts.iter().map(|h| h.addr).collect();
    let mut api = Api { client: hongbao_host::client::Client::spread(&addrs) };

    // Paid packets in both groups, each opened once.
    let mut packets: Vec<(String, String)> = Vec::new();
    while packets.iter().filter(|(id, _)| in_dead_group(id)).count() < 3
        || packets.iter().filter(|(id, _)| !in_dead_group(id)).count() < 3
    {
        assert!(packets.len() < 60, "60 packets and still not three in each group");
        let sender = format!("sender{}", packets.len());
        packets.push((api.paid_packet(&sender, "lucky", TOTAL, SHARES).await, sender));
    }
    let mut told: HashMap<(String, String), Value> = HashMap::new();
    for (id, _) in &packets {
        told.insert((id.clone(), "a".into()), claim(&mut api, id, "a").await);
    }

    // A ticket for each of the dead group's packets, grabbed before the kill.
    let mut tickets = HashMap::new();
    for (id, _) in packets.iter().filter(|(id, _)| in_dead_group(id)) {
        let grabbed = api.grab(id, "c").await;
        assert_eq!(grabbed.status, 200, "{:?}", grabbed.json());
        tickets.insert(id.clone(), grabbed.json()["ticket"].as_str().unwrap().to_owned());
    }
    // Everything written so far is on the replica.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !tokio::task::block_in_place(|| fleet.servers[3].caught_up_with(&fleet.servers[1])) {
        assert!(tokio::time::Instant::now() < deadline, "the replica never caught up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fleet.servers[1].kill();

    // New wraps: every one succeeds, in a live SET (a dead SET costs a wrap
    // a failed call, until the operator drains it).
    for n in 0..12 {
        let body = json!({"request_id": format!("during-{n}"), "kind": "lucky", "total_fen": TOTAL, "count": SHARES});
        let wrapped = api.wrap(&format!("late{n}"), body).await;
        assert_eq!(wrapped.status, 201, "{:?}", wrapped.json());
        assert!(!in_dead_group(wrapped.json()["id"].as_str().unwrap()), "{:?}", wrapped.json());
    }
    // The dead group's packets: money fails closed; reads come from the
    // replica, marked degraded, with what the clients were told.
    for (id, sender) in packets.iter().filter(|(id, _)| in_dead_group(id)) {
        assert_unavailable(&api.grab(id, "b").await, "grab");
        assert_unavailable(&api.open(id, "c", &tickets[id]).await, "open");
        let view = api.query(id, sender).await;
        assert_eq!((view.status, view.json()["degraded"].clone()), (200, json!(true)), "{:?}", view.json());
        assert_eq!(view.json()["claims"], json!([told[&(id.clone(), "a".to_owned())]]), "{:?}", view.json());
        // The sender's list reads its packets' records: from the replicas
        // too (its counter read with GET, as a replica wants).
        let sent = api.user("sent", sender).await;
        assert_eq!((sent.status, sent.json()["degraded"].clone()), (200, json!(true)), "{:?}", sent.json());
        assert_eq!(sent.json()["items"][0]["packet_id"], json!(id), "{:?}", sent.json());
    }
    // The live group's packets open as ever.
    for (id, _) in packets.iter().filter(|(id, _)| !in_dead_group(id)) {
        told.insert((id.clone(), "b".into()), claim(&mut api, id, "b").await);
    }
    // The operator drains the dead group; the sweeps skip and name it.
    for set in DEAD {
        change_set(&mut api, set, "drained").await;
    }
    let placement = api.admin("GET", "/v1/admin/sets").await.json();
    assert_eq!(placement["drained_sets"], json!([5, 6, 7, 8, 9]), "{placement}");
    assert_eq!(placement["log"].as_array().unwrap().len(), 5);
    for path in ["/v1/admin/settle", "/v1/admin/expire"] {
        let report = sweep(&mut api, path).await;
        assert_eq!(report["unreachable_sets"], json!([5, 6, 7, 8, 9]), "{path}: {report}");
    }

    // The server returns from its AOF; the SETs are restored.
    tokio::task::block_in_place(|| fleet.servers[1].restart()).unwrap();
    for set in DEAD {
        change_set(&mut api, set, "open").await;
    }
    for (id, _) in packets.iter().filter(|(id, _)| in_dead_group(id)) {
        told.insert((id.clone(), "b".into()), claim(&mut api, id, "b").await);
    }
    // New packets land in the restored SETs again.
    let mut sets = BTreeSet::new();
    for n in 0..30 {
        let id = api.paid_packet(&format!("after{n}"), "lucky", TOTAL, SHARES).await;
        sets.insert(PacketId::parse(&id).unwrap().set());
    }
    assert!(sets.iter().any(|set| DEAD.contains(set)), "{sets:?}");

    // After expiry: every claim told is in its record, once, and the books
    // balance.
    clock.advance(700);
    // A host's first call on a connection the restart broke fails (the
    // SET is named unreachable for that run): the next run goes through.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut refunded = 0;
    loop {
        let report = sweep(&mut api, "/v1/admin/expire").await;
        refunded += report["refunded"].as_u64().unwrap();
        if report["unreachable_sets"] == json!([]) && report["errors"] == json!([]) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{report}");
    }
    assert_eq!(refunded, packets.len() as u64 + 30, "every paid packet refunded once");
    let books = hongbao_host::client::settle_and_reconcile(&mut api.client, ADMIN, clock.day()).await.unwrap();
    let paid_total = TOTAL * packets.len() as u64 + TOTAL * 30;
    assert_eq!(books.report.total_fen, paid_total, "{books:?}");
    let mut wallets: HashMap<String, u64> = HashMap::new();
    for (id, sender) in &packets {
        let view = api.query(id, sender).await.json();
        assert_eq!(view["status"], "refunded", "{view}");
        let claims = view["claims"].as_array().unwrap();
        assert_eq!(claims.len(), 2, "{id}: a and b, once each");
        for c in claims {
            let user = c["user"].as_str().unwrap().to_owned();
            assert_eq!(told.get(&(id.clone(), user.clone())), Some(c), "{id}: what {user} was told");
            *wallets.entry(user).or_default() += c["amount_fen"].as_u64().unwrap();
        }
        *wallets.entry(sender.clone()).or_default() += view["refund_fen"].as_u64().unwrap();
    }
    for (user, expected) in &wallets {
        let wallet = api.user("wallet", user).await.json();
        assert_eq!(wallet["balance_fen"].as_u64(), Some(*expected), "wallet of {user}");
    }
    ticking.abort();
}
