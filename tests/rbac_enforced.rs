//! The binary runs as the shipped ServiceAccount against meshsim's RBAC (kubectl applies ci/k8s/, kubectl
//! issues the token): with the shipped roles a run with a rollback and its retry succeeds without a single
//! 403; with one verb removed, `run` proves its permissions first and stops with exit 4, naming the missing
//! rule and writing nothing, and `plan` reports the same without failing.

use test_support::fleet as fleet_common;

use std::time::Duration;

use fleet_common::*;

const LIMIT: Duration = Duration::from_secs(90);

fn forbidden(fleet: &Fleet) -> Vec<String> {
    fleet
        .product_log()
        .iter()
        .filter(|r| r.code == 403)
        .map(|r| format!("{} {}", r.verb, r.path))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_verb_stops_run_before_any_write() {
    let fleet = Fleet::start(&fixture(&[("shop", false)]), vec![]).await;
    let mut rbac = shipped_rbac();
    rbac.extend(shipped_namespace_bindings(&["shop"], &[]));
    remove_verb(&mut rbac, "ambient-migrate-state", "configmaps", "update");
    fleet.use_service_account(&rbac).await;
    let before = fleet.ns_state("shop");
    let cfg = fleet.write_config("fleet.toml", &fleet_config(&["shop"], &[], 1, 0, ""));
    let cfg = cfg.to_str().expect("utf-8");

    let out = fleet.run(&["run", "--config", cfg], LIMIT).await;
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("update configmaps in namespace ambient-migrate"),
        "{}",
        show(&out)
    );
    assert!(
        stderr.contains(
            "# Role rules in namespace ambient-migrate:\n- apiGroups: [\"\"]\n  resources: [\"configmaps\"]\n  verbs: [\"update\"]"
        ),
        "{}",
        show(&out)
    );
    assert!(
        !stderr.contains("patch namespaces"),
        "only the removed verb is missing: {stderr}"
    );
    // It asked, as the ServiceAccount, and wrote nothing.
    let log = fleet.product_log();
    assert!(log.iter().any(|r| r.resource == "selfsubjectaccessreviews"));
    assert!(
        log.iter().all(|r| r.user == SERVICE_ACCOUNT_USER),
        "every request ran as the SA"
    );
    let writes = fleet.product_writes();
    assert!(
        writes.is_empty(),
        "writes despite the missing permission: {writes:?}"
    );
    assert_eq!(fleet.ns_state("shop"), before);
    assert_eq!(fleet.outcomes()["shop"], "not-started");

    // `plan` says the same and still plans.
    let out = fleet.run(&["plan", "--config", cfg], LIMIT).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("update configmaps in namespace ambient-migrate"),
        "{}",
        show(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_rbac_covers_a_rollback_and_its_retry() {
    let fleet = Fleet::start(&fixture(&[("ok", false), ("bad", true)]), vec![crashloop("bad")]).await;
    let mut rbac = shipped_rbac();
    rbac.extend(shipped_namespace_bindings(&["ok", "bad"], &[]));
    fleet.use_service_account(&rbac).await;
    let cfg = fleet.write_config("fleet.toml", &fleet_config(&["ok", "bad"], &[], 1, 1, ""));
    let cfg = cfg.to_str().expect("utf-8");

    let out = fleet.run(&["run", "--config", cfg], LIMIT).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let reviews = fleet
        .product_log()
        .iter()
        .filter(|r| r.resource == "selfsubjectaccessreviews")
        .count();
    eprintln!("SelfSubjectAccessReviews of a 2-namespace run: {reviews}");
    let outcomes = fleet.outcomes();
    assert_eq!(outcomes["ok"], "migrated", "{outcomes:?}");
    assert_eq!(outcomes["bad"], "rolled-back", "{outcomes:?}");
    assert_eq!(forbidden(&fleet), Vec::<String>::new());

    // The retry of the rolled-back namespace replaces its stale backup with a fresh one before its first
    // mutation (a delete, which the state Role once lacked, ended the namespace rollback-failed on a 403);
    // it rolls back again, cleanly.
    fleet.sim().accounting.reset();
    let out = fleet.run(&["run", "--config", cfg], LIMIT).await;
    assert_eq!(forbidden(&fleet), Vec::<String>::new());
    let outcomes = fleet.outcomes();
    assert_eq!(outcomes["bad"], "rolled-back", "{outcomes:?}\n{}", show(&out));
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        fleet.product_log().iter().any(|r| r.verb == "update"
            && r.resource == "configmaps"
            && r.name.as_deref() == Some("backup-bad")
            && r.user == SERVICE_ACCOUNT_USER),
        "the retry replaced the stale backup as the ServiceAccount"
    );
    assert!(
        !fleet
            .product_log()
            .iter()
            .any(|r| r.verb == "delete" && r.resource == "configmaps"),
        "no backup is deleted"
    );
    assert_eq!(forbidden(&fleet), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_job_outside_the_allow_lists_is_refused_before_any_request() {
    let fleet = Fleet::start(&fixture(&[("shop", false)]), vec![]).await;
    let probe = "[[namespaces.shop.probes]]\nname = \"sneaky\"\nkind = \"job\"\nsource_namespace = \"kube-system\"\n\
                 service_account = \"clusterrole-aggregation-controller\"\nimage = \"evil.example/miner:1\"\n\
                 url = \"http://app.shop.svc.cluster.local/\"\nexpect = { status = \"200\" }\n";
    let cfg = fleet.write_config("fleet.toml", &fleet_config(&["shop"], &[], 1, 0, probe));
    let out = fleet
        .run(&["run", "--config", cfg.to_str().expect("utf-8")], LIMIT)
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("namespaces.shop.probes[0].service_account"),
        "{stderr}"
    );
    assert!(stderr.contains("job_probes.allowed_service_accounts"), "{stderr}");
    assert!(stderr.contains("namespaces.shop.probes[0].image"), "{stderr}");
    assert!(stderr.contains("\"evil.example/miner:1\""), "{stderr}");
    assert_eq!(fleet.product_log().len(), 0, "no request reached the cluster");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_and_rollback_prove_their_permissions_too() {
    let fleet = Fleet::start(&fixture(&[("shop", false)]), vec![]).await;
    let mut rbac = shipped_rbac();
    rbac.extend(shipped_namespace_bindings(&["shop"], &[]));
    remove_verb(&mut rbac, "ambient-migrate-state", "configmaps", "get");
    remove_verb(
        &mut rbac,
        "ambient-migrate-fleet",
        "authorizationpolicies",
        "delete",
    );
    fleet.use_service_account(&rbac).await;
    let cfg = fleet.write_config("fleet.toml", &fleet_config(&["shop"], &[], 1, 0, ""));
    let cfg = cfg.to_str().expect("utf-8");
    let file = fleet.dir.path().join("shop.yaml");
    let out = fleet
        .run(
            &[
                "backup",
                "--config",
                cfg,
                "-n",
                "shop",
                "-o",
                file.to_str().expect("utf-8"),
            ],
            LIMIT,
        )
        .await;
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("get configmaps in namespace ambient-migrate"),
        "{stderr}"
    );
    assert!(!file.exists(), "no backup file on refusal");
    let out = fleet
        .run(&["rollback", "--config", cfg, "-n", "shop"], LIMIT)
        .await;
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("delete authorizationpolicies.security.istio.io in namespace shop"),
        "{stderr}"
    );
    let writes = fleet.product_writes();
    assert!(writes.is_empty(), "{writes:?}");
}
