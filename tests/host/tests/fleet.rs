//! Several hosts, one dataset: three `hongbao-host up` processes serve the
//! per-SET manifest from two Redis servers of our own (AOF, fsync always),
//! every host ticking expire and settle on its own. Many packets and one hot
//! packet are opened through all hosts at once; mid-packet one host is
//! SIGKILLed and one Redis server killed and restarted from its AOF. After
//! expiry: nothing shown before the kills lost, one claim per user, no
//! overdraw, what each client was told is the record, every claim and
//! refund credited exactly once, reconcile clean.
//! Run again with swaps that write but report failure (Spin 4.0.2's Redis
//! caveat, `--faults cas_lie=0.1`).

mod common;

use common::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

const HOSTS: usize = 3;
const PACKETS: usize = 24;
const PACKET_SHARES: u32 = 4;
const PACKET_TOTAL: u64 = 1_000;
const HOT_SHARES: u32 = 100;
const HOT_TOTAL: u64 = 66_666;
const HOT_CLIENTS: usize = 160;
/// Claims of the hot packet to see before the kills.
const KILL_AT: usize = 25;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hosts_share_per_set_redis_through_kills() {
    fleet_run(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hosts_balance_when_swaps_lie() {
    fleet_run(Some("cas_lie=0.1")).await;
}

/// One user's attempt, retried over the hosts until it has an answer the
/// contract allows (a dead host or a restarting store fails the attempt).
async fn attempt(addrs: Vec<std::net::SocketAddr>, id: Arc<String>, user: String) -> (String, Outcome, bool) {
    let mut client = hongbao_host::client::Client::spread(&addrs);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    let mut interrupted = false;
    loop {
        match hongbao_host::client::grab_and_open(&mut client, &bearer(&user), &id).await {
            Ok(attempt) => return (user, attempt.outcome, interrupted),
            Err(e) => {
                assert!(tokio::time::Instant::now() < deadline, "{user}: still failing: {e}");
                interrupted = true;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// A packet as its sender sees it. A host whose Redis connection broke (the
/// server restarted) answers 503 until it has reconnected: asked again.
async fn view(api: &mut Api, id: &str, sender: &str) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let reply = api.query(id, sender).await;
        if reply.status == 200 {
            return reply.json();
        }
        assert!(reply.status == 503 && tokio::time::Instant::now() < deadline, "query {id}: {}", reply.status);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn fleet_run(faults: Option<&str>) {
    let Some(mut fleet) = RedisFleet::start() else { return };
    let clock = Arc::new(Clock::new());
    // The components' time runs at the real pace (admission windows turn,
    // so a 429's Retry-After finds a new one) until the test moves it on.
    let ticking = Clock::run_at_real_pace(&clock);
    let mut spec = fleet
        .host_spec(HostSpec::app())
        .var("packet_ttl_seconds", "600")
        .clock(&clock)
        .arg("--tick")
        .arg("1")
        .arg("--metrics-listen")
        .arg("127.0.0.1:0");
    if let Some(faults) = faults {
        spec = spec.arg("--faults").arg(faults);
    }
    let mut hosts: Vec<HostProcess> = (0..HOSTS).map(|_| HostProcess::start(&spec)).collect();
    let addrs: Vec<_> = hosts.iter().map(|h| h.addr).collect();
    let mut api = Api { client: hongbao_host::client::Client::spread(&addrs) };

    // Many packets, wrapped and paid through every host, spread over the SETs.
    let mut ids = Vec::new();
    for n in 0..PACKETS {
        ids.push(api.paid_packet(&format!("sender{n}"), "lucky", PACKET_TOTAL, PACKET_SHARES).await);
    }
    let sets: std::collections::BTreeSet<u32> =
        ids.iter().map(|id| hongbao::PacketId::parse(id).unwrap().set()).collect();
    assert!(sets.len() >= 5, "packets in {} SETs only", sets.len());
    let hot = Arc::new(api.paid_packet("hot-sender", "lucky", HOT_TOTAL, HOT_SHARES).await);

    // Every packet opened at once: three users per small packet (one too
    // few), and the hot packet's clients.
    let mut clients = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        for u in 0..PACKET_SHARES as usize - 1 {
            clients.push(tokio::spawn(attempt(addrs.clone(), Arc::new(id.clone()), format!("p{n}u{u}"))));
        }
    }
    let hot_clients: Vec<_> =
        (0..HOT_CLIENTS).map(|i| tokio::spawn(attempt(addrs.clone(), Arc::clone(&hot), format!("h{i:03}")))).collect();

    // Mid-packet: kill a host, and a Redis server (restarted from its AOF).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    let claimed_before = loop {
        let claims = view(&mut api, &hot, "hot-sender").await["claims"].as_array().cloned().unwrap_or_default();
        if claims.len() >= KILL_AT {
            break claims;
        }
        assert!(tokio::time::Instant::now() < deadline, "{} claims after three minutes", claims.len());
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    hosts[0].kill();
    tokio::task::block_in_place(|| fleet.servers[1].kill_and_restart()).unwrap();
    let live: Vec<_> = addrs[1..].to_vec();
    let mut api = Api { client: hongbao_host::client::Client::spread(&live) };

    let mut told: HashMap<String, Outcome> = HashMap::new();
    for c in clients.into_iter().chain(hot_clients) {
        let (user, outcome, _) = c.await.unwrap();
        told.insert(user, outcome);
    }

    // Each packet's record: one claim per user, the sum within the total,
    // and what each user was told.
    let mut claimed_fen = 0;
    for (n, id) in ids.iter().chain(std::iter::once(&*hot)).enumerate() {
        let sender = if n < PACKETS { format!("sender{n}") } else { "hot-sender".to_string() };
        let view = view(&mut api, id, &sender).await;
        let claims = view["claims"].as_array().cloned().unwrap_or_default();
        let by_user: HashMap<String, serde_json::Value> =
            claims.iter().map(|c| (c["user"].as_str().unwrap().to_owned(), c.clone())).collect();
        assert_eq!(by_user.len(), claims.len(), "{id}: one claim per user");
        let sum: u64 = claims.iter().map(|c| c["amount_fen"].as_u64().unwrap()).sum();
        let total = if n < PACKETS { PACKET_TOTAL } else { HOT_TOTAL };
        assert!(
            sum <= total && claims.iter().all(|c| c["amount_fen"].as_u64().unwrap() >= 1),
            "{id}: {sum} of {total}"
        );
        for (user, claim) in &by_user {
            assert_eq!(told.get(user), Some(&Outcome::Claimed(claim.clone())), "{id}: {user} was told otherwise");
        }
        let prefix = if n < PACKETS { format!("p{n}u") } else { "h".to_string() };
        for (user, outcome) in told.iter().filter(|(u, _)| u.starts_with(&prefix)) {
            if matches!(outcome, Outcome::Claimed(_)) {
                assert!(
                    by_user.contains_key(user),
                    "{id}: {user} was told {outcome:?}, which the record lacks: {view}"
                );
            }
        }

        claimed_fen += sum;
    }
    let hot_view = view(&mut api, &hot, "hot-sender").await;
    let hot_claims = hot_view["claims"].as_array().unwrap();
    for claim in &claimed_before {
        assert!(hot_claims.contains(claim), "lost after the kills: {claim}");
    }
    // The hot packet is a cursor packet (auto strategy, 100 shares): an open
    // killed between taking a share number and recording it strands that
    // share, which expiry refunds (shared/tests/crash.rs covers every such
    // store call). At most the killed host's running requests can.
    let exhausted = told.values().filter(|o| **o == Outcome::Exhausted).count();
    assert_eq!(hot_claims.len() + exhausted, HOT_CLIENTS, "every hot client claimed or was told exhausted");
    let stranded = HOT_SHARES as usize - hot_claims.len();
    assert!(stranded <= hongbao_host::DEFAULT_MAX_RUNNING_REQUESTS, "{stranded} shares stranded");

    // Past expiry, the surviving hosts' ticks refund the small packets'
    // remainders; then the audit: every claim and refund credited once.
    clock.advance(3600);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let first = view(&mut api, &ids[0], "sender0").await;
        if first["status"] == "refunded" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never refunded: {first}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let books = hongbao_host::client::settle_and_reconcile(&mut api.client, ADMIN, clock.day()).await.unwrap();
    ticking.abort();
    let total = PACKETS as u64 * PACKET_TOTAL + HOT_TOTAL;
    // After settle, every packet's claims again: still what each user was told.
    let mut settled_claimed = 0;
    for (n, id) in ids.iter().chain(std::iter::once(&*hot)).enumerate() {
        let sender = if n < PACKETS { format!("sender{n}") } else { "hot-sender".to_string() };
        for claim in view(&mut api, id, &sender).await["claims"].as_array().cloned().unwrap_or_default() {
            let user = claim["user"].as_str().unwrap().to_owned();
            assert_eq!(told.get(&user), Some(&Outcome::Claimed(claim.clone())), "{id}: {user} after settle");
            settled_claimed += claim["amount_fen"].as_u64().unwrap();
        }
    }
    assert_eq!(settled_claimed, claimed_fen, "claims changed after expiry");
    assert_eq!(books.report.total_fen, total, "{books:?}");
    assert_eq!(books.report.claimed_fen, claimed_fen, "{books:?}");
    assert_eq!(books.report.claimed_fen + books.report.refunded_fen, total, "{books:?}");
    assert_eq!(books.report.credited_fen, total, "{books:?}");

    // Each surviving host tells Prometheus what it served (requests take
    // turns over the hosts, so which host served the opens varies).
    let (mut opens, mut open_calls, mut redis_errors) = (0.0, 0.0, 0.0);
    for host in &hosts[1..] {
        let line = host.log_line("metrics on http://").await;
        let addr = line.split("http://").nth(1).unwrap().trim_end_matches("/metrics").parse().unwrap();
        let text = hongbao_host::client::Client::new(addr).get("/metrics", &[]).await.unwrap();
        let text = String::from_utf8(text.body.to_vec()).unwrap();
        let value = |prefix: &str| -> f64 {
            text.lines()
                .filter(|l| l.starts_with(prefix))
                .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
                .sum()
        };
        assert!(value("hongbao_requests_total{route=\"/v1/packets/:id\",status=\"200\"}") > 0.0, "{text}");
        assert!(value("hongbao_store_calls_total{component=\"admin-settle\"}") > 0.0, "{text}");
        assert!(value("hongbao_instances_created_total{component=\"query\"}") > 0.0, "{text}");
        assert!(value("hongbao_request_duration_seconds_count{route=\"/v1/admin/settle\"}") > 0.0, "ticks: {text}");
        opens += value("hongbao_requests_total{route=\"/v1/packets/:id/open\",status=\"200\"}");
        open_calls += value("hongbao_store_calls_total{component=\"open\"}");
        redis_errors += value("hongbao_redis_errors_total");
    }
    assert!(opens > 0.0 && open_calls > opens, "{opens} opens, {open_calls} store calls");
    eprintln!("Redis errors seen by the surviving hosts (the restart): {redis_errors}");
}
