//! Runs many simulation seeds in parallel (see `tests/sim/mod.rs`).
//!
//! ```text
//! cargo run --profile host -p hongbao --example simulate -- --seeds 10000 [--from 0] [--keep-going]
//!     [--store strict|sqlite] [--attacker on|off]
//! cargo run --profile host -p hongbao --example simulate -- --seed 42 --trace [--calls] [--store strict|sqlite]
//! ```
//!
//! `--profile host` is the release build that keeps panics catchable, so a
//! panicking operation is reported as a failing seed.
//!
//! `--seeds`: stops at the first failing seed and prints its shortest
//! failing history (exit code 1); `--keep-going` runs them all and lists the
//! failing seeds by broken invariant instead. `--seed S --trace`: replays one
//! seed and prints its whole history (`--calls`: every store call too).
//!
//! Under `--release` (which aborts on panic) a panicking operation ends the
//! run instead; the panic hook names the seeds that were running.

#[path = "../tests/sim/mod.rs"]
mod sim;

use hongbao::store::memory::CasSemantics;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

struct Args {
    seeds: u64,
    from: u64,
    seed: Option<u64>,
    trace: bool,
    calls: bool,
    keep_going: bool,
    attacker: Option<bool>,
    semantics: Option<CasSemantics>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        seeds: 1000,
        from: 0,
        seed: None,
        trace: false,
        calls: false,
        keep_going: false,
        attacker: None,
        semantics: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut number = |name: &str| -> Result<u64, String> {
            it.next().and_then(|v| v.parse().ok()).ok_or_else(|| format!("{name} needs a number"))
        };
        match arg.as_str() {
            "--seeds" => args.seeds = number("--seeds")?,
            "--from" => args.from = number("--from")?,
            "--seed" => args.seed = Some(number("--seed")?),
            "--trace" => args.trace = true,
            "--calls" => args.calls = true,
            "--keep-going" => args.keep_going = true,
            "--attacker" => {
                args.attacker = match it.next().as_deref() {
                    Some("on") => Some(true),
                    Some("off") => Some(false),
                    _ => return Err("--attacker needs on or off".into()),
                }
            }
            "--store" => {
                args.semantics = match it.next().as_deref() {
                    Some("strict") => Some(CasSemantics::Strict),
                    Some("sqlite") => Some(CasSemantics::SpinSqlite),
                    _ => return Err("--store needs strict or sqlite".into()),
                }
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!(
                "{e}\nusage: simulate --seeds N [--from S] [--keep-going] [--store strict|sqlite] [--attacker on|off] | --seed S [--trace] [--calls]"
            );
            return ExitCode::from(2);
        }
    };
    let options =
        sim::Options { semantics: args.semantics, verbose: args.calls, attacker: args.attacker, ..Default::default() };
    match args.seed {
        Some(seed) => replay(seed, options, args.trace),
        None => search(args.from, args.seeds, options, args.keep_going),
    }
}

/// One seed: its whole history (with `--trace`) or just its verdict.
fn replay(seed: u64, options: sim::Options, trace: bool) -> ExitCode {
    let outcome = sim::run(seed, options);
    if trace {
        print!("{}", outcome.report());
    } else {
        println!("{}", outcome.plan.summary());
        match &outcome.violation {
            Some(v) => println!("FAILED after {} steps: {}: {}", outcome.steps, v.invariant, v.detail),
            None => println!("passed ({} steps)", outcome.steps),
        }
    }
    if outcome.failed() { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

/// Seeds running now, for the panic hook (release builds abort on panic).
static RUNNING: Mutex<BTreeSet<u64>> = Mutex::new(BTreeSet::new());

/// Seeds `from..from+count` over every core; stops at the first failure
/// unless `keep_going`.
fn search(from: u64, count: u64, options: sim::Options, keep_going: bool) -> ExitCode {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let next = AtomicU64::new(from);
    let done = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let failure: Mutex<Option<sim::Outcome>> = Mutex::new(None);
    let failed: Mutex<BTreeMap<&'static str, Vec<u64>>> = Mutex::new(BTreeMap::new());
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        hook(info);
        eprintln!("panic while running seeds {:?}", RUNNING.lock().map(|r| r.clone()).unwrap_or_default());
    }));
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= from + count {
                        break;
                    }
                    RUNNING.lock().unwrap().insert(seed);
                    let outcome = sim::run(seed, options);
                    RUNNING.lock().unwrap().remove(&seed);
                    if let Some(v) = &outcome.violation {
                        failed.lock().unwrap().entry(v.invariant).or_default().push(seed);
                    }
                    if outcome.failed() && !keep_going {
                        stop.store(true, Ordering::Relaxed);
                        let mut first = failure.lock().unwrap();
                        // Keep the lowest failing seed when two fail at once.
                        if first.as_ref().is_none_or(|f| f.plan.seed > seed) {
                            *first = Some(outcome);
                        }
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        // Progress, on this thread, until the workers are done.
        while done.load(Ordering::Relaxed) < count && !stop.load(Ordering::Relaxed) {
            progress(done.load(Ordering::Relaxed), count, started);
            std::thread::sleep(Duration::from_millis(250));
        }
    });
    let finished = done.load(Ordering::Relaxed);
    progress(finished, count, started);
    eprintln!();
    if keep_going {
        return tally(finished, &failed.into_inner().unwrap());
    }
    match failure.into_inner().unwrap() {
        None => {
            println!(
                "{finished} seeds passed, 0 failed ({from}..{}) in {:.1}s",
                from + finished,
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Some(outcome) => {
            let v = outcome.violation.as_ref().expect("failed");
            println!("seed {} FAILED: {}: {}", outcome.plan.seed, v.invariant, v.detail);
            eprintln!("shrinking...");
            let minimal = sim::minimize(&outcome, options);
            println!(
                "\nshortest failing history ({} of {} steps); replay with --seed {} --trace:\n{}",
                minimal.steps,
                outcome.steps,
                outcome.plan.seed,
                minimal.report()
            );
            ExitCode::FAILURE
        }
    }
}

/// `--keep-going`: the failing seeds, by broken invariant.
fn tally(finished: u64, failed: &BTreeMap<&'static str, Vec<u64>>) -> ExitCode {
    let failures: usize = failed.values().map(Vec::len).sum();
    println!("{} seeds passed, {failures} failed", finished - failures as u64);
    for (invariant, seeds) in failed {
        let mut seeds = seeds.clone();
        seeds.sort_unstable();
        println!("  {invariant}: {} seeds: {seeds:?}", seeds.len());
    }
    if failures == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn progress(done: u64, count: u64, started: Instant) {
    let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-9);
    eprint!("\r{done} / {count} seeds, {rate:.1} seeds/s   ");
    let _ = std::io::stderr().flush();
}
