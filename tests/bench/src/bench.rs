//! The measurements: starts the host in this process on loopback with the
//! release components, drives real HTTP load from this same process (one
//! connection per client), and returns every figure of the run: the
//! `/healthz` ceiling; many packets opened by distinct users; hot packets
//! (100 and 1,000 shares) at 64 / 256 / 1,024 clients with store calls and
//! CAS attempts per open, 429 share and time until empty; instantiation cost
//! and component sizes; for both store backends and every open strategy,
//! and the same phases on `spin up`. Every packet's money is checked and
//! every run's books audited; a violation stops the run.

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use hongbao_host::client::{self, Books, Client, Outcome, Paid, Secrets};
use hongbao_host::external::{NO_SPIN, RedisServer, SpinConfig, SpinUp};
use hongbao_host::runtime_config::KvStoreConfig;
use hongbao_host::{App, ComponentSize, ComponentTiming, Running, ServeOptions, StoreChoice, serve};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const AUTH: &str = "bench-auth";
pub(crate) const PAYMENT: &str = "bench-payment";
pub(crate) const ADMIN: &str = "bench-admin";
const SECRETS: Secrets<'static> = Secrets { auth: AUTH, payment: PAYMENT };
/// Who wraps every packet (and may see its claims).
const SENDER: &str = "sender";

/// An open strategy (the `open_strategy` variable).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Strategy {
    Cas,
    Cursor,
    Auto,
}

/// A store backend: `memory` and `sqlite` on this host, `redis` (the
/// per-SET manifest, every label on one Redis server of the bench's own,
/// AOF with fsync always) on one host and on two hosts sharing it
/// (`redis-2-hosts`, requests taking turns), `spin-sqlite` and `spin-redis`
/// on `spin up` with that store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Store {
    Memory,
    Sqlite,
    Redis,
    #[value(name = "redis-2-hosts")]
    Redis2Hosts,
    SpinSqlite,
    SpinRedis,
}

/// The name clap parses, for both enums.
pub fn name(value: impl clap::ValueEnum) -> String {
    value.to_possible_value().map(|v| v.get_name().to_owned()).unwrap_or_default()
}

pub struct Options {
    pub manifest: PathBuf,
    /// Fewer and smaller runs (a smoke test of the bench itself).
    pub quick: bool,
    pub strategies: Vec<Strategy>,
    /// Requests one instance may serve at once (`spin up`'s flag of the same name).
    pub max_instance_concurrent_reuse_count: usize,
    /// Requests running in components at once (`up`'s flag of the same name).
    pub max_running_requests: usize,
    pub stores: Vec<Store>,
    /// Packets of the many-packets phase, if not the default.
    pub packets: Option<usize>,
    /// The Spin CLI for the `spin-*` stores (`None`: they are skipped).
    pub spin: Option<PathBuf>,
    /// Keys of the large durable store (`crate::large`; 0: not measured).
    pub large_store_keys: u64,
}

/// Everything one run measured.
pub struct Results {
    /// The clients of the ceiling and hot-packet phases.
    pub client_counts: Vec<usize>,
    pub runs: Vec<Run>,
    pub spin_runs: Vec<SpinRun>,
    /// Why the `spin-*` stores asked for were not measured.
    pub spin_skipped: Option<String>,
    pub instantiate: Vec<(&'static str, Duration)>,
    pub service_times: Vec<(&'static str, Duration)>,
    pub sizes: Vec<ComponentSize>,
    /// Packets whose money was checked against what their clients were told.
    pub packets_checked: usize,
    /// The large durable store, when measured.
    pub large: Option<crate::large::LargeStore>,
}

/// Where the load goes: hosts in this process (whose stores count their
/// calls and whose CPU is this process's; requests take turns over them),
/// or a server of its own (`spin up`), measured from outside only.
#[derive(Clone, Copy)]
pub(crate) struct Server<'a> {
    pub(crate) addrs: &'a [SocketAddr],
    pub(crate) hosts: &'a [Running],
    /// The Redis server the hosts share, if any: its CPU is measured too.
    pub(crate) redis: Option<u32>,
}

impl Server<'_> {
    fn store_stats(&self) -> Option<hongbao_host::kv::StatsSnapshot> {
        (!self.hosts.is_empty())
            .then(|| self.hosts.iter().map(|h| h.app().store_stats()).fold(Default::default(), |total, s| total + s))
    }

    /// Instances created so far, and this process's CPU time: only
    /// meaningful when the hosts run here.
    fn instances_created(&self) -> Option<u64> {
        (!self.hosts.is_empty()).then(hongbao_host::instances_created)
    }

    fn cpu_time(&self) -> Option<Duration> {
        (!self.hosts.is_empty()).then(cpu_time)
    }

    /// The Redis server's CPU time so far (user + system, from /proc).
    fn redis_cpu(&self) -> Option<Duration> {
        self.redis.and_then(process_cpu)
    }

    /// The addresses, to hand to the load's tasks.
    fn addrs(&self) -> Addrs {
        self.addrs.into()
    }
}

/// The hosts a load's clients spread their requests over.
pub(crate) type Addrs = Arc<[SocketAddr]>;

/// One hot-packet run.
#[derive(Debug, Clone)]
pub struct Hot {
    pub shares: u32,
    pub clients: usize,
    pub opens_per_s: f64,
    pub p50: Duration,
    pub p99: Duration,
    /// Store calls and CAS attempts per open, instances created and CPU:
    /// `None` when the server is not this process (`spin up`).
    pub calls_per_open: Option<f64>,
    pub cas_per_open: Option<f64>,
    pub busy_share: f64,
    pub empty_after: Duration,
    /// Grabs and opens answered per second until every client was done.
    pub requests_per_s: f64,
    /// Process CPU per grab or open (see `cpu_time`).
    pub cpu_per_request: Option<Duration>,
    /// Grabs and opens sent, and instances created to answer them.
    pub requests: u32,
    pub instances: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Many {
    pub packets: usize,
    pub grabs_per_s: f64,
    pub opens_per_s: f64,
    pub p50: Duration,
    pub p99: Duration,
    /// As in `Hot`: `None` on `spin up`.
    pub calls_per_open: Option<f64>,
    pub cas_per_open: Option<f64>,
    /// Process CPU per request in each phase (see `cpu_time`).
    pub cpu_per_grab: Option<Duration>,
    pub cpu_per_open: Option<Duration>,
    pub calls_per_grab: Option<f64>,
    /// The shared Redis server's CPU per request (redis rows only).
    pub redis_cpu_per_grab: Option<Duration>,
    pub redis_cpu_per_open: Option<Duration>,
    /// Instances created while the opens ran (reuse keeps this small).
    pub instances: Option<u64>,
}

/// One host run: one store, one strategy.
pub struct Run {
    pub store: Store,
    pub strategy: Strategy,
    pub ceiling: Vec<Ceiling>,
    /// `/healthz` at the many-packets phase's 64 clients, just before and just
    /// after it: the ratio uses their mean, so a shared machine's drift
    /// during the phase shows instead of skewing the ratio unseen.
    pub ceiling_around_many: (f64, f64),
    /// Process CPU per `/healthz` request in the "before" ceiling.
    pub cpu_per_healthz: Duration,
    pub many: Many,
    pub hot: Vec<Hot>,
    pub books: Books,
    /// The audit's settle runs, per wallet credit (they credit every claim and refund of the run).
    pub settle: Settle,
}

/// What crediting wallets cost (the settle runs of the audit, reconcile included).
#[derive(Debug, Clone)]
pub struct Settle {
    pub credits: u64,
    pub cpu_per_credit: Option<Duration>,
    pub calls_per_credit: Option<f64>,
    pub redis_cpu_per_credit: Option<Duration>,
}

impl Run {
    /// Many packets' opens/s over the mean of the ceilings around them.
    pub fn many_ratio(&self) -> f64 {
        let (before, after) = self.ceiling_around_many;
        self.many.opens_per_s / ((before + after) / 2.0)
    }
}

pub(crate) fn progress(message: impl AsRef<str>) {
    eprintln!("bench: {}", message.as_ref());
}

pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

pub(crate) fn bearer(user: &str) -> String {
    client::bearer(AUTH, user)
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

/// CPU time process `pid` has used (user + system), from /proc (10 ms ticks:
/// a phase of seconds is measured to a few percent).
fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses: utime is the 14th field, stime the 15th.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_nanos(ticks * 1_000_000_000 / per_second))
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
    before: Option<hongbao_host::kv::StatsSnapshot>,
    after: Option<hongbao_host::kv::StatsSnapshot>,
    counter: impl Fn(&hongbao_host::kv::StatsSnapshot) -> u64,
    n: f64,
) -> Option<f64> {
    Some((counter(&after?) - counter(&before?)) as f64 / n)
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The application variables of every measured server, as environment.
pub(crate) fn variables(strategy: Strategy) -> Vec<(String, String)> {
    let strategy = name(strategy);
    [
        ("SPIN_VARIABLE_AUTH_SECRET", AUTH),
        ("SPIN_VARIABLE_PAYMENT_SECRET", PAYMENT),
        ("SPIN_VARIABLE_ADMIN_TOKEN", ADMIN),
        ("SPIN_VARIABLE_MAX_COUNT", "1000"),
        // One sender wraps every packet, 64 at once, before paying each.
        ("SPIN_VARIABLE_MAX_UNPAID_PER_USER", "1000"),
        ("SPIN_VARIABLE_OPEN_STRATEGY", strategy.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// The hosts of a run on `store` (`memory`, `sqlite`, `redis`: one host;
/// `redis-2-hosts`: two), fresh, and the Redis server they share.
async fn start(
    manifest: &Path,
    store: Store,
    strategy: Strategy,
    state: &Path,
    options: &Options,
) -> Result<(Vec<Running>, Option<RedisServer>)> {
    let vars: HashMap<String, String> = variables(strategy).into_iter().collect();
    let mut serve_options = ServeOptions {
        max_instance_concurrent_reuse_count: options.max_instance_concurrent_reuse_count,
        max_running_requests: options.max_running_requests,
        ..ServeOptions::default()
    };
    let (choice, manifest, redis, hosts) = match store {
        Store::Memory => (StoreChoice::Memory, manifest.to_owned(), None, 1),
        Store::Sqlite => {
            let _ = std::fs::remove_dir_all(state);
            (StoreChoice::Durable(state.to_owned()), manifest.to_owned(), None, 1)
        }
        Store::Redis | Store::Redis2Hosts => {
            let redis = tokio::task::block_in_place(RedisServer::start_durable)?;
            let url = redis.url();
            let layout = hongbao::config::KvLayout::PerSet;
            serve_options.runtime_config.key_value_stores = (layout.labels().iter().chain(layout.replica_labels()))
                .map(|label| (label.to_string(), KvStoreConfig::Redis { url: url.clone() }))
                .collect();
            let per_set = manifest.parent().context("the manifest's directory")?.join("spin.sets.toml");
            (StoreChoice::Memory, per_set, Some(redis), if store == Store::Redis { 1 } else { 2 })
        }
        Store::SpinSqlite | Store::SpinRedis => bail!("{} is a store of spin up, not of this host", name(store)),
    };
    let mut running = Vec::new();
    for _ in 0..hosts {
        let app = App::load_with(&manifest, choice.clone(), serve_options.clone(), |k| vars.get(k).cloned())?;
        running.push(serve(app, "127.0.0.1:0".parse()?).await?);
    }
    Ok((running, redis))
}

/// `/healthz` at one number of clients: its rate and its latency.
#[derive(Debug, Clone, Copy)]
pub struct Ceiling {
    pub clients: usize,
    pub per_s: f64,
    pub p50: Duration,
    pub p99: Duration,
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

/// Wraps and pays a packet of `count` shares as `SENDER`.
async fn paid_packet(client: &mut Client, total: u64, count: u32) -> Result<Paid> {
    client::paid_packet(client, SECRETS, SENDER, "lucky", total, count).await
}

/// The money invariants of one packet, from its query view, against what
/// it was wrapped with and what its clients were told (user → claim): one
/// claim per share and per user, each at least 1 fen, summing to the total,
/// each exactly as answered. Any violation fails the bench.
async fn check_packet(client: &mut Client, packet: &Paid, told: &HashMap<String, Value>) -> Result<()> {
    let id = &packet.id;
    let view = client.get(&format!("/v1/packets/{id}"), &[("authorization", &bearer(SENDER))]).await?;
    ensure!(view.status == 200, "query {id}: {} {}", view.status, String::from_utf8_lossy(&view.body));
    let view = view.json();
    let claims = view["claims"].as_array().with_context(|| format!("packet {id}: a view without claims: {view}"))?;
    let mut sum = 0;
    let mut users = std::collections::HashSet::new();
    for claim in claims {
        let amount = claim["amount_fen"].as_u64().with_context(|| format!("packet {id}: claim {claim}"))?;
        let user = claim["user"].as_str().with_context(|| format!("packet {id}: claim {claim}"))?;
        ensure!(amount >= 1, "INVARIANT VIOLATION on packet {id}: a claim of {amount} fen: {claim}");
        ensure!(users.insert(user), "INVARIANT VIOLATION on packet {id}: two claims for {user}");
        ensure!(
            told.get(user) == Some(claim),
            "INVARIANT VIOLATION on packet {id}: {user} was told {:?}, the packet holds {claim}",
            told.get(user)
        );
        sum += amount;
    }
    ensure!(
        claims.len() == packet.count as usize && sum == packet.total_fen && told.len() == claims.len(),
        "INVARIANT VIOLATION on packet {id}: {} claims (want {}), sum {sum} (want {}), {} told",
        claims.len(),
        packet.count,
        packet.total_fen,
        told.len()
    );
    Ok(())
}

/// `check_packet` for every one of `packets` (`told[i]` is what the clients
/// of `packets[i]` were told), over `connections` connections.
async fn check_packets(
    addrs: Addrs,
    connections: usize,
    packets: Arc<Vec<Paid>>,
    told: Arc<Vec<HashMap<String, Value>>>,
) -> Result<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let checkers: Vec<_> = (0..connections)
        .map(|_| {
            let (next, packets, told, addrs) =
                (Arc::clone(&next), Arc::clone(&packets), Arc::clone(&told), Arc::clone(&addrs));
            tokio::spawn(async move {
                let mut client = Client::spread(&addrs);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(packet) = packets.get(i) else { return Ok::<_, anyhow::Error>(()) };
                    check_packet(&mut client, packet, &told[i]).await?;
                }
            })
        })
        .collect();
    for checker in checkers {
        checker.await??;
    }
    Ok(())
}

async fn hot(target: Server<'_>, shares: u32, clients: usize) -> Result<Hot> {
    let addrs = target.addrs();
    let packet = paid_packet(&mut Client::spread(&addrs), u64::from(shares) * 888, shares).await?;
    let id = Arc::new(packet.id.clone());
    let before = target.store_stats();
    let barrier = Arc::new(tokio::sync::Barrier::new(clients + 1));
    // A client is a connection opening as one new user after another until
    // the packet is empty: `clients` is the number of requests in flight.
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let (id, barrier, addrs) = (Arc::clone(&id), Arc::clone(&barrier), Arc::clone(&addrs));
            tokio::spawn(async move {
                let mut client = Client::spread(&addrs);
                // Connect before the start, so the race is on the packet, not on accept.
                client.get("/healthz", &[]).await?;
                barrier.wait().await;
                let (mut claims, mut latencies, mut busy, mut requests, mut last_claim) =
                    (Vec::new(), Vec::new(), 0, 0, None);
                for n in 0.. {
                    let user = format!("h{i:04}x{n}");
                    let attempt = client::grab_and_open(&mut client, &bearer(&user), &id).await?;
                    latencies.extend(attempt.opens);
                    busy += attempt.busy;
                    requests += attempt.requests;
                    match attempt.outcome {
                        Outcome::Claimed(claim) => {
                            claims.push((user, claim));
                            last_claim = Some(Instant::now());
                        }
                        Outcome::Exhausted => break,
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
    let instances = instances_before.map(|at| hongbao_host::instances_created() - at);
    let after = target.store_stats();
    check_packet(&mut Client::spread(&addrs), &packet, &told).await?;
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

pub(crate) async fn many(target: Server<'_>, packets: usize, connections: usize) -> Result<Many> {
    const SHARES: u32 = 10;
    let addrs = target.addrs();
    progress(format!("  many packets: wrapping and paying {packets} packets"));
    let next = Arc::new(AtomicUsize::new(0));
    let setup: Vec<_> = (0..connections)
        .map(|_| {
            let (next, addrs) = (Arc::clone(&next), Arc::clone(&addrs));
            tokio::spawn(async move {
                let mut client = Client::spread(&addrs);
                let mut ids = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < packets {
                    ids.push(paid_packet(&mut client, 1_000, SHARES).await?);
                }
                Ok::<_, anyhow::Error>(ids)
            })
        })
        .collect();
    let mut paid = Vec::new();
    for t in setup {
        paid.extend(t.await??);
    }
    let paid = Arc::new(paid);
    let ids: Vec<&str> = paid.iter().map(|p| p.id.as_str()).collect();
    // Two kinds of phase, so each rate is one kind of request: distinct users
    // grab (a ticket each), then every one of them opens; in rounds, as a
    // ticket lasts 60 s and a slow store takes longer than that for 100,000.
    let jobs_count = packets * SHARES as usize;
    progress(format!("  many packets: {jobs_count} grabs and opens by distinct users, {ROUND} of each a round"));
    let (mut grabbing, mut opening) = (Spent::default(), Spent::default());
    let mut opened = Vec::with_capacity(jobs_count);
    for first in (0..jobs_count).step_by(ROUND) {
        let round = first..(first + ROUND).min(jobs_count);
        let user = |job: usize| bearer(&format!("m{job}"));
        let grabs = jobs(round.len(), |i| {
            let job = first + i;
            (format!("/v1/packets/{}/grab", ids[job % ids.len()]), user(job), String::new())
        });
        let from = Mark::now(&target);
        let grabbed = run_jobs(&addrs, connections, "POST", &grabs, 200).await?;
        grabbing.add(&from, &Mark::now(&target));
        let opens = jobs(round.len(), |i| {
            let job = first + i;
            let ticket = parse(&grabbed[i].body)["ticket"].as_str().unwrap_or_default().to_owned();
            (format!("/v1/packets/{}/open", ids[job % ids.len()]), user(job), json!({ "ticket": ticket }).to_string())
        });
        perf_control("open", true);
        let from = Mark::now(&target);
        opened.extend(run_jobs(&addrs, connections, "POST", &opens, 200).await?);
        opening.add(&from, &Mark::now(&target));
        perf_control("open", false);
    }
    let opened: Vec<(Duration, Value)> = opened.into_iter().map(|a| (a.took, parse(&a.body))).collect();
    let mut latencies: Vec<Duration> = opened.iter().map(|(took, _)| *took).collect();
    let mut told = vec![HashMap::new(); ids.len()];
    for (job, (_, reply)) in opened.iter().enumerate() {
        told[job % ids.len()].insert(format!("m{job}"), reply["claim"].clone());
    }
    progress(format!("  many packets: checking the money of all {} packets", paid.len()));
    check_packets(addrs, connections, Arc::clone(&paid), Arc::new(told)).await?;
    latencies.sort_unstable();
    let n = jobs_count as f64;
    Ok(Many {
        packets,
        grabs_per_s: n / grabbing.wall.as_secs_f64(),
        opens_per_s: n / opening.wall.as_secs_f64(),
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
        calls_per_open: opening.calls.map(|c| c as f64 / n),
        cas_per_open: opening.swaps.map(|c| c as f64 / n),
        cpu_per_grab: grabbing.cpu.map(|t| t / jobs_count as u32),
        cpu_per_open: opening.cpu.map(|t| t / jobs_count as u32),
        calls_per_grab: grabbing.calls.map(|c| c as f64 / n),
        redis_cpu_per_grab: grabbing.redis.map(|t| t / jobs_count as u32),
        redis_cpu_per_open: opening.redis.map(|t| t / jobs_count as u32),
        instances: opening.instances,
    })
}

/// Grab and open rounds of the many-packets phase (jobs each).
const ROUND: usize = 20_000;

/// Where the measured server stood at one moment (see `Server`: `None` where
/// it is not this process).
struct Mark {
    at: Instant,
    cpu: Option<Duration>,
    redis: Option<Duration>,
    stats: Option<hongbao_host::kv::StatsSnapshot>,
    instances: Option<u64>,
}

impl Mark {
    fn now(target: &Server<'_>) -> Mark {
        Mark {
            at: Instant::now(),
            cpu: target.cpu_time(),
            redis: target.redis_cpu(),
            stats: target.store_stats(),
            instances: target.instances_created(),
        }
    }
}

/// What rounds of one kind of request spent in all, from `Mark` to `Mark`.
#[derive(Default)]
struct Spent {
    wall: Duration,
    cpu: Option<Duration>,
    redis: Option<Duration>,
    calls: Option<u64>,
    swaps: Option<u64>,
    instances: Option<u64>,
}

impl Spent {
    fn add(&mut self, from: &Mark, to: &Mark) {
        fn sum<T: std::ops::Add<Output = T> + Default>(total: Option<T>, part: Option<T>) -> Option<T> {
            part.map(|p| total.unwrap_or_default() + p)
        }
        self.wall += to.at - from.at;
        self.cpu = sum(self.cpu, to.cpu.zip(from.cpu).map(|(b, a)| b - a));
        self.redis = sum(self.redis, to.redis.zip(from.redis).map(|(b, a)| b - a));
        let stats = to.stats.zip(from.stats);
        self.calls = sum(self.calls, stats.map(|(b, a)| b.calls - a.calls));
        self.swaps = sum(self.swaps, stats.map(|(b, a)| b.swaps - a.swaps));
        self.instances = sum(self.instances, to.instances.zip(from.instances).map(|(b, a)| b - a));
    }
}

/// POST requests ready to send: (path, authorization, body). Built (tokens
/// signed) before a phase's clock starts, and answers parsed after it stops,
/// so a phase's time and CPU are the host's and the HTTP exchange's, not the
/// load generator's bookkeeping.
pub(crate) type Job = (String, String, Bytes);

pub(crate) fn jobs(count: usize, make: impl Fn(usize) -> (String, String, String)) -> Arc<Vec<Job>> {
    Arc::new((0..count).map(make).map(|(path, auth, body)| (path, auth, Bytes::from(body))).collect())
}

/// One answer of `run_jobs`.
pub(crate) struct Answer {
    pub took: Duration,
    pub body: Vec<u8>,
}

/// Sends every job (`method`, its credentials as `authorization`) over
/// `connections` connections; every answer must be `status`. Returns the
/// answers in job order.
pub(crate) async fn run_jobs(
    addrs: &Addrs,
    connections: usize,
    method: &'static str,
    jobs: &Arc<Vec<Job>>,
    status: u16,
) -> Result<Vec<Answer>> {
    run_jobs_with(addrs, connections, method, jobs, status, "authorization").await
}

/// `run_jobs` with each job's credentials in the header `credentials`.
pub(crate) async fn run_jobs_with(
    addrs: &Addrs,
    connections: usize,
    method: &'static str,
    jobs: &Arc<Vec<Job>>,
    status: u16,
    credentials: &'static str,
) -> Result<Vec<Answer>> {
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let (next, jobs, addrs) = (Arc::clone(&next), Arc::clone(jobs), Arc::clone(addrs));
            tokio::spawn(async move {
                let mut client = Client::spread(&addrs);
                let mut done = Vec::new();
                loop {
                    let job = next.fetch_add(1, Ordering::Relaxed);
                    let Some((path, auth, body)) = jobs.get(job) else {
                        return Ok::<_, anyhow::Error>(done);
                    };
                    let started = Instant::now();
                    let reply = client.send(method, path, &[(credentials, auth)], body.clone()).await?;
                    ensure!(
                        reply.status == status,
                        "{method} {path}: {} {}",
                        reply.status,
                        String::from_utf8_lossy(&reply.body)
                    );
                    // A copy: the reply's bytes share the connection's read
                    // buffer, which keeping them would keep from being reused.
                    let took = started.elapsed();
                    done.push((job, Answer { took, body: reply.body.to_vec() }));
                }
            })
        })
        .collect();
    let mut results: Vec<Option<Answer>> = (0..jobs.len()).map(|_| None).collect();
    for w in workers {
        for (job, answer) in w.await?? {
            results[job] = Some(answer);
        }
    }
    Ok(results.into_iter().map(|a| a.expect("every job answered")).collect())
}

pub(crate) fn parse(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or(Value::Null)
}

/// The audit at the end of a run (`client::settle_and_reconcile` of today).
pub(crate) async fn books(addr: SocketAddr) -> Result<Books> {
    let day = hongbao::Timestamp(now()).day();
    let books = client::settle_and_reconcile(&mut Client::new(addr), ADMIN, day).await?;
    progress(format!(
        "  books balance: {} packets, {} fen claimed, {} refunded, {} credited, no mismatch",
        books.report.packets, books.report.claimed_fen, books.report.refunded_fen, books.report.credited_fen
    ));
    Ok(books)
}

/// Round trip of one request at a time (no queueing): /healthz, grab, open,
/// each the mean over `n` requests on one connection.
async fn service_times(addr: SocketAddr, n: usize) -> Result<Vec<(&'static str, Duration)>> {
    let mut client = Client::new(addr);
    let ids = {
        let mut ids = Vec::new();
        for _ in 0..n.div_ceil(100) {
            ids.push(paid_packet(&mut client, 100 * 100, 100).await?.id);
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

pub fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// A figure only the in-process host has: "n/a" on `spin up`.
pub fn figure(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "n/a".into(), |v| format!("{v:.decimals$}"))
}

pub fn micros(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64() * 1e6)
}

pub async fn run(options: &Options) -> Result<Results> {
    let manifest = std::fs::canonicalize(&options.manifest)?;
    let state = std::env::temp_dir().join(format!("hongbao-bench-{}", std::process::id()));
    let (packets, client_counts, shares): (usize, Vec<usize>, Vec<u32>) =
        if options.quick { (500, vec![64, 256], vec![100]) } else { (10_000, vec![64, 256, 1024], vec![100, 1000]) };
    let packets = options.packets.unwrap_or(packets);
    let redis_available = RedisServer::available();
    if !redis_available && options.stores.iter().any(|s| matches!(s, Store::Redis | Store::Redis2Hosts)) {
        progress("redis, redis-2-hosts: skipped (no redis-server binary: apt-get install redis-server)");
    }
    let host_stores: Vec<Store> = [Store::Memory, Store::Sqlite, Store::Redis, Store::Redis2Hosts]
        .into_iter()
        .filter(|s| options.stores.contains(s))
        .filter(|s| redis_available || !matches!(s, Store::Redis | Store::Redis2Hosts))
        .collect();
    ensure!(
        !host_stores.is_empty(),
        "--stores names no host store (memory, sqlite, redis, redis-2-hosts): the Spin rows are ratios to one"
    );
    ensure!(!options.strategies.is_empty(), "--strategies names none");

    // Per request: instantiation cost and sizes (from the first app loaded).
    let first = start(&manifest, Store::Memory, options.strategies[0], &state, options).await?.0.remove(0);
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
    let mut packets_checked = 0;
    for store in host_stores {
        for &strategy in &options.strategies {
            progress(format!("{} store, {} strategy", name(store), name(strategy)));
            let (hosts, redis) = start(&manifest, store, strategy, &state, options).await?;
            let addrs: Vec<SocketAddr> = hosts.iter().map(Running::addr).collect();
            let (running, addr) = (&hosts[0], addrs[0]);
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
            let target = Server { addrs: &addrs, hosts: &hosts, redis: redis.as_ref().map(RedisServer::pid) };
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
            packets_checked += many.packets + hots.len();
            let (cpu_started, redis_started, calls_before) =
                (target.cpu_time(), target.redis_cpu(), target.store_stats());
            let books = books(addr).await?;
            let credits: u64 = books.settled.iter().map(|s| s.credited).sum();
            let settle = Settle {
                credits,
                cpu_per_credit: cpu_started.map(|at| (cpu_time() - at) / credits.max(1) as u32),
                calls_per_credit: per(calls_before, target.store_stats(), |s| s.calls, credits.max(1) as f64),
                redis_cpu_per_credit: redis_started
                    .zip(target.redis_cpu())
                    .map(|(at, now)| (now - at) / credits.max(1) as u32),
            };
            for host in hosts {
                host.shutdown().await?;
            }
            runs.push(Run {
                store,
                strategy,
                ceiling: ceilings,
                ceiling_around_many: (before, after),
                cpu_per_healthz,
                many,
                hot: hots,
                books,
                settle,
            });
        }
    }
    let _ = std::fs::remove_dir_all(&state);
    let (spin_runs, spin_skipped) = spin_runs(options, &manifest, &runs).await?;
    packets_checked += spin_runs.iter().map(|r| r.many.packets + r.hot.len()).sum::<usize>();
    let large = if options.stores.contains(&Store::Sqlite) && options.large_store_keys > 0 {
        let packets = if options.quick { 200 } else { 2_000 };
        crate::large::run(&manifest, options.large_store_keys, packets).await?
    } else {
        None
    };
    packets_checked += large.as_ref().map_or(0, |l| l.many.packets);
    Ok(Results {
        client_counts,
        runs,
        spin_runs,
        spin_skipped,
        instantiate,
        service_times,
        sizes,
        packets_checked,
        large,
    })
}

/// One `spin up` run: the same phases as the host's, smaller (Spin's SQLite
/// store is a few hundred opens per second), with the open strategy of the
/// host run it is compared with (`reference`).
pub struct SpinRun {
    pub store: Store,
    pub strategy: Strategy,
    pub healthz: f64,
    pub many: Many,
    pub hot: Vec<Hot>,
    pub books: Books,
}

/// The host run the Spin rows are ratios to: the durable store with the
/// `auto` strategy (the defaults), else the closest there is.
pub fn reference(runs: &[Run]) -> &Run {
    let score = |r: &Run| (r.store == Store::Sqlite, r.strategy == Strategy::Auto);
    runs.iter().max_by_key(|r| score(r)).expect("at least one host run")
}

/// The `spin-sqlite` and `spin-redis` runs asked for, on the real Spin CLI,
/// or why there are none.
async fn spin_runs(options: &Options, manifest: &Path, runs: &[Run]) -> Result<(Vec<SpinRun>, Option<String>)> {
    let wanted: Vec<Store> =
        [Store::SpinSqlite, Store::SpinRedis].into_iter().filter(|s| options.stores.contains(s)).collect();
    if wanted.is_empty() {
        return Ok((Vec::new(), None));
    }
    let Some(bin) = &options.spin else {
        progress(format!("spin up: skipped ({NO_SPIN})"));
        return Ok((Vec::new(), Some(NO_SPIN.to_owned())));
    };
    // Spin's Redis store lies on every swap, and the strategies pay for
    // that differently: it runs each one, to say which a deployment should use.
    let reference_strategy = reference(runs).strategy;
    let packets = if options.quick { 50 } else { 300 };
    let mut spin_runs = Vec::new();
    for store in wanted {
        let strategies = match store {
            Store::SpinRedis => options.strategies.clone(),
            _ => vec![reference_strategy],
        };
        for strategy in strategies {
            spin_runs.push(spin_run(bin, manifest, store, strategy, packets, options.quick).await?);
        }
    }
    Ok((spin_runs, None))
}

/// One `spin up` run on `store` with `strategy`.
async fn spin_run(
    bin: &Path,
    manifest: &Path,
    store: Store,
    strategy: Strategy,
    packets: usize,
    quick: bool,
) -> Result<SpinRun> {
    progress(format!("spin up ({}), {} store, {} strategy", bin.display(), name(store), name(strategy)));
    let redis = match store {
        Store::SpinRedis => Some(tokio::task::block_in_place(RedisServer::start)?),
        _ => None,
    };
    let mut env = variables(strategy);
    if redis.is_some() {
        // Spin 4.0.2's Redis get-many fails (see ../shared/bin/README.md).
        env.push(("SPIN_VARIABLE_KV_BATCH_READS".into(), "false".into()));
    }
    let config = SpinConfig { bin, manifest, state_dir: None, env: &env, redis: redis.as_ref().map(|r| r.addr) };
    let spin = tokio::task::block_in_place(|| SpinUp::start(&config))?;
    let target = Server { addrs: std::slice::from_ref(&spin.addr), hosts: &[], redis: None };
    let ceiling_time = Duration::from_secs(if quick { 1 } else { 3 });
    let healthz = ceiling(spin.addr, 64, ceiling_time).await?.per_s;
    progress(format!("  /healthz at 64 clients: {healthz:.0} req/s"));
    let many = many(target, packets, 64).await?;
    progress(format!("  many packets: {:.0} opens/s", many.opens_per_s));
    let mut hot_runs = Vec::new();
    for clients in [64, 256] {
        hot_runs.push(hot(target, 100, clients).await?);
    }
    let books = books(spin.addr).await?;
    Ok(SpinRun { store, strategy, healthz, many, hot: hot_runs, books })
}

/// The hot-packet run Spin also has: 100 shares, at `clients` clients.
pub fn hot_at(hot: &[Hot], clients: usize) -> Option<&Hot> {
    hot.iter().find(|h| h.shares == 100 && h.clients == clients)
}
