//! Benchmark: wall time of `ambient-migrate rehearse --from-files` on an N-namespace fleet (the acceptance
//! figure: 100 namespaces in under a minute on a 2-core machine).
//!
//! The fleet is `meshsim::fixtures::generate_fleet(N, D, R)` written as YAML files, one per namespace, plus
//! an L7 AuthorizationPolicy (GET from `app-0` to `app-1`) and a waypoint per namespace, so the rehearsal has policy paths
//! to judge as well as namespace ones. The rehearsal runs in-process (the same code as the binary) with
//! concurrency C and prints its own table; this program prints the figures after it.
//!
//! Run: `cargo run --release --example bench_rehearse [-- N D R C]` (defaults 100 3 1 10).

use std::time::Instant;

use ambient_migrate::cli::Cli;

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (n, d, r, c) = (arg(1, 100), arg(2, 3), arg(3, 1), arg(4, 10));
    let dir = tempfile::tempdir().expect("temp dir");
    let fleet = dir.path().join("fleet");
    std::fs::create_dir_all(&fleet).unwrap();
    let text = meshsim::fixtures::generate_fleet(n, d, r as u32);
    for (i, ns_doc) in text
        .split("---\napiVersion: v1\nkind: Namespace\n")
        .skip(1)
        .enumerate()
    {
        let ns = format!("fleet-{i:03}");
        let mut y = format!("---\napiVersion: v1\nkind: Namespace\n{ns_doc}");
        y.push_str(&format!(
            "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: app-1-get, namespace: {ns}}}\nspec:\n  selector: {{matchLabels: {{app: app-1}}}}\n  action: ALLOW\n  rules:\n  - from: [{{source: {{principals: [\"cluster.local/ns/{ns}/sa/app-0\"]}}}}]\n    to: [{{operation: {{methods: [\"GET\"]}}}}]\n"
        ));
        y.push_str(&format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: waypoint, namespace: {ns}}}\nspec:\n  gatewayClassName: istio-waypoint\n  listeners:\n  - {{name: mesh, port: 15008, protocol: HBONE}}\n"
        ));
        std::fs::write(fleet.join(format!("{ns}.yaml")), y).unwrap();
    }
    let config = dir.path().join("rehearse.toml");
    std::fs::write(
        &config,
        format!(
            "[fleet]\nselector = \"istio-injection=enabled\"\nconcurrency = {c}\nmax_failed_namespaces = {n}\n\n[migration.policies]\nmigration = \"apply\"\nkeep_bridges = true\n\n[reports]\nprogress_interval = \"10s\"\n"
        ),
    )
    .unwrap();
    let reports = dir.path().join("reports");
    let args = [
        "ambient-migrate".to_string(),
        "rehearse".into(),
        "--from-files".into(),
        fleet.display().to_string(),
        "--config".into(),
        config.display().to_string(),
        "--report-dir".into(),
        reports.display().to_string(),
        "-q".into(),
    ];
    let cli = Cli::try_parse_checked(args).expect("arguments");
    let t0 = Instant::now();
    let code = ambient_migrate::app::run(cli).await;
    let wall = t0.elapsed();
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(reports.join("ambient-migrate-report.json")).expect("report"),
    )
    .expect("report JSON");
    let migrated = report["namespaces"]
        .as_array()
        .map(|a| a.iter().filter(|n| n["outcome"] == "migrated").count())
        .unwrap_or(0);
    let rows = report["traffic"]["rows"].as_array().map_or(0, Vec::len);
    let sent: u64 = report["traffic"]["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r["stats"]["sent"].as_u64().unwrap_or(0))
        .sum();
    println!();
    println!(
        "bench_rehearse: {n} namespaces x {d} Deployments x {r} replicas, concurrency {c}: rehearsal wall time {:.1}s (from the command's start: fleet copied, simulated, migrated under traffic, reported); exit code {code}; {migrated}/{n} migrated; {rows} paths, {sent} requests",
        wall.as_secs_f64()
    );
}
