//! Acceptance programs for "nothing lost, whatever happens": the release binary runs out of process
//! against meshsim (started in-process, as the e2e tests do), and the programs print what they found.
//!
//! - `matrix`: each step 1-6 x each meshsim fault kind, plus an API brownout (every request 500 for 20 s)
//!   and a lost Lease (another identity overwrites it). The disturbance starts when the run enters the
//!   step (its state annotation on the Namespace or its journal) and is lifted when it leaves it. Every
//!   cell must end Migrated, RolledBack (labels and Istio objects equal to the stored backup and to the
//!   state before), or RollbackFailed with a message; a run that lost its Lease is rerun, as the CronJob
//!   would.
//! - `crash`: SIGKILLs at seeded random instants over whole fleet runs and operator rollbacks of a
//!   three-namespace fleet; after each kill a rerun must converge. `--seed` replays a soak.
//! - `split-brain`: two runners started together under API latency, repeatedly; from meshsim's request
//!   log (client address per request), no write of one runner may land while the other holds the Lease.
//!
//! Run (the binary first: cargo builds none for examples):
//! `cargo build --release && cargo run --release --example bench_faults -- all`
//! or `matrix [--jobs N] [--steps 1,4] [--columns api-error,lost-lease]`, `crash [--seed S] [--kills N]`,
//! `split-brain [--rounds N] [--lease-delay-ms MS] [--lease-delay-rate R] [--slow-write-ms MS]
//! [--slow-write-rate R]`.
//! `BENCH_SHOW_WRITES=1` lists, for lost-lease cells, the writes that landed after the Lease was overwritten.

use test_support::chaos as chaos_common;

use std::collections::BTreeMap;
use std::time::Instant;

use chaos_common::*;

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn list(args: &[String], name: &str, all: &[&str]) -> Vec<String> {
    match flag(args, name) {
        Some(v) => v.split(',').map(str::to_string).collect(),
        None => all.iter().map(|s| s.to_string()).collect(),
    }
}

async fn matrix(args: &[String]) -> bool {
    let jobs: usize = flag(args, "--jobs").and_then(|j| j.parse().ok()).unwrap_or(2);
    let steps: Vec<String> = list(args, "--steps", &["1", "2", "3", "4", "5", "6"])
        .iter()
        .map(|n| step_name(n.parse().expect("step number")).to_string())
        .collect();
    let mut columns: Vec<&str> = KINDS.to_vec();
    columns.extend(["api-brownout", "lost-lease"]);
    let columns = list(args, "--columns", &columns);
    let cells: Vec<(String, String)> = steps
        .iter()
        .flat_map(|s| columns.iter().map(move |c| (s.clone(), c.clone())))
        .collect();
    println!(
        "# fault matrix: {} steps x {} columns = {} cells, {jobs} at a time",
        steps.len(),
        columns.len(),
        cells.len()
    );
    let t0 = Instant::now();
    let mut results: Vec<Cell> = Vec::new();
    for chunk in cells.chunks(jobs) {
        let set: Vec<_> = chunk
            .iter()
            .map(|(s, c)| {
                let (s, c) = (s.clone(), c.clone());
                tokio::spawn(async move { run_cell(&s, &c).await })
            })
            .collect();
        for h in set {
            let c = h.await.expect("cell task");
            println!(
                "{:<24} {:<29} injected={:<5} first run: exit {:>2}, {} | reruns {} -> {} ({:.1} s)\n    first run said: {}",
                c.step,
                c.column,
                c.injected,
                c.first_exit,
                c.first_end.short(),
                c.reruns,
                c.end.short(),
                c.secs,
                c.note,
            );
            if let Some(n) = c.writes_after_steal {
                println!("    writes that landed after the Lease was overwritten: {n}");
            }
            for e in [&c.first_end, &c.end] {
                if let End::RollbackFailed(m) | End::Elsewhere(m) = e {
                    println!("    {}: {m}", e.short());
                }
            }
            results.push(c);
        }
    }
    // The table: one row per column, one cell per step: where the first run left the namespace (and its
    // exit code), then, when it had to be resumed, where the reruns took it.
    println!("\n| fault | {} |", steps.join(" | "));
    println!("|---|{}", "---|".repeat(steps.len()));
    for col in &columns {
        let row: Vec<String> = steps
            .iter()
            .map(|s| {
                let c = results
                    .iter()
                    .find(|c| &c.step == s && &c.column == col)
                    .expect("cell");
                let name = |e: &End| match e {
                    End::Migrated => "Migrated",
                    End::RolledBack => "RolledBack",
                    End::RollbackFailed(_) => "RollbackFailed",
                    End::Elsewhere(_) => "**ELSEWHERE**",
                };
                let rerun = if c.reruns > 0 {
                    format!(" -> {} after {} rerun(s)", name(&c.end), c.reruns)
                } else {
                    String::new()
                };
                let entered = if c.injected { "" } else { " (not entered)" };
                let after = c
                    .writes_after_steal
                    .map(|n| format!(", {n} writes after the steal"))
                    .unwrap_or_default();
                format!(
                    "{} (exit {}{after}){rerun}{entered}",
                    name(&c.first_end),
                    c.first_exit
                )
            })
            .collect();
        println!("| {col} | {} |", row.join(" | "));
    }
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for c in &results {
        *counts
            .entry(match &c.end {
                End::Elsewhere(_) => "ELSEWHERE".into(),
                e => e.short(),
            })
            .or_default() += 1;
    }
    let bad = results
        .iter()
        .filter(|c| !c.end.accepted() || !c.first_end.accepted())
        .count();
    println!(
        "\nTOTAL cells={} {counts:?} elsewhere={bad} wall={:.0} s",
        results.len(),
        t0.elapsed().as_secs_f64()
    );
    bad == 0
}

async fn crash(args: &[String]) -> bool {
    let seed: u64 = flag(args, "--seed")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(1)
        });
    let kills: usize = flag(args, "--kills").and_then(|s| s.parse().ok()).unwrap_or(200);
    println!("# crash soak: seed {seed} (replay: crash --seed {seed} --kills {kills}), target {kills} kills");
    let summary = soak(seed, kills, true).await;
    println!(
        "\nTOTAL seed={seed} kills={} converged={} ({:.1} %) failures={} wall={:.0} s\nkill instants by journal phase: {:?}",
        summary.kills,
        summary.converged,
        100.0 * summary.converged as f64 / summary.kills.max(1) as f64,
        summary.failures.len(),
        summary.secs,
        summary.phases
    );
    for f in &summary.failures {
        println!("FAILURE {f}");
    }
    summary.failures.is_empty() && summary.kills >= kills
}

async fn split_brain(args: &[String]) -> bool {
    let rounds: usize = flag(args, "--rounds").and_then(|s| s.parse().ok()).unwrap_or(20);
    let num = |name: &str, default: f64| -> f64 {
        flag(args, name).and_then(|s| s.parse().ok()).unwrap_or(default)
    };
    let o = SplitOpts {
        lease_delay_ms: num("--lease-delay-ms", 1500.0) as u64,
        lease_delay_rate: num("--lease-delay-rate", 0.3),
        slow_write_ms: num("--slow-write-ms", 0.0) as u64,
        slow_write_rate: num("--slow-write-rate", 0.2),
    };
    println!(
        "# split brain: {rounds} rounds, two runners started together, 20 ms API latency, {:.0} % of Lease requests +{} ms, {}lease 3 s",
        o.lease_delay_rate * 100.0,
        o.lease_delay_ms,
        if o.slow_write_ms > 0 {
            format!(
                "{:.0} % of patches in the namespace +{} ms (past the 5 s request timeout), ",
                o.slow_write_rate * 100.0,
                o.slow_write_ms
            )
        } else {
            String::new()
        }
    );
    let (mut total, mut handovers, mut bad_ends) = (0, 0, 0);
    for i in 0..rounds {
        let r = split_brain_round(o).await;
        total += r.violations.len();
        handovers += r.handovers;
        if !r.end.accepted() {
            bad_ends += 1;
        }
        println!(
            "round {i:>2}: runner A exits {:?}, runner B exits {:?}, Lease handovers {}, violations {}, end {}",
            r.exits[0],
            r.exits[1],
            r.handovers,
            r.violations.len(),
            r.end.short()
        );
        for (runner, code, note) in &r.notes {
            println!("    runner {runner} exit {code}: {note}");
        }
        for v in &r.violations {
            println!("    runner {} wrote without the Lease: {}", v.runner, v.request);
        }
    }
    println!("\nTOTAL rounds={rounds} violations={total} lease_handovers={handovers} bad_ends={bad_ends}");
    total == 0 && bad_ends == 0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bin = test_support::bin();
    match std::fs::metadata(&bin).and_then(|m| m.modified()) {
        Ok(t) => println!(
            "binary: {} (built {:.0} s ago)",
            bin.display(),
            t.elapsed().unwrap_or_default().as_secs_f64()
        ),
        Err(e) => {
            eprintln!("{}: {e}; run `cargo build --release` first", bin.display());
            std::process::exit(2);
        }
    }
    let what = args.first().map(String::as_str).unwrap_or("all");
    let ok = match what {
        "matrix" => matrix(&args).await,
        "crash" => crash(&args).await,
        "split-brain" => split_brain(&args).await,
        "all" => {
            let m = matrix(&args).await;
            let c = crash(&args).await;
            let s = split_brain(&args).await;
            m && c && s
        }
        other => {
            eprintln!("unknown program {other:?}: matrix, crash, split-brain or all");
            std::process::exit(2);
        }
    };
    std::process::exit(if ok { 0 } else { 1 });
}
