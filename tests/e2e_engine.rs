//! End-to-end acceptance of the migration engine (issue 3) against meshsim, driving the real binary:
//! the happy path on the seed namespace, a revision-labelled namespace migrated and rolled back, preflight
//! blockers (exit 4, nothing written), `--dry-run` (store unchanged), `status`, and `backup`/`restore`.

mod e2e_common;

use e2e_common::*;
use serde_json::Value;

/// The seed namespace migrates: exit 0, labels, pods sidecar-free and enrolled, L4 policy kept, L7 policy
/// and the replaced VirtualService/DestinationRule gone, backup file and in-cluster backup present and
/// restorable; `status` shows the journal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_path_seed_namespace_migrates() {
    let env = start(&[SEED], vec![]).await;
    env.wait_ready("shop").await;
    let before = env.config_dump("shop");
    let cfg = Cfg::new(&["shop"]).probes("shop", &seed_probes("shop", &env.proxy()));
    let config = env.write_config("happy", &cfg.toml());

    let out = env.run(&config, "run", &["run", "--output", "json"]).await;
    assert_eq!(out.code, 0, "{out}");
    let nsr = out.ns_report("shop");
    assert_eq!(nsr["outcome"], "migrated", "{nsr}");
    let stdout_report: Value = serde_json::from_str(&out.stdout).expect("stdout is the JSON report");
    assert_eq!(stdout_report["exit_code"], 0);

    // Labels.
    let labels = env.ns_labels("shop");
    assert_eq!(
        labels.get("istio.io/use-waypoint").map(String::as_str),
        Some("waypoint")
    );
    env.assert_migrated_pods("shop");
    // Policies and routes.
    let aps = "security.istio.io";
    assert!(
        env.exists(aps, "authorizationpolicies", "shop", "db-allow-api"),
        "L4 policy kept"
    );
    assert!(
        env.exists(aps, "authorizationpolicies", "shop", "api-allow-web-get-waypoint"),
        "targetRefs twin kept"
    );
    assert!(
        !env.exists(aps, "authorizationpolicies", "shop", "api-allow-web-get"),
        "L7 selector policy deleted"
    );
    assert!(
        !env.exists("networking.istio.io", "virtualservices", "shop", "api"),
        "VirtualService deleted"
    );
    assert!(
        !env.exists("networking.istio.io", "destinationrules", "shop", "api"),
        "DestinationRule deleted"
    );
    assert!(
        env.exists("gateway.networking.k8s.io", "httproutes", "shop", "api"),
        "HTTPRoute kept"
    );
    // No bridge left behind (keep_bridges = false).
    let (left, _) = env
        .store()
        .list(meshsim::resources::id(aps, "authorizationpolicies"), Some("shop"));
    assert!(
        left.iter()
            .all(|p| p["metadata"]["labels"]["ambient-migrate.io/role"] != "bridge"),
        "bridges deleted at step 5: {left:?}"
    );
    assert_eq!(env.journal_phase("shop").as_deref(), Some("migrated"));

    // Backups: the file and the in-cluster ConfigMap, both equal to the state before the run.
    let file = out.backup_file("shop");
    let dump = backup_dump(&file);
    assert_eq!(dump["namespaceLabels"], before["namespaceLabels"]);
    assert_eq!(
        dump["objects"], before["objects"],
        "backup file holds the original objects"
    );
    let cm = env
        .store()
        .get(meshsim::resources::core("configmaps"), STATE_NS, "backup-shop")
        .expect("in-cluster backup ConfigMap");
    assert!(
        cm["data"]["backup.yaml"]
            .as_str()
            .is_some_and(|y| y.contains("api-allow-web-get"))
    );

    // The probes' traffic was answered as the policies intend, and some of it went through the waypoint.
    let t = env.running.sim.traffic.snapshot();
    assert!(t["total"].as_u64().unwrap_or(0) > 0, "{t}");
    assert_eq!(t["wrongly_allowed"], 0, "{t}");
    assert_eq!(t["wrongly_denied"], 0, "{t}");
    assert!(t["by_path"]["waypoint"].as_u64().unwrap_or(0) > 0, "{t}");

    // status shows the journal.
    let st = env.run(&config, "status", &["status", "--output", "json"]).await;
    assert_eq!(st.code, 0, "{st}");
    let records: Value = serde_json::from_str(&st.stdout).expect("status JSON");
    let shop = records
        .as_array()
        .and_then(|a| a.iter().find(|r| r["namespace"] == "shop"))
        .unwrap_or_else(|| panic!("shop in status: {}", st.stdout));
    assert_eq!(shop["phase"], "migrated");
    assert_eq!(shop["stepsDone"].as_array().map(Vec::len), Some(6), "{shop}");
    let text = env.run(&config, "status-text", &["status"]).await;
    assert!(
        text.stdout.contains("shop") && text.stdout.contains("migrated"),
        "{text}"
    );

    // The backup is restorable: `restore -f` brings back the sidecar-era config, verified equal.
    let restored = env
        .run(
            &config,
            "restore",
            &["restore", "-f", file.to_str().expect("path")],
        )
        .await;
    assert_eq!(restored.code, 0, "{restored}");
    assert!(restored.stdout.contains("verified equal"), "{restored}");
    assert_config_eq(
        &before,
        &env.config_dump("shop"),
        "after restore of the run's backup",
    );

    // A second run skips the migrated namespace (journal).
    let again = env.run(&config, "again", &["run"]).await;
    assert_eq!(again.code, 0, "{again}");
}
