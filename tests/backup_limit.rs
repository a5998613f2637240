//! A namespace whose backup would not fit in its ConfigMap (1 MiB of data, meshsim refuses more like
//! kube-apiserver) is refused in the preflight, before the fleet's first write, with the size and the
//! limit named; the refusal matches what meshsim answers for a ConfigMap of that size.

use test_support::fleet as fleet_common;

use std::time::Duration;

use fleet_common::*;
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(60);

/// `n` Telemetry objects in `ns`, each carrying a ~`kib` KiB `kubectl.kubernetes.io/last-applied-configuration`
/// annotation (kept in backups; kubectl client-side apply writes one on every object it applies).
fn big_telemetries(ns: &str, n: usize, kib: usize) -> String {
    (0..n)
        .map(|i| {
            let blob = format!("{{\\\"padding\\\":\\\"{}\\\"}}", "x".repeat(kib * 1024));
            format!(
                "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata:\n  name: metrics-{i:03}\n  namespace: {ns}\n  annotations:\n    kubectl.kubernetes.io/last-applied-configuration: \"{blob}\"\nspec:\n  metrics:\n  - providers:\n    - name: prometheus\n"
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_over_one_mebibyte_is_refused_before_the_first_write() {
    let fixtures = vec![
        fixture(&[("big", false), ("small", false)]),
        big_telemetries("big", 12, 100),
    ];
    let fleet = Fleet::start_with(fixtures, vec![], sim_settings()).await;
    let before = fleet.ns_state("big");
    let cfg = fleet.write_config("fleet.toml", &fleet_config(&["big", "small"], &[], 1, 0, ""));
    // With on_blocked = "stop" nothing starts, so nothing at all may be written.
    let out = fleet
        .run(
            &[
                "run",
                "--config",
                cfg.to_str().expect("utf-8"),
                "--set",
                "fleet.on_blocked=stop",
            ],
            LIMIT,
        )
        .await;
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));
    let outcomes = fleet.outcomes();
    assert_eq!(outcomes["big"], "blocked", "{outcomes:?}");
    assert_eq!(outcomes["small"], "not-started", "{outcomes:?}");
    let writes = fleet.product_writes();
    assert!(writes.is_empty(), "written before the refusal: {writes:?}");
    assert_eq!(fleet.ns_state("big"), before);

    // The reported size is over meshsim's limit: a ConfigMap with that much data is refused with 422.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let bytes: usize = stderr
        .split("the backup of namespace big is ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no size in the error: {stderr}"));
    assert!(bytes > 1_048_576, "{bytes}");
    assert!(
        stderr.contains("more than the 1048576 bytes a ConfigMap can hold"),
        "{stderr}"
    );
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "backup-big"},
        "data": {"backup.yaml": "x".repeat(bytes)}});
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/api/v1/namespaces/ambient-migrate/configmaps",
            fleet.running.url()
        ))
        .json(&cm)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 422);
}
