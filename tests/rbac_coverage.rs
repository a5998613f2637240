//! Every path of a representative session of the real binary is allowed by the RBAC shipped in ci/k8s/:
//! the binary runs as the `ambient-migrate` ServiceAccount (fleet_common installs ci/k8s/ with kubectl and
//! issues its token), and meshsim's API server enforces RBAC on every request like kube-apiserver. The
//! session: a fleet run with a rollback, HTTP and Job probes, Events, the Lease, journals and backups (the
//! demo's fleet and configuration), then `status`, `plan`, `rollback`, `backup` and `restore`. No request
//! may be answered 403. (Other paths are covered the same way by every e2e test, which all run as the
//! ServiceAccount.)

use test_support::fleet as fleet_common;

use std::path::PathBuf;
use std::time::Duration;

use fleet_common::*;
use meshsim::store::{Propagation, Target, WriteOpts};

const LIMIT: Duration = Duration::from_secs(80);

/// Runs the binary and asserts its exit code is one of `codes`.
async fn step(fleet: &Fleet, args: &[&str], codes: &[i32]) {
    let out = fleet.run(args, LIMIT).await;
    let code = out.status.code().unwrap_or(-1);
    assert!(codes.contains(&code), "{args:?}: {}", show(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_representative_session_runs_as_the_service_account_without_a_403() {
    // The state namespace exists as ci/k8s/00-namespace.yaml creates it at install time.
    let state_ns =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("ci/k8s/00-namespace.yaml"))
            .expect("ci/k8s/00-namespace.yaml");
    let fleet = Fleet::start_with(
        vec![state_ns, ambient_migrate::demo::fleet_fixture()],
        ambient_migrate::demo::faults(),
        sim_settings(),
    )
    .await;
    let shop_before = fleet.ns_state("shop");
    let proxy = fleet.running.proxy_url().expect("probe proxy");
    let cfg = fleet.write_config("demo.toml", &ambient_migrate::demo::config_toml(&proxy));
    let cfg = cfg.to_str().expect("utf-8");

    // A representative session: the fleet run (payments rolls back), then the other commands.
    let out = fleet.run(&["run", "--config", cfg], LIMIT).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let outcomes = fleet.outcomes();
    assert_eq!(outcomes["payments"], "rolled-back", "{outcomes:?}");
    assert_eq!(outcomes["shop"], "migrated", "{outcomes:?}");
    step(&fleet, &["status", "--config", cfg], &[0]).await;
    step(&fleet, &["plan", "--config", cfg], &[0, 4]).await;
    step(&fleet, &["rollback", "--config", cfg, "-n", "shop"], &[0]).await;
    let file = fleet.dir.path().join("orders-backup.yaml");
    step(
        &fleet,
        &[
            "backup",
            "--config",
            cfg,
            "-n",
            "orders",
            "-o",
            file.to_str().expect("utf-8"),
        ],
        &[0],
    )
    .await;
    let inventory = fleet.reports.join("backups").join("backup-inventory.yaml");
    step(
        &fleet,
        &[
            "restore",
            "--config",
            cfg,
            "-f",
            inventory.to_str().expect("utf-8"),
        ],
        &[0],
    )
    .await;
    // Someone edits a policy and deletes a route by hand; `restore` of the run's backup repairs both
    // (replace + create requests).
    let store = fleet.sim().store.clone();
    let ap = meshsim::resources::id("security.istio.io", "authorizationpolicies");
    store
        .update_with(
            ap,
            "shop",
            "db-allow-api",
            Target::Main,
            &WriteOpts::default(),
            |old| {
                let mut o = old.clone();
                o["spec"]["rules"] = serde_json::json!([]);
                if let Some(m) = o["metadata"].as_object_mut() {
                    m.remove("resourceVersion");
                }
                Ok(o)
            },
        )
        .expect("edit policy");
    let routes = meshsim::resources::id("gateway.networking.k8s.io", "httproutes");
    store
        .delete(routes, "shop", "api", Propagation::Background, false, None)
        .expect("delete route");
    let shop = fleet.reports.join("backups").join("backup-shop.yaml");
    step(
        &fleet,
        &["restore", "--config", cfg, "-f", shop.to_str().expect("utf-8")],
        &[0],
    )
    .await;
    assert_eq!(
        fleet.ns_state("shop").config_view(),
        shop_before.config_view(),
        "shop after rollback + restore equals shop before the run"
    );

    let log = fleet.product_log();
    // The session ran as the ServiceAccount and really exercised what the roles are about (otherwise this
    // test could not fail).
    assert!(
        log.iter().all(|r| r.user == SERVICE_ACCOUNT_USER),
        "every request ran as the ServiceAccount"
    );
    for (verb, resource) in [
        ("create", "jobs"),
        ("get", "pods/log"),
        ("create", "events"),
        ("create", "leases"),
        ("update", "configmaps"),
        ("patch", "namespaces"),
        ("patch", "deployments"),
        ("delete", "authorizationpolicies"),
        ("create", "authorizationpolicies"),
        ("watch", "deployments"),
        ("update", "authorizationpolicies"),
        ("create", "httproutes"),
        ("list", "pods"),
        ("list", "replicasets"),
        ("create", "selfsubjectaccessreviews"),
    ] {
        assert!(
            log.iter()
                .any(|r| r.verb == verb && r.resource == resource && r.code < 300),
            "the session never made a successful {verb} {resource} request"
        );
    }
    let forbidden: Vec<String> = log
        .iter()
        .filter(|r| r.code == 403)
        .map(|r| format!("{} {} {}", r.verb, r.path, r.user))
        .collect();
    assert!(
        forbidden.is_empty(),
        "the shipped RBAC refused {} requests:\n{}",
        forbidden.len(),
        forbidden.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_account_is_refused_what_the_roles_do_not_grant() {
    let fleet = Fleet::start(&fixture(&[("shop", false)]), vec![]).await;
    let token = std::fs::read_to_string(&fleet.kubeconfig).expect("kubeconfig");
    let token = token
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .expect("token")
        .to_string();
    let get = |path: &str| {
        let url = format!("{}{path}", fleet.running.url());
        let token = token.clone();
        async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("request")
                .status()
                .as_u16()
        }
    };
    assert_eq!(get("/api/v1/namespaces/shop/pods").await, 200);
    // No Secrets anywhere, no ConfigMaps outside the state and Istio namespaces, no pod logs outside probe
    // namespaces, no writes in kube-system.
    assert_eq!(get("/api/v1/namespaces/shop/secrets").await, 403);
    assert_eq!(get("/api/v1/namespaces/shop/configmaps").await, 403);
    assert_eq!(get("/api/v1/namespaces/kube-system/pods/x/log").await, 403);
    let create = reqwest::Client::new()
        .post(format!(
            "{}/apis/batch/v1/namespaces/kube-system/jobs",
            fleet.running.url()
        ))
        .bearer_auth(&token)
        .json(&serde_json::json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "x"}}))
        .send()
        .await
        .expect("request");
    assert_eq!(create.status().as_u16(), 403);
    // These refusals were the point; the fleet's drop check is about the binary's requests.
    fleet.sim().accounting.reset();
}
