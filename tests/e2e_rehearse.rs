//! `ambient-migrate rehearse`, end to end with the real binary:
//!
//! - `from_files_*`: a directory of plain Kubernetes YAML (no cluster) is rehearsed; the seed's order (no
//!   bridges, the destination before its callers, no policy migration) leaks and fails requests, so the
//!   per-path table shows them and the exit code is 1; the strategy (policy migration, bridges, callers
//!   first) shows none and exits 0. The Markdown and JSON reports carry the same table.
//! - `live_*`: against a meshsim standing in for the live cluster, the rehearsal reads the fleet with GET,
//!   LIST and WATCH only (meshsim's request log), and that cluster is left as it was.

use test_support::policies as policies_common;

use std::path::{Path, PathBuf};

use policies_common as pc;
use serde_json::Value;

/// The policy fleet (`front` calls `store`'s L7-protected `api`; `ledger` has an L4 trap) as a file.
fn fleet_dir(dir: &Path) -> PathBuf {
    let fleet = pc::subdir(dir, "fleet");
    std::fs::write(fleet.join("fleet.yaml"), pc::policy_fleet(1)).unwrap();
    fleet
}

/// The seed's order on `store` and `front`: known to leak (sidecar callers bypass the waypoint once the
/// selector policy is gone) and to fail (the window between steps 4 and 5).
fn seed_config() -> pc::RunConfig<'static> {
    pc::RunConfig::seed(&["store", "front"])
}

/// The strategy: policy migration applied, bridges kept, callers first.
fn strategy_config() -> pc::RunConfig<'static> {
    pc::RunConfig {
        concurrency: 2,
        ..pc::RunConfig::strategy(&["store", "front", "ledger"])
    }
}

/// Runs `rehearse` with `cfg` and `extra` arguments; (exit code, stdout, stderr, report directory).
async fn rehearse(
    dir: &Path,
    name: &str,
    cfg: &pc::RunConfig<'_>,
    extra: &[&str],
) -> (i32, String, String, PathBuf) {
    let cfg_path = cfg.write(dir, name);
    let reports = pc::subdir(dir, name);
    let mut args = vec![
        "rehearse".to_string(),
        "--config".into(),
        cfg_path.display().to_string(),
        "--report-dir".into(),
        reports.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let (code, stdout, stderr) = pc::run_cli(&test_support::bin(), &args).await;
    (code, stdout, stderr, reports)
}

fn report(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("ambient-migrate-report.json")).unwrap()).unwrap()
}

/// (wrongly allowed, wrongly denied) summed over the report's traffic rows.
fn wrong(report: &Value) -> (u64, u64) {
    let rows = report["traffic"]["rows"].as_array().expect("traffic rows");
    let sum = |k: &str| rows.iter().map(|r| r["stats"][k].as_u64().unwrap()).sum();
    (sum("wrongly_allowed"), sum("wrongly_denied"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_files_leaking_strategy_prints_the_table_and_exits_nonzero() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = fleet_dir(dir.path());
    let from = fleet.display().to_string();
    let (code, stdout, stderr, reports) =
        rehearse(dir.path(), "seed", &seed_config(), &["--from-files", &from]).await;
    eprintln!("{stdout}");
    assert_eq!(code, 1, "the seed order leaks and fails\n{stdout}\n{stderr}");
    // The per-path table, with the leaking path named.
    let header = stdout
        .lines()
        .find(|l| l.starts_with("destination"))
        .unwrap_or_else(|| panic!("no table\n{stdout}"));
    for col in [
        "path",
        "sent",
        "allowed",
        "denied",
        "wrongly allowed",
        "wrongly denied",
        "window",
    ] {
        assert!(header.contains(col), "{col} missing: {header}");
    }
    let leaks = stdout
        .lines()
        .filter(|l| l.contains("front/web DELETE") || l.contains("front/other GET"))
        .count();
    assert!(leaks >= 1, "{stdout}");
    let r = report(&reports);
    assert_eq!(r["command"], "rehearse");
    assert_eq!(r["exit_code"], 1);
    let (leaked, failed) = wrong(&r);
    assert!(leaked > 0, "illegitimate requests reached store/api: {stdout}");
    assert!(
        stdout.contains(&format!("leaked illegitimate requests: {leaked}")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("failed legitimate requests: {failed}")),
        "{stdout}"
    );
    let md = std::fs::read_to_string(reports.join("ambient-migrate-report.md")).unwrap();
    assert!(md.contains("### Traffic per destination and path"), "{md}");
    assert!(md.contains("| store/api | front/web DELETE | deny |"), "{md}");
    assert!(!stdout.contains("{\""), "no raw JSON line on stdout:\n{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_files_safe_strategy_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = fleet_dir(dir.path());
    let from = fleet.display().to_string();
    let (code, stdout, stderr, reports) = rehearse(
        dir.path(),
        "strategy",
        &strategy_config(),
        &["--from-files", &from],
    )
    .await;
    eprintln!("{stdout}");
    assert_eq!(
        code, 0,
        "the strategy neither leaks nor fails\n{stdout}\n{stderr}"
    );
    let r = report(&reports);
    assert_eq!(wrong(&r), (0, 0), "{stdout}");
    let rows = r["traffic"]["rows"].as_array().unwrap();
    assert!(rows.len() >= 10, "paths of three namespaces: {}", rows.len());
    assert!(
        rows.iter().all(|row| row["stats"]["sent"].as_u64().unwrap() >= 5),
        "every path under continuous traffic: {stdout}"
    );
    for ns in ["front", "store", "ledger"] {
        let n = r["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == ns)
            .unwrap();
        assert_eq!(n["outcome"], "migrated", "{ns}");
    }
    assert!(
        stdout.contains("exit code 0: no failed or leaked request and no rollback"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_files_injected_fault_rolls_back_and_exits_nonzero() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = fleet_dir(dir.path());
    let from = fleet.display().to_string();
    let (code, stdout, stderr, reports) = rehearse(
        dir.path(),
        "fault",
        &strategy_config(),
        &[
            "--from-files",
            &from,
            "--fault",
            "pods-crashloop-after-restart:ledger",
        ],
    )
    .await;
    assert_eq!(code, 1, "ledger rolls back\n{stdout}\n{stderr}");
    let r = report(&reports);
    let ledger = r["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "ledger")
        .unwrap();
    assert_eq!(ledger["outcome"], "rolled-back", "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("ledger") && l.contains("rolled-back") && l.contains("from step")),
        "{stdout}"
    );
    // A fault kind that does not exist is a usage error naming the valid ones.
    let (code, _, stderr, _) = rehearse(
        dir.path(),
        "bad",
        &strategy_config(),
        &["--from-files", &from, "--fault", "meteor"],
    )
    .await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("ztunnel-down"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_rehearsal_sends_only_get_list_and_watch() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let live = meshsim::start(meshsim::StartOptions {
        fixture_texts: vec![pc::policy_fleet(1)],
        settings: pc::test_settings(),
        kubeconfig_out: Some(kubeconfig.clone()),
        ..Default::default()
    })
    .await
    .expect("meshsim starts");
    assert!(pc::wait_pods_ready(&live.sim, &["front", "store", "ledger"], 7, 20).await);
    let before: Vec<_> = ["front", "store", "ledger"]
        .iter()
        .map(|ns| pc::ns_labels(&live.sim, ns))
        .collect();
    let kc = kubeconfig.display().to_string();
    let (code, stdout, stderr, reports) =
        rehearse(dir.path(), "live", &strategy_config(), &["--kubeconfig", &kc]).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    // The rehearsal copied the live pods' start times and the fleet: its report names all three.
    assert_eq!(report(&reports)["namespaces"].as_array().unwrap().len(), 3);
    let ours: Vec<_> = live
        .sim
        .accounting
        .log()
        .into_iter()
        .filter(|r| r.user_agent.starts_with("ambient-migrate"))
        .collect();
    assert!(ours.len() >= 10, "the fleet was read: {} requests", ours.len());
    let others: Vec<String> = ours
        .iter()
        .filter(|r| !matches!(r.verb.as_str(), "get" | "list" | "watch") || r.method != "GET")
        .map(|r| format!("{} {} {}", r.method, r.verb, r.path))
        .collect();
    assert!(others.is_empty(), "only GET, LIST and WATCH: {others:#?}");
    let after: Vec<_> = ["front", "store", "ledger"]
        .iter()
        .map(|ns| pc::ns_labels(&live.sim, ns))
        .collect();
    assert_eq!(before, after, "the live namespaces are untouched");
}
