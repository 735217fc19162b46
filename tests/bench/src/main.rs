//! `hongbao-bench`: how fast packets are opened, measured honestly (see
//! BENCHMARKS.md), and whether the targets are met.

mod bench;
mod chart;
mod child;
mod large;
mod report;
mod soak;

use anyhow::{Result, bail};
use bench::{Store, Strategy};
use clap::Parser;
use hongbao_host::{build, manifest::Manifest};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "hongbao-bench", about = "Measures opens per second against the /healthz ceiling (see BENCHMARKS.md)")]
struct Cli {
    /// The application manifest.
    #[arg(short = 'f', long = "from", default_value = "spin.toml")]
    manifest: PathBuf,
    /// Smaller runs, for checking the bench itself.
    #[arg(long)]
    quick: bool,
    /// Open strategies to compare (the `open_strategy` variable).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "cas,cursor,auto")]
    strategies: Vec<Strategy>,
    /// Store backends to measure: memory, sqlite and redis on this host, redis-2-hosts on two
    /// hosts sharing one Redis (both with a redis-server of the bench's own), spin-sqlite and
    /// spin-redis on `spin up` (skipped, with a line saying so, without a Spin binary).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "memory,sqlite,redis,redis-2-hosts,spin-sqlite,spin-redis"
    )]
    stores: Vec<Store>,
    /// Write the chart (PNG) here (with --report: next to the report, FILE.png).
    #[arg(long)]
    chart: Option<PathBuf>,
    /// Write this run's section of a Markdown report (between `<!-- bench:begin -->`
    /// and `<!-- bench:end -->`, the rest of the file kept), e.g. BENCHMARKS.md.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Write the capacity model from this run's Redis figures into FILE's generated section
    /// (between the same markers as --report), e.g. DEPLOY.md.
    #[arg(long, value_name = "FILE")]
    capacity: Option<PathBuf>,
    /// Exit non-zero when a target is missed (a broken money invariant always fails the run).
    #[arg(long)]
    check: bool,
    /// Build the components first.
    #[arg(long)]
    build: bool,
    #[arg(long, default_value_t = 1)]
    max_instance_concurrent_reuse_count: usize,
    /// Requests running in components at once (`hongbao-host up`'s flag of the same name).
    #[arg(long, default_value_t = hongbao_host::DEFAULT_MAX_RUNNING_REQUESTS)]
    max_running_requests: usize,
    /// The Spin CLI for the spin-* stores (default: SPIN_BIN, else spin on PATH).
    #[arg(long)]
    spin: Option<PathBuf>,
    /// Packets of the many-packets phase (default 10,000; 500 with --quick): more
    /// gives a profiled open phase enough samples.
    #[arg(long)]
    packets: Option<usize>,
    /// Keys of the large durable store served by a `hongbao-host up` of its own, whose resident
    /// set is measured (with the sqlite store; default 5,000,000, 200,000 with --quick; 0: skip).
    #[arg(long)]
    large_store_keys: Option<u64>,
    /// Instead of the bench: soak each of the memory and sqlite stores (of --stores) for this long
    /// (`90s`, `10m`, `2h`), one `hongbao-host up` process each, sampled every minute; with
    /// --report its section goes between `<!-- soak:begin -->` and `<!-- soak:end -->`, the chart
    /// beside the report as FILE-soak.png.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    soak: Option<Duration>,
}

/// `90s`, `10m`, `2h` or plain seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = number.parse().map_err(|_| format!("{text}: want a number of s, m or h, e.g. 10m"))?;
    let seconds = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("{text}: the unit is s, m or h")),
    };
    Ok(Duration::from_secs(seconds))
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<()> {
    let started = Instant::now();
    let cli = Cli::parse();
    let repo = std::fs::canonicalize(&cli.manifest)?.parent().map(PathBuf::from).unwrap_or_default();
    // Before the run, which writes the chart into the checkout.
    let mut provenance = report::Provenance::start(&repo);
    if cli.build {
        build::build_all(&Manifest::load(&cli.manifest)?, false)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    if let Some(duration) = cli.soak {
        eprintln!("bench: machine: {}", report::machine());
        return soak(&runtime, &cli, duration, provenance, started);
    }
    let options = bench::Options {
        manifest: cli.manifest.clone(),
        quick: cli.quick,
        strategies: cli.strategies,
        max_instance_concurrent_reuse_count: cli.max_instance_concurrent_reuse_count,
        max_running_requests: cli.max_running_requests,
        stores: cli.stores,
        packets: cli.packets,
        large_store_keys: cli.large_store_keys.unwrap_or(if cli.quick { 200_000 } else { large::LARGE_KEYS }),
        spin: cli.spin.or_else(|| hongbao_host::external::spin_binary(&std::env::current_dir().unwrap_or_default())),
    };
    eprintln!("bench: machine: {}", report::machine());
    let results = runtime.block_on(bench::run(&options))?;

    let tables = report::tables(&results);
    let targets = report::targets(&results);
    println!("machine: {}\n", report::machine());
    println!("{tables}");
    println!("{}", report::targets_table(&targets));

    let chart = cli.chart.or_else(|| cli.report.as_ref().map(|r| r.with_extension("png")));
    if let Some(path) = &chart {
        chart::hot_packets(&results, path)?;
        eprintln!("bench: chart written to {}", path.display());
    }
    if let Some(path) = &cli.report {
        // Linked from the report: by name when beside it, else as given.
        let link = chart.as_ref().map(|c| match (c.parent(), path.parent(), c.file_name()) {
            (Some(a), Some(b), Some(file)) if a == b => file.to_string_lossy().into_owned(),
            _ => c.display().to_string(),
        });
        provenance.took = started.elapsed();
        report::write_between(
            path,
            &report::section(&provenance, &tables, &targets, link.as_deref()),
            report::BEGIN,
            report::END,
        )?;
        eprintln!("bench: report written to {}", path.display());
    }
    if let Some(path) = &cli.capacity {
        let model = report::capacity(&provenance, &results)
            .ok_or_else(|| anyhow::anyhow!("--capacity needs a redis or redis-2-hosts run (--stores)"))?;
        report::write_between(path, &model, report::BEGIN, report::END)?;
        eprintln!("bench: capacity model written to {}", path.display());
    }

    let missed: Vec<_> = targets.iter().filter(|t| !t.met).collect();
    for t in &missed {
        eprintln!("bench: target missed: {} ({}): {}", t.what, t.run, t.measured);
    }
    if cli.check && !missed.is_empty() {
        bail!("--check: {} of {} targets missed", missed.len(), targets.len());
    }
    Ok(())
}

/// `--soak`: every soak asked for, its tables, targets, report and chart.
fn soak(
    runtime: &tokio::runtime::Runtime,
    cli: &Cli,
    duration: Duration,
    mut provenance: report::Provenance,
    started: Instant,
) -> Result<()> {
    let mut soaks = Vec::new();
    for &store in cli.stores.iter().filter(|s| matches!(s, Store::Memory | Store::Sqlite)) {
        soaks.extend(runtime.block_on(soak::run(&cli.manifest, store, duration))?);
    }
    let targets = report::soak_targets(&soaks);
    println!("{}", report::soak_tables(&soaks));
    println!("{}", report::targets_table(&targets));
    let chart = cli.chart.clone().or_else(|| cli.report.as_ref().map(|r| beside(r, "-soak.png")));
    if let Some(path) = &chart {
        chart::soak(&soaks, path)?;
        eprintln!("bench: soak chart written to {}", path.display());
    }
    if let Some(path) = &cli.report {
        let link = chart.as_ref().and_then(|c| c.file_name()).map(|f| f.to_string_lossy().into_owned());
        provenance.took = started.elapsed();
        let section = report::soak_section(&provenance, &soaks, &targets, link.as_deref());
        report::write_between(path, &section, report::SOAK_BEGIN, report::SOAK_END)?;
        eprintln!("bench: soak report written to {}", path.display());
    }
    let missed = targets.iter().filter(|t| !t.met).count();
    if cli.check && missed > 0 {
        bail!("--check: {missed} of {} soak targets missed", targets.len());
    }
    Ok(())
}

/// `BENCHMARKS.md` → `BENCHMARKS{suffix}` in the same directory.
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!("{stem}{suffix}"))
}
