//! `hongbao-host bench`: how fast packets are opened, measured honestly.
//!
//! Starts the host in this process on loopback with the release components,
//! drives real HTTP load from this same process (one connection per client),
//! and prints one table where every row comes from this run:
//! the `/healthz` ceiling; many packets opened by distinct users; hot packets
//! (100 and 1,000 shares) at 64 / 256 / 1,024 clients with store calls and
//! CAS attempts per open, 429 share and time until empty; instantiation cost
//! and component sizes; for both store backends and every open strategy.
//! Every run checks the money invariants and fails loudly if one breaks.

use crate::client::Client;
use crate::external::{NO_SPIN, RedisServer, SpinConfig, SpinUp};
use crate::server::{App, ComponentSize, ComponentTiming, Running, ServeOptions, StoreChoice, serve};
use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const AUTH: &str = "bench-auth";
const PAYMENT: &str = "bench-payment";
const ADMIN: &str = "bench-admin";

pub struct Options {
    pub manifest: PathBuf,
    /// Fewer and smaller runs (a smoke test of the bench itself).
    pub quick: bool,
    pub strategies: Vec<String>,
    pub chart: Option<PathBuf>,
    /// Requests one instance may serve at once (`spin up`'s flag of the same name).
    pub max_instance_concurrent_reuse_count: usize,
    /// Requests running in components at once (`up`'s flag of the same name).
    pub max_running_requests: usize,
    /// Store backends to measure: "memory", "sqlite" (this host), and
    /// "spin-sqlite", "spin-redis" (`spin up` with that store).
    pub stores: Vec<String>,
    /// Packets of the many-packets phase, if not the default.
    pub packets: Option<usize>,
    /// The Spin CLI for the `spin-*` stores (`None`: they are skipped).
    pub spin: Option<PathBuf>,
}

/// Where the load goes: the host in this process (whose store counts its
/// calls and whose CPU is this process's), or a server of its own (`spin
/// up`), measured from outside only.
#[derive(Clone, Copy)]
struct Target<'a> {
    addr: SocketAddr,
    host: Option<&'a Running>,
}

impl Target<'_> {
    fn store_stats(&self) -> Option<crate::kv::StatsSnapshot> {
        self.host.map(|running| running.app().store_stats())
    }

    /// Instances created so far, and this process's CPU time: only
    /// meaningful when the host runs here.
    fn instances_created(&self) -> Option<u64> {
        self.host.map(|_| crate::server::instances_created())
    }

    fn cpu_time(&self) -> Option<Duration> {
        self.host.map(|_| cpu_time())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Memory,
    Durable,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Durable => "sqlite",
        }
    }
}

/// One hot-packet run.
#[derive(Debug, Clone)]
struct Hot {
    shares: u32,
    clients: usize,
    opens_per_s: f64,
    p50: Duration,
    p99: Duration,
    /// Store calls and CAS attempts per open, instances created and CPU:
    /// `None` when the server is not this process (`spin up`).
    calls_per_open: Option<f64>,
    cas_per_open: Option<f64>,
    busy_share: f64,
    empty_after: Duration,
    /// Grabs and opens answered per second until every client was done.
    requests_per_s: f64,
    /// Process CPU per grab or open (see `cpu_time`).
    cpu_per_request: Option<Duration>,
    /// Grabs and opens sent, and instances created to answer them.
    requests: u32,
    instances: Option<u64>,
}

#[derive(Debug, Clone)]
struct Many {
    packets: usize,
    grabs_per_s: f64,
    opens_per_s: f64,
    p50: Duration,
    p99: Duration,
    /// As in `Hot`: `None` on `spin up`.
    calls_per_open: Option<f64>,
    cas_per_open: Option<f64>,
    /// Process CPU per request in each phase (see `cpu_time`).
    cpu_per_grab: Option<Duration>,
    cpu_per_open: Option<Duration>,
    /// Instances created while the opens ran (reuse keeps this small).
    instances: Option<u64>,
}

struct Run {
    backend: Backend,
    strategy: String,
    ceiling: Vec<Ceiling>,
    /// `/healthz` at the many-packets phase's 64 clients, just before and just
    /// after it: the ratio uses their mean, so a shared machine's drift
    /// during the phase shows instead of skewing the ratio unseen.
    ceiling_around_many: (f64, f64),
    /// Process CPU per `/healthz` request in the "before" ceiling.
    cpu_per_healthz: Duration,
    many: Many,
    hot: Vec<Hot>,
}

fn progress(message: impl AsRef<str>) {
    eprintln!("bench: {}", message.as_ref());
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn bearer(user: &str) -> String {
    format!("Bearer {}", hongbao::auth::sign_user_token(AUTH, user, hongbao::Timestamp(now() + 3600)))
}

/// CPU time this process has used so far (user + system, every thread:
/// host, load generator and the kernel work done on their behalf), to the
/// nanosecond: a short phase is measured as well as a long one.
fn cpu_time() -> Duration {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid timespec for the call to fill in.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut now) } == 0;
    if !ok {
        return Duration::ZERO;
    }
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// Turns `perf record --control fifo:FIFO -D -1` on for one phase, when
/// `HONGBAO_PERF_CTL` names that FIFO: a profile of exactly that phase.
fn perf_control(phase: &str, on: bool) {
    let (Some(fifo), Ok(wanted)) = (std::env::var_os("HONGBAO_PERF_CTL"), std::env::var("HONGBAO_PERF_PHASE")) else {
        return;
    };
    if wanted == phase {
        let _ = std::fs::write(fifo, if on { "enable\n" } else { "disable\n" });
    }
}

/// A store counter's growth between two snapshots, per `n` (when counted).
fn per(
    before: Option<crate::kv::StatsSnapshot>,
    after: Option<crate::kv::StatsSnapshot>,
    counter: impl Fn(&crate::kv::StatsSnapshot) -> u64,
    n: f64,
) -> Option<f64> {
    Some((counter(&after?) - counter(&before?)) as f64 / n)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The application variables of every measured server, as environment.
fn variables(strategy: &str) -> Vec<(String, String)> {
    [
        ("SPIN_VARIABLE_AUTH_SECRET", AUTH),
        ("SPIN_VARIABLE_PAYMENT_SECRET", PAYMENT),
        ("SPIN_VARIABLE_ADMIN_TOKEN", ADMIN),
        ("SPIN_VARIABLE_MAX_COUNT", "1000"),
        // One sender wraps every packet, 64 at once, before paying each.
        ("SPIN_VARIABLE_MAX_UNPAID_PER_USER", "1000"),
        ("SPIN_VARIABLE_OPEN_STRATEGY", strategy),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

async fn start(manifest: &Path, backend: Backend, strategy: &str, state: &Path, options: &Options) -> Result<Running> {
    let store = match backend {
        Backend::Memory => StoreChoice::Memory,
        Backend::Durable => {
            let _ = std::fs::remove_dir_all(state);
            StoreChoice::Durable(state.to_owned())
        }
    };
    let vars: HashMap<String, String> = variables(strategy).into_iter().collect();
    let options = ServeOptions {
        max_instance_concurrent_reuse_count: options.max_instance_concurrent_reuse_count,
        max_running_requests: options.max_running_requests,
        ..ServeOptions::default()
    };
    let app = App::load_with(manifest, store, options, |k| vars.get(k).cloned())?;
    serve(app, "127.0.0.1:0".parse()?).await
}

/// `/healthz` at one number of clients: its rate and its latency.
#[derive(Debug, Clone, Copy)]
struct Ceiling {
    clients: usize,
    per_s: f64,
    p50: Duration,
    p99: Duration,
}

/// `/healthz` requests per second with `connections` clients for
/// `for_how_long`, and their latency: what the host alone answers at that
/// concurrency, the bound for every other figure measured at it.
async fn ceiling(addr: SocketAddr, connections: usize, for_how_long: Duration) -> Result<Ceiling> {
    let deadline = Instant::now() + for_how_long;
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            tokio::spawn(async move {
                let mut client = Client::new(addr);
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    let reply = client.get("/healthz", &[]).await?;
                    ensure!(reply.status == 200, "healthz answered {}", reply.status);
                    latencies.push(sent.elapsed());
                }
                Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    let per_s = latencies.len() as f64 / started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    Ok(Ceiling { clients: connections, per_s, p50: percentile(&latencies, 0.5), p99: percentile(&latencies, 0.99) })
}

/// Wraps and pays a packet over `client`; returns its id.
async fn paid_packet(client: &mut Client, total: u64, count: u32) -> Result<String> {
    let rid = format!("bench-{}", rand::random::<u64>());
    let body = json!({"request_id": rid, "kind": "lucky", "total_fen": total, "count": count}).to_string();
    let wrapped = client.post("/v1/packets", &[("authorization", &bearer("sender"))], body).await?;
    ensure!(wrapped.status == 201, "wrap: {} {}", wrapped.status, String::from_utf8_lossy(&wrapped.body));
    let id = wrapped.json()["id"].as_str().context("id")?.to_owned();
    let payment = json!({"packet_id": id, "payment_id": format!("pay-{id}"), "amount_fen": total, "status": "success"})
        .to_string();
    let signature = hongbao::auth::sign_payment(PAYMENT, payment.as_bytes());
    let paid =
        client.post(&format!("/v1/packets/{id}/payment"), &[("x-payment-signature", &signature)], payment).await?;
    ensure!(paid.status == 200, "pay: {} {}", paid.status, String::from_utf8_lossy(&paid.body));
    Ok(id)
}

/// One client's grab + open, honouring 429s. Returns its claim (or None if
/// exhausted), the latency of each answered open, and the number of 429s.
async fn grab_and_open(client: &mut Client, id: &str, user: &str) -> Result<(Option<Value>, Vec<Duration>, u32, u32)> {
    let auth = bearer(user);
    let (mut opens, mut busy, mut requests) = (Vec::new(), 0, 0);
    loop {
        requests += 1;
        let grabbed = client.post(&format!("/v1/packets/{id}/grab"), &[("authorization", &auth)], "").await?;
        match (grabbed.status, grabbed.code().as_deref()) {
            (200, _) => {}
            (429, _) => {
                busy += 1;
                tokio::time::sleep(Duration::from_secs(
                    grabbed.header("retry-after").and_then(|v| v.parse().ok()).unwrap_or(1),
                ))
                .await;
                continue;
            }
            (410, Some("exhausted")) => return Ok((None, opens, busy, requests)),
            other => bail!("grab answered {other:?}: {}", String::from_utf8_lossy(&grabbed.body)),
        }
        let body = json!({"ticket": grabbed.json()["ticket"]}).to_string();
        loop {
            requests += 1;
            let started = Instant::now();
            let opened =
                client.post(&format!("/v1/packets/{id}/open"), &[("authorization", &auth)], body.clone()).await?;
            match (opened.status, opened.code().as_deref()) {
                (200, _) => {
                    opens.push(started.elapsed());
                    return Ok((Some(opened.json()["claim"].clone()), opens, busy, requests));
                }
                (429, _) => {
                    busy += 1;
                    tokio::time::sleep(Duration::from_secs(
                        opened.header("retry-after").and_then(|v| v.parse().ok()).unwrap_or(1),
                    ))
                    .await;
                }
                (410, Some("exhausted")) => {
                    opens.push(started.elapsed());
                    return Ok((None, opens, busy, requests));
                }
                other => bail!("open answered {other:?}: {}", String::from_utf8_lossy(&opened.body)),
            }
        }
    }
}

/// The money invariants of one packet, from its query view, against what
/// the clients were told. Any violation fails the bench.
async fn check_packet(
    addr: SocketAddr,
    id: &str,
    total: u64,
    shares: u32,
    told: &HashMap<String, Value>,
) -> Result<()> {
    let view =
        Client::new(addr).get(&format!("/v1/packets/{id}"), &[("authorization", &bearer("sender"))]).await?.json();
    let claims = view["claims"].as_array().context("claims")?;
    let sum: u64 = claims.iter().map(|c| c["amount_fen"].as_u64().unwrap_or(0)).sum();
    let mut users: Vec<&str> = claims.iter().map(|c| c["user"].as_str().unwrap_or("")).collect();
    users.sort_unstable();
    users.dedup();
    let ok = claims.len() == shares as usize
        && sum == total
        && users.len() == claims.len()
        && claims.iter().all(|c| c["amount_fen"].as_u64().unwrap_or(0) >= 1)
        && told.len() == claims.len()
        && claims.iter().all(|c| told.get(c["user"].as_str().unwrap_or("")) == Some(c));
    if !ok {
        bail!(
            "INVARIANT VIOLATION on packet {id}: {} claims (want {shares}), sum {sum} (want {total}), {} users, {} told",
            claims.len(),
            users.len(),
            told.len()
        );
    }
    Ok(())
}

async fn hot(target: Target<'_>, shares: u32, clients: usize) -> Result<Hot> {
    let addr = target.addr;
    let total = u64::from(shares) * 888;
    let id = Arc::new(paid_packet(&mut Client::new(addr), total, shares).await?);
    let before = target.store_stats();
    let barrier = Arc::new(tokio::sync::Barrier::new(clients + 1));
    // A client is a connection opening as one new user after another until
    // the packet is empty: `clients` is the number of requests in flight.
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let (id, barrier) = (Arc::clone(&id), Arc::clone(&barrier));
            tokio::spawn(async move {
                let mut client = Client::new(addr);
                // Connect before the start, so the race is on the packet, not on accept.
                client.get("/healthz", &[]).await?;
                barrier.wait().await;
                let (mut claims, mut latencies, mut busy, mut requests, mut last_claim) =
                    (Vec::new(), Vec::new(), 0, 0, None);
                for n in 0.. {
                    let user = format!("h{i:04}x{n}");
                    let (claim, opens, b, r) = grab_and_open(&mut client, &id, &user).await?;
                    latencies.extend(opens);
                    busy += b;
                    requests += r;
                    match claim {
                        Some(claim) => {
                            claims.push((user, claim));
                            last_claim = Some(Instant::now());
                        }
                        None => break,
                    }
                }
                Ok::<_, anyhow::Error>((claims, latencies, busy, requests, last_claim))
            })
        })
        .collect();
    let phase = format!("hot-{shares}-{clients}");
    perf_control(&phase, true);
    let instances_before = target.instances_created();
    barrier.wait().await;
    let started = Instant::now();
    let cpu_started = target.cpu_time();
    let (mut told, mut latencies, mut busy, mut requests, mut emptied) = (HashMap::new(), Vec::new(), 0, 0, started);
    for t in tasks {
        let (claims, opens, b, r, last_claim) = t.await??;
        latencies.extend(opens);
        busy += b;
        requests += r;
        emptied = emptied.max(last_claim.unwrap_or(started));
        told.extend(claims);
    }
    let (elapsed, cpu) = (started.elapsed(), cpu_started.map(|at| cpu_time() - at));
    perf_control(&phase, false);
    let instances = instances_before.map(|at| crate::server::instances_created() - at);
    let after = target.store_stats();
    check_packet(addr, &id, total, shares, &told).await?;
    latencies.sort_unstable();
    let empty_after = emptied - started;
    let hot = Hot {
        shares,
        clients,
        opens_per_s: f64::from(shares) / empty_after.as_secs_f64(),
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
        calls_per_open: per(before, after, |s| s.calls, f64::from(shares)),
        cas_per_open: per(before, after, |s| s.swaps, f64::from(shares)),
        busy_share: f64::from(busy) / f64::from(requests.max(1)),
        empty_after,
        requests_per_s: f64::from(requests) / elapsed.as_secs_f64(),
        cpu_per_request: cpu.map(|cpu| cpu / requests.max(1)),
        requests,
        instances,
    };
    progress(format!(
        "  hot {shares} shares, {clients} clients: {:.0} opens/s, p99 {} ms, {} CAS/open, empty after {} ms, {} requests, {} instances created",
        hot.opens_per_s,
        ms(hot.p99),
        figure(hot.cas_per_open, 2),
        ms(hot.empty_after),
        hot.requests,
        figure(hot.instances.map(|n| n as f64), 0)
    ));
    Ok(hot)
}

async fn many(target: Target<'_>, packets: usize, connections: usize) -> Result<Many> {
    const SHARES: u32 = 10;
    let addr = target.addr;
    progress(format!("  many packets: wrapping and paying {packets} packets"));
    let next = Arc::new(AtomicUsize::new(0));
    let setup: Vec<_> = (0..connections)
        .map(|_| {
            let next = Arc::clone(&next);
            tokio::spawn(async move {
                let mut client = Client::new(addr);
                let mut ids = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < packets {
                    ids.push(paid_packet(&mut client, 1_000, SHARES).await?);
                }
                Ok::<_, anyhow::Error>(ids)
            })
        })
        .collect();
    let mut ids = Vec::new();
    for t in setup {
        ids.extend(t.await??);
    }
    let ids = Arc::new(ids);
    // Two phases, so each rate is one kind of request: every distinct user
    // grabs (a ticket each), then every one of them opens.
    let jobs_count = packets * SHARES as usize;
    progress(format!("  many packets: {jobs_count} grabs, then {jobs_count} opens, by distinct users"));
    let grabs = jobs(jobs_count, |job| {
        let id = &ids[job % ids.len()];
        (format!("/v1/packets/{id}/grab"), bearer(&format!("m{job}")), String::new())
    });
    let grab_started = Instant::now();
    let cpu_started = target.cpu_time();
    let grabbed = run_jobs(addr, connections, &grabs).await?;
    let grabs_per_s = jobs_count as f64 / grab_started.elapsed().as_secs_f64();
    let cpu_per_grab = cpu_started.map(|at| (cpu_time() - at) / jobs_count as u32);
    let opens = jobs(jobs_count, |job| {
        let ticket = parse(&grabbed[job].1)["ticket"].as_str().unwrap_or_default().to_owned();
        let (id, auth) = (&ids[job % ids.len()], &grabs[job].1);
        (format!("/v1/packets/{id}/open"), auth.clone(), json!({ "ticket": ticket }).to_string())
    });
    let before = target.store_stats();
    perf_control("open", true);
    let instances_before = target.instances_created();
    let started = Instant::now();
    let cpu_started = target.cpu_time();
    let opened = run_jobs(addr, connections, &opens).await?;
    let elapsed = started.elapsed();
    let cpu_per_open = cpu_started.map(|at| (cpu_time() - at) / jobs_count as u32);
    let instances = instances_before.map(|at| crate::server::instances_created() - at);
    perf_control("open", false);
    let opened: Vec<(Duration, Value)> = opened.into_iter().map(|(took, body)| (took, parse(&body))).collect();
    let mut latencies: Vec<Duration> = opened.iter().map(|(took, _)| *took).collect();
    let mut told = vec![HashMap::new(); ids.len()];
    for (job, (_, reply)) in opened.iter().enumerate() {
        told[job % ids.len()].insert(format!("m{job}"), reply["claim"].clone());
    }
    let after = target.store_stats();
    for (i, id) in ids.iter().enumerate().step_by((ids.len() / 200).max(1)) {
        check_packet(addr, id, 1_000, SHARES, &told[i]).await?;
    }
    latencies.sort_unstable();
    Ok(Many {
        packets,
        grabs_per_s,
        opens_per_s: jobs_count as f64 / elapsed.as_secs_f64(),
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
        calls_per_open: per(before, after, |s| s.calls, jobs_count as f64),
        cas_per_open: per(before, after, |s| s.swaps, jobs_count as f64),
        cpu_per_grab,
        cpu_per_open,
        instances,
    })
}

/// POST requests ready to send: (path, authorization, body). Built (tokens
/// signed) before a phase's clock starts, and answers parsed after it stops,
/// so a phase's time and CPU are the host's and the HTTP exchange's, not the
/// load generator's bookkeeping.
type Job = (String, String, Bytes);

fn jobs(count: usize, make: impl Fn(usize) -> (String, String, String)) -> Arc<Vec<Job>> {
    Arc::new((0..count).map(make).map(|(path, auth, body)| (path, auth, Bytes::from(body))).collect())
}

/// Sends every job over `connections` connections; every answer must be
/// 200. Returns, per job, its latency and its answer's body.
async fn run_jobs(addr: SocketAddr, connections: usize, jobs: &Arc<Vec<Job>>) -> Result<Vec<(Duration, Vec<u8>)>> {
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let (next, jobs) = (Arc::clone(&next), Arc::clone(jobs));
            tokio::spawn(async move {
                let mut client = Client::new(addr);
                let mut done = Vec::new();
                loop {
                    let job = next.fetch_add(1, Ordering::Relaxed);
                    let Some((path, auth, body)) = jobs.get(job) else {
                        return Ok::<_, anyhow::Error>(done);
                    };
                    let started = Instant::now();
                    let reply = client.post(path, &[("authorization", auth)], body.clone()).await?;
                    ensure!(reply.status == 200, "{path}: {} {}", reply.status, String::from_utf8_lossy(&reply.body));
                    // A copy: the reply's bytes share the connection's read
                    // buffer, which keeping them would keep from being reused.
                    done.push((job, started.elapsed(), reply.body.to_vec()));
                }
            })
        })
        .collect();
    let mut results = vec![(Duration::ZERO, Vec::new()); jobs.len()];
    for w in workers {
        for (job, took, body) in w.await?? {
            results[job] = (took, body);
        }
    }
    Ok(results)
}

fn parse(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or(Value::Null)
}

/// Settles everything and reconciles today's packets: no mismatch, and
/// credited = claimed + refunded.
async fn check_books(addr: SocketAddr) -> Result<Value> {
    let mut client = Client::new(addr);
    let admin = format!("Bearer {ADMIN}");
    let settled = client.post("/v1/admin/settle", &[("authorization", &admin)], "").await?;
    ensure!(settled.status == 200, "settle: {}", settled.status);
    let day = hongbao::Timestamp(now()).day();
    let report = client.get(&format!("/v1/admin/reconcile?day={day}"), &[("authorization", &admin)]).await?.json();
    let credited = report["credited_fen"].as_u64().unwrap_or(0);
    let owed = report["claimed_fen"].as_u64().unwrap_or(0) + report["refunded_fen"].as_u64().unwrap_or(1);
    if report["mismatches"] != json!([]) || credited != owed {
        bail!("INVARIANT VIOLATION in reconciliation: {report}");
    }
    Ok(report)
}

/// Round trip of one request at a time (no queueing): /healthz, grab, open,
/// each the mean over `n` requests on one connection.
async fn service_times(addr: SocketAddr, n: usize) -> Result<Vec<(&'static str, Duration)>> {
    let mut client = Client::new(addr);
    let ids = {
        let mut ids = Vec::new();
        for _ in 0..n.div_ceil(100) {
            ids.push(paid_packet(&mut client, 100 * 100, 100).await?);
        }
        ids
    };
    let mut timed = Vec::new();
    let started = Instant::now();
    for _ in 0..n {
        client.get("/healthz", &[]).await?;
    }
    timed.push(("/healthz", started.elapsed() / n as u32));
    let mut tickets = Vec::with_capacity(n);
    let started = Instant::now();
    for i in 0..n {
        let reply = client
            .post(&format!("/v1/packets/{}/grab", ids[i / 100]), &[("authorization", &bearer(&format!("s{i}")))], "")
            .await?;
        ensure!(reply.status == 200, "grab: {}", reply.status);
        tickets.push(reply.json()["ticket"].as_str().unwrap_or_default().to_owned());
    }
    timed.push(("grab", started.elapsed() / n as u32));
    let started = Instant::now();
    for (i, ticket) in tickets.iter().enumerate() {
        let body = json!({ "ticket": ticket }).to_string();
        let reply = client
            .post(&format!("/v1/packets/{}/open", ids[i / 100]), &[("authorization", &bearer(&format!("s{i}")))], body)
            .await?;
        ensure!(reply.status == 200, "open: {}", reply.status);
    }
    timed.push(("open", started.elapsed() / n as u32));
    Ok(timed)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    format!("{cores} cores, {cpu}")
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// A figure only the in-process host has: "n/a" on `spin up`.
fn figure(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "n/a".into(), |v| format!("{v:.decimals$}"))
}

fn micros(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64() * 1e6)
}

pub async fn run(options: &Options) -> Result<()> {
    let manifest = std::fs::canonicalize(&options.manifest)?;
    let state = std::env::temp_dir().join(format!("hongbao-bench-{}", std::process::id()));
    let (packets, client_counts, shares): (usize, Vec<usize>, Vec<u32>) =
        if options.quick { (500, vec![64, 256], vec![100]) } else { (10_000, vec![64, 256, 1024], vec![100, 1000]) };
    let packets = options.packets.unwrap_or(packets);
    progress(format!("machine: {}", machine()));

    // Per request: instantiation cost and sizes (from the first app loaded).
    let first = start(&manifest, Backend::Memory, &options.strategies[0], &state, options).await?;
    let mut instantiate = Vec::new();
    for component in ["healthz", "open"] {
        let mut total = Duration::ZERO;
        for _ in 0..200 {
            total += first.app().instantiate_once(component).await?;
        }
        instantiate.push((component, total / 200));
    }
    let sizes = first.app().component_sizes().to_vec();
    let service_times = service_times(first.addr(), if options.quick { 500 } else { 3000 }).await?;
    first.shutdown().await?;

    let mut runs = Vec::new();
    let backends: Vec<Backend> = [Backend::Memory, Backend::Durable]
        .into_iter()
        .filter(|b| options.stores.iter().any(|s| s == b.name()))
        .collect();
    for store in &options.stores {
        ensure!(STORES.contains(&store.as_str()), "--stores: unknown store {store:?} (one of {})", STORES.join(", "));
    }
    ensure!(!backends.is_empty(), "--stores names no host store (memory, sqlite): the Spin rows are ratios to one");
    for backend in backends {
        for strategy in &options.strategies {
            progress(format!("{} store, {strategy} strategy", backend.name()));
            let running = start(&manifest, backend, strategy, &state, options).await?;
            let addr = running.addr();
            let ceiling_time = Duration::from_secs(if options.quick { 1 } else { 3 });
            let mut ceilings = Vec::new();
            for &clients in &client_counts {
                let c = ceiling(addr, clients, ceiling_time).await?;
                progress(format!(
                    "  /healthz ceiling at {clients} clients: {:.0} req/s, p99 {} ms",
                    c.per_s,
                    ms(c.p99)
                ));
                ceilings.push(c);
            }
            let cpu_started = cpu_time();
            let served = || running.timings().into_iter().find(|t| t.component == "healthz").map_or(0, |t| t.requests);
            let healthz_before = served();
            perf_control("healthz", true);
            let before = ceiling(addr, 64, ceiling_time).await?.per_s;
            perf_control("healthz", false);
            let cpu_per_healthz = (cpu_time() - cpu_started) / (served() - healthz_before).max(1) as u32;
            let target = Target { addr, host: Some(&running) };
            let many = many(target, packets, 64).await?;
            let after = ceiling(addr, 64, ceiling_time).await?.per_s;
            progress(format!(
                "  many packets: {:.0} opens/s; /healthz at 64 clients {before:.0} req/s before, {after:.0} after",
                many.opens_per_s
            ));
            for ComponentTiming { component, requests: n, mean } in running.timings() {
                if n > 0 && std::env::var_os("HONGBAO_BENCH_TIMINGS").is_some() {
                    progress(format!(
                        "  after many packets, host time per request, {component}: {:.0} µs over {n}",
                        mean.as_secs_f64() * 1e6
                    ));
                }
            }
            let mut hots = Vec::new();
            for &s in &shares {
                for &clients in &client_counts {
                    hots.push(hot(target, s, clients).await?);
                }
            }
            for ComponentTiming { component, requests: n, mean } in running.timings() {
                if n > 0 {
                    progress(format!(
                        "  host time per request, {component}: {:.0} µs over {n}",
                        mean.as_secs_f64() * 1e6
                    ));
                }
            }
            let books = check_books(addr).await?;
            progress(format!(
                "  books balance: {} packets, {} fen claimed, no mismatch",
                books["packets"], books["claimed_fen"]
            ));
            running.shutdown().await?;
            runs.push(Run {
                backend,
                strategy: strategy.clone(),
                ceiling: ceilings,
                ceiling_around_many: (before, after),
                cpu_per_healthz,
                many,
                hot: hots,
            });
        }
    }
    let _ = std::fs::remove_dir_all(&state);
    let spin_runs = spin_runs(options, &manifest, &runs).await?;
    print_report(&runs, &spin_runs, &instantiate, &service_times, &sizes);
    if let Some(path) = &options.chart {
        chart(&runs, &client_counts, path)?;
        progress(format!("chart written to {}", path.display()));
    }
    Ok(())
}

/// Every `--stores` name.
const STORES: [&str; 4] = ["memory", "sqlite", "spin-sqlite", "spin-redis"];

/// One `spin up` run: the same phases as the host's, smaller (Spin's SQLite
/// store is a few hundred opens per second), with the open strategy of the
/// host run it is compared with (`reference`).
struct SpinRun {
    store: &'static str,
    healthz: f64,
    many: Many,
    hot: Vec<Hot>,
}

/// The host run the Spin rows are ratios to: the durable store with the
/// `auto` strategy (the defaults), else the closest there is.
fn reference(runs: &[Run]) -> &Run {
    let score = |r: &Run| (r.backend == Backend::Durable, r.strategy == "auto");
    runs.iter().max_by_key(|r| score(r)).expect("at least one host run")
}

/// The `spin-sqlite` and `spin-redis` runs asked for, on the real Spin CLI.
async fn spin_runs(options: &Options, manifest: &Path, runs: &[Run]) -> Result<Vec<SpinRun>> {
    let wanted: Vec<&'static str> = [("spin-sqlite", "sqlite"), ("spin-redis", "redis")]
        .into_iter()
        .filter(|(name, _)| options.stores.iter().any(|s| s == name))
        .map(|(_, store)| store)
        .collect();
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let Some(bin) = &options.spin else {
        progress(format!("spin up: skipped ({NO_SPIN})"));
        return Ok(Vec::new());
    };
    let strategy = reference(runs).strategy.clone();
    let packets = if options.quick { 50 } else { 300 };
    let mut spin_runs = Vec::new();
    for store in wanted {
        progress(format!("spin up ({}), {store} store, {strategy} strategy", bin.display()));
        let redis = match store {
            "redis" => Some(tokio::task::block_in_place(RedisServer::start)?),
            _ => None,
        };
        let mut env = variables(&strategy);
        if redis.is_some() {
            // Spin 4.0.2's Redis get-many fails (see ../shared/bin/README.md).
            env.push(("SPIN_VARIABLE_KV_BATCH_READS".into(), "false".into()));
        }
        let config = SpinConfig { bin, manifest, state_dir: None, env: &env, redis: redis.as_ref().map(|r| r.addr) };
        let spin = tokio::task::block_in_place(|| SpinUp::start(&config))?;
        let target = Target { addr: spin.addr, host: None };
        let ceiling_time = Duration::from_secs(if options.quick { 1 } else { 3 });
        let healthz = ceiling(spin.addr, 64, ceiling_time).await?.per_s;
        progress(format!("  /healthz at 64 clients: {healthz:.0} req/s"));
        let many = many(target, packets, 64).await?;
        progress(format!("  many packets: {:.0} opens/s", many.opens_per_s));
        let mut hot_runs = Vec::new();
        for clients in [64, 256] {
            hot_runs.push(hot(target, 100, clients).await?);
        }
        let books = check_books(spin.addr).await?;
        progress(format!(
            "  books balance: {} packets, {} fen claimed, no mismatch",
            books["packets"], books["claimed_fen"]
        ));
        spin_runs.push(SpinRun { store, healthz, many, hot: hot_runs });
    }
    Ok(spin_runs)
}

/// The hot-packet run Spin also has: 100 shares, at `clients` clients.
fn hot_at(hot: &[Hot], clients: usize) -> Option<&Hot> {
    hot.iter().find(|h| h.shares == 100 && h.clients == clients)
}

/// Spin beside the host: each `spin up` run's figures and their ratio to
/// the host's (`reference`) in the same run.
fn print_spin_report(runs: &[Run], spin_runs: &[SpinRun]) {
    if spin_runs.is_empty() {
        return;
    }
    let host = reference(runs);
    let host_healthz = (host.ceiling_around_many.0 + host.ceiling_around_many.1) / 2.0;
    println!(
        "| server | store | strategy | /healthz req/s, 64 clients (÷ host) | many packets: grabs/s | many packets: opens/s (÷ host) | open p50 / p99 ms | hot 100 shares, 64 clients: empty after ms (× host) | hot 100 shares, 256 clients: empty after ms (× host) | 429 share at 256 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let rows = std::iter::once(("hongbao-host", host.backend.name(), host_healthz, &host.many, &host.hot))
        .chain(spin_runs.iter().map(|r| ("spin up", r.store, r.healthz, &r.many, &r.hot)));
    let strategy = &host.strategy;
    for (server, store, healthz, many, hot) in rows {
        let hot_cell = |clients: usize| {
            let (Some(h), Some(base)) = (hot_at(hot, clients), hot_at(&host.hot, clients)) else {
                return "n/a".to_owned();
            };
            format!("{} (× {:.1})", ms(h.empty_after), h.empty_after.as_secs_f64() / base.empty_after.as_secs_f64())
        };
        let busy = hot_at(hot, 256).map_or(0.0, |h| h.busy_share);
        println!(
            "| {server} | {store} | {strategy} | {healthz:.0} ({:.0}%) | {:.0} | {:.0} ({} packets × 10; {:.0}%) | {} / {} | {} | {} | {:.1}% |",
            100.0 * healthz / host_healthz,
            many.grabs_per_s,
            many.opens_per_s,
            many.packets,
            100.0 * many.opens_per_s / host.many.opens_per_s,
            ms(many.p50),
            ms(many.p99),
            hot_cell(64),
            hot_cell(256),
            100.0 * busy
        );
    }
    println!();
}

fn print_report(
    runs: &[Run],
    spin_runs: &[SpinRun],
    instantiate: &[(&str, Duration)],
    service_times: &[(&str, Duration)],
    sizes: &[ComponentSize],
) {
    println!("machine: {}\n", machine());
    println!(
        "| store | strategy | /healthz ceiling (64 clients, before / after) | many packets: grabs/s | many packets: opens/s | opens/s ÷ mean ceiling (target ≥ 50%) | open p50 ms | open p99 ms | store calls/open | CAS/open | CPU µs per healthz / grab / open |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in runs {
        let (before, after) = r.ceiling_around_many;
        let ceiling = (before + after) / 2.0;
        println!(
            "| {} | {} | {:.0} / {:.0} req/s | {:.0} | {:.0} ({} packets × 10) | {:.0}% | {} | {} | {} | {} | {:.0} / {} / {} |",
            r.backend.name(),
            r.strategy,
            before,
            after,
            r.many.grabs_per_s,
            r.many.opens_per_s,
            r.many.packets,
            100.0 * r.many.opens_per_s / ceiling,
            ms(r.many.p50),
            ms(r.many.p99),
            figure(r.many.calls_per_open, 1),
            figure(r.many.cas_per_open, 2),
            r.cpu_per_healthz.as_secs_f64() * 1e6,
            figure(micros(r.many.cpu_per_grab), 0),
            figure(micros(r.many.cpu_per_open), 0)
        );
    }
    println!();
    println!(
        "| store | strategy | shares | clients | opens/s | p50 ms | p99 ms (target ≤ 25 at 256) | store calls/open | CAS/open (target ≤ 1.5 at 256) | 429 share | empty after ms | grabs+opens/s | CPU µs per grab or open |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in runs {
        for h in &r.hot {
            println!(
                "| {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {:.1}% | {} | {:.0} | {} |",
                r.backend.name(),
                r.strategy,
                h.shares,
                h.clients,
                h.opens_per_s,
                ms(h.p50),
                ms(h.p99),
                figure(h.calls_per_open, 1),
                figure(h.cas_per_open, 2),
                100.0 * h.busy_share,
                ms(h.empty_after),
                h.requests_per_s,
                figure(micros(h.cpu_per_request), 0)
            );
        }
    }
    println!();
    print_spin_report(runs, spin_runs);
    println!("| store | strategy | clients | /healthz req/s | /healthz p50 ms | /healthz p99 ms |");
    println!("|---|---|---|---|---|---|");
    for r in runs {
        for c in &r.ceiling {
            println!(
                "| {} | {} | {} | {:.0} | {} | {} |",
                r.backend.name(),
                r.strategy,
                c.clients,
                c.per_s,
                ms(c.p50),
                ms(c.p99)
            );
        }
    }
    println!();
    println!("| per request | value |");
    println!("|---|---|");
    for (component, took) in instantiate {
        println!("| instantiate {component} | {:.0} µs |", took.as_secs_f64() * 1e6);
    }
    for r in runs {
        println!(
            "| opens per instance created, many packets, {} / {} | {} |",
            r.backend.name(),
            r.strategy,
            figure(r.many.instances.map(|n| (r.many.packets * 10) as f64 / n.max(1) as f64), 0)
        );
    }
    for (what, took) in service_times {
        println!("| round trip of one {what}, one client, memory store | {:.0} µs |", took.as_secs_f64() * 1e6);
    }
    for ComponentSize { component, bytes } in sizes {
        println!("| size of {component} | {:.0} KiB |", *bytes as f64 / 1024.0);
    }
}

fn chart(runs: &[Run], client_counts: &[usize], path: &Path) -> Result<()> {
    let colors = [[214, 39, 40], [31, 119, 180], [44, 160, 44], [255, 127, 14], [148, 103, 189]];
    let biggest = runs.iter().flat_map(|r| r.hot.iter().map(|h| h.shares)).max().unwrap_or(100);
    let mut series = vec![crate::chart::Series {
        name: "/healthz ceiling".into(),
        color: [90, 90, 90],
        dashed: true,
        values: runs[0].ceiling.iter().map(|c| c.per_s).collect(),
    }];
    for (i, r) in runs.iter().enumerate() {
        series.push(crate::chart::Series {
            name: format!("{} ({})", r.strategy, r.backend.name()),
            color: colors[i % colors.len()],
            dashed: r.backend == Backend::Memory,
            values: r.hot.iter().filter(|h| h.shares == biggest).map(|h| h.opens_per_s).collect(),
        });
    }
    crate::chart::Chart {
        title: format!("Opens/s of a hot packet ({biggest} shares) vs /healthz"),
        x_label: "concurrent clients".into(),
        y_label: "per second (log scale)".into(),
        x_ticks: client_counts.iter().map(|c| c.to_string()).collect(),
        series,
    }
    .render(path)
}
