//! `--soak DURATION` (issue 28): steady mixed load on one `hongbao-host up`
//! process of its own (so its resident set is the host's alone) for a long
//! time, sampled every minute: opens/s, open latency, resident set, store
//! size on disk and the sweeps' durations. The question is whether the host
//! keeps its pace and footprint as its history grows, with a fixed amount of
//! live work: packets live `TTL_SECONDS`, so the live set stops growing after
//! the first minute while the day's history grows all along.
//!
//! Each round wraps and pays `ROUND_PACKETS` packets of `SHARES` shares (one
//! sender per 10 packets), has distinct users grab and open every share, the
//! senders query their packets and every tenth claimant reads their wallet,
//! over `CLIENTS` connections. The bench plays the host's `--tick`: every
//! `TICK` it runs expire, then settle, and times each. At the end the books
//! are settled and reconciled for every day the soak touched.

use crate::bench::{self, Store, Strategy, percentile, progress};
use crate::child::HostChild;
use anyhow::{Context, Result, ensure};
use hongbao_host::client::{self, Client};
use hongbao_host::external::TempDir;
use hongbao_host::kv::sqlite::SPIN_DB_FILE;
use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// `packet_ttl_seconds` of the soak: short, so packets finish during it.
pub const TTL_SECONDS: u64 = 60;
/// How often expire and settle run.
pub const TICK: Duration = Duration::from_secs(5);
pub const ROUND_PACKETS: usize = 1_500;
pub const SHARES: u32 = 10;
pub const CLIENTS: usize = 64;
/// The bound the SQLite write-ahead log must stay under: the host's own
/// (past `WAL_LIMIT_FRAMES` pages of 4 KiB the writer checkpoints and
/// rewinds it itself), and a quarter more for the commits that land while it
/// does.
pub const WAL_TARGET: u64 = hongbao_host::kv::sqlite::WAL_LIMIT_FRAMES as u64 * 4096 * 5 / 4;
/// The minute whose resident set is the flat-RSS baseline: by its end the
/// first packets have expired and been settled, so live data is at its
/// steady size.
pub const RSS_BASELINE_MINUTE: usize = 2;

/// One minute of the soak.
#[derive(Debug, Clone)]
pub struct Minute {
    /// 1-based.
    pub minute: usize,
    pub opens_per_s: f64,
    pub p50: Duration,
    pub p99: Duration,
    /// VmRSS at the last sample of the minute.
    pub rss: u64,
    /// The SQLite database file and its write-ahead log (0 on memory).
    pub db_bytes: u64,
    pub wal_bytes: u64,
    /// Expire + settle runs that ended in this minute: how many, the longest.
    pub sweeps: usize,
    pub sweep_max: Duration,
}

#[derive(Debug, Clone)]
pub struct Soak {
    pub store: Store,
    pub minutes: Vec<Minute>,
    pub packets: usize,
    pub opens: usize,
    pub rss_peak: u64,
    pub wal_peak: u64,
}

/// What one round measured: its opens' latencies and how long its open phase
/// took, and the host's memory and files at the round's end.
struct Sample {
    at: Instant,
    opens: Vec<Duration>,
    open_wall: Duration,
    rss: u64,
    db_bytes: u64,
    wal_bytes: u64,
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Soaks `store` (memory or sqlite) for `duration`. `None` (with a line
/// saying so) without a `hongbao-host` binary beside the bench.
pub async fn run(manifest: &Path, store: Store, duration: Duration) -> Result<Option<Soak>> {
    let Some(binary) = HostChild::binary()? else {
        progress("soak: skipped (no hongbao-host beside the bench: build it with the bench)");
        return Ok(None);
    };
    let state = TempDir::new("bench-soak")?;
    let mut args: Vec<OsString> = Vec::new();
    match store {
        Store::Memory => args.push("--memory".into()),
        Store::Sqlite => args.extend(["--state-dir".into(), state.0.clone().into_os_string()]),
        other => anyhow::bail!("--soak runs on memory and sqlite, not {}", bench::name(other)),
    }
    let mut envs = bench::variables(Strategy::Auto);
    envs.push(("SPIN_VARIABLE_PACKET_TTL_SECONDS".into(), TTL_SECONDS.to_string()));
    let host = tokio::task::block_in_place(|| HostChild::start(&binary, manifest, &args, &envs))?;
    let addr = host.addr;
    let (db, wal) = (state.0.join(SPIN_DB_FILE), state.0.join(format!("{SPIN_DB_FILE}-wal")));
    progress(format!(
        "soak on {} for {duration:?}: rounds of {ROUND_PACKETS} packets x {SHARES} shares",
        bench::name(store)
    ));

    let stop = Arc::new(AtomicBool::new(false));
    let ticker = tokio::spawn(tick(addr, Arc::clone(&stop)));
    let started = Instant::now();
    let first_day = hongbao::Timestamp(bench::now()).day();
    let addrs: bench::Addrs = Arc::from(vec![addr]);
    let mut samples: Vec<Sample> = Vec::new();
    let mut round = 0;
    while started.elapsed() < duration {
        let (opens, open_wall) = one_round(&addrs, round).await.with_context(|| format!("soak round {round}"))?;
        let (_, rss) = host.resident()?;
        let (db_bytes, wal_bytes) = (file_len(&db), file_len(&wal));
        samples.push(Sample { at: Instant::now(), opens, open_wall, rss, db_bytes, wal_bytes });
        round += 1;
        let minute = started.elapsed().as_secs() / 60;
        if samples.len() == 1 || minute != (samples[samples.len() - 2].at - started).as_secs() / 60 {
            progress(format!(
                "  {:>4.0} s: round {round}, RSS {} MiB, db {} MiB, WAL {} MiB",
                started.elapsed().as_secs_f64(),
                rss >> 20,
                db_bytes >> 20,
                wal_bytes >> 20
            ));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let sweeps = ticker.await??;
    let (rss_peak, _) = host.resident()?;

    // The books: every claim and refund credited once, every packet balanced.
    let last_day = hongbao::Timestamp(bench::now()).day();
    let mut client = Client::new(addr);
    let mut day = first_day;
    loop {
        let books = client::settle_and_reconcile(&mut client, bench::ADMIN, day).await?;
        progress(format!("  books of {day} balance: {} packets, no mismatch", books.report.packets));
        if day == last_day {
            break;
        }
        day = hongbao::Day::from_days_since_epoch(day.days_since_epoch() + 1);
    }

    // A minute's figures are those of the rounds that ended in it: opens/s
    // over their open phases (as the rounds were measured), their
    // opens' latencies, the last one's memory and files.
    let minute_of = |at: Instant| (at - started).as_secs() as usize / 60 + 1;
    let minutes = (1..=(duration.as_secs() / 60) as usize)
        .map(|minute| {
            let rounds: Vec<&Sample> = samples.iter().filter(|s| minute_of(s.at) == minute).collect();
            let mut took: Vec<Duration> = rounds.iter().flat_map(|s| s.opens.iter().copied()).collect();
            took.sort_unstable();
            let open_wall: Duration = rounds.iter().map(|s| s.open_wall).sum();
            let sample = samples.iter().rev().find(|s| minute_of(s.at) <= minute);
            let swept: Vec<Duration> =
                sweeps.iter().filter(|(at, _)| minute_of(*at) == minute).map(|(_, t)| *t).collect();
            Minute {
                minute,
                opens_per_s: took.len() as f64 / open_wall.as_secs_f64().max(f64::MIN_POSITIVE),
                p50: percentile(&took, 0.5),
                p99: percentile(&took, 0.99),
                rss: sample.map_or(0, |s| s.rss),
                db_bytes: sample.map_or(0, |s| s.db_bytes),
                wal_bytes: sample.map_or(0, |s| s.wal_bytes),
                sweeps: swept.len(),
                sweep_max: swept.iter().copied().max().unwrap_or_default(),
            }
        })
        .collect();
    let wal_peak = samples.iter().map(|s| s.wal_bytes).max().unwrap_or(0);
    let opens = samples.iter().map(|s| s.opens.len()).sum();
    Ok(Some(Soak { store, minutes, packets: round * ROUND_PACKETS, opens, rss_peak, wal_peak }))
}

/// One round of the mixed load; returns its opens' latencies and how long its
/// open phase took.
async fn one_round(addrs: &bench::Addrs, round: usize) -> Result<(Vec<Duration>, Duration)> {
    let senders: Vec<String> = (0..ROUND_PACKETS.div_ceil(10)).map(|s| format!("r{round}s{s}")).collect();
    let wraps = bench::jobs(ROUND_PACKETS, |i| {
        let body = serde_json::json!({"request_id": format!("soak-{round}-{i}"), "kind": "lucky", "total_fen": 1_000, "count": SHARES});
        ("/v1/packets".to_owned(), bench::bearer(&senders[i / 10]), body.to_string())
    });
    let wrapped = bench::run_jobs(addrs, CLIENTS, "POST", &wraps, 201).await?;
    let ids: Vec<String> = wrapped
        .iter()
        .map(|a| bench::parse(&a.body)["id"].as_str().map(str::to_owned).context("a wrap's id"))
        .collect::<Result<_>>()?;
    let pays: Arc<Vec<bench::Job>> = Arc::new(
        ids.iter()
            .map(|id| {
                let (path, signature, body) = client::payment_callback(bench::PAYMENT, id, 1_000);
                (path, signature, bytes::Bytes::from(body))
            })
            .collect(),
    );
    bench::run_jobs_with(addrs, CLIENTS, "POST", &pays, 200, "x-payment-signature").await?;
    let shares = ROUND_PACKETS * SHARES as usize;
    let user = |job: usize| format!("r{round}u{job}");
    let grabs = bench::jobs(shares, |job| {
        (format!("/v1/packets/{}/grab", ids[job % ids.len()]), bench::bearer(&user(job)), String::new())
    });
    let grabbed = bench::run_jobs(addrs, CLIENTS, "POST", &grabs, 200).await?;
    let opens = bench::jobs(shares, |job| {
        let ticket = bench::parse(&grabbed[job].body)["ticket"].as_str().unwrap_or_default().to_owned();
        let body = serde_json::json!({ "ticket": ticket }).to_string();
        (format!("/v1/packets/{}/open", ids[job % ids.len()]), bench::bearer(&user(job)), body)
    });
    let open_started = Instant::now();
    let opened = bench::run_jobs(addrs, CLIENTS, "POST", &opens, 200).await?;
    let open_wall = open_started.elapsed();
    for answer in &opened {
        ensure!(
            bench::parse(&answer.body)["claim"]["amount_fen"].as_u64().is_some_and(|f| f >= 1),
            "an open without a claim"
        );
    }
    let reads = bench::jobs(ROUND_PACKETS + shares / 10, |i| match i.checked_sub(ROUND_PACKETS) {
        None => (format!("/v1/packets/{}", ids[i]), bench::bearer(&senders[i / 10]), String::new()),
        Some(k) => ("/v1/users/me/wallet".to_owned(), bench::bearer(&user(k * 10)), String::new()),
    });
    bench::run_jobs(addrs, CLIENTS, "GET", &reads, 200).await?;
    Ok((opened.iter().map(|a| a.took).collect(), open_wall))
}

/// The host's `--tick`, timed: expire then settle every `TICK` until `stop`;
/// returns when each pair ended and how long it took.
async fn tick(addr: std::net::SocketAddr, stop: Arc<AtomicBool>) -> Result<Vec<(Instant, Duration)>> {
    let mut client = Client::new(addr);
    let auth = format!("Bearer {}", bench::ADMIN);
    let mut sweeps = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(TICK).await;
        let started = Instant::now();
        for path in ["/v1/admin/expire", "/v1/admin/settle"] {
            let reply = client.post(path, &[("authorization", &auth)], "").await?;
            ensure!(reply.status == 200, "{path}: {} {}", reply.status, String::from_utf8_lossy(&reply.body));
        }
        sweeps.push((Instant::now(), started.elapsed()));
    }
    Ok(sweeps)
}
