//! The install-phase checks of the preflight, end to end: `ambient-migrate plan`, run as the shipped
//! ServiceAccount against meshsim, reads the Gateway API CRDs, the `istio-waypoint` GatewayClass, the ztunnel
//! pods per node, istio-cni's ConfigMap and istiod's version with the shipped RBAC, records the version's
//! behaviours on a complete install, and blocks (exit 4, nothing written) with a fix for each missing piece.

use test_support::policies as policies_common;

use std::path::Path;

use meshsim::store::{Propagation, Target};
use policies_common as pc;

fn plan_args(dir: &Path) -> Vec<String> {
    let cfg_path = pc::RunConfig::strategy(&["store", "front"]).write(dir, "plan");
    let mut args = pc::run_args(&cfg_path, &dir.join("kubeconfig"), &pc::subdir(dir, "plan"), &[]);
    args[0] = "plan".into();
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_phase_is_checked_with_the_shipped_rbac() {
    let (running, dir) = pc::start_as_shipped_sa(pc::policy_fleet(1)).await;
    let sim = running.sim.clone();
    assert!(pc::wait_pods_ready(&sim, &["front", "store"], 4, 20).await);
    let args = plan_args(dir.path());

    // A complete install: no install blocker, the version and its behaviours on record.
    let (code, stdout, stderr) = pc::run_cli(&test_support::bin(), &args).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let version = format!("istiod {}", meshsim::controllers::ISTIO_VERSION);
    assert!(stdout.contains(&version), "{stdout}");
    assert!(stdout.contains("callers-first order needed"), "{stdout}");
    assert!(
        !stderr.contains("install checks are skipped"),
        "the shipped RBAC grants the reads: {stderr}"
    );

    // The waypoint class gone and istio-cni without ambient: both block, each with its fix.
    sim.store
        .delete(
            meshsim::resources::id("gateway.networking.k8s.io", "gatewayclasses"),
            "",
            "istio-waypoint",
            Propagation::Background,
            false,
            None,
        )
        .unwrap();
    sim.store
        .update_with(
            meshsim::resources::core("configmaps"),
            "istio-system",
            "istio-cni-config",
            Target::Internal,
            &meshsim::controllers::util::opts("test"),
            |o| {
                let mut o = o.clone();
                o["data"]["AMBIENT_ENABLED"] = "false".into();
                Ok(o)
            },
        )
        .unwrap();
    let (code, stdout, stderr) = pc::run_cli(&test_support::bin(), &args).await;
    assert_eq!(code, 4, "{stdout}\n{stderr}");
    assert!(stdout.contains("namespace store: BLOCKED"), "{stdout}");
    for want in [
        "[blocker] waypoint-class-missing",
        "[blocker] istio-cni-ambient-disabled",
        "restart istiod",
        "ambient.enabled=true",
    ] {
        assert!(stdout.contains(want), "{want} missing:\n{stdout}");
    }
    // front uses no waypoint: the class is only noted there, istio-cni still blocks.
    let front = stdout.split("namespace front:").nth(1).unwrap_or_default();
    assert!(front.contains("[info] waypoint-class-missing"), "{front}");
    assert!(front.contains("[blocker] istio-cni-ambient-disabled"), "{front}");
    let writes = sim
        .accounting
        .mutating_count(|r| r.user_agent.starts_with("ambient-migrate"));
    assert_eq!(writes, 0, "plan writes nothing");
}
