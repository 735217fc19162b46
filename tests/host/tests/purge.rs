//! The retention purge over HTTP. A day of packets is wrapped, opened,
//! refunded, settled and reconciled on a logical clock, and purged once the
//! clock is past the retention: on the host's durable SQLite store (and after
//! a restart), and on two hosts sharing one Redis per SET group. Then on real
//! `spin up`, over Spin's own SQLite and Redis stores, which serve the day the
//! host wrote 40 days "ago": the purge lists their keys through Spin's
//! `list-keys`.

mod common;

use common::*;
use hongbao::Day;
use serde_json::Value;

const TTL_SECONDS: i64 = 60;
const DAY: i64 = 86_400;
const USERS: [&str; 4] = ["u0", "u1", "u2", "u3"];

/// What a closed day looked like before its purge.
struct ClosedDay {
    day: Day,
    ids: Vec<String>,
    report: Value,
    wallets: Vec<Value>,
}

/// Packets of the clock's day, opened, expired and settled (whichever host
/// the client turns to runs each sweep), with its reconciliation and wallets.
async fn close_a_day(api: &mut Api, clock: &Clock) -> ClosedDay {
    let day = clock.day();
    let ids =
        vec![api.paid_packet("sender", "lucky", 1_000, 5).await, api.paid_packet("sender", "fixed", 300, 3).await];
    for id in &ids {
        for user in USERS {
            grab_and_open(api, id, user).await.unwrap();
        }
    }
    clock.advance(TTL_SECONDS);
    assert_eq!(api.admin("POST", "/v1/admin/expire").await.json()["refunded"], 1, "the lucky packet's remainder");
    let books = hongbao_host::client::settle_and_reconcile(&mut api.client, ADMIN, day).await.unwrap();
    assert_eq!((books.report.packets, books.report.total_fen), (2, 1_300));
    let report = api.admin("GET", &format!("/v1/admin/reconcile?day={day}")).await.json();
    assert_eq!((report["unfinished"].as_u64(), report["purged"].as_bool()), (Some(0), Some(false)), "{report}");
    let wallets = wallets(api).await;
    ClosedDay { day, ids, report, wallets }
}

async fn wallets(api: &mut Api) -> Vec<Value> {
    let mut wallets = Vec::new();
    for user in USERS.into_iter().chain(["sender"]) {
        wallets.push(api.user("wallet", user).await.json());
    }
    wallets
}

/// Purges the day and checks what everyone sees afterwards.
async fn purge(api: &mut Api, closed: &ClosedDay) {
    purge_call(api, closed).await;
    check_purged(api, closed).await;
}

/// The purge's call and answer.
async fn purge_call(api: &mut Api, closed: &ClosedDay) {
    let path = format!("/v1/admin/purge?day={}", closed.day);
    let reply = api.admin("POST", &path).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let purged = reply.json();
    let mut kept = closed.report.clone();
    kept["purged"] = Value::Bool(true);
    assert_eq!(purged["report"], kept);
    assert!(purged["deleted_keys"].as_u64().unwrap() >= 20, "two packets' records, counters and indexes: {purged}");
    assert!(purged["next_cursor"].is_null(), "a few hundred keys take one call: {purged}");
}

/// What everyone sees after the purge.
async fn check_purged(api: &mut Api, closed: &ClosedDay) {
    let path = format!("/v1/admin/purge?day={}", closed.day);
    let mut kept = closed.report.clone();
    kept["purged"] = Value::Bool(true);
    assert_eq!(api.admin("GET", &format!("/v1/admin/reconcile?day={}", closed.day)).await.json(), kept);
    for id in &closed.ids {
        assert_eq!(api.query(id, "sender").await.code().as_deref(), Some("not_found"), "{id}");
    }
    assert_eq!(wallets(api).await, closed.wallets, "every credit stays in its wallet");
    let again = api.admin("POST", &path).await.json();
    assert_eq!((again["deleted_keys"].as_u64(), &again["report"]), (Some(0), &kept), "nothing left to delete");
}

/// A logical clock at noon 40 days ago: past the retention is then still
/// in the past, where the tests' user tokens (signed for the real time) hold.
fn forty_days_ago() -> Clock {
    let clock = Clock::new();
    clock.advance(-39 * DAY);
    clock
}

/// Moves the clock to the first moment `day` may be purged.
fn past_the_retention(clock: &Clock, day: Day) {
    let default = hongbao::config::VARIABLES.iter().find(|v| v.name == "retention_days").and_then(|v| v.default);
    let retention_days: i64 = default.unwrap().parse().unwrap();
    clock.set(day.minus_days(-(retention_days + 1)).start().0);
}

fn spec() -> HostSpec {
    HostSpec::app().var("packet_ttl_seconds", &TTL_SECONDS.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_closed_day_is_purged_on_the_durable_store_and_stays_purged() {
    let state = TempDir::new("purge").unwrap();
    let clock = forty_days_ago();
    let spec = spec().durable(&state.0).clock(&clock);
    let mut host = HostProcess::start(&spec);
    let mut api = Api::new(host.addr);
    let closed = close_a_day(&mut api, &clock).await;
    let early = api.admin("POST", &format!("/v1/admin/purge?day={}", closed.day)).await;
    assert_eq!(early.code().as_deref(), Some("invalid_argument"), "inside the retention");
    past_the_retention(&clock, closed.day);
    purge(&mut api, &closed).await;

    assert!(host.stop().success());
    let host = HostProcess::start(&spec);
    let mut api = Api::new(host.addr);
    let kept = api.admin("GET", &format!("/v1/admin/reconcile?day={}", closed.day)).await.json();
    assert_eq!(kept["purged"], true, "the kept report outlives a restart: {kept}");
    assert_eq!(api.query(&closed.ids[0], "sender").await.code().as_deref(), Some("not_found"));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hosts_purge_a_day_from_redis_per_set() {
    let clock = forty_days_ago();
    let Some(server) = Target::TwoHostsOnRedis.start(spec().clock(&clock)) else { return };
    let mut api = server.api();
    let closed = close_a_day(&mut api, &clock).await;
    past_the_retention(&clock, closed.day);
    purge_call(&mut api, &closed).await;
    // Every label walked, on both servers (before reads can create a counter).
    let mut left = Vec::new();
    for url in server.redis_urls() {
        let mut redis = redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut redis).await.unwrap();
        left.extend(keys.into_iter().filter(|key| hongbao::keys::of_day(key, closed.day)));
    }
    assert_eq!(left, Vec::<String>::new(), "the day's keys left on the servers");
    check_purged(&mut api, &closed).await;
}

/// The host writes and closes a day 40 days back on a store; then real Spin,
/// on the same store and the real clock, purges it.
async fn spin_purges_what_the_host_wrote(host: HostSpec, spin: HostSpec, redis: Option<&RedisServer>) {
    let Some(bin) = spin_binary_or_skip() else { return };
    let clock = forty_days_ago();
    let mut host = HostProcess::start(&host.clock(&clock));
    let closed = close_a_day(&mut Api::new(host.addr), &clock).await;
    assert!(host.stop().success());
    let spin = spin_up(&bin, &spin, redis);
    purge(&mut Api::new(spin.addr), &closed).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn spin_up_purges_from_its_sqlite_store() {
    let state = TempDir::new("purge-spin").unwrap();
    spin_purges_what_the_host_wrote(spec().durable(&state.0), spec().durable(&state.0), None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn spin_up_purges_from_its_redis_store() {
    if spin_binary_or_skip().is_none() {
        return;
    }
    if !RedisServer::available() {
        return eprintln!("skipped on Spin + Redis: no redis-server binary (apt-get install redis-server)");
    }
    let redis = RedisServer::start().unwrap();
    let dir = TempDir::new("purge-redis").unwrap();
    let runtime_config = dir.0.join("runtime-config.toml");
    let text = format!("[key_value_store.default]\ntype = \"redis\"\nurl = \"{}\"\n", redis.url());
    std::fs::write(&runtime_config, text).unwrap();
    let host = spec().arg("--runtime-config-file").arg(runtime_config.to_str().unwrap());
    // Spin 4.0.2's Redis get-many fails: read one key at a time there.
    let spin = spec().var("kv_batch_reads", "false");
    spin_purges_what_the_host_wrote(host, spin, Some(&redis)).await;
}
