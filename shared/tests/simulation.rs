//! Deterministic simulation (VOPR): whole randomized histories of senders,
//! the payment system, an attacker, users and the admin, interleaved at
//! store-call granularity with injected faults and crashes, each checked
//! against the contract's invariants. A failing seed replays exactly:
//! `cargo run --profile host -p hongbao --example simulate -- --seed S --trace`.
//!
//! `SIM_SEEDS=N` changes how many seeds each test runs (default 300).

mod sim;

use hongbao::store::memory::CasSemantics;

fn seed_count() -> u64 {
    std::env::var("SIM_SEEDS").ok().and_then(|n| n.parse().ok()).unwrap_or(300)
}

/// Runs seeds `0..SIM_SEEDS` on one store semantics; on failure, panics with
/// every failing seed and the first one's shortest failing trace.
fn every_seed_keeps_every_invariant(semantics: CasSemantics) {
    let options = sim::Options { semantics: Some(semantics), ..Default::default() };
    let seeds = seed_count();
    let failures: Vec<sim::Outcome> = (0..seeds).map(|seed| sim::run(seed, options)).filter(|o| o.failed()).collect();
    let Some(first) = failures.first() else { return };
    let list: Vec<String> = failures
        .iter()
        .map(|o| format!("{} ({})", o.plan.seed, o.violation.as_ref().map_or("", |v| v.invariant)))
        .collect();
    let minimal = sim::minimize(first, options);
    panic!(
        "{} of {seeds} seeds failed: {}\n\nshortest failing history of seed {} ({} of {} steps):\n{}",
        failures.len(),
        list.join(", "),
        first.plan.seed,
        minimal.steps,
        first.steps,
        minimal.report()
    );
}

#[test]
fn strict_store_histories_keep_every_invariant() {
    every_seed_keeps_every_invariant(CasSemantics::Strict);
}

#[test]
fn spin_sqlite_store_histories_keep_every_invariant() {
    every_seed_keeps_every_invariant(CasSemantics::SpinSqlite);
}

#[test]
fn a_seed_replays_identically() {
    // Verbose: the trace lists every store call, so equal traces mean equal interleavings.
    let options = sim::Options { verbose: true, ..Default::default() };
    for seed in [3, 17, 101] {
        let first = sim::run(seed, options);
        let second = sim::run(seed, options);
        assert!(first.trace.len() > 100, "seed {seed} did little: {}", first.report());
        assert_eq!(first.trace, second.trace, "seed {seed} took two different histories");
        assert_eq!(first.violation, second.violation, "seed {seed}");
        assert_eq!(first.digest, second.digest, "seed {seed} left two different stores");
    }
}

#[test]
fn a_shorter_run_is_a_prefix_of_the_full_run() {
    // What shrinking relies on: capping the steps replays the same beginning.
    let options = sim::Options::default();
    let full = sim::run(5, options);
    let capped = sim::run(5, sim::Options { max_steps: Some(full.steps / 2), ..options });
    let head = |o: &sim::Outcome| -> Vec<String> {
        o.trace.iter().take_while(|l| !l.contains("final phase")).cloned().collect()
    };
    let capped_head = head(&capped);
    assert!(!capped_head.is_empty());
    assert_eq!(capped_head[..], head(&full)[..capped_head.len()]);
}

#[test]
fn histories_with_a_dead_set_for_a_while_keep_every_invariant() {
    // Every seed loses one SET's store for a stretch of its history: its
    // requests then fail closed, the sweeps skip it, and the final audit
    // (after it is back) finds every claim and refund credited once.
    let options = sim::Options { outage: Some(true), ..Default::default() };
    let seeds = seed_count() / 3;
    let outcomes: Vec<sim::Outcome> = (1_000..1_000 + seeds).map(|seed| sim::run(seed, options)).collect();
    let failed: Vec<String> = outcomes
        .iter()
        .filter(|o| o.failed())
        .map(|o| format!("{} ({})", o.plan.seed, o.violation.as_ref().map_or("", |v| v.invariant)))
        .collect();
    assert!(failed.is_empty(), "seeds failed: {}", failed.join(", "));
    let hit = outcomes.iter().filter(|o| o.trace.iter().any(|line| line.contains("SET DOWN"))).count();
    assert!(hit * 2 > outcomes.len(), "the outage touched only {hit} of {} histories", outcomes.len());
}
