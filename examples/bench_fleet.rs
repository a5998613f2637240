//! Benchmark: fleet wall time against the ideal critical path, API requests per migrated namespace (by
//! verb, from meshsim's request accounting), peak memory, and the seed runbook executed with kubectl on
//! the same fleet (time and request count).
//!
//! The fleet is `meshsim::fixtures::generate_fleet(N, D, R)`: N sidecar namespaces with D Deployments of R
//! replicas, each behind a Service (no waypoint, no policy: step 1 is skipped by both the engine and the
//! scripted runbook). The runner runs in-process (`ambient-migrate run` pipeline), with no probes.
//!
//! Ideal critical path at concurrency c: ceil(N / c) x T1, where T1 is the measured wall time of the same
//! runner on a one-namespace fleet (a namespace's own steps cannot overlap; namespaces could, perfectly).
//!
//! Run: `cargo run --release --example bench_fleet [-- N D R]` (defaults 8 3 2).

use test_support::policies as policies_common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use policies_common as pc;

fn fleet_names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("fleet-{i:03}")).collect()
}

async fn start(dir: &std::path::Path, n: usize, d: usize, r: u32) -> meshsim::Running {
    let running = meshsim::start(meshsim::StartOptions {
        fixture_texts: vec![meshsim::fixtures::generate_fleet(n, d, r)],
        settings: pc::bench_settings(),
        kubeconfig_out: Some(dir.join("kubeconfig")),
        ..Default::default()
    })
    .await
    .expect("meshsim starts");
    let names = fleet_names(n);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    assert!(
        pc::wait_pods_ready(&running.sim, &refs, n * d * r as usize, 120).await,
        "fleet ready"
    );
    running
}

fn config(names: &[String], concurrency: usize) -> String {
    let list = names
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "[fleet]\nnamespaces = [{list}]\nconcurrency = {concurrency}\nmax_failed_namespaces = {}\n\n[timeouts]\nwaypoint_ready = \"30s\"\nrollout = \"60s\"\nstep = \"120s\"\nrollback = \"120s\"\napi_request = \"10s\"\n\n[reports]\nprogress_interval = \"5s\"\n",
        names.len()
    )
}

/// Requests by verb sent by a user agent prefix.
fn by_verb(sim: &meshsim::Sim, agent: &str) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in sim.accounting.log() {
        if r.user_agent.starts_with(agent) {
            *m.entry(r.verb.clone()).or_default() += 1;
        }
    }
    m
}

struct RunFigures {
    wall: Duration,
    code: i32,
    verbs: BTreeMap<String, usize>,
}

async fn run_engine(base: &std::path::Path, tag: &str, n: usize, d: usize, r: u32, c: usize) -> RunFigures {
    let dir = pc::subdir(base, tag);
    let running = start(&dir, n, d, r).await;
    let cfg = dir.join("config.toml");
    std::fs::write(&cfg, config(&fleet_names(n), c)).unwrap();
    let reports = pc::subdir(&dir, "reports");
    running.sim.accounting.reset();
    let t0 = Instant::now();
    let code = pc::run_in_process(&pc::run_args(&cfg, &dir.join("kubeconfig"), &reports, &[])).await;
    let wall = t0.elapsed();
    RunFigures {
        wall,
        code,
        verbs: by_verb(&running.sim, "ambient-migrate"),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let n = args.first().copied().unwrap_or(8);
    let d = args.get(1).copied().unwrap_or(3);
    let r = args.get(2).copied().unwrap_or(2) as u32;
    let base = tempfile::tempdir().expect("temp dir");
    println!(
        "# bench_fleet: {n} namespaces x {d} Deployments x {r} replicas (meshsim latencies: pod start 250 ms, ready 250 ms, terminate 150 ms)"
    );

    let one = run_engine(base.path(), "single", 1, d, r, 1).await;
    println!(
        "\nT1 (one namespace alone): {:.2} s (exit {})",
        one.wall.as_secs_f64(),
        one.code
    );
    println!(
        "\n| concurrency | exit | wall s | ideal critical path s | wall / ideal | API requests | per namespace | per namespace by verb |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for c in [1usize, 2, 4] {
        let f = run_engine(base.path(), &format!("c{c}"), n, d, r, c).await;
        let ideal = one.wall.as_secs_f64() * n.div_ceil(c) as f64;
        let total: usize = f.verbs.values().sum();
        let per: Vec<String> = f
            .verbs
            .iter()
            .map(|(v, k)| format!("{v} {:.1}", *k as f64 / n as f64))
            .collect();
        println!(
            "| {c} | {} | {:.2} | {:.2} | {:.2} | {total} | {:.1} | {} |",
            f.code,
            f.wall.as_secs_f64(),
            ideal,
            f.wall.as_secs_f64() / ideal,
            total as f64 / n as f64,
            per.join(", ")
        );
    }

    // The seed runbook with kubectl on the same fleet, one namespace after the other.
    let dir = pc::subdir(base.path(), "kubectl");
    let running = start(&dir, n, d, r).await;
    running.sim.accounting.reset();
    let kc = dir.join("kubeconfig");
    let names = fleet_names(n);
    let t0 = Instant::now();
    let res = tokio::task::spawn_blocking(move || -> Result<usize, String> {
        let mut calls = 0;
        for ns in &names {
            calls += pc::seed_runbook_kubectl(&kc, ns, false, &[], &[])?;
        }
        Ok(calls)
    })
    .await
    .expect("runbook thread");
    let wall = t0.elapsed();
    let verbs = by_verb(&running.sim, "kubectl");
    let total: usize = verbs.values().sum();
    println!(
        "\nseed runbook with kubectl, sequential: {:.2} s, {} kubectl invocations, {total} API requests ({:.1} per namespace): {:?}{}",
        wall.as_secs_f64(),
        res.as_ref().map(|c| *c).unwrap_or(0),
        total as f64 / n as f64,
        verbs,
        match &res {
            Ok(_) => String::new(),
            Err(e) => format!(" FAILED: {e}"),
        }
    );
    println!(
        "\npeak RSS of this process (VmHWM, includes meshsim and the in-process runner): {} KiB",
        pc::vm_hwm_kib().unwrap_or(0)
    );
}
