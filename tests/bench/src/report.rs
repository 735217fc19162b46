//! What a run prints and writes: its tables, its targets against what it
//! measured, and the generated section of BENCHMARKS.md (`--report`).

use crate::bench::{Results, Run, Store, Strategy, figure, hot_at, micros, ms, name, now, reference};
use crate::large::RSS_TARGET;
use crate::soak::{CLIENTS, ROUND_PACKETS, RSS_BASELINE_MINUTE, SHARES, Soak, TICK, TTL_SECONDS, WAL_TARGET};
use anyhow::{Context as _, Result, bail};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

/// The section of the report file this run owns; the rest is hand-written.
pub const BEGIN: &str = "<!-- bench:begin -->";
pub const END: &str = "<!-- bench:end -->";
/// The section a soak run (`--soak`) owns in the same file.
pub const SOAK_BEGIN: &str = "<!-- soak:begin -->";
pub const SOAK_END: &str = "<!-- soak:end -->";

/// The targets: many packets' opens/s over the `/healthz` ceiling around
/// them, and a hot packet's p99 and CAS attempts per open at 256 clients.
const RATIO_TARGET: f64 = 0.5;
const HOT_CLIENTS: usize = 256;
const P99_TARGET: Duration = Duration::from_millis(25);
const CAS_TARGET: f64 = 1.5;

/// One target on one run, with what this run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub what: String,
    pub run: String,
    pub measured: String,
    pub met: bool,
}

/// The runs the targets are checked on: those of the default strategy
/// (`auto`, what a deployment runs), else every host run measured. The
/// other strategies are there to compare.
fn checked(runs: &[Run]) -> Vec<&Run> {
    let default: Vec<&Run> = runs.iter().filter(|r| r.strategy == Strategy::Auto).collect();
    if default.is_empty() { runs.iter().collect() } else { default }
}

pub fn targets(results: &Results) -> Vec<Target> {
    let mut targets = Vec::new();
    for run in checked(&results.runs) {
        let label = format!("{} / {}", name(run.store), name(run.strategy));
        let ratio = run.many_ratio();
        targets.push(Target {
            what: format!("many packets: opens/s ≥ {:.0}% of the /healthz ceiling", RATIO_TARGET * 100.0),
            run: label.clone(),
            measured: format!("{:.1}%", ratio * 100.0),
            met: ratio >= RATIO_TARGET,
        });
        for h in run.hot.iter().filter(|h| h.clients == HOT_CLIENTS) {
            let run = format!("{label}, {} shares", h.shares);
            targets.push(Target {
                what: format!("hot packet, {HOT_CLIENTS} clients: open p99 ≤ {} ms", P99_TARGET.as_millis()),
                run: run.clone(),
                measured: format!("{:.2} ms", h.p99.as_secs_f64() * 1000.0),
                met: h.p99 <= P99_TARGET,
            });
            targets.push(Target {
                what: format!("hot packet, {HOT_CLIENTS} clients: ≤ {CAS_TARGET} CAS attempts per open"),
                run,
                measured: figure(h.cas_per_open, 3),
                met: h.cas_per_open.is_some_and(|cas| cas <= CAS_TARGET),
            });
        }
    }
    if let Some(l) = &results.large {
        targets.push(Target {
            what: format!("a durable store of {} keys: resident set ≤ {} MiB", l.keys, RSS_TARGET >> 20),
            run: format!("sqlite / auto, `up --kv-cache-mib {}`", l.cache_mib),
            measured: format!("{} MiB peak", l.rss_peak >> 20),
            met: l.rss_peak <= RSS_TARGET,
        });
    }
    let audits = results.runs.len() + results.spin_runs.len() + usize::from(results.large.is_some());
    targets.push(Target {
        what: "money: every packet's claims as told and summing to its total; every run's books balanced".into(),
        run: "every run".into(),
        // A violation stops the run before this is written.
        measured: format!("{} packets checked, {audits} books reconciled, no violation", results.packets_checked),
        met: true,
    });
    targets
}

pub fn targets_table(targets: &[Target]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| target | run | measured | met? |");
    let _ = writeln!(out, "|---|---|---|---|");
    for t in targets {
        let _ = writeln!(out, "| {} | {} | {} | {} |", t.what, t.run, t.measured, if t.met { "yes" } else { "**no**" });
    }
    out
}

/// Every table of the run, in Markdown, as printed.
pub fn tables(results: &Results) -> String {
    let mut out = String::new();
    let runs = &results.runs;
    if runs.iter().any(|r| matches!(r.store, Store::Redis | Store::Redis2Hosts)) {
        let _ = writeln!(
            out,
            "On the redis rows every store call is one Redis command (a batch read one `MGET`, a swap one \
             `EVALSHA`), so store calls per open are Redis commands per open; redis-2-hosts is two hosts in \
             this process sharing one Redis, each request going to the next host in turn.\n"
        );
    }
    let _ = writeln!(
        out,
        "| store | strategy | /healthz ceiling (64 clients, before / after) | many packets: grabs/s | many packets: opens/s | opens/s ÷ mean ceiling (target ≥ {:.0}%) | open p50 ms | open p99 ms | store calls/open | CAS/open | CPU µs per healthz / grab / open |",
        RATIO_TARGET * 100.0
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|");
    for r in runs {
        let (before, after) = r.ceiling_around_many;
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} / {:.0} req/s | {:.0} | {:.0} ({} packets × 10) | {:.0}% | {} | {} | {} | {} | {:.0} / {} / {} |",
            name(r.store),
            name(r.strategy),
            before,
            after,
            r.many.grabs_per_s,
            r.many.opens_per_s,
            r.many.packets,
            100.0 * r.many_ratio(),
            ms(r.many.p50),
            ms(r.many.p99),
            figure(r.many.calls_per_open, 1),
            figure(r.many.cas_per_open, 2),
            r.cpu_per_healthz.as_secs_f64() * 1e6,
            figure(micros(r.many.cpu_per_grab), 0),
            figure(micros(r.many.cpu_per_open), 0)
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| store | strategy | shares | clients | opens/s | p50 ms | p99 ms (target ≤ {} at {HOT_CLIENTS}) | store calls/open | CAS/open (target ≤ {CAS_TARGET} at {HOT_CLIENTS}) | 429 share | empty after ms | grabs+opens/s | CPU µs per grab or open |",
        P99_TARGET.as_millis()
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in runs {
        for h in &r.hot {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {:.1}% | {} | {:.0} | {} |",
                name(r.store),
                name(r.strategy),
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
    let _ = writeln!(out);
    spin_table(&mut out, results);
    let _ = writeln!(out, "| store | strategy | clients | /healthz req/s | /healthz p50 ms | /healthz p99 ms |");
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for r in runs {
        for c in &r.ceiling {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.0} | {} | {} |",
                name(r.store),
                name(r.strategy),
                c.clients,
                c.per_s,
                ms(c.p50),
                ms(c.p99)
            );
        }
    }
    let _ = writeln!(out);
    large_table(&mut out, results);
    books_table(&mut out, results);
    let _ = writeln!(out, "| per request | value |");
    let _ = writeln!(out, "|---|---|");
    for (component, took) in &results.instantiate {
        let _ = writeln!(out, "| instantiate {component} | {:.0} µs |", took.as_secs_f64() * 1e6);
    }
    for r in runs {
        let _ = writeln!(
            out,
            "| opens per instance created, many packets, {} / {} | {} |",
            name(r.store),
            name(r.strategy),
            figure(r.many.instances.map(|n| (r.many.packets * 10) as f64 / n.max(1) as f64), 0)
        );
    }
    for (what, took) in &results.service_times {
        let _ = writeln!(
            out,
            "| round trip of one {what}, one client, memory store | {:.0} µs |",
            took.as_secs_f64() * 1e6
        );
    }
    for hongbao_host::ComponentSize { component, bytes } in &results.sizes {
        let _ = writeln!(out, "| size of {component} | {:.0} KiB |", *bytes as f64 / 1024.0);
    }
    out
}

/// The large durable store's row (`crate::large`).
fn large_table(out: &mut String, results: &Results) {
    let Some(l) = &results.large else { return };
    let _ = writeln!(
        out,
        "A durable store of {} keys ({} MiB of SQLite, rows shaped like old packets' records and markers), \
         served by a `hongbao-host up` process of its own with `--kv-cache-mib {}`, {} packets of ten shares \
         opened on top, then settled and reconciled; its resident set read from /proc:\n",
        l.keys,
        l.file_bytes >> 20,
        l.cache_mib,
        l.many.packets
    );
    let _ = writeln!(out, "| keys | serving after | opens/s | open p99 ms | peak RSS (VmHWM) | RSS after |");
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    let _ = writeln!(
        out,
        "| {} | {:.1} s | {:.0} | {} | {} MiB | {} MiB |\n",
        l.keys,
        l.ready_after.as_secs_f64(),
        l.many.opens_per_s,
        ms(l.many.p99),
        l.rss_peak >> 20,
        l.rss_after >> 20
    );
}

/// Spin's store as the Spin rows name it.
fn spin_store(store: Store) -> &'static str {
    match store {
        Store::SpinSqlite => "sqlite",
        Store::SpinRedis => "redis",
        Store::Memory => "memory",
        Store::Sqlite => "sqlite",
        Store::Redis => "redis",
        Store::Redis2Hosts => "redis, two hosts",
    }
}

/// Spin beside the host: each `spin up` run's figures and their ratio to
/// the host's (`reference`) in the same run.
fn spin_table(out: &mut String, results: &Results) {
    if let Some(why) = &results.spin_skipped {
        let _ = writeln!(out, "`spin up`: not measured ({why}).\n");
    }
    if results.spin_runs.is_empty() {
        return;
    }
    let host = reference(&results.runs);
    let host_healthz = (host.ceiling_around_many.0 + host.ceiling_around_many.1) / 2.0;
    let _ = writeln!(
        out,
        "| server | store | strategy | /healthz req/s, 64 clients (÷ host) | many packets: grabs/s | many packets: opens/s (÷ host) | open p50 / p99 ms | hot 100 shares, 64 clients: empty after ms (× host) | hot 100 shares, 256 clients: empty after ms (× host) | 429 share at 256 |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    let rows =
        std::iter::once(("hongbao-host", name(host.store), name(host.strategy), host_healthz, &host.many, &host.hot))
            .chain(
                results
                    .spin_runs
                    .iter()
                    .map(|r| ("spin up", spin_store(r.store).to_owned(), name(r.strategy), r.healthz, &r.many, &r.hot)),
            );
    for (server, store, strategy, healthz, many, hot) in rows {
        let hot_cell = |clients: usize| {
            let (Some(h), Some(base)) = (hot_at(hot, clients), hot_at(&host.hot, clients)) else {
                return "n/a".to_owned();
            };
            format!("{} (× {:.1})", ms(h.empty_after), h.empty_after.as_secs_f64() / base.empty_after.as_secs_f64())
        };
        let busy = hot_at(hot, 256).map_or(0.0, |h| h.busy_share);
        let _ = writeln!(
            out,
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
    let _ = writeln!(out);
}

/// Each run's audit: settle until nothing is left, then reconcile the day.
fn books_table(out: &mut String, results: &Results) {
    let _ = writeln!(
        out,
        "| server | store | strategy | packets | claimed fen | refunded fen | credited fen | settle runs | mismatches |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    let rows = results.runs.iter().map(|r| ("hongbao-host", name(r.store), name(r.strategy), &r.books)).chain(
        results.spin_runs.iter().map(|r| ("spin up", spin_store(r.store).to_owned(), name(r.strategy), &r.books)),
    );
    for (server, store, strategy, books) in rows {
        let b = &books.report;
        let _ = writeln!(
            out,
            "| {server} | {store} | {strategy} | {} | {} | {} | {} | {} | {} |",
            b.packets,
            b.claimed_fen,
            b.refunded_fen,
            b.credited_fen,
            books.settled.len(),
            b.mismatches.len()
        );
    }
    let _ = writeln!(out);
}

/// Where and how the run happened, for the report's header.
pub struct Provenance {
    pub date: String,
    pub commit: String,
    pub command: String,
    pub machine: String,
    pub took: Duration,
}

impl Provenance {
    /// At the start of a run; `repo`: a directory of the checkout measured.
    pub fn start(repo: &Path) -> Provenance {
        Provenance {
            date: utc_now(),
            commit: commit(repo),
            command: command_line(),
            machine: machine(),
            took: Duration::ZERO,
        }
    }
}

/// The generated section, markers included.
pub fn section(provenance: &Provenance, tables: &str, targets: &[Target], chart: Option<&str>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{BEGIN}");
    let _ = writeln!(out, "<!-- Written by `hongbao-bench --report`; edits here are lost at the next run. -->\n");
    provenance_table(&mut out, provenance);
    let _ = writeln!(out, "### Targets against measured\n");
    let _ = writeln!(
        out,
        "Checked on the default strategy's runs (`auto`; every run's when it was not measured); `--check` fails the run on a **no**.\n"
    );
    out.push_str(&targets_table(targets));
    let _ = writeln!(out);
    let _ = writeln!(out, "### Tables\n");
    out.push_str(tables);
    if let Some(chart) = chart {
        let _ = writeln!(
            out,
            "\n![opens/s of the largest hot packet against concurrency, every host run, and the /healthz ceiling (log scale)]({chart})"
        );
    }
    let _ = writeln!(out, "{END}");
    out
}

/// Where and how the run happened, as a table.
fn provenance_table(out: &mut String, provenance: &Provenance) {
    let _ = writeln!(out, "| run | |");
    let _ = writeln!(out, "|---|---|");
    let _ = writeln!(out, "| date | {} |", provenance.date);
    let _ = writeln!(out, "| commit | {} |", provenance.commit);
    let _ = writeln!(out, "| command | `{}` |", provenance.command);
    let _ = writeln!(out, "| machine | {} |", provenance.machine);
    let secs = provenance.took.as_secs();
    let _ = writeln!(out, "| took | {} min {} s |", secs / 60, secs % 60);
    let _ = writeln!(out);
}

/// The targets of a soak, per store: the last minute's opens/s and p99
/// within 20% of the first's, a flat resident set once the live set is full
/// (the last minute within 20% of minute `RSS_BASELINE_MINUTE`), and the
/// write-ahead log under its bound.
pub fn soak_targets(soaks: &[Soak]) -> Vec<Target> {
    let mut targets = Vec::new();
    for soak in soaks {
        let run = name(soak.store);
        let (Some(first), Some(last)) = (soak.minutes.first(), soak.minutes.last()) else { continue };
        let rate = last.opens_per_s / first.opens_per_s.max(f64::MIN_POSITIVE);
        targets.push(Target {
            what: "soak: last minute's opens/s ≥ 80% of the first's".into(),
            run: run.clone(),
            measured: format!("{:.0} → {:.0} opens/s ({:.0}%)", first.opens_per_s, last.opens_per_s, rate * 100.0),
            met: rate >= 0.8,
        });
        let p99 = last.p99.as_secs_f64() / first.p99.as_secs_f64().max(f64::MIN_POSITIVE);
        targets.push(Target {
            what: "soak: last minute's open p99 ≤ 120% of the first's".into(),
            run: run.clone(),
            measured: format!("{} → {} ({:.0}%)", ms(first.p99), ms(last.p99), p99 * 100.0),
            met: p99 <= 1.2,
        });
        if let Some(base) = soak.minutes.iter().find(|m| m.minute == RSS_BASELINE_MINUTE) {
            let grew = last.rss as f64 / (base.rss as f64).max(1.0);
            targets.push(Target {
                what: format!("soak: resident set flat, last minute ≤ 120% of minute {RSS_BASELINE_MINUTE}'s"),
                run: run.clone(),
                measured: format!("{} → {} MiB ({:.0}%)", base.rss >> 20, last.rss >> 20, grew * 100.0),
                met: grew <= 1.2,
            });
        }
        if soak.store == Store::Sqlite {
            targets.push(Target {
                what: format!("soak: SQLite write-ahead log ≤ {} MiB", WAL_TARGET >> 20),
                run,
                measured: format!("{} MiB at most", soak.wal_peak >> 20),
                met: soak.wal_peak <= WAL_TARGET,
            });
        }
    }
    targets
}

/// The per-minute tables of a soak, in Markdown.
pub fn soak_tables(soaks: &[Soak]) -> String {
    let mut out = String::new();
    for soak in soaks {
        let _ = writeln!(
            out,
            "**{}**: {} packets, {} opens, resident set at most {} MiB\n",
            name(soak.store),
            soak.packets,
            soak.opens,
            soak.rss_peak >> 20
        );
        let _ =
            writeln!(out, "| minute | opens/s | open p50 | open p99 | RSS | db file | WAL | sweeps | longest sweep |");
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
        for m in &soak.minutes {
            let _ = writeln!(
                out,
                "| {} | {:.0} | {} | {} | {} MiB | {} MiB | {} MiB | {} | {} |",
                m.minute,
                m.opens_per_s,
                ms(m.p50),
                ms(m.p99),
                m.rss >> 20,
                m.db_bytes >> 20,
                m.wal_bytes >> 20,
                m.sweeps,
                ms(m.sweep_max)
            );
        }
        let _ = writeln!(out);
    }
    out
}

/// The generated soak section, markers included.
pub fn soak_section(provenance: &Provenance, soaks: &[Soak], targets: &[Target], chart: Option<&str>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{SOAK_BEGIN}");
    let _ =
        writeln!(out, "<!-- Written by `hongbao-bench --soak --report`; edits here are lost at the next run. -->\n");
    provenance_table(&mut out, provenance);
    let _ = writeln!(
        out,
        "Rounds of {ROUND_PACKETS} packets × {SHARES} shares (wrap, pay, grab and open by distinct users, a \
         query per packet, a wallet read per tenth claimant) over {CLIENTS} connections to one `hongbao-host up` \
         process, `packet_ttl_seconds` = {TTL_SECONDS}, expire + settle every {} s.\n",
        TICK.as_secs()
    );
    out.push_str(&targets_table(targets));
    let _ = writeln!(out);
    out.push_str(&soak_tables(soaks));
    if let Some(chart) = chart {
        let _ =
            writeln!(out, "![per minute: opens/s, open p99, resident set and WAL of each store (log scale)]({chart})");
    }
    let _ = writeln!(out, "{SOAK_END}");
    out
}

/// `existing` with its section between the markers `begin` and `end`
/// replaced by `section` (appended when it has none); everything outside
/// the markers is kept as it is. A marker counts only on a line of its own
/// (prose may quote it).
pub fn splice_between(existing: &str, section: &str, begin: &str, end: &str) -> Result<String> {
    let lines = |marker: &str| -> Vec<usize> {
        let mut at = 0;
        let mut found = Vec::new();
        for line in existing.split_inclusive('\n') {
            if line.trim_end() == marker {
                found.push(at);
            }
            at += line.len();
        }
        found
    };
    match (lines(begin).as_slice(), lines(end).as_slice()) {
        (&[from], &[to]) if from < to => {
            let after = existing[to..].find('\n').map_or(existing.len(), |n| to + n + 1);
            Ok(format!("{}{section}{}", &existing[..from], &existing[after..]))
        }
        ([], []) if existing.is_empty() => Ok(section.to_owned()),
        ([], []) => Ok(format!("{}\n\n{section}", existing.trim_end())),
        _ => bail!("the report has a broken generated section: want one {begin} line, then one {end} line"),
    }
}

/// Writes `section` into the report at `path` (created if missing), between
/// the markers `begin` and `end`.
pub fn write_between(path: &Path, section: &str, begin: &str, end: &str) -> Result<()> {
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    std::fs::write(path, splice_between(&existing, section, begin, end)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// Cores, CPU model and memory.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, model)| model.trim())
        .to_owned();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
    let memory = kib.map_or_else(|| "unknown memory".into(), |kib| format!("{:.1} GiB", kib as f64 / 1024.0 / 1024.0));
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    format!("{cores} cores, {cpu}, {memory}")
}

fn utc_now() -> String {
    let now = now();
    let seconds = now.rem_euclid(86_400);
    format!("{} {:02}:{:02} UTC", hongbao::Timestamp(now).day(), seconds / 3600, seconds / 60 % 60)
}

/// The checkout's commit, `-dirty` when its tree has changes.
fn commit(repo: &Path) -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match (git(&["rev-parse", "--short", "HEAD"]), git(&["status", "--porcelain"])) {
        (Some(commit), Some(status)) if status.is_empty() => commit,
        (Some(commit), Some(_)) => format!("{commit}-dirty"),
        _ => "unknown (not a git checkout)".into(),
    }
}

/// Environment variables that change what the bench measures or where.
const ENVIRONMENT: [&str; 5] =
    ["SPIN_BIN", "HONGBAO_PERFMAP", "HONGBAO_PERF_CTL", "HONGBAO_PERF_PHASE", "HONGBAO_BENCH_TIMINGS"];

/// The command as typed (the environment that matters, then the arguments).
fn command_line() -> String {
    let env = ENVIRONMENT.iter().filter_map(|k| std::env::var(k).ok().map(|v| format!("{k}={}", quote(&v))));
    let args = std::env::args_os().map(|a| quote(&a.to_string_lossy()));
    env.chain(args).collect::<Vec<_>>().join(" ")
}

/// A word as a POSIX shell reads it back.
fn quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_./=,:@%+-".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The peak the capacity model sizes for: the seeds' 2017 New Year's Eve
/// (opens per second) and the wallet credits per second to keep up with.
pub const PEAK_OPENS_PER_S: f64 = 760_000.0;
pub const PEAK_CREDITS_PER_S: f64 = 200_000.0;
/// Cores per host, and how busy a core may run at the peak.
const CORES_PER_HOST: f64 = 16.0;
const UTILISATION: f64 = 0.6;

/// The capacity model from the Redis run (two hosts sharing Redis, the
/// default strategy, when measured): what one grab + open and one credit
/// cost in host CPU, Redis commands and Redis CPU, scaled to the peak, with
/// the arithmetic shown. `None` without a Redis run.
pub fn capacity(provenance: &Provenance, results: &Results) -> Option<String> {
    let score = |r: &&Run| (r.store == Store::Redis2Hosts, r.store == Store::Redis, r.strategy == Strategy::Auto);
    let run = results.runs.iter().filter(|r| matches!(r.store, Store::Redis | Store::Redis2Hosts)).max_by_key(score)?;
    let us = |d: Option<Duration>| micros(d).unwrap_or(f64::NAN);
    let (cpu_grab, cpu_open, cpu_credit) =
        (us(run.many.cpu_per_grab), us(run.many.cpu_per_open), us(run.settle.cpu_per_credit));
    let (cmd_grab, cmd_open, cmd_credit) = (
        run.many.calls_per_grab.unwrap_or(f64::NAN),
        run.many.calls_per_open.unwrap_or(f64::NAN),
        run.settle.calls_per_credit.unwrap_or(f64::NAN),
    );
    let (redis_grab, redis_open, redis_credit) =
        (us(run.many.redis_cpu_per_grab), us(run.many.redis_cpu_per_open), us(run.settle.redis_cpu_per_credit));
    let host_cores = (PEAK_OPENS_PER_S * (cpu_grab + cpu_open) + PEAK_CREDITS_PER_S * cpu_credit) / 1e6;
    let hosts = (host_cores / (CORES_PER_HOST * UTILISATION)).ceil();
    let commands = PEAK_OPENS_PER_S * (cmd_grab + cmd_open) + PEAK_CREDITS_PER_S * cmd_credit;
    let redis_cores = (PEAK_OPENS_PER_S * (redis_grab + redis_open) + PEAK_CREDITS_PER_S * redis_credit) / 1e6;
    // Redis executes commands on one thread: a shard is a core.
    let shards = (redis_cores / UTILISATION).ceil();
    let per_set = (shards / f64::from(hongbao::id::SETS)).ceil();
    let mut out = String::new();
    let _ = writeln!(out, "{BEGIN}");
    let _ = writeln!(out, "<!-- Written by `hongbao-bench --capacity`; edits here are lost at the next run. -->\n");
    let _ = writeln!(
        out,
        "From the bench run of {} (commit {}, `{}`, on {}): the `{} / {}` run, {} packets × 10 shares grabbed \
         then opened by distinct users over 64 connections, then settled ({} wallet credits). CPU is this \
         process's (hosts and the load generator together, so the host figures are an upper bound); Redis CPU \
         is the `redis-server` process's, from /proc.\n",
        provenance.date,
        provenance.commit,
        provenance.command,
        provenance.machine,
        name(run.store),
        name(run.strategy),
        run.many.packets,
        run.settle.credits
    );
    let _ = writeln!(out, "| quantity | per grab | per open | per credit |");
    let _ = writeln!(out, "|---|---|---|---|");
    let _ = writeln!(out, "| host CPU µs | {cpu_grab:.0} | {cpu_open:.0} | {cpu_credit:.0} |");
    let _ = writeln!(out, "| Redis commands | {cmd_grab:.1} | {cmd_open:.1} | {cmd_credit:.1} |");
    let _ = writeln!(out, "| Redis CPU µs | {redis_grab:.1} | {redis_open:.1} | {redis_credit:.1} |");
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "At the peak: {PEAK_OPENS_PER_S:.0} opens/s (each after a grab) and {PEAK_CREDITS_PER_S:.0} credits/s; \
         cores run at most {:.0}% busy; a host has {CORES_PER_HOST:.0} cores.\n",
        UTILISATION * 100.0
    );
    let _ = writeln!(out, "| what | arithmetic | result |");
    let _ = writeln!(out, "|---|---|---|");
    let _ = writeln!(
        out,
        "| host cores | ({PEAK_OPENS_PER_S:.0} × ({cpu_grab:.0} + {cpu_open:.0}) + {PEAK_CREDITS_PER_S:.0} × {cpu_credit:.0}) µs/s ÷ 10⁶ | {host_cores:.0} |"
    );
    let _ = writeln!(out, "| hosts | {host_cores:.0} ÷ ({CORES_PER_HOST:.0} × {UTILISATION}) | {hosts:.0} |");
    let _ = writeln!(
        out,
        "| Redis commands/s | {PEAK_OPENS_PER_S:.0} × ({cmd_grab:.1} + {cmd_open:.1}) + {PEAK_CREDITS_PER_S:.0} × {cmd_credit:.1} | {:.1} million |",
        commands / 1e6
    );
    let _ = writeln!(
        out,
        "| Redis cores | ({PEAK_OPENS_PER_S:.0} × ({redis_grab:.1} + {redis_open:.1}) + {PEAK_CREDITS_PER_S:.0} × {redis_credit:.1}) µs/s ÷ 10⁶ | {redis_cores:.0} |"
    );
    let _ = writeln!(
        out,
        "| Redis shards (one core each: Redis runs commands on one thread) | {redis_cores:.0} ÷ {UTILISATION} | {shards:.0} |"
    );
    let _ = writeln!(
        out,
        "| shards per SET ({} SETs; a SET's packets stay on its shards) | {shards:.0} ÷ {} | {per_set:.0} |",
        hongbao::id::SETS,
        hongbao::id::SETS
    );
    let _ = writeln!(out, "{END}");
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn splice(existing: &str, section: &str) -> Result<String> {
        splice_between(existing, section, BEGIN, END)
    }

    #[test]
    fn the_section_is_replaced_and_the_hand_written_text_kept() {
        let old = format!("# Title\n\nbefore\n\n{BEGIN}\nold figures\n{END}\nafter\n");
        let new = format!("{BEGIN}\nnew figures\n{END}\n");
        assert_eq!(splice(&old, &new).unwrap(), format!("# Title\n\nbefore\n\n{BEGIN}\nnew figures\n{END}\nafter\n"));
        // Again: the same file.
        let once = splice(&old, &new).unwrap();
        assert_eq!(splice(&once, &new).unwrap(), once);
    }

    #[test]
    fn a_report_without_a_section_gets_one_at_its_end() {
        let new = format!("{BEGIN}\nfigures\n{END}\n");
        assert_eq!(splice("", &new).unwrap(), new);
        assert_eq!(splice("# Notes\n\n", &new).unwrap(), format!("# Notes\n\n{new}"));
    }

    #[test]
    fn markers_quoted_in_prose_are_not_the_section() {
        let old = format!("Between `{BEGIN}` and `{END}`.\n\n{BEGIN}\nold\n{END}\n");
        let new = format!("{BEGIN}\nnew\n{END}\n");
        assert_eq!(splice(&old, &new).unwrap(), format!("Between `{BEGIN}` and `{END}`.\n\n{new}"));
    }

    #[test]
    fn a_broken_section_is_refused_not_guessed_at() {
        let new = format!("{BEGIN}\n{END}\n");
        assert!(splice(&format!("{BEGIN}\nno end\n"), &new).is_err());
        assert!(splice(&format!("{END}\n{BEGIN}\n"), &new).is_err());
        assert!(splice(&format!("{BEGIN}\n{END}\n{BEGIN}\n{END}\n"), &new).is_err());
    }

    #[test]
    fn the_soak_section_and_the_bench_section_keep_each_other() {
        let both = format!("{BEGIN}\nbench\n{END}\n\n{SOAK_BEGIN}\nold soak\n{SOAK_END}\n");
        let soak = format!("{SOAK_BEGIN}\nnew soak\n{SOAK_END}\n");
        let spliced = splice_between(&both, &soak, SOAK_BEGIN, SOAK_END).unwrap();
        assert_eq!(spliced, format!("{BEGIN}\nbench\n{END}\n\n{soak}"));
        assert_eq!(
            splice(&spliced, &format!("{BEGIN}\nnew bench\n{END}\n")).unwrap(),
            format!("{BEGIN}\nnew bench\n{END}\n\n{soak}")
        );
    }

    #[test]
    fn words_are_quoted_for_the_shell() {
        assert_eq!(quote("--stores=memory,sqlite"), "--stores=memory,sqlite");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
    }
}
